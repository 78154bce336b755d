/* SPDX-License-Identifier: MIT */
/* Description: exact dirty tracking.  After a full pass, a pass over
 * unchanged memory hashes no page; a page written since is re-hashed (and
 * only it); a changed duplicate leaves its stable node and is volatile for
 * one pass; a page rewritten with identical bytes stays where it is; a page
 * rewritten into a copy of a template joins it after the next pass; writes
 * by the kernel (read(2) from a pipe into tracked memory) succeed and are
 * seen.  The checksum fallback re-hashes everything, and smart_scan then
 * skips pages that stay unique. */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "datagen.h"
#include "ksmu.h"
#include "test.h"

#define PG 4096UL
#define PAGES 4096

static struct ksmu_stats st(void)
{
	struct ksmu_stats s;

	CHECK_RET("stats", ksmu_stats(&s), 0);
	return s;
}

/* Index of a page of kind @kind (and template @tid for copies, if not -1). */
static size_t find_page(const struct ksmu_datagen_spec *spec, int kind, long tid, size_t after)
{
	size_t i;
	uint64_t id;

	for (i = after; i < spec->pages; i++)
		if (ksmu_datagen_kind(spec, i, &id) == kind && (tid < 0 || (long)id == tid))
			return i;
	return SIZE_MAX;
}

int main(void)
{
	struct ksmu_datagen_spec spec = {PAGES, 64, 0.5, 0.05, 0, 99};
	struct ksmu_datagen_truth t;
	struct ksmu_stats s0, s1, s2;
	char *m;
	size_t cp, cp2, uq, uq2;
	uint64_t tid;
	int pfd[2];
	char tmpl[PG];

	/* The tracker's accounting in detection mode (merged pages are merge-scan.c's). */
	CHECK_RET("dry run", ksmu_set_tunable("dry_run", 1), 0);

	CHECK_RET("run 0", ksmu_set_run(0), 0);
	s0 = st();
	if (s0.dirty_tracker != KSMU_TRACK_WP_ASYNC)
		t_skip("exact dirty tracking (PAGEMAP_SCAN + UFFD_FEATURE_WP_ASYNC) not available");

	m = mmap(NULL, PAGES * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK("mmap", m != MAP_FAILED);
	CHECK_RET("fill", ksmu_datagen_fill(m, &spec, &t), 0);
	CHECK_RET("register", ksmu_register(m, PAGES * PG), 0);
	CHECK("pass 1", ksmu_scan_full() > 0);
	s0 = st();
	CHECK("first pass hashed everything", s0.pages_hashed == PAGES);
	CHECK("found", s0.est_pages_sharing == t.pages_sharing);

	/* 1. Nothing written: nothing hashed. */
	CHECK("pass 2", ksmu_scan_full() > 0);
	s1 = st();
	printf("clean pass: hashed %lu, clean %lu\n",
	       (unsigned long)(s1.pages_hashed - s0.pages_hashed),
	       (unsigned long)(s1.pages_clean - s0.pages_clean));
	CHECK("clean pass hashes nothing", s1.pages_hashed == s0.pages_hashed);
	CHECK("clean pass sees every page clean", s1.pages_clean - s0.pages_clean == PAGES);
	CHECK("estimate stable", s1.est_pages_sharing == s0.est_pages_sharing &&
				     s1.pages_unshared == s0.pages_unshared);

	/* 2. Make a duplicate unique: re-hashed alone, leaves its node, volatile. */
	cp = find_page(&spec, KSMU_DATAGEN_COPY, -1, 0);
	CHECK("have a copy", cp != SIZE_MAX);
	m[cp * PG + 100] ^= 0x55;
	CHECK("pass 3", ksmu_scan_full() > 0);
	s2 = st();
	CHECK("only the written page re-hashed", s2.pages_hashed - s1.pages_hashed == 1);
	CHECK("it left its node", s2.est_pages_sharing == s1.est_pages_sharing - 1);
	CHECK("it is volatile", s2.pages_volatile == 1);
	/* Unchanged for a pass: searched again, now unique (unstable tree). */
	s1 = s2;
	CHECK("pass 4", ksmu_scan_full() > 0);
	s2 = st();
	CHECK("no longer volatile", s2.pages_volatile == 0);
	CHECK("now unshared", s2.pages_unshared == s1.pages_unshared + 1);

	/* 3. Rewrite a page with identical bytes: hashed once, stays put. */
	uq = find_page(&spec, KSMU_DATAGEN_UNIQUE, -1, 0);
	s1 = s2;
	memcpy(tmpl, m + uq * PG, PG);
	{
		/* volatile: a compiler may drop a store of bytes it just loaded */
		volatile char *vp = m + uq * PG;
		size_t i;

		for (i = 0; i < PG; i++)
			vp[i] = tmpl[i];
	}
	CHECK("pass 5", ksmu_scan_full() > 0);
	s2 = st();
	CHECK("same bytes: re-hashed once", s2.pages_hashed - s1.pages_hashed == 1);
	CHECK("same bytes: not volatile",
	      s2.pages_volatile == 0 && s2.pages_unshared == s1.pages_unshared);

	/* 4. Churn: a unique page becomes a copy of a template. */
	cp2 = find_page(&spec, KSMU_DATAGEN_COPY, -1, cp + 1);
	CHECK("kind", ksmu_datagen_kind(&spec, cp2, &tid) == KSMU_DATAGEN_COPY);
	CHECK_RET("template", ksmu_datagen_template(&spec, (unsigned)tid, tmpl), 0);
	uq2 = find_page(&spec, KSMU_DATAGEN_UNIQUE, -1, uq + 1);
	s1 = s2;
	memcpy(m + uq2 * PG, tmpl, PG);
	CHECK("pass 6", ksmu_scan_full() > 0);
	CHECK("pass 7", ksmu_scan_full() > 0);
	s2 = st();
	CHECK("joined its template", s2.est_pages_sharing == s1.est_pages_sharing + 1);
	CHECK("one unique less", s2.pages_unshared == s1.pages_unshared - 1);

	/* 5. The kernel writes into tracked, write-protected memory: read(2). */
	CHECK_RET("pipe", pipe(pfd), 0);
	memset(tmpl, 0x3c, PG);
	CHECK("pipe write", write(pfd[1], tmpl, PG) == (ssize_t)PG);
	s1 = st();
	CHECK("read into tracked page succeeds", read(pfd[0], m + uq * PG, PG) == (ssize_t)PG);
	CHECK("content landed", !memcmp(m + uq * PG, tmpl, PG));
	CHECK("pass 8", ksmu_scan_full() > 0);
	s2 = st();
	CHECK("kernel write seen", s2.pages_hashed - s1.pages_hashed == 1);
	close(pfd[0]);
	close(pfd[1]);
	CHECK("pass 8b: the read page settles", ksmu_scan_full() > 0);

	/* 6. Checksum fallback: every present page is re-hashed each pass. */
	CHECK_RET("smart off", ksmu_set_tunable("smart_scan", 0), 0);
	CHECK_RET("checksum", ksmu_set_tunable("dirty_tracker", 1), 0);
	s1 = st();
	CHECK("pass 9", ksmu_scan_full() > 0);
	s2 = st();
	CHECK("checksum re-hashes all", s2.pages_hashed - s1.pages_hashed == PAGES);
	CHECK("same answer", s2.est_pages_sharing == s1.est_pages_sharing &&
				 s2.pages_unshared == s1.pages_unshared);
	/* smart_scan: pages that stay unique get skipped on some passes. */
	CHECK_RET("smart on", ksmu_set_tunable("smart_scan", 1), 0);
	s1 = st();
	CHECK("pass 10", ksmu_scan_full() > 0);
	CHECK("pass 11", ksmu_scan_full() > 0);
	CHECK("pass 12", ksmu_scan_full() > 0);
	s2 = st();
	printf("smart_scan: skipped %lu over 3 passes\n",
	       (unsigned long)(s2.pages_skipped - s1.pages_skipped));
	CHECK("smart_scan skipped unique pages", s2.pages_skipped > s1.pages_skipped);
	CHECK("answer unchanged", s2.est_pages_sharing == s1.est_pages_sharing);

	/* Back to exact tracking: one re-hash of everything, then quiet. */
	CHECK_RET("exact again", ksmu_set_tunable("dirty_tracker", 2), 0);
	CHECK("pass 13", ksmu_scan_full() > 0);
	s1 = st();
	CHECK("pass 14", ksmu_scan_full() > 0);
	s2 = st();
	CHECK("quiet again", s2.pages_hashed == s1.pages_hashed);
	CHECK("answer unchanged after switching", s2.est_pages_sharing == s1.est_pages_sharing);
	CHECK_RET("unregister", ksmu_unregister(m, PAGES * PG), 0);
	munmap(m, PAGES * PG);
	return t_exit();
}
