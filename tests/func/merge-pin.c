/* SPDX-License-Identifier: MIT */
/* Description: the merge window never replaces a page someone else holds.
 * (1) A page registered as an io_uring fixed buffer (a FOLL_LONGTERM pin)
 * whose content duplicates a store page: ksmu_merge_page() returns -EBUSY,
 * the page keeps its PFN, and an IORING_OP_READ_FIXED from a file then
 * lands in the page the application sees (a merge would have orphaned the
 * pinned page and the data with it); a run containing the pinned page
 * fails as a whole with the culprit reported and its other page moved back;
 * after the buffers are unregistered the merge succeeds.  (2) A page
 * COW-shared with a forked child: -EBUSY, both processes keep their
 * content; after the child exits the page stays unmergeable until it is
 * written (or MADV_POPULATE_WRITE, which makes it exclusive without a
 * copy).  (3) O_DIRECT reads (io_uring, pages pinned while in flight) into
 * a run that is merged at the same time: whatever the merge returns, the
 * data read always ends up in the application's pages. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <liburing.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "compat.h"
#include "merge.h"
#include "test.h"
#include "t_mem.h"
#include "t_merge.h"

#define PG 4096UL
#define ODIRECT_PAGES 16
#define ODIRECT_ROUNDS 200


/* An unlinked temporary file on a disk file system holding @pages of @data. */
static int temp_file(const void *data, size_t pages)
{
	char path[] = "/tmp/ksmu-merge-pin-XXXXXX";
	int fd = mkstemp(path);
	size_t i;

	if (fd < 0) {
		perror("mkstemp");
		exit(T_EXIT_FAIL);
	}
	unlink(path);
	for (i = 0; i < pages; i++) {
		if (pwrite(fd, data, PG, (off_t)(i * PG)) != (ssize_t)PG) {
			perror("pwrite");
			exit(T_EXIT_FAIL);
		}
	}
	fsync(fd);
	return fd;
}

static void spin_us(unsigned long us)
{
	struct timespec a, b;

	clock_gettime(CLOCK_MONOTONIC, &a);
	do
		clock_gettime(CLOCK_MONOTONIC, &b);
	while ((unsigned long)((b.tv_sec - a.tv_sec) * 1000000 + (b.tv_nsec - a.tv_nsec) / 1000) <
	       us);
}

static int ring_wait(struct io_uring *ring)
{
	struct io_uring_cqe *cqe;
	int res, err;

	err = io_uring_wait_cqe(ring, &cqe);
	if (err < 0)
		return err;
	res = cqe->res;
	io_uring_cqe_seen(ring, cqe);
	return res;
}

static void test_fixed_buffer(struct ksmu_merger *m)
{
	unsigned char x[PG], z[PG], xx[2 * PG];
	struct io_uring ring;
	struct io_uring_sqe *sqe;
	struct iovec iov;
	char *r = t_map_anon(4), *a;
	int sfd = t_store_new(3), ffd, err;
	uint64_t pfn_a, pfn_p;
	size_t bad = 99;

	printf("-- io_uring fixed buffer (FOLL_LONGTERM pin)\n");
	err = io_uring_queue_init(4, &ring, 0);
	if (err < 0) {
		printf("   SKIP part: io_uring_queue_init: %s\n", strerror(-err));
		goto out;
	}
	t_fill_page(x, 1);
	t_fill_page(z, 2);
	t_store_put(sfd, 0, x);
	t_store_put(sfd, 1, x);
	t_store_put(sfd, 2, z);
	ffd = temp_file(z, 1);
	a = r + PG;
	memcpy(r, x, PG); /* a plain duplicate */
	memcpy(a, x, PG); /* the pinned duplicate */
	memcpy(r + 2 * PG, x, PG);
	iov.iov_base = a;
	iov.iov_len = PG;
	err = io_uring_register_buffers(&ring, &iov, 1);
	if (err < 0) {
		printf("   SKIP part: io_uring_register_buffers: %s\n", strerror(-err));
		goto out_ring;
	}
	pfn_a = t_pfn_of(a);
	pfn_p = t_pfn_of(r);

	CHECK_RET("pinned page", ksmu_merge_page(m, (uintptr_t)a, sfd, 0, x), -EBUSY);
	CHECK("content kept", !memcmp(a, x, PG));
	CHECK("PFN kept", t_pfn_of(a) == pfn_a);
	CHECK("stats busy", m->stats.busy >= 1);

	/* store pages 0 and 1 both hold x: the run r[0..1] -> store 0..1 */
	memcpy(xx, x, PG);
	memcpy(xx + PG, x, PG);
	CHECK_RET("run with the pinned page", ksmu_merge_run(m, (uintptr_t)r, 2, sfd, 0, xx, &bad),
		  -EBUSY);
	CHECK("culprit is the pinned page", bad == 1);
	CHECK("first page moved back", t_pfn_of(r) == pfn_p && !memcmp(r, x, PG));
	CHECK("pinned page kept", t_pfn_of(a) == pfn_a && !memcmp(a, x, PG));

	CHECK_RET("unpinned duplicate merges",
		  ksmu_merge_page(m, (uintptr_t)(r + 2 * PG), sfd, 0, x), 0);

	/* The device writes into the pinned page: the application must see it. */
	sqe = io_uring_get_sqe(&ring);
	io_uring_prep_read_fixed(sqe, ffd, a, PG, 0, 0);
	CHECK("submit", io_uring_submit(&ring) == 1);
	err = ring_wait(&ring);
	CHECK_RET("READ_FIXED", err, (long)PG);
	CHECK("the application sees the data", !memcmp(a, z, PG));
	CHECK("still the pinned page", t_pfn_of(a) == pfn_a);

	CHECK_RET("unregister", io_uring_unregister_buffers(&ring), 0);
	CHECK_RET("merge after unpin", ksmu_merge_page(m, (uintptr_t)a, sfd, 2, z), 0);
	CHECK("content", !memcmp(a, z, PG));
	CHECK("now the store page", t_pfn_of(a) != pfn_a);
	close(ffd);
out_ring:
	io_uring_queue_exit(&ring);
out:
	munmap(r, 4 * PG);
	close(sfd);
}

static void test_fork(struct ksmu_merger *m)
{
	unsigned char x[PG];
	char *r = t_map_anon(2), go = 0;
	int sfd = t_store_new(1), p2c[2], status = -1, ret;
	uint64_t pfn0;
	pid_t pid;

	printf("-- page COW-shared with a forked child\n");
	t_fill_page(x, 3);
	t_store_put(sfd, 0, x);
	memcpy(r, x, PG);
	pfn0 = t_pfn_of(r);
	if (pipe(p2c) < 0) {
		perror("pipe");
		exit(T_EXIT_FAIL);
	}
	pid = fork();
	if (pid == 0) {
		close(p2c[1]);
		if (read(p2c[0], &go, 1) != 1)
			_exit(2);
		_exit(memcmp(r, x, PG) ? 1 : 0);
	}
	close(p2c[0]);
	CHECK_RET("shared with child", ksmu_merge_page(m, (uintptr_t)r, sfd, 0, x), -EBUSY);
	CHECK("parent content", !memcmp(r, x, PG));
	CHECK("parent PFN", t_pfn_of(r) == pfn0);
	CHECK("write go", write(p2c[1], &go, 1) == 1);
	close(p2c[1]);
	CHECK("child exited", waitpid(pid, &status, 0) == pid);
	CHECK("child content", WIFEXITED(status) && WEXITSTATUS(status) == 0);

	ret = ksmu_merge_page(m, (uintptr_t)r, sfd, 0, x);
	printf("   after the child exited: %s (page not exclusive until written)\n",
	       ret ? strerror(-ret) : "merged");
	CHECK("-EBUSY or merged", ret == -EBUSY || ret == 0);
	if (ret == -EBUSY) {
		CHECK_RET("POPULATE_WRITE", madvise(r, PG, MADV_POPULATE_WRITE) ? -errno : 0, 0);
		/*
		 * Usually the kernel reuses the page in place (same PFN), but it
		 * copies when a transient reference (an LRU batch) is held: an
		 * optimisation, not a guarantee, so it is only reported.
		 */
		printf("   MADV_POPULATE_WRITE %s the page\n",
		       t_pfn_of(r) == pfn0 ? "reused" : "copied");
		CHECK_RET("then merges", ksmu_merge_page(m, (uintptr_t)r, sfd, 0, x), 0);
	}
	CHECK("content", !memcmp(r, x, PG));
	munmap(r, 2 * PG);
	close(sfd);
}

static void test_odirect(struct ksmu_merger *m)
{
	const size_t len = ODIRECT_PAGES * PG;
	unsigned char *x = malloc(len), *z = malloc(len);
	unsigned long res[4] = {0}; /* merged, busy, differ, other */
	struct io_uring ring;
	struct io_uring_sqe *sqe;
	size_t i, bad, wrong = 0;
	int sfd, ffd, dfd, err, ret;
	char *r, *run, path[64];

	printf("-- O_DIRECT reads in flight while the run is merged\n");
	err = io_uring_queue_init(4, &ring, 0);
	if (err < 0) {
		printf("   SKIP part: io_uring_queue_init: %s\n", strerror(-err));
		goto out_free;
	}
	for (i = 0; i < ODIRECT_PAGES; i++) {
		t_fill_page(x + i * PG, 10 + i);
		t_fill_page(z + i * PG, 50 + i);
	}
	sfd = t_store_new(ODIRECT_PAGES);
	for (i = 0; i < ODIRECT_PAGES; i++)
		t_store_put(sfd, i, x + i * PG);
	ffd = temp_file(z, 1);
	for (i = 0; i < ODIRECT_PAGES; i++) {
		if (pwrite(ffd, z + i * PG, PG, (off_t)(i * PG)) != (ssize_t)PG)
			exit(T_EXIT_FAIL);
	}
	fsync(ffd);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", ffd);
	dfd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
	if (dfd < 0) {
		printf("   SKIP part: O_DIRECT: %s\n", strerror(errno));
		goto out_close;
	}
	r = t_map_anon(ODIRECT_ROUNDS * ODIRECT_PAGES);
	for (i = 0; i < ODIRECT_ROUNDS; i++) {
		run = r + i * len;
		memcpy(run, x, len);
		/*
		 * Round i % 4 == 0 merges before the read is submitted (the
		 * read's GUP then breaks COW of the store pages); the others
		 * merge after it, at once or after a growing delay, so that
		 * the window meets the I/O before, while and after it pins.
		 */
		ret = 1;
		if (i % 4 == 0)
			ret = ksmu_merge_run(m, (uintptr_t)run, ODIRECT_PAGES, sfd, 0, x, &bad);
		sqe = io_uring_get_sqe(&ring);
		io_uring_prep_read(sqe, dfd, run, (unsigned)len, 0);
		if (io_uring_submit(&ring) != 1) {
			wrong++;
			break;
		}
		if (i % 4) {
			spin_us((i % 4 - 1) * (i % 50) * 4);
			ret = ksmu_merge_run(m, (uintptr_t)run, ODIRECT_PAGES, sfd, 0, x, &bad);
		}
		res[ret == 0 ? 0 : ret == -EBUSY ? 1 : ret == -EAGAIN ? 2 : 3]++;
		err = ring_wait(&ring);
		if (err != (int)len || memcmp(run, z, len)) {
			if (wrong++ < 5)
				fprintf(stderr, "   round %zu: read %d, merge %d: data %s\n", i,
					err, ret, memcmp(run, z, len) ? "LOST" : "ok");
		}
	}
	printf("   %d rounds of %zu pages: merged %lu, -EBUSY %lu, -EAGAIN %lu, other %lu; "
	       "data lost %zu\n",
	       ODIRECT_ROUNDS, (size_t)ODIRECT_PAGES, res[0], res[1], res[2], res[3], wrong);
	CHECK("every read landed in the application's pages", wrong == 0);
	CHECK("no other result", res[3] == 0);
	munmap(r, ODIRECT_ROUNDS * len);
	close(dfd);
out_close:
	close(ffd);
	close(sfd);
	io_uring_queue_exit(&ring);
out_free:
	free(x);
	free(z);
}

int main(void)
{
	struct ksmu_merger m;

	t_merger_init(&m);
	if (!t_pfn_of(&m))
		t_skip("PFNs hidden in /proc/self/pagemap (needs CAP_SYS_ADMIN)");

	test_fixed_buffer(&m);
	test_fork(&m);
	test_odirect(&m);

	ksmu_merger_destroy(&m);
	close(t_pm_fd);
	return t_exit();
}
