/* SPDX-License-Identifier: MIT */
/*
 * bench-scale.c - scale: scanner throughput and engine memory as registered
 * memory grows (--mib 1024,4096,16384 in one process) and as it is spread
 * over more processes (--procs 1,2,4 sharing --proc-mib 1024 MiB), ksmu
 * against kernel KSM.
 *
 * Every process maps and fills its own datagen image (1024 templates, 50 %
 * copies, 10 % zero, 40 % unique; seed 11 + process number, so processes
 * share no content and a standalone ksmu engine, one per process, finds
 * the same duplicates as KSM).  The measured work is the first full pass,
 * merging included, for both engines: ksmu: ksmu_scan_full() with the
 * background scanner stopped, CPU = scan_cpu_ns + reader_cpu_ns summed
 * over the processes (they scan at the same time); KSM: pages_to_scan
 * 20000, sleep_millisecs 0, from run=1 to the end of one full pass,
 * ksmd's CPU.  throughput = pages scanned / CPU second.  Engine memory:
 * ksmu metadata_bytes and the growth of the process's RSS over the pass
 * (the image itself is resident before); KSM 64 B per rmap item.
 *
 * Output: RESULT bench=scale engine=E mib=N procs=P pages_per_cpu_s=..
 *         metadata_bytes=.. metadata_per_page=.. rss_growth_kb=..
 * --quick: 64 MiB, procs 1,2, ksmu only (CI smoke; KSM untouched).
 * Exit status: 0; 1 a step failed; 2 bad command line.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench-common.h"
#include "bench-engines.h"
#include "datagen.h"
#include "ksmu.h"

const char bench_prog[] = "bench-scale";

#define MAXP 16

/* What one process reports (shared memory). */
struct proc_out {
	uint64_t cpu_ns, pages, metadata, wall_ns;
	long rss_kb;
	int ok;
};

static size_t parse_list(const char *opt, char *s, uint64_t *v, size_t max, uint64_t hi)
{
	char *save = NULL, *tok;
	size_t n = 0;

	for (tok = strtok_r(s, ",", &save); tok && n < max; tok = strtok_r(NULL, ",", &save))
		v[n++] = bench_parse_u64(opt, tok, 1, hi);
	return n;
}

static unsigned char *fill(size_t len, unsigned p)
{
	struct ksmu_datagen_spec spec = { .pages = len >> 12, .templates = 1024,
					  .dup_frac = 0.5, .zero_frac = 0.1, .seed = 11 + p };

	return bench_map_filled(len, &spec, NULL);
}

/*
 * ksmu in @procs processes of @len bytes each: all fill, wait on @go, scan
 * one pass, report into @out[p].
 */
static void child_ksmu(unsigned p, size_t len, int ready_fd, int go_fd, struct proc_out *out)
{
	unsigned char *mem;
	struct ksmu_stats s0, s1;
	long rss0;
	uint64_t t0;
	char ch = 'r';

	bench_restore_forget_in_child();
	ksmu_set_log(bench_log_to_stderr, NULL, KSMU_LOG_WARN);
	if (ksmu_set_run(KSMU_RUN_STOP) < 0)
		_exit(1);
	mem = fill(len, p);
	rss0 = eng_rss_kb();
	if (ksmu_register(mem, len) < 0)
		_exit(1);
	ksmu_stats(&s0);
	if (write(ready_fd, &ch, 1) != 1 || read(go_fd, &ch, 1) != 1)
		_exit(1);
	t0 = bench_clock_ns(CLOCK_MONOTONIC);
	if (ksmu_scan_full() < 0)
		_exit(1);
	out->wall_ns = bench_clock_ns(CLOCK_MONOTONIC) - t0;
	ksmu_stats(&s1);
	out->cpu_ns = s1.scan_cpu_ns + s1.reader_cpu_ns - s0.scan_cpu_ns - s0.reader_cpu_ns;
	out->pages = s1.pages_scanned - s0.pages_scanned;
	out->metadata = s1.metadata_bytes;
	out->rss_kb = eng_rss_kb() - rss0;
	out->ok = 1;
	ksmu_unregister(mem, len);
	_exit(0);
}

/* KSM's processes: fill, madvise, say ready, wait until told to go (exit). */
static void child_ksm(unsigned p, size_t len, int ready_fd, int go_fd)
{
	unsigned char *mem;
	char ch = 'r';

	bench_restore_forget_in_child();
	mem = fill(len, p);
	if (madvise(mem, len, MADV_MERGEABLE))
		_exit(1);
	if (write(ready_fd, &ch, 1) != 1)
		_exit(1);
	(void)!read(go_fd, &ch, 1);
	_exit(0);
}

static int run_case(enum eng_kind e, uint64_t mib_total, unsigned procs, struct proc_out *out)
{
	size_t len = ((size_t)mib_total << 20) / procs;
	int ready[2], go[2], rc = 0, st;
	pid_t pid[MAXP];
	char ch;
	uint64_t cpu = 0, pages = 0, meta = 0, wall = 0;
	long rss = 0;

	len &= ~(size_t)4095;
	memset(out, 0, sizeof(*out) * MAXP);
	if (pipe(ready) || pipe(go))
		return 1;
	if (e == ENG_KSM) {
		bench_ksm_fresh_start(20000);
		bench_ksm_set("run", "0");
	}
	fflush(stdout);
	for (unsigned p = 0; p < procs; p++) {
		pid[p] = fork();
		if (pid[p] < 0)
			return 1;
		if (pid[p] == 0) {
			close(ready[0]);
			close(go[1]);
			if (e == ENG_KSMU)
				child_ksmu(p, len, ready[1], go[0], &out[p]);
			child_ksm(p, len, ready[1], go[0]);
		}
	}
	close(ready[1]);
	close(go[0]);
	for (unsigned p = 0; p < procs; p++) {
		if (read(ready[0], &ch, 1) != 1) {
			rc = 1;
			break;
		}
	}
	if (!rc && e == ENG_KSM) {
		uint64_t c0 = eng_cpu_ns(e), s0 = eng_pages_scanned(e), f0 = eng_full_scans(e);
		uint64_t t0 = bench_clock_ns(CLOCK_MONOTONIC);

		bench_ksm_set("run", "1");
		while (eng_full_scans(e) < f0 + 1)
			bench_sleep_ns(2000000ULL);
		bench_ksm_set("run", "0");
		wall = bench_clock_ns(CLOCK_MONOTONIC) - t0;
		cpu = eng_cpu_ns(e) - c0;
		pages = eng_pages_scanned(e) - s0;
		meta = eng_metadata_bytes(e);
	}
	for (unsigned p = 0; p < procs; p++)
		(void)!write(go[1], "g", 1);
	close(go[1]);
	for (unsigned p = 0; p < procs; p++) {
		if (waitpid(pid[p], &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st))
			rc = 1;
	}
	close(ready[0]);
	if (e == ENG_KSM)
		bench_ksm_unmerge();
	else {
		for (unsigned p = 0; p < procs; p++) {
			cpu += out[p].cpu_ns;
			pages += out[p].pages;
			meta += out[p].metadata;
			rss += out[p].rss_kb;
			if (out[p].wall_ns > wall)
				wall = out[p].wall_ns;
			if (!out[p].ok)
				rc = 1;
		}
	}
	if (rc) {
		fprintf(stderr, "%s: %s at %" PRIu64 " MiB x %u processes failed\n", bench_prog,
			eng_name(e), mib_total, procs);
		return rc;
	}
	printf("RESULT bench=scale engine=%s mib=%" PRIu64 " procs=%u pages=%" PRIu64
	       " cpu_ms=%.1f wall_ms=%.1f pages_per_cpu_s=%.0f metadata_bytes=%" PRIu64
	       " metadata_per_page=%.1f rss_growth_kb=%ld load=%.2f\n",
	       eng_name(e), mib_total, procs, pages, cpu / 1e6, wall / 1e6,
	       cpu ? (double)pages / (cpu / 1e9) : 0.0, meta,
	       pages ? (double)meta / (double)pages : 0.0, e == ENG_KSMU ? rss : 0L,
	       eng_loadavg());
	fflush(stdout);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "mib", required_argument, NULL, 'm' },
		{ "procs", required_argument, NULL, 'P' },
		{ "proc-mib", required_argument, NULL, 'M' },
		{ "engine", required_argument, NULL, 'e' },
		{ "quick", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	uint64_t mib[8] = { 1024, 4096, 16384 }, procs[8] = { 1, 2, 4 }, proc_mib = 1024;
	size_t nmib = 3, nprocs = 3;
	int engine = BENCH_ENG_BOTH, c, rc = 0;
	struct proc_out *out;

	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (c) {
		case 'm':
			nmib = parse_list("--mib", optarg, mib, 8, 1 << 20);
			break;
		case 'P':
			nprocs = parse_list("--procs", optarg, procs, 8, MAXP);
			break;
		case 'M':
			proc_mib = bench_parse_u64("--proc-mib", optarg, 1, 1 << 20);
			break;
		case 'e':
			engine = (int)bench_parse_engine(optarg);
			break;
		case 'q':
			mib[0] = 64;
			nmib = 1;
			procs[0] = 1;
			procs[1] = 2;
			nprocs = 2;
			proc_mib = 64;
			engine = BENCH_ENG_KSMU;
			break;
		case 'h':
			printf("Usage: %s [--mib N,...] [--procs P,...] [--proc-mib N]\n"
			       "          [--engine ksmu|ksm|both] [--quick]\n"
			       "First-pass throughput and engine memory as memory and processes grow.\n"
			       "Defaults: --mib 1024,4096,16384 --procs 1,2,4 --proc-mib 1024\n",
			       bench_prog);
			return 0;
		default:
			bench_usage_error();
		}
	}
	bench_no_operands(argc, argv, optind);
	engine = bench_side_engines(engine);
	if ((engine & BENCH_ENG_KSM) && bench_mmc_raise(1048576) < 0)
		fprintf(stderr, "%s: cannot raise vm.max_map_count\n", bench_prog);
	out = mmap(NULL, sizeof(*out) * MAXP, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
		   -1, 0);
	if (out == MAP_FAILED)
		return 1;
	for (size_t i = 0; i < nmib; i++) {
		if (engine & BENCH_ENG_KSMU)
			rc |= run_case(ENG_KSMU, mib[i], 1, out);
		if (engine & BENCH_ENG_KSM)
			rc |= run_case(ENG_KSM, mib[i], 1, out);
	}
	for (size_t i = 0; i < nprocs; i++) {
		if (engine & BENCH_ENG_KSMU)
			rc |= run_case(ENG_KSMU, proc_mib, (unsigned)procs[i], out);
		if (engine & BENCH_ENG_KSM)
			rc |= run_case(ENG_KSM, proc_mib, (unsigned)procs[i], out);
	}
	return rc;
}
