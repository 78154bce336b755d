/* SPDX-License-Identifier: MIT */
/*
 * engine.c - the per-process engine: start-up, the scanner thread, fork,
 * and the public API entry points.
 *
 * DESIGN
 *   Like the kernel's single KSM, there is one engine per process.  It is
 *   created on the first API call (pthread_once): kernel features are probed
 *   (probe.c), the rmap arena reserved, /proc/self/pagemap opened and the
 *   dirty tracker chosen: async write-protect when the kernel has
 *   UFFD_FEATURE_WP_ASYNC and PAGEMAP_SCAN, checksums otherwise.  The
 *   scanner thread ("ksmu-scan") starts with the first registration; it runs
 *   one batch of pages_to_scan pages every sleep_millisecs while run == 1.
 *   With the exact tracker, a second thread ("ksmu-uffd") reads the
 *   tracker's remove/unmap/remap events and keeps regions and records in
 *   step with munmap(), mremap() and MADV_DONTNEED (apply_event()).
 *
 *   ksmu_register() intersects the range with /proc/self/maps and creates
 *   one region per eligible (private anonymous) stretch not yet registered;
 *   ksmu_unregister() removes regions, re-creating the parts of a region
 *   that stay registered (they lose their scan state and are re-hashed on
 *   their next visit).
 *
 * INVARIANTS
 *   - Every region is in e->regions; e->nr_regions and e->pages_tracked
 *     describe them; a region has wp_tracked only while the tracker is open
 *     and its range is registered with it.
 *   - e->cursor is NULL or a region in e->regions.
 *
 * LOCKING / THREADS
 *   e->lock protects all engine state.  API calls take it for their whole
 *   duration; the scanner thread holds it while it runs a batch (at most
 *   pages_to_scan pages) and drops it while sleeping on e->wake.
 *   ksmu_scan_full() drops it between batches.  The event reader reads
 *   without the lock (the application's call is released by the read) and
 *   applies queued events under a trylock, so it never holds an
 *   application's munmap() behind a scan batch.  Both threads block all
 *   signals so that the host program's handlers never run on them, and
 *   neither is ever stopped (see the end of this file).
 *
 *   fork(): the prepare handler takes e->lock so that the child inherits
 *   consistent state; the child handler re-initialises the lock, re-opens
 *   /proc/self/pagemap (the old fd describes the parent) and closes the
 *   parent's userfaultfd, all with plain system calls.  Registrations are
 *   not inherited (no EVENT_FORK), and the child must not register with an
 *   event-reporting uffd before it has a reader, or its munmap() would
 *   block: it scans by checksum until its first API call, which restarts
 *   the tracker, the reader and the scanner (child_restart()), since
 *   creating threads in an atfork child handler is not async-signal-safe.
 *
 * KERNEL REQUIREMENTS
 *   See pagemap.c, uffd.c; degrades to checksums without WP_ASYNC and to
 *   pread of pagemap without PAGEMAP_SCAN.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define LOG_PREFIX "engine: "
#include "engine.h"
#include "log.h"
#include "probe.h"
#include "compat.h"
#include "control.h"
#include "cow.h"
#include "preload.h"
#include "selfmem.h"

#define ARENA_RESERVE (64UL << 30)    /* 8 TiB of tracked memory */
#define ARENA_RESERVE_MIN (4UL << 30) /* when the address space is tight */
#define SCAN_FULL_BATCH 4096

static struct ksmu_engine engine;
static pthread_once_t engine_once = PTHREAD_ONCE_INIT;
static int engine_err;
static bool engine_ready;

static int tracker_start(struct ksmu_engine *e);
static void zap_init(void);
static int start_thread(pthread_t *t, void *(*fn)(void *), void *arg, const char *name);
static void atfork_prepare(void);
static void atfork_parent(void);
static void atfork_child(void);
static void engine_atexit(void);

/* The scanner's timed sleeps use CLOCK_MONOTONIC: immune to clock changes. */
static void init_wake(pthread_cond_t *c)
{
	pthread_condattr_t ca;

	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(c, &ca);
	pthread_condattr_destroy(&ca);
}

/*
 * KSMU_DISABLE=pagemap_scan,uffd_wp_async,uffd_events makes the engine behave as on an
 * older kernel that lacks those features, so that the fallback paths are
 * tested on every machine.  Read once, at start-up.
 */
static bool disable_pagemap_scan, disable_wp_async, disable_events;

static void read_disable_env(void)
{
	const char *v = getenv("KSMU_DISABLE");

	if (!v)
		return;
	disable_pagemap_scan = strstr(v, "pagemap_scan") != NULL;
	disable_wp_async = disable_pagemap_scan || strstr(v, "uffd_wp_async") != NULL;
	disable_events = strstr(v, "uffd_events") != NULL;
}

static bool env_flag(const char *name)
{
	const char *v = getenv(name);

	return v && !strcmp(v, "1");
}

static bool best_tracker_possible(void)
{
	const struct ksmu_features *f = ksmu_probe_get();

	return f->uffd_wp_async && f->pagemap_scan && !disable_wp_async;
}

static uint64_t now_mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The scanner's page buffers: a batch, then one candidate page. */
/* batch_buf, cand_buf, then the join queue's expected pages (dedup.c) */
#define BUFS_PAGES (KSMU_BATCH_PAGES + 1 + KSMU_JOIN_RUNS * KSMU_JOIN_MAX)
#define BUFS_LEN (BUFS_PAGES * KSMU_PAGE_SIZE)
#define AGENT_PAGES_LEN (KSMU_WIRE_MAX_PAGES * KSMU_PAGE_SIZE)

static unsigned char *map_own(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	return p == MAP_FAILED ? NULL : p; /* inherited: a forked child scans with it */
}

static void engine_init(void)
{
	struct ksmu_engine *e = &engine;
	const struct ksmu_features *f = ksmu_probe_get();
	int ret;

	if (f->page_size != (int)KSMU_PAGE_SIZE) {
		pr_err("page size %d is not supported (4096 only)", f->page_size);
		engine_err = -EOPNOTSUPP;
		return;
	}
	pthread_mutex_init(&e->lock, NULL);
	init_wake(&e->wake);
	ksmu_knobs_default(&e->knobs);
	e->tracker.fd = -1;
	e->tracker.cow_fd = -1;
	read_disable_env();

	ret = ksmu_arena_init(&e->arena, ARENA_RESERVE);
	if (ret)
		ret = ksmu_arena_init(&e->arena, ARENA_RESERVE_MIN);
	if (ret)
		goto out_err;
	ret = ksmu_pagemap_open(&e->pm, f->pagemap_scan && !disable_pagemap_scan);
	if (ret)
		goto out_arena;
	/*
	 * The page buffers are mapped, not allocated: merge windows compare
	 * against them, so they must be the engine's own memory, which merge-any
	 * never registers (selfmem.c), not heap pages.
	 */
	e->batch_buf = map_own(BUFS_LEN);
	e->cand_buf = e->batch_buf ? e->batch_buf + KSMU_BATCH_PAGES * KSMU_PAGE_SIZE : NULL;
	for (int r = 0; e->batch_buf && r < KSMU_JOIN_RUNS; r++)
		e->joins.runs[r].expected =
		    e->cand_buf + KSMU_PAGE_SIZE + (size_t)r * KSMU_JOIN_MAX * KSMU_PAGE_SIZE;
	e->runs = calloc(KSMU_PM_VEC_LEN, sizeof(*e->runs));
	e->wruns = calloc(KSMU_PM_VEC_LEN, sizeof(*e->wruns));
	if (!e->batch_buf || !e->runs || !e->wruns) {
		ret = -ENOMEM;
		goto out_bufs;
	}
	ksmu_self_add_library(&engine);
	ksmu_self_add((uintptr_t)e->batch_buf, (uintptr_t)e->batch_buf + BUFS_LEN);
	ksmu_agent_init(e);
	if (e->agent.state != KSMU_AGENT_OFF) {
		e->agent_pages = map_own(AGENT_PAGES_LEN);
		if (e->agent_pages)
			ksmu_self_add((uintptr_t)e->agent_pages,
				      (uintptr_t)e->agent_pages + AGENT_PAGES_LEN);
		else
			e->agent.state = KSMU_AGENT_OFF;
	}
	ksmu_self_add(e->arena.base, e->arena.base + e->arena.size);
	zap_init();
	e->tracker_mode = KSMU_TRACK_CHECKSUM;
	if (best_tracker_possible() && tracker_start(e) == 0)
		e->tracker_mode = KSMU_TRACK_WP_ASYNC;
	else
		pr_info("exact dirty tracking unavailable; re-hashing pages every pass");
	pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
	if (atexit(engine_atexit))
		pr_warn("no exit handler: a leak checker at exit may wait for the scanner");
	pthread_mutex_lock(&e->lock);
	ksmu_knobs_from_env(e);
	pthread_mutex_unlock(&e->lock);
	__atomic_store_n(&engine_ready, true, __ATOMIC_RELEASE); /* read without the once by started() */
	if (ksmu_preload_active() || env_flag("KSMU_CONTROL"))
		ksmu_control_start(); /* ksmctl status --pid: control.c */
	return;

out_bufs:
	if (e->batch_buf)
		munmap(e->batch_buf, BUFS_LEN);
	free(e->runs);
	free(e->wruns);
	ksmu_pagemap_close(&e->pm);
out_arena:
	ksmu_arena_destroy(&e->arena);
out_err:
	pr_err("engine start-up failed: %s", strerror(-ret));
	engine_err = ret;
}

struct ksmu_engine *ksmu_engine_get(void)
{
	pthread_once(&engine_once, engine_init);
	return engine_ready ? &engine : NULL;
}

static void engine_apply_events(struct ksmu_engine *e);
static void merge_any_tick(struct ksmu_engine *e);

static void *scanner_main(void *arg)
{
	struct ksmu_engine *e = arg;

	pthread_mutex_lock(&e->lock);
	for (;;) { /* runs until the process exits */
		if (e->knobs.run == KSMU_RUN_MERGE && e->nr_regions &&
		    !__atomic_load_n(&e->exiting, __ATOMIC_ACQUIRE)) {
			struct timespec ts;
			unsigned long ms;
			long r;

			engine_apply_events(e);
			merge_any_tick(e);
			r = ksmu_scan_batch(e, e->knobs.pages_to_scan);

			if (r < 0)
				pr_warn("scan batch failed: %s", strerror((int)-r));
			ms = e->knobs.sleep_millisecs;
			if (!ms) {
				pthread_mutex_unlock(&e->lock);
				sched_yield();
				pthread_mutex_lock(&e->lock);
				continue;
			}
			clock_gettime(CLOCK_MONOTONIC, &ts);
			ts.tv_sec += (time_t)(ms / 1000);
			ts.tv_nsec += (long)(ms % 1000) * 1000000L;
			if (ts.tv_nsec >= 1000000000L) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000L;
			}
			/* Woken for events (events_main()): apply, sleep on. */
			while (pthread_cond_timedwait(&e->wake, &e->lock, &ts) == 0 &&
			       __atomic_exchange_n(&e->events_wake, false, __ATOMIC_ACQ_REL))
				engine_apply_events(e);
		} else {
			pthread_cond_wait(&e->wake, &e->lock);
			if (__atomic_exchange_n(&e->events_wake, false, __ATOMIC_ACQ_REL))
				engine_apply_events(e);
		}
	}
	return NULL;
}

/* Start the scanner thread if it is not running.  Lock held. */
static int ensure_thread(struct ksmu_engine *e)
{
	int ret;

	if (e->thread_running)
		return 0;
	ret = start_thread(&e->thread, scanner_main, e, "ksmu-scan");
	if (ret)
		return ret;
	e->thread_running = true;
	return 0;
}

/*
 * First API call in a forked child: bring back what fork() did not copy -
 * the exact tracker (with its event reader) and the scanner thread.
 */
static void child_restart(struct ksmu_engine *e)
{
	struct ksmu_region *r;

	e->need_child_restart = false;
	if (e->knobs.dirty_tracker != KSMU_TRACK_CHECKSUM && best_tracker_possible() &&
	    tracker_start(e) == 0) {
		for (r = ksmu_region_first(&e->regions); r; r = ksmu_region_next(r)) {
			r->wp_tracked =
			    ksmu_tracker_register(&e->tracker, r->start, r->end - r->start) == 0;
			/* Inherited store mappings: MINOR too (zeros after MADV_DONTNEED). */
			if (r->wp_tracked)
				ksmu_dedup_rearm_stores(e, r->start, r->end);
		}
		e->tracker_mode = KSMU_TRACK_WP_ASYNC;
	}
	if (e->nr_regions)
		ensure_thread(e);
	if (ksmu_control_child())
		ksmu_control_start(); /* the child's own socket */
}

/* Take the lock; in a forked child, bring the scanner back. */
static struct ksmu_engine *engine_lock(void)
{
	struct ksmu_engine *e = ksmu_engine_get();

	if (!e)
		return NULL;
	pthread_mutex_lock(&e->lock);
	if (e->need_child_restart)
		child_restart(e);
	ksmu_cow_settle(); /* a copy the caller's write made (cow.c) */
	engine_apply_events(e); /* what the caller did before this call */
	return e;
}

static void engine_unlock(struct ksmu_engine *e)
{
	pthread_mutex_unlock(&e->lock);
}

static int check_range(void *addr, size_t len, uintptr_t *start, uintptr_t *end)
{
	size_t alen = (len + KSMU_PAGE_SIZE - 1) & KSMU_PAGE_MASK;

	*start = (uintptr_t)addr;
	if (*start & ~KSMU_PAGE_MASK)
		return -EINVAL;
	if (len && !alen)
		return -EINVAL; /* rounding up overflowed */
	*end = *start + alen;
	if (*end < *start)
		return -EINVAL;
	return 0;
}

/* Create and insert a region for [lo, hi), which no region overlaps. */
static int add_region_reg(struct ksmu_engine *e, uintptr_t lo, uintptr_t hi, bool registered,
			  bool tracked)
{
	struct ksmu_region *r = ksmu_region_new(&e->arena, lo, hi);

	if (!r)
		return -ENOMEM;
	if (registered) {
		/* The rest of a cut region: its registration (store parts included) stays. */
		r->wp_tracked = tracked;
	} else if (e->tracker_mode == KSMU_TRACK_WP_ASYNC) {
		int ret = ksmu_tracker_register(&e->tracker, lo, hi - lo);

		r->wp_tracked = ret == 0;
		if (ret)
			pr_info("range %#lx-%#lx falls back to checksums: %s", (unsigned long)lo,
				(unsigned long)hi, strerror(-ret));
	}
	ksmu_region_insert(&e->regions, r);
	e->nr_regions++;
	e->pages_tracked += r->nr_pages;
	return 0;
}

static int add_region(struct ksmu_engine *e, uintptr_t lo, uintptr_t hi)
{
	return add_region_reg(e, lo, hi, false, false);
}

/* Register the parts of [lo, hi) not yet registered (none of them the engine's own). */
static int register_parts(uintptr_t lo, uintptr_t hi, void *arg)
{
	struct ksmu_engine *e = arg;
	struct ksmu_region *r = ksmu_region_lookup(&e->regions, lo);
	uintptr_t pos = lo;
	int ret;

	for (; r && r->start < hi; r = ksmu_region_next(r)) {
		if (r->start > pos) {
			ret = add_region(e, pos, r->start);
			if (ret)
				return ret;
		}
		pos = KSMU_MAX(pos, r->end);
	}
	if (pos < hi)
		return add_region(e, pos, hi);
	return 0;
}

/* maps walk callback: register [lo, hi) but the engine's own memory. */
static int register_cb(uintptr_t lo, uintptr_t hi, void *arg)
{
	return ksmu_self_subtract(arg, lo, hi, register_parts, arg);
}

KSMU_API int ksmu_register(void *addr, size_t len)
{
	struct ksmu_engine *e;
	uintptr_t start, end;
	int ret, tret;

	ret = check_range(addr, len, &start, &end);
	if (ret || start == end)
		return ret;
	e = engine_lock();
	if (!e)
		return engine_err;
	ret = ksmu_maps_walk(start, end, register_cb, e);
	if (ret == 0 || ret == -ENOMEM) {
		if (e->nr_regions) {
			tret = ensure_thread(e);
			if (tret && !ret)
				ret = tret;
		}
		pthread_cond_signal(&e->wake);
	}
	engine_unlock(e);
	return ret;
}

/*
 * Larger mappings are reserves, not memory in use (a sanitizer's shadow,
 * a garbage collector's heap reserve): merge-any leaves them alone, since
 * their records would cost more than anything merging them could save,
 * and a runtime's shadow is touched by the merging thread itself.
 */
#define MERGE_ANY_MAX_MAPPING (1ULL << 40)

/* merge-any walk callback: register, skip what cannot be, go on. */
static int merge_any_cb(uintptr_t lo, uintptr_t hi, void *arg)
{
	struct ksmu_engine *e = arg;
	int ret;

	if (hi - lo > MERGE_ANY_MAX_MAPPING)
		return 0;
	ret = register_cb(lo, hi, e);
	if (ret)
		pr_info("merge-any: %#lx-%#lx not registered: %s", (unsigned long)lo,
			(unsigned long)hi, strerror(-ret));
	return 0;
}

/* Merge-any: register every accessible private anonymous mapping.  Lock held. */
static void merge_any_walk(struct ksmu_engine *e)
{
	int ret = ksmu_maps_walk_accessible(merge_any_cb, e);

	e->any_walk_ns = now_mono_ns();
	if (ret)
		pr_warn("merge-any: registering new mappings failed: %s", strerror(-ret));
	if (e->nr_regions && ensure_thread(e) == 0)
		pthread_cond_signal(&e->wake);
}

/* Merge-any, from the scanner: look for new mappings at most once a second. */
static void merge_any_tick(struct ksmu_engine *e)
{
	if (e->merge_any && now_mono_ns() - e->any_walk_ns >= 1000000000ull)
		merge_any_walk(e);
}

static int noop_cb(uintptr_t lo, uintptr_t hi, void *arg)
{
	(void)lo;
	(void)hi;
	(void)arg;
	return 0;
}

/* Why a range leaves its region (cut_region()). */
enum cut_how {
	CUT_UNREGISTER, /* ksmu_unregister(): unmerge first, the memory stays */
	CUT_UNMAPPED,	/* munmap(): the memory and its store mappings are gone */
	CUT_MOVED,	/* mremap(): the memory lives on elsewhere */
};

/*
 * Remove [start, end) from region @r, keeping what lies outside.  Merged
 * pages of the removed range are unmerged (CUT_UNREGISTER: on failure
 * nothing is removed and the error returned), or their store references
 * dropped (CUT_UNMAPPED) or leaked (CUT_MOVED).  The kept parts become
 * slices of @r that share its items (region.c): their pages keep their
 * records, merged or not.
 */
static int cut_region(struct ksmu_engine *e, struct ksmu_region *r, uintptr_t start, uintptr_t end,
		      enum cut_how how)
{
	uintptr_t lo = KSMU_MAX(start, r->start), hi = KSMU_MIN(end, r->end);
	size_t lo_idx = (lo - r->start) >> KSMU_PAGE_SHIFT, hi_idx = (hi - r->start) >> KSMU_PAGE_SHIFT;
	struct ksmu_region *left = NULL, *right = NULL;
	uintptr_t r_start = r->start, r_end = r->end;
	bool tracked = r->wp_tracked, fresh = false;
	int ret = 0;

	if (how == CUT_UNREGISTER) {
		ret = ksmu_dedup_unmerge_range(e, r, lo, hi, false);
		if (ret)
			return ret;
	}
	/* Allocate the slices first: failing now changes nothing but the unmerge. */
	if (lo_idx > 0 && !(left = ksmu_region_slice(r, 0, lo_idx)))
		ret = -ENOMEM;
	if (!ret && hi_idx < r->nr_pages && !(right = ksmu_region_slice(r, hi_idx, r->nr_pages)))
		ret = -ENOMEM;
	if (ret) {
		if (left)
			ksmu_region_free(&e->arena, left);
		if (how == CUT_UNREGISTER)
			return ret;
		/* An unmap or move cannot be refused: drop the kept parts' records too. */
		pr_warn("out of memory: forgetting the records of %#lx-%#lx",
			(unsigned long)r->start, (unsigned long)r->end);
		left = right = NULL;
		fresh = true;
		ksmu_scan_forget_range(e, r, r->start, lo, KSMU_FORGET_MOVED);
		ksmu_scan_forget_range(e, r, hi, r->end, KSMU_FORGET_MOVED);
	}
	if (e->cursor == r) {
		e->cursor = ksmu_region_next(r);
		e->cursor_idx = 0;
	}
	ksmu_scan_forget_range(e, r, lo, hi,
			       how == CUT_MOVED ? KSMU_FORGET_MOVED : KSMU_FORGET_UNMAPPED);
	ksmu_region_erase(&e->regions, r);
	e->nr_regions--;
	e->pages_tracked -= r->nr_pages;
	if (tracked && how == CUT_UNREGISTER)
		ksmu_dedup_unregister_range(e, lo, hi);
	if (left) {
		ksmu_region_insert(&e->regions, left);
		e->nr_regions++;
		e->pages_tracked += left->nr_pages;
	}
	if (right) {
		ksmu_region_insert(&e->regions, right);
		e->nr_regions++;
		e->pages_tracked += right->nr_pages;
	}
	ksmu_region_free(&e->arena, r);
	if (fresh) {
		/* the kept parts, registered as before, with fresh records */
		if (r_start < lo)
			ret = add_region_reg(e, r_start, lo, true, tracked);
		if (!ret && hi < r_end)
			ret = add_region_reg(e, hi, r_end, true, tracked);
	}
	return ret;
}

KSMU_API int ksmu_unregister(void *addr, size_t len)
{
	struct ksmu_engine *e;
	struct ksmu_region *r, *next;
	uintptr_t start, end;
	int ret, mret;

	ret = check_range(addr, len, &start, &end);
	if (ret || start == end)
		return ret;
	e = engine_lock();
	if (!e)
		return engine_err;
	ksmu_dedup_adopt_range(e, start, end);
	for (r = ksmu_region_lookup(&e->regions, start); r && r->start < end; r = next) {
		next = ksmu_region_next(r);
		ret = cut_region(e, r, start, end, CUT_UNREGISTER);
		if (ret)
			break;
	}
	/* madvise(MADV_UNMERGEABLE) reports unmapped parts with ENOMEM. */
	mret = ksmu_maps_walk(start, end, noop_cb, NULL);
	engine_unlock(e);
	return ret ? ret : mret;
}

void ksmu_engine_fork_done(int pid)
{
	struct ksmu_engine *e;

	if (!__atomic_load_n(&engine_ready, __ATOMIC_ACQUIRE))
		return;
	e = &engine;
	pthread_mutex_lock(&e->lock);
	ksmu_agent_fork_parent(e, pid);
	pthread_mutex_unlock(&e->lock);
}

void ksmu_engine_child_resume(void)
{
	struct ksmu_engine *e;

	if (!ksmu_engine_started() || !__atomic_load_n(&engine.need_child_restart, __ATOMIC_RELAXED))
		return;
	e = engine_lock(); /* restarts the child's engine (child_restart()) */
	if (e)
		engine_unlock(e);
}

int ksmu_engine_merge_any(bool on)
{
	struct ksmu_engine *e = engine_lock();
	struct ksmu_region *r, *next;
	int ret = 0;

	if (!e)
		return engine_err;
	if (on) {
		e->merge_any = true;
		merge_any_walk(e);
	} else if (e->merge_any) {
		/* as ksm_disable_merge_any(): every range unmerged and unregistered */
		ksmu_dedup_adopt_range(e, 0, UINTPTR_MAX);
		for (r = ksmu_region_first(&e->regions); r; r = next) {
			next = ksmu_region_next(r);
			ret = cut_region(e, r, r->start, r->end, CUT_UNREGISTER);
			if (ret)
				break;
		}
		if (!ret)
			e->merge_any = false;
	}
	engine_unlock(e);
	return ret;
}

int ksmu_engine_merge_any_get(void)
{
	struct ksmu_engine *e;
	int on;

	if (!ksmu_engine_started())
		return 0; /* never started: off, and asking does not start it */
	e = engine_lock();
	if (!e)
		return 0;
	on = e->merge_any;
	engine_unlock(e);
	return on;
}

bool ksmu_engine_covers(uintptr_t start, uintptr_t end)
{
	struct ksmu_engine *e;
	struct ksmu_region *r;
	uintptr_t pos = start;

	if (!ksmu_engine_started() || start >= end)
		return false;
	e = engine_lock();
	if (!e)
		return false;
	for (r = ksmu_region_lookup(&e->regions, start); r && r->start <= pos && pos < end;
	     r = ksmu_region_next(r))
		pos = r->end;
	engine_unlock(e);
	return pos >= end;
}

bool ksmu_engine_started(void)
{
	return __atomic_load_n(&engine_ready, __ATOMIC_ACQUIRE);
}

KSMU_API int ksmu_stats_get(struct ksmu_stats *out, size_t size)
{
	struct ksmu_engine *e;
	struct ksmu_stats s;

	if (!out || !size)
		return -EINVAL;
	e = engine_lock();
	if (!e)
		return engine_err;
	ksmu_stats_fill(e, &s);
	engine_unlock(e);
	memcpy(out, &s, KSMU_MIN(size, sizeof(s)));
	return 0;
}

KSMU_API int ksmu_stats(struct ksmu_stats *out)
{
	return ksmu_stats_get(out, sizeof(*out));
}

KSMU_API int ksmu_proc_stats(struct ksmu_proc_stats *out)
{
	struct ksmu_engine *e;
	struct ksmu_stats s;

	if (!out)
		return -EINVAL;
	e = engine_lock();
	if (!e)
		return engine_err;
	ksmu_stats_fill(e, &s);
	memset(out, 0, sizeof(*out));
	out->ksm_rmap_items = s.rmap_items;
	out->ksm_zero_pages = s.ksm_zero_pages;
	out->ksm_merging_pages = s.pages_shared + s.pages_sharing;
	out->ksm_process_profit = s.general_profit;
	out->ksm_merge_any = e->merge_any;
	out->ksm_mergeable = e->nr_regions > 0;
	engine_unlock(e);
	return 0;
}

KSMU_API int ksmu_set_tunable(const char *name, unsigned long value)
{
	struct ksmu_engine *e;
	int ret;

	if (!name)
		return -EINVAL;
	e = engine_lock();
	if (!e)
		return engine_err;
	ret = ksmu_knob_set(e, name, value);
	pthread_cond_signal(&e->wake);
	engine_unlock(e);
	return ret;
}

KSMU_API int ksmu_get_tunable(const char *name, unsigned long *value)
{
	struct ksmu_engine *e;
	int ret;

	if (!name || !value)
		return -EINVAL;
	e = engine_lock();
	if (!e)
		return engine_err;
	ret = ksmu_knob_get(e, name, value);
	engine_unlock(e);
	return ret;
}

KSMU_API int ksmu_set_run(int mode)
{
	if (mode < 0)
		return -EINVAL;
	return ksmu_set_tunable("run", (unsigned long)mode);
}

KSMU_API int ksmu_scan_full(void)
{
	struct ksmu_engine *e = engine_lock();
	uint64_t target;
	long r = 0;

	if (!e)
		return engine_err;
	if (e->merge_any)
		merge_any_walk(e); /* mappings made before this call are in the pass */
	/* A pass that started after this call: finish the current one first. */
	target = e->cnt.full_scans + (e->cursor ? 2 : 1);
	while (e->nr_regions && e->cnt.full_scans < target) {
		r = ksmu_scan_batch(e, SCAN_FULL_BATCH);
		if (r < 0)
			break;
		/* Let API callers and the scanner thread in between batches. */
		engine_unlock(e);
		pthread_mutex_lock(&e->lock);
		engine_apply_events(e);
	}
	r = r < 0 ? r : (long)(e->cnt.full_scans & 0x7fffffff);
	engine_unlock(e);
	return (int)r;
}

KSMU_API int ksmu_version(void)
{
	return KSMU_VERSION_NUM;
}

int ksmu_engine_set_tracker(struct ksmu_engine *e, int mode)
{
	int want =
	    mode ? mode : (best_tracker_possible() ? KSMU_TRACK_WP_ASYNC : KSMU_TRACK_CHECKSUM);
	struct ksmu_region *r;
	int ret;

	if (want == KSMU_TRACK_WP_ASYNC && !best_tracker_possible())
		return -EOPNOTSUPP;
	if (want == e->tracker_mode)
		return 0;
	if (want == KSMU_TRACK_CHECKSUM) {
		/*
		 * Unregister rather than close: the event reader polls the fd, and
		 * a closed number could be reused by an unrelated file.  Hashes
		 * stay valid: checksum mode re-reads every page anyway.
		 */
		for (r = ksmu_region_first(&e->regions); r; r = ksmu_region_next(r)) {
			if (r->wp_tracked)
				ksmu_dedup_unregister_range(e, r->start, r->end);
			r->wp_tracked = false;
		}
		e->tracker_mode = KSMU_TRACK_CHECKSUM;
		return 0;
	}
	if (e->tracker.fd < 0) {
		ret = tracker_start(e);
		if (ret)
			return ret;
	}
	/* Freshly registered pages read as written: each is re-hashed once. */
	for (r = ksmu_region_first(&e->regions); r; r = ksmu_region_next(r))
		r->wp_tracked =
		    ksmu_tracker_register(&e->tracker, r->start, r->end - r->start) == 0;
	e->tracker_mode = KSMU_TRACK_WP_ASYNC;
	return 0;
}

/* ------------------------------------------------------------ uffd events */

/*
 * Apply what the application did to registered memory.  Lock held.
 *   REMOVE (MADV_DONTNEED, MADV_REMOVE): the pages are gone; their records
 *     are forgotten now instead of at the next visit, so no tree keeps a
 *     candidate whose page would be faulted back in by a comparison.
 *   UNMAP: the range is no longer registered (as a VMA's VM_MERGEABLE dies
 *     with it).
 *   REMAP: the registration moves with the memory, as VM_MERGEABLE moves
 *     with its VMA; the uffd registration moved with the VMA too.  The moved
 *     pages start with fresh records (re-hashed on their next visit).  A
 *     mremap() that grows a region moves only the old length here: the
 *     grown tail is not registered (documented limit).
 * Races: the application's call has already returned when this runs (the
 * kernel lets it go once the event is read), so the scanner may have
 * visited the range in between; its reads of vanished pages fail with
 * EFAULT and forget them, so the outcome is the same.
 */
static void apply_event(struct ksmu_engine *e, const struct ksmu_uffd_event *ev)
{
	struct ksmu_region *r, *next;

	e->cnt.uffd_events++;
	switch (ev->kind) {
	case KSMU_UFFD_REMOVE:
		for (r = ksmu_region_lookup(&e->regions, ev->start); r && r->start < ev->end;
		     r = ksmu_region_next(r))
			ksmu_scan_forget_range(e, r, ev->start, ev->end, KSMU_FORGET_ZAPPED);
		break;
	case KSMU_UFFD_UNMAP:
		for (r = ksmu_region_lookup(&e->regions, ev->start); r && r->start < ev->end;
		     r = next) {
			next = ksmu_region_next(r);
			cut_region(e, r, ev->start, ev->end, CUT_UNMAPPED);
		}
		break;
	case KSMU_UFFD_REMAP: {
		uintptr_t to_end = ev->to + (ev->end - ev->start);

		/* The destination was unmapped first (its UNMAP came earlier); be sure. */
		for (r = ksmu_region_lookup(&e->regions, ev->to); r && r->start < to_end;
		     r = next) {
			next = ksmu_region_next(r);
			cut_region(e, r, ev->to, to_end, CUT_UNMAPPED);
		}
		while ((r = ksmu_region_lookup(&e->regions, ev->start)) && r->start < ev->end) {
			uintptr_t a = KSMU_MAX(r->start, ev->start), b = KSMU_MIN(r->end, ev->end);

			bool tracked = r->wp_tracked;

			cut_region(e, r, a, b, CUT_MOVED);
			/* The registration moved with the VMAs (store mappings keep MINOR). */
			if (add_region_reg(e, a - ev->start + ev->to, b - ev->start + ev->to, true,
					   tracked))
				pr_warn("lost track of a moved range: out of memory");
		}
		break;
	}
	case KSMU_UFFD_COW:
		r = ksmu_region_lookup(&e->regions, ev->start);
		if (r && r->start <= ev->start && ev->start < r->end)
			ksmu_dedup_cow_done(e, r, ev->start, ev->to != 0);
		break;
	default:
		break;
	}
}

#define EVENT_QUEUE 4096

/*
 * ZAPPED RANGES
 *   A merged page that the application drops (MADV_DONTNEED) must read as
 *   zeros afterwards, but its VMA maps the store, whose page the kernel
 *   would fault back in.  Store mappings are registered MINOR, so that
 *   access waits in a fault the reader answers.  The kernel delivers the
 *   REMOVE event before it zaps and before any later fault of the range,
 *   and the reader handles messages in order, so when a fault arrives the
 *   reader already knows whether the range was dropped: zeros (a private
 *   page, UFFDIO_COPY) if so, the store page (UFFDIO_CONTINUE: a fault for
 *   another reason, such as a swap-out or a failed pre-fault) if not.
 *   The set holds REMOVE ranges until their pages are faulted, unmapped
 *   (UNMAP), or merged again; it is owned by the reader, with a small lock
 *   for the scanner's prune after a merge.
 */
struct zap_range {
	uintptr_t start, end;
	uint64_t gen; /* zap_gen when added or last grown */
};

/*
 * The set is one array mapped at start-up (MAP_NORESERVE: a page of memory
 * per 170 ranges in use), never malloc and never moved: the reader holds
 * zap_lock while it answers faults, and an application thread that waits
 * for such an answer may hold the allocator's lock; and an array that
 * moved (mremap) could be registered by merge-any at its new place between
 * two looks at it, after which the reader's next mremap would wait for its
 * own REMAP event (a hang seen once under TSan in preload-ksm).  Mapped
 * before any registration and listed as the engine's own (selfmem.c).
 */
#define ZAP_MAX (1UL << 20) /* 24 MiB of address space */
static pthread_mutex_t zap_lock = PTHREAD_MUTEX_INITIALIZER;
static struct zap_range *zaps;
static size_t nr_zaps, zaps_cap;
static uint64_t zap_gen;

static void zap_init(void)
{
	void *p;

	if (zaps)
		return;
	p = mmap(NULL, ZAP_MAX * sizeof(*zaps), PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED) {
		pr_warn("no memory for the dropped-range set: MADV_DONTNEED of merged pages "
			"reads their old content");
		return;
	}
	zaps = p;
	zaps_cap = ZAP_MAX;
	ksmu_self_add((uintptr_t)p, (uintptr_t)p + ZAP_MAX * sizeof(*zaps));
}

static bool zap_reserve_locked(size_t more)
{
	return nr_zaps + more <= zaps_cap;
}

/*
 * Why zap_reserve_locked() said no: the set never grows, so it is full
 * (ZAP_MAX ranges), or it was never mapped (zap_init() warned).  Not a
 * matter of memory, which the set's pages take only as they are used.
 */
static const char *zap_no_room_locked(void)
{
	return zaps ? "zap set full" : "no zap set";
}

static void zap_remove_locked(uintptr_t start, uintptr_t end)
{
	size_t i = 0;

	while (i < nr_zaps) {
		struct zap_range *z = &zaps[i];

		if (z->end <= start || z->start >= end) {
			i++;
		} else if (z->start >= start && z->end <= end) {
			zaps[i] = zaps[--nr_zaps];
		} else if (z->start < start && z->end > end) {
			/* split: keep the head here, append the tail */
			if (!zap_reserve_locked(1)) {
				/*
				 * No room for the tail: drop it instead of keeping
				 * pages marked that were not dropped.  Never seen.
				 */
				pr_err("%s: forgetting dropped range %#lx-%#lx",
				       zap_no_room_locked(), (unsigned long)end,
				       (unsigned long)zaps[i].end);
				zaps[i].end = start;
				i++;
				continue;
			}
			z = &zaps[i];
			zaps[nr_zaps].start = end;
			zaps[nr_zaps].end = z->end;
			zaps[nr_zaps].gen = z->gen;
			nr_zaps++;
			z->end = start;
			i++;
		} else if (z->start < start) {
			z->end = start;
			i++;
		} else {
			z->start = end;
			i++;
		}
	}
}

/* mremap() moved [start, end) to @to: its drops move with it (a dropped
 * page moved untouched must still read zeros at its new place). */
static void zap_move_locked(uintptr_t start, uintptr_t end, uintptr_t to)
{
	size_t i, n0 = nr_zaps;

	for (i = 0; i < n0; i++) {
		uintptr_t a = KSMU_MAX(zaps[i].start, start), b = KSMU_MIN(zaps[i].end, end);

		if (a >= b)
			continue;
		if (!zap_reserve_locked(1)) {
			pr_err("%s: a dropped range moved to %#lx may read old content",
			       zap_no_room_locked(), (unsigned long)(a - start + to));
			continue;
		}
		zaps[nr_zaps].start = a - start + to;
		zaps[nr_zaps].end = b - start + to;
		zaps[nr_zaps].gen = ++zap_gen;
		nr_zaps++;
	}
	/* source and destination of mremap(MREMAP_FIXED) never overlap */
	zap_remove_locked(start, end);
}

void ksmu_engine_zap_forget(uintptr_t start, uintptr_t end)
{
	pthread_mutex_lock(&zap_lock);
	if (nr_zaps)
		zap_remove_locked(start, end);
	pthread_mutex_unlock(&zap_lock);
}

void ksmu_engine_zap_del_locked(uintptr_t start, uintptr_t end)
{
	zap_remove_locked(start, end);
}

void ksmu_engine_zap_lock(bool on)
{
	if (on)
		pthread_mutex_lock(&zap_lock);
	else
		pthread_mutex_unlock(&zap_lock);
}

void ksmu_engine_zap_add_locked(uintptr_t start, uintptr_t end)
{
	size_t i;

	zap_gen++;
	for (i = 0; i < nr_zaps; i++) {
		/* grow an overlapping or adjacent range */
		if (zaps[i].start <= end && start <= zaps[i].end) {
			zaps[i].start = KSMU_MIN(zaps[i].start, start);
			zaps[i].end = KSMU_MAX(zaps[i].end, end);
			zaps[i].gen = zap_gen;
			return;
		}
	}
	if (!zap_reserve_locked(1)) {
		/*
		 * Cannot remember it: the dropped store pages would be faulted
		 * back with their old content.  Never seen; say so.
		 */
		pr_err("%s: MADV_DONTNEED of %#lx-%#lx may read old content",
		       zap_no_room_locked(), (unsigned long)start, (unsigned long)end);
		return;
	}
	zaps[nr_zaps].start = start;
	zaps[nr_zaps].end = end;
	zaps[nr_zaps].gen = zap_gen;
	nr_zaps++;
}

bool ksmu_engine_zap_extent(struct ksmu_range *out)
{
	bool any;

	pthread_mutex_lock(&zap_lock);
	any = zaps != NULL;
	if (any) {
		out->start = (uintptr_t)zaps;
		out->end = (uintptr_t)zaps + zaps_cap * sizeof(*zaps);
	}
	pthread_mutex_unlock(&zap_lock);
	return any;
}

size_t ksmu_engine_zap_count(void)
{
	size_t n;

	pthread_mutex_lock(&zap_lock);
	n = nr_zaps;
	pthread_mutex_unlock(&zap_lock);
	return n;
}

uint64_t ksmu_engine_zap_gen(void)
{
	uint64_t g;

	pthread_mutex_lock(&zap_lock);
	g = zap_gen;
	pthread_mutex_unlock(&zap_lock);
	return g;
}

void ksmu_engine_zap_prune(const struct ksmu_range *keep, size_t n, uint64_t gen)
{
	size_t i, j, n0, lo, hi, pieces, k;

	pthread_mutex_lock(&zap_lock);
	n0 = nr_zaps;
	for (i = 0; i < n0; i++) {
		struct zap_range z = zaps[i];

		if (z.gen > gen)
			continue; /* newer than the maps @keep came from */

		/* keep[lo, hi): the store ranges overlapping z */
		for (lo = 0, hi = n; lo < hi;) {
			size_t mid = lo + (hi - lo) / 2;

			if (keep[mid].end <= z.start)
				lo = mid + 1;
			else
				hi = mid;
		}
		for (hi = lo; hi < n && keep[hi].start < z.end; hi++)
			;
		pieces = hi - lo;
		if (pieces > 1 && !zap_reserve_locked(pieces - 1))
			continue; /* no room to split: keep it whole (it was dropped) */
		zaps[i].start = zaps[i].end = 0; /* none: removed below */
		for (k = lo; k < hi; k++) {
			struct zap_range piece = {KSMU_MAX(z.start, keep[k].start),
						  KSMU_MIN(z.end, keep[k].end), z.gen};

			if (k == lo)
				zaps[i] = piece;
			else
				zaps[nr_zaps++] = piece;
		}
	}
	for (i = j = 0; i < nr_zaps; i++)
		if (zaps[i].start < zaps[i].end)
			zaps[j++] = zaps[i];
	nr_zaps = j;
	pthread_mutex_unlock(&zap_lock);
}

void ksmu_engine_zap_test_locked(uintptr_t start, size_t n, uint64_t *mask)
{
	uintptr_t end = start + (n << KSMU_PAGE_SHIFT);
	size_t i;

	for (i = 0; i < nr_zaps; i++) {
		uintptr_t a = KSMU_MAX(zaps[i].start, start), b = KSMU_MIN(zaps[i].end, end);

		for (a &= KSMU_PAGE_MASK; a < b; a += KSMU_PAGE_SIZE) {
			size_t k = (a - start) >> KSMU_PAGE_SHIFT;

			mask[k / 64] |= 1ULL << (k % 64);
		}
	}
}

static bool zap_has_locked(uintptr_t addr)
{
	size_t i;

	for (i = 0; i < nr_zaps; i++)
		if (addr >= zaps[i].start && addr < zaps[i].end)
			return true;
	return false;
}

/*
 * The reader's immediate part of an event: before queueing, without the
 * engine lock, with zap_lock held since the read.  Return: true if nothing
 * is left to apply.
 */
static bool event_now(struct ksmu_engine *e, int fd, bool on_cow, const struct ksmu_uffd_event *ev)
{
	/* the merger is initialised (memset included) before merger_hooked is set */
	uintptr_t staging = __atomic_load_n(&e->merger_hooked, __ATOMIC_ACQUIRE)
				? __atomic_load_n(&e->merger.staging, __ATOMIC_SEQ_CST)
				: 0;

	switch (ev->kind) {
	case KSMU_UFFD_FAULT: {
		bool zero;

		if (on_cow && (ev->to & UFFD_PAGEFAULT_FLAG_WP)) {
			ksmu_cow_request(e, ev->start); /* a write to a merged page (cow.c) */
			return true;
		}
		if (on_cow && !(ev->to & UFFD_PAGEFAULT_FLAG_MINOR)) {
			/*
			 * MISSING: on the page cow.c is filling (its fill wakes the
			 * thread), or on that anonymous page dropped after the fill
			 * and before cow.c handed it to the tracker: zeros.
			 */
			if (!ksmu_cow_filling(ev->start))
				ksmu_cow_zero_missing(e, ev->start);
			return true;
		}
		zero = zap_has_locked(ev->start);

		/*
		 * On failure (EAGAIN while an event is pending, EEXIST if the
		 * page was mapped meanwhile) the thread was woken and faults
		 * again if it must: the range stays in the set until a zero
		 * page is really in place.
		 */
		if (ksmu_tracker_resolve_minor(&e->tracker, fd, ev->start, zero) == 0 && zero)
			zap_remove_locked(ev->start, ev->start + KSMU_PAGE_SIZE);
		__atomic_fetch_add(zero ? &e->dd.minor_zero : &e->dd.minor_store, 1,
				   __ATOMIC_RELAXED);
		return true; /* nothing to apply */
	}
	case KSMU_UFFD_REMOVE:
		ksmu_cow_note_remove_locked(ev->start, ev->end);
		if (e->tracker.minor && __atomic_load_n(&e->ever_merged, __ATOMIC_ACQUIRE))
			ksmu_engine_zap_add_locked(ev->start, ev->end);
		return false;
	case KSMU_UFFD_UNMAP:
		/* the merger's staged store mapping leaving for the run (merge.c) */
		if (staging && ev->start == staging)
			return true;
		/* the store page the copy worker replaces (cow.c) */
		if (on_cow && ksmu_cow_own_event(ev->kind, ev->start, ev->end))
			return true;
		zap_remove_locked(ev->start, ev->end);
		return false;
	case KSMU_UFFD_REMAP:
		if (staging && ev->start == staging)
			return true;
		if (on_cow && ksmu_cow_own_event(ev->kind, ev->start, ev->end))
			return true;
		if (nr_zaps)
			zap_move_locked(ev->start, ev->end, ev->to);
		return false;
	default:
		return false;
	}
}

/*
 * The application's munmap()/mremap()/madvise() returns only once its event
 * has been *read*, so reading never waits for the engine lock (a scan batch
 * may hold it for milliseconds): events are read into a queue as they come
 * and applied, in order, by whoever holds the engine lock next - the
 * scanner thread woken by the reader (asked again every millisecond while
 * the lock is busy), an API call, or the scanner between batches
 * (engine_apply_events()).  Faults (MINOR, on
 * store mappings) are answered at once.  The reader never blocks on the
 * engine lock: the thread holding it may be waiting for a fault answer.
 *
 * Ordering guarantee: evq.lock is held from each read() until its events
 * are queued, so an API call made after the application's munmap() or
 * mremap() returned finds that event queued and applies it before it does
 * anything else; ksmu_unregister() right after a mremap() into a
 * registered range sees the moved registration, and an event can never be
 * applied after a later API call it precedes.
 *
 * Lock order: engine lock, then evq.lock; zap_lock, then evq.lock.  Events
 * are applied with evq.lock released (they are first moved to a buffer
 * that only the engine lock's holder touches).  If the queue overflows,
 * the events are dropped and every record is forgotten instead (records are
 * re-made on the next pass; store references of unmapped ranges leak).
 */
static struct {
	pthread_mutex_t lock;
	size_t n;	 /* queued, not yet applied */
	bool lost;	 /* overflowed since the last apply */
	struct ksmu_uffd_event q[EVENT_QUEUE];
} evq = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* Events being applied: owned by the engine lock's holder. */
static struct ksmu_uffd_event evq_apply[EVENT_QUEUE];

/* Apply every queued event, in order.  Engine lock held. */
static void engine_apply_events(struct ksmu_engine *e)
{
	size_t n, i;
	bool lost;

	/*
	 * Always under the lock, never an unlocked peek at evq.n: the
	 * application's call returns inside the reader's read(), before the
	 * event is queued, and only the lock makes this call wait for it.
	 */
	pthread_mutex_lock(&evq.lock);
	n = evq.n;
	lost = evq.lost;
	memcpy(evq_apply, evq.q, n * sizeof(evq.q[0]));
	__atomic_store_n(&evq.n, 0, __ATOMIC_RELEASE);
	__atomic_store_n(&evq.lost, false, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&evq.lock);
	for (i = 0; i < n; i++)
		apply_event(e, &evq_apply[i]);
	if (lost) {
		pr_warn("event queue overflow: forgetting all records");
		ksmu_scan_forget_all(e);
	}
}

void ksmu_engine_kick_reader(struct ksmu_engine *e)
{
	void *p = mmap(NULL, KSMU_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		       -1, 0);

	if (p == MAP_FAILED)
		return;
	/* the munmap returns once the reader has read its UNMAP: it polls anew */
	if (e->events_running && ksmu_tracker_register(&e->tracker, (uintptr_t)p, KSMU_PAGE_SIZE))
		pr_debug("reader kick: register failed");
	munmap(p, KSMU_PAGE_SIZE);
}

void ksmu_engine_queue_cow(struct ksmu_engine *e, uintptr_t addr, bool user)
{
	struct ksmu_uffd_event ev = {KSMU_UFFD_COW, addr, addr + KSMU_PAGE_SIZE, user ? 1 : 0};

	pthread_mutex_lock(&evq.lock);
	if (evq.n < EVENT_QUEUE) {
		evq.q[evq.n] = ev;
		__atomic_store_n(&evq.n, evq.n + 1, __ATOMIC_RELEASE);
	} else {
		__atomic_store_n(&evq.lost, true, __ATOMIC_RELEASE);
	}
	pthread_mutex_unlock(&evq.lock);
	/* as the reader does: the holder of the lock applies before it lets go */
	if (pthread_mutex_trylock(&e->lock))
		return;
	if (e->thread_running) {
		__atomic_store_n(&e->events_wake, true, __ATOMIC_RELEASE);
		pthread_cond_signal(&e->wake);
	}
	pthread_mutex_unlock(&e->lock);
}

/* The merger's REMOVE descriptors, once it is set up with hooks (dedup.c). */
static bool merger_fds_ready(struct ksmu_engine *e, int fds[2])
{
	if (!__atomic_load_n(&e->merger_hooked, __ATOMIC_ACQUIRE))
		return false;
	ksmu_merger_event_fds(&e->merger, fds);
	return true;
}

/*
 * Read and queue every pending event of @fd (the tracker's, or cow_fd if
 * @on_cow).  zap_lock is held from each read until its REMOVEs are in the
 * set (merge.c, ZAPS), evq.lock until its events are queued (the ordering
 * guarantee above).
 */
static void read_events(struct ksmu_engine *e, int fd, bool on_cow)
{
	struct ksmu_uffd_event in[16];
	int r, j;

	for (;;) {
		pthread_mutex_lock(&zap_lock);
		pthread_mutex_lock(&evq.lock);
		r = ksmu_tracker_read_fd(fd, in, KSMU_ARRAY_SIZE(in));
		for (j = 0; j < r; j++) {
			if (event_now(e, fd, on_cow, &in[j]))
				continue;
			if (evq.n < EVENT_QUEUE) {
				evq.q[evq.n] = in[j];
				__atomic_store_n(&evq.n, evq.n + 1, __ATOMIC_RELEASE);
			} else {
				__atomic_store_n(&evq.lost, true, __ATOMIC_RELEASE);
			}
		}
		pthread_mutex_unlock(&evq.lock);
		pthread_mutex_unlock(&zap_lock);
		/*
		 * Fewer than asked: the queue was empty at the read.  No second
		 * read to hear EAGAIN (one system call less per event); poll()
		 * reports whatever comes next.
		 */
		if (r < (int)KSMU_ARRAY_SIZE(in))
			return;
	}
}

static void *events_main(void *arg)
{
	struct ksmu_engine *e = arg;
	struct pollfd pfd[4];
	bool merger_busy = false, pending;
	int mfds[2];

	for (;;) {
		/* cow_fd is opened by the scanner (cow.c) while this thread polls */
		int j, k, nfd = 1, nown = 1, timeout;
		int fds[2] = {e->tracker.fd, __atomic_load_n(&e->tracker.cow_fd, __ATOMIC_ACQUIRE)};

		pfd[0].fd = fds[0];
		pfd[0].events = POLLIN;
		if (fds[1] >= 0) {
			pfd[nfd].fd = fds[1];
			pfd[nfd].events = POLLIN;
			nfd++;
			nown++;
		}
		if (merger_fds_ready(e, mfds)) {
			for (j = 0; j < 2; j++) {
				if (mfds[j] < 0)
					continue;
				pfd[nfd].fd = mfds[j];
				pfd[nfd].events = POLLIN;
				nfd++;
			}
		}
		pending = __atomic_load_n(&evq.n, __ATOMIC_ACQUIRE) ||
			  __atomic_load_n(&evq.lost, __ATOMIC_ACQUIRE);
		/* (cow.c opens cow_fd, then makes an event here so that it is polled too) */
		timeout = (pending || merger_busy) ? 1 : -1;
		if (poll(pfd, (nfds_t)nfd, timeout) < 0 && errno != EINTR) {
			pr_err("event reader: poll failed: %s", strerror(errno));
			return NULL;
		}
		/* Read first, without the engine lock: that is what lets the caller go. */
		for (k = 0; k < nown; k++)
			if (!k || (pfd[k].revents & POLLIN))
				read_events(e, fds[k], k == 1);
		/* REMOVEs the merger's windows left behind (merge.c, ZAPS) */
		merger_busy = false;
		for (j = nown; j < nfd; j++)
			if ((pfd[j].revents & POLLIN) && ksmu_merger_drain(&e->merger) == -EBUSY)
				merger_busy = true;
		if (!__atomic_load_n(&evq.n, __ATOMIC_ACQUIRE) &&
		    !__atomic_load_n(&evq.lost, __ATOMIC_ACQUIRE))
			continue;
		/*
		 * The scanner thread applies them, never this thread: applying
		 * frees records (free() may trim the heap: munmap, brk, madvise),
		 * and under merge-any the heap is registered, so this thread
		 * would wait for its own UNMAP or REMOVE event.  Without the
		 * engine lock (the holder applies anyway); at most once a
		 * millisecond (the poll timeout while events are pending).
		 */
		if (pthread_mutex_trylock(&e->lock))
			continue; /* busy: the holder applies before it lets go */
		if (e->thread_running) {
			__atomic_store_n(&e->events_wake, true, __ATOMIC_RELEASE);
			pthread_cond_signal(&e->wake);
		} else {
			engine_apply_events(e); /* no scanner (yet): rare */
		}
		pthread_mutex_unlock(&e->lock);
	}
	return NULL;
}

uint64_t ksmu_engine_reader_cpu_ns(const struct ksmu_engine *e)
{
	struct timespec ts;
	clockid_t cid;

	if (!e->events_running || pthread_getcpuclockid(e->events_thread, &cid) ||
	    clock_gettime(cid, &ts))
		return 0;
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int ksmu_engine_start_thread(pthread_t *t, void *(*fn)(void *), void *arg, const char *name)
{
	return start_thread(t, fn, arg, name);
}

static int start_thread(pthread_t *t, void *(*fn)(void *), void *arg, const char *name)
{
	pthread_attr_t attr;
	sigset_t all, old;
	int ret;

	/* Detached: it lives until exit (see the end of this file). */
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	ret = pthread_create(t, &attr, fn, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&attr);
	if (ret) {
		pr_err("cannot start thread %s: %s", name, strerror(ret));
		return -EAGAIN;
	}
	pthread_setname_np(*t, name);
	ksmu_self_add_thread(*t);
	return 0;
}

/*
 * Open the tracker, with events when a reader thread can be started for
 * them (otherwise every munmap of registered memory would block), without
 * them when not.  Lock held or during start-up.
 */
static int tracker_start(struct ksmu_engine *e)
{
	pthread_t t;
	int ret;

	if (!disable_events && !e->events_running && ksmu_tracker_open(&e->tracker, true) == 0) {
		if (start_thread(&t, events_main, e, "ksmu-uffd") == 0) {
			e->events_thread = t;
			e->events_running = true;
			return 0;
		}
		ksmu_tracker_close(&e->tracker);
	}
	ret = ksmu_tracker_open(&e->tracker, false);
	if (ret)
		pr_info("dirty tracker unavailable: %s", strerror(-ret));
	return ret;
}

static void atfork_prepare(void)
{
	pthread_mutex_lock(&engine.lock);
	pthread_mutex_lock(&evq.lock); /* no event half-queued in the child */
}

static void atfork_parent(void)
{
	pthread_mutex_unlock(&evq.lock);
	/* The child maps every store page that exists now: never free them. */
	ksmu_dedup_fork(&engine, false);
	/* ...and the daemon's: no RELEASE until it knows the child (fork()) */
	ksmu_agent_fork_prepare(&engine);
	pthread_mutex_unlock(&engine.lock);
}

static void atfork_child(void)
{
	struct ksmu_engine *e = &engine;
	struct ksmu_region *r;

	/*
	 * Only async-signal-safe work here: re-init, close, open.  The child
	 * has no threads of ours, so it must not register anything with an
	 * event-reporting userfaultfd yet (its munmap() would wait for a reader
	 * that does not exist): it scans by checksum until its first API call
	 * restarts the tracker and the threads (child_restart()).  The fd it
	 * inherited is the parent's userfaultfd: close it.
	 */
	pthread_mutex_init(&e->lock, NULL);
	/*
	 * Queued events changed the parent's memory before fork(), so the
	 * child's copy too: it applies them at its first API call.
	 */
	pthread_mutex_init(&evq.lock, NULL);
	init_wake(&e->wake);
	ksmu_dedup_fork(e, true);
	ksmu_agent_fork_child(e);
	e->thread_running = false;
	e->events_running = false;
	ksmu_self_forget_threads();
	ksmu_control_atfork_child();
	e->need_child_restart = true;
	if (ksmu_pagemap_reopen(&e->pm))
		e->pm.pid = getpid();
	ksmu_tracker_close(&e->tracker);
	ksmu_cow_atfork_child();
	e->cow_child = true;
	e->tracker.events = false;
	e->tracker_mode = KSMU_TRACK_CHECKSUM;
	for (r = ksmu_region_first(&e->regions); r; r = ksmu_region_next(r))
		r->wp_tracked = false;
}

/*
 * At exit() the scanner finishes its batch and scans no more (exit
 * handlers run in reverse order of registration, so this one runs before
 * those of runtimes loaded earlier).  A merge window waits, in an
 * uninterruptible sleep, for the event reader to read the REMAP of its
 * staged store mapping (merge.c, ZAPS); a runtime that stops every thread
 * with ptrace at exit (LeakSanitizer) would otherwise stop the reader and
 * then wait forever for the scanner to stop.  The exiting thread waits for
 * the batch (a few milliseconds) for at most two seconds: exit() called
 * while this thread holds the engine lock (from a signal handler inside an
 * API call, which is undefined anyway) must not deadlock.
 */
static void engine_atexit(void)
{
	struct ksmu_engine *e = &engine;
	int i;

	__atomic_store_n(&e->exiting, true, __ATOMIC_RELEASE);
	for (i = 0; i < 2000; i++) {
		if (pthread_mutex_trylock(&e->lock) == 0) {
			pthread_mutex_unlock(&e->lock);
			return;
		}
		usleep(1000);
	}
}

/*
 * No destructor stops the scanner thread itself: exit_group() ends it.  Nothing
 * needs freeing, a batch still running while exit handlers unmap memory is
 * harmless (reads go through process_vm_readv(), which returns EFAULT), and
 * stopping a thread during the C library's (or a sanitizer runtime's) own
 * teardown is riskier than letting it run.  The library is linked with
 * -z nodelete, so dlclose() never unmaps code the thread may be running.
 */
