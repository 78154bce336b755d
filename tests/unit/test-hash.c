/* SPDX-License-Identifier: MIT */
/* Description: page hashing: XXH3-64 known answers (from the reference
 * xxhsum -H3), equal content <=> equal hash on generated pages, the zero-page
 * test at every byte position, and full-content comparison. */
#include <stdint.h>
#include <string.h>

#include "hash.h"
#include "test.h"
#include "util.h"

static uint8_t page[KSMU_PAGE_SIZE] __attribute__((aligned(4096)));
static uint8_t other[KSMU_PAGE_SIZE] __attribute__((aligned(4096)));

static uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

int main(void)
{
	uint64_t seed = 42, h0;
	size_t i;

	/* Known answers, computed with xxhsum -H3 (xxHash 0.8.1). */
	CHECK("empty", ksmu_hash_buf("", 0) == 0x2d06800538d394c2ULL);
	CHECK("abc", ksmu_hash_buf("abc", 3) == 0x78af5f94892f3950ULL);
	memset(page, 0, sizeof(page));
	CHECK("zero page", ksmu_hash_page(page) == 0x93d76fe148c689baULL);
	for (i = 0; i < KSMU_PAGE_SIZE; i++)
		page[i] = (uint8_t)i;
	CHECK("0..255 x16", ksmu_hash_page(page) == 0xeb4b7c3707879151ULL);
	CHECK("page == buf", ksmu_hash_page(page) == ksmu_hash_buf(page, KSMU_PAGE_SIZE));

	/* Every single-bit change changes the hash (a sample of positions). */
	h0 = ksmu_hash_page(page);
	for (i = 0; i < KSMU_PAGE_SIZE * 8; i += 61) {
		page[i / 8] ^= (uint8_t)(1u << (i % 8));
		CHECK("bit flip changes hash", ksmu_hash_page(page) != h0);
		page[i / 8] ^= (uint8_t)(1u << (i % 8));
	}
	CHECK("restored", ksmu_hash_page(page) == h0);

	/* Random pages: equal content gives equal hash, and the copy compares equal. */
	for (i = 0; i < 200; i++) {
		size_t w;

		for (w = 0; w < KSMU_PAGE_SIZE / 8; w++)
			((uint64_t *)page)[w] = splitmix(&seed);
		memcpy(other, page, sizeof(page));
		CHECK("copy hash", ksmu_hash_page(page) == ksmu_hash_page(other));
		CHECK("copy equal", ksmu_pages_equal(page, other));
		other[splitmix(&seed) % KSMU_PAGE_SIZE] ^= 0x80;
		CHECK("changed not equal", !ksmu_pages_equal(page, other));
		CHECK("changed hash", ksmu_hash_page(page) != ksmu_hash_page(other));
	}

	/* Zero test: exactly the all-zero page, whichever byte is set. */
	memset(page, 0, sizeof(page));
	CHECK("zero", ksmu_page_is_zero(page));
	for (i = 0; i < KSMU_PAGE_SIZE; i++) {
		page[i] = 1;
		if (ksmu_page_is_zero(page)) {
			CHECK("byte set is not zero", 0);
			break;
		}
		page[i] = 0;
	}
	page[KSMU_PAGE_SIZE - 1] = 0x80;
	CHECK("last bit", !ksmu_page_is_zero(page));
	return t_exit();
}
