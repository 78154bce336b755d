/* SPDX-License-Identifier: MIT */
/*
 * bench-limits.c - the physical limits of the machine, for reference: XXH3
 * (ksmu_hash_page, the scanner's hash) over a cold --mib MiB, memcmp of
 * equal pages, and memcpy, in GiB/s and ns per 4 KiB page.  "Cold": the
 * buffer is 1 GiB, far larger than any cache, and is walked once per
 * repeat in page order, as a scanner walks memory.  The median of
 * --repeat walks is printed.
 *
 * Output: RESULT bench=limits op=xxh3|memcmp|memcpy mib=N gib_per_s=.. ns_per_page=..
 * --quick: 64 MiB, 1 repeat.  Exit status: 0; 1 out of memory; 2 bad command line.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "bench-common.h"
#include "hash.h"

const char bench_prog[] = "bench-limits";

#define PG 4096

static volatile uint64_t sink;

static uint64_t walk(int op, unsigned char *a, unsigned char *b, size_t pages)
{
	uint64_t t0 = bench_clock_ns(CLOCK_MONOTONIC), acc = 0;

	for (size_t i = 0; i < pages; i++) {
		unsigned char *p = a + i * PG, *q = b + i * PG;

		if (op == 0)
			acc += ksmu_hash_page(p);
		else if (op == 1)
			acc += (uint64_t)memcmp(p, q, PG);
		else
			memcpy(q, p, PG);
	}
	sink = acc;
	return bench_clock_ns(CLOCK_MONOTONIC) - t0;
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "mib", required_argument, NULL, 'm' },
		{ "repeat", required_argument, NULL, 'r' },
		{ "quick", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	static const char *const names[] = { "xxh3", "memcmp", "memcpy" };
	uint64_t mib = 1024, repeat = 3, ns[16];
	unsigned char *a, *b;
	size_t len, pages;
	int c;

	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (c) {
		case 'm':
			mib = bench_parse_u64("--mib", optarg, 1, 1 << 16);
			break;
		case 'r':
			repeat = bench_parse_u64("--repeat", optarg, 1, 16);
			break;
		case 'q':
			mib = 64;
			repeat = 1;
			break;
		case 'h':
			printf("Usage: %s [--mib N] [--repeat N] [--quick]\n"
			       "XXH3, memcmp and memcpy over a cold buffer (default 1024 MiB, 3).\n",
			       bench_prog);
			return 0;
		default:
			bench_usage_error();
		}
	}
	bench_no_operands(argc, argv, optind);
	len = (size_t)mib << 20;
	pages = len / PG;
	a = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	b = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (a == MAP_FAILED || b == MAP_FAILED) {
		fprintf(stderr, "%s: cannot map 2 x %" PRIu64 " MiB\n", bench_prog, mib);
		return 1;
	}
	for (size_t i = 0; i < len; i += 8)
		*(uint64_t *)(a + i) = i * 0x9E3779B97F4A7C15ULL;
	memcpy(b, a, len);
	for (int op = 0; op < 3; op++) {
		for (uint64_t r = 0; r < repeat; r++)
			ns[r] = walk(op, a, b, pages);
		qsort(ns, repeat, sizeof(ns[0]), bench_cmp_u64);
		printf("RESULT bench=limits op=%s mib=%" PRIu64 " gib_per_s=%.2f ns_per_page=%.1f"
		       " bytes_touched_per_page=%d\n",
		       names[op], mib, (double)len / (1 << 30) / (ns[repeat / 2] / 1e9),
		       (double)ns[repeat / 2] / (double)pages, op == 0 ? PG : 2 * PG);
	}
	munmap(a, len);
	munmap(b, len);
	return 0;
}
