/* SPDX-License-Identifier: MIT */
/*
 * parse.h - the one strict decimal parser of the library and the tools
 * (environment, control requests, ksmctl, ksmu-run): header-only, no state.
 */
#ifndef KSMU_PARSE_H
#define KSMU_PARSE_H

#include <errno.h>
#include <stdint.h>

/*
 * Parse all of @s as a decimal number no greater than @max: ASCII digits
 * only, at least one (no sign, no blank, no "0x", nothing after).
 * Return: 0 and *@out set; -EINVAL if @s is not such a number; -ERANGE if
 * it is greater than @max.
 */
static inline int ksmu_parse_decimal(const char *s, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;

	if (!*s)
		return -EINVAL;
	for (; *s; s++) {
		unsigned d = (unsigned)(*s - '0');

		if (d > 9)
			return -EINVAL;
		if (v > (max - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

#endif
