/* SPDX-License-Identifier: MIT */
/*
 * engine.h - the per-process engine state shared by scan.c, options.c and
 * engine.c.  One instance exists per process (ksmu_engine_get()).
 */
#ifndef KSMU_ENGINE_H
#define KSMU_ENGINE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "agent.h"
#include "dedup.h"
#include "ksmu.h"
#include "merge.h"
#include "pagemap.h"
#include "region.h"
#include "rmap.h"
#include "stable.h"
#include "uffd.h"
#include "unstable.h"

/**
 * struct ksmu_knobs - the tunables, with /sys/kernel/mm/ksm names.
 * @dirty_tracker: ksmu knob, enum ksmu_dirty_tracker requested (0: best)
 * @dry_run:   ksmu knob: 1 = detect and estimate only (est_*), never merge
 * @cow_policy: ksmu knob: 0 kernel COW, 1 user-space COW (cow.c)
 * @max_vmas:  ksmu knob: cap of the VMA budget (0: 3/4 of vm.max_map_count)
 */
struct ksmu_knobs {
	unsigned long run;
	unsigned long pages_to_scan;
	unsigned long sleep_millisecs;
	unsigned long max_page_sharing;
	unsigned long merge_across_nodes;
	unsigned long use_zero_pages;
	unsigned long stable_node_chains_prune_millisecs;
	unsigned long smart_scan;
	unsigned long dirty_tracker;
	unsigned long dry_run;
	unsigned long cow_policy;
	unsigned long max_vmas;
};

/**
 * struct ksmu_counters - cumulative and current counts (see struct ksmu_stats).
 * @rmap_items: items with KSMU_ITEM_HASHED (pages seen present and hashed)
 * @zero_items: items with KSMU_ITEM_ZERO
 * @uffd_events: remove/unmap/remap events applied, cumulative
 * @mapped_items: items with KSMU_ITEM_MAPPED (hold a store reference)
 * @merged_members: MAPPED members of stable nodes
 * @zero_mapped: MAPPED zero pages (ksm_zero_pages)
 */
struct ksmu_counters {
	uint64_t pages_scanned;
	uint64_t pages_skipped;
	uint64_t full_scans;
	uint64_t pages_hashed;
	uint64_t pages_clean;
	uint64_t pages_compared;
	uint64_t hash_collisions;
	uint64_t scan_cpu_ns;
	uint64_t rmap_items;
	uint64_t zero_items;
	uint64_t uffd_events;
	uint64_t mapped_items;
	uint64_t merged_members;
	uint64_t zero_mapped;
};

#define KSMU_BATCH_PAGES 64

/**
 * struct ksmu_engine - everything the engine owns.
 * @lock:        protects every field below except @thread_* handshakes noted
 * @wake:        the scanner sleeps on it; signalled on knob changes and registration
 * @thread:      the scanner thread, valid while @thread_running
 * @thread_running: a scanner thread exists
 * @events_running: the userfaultfd event reader thread exists (it never
 *               exits; while it runs, the tracker fd is never closed)
 * @arena:       rmap item chunks
 * @regions:     registered regions by address
 * @nr_regions:  number of regions
 * @pages_tracked: pages in all regions
 * @cursor:      region the scanner visits next (NULL: start of a pass)
 * @cursor_idx:  page index inside @cursor
 * @stable:      stable tree
 * @unstable:    unstable tree
 * @knobs:       tunables
 * @cnt:         counters
 * @pm:          /proc/self/pagemap access
 * @tracker:     async write-protect userfaultfd (fd -1 if unused)
 * @tracker_mode: enum ksmu_dirty_tracker in effect for new regions
 * @batch_buf:   KSMU_BATCH_PAGES pages of content being processed
 * @cand_buf:    one page: the candidate a page is compared against
 * @runs:        scratch for pagemap answers
 * @wruns:       scratch for written runs
 * @need_child_restart: set in a forked child until its thread is restarted
 * @merger:      merge windows of the scanner (valid while @merger_state > 0)
 * @merge_hooks: how @merger works with the tracker (dedup.c)
 * @merger_state: 0 not tried yet, 1 ready, -errno unavailable
 * @merging_now: the region being scanned merges (ksmu_dedup_active())
 * @stores:      every store of the engine (dedup.c)
 * @cur_store:   where new store pages go (NULL: create one when needed)
 * @zero_store:  store of the zero page (use_zero_pages), or NULL
 * @zero_idx:    its page
 * @vma_limit:   VMAs merging may take the process to (3/4 of vm.max_map_count)
 * @vma_count:   VMAs of the process at the last count
 * @vmas_since_count: VMAs merges may have added since (2 per merge)
 * @vma_full:    the last budget check or count found no room for a merge:
 *               the scanner does not search pages waiting to merge (scan.c)
 * @dd:          merging counters (minor_* written by the reader, atomically)
 * @ever_merged: a merge happened (atomic; tells the reader to keep REMOVE ranges)
 * @merger_hooked: @merger is set up with the tracker's hooks (atomic; the
 *               reader then also drains its REMOVE descriptors)
 * @exiting:     exit() was called: the scanner thread scans no more (atomic)
 * @events_thread: the event reader thread, valid while @events_running
 */
struct ksmu_engine {
	pthread_mutex_t lock;
	pthread_cond_t wake;
	pthread_t thread;
	bool thread_running;
	bool events_running;
	bool events_wake;	/* the reader asks the scanner to apply events (atomic) */

	struct ksmu_arena arena;
	struct ksmu_rb_root regions;
	size_t nr_regions;
	size_t pages_tracked;
	struct ksmu_region *cursor;
	size_t cursor_idx;

	struct ksmu_stable_tree stable;
	struct ksmu_unstable_tree unstable;

	struct ksmu_knobs knobs;
	struct ksmu_counters cnt;

	struct ksmu_pagemap pm;
	struct ksmu_tracker tracker;
	int tracker_mode;

	uint8_t *batch_buf;
	uint8_t *cand_buf;
	struct ksmu_pm_run *runs;
	struct ksmu_pm_run *wruns;
	bool need_child_restart;

	struct ksmu_merger merger;
	struct ksmu_merge_hooks merge_hooks;
	int merger_state;
	bool merging_now;
	struct ksmu_pstore *stores;
	struct ksmu_pstore *cur_store;
	struct ksmu_pstore *zero_store;
	uint32_t zero_idx;
	uint64_t vma_limit;
	uint64_t vma_count;
	uint64_t vmas_since_count;
	uint64_t vma_count_sig;	 /* count_signature() at the last count (dedup.c) */
	uint64_t vma_count_ns;	 /* CLOCK_MONOTONIC of the last count */
	bool vma_count_stale;	 /* a pass end skipped the count since */
	bool vma_full;
	struct ksmu_dedup_stats dd;
	struct ksmu_join_queue joins; /* empty outside a batch's processing (dedup.c) */
	bool ever_merged;
	int merger_hooked;
	bool exiting;
	bool cow_child;	       /* a forked child: cow_policy=1 is not started here */
	bool merge_any;	       /* prctl(PR_SET_MEMORY_MERGE, 1): all anonymous memory */
	uint64_t any_walk_ns;  /* when merge-any last looked for new mappings */
	pthread_t events_thread;
	struct ksmu_agent agent; /* ksmd-user (agent.c) */
	uint8_t *agent_pages;	 /* KSMU_WIRE_MAX_PAGES pages for LOOKUPs, mmap'd */
};

/** The process's engine, initialised on first use; NULL if that failed. */
struct ksmu_engine *ksmu_engine_get(void);

/* scan.c */
/** How the records of a range are forgotten. */
enum ksmu_forget {
	KSMU_FORGET_ABSENT,   /* seen not present: merged pages stay (a store mapping
			       * need not be faulted in, e.g. in a forked child) */
	KSMU_FORGET_ZAPPED,   /* MADV_DONTNEED: merged pages leave their nodes too */
	KSMU_FORGET_UNMAPPED, /* range unmapped: store references are dropped */
	KSMU_FORGET_MOVED,    /* range moved elsewhere: references leak (safe) */
};
/** Examine up to @budget present pages from the cursor on.  Return: pages examined or -errno. */
long ksmu_scan_batch(struct ksmu_engine *e, size_t budget);
/** Take every item of @r out of the trees and forget its state. */
void ksmu_scan_forget_region(struct ksmu_engine *e, struct ksmu_region *r, enum ksmu_forget how);
/** Forget the records of [a, b) inside @r (the pages were zapped). */
void ksmu_scan_forget_range(struct ksmu_engine *e, struct ksmu_region *r, uintptr_t a, uintptr_t b,
			    enum ksmu_forget how);
/** Forget every item's state (tracker change): next visit re-hashes. */
void ksmu_scan_forget_all(struct ksmu_engine *e);
/** Take @it out of its tree, node or the zero set; a MAPPED item keeps its store reference. */
void ksmu_scan_item_detach(struct ksmu_engine *e, struct ksmu_rmap_item *it);
/** A merge of @it did not happen: search it again on its next visit if unchanged. */
void ksmu_scan_merge_failed(struct ksmu_rmap_item *it);
/** Forget @it's hash (it is re-read on its next visit); keeps MAPPED. */
void ksmu_scan_item_forget(struct ksmu_engine *e, struct ksmu_rmap_item *it);
/** Engine metadata in bytes (for general_profit). */
uint64_t ksmu_scan_metadata_bytes(const struct ksmu_engine *e);

/* options.c */
void ksmu_knobs_default(struct ksmu_knobs *k);
/** Validate and apply; engine lock held.  Return: 0 or -errno. */
int ksmu_knob_set(struct ksmu_engine *e, const char *name, unsigned long value);
/** Read a knob or counter by name; engine lock held.  Return: 0 or -EINVAL. */
int ksmu_knob_get(struct ksmu_engine *e, const char *name, unsigned long *value);
/* The @i-th name of the knob and counter table (NULL past the end). */
const char *ksmu_knob_name(size_t i, bool *writable);
/**
 * Apply KSMU_<KNOB>=VALUE from the environment (KSMU_PAGES_TO_SCAN=1000...);
 * a bad value is reported on stderr and changes nothing.  Lock held.
 * Return: how many were refused.
 */
int ksmu_knobs_from_env(struct ksmu_engine *e);
/** Fill @s from the engine; engine lock held. */
void ksmu_stats_fill(struct ksmu_engine *e, struct ksmu_stats *s);

/* engine.c */
/*
 * The set of ranges the application dropped (MADV_DONTNEED) while they may
 * map store pages; the reader answers MINOR faults there with zeros.
 */
/** Forget [start, end) in the set (a merge re-maps it). */
void ksmu_engine_zap_forget(uintptr_t start, uintptr_t end);
/** Lock (@on) or unlock the set; the reader holds it from read to set. */
void ksmu_engine_zap_lock(bool on);
/** (locked) [start, end) is no longer dropped (zeros are in place). */
void ksmu_engine_zap_del_locked(uintptr_t start, uintptr_t end);
/** (locked) Add a dropped range. */
void ksmu_engine_zap_add_locked(uintptr_t start, uintptr_t end);
/** CPU time of the event reader thread so far (0 if there is none). */
uint64_t ksmu_engine_reader_cpu_ns(const struct ksmu_engine *e);
/** Ranges in the set now. */
size_t ksmu_engine_zap_count(void);
/* Merge-any (prctl PR_SET_MEMORY_MERGE): on registers every private
 * anonymous mapping now and every new one within a second; off unregisters
 * everything (as the kernel's ksm_disable_merge_any()).  Return: 0 or -errno. */
int ksmu_engine_merge_any(bool on);
/** In a forked child (preload_fork.c): bring the engine's threads back now. */
void ksmu_engine_child_resume(void);
/** fork() returned @pid (> 0) or failed (<= 0) in the parent: tell ksmd-user (agent.c). */
void ksmu_engine_fork_done(int pid);
/** 1 if merge-any is on, 0 if not (the engine is not started for this). */
int ksmu_engine_merge_any_get(void);
/** True if all of [start, end) is registered. */
bool ksmu_engine_covers(uintptr_t start, uintptr_t end);
/** A detached engine thread, all signals blocked, named, its stack recorded as own. */
int ksmu_engine_start_thread(pthread_t *t, void *(*fn)(void *), void *arg, const char *name);
/** Started (the engine, with its threads) for this process?  For the control channel. */
bool ksmu_engine_started(void);
/** Where the dropped-range set lives now (selfmem.c); false if nowhere. */
bool ksmu_engine_zap_extent(struct ksmu_range *out);
/** The set's generation: it grows with every drop recorded. */
uint64_t ksmu_engine_zap_gen(void);
/**
 * ksmu_engine_zap_prune() - of the drops recorded up to generation @gen,
 * keep only the parts inside @keep (@n ranges in address order: the store
 * mappings, read from /proc/self/maps after @gen was taken).  Drops
 * elsewhere are answered by the kernel itself (anonymous memory); a merge
 * forgets its page's drops before its window.
 */
void ksmu_engine_zap_prune(const struct ksmu_range *keep, size_t n, uint64_t gen);
/** (locked) Set bit i of @mask for each dropped page i of @n pages at @start. */
void ksmu_engine_zap_test_locked(uintptr_t start, size_t n, uint64_t *mask);
/**
 * ksmu_engine_kick_reader() - make the event reader poll again (an event on
 * the tracker it waits for: the UNMAP of a page of our own), after a
 * descriptor it must poll was opened.  Not from the reader.
 */
void ksmu_engine_kick_reader(struct ksmu_engine *e);
/**
 * ksmu_engine_queue_cow() - the copy worker (cow.c) gave the page at @addr
 * a private copy: anonymous (@user) or the kernel's; the engine updates its
 * records when it next applies events.  Any thread but the reader.
 */
void ksmu_engine_queue_cow(struct ksmu_engine *e, uintptr_t addr, bool user);
/** Switch the tracker for all regions (dirty_tracker knob); lock held. */
int ksmu_engine_set_tracker(struct ksmu_engine *e, int mode);

#endif /* KSMU_ENGINE_H */
