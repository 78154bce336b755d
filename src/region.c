/* SPDX-License-Identifier: MIT */
/*
 * region.c - registered ranges (KSM's mm_slot / VM_MERGEABLE analogue).
 *
 * DESIGN
 *   A region is a page-aligned range that ksmu_register() accepted: the
 *   private anonymous part of what the caller passed.  Regions never
 *   overlap; they are kept in a red-black tree ordered by start address,
 *   which is also the scanner's walking order.  Each region owns the chunks
 *   (rmap.c) holding one rmap item per page, allocated when the region is
 *   created; item memory is only touched for pages seen present.
 *
 *   Regions are ranges of addresses, not VMAs: mprotect() or madvise()
 *   splitting a VMA does not affect them, and what lies under a range is
 *   re-checked by the scanner through the page tables on every visit.
 *
 *   A region that loses a middle part (unregister, munmap) is replaced by
 *   slices for what stays, which share the old region's chunks: the items
 *   keep their place in the trees, their hashes and their store references.
 *   A chunk counts the regions using it and is freed with the last one.
 *
 * INVARIANTS
 *   - Regions in the tree are disjoint and non-empty.
 *   - Page i of a region has item slot (i + first) of its chunk array;
 *     chunk->users is the number of regions whose chunk arrays name it.
 *   - Two regions never use the same item (slices are disjoint).
 *
 * LOCKING / THREADS
 *   Called with the engine lock held.
 *
 * KERNEL REQUIREMENTS
 *   None.
 */
#include <stdlib.h>

#include "region.h"

struct ksmu_region *ksmu_region_new(struct ksmu_arena *a, uintptr_t start, uintptr_t end)
{
	struct ksmu_region *r = calloc(1, sizeof(*r));
	size_t k;

	if (!r)
		return NULL;
	r->start = start;
	r->end = end;
	r->first = 0;
	r->nr_pages = (end - start) >> KSMU_PAGE_SHIFT;
	r->nr_chunks = (r->nr_pages + KSMU_CHUNK_ITEMS - 1) / KSMU_CHUNK_ITEMS;
	r->chunks = calloc(r->nr_chunks, sizeof(*r->chunks));
	if (!r->chunks)
		goto out_free;
	ksmu_rb_clear_node(&r->node);
	for (k = 0; k < r->nr_chunks; k++) {
		size_t first = k * KSMU_CHUNK_ITEMS;
		size_t n = KSMU_MIN((size_t)KSMU_CHUNK_ITEMS, r->nr_pages - first);

		r->chunks[k] = ksmu_chunk_alloc(a, r, start + (first << KSMU_PAGE_SHIFT),
						(uint32_t)n);
		if (!r->chunks[k])
			goto out_chunks;
		r->chunks[k]->users = 1;
	}
	return r;

out_chunks:
	while (k--)
		ksmu_chunk_free(a, r->chunks[k]);
	free(r->chunks);
out_free:
	free(r);
	return NULL;
}

void ksmu_region_free(struct ksmu_arena *a, struct ksmu_region *r)
{
	size_t k;

	for (k = 0; k < r->nr_chunks; k++)
		if (--r->chunks[k]->users == 0)
			ksmu_chunk_free(a, r->chunks[k]);
	free(r->chunks);
	free(r);
}

struct ksmu_region *ksmu_region_slice(const struct ksmu_region *r, size_t from, size_t to)
{
	struct ksmu_region *s = calloc(1, sizeof(*s));
	size_t k0 = (from + r->first) / KSMU_CHUNK_ITEMS;
	size_t k1 = (to - 1 + r->first) / KSMU_CHUNK_ITEMS + 1;
	size_t k;

	KSMU_BUG_ON(from >= to || to > r->nr_pages);
	if (!s)
		return NULL;
	s->chunks = calloc(k1 - k0, sizeof(*s->chunks));
	if (!s->chunks) {
		free(s);
		return NULL;
	}
	s->start = r->start + (from << KSMU_PAGE_SHIFT);
	s->end = r->start + (to << KSMU_PAGE_SHIFT);
	s->nr_pages = to - from;
	s->first = (from + r->first) % KSMU_CHUNK_ITEMS;
	s->nr_chunks = k1 - k0;
	s->wp_tracked = r->wp_tracked;
	ksmu_rb_clear_node(&s->node);
	for (k = k0; k < k1; k++) {
		s->chunks[k - k0] = r->chunks[k];
		r->chunks[k]->users++;
	}
	return s;
}

void ksmu_region_insert(struct ksmu_rb_root *root, struct ksmu_region *r)
{
	struct ksmu_rb_node **link = &root->node, *parent = NULL;

	while (*link) {
		struct ksmu_region *cur = ksmu_rb_entry(*link, struct ksmu_region, node);

		KSMU_BUG_ON(r->start < cur->end && cur->start < r->end);
		parent = *link;
		link = r->start < cur->start ? &(*link)->left : &(*link)->right;
	}
	ksmu_rb_link_node(&r->node, parent, link);
	ksmu_rb_insert_color(&r->node, root);
}

void ksmu_region_erase(struct ksmu_rb_root *root, struct ksmu_region *r)
{
	ksmu_rb_erase(&r->node, root);
	ksmu_rb_clear_node(&r->node);
}

struct ksmu_region *ksmu_region_lookup(const struct ksmu_rb_root *root, uintptr_t addr)
{
	struct ksmu_rb_node *n = root->node;
	struct ksmu_region *best = NULL;

	while (n) {
		struct ksmu_region *cur = ksmu_rb_entry(n, struct ksmu_region, node);

		if (cur->end > addr) {
			best = cur;
			n = n->left;
		} else {
			n = n->right;
		}
	}
	return best;
}

struct ksmu_region *ksmu_region_first(const struct ksmu_rb_root *root)
{
	struct ksmu_rb_node *n = ksmu_rb_first(root);

	return n ? ksmu_rb_entry(n, struct ksmu_region, node) : NULL;
}

struct ksmu_region *ksmu_region_next(const struct ksmu_region *r)
{
	struct ksmu_rb_node *n = ksmu_rb_next(&r->node);

	return n ? ksmu_rb_entry(n, struct ksmu_region, node) : NULL;
}
