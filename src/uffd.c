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
 * LOCKING / THREADS
 *   Called with the engine lock held.  No thread ever reads the fd: async
 *   write-protect produces no messages.
 *
 * KERNEL REQUIREMENTS
 *   userfaultfd with UFFD_FEATURE_WP_ASYNC (6.7) and WP_UNPOPULATED (6.4):
 *   probe.c uffd_wp_async.  Without them the engine uses checksums.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "compat.h"
#include "probe.h"
#include "uffd.h"

int ksmu_tracker_open(struct ksmu_tracker *t)
{
	uint64_t got = 0;
	int fd;

	t->fd = -1;
	t->features = 0;
	fd = ksmu_probe_uffd_open(UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED, &got);
	if (fd < 0)
		return fd;
	t->fd = fd;
	t->features = got;
	return 0;
}

void ksmu_tracker_close(struct ksmu_tracker *t)
{
	if (t->fd >= 0)
		close(t->fd);
	t->fd = -1;
}

int ksmu_tracker_register(struct ksmu_tracker *t, uintptr_t start, size_t len)
{
	struct uffdio_register reg;

	if (t->fd < 0)
		return -EBADF;
	memset(&reg, 0, sizeof(reg));
	reg.range.start = start;
	reg.range.len = len;
	reg.mode = UFFDIO_REGISTER_MODE_WP;
	if (ioctl(t->fd, UFFDIO_REGISTER, &reg) < 0)
		return -errno;
	return 0;
}

int ksmu_tracker_unregister(struct ksmu_tracker *t, uintptr_t start, size_t len)
{
	struct uffdio_range range = { .start = start, .len = len };

	if (t->fd < 0)
		return -EBADF;
	if (ioctl(t->fd, UFFDIO_UNREGISTER, &range) < 0)
		return -errno;
	return 0;
}
