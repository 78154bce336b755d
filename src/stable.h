/* SPDX-License-Identifier: MIT */
/*
 * stable.h - the stable tree: one node per merged (in 0.1: mergeable) content.
 */
#ifndef KSMU_STABLE_H
#define KSMU_STABLE_H

#include "rmap.h"

struct ksmu_pstore;

/**
 * struct ksmu_stable_node - one distinct content shared by several pages.
 * @node:       link in the stable tree, ordered by (@key, node address)
 * @key:        56-bit hash key of the content
 * @members:    rmap items of the pages holding this content (list via item.s)
 * @canonical:  the member whose page is compared against (0.1: pages are
 *              not merged yet, so the content lives in a member's page)
 * @dup_next:   next node of a chain of nodes with the same content, formed
 *              when one node reached max_page_sharing members (NULL: none)
 * @dup_prev:   previous node of that chain
 * @nr_members: length of @members
 * @store:      when merging: the store holding the node's content (dedup.c);
 *              NULL for a node of the detection-only mode
 * @store_idx:  page of @store that every member maps
 */
struct ksmu_stable_node {
	struct ksmu_rb_node node;
	uint64_t key;
	struct ksmu_rmap_item *members;
	struct ksmu_rmap_item *canonical;
	struct ksmu_stable_node *dup_next;
	struct ksmu_stable_node *dup_prev;
	uint32_t nr_members;
	uint32_t store_idx;
	struct ksmu_pstore *store;
};

/**
 * struct ksmu_stable_tree - all stable nodes and their counters.
 * @root:       the tree
 * @nr_nodes:   nodes (pages_shared)
 * @nr_members: items in all nodes (pages_shared + pages_sharing)
 * @nr_chains:  chains of two or more nodes (stable_node_chains)
 * @nr_dups:    nodes inside such chains (stable_node_dups)
 */
struct ksmu_stable_tree {
	struct ksmu_rb_root root;
	size_t nr_nodes;
	size_t nr_members;
	size_t nr_chains;
	size_t nr_dups;
};

/** First node with @key, or NULL; iterate with ksmu_stable_next_same(). */
struct ksmu_stable_node *ksmu_stable_first(const struct ksmu_stable_tree *t, uint64_t key);
struct ksmu_stable_node *ksmu_stable_next_same(const struct ksmu_stable_node *n);
/** Allocate and insert an empty node, or NULL if out of memory. */
struct ksmu_stable_node *ksmu_stable_new(struct ksmu_stable_tree *t, uint64_t key);
/** Add @it (in no tree) to @n; the first member becomes canonical. */
void ksmu_stable_add(struct ksmu_stable_tree *t, struct ksmu_stable_node *n,
		     struct ksmu_rmap_item *it);
/** Take @it out of its node; returns the node (possibly left with 0 or 1 member). */
struct ksmu_stable_node *ksmu_stable_remove(struct ksmu_stable_tree *t, struct ksmu_rmap_item *it);
/** Put @n into the chain of @head (same content, @head is full). */
void ksmu_stable_chain(struct ksmu_stable_tree *t, struct ksmu_stable_node *head,
		       struct ksmu_stable_node *n);
/** Erase and free an empty node, unlinking it from its chain. */
void ksmu_stable_free(struct ksmu_stable_tree *t, struct ksmu_stable_node *n);

#endif /* KSMU_STABLE_H */
