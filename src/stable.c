/* SPDX-License-Identifier: MIT */
/*
 * stable.c - the stable tree of KSM, keyed by content hash.
 *
 * DESIGN
 *   One node per distinct content that two or more pages share.  As in the
 *   unstable tree (unstable.c), nodes are ordered by an integer key (the top
 *   56 bits of the content's XXH3-64) with the node address as tie-breaker,
 *   so hash collisions between different contents are simply neighbouring
 *   nodes: the scanner walks all nodes of a key and compares in full.
 *
 *   max_page_sharing works as in KSM: a node accepts at most that many
 *   members; more pages of the same content form a new node, and nodes of
 *   one content are linked into a chain (dup_prev/dup_next).  The counters
 *   stable_node_chains / stable_node_dups describe those chains.
 *
 *   In release 0.1 nothing is merged yet: a node records that its members
 *   hold equal contents (the canonical member's page is the reference) and
 *   feeds the saving estimate.  Release 0.2 points nodes at store pages.
 *
 * INVARIANTS
 *   - An item is a member of a node iff KSMU_ITEM_STABLE is set in it, and
 *     then item.s.stable points at that node.
 *   - n->canonical is a member of n, or NULL iff n has no member.
 *   - A chain's nodes all hold the same content; nr_dups counts the nodes of
 *     chains with two or more nodes, nr_chains those chains.
 *
 * LOCKING / THREADS
 *   Called with the engine lock held.
 *
 * KERNEL REQUIREMENTS
 *   None.
 */
#include <stdlib.h>

#include "stable.h"

static int node_cmp(uint64_t key, const struct ksmu_stable_node *a, const struct ksmu_stable_node *b)
{
	if (key != b->key)
		return key < b->key ? -1 : 1;
	if (a == b)
		return 0;
	return (uintptr_t)a < (uintptr_t)b ? -1 : 1;
}

struct ksmu_stable_node *ksmu_stable_first(const struct ksmu_stable_tree *t, uint64_t key)
{
	struct ksmu_rb_node *n = t->root.node;
	struct ksmu_stable_node *found = NULL;

	while (n) {
		struct ksmu_stable_node *cur = ksmu_rb_entry(n, struct ksmu_stable_node, node);

		if (key < cur->key) {
			n = n->left;
		} else if (key > cur->key) {
			n = n->right;
		} else {
			found = cur;
			n = n->left;
		}
	}
	return found;
}

struct ksmu_stable_node *ksmu_stable_next_same(const struct ksmu_stable_node *sn)
{
	struct ksmu_rb_node *n = ksmu_rb_next(&sn->node);
	struct ksmu_stable_node *nx;

	if (!n)
		return NULL;
	nx = ksmu_rb_entry(n, struct ksmu_stable_node, node);
	return nx->key == sn->key ? nx : NULL;
}

struct ksmu_stable_node *ksmu_stable_new(struct ksmu_stable_tree *t, uint64_t key)
{
	struct ksmu_rb_node **link = &t->root.node, *parent = NULL;
	struct ksmu_stable_node *sn = calloc(1, sizeof(*sn));

	if (!sn)
		return NULL;
	sn->key = key;
	while (*link) {
		struct ksmu_stable_node *cur = ksmu_rb_entry(*link, struct ksmu_stable_node, node);

		parent = *link;
		link = node_cmp(key, sn, cur) < 0 ? &(*link)->left : &(*link)->right;
	}
	ksmu_rb_link_node(&sn->node, parent, link);
	ksmu_rb_insert_color(&sn->node, &t->root);
	t->nr_nodes++;
	return sn;
}

void ksmu_stable_add(struct ksmu_stable_tree *t, struct ksmu_stable_node *sn,
		     struct ksmu_rmap_item *it)
{
	KSMU_BUG_ON(ksmu_item_flags(it) & (KSMU_ITEM_UNSTABLE | KSMU_ITEM_STABLE));
	it->s.stable = sn;
	it->s.prev = NULL;
	it->s.next = sn->members;
	if (sn->members)
		sn->members->s.prev = it;
	sn->members = it;
	if (!sn->canonical)
		sn->canonical = it;
	sn->nr_members++;
	ksmu_item_set_flags(it, KSMU_ITEM_STABLE);
	t->nr_members++;
}

struct ksmu_stable_node *ksmu_stable_remove(struct ksmu_stable_tree *t, struct ksmu_rmap_item *it)
{
	struct ksmu_stable_node *sn = it->s.stable;

	KSMU_BUG_ON(!(ksmu_item_flags(it) & KSMU_ITEM_STABLE) || !sn);
	if (it->s.prev)
		it->s.prev->s.next = it->s.next;
	else
		sn->members = it->s.next;
	if (it->s.next)
		it->s.next->s.prev = it->s.prev;
	sn->nr_members--;
	if (sn->canonical == it)
		sn->canonical = sn->members;
	it->s.stable = NULL;
	it->s.next = NULL;
	it->s.prev = NULL;
	ksmu_item_clear_flags(it, KSMU_ITEM_STABLE);
	t->nr_members--;
	return sn;
}

static size_t chain_len(const struct ksmu_stable_node *sn)
{
	size_t n = 1;
	const struct ksmu_stable_node *p;

	for (p = sn->dup_prev; p; p = p->dup_prev)
		n++;
	for (p = sn->dup_next; p; p = p->dup_next)
		n++;
	return n;
}

void ksmu_stable_chain(struct ksmu_stable_tree *t, struct ksmu_stable_node *head,
		       struct ksmu_stable_node *sn)
{
	size_t before = chain_len(head);

	KSMU_BUG_ON(sn->dup_next || sn->dup_prev || head == sn);
	sn->dup_prev = head;
	sn->dup_next = head->dup_next;
	if (head->dup_next)
		head->dup_next->dup_prev = sn;
	head->dup_next = sn;
	if (before == 1) {
		t->nr_chains++;
		t->nr_dups += 2;
	} else {
		t->nr_dups++;
	}
}

void ksmu_stable_free(struct ksmu_stable_tree *t, struct ksmu_stable_node *sn)
{
	KSMU_BUG_ON(sn->nr_members || sn->members);
	if (sn->dup_prev || sn->dup_next) {
		size_t before = chain_len(sn);

		if (sn->dup_prev)
			sn->dup_prev->dup_next = sn->dup_next;
		if (sn->dup_next)
			sn->dup_next->dup_prev = sn->dup_prev;
		if (before == 2) {
			t->nr_chains--;
			t->nr_dups -= 2;
		} else {
			t->nr_dups--;
		}
	}
	ksmu_rb_erase(&sn->node, &t->root);
	t->nr_nodes--;
	free(sn);
}
