/* SPDX-License-Identifier: MIT */
/* Description: the store (memfd of canonical pages): content round trip,
 * contiguous runs, lowest-index first-fit reuse, growth and shrink in steps,
 * -ENOSPC and write failures that change nothing, invalid arguments and the
 * KSMU_BUG_ON on freeing/reading/mapping a free page; punching really gives
 * memory back (st_blocks); random alloc/free of runs against a reference
 * bitmap; and the kernel behaviour the merge design rests on: a store page
 * mapped MAP_PRIVATE reads the store content with the same PFN at every
 * address, is not copied by ksmu_store_map() (no anonymous page), a write
 * copies it at that address only, leaving the store page unchanged; no
 * writable shared mapping of the memfd ever exists. */
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "compat.h"
#include "store.h"
#include "test.h"

#define PG KSMU_PAGE_SIZE
#define STEP KSMU_STORE_STEP_PAGES

static uint64_t rnd_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rnd(void)
{
	rnd_state ^= rnd_state << 13;
	rnd_state ^= rnd_state >> 7;
	rnd_state ^= rnd_state << 17;
	return rnd_state;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Page content derived from a tag: every 8-byte word differs. */
static void fill_page(void *p, uint64_t tag)
{
	uint64_t *w = p;
	size_t i;

	for (i = 0; i < PG / 8; i++)
		w[i] = (tag + 1) * 0x9e3779b97f4a7c15ULL ^ i;
}

static int page_is(const void *p, uint64_t tag)
{
	const uint64_t *w = p;
	size_t i;

	for (i = 0; i < PG / 8; i++)
		if (w[i] != ((tag + 1) * 0x9e3779b97f4a7c15ULL ^ i))
			return 0;
	return 1;
}

static int store_page_is(const struct ksmu_store *s, size_t page, uint64_t tag)
{
	static char buf[4096];

	return ksmu_store_read(s, page, buf) == 0 && page_is(buf, tag);
}

static struct stat fd_stat(int fd)
{
	struct stat st;

	memset(&st, 0, sizeof(st));
	if (fstat(fd, &st) < 0)
		perror("fstat");
	return st;
}

/* The /proc/self/pagemap entry of the page at @addr (0 on error). */
static uint64_t pagemap_entry(const void *addr)
{
	uint64_t e = 0;
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return 0;
	if (pread(fd, &e, sizeof(e), (off_t)((uintptr_t)addr / PG * sizeof(e))) != sizeof(e))
		e = 0;
	close(fd);
	return e;
}

/* A field (in kB) of the smaps entry of the VMA containing @addr, or -1. */
static long smaps_kb(const void *addr, const char *field)
{
	FILE *f = fopen("/proc/self/smaps", "re");
	char line[512];
	int in_vma = 0;
	long val = -1;
	size_t flen = strlen(field);

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;

		/* VMA header "lo-hi perms ..."; field lines ("Rss:") never parse. */
		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2) {
			in_vma = (uintptr_t)addr >= lo && (uintptr_t)addr < hi;
			continue;
		}
		if (in_vma && !strncmp(line, field, flen) && line[flen] == ':') {
			val = strtol(line + flen + 1, NULL, 10);
			break;
		}
	}
	fclose(f);
	return val;
}

/*
 * Mappings of the store memfd in /proc/self/maps: count the private ones
 * and the shared writable ones (there must never be any of the latter).
 */
static void store_mappings(int *private_maps, int *shared_writable)
{
	FILE *f = fopen("/proc/self/maps", "re");
	char line[512];

	*private_maps = *shared_writable = 0;
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		char perms[8] = "";

		if (!strstr(line, "memfd:ksmu-store"))
			continue;
		if (sscanf(line, "%*x-%*x %7s", perms) != 1)
			continue;
		if (perms[3] == 's' && perms[1] == 'w')
			(*shared_writable)++;
		if (perms[3] == 'p')
			(*private_maps)++;
	}
	fclose(f);
}

/*
 * Is [lo, hi) inside one VMA of the store memfd that maps address lo to
 * file offset @off (and so the whole range linearly)?  The VMA may be
 * larger: the kernel merges a new mapping with a neighbour whose file
 * offsets continue it.
 */
static int store_vma_covers(uintptr_t lo, uintptr_t hi, uint64_t off)
{
	FILE *f = fopen("/proc/self/maps", "re");
	char line[512];
	int found = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		unsigned long a, b;
		unsigned long long o;

		if (sscanf(line, "%lx-%lx %*s %llx", &a, &b, &o) == 3 && a <= lo && hi <= b &&
		    o + (lo - a) == off && strstr(line, "memfd:ksmu-store"))
			found = 1;
	}
	fclose(f);
	return found;
}

static void check_no_shared_writable(const char *when)
{
	int priv, shw;

	store_mappings(&priv, &shw);
	CHECK(when, shw == 0);
}

/* ------------------------------------------------------------------ */

static void test_roundtrip(void)
{
	struct ksmu_store s;
	struct ksmu_store_stats st;
	char *buf = malloc(8 * PG), *rd = malloc(PG);
	size_t a = 99, b = 99, i;

	CHECK_RET("init", ksmu_store_init(&s, 4096), 0);
	CHECK("fd open", s.fd >= 0);
	CHECK("cloexec", (fcntl(s.fd, F_GETFD) & FD_CLOEXEC) != 0);
	CHECK("starts empty", fd_stat(s.fd).st_size == 0 && s.size_pages == 0);
	CHECK("sealed against new seals", (fcntl(s.fd, F_GET_SEALS) & F_SEAL_SEAL) != 0);
	CHECK("no write seal can be added", fcntl(s.fd, F_ADD_SEALS, F_SEAL_WRITE) < 0);

	fill_page(buf, 100);
	CHECK_RET("alloc 1", ksmu_store_alloc_run(&s, 1, buf, &a), 0);
	CHECK("first page is 0", a == 0);
	for (i = 0; i < 5; i++)
		fill_page(buf + i * PG, 200 + i);
	CHECK_RET("alloc 5", ksmu_store_alloc_run(&s, 5, buf, &b), 0);
	CHECK("run follows", b == 1);

	CHECK_RET("read", ksmu_store_read(&s, a, rd), 0);
	CHECK("content 1", page_is(rd, 100));
	for (i = 0; i < 5; i++) {
		CHECK("run content", store_page_is(&s, b + i, 200 + i));
		CHECK("run used", ksmu_store_is_used(&s, b + i));
	}
	CHECK("next unused", !ksmu_store_is_used(&s, 6));

	ksmu_store_get_stats(&s, &st);
	CHECK("pages_used", st.pages_used == 6);
	CHECK("file one step", st.file_pages == STEP);
	CHECK("file size", fd_stat(s.fd).st_size == (off_t)(STEP * PG));
	CHECK("allocs", st.allocs == 2 && st.alloc_pages == 6);
	CHECK("grows", st.grows == 1);
	CHECK("metadata 1 bit/page", st.metadata_bytes == STEP / 8);
	CHECK("memory = used pages", fd_stat(s.fd).st_blocks == 6 * (PG / 512));
	check_no_shared_writable("no shared writable map after alloc");

	ksmu_store_destroy(&s);
	CHECK("destroyed", s.fd == -1 && s.used == NULL);
	free(buf);
	free(rd);
}

static void test_first_fit(void)
{
	struct ksmu_store s;
	struct ksmu_store_stats st;
	char *buf = calloc(2000, PG);
	size_t a, b, c, d, x;

	CHECK_RET("init", ksmu_store_init(&s, 4096), 0);
	ksmu_store_alloc_run(&s, 1, buf, &a);
	ksmu_store_alloc_run(&s, 3, buf, &b);
	ksmu_store_alloc_run(&s, 2, buf, &c);
	ksmu_store_alloc_run(&s, 1, buf, &d);
	CHECK("packed", a == 0 && b == 1 && c == 4 && d == 6);

	ksmu_store_free_run(&s, b, 3); /* hole 1..3 */
	CHECK_RET("alloc 2", ksmu_store_alloc_run(&s, 2, buf, &x), 0);
	CHECK("reuses lowest hole", x == 1);
	CHECK_RET("alloc 1", ksmu_store_alloc_run(&s, 1, buf, &x), 0);
	CHECK("fills hole", x == 3);
	CHECK_RET("alloc 2", ksmu_store_alloc_run(&s, 2, buf, &x), 0);
	CHECK("no hole: at the end", x == 7);

	ksmu_store_free_run(&s, 0, 1); /* holes {0}, {3} */
	ksmu_store_free_run(&s, 3, 1);
	CHECK_RET("alloc 2", ksmu_store_alloc_run(&s, 2, buf, &x), 0);
	CHECK("holes of 1 skipped", x == 9);
	CHECK_RET("alloc 1", ksmu_store_alloc_run(&s, 1, buf, &x), 0);
	CHECK("lowest single", x == 0);
	CHECK_RET("alloc 1", ksmu_store_alloc_run(&s, 1, buf, &x), 0);
	CHECK("next single", x == 3);
	CHECK_RET("alloc 1", ksmu_store_alloc_run(&s, 1, buf, &x), 0);
	CHECK("then the end", x == 11);

	/* Growth: a run that does not fit extends the file in steps. */
	CHECK_RET("alloc 600", ksmu_store_alloc_run(&s, 600, buf, &x), 0);
	CHECK("run after the last used page", x == 12);
	ksmu_store_get_stats(&s, &st);
	CHECK("grown to 2 steps", st.file_pages == 2 * STEP && st.grows == 2);
	ksmu_store_free_run(&s, 12, 600);
	ksmu_store_get_stats(&s, &st);
	CHECK("small free tail: no shrink", st.file_pages == 2 * STEP && st.shrinks == 0);
	CHECK_RET("alloc 2000", ksmu_store_alloc_run(&s, 2000, buf, &x), 0);
	CHECK("big run at 12", x == 12);
	ksmu_store_get_stats(&s, &st);
	CHECK("grown to 4 steps", st.file_pages == 4 * STEP);
	ksmu_store_free_run(&s, 12, 2000);
	ksmu_store_get_stats(&s, &st);
	CHECK("shrunk, one step of slack", st.file_pages == 2 * STEP && st.shrinks == 1);
	CHECK("file shrunk", fd_stat(s.fd).st_size == (off_t)(2 * STEP * PG));
	CHECK("bitmap shrunk", st.metadata_bytes == 2 * STEP / 8);
	CHECK("memory = used pages", fd_stat(s.fd).st_blocks == 12 * (PG / 512));

	ksmu_store_destroy(&s);
	free(buf);
}

/* Placed allocation: taken only where free, growth past the end, nothing changed on refusal. */
static void test_alloc_at(void)
{
	struct ksmu_store s;
	struct ksmu_store_stats before, after;
	char *buf = calloc(4, PG);
	size_t a, x;

	fill_page(buf, 41);
	fill_page(buf + PG, 42);
	CHECK_RET("init", ksmu_store_init(&s, 3 * STEP), 0);
	CHECK_RET("alloc 3", ksmu_store_alloc_run(&s, 3, buf, &a), 0);
	CHECK_RET("at a used page", ksmu_store_alloc_at(&s, 2, 1, buf), -EBUSY);
	CHECK_RET("overlapping a used page", ksmu_store_alloc_at(&s, 1, 3, buf), -EBUSY);
	CHECK_RET("right after", ksmu_store_alloc_at(&s, 3, 1, buf + PG), 0);
	CHECK("content at 3", store_page_is(&s, 3, 42));
	CHECK_RET("a gap", ksmu_store_alloc_at(&s, 10, 2, buf), 0);
	CHECK("content at 10, 11", store_page_is(&s, 10, 41) && store_page_is(&s, 11, 42));
	CHECK_RET("first fit fills below the gap", ksmu_store_alloc_run(&s, 1, buf, &x), 0);
	CHECK("at 4", x == 4);
	CHECK_RET("twice", ksmu_store_alloc_at(&s, 11, 1, buf), -EBUSY);

	ksmu_store_get_stats(&s, &before);
	CHECK_RET("past max", ksmu_store_alloc_at(&s, 3 * STEP, 1, buf), -ENOSPC);
	CHECK_RET("reaching past max", ksmu_store_alloc_at(&s, 3 * STEP - 1, 2, buf), -ENOSPC);
	CHECK_RET("n 0", ksmu_store_alloc_at(&s, 20, 0, buf), -EINVAL);
	CHECK_RET("no buffer", ksmu_store_alloc_at(&s, 20, 1, NULL), -EINVAL);
	ksmu_store_get_stats(&s, &after);
	CHECK("refusals change nothing",
	      after.pages_used == before.pages_used && after.file_pages == before.file_pages &&
		  after.allocs == before.allocs);

	/* Beyond the file: it grows to cover the page, in steps. */
	CHECK_RET("beyond the file", ksmu_store_alloc_at(&s, STEP + 5, 1, buf + PG), 0);
	ksmu_store_get_stats(&s, &after);
	CHECK("grown to 2 steps", after.file_pages == 2 * STEP && after.grows == before.grows + 1);
	CHECK("content there", store_page_is(&s, STEP + 5, 42));
	CHECK("used pages", after.pages_used == before.pages_used + 1);
	ksmu_store_free_run(&s, STEP + 5, 1);
	ksmu_store_free_run(&s, 10, 2);
	ksmu_store_free_run(&s, 0, 5);
	ksmu_store_get_stats(&s, &after);
	CHECK("all free again", after.pages_used == 0);
	CHECK("memory returned", fd_stat(s.fd).st_blocks == 0);
	ksmu_store_destroy(&s);
	free(buf);
}

static void test_enospc(void)
{
	struct ksmu_store s;
	struct ksmu_store_stats before, after;
	char *buf = calloc(11, PG);
	size_t x = 77, y;
	struct stat st0, st1;

	memset(buf, 0xa5, 11 * PG);
	CHECK_RET("init max 10", ksmu_store_init(&s, 10), 0);
	CHECK_RET("alloc 6", ksmu_store_alloc_run(&s, 6, buf, &y), 0);
	CHECK("file capped at max", s.size_pages == 10);
	CHECK_RET("alloc 4", ksmu_store_alloc_run(&s, 4, buf, &y), 0);
	CHECK("run 6..9", y == 6);

	ksmu_store_get_stats(&s, &before);
	st0 = fd_stat(s.fd);
	CHECK_RET("full", ksmu_store_alloc_run(&s, 1, buf, &x), -ENOSPC);
	CHECK_RET("n > max", ksmu_store_alloc_run(&s, 11, buf, &x), -ENOSPC);
	CHECK_RET("n huge", ksmu_store_alloc_run(&s, SIZE_MAX, buf, &x), -ENOSPC);
	ksmu_store_free_run(&s, 2, 2);
	CHECK_RET("fragmented", ksmu_store_alloc_run(&s, 3, buf, &x), -ENOSPC);
	CHECK("first untouched", x == 77);
	CHECK_RET("hole fits 2", ksmu_store_alloc_run(&s, 2, buf, &x), 0);
	CHECK("into the hole", x == 2);
	ksmu_store_get_stats(&s, &after);
	st1 = fd_stat(s.fd);
	CHECK("pages unchanged", after.pages_used == before.pages_used);
	CHECK("file unchanged", after.file_pages == 10 && st1.st_size == st0.st_size);
	CHECK("memory unchanged", st1.st_blocks == st0.st_blocks);
	CHECK("allocs: one more", after.allocs == before.allocs + 1);

	ksmu_store_free_run(&s, 0, 10);
	CHECK_RET("all of it", ksmu_store_alloc_run(&s, 10, buf, &x), 0);
	CHECK("at 0", x == 0);
	ksmu_store_destroy(&s);
	free(buf);
}

static void test_invalid(void)
{
	struct ksmu_store s;
	char *buf = calloc(1, PG);
	size_t x;
	void *area;

	CHECK_RET("init NULL", ksmu_store_init(NULL, 10), -EINVAL);
	CHECK_RET("init 0", ksmu_store_init(&s, 0), -EINVAL);
	CHECK("failed init: fd -1", s.fd == -1);
	ksmu_store_destroy(&s); /* safe after a failed init */
	CHECK_RET("init too big", ksmu_store_init(&s, SIZE_MAX), -EINVAL);

	CHECK_RET("init", ksmu_store_init(&s, 100), 0);
	CHECK_RET("n 0", ksmu_store_alloc_run(&s, 0, buf, &x), -EINVAL);
	CHECK_RET("buf NULL", ksmu_store_alloc_run(&s, 1, NULL, &x), -EINVAL);
	CHECK_RET("first NULL", ksmu_store_alloc_run(&s, 1, buf, NULL), -EINVAL);
	CHECK_RET("alloc NULL", ksmu_store_alloc_run(NULL, 1, buf, &x), -EINVAL);
	CHECK_RET("read empty store", ksmu_store_read(&s, 0, buf), -EINVAL);
	CHECK_RET("alloc", ksmu_store_alloc_run(&s, 1, buf, &x), 0);
	CHECK_RET("read NULL buf", ksmu_store_read(&s, x, NULL), -EINVAL);
	CHECK_RET("read beyond file", ksmu_store_read(&s, 100, buf), -EINVAL);
	CHECK_RET("read SIZE_MAX", ksmu_store_read(&s, SIZE_MAX, buf), -EINVAL);

	area = mmap(NULL, 2 * PG, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK("mmap", area != MAP_FAILED);
	CHECK_RET("map n 0", ksmu_store_map(&s, x, 0, area, PROT_READ), -EINVAL);
	CHECK_RET("map misaligned", ksmu_store_map(&s, x, 1, (char *)area + 1, PROT_READ),
		  -EINVAL);
	CHECK_RET("map NULL addr", ksmu_store_map(&s, x, 1, NULL, PROT_READ), -EINVAL);
	CHECK_RET("map beyond file", ksmu_store_map(&s, 100, 1, area, PROT_READ), -EINVAL);
	CHECK_RET("map run beyond file", ksmu_store_map(&s, x, SIZE_MAX, area, PROT_READ), -EINVAL);
	munmap(area, 2 * PG);
	ksmu_store_free_run(&s, 5, 0); /* n == 0 does nothing, even on a free page */
	CHECK("free 0: nothing", ksmu_store_is_used(&s, x) && s.nr_frees == 0);
	CHECK("is_used beyond", !ksmu_store_is_used(&s, SIZE_MAX));

	ksmu_store_destroy(&s);
	ksmu_store_destroy(&s); /* twice is safe */
	CHECK_RET("alloc after destroy", ksmu_store_alloc_run(&s, 1, buf, &x), -EINVAL);
	CHECK_RET("read after destroy", ksmu_store_read(&s, 0, buf), -EINVAL);
	free(buf);
}

/* ---- KSMU_BUG_ON: the operation must abort the process ---- */

enum bug_case { BUG_FREE_NEVER, BUG_DOUBLE_FREE, BUG_FREE_BEYOND, BUG_FREE_PARTLY, BUG_READ_FREE,
		BUG_MAP_FREE };

static int aborts(struct ksmu_store *s, enum bug_case c, void *area)
{
	int status;
	pid_t pid;

	fflush(NULL);
	pid = fork();
	if (pid < 0)
		return 0;
	if (pid == 0) {
		char buf[4096];
		int devnull = open("/dev/null", O_WRONLY);

		if (devnull >= 0)
			dup2(devnull, 2);
		switch (c) {
		case BUG_FREE_NEVER:
			ksmu_store_free_run(s, 7, 1);
			break;
		case BUG_DOUBLE_FREE:
			ksmu_store_free_run(s, 4, 1);
			break;
		case BUG_FREE_BEYOND:
			ksmu_store_free_run(s, s->size_pages, 1);
			break;
		case BUG_FREE_PARTLY:
			ksmu_store_free_run(s, 2, 3); /* 2, 3 used, 4 free */
			break;
		case BUG_READ_FREE:
			ksmu_store_read(s, 4, buf);
			break;
		case BUG_MAP_FREE:
			ksmu_store_map(s, 3, 2, area, PROT_READ);
			break;
		}
		_exit(0);
	}
	if (waitpid(pid, &status, 0) != pid)
		return 0;
	return WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT;
}

static void test_bug_on(void)
{
	struct ksmu_store s;
	char *buf = calloc(4, PG);
	void *area = mmap(NULL, 2 * PG, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	size_t x;

	CHECK_RET("init", ksmu_store_init(&s, 100), 0);
	CHECK_RET("alloc", ksmu_store_alloc_run(&s, 4, buf, &x), 0);
	CHECK_RET("alloc", ksmu_store_alloc_run(&s, 1, buf, &x), 0);
	ksmu_store_free_run(&s, 4, 1); /* 0..3 used, 4 freed, 5.. never used */

	CHECK("free never allocated aborts", aborts(&s, BUG_FREE_NEVER, area));
	CHECK("double free aborts", aborts(&s, BUG_DOUBLE_FREE, area));
	CHECK("free beyond file aborts", aborts(&s, BUG_FREE_BEYOND, area));
	CHECK("free partly free run aborts", aborts(&s, BUG_FREE_PARTLY, area));
	CHECK("read of a free page aborts", aborts(&s, BUG_READ_FREE, area));
	CHECK("map of a free page aborts", aborts(&s, BUG_MAP_FREE, area));
	CHECK("parent's store intact", s.nr_used == 4 && ksmu_store_is_used(&s, 3));

	munmap(area, 2 * PG);
	ksmu_store_destroy(&s);
	free(buf);
}

/* ---- punching returns memory at once ---- */

static void test_punch(void)
{
	struct ksmu_store s;
	struct ksmu_store_stats st;
	char *buf = malloc(256 * PG);
	size_t x, i;
	blkcnt_t b0, b1, b2;

	for (i = 0; i < 256; i++)
		fill_page(buf + i * PG, i);
	CHECK_RET("init", ksmu_store_init(&s, 4096), 0);
	b0 = fd_stat(s.fd).st_blocks;
	CHECK_RET("alloc 256", ksmu_store_alloc_run(&s, 256, buf, &x), 0);
	b1 = fd_stat(s.fd).st_blocks;
	CHECK("256 pages of memory", b1 - b0 == 256 * (blkcnt_t)(PG / 512));

	ksmu_store_free_run(&s, x + 100, 1);
	b2 = fd_stat(s.fd).st_blocks;
	CHECK("one page back", b1 - b2 == (blkcnt_t)(PG / 512));
	CHECK("neighbours kept", store_page_is(&s, x + 99, 99) && store_page_is(&s, x + 101, 101));

	ksmu_store_free_run(&s, x, 100);
	ksmu_store_free_run(&s, x + 101, 155);
	b2 = fd_stat(s.fd).st_blocks;
	CHECK("all memory back", b2 == b0);
	ksmu_store_get_stats(&s, &st);
	CHECK("3 punches", st.holes_punched == 3 && st.punch_errors == 0);
	CHECK("no pages used", st.pages_used == 0);
	ksmu_store_destroy(&s);
	free(buf);
}

/* ---- random runs against a reference bitmap ---- */

#define R_MAX 8192
#define R_ROUNDS 30000

struct live_run {
	size_t first, n;
	uint64_t tag;
};

static size_t ref_lowest_run(const unsigned char *ref, size_t n)
{
	size_t i, len = 0;

	for (i = 0; i < R_MAX; i++) {
		len = ref[i] ? 0 : len + 1;
		if (len == n)
			return i + 1 - n;
	}
	return SIZE_MAX;
}

static void test_random(void)
{
	static unsigned char ref[R_MAX];
	static struct live_run live[R_MAX];
	struct ksmu_store s;
	struct ksmu_store_stats st;
	size_t nlive = 0, ref_used = 0, round, i;
	char *buf = malloc(700 * PG);
	int bad = 0, enospc = 0;
	uint64_t tag = 1;

	CHECK_RET("init", ksmu_store_init(&s, R_MAX), 0);
	for (round = 0; round < R_ROUNDS && !bad; round++) {
		if (nlive == 0 || rnd() % 100 < 55) {
			unsigned int k = (unsigned int)(rnd() % 1000);
			size_t n = k < 900 ? 1 + rnd() % 4 : k < 990 ? 1 + rnd() % 64 : 1 + rnd() % 700;
			size_t want = ref_lowest_run(ref, n), got = SIZE_MAX;
			int r;

			for (i = 0; i < n; i++)
				fill_page(buf + i * PG, tag + i);
			r = ksmu_store_alloc_run(&s, n, buf, &got);
			if (want == SIZE_MAX) {
				CHECK_RET("random: ENOSPC expected", r, -ENOSPC);
				bad |= r != -ENOSPC;
				enospc++;
				continue;
			}
			CHECK_RET("random: alloc", r, 0);
			CHECK("random: lowest first fit", got == want);
			if (r || got != want) {
				fprintf(stderr, "round %zu n %zu got %zu want %zu\n", round, n, got,
					want);
				bad = 1;
				break;
			}
			for (i = 0; i < n; i++)
				ref[got + i] = 1;
			ref_used += n;
			live[nlive].first = got;
			live[nlive].n = n;
			live[nlive].tag = tag;
			nlive++;
			tag += n;
		} else {
			size_t j = (size_t)(rnd() % nlive);
			struct live_run lr = live[j];

			if (!store_page_is(&s, lr.first, lr.tag) ||
			    !store_page_is(&s, lr.first + lr.n - 1, lr.tag + lr.n - 1)) {
				CHECK("random: content kept", 0);
				bad = 1;
				break;
			}
			ksmu_store_free_run(&s, lr.first, lr.n);
			for (i = 0; i < lr.n; i++)
				ref[lr.first + i] = 0;
			ref_used -= lr.n;
			live[j] = live[--nlive];
		}
		if (s.nr_used != ref_used || s.size_pages > R_MAX || s.used_end > s.size_pages ||
		    s.hint > s.used_end) {
			CHECK("random: counters", 0);
			bad = 1;
		}
		if (round % 1000 == 999 || bad) {
			size_t mism = 0;

			for (i = 0; i < R_MAX; i++)
				mism += (size_t)ksmu_store_is_used(&s, i) != ref[i];
			CHECK("random: bitmap equals reference", mism == 0);
			CHECK("random: memory = used pages",
			      fd_stat(s.fd).st_blocks == (blkcnt_t)(ref_used * (PG / 512)));
			CHECK("random: metadata 1 bit/page",
			      ksmu_store_metadata_bytes(&s) == (s.size_pages + 63) / 64 * 8);
			bad |= mism != 0;
		}
	}
	CHECK("random: ENOSPC was reached", enospc > 0);
	ksmu_store_get_stats(&s, &st);
	printf("random: %zu rounds, %" PRIu64 " allocs, %d ENOSPC, %" PRIu64 " grows, %" PRIu64
	       " shrinks, file %" PRIu64 " pages\n",
	       round, st.allocs, enospc, st.grows, st.shrinks, st.file_pages);
	CHECK("random: shrank at least once", st.shrinks > 0);

	while (nlive) {
		nlive--;
		ksmu_store_free_run(&s, live[nlive].first, live[nlive].n);
	}
	ksmu_store_get_stats(&s, &st);
	CHECK("random: all freed", st.pages_used == 0 && st.alloc_pages == st.free_pages);
	CHECK("random: no memory left", fd_stat(s.fd).st_blocks == 0);
	CHECK("random: file back to <= 2 steps", st.file_pages < 2 * STEP);
	CHECK("random: no punch errors", st.punch_errors == 0);
	ksmu_store_destroy(&s);
	free(buf);
}

/* ---- the kernel behaviour merging relies on ---- */

static void test_cow(void)
{
	struct ksmu_store s;
	char *buf = malloc(4 * PG), *rd = malloc(PG);
	volatile char *area;
	size_t p, r, i;
	uint64_t e1, e2, e3;
	int priv, shw, pfns;

	CHECK_RET("init", ksmu_store_init(&s, 4096), 0);
	fill_page(buf, 7);
	CHECK_RET("alloc", ksmu_store_alloc_run(&s, 1, buf, &p), 0);
	for (i = 0; i < 4; i++)
		fill_page(buf + i * PG, 10 + i);
	CHECK_RET("alloc run", ksmu_store_alloc_run(&s, 4, buf, &r), 0);

	/* Eight populated anonymous pages, as the application's would be. */
	area = mmap(NULL, 8 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if ((void *)area == MAP_FAILED) {
		CHECK("mmap", 0);
		return;
	}
	memset((void *)area, 'x', 8 * PG);

	CHECK_RET("map A", ksmu_store_map(&s, p, 1, (void *)area, PROT_READ | PROT_WRITE), 0);
	CHECK_RET("map B", ksmu_store_map(&s, p, 1, (void *)(area + PG), PROT_READ | PROT_WRITE),
		  0);

	/* Before touching: populated by MADV_POPULATE_READ, file pages, no copy. */
	e1 = pagemap_entry((void *)area);
	e2 = pagemap_entry((void *)(area + PG));
	CHECK("A present", (e1 & KSMU_PM_PRESENT) != 0);
	CHECK("B present", (e2 & KSMU_PM_PRESENT) != 0);
	CHECK("A is a file page", (e1 & KSMU_PM_FILE) != 0);
	pfns = (e1 & KSMU_PM_PFN_MASK) != 0;
	if (!pfns)
		printf("PFNs read as 0 (not root?): skipping PFN equality checks\n");
	else
		CHECK("same PFN at both addresses", (e1 & KSMU_PM_PFN_MASK) ==
							    (e2 & KSMU_PM_PFN_MASK));
	/*
	 * No copy: a COW copy is an anonymous page.  (Private_Dirty is no
	 * measure: a shmem page is always dirty, and smaps calls it private
	 * as soon as only one address maps it.)
	 */
	CHECK("mapping did not COW (Anonymous 0)", smaps_kb((void *)area, "Anonymous") == 0);
	CHECK("mapping is resident (Rss 4)", smaps_kb((void *)area, "Rss") == 4);
	CHECK("A reads store content", page_is((const void *)area, 7));
	CHECK("B reads store content", page_is((const void *)(area + PG), 7));

	store_mappings(&priv, &shw);
	CHECK("store mappings are private", priv >= 2);
	CHECK("no shared writable mapping", shw == 0);

	/* A write copies the page at that address only. */
	area[0] = 'W';
	CHECK("A written", area[0] == 'W');
	CHECK("B unchanged", page_is((const void *)(area + PG), 7));
	CHECK("store page unchanged", store_page_is(&s, p, 7));
	e3 = pagemap_entry((void *)area);
	CHECK("A still present", (e3 & KSMU_PM_PRESENT) != 0);
	CHECK("A now anonymous", (e3 & KSMU_PM_FILE) == 0);
	if (pfns) {
		CHECK("A got its own page", (e3 & KSMU_PM_PFN_MASK) != (e1 & KSMU_PM_PFN_MASK));
		CHECK("B keeps the store page", (pagemap_entry((void *)(area + PG)) &
						 KSMU_PM_PFN_MASK) == (e2 & KSMU_PM_PFN_MASK));
	}
	CHECK("A's copy is anonymous", smaps_kb((void *)area, "Anonymous") == 4);

	/* A run: one mmap, one VMA, each page its store page, populated. */
	CHECK_RET("map run", ksmu_store_map(&s, r, 4, (void *)(area + 2 * PG),
					    PROT_READ | PROT_WRITE),
		  0);
	CHECK("one VMA for the run", store_vma_covers((uintptr_t)(area + 2 * PG),
						      (uintptr_t)(area + 6 * PG), (uint64_t)r * PG));
	for (i = 0; i < 4; i++)
		CHECK("run page present", (pagemap_entry((void *)(area + (2 + i) * PG)) &
					   KSMU_PM_PRESENT) != 0);
	CHECK("run not copied", smaps_kb((void *)(area + 2 * PG), "Anonymous") == 0);
	for (i = 0; i < 4; i++)
		CHECK("run content", page_is((const void *)(area + (2 + i) * PG), 10 + i));

	/* Read-only mapping: same page again. */
	CHECK_RET("map RO", ksmu_store_map(&s, p, 1, (void *)(area + 6 * PG), PROT_READ), 0);
	CHECK("RO reads store content", page_is((const void *)(area + 6 * PG), 7));
	if (pfns)
		CHECK("RO same PFN", (pagemap_entry((void *)(area + 6 * PG)) & KSMU_PM_PFN_MASK) ==
					     (e2 & KSMU_PM_PFN_MASK));
	/* PROT_NONE: mapped, nothing to populate. */
	CHECK_RET("map NONE", ksmu_store_map(&s, p, 1, (void *)(area + 7 * PG), PROT_NONE), 0);

	/* The store page's memory is counted once however often it is mapped. */
	CHECK("memory = 5 store pages", fd_stat(s.fd).st_blocks == 5 * (blkcnt_t)(PG / 512));
	check_no_shared_writable("no shared writable mapping after map");
	CHECK_RET("read", ksmu_store_read(&s, p, rd), 0);
	CHECK("store content after all", page_is(rd, 7));

	/* Pages are freed only once nothing maps them (store.c INVARIANTS). */
	munmap((void *)area, 8 * PG);
	ksmu_store_free_run(&s, p, 1);
	ksmu_store_free_run(&s, r, 4);
	CHECK("all memory back", fd_stat(s.fd).st_blocks == 0);
	ksmu_store_destroy(&s);
	free(buf);
	free(rd);
}

/* ---- the descriptor number no longer names the store ---- */

static void test_fd_identity(void)
{
	struct ksmu_store s;
	struct ksmu_store_stats before, after;
	char *buf = calloc(1, PG);
	size_t p, x = 55;
	int orig, other;
	void *area;

	memset(buf, 0x5a, PG);
	CHECK_RET("init", ksmu_store_init(&s, 100), 0);
	CHECK_RET("alloc", ksmu_store_alloc_run(&s, 1, buf, &p), 0);
	orig = dup(s.fd);
	other = memfd_create("not-the-store", MFD_CLOEXEC);
	CHECK("setup", orig >= 0 && other >= 0 && ftruncate(other, 64 * PG) == 0);
	/* An application closed our fd and another file took the number. */
	CHECK("dup2", dup2(other, s.fd) == s.fd);

	ksmu_store_get_stats(&s, &before);
	CHECK_RET("alloc refuses", ksmu_store_alloc_run(&s, 1, buf, &x), -EBADF);
	ksmu_store_get_stats(&s, &after);
	CHECK("nothing changed", x == 55 && after.allocs == before.allocs &&
					 after.pages_used == before.pages_used);
	area = mmap(NULL, PG, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK_RET("map refuses", ksmu_store_map(&s, p, 1, area, PROT_READ), -EBADF);
	munmap(area, PG);
	ksmu_store_free_run(&s, p, 1);
	ksmu_store_get_stats(&s, &after);
	CHECK("punch refused, counted", after.punch_errors == 1 && s.last_punch_error == EBADF);
	CHECK("other file untouched", fd_stat(other).st_blocks == 0 &&
					      fd_stat(other).st_size == (off_t)(64 * PG));

	CHECK("restore", dup2(orig, s.fd) == s.fd);
	CHECK_RET("alloc works again", ksmu_store_alloc_run(&s, 1, buf, &x), 0);
	close(orig);
	close(other);
	ksmu_store_destroy(&s);
	free(buf);
}

/* ---- failures from the kernel change nothing (RLIMIT_FSIZE) ---- */

static void test_write_failure(void)
{
	struct ksmu_store s;
	struct ksmu_store_stats before, after;
	struct rlimit old, lim;
	struct stat st0, st1;
	char *buf = malloc(600 * PG);
	size_t i, x = 55;
	void (*old_xfsz)(int);

	memset(buf, 0x33, 600 * PG);
	CHECK_RET("init", ksmu_store_init(&s, 4096), 0);
	for (i = 0; i < 10; i++)
		CHECK_RET("alloc", ksmu_store_alloc_run(&s, 1, buf, &x), 0);
	ksmu_store_get_stats(&s, &before);
	st0 = fd_stat(s.fd);

	if (getrlimit(RLIMIT_FSIZE, &old) < 0) {
		CHECK("getrlimit", 0);
		return;
	}
	old_xfsz = signal(SIGXFSZ, SIG_IGN);
	lim = old;
	lim.rlim_cur = 12 * PG; /* the file is already 512 pages: writes past 12 fail */
	CHECK("setrlimit", setrlimit(RLIMIT_FSIZE, &lim) == 0);

	x = 55;
	/* Pages 10..13: a short write of 10..11, then EFBIG; must be undone. */
	CHECK_RET("partial write fails", ksmu_store_alloc_run(&s, 4, buf, &x), -EFBIG);
	/* Growth past the limit: ftruncate fails. */
	CHECK_RET("growth fails", ksmu_store_alloc_run(&s, 600, buf, &x), -EFBIG);

	CHECK("restore rlimit", setrlimit(RLIMIT_FSIZE, &old) == 0);
	signal(SIGXFSZ, old_xfsz);

	ksmu_store_get_stats(&s, &after);
	st1 = fd_stat(s.fd);
	CHECK("first untouched", x == 55);
	CHECK("stats unchanged", !memcmp(&before, &after, sizeof(before)));
	CHECK("nothing allocated", !ksmu_store_is_used(&s, 10) && !ksmu_store_is_used(&s, 11));
	CHECK("file size unchanged", st1.st_size == st0.st_size);
	CHECK("partial write punched back", st1.st_blocks == st0.st_blocks);

	CHECK_RET("alloc after", ksmu_store_alloc_run(&s, 4, buf, &x), 0);
	CHECK("at 10", x == 10);
	CHECK_RET("grow after", ksmu_store_alloc_run(&s, 600, buf, &x), 0);
	CHECK("at 14", x == 14);
	ksmu_store_destroy(&s);
	free(buf);
}

/* ---- scale: worst-case search over many holes ---- */

static void test_scale(void)
{
	enum { N = 16384 };
	struct ksmu_store s;
	char *buf = calloc(2, PG);
	size_t i, x, ok = 1;
	double t0, t1, t2, t3;

	memset(buf, 0x11, 2 * PG);
	CHECK_RET("init 4M pages", ksmu_store_init(&s, (size_t)1 << 22), 0);
	t0 = now();
	for (i = 0; i < N && ok; i++)
		ok = ksmu_store_alloc_run(&s, 1, buf, &x) == 0 && x == i;
	t1 = now();
	CHECK("singles packed", ok);
	for (i = 1; i < N; i += 2)
		ksmu_store_free_run(&s, i, 1);
	/*
	 * 8191 one-page holes, then the free last page N-1 (the file is exactly
	 * N pages): a run of 2 must skip all holes and start at N-1, growing
	 * the file by one step.
	 */
	t2 = now();
	CHECK_RET("run of 2", ksmu_store_alloc_run(&s, 2, buf, &x), 0);
	t3 = now();
	CHECK("run of 2 at the end", x == N - 1);
	for (i = 1; i < N - 2 && ok; i += 2)
		ok = ksmu_store_alloc_run(&s, 1, buf, &x) == 0 && x == i;
	CHECK("holes refilled in order", ok);
	printf("scale: %d single allocs %.2f us each (incl. pwrite); run of 2 past 8192 holes "
	       "%.2f us\n",
	       N, (t1 - t0) * 1e6 / N, (t3 - t2) * 1e6);
	ksmu_store_destroy(&s);
	free(buf);
}

int main(void)
{
	struct ksmu_store s;
	int fd;

	fd = memfd_create("ksmu-probe", MFD_CLOEXEC);
	if (fd < 0)
		t_skip("memfd_create not available");
	close(fd);
	if (ksmu_store_init(&s, 1) == 0) {
		check_no_shared_writable("no shared writable mapping after init");
		ksmu_store_destroy(&s);
	}

	test_roundtrip();
	test_first_fit();
	test_alloc_at();
	test_enospc();
	test_invalid();
	test_bug_on();
	test_punch();
	test_random();
	test_cow();
	test_fd_identity();
	test_write_failure();
	test_scale();
	return t_exit();
}
