/* SPDX-License-Identifier: MIT */
/*
 * Description: an agent against a hostile daemon.
 *
 * The test plays ksmd-user itself on a private socket (a thread of its
 * own), and an agent process (t_daemon.h, background scanner off:
 * KSMU_RUN=0, scans only when told) joins it.  The fake daemon answers
 * HELLO with a proper WELCOME, and then, one case per agent, breaks the
 * protocol once:
 *   type    the first LOOKUP is answered with a WELCOME (its seq), then
 *           with a proper RESULT;
 *   seq     a RESULT carrying another request's seq, then the proper one;
 *   count   a RESULT with one entry fewer or more than asked;
 *   store   a RESULT naming a store never announced (no STORE_FD);
 *   fd      a RESULT carrying a descriptor;
 *   error   an ERROR naming another request;
 *   garbage bytes that are not a message;
 *   stray   every LOOKUP of a first pass answered properly ("no match"),
 *           then, while no request waits, an unsolicited RESULT.
 * Each time the agent must hang up at once: the next thing the fake
 * daemon sees on the connection is its end, never another message
 * (an agent that accepted the answer would go on with LOOKUPs and
 * REPORTs on the same connection).  Then it goes on alone: its memory
 * holds what it must, and its local duplicates merge (equal PFNs in
 * /proc/self/pagemap) in its own store.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "probe.h"
#include "t_daemon.h"

enum mode { M_TYPE, M_SEQ, M_COUNT, M_STORE, M_FD, M_ERROR, M_GARBAGE, M_STRAY, M_NR };
static const char *const mode_name[M_NR] = {"type",  "seq",	"count",   "store",
					    "fd",    "error",	"garbage", "stray"};

static uint8_t rbuf[KSMU_WIRE_MAX + 64];
static uint8_t sbuf[KSMU_WIRE_MAX + 64];

/* What the fake daemon saw; written by its thread, read after the join. */
struct fake {
	enum mode mode;
	int lfd;	 /* listening socket */
	int go[2];	 /* stray: the test says "send it now" */
	int sent[2];	 /* stray: and hears "sent" before the agent's next scan */
	int hello;	 /* HELLO received */
	int lookups;	 /* LOOKUPs received */
	int broken;	 /* the bad message was sent */
	int after;	 /* next event after it: 1 EOF, 2 a message, 3 nothing in time */
	uint16_t after_type;
};

static int send_pkt(int fd, const void *buf, size_t len, int pass_fd)
{
	struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
	union {
		char b[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};

	if (pass_fd >= 0) {
		struct cmsghdr *cm;

		memset(&u, 0, sizeof(u));
		mh.msg_control = u.b;
		mh.msg_controllen = sizeof(u.b);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &pass_fd, sizeof(int));
	}
	return sendmsg(fd, &mh, MSG_NOSIGNAL) == (ssize_t)len ? 0 : -1;
}

/* Receive one packet within @ms; Return: its length, 0 at EOF (or reset), -1 on timeout or error. */
static ssize_t recv_pkt(int fd, int ms, struct ksmu_wire_hdr *h)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	ssize_t n;

	if (poll(&p, 1, ms) != 1)
		return -1;
	n = recv(fd, rbuf, sizeof(rbuf), 0);
	if (n < 0 && errno == ECONNRESET)
		return 0; /* the peer closed with our packets unread: a hang-up too */
	if (n >= (ssize_t)sizeof(*h))
		memcpy(h, rbuf, sizeof(*h));
	else if (n > 0)
		return -1;
	return n;
}

/* A RESULT to @seq with @n entries, each "no match" (or store @store). */
static size_t result(uint32_t seq, uint32_t n, uint32_t store)
{
	struct ksmu_wire_hdr h;
	struct ksmu_wire_count c = {.count = n};
	size_t len = ksmu_wire_size(KSMU_MSG_RESULT, n), i;

	ksmu_wire_hdr_init(&h, KSMU_MSG_RESULT, (uint32_t)len, seq);
	memcpy(sbuf, &h, sizeof(h));
	memcpy(sbuf + sizeof(h), &c, sizeof(c));
	for (i = 0; i < n; i++) {
		struct ksmu_wire_ref r = {.store = store, .idx = 0};

		memcpy(sbuf + sizeof(h) + sizeof(c) + i * sizeof(r), &r, sizeof(r));
	}
	return len;
}

static size_t welcome(uint32_t seq)
{
	struct {
		struct ksmu_wire_hdr h;
		struct ksmu_wire_welcome w;
	} m;

	memset(&m, 0, sizeof(m));
	ksmu_wire_hdr_init(&m.h, KSMU_MSG_WELCOME, sizeof(m), seq);
	m.w.version = KSMU_WIRE_VERSION;
	m.w.max_pages = KSMU_WIRE_MAX_PAGES;
	strcpy(m.w.domain_name, "uid:0");
	memcpy(sbuf, &m, sizeof(m));
	return sizeof(m);
}

/* Send the case's bad message in reply to the LOOKUP @h of @n pages. */
static void break_protocol(struct fake *f, int c, const struct ksmu_wire_hdr *h, uint32_t n)
{
	struct {
		struct ksmu_wire_hdr h;
		struct ksmu_wire_error e;
	} err;
	size_t len;
	int devnull;

	switch (f->mode) {
	case M_TYPE:
		send_pkt(c, sbuf, welcome(h->seq), -1);
		send_pkt(c, sbuf, result(h->seq, n, KSMU_WIRE_NO_STORE), -1);
		break;
	case M_SEQ:
		send_pkt(c, sbuf, result(h->seq + 1, n, KSMU_WIRE_NO_STORE), -1);
		send_pkt(c, sbuf, result(h->seq, n, KSMU_WIRE_NO_STORE), -1);
		break;
	case M_COUNT:
		send_pkt(c, sbuf, result(h->seq, n > 1 ? n - 1 : n + 1, KSMU_WIRE_NO_STORE), -1);
		break;
	case M_STORE:
		send_pkt(c, sbuf, result(h->seq, n, 7), -1);
		break;
	case M_FD:
		devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
		send_pkt(c, sbuf, result(h->seq, n, KSMU_WIRE_NO_STORE), devnull);
		close(devnull);
		break;
	case M_ERROR:
		memset(&err, 0, sizeof(err));
		ksmu_wire_hdr_init(&err.h, KSMU_MSG_ERROR, sizeof(err), h->seq + 100);
		err.e.err = EINVAL;
		err.e.type = KSMU_MSG_LOOKUP;
		send_pkt(c, &err, sizeof(err), -1);
		break;
	case M_GARBAGE:
		memset(sbuf, 0xa5, 100);
		send_pkt(c, sbuf, 100, -1);
		break;
	default: /* M_STRAY */
		len = result(0, 1, KSMU_WIRE_NO_STORE);
		send_pkt(c, sbuf, len, -1);
		break;
	}
	f->broken = 1;
}

static void *fake_main(void *arg)
{
	struct fake *f = arg;
	struct pollfd p = {.fd = f->lfd, .events = POLLIN};
	struct ksmu_wire_hdr h;
	ssize_t n;
	int c;

	if (poll(&p, 1, 10000) != 1)
		return NULL;
	c = accept4(f->lfd, NULL, NULL, SOCK_CLOEXEC);
	if (c < 0)
		return NULL;
	if (recv_pkt(c, 5000, &h) <= 0 || h.type != KSMU_MSG_HELLO)
		goto out;
	f->hello = 1;
	send_pkt(c, sbuf, welcome(h.seq), -1);
	for (;;) {
		struct pollfd q[2] = {{.fd = c, .events = POLLIN}, {.fd = f->go[0], .events = POLLIN}};
		char x;

		if (poll(q, f->mode == M_STRAY ? 2 : 1, 10000) <= 0)
			goto out;
		if (f->mode == M_STRAY && (q[1].revents & POLLIN)) {
			/* the agent is idle: what it sent before (a REPORT) is here already */
			while (recv_pkt(c, 0, &h) > 0)
				;
			if (read(f->go[0], &x, 1) == 1)
				break_protocol(f, c, &h, 1);
			if (write(f->sent[1], "s", 1) != 1)
				f->broken = 0;
			break;
		}
		n = recv_pkt(c, 0, &h);
		if (n <= 0)
			goto out;
		if (h.type != KSMU_MSG_LOOKUP)
			continue; /* REPORT, RELEASE: no reply */
		f->lookups++;
		if (f->mode != M_STRAY) {
			break_protocol(f, c, &h, ksmu_wire_count(rbuf));
			break;
		}
		send_pkt(c, sbuf, result(h.seq, ksmu_wire_count(rbuf), KSMU_WIRE_NO_STORE), -1);
	}
	/*
	 * The next event.  An agent that hung up shows EOF at once; one that
	 * took the answer sends its next LOOKUP or (within a second) a REPORT.
	 */
	n = recv_pkt(c, 3000, &h);
	f->after = n == 0 ? 1 : n > 0 ? 2 : 3;
	if (n > 0)
		f->after_type = h.type;
out:
	close(c);
	return NULL;
}

/* The local pairs [TD_CROSS, TD_SPARE0) share a frame each (up to @ms of scans). */
static int pairs_merged(struct td_agent *a, int ms)
{
	uint64_t pfns[TD_PAGES];
	int i, k;

	for (i = 0; i <= ms / 50; i++) {
		int ok = td_agent_pfns(a, pfns);

		for (k = 0; ok && k < TD_PAIRS; k++)
			ok = pfns[TD_CROSS + 2 * k] && pfns[TD_CROSS + 2 * k] == pfns[TD_CROSS + 2 * k + 1];
		if (ok)
			return 1;
		td_agent_cmd(a, TD_SCAN, 1);
		usleep(50000);
	}
	return 0;
}

static void one_case(enum mode m)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct fake f = {.mode = m};
	struct td_agent a = {.pid = -1, .to = -1, .from = -1};
	pthread_t th;
	const char *name = mode_name[m];

	snprintf(td_sock, sizeof(td_sock), "/tmp/ksmu-agent-hostile-%d-%s.sock", (int)getpid(), name);
	unlink(td_sock);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", td_sock);
	f.lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (f.lfd < 0 || bind(f.lfd, (struct sockaddr *)&sa, sizeof(sa)) || listen(f.lfd, 4) ||
	    pipe(f.go) || pipe(f.sent)) {
		CHECK(name, !"socket, bind, listen or pipe failed");
		return;
	}
	/*
	 * The agent first (fork with no other thread), then the fake daemon:
	 * the agent connects at its first scan.  No reconnection within the
	 * test; no background scanner (KSMU_RUN=0).
	 */
	CHECK(name, td_agent_start(&a, 70000 + 100 * m, 80000 + 100 * m,
				   "KSMU_DAEMON_RETRY_MS=3600000") == 0);
	CHECK(name, pthread_create(&th, NULL, fake_main, &f) == 0);
	CHECK(name, td_agent_cmd(&a, TD_SCAN, 1) == 1);
	if (m == M_STRAY) {
		/* the pass is over: nothing waits for a reply now */
		char x;

		CHECK(name, write(f.go[1], "x", 1) == 1);
		CHECK(name, read(f.sent[0], &x, 1) == 1); /* in the agent's socket now */
		CHECK(name, td_agent_cmd(&a, TD_SCAN, 1) == 1);
	}
	pthread_join(th, NULL);
	printf("%-8s hello %d lookups %d broken %d next: %s (type %u)\n", name, f.hello, f.lookups,
	       f.broken, f.after == 1 ? "hang-up" : f.after == 2 ? "a message" : "nothing",
	       f.after_type);
	CHECK(name, f.hello && f.lookups >= 1 && f.broken);
	CHECK(name, f.after == 1); /* hung up; never used the connection again */
	CHECK(name, td_agent_cmd(&a, TD_VERIFY, 0) == 1);
	CHECK(name, pairs_merged(&a, 5000)); /* alone, in a store of its own */
	CHECK(name, td_agent_cmd(&a, TD_VERIFY, 0) == 1);
	CHECK(name, td_agent_stop(&a) == 0);
	close(f.lfd);
	close(f.go[0]);
	close(f.go[1]);
	close(f.sent[0]);
	close(f.sent[1]);
	unlink(td_sock);
}

int main(void)
{
	int m;

	td_exe = NULL; /* no real daemon here */
	if (geteuid() != 0 || !ksmu_probe_get()->uffd_move)
		t_skip("needs root (PFNs in /proc/PID/pagemap) and UFFDIO_MOVE");
	signal(SIGPIPE, SIG_IGN);
	setenv("KSMU_RUN", "0", 1);
	for (m = 0; m < M_NR; m++)
		one_case((enum mode)m);
	return t_exit();
}
