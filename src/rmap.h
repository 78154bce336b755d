/* SPDX-License-Identifier: MIT */
/*
 * rmap.h - per-page tracking records ("rmap items", as KSM calls them) and
 * the chunk arena they live in.  See rmap.c for the design.
 */
#ifndef KSMU_RMAP_H
#define KSMU_RMAP_H

#include <stddef.h>
#include <stdint.h>

#include "rbtree.h"
#include "util.h"

struct ksmu_stable_node;
struct ksmu_region;

/* Low byte of ksmu_rmap_item.hash_flags. */
#define KSMU_ITEM_HASHED 0x01u	 /* key holds the hash of the content at the last read */
#define KSMU_ITEM_UNSTABLE 0x02u /* @node links the item into the unstable tree */
#define KSMU_ITEM_STABLE 0x04u	 /* @s: the item is a member of a stable node */
#define KSMU_ITEM_VOLATILE 0x08u /* content changed between the last two reads */
#define KSMU_ITEM_ZERO 0x10u	 /* all zero, counted as a zero page (use_zero_pages) */
#define KSMU_ITEM_AGE_SHIFT 5	 /* bits 5..6: smart_scan age, 0..3 */
#define KSMU_ITEM_AGE_MAX 3u
#define KSMU_ITEM_AGE_MASK (KSMU_ITEM_AGE_MAX << KSMU_ITEM_AGE_SHIFT)
/*
 * The page's address lies in a store mapping made by a merge (dedup.c): it
 * maps a store page (a member of a stable node, or ZERO), or it is a private
 * copy the kernel made on a write (then in no tree, and @s.next/@s.prev name
 * the store page its VMA still maps: see dedup.c).  Never in the unstable tree.
 */
#define KSMU_ITEM_MAPPED 0x80u
#define KSMU_ITEM_FLAGS_MASK 0xffu
#define KSMU_ITEM_KEY_SHIFT 8

/**
 * struct ksmu_rmap_item - what the engine knows about one tracked page.
 * @node:       link in the unstable tree; valid while KSMU_ITEM_UNSTABLE
 * @s.stable:   the stable node this page belongs to; valid while KSMU_ITEM_STABLE
 * @s.next:     next member of that stable node (NULL-terminated)
 * @s.prev:     previous member, or NULL for the node's first member
 * @hash_flags: bits 63..8 the tree key (top 56 bits of the XXH3-64 of the
 *              content when last read); bits 7..0 the KSMU_ITEM_* flags
 *
 * 32 bytes, half of KSM's 64-byte rmap_item.  The page address is not
 * stored: it follows from the item's position in its chunk (rmap.c).  An
 * item is in at most one tree: UNSTABLE and STABLE are exclusive.
 */
struct ksmu_rmap_item {
	union {
		struct ksmu_rb_node node;
		struct {
			struct ksmu_stable_node *stable;
			struct ksmu_rmap_item *next;
			struct ksmu_rmap_item *prev;
		} s;
	};
	uint64_t hash_flags;
};

/*
 * Chunks: KSMU_CHUNK_BYTES-aligned blocks of the arena.  Slot 0 holds the
 * header, slots 1.. the items of consecutive pages of one region.
 */
#define KSMU_CHUNK_SHIFT 18 /* 256 KiB: 8191 items, 32 MiB of tracked memory */
#define KSMU_CHUNK_BYTES (1UL << KSMU_CHUNK_SHIFT)
#define KSMU_CHUNK_ITEMS (KSMU_CHUNK_BYTES / sizeof(struct ksmu_rmap_item) - 1)

/**
 * struct ksmu_chunk - header of a chunk of rmap items (slot 0 of the chunk).
 * @region:    region the items belong to, NULL while free
 * @base:      address of the page that items[0] tracks (while in use)
 * @nr_items:  items in use (pages covered)
 * @nr_hashed: items with KSMU_ITEM_HASHED; 0 lets the scanner skip a run of
 *             absent pages without touching (and so allocating) the items
 * @nr_mapped: items with KSMU_ITEM_MAPPED (they hold store references
 *             even when not hashed)
 * @next_free: next chunk on the arena's free list, while free
 */
struct ksmu_chunk {
	struct ksmu_region *region;
	union {
		uintptr_t base;		      /* while in use */
		struct ksmu_chunk *next_free; /* while free */
	};
	uint32_t nr_items;
	uint32_t nr_hashed;
	uint32_t nr_mapped;
	uint32_t users; /* regions using the chunk (region.c) */
};

static inline struct ksmu_rmap_item *ksmu_chunk_items(struct ksmu_chunk *c)
{
	return (struct ksmu_rmap_item *)(void *)c + 1;
}

static inline struct ksmu_chunk *ksmu_item_chunk(const struct ksmu_rmap_item *it)
{
	return (struct ksmu_chunk *)((uintptr_t)it & ~(KSMU_CHUNK_BYTES - 1));
}

/** ksmu_item_addr() - address of the page @it tracks: O(1), no lookup. */
static inline uintptr_t ksmu_item_addr(const struct ksmu_rmap_item *it)
{
	struct ksmu_chunk *c = ksmu_item_chunk(it);
	size_t idx = (size_t)(it - ksmu_chunk_items(c));

	return c->base + (idx << KSMU_PAGE_SHIFT);
}

static inline unsigned int ksmu_item_flags(const struct ksmu_rmap_item *it)
{
	return (unsigned int)(it->hash_flags & KSMU_ITEM_FLAGS_MASK);
}

static inline uint64_t ksmu_item_key(const struct ksmu_rmap_item *it)
{
	return it->hash_flags >> KSMU_ITEM_KEY_SHIFT;
}

static inline uint64_t ksmu_hash_to_key(uint64_t hash)
{
	return hash >> KSMU_ITEM_KEY_SHIFT;
}

static inline void ksmu_item_set_flags(struct ksmu_rmap_item *it, unsigned int f)
{
	it->hash_flags |= f;
}

static inline void ksmu_item_clear_flags(struct ksmu_rmap_item *it, unsigned int f)
{
	it->hash_flags &= ~(uint64_t)f;
}

static inline void ksmu_item_set_key(struct ksmu_rmap_item *it, uint64_t key)
{
	it->hash_flags = (key << KSMU_ITEM_KEY_SHIFT) | (it->hash_flags & KSMU_ITEM_FLAGS_MASK);
}

static inline unsigned int ksmu_item_age(const struct ksmu_rmap_item *it)
{
	return (ksmu_item_flags(it) & KSMU_ITEM_AGE_MASK) >> KSMU_ITEM_AGE_SHIFT;
}

static inline void ksmu_item_set_age(struct ksmu_rmap_item *it, unsigned int age)
{
	it->hash_flags =
	    (it->hash_flags & ~(uint64_t)KSMU_ITEM_AGE_MASK) |
	    ((uint64_t)(age > KSMU_ITEM_AGE_MAX ? KSMU_ITEM_AGE_MAX : age) << KSMU_ITEM_AGE_SHIFT);
}

/**
 * struct ksmu_arena - the reserved address range that holds all chunks.
 * @base:      start of the reservation (KSMU_CHUNK_BYTES aligned)
 * @size:      bytes reserved (PROT_NONE until committed)
 * @committed: bytes from @base made read-write so far (bump pointer)
 * @free:      chunks given back, ready for reuse (already zeroed)
 * @nr_used:   chunks handed out and not yet freed
 */
struct ksmu_arena {
	uintptr_t base;
	size_t size;
	size_t committed;
	struct ksmu_chunk *free;
	size_t nr_used;
};

int ksmu_arena_init(struct ksmu_arena *a, size_t reserve_bytes);
void ksmu_arena_destroy(struct ksmu_arena *a);
/** Return a zeroed chunk for @region covering pages from @base, or NULL. */
struct ksmu_chunk *ksmu_chunk_alloc(struct ksmu_arena *a, struct ksmu_region *region,
				    uintptr_t base, uint32_t nr_items);
/** Give a chunk back; the caller has already taken its items out of every tree. */
void ksmu_chunk_free(struct ksmu_arena *a, struct ksmu_chunk *c);

#endif /* KSMU_RMAP_H */
