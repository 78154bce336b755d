/* SPDX-License-Identifier: MIT */
/*
 * t_daemon.h - helpers of the ksmd-user tests: a daemon of the test's own
 * on a private socket (killed with the test: PR_SET_PDEATHSIG), STATUS
 * requests, and agent processes driven through pipes.
 */
#ifndef KSMU_T_DAEMON_H
#define KSMU_T_DAEMON_H

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ksmu.h"
#include "t_mem.h"
#include "test.h"
#include "wire.h"

static const char *td_exe;  /* ksmd-user */
static char td_sock[96];    /* its socket */

/* Send one CTL request to td_sock; the reply text into @out.  Return: 0 or -1. */
static inline int td_ctl(const char *req, char *out, size_t outlen)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	static uint8_t buf[sizeof(struct ksmu_wire_hdr) + KSMU_WIRE_MAX_TEXT];
	struct timeval tv = {.tv_sec = 3};
	struct ksmu_wire_hdr h;
	size_t rl = strlen(req);
	ssize_t n;
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	snprintf(a.sun_path, sizeof(a.sun_path), "%s", td_sock);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) ||
	    connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	ksmu_wire_hdr_init(&h, KSMU_MSG_CTL, (uint32_t)(sizeof(h) + rl), 7);
	memcpy(buf, &h, sizeof(h));
	memcpy(buf + sizeof(h), req, rl);
	if (send(fd, buf, sizeof(h) + rl, MSG_NOSIGNAL) < 0) {
		close(fd);
		return -1;
	}
	n = recv(fd, buf, sizeof(buf), 0);
	close(fd);
	if (n < (ssize_t)sizeof(h) || ksmu_wire_check(buf, (size_t)n))
		return -1;
	n -= (ssize_t)sizeof(h);
	if ((size_t)n >= outlen)
		n = (ssize_t)outlen - 1;
	memcpy(out, buf + sizeof(h), (size_t)n);
	out[n] = 0;
	return 0;
}

/* Value of STATUS key @key in @text (-1: absent). */
static inline long td_value_in(const char *text, const char *key)
{
	char pat[128];
	const char *p;

	snprintf(pat, sizeof(pat), "\n%s ", key);
	p = strstr(text, pat);
	return p ? strtol(p + strlen(pat), NULL, 10) : -1;
}

/* One STATUS value (-1: absent or no daemon). */
static inline long td_status(const char *key)
{
	static char text[KSMU_WIRE_MAX_TEXT + 1];

	if (td_ctl("STATUS", text, sizeof(text)))
		return -1;
	return td_value_in(text, key);
}

static inline long td_grants_of(pid_t pid)
{
	char key[64];

	snprintf(key, sizeof(key), "proc.%d.grants", (int)pid);
	return td_status(key);
}

/*
 * Start ksmd-user on td_sock; @fault: KSMD_FAULT for it, or NULL.  The
 * daemon gets SIGTERM when the test dies (PR_SET_PDEATHSIG), so a killed
 * test leaves no daemon behind.  Return: its pid, or -1 if it does not
 * answer within 5 s.
 */
static inline pid_t td_start(const char *fault)
{
	pid_t parent = getpid(), pid;
	int i, st;

	pid = fork();
	if (pid == 0) {
		if (prctl(PR_SET_PDEATHSIG, SIGTERM) || getppid() != parent)
			_exit(127);
		if (fault)
			setenv("KSMD_FAULT", fault, 1);
		else
			unsetenv("KSMD_FAULT");
		execl(td_exe, td_exe, "--socket", td_sock, "--log-level", "error", (char *)NULL);
		_exit(127);
	}
	if (pid < 0)
		return -1;
	for (i = 0; i < 500; i++) {
		if (td_status("daemon.pid") == pid)
			return pid;
		if (waitpid(pid, &st, WNOHANG) == pid)
			return -1;
		usleep(10000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	return -1;
}

/* Stop it (SIGTERM); Return: its exit status as waitpid() gives it. */
static inline int td_stop(pid_t pid)
{
	int st = -1;

	if (pid <= 0)
		return -1;
	kill(pid, SIGTERM);
	waitpid(pid, &st, 0);
	return st;
}

/* Wait until STATUS says @key is @want (up to @ms); Return: 1 if so. */
static inline int td_wait_value(const char *key, long want, int ms)
{
	int i;

	for (i = 0; i <= ms / 10; i++) {
		if (td_status(key) == want)
			return 1;
		usleep(10000);
	}
	return 0;
}

/* ------------------------------------------------------------ agents */

/*
 * An agent process maps TD_PAGES pages, registered with ksmu, in three
 * parts:
 *   cross  [0, TD_CROSS): content @cross_seed + i, the same in every agent
 *          given the same seed (merged across processes by the daemon);
 *   pairs  [TD_CROSS, TD_CROSS + 2 * TD_PAIRS): page 2k and 2k + 1 equal,
 *          content @own_seed + k (a local duplicate: LOOKUP with CREATE,
 *          a store page only this process uses);
 *   spare  the rest: content @own_seed + 1000 + i until TD_FILL (first
 *          half) or TD_FILL2 (second half) rewrites it as pairs: spare page
 *          2k and 2k + 1 get content seed + k.  (A page written after it
 *          was merged is not merged again: fill each half once.)
 * It remembers what every page must hold and obeys commands from the test.
 */
#define TD_PAGES 80
#define TD_CROSS 32
#define TD_PAIRS 8
#define TD_SPARE0 (TD_CROSS + 2 * TD_PAIRS)
#define TD_NSPARE (TD_PAGES - TD_SPARE0)
#define TD_HALF (TD_SPARE0 + TD_NSPARE / 2) /* second half of the spare pages */

enum {
	TD_SCAN = 's',	 /* arg: full scans to run; reply 1 */
	TD_PFNS = 'p',	 /* reply: TD_PAGES PFNs */
	TD_VERIFY = 'v', /* reply: 1 if every page holds what it must */
	TD_FILL = 'f',	 /* arg: seed; spare pages 2k, 2k + 1 become seed + k; reply 1 */
	TD_FILL2 = 'g',	 /* the same for the second half */
	TD_EXIT = 'x',
};

struct td_agent {
	pid_t pid;
	int to, from; /* pipe ends: commands, replies */
};

struct td_cmd {
	char cmd;
	uint64_t arg;
};

static inline void td_agent_main(int in, int out, uint64_t cross_seed, uint64_t own_seed)
{
	static uint64_t want[TD_PAGES];
	struct td_cmd c;
	char *p;
	size_t i;

	p = t_map_anon(TD_PAGES);
	for (i = 0; i < TD_PAGES; i++) {
		if (i < TD_CROSS)
			want[i] = cross_seed + i;
		else if (i < TD_SPARE0)
			want[i] = own_seed + (i - TD_CROSS) / 2;
		else
			want[i] = own_seed + 1000 + i;
		t_fill_page(p + i * T_PG, want[i]);
	}
	ksmu_set_tunable("sleep_millisecs", 5);
	ksmu_set_tunable("pages_to_scan", TD_PAGES);
	if (ksmu_register(p, TD_PAGES * T_PG))
		_exit(4);
	while (read(in, &c, sizeof(c)) == sizeof(c)) {
		uint64_t pfns[TD_PAGES];
		int ok = 1;

		switch (c.cmd) {
		case TD_SCAN:
			for (i = 0; i < c.arg; i++)
				ksmu_scan_full();
			break;
		case TD_PFNS:
			for (i = 0; i < TD_PAGES; i++)
				pfns[i] = t_pfn_of(p + i * T_PG);
			if (write(out, pfns, sizeof(pfns)) != sizeof(pfns))
				_exit(5);
			continue;
		case TD_VERIFY:
			for (i = 0; i < TD_PAGES; i++) {
				char ref[4096];

				t_fill_page(ref, want[i]);
				if (memcmp(ref, p + i * T_PG, T_PG)) {
					fprintf(stderr, "agent %d: page %zu wrong\n", (int)getpid(), i);
					ok = 0;
				}
			}
			break;
		case TD_FILL:
		case TD_FILL2:
			for (i = c.cmd == TD_FILL ? TD_SPARE0 : TD_HALF;
			     i < (c.cmd == TD_FILL ? TD_HALF : TD_PAGES); i++) {
				want[i] = c.arg + (i - TD_SPARE0) / 2;
				t_fill_page(p + i * T_PG, want[i]);
			}
			break;
		default:
			_exit(0);
		}
		if (write(out, &ok, sizeof(ok)) != sizeof(ok))
			_exit(6);
	}
	_exit(0);
}

/* Start an agent; @env: "NAME=VALUE" for it, or NULL.  Return: 0 or -1. */
static inline int td_agent_start(struct td_agent *a, uint64_t cross_seed, uint64_t own_seed,
				 const char *env)
{
	int to[2], from[2];
	pid_t parent = getpid();

	if (pipe(to) || pipe(from))
		return -1;
	a->pid = fork();
	if (a->pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(7);
		close(to[1]);
		close(from[0]);
		setenv("KSMU_DAEMON", td_sock, 1);
		if (env)
			putenv((char *)env);
		td_agent_main(to[0], from[1], cross_seed, own_seed);
	}
	close(to[0]);
	close(from[1]);
	a->to = to[1];
	a->from = from[0];
	return a->pid > 0 ? 0 : -1;
}

/* Send a command; Return: its 0/1 reply (0 also if the agent is gone). */
static inline int td_agent_cmd(struct td_agent *a, char cmd, uint64_t arg)
{
	struct td_cmd c = {.cmd = cmd, .arg = arg};
	int ok = 0;

	if (write(a->to, &c, sizeof(c)) != sizeof(c) || read(a->from, &ok, sizeof(ok)) != sizeof(ok))
		return 0;
	return ok;
}

static inline int td_agent_pfns(struct td_agent *a, uint64_t *pfns)
{
	struct td_cmd c = {.cmd = TD_PFNS};

	return write(a->to, &c, sizeof(c)) == sizeof(c) &&
	       read(a->from, pfns, TD_PAGES * sizeof(uint64_t)) ==
		   (ssize_t)(TD_PAGES * sizeof(uint64_t));
}

/* Tell it to exit and reap it; Return: its exit code (128 + signal if killed). */
static inline int td_agent_stop(struct td_agent *a)
{
	struct td_cmd c = {.cmd = TD_EXIT};
	int st = -1;

	if (write(a->to, &c, sizeof(c)) != sizeof(c)) {
		/* already gone */
	}
	close(a->to);
	close(a->from);
	waitpid(a->pid, &st, 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* SIGKILL it and reap it. */
static inline void td_agent_kill(struct td_agent *a)
{
	kill(a->pid, SIGKILL);
	close(a->to);
	close(a->from);
	waitpid(a->pid, NULL, 0);
}

/*
 * Scan the agents until pages [@from, @from + @n) have equal, present PFNs
 * in all @nr of them (merged across processes), up to @ms.  Return: 1 if so.
 */
static inline int td_wait_shared(struct td_agent *ag, int nr, size_t from, size_t n, int ms)
{
	static uint64_t pfns[8][TD_PAGES];
	int round, j;
	size_t i;

	for (round = 0; round <= ms / 20; round++) {
		int same = 1;

		for (j = 0; j < nr; j++)
			if (!td_agent_cmd(&ag[j], TD_SCAN, 1) || !td_agent_pfns(&ag[j], pfns[j]))
				return 0;
		for (i = from; i < from + n && same; i++)
			for (j = 0; j < nr; j++)
				same &= pfns[j][i] != 0 && pfns[j][i] == pfns[0][i];
		if (same)
			return 1;
		usleep(20000);
	}
	return 0;
}

/*
 * Scan @a until its @npairs pairs from page @from (2k, 2k + 1) have equal
 * PFNs (merged in the process), up to @ms.  Return: 1 if so.
 */
static inline int td_wait_pairs(struct td_agent *a, size_t from, size_t npairs, int ms)
{
	uint64_t pfns[TD_PAGES];
	int round;
	size_t k;

	for (round = 0; round <= ms / 20; round++) {
		int same = 1;

		if (!td_agent_cmd(a, TD_SCAN, 1) || !td_agent_pfns(a, pfns))
			return 0;
		for (k = 0; k < npairs; k++)
			same &= pfns[from + 2 * k] != 0 && pfns[from + 2 * k] == pfns[from + 2 * k + 1];
		if (same)
			return 1;
		usleep(20000);
	}
	return 0;
}

#endif /* KSMU_T_DAEMON_H */
