/* SPDX-License-Identifier: MIT */
/*
 * rmap.c - the arena of per-page tracking records (rmap items).
 *
 * DESIGN
 *   Every page of a registered region has a 32-byte struct ksmu_rmap_item
 *   (rmap.h).  Items are stored in chunks of KSMU_CHUNK_BYTES (256 KiB),
 *   aligned to their size, carved from one address-space reservation made at
 *   start-up.  Slot 0 of a chunk is its header (region, address of the first
 *   page); the item of page i of the chunk sits in slot i + 1.  Hence the
 *   address of the page an item tracks is computed from the item pointer
 *   alone (mask to the chunk, read the header, add the slot offset): tree
 *   nodes need no back pointer and no address field, which is what keeps an
 *   item at 32 bytes while a tree hit still leads straight to its page.
 *
 *   The reservation is PROT_NONE and MAP_NORESERVE, so it costs neither
 *   memory nor commit charge; chunks are made read-write one at a time as
 *   the bump pointer advances (adjacent read-write chunks merge into a single
 *   VMA).  Items of pages never seen present are never written, so their
 *   memory is never allocated by the kernel: tracking a sparse 100 GiB guest
 *   costs memory for its present pages only, plus one header page per chunk.
 *   Freed chunks are zeroed with MADV_DONTNEED (all but the header page,
 *   which is cleared by hand) and kept on a free list.
 *
 * INVARIANTS
 *   - A chunk on the free list has region == NULL and all items zero.
 *   - An item in use is in at most one tree (UNSTABLE xor STABLE).
 *   - nr_hashed counts the items of the chunk with KSMU_ITEM_HASHED.
 *
 * LOCKING / THREADS
 *   All functions are called with the engine lock held.
 *
 * KERNEL REQUIREMENTS
 *   mmap(MAP_NORESERVE), mprotect, madvise(MADV_DONTNEED): any Linux.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>

#include "rmap.h"

_Static_assert(sizeof(struct ksmu_rmap_item) == 32, "rmap item must stay 32 bytes");
_Static_assert(sizeof(struct ksmu_chunk) <= sizeof(struct ksmu_rmap_item),
	       "chunk header must fit slot 0");

int ksmu_arena_init(struct ksmu_arena *a, size_t reserve_bytes)
{
	size_t len = reserve_bytes + KSMU_CHUNK_BYTES;
	uintptr_t p, aligned;
	void *m;

	memset(a, 0, sizeof(*a));
	m = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (m == MAP_FAILED)
		return -errno;
	p = (uintptr_t)m;
	aligned = (p + KSMU_CHUNK_BYTES - 1) & ~(KSMU_CHUNK_BYTES - 1);
	/* Trim the slack so that only the aligned reservation remains. */
	if (aligned > p)
		munmap(m, aligned - p);
	if (p + len > aligned + reserve_bytes)
		munmap((void *)(aligned + reserve_bytes), p + len - (aligned + reserve_bytes));
	a->base = aligned;
	a->size = reserve_bytes;
	return 0;
}

void ksmu_arena_destroy(struct ksmu_arena *a)
{
	if (a->base)
		munmap((void *)a->base, a->size);
	memset(a, 0, sizeof(*a));
}

struct ksmu_chunk *ksmu_chunk_alloc(struct ksmu_arena *a, struct ksmu_region *region,
				    uintptr_t base, uint32_t nr_items)
{
	struct ksmu_chunk *c;

	KSMU_BUG_ON(nr_items == 0 || nr_items > KSMU_CHUNK_ITEMS);
	if (a->free) {
		c = a->free;
		a->free = c->next_free;
		c->next_free = NULL;
	} else {
		if (a->committed + KSMU_CHUNK_BYTES > a->size)
			return NULL;
		c = (struct ksmu_chunk *)(a->base + a->committed);
		if (mprotect(c, KSMU_CHUNK_BYTES, PROT_READ | PROT_WRITE))
			return NULL;
		a->committed += KSMU_CHUNK_BYTES;
	}
	c->region = region;
	c->base = base;
	c->nr_items = nr_items;
	c->nr_hashed = 0;
	c->nr_mapped = 0;
	c->users = 0;
	a->nr_used++;
	return c;
}

void ksmu_chunk_free(struct ksmu_arena *a, struct ksmu_chunk *c)
{
	KSMU_BUG_ON(c->nr_hashed != 0 || c->nr_mapped != 0);
	/* Drop the item pages; clear the header page by hand (it stays mapped). */
	madvise((char *)c + KSMU_PAGE_SIZE, KSMU_CHUNK_BYTES - KSMU_PAGE_SIZE, MADV_DONTNEED);
	memset(c, 0, KSMU_PAGE_SIZE);
	c->next_free = a->free;
	a->free = c;
	a->nr_used--;
}
