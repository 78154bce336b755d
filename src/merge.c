/* SPDX-License-Identifier: MIT */
/*
 * merge.c - the merge window: replace private anonymous pages by
 * MAP_PRIVATE mappings of store (memfd) pages, only if their content is the
 * expected one, only if nobody pins them, and without losing a concurrent
 * write or showing a reader anything but the page's true content.
 *
 * DESIGN
 *   Kernel KSM merges a page under the page-table lock: it write-protects
 *   the PTE, checks that nobody else holds a reference (the pin check of
 *   write_protect_page()), compares, and swaps the PTE.  User space has no
 *   page-table lock, so the window builds the same guarantees out of
 *   userfaultfd (kernel-facts.md, "MISSING merge window"):
 *
 *     (1) UFFDIO_REGISTER the run, MODE_MISSING, on the merger's uffd.  The
 *         VMA is split around the run.  From now on a thread that finds a
 *         PTE of the run empty - reader or writer, in user or kernel mode -
 *         sleeps in the fault handler until UFFDIO_WAKE.
 *     (2) UFFDIO_MOVE the pages from the run to the scratch area.  This
 *         clears each PTE (with a TLB flush) and installs the same page in
 *         the scratch PTE: an atomic detach.  The kernel refuses with EBUSY
 *         a page that may be pinned (folio_maybe_dma_pinned) or that is not
 *         exclusive to this process (COW-shared after fork): that is the
 *         pin check, and it is atomic with the detach.  Nothing is moved
 *         for that page, and the pages before it are moved back.
 *     (3) Compare the detached pages with the expected content, in full.
 *         Nobody can change them now: no PTE of the process maps them but
 *         the scratch PTEs, whose addresses nobody else knows.
 *     (4a) Equal: mmap(MAP_PRIVATE | MAP_FIXED) the store pages over the
 *         run (one mmap for the whole run).  This replaces the registered
 *         VMA, registration included.  UFFDIO_WAKE the run; the sleepers
 *         retry and find the store pages (a writer breaks COW at kernel
 *         speed).  MADV_POPULATE_READ maps the store pages read-only at
 *         once (never MAP_POPULATE: on a writable private mapping it would
 *         pre-fault for write and copy every page).  With hooks the store
 *         mapping is armed and moved in empty (replace_staged(): no TLB
 *         flush) and its PTEs are installed after the wake with
 *         UFFDIO_CONTINUE on the store's descriptor (populate_run()).  The old pages stay
 *         in the scratch area until KSMU_MERGE_SCRATCH_KEEP of them have
 *         gathered (or the engine's pass ends): then one MADV_DONTNEED
 *         frees them all, one TLB flush for many merges instead of one
 *         per merge.  Each window uses the slot after the kept pages.
 *     (4b) Different, or pinned, or absent: UFFDIO_MOVE the pages back (the
 *         run is still registered, as a MOVE destination must be), then
 *         UFFDIO_UNREGISTER (which wakes the sleepers too, and lets the
 *         VMA merge back with its neighbours) and UFFDIO_WAKE.  The pages
 *         are the very same physical pages: pins, PFNs and content intact.
 *
 *   The mapping's protection is PROT_READ | PROT_WRITE without asking
 *   /proc/self/maps: UFFDIO_MOVE accepts a source only if its access flags
 *   (read, write, exec) equal the destination's, and the scratch area is
 *   exactly read-write, so a successful step (2) proves the run was too.
 *
 *   VMA cost: a run in the middle of an anonymous VMA becomes a VMA of its
 *   own, so it costs 2 VMAs (about 480 bytes of kernel memory; 1 at an end
 *   of the VMA).  A run that continues a neighbouring run of the same store
 *   (adjacent addresses, adjacent store pages, same flags) merges with its
 *   VMA and costs nothing.  One page merged alone costs the same 2 VMAs as a
 *   run of 512: merge runs, not pages (vm.max_map_count is 65530).
 *
 *   What the new mapping does not inherit from the anonymous one: the
 *   advice bits (MADV_DONTFORK, MADV_WIPEONFORK, MADV_HUGEPAGE,
 *   MADV_MERGEABLE), an anon VMA name (PR_SET_VMA_ANON_NAME), and some
 *   semantics: MADV_DONTNEED on a merged page brings back the store content
 *   (not zeros) unless the caller's tracker answers MINOR faults (hooks,
 *   ZAPS: the engine's does), MADV_FREE fails with EINVAL, mremap(2) of a range that now
 *   spans several VMAs fails with EFAULT, and the page can never be merged
 *   again by this primitive (UFFDIO_MOVE refuses file-backed sources).
 *   Callers must filter regions with those advice bits and keep in mind the
 *   semantic changes.
 *
 * INVARIANTS
 *   - Between windows every scratch page after the first @scratch_used
 *     (the kept old copies, which nothing maps and nobody else knows) is
 *     empty (a MOVE into a non-empty destination fails with EEXIST).  The merging thread never touches an
 *     empty scratch page: it is registered MISSING, the access would sleep
 *     until a wake only this thread could send.
 *   - Every window that registered the run ends with UFFDIO_WAKE of the run,
 *     whatever happened in it: no thread stays asleep.
 *   - Between (1) and (5) the merging thread takes no lock and allocates no
 *     memory, and logs nothing: an application thread sleeping on the run
 *     may hold the allocator's lock or the log callback's.  Counters and
 *     messages come after the wake.
 *   - A page is replaced only after the full comparison of its detached,
 *     unreachable copy with @expected.
 *
 * LOCKING / THREADS
 *   A merger belongs to one thread at a time (its scratch area is per
 *   merger).  Several mergers may run windows at once, on distinct ranges:
 *   overlapping ranges are refused by the kernel (a range is registered with
 *   at most one uffd: EBUSY, returned as -EEXIST).  Windows are
 *   process-wide readers of an exclusion that fork() (pthread_atfork) and
 *   ksmu_merge_exclude_begin() take as writers.
 *
 * MEMORY ORDERING
 *   The exclusion is a Dekker pair on two seq_cst counters: a window
 *   increments windows_open then reads excluders; an excluder increments
 *   excluders then reads windows_open.  Sequential consistency guarantees
 *   that at least one of the two sees the other, so a window and an
 *   excluder never proceed together.  The window retreats when it sees an
 *   excluder (excluders have priority: fork is never starved).
 *
 * RACES
 *   Each step documents the races it is exposed to, at its spot in
 *   ksmu_merge_run().  In short: a write that lands before (2) is in the
 *   compared copy; any access after (2) sleeps until (5); a pin is either
 *   there at (2) (EBUSY, nothing changes) or taken after it (its fault
 *   sleeps, then pins the page it finds after the wake); fork is held off;
 *   MADV_DONTNEED by the application at any moment is seen with hooks
 *   (ZAPS); without hooks a drop after (2) is lost.  munmap/mremap/
 *   MAP_FIXED of the run during the window are detected if they come before
 *   (2) and must be excluded (ksmu_merge_exclude_begin()) by callers that
 *   cannot rule them out.
 *
 * KERNEL REQUIREMENTS
 *   userfaultfd with UFFD_FEATURE_MOVE (6.8; probe.c uffd_move) opened
 *   without UFFD_USER_MODE_ONLY (root, CAP_SYS_PTRACE,
 *   vm.unprivileged_userfaultfd=1 or /dev/userfaultfd access); otherwise
 *   kernel-mode accesses (read(2) into a page of the run) fail with EFAULT
 *   instead of sleeping.  MADV_POPULATE_READ (5.14).  A MAP_FIXED mmap that
 *   fails leaves the old mapping in place from 6.12 on; on 6.8 - 6.11 the
 *   run may be gone after a failed mmap, and the window re-creates it.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define LOG_PREFIX "merge: "
#include "compat.h"
#include "log.h"
#include "merge.h"
#include "probe.h"
#include "util.h"

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000 /* 4.17 */
#endif

static const unsigned char zero_page[KSMU_PAGE_SIZE] __attribute__((aligned(KSMU_PAGE_SIZE)));

/* UFFDIO_MOVE reports EAGAIN while the address space is changing. */
#define MOVE_RETRIES 64
/* Stack below the merging frame that the window may touch (libc, sanitizers). */
#define STACK_GUARD (256 * 1024UL)

static atomic_uint windows_open;
static atomic_uint excluders;
static atomic_uint fork_gen;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static int atfork_err;

/* ---------------------------------------------------------------- exclusion */

/* Seq_cst; pairs with the increment/load in ksmu_merge_exclude_begin(). */
static void window_enter(void)
{
	for (;;) {
		while (atomic_load(&excluders))
			sched_yield();
		atomic_fetch_add(&windows_open, 1);
		if (!atomic_load(&excluders))
			return;
		atomic_fetch_sub(&windows_open, 1);
	}
}

static void window_exit(void)
{
	atomic_fetch_sub(&windows_open, 1);
}

void ksmu_merge_window_enter(void)
{
	window_enter();
}

void ksmu_merge_window_exit(void)
{
	window_exit();
}

/* Seq_cst; pairs with the increment/load in window_enter(). */
void ksmu_merge_exclude_begin(void)
{
	atomic_fetch_add(&excluders, 1);
	while (atomic_load(&windows_open))
		sched_yield();
}

void ksmu_merge_exclude_end(void)
{
	atomic_fetch_sub(&excluders, 1);
}

/*
 * Fork during a window would give the child the run as an ordinary empty
 * anonymous range (a child inherits no uffd registration without
 * UFFD_FEATURE_EVENT_FORK) while the page sits in the scratch area: the
 * child would read zeros.  So fork waits for open windows to close and
 * keeps new ones from opening until it is done.
 */
static void atfork_prepare(void)
{
	ksmu_merge_exclude_begin();
}

static void atfork_parent(void)
{
	ksmu_merge_exclude_end();
}

static void atfork_child(void)
{
	/* The child's mergers (copies of the parent's) must not be used. */
	atomic_fetch_add(&fork_gen, 1);
	ksmu_merge_exclude_end();
}

static void atfork_register(void)
{
	atfork_err = -pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

/* ---------------------------------------------------------------- uffd */

static int uffd_register(int uffd, uintptr_t start, size_t len)
{
	struct uffdio_register reg;

	memset(&reg, 0, sizeof(reg));
	reg.range.start = start;
	reg.range.len = len;
	reg.mode = UFFDIO_REGISTER_MODE_MISSING;
	if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0)
		return -errno;
	return 0;
}

static int uffd_unregister(int uffd, uintptr_t start, size_t len)
{
	struct uffdio_range range = {.start = start, .len = len};

	if (ioctl(uffd, UFFDIO_UNREGISTER, &range) < 0)
		return -errno;
	return 0;
}

/*
 * UFFDIO_WAKE wakes the threads sleeping on faults in [start, start+len)
 * of this uffd.  It looks at no VMA: the sleepers are found on the uffd's
 * wait queues by address, so it works after the registered VMA has been
 * replaced by the store mapping.  A sleeper always queues itself before it
 * lets go of the mmap (or VMA) lock, and mmap(MAP_FIXED) takes that lock for
 * writing, so every sleeper of the old VMA is queued before the wake.
 */
static int uffd_wake(int uffd, uintptr_t start, size_t len)
{
	struct uffdio_range range = {.start = start, .len = len};

	if (ioctl(uffd, UFFDIO_WAKE, &range) < 0)
		return -errno;
	return 0;
}

/*
 * Whether a thread sleeps on a fault of this uffd now (its message is
 * pending; nobody reads the messages: the wake removes them).  One poll(2),
 * about a microsecond: it tells how often a window made the application
 * wait.
 */
static bool uffd_sleepers(int uffd)
{
	struct pollfd pfd = {.fd = uffd, .events = POLLIN};

	return poll(&pfd, 1, 0) > 0 && (pfd.revents & POLLIN);
}

/*
 * Move [src, src+len) to [dst, dst+len) with DONTWAKE (nobody sleeps on the
 * scratch area; the run is woken explicitly).  The kernel moves page by
 * page and stops at the first page it cannot move: it then fails with
 * EAGAIN and reports the bytes moved, and the next call, starting at that
 * page, reports why.  EAGAIN with nothing moved means "address space
 * changing" (uffd events; not requested here) and is retried.
 *
 * Return: 0, or the -errno of the first page that could not be moved;
 * *moved is the length moved in both cases.
 */
static int move_range_mode(int uffd, uintptr_t dst, uintptr_t src, size_t len, size_t *moved,
			   uint64_t extra_mode)
{
	struct uffdio_move mv;
	size_t done = 0;
	int tries = 0, err;

	while (done < len) {
		memset(&mv, 0, sizeof(mv));
		mv.dst = dst + done;
		mv.src = src + done;
		mv.len = len - done;
		mv.mode = UFFDIO_MOVE_MODE_DONTWAKE | extra_mode;
		if (ioctl(uffd, UFFDIO_MOVE, &mv) == 0) {
			done = len;
			break;
		}
		err = errno;
		if (mv.move > 0) {
			done += (size_t)mv.move;
			continue;
		}
		if (err == EAGAIN && ++tries < MOVE_RETRIES)
			continue;
		*moved = done;
		return -err;
	}
	*moved = done;
	return 0;
}

static int move_range(int uffd, uintptr_t dst, uintptr_t src, size_t len, size_t *moved)
{
	return move_range_mode(uffd, dst, src, len, moved, 0);
}

/* ---------------------------------------------------------------- zaps */

/*
 * ZAPS (with hooks)
 *   The application may MADV_DONTNEED a page at any moment, and must read
 *   zeros afterwards.  A store mapping cannot give zeros by itself (after a
 *   zap the kernel faults the store page back in), so the tracker registers
 *   store mappings MINOR and its reader answers faults of dropped pages
 *   with zeros; the caller's "zap set" says which pages were dropped.  A
 *   window must not let a drop slip between the registrations:
 *
 *   - madvise(MADV_DONTNEED) on a uffd-registered range with EVENT_REMOVE
 *     queues the event, lets go of the mmap lock, waits until the event is
 *     read, then looks the VMA up again and zaps whatever is there now,
 *     without a second event.  So whoever reads a REMOVE must put it in the
 *     zap set before anybody can fault the page (hooks->zap_lock held from
 *     the read on), and a REMOVE for a run must not be read while the run
 *     is still a registered anonymous range that is about to be replaced.
 *   - Before a window acts, drops announced to the tracker while the run was
 *     still registered there must be in the zap set: the window waits until
 *     the tracker has no unread event (settle(); UFFDIO_WRITEPROTECT on an
 *     unregistered range fails with EAGAIN exactly while an event is
 *     pending, ENOENT otherwise), then looks the run up in the set.  Every
 *     madvise that saw the tracker's VMA incremented the tracker's
 *     mmap_changing before our UFFDIO_UNREGISTER got the mmap lock.
 *   - Runs are registered on @run_uffd (EVENT_REMOVE).  A merge window reads
 *     it after the store mapping, already armed with the tracker, has
 *     replaced the run (mremap of a staged mapping: the registration moves
 *     with it, no instant without it); the released madvise then zaps the
 *     store mapping and the reader answers zeros.  On the failure path a
 *     REMOVE read early (the MOVE back waits for it) is harmless: the run is
 *     still registered MISSING, every access waits, and the dropped pages
 *     are simply not moved back.
 *   - The hand-over of an unmerge window (ABSENT_IS_ZERO): the tracker's
 *     registration goes (disarm) and @wp_uffd's comes, two system calls in
 *     which no uffd holds the range, so a drop there is zapped without an
 *     event and a read right after it faults the store page in.  The window
 *     holds zap_lock across the two, so the reader cannot release an
 *     madvise() that saw the tracker's VMA: it zaps after the hand-over.
 *     One released before may still be on its way to the zap; its range is
 *     in the zap set (the caller pre-faulted the range, which empties the
 *     set there), so the window returns -EAGAIN instead (the caller faults
 *     the range in again and retries).  Left: an madvise() that starts
 *     between the two system calls *and* a read of its page before the
 *     second one has the mmap lock.  Closing that needs store mappings on a
 *     uffd of their own with synchronous WP, so that an unmerge needs no
 *     re-registration (planned).
 *   - An unmerge window registers @wp_uffd (EVENT_REMOVE) and reads it only
 *     after the mremap that makes the range anonymous (the madvise then
 *     zaps the anonymous pages) or after the undo re-armed the store
 *     mapping.  If a REMOVE blocks UFFDIO_WRITEPROTECT the window is undone
 *     and retried (-EAGAIN): reading it early would let a reader fault the
 *     store page back.
 *   - madvise queues its event after dropping the mmap lock, so one may
 *     arrive after the window's last read: ksmu_merger_drain() (the
 *     tracker's reader, between windows) reads those.
 */

/*
 * Read every pending message of @fd; see ZAPS.  Caller holds zap_lock.
 * *@faults (if not NULL) is set when a page fault message was among them.
 */
static bool drain_fd_faults(struct ksmu_merger *m, int fd, uintptr_t run, size_t n, uint64_t *mask,
			    bool *faults)
{
	uintptr_t run_end = run + (n << KSMU_PAGE_SHIFT);
	struct uffd_msg msg[8];
	bool hit = false;
	ssize_t r;
	size_t i;

	while ((r = read(fd, msg, sizeof(msg))) > 0) {
		for (i = 0; i < (size_t)r / sizeof(msg[0]); i++) {
			uintptr_t a, b;

			/* Page faults of the run: the window's wake answers them. */
			if (msg[i].event == UFFD_EVENT_PAGEFAULT && faults)
				*faults = true;
			if (msg[i].event != UFFD_EVENT_REMOVE)
				continue;
			a = (uintptr_t)msg[i].arg.remove.start;
			b = (uintptr_t)msg[i].arg.remove.end;
			m->hooks->zap_add(m->hooks->arg, a, b);
			if (!mask || b <= run || a >= run_end)
				continue;
			hit = true;
			a = KSMU_MAX(a, run);
			b = KSMU_MIN(b, run_end);
			for (; a < b; a += KSMU_PAGE_SIZE) {
				size_t k = (a - run) >> KSMU_PAGE_SHIFT;

				mask[k / 64] |= 1ULL << (k % 64);
			}
		}
	}
	return hit;
}

static bool drain_fd(struct ksmu_merger *m, int fd, uintptr_t run, size_t n, uint64_t *mask)
{
	return drain_fd_faults(m, fd, run, n, mask, NULL);
}

static bool drain(struct ksmu_merger *m, int fd, uintptr_t run, size_t n, uint64_t *mask)
{
	bool hit;

	m->hooks->zap_lock(m->hooks->arg, true);
	hit = drain_fd(m, fd, run, n, mask);
	m->hooks->zap_lock(m->hooks->arg, false);
	return hit;
}

void ksmu_merger_event_fds(const struct ksmu_merger *m, int fds[2])
{
	fds[0] = m->hooks ? m->run_uffd : -1;
	fds[1] = m->hooks ? m->wp_uffd : -1;
}

int ksmu_merger_drain(struct ksmu_merger *m)
{
	if (!m->hooks)
		return 0;
	if (pthread_mutex_trylock(&m->events_lock))
		return -EBUSY;
	m->hooks->zap_lock(m->hooks->arg, true);
	drain_fd(m, m->run_uffd, 0, 0, NULL);
	if (m->wp_uffd >= 0)
		drain_fd(m, m->wp_uffd, 0, 0, NULL);
	m->hooks->zap_lock(m->hooks->arg, false);
	pthread_mutex_unlock(&m->events_lock);
	return 0;
}

/* Spins (with sched_yield) for at most this many probes: a few milliseconds. */
#define SETTLE_TRIES 2000

/*
 * Wait until the tracker (and the store descriptor) has no unread event, then collect the pages of
 * the run it reported dropped (ZAPS).  @probe: any address range not
 * registered with the tracker.  Return: 0, or -EBUSY if it did not settle.
 */
static int settle(struct ksmu_merger *m, uintptr_t probe, uintptr_t run, size_t n, uint64_t *mask,
		  bool forever)
{
	const struct timespec nap = {0, 100 * 1000};
	struct uffdio_writeprotect wp;
	int tries;

	for (tries = 0;; tries++) {
		memset(&wp, 0, sizeof(wp));
		wp.range.start = probe;
		wp.range.len = KSMU_PAGE_SIZE;
		if ((ioctl(m->hooks->tracker_fd, UFFDIO_WRITEPROTECT, &wp) < 0 && errno == EAGAIN) ||
		    (m->hooks->store_fd != m->hooks->tracker_fd && m->hooks->store_fd >= 0 &&
		     ioctl(m->hooks->store_fd, UFFDIO_WRITEPROTECT, &wp) < 0 && errno == EAGAIN)) {
			if (tries < SETTLE_TRIES)
				sched_yield();
			else if (forever)
				nanosleep(&nap, NULL); /* the reader is starved of CPU */
			else
				return -EBUSY;
			continue;
		}
		break; /* ENOENT: nothing pending (any other answer: nothing pending either) */
	}
	m->hooks->zap_lock(m->hooks->arg, true);
	m->hooks->zap_test(m->hooks->arg, run, n, mask);
	m->hooks->zap_lock(m->hooks->arg, false);
	return 0;
}

static bool mask_any(const uint64_t *mask, size_t n)
{
	size_t i;

	for (i = 0; i < (n + 63) / 64; i++)
		if (mask[i])
			return true;
	return false;
}

static bool mask_bit(const uint64_t *mask, size_t k)
{
	return mask[k / 64] >> (k % 64) & 1;
}

#define MASK_WORDS (KSMU_MERGE_MAX_RUN / 64)
/* iovecs per process_vm_readv() call (UIO_MAXIOV is 1024) */
#define IOV_BATCH 512

/* ---------------------------------------------------------------- merger */

static int unmerge_open(struct ksmu_merger *m);

int ksmu_merger_init(struct ksmu_merger *m)
{
	return ksmu_merger_init_hooks(m, NULL);
}

int ksmu_merger_init_hooks(struct ksmu_merger *m, const struct ksmu_merge_hooks *hooks)
{
	size_t len = (size_t)KSMU_MERGE_MAX_RUN << KSMU_PAGE_SHIFT;
	void *p;
	int fd, err;

	memset(m, 0, sizeof(*m));
	m->uffd = -1;
	m->run_uffd = -1;
	m->wp_uffd = -1;
	m->maps_fd = -1;
	m->pagemap_fd = -1;
	pthread_mutex_init(&m->events_lock, NULL);
	pthread_once(&atfork_once, atfork_register);
	if (atfork_err)
		return atfork_err;

	fd = ksmu_probe_uffd_open_kernel_faults(UFFD_FEATURE_MOVE, NULL);
	if (fd == -EINVAL)
		return -EOPNOTSUPP; /* the kernel does not offer UFFD_FEATURE_MOVE */
	if (fd < 0)
		return fd;

	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1,
		 0);
	if (p == MAP_FAILED) {
		err = -errno;
		goto out_close;
	}
	/*
	 * No huge page: a PMD-mapped scratch THP would make the MOVE back split
	 * it.  No copy in a child: the child cannot use the merger anyway.
	 * Both are advice; a failure changes nothing that matters.
	 */
	madvise(p, len, MADV_NOHUGEPAGE);
	madvise(p, len, MADV_DONTFORK);
	err = uffd_register(fd, (uintptr_t)p, len);
	if (err)
		goto out_unmap;

	m->uffd = fd;
	m->run_uffd = fd;
	m->scratch = (uintptr_t)p;
	m->scratch_pages = KSMU_MERGE_MAX_RUN;
	m->fork_gen = atomic_load(&fork_gen);
	if (hooks) {
		/* Runs on their own uffd, with REMOVE events (ZAPS). */
		fd = ksmu_probe_uffd_open_kernel_faults(UFFD_FEATURE_MOVE | UFFD_FEATURE_EVENT_REMOVE,
							NULL);
		if (fd < 0) {
			ksmu_merger_destroy(m);
			return fd == -EINVAL ? -EOPNOTSUPP : fd;
		}
		m->run_uffd = fd;
		m->hooks = hooks;
		/* The unmerge uffd now, so that its descriptor never changes. */
		err = unmerge_open(m);
		if (err && err != -EOPNOTSUPP) {
			ksmu_merger_destroy(m);
			return err;
		}
	}
	return 0;

out_unmap:
	munmap(p, len);
out_close:
	close(fd);
	return err;
}

void ksmu_merger_destroy(struct ksmu_merger *m)
{
	/*
	 * In a forked child the scratch area does not exist (MADV_DONTFORK) and
	 * its addresses may hold the child's own mappings by now: leave them.
	 */
	if (m->scratch && m->fork_gen == atomic_load(&fork_gen))
		munmap((void *)m->scratch, m->scratch_pages << KSMU_PAGE_SHIFT);
	if (m->unmerge_scratch && m->fork_gen == atomic_load(&fork_gen))
		munmap((void *)m->unmerge_scratch, (size_t)KSMU_MERGE_MAX_RUN << KSMU_PAGE_SHIFT);
	if (m->run_uffd >= 0 && m->run_uffd != m->uffd)
		close(m->run_uffd);
	if (m->uffd >= 0)
		close(m->uffd);
	if (m->wp_uffd >= 0)
		close(m->wp_uffd);
	if (m->maps_fd >= 0)
		close(m->maps_fd);
	if (m->pagemap_fd >= 0)
		close(m->pagemap_fd);
	m->wp_uffd = -1;
	m->maps_fd = -1;
	m->pagemap_fd = -1;
	m->unmerge_scratch = 0;
	m->run_uffd = -1;
	m->hooks = NULL;
	m->uffd = -1;
	m->scratch = 0;
	m->scratch_pages = 0;
	m->scratch_used = 0;
}

/*
 * The part of the scratch area a merge window uses: right after the old
 * copies kept from earlier merges (@scratch_used does not change while a
 * window is open).
 */
static uintptr_t scratch_slot(const struct ksmu_merger *m)
{
	return m->scratch + (m->scratch_used << KSMU_PAGE_SHIFT);
}

/*
 * Free the old copies.  Nothing but this thread knows them.  If this failed,
 * a later MOVE into the scratch area would fail with EEXIST; it cannot fail
 * on our own private mapping short of a kernel bug.
 */
void ksmu_merger_flush_scratch(struct ksmu_merger *m)
{
	if (!m->scratch_used || m->fork_gen != atomic_load(&fork_gen))
		return;
	KSMU_BUG_ON(madvise((void *)m->scratch, m->scratch_used << KSMU_PAGE_SHIFT,
			    MADV_DONTNEED) < 0);
	m->scratch_used = 0;
}

static bool overlaps(uintptr_t a, size_t alen, uintptr_t b, size_t blen)
{
	return a < b + blen && b < a + alen;
}

#if KSMU_DEBUG >= 1
/* The caller promises that @expected is the store's content: check it. */
static bool store_matches(int store_fd, size_t first_idx, size_t n, const void *expected)
{
	unsigned char buf[KSMU_PAGE_SIZE];
	size_t i;

	for (i = 0; i < n; i++) {
		off_t off = (off_t)((first_idx + i) << KSMU_PAGE_SHIFT);

		if (pread(store_fd, buf, sizeof(buf), off) != (ssize_t)sizeof(buf))
			return false;
		if (memcmp(buf, (const unsigned char *)expected + (i << KSMU_PAGE_SHIFT),
			   sizeof(buf)))
			return false;
	}
	return true;
}
#endif

static int check_args(const struct ksmu_merger *m, uintptr_t addr, size_t n, int store_fd,
		      size_t first_idx, const void *expected)
{
	size_t len = n << KSMU_PAGE_SHIFT;
	uintptr_t frame = (uintptr_t)__builtin_frame_address(0);
	struct stat st;

	if (m->uffd < 0)
		return -EBADF;
	if (m->fork_gen != atomic_load(&fork_gen))
		return -ECHILD;
	if (n > m->scratch_pages)
		return -E2BIG;
	if (!n || !expected || (addr & ~KSMU_PAGE_MASK) || addr + len < addr)
		return -EINVAL;
	/*
	 * Everything the merging thread touches between (1) and (5) must lie
	 * outside the run, or the thread would sleep on its own window: the
	 * expected content, the merger, the stack below this frame, and errno
	 * (thread-local storage, written by a failing system call).
	 */
	if (overlaps(addr, len, (uintptr_t)expected, len) ||
	    overlaps(addr, len, (uintptr_t)m, sizeof(*m)) ||
	    overlaps(addr, len, frame - STACK_GUARD, STACK_GUARD + KSMU_PAGE_SIZE) ||
	    overlaps(addr, len, (uintptr_t)&errno, sizeof(errno)))
		return -EDEADLK;
	if (overlaps(addr, len, m->scratch, m->scratch_pages << KSMU_PAGE_SHIFT))
		return -EINVAL;
	/*
	 * A store page beyond the end of the store would map, then raise SIGBUS
	 * in the application at its first access: refuse it now.
	 */
	if (fstat(store_fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	if (first_idx > ((size_t)LLONG_MAX >> KSMU_PAGE_SHIFT) - n ||
	    (uint64_t)st.st_size < (uint64_t)(first_idx + n) << KSMU_PAGE_SHIFT)
		return -ERANGE;
#if KSMU_DEBUG >= 1
	KSMU_BUG_ON(!store_matches(store_fd, first_idx, n, expected));
#endif
	return 0;
}

/*
 * The run vanished while its pages sat in the scratch area, and the cause
 * was our own mmap failing (6.8 - 6.11 may unmap the old range before
 * failing to map the new one).  Put an anonymous mapping back where nothing
 * is mapped now (never over anything: the application may own that range
 * by now) and move the pages into it.
 */
static int recreate_anon(struct ksmu_merger *m, uintptr_t addr, size_t off, size_t len)
{
	size_t moved;
	void *p;
	int err;

	p = mmap((void *)(addr + off), len - off, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (p == MAP_FAILED)
		return -errno;
	if (p != (void *)(addr + off)) { /* kernel before 4.17: a hint only */
		munmap(p, len - off);
		return -EEXIST;
	}
	err = uffd_register(m->uffd, addr + off, len - off);
	if (err)
		return err;
	err = move_range_mode(m->uffd, addr + off, scratch_slot(m) + off, len - off, &moved,
			      UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES);
	uffd_unregister(m->uffd, addr + off, len - off);
	return err;
}

/*
 * mmap(2) without the C library's wrapper.  Sanitizer runtimes intercept
 * mmap and model a new file mapping as a write of the whole range by the
 * calling thread; the application's next accesses from other threads would
 * then be reported as races with it, although the bytes did not change and
 * the kernel orders those accesses after the window (they slept until the
 * wake).  The range is application memory the runtimes already know.
 */
static void *map_store(uintptr_t addr, size_t len, int fd, off_t off)
{
	long r =
	    syscall(SYS_mmap, addr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, fd, off);

	return r == -1 ? MAP_FAILED : (void *)r;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * (4a) with hooks: map the store pages at a free address, arm them with the
 * tracker, and mremap() them over the run: one atomic replacement under the
 * mmap lock, registration and write-protect markers included (ZAPS).  The
 * staging mapping is never faulted in: write-protecting present PTEs and
 * moving them would each flush the TLB on every CPU running the process
 * (two IPIs per merge, about a third of a merge's CPU on this 2-vCPU
 * machine), while the markers of an empty range move for free.  The run's
 * PTEs are installed afterwards (populate_run()).  The tracker's reader
 * sees a REMAP of @staging, which it ignores; @staging is cleared under
 * the zap lock, which the reader holds from reading an event until it has
 * looked at it, so it never sees our events after the clear.
 */
static int replace_staged(struct ksmu_merger *m, uintptr_t addr, size_t len, int fd, off_t off,
			  bool *gone)
{
	size_t i;
	long r;
	void *s;
	int err;

	/*
	 * What will be mapped must be what was compared: the detached pages
	 * (a daemon store page is the daemon's file; a bug there must not
	 * reach the application).  Read from the file, not through a mapping.
	 */
	for (i = 0; i < len; i += KSMU_PAGE_SIZE) {
		if (pread(fd, m->cmp_page, KSMU_PAGE_SIZE, off + (off_t)i) != (ssize_t)KSMU_PAGE_SIZE)
			return -EIO;
		if (memcmp(m->cmp_page, (const void *)(scratch_slot(m) + i), KSMU_PAGE_SIZE))
			return -EAGAIN;
	}
	r = syscall(SYS_mmap, 0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, off);
	if (r == -1)
		return -errno;
	s = (void *)r;
	__atomic_store_n(&m->staging, (uintptr_t)s, __ATOMIC_SEQ_CST);
	err = m->hooks->arm(m->hooks->arg, (uintptr_t)s, len);
	if (!err) {
		/*
		 * MREMAP_DONTUNMAP leaves the (now empty) staging VMA behind:
		 * no UNMAP event for it, so one round trip to the tracker's
		 * reader (the REMAP) instead of two.  It is then unregistered,
		 * so that its munmap() reports nothing either.
		 */
		r = syscall(SYS_mremap, s, len, len,
			    MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, addr);
		if (r == -1) {
			err = -errno;
			/* mremap() unmaps the destination first: is the run still there? */
			*gone = msync((void *)addr, len, MS_ASYNC) < 0 && errno == ENOMEM;
		}
		uffd_unregister(m->hooks->store_fd, (uintptr_t)s, len);
	}
	syscall(SYS_munmap, s, len);
	return err;
}

/*
 * After (5), with hooks: map the run's store pages, as the reader answers
 * a MINOR fault, but without the fault: UFFDIO_CONTINUE on the store's
 * descriptor, write-protected (a write still reaches the tracker), under
 * the zap lock, skipping pages dropped since the merge (the reader answers
 * those with zeros on access).  Best effort: a page left out (an unread
 * event: EAGAIN; a sleeper's fault got there first: EEXIST) is mapped by
 * the reader when it is touched.  Return: 0 or the first -errno.
 */
static int populate_run(struct ksmu_merger *m, uintptr_t addr, size_t n)
{
	const struct ksmu_merge_hooks *h = m->hooks;
	uint64_t mask[MASK_WORDS] = {0};
	size_t i = 0, j;
	int err = 0;

	h->zap_lock(h->arg, true);
	h->zap_test(h->arg, addr, n, mask);
	while (i < n) {
		struct uffdio_continue co;

		if (mask_bit(mask, i)) {
			i++;
			continue;
		}
		for (j = i; j < n && !mask_bit(mask, j); j++)
			;
		memset(&co, 0, sizeof(co));
		co.range.start = addr + (i << KSMU_PAGE_SHIFT);
		co.range.len = (j - i) << KSMU_PAGE_SHIFT;
		co.mode = UFFDIO_CONTINUE_MODE_WP; /* and wake a thread faulting meanwhile */
		if (ioctl(h->store_fd, UFFDIO_CONTINUE, &co) == 0) {
			i = j;
			continue;
		}
		if (!err)
			err = -errno;
		if (errno != EEXIST)
			break;
		/* skip the page that is mapped already, carry on after it */
		i += (co.mapped > 0 ? (size_t)co.mapped >> KSMU_PAGE_SHIFT : 0) + 1;
	}
	h->zap_lock(h->arg, false);
	return err == -EEXIST ? 0 : err;
}

/*
 * (4b) Put the first @npages pages of the run back from the scratch area,
 * through @run_uffd (a MOVE destination must be registered with the uffd
 * used).  With hooks, an unread REMOVE of the run makes the MOVE fail with
 * EAGAIN: read it, and leave the dropped pages dropped (ZAPS).
 * Return: 0, or the -errno of page *done, the first not handled.
 */
static int move_back(struct ksmu_merger *m, uintptr_t addr, size_t n, size_t npages,
		     uint64_t *zmask, size_t *done)
{
	size_t i = 0, j, got;
	int err = 0, rounds = 0;

	while (i < npages) {
		if (m->hooks && mask_bit(zmask, i)) {
			i++;
			continue;
		}
		for (j = i; j < npages && !(m->hooks && mask_bit(zmask, j)); j++)
			;
		err = move_range(m->run_uffd, addr + (i << KSMU_PAGE_SHIFT),
				 scratch_slot(m) + (i << KSMU_PAGE_SHIFT), (j - i) << KSMU_PAGE_SHIFT,
				 &got);
		i += got >> KSMU_PAGE_SHIFT;
		if (!err)
			continue;
		if (err == -EAGAIN && m->hooks && rounds++ < SETTLE_TRIES) {
			drain(m, m->run_uffd, addr, n, zmask);
			sched_yield();
			err = 0;
			continue;
		}
		break;
	}
	*done = i;
	return err;
}

int ksmu_merge_run(struct ksmu_merger *m, uintptr_t addr, size_t n, int store_fd, size_t first_idx,
		   const void *expected, size_t *bad)
{
	size_t len = n << KSMU_PAGE_SHIFT, moved = 0, back = 0, culprit = 0, i;
	const unsigned char *exp = expected;
	uint64_t zmask[MASK_WORDS] = {0};
	bool mapped_failed = false, contended, hooked = m->hooks != NULL;
	int err, back_err = 0, populate_err = 0;
	uint64_t t0, dt;
	void *p;

	if (bad)
		*bad = 0;
	err = check_args(m, addr, n, store_fd, first_idx, expected);
	if (err) {
		m->stats.errors++;
		return err;
	}

	if (m->scratch_used >= KSMU_MERGE_SCRATCH_KEEP || m->scratch_used + n > m->scratch_pages)
		ksmu_merger_flush_scratch(m);
	if (hooked)
		pthread_mutex_lock(&m->events_lock);
	window_enter();
	t0 = now_ns();
	/*
	 * (1) Register.  Fails without side effects if the range is not all
	 * anonymous/shmem memory (EINVAL: unmapped, hole, other file), is
	 * registered with another uffd (EBUSY: another merger's window or a
	 * dirty tracker), or the split would exceed vm.max_map_count (ENOMEM).
	 * From here on, any thread that faults on an empty PTE of the run
	 * sleeps until (5); present pages are read and written as before.
	 */
	err = uffd_register(m->run_uffd, addr, len);
	if (err) {
		window_exit();
		if (hooked)
			pthread_mutex_unlock(&m->events_lock);
		if (err == -EBUSY)
			err = -EEXIST;
		m->stats.errors++;
		return err;
	}

	/*
	 * (1b) With hooks: a drop announced to the tracker before (1) and not
	 * yet carried out must win (ZAPS): leave the run to the application.
	 */
	if (hooked) {
		err = settle(m, m->scratch, addr, n, zmask, false);
		if (err) {
			m->stats.unsettled++;
			goto out_move_back;
		}
		if (mask_any(zmask, n)) {
			m->stats.zapped++;
			err = -ENOENT;
			goto out_move_back;
		}
	}

	/*
	 * (2) Detach.  A write that completes before the MOVE's TLB flush is in
	 * the page we compare; a write after it faults on the empty PTE and
	 * sleeps, and retries after (5) against whatever is mapped then (its
	 * own page moved back, or the store page, which it COWs): no write is
	 * lost.  A reader likewise sees the old content before the flush and
	 * sleeps after it.  Kernel-mode accesses (copy_to_user of read(2),
	 * GUP of O_DIRECT or io_uring) sleep the same way because the uffd is
	 * not USER_MODE_ONLY.  A pin taken before the MOVE makes it fail with
	 * EBUSY for that page; one taken after it sleeps in GUP's fault and
	 * pins what it finds after (5).  A page COW-shared with a forked
	 * process is not exclusive: EBUSY as well (after the child exits, until
	 * the page is written again).  munmap/mremap of the run between (1)
	 * and here makes the MOVE fail (ENOENT/EINVAL): reported, nothing moved.
	 * The MOVE goes through @uffd, with which the scratch area is
	 * registered; the run may be registered with @run_uffd.
	 */
	err = move_range(m->uffd, scratch_slot(m), addr, len, &moved);
	if (err) {
		culprit = moved >> KSMU_PAGE_SHIFT;
		goto out_move_back;
	}

	/*
	 * (3) Compare.  The pages are reachable only through the scratch PTEs
	 * now; nothing can change them.
	 */
	for (i = 0; i < n; i++) {
		if (memcmp((const void *)(scratch_slot(m) + (i << KSMU_PAGE_SHIFT)),
			   exp + (i << KSMU_PAGE_SHIFT), KSMU_PAGE_SIZE))
			break;
	}
	if (i < n) {
		culprit = i;
		err = -EAGAIN;
		goto out_move_back;
	}

	/*
	 * (4a) Replace.  MAP_FIXED (or, with hooks, mremap of the armed store
	 * mapping) swaps the registered VMA for the store mapping under the
	 * mmap lock (the registration goes with the old VMA: no
	 * UFFDIO_UNREGISTER).  munmap, mremap or MAP_FIXED of the run by the
	 * application between (2) and here cannot be detected atomically from
	 * user space: we would map the store over memory the application gave
	 * up (or over its new mapping there).  Callers that cannot rule those
	 * out hold them off with ksmu_merge_exclude_begin() (the preload shim
	 * does, around the calls it interposes).  MADV_DONTNEED is safe with
	 * hooks (ZAPS).  fork() is held off already (atfork_prepare()).
	 */
	if (hooked) {
		err = replace_staged(m, addr, len, store_fd, (off_t)(first_idx << KSMU_PAGE_SHIFT),
				     &mapped_failed);
		/*
		 * Clear @staging and read the run's REMOVEs, under the zap lock.
		 * One poll(2) tells whether any message (REMOVE or fault) is
		 * queued; only then is it read.  A REMOVE queued after the poll
		 * is one queued after the read would have been: the tracker's
		 * reader reads it (ksmu_merger_drain(), ZAPS).
		 */
		m->hooks->zap_lock(m->hooks->arg, true);
		__atomic_store_n(&m->staging, 0, __ATOMIC_SEQ_CST);
		contended = false;
		if (!err && uffd_sleepers(m->run_uffd))
			drain_fd_faults(m, m->run_uffd, 0, 0, NULL, &contended);
		m->hooks->zap_lock(m->hooks->arg, false);
		if (err)
			goto out_move_back;
	} else {
		contended = false;
		p = map_store(addr, len, store_fd, (off_t)(first_idx << KSMU_PAGE_SHIFT));
		if (p == MAP_FAILED) {
			err = -errno;
			mapped_failed = true;
			goto out_move_back;
		}
	}
	/*
	 * (5) Wake now rather than after populating: the sleepers retry at once
	 * and fault the store page in themselves if they win the race.
	 */
	if (!hooked)
		contended = uffd_sleepers(m->run_uffd);
	uffd_wake(m->run_uffd, addr, len);
	dt = now_ns() - t0;
	if (!hooked && madvise((void *)addr, len, MADV_POPULATE_READ) < 0)
		populate_err = -errno;
	window_exit();
	if (hooked)
		populate_err = populate_run(m, addr, n);
	if (hooked)
		pthread_mutex_unlock(&m->events_lock);

	/*
	 * The slot holds the old copies, now unused.  They are kept until
	 * KSMU_MERGE_SCRATCH_KEEP pages are (ksmu_merger_flush_scratch()): one
	 * MADV_DONTNEED, one TLB flush, for many merges.
	 */
	m->scratch_used += n;

	m->stats.windows++;
	m->stats.windows_contended += contended;
	m->stats.window_ns += dt;
	m->stats.window_ns_max = KSMU_MAX(m->stats.window_ns_max, dt);
	m->stats.pages_merged += n;
	m->stats.runs_merged++;
	if (populate_err) {
		m->stats.populate_failed++;
		pr_debug("MADV_POPULATE_READ %#lx+%zu: %s", (unsigned long)addr, len,
			 strerror(-populate_err));
	}
	return 0;

out_move_back:
	/*
	 * (4b) Put back what was moved: the same pages at the same addresses.
	 * The run is still registered, as a MOVE destination must be.  This
	 * fails only if the application unmapped or remapped the run during
	 * the window (or our failed mmap/mremap took it away).  Pages the
	 * application dropped meanwhile stay dropped (ZAPS).
	 */
	if (moved) {
		size_t npages = moved >> KSMU_PAGE_SHIFT;

		back_err = move_back(m, addr, n, npages, zmask, &back);
		back <<= KSMU_PAGE_SHIFT;
		if (back_err && mapped_failed) {
			/* the pages dropped meanwhile are not brought back: holes */
			for (i = back >> KSMU_PAGE_SHIFT; hooked && i < npages; i++)
				if (mask_bit(zmask, i))
					madvise((void *)(scratch_slot(m) + (i << KSMU_PAGE_SHIFT)),
						KSMU_PAGE_SIZE, MADV_DONTNEED);
			back_err = recreate_anon(m, addr, back, moved);
		}
		if (back_err || (hooked && mask_any(zmask, n)))
			madvise((void *)scratch_slot(m), moved, MADV_DONTNEED);
	}
	contended = uffd_sleepers(m->run_uffd);
	/*
	 * (5) UFFDIO_UNREGISTER wakes the sleepers of the range itself and lets
	 * the VMA merge back with its neighbours; it fails harmlessly if the
	 * application changed the range.  The explicit wake covers that case.
	 * A REMOVE still unread is read after the unregistration: its madvise
	 * then drops the anonymous pages, as it should.
	 */
	uffd_unregister(m->run_uffd, addr, len);
	if (hooked)
		drain(m, m->run_uffd, 0, 0, NULL);
	uffd_wake(m->run_uffd, addr, len);
	dt = now_ns() - t0;
	window_exit();
	if (hooked)
		pthread_mutex_unlock(&m->events_lock);

	m->stats.windows++;
	m->stats.windows_contended += contended;
	m->stats.window_ns += dt;
	m->stats.window_ns_max = KSMU_MAX(m->stats.window_ns_max, dt);
	if (bad)
		*bad = culprit;
	if (back_err) {
		m->stats.lost += (moved - back) >> KSMU_PAGE_SHIFT;
		m->stats.errors++;
		pr_warn("%#lx+%zu changed during the merge window: %zu page(s) not put back (%s)",
			(unsigned long)addr, len, (moved - back) >> KSMU_PAGE_SHIFT,
			strerror(-back_err));
		return -EFAULT;
	}
	switch (err) {
	case -EBUSY:
		m->stats.busy++;
		break;
	case -EAGAIN:
		m->stats.differ++;
		break;
	case -ENOENT:
		m->stats.absent++;
		break;
	case -EEXIST:
		/*
		 * Only the MOVE into the scratch area reports EEXIST (mmap
		 * does not): a scratch page was not empty, an invariant of
		 * this file is broken.  The application's pages are intact.
		 */
		m->stats.errors++;
		pr_err("scratch area not empty at page %zu", culprit);
		return -EIO;
	default:
		m->stats.errors++;
		break;
	}
	return err;
}

int ksmu_merge_page(struct ksmu_merger *m, uintptr_t addr, int store_fd, size_t idx,
		    const void *expected)
{
	return ksmu_merge_run(m, addr, 1, store_fd, idx, expected, NULL);
}

/* ---------------------------------------------------------------- unmerge */

/*
 * THE UNMERGE WINDOW
 *   ksmu_unmerge_run() turns a store mapping (a MAP_PRIVATE memfd VMA made
 *   by ksmu_merge_run()) back into private anonymous memory, keeping the
 *   content the application sees, without losing a concurrent write:
 *
 *     (1) Register the range UFFDIO_REGISTER_MODE_WP on the merger's second
 *         userfaultfd (m->wp_uffd: synchronous write-protect, i.e. without
 *         UFFD_FEATURE_WP_ASYNC; UFFD_FEATURE_WP_HUGETLBFS_SHMEM, since the
 *         VMA is shmem; not USER_MODE_ONLY so that copy_to_user() and GUP
 *         for write wait too instead of failing with EFAULT), and
 *         UFFDIO_WRITEPROTECT it.  Every kind of PTE is covered: a present
 *         store page or a present COW copy gets the uffd-wp bit; an empty
 *         PTE gets a uffd-wp PTE marker (file VMAs always use markers), so
 *         a write to a never-touched or MADV_DONTNEED'ed page waits too.
 *         A write fault racing with the ioctl either completes its COW
 *         before the PTE is write-protected (its data is then in the copy
 *         we read in (2)) or finds the PTE changed and retries into the
 *         wait.  From here on writers wait; readers read the true content.
 *     (2) process_vm_readv() the range into a slot of the unmerge scratch
 *         area (private anonymous memory of the merger, never registered).
 *         Never a direct load: an application munmap() would make it a
 *         SIGSEGV instead of an EFAULT.  What is read is exactly what the
 *         application would read now: the store page, the COW copy, or, for
 *         an empty PTE, the store page faulted in read-only.  With
 *         hooks, pages the application dropped become zeros in the copy
 *         (ZAPS), which is what it would read through its tracker.
 *     (3) mremap(MREMAP_FIXED) the slot over the range.  Under one hold of
 *         the mmap lock the kernel unmaps the store VMA (registration, WP
 *         bits, markers, COW copy and all) and moves the populated, writable
 *         anonymous pages in: no instant in which the range is empty or
 *         unmapped.  A faulting thread that was not yet queued on the uffd
 *         waits for the mmap lock and then finds the new pages.  mremap()
 *         checks vm.max_map_count before it unmaps anything, so -ENOMEM
 *         leaves the store mapping in place (undo: unregister and wake).
 *     (4) UFFDIO_WAKE the range on m->wp_uffd: writers that waited on the
 *         old VMA retry the fault, find the new VMA and its writable pages,
 *         and write there.  UFFDIO_WAKE finds sleepers by address on the
 *         uffd's queues, so it works after their VMA has gone.
 *
 *   Protection: the range must be read-write, not executable, private
 *   (checked with PROCMAP_QUERY, or /proc/self/maps before 6.11); the new
 *   mapping is read-write (the scratch area is).
 *
 *   Pins.  A page that still maps the store page carries no write pin: a
 *   pin for write on a MAP_PRIVATE page breaks COW first.  A read pin keeps
 *   the store page, which is what a COW would have left it with anyway.  But
 *   a page the kernel has COW-copied may be pinned for write (the O_DIRECT
 *   read or io_uring registration that caused the COW): nothing in user
 *   space detects it (UFFDIO_MOVE, the merge window's pin check, refuses
 *   file VMAs), and device writes after (2) go to the old copy.  Counted in
 *   stats.unmerged_private; the caller decides whether to unmerge those.
 *
 *   VMAs.  The moved VMA keeps the scratch area's anon_vma and page offset,
 *   so it does not merge with the anonymous neighbours the range had before
 *   it was merged (those have another anon_vma and offset).  The slot is
 *   chosen by address ((addr >> 12) mod KSMU_MERGE_MAX_RUN), so pages
 *   unmerged next to each other come from adjacent slots of one anon_vma
 *   and merge with each other.  Unmerging one page in the middle of a
 *   merged run splits the run's store VMA: +2 VMAs.
 *
 *   Fork: the window is a reader of the merge exclusion, like a merge
 *   window.  munmap/mremap/MAP_FIXED of the range by the application during
 *   the window must be excluded by the caller (ksmu_merge_exclude_begin()),
 *   as for merge windows; (2) reports a range that vanished before it as
 *   -EFAULT, but nothing can detect one replaced between (2) and (3).
 *
 *   Between (1) and (4) the thread allocates nothing, takes no lock, logs
 *   nothing, and writes nothing inside the range.
 */

#ifndef PROCMAP_QUERY
/* linux/fs.h, 6.11 */
struct procmap_query {
	__u64 size;
	__u64 query_flags;
	__u64 query_addr;
	__u64 vma_start;
	__u64 vma_end;
	__u64 vma_flags;
	__u64 vma_page_size;
	__u64 vma_offset;
	__u64 inode;
	__u32 dev_major;
	__u32 dev_minor;
	__u32 vma_name_size;
	__u32 build_id_size;
	__u64 vma_name_addr;
	__u64 build_id_addr;
};
#define PROCMAP_QUERY _IOWR('f', 17, struct procmap_query)
#define PROCMAP_QUERY_VMA_READABLE 0x01
#define PROCMAP_QUERY_VMA_WRITABLE 0x02
#define PROCMAP_QUERY_VMA_EXECUTABLE 0x04
#define PROCMAP_QUERY_VMA_SHARED 0x08
#endif

#define MEMFD_PREFIX "/memfd:"

/* /proc/self/maps before 6.11: find the line of the VMA covering @addr. */
static int store_vma_text(uintptr_t addr, uintptr_t *end)
{
	char line[512], perms[8], path[256];
	unsigned long s, e;
	int ret = -EINVAL;
	FILE *f = fopen("/proc/self/maps", "re");

	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		path[0] = 0;
		if (sscanf(line, "%lx-%lx %7s %*s %*s %*s %255s", &s, &e, perms, path) < 3)
			continue;
		if (addr < s || addr >= e)
			continue;
		if (!strcmp(perms, "rw-p") && !strncmp(path, MEMFD_PREFIX, strlen(MEMFD_PREFIX))) {
			*end = e;
			ret = 0;
		}
		break;
	}
	fclose(f);
	return ret;
}

/*
 * PROCMAP_QUERY (6.11; about a microsecond) for the VMA covering @addr: 0
 * if it is a read-write, private, non-executable memfd mapping (*q tells
 * the rest), -EINVAL if it is not or nothing is mapped there, -ENOTTY if the
 * kernel cannot answer (before 6.11), other -errno.
 */
static int memfd_vma_query_fd(int *maps_fd, uintptr_t addr, struct procmap_query *q)
{
	const uint64_t rw = PROCMAP_QUERY_VMA_READABLE | PROCMAP_QUERY_VMA_WRITABLE;
	char name[256];

	if (*maps_fd < 0) {
		*maps_fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
		if (*maps_fd < 0)
			return -errno;
	}
	memset(q, 0, sizeof(*q));
	q->size = sizeof(*q);
	q->query_addr = addr;
	q->vma_name_addr = (uintptr_t)name;
	q->vma_name_size = sizeof(name);
	if (ioctl(*maps_fd, PROCMAP_QUERY, q) < 0) {
		if (errno == ENOENT)
			return -EINVAL; /* nothing mapped at @addr */
		if (errno == ENOTTY || errno == EINVAL || errno == ENAMETOOLONG)
			return -ENOTTY; /* no PROCMAP_QUERY, or not this struct */
		return -errno;
	}
	q->vma_name_addr = 0; /* @name goes out of scope */
	if (q->vma_start > addr || q->vma_flags != rw || !q->inode || !q->vma_name_size ||
	    strncmp(name, MEMFD_PREFIX, sizeof(MEMFD_PREFIX) - 1))
		return -EINVAL;
	return 0;
}

static int memfd_vma_query(struct ksmu_merger *m, uintptr_t addr, struct procmap_query *q)
{
	return memfd_vma_query_fd(&m->maps_fd, addr, q);
}

int ksmu_merge_memfd_vma(int *maps_fd, uintptr_t addr, size_t len)
{
	struct procmap_query q;
	int err = memfd_vma_query_fd(maps_fd, addr, &q);

	if (err)
		return err;
	return q.vma_end < addr + len ? -EINVAL : 0;
}

/*
 * Is [addr, addr+len) inside one read-write, private, non-executable memfd
 * VMA?  memfd_vma_query(), else (before 6.11) a scan of /proc/self/maps.
 * Return: 0, -EINVAL, or another -errno.
 */
static int store_vma(struct ksmu_merger *m, uintptr_t addr, size_t len)
{
	struct procmap_query q;
	uintptr_t end = 0;
	int err = memfd_vma_query(m, addr, &q);

	if (!err)
		return q.vma_end < addr + len ? -EINVAL : 0;
	if (err != -ENOTTY)
		return err;
	err = store_vma_text(addr, &end);
	if (err)
		return err;
	return addr + len <= end ? 0 : -EINVAL;
}

int ksmu_merge_store_page_at(struct ksmu_merger *m, uintptr_t addr, uint64_t *ino,
			     uint64_t *pgoff)
{
	struct procmap_query q;
	int err = memfd_vma_query(m, addr, &q);

	if (err)
		return err;
	*ino = q.inode;
	*pgoff = (q.vma_offset + (addr - q.vma_start)) >> KSMU_PAGE_SHIFT;
	return 0;
}

static int uffd_register_wp(int uffd, uintptr_t start, size_t len, bool minor)
{
	struct uffdio_register reg;

	memset(&reg, 0, sizeof(reg));
	reg.range.start = start;
	reg.range.len = len;
	reg.mode = UFFDIO_REGISTER_MODE_WP | (minor ? UFFDIO_REGISTER_MODE_MINOR : 0);
	if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0)
		return -errno;
	return 0;
}

static int uffd_writeprotect(int uffd, uintptr_t start, size_t len)
{
	struct uffdio_writeprotect wp;

	memset(&wp, 0, sizeof(wp));
	wp.range.start = start;
	wp.range.len = len;
	wp.mode = UFFDIO_WRITEPROTECT_MODE_WP; /* DONTWAKE with WP: EINVAL */
	if (ioctl(uffd, UFFDIO_WRITEPROTECT, &wp) < 0)
		return -errno;
	return 0;
}

/* The unmerge uffd; with hooks it reports REMOVE events (ZAPS). */
static int unmerge_open(struct ksmu_merger *m)
{
	uint64_t feat = UFFD_FEATURE_WP_HUGETLBFS_SHMEM | UFFD_FEATURE_WP_UNPOPULATED;
	int fd;

	if (m->wp_uffd >= 0)
		return 0;
	if (m->hooks)
		feat |= UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_MINOR_SHMEM;
	fd = ksmu_probe_uffd_open_kernel_faults(feat, NULL);
	if (fd == -EINVAL)
		return -EOPNOTSUPP; /* no uffd-wp on shmem (before 5.19) */
	if (fd < 0)
		return fd;
	m->wp_uffd = fd;
	return 0;
}

size_t ksmu_merger_own_ranges(const struct ksmu_merger *m, struct ksmu_range *out, size_t max)
{
	size_t n = 0;

	if (m->scratch && n < max) {
		out[n].start = m->scratch;
		out[n++].end = m->scratch + (m->scratch_pages << KSMU_PAGE_SHIFT);
	}
	if (m->unmerge_scratch && n < max) {
		out[n].start = m->unmerge_scratch;
		out[n++].end = m->unmerge_scratch + ((size_t)KSMU_MERGE_MAX_RUN << KSMU_PAGE_SHIFT);
	}
	return n;
}

/* Open the unmerge machinery at first use: it is not needed to merge. */
static int unmerge_setup(struct ksmu_merger *m)
{
	size_t len = (size_t)KSMU_MERGE_MAX_RUN << KSMU_PAGE_SHIFT;
	void *p;
	int err;

	err = unmerge_open(m);
	if (err)
		return err;
	if (!m->unmerge_scratch) {
		/*
		 * Plain private anonymous read-write memory, no advice: the
		 * flags of this VMA become those of every unmerged range, and
		 * must be those of ordinary application memory (no
		 * MAP_NORESERVE, no MADV_DONTFORK or MADV_NOHUGEPAGE).
		 */
		p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			return -errno;
		m->unmerge_scratch = (uintptr_t)p;
	}
	if (m->pagemap_fd < 0)
		m->pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC); /* stats only */
	return 0;
}

static int unmerge_check(const struct ksmu_merger *m, uintptr_t addr, size_t n)
{
	size_t len = n << KSMU_PAGE_SHIFT;
	uintptr_t frame = (uintptr_t)__builtin_frame_address(0);

	if (m->uffd < 0)
		return -EBADF;
	if (m->fork_gen != atomic_load(&fork_gen))
		return -ECHILD;
	if (n > KSMU_MERGE_MAX_RUN)
		return -E2BIG;
	if (!n || (addr & ~KSMU_PAGE_MASK) || addr + len < addr)
		return -EINVAL;
	/* what the thread writes during the window must lie outside the range */
	if (overlaps(addr, len, (uintptr_t)m, sizeof(*m)) ||
	    overlaps(addr, len, frame - STACK_GUARD, STACK_GUARD + KSMU_PAGE_SIZE) ||
	    overlaps(addr, len, (uintptr_t)&errno, sizeof(errno)))
		return -EDEADLK;
	if (overlaps(addr, len, m->scratch, m->scratch_pages << KSMU_PAGE_SHIFT))
		return -EINVAL;
	return 0;
}

/*
 * Set bit i of @mask for each page i of the range with nothing mapped: no
 * page, no swap or migration entry (a uffd-wp marker reads as "swap"; the
 * caller's zap set knows those pages).  Return: 0 or -errno.
 */
static int absent_pages(int pagemap_fd, uintptr_t addr, size_t n, uint64_t *mask)
{
	uint64_t e[64];
	size_t i, done = 0, chunk;

	if (pagemap_fd < 0)
		return -EBADF;
	while (done < n) {
		chunk = KSMU_MIN(n - done, sizeof(e) / sizeof(e[0]));
		if (pread(pagemap_fd, e, chunk * sizeof(e[0]),
			  (off_t)(((addr >> KSMU_PAGE_SHIFT) + done) * sizeof(e[0]))) !=
		    (ssize_t)(chunk * sizeof(e[0])))
			return -EIO;
		for (i = 0; i < chunk; i++)
			if (!(e[i] & (KSMU_PM_PRESENT | KSMU_PM_SWAP)))
				mask[(done + i) / 64] |= 1ULL << ((done + i) % 64);
		done += chunk;
	}
	return 0;
}

/* Pages of the range that are COW copies (present, not a file page). */
static size_t count_private(int pagemap_fd, uintptr_t addr, size_t n)
{
	uint64_t e[64];
	size_t i, done = 0, c = 0, chunk;

	if (pagemap_fd < 0)
		return 0;
	while (done < n) {
		chunk = KSMU_MIN(n - done, sizeof(e) / sizeof(e[0]));
		if (pread(pagemap_fd, e, chunk * sizeof(e[0]),
			  (off_t)(((addr >> KSMU_PAGE_SHIFT) + done) * sizeof(e[0]))) !=
		    (ssize_t)(chunk * sizeof(e[0])))
			return c;
		for (i = 0; i < chunk; i++)
			c += (e[i] & (KSMU_PM_PRESENT | KSMU_PM_FILE)) == KSMU_PM_PRESENT;
		done += chunk;
	}
	return c;
}

int ksmu_unmerge_run(struct ksmu_merger *m, uintptr_t addr, size_t n)
{
	return ksmu_unmerge_run_flags(m, addr, n, 0);
}

int ksmu_unmerge_run_flags(struct ksmu_merger *m, uintptr_t addr, size_t n, unsigned int flags)
{
	const size_t slots = KSMU_MERGE_MAX_RUN;
	uint64_t zmask[MASK_WORDS] = {0};
	bool hooked = m->hooks != NULL, minor;
	size_t len = n << KSMU_PAGE_SHIFT, k, priv, nio, want;
	struct iovec liov[KSMU_MERGE_MAX_RUN], riov[KSMU_MERGE_MAX_RUN];
	uintptr_t slot;
	uint64_t t0, dt;
	ssize_t got;
	void *p;
	long r;
	int err;

	err = unmerge_check(m, addr, n);
	if (!err)
		err = unmerge_setup(m);
	if (!err)
		err = store_vma(m, addr, len);
	if (err)
		goto out_err;

	/*
	 * The slot: adjacent addresses get adjacent slots (see VMAs above).
	 * Between windows the scratch area is one VMA with one anon_vma whose
	 * pages are all empty (each window refills the hole it leaves).
	 */
	k = (addr >> KSMU_PAGE_SHIFT) % slots;
	if (k + n > slots)
		k = slots - n;
	slot = m->unmerge_scratch + (k << KSMU_PAGE_SHIFT);

	if (hooked)
		pthread_mutex_lock(&m->events_lock);
	window_enter();
	t0 = now_ns();
	/*
	 * (1) Writers of the range wait from here on (see THE UNMERGE WINDOW).
	 * With hooks and ABSENT_IS_ZERO also readers of pages with nothing
	 * mapped (MINOR): the window may then read REMOVEs early (ZAPS).
	 */
	minor = hooked && (flags & KSMU_UNMERGE_ABSENT_IS_ZERO);
	if (minor) {
		/*
		 * The hand-over from the tracker to @wp_uffd (ZAPS, "the
		 * hand-over").  zap_lock keeps the tracker's reader from
		 * reading from here until the range is registered here: an
		 * madvise() that saw the tracker's VMA stays blocked in its
		 * REMOVE, and zaps only once @wp_uffd (MINOR) holds the range.
		 * One whose REMOVE was read already may still be on its way to
		 * the zap: its range is in the zap set (nothing faulted it back
		 * since the caller's pre-fault), so go back and let it finish.
		 */
		m->hooks->zap_lock(m->hooks->arg, true);
		if (!(flags & KSMU_UNMERGE_IGNORE_ZAPS)) {
			m->hooks->zap_test(m->hooks->arg, addr, n, zmask);
			if (mask_any(zmask, n)) {
				m->hooks->zap_lock(m->hooks->arg, false);
				window_exit();
				pthread_mutex_unlock(&m->events_lock);
				m->stats.unmerge_retries++;
				return -EAGAIN;
			}
		}
		m->hooks->disarm(m->hooks->arg, addr, len); /* the caller's tracker lets go */
	}
	err = uffd_register_wp(m->wp_uffd, addr, len, minor);
	if (minor)
		m->hooks->zap_lock(m->hooks->arg, false);
	if (err) {
		if (minor && m->hooks->arm(m->hooks->arg, addr, len))
			m->stats.errors++; /* the caller re-arms after the window */
		window_exit();
		if (hooked)
			pthread_mutex_unlock(&m->events_lock);
		if (err == -EBUSY)
			err = -EEXIST;
		goto out_err;
	}
	/*
	 * (1b) Pages the application dropped become zeros (ZAPS): those it
	 * announced to the tracker, and, if the caller faulted everything
	 * else in, those with nothing mapped.  No page can be dropped from
	 * here to (3) without a REMOVE on @wp_uffd that waits for us.
	 */
	if (hooked) {
		err = settle(m, m->scratch, addr, n, zmask, minor);
		if (err)
			goto out_undo;
	}
	if (flags & KSMU_UNMERGE_ABSENT_IS_ZERO) {
		err = absent_pages(m->pagemap_fd, addr, n, zmask);
		if (err)
			goto out_undo;
	}
	/*
	 * EAGAIN: a REMOVE of the range is waiting.  With MINOR registered it
	 * is read now: its page is zero in the copy, and whoever reads it after
	 * the zap waits (MINOR) for the wake.  Without, undo (see ZAPS).
	 */
	for (k = 0; (err = uffd_writeprotect(m->wp_uffd, addr, len)) == -EAGAIN && minor &&
		    k < SETTLE_TRIES * 50;
	     k++) {
		drain(m, m->wp_uffd, addr, n, zmask);
		sched_yield();
	}
	if (err) {
		if (err == -EAGAIN && hooked)
			m->stats.unmerge_retries++;
		goto out_undo;
	}
	priv = count_private(m->pagemap_fd, addr, n);

	/*
	 * (2) The content, as the application sees it now.  Pages dropped are
	 * not read: with MINOR registered, the read would wait for this thread.
	 */
	for (k = 0, nio = 0; k < n; k++) {
		if (mask_bit(zmask, k))
			continue;
		if (nio && (uintptr_t)riov[nio - 1].iov_base + riov[nio - 1].iov_len ==
			       addr + (k << KSMU_PAGE_SHIFT)) {
			riov[nio - 1].iov_len += KSMU_PAGE_SIZE;
			liov[nio - 1].iov_len += KSMU_PAGE_SIZE;
			continue;
		}
		riov[nio].iov_base = (void *)(addr + (k << KSMU_PAGE_SHIFT));
		riov[nio].iov_len = KSMU_PAGE_SIZE;
		liov[nio].iov_base = (void *)(slot + (k << KSMU_PAGE_SHIFT));
		liov[nio].iov_len = KSMU_PAGE_SIZE;
		nio++;
	}
	for (k = 0, want = 0; k < nio; k++)
		want += riov[k].iov_len;
	got = 0;
	for (k = 0; k < nio && got >= 0; k += IOV_BATCH) {
		ssize_t g = process_vm_readv(getpid(), liov + k, KSMU_MIN(nio - k, IOV_BATCH),
					     riov + k, KSMU_MIN(nio - k, IOV_BATCH), 0);

		got = g < 0 ? g : got + g;
	}
	if (got != (ssize_t)want) {
		err = got < 0 ? -errno : -EFAULT;
		if (err == -ENOMEM)
			err = -EFAULT; /* "no such page": the range went away */
		goto out_undo;
	}
	for (k = 0; k < n; k++)
		if (mask_bit(zmask, k))
			memset((void *)(slot + (k << KSMU_PAGE_SHIFT)), 0, KSMU_PAGE_SIZE);

	/*
	 * (3) Replace, atomically under the mmap lock.  Without the C library's
	 * wrapper: sanitizer runtimes would model it as a write of the range by
	 * this thread (see map_store()).
	 */
	r = syscall(SYS_mremap, slot, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, addr);
	if (r == -1) {
		err = -errno;
		goto out_undo;
	}
	/* (3b) REMOVEs now drop the anonymous pages (ZAPS). */
	if (hooked)
		drain(m, m->wp_uffd, 0, 0, NULL);
	/* (4) The waiting writers retry on the anonymous pages. */
	uffd_wake(m->wp_uffd, addr, len);
	dt = now_ns() - t0;
	window_exit();
	if (hooked)
		pthread_mutex_unlock(&m->events_lock);

	/*
	 * Refill the hole the slot left: a new anonymous VMA with no anon_vma
	 * yet and continuous page offsets merges with the scratch area on both
	 * sides, so the area stays one VMA with one anon_vma, and the next
	 * ranges unmerged beside this one merge with it.  Without the refill,
	 * a slot mapped between two holes would get an anon_vma of its own.
	 * If it fails, start a new scratch area next time.
	 */
	p = mmap((void *)slot, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
		 -1, 0);
	if (p == MAP_FAILED) {
		munmap((void *)m->unmerge_scratch, slots << KSMU_PAGE_SHIFT);
		m->unmerge_scratch = 0;
	}

	m->stats.pages_unmerged += n;
	m->stats.runs_unmerged++;
	m->stats.unmerged_private += priv;
	m->stats.unmerge_ns += dt;
	return 0;

out_undo:
	/*
	 * Pages dropped during the window become zeros before the sleepers go
	 * (they would fault the store page back once the range is no longer
	 * registered MINOR).  EEXIST: a page is there already.
	 */
	if (minor)
		m->hooks->zap_lock(m->hooks->arg, true);
	for (k = 0; minor && k < n; k++) {
		struct uffdio_copy cp;

		if (!mask_bit(zmask, k))
			continue;
		memset(&cp, 0, sizeof(cp));
		cp.dst = addr + (k << KSMU_PAGE_SHIFT);
		cp.src = (uintptr_t)zero_page;
		cp.len = KSMU_PAGE_SIZE;
		cp.mode = UFFDIO_COPY_MODE_DONTWAKE;
		/* resolved: a later window must not take the page for dropped */
		if (ioctl(m->wp_uffd, UFFDIO_COPY, &cp) == 0)
			m->hooks->zap_del(m->hooks->arg, cp.dst, cp.dst + KSMU_PAGE_SIZE);
	}
	if (minor)
		m->hooks->zap_lock(m->hooks->arg, false);
	/*
	 * UFFDIO_UNREGISTER clears the WP bits and markers and wakes the
	 * writers; they retry on the store mapping, as if nothing happened.
	 * The wake covers a range the application changed meanwhile.
	 */
	uffd_unregister(m->wp_uffd, addr, len);
	if (hooked) {
		/* Store mapping again: armed MINOR before a REMOVE is let go (ZAPS). */
		if (m->hooks->arm(m->hooks->arg, addr, len))
			m->stats.errors++; /* the caller re-arms after the window */
		drain(m, m->wp_uffd, 0, 0, NULL);
	}
	uffd_wake(m->wp_uffd, addr, len);
	window_exit();
	if (hooked)
		pthread_mutex_unlock(&m->events_lock);
	/* (2) may have filled the slot: empty it (our own memory, cannot fail) */
	KSMU_BUG_ON(madvise((void *)slot, len, MADV_DONTNEED) < 0);
out_err:
	m->stats.errors++;
	return err;
}

int ksmu_unmerge_page(struct ksmu_merger *m, uintptr_t addr)
{
	return ksmu_unmerge_run(m, addr, 1);
}
