/* SPDX-License-Identifier: MIT */
/* Description: public API argument checking and knob validation, with the
 * kernel's errors: unaligned/wrapping ranges (-EINVAL), unmapped parts
 * (-ENOMEM, mapped parts still registered), ineligible mappings left out,
 * idempotent registration, splitting by unregister, tunable names and
 * limits (a rejected value changes nothing), stats struct versioning. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ksmu.h"
#include "test.h"

#define PG 4096UL

static struct ksmu_stats st(void)
{
	struct ksmu_stats s;

	memset(&s, 0xa5, sizeof(s));
	CHECK_RET("stats", ksmu_stats(&s), 0);
	return s;
}

static void test_ranges(void)
{
	char *m = mmap(NULL, 16 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *sh = mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	struct ksmu_stats s;
	int fd;
	char *fm;

	CHECK("mmap", m != MAP_FAILED && sh != MAP_FAILED);
	CHECK_RET("unaligned", ksmu_register(m + 1, PG), -EINVAL);
	CHECK_RET("unaligned unreg", ksmu_unregister(m + 100, PG), -EINVAL);
	CHECK_RET("wrap", ksmu_register((void *)(UINTPTR_MAX & ~(PG - 1)), 2 * PG), -EINVAL);
	CHECK_RET("len overflow", ksmu_register(m, SIZE_MAX), -EINVAL);
	CHECK_RET("len 0", ksmu_register(m, 0), 0);
	s = st();
	CHECK("nothing registered", s.regions == 0 && s.pages_tracked == 0);

	/* Unmapped hole in the middle: -ENOMEM, both mapped parts registered. */
	CHECK_RET("punch", munmap(m + 4 * PG, 4 * PG), 0);
	CHECK_RET("hole", ksmu_register(m, 16 * PG), -ENOMEM);
	s = st();
	CHECK("mapped parts registered", s.pages_tracked == 12);
	CHECK_RET("again: idempotent", ksmu_register(m, 4 * PG), 0);
	s = st();
	CHECK("no double count", s.pages_tracked == 12);
	CHECK_RET("unreg hole", ksmu_unregister(m, 16 * PG), -ENOMEM);
	s = st();
	CHECK("all unregistered", s.pages_tracked == 0 && s.regions == 0);

	/* Len rounds up to a page. */
	CHECK_RET("round up", ksmu_register(m, 1), 0);
	s = st();
	CHECK("one page", s.pages_tracked == 1);
	CHECK_RET("unreg", ksmu_unregister(m, PG), 0);

	/* Unregistering the middle keeps both ends. */
	CHECK_RET("reg 8", ksmu_register(m + 8 * PG, 8 * PG), 0);
	CHECK_RET("unreg middle", ksmu_unregister(m + 10 * PG, 2 * PG), 0);
	s = st();
	CHECK("split", s.regions == 2 && s.pages_tracked == 6);
	CHECK_RET("unreg never registered", ksmu_unregister(m, 4 * PG), 0);
	CHECK_RET("unreg rest", ksmu_unregister(m + 8 * PG, 8 * PG), 0);

	/* Shared and file mappings are not eligible: success, nothing tracked. */
	CHECK_RET("shared", ksmu_register(sh, 4 * PG), 0);
	fd = open("/proc/self/exe", O_RDONLY);
	fm = mmap(NULL, PG, PROT_READ, MAP_PRIVATE, fd, 0);
	CHECK("file map", fm != MAP_FAILED);
	CHECK_RET("file", ksmu_register(fm, PG), 0);
	s = st();
	CHECK("ineligible left out", s.pages_tracked == 0 && s.regions == 0);
	munmap(fm, PG);
	close(fd);
	munmap(sh, 4 * PG);
	munmap(m, 16 * PG);
}

static void test_knobs(void)
{
	static const struct {
		const char *name;
		unsigned long bad;
	} bad[] = {
		{ "run", 3 },
		{ "max_page_sharing", 1 },
		{ "max_page_sharing", 0 },
		{ "merge_across_nodes", 2 },
		{ "use_zero_pages", 2 },
		{ "smart_scan", 7 },
		{ "dirty_tracker", 3 },
		{ "pages_to_scan", (unsigned long)UINT_MAX + 1 },
		{ "sleep_millisecs", ULONG_MAX },
	};
	unsigned long v, before;
	struct ksmu_stats s;
	size_t i;

	CHECK_RET("NULL name", ksmu_set_tunable(NULL, 1), -EINVAL);
	CHECK_RET("unknown", ksmu_set_tunable("pages_to_scam", 1), -EINVAL);
	CHECK_RET("read-only counter", ksmu_set_tunable("pages_shared", 1), -EINVAL);
	CHECK_RET("get NULL", ksmu_get_tunable("run", NULL), -EINVAL);
	CHECK_RET("get unknown", ksmu_get_tunable("nope", &v), -EINVAL);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		CHECK_RET("get before", ksmu_get_tunable(bad[i].name, &before), 0);
		CHECK_RET(bad[i].name, ksmu_set_tunable(bad[i].name, bad[i].bad), -EINVAL);
		CHECK_RET("get after", ksmu_get_tunable(bad[i].name, &v), 0);
		CHECK("rejected value changes nothing", v == before);
	}
	/* The kernel's defaults. */
	s = st();
	CHECK("defaults", s.run == 1 && s.pages_to_scan == 100 && s.sleep_millisecs == 20 &&
				  s.max_page_sharing == 256 && s.merge_across_nodes == 1 &&
				  s.use_zero_pages == 0 &&
				  s.stable_node_chains_prune_millisecs == 2000 && s.smart_scan == 1);
	CHECK_RET("set pts", ksmu_set_tunable("pages_to_scan", 5000), 0);
	CHECK_RET("set sleep", ksmu_set_tunable("sleep_millisecs", 0), 0);
	CHECK_RET("set mps", ksmu_set_tunable("max_page_sharing", 2), 0);
	CHECK_RET("set uzp", ksmu_set_tunable("use_zero_pages", 1), 0);
	CHECK_RET("set prune", ksmu_set_tunable("stable_node_chains_prune_millisecs", UINT_MAX), 0);
	s = st();
	CHECK("applied", s.pages_to_scan == 5000 && s.sleep_millisecs == 0 &&
				 s.max_page_sharing == 2 && s.use_zero_pages == 1 &&
				 s.stable_node_chains_prune_millisecs == UINT_MAX);
	CHECK_RET("get counter", ksmu_get_tunable("full_scans", &v), 0);
	CHECK_RET("run -1", ksmu_set_run(-1), -EINVAL);
	CHECK_RET("run 3", ksmu_set_run(3), -EINVAL);
	CHECK_RET("run 0", ksmu_set_run(0), 0);
	CHECK_RET("get run", ksmu_get_tunable("run", &v), 0);
	CHECK("run is 0", v == 0);
	CHECK_RET("run 2", ksmu_set_run(2), 0);
	CHECK_RET("get run", ksmu_get_tunable("run", &v), 0);
	CHECK("run is 2 (as the kernel shows after unmerge)", v == 2);
	CHECK_RET("run 1", ksmu_set_run(1), 0);
	/* Tracker knob: checksum always works; exact needs the kernel. */
	CHECK_RET("checksum tracker", ksmu_set_tunable("dirty_tracker", 1), 0);
	s = st();
	CHECK("checksum in use", s.dirty_tracker == KSMU_TRACK_CHECKSUM);
	CHECK_RET("auto tracker", ksmu_set_tunable("dirty_tracker", 0), 0);
	CHECK_RET("restore", ksmu_set_tunable("max_page_sharing", 256), 0);
	CHECK_RET("restore", ksmu_set_tunable("use_zero_pages", 0), 0);
}

static void test_stats(void)
{
	struct ksmu_stats s;
	struct ksmu_proc_stats p;
	unsigned char buf[sizeof(struct ksmu_stats) + 16];

	CHECK_RET("stats NULL", ksmu_stats(NULL), -EINVAL);
	CHECK_RET("stats_get NULL", ksmu_stats_get(NULL, sizeof(s)), -EINVAL);
	CHECK_RET("stats_get 0", ksmu_stats_get(&s, 0), -EINVAL);
	CHECK_RET("proc NULL", ksmu_proc_stats(NULL), -EINVAL);
	/* An older, smaller struct: only its prefix is written. */
	memset(buf, 0xee, sizeof(buf));
	CHECK_RET("prefix", ksmu_stats_get((struct ksmu_stats *)(void *)buf, 16), 0);
	CHECK("guard untouched", buf[16] == 0xee && buf[sizeof(buf) - 1] == 0xee);
	/* A newer, bigger struct: the tail the library does not know is left alone. */
	memset(buf, 0xee, sizeof(buf));
	CHECK_RET("bigger", ksmu_stats_get((struct ksmu_stats *)(void *)buf, sizeof(buf)), 0);
	CHECK("tail untouched", buf[sizeof(buf) - 1] == 0xee);
	s = st();
	CHECK("record size", s.rmap_item_size == 32);
	CHECK("nothing merged in 0.1", s.pages_shared == 0 && s.pages_sharing == 0);
	CHECK_RET("proc", ksmu_proc_stats(&p), 0);
	CHECK("not mergeable", p.ksm_mergeable == 0 && p.ksm_merge_any == 0);
	CHECK("version", ksmu_version() == KSMU_VERSION_NUM);
	CHECK("scan_full with nothing registered returns", ksmu_scan_full() >= 0);
}

int main(void)
{
	test_stats();
	test_ranges();
	test_knobs();
	return t_exit();
}
