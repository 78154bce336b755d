/* SPDX-License-Identifier: MIT */
/*
 * Description: the workload generator (tools/datagen) writes what its spec
 * says and its truth is right: counts match the rounded fractions; a
 * brute-force regrouping of every page by full content reproduces the truth
 * (scattered and run layouts, with and without zero pages, K larger than the
 * number of copies, rounding and tail corner cases); ksmu_datagen_expect()
 * (KSM's counters under max_page_sharing and use_zero_pages) agrees with a
 * page-by-page replay of KSM's greedy merge; ksmu_datagen_kind() agrees
 * with the bytes; verify() accepts the filled memory and names the
 * first corrupted page; the same seed gives the same bytes and another seed
 * other bytes; invalid specs give -EINVAL.  Also prints the fill speed.
 */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "datagen.h"
#include "test.h"

#define PG KSMU_DATAGEN_PAGE_SIZE

static const unsigned char *g_mem; /* image being sorted by cmp_pages() */
static uint64_t *g_hash;

static uint64_t fnv1a(const unsigned char *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

/* Total order on page indices by content: hash first, then all bytes. */
static int cmp_pages(const void *a, const void *b)
{
	size_t x = *(const size_t *)a, y = *(const size_t *)b;
	int c;

	if (g_hash[x] != g_hash[y])
		return g_hash[x] < g_hash[y] ? -1 : 1;
	c = memcmp(g_mem + x * PG, g_mem + y * PG, PG);
	if (c)
		return c;
	return (x > y) - (x < y);
}

static bool is_zero(const unsigned char *p)
{
	for (size_t i = 0; i < PG; i++)
		if (p[i])
			return false;
	return true;
}

static void *map(size_t pages)
{
	void *p = mmap(NULL, pages ? pages * PG : PG, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED) {
		perror("mmap");
		exit(T_EXIT_FAIL);
	}
	return p;
}

static size_t rounded(double frac, size_t pages)
{
	double c = frac * (double)pages + 0.5; /* round half up, as documented */

	return c >= (double)pages ? pages : (size_t)c;
}

/*
 * Replay KSM's greedy merge of one content's @copies pages, page by page,
 * with at most @limit pages per stable node (0: none), and add the result to
 * @e.  An independent model of what ksmu_datagen_expect() computes in
 * closed form.
 */
static void simulate_content(struct ksmu_datagen_expect *e, size_t copies, size_t limit)
{
	size_t nodes = 0, fill = 0, in_nodes = 0;
	bool pending = false;

	for (size_t i = 0; i < copies; i++) {
		if (nodes && (!limit || fill < limit)) {
			fill++;
			in_nodes++;
		} else if (pending) {
			nodes++;
			fill = 2;
			in_nodes += 2;
			pending = false;
		} else {
			pending = true;
		}
	}
	e->pages_shared += nodes;
	e->pages_sharing += in_nodes - nodes;
	e->pages_unshared += pending;
	if (nodes >= 2) {
		e->stable_node_chains++;
		e->stable_node_dups += nodes;
	}
}

static bool expect_equal(const struct ksmu_datagen_expect *a, const struct ksmu_datagen_expect *b)
{
	return a->pages_shared == b->pages_shared && a->pages_sharing == b->pages_sharing &&
	       a->pages_unshared == b->pages_unshared && a->zero_pages == b->zero_pages &&
	       a->stable_node_chains == b->stable_node_chains &&
	       a->stable_node_dups == b->stable_node_dups;
}

/*
 * Fill @spec and recount everything from the bytes alone, then compare with
 * the generator's truth and its kind() answers.
 */
static void check_spec(const char *name, const struct ksmu_datagen_spec *spec)
{
	size_t n = spec->pages;
	unsigned char *mem = map(n);
	struct ksmu_datagen_truth t, t2;
	size_t *idx = calloc(n, sizeof(*idx));
	int *kind = calloc(n, sizeof(*kind));
	uint64_t *id = calloc(n, sizeof(*id));
	unsigned char *uniq_seen;
	size_t *gsize, ngroups = 0; /* content groups: size, and whether zero */
	bool *gzero;
	size_t zero = 0, groups_shared = 0, sharing = 0, zero_group = 0;
	size_t tmpl_present = 0, tmpl_shared = 0, uniq = 0, dup = 0;
	bool mixed = false, uniq_repeat = false, uniq_range = true;
	unsigned char page[PG];
	size_t bad = 12345;
	int ret;

	g_hash = calloc(n, sizeof(*g_hash));
	if (!idx || !kind || !id || !g_hash) {
		perror("calloc");
		exit(T_EXIT_FAIL);
	}

	ret = ksmu_datagen_fill(mem, spec, &t);
	CHECK_RET(name, ret, 0);
	if (ret)
		goto out;
	CHECK_RET(name, ksmu_datagen_truth(spec, &t2), 0);
	CHECK(name, memcmp(&t, &t2, sizeof(t)) == 0);

	/* Counts follow the rounded fractions. */
	CHECK(name, t.dup_pages + t.zero_pages + t.unique_pages == n);
	CHECK(name, t.dup_pages == rounded(spec->dup_frac, n));
	if (rounded(spec->dup_frac, n) + rounded(spec->zero_frac, n) <= n)
		CHECK(name, t.zero_pages == rounded(spec->zero_frac, n));
	else
		CHECK(name, t.zero_pages == n - t.dup_pages);

	/* Brute force: group pages by content. */
	g_mem = mem;
	for (size_t i = 0; i < n; i++) {
		idx[i] = i;
		g_hash[i] = fnv1a(mem + i * PG, PG);
		ret = ksmu_datagen_kind(spec, i, &id[i]);
		CHECK(name, ret >= 0);
		kind[i] = ret;
		if (is_zero(mem + i * PG)) {
			zero++;
			CHECK(name, kind[i] == KSMU_DATAGEN_ZERO);
		} else {
			CHECK(name, kind[i] != KSMU_DATAGEN_ZERO);
		}
		dup += kind[i] == KSMU_DATAGEN_COPY;
		if (kind[i] == KSMU_DATAGEN_COPY)
			CHECK(name, id[i] < spec->templates);
	}
	qsort(idx, n, sizeof(*idx), cmp_pages);

	uniq_seen = calloc(n ? n : 1, 1);
	gsize = calloc(n ? n : 1, sizeof(*gsize));
	gzero = calloc(n ? n : 1, sizeof(*gzero));
	for (size_t a = 0; a < n;) {
		size_t b = a + 1, first = idx[a];

		while (b < n && memcmp(mem + idx[b] * PG, mem + first * PG, PG) == 0) {
			/* Same bytes must mean same (kind, id). */
			if (kind[idx[b]] != kind[first] || id[idx[b]] != id[first])
				mixed = true;
			b++;
		}
		if (b - a >= 2) {
			groups_shared++;
			sharing += b - a - 1;
		}
		gsize[ngroups] = b - a;
		gzero[ngroups++] = kind[first] == KSMU_DATAGEN_ZERO;
		switch (kind[first]) {
		case KSMU_DATAGEN_ZERO:
			zero_group = b - a;
			break;
		case KSMU_DATAGEN_COPY:
			tmpl_present++;
			tmpl_shared += b - a >= 2;
			break;
		default:
			uniq++;
			uniq_repeat |= b - a != 1;
			if (id[first] < n)
				uniq_seen[id[first]]++;
			else
				uniq_range = false;
			break;
		}
		a = b;
	}
	/*
	 * Different (kind, id) must mean different bytes: the number of
	 * content groups equals the number of distinct (kind, id) pairs,
	 * which for templates is checked against a sort of their ids.
	 */
	{
		uint64_t *tids = calloc(dup ? dup : 1, sizeof(*tids));
		size_t m = 0, distinct = 0;

		for (size_t i = 0; i < n; i++)
			if (kind[i] == KSMU_DATAGEN_COPY)
				tids[m++] = id[i];
		for (size_t i = 0; i < m; i++) { /* insertion sort is fine at 4096 */
			uint64_t v = tids[i];
			size_t j = i;

			while (j && tids[j - 1] > v) {
				tids[j] = tids[j - 1];
				j--;
			}
			tids[j] = v;
		}
		for (size_t i = 0; i < m; i++)
			distinct += i == 0 || tids[i] != tids[i - 1];
		CHECK(name, distinct == tmpl_present);
		free(tids);
	}
	for (size_t u = 0; u < t.unique_pages; u++)
		if (uniq_seen[u] != 1)
			uniq_range = false;
	free(uniq_seen);

	CHECK(name, !mixed);
	CHECK(name, zero == t.zero_pages);
	CHECK(name, zero_group == t.zero_pages);
	CHECK(name, dup == t.dup_pages);
	CHECK(name, uniq == t.unique_pages);
	CHECK(name, !uniq_repeat);
	CHECK(name, uniq_range);
	CHECK(name, tmpl_present == t.templates_present);
	CHECK(name, tmpl_shared == t.templates_shared);
	CHECK(name, groups_shared == t.pages_shared);
	CHECK(name, sharing == t.pages_sharing);
	CHECK(name, t.pages_shared_uzp == groups_shared - (zero >= 2));
	CHECK(name, t.pages_sharing_uzp == sharing - (zero >= 2 ? zero - 1 : 0));
	CHECK(name, t.zero_pages_uzp == zero);

	/* KSM's counters under knobs: closed form against a page-by-page replay. */
	for (size_t l = 0; l < 5; l++) {
		static const size_t limits[] = { 0, 2, 3, 17, 256 };

		for (int uzp = 0; uzp <= 1; uzp++) {
			struct ksmu_datagen_expect want = { 0 }, got;

			for (size_t g = 0; g < ngroups; g++) {
				if (gzero[g] && uzp)
					want.zero_pages += gsize[g];
				else
					simulate_content(&want, gsize[g], limits[l]);
			}
			CHECK_RET(name, ksmu_datagen_expect(spec, limits[l], uzp, &got), 0);
			CHECK(name, expect_equal(&got, &want));
			if (!expect_equal(&got, &want))
				fprintf(stderr, "  limit %zu uzp %d: got %zu/%zu/%zu, want %zu/%zu/%zu\n",
					limits[l], uzp, got.pages_shared, got.pages_sharing,
					got.pages_unshared, want.pages_shared, want.pages_sharing,
					want.pages_unshared);
			if (!limits[l]) {
				CHECK(name, got.pages_shared == (uzp ? t.pages_shared_uzp : t.pages_shared));
				CHECK(name, got.pages_sharing ==
						    (uzp ? t.pages_sharing_uzp : t.pages_sharing));
			}
		}
	}
	free(gsize);
	free(gzero);

	/* page() and template() reproduce the bytes one page at a time. */
	for (size_t i = 0; i < n; i++) {
		CHECK_RET(name, ksmu_datagen_page(spec, i, page), 0);
		if (memcmp(page, mem + i * PG, PG)) {
			CHECK(name, !"page() differs from fill");
			break;
		}
		if (kind[i] == KSMU_DATAGEN_COPY) {
			CHECK_RET(name, ksmu_datagen_template(spec, (unsigned)id[i], page), 0);
			CHECK(name, memcmp(page, mem + i * PG, PG) == 0);
		}
	}

	CHECK_RET(name, ksmu_datagen_verify(mem, spec, &bad), 0);
	CHECK(name, bad == 12345);

	printf("%-22s pages %5zu dup %5zu zero %5zu uniq %5zu | present %5zu shared %4zu | "
	       "pages_shared %4zu sharing %5zu\n",
	       name, n, t.dup_pages, t.zero_pages, t.unique_pages, t.templates_present,
	       t.templates_shared, t.pages_shared, t.pages_sharing);
out:
	free(g_hash);
	free(idx);
	free(kind);
	free(id);
	munmap(mem, n ? n * PG : PG);
}

/* Runs: aligned blocks of run_len copies holding consecutive templates. */
static void check_runs(void)
{
	struct ksmu_datagen_spec s = { .pages = 4096, .templates = 500, .dup_frac = 0.5,
				       .zero_frac = 0.1, .run_len = 8, .seed = 7 };
	size_t runs = 0, want = rounded(0.5, 4096) / 8;

	for (size_t b = 0; b < s.pages / s.run_len; b++) {
		bool run = true;
		uint64_t prev = 0, cur;

		for (size_t off = 0; off < s.run_len && run; off++) {
			int k = ksmu_datagen_kind(&s, b * s.run_len + off, &cur);

			run = k == KSMU_DATAGEN_COPY && (off == 0 || cur == (prev + 1) % s.templates);
			prev = cur;
		}
		runs += run;
	}
	CHECK("runs", runs == want);
}

/* Scattered copies spread over the image rather than bunching up. */
static void check_scatter(void)
{
	struct ksmu_datagen_spec s = { .pages = 4096, .templates = 64, .dup_frac = 0.5,
				       .zero_frac = 0.1, .seed = 3 };
	size_t first_half = 0, adjacent = 0;
	int prev = -1;

	for (size_t i = 0; i < s.pages; i++) {
		int k = ksmu_datagen_kind(&s, i, NULL);

		if (k == KSMU_DATAGEN_COPY && i < s.pages / 2)
			first_half++;
		adjacent += k == KSMU_DATAGEN_COPY && prev == KSMU_DATAGEN_COPY;
		prev = k;
	}
	/* 2048 copies: about 1024 in each half, about 1024 adjacent pairs. */
	CHECK("scatter", first_half > 900 && first_half < 1150);
	CHECK("scatter", adjacent > 850 && adjacent < 1200);
}

/* Known answers of the max_page_sharing model (the kernel default is 256). */
static void check_expect_known(void)
{
	struct ksmu_datagen_spec s = { .pages = 65536, .zero_frac = 0.1, .seed = 1 };
	struct ksmu_datagen_expect e;

	/* 6554 zero pages = 25 full nodes of 256 + one node of 154. */
	CHECK_RET("expect 6554", ksmu_datagen_expect(&s, 256, 0, &e), 0);
	CHECK("expect 6554", e.pages_shared == 26 && e.pages_sharing == 6554 - 26 &&
				     e.pages_unshared == 65536 - 6554 && e.stable_node_chains == 1 &&
				     e.stable_node_dups == 26 && e.zero_pages == 0);
	CHECK_RET("expect 6554 uzp", ksmu_datagen_expect(&s, 256, 1, &e), 0);
	CHECK("expect 6554 uzp", e.pages_shared == 0 && e.pages_sharing == 0 &&
					 e.zero_pages == 6554 && e.stable_node_chains == 0);
	CHECK_RET("expect unlimited", ksmu_datagen_expect(&s, 0, 0, &e), 0);
	CHECK("expect unlimited", e.pages_shared == 1 && e.pages_sharing == 6553);

	s = (struct ksmu_datagen_spec){ .pages = 257, .zero_frac = 1.0 };
	CHECK_RET("expect 257", ksmu_datagen_expect(&s, 256, 0, &e), 0);
	CHECK("expect 257", e.pages_shared == 1 && e.pages_sharing == 255 &&
				    e.pages_unshared == 1 && e.stable_node_chains == 0);
	s.pages = 258;
	CHECK_RET("expect 258", ksmu_datagen_expect(&s, 256, 0, &e), 0);
	CHECK("expect 258", e.pages_shared == 2 && e.pages_sharing == 256 &&
				    e.pages_unshared == 0 && e.stable_node_chains == 1 &&
				    e.stable_node_dups == 2);
	s.pages = 256;
	CHECK_RET("expect 256", ksmu_datagen_expect(&s, 256, 0, &e), 0);
	CHECK("expect 256", e.pages_shared == 1 && e.pages_sharing == 255 &&
				    e.stable_node_chains == 0);

	CHECK_RET("expect NULL out", ksmu_datagen_expect(&s, 256, 0, NULL), -EINVAL);
	CHECK_RET("expect NULL spec", ksmu_datagen_expect(NULL, 256, 0, &e), -EINVAL);
	CHECK_RET("expect limit 1", ksmu_datagen_expect(&s, 1, 0, &e), -EINVAL);
	CHECK_RET("expect uzp 2", ksmu_datagen_expect(&s, 256, 2, &e), -EINVAL);
	s.dup_frac = 0.5;
	CHECK_RET("expect bad spec", ksmu_datagen_expect(&s, 256, 0, &e), -EINVAL);
}

static void check_seeds(void)
{
	struct ksmu_datagen_spec s = { .pages = 1024, .templates = 32, .dup_frac = 0.5,
				       .zero_frac = 0.1, .seed = 11 };
	unsigned char *a = map(s.pages), *b = map(s.pages);
	size_t same_nonzero = 0;

	CHECK_RET("seed", ksmu_datagen_fill(a, &s, NULL), 0);
	CHECK_RET("seed", ksmu_datagen_fill(b, &s, NULL), 0);
	CHECK("same seed same bytes", memcmp(a, b, s.pages * PG) == 0);

	s.seed = 12;
	CHECK_RET("seed", ksmu_datagen_fill(b, &s, NULL), 0);
	for (size_t i = 0; i < s.pages; i++)
		if (!is_zero(a + i * PG) && memcmp(a + i * PG, b + i * PG, PG) == 0)
			same_nonzero++;
	CHECK("other seed other bytes", same_nonzero == 0);
	s.seed = 11;
	CHECK_RET("other seed fails verify", ksmu_datagen_verify(b, &s, NULL), -EBADMSG);
	munmap(a, s.pages * PG);
	munmap(b, s.pages * PG);
}

static void flip_and_check(unsigned char *mem, const struct ksmu_datagen_spec *s, size_t page,
			   size_t off)
{
	size_t bad = (size_t)-1;

	mem[page * PG + off] ^= 0x40;
	CHECK_RET("verify flip", ksmu_datagen_verify(mem, s, &bad), -EBADMSG);
	CHECK("verify names the page", bad == page);
	if (bad != page)
		fprintf(stderr, "  flipped page %zu, verify said %zu\n", page, bad);
	CHECK_RET("verify flip NULL first_bad", ksmu_datagen_verify(mem, s, NULL), -EBADMSG);
	mem[page * PG + off] ^= 0x40;
	CHECK_RET("verify restored", ksmu_datagen_verify(mem, s, &bad), 0);
}

static void check_verify(void)
{
	struct ksmu_datagen_spec s = { .pages = 4096, .templates = 64, .dup_frac = 0.5,
				       .zero_frac = 0.1, .run_len = 4, .seed = 5 };
	unsigned char *mem = map(s.pages);
	size_t zero_page = s.pages, copy_page = s.pages, uniq_page = s.pages;

	CHECK_RET("verify", ksmu_datagen_fill(mem, &s, NULL), 0);
	CHECK_RET("verify", ksmu_datagen_verify(mem, &s, NULL), 0);
	for (size_t i = s.pages; i-- > 0;) {
		switch (ksmu_datagen_kind(&s, i, NULL)) {
		case KSMU_DATAGEN_ZERO:
			zero_page = i;
			break;
		case KSMU_DATAGEN_COPY:
			copy_page = i;
			break;
		default:
			uniq_page = i;
			break;
		}
	}
	CHECK("verify kinds found", zero_page < s.pages && copy_page < s.pages &&
					    uniq_page < s.pages);
	flip_and_check(mem, &s, 0, 0);
	flip_and_check(mem, &s, 1234, 777);
	flip_and_check(mem, &s, s.pages - 1, PG - 1);
	flip_and_check(mem, &s, zero_page, 100);
	flip_and_check(mem, &s, copy_page, 8);
	flip_and_check(mem, &s, uniq_page, 4000);
	/* Two corrupted pages: the first one is named. */
	mem[3000 * PG] ^= 1;
	mem[2000 * PG + 5] ^= 1;
	{
		size_t bad = 0;

		CHECK_RET("verify two", ksmu_datagen_verify(mem, &s, &bad), -EBADMSG);
		CHECK("verify two names first", bad == 2000);
	}
	munmap(mem, s.pages * PG);
}

static void check_invalid(void)
{
	const struct ksmu_datagen_spec good = { .pages = 16, .templates = 4, .dup_frac = 0.5,
						.zero_frac = 0.25, .seed = 1 };
	struct ksmu_datagen_spec s;
	struct ksmu_datagen_truth t;
	unsigned char *mem = map(16);
	unsigned char page[PG];
	size_t bad;

	CHECK_RET("NULL spec fill", ksmu_datagen_fill(mem, NULL, &t), -EINVAL);
	CHECK_RET("NULL spec truth", ksmu_datagen_truth(NULL, &t), -EINVAL);
	CHECK_RET("NULL truth", ksmu_datagen_truth(&good, NULL), -EINVAL);
	CHECK_RET("NULL spec verify", ksmu_datagen_verify(mem, NULL, NULL), -EINVAL);
	CHECK_RET("NULL mem fill", ksmu_datagen_fill(NULL, &good, &t), -EINVAL);
	CHECK_RET("NULL mem verify", ksmu_datagen_verify(NULL, &good, NULL), -EINVAL);
	CHECK_RET("NULL out page", ksmu_datagen_page(&good, 0, NULL), -EINVAL);
	CHECK_RET("NULL spec page", ksmu_datagen_page(NULL, 0, page), -EINVAL);
	CHECK_RET("page out of range", ksmu_datagen_page(&good, 16, page), -EINVAL);
	CHECK_RET("kind out of range", ksmu_datagen_kind(&good, 16, NULL), -EINVAL);
	CHECK_RET("template out of range", ksmu_datagen_template(&good, 4, page), -EINVAL);
	CHECK_RET("template NULL", ksmu_datagen_template(NULL, 0, page), -EINVAL);

	s = good;
	s.dup_frac = -0.1;
	CHECK_RET("dup < 0", ksmu_datagen_fill(mem, &s, &t), -EINVAL);
	s = good;
	s.zero_frac = -1e-12;
	CHECK_RET("zero < 0", ksmu_datagen_fill(mem, &s, &t), -EINVAL);
	s = good;
	s.dup_frac = 1.5;
	s.zero_frac = 0;
	CHECK_RET("dup > 1", ksmu_datagen_fill(mem, &s, &t), -EINVAL);
	s = good;
	s.dup_frac = 0.6;
	s.zero_frac = 0.5;
	CHECK_RET("sum > 1", ksmu_datagen_fill(mem, &s, &t), -EINVAL);
	CHECK_RET("sum > 1 verify", ksmu_datagen_verify(mem, &s, &bad), -EINVAL);
	CHECK_RET("sum > 1 kind", ksmu_datagen_kind(&s, 0, NULL), -EINVAL);
	s = good;
	s.dup_frac = NAN;
	CHECK_RET("dup NaN", ksmu_datagen_fill(mem, &s, &t), -EINVAL);
	s = good;
	s.zero_frac = NAN;
	CHECK_RET("zero NaN", ksmu_datagen_truth(&s, &t), -EINVAL);
	s = good;
	s.templates = 0;
	CHECK_RET("copies of no template", ksmu_datagen_fill(mem, &s, &t), -EINVAL);
	s = good;
	s.pages = SIZE_MAX / 1000;
	CHECK_RET("size overflow", ksmu_datagen_truth(&s, &t), -EINVAL);

	/* Sums that are 1 up to rounding error are accepted. */
	s = good;
	s.dup_frac = 0.7;
	s.zero_frac = 0.3;
	CHECK_RET("0.7 + 0.3", ksmu_datagen_truth(&s, &t), 0);
	s.dup_frac = 0.1;
	s.zero_frac = 0.9;
	CHECK_RET("0.1 + 0.9", ksmu_datagen_truth(&s, &t), 0);

	/* No template needed without copies; no pages is an empty workload. */
	s = good;
	s.templates = 0;
	s.dup_frac = 0;
	CHECK_RET("no templates, no copies", ksmu_datagen_fill(mem, &s, &t), 0);
	CHECK("no templates, no copies", t.unique_pages == 12 && t.zero_pages == 4);
	s = good;
	s.pages = 0;
	memset(&t, 0xff, sizeof(t));
	CHECK_RET("pages 0", ksmu_datagen_fill(NULL, &s, &t), 0);
	CHECK("pages 0 truth", t.dup_pages == 0 && t.zero_pages == 0 && t.unique_pages == 0 &&
				       t.pages_shared == 0 && t.pages_sharing == 0 &&
				       t.templates_present == 0 && t.zero_pages_uzp == 0);
	CHECK_RET("pages 0 verify", ksmu_datagen_verify(NULL, &s, NULL), 0);
	CHECK_RET("pages 0 page", ksmu_datagen_page(&s, 0, page), -EINVAL);
	munmap(mem, 16 * PG);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void measure_speed(void)
{
	struct ksmu_datagen_spec s = { .pages = 16384, .templates = 1024, .dup_frac = 0.5,
				       .zero_frac = 0.1, .seed = 1 };
	unsigned char *mem = map(s.pages);
	double t0, t1, t2, t3, mib = s.pages * PG / 1048576.0;
	struct ksmu_datagen_truth t;

	/* First fill also faults the pages in; the second is the steady rate. */
	t0 = now();
	CHECK_RET("speed", ksmu_datagen_fill(mem, &s, &t), 0);
	t1 = now();
	CHECK_RET("speed", ksmu_datagen_fill(mem, &s, &t), 0);
	t2 = now();
	CHECK_RET("speed", ksmu_datagen_verify(mem, &s, NULL), 0);
	t3 = now();
	printf("speed: fill %.0f MiB/s (first touch %.0f MiB/s), verify %.0f MiB/s\n",
	       mib / (t2 - t1), mib / (t1 - t0), mib / (t3 - t2));
	munmap(mem, s.pages * PG);
}

int main(void)
{
	static const struct {
		const char *name;
		struct ksmu_datagen_spec spec;
	} cases[] = {
		{ "scattered", { 4096, 64, 0.5, 0.1, 0, 1 } },
		{ "scattered run_len 1", { 4096, 64, 0.5, 0.1, 1, 1 } },
		{ "scattered no zero", { 4096, 64, 0.6, 0.0, 0, 2 } },
		{ "runs", { 4096, 64, 0.5, 0.1, 8, 3 } },
		{ "runs no zero", { 4096, 300, 0.7, 0.0, 16, 4 } },
		{ "K > copies", { 4096, 100000, 0.3, 0.05, 0, 5 } },
		{ "K > copies, runs", { 4096, 50000, 0.5, 0.1, 16, 6 } },
		{ "one zero page", { 4096, 64, 0.5, 1.0 / 4096, 0, 7 } },
		{ "all copies, tail", { 4096, 7, 1.0, 0.0, 5, 8 } },
		{ "all zero", { 4096, 0, 0.0, 1.0, 0, 9 } },
		{ "all unique", { 4096, 0, 0.0, 0.0, 0, 10 } },
		{ "rounding clamp", { 7, 3, 0.5, 0.5, 0, 11 } },
		{ "run_len > pages", { 10, 4, 0.5, 0.2, 16, 12 } },
		{ "K 1, runs", { 4096, 1, 0.5, 0.1, 8, 13 } },
		{ "K 2 < run_len", { 4096, 2, 0.5, 0.1, 3, 14 } },
		{ "one page", { 1, 5, 1.0, 0.0, 0, 15 } },
		{ "odd sizes", { 4093, 97, 0.37, 0.21, 6, 16 } },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		check_spec(cases[i].name, &cases[i].spec);
	check_runs();
	check_scatter();
	check_expect_known();
	check_seeds();
	check_verify();
	check_invalid();
	measure_speed();
	return t_exit();
}
