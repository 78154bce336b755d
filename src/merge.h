/* SPDX-License-Identifier: MIT */
/*
 * merge.h - the merge window: replace private anonymous pages by
 * MAP_PRIVATE mappings of store (memfd) pages, pin-safely and without
 * losing a concurrent access (see merge.c).
 */
#ifndef KSMU_MERGE_H
#define KSMU_MERGE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

/*
 * Longest run one window can merge (pages); the scratch area of a merger
 * is this long (virtual only: it holds pages only while a window is open).
 */
#define KSMU_MERGE_MAX_RUN 512

/*
 * Old copies of merged pages a merger keeps in its scratch area before it
 * frees them all with one MADV_DONTNEED (one TLB flush for many merges
 * instead of one per merge); ksmu_merger_flush_scratch() frees them sooner.
 */
#define KSMU_MERGE_SCRATCH_KEEP 16

/**
 * struct ksmu_merge_stats - what a merger did (counts of calls unless said).
 * @windows:         windows opened (the range was registered)
 * @windows_contended: windows in which an application thread was found
 *                   sleeping on a fault of the run just before the wake (a
 *                   lower bound: one that came and went is not seen)
 * @pages_merged:    pages now mapping a store page
 * @runs_merged:     calls that merged (a page or a run)
 * @busy:            calls that found a page pinned or COW-shared (-EBUSY)
 * @differ:          calls that found a page's content not the expected one
 * @absent:          calls that found a page not present (-ENOENT)
 * @errors:          calls that failed otherwise
 * @populate_failed: merges whose MADV_POPULATE_READ failed (merge still done;
 *                   the store page is then mapped on first access)
 * @lost:            pages that could not be put back because their range
 *                   was unmapped or remapped during the window (RACES in
 *                   merge.c); only a caller not using the exclusion sees it
 * @window_ns:       total time windows were open (faulting threads may have
 *                   been blocked for at most this long), in nanoseconds
 * @window_ns_max:   longest window, in nanoseconds
 * @pages_unmerged:  pages made private anonymous again by ksmu_unmerge_run()
 * @runs_unmerged:   ksmu_unmerge_run() calls that succeeded
 * @unmerged_private: of @pages_unmerged, pages the kernel had already
 *                   COW-copied (a write after merge); their copy's pins, if
 *                   any, are NOT detected (see ksmu_unmerge_run())
 * @unmerge_ns:      total time unmerge windows were open, in nanoseconds
 * @unsettled:       windows given up because the tracker kept an event
 *                   unread (hooks only; retried later, nothing changed)
 * @zapped:          windows that found the application dropping the run
 *                   (MADV_DONTNEED) and left it dropped
 * @unmerge_retries: unmerge windows undone because the application dropped
 *                   a page of the range during the window (retried)
 */
struct ksmu_merge_stats {
	uint64_t windows;
	uint64_t windows_contended;
	uint64_t pages_merged;
	uint64_t runs_merged;
	uint64_t busy;
	uint64_t differ;
	uint64_t absent;
	uint64_t errors;
	uint64_t populate_failed;
	uint64_t lost;
	uint64_t window_ns;
	uint64_t window_ns_max;
	uint64_t pages_unmerged;
	uint64_t runs_unmerged;
	uint64_t unmerged_private;
	uint64_t unmerge_ns;
	uint64_t unsettled;
	uint64_t zapped;
	uint64_t unmerge_retries;
};

/**
 * struct ksmu_merge_hooks - how a merger cooperates with the caller's dirty
 * tracker (a userfaultfd with EVENT_REMOVE, EVENT_UNMAP and EVENT_REMAP,
 * and MINOR on store mappings), so that MADV_DONTNEED is never lost,
 * whenever the application calls it (see ZAPS in merge.c).
 * @arg:        passed to every hook
 * @tracker_fd: the tracker's userfaultfd; windows wait until it has no
 *              unread event (UFFDIO_WRITEPROTECT answers EAGAIN until then)
 * @arm:        register [addr, addr + len), a fresh store mapping, WP|MINOR
 *              with the tracker and write-protect it.  Return: 0 or -errno.
 *              Called inside windows: must not allocate or log
 * @zap_lock:   lock (@on) or unlock the caller's set of dropped ranges; the
 *              tracker's reader must hold it from reading an event until the
 *              event is in the set
 * @zap_add:    (locked) the application dropped [start, end)
 * @zap_test:   (locked) set bit i of @mask if page i of the @n pages at
 *              @start was dropped and not faulted back since
 * @zap_del:    (locked) [start, end) is no longer dropped (the window put
 *              zeros there)
 * @store_fd:   the userfaultfd that holds store mappings: @tracker_fd, or
 *              a synchronous-WP one (cow_policy=1, cow.c); windows wait for
 *              it to settle too, and staged mappings are unregistered there
 * @disarm:     unregister [addr, addr + len) from the tracker; an unmerge
 *              window with ABSENT_IS_ZERO calls it right before it registers
 *              the range itself, so that the two registrations are as close
 *              as two system calls can be (ZAPS, the residual gap)
 */
struct ksmu_merge_hooks {
	void *arg;
	int tracker_fd;
	int store_fd;
	int (*arm)(void *arg, uintptr_t addr, size_t len);
	void (*zap_lock)(void *arg, bool on);
	void (*zap_add)(void *arg, uintptr_t start, uintptr_t end);
	void (*zap_test)(void *arg, uintptr_t start, size_t n, uint64_t *mask);
	void (*zap_del)(void *arg, uintptr_t start, uintptr_t end);
	int (*disarm)(void *arg, uintptr_t addr, size_t len);
};

/**
 * struct ksmu_merger - one thread's merge machinery.
 * @uffd:          userfaultfd with UFFD_FEATURE_MOVE, opened without
 *                 UFFD_USER_MODE_ONLY so that faults the kernel takes for
 *                 the process (read(2) into a page) wait too; -1 when closed
 * @scratch:       KSMU_MERGE_MAX_RUN pages of private anonymous memory,
 *                 registered MODE_MISSING with @uffd (UFFDIO_MOVE's
 *                 destination must be registered with the same uffd); every
 *                 page of it is empty between windows
 * @scratch_pages: length of @scratch in pages
 * @scratch_used:  pages at the start of @scratch that hold the old copies
 *                 of pages merged since the last flush (at most
 *                 KSMU_MERGE_SCRATCH_KEEP of them, unless one run was
 *                 longer); every page after them is empty
 * @fork_gen:      fork generation at init: a child forked later must not
 *                 use the merger (its uffd works on the parent's memory)
 * @wp_uffd:       second userfaultfd, for unmerge windows: synchronous
 *                 write-protect (no UFFD_FEATURE_WP_ASYNC) on shmem VMAs,
 *                 not USER_MODE_ONLY; opened at the first unmerge; -1 when
 *                 not (yet) open
 * @unmerge_scratch: KSMU_MERGE_MAX_RUN pages of private anonymous memory
 *                 (not registered) from which unmerged pages are mremap()ed
 *                 into place; 0 until the first unmerge
 * @maps_fd:       /proc/self/maps, for PROCMAP_QUERY; -1 when not open
 * @pagemap_fd:    /proc/self/pagemap (which unmerged pages were COW
 *                 copies, for stats.unmerged_private); -1 when not open
 * @run_uffd:      with hooks, a third userfaultfd (MOVE, EVENT_REMOVE) on
 *                 which runs are registered, so that the application's
 *                 MADV_DONTNEED of a run during a window is reported (the
 *                 scratch area stays on @uffd, which has no events: our own
 *                 MADV_DONTNEED of it must not wait for a reader); without
 *                 hooks the same as @uffd
 * @hooks:         NULL, or the tracker's hooks (ksmu_merger_init_hooks())
 * @staging:       while a store mapping is being moved into place, its
 *                 temporary address: the tracker's reader must ignore the
 *                 REMAP and UNMAP events of that address (read atomically)
 * @events_lock:   held by a window from its start to its last read of
 *                 @run_uffd / @wp_uffd; ksmu_merger_drain() trylocks it
 * @stats:         counters, written by the merging thread only
 * @cmp_page:      a page for reading the store while a window is open
 *                 (no allocation there)
 */
struct ksmu_merger {
	int uffd;
	int run_uffd;
	const struct ksmu_merge_hooks *hooks;
	uintptr_t staging;
	pthread_mutex_t events_lock;
	uintptr_t scratch;
	size_t scratch_pages;
	size_t scratch_used;
	unsigned int fork_gen;
	int wp_uffd;
	uintptr_t unmerge_scratch;
	int maps_fd;
	int pagemap_fd;
	struct ksmu_merge_stats stats;
	uint8_t cmp_page[KSMU_PAGE_SIZE] __attribute__((aligned(64)));
};

/**
 * ksmu_merger_init() - open the userfaultfd and map the scratch area.
 * @m: merger to initialise (any content)
 *
 * Return: 0; -EOPNOTSUPP if the kernel lacks UFFDIO_MOVE (before 6.8);
 * -EPERM, -EACCES if no userfaultfd without UFFD_USER_MODE_ONLY may be
 * opened (needs root, CAP_SYS_PTRACE, vm.unprivileged_userfaultfd=1 or
 * access to /dev/userfaultfd); -ENOSYS without userfaultfd; -ENOMEM.
 * On error @m is left closed (ksmu_merger_destroy() is harmless).
 * Context: any thread; registers pthread_atfork() handlers once per process.
 */
int ksmu_merger_init(struct ksmu_merger *m);

struct ksmu_range;
/**
 * ksmu_merger_own_ranges() - the merger's scratch areas, which must never be
 * registered for merging (selfmem.c).  Return: how many of @max filled.
 * Context: the merger's owner.
 */
size_t ksmu_merger_own_ranges(const struct ksmu_merger *m, struct ksmu_range *out, size_t max);

/**
 * ksmu_merger_init_hooks() - ksmu_merger_init() for a merger that works
 * with a dirty tracker: runs are registered on a uffd with EVENT_REMOVE, the
 * unmerge uffd is opened at once with EVENT_REMOVE, new store mappings are
 * armed with the tracker before they replace a run, and windows wait for
 * the tracker to settle.  Somebody must call ksmu_merger_drain() when
 * ksmu_merger_event_fds() become readable (the tracker's reader thread).
 * @hooks must outlive @m.  Return: as ksmu_merger_init().
 */
int ksmu_merger_init_hooks(struct ksmu_merger *m, const struct ksmu_merge_hooks *hooks);

/**
 * ksmu_merger_event_fds() - the descriptors whose REMOVE events
 * ksmu_merger_drain() reads (-1 where none).
 */
void ksmu_merger_event_fds(const struct ksmu_merger *m, int fds[2]);

/**
 * ksmu_merger_drain() - read the REMOVE events a window left behind (an
 * application madvise() that found a run registered just before the window
 * ended) and hand them to hooks->zap_add.  Any thread.
 * Return: 0, or -EBUSY if a window is open (it reads them itself; retry).
 */
int ksmu_merger_drain(struct ksmu_merger *m);

/**
 * ksmu_merger_flush_scratch() - free the old copies of merged pages that the
 * merger still holds in its scratch area (at most KSMU_MERGE_SCRATCH_KEEP
 * pages, or one run); a merge window does it itself when they are that many.
 * Context: the merger's owner, no window open.
 */
void ksmu_merger_flush_scratch(struct ksmu_merger *m);

/**
 * ksmu_merger_destroy() - close the userfaultfd and unmap the scratch area.
 * @m: merger, initialised or closed
 * Context: no window of @m may be open (the caller owns @m).
 */
void ksmu_merger_destroy(struct ksmu_merger *m);

/**
 * ksmu_merge_run() - merge @n adjacent pages into @n adjacent store pages.
 * @m:         merger
 * @addr:      first page, page-aligned, in a private anonymous read-write
 *             mapping of the calling process
 * @n:         pages, 1 .. KSMU_MERGE_MAX_RUN
 * @store_fd:  descriptor of the store (a memfd or regular file), readable
 * @first_idx: store page that page 0 of the run is to map
 * @expected:  @n * 4096 bytes: the content each page must have, which must
 *             also be the content of the store pages (the caller's promise;
 *             checked only with KSMU_DEBUG >= 1).  Best a read-only mapping
 *             of the store itself; never memory that another merger may be
 *             merging at the same time (two windows each reading the
 *             other's run would wait for each other forever)
 * @bad:       if not NULL, set to the index in the run of the page that
 *             made the call fail (0 on success or when no page is to blame)
 *
 * Either every page of the run now maps its store page (one mmap: the run
 * costs at most 2 VMAs, and fewer when it continues a neighbouring run of
 * the same store), or no page changed at all: the same content at the same
 * physical page, pins and all.
 *
 * Return: 0 merged; -EBUSY a page is pinned (io_uring fixed buffer, RDMA,
 * VFIO, O_DIRECT in flight) or COW-shared with a forked process, nothing
 * changed; -EAGAIN a page's content differs from @expected, nothing changed
 * (pages moved back); -ENOENT a page is not present (never touched or
 * dropped), or the range vanished before the window; -EINVAL @addr is not
 * page-aligned, or the range is not (all) private anonymous read-write
 * memory of one kind (unmapped, file-backed such as an already merged page,
 * read-only, executable, mlocked) or @store_fd is not a regular file;
 * -EEXIST the range is registered with another userfaultfd (another
 * merger's window, or a dirty tracker); -EDEADLK the range holds memory the
 * merging thread itself touches during the window (@expected, @m, its
 * stack); -ERANGE a store page lies beyond the end of the store; -E2BIG @n
 * is larger than KSMU_MERGE_MAX_RUN; -ECHILD called in a process forked
 * after ksmu_merger_init(); -EFAULT the range was unmapped or remapped by
 * the application during the window and its page(s) could not be put back
 * (stats.lost; see RACES in merge.c); -ENOMEM no VMA could be added
 * (vm.max_map_count); -EIO the merger's scratch area was found in use (a
 * bug; nothing changed); other -errno from mmap(2).
 * Context: one thread per merger; several mergers may run windows at once.
 * Blocks every thread of the process that touches the run for the few
 * microseconds of the window, and waits while ksmu_merge_exclude_begin()
 * holds windows off (fork in progress).
 */
int ksmu_merge_run(struct ksmu_merger *m, uintptr_t addr, size_t n, int store_fd, size_t first_idx,
		   const void *expected, size_t *bad);

/**
 * ksmu_merge_page() - ksmu_merge_run() of one page.
 * Return: as ksmu_merge_run().
 */
int ksmu_merge_page(struct ksmu_merger *m, uintptr_t addr, int store_fd, size_t idx,
		    const void *expected);

/**
 * ksmu_unmerge_run() - make @n merged pages private anonymous pages again.
 * @m:    merger
 * @addr: first page, page-aligned; [@addr, @addr + @n pages) must lie in ONE
 *        read-write MAP_PRIVATE mapping of a memfd (a store mapping made by
 *        ksmu_merge_run())
 * @n:    pages, 1 .. KSMU_MERGE_MAX_RUN
 *
 * Afterwards the range is a private anonymous read-write mapping (one VMA)
 * holding exactly what the application would have read there at the moment
 * of the unmerge: the store page, or the private copy the kernel made when
 * the application wrote the page after the merge.  A page the application
 * dropped (MADV_DONTNEED) reads as the store page, so that is what it keeps.
 * No concurrent write is lost and no reader sees anything else (writers,
 * user or kernel mode, wait for the few microseconds of the window).  The
 * pages can be merged again (ksmu_merge_run() accepts them).
 *
 * VMAs: the new anonymous VMA does NOT merge with the anonymous neighbours
 * the range had before it was merged (mremap() keeps the scratch area's
 * anon_vma and page offset); it merges with pages unmerged next to it
 * earlier.  A lone page unmerged costs what it cost while merged.
 *
 * Pins: a page still mapping the store page cannot carry a write pin (a
 * write pin COWs first); a read pin keeps the store page, which is what it
 * would keep after a COW anyway.  A page the kernel COW-copied
 * (stats.unmerged_private) may carry a write pin (O_DIRECT read in flight,
 * io_uring fixed buffer): user space cannot detect it (UFFDIO_MOVE refuses
 * file VMAs), and device writes after the copy would land in the old page.
 *
 * Return: 0; -EINVAL @addr not aligned, @n == 0, or the range is not (all)
 * in one read-write private memfd mapping; -E2BIG @n too large; -EEXIST the
 * range is registered with another userfaultfd; -EDEADLK the range holds
 * memory the thread touches during the window; -EFAULT the range vanished
 * during the window; -ECHILD forked after ksmu_merger_init();
 * -EOPNOTSUPP the kernel lacks write-protect on shmem VMAs; -ENOMEM no VMA
 * could be added (the range is left merged); other -errno.
 * Context: as ksmu_merge_run().  Waits while ksmu_merge_exclude_begin()
 * holds windows off.
 */
int ksmu_unmerge_run(struct ksmu_merger *m, uintptr_t addr, size_t n);

/*
 * ksmu_unmerge_run_flags() flag: every page of the range that is not
 * present was dropped by the application (MADV_DONTNEED) and must become a
 * page of zeros, not the store page.  The caller guarantees it by faulting
 * every other page in first (MADV_POPULATE_READ while the range is still
 * registered MINOR with its tracker).
 */
#define KSMU_UNMERGE_ABSENT_IS_ZERO 0x1
/*
 * With ABSENT_IS_ZERO: do not return -EAGAIN for pages of the range that
 * the caller's zap set names at the hand-over (merge.c, ZAPS).  For a
 * caller's last tries, when a stale entry (a page dropped and mapped again
 * without the set hearing of it) would make every try fail.
 */
#define KSMU_UNMERGE_IGNORE_ZAPS 0x2

/**
 * ksmu_unmerge_run_flags() - ksmu_unmerge_run() with flags.
 * Return: as ksmu_unmerge_run(); with hooks also -EAGAIN: the application
 * dropped a page of the range during the window, which was undone (the
 * range is merged and armed again), or (ABSENT_IS_ZERO) dropped one since
 * the caller's pre-fault and its madvise() may not have zapped it yet;
 * fault the range in again and retry.
 */
int ksmu_unmerge_run_flags(struct ksmu_merger *m, uintptr_t addr, size_t n, unsigned int flags);

/**
 * ksmu_unmerge_page() - ksmu_unmerge_run() of one page.
 * Return: as ksmu_unmerge_run().
 */
int ksmu_unmerge_page(struct ksmu_merger *m, uintptr_t addr);

/**
 * ksmu_merge_store_page_at() - which memfd page does @addr map?
 * @ino:   the memfd's inode number
 * @pgoff: the page's index in it
 * Return: 0 if @addr lies in a read-write private memfd mapping; -EINVAL if
 * not; -ENOTTY before 6.11 (no PROCMAP_QUERY); other -errno.
 */
int ksmu_merge_store_page_at(struct ksmu_merger *m, uintptr_t addr, uint64_t *ino,
			     uint64_t *pgoff);

/**
 * ksmu_merge_exclude_begin() - hold merge windows off (and wait for the
 * open ones to close).
 *
 * For code that changes the address space of the process while mergers
 * may run: munmap(2), mremap(2), mmap(MAP_FIXED), madvise(MADV_DONTNEED,
 * MADV_FREE, MADV_REMOVE) of memory that may be merged.  fork() is covered
 * already (pthread_atfork).  Calls may nest and run in several threads at
 * once; each must be paired with ksmu_merge_exclude_end().
 * Context: any thread that has no window open; spins (with sched_yield) for
 * at most the length of a window.
 */
void ksmu_merge_exclude_begin(void);
/**
 * ksmu_merge_window_enter() / ksmu_merge_window_exit() - open a window of
 * one's own (cow.c): fork() and ksmu_merge_exclude_begin() wait for it.
 */
void ksmu_merge_window_enter(void);
void ksmu_merge_window_exit(void);
/**
 * ksmu_merge_memfd_vma() - is [addr, addr+len) inside one read-write,
 * private, non-executable memfd VMA (PROCMAP_QUERY on *@maps_fd, opened on
 * first use)?  Allocates nothing.  Return: 0; -EINVAL no; -ENOTTY the
 * kernel cannot tell (before 6.11); -errno.
 */
int ksmu_merge_memfd_vma(int *maps_fd, uintptr_t addr, size_t len);

/** ksmu_merge_exclude_end() - let merge windows open again. */
void ksmu_merge_exclude_end(void);

#endif /* KSMU_MERGE_H */
