/* SPDX-License-Identifier: MIT */
/*
 * unstable.h - the unstable tree: pages seen unchanged, not (yet) merged.
 */
#ifndef KSMU_UNSTABLE_H
#define KSMU_UNSTABLE_H

#include "rmap.h"

/**
 * struct ksmu_unstable_tree - rmap items ordered by (key, item address).
 * @root: the tree
 * @nr:   items in it (the kernel's pages_unshared)
 */
struct ksmu_unstable_tree {
	struct ksmu_rb_root root;
	size_t nr;
};

void ksmu_unstable_insert(struct ksmu_unstable_tree *t, struct ksmu_rmap_item *it);
void ksmu_unstable_erase(struct ksmu_unstable_tree *t, struct ksmu_rmap_item *it);
/** First item whose key equals @key, or NULL. */
struct ksmu_rmap_item *ksmu_unstable_first(const struct ksmu_unstable_tree *t, uint64_t key);
/** Next item with the same key as @it, or NULL. */
struct ksmu_rmap_item *ksmu_unstable_next_same(const struct ksmu_rmap_item *it);

#endif /* KSMU_UNSTABLE_H */
