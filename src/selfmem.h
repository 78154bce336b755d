/* SPDX-License-Identifier: MIT */
/* selfmem.h - the engine's own memory, never registered (selfmem.c). */
#ifndef KSMU_SELFMEM_H
#define KSMU_SELFMEM_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ksmu_engine;
struct ksmu_range;

/** Record [start, end) (rounded out to pages) as the engine's own. */
void ksmu_self_add(uintptr_t start, uintptr_t end);
/** Forget the own range that starts at @start. */
void ksmu_self_del(uintptr_t start);
/** Record the stack (guard and TLS included) of engine thread @t. */
void ksmu_self_add_thread(pthread_t t);
/** In a forked child: forget the stacks of threads it has not got (async-signal-safe). */
void ksmu_self_forget_threads(void);
/** Record the writable segments of the shared object that holds @symbol. */
void ksmu_self_add_library(const void *symbol);
/** All own ranges now, sorted by start; at most @max.  Return: how many. */
size_t ksmu_self_ranges(struct ksmu_engine *e, struct ksmu_range *out, size_t max);
/**
 * Call @fn on each part of [lo, hi) outside the engine's own memory, in
 * order; stop at and return its first non-zero return.
 */
int ksmu_self_subtract(struct ksmu_engine *e, uintptr_t lo, uintptr_t hi,
		       int (*fn)(uintptr_t lo, uintptr_t hi, void *arg), void *arg);

#endif
