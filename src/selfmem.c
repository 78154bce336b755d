/* SPDX-License-Identifier: MIT */
/*
 * selfmem.c - the engine's own memory, which is never registered.
 *
 * DESIGN
 *   A merge window makes the pages of its run unreachable until it ends:
 *   any thread that touches them sleeps in a fault until the window wakes
 *   it.  The merging thread itself, and the event reader (which must read
 *   the window's own events for it to finish), must therefore never touch
 *   a page that a window may take.  With explicit registrations (the API,
 *   madvise(MADV_MERGEABLE)) that is the caller's memory, but merge-any
 *   (prctl(PR_SET_MEMORY_MERGE)) registers every private anonymous mapping
 *   of the process, the engine's own included: its .data/.bss, its threads'
 *   stacks, the merger's scratch areas, the dropped-range set and the
 *   scanner's page buffers.  Registration skips all of those, whoever asks.
 *
 *   The fixed ranges (the library's own segments, thread stacks, buffers
 *   mapped at start-up) are recorded here as they are created; the ranges
 *   that move (the dropped-range set, the merger's areas) are asked for at
 *   each registration.
 *
 * INVARIANTS
 *   - No registered region overlaps a range listed by ksmu_self_ranges().
 *
 * LOCKING / THREADS
 *   Engine lock held (or engine start-up, before any other thread).
 *
 * KERNEL REQUIREMENTS
 *   None (dl_iterate_phdr, pthread_getattr_np are the C library's).
 */
#include <errno.h>
#include <link.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define LOG_PREFIX "selfmem: "
#include "engine.h"
#include "log.h"
#include "selfmem.h"

#define SELF_MAX 24

static struct ksmu_range fixed[SELF_MAX];
static bool fixed_thread[SELF_MAX]; /* a thread's stack: a forked child has not got the thread */
static size_t nr_fixed;

static void self_add(uintptr_t start, uintptr_t end, bool thread)
{
	start &= KSMU_PAGE_MASK;
	end = (end + KSMU_PAGE_SIZE - 1) & KSMU_PAGE_MASK;
	if (start >= end)
		return;
	if (nr_fixed == SELF_MAX) {
		pr_warn("too many own ranges: %#lx-%#lx may be registered",
			(unsigned long)start, (unsigned long)end);
		return;
	}
	fixed[nr_fixed].start = start;
	fixed[nr_fixed].end = end;
	fixed_thread[nr_fixed] = thread;
	nr_fixed++;
}

void ksmu_self_add(uintptr_t start, uintptr_t end)
{
	self_add(start, end, false);
}

void ksmu_self_forget_threads(void)
{
	size_t i = 0;

	while (i < nr_fixed) {
		if (fixed_thread[i]) {
			nr_fixed--;
			fixed[i] = fixed[nr_fixed];
			fixed_thread[i] = fixed_thread[nr_fixed];
		} else {
			i++;
		}
	}
}

void ksmu_self_del(uintptr_t start)
{
	size_t i;

	start &= KSMU_PAGE_MASK;
	for (i = 0; i < nr_fixed; i++) {
		if (fixed[i].start == start) {
			nr_fixed--;
			fixed[i] = fixed[nr_fixed];
			fixed_thread[i] = fixed_thread[nr_fixed];
			return;
		}
	}
}

void ksmu_self_add_thread(pthread_t t)
{
	pthread_attr_t attr;
	void *addr;
	size_t size, guard = 0;

	if (pthread_getattr_np(t, &attr))
		return;
	if (!pthread_attr_getstack(&attr, &addr, &size)) {
		pthread_attr_getguardsize(&attr, &guard);
		/* the guard below the stack is PROT_NONE; TLS sits at the top */
		self_add((uintptr_t)addr - guard, (uintptr_t)addr + size, true);
	}
	pthread_attr_destroy(&attr);
}

/* dl_iterate_phdr() callback: the PT_LOAD segments of the object holding @arg. */
static int segments_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
	uintptr_t probe = (uintptr_t)arg;
	bool ours = false;
	int i;

	(void)size;
	for (i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		uintptr_t a = info->dlpi_addr + ph->p_vaddr;

		if (ph->p_type == PT_LOAD && probe >= a && probe < a + ph->p_memsz)
			ours = true;
	}
	if (!ours)
		return 0;
	for (i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		uintptr_t a = info->dlpi_addr + ph->p_vaddr;

		/* writable segments only: .data, .bss and the anonymous tail of .bss */
		if (ph->p_type == PT_LOAD && (ph->p_flags & PF_W))
			ksmu_self_add(a, a + ph->p_memsz);
	}
	return 1;
}

void ksmu_self_add_library(const void *symbol)
{
	dl_iterate_phdr(segments_cb, (void *)(uintptr_t)symbol);
}

static int cmp_range(const void *a, const void *b)
{
	const struct ksmu_range *x = a, *y = b;

	return x->start < y->start ? -1 : x->start > y->start;
}

size_t ksmu_self_ranges(struct ksmu_engine *e, struct ksmu_range *out, size_t max)
{
	size_t n = 0, i;

	for (i = 0; i < nr_fixed && n < max; i++)
		out[n++] = fixed[i];
	n += ksmu_merger_own_ranges(&e->merger, out + n, max - n);
	if (n < max && ksmu_engine_zap_extent(&out[n]))
		n++;
	for (i = 0; i < n; i++) { /* whole pages: mappings end on page boundaries */
		out[i].start &= KSMU_PAGE_MASK;
		out[i].end = (out[i].end + KSMU_PAGE_SIZE - 1) & KSMU_PAGE_MASK;
	}
	qsort(out, n, sizeof(*out), cmp_range);
	return n;
}

int ksmu_self_subtract(struct ksmu_engine *e, uintptr_t lo, uintptr_t hi,
		       int (*fn)(uintptr_t lo, uintptr_t hi, void *arg), void *arg)
{
	struct ksmu_range own[SELF_MAX + 8];
	size_t n = ksmu_self_ranges(e, own, KSMU_ARRAY_SIZE(own)), i;
	uintptr_t pos = lo;
	int ret;

	for (i = 0; i < n && pos < hi; i++) {
		if (own[i].end <= pos || own[i].start >= hi)
			continue;
		if (own[i].start > pos) {
			ret = fn(pos, own[i].start, arg);
			if (ret)
				return ret;
		}
		pos = KSMU_MAX(pos, own[i].end);
	}
	return pos < hi ? fn(pos, hi, arg) : 0;
}
