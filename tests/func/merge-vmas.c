/* SPDX-License-Identifier: MIT */
/* Description: the VMA budget (src/dedup.c).  Scattered duplicates cost two
 * VMAs per merge; with the budget capped (knob max_vmas) merging stops
 * below the cap, the process's own mmap() keeps working, the refused pages
 * are counted (merge_vma_limited) and, while no VMA is free, not read or
 * compared again on later passes; once the cap is lifted the next pass
 * merges every one of them.  Proved with PFNs from /proc/self/pagemap and
 * the VMA count of /proc/self/maps.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "ksmu.h"
#include "t_mem.h"
#include "test.h"

#define PG 4096UL
#define N 128 /* even pages: one content; odd pages: unique */

static struct ksmu_stats st(void)
{
	struct ksmu_stats s;

	CHECK_RET("stats", ksmu_stats(&s), 0);
	return s;
}

static long process_vmas(void)
{
	FILE *f = fopen("/proc/self/maps", "r");
	long n = 0;
	int c;

	if (!f)
		return -1;
	while ((c = fgetc(f)) != EOF)
		n += c == '\n';
	fclose(f);
	return n;
}

/*
 * Even pages merged: the size of the largest group of even pages sharing
 * one PFN, less the page merged onto.  (Which pages merge first under the
 * cap depends on the order the engine takes them in.)
 */
static int merged_evens(const char *m)
{
	uint64_t pfn[N / 2];
	int best = 0;

	for (size_t i = 0; i < N; i += 2)
		pfn[i / 2] = t_pfn_of(m + i * PG);
	for (size_t a = 0; a < N / 2; a++) {
		int n = 0;

		for (size_t b = 0; pfn[a] && b < N / 2; b++)
			n += pfn[b] == pfn[a];
		if (n - 1 > best)
			best = n - 1;
	}
	return best;
}

static void fill(char *m)
{
	for (size_t i = 0; i < N; i++)
		t_fill_page(m + i * PG, i % 2 ? 1000 + i : 7);
}

static int verify(const char *m)
{
	unsigned char want[PG];
	int bad = 0;

	for (size_t i = 0; i < N; i++) {
		t_fill_page(want, i % 2 ? 1000 + i : 7);
		bad += memcmp(m + i * PG, want, PG) != 0;
	}
	return bad;
}

int main(void)
{
	struct ksmu_stats s0, s1;
	unsigned long v = 0;
	long cap, vmas;
	char *m;
	void *p;
	int k, merged;

	CHECK_RET("run 0", ksmu_set_run(0), 0);
	if (!st().merging) {
		printf("SKIP: merging unavailable here\n");
		return T_EXIT_SKIP;
	}
	s0 = st();
	if (!t_pfn_of(&s0)) {
		printf("SKIP: PFNs hidden in /proc/self/pagemap (not root)\n");
		return T_EXIT_SKIP;
	}

	printf("-- the knob\n");
	CHECK_RET("above UINT_MAX: refused", ksmu_set_tunable("max_vmas", 1UL << 40), -EINVAL);
	CHECK_RET("default", ksmu_get_tunable("max_vmas", &v), 0);
	CHECK("default is 0 (3/4 of vm.max_map_count)", v == 0);

	printf("-- merging stops at the cap\n");
	m = t_map_anon(N);
	fill(m);
	/* no room at all first: the engine's threads and buffers settle meanwhile */
	CHECK_RET("cap 1", ksmu_set_tunable("max_vmas", 1), 0);
	CHECK_RET("register", ksmu_register(m, N * PG), 0);
	ksmu_scan_full();
	CHECK("no room: nothing merged", merged_evens(m) == 0);
	/* room for about 8 scattered merges beyond what the process has now */
	cap = process_vmas() + 2 + 16;
	CHECK_RET("cap", ksmu_set_tunable("max_vmas", (unsigned long)cap), 0);
	for (k = 0; k < 4; k++)
		ksmu_scan_full();
	merged = merged_evens(m);
	vmas = process_vmas();
	s0 = st();
	printf("   cap %ld: %d of %d duplicates merged, %ld VMAs, vma_limit %llu, "
	       "vma_limited %llu\n",
	       cap, merged, N / 2 - 1, vmas, (unsigned long long)s0.vma_limit,
	       (unsigned long long)s0.merge_vma_limited);
	CHECK("the budget is the cap", s0.vma_limit == (uint64_t)cap);
	CHECK("some merged", merged >= 2);
	CHECK("not all: the cap stopped merging", merged < N / 2 - 1);
	CHECK("refusals counted", s0.merge_vma_limited > 0);
	/*
	 * What merging adds stays under the cap; other threads (a sanitizer's
	 * runtime, here) may map a few VMAs of their own after the count.
	 */
	CHECK("the process stays at the cap (give or take others' mmaps)", vmas <= cap + 8);
	p = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK("the program's own mmap works", p != MAP_FAILED);
	if (p != MAP_FAILED)
		munmap(p, PG);
	CHECK("content intact", verify(m) == 0);

	printf("-- waiting pages are not read again while no VMA is free\n");
	ksmu_scan_full();
	s1 = st();
	CHECK("a pass compares nothing", s1.pages_compared == s0.pages_compared);
	CHECK("the waiting pages are counted again", s1.merge_vma_limited > s0.merge_vma_limited);
	CHECK("no merge", merged_evens(m) == merged);

	printf("-- the cap lifted: the next pass merges the rest\n");
	CHECK_RET("cap off", ksmu_set_tunable("max_vmas", 0), 0);
	ksmu_scan_full();
	merged = merged_evens(m);
	printf("   %d of %d merged, vma_limit %llu\n", merged, N / 2 - 1,
	       (unsigned long long)st().vma_limit);
	CHECK("every duplicate merged", merged == N / 2 - 1);
	CHECK("content intact", verify(m) == 0);

	CHECK_RET("unregister", ksmu_unregister(m, N * PG), 0);
	CHECK("content intact after unmerge", verify(m) == 0);
	munmap(m, N * PG);
	return t_exit();
}
