/* SPDX-License-Identifier: MIT */
/*
 * t_merge.h - helpers shared by the merge-window, merge-pin and
 * unmerge-window tests: merger set-up (or a skip with the reason), and the
 * self-checking sequence values the race stress tests write and verify.
 */
#ifndef KSMU_T_MERGE_H
#define KSMU_T_MERGE_H

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "merge.h"
#include "t_mem.h"
#include "test.h"

/* Initialise @m, or skip the test (77) where the kernel or privileges lack it. */
static inline void t_merger_init(struct ksmu_merger *m)
{
	int err;

	setvbuf(stdout, NULL, _IOLBF, 0);
	err = ksmu_merger_init(m);
	if (err == -EOPNOTSUPP)
		t_skip("the kernel lacks UFFDIO_MOVE (6.8)");
	if (err == -EPERM || err == -EACCES || err == -ENOSYS)
		t_skip("no userfaultfd for kernel-mode faults (needs root or "
		       "vm.unprivileged_userfaultfd=1)");
	if (err) {
		fprintf(stderr, "ksmu_merger_init: %s\n", strerror(-err));
		exit(T_EXIT_FAIL);
	}
	t_pm_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (t_pm_fd < 0)
		t_skip("no /proc/self/pagemap");
}

/*
 * Stress values: a 48-bit sequence number and a 16-bit check of it, so a
 * reader can tell a torn or foreign value (not well-formed) from a stale
 * one (well-formed but older than one already seen).
 */
static inline uint64_t t_check16(uint64_t seq)
{
	return ((seq + 1) * 0x9e3779b97f4a7c15ULL) >> 48;
}

static inline uint64_t t_mkval(uint64_t seq)
{
	return seq << 16 | t_check16(seq);
}

static inline int t_wellformed(uint64_t v)
{
	return (v & 0xffff) == t_check16(v >> 16);
}

static inline uint64_t *t_word(char *page, size_t off)
{
	return (uint64_t *)(void *)(page + off);
}

static inline uint64_t t_xorshift(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

/* Busy-wait @n iterations: widens race windows without a system call. */
static inline void t_spin(unsigned n)
{
	while (n--)
		__asm__ __volatile__("" ::: "memory");
}

#endif /* KSMU_T_MERGE_H */
