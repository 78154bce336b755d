/* SPDX-License-Identifier: MIT */
/*
 * unstable.c - the unstable tree of KSM, keyed by content hash.
 *
 * DESIGN
 *   Kernel KSM orders its unstable tree by memcmp() of live page contents.
 *   Since those contents can change under it, the tree can become
 *   inconsistent, which is why KSM throws it away and rebuilds it on every
 *   full scan.  ksmu orders the tree by the *stored* 56-bit hash key of each
 *   item (ties broken by item address, so equal contents coexist), which is
 *   a plain integer: a lookup costs integer comparisons only, and a page
 *   that changes after insertion cannot disorder the tree, it only makes its
 *   entry stale.  Stale entries are harmless because no page is ever treated
 *   as a duplicate on a key match alone: scan.c compares contents in full.
 *
 *   The scanner still gives KSM's guarantee that the tree only holds pages
 *   that were unchanged since their last visit: every visit of a page that
 *   changed removes it (and marks it volatile), so each full pass rebuilds
 *   the set of entries exactly where something changed - and with exact
 *   dirty tracking, nowhere else.
 *
 * INVARIANTS
 *   - An item is in the tree iff KSMU_ITEM_UNSTABLE is set in it.
 *   - In-order traversal is sorted by (key, item address).
 *
 * LOCKING / THREADS
 *   Called with the engine lock held.
 *
 * KERNEL REQUIREMENTS
 *   None: the trees never touch the kernel.
 */
#include "unstable.h"

static int item_cmp(uint64_t key, const struct ksmu_rmap_item *a, const struct ksmu_rmap_item *b)
{
	uint64_t kb = ksmu_item_key(b);

	if (key != kb)
		return key < kb ? -1 : 1;
	if (a == b)
		return 0;
	return (uintptr_t)a < (uintptr_t)b ? -1 : 1;
}

void ksmu_unstable_insert(struct ksmu_unstable_tree *t, struct ksmu_rmap_item *it)
{
	struct ksmu_rb_node **link = &t->root.node, *parent = NULL;
	uint64_t key = ksmu_item_key(it);

	ksmu_assert(!(ksmu_item_flags(it) & (KSMU_ITEM_UNSTABLE | KSMU_ITEM_STABLE)));
	while (*link) {
		struct ksmu_rmap_item *cur = ksmu_rb_entry(*link, struct ksmu_rmap_item, node);
		int c = item_cmp(key, it, cur);

		KSMU_BUG_ON(c == 0);
		parent = *link;
		link = c < 0 ? &(*link)->left : &(*link)->right;
	}
	ksmu_rb_link_node(&it->node, parent, link);
	ksmu_rb_insert_color(&it->node, &t->root);
	ksmu_item_set_flags(it, KSMU_ITEM_UNSTABLE);
	t->nr++;
}

void ksmu_unstable_erase(struct ksmu_unstable_tree *t, struct ksmu_rmap_item *it)
{
	KSMU_BUG_ON(!(ksmu_item_flags(it) & KSMU_ITEM_UNSTABLE));
	ksmu_rb_erase(&it->node, &t->root);
	ksmu_item_clear_flags(it, KSMU_ITEM_UNSTABLE);
	t->nr--;
}

struct ksmu_rmap_item *ksmu_unstable_first(const struct ksmu_unstable_tree *t, uint64_t key)
{
	struct ksmu_rb_node *n = t->root.node;
	struct ksmu_rmap_item *found = NULL;

	while (n) {
		struct ksmu_rmap_item *cur = ksmu_rb_entry(n, struct ksmu_rmap_item, node);
		uint64_t k = ksmu_item_key(cur);

		if (key < k) {
			n = n->left;
		} else if (key > k) {
			n = n->right;
		} else {
			found = cur; /* keep going left for the leftmost equal key */
			n = n->left;
		}
	}
	return found;
}

struct ksmu_rmap_item *ksmu_unstable_next_same(const struct ksmu_rmap_item *it)
{
	struct ksmu_rb_node *n = ksmu_rb_next(&it->node);
	struct ksmu_rmap_item *nx;

	if (!n)
		return NULL;
	nx = ksmu_rb_entry(n, struct ksmu_rmap_item, node);
	return ksmu_item_key(nx) == ksmu_item_key(it) ? nx : NULL;
}
