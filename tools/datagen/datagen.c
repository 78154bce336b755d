/* SPDX-License-Identifier: MIT */
/*
 * datagen.c - workload generator with a known true answer (see datagen.h).
 *
 * DESIGN
 *   Placement.  The kind of page #i is computed in O(1) from i, so that one
 *   page can be recomputed without the others and fill needs no table.  Two
 *   keyed pseudo-random permutations do it:
 *     1. the image is cut into blocks of L = max(run_len, 1) pages (plus a
 *        tail of pages % L pages); a permutation of the block numbers sends
 *        the first n_runs = dup / L permuted slots to "run of copies" and
 *        the others to "rest";
 *     2. the rest pages (rest blocks, then the tail) are numbered 0..R-1 and
 *        a second permutation over [0, R) deals exact counts: the first
 *        dup % L slots are single scattered copies, the next zero count are
 *        zero pages, the others unique pages numbered in slot order.
 *   With L = 1 every copy is a "run" of one page, i.e. scattered.  Run j
 *   starts at template run_tmpl(j) (uniform in [0, K)) and holds consecutive
 *   templates; a single copy s holds single_tmpl(s).  The permutations are
 *   4-round balanced Feistel networks over the smallest power of 4 >= n,
 *   restricted to [0, n) by cycle walking (at most 4 steps on average).
 *
 *   Content.  A template or unique page is identified by tag = kind << 62 |
 *   id (kind 1 = template, 2 = unique).  Word 0 of the page is mix64(tag):
 *   mix64 is a bijection with mix64(0) = 0, so word 0 differs between any
 *   two tags and is never zero.  Hence distinct contents are always
 *   distinct bytes and never all-zero, whatever the seed.  Words 1..511 are
 *   a counter-based stream keyed by (seed, tag); one multiply per word keeps
 *   fill close to memory bandwidth.
 *
 *   Truth.  Copies per template are counted from the same run_tmpl() and
 *   single_tmpl() functions fill uses (a counter per template when K is
 *   small relative to the copies, a sorted list of template ids otherwise),
 *   so truth and memory cannot disagree.  ksmu_datagen_expect() turns the
 *   same counts into KSM's counters under max_page_sharing and
 *   use_zero_pages.
 *
 * INVARIANTS
 *   dup + zero + unique == pages; n_runs * L + n_single == dup;
 *   n_runs <= n_blocks (since dup <= pages).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "datagen.h"

#define PAGE KSMU_DATAGEN_PAGE_SIZE
#define WORDS (PAGE / sizeof(uint64_t))

#define CONTENT_TEMPLATE 1ULL
#define CONTENT_UNIQUE 2ULL

/* Domain tags of the keyed random functions. */
#define TAG_RUN 0x72756e00ULL
#define TAG_SINGLE 0x73676c00ULL
#define TAG_PERM_BLOCKS 0x70626c00ULL
#define TAG_PERM_REST 0x70727300ULL
#define TAG_STREAM 0x73747200ULL

#define GOLDEN 0x9e3779b97f4a7c15ULL

/* splitmix64's finaliser: a bijection of 64-bit words with mix64(0) == 0. */
static inline uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return x;
}

static inline uint64_t rnd(uint64_t seed, uint64_t tag, uint64_t i)
{
	return mix64(mix64(seed ^ (tag * GOLDEN)) + i * GOLDEN + tag);
}

/* Uniform in [0, k) for k < 2^32, from the high half of r. */
static inline uint64_t below(uint64_t r, uint64_t k)
{
	return ((r >> 32) * k) >> 32;
}

struct perm {
	uint64_t n;
	unsigned half;
	uint64_t mask;
	uint64_t key[4];
};

static void perm_init(struct perm *p, uint64_t n, uint64_t seed, uint64_t tag)
{
	unsigned h = 1;

	while (h < 32 && (1ULL << (2 * h)) < n)
		h++;
	p->n = n;
	p->half = h;
	p->mask = (1ULL << h) - 1;
	for (unsigned i = 0; i < 4; i++)
		p->key[i] = rnd(seed, tag, i);
}

static inline uint64_t feistel(const struct perm *p, uint64_t x)
{
	uint64_t l = x >> p->half, r = x & p->mask;

	for (unsigned i = 0; i < 4; i++) {
		uint64_t t = l ^ (mix64(r ^ p->key[i]) & p->mask);

		l = r;
		r = t;
	}
	return (l << p->half) | r;
}

/* A bijection of [0, n): walk the Feistel cycle until it lands inside. */
static inline uint64_t perm_apply(const struct perm *p, uint64_t x)
{
	do
		x = feistel(p, x);
	while (x >= p->n);
	return x;
}

/*
 * struct layout - everything derived from a valid spec.
 * @seed, @pages, @k:       from the spec (k = templates)
 * @n_dup, @n_zero, @n_uniq: exact counts
 * @len:                    run length L (>= 1)
 * @n_runs:                 full runs of copies
 * @n_single:               scattered single copies (n_dup % L)
 * @n_blocks:               whole blocks of L pages
 * @n_rest:                 pages outside runs
 * @blocks, @rest:          the two placement permutations
 */
struct layout {
	uint64_t seed;
	size_t pages;
	uint64_t k;
	size_t n_dup, n_zero, n_uniq;
	size_t len, n_runs, n_single, n_blocks, n_rest;
	struct perm blocks, rest;
};

static size_t frac_count(double frac, size_t pages)
{
	double c = frac * (double)pages + 0.5;

	if (c >= (double)pages)
		return pages;
	return (size_t)c;
}

static int layout_init(struct layout *lo, const struct ksmu_datagen_spec *s)
{
	if (!s)
		return -EINVAL;
	/* The negated forms also reject NaN. */
	if (!(s->dup_frac >= 0.0 && s->dup_frac <= 1.0))
		return -EINVAL;
	if (!(s->zero_frac >= 0.0 && s->zero_frac <= 1.0))
		return -EINVAL;
	if (s->dup_frac + s->zero_frac > 1.0 + 1e-9)
		return -EINVAL;
	if (s->dup_frac > 0.0 && s->templates == 0)
		return -EINVAL;
	if (s->pages > SIZE_MAX / PAGE)
		return -EINVAL;

	memset(lo, 0, sizeof(*lo));
	lo->seed = s->seed;
	lo->pages = s->pages;
	lo->k = s->templates;
	lo->n_dup = frac_count(s->dup_frac, s->pages);
	lo->n_zero = frac_count(s->zero_frac, s->pages);
	if (lo->n_zero > s->pages - lo->n_dup)
		lo->n_zero = s->pages - lo->n_dup;
	lo->n_uniq = s->pages - lo->n_dup - lo->n_zero;

	lo->len = s->run_len > 1 ? s->run_len : 1;
	lo->n_runs = lo->n_dup / lo->len;
	lo->n_single = lo->n_dup % lo->len;
	lo->n_blocks = s->pages / lo->len;
	lo->n_rest = s->pages - lo->n_runs * lo->len;
	perm_init(&lo->blocks, lo->n_blocks, lo->seed, TAG_PERM_BLOCKS);
	perm_init(&lo->rest, lo->n_rest, lo->seed, TAG_PERM_REST);
	return 0;
}

static inline uint64_t run_tmpl(const struct layout *lo, size_t run)
{
	return below(rnd(lo->seed, TAG_RUN, run), lo->k);
}

static inline uint64_t single_tmpl(const struct layout *lo, size_t s)
{
	return below(rnd(lo->seed, TAG_SINGLE, s), lo->k);
}

/* Kind of page @i (< pages) and its id; see DESIGN. */
static int classify(const struct layout *lo, size_t i, uint64_t *id)
{
	size_t r, s;

	if (i < lo->n_blocks * lo->len) {
		size_t b = i / lo->len, off = i % lo->len;
		size_t pb = perm_apply(&lo->blocks, b);

		if (pb < lo->n_runs) {
			*id = (run_tmpl(lo, pb) + off) % lo->k;
			return KSMU_DATAGEN_COPY;
		}
		r = (pb - lo->n_runs) * lo->len + off;
	} else {
		r = (lo->n_blocks - lo->n_runs) * lo->len + (i - lo->n_blocks * lo->len);
	}

	s = perm_apply(&lo->rest, r);
	if (s < lo->n_single) {
		*id = single_tmpl(lo, s);
		return KSMU_DATAGEN_COPY;
	}
	s -= lo->n_single;
	if (s < lo->n_zero) {
		*id = 0;
		return KSMU_DATAGEN_ZERO;
	}
	*id = s - lo->n_zero;
	return KSMU_DATAGEN_UNIQUE;
}

/*
 * Write the content (kind, id) to @dst, 4096 bytes at any alignment.  The
 * 8-byte memcpy compiles to one store.
 */
static void gen_content(uint64_t seed, uint64_t kind, uint64_t id, unsigned char *dst)
{
	uint64_t tag = kind << 62 | id;
	uint64_t x = rnd(seed, TAG_STREAM, tag);
	uint64_t w = mix64(tag);

	memcpy(dst, &w, sizeof(w));
	for (size_t i = 1; i < WORDS; i++) {
		x += GOLDEN;
		w = (x ^ (x >> 32)) * 0xd6e8feb86659fd93ULL;
		w ^= w >> 29;
		memcpy(dst + i * sizeof(w), &w, sizeof(w));
	}
}

static void gen_page(const struct layout *lo, size_t i, unsigned char *dst)
{
	uint64_t id;

	switch (classify(lo, i, &id)) {
	case KSMU_DATAGEN_COPY:
		gen_content(lo->seed, CONTENT_TEMPLATE, id, dst);
		break;
	case KSMU_DATAGEN_UNIQUE:
		gen_content(lo->seed, CONTENT_UNIQUE, id, dst);
		break;
	default:
		memset(dst, 0, PAGE);
		break;
	}
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return (x > y) - (x < y);
}

typedef void (*count_fn)(size_t copies, void *arg);

/*
 * Call @fn once for every template that has copies, with its copy count.
 * Dense (K <= dup / 2): one 8-byte counter per template.  Sparse: sort the
 * 4-byte template ids of all copies.  Either way at most 4 bytes per copy.
 */
static int for_each_template(const struct layout *lo, count_fn fn, void *arg)
{
	size_t n = 0;

	if (!lo->n_dup)
		return 0;

	if (lo->k <= lo->n_dup / 2) {
		uint64_t *cnt = calloc(lo->k, sizeof(*cnt));

		if (!cnt)
			return -ENOMEM;
		for (size_t j = 0; j < lo->n_runs; j++) {
			uint64_t t = run_tmpl(lo, j);

			for (size_t off = 0; off < lo->len; off++)
				cnt[(t + off) % lo->k]++;
		}
		for (size_t s = 0; s < lo->n_single; s++)
			cnt[single_tmpl(lo, s)]++;
		for (uint64_t u = 0; u < lo->k; u++)
			if (cnt[u])
				fn(cnt[u], arg);
		free(cnt);
		return 0;
	}

	uint32_t *ids = malloc(lo->n_dup * sizeof(*ids));

	if (!ids)
		return -ENOMEM;
	for (size_t j = 0; j < lo->n_runs; j++) {
		uint64_t t = run_tmpl(lo, j);

		for (size_t off = 0; off < lo->len; off++)
			ids[n++] = (uint32_t)((t + off) % lo->k);
	}
	for (size_t s = 0; s < lo->n_single; s++)
		ids[n++] = (uint32_t)single_tmpl(lo, s);
	qsort(ids, n, sizeof(*ids), cmp_u32);
	for (size_t a = 0; a < n;) {
		size_t b = a + 1;

		while (b < n && ids[b] == ids[a])
			b++;
		fn(b - a, arg);
		a = b;
	}
	free(ids);
	return 0;
}

struct presence {
	size_t present, shared;
};

static void count_presence(size_t copies, void *arg)
{
	struct presence *p = arg;

	p->present++;
	p->shared += copies >= 2;
}

static int layout_truth(const struct layout *lo, struct ksmu_datagen_truth *t)
{
	struct presence p = { 0, 0 };
	int ret = for_each_template(lo, count_presence, &p);

	if (ret)
		return ret;
	memset(t, 0, sizeof(*t));
	t->dup_pages = lo->n_dup;
	t->zero_pages = lo->n_zero;
	t->unique_pages = lo->n_uniq;
	t->templates_present = p.present;
	t->templates_shared = p.shared;
	/* Every template with c copies frees c - 1 pages; singletons free 0. */
	t->pages_shared_uzp = p.shared;
	t->pages_sharing_uzp = lo->n_dup - p.present;
	t->zero_pages_uzp = lo->n_zero;
	t->pages_shared = p.shared + (lo->n_zero >= 2);
	t->pages_sharing = t->pages_sharing_uzp + (lo->n_zero >= 2 ? lo->n_zero - 1 : 0);
	return 0;
}

struct expect_acc {
	size_t limit; /* max_page_sharing, SIZE_MAX for none */
	struct ksmu_datagen_expect *e;
};

/*
 * One content with @copies pages, merged greedily as KSM does: a stable
 * node takes up to @limit pages; once it is full the next page waits in the
 * unstable tree until a partner arrives and a new node (a dup of the chain)
 * starts.  So q = c / limit full nodes, one more node if the remainder r is
 * >= 2, and a lone remainder (r == 1) stays unshared.
 */
static void expect_content(struct ksmu_datagen_expect *e, size_t copies, size_t limit)
{
	size_t q = copies / limit, r = copies % limit;
	size_t nodes = q + (r >= 2);

	e->pages_shared += nodes;
	e->pages_sharing += q * (limit - 1) + (r >= 2 ? r - 1 : 0);
	e->pages_unshared += r == 1;
	if (nodes >= 2) {
		e->stable_node_chains++;
		e->stable_node_dups += nodes;
	}
}

static void count_expect(size_t copies, void *arg)
{
	struct expect_acc *acc = arg;

	expect_content(acc->e, copies, acc->limit);
}

int ksmu_datagen_truth(const struct ksmu_datagen_spec *spec, struct ksmu_datagen_truth *truth)
{
	struct layout lo;
	int ret;

	if (!truth)
		return -EINVAL;
	ret = layout_init(&lo, spec);
	if (ret)
		return ret;
	return layout_truth(&lo, truth);
}

int ksmu_datagen_expect(const struct ksmu_datagen_spec *spec, unsigned long max_page_sharing,
			int use_zero_pages, struct ksmu_datagen_expect *out)
{
	struct ksmu_datagen_expect e;
	struct expect_acc acc = { SIZE_MAX, &e };
	struct layout lo;
	int ret;

	if (!out || max_page_sharing == 1 || (use_zero_pages != 0 && use_zero_pages != 1))
		return -EINVAL;
	ret = layout_init(&lo, spec);
	if (ret)
		return ret;
	if (max_page_sharing && max_page_sharing < SIZE_MAX)
		acc.limit = max_page_sharing;

	memset(&e, 0, sizeof(e));
	ret = for_each_template(&lo, count_expect, &acc);
	if (ret)
		return ret;
	e.pages_unshared += lo.n_uniq;
	if (use_zero_pages)
		e.zero_pages = lo.n_zero;
	else if (lo.n_zero)
		expect_content(&e, lo.n_zero, acc.limit);
	*out = e;
	return 0;
}

int ksmu_datagen_fill(void *mem, const struct ksmu_datagen_spec *spec,
		      struct ksmu_datagen_truth *truth)
{
	unsigned char *p = mem;
	struct layout lo;
	int ret;

	ret = layout_init(&lo, spec);
	if (ret)
		return ret;
	if (!mem && lo.pages)
		return -EINVAL;
	if (truth) {
		ret = layout_truth(&lo, truth);
		if (ret)
			return ret;
	}
	for (size_t i = 0; i < lo.pages; i++)
		gen_page(&lo, i, p + i * PAGE);
	return 0;
}

static bool all_zero(const unsigned char *p)
{
	static const unsigned char zero[PAGE];

	return memcmp(p, zero, PAGE) == 0;
}

int ksmu_datagen_verify(const void *mem, const struct ksmu_datagen_spec *spec,
			size_t *first_bad)
{
	const unsigned char *p = mem;
	unsigned char want[PAGE];
	struct layout lo;
	int ret;

	ret = layout_init(&lo, spec);
	if (ret)
		return ret;
	if (!mem && lo.pages)
		return -EINVAL;
	for (size_t i = 0; i < lo.pages; i++) {
		const unsigned char *got = p + i * PAGE;
		uint64_t id;
		bool ok;

		switch (classify(&lo, i, &id)) {
		case KSMU_DATAGEN_COPY:
			gen_content(lo.seed, CONTENT_TEMPLATE, id, want);
			ok = memcmp(got, want, PAGE) == 0;
			break;
		case KSMU_DATAGEN_UNIQUE:
			gen_content(lo.seed, CONTENT_UNIQUE, id, want);
			ok = memcmp(got, want, PAGE) == 0;
			break;
		default:
			ok = all_zero(got);
			break;
		}
		if (!ok) {
			if (first_bad)
				*first_bad = i;
			return -EBADMSG;
		}
	}
	return 0;
}

int ksmu_datagen_page(const struct ksmu_datagen_spec *spec, size_t index, void *out4k)
{
	struct layout lo;
	int ret;

	if (!out4k)
		return -EINVAL;
	ret = layout_init(&lo, spec);
	if (ret)
		return ret;
	if (index >= lo.pages)
		return -EINVAL;
	gen_page(&lo, index, out4k);
	return 0;
}

int ksmu_datagen_kind(const struct ksmu_datagen_spec *spec, size_t index, uint64_t *id)
{
	struct layout lo;
	uint64_t dummy;
	int ret;

	ret = layout_init(&lo, spec);
	if (ret)
		return ret;
	if (index >= lo.pages)
		return -EINVAL;
	return classify(&lo, index, id ? id : &dummy);
}

int ksmu_datagen_template(const struct ksmu_datagen_spec *spec, unsigned t, void *out4k)
{
	if (!spec || !out4k || t >= spec->templates)
		return -EINVAL;
	gen_content(spec->seed, CONTENT_TEMPLATE, t, out4k);
	return 0;
}
