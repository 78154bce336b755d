/* SPDX-License-Identifier: MIT */
/*
 * rbtree.h - intrusive red-black tree, shaped like the kernel's rbtree API.
 *
 * The caller embeds a struct ksmu_rb_node in its own object, walks the tree
 * itself with its own comparator to find the insertion link, calls
 * ksmu_rb_link_node() and then ksmu_rb_insert_color() to rebalance.  The tree
 * never allocates and never compares keys.
 *
 * Color encoding: bit 0 of parent_color is the color, KSMU_RB_RED (0) or
 * KSMU_RB_BLACK (1); the remaining bits are the parent pointer (NULL for the
 * root).  A freshly linked node is therefore red with parent_color equal to
 * the parent's address.  A node that is in no tree ("cleared") is its own
 * parent: parent_color == (uintptr_t)node.
 *
 * The caller serialises all access to one tree; there is no internal locking.
 */
#ifndef KSMU_RBTREE_H
#define KSMU_RBTREE_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#ifndef EUCLEAN
#define EUCLEAN 117
#endif

#define KSMU_RB_RED ((uintptr_t)0)
#define KSMU_RB_BLACK ((uintptr_t)1)

struct ksmu_rb_node {
	uintptr_t parent_color; /* parent pointer | color (bit 0: 0 red, 1 black) */
	struct ksmu_rb_node *right;
	struct ksmu_rb_node *left;
} __attribute__((aligned(sizeof(long))));

_Static_assert(sizeof(void *) != 8 || sizeof(struct ksmu_rb_node) == 24,
	       "struct ksmu_rb_node must stay 24 bytes on 64-bit");

struct ksmu_rb_root {
	struct ksmu_rb_node *node;
};

#define KSMU_RB_ROOT ((struct ksmu_rb_root){ NULL })

#define ksmu_rb_entry(ptr, type, member) ksmu_container_of(ptr, type, member)

/**
 * ksmu_rb_parent() - parent of a node.
 * @n: node linked into a tree
 *
 * Return: the parent node, or NULL for the root.  Meaningless for a cleared
 * node (it returns the node itself).
 */
static inline struct ksmu_rb_node *ksmu_rb_parent(const struct ksmu_rb_node *n)
{
	return (struct ksmu_rb_node *)(n->parent_color & ~(uintptr_t)1);
}

/**
 * ksmu_rb_link_node() - attach a node as a red leaf.
 * @node: node to attach; its previous contents are ignored
 * @parent: the node whose child slot @link is, or NULL when @link is the root
 * @link: the empty child slot (&parent->left, &parent->right or &root->node)
 *
 * The tree is not balanced afterwards: call ksmu_rb_insert_color() next.
 */
static inline void ksmu_rb_link_node(struct ksmu_rb_node *node, struct ksmu_rb_node *parent,
				     struct ksmu_rb_node **link)
{
	node->parent_color = (uintptr_t)parent | KSMU_RB_RED;
	node->left = NULL;
	node->right = NULL;
	*link = node;
}

/**
 * ksmu_rb_clear_node() - mark a node as being in no tree.
 * @n: node, which must not currently be linked into a tree
 *
 * Afterwards ksmu_rb_empty_node(@n) is true.  ksmu_rb_erase() does not clear
 * the node by itself; callers that test membership clear it after erasing.
 */
static inline void ksmu_rb_clear_node(struct ksmu_rb_node *n)
{
	n->parent_color = (uintptr_t)n;
}

/**
 * ksmu_rb_empty_node() - whether a node was cleared.
 * @n: node
 *
 * Return: nonzero if @n was marked by ksmu_rb_clear_node() and not linked
 * since.
 */
static inline int ksmu_rb_empty_node(const struct ksmu_rb_node *n)
{
	return n->parent_color == (uintptr_t)n;
}

/**
 * ksmu_rb_empty_root() - whether a tree has no nodes.
 * @r: tree root
 *
 * Return: nonzero if the tree is empty.
 */
static inline int ksmu_rb_empty_root(const struct ksmu_rb_root *r)
{
	return r->node == NULL;
}

/**
 * ksmu_rb_insert_color() - rebalance after ksmu_rb_link_node().
 * @node: the node just linked
 * @root: tree that @node was linked into
 *
 * Restores the red-black properties with O(1) rotations (at most two) and
 * O(log n) recolorings.  Not recursive.
 */
void ksmu_rb_insert_color(struct ksmu_rb_node *node, struct ksmu_rb_root *root);

/**
 * ksmu_rb_erase() - remove a node from its tree.
 * @node: node linked into @root
 * @root: tree
 *
 * Handles nodes with zero, one or two children, including the root.  At most
 * three rotations.  The contents of @node are stale afterwards; call
 * ksmu_rb_clear_node() if membership is tested later.  Not recursive.
 */
void ksmu_rb_erase(struct ksmu_rb_node *node, struct ksmu_rb_root *root);

/**
 * ksmu_rb_replace_node() - put a node in the place of another.
 * @victim: node linked into @root
 * @repl: node not in any tree; must sort exactly where @victim does
 * @root: tree
 *
 * @repl takes over @victim's parent, children and color; no rebalancing is
 * needed.  @victim's contents are stale afterwards.
 */
void ksmu_rb_replace_node(struct ksmu_rb_node *victim, struct ksmu_rb_node *repl,
			  struct ksmu_rb_root *root);

/**
 * ksmu_rb_first() - leftmost (smallest) node.
 * @root: tree
 *
 * Return: the first node in order, or NULL if the tree is empty.
 */
struct ksmu_rb_node *ksmu_rb_first(const struct ksmu_rb_root *root);

/**
 * ksmu_rb_last() - rightmost (largest) node.
 * @root: tree
 *
 * Return: the last node in order, or NULL if the tree is empty.
 */
struct ksmu_rb_node *ksmu_rb_last(const struct ksmu_rb_root *root);

/**
 * ksmu_rb_next() - in-order successor.
 * @node: node linked into a tree
 *
 * Return: the next node, or NULL if @node is the last one or is cleared.
 */
struct ksmu_rb_node *ksmu_rb_next(const struct ksmu_rb_node *node);

/**
 * ksmu_rb_prev() - in-order predecessor.
 * @node: node linked into a tree
 *
 * Return: the previous node, or NULL if @node is the first one or is cleared.
 */
struct ksmu_rb_node *ksmu_rb_prev(const struct ksmu_rb_node *node);

/**
 * ksmu_rb_check() - verify the structure of a tree.
 * @root: tree
 *
 * Checks that the root is black and has no parent, that no red node has a red
 * child, that every path from the root to a missing child crosses the same
 * number of black nodes, that every child points back at its parent and that
 * the height is plausible (at most 128).  Key order is not checked: the tree
 * has no comparator.  O(n), recursive to the depth of the tree.
 *
 * Return: the black height (number of black nodes on each root-to-leaf path,
 * 0 for an empty tree), or -EUCLEAN on a violation.
 */
int ksmu_rb_check(const struct ksmu_rb_root *root);

#endif /* KSMU_RBTREE_H */
