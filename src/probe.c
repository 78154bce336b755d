/* SPDX-License-Identifier: MIT */
/*
 * probe.c - find out, once per process, what the running kernel offers.
 *
 * The engine chooses its dirty tracker, its merge primitive and its limits
 * from struct ksmu_features; `ksmctl check` shows the same struct to people.
 * Every "does the kernel have X" decision of the library is taken here and
 * nowhere else, so that the rest of the code asks a flag instead of handling
 * ENOTTY/EINVAL from a syscall it should not have issued.
 *
 * DESIGN
 *   A feature counts as present only when it was seen to work, not when a
 *   header or a version number says it should (CRIU kerndat.c does the same):
 *   an offered UFFDIO_API bit is necessary, and for the features the engine
 *   depends on the probe exercises them on private scratch memory:
 *     - uffd_wp: a scratch page is registered UFFDIO_REGISTER_MODE_WP;
 *     - uffd_wp_async: 4 scratch pages are registered on a WP_ASYNC uffd,
 *       one PAGEMAP_SCAN (PM_SCAN_WP_MATCHING) protects them, page 2 is
 *       written, a second scan must report exactly page 2 and a third scan
 *       nothing.  This is the whole premise of exact dirty tracking;
 *     - uffd_move: one page is moved into a MISSING-registered page;
 *     - uffd_events: a uffd asking for fork/remap/remove/unmap events opens
 *       (unprivileged, EVENT_FORK is refused with EPERM although offered);
 *     - pagemap_scan, pagemap_pfn, soft_dirty and process_madvise are tried
 *       on one freshly written scratch page.
 *   A probe that fails leaves its flag 0 and logs why at debug level, so
 *   the engine can degrade (checksum tracking, no merge) instead of failing.
 *
 *   The probe runs inside arbitrary host programs (a preloaded copy runs in
 *   QEMU), so it must leave no trace: it touches only anonymous private
 *   mappings it created and unmaps them, closes every descriptor it opened,
 *   allocates nothing on the heap, restores errno, and never writes
 *   /proc/self/clear_refs (that would reset the soft-dirty bits of the whole
 *   process, which CRIU or the host itself may be using).
 *
 * INVARIANTS
 *   - The cached struct is written only inside pthread_once and never after,
 *     so readers need no lock.
 *   - The probing thread never touches a page while it is registered in a
 *     mode that could block it: WP-registered pages are written only after
 *     a PAGEMAP_SCAN with PM_SCAN_CHECK_WPASYNC has proved the range is in
 *     asynchronous mode (the kernel resolves such faults itself), and the
 *     MISSING-registered page of the move test is read only after
 *     UFFDIO_UNREGISTER.  Nobody reads these uffds, so a synchronous fault
 *     would hang the host thread for ever.
 *
 * LOCKING / THREADS
 *   pthread_once serialises the single probe; concurrent first callers wait
 *   for it.  Scratch mappings are private to the probing thread (nobody else
 *   knows their address).  After a fork(2) the child inherits the finished
 *   result, which stays true: the kernel did not change.
 *
 * KERNEL REQUIREMENTS
 *   None: every feature is optional and reported as a flag.  For reference,
 *   userfaultfd 4.3 (WP on anonymous memory 5.7, UFFD_USER_MODE_ONLY 5.11,
 *   /dev/userfaultfd 6.1, WP_UNPOPULATED 6.4, WP_ASYNC 6.7, MOVE 6.8),
 *   PAGEMAP_SCAN 6.7, process_madvise 5.10 (MADV_COLD on it 5.10),
 *   pidfd_open 5.3.  PFNs in pagemap need CAP_SYS_ADMIN; soft-dirty needs
 *   CONFIG_MEM_SOFT_DIRTY.
 */
#define LOG_PREFIX "probe: "

#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <numa.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "compat.h"
#include "log.h"
#include "probe.h"
#include "util.h"

#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00) /* 6.1 */
#endif
#ifndef MADV_COLD
#define MADV_COLD 20 /* 5.4 */
#endif

#define UFFD_EVENTS_WANTED (UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_REMAP | \
			    UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP)

/* Pages of the asynchronous write-protect test, and the one written. */
#define WPA_PAGES 4
#define WPA_WRITTEN 2

static struct ksmu_features probe_cache;
static pthread_once_t probe_once = PTHREAD_ONCE_INIT;

/* ------------------------------------------------------------ helpers */

/*
 * A private anonymous scratch range, NULL with errno set on failure.
 * MADV_NOHUGEPAGE keeps it out of huge pages and, its flags now differing,
 * keeps the kernel from merging it into a neighbouring VMA of the host
 * (with THP "always", a write fault could otherwise allocate a huge page
 * that spans the host's memory).  A kernel without THP refuses the advice
 * with EINVAL, which is harmless.
 */
static void *scratch_map(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return NULL;
	madvise(p, len, MADV_NOHUGEPAGE);
	return p;
}

/* Read a small text file into @buf (NUL-terminated); bytes read or -errno. */
static ssize_t read_text(const char *path, char *buf, size_t len)
{
	ssize_t n;
	int fd, err;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	do {
		n = read(fd, buf, len - 1);
	} while (n < 0 && errno == EINTR);
	if (n < 0) {
		err = -errno;
		close(fd);
		return err;
	}
	close(fd);
	buf[n] = '\0';
	return n;
}

static int read_pagemap_entry(int pagemap_fd, const void *addr, long psize, uint64_t *ent)
{
	off_t off = (off_t)((uintptr_t)addr / (uintptr_t)psize) * (off_t)sizeof(*ent);
	ssize_t n = pread(pagemap_fd, ent, sizeof(*ent), off);

	if (n < 0)
		return -errno;
	return n == sizeof(*ent) ? 0 : -EIO;
}

/*
 * One PAGEMAP_SCAN over [start, end) reporting pages whose categories match
 * @category_mask.  Returns the number of regions written to @vec or -errno;
 * *@walk_end tells how far the kernel got.
 */
static long pagemap_scan(int pagemap_fd, uint64_t flags, const void *start, const void *end,
			 struct page_region *vec, size_t vec_len, uint64_t category_mask,
			 uint64_t *walk_end)
{
	struct pm_scan_arg arg;
	long r;

	memset(&arg, 0, sizeof(arg));
	arg.size = sizeof(arg);
	arg.flags = flags;
	arg.start = (uintptr_t)start;
	arg.end = (uintptr_t)end;
	arg.vec = (uintptr_t)vec;
	arg.vec_len = vec_len;
	arg.category_mask = category_mask;
	arg.return_mask = category_mask;
	r = ioctl(pagemap_fd, PAGEMAP_SCAN, &arg);
	if (r < 0)
		return -errno;
	if (walk_end)
		*walk_end = arg.walk_end;
	return r;
}

/* ------------------------------------------------------------ userfaultfd */

/*
 * Ways to get a userfaultfd, best first.  UFFD_USER_MODE_ONLY comes first
 * because it is what an unprivileged process is allowed when
 * vm.unprivileged_userfaultfd is 0; /dev/userfaultfd last because its
 * permissions are the administrator's choice (root only by default).  See
 * the caution in probe.h about MISSING-mode ranges and USER_MODE_ONLY.
 */
static int uffd_new(int flags, bool user_mode_only_ok)
{
	int fd, devfd, err;

	if (user_mode_only_ok) {
		fd = ksmu_sys_userfaultfd(flags | UFFD_USER_MODE_ONLY);
		if (fd >= 0)
			return fd;
	}
	/* EINVAL: before 5.11 the flag is unknown; EPERM: sysctl forbids. */
	fd = ksmu_sys_userfaultfd(flags);
	if (fd >= 0)
		return fd;
	err = fd;

	devfd = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (devfd < 0)
		return errno == ENOENT ? err : -errno;
	fd = ioctl(devfd, USERFAULTFD_IOC_NEW, flags);
	if (fd < 0)
		fd = -errno;
	close(devfd);
	return fd;
}

static int uffd_open(uint64_t want_features, uint64_t *got_features, bool user_mode_only_ok)
{
	struct uffdio_api api;
	int fd, err;

	fd = uffd_new(O_CLOEXEC | O_NONBLOCK, user_mode_only_ok);
	if (fd < 0)
		return fd;

	memset(&api, 0, sizeof(api));
	api.api = UFFD_API;
	api.features = want_features;
	if (ioctl(fd, UFFDIO_API, &api) < 0) {
		err = -errno;
		goto out_close;
	}
	if (got_features)
		*got_features = api.features;
	return fd;

out_close:
	close(fd);
	return err;
}

int ksmu_probe_uffd_open(uint64_t want_features, uint64_t *got_features)
{
	return uffd_open(want_features, got_features, true);
}

int ksmu_probe_uffd_open_kernel_faults(uint64_t want_features, uint64_t *got_features)
{
	return uffd_open(want_features, got_features, false);
}

static int uffd_register(int uffd, void *addr, size_t len, uint64_t mode)
{
	struct uffdio_register reg;

	memset(&reg, 0, sizeof(reg));
	reg.range.start = (uintptr_t)addr;
	reg.range.len = len;
	reg.mode = mode;
	return ioctl(uffd, UFFDIO_REGISTER, &reg) < 0 ? -errno : 0;
}

/* Register one untouched scratch page for write-protect, nothing more. */
static int probe_uffd_wp(uint64_t offered, long psize)
{
	void *page;
	int uffd, err;

	if (!(offered & UFFD_FEATURE_PAGEFAULT_FLAG_WP))
		return 0;
	uffd = ksmu_probe_uffd_open(UFFD_FEATURE_PAGEFAULT_FLAG_WP, NULL);
	if (uffd < 0) {
		pr_debug("uffd_wp: open: %s", strerror(-uffd));
		return 0;
	}
	page = scratch_map(psize);
	if (!page) {
		err = -errno;
		goto out_close;
	}
	err = uffd_register(uffd, page, psize, UFFDIO_REGISTER_MODE_WP);

	munmap(page, psize);
out_close:
	close(uffd);
	if (err)
		pr_debug("uffd_wp: %s", strerror(-err));
	return err == 0;
}

/*
 * The dirty-tracking premise, tested end to end.  Registration does not
 * protect present pages, so the first scan reports all of them as written
 * (and protects them); after a write to page WPA_WRITTEN the second scan
 * must report exactly that page, and a third scan nothing.
 */
static int probe_uffd_wp_async(uint64_t offered, int pagemap_fd, long psize)
{
	struct page_region vec[WPA_PAGES];
	const uint64_t flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC;
	size_t len = (size_t)WPA_PAGES * psize;
	uint64_t walk_end = 0;
	char *base, *end, *want;
	int uffd, ok = 0;
	long n;

	if (!(offered & UFFD_FEATURE_WP_ASYNC) || pagemap_fd < 0)
		return 0;
	uffd = ksmu_probe_uffd_open(offered & (UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED), NULL);
	if (uffd < 0) {
		pr_debug("uffd_wp_async: open: %s", strerror(-uffd));
		return 0;
	}
	base = scratch_map(len);
	if (!base) {
		pr_debug("uffd_wp_async: mmap: %s", strerror(errno));
		goto out_close;
	}
	end = base + len;
	want = base + (size_t)WPA_WRITTEN * psize;
	memset(base, 0x5a, len);

	n = uffd_register(uffd, base, len, UFFDIO_REGISTER_MODE_WP);
	if (n < 0) {
		pr_debug("uffd_wp_async: register: %s", strerror((int)-n));
		goto out_unmap;
	}
	/*
	 * PM_SCAN_CHECK_WPASYNC makes this scan fail unless the range is in
	 * asynchronous mode; only after it succeeded is writing safe (a
	 * synchronous WP fault would wait for a reader that does not exist).
	 */
	n = pagemap_scan(pagemap_fd, flags, base, end, vec, WPA_PAGES, PAGE_IS_WRITTEN, &walk_end);
	if (n < 0) {
		pr_debug("uffd_wp_async: first scan: %s", strerror((int)-n));
		goto out_unmap;
	}
	pr_debug("uffd_wp_async: first scan: %ld region(s)", n);

	want[0] = 0x42;

	n = pagemap_scan(pagemap_fd, flags, base, end, vec, WPA_PAGES, PAGE_IS_WRITTEN, &walk_end);
	if (n != 1 || vec[0].start != (uintptr_t)want || vec[0].end != (uintptr_t)want + psize ||
	    vec[0].categories != PAGE_IS_WRITTEN || walk_end != (uintptr_t)end) {
		pr_debug("uffd_wp_async: second scan: %ld region(s), not exactly page %d", n,
			 WPA_WRITTEN);
		goto out_unmap;
	}
	n = pagemap_scan(pagemap_fd, flags, base, end, vec, WPA_PAGES, PAGE_IS_WRITTEN, &walk_end);
	if (n != 0) {
		pr_debug("uffd_wp_async: third scan: %ld region(s), want none", n);
		goto out_unmap;
	}
	ok = 1;

out_unmap:
	munmap(base, len);
out_close:
	close(uffd);
	return ok;
}

/*
 * Move one written page into an empty MISSING-registered page, as the merge
 * window will.  The destination is not touched while registered.
 */
static int probe_uffd_move(uint64_t offered, long psize)
{
	struct uffdio_range range;
	struct uffdio_move mv;
	char *src, *dst;
	int uffd, ok = 0, err;

	if (!(offered & UFFD_FEATURE_MOVE))
		return 0;
	uffd = ksmu_probe_uffd_open(UFFD_FEATURE_MOVE, NULL);
	if (uffd < 0) {
		pr_debug("uffd_move: open: %s", strerror(-uffd));
		return 0;
	}
	src = scratch_map(psize);
	if (!src)
		goto out_close;
	dst = scratch_map(psize);
	if (!dst)
		goto out_unmap_src;
	memset(src, 0x6b, psize);

	err = uffd_register(uffd, dst, psize, UFFDIO_REGISTER_MODE_MISSING);
	if (err) {
		pr_debug("uffd_move: register: %s", strerror(-err));
		goto out_unmap_dst;
	}
	memset(&mv, 0, sizeof(mv));
	mv.dst = (uintptr_t)dst;
	mv.src = (uintptr_t)src;
	mv.len = psize;
	if (ioctl(uffd, UFFDIO_MOVE, &mv) < 0 || mv.move != psize) {
		pr_debug("uffd_move: UFFDIO_MOVE: %s, moved %lld", strerror(errno),
			 (long long)mv.move);
		goto out_unmap_dst;
	}
	range.start = (uintptr_t)dst;
	range.len = psize;
	if (ioctl(uffd, UFFDIO_UNREGISTER, &range) < 0) {
		pr_debug("uffd_move: unregister: %s", strerror(errno));
		goto out_unmap_dst;
	}
	ok = dst[0] == 0x6b && dst[psize - 1] == 0x6b;

out_unmap_dst:
	munmap(dst, psize);
out_unmap_src:
	munmap(src, psize);
out_close:
	close(uffd);
	return ok;
}

static void probe_uffd(struct ksmu_features *f, int pagemap_fd)
{
	uint64_t offered = 0;
	int uffd;

	uffd = ksmu_probe_uffd_open(0, &offered);
	if (uffd < 0) {
		pr_debug("userfaultfd: %s", strerror(-uffd));
		return;
	}
	close(uffd);
	f->userfaultfd = 1;
	f->uffd_features = offered;

	f->uffd_wp = probe_uffd_wp(offered, f->page_size);
	f->uffd_wp_unpopulated = !!(offered & UFFD_FEATURE_WP_UNPOPULATED);
	if (f->uffd_wp)
		f->uffd_wp_async = probe_uffd_wp_async(offered, pagemap_fd, f->page_size);
	f->uffd_move = probe_uffd_move(offered, f->page_size);

	if ((offered & UFFD_EVENTS_WANTED) == UFFD_EVENTS_WANTED) {
		uffd = ksmu_probe_uffd_open(UFFD_EVENTS_WANTED, NULL);
		if (uffd >= 0) {
			f->uffd_events = 1;
			close(uffd);
		} else {
			pr_debug("uffd_events: %s", strerror(-uffd));
		}
	}
}

/* ------------------------------------------------------------ pagemap, madvise */

static int probe_process_madvise(void *page, long psize)
{
	struct iovec iov = { .iov_base = page, .iov_len = psize };
	long r;
	int pidfd;

	pidfd = ksmu_sys_pidfd_open(getpid(), 0);
	if (pidfd < 0) {
		pr_debug("process_madvise: pidfd_open: %s", strerror(-pidfd));
		return 0;
	}
	r = ksmu_sys_process_madvise(pidfd, &iov, 1, MADV_COLD, 0);
	close(pidfd);
	if (r < 0)
		pr_debug("process_madvise: %s", strerror((int)-r));
	return r == psize;
}

/* Everything that needs one freshly mapped, written page. */
static void probe_page(struct ksmu_features *f, int pagemap_fd)
{
	struct page_region vec[1];
	uint64_t ent;
	long psize = f->page_size;
	char *page;
	long n;

	page = scratch_map(psize);
	if (!page) {
		pr_debug("scratch mmap: %s", strerror(errno));
		return;
	}
	memset(page, 0x3c, psize);

	if (pagemap_fd >= 0) {
		n = pagemap_scan(pagemap_fd, 0, page, page + psize, vec, 1, PAGE_IS_PRESENT, NULL);
		if (n < 0)
			pr_debug("PAGEMAP_SCAN: %s", strerror((int)-n));
		f->pagemap_scan = n == 1 && vec[0].start == (uintptr_t)page &&
				  vec[0].categories == PAGE_IS_PRESENT;

		n = read_pagemap_entry(pagemap_fd, page, psize, &ent);
		if (n == 0) {
			f->pagemap_pfn = (ent & KSMU_PM_PRESENT) && (ent & KSMU_PM_PFN_MASK);
			/*
			 * A new VMA is soft-dirty as a whole and a write fault
			 * sets the PTE's bit, so bit 55 is clear here only on
			 * a kernel without CONFIG_MEM_SOFT_DIRTY.  clear_refs
			 * is never written: it would reset the bits of the
			 * whole process.
			 */
			f->soft_dirty = !!(ent & KSMU_PM_SOFT_DIRTY);
		} else {
			pr_debug("pagemap read: %s", strerror((int)-n));
		}
	}

	f->process_madvise = probe_process_madvise(page, psize);
	munmap(page, psize);
}

/* ------------------------------------------------------------ sysfs, procfs */

static int probe_thp_mode(void)
{
	static const char *const modes[] = { "never", "madvise", "always" };
	char buf[128];
	const char *open_br, *close_br;
	size_t i;

	if (read_text("/sys/kernel/mm/transparent_hugepage/enabled", buf, sizeof(buf)) < 0)
		return -1;
	open_br = strchr(buf, '[');
	close_br = open_br ? strchr(open_br, ']') : NULL;
	if (!close_br)
		return -1;
	for (i = 0; i < KSMU_ARRAY_SIZE(modes); i++) {
		size_t n = strlen(modes[i]);

		if ((size_t)(close_br - open_br - 1) == n && !strncmp(open_br + 1, modes[i], n))
			return (int)i;
	}
	return -1;
}

static int64_t probe_max_map_count(void)
{
	char buf[32], *end;
	long long v;

	if (read_text("/proc/sys/vm/max_map_count", buf, sizeof(buf)) <= 0)
		return -1;
	errno = 0;
	v = strtoll(buf, &end, 10);
	if (errno || end == buf || v < 0)
		return -1;
	return v;
}

static int probe_numa_nodes(void)
{
	int n;

	if (numa_available() < 0)
		return 1;
	n = numa_num_configured_nodes();
	return n >= 1 ? n : 1;
}

static void probe_kernel_version(struct ksmu_features *f)
{
	struct utsname u;
	unsigned int major, minor;

	if (uname(&u) == 0 && sscanf(u.release, "%u.%u", &major, &minor) == 2) {
		f->kernel_major = major;
		f->kernel_minor = minor;
	}
}

/* ------------------------------------------------------------ entry points */

static void probe_all(struct ksmu_features *f)
{
	long psize = sysconf(_SC_PAGESIZE);
	int pagemap_fd;

	memset(f, 0, sizeof(*f));
	f->size = sizeof(*f);
	f->page_size = psize > 0 ? (int32_t)psize : (int32_t)KSMU_PAGE_SIZE;
	probe_kernel_version(f);

	pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (pagemap_fd < 0) {
		pagemap_fd = -errno;
		pr_debug("/proc/self/pagemap: %s", strerror(-pagemap_fd));
	}

	probe_uffd(f, pagemap_fd);
	probe_page(f, pagemap_fd);
	if (pagemap_fd >= 0)
		close(pagemap_fd);

	f->kernel_ksm = access("/sys/kernel/mm/ksm/run", F_OK) == 0;
	f->numa_nodes = probe_numa_nodes();
	f->max_map_count = probe_max_map_count();
	f->thp_mode = probe_thp_mode();

	pr_debug("kernel %u.%u: uffd %d (features %#llx) wp %d wp_async %d move %d, "
		 "pagemap_scan %d pfn %d soft_dirty %d process_madvise %d",
		 f->kernel_major, f->kernel_minor, f->userfaultfd,
		 (unsigned long long)f->uffd_features, f->uffd_wp, f->uffd_wp_async,
		 f->uffd_move, f->pagemap_scan, f->pagemap_pfn, f->soft_dirty,
		 f->process_madvise);
}

static void probe_run_once(void)
{
	int saved_errno = errno;

	probe_all(&probe_cache);
	errno = saved_errno;
}

const struct ksmu_features *ksmu_probe_get(void)
{
	pthread_once(&probe_once, probe_run_once);
	return &probe_cache;
}

KSMU_API int ksmu_probe_sized(struct ksmu_features *out, size_t size)
{
	struct ksmu_features f;

	if (!out || !size)
		return -EINVAL;
	f = *ksmu_probe_get();
	/* An older caller's smaller struct gets its prefix; size says how much. */
	f.size = (uint32_t)(size < sizeof(f) ? size : sizeof(f));
	memcpy(out, &f, f.size);
	return 0;
}

KSMU_API int ksmu_probe(struct ksmu_features *out)
{
	return ksmu_probe_sized(out, sizeof(*out));
}

/* ------------------------------------------------------------ describe */

struct outbuf {
	char *buf;
	size_t len;
	size_t pos;
	int err;
};

static void __attribute__((format(printf, 2, 3))) out_printf(struct outbuf *o, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (o->err)
		return;
	va_start(ap, fmt);
	n = vsnprintf(o->buf + o->pos, o->len - o->pos, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= o->len - o->pos) {
		o->err = -ENOSPC;
		return;
	}
	o->pos += n;
}

enum field_kind { FK_BOOL, FK_U32, FK_I32, FK_I64, FK_U64 };

/*
 * Every reported field (all of struct ksmu_features but @size), in the
 * order shown.  @yes/@no say what ksmu does with a flag; numeric fields get
 * their words in describe_text().
 */
static const struct feature_field {
	const char *key;   /* JSON key: the struct field's name */
	const char *label; /* words */
	size_t off;
	enum field_kind kind;
	const char *yes;
	const char *no;
} fields[] = {
#define F(name, kind) #name, NULL, offsetof(struct ksmu_features, name), kind, NULL, NULL
#define B(name, label, yes, no) #name, label, offsetof(struct ksmu_features, name), FK_BOOL, yes, no
	{ F(kernel_major, FK_U32) },
	{ F(kernel_minor, FK_U32) },
	{ F(page_size, FK_I32) },
	{ B(userfaultfd, "userfaultfd",
	    "write-protect tracking and the merge window can use it",
	    "dirty tracking falls back to checksums, and pages cannot be merged safely") },
	{ F(uffd_features, FK_U64) },
	{ B(uffd_wp, "uffd write-protect",
	    "writes to tracked pages can be detected",
	    "writes cannot be detected; dirty tracking falls back to checksums") },
	{ B(uffd_wp_async, "async write-protect",
	    "exact dirty tracking: unchanged pages are never re-hashed",
	    "falls back to re-hashing every page each pass, as kernel KSM") },
	{ B(uffd_wp_unpopulated, "WP of unpopulated pages",
	    "a page first read between passes is not mistaken for a written one",
	    "a page first touched between passes counts as written and is re-hashed once") },
	{ B(uffd_move, "UFFDIO_MOVE",
	    "pin-safe merge: a page pinned by O_DIRECT, io_uring or VFIO is detected and left alone",
	    "a pinned page cannot be detected before it is replaced, so merging is unsafe") },
	{ B(uffd_events, "uffd events",
	    "fork, mremap, MADV_DONTNEED and munmap of tracked memory are reported at once",
	    "changes to the tracked memory's layout are noticed only on the next pass") },
	{ B(pagemap_scan, "PAGEMAP_SCAN",
	    "one ioctl per batch finds present and written pages",
	    "pagemap is read entry by entry, 8 bytes per page") },
	{ B(pagemap_pfn, "pagemap PFNs",
	    "merged pages can be verified by frame number",
	    "frame numbers are hidden without CAP_SYS_ADMIN; merges are checked by content only") },
	{ B(soft_dirty, "soft-dirty",
	    "a coarser dirty tracker, usable where async write-protect is missing",
	    "not used; async write-protect or checksums track changes") },
	{ B(process_madvise, "process_madvise",
	    "many ranges are released in one system call",
	    "one madvise() call per range") },
	{ B(kernel_ksm, "kernel KSM",
	    "/sys/kernel/mm/ksm exists: ksmu can be measured against it on this machine",
	    "no kernel KSM to compare ksmu with") },
	{ F(numa_nodes, FK_I32) },
	{ F(max_map_count, FK_I64) },
	{ F(thp_mode, FK_I32) },
#undef F
#undef B
};

/* Signed fields and flags; FK_U64 fields are read with field_u64(). */
static long long field_value(const struct ksmu_features *f, const struct feature_field *d)
{
	const void *p = (const char *)f + d->off;

	switch (d->kind) {
	case FK_U32:
		return *(const uint32_t *)p;
	case FK_I64:
		return *(const int64_t *)p;
	case FK_BOOL:
	case FK_I32:
	default:
		return *(const int32_t *)p;
	}
}

static unsigned long long field_u64(const struct ksmu_features *f, const struct feature_field *d)
{
	return *(const uint64_t *)(const void *)((const char *)f + d->off);
}

static void describe_json(const struct ksmu_features *f, struct outbuf *o)
{
	size_t i;

	out_printf(o, "{\n");
	for (i = 0; i < KSMU_ARRAY_SIZE(fields); i++) {
		const struct feature_field *d = &fields[i];
		const char *sep = i + 1 < KSMU_ARRAY_SIZE(fields) ? "," : "";

		if (d->kind == FK_U64)
			out_printf(o, "  \"%s\": %llu%s\n", d->key, field_u64(f, d), sep);
		else if (d->kind == FK_BOOL)
			out_printf(o, "  \"%s\": %s%s\n", d->key,
				   field_value(f, d) ? "true" : "false", sep);
		else
			out_printf(o, "  \"%s\": %lld%s\n", d->key, field_value(f, d), sep);
	}
	out_printf(o, "}\n");
}

#define LABEL_FMT "%-24s "

static void describe_text(const struct ksmu_features *f, struct outbuf *o)
{
	static const char *const thp[] = { "never", "madvise", "always" };
	size_t i;

	out_printf(o, LABEL_FMT "%u.%u\n", "kernel:", f->kernel_major, f->kernel_minor);
	out_printf(o, LABEL_FMT "%d bytes (%s)\n", "page size:", f->page_size,
		   f->page_size == (int32_t)KSMU_PAGE_SIZE ? "the size ksmu is built for"
		   : "ksmu needs 4096-byte pages: the engine will not start");

	for (i = 0; i < KSMU_ARRAY_SIZE(fields); i++) {
		const struct feature_field *d = &fields[i];
		char label[64];

		if (d->kind != FK_BOOL)
			continue;
		snprintf(label, sizeof(label), "%s:", d->label);
		if (field_value(f, d) && d->off == offsetof(struct ksmu_features, userfaultfd))
			out_printf(o, LABEL_FMT "yes (features %#llx offered; %s)\n", label,
				   (unsigned long long)f->uffd_features, d->yes);
		else
			out_printf(o, LABEL_FMT "%s (%s)\n", label,
				   field_value(f, d) ? "yes" : "no", field_value(f, d) ? d->yes : d->no);
	}

	out_printf(o, LABEL_FMT "%d (%s)\n", "NUMA nodes:", f->numa_nodes,
		   f->numa_nodes > 1 ? "merge_across_nodes=0 keeps merged pages on their node"
		   : "merge_across_nodes makes no difference");
	if (f->max_map_count >= 0)
		out_printf(o, LABEL_FMT "%lld (a merge can add up to 2 mappings; "
			   "ksmu keeps the process below this limit)\n",
			   "vm.max_map_count:", (long long)f->max_map_count);
	else
		out_printf(o, LABEL_FMT "unknown (unreadable; the mapping budget cannot be checked)\n",
			   "vm.max_map_count:");
	if (f->thp_mode >= 0 && f->thp_mode <= 2)
		out_printf(o, LABEL_FMT "%s (%s)\n", "transparent hugepages:", thp[f->thp_mode],
			   f->thp_mode ? "merging a 4 KiB page inside a huge page splits it"
			   : "no huge pages to split");
	else
		out_printf(o, LABEL_FMT "unknown (mode unreadable)\n", "transparent hugepages:");
}

KSMU_API int ksmu_probe_describe(const struct ksmu_features *f, char *buf, size_t len, int json)
{
	struct outbuf o = { .buf = buf, .len = len, .pos = 0, .err = 0 };

	if (!f || !buf)
		return -EINVAL;
	if (!len)
		return -ENOSPC;
	buf[0] = '\0';
	if (json)
		describe_json(f, &o);
	else
		describe_text(f, &o);
	if (o.err) {
		buf[0] = '\0';
		return o.err;
	}
	return (int)o.pos;
}
