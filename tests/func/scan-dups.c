/* SPDX-License-Identifier: MIT */
/* Description: the scanner finds exactly the duplicates of generated memory
 * (copies of templates scattered or in runs, zero pages, unique pages) in
 * one full pass: the estimate (est_pages_shared / est_pages_sharing), the
 * unstable count and the zero-page count equal the generator's true answer,
 * with use_zero_pages 0 and 1, across two regions, with max_page_sharing
 * chains, and without changing a byte.  Run under KSMU_DISABLE too (ctest
 * registers scan-dups-checksum and scan-dups-pread) to cover the fallbacks. */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include "datagen.h"
#include "ksmu.h"
#include "test.h"

#define PG 4096UL
#define MPS 256 /* max_page_sharing default */

static struct ksmu_stats st(void)
{
	struct ksmu_stats s;

	CHECK_RET("stats", ksmu_stats(&s), 0);
	return s;
}

static void check_mix(const char *what, size_t pages, double dup, double zero, unsigned run_len,
		      unsigned templates, int uzp, int split)
{
	struct ksmu_datagen_spec spec = {pages, templates, dup, zero, run_len, 1234 + pages};
	struct ksmu_datagen_truth t;
	size_t len = pages * PG, singles, want_shared, want_sharing, want_zero, bad = 0;
	struct ksmu_stats s;
	char *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	printf("-- %s: %zu pages, dup %.2f zero %.2f run %u K %u uzp %d split %d\n", what, pages,
	       dup, zero, run_len, templates, uzp, split);
	CHECK("mmap", m != MAP_FAILED);
	CHECK_RET("fill", ksmu_datagen_fill(m, &spec, &t), 0);
	CHECK_RET("uzp", ksmu_set_tunable("use_zero_pages", (unsigned long)uzp), 0);
	if (split) {
		/* Two registrations: duplicates across regions must be found too. */
		size_t half = (pages / 2) * PG;

		CHECK_RET("register a", ksmu_register(m, half), 0);
		CHECK_RET("register b", ksmu_register(m + half, len - half), 0);
	} else {
		CHECK_RET("register", ksmu_register(m, len), 0);
	}
	CHECK("scan_full", ksmu_scan_full() > 0);
	s = st();

	want_shared = uzp ? t.pages_shared_uzp : t.pages_shared;
	want_sharing = uzp ? t.pages_sharing_uzp : t.pages_sharing;
	want_zero = uzp ? t.zero_pages_uzp : 0;
	/* Contents seen once: unique pages, lone template copies, a lone zero page. */
	singles = t.unique_pages + (t.templates_present - t.templates_shared) +
		  (!uzp && t.zero_pages == 1 ? 1 : 0);
	if (!uzp && t.zero_pages > MPS) {
		/*
		 * max_page_sharing caps a node at MPS pages, as in KSM: the zero
		 * content (the only one with more copies here) fills nodes of MPS
		 * in scan order; a last lone copy stays in the unstable tree.
		 */
		size_t z = t.zero_pages, full = z / MPS, rem = z % MPS;

		want_shared += full + (rem >= 2) - 1;
		want_sharing -= z - 1;
		want_sharing += full * (MPS - 1) + (rem >= 2 ? rem - 1 : 0);
		singles += rem == 1;
	}
	printf("   truth shared %zu sharing %zu zero %zu singles %zu | est shared %lu sharing %lu "
	       "zero %lu unshared %lu volatile %lu\n",
	       want_shared, want_sharing, want_zero, singles, (unsigned long)s.est_pages_shared,
	       (unsigned long)s.est_pages_sharing, (unsigned long)s.est_zero_pages,
	       (unsigned long)s.pages_unshared, (unsigned long)s.pages_volatile);
	CHECK("est_pages_shared", s.est_pages_shared == want_shared);
	CHECK("est_pages_sharing", s.est_pages_sharing == want_sharing);
	CHECK("est_zero_pages", s.est_zero_pages == want_zero);
	CHECK("pages_unshared", s.pages_unshared == singles);
	CHECK("pages_volatile", s.pages_volatile == 0);
	CHECK("rmap_items", s.rmap_items == pages);
	CHECK("no merge yet", s.pages_shared == 0 && s.pages_sharing == 0);
	CHECK("est_profit", s.est_profit == (int64_t)((want_sharing + want_zero) * PG) -
						(int64_t)s.metadata_bytes);
	CHECK("general_profit", s.general_profit == -(int64_t)s.metadata_bytes);
	CHECK_RET("data untouched", ksmu_datagen_verify(m, &spec, &bad), 0);

	CHECK_RET("unregister", ksmu_unregister(m, len), 0);
	s = st();
	CHECK("all forgotten", s.rmap_items == 0 && s.pages_unshared == 0 &&
				   s.est_pages_shared == 0 && s.est_pages_sharing == 0 &&
				   s.est_zero_pages == 0 && s.regions == 0);
	munmap(m, len);
}

/* max_page_sharing = 2: six copies of one content form three nodes in one chain. */
static void check_chains(void)
{
	char *m = mmap(NULL, 8 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct ksmu_stats s;
	int i;

	printf("-- chains\n");
	for (i = 0; i < 8; i++)
		memset(m + i * PG, i < 6 ? 0x5a : 0x10 + i, PG);
	CHECK_RET("mps", ksmu_set_tunable("max_page_sharing", 2), 0);
	CHECK_RET("register", ksmu_register(m, 8 * PG), 0);
	CHECK("scan", ksmu_scan_full() > 0);
	s = st();
	printf("   shared %lu sharing %lu chains %lu dups %lu unshared %lu\n",
	       (unsigned long)s.est_pages_shared, (unsigned long)s.est_pages_sharing,
	       (unsigned long)s.stable_node_chains, (unsigned long)s.stable_node_dups,
	       (unsigned long)s.pages_unshared);
	CHECK("3 nodes", s.est_pages_shared == 3 && s.est_pages_sharing == 3);
	CHECK("1 chain of 3", s.stable_node_chains == 1 && s.stable_node_dups == 3);
	CHECK("2 unique", s.pages_unshared == 2);
	CHECK_RET("unregister", ksmu_unregister(m, 8 * PG), 0);
	s = st();
	CHECK("chains gone", s.stable_node_chains == 0 && s.stable_node_dups == 0);
	CHECK_RET("mps back", ksmu_set_tunable("max_page_sharing", 256), 0);
	munmap(m, 8 * PG);
}

int main(void)
{
	/* Keep the background thread out: the test drives passes itself. */
	CHECK_RET("run 0", ksmu_set_run(0), 0);
	/* Detection and the estimate, exactly: merging is merge-scan.c's. */
	CHECK_RET("dry run", ksmu_set_tunable("dry_run", 1), 0);
	check_mix("standard mix, scattered", 8192, 0.5, 0.1, 0, 1024, 0, 0);
	check_mix("standard mix, use_zero_pages", 8192, 0.5, 0.1, 0, 1024, 1, 0);
	check_mix("runs of 16 (cloned images)", 8192, 0.6, 0.05, 16, 512, 0, 0);
	check_mix("two regions", 6000, 0.5, 0.1, 0, 300, 0, 1);
	check_mix("more templates than copies", 2048, 0.2, 0.0, 0, 5000, 0, 0);
	check_mix("a single zero page", 1000, 0.3, 0.001, 0, 50, 0, 0);
	check_mix("chunk boundary crossing", 8191 + 500, 0.5, 0.1, 0, 700, 0, 0);
	check_chains();
	return t_exit();
}
