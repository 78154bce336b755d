/* SPDX-License-Identifier: MIT */
/*
 * rbtree.c - intrusive red-black tree used by the stable and unstable trees
 * and the reverse maps.  It balances and walks nodes that callers embed in
 * their own objects; callers own the keys, the comparator and the memory, so
 * the tree never allocates, never fails and never compares.
 *
 * DESIGN
 *   The classic algorithm (Bayer's symmetric binary B-trees as presented by
 *   Guibas and Sedgewick, in the textbook form of Cormen et al.) without a
 *   sentinel: a NULL child counts as a black leaf.  Because there is no
 *   sentinel, erase tracks the parent of the possibly-NULL node that carries
 *   the "extra black" explicitly.  Insert fix-up does at most two rotations,
 *   erase fix-up at most three; both loops walk towards the root and are
 *   iterative.  The parent pointer and the color share one word: bit 0 is
 *   the color (KSMU_RB_RED 0, KSMU_RB_BLACK 1), so a node freshly linked by
 *   ksmu_rb_link_node() is red without any extra store.  Helpers that set a
 *   parent keep the color bit and vice versa.
 *
 * INVARIANTS
 *   - The root is black and its parent is NULL.
 *   - A red node has no red child.
 *   - Every path from the root to a NULL child crosses the same number of
 *     black nodes (the black height), so the height is at most
 *     2 * log2(n + 1).
 *   - node->left/right point at children whose parent is node.
 *   - A node in no tree that was cleared is its own parent.
 *   ksmu_rb_check() verifies all but the last.
 *
 * LOCKING / THREADS
 *   None inside.  The caller serialises every operation on one tree
 *   (including walks with ksmu_rb_next()/ksmu_rb_prev(), which must not run
 *   concurrently with a modification).
 *
 * KERNEL REQUIREMENTS
 *   None.
 */
#include <stddef.h>
#include <stdint.h>

#include "rbtree.h"
#include "util.h"

#define RB_COLOR_MASK ((uintptr_t)1)
#define RB_MAX_DEPTH 128

static inline int rb_is_black(const struct ksmu_rb_node *n)
{
	return !n || (n->parent_color & RB_COLOR_MASK) == KSMU_RB_BLACK;
}

static inline int rb_is_red(const struct ksmu_rb_node *n)
{
	return !rb_is_black(n);
}

static inline uintptr_t rb_color(const struct ksmu_rb_node *n)
{
	return n->parent_color & RB_COLOR_MASK;
}

static inline void rb_set_color(struct ksmu_rb_node *n, uintptr_t color)
{
	n->parent_color = (n->parent_color & ~RB_COLOR_MASK) | color;
}

static inline void rb_set_black(struct ksmu_rb_node *n)
{
	n->parent_color |= KSMU_RB_BLACK;
}

static inline void rb_set_red(struct ksmu_rb_node *n)
{
	n->parent_color &= ~RB_COLOR_MASK;
}

static inline void rb_set_parent(struct ksmu_rb_node *n, struct ksmu_rb_node *parent)
{
	n->parent_color = (uintptr_t)parent | rb_color(n);
}

/*
 * Make whatever pointed at @old (its parent's child slot, or the root) point
 * at @new instead.  @parent is @old's parent.  @new's own parent pointer is
 * the caller's business.
 */
static inline void rb_change_child(struct ksmu_rb_node *old, struct ksmu_rb_node *new,
				   struct ksmu_rb_node *parent, struct ksmu_rb_root *root)
{
	if (!parent)
		root->node = new;
	else if (parent->left == old)
		parent->left = new;
	else
		parent->right = new;
}

/*
 *      x                y
 *     / \              / \
 *    a   y    ==>     x   c
 *       / \          / \
 *      b   c        a   b
 */
static void rb_rotate_left(struct ksmu_rb_node *x, struct ksmu_rb_root *root)
{
	struct ksmu_rb_node *y = x->right;
	struct ksmu_rb_node *xp = ksmu_rb_parent(x);

	x->right = y->left;
	if (y->left)
		rb_set_parent(y->left, x);
	rb_set_parent(y, xp);
	rb_change_child(x, y, xp, root);
	y->left = x;
	rb_set_parent(x, y);
}

/* Mirror image of rb_rotate_left(). */
static void rb_rotate_right(struct ksmu_rb_node *x, struct ksmu_rb_root *root)
{
	struct ksmu_rb_node *y = x->left;
	struct ksmu_rb_node *xp = ksmu_rb_parent(x);

	x->left = y->right;
	if (y->right)
		rb_set_parent(y->right, x);
	rb_set_parent(y, xp);
	rb_change_child(x, y, xp, root);
	y->right = x;
	rb_set_parent(x, y);
}

void ksmu_rb_insert_color(struct ksmu_rb_node *node, struct ksmu_rb_root *root)
{
	struct ksmu_rb_node *parent, *gparent, *uncle;

	/* @node is red; the only possible violation is a red @parent. */
	while ((parent = ksmu_rb_parent(node)) && rb_is_red(parent)) {
		/* A red parent is never the root, so the grandparent exists. */
		gparent = ksmu_rb_parent(parent);

		if (parent == gparent->left) {
			uncle = gparent->right;
			if (rb_is_red(uncle)) {
				/* Push the blackness down from the grandparent. */
				rb_set_black(parent);
				rb_set_black(uncle);
				rb_set_red(gparent);
				node = gparent;
				continue;
			}
			if (node == parent->right) {
				/* Inner child: turn it into the outer case. */
				rb_rotate_left(parent, root);
				node = parent;
				parent = ksmu_rb_parent(node);
			}
			rb_set_black(parent);
			rb_set_red(gparent);
			rb_rotate_right(gparent, root);
			break;
		} else {
			uncle = gparent->left;
			if (rb_is_red(uncle)) {
				rb_set_black(parent);
				rb_set_black(uncle);
				rb_set_red(gparent);
				node = gparent;
				continue;
			}
			if (node == parent->left) {
				rb_rotate_right(parent, root);
				node = parent;
				parent = ksmu_rb_parent(node);
			}
			rb_set_black(parent);
			rb_set_red(gparent);
			rb_rotate_left(gparent, root);
			break;
		}
	}
	rb_set_black(root->node);
}

/*
 * A black node was removed from the subtree rooted at @node (which may be
 * NULL), a child of @parent: every path through @node is one black short.
 * Push the deficit up or absorb it with rotations.
 */
static void rb_erase_fixup(struct ksmu_rb_node *node, struct ksmu_rb_node *parent,
			   struct ksmu_rb_root *root)
{
	struct ksmu_rb_node *sib;

	while (node != root->node && rb_is_black(node)) {
		/*
		 * @node is not the root, so @parent is not NULL; the sibling
		 * subtree has black height >= 1, so @sib is not NULL.
		 */
		if (node == parent->left) {
			sib = parent->right;
			if (rb_is_red(sib)) {
				/* Make the sibling black (parent becomes red). */
				rb_set_black(sib);
				rb_set_red(parent);
				rb_rotate_left(parent, root);
				sib = parent->right;
			}
			if (rb_is_black(sib->left) && rb_is_black(sib->right)) {
				/* Remove one black from both sides, move up. */
				rb_set_red(sib);
				node = parent;
				parent = ksmu_rb_parent(node);
				continue;
			}
			if (rb_is_black(sib->right)) {
				/* Only the inner nephew is red: make it outer. */
				rb_set_black(sib->left);
				rb_set_red(sib);
				rb_rotate_right(sib, root);
				sib = parent->right;
			}
			/* Outer nephew red: one rotation absorbs the deficit. */
			rb_set_color(sib, rb_color(parent));
			rb_set_black(parent);
			rb_set_black(sib->right);
			rb_rotate_left(parent, root);
			node = root->node;
			break;
		} else {
			sib = parent->left;
			if (rb_is_red(sib)) {
				rb_set_black(sib);
				rb_set_red(parent);
				rb_rotate_right(parent, root);
				sib = parent->left;
			}
			if (rb_is_black(sib->left) && rb_is_black(sib->right)) {
				rb_set_red(sib);
				node = parent;
				parent = ksmu_rb_parent(node);
				continue;
			}
			if (rb_is_black(sib->left)) {
				rb_set_black(sib->right);
				rb_set_red(sib);
				rb_rotate_left(sib, root);
				sib = parent->left;
			}
			rb_set_color(sib, rb_color(parent));
			rb_set_black(parent);
			rb_set_black(sib->left);
			rb_rotate_right(parent, root);
			node = root->node;
			break;
		}
	}
	if (node)
		rb_set_black(node);
}

void ksmu_rb_erase(struct ksmu_rb_node *node, struct ksmu_rb_root *root)
{
	struct ksmu_rb_node *spliced, *child, *child_parent;
	uintptr_t removed_color;

	/*
	 * @spliced is the node that actually leaves its position: @node itself
	 * if it has at most one child, otherwise its in-order successor (the
	 * leftmost node of the right subtree, which has no left child).
	 */
	if (!node->left || !node->right) {
		spliced = node;
	} else {
		spliced = node->right;
		while (spliced->left)
			spliced = spliced->left;
	}

	child = spliced->left ? spliced->left : spliced->right;
	child_parent = ksmu_rb_parent(spliced);
	removed_color = rb_color(spliced);

	if (child)
		rb_set_parent(child, child_parent);
	rb_change_child(spliced, child, child_parent, root);

	if (spliced != node) {
		/* The successor takes over @node's place, links and color. */
		struct ksmu_rb_node *np = ksmu_rb_parent(node);

		if (child_parent == node)
			child_parent = spliced;
		spliced->parent_color = node->parent_color;
		spliced->left = node->left;
		spliced->right = node->right;
		if (spliced->left)
			rb_set_parent(spliced->left, spliced);
		if (spliced->right)
			rb_set_parent(spliced->right, spliced);
		rb_change_child(node, spliced, np, root);
	}

	if (removed_color == KSMU_RB_BLACK)
		rb_erase_fixup(child, child_parent, root);
}

void ksmu_rb_replace_node(struct ksmu_rb_node *victim, struct ksmu_rb_node *repl,
			  struct ksmu_rb_root *root)
{
	struct ksmu_rb_node *parent = ksmu_rb_parent(victim);

	*repl = *victim;
	if (victim->left)
		rb_set_parent(victim->left, repl);
	if (victim->right)
		rb_set_parent(victim->right, repl);
	rb_change_child(victim, repl, parent, root);
}

struct ksmu_rb_node *ksmu_rb_first(const struct ksmu_rb_root *root)
{
	struct ksmu_rb_node *n = root->node;

	if (!n)
		return NULL;
	while (n->left)
		n = n->left;
	return n;
}

struct ksmu_rb_node *ksmu_rb_last(const struct ksmu_rb_root *root)
{
	struct ksmu_rb_node *n = root->node;

	if (!n)
		return NULL;
	while (n->right)
		n = n->right;
	return n;
}

struct ksmu_rb_node *ksmu_rb_next(const struct ksmu_rb_node *node)
{
	struct ksmu_rb_node *n, *parent;

	if (ksmu_unlikely(ksmu_rb_empty_node(node)))
		return NULL;

	if (node->right) {
		n = node->right;
		while (n->left)
			n = n->left;
		return n;
	}
	/* Climb while we are a right child; the first left-child link wins. */
	while ((parent = ksmu_rb_parent(node)) && node == parent->right)
		node = parent;
	return parent;
}

struct ksmu_rb_node *ksmu_rb_prev(const struct ksmu_rb_node *node)
{
	struct ksmu_rb_node *n, *parent;

	if (ksmu_unlikely(ksmu_rb_empty_node(node)))
		return NULL;

	if (node->left) {
		n = node->left;
		while (n->right)
			n = n->right;
		return n;
	}
	while ((parent = ksmu_rb_parent(node)) && node == parent->left)
		node = parent;
	return parent;
}

/*
 * Black height of the subtree at @n (NULL leaves not counted), or -1 on a
 * violation.  @parent is the node @n must point back at.
 */
static int rb_check_subtree(const struct ksmu_rb_node *n, const struct ksmu_rb_node *parent,
			    int depth)
{
	int lh, rh;

	if (!n)
		return 0;
	if (depth > RB_MAX_DEPTH)
		return -1;
	if (ksmu_rb_parent(n) != parent)
		return -1;
	if (rb_is_red(n) && (rb_is_red(n->left) || rb_is_red(n->right)))
		return -1;
	lh = rb_check_subtree(n->left, n, depth + 1);
	if (lh < 0)
		return -1;
	rh = rb_check_subtree(n->right, n, depth + 1);
	if (rh < 0 || lh != rh)
		return -1;
	return lh + (rb_is_black(n) ? 1 : 0);
}

int ksmu_rb_check(const struct ksmu_rb_root *root)
{
	int bh;

	if (!root->node)
		return 0;
	if (!rb_is_black(root->node))
		return -EUCLEAN;
	bh = rb_check_subtree(root->node, NULL, 1);
	return bh < 0 ? -EUCLEAN : bh;
}
