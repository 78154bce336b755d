/* SPDX-License-Identifier: MIT */
/* Description: the unmerge window (ksmu_unmerge_run() in src/merge.c)
 * turns a merged page (a MAP_PRIVATE mapping of a store memfd page) back
 * into a private anonymous page with the content the application sees, so
 * that it can be merged again.  Checked: after unmerge the page is in an
 * anonymous VMA (no memfd in /proc/self/maps), has its own PFN (not the
 * store page's), keeps its content, and ksmu_merge_page() accepts it again;
 * a page written after merge (kernel COW copy) keeps the written content; a
 * dropped page (MADV_DONTNEED) keeps what a read shows (the store page);
 * VMA counts; argument errors.  Then the guarantee under stress: a writer,
 * a reader and a kernel-mode writer (read(2) from a pipe into the page)
 * hammer one page while the main thread merges and unmerges it; no write
 * may be lost, no read may be torn or stale, no kernel access may fail with
 * EFAULT.  UNMERGE_STRESS_CYCLES sets the cycles (default 2000). */
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
#include <sys/uio.h>
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

static int is_memfd(const void *p)
{
	int mf;

	t_maps_in(p, PG, &mf);
	return mf;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---------------------------------------------------------------- basics */

static void test_basic(struct ksmu_merger *m)
{
	unsigned char x[PG], w[PG];
	char *r = t_map_anon(8);
	int fd = t_store_new(2);
	uint64_t spfn;

	printf("-- basic: unmerge one of two merged pages, then merge it again\n");
	t_fill_page(x, 1);
	memset(r, 1, 8 * PG);
	memcpy(r + 2 * PG, x, PG);
	memcpy(r + 5 * PG, x, PG);
	t_store_put(fd, 0, x);
	have_pfn = t_pfn_of(r) != 0;
	if (!have_pfn)
		printf("   (PFNs hidden: not root; PFN checks skipped)\n");
	CHECK_RET("merge 2", ksmu_merge_page(m, (uintptr_t)(r + 2 * PG), fd, 0, x), 0);
	CHECK_RET("merge 5", ksmu_merge_page(m, (uintptr_t)(r + 5 * PG), fd, 0, x), 0);
	CHECK("merged: memfd", is_memfd(r + 2 * PG) && is_memfd(r + 5 * PG));
	CHECK("merged: file page", t_pm_entry(r + 2 * PG) & KSMU_PM_FILE);

	CHECK_RET("unmerge 2", ksmu_unmerge_page(m, (uintptr_t)(r + 2 * PG)), 0);
	CHECK("anonymous VMA", !is_memfd(r + 2 * PG));
	CHECK("not a file page", !(t_pm_entry(r + 2 * PG) & KSMU_PM_FILE));
	CHECK("present", t_present(r + 2 * PG));
	CHECK("content", !memcmp(r + 2 * PG, x, PG));
	CHECK("other still merged", is_memfd(r + 5 * PG) && !memcmp(r + 5 * PG, x, PG));
	if (have_pfn) {
		spfn = t_store_pfn(fd, 0);
		printf("   pfn unmerged %#" PRIx64 " merged %#" PRIx64 " store %#" PRIx64 "\n",
		       t_pfn_of(r + 2 * PG), t_pfn_of(r + 5 * PG), spfn);
		CHECK("own PFN", t_pfn_of(r + 2 * PG) != spfn);
		CHECK("other: store PFN", t_pfn_of(r + 5 * PG) == spfn);
	}
	CHECK("store unchanged", t_store_equals(fd, 0, x));
	r[2 * PG + 9] = 9; /* writable, private */
	CHECK("write", r[2 * PG + 9] == 9 && t_store_equals(fd, 0, x) && r[5 * PG + 9] == (char)x[9]);
	r[2 * PG + 9] = (char)x[9];

	printf("-- re-merge after unmerge\n");
	CHECK_RET("merge again", ksmu_merge_page(m, (uintptr_t)(r + 2 * PG), fd, 0, x), 0);
	CHECK("merged again", is_memfd(r + 2 * PG) && !memcmp(r + 2 * PG, x, PG));
	if (have_pfn)
		CHECK("store PFN again", t_pfn_of(r + 2 * PG) == t_store_pfn(fd, 0));

	printf("-- written after merge (kernel COW copy), then unmerged\n");
	r[5 * PG + 100] = 0x5a;
	memcpy(w, x, PG);
	w[100] = 0x5a;
	CHECK("COW copy", !(t_pm_entry(r + 5 * PG) & KSMU_PM_FILE) && is_memfd(r + 5 * PG));
	CHECK_RET("unmerge written", ksmu_unmerge_page(m, (uintptr_t)(r + 5 * PG)), 0);
	CHECK("written content kept", !memcmp(r + 5 * PG, w, PG));
	CHECK("anonymous", !is_memfd(r + 5 * PG));
	CHECK("stats: one private", m->stats.unmerged_private == 1);
	t_store_put(fd, 1, w);
	CHECK_RET("re-merge written", ksmu_merge_page(m, (uintptr_t)(r + 5 * PG), fd, 1, w), 0);
	CHECK("content", !memcmp(r + 5 * PG, w, PG));

	printf("-- dropped (MADV_DONTNEED) merged page: keeps what a read shows\n");
	CHECK("dropped", !madvise(r + 5 * PG, PG, MADV_DONTNEED) && !t_present(r + 5 * PG));
	CHECK_RET("unmerge dropped", ksmu_unmerge_page(m, (uintptr_t)(r + 5 * PG)), 0);
	CHECK("store content", !memcmp(r + 5 * PG, w, PG) && !is_memfd(r + 5 * PG));

	printf("-- never-faulted store mapping (empty PTE)\n");
	CHECK_RET("merge 6", ksmu_merge_page(m, (uintptr_t)(r + 6 * PG), fd, 0, x), -EAGAIN);
	memcpy(r + 6 * PG, x, PG);
	CHECK_RET("merge 6", ksmu_merge_page(m, (uintptr_t)(r + 6 * PG), fd, 0, x), 0);
	madvise(r + 6 * PG, PG, MADV_DONTNEED);
	CHECK_RET("unmerge 6", ksmu_unmerge_page(m, (uintptr_t)(r + 6 * PG)), 0);
	CHECK("content 6", !memcmp(r + 6 * PG, x, PG));
	CHECK("neighbours intact", r[0] == 1 && r[7 * PG + 4095] == 1 && r[4 * PG] == 1);
	munmap(r, 8 * PG);
	close(fd);
}

static void test_vmas(struct ksmu_merger *m)
{
	const size_t n = 16;
	unsigned char x[PG];
	char *r = t_map_anon(n);
	int fd = t_store_new(4), n0, n1, n2, mf;
	size_t i;
	int ok = 1;

	printf("-- VMA count: merge pages 3..8 one by one and 12, unmerge them all\n");
	t_fill_page(x, 5);
	for (i = 0; i < n; i++)
		memcpy(r + i * PG, x, PG);
	t_store_put(fd, 0, x);
	n0 = t_maps_in(r, n * PG, NULL);
	for (i = 3; i <= 8; i++)
		ok &= ksmu_merge_page(m, (uintptr_t)(r + i * PG), fd, 0, x) == 0;
	ok &= ksmu_merge_page(m, (uintptr_t)(r + 12 * PG), fd, 0, x) == 0;
	CHECK("merged", ok);
	n1 = t_maps_in(r, n * PG, NULL);
	for (i = 3; i <= 8; i++)
		ok &= ksmu_unmerge_page(m, (uintptr_t)(r + i * PG)) == 0;
	ok &= ksmu_unmerge_page(m, (uintptr_t)(r + 12 * PG)) == 0;
	CHECK("unmerged", ok);
	n2 = t_maps_in(r, n * PG, &mf);
	printf("   VMAs before merge %d, merged %d, unmerged %d (memfd %d)\n", n0, n1, n2, mf);
	CHECK("no memfd left", mf == 0);
	/*
	 * 1 + 6 + 1 + 1 + 1 + 1 + 1 merged; after: the six adjacent pages
	 * coalesce into one anonymous VMA, which does not merge with the
	 * original neighbours (anon_vma and page offset differ): 5.
	 */
	CHECK("adjacent unmerged pages coalesce", n2 == n0 + 4);
	CHECK("no more VMAs than merged", n2 <= n1);
	for (i = 0; i < n; i++)
		ok &= !memcmp(r + i * PG, x, PG);
	CHECK("content", ok);

	printf("-- run: a merged run of 6 pages unmerged with one call\n");
	munmap(r, n * PG);
	close(fd);
	fd = t_store_new(6);
	r = t_map_anon(n);
	for (i = 0; i < n; i++)
		memcpy(r + i * PG, x, PG);
	for (i = 0; i < 6; i++)
		t_store_put(fd, i, x);
	{
		unsigned char *exp = malloc(6 * PG);

		for (i = 0; i < 6; i++)
			memcpy(exp + i * PG, x, PG);
		n0 = t_maps_in(r, n * PG, NULL);
		CHECK_RET("merge run", ksmu_merge_run(m, (uintptr_t)(r + 4 * PG), 6, fd, 0, exp, NULL),
			  0);
		n1 = t_maps_in(r, n * PG, NULL);
		r[6 * PG + 5] = 7; /* one page COW-copied */
		CHECK_RET("unmerge run", ksmu_unmerge_run(m, (uintptr_t)(r + 4 * PG), 6), 0);
		n2 = t_maps_in(r, n * PG, &mf);
		printf("   VMAs before merge %d, merged %d, unmerged %d (memfd %d)\n", n0, n1, n2,
		       mf);
		CHECK("run: one anonymous VMA", mf == 0 && n2 == n0 + 2);
		exp[2 * PG + 5] = 7;
		CHECK("run content", !memcmp(r + 4 * PG, exp, 6 * PG));
		CHECK("run re-mergeable",
		      ksmu_merge_run(m, (uintptr_t)(r + 4 * PG), 2, fd, 0, exp, NULL) == 0);
		free(exp);
	}
	munmap(r, n * PG);
	close(fd);
}

static void test_errors(struct ksmu_merger *m)
{
	unsigned char x[PG];
	char *r = t_map_anon(4), *ro;
	int fd = t_store_new(1);

	printf("-- errors\n");
	t_fill_page(x, 9);
	memcpy(r, x, PG);
	memcpy(r + PG, x, PG);
	t_store_put(fd, 0, x);
	CHECK_RET("anonymous page", ksmu_unmerge_page(m, (uintptr_t)r), -EINVAL);
	CHECK_RET("merge", ksmu_merge_page(m, (uintptr_t)r, fd, 0, x), 0);
	CHECK_RET("unaligned", ksmu_unmerge_page(m, (uintptr_t)r + 8), -EINVAL);
	CHECK_RET("zero pages", ksmu_unmerge_run(m, (uintptr_t)r, 0), -EINVAL);
	CHECK_RET("too long", ksmu_unmerge_run(m, (uintptr_t)r, KSMU_MERGE_MAX_RUN + 1), -E2BIG);
	CHECK_RET("spans anonymous", ksmu_unmerge_run(m, (uintptr_t)r, 2), -EINVAL);
	ro = mmap(NULL, PG, PROT_READ, MAP_PRIVATE, fd, 0);
	CHECK_RET("read-only memfd", ksmu_unmerge_page(m, (uintptr_t)ro), -EINVAL);
	munmap(ro, PG);
	ro = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	CHECK_RET("shared memfd", ksmu_unmerge_page(m, (uintptr_t)ro), -EINVAL);
	munmap(ro, PG);
	CHECK_RET("unmapped", ksmu_unmerge_page(m, (uintptr_t)ro), -EINVAL);
	CHECK("still merged", is_memfd(r) && !memcmp(r, x, PG));
	CHECK_RET("then fine", ksmu_unmerge_page(m, (uintptr_t)r), 0);
	munmap(r, 4 * PG);
	close(fd);
}

/* Cost of one unmerge of an untouched merged page, single-threaded. */
static void test_cost(struct ksmu_merger *m)
{
	const int rounds = T_SANITIZED ? 200 : 2000;
	unsigned char x[PG];
	char *r = t_map_anon(4);
	int fd = t_store_new(1), i, ok = 1;
	uint64_t t, tm = 0, tu = 0;

	t_fill_page(x, 11);
	memcpy(r + PG, x, PG);
	t_store_put(fd, 0, x);
	for (i = 0; i < rounds; i++) {
		t = now_ns();
		ok &= ksmu_merge_page(m, (uintptr_t)(r + PG), fd, 0, x) == 0;
		tm += now_ns() - t;
		t = now_ns();
		ok &= ksmu_unmerge_page(m, (uintptr_t)(r + PG)) == 0;
		tu += now_ns() - t;
	}
	printf("-- cost: %d rounds: merge %.1f us, unmerge %.1f us per page\n", rounds,
	       (double)tm / 1e3 / rounds, (double)tu / 1e3 / rounds);
	CHECK("rounds ok", ok && !memcmp(r + PG, x, PG));
	munmap(r, 4 * PG);
	close(fd);
}

/* ---------------------------------------------------------------- stress */

#define OFF_A 0
#define OFF_B 2048
#define OFF_Z (PG - 8)

struct stress {
	char *page;
	unsigned char tmpl[PG];
	int stop; /* atomic */
	uint64_t last_a, last_b;
	uint64_t writes, wr_bad, reads, torn, stale;
	uint64_t pops, pefault, perr, pstale;
};

/* Writes A then Z with one sequence number, in bursts, checking its own write. */
static void *writer_fn(void *arg)
{
	struct stress *s = arg;
	uint64_t seq = 0, rng = 0x1234567, v;
	unsigned burst;

	while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
		for (burst = 1 + (unsigned)(t_xorshift(&rng) % 3); burst; burst--) {
			v = t_mkval(++seq);
			__atomic_store_n(t_word(s->page, OFF_A), v, __ATOMIC_RELAXED);
			__atomic_store_n(t_word(s->page, OFF_Z), v, __ATOMIC_RELAXED);
			if (__atomic_load_n(t_word(s->page, OFF_A), __ATOMIC_RELAXED) != v)
				s->wr_bad++;
			s->last_a = v;
			s->writes++;
		}
		t_spin((unsigned)(t_xorshift(&rng) % 40000));
	}
	return NULL;
}

static void reader_check(struct stress *s, uint64_t v, uint64_t *seen)
{
	if (!t_wellformed(v))
		s->torn++;
	else if (v < *seen)
		s->stale++;
	else
		*seen = v;
}

/*
 * B is written in kernel mode (read(2)); read it in kernel mode too
 * (process_vm_readv of our own memory), so that the snapshot is one 8-byte
 * copy like the writer's, and ThreadSanitizer - which models read(2) as a
 * plain user-space write - does not report the deliberate race.
 */
static uint64_t kernel_peek(const uint64_t *w)
{
	uint64_t v = 0;
	struct iovec l = { &v, sizeof(v) }, r = { (void *)w, sizeof(v) };

	if (process_vm_readv(getpid(), &l, 1, &r, 1, 0) != (ssize_t)sizeof(v))
		return 0;
	return v;
}

static void *reader_fn(void *arg)
{
	struct stress *s = arg;
	uint64_t sa = 0, sz = 0, sb = 0;

	while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
		/* Z after A: Z is written after A, so it is never ahead of a later A */
		reader_check(s, __atomic_load_n(t_word(s->page, OFF_A), __ATOMIC_RELAXED), &sa);
		reader_check(s, __atomic_load_n(t_word(s->page, OFF_Z), __ATOMIC_RELAXED), &sz);
		/*
		 * B is written by read(2) in the kernel; TSan models that as a
		 * plain write and reports our atomic load as a race.  Under TSan
		 * the kernel writer's own write-back check covers B.
		 */
		if (!T_TSAN)
			reader_check(s, __atomic_load_n(t_word(s->page, OFF_B), __ATOMIC_RELAXED),
				     &sb);
		if ((++s->reads & 63) == 0)
			sched_yield();
	}
	return NULL;
}

static void piper_count(struct stress *s, ssize_t r, size_t want)
{
	if (r < 0 && errno == EFAULT)
		s->pefault++;
	else if (r != (ssize_t)want)
		s->perr++;
}

/* read(2) into word B (copy_to_user), write(2) it back out (copy_from_user). */
static void *piper_fn(void *arg)
{
	struct stress *s = arg;
	uint64_t seq = 0, rng = 0x89abcdef, v, got;
	int in[2], out[2];
	ssize_t r;

	if (pipe(in) < 0 || pipe(out) < 0) {
		perror("pipe");
		exit(T_EXIT_FAIL);
	}
	while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
		v = t_mkval(++seq);
		if (write(in[1], &v, 8) != 8)
			s->perr++;
		r = read(in[0], s->page + OFF_B, 8);
		piper_count(s, r, 8);
		if (r != 8)
			(void)!read(in[0], &got, 8);
		else
			s->last_b = v;
		r = write(out[1], s->page + OFF_B, 8);
		piper_count(s, r, 8);
		if (r == 8 && (read(out[0], &got, 8) != 8 || got != s->last_b))
			s->pstale++;
		s->pops++;
		t_spin((unsigned)(t_xorshift(&rng) % 40000));
	}
	close(in[0]);
	close(in[1]);
	close(out[0]);
	close(out[1]);
	return NULL;
}

static void test_stress(struct ksmu_merger *m, unsigned long cycles)
{
	struct stress *s = calloc(1, sizeof(*s));
	struct ksmu_merge_stats st0 = m->stats;
	unsigned long c, merged = 0, unmerged = 0, differ = 0, other = 0, tries;
	unsigned char exp[PG];
	char *region = t_map_anon(3);
	int fd = t_store_new(1), r, merged_vma, mf;
	uint64_t rng = 42, t0 = now_ns(), dt;
	pthread_t th[3];
	int i;

	printf("-- stress: %lu merge/unmerge cycles; writer + reader + read(2)/write(2) of the page\n",
	       cycles);
	memset(region, 0x33, 3 * PG);
	s->page = region + PG;
	t_fill_page(s->tmpl, 77);
	memcpy(s->page, s->tmpl, PG);
	*t_word(s->page, OFF_A) = *t_word(s->page, OFF_Z) = *t_word(s->page, OFF_B) = t_mkval(0);
	s->last_a = s->last_b = t_mkval(0);
	pthread_create(&th[0], NULL, writer_fn, s);
	pthread_create(&th[1], NULL, reader_fn, s);
	pthread_create(&th[2], NULL, piper_fn, s);

	for (c = 0; c < cycles; c++) {
		/* merge: snapshot, store, merge; a write in between: -EAGAIN, retry */
		for (tries = 0; tries < 1000; tries++) {
			memcpy(exp, s->tmpl, PG);
			*t_word((char *)exp, OFF_A) =
			    __atomic_load_n(t_word(s->page, OFF_A), __ATOMIC_RELAXED);
			*t_word((char *)exp, OFF_Z) =
			    __atomic_load_n(t_word(s->page, OFF_Z), __ATOMIC_RELAXED);
			*t_word((char *)exp, OFF_B) = kernel_peek(t_word(s->page, OFF_B));
			t_store_put(fd, 0, exp);
			r = ksmu_merge_page(m, (uintptr_t)s->page, fd, 0, exp);
			if (r == 0)
				break;
			if (r == -EAGAIN)
				differ++;
			else if (other++ < 5)
				fprintf(stderr, "   cycle %lu: merge: %s\n", c, strerror(-r));
		}
		if (r)
			continue;
		merged++;
		t_spin((unsigned)(t_xorshift(&rng) % 40000)); /* writes now COW (or not) */
		r = ksmu_unmerge_page(m, (uintptr_t)s->page);
		if (r == 0)
			unmerged++;
		else if (other++ < 5)
			fprintf(stderr, "   cycle %lu: unmerge: %s\n", c, strerror(-r));
	}
	__atomic_store_n(&s->stop, 1, __ATOMIC_RELEASE);
	for (i = 0; i < 3; i++)
		pthread_join(th[i], NULL);
	dt = now_ns() - t0;
	merged_vma = t_maps_in(s->page, PG, &mf);

	memcpy(exp, s->tmpl, PG);
	*t_word((char *)exp, OFF_A) = *t_word((char *)exp, OFF_Z) = s->last_a;
	*t_word((char *)exp, OFF_B) = s->last_b;
	printf("   %.2f s: merged %lu, unmerged %lu (of them COW copies %" PRIu64
	       "), merge -EAGAIN %lu, other %lu\n",
	       (double)dt / 1e9, merged, unmerged, m->stats.unmerged_private - st0.unmerged_private,
	       differ, other);
	printf("   writes %" PRIu64 " (own read-back wrong %" PRIu64 "), reads %" PRIu64
	       " (torn %" PRIu64 ", stale %" PRIu64 "); kernel-mode ops %" PRIu64 " (EFAULT %" PRIu64
	       ", other errors %" PRIu64 ", stale read-back %" PRIu64 ")\n",
	       s->writes, s->wr_bad, s->reads, s->torn, s->stale, s->pops, s->pefault, s->perr,
	       s->pstale);
	printf("   unmerge window mean %.1f us\n",
	       (double)(m->stats.unmerge_ns - st0.unmerge_ns) / 1e3 / (double)KSMU_MAX(unmerged, 1));
	CHECK("merges happened", merged >= cycles / 2);
	CHECK("every merge unmerged", unmerged == merged);
	CHECK("no other result", other == 0);
	CHECK("last writes present", !memcmp(s->page, exp, PG));
	CHECK("writer: own writes read back", s->wr_bad == 0);
	CHECK("reader: no torn value", s->torn == 0);
	CHECK("reader: no stale value", s->stale == 0);
	CHECK("kernel access: no EFAULT", s->pefault == 0);
	CHECK("kernel access: no error", s->perr == 0);
	CHECK("kernel read-back sees its write", s->pstale == 0);
	CHECK("threads ran", s->writes > cycles && s->reads > 0 && s->pops > cycles / 4);
	CHECK("page anonymous at the end", mf == 0 && merged_vma == 1);
	CHECK("neighbours intact", region[0] == 0x33 && region[3 * PG - 1] == 0x33);
	munmap(region, 3 * PG);
	close(fd);
	free(s);
}

int main(void)
{
	struct ksmu_merger m;
	unsigned long cycles = 2000;
	const char *env = getenv("UNMERGE_STRESS_CYCLES");
	unsigned char x[PG];
	char *probe;
	int err, fd;

	t_merger_init(&m);
	if (env && *env)
		cycles = strtoul(env, NULL, 0);

	/* probe: unmerge needs synchronous uffd-wp on shmem VMAs */
	probe = t_map_anon(1);
	fd = t_store_new(1);
	t_fill_page(x, 3);
	memcpy(probe, x, PG);
	t_store_put(fd, 0, x);
	err = ksmu_merge_page(&m, (uintptr_t)probe, fd, 0, x);
	if (!err)
		err = ksmu_unmerge_page(&m, (uintptr_t)probe);
	munmap(probe, PG);
	close(fd);
	if (err == -EOPNOTSUPP) /* (any other error is a failure, not a skip) */
		t_skip("no userfaultfd write-protect on shmem VMAs (5.19)");
	if (err) {
		fprintf(stderr, "first unmerge: %s\n", strerror(-err));
		return T_EXIT_FAIL;
	}

	test_basic(&m);
	test_vmas(&m);
	test_errors(&m);
	test_cost(&m);
	test_stress(&m, cycles);

	printf("merger: merged pages %" PRIu64 ", unmerged pages %" PRIu64 " (runs %" PRIu64
	       ", COW copies %" PRIu64 "), errors %" PRIu64 ", lost %" PRIu64 "\n",
	       m.stats.pages_merged, m.stats.pages_unmerged, m.stats.runs_unmerged,
	       m.stats.unmerged_private, m.stats.errors, m.stats.lost);
	CHECK("nothing lost", m.stats.lost == 0);
	ksmu_merger_destroy(&m);
	close(t_pm_fd);
	return t_exit();
}
