/* SPDX-License-Identifier: MIT */
/*
 * uffd.h - the userfaultfd the engine uses for exact dirty tracking.
 */
#ifndef KSMU_UFFD_H
#define KSMU_UFFD_H

#include <stddef.h>
#include <stdint.h>

/**
 * struct ksmu_tracker - an async write-protect userfaultfd.
 * @fd:       the userfaultfd, -1 when closed
 * @features: features granted by UFFDIO_API
 */
struct ksmu_tracker {
	int fd;
	uint64_t features;
};

/** Open with UFFD_FEATURE_WP_ASYNC | WP_UNPOPULATED.  Return: 0 or -errno. */
int ksmu_tracker_open(struct ksmu_tracker *t);
void ksmu_tracker_close(struct ksmu_tracker *t);
/** Register [start, start+len) for async write-protect.  Return: 0 or -errno. */
int ksmu_tracker_register(struct ksmu_tracker *t, uintptr_t start, size_t len);
/** Unregister; pages keep their content.  Return: 0 or -errno. */
int ksmu_tracker_unregister(struct ksmu_tracker *t, uintptr_t start, size_t len);

#endif /* KSMU_UFFD_H */
