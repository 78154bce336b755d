/* SPDX-License-Identifier: MIT */
/*
 * Description: ksmd-user (argv[1]) and its agents killed at the worst
 * moments, and a restarted daemon rejoined.
 *
 *   0. A bad KSMU_DAEMON_RETRY_MS is reported and ignored; the daemon dies
 *      right after a RESULT (its grants not counted: KSMD_FAULT=result:2)
 *      and before a HINT (hint:1): the agents' data stays right and they
 *      merge their local duplicates alone.
 *   1. The daemon dies between a LOOKUP with CREATE and its answer
 *      (KSMD_FAULT=create:3, a test hook that _exits there): every agent's
 *      memory stays correct, the agents go on alone and merge new local
 *      duplicates in their own stores.
 *   2. A new daemon on the same socket: the agents rejoin
 *      (KSMU_DAEMON_RETRY_MS=100) and merge new content across processes
 *      again (equal PFNs in /proc/PID/pagemap).
 *   3. A third agent is SIGKILLed at delays spread over its whole merge
 *      (inside merge windows and lookups among them), again and again: each
 *      time the daemon drops it (no ghost once its pidfd reports the exit),
 *      frees the store pages only it used (global.store_pages back to the
 *      value before it came), and the other agents' data stays correct.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "probe.h"
#include "t_daemon.h"

#define CROSS_SEED 60000
#define KILLS 12

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Wait up to @ms for the daemon @pid to exit by itself; Return: its status or -1. */
static int wait_exit(pid_t pid, int ms)
{
	int i, st;

	for (i = 0; i <= ms / 10; i++) {
		if (waitpid(pid, &st, WNOHANG) == pid)
			return st;
		usleep(10000);
	}
	return -1;
}

/*
 * The daemon dies at @fault while two fresh agents merge: their data stays
 * right and they go on.  Return: 1 if so.
 */
static int die_at(const char *fault)
{
	struct td_agent a[2];
	pid_t d = td_start(fault);
	int st, ok;

	if (d < 0)
		return 0;
	ok = td_agent_start(&a[0], CROSS_SEED + 7000, 700000, NULL) == 0 &&
	     td_agent_start(&a[1], CROSS_SEED + 7000, 800000, NULL) == 0;
	st = wait_exit(d, 20000);
	if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 86) {
		fprintf(stderr, "KSMD_FAULT=%s: the daemon did not exit there\n", fault);
		ok = 0;
		kill(d, SIGKILL);
		waitpid(d, NULL, 0);
	}
	ok &= td_agent_cmd(&a[0], TD_VERIFY, 0) && td_agent_cmd(&a[1], TD_VERIFY, 0);
	ok &= td_wait_pairs(&a[0], TD_CROSS, TD_PAIRS, 10000) &&
	      td_wait_pairs(&a[1], TD_CROSS, TD_PAIRS, 10000);
	ok &= td_agent_cmd(&a[0], TD_VERIFY, 0) && td_agent_cmd(&a[1], TD_VERIFY, 0);
	ok &= td_agent_stop(&a[0]) == 0;
	ok &= td_agent_stop(&a[1]) == 0;
	return ok;
}

/* A bad KSMU_DAEMON_RETRY_MS is reported and ignored.  Return: 1 if so. */
static int retry_env_refused(const char *value)
{
	char out[512] = "", want[128];
	int p[2], st;
	ssize_t n, got = 0;
	pid_t pid;

	if (pipe(p))
		return 0;
	pid = fork();
	if (pid == 0) {
		char *m = t_map_anon(1);

		dup2(p[1], 2);
		setenv("KSMU_DAEMON_RETRY_MS", value, 1);
		setenv("KSMU_DAEMON", "off", 1);
		m[0] = 1;
		_exit(ksmu_register(m, 4096) ? 3 : 0);
	}
	close(p[1]);
	while ((n = read(p[0], out + got, sizeof(out) - 1 - (size_t)got)) > 0)
		got += n;
	close(p[0]);
	waitpid(pid, &st, 0);
	snprintf(want, sizeof(want), "KSMU_DAEMON_RETRY_MS=%s ignored", value);
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 && strstr(out, want) != NULL;
}

int main(int argc, char **argv)
{
	const struct ksmu_features *f = ksmu_probe_get();
	struct td_agent ag[2], v;
	long store0, unshared0, grants0[2];
	uint64_t t0, full_ms;
	char dir[48];
	pid_t d;
	int st, k, ok;

	if (argc < 2) {
		fprintf(stderr, "usage: daemon-faults KSMD-USER\n");
		return T_EXIT_FAIL;
	}
	if (!f->uffd_move || geteuid() != 0)
		t_skip("needs root and UFFDIO_MOVE");
	signal(SIGPIPE, SIG_IGN);
	td_exe = argv[1];
	snprintf(dir, sizeof(dir), "/tmp/ksmu-df-%d", (int)getpid());
	snprintf(td_sock, sizeof(td_sock), "%s/ksmd.sock", dir);
	mkdir(dir, 0755);

	CHECK("KSMU_DAEMON_RETRY_MS: a bad value is reported and ignored",
	      retry_env_refused("abc") && retry_env_refused("9") && retry_env_refused("3600001") &&
		  !retry_env_refused("100"));
	CHECK("the daemon dies after a RESULT, before counting its grants: agents fine",
	      die_at("result:2"));
	CHECK("the daemon dies before a HINT: agents fine", die_at("hint:1"));

	/* 1. the daemon dies at its third LOOKUP with CREATE, before answering */
	d = td_start("create:3");
	if (d < 0) {
		printf("FAIL: ksmd-user did not start\n");
		return T_EXIT_FAIL;
	}
	CHECK("agents started",
	      td_agent_start(&ag[0], CROSS_SEED, 100000, "KSMU_DAEMON_RETRY_MS=100") == 0 &&
		  td_agent_start(&ag[1], CROSS_SEED, 200000, "KSMU_DAEMON_RETRY_MS=100") == 0);
	st = wait_exit(d, 20000);
	CHECK("the daemon died at the fault point (KSMD_FAULT=create:3)",
	      st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 86);
	if (st == -1) {
		kill(d, SIGKILL);
		waitpid(d, NULL, 0);
	}
	CHECK("every byte correct in both agents after the daemon died",
	      td_agent_cmd(&ag[0], TD_VERIFY, 0) && td_agent_cmd(&ag[1], TD_VERIFY, 0));
	CHECK("the agents merge their local duplicates alone",
	      td_wait_pairs(&ag[0], TD_CROSS, TD_PAIRS, 10000) &&
		  td_wait_pairs(&ag[1], TD_CROSS, TD_PAIRS, 10000));
	CHECK("new local duplicates merge without a daemon",
	      td_agent_cmd(&ag[0], TD_FILL, 300000) && td_agent_cmd(&ag[1], TD_FILL, 400000) &&
		  td_wait_pairs(&ag[0], TD_SPARE0, TD_NSPARE / 4, 10000) &&
		  td_wait_pairs(&ag[1], TD_SPARE0, TD_NSPARE / 4, 10000));
	CHECK("still correct, merged alone",
	      td_agent_cmd(&ag[0], TD_VERIFY, 0) && td_agent_cmd(&ag[1], TD_VERIFY, 0));

	/* 2. a new daemon on the same socket: rejoined, merging across again */
	d = td_start(NULL);
	CHECK("a new daemon starts on the stale socket", d > 0);
	if (d < 0)
		return t_exit();
	for (k = 0; k < 500 && td_status("daemon.clients") != 2; k++) {
		td_agent_cmd(&ag[0], TD_SCAN, 1);
		td_agent_cmd(&ag[1], TD_SCAN, 1);
		usleep(10000);
	}
	CHECK("both agents rejoined the new daemon", td_status("daemon.clients") == 2);
	CHECK("new content merges across processes again (equal PFNs)",
	      td_agent_cmd(&ag[0], TD_FILL2, 500000) && td_agent_cmd(&ag[1], TD_FILL2, 500000) &&
		  td_wait_shared(ag, 2, TD_HALF, TD_NSPARE / 2, 20000));
	CHECK("correct after the rejoin",
	      td_agent_cmd(&ag[0], TD_VERIFY, 0) && td_agent_cmd(&ag[1], TD_VERIFY, 0));

	/* 3. a third agent killed at many moments of its merge */
	usleep(300000);
	store0 = td_status("global.store_pages");
	unshared0 = td_status("global.pages_unshared");
	grants0[0] = td_grants_of(ag[0].pid);
	grants0[1] = td_grants_of(ag[1].pid);
	CHECK("the daemon holds the shared pages", store0 > 0 && grants0[0] > 0 && grants0[1] > 0);
	/* how long a whole merge takes here: the kills are spread over it */
	t0 = mono_ms();
	CHECK("a victim agent merges its local pairs through the daemon",
	      td_agent_start(&v, CROSS_SEED + 5000, 600000, NULL) == 0 &&
		  td_wait_pairs(&v, TD_CROSS, TD_PAIRS, 10000));
	full_ms = mono_ms() - t0;
	CHECK("the victim's pairs made store pages of the daemon",
	      td_status("global.store_pages") > store0);
	td_agent_kill(&v);
	ok = 1;
	for (k = 0; k < KILLS; k++) {
		uint64_t delay_us = full_ms * 1000 * (uint64_t)k / KILLS;

		if (td_agent_start(&v, CROSS_SEED + 5000, 600000 + 100 * (uint64_t)k, NULL)) {
			ok = 0;
			break;
		}
		usleep((useconds_t)delay_us);
		td_agent_kill(&v);
		if (!td_wait_value("daemon.ghosts", 0, 3000) || !td_wait_value("daemon.clients", 2, 3000) ||
		    !td_wait_value("global.store_pages", store0, 3000)) {
			fprintf(stderr, "kill %d after %llu us: ghosts %ld clients %ld store_pages %ld (want %ld)\n",
				k, (unsigned long long)delay_us, td_status("daemon.ghosts"),
				td_status("daemon.clients"), td_status("global.store_pages"), store0);
			ok = 0;
		}
		if (!td_agent_cmd(&ag[0], TD_VERIFY, 0) || !td_agent_cmd(&ag[1], TD_VERIFY, 0)) {
			fprintf(stderr, "kill %d after %llu us: an agent's data is wrong\n", k,
				(unsigned long long)delay_us);
			ok = 0;
		}
	}
	CHECK("every kill: no ghost, its store pages freed, the others' data correct", ok);
	CHECK("the unstable table forgets the killed agents",
	      td_wait_value("global.pages_unshared", unshared0, 3000));
	CHECK("the others' grants are untouched",
	      td_grants_of(ag[0].pid) == grants0[0] && td_grants_of(ag[1].pid) == grants0[1]);
	CHECK("the others still share their pages", td_wait_shared(ag, 2, TD_HALF, TD_NSPARE / 2, 5000));
	CHECK("agents exit cleanly", td_agent_stop(&ag[0]) == 0 && td_agent_stop(&ag[1]) == 0);
	CHECK("store pages freed when the agents are gone", td_wait_value("global.store_pages", 0, 3000));
	CHECK("daemon stops cleanly", td_stop(d) == 0);
	rmdir(dir);
	return t_exit();
}
