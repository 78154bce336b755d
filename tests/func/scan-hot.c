/* SPDX-License-Identifier: MIT */
/* Description: smart_scan for tracked memory (src/scan.c).  A page the
 * application keeps rewriting is, after two changed visits, left out of
 * passes (pages_skipped): its page-table entry stays writable, so the
 * application's writes take no write-protect fault, where every pass used
 * to protect it again.  Nothing it did is missed: once it stops changing
 * and duplicates another page, it merges within the longest back-off
 * (8 passes) plus two.  With smart_scan=0 every pass protects it again.
 * Proved with the uffd-wp bit and PFNs of /proc/self/pagemap.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "ksmu.h"
#include "t_mem.h"
#include "test.h"

#define PG 4096UL
#define N 16
#define HOT 8
#define PM_UFFD_WP (UINT64_C(1) << 57)

static struct ksmu_stats st(void)
{
	struct ksmu_stats s;

	CHECK_RET("stats", ksmu_stats(&s), 0);
	return s;
}

static char *region(void)
{
	char *m = t_map_anon(N);

	for (size_t i = 0; i < N; i++)
		t_fill_page(m + i * PG, i < HOT ? 5 : 100 + i);
	CHECK_RET("register", ksmu_register(m, N * PG), 0);
	ksmu_scan_full();
	return m;
}

/* Rewrite the hot page @passes times, one pass after each; passes that left it writable. */
static int hot_passes(char *m, int passes, uint64_t *skipped)
{
	uint64_t s0 = st().pages_skipped;
	int unprotected = 0;

	for (int p = 0; p < passes; p++) {
		memset(m + HOT * PG, 0x40 + p, PG);
		ksmu_scan_full();
		unprotected += !(t_pm_entry(m + HOT * PG) & PM_UFFD_WP);
	}
	*skipped = st().pages_skipped - s0;
	return unprotected;
}

int main(void)
{
	unsigned char want[PG];
	uint64_t skipped;
	char *m;
	int k, unprot;

	CHECK_RET("run 0", ksmu_set_run(0), 0);
	if (!st().merging || st().dirty_tracker != 2) {
		printf("SKIP: merging with exact dirty tracking unavailable here\n");
		return T_EXIT_SKIP;
	}
	if (!t_pfn_of(&k)) {
		printf("SKIP: PFNs hidden in /proc/self/pagemap (not root)\n");
		return T_EXIT_SKIP;
	}

	printf("-- smart_scan=0: every pass protects the rewritten page again\n");
	CHECK_RET("smart_scan 0", ksmu_set_tunable("smart_scan", 0), 0);
	m = region();
	unprot = hot_passes(m, 12, &skipped);
	printf("   12 passes: %d left it writable, %llu pages skipped\n", unprot,
	       (unsigned long long)skipped);
	CHECK("protected after every pass", unprot == 0);
	CHECK("nothing skipped", skipped == 0);
	CHECK_RET("unregister", ksmu_unregister(m, N * PG), 0);
	munmap(m, N * PG);

	printf("-- smart_scan=1: a hot page is left alone, then caught up with\n");
	CHECK_RET("smart_scan 1", ksmu_set_tunable("smart_scan", 1), 0);
	m = region();
	unprot = hot_passes(m, 12, &skipped);
	printf("   12 passes: %d left it writable, %llu pages skipped\n", unprot,
	       (unsigned long long)skipped);
	CHECK("most passes leave it writable", unprot >= 6);
	CHECK("but not all (it is visited again)", unprot < 12);
	CHECK("the skips are counted", skipped >= (uint64_t)unprot);
	/* it stops changing, as a duplicate of the others */
	t_fill_page(m + HOT * PG, 5);
	for (k = 0; k < 10 && t_pfn_of(m + HOT * PG) != t_pfn_of(m); k++)
		ksmu_scan_full();
	printf("   merged %d passes after its last write\n", k);
	CHECK("it merges once it settles", t_pfn_of(m + HOT * PG) == t_pfn_of(m) && t_pfn_of(m));
	t_fill_page(want, 5);
	CHECK("content intact", !memcmp(m + HOT * PG, want, PG) && t_verify_pattern(m, 1, 5, 1) == 0);
	CHECK_RET("unregister", ksmu_unregister(m, N * PG), 0);
	munmap(m, N * PG);
	return t_exit();
}
