/* SPDX-License-Identifier: MIT */
/* control.h - the control channel of a process (control.c). */
#ifndef KSMU_CONTROL_H
#define KSMU_CONTROL_H

#include <stdbool.h>

/** Start the server thread and its socket "ksmu/PID" if not running.  Return: 0 or -errno. */
int ksmu_control_start(void);
/** In a forked child: close the parent's socket (async-signal-safe). */
void ksmu_control_atfork_child(void);
/** In a forked child's first API call: true once if the parent served (start our own). */
bool ksmu_control_child(void);

#endif
