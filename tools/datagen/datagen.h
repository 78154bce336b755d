/* SPDX-License-Identifier: MIT */
/*
 * datagen.h - workload generator with a known true answer, for the demo, the
 * tests and the benchmarks (static library ksmu_datagen).
 *
 * A spec describes a memory image of @pages 4 KiB pages made of three kinds:
 *   - copies of K "template" contents (what cloned VMs or forked workers
 *     share),
 *   - all-zero pages,
 *   - unique pages, each different from every other page.
 * The generator fills caller-provided memory with it and reports what an
 * ideal KSM would find (struct ksmu_datagen_truth), so a scanner's counters
 * can be checked exactly.  Everything is a pure function of the spec: the
 * same spec gives the same bytes on every machine, and any single page can
 * be recomputed on its own (ksmu_datagen_page()) without the others.
 *
 * Guarantees (by construction, not by probability):
 *   - two pages have equal contents iff both are zero pages or both are
 *     copies of the same template;
 *   - template and unique pages are never all-zero.
 *
 * This header does not depend on libksmu: it is usable with kernel KSM too.
 */
#ifndef KSMU_DATAGEN_H
#define KSMU_DATAGEN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Size of a generated page; independent of the machine's page size. */
#define KSMU_DATAGEN_PAGE_SIZE 4096UL

/**
 * struct ksmu_datagen_spec - what to generate.
 * @pages:     total number of 4 KiB pages; 0 is a valid, empty workload
 * @templates: K, the number of distinct template contents; must be >= 1
 *             when @dup_frac > 0
 * @dup_frac:  fraction of the pages that are copies of a template, in [0, 1];
 *             each copy (scattered layout) or each run (run layout) picks its
 *             template uniformly at random among the K, so some templates may
 *             get no copy or a single one (see the truth)
 * @zero_frac: fraction of the pages that are all-zero, in [0, 1]; with
 *             @dup_frac the sum must not exceed 1.  The rest are unique pages.
 *             Counts are round(frac * pages); should the two rounded counts
 *             exceed @pages, the zero count is reduced.
 * @run_len:   0 or 1: copies are scattered at random over the image; > 1:
 *             copies are placed in runs of @run_len consecutive pages (each
 *             run starting at a multiple of @run_len) that hold consecutive
 *             templates t, t+1, ... (mod K), as cloned VM images do.  The
 *             dup count modulo @run_len is placed as scattered single copies.
 * @seed:      every byte and every placement is a function of the seed
 */
struct ksmu_datagen_spec {
	size_t pages;
	unsigned templates;
	double dup_frac;
	double zero_frac;
	unsigned run_len;
	uint64_t seed;
};

/**
 * struct ksmu_datagen_truth - what the generated image contains.
 * @dup_pages:         pages that are copies of a template
 * @zero_pages:        all-zero pages
 * @unique_pages:      unique pages
 * @templates_present: templates with at least one copy
 * @templates_shared:  templates with at least two copies
 *
 * What an ideal KSM reaches with use_zero_pages=0 (zero pages merge like any
 * other content):
 * @pages_shared:      distinct contents with >= 2 copies (the zero content
 *                     counts once if @zero_pages >= 2)
 * @pages_sharing:     sum over those contents of (copies - 1): pages freed
 *
 * With use_zero_pages=1 (zero pages go to the zero page, not into the trees):
 * @pages_shared_uzp:  @templates_shared
 * @pages_sharing_uzp: sum over templates of (copies - 1)
 * @zero_pages_uzp:    @zero_pages (every zero page is merged, even a lone one)
 *
 * These are the ideal figures, without KSM's max_page_sharing limit (256 by
 * default).  A content with more copies than the limit needs several stable
 * nodes, each counted in pages_shared: 6554 zero pages under the default
 * limit give 26 pages_shared, not 1.  To check a KSM's counters use
 * ksmu_datagen_expect() with its knobs.
 */
struct ksmu_datagen_truth {
	size_t dup_pages, zero_pages, unique_pages;
	size_t templates_present;
	size_t templates_shared;
	size_t pages_shared;
	size_t pages_sharing;
	size_t pages_shared_uzp, pages_sharing_uzp, zero_pages_uzp;
};

/**
 * struct ksmu_datagen_expect - KSM's counters on the image once every page
 * has been scanned, under given knobs (ksmu_datagen_expect()).
 * @pages_shared:       stable nodes: one per content with >= 2 copies, more
 *                      when a content exceeds max_page_sharing
 * @pages_sharing:      pages that share a node without being its first page
 * @pages_unshared:     pages left alone in the unstable tree: unique pages,
 *                      single-copy templates, a lone zero page (with
 *                      use_zero_pages=0) and the one page left over when a
 *                      content's copies are 1 more than a multiple of the
 *                      limit
 * @zero_pages:         pages merged with the zero page (ksm_zero_pages,
 *                      est_zero_pages); 0 with use_zero_pages=0
 * @stable_node_chains: contents split over two or more nodes
 * @stable_node_dups:   nodes inside those chains
 *
 * Merging is modelled as KSM does it, greedily: a node takes pages until it
 * holds max_page_sharing of them; the next page waits in the unstable tree
 * until a second one arrives and a new node of the chain starts.
 */
struct ksmu_datagen_expect {
	size_t pages_shared;
	size_t pages_sharing;
	size_t pages_unshared;
	size_t zero_pages;
	size_t stable_node_chains;
	size_t stable_node_dups;
};

/** Kind of a generated page, as ksmu_datagen_kind() reports it. */
enum ksmu_datagen_kind {
	KSMU_DATAGEN_ZERO = 0,   /**< all-zero page */
	KSMU_DATAGEN_COPY = 1,   /**< copy of a template; id = template index */
	KSMU_DATAGEN_UNIQUE = 2, /**< unique page; id = 0 .. unique_pages-1 */
};

/**
 * ksmu_datagen_truth() - compute the true answer of a spec without memory.
 * @spec:  the workload
 * @truth: filled on success
 *
 * Costs O(dup pages + K) time and at most 4 bytes per dup page of temporary
 * memory.
 *
 * Return: 0; -EINVAL for a NULL argument or an invalid spec (fraction
 * outside [0, 1] or NaN, fractions summing above 1, @templates 0 with
 * @dup_frac > 0, @pages * 4096 overflowing size_t); -ENOMEM if the
 * temporary count table cannot be allocated.
 */
int ksmu_datagen_truth(const struct ksmu_datagen_spec *spec,
		       struct ksmu_datagen_truth *truth);

/**
 * ksmu_datagen_expect() - KSM's counters on the image under given knobs.
 * @spec:             the workload
 * @max_page_sharing: the knob of that name (>= 2), or 0 for no limit
 * @use_zero_pages:   the knob of that name, 0 or 1
 * @out:              filled on success
 *
 * With max_page_sharing 0, pages_shared and pages_sharing equal the ideal
 * ones of struct ksmu_datagen_truth.
 *
 * Return: 0; -EINVAL as ksmu_datagen_truth(), for a NULL @out,
 * @max_page_sharing 1 or @use_zero_pages other than 0 and 1; -ENOMEM as
 * ksmu_datagen_truth().
 */
int ksmu_datagen_expect(const struct ksmu_datagen_spec *spec, unsigned long max_page_sharing,
			int use_zero_pages, struct ksmu_datagen_expect *out);

/**
 * ksmu_datagen_fill() - write the workload into memory.
 * @mem:   @spec->pages * 4096 writable bytes (any alignment; page-aligned
 *         memory is what makes sense for KSM).  Every byte is written, zero
 *         pages included, so every page ends up present.  May be NULL when
 *         @spec->pages is 0.
 * @spec:  the workload
 * @truth: if not NULL, filled with ksmu_datagen_truth()
 *
 * Return: 0; -EINVAL as ksmu_datagen_truth() or for a NULL @mem with pages;
 * -ENOMEM if @truth is wanted and its count table cannot be allocated (the
 * memory is then not written).
 */
int ksmu_datagen_fill(void *mem, const struct ksmu_datagen_spec *spec,
		      struct ksmu_datagen_truth *truth);

/**
 * ksmu_datagen_verify() - check that memory holds exactly what fill wrote.
 * @mem:       @spec->pages * 4096 readable bytes (NULL allowed if no pages)
 * @spec:      the workload it was filled with
 * @first_bad: if not NULL, set to the index of the first page that differs
 *             when -EBADMSG is returned (left alone otherwise)
 *
 * Return: 0 if every page matches; -EBADMSG if a page differs; -EINVAL for
 * an invalid spec or a NULL @mem with pages.
 */
int ksmu_datagen_verify(const void *mem, const struct ksmu_datagen_spec *spec,
			size_t *first_bad);

/**
 * ksmu_datagen_page() - content of page @index, as fill writes it.
 * @spec:  the workload
 * @index: page index, < @spec->pages
 * @out4k: receives 4096 bytes
 *
 * O(1): needs no other page and no memory of the image.
 * Return: 0; -EINVAL for a NULL argument, an invalid spec or an index out of
 * range (@out4k is then not written).
 */
int ksmu_datagen_page(const struct ksmu_datagen_spec *spec, size_t index, void *out4k);

/**
 * ksmu_datagen_kind() - what page @index is.
 * @spec:  the workload
 * @index: page index, < @spec->pages
 * @id:    if not NULL, set to the template index (COPY), the unique index
 *         (UNIQUE) or 0 (ZERO)
 *
 * Useful to pick pages that must merge (two COPY pages with the same id) or
 * must not.
 * Return: enum ksmu_datagen_kind (>= 0); -EINVAL as ksmu_datagen_page().
 */
int ksmu_datagen_kind(const struct ksmu_datagen_spec *spec, size_t index, uint64_t *id);

/**
 * ksmu_datagen_template() - content of template @t (what its copies hold).
 * @spec:  the workload (only seed and templates matter)
 * @t:     template index, < @spec->templates
 * @out4k: receives 4096 bytes
 * Return: 0; -EINVAL for a NULL argument or @t out of range.
 */
int ksmu_datagen_template(const struct ksmu_datagen_spec *spec, unsigned t, void *out4k);

#ifdef __cplusplus
}
#endif
#endif /* KSMU_DATAGEN_H */
