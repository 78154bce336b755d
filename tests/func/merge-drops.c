/* SPDX-License-Identifier: MIT */
/* Description: MADV_DONTNEED of merged memory is never lost, and a partial
 * ksmu_unregister() keeps the records of what stays registered: the data
 * corruptions fixed in 0.2, one section each (arguments select sections:
 * "merge-drops 3 4").
 *  1. Merged pages dropped and not read before ksmu_unregister() read zeros
 *     after it (they got their old content back); dropped pages read before
 *     it read zeros (MINOR faults: minor_zero, never minor_store) and still
 *     do; the others keep their content on private pages; no store mapping
 *     is left, the store pages are freed.
 *  2. ksmu_unregister() of the middle of a merged region: the parts outside
 *     the cut stay merged (PFNs) and counted (pages_sharing, pages_shared);
 *     a second unregister over one of them leaves no store mapping behind
 *     and gives its pages private copies; registered again it merges again
 *     (no merge failure), and a drop there reads zeros, as in the part never
 *     cut; unregistering all leaves no store mapping, no store page (none
 *     leaked), and the content (zeros where dropped).
 *  3. MADV_DONTNEED while a merge window on the page is open: a thread
 *     follows the scanner (two passes over a fresh region of one content)
 *     and drops every other page the moment its window detaches it (not
 *     present in pagemap) or, if it missed that, just after (mapped from the
 *     store).  Every dropped page must read zeros, every other page its
 *     content; after a quiet pass those are all merged; after
 *     ksmu_unregister() the same holds and no store mapping is left.
 *  4. The same with every drop held off merge windows
 *     (ksmu_merge_exclude_begin()), so that it lands right after a window.
 *  5. Register, merge, unregister part, register it again, merge (all of it
 *     merged again and counted), unregister all: no store mapping in the
 *     region, content intact on private pages, every merge undone
 *     (pages_unmerged), the store empty, and MADV_DONTNEED reads zeros.
 * Merges are proved by equal PFNs in /proc/self/pagemap.  Sections 3 and 4
 * are races: the scanning thread and the dropper are put on two CPUs; a
 * round drops half of RACE_PAGES pages (512; 256 under sanitizers), two
 * rounds (KSMU_DROPS_ROUNDS) and up to 8 while a busy machine kept the
 * drops short.  The pre-fix library lost most of those drops.  Skips (77)
 * where the engine cannot merge or PFNs are hidden (not root). */
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "ksmu.h"
#include "merge.h"
#include "t_mem.h"
#include "test.h"

#define PG T_PG
#define NCONT 4 /* sections 1, 2, 5: page i holds content seed + i % NCONT */
#define RACE_PAGES ((size_t)(T_SANITIZED ? 256 : 512))
#define RACE_ROUNDS 2
#define RACE_MAX_ROUNDS 8
#define RACE_BUDGET (T_SANITIZED ? 10.0 : 4.0) /* seconds for more rounds */
#define MAXDIAG 5
#define LOOKAHEAD 8 /* a page is passed over when one of the next 8 is merged */

static struct ksmu_stats st(void)
{
	struct ksmu_stats s;

	CHECK_RET("stats", ksmu_stats(&s), 0);
	return s;
}

static uint64_t d(uint64_t now, uint64_t before)
{
	return now - before;
}

/*
 * minor_zero grown by at least @want since @base, waiting up to 2 s: the
 * reader counts a fault after answering it, so the faulting thread may look
 * before the count.  Return: the growth seen.
 */
static uint64_t minor_zero_since(uint64_t base, uint64_t want)
{
	struct ksmu_stats s;
	int i;

	for (i = 0; i < 2000; i++) {
		if (ksmu_stats(&s))
			return 0;
		if (d(s.minor_zero, base) >= want)
			break;
		usleep(1000);
	}
	return d(s.minor_zero, base);
}

static void fill(char *m, size_t n, uint64_t seed)
{
	size_t i;

	for (i = 0; i < n; i++)
		t_fill_page(m + i * PG, seed + i % NCONT);
}

/* Pages of [from, to) that hold their content (seed + i % NCONT). */
static size_t with_content(const char *m, size_t from, size_t to, uint64_t seed)
{
	unsigned char want[PG];
	size_t i, n = 0;

	for (i = from; i < to; i++) {
		t_fill_page(want, seed + i % NCONT);
		n += !memcmp(m + i * PG, want, PG);
	}
	return n;
}

static size_t nonzero(const char *m, size_t from, size_t to)
{
	size_t i, n = 0;

	for (i = from; i < to; i++)
		n += !t_page_is_zero(m + i * PG);
	return n;
}

/* Pages of [from, to) that map the physical page @pfn[i % NCONT]. */
static size_t merged_with(const char *m, size_t from, size_t to, const uint64_t *pfn)
{
	size_t i, n = 0;

	for (i = from; i < to; i++) {
		uint64_t p = t_pfn_of(m + i * PG);

		n += p && p == pfn[i % NCONT];
	}
	return n;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/*
 * Distinct physical pages mapped by [from, to), leaving out absent pages and
 * page i where @skip (if not NULL) has skip[i] set.
 */
static size_t distinct_pfns_but(const char *m, size_t from, size_t to, const unsigned char *skip)
{
	uint64_t *p = calloc(to - from, sizeof(*p));
	size_t i, n = 0, k = 0;

	if (!p)
		return 0;
	for (i = from; i < to; i++) {
		if (skip && skip[i])
			continue;
		p[k] = t_pfn_of(m + i * PG);
		k += p[k] != 0;
	}
	qsort(p, k, sizeof(*p), cmp_u64);
	for (i = 0; i < k; i++)
		n += !i || p[i] != p[i - 1];
	free(p);
	return n;
}

static size_t distinct_pfns(const char *m, size_t from, size_t to)
{
	return distinct_pfns_but(m, from, to, NULL);
}

/* Store (memfd) mappings intersecting [p, p + len). */
static int store_vmas(const void *p, size_t len)
{
	int memfd = 0;

	t_maps_in(p, len, &memfd);
	return memfd;
}

static void record_pfns(const char *m, uint64_t *pfn)
{
	size_t i;

	for (i = 0; i < NCONT; i++)
		pfn[i] = t_pfn_of(m + i * PG);
}

/* ------------------------------------------------------------------ 1 */

static void sec_drop_then_unregister(void)
{
	enum { N = 64 };
	const uint64_t seed = 1000;
	char *m = t_map_anon(N);
	struct ksmu_stats s0, s1, s2, s3;
	uint64_t pfn[NCONT];
	size_t nz, old;

	printf("-- 1: merged pages dropped, not read, then ksmu_unregister()\n");
	fill(m, N, seed);
	s0 = st();
	CHECK_RET("register", ksmu_register(m, N * PG), 0);
	ksmu_scan_full();
	ksmu_scan_full();
	s1 = st();
	record_pfns(m, pfn);
	CHECK("every page maps its content's physical page", merged_with(m, 0, N, pfn) == N);
	CHECK("the contents stay distinct", distinct_pfns(m, 0, NCONT) == NCONT);
	CHECK("pages_sharing", d(s1.pages_sharing, s0.pages_sharing) == N - NCONT);
	CHECK("store pages", d(s1.store_pages, s0.store_pages) == NCONT);

	CHECK_RET("drop pages 0-31", madvise(m, 32 * PG, MADV_DONTNEED), 0);
	CHECK("dropped pages 16-31 read zeros while registered", nonzero(m, 16, 32) == 0);
	/* one MINOR fault per page at least (TSan: some answered on a retry) */
	CHECK("answered as zeros by MINOR faults", minor_zero_since(s1.minor_zero, 16) >= 16);
	s2 = st();
	CHECK("none answered with the store page", s2.minor_store == s1.minor_store);

	CHECK_RET("unregister", ksmu_unregister(m, N * PG), 0);
	s3 = st();
	nz = nonzero(m, 0, 16);
	old = with_content(m, 0, 16, seed);
	printf("   after unregister: %zu of the 16 dropped, unread pages not zero (%zu hold "
	       "their content from before the drop); %d store mappings; minor_zero +%" PRIu64 "\n",
	       nz, old, store_vmas(m, N * PG), d(s3.minor_zero, s1.minor_zero));
	CHECK("dropped pages 0-15, never read, read zeros after unregister", nz == 0);
	CHECK("dropped pages 16-31, read before, still zeros", nonzero(m, 16, 32) == 0);
	CHECK("pages 32-63 keep their content", with_content(m, 32, N, seed) == N - 32);
	CHECK("pages 32-63 have private copies", distinct_pfns(m, 32, N) == N - 32);
	CHECK("no store mapping left in the region", store_vmas(m, N * PG) == 0);
	CHECK("store pages freed", s3.store_pages == s0.store_pages);
	CHECK("nothing merged", s3.pages_sharing == s0.pages_sharing);
	memset(m + 3 * PG, 0x5a, PG);
	CHECK("a dropped page takes writes, its neighbours stay zeros",
	      m[3 * PG + 4095] == 0x5a && nonzero(m, 4, 16) == 0);
	munmap(m, N * PG);
}

/* ------------------------------------------------------------------ 2 */

static void sec_partial_unregister(void)
{
	enum { N = 1024 };
	const uint64_t seed = 2000;
	char *m = t_map_anon(N);
	struct ksmu_stats s0, s1, s2, s3, s4, s5;
	uint64_t pfn[NCONT];
	int sv;

	printf("-- 2: partial ksmu_unregister() of a merged region\n");
	fill(m, N, seed);
	s0 = st();
	CHECK_RET("register", ksmu_register(m, N * PG), 0);
	ksmu_scan_full();
	ksmu_scan_full();
	s1 = st();
	record_pfns(m, pfn);
	CHECK("merged: every page maps its content's physical page",
	      merged_with(m, 0, N, pfn) == N);
	CHECK("merged: pages_sharing", d(s1.pages_sharing, s0.pages_sharing) == N - NCONT);

	/* cut [300, 500) out: [0, 300) and [500, 1024) stay registered */
	CHECK_RET("unregister 300-499", ksmu_unregister(m + 300 * PG, 200 * PG), 0);
	s2 = st();
	printf("   after unregistering 300-499: pages_sharing +%" PRIu64 ", pages_shared +%" PRIu64
	       ", %d store mappings in the cut\n",
	       d(s2.pages_sharing, s0.pages_sharing), d(s2.pages_shared, s0.pages_shared),
	       store_vmas(m + 300 * PG, 200 * PG));
	CHECK("the cut: no store mapping", store_vmas(m + 300 * PG, 200 * PG) == 0);
	CHECK("the cut: content", with_content(m, 300, 500, seed) == 200);
	CHECK("the cut: private copies", distinct_pfns(m, 300, 500) == 200);
	CHECK("the cut: unmerged", d(s2.pages_unmerged, s1.pages_unmerged) == 200);
	CHECK("outside the cut: still merged",
	      merged_with(m, 0, 300, pfn) == 300 && merged_with(m, 500, N, pfn) == N - 500);
	CHECK("outside the cut: still counted (pages_sharing)",
	      d(s2.pages_sharing, s0.pages_sharing) == N - 200 - NCONT);
	CHECK("outside the cut: still counted (pages_shared)",
	      d(s2.pages_shared, s0.pages_shared) == NCONT);
	CHECK("store pages kept", s2.store_pages == s1.store_pages);

	/* a second cut over a part left registered and the first cut */
	CHECK_RET("unregister 0-399", ksmu_unregister(m, 400 * PG), 0);
	s3 = st();
	sv = store_vmas(m, 400 * PG);
	printf("   after unregistering 0-399: %d store mappings left there, pages_sharing +%" PRIu64
	       "\n",
	       sv, d(s3.pages_sharing, s0.pages_sharing));
	CHECK("0-399: no store mapping left", sv == 0);
	CHECK("0-399: content", with_content(m, 0, 400, seed) == 400);
	CHECK("0-399: private copies", distinct_pfns(m, 0, 400) == 400);
	CHECK("0-299: unmerged", d(s3.pages_unmerged, s2.pages_unmerged) == 300);
	CHECK("500-1023: still merged and counted",
	      merged_with(m, 500, N, pfn) == N - 500 &&
		  d(s3.pages_sharing, s0.pages_sharing) == N - 500 - NCONT);

	/* registered again, merged again */
	CHECK_RET("register 0-399", ksmu_register(m, 400 * PG), 0);
	ksmu_scan_full();
	ksmu_scan_full();
	s4 = st();
	CHECK("0-399: merged again", merged_with(m, 0, 400, pfn) == 400);
	CHECK("0-399: counted again", d(s4.pages_sharing, s0.pages_sharing) == N - 100 - NCONT &&
					  d(s4.merges, s3.merges) == 400);
	CHECK("no merge failed", s4.merge_failed == s0.merge_failed);

	CHECK_RET("drop 0-99", madvise(m, 100 * PG, MADV_DONTNEED), 0);
	CHECK_RET("drop 600-699", madvise(m + 600 * PG, 100 * PG, MADV_DONTNEED), 0);
	sv = (int)nonzero(m, 0, 100);
	printf("   dropped again-registered pages 0-99: %d not zero; never cut 600-699: %zu\n", sv,
	       nonzero(m, 600, 700));
	CHECK("0-99 (registered again): dropped pages read zeros", sv == 0);
	CHECK("600-699 (never cut): dropped pages read zeros", nonzero(m, 600, 700) == 0);
	CHECK("answered as zeros by MINOR faults", minor_zero_since(s4.minor_zero, 200) >= 200);
	CHECK("the rest keeps its content",
	      with_content(m, 100, 600, seed) == 500 && with_content(m, 700, N, seed) == N - 700);

	CHECK_RET("unregister all", ksmu_unregister(m, N * PG), 0);
	s5 = st();
	sv = store_vmas(m, N * PG);
	printf("   after unregistering all: %d store mappings, store pages +%" PRIu64 "\n", sv,
	       d(s5.store_pages, s0.store_pages));
	CHECK("no store mapping left", sv == 0);
	CHECK("no store page leaked", s5.store_pages == s0.store_pages);
	CHECK("nothing merged",
	      s5.pages_sharing == s0.pages_sharing && s5.pages_shared == s0.pages_shared);
	CHECK("dropped pages still zeros", nonzero(m, 0, 100) == 0 && nonzero(m, 600, 700) == 0);
	CHECK("content",
	      with_content(m, 100, 600, seed) == 500 && with_content(m, 700, N, seed) == N - 700);
	CHECK_RET("drop all", madvise(m, N * PG, MADV_DONTNEED), 0);
	CHECK("all dropped: zeros", nonzero(m, 0, N) == 0);
	munmap(m, N * PG);
}

/* ------------------------------------------------------------------ 3, 4 */

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* The state of up to 64 pages from @from: a (anonymous), F (store), . (absent). */
static void show_pages(const char *what, const char *m, size_t from, size_t n)
{
	char map[65];
	size_t i, k = 0;

	for (i = from; i < n && k < 64; i++, k++) {
		uint64_t e = t_pm_entry(m + i * PG);

		map[k] = !(e & KSMU_PM_PRESENT) ? '.' : e & KSMU_PM_FILE ? 'F' : 'a';
	}
	map[k] = 0;
	printf("   %s: page %zu; from there: %s\n", what, from, map);
}

struct race {
	char *m;
	size_t n;
	int exclude; /* hold merge windows off around each drop */
	int cpu;     /* the dropper's CPU, -1 for any */
	atomic_int ready, done;
	unsigned char *dropped; /* set by the dropper, read after the join */
	size_t in_window;	/* drops of a page seen detached by its window */
	size_t after_window;	/* drops of a page seen just mapped from the store */
	size_t passed;		/* drops of a page the scanner went past */
	size_t stop;		/* the page the dropper stopped at */
	uint64_t drop_us_max;	/* longest madvise() */
	unsigned long errors;
};

/*
 * Follow the scanner: watch page i until its merge window detaches it (not
 * present: the window is open) or it is mapped from the store (the window
 * just closed), and drop it at once; then page i + 2, leaving page i + 1 to
 * merge so that the scanner goes on.  A page the scanner went past without
 * merging it (one of the next LOOKAHEAD pages merged) is dropped anyway.
 * With @exclude the drop waits for an open window to close, so it lands
 * right after it.
 */
static void *dropper(void *arg)
{
	struct race *r = arg;
	struct timespec t0, t1;
	uint64_t us, pm[1 + LOOKAHEAD];
	size_t i = 1, k, n;

	if (r->cpu >= 0) {
		cpu_set_t one;

		CPU_ZERO(&one);
		CPU_SET(r->cpu, &one);
		sched_setaffinity(0, sizeof(one), &one);
	}
	atomic_store(&r->ready, 1);
	while (i < r->n && !atomic_load(&r->done)) {
		n = r->n - i < 1 + LOOKAHEAD ? r->n - i : 1 + LOOKAHEAD;
		/* the entries of pages i .. i + n - 1 in one read */
		if (pread(t_pm_fd, pm, n * sizeof(*pm),
			  (off_t)((uintptr_t)(r->m + i * PG) / PG * sizeof(*pm))) !=
		    (ssize_t)(n * sizeof(*pm))) {
			r->errors++;
			break;
		}
		if (!(pm[0] & KSMU_PM_PRESENT)) {
			r->in_window++;
		} else if (pm[0] & KSMU_PM_FILE) {
			r->after_window++;
		} else {
			for (k = 1; k < n && !(pm[k] & KSMU_PM_FILE); k++)
				;
			if (k == n) {
				/* let the engine's reader thread in (it answers faults) */
				sched_yield();
				continue;
			}
			r->passed++;
		}
		if (r->exclude)
			ksmu_merge_exclude_begin();
		clock_gettime(CLOCK_MONOTONIC, &t0);
		if (madvise(r->m + i * PG, PG, MADV_DONTNEED))
			r->errors++;
		clock_gettime(CLOCK_MONOTONIC, &t1);
		if (r->exclude)
			ksmu_merge_exclude_end();
		us = (uint64_t)((t1.tv_sec - t0.tv_sec) * 1000000 +
				(t1.tv_nsec - t0.tv_nsec) / 1000);
		if (us > r->drop_us_max)
			r->drop_us_max = us;
		r->dropped[i] = 1;
		i += 2;
	}
	r->stop = i;
	return NULL;
}

/*
 * Put the calling thread (the scanner: ksmu_scan_full() scans in the
 * caller's thread) and the dropper on two different CPUs, so that the
 * dropper watches the windows as they happen instead of taking turns with
 * them.  @saved receives the caller's mask.  Return: 1 if done (two CPUs or
 * more allowed), 0 otherwise (nothing changed).
 */
static int split_cpus(cpu_set_t *saved, int *dropper_cpu)
{
	cpu_set_t one;
	int cpu, first = -1;

	if (sched_getaffinity(0, sizeof(*saved), saved) || CPU_COUNT(saved) < 2)
		return 0;
	for (cpu = 0; cpu < CPU_SETSIZE; cpu++) {
		if (!CPU_ISSET(cpu, saved))
			continue;
		if (first < 0) {
			first = cpu;
			continue;
		}
		*dropper_cpu = cpu;
		break;
	}
	CPU_ZERO(&one);
	CPU_SET(first, &one);
	return !sched_setaffinity(0, sizeof(one), &one);
}

/*
 * One round: @n pages of one content, registered and merged by two passes
 * while the dropper drops every other page as the scanner reaches it.
 * Adds to @drops and @lost (dropped pages that did not read zeros).
 */
static void race_round(int exclude, size_t n, const unsigned char *want, size_t *drops,
		       size_t *lost)
{
	struct race r = {.n = n, .exclude = exclude, .cpu = -1};
	struct ksmu_stats s0, s1, s2, s3;
	size_t i, nd = 0, bad = 0, stale = 0, wrong = 0, kept = 0, file = 0, shown = 0, nphys;
	cpu_set_t saved;
	pthread_t th;
	int pinned;

	r.m = t_map_anon(n);
	r.dropped = calloc(n, 1);
	if (!r.dropped)
		exit(T_EXIT_FAIL);
	for (i = 0; i < n; i++)
		memcpy(r.m + i * PG, want, PG);
	s0 = st();
	CHECK_RET("register", ksmu_register(r.m, n * PG), 0);
	pinned = split_cpus(&saved, &r.cpu);
	if (pthread_create(&th, NULL, dropper, &r)) {
		perror("pthread_create");
		exit(T_EXIT_FAIL);
	}
	while (!atomic_load(&r.ready))
		sched_yield();
	ksmu_scan_full();
	ksmu_scan_full();
	atomic_store(&r.done, 1);
	pthread_join(th, NULL);
	if (pinned)
		sched_setaffinity(0, sizeof(saved), &saved);
	s1 = st();

	for (i = 0; i < n; i++) {
		const char *p = r.m + i * PG;
		uint64_t pm = t_pm_entry(p); /* before the read faults it in */

		if (!r.dropped[i]) {
			wrong += memcmp(p, want, PG) != 0;
			continue;
		}
		nd++;
		if (t_page_is_zero(p))
			continue;
		bad++;
		stale += !memcmp(p, want, PG);
		if (shown++ < MAXDIAG)
			fprintf(
			    stderr,
			    "   page %zu dropped but reads %s (pagemap before the read: %s%s)\n", i,
			    memcmp(p, want, PG) ? "garbage" : "its old content",
			    pm & KSMU_PM_PRESENT ? "present" : "not present",
			    pm & KSMU_PM_FILE ? ", store page" : "");
	}
	s2 = st();
	printf("   dropped %zu of %zu pages (%zu in a window, %zu just after, %zu passed over; "
	       "longest madvise %" PRIu64 " us): %zu read non-zero (%zu their old content); "
	       "merges +%" PRIu64 " minor_zero +%" PRIu64 " minor_store +%" PRIu64 "\n",
	       nd, n, r.in_window, r.after_window, r.passed, r.drop_us_max, bad, stale,
	       d(s1.merges, s0.merges), d(s2.minor_zero, s0.minor_zero),
	       d(s2.minor_store, s0.minor_store));
	if (nd < n / 4)
		show_pages("short round (a busy machine?); the dropper stopped at", r.m, r.stop, n);
	CHECK("madvise never failed", r.errors == 0);
	CHECK("pages were merged meanwhile", d(s1.merges, s0.merges) >= n / 2);
	CHECK("dropped pages read zeros", bad == 0);
	CHECK("the other pages keep their content", wrong == 0);
	if (nd)
		CHECK("merged pages dropped were answered as zeros (minor_zero)",
		      minor_zero_since(s0.minor_zero, 1) > 0);
	*drops += nd;
	*lost += bad;

	/* quiet: what was not dropped is merged now */
	ksmu_scan_full();
	for (i = 0; i < n; i++) {
		if (r.dropped[i])
			continue;
		kept++;
		file += !!(t_pm_entry(r.m + i * PG) & KSMU_PM_FILE);
	}
	nphys = distinct_pfns_but(r.m, 0, n, r.dropped);
	CHECK("after a quiet pass the pages not dropped are merged", file == kept);
	CHECK("onto few physical pages", nphys >= 1 && nphys <= kept / 64 + 2);

	CHECK_RET("unregister", ksmu_unregister(r.m, n * PG), 0);
	s3 = st();
	for (i = 0, bad = 0, wrong = 0; i < n; i++) {
		if (r.dropped[i])
			bad += !t_page_is_zero(r.m + i * PG);
		else
			wrong += memcmp(r.m + i * PG, want, PG) != 0;
	}
	CHECK("after unregister: dropped pages zeros, the others their content",
	      bad == 0 && wrong == 0);
	CHECK("after unregister: no store mapping", store_vmas(r.m, n * PG) == 0);
	CHECK("after unregister: store pages freed", s3.store_pages == s0.store_pages);
	munmap(r.m, n * PG);
	free(r.dropped);
}

/*
 * @rounds rounds at least; more (up to RACE_MAX_ROUNDS, within RACE_BUDGET
 * seconds) while the drops are fewer than those rounds should give, as
 * happens when other processes keep the dropper off its CPU.
 */
static void sec_race(int exclude, int rounds)
{
	unsigned char want[PG];
	size_t drops = 0, lost = 0, target = (size_t)rounds * RACE_PAGES / 2 * 3 / 4;
	double t0 = now_s();
	int k;

	if (exclude)
		printf("-- 4: MADV_DONTNEED right after a merge window (windows held off)\n");
	else
		printf("-- 3: MADV_DONTNEED while a merge window on the page is open\n");
	t_fill_page(want, exclude ? 4000 : 3000);
	for (k = 0; k < rounds; k++)
		race_round(exclude, RACE_PAGES, want, &drops, &lost);
	/* more while other processes kept the dropper off its CPU */
	for (; drops < target && k < RACE_MAX_ROUNDS && now_s() - t0 < RACE_BUDGET; k++)
		race_round(exclude, RACE_PAGES, want, &drops, &lost);
	printf("   %d round(s) in %.1f s: %zu drops raced merges, %zu lost\n", k, now_s() - t0,
	       drops, lost);
	CHECK("the drops followed the scanner", drops >= (size_t)rounds * RACE_PAGES / 8);
}

/* ------------------------------------------------------------------ 5 */

static void sec_cut_register_unregister(void)
{
	enum { N = 1024, A = 300, L = 200 };
	const uint64_t seed = 5000;
	char *m = t_map_anon(N);
	struct ksmu_stats s0, s1, s2, s3;
	uint64_t pfn[NCONT];
	int sv;
	size_t nz;

	printf("-- 5: register, merge, unregister part, register it again, unregister all\n");
	fill(m, N, seed);
	s0 = st();
	CHECK_RET("register", ksmu_register(m, N * PG), 0);
	ksmu_scan_full();
	ksmu_scan_full();
	s1 = st();
	record_pfns(m, pfn);
	CHECK("merged",
	      merged_with(m, 0, N, pfn) == N && d(s1.pages_sharing, s0.pages_sharing) == N - NCONT);
	CHECK_RET("unregister part", ksmu_unregister(m + A * PG, L * PG), 0);
	CHECK_RET("register it again", ksmu_register(m + A * PG, L * PG), 0);
	ksmu_scan_full();
	ksmu_scan_full();
	s2 = st();
	printf("   merged again: pages_sharing +%" PRIu64 " (want %d)\n",
	       d(s2.pages_sharing, s0.pages_sharing), N - NCONT);
	CHECK("all of it merged again", merged_with(m, 0, N, pfn) == N);
	CHECK("and counted", d(s2.pages_sharing, s0.pages_sharing) == N - NCONT &&
				 d(s2.merges, s0.merges) == N + L);

	CHECK_RET("unregister all", ksmu_unregister(m, N * PG), 0);
	s3 = st();
	sv = store_vmas(m, N * PG);
	printf("   after unregister all: %d store mappings in the region, unmerged %" PRIu64
	       " of %" PRIu64 " merged, store pages +%" PRIu64 "\n",
	       sv, d(s3.pages_unmerged, s0.pages_unmerged), d(s3.merges, s0.merges),
	       d(s3.store_pages, s0.store_pages));
	CHECK("no store mapping left in the region", sv == 0);
	CHECK("content intact", with_content(m, 0, N, seed) == N);
	CHECK("private copies", distinct_pfns(m, 0, N) == N);
	CHECK("every merged page unmerged",
	      d(s3.pages_unmerged, s0.pages_unmerged) == d(s3.merges, s0.merges));
	CHECK("store emptied, nothing merged",
	      s3.store_pages == s0.store_pages && s3.pages_sharing == s0.pages_sharing);
	CHECK_RET("drop all", madvise(m, N * PG, MADV_DONTNEED), 0);
	nz = nonzero(m, 0, N);
	printf("   after MADV_DONTNEED of the region: %zu pages not zero\n", nz);
	CHECK("dropped unregistered memory reads zeros", nz == 0);
	munmap(m, N * PG);
}

/* ------------------------------------------------------------------ */

static int wanted(int argc, char **argv, int sec)
{
	int i;

	if (argc < 2)
		return 1;
	for (i = 1; i < argc; i++)
		if (atoi(argv[i]) == sec)
			return 1;
	return 0;
}

int main(int argc, char **argv)
{
	struct ksmu_stats s;
	const char *env = getenv("KSMU_DROPS_ROUNDS");
	int rounds = env && *env ? atoi(env) : RACE_ROUNDS;

	if (rounds < 1)
		rounds = 1;
	setvbuf(stdout, NULL, _IOLBF, 0);
	CHECK_RET("run 0", ksmu_set_run(0), 0);
	CHECK_RET("use_zero_pages 0", ksmu_set_tunable("use_zero_pages", 0), 0);
	s = st();
	if (!s.merging)
		t_skip("merging unavailable here (needs userfaultfd with MOVE and MINOR_SHMEM, "
		       "without USER_MODE_ONLY)");
	if (!t_pfn_of(&s))
		t_skip("PFNs hidden in /proc/self/pagemap (not root)");
	if (wanted(argc, argv, 1))
		sec_drop_then_unregister();
	if (wanted(argc, argv, 2))
		sec_partial_unregister();
	if (wanted(argc, argv, 3))
		sec_race(0, rounds);
	if (wanted(argc, argv, 4))
		sec_race(1, rounds);
	if (wanted(argc, argv, 5))
		sec_cut_register_unregister();
	return t_exit();
}
