/* SPDX-License-Identifier: MIT */
/*
 * index.h - ksmd-user's host-wide index: shared stores, the stable index of
 * their pages, the global unstable table, and grants (see index.c).
 */
#ifndef KSMD_INDEX_H
#define KSMD_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

#define KSMD_MAX_STORES 4096
#define KSMD_NO_ENTRY UINT32_MAX

/* What a store holds pages for: a content or zero group on a NUMA node. */
struct ksmd_store_key {
	uint64_t group; /* group id (ksmd.c: derived from the domain) */
	uint16_t node;
	uint16_t zero; /* 1: the zero page of a zero group */
};

struct ksmd_store {
	uint32_t id; /* >= 1, index in the store table */
	struct ksmd_store_key key;
	char domain[32]; /* name of the group's first domain, for status */
	struct ksmu_store s;
	int ro_fd;	 /* read-only descriptor sent to agents */
	uint32_t *grants; /* per page: grants held by all processes */
	uint64_t *hash;	 /* per page: XXH3 of its content */
	size_t cap;	 /* entries of @grants and @hash */
};

/* Per-process grants: (store, idx) -> count, open addressing. */
struct ksmd_grants {
	uint64_t *keys; /* store << 32 | idx; 0 = empty (store ids start at 1) */
	uint32_t *counts;
	size_t cap, used;
	uint64_t total;
};

struct ksmd_index_stats {
	uint64_t lookups, matches_stable, matches_unstable, created, hints, releases;
	uint64_t hash_collisions, freed, unstable_entries, stores, store_pages;
};

struct ksmd_index;

struct ksmd_index *ksmd_index_new(void);
void ksmd_index_free(struct ksmd_index *ix);

/* The store for @key, created on first use (NULL: -errno in *@err). */
struct ksmd_store *ksmd_index_store(struct ksmd_index *ix, const struct ksmd_store_key *key,
				    const char *domain, int *err);
struct ksmd_store *ksmd_index_store_by_id(struct ksmd_index *ix, uint32_t id);
/* Visit stores in id order: returns the next after @prev (NULL: first). */
struct ksmd_store *ksmd_index_next_store(struct ksmd_index *ix, struct ksmd_store *prev);

/*
 * ksmd_index_find() - a page of @st with content @page (hash @h), compared
 * in full.  Return: its index, or -1.
 */
long ksmd_index_find(struct ksmd_index *ix, struct ksmd_store *st, const void *page, uint64_t h);

/* Allocate a page of @st holding @page (hash @h) and index it.  Return: idx or -errno. */
long ksmd_index_create(struct ksmd_index *ix, struct ksmd_store *st, const void *page, uint64_t h);

/* A grant of (@st, @idx) to @g; the page must be allocated. */
int ksmd_grant(struct ksmd_index *ix, struct ksmd_grants *g, struct ksmd_store *st, uint32_t idx);
/*
 * Take back up to @count grants of (store id, idx) from @g (a client can
 * only give back what it holds).  A page whose grants reach 0 is freed.
 * Return: grants taken back.
 */
uint32_t ksmd_ungrant(struct ksmd_index *ix, struct ksmd_grants *g, uint32_t store, uint32_t idx,
		      uint32_t count);
/* Grants of (store id, idx) that @g holds (0: none, or no such store). */
uint32_t ksmd_grants_held(const struct ksmd_grants *g, uint32_t store, uint32_t idx);
/* Free every grant of @g (the process is gone). */
void ksmd_grants_drop(struct ksmd_index *ix, struct ksmd_grants *g);
/* @dst = a copy of @src (fork); grants counted twice.  Return: 0 or -ENOMEM. */
int ksmd_grants_copy(struct ksmd_index *ix, struct ksmd_grants *dst, const struct ksmd_grants *src);
/* A page with no grant (created but not handed out): free it. */
void ksmd_index_unused(struct ksmd_index *ix, struct ksmd_store *st, uint32_t idx);

/* Global unstable table: pages of clients that had no match. */
struct ksmd_unstable_hit {
	uint32_t client;
	uint64_t addr;
};
/* Remember (client, addr) with content hash @h for @group; replaces an older entry at addr. */
int ksmd_unstable_put(struct ksmd_index *ix, uint32_t client, uint64_t addr, uint64_t h,
		      uint64_t group);
/*
 * Find and remove an entry of another client than @client with hash @h and
 * group @group.  Return: true and *@hit.  (The content is not known to the
 * daemon: the hinted agent compares in full.)
 */
bool ksmd_unstable_take(struct ksmd_index *ix, uint32_t client, uint64_t h, uint64_t group,
			struct ksmd_unstable_hit *hit);
/* Forget every entry of @client. */
void ksmd_unstable_drop_client(struct ksmd_index *ix, uint32_t client);

void ksmd_index_get_stats(const struct ksmd_index *ix, struct ksmd_index_stats *st);
uint64_t ksmd_index_metadata_bytes(const struct ksmd_index *ix);
uint64_t ksmd_grants_bytes(const struct ksmd_grants *g);

#endif
