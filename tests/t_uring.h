/* SPDX-License-Identifier: MIT */
/*
 * t_uring.h - io_uring helpers shared by the functional tests that pin
 * pages with a registered buffer (a FOLL_LONGTERM pin for write) and then
 * let the device write into it with READ_FIXED: merge-scan (a pinned
 * duplicate stays unmerged), merge-cow (a buffer registered over merged
 * pages).  What a failure to register means is the caller's: a skipped
 * part, or a failed check.  Tests that include this link with uring.
 */
#ifndef KSMU_T_URING_H
#define KSMU_T_URING_H

#include <liburing.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "t_mem.h"
#include "test.h"

/* A ring of 4 entries; 0, or -1 after "SKIP part: no io_uring" (the part is skipped). */
static inline int t_uring_init(struct io_uring *ring)
{
	if (io_uring_queue_init(4, ring, 0) < 0) {
		printf("   SKIP part: no io_uring\n");
		return -1;
	}
	return 0;
}

/* Register [@p, @p + @len) as fixed buffer 0 of @ring; 0 or -errno. */
static inline int t_uring_register(struct io_uring *ring, void *p, size_t len)
{
	struct iovec iov = { .iov_base = p, .iov_len = len };

	return io_uring_register_buffers(ring, &iov, 1);
}

/*
 * The device writes one page into fixed buffer 0 of @ring: READ_FIXED into
 * @dst (inside the buffer) of a page of content t_fill_page(@seed) from a
 * temporary file (/tmp/ksmu-@tag-XXXXXX, unlinked at once).  CHECK()s that
 * the read completed in full and that the data landed at @dst, where the
 * application reads.
 */
static inline void t_uring_read_fixed(struct io_uring *ring, void *dst, const char *tag,
				      uint64_t seed)
{
	unsigned char data[T_PG];
	struct io_uring_sqe *sqe;
	struct io_uring_cqe *cqe = NULL;
	char path[64];
	int ffd;

	snprintf(path, sizeof(path), "/tmp/ksmu-%s-XXXXXX", tag);
	t_fill_page(data, seed);
	ffd = mkstemp(path);
	CHECK("temp file", ffd >= 0 && write(ffd, data, T_PG) == (ssize_t)T_PG);
	unlink(path);
	sqe = io_uring_get_sqe(ring);
	io_uring_prep_read_fixed(sqe, ffd, dst, T_PG, 0, 0);
	CHECK("submit", io_uring_submit(ring) == 1);
	CHECK("wait", io_uring_wait_cqe(ring, &cqe) == 0 && cqe->res == (int)T_PG);
	io_uring_cqe_seen(ring, cqe); /* NULL (nothing to consume) if the wait failed */
	CHECK("the device's data landed where the application reads", !memcmp(dst, data, T_PG));
	close(ffd);
}

#endif /* KSMU_T_URING_H */
