/* SPDX-License-Identifier: MIT */
/*
 * daemon-merge.c - ksmd-user merges across processes.
 *
 * Starts its own ksmd-user (argv[1]) on a private socket and checks, the
 * way the kernel's KSM selftests do (PFNs in /proc/PID/pagemap):
 *   1. three processes with identical content (no duplicate inside any of
 *      them) end up with the same PFN for every page;
 *   2. a write in one stays in that one (isolation), the others read the
 *      original content;
 *   3. when the processes exit, the daemon's store pages are freed;
 *   4. a process of another uid cannot write, map shared-writable, reopen
 *      writable, chmod or punch the store it received;
 *   5. two users do not merge by default, and do when a configured domain
 *      holds both;
 *   6. the daemon killed while processes merge leaves every byte correct,
 *      and the processes go on merging alone;
 *   7. "allow A B zero" lets two domains share zero pages and nothing else;
 *   8. more copies of one page in a process than max_page_sharing (256):
 *      all merge (the daemon's page full, local pages for the rest), the
 *      node limit holds, and the daemon's page is still shared across.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ksmu.h"
#include "probe.h"
#include "t_mem.h"
#include "test.h"
#include "t_daemon.h"
#include "wire.h"

#define PAGES 64
#define NPROC 3

static const char *daemon_exe;
static char dir[48], sock[96], conf[96];
static pid_t daemon_pid = -1;

static void stop_daemon(void)
{
	if (daemon_pid > 0) {
		kill(daemon_pid, SIGTERM);
		waitpid(daemon_pid, NULL, 0);
	}
	daemon_pid = -1;
}

/* A STATUS value of our daemon (t_daemon.h speaks to td_sock). */
static long status_value(const char *key)
{
	return td_status(key);
}

static int start_daemon(const char *config)
{
	int i;
	pid_t parent = getpid();

	daemon_pid = fork();
	if (daemon_pid == 0) {
		/* a killed test leaves no daemon behind */
		if (prctl(PR_SET_PDEATHSIG, SIGTERM) || getppid() != parent)
			_exit(127);
		if (config)
			execl(daemon_exe, daemon_exe, "--socket", sock, "--log-level", "warn",
			      "--config", config, (char *)NULL);
		else
			execl(daemon_exe, daemon_exe, "--socket", sock, "--log-level", "warn",
			      (char *)NULL);
		_exit(127);
	}
	for (i = 0; i < 500; i++) {
		if (status_value("daemon.pid") > 0)
			return 0;
		usleep(10000);
	}
	return -1;
}

/* A seed with this bit: the first half of the pages are zero pages. */
#define ZERO_HALF (1ULL << 40)

/* Page i of content @seed: distinct pages, the same in every process. */
static void ref_page(char *page, uint64_t seed, size_t i)
{
	if ((seed & ZERO_HALF) && i < PAGES / 2)
		memset(page, 0, 4096);
	else
		t_fill_page(page, (seed & ~ZERO_HALF) + i);
}

static void fill(char *p, size_t pages, uint64_t seed)
{
	size_t i;

	for (i = 0; i < pages; i++)
		ref_page(p + i * 4096, seed, i);
}

static int all_merged(const char *p, size_t pages)
{
	size_t i;

	for (i = 0; i < pages; i++)
		if (!(t_pm_entry(p + i * 4096) & (1ULL << 61))) /* file page: a store */
			return 0;
	return 1;
}

/* Keep CAP_SYS_PTRACE (userfaultfd) and CAP_SYS_ADMIN (PFNs) as uid @uid. */
static int become(uid_t uid)
{
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct data[2];

	if (prctl(PR_SET_KEEPCAPS, 1) || setresgid(uid, uid, uid) || setresuid(uid, uid, uid))
		return -1;
	memset(data, 0, sizeof(data));
	data[0].effective = data[0].permitted =
	    (1u << CAP_SYS_PTRACE) | (1u << CAP_SYS_ADMIN);
	if (syscall(SYS_capset, &hdr, data))
		return -1;
	/* setuid made us non-dumpable: /proc/self would be root's */
	return prctl(PR_SET_DUMPABLE, 1);
}

struct child {
	pid_t pid;
	int to[2], from[2];
};

enum { CMD_WRITE = 'w', CMD_VERIFY = 'v', CMD_PROBE = 'p', CMD_EXIT = 'x' };

/*
 * An agent: maps PAGES pages of content @seed, registers them, scans
 * until all are merged (only the zero half for ZERO_HALF; at most 20 s),
 * sends its PFNs, then obeys commands.
 */
static void agent_main(struct child *c, uid_t uid, uint64_t seed)
{
	uint64_t pfns[PAGES];
	char *p;
	size_t i;
	char cmd;
	int merged = 0, k, ok;

	close(c->to[1]);
	close(c->from[0]);
	if (uid && become(uid)) {
		fprintf(stderr, "daemon-merge: cannot become uid %u: %s\n", (unsigned)uid,
			strerror(errno));
		_exit(3);
	}
	setenv("KSMU_DAEMON", sock, 1);
	p = t_map_anon(PAGES);
	fill(p, PAGES, seed);
	if (ksmu_register(p, PAGES * 4096UL))
		_exit(4);
	for (k = 0; k < 400 && !merged; k++) {
		ksmu_scan_full();
		merged = all_merged(p, (seed & ZERO_HALF) ? PAGES / 2 : PAGES);
		if (!merged)
			usleep(50000);
	}
	for (i = 0; i < PAGES; i++)
		pfns[i] = t_pfn_of(p + i * 4096);
	if (write(c->from[1], &merged, sizeof(merged)) != sizeof(merged) ||
	    write(c->from[1], pfns, sizeof(pfns)) != sizeof(pfns))
		_exit(5);
	while (read(c->to[0], &cmd, 1) == 1) {
		ok = 1;
		if (cmd == CMD_WRITE) {
			memset(p, 0x5a, 4096);
			ok = ((unsigned char *)p)[100] == 0x5a && t_verify_pattern(p + 4096, PAGES - 1, seed + 1, PAGES) == 0;
		} else if (cmd == CMD_VERIFY) {
			for (i = 0; i < PAGES; i++) {
				char ref[4096];

				ref_page(ref, seed, i);
				if (memcmp(ref, p + i * 4096, 4096))
					ok = 0;
			}
		} else if (cmd == CMD_PROBE) {
			/* the daemon's store: the one read-only memfd we hold */
			int fd, found = -1;
			char path[64], link[128];

			for (fd = 3; fd < 1024; fd++) {
				ssize_t n;

				snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
				n = readlink(path, link, sizeof(link) - 1);
				if (n <= 0)
					continue;
				link[n] = 0;
				if (strstr(link, "memfd:ksmu-store") &&
				    (fcntl(fd, F_GETFL) & O_ACCMODE) == O_RDONLY)
					found = fd;
			}
			ok = found >= 0;
			if (found >= 0) {
				char b[4096] = {1};
				void *m;

				snprintf(path, sizeof(path), "/proc/self/fd/%d", found);
				ok &= pwrite(found, b, sizeof(b), 0) < 0 && errno == EBADF;
				ok &= write(found, b, 1) < 0;
				m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, found, 0);
				ok &= m == MAP_FAILED && errno == EACCES;
				ok &= open(path, O_RDWR | O_CLOEXEC) < 0 && errno == EACCES;
				ok &= fchmod(found, 0666) < 0 && errno == EPERM;
				ok &= fallocate(found, 0x03 /* PUNCH_HOLE|KEEP_SIZE */, 0, 4096) < 0;
				ok &= ftruncate(found, 0) < 0;
				m = mmap(NULL, 4096, PROT_READ, MAP_SHARED, found, 0);
				ok &= m != MAP_FAILED && mprotect(m, 4096, PROT_READ | PROT_WRITE) < 0;
			}
		} else {
			break;
		}
		if (write(c->from[1], &ok, sizeof(ok)) != sizeof(ok))
			_exit(6);
	}
	_exit(0);
}

static int spawn(struct child *c, uid_t uid, uint64_t seed)
{
	if (pipe(c->to) || pipe(c->from))
		return -1;
	c->pid = fork();
	if (c->pid == 0)
		agent_main(c, uid, seed);
	close(c->to[0]);
	close(c->from[1]);
	return c->pid > 0 ? 0 : -1;
}

static int collect(struct child *c, uint64_t *pfns)
{
	int merged = -1;

	if (read(c->from[0], &merged, sizeof(merged)) != sizeof(merged) ||
	    read(c->from[0], pfns, PAGES * sizeof(uint64_t)) != (ssize_t)(PAGES * sizeof(uint64_t)))
		return -1;
	return merged;
}

static int command(struct child *c, char cmd)
{
	int ok = 0;

	if (write(c->to[1], &cmd, 1) != 1 || read(c->from[0], &ok, sizeof(ok)) != sizeof(ok))
		return 0;
	return ok;
}

static int finish(struct child *c)
{
	int st = -1;
	char x = CMD_EXIT;

	if (write(c->to[1], &x, 1) != 1) {
		/* already gone */
	}
	close(c->to[1]);
	close(c->from[0]);
	waitpid(c->pid, &st, 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static size_t equal_pfns(uint64_t (*pfns)[PAGES], int n)
{
	size_t i, same = 0;
	int j;

	for (i = 0; i < PAGES; i++) {
		int eq = pfns[0][i] != 0;

		for (j = 1; j < n; j++)
			eq &= pfns[j][i] == pfns[0][i];
		same += (size_t)eq;
	}
	return same;
}

static void test_cross_process(void)
{
	struct child c[NPROC];
	uint64_t pfns[NPROC][PAGES];
	int i, merged[NPROC], n = 0;
	long store;

	for (i = 0; i < NPROC; i++)
		CHECK("agent started", spawn(&c[i], 0, 1000) == 0);
	for (i = 0; i < NPROC; i++) {
		merged[i] = collect(&c[i], pfns[i]);
		n += merged[i] == 1;
	}
	CHECK("every process merged all its pages", n == NPROC);
	CHECK("equal PFNs across the three processes for every page",
	      equal_pfns(pfns, NPROC) == PAGES);
	store = status_value("global.store_pages");
	CHECK("the daemon holds one store page per distinct page", store == PAGES);
	CHECK("status counts three connected agents", status_value("daemon.clients") == NPROC);
	CHECK("a write stays private to the writer", command(&c[0], CMD_WRITE));
	CHECK("the other processes read the original content",
	      command(&c[1], CMD_VERIFY) && command(&c[2], CMD_VERIFY));
	for (i = 0; i < NPROC; i++)
		CHECK("agent exited cleanly", finish(&c[i]) == 0);
	for (i = 0; i < 300 && status_value("global.store_pages") != 0; i++)
		usleep(10000);
	CHECK("store pages are freed when their sharers exit", status_value("global.store_pages") == 0);
	CHECK("no process left behind", status_value("daemon.ghosts") == 0 &&
						status_value("daemon.clients") == 0);
}

static void test_store_readonly(void)
{
	struct child c[2];
	uint64_t pfns[2][PAGES];
	int ok;

	CHECK("agents of uid 1000 started", spawn(&c[0], 1000, 5000) == 0 && spawn(&c[1], 1000, 5000) == 0);
	ok = collect(&c[0], pfns[0]) == 1;
	ok &= collect(&c[1], pfns[1]) == 1;
	CHECK("two processes of one non-root user merge", ok && equal_pfns(pfns, 2) == PAGES);
	CHECK("the store cannot be written, mapped writable, reopened, chmod'ed or punched",
	      command(&c[0], CMD_PROBE));
	CHECK("content intact after the attempts", command(&c[1], CMD_VERIFY) && command(&c[0], CMD_VERIFY));
	finish(&c[0]);
	finish(&c[1]);
}

static void test_domains(void)
{
	struct child c[2];
	uint64_t pfns[2][PAGES];
	FILE *f;

	/* default: uid 1000 and uid 1001 are two domains */
	spawn(&c[0], 1000, 7000);
	spawn(&c[1], 1001, 7000);
	collect(&c[0], pfns[0]);
	collect(&c[1], pfns[1]);
	CHECK("two users do not merge by default", equal_pfns(pfns, 2) == 0);
	finish(&c[0]);
	finish(&c[1]);
	stop_daemon();

	f = fopen(conf, "w");
	CHECK("config written", f && fprintf(f, "domain team uid=1000,1001\n") > 0 && fclose(f) == 0);
	CHECK("daemon restarted with a domain of both users", start_daemon(conf) == 0);
	spawn(&c[0], 1000, 7000);
	spawn(&c[1], 1001, 7000);
	CHECK("both merge all pages when configured",
	      collect(&c[0], pfns[0]) == 1 && collect(&c[1], pfns[1]) == 1);
	CHECK("equal PFNs across the two users", equal_pfns(pfns, 2) == PAGES);
	finish(&c[0]);
	finish(&c[1]);
}

/* Zero pages only: the pattern half stays unmerged, the zero half is shared. */
static void test_zero_domains(void)
{
	struct child c[2];
	uint64_t pfns[2][PAGES];
	FILE *f;
	size_t i, shared_zero = 0, shared_other = 0;

	stop_daemon();
	f = fopen(conf, "w");
	CHECK("config written", f &&
				    fprintf(f, "domain a uid=1000\ndomain b uid=1001\nallow a b zero\n") > 0 &&
				    fclose(f) == 0);
	CHECK("daemon restarted with 'allow a b zero'", start_daemon(conf) == 0);
	spawn(&c[0], 1000, 11000 | ZERO_HALF);
	spawn(&c[1], 1001, 11000 | ZERO_HALF);
	CHECK("both processes merged their zero pages",
	      collect(&c[0], pfns[0]) == 1 && collect(&c[1], pfns[1]) == 1);
	for (i = 0; i < PAGES; i++) {
		if (pfns[0][i] != pfns[1][i] || !pfns[0][i])
			continue;
		if (i < PAGES / 2)
			shared_zero++;
		else
			shared_other++;
	}
	CHECK("the two domains share every zero page", shared_zero == PAGES / 2);
	CHECK("and no other page (same content, other domain)", shared_other == 0);
	CHECK("content correct in both", command(&c[0], CMD_VERIFY) && command(&c[1], CMD_VERIFY));
	finish(&c[0]);
	finish(&c[1]);
}

static void test_daemon_killed(void)
{
	struct child c[NPROC];
	uint64_t pfns[NPROC][PAGES];
	int i, ok = 1;

	for (i = 0; i < NPROC; i++)
		spawn(&c[i], 0, 9000);
	/* kill it while the agents look up and merge */
	usleep(30000);
	kill(daemon_pid, SIGKILL);
	waitpid(daemon_pid, NULL, 0);
	daemon_pid = -1;
	for (i = 0; i < NPROC; i++)
		collect(&c[i], pfns[i]); /* merged or not: the content must be right */
	for (i = 0; i < NPROC; i++)
		ok &= command(&c[i], CMD_VERIFY);
	CHECK("every byte correct in every process after the daemon was killed", ok);
	CHECK("a write after the kill stays private", command(&c[0], CMD_WRITE) &&
						       command(&c[1], CMD_VERIFY));
	for (i = 0; i < NPROC; i++)
		CHECK("agent survived the daemon", finish(&c[i]) == 0);
}

#define COPIES 700 /* > 2 * max_page_sharing: the daemon's node plus local chains */

/* One agent with COPIES copies of one page: writes its PFNs, exits 0 if correct. */
static void copies_main(int fd)
{
	static uint64_t pfns[COPIES];
	char ref[4096];
	char *p;
	size_t i;
	int k, merged = 0;

	setenv("KSMU_DAEMON", sock, 1);
	p = t_map_anon(COPIES);
	t_fill_page(ref, 4242);
	for (i = 0; i < COPIES; i++)
		memcpy(p + i * 4096, ref, 4096);
	if (ksmu_register(p, COPIES * 4096UL))
		_exit(4);
	for (k = 0; k < 400 && !merged; k++) {
		ksmu_scan_full();
		merged = all_merged(p, COPIES);
		if (!merged)
			usleep(50000);
	}
	for (i = 0; i < COPIES; i++) {
		pfns[i] = t_pfn_of(p + i * 4096);
		if (memcmp(p + i * 4096, ref, 4096))
			_exit(7);
	}
	if (write(fd, &merged, sizeof(merged)) != sizeof(merged) ||
	    write(fd, pfns, sizeof(pfns)) != sizeof(pfns))
		_exit(5);
	/* stay until the parent has read our pagemap-derived PFNs */
	if (read(fd, &k, 1) < 0)
		_exit(6);
	_exit(0);
}

static int read_full(int fd, void *buf, size_t len)
{
	char *b = buf;

	while (len) {
		ssize_t n = read(fd, b, len);

		if (n <= 0)
			return -1;
		b += n;
		len -= (size_t)n;
	}
	return 0;
}

static size_t max_sharing(const uint64_t *pfns, size_t n)
{
	size_t i, j, best = 0;

	for (i = 0; i < n; i++) {
		size_t c = 0;

		for (j = 0; j < n; j++)
			c += pfns[j] == pfns[i];
		if (c > best)
			best = c;
	}
	return best;
}

static void test_chains(void)
{
	static uint64_t pfns[2][COPIES];
	int sv[2][2], merged[2] = {0, 0}, st, i, ok = 1;
	pid_t pid[2];
	size_t j, k, across = 0;

	for (i = 0; i < 2; i++) {
		if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv[i]))
			return;
		pid[i] = fork();
		if (pid[i] == 0) {
			int m;

			for (m = 0; m <= i; m++)
				close(sv[m][0]); /* the first agent's EOF must not wait for us */
			copies_main(sv[i][1]);
		}
		close(sv[i][1]);
	}
	for (i = 0; i < 2; i++) {
		ok &= read(sv[i][0], &merged[i], sizeof(merged[i])) == sizeof(merged[i]) &&
		      read_full(sv[i][0], pfns[i], sizeof(pfns[i])) == 0;
	}
	CHECK("both agents report, each with more copies than max_page_sharing", ok);
	CHECK("every copy merged in both processes", merged[0] == 1 && merged[1] == 1);
	CHECK("no store page has more than max_page_sharing (256) sharers in a process",
	      ok && max_sharing(pfns[0], COPIES) <= 256 && max_sharing(pfns[1], COPIES) <= 256);
	for (j = 0; ok && j < COPIES; j++)
		for (k = 0; k < COPIES; k++)
			if (pfns[1][j] == pfns[0][k]) {
				across++;
				break;
			}
	CHECK("the daemon's page is shared across the two processes", across > 0);
	for (i = 0; i < 2; i++) {
		close(sv[i][0]);
		waitpid(pid[i], &st, 0);
		CHECK("agent exited cleanly (no BUG, content correct)",
		      WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
}

int main(int argc, char **argv)
{
	const struct ksmu_features *f = ksmu_probe_get();

	if (argc < 2) {
		fprintf(stderr, "usage: daemon-merge KSMD-USER\n");
		return T_EXIT_FAIL;
	}
	if (!f->uffd_move || geteuid() != 0) {
		printf("SKIP: needs root and UFFDIO_MOVE\n");
		return T_EXIT_SKIP;
	}
	signal(SIGPIPE, SIG_IGN);
	daemon_exe = argv[1];
	snprintf(dir, sizeof(dir), "/tmp/ksmu-dm-%d", (int)getpid());
	snprintf(sock, sizeof(sock), "%s/ksmd.sock", dir);
	snprintf(td_sock, sizeof(td_sock), "%s", sock);
	td_exe = daemon_exe;
	snprintf(conf, sizeof(conf), "%s/ksmd.conf", dir);
	mkdir(dir, 0755);
	if (start_daemon(NULL)) {
		printf("FAIL: ksmd-user did not start\n");
		return T_EXIT_FAIL;
	}
	test_cross_process();
	test_store_readonly();
	test_daemon_killed();
	if (start_daemon(NULL) == 0) {
		test_domains();
		test_zero_domains();
		test_chains();
	}
	stop_daemon();
	unlink(conf);
	rmdir(dir);
	return t_exit();
}
