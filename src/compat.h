/* SPDX-License-Identifier: MIT */
/*
 * compat.h - kernel uapi definitions missing from the build host's headers,
 * and thin system-call wrappers.
 *
 * DESIGN
 *   The project builds against Debian 12 headers (linux uapi 6.1) but runs
 *   on newer kernels (6.18 on the project's machines).  Everything newer than
 *   6.1 that the engine uses is defined here, each guarded by #ifndef so that
 *   a newer header wins.  Values are taken from the kernel's documented ABI
 *   (Documentation/admin-guide/mm/pagemap.rst, userfaultfd.rst, prctl(2)).
 *   Whether the running kernel actually offers a feature is decided once, at
 *   run time, by probe.c; nothing here implies availability.
 *
 *   The wrappers return -errno on failure (never set errno as the only output
 *   channel) so that callers follow the library's error convention.
 */
#ifndef KSMU_COMPAT_H
#define KSMU_COMPAT_H

#include <errno.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>
#include <linux/types.h>
#include <linux/userfaultfd.h>

/* ---- userfaultfd (linux/userfaultfd.h, 6.4 .. 6.8) ---- */
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13) /* 6.4 */
#endif
#ifndef UFFD_FEATURE_POISON
#define UFFD_FEATURE_POISON (1 << 14) /* 6.6 */
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15) /* 6.7 */
#endif
#ifndef UFFD_FEATURE_MOVE
#define UFFD_FEATURE_MOVE (1 << 16) /* 6.8 */
#endif
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef UFFDIO_CONTINUE_MODE_WP
#define UFFDIO_CONTINUE_MODE_WP ((__u64)1 << 1) /* 6.3 */
#endif
#ifndef _UFFDIO_MOVE
#define _UFFDIO_MOVE (0x05)
struct uffdio_move {
	__u64 dst;
	__u64 src;
	__u64 len;
#define UFFDIO_MOVE_MODE_DONTWAKE ((__u64)1 << 0)
#define UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES ((__u64)1 << 1)
	__u64 mode;
	__s64 move;
};
#define UFFDIO_MOVE _IOWR(UFFDIO, _UFFDIO_MOVE, struct uffdio_move)
#endif

/* ---- PAGEMAP_SCAN (linux/fs.h, 6.7) ---- */
#ifndef PAGEMAP_SCAN
#define PAGE_IS_WPALLOWED (1 << 0)
#define PAGE_IS_WRITTEN (1 << 1)
#define PAGE_IS_FILE (1 << 2)
#define PAGE_IS_PRESENT (1 << 3)
#define PAGE_IS_SWAPPED (1 << 4)
#define PAGE_IS_PFNZERO (1 << 5)
#define PAGE_IS_HUGE (1 << 6)
#define PAGE_IS_SOFT_DIRTY (1 << 7)

struct page_region {
	__u64 start;
	__u64 end;
	__u64 categories;
};

#define PM_SCAN_WP_MATCHING (1 << 0)
#define PM_SCAN_CHECK_WPASYNC (1 << 1)

struct pm_scan_arg {
	__u64 size;
	__u64 flags;
	__u64 start;
	__u64 end;
	__u64 walk_end;
	__u64 vec;
	__u64 vec_len;
	__u64 max_pages;
	__u64 category_inverted;
	__u64 category_mask;
	__u64 category_anyof_mask;
	__u64 return_mask;
};
#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#endif

/* ---- /proc/PID/pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst) ---- */
#define KSMU_PM_PFN_MASK ((UINT64_C(1) << 55) - 1)
#define KSMU_PM_SOFT_DIRTY (UINT64_C(1) << 55)
#define KSMU_PM_EXCLUSIVE (UINT64_C(1) << 56)
#define KSMU_PM_UFFD_WP (UINT64_C(1) << 57)
#define KSMU_PM_FILE (UINT64_C(1) << 61)
#define KSMU_PM_SWAP (UINT64_C(1) << 62)
#define KSMU_PM_PRESENT (UINT64_C(1) << 63)

/* ---- prctl (linux/prctl.h, 6.4) ---- */
#ifndef PR_SET_MEMORY_MERGE
#define PR_SET_MEMORY_MERGE 67
#define PR_GET_MEMORY_MERGE 68
#endif

/* ---- madvise advice (asm-generic/mman-common.h) ---- */
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/* ---- system-call wrappers: 0 or a count on success, -errno on failure ---- */
static inline int ksmu_sys_userfaultfd(int flags)
{
	long r = syscall(SYS_userfaultfd, flags);
	return r < 0 ? -errno : (int)r;
}

static inline int ksmu_sys_pidfd_open(pid_t pid, unsigned int flags)
{
	long r = syscall(SYS_pidfd_open, pid, flags);
	return r < 0 ? -errno : (int)r;
}

static inline long ksmu_sys_process_madvise(int pidfd, const struct iovec *iov, size_t n,
					    int advice, unsigned int flags)
{
	long r = syscall(SYS_process_madvise, pidfd, iov, n, advice, flags);
	return r < 0 ? -errno : r;
}

#endif /* KSMU_COMPAT_H */
