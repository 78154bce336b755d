/* SPDX-License-Identifier: MIT */
/*
 * uffd.c - userfaultfd set-up for dirty tracking.
 *
 * DESIGN
 *   Registered regions are registered with one userfaultfd in
 *   UFFDIO_REGISTER_MODE_WP, opened with UFFD_FEATURE_WP_ASYNC: the kernel
 *   resolves write-protect faults by itself (about 13.5 us, no round trip to
 *   user space) and only clears the page's uffd-wp bit, which PAGEMAP_SCAN
 *   then reports as PAGE_IS_WRITTEN (pagemap.c).  UFFD_FEATURE_WP_UNPOPULATED
 *   makes a first write to a page that was not present count as well.  A
 *   region whose registration fails (an incompatible mapping appeared) is
 *   tracked by checksum instead; nothing else changes for it.
 *
 *   Registration alone protects nothing: present pages read as "written"
 *   until the first PAGEMAP_SCAN with PM_SCAN_WP_MATCHING protects them,
 *   which is exactly what the scanner needs (every page is hashed on its
 *   first visit).
 *
 *   With events (EVENT_REMOVE, EVENT_UNMAP, EVENT_REMAP) the same uffd
 *   also tells the engine at once when the application zaps, unmaps or
 *   moves registered memory, so records never outlive their pages and a
 *   region follows mremap() as KSM's VM_MERGEABLE follows its VMA.  The
 *   kernel makes the application's system call wait until the event has
 *   been *read*, so events are only enabled while a reader thread exists
 *   (engine.c); reading is done without any lock.
 *
 *   Merging (dedup.c) needs more of the same descriptor, so the engine
 *   asks for it when it can have it: a descriptor opened WITHOUT
 *   UFFD_USER_MODE_ONLY (faults the kernel takes on the process's behalf
 *   wait too) with UFFD_FEATURE_MINOR_SHMEM.  Store mappings are then
 *   registered WP | MINOR: WP (async) reports a copy-on-write break as a
 *   write, MINOR turns an access to a store page whose PTE is empty (after
 *   MADV_DONTNEED, or a swap-out) into a fault message that the reader
 *   thread resolves (zeros after a DONTNEED, the store page otherwise).
 *
 *   cow_policy=1 (cow.c) needs a write to a merged page to stop in user
 *   space, which an async-WP descriptor never does (WP_ASYNC is per
 *   descriptor).  The store mappings then go to a second descriptor,
 *   @cow_fd: the same events and MINOR, synchronous WP.  Every call that
 *   registers, unregisters or resolves a store mapping takes the store's
 *   descriptor (ksmu_tracker_store_fd()); anonymous memory stays on @fd.
 *
 * LOCKING / THREADS
 *   Register/unregister are called with the engine lock held;
 *   ksmu_tracker_read_fd() is called by the reader thread, lock-free.
 *
 * KERNEL REQUIREMENTS
 *   userfaultfd with UFFD_FEATURE_WP_ASYNC (6.7) and WP_UNPOPULATED (6.4):
 *   probe.c uffd_wp_async.  Without them the engine uses checksums.
 *   Events: uffd_events (4.11), refused for unprivileged FORK only, which
 *   is not used.
 */
#include <errno.h>
#include <sched.h>
#include <string.h>
#include <unistd.h>

#include "compat.h"
#include "probe.h"
#include "uffd.h"
#include "util.h"

#define TRACK_FEATURES (UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED)
#define EVENT_FEATURES                                                                             \
	(UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMAP)

int ksmu_tracker_open(struct ksmu_tracker *t, bool events)
{
	uint64_t want = TRACK_FEATURES | (events ? EVENT_FEATURES : 0);
	uint64_t got = 0;
	int fd = -1;

	t->fd = -1;
	t->features = 0;
	t->events = false;
	t->minor = false;
	t->cow_fd = -1;
	t->cow = false;
	/*
	 * MINOR faults must be answered by a reader: only with events (which
	 * imply a reader thread), and only on a descriptor that also catches
	 * the kernel's own accesses (else read(2) into a zapped merged page
	 * would fail with EFAULT instead of waiting for the answer).
	 */
	if (events) {
		fd = ksmu_probe_uffd_open_kernel_faults(want | UFFD_FEATURE_MINOR_SHMEM, &got);
		if (fd >= 0)
			t->minor = true;
	}
	if (fd < 0)
		fd = ksmu_probe_uffd_open(want, &got);
	if (fd < 0)
		return fd;
	t->fd = fd;
	t->features = got;
	t->events = events;
	return 0;
}

int ksmu_tracker_open_cow(struct ksmu_tracker *t)
{
	const uint64_t need = UFFD_FEATURE_MINOR_SHMEM | UFFD_FEATURE_WP_HUGETLBFS_SHMEM;
	uint64_t got = 0;
	int fd;

	if (!t->minor || !t->events)
		return -EOPNOTSUPP;
	if (t->cow_fd >= 0)
		return 0;
	fd = ksmu_probe_uffd_open_kernel_faults(need | EVENT_FEATURES, &got);
	if (fd < 0)
		return fd;
	if ((got & (need | EVENT_FEATURES)) != (need | EVENT_FEATURES)) {
		close(fd);
		return -EOPNOTSUPP;
	}
	__atomic_store_n(&t->cow_fd, fd, __ATOMIC_RELEASE); /* the reader polls it */
	return 0;
}

int ksmu_tracker_read_fd(int fd, struct ksmu_uffd_event *ev, size_t max)
{
	struct uffd_msg msg[16];
	size_t n = 0;
	ssize_t got;
	size_t i;

	got = read(fd, msg, sizeof(msg[0]) * KSMU_MIN(max, KSMU_ARRAY_SIZE(msg)));
	if (got < 0)
		return errno == EAGAIN ? 0 : -errno;
	for (i = 0; i < (size_t)got / sizeof(msg[0]); i++) {
		const struct uffd_msg *m = &msg[i];

		switch (m->event) {
		case UFFD_EVENT_REMOVE:
		case UFFD_EVENT_UNMAP:
			ev[n].kind =
			    m->event == UFFD_EVENT_REMOVE ? KSMU_UFFD_REMOVE : KSMU_UFFD_UNMAP;
			ev[n].start = m->arg.remove.start;
			ev[n].end = m->arg.remove.end;
			ev[n].to = 0;
			n++;
			break;
		case UFFD_EVENT_REMAP:
			ev[n].kind = KSMU_UFFD_REMAP;
			ev[n].start = m->arg.remap.from;
			ev[n].end = m->arg.remap.from + m->arg.remap.len;
			ev[n].to = m->arg.remap.to;
			n++;
			break;
		case UFFD_EVENT_PAGEFAULT:
			/* MINOR (store mappings); on @cow_fd also WP and MISSING (cow.c) */
			ev[n].kind = KSMU_UFFD_FAULT;
			ev[n].start = m->arg.pagefault.address & ~(uint64_t)(KSMU_PAGE_SIZE - 1);
			ev[n].end = ev[n].start + KSMU_PAGE_SIZE;
			ev[n].to = m->arg.pagefault.flags;
			n++;
			break;
		default:
			break;
		}
	}
	return (int)n;
}

void ksmu_tracker_close(struct ksmu_tracker *t)
{
	if (t->fd >= 0)
		close(t->fd);
	if (t->cow_fd >= 0)
		close(t->cow_fd);
	t->fd = -1;
	t->cow_fd = -1;
	t->cow = false;
}

static int register_mode(int fd, uintptr_t start, size_t len, uint64_t mode)
{
	struct uffdio_register reg;

	if (fd < 0)
		return -EBADF;
	memset(&reg, 0, sizeof(reg));
	reg.range.start = start;
	reg.range.len = len;
	reg.mode = mode;
	if (ioctl(fd, UFFDIO_REGISTER, &reg) < 0)
		return -errno;
	return 0;
}

int ksmu_tracker_register(struct ksmu_tracker *t, uintptr_t start, size_t len)
{
	return register_mode(t->fd, start, len, UFFDIO_REGISTER_MODE_WP);
}

int ksmu_tracker_register_store(struct ksmu_tracker *t, uintptr_t start, size_t len)
{
	struct uffdio_writeprotect wp;
	int fd = ksmu_tracker_store_fd(t);
	int ret, tries;

	if (!t->minor)
		return -EOPNOTSUPP;
	ret = register_mode(fd, start, len, UFFDIO_REGISTER_MODE_WP | UFFDIO_REGISTER_MODE_MINOR);
	if (ret)
		return ret;
	/*
	 * Protect now, so that the next pass reports exactly the pages written
	 * (copied by the kernel) since the merge, not every fresh page; on
	 * @cow_fd so that the first write stops in user space (cow.c).
	 */
	memset(&wp, 0, sizeof(wp));
	wp.range.start = start;
	wp.range.len = len;
	wp.mode = UFFDIO_WRITEPROTECT_MODE_WP;
	/*
	 * EAGAIN: an event (an application munmap, madvise...) is waiting to
	 * be read; the reader thread reads it without any lock we hold.
	 */
	for (tries = 0; ioctl(fd, UFFDIO_WRITEPROTECT, &wp) < 0; tries++) {
		if (errno != EAGAIN || tries >= 10000)
			return -errno;
		sched_yield();
	}
	return 0;
}

int ksmu_tracker_resolve_minor(struct ksmu_tracker *t, int fd, uintptr_t addr, bool zero)
{
	static const uint8_t zeros[KSMU_PAGE_SIZE] __attribute__((aligned(4096)));
	/* On @cow_fd the page stays write-protected: its next write stops too. */
	const int cow_fd = __atomic_load_n(&t->cow_fd, __ATOMIC_ACQUIRE);
	const bool wp = cow_fd >= 0 && fd == cow_fd;
	int err;

	if (zero) {
		/*
		 * MAP_PRIVATE shmem: UFFDIO_COPY installs a private anonymous
		 * page, as the kernel's own COW would; the store is untouched.
		 */
		struct uffdio_copy cp;

		memset(&cp, 0, sizeof(cp));
		cp.dst = addr;
		cp.src = (uintptr_t)zeros;
		cp.len = KSMU_PAGE_SIZE;
		cp.mode = wp ? UFFDIO_COPY_MODE_WP : 0;
		if (ioctl(fd, UFFDIO_COPY, &cp) == 0)
			return 0;
	} else {
		struct uffdio_continue co;

		memset(&co, 0, sizeof(co));
		co.range.start = addr;
		co.range.len = KSMU_PAGE_SIZE;
		co.mode = wp ? UFFDIO_CONTINUE_MODE_WP : 0;
		if (ioctl(fd, UFFDIO_CONTINUE, &co) == 0)
			return 0;
	}
	/*
	 * EEXIST: somebody mapped the page meanwhile; ENOENT/EINVAL: the range
	 * changed.  The faulting thread must retry in any case.
	 */
	err = -errno;
	{
		struct uffdio_range range = {.start = addr, .len = KSMU_PAGE_SIZE};

		ioctl(fd, UFFDIO_WAKE, &range);
	}
	return err;
}

int ksmu_tracker_unregister_store(struct ksmu_tracker *t, uintptr_t start, size_t len)
{
	struct uffdio_range range = {.start = start, .len = len};
	int fd = ksmu_tracker_store_fd(t);

	if (fd < 0)
		return -EBADF;
	if (ioctl(fd, UFFDIO_UNREGISTER, &range) < 0)
		return -errno;
	return 0;
}

int ksmu_tracker_unregister(struct ksmu_tracker *t, uintptr_t start, size_t len)
{
	struct uffdio_range range = {.start = start, .len = len};

	if (t->fd < 0)
		return -EBADF;
	if (ioctl(t->fd, UFFDIO_UNREGISTER, &range) < 0)
		return -errno;
	return 0;
}
