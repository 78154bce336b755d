/* SPDX-License-Identifier: MIT */
/* Description: data integrity while the engine merges all the time.  One
 * region (32 MiB, 8 MiB under sanitizers) is registered; the background
 * scanner runs with a large pages_to_scan and sleep_millisecs 0, and a
 * second thread calls ksmu_scan_full() in a loop, toggling use_zero_pages
 * every 4 passes and, every other pass, unregistering a random sixteenth to
 * quarter of the region and registering it again (unmerge windows under
 * the workers' feet; the pages become mergeable again, which COW copies
 * never are).  So merge windows, COW breaks and unmerges happen
 * constantly.  NWORKERS threads own disjoint chunks of 8 pages each (the
 * chunks of the workers interleave) and only the owner ever touches its
 * pages, so the content of every page is exactly defined at every moment:
 * zero, one of NSHARED shared contents (about half of all writes: many
 * duplicates that the engine keeps merging), a unique content derived from
 * page index and a generation, plus up to MAXPATCH single-word patches.
 * Each operation first verifies the page (all 4096 bytes against the
 * content recomputed from the recorded state), then rewrites it fully,
 * patches one word (a COW break when merged; sometimes with the value the
 * word already holds), drops it or its chunk with MADV_DONTNEED (zeros
 * expected afterwards), writes it from the kernel (pread(2) of a memfd into
 * the page), or verifies it through the kernel (pwrite(2) of the page to a
 * memfd, read back).  Now and then a worker verifies all its pages.  At the
 * end every page is verified; again after unregistering the whole region;
 * again after registering it anew and three quiet passes, which must merge
 * at least the unpatched duplicates; and again after the final
 * ksmu_unregister().  Then the region must be plain anonymous memory: no
 * store mapping left in it, and MADV_DONTNEED reads zeros.  Any difference
 * is a corruption, reported (the first MAXREPORT) with page, worker, first
 * differing offset, expected and seen words, a diagnosis (zeros, previous
 * content, which shared content, pagemap state, unregister cycles since)
 * and the page's last operations, and counted by pattern at the end.
 * Merging must have happened (merges and cow_breaks grow); skips (77) where
 * the engine cannot merge.
 *
 * Duration: 3 s (1.5 s under sanitizers); KSMU_STRESS_SECONDS overrides it.
 * The long run:  KSMU_STRESS_SECONDS=600 ./build/tests/merge-stress
 * Other knobs (environment): KSMU_STRESS_UNREGISTER=0|1|2 (no unregister
 * cycles, parts of the region (default), the whole region);
 * KSMU_STRESS_RACE_DROP=0 (drops wait for the cycles' unregisters instead of
 * racing them); KSMU_STRESS_EXCLUDE=1 (drops hold merge windows off, as
 * ksmu_merge_exclude_begin() allows; no longer needed since merge windows
 * see drops); KSMU_STRESS_PREFAULT=1 (cycles fault their range in before
 * unregistering it);
 * KSMU_STRESS_PACE_US (sleep per 16 operations of a worker, 50).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
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

#define PG 4096UL
#define WORDS (PG / sizeof(uint64_t))
#define NWORKERS 4
#define CHUNK 8	   /* pages per ownership chunk; chunks go round-robin to workers */
#define NSHARED 40 /* shared contents */
#define MAXPATCH 4 /* single-word patches on top of a base content */
#define NHIST 8	   /* operations remembered per page, for corruption reports */
#define MAXREPORT 12

#define REGION_MB (T_SANITIZED ? 8 : 32)
#define NPAGES ((size_t)REGION_MB * 1024 * 1024 / PG)

enum kind { K_ZERO = 0, K_SHARED = 1, K_UNIQUE = 2 };

enum op {
	OP_NONE = 0,
	OP_INIT,
	OP_SHARED,     /* full rewrite with a shared content */
	OP_ZERO,       /* full rewrite with zeros */
	OP_UNIQUE,     /* full rewrite with a unique content */
	OP_PATCH,      /* one word changed */
	OP_PATCH_EQ,   /* one word rewritten with the value it holds */
	OP_DROP,       /* MADV_DONTNEED of the page */
	OP_DROP_CHUNK, /* MADV_DONTNEED of the page's chunk */
	OP_KWRITE,     /* pread(2) from a memfd into the page */
	OP_KREAD,      /* pwrite(2) of the page into a memfd, checked */
	OP_RESYNC,     /* rewrite after a detected corruption */
	OP_COUNT
};

static const char *const op_names[OP_COUNT] = {
    "none",   "init", "shared",	    "zero",   "unique", "patch",
    "patch=", "drop", "drop-chunk", "kwrite", "kread",	"resync",
};

struct patch {
	uint16_t word;
	uint64_t val;
};

struct pstate {
	uint32_t gen; /* for K_UNIQUE */
	uint8_t kind;
	uint8_t npatch;
	uint16_t cls; /* for K_SHARED */
	struct patch patch[MAXPATCH];
};

struct hist {
	uint8_t op;
	uint8_t uzp; /* use_zero_pages when the op ran */
	uint16_t cls;
	uint32_t ms; /* milliseconds since start */
};

struct page_rec {
	struct pstate cur, prev;
	struct hist h[NHIST];
	uint32_t nh;
};

struct worker {
	int id;
	pthread_t th;
	uint64_t rng;
	int memfd;
	size_t *pages; /* own page indices */
	size_t npages;
	/* results, read by main after join (ops also during the run) */
	atomic_ulong ops;
	atomic_int cur_op;
	atomic_size_t cur_page;
	unsigned long verifies, sweeps, writes, patches, drops, drop_pages, kwrites, kreads;
	unsigned long kernel_errors;
};

static char *mem;
static struct page_rec *rec;
static unsigned char shared_pg[NSHARED][PG];
static atomic_int stop;
static atomic_int uzp_now;
static atomic_ulong corruptions;
static atomic_ulong transient;
static pthread_mutex_t report_lock = PTHREAD_MUTEX_INITIALIZER;
/*
 * Drops against unregister cycles: by default they race (an unmerge window
 * must turn a page dropped under it into zeros, merge.c ZAPS);
 * KSMU_STRESS_RACE_DROP=0 makes drops (readers) wait for cycles (writer).
 */
static pthread_rwlock_t drop_lock = PTHREAD_RWLOCK_INITIALIZER;
static int race_drop;
/* KSMU_STRESS_UNREGISTER: 0 no unregister cycles, 1 parts (default), 2 all */
static int do_cycles = 1;
/*
 * KSMU_STRESS_EXCLUDE=1: drops hold merge windows off with the internal
 * ksmu_merge_exclude_begin() (merge.c RACES: a DONTNEED between a window's
 * MOVE and its mmap is lost).  Off by default: an application using only
 * ksmu.h calls madvise() as it likes.
 */
static int exclude_drops;
/*
 * KSMU_STRESS_PREFAULT=1: each cycle faults its range in (MADV_POPULATE_READ)
 * before unregistering it, so that dropped merged pages are resolved as
 * zeros first (the unmerge reads a dropped page as its store page).
 */
static int prefault;

static void drop_range(char *p, size_t len, struct worker *w)
{
	if (!race_drop)
		pthread_rwlock_rdlock(&drop_lock);
	if (exclude_drops)
		ksmu_merge_exclude_begin();
	if (madvise(p, len, MADV_DONTNEED))
		w->kernel_errors++;
	if (exclude_drops)
		ksmu_merge_exclude_end();
	if (!race_drop)
		pthread_rwlock_unlock(&drop_lock);
}

/* unregister cycles done, for the reports (under report_lock) */
#define MAXCYCLES 65536
static struct cycle {
	size_t start, len;
	uint32_t ms, unreg_ms; /* start; ksmu_unregister() duration */
} cycles[MAXCYCLES];
static size_t nr_cycles;
static atomic_int cycle_running;

/* corruptions by pattern (see report()) */
static atomic_ulong c_drop_cycle, c_drop, c_other;
static struct timespec t0;
static unsigned long pace_us = 50;

/* scanner thread results */
static atomic_ulong scan_passes;
static unsigned long scan_errors, uzp_toggles, unreg_cycles, unreg_pages, unreg_errors;
static int scan_last_err;

static uint32_t now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint32_t)((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
}

static double now_s(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) / 1e9;
}

static uint64_t xs(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static unsigned rnd(uint64_t *s, unsigned n)
{
	return (unsigned)((xs(s) >> 16) % n);
}

/* Seeds: shared contents have the top bit set, unique ones never. */
static uint64_t unique_seed(size_t idx, uint32_t gen)
{
	return (uint64_t)idx << 32 | gen;
}

static void expected(const struct pstate *ps, size_t idx, unsigned char *out)
{
	uint64_t *w = (uint64_t *)(void *)out;
	unsigned i;

	switch (ps->kind) {
	case K_ZERO:
		memset(out, 0, PG);
		break;
	case K_SHARED:
		memcpy(out, shared_pg[ps->cls], PG);
		break;
	default:
		t_fill_page(out, unique_seed(idx, ps->gen));
		break;
	}
	for (i = 0; i < ps->npatch; i++)
		w[ps->patch[i].word] = ps->patch[i].val;
}

static void hist_add(size_t idx, int op, unsigned cls)
{
	struct page_rec *r = &rec[idx];

	r->h[r->nh % NHIST] =
	    (struct hist){(uint8_t)op, (uint8_t)atomic_load(&uzp_now), (uint16_t)cls, now_ms()};
	r->nh++;
}

static void describe_state(char *buf, size_t len, const struct pstate *ps)
{
	static const char *const kinds[] = {"zero", "shared", "unique"};
	unsigned i;
	int n;

	n = snprintf(buf, len, "%s", kinds[ps->kind]);
	if (ps->kind == K_SHARED)
		n += snprintf(buf + n, len - (size_t)n, "#%u", ps->cls);
	if (ps->kind == K_UNIQUE)
		n += snprintf(buf + n, len - (size_t)n, "/gen %u", ps->gen);
	for (i = 0; i < ps->npatch && (size_t)n < len; i++)
		n += snprintf(buf + n, len - (size_t)n, " +w%u=%#" PRIx64, ps->patch[i].word,
			      ps->patch[i].val);
}

/*
 * Report a mismatch of page @idx: @got is what was read (a snapshot), @want
 * what it should hold.  Says how it differs and what it looks like.
 */
static void report(int worker, const char *where, size_t idx, const unsigned char *got,
		   const unsigned char *want, const uint64_t *pm)
{
	struct page_rec *r = &rec[idx];
	unsigned char prevc[PG], again[PG];
	size_t off = 0, ndiff = 0, i;
	unsigned long n = atomic_fetch_add(&corruptions, 1) + 1;
	uint64_t gw = 0, ww = 0;
	int is_zero, is_prev, persist, other = -1, last_op, cycled = 0;
	uint32_t last_ms;
	char sc[256], sp[256];

	/*
	 * Pattern: dropped last and unregistered since (an unmerge gives a
	 * dropped page its store content), dropped last (the drop was lost),
	 * anything else.
	 */
	last_op = r->h[(r->nh - 1) % NHIST].op;
	last_ms = r->h[(r->nh - 1) % NHIST].ms;
	pthread_mutex_lock(&report_lock);
	for (i = 0; i < nr_cycles; i++)
		cycled |= idx >= cycles[i].start && idx < cycles[i].start + cycles[i].len &&
			  cycles[i].ms >= last_ms;
	pthread_mutex_unlock(&report_lock);
	if ((last_op == OP_DROP || last_op == OP_DROP_CHUNK) && cycled)
		atomic_fetch_add(&c_drop_cycle, 1);
	else if (last_op == OP_DROP || last_op == OP_DROP_CHUNK)
		atomic_fetch_add(&c_drop, 1);
	else
		atomic_fetch_add(&c_other, 1);

	memcpy(again, mem + idx * PG, PG); /* still wrong a moment later? */
	persist = memcmp(again, want, PG) != 0;
	if (!persist)
		atomic_fetch_add(&transient, 1);
	if (n > MAXREPORT)
		return;
	for (i = 0; i < PG; i++)
		if (got[i] != want[i] && !ndiff++)
			off = i;
	memcpy(&gw, got + (off & ~7UL), 8);
	memcpy(&ww, want + (off & ~7UL), 8);
	is_zero = t_page_is_zero(got);
	expected(&r->prev, idx, prevc);
	is_prev = !memcmp(got, prevc, PG);
	for (i = 0; i < NSHARED; i++)
		if (!memcmp(got, shared_pg[i], PG))
			other = (int)i;
	describe_state(sc, sizeof(sc), &r->cur);
	describe_state(sp, sizeof(sp), &r->prev);

	pthread_mutex_lock(&report_lock);
	fprintf(stderr,
		"CORRUPTION #%lu at %.3f s (%s, worker %d): page %zu (%p), first difference at "
		"offset %zu, %zu bytes differ; word there want %#018" PRIx64 " got %#018" PRIx64
		"\n  expected: %s\n  previous: %s\n  seen: %s%s%s; %s on re-read\n",
		n, now_s(), where, worker, idx, (void *)(mem + idx * PG), off, ndiff, ww, gw, sc,
		sp, is_zero ? "all zeros " : "",
		is_prev ? "the previous content (the last write or drop lost) " : "",
		other >= 0 ? "a shared content " : "", persist ? "still wrong" : "correct");
	if (other >= 0)
		fprintf(stderr, "  seen content = shared #%d\n", other);
	if (pm)
		fprintf(stderr, "  pagemap before the read: %s%s%s\n",
			*pm & KSMU_PM_PRESENT ? "present" : "not present",
			*pm & KSMU_PM_FILE ? ", file/shared page" : "",
			*pm & KSMU_PM_UFFD_WP ? ", uffd-wp" : "");
	for (i = 0; i < nr_cycles; i++)
		if (idx >= cycles[i].start && idx < cycles[i].start + cycles[i].len &&
		    cycles[i].ms >= last_ms)
			fprintf(stderr,
				"  unregistered by cycle %zu (pages %zu+%zu), started at "
				"%ums, after its last op\n",
				i, cycles[i].start, cycles[i].len, cycles[i].ms);
	fprintf(stderr, "  last ops (oldest first):");
	for (i = r->nh > NHIST ? r->nh - NHIST : 0; i < r->nh; i++) {
		const struct hist *h = &r->h[i % NHIST];

		fprintf(stderr, " %s", op_names[h->op]);
		if (h->op == OP_SHARED || h->op == OP_KWRITE)
			fprintf(stderr, "#%u", h->cls);
		fprintf(stderr, "@%ums%s", h->ms, h->uzp ? "(uzp)" : "");
	}
	fprintf(stderr, "\n");
	pthread_mutex_unlock(&report_lock);
}

/* Full compare of page @idx against its recorded state; 0 if equal. */
static int verify_page(int worker, const char *where, size_t idx, unsigned char *buf)
{
	const unsigned char *p = (const unsigned char *)mem + idx * PG;
	unsigned char snap[PG];

	expected(&rec[idx].cur, idx, buf);
	if (!memcmp(p, buf, PG))
		return 0;
	memcpy(snap, p, PG);
	report(worker, where, idx, snap, buf, NULL);
	return 1;
}

static void set_state(size_t idx, const struct pstate *ps)
{
	rec[idx].prev = rec[idx].cur;
	rec[idx].cur = *ps;
}

static void write_full(size_t idx, const struct pstate *ps, unsigned char *buf);

/*
 * A worker's verify: on a mismatch (reported), the page gets a known content
 * again so that one corruption is counted once.  On success @buf holds the
 * page's content.
 */
static int worker_verify(struct worker *w, const char *where, size_t idx, unsigned char *buf)
{
	struct pstate ps = {0};

	w->verifies++;
	if (!verify_page(w->id, where, idx, buf))
		return 0;
	ps.kind = K_UNIQUE;
	ps.gen = (uint32_t)xs(&w->rng);
	write_full(idx, &ps, buf);
	hist_add(idx, OP_RESYNC, 0);
	return 1;
}

/* Write @ps's content into page @idx from user space. */
static void write_full(size_t idx, const struct pstate *ps, unsigned char *buf)
{
	char *p = mem + idx * PG;

	if (ps->kind == K_ZERO) {
		memset(p, 0, PG);
	} else {
		expected(ps, idx, buf);
		memcpy(p, buf, PG);
	}
	set_state(idx, ps);
}

static void worker_op(struct worker *w, size_t idx, unsigned char *buf)
{
	struct pstate ps = {0};
	unsigned r = rnd(&w->rng, 100);
	char *p = mem + idx * PG;

	atomic_store_explicit(&w->cur_page, idx, memory_order_relaxed);
	atomic_store_explicit(&w->cur_op, -1, memory_order_relaxed);
	if (worker_verify(w, "verify before op", idx, buf))
		return;
	if (r >= 60 && r < 80 && rec[idx].cur.npatch == MAXPATCH)
		r = 0; /* patched enough: a full rewrite instead */

	if (r < 35) {
		ps.kind = K_SHARED;
		ps.cls = (uint16_t)rnd(&w->rng, NSHARED);
		atomic_store_explicit(&w->cur_op, OP_SHARED, memory_order_relaxed);
		write_full(idx, &ps, buf);
		hist_add(idx, OP_SHARED, ps.cls);
		w->writes++;
	} else if (r < 45) {
		ps.kind = K_ZERO;
		atomic_store_explicit(&w->cur_op, OP_ZERO, memory_order_relaxed);
		write_full(idx, &ps, buf);
		hist_add(idx, OP_ZERO, 0);
		w->writes++;
	} else if (r < 60) {
		ps.kind = K_UNIQUE;
		ps.gen = (uint32_t)xs(&w->rng);
		atomic_store_explicit(&w->cur_op, OP_UNIQUE, memory_order_relaxed);
		write_full(idx, &ps, buf);
		hist_add(idx, OP_UNIQUE, 0);
		w->writes++;
	} else if (r < 80) {
		/* one word: the kernel copies a merged page for it */
		unsigned word = rnd(&w->rng, WORDS);
		int same = rnd(&w->rng, 4) == 0;
		uint64_t v = same ? ((uint64_t *)(void *)buf)[word] : xs(&w->rng);

		ps = rec[idx].cur;
		ps.patch[ps.npatch++] = (struct patch){(uint16_t)word, v};
		atomic_store_explicit(&w->cur_op, same ? OP_PATCH_EQ : OP_PATCH,
				      memory_order_relaxed);
		((volatile uint64_t *)(void *)p)[word] = v;
		set_state(idx, &ps);
		hist_add(idx, same ? OP_PATCH_EQ : OP_PATCH, 0);
		w->patches++;
	} else if (r < 85) {
		ps.kind = K_ZERO;
		if (rnd(&w->rng, 3) == 0) {
			/* the whole chunk (all this worker's): verify the others first */
			size_t c0 = idx / CHUNK * CHUNK, i;

			for (i = c0; i < c0 + CHUNK && i < NPAGES; i++)
				if (i != idx)
					worker_verify(w, "verify before chunk drop", i, buf);
			atomic_store_explicit(&w->cur_op, OP_DROP_CHUNK, memory_order_relaxed);
			drop_range(mem + c0 * PG, CHUNK * PG, w);
			w->drop_pages += CHUNK;
			for (i = c0; i < c0 + CHUNK && i < NPAGES; i++) {
				set_state(i, &ps);
				hist_add(i, OP_DROP_CHUNK, 0);
			}
		} else {
			atomic_store_explicit(&w->cur_op, OP_DROP, memory_order_relaxed);
			drop_range(p, PG, w);
			w->drop_pages++;
			set_state(idx, &ps);
			hist_add(idx, OP_DROP, 0);
		}
		w->drops++;
	} else if (r < 90) {
		/* written by the kernel (copy_to_user): a shared content or a unique one */
		if (rnd(&w->rng, 2)) {
			ps.kind = K_SHARED;
			ps.cls = (uint16_t)rnd(&w->rng, NSHARED);
		} else {
			ps.kind = K_UNIQUE;
			ps.gen = (uint32_t)xs(&w->rng);
		}
		expected(&ps, idx, buf);
		atomic_store_explicit(&w->cur_op, OP_KWRITE, memory_order_relaxed);
		if (pwrite(w->memfd, buf, PG, 0) != (ssize_t)PG ||
		    pread(w->memfd, p, PG, 0) != (ssize_t)PG) {
			fprintf(stderr, "worker %d: kernel write into page %zu: %s\n", w->id, idx,
				strerror(errno));
			w->kernel_errors++;
			/* unknown content now: write it from user space */
			memcpy(p, buf, PG);
		}
		set_state(idx, &ps);
		hist_add(idx, OP_KWRITE, ps.cls);
		w->kwrites++;
	} else if (r < 95) {
		/* read by the kernel (copy_from_user), compared here */
		unsigned char back[PG];

		atomic_store_explicit(&w->cur_op, OP_KREAD, memory_order_relaxed);
		if (pwrite(w->memfd, p, PG, 0) != (ssize_t)PG ||
		    pread(w->memfd, back, PG, 0) != (ssize_t)PG) {
			fprintf(stderr, "worker %d: kernel read of page %zu: %s\n", w->id, idx,
				strerror(errno));
			w->kernel_errors++;
		} else if (memcmp(back, buf, PG)) {
			report(w->id, "kernel-mode read", idx, back, buf, NULL);
		}
		hist_add(idx, OP_KREAD, 0);
		w->kreads++;
	}
	/* else: verified only, the page stays as it is (and may stay merged) */
}

static void *worker_fn(void *arg)
{
	struct worker *w = arg;
	unsigned char buf[PG];
	unsigned long n = 0;
	size_t hot = w->npages / 16 ? w->npages / 16 : 1;

	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		size_t k;

		/*
		 * 3/4 of the operations go to a hot window that slides slowly,
		 * the rest anywhere: most pages stay put long enough to be
		 * merged, and writes to merged pages break COW.
		 */
		if (rnd(&w->rng, 4))
			k = ((n >> 10) * (hot / 2 + 1) + rnd(&w->rng, (unsigned)hot)) % w->npages;
		else
			k = rnd(&w->rng, (unsigned)w->npages);
		worker_op(w, w->pages[k], buf);
		n++;
		atomic_store_explicit(&w->ops, n, memory_order_relaxed);
		if ((n & 8191) == 0) {
			/* read-only sweep over all own pages (merged ones mostly) */
			for (k = 0; k < w->npages; k++)
				worker_verify(w, "sweep", w->pages[k], buf);
			w->sweeps++;
		}
		if (pace_us && (n & 15) == 0) {
			struct timespec ts = {0, (long)pace_us * 1000};

			nanosleep(&ts, NULL);
		}
	}
	atomic_store_explicit(&w->cur_op, OP_NONE, memory_order_relaxed);
	return NULL;
}

/*
 * Unmerge part of the region under the workers' feet and register it again:
 * the unmerge windows must not lose a write, and the pages, anonymous again,
 * can be merged again (copies made by COW never are).
 */
static void unregister_cycle(uint64_t *rng)
{
	size_t len = NPAGES / 16 + rnd(rng, (unsigned)(NPAGES * 3 / 16));
	size_t start = rnd(rng, (unsigned)(NPAGES - len + 1));
	struct cycle *c = NULL;
	uint32_t t1;
	int r;

	if (do_cycles == 2) {
		start = 0;
		len = NPAGES;
	}
	pthread_mutex_lock(&report_lock);
	if (nr_cycles < MAXCYCLES) {
		c = &cycles[nr_cycles++];
		*c = (struct cycle){start, len, now_ms(), 0};
	}
	pthread_mutex_unlock(&report_lock);
	atomic_store(&cycle_running, 1);
	if (!race_drop)
		pthread_rwlock_wrlock(&drop_lock);
	if (prefault && madvise(mem + start * PG, len * PG, MADV_POPULATE_READ))
		fprintf(stderr, "MADV_POPULATE_READ: %s\n", strerror(errno));
	t1 = now_ms();
	r = ksmu_unregister(mem + start * PG, len * PG);
	t1 = now_ms() - t1;
	if (!race_drop)
		pthread_rwlock_unlock(&drop_lock);
	atomic_store(&cycle_running, 0);
	if (c) {
		pthread_mutex_lock(&report_lock);
		c->unreg_ms = t1;
		pthread_mutex_unlock(&report_lock);
	}
	if (r) {
		fprintf(stderr, "ksmu_unregister(page %zu, %zu pages) during the run: %s\n", start,
			len, strerror(-r));
		unreg_errors++;
	}
	r = ksmu_register(mem + start * PG, len * PG);
	if (r) {
		fprintf(stderr, "ksmu_register(page %zu, %zu pages) during the run: %s\n", start,
			len, strerror(-r));
		unreg_errors++;
	}
	unreg_cycles++;
	unreg_pages += len;
}

static void *scanner_fn(void *arg)
{
	uint64_t rng = 0x2545f4914f6cdd1dULL ^ (uint64_t)time(NULL);

	(void)arg;
	while (!atomic_load(&stop)) {
		int r = ksmu_scan_full();

		if (r < 0) {
			scan_errors++;
			scan_last_err = r;
			usleep(1000);
			continue;
		}
		r = (int)atomic_fetch_add(&scan_passes, 1) + 1;
		/* every other pass, an unregister cycle */
		if (do_cycles && (r & 1))
			unregister_cycle(&rng);
		/* every 4 passes, flip use_zero_pages: zero pages merge both ways */
		if ((r & 3) == 2) {
			int u = !atomic_load(&uzp_now);

			if (ksmu_set_tunable("use_zero_pages", (unsigned long)u) == 0) {
				atomic_store(&uzp_now, u);
				uzp_toggles++;
			}
		}
	}
	return NULL;
}

/* Main thread, workers stopped: every page, with its pagemap entry for reports. */
static size_t verify_all(const char *where)
{
	unsigned char buf[PG], snap[PG];
	size_t i, bad = 0;

	for (i = 0; i < NPAGES; i++) {
		uint64_t pm = t_pm_entry(mem + i * PG);

		expected(&rec[i].cur, i, buf);
		if (!memcmp(mem + i * PG, buf, PG))
			continue;
		memcpy(snap, mem + i * PG, PG);
		report(-1, where, i, snap, buf, &pm);
		bad++;
	}
	return bad;
}

static struct ksmu_stats st(void)
{
	struct ksmu_stats s;

	CHECK_RET("stats", ksmu_stats(&s), 0);
	return s;
}

static void print_stats(const char *when, const struct ksmu_stats *s)
{
	printf("   [%s] merges %" PRIu64 " cow_breaks %" PRIu64 " minor_zero %" PRIu64
	       " minor_store %" PRIu64 " unmerged %" PRIu64 " busy %" PRIu64 " changed %" PRIu64
	       " failed %" PRIu64 " unmerge_failed %" PRIu64 " full_scans %" PRIu64
	       " pages_shared %" PRIu64 " pages_sharing %" PRIu64 " ksm_zero_pages %" PRIu64
	       " volatile %" PRIu64 " store_pages %" PRIu64 " store_vmas %" PRIu64
	       " merge_zapped %" PRIu64 " unsettled %" PRIu64 " unmerge_retries %" PRIu64
	       " window_us_max %" PRIu64 " cow_policy %" PRIu64 " cow_user %" PRIu64
	       " cow_kernel %" PRIu64 "\n",
	       when, s->merges, s->cow_breaks, s->minor_zero, s->minor_store, s->pages_unmerged,
	       s->merge_busy, s->merge_changed, s->merge_failed, s->unmerge_failed, s->full_scans,
	       s->pages_shared, s->pages_sharing, s->ksm_zero_pages, s->pages_volatile,
	       s->store_pages, s->store_vmas, s->merge_zapped, s->merge_unsettled,
	       s->unmerge_retries, s->window_ns_max / 1000, s->cow_policy, s->cow_user,
	       s->cow_kernel);
}

/* Join @th, giving up after @secs: a stuck thread is a hang to report. */
static int join_within(pthread_t th, double secs)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += (time_t)secs;
	return pthread_timedjoin_np(th, NULL, &ts);
}

int main(void)
{
	static struct worker w[NWORKERS];
	unsigned char buf[PG];
	struct ksmu_stats s0, s1, s2, s3;
	pthread_t scan_th;
	double secs = T_SANITIZED ? 1.5 : 3.0, next_progress, start;
	const char *env;
	unsigned long ops = 0, verifies = 0, sweeps = 0, writes = 0, patches = 0, drops = 0,
		      drop_pages = 0, kwrites = 0, kreads = 0, kerr = 0, last_ops[NWORKERS] = {0};
	size_t groups[NSHARED + 1] = {0}, lower = 0;
	double last_change[NWORKERS] = {0};
	size_t i, bad;
	int t, hung = 0, stores = 0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	env = getenv("KSMU_STRESS_SECONDS");
	if (env && *env)
		secs = strtod(env, NULL);
	env = getenv("KSMU_STRESS_PACE_US");
	if (env && *env)
		pace_us = strtoul(env, NULL, 0);
	env = getenv("KSMU_STRESS_RACE_DROP");
	race_drop = !(env && *env == '0');
	env = getenv("KSMU_STRESS_PREFAULT");
	prefault = env && *env == '1';
	env = getenv("KSMU_STRESS_EXCLUDE");
	exclude_drops = env && *env == '1';
	env = getenv("KSMU_STRESS_UNREGISTER");
	if (env && *env)
		do_cycles = atoi(env);

	for (i = 0; i < NSHARED; i++)
		t_fill_page(shared_pg[i], 1ULL << 63 | i);
	rec = calloc(NPAGES, sizeof(*rec));
	mem = t_map_anon(NPAGES);
	if (!rec)
		return T_EXIT_FAIL;

	/* start: every page shared content #(page % NSHARED), or zero, or unique */
	for (i = 0; i < NPAGES; i++) {
		struct pstate ps = {0};
		unsigned r = (unsigned)(i * 2654435761u >> 7) % 10;

		ps.kind = r < 5 ? K_SHARED : r < 7 ? K_ZERO : K_UNIQUE;
		ps.cls = (uint16_t)(i % NSHARED);
		write_full(i, &ps, buf);
		rec[i].prev = rec[i].cur;
		hist_add(i, OP_INIT, ps.cls);
	}

	CHECK_RET("run 0", ksmu_set_run(0), 0);
	CHECK_RET("register", ksmu_register(mem, NPAGES * PG), 0);
	s0 = st();
	if (!s0.merging) {
		printf("SKIP: merging unavailable here (needs userfaultfd with MOVE and "
		       "MINOR_SHMEM without USER_MODE_ONLY, and exact dirty tracking)\n");
		ksmu_unregister(mem, NPAGES * PG);
		return T_EXIT_SKIP;
	}
	CHECK_RET("pages_to_scan", ksmu_set_tunable("pages_to_scan", 1000000), 0);
	CHECK_RET("sleep_millisecs", ksmu_set_tunable("sleep_millisecs", 0), 0);
	CHECK_RET("use_zero_pages 0", ksmu_set_tunable("use_zero_pages", 0), 0);
	CHECK_RET("run 1", ksmu_set_run(KSMU_RUN_MERGE), 0);
	CHECK("first pass", ksmu_scan_full() > 0);
	s1 = st();
	print_stats("after the first pass", &s1);
	CHECK("initial content merged", s1.merges > s0.merges);
	CHECK("initial content intact", verify_all("after the first pass") == 0);

	printf("-- %d workers, %zu pages (%d MiB), %.1f s, pace %lu us per 16 ops\n", NWORKERS,
	       NPAGES, REGION_MB, secs, pace_us);
	for (t = 0; t < NWORKERS; t++) {
		w[t].id = t;
		w[t].rng = 0x9e3779b97f4a7c15ULL * (uint64_t)(t + 1) ^ (uint64_t)time(NULL);
		if (!w[t].rng)
			w[t].rng = 1;
		w[t].memfd = memfd_create("merge-stress", MFD_CLOEXEC);
		w[t].pages = calloc(NPAGES / NWORKERS + CHUNK, sizeof(size_t));
		if (w[t].memfd < 0 || !w[t].pages) {
			perror("worker setup");
			return T_EXIT_FAIL;
		}
		for (i = 0; i < NPAGES; i++)
			if ((int)(i / CHUNK % NWORKERS) == t)
				w[t].pages[w[t].npages++] = i;
	}
	for (t = 0; t < NWORKERS; t++)
		if (pthread_create(&w[t].th, NULL, worker_fn, &w[t])) {
			perror("pthread_create");
			return T_EXIT_FAIL;
		}
	if (pthread_create(&scan_th, NULL, scanner_fn, NULL)) {
		perror("pthread_create");
		return T_EXIT_FAIL;
	}

	/* run, with a progress line every 10 s and a stall watch */
	start = now_s();
	next_progress = start + 10;
	while (now_s() - start < secs) {
		double n = now_s();
		struct timespec ts = {0, 100 * 1000 * 1000};

		nanosleep(&ts, NULL);
		for (t = 0; t < NWORKERS; t++) {
			unsigned long o = atomic_load(&w[t].ops);

			if (o != last_ops[t]) {
				last_ops[t] = o;
				last_change[t] = n;
			} else if (n - last_change[t] > 20 && !hung) {
				fprintf(stderr,
					"STALL: worker %d made no progress for 20 s: op %d on page "
					"%zu (%p)%s\n",
					t, atomic_load(&w[t].cur_op), atomic_load(&w[t].cur_page),
					(void *)(mem + atomic_load(&w[t].cur_page) * PG),
					atomic_load(&cycle_running)
					    ? "; an unregister cycle is running (drops wait for it)"
					    : "");
				hung = 1;
			}
		}
		if (n >= next_progress) {
			unsigned long o = 0;

			for (t = 0; t < NWORKERS; t++)
				o += atomic_load(&w[t].ops);
			s2 = st();
			printf("   %.0f s: %lu ops, %lu corruptions, %lu passes\n", n - start, o,
			       atomic_load(&corruptions), atomic_load(&scan_passes));
			print_stats("progress", &s2);
			next_progress += 10;
		}
	}
	atomic_store(&stop, 1);
	for (t = 0; t < NWORKERS; t++) {
		/* a worker may wait for a cycle's ksmu_unregister() (drop_lock) */
		if (join_within(w[t].th, 600)) {
			fprintf(stderr, "HANG: worker %d does not stop: op %d on page %zu (%p)\n",
				t, atomic_load(&w[t].cur_op), atomic_load(&w[t].cur_page),
				(void *)(mem + atomic_load(&w[t].cur_page) * PG));
			CHECK("workers stop", 0);
			return t_exit();
		}
		ops += atomic_load(&w[t].ops);
		verifies += w[t].verifies;
		sweeps += w[t].sweeps;
		writes += w[t].writes;
		patches += w[t].patches;
		drops += w[t].drops;
		drop_pages += w[t].drop_pages;
		kwrites += w[t].kwrites;
		kreads += w[t].kreads;
		kerr += w[t].kernel_errors;
	}
	if (join_within(scan_th, 600)) {
		fprintf(stderr, "HANG: ksmu_scan_full() does not return\n");
		CHECK("scanner thread stops", 0);
		return t_exit();
	}
	CHECK("no stall", !hung);

	/* everything once more, with the background scanner still merging */
	bad = verify_all("final verify");
	s2 = st();
	printf("-- %lu ops (%lu full writes, %lu patches, %lu drops of %lu pages, %lu kernel "
	       "writes, %lu kernel reads), %lu page verifies (%lu sweeps), %lu scan_full passes "
	       "(%lu errors, %lu use_zero_pages flips, %lu unregister cycles of %lu pages)%s%s%s\n",
	       ops, writes, patches, drops, drop_pages, kwrites, kreads, verifies, sweeps,
	       atomic_load(&scan_passes), scan_errors, uzp_toggles, unreg_cycles, unreg_pages,
	       race_drop ? " [drops race unregisters]" : "",
	       exclude_drops ? " [drops exclude merge windows]" : "",
	       prefault ? " [cycles prefault]" : "");
	print_stats("end of the run", &s2);
	printf("   merges %" PRIu64 ", cow_breaks %" PRIu64 ", minor_zero %" PRIu64
	       ", corruptions %lu (transient %lu), bad at the end %zu\n",
	       s2.merges - s0.merges, s2.cow_breaks - s0.cow_breaks, s2.minor_zero - s0.minor_zero,
	       atomic_load(&corruptions), atomic_load(&transient), bad);
	if (atomic_load(&corruptions))
		printf("   corruptions by pattern: %lu dropped then unregistered by a cycle, %lu "
		       "dropped (drop lost), %lu other\n",
		       atomic_load(&c_drop_cycle), atomic_load(&c_drop), atomic_load(&c_other));
	if (nr_cycles) {
		uint32_t mx = 0, sum = 0;

		for (i = 0; i < nr_cycles; i++) {
			mx = cycles[i].unreg_ms > mx ? cycles[i].unreg_ms : mx;
			sum += cycles[i].unreg_ms;
		}
		printf("   unregister cycles: %zu, ksmu_unregister() took %u ms on average, %u ms "
		       "at most\n",
		       nr_cycles, sum / (uint32_t)nr_cycles, mx);
	}
	if (scan_errors)
		fprintf(stderr, "scan_full failed %lu times, last %d (%s)\n", scan_errors,
			scan_last_err, strerror(-scan_last_err));
	CHECK("engine still merging", s2.merging);
	CHECK("no corruption during the run", atomic_load(&corruptions) == 0);
	CHECK("every page correct at the end", bad == 0);
	CHECK("no kernel-mode access failed", kerr == 0);
	CHECK("ksmu_scan_full never failed", scan_errors == 0);
	CHECK("unregister/register cycles never failed", unreg_errors == 0);
	CHECK("pages were merged", s2.merges > s1.merges);
	/* cow_policy=1 (ctest merge-stress-cow): ksmu makes the copies */
	if (s2.cow_policy)
		CHECK("merged pages were copied on write, into anonymous memory",
		      s2.cow_user > s0.cow_user);
	else
		CHECK("merged pages were copied on write", s2.cow_breaks > s0.cow_breaks);
	CHECK("work was done", ops > 1000 && atomic_load(&scan_passes) > 0);
	if (s2.minor_zero == s0.minor_zero)
		printf("   (note: no dropped merged page faulted back as zeros this run)\n");

	/*
	 * Quiescent: unmerge all, register again (every page anonymous, so
	 * mergeable), and the duplicates settle merged.  Lower bound of
	 * pages_sharing: unpatched copies of each shared content and zero
	 * pages, less one page per stable node (max_page_sharing 256) and one
	 * left over per content.
	 */
	CHECK_RET("use_zero_pages 0", ksmu_set_tunable("use_zero_pages", 0), 0);
	CHECK_RET("unregister all", ksmu_unregister(mem, NPAGES * PG), 0);
	CHECK("every page correct after unmerging all", verify_all("after unregister all") == 0);
	CHECK_RET("register all again", ksmu_register(mem, NPAGES * PG), 0);
	CHECK("quiet pass 1", ksmu_scan_full() > 0);
	CHECK("quiet pass 2", ksmu_scan_full() > 0);
	CHECK("quiet pass 3", ksmu_scan_full() > 0);
	s3 = st();
	print_stats("quiescent", &s3);
	for (i = 0; i < NPAGES; i++)
		if (!rec[i].cur.npatch && rec[i].cur.kind != K_UNIQUE)
			groups[rec[i].cur.kind == K_ZERO ? NSHARED : rec[i].cur.cls]++;
	for (i = 0; i <= NSHARED; i++)
		if (groups[i] > 1)
			lower += groups[i] - (groups[i] + 255) / 256 - 1;
	printf("   pages_sharing %" PRIu64 " when quiet, at least %zu expected\n", s3.pages_sharing,
	       lower);
	CHECK("duplicates merged when quiet", s3.pages_sharing >= lower && lower > 0);
	CHECK("every page correct, merged", verify_all("quiescent verify") == 0);

	/* unmerge: private copies with the same content */
	CHECK_RET("unregister", ksmu_unregister(mem, NPAGES * PG), 0);
	CHECK_RET("run 0", ksmu_set_run(0), 0);
	s3 = st();
	print_stats("unregistered", &s3);
	CHECK("nothing merged any more",
	      s3.pages_shared == 0 && s3.pages_sharing == 0 && s3.regions == 0);
	CHECK("every page correct after unmerge", verify_all("after unregister") == 0);
	/* unregistered memory is plain anonymous memory again */
	t = t_maps_in(mem, NPAGES * PG, &stores);
	printf("   after unregister: %d VMAs in the region, %d of them store mappings\n", t,
	       stores);
	CHECK("no store mapping left in the region", stores == 0);
	CHECK_RET("drop all", madvise(mem, NPAGES * PG, MADV_DONTNEED), 0);
	for (i = 0, bad = 0; i < NPAGES; i++)
		bad += !t_page_is_zero(mem + i * PG);
	printf("   after MADV_DONTNEED of the unregistered region: %zu pages not zero\n", bad);
	CHECK("dropped unregistered memory reads zeros", bad == 0);
	CHECK("no corruption at all", atomic_load(&corruptions) == 0);
	printf("   corruptions in total: %lu\n", atomic_load(&corruptions));

	munmap(mem, NPAGES * PG);
	for (t = 0; t < NWORKERS; t++) {
		close(w[t].memfd);
		free(w[t].pages);
	}
	free(rec);
	return t_exit();
}
