/* SPDX-License-Identifier: MIT */
/*
 * cow.c - cow_policy=1: copy-on-write of merged pages in user space, so
 * that the copy is an anonymous page that can be merged again.
 *
 * DESIGN
 *   With the kernel policy (cow_policy=0) a write to a merged page makes
 *   the kernel copy it inside the store mapping (about 15 us, KSM's cost).
 *   The copy then lives in a file-backed VMA, where UFFDIO_MOVE (the only
 *   pin check user space has) refuses it, so it can never be merged again
 *   safely: a page pinned for write there (the O_DIRECT read or io_uring
 *   registration that caused the copy) cannot be told from an idle one.
 *
 *   This policy stops the write before any copy exists.  Store mappings
 *   are registered WP | MINOR on the tracker's second descriptor, cow_fd,
 *   which has synchronous write-protect (uffd.c); a write, from user or
 *   kernel mode (GUP for O_DIRECT, io_uring, vhost waits the same way),
 *   sleeps in the fault handler.  The event reader hands the address to
 *   this worker thread ("ksmu-cow"), which puts an anonymous page with the
 *   same content in place and wakes the writer; the write then lands in
 *   anonymous memory the tracker watches, and the page is re-hashed and can
 *   merge again.  A pin taken by the retried GUP pins the anonymous page,
 *   where the merge window's UFFDIO_MOVE sees it.
 *
 *   One copy, for the page at A (all under the merge windows' exclusion,
 *   so fork() and the LD_PRELOAD shim's munmap/mremap/MAP_FIXED wait):
 *     1. A is still a store mapping (PROCMAP_QUERY), else step 7.
 *     2. Map a fresh anonymous page S, register it MISSING on cow_fd (an
 *        empty MISSING page makes every access wait).  Mark A busy.
 *     3. Copy A's content (process_vm_readv: a dropped page faults MINOR
 *        and the reader answers zeros; an unmapped A fails with EFAULT).
 *     4. mremap(S -> A): atomic under the mmap lock.  A is now anonymous,
 *        empty and MISSING on cow_fd: readers and writers wait.  The
 *        kernel reports the UNMAP of A and the REMAP of S on cow_fd and
 *        waits until they are read; the reader drops both as ours.
 *     5. Under zap_lock, fill A (UFFDIO_COPY, which wakes those waiting on
 *        A): zeros if a drop of A was read since step 2 or is in the zap
 *        set, else the copy.  A drop read after this zaps the anonymous
 *        page: zeros, as it must.  Clear busy.
 *     6. Move A from cow_fd to the tracker (unregister: wakes the rest;
 *        register WP: a fresh registration reports the page written, so
 *        the scanner re-hashes it), wake, and queue a COW event: the
 *        engine drops A's store reference and record (dedup.c).
 *     7. Could not (A no store mapping any more, vm.max_map_count, no
 *        memory): un-protect A on cow_fd and wake; the write goes through
 *        and the kernel copies the page as under policy 0 (counted as
 *        kernel, and the engine takes A out of its node).
 *
 *   Why a drop cannot be lost: a drop of A (MADV_DONTNEED) zaps only after
 *   its REMOVE was read, under zap_lock.  Read before step 4's mremap, it
 *   zapped the store page or nothing, and step 5 fills zeros; read after
 *   step 5 it zaps the filled page; read in between, step 5 sees it (the
 *   reader marks the busy page dropped under zap_lock) or, if step 5 got
 *   the lock first, the drop comes after the fill.  Nobody can read A
 *   between step 4 and step 5: the page is empty and MISSING.
 *
 *   Cost: the writer waits for a synchronous userfaultfd round trip (56-67
 *   us here) plus about ten system calls and two event round trips of the
 *   mremap; measured in benchmarks/bench-cow.c against a KSM page.  VMAs:
 *   the copy is a VMA of its own (+2 inside a store mapping, as the merge
 *   cost), and a re-merge of it replaces it (no growth per cycle).
 *
 * INVARIANTS
 *   - A page handed to the worker is always woken (steps 6 and 7), and
 *     every request is answered: the reader never drops a write fault (a
 *     full queue wakes the writer, who faults again).
 *   - A is replaced only if it is a store mapping at step 1, and while it
 *     is busy no unmerge window runs (ksmu_cow_exclude()).
 *   - Between steps 2 and 6 the worker allocates nothing, logs nothing and
 *     takes no lock but zap_lock and the queue's: the writer may hold the
 *     allocator's lock (neither is ever held by a thread that can fault on
 *     a store page).
 *   - An API call never sees a copy between the writer's wake and step 6
 *     (ksmu_cow_settle()): a write followed by a scan finds the page.
 *
 * LOCKING / THREADS
 *   The worker never takes the engine lock.  cow.excl (held for one copy,
 *   and by unmerge windows) before the merge windows' exclusion, before
 *   zap_lock; the event queue last, after the window is closed.  The queue
 *   of requests has its own mutex, taken by the reader under zap_lock.
 *
 * KERNEL REQUIREMENTS
 *   userfaultfd WP on shmem (UFFD_FEATURE_WP_HUGETLBFS_SHMEM, 5.19) and
 *   MINOR_SHMEM (5.14), UFFDIO_CONTINUE_MODE_WP (6.3), PROCMAP_QUERY
 *   (6.11), and what merging needs.  Without them the kernel policy stays.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define LOG_PREFIX "cow: "
#include "compat.h"
#include "cow.h"
#include "engine.h"
#include "log.h"

#define COW_QUEUE 4096

struct cow_req {
	uintptr_t addr;
	uint64_t t0; /* CLOCK_MONOTONIC ns of the fault's read */
};

static struct {
	pthread_mutex_t lock; /* the queue; @handing */
	pthread_cond_t cond;
	pthread_cond_t handed; /* @handing went false */
	bool handing;	       /* a woken writer's page is not on the tracker yet */
	struct cow_req q[COW_QUEUE];
	size_t head, n;
	pthread_mutex_t excl; /* one copy at a time; unmerge windows */
	uintptr_t busy;	      /* the page being copied (zap_lock; atomic reads) */
	uintptr_t stage;      /* the staged page while it moves (atomic) */
	bool dropped;	      /* zap_lock: a drop of @busy was read */
	bool running;
	int maps_fd;
	pthread_t thread;
	struct ksmu_cow_stats st;
	uint8_t buf[KSMU_PAGE_SIZE] __attribute__((aligned(KSMU_PAGE_SIZE)));
} cow = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .cond = PTHREAD_COND_INITIALIZER,
    .handed = PTHREAD_COND_INITIALIZER,
    .excl = PTHREAD_MUTEX_INITIALIZER,
    .maps_fd = -1,
};

static const uint8_t zeros[KSMU_PAGE_SIZE] __attribute__((aligned(KSMU_PAGE_SIZE)));

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void stat_add(uint64_t *c, uint64_t v)
{
	__atomic_fetch_add(c, v, __ATOMIC_RELAXED);
}

static int uffd_ioctl(int fd, unsigned long req, void *arg)
{
	return ioctl(fd, req, arg) < 0 ? -errno : 0;
}

static void wake(int fd, uintptr_t addr)
{
	struct uffdio_range r = {.start = addr, .len = KSMU_PAGE_SIZE};

	uffd_ioctl(fd, UFFDIO_WAKE, &r);
}

/* Step 7: let the write through to the kernel's copy.  Return: 0 or -errno. */
static int unprotect(int fd, uintptr_t addr)
{
	struct uffdio_writeprotect wp;
	int err, tries = 0;

	do {
		memset(&wp, 0, sizeof(wp));
		wp.range.start = addr;
		wp.range.len = KSMU_PAGE_SIZE;
		wp.mode = 0; /* clear, and wake */
		err = uffd_ioctl(fd, UFFDIO_WRITEPROTECT, &wp);
		if (err == -EAGAIN)
			sched_yield(); /* an event is waiting for the reader */
	} while (err == -EAGAIN && ++tries < 100000);
	return err;
}

static void set_busy(uintptr_t addr, uintptr_t stage)
{
	ksmu_engine_zap_lock(true);
	cow.dropped = false;
	__atomic_store_n(&cow.stage, stage, __ATOMIC_SEQ_CST);
	__atomic_store_n(&cow.busy, addr, __ATOMIC_SEQ_CST);
	ksmu_engine_zap_lock(false);
}

static void clear_busy_locked(void)
{
	__atomic_store_n(&cow.busy, 0, __ATOMIC_SEQ_CST);
	__atomic_store_n(&cow.stage, 0, __ATOMIC_SEQ_CST);
	cow.dropped = false;
}

/* Step 5.  Return: 0 or -errno (A gone: the application unmapped it; EEXIST). */
static int fill(int fd, uintptr_t addr)
{
	struct uffdio_copy cp;
	uint64_t mask;
	bool zero;
	int err;

	for (;;) {
		ksmu_engine_zap_lock(true);
		mask = 0;
		ksmu_engine_zap_test_locked(addr, 1, &mask);
		zero = cow.dropped || mask;
		memset(&cp, 0, sizeof(cp));
		cp.dst = addr;
		cp.src = (uintptr_t)(zero ? zeros : cow.buf);
		cp.len = KSMU_PAGE_SIZE;
		err = uffd_ioctl(fd, UFFDIO_COPY, &cp);
		if (err != -EAGAIN) {
			/* A is anonymous now: no MINOR answer applies to it any more. */
			ksmu_engine_zap_del_locked(addr, addr + KSMU_PAGE_SIZE);
			clear_busy_locked();
			ksmu_engine_zap_lock(false);
			return err;
		}
		/* an event of cow_fd is unread (a drop of A?): let the reader have it */
		ksmu_engine_zap_lock(false);
		sched_yield();
	}
}

/*
 * The fill wakes the writer before step 6 hands its page to the tracker;
 * until then a scan skips the page (a synchronous VMA, reported absent).
 * API calls wait for the hand-over (ksmu_cow_settle()), so that what a
 * caller wrote before its call is tracked when the call looks.
 */
static void set_handing(bool on)
{
	pthread_mutex_lock(&cow.lock);
	cow.handing = on;
	if (!on)
		pthread_cond_broadcast(&cow.handed);
	pthread_mutex_unlock(&cow.lock);
}

static void cow_count_user(uint64_t t0)
{
	uint64_t dt = mono_ns() - t0;
	uint64_t max = __atomic_load_n(&cow.st.ns_max, __ATOMIC_RELAXED);

	stat_add(&cow.st.user, 1);
	stat_add(&cow.st.ns, dt);
	while (dt > max && !__atomic_compare_exchange_n(&cow.st.ns_max, &max, dt, true,
							__ATOMIC_RELAXED, __ATOMIC_RELAXED))
		;
}

/*
 * One write fault at @addr, read at @t0.  Return: 1 copied, 0 let through,
 * -1 skipped.
 */
static int cow_one(struct ksmu_engine *e, uintptr_t addr, uint64_t t0)
{
	const int fd = e->tracker.cow_fd;
	struct uffdio_register reg;
	struct iovec local, remote;
	bool let_through;
	void *s;
	int ret = 0;

	pthread_mutex_lock(&cow.excl);
	ksmu_merge_window_enter();
	/* 1. */
	if (ksmu_merge_memfd_vma(&cow.maps_fd, addr, KSMU_PAGE_SIZE)) {
		ret = -1;
		goto out_through;
	}
	/* 2. */
	s = (void *)syscall(SYS_mmap, NULL, KSMU_PAGE_SIZE, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (s == MAP_FAILED)
		goto out_through;
	memset(&reg, 0, sizeof(reg));
	reg.range.start = (uintptr_t)s;
	reg.range.len = KSMU_PAGE_SIZE;
	reg.mode = UFFDIO_REGISTER_MODE_MISSING;
	if (uffd_ioctl(fd, UFFDIO_REGISTER, &reg)) {
		syscall(SYS_munmap, s, KSMU_PAGE_SIZE);
		goto out_through;
	}
	set_busy(addr, (uintptr_t)s);
	/* 3. */
	local.iov_base = cow.buf;
	local.iov_len = KSMU_PAGE_SIZE;
	remote.iov_base = (void *)addr;
	remote.iov_len = KSMU_PAGE_SIZE;
	if (syscall(SYS_process_vm_readv, getpid(), &local, 1UL, &remote, 1UL, 0UL) !=
	    (long)KSMU_PAGE_SIZE) {
		ksmu_engine_zap_lock(true);
		clear_busy_locked();
		ksmu_engine_zap_lock(false);
		syscall(SYS_munmap, s, KSMU_PAGE_SIZE); /* unregisters it */
		ret = -1;
		goto out_through;
	}
	/* 4. */
	if ((void *)syscall(SYS_mremap, s, KSMU_PAGE_SIZE, KSMU_PAGE_SIZE,
			    MREMAP_MAYMOVE | MREMAP_FIXED, addr) == MAP_FAILED) {
		/*
		 * ENOMEM: vm.max_map_count (checked before anything moves).  A
		 * failure after the destination was unmapped would leave A
		 * empty: then map the copy there instead, MISSING first so
		 * that nobody reads the empty page.
		 */
		if (msync((void *)addr, KSMU_PAGE_SIZE, MS_ASYNC) < 0 && errno == ENOMEM &&
		    (void *)syscall(SYS_mmap, addr, KSMU_PAGE_SIZE, PROT_READ | PROT_WRITE,
				    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != MAP_FAILED) {
			reg.range.start = addr;
			if (uffd_ioctl(fd, UFFDIO_REGISTER, &reg) == 0)
				goto filled_late;
		}
		ksmu_engine_zap_lock(true);
		clear_busy_locked();
		ksmu_engine_zap_lock(false);
		syscall(SYS_munmap, s, KSMU_PAGE_SIZE);
		goto out_through;
	}
	if (0) {
filled_late:
		syscall(SYS_munmap, s, KSMU_PAGE_SIZE);
	}
	/*
	 * Counted and queued before the fill wakes the writer, so that what
	 * the application does next (an API call applies queued events) sees
	 * A as the anonymous page it now is.  Nothing reads A's record for
	 * its content; a scan that reads A waits for the fill (MISSING).
	 */
	cow_count_user(t0);
	ksmu_engine_queue_cow(e, addr, true);
	set_handing(true);
	/*
	 * 5.  A failure means A vanished under us (munmap: ENOENT) or holds a
	 * page already (EEXIST, which nothing but this thread can cause);
	 * step 6 is right, or harmless, in every case.
	 */
	fill(fd, addr);
	/* 6. */
	{
		struct uffdio_range r = {.start = addr, .len = KSMU_PAGE_SIZE};

		uffd_ioctl(fd, UFFDIO_UNREGISTER, &r);
	}
	ksmu_tracker_register(&e->tracker, addr, KSMU_PAGE_SIZE);
	wake(fd, addr);
	set_handing(false);
	ksmu_merge_window_exit();
	pthread_mutex_unlock(&cow.excl);
	return 1;

out_through:
	/* 7. (also for a page that is no store mapping: it must not fault again) */
	let_through = unprotect(fd, addr) == 0 && ret == 0;
	ksmu_merge_window_exit();
	if (let_through) /* (queued outside the window: see LOCKING) */
		ksmu_engine_queue_cow(e, addr, false);
	wake(fd, addr);
	pthread_mutex_unlock(&cow.excl);
	return ret;
}

static void *cow_main(void *arg)
{
	struct ksmu_engine *e = arg;

	for (;;) {
		struct cow_req r;
		int how;

		pthread_mutex_lock(&cow.lock);
		while (!cow.n)
			pthread_cond_wait(&cow.cond, &cow.lock);
		r = cow.q[cow.head];
		cow.head = (cow.head + 1) % COW_QUEUE;
		cow.n--;
		pthread_mutex_unlock(&cow.lock);

		how = cow_one(e, r.addr, r.t0);
		if (how <= 0)
			stat_add(how == 0 ? &cow.st.kernel : &cow.st.skipped, 1);
	}
	return NULL;
}

int ksmu_cow_start(struct ksmu_engine *e)
{
	int err;

	if (cow.running)
		return 0;
	err = ksmu_tracker_open_cow(&e->tracker);
	if (err)
		return err;
	/* PROCMAP_QUERY is what step 1 can afford (no allocation): 6.11. */
	err = ksmu_merge_memfd_vma(&cow.maps_fd, (uintptr_t)cow.buf, KSMU_PAGE_SIZE);
	if (err == -ENOTTY || (err && err != -EINVAL))
		return err == -ENOTTY ? -EOPNOTSUPP : err;
	err = ksmu_engine_start_thread(&cow.thread, cow_main, e, "ksmu-cow");
	if (err)
		return err;
	cow.running = true;
	e->tracker.cow = true;
	/* the reader may be asleep in a poll() without cow_fd */
	ksmu_engine_kick_reader(e);
	return 0;
}

void ksmu_cow_stats(struct ksmu_cow_stats *out)
{
	out->user = __atomic_load_n(&cow.st.user, __ATOMIC_RELAXED);
	out->kernel = __atomic_load_n(&cow.st.kernel, __ATOMIC_RELAXED);
	out->skipped = __atomic_load_n(&cow.st.skipped, __ATOMIC_RELAXED);
	out->ns = __atomic_load_n(&cow.st.ns, __ATOMIC_RELAXED);
	out->ns_max = __atomic_load_n(&cow.st.ns_max, __ATOMIC_RELAXED);
}

void ksmu_cow_request(struct ksmu_engine *e, uintptr_t addr)
{
	bool queued = false;

	pthread_mutex_lock(&cow.lock);
	if (cow.running && cow.n < COW_QUEUE) {
		cow.q[(cow.head + cow.n) % COW_QUEUE] = (struct cow_req){addr, mono_ns()};
		cow.n++;
		queued = true;
		pthread_cond_signal(&cow.cond);
	}
	pthread_mutex_unlock(&cow.lock);
	if (!queued) /* it faults again, and asks again */
		wake(__atomic_load_n(&e->tracker.cow_fd, __ATOMIC_ACQUIRE), addr);
}

void ksmu_cow_settle(void)
{
	if (!__atomic_load_n(&cow.running, __ATOMIC_ACQUIRE))
		return;
	pthread_mutex_lock(&cow.lock);
	while (cow.handing)
		pthread_cond_wait(&cow.handed, &cow.lock);
	pthread_mutex_unlock(&cow.lock);
}

void ksmu_cow_note_remove_locked(uintptr_t start, uintptr_t end)
{
	uintptr_t b = __atomic_load_n(&cow.busy, __ATOMIC_SEQ_CST);

	if (b && start < b + KSMU_PAGE_SIZE && end > b)
		cow.dropped = true;
}

bool ksmu_cow_filling(uintptr_t addr)
{
	return __atomic_load_n(&cow.busy, __ATOMIC_SEQ_CST) == addr;
}

void ksmu_cow_zero_missing(struct ksmu_engine *e, uintptr_t addr)
{
	struct uffdio_zeropage zp;

	memset(&zp, 0, sizeof(zp));
	zp.range.start = addr;
	zp.range.len = KSMU_PAGE_SIZE;
	/* EEXIST: filled meanwhile; any failure: the wake makes it fault again */
	if (uffd_ioctl(__atomic_load_n(&e->tracker.cow_fd, __ATOMIC_ACQUIRE), UFFDIO_ZEROPAGE,
		       &zp))
		wake(__atomic_load_n(&e->tracker.cow_fd, __ATOMIC_ACQUIRE), addr);
}

bool ksmu_cow_own_event(int kind, uintptr_t start, uintptr_t end)
{
	uintptr_t b = __atomic_load_n(&cow.busy, __ATOMIC_SEQ_CST);
	uintptr_t s = __atomic_load_n(&cow.stage, __ATOMIC_SEQ_CST);

	if (kind == KSMU_UFFD_UNMAP)
		return b && start == b && end == b + KSMU_PAGE_SIZE;
	if (kind == KSMU_UFFD_REMAP)
		return s && start == s;
	return false;
}

void ksmu_cow_exclude(bool on)
{
	if (on)
		pthread_mutex_lock(&cow.excl);
	else
		pthread_mutex_unlock(&cow.excl);
}

void ksmu_cow_atfork_child(void)
{
	pthread_mutex_init(&cow.lock, NULL);
	pthread_cond_init(&cow.cond, NULL);
	pthread_cond_init(&cow.handed, NULL);
	pthread_mutex_init(&cow.excl, NULL);
	cow.handing = false;
	cow.n = 0;
	cow.head = 0;
	cow.busy = 0;
	cow.stage = 0;
	cow.dropped = false;
	cow.running = false;
	if (cow.maps_fd >= 0)
		close(cow.maps_fd); /* describes the parent */
	cow.maps_fd = -1;
}
