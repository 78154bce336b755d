/* SPDX-License-Identifier: MIT */
/* Description: the engine follows the application's memory life cycle
 * through userfaultfd events.  munmap() of registered memory (without
 * ksmu_unregister) ends its registration; MADV_DONTNEED drops the records of
 * the zapped pages at once, without waiting for a scan; mremap() moves the
 * registration with the memory (duplicates are still found at the new
 * address, nothing is tracked at the old one); a forked child that unmaps
 * registered memory before calling ksmu never blocks (events need a reader
 * thread the child does not have yet) and is tracked again after its first
 * call.  With KSMU_DISABLE=uffd_events (ctest scan-events-off) the same
 * changes are noticed by the next scan instead. */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "datagen.h"
#include "ksmu.h"
#include "test.h"

#define PG 4096UL

static int events_on;

static struct ksmu_stats st(void)
{
	struct ksmu_stats s;

	CHECK_RET("stats", ksmu_stats(&s), 0);
	return s;
}

/*
 * The kernel lets the application's call return once the event is read;
 * the reader applies it a moment later.  Wait (bounded) for that, or, with
 * events off, run the scan that notices the change.
 */
static struct ksmu_stats settle(uint64_t events_before)
{
	struct timespec ts = {0, 1000000};
	struct ksmu_stats s;
	int i;

	if (!events_on) {
		ksmu_scan_full();
		return st();
	}
	for (i = 0; i < 5000; i++) {
		s = st();
		if (s.uffd_events > events_before)
			break;
		nanosleep(&ts, NULL);
	}
	/* One more look: the reader may have been applying several events. */
	nanosleep(&ts, NULL);
	return st();
}

static void test_munmap(void)
{
	char *m = mmap(NULL, 64 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct ksmu_stats s0, s;

	memset(m, 1, 64 * PG);
	CHECK_RET("register", ksmu_register(m, 64 * PG), 0);
	ksmu_scan_full();
	s0 = st();
	CHECK_RET("munmap half", munmap(m + 32 * PG, 32 * PG), 0);
	s = settle(s0.uffd_events);
	if (events_on) {
		CHECK("munmap ends registration", s.pages_tracked == s0.pages_tracked - 32);
		CHECK("event counted", s.uffd_events > s0.uffd_events);
	}
	/* The kept half starts with fresh records (engine.c): a pass re-reads it. */
	ksmu_scan_full();
	s = st();
	CHECK("records of unmapped pages gone", s.rmap_items == s0.rmap_items - 32);
	/* madvise semantics: the unmapped half makes this -ENOMEM, the rest is unregistered. */
	CHECK_RET("unregister all", ksmu_unregister(m, 64 * PG), -ENOMEM);
	munmap(m, 32 * PG);
	s = st();
	CHECK("nothing left", s.rmap_items == 0 && s.regions == 0);
}

static void test_dontneed(void)
{
	char *m = mmap(NULL, 64 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct ksmu_stats s0, s;

	memset(m, 2, 64 * PG);
	CHECK_RET("register", ksmu_register(m, 64 * PG), 0);
	ksmu_scan_full();
	s0 = st();
	CHECK_RET("dontneed", madvise(m, 16 * PG, MADV_DONTNEED), 0);
	s = settle(s0.uffd_events);
	CHECK("zapped records dropped", s.rmap_items == s0.rmap_items - 16);
	CHECK("still registered", s.pages_tracked == s0.pages_tracked);
	if (events_on)
		CHECK("dropped without a scan", s.full_scans == s0.full_scans);
	CHECK_RET("unregister", ksmu_unregister(m, 64 * PG), 0);
	munmap(m, 64 * PG);
}

static void test_mremap(void)
{
	struct ksmu_datagen_spec spec = {2048, 64, 0.5, 0.05, 0, 3};
	struct ksmu_datagen_truth t;
	char *m = mmap(NULL, 2048 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *dst = mmap(NULL, 2048 * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *moved;
	struct ksmu_stats s0, s;

	/*
	 * Detection only: mremap(2) of a range whose pages are merged spans
	 * several VMAs and fails with EFAULT (docs/design-merging.md, 8);
	 * merge-scan.c covers what merging guarantees there.
	 */
	CHECK_RET("dry run", ksmu_set_tunable("dry_run", 1), 0);
	CHECK_RET("fill", ksmu_datagen_fill(m, &spec, &t), 0);
	CHECK_RET("register", ksmu_register(m, 2048 * PG), 0);
	ksmu_scan_full();
	s0 = st();
	CHECK("found before", s0.est_pages_sharing == t.pages_sharing);
	moved = mremap(m, 2048 * PG, 2048 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
	CHECK("mremap", moved == dst);
	s = settle(s0.uffd_events);
	if (!events_on) {
		/* Without events, KSM semantics cannot be kept: the old range is gone. */
		CHECK("old range forgotten", s.rmap_items == 0);
		CHECK_RET("unregister old", ksmu_unregister(m, 2048 * PG), -ENOMEM);
		munmap(moved, 2048 * PG);
		ksmu_set_tunable("dry_run", 0);
		return;
	}
	CHECK("registration moved", s.pages_tracked == s0.pages_tracked && s.regions >= 1);
	ksmu_scan_full();
	s = st();
	CHECK("duplicates found at the new address", s.est_pages_sharing == t.pages_sharing);
	CHECK_RET("data moved intact", ksmu_datagen_verify(moved, &spec, NULL), 0);
	/* Nothing is tracked at the old address any more. */
	CHECK_RET("unregister old (unmapped)", ksmu_unregister(m, 2048 * PG), -ENOMEM);
	s = st();
	CHECK("old unregister changed nothing", s.pages_tracked == s0.pages_tracked);
	CHECK_RET("unregister new", ksmu_unregister(moved, 2048 * PG), 0);
	s = st();
	CHECK("all gone", s.pages_tracked == 0 && s.rmap_items == 0);
	munmap(moved, 2048 * PG);
	CHECK_RET("merging again", ksmu_set_tunable("dry_run", 0), 0);
}

static void test_fork_child_unmap(void)
{
	char *m = mmap(NULL, 256 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	pid_t pid;
	int status = -1;

	memset(m, 3, 256 * PG);
	CHECK_RET("register", ksmu_register(m, 256 * PG), 0);
	ksmu_scan_full();
	pid = fork();
	if (pid == 0) {
		struct ksmu_stats s0, s;
		int fails = 0;

		alarm(20); /* a blocked munmap would hang here: SIGALRM fails the test */
		fails += munmap(m, 64 * PG) != 0; /* before any ksmu call */
		fails += ksmu_stats(&s0) != 0;	  /* restarts tracker and threads */
		fails += munmap(m + 64 * PG, 64 * PG) != 0;
		s = settle(s0.uffd_events);
		if (events_on)
			fails += s.pages_tracked > s0.pages_tracked - 64;
		fails += ksmu_scan_full() < 0;
		_exit(fails);
	}
	CHECK("fork", pid > 0);
	CHECK("waitpid", waitpid(pid, &status, 0) == pid);
	CHECK("child did not block and saw its unmaps",
	      WIFEXITED(status) && WEXITSTATUS(status) == 0);
	if (!WIFEXITED(status) || WEXITSTATUS(status))
		fprintf(stderr, "child status %#x\n", status);
	CHECK_RET("parent unaffected", ksmu_unregister(m, 256 * PG), 0);
	munmap(m, 256 * PG);
}

int main(void)
{
	const char *dis = getenv("KSMU_DISABLE");
	struct ksmu_features f;
	struct ksmu_stats s;

	CHECK_RET("probe", ksmu_probe(&f), 0);
	CHECK_RET("run 0", ksmu_set_run(0), 0);
	s = st();
	if (s.dirty_tracker != KSMU_TRACK_WP_ASYNC || !f.uffd_events)
		t_skip("userfaultfd events with async write-protect not available");
	events_on = !(dis && strstr(dis, "uffd_events"));
	printf("events %s\n", events_on ? "on" : "off (KSMU_DISABLE)");
	test_munmap();
	test_dontneed();
	test_mremap();
	test_fork_child_unmap();
	return t_exit();
}
