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
 * @first:      item slot of page 0 in chunks[0] (non-zero for the tail of a
 *              region that was cut: it shares the chunks it came from)
 * @nr_chunks:  entries of @chunks
 * @chunks:     item chunks; page i's item is slot (i + @first) % KSMU_CHUNK_ITEMS
 *              of chunks[(i + @first) / KSMU_CHUNK_ITEMS]
 * @wp_tracked: registered with the async write-protect tracker (else the
 *              scanner re-hashes its present pages every pass)
 */
struct ksmu_region {
	struct ksmu_rb_node node;
	uintptr_t start;
	uintptr_t end;
	size_t nr_pages;
	size_t first;
	size_t nr_chunks;
	struct ksmu_chunk **chunks;
	bool wp_tracked;
};

static inline struct ksmu_rmap_item *ksmu_region_item(const struct ksmu_region *r, size_t idx)
{
	size_t j = idx + r->first;

	return ksmu_chunk_items(r->chunks[j / KSMU_CHUNK_ITEMS]) + j % KSMU_CHUNK_ITEMS;
}

static inline struct ksmu_chunk *ksmu_region_chunk(const struct ksmu_region *r, size_t idx)
{
	return r->chunks[(idx + r->first) / KSMU_CHUNK_ITEMS];
}

/** One past the last page index of @r whose item is in the chunk of page @idx. */
static inline size_t ksmu_region_chunk_end(const struct ksmu_region *r, size_t idx)
{
	size_t j = idx + r->first;

	return (j / KSMU_CHUNK_ITEMS + 1) * KSMU_CHUNK_ITEMS - r->first;
}

/** Allocate a region and its (zeroed) items.  Return: region or NULL. */
struct ksmu_region *ksmu_region_new(struct ksmu_arena *a, uintptr_t start, uintptr_t end);
/**
 * ksmu_region_free() - free a region; a chunk goes when no region uses it
 * any more, and its items must then be in no tree.
 */
void ksmu_region_free(struct ksmu_arena *a, struct ksmu_region *r);
/**
 * ksmu_region_slice() - a new region for pages [@from, @to) of @r, sharing
 * @r's chunks and so its items with all their state (cut_region() in
 * engine.c keeps the parts of a region outside a cut this way).
 * Return: the region (not inserted anywhere) or NULL.
 */
struct ksmu_region *ksmu_region_slice(const struct ksmu_region *r, size_t from, size_t to);

void ksmu_region_insert(struct ksmu_rb_root *root, struct ksmu_region *r);
void ksmu_region_erase(struct ksmu_rb_root *root, struct ksmu_region *r);
/** First region that ends after @addr (it may start after @addr), or NULL. */
struct ksmu_region *ksmu_region_lookup(const struct ksmu_rb_root *root, uintptr_t addr);
struct ksmu_region *ksmu_region_first(const struct ksmu_rb_root *root);
struct ksmu_region *ksmu_region_next(const struct ksmu_region *r);

#endif /* KSMU_REGION_H */
