/* SPDX-License-Identifier: MIT */
/*
 * bench-scan.c - scanner throughput of libksmu.
 *
 * Maps a region (1 GiB by default), fills it with the default datagen mix
 * (1024 templates, 50 % scattered copies, 10 % zero pages, 40 % unique),
 * registers it and times three full passes run by ksmu_scan_full() in this
 * thread, with the background scanner stopped:
 *   first     the first pass over all memory: every page is new and hashed;
 *   clean     a second pass with nothing written: what the dirty tracker
 *             saves shows here (the checksum tracker re-hashes everything,
 *             exact write-protect tracking hashes nothing);
 *   dirty1pct a pass after writing one word in 1 % of the pages, spread
 *             evenly over the region.
 * For each pass it reports pages per CPU-second ("per core": the engine's
 * scan_cpu_ns account, or the process CPU clock if that is 0), ns per page,
 * wall time and the pages hashed.  The last line is machine-readable:
 *   RESULT bench=scan mib=.. first_pps=.. clean_pps=.. dirty1pct_pps=..
 *          tracker=.. [more key=value fields]
 *
 * CLOCK_THREAD_CPUTIME_ID would do since the scan runs in the caller's
 * thread, but the engine may use helper threads (fault handling), so the
 * process clock is the honest upper bound and scan_cpu_ns the engine's view.
 *
 * Exit status: 0 done; 1 a ksmu call failed; 2 bad command line; 77 the
 * requested tracker is not available on this kernel (ctest skip).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "datagen.h"
#include "ksmu.h"

#define PAGE_BYTES KSMU_DATAGEN_PAGE_SIZE

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14 */
#endif

static const char *prog = "bench-scan";

/*
 * struct pass - what one measured pass cost.
 * @wall_ns:  elapsed time of ksmu_scan_full()
 * @proc_ns:  process CPU time during it
 * @scan_ns:  the engine's scan_cpu_ns delta
 * @scanned:  pages_scanned delta
 * @hashed:   pages_hashed delta
 * @clean:    pages_clean delta (proved unchanged by the tracker)
 * @scans:    full_scans delta
 */
struct pass {
	uint64_t wall_ns, proc_ns, scan_ns;
	uint64_t scanned, hashed, clean, scans;
};

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: %s [--mib N] [--quick] [--tracker checksum|wp] [--seed S]\n"
		"Time full scans of ksmu over generated memory: the first pass, a clean\n"
		"pass and a pass after writing 1 %% of the pages.\n"
		"\n"
		"  --mib N        region size in MiB (default 1024)\n"
		"  --quick        CI smoke: 64 MiB\n"
		"  --tracker T    force the dirty tracker: checksum (kernel KSM's way) or\n"
		"                 wp (PAGEMAP_SCAN + async write-protect); default: engine's\n"
		"  --seed S       workload seed (default 1)\n",
		prog);
}

static uint64_t parse_u64(const char *opt, const char *s, uint64_t min, uint64_t max)
{
	unsigned long long v;
	char *end;

	errno = 0;
	if (!*s || *s == '-' || *s == '+')
		goto bad;
	v = strtoull(s, &end, 0);
	if (errno || *end || v < min || v > max)
		goto bad;
	return v;
bad:
	fprintf(stderr, "%s: %s wants an integer from %" PRIu64 " to %" PRIu64 ", not '%s'\n",
		prog, opt, min, max, s);
	exit(2);
}

static void log_to_stderr(int level, const char *msg, void *arg)
{
	fprintf(stderr, "ksmu: %s\n", msg);
}

static void die_ksmu(const char *what, int ret)
{
	fprintf(stderr, "%s: %s failed: %s\n", prog, what, strerror(-ret));
	exit(1);
}

static uint64_t clock_ns(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static const char *tracker_name(uint64_t t)
{
	switch (t) {
	case KSMU_TRACK_CHECKSUM:
		return "checksum";
	case KSMU_TRACK_WP_ASYNC:
		return "wp-async";
	case KSMU_TRACK_NONE:
		return "none";
	default:
		return "unknown";
	}
}

static struct ksmu_stats get_stats(void)
{
	struct ksmu_stats s;
	int ret = ksmu_stats(&s);

	if (ret < 0)
		die_ksmu("ksmu_stats", ret);
	return s;
}

static struct pass measure_pass(void)
{
	struct ksmu_stats a, b;
	uint64_t w0, w1, c0, c1;
	struct pass p;
	int ret;

	a = get_stats();
	w0 = clock_ns(CLOCK_MONOTONIC);
	c0 = clock_ns(CLOCK_PROCESS_CPUTIME_ID);
	ret = ksmu_scan_full();
	c1 = clock_ns(CLOCK_PROCESS_CPUTIME_ID);
	w1 = clock_ns(CLOCK_MONOTONIC);
	if (ret < 0)
		die_ksmu("ksmu_scan_full", ret);
	b = get_stats();

	p.wall_ns = w1 - w0;
	p.proc_ns = c1 - c0;
	p.scan_ns = b.scan_cpu_ns - a.scan_cpu_ns;
	p.scanned = b.pages_scanned - a.pages_scanned;
	p.hashed = b.pages_hashed - a.pages_hashed;
	p.clean = b.pages_clean - a.pages_clean;
	p.scans = b.full_scans - a.full_scans;
	return p;
}

/* CPU time charged to a pass: the engine's account if it keeps one. */
static uint64_t pass_cpu_ns(const struct pass *p)
{
	return p->scan_ns ? p->scan_ns : p->proc_ns;
}

static uint64_t pass_pps(const struct pass *p)
{
	uint64_t ns = pass_cpu_ns(p);

	return ns ? (uint64_t)((double)p->scanned * 1e9 / (double)ns) : 0;
}

static double pass_ns_per_page(const struct pass *p)
{
	return p->scanned ? (double)pass_cpu_ns(p) / (double)p->scanned : 0.0;
}

static void print_pass(const char *name, const struct pass *p)
{
	printf("%-10s %12" PRIu64 " %9.1f %10.3f %10.3f %10.3f %10" PRIu64 " %10" PRIu64
	       " %10" PRIu64 " %5" PRIu64 "\n",
	       name, pass_pps(p), pass_ns_per_page(p), p->wall_ns / 1e6, p->scan_ns / 1e6,
	       p->proc_ns / 1e6, p->scanned, p->hashed, p->clean, p->scans);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "mib", required_argument, NULL, 'm' },
		{ "quick", no_argument, NULL, 'q' },
		{ "tracker", required_argument, NULL, 't' },
		{ "seed", required_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct ksmu_datagen_spec spec = { .templates = 1024, .dup_frac = 0.5, .zero_frac = 0.1,
					  .seed = 1 };
	struct ksmu_datagen_expect ex;
	struct pass first, clean, dirty;
	struct ksmu_stats st, st1;
	uint64_t mib = 1024, fill_ns, write_ns, t0;
	unsigned long tracker = 0;
	size_t len, writes, stride;
	bool est_ok;
	unsigned char *mem;
	int c, ret;

	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'm':
			mib = parse_u64("--mib", optarg, 1, SIZE_MAX >> 21);
			break;
		case 'q':
			mib = 64;
			break;
		case 't':
			if (!strcmp(optarg, "checksum")) {
				tracker = KSMU_TRACK_CHECKSUM;
			} else if (!strcmp(optarg, "wp") || !strcmp(optarg, "wp-async")) {
				tracker = KSMU_TRACK_WP_ASYNC;
			} else {
				fprintf(stderr, "%s: --tracker wants checksum or wp, not '%s'\n",
					prog, optarg);
				return 2;
			}
			break;
		case 's':
			spec.seed = parse_u64("--seed", optarg, 0, UINT64_MAX);
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			fprintf(stderr, "Try '%s --help'.\n", prog);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "%s: unexpected argument '%s'\nTry '%s --help'.\n", prog,
			argv[optind], prog);
		return 2;
	}

	len = (size_t)mib << 20;
	spec.pages = len / PAGE_BYTES;
	ksmu_set_log(log_to_stderr, NULL, KSMU_LOG_WARN);

	mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED) {
		fprintf(stderr, "%s: cannot map %" PRIu64 " MiB: %s\n", prog, mib, strerror(errno));
		return 1;
	}
	/* Pre-fault in one call (faster than a fault per page; >= 5.14). */
	t0 = clock_ns(CLOCK_MONOTONIC);
	(void)madvise(mem, len, MADV_POPULATE_WRITE);
	ret = ksmu_datagen_fill(mem, &spec, NULL);
	fill_ns = clock_ns(CLOCK_MONOTONIC) - t0;
	if (ret) {
		fprintf(stderr, "%s: cannot generate the workload: %s\n", prog, strerror(-ret));
		return 1;
	}

	/* No background scanning: the measured passes are the only work. */
	ret = ksmu_set_run(KSMU_RUN_STOP);
	if (ret < 0)
		die_ksmu("ksmu_set_run(stop)", ret);
	if (tracker) {
		ret = ksmu_set_tunable("dirty_tracker", tracker);
		if (ret == -EOPNOTSUPP) {
			printf("SKIP: dirty tracker %s is not available on this kernel\n",
			       tracker_name(tracker));
			return 77;
		}
		if (ret < 0)
			die_ksmu("ksmu_set_tunable(dirty_tracker)", ret);
	}
	ret = ksmu_register(mem, len);
	if (ret < 0)
		die_ksmu("ksmu_register", ret);

	first = measure_pass();
	st1 = get_stats();
	ret = ksmu_datagen_expect(&spec, (unsigned long)st1.max_page_sharing,
				  st1.use_zero_pages != 0, &ex);
	if (ret) {
		fprintf(stderr, "%s: cannot compute the expected answer: %s\n", prog,
			strerror(-ret));
		return 1;
	}
	est_ok = st1.est_pages_shared == ex.pages_shared &&
		 st1.est_pages_sharing == ex.pages_sharing;

	clean = measure_pass();

	/* Write one word in 1 % of the pages, evenly spread. */
	writes = spec.pages / 100 ? spec.pages / 100 : 1;
	stride = spec.pages / writes;
	t0 = clock_ns(CLOCK_MONOTONIC);
	for (size_t k = 0; k < writes; k++) {
		uint64_t *w = (uint64_t *)(void *)(mem + k * stride * PAGE_BYTES + 64);

		*w += 0x9e3779b97f4a7c15ULL;
	}
	write_ns = clock_ns(CLOCK_MONOTONIC) - t0;

	dirty = measure_pass();
	st = get_stats();

	printf("bench-scan: %" PRIu64 " MiB (%zu pages), tracker %s, filled in %.2f s\n", mib,
	       spec.pages, tracker_name(st.dirty_tracker), fill_ns / 1e9);
	printf("first pass estimate: est_pages_shared %" PRIu64 " est_pages_sharing %" PRIu64
	       " (true %zu / %zu): %s\n",
	       st1.est_pages_shared, st1.est_pages_sharing, ex.pages_shared, ex.pages_sharing,
	       est_ok ? "ok" : "MISMATCH");
	printf("wrote 1 word in %zu pages (1 %%) in %.3f ms, %.2f us/page\n", writes,
	       write_ns / 1e6, writes ? write_ns / 1e3 / (double)writes : 0.0);
	printf("metadata %.2f MiB, %" PRIu64 " rmap items x %" PRIu64 " B\n",
	       st.metadata_bytes / (1024.0 * 1024.0), st.rmap_items, st.rmap_item_size);
	printf("%-10s %12s %9s %10s %10s %10s %10s %10s %10s %5s\n", "pass", "pages/s/cpu",
	       "ns/page", "wall ms", "scan cpu ms", "proc cpu ms", "scanned", "hashed", "clean",
	       "scans");
	print_pass("first", &first);
	print_pass("clean", &clean);
	print_pass("dirty1pct", &dirty);

	printf("RESULT bench=scan mib=%" PRIu64 " first_pps=%" PRIu64 " clean_pps=%" PRIu64
	       " dirty1pct_pps=%" PRIu64 " tracker=%s"
	       " first_ns_per_page=%.1f clean_ns_per_page=%.1f dirty1pct_ns_per_page=%.1f"
	       " first_hashed=%" PRIu64 " clean_hashed=%" PRIu64 " dirty1pct_hashed=%" PRIu64
	       " est_ok=%d\n",
	       mib, pass_pps(&first), pass_pps(&clean), pass_pps(&dirty),
	       tracker_name(st.dirty_tracker), pass_ns_per_page(&first),
	       pass_ns_per_page(&clean), pass_ns_per_page(&dirty), first.hashed, clean.hashed,
	       dirty.hashed, est_ok ? 1 : 0);

	ret = ksmu_unregister(mem, len);
	if (ret < 0)
		fprintf(stderr, "%s: ksmu_unregister failed: %s\n", prog, strerror(-ret));
	munmap(mem, len);
	return 0;
}
