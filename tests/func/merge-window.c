/* SPDX-License-Identifier: MIT */
/* Description: the merge window (src/merge.c) replaces private anonymous
 * pages by MAP_PRIVATE mappings of store (memfd) pages exactly when their
 * content is the expected one, and otherwise leaves them bit-identical at
 * the same physical page.  Proven the kernel-selftest way: equal PFNs in
 * /proc/self/pagemap after merging two pages into one store page, Pss in
 * /proc/self/smaps_rollup dropping by ~8 MiB when 2048 copies share one
 * store page, a write after merge getting a private copy, -EAGAIN/-ENOENT
 * leaving pages (and VMAs) as they were, a 64-page run costing 2 VMAs, and
 * argument errors.  Then the guarantee under stress: a writer and a reader
 * thread hammer the page being merged (and, in a second variant, a thread
 * writes into it and reads it through read(2)/write(2) of a pipe, i.e. in
 * kernel mode) while the main thread merges; no write may be lost, no
 * reader may see a torn or stale value, no kernel access may fail with
 * EFAULT.  MERGE_STRESS_CYCLES sets the cycles per variant (default 2000;
 * 20000 for the long run).  Last, fork() during merges: a child never sees
 * a page of an open window as empty. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "compat.h"
#include "merge.h"
#include "test.h"
#include "t_mem.h"
#include "t_merge.h"
#include "util.h"

#define PG 4096UL

static int have_pfn;

/* ---------------------------------------------------------------- helpers */

/* ---------------------------------------------------------------- basics */

static void test_basic(struct ksmu_merger *m)
{
	unsigned char x[PG], y[PG], before[PG];
	char *r = t_map_anon(8);
	int fd = t_store_new(4);
	uint64_t spfn, pfn3;
	int n0;

	printf("-- basic: two pages into one store page\n");
	t_fill_page(x, 1);
	t_fill_page(y, 2);
	memcpy(r + 1 * PG, x, PG);
	memcpy(r + 5 * PG, x, PG);
	memcpy(r + 3 * PG, y, PG);
	memset(r + 0 * PG, 1, PG);
	memset(r + 7 * PG, 1, PG);
	t_store_put(fd, 0, x);

	have_pfn = t_pfn_of(r + PG) != 0;
	if (!have_pfn)
		printf("   (PFNs hidden: not root; PFN checks skipped)\n");
	n0 = t_maps_in(r, 8 * PG, NULL);
	CHECK("one VMA", n0 == 1);

	CHECK_RET("merge page 1", ksmu_merge_page(m, (uintptr_t)(r + PG), fd, 0, x), 0);
	CHECK_RET("merge page 5", ksmu_merge_page(m, (uintptr_t)(r + 5 * PG), fd, 0, x), 0);
	CHECK("content 1", !memcmp(r + PG, x, PG));
	CHECK("content 5", !memcmp(r + 5 * PG, x, PG));
	CHECK("populated at once", t_present(r + PG) && t_present(r + 5 * PG));
	if (have_pfn) {
		spfn = t_store_pfn(fd, 0);
		printf("   pfn page1 %#" PRIx64 " page5 %#" PRIx64 " store %#" PRIx64 "\n",
		       t_pfn_of(r + PG), t_pfn_of(r + 5 * PG), spfn);
		CHECK("same PFN", t_pfn_of(r + PG) == t_pfn_of(r + 5 * PG));
		CHECK("store PFN", spfn && t_pfn_of(r + PG) == spfn);
	}
	/* pages 1 and 5 are VMAs of their own now: 1 -> 5 */
	printf("   VMAs %d -> %d\n", n0, t_maps_in(r, 8 * PG, NULL));
	CHECK("2 VMAs per lone page", t_maps_in(r, 8 * PG, NULL) == n0 + 4);

	printf("-- write after merge: private copy\n");
	r[PG + 100] = 0x5a;
	CHECK("written", (unsigned char)r[PG + 100] == 0x5a);
	CHECK("rest of the page kept",
	      !memcmp(r + PG, x, 100) && !memcmp(r + PG + 101, x + 101, PG - 101));
	CHECK("other page unchanged", !memcmp(r + 5 * PG, x, PG));
	CHECK("store unchanged", t_store_equals(fd, 0, x));
	if (have_pfn) {
		CHECK("writer got its own page", t_pfn_of(r + PG) != t_pfn_of(r + 5 * PG));
		CHECK("store still shared", t_pfn_of(r + 5 * PG) == t_store_pfn(fd, 0));
	}

	printf("-- a merged page cannot be merged again (file-backed VMA)\n");
	CHECK_RET("re-merge", ksmu_merge_page(m, (uintptr_t)(r + 5 * PG), fd, 0, x), -EINVAL);
	CHECK("still mapped", !memcmp(r + 5 * PG, x, PG));

	printf("-- content differs: -EAGAIN, page moved back\n");
	n0 = t_maps_in(r, 8 * PG, NULL);
	memcpy(before, r + 3 * PG, PG);
	pfn3 = t_pfn_of(r + 3 * PG);
	CHECK_RET("differs", ksmu_merge_page(m, (uintptr_t)(r + 3 * PG), fd, 0, x), -EAGAIN);
	CHECK("bit-identical", !memcmp(r + 3 * PG, before, PG));
	CHECK("same PFN", t_pfn_of(r + 3 * PG) == pfn3);
	CHECK("VMAs merged back", t_maps_in(r, 8 * PG, NULL) == n0);
	CHECK("stats differ", m->stats.differ >= 1);

	printf("-- never touched: -ENOENT\n");
	CHECK("absent", !t_present(r + 6 * PG));
	CHECK_RET("absent", ksmu_merge_page(m, (uintptr_t)(r + 6 * PG), fd, 0, x), -ENOENT);
	CHECK("still absent", !t_present(r + 6 * PG));
	CHECK("VMAs unchanged", t_maps_in(r, 8 * PG, NULL) == n0);
	r[6 * PG] = 3; /* would hang if the window had left it registered */
	CHECK("usable", r[6 * PG] == 3 && r[6 * PG + 1] == 0);

	munmap(r, 8 * PG);
	close(fd);
}

static void test_errors(struct ksmu_merger *m)
{
	unsigned char x[PG];
	char *r = t_map_anon(4), *ro;
	int fd = t_store_new(2);
	size_t bad = 99;

	printf("-- argument and mapping errors\n");
	t_fill_page(x, 3);
	memcpy(r, x, PG);
	memcpy(r + PG, x, PG);
	t_store_put(fd, 0, x);
	CHECK_RET("unaligned", ksmu_merge_page(m, (uintptr_t)r + 8, fd, 0, x), -EINVAL);
	CHECK_RET("beyond store", ksmu_merge_page(m, (uintptr_t)r, fd, 2, x), -ERANGE);
	CHECK_RET("expected inside", ksmu_merge_page(m, (uintptr_t)r, fd, 0, r), -EDEADLK);
	CHECK_RET("too long",
		  ksmu_merge_run(m, (uintptr_t)r, KSMU_MERGE_MAX_RUN + 1, fd, 0, x, &bad), -E2BIG);
	CHECK_RET("bad fd", ksmu_merge_page(m, (uintptr_t)r, -1, 0, x), -EBADF);
	CHECK_RET("scratch", ksmu_merge_page(m, m->scratch, fd, 0, x), -EINVAL);
	ro = mmap(NULL, PG, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	CHECK_RET("read-only", ksmu_merge_page(m, (uintptr_t)ro, fd, 0, x), -EINVAL);
	munmap(ro, PG);
	CHECK_RET("unmapped", ksmu_merge_page(m, (uintptr_t)ro, fd, 0, x), -EINVAL);
	CHECK("pages intact", !memcmp(r, x, PG) && !memcmp(r + PG, x, PG));
	CHECK_RET("then fine", ksmu_merge_page(m, (uintptr_t)r, fd, 0, x), 0);
	munmap(r, 4 * PG);
	close(fd);
}

static void test_pss(struct ksmu_merger *m)
{
	const size_t n = 2048;
	unsigned char x[PG];
	char *r = t_map_anon(n);
	int fd = t_store_new(1);
	long before, after, rbefore, rafter, kept, ideal = (long)((n - 1) * PG / 1024);
	size_t i, merged = 0;

	printf("-- Pss: %zu copies into one store page\n", n);
	t_fill_page(x, 4);
	for (i = 0; i < n; i++)
		memcpy(r + i * PG, x, PG);
	t_store_put(fd, 0, x);
	before = t_pss_kb();
	rbefore = t_region_pss_kb(r, n * PG);
	for (i = 0; i < n; i++)
		merged += ksmu_merge_page(m, (uintptr_t)(r + i * PG), fd, 0, x) == 0;
	/* the merger keeps a few old copies for one MADV_DONTNEED (merge.c) */
	kept = t_region_pss_kb((void *)m->scratch, m->scratch_pages * PG);
	printf("   old copies kept in the scratch area: %ld kB\n", kept);
	CHECK("old copies kept are bounded",
	      kept > 0 && kept <= (long)(KSMU_MERGE_SCRATCH_KEEP * PG / 1024));
	ksmu_merger_flush_scratch(m);
	CHECK("flush frees the old copies",
	      t_region_pss_kb((void *)m->scratch, m->scratch_pages * PG) == 0);
	after = t_pss_kb();
	rafter = t_region_pss_kb(r, n * PG);
	printf("   merged %zu; Pss of the process %ld kB -> %ld kB (drop %ld kB), of the region "
	       "%ld kB -> %ld kB (drop %ld kB); ideal drop %ld kB; VMAs %d\n",
	       merged, before, after, before - after, rbefore, rafter, rbefore - rafter, ideal,
	       t_maps_in(r, n * PG, NULL));
	CHECK("all merged", merged == n);
	/* smaps_rollup also counts the runtime's own growth (sanitizers) */
	CHECK("process Pss dropped by ~8 MiB", before - after >= ideal - 1024);
	CHECK("region Pss dropped by 8 MiB - 4 KiB", rbefore - rafter >= ideal - 8);
	for (i = 0; i < n; i++) {
		if (memcmp(r + i * PG, x, PG))
			break;
	}
	CHECK("content", i == n);
	if (have_pfn)
		CHECK("one PFN", t_pfn_of(r) == t_pfn_of(r + (n - 1) * PG));
	munmap(r, n * PG);
	close(fd);
}

static void test_run(struct ksmu_merger *m)
{
	const size_t n = 64, total = 256, at = 64, sidx = 16;
	unsigned char *exp = malloc(n * PG), *save = malloc(n * PG);
	uint64_t pfns[64];
	char *r = t_map_anon(total);
	int fd = t_store_new(sidx + 2 * n), n0;
	size_t i, bad = 99;
	int ok;

	printf("-- run of %zu pages, one mmap\n", n);
	memset(r, 0x11, total * PG);
	for (i = 0; i < n; i++) {
		t_fill_page(exp + i * PG, 100 + i);
		t_store_put(fd, sidx + i, exp + i * PG);
	}
	memcpy(r + at * PG, exp, n * PG);
	n0 = t_maps_in(r, total * PG, NULL);
	CHECK_RET("run", ksmu_merge_run(m, (uintptr_t)(r + at * PG), n, fd, sidx, exp, &bad), 0);
	printf("   VMAs %d -> %d\n", n0, t_maps_in(r, total * PG, NULL));
	CHECK("+2 VMAs for the run", t_maps_in(r, total * PG, NULL) == n0 + 2);
	CHECK("content", !memcmp(r + at * PG, exp, n * PG));
	if (have_pfn) {
		for (ok = 1, i = 0; i < n; i++)
			ok &= t_pfn_of(r + (at + i) * PG) == t_store_pfn(fd, sidx + i);
		CHECK("each page maps its store page", ok);
	}

	printf("-- an adjacent run of the next store pages joins the VMA\n");
	for (i = 0; i < n; i++) {
		t_fill_page(exp + i * PG, 200 + i);
		t_store_put(fd, sidx + n + i, exp + i * PG);
	}
	memcpy(r + (at + n) * PG, exp, n * PG);
	n0 = t_maps_in(r, total * PG, NULL);
	CHECK_RET("run 2",
		  ksmu_merge_run(m, (uintptr_t)(r + (at + n) * PG), n, fd, sidx + n, exp, &bad), 0);
	printf("   VMAs %d -> %d\n", n0, t_maps_in(r, total * PG, NULL));
	CHECK("no VMA added", t_maps_in(r, total * PG, NULL) == n0);
	CHECK("content 2", !memcmp(r + (at + n) * PG, exp, n * PG));
	munmap(r, total * PG);

	printf("-- run with one differing page: nothing merged, culprit reported\n");
	r = t_map_anon(total);
	memset(r, 0x22, total * PG);
	for (i = 0; i < n; i++)
		t_fill_page(exp + i * PG, 100 + i);
	memcpy(r + at * PG, exp, n * PG);
	r[(at + 10) * PG + 7] ^= 1;
	memcpy(save, r + at * PG, n * PG);
	for (i = 0; i < n; i++)
		pfns[i] = t_pfn_of(r + (at + i) * PG);
	n0 = t_maps_in(r, total * PG, NULL);
	CHECK_RET("run differs",
		  ksmu_merge_run(m, (uintptr_t)(r + at * PG), n, fd, sidx, exp, &bad), -EAGAIN);
	CHECK("culprit 10", bad == 10);
	CHECK("all bit-identical", !memcmp(r + at * PG, save, n * PG));
	for (ok = 1, i = 0; i < n; i++)
		ok &= t_pfn_of(r + (at + i) * PG) == pfns[i];
	CHECK("all same PFNs", ok);
	CHECK("VMAs unchanged", t_maps_in(r, total * PG, NULL) == n0);

	printf("-- run with a hole: -ENOENT, culprit reported\n");
	r[(at + 10) * PG + 7] ^= 1;
	memcpy(save, r + at * PG, n * PG);
	madvise(r + (at + 20) * PG, PG, MADV_DONTNEED);
	for (i = 0; i < n; i++)
		pfns[i] = t_pfn_of(r + (at + i) * PG);
	CHECK_RET("run hole", ksmu_merge_run(m, (uintptr_t)(r + at * PG), n, fd, sidx, exp, &bad),
		  -ENOENT);
	CHECK("culprit 20", bad == 20);
	CHECK("hole still a hole", !t_present(r + (at + 20) * PG));
	for (ok = 1, i = 0; i < n; i++)
		ok &= t_pfn_of(r + (at + i) * PG) == pfns[i];
	CHECK("all same PFNs", ok);
	/* (reading the hole would fault a page in: compare around it) */
	CHECK("all bit-identical", !memcmp(r + at * PG, save, 20 * PG) &&
				       !memcmp(r + (at + 21) * PG, save + 21 * PG, (n - 21) * PG));
	CHECK("VMAs unchanged", t_maps_in(r, total * PG, NULL) == n0);
	munmap(r, total * PG);
	close(fd);
	free(exp);
	free(save);
}

/* ---------------------------------------------------------------- stress */

/*
 * Page layout: word A at 0 and word Z at 4088 are written by the writer
 * thread (the same value, one after the other), word B at 2048 by the piper
 * thread through read(2); every other byte is the constant template.
 * A value is (seq << 16) | check(seq): a torn or invented value fails the
 * check, and seq only grows, so a stale value is seen going backwards.
 */
#define OFF_A 0
#define OFF_B 2048
#define OFF_F 1024 /* 16 template bytes the piper reads in kernel mode */
#define OFF_Z (PG - 8)
#define STRESS_PAGES 512

struct stress {
	char *region;
	int store_fd;
	int kernel;
	size_t cur;		     /* page being merged; atomic */
	size_t arrived_w, arrived_p; /* writer, piper: at page cur now; atomic */
	int pause_req;		     /* atomic */
	int paused;		     /* atomic */
	int stop;		     /* atomic */
	int nthreads;
	unsigned char tmpl[PG];
	/* written by one thread each, read by main while paused */
	uint64_t last_a[STRESS_PAGES];			     /* writer: last value written */
	uint64_t last_b[STRESS_PAGES];			     /* piper: last value read(2) into B */
	uint64_t pub_b[STRESS_PAGES];			     /* piper -> main, atomic */
	uint64_t seen_a[STRESS_PAGES], seen_z[STRESS_PAGES]; /* reader */
	uint64_t writes, reads, reader_torn, reader_stale;
	uint64_t piper_ops, piper_efault, piper_err, piper_stale, piper_filler;
};

static void maybe_pause(struct stress *s)
{
	if (!__atomic_load_n(&s->pause_req, __ATOMIC_ACQUIRE))
		return;
	__atomic_fetch_add(&s->paused, 1, __ATOMIC_ACQ_REL);
	while (__atomic_load_n(&s->pause_req, __ATOMIC_ACQUIRE))
		sched_yield();
	__atomic_fetch_sub(&s->paused, 1, __ATOMIC_ACQ_REL);
}

static char *cur_page(struct stress *s, size_t *idx)
{
	*idx = __atomic_load_n(&s->cur, __ATOMIC_ACQUIRE);
	return s->region + *idx * PG;
}

/*
 * Wait for the main thread to move on to another page (or to pause or
 * stop), so that a page is written a bounded number of times: the merge
 * then sometimes finds it settled (merged) and sometimes meets a write
 * (-EAGAIN, or the write sleeps in the window, or breaks COW after it).
 */
static void wait_next(struct stress *s, size_t idx)
{
	while (__atomic_load_n(&s->cur, __ATOMIC_ACQUIRE) == idx &&
	       !__atomic_load_n(&s->pause_req, __ATOMIC_ACQUIRE) &&
	       !__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE))
		sched_yield();
}

static void write_a(struct stress *s, size_t idx, uint64_t v)
{
	char *p = s->region + idx * PG;

	__atomic_store_n(t_word(p, OFF_A), v, __ATOMIC_RELAXED);
	__atomic_store_n(t_word(p, OFF_Z), v, __ATOMIC_RELAXED);
	s->last_a[idx] = v;
	s->writes++;
}

/*
 * Per page: first one write to the previous page (probably merged: the
 * write breaks COW, "unmerge by write"), then 0-3 writes to the current
 * one, a random few microseconds apart, racing with its merge; every 4th
 * page is hot: written until the main thread moves on (its merge mostly
 * fails with -EAGAIN, and writes land in open windows).
 */
static void *writer_fn(void *arg)
{
	struct stress *s = arg;
	uint64_t seq = 0, rng = 0x1234567;
	unsigned burst;
	size_t idx;

	while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
		maybe_pause(s);
		cur_page(s, &idx);
		if (idx)
			write_a(s, idx - 1, t_mkval(++seq));
		__atomic_store_n(&s->arrived_w, idx, __ATOMIC_RELEASE);
		for (burst = (unsigned)(t_xorshift(&rng) % 4); burst; burst--) {
			t_spin((unsigned)(t_xorshift(&rng) % 20000));
			write_a(s, idx, t_mkval(++seq));
		}
		while (idx % 4 == 3 && __atomic_load_n(&s->cur, __ATOMIC_ACQUIRE) == idx &&
		       !__atomic_load_n(&s->pause_req, __ATOMIC_ACQUIRE) &&
		       !__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
			t_spin((unsigned)(t_xorshift(&rng) % 20000));
			write_a(s, idx, t_mkval(++seq));
		}
		wait_next(s, idx);
	}
	return NULL;
}

static void reader_check(struct stress *s, uint64_t v, uint64_t *seen)
{
	if (!t_wellformed(v))
		s->reader_torn++;
	else if (v < *seen)
		s->reader_stale++;
	else
		*seen = v;
}

static void *reader_fn(void *arg)
{
	struct stress *s = arg;
	size_t idx;
	char *p;

	/* the current page and the previous one (written once more) */
	while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
		maybe_pause(s);
		p = cur_page(s, &idx);
		reader_check(s, __atomic_load_n(t_word(p, OFF_A), __ATOMIC_RELAXED),
			     &s->seen_a[idx]);
		reader_check(s, __atomic_load_n(t_word(p, OFF_Z), __ATOMIC_RELAXED),
			     &s->seen_z[idx]);
		if (idx) {
			p -= PG;
			reader_check(s, __atomic_load_n(t_word(p, OFF_A), __ATOMIC_RELAXED),
				     &s->seen_a[idx - 1]);
			reader_check(s, __atomic_load_n(t_word(p, OFF_Z), __ATOMIC_RELAXED),
				     &s->seen_z[idx - 1]);
		}
		if ((++s->reads & 63) == 0)
			sched_yield();
	}
	return NULL;
}

static void piper_count(struct stress *s, ssize_t r, size_t want)
{
	if (r < 0 && errno == EFAULT)
		s->piper_efault++;
	else if (r != (ssize_t)want)
		s->piper_err++;
}

/* One kernel-mode write into word B of page @idx, and kernel-mode reads back. */
static void pipe_round(struct stress *s, size_t idx, uint64_t v, int in[2], int out[2])
{
	char *p = s->region + idx * PG;
	unsigned char f[16];
	uint64_t got;
	ssize_t r;

	if (write(in[1], &v, 8) != 8)
		s->piper_err++;
	r = read(in[0], p + OFF_B, 8); /* copy_to_user into the page */
	piper_count(s, r, 8);
	if (r != 8) /* drain the pipe for the next round */
		(void)!read(in[0], &got, 8);
	s->last_b[idx] = v;
	__atomic_store_n(&s->pub_b[idx], v, __ATOMIC_RELEASE);

	r = write(out[1], p + OFF_B, 8); /* copy_from_user out of the page */
	piper_count(s, r, 8);
	if (r == 8 && (read(out[0], &got, 8) != 8 || got != v))
		s->piper_stale++;
	r = write(out[1], p + OFF_F, sizeof(f));
	piper_count(s, r, sizeof(f));
	if (r == (ssize_t)sizeof(f) && (read(out[0], f, sizeof(f)) != (ssize_t)sizeof(f) ||
					memcmp(f, s->tmpl + OFF_F, sizeof(f))))
		s->piper_filler++;
	s->piper_ops++;
}

/*
 * Writes into the pages and reads them back, all in kernel mode (read(2)
 * and write(2) of pipes), in the writer's pattern: the previous page once,
 * then 0-2 times the current one; every 4th page (another than the
 * writer's) is hot.
 */
static void *piper_fn(void *arg)
{
	struct stress *s = arg;
	int in[2], out[2];
	uint64_t seq = 0, rng = 0x89abcdef;
	unsigned burst;
	size_t idx;

	if (pipe(in) < 0 || pipe(out) < 0) {
		perror("pipe");
		exit(T_EXIT_FAIL);
	}
	while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
		maybe_pause(s);
		cur_page(s, &idx);
		if (idx)
			pipe_round(s, idx - 1, t_mkval(++seq), in, out);
		__atomic_store_n(&s->arrived_p, idx, __ATOMIC_RELEASE);
		for (burst = (unsigned)(t_xorshift(&rng) % 3); burst; burst--) {
			t_spin((unsigned)(t_xorshift(&rng) % 20000));
			pipe_round(s, idx, t_mkval(++seq), in, out);
		}
		while (idx % 4 == 1 && __atomic_load_n(&s->cur, __ATOMIC_ACQUIRE) == idx &&
		       !__atomic_load_n(&s->pause_req, __ATOMIC_ACQUIRE) &&
		       !__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
			t_spin((unsigned)(t_xorshift(&rng) % 20000));
			pipe_round(s, idx, t_mkval(++seq), in, out);
		}
		wait_next(s, idx);
	}
	close(in[0]);
	close(in[1]);
	close(out[0]);
	close(out[1]);
	return NULL;
}

static void stress_pause(struct stress *s)
{
	__atomic_store_n(&s->pause_req, 1, __ATOMIC_RELEASE);
	while (__atomic_load_n(&s->paused, __ATOMIC_ACQUIRE) != s->nthreads)
		sched_yield();
}

static void stress_resume(struct stress *s)
{
	__atomic_store_n(&s->pause_req, 0, __ATOMIC_RELEASE);
	while (__atomic_load_n(&s->paused, __ATOMIC_ACQUIRE) != 0)
		sched_yield();
}

/* Called while paused: every page holds exactly what was last written. */
static size_t stress_verify(struct stress *s)
{
	unsigned char want[PG];
	size_t i, bad = 0;

	for (i = 0; i < STRESS_PAGES; i++) {
		memcpy(want, s->tmpl, PG);
		*t_word((char *)want, OFF_A) = s->last_a[i];
		*t_word((char *)want, OFF_Z) = s->last_a[i];
		*t_word((char *)want, OFF_B) = s->last_b[i];
		if (memcmp(s->region + i * PG, want, PG)) {
			if (bad++ < 5)
				fprintf(stderr,
					"   page %zu: A %#" PRIx64 " Z %#" PRIx64 " B %#" PRIx64
					" want A %#" PRIx64 " B %#" PRIx64 "\n",
					i, *t_word(s->region + i * PG, OFF_A),
					*t_word(s->region + i * PG, OFF_Z),
					*t_word(s->region + i * PG, OFF_B), s->last_a[i],
					s->last_b[i]);
		}
	}
	return bad;
}

/* Called while paused (or before the threads start): a fresh region. */
static void stress_phase(struct stress *s)
{
	size_t i;

	if (s->region)
		munmap(s->region, STRESS_PAGES * PG);
	s->region = t_map_anon(STRESS_PAGES);
	for (i = 0; i < STRESS_PAGES; i++) {
		memcpy(s->region + i * PG, s->tmpl, PG);
		s->last_a[i] = s->last_b[i] = s->pub_b[i] = t_mkval(0);
		s->seen_a[i] = s->seen_z[i] = 0;
		*t_word(s->region + i * PG, OFF_A) = t_mkval(0);
		*t_word(s->region + i * PG, OFF_Z) = t_mkval(0);
		*t_word(s->region + i * PG, OFF_B) = t_mkval(0);
	}
	__atomic_store_n(&s->arrived_w, SIZE_MAX, __ATOMIC_RELEASE);
	__atomic_store_n(&s->arrived_p, SIZE_MAX, __ATOMIC_RELEASE);
	__atomic_store_n(&s->cur, 0, __ATOMIC_RELEASE);
}

static void test_stress(struct ksmu_merger *m, int kernel, unsigned long cycles)
{
	struct stress *s = calloc(1, sizeof(*s));
	unsigned long c, merged = 0, differ = 0, other = 0;
	uint64_t rng = 42, t0;
	struct ksmu_merge_stats st0 = m->stats;
	unsigned char exp[PG];
	pthread_t th[3];
	size_t idx, lost = 0;
	struct timespec a, b;
	int i, r;
	char *p;

	printf("-- stress (%s): %lu cycles, writer + reader%s\n", kernel ? "kernel" : "user",
	       cycles, kernel ? " + read(2)/write(2) of the page" : "");
	t_fill_page(s->tmpl, 77);
	s->kernel = kernel;
	s->store_fd = t_store_new(STRESS_PAGES);
	stress_phase(s);
	s->nthreads = kernel ? 3 : 2;
	clock_gettime(CLOCK_MONOTONIC, &a);
	pthread_create(&th[0], NULL, writer_fn, s);
	pthread_create(&th[1], NULL, reader_fn, s);
	if (kernel)
		pthread_create(&th[2], NULL, piper_fn, s);

	for (c = 0; c < cycles; c++) {
		idx = c % STRESS_PAGES;
		if (idx == 0 && c) {
			stress_pause(s);
			lost += stress_verify(s);
			stress_phase(s);
			stress_resume(s);
		}
		__atomic_store_n(&s->cur, idx, __ATOMIC_RELEASE);
		p = s->region + idx * PG;
		/* wait for the writers to reach the page, then race with them */
		while (__atomic_load_n(&s->arrived_w, __ATOMIC_ACQUIRE) != idx ||
		       (kernel && __atomic_load_n(&s->arrived_p, __ATOMIC_ACQUIRE) != idx))
			sched_yield();
		t_spin((unsigned)(t_xorshift(&rng) % 20000));

		/* expected = the page as it is now (atomic reads of the hot words) */
		memcpy(exp, s->tmpl, PG);
		*t_word((char *)exp, OFF_A) = __atomic_load_n(t_word(p, OFF_A), __ATOMIC_RELAXED);
		*t_word((char *)exp, OFF_Z) = __atomic_load_n(t_word(p, OFF_Z), __ATOMIC_RELAXED);
		*t_word((char *)exp, OFF_B) = __atomic_load_n(&s->pub_b[idx], __ATOMIC_ACQUIRE);
		t_store_put(s->store_fd, idx, exp);
		r = ksmu_merge_page(m, (uintptr_t)p, s->store_fd, idx, exp);
		if (r == 0) {
			merged++;
		} else if (r == -EAGAIN) {
			differ++;
		} else {
			if (other++ < 5)
				fprintf(stderr, "   cycle %lu: merge: %s\n", c, strerror(-r));
		}
	}
	stress_pause(s);
	lost += stress_verify(s);
	__atomic_store_n(&s->stop, 1, __ATOMIC_RELEASE);
	stress_resume(s);
	for (i = 0; i < s->nthreads; i++)
		pthread_join(th[i], NULL);
	clock_gettime(CLOCK_MONOTONIC, &b);
	t0 = (uint64_t)(b.tv_sec - a.tv_sec) * 1000000000u + (uint64_t)b.tv_nsec -
	     (uint64_t)a.tv_nsec;

	printf("   %lu cycles in %.2f s: merged %lu, -EAGAIN %lu, other %lu; writes %" PRIu64
	       ", reads %" PRIu64 " (torn %" PRIu64 ", stale %" PRIu64 ")\n",
	       cycles, (double)t0 / 1e9, merged, differ, other, s->writes, s->reads, s->reader_torn,
	       s->reader_stale);
	if (kernel)
		printf("   kernel-mode ops %" PRIu64 ": EFAULT %" PRIu64 ", other errors %" PRIu64
		       ", stale read-back %" PRIu64 ", wrong template %" PRIu64 "\n",
		       s->piper_ops, s->piper_efault, s->piper_err, s->piper_stale,
		       s->piper_filler);
	printf("   windows %" PRIu64 " (a thread slept in %" PRIu64 "), mean %.1f us, max so far "
	       "%.1f us; lost writes (pages) %zu\n",
	       m->stats.windows - st0.windows, m->stats.windows_contended - st0.windows_contended,
	       (double)(m->stats.window_ns - st0.window_ns) / 1e3 /
		   (double)KSMU_MAX(m->stats.windows - st0.windows, 1),
	       (double)m->stats.window_ns_max / 1e3, lost);
	CHECK("threads met open windows", m->stats.windows_contended > st0.windows_contended);
	CHECK("no other merge result", other == 0);
	CHECK("merges happened", merged >= cycles / 20);
	CHECK("no write lost", lost == 0);
	CHECK("reader: no torn value", s->reader_torn == 0);
	CHECK("reader: no stale value", s->reader_stale == 0);
	CHECK("threads ran", s->writes > 0 && s->reads > 0);
	if (kernel) {
		CHECK("kernel access: no EFAULT", s->piper_efault == 0);
		CHECK("kernel access: no error", s->piper_err == 0);
		CHECK("kernel read-back sees its write", s->piper_stale == 0);
		CHECK("kernel read of template", s->piper_filler == 0);
		CHECK("piper ran", s->piper_ops > 0);
	}
	munmap(s->region, STRESS_PAGES * PG);
	close(s->store_fd);
	free(s);
}

/* ---------------------------------------------------------------- fork */

#define FORK_PAGES 1024
#define FORK_PATTERNS 16
#define FORK_MIN_FORKS 200
#define FORK_MAX_ROUNDS 50

/*
 * @cur is the page being merged, published before each merge: a child,
 * whose memory is a snapshot of the parent's at fork time, checks the
 * pages around the one its parent was merging when it forked.  @lock keeps
 * forks out while the main thread replaces the region between rounds.
 */
struct forker {
	pthread_mutex_t lock;
	char *region;
	size_t cur;	/* atomic */
	int stop;	/* atomic */
	unsigned forks; /* atomic */
	unsigned child_failures;
};

static int page_ok(const char *p, size_t i)
{
	unsigned char x[PG];

	t_fill_page(x, 1000 + i % FORK_PATTERNS);
	return !memcmp(p, x, PG);
}

static void *forker_fn(void *arg)
{
	struct forker *f = arg;
	size_t i, cur;
	int status;
	pid_t pid;

	while (!__atomic_load_n(&f->stop, __ATOMIC_ACQUIRE)) {
		pthread_mutex_lock(&f->lock);
		pid = fork();
		if (pid == 0) {
			cur = __atomic_load_n(&f->cur, __ATOMIC_ACQUIRE);
			for (i = cur ? cur - 1 : 0; i <= cur + 1 && i < FORK_PAGES; i++) {
				if (!page_ok(f->region + i * PG, i))
					_exit(1);
			}
			_exit(0);
		}
		pthread_mutex_unlock(&f->lock);
		if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
		    WEXITSTATUS(status))
			f->child_failures++;
		__atomic_fetch_add(&f->forks, 1, __ATOMIC_RELEASE);
	}
	return NULL;
}

static void fork_region(struct forker *f, unsigned char (*x)[PG])
{
	size_t i;

	pthread_mutex_lock(&f->lock);
	if (f->region)
		munmap(f->region, FORK_PAGES * PG);
	f->region = t_map_anon(FORK_PAGES);
	for (i = 0; i < FORK_PAGES; i++)
		memcpy(f->region + i * PG, x[i % FORK_PATTERNS], PG);
	__atomic_store_n(&f->cur, 0, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&f->lock);
}

static void test_fork(struct ksmu_merger *m)
{
	struct forker f = {.lock = PTHREAD_MUTEX_INITIALIZER};
	unsigned char x[FORK_PATTERNS][PG];
	unsigned long merged = 0, busy = 0, other = 0;
	int fd = t_store_new(FORK_PATTERNS), r, round;
	pthread_t th;
	size_t i;
	char *p;

	printf("-- fork() while merging: children never see an open window\n");
	for (i = 0; i < FORK_PATTERNS; i++) {
		t_fill_page(x[i], 1000 + i);
		t_store_put(fd, i, x[i]);
	}
	fork_region(&f, x);
	pthread_create(&th, NULL, forker_fn, &f);
	for (round = 0; round < FORK_MAX_ROUNDS; round++) {
		if (round)
			fork_region(&f, x);
		for (i = 0; i < FORK_PAGES; i++) {
			p = f.region + i * PG;
			__atomic_store_n(&f.cur, i, __ATOMIC_RELEASE);
			/*
			 * After a fork the page is COW-shared (then, until
			 * written, not exclusive even once the child is gone):
			 * UFFDIO_MOVE refuses it.  Make it exclusive again
			 * without changing it.
			 */
			madvise(p, PG, MADV_POPULATE_WRITE);
			r = ksmu_merge_page(m, (uintptr_t)p, fd, i % FORK_PATTERNS,
					    x[i % FORK_PATTERNS]);
			if (r == 0)
				merged++;
			else if (r == -EBUSY)
				busy++;
			else if (other++ < 5)
				fprintf(stderr, "   page %zu: %s\n", i, strerror(-r));
		}
		if (__atomic_load_n(&f.forks, __ATOMIC_ACQUIRE) >= FORK_MIN_FORKS)
			break;
	}
	__atomic_store_n(&f.stop, 1, __ATOMIC_RELEASE);
	pthread_join(th, NULL);
	for (i = 0; i < FORK_PAGES; i++) {
		if (!page_ok(f.region + i * PG, i))
			break;
	}
	printf("   %u forks, %u failed children; merged %lu, -EBUSY %lu, other %lu\n", f.forks,
	       f.child_failures, merged, busy, other);
	CHECK("forks happened", f.forks > 0);
	CHECK("children saw every page", f.child_failures == 0);
	CHECK("parent content", i == FORK_PAGES);
	CHECK("merges happened", merged > 0);
	CHECK("no other result", other == 0);
	munmap(f.region, FORK_PAGES * PG);
	close(fd);
}

int main(void)
{
	struct ksmu_merger m;
	unsigned long cycles = 2000;
	const char *env = getenv("MERGE_STRESS_CYCLES");

	t_merger_init(&m);
	if (env && *env)
		cycles = strtoul(env, NULL, 0);

	test_basic(&m);
	test_errors(&m);
	test_pss(&m);
	test_run(&m);
	test_stress(&m, 0, cycles);
	test_stress(&m, 1, cycles);
	test_fork(&m);

	printf("merger: windows %" PRIu64 " (contended %" PRIu64 ") merged pages %" PRIu64
	       " busy %" PRIu64 " differ %" PRIu64 " absent %" PRIu64 " errors %" PRIu64
	       " lost %" PRIu64 " populate_failed %" PRIu64 " window max %.1f us\n",
	       m.stats.windows, m.stats.windows_contended, m.stats.pages_merged, m.stats.busy,
	       m.stats.differ, m.stats.absent, m.stats.errors, m.stats.lost,
	       m.stats.populate_failed, (double)m.stats.window_ns_max / 1e3);
	CHECK("nothing lost", m.stats.lost == 0);
	ksmu_merger_destroy(&m);
	close(t_pm_fd);
	return t_exit();
}
