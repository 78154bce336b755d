/* SPDX-License-Identifier: MIT */
/*
 * bench-common.c - the code the benchmarks share (bench-scan, bench-merge,
 * bench-cow and the others), built once as the static library bench_common.
 *
 * DESIGN
 * The module owns three things; the programs own everything they measure.
 *   1. The command-line helpers (bench_parse_u64, --engine, the options
 *      the side-by-side benchmarks share and the engines they resolve to),
 *      clocks and small text files of sysfs and procfs.
 *   2. Kernel KSM as a system-wide resource: whether it may be used (idle,
 *      and the lock BENCH_KSM_LOCK that keeps two benchmarks from driving
 *      it at once), its knobs and counters, ksmd's CPU time.
 *   3. The promise that a benchmark leaves the machine as it found it.  Two
 *      system-wide settings are changed: the KSM knobs (bench_ksm_arm,
 *      bench_ksm_setup) and vm.max_map_count (bench_mmc_raise).  The
 *      values found are saved before the first change, and written back on
 *      every exit path: a normal exit or exit() on an error (the atexit
 *      hook), a terminating signal (the handler; the process then dies of
 *      the signal as it would have), or a call of bench_restore() when the
 *      program is done with a setting.  For KSM, "back" means run=2 first
 *      (unmerge everything the benchmark merged; the write returns when the
 *      unmerge is done), run=0, then the saved knobs in table order.
 *      advisor_mode comes last: switching it resets pages_to_scan, and
 *      pages_to_scan cannot be written while an advisor is on.
 *   The exit hook cannot run after _exit() (used by forked children, which
 *   leave the restore to their parent: bench_restore_forget_in_child()) or
 *   SIGKILL; nothing can.
 *
 * ASYNC-SIGNAL-SAFETY OF THE RESTORE PATH
 * restore_armed() runs in signal handlers, so it and everything it calls
 * use only open, write, close, nanosleep and lock-free atomics.  Everything
 * it needs is prepared before arming: the knob paths and values
 * (ksm_saved[]) and the vm.max_map_count value (mmc_saved) are plain
 * strings written by bench_ksm_arm() and bench_mmc_raise() while nothing
 * is armed yet.  Error messages go out with write(2) (as_err).  The handler
 * saves and restores errno.  Callers outside handlers go through
 * restore_blocked(), which blocks all signals in the calling thread, so a
 * signal cannot interrupt a restore in the same thread; a handler's own
 * sa_mask blocks all signals too.
 *
 * INVARIANTS
 * - ksm_armed / mmc_armed are 1 only while the setting may differ from the
 *   saved value, and only after the saved value is complete (stored with
 *   sequential consistency after the strings; read likewise), so a signal
 *   at any moment restores either nothing or the right values.
 * - At most one restore runs at a time (restore_lock).  A second one (a
 *   signal in another thread, or the exit hook while a handler restores)
 *   waits for the first and then finds nothing armed.  No thread ever waits
 *   for itself: the lock is only taken with all signals blocked.
 * - Restoring disarms, so each saved value is written back once; a later
 *   arming saves afresh (KSM) or keeps the first value found (mmc).
 *
 * THREADS
 * bench-scan runs libksmu's threads in its own process, so a signal may be
 * delivered to any thread: hence atomics rather than plain flags.
 */
#include "bench-common.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <unistd.h>

#include "datagen.h"
#include "parse.h"

#if ATOMIC_INT_LOCK_FREE != 2
#error "the restore path needs lock-free atomic int (async-signal-safety)"
#endif

/* ------------------------------------------------------- command line */

uint64_t bench_parse_u64(const char *opt, const char *s, uint64_t min, uint64_t max)
{
	uint64_t v;

	/* the project's one strict decimal parser (src/parse.h) */
	if (ksmu_parse_decimal(s, max, &v) || v < min)
		goto bad;
	return v;
bad:
	fprintf(stderr, "%s: %s wants an integer from %" PRIu64 " to %" PRIu64 ", not '%s'\n",
		bench_prog, opt, min, max, s);
	exit(2);
}

enum bench_engine bench_parse_engine(const char *s)
{
	if (!strcmp(s, "ksmu"))
		return BENCH_ENG_KSMU;
	if (!strcmp(s, "ksm"))
		return BENCH_ENG_KSM;
	if (!strcmp(s, "both"))
		return BENCH_ENG_BOTH;
	fprintf(stderr, "%s: --engine wants ksmu, ksm or both, not '%s'\n", bench_prog, s);
	exit(2);
}

void bench_no_operands(int argc, char **argv, int first)
{
	if (first < argc) {
		fprintf(stderr, "%s: unexpected argument '%s'\nTry '%s --help'.\n", bench_prog,
			argv[first], bench_prog);
		exit(2);
	}
}

_Noreturn void bench_usage_error(void)
{
	fprintf(stderr, "Try '%s --help'.\n", bench_prog);
	exit(2);
}

bool bench_side_option(struct bench_side_opts *o, int c, const char *arg)
{
	switch (c) {
	case 'p':
		o->pages_to_scan = bench_parse_u64("--pages-to-scan", arg, 1, 1000000);
		return true;
	case 's':
		o->sleep_ms = bench_parse_u64("--sleep-ms", arg, 0, 100000);
		return true;
	case 'e':
		o->engine = (int)bench_parse_engine(arg);
		return true;
	case 'q':
		o->quick = true;
		return true;
	default:
		return false;
	}
}

int bench_side_engines(int engine)
{
	char why[256];

	if ((engine & BENCH_ENG_KSM) && !bench_ksm_usable(why, sizeof(why))) {
		fprintf(stderr, "%s: kernel KSM not usable: %s; ksmu only\n", bench_prog, why);
		engine &= ~BENCH_ENG_KSM;
	}
	if (engine & BENCH_ENG_KSM) {
		struct bench_ksm_knobs kn = { .use_zero_pages = 0, .max_page_sharing = 256,
					      .merge_across_nodes = 1, .smart_scan = 1 };

		bench_ksm_setup(&kn);
	}
	return engine;
}

/* ------------------------------------------------------------- clocks */

void bench_sleep_ns(uint64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000ULL),
			       .tv_nsec = (long)(ns % 1000000000ULL) };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

int bench_cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

void bench_log_to_stderr(int level, const char *msg, void *arg)
{
	fprintf(stderr, "ksmu: %s\n", msg);
}

/* ---------------------------------------------------------- the memory */

unsigned char *bench_map_filled(size_t len, const struct ksmu_datagen_spec *spec,
				uint64_t *fill_ns)
{
	unsigned char *mem;
	uint64_t t0;
	int ret;

	mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED) {
		fprintf(stderr, "%s: cannot map %zu MiB: %s\n", bench_prog, len >> 20,
			strerror(errno));
		exit(1);
	}
	/* Pre-fault in one call (faster than a fault per page; >= 5.14). */
	t0 = bench_clock_ns(CLOCK_MONOTONIC);
	(void)madvise(mem, len, MADV_POPULATE_WRITE);
	ret = ksmu_datagen_fill(mem, spec, NULL);
	if (fill_ns)
		*fill_ns = bench_clock_ns(CLOCK_MONOTONIC) - t0;
	if (ret) {
		fprintf(stderr, "%s: cannot generate the workload: %s\n", bench_prog,
			strerror(-ret));
		exit(1);
	}
	return mem;
}

/* ------------------------------------------------- sysfs and procfs */

/* Async-signal-safe helpers: only open, read, write, close. */
static size_t as_strlen(const char *s)
{
	size_t n = 0;

	while (s[n])
		n++;
	return n;
}

/* "<prog>: <a><b>\n" on stderr.  Async-signal-safe. */
static void as_err(const char *a, const char *b)
{
	const char *parts[] = { bench_prog, ": ", a, b, "\n" };

	for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
		ssize_t n = write(STDERR_FILENO, parts[i], as_strlen(parts[i]));

		(void)n;
	}
}

int bench_sysfs_write(const char *path, const char *val)
{
	size_t len = as_strlen(val);
	int fd, err = 0, tries = 0;
	ssize_t n;

	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	do {
		n = write(fd, val, len);
	} while (n < 0 && errno == EINTR && ++tries < 5);
	if (n < 0)
		err = -errno;
	else if ((size_t)n != len)
		err = -EIO;
	close(fd);
	return err;
}

int bench_read_text(const char *path, char *buf, size_t size)
{
	ssize_t n;
	int fd, err = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = read(fd, buf, size - 1);
	if (n < 0)
		err = -errno;
	close(fd);
	if (err)
		return err;
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
		n--;
	buf[n] = '\0';
	return 0;
}

/* ------------------------------------------------- restore on exit */

/* The KSM knobs saved and written back, in restore order (see DESIGN). */
enum ksm_knob {
	KN_PAGES_TO_SCAN, KN_SLEEP, KN_USE_ZERO, KN_MAX_SHARING, KN_MERGE_NODES,
	KN_SMART_SCAN, KN_ADVISOR, KN_COUNT
};

/*
 * struct ksm_saved - one knob as found.
 * @name:    its file in BENCH_KSM_DIR
 * @path:    BENCH_KSM_DIR @name (prepared for the signal handler)
 * @value:   the value found (advisor_mode: the bracketed word)
 * @present: the kernel has the knob (smart_scan: 6.7, advisor_mode: 6.9)
 */
struct ksm_saved {
	const char *name;
	char path[64];
	char value[64];
	bool present;
};

static struct ksm_saved ksm_saved[KN_COUNT] = {
	[KN_PAGES_TO_SCAN] = { .name = "pages_to_scan" },
	[KN_SLEEP] = { .name = "sleep_millisecs" },
	[KN_USE_ZERO] = { .name = "use_zero_pages" },
	[KN_MAX_SHARING] = { .name = "max_page_sharing" },
	[KN_MERGE_NODES] = { .name = "merge_across_nodes" },
	[KN_SMART_SCAN] = { .name = "smart_scan" },
	[KN_ADVISOR] = { .name = "advisor_mode" },
};

static const char ksm_run_path[] = BENCH_KSM_DIR "run";
static atomic_int ksm_armed;   /* the KSM knobs may differ from ksm_saved */
static atomic_int mmc_armed;   /* vm.max_map_count may differ from mmc_saved */
static char mmc_saved[32];
static atomic_int restore_lock; /* 1 while a restore runs */

/*
 * Write back what is armed among @what (RS_KSM, RS_MMC) and disarm it.
 * Async-signal-safe.  Waits while another thread restores (1 ms steps).
 */
enum { RS_KSM = 1, RS_MMC = 2, RS_ALL = 3 };

static void restore_armed(int what)
{
	int expect = 0;

	while (!atomic_compare_exchange_strong(&restore_lock, &expect, 1)) {
		struct timespec ts = { 0, 1000000 };

		expect = 0;
		nanosleep(&ts, NULL);
	}
	if ((what & RS_KSM) && atomic_load(&ksm_armed)) {
		if (bench_sysfs_write(ksm_run_path, "2"))
			as_err("restore: cannot write run=2 (unmerge) to ", ksm_run_path);
		if (bench_sysfs_write(ksm_run_path, "0"))
			as_err("restore: cannot write run=0 to ", ksm_run_path);
		for (int i = 0; i < KN_COUNT; i++) {
			if (ksm_saved[i].present &&
			    bench_sysfs_write(ksm_saved[i].path, ksm_saved[i].value))
				as_err("restore: cannot write back ", ksm_saved[i].path);
		}
		atomic_store(&ksm_armed, 0);
	}
	if ((what & RS_MMC) && atomic_load(&mmc_armed)) {
		if (bench_sysfs_write(BENCH_MMC_PATH, mmc_saved))
			as_err("restore: cannot write back ", BENCH_MMC_PATH);
		atomic_store(&mmc_armed, 0);
	}
	atomic_store(&restore_lock, 0);
}

/* Outside a signal handler: with signals blocked, so none interrupts it. */
static void restore_blocked(int what)
{
	sigset_t all, old;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	restore_armed(what);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

void bench_restore(void)
{
	restore_blocked(RS_ALL);
}

static void restore_atexit(void)
{
	restore_blocked(RS_ALL);
}

static void on_signal(int sig)
{
	struct sigaction dfl;
	int saved_errno = errno;

	restore_armed(RS_ALL);
	/* Die of the signal once the handler returns (it is blocked until then). */
	memset(&dfl, 0, sizeof(dfl));
	dfl.sa_handler = SIG_DFL;
	sigaction(sig, &dfl, NULL);
	raise(sig);
	errno = saved_errno;
}

static const int restore_sigs[] = { SIGHUP,  SIGINT,  SIGQUIT, SIGILL,  SIGABRT,
				    SIGBUS,  SIGFPE,  SIGSEGV, SIGPIPE, SIGALRM,
				    SIGTERM, SIGXCPU, SIGXFSZ, SIGUSR1, SIGUSR2 };

void bench_restore_install(void)
{
	static bool installed;
	struct sigaction sa;

	if (installed)
		return;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sa.sa_flags = SA_RESTART;
	sigfillset(&sa.sa_mask);
	for (size_t i = 0; i < sizeof(restore_sigs) / sizeof(restore_sigs[0]); i++)
		sigaction(restore_sigs[i], &sa, NULL);
	if (atexit(restore_atexit)) {
		fprintf(stderr, "%s: atexit failed\n", bench_prog);
		exit(1);
	}
	installed = true;
}

void bench_restore_forget_in_child(void)
{
	struct sigaction dfl;

	atomic_store(&ksm_armed, 0);
	atomic_store(&mmc_armed, 0);
	memset(&dfl, 0, sizeof(dfl));
	dfl.sa_handler = SIG_DFL;
	for (size_t i = 0; i < sizeof(restore_sigs) / sizeof(restore_sigs[0]); i++)
		sigaction(restore_sigs[i], &dfl, NULL);
}

/* ------------------------------------------------------- kernel KSM */

int bench_ksmd_pid;
bool bench_ksm_has_zero;
bool bench_ksmd_schedstat;

static uint64_t ksm_scans_floor;

uint64_t bench_ksm_read(const char *name)
{
	char path[64], buf[64], *end;
	unsigned long long v;
	int err;

	snprintf(path, sizeof(path), BENCH_KSM_DIR "%s", name);
	err = bench_read_text(path, buf, sizeof(buf));
	if (err) {
		fprintf(stderr, "%s: cannot read %s: %s\n", bench_prog, path, strerror(-err));
		exit(1);
	}
	v = strtoull(buf, &end, 10);
	if (end == buf) {
		fprintf(stderr, "%s: %s holds '%s', not a number\n", bench_prog, path, buf);
		exit(1);
	}
	return v;
}

int64_t bench_ksm_read_s64(const char *name)
{
	char path[64], buf[64];

	snprintf(path, sizeof(path), BENCH_KSM_DIR "%s", name);
	if (bench_read_text(path, buf, sizeof(buf)))
		return 0;
	return strtoll(buf, NULL, 10);
}

bool bench_ksm_has_knob(const char *name)
{
	char path[64];

	snprintf(path, sizeof(path), BENCH_KSM_DIR "%s", name);
	return !access(path, R_OK);
}

int bench_ksm_write(const char *name, const char *val)
{
	char path[64];

	snprintf(path, sizeof(path), BENCH_KSM_DIR "%s", name);
	return bench_sysfs_write(path, val);
}

void bench_ksm_set(const char *name, const char *val)
{
	int err = bench_ksm_write(name, val);

	if (err) {
		fprintf(stderr, "%s: cannot write %s to %s%s: %s\n", bench_prog, val,
			BENCH_KSM_DIR, name, strerror(-err));
		exit(1);
	}
}

void bench_ksm_set_u64(const char *name, uint64_t v)
{
	char buf[24];

	snprintf(buf, sizeof(buf), "%" PRIu64, v);
	bench_ksm_set(name, buf);
}

static int find_ksmd(void)
{
	DIR *d = opendir("/proc");
	struct dirent *de;
	int pid = 0;

	if (!d)
		return 0;
	while (!pid && (de = readdir(d)) != NULL) {
		char path[300], comm[32];

		if (de->d_name[0] < '1' || de->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/comm", de->d_name);
		if (!bench_read_text(path, comm, sizeof(comm)) && !strcmp(comm, "ksmd"))
			pid = atoi(de->d_name);
	}
	closedir(d);
	return pid;
}

bool bench_ksm_usable(char *why, size_t size)
{
	char buf[32] = "?";
	int fd;

	if (access(ksm_run_path, W_OK)) {
		snprintf(why, size, "%s is not writable (%s; needs root)", ksm_run_path,
			 strerror(errno));
		return false;
	}
	/* The lock's descriptor stays open: the lock goes with the process. */
	fd = open(BENCH_KSM_LOCK, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB)) {
		snprintf(why, size, "%s: %s", BENCH_KSM_LOCK,
			 errno == EWOULDBLOCK ? "another benchmark is measuring kernel KSM"
					      : strerror(errno));
		if (fd >= 0)
			close(fd);
		return false;
	}
	bench_ksmd_pid = find_ksmd();
	if (!bench_ksmd_pid) {
		snprintf(why, size, "no ksmd thread found in /proc");
		return false;
	}
	bench_ksm_has_zero = bench_ksm_has_knob("ksm_zero_pages");
	if (bench_read_text(ksm_run_path, buf, sizeof(buf)) || strcmp(buf, "0") ||
	    bench_ksm_read("pages_shared") || bench_ksm_read("pages_sharing") ||
	    (bench_ksm_has_zero && bench_ksm_read("ksm_zero_pages"))) {
		snprintf(why, size,
			 "kernel KSM is in use (run=%s, pages_shared=%" PRIu64
			 ", pages_sharing=%" PRIu64 "): not touching it",
			 buf, bench_ksm_read("pages_shared"), bench_ksm_read("pages_sharing"));
		return false;
	}
	return true;
}

void bench_ksm_arm(void)
{
	char path[80];

	for (int i = 0; i < KN_COUNT; i++) {
		struct ksm_saved *s = &ksm_saved[i];
		char buf[64];

		s->present = false;
		snprintf(s->path, sizeof(s->path), BENCH_KSM_DIR "%s", s->name);
		if (bench_read_text(s->path, buf, sizeof(buf)))
			continue; /* knob absent on this kernel (smart_scan, advisor_mode) */
		if (i == KN_ADVISOR) {
			/* "[none] scan-time": the bracketed word is the current mode */
			char *a = strchr(buf, '['), *b = a ? strchr(a, ']') : NULL;

			if (!a || !b)
				continue;
			*b = '\0';
			memmove(buf, a + 1, (size_t)(b - a));
		}
		snprintf(s->value, sizeof(s->value), "%s", buf);
		s->present = true;
	}
	if (bench_ksmd_pid) {
		snprintf(path, sizeof(path), "/proc/%d/schedstat", bench_ksmd_pid);
		bench_ksmd_schedstat = !access(path, R_OK);
	}
	bench_restore_install();
	/* seq_cst: the saved strings are complete before a handler can see the flag. */
	atomic_store(&ksm_armed, 1);
}

void bench_ksm_setup(const struct bench_ksm_knobs *kn)
{
	bench_ksm_arm();
	if (ksm_saved[KN_ADVISOR].present && strcmp(ksm_saved[KN_ADVISOR].value, "none"))
		bench_ksm_set("advisor_mode", "none"); /* it would override pages_to_scan */
	bench_ksm_set_u64("use_zero_pages", kn->use_zero_pages);
	bench_ksm_set_u64("max_page_sharing", kn->max_page_sharing);
	bench_ksm_set_u64("merge_across_nodes", kn->merge_across_nodes);
	if (ksm_saved[KN_SMART_SCAN].present)
		bench_ksm_set_u64("smart_scan", kn->smart_scan);
}

void bench_ksm_fresh_start(uint64_t pages_to_scan)
{
	bench_ksm_set("run", "2");
	ksm_scans_floor = 0;
	bench_ksm_set_u64("pages_to_scan", pages_to_scan);
	bench_ksm_set("sleep_millisecs", "0");
}

uint64_t bench_ksm_unmerge(void)
{
	uint64_t t0 = bench_clock_ns(CLOCK_MONOTONIC), ns;

	bench_ksm_set("run", "2");
	ns = bench_clock_ns(CLOCK_MONOTONIC) - t0;
	bench_ksm_set("run", "0");
	return ns;
}

uint64_t bench_ksm_scans(void)
{
	uint64_t v = bench_ksm_read("full_scans");

	if (v < ksm_scans_floor) {
		fprintf(stderr,
			"%s: kernel KSM: full_scans went back from %" PRIu64 " to %" PRIu64
			": another program wrote run=2; giving up\n",
			bench_prog, ksm_scans_floor, v);
		exit(1);
	}
	ksm_scans_floor = v;
	return v;
}

struct bench_ksmd_cpu bench_ksmd_cpu(void)
{
	static long tck;
	struct bench_ksmd_cpu c = { 0, 0, '?' };
	char path[64], buf[1024], *p;
	unsigned long long utime, stime;

	if (!tck)
		tck = sysconf(_SC_CLK_TCK);
	if (bench_ksmd_schedstat) {
		snprintf(path, sizeof(path), "/proc/%d/schedstat", bench_ksmd_pid);
		if (!bench_read_text(path, buf, sizeof(buf)))
			c.sched_ns = strtoull(buf, NULL, 10);
	}
	snprintf(path, sizeof(path), "/proc/%d/stat", bench_ksmd_pid);
	if (bench_read_text(path, buf, sizeof(buf)) || !(p = strrchr(buf, ')')) ||
	    sscanf(p + 1, " %c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &c.state,
		   &utime, &stime) != 3) {
		fprintf(stderr, "%s: cannot read ksmd's CPU time from %s\n", bench_prog, path);
		exit(1);
	}
	c.stat_ns = (utime + stime) * (1000000000ULL / (uint64_t)tck);
	return c;
}

/* ------------------------------------------------ vm.max_map_count */

int bench_mmc_raise(uint64_t v)
{
	char buf[32];
	int err;

	bench_restore_install();
	if (!atomic_load(&mmc_armed)) {
		err = bench_read_text(BENCH_MMC_PATH, mmc_saved, sizeof(mmc_saved));
		if (err)
			return err;
		/* seq_cst: mmc_saved is complete before a handler can see the flag. */
		atomic_store(&mmc_armed, 1);
	}
	snprintf(buf, sizeof(buf), "%" PRIu64, v);
	err = bench_sysfs_write(BENCH_MMC_PATH, buf);
	if (err)
		restore_blocked(RS_MMC);
	return err;
}

int64_t bench_mmc_read(void)
{
	char buf[32];

	if (bench_read_text(BENCH_MMC_PATH, buf, sizeof(buf)))
		return -1;
	return strtoll(buf, NULL, 10);
}
