/* SPDX-License-Identifier: MIT */
/* Description: builds against the installed header and library only
 * (CMake package or pkg-config) and makes one real call. */
#include <stdio.h>

#include <ksmu.h>

int main(void)
{
	struct ksmu_stats s;

	if (ksmu_version() != KSMU_VERSION_NUM || ksmu_stats(&s) != 0) {
		fprintf(stderr, "consumer: installed ksmu does not work\n");
		return 1;
	}
	printf("consumer: ksmu %d ok, pages_to_scan=%lu\n", ksmu_version(),
	       (unsigned long)s.pages_to_scan);
	return 0;
}
