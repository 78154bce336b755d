/* SPDX-License-Identifier: MIT */
/*
 * pagemap.h - which pages are present / written, which ranges are eligible,
 * and reading page contents without risking a fault.
 */
#ifndef KSMU_PAGEMAP_H
#define KSMU_PAGEMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/** A run of pages [start, end). */
struct ksmu_pm_run {
	uintptr_t start;
	uintptr_t end;
};

/**
 * struct ksmu_pagemap - an open /proc/self/pagemap.
 * @fd:       the file
 * @use_scan: PAGEMAP_SCAN is available (else pread of 8-byte entries)
 * @pid:      our pid, for process_vm_readv
 * @vec:      scratch vector for PAGEMAP_SCAN results
 * @pm_buf:   scratch for pread entries
 */
struct ksmu_pagemap {
	int fd;
	bool use_scan;
	pid_t pid;
	void *vec;
	uint64_t *pm_buf;
};

#define KSMU_PM_VEC_LEN 512

int ksmu_pagemap_open(struct ksmu_pagemap *pm, bool use_scan);
void ksmu_pagemap_close(struct ksmu_pagemap *pm);
/** Re-open after fork: the old fd describes the parent. */
int ksmu_pagemap_reopen(struct ksmu_pagemap *pm);

/**
 * ksmu_pagemap_present() - runs of present pages in [start, end).
 * Stops after @max_pages present pages or when @max_runs runs are filled;
 * *@walk_end tells how far the answer is complete.
 * Return: number of runs, or -errno.
 */
int ksmu_pagemap_present(struct ksmu_pagemap *pm, uintptr_t start, uintptr_t end, size_t max_pages,
			 struct ksmu_pm_run *runs, size_t max_runs, uintptr_t *walk_end);

/**
 * ksmu_pagemap_present_written() - ksmu_pagemap_present() and the written
 * pages in one PAGEMAP_SCAN walk (PM_SCAN_WP_MATCHING, on ranges under the
 * async-WP tracker): the present runs in @runs, those of them written since
 * the last call (now write-protected again) in @wruns (*@nw of them, at most
 * @max_runs).  Return: number of present runs, or -errno (-EPERM: part of
 * the range is not under the tracker; -EOPNOTSUPP: no PAGEMAP_SCAN).
 */
int ksmu_pagemap_present_written(struct ksmu_pagemap *pm, uintptr_t start, uintptr_t end,
				 size_t max_pages, struct ksmu_pm_run *runs, size_t max_runs,
				 struct ksmu_pm_run *wruns, size_t *nw, uintptr_t *walk_end,
				 bool skip_sync);


/** ksmu_pagemap_is_present() - 1 if the page at @addr is present, 0 if not, -errno. */
int ksmu_pagemap_is_present(struct ksmu_pagemap *pm, uintptr_t addr);

/**
 * ksmu_pagemap_maps_file() - 1 if @addr maps a page-cache page (in a store
 * mapping: the store page itself, not a private copy), 0 if not, -errno.
 */
int ksmu_pagemap_maps_file(struct ksmu_pagemap *pm, uintptr_t addr);

/**
 * ksmu_mem_read() - copy pages of this process into @buf, never faulting.
 * @addrs: page addresses; @n of them; @buf: n * 4096 bytes
 * @ok:    per page, set to 1 if copied, 0 if the page could not be read
 *         (unmapped or PROT_NONE meanwhile)
 * Uses process_vm_readv() on our own pid, so a page that an application
 * thread unmaps concurrently yields EFAULT instead of a SIGSEGV.
 * Return: pages copied, or -errno for an error other than EFAULT.
 */
long ksmu_mem_read(struct ksmu_pagemap *pm, const uintptr_t *addrs, size_t n, void *buf,
		   uint8_t *ok);

/**
 * ksmu_maps_walk() - visit the eligible (private anonymous) parts of
 * [start, end) as listed in /proc/self/maps.
 * @fn: called for each eligible part, in address order; a nonzero return
 *      stops the walk and is returned
 * Return: 0; -ENOMEM if part of the range is not mapped (the mapped parts
 * were visited); or -errno.
 */
int ksmu_maps_walk(uintptr_t start, uintptr_t end, int (*fn)(uintptr_t lo, uintptr_t hi, void *arg),
		   void *arg);
/*
 * Every eligible mapping that is not PROT_NONE (guard pages, reserves), for
 * merge-any; holes are not reported.  Return: 0 or the first non-zero @fn
 * return, or -errno if /proc/self/maps cannot be read.
 */
int ksmu_maps_walk_accessible(int (*fn)(uintptr_t lo, uintptr_t hi, void *arg), void *arg);

#endif /* KSMU_PAGEMAP_H */
