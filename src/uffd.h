/* SPDX-License-Identifier: MIT */
/*
 * uffd.h - the userfaultfd the engine uses for exact dirty tracking.
 */
#ifndef KSMU_UFFD_H
#define KSMU_UFFD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/**
 * struct ksmu_tracker - an async write-protect userfaultfd.
 * @fd:       the userfaultfd, -1 when closed
 * @features: features the kernel offered at UFFDIO_API
 * @events:   remove/unmap/remap events were enabled: somebody must read
 *            them, or the application's munmap()/madvise()/mremap() of a
 *            registered range blocks
 * @minor:    store mappings can be registered MINOR (zeros after a drop)
 * @cow_fd:   cow_policy=1 (cow.c): a second userfaultfd, synchronous
 *            write-protect, that holds the store mappings instead of @fd
 *            (same events, MINOR too); -1 when not open
 * @cow:      store mappings go to @cow_fd (fixed before the first merge)
 */
struct ksmu_tracker {
	int fd;
	uint64_t features;
	bool events;
	bool minor;
	int cow_fd;
	bool cow;
};

/** What happened to registered memory (decoded from struct uffd_msg). */
enum ksmu_uffd_event_kind {
	KSMU_UFFD_REMOVE = 1, /* MADV_DONTNEED / MADV_REMOVE: [start, end) zapped */
	KSMU_UFFD_UNMAP,      /* munmap(): [start, end) gone */
	KSMU_UFFD_REMAP,      /* mremap(): [start, end) moved to @to */
	KSMU_UFFD_FAULT,      /* MINOR fault on the page at @start (@to: UFFD_PAGEFAULT_FLAG_*) */
	KSMU_UFFD_COW,	      /* cow.c: the page at @start got a private copy (@to: 1 anonymous, 0 the kernel's) */
};

struct ksmu_uffd_event {
	int kind;
	uintptr_t start;
	uintptr_t end;
	uintptr_t to;
};

/**
 * ksmu_tracker_open() - open with UFFD_FEATURE_WP_ASYNC | WP_UNPOPULATED,
 * plus EVENT_REMOVE | EVENT_UNMAP | EVENT_REMAP if @events.
 * Return: 0 or -errno.
 */
int ksmu_tracker_open(struct ksmu_tracker *t, bool events);
/**
 * ksmu_tracker_read_fd() - read pending events of @fd (the tracker's, or its
 * @cow_fd) without blocking.
 * Return: number of events stored in @ev (0 if none), or -errno.
 */
int ksmu_tracker_read_fd(int fd, struct ksmu_uffd_event *ev, size_t max);
/**
 * ksmu_tracker_open_cow() - open @cow_fd: MINOR_SHMEM, WP_HUGETLBFS_SHMEM and
 * the three events, no WP_ASYNC, kernel faults included.  Needs @minor.
 * Does not set @cow.  Return: 0 or -errno (-EOPNOTSUPP: a feature missing).
 */
int ksmu_tracker_open_cow(struct ksmu_tracker *t);
/** The descriptor that holds store mappings: @cow_fd if @cow, else @fd. */
static inline int ksmu_tracker_store_fd(const struct ksmu_tracker *t)
{
	return t->cow ? t->cow_fd : t->fd;
}
/** Unregister a store mapping from ksmu_tracker_store_fd().  Return: 0 or -errno. */
int ksmu_tracker_unregister_store(struct ksmu_tracker *t, uintptr_t start, size_t len);
void ksmu_tracker_close(struct ksmu_tracker *t);
/** Register [start, start+len) for async write-protect.  Return: 0 or -errno. */
int ksmu_tracker_register(struct ksmu_tracker *t, uintptr_t start, size_t len);
/**
 * ksmu_tracker_register_store() - register a store mapping WP | MINOR and
 * write-protect it.  Return: 0; -EOPNOTSUPP without @minor; -errno.
 */
int ksmu_tracker_register_store(struct ksmu_tracker *t, uintptr_t start, size_t len);
/**
 * ksmu_tracker_resolve_minor() - answer a MINOR fault at @addr: a private
 * page of zeros (@zero) or the store page itself (UFFDIO_CONTINUE); wakes
 * the faulting thread.  Return: 0 or -errno (the thread is woken anyway).
 */
int ksmu_tracker_resolve_minor(struct ksmu_tracker *t, int fd, uintptr_t addr, bool zero);
/** Unregister; pages keep their content.  Return: 0 or -errno. */
int ksmu_tracker_unregister(struct ksmu_tracker *t, uintptr_t start, size_t len);

#endif /* KSMU_UFFD_H */
