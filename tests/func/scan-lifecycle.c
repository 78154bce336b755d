/* SPDX-License-Identifier: MIT */
/* Description: the scanner against the application's memory life cycle.
 * MADV_DONTNEED'd pages are forgotten and not faulted back in; munmap,
 * mprotect(PROT_NONE) and re-mmap of registered memory while passes run in
 * another thread never crash the process; a forked child inherits the
 * engine, keeps scanning (its own writes are tracked) and its memory is
 * correct; exit() with the scanner thread running is clean; register and
 * unregister racing the background scanner leave consistent counters. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "datagen.h"
#include "ksmu.h"
#include "t_mem.h"
#include "test.h"

#define PG 4096UL

static struct ksmu_stats st(void)
{
	struct ksmu_stats s;

	CHECK_RET("stats", ksmu_stats(&s), 0);
	return s;
}

/* Mapped in the page table (mincore() would report a store page's cache residency). */
static int present(const void *p)
{
	return t_present(p);
}

static void test_dontneed(void)
{
	struct ksmu_datagen_spec spec = {1024, 16, 0.5, 0.0, 0, 5};
	struct ksmu_stats s0, s1;
	char *m = mmap(NULL, 1024 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int i, back = 0;

	CHECK_RET("fill", ksmu_datagen_fill(m, &spec, NULL), 0);
	CHECK_RET("register", ksmu_register(m, 1024 * PG), 0);
	ksmu_scan_full();
	s0 = st();
	CHECK_RET("dontneed", madvise(m, 256 * PG, MADV_DONTNEED), 0);
	/*
	 * Merged pages are forgotten by the REMOVE event, which the reader
	 * applies when the engine lock is free: wait for it (2 s at most).
	 */
	for (i = 0; i < 2000 && st().rmap_items > s0.rmap_items - 256; i++)
		usleep(1000);
	ksmu_scan_full();
	s1 = st();
	CHECK("zapped pages forgotten", s1.rmap_items == s0.rmap_items - 256);
	for (i = 0; i < 256; i++)
		back += present(m + i * PG) == 1;
	CHECK("scanner did not fault zapped pages back in", back == 0);
	/* MADV_DONTNEED semantics survive merging: dropped pages read as zeros. */
	for (i = 0, back = 0; i < 256; i++)
		back += t_page_is_zero(m + i * PG);
	CHECK("dropped pages read zeros (merged or not)", back == 256);
	CHECK("trees consistent", s1.est_pages_shared + s1.est_pages_sharing + s1.pages_unshared +
					  s1.pages_volatile + s1.est_zero_pages ==
				      s1.rmap_items);
	CHECK_RET("unregister", ksmu_unregister(m, 1024 * PG), 0);
	munmap(m, 1024 * PG);
}

static atomic_int stop_flag;
static char *race_mem;
#define RACE_PAGES 2048

static void *remapper(void *arg)
{
	unsigned long n = 0;

	(void)arg;
	while (!atomic_load(&stop_flag)) {
		size_t off = ((n * 7919) % (RACE_PAGES / 64)) * 64 * PG;
		char *p = race_mem + off;

		switch (n++ % 3) {
		case 0: /* unmap and map back (fresh zero pages, then data) */
			munmap(p, 64 * PG);
			p = mmap(p, 64 * PG, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
			if (p != MAP_FAILED)
				memset(p, (int)(n & 0xff), 64 * PG);
			break;
		case 1: /* make inaccessible, then accessible again */
			mprotect(p, 64 * PG, PROT_NONE);
			sched_yield();
			mprotect(p, 64 * PG, PROT_READ | PROT_WRITE);
			break;
		default:
			madvise(p, 64 * PG, MADV_DONTNEED);
			memset(p, 0x11, 64 * PG);
			break;
		}
	}
	return NULL;
}

static void test_unmap_race(void)
{
	pthread_t th;
	struct ksmu_stats s;
	int i;

	race_mem =
	    mmap(NULL, RACE_PAGES * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	memset(race_mem, 0x22, RACE_PAGES * PG);
	CHECK_RET("register", ksmu_register(race_mem, RACE_PAGES * PG), 0);
	atomic_store(&stop_flag, 0);
	pthread_create(&th, NULL, remapper, NULL);
	for (i = 0; i < 40; i++) {
		int r = ksmu_scan_full();

		if (r <= 0)
			fprintf(stderr, "scan_full during remaps: %d (%s)\n", r, strerror(-r));
		CHECK("pass during remaps", r > 0);
	}
	atomic_store(&stop_flag, 1);
	pthread_join(th, NULL);
	ksmu_scan_full();
	s = st();
	CHECK("counters consistent after races", s.est_pages_shared + s.est_pages_sharing +
							 s.pages_unshared + s.pages_volatile +
							 s.est_zero_pages ==
						     s.rmap_items);
	CHECK_RET("unregister", ksmu_unregister(race_mem, RACE_PAGES * PG), 0);
	s = st();
	CHECK("nothing left", s.rmap_items == 0 && s.pages_unshared == 0 && s.regions == 0);
	munmap(race_mem, RACE_PAGES * PG);
}

static void test_fork(void)
{
	struct ksmu_datagen_spec spec = {2048, 32, 0.5, 0.1, 0, 77};
	struct ksmu_datagen_truth t;
	char *m = mmap(NULL, 2048 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct ksmu_stats s;
	pid_t pid;
	int status = -1;

	CHECK_RET("fill", ksmu_datagen_fill(m, &spec, &t), 0);
	CHECK_RET("register", ksmu_register(m, 2048 * PG), 0);
	ksmu_scan_full();
	CHECK_RET("run", ksmu_set_run(1), 0); /* a scanner thread is running at fork */
	pid = fork();
	if (pid == 0) {
		size_t bad = 0;
		uint64_t id;
		size_t i;
		int fails = 0;

		ksmu_scan_full();
		s = st();
		fails += s.est_pages_sharing != t.pages_sharing;
		if (s.est_pages_sharing != t.pages_sharing)
			fprintf(stderr, "child: est_pages_sharing %llu, want %zu\n",
				(unsigned long long)s.est_pages_sharing, t.pages_sharing);
		fails += s.regions != 1;
		fails += ksmu_datagen_verify(m, &spec, &bad) != 0;
		/* The child's own writes are tracked: break one duplicate. */
		for (i = 0; i < spec.pages; i++)
			if (ksmu_datagen_kind(&spec, i, &id) == KSMU_DATAGEN_COPY)
				break;
		m[i * PG] ^= 1;
		ksmu_scan_full();
		s = st();
		fails += s.est_pages_sharing != t.pages_sharing - 1;
		if (s.est_pages_sharing != t.pages_sharing - 1)
			fprintf(stderr, "child: after a write est_pages_sharing %llu, want %zu\n",
				(unsigned long long)s.est_pages_sharing, t.pages_sharing - 1);
		fails += ksmu_proc_stats(&(struct ksmu_proc_stats){0}) != 0;
		_exit(fails ? 10 + fails : 0);
	}
	CHECK("fork", pid > 0);
	CHECK("waitpid", waitpid(pid, &status, 0) == pid);
	CHECK("child saw a correct, working engine", WIFEXITED(status) && WEXITSTATUS(status) == 0);
	if (!WIFEXITED(status) || WEXITSTATUS(status))
		fprintf(stderr, "child status %#x\n", status);
	/* The parent is not affected by the child's write. */
	ksmu_scan_full();
	s = st();
	CHECK("parent estimate intact", s.est_pages_sharing == t.pages_sharing);
	CHECK_RET("parent data", ksmu_datagen_verify(m, &spec, NULL), 0);
	CHECK_RET("run 0", ksmu_set_run(0), 0);
	CHECK_RET("unregister", ksmu_unregister(m, 2048 * PG), 0);
	munmap(m, 2048 * PG);
}

static void test_exit_with_thread(void)
{
	pid_t pid = fork();
	int status = -1;

	if (pid == 0) {
		char *m = mmap(NULL, 4096 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			       -1, 0);

		memset(m, 7, 4096 * PG);
		ksmu_set_tunable("sleep_millisecs", 0);
		ksmu_set_tunable("pages_to_scan", 1000);
		ksmu_set_run(1);
		ksmu_register(m, 4096 * PG);
		usleep(20000);
		exit(0); /* destructors run while the scanner is busy */
	}
	CHECK("waitpid", waitpid(pid, &status, 0) == pid);
	CHECK("clean exit with scanner running", WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static void test_register_race(void)
{
	char *m = mmap(NULL, 512 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct ksmu_stats s;
	int i;

	memset(m, 3, 512 * PG);
	CHECK_RET("sleep 0", ksmu_set_tunable("sleep_millisecs", 0), 0);
	CHECK_RET("pts", ksmu_set_tunable("pages_to_scan", 50), 0);
	CHECK_RET("run", ksmu_set_run(1), 0);
	for (i = 0; i < 300; i++) {
		size_t a = (size_t)(i * 37) % 400, l = 1 + (size_t)(i * 13) % 100;

		if (ksmu_register(m + a * PG, l * PG) != 0 ||
		    ksmu_unregister(m + ((a + 50) % 400) * PG, 30 * PG) != 0) {
			CHECK("register/unregister under scanning", 0);
			break;
		}
	}
	CHECK_RET("run 0", ksmu_set_run(0), 0);
	CHECK_RET("unregister all", ksmu_unregister(m, 512 * PG), 0);
	s = st();
	CHECK("consistent after race", s.regions == 0 && s.rmap_items == 0 &&
					   s.pages_unshared == 0 && s.est_pages_shared == 0);
	CHECK_RET("sleep back", ksmu_set_tunable("sleep_millisecs", 20), 0);
	munmap(m, 512 * PG);
}

int main(void)
{
	CHECK_RET("run 0", ksmu_set_run(0), 0);
	test_dontneed();
	test_unmap_race();
	test_fork();
	test_exit_with_thread();
	test_register_race();
	return t_exit();
}
