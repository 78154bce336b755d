/* SPDX-License-Identifier: MIT */
/*
 * pagemap.c - the engine's view of page tables: presence, dirtiness,
 * eligibility, and fault-free reads of page contents.
 *
 * DESIGN
 *   Presence comes from the PAGEMAP_SCAN ioctl (6.7+) on /proc/self/pagemap,
 *   which answers with runs of pages of equal category at 1.5-4.6 ns per
 *   page; on older kernels from pread() of the 8-byte pagemap entries.
 *   Dirtiness ("written since the last scan") comes from PAGEMAP_SCAN with
 *   PM_SCAN_WP_MATCHING over ranges registered in an async write-protect
 *   userfaultfd (uffd.c): the kernel reports written pages and re-protects
 *   them in the same walk, so no write between report and protect is lost.
 *
 *   Page contents are read with process_vm_readv() on our own pid rather
 *   than by dereferencing: an application thread may munmap() or mprotect()
 *   registered memory at any moment (a library cannot prevent that), and a
 *   direct load would then kill the process with SIGSEGV, while the syscall
 *   returns EFAULT.  The price, about 0.5 us per page in batches, is paid
 *   only for pages that must be hashed or compared.
 *
 *   Eligibility follows KSM's vma_ksm_compatible(): private anonymous
 *   memory only (heap, stack and anonymous mappings); shared, file-backed
 *   and special mappings ([vdso], [vvar], [vsyscall]) are skipped.
 *
 * INVARIANTS
 *   The scratch vector is used by one caller at a time (engine lock).
 *
 * LOCKING / THREADS
 *   Called with the engine lock held, except ksmu_maps_walk() (stateless).
 *
 * RACES
 *   Any answer may be stale when it arrives: a page reported present can be
 *   zapped before it is read (then process_vm_readv faults in a fresh zero
 *   page: a small memory cost, never a wrong result, since the page is then
 *   hashed as zeros and marked changed on the next visit); a range listed in
 *   /proc/self/maps can be unmapped right after.  Callers treat every answer
 *   as a hint and verify contents before acting.
 *
 * KERNEL REQUIREMENTS
 *   /proc/self/pagemap; PAGEMAP_SCAN (probe.c: pagemap_scan) for the fast
 *   path and for dirty tracking (uffd_wp_async); process_vm_readv (3.2).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "compat.h"
#include "pagemap.h"
#include "util.h"

#define PM_PREAD_ENTRIES 512

int ksmu_pagemap_open(struct ksmu_pagemap *pm, bool use_scan)
{
	memset(pm, 0, sizeof(*pm));
	pm->fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (pm->fd < 0)
		return -errno;
	pm->use_scan = use_scan;
	pm->pid = getpid();
	pm->vec = calloc(KSMU_PM_VEC_LEN, sizeof(struct page_region));
	pm->pm_buf = calloc(PM_PREAD_ENTRIES, sizeof(uint64_t));
	if (!pm->vec || !pm->pm_buf) {
		ksmu_pagemap_close(pm);
		return -ENOMEM;
	}
	return 0;
}

void ksmu_pagemap_close(struct ksmu_pagemap *pm)
{
	if (pm->fd >= 0)
		close(pm->fd);
	free(pm->vec);
	free(pm->pm_buf);
	pm->fd = -1;
	pm->vec = NULL;
	pm->pm_buf = NULL;
}

int ksmu_pagemap_reopen(struct ksmu_pagemap *pm)
{
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	if (pm->fd >= 0)
		close(pm->fd);
	pm->fd = fd;
	pm->pid = getpid();
	return 0;
}

static int scan_ioctl(struct ksmu_pagemap *pm, uintptr_t start, uintptr_t end, uint64_t flags,
		      uint64_t mask, uint64_t max_pages, struct ksmu_pm_run *runs, size_t max_runs,
		      uintptr_t *walk_end)
{
	struct page_region *vec = pm->vec;
	struct pm_scan_arg arg = {
	    .size = sizeof(arg),
	    .flags = flags,
	    .start = start,
	    .end = end,
	    .vec = (uintptr_t)vec,
	    .vec_len = KSMU_MIN(max_runs, (size_t)KSMU_PM_VEC_LEN),
	    .max_pages = max_pages,
	    .category_mask = mask,
	    .return_mask = mask,
	};
	long n;
	long i;

	n = ioctl(pm->fd, PAGEMAP_SCAN, &arg);
	if (n < 0)
		return -errno;
	for (i = 0; i < n; i++) {
		runs[i].start = vec[i].start;
		runs[i].end = vec[i].end;
	}
	*walk_end = arg.walk_end;
	return (int)n;
}

static int pread_present(struct ksmu_pagemap *pm, uintptr_t start, uintptr_t end, size_t max_pages,
			 struct ksmu_pm_run *runs, size_t max_runs, uintptr_t *walk_end)
{
	size_t nruns = 0, present = 0;
	uintptr_t a = start;

	while (a < end) {
		size_t want =
		    KSMU_MIN((size_t)((end - a) >> KSMU_PAGE_SHIFT), (size_t)PM_PREAD_ENTRIES);
		off_t off = (off_t)((a >> KSMU_PAGE_SHIFT) * sizeof(uint64_t));
		ssize_t got = pread(pm->fd, pm->pm_buf, want * sizeof(uint64_t), off);
		size_t i, n;

		if (got < 0)
			return -errno;
		n = (size_t)got / sizeof(uint64_t);
		if (n == 0)
			break;
		for (i = 0; i < n; i++, a += KSMU_PAGE_SIZE) {
			if (!(pm->pm_buf[i] & KSMU_PM_PRESENT))
				continue;
			if (nruns && runs[nruns - 1].end == a) {
				runs[nruns - 1].end += KSMU_PAGE_SIZE;
			} else {
				if (nruns == max_runs)
					goto out;
				runs[nruns].start = a;
				runs[nruns].end = a + KSMU_PAGE_SIZE;
				nruns++;
			}
			if (++present == max_pages) {
				a += KSMU_PAGE_SIZE;
				goto out;
			}
		}
	}
out:
	*walk_end = a;
	return (int)nruns;
}

int ksmu_pagemap_present(struct ksmu_pagemap *pm, uintptr_t start, uintptr_t end, size_t max_pages,
			 struct ksmu_pm_run *runs, size_t max_runs, uintptr_t *walk_end)
{
	if (pm->use_scan)
		return scan_ioctl(pm, start, end, 0, PAGE_IS_PRESENT, max_pages, runs, max_runs,
				  walk_end);
	return pread_present(pm, start, end, max_pages, runs, max_runs, walk_end);
}

int ksmu_pagemap_present_written(struct ksmu_pagemap *pm, uintptr_t start, uintptr_t end,
				 size_t max_pages, struct ksmu_pm_run *runs, size_t max_runs,
				 struct ksmu_pm_run *wruns, size_t *nw, uintptr_t *walk_end,
				 bool skip_sync)
{
	struct page_region *vec = pm->vec;
	struct pm_scan_arg arg = {
	    .size = sizeof(arg),
	    /*
	     * skip_sync: VMAs that are not async-WP (cow_policy=1's store
	     * mappings, cow.c) are skipped silently instead of failing the
	     * walk with EPERM; their pages are reported absent.
	     */
	    .flags = PM_SCAN_WP_MATCHING | (skip_sync ? 0 : PM_SCAN_CHECK_WPASYNC),
	    .start = start,
	    .end = end,
	    .vec = (uintptr_t)vec,
	    .vec_len = KSMU_MIN(max_runs, (size_t)KSMU_PM_VEC_LEN),
	    .max_pages = max_pages,
	    .category_mask = PAGE_IS_PRESENT,
	    .return_mask = PAGE_IS_PRESENT | PAGE_IS_WRITTEN,
	};
	size_t nr = 0, w = 0;
	long n, i;

	*nw = 0;
	if (!pm->use_scan)
		return -EOPNOTSUPP;
	/*
	 * One walk: every present page is reported, split where "written"
	 * changes; only the written ones are write-protected again (the
	 * kernel's pagemap_scan_pmd_entry() protects a matched page only if
	 * it was written).  Half the VMA walks of a present query followed by
	 * a written one, which is what a quiet pass over many store mappings
	 * costs most.
	 */
	n = ioctl(pm->fd, PAGEMAP_SCAN, &arg);
	if (n < 0)
		return -errno;
	for (i = 0; i < n; i++) {
		if (nr && runs[nr - 1].end == vec[i].start) {
			runs[nr - 1].end = vec[i].end;
		} else {
			runs[nr].start = vec[i].start;
			runs[nr].end = vec[i].end;
			nr++;
		}
		if (!(vec[i].categories & PAGE_IS_WRITTEN))
			continue;
		if (w && wruns[w - 1].end == vec[i].start) {
			wruns[w - 1].end = vec[i].end;
		} else {
			wruns[w].start = vec[i].start;
			wruns[w].end = vec[i].end;
			w++;
		}
	}
	*nw = w;
	*walk_end = arg.walk_end;
	return (int)nr;
}

int ksmu_pagemap_is_present(struct ksmu_pagemap *pm, uintptr_t addr)
{
	uint64_t e;
	off_t off = (off_t)((addr >> KSMU_PAGE_SHIFT) * sizeof(uint64_t));

	if (pread(pm->fd, &e, sizeof(e), off) != (ssize_t)sizeof(e))
		return -EIO;
	return !!(e & KSMU_PM_PRESENT);
}

int ksmu_pagemap_maps_file(struct ksmu_pagemap *pm, uintptr_t addr)
{
	uint64_t e;
	off_t off = (off_t)((addr >> KSMU_PAGE_SHIFT) * sizeof(uint64_t));

	if (pread(pm->fd, &e, sizeof(e), off) != (ssize_t)sizeof(e))
		return -EIO;
	return (e & KSMU_PM_PRESENT) && (e & KSMU_PM_FILE);
}

#define MEMREAD_IOV 64

long ksmu_mem_read(struct ksmu_pagemap *pm, const uintptr_t *addrs, size_t n, void *buf,
		   uint8_t *ok)
{
	struct iovec local[MEMREAD_IOV], remote[MEMREAD_IOV];
	size_t done = 0, copied = 0;

	memset(ok, 0, n);
	while (done < n) {
		size_t cnt = KSMU_MIN(n - done, (size_t)MEMREAD_IOV), i;
		ssize_t got;

		for (i = 0; i < cnt; i++) {
			local[i].iov_base = (char *)buf + ((done + i) << KSMU_PAGE_SHIFT);
			local[i].iov_len = KSMU_PAGE_SIZE;
			remote[i].iov_base = (void *)addrs[done + i];
			remote[i].iov_len = KSMU_PAGE_SIZE;
		}
		got = process_vm_readv(pm->pid, local, cnt, remote, cnt, 0);
		if (got < 0) {
			if (errno != EFAULT && errno != ENOMEM)
				return -errno;
			got = 0;
		}
		/* A short read stops at the first page that could not be read. */
		for (i = 0; i < (size_t)got >> KSMU_PAGE_SHIFT; i++)
			ok[done + i] = 1;
		copied += (size_t)got >> KSMU_PAGE_SHIFT;
		done += ((size_t)got >> KSMU_PAGE_SHIFT);
		if ((size_t)got < cnt * KSMU_PAGE_SIZE)
			done++; /* skip the failing page, its ok[] stays 0 */
	}
	return (long)copied;
}

static bool eligible(const char *perms, unsigned long inode, const char *path)
{
	if (perms[3] != 'p')
		return false; /* shared mappings: never (KSM: VM_SHARED) */
	if (inode != 0)
		return false; /* file-backed */
	if (!path[0] || !strcmp(path, "[heap]") || !strncmp(path, "[stack", 6) ||
	    !strncmp(path, "[anon:", 6))
		return true;
	return false; /* [vdso], [vvar], [vsyscall], deleted files, ... */
}

static int maps_walk(uintptr_t start, uintptr_t end, bool accessible_only,
		     int (*fn)(uintptr_t lo, uintptr_t hi, void *arg), void *arg);

int ksmu_maps_walk(uintptr_t start, uintptr_t end, int (*fn)(uintptr_t lo, uintptr_t hi, void *arg),
		   void *arg)
{
	return maps_walk(start, end, false, fn, arg);
}

int ksmu_maps_walk_accessible(int (*fn)(uintptr_t lo, uintptr_t hi, void *arg), void *arg)
{
	int ret = maps_walk(0, UINTPTR_MAX, true, fn, arg);

	return ret == -ENOMEM ? 0 : ret; /* holes are no error here */
}

static int maps_walk(uintptr_t start, uintptr_t end, bool accessible_only,
		     int (*fn)(uintptr_t lo, uintptr_t hi, void *arg), void *arg)
{
	FILE *f = fopen("/proc/self/maps", "re");
	char line[512];
	uintptr_t covered = start;
	int ret = 0;

	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		unsigned long lo, hi, inode;
		char perms[8] = "", path[256] = "";
		int pos = 0;

		if (sscanf(line, "%lx-%lx %7s %*s %*s %lu%n", &lo, &hi, perms, &inode, &pos) < 4)
			continue;
		if (strlen(line) > (size_t)pos) {
			const char *p = line + pos;

			while (*p == ' ')
				p++;
			snprintf(path, sizeof(path), "%s", p);
			path[strcspn(path, "\n")] = 0;
		}
		if (!strchr(line, '\n')) {
			int c;

			while ((c = fgetc(f)) != EOF && c != '\n')
				;
		}
		if (hi <= start)
			continue;
		if (lo >= end)
			break;
		if (lo > covered)
			ret = -ENOMEM; /* hole before this mapping */
		covered = KSMU_MAX(covered, (uintptr_t)hi);
		if (eligible(perms, inode, path) &&
		    (!accessible_only || perms[0] == 'r' || perms[1] == 'w')) {
			int r =
			    fn(KSMU_MAX((uintptr_t)lo, start), KSMU_MIN((uintptr_t)hi, end), arg);

			if (r) {
				fclose(f);
				return r;
			}
		}
	}
	fclose(f);
	if (covered < end)
		ret = -ENOMEM;
	return ret;
}
