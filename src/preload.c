/* SPDX-License-Identifier: MIT */
/*
 * preload.c - the kernel's KSM interface for unmodified programs.
 *
 * DESIGN
 *   libksmu.so defines madvise() and prctl().  Preloaded (LD_PRELOAD, or
 *   `ksmu-run -- program`, which also sets KSMU_PRELOAD=1), these
 *   definitions come before the C library's, so a program written for
 *   kernel KSM reaches ksmu unchanged:
 *     madvise(MADV_MERGEABLE)    -> ksmu_register()
 *     madvise(MADV_UNMERGEABLE)  -> ksmu_unregister()
 *     prctl(PR_SET_MEMORY_MERGE) -> merge-any on/off (engine.c)
 *     prctl(PR_GET_MEMORY_MERGE) -> merge-any state
 *   with the kernel's argument checks and errors (-1 and errno).  Every
 *   other advice and option goes to the kernel untouched, as a plain
 *   system call.  MADV_FREE, which the kernel refuses (EINVAL) on the file
 *   mappings that merged pages are, becomes MADV_DONTNEED there (allowed:
 *   MADV_FREE lets the kernel discard the contents) - only if the whole
 *   range is registered, so a bad call elsewhere still fails as before.
 *
 *   Not preloaded (a program linked with libksmu for its API), both
 *   functions are plain system calls: behaviour is the C library's.
 *
 *   KSMU_KERNEL_KSM chooses whether kernel KSM is asked too:
 *     off (default) ksmu only;
 *     also          both (ksmu's error, if any, is returned);
 *     fallback      the kernel only when ksmu cannot run here (no
 *                   userfaultfd, too old a kernel: the engine failed).
 *   KSMU_MERGE_ANY=1 turns merge-any on when the library loads
 *   (`ksmu-run --merge-any`, like systemd's MemoryKSM=).
 *
 *   The library's exported symbols are the API (versioned KSMU_0.x) plus
 *   these two, unversioned so that they bind the versioned references
 *   (madvise@GLIBC_2.2.5) of the programs they serve.
 *
 * INVARIANTS
 *   - A call the engine does not take over reaches the kernel with its
 *     arguments unchanged and returns exactly what the kernel returns.
 *   - Nothing is printed unless KSMU_LOG asks for it.
 *
 * LOCKING / THREADS
 *   The mode is decided once (pthread_once); the engine calls are
 *   thread-safe.
 *
 * KERNEL REQUIREMENTS
 *   None beyond the engine's; PR_SET_MEMORY_MERGE (6.4) only for
 *   KSMU_KERNEL_KSM=also/fallback.
 */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#define LOG_PREFIX "preload: "
#include "engine.h"
#include "log.h"
#include "preload.h"

#ifndef PR_SET_MEMORY_MERGE
#define PR_SET_MEMORY_MERGE 67
#define PR_GET_MEMORY_MERGE 68
#endif
#ifndef MADV_FREE
#define MADV_FREE 8
#endif

enum kernel_ksm { KKSM_OFF, KKSM_ALSO, KKSM_FALLBACK };

static pthread_once_t mode_once = PTHREAD_ONCE_INIT;
static bool preloaded;
static enum kernel_ksm kernel_ksm;

static bool basename_eq(const char *a, size_t alen, const char *b)
{
	const char *sa = memrchr(a, '/', alen), *sb = strrchr(b, '/');

	if (sa) {
		alen -= (size_t)(sa + 1 - a);
		a = sa + 1;
	}
	b = sb ? sb + 1 : b;
	return alen == strlen(b) && !memcmp(a, b, alen);
}

/* Is this object named in LD_PRELOAD (by path or by file name)? */
static bool named_in_ld_preload(void)
{
	const char *lp = getenv("LD_PRELOAD"), *p;
	Dl_info di;

	if (!lp || !dladdr((void *)named_in_ld_preload, &di) || !di.dli_fname)
		return false;
	for (p = lp; *p;) {
		size_t n = strcspn(p, ": ");

		if (n && basename_eq(p, n, di.dli_fname))
			return true;
		p += n;
		p += strspn(p, ": ");
	}
	return false;
}

static void decide_mode(void)
{
	const char *v = getenv("KSMU_PRELOAD"), *k = getenv("KSMU_KERNEL_KSM");

	preloaded = v ? !strcmp(v, "1") : named_in_ld_preload();
	if (!preloaded)
		return;
	if (!k || !*k || !strcmp(k, "off"))
		kernel_ksm = KKSM_OFF;
	else if (!strcmp(k, "also"))
		kernel_ksm = KKSM_ALSO;
	else if (!strcmp(k, "fallback"))
		kernel_ksm = KKSM_FALLBACK;
	else
		fprintf(stderr, "ksmu: KSMU_KERNEL_KSM=%s ignored: not one of off, also, fallback\n",
			k);
}

bool ksmu_preload_active(void)
{
	pthread_once(&mode_once, decide_mode);
	return preloaded;
}

static int sys_madvise(void *addr, size_t len, int advice)
{
	return (int)syscall(SYS_madvise, addr, len, advice);
}

/* -errno to the C convention. */
static int ret_errno(int ret)
{
	if (ret >= 0)
		return ret;
	errno = -ret;
	return -1;
}

/* The engine cannot run here at all (not: the arguments were wrong). */
static bool engine_unavailable(int ret)
{
	return ret && ret != -EINVAL && ret != -ENOMEM && ret != -EAGAIN;
}

static int merge_advice(void *addr, size_t len, int advice)
{
	int ret, kret, kerr;

	if (kernel_ksm == KKSM_ALSO) {
		/*
		 * The kernel first: it ignores MADV_MERGEABLE on a VMA that is
		 * already registered with a userfaultfd (ours), silently.
		 */
		kret = sys_madvise(addr, len, advice);
		kerr = errno;
		ret = advice == MADV_MERGEABLE ? ksmu_register(addr, len)
					       : ksmu_unregister(addr, len);
		if (ret)
			return ret_errno(ret);
		errno = kerr;
		return kret;
	}
	ret = advice == MADV_MERGEABLE ? ksmu_register(addr, len) : ksmu_unregister(addr, len);
	switch (kernel_ksm) {
	case KKSM_FALLBACK:
		if (engine_unavailable(ret))
			return sys_madvise(addr, len, advice);
		return ret_errno(ret);
	default:
		return ret_errno(ret);
	}
}

KSMU_API int madvise(void *addr, size_t len, int advice)
{
	int ret;

	if ((advice != MADV_MERGEABLE && advice != MADV_UNMERGEABLE && advice != MADV_FREE) ||
	    !ksmu_preload_active())
		return sys_madvise(addr, len, advice);
	if (advice != MADV_FREE)
		return merge_advice(addr, len, advice);
	ret = sys_madvise(addr, len, advice);
	if (ret && errno == EINVAL && !((uintptr_t)addr & ~KSMU_PAGE_MASK) && len &&
	    (uintptr_t)addr + len > (uintptr_t)addr &&
	    ksmu_engine_covers((uintptr_t)addr, ((uintptr_t)addr + len + KSMU_PAGE_SIZE - 1) &
						    KSMU_PAGE_MASK))
		ret = sys_madvise(addr, len, MADV_DONTNEED);
	return ret;
}

static int merge_prctl(int option, unsigned long a2, unsigned long a3, unsigned long a4,
		       unsigned long a5)
{
	int ret, saved, kret;

	/* the kernel's checks (kernel/sys.c) */
	if (option == PR_GET_MEMORY_MERGE) {
		if (a2 || a3 || a4 || a5)
			return ret_errno(-EINVAL);
		if (kernel_ksm == KKSM_FALLBACK && !ksmu_engine_started())
			return (int)syscall(SYS_prctl, option, a2, a3, a4, a5);
		return ksmu_engine_merge_any_get();
	}
	if (a3 || a4 || a5)
		return ret_errno(-EINVAL);
	ret = ksmu_engine_merge_any(a2 != 0);
	switch (kernel_ksm) {
	case KKSM_ALSO:
		saved = errno;
		kret = (int)syscall(SYS_prctl, option, a2, a3, a4, a5);
		if (ret)
			errno = saved;
		return ret ? ret_errno(ret) : kret;
	case KKSM_FALLBACK:
		if (engine_unavailable(ret))
			return (int)syscall(SYS_prctl, option, a2, a3, a4, a5);
		return ret_errno(ret);
	default:
		return ret_errno(ret);
	}
}

KSMU_API int prctl(int option, ...)
{
	unsigned long a2, a3, a4, a5;
	va_list ap;

	/* As the C library's wrapper: four more arguments, whatever was passed. */
	va_start(ap, option);
	a2 = va_arg(ap, unsigned long);
	a3 = va_arg(ap, unsigned long);
	a4 = va_arg(ap, unsigned long);
	a5 = va_arg(ap, unsigned long);
	va_end(ap);
	if ((option == PR_SET_MEMORY_MERGE || option == PR_GET_MEMORY_MERGE) &&
	    ksmu_preload_active())
		return merge_prctl(option, a2, a3, a4, a5);
	return (int)syscall(SYS_prctl, option, a2, a3, a4, a5);
}

/* ksmu-run --merge-any: on from the start, as systemd's MemoryKSM= does with prctl. */
__attribute__((constructor)) static void preload_init(void)
{
	const char *v;

	if (!ksmu_preload_active())
		return;
	v = getenv("KSMU_MERGE_ANY");
	if (v && !strcmp(v, "1")) {
		int ret = ksmu_engine_merge_any(true);

		if (ret)
			pr_err("KSMU_MERGE_ANY=1: merge-any failed: %s", strerror(-ret));
	}
}
