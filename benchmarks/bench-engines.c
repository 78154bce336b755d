/* SPDX-License-Identifier: MIT */
/*
 * bench-engines.c - the engine interface of bench-engines.h.
 *
 * DESIGN
 * A thin switch over libksmu's API and bench-common's KSM helpers, so that
 * each side-by-side benchmark states its workload once and runs it on
 * either engine with the same knobs.  KSM's metadata is estimated as its
 * general_profit counts it: 64 bytes (sizeof(struct ksm_rmap_item) on
 * x86-64) per rmap item, plus the stable nodes it does not show.
 *
 * THREADS
 * Called from the benchmark's main thread only; the ksmu calls are
 * thread-safe anyway.
 */
#include "bench-engines.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench-common.h"
#include "ksmu.h"

#define KSM_RMAP_ITEM_BYTES 64

const char *eng_name(enum eng_kind e)
{
	return e == ENG_KSMU ? "ksmu" : e == ENG_KSM ? "ksm" : "none";
}

static struct ksmu_stats ksmu_now(void)
{
	struct ksmu_stats s;
	int ret = ksmu_stats(&s);

	if (ret < 0) {
		fprintf(stderr, "%s: ksmu_stats: %s\n", bench_prog, strerror(-ret));
		exit(1);
	}
	return s;
}

static void ksmu_must(const char *what, int ret)
{
	if (ret < 0) {
		fprintf(stderr, "%s: %s: %s\n", bench_prog, what, strerror(-ret));
		exit(1);
	}
}

void eng_register(enum eng_kind e, void *mem, size_t len)
{
	if (e == ENG_KSMU) {
		ksmu_must("ksmu_register", ksmu_register(mem, len));
	} else if (e == ENG_KSM) {
		if (madvise(mem, len, MADV_MERGEABLE)) {
			fprintf(stderr, "%s: madvise(MADV_MERGEABLE): %s\n", bench_prog,
				strerror(errno));
			exit(1);
		}
	}
}

void eng_start(enum eng_kind e, uint64_t pages_to_scan, uint64_t sleep_ms)
{
	if (e == ENG_KSMU) {
		ksmu_must("pages_to_scan", ksmu_set_tunable("pages_to_scan", pages_to_scan));
		ksmu_must("sleep_millisecs", ksmu_set_tunable("sleep_millisecs", sleep_ms));
		ksmu_must("run", ksmu_set_run(KSMU_RUN_MERGE));
	} else if (e == ENG_KSM) {
		bench_ksm_set_u64("pages_to_scan", pages_to_scan);
		bench_ksm_set_u64("sleep_millisecs", sleep_ms);
		bench_ksm_set("run", "1");
	}
}

void eng_stop(enum eng_kind e)
{
	if (e == ENG_KSMU)
		ksmu_must("run", ksmu_set_run(KSMU_RUN_STOP));
	else if (e == ENG_KSM)
		bench_ksm_set("run", "0");
}

uint64_t eng_cpu_ns(enum eng_kind e)
{
	if (e == ENG_KSMU) {
		struct ksmu_stats s = ksmu_now();

		return s.scan_cpu_ns + s.reader_cpu_ns;
	}
	if (e == ENG_KSM) {
		struct bench_ksmd_cpu c = bench_ksmd_cpu();

		return bench_ksmd_schedstat ? c.sched_ns : c.stat_ns;
	}
	return 0;
}

uint64_t eng_saving(enum eng_kind e)
{
	if (e == ENG_KSMU) {
		struct ksmu_stats s = ksmu_now();

		return s.pages_sharing + s.ksm_zero_pages;
	}
	if (e == ENG_KSM)
		return bench_ksm_read("pages_sharing") +
		       (bench_ksm_has_zero ? bench_ksm_read("ksm_zero_pages") : 0);
	return 0;
}

uint64_t eng_full_scans(enum eng_kind e)
{
	if (e == ENG_KSMU)
		return ksmu_now().full_scans;
	if (e == ENG_KSM)
		return bench_ksm_scans();
	return 0;
}

uint64_t eng_pages_scanned(enum eng_kind e)
{
	if (e == ENG_KSMU)
		return ksmu_now().pages_scanned;
	if (e == ENG_KSM)
		return bench_ksm_read("pages_scanned");
	return 0;
}

uint64_t eng_metadata_bytes(enum eng_kind e)
{
	if (e == ENG_KSMU)
		return ksmu_now().metadata_bytes;
	if (e == ENG_KSM) {
		/* rmap items = pages_shared + pages_sharing + pages_unshared + volatile */
		uint64_t items = bench_ksm_read("pages_shared") + bench_ksm_read("pages_sharing") +
				 bench_ksm_read("pages_unshared") + bench_ksm_read("pages_volatile");

		return items * KSM_RMAP_ITEM_BYTES;
	}
	return 0;
}

void eng_converge(enum eng_kind e, unsigned timeout_s, uint64_t *cpu_ns, unsigned *passes)
{
	uint64_t c0 = eng_cpu_ns(e), last, now;
	unsigned n = 0;

	if (e == ENG_KSMU) {
		ksmu_must("run", ksmu_set_run(KSMU_RUN_STOP));
		last = eng_saving(e);
		for (n = 1; n <= 12; n++) {
			ksmu_must("ksmu_scan_full", ksmu_scan_full());
			now = eng_saving(e);
			if (n >= 2 && now <= last)
				break;
			last = now;
		}
	} else if (e == ENG_KSM) {
		uint64_t t_end = bench_clock_ns(CLOCK_MONOTONIC) + (uint64_t)timeout_s * 1000000000ULL;
		uint64_t scans0, quiet_from;

		bench_ksm_set("pages_to_scan", "20000");
		bench_ksm_set("sleep_millisecs", "0");
		scans0 = bench_ksm_scans();
		bench_ksm_set("run", "1");
		last = eng_saving(e);
		quiet_from = scans0;
		while (bench_clock_ns(CLOCK_MONOTONIC) < t_end) {
			uint64_t s;

			bench_sleep_ns(5000000ULL);
			now = eng_saving(e);
			s = bench_ksm_scans();
			if (now != last) {
				last = now;
				quiet_from = s;
			}
			if (s >= quiet_from + 2 && s >= scans0 + 2)
				break;
		}
		n = (unsigned)(bench_ksm_scans() - scans0);
		bench_ksm_set("run", "0");
	}
	if (cpu_ns)
		*cpu_ns = eng_cpu_ns(e) - c0;
	if (passes)
		*passes = n;
}

long eng_rss_kb(void)
{
	FILE *f = fopen("/proc/self/status", "re");
	char line[256];
	long kb = -1, v;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "VmRSS: %ld kB", &v) == 1)
			kb = v;
	}
	fclose(f);
	return kb;
}

int eng_run_child(int (*fn)(void *arg), void *arg)
{
	pid_t pid;
	int status;

	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0) {
		fprintf(stderr, "%s: fork: %s\n", bench_prog, strerror(errno));
		exit(1);
	}
	if (pid == 0) {
		int ret;

		bench_restore_forget_in_child();
		ret = fn(arg);
		fflush(stdout);
		fflush(stderr);
		_exit(ret);
	}
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR) {
			fprintf(stderr, "%s: waitpid: %s\n", bench_prog, strerror(errno));
			exit(1);
		}
	}
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return WEXITSTATUS(status);
}

void eng_fresh_page(void *page, uint64_t seed)
{
	uint64_t *w = page, x = seed * 0x9E3779B97F4A7C15ULL + 0xD1B54A32D192ED03ULL;

	for (size_t i = 0; i < 4096 / sizeof(*w); i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		w[i] = x;
	}
}

double eng_loadavg(void)
{
	char buf[128];
	double v = -1;

	if (!bench_read_text("/proc/loadavg", buf, sizeof(buf)))
		sscanf(buf, "%lf", &v);
	return v;
}
