/* SPDX-License-Identifier: MIT */
/*
 * store.h - the memfd of canonical ("store") pages that merged pages map
 * MAP_PRIVATE.  See store.c for the design, the invariants the caller must
 * keep, and the kernel behaviour they rest on.
 */
#ifndef KSMU_STORE_H
#define KSMU_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "util.h"

/*
 * The file grows and shrinks in steps of KSMU_STORE_STEP_PAGES (2 MiB).
 * File size costs no memory (only written, unpunched pages do); the step
 * keeps ftruncate() off the allocation fast path.
 */
#define KSMU_STORE_STEP_PAGES 512UL

/**
 * struct ksmu_store - one memfd of store pages and its allocator.
 * @fd:            the memfd ("ksmu-store", close-on-exec), -1 when not open
 * @dev:           st_dev of the memfd, to check that @fd still names it
 * @ino:           st_ino of the memfd, likewise
 * @max_pages:     bound on the file size in pages (allocation fails with
 *                 -ENOSPC rather than grow past it)
 * @size_pages:    current file size in pages (ftruncate); a multiple of
 *                 KSMU_STORE_STEP_PAGES, or @max_pages
 * @used:          bitmap, bit i set = page i is allocated; covers
 *                 @map_words * 64 >= @size_pages pages, bits at and beyond
 *                 @size_pages are always clear
 * @map_words:     64-bit words allocated for @used
 * @hint:          no page below @hint is free (every index < @hint is
 *                 allocated); searches start here
 * @used_end:      one past the highest allocated page, 0 when none: every
 *                 page in [@used_end, @size_pages) is free
 * @nr_used:       pages allocated now (bits set in @used)
 * @nr_allocs:     successful ksmu_store_alloc_run() calls
 * @nr_alloc_pages: pages handed out by them, in total
 * @nr_frees:      ksmu_store_free_run() calls
 * @nr_free_pages: pages given back by them, in total
 * @nr_punches:    successful hole punches (one per free_run call)
 * @nr_punch_errors: hole punches the kernel refused (the memory then stays
 *                 allocated until the index is reused or the file shrinks;
 *                 the content is never seen again either way)
 * @nr_grows:      ftruncate() calls that grew the file
 * @nr_shrinks:    ftruncate() calls that shrank the file
 * @last_punch_error: errno of the last refused punch, 0 if none
 *
 * The struct is owned by the engine and protected by the engine lock; the
 * counters may be read directly under that lock (or with
 * ksmu_store_get_stats()).
 */
struct ksmu_store {
	int fd;
	dev_t dev;
	ino_t ino;
	size_t max_pages;
	size_t size_pages;
	uint64_t *used;
	size_t map_words;
	size_t hint;
	size_t used_end;
	size_t nr_used;
	uint64_t nr_allocs;
	uint64_t nr_alloc_pages;
	uint64_t nr_frees;
	uint64_t nr_free_pages;
	uint64_t nr_punches;
	uint64_t nr_punch_errors;
	uint64_t nr_grows;
	uint64_t nr_shrinks;
	int last_punch_error;
};

/**
 * struct ksmu_store_stats - a snapshot of the store's counters.
 * @pages_used:     store pages allocated now (each holds memory)
 * @file_pages:     file size in pages (costs no memory by itself)
 * @max_pages:      bound on @file_pages
 * @allocs:         successful run allocations
 * @alloc_pages:    pages allocated in total
 * @frees:          run frees
 * @free_pages:     pages freed in total
 * @holes_punched:  successful FALLOC_FL_PUNCH_HOLE calls
 * @punch_errors:   refused punches
 * @grows:          file growths
 * @shrinks:        file shrinks
 * @metadata_bytes: bytes of allocator metadata (the bitmap: 1 bit per page
 *                  of file size, rounded up to 64 pages)
 */
struct ksmu_store_stats {
	uint64_t pages_used;
	uint64_t file_pages;
	uint64_t max_pages;
	uint64_t allocs;
	uint64_t alloc_pages;
	uint64_t frees;
	uint64_t free_pages;
	uint64_t holes_punched;
	uint64_t punch_errors;
	uint64_t grows;
	uint64_t shrinks;
	uint64_t metadata_bytes;
};

/**
 * ksmu_store_init() - create the store memfd, empty (size 0).
 * @s:         the store to initialise (any previous content is ignored)
 * @max_pages: bound on growth in pages, >= 1
 *
 * Return: 0; -EINVAL if @s is NULL, @max_pages is 0 or too large for a file
 * offset; -errno of memfd_create() (-EMFILE, -ENFILE, -ENOMEM, -ENOSYS).
 * On failure @s is left with fd == -1 and may be passed to
 * ksmu_store_destroy().
 * Context: engine lock held; does not block.
 */
int ksmu_store_init(struct ksmu_store *s, size_t max_pages);

/**
 * ksmu_store_destroy() - close the memfd and free the metadata.
 * Pages still mapped MAP_PRIVATE somewhere stay readable (the mappings hold
 * the file); the memory is returned when the last of them goes.  Safe on a
 * store whose init failed and on a destroyed store.
 * Context: engine lock held.
 */
void ksmu_store_destroy(struct ksmu_store *s);

/**
 * ksmu_store_alloc_run() - allocate @n contiguous store pages and fill them.
 * @s:     the store
 * @n:     pages, >= 1
 * @buf:   @n * 4096 bytes of content, written with pwrite()
 * @first: on success, the index of the first page of the run
 *
 * Lowest-index first fit; the file grows (in KSMU_STORE_STEP_PAGES steps,
 * capped at max_pages) only if no free run of @n pages exists.
 *
 * Return: 0; -EINVAL for a NULL pointer, @n == 0 or a closed store;
 * -ENOSPC if the run does not fit below max_pages; -EBADF if the
 * descriptor number no longer names the store (closed or replaced by the
 * application: nothing is written); -ENOMEM if the
 * metadata cannot grow; -errno of ftruncate()/pwrite() (-ENOSPC, -ENOMEM,
 * -EFBIG, ... when tmpfs or the memory cgroup refuses).  On failure nothing
 * changes: no page is allocated, the file size and counters are as before.
 * Context: engine lock held; may block on memory allocation in the kernel.
 */
int ksmu_store_alloc_run(struct ksmu_store *s, size_t n, const void *buf, size_t *first);

/**
 * ksmu_store_alloc_at() - allocate the @n store pages from @first, if they
 * are all free, and fill them with @buf (@n pages).  For locality: a page
 * whose neighbour in memory maps store page i is best put at i + 1 (or
 * i - 1), so that the two share one mapping (one VMA).
 *
 * Return: 0; -EBUSY if a page of the range is allocated; -ENOSPC if the
 * range does not fit below max_pages; otherwise as ksmu_store_alloc_run(),
 * and on failure nothing changes.
 * Context: engine lock held.
 */
int ksmu_store_alloc_at(struct ksmu_store *s, size_t first, size_t n, const void *buf);

/**
 * ksmu_store_free_run() - free @n pages from @first and return their memory.
 * Punches a hole (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE) over the run,
 * makes the indexes reusable, and shrinks the file when a large enough
 * tail of it is free.  @n == 0 does nothing.
 *
 * The caller guarantees that NO mapping of these pages exists any more, in
 * this process or a forked child (store.c, INVARIANTS): the kernel zaps
 * such mappings on the punch and they would later read the next content
 * written at the same index.
 *
 * Freeing a page that is not allocated (or out of range) is a bug: the
 * process aborts (KSMU_BUG_ON).  A refused punch is counted, not fatal.
 * Context: engine lock held.
 */
void ksmu_store_free_run(struct ksmu_store *s, size_t first, size_t n);

/**
 * ksmu_store_read() - copy store page @page into @buf (4096 bytes, pread).
 * Return: 0; -EINVAL for a NULL pointer, a closed store or @page beyond the
 * file; -EIO if the file ends early; -errno of pread().  A page inside the
 * file that is not allocated is a caller bug (KSMU_BUG_ON).  For speed the
 * descriptor's identity is not re-checked here (a replaced descriptor
 * yields wrong bytes or an error, and the merge compares before it maps).
 * Context: engine lock held, or any thread for a page that cannot be freed
 * concurrently; does not modify the store.
 */
int ksmu_store_read(const struct ksmu_store *s, size_t page, void *buf);

/**
 * ksmu_store_map() - map store pages [@first, @first + @n) at @addr.
 * @addr: page-aligned; whatever is mapped there is replaced (MAP_FIXED)
 * @prot: PROT_* bits; PROT_WRITE is allowed and safe (MAP_PRIVATE: a write
 *        makes the kernel copy the page, the store page never changes)
 *
 * Maps MAP_PRIVATE | MAP_FIXED, one VMA for the run, then pre-faults it
 * with MADV_POPULATE_READ (when @prot includes PROT_READ) so that every
 * address maps the store page itself, read-only in the page table, without
 * a copy.  MAP_POPULATE is never used: on a writable private mapping it
 * faults for write and copies every page.
 *
 * Return: 0; -EINVAL for @n == 0, a NULL or misaligned @addr, a closed
 * store or a run beyond the file; -EBADF if the descriptor number no
 * longer names the store (nothing is mapped); -errno of mmap() (then, as for any failed
 * MAP_FIXED, the old mapping at @addr may already be gone) or of
 * madvise(MADV_POPULATE_READ) (then the mapping IS in place and correct;
 * pages will be mapped on first access instead).  A page of the run inside
 * the file that is not allocated is a caller bug (KSMU_BUG_ON).
 * Context: engine lock held, so that no page of the run is freed meanwhile.
 */
int ksmu_store_map(const struct ksmu_store *s, size_t first, size_t n, void *addr, int prot);

/** ksmu_store_is_used() - 1 if page @page is allocated, else 0. */
int ksmu_store_is_used(const struct ksmu_store *s, size_t page);

/** ksmu_store_get_stats() - fill @st with a snapshot of the counters. */
void ksmu_store_get_stats(const struct ksmu_store *s, struct ksmu_store_stats *st);

/** ksmu_store_metadata_bytes() - bytes of allocator metadata held now. */
static inline size_t ksmu_store_metadata_bytes(const struct ksmu_store *s)
{
	return s->map_words * sizeof(uint64_t);
}

#endif /* KSMU_STORE_H */
