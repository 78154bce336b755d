/* SPDX-License-Identifier: MIT */
/*
 * log.h - the library's only output channel (see ksmu_set_log()).
 */
#ifndef KSMU_LOG_H
#define KSMU_LOG_H

#include "ksmu.h"

void ksmu_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define pr_err(fmt, ...) ksmu_log(KSMU_LOG_ERR, LOG_PREFIX fmt, ##__VA_ARGS__)
#define pr_warn(fmt, ...) ksmu_log(KSMU_LOG_WARN, LOG_PREFIX fmt, ##__VA_ARGS__)
#define pr_info(fmt, ...) ksmu_log(KSMU_LOG_INFO, LOG_PREFIX fmt, ##__VA_ARGS__)
#define pr_debug(fmt, ...) ksmu_log(KSMU_LOG_DEBUG, LOG_PREFIX fmt, ##__VA_ARGS__)

#endif /* KSMU_LOG_H */
