/* SPDX-License-Identifier: MIT */
/*
 * ksmu.h - public API of libksmu, a user-space page deduplication engine.
 *
 * ksmu re-implements the kernel's KSM (Kernel Samepage Merging) in user
 * space.  A process registers ranges of its private anonymous memory (the
 * equivalent of madvise(MADV_MERGEABLE)); a scanner thread of the library
 * walks them in batches, finds pages with identical content and (from
 * release 0.2 on) merges them.  There is one engine per process, started on
 * first use, just as there is one KSM per machine.
 *
 * Conventions
 *   - Every function returns 0 (or a count) on success and a negative errno
 *     value on failure.  errno is never the only output channel.
 *   - Every function is thread-safe unless its Context says otherwise.
 *   - Counters and knobs carry the names and meanings of /sys/kernel/mm/ksm
 *     and /proc/PID/ksm_stat, so the same workload shows comparable numbers
 *     under kernel KSM and ksmu.  Fields that kernel KSM lacks are marked
 *     "ksmu:" in their documentation.
 *
 * Since 0.2 the engine merges (pages_shared, pages_sharing, ksm_zero_pages,
 * general_profit are real).  The est_* fields still say what detection found;
 * the knob dry_run=1 keeps 0.1's detect-and-estimate mode, where no page is
 * changed.  Merging needs userfaultfd with UFFDIO_MOVE and MINOR_SHMEM opened
 * without UFFD_USER_MODE_ONLY (root, or vm.unprivileged_userfaultfd=1);
 * without them the engine detects only (stats field merging is 0).
 */
#ifndef KSMU_H
#define KSMU_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KSMU_VERSION_MAJOR 0
#define KSMU_VERSION_MINOR 2
#define KSMU_VERSION_PATCH 0
#define KSMU_VERSION_NUM                                                                           \
	(KSMU_VERSION_MAJOR * 10000 + KSMU_VERSION_MINOR * 100 + KSMU_VERSION_PATCH)

#if defined(__GNUC__)
#define KSMU_API __attribute__((visibility("default")))
#else
#define KSMU_API
#endif

/** Value of the run knob (as /sys/kernel/mm/ksm/run). */
enum ksmu_run_mode {
	KSMU_RUN_STOP = 0,    /**< scanner stopped, merged pages stay merged */
	KSMU_RUN_MERGE = 1,   /**< scanner runs */
	KSMU_RUN_UNMERGE = 2, /**< unmerge everything (synchronously), then stop */
};

/** ksmu: how the scanner learns which pages changed since its last visit. */
enum ksmu_dirty_tracker {
	KSMU_TRACK_NONE = 0,	 /**< not decided yet (no region registered) */
	KSMU_TRACK_CHECKSUM = 1, /**< re-hash every present page each pass (kernel KSM's way) */
	KSMU_TRACK_WP_ASYNC = 2, /**< PAGEMAP_SCAN + userfaultfd async write-protect: exact */
};

/**
 * struct ksmu_stats - engine-wide counters and knobs.
 *
 * The first group mirrors /sys/kernel/mm/ksm/ field by field.  New fields
 * are only ever appended; ksmu_stats_get() fills as much as the caller's
 * struct holds, so a program built against an older header keeps working.
 */
struct ksmu_stats {
	/* counters, as in /sys/kernel/mm/ksm */
	uint64_t pages_shared;	 /**< stable nodes in use: distinct merged pages */
	uint64_t pages_sharing;	 /**< additional pages that share a merged page (the saving) */
	uint64_t pages_unshared; /**< pages in the unstable tree: unique so far, still checked */
	uint64_t pages_volatile; /**< tracked pages that changed too fast to be put in a tree */
	uint64_t pages_scanned;	 /**< present pages examined, cumulative */
	uint64_t pages_skipped;	 /**< pages skipped by smart_scan, cumulative */
	uint64_t full_scans;	 /**< complete passes over all registered memory */
	uint64_t
	    stable_node_chains; /**< contents with more than one stable node (max_page_sharing) */
	uint64_t stable_node_dups; /**< stable nodes inside such chains */
	uint64_t ksm_zero_pages;   /**< pages merged with the zero page (use_zero_pages) */
	int64_t general_profit;	   /**< bytes saved minus all metadata, may be negative */
	/* knobs, as in /sys/kernel/mm/ksm */
	uint64_t run;
	uint64_t pages_to_scan;
	uint64_t sleep_millisecs;
	uint64_t max_page_sharing;
	uint64_t merge_across_nodes;
	uint64_t use_zero_pages;
	uint64_t stable_node_chains_prune_millisecs;
	uint64_t smart_scan;
	/* ksmu: engine state */
	uint64_t rmap_items;	/**< ksmu: tracking records of pages seen present */
	uint64_t pages_tracked; /**< ksmu: pages inside registered regions, present or not */
	uint64_t regions;	/**< ksmu: registered regions */
	uint64_t pages_hashed;	/**< ksmu: pages whose content was read and hashed, cumulative */
	uint64_t pages_clean; /**< ksmu: pages proved unchanged by the dirty tracker, cumulative */
	uint64_t pages_compared;  /**< ksmu: full-content comparisons, cumulative */
	uint64_t hash_collisions; /**< ksmu: equal hashes whose contents differed, cumulative */
	uint64_t metadata_bytes;  /**< ksmu: memory held by the engine's metadata */
	uint64_t rmap_item_size;  /**< ksmu: bytes of one tracking record */
	uint64_t dirty_tracker;	  /**< ksmu: enum ksmu_dirty_tracker in use */
	uint64_t scan_cpu_ns;	  /**< ksmu: CPU time spent scanning, cumulative */
	/* ksmu: what merging would achieve now (the dry-run estimate) */
	uint64_t est_pages_shared;  /**< ksmu: distinct contents that have duplicates */
	uint64_t est_pages_sharing; /**< ksmu: pages that merging would free */
	uint64_t est_zero_pages;    /**< ksmu: zero pages that use_zero_pages would free */
	int64_t est_profit;	    /**< ksmu: bytes merging would save, minus metadata */
	/* ksmu: life cycle */
	uint64_t uffd_events; /**< ksmu: munmap/mremap/MADV_DONTNEED events applied */
	/* ksmu: merging (0.2) */
	uint64_t dry_run;	    /**< ksmu knob: 1 = detect and estimate only, never merge */
	uint64_t merging;	    /**< ksmu: 1 if pages are merged (kernel and knobs allow it) */
	uint64_t merges;	    /**< ksmu: pages merged, cumulative */
	uint64_t merge_busy;	    /**< ksmu: merges refused, page pinned or shared with a child */
	uint64_t merge_changed;	    /**< ksmu: merges refused, page changed meanwhile */
	uint64_t merge_failed;	    /**< ksmu: merges that failed otherwise */
	uint64_t merge_vma_limited; /**< ksmu: merges skipped to stay under the VMA budget */
	uint64_t cow_breaks;	    /**< ksmu: merged pages copied on write by the kernel */
	uint64_t pages_unmerged;    /**< ksmu: pages given a private copy back (unmerge) */
	uint64_t unmerge_failed;    /**< ksmu: unmerge calls that failed */
	uint64_t minor_zero;	    /**< ksmu: dropped merged pages faulted back as zeros */
	uint64_t minor_store;	    /**< ksmu: merged pages re-faulted from the store */
	uint64_t store_pages;	    /**< ksmu: store pages holding memory now */
	uint64_t store_orphans;	    /**< ksmu: of those, kept only by copies (no saving) */
	uint64_t store_vmas;	    /**< ksmu: store mappings at the last pass end */
	uint64_t vmas_added; /**< ksmu: VMAs merging added (at the last pass end, plus 2 per merge since), in general_profit */
	uint64_t vma_limit;  /**< ksmu: VMA count merging stays under (3/4 max_map_count) */
	/* ksmu: MADV_DONTNEED racing merge windows (0.2) */
	uint64_t merge_zapped;	 /**< ksmu: merges given up: the page was being dropped */
	uint64_t merge_unsettled; /**< ksmu: merge windows given up: tracker events unread */
	uint64_t unmerge_retries; /**< ksmu: unmerge windows undone (a page dropped) and retried */
	uint64_t window_ns;	  /**< ksmu: time merge windows were open, cumulative */
	uint64_t window_ns_max;	  /**< ksmu: longest merge window */
	uint64_t pages_adopted; /**< ksmu: merged pages found moved (mremap) and recorded again */
	uint64_t zap_ranges;	/**< ksmu: dropped ranges remembered (pruned to store mappings at pass end) */
	uint64_t reader_cpu_ns; /**< ksmu: CPU time of the event reader thread (faults, events), cumulative; the engine's CPU is this plus scan_cpu_ns */
	/* ksmu: copy-on-write policy (0.3) */
	uint64_t cow_policy; /**< ksmu knob: 0 the kernel copies (never re-merged), 1 ksmu copies into anonymous memory (re-mergeable); fixed at the first merge */
	uint64_t cow_user;   /**< ksmu: writes to merged pages given an anonymous copy (cow_policy=1), cumulative */
	uint64_t cow_user_ns;	  /**< ksmu: time writers waited for those copies, cumulative */
	uint64_t cow_user_ns_max; /**< ksmu: the longest of those waits */
	uint64_t cow_kernel; /**< ksmu: cow_policy=1 writes let through to the kernel's copy (no VMA or memory for an anonymous one) */
	/* ksmu: VMA budget knob (0.3) */
	uint64_t max_vmas; /**< ksmu knob: VMAs merging may take the process to; 0 (default): 3/4 of vm.max_map_count, which also caps any other value (see vma_limit) */
	/* ksmu: merging in runs (0.3) */
	uint64_t merge_windows; /**< ksmu: merge windows opened (a run of adjacent pages merges in one), cumulative */
	uint64_t store_near;	/**< ksmu: new store pages placed next to the one a neighbouring page maps, so that both share a VMA */
};

/**
 * struct ksmu_proc_stats - this process's counters, as /proc/self/ksm_stat.
 */
struct ksmu_proc_stats {
	uint64_t ksm_rmap_items;    /**< tracking records of this process */
	uint64_t ksm_zero_pages;    /**< pages merged with the zero page */
	uint64_t ksm_merging_pages; /**< pages of this process that are merged */
	int64_t ksm_process_profit; /**< bytes saved minus metadata, for this process */
	uint64_t ksm_merge_any;	    /**< 1 if merge-any (prctl PR_SET_MEMORY_MERGE) is on */
	uint64_t ksm_mergeable;	    /**< 1 if any memory of the process is registered */
};

/**
 * struct ksmu_features - what the running kernel offers (ksmu_probe()).
 * Each field is 1 when available, 0 when not, unless stated otherwise.
 */
struct ksmu_features {
	uint32_t size;	       /**< sizeof(struct ksmu_features) as filled */
	uint32_t kernel_major; /**< running kernel version, from uname */
	uint32_t kernel_minor;
	int32_t userfaultfd;	     /**< userfaultfd(2) or /dev/userfaultfd usable */
	int32_t uffd_wp;	     /**< write-protect mode on anonymous memory */
	int32_t uffd_wp_async;	     /**< UFFD_FEATURE_WP_ASYNC (6.7) */
	int32_t uffd_wp_unpopulated; /**< UFFD_FEATURE_WP_UNPOPULATED (6.4) */
	int32_t uffd_move;	     /**< UFFDIO_MOVE (6.8) */
	int32_t uffd_events;	     /**< fork/remap/remove/unmap events */
	uint64_t uffd_features;	     /**< raw UFFDIO_API feature mask offered */
	int32_t pagemap_scan;	     /**< PAGEMAP_SCAN ioctl on /proc/self/pagemap (6.7) */
	int32_t pagemap_pfn;	     /**< pagemap shows PFNs (needs CAP_SYS_ADMIN) */
	int32_t soft_dirty;	     /**< soft-dirty bits really work */
	int32_t process_madvise;     /**< process_madvise(2) on our own pidfd */
	int32_t kernel_ksm;	     /**< /sys/kernel/mm/ksm exists (the reference) */
	int32_t numa_nodes;	     /**< configured NUMA nodes (>= 1) */
	int64_t max_map_count;	     /**< vm.max_map_count, -1 if unreadable */
	int32_t thp_mode;	     /**< 0 never, 1 madvise, 2 always, -1 unknown */
	int32_t page_size;	     /**< base page size in bytes */
};

/**
 * ksmu_register() - make a range eligible for merging (madvise(MADV_MERGEABLE)).
 * @addr: page-aligned start
 * @len:  length in bytes, rounded up to a page; 0 is a successful no-op
 *
 * Private anonymous memory in the range is tracked; other mappings in it
 * (file-backed, shared, special) are silently left out, as the kernel does.
 * Registering an already registered page is a no-op.  The first call starts
 * the engine and its scanner thread.
 *
 * Return: 0; -EINVAL if @addr is not page-aligned or the range wraps;
 * -ENOMEM if part of the range is not mapped (the mapped parts are still
 * registered, as madvise does) or memory for tracking ran out; -EAGAIN if
 * the engine could not start a thread.
 * Context: thread-safe; may block briefly on the engine lock.
 */
KSMU_API int ksmu_register(void *addr, size_t len);

/**
 * ksmu_unregister() - stop tracking a range (madvise(MADV_UNMERGEABLE)).
 * @addr: page-aligned start
 * @len:  length in bytes, rounded up to a page
 *
 * Unregistering memory that was never registered is a no-op.
 *
 * Return: 0; -EINVAL for an unaligned or wrapping range; -ENOMEM if part of
 * the range is not mapped (the rest is still unregistered).
 * Context: thread-safe; may block on the engine lock.
 */
KSMU_API int ksmu_unregister(void *addr, size_t len);

/**
 * ksmu_stats_get() - read the engine counters and knobs.
 * @out:  filled with up to @size bytes of struct ksmu_stats
 * @size: sizeof(struct ksmu_stats) as the caller knows it
 *
 * Return: 0; -EINVAL if @out is NULL or @size is 0.
 * Context: thread-safe, takes the engine lock.
 */
KSMU_API int ksmu_stats_get(struct ksmu_stats *out, size_t size);

/**
 * ksmu_stats() - ksmu_stats_get(out, sizeof(*out)).
 * Return: 0; -EINVAL if @out is NULL.
 */
KSMU_API int ksmu_stats(struct ksmu_stats *out);

/**
 * ksmu_proc_stats() - this process's counters, as /proc/self/ksm_stat.
 * Return: 0; -EINVAL if @out is NULL.
 */
KSMU_API int ksmu_proc_stats(struct ksmu_proc_stats *out);

/**
 * ksmu_set_tunable() - set a knob by its /sys/kernel/mm/ksm name.
 * @name:  "run", "pages_to_scan", "sleep_millisecs", "max_page_sharing",
 *         "merge_across_nodes", "use_zero_pages",
 *         "stable_node_chains_prune_millisecs", "smart_scan", or the ksmu
 *         knob "dirty_tracker" (enum ksmu_dirty_tracker: 1 forces the
 *         checksum fallback, 2 asks for exact tracking)
 * @value: new value, validated as the kernel validates it
 *
 * Return: 0; -EINVAL for a NULL or unknown name, a read-only counter name, or
 * a value out of range (run > 2, max_page_sharing < 2, merge_across_nodes,
 * use_zero_pages and smart_scan > 1, values above UINT_MAX);
 * -EBUSY for max_page_sharing or merge_across_nodes while pages are shared
 * (as the kernel); -EOPNOTSUPP for dirty_tracker 2 on a kernel without
 * PAGEMAP_SCAN and async write-protect.
 * Context: thread-safe.
 */
KSMU_API int ksmu_set_tunable(const char *name, unsigned long value);

/**
 * ksmu_check_tunable() - would ksmu_set_tunable(@name, @value) accept the
 * value?  Checks the name and the value rules only (not -EBUSY, which
 * depends on the engine's state), starts nothing: for tools that validate
 * a configuration before they pass it on (ksmu-run, environment).
 * Return: 0, or the -EINVAL ksmu_set_tunable() would return.
 */
KSMU_API int ksmu_check_tunable(const char *name, unsigned long value);

/**
 * ksmu_get_tunable() - read a knob or counter by its sysfs name.
 * Return: 0 and *@value set; -EINVAL for a NULL argument or unknown name.
 */
KSMU_API int ksmu_get_tunable(const char *name, unsigned long *value);

/**
 * ksmu_set_run() - ksmu_set_tunable("run", mode).
 * @mode: enum ksmu_run_mode
 * Return: 0; -EINVAL if @mode is not 0, 1 or 2.
 */
KSMU_API int ksmu_set_run(int mode);

/**
 * ksmu_scan_full() - wait for one complete pass over all registered memory.
 *
 * Runs the scanner in the caller's thread (whatever the run knob says and
 * regardless of pages_to_scan and sleep_millisecs) until a pass that started
 * after this call has finished, i.e. until full_scans has grown by 1 if the
 * scan cursor was at the start of a pass, by 2 otherwise.  With nothing
 * registered it returns at once.
 *
 * Return: the new full_scans value (>= 0), or -errno from the scanner.
 * Context: thread-safe; blocks for the length of a pass.
 */
KSMU_API int ksmu_scan_full(void);

/**
 * ksmu_probe_sized() - report what the running kernel offers.
 * @out:  filled with up to @size bytes of struct ksmu_features (fields are
 *        only ever appended); out->size tells how many bytes were filled
 * @size: sizeof(struct ksmu_features) as the caller knows it
 *
 * The kernel is probed once per process, then the result is cached.
 * Return: 0; -EINVAL if @out is NULL or @size is 0.
 * Context: thread-safe.
 */
KSMU_API int ksmu_probe_sized(struct ksmu_features *out, size_t size);

/**
 * ksmu_probe() - ksmu_probe_sized(out, sizeof(*out)).
 * Return: 0; -EINVAL if @out is NULL.
 */
KSMU_API int ksmu_probe(struct ksmu_features *out);

/**
 * ksmu_probe_describe() - render kernel features for people or programs.
 * @f:    features as filled by ksmu_probe()
 * @buf:  output, always NUL-terminated when @len > 0
 * @len:  size of @buf in bytes, including the terminating NUL
 * @json: 0 for one line per feature in words ("name: yes (what ksmu does
 *        with it)"), non-zero for a JSON object whose keys are the field
 *        names of struct ksmu_features (size left out), 0/1 fields as
 *        booleans
 *
 * Return: bytes written, not counting the NUL; -EINVAL if @f or @buf is
 * NULL; -ENOSPC if @len is too small (then @buf holds an empty string).
 * Context: thread-safe, does not block.
 */
KSMU_API int ksmu_probe_describe(const struct ksmu_features *f, char *buf, size_t len, int json);

/** Log levels of ksmu_set_log(). */
enum ksmu_log_level { KSMU_LOG_ERR = 0, KSMU_LOG_WARN, KSMU_LOG_INFO, KSMU_LOG_DEBUG };

/** Log sink: receives one message without trailing newline. */
typedef void (*ksmu_log_fn)(int level, const char *msg, void *arg);

/**
 * ksmu_set_log() - route the library's messages to @fn (NULL: silence).
 * @fn:        sink, called from any engine thread, must be thread-safe
 * @arg:       passed to @fn
 * @max_level: messages above this level are dropped
 *
 * The library never prints by itself, except when the environment variable
 * KSMU_LOG is set to a level (err, warn, info, debug): then messages go to
 * standard error until ksmu_set_log() is called.
 * Context: thread-safe.
 */
KSMU_API void ksmu_set_log(ksmu_log_fn fn, void *arg, int max_level);

/** ksmu_version() - KSMU_VERSION_NUM of the library actually loaded. */
KSMU_API int ksmu_version(void);

#ifdef __cplusplus
}
#endif
#endif /* KSMU_H */
