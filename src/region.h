/* SPDX-License-Identifier: MIT */
/*
 * region.h - registered address ranges and their rmap items.
 */
#ifndef KSMU_REGION_H
#define KSMU_REGION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rbtree.h"
#include "rmap.h"

/**
 * struct ksmu_region - a registered range of private anonymous memory.
 * @node:       link in the engine's region tree, ordered by @start
 * @start:      first byte (page-aligned)
 * @end:        one past the last byte (page-aligned)
 * @nr_pages:   (@end - @start) / page size
 * @nr_chunks:  entries of @chunks
 * @chunks:     item chunks; page i's item is chunks[i / KSMU_CHUNK_ITEMS]
 * @wp_tracked: registered with the async write-protect tracker (else the
 *              scanner re-hashes its present pages every pass)
 */
struct ksmu_region {
	struct ksmu_rb_node node;
	uintptr_t start;
	uintptr_t end;
	size_t nr_pages;
	size_t nr_chunks;
	struct ksmu_chunk **chunks;
	bool wp_tracked;
};

static inline struct ksmu_rmap_item *ksmu_region_item(const struct ksmu_region *r, size_t idx)
{
	return ksmu_chunk_items(r->chunks[idx / KSMU_CHUNK_ITEMS]) + idx % KSMU_CHUNK_ITEMS;
}

static inline struct ksmu_chunk *ksmu_region_chunk(const struct ksmu_region *r, size_t idx)
{
	return r->chunks[idx / KSMU_CHUNK_ITEMS];
}

/** Allocate a region and its (zeroed) items.  Return: region or NULL. */
struct ksmu_region *ksmu_region_new(struct ksmu_arena *a, uintptr_t start, uintptr_t end);
/** Free a region whose items are in no tree any more. */
void ksmu_region_free(struct ksmu_arena *a, struct ksmu_region *r);

void ksmu_region_insert(struct ksmu_rb_root *root, struct ksmu_region *r);
void ksmu_region_erase(struct ksmu_rb_root *root, struct ksmu_region *r);
/** First region that ends after @addr (it may start after @addr), or NULL. */
struct ksmu_region *ksmu_region_lookup(const struct ksmu_rb_root *root, uintptr_t addr);
struct ksmu_region *ksmu_region_first(const struct ksmu_rb_root *root);
struct ksmu_region *ksmu_region_next(const struct ksmu_region *r);

#endif /* KSMU_REGION_H */
