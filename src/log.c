/* SPDX-License-Identifier: MIT */
/*
 * log.c - message routing for the library.
 *
 * DESIGN
 *   The library never prints on its own: a preloaded copy lives inside
 *   somebody else's program and must not write to its terminal.  Messages go
 *   to the sink installed with ksmu_set_log(); until one is installed they
 *   are dropped, unless the environment variable KSMU_LOG names a level
 *   (err, warn, info, debug), in which case they go to standard error.
 *
 * LOCKING / THREADS
 *   The sink triple (fn, arg, level) is swapped under a mutex and read under
 *   it, so a message is never delivered to a sink that was already replaced.
 *   Formatting happens outside the lock into a stack buffer.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static ksmu_log_fn log_fn;
static void *log_arg;
static int log_level = -1; /* -1: not configured yet, read KSMU_LOG */

static void stderr_sink(int level, const char *msg, void *arg)
{
	static const char *const names[] = { "error", "warning", "info", "debug" };
	(void)arg;
	fprintf(stderr, "ksmu[%s]: %s\n", names[level < 0 || level > 3 ? 0 : level], msg);
}

static int level_from_env(void)
{
	const char *v = getenv("KSMU_LOG");
	if (!v || !*v)
		return -2; /* silent */
	if (!strcmp(v, "err") || !strcmp(v, "error") || !strcmp(v, "0"))
		return KSMU_LOG_ERR;
	if (!strcmp(v, "warn") || !strcmp(v, "warning") || !strcmp(v, "1"))
		return KSMU_LOG_WARN;
	if (!strcmp(v, "info") || !strcmp(v, "2"))
		return KSMU_LOG_INFO;
	if (!strcmp(v, "debug") || !strcmp(v, "3"))
		return KSMU_LOG_DEBUG;
	fprintf(stderr, "ksmu: KSMU_LOG=%s is not one of err, warn, info, debug; logging warnings\n", v);
	return KSMU_LOG_WARN;
}

KSMU_API void ksmu_set_log(ksmu_log_fn fn, void *arg, int max_level)
{
	pthread_mutex_lock(&log_lock);
	log_fn = fn;
	log_arg = arg;
	log_level = fn ? max_level : -2;
	pthread_mutex_unlock(&log_lock);
}

void ksmu_log(int level, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	ksmu_log_fn fn;
	void *arg;

	pthread_mutex_lock(&log_lock);
	if (log_level == -1) {
		log_level = level_from_env();
		if (log_level >= 0)
			log_fn = stderr_sink;
	}
	fn = log_fn;
	arg = log_arg;
	if (!fn || level > log_level) {
		pthread_mutex_unlock(&log_lock);
		return;
	}
	pthread_mutex_unlock(&log_lock);

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	fn(level, buf, arg);
}
