/* SPDX-License-Identifier: MIT */
/*
 * nopreload.c - the daemon links the engine's modules statically (the
 * store allocator, knob checks, the wire validator) but must never carry
 * libksmu's madvise()/prctl() interposers or their constructor: this
 * definition satisfies the engine's one reference to preload.c, so the
 * linker never pulls preload.o out of the archive.
 */
#include "preload.h"

bool ksmu_preload_active(void)
{
	return false;
}
