/* SPDX-License-Identifier: MIT */
/*
 * dedup.c - merging for the scanner: stores, their reference counts, and
 * the steps that turn a duplicate found by scan.c into one store page
 * mapped MAP_PRIVATE at every address that holds that content.
 *
 * DESIGN
 *   A stable node (stable.c) is one store page: @store, @store_idx.  Every
 *   member maps it (KSMU_ITEM_MAPPED).  A duplicate joins a node through a
 *   merge window (merge.c: pin check, full comparison of the detached page,
 *   mmap of the store page); a pair found in the unstable tree becomes a new
 *   node whose store page is allocated and written first.  The content of a
 *   node is read from its store page, which never changes (store.c), so a
 *   node stays valid whatever its members do.
 *
 *   Userfaultfd registrations.  A range is registered with one uffd only.
 *   The scanner's tracker (uffd.c) holds registered anonymous memory in
 *   async WP mode; the merger's own uffd needs the page in MISSING mode for
 *   the window.  A join therefore unregisters the page from the tracker,
 *   runs the window on the merger's uffd (which reports no events, so our
 *   own mmap over the page is not mistaken for an application munmap), and
 *   then registers the new store mapping with the tracker in WP | MINOR
 *   mode (or the anonymous page in WP mode again if the merge did not
 *   happen).  A write to the page between the two registrations is caught
 *   by the window's comparison; a write after a failed window is reported
 *   as "written" at the next visit (the page lost its WP bit), which only
 *   costs a re-hash.
 *
 *   Copy-on-write.  A write to a merged page makes the kernel copy it (15 us,
 *   KSM's cost).  The copy is a private anonymous page inside the store VMA;
 *   PAGEMAP_SCAN reports it as written, and the scanner takes the page out
 *   of its node (cow_breaks).  Such a page cannot be detached pin-safely
 *   (UFFDIO_MOVE refuses file VMAs), so it is not merged again (policy
 *   "kernel COW"; docs/design-merging.md).
 *
 *   Reference counts.  A store page may be freed (hole-punched) and its
 *   index reused only when no address of any process can fault it in any
 *   more.  An address in a store VMA can, even after a COW break (after an
 *   MADV_DONTNEED the VMA maps the file offset again), so refs[] counts
 *   every address whose VMA maps the page: members, zero pages, and copies.
 *   A reference is dropped when the address stops mapping the file: unmerge
 *   (anonymous memory mremap()ed over it) or munmap (UFFD_EVENT_UNMAP).
 *   Where the engine loses track (mremap() of a store mapping, a region
 *   dropped without an event), references are leaked, never dropped early:
 *   a leak costs a page, an early free would corrupt memory.
 *
 *   fork().  The child maps every store page of the parent.  From the fork
 *   on, neither process may free or reuse any page of the stores that exist
 *   (retired); new merges go to a new store.  A retired store is closed when
 *   its last reference in this process goes; the kernel frees its memory
 *   when the last mapping in any process goes.
 *
 *   VMA budget.  A merged page in the middle of an anonymous VMA costs two
 *   VMAs (adjacent pages of adjacent store pages share one).  The engine
 *   never lets merging take the process past 3/4 of vm.max_map_count: it
 *   counts the VMAs of the process at the end of each pass and adds 2 per
 *   merge in between (an upper bound); merges over budget are skipped
 *   (vma_limited) and the pages stay as they are.  While the budget is
 *   used up (vma_full), pages refused for it are not even read: they wait,
 *   unchanged, until a count finds room (at a pass end after VMAs went
 *   away, or 30 s after the last count) and are searched again then.
 *
 * INVARIANTS
 *   - refs[i] == number of MAPPED items naming page i (as members of the
 *     node of page i, as zero pages of the zero page i, or through the
 *     private reference of a copied page); a page is allocated while
 *     refs[i] > 0 or a node names it.
 *   - A retired store never frees or allocates.
 *   - A MAPPED item is never in the unstable tree.
 *
 * LOCKING / THREADS
 *   Engine lock held, scanner thread or API caller.  The merge windows
 *   block application threads that touch the page for ~20-100 us.
 *
 * KERNEL REQUIREMENTS
 *   merge.c (UFFDIO_MOVE, 6.8) and uffd.c's tracker with MINOR_SHMEM and
 *   without USER_MODE_ONLY (root, or vm.unprivileged_userfaultfd=1).
 *   Without them the engine detects and estimates only.
 */
#include <errno.h>
#include <sched.h>
#include <time.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define LOG_PREFIX "dedup: "
#include "compat.h"
#include "cow.h"
#include "engine.h"
#include "hash.h"
#include "log.h"

/* A store may grow to 1 TiB of file (costs nothing until written). */
#define STORE_MAX_PAGES (1UL << 28)

static const uint8_t zero_page[KSMU_PAGE_SIZE] __attribute__((aligned(KSMU_PAGE_SIZE)));

/* ------------------------------------------------------------ set-up */

static int hook_arm(void *arg, uintptr_t addr, size_t len)
{
	struct ksmu_engine *e = arg;

	return ksmu_tracker_register_store(&e->tracker, addr, len);
}

static void hook_zap_lock(void *arg, bool on)
{
	(void)arg;
	ksmu_engine_zap_lock(on);
}

static void hook_zap_add(void *arg, uintptr_t start, uintptr_t end)
{
	(void)arg;
	ksmu_engine_zap_add_locked(start, end);
}

static void hook_zap_test(void *arg, uintptr_t start, size_t n, uint64_t *mask)
{
	(void)arg;
	ksmu_engine_zap_test_locked(start, n, mask);
}

static void hook_zap_del(void *arg, uintptr_t start, uintptr_t end)
{
	(void)arg;
	ksmu_engine_zap_del_locked(start, end);
}

static int hook_disarm(void *arg, uintptr_t addr, size_t len)
{
	struct ksmu_engine *e = arg;

	return ksmu_tracker_unregister_store(&e->tracker, addr, len);
}

static int merger_ready(struct ksmu_engine *e)
{
	int ret;

	if (e->merger_state > 0)
		return 0;
	if (e->merger_state < 0)
		return e->merger_state;
	/*
	 * cow_policy is decided here, once: store mappings stay on the
	 * descriptor they were registered with (a forked child keeps the
	 * kernel policy: its inherited store mappings are on its tracker).
	 */
	if (e->knobs.cow_policy && !e->tracker.cow) {
		/*
		 * Not beside ksmd-user yet (the daemon's stores under this
		 * policy are untested): a connected agent keeps policy 0, and
		 * policy 1 keeps the agent from connecting.
		 */
		ret = e->cow_child || e->agent.state == KSMU_AGENT_CONNECTED ? -EOPNOTSUPP
									    : ksmu_cow_start(e);
		if (!ret && e->agent.state == KSMU_AGENT_IDLE) {
			pr_info("cow_policy=1: not joining ksmd-user");
			e->agent.state = KSMU_AGENT_OFF;
		}
		if (ret) {
			pr_info("cow_policy=1 unavailable (%s): the kernel copies written pages",
				strerror(-ret));
			e->knobs.cow_policy = 0;
		}
	}
	e->merge_hooks.arg = e;
	e->merge_hooks.tracker_fd = e->tracker.fd;
	e->merge_hooks.store_fd = ksmu_tracker_store_fd(&e->tracker);
	e->merge_hooks.arm = hook_arm;
	e->merge_hooks.zap_lock = hook_zap_lock;
	e->merge_hooks.zap_add = hook_zap_add;
	e->merge_hooks.zap_test = hook_zap_test;
	e->merge_hooks.zap_del = hook_zap_del;
	e->merge_hooks.disarm = hook_disarm;
	ret = ksmu_merger_init_hooks(&e->merger, &e->merge_hooks);
	if (ret) {
		pr_info("merging unavailable (%s): detecting only", strerror(-ret));
		e->merger_state = ret;
		return ret;
	}
	e->merger_state = 1;
	/* the reader drains the merger's REMOVE descriptors from now on */
	__atomic_store_n(&e->merger_hooked, 1, __ATOMIC_RELEASE);
	return 0;
}

bool ksmu_dedup_active(struct ksmu_engine *e, const struct ksmu_region *r)
{
	if (e->knobs.dry_run || !r->wp_tracked || !e->tracker.minor ||
	    e->tracker_mode != KSMU_TRACK_WP_ASYNC || merger_ready(e))
		return false;
	e->merge_hooks.tracker_fd = e->tracker.fd; /* windows run under the engine lock */
	e->merge_hooks.store_fd = ksmu_tracker_store_fd(&e->tracker);
	return true;
}

/* ------------------------------------------------------------ stores */

static int refs_reserve(struct ksmu_pstore *ps, size_t idx)
{
	size_t n = ps->refs_len ? ps->refs_len : 1024;
	uint32_t *p;

	if (idx < ps->refs_len)
		return 0;
	while (n <= idx)
		n *= 2;
	if (ps->remote) {
		uint32_t *g = realloc(ps->grants, n * sizeof(*g));
		struct ksmu_stable_node **no;

		if (!g)
			return -ENOMEM;
		ps->grants = g;
		memset(g + ps->refs_len, 0, (n - ps->refs_len) * sizeof(*g));
		no = realloc(ps->node_of, n * sizeof(*no));
		if (!no)
			return -ENOMEM;
		ps->node_of = no;
		memset(no + ps->refs_len, 0, (n - ps->refs_len) * sizeof(*no));
	}
	p = realloc(ps->refs, n * sizeof(*p));
	if (!p)
		return -ENOMEM;
	memset(p + ps->refs_len, 0, (n - ps->refs_len) * sizeof(*p));
	ps->refs = p;
	ps->refs_len = n;
	return 0;
}

static struct ksmu_pstore *current_store(struct ksmu_engine *e)
{
	struct ksmu_pstore *ps;
	struct stat st;

	if (e->cur_store)
		return e->cur_store;
	ps = calloc(1, sizeof(*ps));
	if (!ps)
		return NULL;
	if (ksmu_store_init(&ps->s, STORE_MAX_PAGES)) {
		free(ps);
		return NULL;
	}
	if (fstat(ps->s.fd, &st) == 0)
		ps->ino = st.st_ino; /* to recognise its mappings (adopt_moved()) */
	ps->next = e->stores;
	e->stores = ps;
	e->cur_store = ps;
	return ps;
}

static void store_release(struct ksmu_engine *e, struct ksmu_pstore *ps)
{
	struct ksmu_pstore **pp;

	for (pp = &e->stores; *pp; pp = &(*pp)->next) {
		if (*pp == ps) {
			*pp = ps->next;
			break;
		}
	}
	if (e->cur_store == ps)
		e->cur_store = NULL;
	if (e->zero_store == ps)
		e->zero_store = NULL;
	ksmu_store_destroy(&ps->s);
	free(ps->refs);
	free(ps->grants);
	free(ps->node_of);
	free(ps);
}

/*
 * Nothing of this process maps page @idx of daemon store @ps and no node
 * names it: give its grants back (a retired store keeps them: a forked
 * child or a lost daemon; the store closes with its last reference).
 */
static void remote_release(struct ksmu_engine *e, struct ksmu_pstore *ps, uint32_t idx)
{
	if (ps->retired) {
		if (!ps->nr_refs && !ps->nr_nodes)
			store_release(e, ps);
		return;
	}
	if (idx < ps->refs_len && ps->grants[idx]) {
		ksmu_agent_release(e, ps->remote, idx, ps->grants[idx]);
		ps->grants[idx] = 0;
	}
}

static void ref_get(struct ksmu_pstore *ps, uint32_t idx)
{
	KSMU_BUG_ON(idx >= ps->refs_len);
	ps->refs[idx]++;
	ps->nr_refs++;
}

/*
 * A page without references and without a node may go.  Nodes hold no
 * reference of their own: a node is freed when its last member leaves
 * (ksmu_dedup_node_gone()), and its page goes with the last reference.
 */
static void ref_put(struct ksmu_engine *e, struct ksmu_pstore *ps, uint32_t idx, bool node_alive)
{
	KSMU_BUG_ON(idx >= ps->refs_len || !ps->refs[idx]);
	ps->refs[idx]--;
	ps->nr_refs--;
	if (ps->refs[idx] || node_alive)
		return;
	if (ps->remote) {
		if (!ps->node_of[idx])
			remote_release(e, ps, idx);
		return;
	}
	if (ps->retired) {
		if (!ps->nr_refs && !ps->nr_nodes)
			store_release(e, ps);
		return;
	}
	if (e->zero_store == ps && e->zero_idx == idx)
		return; /* kept for the next zero page */
	ksmu_store_free_run(&ps->s, idx, 1);
}

void ksmu_dedup_node_gone(struct ksmu_engine *e, struct ksmu_stable_node *sn)
{
	struct ksmu_pstore *ps = sn->store;

	if (!ps)
		return;
	ps->nr_nodes--;
	sn->store = NULL;
	if (ps->remote && ps->node_of[sn->store_idx] == sn)
		ps->node_of[sn->store_idx] = NULL;
	if (ps->refs[sn->store_idx])
		return; /* copies still map it: freed with their last reference */
	if (ps->remote) {
		remote_release(e, ps, sn->store_idx);
		return;
	}
	if (ps->retired) {
		if (!ps->nr_refs && !ps->nr_nodes)
			store_release(e, ps);
		return;
	}
	ksmu_store_free_run(&ps->s, sn->store_idx, 1);
}

/* A daemon store page (the daemon keeps the file size; no bitmap here). */
static int remote_read(const struct ksmu_pstore *ps, uint32_t idx, void *buf)
{
	ssize_t n = pread(ps->s.fd, buf, KSMU_PAGE_SIZE, (off_t)idx << KSMU_PAGE_SHIFT);

	if (n < 0)
		return -errno;
	return n == KSMU_PAGE_SIZE ? 0 : -EIO;
}

int ksmu_dedup_read_node(struct ksmu_engine *e, const struct ksmu_stable_node *sn, void *buf)
{
	(void)e;
	if (sn->store->remote)
		return remote_read(sn->store, sn->store_idx, buf);
	return ksmu_store_read(&sn->store->s, sn->store_idx, buf);
}

/* ------------------------------------------------------------ items */

static void mark_mapped(struct ksmu_engine *e, struct ksmu_rmap_item *it)
{
	ksmu_item_set_flags(it, KSMU_ITEM_MAPPED);
	ksmu_item_chunk(it)->nr_mapped++;
	e->cnt.mapped_items++;
}

static void unmark_mapped(struct ksmu_engine *e, struct ksmu_rmap_item *it)
{
	ksmu_item_clear_flags(it, KSMU_ITEM_MAPPED);
	ksmu_item_chunk(it)->nr_mapped--;
	e->cnt.mapped_items--;
	it->s.next = NULL;
	it->s.prev = NULL;
}

void ksmu_dedup_drop_moved(struct ksmu_engine *e, struct ksmu_rmap_item *it)
{
	if (ksmu_item_flags(it) & KSMU_ITEM_MAPPED)
		unmark_mapped(e, it); /* the reference leaks with the moved VMA */
}

/*
 * A MAPPED item in no node (a copy, or a zapped page) names its store page
 * in the otherwise unused tree links: s.stable is NULL, s.next the store,
 * s.prev the page index.
 */
void ksmu_dedup_keep_ref(struct ksmu_rmap_item *it, struct ksmu_pstore *ps, uint32_t idx)
{
	it->s.stable = NULL;
	it->s.next = (struct ksmu_rmap_item *)(void *)ps;
	it->s.prev = (struct ksmu_rmap_item *)(uintptr_t)idx;
}

void ksmu_dedup_unmapped(struct ksmu_engine *e, struct ksmu_rmap_item *it)
{
	struct ksmu_pstore *ps;
	uint32_t idx;

	if (!(ksmu_item_flags(it) & KSMU_ITEM_MAPPED))
		return;
	/* Callers take the item out of its node (or the zero set) first. */
	KSMU_BUG_ON(ksmu_item_flags(it) & (KSMU_ITEM_STABLE | KSMU_ITEM_ZERO));
	ps = (struct ksmu_pstore *)(void *)it->s.next;
	idx = (uint32_t)(uintptr_t)it->s.prev;
	unmark_mapped(e, it);
	ref_put(e, ps, idx, false);
}

/* ------------------------------------------------------------ VMA budget */

static long read_long(const char *path)
{
	char buf[32];
	long v = -1;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n > 0) {
		buf[n] = 0;
		v = strtol(buf, NULL, 10);
	}
	return v;
}

/*
 * Visit every VMA of the process in /proc/self/maps order: fn(lo, hi,
 * is_store, arg); a nonzero return stops the walk.  Return: 0, fn's value,
 * or -errno if the file cannot be read.
 */
static int maps_each(int (*fn)(unsigned long lo, unsigned long hi, bool store, void *arg),
		     void *arg)
{
	FILE *f = fopen("/proc/self/maps", "re");
	char line[512];
	int ret = 0;

	if (!f)
		return -errno;
	while (!ret && fgets(line, sizeof(line), f)) {
		size_t len = strlen(line);
		unsigned long lo, hi;

		if (!len || line[len - 1] != '\n')
			continue; /* a long line: its end comes as another read */
		if (sscanf(line, "%lx-%lx", &lo, &hi) == 2)
			ret = fn(lo, hi, strstr(line, "/memfd:ksmu-store") != NULL, arg);
	}
	fclose(f);
	return ret;
}

/*
 * VMAs merging added: every store mapping, plus one for each sequence of
 * store mappings with other VMAs right before and after it (the anonymous
 * VMA it was merged into was split in two), minus one for each sequence
 * with neither (it replaced a whole VMA).  A sequence at one edge of its
 * anonymous VMA adds just its own mappings.  (A neighbour that is not the
 * VMA the sequence was merged into, such as an adjacent unrelated mapping,
 * makes it an overcount by one, never an undercount.)
 */
struct vma_count {
	uint64_t all, stores;
	int64_t splits;
	unsigned long prev_hi;
	bool prev_store, seq_left;
	/* the store mappings, in address order, for ksmu_engine_zap_prune() */
	struct ksmu_range *ranges;
	size_t nr_ranges, ranges_cap;
	bool ranges_failed;
};

static void add_store_range(struct vma_count *c, unsigned long lo, unsigned long hi)
{
	struct ksmu_range *p;

	if (c->ranges_failed)
		return;
	if (c->nr_ranges && c->ranges[c->nr_ranges - 1].end == lo) {
		c->ranges[c->nr_ranges - 1].end = hi; /* adjacent store mappings */
		return;
	}
	if (c->nr_ranges == c->ranges_cap) {
		size_t cap = c->ranges_cap ? c->ranges_cap * 2 : 256;

		p = realloc(c->ranges, cap * sizeof(*p));
		if (!p) {
			c->ranges_failed = true;
			return;
		}
		c->ranges = p;
		c->ranges_cap = cap;
	}
	c->ranges[c->nr_ranges].start = lo;
	c->ranges[c->nr_ranges].end = hi;
	c->nr_ranges++;
}

static void seq_end(struct vma_count *c, bool right)
{
	if (c->seq_left && right)
		c->splits++;
	else if (!c->seq_left && !right)
		c->splits--;
}

static int count_cb(unsigned long lo, unsigned long hi, bool store, void *arg)
{
	struct vma_count *c = arg;
	bool touching = c->all && c->prev_hi == lo;

	if (store && !c->prev_store)
		c->seq_left = touching; /* a sequence starts */
	if (c->prev_store && (!store || !touching))
		seq_end(c, !store && touching);
	if (store && c->prev_store && !touching)
		c->seq_left = false; /* a new sequence after a hole */
	c->all++;
	c->stores += store;
	c->prev_hi = hi;
	c->prev_store = store;
	if (store)
		add_store_range(c, lo, hi);
	return 0;
}

/*
 * What the count depends on: merges, unmerges, the application's munmap,
 * mremap and MADV_DONTNEED (events), drops (zap_gen) and registrations.
 */
static uint64_t sig_mix(uint64_t h, uint64_t v)
{
	h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
	return h * 0xff51afd7ed558ccdull;
}

static uint64_t count_signature(const struct ksmu_engine *e, uint64_t zap_gen)
{
	/* a hash, not a sum: nr_regions may go down while the others go up */
	uint64_t h = sig_mix(0, e->merger.stats.runs_merged);

	h = sig_mix(h, e->merger.stats.runs_unmerged);
	h = sig_mix(h, e->cnt.uffd_events);
	h = sig_mix(h, zap_gen);
	h = sig_mix(h, e->nr_regions);
	h = sig_mix(h, e->pages_tracked);
	return sig_mix(h, e->vmas_since_count);
}

/* A count older than this is redone even if nothing seems to have changed. */
#define VMA_COUNT_MAX_AGE_NS (30 * 1000000000ull)

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/*
 * The end of a pass: count the VMAs (reading /proc/self/maps, about a
 * microsecond per VMA: with 100,000 store mappings the largest part of a
 * quiet pass), unless nothing that changes them happened since the last
 * count.  A skipped count leaves the budget stale (vma_count_stale): the
 * next merge counts first (vma_budget_ok()).
 */
void ksmu_dedup_pass_end(struct ksmu_engine *e)
{
	uint64_t gen = ksmu_engine_zap_gen();

	ksmu_merger_flush_scratch(&e->merger); /* the old copies of merged pages */
	if (!e->cnt.mapped_items && !e->dd.store_vmas && e->vma_limit)
		return; /* nothing merged: nothing to count */
	if (e->vma_limit && count_signature(e, gen) == e->vma_count_sig &&
	    mono_ns() - e->vma_count_ns < VMA_COUNT_MAX_AGE_NS) {
		e->vma_count_stale = true;
		e->dd.vma_counts_skipped++;
		return;
	}
	ksmu_dedup_count_vmas(e);
}

void ksmu_dedup_count_vmas(struct ksmu_engine *e)
{
	struct vma_count c = {0};
	uint64_t gen;
	long max;

	gen = ksmu_engine_zap_gen();
	if (maps_each(count_cb, &c) < 0)
		c.ranges_failed = true;
	if (c.prev_store)
		seq_end(&c, false);
	max = read_long("/proc/sys/vm/max_map_count");
	e->vma_limit = max > 0 ? (uint64_t)max * 3 / 4 : 65530 * 3 / 4;
	if (e->knobs.max_vmas && e->knobs.max_vmas < e->vma_limit)
		e->vma_limit = e->knobs.max_vmas;
	e->vma_count = c.all;
	e->vmas_since_count = 0;
	e->dd.store_vmas = c.stores;
	e->dd.store_splits = c.splits;
	e->vma_count_stale = false;
	e->vma_full = e->vma_count + 2 > e->vma_limit;
	e->vma_count_ns = mono_ns();
	e->vma_count_sig = count_signature(e, gen);
	/* Drops outside store mappings need no answer: forget them. */
	if (!c.ranges_failed)
		ksmu_engine_zap_prune(c.ranges, c.nr_ranges, gen);
	free(c.ranges);
}

uint64_t ksmu_dedup_vmas_added(const struct ksmu_engine *e)
{
	int64_t added = (int64_t)e->dd.store_vmas + e->dd.store_splits;

	return (uint64_t)KSMU_MAX(added, 0) + e->vmas_since_count;
}

static bool vma_budget_ok(struct ksmu_engine *e)
{
	if (!e->vma_limit || e->vma_count_stale)
		ksmu_dedup_count_vmas(e);
	if (e->vma_count + e->vmas_since_count + 2 <= e->vma_limit) {
		e->vma_full = false;
		return true;
	}
	/* Re-count once before saying no: unmerges and munmaps give VMAs back. */
	if (e->vmas_since_count) {
		ksmu_dedup_count_vmas(e);
		if (!e->vma_full)
			return true;
	}
	e->vma_full = true; /* until a count finds room (a pass end, at the latest) */
	return false;
}

/* ------------------------------------------------------------ merging */

/*
 * The page of @it maps a store page already, and its record did not know:
 * the application moved merged memory (mremap(): its records start afresh
 * at the new place, and the old references leaked).  Record it as what it
 * is, a mapping of that store page outside any node (like a copy), with a
 * reference of its own; the scanner then leaves it alone instead of failing
 * to merge it on every pass.  Return: 0 if adopted, -errno if not.
 */
static int adopt_moved(struct ksmu_engine *e, struct ksmu_rmap_item *it)
{
	struct ksmu_pstore *ps;
	uint64_t ino, pgoff;
	int err;

	err = ksmu_merge_store_page_at(&e->merger, ksmu_item_addr(it), &ino, &pgoff);
	if (err)
		return err;
	for (ps = e->stores; ps; ps = ps->next)
		if (ps->ino == ino)
			break;
	if (!ps || pgoff >= ps->refs_len || pgoff > UINT32_MAX)
		return -ENOENT;
	if (!ps->refs[pgoff] && !(e->zero_store == ps && e->zero_idx == pgoff))
		return -ENOENT; /* not a page the engine knows to be in use */
	ksmu_dedup_keep_ref(it, ps, (uint32_t)pgoff);
	ref_get(ps, (uint32_t)pgoff);
	mark_mapped(e, it);
	e->dd.adopted++;
	/* It was not armed by a window: arm it (MINOR: drops read zeros). */
	if (ksmu_tracker_register_store(&e->tracker, ksmu_item_addr(it), KSMU_PAGE_SIZE))
		pr_debug("adopted %#lx not armed", (unsigned long)ksmu_item_addr(it));
	return 0;
}

/* A window merged @n pages: count them, and the VMAs it may have added. */
static void merged_window(struct ksmu_engine *e, size_t n)
{
	/* The window armed the store mapping with the tracker (hook_arm()). */
	e->vmas_since_count += 2;
	e->dd.merges += n;
	__atomic_store_n(&e->ever_merged, true, __ATOMIC_RELEASE);
}

/* @it's page maps @sn's store page now: record it as a member. */
static void joined(struct ksmu_engine *e, struct ksmu_stable_node *sn, struct ksmu_rmap_item *it)
{
	ref_get(sn->store, sn->store_idx);
	ksmu_stable_add(&e->stable, sn, it);
	ksmu_item_set_age(it, 0);
	mark_mapped(e, it);
	e->cnt.merged_members++;
}

/*
 * Merge the page at @addr onto page @idx of @ps (content @expected) in a
 * window on the merger's uffd; see the DESIGN for the registrations.
 */
static int merge_one(struct ksmu_engine *e, uintptr_t addr, struct ksmu_pstore *ps, uint32_t idx,
		     const void *expected)
{
	int err, rerr;

	if (!vma_budget_ok(e)) {
		e->dd.vma_limited++;
		return -ENOSPC;
	}
	/*
	 * Drops of the anonymous page recorded before now are history; one
	 * announced from here on is seen by the window (merge.c, ZAPS), which
	 * then leaves the page dropped.
	 */
	ksmu_engine_zap_forget(addr, addr + KSMU_PAGE_SIZE);
	err = ksmu_tracker_unregister(&e->tracker, addr, KSMU_PAGE_SIZE);
	if (err) {
		e->dd.failed++;
		return err;
	}
	err = ksmu_merge_page(&e->merger, addr, ps->s.fd, idx, expected);
	if (err) {
		/*
		 * Not merged: track the page again, as a store mapping if it is
		 * one (a page the engine lost track of; MINOR fails on anonymous
		 * memory), else as the anonymous page it still is.
		 */
		rerr = -EINVAL;
		if (err == -EINVAL)
			rerr = ksmu_tracker_register_store(&e->tracker, addr, KSMU_PAGE_SIZE);
		if (rerr)
			rerr = ksmu_tracker_register(&e->tracker, addr, KSMU_PAGE_SIZE);
		if (rerr)
			pr_debug("re-arming %#lx: %s", (unsigned long)addr, strerror(-rerr));
		if (err == -EBUSY)
			e->dd.busy++;
		else if (err == -EAGAIN)
			e->dd.changed++;
		else
			e->dd.failed++;
		return err;
	}
	merged_window(e, 1);
	return 0;
}

int ksmu_dedup_join(struct ksmu_engine *e, struct ksmu_stable_node *sn, struct ksmu_rmap_item *it,
		    const void *expected)
{
	int err = merge_one(e, ksmu_item_addr(it), sn->store, sn->store_idx, expected);

	if (err == -EINVAL && adopt_moved(e, it) == 0)
		return -EALREADY;
	if (err)
		return err;
	joined(e, sn, it);
	return 0;
}

/* ------------------------------------------------------------ runs */

/*
 * RUNS
 *   A window costs about the same for one page as for 64 (register, move,
 *   compare, map, wake: ~16 system calls), and a run of adjacent pages
 *   mapping adjacent store pages is one VMA.  So joins found while a batch
 *   is processed are queued (ksmu_dedup_join_later()), per run of adjacent
 *   addresses onto adjacent pages of one store, and merged at the end of
 *   the batch (ksmu_dedup_join_flush(), called by scan.c before anything
 *   else can change the records): one window per run.  A window fails as a
 *   whole and names the page that failed (merge.c); the pages before it
 *   are merged in a window of their own, the page itself is given up (it
 *   changed, or is pinned) or tried alone (other errors), and the rest
 *   carries on as a run.
 *
 *   For runs to form, adjacent duplicates must get adjacent store pages: a
 *   new node's page goes right after the page its left neighbour joins (or
 *   right before its right neighbour's), where that index is free
 *   (store_near()).  Cloned images then lay their shared pages out in the
 *   store in the order they have in memory, and every later clone maps
 *   them in runs.
 *
 *   While a join waits, its page is in no tree and its node may have no
 *   member yet: settle_node() (scan.c) leaves a node that a queued join
 *   names alone, and the flush frees the nodes left without members.  A
 *   node with queued joins counts them against max_page_sharing.
 */

static size_t queued_for(const struct ksmu_engine *e, const struct ksmu_stable_node *sn)
{
	const struct ksmu_join_queue *q = &e->joins;
	size_t n = 0;

	for (unsigned int r = 0; r < q->nr; r++)
		for (uint32_t k = 0; k < q->runs[r].n; k++)
			n += q->runs[r].nodes[k] == sn;
	return n;
}

size_t ksmu_dedup_node_fill(const struct ksmu_engine *e, const struct ksmu_stable_node *sn)
{
	return sn->nr_members + (e->joins.pages ? queued_for(e, sn) : 0);
}

bool ksmu_dedup_join_names(const struct ksmu_engine *e, const struct ksmu_stable_node *sn)
{
	return e->joins.pages && queued_for(e, sn) > 0;
}

bool ksmu_dedup_join_queued(const struct ksmu_engine *e, uintptr_t addr)
{
	const struct ksmu_join_queue *q = &e->joins;

	for (unsigned int r = 0; r < q->nr; r++)
		if (addr >= q->runs[r].addr &&
		    addr - q->runs[r].addr < ((uintptr_t)q->runs[r].n << KSMU_PAGE_SHIFT))
			return true;
	return false;
}

/* The queued run that a page at @addr of @ps would extend, or NULL. */
static struct ksmu_join_run *run_ending_at(struct ksmu_engine *e, uintptr_t addr,
					   const struct ksmu_pstore *ps)
{
	struct ksmu_join_queue *q = &e->joins;

	for (unsigned int r = 0; r < q->nr; r++) {
		struct ksmu_join_run *run = &q->runs[r];

		if (run->ps == ps && run->n < KSMU_JOIN_MAX &&
		    run->addr + ((uintptr_t)run->n << KSMU_PAGE_SHIFT) == addr)
			return run;
	}
	return NULL;
}

int ksmu_dedup_join_later(struct ksmu_engine *e, struct ksmu_stable_node *sn,
			  struct ksmu_rmap_item *it, const void *expected)
{
	struct ksmu_join_queue *q = &e->joins;
	uintptr_t addr = ksmu_item_addr(it);
	struct ksmu_join_run *run = run_ending_at(e, addr, sn->store);
	size_t queued = q->pages ? queued_for(e, sn) : 0;

	if (sn->nr_members + queued >= e->knobs.max_page_sharing)
		return -ENOSPC;
	if (run && run->first_idx + run->n != sn->store_idx)
		run = NULL;
	if (!run) {
		if (q->nr == KSMU_JOIN_RUNS || sn->store_idx > UINT32_MAX - KSMU_JOIN_MAX)
			return ksmu_dedup_join(e, sn, it, expected);
		run = &q->runs[q->nr++];
		run->ps = sn->store;
		run->first_idx = sn->store_idx;
		run->addr = addr;
		run->n = 0;
	}
	memcpy(run->expected + ((size_t)run->n << KSMU_PAGE_SHIFT), expected, KSMU_PAGE_SIZE);
	run->items[run->n] = it;
	run->nodes[run->n] = sn;
	run->n++;
	q->pages++;
	return 0;
}

/*
 * One window for pages [lo, hi) of @run, which the tracker does not hold
 * (see join_run()).  Return: 0, or as ksmu_merge_run() (*@bad: the page,
 * counted from @lo, that failed), -ENOSPC over the VMA budget.
 */
static int merge_span(struct ksmu_engine *e, const struct ksmu_join_run *run, size_t lo, size_t hi,
		      size_t *bad)
{
	int err;

	*bad = 0;
	if (!vma_budget_ok(e))
		return -ENOSPC;
	err = ksmu_merge_run(&e->merger, run->addr + (lo << KSMU_PAGE_SHIFT), hi - lo, run->ps->s.fd,
			     run->first_idx + lo, run->expected + (lo << KSMU_PAGE_SHIFT), bad);
	if (err)
		return err;
	merged_window(e, hi - lo);
	return 0;
}

/*
 * Merge pages [lo, hi) of @run; @done[k] is set for each page merged (or
 * adopted as a store mapping).  Windows go on the failed page's sides.
 */
static void join_span(struct ksmu_engine *e, struct ksmu_join_run *run, size_t lo, size_t hi,
		      bool *done)
{
	while (lo < hi) {
		size_t bad, c;
		int err = merge_span(e, run, lo, hi, &bad);

		if (!err) {
			for (size_t k = lo; k < hi; k++) {
				joined(e, run->nodes[k], run->items[k]);
				done[k] = true;
			}
			return;
		}
		if (err == -ENOSPC) {
			e->dd.vma_limited += hi - lo;
			return;
		}
		c = lo + KSMU_MIN(bad, hi - lo - 1);
		if (c > lo)
			join_span(e, run, lo, c, done);
		if (err == -EBUSY) {
			e->dd.busy++;
		} else if (err == -EAGAIN) {
			e->dd.changed++;
		} else if (hi - lo > 1) {
			join_span(e, run, c, c + 1, done); /* alone, to learn why */
		} else {
			/* A store mapping already (merged memory moved)? */
			if (err == -EINVAL && adopt_moved(e, run->items[c]) == 0)
				done[c] = true;
			else
				e->dd.failed++;
		}
		lo = c + 1;
	}
}

/*
 * Merge one queued run: the tracker lets go of it once, the windows run,
 * and the pages that did not merge are tracked again (anonymous, or as a
 * store mapping where an unrecorded one is found), in stretches.
 */
static void join_run(struct ksmu_engine *e, struct ksmu_join_run *run)
{
	bool done[KSMU_JOIN_MAX] = {false};
	size_t len = (size_t)run->n << KSMU_PAGE_SHIFT;
	size_t k, j;

	/*
	 * Drops of the anonymous pages recorded before now are history; one
	 * announced from here on is seen by the window (merge.c, ZAPS).
	 */
	ksmu_engine_zap_forget(run->addr, run->addr + len);
	if (ksmu_tracker_unregister(&e->tracker, run->addr, len)) {
		e->dd.failed += run->n;
	} else {
		join_span(e, run, 0, run->n, done);
	}
	for (k = 0; k < run->n; k = j) {
		uintptr_t a;

		for (j = k; j < run->n && done[j] == done[k]; j++)
			;
		if (done[k])
			continue;
		for (size_t i = k; i < j; i++)
			ksmu_scan_merge_failed(run->items[i]);
		a = run->addr + (k << KSMU_PAGE_SHIFT);
		if (ksmu_tracker_register(&e->tracker, a, (j - k) << KSMU_PAGE_SHIFT) == 0)
			continue;
		for (size_t i = k; i < j; i++) {
			uintptr_t p = a + ((i - k) << KSMU_PAGE_SHIFT);

			if (ksmu_tracker_register(&e->tracker, p, KSMU_PAGE_SIZE) &&
			    ksmu_tracker_register_store(&e->tracker, p, KSMU_PAGE_SIZE))
				pr_debug("re-arming %#lx failed", (unsigned long)p);
		}
	}
}

void ksmu_dedup_join_flush(struct ksmu_engine *e)
{
	struct ksmu_join_queue *q = &e->joins;
	unsigned int r;

	if (!q->nr)
		return;
	for (r = 0; r < q->nr; r++) {
		struct ksmu_join_run *run = &q->runs[r];

		if (run->n == 1) {
			if (ksmu_dedup_join(e, run->nodes[0], run->items[0], run->expected))
				ksmu_scan_merge_failed(run->items[0]);
		} else {
			join_run(e, run);
		}
	}
	/* Nodes whose joins all failed hold nothing: free them (once each). */
	for (r = 0; r < q->nr; r++) {
		struct ksmu_join_run *run = &q->runs[r];

		for (uint32_t k = 0; k < run->n; k++) {
			struct ksmu_stable_node *sn = run->nodes[k];

			if (!sn || sn->nr_members)
				continue;
			for (unsigned int r2 = r; r2 < q->nr; r2++)
				for (uint32_t k2 = 0; k2 < q->runs[r2].n; k2++)
					if (q->runs[r2].nodes[k2] == sn)
						q->runs[r2].nodes[k2] = NULL;
			ksmu_dedup_node_gone(e, sn);
			ksmu_stable_free(&e->stable, sn);
		}
	}
	q->nr = 0;
	q->pages = 0;
}

/*
 * A free store index next to what a neighbour of @it maps or is queued to
 * map (RUNS), so that the two can share a mapping; allocated and written
 * with @page.  Return: true with *@idx, false if there is none.
 */
static bool store_near(struct ksmu_engine *e, struct ksmu_pstore *ps,
		       const struct ksmu_rmap_item *it, const void *page, size_t *idx)
{
	uintptr_t addr = ksmu_item_addr(it);
	const struct ksmu_chunk *c = ksmu_item_chunk(it);
	const struct ksmu_rmap_item *items = ksmu_chunk_items((struct ksmu_chunk *)c);
	size_t pos = (size_t)(it - items), want[3];
	unsigned int nw = 0;
	struct ksmu_join_run *run = run_ending_at(e, addr, ps);

	if (run)
		want[nw++] = (size_t)run->first_idx + run->n;
	if (pos > 0) {
		const struct ksmu_rmap_item *l = &items[pos - 1];

		if ((ksmu_item_flags(l) & (KSMU_ITEM_STABLE | KSMU_ITEM_MAPPED)) ==
			(KSMU_ITEM_STABLE | KSMU_ITEM_MAPPED) &&
		    l->s.stable->store == ps)
			want[nw++] = (size_t)l->s.stable->store_idx + 1;
	}
	if (pos + 1 < c->nr_items) {
		const struct ksmu_rmap_item *r = &items[pos + 1];

		if ((ksmu_item_flags(r) & (KSMU_ITEM_STABLE | KSMU_ITEM_MAPPED)) ==
			(KSMU_ITEM_STABLE | KSMU_ITEM_MAPPED) &&
		    r->s.stable->store == ps && r->s.stable->store_idx > 0)
			want[nw++] = (size_t)r->s.stable->store_idx - 1;
	}
	for (unsigned int w = 0; w < nw; w++) {
		if (want[w] >= STORE_MAX_PAGES || ksmu_store_alloc_at(&ps->s, want[w], 1, page))
			continue;
		*idx = want[w];
		e->dd.store_near++;
		return true;
	}
	return false;
}

/* ------------------------------------------------------------ ksmd-user stores */

struct ksmu_pstore *ksmu_dedup_remote_store(struct ksmu_engine *e, int fd, uint32_t id, uint64_t ino)
{
	struct ksmu_pstore *ps = calloc(1, sizeof(*ps));

	if (!ps)
		return NULL;
	ps->s.fd = fd; /* no allocator: the daemon owns the file */
	ps->remote = id;
	ps->ino = ino;
	ps->next = e->stores;
	e->stores = ps;
	return ps;
}

int ksmu_dedup_remote_grant(struct ksmu_pstore *ps, uint32_t idx)
{
	if (idx >= (1u << 28))
		return -ERANGE; /* no store of ours is that large: a bad index */
	if (refs_reserve(ps, idx))
		return -ENOMEM;
	ps->grants[idx]++;
	return 0;
}

void ksmu_dedup_remote_unused(struct ksmu_engine *e, struct ksmu_pstore *ps, uint32_t idx)
{
	if (!ps->refs[idx] && !ps->node_of[idx])
		remote_release(e, ps, idx);
}

/* A node without members that was made for a daemon page: undo it. */
static void remote_node_unused(struct ksmu_engine *e, struct ksmu_stable_node *sn)
{
	if (sn->nr_members)
		return;
	ksmu_dedup_node_gone(e, sn);
	ksmu_stable_free(&e->stable, sn);
}

/*
 * The local node of daemon page @idx of @ps (content read into cand_buf and
 * checked against hash @key), made if needed.  NULL if the page is not
 * what it should be (then released) or out of memory.
 */
static struct ksmu_stable_node *node_for(struct ksmu_engine *e, struct ksmu_pstore *ps,
					 uint32_t idx, uint64_t key)
{
	struct ksmu_stable_node *sn;

	if (remote_read(ps, idx, e->cand_buf) ||
	    ksmu_hash_to_key(ksmu_hash_page(e->cand_buf)) != key) {
		ksmu_dedup_remote_unused(e, ps, idx);
		return NULL;
	}
	sn = ps->node_of[idx];
	if (sn)
		return sn;
	sn = ksmu_stable_new(&e->stable, key);
	if (!sn) {
		ksmu_dedup_remote_unused(e, ps, idx);
		return NULL;
	}
	sn->store = ps;
	sn->store_idx = idx;
	ps->nr_nodes++;
	ps->node_of[idx] = sn;
	return sn;
}

/*
 * With a daemon: the store page for a local pair (@cand, content @page)
 * comes from it, so that other processes can share it.  The daemon's page
 * is read back and compared in full with @page: the node is used only if
 * they are equal (cand_buf then holds the content).
 */
static struct ksmu_stable_node *remote_node(struct ksmu_engine *e, struct ksmu_rmap_item *cand,
					    const void *page, uint64_t key)
{
	struct ksmu_stable_node *sn;
	struct ksmu_pstore *ps;
	uint32_t idx;

	if (!ksmu_agent_connected(&e->agent))
		return NULL;
	ps = ksmu_agent_store_page(e, ksmu_item_addr(cand), page, &idx);
	if (!ps)
		return NULL;
	sn = node_for(e, ps, idx, key);
	if (!sn)
		return NULL;
	/*
	 * The daemon has one page per content, so the local node of that page
	 * may already hold max_page_sharing members (hundreds of zero pages
	 * with use_zero_pages=0): the pair then gets a page of the local store,
	 * whose node the caller chains to the full ones, as without a daemon.
	 */
	if (memcmp(e->cand_buf, page, KSMU_PAGE_SIZE) ||
	    ksmu_dedup_node_fill(e, sn) + 2 > e->knobs.max_page_sharing) {
		remote_node_unused(e, sn);
		return NULL;
	}
	return sn;
}

int ksmu_dedup_remote_merge(struct ksmu_engine *e, struct ksmu_rmap_item *it, uint64_t key,
			    struct ksmu_pstore *ps, uint32_t idx)
{
	unsigned int f = ksmu_item_flags(it);
	struct ksmu_stable_node *sn;
	int err;

	/* only a page still waiting in the unstable tree, with the same content */
	if ((f & (KSMU_ITEM_UNSTABLE | KSMU_ITEM_HASHED)) != (KSMU_ITEM_UNSTABLE | KSMU_ITEM_HASHED) ||
	    (f & (KSMU_ITEM_MAPPED | KSMU_ITEM_STABLE | KSMU_ITEM_ZERO)) ||
	    ksmu_item_key(it) != key) {
		ksmu_dedup_remote_unused(e, ps, idx);
		return -ESTALE;
	}
	sn = node_for(e, ps, idx, key);
	if (!sn)
		return -EAGAIN;
	if (ksmu_dedup_node_fill(e, sn) >= e->knobs.max_page_sharing) {
		/* full here: @it stays unstable and pairs locally (remote_node()) */
		return -ENOSPC;
	}
	ksmu_unstable_erase(&e->unstable, it);
	err = ksmu_dedup_join(e, sn, it, e->cand_buf);
	if (err) {
		remote_node_unused(e, sn);
		if (!(ksmu_item_flags(it) & KSMU_ITEM_MAPPED)) {
			/* searched again on its next visit if it did not change */
			ksmu_item_set_flags(it, KSMU_ITEM_VOLATILE);
			ksmu_item_set_age(it, 0);
		}
	}
	return err;
}

int ksmu_dedup_remote_hint(struct ksmu_engine *e, uintptr_t addr, struct ksmu_pstore *ps,
			   uint32_t idx)
{
	struct ksmu_region *r = ksmu_region_lookup(&e->regions, addr);
	struct ksmu_rmap_item *it;
	size_t i;

	if (!r || !ksmu_dedup_active(e, r)) {
		ksmu_dedup_remote_unused(e, ps, idx);
		return -ENOENT;
	}
	i = (addr - r->start) >> KSMU_PAGE_SHIFT;
	if (!ksmu_region_chunk(r, i)) {
		ksmu_dedup_remote_unused(e, ps, idx);
		return -ENOENT;
	}
	it = ksmu_region_item(r, i);
	return ksmu_dedup_remote_merge(e, it, ksmu_item_key(it), ps, idx);
}

uint64_t ksmu_dedup_remote_pages(const struct ksmu_engine *e)
{
	const struct ksmu_pstore *ps;
	uint64_t n = 0;

	for (ps = e->stores; ps; ps = ps->next)
		if (ps->remote)
			n += ps->nr_refs;
	return n;
}

struct ksmu_stable_node *ksmu_dedup_promote(struct ksmu_engine *e, struct ksmu_rmap_item *cand,
					    struct ksmu_rmap_item *it, const void *page,
					    uint64_t key, int *cand_err, int *it_err)
{
	struct ksmu_pstore *ps;
	struct ksmu_stable_node *sn;
	size_t idx;
	int err;

	*cand_err = 0;
	*it_err = 0;
	sn = remote_node(e, cand, page, key);
	if (sn) {
		ksmu_unstable_erase(&e->unstable, cand);
		err = ksmu_dedup_join(e, sn, cand, e->cand_buf);
		if (err) {
			remote_node_unused(e, sn);
			*cand_err = err;
			return NULL;
		}
		*it_err = ksmu_dedup_join(e, sn, it, e->cand_buf);
		return sn;
	}
	ps = current_store(e);
	if (!ps) {
		*cand_err = -ENOMEM;
		return NULL;
	}
	err = 0;
	if (!store_near(e, ps, it, page, &idx) && !store_near(e, ps, cand, page, &idx))
		err = ksmu_store_alloc_run(&ps->s, 1, page, &idx);
	if (!err)
		err = refs_reserve(ps, idx);
	if (err) {
		*cand_err = err;
		return NULL;
	}
	sn = ksmu_stable_new(&e->stable, key);
	if (!sn) {
		ksmu_store_free_run(&ps->s, idx, 1);
		*cand_err = -ENOMEM;
		return NULL;
	}
	sn->store = ps;
	sn->store_idx = (uint32_t)idx;
	ps->nr_nodes++;

	/*
	 * Both joins wait for the end of the batch (RUNS); a node none of
	 * whose joins worked is freed then.  One that had to be done now and
	 * failed is reported as before.
	 */
	ksmu_unstable_erase(&e->unstable, cand);
	*cand_err = ksmu_dedup_join_later(e, sn, cand, page);
	*it_err = ksmu_dedup_join_later(e, sn, it, page);
	if (!sn->nr_members && !ksmu_dedup_join_names(e, sn)) {
		/* Nobody maps the new page: give it back (and the node). */
		ksmu_dedup_node_gone(e, sn);
		ksmu_stable_free(&e->stable, sn);
		return NULL;
	}
	return sn;
}

int ksmu_dedup_join_zero(struct ksmu_engine *e, struct ksmu_rmap_item *it)
{
	int err;

	if (!e->zero_store) {
		struct ksmu_pstore *ps = current_store(e);
		size_t idx;

		if (!ps)
			return -ENOMEM;
		err = ksmu_store_alloc_run(&ps->s, 1, zero_page, &idx);
		if (!err)
			err = refs_reserve(ps, idx);
		if (err)
			return err;
		e->zero_store = ps;
		e->zero_idx = (uint32_t)idx;
		ps->nr_nodes++; /* the zero page counts as a node of its store */
	}
	err = merge_one(e, ksmu_item_addr(it), e->zero_store, e->zero_idx, zero_page);
	if (err == -EINVAL && adopt_moved(e, it) == 0)
		return -EALREADY;
	if (err)
		return err;
	ref_get(e->zero_store, e->zero_idx);
	ksmu_item_set_flags(it, KSMU_ITEM_ZERO);
	mark_mapped(e, it);
	e->cnt.zero_items++;
	e->cnt.zero_mapped++;
	return 0;
}

/* ------------------------------------------------------------ unmerging */

/* Store page an item's address maps (it must be MAPPED). */
static void item_store(const struct ksmu_engine *e, const struct ksmu_rmap_item *it,
		       struct ksmu_pstore **ps, uint32_t *idx)
{
	unsigned int f = ksmu_item_flags(it);

	if (f & KSMU_ITEM_STABLE) {
		*ps = it->s.stable->store;
		*idx = it->s.stable->store_idx;
	} else if (f & KSMU_ITEM_ZERO) {
		*ps = e->zero_store;
		*idx = e->zero_idx;
	} else {
		*ps = (struct ksmu_pstore *)(void *)it->s.next;
		*idx = (uint32_t)(uintptr_t)it->s.prev;
	}
}

/* 1 if the VMA holding *(uintptr_t *)arg is a store mapping, 2 if another VMA. */
static int store_at_cb(unsigned long lo, unsigned long hi, bool store, void *arg)
{
	uintptr_t addr = *(uintptr_t *)arg;

	if (addr < lo || addr >= hi)
		return 0;
	return store ? 1 : 2;
}

/*
 * Is @addr inside a store mapping now?  (/proc/self/maps: slow, error paths
 * only.)  If the maps cannot be read, say yes: the caller then keeps the
 * page merged.
 */
static bool in_store_vma(uintptr_t addr)
{
	int r = maps_each(store_at_cb, &addr);

	return r == 1 || r < 0;
}

/* Undone unmerge windows (a page dropped meanwhile) are retried this often. */
#define UNMERGE_TRIES 16

/*
 * One unmerge window over [addr, addr + n pages), which the tracker holds
 * as a store mapping.  First every page is faulted in while the tracker's
 * reader still answers (a dropped page becomes zeros), so that the window
 * may take any page it finds empty for one dropped since (merge.c, ZAPS).
 */
static int unmerge_window(struct ksmu_engine *e, uintptr_t addr, size_t n)
{
	size_t len = n << KSMU_PAGE_SHIFT;
	unsigned int flags;
	int err, tries = 0;

	/* cow_policy=1: the copy worker keeps out of store mappings meanwhile */
	if (e->tracker.cow)
		ksmu_cow_exclude(true);
	do {
		flags = madvise((void *)addr, len, MADV_POPULATE_READ) == 0
			    ? KSMU_UNMERGE_ABSENT_IS_ZERO
			    : 0;
		/*
		 * A drop seen since the pre-fault makes the window go back
		 * (-EAGAIN) until the madvise() has zapped and the pre-fault
		 * turned the page into zeros; the last tries take the zap set
		 * as it is (a stale entry would fail every try).
		 */
		if (flags && tries >= UNMERGE_TRIES - 4)
			flags |= KSMU_UNMERGE_IGNORE_ZAPS;
		/* With the flag the window unregisters it from the tracker itself,
		 * right before it registers the range (hook_disarm()). */
		if (!flags)
			ksmu_tracker_unregister_store(&e->tracker, addr, len);
		err = ksmu_unmerge_run_flags(&e->merger, addr, n, flags);
		if (err == -EAGAIN || err == -EBUSY) {
			e->dd.unmerge_retries++;
			sched_yield(); /* let the madvise() finish */
		}
	} while ((err == -EAGAIN || err == -EBUSY) && ++tries < UNMERGE_TRIES);
	if (e->tracker.cow)
		ksmu_cow_exclude(false);
	return err;
}

/* Unmerge @n pages from item index @first of @r (one store VMA, we hope). */
static int unmerge_run(struct ksmu_engine *e, struct ksmu_region *r, size_t first, size_t n,
		       bool rearm)
{
	uintptr_t addr = r->start + (first << KSMU_PAGE_SHIFT);
	size_t len = n << KSMU_PAGE_SHIFT, i;
	int err;

	err = unmerge_window(e, addr, n);
	if (err == -EINVAL && n > 1) {
		/* Not one VMA after all (or not all store): page by page. */
		int ret = 0;

		for (i = 0; i < n; i++) {
			err = unmerge_run(e, r, first + i, 1, rearm);
			if (err && !ret)
				ret = err;
		}
		return ret;
	}
	if (err == -EINVAL && !in_store_vma(addr)) {
		/*
		 * The engine's record is stale: the page is no store mapping
		 * any more (replaced by the application before its event was
		 * applied).  Nothing to unmerge; the reference leaks (safe).
		 */
		struct ksmu_rmap_item *it = ksmu_region_item(r, first);

		ksmu_scan_item_detach(e, it);
		ksmu_dedup_drop_moved(e, it);
		ksmu_scan_item_forget(e, it);
		return 0;
	}
	if (err) {
		e->dd.unmerge_failed++;
		if (ksmu_tracker_register_store(&e->tracker, addr, len))
			pr_warn("unmerge of %#lx+%zu failed and it is not tracked",
				(unsigned long)addr, len);
		return err;
	}
	for (i = 0; i < n; i++) {
		struct ksmu_rmap_item *it = ksmu_region_item(r, first + i);

		ksmu_scan_item_detach(e, it);
		ksmu_dedup_unmapped(e, it);
		ksmu_scan_item_forget(e, it); /* re-hashed on the next visit */
	}
	e->dd.unmerged += n;
	if (rearm && ksmu_tracker_register(&e->tracker, addr, len))
		pr_debug("re-arming %#lx+%zu failed", (unsigned long)addr, len);
	return 0;
}

struct adopt_walk {
	struct ksmu_engine *e;
	struct ksmu_region *r; /* region of the last page looked at, or NULL */
	uintptr_t a, b;
};

/* maps walk: record the store mappings of [a, b) that have no MAPPED item. */
static int adopt_cb(unsigned long lo, unsigned long hi, bool store, void *arg)
{
	struct adopt_walk *w = arg;
	uintptr_t x;

	if (!store)
		return 0;
	for (x = KSMU_MAX(lo, w->a); x < KSMU_MIN(hi, w->b); x += KSMU_PAGE_SIZE) {
		struct ksmu_rmap_item *it;

		if (!w->r || x < w->r->start || x >= w->r->end)
			w->r = ksmu_region_lookup(&w->e->regions, x);
		if (!w->r || x < w->r->start)
			continue; /* not registered: none of ours to record */
		it = ksmu_region_item(w->r, (x - w->r->start) >> KSMU_PAGE_SHIFT);
		if (ksmu_item_flags(it) & KSMU_ITEM_MAPPED)
			continue;
		ksmu_scan_item_detach(w->e, it);
		ksmu_scan_item_forget(w->e, it);
		if (adopt_moved(w->e, it))
			pr_warn("store mapping at %#lx not recognised: left merged", (unsigned long)x);
	}
	return 0;
}

void ksmu_dedup_adopt_range(struct ksmu_engine *e, uintptr_t a, uintptr_t b)
{
	struct adopt_walk w = {e, NULL, a, b};

	if (!__atomic_load_n(&e->ever_merged, __ATOMIC_ACQUIRE) || merger_ready(e))
		return;
	maps_each(adopt_cb, &w);
}

int ksmu_dedup_unmerge_range(struct ksmu_engine *e, struct ksmu_region *r, uintptr_t a, uintptr_t b,
			     bool rearm)
{
	size_t idx = (KSMU_MAX(a, r->start) - r->start) >> KSMU_PAGE_SHIFT;
	size_t end = (KSMU_MIN(b, r->end) - r->start) >> KSMU_PAGE_SHIFT;
	int ret = 0;

	if (!__atomic_load_n(&e->ever_merged, __ATOMIC_ACQUIRE))
		return 0;
	if (e->merger_state <= 0 && merger_ready(e))
		return e->merger_state;
	while (idx < end) {
		struct ksmu_chunk *c = ksmu_region_chunk(r, idx);
		size_t chunk_end = KSMU_MIN(end, ksmu_region_chunk_end(r, idx));

		if (!c->nr_hashed && !c->nr_mapped) {
			idx = chunk_end;
			continue;
		}
		while (idx < chunk_end) {
			struct ksmu_rmap_item *it = ksmu_region_item(r, idx);
			struct ksmu_pstore *ps, *ps2;
			uint32_t sidx, sidx2;
			size_t n = 1;
			int err;

			if (!(ksmu_item_flags(it) & KSMU_ITEM_MAPPED)) {
				idx++;
				continue;
			}
			item_store(e, it, &ps, &sidx);
			while (idx + n < end && n < KSMU_MERGE_MAX_RUN) {
				struct ksmu_rmap_item *nx = ksmu_region_item(r, idx + n);

				if (!(ksmu_item_flags(nx) & KSMU_ITEM_MAPPED))
					break;
				item_store(e, nx, &ps2, &sidx2);
				if (ps2 != ps || sidx2 != sidx + n)
					break;
				n++;
			}
			err = unmerge_run(e, r, idx, n, rearm);
			if (err && !ret)
				ret = err;
			idx += n;
		}
	}
	return ret;
}

struct rearm_stores {
	struct ksmu_engine *e;
	uintptr_t start, end;
	size_t covered;
};

static int rearm_store_cb(unsigned long lo, unsigned long hi, bool store, void *arg)
{
	struct rearm_stores *rs = arg;

	lo = KSMU_MAX(lo, rs->start);
	hi = KSMU_MIN(hi, rs->end);
	if (store && lo < hi && ksmu_tracker_register_store(&rs->e->tracker, lo, hi - lo) == 0)
		rs->covered += hi - lo;
	return 0;
}

size_t ksmu_dedup_rearm_stores(struct ksmu_engine *e, uintptr_t start, uintptr_t end)
{
	struct rearm_stores rs = {e, start, end, 0};

	if (!e->cnt.mapped_items)
		return 0;
	maps_each(rearm_store_cb, &rs);
	return rs.covered;
}

/* ------------------------------------------------------------ cow_policy=1 */

void ksmu_dedup_cow_done(struct ksmu_engine *e, struct ksmu_region *r, uintptr_t addr, bool user)
{
	struct ksmu_rmap_item *it = ksmu_region_item(r, (addr - r->start) >> KSMU_PAGE_SHIFT);
	unsigned int f = ksmu_item_flags(it);

	if (!(f & KSMU_ITEM_MAPPED))
		return; /* unmerged or forgotten since: nothing left to change */
	if (!user) {
		/* the kernel's copy, inside the store mapping: as a cow break (scan.c) */
		if (f & (KSMU_ITEM_STABLE | KSMU_ITEM_ZERO)) {
			ksmu_scan_item_detach(e, it);
			e->dd.cow_breaks++;
		}
		return;
	}
	/* an anonymous page now: the store page is no longer mapped here */
	ksmu_scan_item_detach(e, it);
	ksmu_dedup_unmapped(e, it);
	ksmu_scan_item_forget(e, it); /* re-hashed, and merged again, on a next visit */
	e->dd.cow_user++;
}

struct unreg_walk {
	struct ksmu_engine *e;
	uintptr_t start, end;
	int err;
};

static int unreg_cb(unsigned long lo, unsigned long hi, bool store, void *arg)
{
	struct unreg_walk *w = arg;
	int err;

	lo = KSMU_MAX(lo, w->start);
	hi = KSMU_MIN(hi, w->end);
	if (lo >= hi)
		return 0;
	err = store ? ksmu_tracker_unregister_store(&w->e->tracker, lo, hi - lo)
		    : ksmu_tracker_unregister(&w->e->tracker, lo, hi - lo);
	if (err && !w->err)
		w->err = err;
	return 0;
}

int ksmu_dedup_unregister_range(struct ksmu_engine *e, uintptr_t start, uintptr_t end)
{
	struct unreg_walk w = {e, start, end, 0};
	int err = ksmu_tracker_unregister(&e->tracker, start, end - start);

	/*
	 * cow_policy=1: store mappings are on another descriptor, and the
	 * kernel refuses to unregister a range registered with two: one VMA
	 * at a time then.
	 */
	if (!err || !e->tracker.cow)
		return err;
	maps_each(unreg_cb, &w);
	return w.err;
}

/* ------------------------------------------------------------ fork */

void ksmu_dedup_fork(struct ksmu_engine *e, bool child)
{
	struct ksmu_pstore *ps;

	/*
	 * Daemon stores in the parent stay live: the FORK message makes the
	 * daemon hold the child's grants (agent.c; releases wait for it).
	 */
	for (ps = e->stores; ps; ps = ps->next)
		if (child || !ps->remote)
			ps->retired = true;
	e->cur_store = NULL;
	if (child) {
		/* The merger's uffd and scratch are the parent's. */
		__atomic_store_n(&e->merger_hooked, 0, __ATOMIC_RELEASE);
		if (e->merger_state > 0)
			ksmu_merger_destroy(&e->merger);
		e->merger_state = 0;
	}
}

uint64_t ksmu_dedup_orphan_pages(const struct ksmu_engine *e)
{
	const struct ksmu_pstore *ps;
	uint64_t used = 0, named = 0;

	for (ps = e->stores; ps; ps = ps->next) {
		used += ps->s.nr_used;
		named += ps->nr_nodes;
	}
	return used > named ? used - named : 0;
}

uint64_t ksmu_dedup_metadata_bytes(const struct ksmu_engine *e)
{
	const struct ksmu_pstore *ps;
	uint64_t b = 0;

	for (ps = e->stores; ps; ps = ps->next)
		b += sizeof(*ps) + ps->refs_len * sizeof(uint32_t) +
		     ksmu_store_metadata_bytes(&ps->s);
	return b;
}
