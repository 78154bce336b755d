/* SPDX-License-Identifier: MIT */
/*
 * preload_fork.c - fork() for the LD_PRELOAD mode: a forked child keeps
 * being deduplicated at once, as kernel KSM keeps scanning a child.
 *
 * DESIGN
 *   The engine's threads do not survive fork(), and a pthread_atfork()
 *   child handler must not create threads (not async-signal-safe), so
 *   without help a child's engine sleeps until its first API call
 *   (engine.c child_restart()).  Preloaded, this fork() calls the C
 *   library's (atfork handlers included) and then, in the child, in normal
 *   context, brings the engine back: tracker, event reader, scanner and
 *   control socket.  Not preloaded, it is the C library's fork() plus one
 *   branch.
 *
 *   Built into the shared library only, not into the static test library:
 *   a program that defines fork() itself (a sanitizer runtime's
 *   interceptor) keeps its own, and its children wait for an API call.
 *
 * INVARIANTS
 *   Returns exactly what the C library's fork() returns, errno included.
 *
 * LOCKING / THREADS
 *   None of its own; the child's restart takes the engine lock.
 *
 * KERNEL REQUIREMENTS
 *   None.
 */
#include <dlfcn.h>
#include <errno.h>
#include <unistd.h>

#include "engine.h"
#include "preload.h"

typedef pid_t (*fork_fn)(void);

KSMU_API pid_t fork(void)
{
	static fork_fn real;
	fork_fn f = __atomic_load_n(&real, __ATOMIC_ACQUIRE);
	pid_t pid;
	int saved;

	if (!f) {
		f = (fork_fn)dlsym(RTLD_NEXT, "fork");
		if (!f) {
			errno = ENOSYS;
			return -1;
		}
		__atomic_store_n(&real, f, __ATOMIC_RELEASE);
	}
	pid = f();
	if (pid != 0) {
		saved = errno;
		ksmu_engine_fork_done(pid); /* ksmd-user learns the child's pid */
		errno = saved;
	}
	if (pid == 0 && ksmu_preload_active()) {
		saved = errno;
		ksmu_engine_child_resume();
		errno = saved;
	}
	return pid;
}
