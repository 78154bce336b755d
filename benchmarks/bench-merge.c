/* SPDX-License-Identifier: MIT */
/*
 * bench-merge.c - merging end to end: libksmu against kernel KSM on the same
 * workload, one engine after the other, in one run.
 *
 * Workload.  --regions N regions (4) of --mib M MiB each (256) hold one
 * datagen image with the default mix: 1024 templates, 50 % copies scattered
 * at random, 10 % zero pages, 40 % unique.  Template contents are a function
 * of the datagen seed, so regions with different seeds would share nothing;
 * instead the regions are consecutive slices of ONE image (one seed, one
 * mapping), registered (ksmu_register) or madvise(MADV_MERGEABLE)d one
 * region at a time.  Copies of a template are therefore spread over all
 * regions, and merging works across regions as KSM's does.  Every engine
 * gets a freshly mapped and filled image; the true answer, and KSM's
 * counters under the knobs in force (max_page_sharing chains included),
 * come from ksmu_datagen_expect().
 *
 * ksmu.  Each ksmu configuration runs in a forked child that has never
 * started the engine (the parent never calls libksmu), so that no state of
 * an earlier run (VMA counts, stores, counters) leaks into the next, and a
 * crash or a hang is reported with the step it happened in while the parent
 * still restores the system.  The child stops the background scanner
 * (ksmu_set_run(0)), registers the regions and calls ksmu_scan_full() until
 * pages_sharing (+ ksm_zero_pages) stops growing.  "Passes" is the pass
 * that reached the final value; the pass that shows no growth only
 * confirms it.  Time to final and CPU to final add up the passes up to the
 * final one; "conv" includes the confirming pass.  CPU is the engine's
 * scan_cpu_ns (the process CPU clock is shown as a cross-check).  The
 * merge windows' open time (window_ns: wall time from opening a window to
 * closing it, summed, and window_ns_max, the longest) is shown per merge.
 * ksmu keeps the VMAs merging adds (up to 2 per merged page) under 3/4 of
 * vm.max_map_count.  The full run measures ksmu three times: with
 * dry_run=1 (detection only: what the scan costs without merging), at the
 * limit as found (65530 by default), and with vm.max_map_count raised to
 * --max-map-count (1048576; needs root), which is written back on every
 * exit path, as soon as that run's process has ended.
 *
 * Kernel KSM.  The image is madvise(MADV_MERGEABLE)d region by region; KSM
 * gets ksmu's knobs (use_zero_pages, max_page_sharing, merge_across_nodes,
 * smart_scan), pages_to_scan 20000 (--ksm-pages) and sleep_millisecs 0, and
 * run=1.  full_scans and pages_sharing (+ ksm_zero_pages) are polled every
 * millisecond; converged = two full passes ended after the last change of
 * pages_sharing.  Time to final and CPU to final end at the poll that saw
 * the last change; the CPU is ksmd's, from /proc/PID/schedstat (or stat).
 * Then ksmd is stopped (run=0 keeps the merged pages).  As in bench-scan
 * (both through bench-common.c), the knobs are saved first and restored on
 * every exit path (exit, error, SIGINT, SIGTERM, crash signals): run=2
 * (unmerge), run=0, then the saved values.  KSM is used only if it is idle
 * (run=0, nothing merged) and the lock /run/lock/ksmu-bench-ksm.lock
 * (shared with bench-scan) is free.
 *
 * For each engine after convergence: Pss before and after
 * (/proc/self/smaps_rollup), the process's VMAs, the kernel memory of VMAs
 * (system-wide slab of vm_area_struct, maple_node, anon_vma and
 * anon_vma_chain; root only), the counters, and ksmu_datagen_verify() over
 * the whole image: every byte of every region must be unchanged.  "Net
 * saving measured" is Pss saved minus that slab growth (for KSM also minus
 * its metadata as its general_profit counts it, since KSM's metadata is
 * kernel memory that Pss does not show).
 *
 * COW-break latency: one byte is written into --cow-pages (2000) merged
 * pages spread evenly over the image (copies of a template, checked to be
 * merged: ksmu by the store mappings in /proc/self/maps, KSM by KPF_KSM in
 * /proc/kpageflags), each write timed alone with clock_gettime
 * (CLOCK_MONOTONIC); p50 and p99.  The bytes are written back and the image
 * is verified again (the COW copies and the pages still sharing must all
 * hold their content).  On a small shared VM the cost of a COW fault varies
 * several-fold from one minute to the next with what the other CPUs do, so
 * the ksmu run the ratios use is paired with KSM: its
 * child waits, merged and with its scanner stopped, while KSM merges the
 * parent's image (the merging itself never overlaps), and then the two take
 * turns writing, COW_BATCH pages at a time, ksmu first in every other turn.
 * vm.max_map_count stays raised until that child ends.
 *
 * Output: a table, one line per engine run
 *   RESULT bench=merge engine=ksmu|ksm key=value...
 * and a last line
 *   RESULT bench=merge ratio cpu_ratio=.. saving_ratio=.. cow_p50_ratio=..
 * cpu_ratio = KSM CPU to final / ksmu CPU to final (above 1: ksmu cheaper),
 * with ksmu's scan_cpu_ns; cpu_process_ratio the same with ksmu's process
 * CPU clock, which also counts its other threads (the tracker's event
 * reader, which merge windows wait for; scan_cpu_ns does not);
 * saving_ratio = ksmu general_profit / KSM general_profit (also by Pss and
 * by the measured net saving); cow_p50_ratio = ksmu p50 / KSM p50.  ksmu's
 * figures are those of the raised run if it ran, else of the run at the
 * default limit.  CPU matters more than wall time on a shared machine.
 *
 * --quick (ctest smoke): 4 regions of 16 MiB, ksmu only at the current
 * limit, 200 COW pages; kernel KSM and vm.max_map_count are not touched.
 *
 * Exit status: 0 done; 1 a step failed, ksmu crashed or hung, or memory
 * changed; 2 bad command line; 77 --quick and ksmu cannot merge here, or
 * --engine ksm and kernel KSM is not usable (ctest skip).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench-common.h"
#include "datagen.h"
#include "ksmu.h"

#define PAGE_BYTES KSMU_DATAGEN_PAGE_SIZE

#define MAX_PASSES 32
#define POLL_NS 1000000ULL /* KSM polling period */
#define COW_OFFSET 2053	   /* the byte written in each page */
#define KPF_KSM 21	   /* /proc/kpageflags bit */

/* ksmu's default knobs, used for KSM if no ksmu run reported them. */
#define DEF_MAX_PAGE_SHARING 256
#define DEF_USE_ZERO_PAGES 0
#define DEF_MERGE_ACROSS_NODES 1
#define DEF_SMART_SCAN 1

const char bench_prog[] = "bench-merge";

/*
 * struct opts - the command line.
 * @regions, @mib:  the image: @regions regions of @mib MiB
 * @templates, @seed, @run_len: datagen
 * @cow_pages:      pages written for the COW-break latency
 * @engine:         enum engine
 * @ksm_pages:      KSM pages_to_scan
 * @max_map_count:  vm.max_map_count of the raised ksmu run; 0: no such run
 * @default_run:    also run ksmu at vm.max_map_count as found
 * @detect_run:     also run ksmu with dry_run=1 (detection only: scan cost)
 * @max_passes:     ksmu passes at most
 * @quick:          CI smoke
 */
struct opts {
	unsigned regions;
	uint64_t mib;
	unsigned templates;
	uint64_t seed;
	unsigned run_len;
	size_t cow_pages;
	int engine;
	uint64_t ksm_pages;
	uint64_t max_map_count;
	bool default_run;
	bool detect_run;
	unsigned max_passes;
	bool quick;
};

/* The image: @regions slices of @region_pages pages of one datagen spec. */
struct image {
	unsigned char *mem;
	size_t len, pages, region_pages;
	unsigned regions;
	struct ksmu_datagen_spec spec;
};

/*
 * struct pass_row - one pass of an engine.
 * @wall_ns, @cpu_ns, @alt_ns: its cost (ksmu: scan_cpu_ns and process CPU;
 *                             KSM: ksmd schedstat and stat)
 * @shared, @sharing, @zero:   counters at its end
 * @merges, @limited:          ksmu: merges and merge_vma_limited in it
 * @scans:                     full passes done since the start, at its end
 */
struct pass_row {
	uint64_t scans;
	uint64_t wall_ns, cpu_ns, alt_ns;
	uint64_t shared, sharing, zero;
	uint64_t merges, limited;
};

/*
 * struct cow_result - the COW-break latency of one engine.
 * @wanted, @picked: pages asked for, merged pages found and written
 * @unchecked:       the merged state could not be checked (assumed)
 * @p50, @p90, @p99, @max: latencies, ns
 * @mean:            mean latency, ns
 * @slow:            writes that took more than 1 ms
 * @bench_clock_ns:        cost of the clock_gettime pair, not subtracted
 */
struct cow_result {
	size_t wanted, picked, slow;
	bool unchecked;
	uint64_t p50, p90, p99, max, bench_clock_ns;
	double mean;
};

/*
 * struct result - one engine run; for ksmu it lives in memory shared with
 * the child that ran it.  Counters are those once converged; cumulative
 * ksmu counters are deltas over the run.
 */
struct result {
	char engine[8];
	char label[32];
	bool ran, ok, dry;
	char note[200];
	char phase[64];
	int64_t max_map_count;
	uint64_t max_page_sharing, use_zero_pages, merge_across_nodes, smart_scan;
	uint64_t dirty_tracker, merging;
	unsigned npass;
	struct pass_row pass[MAX_PASSES];
	unsigned passes, passes_run;
	bool converged;
	uint64_t final_wall_ns, final_cpu_ns, final_alt_ns;
	uint64_t conv_wall_ns, conv_cpu_ns, conv_alt_ns;
	uint64_t fill_ns;
	uint64_t pages_shared, pages_sharing, pages_unshared, ksm_zero_pages;
	uint64_t stable_node_chains;
	int64_t general_profit;
	/* ksmu */
	uint64_t est_shared, est_sharing, est_zero;
	uint64_t merges, merge_vma_limited, merge_busy, merge_changed, merge_failed;
	uint64_t store_vmas, vmas_added, vma_limit, store_pages, metadata_bytes;
	uint64_t cow_breaks, cow_pass_ns;
	uint64_t window_ns, window_ns_max; /* merge windows open: total (delta), longest */
	bool unmap_checked;
	uint64_t store_pages_left, regions_left;
	/* KSM */
	int64_t ksm_merging_pages, ksm_process_profit;
	uint64_t unmerge_ns;
	/* both */
	uint64_t maps_before, maps_after;
	long pss_before_kb, pss_after_kb, pss_anon_after_kb, pss_shmem_after_kb;
	int64_t slab_before, slab_after; /* VMA slab caches, bytes, -1 unreadable */
	int verify, verify_cow; /* 0 ok, -EBADMSG changed, 1 not done */
	bool cow_paired;	/* COW batches taken in turns with KSM's */
	size_t bad_page, bad_page_cow, bad_pages;
	struct cow_result cow;
};

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: %s [--regions N] [--mib N] [--quick] [--engine ksmu|ksm|both]\n"
		"          [--max-map-count N] [--no-default-limit] [--no-detect-run]\n"
		"          [--cow-pages N]\n"
		"          [--ksm-pages N] [--max-passes N] [--templates K] [--seed S]\n"
		"          [--run-len L]\n"
		"Merge the same generated memory with libksmu and with kernel KSM, one after\n"
		"the other: passes, time and CPU to converge, saving, Pss, COW-break latency.\n"
		"\n"
		"  --regions N        regions (default 4)\n"
		"  --mib N            MiB per region (default 256)\n"
		"  --quick            CI smoke: 4 x 16 MiB, ksmu only, limits untouched\n"
		"  --engine E         ksmu, ksm or both (default both; KSM is skipped if it\n"
		"                     is not usable: not root, in use, or locked)\n"
		"  --max-map-count N  also run ksmu with vm.max_map_count raised to N (root;\n"
		"                     restored afterwards; default 1048576, 0: no raised run)\n"
		"  --no-default-limit skip the ksmu run at vm.max_map_count as found\n"
		"  --no-detect-run    skip the ksmu run with dry_run=1 (what detection alone\n"
		"                     costs, to tell the merging cost apart)\n"
		"  --cow-pages N      merged pages written for the COW latency (default 2000)\n"
		"  --ksm-pages N      kernel KSM pages_to_scan (default 20000)\n"
		"  --max-passes N     ksmu passes at most (default 10)\n"
		"  --templates K      datagen templates (default 1024)\n"
		"  --seed S           datagen seed (default 1)\n"
		"  --run-len L        copies in runs of L consecutive templates, as cloned\n"
		"                     VM images have (default 0: scattered, the issue's mix)\n",
		bench_prog);
}

/* --------------------------------------------------------- measurements */

/* Pss of the process from smaps_rollup, kB (-1 if unreadable). */
struct pss {
	long pss, anon, shmem;
};

static struct pss read_pss(void)
{
	struct pss p = { -1, -1, -1 };
	FILE *f = fopen("/proc/self/smaps_rollup", "re");
	char line[256];
	long kb;

	if (!f)
		return p;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "Pss: %ld kB", &kb) == 1)
			p.pss = kb;
		else if (sscanf(line, "Pss_Anon: %ld kB", &kb) == 1)
			p.anon = kb;
		else if (sscanf(line, "Pss_Shmem: %ld kB", &kb) == 1)
			p.shmem = kb;
	}
	fclose(f);
	return p;
}

/* VMAs of the process: lines of /proc/self/maps. */
static uint64_t count_maps(void)
{
	static char buf[1 << 16];
	uint64_t n = 0;
	ssize_t got;
	int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return 0;
	while ((got = read(fd, buf, sizeof(buf))) > 0) {
		for (ssize_t i = 0; i < got; i++)
			n += buf[i] == '\n';
	}
	close(fd);
	return n;
}

/*
 * Kernel memory of VMAs, system-wide: active objects times object size of
 * the slab caches a VMA split allocates from.  -1 if /proc/slabinfo is not
 * readable (it needs root) or the caches are merged away.
 */
static int64_t vma_slab_bytes(void)
{
	static const char *const caches[] = { "vm_area_struct", "maple_node", "anon_vma",
					      "anon_vma_chain" };
	FILE *f = fopen("/proc/slabinfo", "re");
	char line[512], name[64];
	unsigned long long active, total, size;
	int64_t sum = 0;
	unsigned found = 0;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%63s %llu %llu %llu", name, &active, &total, &size) != 4)
			continue;
		for (size_t i = 0; i < sizeof(caches) / sizeof(caches[0]); i++) {
			if (!strcmp(name, caches[i])) {
				sum += (int64_t)(active * size);
				found++;
			}
		}
	}
	fclose(f);
	return found ? sum : -1;
}

static const char *thp_mode(void)
{
	static char buf[64];
	char *a, *b;

	if (bench_read_text("/sys/kernel/mm/transparent_hugepage/enabled", buf, sizeof(buf)))
		return "unknown";
	a = strchr(buf, '[');
	b = a ? strchr(a, ']') : NULL;
	if (!a || !b)
		return "unknown";
	*b = '\0';
	return a + 1;
}

/* Map and fill a fresh image; the fill time, Pss, VMAs and VMA slab before. */
static void image_fill(struct image *im, struct result *r)
{
	uint64_t t0 = bench_clock_ns(CLOCK_MONOTONIC);

	im->mem = bench_map_filled(im->len, &im->spec, NULL);
	r->fill_ns = bench_clock_ns(CLOCK_MONOTONIC) - t0;
	r->pss_before_kb = read_pss().pss;
	r->maps_before = count_maps();
	r->slab_before = vma_slab_bytes();
}

/* Pss, VMAs and VMA slab once merged. */
static void measure_after(struct result *r)
{
	struct pss p = read_pss();

	r->pss_after_kb = p.pss;
	r->pss_anon_after_kb = p.anon;
	r->pss_shmem_after_kb = p.shmem;
	r->maps_after = count_maps();
	r->slab_after = vma_slab_bytes();
}

static const char *kind_name(int kind)
{
	switch (kind) {
	case KSMU_DATAGEN_ZERO:
		return "zero";
	case KSMU_DATAGEN_COPY:
		return "copy";
	case KSMU_DATAGEN_UNIQUE:
		return "unique";
	default:
		return "?";
	}
}

/*
 * Check every byte of the image.  On a difference, count the pages that
 * differ and describe the first one on stderr.  Returns 0 or -EBADMSG.
 */
static int image_verify(const struct image *im, const char *who, const char *when,
			size_t *bad_page, size_t *bad_pages)
{
	unsigned char want[PAGE_BYTES];
	size_t first = 0, nbad = 0, off = 0;
	uint64_t id = 0;
	int ret, kind;

	ret = ksmu_datagen_verify(im->mem, &im->spec, &first);
	if (ret != -EBADMSG) {
		if (ret)
			fprintf(stderr, "%s: %s: verify: %s\n", bench_prog, who, strerror(-ret));
		return ret;
	}
	for (size_t i = first; i < im->pages; i++) {
		if (ksmu_datagen_page(&im->spec, i, want) == 0 &&
		    memcmp(im->mem + i * PAGE_BYTES, want, PAGE_BYTES))
			nbad++;
	}
	ksmu_datagen_page(&im->spec, first, want);
	while (off < PAGE_BYTES && im->mem[first * PAGE_BYTES + off] == want[off])
		off++;
	kind = ksmu_datagen_kind(&im->spec, first, &id);
	fprintf(stderr,
		"%s: %s: MEMORY CHANGED %s: %zu page(s) differ; the first is page %zu (region %zu, "
		"page %zu of it, address %p, a %s page, id %" PRIu64 "), first byte differing at "
		"offset %zu: 0x%02x instead of 0x%02x\n",
		bench_prog, who, when, nbad, first, first / im->region_pages,
		first % im->region_pages, (void *)(im->mem + first * PAGE_BYTES), kind_name(kind),
		id, off, off < PAGE_BYTES ? im->mem[first * PAGE_BYTES + off] : 0,
		off < PAGE_BYTES ? want[off] : 0);
	*bad_page = first;
	*bad_pages = nbad;
	return -EBADMSG;
}

/* Is the page merged: 1 yes, 0 no, -1 cannot tell. */
typedef int (*merged_fn)(void *ctx, const unsigned char *page);

/*
 * struct cow_run - a COW-break measurement in progress.
 * @idx:  the pages picked, @n of them
 * @lat:  latency of each write, ns
 * @orig: the byte each write replaced
 * @done: pages written so far
 */
struct cow_run {
	size_t *idx;
	uint64_t *lat;
	unsigned char *orig;
	size_t n, done;
};

/* Pages per batch when two engines take turns (run_ksm()). */
#define COW_BATCH 100

/*
 * Pick @c->wanted merged copy pages spread evenly over the image: in each
 * of @c->wanted equal slices, the first copy page that is merged.
 */
static void cow_pick(const struct image *im, merged_fn merged, void *ctx, struct cow_result *c,
		     struct cow_run *w)
{
	size_t want = c->wanted ? c->wanted : 1, stride;

	memset(w, 0, sizeof(*w));
	w->idx = calloc(want, sizeof(*w->idx));
	w->lat = calloc(want, sizeof(*w->lat));
	w->orig = calloc(want, 1);
	if (!w->idx || !w->lat || !w->orig) {
		fprintf(stderr, "%s: out of memory\n", bench_prog);
		exit(1);
	}
	stride = im->pages / want ? im->pages / want : 1;
	for (size_t j = 0; j < c->wanted && j * stride < im->pages; j++) {
		size_t end = (j + 1) * stride < im->pages ? (j + 1) * stride : im->pages;

		for (size_t i = j * stride; i < end; i++) {
			int m;

			if (ksmu_datagen_kind(&im->spec, i, NULL) != KSMU_DATAGEN_COPY)
				continue;
			m = merged(ctx, im->mem + i * PAGE_BYTES);
			if (m < 0)
				c->unchecked = true;
			if (m) {
				w->idx[w->n++] = i;
				break;
			}
		}
	}
	c->picked = w->n;
	/* The clock's own cost; this also faults the arrays in before timing. */
	for (size_t k = 0; k < want; k++) {
		uint64_t t0 = bench_clock_ns(CLOCK_MONOTONIC);

		w->lat[k] = bench_clock_ns(CLOCK_MONOTONIC) - t0;
	}
	qsort(w->lat, want, sizeof(*w->lat), bench_cmp_u64);
	c->bench_clock_ns = w->lat[want / 2];
	for (size_t k = 0; k < w->n; k++)
		w->orig[k] = im->mem[w->idx[k] * PAGE_BYTES + COW_OFFSET];
}

/* Write one byte into each of the next @count picked pages, each timed alone. */
static void cow_batch(const struct image *im, struct cow_run *w, size_t count)
{
	size_t end = w->done + count < w->n ? w->done + count : w->n;

	for (size_t k = w->done; k < end; k++) {
		volatile unsigned char *b = im->mem + w->idx[k] * PAGE_BYTES + COW_OFFSET;
		unsigned char v = (unsigned char)(w->orig[k] ^ 0xa5);
		uint64_t t0 = bench_clock_ns(CLOCK_MONOTONIC);

		*b = v;
		w->lat[k] = bench_clock_ns(CLOCK_MONOTONIC) - t0;
	}
	w->done = end;
}

/* Write the bytes back (the pages are private now: no fault), and sum up. */
static void cow_finish(const struct image *im, struct cow_run *w, struct cow_result *c)
{
	size_t n = w->done;
	double sum = 0;

	for (size_t k = 0; k < n; k++)
		im->mem[w->idx[k] * PAGE_BYTES + COW_OFFSET] = w->orig[k];
	c->picked = n;
	if (n) {
		for (size_t k = 0; k < n; k++)
			sum += (double)w->lat[k];
		qsort(w->lat, n, sizeof(*w->lat), bench_cmp_u64);
		c->p50 = w->lat[n / 2];
		c->p90 = w->lat[n * 90 / 100];
		c->p99 = w->lat[n * 99 / 100];
		c->max = w->lat[n - 1];
		c->mean = sum / (double)n;
		for (size_t k = 0; k < n; k++)
			c->slow += w->lat[k] > 1000000;
	}
	free(w->idx);
	free(w->lat);
	free(w->orig);
	memset(w, 0, sizeof(*w));
}

/* ------------------------------------------------------------------ ksmu */

static struct result *cur; /* the child's result, for die_ksmu() */

static void set_phase(struct result *r, const char *fmt, unsigned arg)
{
	snprintf(r->phase, sizeof(r->phase), fmt, arg);
}

static void die_ksmu(const char *what, int ret)
{
	fprintf(stderr, "%s: %s failed: %s\n", bench_prog, what, strerror(-ret));
	snprintf(cur->note, sizeof(cur->note), "%s failed: %s (during %s)", what, strerror(-ret),
		 cur->phase);
	fflush(stdout);
	fflush(stderr);
	_exit(1);
}

static struct ksmu_stats get_stats(void)
{
	struct ksmu_stats s;
	int ret = ksmu_stats(&s);

	if (ret < 0)
		die_ksmu("ksmu_stats", ret);
	return s;
}

/* Store mappings of the process ([lo, hi) pairs, address order). */
struct ivals {
	uintptr_t *v;
	size_t n, cap;
};

static void load_store_maps(struct ivals *iv)
{
	FILE *f = fopen("/proc/self/maps", "re");
	char line[512];
	bool whole = true;

	iv->n = 0;
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		size_t len = strlen(line);
		bool start = whole;
		unsigned long lo, hi;

		whole = len && line[len - 1] == '\n';
		if (!start || !strstr(line, "/memfd:ksmu-store") ||
		    sscanf(line, "%lx-%lx", &lo, &hi) != 2)
			continue;
		if (iv->n + 2 > iv->cap) {
			size_t cap = iv->cap ? iv->cap * 2 : 4096;
			uintptr_t *v = realloc(iv->v, cap * sizeof(*v));

			if (!v) {
				fprintf(stderr, "%s: out of memory\n", bench_prog);
				_exit(1);
			}
			iv->v = v;
			iv->cap = cap;
		}
		iv->v[iv->n++] = lo;
		iv->v[iv->n++] = hi;
	}
	fclose(f);
}

static int ksmu_merged(void *ctx, const unsigned char *page)
{
	const struct ivals *iv = ctx;
	uintptr_t a = (uintptr_t)page;
	size_t lo = 0, hi = iv->n / 2;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (iv->v[2 * mid + 1] <= a)
			lo = mid + 1;
		else if (iv->v[2 * mid] > a)
			hi = mid;
		else
			return 1;
	}
	return 0;
}

static void fill_from_stats(struct result *r, const struct ksmu_stats *s,
			    const struct ksmu_stats *s0)
{
	r->pages_shared = s->pages_shared;
	r->pages_sharing = s->pages_sharing;
	r->pages_unshared = s->pages_unshared;
	r->ksm_zero_pages = s->ksm_zero_pages;
	r->stable_node_chains = s->stable_node_chains;
	r->general_profit = s->general_profit;
	r->est_shared = s->est_pages_shared;
	r->est_sharing = s->est_pages_sharing;
	r->est_zero = s->est_zero_pages;
	r->merges = s->merges - s0->merges;
	r->merge_vma_limited = s->merge_vma_limited - s0->merge_vma_limited;
	r->merge_busy = s->merge_busy - s0->merge_busy;
	r->merge_changed = s->merge_changed - s0->merge_changed;
	r->merge_failed = s->merge_failed - s0->merge_failed;
	r->window_ns = s->window_ns - s0->window_ns;
	r->window_ns_max = s->window_ns_max;
	r->store_vmas = s->store_vmas;
	r->vmas_added = s->vmas_added;
	r->vma_limit = s->vma_limit;
	r->store_pages = s->store_pages;
	r->metadata_bytes = s->metadata_bytes;
	r->dirty_tracker = s->dirty_tracker;
	r->merging = s->merging;
	r->max_page_sharing = s->max_page_sharing;
	r->use_zero_pages = s->use_zero_pages;
	r->merge_across_nodes = s->merge_across_nodes;
	r->smart_scan = s->smart_scan;
}

/*
 * The ksmu run, in a fresh child process: map and fill, register, passes
 * until the saving stops growing, verify, COW latency, verify, unmap.
 */
static int ksmu_child(const struct opts *o, struct image *im, struct result *r, int cmd_fd)
{
	struct ksmu_stats s0, a, b, s;
	struct cow_run cw;
	uint64_t best = 0, cum_wall = 0, cum_cpu = 0, cum_alt = 0, t0;
	struct ivals iv = { NULL, 0, 0 };
	int ret;

	cur = r;
	ksmu_set_log(bench_log_to_stderr, NULL, KSMU_LOG_WARN);
	set_phase(r, "ksmu_set_run(0)", 0);
	/* No background scanning: the measured passes are the only work. */
	ret = ksmu_set_run(KSMU_RUN_STOP);
	if (ret < 0)
		die_ksmu("ksmu_set_run(stop)", ret);
	if (r->dry) {
		ret = ksmu_set_tunable("dry_run", 1);
		if (ret < 0)
			die_ksmu("ksmu_set_tunable(dry_run)", ret);
	}
	r->max_map_count = bench_mmc_read();

	set_phase(r, "map and fill", 0);
	image_fill(im, r);

	set_phase(r, "ksmu_register", 0);
	for (unsigned i = 0; i < im->regions; i++) {
		ret = ksmu_register(im->mem + (size_t)i * im->region_pages * PAGE_BYTES,
				    im->region_pages * PAGE_BYTES);
		if (ret < 0)
			die_ksmu("ksmu_register", ret);
	}
	s0 = get_stats();
	best = r->dry ? s0.est_pages_sharing + s0.est_zero_pages
		      : s0.pages_sharing + s0.ksm_zero_pages;

	for (unsigned i = 0; i < o->max_passes; i++) {
		struct pass_row *row = &r->pass[i];
		uint64_t w0, c0, w1, c1, saving;

		set_phase(r, "pass %u (ksmu_scan_full)", i + 1);
		a = get_stats();
		w0 = bench_clock_ns(CLOCK_MONOTONIC);
		c0 = bench_clock_ns(CLOCK_PROCESS_CPUTIME_ID);
		ret = ksmu_scan_full();
		c1 = bench_clock_ns(CLOCK_PROCESS_CPUTIME_ID);
		w1 = bench_clock_ns(CLOCK_MONOTONIC);
		if (ret < 0)
			die_ksmu("ksmu_scan_full", ret);
		b = get_stats();
		row->scans = i + 1;
		row->wall_ns = w1 - w0;
		row->alt_ns = c1 - c0;
		row->cpu_ns = b.scan_cpu_ns - a.scan_cpu_ns ? b.scan_cpu_ns - a.scan_cpu_ns
							     : row->alt_ns;
		row->shared = b.pages_shared;
		row->sharing = b.pages_sharing;
		row->zero = b.ksm_zero_pages;
		row->merges = b.merges - a.merges;
		row->limited = b.merge_vma_limited - a.merge_vma_limited;
		r->npass = i + 1;
		cum_wall += row->wall_ns;
		cum_cpu += row->cpu_ns;
		cum_alt += row->alt_ns;
		printf("  %s pass %u: %.3f s wall, %.3f s cpu (process %.3f s), "
		       "pages_shared %" PRIu64 ", pages_sharing %" PRIu64 ", merges +%" PRIu64
		       ", vma_limited +%" PRIu64 ", full_scans %" PRIu64 "\n",
		       r->label, i + 1, row->wall_ns / 1e9, row->cpu_ns / 1e9, row->alt_ns / 1e9,
		       b.pages_shared, b.pages_sharing, row->merges, row->limited, b.full_scans);
		/* Detection only: the saving found (the est_ counters). */
		saving = r->dry ? b.est_pages_sharing + b.est_zero_pages
				: b.pages_sharing + b.ksm_zero_pages;
		if (saving > best) {
			best = saving;
			r->passes = i + 1;
			r->final_wall_ns = cum_wall;
			r->final_cpu_ns = cum_cpu;
			r->final_alt_ns = cum_alt;
		} else {
			r->converged = true;
			break;
		}
	}
	r->passes_run = r->npass;
	r->conv_wall_ns = cum_wall;
	r->conv_cpu_ns = cum_cpu;
	r->conv_alt_ns = cum_alt;
	s = get_stats();
	fill_from_stats(r, &s, &s0);
	if (!r->converged)
		snprintf(r->note, sizeof(r->note), "still growing after %u passes", o->max_passes);
	set_phase(r, "Pss and VMAs", 0);
	measure_after(r);

	set_phase(r, "verify", 0);
	r->verify = image_verify(im, r->label, "after merging", &r->bad_page, &r->bad_pages);
	if (r->dry)
		goto unmap;

	set_phase(r, "COW latency", 0);
	load_store_maps(&iv);
	cow_pick(im, ksmu_merged, &iv, &r->cow, &cw);
	free(iv.v);
	if (cmd_fd >= 0) {
		/* Take turns with KSM: one batch per 'c' from the parent, until 'q'. */
		char ch = 'r';

		if (send(cmd_fd, &ch, 1, MSG_NOSIGNAL) != 1)
			die_ksmu("send to the parent", -errno);
		set_phase(r, "COW latency, paired with KSM", 0);
		while (recv(cmd_fd, &ch, 1, 0) == 1 && ch == 'c') {
			cow_batch(im, &cw, COW_BATCH);
			r->cow_paired = true;
			if (send(cmd_fd, &ch, 1, MSG_NOSIGNAL) != 1)
				die_ksmu("send to the parent", -errno);
		}
		close(cmd_fd);
	}
	/* All of them unpaired, or those KSM did not take turns for. */
	cow_batch(im, &cw, cw.n - cw.done);
	cow_finish(im, &cw, &r->cow);
	set_phase(r, "verify after COW", 0);
	r->verify_cow = image_verify(im, r->label, "after the COW writes", &r->bad_page_cow,
				     &r->bad_pages);

	/* The writes show up as COW breaks in the next pass. */
	set_phase(r, "pass after COW", 0);
	a = get_stats();
	t0 = bench_clock_ns(CLOCK_MONOTONIC);
	ret = ksmu_scan_full();
	r->cow_pass_ns = bench_clock_ns(CLOCK_MONOTONIC) - t0;
	if (ret < 0)
		die_ksmu("ksmu_scan_full", ret);
	b = get_stats();
	r->cow_breaks = b.cow_breaks - a.cow_breaks;

unmap:
	/* munmap frees the store pages (UFFD_EVENT_UNMAP, applied by ksmu-uffd). */
	set_phase(r, "munmap", 0);
	munmap(im->mem, im->len);
	t0 = bench_clock_ns(CLOCK_MONOTONIC);
	do {
		bench_sleep_ns(10000000);
		s = get_stats();
	} while ((s.regions || s.store_pages) &&
		 bench_clock_ns(CLOCK_MONOTONIC) - t0 < 5000000000ULL);
	r->unmap_checked = true;
	r->regions_left = s.regions;
	r->store_pages_left = s.store_pages;
	set_phase(r, "done", 0);
	r->ok = r->verify == 0 && (r->dry || r->verify_cow == 0);
	return r->ok ? 0 : 1;
}

/*
 * struct ksmu_proc - a ksmu run in a child process.
 * @pid:       the child, 0 once reaped
 * @sh:        its result, in shared memory
 * @sock:      socket to a paired child, -1 if not paired
 * @ready:     a paired child waits for COW batches
 * @deadline:  when the child is given up as hung
 */
struct ksmu_proc {
	pid_t pid;
	struct result *sh;
	int sock;
	bool ready;
	uint64_t deadline;
};

/*
 * One byte from a paired child, waiting until @deadline at most.  A child
 * that does not answer in time is killed as hung; false if no byte came.
 */
static bool ksmu_recv(struct ksmu_proc *kp, char *ch, uint64_t deadline)
{
	struct pollfd pfd = { .fd = kp->sock, .events = POLLIN };

	for (;;) {
		int n = poll(&pfd, 1, 200);

		if (n > 0)
			return recv(kp->sock, ch, 1, 0) == 1;
		if (n < 0 && errno != EINTR)
			return false;
		if (bench_clock_ns(CLOCK_MONOTONIC) > deadline) {
			snprintf(kp->sh->note, sizeof(kp->sh->note), "HUNG during %s: killed",
				 kp->sh->phase);
			kill(kp->pid, SIGKILL);
			return false;
		}
	}
}

/*
 * Start ksmu in a child at the vm.max_map_count now in force.  A @paired
 * child stops after convergence and verification, once it has picked its
 * COW pages, and takes COW batches from ksmu_cow_turn() until
 * ksmu_finish(); ksmu_start() returns when it is there (or dead).
 */
static void ksmu_start(const struct opts *o, const struct image *tmpl, const char *label,
		       bool dry, bool paired, struct ksmu_proc *kp)
{
	int sv[2] = { -1, -1 };
	struct result *sh;
	pid_t pid;

	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED) {
		fprintf(stderr, "%s: mmap: %s\n", bench_prog, strerror(errno));
		exit(1);
	}
	memset(sh, 0, sizeof(*sh));
	snprintf(sh->engine, sizeof(sh->engine), "ksmu");
	snprintf(sh->label, sizeof(sh->label), "%s", label);
	sh->verify = sh->verify_cow = 1;
	sh->cow.wanted = dry ? 0 : o->cow_pages;
	sh->dry = dry;
	sh->ran = true;
	if (paired && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv)) {
		fprintf(stderr, "%s: socketpair: %s\n", bench_prog, strerror(errno));
		exit(1);
	}
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0) {
		fprintf(stderr, "%s: fork: %s\n", bench_prog, strerror(errno));
		exit(1);
	}
	if (pid == 0) {
		struct image im = *tmpl;
		int st;

		/* The parent restores the system; the child only measures. */
		bench_restore_forget_in_child();
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (paired)
			close(sv[0]);
		st = ksmu_child(o, &im, sh, sv[1]);
		fflush(stdout);
		fflush(stderr);
		_exit(st);
	}
	kp->pid = pid;
	kp->sh = sh;
	kp->sock = sv[0];
	kp->ready = false;
	/* Generous: about 10 times what a slow machine needs. */
	kp->deadline = bench_clock_ns(CLOCK_MONOTONIC) + 300000000000ULL + 2000000ULL * tmpl->pages;
	if (paired) {
		char ch = 0;

		close(sv[1]);
		/* 'r' once ready; end of file if the child died first. */
		kp->ready = ksmu_recv(kp, &ch, kp->deadline) && ch == 'r';
	}
}

/* One COW batch of a paired child; false if it is not there any more. */
static bool ksmu_cow_turn(struct ksmu_proc *kp)
{
	char ch = 'c';

	if (!kp->ready)
		return false;
	/* A batch of COW_BATCH writes takes milliseconds; a minute means hung. */
	if (send(kp->sock, &ch, 1, MSG_NOSIGNAL) != 1 ||
	    !ksmu_recv(kp, &ch, bench_clock_ns(CLOCK_MONOTONIC) + 60000000000ULL) || ch != 'c')
		kp->ready = false;
	return kp->ready;
}

/*
 * Let the child finish (a paired one does its remaining COW batches alone)
 * and collect its result.  A child that crashed or hung leaves ok = false
 * and a note.
 */
static void ksmu_finish(struct ksmu_proc *kp, struct result *out)
{
	struct result *sh = kp->sh;
	const char *label = sh->label;
	int st = 0;
	pid_t w;

	if (kp->sock >= 0) {
		close(kp->sock); /* end of file: no more turns */
		kp->sock = -1;
	}
	while ((w = waitpid(kp->pid, &st, WNOHANG)) == 0) {
		if (bench_clock_ns(CLOCK_MONOTONIC) > kp->deadline) {
			kill(kp->pid, SIGKILL);
			waitpid(kp->pid, &st, 0);
			snprintf(sh->note, sizeof(sh->note), "HUNG during %s: killed", sh->phase);
			sh->ok = false;
			break;
		}
		bench_sleep_ns(20000000);
	}
	if (w < 0) {
		fprintf(stderr, "%s: waitpid: %s\n", bench_prog, strerror(errno));
		exit(1);
	}
	kp->pid = 0;
	*out = *sh;
	if (w > 0 && WIFSIGNALED(st) && !strstr(out->note, "HUNG")) {
		snprintf(out->note, sizeof(out->note),
			 "CRASHED: killed by signal %d (%s) during %s", WTERMSIG(st),
			 strsignal(WTERMSIG(st)), sh->phase);
		out->ok = false;
	} else if (w > 0 && WIFEXITED(st) && WEXITSTATUS(st) && !out->note[0]) {
		snprintf(out->note, sizeof(out->note), "exit status %d during %s", WEXITSTATUS(st),
			 sh->phase);
	}
	if (out->note[0])
		fprintf(stderr, "%s: %s: %s\n", bench_prog, label, out->note);
	munmap(sh, sizeof(*sh));
}

/* ------------------------------------------------------------ kernel KSM */

/* A point on KSM's timeline. */
struct ksm_mark {
	uint64_t t_ns;
	struct bench_ksmd_cpu cpu;
	uint64_t full_scans, shared, sharing, zero;
};

static struct ksm_mark ksm_mark_now(void)
{
	struct ksm_mark m;

	m.full_scans = bench_ksm_scans();
	m.sharing = bench_ksm_read("pages_sharing");
	m.zero = bench_ksm_has_zero ? bench_ksm_read("ksm_zero_pages") : 0;
	m.shared = bench_ksm_read("pages_shared");
	m.t_ns = bench_clock_ns(CLOCK_MONOTONIC);
	m.cpu = bench_ksmd_cpu();
	return m;
}

static uint64_t ksm_cpu_delta(const struct ksm_mark *a, const struct ksm_mark *b)
{
	return bench_ksmd_schedstat ? b->cpu.sched_ns - a->cpu.sched_ns
				    : b->cpu.stat_ns - a->cpu.stat_ns;
}

struct kpf {
	int pm, kf;
};

/* KPF_KSM of the page's frame: 1, 0, or -1 if unreadable. */
static int ksm_merged(void *ctx, const unsigned char *page)
{
	const struct kpf *k = ctx;
	uint64_t e, flags;

	if (k->pm < 0 || k->kf < 0)
		return -1;
	if (pread(k->pm, &e, sizeof(e), (off_t)((uintptr_t)page / PAGE_BYTES * 8)) !=
	    (ssize_t)sizeof(e))
		return -1;
	if (!(e >> 63 & 1) || !(e & ((1ULL << 55) - 1)))
		return -1; /* not present, or no PFN shown */
	if (pread(k->kf, &flags, sizeof(flags), (off_t)((e & ((1ULL << 55) - 1)) * 8)) !=
	    (ssize_t)sizeof(flags))
		return -1;
	return (int)(flags >> KPF_KSM & 1);
}

static void ksm_timeout(const char *what, uint64_t timeout_ns)
{
	fprintf(stderr,
		"%s: kernel KSM: %s did not happen within %.0f s (full_scans=%" PRIu64
		" pages_sharing=%" PRIu64 " pages_scanned=%" PRIu64 ")\n",
		bench_prog, what, timeout_ns / 1e9, bench_ksm_read("full_scans"),
		bench_ksm_read("pages_sharing"), bench_ksm_read("pages_scanned"));
	exit(1);
}

/* One kernel KSM run on a fresh image, in this process. */
static void run_ksm(const struct opts *o, struct image *im, struct result *r,
		    struct ksmu_proc *pair)
{
	struct cow_run cw;
	uint64_t timeout = 60000000000ULL + 400000ULL * im->pages;
	struct ksm_mark m0, m, change, pass_start;
	uint64_t last_fs, last_saving;
	struct kpf kpf;
	char buf[256];
	FILE *f;

	r->ran = true;
	snprintf(r->engine, sizeof(r->engine), "ksm");
	snprintf(r->label, sizeof(r->label), "ksm");
	r->verify = r->verify_cow = 1;
	r->cow.wanted = o->cow_pages;
	r->max_map_count = bench_mmc_read();
	r->max_page_sharing = bench_ksm_read("max_page_sharing");
	r->use_zero_pages = bench_ksm_read("use_zero_pages");
	r->merge_across_nodes = bench_ksm_read("merge_across_nodes");
	r->smart_scan = bench_ksm_has_knob("smart_scan") ? bench_ksm_read("smart_scan") : 0;

	image_fill(im, r);

	/* The scan cursor at the start of a pass, pages_to_scan, sleep_millisecs 0. */
	bench_ksm_fresh_start(o->ksm_pages);
	for (unsigned i = 0; i < im->regions; i++) {
		if (madvise(im->mem + (size_t)i * im->region_pages * PAGE_BYTES,
			    im->region_pages * PAGE_BYTES, MADV_MERGEABLE)) {
			fprintf(stderr, "%s: madvise(MADV_MERGEABLE): %s\n", bench_prog,
				strerror(errno));
			exit(1);
		}
	}
	m0 = ksm_mark_now();
	bench_ksm_set("run", "1");
	change = pass_start = m0;
	last_fs = m0.full_scans;
	last_saving = m0.sharing + m0.zero;
	for (;;) {
		uint64_t fs, saving;

		bench_sleep_ns(POLL_NS);
		fs = bench_ksm_scans();
		saving = bench_ksm_read("pages_sharing");
		if (bench_ksm_has_zero)
			saving += bench_ksm_read("ksm_zero_pages");
		if (saving == last_saving && fs == last_fs) {
			if (bench_clock_ns(CLOCK_MONOTONIC) - m0.t_ns > timeout)
				ksm_timeout("convergence", timeout);
			continue;
		}
		m = ksm_mark_now();
		if (m.sharing + m.zero != last_saving) {
			change = m;
			/* A change seen just after a pass end belongs to the pass before. */
			if (m.full_scans != fs)
				change.full_scans = fs;
			last_saving = m.sharing + m.zero;
		}
		if (m.full_scans != last_fs) {
			if (r->npass < MAX_PASSES) {
				struct pass_row *row = &r->pass[r->npass++];

				row->scans = m.full_scans - m0.full_scans;
				row->wall_ns = m.t_ns - pass_start.t_ns;
				row->cpu_ns = ksm_cpu_delta(&pass_start, &m);
				row->alt_ns = m.cpu.stat_ns - pass_start.cpu.stat_ns;
				row->shared = m.shared;
				row->sharing = m.sharing;
				row->zero = m.zero;
				printf("  ksm full_scans +%" PRIu64 ": %.3f s wall, "
				       "%.3f s ksmd cpu, "
				       "pages_shared %" PRIu64 ", pages_sharing %" PRIu64 "\n",
				       m.full_scans - m0.full_scans, row->wall_ns / 1e9,
				       row->cpu_ns / 1e9, m.shared, m.sharing);
			}
			pass_start = m;
			last_fs = m.full_scans;
		}
		/* Converged: two whole passes ended after the last change. */
		if (m.full_scans >= m0.full_scans + 2 && m.full_scans >= change.full_scans + 3)
			break;
		if (m.t_ns - m0.t_ns > timeout)
			ksm_timeout("convergence", timeout);
	}
	r->converged = true;
	/* The first pass at whose end the saving was final. */
	r->passes = change.t_ns == m0.t_ns ? 0 : (unsigned)(change.full_scans - m0.full_scans + 1);
	for (unsigned i = 0; change.t_ns != m0.t_ns && i < r->npass; i++) {
		if (r->pass[i].sharing + r->pass[i].zero == last_saving) {
			r->passes = (unsigned)r->pass[i].scans;
			break;
		}
	}
	r->passes_run = (unsigned)(m.full_scans - m0.full_scans);
	r->final_wall_ns = change.t_ns - m0.t_ns;
	r->final_cpu_ns = ksm_cpu_delta(&m0, &change);
	r->final_alt_ns = change.cpu.stat_ns - m0.cpu.stat_ns;
	r->conv_wall_ns = m.t_ns - m0.t_ns;
	r->conv_cpu_ns = ksm_cpu_delta(&m0, &m);
	r->conv_alt_ns = m.cpu.stat_ns - m0.cpu.stat_ns;
	r->pages_shared = bench_ksm_read("pages_shared");
	r->pages_sharing = bench_ksm_read("pages_sharing");
	r->pages_unshared = bench_ksm_read("pages_unshared");
	r->ksm_zero_pages = bench_ksm_has_zero ? bench_ksm_read("ksm_zero_pages") : 0;
	r->stable_node_chains = bench_ksm_read("stable_node_chains");
	r->general_profit = bench_ksm_read_s64("general_profit");
	f = fopen("/proc/self/ksm_stat", "re");
	while (f && fgets(buf, sizeof(buf), f)) {
		long long v;

		if (sscanf(buf, "ksm_merging_pages %lld", &v) == 1)
			r->ksm_merging_pages = v;
		else if (sscanf(buf, "ksm_process_profit %lld", &v) == 1)
			r->ksm_process_profit = v;
	}
	if (f)
		fclose(f);

	/* Stop ksmd (run=0 keeps the merged pages); let its batch end. */
	bench_ksm_set("run", "0");
	bench_sleep_ns(50000000);
	measure_after(r);

	r->verify = image_verify(im, "ksm", "after merging", &r->bad_page, &r->bad_pages);
	kpf.pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	kpf.kf = open("/proc/kpageflags", O_RDONLY | O_CLOEXEC);
	cow_pick(im, ksm_merged, &kpf, &r->cow, &cw);
	/*
	 * Take turns with the paired ksmu child, batch by batch, who goes first
	 * alternating, so that both see the same machine conditions.
	 */
	for (size_t b = 0; cw.done < cw.n; b++) {
		bool ksmu_first = b % 2 == 0;

		if (ksmu_first && pair && ksmu_cow_turn(pair))
			r->cow_paired = true;
		cow_batch(im, &cw, COW_BATCH);
		if (!ksmu_first && pair && ksmu_cow_turn(pair))
			r->cow_paired = true;
	}
	cow_finish(im, &cw, &r->cow);
	if (kpf.pm >= 0)
		close(kpf.pm);
	if (kpf.kf >= 0)
		close(kpf.kf);
	r->verify_cow = image_verify(im, "ksm", "after the COW writes", &r->bad_page_cow,
				     &r->bad_pages);

	/* Unmerge (the write returns when done), stop, and only then unmap. */
	r->unmerge_ns = bench_ksm_unmerge();
	munmap(im->mem, im->len);
	r->ok = r->verify == 0 && r->verify_cow == 0;
}

/* ---------------------------------------------------------------- report */

static double mib_of_kb(long kb)
{
	return kb / 1024.0;
}

static const char *verify_word(int v)
{
	return v == 0 ? "ok" : v == 1 ? "not-done" : "FAIL";
}

/* A table row: @fmt formats one column from the struct result *c. */
#define TROW(name, only_ksmu, ...)                                                                 \
	do {                                                                                       \
		printf("%-28s", name);                                                             \
		for (unsigned ci_ = 0; ci_ < ncol; ci_++) {                                        \
			const struct result *c = col[ci_];                                         \
			char b_[40];                                                               \
			if (!c->ran || (only_ksmu && strcmp(c->engine, "ksmu")))                  \
				snprintf(b_, sizeof(b_), "-");                                     \
			else                                                                       \
				snprintf(b_, sizeof(b_), __VA_ARGS__);                             \
			printf(" %18s", b_);                                                       \
		}                                                                                  \
		printf("\n");                                                                      \
	} while (0)

/*
 * The saving as measured rather than as the engine accounts it: Pss saved
 * (ksmu's own metadata is process memory, in Pss) minus the kernel memory
 * of the VMAs added; for KSM minus its metadata (kernel memory, not in Pss),
 * which only its general_profit tells.
 */
static int64_t measured_net(const struct result *r)
{
	int64_t net = (int64_t)(r->pss_before_kb - r->pss_after_kb) * 1024;

	if (r->slab_before >= 0 && r->slab_after >= 0)
		net -= r->slab_after - r->slab_before;
	if (!strcmp(r->engine, "ksm"))
		net -= (int64_t)((r->pages_sharing + r->ksm_zero_pages) * PAGE_BYTES) -
		       r->general_profit;
	return net;
}

/* The VMA slab growth in MiB, or n/a; valid until the next call. */
static const char *slab_text(const struct result *r)
{
	static char buf[32];

	if (r->slab_before < 0 || r->slab_after < 0)
		return "n/a";
	snprintf(buf, sizeof(buf), "%.1f", (r->slab_after - r->slab_before) / 1048576.0);
	return buf;
}

static void print_table(const struct result *const *col, unsigned ncol)
{
	printf("\n%-28s", "");
	for (unsigned i = 0; i < ncol; i++)
		printf(" %18s", col[i]->label);
	printf("\n");
	TROW("vm.max_map_count", 0, "%" PRId64, c->max_map_count);
	TROW("passes to final saving", 0, "%u", c->passes);
	TROW("passes run (converged)", 0, "%u%s", c->passes_run, c->converged ? "" : " (no)");
	TROW("time to final, s", 0, "%.3f", c->final_wall_ns / 1e9);
	TROW("CPU to final, s", 0, "%.3f", c->final_cpu_ns / 1e9);
	TROW("  cross-check CPU, s", 0, "%.3f", c->final_alt_ns / 1e9);
	TROW("time to converged, s", 0, "%.3f", c->conv_wall_ns / 1e9);
	TROW("CPU to converged, s", 0, "%.3f", c->conv_cpu_ns / 1e9);
	TROW("pages_shared", 0, "%" PRIu64, c->pages_shared);
	TROW("pages_sharing", 0, "%" PRIu64, c->pages_sharing);
	TROW("ksm_zero_pages", 0, "%" PRIu64, c->ksm_zero_pages);
	TROW("pages_unshared", 0, "%" PRIu64, c->pages_unshared);
	TROW("stable_node_chains", 0, "%" PRIu64, c->stable_node_chains);
	TROW("general_profit, MiB", 0, "%.1f", c->general_profit / 1048576.0);
	TROW("est_pages_sharing (found)", 1, "%" PRIu64, c->est_sharing);
	TROW("merges", 1, "%" PRIu64, c->merges);
	TROW("merge_vma_limited", 1, "%" PRIu64, c->merge_vma_limited);
	TROW("merge busy/changed/failed", 1, "%" PRIu64 "/%" PRIu64 "/%" PRIu64, c->merge_busy,
	     c->merge_changed, c->merge_failed);
	TROW("merge windows open, s", 1, "%.3f", c->window_ns / 1e9);
	TROW("  per merge / longest, us", 1, "%.1f / %.0f",
	     c->merges ? c->window_ns / 1e3 / (double)c->merges : 0.0, c->window_ns_max / 1e3);
	TROW("vma_limit", 1, "%" PRIu64, c->vma_limit);
	TROW("store_vmas", 1, "%" PRIu64, c->store_vmas);
	TROW("vmas_added", 1, "%" PRIu64, c->vmas_added);
	TROW("store_pages", 1, "%" PRIu64, c->store_pages);
	TROW("metadata, MiB", 1, "%.1f", c->metadata_bytes / 1048576.0);
	TROW("process VMAs before/after", 0, "%" PRIu64 "/%" PRIu64, c->maps_before,
	     c->maps_after);
	TROW("Pss before, MiB", 0, "%.1f", mib_of_kb(c->pss_before_kb));
	TROW("Pss after, MiB", 0, "%.1f", mib_of_kb(c->pss_after_kb));
	TROW("  of which Pss_Shmem, MiB", 0, "%.1f", mib_of_kb(c->pss_shmem_after_kb));
	TROW("Pss saved, MiB", 0, "%.1f", mib_of_kb(c->pss_before_kb - c->pss_after_kb));
	TROW("VMA slab added, MiB", 0, "%s", slab_text(c));
	TROW("net saving measured, MiB", 0, "%.1f", measured_net(c) / 1048576.0);
	TROW("memory unchanged", 0, "%s/%s", verify_word(c->verify), verify_word(c->verify_cow));
	TROW("COW pages written", 0, "%zu/%zu%s%s", c->cow.picked, c->cow.wanted,
	     c->cow.unchecked ? "?" : "", c->cow_paired ? " paired" : "");
	TROW("COW p50, us", 0, "%.2f", c->cow.p50 / 1e3);
	TROW("COW p90, us", 0, "%.2f", c->cow.p90 / 1e3);
	TROW("COW p99, us", 0, "%.2f", c->cow.p99 / 1e3);
	TROW("COW max, us", 0, "%.0f", c->cow.max / 1e3);
	TROW("COW mean, us", 0, "%.2f", c->cow.mean / 1e3);
	TROW("COW writes > 1 ms", 0, "%zu", c->cow.slow);
	TROW("clock_gettime pair, ns", 0, "%" PRIu64, c->cow.bench_clock_ns);
	TROW("cow_breaks seen next pass", 1, "%" PRIu64, c->cow_breaks);
	TROW("left after munmap", 1, "%" PRIu64 " rg, %" PRIu64 " pg", c->regions_left,
	     c->store_pages_left);
	printf("(memory unchanged: after merging / after the COW writes and write-back;"
	       " left after munmap: ksmu regions and store pages 5 s after munmap;\n"
	       " VMA slab: vm_area_struct, maple_node, anon_vma, anon_vma_chain, system-wide;\n"
	       " net saving measured: Pss saved minus VMA slab added, for KSM also minus its"
	       " metadata as general_profit counts it;\n"
	       " paired: COW writes taken in turns with the other engine, %d pages at a time)\n",
	       COW_BATCH);
}

static void print_result_line(const struct result *r, const struct opts *o, size_t pages,
			      int expected)
{
	if (!r->ran)
		return;
	printf("RESULT bench=merge engine=%s run=%s max_map_count=%" PRId64 " regions=%u"
	       " mib=%" PRIu64 " run_len=%u pages=%zu ok=%d passes=%u passes_run=%u converged=%d"
	       " final_s=%.3f final_cpu_s=%.3f"
	       " final_alt_cpu_s=%.3f conv_s=%.3f conv_cpu_s=%.3f pages_shared=%" PRIu64
	       " pages_sharing=%" PRIu64 " ksm_zero_pages=%" PRIu64 " pages_unshared=%" PRIu64
	       " general_profit=%" PRId64 " pss_before_kib=%ld pss_after_kib=%ld"
	       " vmas_before=%" PRIu64 " vmas_after=%" PRIu64 " verify=%s verify_cow=%s"
	       " cow_pages=%zu cow_p50_ns=%" PRIu64 " cow_p99_ns=%" PRIu64 " cow_mean_ns=%.0f"
	       " expected=%d vma_slab_added=%" PRId64 " net_measured=%" PRId64 " dry_run=%d"
	       " cow_paired=%d",
	       r->engine, r->label, r->max_map_count, o->regions, o->mib, o->run_len, pages,
	       r->ok ? 1 : 0,
	       r->passes, r->passes_run, r->converged ? 1 : 0, r->final_wall_ns / 1e9,
	       r->final_cpu_ns / 1e9, r->final_alt_ns / 1e9, r->conv_wall_ns / 1e9,
	       r->conv_cpu_ns / 1e9, r->pages_shared, r->pages_sharing, r->ksm_zero_pages,
	       r->pages_unshared, r->general_profit, r->pss_before_kb, r->pss_after_kb,
	       r->maps_before, r->maps_after, verify_word(r->verify), verify_word(r->verify_cow),
	       r->cow.picked, r->cow.p50, r->cow.p99, r->cow.mean, expected,
	       r->slab_before < 0 || r->slab_after < 0 ? 0 : r->slab_after - r->slab_before,
	       measured_net(r), r->dry ? 1 : 0, r->cow_paired ? 1 : 0);
	if (!strcmp(r->engine, "ksmu"))
		printf(" merges=%" PRIu64 " merge_vma_limited=%" PRIu64 " merge_failed=%" PRIu64
		       " store_vmas=%" PRIu64 " vmas_added=%" PRIu64 " vma_limit=%" PRIu64
		       " est_pages_sharing=%" PRIu64 " metadata_bytes=%" PRIu64
		       " cow_breaks=%" PRIu64 " store_pages_left=%" PRIu64
		       " window_s=%.3f window_max_us=%.0f",
		       r->merges, r->merge_vma_limited, r->merge_failed, r->store_vmas,
		       r->vmas_added, r->vma_limit, r->est_sharing, r->metadata_bytes,
		       r->cow_breaks, r->store_pages_left, r->window_ns / 1e9,
		       r->window_ns_max / 1e3);
	else
		printf(" ksm_merging_pages=%" PRId64 " ksm_process_profit=%" PRId64
		       " unmerge_s=%.3f",
		       r->ksm_merging_pages, r->ksm_process_profit, r->unmerge_ns / 1e9);
	printf("\n");
}

/* Do the counters match the ideal answer under the run's knobs? */
static int matches_expect(const struct image *im, const struct result *r)
{
	struct ksmu_datagen_expect ex;

	if (!r->ran || ksmu_datagen_expect(&im->spec, (unsigned long)r->max_page_sharing,
					   r->use_zero_pages != 0, &ex))
		return 0;
	return r->pages_shared == ex.pages_shared && r->pages_sharing == ex.pages_sharing &&
	       r->ksm_zero_pages == ex.zero_pages;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "regions", required_argument, NULL, 'r' },
		{ "mib", required_argument, NULL, 'm' },
		{ "quick", no_argument, NULL, 'q' },
		{ "engine", required_argument, NULL, 'e' },
		{ "max-map-count", required_argument, NULL, 'M' },
		{ "no-default-limit", no_argument, NULL, 'D' },
		{ "no-detect-run", no_argument, NULL, 'N' },
		{ "cow-pages", required_argument, NULL, 'c' },
		{ "ksm-pages", required_argument, NULL, 'k' },
		{ "max-passes", required_argument, NULL, 'p' },
		{ "templates", required_argument, NULL, 't' },
		{ "seed", required_argument, NULL, 's' },
		{ "run-len", required_argument, NULL, 'L' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct opts o = { .regions = 4, .mib = 256, .templates = 1024, .seed = 1,
			  .cow_pages = 2000, .engine = BENCH_ENG_BOTH, .ksm_pages = 20000,
			  .max_map_count = 1048576, .default_run = true, .detect_run = true,
			  .max_passes = 10 };
	static struct result res_detect, res_default, res_raised, res_ksm;
	const struct result *col[4], *ku = NULL;
	struct ksmu_proc kp = { .sock = -1 };
	struct result *pending = NULL;
	struct ksmu_datagen_truth truth;
	struct ksmu_datagen_expect ex;
	struct image im;
	bool engine_set = false, mmc_set = false, ksm_ok = false;
	char why[200] = "", mmc_why[160] = "";
	unsigned ncol = 0;
	int c, ret, status = 0;
	int64_t mmc_now;

	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'r':
			o.regions = (unsigned)bench_parse_u64("--regions", optarg, 1, 4096);
			break;
		case 'm':
			o.mib = bench_parse_u64("--mib", optarg, 1, 1 << 20);
			break;
		case 'q':
			o.quick = true;
			break;
		case 'e':
			engine_set = true;
			o.engine = bench_parse_engine(optarg);
			break;
		case 'M':
			o.max_map_count = bench_parse_u64("--max-map-count", optarg, 0, INT32_MAX);
			mmc_set = true;
			break;
		case 'D':
			o.default_run = false;
			break;
		case 'N':
			o.detect_run = false;
			break;
		case 'c':
			o.cow_pages = bench_parse_u64("--cow-pages", optarg, 1, 1 << 20);
			break;
		case 'k':
			o.ksm_pages = bench_parse_u64("--ksm-pages", optarg, 1, 1000000);
			break;
		case 'p':
			o.max_passes =
			    (unsigned)bench_parse_u64("--max-passes", optarg, 1, MAX_PASSES);
			break;
		case 't':
			o.templates = (unsigned)bench_parse_u64("--templates", optarg, 1, 1u << 31);
			break;
		case 's':
			o.seed = bench_parse_u64("--seed", optarg, 0, UINT64_MAX);
			break;
		case 'L':
			o.run_len = (unsigned)bench_parse_u64("--run-len", optarg, 0, 1u << 20);
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			bench_usage_error();
		}
	}
	bench_no_operands(argc, argv, optind);
	if (o.quick) {
		if ((engine_set && (o.engine & BENCH_ENG_KSM)) || mmc_set || !o.default_run) {
			fprintf(stderr, "%s: --quick runs ksmu at the current limit only; drop "
					"--engine, --max-map-count and --no-default-limit\n",
				bench_prog);
			return 2;
		}
		o.regions = 4;
		o.mib = 16;
		o.cow_pages = 200;
		o.engine = BENCH_ENG_KSMU;
		o.max_map_count = 0;
		o.detect_run = false;
	}
	if (!(o.engine & BENCH_ENG_KSMU)) {
		o.default_run = false;
		o.detect_run = false;
		o.max_map_count = 0;
	}
	if (!o.default_run && !o.max_map_count && (o.engine & BENCH_ENG_KSMU)) {
		fprintf(stderr,
			"%s: --no-default-limit with --max-map-count 0 leaves no ksmu run\n",
			bench_prog);
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);

	memset(&im, 0, sizeof(im));
	im.regions = o.regions;
	im.region_pages = (size_t)(o.mib << 20) / PAGE_BYTES;
	im.pages = im.region_pages * o.regions;
	im.len = im.pages * PAGE_BYTES;
	im.spec = (struct ksmu_datagen_spec){ .pages = im.pages, .templates = o.templates,
					      .dup_frac = 0.5, .zero_frac = 0.1,
					      .run_len = o.run_len, .seed = o.seed };
	if (o.cow_pages > im.pages)
		o.cow_pages = im.pages;
	ret = ksmu_datagen_truth(&im.spec, &truth);
	if (ret) {
		fprintf(stderr, "%s: bad workload: %s\n", bench_prog, strerror(-ret));
		return 1;
	}

	/* Decide what runs, and arm the restore before anything is changed. */
	bench_restore_install();
	if (o.engine & BENCH_ENG_KSM) {
		ksm_ok = bench_ksm_usable(why, sizeof(why));
		if (!ksm_ok && o.engine == BENCH_ENG_KSM) {
			printf("SKIP: kernel KSM: %s\n", why);
			return 77;
		}
	}
	mmc_now = bench_mmc_read();
	if (o.max_map_count && access(BENCH_MMC_PATH, W_OK)) {
		snprintf(mmc_why, sizeof(mmc_why), "%s is not writable (%s; needs root)",
			 BENCH_MMC_PATH, strerror(errno));
		o.max_map_count = 0;
		o.default_run = true;
	}

	printf("bench-merge: %u regions x %" PRIu64 " MiB = %zu pages, one datagen image "
	       "(seed %" PRIu64 "): %u templates, 50 %% copies %s, 10 %% zero, "
	       "40 %% unique; THP %s\n",
	       o.regions, o.mib, im.pages, o.seed, o.templates,
	       o.run_len > 1 ? "in runs" : "scattered", thp_mode());
	printf("truth: %zu copies of %zu templates (%zu shared), %zu zero, %zu unique; ideal "
	       "pages_sharing %zu\n",
	       truth.dup_pages, truth.templates_present, truth.templates_shared, truth.zero_pages,
	       truth.unique_pages, truth.pages_sharing);
	printf("vm.max_map_count %" PRId64 "; ksmu runs: %s%s%s; kernel KSM: %s\n", mmc_now,
	       o.default_run ? "at the current limit" : "",
	       o.default_run && o.max_map_count ? ", then " : "",
	       o.max_map_count ? "with vm.max_map_count raised" : "",
	       !(o.engine & BENCH_ENG_KSM) ? "not measured" : ksm_ok ? "measured" : why);
	if (*mmc_why)
		printf("note: no raised run: %s\n", mmc_why);

	/*
	 * The ksmu run the ratios use (raised if there is one) is paired with
	 * KSM for the COW latency: its child waits, merged, until KSM has
	 * merged too, and the two take turns writing (run_ksm()).
	 */
	if (o.detect_run) {
		printf("\nksmu, dry_run=1 (detection only, nothing merged):\n");
		ksmu_start(&o, &im, "ksmu-detect", true, false, &kp);
		ksmu_finish(&kp, &res_detect);
		col[ncol++] = &res_detect;
		if (!res_detect.ok)
			status = 1;
	}
	if (o.default_run) {
		char label[32];
		bool paired = ksm_ok && !o.max_map_count;

		snprintf(label, sizeof(label), "ksmu@%" PRId64, mmc_now);
		printf("\nksmu, vm.max_map_count %" PRId64 " (as found):\n", mmc_now);
		ksmu_start(&o, &im, label, false, paired, &kp);
		if (paired) {
			pending = &res_default;
		} else {
			ksmu_finish(&kp, &res_default);
			if (!res_default.ok)
				status = 1;
		}
		col[ncol++] = &res_default;
		ku = &res_default;
	}
	if (o.max_map_count) {
		char label[32];

		snprintf(label, sizeof(label), "ksmu@%" PRIu64, o.max_map_count);
		ret = bench_mmc_raise(o.max_map_count);
		if (ret) {
			fprintf(stderr, "%s: cannot raise %s: %s\n", bench_prog, BENCH_MMC_PATH,
				strerror(-ret));
			status = 1;
		} else {
			printf("\nksmu, vm.max_map_count raised to %" PRIu64 ":\n",
			       o.max_map_count);
			ksmu_start(&o, &im, label, false, ksm_ok, &kp);
			if (ksm_ok) {
				pending = &res_raised;
				printf("(vm.max_map_count stays raised until this ksmu process, "
				       "which takes turns with KSM for the COW latency, has "
				       "ended)\n");
			} else {
				ksmu_finish(&kp, &res_raised);
				bench_restore();
				printf("vm.max_map_count back to %" PRId64 "\n", bench_mmc_read());
				if (!res_raised.ok)
					status = 1;
			}
			col[ncol++] = &res_raised;
			ku = &res_raised;
		}
	}

	if (ksm_ok) {
		struct bench_ksm_knobs kn = { .max_page_sharing = DEF_MAX_PAGE_SHARING,
					      .use_zero_pages = DEF_USE_ZERO_PAGES,
					      .merge_across_nodes = DEF_MERGE_ACROSS_NODES,
					      .smart_scan = DEF_SMART_SCAN };
		const struct result *k = pending ? kp.sh : ku;

		if (k && k->max_page_sharing) {
			kn.max_page_sharing = k->max_page_sharing;
			kn.use_zero_pages = k->use_zero_pages;
			kn.merge_across_nodes = k->merge_across_nodes;
			kn.smart_scan = k->smart_scan;
		}
		printf("\nkernel KSM, pages_to_scan %" PRIu64 ", sleep_millisecs 0:\n",
		       o.ksm_pages);
		bench_ksm_setup(&kn);
		run_ksm(&o, &im, &res_ksm, pending ? &kp : NULL);
		if (pending) {
			ksmu_finish(&kp, pending);
			if (!pending->ok)
				status = 1;
		}
		bench_restore();
		printf("kernel KSM restored: run %" PRIu64 ", pages_to_scan %" PRIu64
		       ", sleep_millisecs %" PRIu64 "; vm.max_map_count %" PRId64
		       "; ksmd pid %d, CPU from %s\n",
		       bench_ksm_read("run"), bench_ksm_read("pages_to_scan"),
		       bench_ksm_read("sleep_millisecs"), bench_mmc_read(), bench_ksmd_pid,
		       bench_ksmd_schedstat ? "schedstat" : "stat");
		col[ncol++] = &res_ksm;
		if (!res_ksm.ok)
			status = 1;
	}
	if (ku && ku->ran && !ku->merging && !ku->note[0] && ku->merges == 0) {
		printf("note: ksmu did not merge here (merging=0: needs UFFDIO_MOVE, PAGEMAP_SCAN, "
		       "async WP and a uffd without USER_MODE_ONLY); it only detected\n");
		if (o.quick) {
			printf("SKIP: ksmu cannot merge on this machine\n");
			return 77;
		}
	}

	/* ------------------------------------------------------ report */
	if (ku && ksmu_datagen_expect(&im.spec, (unsigned long)(ku->max_page_sharing ?
								 ku->max_page_sharing : 256),
				      ku->use_zero_pages != 0, &ex) == 0)
		printf("\nexpected once all is merged (max_page_sharing %" PRIu64
		       ", use_zero_pages %" PRIu64 "): pages_shared %zu, pages_sharing %zu, "
		       "ksm_zero_pages %zu\n",
		       ku->max_page_sharing, ku->use_zero_pages, ex.pages_shared, ex.pages_sharing,
		       ex.zero_pages);
	print_table(col, ncol);
	printf("\n");
	print_result_line(&res_detect, &o, im.pages, 0);
	print_result_line(&res_default, &o, im.pages, matches_expect(&im, &res_default));
	print_result_line(&res_raised, &o, im.pages, matches_expect(&im, &res_raised));
	print_result_line(&res_ksm, &o, im.pages, matches_expect(&im, &res_ksm));

	if (ku && ku->ran && res_ksm.ran && ku->final_cpu_ns && res_ksm.final_cpu_ns &&
	    res_ksm.general_profit && ku->cow.p50 && res_ksm.cow.p50) {
		double cpu = (double)res_ksm.final_cpu_ns / (double)ku->final_cpu_ns;
		double cpu_conv = (double)res_ksm.conv_cpu_ns / (double)ku->conv_cpu_ns;
		/* ksmu's process CPU: also its other threads (the tracker's reader) */
		double cpu_proc = ku->final_alt_ns
					  ? (double)res_ksm.final_cpu_ns / (double)ku->final_alt_ns
					  : cpu;
		double saving = (double)ku->general_profit / (double)res_ksm.general_profit;
		double measured = (double)measured_net(ku) / (double)measured_net(&res_ksm);
		double pss = (double)(ku->pss_before_kb - ku->pss_after_kb) /
			     (double)(res_ksm.pss_before_kb - res_ksm.pss_after_kb);
		double cow50 = (double)ku->cow.p50 / (double)res_ksm.cow.p50;
		double cow99 = (double)ku->cow.p99 / (double)res_ksm.cow.p99;
		double wall = (double)res_ksm.final_wall_ns / (double)ku->final_wall_ns;

		printf("\nksmu (%s) against kernel KSM, and the targets:\n", ku->label);
		printf("  passes to final saving  ksmu %u, KSM %u        target: ksmu 1 pass: %s\n",
		       ku->passes, res_ksm.passes, ku->passes == 1 ? "MET" : "missed");
		printf("  CPU ratio KSM/ksmu      %.2f (to converged %.2f) by ksmu's scan_cpu_ns; "
		       "%.2f by its process CPU (all threads)  target >= 1: %s\n",
		       cpu, cpu_conv, cpu_proc, cpu >= 1.0 && cpu_proc >= 1.0 ? "MET" : "missed");
		printf("  saving ksmu/KSM         %.3f (general_profit; by Pss %.3f; measured net "
		       "%.3f)  target >= 0.97: %s\n",
		       saving, pss, measured, saving >= 0.97 ? "MET" : "missed");
		printf("  COW p50 ksmu/KSM        %.2f (p99 %.2f)  target <= 1.2: %s\n", cow50,
		       cow99, cow50 <= 1.2 ? "MET" : "missed");
		printf("  wall time KSM/ksmu      %.2f (to final saving)\n", wall);
		if (res_detect.ran && res_detect.ok && ku->merges)
			printf("  ksmu CPU split          detection %.3f s (dry_run pass 1), "
			       "merging %.3f s = %.1f us per merge (process CPU: %.1f us)\n",
			       res_detect.pass[0].cpu_ns / 1e9,
			       (ku->final_cpu_ns - res_detect.pass[0].cpu_ns) / 1e9,
			       (double)(ku->final_cpu_ns - res_detect.pass[0].cpu_ns) / 1e3 /
				   (double)ku->merges,
			       ((double)ku->final_alt_ns - (double)res_detect.pass[0].alt_ns) / 1e3 /
				   (double)ku->merges);
		if (ku->merges)
			printf("  ksmu merge windows      open %.3f s in all, %.1f us per merge "
			       "(wall time, window opened to closed), longest %.0f us\n",
			       ku->window_ns / 1e9, ku->window_ns / 1e3 / (double)ku->merges,
			       ku->window_ns_max / 1e3);
		printf("RESULT bench=merge ratio regions=%u mib=%" PRIu64 " run_len=%u"
		       " ksmu_run=%s cpu_ratio=%.3f cpu_conv_ratio=%.3f"
		       " cpu_process_ratio=%.3f wall_ratio=%.3f saving_ratio=%.4f"
		       " pss_saving_ratio=%.4f measured_saving_ratio=%.4f cow_p50_ratio=%.3f"
		       " cow_p99_ratio=%.3f ksmu_passes=%u ksm_passes=%u target_one_pass=%d"
		       " target_cpu=%d target_saving=%d target_cow=%d\n",
		       o.regions, o.mib, o.run_len, ku->label, cpu, cpu_conv, cpu_proc, wall, saving,
		       pss, measured, cow50, cow99,
		       ku->passes, res_ksm.passes, ku->passes == 1, cpu >= 1.0 && cpu_proc >= 1.0,
		       saving >= 0.97, cow50 <= 1.2);
	} else {
		printf("RESULT bench=merge ratio ksmu_run=%s cpu_ratio=na saving_ratio=na "
		       "cow_p50_ratio=na\n",
		       ku ? ku->label : "none");
	}
	return status;
}
