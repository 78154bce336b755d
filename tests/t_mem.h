/* SPDX-License-Identifier: MIT */
/*
 * t_mem.h - memory helpers shared by the functional tests: pagemap entries
 * and PFNs (the kernel selftests' way of proving a merge), anonymous
 * mappings, a bare memfd standing in for the store, and page contents that
 * depend on a seed only.  Failures to set up end the test with T_EXIT_FAIL.
 */
#ifndef KSMU_T_MEM_H
#define KSMU_T_MEM_H

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "compat.h"
#include "test.h"

#define T_PG 4096UL

static int t_pm_fd = -1;

/* The /proc/self/pagemap entry of the page holding @p (0 if unreadable). */
static inline uint64_t t_pm_entry(const void *p)
{
	uint64_t e = 0;

	if (t_pm_fd < 0)
		t_pm_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (pread(t_pm_fd, &e, sizeof(e), (off_t)((uintptr_t)p / T_PG * sizeof(e))) != sizeof(e))
		return 0;
	return e;
}

/* PFN of the page holding @p; 0 when not present or PFNs are hidden (not root). */
static inline uint64_t t_pfn_of(const void *p)
{
	return t_pm_entry(p) & KSMU_PM_PFN_MASK;
}

static inline int t_present(const void *p)
{
	return !!(t_pm_entry(p) & KSMU_PM_PRESENT);
}

/* 1 if the 4096 bytes at @p are all zero. */
static inline int t_page_is_zero(const void *p)
{
	const uint64_t *w = p;
	size_t i;

	for (i = 0; i < 4096 / sizeof(*w); i++)
		if (w[i])
			return 0;
	return 1;
}

/* Pss of the whole process, from /proc/self/smaps_rollup, in kB. */
static inline long t_pss_kb(void)
{
	char line[256];
	long kb = -1;
	FILE *f = fopen("/proc/self/smaps_rollup", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "Pss: %ld kB", &kb) == 1)
			break;
	}
	fclose(f);
	return kb;
}

/* Pss of the VMAs inside [lo, lo+len), from /proc/self/smaps, in kB. */
static inline long t_region_pss_kb(const void *lo_p, size_t len)
{
	uintptr_t lo = (uintptr_t)lo_p, hi = lo + len;
	unsigned long s, e;
	long kb, sum = 0;
	char line[512];
	int in = 0;
	FILE *f = fopen("/proc/self/smaps", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%lx-%lx ", &s, &e) == 2 && strchr(line, '-') < strchr(line, ' '))
			in = s >= lo && e <= hi;
		else if (in && sscanf(line, "Pss: %ld kB", &kb) == 1)
			sum += kb;
	}
	fclose(f);
	return sum;
}

static inline void *t_map_anon(size_t pages)
{
	void *p =
	    mmap(NULL, pages * T_PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED) {
		perror("mmap");
		exit(T_EXIT_FAIL);
	}
	return p;
}

/* A memfd of @pages pages, standing in for the engine's store. */
static inline int t_store_new(size_t pages)
{
	int fd = memfd_create("ksmu-test-store", MFD_CLOEXEC);

	if (fd < 0 || ftruncate(fd, (off_t)(pages * T_PG)) < 0) {
		perror("memfd");
		exit(T_EXIT_FAIL);
	}
	return fd;
}

static inline void t_store_put(int fd, size_t idx, const void *page)
{
	if (pwrite(fd, page, T_PG, (off_t)(idx * T_PG)) != (ssize_t)T_PG) {
		perror("pwrite store");
		exit(T_EXIT_FAIL);
	}
}

static inline int t_store_equals(int fd, size_t idx, const void *page)
{
	unsigned char buf[T_PG];

	return pread(fd, buf, T_PG, (off_t)(idx * T_PG)) == (ssize_t)T_PG &&
	       !memcmp(buf, page, T_PG);
}

/*
 * Number of /proc/self/maps lines (VMAs) that intersect [lo, lo + len);
 * if @memfd is not NULL, how many of them map a memfd.
 */
static inline int t_maps_in(const void *lo_p, size_t len, int *memfd)
{
	uintptr_t lo = (uintptr_t)lo_p, hi = lo + len;
	unsigned long s, e;
	char line[512];
	int n = 0;
	FILE *f = fopen("/proc/self/maps", "r");

	if (memfd)
		*memfd = 0;
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%lx-%lx", &s, &e) == 2 && s < hi && lo < e) {
			n++;
			if (memfd && strstr(line, "/memfd:"))
				(*memfd)++;
		}
	}
	fclose(f);
	return n;
}

/* PFN of page @idx of a memfd, seen through a shared mapping of it. */
static inline uint64_t t_store_pfn(int fd, size_t idx)
{
	volatile unsigned char *p =
	    mmap(NULL, T_PG, PROT_READ, MAP_SHARED, fd, (off_t)(idx * T_PG));
	uint64_t pfn;

	if (p == MAP_FAILED)
		return 0;
	(void)p[0];
	pfn = t_pfn_of((const void *)p);
	munmap((void *)p, T_PG);
	return pfn;
}

/* A page of content that depends on @seed only, never all zero. */
static inline void t_fill_page(void *page, uint64_t seed)
{
	uint64_t *w = page, x = seed * 0x9e3779b97f4a7c15ULL + 1;
	size_t i;

	for (i = 0; i < T_PG / sizeof(*w); i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		w[i] = x;
	}
}

/* Page i of @p holds t_fill_page(seed + i % period): n / period copies of each. */
static inline void t_fill_pattern(void *p, size_t n, uint64_t seed, size_t period)
{
	size_t i;

	for (i = 0; i < n; i++)
		t_fill_page((char *)p + i * T_PG, seed + i % period);
}

/* 0 if @p holds what t_fill_pattern() wrote, else 1 + the first wrong page. */
static inline int t_verify_pattern(const void *p, size_t n, uint64_t seed, size_t period)
{
	unsigned char want[T_PG];
	size_t i;

	for (i = 0; i < n; i++) {
		t_fill_page(want, seed + i % period);
		if (memcmp((const char *)p + i * T_PG, want, T_PG))
			return (int)i + 1;
	}
	return 0;
}

#endif /* KSMU_T_MEM_H */
