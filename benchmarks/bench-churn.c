/* SPDX-License-Identifier: MIT */
/*
 * bench-churn.c - churn: writer threads keep rewriting pages to template
 * content (merge, copy-on-write, re-merge); the saving over time, ksmu
 * against kernel KSM at one budget.
 *
 * Each engine in turn (ksmu in a forked child, then KSM in the parent) gets
 * a fresh --mib MiB datagen image (--templates templates, 50 % copies, 10 %
 * zero, 40 % unique), converges at full speed, and then runs at the budget
 * (--pages-to-scan / --sleep-ms, the same for both) while --writers
 * threads each rewrite --rate pages per second (in batches every 10 ms):
 * a random page of the image gets the content of a random template.  A
 * write to a merged page breaks copy-on-write; the new copy is a duplicate
 * again and can be merged again, if the engine re-merges it.  Every second
 * the saving (pages_sharing + ksm_zero_pages) is sampled for --seconds s.
 * For ksmu, --cow-policy N sets the knob cow_policy (0 kernel: copies made
 * by a COW break are never merged again; 1: ksmu copies into anonymous
 * memory, which merges again) when the engine has it (ksmu_check_tunable);
 * otherwise the run uses the default and says cow_policy=unsupported.
 *
 * Output: per sample  RESULT bench=churn engine=E series t=S saving=N
 * and a summary     RESULT bench=churn engine=E ... saving_end=.. saving_mean2=..
 * (saving_mean2: the mean over the second half of the run).
 * --quick: 64 MiB, ksmu only, 3 s (CI smoke; KSM untouched).
 * Exit status: 0; 1 a step failed; 2 bad command line.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "bench-common.h"
#include "bench-engines.h"
#include "datagen.h"
#include "ksmu.h"

const char bench_prog[] = "bench-churn";

struct opts {
	struct bench_side_opts side; /* --pages-to-scan, --sleep-ms, --engine, --quick */
	uint64_t mib, seconds, rate;
	unsigned writers, templates;
	long cow_policy; /* -1: not asked */
};

struct writer {
	pthread_t tid;
	unsigned char *mem;
	size_t pages;
	unsigned templates;
	const unsigned char *tpl; /* templates * 4 KiB */
	uint64_t rate, seed, writes;
	atomic_bool *stop;
};

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	uint64_t x = w->seed | 1, batch = w->rate / 100 ? w->rate / 100 : 1;
	uint64_t next = bench_clock_ns(CLOCK_MONOTONIC);

	while (!atomic_load(w->stop)) {
		for (uint64_t k = 0; k < batch; k++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			memcpy(w->mem + ((x % w->pages) << 12),
			       w->tpl + ((size_t)((x >> 32) % w->templates) << 12), 4096);
			w->writes++;
		}
		next += 10000000ULL;
		uint64_t now = bench_clock_ns(CLOCK_MONOTONIC);

		if (next > now)
			bench_sleep_ns(next - now);
	}
	return NULL;
}

struct job {
	const struct opts *o;
	enum eng_kind e;
};

static int run_one(void *arg)
{
	const struct job *j = arg;
	const struct opts *o = j->o;
	struct ksmu_datagen_spec spec = { .templates = o->templates, .dup_frac = 0.5,
					  .zero_frac = 0.1, .seed = 5 };
	size_t len = (size_t)o->mib << 20;
	unsigned char *mem, *tpl;
	struct writer *w;
	atomic_bool stop = false;
	uint64_t c0, c1, sav, sum2 = 0, n2 = 0, writes = 0, conv_saving, sav_end = 0;
	const char *policy = "default";
	char pol[32];

	spec.pages = len >> 12;
	if (j->e == ENG_KSMU) {
		ksmu_set_log(bench_log_to_stderr, NULL, KSMU_LOG_WARN);
		if (ksmu_set_run(KSMU_RUN_STOP) < 0)
			return 1;
		if (o->cow_policy >= 0) {
			if (ksmu_check_tunable("cow_policy", (unsigned long)o->cow_policy) == 0 &&
			    ksmu_set_tunable("cow_policy", (unsigned long)o->cow_policy) == 0) {
				snprintf(pol, sizeof(pol), "%ld", o->cow_policy);
				policy = pol;
			} else {
				policy = "unsupported";
			}
		}
	} else {
		policy = "kernel";
		bench_ksm_fresh_start(20000);
		bench_ksm_set("run", "0");
	}
	tpl = malloc((size_t)o->templates << 12);
	w = calloc(o->writers, sizeof(*w));
	if (!tpl || !w)
		return 1;
	for (unsigned t = 0; t < o->templates; t++)
		ksmu_datagen_template(&spec, t, tpl + ((size_t)t << 12));
	mem = bench_map_filled(len, &spec, NULL);
	eng_register(j->e, mem, len);
	eng_converge(j->e, 600, NULL, NULL);
	conv_saving = eng_saving(j->e);
	eng_start(j->e, o->side.pages_to_scan, o->side.sleep_ms);
	c0 = eng_cpu_ns(j->e);
	for (unsigned i = 0; i < o->writers; i++) {
		w[i] = (struct writer){ .mem = mem, .pages = spec.pages, .templates = o->templates,
					.tpl = tpl, .rate = o->rate, .seed = 0x5eed + i * 7919,
					.stop = &stop };
		if (pthread_create(&w[i].tid, NULL, writer_main, &w[i]))
			return 1;
	}
	for (uint64_t s = 1; s <= o->seconds; s++) {
		bench_sleep_ns(1000000000ULL);
		sav = eng_saving(j->e);
		printf("RESULT bench=churn engine=%s series t=%" PRIu64 " saving=%" PRIu64
		       " cow_policy=%s\n",
		       eng_name(j->e), s, sav, policy);
		if (s > o->seconds / 2) {
			sum2 += sav;
			n2++;
		}
		sav_end = sav;
	}
	atomic_store(&stop, true);
	for (unsigned i = 0; i < o->writers; i++) {
		pthread_join(w[i].tid, NULL);
		writes += w[i].writes;
	}
	c1 = eng_cpu_ns(j->e);
	printf("RESULT bench=churn engine=%s mib=%" PRIu64 " writers=%u rate=%" PRIu64
	       " seconds=%" PRIu64 " pages_to_scan=%" PRIu64 " sleep_millisecs=%" PRIu64
	       " cow_policy=%s writes=%" PRIu64 " saving_start=%" PRIu64 " saving_end=%" PRIu64
	       " saving_mean2=%.0f engine_cpu_ms_per_s=%.1f load=%.2f\n",
	       eng_name(j->e), o->mib, o->writers, o->rate, o->seconds, o->side.pages_to_scan,
	       o->side.sleep_ms, policy, writes, conv_saving, sav_end, n2 ? (double)sum2 / n2 : 0.0,
	       (double)(c1 - c0) / 1e6 / (double)o->seconds, eng_loadavg());
	fflush(stdout);
	eng_stop(j->e);
	if (j->e == ENG_KSM)
		bench_ksm_unmerge();
	else
		ksmu_unregister(mem, len);
	munmap(mem, len);
	free(tpl);
	free(w);
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: %s [--mib N] [--seconds S] [--writers N] [--rate PAGES_PER_S]\n"
		"          [--templates K] [--pages-to-scan N] [--sleep-ms N] [--cow-policy N]\n"
		"          [--engine ksmu|ksm|both] [--quick]\n"
		"Writers rewrite random pages to template content; the saving over time.\n"
		"Defaults: 512 MiB, 60 s, 2 writers at 2000 pages/s each, 1024 templates,\n"
		"4000 pages / 20 ms for both engines, ksmu's default cow_policy.\n",
		bench_prog);
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "mib", required_argument, NULL, 'm' },
		{ "seconds", required_argument, NULL, 't' },
		{ "writers", required_argument, NULL, 'w' },
		{ "rate", required_argument, NULL, 'r' },
		{ "templates", required_argument, NULL, 'T' },
		{ "pages-to-scan", required_argument, NULL, 'p' },
		{ "sleep-ms", required_argument, NULL, 's' },
		{ "cow-policy", required_argument, NULL, 'c' },
		{ "engine", required_argument, NULL, 'e' },
		{ "quick", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct opts o = { .side = BENCH_SIDE_OPTS_INIT, .mib = 512, .seconds = 60, .writers = 2,
			  .rate = 2000, .templates = 1024, .cow_policy = -1 };
	int c, rc = 0;

	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (c) {
		case 'm':
			o.mib = bench_parse_u64("--mib", optarg, 1, 1 << 20);
			break;
		case 't':
			o.seconds = bench_parse_u64("--seconds", optarg, 1, 36000);
			break;
		case 'w':
			o.writers = (unsigned)bench_parse_u64("--writers", optarg, 1, 64);
			break;
		case 'r':
			o.rate = bench_parse_u64("--rate", optarg, 1, 10000000);
			break;
		case 'T':
			o.templates = (unsigned)bench_parse_u64("--templates", optarg, 1, 1 << 20);
			break;
		case 'c':
			o.cow_policy = (long)bench_parse_u64("--cow-policy", optarg, 0, 1000);
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
		o.seconds = 3;
		o.side.engine = BENCH_ENG_KSMU;
	}
	o.side.engine = bench_side_engines(o.side.engine);
	if (!o.side.quick && bench_mmc_raise(1048576) < 0)
		fprintf(stderr, "%s: cannot raise vm.max_map_count\n", bench_prog);
	if (o.side.engine & BENCH_ENG_KSMU) {
		struct job j = { &o, ENG_KSMU };

		if (eng_run_child(run_one, &j))
			rc = 1;
	}
	if (o.side.engine & BENCH_ENG_KSM) {
		struct job j = { &o, ENG_KSM };

		rc |= run_one(&j);
	}
	return rc;
}
