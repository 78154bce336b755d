/* SPDX-License-Identifier: MIT */
/*
 * options.c - the tunables and counters, under their /sys/kernel/mm/ksm names.
 *
 * DESIGN
 *   One table lists every name the API accepts, with its validation rule, so
 *   that ksmu_set_tunable(), ksmu_get_tunable(), the stats struct and later
 *   the CLI and the environment-variable parser agree on names and limits.
 *   Validation mirrors mm/ksm.c's sysfs store functions: values parse as
 *   unsigned int (so anything above UINT_MAX is -EINVAL), run accepts 0..2,
 *   max_page_sharing >= 2, booleans 0..1, and the knobs that change the
 *   meaning of existing stable nodes (max_page_sharing, merge_across_nodes)
 *   are -EBUSY while pages are shared.  Counters are read-only: setting one is
 *   -EINVAL, as an unknown name is.
 *
 * INVARIANTS
 *   A rejected value changes nothing.
 *
 * LOCKING / THREADS
 *   Called with the engine lock held.
 *
 * KERNEL REQUIREMENTS
 *   None.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cow.h"
#include "engine.h"
#include "parse.h"
#include "probe.h"

enum knob_rule { RULE_UINT, RULE_BOOL, RULE_RUN, RULE_MPS, RULE_TRACKER, RULE_RO };

struct knob_desc {
	const char *name;
	enum knob_rule rule;
	size_t knob_off; /* offset in struct ksmu_knobs, for writable knobs */
	size_t stat_off; /* offset in struct ksmu_stats, for reading */
	bool busy_if_shared;
};

#define KNOB(n, r, busy)                                                                           \
	{                                                                                          \
#n, r, offsetof(struct ksmu_knobs, n), offsetof(struct ksmu_stats, n), busy        \
	}
#define STAT(n)                                                                                    \
	{                                                                                          \
#n, RULE_RO, 0, offsetof(struct ksmu_stats, n), false                              \
	}

static const struct knob_desc knob_table[] = {
    KNOB(run, RULE_RUN, false),
    KNOB(pages_to_scan, RULE_UINT, false),
    KNOB(sleep_millisecs, RULE_UINT, false),
    KNOB(max_page_sharing, RULE_MPS, true),
    KNOB(merge_across_nodes, RULE_BOOL, true),
    KNOB(use_zero_pages, RULE_BOOL, false),
    KNOB(stable_node_chains_prune_millisecs, RULE_UINT, false),
    KNOB(smart_scan, RULE_BOOL, false),
    {"dirty_tracker", RULE_TRACKER, offsetof(struct ksmu_knobs, dirty_tracker),
     offsetof(struct ksmu_stats, dirty_tracker), true},
    KNOB(dry_run, RULE_BOOL, true),
    KNOB(cow_policy, RULE_BOOL, false),
    KNOB(max_vmas, RULE_UINT, false),
    STAT(pages_shared),
    STAT(pages_sharing),
    STAT(pages_unshared),
    STAT(pages_volatile),
    STAT(pages_scanned),
    STAT(pages_skipped),
    STAT(full_scans),
    STAT(stable_node_chains),
    STAT(stable_node_dups),
    STAT(ksm_zero_pages),
    STAT(general_profit),
};

void ksmu_knobs_default(struct ksmu_knobs *k)
{
	/* The kernel's defaults (mm/ksm.c), so that ksmu behaves like KSM out of the box. */
	k->run = KSMU_RUN_MERGE;
	k->pages_to_scan = 100;
	k->sleep_millisecs = 20;
	k->max_page_sharing = 256;
	k->merge_across_nodes = 1;
	k->use_zero_pages = 0;
	k->stable_node_chains_prune_millisecs = 2000;
	k->smart_scan = 1;
	k->dirty_tracker = 0;
	k->dry_run = 0;
	k->cow_policy = 0;
	k->max_vmas = 0;
}

/* Store references held: merged pages, zero pages and copies in store mappings. */
static uint64_t pages_shared(const struct ksmu_engine *e)
{
	return e->cnt.mapped_items;
}

/* Stable nodes whose page is merged (the zero page is not one). */
static uint64_t merged_nodes(const struct ksmu_engine *e)
{
	const struct ksmu_pstore *ps;
	uint64_t n = 0;

	for (ps = e->stores; ps; ps = ps->next)
		n += ps->nr_nodes;
	return n - (e->zero_store ? 1 : 0);
}

static const struct knob_desc *find_knob(const char *name)
{
	size_t i;

	if (!name)
		return NULL;
	for (i = 0; i < KSMU_ARRAY_SIZE(knob_table); i++)
		if (!strcmp(knob_table[i].name, name))
			return &knob_table[i];
	return NULL;
}

/* The value rules alone: no engine, no state. */
static int knob_validate(const struct knob_desc *d, unsigned long value)
{
	if (!d || d->rule == RULE_RO)
		return -EINVAL;
	if (value > UINT_MAX)
		return -EINVAL;
	switch (d->rule) {
	case RULE_BOOL:
		return value > 1 ? -EINVAL : 0;
	case RULE_RUN:
		return value > KSMU_RUN_UNMERGE ? -EINVAL : 0;
	case RULE_MPS:
		return value < 2 ? -EINVAL : 0;
	case RULE_TRACKER:
		return value > KSMU_TRACK_WP_ASYNC ? -EINVAL : 0;
	default:
		return 0;
	}
}

KSMU_API int ksmu_check_tunable(const char *name, unsigned long value)
{
	return knob_validate(find_knob(name), value);
}

const char *ksmu_knob_name(size_t i, bool *writable)
{
	if (i >= KSMU_ARRAY_SIZE(knob_table))
		return NULL;
	if (writable)
		*writable = knob_table[i].rule != RULE_RO;
	return knob_table[i].name;
}

int ksmu_knob_set(struct ksmu_engine *e, const char *name, unsigned long value)
{
	const struct knob_desc *d = find_knob(name);
	unsigned long *slot;
	int ret;

	ret = knob_validate(d, value);
	if (ret)
		return ret;
	slot = (unsigned long *)(void *)((char *)&e->knobs + d->knob_off);
	if (*slot == value)
		return 0;
	if (d->busy_if_shared && pages_shared(e))
		return -EBUSY;
	/* Store mappings stay on the descriptor they were registered with. */
	if (d->knob_off == offsetof(struct ksmu_knobs, cow_policy) && e->merger_state > 0)
		return -EBUSY;
	if (d->rule == RULE_TRACKER) {
		ret = ksmu_engine_set_tracker(e, (int)value);
		if (ret)
			return ret;
	}
	*slot = value;
	if (d->rule == RULE_RUN && value == KSMU_RUN_UNMERGE) {
		/*
		 * As the kernel's unmerge_and_remove_all_rmap_items(): give back
		 * every merged page and drop all tracking state; run stays 2,
		 * which the scanner treats as stopped.  Like the kernel, an
		 * unmerge that fails leaves run at its old value and says why.
		 */
		struct ksmu_region *r;

		ksmu_dedup_adopt_range(e, 0, UINTPTR_MAX);
		for (r = ksmu_region_first(&e->regions); r; r = ksmu_region_next(r)) {
			ret = ksmu_dedup_unmerge_range(e, r, r->start, r->end, r->wp_tracked);
			if (ret)
				return ret;
		}
		ksmu_scan_forget_all(e);
	}
	if (d->rule == RULE_BOOL && d->knob_off == offsetof(struct ksmu_knobs, dry_run))
		ksmu_scan_forget_all(e); /* detection records of the other mode go */
	if (d->knob_off == offsetof(struct ksmu_knobs, max_vmas)) {
		/* a new budget: the next merge counts, and waiting pages are tried */
		e->vma_count_stale = true;
		e->vma_full = false;
	}
	return 0;
}

int ksmu_knob_get(struct ksmu_engine *e, const char *name, unsigned long *value)
{
	const struct knob_desc *d = find_knob(name);
	struct ksmu_stats s;
	uint64_t v;

	if (!d || !value)
		return -EINVAL;
	ksmu_stats_fill(e, &s);
	memcpy(&v, (const char *)&s + d->stat_off, sizeof(v));
	*value = (unsigned long)v;
	return 0;
}

void ksmu_stats_fill(struct ksmu_engine *e, struct ksmu_stats *s)
{
	const struct ksmu_counters *c = &e->cnt;
	uint64_t meta = ksmu_scan_metadata_bytes(e);
	uint64_t est_shared = e->stable.nr_nodes;
	uint64_t est_sharing = e->stable.nr_members - e->stable.nr_nodes;
	uint64_t shared = merged_nodes(e);
	uint64_t sharing = e->cnt.merged_members > shared ? e->cnt.merged_members - shared : 0;
	uint64_t orphans = ksmu_dedup_orphan_pages(e);
	uint64_t vmas = ksmu_dedup_vmas_added(e);
	const struct ksmu_pstore *ps;

	memset(s, 0, sizeof(*s));
	s->pages_shared = shared;
	s->pages_sharing = sharing;
	s->pages_unshared = e->unstable.nr;
	/* KSM: rmap_items - shared - sharing - unshared; pages found equal are not volatile. */
	s->pages_volatile = c->rmap_items - e->stable.nr_members - e->unstable.nr - c->zero_items;
	s->pages_scanned = c->pages_scanned;
	s->pages_skipped = c->pages_skipped;
	s->full_scans = c->full_scans;
	s->stable_node_chains = e->stable.nr_chains;
	s->stable_node_dups = e->stable.nr_dups;
	s->ksm_zero_pages = e->cnt.zero_mapped;
	/*
	 * Honest profit: pages freed by sharing, minus the zero page itself,
	 * minus store pages kept only by copies, minus metadata and the kernel
	 * memory of the VMAs merging added (192 bytes each).
	 */
	s->general_profit = (int64_t)((sharing + e->cnt.zero_mapped) * KSMU_PAGE_SIZE) -
			    (int64_t)((orphans + (e->zero_store ? 1 : 0)) * KSMU_PAGE_SIZE) -
			    (int64_t)meta - (int64_t)(vmas * 192);

	s->run = e->knobs.run;
	s->pages_to_scan = e->knobs.pages_to_scan;
	s->sleep_millisecs = e->knobs.sleep_millisecs;
	s->max_page_sharing = e->knobs.max_page_sharing;
	s->merge_across_nodes = e->knobs.merge_across_nodes;
	s->use_zero_pages = e->knobs.use_zero_pages;
	s->stable_node_chains_prune_millisecs = e->knobs.stable_node_chains_prune_millisecs;
	s->smart_scan = e->knobs.smart_scan;

	s->rmap_items = c->rmap_items;
	s->pages_tracked = e->pages_tracked;
	s->regions = e->nr_regions;
	s->pages_hashed = c->pages_hashed;
	s->pages_clean = c->pages_clean;
	s->pages_compared = c->pages_compared;
	s->hash_collisions = c->hash_collisions;
	s->metadata_bytes = meta;
	s->rmap_item_size = sizeof(struct ksmu_rmap_item);
	s->dirty_tracker = (uint64_t)e->tracker_mode;
	s->scan_cpu_ns = c->scan_cpu_ns;

	s->est_pages_shared = est_shared;
	s->est_pages_sharing = est_sharing;
	s->est_zero_pages = c->zero_items;
	s->est_profit = (int64_t)((est_sharing + c->zero_items) * KSMU_PAGE_SIZE) - (int64_t)meta;
	s->uffd_events = c->uffd_events;

	s->dry_run = e->knobs.dry_run;
	s->merging = !e->knobs.dry_run && e->tracker.minor && e->merger_state >= 0 &&
		     e->tracker_mode == KSMU_TRACK_WP_ASYNC;
	s->merges = e->dd.merges;
	s->merge_busy = e->dd.busy;
	s->merge_changed = e->dd.changed;
	s->merge_failed = e->dd.failed;
	s->merge_vma_limited = e->dd.vma_limited;
	s->cow_breaks = e->dd.cow_breaks;
	s->pages_unmerged = e->dd.unmerged;
	s->unmerge_failed = e->dd.unmerge_failed;
	s->minor_zero = __atomic_load_n(&e->dd.minor_zero, __ATOMIC_RELAXED);
	s->minor_store = __atomic_load_n(&e->dd.minor_store, __ATOMIC_RELAXED);
	for (ps = e->stores; ps; ps = ps->next)
		s->store_pages += ps->s.nr_used;
	s->store_orphans = orphans;
	s->store_vmas = e->dd.store_vmas;
	s->vmas_added = vmas;
	s->vma_limit = e->vma_limit;
	s->merge_zapped = e->merger.stats.zapped;
	s->merge_unsettled = e->merger.stats.unsettled;
	s->unmerge_retries = e->dd.unmerge_retries;
	s->window_ns = e->merger.stats.window_ns;
	s->window_ns_max = e->merger.stats.window_ns_max;
	s->pages_adopted = e->dd.adopted;
	s->zap_ranges = ksmu_engine_zap_count();
	s->reader_cpu_ns = ksmu_engine_reader_cpu_ns(e);
	s->cow_policy = e->knobs.cow_policy;
	s->max_vmas = e->knobs.max_vmas;
	s->merge_windows = e->merger.stats.windows;
	s->store_near = e->dd.store_near;
	{
		struct ksmu_cow_stats cs;

		ksmu_cow_stats(&cs);
		s->cow_user = cs.user;
		s->cow_user_ns = cs.ns;
		s->cow_user_ns_max = cs.ns_max;
		s->cow_kernel = cs.kernel;
	}
}

int ksmu_knobs_from_env(struct ksmu_engine *e)
{
	size_t i;
	int bad = 0;

	for (i = 0; i < KSMU_ARRAY_SIZE(knob_table); i++) {
		const struct knob_desc *d = &knob_table[i];
		char var[64];
		const char *v;
		unsigned long x;
		uint64_t x64;
		size_t k;
		int ret;

		if (d->rule == RULE_RO)
			continue;
		snprintf(var, sizeof(var), "KSMU_%s", d->name);
		for (k = 5; var[k]; k++)
			var[k] = (char)toupper((unsigned char)var[k]);
		v = getenv(var);
		if (!v)
			continue;
		ret = ksmu_parse_decimal(v, ULONG_MAX, &x64);
		x = (unsigned long)x64;
		if (!ret)
			ret = ksmu_knob_set(e, d->name, x);
		if (ret) {
			/*
			 * Asked-for output: the value was given and is not used.
			 * Direct to stderr, whatever KSMU_LOG says.
			 */
			fprintf(stderr, "ksmu: %s=%s ignored: %s\n", var, v,
				ret == -ERANGE	? "too large"
				: ret == -EBUSY ? "cannot change while pages are merged"
				: ret == -EOPNOTSUPP ? "not supported by this kernel"
				: "not a valid value for this knob (see ksmu_set_tunable())");
			bad++;
		}
	}
	return bad;
}
