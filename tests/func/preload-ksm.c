/* SPDX-License-Identifier: MIT */
/*
 * Description: LD_PRELOAD mode.  This program is written for kernel KSM
 * and knows nothing of ksmu: it is not linked with libksmu and calls
 * madvise() and prctl() exactly as KSM users do.  Run under
 * LD_PRELOAD=libksmu.so it must get its pages merged (equal PFNs), unmerged
 * by MADV_UNMERGEABLE and by prctl(PR_SET_MEMORY_MERGE, 0), merge-any must
 * cover heap memory allocated after the prctl, a forked child must stay
 * correct, bad arguments must fail as the kernel fails them, other advice
 * must pass through, and the control socket must report what the API says.
 *
 * To drive scans it looks the API up with dlsym(), as a debugger would; a
 * program that does not find it was not preloaded (the test fails).
 *
 * Usage: preload-ksm            (the checks)
 *        preload-ksm --serve F  (merge, stop the scanner, write the API's
 *                                counters to F as "name value", then wait
 *                                for SIGTERM: for the ksmctl test)
 */
#include <dlfcn.h>
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ksmu.h" /* struct ksmu_stats only: the program is not linked with libksmu */
#include "t_mem.h"
#include "test.h"

#ifndef PR_SET_MEMORY_MERGE
#define PR_SET_MEMORY_MERGE 67
#define PR_GET_MEMORY_MERGE 68
#endif

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
static const int sanitized = 1;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
static const int sanitized = 1;
#else
static const int sanitized = 0;
#endif
#else
static const int sanitized = 0;
#endif

#define PG 4096UL
#define N 64

/* The parts of the ksmu API this program uses, looked up at run time. */
static int (*scan_full)(void);
static int (*set_tunable)(const char *, unsigned long);
static int (*get_tunable)(const char *, unsigned long *);
static int (*stats)(struct ksmu_stats *);

static int lookup_api(void)
{
	scan_full = (int (*)(void))dlsym(RTLD_DEFAULT, "ksmu_scan_full");
	set_tunable = (int (*)(const char *, unsigned long))dlsym(RTLD_DEFAULT, "ksmu_set_tunable");
	get_tunable = (int (*)(const char *, unsigned long *))dlsym(RTLD_DEFAULT, "ksmu_get_tunable");
	stats = (int (*)(struct ksmu_stats *))dlsym(RTLD_DEFAULT, "ksmu_stats");
	return scan_full && set_tunable && get_tunable && stats ? 0 : -1;
}

/* Pages i and i+4 hold the same content. */
static void fill(char *p, size_t pages, uint64_t seed)
{
	t_fill_pattern(p, pages, seed, 4);
}

static int verify(const char *p, size_t pages, uint64_t seed)
{
	return t_verify_pattern(p, pages, seed, 4);
}

/* Pages i and i+4 (equal content) share a frame: merged. */
static int merged(const char *p, size_t pages)
{
	size_t i, n = 0;

	for (i = 4; i < pages; i++)
		n += t_pfn_of(p + i * PG) == t_pfn_of(p + (i % 4) * PG);
	return n == pages - 4;
}

static int none_merged(const char *p, size_t pages)
{
	size_t i;

	for (i = 4; i < pages; i++)
		if (t_pfn_of(p + i * PG) == t_pfn_of(p + (i % 4) * PG))
			return 0;
	return 1;
}

static char *mergeable_region(uint64_t seed)
{
	char *p = t_map_anon(N);

	fill(p, N, seed);
	return p;
}

static void test_madvise(void)
{
	char *p = mergeable_region(10);

	printf("-- madvise(MADV_MERGEABLE), then MADV_UNMERGEABLE\n");
	CHECK_RET("MADV_MERGEABLE", madvise(p, N * PG, MADV_MERGEABLE), 0);
	scan_full();
	scan_full();
	CHECK("merged (equal PFNs)", merged(p, N));
	CHECK("content", verify(p, N, 10) == 0);
	CHECK_RET("MADV_UNMERGEABLE", madvise(p, N * PG, MADV_UNMERGEABLE), 0);
	CHECK("unmerged (distinct PFNs)", none_merged(p, N));
	CHECK("content after unmerge", verify(p, N, 10) == 0);
	munmap(p, N * PG);
}

static void test_errors(void)
{
	char *p = t_map_anon(4);
	char name[32] = "";

	printf("-- the kernel's errors, and other calls pass through\n");
	errno = 0;
	CHECK("unaligned: EINVAL", madvise(p + 1, PG, MADV_MERGEABLE) == -1 && errno == EINVAL);
	munmap(p + 2 * PG, PG);
	errno = 0;
	CHECK("hole: ENOMEM", madvise(p, 4 * PG, MADV_MERGEABLE) == -1 && errno == ENOMEM);
	CHECK_RET("unmergeable over the hole", madvise(p, 2 * PG, MADV_UNMERGEABLE), 0);
	CHECK_RET("length 0", madvise(p, 0, MADV_MERGEABLE), 0);
	errno = 0;
	CHECK("PR_SET_MEMORY_MERGE with arg3: EINVAL",
	      prctl(PR_SET_MEMORY_MERGE, 1, 1, 0, 0) == -1 && errno == EINVAL);
	errno = 0;
	CHECK("PR_GET_MEMORY_MERGE with arg2: EINVAL",
	      prctl(PR_GET_MEMORY_MERGE, 1, 0, 0, 0) == -1 && errno == EINVAL);
	CHECK_RET("PR_GET_MEMORY_MERGE: off", prctl(PR_GET_MEMORY_MERGE, 0, 0, 0, 0), 0);
	/* pass-through */
	memset(p, 7, PG);
	CHECK_RET("MADV_DONTNEED", madvise(p, PG, MADV_DONTNEED), 0);
	CHECK("zeros after MADV_DONTNEED", t_page_is_zero(p));
	CHECK_RET("PR_SET_NAME", prctl(PR_SET_NAME, "preload-test", 0, 0, 0), 0);
	CHECK("PR_GET_NAME", prctl(PR_GET_NAME, name, 0, 0, 0) == 0 &&
				 !strcmp(name, "preload-test"));
	errno = 0;
	CHECK("bad advice: EINVAL", madvise(p, PG, 12345) == -1 && errno == EINVAL);
	munmap(p, 2 * PG);
	munmap(p + 3 * PG, PG);
}

/* Is VM_MERGEABLE ("mg" in smaps VmFlags) set on the mapping at @p? */
static int kernel_mergeable(const void *p)
{
	char line[512];
	FILE *f = fopen("/proc/self/smaps", "re");
	uintptr_t a = (uintptr_t)p;
	int in = 0, mg = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;
		char perms[8];

		/* a mapping's header: "lo-hi perms ..." */
		if (sscanf(line, "%lx-%lx %7s ", &lo, &hi, perms) == 3 && strlen(perms) == 4) {
			in = a >= lo && a < hi;
			continue;
		}
		if (in && !strncmp(line, "VmFlags:", 8)) {
			mg = strstr(line, " mg") != NULL;
			break;
		}
	}
	fclose(f);
	return mg;
}

/* KSMU_KERNEL_KSM: whether the kernel is asked too. */
static void test_kernel_ksm_choice(void)
{
	const char *mode = getenv("KSMU_KERNEL_KSM");
	int also = mode && !strcmp(mode, "also");
	char *p = mergeable_region(90);

	printf("-- KSMU_KERNEL_KSM=%s: the kernel is %sasked too\n", mode ? mode : "(unset)",
	       also ? "" : "not ");
	CHECK_RET("MADV_MERGEABLE", madvise(p, N * PG, MADV_MERGEABLE), 0);
	/*
	 * With "also" the kernel is asked, but on 6.18 VM_MERGEABLE does not
	 * survive (or is refused on) a VMA registered with a userfaultfd,
	 * which every ksmu range is: only "off" is checkable here.
	 */
	if (!also)
		CHECK("VM_MERGEABLE never set by ksmu", kernel_mergeable(p) == 0);
	/*
	 * Not in a sanitizer build: merge-any would register the runtime's
	 * shadow (TSan's 420 GB meta-shadow piece is under merge-any's size
	 * limit), and the runtime re-maps shadow with mmap(MAP_FIXED) from any
	 * thread, the event reader included, which then waits for its own
	 * UNMAP event: the TSan hang of preload-ksm (reader in vm_mmap_pgoff,
	 * stop 13 and 2026-12-07).  See test_merge_any().
	 */
	if (!sanitized) {
		CHECK_RET("PR_SET_MEMORY_MERGE 1", prctl(PR_SET_MEMORY_MERGE, 1, 0, 0, 0), 0);
		CHECK("the kernel's merge-any as chosen",
		      syscall(SYS_prctl, PR_GET_MEMORY_MERGE, 0, 0, 0, 0) == also);
		CHECK_RET("PR_SET_MEMORY_MERGE 0", prctl(PR_SET_MEMORY_MERGE, 0, 0, 0, 0), 0);
		CHECK("the kernel's merge-any off",
		      syscall(SYS_prctl, PR_GET_MEMORY_MERGE, 0, 0, 0, 0) == 0);
	}
	CHECK_RET("MADV_UNMERGEABLE", madvise(p, N * PG, MADV_UNMERGEABLE), 0);
	CHECK("no VM_MERGEABLE after MADV_UNMERGEABLE", kernel_mergeable(p) == 0);
	munmap(p, N * PG);
}

static void test_madv_free(void)
{
	char *p = mergeable_region(20);
	size_t i;
	int ok = 1;

	printf("-- MADV_FREE of merged pages\n");
	CHECK_RET("MADV_MERGEABLE", madvise(p, N * PG, MADV_MERGEABLE), 0);
	scan_full();
	scan_full();
	CHECK("merged", merged(p, N));
	CHECK_RET("MADV_FREE succeeds (as on anonymous memory)", madvise(p, N * PG, MADV_FREE),
		  0);
	for (i = 0; i < N; i++) {
		unsigned char want[PG];

		t_fill_page(want, 20 + i % 4);
		ok &= t_page_is_zero(p + i * PG) || !memcmp(p + i * PG, want, PG);
	}
	CHECK("each page: its content or zeros", ok);
	CHECK_RET("MADV_UNMERGEABLE", madvise(p, N * PG, MADV_UNMERGEABLE), 0);
	munmap(p, N * PG);
}

static void test_merge_any(void)
{
	char *before = mergeable_region(30), *heap[N], *big;
	size_t i, same = 0;

	printf("-- prctl(PR_SET_MEMORY_MERGE): merge-any\n");
	if (sanitized) {
		/*
		 * A sanitizer's shadow memory is private anonymous memory that
		 * the merging thread touches on every access: merge-any in an
		 * instrumented process is not supported (docs/preload.md).
		 */
		printf("   skipped: sanitizer build\n");
		munmap(before, N * PG);
		return;
	}
	CHECK_RET("PR_SET_MEMORY_MERGE 1", prctl(PR_SET_MEMORY_MERGE, 1, 0, 0, 0), 0);
	CHECK_RET("PR_GET_MEMORY_MERGE: on", prctl(PR_GET_MEMORY_MERGE, 0, 0, 0, 0), 1);
	/* allocated after the call: a large block (mmap) and small ones (brk heap) */
	big = malloc(N * PG + PG);
	CHECK("malloc", big != NULL);
	if (!big)
		return;
	big = (char *)(((uintptr_t)big + PG - 1) & ~(PG - 1));
	fill(big, N, 40);
	for (i = 0; i < N; i++) {
		heap[i] = aligned_alloc(PG, PG);
		t_fill_page(heap[i], 50);
	}
	scan_full();
	scan_full();
	CHECK("memory mapped before the call merged", merged(before, N));
	CHECK("a malloc'd block allocated after the call merged", merged(big, N));
	for (i = 1; i < N; i++)
		same += t_pfn_of(heap[i]) == t_pfn_of(heap[0]);
	printf("   heap pages sharing one frame: %zu of %d\n", same, N - 1);
	CHECK("small heap blocks allocated after the call merged", same >= N / 2);
	CHECK("contents", verify(before, N, 30) == 0 && verify(big, N, 40) == 0);
	CHECK_RET("PR_SET_MEMORY_MERGE 0", prctl(PR_SET_MEMORY_MERGE, 0, 0, 0, 0), 0);
	CHECK_RET("PR_GET_MEMORY_MERGE: off", prctl(PR_GET_MEMORY_MERGE, 0, 0, 0, 0), 0);
	CHECK("unmerged", none_merged(before, N) && none_merged(big, N));
	for (i = 1, same = 0; i < N; i++)
		same += t_pfn_of(heap[i]) == t_pfn_of(heap[0]);
	CHECK("heap unmerged", same == 0);
	CHECK("contents after unmerge", verify(before, N, 30) == 0 && verify(big, N, 40) == 0);
	for (i = 0; i < N; i++)
		free(heap[i]);
	munmap(before, N * PG);
}

static void test_fork(void)
{
	char *p = mergeable_region(60), *q = t_map_anon(8);
	size_t i;
	pid_t pid;
	int status = -1;

	printf("-- fork with merged pages\n");
	CHECK_RET("MADV_MERGEABLE", madvise(p, N * PG, MADV_MERGEABLE), 0);
	scan_full();
	scan_full();
	CHECK("merged", merged(p, N));
	for (i = 0; i < 8; i++)
		t_fill_page(q + i * PG, 1000 + i); /* unique */
	CHECK_RET("MADV_MERGEABLE (unique pages)", madvise(q, 8 * PG, MADV_MERGEABLE), 0);
	scan_full();
	pid = fork();
	if (pid == 0) {
		int bad = verify(p, N, 60) != 0;

		memset(p + 5 * PG, 0xab, PG); /* the child's own copy */
		bad |= (unsigned char)p[5 * PG] != 0xab || (unsigned char)p[PG] == 0xab;
		if (!sanitized) {
			/*
			 * The child keeps being merged without calling anything
			 * (fork() restarted its engine): a fresh duplicate of
			 * page 1, written here, must merge within 10 s.
			 */
			/* the inherited descriptor reads the parent's pagemap */
			if (t_pm_fd >= 0)
				close(t_pm_fd);
			t_pm_fd = -1;
			memcpy(q + 3 * PG, p + PG, PG); /* registered before fork, not merged */
			for (i = 0; i < 1000 && t_pfn_of(q + 3 * PG) != t_pfn_of(p + PG); i++)
				usleep(10000);
			if (i == 1000) {
				fprintf(stderr, "FAIL: the child's new duplicate was not merged\n");
				bad = 1;
			}
		}
		/* the child may use the interface too */
		bad |= madvise(p, N * PG, MADV_UNMERGEABLE) != 0;
		_exit(bad);
	}
	CHECK("forked", pid > 0);
	waitpid(pid, &status, 0);
	CHECK("child saw and kept correct contents", WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK("parent's contents unchanged", verify(p, N, 60) == 0);
	CHECK_RET("MADV_UNMERGEABLE", madvise(p, N * PG, MADV_UNMERGEABLE), 0);
	CHECK_RET("MADV_UNMERGEABLE", madvise(q, 8 * PG, MADV_UNMERGEABLE), 0);
	munmap(p, N * PG);
	munmap(q, 8 * PG);
}

/* One request on the control socket; the answer in @buf. */
static int control_request(const char *req, char *buf, size_t len)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), n;
	size_t got = 0;
	ssize_t r;

	n = snprintf(a.sun_path + 1, sizeof(a.sun_path) - 1, "ksmu/%d", (int)getpid());
	if (fd < 0 ||
	    connect(fd, (struct sockaddr *)&a, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n))) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	if (write(fd, req, strlen(req)) != (ssize_t)strlen(req)) {
		close(fd);
		return -1;
	}
	while (got + 1 < len && (r = read(fd, buf + got, len - 1 - got)) > 0)
		got += (size_t)r;
	buf[got] = 0;
	close(fd);
	return 0;
}

static long long answer_value(const char *buf, const char *name)
{
	char key[80];
	const char *p;

	snprintf(key, sizeof(key), "\n%s ", name);
	p = strstr(buf, key);
	return p ? atoll(p + strlen(key)) : -1;
}

static void test_control(void)
{
	static char buf[16384];
	char *p = mergeable_region(70);
	unsigned long v = 0, sharing = 0;

	printf("-- the control socket (ksmu/PID) reports what the API says\n");
	CHECK_RET("MADV_MERGEABLE", madvise(p, N * PG, MADV_MERGEABLE), 0);
	scan_full();
	scan_full();
	CHECK_RET("run=0 (numbers stay put)", set_tunable("run", 0), 0);
	get_tunable("pages_sharing", &sharing);
	CHECK("STATUS answered", control_request("STATUS\n", buf, sizeof(buf)) == 0);
	CHECK("OK ... END", !strncmp(buf, "OK\n", 3) && strstr(buf, "\nEND\n"));
	CHECK("pid", answer_value(buf, "pid") == getpid());
	CHECK("pages_sharing as ksmu_get_tunable()", answer_value(buf, "pages_sharing") ==
							 (long long)sharing && sharing >= N - 4);
	CHECK("run 0", answer_value(buf, "run") == 0);
	CHECK("SET answered", control_request("SET pages_to_scan 777\n", buf, sizeof(buf)) == 0);
	CHECK("SET: OK", !strcmp(buf, "OK\n"));
	CHECK("knob changed", get_tunable("pages_to_scan", &v) == 0 && v == 777);
	control_request("SET pages_to_scan 12x\n", buf, sizeof(buf));
	CHECK("bad value: ERR EINVAL", !strncmp(buf, "ERR EINVAL", 10));
	control_request("SET pages_sharing 1\n", buf, sizeof(buf));
	CHECK("read-only counter: ERR EINVAL", !strncmp(buf, "ERR EINVAL", 10));
	control_request("SET run 3\n", buf, sizeof(buf));
	CHECK("run 3: ERR EINVAL", !strncmp(buf, "ERR EINVAL", 10));
	control_request("HELLO\n", buf, sizeof(buf));
	CHECK("unknown request: ERR", !strncmp(buf, "ERR EINVAL", 10));
	CHECK("nothing changed", get_tunable("pages_to_scan", &v) == 0 && v == 777 &&
				     get_tunable("run", &v) == 0 && v == 0);
	CHECK_RET("run=1", set_tunable("run", 1), 0);
	CHECK_RET("MADV_UNMERGEABLE", madvise(p, N * PG, MADV_UNMERGEABLE), 0);
	munmap(p, N * PG);
}

static volatile sig_atomic_t stop;

static void on_term(int sig)
{
	(void)sig;
	stop = 1;
}

/* --serve FILE: merge, freeze the numbers, publish them, wait for SIGTERM. */
static int serve(const char *file)
{
	static const char *const names[] = {"pages_shared", "pages_sharing", "pages_unshared",
					    "full_scans", "general_profit", "run"};
	char *p = mergeable_region(80);
	FILE *f;
	size_t i;

	signal(SIGTERM, on_term);
	if (madvise(p, N * PG, MADV_MERGEABLE))
		return 1;
	scan_full();
	scan_full();
	set_tunable("run", 0);
	f = fopen(file, "w");
	if (!f)
		return 1;
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		unsigned long v = 0;

		get_tunable(names[i], &v);
		/* general_profit is signed: print it as the signed value it holds */
		if (!strcmp(names[i], "general_profit"))
			fprintf(f, "%s %ld\n", names[i], (long)v);
		else
			fprintf(f, "%s %lu\n", names[i], v);
	}
	fclose(f);
	while (!stop)
		pause();
	return 0;
}

int main(int argc, char **argv)
{
	if (lookup_api()) {
		fprintf(stderr, "FAIL: the ksmu API is not there: run me with LD_PRELOAD=libksmu.so\n");
		return 1;
	}
	/* nothing this program starts (a sanitizer's symbolizer) gets the library */
	unsetenv("LD_PRELOAD");
	if (argc == 3 && !strcmp(argv[1], "--serve"))
		return serve(argv[2]);
	{
		struct ksmu_stats s;

		if (stats(&s) || !s.merging) {
			/* the engine cannot merge on this kernel: nothing to prove */
			t_skip("merging unavailable here (see ksmctl check)");
		}
	}
	test_errors();
	test_madvise();
	test_madv_free();
	test_merge_any();
	test_fork();
	test_control();
	test_kernel_ksm_choice();
	return t_exit();
}
