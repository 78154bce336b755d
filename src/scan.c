/* SPDX-License-Identifier: MIT */
/*
 * scan.c - the scanner: walks registered memory in batches, hashes the
 * pages that changed, and finds duplicates through the stable and unstable
 * trees (KSM's ksm_do_scan / cmp_and_merge_page).
 *
 * DESIGN
 *   A cursor (region, page index) walks all regions in address order; one
 *   batch examines up to pages_to_scan present pages, and a full pass ends
 *   when the cursor wraps (full_scans++).  For each stretch of a region the
 *   scanner asks the page tables two questions (pagemap.c), in one
 *   PAGEMAP_SCAN walk for regions under the async write-protect tracker
 *   (a walk costs per VMA too, and merged memory has many):
 *     1. which pages are present (PAGEMAP_SCAN, 1.5-4.6 ns/page);
 *     2. for regions under the tracker, which of them were written since
 *        the last visit (and re-protect them atomically).
 *   Then, per page:
 *     - absent: if it was tracked, its record is forgotten (the application
 *       dropped it: MADV_DONTNEED, MADV_FREE reclaimed, munmap);
 *     - present, hashed, not written, settled in a tree: nothing to do.
 *       This is where exact dirty tracking wins: kernel KSM re-reads and
 *       re-hashes every page every pass, ksmu touches only its 32-byte record;
 *     - otherwise the page is read (process_vm_readv, batched by 64) and
 *       hashed with XXH3, and then:
 *         first visit         -> look for a duplicate now (see below);
 *         hash unchanged      -> stays where it is (or, if it was volatile,
 *                                looks for a duplicate now);
 *         hash changed        -> leaves its tree, becomes volatile.
 *   "Look for a duplicate" is KSM's order: the stable tree first (nodes of
 *   the same key, compared in full against the node's page), then the
 *   unstable tree (items of the same key, compared in full); a match in the
 *   unstable tree creates a stable node holding both pages; no match inserts
 *   the page into the unstable tree.
 *
 *   Two deliberate departures from KSM, both on convergence speed:
 *     - A page seen for the first time is searched for at once instead of
 *       one pass later: KSM's wait exists to filter volatile pages, and a
 *       page that then changes is simply taken out again on its next visit
 *       (it is "volatile" from then on, as in KSM).  Duplicates therefore
 *       show up in one pass rather than two.
 *     - The unstable tree is not thrown away at the end of a pass: its keys
 *       are stored integers, so changes cannot corrupt it (unstable.c); the
 *       entries of pages that changed are removed when those pages are
 *       visited, which rebuilds exactly the part of the tree that changed.
 *
 *   smart_scan: in checksum mode (no tracker), a page that stayed unique and
 *   unchanged for several visits is re-hashed only every 2nd, then 4th
 *   pass (pages_skipped), as KSM's smart scan does.  Tracked pages need no
 *   such heuristic for unchanged pages, which are never re-hashed; for hot
 *   ones they need the opposite: a page written between two passes is
 *   write-protected again by the walk, so an application that keeps
 *   writing it takes a write-protect fault per page and pass (its cost
 *   under ksmu, not under KSM).  A tracked page whose content changed on 3
 *   visits in a row ("hot": volatile, streak in the age bits) is left out
 *   of the walk - neither protected nor read - on 2 of 4, then 6 of 8
 *   passes (pages_skipped; hot_item()).  It stays unprotected meanwhile,
 *   so it is reported written, re-protected and re-hashed on the pass it
 *   is visited: nothing it did is missed, and a volatile page is in no
 *   tree, so it cannot be merged before then.
 *
 *   Merging (dedup.c): a stable node is a store page every member maps; a
 *   duplicate joins it through a merge window, an unstable pair becomes a new
 *   node.  Joins wait in a queue until the end of flush_batch(), so that a
 *   run of adjacent pages merges in one window (dedup.c, RUNS); a queued
 *   page is skipped if the batch meets it again, and a node a queued join
 *   names is not freed before the flush (settle_node()).  Merged pages are never read again: a merged page reported written
 *   was copied by the kernel and leaves its node (cow_breaks).  Where merging
 *   is off (dry_run, or a kernel without the features) the scanner only
 *   detects, as release 0.1 did: a node's "canonical" member holds the
 *   reference content, every page that changes leaves its node on its next
 *   visit, and a node left with a single page is dissolved back into the
 *   unstable tree.
 *
 * INVARIANTS
 *   - An item is in at most one of: unstable tree, a stable node, the zero
 *     set (KSMU_ITEM_ZERO); only HASHED items are in any of them.
 *   - chunk->nr_hashed == number of HASHED items of the chunk; the counter
 *     rmap_items is their total, zero_items the number of ZERO items.
 *   - No page is counted as a duplicate of another unless their contents
 *     were compared in full (ksmu_pages_equal) during this visit.
 *
 * LOCKING / THREADS
 *   Everything runs with the engine lock held, in the scanner thread or in
 *   a thread inside ksmu_scan_full().
 *
 * RACES
 *   Application threads run freely while a batch runs.  A page may change
 *   between being read and being compared with a candidate: the comparison
 *   uses the copy read into batch_buf, so the worst outcome is a record that
 *   is already stale, which the tracker (or the checksum) reports on the
 *   next visit, where the page leaves its node.  A candidate may have been
 *   zapped: its presence is checked before it is read, so the scanner does
 *   not fault fresh pages into the application.  A range may be unmapped
 *   while it is read: process_vm_readv fails with EFAULT for that page and
 *   the page's record is forgotten.  Nothing here writes application memory.
 *
 * KERNEL REQUIREMENTS
 *   pagemap.c and uffd.c requirements; none of its own.
 */
#include <errno.h>
#include <string.h>
#include <time.h>

#define LOG_PREFIX "scan: "
#include "engine.h"
#include "hash.h"
#include "log.h"

#define SCAN_MAX_RUNS KSMU_PM_VEC_LEN

static uint64_t thread_cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void item_set_hashed(struct ksmu_engine *e, struct ksmu_rmap_item *it, uint64_t key)
{
	if (!(ksmu_item_flags(it) & KSMU_ITEM_HASHED)) {
		ksmu_item_set_flags(it, KSMU_ITEM_HASHED);
		ksmu_item_chunk(it)->nr_hashed++;
		e->cnt.rmap_items++;
	}
	ksmu_item_set_key(it, key);
}

static void item_detach(struct ksmu_engine *e, struct ksmu_rmap_item *it);

/*
 * A stable node whose members dropped to one saves nothing any more.  In
 * the detection-only mode the last page goes back to the unstable tree so
 * that it can pair again.  A merged node stays while it has a member (its
 * page is merged; new duplicates can join it) and goes with its last one.
 */
static void settle_node(struct ksmu_engine *e, struct ksmu_stable_node *sn)
{
	struct ksmu_rmap_item *last;

	if (sn->store) {
		if (sn->nr_members || ksmu_dedup_join_names(e, sn))
			return; /* a queued join names it: the flush frees it if need be */
		ksmu_dedup_node_gone(e, sn);
		ksmu_stable_free(&e->stable, sn);
		return;
	}
	if (sn->nr_members > 1)
		return;
	last = sn->members;
	if (last)
		ksmu_stable_remove(&e->stable, last);
	ksmu_stable_free(&e->stable, sn);
	if (last)
		ksmu_unstable_insert(&e->unstable, last);
}

/* Take @it out of whatever it is in; it keeps its hash and store reference. */
static void item_detach(struct ksmu_engine *e, struct ksmu_rmap_item *it)
{
	unsigned int f = ksmu_item_flags(it);

	if (f & KSMU_ITEM_UNSTABLE) {
		ksmu_unstable_erase(&e->unstable, it);
	} else if (f & KSMU_ITEM_STABLE) {
		struct ksmu_pstore *ps = it->s.stable->store;
		uint32_t idx = it->s.stable->store_idx;
		struct ksmu_stable_node *sn = ksmu_stable_remove(&e->stable, it);

		if (f & KSMU_ITEM_MAPPED) {
			ksmu_dedup_keep_ref(it, ps, idx);
			e->cnt.merged_members--;
		}
		settle_node(e, sn);
	}
	if (f & KSMU_ITEM_ZERO) {
		ksmu_item_clear_flags(it, KSMU_ITEM_ZERO);
		e->cnt.zero_items--;
		if (f & KSMU_ITEM_MAPPED) {
			ksmu_dedup_keep_ref(it, e->zero_store, e->zero_idx);
			e->cnt.zero_mapped--;
		}
	}
}

void ksmu_scan_item_detach(struct ksmu_engine *e, struct ksmu_rmap_item *it)
{
	item_detach(e, it);
}

/* Forget what is known of @it's content; a MAPPED item keeps its reference. */
static void item_forget(struct ksmu_engine *e, struct ksmu_rmap_item *it)
{
	if (!(ksmu_item_flags(it) & KSMU_ITEM_HASHED))
		return;
	item_detach(e, it);
	ksmu_item_chunk(it)->nr_hashed--;
	e->cnt.rmap_items--;
	it->hash_flags &= KSMU_ITEM_MAPPED;
}

void ksmu_scan_item_forget(struct ksmu_engine *e, struct ksmu_rmap_item *it)
{
	item_forget(e, it);
}

/* Compare cand_buf with @page in full; count the comparison and any collision. */
static bool cand_equal(struct ksmu_engine *e, const void *page, uint64_t key)
{
	e->cnt.pages_compared++;
	if (ksmu_pages_equal(e->cand_buf, page))
		return true;
	/* Same key, different content: a real collision, or a stale entry. */
	if (ksmu_hash_to_key(ksmu_hash_page(e->cand_buf)) == key)
		e->cnt.hash_collisions++;
	return false;
}

/*
 * Compare @page (our copy) with the live page at @addr.  Returns true only
 * on full equality.  A candidate that is not present any more is not read
 * (reading would fault a fresh page into the application).
 */
static bool same_content(struct ksmu_engine *e, uintptr_t addr, const void *page, uint64_t key)
{
	uint8_t ok = 0;

	if (ksmu_pagemap_is_present(&e->pm, addr) != 1)
		return false;
	if (ksmu_mem_read(&e->pm, &addr, 1, e->cand_buf, &ok) != 1 || !ok)
		return false;
	return cand_equal(e, page, key);
}

/* Compare @page with the store page of merged node @sn (read into cand_buf). */
static bool same_as_node(struct ksmu_engine *e, const struct ksmu_stable_node *sn, const void *page,
			 uint64_t key)
{
	if (!sn->store) {
		return sn->canonical && same_content(e, ksmu_item_addr(sn->canonical), page, key);
	}
	if (ksmu_dedup_read_node(e, sn, e->cand_buf))
		return false;
	return cand_equal(e, page, key);
}

/*
 * A merge of @it did not happen: it is marked volatile, so that it is
 * searched again on its next visit if it did not change.  That retries a
 * pinned page (kernel KSM retries them every pass as well) and a page over
 * the VMA budget (merged once VMAs are free again); a page that changed is
 * searched once it stops changing.  (A skipped page put in the unstable
 * tree would never be searched again: clean pages in a tree are not.)
 */
static void merge_failed(struct ksmu_rmap_item *it)
{
	if (ksmu_item_flags(it) & KSMU_ITEM_MAPPED)
		return; /* adopted as a store mapping (-EALREADY): nothing to retry */
	ksmu_item_set_flags(it, KSMU_ITEM_VOLATILE);
	ksmu_item_set_age(it, 0);
}

void ksmu_scan_merge_failed(struct ksmu_rmap_item *it)
{
	merge_failed(it);
}

/* KSM's cmp_and_merge_page() for a page in no tree, with content @page. */
static void find_duplicate(struct ksmu_engine *e, struct ksmu_rmap_item *it, const void *page,
			   uint64_t key)
{
	struct ksmu_stable_node *sn, *full = NULL;
	struct ksmu_rmap_item *cand;
	bool merging = e->merging_now;
	int err;

	if (ksmu_item_flags(it) & KSMU_ITEM_MAPPED)
		return; /* a private copy in a store mapping: cannot be merged again */

	if (e->knobs.use_zero_pages && ksmu_page_is_zero(page)) {
		if (merging) {
			err = ksmu_dedup_join_zero(e, it);
			if (err)
				merge_failed(it);
			return;
		}
		ksmu_item_set_flags(it, KSMU_ITEM_ZERO);
		e->cnt.zero_items++;
		return;
	}

	for (sn = ksmu_stable_first(&e->stable, key); sn; sn = ksmu_stable_next_same(sn)) {
		struct ksmu_stable_node *room;

		if (!same_as_node(e, sn, page, key))
			continue;
		/*
		 * All nodes of a chain hold the same content (stable.c), so one
		 * comparison settles the whole chain: look for a node with room
		 * instead of comparing every dup (a chain of zero pages at
		 * max_page_sharing 256 has hundreds of nodes per GiB).
		 */
		room = sn;
		while (room->dup_prev)
			room = room->dup_prev;
		for (; room; room = room->dup_next)
			if ((room->store || room->canonical) &&
			    ksmu_dedup_node_fill(e, room) < e->knobs.max_page_sharing &&
			    (!merging || room->store))
				break;
		if (room) {
			if (merging) {
				/* cand_buf holds the node's content, read from the store. */
				if (room != sn && ksmu_dedup_read_node(e, room, e->cand_buf)) {
					merge_failed(it);
					return;
				}
				err = ksmu_dedup_join_later(e, room, it, e->cand_buf);
				if (err)
					merge_failed(it);
				return;
			}
			ksmu_stable_add(&e->stable, room, it);
			ksmu_item_set_age(it, 0);
			return;
		}
		full = sn; /* same content, all full: a new dup joins the chain */
		break;
	}

	for (cand = ksmu_unstable_first(&e->unstable, key); cand;
	     cand = ksmu_unstable_next_same(cand)) {
		int cand_err, it_err;

		if (!same_content(e, ksmu_item_addr(cand), page, key))
			continue;
		if (merging) {
			sn = ksmu_dedup_promote(e, cand, it, page, key, &cand_err, &it_err);
			if (!sn) {
				/* @cand left the unstable tree; it failed, @it did not try. */
				merge_failed(cand);
				break;
			}
			if (cand_err)
				merge_failed(cand);
			if (it_err)
				merge_failed(it);
			/*
			 * A daemon page's node may be in a chain already (or be
			 * @full itself, when it had room for the pair again).
			 */
			if (full && sn != full && !sn->dup_prev && !sn->dup_next)
				ksmu_stable_chain(&e->stable, full, sn);
			return;
		}
		sn = ksmu_stable_new(&e->stable, key);
		if (!sn)
			break; /* out of memory: keep the page unshared */
		ksmu_unstable_erase(&e->unstable, cand);
		ksmu_stable_add(&e->stable, sn, cand);
		ksmu_stable_add(&e->stable, sn, it);
		ksmu_item_set_age(cand, 0);
		ksmu_item_set_age(it, 0);
		if (full)
			ksmu_stable_chain(&e->stable, full, sn);
		return;
	}
	ksmu_unstable_insert(&e->unstable, it);
	/* no duplicate here: does another process have it? (agent.c) */
	if (merging && ksmu_agent_connected(&e->agent))
		ksmu_agent_queue(e, it, page, key);
}

/* Process pages whose content was just read into batch_buf. */
static void flush_batch(struct ksmu_engine *e, struct ksmu_rmap_item **items, uintptr_t *addrs,
			size_t n)
{
	uint8_t ok[KSMU_BATCH_PAGES];
	long r;
	size_t i;

	if (!n)
		return;
	r = ksmu_mem_read(&e->pm, addrs, n, e->batch_buf, ok);
	if (r < 0) {
		pr_warn("reading %zu pages failed: %s", n, strerror((int)-r));
		return;
	}
	for (i = 0; i < n; i++) {
		struct ksmu_rmap_item *it = items[i];
		const void *page = e->batch_buf + (i << KSMU_PAGE_SHIFT);
		unsigned int f = ksmu_item_flags(it);
		uint64_t key;

		/*
		 * A page queued to join (as the other half of a pair found
		 * earlier in this batch) is compared again by its window.
		 */
		if (e->joins.pages && ksmu_dedup_join_queued(e, addrs[i]))
			continue;
		if (!ok[i]) {
			item_forget(e, it); /* unmapped or made inaccessible meanwhile */
			continue;
		}
		key = ksmu_hash_to_key(ksmu_hash_page(page));
		e->cnt.pages_hashed++;
		if (!(f & KSMU_ITEM_HASHED)) {
			item_set_hashed(e, it, key);
			find_duplicate(e, it, page, key);
		} else if (key == ksmu_item_key(it)) {
			if (f & (KSMU_ITEM_UNSTABLE | KSMU_ITEM_STABLE | KSMU_ITEM_ZERO)) {
				if (f & KSMU_ITEM_UNSTABLE)
					ksmu_item_set_age(it, ksmu_item_age(it) + 1);
				continue;
			}
			ksmu_item_clear_flags(it, KSMU_ITEM_VOLATILE);
			ksmu_item_set_age(it, 0); /* the streak ends */
			find_duplicate(e, it, page, key);
		} else {
			/* changed again: the age bits count the streak (hot_item()) */
			unsigned int streak = f & KSMU_ITEM_VOLATILE ? ksmu_item_age(it) + 1 : 0;

			item_detach(e, it);
			item_set_hashed(e, it, key);
			ksmu_item_set_flags(it, KSMU_ITEM_VOLATILE);
			ksmu_item_set_age(it, streak);
		}
	}
	ksmu_dedup_join_flush(e); /* RUNS (dedup.c): one window per run */
	ksmu_agent_flush(e);
}

/* Forget tracked pages in [a, b) of @r: they are not present any more. */
static void forget_absent(struct ksmu_engine *e, struct ksmu_region *r, uintptr_t a, uintptr_t b,
			  enum ksmu_forget how)
{
	size_t idx = (a - r->start) >> KSMU_PAGE_SHIFT;
	size_t end = (b - r->start) >> KSMU_PAGE_SHIFT;

	while (idx < end) {
		struct ksmu_chunk *c = ksmu_region_chunk(r, idx);
		size_t chunk_end = KSMU_MIN(end, ksmu_region_chunk_end(r, idx));

		if (c->nr_hashed ||
		    (how != KSMU_FORGET_ABSENT && how != KSMU_FORGET_ZAPPED && c->nr_mapped)) {
			/* Only chunks with hashed items are read: others stay unallocated. */
			for (; idx < chunk_end; idx++) {
				struct ksmu_rmap_item *it = ksmu_region_item(r, idx);

				if (how == KSMU_FORGET_ABSENT &&
				    (ksmu_item_flags(it) & KSMU_ITEM_MAPPED) &&
				    (ksmu_item_flags(it) & (KSMU_ITEM_STABLE | KSMU_ITEM_ZERO)))
					continue;
				item_forget(e, it);
				if (how == KSMU_FORGET_UNMAPPED) {
					item_detach(e, it);
					ksmu_dedup_unmapped(e, it);
				} else if (how == KSMU_FORGET_MOVED) {
					item_detach(e, it);
					ksmu_dedup_drop_moved(e, it);
				}
			}
		}
		idx = chunk_end;
	}
}

static bool smart_skip(const struct ksmu_engine *e, const struct ksmu_rmap_item *it)
{
	unsigned int age = ksmu_item_age(it);
	unsigned int period;

	if (!e->knobs.smart_scan || age < 2 || !(ksmu_item_flags(it) & KSMU_ITEM_UNSTABLE))
		return false;
	period = 1u << KSMU_MIN(age - 1, 3u);
	return e->cnt.full_scans % period != 0;
}

/*
 * smart_scan for tracked regions (see DESIGN): a page whose content changed
 * on its last visits (streak s >= 2) is visited on two passes out of 2^s
 * (4, then 8): the first reads what it became while it was left writable
 * and protects it again, the second tells whether it is still being
 * written.  A page that went quiet is found unchanged on that second visit
 * and searched at once, so it merges at most 2^s + 1 passes after its last
 * write.  Merge failures mark a page volatile with streak 0: never hot.
 */
static bool hot_item(const struct ksmu_engine *e, const struct ksmu_rmap_item *it)
{
	unsigned int f = ksmu_item_flags(it);
	unsigned int streak = ksmu_item_age(it);

	if ((f & (KSMU_ITEM_HASHED | KSMU_ITEM_VOLATILE | KSMU_ITEM_MAPPED)) !=
	    (KSMU_ITEM_HASHED | KSMU_ITEM_VOLATILE) ||
	    !streak)
		return false;
	return e->cnt.full_scans % (1u << streak) > 1;
}

/*
 * The end (a page index) of the stretch of @r from @idx in which every page
 * is hot or none is; *@hot says which.  At most @max items are looked at
 * (what is left of the batch: the walk stops there anyway, so no item is
 * looked at twice in a pass).  Chunks without hashed items hold no hot page
 * and are passed over whole, without touching their items, so a sparse
 * region still goes to one walk.
 */
static size_t stretch_end(const struct ksmu_engine *e, const struct ksmu_region *r, size_t idx,
			  size_t max, bool *hot)
{
	size_t i = idx, looked = 0;
	bool first = true, h0 = false;

	max = KSMU_MAX(max, (size_t)1);
	while (i < r->nr_pages && looked < max) {
		const struct ksmu_chunk *c = ksmu_region_chunk(r, i);
		size_t ce = KSMU_MIN(r->nr_pages, ksmu_region_chunk_end(r, i));

		if (!c->nr_hashed) {
			if (!first && h0)
				break;
			first = false;
			i = ce;
			continue;
		}
		for (; i < ce && looked < max; i++, looked++) {
			bool h = hot_item(e, ksmu_region_item(r, i));

			if (first) {
				first = false;
				h0 = h;
			} else if (h != h0) {
				goto out;
			}
		}
	}
out:
	*hot = h0;
	return i;
}

struct rearm {
	struct ksmu_engine *e;
	size_t covered;
	bool failed;
};

static int rearm_cb(uintptr_t lo, uintptr_t hi, void *arg)
{
	struct rearm *ra = arg;

	if (ksmu_tracker_register(&ra->e->tracker, lo, hi - lo))
		ra->failed = true;
	ra->covered += hi - lo;
	return 0;
}

/*
 * PAGEMAP_SCAN with PM_SCAN_CHECK_WPASYNC failed with EPERM: part of @r is
 * now a VMA that the tracker does not cover (the application unmapped and
 * mapped again, or mremap()ed, inside the region).  Register what is
 * eligible again; if anything in the region is not (a hole, a file or
 * shared mapping), the region is tracked by checksum from now on.
 */
static void rearm_region(struct ksmu_engine *e, struct ksmu_region *r)
{
	struct rearm ra = {e, 0, false};

	ksmu_maps_walk(r->start, r->end, rearm_cb, &ra);
	/* Store mappings made by merges are part of the region too. */
	ra.covered += ksmu_dedup_rearm_stores(e, r->start, r->end);
	if (ra.failed || ra.covered != r->end - r->start) {
		r->wp_tracked = false;
		pr_info("region %#lx-%#lx changed under the tracker; using checksums for it",
			(unsigned long)r->start, (unsigned long)r->end);
	}
}

/*
 * Examine [from, to) of @r given the present runs and, if @all_written is
 * false and the region is tracked, the written runs; returns pages examined.
 */
static size_t process_range(struct ksmu_engine *e, struct ksmu_region *r, uintptr_t from,
			    uintptr_t to, size_t nruns, size_t nw, bool all_written)
{
	struct ksmu_rmap_item *items[KSMU_BATCH_PAGES];
	uintptr_t addrs[KSMU_BATCH_PAGES];
	size_t nb = 0, examined = 0, i, w = 0;
	uintptr_t pos = from;

	e->merging_now = ksmu_dedup_active(e, r);
	for (i = 0; i < nruns; i++) {
		uintptr_t a = KSMU_MAX(e->runs[i].start, from);
		uintptr_t b = KSMU_MIN(e->runs[i].end, to);

		if (a >= b)
			continue;
		if (a > pos)
			forget_absent(e, r, pos, a, KSMU_FORGET_ABSENT);
		for (; a < b; a += KSMU_PAGE_SIZE) {
			struct ksmu_rmap_item *it =
			    ksmu_region_item(r, (a - r->start) >> KSMU_PAGE_SHIFT);
			unsigned int f = ksmu_item_flags(it);
			bool written = true;

			examined++;
			e->cnt.pages_scanned++;
			if (r->wp_tracked && !all_written) {
				while (w < nw && e->wruns[w].end <= a)
					w++;
				written = w < nw && e->wruns[w].start <= a;
			}
			if (f & KSMU_ITEM_MAPPED) {
				/*
				 * A merged page reported written was copied by the
				 * kernel (COW break), unless it still maps the store
				 * page (a report without a write: new registration).
				 * Copies cannot be merged again (dedup.c): skipped.
				 */
				/*
				 * (cow_policy=1: the walk skips store mappings; a
				 * MAPPED page it reports is an anonymous copy of
				 * cow.c whose event comes next: nothing to do.)
				 */
				if (written && !e->tracker.cow &&
				    (f & (KSMU_ITEM_STABLE | KSMU_ITEM_ZERO)) &&
				    ksmu_pagemap_maps_file(&e->pm, a) != 1) {
					item_detach(e, it);
					e->dd.cow_breaks++;
				}
				continue;
			}
			if ((f & KSMU_ITEM_HASHED) && !written) {
				e->cnt.pages_clean++;
				if (f & (KSMU_ITEM_UNSTABLE | KSMU_ITEM_STABLE | KSMU_ITEM_ZERO))
					continue;
				/*
				 * Volatile last time, unchanged since: worth a search
				 * now, unless no merge can have room.  A page refused
				 * for the VMA budget waits here without being read
				 * (pass after pass of reads, hashes and full compares
				 * that end in the same refusal were most of a quiet
				 * pass's CPU once the budget ran out); it is searched
				 * again once a count finds VMAs free.
				 */
				if (e->vma_full && e->merging_now) {
					e->dd.vma_limited++;
					continue;
				}
			} else if ((f & KSMU_ITEM_HASHED) && !r->wp_tracked && !all_written &&
				   smart_skip(e, it)) {
				e->cnt.pages_skipped++;
				continue;
			}
			items[nb] = it;
			addrs[nb] = a;
			if (++nb == KSMU_BATCH_PAGES) {
				flush_batch(e, items, addrs, nb);
				nb = 0;
			}
		}
		pos = b;
	}
	flush_batch(e, items, addrs, nb);
	if (pos < to)
		forget_absent(e, r, pos, to, KSMU_FORGET_ABSENT);
	return examined;
}

long ksmu_scan_batch(struct ksmu_engine *e, size_t budget)
{
	uint64_t t0 = thread_cpu_ns();
	size_t examined = 0;
	long ret = 0;

	if (!e->nr_regions || !budget)
		return 0;
	/* ksmd-user: connect when due, read its messages, act on its hints */
	ksmu_agent_tick(e);
	ksmu_agent_apply_hints(e);
	while (examined < budget) {
		struct ksmu_region *r;
		uintptr_t from, walk_to, walk_end;
		size_t nw = 0;
		bool all_written = false;
		int n;

		if (!e->cursor) {
			e->cursor = ksmu_region_first(&e->regions);
			e->cursor_idx = 0;
		}
		r = e->cursor;
		from = r->start + (e->cursor_idx << KSMU_PAGE_SHIFT);
		walk_to = r->end;
		if (r->wp_tracked && e->knobs.smart_scan) {
			bool hot;
			size_t se = stretch_end(e, r, e->cursor_idx, budget - examined, &hot);

			if (hot) {
				/* left alone this pass: not walked, not protected, not read */
				e->cnt.pages_skipped += se - e->cursor_idx;
				walk_end = r->start + (se << KSMU_PAGE_SHIFT);
				goto advance;
			}
			walk_to = r->start + (se << KSMU_PAGE_SHIFT);
		}
		n = -EOPNOTSUPP;
		if (r->wp_tracked) {
			n = ksmu_pagemap_present_written(&e->pm, from, walk_to, budget - examined,
							 e->runs, SCAN_MAX_RUNS, e->wruns, &nw,
							 &walk_end, e->tracker.cow);
			if (n == -EPERM) {
				/*
				 * The walk may have re-protected written pages before it
				 * hit the foreign VMA, and their "written" answer is
				 * lost: treat the whole stretch as written this time.
				 */
				rearm_region(e, r);
				all_written = true;
				nw = 0;
			}
		}
		if (n == -EOPNOTSUPP && r->wp_tracked)
			all_written = true; /* no PAGEMAP_SCAN: nothing says what is clean */
		if (n == -EPERM || n == -EOPNOTSUPP)
			n = ksmu_pagemap_present(&e->pm, from, walk_to, budget - examined, e->runs,
						 SCAN_MAX_RUNS, &walk_end);
		if (n < 0) {
			ret = n;
			break;
		}
		if (walk_end <= from || walk_end > walk_to)
			walk_end = walk_to; /* defensive: always make progress */
		examined += process_range(e, r, from, walk_end, (size_t)n, nw, all_written);
advance:
		e->cursor_idx = (walk_end - r->start) >> KSMU_PAGE_SHIFT;
		if (e->cursor_idx >= r->nr_pages) {
			e->cursor = ksmu_region_next(r);
			e->cursor_idx = 0;
			if (!e->cursor) {
				/* A pass ends; a batch never runs across two passes. */
				e->cnt.full_scans++;
				ksmu_dedup_pass_end(e);
				break;
			}
		}
	}
	e->cnt.scan_cpu_ns += thread_cpu_ns() - t0;
	return ret < 0 ? ret : (long)examined;
}

void ksmu_scan_forget_region(struct ksmu_engine *e, struct ksmu_region *r, enum ksmu_forget how)
{
	forget_absent(e, r, r->start, r->end, how);
}

void ksmu_scan_forget_range(struct ksmu_engine *e, struct ksmu_region *r, uintptr_t a, uintptr_t b,
			    enum ksmu_forget how)
{
	forget_absent(e, r, KSMU_MAX(a, r->start), KSMU_MIN(b, r->end), how);
}

void ksmu_scan_forget_all(struct ksmu_engine *e)
{
	struct ksmu_region *r;

	for (r = ksmu_region_first(&e->regions); r; r = ksmu_region_next(r))
		ksmu_scan_forget_region(e, r, KSMU_FORGET_ABSENT);
}

uint64_t ksmu_scan_metadata_bytes(const struct ksmu_engine *e)
{
	uint64_t b = 0;

	b += e->cnt.rmap_items * sizeof(struct ksmu_rmap_item);
	b += e->arena.nr_used * KSMU_PAGE_SIZE; /* chunk header pages */
	b += e->nr_regions * sizeof(struct ksmu_region);
	b += e->stable.nr_nodes * sizeof(struct ksmu_stable_node);
	b += (KSMU_BATCH_PAGES + 1) * KSMU_PAGE_SIZE;
	b += 2 * SCAN_MAX_RUNS * sizeof(struct ksmu_pm_run);
	b += ksmu_dedup_metadata_bytes(e);
	return b;
}
