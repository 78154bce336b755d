/* SPDX-License-Identifier: MIT */
/*
 * bench-engines.h - one interface over both engines for the side-by-side
 * benchmarks bench-steady, bench-interfere, bench-churn and bench-scale
 * (static library bench_engines, on top of bench_common).
 *
 * An engine is ksmu (libksmu in this process) or kernel KSM (ksmd, through
 * /sys/kernel/mm/ksm).  ksmu always runs in a forked child that has never
 * started the engine (eng_run_child), so that runs do not share state and a
 * crash is reported while the parent still restores KSM; KSM runs in the
 * parent after bench_ksm_setup().  Figures: the engine's CPU time (ksmu:
 * scan_cpu_ns + reader_cpu_ns; KSM: ksmd's schedstat), the saving
 * (pages_sharing + ksm_zero_pages) and full_scans.
 */
#ifndef KSMU_BENCH_ENGINES_H
#define KSMU_BENCH_ENGINES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum eng_kind { ENG_NONE = 0, ENG_KSMU = 1, ENG_KSM = 2 };

const char *eng_name(enum eng_kind e);

/* Make @mem (@len bytes) mergeable: ksmu_register or MADV_MERGEABLE. Exits on failure. */
void eng_register(enum eng_kind e, void *mem, size_t len);

/* The same CPU budget for either engine; then the engine runs (run=1). */
void eng_start(enum eng_kind e, uint64_t pages_to_scan, uint64_t sleep_ms);

/* Stop scanning (run=0; merged pages stay merged). */
void eng_stop(enum eng_kind e);

/* The engine's CPU time, ns, cumulative. */
uint64_t eng_cpu_ns(enum eng_kind e);

/* Pages saved now: pages_sharing + ksm_zero_pages. */
uint64_t eng_saving(enum eng_kind e);

/* Full passes done, cumulative. */
uint64_t eng_full_scans(enum eng_kind e);

/* Pages scanned (examined), cumulative. */
uint64_t eng_pages_scanned(enum eng_kind e);

/* Engine metadata, bytes (ksmu: metadata_bytes; KSM: 64 B per rmap item). */
uint64_t eng_metadata_bytes(enum eng_kind e);

/*
 * Converge fast (ksmu: scanner stopped, ksmu_scan_full() until the saving
 * stops growing; KSM: 20000 pages, 0 ms until two passes show no growth),
 * then leave the engine stopped.  The CPU it took in *@cpu_ns, passes in
 * *@passes (either may be NULL).  @timeout_s bounds KSM.
 */
void eng_converge(enum eng_kind e, unsigned timeout_s, uint64_t *cpu_ns, unsigned *passes);

/* Resident set of this process, kB (VmRSS). */
long eng_rss_kb(void);

/*
 * Run @fn(@arg) in a forked child (ksmu engines): stdout is flushed
 * before and the child's output goes straight to it.  Returns the child's
 * exit status (128 + signal if it died of one).
 */
int eng_run_child(int (*fn)(void *arg), void *arg);

/* Fill @page with 4 KiB of content never generated before (xorshift from @seed). */
void eng_fresh_page(void *page, uint64_t seed);

/* Load of the machine now: the first field of /proc/loadavg. */
double eng_loadavg(void);

#endif /* KSMU_BENCH_ENGINES_H */
