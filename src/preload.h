/* SPDX-License-Identifier: MIT */
/* preload.h - the LD_PRELOAD mode (preload.c). */
#ifndef KSMU_PRELOAD_H
#define KSMU_PRELOAD_H

#include <stdbool.h>

/** True if this library was preloaded (LD_PRELOAD or KSMU_PRELOAD=1). */
bool ksmu_preload_active(void);

#endif
