/* SPDX-License-Identifier: MIT */
/*
 * probe.h - kernel feature probe (see probe.c).
 *
 * The public entry point ksmu_probe() is declared in ksmu.h.  What follows
 * is for the engine and for ksmctl.
 */
#ifndef KSMU_PROBE_H
#define KSMU_PROBE_H

#include <stddef.h>
#include <stdint.h>

#include "ksmu.h"

/**
 * ksmu_probe_get() - the features of the running kernel, probed once.
 *
 * The first call in a process runs the probe; every later call returns the
 * same cached, never modified struct.
 *
 * Return: a pointer to the cached result, valid for the life of the process.
 * Context: thread-safe (pthread_once); the first call blocks for the probe
 * (well under a millisecond), concurrent first callers wait for it.
 */
const struct ksmu_features *ksmu_probe_get(void);

/**
 * ksmu_probe_uffd_open() - open a userfaultfd and negotiate its features.
 * @want_features: UFFD_FEATURE_* bits to enable (UFFDIO_API features)
 * @got_features:  if not NULL, set to the mask the kernel offers (all of it,
 *                 not only @want_features)
 *
 * Opens the descriptor O_CLOEXEC | O_NONBLOCK, trying userfaultfd(2) with
 * UFFD_USER_MODE_ONLY, then userfaultfd(2) without it, then
 * /dev/userfaultfd (USERFAULTFD_IOC_NEW), and performs UFFDIO_API.
 *
 * Caution: a descriptor opened with UFFD_USER_MODE_ONLY does not handle
 * faults taken by the kernel on the process's behalf (read(2) or recv(2)
 * into a registered page): in a UFFDIO_REGISTER_MODE_MISSING range those
 * fail with EFAULT instead of waiting for UFFDIO_WAKE.  Asynchronous
 * write-protect is not affected.
 *
 * Return: the descriptor (>= 0), owned by the caller; -EINVAL if the kernel
 * does not offer every bit of @want_features; if no userfaultfd can be
 * opened, the error of opening /dev/userfaultfd (-EACCES, ...) or, where
 * that device does not exist, of userfaultfd(2) (-EPERM, -ENOSYS).
 * Context: thread-safe; no side effect besides the new descriptor.
 */
int ksmu_probe_uffd_open(uint64_t want_features, uint64_t *got_features);

/**
 * ksmu_probe_uffd_open_kernel_faults() - as ksmu_probe_uffd_open(), but
 * never with UFFD_USER_MODE_ONLY: faults the kernel takes on the process's
 * behalf (read(2) into a registered page) block in a MISSING range instead
 * of failing with EFAULT.  Needed for merge windows.  Requires root,
 * vm.unprivileged_userfaultfd=1 or access to /dev/userfaultfd.
 * Return: as ksmu_probe_uffd_open().
 */
int ksmu_probe_uffd_open_kernel_faults(uint64_t want_features, uint64_t *got_features);

/**
 * ksmu_probe_describe() - render kernel features for people or programs.
 * @f:    features as filled by ksmu_probe()
 * @buf:  output, always NUL-terminated when @len > 0
 * @len:  size of @buf in bytes, including the terminating NUL
 * @json: 0 for one line per feature in words ("name: yes (what ksmu does
 *        with it)"), non-zero for a JSON object whose keys are the field
 *        names of struct ksmu_features (size left out), 0/1 fields as
 *        booleans
 *
 * Return: bytes written, not counting the NUL; -EINVAL if @f or @buf is
 * NULL; -ENOSPC if @len is too small (then @buf holds an empty string).
 * Context: thread-safe, does not block.
 */
KSMU_API int ksmu_probe_describe(const struct ksmu_features *f, char *buf, size_t len, int json);

#endif /* KSMU_PROBE_H */
