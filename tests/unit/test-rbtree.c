/* Description: red-black tree (src/rbtree.c) - random insert/erase against a sorted reference
 * array with duplicate keys, ksmu_rb_check() after every batch, in-order and reverse traversal,
 * first/last, height bounds, erase of the root and down to empty, replace_node,
 * clear_node/empty_node, and corruptions that ksmu_rb_check() must reject. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rbtree.h"
#include "test.h"

struct item {
	struct ksmu_rb_node rb;
	uint64_t key;
	uint64_t seq;
};

static uint64_t rng_state;

static uint64_t rng(void)
{
	/* splitmix64: deterministic, good enough for test data. */
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static uint64_t rng_below(uint64_t n)
{
	return rng() % n;
}

static int item_cmp(const struct item *a, const struct item *b)
{
	if (a->key != b->key)
		return a->key < b->key ? -1 : 1;
	if (a->seq != b->seq)
		return a->seq < b->seq ? -1 : 1;
	return 0;
}

static struct item *to_item(const struct ksmu_rb_node *n)
{
	return n ? ksmu_rb_entry(n, struct item, rb) : NULL;
}

static void tree_insert(struct ksmu_rb_root *root, struct item *it)
{
	struct ksmu_rb_node **link = &root->node, *parent = NULL;

	while (*link) {
		parent = *link;
		if (item_cmp(it, to_item(parent)) < 0)
			link = &parent->left;
		else
			link = &parent->right;
	}
	ksmu_rb_link_node(&it->rb, parent, link);
	ksmu_rb_insert_color(&it->rb, root);
}

static int height(const struct ksmu_rb_node *n)
{
	int l, r;

	if (!n)
		return 0;
	l = height(n->left);
	r = height(n->right);
	return 1 + (l > r ? l : r);
}

static int log2_floor(size_t v)
{
	int l = -1;

	while (v) {
		v >>= 1;
		l++;
	}
	return l;
}

/*
 * Full verification of @root against @ref (sorted, @n entries): structure,
 * height bounds, first/last, forward and backward walks.  Returns 1 if all
 * is well; reports at most one CHECK failure per call.
 */
static int verify(const char *name, const struct ksmu_rb_root *root, struct item *const *ref,
		  size_t n)
{
	const struct ksmu_rb_node *p;
	int bh = ksmu_rb_check(root);
	int h = height(root->node);
	size_t i;
	int ok = 1;

	if (bh < 0) {
		CHECK(name, bh >= 0);
		return 0;
	}
	/* A tree with black height bh has at least 2^bh - 1 nodes. */
	if (bh > 62 || ((size_t)1 << bh) - 1 > n)
		ok = 0;
	/* Height <= 2 * log2(n + 1); with integer log: h <= 2 * floor(log2(n + 1)) + 1. */
	if (h > 2 * log2_floor(n + 1) + 1 || h > 2 * bh + 1)
		ok = 0;
	if (!ok) {
		fprintf(stderr, "%s: n=%zu bh=%d h=%d\n", name, n, bh, h);
		CHECK(name, !"height bounds");
		return 0;
	}

	if (to_item(ksmu_rb_first(root)) != (n ? ref[0] : NULL) ||
	    to_item(ksmu_rb_last(root)) != (n ? ref[n - 1] : NULL)) {
		CHECK(name, !"first/last");
		return 0;
	}
	if (ksmu_rb_empty_root(root) != (n == 0)) {
		CHECK(name, !"empty_root");
		return 0;
	}

	for (i = 0, p = ksmu_rb_first(root); p; p = ksmu_rb_next(p), i++) {
		if (i >= n || to_item(p) != ref[i]) {
			ok = 0;
			break;
		}
	}
	if (!ok || i != n) {
		CHECK(name, !"forward walk");
		return 0;
	}
	for (i = n, p = ksmu_rb_last(root); p; p = ksmu_rb_prev(p)) {
		if (i == 0 || to_item(p) != ref[--i]) {
			ok = 0;
			break;
		}
	}
	if (!ok || i != 0) {
		CHECK(name, !"backward walk");
		return 0;
	}
	return 1;
}

/* Position of the first reference entry not smaller than @it. */
static size_t ref_lower_bound(struct item *const *ref, size_t n, const struct item *it)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (item_cmp(ref[mid], it) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/*
 * Random operations on a pool of @pool items with keys below @keys (so many
 * duplicates).  The insert probability drifts so that the tree size sweeps
 * the whole range from empty to full.
 */
static void random_run(uint64_t seed, size_t pool, uint64_t keys, long ops, int every)
{
	struct ksmu_rb_root root = KSMU_RB_ROOT;
	struct item *items = calloc(pool, sizeof(*items));
	struct item **ref = calloc(pool, sizeof(*ref));
	size_t *out = calloc(pool, sizeof(*out)); /* indices of items not in the tree */
	size_t n = 0, nout = pool, i;
	uint64_t seq = 0;
	unsigned int p_insert = 50;
	long op, failures_before = t_failures;
	char name[64];

	snprintf(name, sizeof(name), "random seed=%llu pool=%zu", (unsigned long long)seed, pool);
	if (!items || !ref || !out) {
		CHECK(name, !"allocation");
		goto done;
	}
	rng_state = seed;
	for (i = 0; i < pool; i++) {
		ksmu_rb_clear_node(&items[i].rb);
		out[i] = i;
	}

	for (op = 0; op < ops; op++) {
		if (op % 997 == 0)
			p_insert = 10 + (unsigned int)rng_below(81);
		if (nout && (n == 0 || rng_below(100) < p_insert)) {
			size_t k = rng_below(nout);
			struct item *it = &items[out[k]];
			size_t pos;

			out[k] = out[--nout];
			if (!ksmu_rb_empty_node(&it->rb))
				CHECK(name, !"out-of-tree item not empty");
			it->key = rng_below(keys);
			it->seq = ++seq;
			tree_insert(&root, it);
			if (ksmu_rb_empty_node(&it->rb))
				CHECK(name, !"linked item empty");
			pos = ref_lower_bound(ref, n, it);
			memmove(&ref[pos + 1], &ref[pos], (n - pos) * sizeof(*ref));
			ref[pos] = it;
			n++;
		} else {
			size_t pos;
			struct item *it;

			/* Erase the root now and then, otherwise a random member. */
			if (rng_below(16) == 0) {
				it = to_item(root.node);
				pos = ref_lower_bound(ref, n, it);
			} else {
				pos = rng_below(n);
				it = ref[pos];
			}
			if (pos >= n || ref[pos] != it) {
				CHECK(name, !"reference lookup");
				goto done;
			}
			ksmu_rb_erase(&it->rb, &root);
			ksmu_rb_clear_node(&it->rb);
			memmove(&ref[pos], &ref[pos + 1], (n - pos - 1) * sizeof(*ref));
			n--;
			out[nout++] = (size_t)(it - items);
		}
		if ((op + 1) % every == 0 && !verify(name, &root, ref, n))
			goto done;
		if (t_failures - failures_before > 10)
			goto done;
	}
	if (!verify(name, &root, ref, n))
		goto done;

	/* Drain to empty, erasing in random order. */
	while (n) {
		size_t pos = rng_below(n);

		ksmu_rb_erase(&ref[pos]->rb, &root);
		memmove(&ref[pos], &ref[pos + 1], (n - pos - 1) * sizeof(*ref));
		n--;
		if ((n % 8) == 0 && !verify(name, &root, ref, n))
			goto done;
	}
	CHECK(name, root.node == NULL);
	CHECK(name, ksmu_rb_check(&root) == 0);
	CHECK(name, ksmu_rb_first(&root) == NULL && ksmu_rb_last(&root) == NULL);
done:
	free(out);
	free(ref);
	free(items);
}

/* Insert @n items in ascending or descending order, then erase the root until empty. */
static void sequential_and_root_erase(size_t n, int descending)
{
	struct ksmu_rb_root root = KSMU_RB_ROOT;
	struct item *items = calloc(n, sizeof(*items));
	struct item **ref = calloc(n, sizeof(*ref));
	const char *name = descending ? "descending insert" : "ascending insert";
	size_t i, left;
	int ok = 1;

	if (!items || !ref) {
		CHECK(name, !"allocation");
		goto done;
	}
	for (i = 0; i < n; i++) {
		size_t k = descending ? n - 1 - i : i;

		items[k].key = k / 3; /* duplicates: ties broken by seq */
		items[k].seq = k;
		ref[k] = &items[k];
		tree_insert(&root, &items[k]);
		if (i % 101 == 0 && ksmu_rb_check(&root) < 0)
			ok = 0;
	}
	CHECK(name, ok);
	CHECK(name, verify(name, &root, ref, n));

	/* Erase the root until the tree is empty. */
	for (left = n; left; left--) {
		struct item *it = to_item(root.node);
		size_t pos = ref_lower_bound(ref, left, it);

		if (pos >= left || ref[pos] != it) {
			CHECK("root erase: root in reference", 0);
			goto done;
		}
		ksmu_rb_erase(root.node, &root);
		memmove(&ref[pos], &ref[pos + 1], (left - pos - 1) * sizeof(*ref));
		if ((left - 1) % 37 == 0 || left < 10) {
			if (!verify("root erase", &root, ref, left - 1))
				goto done;
		}
	}
	CHECK("root erase: empty", ksmu_rb_empty_root(&root));
done:
	free(ref);
	free(items);
}

static void small_cases(void)
{
	struct ksmu_rb_root root = KSMU_RB_ROOT;
	struct item a = { .key = 1 }, b = { .key = 2 }, c = { .key = 3 };
	struct item *ref[3];

	CHECK("empty root", ksmu_rb_empty_root(&root));
	CHECK("empty check", ksmu_rb_check(&root) == 0);
	CHECK("empty first", ksmu_rb_first(&root) == NULL);
	CHECK("empty last", ksmu_rb_last(&root) == NULL);

	ksmu_rb_clear_node(&a.rb);
	CHECK("clear_node", ksmu_rb_empty_node(&a.rb));
	CHECK("next of cleared", ksmu_rb_next(&a.rb) == NULL);
	CHECK("prev of cleared", ksmu_rb_prev(&a.rb) == NULL);

	tree_insert(&root, &a);
	CHECK("single not empty node", !ksmu_rb_empty_node(&a.rb));
	CHECK("single not empty root", !ksmu_rb_empty_root(&root));
	CHECK("single root parent", ksmu_rb_parent(&a.rb) == NULL);
	CHECK("single black height", ksmu_rb_check(&root) == 1);
	CHECK("single root black", (a.rb.parent_color & 1) == KSMU_RB_BLACK);
	CHECK("single next", ksmu_rb_next(&a.rb) == NULL);
	CHECK("single prev", ksmu_rb_prev(&a.rb) == NULL);

	tree_insert(&root, &c);
	tree_insert(&root, &b); /* forces a double rotation */
	ref[0] = &a;
	ref[1] = &b;
	ref[2] = &c;
	CHECK("three", verify("three", &root, ref, 3));
	CHECK("three root", root.node == &b.rb);
	CHECK("three bh", ksmu_rb_check(&root) == 1);

	/* Erase the root with two children. */
	ksmu_rb_erase(&b.rb, &root);
	ksmu_rb_clear_node(&b.rb);
	ref[1] = &c;
	CHECK("erase root 2 children", verify("erase root 2", &root, ref, 2));
	CHECK("erased empty node", ksmu_rb_empty_node(&b.rb));

	/* Erase the root with one child, then the last node. */
	ksmu_rb_erase(root.node, &root);
	CHECK("erase root 1 child", ksmu_rb_check(&root) == 1 && root.node &&
					    ksmu_rb_parent(root.node) == NULL);
	ksmu_rb_erase(root.node, &root);
	CHECK("erase to empty", ksmu_rb_empty_root(&root) && ksmu_rb_check(&root) == 0);
}

/* replace_node on every node (root included) of a random tree keeps order and structure. */
static void replace_test(void)
{
	enum { N = 300 };
	struct ksmu_rb_root root = KSMU_RB_ROOT;
	struct item *a = calloc(N, sizeof(*a)), *b = calloc(N, sizeof(*b));
	struct item **ref = calloc(N, sizeof(*ref));
	size_t i;
	int ok = 1;

	if (!a || !b || !ref) {
		CHECK("replace: allocation", 0);
		goto done;
	}
	rng_state = 4242;
	for (i = 0; i < N; i++) {
		a[i].key = rng_below(50);
		a[i].seq = i;
		tree_insert(&root, &a[i]);
	}
	/* Take the reference from the tree walk and check that it is strictly sorted. */
	i = 0;
	for (struct ksmu_rb_node *p = ksmu_rb_first(&root); p && i < N; p = ksmu_rb_next(p))
		ref[i++] = to_item(p);
	CHECK("replace: count", i == N);
	for (i = 1; i < N; i++)
		if (item_cmp(ref[i - 1], ref[i]) >= 0)
			ok = 0;
	CHECK("replace: initial order", ok);
	CHECK("replace: initial", verify("replace initial", &root, ref, N));

	/* Replace the root first, then everything else in order of the walk. */
	{
		struct item *victim = to_item(root.node);
		struct item *repl = &b[victim - a];
		size_t pos = ref_lower_bound(ref, N, victim);
		int bh = ksmu_rb_check(&root);

		repl->key = victim->key;
		repl->seq = victim->seq;
		ksmu_rb_replace_node(&victim->rb, &repl->rb, &root);
		ref[pos] = repl;
		CHECK("replace root", root.node == &repl->rb);
		CHECK("replace root bh", ksmu_rb_check(&root) == bh);
		CHECK("replace root verify", verify("replace root", &root, ref, N));
	}
	for (i = 0; i < N; i++) {
		struct item *victim = ref[i], *repl;

		if (victim >= b && victim < b + N)
			continue; /* already replaced (the former root) */
		repl = &b[victim - a];
		repl->key = victim->key;
		repl->seq = victim->seq;
		ksmu_rb_replace_node(&victim->rb, &repl->rb, &root);
		ref[i] = repl;
		if (i % 17 == 0 && !verify("replace", &root, ref, N)) {
			ok = 0;
			break;
		}
	}
	CHECK("replace all", ok && verify("replace all", &root, ref, N));
	/* No node of the old set may remain reachable. */
	ok = 1;
	for (struct ksmu_rb_node *p = ksmu_rb_first(&root); p; p = ksmu_rb_next(p))
		if (!(to_item(p) >= b && to_item(p) < b + N))
			ok = 0;
	CHECK("replace: only new nodes", ok);
done:
	free(ref);
	free(b);
	free(a);
}

static void set_color(struct item *it, uintptr_t color)
{
	it->rb.parent_color = (it->rb.parent_color & ~(uintptr_t)1) | color;
}

static void hand_link(struct item *it, struct item *parent, int right, uintptr_t color,
		      struct ksmu_rb_root *root)
{
	struct ksmu_rb_node **link;

	if (!parent)
		link = &root->node;
	else
		link = right ? &parent->rb.right : &parent->rb.left;
	ksmu_rb_link_node(&it->rb, parent ? &parent->rb : NULL, link);
	set_color(it, color);
}

/*
 * Hand-built valid tree of nodes n[0..6] (B black, R red; ksmu_rb_check()
 * does not look at keys, so n[6] may sit where key order would not put it):
 *
 *             B4
 *           /    \
 *         R2      B5
 *        /  \
 *      B1    B3
 *     /  \
 *   R0    R6
 *
 * Black height 2.  Then corrupt it in several ways and expect -EUCLEAN.
 */
static void negative_test(void)
{
	const uintptr_t R = KSMU_RB_RED, B = KSMU_RB_BLACK;
	struct ksmu_rb_root root = KSMU_RB_ROOT;
	struct item n[7];
	struct ksmu_rb_node *saved;
	int i;

	memset(n, 0, sizeof(n));
	for (i = 0; i < 7; i++)
		n[i].key = (uint64_t)i;
	hand_link(&n[4], NULL, 0, B, &root);
	hand_link(&n[2], &n[4], 0, R, &root);
	hand_link(&n[5], &n[4], 1, B, &root);
	hand_link(&n[1], &n[2], 0, B, &root);
	hand_link(&n[3], &n[2], 1, B, &root);
	hand_link(&n[0], &n[1], 0, R, &root);
	hand_link(&n[6], &n[1], 1, R, &root);
	CHECK_RET("hand-built tree valid", ksmu_rb_check(&root), 2);

	/* Red node with a red child, black height unchanged. */
	set_color(&n[1], R);
	set_color(&n[0], B);
	set_color(&n[6], B);
	CHECK_RET("red-red detected", ksmu_rb_check(&root), -EUCLEAN);
	set_color(&n[1], B);
	set_color(&n[0], R);
	set_color(&n[6], R);
	CHECK_RET("red-red restored", ksmu_rb_check(&root), 2);

	/* Unequal black height: a red leaf turned black. */
	set_color(&n[0], B);
	CHECK_RET("black height detected", ksmu_rb_check(&root), -EUCLEAN);
	set_color(&n[0], R);
	CHECK_RET("black height restored", ksmu_rb_check(&root), 2);

	/* Unequal black height: a black leaf turned red. */
	set_color(&n[5], R);
	CHECK_RET("black height (red sibling) detected", ksmu_rb_check(&root), -EUCLEAN);
	set_color(&n[5], B);

	/* Red root. */
	set_color(&n[4], R);
	CHECK_RET("red root detected", ksmu_rb_check(&root), -EUCLEAN);
	set_color(&n[4], B);
	CHECK_RET("red root restored", ksmu_rb_check(&root), 2);

	/* Wrong parent pointer. */
	n[3].rb.parent_color = (uintptr_t)&n[5].rb | B;
	CHECK_RET("bad parent detected", ksmu_rb_check(&root), -EUCLEAN);
	n[3].rb.parent_color = (uintptr_t)&n[2].rb | B;
	CHECK_RET("bad parent restored", ksmu_rb_check(&root), 2);

	/* Root with a parent. */
	n[4].rb.parent_color = (uintptr_t)&n[5].rb | B;
	CHECK_RET("root parent detected", ksmu_rb_check(&root), -EUCLEAN);
	n[4].rb.parent_color = B;

	/* Child linked twice (a DAG): the second link's parent pointer is wrong. */
	saved = n[5].rb.left;
	n[5].rb.left = &n[3].rb;
	CHECK_RET("shared child detected", ksmu_rb_check(&root), -EUCLEAN);
	n[5].rb.left = saved;
	CHECK_RET("final restore", ksmu_rb_check(&root), 2);

	/* The real insert path gives the same answer as before corruption. */
	{
		struct item extra = { .key = 7 };

		hand_link(&extra, &n[5], 1, R, &root);
		ksmu_rb_insert_color(&extra.rb, &root);
		CHECK_RET("insert into hand-built", ksmu_rb_check(&root), 2);
		ksmu_rb_erase(&extra.rb, &root);
		CHECK_RET("erase from hand-built", ksmu_rb_check(&root), 2);
	}
}

int main(void)
{
	CHECK("node size", sizeof(void *) != 8 || sizeof(struct ksmu_rb_node) == 24);
	CHECK("EUCLEAN", EUCLEAN > 0);

	small_cases();
	negative_test();
	replace_test();
	sequential_and_root_erase(5000, 0);
	sequential_and_root_erase(5000, 1);

	/* 4 x 60k + 40k = 280k random operations; tiny pools hit edge cases often. */
	random_run(1, 1024, 64, 60000, 64);
	random_run(2, 1024, 8, 60000, 64);
	random_run(3, 200, 1000000, 60000, 32);
	random_run(4, 12, 4, 60000, 1);
	random_run(5, 3, 2, 40000, 1);

	return t_exit();
}
