/* Description: kernel feature probe: argument checks, caching, internal
 * consistency of the flags, cross-checks against the truth read
 * independently from /proc and /sys, freedom from side effects (no
 * descriptor or mapping left behind), ksmu_probe_uffd_open(), and both
 * renderings of ksmu_probe_describe() including -ENOSPC.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "compat.h"
#include "probe.h"
#include "test.h"
#include "util.h"

#define PSZ 4096UL

static const char *const json_keys[] = {
	"kernel_major", "kernel_minor", "page_size", "userfaultfd", "uffd_features",
	"uffd_wp", "uffd_wp_async", "uffd_wp_unpopulated", "uffd_move", "uffd_events",
	"pagemap_scan", "pagemap_pfn", "soft_dirty", "process_madvise", "kernel_ksm",
	"numa_nodes", "max_map_count", "thp_mode",
};

static int count_fds(void)
{
	struct dirent *de;
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	if (!d)
		return -1;
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n; /* includes the directory's own descriptor, before and after */
}

/* Lines of /proc/self/maps, read with a static buffer: no heap growth. */
static int count_maps(void)
{
	static char buf[65536];
	ssize_t r;
	int fd, n = 0;

	fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	while ((r = read(fd, buf, sizeof(buf))) > 0)
		for (ssize_t i = 0; i < r; i++)
			n += buf[i] == '\n';
	close(fd);
	return n;
}

static int read_file(const char *path, char *buf, size_t len)
{
	FILE *fp = fopen(path, "r");
	size_t n;

	if (!fp)
		return -1;
	n = fread(buf, 1, len - 1, fp);
	buf[n] = '\0';
	fclose(fp);
	return (int)n;
}

/* The mode in brackets, by a different method than probe.c's. */
static int thp_truth(void)
{
	char buf[128];

	if (read_file("/sys/kernel/mm/transparent_hugepage/enabled", buf, sizeof(buf)) <= 0)
		return -1;
	if (strstr(buf, "[always]"))
		return 2;
	if (strstr(buf, "[madvise]"))
		return 1;
	if (strstr(buf, "[never]"))
		return 0;
	return -1;
}

static int node_dirs(void)
{
	struct dirent *de;
	DIR *d = opendir("/sys/devices/system/node");
	int n = 0;

	if (!d)
		return -1;
	while ((de = readdir(d)))
		if (!strncmp(de->d_name, "node", 4) && de->d_name[4] >= '0' && de->d_name[4] <= '9')
			n++;
	closedir(d);
	return n;
}

/* pagemap entry of a fresh written page; 0 on success. */
static int fresh_page_entry(uint64_t *ent)
{
	char *p = mmap(NULL, PSZ, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int fd, ret = -1;

	if (p == MAP_FAILED)
		return -1;
	p[0] = 1;
	fd = open("/proc/self/pagemap", O_RDONLY);
	if (fd >= 0) {
		if (pread(fd, ent, 8, (off_t)((uintptr_t)p / PSZ) * 8) == 8)
			ret = 0;
		close(fd);
	}
	munmap(p, PSZ);
	return ret;
}

/* Does PAGEMAP_SCAN exist?  Asked with a valid, empty-range-free argument. */
static int pagemap_scan_truth(void)
{
	struct page_region v[1];
	struct pm_scan_arg a;
	char *p = mmap(NULL, PSZ, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int fd, r = -1;

	if (p == MAP_FAILED)
		return -1;
	p[0] = 1;
	memset(&a, 0, sizeof(a));
	a.size = sizeof(a);
	a.start = (uintptr_t)p;
	a.end = (uintptr_t)p + PSZ;
	a.vec = (uintptr_t)v;
	a.vec_len = 1;
	a.category_mask = a.return_mask = PAGE_IS_PRESENT;
	fd = open("/proc/self/pagemap", O_RDONLY);
	if (fd >= 0) {
		r = ioctl(fd, PAGEMAP_SCAN, &a) == 1;
		close(fd);
	}
	munmap(p, PSZ);
	return r;
}

static int process_madvise_truth(void)
{
	char *p = mmap(NULL, PSZ, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct iovec iov = { .iov_base = p, .iov_len = PSZ };
	int pidfd, ok = 0;

	if (p == MAP_FAILED)
		return 0;
	p[0] = 1;
	pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
	if (pidfd >= 0) {
		ok = syscall(SYS_process_madvise, pidfd, &iov, 1, 20 /* MADV_COLD */, 0) == (long)PSZ;
		close(pidfd);
	}
	munmap(p, PSZ);
	return ok;
}

/*
 * The premise of exact dirty tracking at a larger scale than the probe:
 * 16 pages, 2 written after protection, exactly those 2 reported.
 */
static void check_wp_async_16(void)
{
	enum { N = 16 };
	struct page_region v[N];
	struct uffdio_register reg;
	struct pm_scan_arg a;
	char *p;
	int uffd, pm;
	long n;

	uffd = ksmu_probe_uffd_open(UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED, NULL);
	CHECK("uffd with WP_ASYNC opens", uffd >= 0);
	if (uffd < 0)
		return;
	p = mmap(NULL, N * PSZ, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK("mmap 16 pages", p != MAP_FAILED);
	if (p == MAP_FAILED)
		goto out_close;
	memset(p, 7, N * PSZ);
	memset(&reg, 0, sizeof(reg));
	reg.range.start = (uintptr_t)p;
	reg.range.len = N * PSZ;
	reg.mode = UFFDIO_REGISTER_MODE_WP;
	CHECK("register 16 pages WP", ioctl(uffd, UFFDIO_REGISTER, &reg) == 0);
	pm = open("/proc/self/pagemap", O_RDONLY);
	CHECK("open pagemap", pm >= 0);
	if (pm < 0)
		goto out_unmap;
	memset(&a, 0, sizeof(a));
	a.size = sizeof(a);
	a.flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC;
	a.start = (uintptr_t)p;
	a.end = (uintptr_t)p + N * PSZ;
	a.vec = (uintptr_t)v;
	a.vec_len = N;
	a.category_mask = a.return_mask = PAGE_IS_WRITTEN;
	n = ioctl(pm, PAGEMAP_SCAN, &a);
	CHECK("first scan reports all present pages written", n == 1 && v[0].start == (uintptr_t)p &&
	      v[0].end == (uintptr_t)p + N * PSZ);
	if (n < 0)
		goto out_pm;
	p[3 * PSZ + 100] = 1;
	p[9 * PSZ] = 2;
	n = ioctl(pm, PAGEMAP_SCAN, &a);
	CHECK_RET("second scan: two regions", n, 2);
	if (n == 2) {
		CHECK("region 1 is page 3", v[0].start == (uintptr_t)p + 3 * PSZ &&
		      v[0].end == (uintptr_t)p + 4 * PSZ);
		CHECK("region 2 is page 9", v[1].start == (uintptr_t)p + 9 * PSZ &&
		      v[1].end == (uintptr_t)p + 10 * PSZ);
	}
	CHECK_RET("third scan: nothing written", ioctl(pm, PAGEMAP_SCAN, &a), 0);
	CHECK("data intact", p[3 * PSZ + 100] == 1 && p[9 * PSZ] == 2 && p[0] == 7);
out_pm:
	close(pm);
out_unmap:
	munmap(p, N * PSZ);
out_close:
	close(uffd);
}

static void check_uffd_open(const struct ksmu_features *f)
{
	uint64_t got = 0;
	int fds = count_fds();
	int fd;

	fd = ksmu_probe_uffd_open(0, &got);
	if (!f->userfaultfd) {
		CHECK("no userfaultfd: open fails with -errno", fd < 0);
		CHECK_RET("no userfaultfd: no descriptor left", count_fds(), fds);
		return;
	}
	CHECK("uffd opens", fd >= 0);
	if (fd < 0)
		return;
	CHECK("offered mask same as probed", got == f->uffd_features);
	CHECK("O_CLOEXEC", fcntl(fd, F_GETFD) & FD_CLOEXEC);
	CHECK("O_NONBLOCK", fcntl(fd, F_GETFL) & O_NONBLOCK);
	close(fd);

	fd = ksmu_probe_uffd_open(0, NULL);
	CHECK("got_features may be NULL", fd >= 0);
	if (fd >= 0)
		close(fd);

	CHECK_RET("unknown feature bit refused", ksmu_probe_uffd_open(UINT64_C(1) << 63, &got), -EINVAL);
	CHECK_RET("no descriptor left by uffd_open", count_fds(), fds);
}

static void check_describe(const struct ksmu_features *f)
{
	static char buf[8192];
	struct ksmu_features z;
	char small[16], key[64];
	int n, lines = 0;
	size_t i;

	CHECK_RET("describe NULL features", ksmu_probe_describe(NULL, buf, sizeof(buf), 0), -EINVAL);
	CHECK_RET("describe NULL buffer", ksmu_probe_describe(f, NULL, 10, 0), -EINVAL);
	CHECK_RET("describe len 0", ksmu_probe_describe(f, buf, 0, 0), -ENOSPC);
	memset(small, 'x', sizeof(small));
	CHECK_RET("describe small buffer", ksmu_probe_describe(f, small, sizeof(small), 0), -ENOSPC);
	CHECK("small buffer left empty", small[0] == '\0');
	CHECK_RET("json small buffer", ksmu_probe_describe(f, small, sizeof(small), 1), -ENOSPC);

	/* words */
	n = ksmu_probe_describe(f, buf, sizeof(buf), 0);
	CHECK("text renders", n > 0 && (size_t)n == strlen(buf));
	for (i = 0; i < (size_t)(n > 0 ? n : 0); i++)
		lines += buf[i] == '\n';
	CHECK_RET("one line per feature", lines, 16);
	CHECK("mentions userfaultfd", strstr(buf, "userfaultfd:"));
	CHECK("async WP line agrees",
	      !!strstr(buf, "async write-protect:     yes (exact dirty tracking") == !!f->uffd_wp_async);
	if (n > 0) {
		/* exact fit and one byte short */
		static char fit[8192];

		CHECK_RET("exact fit", ksmu_probe_describe(f, fit, (size_t)n + 1, 0), n);
		CHECK("exact fit same text", !strcmp(fit, buf));
		CHECK_RET("one byte short", ksmu_probe_describe(f, fit, (size_t)n, 0), -ENOSPC);
	}

	/* JSON */
	n = ksmu_probe_describe(f, buf, sizeof(buf), 1);
	CHECK("json renders", n > 0 && (size_t)n == strlen(buf));
	CHECK("json is an object", buf[0] == '{' && n >= 3 && !strcmp(buf + n - 2, "}\n"));
	for (i = 0; i < KSMU_ARRAY_SIZE(json_keys); i++) {
		snprintf(key, sizeof(key), "\"%s\": ", json_keys[i]);
		CHECK(json_keys[i], strstr(buf, key));
	}
	CHECK("size is not a key", !strstr(buf, "\"size\""));
	snprintf(key, sizeof(key), "\"page_size\": %d,", f->page_size);
	CHECK("page_size value", strstr(buf, key));
	CHECK("bool as JSON",
	      strstr(buf, f->kernel_ksm ? "\"kernel_ksm\": true" : "\"kernel_ksm\": false"));

	/* a kernel with nothing: every fallback text */
	memset(&z, 0, sizeof(z));
	z.size = sizeof(z);
	z.page_size = 65536;
	z.numa_nodes = 1;
	z.max_map_count = -1;
	z.thp_mode = -1;
	n = ksmu_probe_describe(&z, buf, sizeof(buf), 0);
	CHECK("fallback text renders", n > 0);
	CHECK("fallback: userfaultfd no", strstr(buf, "userfaultfd:             no ("));
	CHECK("fallback: re-hashing", strstr(buf, "no (falls back to re-hashing every page each pass"));
	CHECK("fallback: page size refused", strstr(buf, "will not start"));
	CHECK("fallback: map count unknown", strstr(buf, "vm.max_map_count:        unknown"));
	CHECK("fallback: thp unknown", strstr(buf, "transparent hugepages:   unknown"));
	n = ksmu_probe_describe(&z, buf, sizeof(buf), 1);
	CHECK("fallback json", n > 0 && strstr(buf, "\"max_map_count\": -1,") &&
	      strstr(buf, "\"thp_mode\": -1\n") && strstr(buf, "\"userfaultfd\": false"));
}

int main(void)
{
	const struct ksmu_features *cached;
	struct ksmu_features a, b;
	struct utsname u;
	unsigned int major = 0, minor = 0;
	uint64_t ent;
	char buf[64];
	int fds0, maps0, fds1, maps1, r;

	CHECK_RET("NULL out", ksmu_probe(NULL), -EINVAL);
	CHECK_RET("sized NULL", ksmu_probe_sized(NULL, sizeof(a)), -EINVAL);
	CHECK_RET("sized 0", ksmu_probe_sized(&a, 0), -EINVAL);
	{
		/* An older, smaller struct: only its prefix is written, size says so. */
		unsigned char small[sizeof(struct ksmu_features) + 8];

		memset(small, 0xee, sizeof(small));
		CHECK_RET("sized prefix", ksmu_probe_sized((struct ksmu_features *)(void *)small, 16), 0);
		CHECK("prefix size reported", ((struct ksmu_features *)(void *)small)->size == 16);
		CHECK("guard untouched", small[16] == 0xee && small[sizeof(small) - 1] == 0xee);
	}

	/* Side effects of the one real probe: counted around the first call. */
	count_fds();
	count_maps();
	fds0 = count_fds();
	maps0 = count_maps();
	errno = 12345;
	CHECK_RET("probe", ksmu_probe(&a), 0);
	CHECK_RET("errno preserved", errno, 12345);
	fds1 = count_fds();
	maps1 = count_maps();
	CHECK("fd count readable", fds0 > 0);
	CHECK_RET("no descriptor left", fds1, fds0);
#if !T_SANITIZED
	/* Sanitizer runtimes map their own shadow memory lazily: count only without them. */
	CHECK_RET("no mapping left", maps1, maps0);
#else
	(void)maps0;
	(void)maps1;
#endif

	memset(&b, 0xa5, sizeof(b));
	CHECK_RET("probe again", ksmu_probe(&b), 0);
	CHECK("identical results", !memcmp(&a, &b, sizeof(a)));
	cached = ksmu_probe_get();
	CHECK("cached pointer stable", cached == ksmu_probe_get());
	CHECK("cached equals copy", !memcmp(cached, &a, sizeof(a)));
	CHECK_RET("size", a.size, sizeof(struct ksmu_features));

	/* internal consistency */
	CHECK_RET("page size", a.page_size, 4096);
	CHECK_RET("page size is sysconf's", a.page_size, sysconf(_SC_PAGESIZE));
	CHECK("numa nodes >= 1", a.numa_nodes >= 1);
	if (!a.userfaultfd)
		CHECK("no uffd: nothing uffd", !a.uffd_features && !a.uffd_wp && !a.uffd_wp_async &&
		      !a.uffd_wp_unpopulated && !a.uffd_move && !a.uffd_events);
	if (a.uffd_wp)
		CHECK("wp offered", a.uffd_features & UFFD_FEATURE_PAGEFAULT_FLAG_WP);
	if (a.uffd_wp_async)
		CHECK("wp_async implies uffd, wp, scan and the bit",
		      a.userfaultfd && a.uffd_wp && a.pagemap_scan &&
		      (a.uffd_features & UFFD_FEATURE_WP_ASYNC));
	CHECK("wp_unpopulated is the bit", a.uffd_wp_unpopulated ==
	      !!(a.uffd_features & UFFD_FEATURE_WP_UNPOPULATED));
	if (a.uffd_move)
		CHECK("move offered", a.userfaultfd && (a.uffd_features & UFFD_FEATURE_MOVE));
	if (a.uffd_events)
		CHECK("events offered", (a.uffd_features & (UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_REMAP |
		      UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP)) ==
		      (UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_REMAP |
		       UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP));
	CHECK("flags are 0 or 1", (unsigned)a.userfaultfd <= 1 && (unsigned)a.uffd_wp <= 1 &&
	      (unsigned)a.uffd_wp_async <= 1 && (unsigned)a.uffd_move <= 1 &&
	      (unsigned)a.uffd_events <= 1 && (unsigned)a.pagemap_scan <= 1 &&
	      (unsigned)a.pagemap_pfn <= 1 && (unsigned)a.soft_dirty <= 1 &&
	      (unsigned)a.process_madvise <= 1 && (unsigned)a.kernel_ksm <= 1);

	/* cross-checks against the truth */
	CHECK("uname", uname(&u) == 0 && sscanf(u.release, "%u.%u", &major, &minor) == 2);
	CHECK_RET("kernel major", a.kernel_major, major);
	CHECK_RET("kernel minor", a.kernel_minor, minor);
	CHECK_RET("kernel_ksm <=> /sys/kernel/mm/ksm", a.kernel_ksm,
		  access("/sys/kernel/mm/ksm", F_OK) == 0);
	if (read_file("/proc/sys/vm/max_map_count", buf, sizeof(buf)) > 0)
		CHECK_RET("max_map_count", a.max_map_count, atoll(buf));
	else
		CHECK_RET("max_map_count unreadable", a.max_map_count, -1);
	CHECK_RET("thp mode", a.thp_mode, thp_truth());
	r = node_dirs();
	if (r > 0)
		CHECK("numa nodes <= node dirs", a.numa_nodes <= r);
	else
		CHECK_RET("no node dirs: one node", a.numa_nodes, 1);
	CHECK_RET("pagemap_scan", a.pagemap_scan, pagemap_scan_truth() == 1);
	if (fresh_page_entry(&ent) == 0) {
		CHECK_RET("soft_dirty is bit 55 of a fresh page", a.soft_dirty, !!(ent & KSMU_PM_SOFT_DIRTY));
		CHECK_RET("pagemap_pfn", a.pagemap_pfn,
			  (ent & KSMU_PM_PRESENT) && (ent & KSMU_PM_PFN_MASK));
		if (geteuid() != 0)
			printf("note: not root, pagemap_pfn=%d\n", a.pagemap_pfn);
	} else {
		CHECK("pagemap unreadable: no pfn, no soft-dirty", !a.pagemap_pfn && !a.soft_dirty);
	}
	CHECK_RET("process_madvise", a.process_madvise, process_madvise_truth());
	if (a.kernel_major > 6 || (a.kernel_major == 6 && a.kernel_minor >= 7))
		if (a.userfaultfd && !a.uffd_wp_async)
			printf("note: kernel %u.%u without async write-protect: checksum fallback\n",
			       a.kernel_major, a.kernel_minor);

	check_uffd_open(&a);
	if (a.uffd_wp_async)
		check_wp_async_16();
	else
		printf("note: no async write-protect, 16-page check skipped\n");
	check_describe(&a);

	return t_exit();
}
