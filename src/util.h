/* SPDX-License-Identifier: MIT */
/*
 * util.h - small helpers shared by every module: page geometry, assertions,
 * container_of, likely/unlikely.
 *
 * ksmu assumes 4 KiB base pages (x86-64, arm64 with 4K); probe.c checks the
 * running page size and the engine refuses to start on another size.
 */
#ifndef KSMU_UTIL_H
#define KSMU_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define KSMU_PAGE_SHIFT 12
#define KSMU_PAGE_SIZE (1UL << KSMU_PAGE_SHIFT)
#define KSMU_PAGE_MASK (~(KSMU_PAGE_SIZE - 1))

#define ksmu_likely(x) __builtin_expect(!!(x), 1)
#define ksmu_unlikely(x) __builtin_expect(!!(x), 0)

#define ksmu_container_of(ptr, type, member) \
	((type *)(void *)((char *)(ptr) - offsetof(type, member)))

#define KSMU_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define KSMU_MIN(a, b) ((a) < (b) ? (a) : (b))
#define KSMU_MAX(a, b) ((a) > (b) ? (a) : (b))

/*
 * KSMU_BUG_ON() is always on: it guards invariants whose violation could
 * corrupt user memory, so continuing would be worse than stopping.
 * ksmu_assert() checks at KSMU_DEBUG >= 1, ksmu_assert_expensive() at >= 2.
 */
#define KSMU_BUG_ON(cond)                                                              \
	do {                                                                           \
		if (ksmu_unlikely(cond)) {                                             \
			fprintf(stderr, "ksmu: BUG at %s:%d: %s\n", __FILE__, __LINE__, \
				#cond);                                                \
			abort();                                                       \
		}                                                                      \
	} while (0)

#ifndef KSMU_DEBUG
#define KSMU_DEBUG 0
#endif
#if KSMU_DEBUG >= 1
#define ksmu_assert(cond) KSMU_BUG_ON(!(cond))
#else
#define ksmu_assert(cond) ((void)0)
#endif
#if KSMU_DEBUG >= 2
#define ksmu_assert_expensive(cond) KSMU_BUG_ON(!(cond))
#else
#define ksmu_assert_expensive(cond) ((void)0)
#endif

/* A range of addresses, [start, end). */
struct ksmu_range {
	uintptr_t start, end;
};

#endif /* KSMU_UTIL_H */
