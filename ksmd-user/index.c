/* SPDX-License-Identifier: MIT */
/*
 * index.c - ksmd-user's host-wide index.
 *
 * DESIGN
 *   Stores.  One memfd per (group, NUMA node[, zero]) (store.c's allocator:
 *   first fit, hole punch on free, file shrinks).  Agents get a read-only
 *   descriptor: the memfd is chmod 0400 (owner: the daemon) and reopened
 *   O_RDONLY through /proc/self/fd, so an agent of another uid can neither
 *   write it, map it shared-writable, nor reopen it for writing.  Only the
 *   daemon writes store pages, once, when it creates them from bytes an
 *   agent sent; a page never changes until it is freed.
 *
 *   Stable index.  XXH3-64 of each store page -> (store, idx), chained in a
 *   power-of-two bucket array.  A lookup compares the candidate page in
 *   full with the store page (pread) before it answers: a hash is never
 *   trusted, and a collision is counted.
 *
 *   Unstable table.  Pages agents looked up without a match, as (client,
 *   addr, hash, group): the daemon keeps no content, so a later page of
 *   another client with the same hash becomes a store page made from *that*
 *   client's bytes, and the remembered client is hinted; it compares its
 *   page in full against the store page and merges only if equal.  An entry
 *   is replaced when its client looks the same address up again, taken out
 *   when hinted, and dropped with its client.
 *
 *   Grants.  A page may be freed only when no process can map it.  Every
 *   RESULT/HINT entry naming a page is a grant to the receiving process
 *   (ksmd.c); grants are per process (struct ksmd_grants) and summed per
 *   page (store->grants).  A page whose sum reaches 0 leaves the stable
 *   index and is hole-punched.
 *
 * INVARIANTS
 *   - st->grants[i] == sum over processes of their count for (st, i);
 *     a page is allocated iff it is in the stable index, and it is in the
 *     stable index iff st->grants[i] > 0 (or it is being handed out).
 *   - Store ids are 1..KSMD_MAX_STORES-1 and never reused.
 *
 * LOCKING / THREADS
 *   The daemon is single-threaded: none.
 *
 * KERNEL REQUIREMENTS
 *   memfd_create, fallocate(PUNCH_HOLE) on shmem (store.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "index.h"
#include "util.h"

#define STORE_MAX_PAGES (1UL << 28)

struct sentry { /* stable index entry */
	uint64_t hash;
	uint32_t store, idx;
	uint32_t next;
};

struct uentry { /* unstable table entry */
	uint64_t hash, addr, group;
	uint32_t client;
	uint32_t next_h, next_a; /* chains by hash, by (client, addr); next_h links free entries */
	uint32_t live;
};

struct table {
	uint32_t *heads; /* KSMD_NO_ENTRY-terminated chains */
	size_t nbuckets; /* power of two */
};

struct ksmd_index {
	struct ksmd_store *stores[KSMD_MAX_STORES];
	uint32_t nr_stores;

	struct sentry *se;
	size_t se_cap, se_used;
	uint32_t se_free;
	struct table st; /* by hash */

	struct uentry *ue;
	size_t ue_cap, ue_used;
	uint32_t ue_free;
	struct table ut; /* by hash */
	struct table ua; /* by (client, addr) */

	struct ksmd_index_stats stats;
	uint8_t buf[KSMU_PAGE_SIZE] __attribute__((aligned(64)));
};

static uint64_t mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return x;
}

static int table_init(struct table *t, size_t n)
{
	size_t i;

	t->heads = malloc(n * sizeof(*t->heads));
	if (!t->heads)
		return -ENOMEM;
	for (i = 0; i < n; i++)
		t->heads[i] = KSMD_NO_ENTRY;
	t->nbuckets = n;
	return 0;
}

struct ksmd_index *ksmd_index_new(void)
{
	struct ksmd_index *ix = calloc(1, sizeof(*ix));

	if (!ix)
		return NULL;
	ix->se_free = ix->ue_free = KSMD_NO_ENTRY;
	if (table_init(&ix->st, 1024) || table_init(&ix->ut, 1024) || table_init(&ix->ua, 1024)) {
		ksmd_index_free(ix);
		return NULL;
	}
	return ix;
}

void ksmd_index_free(struct ksmd_index *ix)
{
	uint32_t i;

	if (!ix)
		return;
	for (i = 1; i <= ix->nr_stores; i++) {
		struct ksmd_store *st = ix->stores[i];

		if (!st)
			continue;
		if (st->ro_fd >= 0)
			close(st->ro_fd);
		ksmu_store_destroy(&st->s);
		free(st->grants);
		free(st->hash);
		free(st);
	}
	free(ix->se);
	free(ix->ue);
	free(ix->st.heads);
	free(ix->ut.heads);
	free(ix->ua.heads);
	free(ix);
}

/* ------------------------------------------------------------ stores */

static int reopen_readonly(int fd)
{
	char path[64];

	/* owner-read only: another uid cannot reopen it for writing */
	if (fchmod(fd, 0400) < 0)
		return -errno;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

struct ksmd_store *ksmd_index_store(struct ksmd_index *ix, const struct ksmd_store_key *key,
				    const char *domain, int *err)
{
	struct ksmd_store *st;
	uint32_t i;
	int r;

	for (i = 1; i <= ix->nr_stores; i++) {
		st = ix->stores[i];
		if (st && st->key.group == key->group && st->key.node == key->node &&
		    st->key.zero == key->zero)
			return st;
	}
	if (ix->nr_stores + 1 >= KSMD_MAX_STORES) {
		*err = -ENOSPC;
		return NULL;
	}
	st = calloc(1, sizeof(*st));
	if (!st) {
		*err = -ENOMEM;
		return NULL;
	}
	r = ksmu_store_init(&st->s, STORE_MAX_PAGES);
	if (!r) {
		r = reopen_readonly(st->s.fd);
		st->ro_fd = r;
		if (r >= 0)
			r = 0;
	}
	if (r) {
		ksmu_store_destroy(&st->s);
		free(st);
		*err = r;
		return NULL;
	}
	st->key = *key;
	snprintf(st->domain, sizeof(st->domain), "%s", domain);
	st->id = ++ix->nr_stores;
	ix->stores[st->id] = st;
	ix->stats.stores++;
	return st;
}

struct ksmd_store *ksmd_index_store_by_id(struct ksmd_index *ix, uint32_t id)
{
	if (id == 0 || id > ix->nr_stores)
		return NULL;
	return ix->stores[id];
}

struct ksmd_store *ksmd_index_next_store(struct ksmd_index *ix, struct ksmd_store *prev)
{
	uint32_t i = prev ? prev->id + 1 : 1;

	for (; i <= ix->nr_stores; i++)
		if (ix->stores[i])
			return ix->stores[i];
	return NULL;
}

static int store_reserve(struct ksmd_store *st, size_t idx)
{
	size_t n = st->cap ? st->cap : 1024;
	uint32_t *g;
	uint64_t *h;

	if (idx < st->cap)
		return 0;
	while (n <= idx)
		n *= 2;
	g = realloc(st->grants, n * sizeof(*g));
	if (!g)
		return -ENOMEM;
	st->grants = g;
	h = realloc(st->hash, n * sizeof(*h));
	if (!h)
		return -ENOMEM;
	st->hash = h;
	memset(g + st->cap, 0, (n - st->cap) * sizeof(*g));
	memset(h + st->cap, 0, (n - st->cap) * sizeof(*h));
	st->cap = n;
	return 0;
}

/* ------------------------------------------------------------ stable index */

static int grow_table(struct table *t, size_t want, void *entries, size_t esize, size_t nentries,
		      size_t hash_off, size_t next_off, bool (*live)(const void *),
		      uint64_t (*keyfn)(const void *))
{
	struct table nt;
	size_t i;

	if (want <= t->nbuckets)
		return 0;
	if (table_init(&nt, t->nbuckets * 2))
		return -ENOMEM;
	for (i = 0; i < nentries; i++) {
		char *e = (char *)entries + i * esize;
		uint64_t k;
		size_t b;

		if (!live(e))
			continue;
		k = keyfn ? keyfn(e) : *(uint64_t *)(void *)(e + hash_off);
		b = mix(k) & (nt.nbuckets - 1);
		memcpy(e + next_off, &nt.heads[b], sizeof(uint32_t));
		nt.heads[b] = (uint32_t)i;
	}
	free(t->heads);
	*t = nt;
	return 0;
}

static bool se_live(const void *p)
{
	return ((const struct sentry *)p)->store != 0;
}

static int se_insert(struct ksmd_index *ix, uint64_t h, uint32_t store, uint32_t idx)
{
	struct sentry *e;
	uint32_t n;
	size_t b;

	if (ix->se_free == KSMD_NO_ENTRY && ix->se_used == ix->se_cap) {
		size_t cap = ix->se_cap ? ix->se_cap * 2 : 1024;
		struct sentry *p = realloc(ix->se, cap * sizeof(*p));

		if (!p || cap >= KSMD_NO_ENTRY)
			return -ENOMEM;
		ix->se = p;
		ix->se_cap = cap;
	}
	if (grow_table(&ix->st, ix->se_used + 1, ix->se, sizeof(struct sentry), ix->se_used,
		       offsetof(struct sentry, hash), offsetof(struct sentry, next), se_live, NULL))
		return -ENOMEM;
	if (ix->se_free != KSMD_NO_ENTRY) {
		n = ix->se_free;
		ix->se_free = ix->se[n].next;
	} else {
		n = (uint32_t)ix->se_used++;
	}
	e = &ix->se[n];
	e->hash = h;
	e->store = store;
	e->idx = idx;
	b = mix(h) & (ix->st.nbuckets - 1);
	e->next = ix->st.heads[b];
	ix->st.heads[b] = n;
	return 0;
}

static void se_remove(struct ksmd_index *ix, uint64_t h, uint32_t store, uint32_t idx)
{
	size_t b = mix(h) & (ix->st.nbuckets - 1);
	uint32_t *pp = &ix->st.heads[b];

	while (*pp != KSMD_NO_ENTRY) {
		struct sentry *e = &ix->se[*pp];

		if (e->store == store && e->idx == idx) {
			uint32_t n = *pp;

			*pp = e->next;
			e->store = 0;
			e->next = ix->se_free;
			ix->se_free = n;
			return;
		}
		pp = &e->next;
	}
	KSMU_BUG_ON(1); /* an allocated page is always indexed */
}

long ksmd_index_find(struct ksmd_index *ix, struct ksmd_store *st, const void *page, uint64_t h)
{
	size_t b = mix(h) & (ix->st.nbuckets - 1);
	uint32_t n;

	ix->stats.lookups++;
	for (n = ix->st.heads[b]; n != KSMD_NO_ENTRY; n = ix->se[n].next) {
		const struct sentry *e = &ix->se[n];

		if (e->hash != h || e->store != st->id)
			continue;
		if (ksmu_store_read(&st->s, e->idx, ix->buf) == 0 &&
		    !memcmp(ix->buf, page, KSMU_PAGE_SIZE)) {
			ix->stats.matches_stable++;
			return e->idx;
		}
		ix->stats.hash_collisions++;
	}
	return -1;
}

long ksmd_index_create(struct ksmd_index *ix, struct ksmd_store *st, const void *page, uint64_t h)
{
	size_t idx;
	int r;

	r = ksmu_store_alloc_run(&st->s, 1, page, &idx);
	if (r)
		return r;
	r = store_reserve(st, idx);
	if (!r)
		r = se_insert(ix, h, st->id, (uint32_t)idx);
	if (r) {
		ksmu_store_free_run(&st->s, idx, 1);
		return r;
	}
	st->hash[idx] = h;
	st->grants[idx] = 0;
	ix->stats.created++;
	ix->stats.store_pages++;
	return (long)idx;
}

static void page_free(struct ksmd_index *ix, struct ksmd_store *st, uint32_t idx)
{
	se_remove(ix, st->hash[idx], st->id, idx);
	ksmu_store_free_run(&st->s, idx, 1);
	ix->stats.freed++;
	ix->stats.store_pages--;
}

void ksmd_index_unused(struct ksmd_index *ix, struct ksmd_store *st, uint32_t idx)
{
	if (!st->grants[idx])
		page_free(ix, st, idx);
}

/* ------------------------------------------------------------ grants */

static size_t g_slot(const struct ksmd_grants *g, uint64_t key)
{
	return mix(key) & (g->cap - 1);
}

static int g_grow(struct ksmd_grants *g)
{
	struct ksmd_grants ng = {0};
	size_t i;

	ng.cap = g->cap ? g->cap * 2 : 64;
	ng.keys = calloc(ng.cap, sizeof(*ng.keys));
	ng.counts = calloc(ng.cap, sizeof(*ng.counts));
	if (!ng.keys || !ng.counts) {
		free(ng.keys);
		free(ng.counts);
		return -ENOMEM;
	}
	for (i = 0; i < g->cap; i++) {
		size_t s;

		if (!g->keys[i])
			continue;
		for (s = g_slot(&ng, g->keys[i]); ng.keys[s]; s = (s + 1) & (ng.cap - 1))
			;
		ng.keys[s] = g->keys[i];
		ng.counts[s] = g->counts[i];
		ng.used++;
	}
	ng.total = g->total;
	free(g->keys);
	free(g->counts);
	*g = ng;
	return 0;
}

/* Slot of @key in @g, or the empty slot where it would go. */
static size_t g_find(const struct ksmd_grants *g, uint64_t key)
{
	size_t s;

	for (s = g_slot(g, key); g->keys[s] && g->keys[s] != key; s = (s + 1) & (g->cap - 1))
		;
	return s;
}

/* Remove slot @s (backward-shift deletion keeps probe chains intact). */
static void g_delete(struct ksmd_grants *g, size_t s)
{
	size_t i = s, j = s;

	g->keys[s] = 0;
	g->counts[s] = 0;
	g->used--;
	for (;;) {
		size_t k;

		j = (j + 1) & (g->cap - 1);
		if (!g->keys[j])
			return;
		k = g_slot(g, g->keys[j]);
		/* can the entry at j move to the hole at i? */
		if ((i <= j) ? (i < k && k <= j) : (i < k || k <= j))
			continue;
		g->keys[i] = g->keys[j];
		g->counts[i] = g->counts[j];
		g->keys[j] = 0;
		g->counts[j] = 0;
		i = j;
	}
}

int ksmd_grant(struct ksmd_index *ix, struct ksmd_grants *g, struct ksmd_store *st, uint32_t idx)
{
	uint64_t key = (uint64_t)st->id << 32 | idx;
	size_t s;

	(void)ix;
	KSMU_BUG_ON(!ksmu_store_is_used(&st->s, idx));
	if ((g->used + 1) * 4 > g->cap * 3 && g_grow(g))
		return -ENOMEM;
	if (st->grants[idx] == UINT32_MAX)
		return -EOVERFLOW;
	s = g_find(g, key);
	if (!g->keys[s]) {
		g->keys[s] = key;
		g->used++;
	}
	if (g->counts[s] == UINT32_MAX)
		return -EOVERFLOW;
	g->counts[s]++;
	g->total++;
	st->grants[idx]++;
	return 0;
}

static void page_put(struct ksmd_index *ix, struct ksmd_store *st, uint32_t idx, uint32_t n)
{
	KSMU_BUG_ON(st->grants[idx] < n);
	st->grants[idx] -= n;
	if (!st->grants[idx])
		page_free(ix, st, idx);
}

uint32_t ksmd_grants_held(const struct ksmd_grants *g, uint32_t store, uint32_t idx)
{
	uint64_t key = (uint64_t)store << 32 | idx;
	size_t s;

	if (!g->cap || !store)
		return 0;
	s = g_find(g, key);
	return g->keys[s] ? g->counts[s] : 0;
}

uint32_t ksmd_ungrant(struct ksmd_index *ix, struct ksmd_grants *g, uint32_t store, uint32_t idx,
		      uint32_t count)
{
	uint64_t key = (uint64_t)store << 32 | idx;
	struct ksmd_store *st = ksmd_index_store_by_id(ix, store);
	uint32_t n;
	size_t s;

	if (!st || !g->cap || !store)
		return 0;
	s = g_find(g, key);
	if (!g->keys[s])
		return 0;
	n = count < g->counts[s] ? count : g->counts[s];
	g->counts[s] -= n;
	g->total -= n;
	if (!g->counts[s])
		g_delete(g, s);
	ix->stats.releases += n;
	page_put(ix, st, idx, n);
	return n;
}

void ksmd_grants_drop(struct ksmd_index *ix, struct ksmd_grants *g)
{
	size_t i;

	for (i = 0; i < g->cap; i++) {
		struct ksmd_store *st;

		if (!g->keys[i])
			continue;
		st = ksmd_index_store_by_id(ix, (uint32_t)(g->keys[i] >> 32));
		KSMU_BUG_ON(!st);
		page_put(ix, st, (uint32_t)g->keys[i], g->counts[i]);
	}
	free(g->keys);
	free(g->counts);
	memset(g, 0, sizeof(*g));
}

int ksmd_grants_copy(struct ksmd_index *ix, struct ksmd_grants *dst, const struct ksmd_grants *src)
{
	size_t i;

	memset(dst, 0, sizeof(*dst));
	if (!src->cap)
		return 0;
	dst->keys = malloc(src->cap * sizeof(*dst->keys));
	dst->counts = malloc(src->cap * sizeof(*dst->counts));
	if (!dst->keys || !dst->counts) {
		free(dst->keys);
		free(dst->counts);
		memset(dst, 0, sizeof(*dst));
		return -ENOMEM;
	}
	memcpy(dst->keys, src->keys, src->cap * sizeof(*dst->keys));
	memcpy(dst->counts, src->counts, src->cap * sizeof(*dst->counts));
	dst->cap = src->cap;
	dst->used = src->used;
	dst->total = src->total;
	for (i = 0; i < src->cap; i++) {
		struct ksmd_store *st;

		if (!src->keys[i])
			continue;
		st = ksmd_index_store_by_id(ix, (uint32_t)(src->keys[i] >> 32));
		KSMU_BUG_ON(!st);
		st->grants[(uint32_t)src->keys[i]] += src->counts[i];
	}
	return 0;
}

uint64_t ksmd_grants_bytes(const struct ksmd_grants *g)
{
	return g->cap * (sizeof(*g->keys) + sizeof(*g->counts));
}

/* ------------------------------------------------------------ unstable table */

static bool ue_live(const void *p)
{
	return ((const struct uentry *)p)->live != 0;
}

static uint64_t ue_akey(uint32_t client, uint64_t addr)
{
	return addr ^ ((uint64_t)client << 48) ^ ((uint64_t)client * 0x9e3779b97f4a7c15ULL);
}

static uint64_t ue_akey_of(const void *p)
{
	const struct uentry *e = p;

	return ue_akey(e->client, e->addr);
}

static void ue_unlink(struct ksmd_index *ix, uint32_t n)
{
	struct uentry *e = &ix->ue[n];
	uint32_t *pp;

	for (pp = &ix->ut.heads[mix(e->hash) & (ix->ut.nbuckets - 1)]; *pp != n; pp = &ix->ue[*pp].next_h)
		KSMU_BUG_ON(*pp == KSMD_NO_ENTRY);
	*pp = e->next_h;
	for (pp = &ix->ua.heads[mix(ue_akey(e->client, e->addr)) & (ix->ua.nbuckets - 1)]; *pp != n;
	     pp = &ix->ue[*pp].next_a)
		KSMU_BUG_ON(*pp == KSMD_NO_ENTRY);
	*pp = e->next_a;
	e->live = 0;
	e->next_h = ix->ue_free;
	ix->ue_free = n;
	ix->stats.unstable_entries--;
}

int ksmd_unstable_put(struct ksmd_index *ix, uint32_t client, uint64_t addr, uint64_t h,
		      uint64_t group)
{
	uint64_t ak = ue_akey(client, addr);
	struct uentry *e;
	uint32_t n;
	size_t b;

	for (n = ix->ua.heads[mix(ak) & (ix->ua.nbuckets - 1)]; n != KSMD_NO_ENTRY; n = ix->ue[n].next_a)
		if (ix->ue[n].client == client && ix->ue[n].addr == addr) {
			ue_unlink(ix, n);
			break;
		}
	if (ix->ue_free == KSMD_NO_ENTRY && ix->ue_used == ix->ue_cap) {
		size_t cap = ix->ue_cap ? ix->ue_cap * 2 : 1024;
		struct uentry *p;

		if (cap >= KSMD_NO_ENTRY)
			return -ENOSPC;
		p = realloc(ix->ue, cap * sizeof(*p));
		if (!p)
			return -ENOMEM;
		ix->ue = p;
		ix->ue_cap = cap;
	}
	if (grow_table(&ix->ut, ix->ue_used + 1, ix->ue, sizeof(struct uentry), ix->ue_used,
		       offsetof(struct uentry, hash), offsetof(struct uentry, next_h), ue_live, NULL) ||
	    grow_table(&ix->ua, ix->ue_used + 1, ix->ue, sizeof(struct uentry), ix->ue_used, 0,
		       offsetof(struct uentry, next_a), ue_live, ue_akey_of))
		return -ENOMEM;
	if (ix->ue_free != KSMD_NO_ENTRY) {
		n = ix->ue_free;
		ix->ue_free = ix->ue[n].next_h;
	} else {
		n = (uint32_t)ix->ue_used++;
	}
	e = &ix->ue[n];
	e->hash = h;
	e->addr = addr;
	e->group = group;
	e->client = client;
	e->live = 1;
	b = mix(h) & (ix->ut.nbuckets - 1);
	e->next_h = ix->ut.heads[b];
	ix->ut.heads[b] = n;
	b = mix(ak) & (ix->ua.nbuckets - 1);
	e->next_a = ix->ua.heads[b];
	ix->ua.heads[b] = n;
	ix->stats.unstable_entries++;
	return 0;
}

bool ksmd_unstable_take(struct ksmd_index *ix, uint32_t client, uint64_t h, uint64_t group,
			struct ksmd_unstable_hit *hit)
{
	uint32_t n;

	for (n = ix->ut.heads[mix(h) & (ix->ut.nbuckets - 1)]; n != KSMD_NO_ENTRY; n = ix->ue[n].next_h) {
		struct uentry *e = &ix->ue[n];

		if (e->hash != h || e->group != group || e->client == client)
			continue;
		hit->client = e->client;
		hit->addr = e->addr;
		ue_unlink(ix, n);
		ix->stats.matches_unstable++;
		return true;
	}
	return false;
}

void ksmd_unstable_drop_client(struct ksmd_index *ix, uint32_t client)
{
	size_t i;

	for (i = 0; i < ix->ue_used; i++)
		if (ix->ue[i].live && ix->ue[i].client == client)
			ue_unlink(ix, (uint32_t)i);
}

void ksmd_index_get_stats(const struct ksmd_index *ix, struct ksmd_index_stats *st)
{
	*st = ix->stats;
}

uint64_t ksmd_index_metadata_bytes(const struct ksmd_index *ix)
{
	uint64_t b = sizeof(*ix);
	uint32_t i;

	b += ix->se_cap * sizeof(struct sentry) + ix->ue_cap * sizeof(struct uentry);
	b += (ix->st.nbuckets + ix->ut.nbuckets + ix->ua.nbuckets) * sizeof(uint32_t);
	for (i = 1; i <= ix->nr_stores; i++)
		if (ix->stores[i])
			b += sizeof(struct ksmd_store) + ix->stores[i]->cap * 12 +
			     ksmu_store_metadata_bytes(&ix->stores[i]->s);
	return b;
}
