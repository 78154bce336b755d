/* SPDX-License-Identifier: MIT */
/* Description: white-box test of the rmap arena (item -> page address with
 * no stored address, chunk reuse comes back zeroed), the unstable tree
 * (duplicate keys, first/next_same, erase) against a reference count, and
 * the stable tree (members, canonical hand-over, chains and their counters). */
#include <stdint.h>
#include <string.h>

#include "rmap.h"
#include "stable.h"
#include "test.h"
#include "unstable.h"

static uint64_t rnd_state = 7;

static uint64_t rnd(void)
{
	rnd_state ^= rnd_state << 13;
	rnd_state ^= rnd_state >> 7;
	rnd_state ^= rnd_state << 17;
	return rnd_state;
}

static void test_arena(void)
{
	struct ksmu_arena a;
	struct ksmu_chunk *c1, *c2, *c3;
	uintptr_t base = 0x7f0000000000UL;
	size_t i;

	CHECK_RET("arena init", ksmu_arena_init(&a, 64UL << 20), 0);
	CHECK("aligned", (a.base & (KSMU_CHUNK_BYTES - 1)) == 0);
	c1 = ksmu_chunk_alloc(&a, (struct ksmu_region *)0x1, base, KSMU_CHUNK_ITEMS);
	c2 = ksmu_chunk_alloc(&a, (struct ksmu_region *)0x1, base + KSMU_CHUNK_ITEMS * 4096UL, 10);
	CHECK("alloc", c1 && c2 && c1 != c2);
	CHECK("items per chunk", KSMU_CHUNK_ITEMS == 8191);
	for (i = 0; i < KSMU_CHUNK_ITEMS; i += 97) {
		struct ksmu_rmap_item *it = ksmu_chunk_items(c1) + i;

		CHECK("item chunk", ksmu_item_chunk(it) == c1);
		CHECK("item addr", ksmu_item_addr(it) == base + i * 4096UL);
	}
	CHECK("last item addr", ksmu_item_addr(ksmu_chunk_items(c1) + KSMU_CHUNK_ITEMS - 1) ==
				       base + (KSMU_CHUNK_ITEMS - 1) * 4096UL);
	CHECK("second chunk addr", ksmu_item_addr(ksmu_chunk_items(c2) + 3) ==
					   base + (KSMU_CHUNK_ITEMS + 3) * 4096UL);
	/* Dirty an item, free, re-allocate: the chunk comes back zeroed. */
	ksmu_chunk_items(c1)[5].hash_flags = 0xdeadbeef;
	ksmu_chunk_items(c1)[4000].hash_flags = 0xdeadbeef;
	ksmu_chunk_free(&a, c1);
	c3 = ksmu_chunk_alloc(&a, (struct ksmu_region *)0x2, base, 100);
	CHECK("reused", c3 == c1);
	CHECK("zeroed 5", ksmu_chunk_items(c3)[5].hash_flags == 0);
	CHECK("zeroed 4000", ksmu_chunk_items(c3)[4000].hash_flags == 0);
	CHECK("used count", a.nr_used == 2);
	/* Exhaustion is an error, not a crash. */
	{
		size_t n = 0;

		while (ksmu_chunk_alloc(&a, (struct ksmu_region *)0x3, base, 1))
			n++;
		CHECK("arena exhausts", n == (64UL << 20) / KSMU_CHUNK_BYTES - 2);
	}
	ksmu_arena_destroy(&a);
}

#define NITEMS 3000
#define NKEYS 40

static void test_unstable(void)
{
	struct ksmu_arena a;
	struct ksmu_chunk *c;
	struct ksmu_unstable_tree t = { KSMU_RB_ROOT, 0 };
	struct ksmu_rmap_item *items;
	size_t count[NKEYS] = { 0 }, i, round;

	CHECK_RET("arena", ksmu_arena_init(&a, 16UL << 20), 0);
	c = ksmu_chunk_alloc(&a, (struct ksmu_region *)0x1, 0x10000000UL, NITEMS);
	items = ksmu_chunk_items(c);
	for (i = 0; i < NITEMS; i++)
		ksmu_item_set_key(&items[i], i % NKEYS);

	for (round = 0; round < 100000; round++) {
		struct ksmu_rmap_item *it = &items[rnd() % NITEMS];
		uint64_t key = ksmu_item_key(it);

		if (ksmu_item_flags(it) & KSMU_ITEM_UNSTABLE) {
			ksmu_unstable_erase(&t, it);
			count[key]--;
		} else {
			ksmu_unstable_insert(&t, it);
			count[key]++;
		}
		if (round % 5000 == 0) {
			size_t k, total = 0;

			CHECK("rb check", ksmu_rb_check(&t.root) >= 0);
			for (k = 0; k < NKEYS; k++) {
				size_t n = 0;
				struct ksmu_rmap_item *p;

				for (p = ksmu_unstable_first(&t, k); p; p = ksmu_unstable_next_same(p)) {
					n++;
					if (ksmu_item_key(p) != k)
						CHECK("same key", 0);
				}
				CHECK("count per key", n == count[k]);
				total += count[k];
			}
			CHECK("nr", t.nr == total);
		}
	}
	CHECK("missing key", ksmu_unstable_first(&t, NKEYS + 5) == NULL);
	ksmu_arena_destroy(&a);
}

static void test_stable(void)
{
	struct ksmu_arena a;
	struct ksmu_chunk *c;
	struct ksmu_stable_tree t;
	struct ksmu_stable_node *n1, *n2, *n3, *p;
	struct ksmu_rmap_item *it;
	size_t i, n;

	memset(&t, 0, sizeof(t));
	CHECK_RET("arena", ksmu_arena_init(&a, 16UL << 20), 0);
	c = ksmu_chunk_alloc(&a, (struct ksmu_region *)0x1, 0x20000000UL, 64);
	it = ksmu_chunk_items(c);

	n1 = ksmu_stable_new(&t, 77);
	n2 = ksmu_stable_new(&t, 77);
	n3 = ksmu_stable_new(&t, 5);
	CHECK("nodes", t.nr_nodes == 3);
	for (n = 0, p = ksmu_stable_first(&t, 77); p; p = ksmu_stable_next_same(p))
		n++;
	CHECK("two nodes with key 77", n == 2);
	CHECK("key 5", ksmu_stable_first(&t, 5) == n3 && !ksmu_stable_next_same(n3));

	for (i = 0; i < 4; i++)
		ksmu_stable_add(&t, n1, &it[i]);
	CHECK("members", n1->nr_members == 4 && t.nr_members == 4);
	CHECK("canonical is first", n1->canonical == &it[0]);
	CHECK("stable flag", ksmu_item_flags(&it[2]) & KSMU_ITEM_STABLE);
	ksmu_stable_remove(&t, &it[0]);
	CHECK("canonical handed over", n1->canonical && n1->canonical != &it[0] &&
					       n1->canonical->s.stable == n1);
	CHECK("flag cleared", !(ksmu_item_flags(&it[0]) & KSMU_ITEM_STABLE));
	ksmu_stable_remove(&t, &it[2]);
	CHECK("3 left? no, 2", n1->nr_members == 2 && t.nr_members == 2);

	/* Chains: n1 <- n2 makes one chain of two dups; a third adds a dup. */
	ksmu_stable_chain(&t, n1, n2);
	CHECK("chain 1/2", t.nr_chains == 1 && t.nr_dups == 2);
	ksmu_stable_chain(&t, n1, n3);
	CHECK("chain 1/3", t.nr_chains == 1 && t.nr_dups == 3);
	ksmu_stable_free(&t, n3);
	CHECK("chain 1/2 again", t.nr_chains == 1 && t.nr_dups == 2);
	ksmu_stable_free(&t, n2);
	CHECK("no chain", t.nr_chains == 0 && t.nr_dups == 0 && !n1->dup_next);
	ksmu_stable_remove(&t, &it[1]);
	ksmu_stable_remove(&t, &it[3]);
	CHECK("empty", n1->nr_members == 0 && !n1->canonical && !n1->members);
	ksmu_stable_free(&t, n1);
	CHECK("tree empty", t.nr_nodes == 0 && ksmu_rb_empty_root(&t.root));
	ksmu_arena_destroy(&a);
}

int main(void)
{
	test_arena();
	test_unstable();
	test_stable();
	return t_exit();
}
