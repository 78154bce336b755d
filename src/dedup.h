/* SPDX-License-Identifier: MIT */
/*
 * dedup.h - merging for the scanner: turns "page A duplicates page B" into
 * one store page mapped at both addresses (see dedup.c).
 */
#ifndef KSMU_DEDUP_H
#define KSMU_DEDUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

struct ksmu_engine;
struct ksmu_region;
struct ksmu_rmap_item;
struct ksmu_stable_node;

/**
 * struct ksmu_pstore - a store and the reference counts of its pages.
 * @s:        the memfd and its allocator (store.c)
 * @refs:     per page: addresses of this process whose store VMA maps the
 *            page (merged members, zero pages, and private copies the
 *            kernel made on a write, whose VMA still maps the file offset)
 * @refs_len: entries of @refs
 * @nr_refs:  sum of @refs
 * @nr_nodes: stable nodes (and the zero page) whose page is in this store
 * @retired:  a forked process may map its pages: never free or reuse any
 *            of them again (the memfd goes when the last mapping does)
 * @next:     next store of the engine
 */
struct ksmu_pstore {
	struct ksmu_store s;
	uint32_t *refs;
	size_t refs_len;
	uint64_t nr_refs;
	uint64_t nr_nodes;
	bool retired;
	uint64_t ino;
	/* a ksmd-user store (agent.c): never allocated, written or punched here */
	uint32_t remote;		    /* the daemon's store id, 0 if local */
	uint32_t *grants;		    /* per page: grants read, given back on release */
	struct ksmu_stable_node **node_of; /* per page: the local node that names it */
	struct ksmu_pstore *next;
};

/**
 * struct ksmu_dedup_stats - merging counters (cumulative unless said).
 * @merges:       pages merged by the scanner
 * @busy:         merges refused: page pinned or COW-shared with a child
 * @changed:      merges refused: the page changed before its window
 * @failed:       merges that failed otherwise
 * @vma_limited:  merges not tried: the VMA budget was used up
 * @cow_breaks:   merged pages found written (copied by the kernel)
 * @unmerged:     pages given back a private anonymous copy
 * @unmerge_failed: unmerge calls that failed (the pages stay merged)
 * @unmerge_retries: unmerge windows undone and retried (a page was dropped
 *                  during the window, or the tracker did not settle)
 * @adopted:      pages found mapping a store page without a record (moved
 *                by mremap()) and recorded as such
 * @minor_zero:   MINOR faults answered with zeros (after MADV_DONTNEED)
 * @minor_store:  MINOR faults answered with the store page
 * @store_vmas:   store mappings counted at the end of the last pass (now)
 * @store_splits: anonymous VMAs those split in two, minus those they
 *                replaced whole (VMAs added = @store_vmas + @store_splits)
 */
struct ksmu_dedup_stats {
	uint64_t merges;
	uint64_t busy;
	uint64_t changed;
	uint64_t failed;
	uint64_t vma_limited;
	uint64_t cow_breaks;
	uint64_t unmerged;
	uint64_t unmerge_failed;
	uint64_t unmerge_retries;
	uint64_t adopted;
	uint64_t minor_zero;
	uint64_t minor_store;
	uint64_t store_vmas;
	int64_t store_splits;
	uint64_t vma_counts_skipped; /* pass ends that needed no VMA count */
	uint64_t cow_user;	     /* cow_policy=1 copies applied to the records */
	uint64_t store_near;	     /* new store pages put next to a neighbour's (RUNS) */
};

/**
 * ksmu_dedup_cow_done() - apply a copy the cow worker made at @addr of @r:
 * @user (an anonymous page: the record and store reference go, and the
 * page is re-hashed) or the kernel's (a cow break, as the scanner sees it).
 */
void ksmu_dedup_cow_done(struct ksmu_engine *e, struct ksmu_region *r, uintptr_t addr, bool user);
/** Unregister [start, end) from the tracker, store mappings included.  Return: 0 or -errno. */
int ksmu_dedup_unregister_range(struct ksmu_engine *e, uintptr_t start, uintptr_t end);
/** Can merging run for region @r now (else the scanner only detects)? */
bool ksmu_dedup_active(struct ksmu_engine *e, const struct ksmu_region *r);
/** Read the content of stable node @sn's store page into @buf.  Return: 0 or -errno. */
int ksmu_dedup_read_node(struct ksmu_engine *e, const struct ksmu_stable_node *sn, void *buf);
/**
 * ksmu_dedup_join() - merge the page of @it into @sn (content @expected,
 * which is @sn's).  On success @it is a MAPPED member of @sn.
 * Return: 0; -EBUSY pinned; -EAGAIN changed; -ENOSPC VMA budget;
 * -EALREADY the page maps a store page already (merged memory moved by
 * mremap()): @it is now recorded as MAPPED outside any node; -errno.
 */
int ksmu_dedup_join(struct ksmu_engine *e, struct ksmu_stable_node *sn, struct ksmu_rmap_item *it,
		    const void *expected);
/*
 * The join queue (dedup.c, "RUNS"): joins found while a batch of pages is
 * processed wait until its end, so that adjacent pages joining adjacent
 * store pages merge in one window and one mapping.
 */
#define KSMU_JOIN_RUNS 4
#define KSMU_JOIN_MAX 64

/**
 * struct ksmu_join_run - queued joins of adjacent pages onto adjacent store pages.
 * @ps, @first_idx: the store pages, from @first_idx on
 * @addr:     the first page
 * @n:        pages queued
 * @expected: KSMU_JOIN_MAX pages: the content each page must have
 * @items, @nodes: each page's record and the node it joins
 */
struct ksmu_join_run {
	struct ksmu_pstore *ps;
	uint32_t first_idx;
	uint32_t n;
	uintptr_t addr;
	uint8_t *expected;
	struct ksmu_rmap_item *items[KSMU_JOIN_MAX];
	struct ksmu_stable_node *nodes[KSMU_JOIN_MAX];
};

/** struct ksmu_join_queue - @nr runs in use, @pages queued in all. */
struct ksmu_join_queue {
	unsigned int nr;
	size_t pages;
	struct ksmu_join_run runs[KSMU_JOIN_RUNS];
};

/**
 * ksmu_dedup_join_later() - as ksmu_dedup_join(), queued: the page is merged
 * by the next ksmu_dedup_join_flush(), in one window with its queued
 * neighbours.  A page that fits no run is merged now.  @it is in no tree.
 * Return: 0 if queued or merged; -ENOSPC if @sn would be over
 * max_page_sharing with its queued joins; else as ksmu_dedup_join().
 */
int ksmu_dedup_join_later(struct ksmu_engine *e, struct ksmu_stable_node *sn,
			  struct ksmu_rmap_item *it, const void *expected);
/** Merge every queued join; pages that did not merge are marked for a retry. */
void ksmu_dedup_join_flush(struct ksmu_engine *e);
/** The page at @addr waits in the join queue. */
bool ksmu_dedup_join_queued(const struct ksmu_engine *e, uintptr_t addr);
/** Members of @sn, the queued joins included (for max_page_sharing). */
size_t ksmu_dedup_node_fill(const struct ksmu_engine *e, const struct ksmu_stable_node *sn);
/** A queued join names @sn (it must not be freed before the flush). */
bool ksmu_dedup_join_names(const struct ksmu_engine *e, const struct ksmu_stable_node *sn);
/**
 * ksmu_dedup_promote() - make a new stable node of key @key holding the
 * pages of @cand (in the unstable tree) and @it (in no tree), whose content
 * is @page.  @cand leaves the unstable tree if it was merged or queued.
 * The two joins are queued (ksmu_dedup_join_later()); the store page is put
 * next to the one a neighbouring page joins, where it is free.
 * Return: the node (@cand or @it may have failed to join: then in no tree,
 * *@cand_err or *@it_err says why), or NULL if no node was made, or @cand
 * could not join a daemon's page (*@cand_err; @it did not try).
 */
struct ksmu_stable_node *ksmu_dedup_promote(struct ksmu_engine *e, struct ksmu_rmap_item *cand,
					    struct ksmu_rmap_item *it, const void *page,
					    uint64_t key, int *cand_err, int *it_err);
/** Merge the zero page @it into the zero store page (use_zero_pages).  Return: as join. */
int ksmu_dedup_join_zero(struct ksmu_engine *e, struct ksmu_rmap_item *it);
/**
 * ksmu_dedup_unmapped() - the VMA at @it no longer maps its store page
 * (munmap, unmerge): drop the reference; @it is no longer MAPPED.
 */
void ksmu_dedup_unmapped(struct ksmu_engine *e, struct ksmu_rmap_item *it);
/** The VMA at @it moved away (mremap): forget MAPPED, leaking the reference. */
void ksmu_dedup_drop_moved(struct ksmu_engine *e, struct ksmu_rmap_item *it);
/** A MAPPED item that leaves its node keeps naming its store page. */
void ksmu_dedup_keep_ref(struct ksmu_rmap_item *it, struct ksmu_pstore *ps, uint32_t idx);
/** Free node @sn's store page reference (the node is being freed, empty). */
void ksmu_dedup_node_gone(struct ksmu_engine *e, struct ksmu_stable_node *sn);
/**
 * ksmu_dedup_adopt_range() - record the store mappings in registered parts
 * of [a, b) that have no MAPPED item (memory moved there by mremap() before
 * a pass saw it), so that an unmerge that follows gives them back too and
 * nothing stays merged behind an unregistered range.  One read of
 * /proc/self/maps: call it once before unmerging many regions.
 */
void ksmu_dedup_adopt_range(struct ksmu_engine *e, uintptr_t a, uintptr_t b);
/**
 * ksmu_dedup_unmerge_range() - give every MAPPED page of [a, b) in @r a
 * private anonymous copy of what it shows; @rearm: register the result for
 * tracking again (the region stays).  Return: 0 or the first -errno.
 */
int ksmu_dedup_unmerge_range(struct ksmu_engine *e, struct ksmu_region *r, uintptr_t a, uintptr_t b,
			     bool rearm);
/** End of a pass: count store mappings (VMA budget and general_profit). */
void ksmu_dedup_pass_end(struct ksmu_engine *e);
/* Count the process's VMAs now (/proc/self/maps) and refresh the budget. */
void ksmu_dedup_count_vmas(struct ksmu_engine *e);
/** Extra VMAs merging costs now (an upper bound: 2 per store mapping). */
uint64_t ksmu_dedup_vmas_added(const struct ksmu_engine *e);
/** Store pages allocated that no node names (kept by private copies only). */
uint64_t ksmu_dedup_orphan_pages(const struct ksmu_engine *e);
/** Register the store mappings inside [start, end) with the tracker; bytes covered. */
size_t ksmu_dedup_rearm_stores(struct ksmu_engine *e, uintptr_t start, uintptr_t end);
/** fork(): in parent and child, every store becomes retired. */
void ksmu_dedup_fork(struct ksmu_engine *e, bool child);
/* ksmd-user stores (agent.c) */
/** A pstore for daemon store @id (read-only @fd, inode @ino).  NULL: out of memory. */
struct ksmu_pstore *ksmu_dedup_remote_store(struct ksmu_engine *e, int fd, uint32_t id, uint64_t ino);
/** One more grant of page @idx read.  Return: 0, -ERANGE (an impossible index) or -ENOMEM. */
int ksmu_dedup_remote_grant(struct ksmu_pstore *ps, uint32_t idx);
/** Page @idx may be unused (answer not acted on): release it if nothing names it. */
void ksmu_dedup_remote_unused(struct ksmu_engine *e, struct ksmu_pstore *ps, uint32_t idx);
/**
 * Merge @it (in the unstable tree, hash @key) onto daemon page @idx of @ps
 * (LOOKUP answer).  -ENOSPC: the page's node here already has
 * max_page_sharing members (@it stays unstable and pairs locally).
 */
int ksmu_dedup_remote_merge(struct ksmu_engine *e, struct ksmu_rmap_item *it, uint64_t key,
			    struct ksmu_pstore *ps, uint32_t idx);
/** A HINT: merge the page at @addr onto page @idx of @ps if it is still what it was. */
int ksmu_dedup_remote_hint(struct ksmu_engine *e, uintptr_t addr, struct ksmu_pstore *ps,
			   uint32_t idx);
/** Pages of this process mapping a daemon store page. */
uint64_t ksmu_dedup_remote_pages(const struct ksmu_engine *e);
/** Bytes of merging metadata (refcounts, store bitmaps). */
uint64_t ksmu_dedup_metadata_bytes(const struct ksmu_engine *e);

#endif /* KSMU_DEDUP_H */
