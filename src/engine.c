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
 *   ksmu_scan_full() drops it between batches.  The scanner thread blocks
 *   all signals so that the host program's handlers never run on it.
 *
 *   fork(): the prepare handler takes e->lock so that the child inherits
 *   consistent state; the child handler re-initialises the lock, re-opens
 *   /proc/self/pagemap (the old fd describes the parent) and the tracker
 *   (userfaultfd registrations are not inherited without EVENT_FORK), all
 *   with plain system calls.  The child's scanner thread is started by its
 *   next API call, since creating threads in an atfork child handler is not
 *   async-signal-safe.
 *
 * KERNEL REQUIREMENTS
 *   See pagemap.c, uffd.c; degrades to checksums without WP_ASYNC and to
 *   pread of pagemap without PAGEMAP_SCAN.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define LOG_PREFIX "engine: "
#include "engine.h"
#include "log.h"
#include "probe.h"

#define ARENA_RESERVE (64UL << 30)     /* 8 TiB of tracked memory */
#define ARENA_RESERVE_MIN (4UL << 30)  /* when the address space is tight */
#define SCAN_FULL_BATCH 4096

static struct ksmu_engine engine;
static pthread_once_t engine_once = PTHREAD_ONCE_INIT;
static int engine_err;
static bool engine_ready;

static void atfork_prepare(void);
static void atfork_parent(void);
static void atfork_child(void);

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
 * KSMU_DISABLE=pagemap_scan,uffd_wp_async makes the engine behave as on an
 * older kernel that lacks those features, so that the fallback paths are
 * tested on every machine.  Read once, at start-up.
 */
static bool disable_pagemap_scan, disable_wp_async;

static void read_disable_env(void)
{
	const char *v = getenv("KSMU_DISABLE");

	if (!v)
		return;
	disable_pagemap_scan = strstr(v, "pagemap_scan") != NULL;
	disable_wp_async = disable_pagemap_scan || strstr(v, "uffd_wp_async") != NULL;
}

static bool best_tracker_possible(void)
{
	const struct ksmu_features *f = ksmu_probe_get();

	return f->uffd_wp_async && f->pagemap_scan && !disable_wp_async;
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
	read_disable_env();

	ret = ksmu_arena_init(&e->arena, ARENA_RESERVE);
	if (ret)
		ret = ksmu_arena_init(&e->arena, ARENA_RESERVE_MIN);
	if (ret)
		goto out_err;
	ret = ksmu_pagemap_open(&e->pm, f->pagemap_scan && !disable_pagemap_scan);
	if (ret)
		goto out_arena;
	e->batch_buf = aligned_alloc(KSMU_PAGE_SIZE, KSMU_BATCH_PAGES * KSMU_PAGE_SIZE);
	e->cand_buf = aligned_alloc(KSMU_PAGE_SIZE, KSMU_PAGE_SIZE);
	e->runs = calloc(KSMU_PM_VEC_LEN, sizeof(*e->runs));
	e->wruns = calloc(KSMU_PM_VEC_LEN, sizeof(*e->wruns));
	if (!e->batch_buf || !e->cand_buf || !e->runs || !e->wruns) {
		ret = -ENOMEM;
		goto out_bufs;
	}
	e->tracker_mode = KSMU_TRACK_CHECKSUM;
	if (best_tracker_possible() && ksmu_tracker_open(&e->tracker) == 0)
		e->tracker_mode = KSMU_TRACK_WP_ASYNC;
	else
		pr_info("exact dirty tracking unavailable; re-hashing pages every pass");
	pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
	engine_ready = true;
	return;

out_bufs:
	free(e->batch_buf);
	free(e->cand_buf);
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

static void *scanner_main(void *arg)
{
	struct ksmu_engine *e = arg;

	pthread_mutex_lock(&e->lock);
	for (;;) { /* runs until the process exits */
		if (e->knobs.run == KSMU_RUN_MERGE && e->nr_regions) {
			struct timespec ts;
			unsigned long ms;
			long r = ksmu_scan_batch(e, e->knobs.pages_to_scan);

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
			pthread_cond_timedwait(&e->wake, &e->lock, &ts);
		} else {
			pthread_cond_wait(&e->wake, &e->lock);
		}
	}
	return NULL;
}

/* Start the scanner thread if it is not running.  Lock held. */
static int ensure_thread(struct ksmu_engine *e)
{
	pthread_attr_t attr;
	sigset_t all, old;
	int ret;

	if (e->thread_running)
		return 0;
	/* Detached: it lives until exit (see the end of this file). */
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	ret = pthread_create(&e->thread, &attr, scanner_main, e);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&attr);
	if (ret) {
		pr_err("cannot start the scanner thread: %s", strerror(ret));
		return -EAGAIN;
	}
	pthread_setname_np(e->thread, "ksmu-scan");
	e->thread_running = true;
	e->need_child_restart = false;
	return 0;
}

/* Take the lock; in a forked child, bring the scanner back. */
static struct ksmu_engine *engine_lock(void)
{
	struct ksmu_engine *e = ksmu_engine_get();

	if (!e)
		return NULL;
	pthread_mutex_lock(&e->lock);
	if (e->need_child_restart && e->nr_regions)
		ensure_thread(e);
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
static int add_region(struct ksmu_engine *e, uintptr_t lo, uintptr_t hi)
{
	struct ksmu_region *r = ksmu_region_new(&e->arena, lo, hi);

	if (!r)
		return -ENOMEM;
	if (e->tracker_mode == KSMU_TRACK_WP_ASYNC) {
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

/* maps walk callback: register the parts of [lo, hi) not yet registered. */
static int register_cb(uintptr_t lo, uintptr_t hi, void *arg)
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

static int noop_cb(uintptr_t lo, uintptr_t hi, void *arg)
{
	(void)lo;
	(void)hi;
	(void)arg;
	return 0;
}

/* Remove [start, end) from region @r, keeping what lies outside. */
static int cut_region(struct ksmu_engine *e, struct ksmu_region *r, uintptr_t start, uintptr_t end)
{
	uintptr_t lo = KSMU_MAX(start, r->start), hi = KSMU_MIN(end, r->end);
	uintptr_t keep_lo_start = r->start, keep_hi_end = r->end;
	bool tracked = r->wp_tracked;
	int ret = 0;

	if (e->cursor == r) {
		e->cursor = ksmu_region_next(r);
		e->cursor_idx = 0;
	}
	ksmu_scan_forget_region(e, r);
	ksmu_region_erase(&e->regions, r);
	e->nr_regions--;
	e->pages_tracked -= r->nr_pages;
	if (tracked)
		ksmu_tracker_unregister(&e->tracker, lo, hi - lo);
	ksmu_region_free(&e->arena, r);
	/*
	 * The parts that stay registered become new regions.  Their tracker
	 * registration is still in place, so add_region()'s re-registration is
	 * a no-op for them.
	 */
	if (keep_lo_start < lo)
		ret = add_region(e, keep_lo_start, lo);
	if (!ret && hi < keep_hi_end)
		ret = add_region(e, hi, keep_hi_end);
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
	for (r = ksmu_region_lookup(&e->regions, start); r && r->start < end; r = next) {
		next = ksmu_region_next(r);
		ret = cut_region(e, r, start, end);
		if (ret)
			break;
	}
	/* madvise(MADV_UNMERGEABLE) reports unmapped parts with ENOMEM. */
	mret = ksmu_maps_walk(start, end, noop_cb, NULL);
	engine_unlock(e);
	return ret ? ret : mret;
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
	out->ksm_merge_any = 0;
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
	/* A pass that started after this call: finish the current one first. */
	target = e->cnt.full_scans + (e->cursor ? 2 : 1);
	while (e->nr_regions && e->cnt.full_scans < target) {
		r = ksmu_scan_batch(e, SCAN_FULL_BATCH);
		if (r < 0)
			break;
		/* Let API callers and the scanner thread in between batches. */
		engine_unlock(e);
		pthread_mutex_lock(&e->lock);
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
	int want = mode ? mode : (best_tracker_possible() ? KSMU_TRACK_WP_ASYNC : KSMU_TRACK_CHECKSUM);
	struct ksmu_region *r;
	int ret;

	if (want == KSMU_TRACK_WP_ASYNC && !best_tracker_possible())
		return -EOPNOTSUPP;
	if (want == e->tracker_mode)
		return 0;
	if (want == KSMU_TRACK_CHECKSUM) {
		/* Hashes stay valid: checksum mode re-reads every page anyway. */
		for (r = ksmu_region_first(&e->regions); r; r = ksmu_region_next(r))
			r->wp_tracked = false;
		ksmu_tracker_close(&e->tracker); /* closing unregisters every range */
		e->tracker_mode = KSMU_TRACK_CHECKSUM;
		return 0;
	}
	ret = ksmu_tracker_open(&e->tracker);
	if (ret)
		return ret;
	/* Freshly registered pages read as written: each is re-hashed once. */
	for (r = ksmu_region_first(&e->regions); r; r = ksmu_region_next(r))
		r->wp_tracked = ksmu_tracker_register(&e->tracker, r->start, r->end - r->start) == 0;
	e->tracker_mode = KSMU_TRACK_WP_ASYNC;
	return 0;
}

static void atfork_prepare(void)
{
	pthread_mutex_lock(&engine.lock);
}

static void atfork_parent(void)
{
	pthread_mutex_unlock(&engine.lock);
}

static void atfork_child(void)
{
	struct ksmu_engine *e = &engine;
	struct ksmu_region *r;

	/* Only async-signal-safe work here: re-init, close, open, ioctl. */
	pthread_mutex_init(&e->lock, NULL);
	init_wake(&e->wake);
	e->thread_running = false;
	e->need_child_restart = true;
	if (ksmu_pagemap_reopen(&e->pm))
		e->pm.pid = getpid();
	if (e->tracker_mode != KSMU_TRACK_WP_ASYNC)
		return;
	ksmu_tracker_close(&e->tracker);
	if (ksmu_tracker_open(&e->tracker)) {
		e->tracker_mode = KSMU_TRACK_CHECKSUM;
		for (r = ksmu_region_first(&e->regions); r; r = ksmu_region_next(r))
			r->wp_tracked = false;
		return;
	}
	for (r = ksmu_region_first(&e->regions); r; r = ksmu_region_next(r))
		r->wp_tracked = ksmu_tracker_register(&e->tracker, r->start, r->end - r->start) == 0;
}

/*
 * No destructor stops the scanner: at exit, exit_group() ends it.  Nothing
 * needs freeing, a batch still running while exit handlers unmap memory is
 * harmless (reads go through process_vm_readv(), which returns EFAULT), and
 * stopping a thread during the C library's (or a sanitizer runtime's) own
 * teardown is riskier than letting it run.  The library is linked with
 * -z nodelete, so dlclose() never unmaps code the thread may be running.
 */
