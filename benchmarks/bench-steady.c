/* SPDX-License-Identifier: MIT */
/*
 * bench-steady.c - steady-state cost: the CPU each engine spends per second
 * watching registered memory that does not change, and the latency from a
 * duplicate appearing to its merge, ksmu against kernel KSM at the same
 * CPU budget (pages_to_scan / sleep_millisecs the same for both).
 *
 * For each size in --mib (1024,4096,16384) and each engine in turn (ksmu
 * in a forked child, then KSM in the parent; each frees its memory before
 * the next starts, so 16 GiB fit one at a time): map and fill one datagen
 * image (1024 templates, 50 % copies scattered, 10 % zero, 40 % unique),
 * register it, converge at full speed (eng_converge), then run the engine
 * at the budget.  After a warm-up of --window/2 s the engine's CPU over
 * --window s gives cpu_ms_per_s.  Then two unique pages a third and two
 * thirds into the image get the same new content, and the time until the
 * saving grows is latency_ms (polled every 2 ms; -1 after
 * --latency-timeout s).
 *
 * Output: RESULT bench=steady engine=ksmu|ksm mib=N key=value...
 * --quick: 64 MiB, ksmu only, 1 s window (CI smoke; KSM untouched).
 * Exit status: 0; 1 a step failed; 2 bad command line.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "bench-common.h"
#include "bench-engines.h"
#include "datagen.h"
#include "ksmu.h"

const char bench_prog[] = "bench-steady";

struct opts {
	uint64_t mib[8];
	unsigned nmib;
	struct bench_side_opts side; /* --pages-to-scan, --sleep-ms, --engine, --quick */
	uint64_t window_s, latency_timeout_s;
	uint64_t max_map_count;
};

struct job {
	const struct opts *o;
	uint64_t mib;
	enum eng_kind e;
};

static size_t find_unique(const struct ksmu_datagen_spec *spec, size_t from)
{
	for (size_t i = from; i < spec->pages; i++) {
		uint64_t id;

		if (ksmu_datagen_kind(spec, i, &id) == KSMU_DATAGEN_UNIQUE)
			return i;
	}
	return from;
}

static int run_one(void *arg)
{
	const struct job *j = arg;
	const struct opts *o = j->o;
	struct ksmu_datagen_spec spec = { .templates = 1024, .dup_frac = 0.5, .zero_frac = 0.1,
					  .seed = 1 };
	size_t len = (size_t)j->mib << 20, a, b;
	uint64_t fill_ns, conv_cpu, c0, c1, s0, s1, t0, t1, base, lat_ns = 0, deadline;
	unsigned passes;
	long rss0, rss1;
	unsigned char *mem;
	bool merged = false;
	double win_s;
	double load0 = eng_loadavg();

	spec.pages = len >> 12;
	if (j->e == ENG_KSMU) {
		ksmu_set_log(bench_log_to_stderr, NULL, KSMU_LOG_WARN);
		if (ksmu_set_run(KSMU_RUN_STOP) < 0)
			return 1;
	} else {
		bench_ksm_fresh_start(20000);
		bench_ksm_set("run", "0");
	}
	mem = bench_map_filled(len, &spec, &fill_ns);
	rss0 = eng_rss_kb();
	eng_register(j->e, mem, len);
	eng_converge(j->e, 600, &conv_cpu, &passes);
	rss1 = eng_rss_kb();

	eng_start(j->e, o->side.pages_to_scan, o->side.sleep_ms);
	bench_sleep_ns(o->window_s * 500000000ULL);
	c0 = eng_cpu_ns(j->e);
	s0 = eng_pages_scanned(j->e);
	t0 = bench_clock_ns(CLOCK_MONOTONIC);
	bench_sleep_ns(o->window_s * 1000000000ULL);
	c1 = eng_cpu_ns(j->e);
	s1 = eng_pages_scanned(j->e);
	t1 = bench_clock_ns(CLOCK_MONOTONIC);
	win_s = (double)(t1 - t0) / 1e9;

	a = find_unique(&spec, spec.pages / 3);
	b = find_unique(&spec, 2 * spec.pages / 3);
	base = eng_saving(j->e);
	eng_fresh_page(mem + (a << 12), 0xfeed + j->mib);
	memcpy(mem + (b << 12), mem + (a << 12), 4096);
	t0 = bench_clock_ns(CLOCK_MONOTONIC);
	deadline = t0 + o->latency_timeout_s * 1000000000ULL;
	while (bench_clock_ns(CLOCK_MONOTONIC) < deadline) {
		if (eng_saving(j->e) > base) {
			lat_ns = bench_clock_ns(CLOCK_MONOTONIC) - t0;
			merged = true;
			break;
		}
		bench_sleep_ns(2000000ULL);
	}
	printf("RESULT bench=steady engine=%s mib=%" PRIu64 " pages_to_scan=%" PRIu64
	       " sleep_millisecs=%" PRIu64 " conv_passes=%u conv_cpu_ms=%.1f"
	       " cpu_ms_per_s=%.3f scanned_per_s=%.0f latency_ms=%.1f saving_pages=%" PRIu64
	       " metadata_bytes=%" PRIu64 " rss_growth_kb=%ld fill_ms=%.0f load=%.2f\n",
	       eng_name(j->e), j->mib, o->side.pages_to_scan, o->side.sleep_ms, passes,
	       conv_cpu / 1e6,
	       (double)(c1 - c0) / 1e6 / win_s, (double)(s1 - s0) / win_s,
	       merged ? lat_ns / 1e6 : -1.0,
	       base, eng_metadata_bytes(j->e), rss1 - rss0, fill_ns / 1e6, load0);
	fflush(stdout);
	eng_stop(j->e);
	if (j->e == ENG_KSM)
		bench_ksm_unmerge();
	else
		ksmu_unregister(mem, len);
	munmap(mem, len);
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: %s [--mib N[,N...]] [--pages-to-scan N] [--sleep-ms N] [--window S]\n"
		"          [--latency-timeout S] [--engine ksmu|ksm|both] [--max-map-count N]\n"
		"          [--quick]\n"
		"Steady-state CPU per second over unchanging registered memory, and the\n"
		"latency to merge a new duplicate, ksmu against kernel KSM at one budget.\n"
		"Defaults: --mib 1024,4096,16384 --pages-to-scan 4000 --sleep-ms 20 --window 10\n"
		"          --latency-timeout 120 --max-map-count 1048576 (0: leave it; restored)\n",
		bench_prog);
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "mib", required_argument, NULL, 'm' },
		{ "pages-to-scan", required_argument, NULL, 'p' },
		{ "sleep-ms", required_argument, NULL, 's' },
		{ "window", required_argument, NULL, 'w' },
		{ "latency-timeout", required_argument, NULL, 'l' },
		{ "engine", required_argument, NULL, 'e' },
		{ "max-map-count", required_argument, NULL, 'M' },
		{ "quick", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct opts o = { .mib = { 1024, 4096, 16384 }, .nmib = 3, .side = BENCH_SIDE_OPTS_INIT,
			  .window_s = 10, .latency_timeout_s = 120, .max_map_count = 1048576 };
	int c, rc = 0;

	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (c) {
		case 'm': {
			char *s = optarg, *tok, *save = NULL;

			o.nmib = 0;
			for (tok = strtok_r(s, ",", &save); tok && o.nmib < 8;
			     tok = strtok_r(NULL, ",", &save))
				o.mib[o.nmib++] = bench_parse_u64("--mib", tok, 1, 1 << 20);
			break;
		}
		case 'w':
			o.window_s = bench_parse_u64("--window", optarg, 1, 3600);
			break;
		case 'l':
			o.latency_timeout_s = bench_parse_u64("--latency-timeout", optarg, 1, 3600);
			break;
		case 'M':
			o.max_map_count = bench_parse_u64("--max-map-count", optarg, 0, 1U << 30);
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
		o.mib[0] = 64;
		o.nmib = 1;
		o.window_s = 1;
		o.latency_timeout_s = 10;
		o.side.engine = BENCH_ENG_KSMU;
	}
	o.side.engine = bench_side_engines(o.side.engine);
	/* Scattered merges cost up to 2 VMAs each: lift the limit (restored on exit). */
	if (!o.side.quick && o.max_map_count && bench_mmc_raise(o.max_map_count) < 0)
		fprintf(stderr, "%s: cannot raise vm.max_map_count; ksmu stays under 3/4 of it\n",
			bench_prog);
	for (unsigned i = 0; i < o.nmib; i++) {
		struct job j = { &o, o.mib[i], ENG_KSMU };

		if (o.side.engine & BENCH_ENG_KSMU) {
			int st = eng_run_child(run_one, &j);

			if (st) {
				fprintf(stderr, "%s: ksmu run at %" PRIu64 " MiB failed (%d)\n",
					bench_prog, j.mib, st);
				rc = 1;
			}
		}
		if (o.side.engine & BENCH_ENG_KSM) {
			j.e = ENG_KSM;
			if (run_one(&j))
				rc = 1;
		}
	}
	return rc;
}
