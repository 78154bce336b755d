/* SPDX-License-Identifier: MIT */
/*
 * bench-scan.c - scanner cost of libksmu, side by side with kernel KSM.
 *
 * Each engine gets its own freshly mapped region (1 GiB by default) filled
 * with the same default datagen mix (1024 templates, 50 % scattered copies,
 * 10 % zero pages, 40 % unique), and the same knobs (use_zero_pages,
 * max_page_sharing, merge_across_nodes and smart_scan are ksmu's defaults,
 * written to /sys/kernel/mm/ksm for the kernel).  The engines run one after
 * the other in the same process, never at the same time.
 *
 * ksmu: the region is registered and full passes are run by
 * ksmu_scan_full() in this thread, with the background scanner stopped:
 *   first     the first pass over all memory: every page is new and hashed;
 *             ksmu looks for duplicates at once, so this pass finds them all;
 *   clean     a second pass with nothing written: what the dirty tracker
 *             saves shows here (the checksum tracker re-hashes everything,
 *             exact write-protect tracking hashes nothing);
 *   dirty1pct a pass after writing one word in 1 % of the pages, spread
 *             evenly over the region;
 *   steady    the mean of 8 passes after 8 more, nothing written: a whole
 *             smart_scan cycle (matters for the checksum tracker only).
 * CPU is the engine's scan_cpu_ns account (or the process CPU clock if that
 * is 0); the process clock is shown as a cross-check.
 *
 * kernel KSM: the region is madvise(MADV_MERGEABLE)d and ksmd runs at its
 * fastest setting, pages_to_scan 20000 (--ksm-pages) and sleep_millisecs 0.
 * A pass is the time between two increments of full_scans (polled every
 * 0.5 ms); its CPU is ksmd's, from /proc/PID/schedstat (ns) or, without it,
 * /proc/PID/stat utime+stime (clock ticks, also shown as a cross-check).
 *   pass1     the first pass: KSM only records a checksum per page;
 *   pass2     KSM searches and merges (a page must keep its checksum for one
 *             pass before it is looked for), so this pass finds and merges
 *             all duplicates: "CPU to find all duplicates" is pass1+pass2;
 *   clean     nothing written: KSM re-checksums every page not merged;
 *   dirty1pct a pass after writing 1 % of the pages as above;
 *   steady    the mean of visits 15-23, nothing written, one whole
 *             smart_scan cycle: from its 5th visit on, KSM skips a page that
 *             stayed unmerged on ever more passes (smart_scan, on by default
 *             since 6.7), so clean and dirty1pct (visits 3 and 4) are not
 *             its steady state.
 * ksmd never stops between passes by itself.  To write the pages between
 * two passes, the tail of the clean pass runs as one batch (pages_to_scan
 * 2^30: a batch also ends where the pass ends; the per-page work is the
 * same) and sleep_millisecs is raised, so ksmd parks exactly at the pass
 * end; the pages are written, and the dirty pass starts when
 * sleep_millisecs goes back to 0.  The dirty pass and the steady cycle end
 * the same way.  The write of run=2 that precedes madvise puts KSM's
 * scan cursor at the start of a pass, so writing run=1 starts pass 1
 * exactly; the ends of passes 1 and 2 are seen up to a poll late.
 *
 * The kernel's knobs are saved first and restored on every exit path (exit,
 * error, SIGINT, SIGTERM, crash signals): run=2 (unmerge, synchronous),
 * run=0, then the saved values (bench-common.c does that, and the KSM
 * plumbing shared with bench-merge).  Kernel KSM is used only if it is idle
 * (run=0, nothing merged) and not locked by another benchmark; --quick
 * never touches it.
 *
 * Ratios are KSM CPU per page divided by ksmu CPU per page (per page of the
 * region): above 1, ksmu needs less CPU.  ksmu 0.1 only detects duplicates;
 * KSM's pass2 includes its merging.
 *
 * The last line is machine-readable:
 *   RESULT bench=scan mib=.. first_pps=.. clean_pps=.. dirty1pct_pps=..
 *          tracker=.. [more key=value fields: ksm_*, ratio_*]
 * With --repeat N the figures are medians over N runs of both engines.
 *
 * Exit status: 0 done; 1 a ksmu call or a kernel KSM step failed; 2 bad
 * command line; 77 the requested tracker is not available (ctest skip).
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
#include <time.h>
#include <unistd.h>

#include "bench-common.h"
#include "datagen.h"
#include "ksmu.h"

#define PAGE_BYTES KSMU_DATAGEN_PAGE_SIZE

#define KSM_PARK_PAGES "1073741824" /* pages_to_scan: one batch = rest of the pass */
#define KSM_PARK_SLEEP "3600000"    /* sleep_millisecs while parked (1 h) */
#define POLL_NS 500000ULL           /* full_scans polling period */
#define MAX_REPEAT 1000

const char bench_prog[] = "bench-scan";

/*
 * struct pass - what one measured ksmu pass cost.
 * @wall_ns:  elapsed time of ksmu_scan_full()
 * @proc_ns:  process CPU time during it
 * @scan_ns:  the engine's scan_cpu_ns delta
 * @scanned:  pages_scanned delta
 * @hashed:   pages_hashed delta
 * @clean:    pages_clean delta (proved unchanged by the tracker)
 * @skipped:  pages_skipped delta (smart_scan)
 * @scans:    full_scans delta
 */
struct pass {
	uint64_t wall_ns, proc_ns, scan_ns;
	uint64_t scanned, hashed, clean, skipped, scans;
};

/* Rows of the result table. */
enum row_id {
	R_U_FIRST, R_U_CLEAN, R_U_DIRTY, R_U_STEADY,
	R_K_PASS1, R_K_PASS2, R_K_CLEAN, R_K_DIRTY, R_K_STEADY, R_COUNT
};

/*
 * The steady rows: the mean per pass over one whole smart_scan cycle, with
 * nothing written, once unique pages skip as often as they ever will.
 * KSM (mm/ksm.c): a page that stays unmerged is scanned on visits 1-4, 6,
 * 9, 14, 23, 32, ...: visits 15-23 are one cycle (8 skipped, 1 scanned).
 * ksmu (scan.c): every 2nd, 4th, then 8th pass; 8 passes after 8 more.
 */
#define KSM_STEADY_FIRST 15
#define KSM_STEADY_PASSES 9
#define KSMU_STEADY_WARMUP 8
#define KSMU_STEADY_PASSES 8

/*
 * struct row - one measured pass of either engine.
 * @cpu_ns:  the CPU charged (ksmu: scan_cpu_ns; KSM: ksmd's schedstat)
 * @alt_ns:  the cross-check (ksmu: process CPU; KSM: ksmd's utime+stime)
 * @wall_ns: elapsed time
 * @visited, @hashed, @clean, @skipped: pages (hashed and clean: ksmu only)
 */
struct row {
	uint64_t cpu_ns, alt_ns, wall_ns;
	uint64_t visited, hashed, clean, skipped;
};

/* What one run of both engines produced. */
struct run_result {
	struct row row[R_COUNT];
	uint64_t u_fill_ns, u_write_ns;
	uint64_t est_shared, est_sharing;
	bool est_ok;
	uint64_t k_fill_ns, k_write_ns, k_unmerge_ns;
	/* KSM's counters after pass 2 (the merged result) */
	uint64_t k_shared, k_sharing, k_unshared, k_chains, k_dups;
	uint64_t k_shared3, k_sharing3; /* after the clean pass */
	unsigned k_extra_passes; /* passes between the clean pass and parking */
	bool k_nudged;           /* ksmd had to be woken to finish the clean pass */
	bool k_idle_ok;          /* ksmd scanned nothing while the pages were written */
	bool k_covered;          /* every pass visited (or skipped) every page */
	struct ksmu_stats u_end; /* ksmu stats after its dirty pass */
};

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: %s [--mib N] [--quick] [--engine ksmu|ksm|both] [--ksm-pages N]\n"
		"          [--repeat N] [--tracker checksum|wp] [--seed S]\n"
		"Time full scans of ksmu and of kernel KSM over the same generated memory:\n"
		"the first passes, a clean pass and a pass after writing 1 %% of the pages,\n"
		"and report KSM / ksmu CPU ratios.\n"
		"\n"
		"  --mib N        region size in MiB, per engine (default 1024)\n"
		"  --quick        CI smoke: 64 MiB, ksmu only (kernel KSM is not touched)\n"
		"  --engine E     ksmu, ksm or both (default: both if /sys/kernel/mm/ksm is\n"
		"                 writable, else ksmu)\n"
		"  --ksm-pages N  kernel KSM pages_to_scan (default 20000; sleep_millisecs 0)\n"
		"  --repeat N     run both engines N times; report medians and min..max\n"
		"  --tracker T    force ksmu's dirty tracker: checksum (kernel KSM's way) or\n"
		"                 wp (PAGEMAP_SCAN + async write-protect); default: engine's\n"
		"  --seed S       workload seed (default 1)\n",
		bench_prog);
}

static void die_ksmu(const char *what, int ret)
{
	fprintf(stderr, "%s: %s failed: %s\n", bench_prog, what, strerror(-ret));
	exit(1);
}

static const char *tracker_name(uint64_t t)
{
	switch (t) {
	case KSMU_TRACK_CHECKSUM:
		return "checksum";
	case KSMU_TRACK_WP_ASYNC:
		return "wp-async";
	case KSMU_TRACK_NONE:
		return "none";
	default:
		return "unknown";
	}
}

/* Write one word in 1 % of the pages, evenly spread; returns the time taken. */
static uint64_t write_1pct(unsigned char *mem, size_t pages)
{
	size_t writes = pages / 100 ? pages / 100 : 1;
	size_t stride = pages / writes;
	uint64_t t0 = bench_clock_ns(CLOCK_MONOTONIC);

	for (size_t k = 0; k < writes; k++) {
		uint64_t *w = (uint64_t *)(void *)(mem + k * stride * PAGE_BYTES + 64);

		*w += 0x9e3779b97f4a7c15ULL;
	}
	return bench_clock_ns(CLOCK_MONOTONIC) - t0;
}

/* ------------------------------------------------------------------ ksmu */

static struct ksmu_stats get_stats(void)
{
	struct ksmu_stats s;
	int ret = ksmu_stats(&s);

	if (ret < 0)
		die_ksmu("ksmu_stats", ret);
	return s;
}

static struct pass measure_pass(void)
{
	struct ksmu_stats a, b;
	uint64_t w0, w1, c0, c1;
	struct pass p;
	int ret;

	a = get_stats();
	w0 = bench_clock_ns(CLOCK_MONOTONIC);
	c0 = bench_clock_ns(CLOCK_PROCESS_CPUTIME_ID);
	ret = ksmu_scan_full();
	c1 = bench_clock_ns(CLOCK_PROCESS_CPUTIME_ID);
	w1 = bench_clock_ns(CLOCK_MONOTONIC);
	if (ret < 0)
		die_ksmu("ksmu_scan_full", ret);
	b = get_stats();

	p.wall_ns = w1 - w0;
	p.proc_ns = c1 - c0;
	p.scan_ns = b.scan_cpu_ns - a.scan_cpu_ns;
	p.scanned = b.pages_scanned - a.pages_scanned;
	p.hashed = b.pages_hashed - a.pages_hashed;
	p.clean = b.pages_clean - a.pages_clean;
	p.skipped = b.pages_skipped - a.pages_skipped;
	p.scans = b.full_scans - a.full_scans;
	return p;
}

/* CPU time charged to a pass: the engine's account if it keeps one. */
static uint64_t pass_cpu_ns(const struct pass *p)
{
	return p->scan_ns ? p->scan_ns : p->proc_ns;
}

static struct row pass_row(const struct pass *p)
{
	struct row r = {
		.cpu_ns = pass_cpu_ns(p), .alt_ns = p->proc_ns, .wall_ns = p->wall_ns,
		.visited = p->scanned, .hashed = p->hashed, .clean = p->clean,
		.skipped = p->skipped,
	};
	return r;
}

static void row_add(struct row *sum, struct row r)
{
	sum->cpu_ns += r.cpu_ns;
	sum->alt_ns += r.alt_ns;
	sum->wall_ns += r.wall_ns;
	sum->visited += r.visited;
	sum->hashed += r.hashed;
	sum->clean += r.clean;
	sum->skipped += r.skipped;
}

static void row_div(struct row *r, unsigned n)
{
	r->cpu_ns /= n;
	r->alt_ns /= n;
	r->wall_ns /= n;
	r->visited /= n;
	r->hashed /= n;
	r->clean /= n;
	r->skipped /= n;
}

/*
 * One ksmu run: map, fill, register, three passes, the steady cycle,
 * unregister, unmap.
 */
static void run_ksmu(const struct ksmu_datagen_spec *spec, const struct ksmu_datagen_expect *ex,
		     struct run_result *out)
{
	size_t len = spec->pages * PAGE_BYTES;
	unsigned char *mem = bench_map_filled(len, spec, &out->u_fill_ns);
	struct ksmu_stats st1;
	struct pass p;
	int ret;

	ret = ksmu_register(mem, len);
	if (ret < 0)
		die_ksmu("ksmu_register", ret);

	p = measure_pass();
	out->row[R_U_FIRST] = pass_row(&p);
	st1 = get_stats();
	out->est_shared = st1.est_pages_shared;
	out->est_sharing = st1.est_pages_sharing;
	out->est_ok = st1.est_pages_shared == ex->pages_shared &&
		      st1.est_pages_sharing == ex->pages_sharing;
	p = measure_pass();
	out->row[R_U_CLEAN] = pass_row(&p);
	out->u_write_ns = write_1pct(mem, spec->pages);
	p = measure_pass();
	out->row[R_U_DIRTY] = pass_row(&p);
	out->u_end = get_stats();
	for (int i = 0; i < KSMU_STEADY_WARMUP; i++)
		(void)measure_pass();
	for (int i = 0; i < KSMU_STEADY_PASSES; i++) {
		p = measure_pass();
		row_add(&out->row[R_U_STEADY], pass_row(&p));
	}
	row_div(&out->row[R_U_STEADY], KSMU_STEADY_PASSES);

	ret = ksmu_unregister(mem, len);
	if (ret < 0)
		fprintf(stderr, "%s: ksmu_unregister failed: %s\n", bench_prog, strerror(-ret));
	munmap(mem, len);
}

/* ------------------------------------------------ kernel KSM: measurement */

static uint64_t pass_timeout_ns;

/* Give up on a pass that does not end, saying what KSM looks like. */
static void ksm_timeout(const char *what)
{
	char path[64], stat[256] = "?", wchan[64] = "?", run[8] = "?", *p;

	snprintf(path, sizeof(path), "/proc/%d/stat", bench_ksmd_pid);
	bench_read_text(path, stat, sizeof(stat));
	snprintf(path, sizeof(path), "/proc/%d/wchan", bench_ksmd_pid);
	bench_read_text(path, wchan, sizeof(wchan));
	bench_read_text(BENCH_KSM_DIR "run", run, sizeof(run));
	p = strrchr(stat, ')');
	fprintf(stderr,
		"%s: kernel KSM: %s did not end within %.0f s (run=%s full_scans=%" PRIu64
		" pages_scanned=%" PRIu64 " pages_to_scan=%" PRIu64 " sleep_millisecs=%" PRIu64
		", ksmd state %c in %s)\n",
		bench_prog, what, pass_timeout_ns / 1e9, run, bench_ksm_read("full_scans"),
		bench_ksm_read("pages_scanned"), bench_ksm_read("pages_to_scan"),
		bench_ksm_read("sleep_millisecs"), p && p[1] ? p[2] : '?', wchan);
	exit(1);
}

/* A point on KSM's timeline: time, ksmd CPU, counters. */
struct ksm_mark {
	uint64_t t_ns;
	struct bench_ksmd_cpu cpu;
	uint64_t full_scans, scanned, skipped;
};

static struct ksm_mark ksm_mark_now(void)
{
	struct ksm_mark m;

	m.full_scans = bench_ksm_scans();
	m.t_ns = bench_clock_ns(CLOCK_MONOTONIC);
	m.cpu = bench_ksmd_cpu();
	m.scanned = bench_ksm_read("pages_scanned");
	m.skipped = bench_ksm_read("pages_skipped");
	return m;
}

/* Poll full_scans until it reaches @target; the mark is taken on seeing it. */
static struct ksm_mark ksm_wait_scans(uint64_t target, const char *what)
{
	uint64_t deadline = bench_clock_ns(CLOCK_MONOTONIC) + pass_timeout_ns;

	while (bench_ksm_scans() < target) {
		if (bench_clock_ns(CLOCK_MONOTONIC) > deadline)
			ksm_timeout(what);
		bench_sleep_ns(POLL_NS);
	}
	return ksm_mark_now();
}

static struct row ksm_row(const struct ksm_mark *a, const struct ksm_mark *b)
{
	struct row r = { 0 };

	r.wall_ns = b->t_ns - a->t_ns;
	r.alt_ns = b->cpu.stat_ns - a->cpu.stat_ns;
	r.cpu_ns = bench_ksmd_schedstat ? b->cpu.sched_ns - a->cpu.sched_ns : r.alt_ns;
	r.visited = b->scanned - a->scanned;
	r.skipped = b->skipped - a->skipped;
	return r;
}

/*
 * Wait for the end of a pass during which sleep_millisecs was set to
 * KSM_PARK_SLEEP.  Should ksmd have gone to sleep before the end of the pass
 * after all (it read the sleep at the end of a short batch), it is woken by
 * a different sleep value and finishes the pass in one batch.
 */
static struct ksm_mark ksm_wait_pass_end(uint64_t target, const char *what, bool *nudged)
{
	uint64_t deadline = bench_clock_ns(CLOCK_MONOTONIC) + pass_timeout_ns;
	uint64_t since = bench_clock_ns(CLOCK_MONOTONIC);
	struct bench_ksmd_cpu last = bench_ksmd_cpu();
	bool woken = false;

	while (bench_ksm_scans() < target) {
		uint64_t now = bench_clock_ns(CLOCK_MONOTONIC);
		struct bench_ksmd_cpu c = bench_ksmd_cpu();

		if (now > deadline)
			ksm_timeout(what);
		/* Asleep: sleeping now, and no CPU used for 20 ms (not merely starved). */
		if (c.state != 'S' || c.sched_ns != last.sched_ns || c.stat_ns != last.stat_ns) {
			last = c;
			since = now;
		} else if (now - since > 20000000ULL && !woken && bench_ksm_scans() < target) {
			bench_ksm_set("sleep_millisecs", KSM_PARK_SLEEP "1");
			woken = *nudged = true;
		}
		bench_sleep_ns(POLL_NS);
	}
	return ksm_mark_now();
}

/*
 * Wait until ksmd sleeps: it is in state S, and full_scans, pages_scanned
 * and its CPU time stay the same, over 10 polls 1 ms apart.
 */
static struct ksm_mark ksm_wait_idle(void)
{
	uint64_t deadline = bench_clock_ns(CLOCK_MONOTONIC) + pass_timeout_ns;
	struct ksm_mark last = ksm_mark_now(), m;
	int same = 0;

	while (same < 10) {
		if (bench_clock_ns(CLOCK_MONOTONIC) > deadline)
			ksm_timeout("parking ksmd");
		bench_sleep_ns(1000000);
		m = ksm_mark_now();
		if (m.cpu.state == 'S' && m.full_scans == last.full_scans &&
		    m.scanned == last.scanned && m.cpu.sched_ns == last.cpu.sched_ns &&
		    m.cpu.stat_ns == last.cpu.stat_ns)
			same++;
		else
			same = 0;
		last = m;
	}
	return last;
}

/*
 * Let the pass that began at @start finish, and park ksmd at its end, so
 * that the end is exact and nothing runs until sleep_millisecs goes back to
 * 0.  Batches that start after pages_to_scan=2^30 end only at the end of the
 * pass.  The batch running now ends by the next multiple of ksm_pages after
 * what ksmd has scanned so far in this pass (+ 1 more, as @start may have
 * been read a little after the pass began); once ksmd is past that, the
 * sleep it reads after its batch is the one it reads at the pass end.
 * Returns the mark at the end of the pass.
 */
static struct ksm_mark ksm_park_at_end(const struct ksm_mark *start, uint64_t ksm_pages,
				       const char *what, struct run_result *out)
{
	struct ksm_mark end, park;
	uint64_t n, limit;

	bench_ksm_set("pages_to_scan", KSM_PARK_PAGES);
	n = bench_ksm_read("pages_scanned") - start->scanned;
	limit = (n / ksm_pages + 2) * ksm_pages;
	while (bench_ksm_scans() == start->full_scans &&
	       bench_ksm_read("pages_scanned") - start->scanned <= limit)
		bench_sleep_ns(POLL_NS / 5);
	bench_ksm_set("sleep_millisecs", KSM_PARK_SLEEP);
	end = ksm_wait_pass_end(start->full_scans + 1, what, &out->k_nudged);
	park = ksm_wait_idle();
	/* Not 0 only if the pass ended before the park was set (a tiny region). */
	out->k_extra_passes += (unsigned)(park.full_scans - end.full_scans);
	bench_ksm_set_u64("pages_to_scan", ksm_pages);
	return end;
}

/* One kernel KSM run: map, fill, merge-scan for four passes, unmerge, unmap. */
static void run_ksm(const struct ksmu_datagen_spec *spec, uint64_t ksm_pages,
		    struct run_result *out)
{
	size_t len = spec->pages * PAGE_BYTES;
	unsigned char *mem = bench_map_filled(len, spec, &out->k_fill_ns);
	struct ksm_mark m0, m1, m2, m3, before, m4s, m4, ms, me;
	uint64_t n;

	/* The cursor at the start of a pass; sleep_millisecs 0 (the last run ended parked). */
	bench_ksm_fresh_start(ksm_pages);
	if (madvise(mem, len, MADV_MERGEABLE)) {
		fprintf(stderr, "%s: madvise(MADV_MERGEABLE): %s\n", bench_prog, strerror(errno));
		exit(1);
	}
	m0 = ksm_mark_now();
	bench_ksm_set("run", "1");
	m1 = ksm_wait_scans(m0.full_scans + 1, "pass 1");
	m2 = ksm_wait_scans(m0.full_scans + 2, "pass 2");
	out->k_shared = bench_ksm_read("pages_shared");
	out->k_sharing = bench_ksm_read("pages_sharing");
	out->k_unshared = bench_ksm_read("pages_unshared");
	out->k_chains = bench_ksm_read("stable_node_chains");
	out->k_dups = bench_ksm_read("stable_node_dups");

	/* The clean pass, parked at its end; the 1 % write; the dirty pass. */
	m3 = ksm_park_at_end(&m2, ksm_pages, "the clean pass", out);
	out->k_shared3 = bench_ksm_read("pages_shared");
	out->k_sharing3 = bench_ksm_read("pages_sharing");
	before = ksm_mark_now();
	out->k_write_ns = write_1pct(mem, spec->pages);
	m4s = ksm_mark_now();
	out->k_idle_ok = m4s.full_scans == before.full_scans && m4s.scanned == before.scanned;
	bench_ksm_set("sleep_millisecs", "0"); /* wakes ksmd */
	m4 = ksm_park_at_end(&m4s, ksm_pages, "the dirty pass", out);

	/* The dirty pass was visit 4; warm up to the steady cycle, measure it. */
	bench_ksm_set("sleep_millisecs", "0");
	ms = ksm_wait_scans(m4.full_scans + KSM_STEADY_FIRST - 5, "the smart_scan warm-up");
	me = ksm_wait_scans(ms.full_scans + KSM_STEADY_PASSES - 1, "the steady passes");
	me = ksm_park_at_end(&me, ksm_pages, "the last steady pass", out);

	out->row[R_K_PASS1] = ksm_row(&m0, &m1);
	out->row[R_K_PASS2] = ksm_row(&m1, &m2);
	out->row[R_K_CLEAN] = ksm_row(&m2, &m3);
	out->row[R_K_DIRTY] = ksm_row(&m4s, &m4);
	out->row[R_K_STEADY] = ksm_row(&ms, &me);
	row_div(&out->row[R_K_STEADY], (unsigned)(me.full_scans - ms.full_scans));
	/* Passes 1 to 3 and the dirty pass end where ksmd parked: exact counts. */
	n = m4.scanned + m4.skipped - m4s.scanned - m4s.skipped;
	out->k_covered = m3.scanned + m3.skipped - m0.scanned - m0.skipped == 3 * spec->pages &&
			 n == spec->pages;

	/* Unmerge (the write returns when done), stop, and only then unmap. */
	out->k_unmerge_ns = bench_ksm_unmerge();
	munmap(mem, len);
}

/* ---------------------------------------------------------------- report */

/* Median, min and max of a run metric. */
struct spread {
	double med, min, max;
};

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static struct spread spread_of(double *v, unsigned n)
{
	struct spread s;

	qsort(v, n, sizeof(*v), cmp_double);
	s.min = v[0];
	s.max = v[n - 1];
	s.med = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
	return s;
}

/* Per-run values of one quantity, selected by @what and @r. */
enum quantity { Q_CPU, Q_ALT, Q_WALL, Q_FIND, Q_RATIO, Q_WRITE };

static double quantity(const struct run_result *run, enum quantity what, int r)
{
	const struct row *w = run->row;

	switch (what) {
	case Q_CPU:
		return (double)w[r].cpu_ns;
	case Q_ALT:
		return (double)w[r].alt_ns;
	case Q_WALL:
		return (double)w[r].wall_ns;
	case Q_FIND: /* r: 0 ksmu, 1 KSM */
		return r ? (double)(w[R_K_PASS1].cpu_ns + w[R_K_PASS2].cpu_ns)
			 : (double)w[R_U_FIRST].cpu_ns;
	case Q_RATIO: /* r: 0 find, 1 clean, 2 dirty, 3 steady */
		if (r == 0)
			return quantity(run, Q_FIND, 1) / quantity(run, Q_FIND, 0);
		return (double)w[R_K_CLEAN + r - 1].cpu_ns / (double)w[R_U_CLEAN + r - 1].cpu_ns;
	case Q_WRITE: /* r: 0 ksmu, 1 KSM */
		return (double)(r ? run->k_write_ns : run->u_write_ns);
	}
	return 0;
}

static struct spread spread_q(const struct run_result *runs, unsigned n, enum quantity what,
			      int r)
{
	double v[MAX_REPEAT];

	for (unsigned i = 0; i < n; i++)
		v[i] = quantity(&runs[i], what, r);
	return spread_of(v, n);
}

static void print_row(const char *engine, const char *name, const struct run_result *runs,
		      unsigned n, int r, size_t pages)
{
	struct spread cpu = spread_q(runs, n, Q_CPU, r);
	const struct row *w = &runs[0].row[r];
	bool ksmu_row = r <= R_U_STEADY;
	char range[40] = "";
	char hashed[16] = "-", clean[16] = "-";

	if (n > 1)
		snprintf(range, sizeof(range), "%.1f..%.1f", cpu.min / (double)pages,
			 cpu.max / (double)pages);
	if (ksmu_row) {
		snprintf(hashed, sizeof(hashed), "%" PRIu64, w->hashed);
		snprintf(clean, sizeof(clean), "%" PRIu64, w->clean);
	}
	printf("%-6s %-10s %9.1f %15s %12.0f %10.3f %10.3f %10.3f %9" PRIu64 " %9s %9s %8" PRIu64
	       "\n",
	       engine, name, cpu.med / (double)pages, range,
	       cpu.med ? (double)pages * 1e9 / cpu.med : 0.0, cpu.med / 1e6,
	       spread_q(runs, n, Q_ALT, r).med / 1e6, spread_q(runs, n, Q_WALL, r).med / 1e6,
	       w->visited, hashed, clean, w->skipped);
}

static void print_ratio(const char *name, const struct run_result *runs, unsigned n, int r)
{
	struct spread s = spread_q(runs, n, Q_RATIO, r);

	printf("  %-22s %7.2f", name, s.med);
	if (n > 1)
		printf("  (%.2f..%.2f)", s.min, s.max);
	if (s.med >= 1.0)
		printf("  ksmu better: KSM needs %.2fx the CPU\n", s.med);
	else
		printf("  KSM better: ksmu needs %.2fx the CPU\n", 1.0 / s.med);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "mib", required_argument, NULL, 'm' },
		{ "quick", no_argument, NULL, 'q' },
		{ "engine", required_argument, NULL, 'e' },
		{ "ksm-pages", required_argument, NULL, 'k' },
		{ "repeat", required_argument, NULL, 'r' },
		{ "tracker", required_argument, NULL, 't' },
		{ "seed", required_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct ksmu_datagen_spec spec = { .templates = 1024, .dup_frac = 0.5, .zero_frac = 0.1,
					  .seed = 1 };
	struct ksmu_datagen_expect ex;
	struct ksmu_stats kn;
	struct run_result *runs;
	uint64_t mib = 1024, ksm_pages = 20000;
	unsigned long tracker = 0;
	unsigned repeat = 1;
	int engine = 0, c, ret;
	bool quick = false, est_ok = true;
	unsigned k_merge_runs = 0;
	bool k_agree = true, k_parked = true, k_nudged = false, k_idle = true,
	     k_covered = true;
	char why[160] = "";
	size_t pages;

	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'm':
			mib = bench_parse_u64("--mib", optarg, 1, SIZE_MAX >> 21);
			break;
		case 'q':
			quick = true;
			break;
		case 'e':
			engine = bench_parse_engine(optarg);
			break;
		case 'k':
			ksm_pages = bench_parse_u64("--ksm-pages", optarg, 1, 1000000);
			break;
		case 'r':
			repeat = (unsigned)bench_parse_u64("--repeat", optarg, 1, MAX_REPEAT);
			break;
		case 't':
			if (!strcmp(optarg, "checksum")) {
				tracker = KSMU_TRACK_CHECKSUM;
			} else if (!strcmp(optarg, "wp") || !strcmp(optarg, "wp-async")) {
				tracker = KSMU_TRACK_WP_ASYNC;
			} else {
				fprintf(stderr, "%s: --tracker wants checksum or wp, not '%s'\n",
					bench_prog, optarg);
				return 2;
			}
			break;
		case 's':
			spec.seed = bench_parse_u64("--seed", optarg, 0, UINT64_MAX);
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
		if (engine & BENCH_ENG_KSM) {
			fprintf(stderr, "%s: --quick measures ksmu only; drop --engine\n",
				bench_prog);
			return 2;
		}
		mib = 64;
		engine = BENCH_ENG_KSMU;
	}

	pages = (size_t)mib << 20 >> 12;
	spec.pages = pages;
	pass_timeout_ns = 30000000000ULL + 50000ULL * pages;
	ksmu_set_log(bench_log_to_stderr, NULL, KSMU_LOG_WARN);

	/* The knobs both engines run with: ksmu's defaults. */
	kn = get_stats();
	ret = ksmu_datagen_expect(&spec, (unsigned long)kn.max_page_sharing,
				  kn.use_zero_pages != 0, &ex);
	if (ret) {
		fprintf(stderr, "%s: cannot compute the expected answer: %s\n", bench_prog,
			strerror(-ret));
		return 1;
	}

	if (!engine) {
		engine = bench_ksm_usable(why, sizeof(why)) ? BENCH_ENG_BOTH : BENCH_ENG_KSMU;
	} else if ((engine & BENCH_ENG_KSM) && !bench_ksm_usable(why, sizeof(why))) {
		fprintf(stderr, "%s: cannot measure kernel KSM: %s\n", bench_prog, why);
		return 1;
	}

	if (engine & BENCH_ENG_KSMU) {
		/* No background scanning: the measured passes are the only work. */
		ret = ksmu_set_run(KSMU_RUN_STOP);
		if (ret < 0)
			die_ksmu("ksmu_set_run(stop)", ret);
		if (tracker) {
			ret = ksmu_set_tunable("dirty_tracker", tracker);
			if (ret == -EOPNOTSUPP) {
				printf("SKIP: dirty tracker %s is not available on this kernel\n",
				       tracker_name(tracker));
				return 77;
			}
			if (ret < 0)
				die_ksmu("ksmu_set_tunable(dirty_tracker)", ret);
		}
	}
	if (engine & BENCH_ENG_KSM) {
		struct bench_ksm_knobs knobs = {
			.use_zero_pages = kn.use_zero_pages,
			.max_page_sharing = kn.max_page_sharing,
			.merge_across_nodes = kn.merge_across_nodes,
			.smart_scan = kn.smart_scan,
		};

		bench_ksm_setup(&knobs);
	}

	runs = calloc(repeat, sizeof(*runs));
	if (!runs) {
		fprintf(stderr, "%s: out of memory\n", bench_prog);
		return 1;
	}
	for (unsigned i = 0; i < repeat; i++) {
		if (engine & BENCH_ENG_KSMU) {
			run_ksmu(&spec, &ex, &runs[i]);
			est_ok = est_ok && runs[i].est_ok;
		}
		if (engine & BENCH_ENG_KSM)
			run_ksm(&spec, ksm_pages, &runs[i]);
	}

	/* ------------------------------------------------------ report */
	printf("bench-scan: %" PRIu64 " MiB (%zu pages) per engine, datagen seed %" PRIu64
	       ": %u templates, %.0f %% copies, %.0f %% zero, rest unique; %u run%s\n",
	       mib, pages, spec.seed, spec.templates, spec.dup_frac * 100, spec.zero_frac * 100,
	       repeat, repeat > 1 ? "s (medians, min..max)" : "");
	printf("knobs for both engines: use_zero_pages %" PRIu64 ", max_page_sharing %" PRIu64
	       ", merge_across_nodes %" PRIu64 ", smart_scan %" PRIu64 "\n",
	       kn.use_zero_pages, kn.max_page_sharing, kn.merge_across_nodes, kn.smart_scan);
	printf("expected with these knobs: pages_shared %zu, pages_sharing %zu\n", ex.pages_shared,
	       ex.pages_sharing);
	if (*why)
		printf("note: kernel KSM not measured: %s; no ratios\n", why);
	if (engine & BENCH_ENG_KSMU) {
		const struct run_result *r0 = &runs[0];
		struct spread w = spread_q(runs, repeat, Q_WRITE, 0);

		printf("ksmu %d.%d: tracker %s, filled in %.2f s; detects only (0.1 does not merge)\n",
		       KSMU_VERSION_MAJOR, KSMU_VERSION_MINOR, tracker_name(r0->u_end.dirty_tracker),
		       r0->u_fill_ns / 1e9);
		printf("  first pass: est_pages_shared %" PRIu64 " est_pages_sharing %" PRIu64
		       " (detected): %s\n",
		       r0->est_shared, r0->est_sharing, est_ok ? "as expected" : "MISMATCH");
		printf("  wrote 1 word in %zu pages (1 %%) in %.3f ms, %.2f us/page\n", pages / 100,
		       w.med / 1e6, w.med / 1e3 / (double)(pages / 100));
		printf("  metadata %.2f MiB, %" PRIu64 " rmap items x %" PRIu64 " B\n",
		       r0->u_end.metadata_bytes / (1024.0 * 1024.0), r0->u_end.rmap_items,
		       r0->u_end.rmap_item_size);
	}
	for (unsigned i = 0; i < repeat; i++) {
		const struct run_result *r = &runs[i];

		k_merge_runs += r->k_shared == ex.pages_shared && r->k_sharing == ex.pages_sharing;
		k_agree = k_agree && r->est_shared == r->k_shared && r->est_sharing == r->k_sharing;
		k_parked = k_parked && !r->k_extra_passes;
		k_nudged = k_nudged || r->k_nudged;
		k_idle = k_idle && r->k_idle_ok;
		k_covered = k_covered && r->k_covered;
	}
	if (engine & BENCH_ENG_KSM) {
		const struct run_result *r0 = &runs[0];
		struct spread w = spread_q(runs, repeat, Q_WRITE, 1);

		printf("kernel KSM: pages_to_scan %" PRIu64 ", sleep_millisecs 0; ksmd pid %d, CPU "
		       "from /proc/%d/%s; filled in %.2f s\n",
		       ksm_pages, bench_ksmd_pid, bench_ksmd_pid,
		       bench_ksmd_schedstat ? "schedstat" : "stat", r0->k_fill_ns / 1e9);
		printf("  after pass 2: pages_shared %" PRIu64 " pages_sharing %" PRIu64
		       " (merged), pages_unshared %" PRIu64 ", stable_node_chains %" PRIu64
		       ", stable_node_dups %" PRIu64 "; after the clean pass: %" PRIu64 "/%" PRIu64
		       "\n",
		       r0->k_shared, r0->k_sharing, r0->k_unshared, r0->k_chains, r0->k_dups,
		       r0->k_shared3, r0->k_sharing3);
		printf("  pass 2 result as expected in %u of %u run%s%s\n", k_merge_runs, repeat,
		       repeat > 1 ? "s" : "",
		       k_merge_runs < repeat ? " (KSM merged some pages only in a later pass)" : "");
		if (engine & BENCH_ENG_KSMU)
			printf("duplicates found: ksmu first pass %" PRIu64 "/%" PRIu64
			       " (detected), KSM pass 2 %" PRIu64 "/%" PRIu64
			       " (merged), as pages_shared/pages_sharing: %s\n",
			       r0->est_shared, r0->est_sharing, r0->k_shared, r0->k_sharing,
			       k_agree ? "agree" : "differ (in some run)");
		printf("  wrote 1 word in %zu pages (1 %%) in %.3f ms, %.2f us/page (writes to merged "
		       "pages break COW)\n",
		       pages / 100, w.med / 1e6, w.med / 1e3 / (double)(pages / 100));
		printf("  %sksmd parked at the clean and dirty pass ends: %s; idle while writing: %s; "
		       "every pass covered the region: %s; unmerge (run=2) took %.3f s\n",
		       repeat > 1 ? "all runs: " : "",
		       !k_parked ? "NO (a pass late)"
		       : k_nudged ? "yes (woken once: it slept mid-pass, which the wall time of "
				    "that pass includes and its CPU time does not)"
				  : "yes",
		       k_idle ? "yes" : "NO", k_covered ? "yes" : "NO", r0->k_unmerge_ns / 1e9);
	}

	printf("\nCPU per page of the region (ksmu: scan_cpu_ns; KSM: ksmd); alt cpu: ksmu process "
	       "clock, ksmd utime+stime\n");
	printf("%-6s %-10s %9s %15s %12s %10s %10s %10s %9s %9s %9s %8s\n", "engine", "pass",
	       "ns/page", repeat > 1 ? "ns/page range" : "", "pages/s/cpu", "cpu ms", "alt cpu ms",
	       "wall ms", "visited", "hashed", "clean", "skipped");
	if (engine & BENCH_ENG_KSMU) {
		print_row("ksmu", "first", runs, repeat, R_U_FIRST, pages);
		print_row("ksmu", "clean", runs, repeat, R_U_CLEAN, pages);
		print_row("ksmu", "dirty1pct", runs, repeat, R_U_DIRTY, pages);
		print_row("ksmu", "steady", runs, repeat, R_U_STEADY, pages);
	}
	if (engine & BENCH_ENG_KSM) {
		print_row("ksm", "pass1", runs, repeat, R_K_PASS1, pages);
		print_row("ksm", "pass2", runs, repeat, R_K_PASS2, pages);
		print_row("ksm", "clean", runs, repeat, R_K_CLEAN, pages);
		print_row("ksm", "dirty1pct", runs, repeat, R_K_DIRTY, pages);
		print_row("ksm", "steady", runs, repeat, R_K_STEADY, pages);
	}
	printf("steady: mean per pass over one smart_scan cycle, nothing written (ksmu: %d passes "
	       "after %d more",
	       KSMU_STEADY_PASSES, KSMU_STEADY_WARMUP);
	if (engine & BENCH_ENG_KSM)
		printf("; KSM: visits %d-%d).  With smart_scan %" PRIu64 ", pages that stay unmerged "
		       "are scanned ever more rarely; KSM's clean and dirty1pct passes are its "
		       "visits 3 and 4, before it skips any.\n",
		       KSM_STEADY_FIRST, KSM_STEADY_FIRST + KSM_STEADY_PASSES - 1, kn.smart_scan);
	else
		printf(").\n");

	if (engine == BENCH_ENG_BOTH) {
		struct spread fu = spread_q(runs, repeat, Q_FIND, 0);
		struct spread fk = spread_q(runs, repeat, Q_FIND, 1);

		printf("\nCPU to find all duplicates: ksmu first pass %.1f ms (%.1f ns/page); "
		       "KSM pass1+pass2 %.1f ms (%.1f ns/page, includes merging)\n",
		       fu.med / 1e6, fu.med / (double)pages, fk.med / 1e6, fk.med / (double)pages);
		printf("Ratios, KSM CPU / ksmu CPU per page (above 1: ksmu needs less CPU):\n");
		print_ratio("find all duplicates", runs, repeat, 0);
		print_ratio("clean pass", runs, repeat, 1);
		print_ratio("1 %-dirty pass", runs, repeat, 2);
		print_ratio("steady (clean, aged)", runs, repeat, 3);
	}

	printf("RESULT bench=scan mib=%" PRIu64 " engine=%s repeat=%u", mib,
	       engine == BENCH_ENG_BOTH ? "both" : engine == BENCH_ENG_KSM ? "ksm" : "ksmu",
	       repeat);
	if (engine & BENCH_ENG_KSMU) {
		const struct run_result *r0 = &runs[0];
		double f = spread_q(runs, repeat, Q_CPU, R_U_FIRST).med;
		double cl = spread_q(runs, repeat, Q_CPU, R_U_CLEAN).med;
		double d = spread_q(runs, repeat, Q_CPU, R_U_DIRTY).med;

		printf(" first_pps=%.0f clean_pps=%.0f dirty1pct_pps=%.0f tracker=%s"
		       " first_ns_per_page=%.1f clean_ns_per_page=%.1f dirty1pct_ns_per_page=%.1f"
		       " steady_ns_per_page=%.1f"
		       " first_hashed=%" PRIu64 " clean_hashed=%" PRIu64 " dirty1pct_hashed=%" PRIu64
		       " est_ok=%d",
		       f ? pages * 1e9 / f : 0.0, cl ? pages * 1e9 / cl : 0.0,
		       d ? pages * 1e9 / d : 0.0, tracker_name(r0->u_end.dirty_tracker),
		       f / (double)pages, cl / (double)pages, d / (double)pages,
		       spread_q(runs, repeat, Q_CPU, R_U_STEADY).med / (double)pages,
		       r0->row[R_U_FIRST].hashed, r0->row[R_U_CLEAN].hashed,
		       r0->row[R_U_DIRTY].hashed, est_ok ? 1 : 0);
	}
	if (engine & BENCH_ENG_KSM) {
		const struct run_result *r0 = &runs[0];

		printf(" ksm_pages_to_scan=%" PRIu64, ksm_pages);
		printf(" ksm_pass1_ns_per_page=%.1f ksm_pass2_ns_per_page=%.1f"
		       " ksm_find_ns_per_page=%.1f ksm_clean_ns_per_page=%.1f"
		       " ksm_dirty1pct_ns_per_page=%.1f ksm_steady_ns_per_page=%.1f",
		       spread_q(runs, repeat, Q_CPU, R_K_PASS1).med / (double)pages,
		       spread_q(runs, repeat, Q_CPU, R_K_PASS2).med / (double)pages,
		       spread_q(runs, repeat, Q_FIND, 1).med / (double)pages,
		       spread_q(runs, repeat, Q_CPU, R_K_CLEAN).med / (double)pages,
		       spread_q(runs, repeat, Q_CPU, R_K_DIRTY).med / (double)pages,
		       spread_q(runs, repeat, Q_CPU, R_K_STEADY).med / (double)pages);
		printf(" ksm_pages_shared=%" PRIu64 " ksm_pages_sharing=%" PRIu64
		       " ksm_merge_ok=%d ksm_measure_ok=%d",
		       r0->k_shared, r0->k_sharing, k_merge_runs == repeat,
		       k_parked && k_idle && k_covered);
	}
	if (engine == BENCH_ENG_BOTH)
		printf(" ksmu_find_ns_per_page=%.1f ratio_find=%.2f ratio_clean=%.2f"
		       " ratio_dirty1pct=%.2f ratio_steady=%.2f",
		       spread_q(runs, repeat, Q_FIND, 0).med / (double)pages,
		       spread_q(runs, repeat, Q_RATIO, 0).med, spread_q(runs, repeat, Q_RATIO, 1).med,
		       spread_q(runs, repeat, Q_RATIO, 2).med, spread_q(runs, repeat, Q_RATIO, 3).med);
	printf("\n");
	free(runs);
	return 0;
}
