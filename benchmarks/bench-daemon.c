/* SPDX-License-Identifier: MIT */
/*
 * bench-daemon.c - merging across processes through ksmd-user.
 *
 * Workload.  --procs N processes (8) of --mib M MiB each (512) hold
 * consecutive slices of ONE datagen image with the standard mix (1024
 * templates, 50 % copies scattered at random, 10 % zero pages, 40 %
 * unique), so the same templates recur in every process, as in cloned VMs.
 *
 * ksmu.  The benchmark starts a private ksmd-user (--daemon PATH, default
 * the one built next to it) on its own socket under /tmp, then forks N
 * children.  Each sets KSMU_DAEMON to that socket before its first libksmu
 * call, maps and fills its slice, reads its Pss, stops the background
 * scanner (run=0), registers the slice and reports ready.  When all are
 * ready the parent releases them; each calls ksmu_scan_full() until
 * neither its pages_sharing + ksm_zero_pages nor that of all children
 * together (a counter in shared memory: answers from the daemon merge a
 * process's pages after another process scanned) has grown for two of its
 * passes (at most --max-passes), then reports Pss, VMAs (/proc/self/maps lines), its
 * process CPU and the byte check of its slice (every page compared with
 * ksmu_datagen_page()), and waits, its pages still mapped, until the
 * parent has read the daemon's RSS, Pss and CPU (/proc/PID/stat, status,
 * smaps_rollup).  Net saving = Pss before - Pss after - daemon Pss - 192 B
 * per VMA of the children.
 * Wall time to converge runs from the release to the last child's report.
 *
 * Kernel KSM (--engine ksm or both, the default; root, KSM idle).  The
 * same N children fill the same slices and madvise(MADV_MERGEABLE) them;
 * KSM gets ksmu's defaults (use_zero_pages 0, max_page_sharing 256,
 * merge_across_nodes 1, smart_scan 1), pages_to_scan 20000 (--ksm-pages)
 * and sleep_millisecs 0, its fastest setting, and run=1.  pages_sharing
 * (+ ksm_zero_pages) and full_scans are polled every 10 ms until two
 * whole passes ended after the last change; run=0 keeps the merged pages
 * while the children report Pss, VMAs and the byte check.  CPU is ksmd's
 * (/proc/PID/schedstat, or stat).  bench-common restores KSM's knobs
 * (run=2 unmerges) on every exit path.
 *
 * Both engines report "to final": the wall and CPU time until the saving
 * reached its final value (ksmu: the last pass that added a merge, in any
 * child, plus the daemon's CPU; KSM: the poll that saw the last change),
 * and the saving net of the engine's own memory (daemon Pss; 192 B per
 * VMA the children gained; KSM's rmap/stable-node cost is in
 * general_profit, which is printed beside it).
 *
 * --max-map-count V raises vm.max_map_count for the run (bench-common
 * restores it on every exit path); without it the limit stays as found.
 *
 * --quick: 3 x 8 MiB, ksmu only; never touches kernel KSM or
 * vm.max_map_count.  Exit 77 if the daemon cannot be started (or, with
 * --engine ksm, if kernel KSM is not usable).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ksmu.h>

#include "bench-common.h"
#include "datagen.h"

const char bench_prog[] = "bench-daemon";

#define PAGE 4096UL

struct child_result {
	int64_t pss_before_kb, pss_after_kb;
	uint64_t vmas, vmas_before, cpu_ns, passes, pages_sharing, zero_pages, bad_pages;
	uint64_t last_ns, cpu_last_ns; /* CLOCK_MONOTONIC and CPU at the last pass that merged */
	uint64_t addr, pid;            /* the slice, for the parent's pagemap reading */
	int err;
};

enum engine { ENGINE_KSMU, ENGINE_KSM };

static int64_t read_pss_kb(void)
{
	char line[256];
	int64_t kb = -1;
	FILE *f = fopen("/proc/self/smaps_rollup", "re");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Pss: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

static uint64_t count_vmas(void)
{
	char line[512];
	uint64_t n = 0;
	FILE *f = fopen("/proc/self/maps", "re");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (strchr(line, '\n'))
			n++;
	fclose(f);
	return n;
}

static int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t w = write(fd, p, len);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

static int read_all(int fd, void *buf, size_t len)
{
	char *p = buf;

	while (len) {
		ssize_t r = read(fd, p, len);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		p += r;
		len -= (size_t)r;
	}
	return 0;
}

/* pages_sharing + ksm_zero_pages gained by all ksmu children (shared memory) */
static uint64_t *all_merged;

static _Noreturn void child_main(enum engine eng, const char *sock,
				 const struct ksmu_datagen_spec *spec, size_t first, size_t pages,
				 unsigned max_passes, int ready_fd, int go_fd, int res_fd, int end_fd)
{
	struct child_result r = { 0 };
	unsigned char *mem, want[PAGE];
	struct ksmu_stats st;
	uint64_t last = 0, cpu0;
	unsigned still = 0;
	uint64_t all_seen = 0;
	char c;

	if (eng == ENGINE_KSMU)
		setenv("KSMU_DAEMON", sock, 1);
	mem = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		_exit(1);
	for (size_t i = 0; i < pages; i++)
		ksmu_datagen_page(spec, first + i, mem + i * PAGE);
	r.addr = (uint64_t)(uintptr_t)mem;
	r.pid = (uint64_t)getpid();
	r.pss_before_kb = read_pss_kb();
	r.vmas_before = count_vmas();
	if (eng == ENGINE_KSM) {
		r.err = madvise(mem, pages * PAGE, MADV_MERGEABLE) ? -errno : 0;
	} else {
		r.err = ksmu_set_run(0);
		if (!r.err)
			r.err = ksmu_register(mem, pages * PAGE);
	}
	c = r.err ? 'E' : 'R';
	if (write_all(ready_fd, &c, 1))
		_exit(1);
	if (read_all(go_fd, &c, 1) == 0) {
		/* the parent writes nothing: EOF is the release (KSM: converged) */
	}
	cpu0 = bench_clock_ns(CLOCK_PROCESS_CPUTIME_ID);
	while (eng == ENGINE_KSMU && !r.err && r.passes < max_passes && still < 2) {
		int e = ksmu_scan_full();

		if (e < 0) {
			r.err = e;
			break;
		}
		r.passes++;
		if (ksmu_stats(&st) < 0)
			break;
		if (st.pages_sharing + st.ksm_zero_pages > last) {
			__atomic_add_fetch(all_merged, st.pages_sharing + st.ksm_zero_pages - last,
					   __ATOMIC_RELAXED);
			all_seen = __atomic_load_n(all_merged, __ATOMIC_RELAXED);
			last = st.pages_sharing + st.ksm_zero_pages;
			still = 0;
			r.last_ns = bench_clock_ns(CLOCK_MONOTONIC);
			r.cpu_last_ns = bench_clock_ns(CLOCK_PROCESS_CPUTIME_ID) - cpu0;
		} else if (__atomic_load_n(all_merged, __ATOMIC_RELAXED) != all_seen) {
			all_seen = __atomic_load_n(all_merged, __ATOMIC_RELAXED);
			still = 0; /* others still merge: the daemon may answer us yet */
		} else {
			still++;
		}
	}
	r.cpu_ns = bench_clock_ns(CLOCK_PROCESS_CPUTIME_ID) - cpu0;
	if (eng == ENGINE_KSMU && ksmu_stats(&st) == 0) {
		r.pages_sharing = st.pages_sharing;
		r.zero_pages = st.ksm_zero_pages;
	}
	r.pss_after_kb = read_pss_kb();
	r.vmas = count_vmas();
	for (size_t i = 0; i < pages; i++) {
		ksmu_datagen_page(spec, first + i, want);
		if (memcmp(want, mem + i * PAGE, PAGE))
			r.bad_pages++;
	}
	if (write_all(res_fd, &r, sizeof(r)))
		_exit(1);
	(void)read_all(end_fd, &c, 1);
	_exit(0);
}

struct daemon_usage {
	uint64_t cpu_ticks, rss_kb, pss_kb;
};

static struct daemon_usage daemon_usage(pid_t pid)
{
	struct daemon_usage u = { 0 };
	char path[64], buf[4096];
	unsigned long ut = 0, stt = 0;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if (bench_read_text(path, buf, sizeof(buf)) == 0) {
		char *p = strrchr(buf, ')');

		if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
				&ut, &stt) == 2)
			u.cpu_ticks = ut + stt;
	}
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "re");
	if (f) {
		while (fgets(buf, sizeof(buf), f))
			if (sscanf(buf, "VmRSS: %lu kB", &ut) == 1)
				u.rss_kb = ut;
		fclose(f);
	}
	snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", (int)pid);
	f = fopen(path, "re");
	if (f) {
		while (fgets(buf, sizeof(buf), f))
			if (sscanf(buf, "Pss: %lu kB", &ut) == 1)
				u.pss_kb = ut;
		fclose(f);
	}
	return u;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/*
 * Append the PFNs of @pages pages at @addr of @pid to @pfns (from
 * /proc/PID/pagemap; root).  A page without a PFN gets a unique fake one
 * (never counted as shared).  Return: 0 or -1.
 */
static int read_pfns(pid_t pid, uint64_t addr, size_t pages, uint64_t *pfns, uint64_t *fake)
{
	char path[64];
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/pagemap", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	for (size_t i = 0; i < pages;) {
		uint64_t buf[4096];
		size_t n = pages - i < 4096 ? pages - i : 4096;
		ssize_t got = pread(fd, buf, n * 8, (off_t)((addr / PAGE + i) * 8));

		if (got != (ssize_t)(n * 8)) {
			close(fd);
			return -1;
		}
		for (size_t j = 0; j < n; j++) {
			uint64_t pfn = buf[j] & ((1ULL << 55) - 1);

			pfns[i + j] = (buf[j] >> 63) && pfn ? pfn : (1ULL << 62) + (*fake)++;
		}
		i += n;
	}
	close(fd);
	return 0;
}

/* Pages minus distinct frames: what merging saved, engine-agnostic. */
static uint64_t frames_saved(uint64_t *pfns, size_t n)
{
	size_t distinct = 0;

	qsort(pfns, n, sizeof(*pfns), cmp_u64);
	for (size_t i = 0; i < n; i++)
		distinct += !i || pfns[i] != pfns[i - 1];
	return n - distinct;
}

/* What one engine's run gives. */
struct summary {
	struct child_result sum;
	uint64_t max_passes, wall_ns, final_wall_ns, final_cpu_ns, engine_cpu_ns;
	uint64_t engine_rss_kb, engine_pss_kb, full_scans;
	uint64_t frames_saved; /* pages - distinct PFNs over all children; 0: unknown */
	int64_t general_profit;
	bool converged;
};

/* The private daemon: its pid, or -1 (77 if it cannot be started). */
static pid_t start_daemon(const char *daemon_bin, const char *sock)
{
	pid_t dpid;

	unlink(sock);
	dpid = fork();
	if (dpid < 0)
		return -1;
	if (dpid == 0) {
		int null = open("/dev/null", O_WRONLY);

		if (null >= 0)
			dup2(null, STDOUT_FILENO);
		execl(daemon_bin, daemon_bin, "--socket", sock, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 500; i++) {
		struct stat sb;
		int status;

		if (stat(sock, &sb) == 0)
			return dpid;
		if (waitpid(dpid, &status, WNOHANG) == dpid)
			return -1;
		bench_sleep_ns(10000000);
	}
	kill(dpid, SIGKILL);
	waitpid(dpid, NULL, 0);
	return -1;
}

static uint64_t ksmd_ns(void)
{
	struct bench_ksmd_cpu c = bench_ksmd_cpu();

	return bench_ksmd_schedstat ? c.sched_ns : c.stat_ns;
}

static uint64_t ksm_saving(void)
{
	uint64_t v = bench_ksm_read("pages_sharing");

	if (bench_ksm_has_zero)
		v += bench_ksm_read("ksm_zero_pages");
	return v;
}

/*
 * KSM from run=1 until two whole passes ended after the last change of
 * pages_sharing + ksm_zero_pages; run=0 then keeps the merged pages.
 */
static void ksm_converge(struct summary *out, size_t pages, uint64_t ksm_pages)
{
	uint64_t timeout = 60000000000ULL + 400000ULL * pages;
	uint64_t t0, c0, fs0, fs, last_fs, change_fs, saving, last;

	bench_ksm_fresh_start(ksm_pages);
	fs0 = last_fs = change_fs = bench_ksm_scans();
	last = ksm_saving();
	c0 = ksmd_ns();
	t0 = bench_clock_ns(CLOCK_MONOTONIC);
	out->final_wall_ns = 0;
	out->final_cpu_ns = 0;
	bench_ksm_set("run", "1");
	for (;;) {
		uint64_t now;

		bench_sleep_ns(10000000);
		fs = bench_ksm_scans();
		saving = ksm_saving();
		now = bench_clock_ns(CLOCK_MONOTONIC);
		if (saving != last) {
			last = saving;
			change_fs = fs;
			out->final_wall_ns = now - t0;
			out->final_cpu_ns = ksmd_ns() - c0;
		}
		last_fs = fs;
		if (last_fs >= fs0 + 2 && last_fs >= change_fs + 3) {
			out->converged = true;
			break;
		}
		if (now - t0 > timeout) {
			fprintf(stderr, "bench-daemon: KSM did not converge in %.0f s\n",
				(double)timeout / 1e9);
			break;
		}
	}
	bench_ksm_set("run", "0");
	out->wall_ns = bench_clock_ns(CLOCK_MONOTONIC) - t0;
	out->engine_cpu_ns = ksmd_ns() - c0;
	out->full_scans = last_fs - fs0;
	out->general_profit = bench_ksm_read_s64("general_profit");
	out->max_passes = out->full_scans;
}

/* One engine over the N slices; 0, 1 (a step failed) or 77 (cannot run). */
static int run(enum engine eng, const char *daemon_bin, const struct ksmu_datagen_spec *spec,
	       unsigned procs, size_t pages_per, unsigned max_passes, uint64_t ksm_pages,
	       struct summary *out)
{
	char sock[108];
	pid_t dpid = -1;
	int rc = 0;

	memset(out, 0, sizeof(*out));
	snprintf(sock, sizeof(sock), "/tmp/ksmu-bench-daemon-%d.sock", (int)getpid());
	if (eng == ENGINE_KSMU) {
		dpid = start_daemon(daemon_bin, sock);
		if (dpid < 0) {
			fprintf(stderr, "bench-daemon: SKIP: %s did not start\n", daemon_bin);
			return 77;
		}
	} else {
		const struct bench_ksm_knobs kn = {
			.use_zero_pages = 0, .max_page_sharing = 256, .merge_across_nodes = 1,
			.smart_scan = 1,
		};
		char why[256];

		if (!bench_ksm_usable(why, sizeof(why))) {
			fprintf(stderr, "bench-daemon: SKIP kernel KSM: %s\n", why);
			return 77;
		}
		bench_ksm_setup(&kn);
	}

	int ready[2], go[2], res[2], end[2];
	if (pipe(ready) || pipe(go) || pipe(res) || pipe(end)) {
		perror("pipe");
		if (dpid > 0)
			kill(dpid, SIGTERM);
		return 1;
	}
	pid_t *kids = calloc(procs, sizeof(*kids));
	if (!kids)
		return 1;
	all_merged = mmap(NULL, sizeof(*all_merged), PROT_READ | PROT_WRITE,
			  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (all_merged == MAP_FAILED) {
		free(kids);
		return 1;
	}
	for (unsigned i = 0; i < procs; i++) {
		kids[i] = fork();
		if (kids[i] == 0) {
			bench_restore_forget_in_child();
			close(go[1]);
			close(end[1]);
			close(ready[0]);
			close(res[0]);
			child_main(eng, sock, spec, (size_t)i * pages_per, pages_per, max_passes,
				   ready[1], go[0], res[1], end[0]);
		}
	}
	close(go[0]);
	close(end[0]);
	close(ready[1]);
	close(res[1]);

	for (unsigned i = 0; i < procs; i++) {
		char c = 'E';

		if (read_all(ready[0], &c, 1) || c != 'R') {
			fprintf(stderr, "bench-daemon: a child failed to register\n");
			rc = 1;
		}
	}
	struct daemon_usage d0 = { 0 }, d1 = { 0 };
	uint64_t t0 = bench_clock_ns(CLOCK_MONOTONIC);
	if (eng == ENGINE_KSMU) {
		d0 = daemon_usage(dpid);
		t0 = bench_clock_ns(CLOCK_MONOTONIC);
	} else {
		ksm_converge(out, spec->pages, ksm_pages);
		if (!out->converged)
			rc = 1;
	}
	close(go[1]);

	struct child_result *sum = &out->sum;
	uint64_t last_ns = t0, fake = 0;
	size_t got = 0;
	uint64_t *pfns = calloc(spec->pages ? spec->pages : 1, sizeof(*pfns));
	bool pfns_ok = pfns != NULL;
	for (unsigned i = 0; i < procs; i++) {
		struct child_result r;

		if (read_all(res[0], &r, sizeof(r))) {
			fprintf(stderr, "bench-daemon: a child died before reporting\n");
			rc = 1;
			continue;
		}
		if (r.err) {
			fprintf(stderr, "bench-daemon: a child: %s\n", strerror(-r.err));
			rc = 1;
		}
		sum->pss_before_kb += r.pss_before_kb;
		sum->pss_after_kb += r.pss_after_kb;
		sum->vmas += r.vmas;
		sum->vmas_before += r.vmas_before;
		sum->cpu_ns += r.cpu_ns;
		sum->cpu_last_ns += r.cpu_last_ns;
		sum->pages_sharing += r.pages_sharing;
		sum->zero_pages += r.zero_pages;
		sum->bad_pages += r.bad_pages;
		if (r.last_ns > last_ns)
			last_ns = r.last_ns;
		/* results come in any order: slot @got, only the count of frames matters */
		if (pfns_ok && read_pfns((pid_t)r.pid, r.addr, pages_per, pfns + got * pages_per,
					 &fake))
			pfns_ok = false;
		got++;
		if (r.passes > out->max_passes && eng == ENGINE_KSMU)
			out->max_passes = r.passes;
	}
	if (pfns_ok && got == procs)
		out->frames_saved = frames_saved(pfns, got * pages_per);
	free(pfns);
	if (eng == ENGINE_KSMU) {
		out->wall_ns = bench_clock_ns(CLOCK_MONOTONIC) - t0;
		d1 = daemon_usage(dpid);
		long tick = sysconf(_SC_CLK_TCK);

		out->engine_cpu_ns = (d1.cpu_ticks - d0.cpu_ticks) * (1000000000ULL / (uint64_t)tick);
		out->engine_rss_kb = d1.rss_kb;
		out->engine_pss_kb = d1.pss_kb;
		out->final_wall_ns = last_ns - t0;
		out->final_cpu_ns = sum->cpu_last_ns + out->engine_cpu_ns;
		out->converged = !rc;
	} else {
		sum->pages_sharing = bench_ksm_read("pages_sharing");
		sum->zero_pages = bench_ksm_has_zero ? bench_ksm_read("ksm_zero_pages") : 0;
		sum->cpu_ns = out->engine_cpu_ns;
	}
	close(end[1]);
	for (unsigned i = 0; i < procs; i++)
		waitpid(kids[i], NULL, 0);
	if (eng == ENGINE_KSMU) {
		kill(dpid, SIGTERM);
		waitpid(dpid, NULL, 0);
		unlink(sock);
	} else {
		bench_ksm_unmerge();
	}
	close(ready[0]);
	close(res[0]);
	munmap(all_merged, sizeof(*all_merged));
	free(kids);
	if (sum->bad_pages)
		rc = 1;
	return rc;
}

/* Saving net of the engine: Pss drop - engine Pss - 192 B per VMA added. */
static int64_t net_saved_kb(const struct summary *s)
{
	uint64_t added = s->sum.vmas > s->sum.vmas_before ? s->sum.vmas - s->sum.vmas_before : 0;

	return s->sum.pss_before_kb - s->sum.pss_after_kb - (int64_t)s->engine_pss_kb -
	       (int64_t)(added * 192 / 1024);
}

static void report(enum engine eng, const struct summary *s, unsigned procs, uint64_t mib,
		   const struct ksmu_datagen_spec *spec, size_t ideal)
{
	const struct child_result *c = &s->sum;
	const char *name = eng == ENGINE_KSMU ? "ksmu" : "ksm";
	uint64_t got = c->pages_sharing + c->zero_pages;
	uint64_t added = c->vmas > c->vmas_before ? c->vmas - c->vmas_before : 0;

	printf("%s: %u x %lu MiB, %zu pages; ideal pages_sharing %zu\n",
	       eng == ENGINE_KSMU ? "ksmu via ksmd-user" : "kernel KSM (20000 pages, 0 ms)", procs,
	       (unsigned long)mib, spec->pages, ideal);
	printf("  %s %lu (%.1f %% of ideal), passes %lu, to final %.2f s wall "
	       "%.2f s CPU, run %.2f s\n",
	       eng == ENGINE_KSMU ? "sum of per-process pages_sharing+zero (sharing inside each)"
				  : "pages_sharing+zero",
	       (unsigned long)got, ideal ? 100.0 * (double)got / (double)ideal : 0.0,
	       (unsigned long)s->max_passes, (double)s->final_wall_ns / 1e9,
	       (double)s->final_cpu_ns / 1e9, (double)s->wall_ns / 1e9);
	printf("  frames saved (pages - distinct PFNs in pagemap) %lu (%.1f %% of ideal)\n",
	       (unsigned long)s->frames_saved,
	       ideal ? 100.0 * (double)s->frames_saved / (double)ideal : 0.0);
	printf("  Pss %ld -> %ld kB, engine RSS %lu kB Pss %lu kB, VMAs +%lu, net saved %ld kB",
	       (long)c->pss_before_kb, (long)c->pss_after_kb, (unsigned long)s->engine_rss_kb,
	       (unsigned long)s->engine_pss_kb, (unsigned long)added, (long)net_saved_kb(s));
	if (eng == ENGINE_KSM)
		printf(", general_profit %ld kB", (long)(s->general_profit / 1024));
	printf("\n  CPU %s %.2f s%s, bytes changed: %lu pages\n",
	       eng == ENGINE_KSMU ? "agents" : "ksmd", (double)c->cpu_ns / 1e9,
	       eng == ENGINE_KSMU ? "" : " (whole run)", (unsigned long)c->bad_pages);
	if (eng == ENGINE_KSMU)
		printf("  daemon CPU %.2f s, daemon RSS per indexed page %.1f B\n",
		       (double)s->engine_cpu_ns / 1e9,
		       spec->pages ? (double)s->engine_rss_kb * 1024.0 / (double)spec->pages : 0.0);
	printf("RESULT bench=daemon engine=%s procs=%u max_map_count=%ld mib=%lu sharing=%lu ideal=%zu "
	       "frames_saved=%lu passes=%lu final_wall_s=%.3f final_cpu_s=%.3f run_wall_s=%.3f "
	       "pss_before_kb=%ld pss_after_kb=%ld engine_rss_kb=%lu engine_pss_kb=%lu "
	       "vmas_added=%lu net_saved_kb=%ld general_profit_kb=%ld cpu_s=%.3f engine_cpu_s=%.3f "
	       "bad_pages=%lu\n",
	       name, procs, (long)bench_mmc_read(), (unsigned long)mib, (unsigned long)got, ideal,
	       (unsigned long)s->frames_saved, (unsigned long)s->max_passes, (double)s->final_wall_ns / 1e9,
	       (double)s->final_cpu_ns / 1e9, (double)s->wall_ns / 1e9, (long)c->pss_before_kb,
	       (long)c->pss_after_kb, (unsigned long)s->engine_rss_kb,
	       (unsigned long)s->engine_pss_kb, (unsigned long)added, (long)net_saved_kb(s),
	       (long)(s->general_profit / 1024), (double)c->cpu_ns / 1e9,
	       (double)s->engine_cpu_ns / 1e9, (unsigned long)c->bad_pages);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "quick", no_argument, NULL, 'q' },
		{ "procs", required_argument, NULL, 'n' },
		{ "mib", required_argument, NULL, 'm' },
		{ "daemon", required_argument, NULL, 'd' },
		{ "max-passes", required_argument, NULL, 'p' },
		{ "max-map-count", required_argument, NULL, 'M' },
		{ "engine", required_argument, NULL, 'e' },
		{ "ksm-pages", required_argument, NULL, 'k' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	unsigned procs = 8, max_passes = 20;
	uint64_t mib = 512, mmc = 0, ksm_pages = 20000;
	const char *daemon_bin = KSMU_DAEMON_BIN;
	bool do_ksmu = true, do_ksm = true, quick = false;
	int o;

	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 'q':
			procs = 3;
			mib = 8;
			quick = true;
			break;
		case 'n':
			procs = (unsigned)bench_parse_u64("--procs", optarg, 1, 64);
			break;
		case 'm':
			mib = bench_parse_u64("--mib", optarg, 1, 8192);
			break;
		case 'd':
			daemon_bin = optarg;
			break;
		case 'p':
			max_passes = (unsigned)bench_parse_u64("--max-passes", optarg, 1, 1000);
			break;
		case 'M':
			mmc = bench_parse_u64("--max-map-count", optarg, 65530, 1U << 30);
			break;
		case 'e':
			if (!strcmp(optarg, "ksmu")) {
				do_ksm = false;
			} else if (!strcmp(optarg, "ksm")) {
				do_ksmu = false;
			} else if (strcmp(optarg, "both")) {
				fprintf(stderr, "bench-daemon: --engine: ksmu, ksm or both, not '%s'\n",
					optarg);
				bench_usage_error();
			}
			break;
		case 'k':
			ksm_pages = bench_parse_u64("--ksm-pages", optarg, 1, 1U << 24);
			break;
		case 'h':
			printf("Usage: bench-daemon [--procs N] [--mib M] [--daemon PATH] [--max-passes N]\n"
			       "          [--max-map-count N] [--engine ksmu|ksm|both] [--ksm-pages N]\n"
			       "          [--quick]\n"
			       "N processes of M MiB each, merged across processes by ksmd-user and by\n"
			       "kernel KSM, one after the other.  Defaults: 8 x 512 MiB, 20 passes at\n"
			       "most, KSM at 20000 pages; --quick: 3 x 8 MiB, ksmu only.\n");
			return 0;
		default:
			bench_usage_error();
		}
	}
	bench_no_operands(argc, argv, optind);
	if (quick)
		do_ksm = false;

	size_t pages_per = (size_t)(mib << 20) / PAGE;
	struct ksmu_datagen_spec spec = {
		.pages = pages_per * procs, .templates = 1024, .dup_frac = 0.5,
		.zero_frac = 0.1, .run_len = 0, .seed = 0x6b736d75,
	};
	struct ksmu_datagen_truth truth;
	int rc = 0, r;

	ksmu_datagen_truth(&spec, &truth);
	if (mmc) {
		int e = bench_mmc_raise(mmc);

		if (e < 0) {
			fprintf(stderr, "bench-daemon: vm.max_map_count=%lu: %s\n",
				(unsigned long)mmc, strerror(-e));
			return 1;
		}
	}
	/* ksmu first, then KSM; an engine this machine cannot run is skipped (77) */
	const enum engine engs[2] = { ENGINE_KSMU, ENGINE_KSM };
	bool want[2] = { do_ksmu, do_ksm };
	struct summary sum[2];

	for (int k = 0; k < 2; k++) {
		if (!want[k])
			continue;
		r = run(engs[k], daemon_bin, &spec, procs, pages_per, max_passes, ksm_pages, &sum[k]);
		if (r == 77) {
			want[k] = false;
			continue;
		}
		if (r)
			rc = 1;
		report(engs[k], &sum[k], procs, mib, &spec, truth.pages_sharing);
	}
	if (!want[0] && !want[1])
		return 77;
	if (want[0] && want[1]) {
		const struct summary *su = &sum[0], *sk = &sum[1];
		double nk = (double)net_saved_kb(sk), nu = (double)net_saved_kb(su);
		double net = nk ? nu / nk : 0.0;
		double wall = sk->final_wall_ns ? (double)su->final_wall_ns / (double)sk->final_wall_ns
						: 0.0;
		double cpu = sk->final_cpu_ns ? (double)su->final_cpu_ns / (double)sk->final_cpu_ns
					      : 0.0;

		printf("ratios (ksmu / KSM): net saving %.3f, time to final %.3f, CPU to final %.3f\n",
		       net, wall, cpu);
		printf("RESULT bench=daemon engine=ratio net_saving=%.4f final_wall=%.4f final_cpu=%.4f\n",
		       net, wall, cpu);
	}
	return rc;
}
