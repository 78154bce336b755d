/* SPDX-License-Identifier: MIT */
/*
 * bench-cow.c - what the first write to a merged page costs: kernel KSM
 * against ksmu's store pages, side by side in one run.
 *
 * Kinds, N pages each (4096 by default), all of one non-zero content:
 *   ksm         (a) pages merged by kernel KSM (MADV_MERGEABLE, ksmd run=1
 *               pages_to_scan=20000 sleep_millisecs=0 until this process has
 *               N merged pages); the write breaks sharing in do_wp_page().
 *               Needs root and /sys/kernel/mm/ksm; skipped otherwise.
 *   ksmu        (b) pages merged one by one by ksmu_merge_page() into ONE
 *               store page (MAP_PRIVATE memfd mapping, a VMA per page): the
 *               write copies the store page (COW of a private file page).
 *   ksmu_run    (b') the same content merged by ksmu_merge_run() in runs of
 *               KSMU_MERGE_MAX_RUN into N store pages (one VMA in all).
 *   ksmu_engine (e) pages merged by the engine (ksmu_register(), scan
 *               passes) with cow_policy=0: the kernel copies, as in (b).
 *   ksmu_user   (f) the same with cow_policy=1: the write stops in user
 *               space and ksmu's copy worker gives the page an anonymous
 *               copy that can merge again (src/cow.c).  (e) and (f) run in
 *               forked children: the policy is fixed per process.
 *   anon        (c) plain private anonymous pages already present: no fault,
 *               the baseline.
 *   anon_first  (d) untouched anonymous pages: the first-touch fault
 *               (allocate and zero a page).
 * Each write is one 8-byte store timed alone with clock_gettime
 * (CLOCK_MONOTONIC, vDSO) around it; the clock's own cost is reported as
 * clock_ns and not subtracted.  Output: p50, p99 and mean per kind, the
 * ratio ksmu/ksm, and one machine-readable line:
 *   RESULT bench=cow pages=N clock_ns=.. <kind>_p50_ns=.. <kind>_p99_ns=..
 *          <kind>_mean_ns=.. ... ratio_p50=.. ratio_mean=..
 * (a kind that could not run reports "na").
 *
 * Kernel KSM is a system-wide setting: its knobs are saved before the first
 * change, and whatever happens (normal exit, error, SIGINT, SIGTERM, SIGHUP,
 * SIGQUIT, a crash signal) it is then put back: run=2 (unmerge everything),
 * run=0, then the knobs as they were found (bench-common.c, shared with
 * bench-scan and bench-merge).
 *
 * KSM is left alone (kind ksm skipped) if it is in use when the benchmark
 * starts (run != 0 or pages_shared != 0: another benchmark, a VM host),
 * unless --force-ksm.
 *
 * Options: --pages N; --no-ksm; --force-ksm; --quick (512 pages, no KSM: the
 * ctest smoke run bench-cow-smoke).
 * Exit status: 0 done; 1 a step failed; 2 bad command line; 77 (--quick
 * only) ksmu's merge window is not available here (ctest skip).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench-common.h"
#include "ksmu.h"
#include "merge.h"

#define PG 4096UL
#define KSM_TIMEOUT_S 60

const char bench_prog[] = "bench-cow";

enum kind { K_KSM, K_KSMU, K_KSMU_RUN, K_ENGINE, K_USER, K_ANON, K_ANON_FIRST, K_NR };
static const char *const kind_name[K_NR] = {"ksm",	   "ksmu", "ksmu_run",	 "ksmu_engine",
					    "ksmu_user", "anon", "anon_first"};

/*
 * struct result - latencies of one kind.
 * @ok:   the kind ran
 * @p50:  median, ns
 * @p99:  99th percentile, ns
 * @mean: mean, ns
 * @note: why it did not run, or a remark
 */
struct result {
	bool ok;
	uint64_t p50, p99;
	double mean;
	char note[96];
};

/* ---------------------------------------------------------------- kernel KSM */

/* A number from a small procfs or sysfs file; -1 if unreadable. */
static long read_long(const char *path)
{
	char buf[64];

	if (bench_read_text(path, buf, sizeof(buf)) || !buf[0])
		return -1;
	return strtol(buf, NULL, 10);
}

/* ---------------------------------------------------------------- timing */

/* CLOCK_MONOTONIC (vDSO), ns; inline, as it brackets the timed writes. */
static inline uint64_t now_ns(void)
{
	return bench_clock_ns(CLOCK_MONOTONIC);
}

static void time_writes(char *base, size_t n, uint64_t *lat, struct result *res)
{
	double sum = 0;
	uint64_t t0;
	size_t i;

	for (i = 0; i < n; i++) {
		volatile uint64_t *w = (volatile uint64_t *)(void *)(base + i * PG + 64);

		t0 = now_ns();
		*w = i + 1;
		lat[i] = now_ns() - t0;
	}
	for (i = 0; i < n; i++)
		sum += (double)lat[i];
	qsort(lat, n, sizeof(*lat), bench_cmp_u64);
	res->p50 = lat[n / 2];
	res->p99 = lat[(n * 99) / 100];
	res->mean = sum / (double)n;
	res->ok = true;
}

static uint64_t clock_cost(uint64_t *lat, size_t n)
{
	size_t i;
	uint64_t t0;

	for (i = 0; i < n; i++) {
		t0 = now_ns();
		lat[i] = now_ns() - t0;
	}
	qsort(lat, n, sizeof(*lat), bench_cmp_u64);
	return lat[n / 2];
}

/* ---------------------------------------------------------------- kinds */

static char *map_filled(size_t n, const unsigned char *content)
{
	char *p = mmap(NULL, n * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	size_t i;

	if (p == MAP_FAILED)
		return NULL;
	madvise(p, n * PG, MADV_NOHUGEPAGE);
	if (content) {
		for (i = 0; i < n; i++)
			memcpy(p + i * PG, content, PG);
	}
	return p;
}

static bool content_ok(const char *p, size_t n, const unsigned char *content)
{
	size_t i;

	for (i = 0; i < n; i++) {
		/* word 8 (offset 64) was written by the benchmark */
		if (memcmp(p + i * PG, content, 64) ||
		    *(const uint64_t *)(const void *)(p + i * PG + 64) != i + 1 ||
		    memcmp(p + i * PG + 72, content + 72, PG - 72))
			return false;
	}
	return true;
}

static void run_ksm(size_t n, const unsigned char *content, bool force, uint64_t *lat,
		    struct result *res)
{
	long merging = -1, shared_before;
	uint64_t t0;
	char *p;

	if (geteuid() != 0 || access(BENCH_KSM_DIR "run", W_OK) < 0) {
		snprintf(res->note, sizeof(res->note), "skipped: needs root and %s", BENCH_KSM_DIR);
		return;
	}
	/*
	 * KSM is one setting for the whole machine: if somebody else is using
	 * it (ksmd running, or pages merged), measuring would disturb them
	 * (and the restore, run=2, would unmerge their pages) and their ksmd
	 * would disturb the measurement.
	 */
	shared_before = read_long(BENCH_KSM_DIR "pages_shared");
	if (!force && (read_long(BENCH_KSM_DIR "run") != 0 || shared_before > 0)) {
		snprintf(res->note, sizeof(res->note),
			 "skipped: kernel KSM in use (run=%ld, pages_shared=%ld); --force-ksm",
			 read_long(BENCH_KSM_DIR "run"), shared_before);
		return;
	}
	p = map_filled(n, content);
	if (!p) {
		snprintf(res->note, sizeof(res->note), "mmap: %s", strerror(errno));
		return;
	}
	if (madvise(p, n * PG, MADV_MERGEABLE) < 0) {
		snprintf(res->note, sizeof(res->note), "MADV_MERGEABLE: %s", strerror(errno));
		goto out_unmap;
	}
	bench_ksm_arm(); /* from here on, every exit path puts KSM back */
	if (bench_ksm_write("pages_to_scan", "20000") || bench_ksm_write("sleep_millisecs", "0") ||
	    bench_ksm_write("run", "1")) {
		snprintf(res->note, sizeof(res->note), "cannot start ksmd");
		goto out_restore;
	}
	/* Wait until every page of ours is merged (ksm_merging_pages, 6.1). */
	t0 = now_ns();
	while (now_ns() - t0 < (uint64_t)KSM_TIMEOUT_S * 1000000000u) {
		merging = read_long("/proc/self/ksm_merging_pages");
		if (merging < 0 || merging >= (long)n)
			break;
		usleep(20000);
	}
	if (merging < 0) {
		/* No per-process counter: fall back to the global one. */
		while (now_ns() - t0 < (uint64_t)KSM_TIMEOUT_S * 1000000000u &&
		       read_long(BENCH_KSM_DIR "pages_sharing") +
			       read_long(BENCH_KSM_DIR "pages_shared") -
			       (shared_before > 0 ? shared_before : 0) <
			   (long)n)
			usleep(20000);
		merging = read_long(BENCH_KSM_DIR "pages_sharing") +
			  read_long(BENCH_KSM_DIR "pages_shared");
	}
	printf("kernel KSM merged %ld of %zu pages in %.2f s (pages_shared %ld, pages_sharing "
	       "%ld, full_scans %ld)\n",
	       merging, n, (double)(now_ns() - t0) / 1e9, read_long(BENCH_KSM_DIR "pages_shared"),
	       read_long(BENCH_KSM_DIR "pages_sharing"), read_long(BENCH_KSM_DIR "full_scans"));
	/* Stop ksmd before timing: it must not run beside the writes. */
	bench_ksm_write("run", "0");
	if (merging < (long)n)
		snprintf(res->note, sizeof(res->note), "only %ld of %zu pages merged", merging, n);
	time_writes(p, n, lat, res);
	if (!content_ok(p, n, content))
		snprintf(res->note, sizeof(res->note), "CONTENT WRONG after writes");
out_restore:
	bench_restore();
out_unmap:
	munmap(p, n * PG);
}

static void run_ksmu(size_t n, const unsigned char *content, bool runs, uint64_t *lat,
		     struct result *res)
{
	size_t store_pages = runs ? n : 1, i, merged = 0, chunk;
	unsigned char *exp = NULL;
	struct ksmu_merger m;
	int fd, err;
	char *p;

	err = ksmu_merger_init(&m);
	if (err) {
		snprintf(res->note, sizeof(res->note), "skipped: merger: %s", strerror(-err));
		return;
	}
	fd = memfd_create("bench-cow-store", MFD_CLOEXEC);
	if (fd < 0 || ftruncate(fd, (off_t)(store_pages * PG)) < 0) {
		snprintf(res->note, sizeof(res->note), "memfd: %s", strerror(errno));
		goto out_merger;
	}
	for (i = 0; i < store_pages; i++) {
		if (pwrite(fd, content, PG, (off_t)(i * PG)) != (ssize_t)PG) {
			snprintf(res->note, sizeof(res->note), "pwrite: %s", strerror(errno));
			goto out_close;
		}
	}
	p = map_filled(n, content);
	if (!p) {
		snprintf(res->note, sizeof(res->note), "mmap: %s", strerror(errno));
		goto out_close;
	}
	if (runs) {
		exp = malloc(KSMU_MERGE_MAX_RUN * PG);
		if (!exp)
			goto out_unmap;
		for (i = 0; i < KSMU_MERGE_MAX_RUN; i++)
			memcpy(exp + i * PG, content, PG);
		for (i = 0; i < n; i += chunk) {
			chunk = n - i < KSMU_MERGE_MAX_RUN ? n - i : KSMU_MERGE_MAX_RUN;
			if (ksmu_merge_run(&m, (uintptr_t)(p + i * PG), chunk, fd, i, exp, NULL) ==
			    0)
				merged += chunk;
		}
	} else {
		for (i = 0; i < n; i++)
			merged += ksmu_merge_page(&m, (uintptr_t)(p + i * PG), fd, 0, content) == 0;
	}
	if (merged < n)
		snprintf(res->note, sizeof(res->note), "only %zu of %zu pages merged", merged, n);
	printf("ksmu%s merged %zu of %zu pages: %" PRIu64 " windows, mean %.1f us\n",
	       runs ? " (runs)" : "", merged, n, m.stats.windows,
	       (double)m.stats.window_ns / 1e3 / (double)(m.stats.windows ? m.stats.windows : 1));
	time_writes(p, n, lat, res);
	if (!content_ok(p, n, content))
		snprintf(res->note, sizeof(res->note), "CONTENT WRONG after writes");
	free(exp);
out_unmap:
	munmap(p, n * PG);
out_close:
	if (fd >= 0)
		close(fd);
out_merger:
	ksmu_merger_destroy(&m);
}

/* (e), (f): in a child, whose engine takes the policy at its first merge. */
static void run_engine(size_t n, const unsigned char *content, int policy, uint64_t *lat,
		       struct result *res)
{
	int pfd[2];
	pid_t pid;

	if (pipe(pfd) < 0) {
		snprintf(res->note, sizeof(res->note), "pipe: %s", strerror(errno));
		return;
	}
	pid = fork();
	if (pid == 0) {
		struct ksmu_stats s0, s1;
		struct result r;
		char *p;
		int k;

		memset(&r, 0, sizeof(r));
		close(pfd[0]);
		p = map_filled(n, content);
		if (!p || ksmu_set_run(0) || ksmu_set_tunable("cow_policy", (unsigned long)policy) ||
		    ksmu_set_tunable("max_page_sharing", 1u << 20) || ksmu_stats(&s0) ||
		    ksmu_register(p, n * PG)) {
			snprintf(r.note, sizeof(r.note), "skipped: engine set-up failed");
		} else {
			for (k = 0; k < 3; k++)
				ksmu_scan_full();
			ksmu_stats(&s1);
			if (s1.cow_policy != (uint64_t)policy)
				snprintf(r.note, sizeof(r.note), "skipped: cow_policy=%d unavailable",
					 policy);
			else if (s1.pages_sharing + 1 < n)
				snprintf(r.note, sizeof(r.note), "only %llu of %zu pages merged",
					 (unsigned long long)(s1.pages_sharing + 1), n);
			if (s1.cow_policy == (uint64_t)policy) {
				time_writes(p, n, lat, &r);
				if (!content_ok(p, n, content))
					snprintf(r.note, sizeof(r.note), "CONTENT WRONG after writes");
				ksmu_stats(&s1);
				if (policy && s1.cow_user < n)
					snprintf(r.note, sizeof(r.note),
						 "only %llu anonymous copies",
						 (unsigned long long)s1.cow_user);
			}
		}
		if (write(pfd[1], &r, sizeof(r)) != (ssize_t)sizeof(r))
			_exit(1);
		_exit(0);
	}
	close(pfd[1]);
	if (pid < 0 || read(pfd[0], res, sizeof(*res)) != (ssize_t)sizeof(*res)) {
		memset(res, 0, sizeof(*res));
		snprintf(res->note, sizeof(res->note), "child failed");
	}
	close(pfd[0]);
	if (pid > 0)
		waitpid(pid, NULL, 0);
}

static void run_anon(size_t n, const unsigned char *content, bool present, uint64_t *lat,
		     struct result *res)
{
	char *p = map_filled(n, present ? content : NULL);

	if (!p) {
		snprintf(res->note, sizeof(res->note), "mmap: %s", strerror(errno));
		return;
	}
	time_writes(p, n, lat, res);
	munmap(p, n * PG);
}

/* ---------------------------------------------------------------- main */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: %s [--pages N] [--no-ksm] [--force-ksm] [--quick]\n"
		"  first-write (COW-break) latency: kernel KSM page, ksmu store page,\n"
		"  present and untouched anonymous pages\n",
		bench_prog);
}

static void field(char *buf, size_t len, const char *kind, const char *what, const struct result *r,
		  double v)
{
	size_t used = strlen(buf);

	if (r->ok)
		snprintf(buf + used, len - used, " %s_%s=%.0f", kind, what, v);
	else
		snprintf(buf + used, len - used, " %s_%s=na", kind, what);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"pages", required_argument, NULL, 'n'}, {"no-ksm", no_argument, NULL, 'k'},
	    {"force-ksm", no_argument, NULL, 'f'},   {"quick", no_argument, NULL, 'q'},
	    {"help", no_argument, NULL, 'h'},	     {NULL, 0, NULL, 0}};
	struct result res[K_NR];
	unsigned char content[PG];
	char line[1400], ratio[96];
	size_t n = 4096, i;
	bool quick = false, ksm = true, force_ksm = false;
	uint64_t *lat, clk;
	int c;

	while ((c = getopt_long(argc, argv, "n:kfqh", opts, NULL)) != -1) {
		switch (c) {
		case 'f':
			force_ksm = true;
			break;
		case 'n':
			n = (unsigned long)bench_parse_u64("--pages", optarg, 16, 1u << 20);
			break;
		case 'k':
			ksm = false;
			break;
		case 'q':
			quick = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			bench_usage_error();
		}
	}
	bench_no_operands(argc, argv, optind);
	if (quick) {
		n = 512;
		ksm = false;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	memset(res, 0, sizeof(res));
	lat = calloc(n, sizeof(*lat));
	if (!lat)
		return 1;
	memset(lat, 0, n * sizeof(*lat)); /* fault the array in before timing */
	for (i = 0; i < PG; i++)
		content[i] = (unsigned char)(i * 31 + 7);
	clk = clock_cost(lat, n);

	if (quick) {
		struct ksmu_merger m;
		int err = ksmu_merger_init(&m);

		if (err) {
			printf("SKIP: ksmu merge window unavailable: %s\n", strerror(-err));
			return 77;
		}
		ksmu_merger_destroy(&m);
	}

	if (ksm)
		run_ksm(n, content, force_ksm, lat, &res[K_KSM]);
	else
		snprintf(res[K_KSM].note, sizeof(res[K_KSM].note), "skipped (--no-ksm/--quick)");
	run_ksmu(n, content, false, lat, &res[K_KSMU]);
	run_ksmu(n, content, true, lat, &res[K_KSMU_RUN]);
	run_engine(n, content, 0, lat, &res[K_ENGINE]);
	run_engine(n, content, 1, lat, &res[K_USER]);
	run_anon(n, content, true, lat, &res[K_ANON]);
	run_anon(n, content, false, lat, &res[K_ANON_FIRST]);

	printf("\nfirst write to each of %zu pages, ns (clock_gettime pair: %" PRIu64 " ns)\n", n,
	       clk);
	printf("%-12s %9s %9s %9s  %s\n", "kind", "p50", "p99", "mean", "");
	for (i = 0; i < K_NR; i++) {
		if (res[i].ok)
			printf("%-12s %9" PRIu64 " %9" PRIu64 " %9.0f  %s\n", kind_name[i],
			       res[i].p50, res[i].p99, res[i].mean, res[i].note);
		else
			printf("%-12s %9s %9s %9s  %s\n", kind_name[i], "-", "-", "-", res[i].note);
	}
	if (res[K_KSM].ok && res[K_KSMU].ok) {
		printf("ratio ksmu/ksm: p50 %.2f, p99 %.2f, mean %.2f\n",
		       (double)res[K_KSMU].p50 / (double)res[K_KSM].p50,
		       (double)res[K_KSMU].p99 / (double)res[K_KSM].p99,
		       res[K_KSMU].mean / res[K_KSM].mean);
		snprintf(ratio, sizeof(ratio), " ratio_p50=%.2f ratio_mean=%.2f",
			 (double)res[K_KSMU].p50 / (double)res[K_KSM].p50,
			 res[K_KSMU].mean / res[K_KSM].mean);
	} else {
		snprintf(ratio, sizeof(ratio), " ratio_p50=na ratio_mean=na");
	}
	if (res[K_KSM].ok && res[K_USER].ok) {
		size_t used = strlen(ratio);

		printf("ratio ksmu_user/ksm (cow_policy=1): p50 %.2f, p99 %.2f, mean %.2f\n",
		       (double)res[K_USER].p50 / (double)res[K_KSM].p50,
		       (double)res[K_USER].p99 / (double)res[K_KSM].p99,
		       res[K_USER].mean / res[K_KSM].mean);
		snprintf(ratio + used, sizeof(ratio) - used, " user_ratio_p50=%.2f",
			 (double)res[K_USER].p50 / (double)res[K_KSM].p50);
	}

	snprintf(line, sizeof(line), "RESULT bench=cow pages=%zu clock_ns=%" PRIu64, n, clk);
	for (i = 0; i < K_NR; i++) {
		field(line, sizeof(line), kind_name[i], "p50_ns", &res[i], (double)res[i].p50);
		field(line, sizeof(line), kind_name[i], "p99_ns", &res[i], (double)res[i].p99);
		field(line, sizeof(line), kind_name[i], "mean_ns", &res[i], res[i].mean);
	}
	printf("%s%s\n", line, ratio);
	free(lat);

	for (i = 0; i < K_NR; i++) {
		if (strstr(res[i].note, "WRONG"))
			return 1;
	}
	if (!res[K_KSMU].ok || !res[K_ANON].ok)
		return quick ? 77 : 1;
	return 0;
}
