/* SPDX-License-Identifier: MIT */
/*
 * Description: a hostile client against a running ksmd-user (argv[1]).
 *
 * Two honest agents merge their pages across processes; then raw clients,
 * each in a process of its own (its grants die with it), send messages
 * before HELLO, garbage, truncated and oversized packets, out-of-order
 * messages, RELEASEs of grants they do not hold, FORKs naming strangers,
 * and floods.  Each refused message must get an ERROR or a disconnect; and
 * after each client the daemon's store pages and the honest processes'
 * grants are what they were, the honest agents' data is intact and still
 * shared, and the daemon serves new clients (a third agent merges).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "probe.h"
#include "t_daemon.h"

static uint8_t pkt[256 * 1024]; /* the largest packet sent: 200,000 bytes */

static int hc_connect(void)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	struct timeval tv = {.tv_sec = 3};
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	int big = 1 << 20;

	snprintf(a.sun_path, sizeof(a.sun_path), "%s", td_sock);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof(big));
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Receive one packet (descriptors closed); Return: its length, 0 at EOF, -1 on timeout. */
static ssize_t hc_recv(int fd, uint16_t *type)
{
	union {
		char b[CMSG_SPACE(sizeof(int) * 4)];
		struct cmsghdr align;
	} u;
	struct iovec iov = {.iov_base = pkt, .iov_len = sizeof(pkt)};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b,
			    .msg_controllen = sizeof(u.b)};
	struct cmsghdr *cm;
	struct ksmu_wire_hdr h;
	ssize_t n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC);

	if (n < 0)
		return errno == ECONNRESET ? 0 : -1;
	for (cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
		if (cm->cmsg_type == SCM_RIGHTS) {
			int x;

			memcpy(&x, CMSG_DATA(cm), sizeof(x));
			close(x);
		}
	*type = 0;
	if (n >= (ssize_t)sizeof(h)) {
		memcpy(&h, pkt, sizeof(h));
		*type = h.type;
	}
	return n;
}

/*
 * After a message that must be refused: an ERROR (then EOF) or EOF, with
 * nothing else but STORE_FD/KNOB before.  Return: 1 if so.
 */
static int hc_refused(int fd)
{
	uint16_t t;
	ssize_t n;
	int saw_error = 0;

	for (;;) {
		n = hc_recv(fd, &t);
		if (n == 0)
			return 1;
		if (n < 0)
			return 0; /* still connected, no answer: not refused */
		if (t == KSMU_MSG_ERROR && !ksmu_wire_check(pkt, (size_t)n))
			saw_error = 1;
		else if (saw_error || (t != KSMU_MSG_STORE_FD && t != KSMU_MSG_KNOB))
			return 0;
	}
}

static int hc_send(int fd, const void *buf, size_t len)
{
	return send(fd, buf, len, MSG_NOSIGNAL) == (ssize_t)len ? 0 : -1;
}

static void hc_hdr(void *buf, uint16_t type, size_t len)
{
	struct ksmu_wire_hdr h;

	ksmu_wire_hdr_init(&h, type, (uint32_t)len, 1);
	memcpy(buf, &h, sizeof(h));
}

/* HELLO and WELCOME.  Return: 0. */
static int hc_hello(int fd)
{
	struct {
		struct ksmu_wire_hdr h;
		struct ksmu_wire_hello m;
	} hello;
	uint16_t t;
	ssize_t n;

	memset(&hello, 0, sizeof(hello));
	ksmu_wire_hdr_init(&hello.h, KSMU_MSG_HELLO, sizeof(hello), 1);
	hello.m.version = KSMU_WIRE_VERSION;
	hello.m.page_size = KSMU_WIRE_PAGE;
	if (hc_send(fd, &hello, sizeof(hello)))
		return -1;
	do
		n = hc_recv(fd, &t);
	while (n > 0 && t == KSMU_MSG_KNOB);
	return n > 0 && t == KSMU_MSG_WELCOME ? 0 : -1;
}

/* LOOKUP of @n pages of cross content (seed + i); the RESULT's refs into @refs.  Return: 0. */
static int hc_lookup(int fd, uint64_t seed, uint32_t n, uint16_t flags, struct ksmu_wire_ref *refs)
{
	size_t len = ksmu_wire_size(KSMU_MSG_LOOKUP, n), base = sizeof(struct ksmu_wire_hdr) + 8;
	struct ksmu_wire_count c = {.count = n};
	struct ksmu_wire_hdr h;
	uint16_t t;
	ssize_t r;
	uint32_t i;

	hc_hdr(pkt, KSMU_MSG_LOOKUP, len);
	memcpy(&h, pkt, sizeof(h));
	h.flags = flags;
	memcpy(pkt, &h, sizeof(h));
	memcpy(pkt + sizeof(h), &c, sizeof(c));
	for (i = 0; i < n; i++) {
		uint64_t addr = 0x100000 + (uint64_t)i * 4096;

		memcpy(pkt + base + i * 8, &addr, 8);
		t_fill_page(pkt + base + n * 8 + (size_t)i * 4096, seed + i);
	}
	if (hc_send(fd, pkt, len))
		return -1;
	do
		r = hc_recv(fd, &t);
	while (r > 0 && (t == KSMU_MSG_STORE_FD || t == KSMU_MSG_KNOB || t == KSMU_MSG_HINT));
	if (r <= 0 || t != KSMU_MSG_RESULT)
		return -1;
	if (refs)
		memcpy(refs, pkt + base, n * sizeof(*refs));
	return 0;
}

static int hc_release(int fd, uint32_t store, uint32_t idx, uint32_t count, int times)
{
	struct {
		struct ksmu_wire_hdr h;
		struct ksmu_wire_count c;
		struct ksmu_wire_release r[2];
	} m;
	size_t len = ksmu_wire_size(KSMU_MSG_RELEASE, (uint32_t)times);
	int i;

	memset(&m, 0, sizeof(m));
	ksmu_wire_hdr_init(&m.h, KSMU_MSG_RELEASE, (uint32_t)len, 3);
	m.c.count = (uint32_t)times;
	for (i = 0; i < times; i++) {
		m.r[i].store = store;
		m.r[i].idx = idx;
		m.r[i].count = count;
	}
	return hc_send(fd, &m, len);
}

static int hc_fork(int fd, uint32_t pid)
{
	struct {
		struct ksmu_wire_hdr h;
		struct ksmu_wire_fork f;
	} m;

	memset(&m, 0, sizeof(m));
	ksmu_wire_hdr_init(&m.h, KSMU_MSG_FORK, sizeof(m), 4);
	m.f.child_pid = pid;
	return hc_send(fd, &m, sizeof(m));
}

/* ------------------------------------------------------------ the cases */

#define CROSS_SEED 50000
static struct td_agent honest[3];

/* A fixed-size message of @type with a zeroed body (valid for most types). */
static size_t fixed_msg(uint16_t type, size_t body)
{
	memset(pkt, 0, sizeof(struct ksmu_wire_hdr) + body);
	hc_hdr(pkt, type, sizeof(struct ksmu_wire_hdr) + body);
	return sizeof(struct ksmu_wire_hdr) + body;
}

/* Messages before HELLO, garbage, truncated, oversized: each on a new connection. */
static int case_malformed(void)
{
	int bad = 0, fd, i;
	size_t len;

	/* before HELLO */
	for (i = 0; i < 4; i++) {
		static const uint16_t types[] = {KSMU_MSG_REPORT, KSMU_MSG_RELEASE, KSMU_MSG_FORK,
						 KSMU_MSG_LOOKUP};

		fd = hc_connect();
		if (types[i] == KSMU_MSG_LOOKUP) {
			struct ksmu_wire_count c = {.count = 1};

			len = ksmu_wire_size(KSMU_MSG_LOOKUP, 1);
			memset(pkt, 0, len);
			hc_hdr(pkt, KSMU_MSG_LOOKUP, len);
			memcpy(pkt + sizeof(struct ksmu_wire_hdr), &c, sizeof(c));
			t_fill_page(pkt + len - 4096, CROSS_SEED);
		} else if (types[i] == KSMU_MSG_RELEASE) {
			hc_release(fd, 1, 0, 1, 1);
			len = 0;
		} else if (types[i] == KSMU_MSG_FORK) {
			hc_fork(fd, (uint32_t)honest[0].pid);
			len = 0;
		} else {
			len = fixed_msg(KSMU_MSG_REPORT, sizeof(struct ksmu_wire_report));
		}
		if (len)
			hc_send(fd, pkt, len);
		if (!hc_refused(fd)) {
			fprintf(stderr, "not refused: %s before HELLO\n", ksmu_wire_type_name(types[i]));
			bad++;
		}
		close(fd);
	}
	/* garbage, wrong magic, short, truncated LOOKUP, len mismatch, unknown type, empty */
	for (i = 0; i < 8; i++) {
		struct ksmu_wire_hdr h;

		fd = hc_connect();
		len = 4096;
		switch (i) {
		case 0:
			t_fill_page(pkt, 777);
			break;
		case 1:
			len = fixed_msg(KSMU_MSG_REPORT, sizeof(struct ksmu_wire_report));
			pkt[0] ^= 0xff;
			break;
		case 2:
			len = 8;
			hc_hdr(pkt, KSMU_MSG_HELLO, 8);
			break;
		case 3: /* a LOOKUP of 32 pages cut after 1000 bytes */
			hc_hdr(pkt, KSMU_MSG_LOOKUP, ksmu_wire_size(KSMU_MSG_LOOKUP, 32));
			len = 1000;
			break;
		case 4:
			len = fixed_msg(KSMU_MSG_HELLO, sizeof(struct ksmu_wire_hello));
			memcpy(&h, pkt, sizeof(h));
			h.len += 8;
			memcpy(pkt, &h, sizeof(h));
			break;
		case 5:
			len = fixed_msg(99, 8);
			break;
		case 6:
			len = 0;
			break;
		case 7: /* oversized: 200,000 bytes */
			len = 200000;
			memset(pkt, 0, sizeof(struct ksmu_wire_hdr));
			hc_hdr(pkt, KSMU_MSG_LOOKUP, len);
			break;
		}
		if (send(fd, pkt, len, MSG_NOSIGNAL) != (ssize_t)len) {
			fprintf(stderr, "garbage case %d: send: %s\n", i, strerror(errno));
			bad++;
		} else if (!hc_refused(fd)) {
			fprintf(stderr, "not refused: garbage case %d\n", i);
			bad++;
		}
		close(fd);
	}
	return bad;
}

/* Out of order after HELLO: HELLO again, CTL, daemon-to-agent types, ERROR. */
static int case_out_of_order(void)
{
	static const struct {
		uint16_t type;
		size_t body;
	} m[] = {
	    {KSMU_MSG_HELLO, 0},   {KSMU_MSG_CTL, 6},	      {KSMU_MSG_WELCOME, 0},
	    {KSMU_MSG_STORE_FD, 0}, {KSMU_MSG_RESULT, 0},     {KSMU_MSG_HINT, 0},
	    {KSMU_MSG_KNOB, 0},     {KSMU_MSG_CTL_REPLY, 3}, {KSMU_MSG_ERROR, 0},
	};
	size_t i;
	int bad = 0;

	for (i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
		int fd = hc_connect();
		size_t len = 0;

		if (hc_hello(fd)) {
			bad++;
			close(fd);
			continue;
		}
		switch (m[i].type) {
		case KSMU_MSG_HELLO: {
			struct ksmu_wire_hello h = {.version = KSMU_WIRE_VERSION,
						    .page_size = KSMU_WIRE_PAGE};

			len = fixed_msg(KSMU_MSG_HELLO, sizeof(h));
			memcpy(pkt + sizeof(struct ksmu_wire_hdr), &h, sizeof(h));
			break;
		}
		case KSMU_MSG_CTL:
		case KSMU_MSG_CTL_REPLY:
			len = fixed_msg(m[i].type, m[i].body);
			memcpy(pkt + sizeof(struct ksmu_wire_hdr), "STATUS", m[i].body);
			break;
		case KSMU_MSG_WELCOME: {
			struct ksmu_wire_welcome w = {.version = KSMU_WIRE_VERSION, .max_pages = 1};

			len = fixed_msg(m[i].type, sizeof(w));
			memcpy(pkt + sizeof(struct ksmu_wire_hdr), &w, sizeof(w));
			break;
		}
		case KSMU_MSG_STORE_FD: {
			struct ksmu_wire_store_fd s = {.store = 1};

			len = fixed_msg(m[i].type, sizeof(s));
			memcpy(pkt + sizeof(struct ksmu_wire_hdr), &s, sizeof(s));
			break;
		}
		case KSMU_MSG_RESULT:
		case KSMU_MSG_HINT: {
			struct ksmu_wire_count c = {.count = 1};
			struct ksmu_wire_hint e = {.store = 1};

			len = ksmu_wire_size(m[i].type, 1);
			memset(pkt, 0, len);
			hc_hdr(pkt, m[i].type, len);
			memcpy(pkt + sizeof(struct ksmu_wire_hdr), &c, sizeof(c));
			memcpy(pkt + sizeof(struct ksmu_wire_hdr) + sizeof(c), &e,
			       len - sizeof(struct ksmu_wire_hdr) - sizeof(c));
			break;
		}
		case KSMU_MSG_KNOB:
			len = fixed_msg(m[i].type, sizeof(struct ksmu_wire_knob));
			memcpy(pkt + sizeof(struct ksmu_wire_hdr), "run", 3);
			break;
		case KSMU_MSG_ERROR: {
			struct ksmu_wire_error e = {.err = EIO};

			len = fixed_msg(m[i].type, sizeof(e));
			memcpy(pkt + sizeof(struct ksmu_wire_hdr), &e, sizeof(e));
			break;
		}
		}
		if (ksmu_wire_check(pkt, len) || hc_send(fd, pkt, len) || !hc_refused(fd)) {
			fprintf(stderr, "not refused: %s after HELLO\n", ksmu_wire_type_name(m[i].type));
			bad++;
		}
		close(fd);
	}
	return bad;
}

/* RELEASE of grants not held: never granted, and more than held. */
static int case_release(void)
{
	struct ksmu_wire_ref ref;
	int bad = 0, fd, i;

	for (i = 0; i < 5; i++) {
		fd = hc_connect();
		if (hc_hello(fd)) {
			bad++;
			close(fd);
			continue;
		}
		if (i == 0) { /* a page the honest agents hold, never granted to us */
			hc_release(fd, 1, 0, 1, 1);
		} else if (i == 1) { /* a store that does not exist */
			hc_release(fd, 4000, 7, 1, 1);
		} else {
			/* one grant of the honest page 0, then give back 2, 1+1 or 2^32-1 */
			if (hc_lookup(fd, CROSS_SEED, 1, 0, &ref) || ref.store == KSMU_WIRE_NO_STORE) {
				fprintf(stderr, "lookup of an honest page found no store page\n");
				bad++;
				close(fd);
				continue;
			}
			if (i == 2)
				hc_release(fd, ref.store, ref.idx, 2, 1);
			else if (i == 3)
				hc_release(fd, ref.store, ref.idx, 1, 2);
			else
				hc_release(fd, ref.store, ref.idx, UINT32_MAX, 1);
		}
		if (!hc_refused(fd)) {
			fprintf(stderr, "not refused: RELEASE case %d\n", i);
			bad++;
		}
		close(fd);
	}
	return bad;
}

/* FORK naming a stranger, pid 1, 2^22 and above, its own pid: while holding grants. */
static int case_fork(void)
{
	const uint32_t pids[] = {(uint32_t)honest[0].pid, 1, 1u << 22, UINT32_MAX,
				 (uint32_t)getpid(), (uint32_t)getppid()};
	size_t i;
	int bad = 0;

	for (i = 0; i < sizeof(pids) / sizeof(pids[0]); i++) {
		struct ksmu_wire_ref ref;
		int fd = hc_connect();

		if (hc_hello(fd) || hc_lookup(fd, CROSS_SEED, 1, 0, &ref) ||
		    ref.store == KSMU_WIRE_NO_STORE) {
			bad++;
			close(fd);
			continue;
		}
		hc_fork(fd, pids[i]);
		if (!hc_refused(fd)) {
			fprintf(stderr, "not refused: FORK of pid %u\n", pids[i]);
			bad++;
		}
		close(fd);
	}
	return bad;
}

/* Floods: LOOKUPs never read, 200 connections at once, 5000 REPORTs. */
static int case_flood(void)
{
	static int fds[200];
	int bad = 0, fd, i;
	size_t len = ksmu_wire_size(KSMU_MSG_LOOKUP, 32);

	fd = hc_connect();
	if (hc_hello(fd) || hc_lookup(fd, CROSS_SEED, 32, 0, NULL))
		bad++;
	/* the last packet built is a valid LOOKUP of the honest pages: resend it unread */
	for (i = 0; i < 400; i++)
		if (hc_send(fd, pkt, len))
			break;
	close(fd);
	for (i = 0; i < 200; i++) {
		fds[i] = hc_connect();
		if (fds[i] < 0 || hc_hello(fds[i]))
			bad++;
	}
	if (td_status("daemon.clients") < 200) {
		fprintf(stderr, "200 connections: the daemon did not count them\n");
		bad++;
	}
	for (i = 0; i < 200; i++)
		close(fds[i]);
	fd = hc_connect();
	if (hc_hello(fd))
		bad++;
	len = fixed_msg(KSMU_MSG_REPORT, sizeof(struct ksmu_wire_report));
	for (i = 0; i < 5000; i++)
		if (hc_send(fd, pkt, len))
			break;
	if (i < 5000) {
		fprintf(stderr, "REPORT flood: send %d failed: %s\n", i, strerror(errno));
		bad++;
	}
	close(fd);
	return bad;
}

/* Run @fn in a process of its own; Return: its count of unrefused messages. */
static int run_in_child(int (*fn)(void))
{
	int st = -1;
	pid_t pid = fork();

	if (pid == 0) {
		int bad = fn();

		_exit(bad > 100 ? 100 : bad);
	}
	waitpid(pid, &st, 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 200;
}

struct baseline {
	long store_pages, grants[2];
};

static void snapshot(struct baseline *b)
{
	b->store_pages = td_status("global.store_pages");
	b->grants[0] = td_grants_of(honest[0].pid);
	b->grants[1] = td_grants_of(honest[1].pid);
}

/* After a client: nothing changed, the daemon serves, the honest data is intact. */
static void check_unchanged(const char *what, const struct baseline *b)
{
	struct baseline now;
	char name[160];
	int i;

	/* the client's process is gone: wait for the daemon to see its pidfd */
	for (i = 0; i < 300; i++) {
		if (td_status("daemon.ghosts") == 0 && td_status("daemon.clients") == 2)
			break;
		usleep(10000);
	}
	snapshot(&now);
	snprintf(name, sizeof(name), "%s: daemon serves, only the honest agents left", what);
	CHECK(name, td_status("daemon.ghosts") == 0 && td_status("daemon.clients") == 2);
	snprintf(name, sizeof(name), "%s: store pages unchanged", what);
	CHECK(name, now.store_pages == b->store_pages);
	snprintf(name, sizeof(name), "%s: honest processes' grants unchanged", what);
	CHECK(name, now.grants[0] == b->grants[0] && now.grants[1] == b->grants[1]);
	snprintf(name, sizeof(name), "%s: honest agents' data intact", what);
	CHECK(name, td_agent_cmd(&honest[0], TD_VERIFY, 0) && td_agent_cmd(&honest[1], TD_VERIFY, 0));
}

int main(int argc, char **argv)
{
	const struct ksmu_features *f = ksmu_probe_get();
	static const struct {
		const char *name;
		int (*fn)(void);
	} cases[] = {
	    {"malformed", case_malformed}, {"out of order", case_out_of_order},
	    {"release", case_release},	   {"fork", case_fork},
	    {"flood", case_flood},
	};
	struct baseline b, b2;
	char dir[48];
	pid_t d;
	size_t i;
	int k;

	if (argc < 2) {
		fprintf(stderr, "usage: daemon-hostile KSMD-USER\n");
		return T_EXIT_FAIL;
	}
	if (!f->uffd_move || geteuid() != 0)
		t_skip("needs root and UFFDIO_MOVE");
	signal(SIGPIPE, SIG_IGN);
	td_exe = argv[1];
	snprintf(dir, sizeof(dir), "/tmp/ksmu-dh-%d", (int)getpid());
	snprintf(td_sock, sizeof(td_sock), "%s/ksmd.sock", dir);
	mkdir(dir, 0755);
	d = td_start(NULL);
	if (d < 0) {
		printf("FAIL: ksmd-user did not start\n");
		return T_EXIT_FAIL;
	}
	CHECK("honest agents started", td_agent_start(&honest[0], CROSS_SEED, 100000, NULL) == 0 &&
					   td_agent_start(&honest[1], CROSS_SEED, 200000, NULL) == 0);
	CHECK("honest agents merge across processes",
	      td_wait_shared(honest, 2, 0, TD_CROSS, 20000));
	/* settled: the same counters twice, 200 ms apart */
	for (k = 0; k < 50; k++) {
		snapshot(&b);
		usleep(200000);
		snapshot(&b2);
		if (!memcmp(&b, &b2, sizeof(b)))
			break;
	}
	CHECK("the daemon's counters settle", !memcmp(&b, &b2, sizeof(b)) && b.store_pages >= TD_CROSS &&
						  b.grants[0] > 0 && b.grants[1] > 0);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char name[96];
		int bad = run_in_child(cases[i].fn);

		snprintf(name, sizeof(name), "%s: every message got ERROR or a disconnect", cases[i].name);
		CHECK(name, bad == 0);
		check_unchanged(cases[i].name, &b);
	}
	CHECK("honest pages still shared after all of it", td_wait_shared(honest, 2, 0, TD_CROSS, 5000));
	CHECK("a new agent joins and merges with them",
	      td_agent_start(&honest[2], CROSS_SEED, 300000, NULL) == 0 &&
		  td_wait_shared(honest, 3, 0, TD_CROSS, 20000));
	CHECK("agents exit cleanly", td_agent_stop(&honest[2]) == 0 && td_agent_stop(&honest[0]) == 0 &&
					 td_agent_stop(&honest[1]) == 0);
	CHECK("store pages freed when the agents are gone", td_wait_value("global.store_pages", 0, 3000));
	CHECK("daemon stops cleanly", td_stop(d) == 0);
	rmdir(dir);
	return t_exit();
}
