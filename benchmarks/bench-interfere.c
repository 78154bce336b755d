/* SPDX-License-Identifier: MIT */
/*
 * bench-interfere.c - interference: the throughput of an application thread
 * that keeps writing its memory while an engine works, against no engine.
 *
 * Each run maps and fills a fresh --mib MiB datagen image (1024 templates,
 * 50 % copies scattered, 10 % zero, 40 % unique) and registers it with the
 * engine, which converges first (so the writes meet merged pages, as an
 * application's would) and then runs at the budget (--pages-to-scan,
 * --sleep-ms; the same for both engines).  The application thread then
 * writes one 8-byte word into a random page of the first --write-mib MiB,
 * as fast as it can, for --seconds s; writes/s is its throughput.  "none"
 * is the same with no engine at all.  ksmu runs in a forked child, KSM and
 * none in the parent, one after the other.  Writes cost more under an
 * engine because merged pages are copied on the first write (both engines),
 * and under ksmu also because the dirty tracker write-protects every page
 * again each pass (one async write-protect fault per page and pass).
 *
 * Output: RESULT bench=interfere engine=none|ksmu|ksm writes_per_s=...
 * and RESULT bench=interfere ratio ksmu_vs_none=.. ksm_vs_none=..
 * --quick: 64 MiB, ksmu and none, 1 s (CI smoke; KSM untouched).
 * Exit status: 0; 1 a step failed; 2 bad command line.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bench-common.h"
#include "bench-engines.h"
#include "datagen.h"
#include "ksmu.h"

const char bench_prog[] = "bench-interfere";

struct opts {
	struct bench_side_opts side; /* --pages-to-scan, --sleep-ms, --engine, --quick */
	uint64_t mib, write_mib, seconds;
};

struct job {
	const struct opts *o;
	enum eng_kind e;
	double *out; /* writes/s, in memory shared with the parent */
};

static int run_one(void *arg)
{
	const struct job *j = arg;
	const struct opts *o = j->o;
	struct ksmu_datagen_spec spec = { .templates = 1024, .dup_frac = 0.5, .zero_frac = 0.1,
					  .seed = 3 };
	size_t len = (size_t)o->mib << 20, wpages = (size_t)o->write_mib << 8;
	uint64_t c0 = 0, c1 = 0, t0, t1, end, writes = 0, x = 88172645463325252ULL, sav0, sav1;
	unsigned char *mem;

	spec.pages = len >> 12;
	if (j->e == ENG_KSMU) {
		ksmu_set_log(bench_log_to_stderr, NULL, KSMU_LOG_WARN);
		if (ksmu_set_run(KSMU_RUN_STOP) < 0)
			return 1;
	} else if (j->e == ENG_KSM) {
		bench_ksm_fresh_start(20000);
		bench_ksm_set("run", "0");
	}
	mem = bench_map_filled(len, &spec, NULL);
	if (j->e != ENG_NONE) {
		eng_register(j->e, mem, len);
		eng_converge(j->e, 600, NULL, NULL);
		eng_start(j->e, o->side.pages_to_scan, o->side.sleep_ms);
	}
	sav0 = eng_saving(j->e);
	c0 = eng_cpu_ns(j->e);
	t0 = bench_clock_ns(CLOCK_MONOTONIC);
	end = t0 + o->seconds * 1000000000ULL;
	for (;;) {
		for (unsigned k = 0; k < 1024; k++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			((volatile uint64_t *)(mem + ((x % wpages) << 12)))[(x >> 40) & 511] = x;
		}
		writes += 1024;
		t1 = bench_clock_ns(CLOCK_MONOTONIC);
		if (t1 >= end)
			break;
	}
	c1 = eng_cpu_ns(j->e);
	sav1 = eng_saving(j->e);
	*j->out = (double)writes / ((double)(t1 - t0) / 1e9);
	printf("RESULT bench=interfere engine=%s mib=%" PRIu64 " write_mib=%" PRIu64
	       " seconds=%" PRIu64 " pages_to_scan=%" PRIu64 " sleep_millisecs=%" PRIu64
	       " writes_per_s=%.0f engine_cpu_ms_per_s=%.1f saving_before=%" PRIu64
	       " saving_after=%" PRIu64 " load=%.2f\n",
	       eng_name(j->e), o->mib, o->write_mib, o->seconds, o->side.pages_to_scan,
	       o->side.sleep_ms,
	       *j->out, (double)(c1 - c0) / 1e6 / ((double)(t1 - t0) / 1e9), sav0, sav1,
	       eng_loadavg());
	fflush(stdout);
	if (j->e != ENG_NONE)
		eng_stop(j->e);
	if (j->e == ENG_KSM)
		bench_ksm_unmerge();
	else if (j->e == ENG_KSMU)
		ksmu_unregister(mem, len);
	munmap(mem, len);
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: %s [--mib N] [--write-mib N] [--seconds S] [--pages-to-scan N]\n"
		"          [--sleep-ms N] [--engine ksmu|ksm|both] [--quick]\n"
		"Throughput of a thread writing random pages while each engine works,\n"
		"against no engine.  Defaults: 1024 MiB, writes to the first 256 MiB, 10 s,\n"
		"4000 pages / 20 ms for both engines.\n",
		bench_prog);
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "mib", required_argument, NULL, 'm' },
		{ "write-mib", required_argument, NULL, 'W' },
		{ "seconds", required_argument, NULL, 't' },
		{ "pages-to-scan", required_argument, NULL, 'p' },
		{ "sleep-ms", required_argument, NULL, 's' },
		{ "engine", required_argument, NULL, 'e' },
		{ "quick", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct opts o = { .side = BENCH_SIDE_OPTS_INIT, .mib = 1024, .write_mib = 256,
			  .seconds = 10 };
	double *res, none = 0;
	int c, rc = 0;

	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (c) {
		case 'm':
			o.mib = bench_parse_u64("--mib", optarg, 1, 1 << 20);
			break;
		case 'W':
			o.write_mib = bench_parse_u64("--write-mib", optarg, 1, 1 << 20);
			break;
		case 't':
			o.seconds = bench_parse_u64("--seconds", optarg, 1, 3600);
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			if (!bench_side_option(&o.side, c, optarg))
				bench_usage_error();
		}
	}
	bench_no_operands(argc, argv, optind);
	if (o.side.quick) {
		o.mib = 64;
		o.write_mib = 16;
		o.seconds = 1;
		o.side.engine = BENCH_ENG_KSMU;
	}
	if (o.write_mib > o.mib) {
		fprintf(stderr, "%s: --write-mib must not exceed --mib\n", bench_prog);
		return 2;
	}
	o.side.engine = bench_side_engines(o.side.engine);
	if (!o.side.quick && bench_mmc_raise(1048576) < 0)
		fprintf(stderr, "%s: cannot raise vm.max_map_count\n", bench_prog);
	res = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (res == MAP_FAILED)
		return 1;
	{
		struct job j = { &o, ENG_NONE, &res[0] };

		rc |= run_one(&j);
		none = res[0];
		if (o.side.engine & BENCH_ENG_KSMU) {
			j.e = ENG_KSMU;
			j.out = &res[1];
			if (eng_run_child(run_one, &j))
				rc = 1;
		}
		if (o.side.engine & BENCH_ENG_KSM) {
			j.e = ENG_KSM;
			j.out = &res[2];
			rc |= run_one(&j);
		}
	}
	printf("RESULT bench=interfere ratio ksmu_vs_none=%.3f ksm_vs_none=%.3f\n",
	       none > 0 && res[1] > 0 ? res[1] / none : -1.0,
	       none > 0 && res[2] > 0 ? res[2] / none : -1.0);
	return rc;
}
