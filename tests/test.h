/* SPDX-License-Identifier: MIT */
/*
 * test.h - shared helpers of the ksmu test suite.
 *
 * Exit codes follow ctest/automake: 0 pass, 1 fail, 77 skip (registered with
 * SKIP_RETURN_CODE 77).  CHECK() records a failure and continues so that one
 * run reports every broken expectation; t_exit() turns the tally into the
 * exit code.
 */
#ifndef KSMU_TEST_H
#define KSMU_TEST_H

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* T_SANITIZED: built with ASan or TSan (their runtimes add mappings and threads). */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define T_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define T_SANITIZED 1
#endif
#endif
#ifndef T_SANITIZED
#define T_SANITIZED 0
#endif

/* T_TSAN: built with ThreadSanitizer, which cannot see kernel-mode writes as atomic. */
#if defined(__SANITIZE_THREAD__)
#define T_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define T_TSAN 1
#endif
#endif
#ifndef T_TSAN
#define T_TSAN 0
#endif

#define T_EXIT_PASS 0
#define T_EXIT_FAIL 1
#define T_EXIT_SKIP 77

static int t_failures;
static int t_checks;

#define CHECK(name, expr)                                                            \
	do {                                                                         \
		t_checks++;                                                          \
		if (!(expr)) {                                                       \
			t_failures++;                                                \
			fprintf(stderr, "FAIL %s:%d: %s: %s\n", __FILE__, __LINE__, \
				(name), #expr);                                      \
		}                                                                    \
	} while (0)

/* Check a -errno style return against an expected value, printing both. */
#define CHECK_RET(name, got, want)                                                     \
	do {                                                                           \
		long t_g_ = (long)(got), t_w_ = (long)(want);                          \
		t_checks++;                                                            \
		if (t_g_ != t_w_) {                                                    \
			t_failures++;                                                  \
			fprintf(stderr, "FAIL %s:%d: %s: got %ld (%s), want %ld (%s)\n", \
				__FILE__, __LINE__, (name), t_g_,                      \
				t_g_ < 0 ? strerror((int)-t_g_) : "ok", t_w_,          \
				t_w_ < 0 ? strerror((int)-t_w_) : "ok");               \
		}                                                                      \
	} while (0)

static inline void t_skip(const char *why)
{
	printf("SKIP: %s\n", why);
	exit(T_EXIT_SKIP);
}

static inline int t_exit(void)
{
	if (t_failures) {
		fprintf(stderr, "%d of %d checks failed\n", t_failures, t_checks);
		return T_EXIT_FAIL;
	}
	printf("all %d checks passed\n", t_checks);
	return T_EXIT_PASS;
}

#endif /* KSMU_TEST_H */
