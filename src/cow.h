/* SPDX-License-Identifier: MIT */
/*
 * cow.h - cow_policy=1: copy-on-write of merged pages in user space, into
 * anonymous memory that can be merged again (cow.c).
 */
#ifndef KSMU_COW_H
#define KSMU_COW_H

#include <stdbool.h>
#include <stdint.h>

struct ksmu_engine;

/**
 * struct ksmu_cow_stats - counters of the copy worker (cumulative; written
 * by the worker thread, read with atomic loads).
 * @user:     writes given an anonymous copy (re-mergeable)
 * @kernel:   writes let through to the kernel's copy inside the store
 *            mapping (the copy could not be made: VMA limit, no memory)
 * @skipped:  requests for pages that were no store mapping any more
 * @ns:       time from the fault's read to the writer's wake, summed
 * @ns_max:   the longest of those
 */
struct ksmu_cow_stats {
	uint64_t user;
	uint64_t kernel;
	uint64_t skipped;
	uint64_t ns;
	uint64_t ns_max;
};

/**
 * ksmu_cow_start() - move store mappings to a synchronous write-protect
 * userfaultfd and start the copy worker ("ksmu-cow").  Engine lock held,
 * before the first merge.  Return: 0, or -errno (the kernel policy stays).
 */
int ksmu_cow_start(struct ksmu_engine *e);
/**
 * ksmu_cow_settle() - wait until a copy whose writer was woken is handed
 * to the tracker (cow.c, step 6).  API calls, engine lock held: what the
 * caller wrote before the call is then visible to a scan.
 */
void ksmu_cow_settle(void);
/** Counters so far. */
void ksmu_cow_stats(struct ksmu_cow_stats *out);

/*
 * For the event reader, with zap_lock held (engine.c, event_now()).
 */
/** A write fault on a store page at @addr: queue it for the worker. */
void ksmu_cow_request(struct ksmu_engine *e, uintptr_t addr);
/** [start, end) was dropped (a REMOVE read): note it if the worker copies a page of it. */
void ksmu_cow_note_remove_locked(uintptr_t start, uintptr_t end);
/** The worker is filling the empty page at @addr (a MISSING fault there waits for it). */
bool ksmu_cow_filling(uintptr_t addr);
/** A MISSING fault on an anonymous page of cow_fd nobody fills: map zeros (a dropped page). */
void ksmu_cow_zero_missing(struct ksmu_engine *e, uintptr_t addr);
/** The worker's own UNMAP (of the store page it replaces) or REMAP (of its staged page). */
bool ksmu_cow_own_event(int kind, uintptr_t start, uintptr_t end);

/**
 * ksmu_cow_exclude() - keep the worker out of (@on) or let it back into
 * store mappings; unmerge windows hold it (dedup.c).  Lock order: this,
 * then the merge windows' exclusion, then zap_lock.
 */
void ksmu_cow_exclude(bool on);
/** fork() child: no worker; the policy is off in the child. */
void ksmu_cow_atfork_child(void);

#endif /* KSMU_COW_H */
