/* SPDX-License-Identifier: MIT */
/*
 * bench-common.h - what the benchmarks share: option parsing, clocks,
 * sysfs/procfs text files, kernel KSM (knobs, counters, ksmd's CPU time),
 * vm.max_map_count, and putting the system back as it was on every exit
 * path.  The design, the restore path's async-signal-safety and the
 * invariants are described at the top of bench-common.c.
 *
 * Every program that links bench_common defines bench_prog, its name for
 * messages:   const char bench_prog[] = "bench-scan";
 */
#ifndef KSMU_BENCH_COMMON_H
#define KSMU_BENCH_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif

#define BENCH_KSM_DIR "/sys/kernel/mm/ksm/"
#define BENCH_MMC_PATH "/proc/sys/vm/max_map_count"
/* One benchmark at a time drives kernel KSM; the lock goes with the process. */
#define BENCH_KSM_LOCK "/run/lock/ksmu-bench-ksm.lock"

struct ksmu_datagen_spec;

/* The program's name, for messages; defined by each program. */
extern const char bench_prog[];

/* ------------------------------------------------------- command line */

/* Which engines a side-by-side benchmark measures (--engine). */
enum bench_engine { BENCH_ENG_KSMU = 1, BENCH_ENG_KSM = 2, BENCH_ENG_BOTH = 3 };

/*
 * The integer value of option @opt, @s, from @min to @max (decimal, 0x hex
 * or 0 octal; no sign).  Anything else: a message and exit status 2.
 */
uint64_t bench_parse_u64(const char *opt, const char *s, uint64_t min, uint64_t max);

/* --engine's value: ksmu, ksm or both.  Anything else: exit status 2. */
enum bench_engine bench_parse_engine(const char *s);

/*
 * After getopt_long(): exit with status 2 and a hint if there are operands
 * left (the benchmarks take none).
 */
void bench_no_operands(int argc, char **argv, int first);

/* getopt_long() has said what is wrong: a hint, exit status 2. */
_Noreturn void bench_usage_error(void);

/*
 * The options of the side-by-side benchmarks (bench-engines.h: bench-steady,
 * bench-interfere, bench-churn), the same in each: the budget both engines
 * get, which engines run, and the CI smoke.  Each program lists them in its
 * own option table (its order, its usage text) with these getopt_long()
 * values, and says itself what --quick shrinks.
 * @pages_to_scan: --pages-to-scan N, 'p': pages per batch, 1..1000000 (4000)
 * @sleep_ms:      --sleep-ms N, 's': ms between batches, 0..100000 (20)
 * @engine:        --engine ksmu|ksm|both, 'e': BENCH_ENG_* (both)
 * @quick:         --quick, 'q'
 */
struct bench_side_opts {
	uint64_t pages_to_scan, sleep_ms;
	int engine;
	bool quick;
};

#define BENCH_SIDE_OPTS_INIT { .pages_to_scan = 4000, .sleep_ms = 20, .engine = BENCH_ENG_BOTH }

/*
 * getopt_long() returned @c (argument @arg): if it is one of the options of
 * struct bench_side_opts, store it in @o and return true; false otherwise.
 * A bad value: a message and exit status 2.
 */
bool bench_side_option(struct bench_side_opts *o, int c, const char *arg);

/*
 * After the command line of a side-by-side benchmark (bench-scale too): if
 * @engine (BENCH_ENG_*) includes kernel KSM and KSM is not usable
 * (bench_ksm_usable), say why on stderr and go on with ksmu only; if it is,
 * bench_ksm_setup() with the knobs both engines run with (use_zero_pages 0,
 * max_page_sharing 256, merge_across_nodes 1, smart_scan 1).
 * Return: the engines to run.
 */
int bench_side_engines(int engine);

/* ------------------------------------------------------------- clocks */

/* @id's time in ns.  Inline: it is called around the timed writes. */
static inline uint64_t bench_clock_ns(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* Sleep @ns, across EINTR. */
void bench_sleep_ns(uint64_t ns);

/* qsort() comparison of uint64_t. */
int bench_cmp_u64(const void *a, const void *b);

/* A ksmu_set_log() sink: each message on a line of stderr. */
void bench_log_to_stderr(int level, const char *msg, void *arg);

/* ---------------------------------------------------------- the memory */

/*
 * Map @len bytes of private anonymous memory, pre-fault it in one call and
 * fill it with @spec's workload.  If @fill_ns, it gets the time from the
 * pre-fault to the end of the fill.  Exits (status 1) on failure.
 */
unsigned char *bench_map_filled(size_t len, const struct ksmu_datagen_spec *spec,
				uint64_t *fill_ns);

/* ------------------------------------------------- sysfs and procfs */

/*
 * Read a small text file into @buf (@size bytes) without trailing newlines
 * and blanks; 0 or -errno.  Only open, read, close.
 */
int bench_read_text(const char *path, char *buf, size_t size);

/* Write @val to a sysfs or procfs file; 0 or -errno.  Async-signal-safe. */
int bench_sysfs_write(const char *path, const char *val);

/* ------------------------------------------------- restore on exit */

/*
 * Catch the terminating signals (SIGHUP, SIGINT, SIGQUIT, SIGILL, SIGABRT,
 * SIGBUS, SIGFPE, SIGSEGV, SIGPIPE, SIGALRM, SIGTERM, SIGXCPU, SIGXFSZ,
 * SIGUSR1, SIGUSR2) and register the exit hook, so that whatever was armed
 * below is put back; the process then dies of the signal as it would have.
 * Idempotent; the arming functions call it.
 */
void bench_restore_install(void);

/*
 * Put back now whatever is armed: kernel KSM (run=2 unmerges everything,
 * run=0, then the saved knobs), vm.max_map_count.  Blocks signals while
 * it runs; waits for a restore already running in another thread.  Not
 * for signal handlers (the module's own handler does the same).
 */
void bench_restore(void);

/*
 * In a child after fork(): the parent restores, the child never does.
 * Disarms in the child and gives the caught signals their default action.
 */
void bench_restore_forget_in_child(void);

/* ------------------------------------------------------- kernel KSM */

/* Set by bench_ksm_usable(): ksmd's pid; ksm_zero_pages exists. */
extern int bench_ksmd_pid;
extern bool bench_ksm_has_zero;
/* Set by bench_ksm_arm(): /proc/PID/schedstat is readable (ns-exact CPU). */
extern bool bench_ksmd_schedstat;

/*
 * Is kernel KSM usable: writable, BENCH_KSM_LOCK taken (held until the
 * process exits), ksmd found, and idle (run=0, nothing merged)?  If not,
 * @why (@size bytes) says why.
 */
bool bench_ksm_usable(char *why, size_t size);

/*
 * Save the knobs (pages_to_scan, sleep_millisecs, use_zero_pages,
 * max_page_sharing, merge_across_nodes, smart_scan and advisor_mode where
 * present), install the restore and arm it: from now on every exit path
 * puts kernel KSM back.  Call once, while KSM is still as found.
 */
void bench_ksm_arm(void);

/* The knobs that both engines of a side-by-side run get. */
struct bench_ksm_knobs {
	uint64_t use_zero_pages, max_page_sharing, merge_across_nodes, smart_scan;
};

/*
 * bench_ksm_arm(), then give KSM @kn (smart_scan only where the kernel has
 * it) and advisor_mode none, which would override pages_to_scan.  KSM
 * stays stopped.  Exits on failure (the exit hook restores).
 */
void bench_ksm_setup(const struct bench_ksm_knobs *kn);

/* Does /sys/kernel/mm/ksm/@name exist (readable)? */
bool bench_ksm_has_knob(const char *name);

/* A KSM counter or knob; exits (status 1) if unreadable or not a number. */
uint64_t bench_ksm_read(const char *name);

/* A signed KSM counter (general_profit); 0 if unreadable. */
int64_t bench_ksm_read_s64(const char *name);

/* Write a KSM knob; 0 or -errno. */
int bench_ksm_write(const char *name, const char *val);

/* Write a KSM knob; exits (status 1) on failure. */
void bench_ksm_set(const char *name, const char *val);
void bench_ksm_set_u64(const char *name, uint64_t v);

/*
 * Stop KSM (it must be stopped: run=0) with its scan cursor at the start
 * of a pass (run=2 does that), and set pages_to_scan to @pages_to_scan and
 * sleep_millisecs to 0; writing run=1 then starts pass 1 exactly.  Resets
 * the full_scans floor of bench_ksm_scans().
 */
void bench_ksm_fresh_start(uint64_t pages_to_scan);

/* Unmerge everything (run=2 returns when done), then run=0; the ns run=2 took. */
uint64_t bench_ksm_unmerge(void);

/*
 * full_scans.  Only run=2 sets it back to 0, and the benchmarks write that
 * only in bench_ksm_fresh_start(): a decrease means that another program
 * drives kernel KSM, and the figures are void; exits (status 1).
 */
uint64_t bench_ksm_scans(void);

/*
 * ksmd's CPU time: @sched_ns from /proc/PID/schedstat (0 without it),
 * @stat_ns from /proc/PID/stat utime+stime (clock ticks); @state is its
 * scheduler state ('S' while it sleeps between batches).
 */
struct bench_ksmd_cpu {
	uint64_t sched_ns, stat_ns;
	char state;
};

/* ksmd's CPU time now; exits (status 1) if /proc/PID/stat is unreadable. */
struct bench_ksmd_cpu bench_ksmd_cpu(void);

/* ------------------------------------------------ vm.max_map_count */

/*
 * Raise vm.max_map_count to @v, saving the value found and arming its
 * restore first (the first raise saves; later ones keep that value); 0 or
 * -errno (on failure, whatever is armed is restored at once).
 */
int bench_mmc_raise(uint64_t v);

/* vm.max_map_count now, -1 if unreadable. */
int64_t bench_mmc_read(void);

#endif /* KSMU_BENCH_COMMON_H */
