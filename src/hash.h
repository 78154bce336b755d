/* SPDX-License-Identifier: MIT */
/*
 * hash.h - page content hashing (XXH3-64) and the zero-page test.
 */
#ifndef KSMU_HASH_H
#define KSMU_HASH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** ksmu_hash_page() - XXH3-64 (seed 0) of one 4 KiB page. */
uint64_t ksmu_hash_page(const void *page);

/** ksmu_hash_buf() - XXH3-64 (seed 0) of @len bytes; for known-answer tests. */
uint64_t ksmu_hash_buf(const void *buf, size_t len);

/** ksmu_page_is_zero() - true if all 4096 bytes are zero. */
bool ksmu_page_is_zero(const void *page);

/** ksmu_pages_equal() - full-content comparison of two pages. */
bool ksmu_pages_equal(const void *a, const void *b);

#endif /* KSMU_HASH_H */
