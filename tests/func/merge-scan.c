/* SPDX-License-Identifier: MIT */
/* Description: the scanner merges, and every guarantee holds around it.
 * Proved the kernel selftests' way: equal PFNs in /proc/self/pagemap for
 * merged duplicates, and a Pss drop in /proc/self/smaps_rollup.  Then:
 * a write breaks COW for the writer only and is seen by the next pass;
 * MADV_DONTNEED on merged pages reads zeros afterwards (MINOR faults);
 * munmap of merged memory frees the store pages; ksmu_unregister() and
 * run=2 give every page a private copy with its content and empty the
 * store; use_zero_pages merges zero pages onto one page (ksm_zero_pages);
 * an io_uring registered buffer that duplicates other pages stays unmerged
 * and I/O into it lands; a forked child sees correct memory and its writes
 * stay its own. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ksmu.h"
#include "t_mem.h"
#include "t_uring.h"
#include "test.h"

#define PG 4096UL
#define NPAGES 1024

static struct ksmu_stats st(void)
{
	struct ksmu_stats s;

	CHECK_RET("stats", ksmu_stats(&s), 0);
	return s;
}

/* Page i holds template i % 8 (seeded), so each content has NPAGES/8 copies. */
static void fill(char *m, size_t n, uint64_t seed)
{
	t_fill_pattern(m, n, seed, 8);
}

static int verify(const char *m, size_t n, uint64_t seed)
{
	return t_verify_pattern(m, n, seed, 8);
}

static char *merged_region(size_t n, uint64_t seed)
{
	char *m = t_map_anon(n);

	fill(m, n, seed);
	CHECK_RET("register", ksmu_register(m, n * PG), 0);
	ksmu_scan_full();
	return m;
}

static void test_pfn_pss(void)
{
	char *m = t_map_anon(NPAGES);
	struct ksmu_stats s0, s1;
	long pss0, pss1, rpss0, rpss1;
	size_t i, same = 0;

	printf("-- merge: PFNs and Pss\n");
	fill(m, NPAGES, 100);
	s0 = st();
	pss0 = t_pss_kb();
	rpss0 = t_region_pss_kb(m, NPAGES * PG);
	CHECK_RET("register", ksmu_register(m, NPAGES * PG), 0);
	CHECK("one pass", ksmu_scan_full() > 0);
	s1 = st();
	pss1 = t_pss_kb();
	rpss1 = t_region_pss_kb(m, NPAGES * PG);
	for (i = 8; i < NPAGES; i++)
		same += t_pfn_of(m + i * PG) && t_pfn_of(m + i * PG) == t_pfn_of(m + (i % 8) * PG);
	printf("   %zu of %d copies share their template's PFN; Pss %ld -> %ld kB "
	       "(of the region: %ld -> %ld kB)\n",
	       same, NPAGES - 8, pss0, pss1, rpss0, rpss1);
	CHECK("merged in one pass: pages_shared 8", s1.pages_shared - s0.pages_shared == 8);
	CHECK("pages_sharing", s1.pages_sharing - s0.pages_sharing == NPAGES - 8);
	CHECK("every copy maps its template's physical page", same == NPAGES - 8);
	CHECK("distinct contents stay distinct", t_pfn_of(m) != t_pfn_of(m + PG));
	/* 1016 pages freed, 4 MiB, in the region and in the process */
	CHECK("region Pss dropped by 4 MiB", rpss0 - rpss1 >= (long)((NPAGES - 8) * 4) - 16);
	/* sanitizer runtimes grow the process meanwhile: the region tells there */
	if (!T_SANITIZED)
		CHECK("process Pss dropped by ~4 MiB",
		      pss0 - pss1 >= (long)((NPAGES - 8) * 4) - 512);
	CHECK("content intact", verify(m, NPAGES, 100) == 0);
	CHECK("profit counted", s1.general_profit > s0.general_profit);
	CHECK_RET("unregister", ksmu_unregister(m, NPAGES * PG), 0);
	munmap(m, NPAGES * PG);
}

static void test_cow(void)
{
	char *m = merged_region(NPAGES, 200);
	unsigned char want[PG];
	struct ksmu_stats s0, s1;
	uint64_t pfn_other = t_pfn_of(m + 8 * PG);

	printf("-- copy-on-write break\n");
	s0 = st();
	m[16 * PG + 100] ^= 0x5a; /* page 16 holds template 0, as pages 0, 8, ... */
	t_fill_page(want, 200);
	want[100] ^= 0x5a;
	CHECK("the writer sees its write", !memcmp(m + 16 * PG, want, PG));
	CHECK("its page is private now", t_pfn_of(m + 16 * PG) != pfn_other);
	CHECK("the others keep the shared page",
	      t_pfn_of(m + 8 * PG) == pfn_other && t_pfn_of(m) == pfn_other);
	t_fill_page(want, 200);
	CHECK("and the old content", !memcmp(m + 8 * PG, want, PG) && !memcmp(m, want, PG));
	ksmu_scan_full();
	s1 = st();
	/* run again with KSMU_COW_POLICY=1 (ctest merge-scan-cow): ksmu copies */
	if (s0.cow_policy)
		CHECK("ksmu made the copy (cow_policy=1)", s1.cow_user == s0.cow_user + 1 &&
								  s1.cow_breaks == s0.cow_breaks);
	else
		CHECK("the pass sees the COW break", s1.cow_breaks == s0.cow_breaks + 1);
	CHECK("one page less sharing", s1.pages_sharing == s0.pages_sharing - 1);
	m[16 * PG + 100] ^= 0x5a;
	CHECK("rest intact", verify(m, NPAGES, 200) == 0);
	CHECK_RET("unregister", ksmu_unregister(m, NPAGES * PG), 0);
	CHECK("content after unmerge", verify(m, NPAGES, 200) == 0);
	munmap(m, NPAGES * PG);
}

static void test_dontneed(void)
{
	char *m = merged_region(NPAGES, 300);
	struct ksmu_stats s0, s1;
	int zeros = 0, i;

	printf("-- MADV_DONTNEED of merged pages\n");
	s0 = st();
	CHECK("merged", s0.pages_sharing >= NPAGES - 8);
	CHECK_RET("dontneed", madvise(m + 64 * PG, 64 * PG, MADV_DONTNEED), 0);
	for (i = 64; i < 128; i++)
		zeros += t_page_is_zero(m + i * PG);
	s1 = st();
	CHECK("dropped pages read zeros, as anonymous memory does", zeros == 64);
	/* counted when answered; under TSan some faults are answered on a retry */
	CHECK("answered by MINOR faults", s1.minor_zero > s0.minor_zero);
	memset(m + 70 * PG, 0x77, PG);
	CHECK("and take writes", m[70 * PG + 4095] == 0x77);
	CHECK("the rest is intact",
	      verify(m, 64, 300) == 0 && verify(m + 128 * PG, NPAGES - 128, 300 + 0) == 0);
	CHECK_RET("unregister", ksmu_unregister(m, NPAGES * PG), 0);
	CHECK("zeros after unmerge", t_page_is_zero(m + 65 * PG) && m[70 * PG] == 0x77);
	munmap(m, NPAGES * PG);
}

/* A thread that takes the engine lock all the time (ksmu_stats()). */
static atomic_bool hammer_stop;

static void *hammer_main(void *arg)
{
	struct ksmu_stats s;

	(void)arg;
	while (!atomic_load(&hammer_stop))
		ksmu_stats(&s);
	return NULL;
}

static void wait_events(uint64_t since)
{
	int i;

	for (i = 0; i < 2000 && st().uffd_events == since; i++)
		usleep(1000);
}

static void test_munmap(void)
{
	char *m = merged_region(NPAGES, 400);
	struct ksmu_stats s0, s1;

	printf("-- munmap of merged memory frees the store\n");
	s0 = st();
	CHECK("store pages in use", s0.store_pages >= 8);
	CHECK("munmap", munmap(m, NPAGES * PG) == 0);
	wait_events(s0.uffd_events);
	ksmu_scan_full();
	s1 = st();
	printf("   store pages %llu -> %llu\n", (unsigned long long)s0.store_pages,
	       (unsigned long long)s1.store_pages);
	CHECK("store pages freed", s1.store_pages == s0.store_pages - 8);
	CHECK("nothing merged", s1.pages_sharing == s0.pages_sharing - (NPAGES - 8));
}

static void test_unregister_and_run2(void)
{
	char *m = merged_region(NPAGES, 500);
	struct ksmu_stats s0, s1;
	size_t i, distinct = 0;

	printf("-- ksmu_unregister() and run=2 unmerge\n");
	s0 = st();
	CHECK("merged", s0.pages_sharing >= NPAGES - 8 && s0.store_pages >= 8);
	CHECK_RET("unregister", ksmu_unregister(m, NPAGES * PG), 0);
	s1 = st();
	for (i = 8; i < NPAGES; i++)
		distinct += t_pfn_of(m + i * PG) != t_pfn_of(m + (i % 8) * PG);
	CHECK("every page private again", distinct == NPAGES - 8);
	CHECK("content intact", verify(m, NPAGES, 500) == 0);
	CHECK("store emptied", s1.store_pages == s0.store_pages - 8);
	CHECK("unmerged counted", s1.pages_unmerged - s0.pages_unmerged == NPAGES);
	CHECK("writes work", (m[5 * PG] = 1) == 1);
	munmap(m, NPAGES * PG);

	m = merged_region(NPAGES, 600);
	CHECK("merged again", st().pages_sharing >= NPAGES - 8);
	CHECK_RET("run=2", ksmu_set_run(2), 0);
	s1 = st();
	CHECK("nothing merged after run=2", s1.pages_shared == 0 && s1.pages_sharing == 0);
	CHECK("run=2 content intact", verify(m, NPAGES, 600) == 0);
	CHECK("run=2 private pages", t_pfn_of(m + 8 * PG) != t_pfn_of(m));
	CHECK_RET("run=0", ksmu_set_run(0), 0);
	CHECK_RET("unregister", ksmu_unregister(m, NPAGES * PG), 0);
	munmap(m, NPAGES * PG);
}

static void test_zero_pages(void)
{
	char *m = t_map_anon(256);
	struct ksmu_stats s;
	size_t i, same = 0;

	printf("-- use_zero_pages\n");
	CHECK_RET("use_zero_pages", ksmu_set_tunable("use_zero_pages", 1), 0);
	for (i = 0; i < 256; i++)
		m[i * PG] = 0; /* present, all zero */
	CHECK_RET("register", ksmu_register(m, 256 * PG), 0);
	ksmu_scan_full();
	s = st();
	for (i = 1; i < 256; i++)
		same += t_pfn_of(m + i * PG) == t_pfn_of(m);
	CHECK("ksm_zero_pages", s.ksm_zero_pages == 256);
	CHECK("all on one page", same == 255);
	m[3 * PG] = 9;
	CHECK("a write gives a private page", m[3 * PG] == 9 && t_page_is_zero(m + 4 * PG));
	CHECK_RET("unregister", ksmu_unregister(m, 256 * PG), 0);
	CHECK_RET("use_zero_pages 0", ksmu_set_tunable("use_zero_pages", 0), 0);
	CHECK("zeros", t_page_is_zero(m + 200 * PG) && m[3 * PG] == 9);
	munmap(m, 256 * PG);
}

static void test_pinned(void)
{
	struct io_uring ring;
	char *m = t_map_anon(64);
	uint64_t pfn_pinned;
	int err;

	printf("-- io_uring registered buffer among duplicates\n");
	if (t_uring_init(&ring)) {
		munmap(m, 64 * PG);
		return;
	}
	fill(m, 64, 700);
	err = t_uring_register(&ring, m + 9 * PG, PG); /* template 1, like 1, 17, 25, ... */
	if (err < 0) {
		printf("   SKIP part: io_uring_register_buffers: %s\n", strerror(-err));
		goto out;
	}
	pfn_pinned = t_pfn_of(m + 9 * PG);
	CHECK_RET("register", ksmu_register(m, 64 * PG), 0);
	ksmu_scan_full();
	ksmu_scan_full();
	CHECK("others merged", t_pfn_of(m + 17 * PG) == t_pfn_of(m + PG));
	CHECK("the pinned page is not", t_pfn_of(m + 9 * PG) == pfn_pinned);
	CHECK("refusals counted", st().merge_busy >= 1);
	t_uring_read_fixed(&ring, m + 9 * PG, "merge-scan", 9999);
	CHECK("its neighbours kept theirs", verify(m, 9, 700) == 0);
	io_uring_unregister_buffers(&ring);
	CHECK_RET("unregister", ksmu_unregister(m, 64 * PG), 0);
out:
	io_uring_queue_exit(&ring);
	munmap(m, 64 * PG);
}

static void test_fork(void)
{
	char *m = merged_region(NPAGES, 800);
	pid_t pid;
	int status = -1;

	printf("-- fork with merged pages\n");
	CHECK("merged", st().pages_sharing >= NPAGES - 8);
	pid = fork();
	if (pid == 0) {
		int bad = verify(m, NPAGES, 800);

		m[8 * PG] ^= 1; /* a child's write */
		bad += m[16 * PG] != (char)(m[8 * PG] ^ 1);
		_exit(bad ? 1 : 0);
	}
	CHECK("fork", pid > 0);
	CHECK("waitpid", waitpid(pid, &status, 0) == pid);
	CHECK("the child saw correct memory", WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK("the child's write stayed the child's", verify(m, NPAGES, 800) == 0);
	/* The child is gone; the parent keeps deduplicating and can unmerge. */
	ksmu_scan_full();
	CHECK_RET("unregister", ksmu_unregister(m, NPAGES * PG), 0);
	CHECK("content after unmerge", verify(m, NPAGES, 800) == 0);
	munmap(m, NPAGES * PG);
}

/* VMAs of the process that overlap [m, m + n pages). */
static size_t vmas_in(const char *m, size_t n)
{
	uintptr_t a = (uintptr_t)m, b = a + n * PG;
	unsigned long lo, hi;
	char line[512];
	size_t c = 0;
	FILE *f = fopen("/proc/self/maps", "re");

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && lo < b && hi > a)
			c++;
	fclose(f);
	return c;
}

/* n pages of anonymous memory with nothing mapped right before or after. */
static char *isolated(size_t n)
{
	char *p = mmap(NULL, (n + 2) * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		       -1, 0);

	CHECK("mmap", p != MAP_FAILED);
	munmap(p, PG);
	munmap(p + (n + 1) * PG, PG);
	return p + PG;
}

/*
 * vmas_added (in general_profit) must be the VMAs merging really added: a
 * merged middle splits its VMA (+1 besides the store mappings), a VMA
 * merged whole is replaced (-1).
 */
static void test_vma_count(void)
{
	const size_t n = 64;
	char *m = isolated(n), *w = isolated(n);
	size_t i, vm, vw;
	struct ksmu_stats s;

	printf("-- merge: VMAs added, counted exactly\n");
	for (i = 0; i < n; i++) {
		t_fill_page(m + i * PG, (i >= 16 && i < 48) ? 300 + i % 8 : 400 + i);
		t_fill_page(w + i * PG, 300 + i % 8);
	}
	CHECK_RET("register", ksmu_register(m, n * PG), 0);
	CHECK_RET("register", ksmu_register(w, n * PG), 0);
	ksmu_scan_full();
	ksmu_scan_full(); /* a pass end after the merges: VMAs counted */
	s = st();
	vm = vmas_in(m, n);
	vw = vmas_in(w, n);
	printf("   split VMA: 1 -> %zu VMAs; whole VMA: 1 -> %zu VMAs; vmas_added %llu\n", vm,
	       vw, (unsigned long long)s.vmas_added);
	CHECK("the merged middle split its VMA", vm >= 3);
	CHECK("the whole VMA was merged", s.pages_sharing + s.pages_shared >= n + 32);
	CHECK("vmas_added is what merging added", s.vmas_added == (vm - 1) + (vw - 1));
	CHECK("content intact", verify(w, n, 300) == 0);
	CHECK_RET("unregister", ksmu_unregister(m, n * PG), 0);
	CHECK_RET("unregister", ksmu_unregister(w, n * PG), 0);
	munmap(m, n * PG);
	munmap(w, n * PG);
}

/*
 * mremap() of a merged page: its records start afresh at the new address,
 * where the scanner finds a store mapping it did not make.  It must record
 * it (pages_adopted) rather than fail to merge it again on every pass, and
 * the page must keep every guarantee: content, zeros after MADV_DONTNEED,
 * and a real unmerge at unregister.
 */
static void test_mremap_adopt(void)
{
	const size_t n = 64;
	char *m = merged_region(n, 900), *dst = t_map_anon(4);
	unsigned char want[PG];
	struct ksmu_stats s0, s1;
	int memfd = 0, k, bad;
	pthread_t hammer;

	printf("-- mremap of a merged page: recorded again at its new place\n");
	CHECK("merged", t_pfn_of(m + 10 * PG) == t_pfn_of(m + 2 * PG));
	CHECK("moved", mremap(m + 10 * PG, PG, PG, MREMAP_MAYMOVE | MREMAP_FIXED, dst + PG) ==
			   dst + PG);
	/* no waiting: an API call applies the events of what came before it */
	CHECK_RET("register the new place", ksmu_register(dst, 4 * PG), 0);
	s0 = st();
	for (k = 0; k < 4; k++)
		ksmu_scan_full();
	s1 = st();
	printf("   adopted %llu, failed merges %llu over 4 passes\n",
	       (unsigned long long)(s1.pages_adopted - s0.pages_adopted),
	       (unsigned long long)(s1.merge_failed - s0.merge_failed));
	/*
	 * cow_policy=1: the moved store mapping is on the synchronous
	 * descriptor, which the scanner's walk skips; unregister adopts it.
	 */
	if (s0.cow_policy)
		CHECK("adopted at most once", s1.pages_adopted - s0.pages_adopted <= 1);
	else
		CHECK("adopted once", s1.pages_adopted - s0.pages_adopted == 1);
	CHECK("not retried on every pass", s1.merge_failed - s0.merge_failed <= 1);
	t_fill_page(want, 900 + 10 % 8);
	CHECK("content after the move", memcmp(dst + PG, want, PG) == 0);
	CHECK("still the store page", t_pfn_of(dst + PG) == t_pfn_of(m + 2 * PG));
	CHECK("dropped", madvise(dst + PG, PG, MADV_DONTNEED) == 0);
	CHECK("reads zeros after MADV_DONTNEED", t_page_is_zero(dst + PG));
	memcpy(dst + 2 * PG, want, PG); /* a duplicate, merged, then unmerged below */
	ksmu_scan_full();
	CHECK_RET("unregister the new place", ksmu_unregister(dst, 4 * PG), 0);
	CHECK("no store mapping left there", t_maps_in(dst, 4 * PG, &memfd) >= 0 && memfd == 0);
	CHECK("content after unmerge", memcmp(dst + 2 * PG, want, PG) == 0 &&
					   t_page_is_zero(dst + PG));
	/*
	 * Moved into a registered range and unregistered before any pass has
	 * seen it: the records there know nothing of the store mapping, and
	 * the unregister must still unmerge it - and it must see the move
	 * although the event reader may not have applied it yet.
	 */
	CHECK_RET("register again", ksmu_register(dst, 4 * PG), 0);
	CHECK("moved again", mremap(m + 11 * PG, PG, PG, MREMAP_MAYMOVE | MREMAP_FIXED,
				    dst + 3 * PG) == dst + 3 * PG);
	CHECK_RET("unregister right away", ksmu_unregister(dst, 4 * PG), 0);
	CHECK("no store mapping left behind",
	      t_maps_in(dst, 4 * PG, &memfd) >= 0 && memfd == 0);
	t_fill_page(want, 900 + 11 % 8);
	CHECK("its content", memcmp(dst + 3 * PG, want, PG) == 0);
	CHECK("dropped after unregister", madvise(dst + 3 * PG, PG, MADV_DONTNEED) == 0);
	CHECK("reads zeros", t_page_is_zero(dst + 3 * PG));
	/*
	 * The same race, many times, with another thread taking the engine
	 * lock all the time so that the reader's trylock mostly fails and the
	 * unregister comes first (without this, it failed 1 run in ~50 while
	 * the guarantee was missing).
	 */
	atomic_store(&hammer_stop, false);
	CHECK("hammer thread", pthread_create(&hammer, NULL, hammer_main, NULL) == 0);
	for (k = 12, bad = 0; k < 44; k++) {
		memfd = 0;
		if (ksmu_register(dst, 4 * PG) ||
		    mremap(m + (size_t)k * PG, PG, PG, MREMAP_MAYMOVE | MREMAP_FIXED,
			   dst + 2 * PG) != dst + 2 * PG ||
		    ksmu_unregister(dst, 4 * PG) || t_maps_in(dst, 4 * PG, &memfd) < 0 || memfd)
			bad++;
		t_fill_page(want, 900 + k % 8);
		if (memcmp(dst + 2 * PG, want, PG))
			bad++;
	}
	atomic_store(&hammer_stop, true);
	pthread_join(hammer, NULL);
	CHECK("32 moves into a registered range, each unregistered at once: unmerged", !bad);
	/* pages of @m are gone: ENOMEM, as madvise(MADV_UNMERGEABLE) says */
	CHECK_RET("unregister", ksmu_unregister(m, n * PG), -ENOMEM);
	CHECK("the rest unmerged", t_maps_in(m, n * PG, &memfd) >= 0 && memfd == 0);
	munmap(m, n * PG);
	munmap(dst, 4 * PG);
}

/*
 * The set of dropped ranges (the reader answers faults of dropped merged
 * pages with zeros from it) records every MADV_DONTNEED once something was
 * merged; a pass end keeps only what overlaps store mappings.  A dropped
 * merged page moved by mremap() before it is touched takes its drop along.
 */
static void test_zap_set(void)
{
	const size_t n = 64;
	char *m = merged_region(n, 1000), *u = t_map_anon(2 * n), *dst = t_map_anon(4);
	struct ksmu_stats s0, s1, s2;
	size_t i;

	printf("-- dropped ranges: pruned, and moved with their pages\n");
	for (i = 0; i < 2 * n; i++)
		t_fill_page(u + i * PG, 5000 + i); /* unique: never merged */
	CHECK_RET("register", ksmu_register(u, 2 * n * PG), 0);
	ksmu_scan_full();
	s0 = st();
	for (i = 0; i < 2 * n; i += 2) /* 64 separate drops of anonymous pages */
		CHECK("drop", madvise(u + i * PG, PG, MADV_DONTNEED) == 0);
	wait_events(s0.uffd_events);
	s1 = st();
	ksmu_scan_full();
	s2 = st();
	printf("   zap ranges %llu -> %llu after 64 drops -> %llu after a pass\n",
	       (unsigned long long)s0.zap_ranges, (unsigned long long)s1.zap_ranges,
	       (unsigned long long)s2.zap_ranges);
	CHECK("drops recorded", s1.zap_ranges >= s0.zap_ranges + n);
	CHECK("pruned at the pass end", s2.zap_ranges <= s0.zap_ranges);

	CHECK("merged", t_pfn_of(m + 9 * PG) == t_pfn_of(m + PG));
	CHECK("dropped", madvise(m + 9 * PG, PG, MADV_DONTNEED) == 0);
	CHECK("moved untouched",
	      mremap(m + 9 * PG, PG, PG, MREMAP_MAYMOVE | MREMAP_FIXED, dst + PG) == dst + PG);
	CHECK("reads zeros at its new place", t_page_is_zero(dst + PG));
	CHECK_RET("unregister", ksmu_unregister(u, 2 * n * PG), 0);
	CHECK_RET("unregister", ksmu_unregister(m, n * PG), -ENOMEM);
	munmap(u, 2 * n * PG);
	munmap(m, n * PG);
	munmap(dst, 4 * PG);
}

int main(void)
{
	struct ksmu_stats s;

	CHECK_RET("run 0", ksmu_set_run(0), 0);
	s = st();
	if (!s.merging) {
		printf("SKIP: merging unavailable here (needs userfaultfd with MOVE and "
		       "MINOR_SHMEM, without USER_MODE_ONLY)\n");
		return T_EXIT_SKIP;
	}
	if (!t_pfn_of(&s)) {
		printf("SKIP: PFNs hidden in /proc/self/pagemap (not root)\n");
		return T_EXIT_SKIP;
	}
	test_pfn_pss();
	test_vma_count();
	test_cow();
	test_dontneed();
	test_munmap();
	test_mremap_adopt();
	test_zap_set();
	test_unregister_and_run2();
	test_zero_pages();
	test_pinned();
	test_fork();
	return t_exit();
}
