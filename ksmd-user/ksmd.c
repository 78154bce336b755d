/* SPDX-License-Identifier: MIT */
/*
 * ksmd.c - ksmd-user, the host-wide deduplication daemon: its event loop,
 * clients, and the protocol (docs/daemon-protocol.md).
 *
 * DESIGN
 *   One thread, one epoll loop over: the listening SOCK_SEQPACKET socket,
 *   each client's socket, each client process's pidfd, and a signalfd
 *   (SIGTERM/SIGINT stop, SIGHUP reloads the configuration).
 *
 *   Agents (libksmu in a process) send page contents (LOOKUP); the daemon
 *   hashes them, compares them in full with store pages (index.c) and
 *   answers with store pages the agent may map, or remembers them in the
 *   global unstable table and later hints the agent when another process
 *   sends the same content.  The agent performs every merge itself (only a
 *   process can replace its own pages) and compares its page in full with
 *   the store page first.  The daemon never reads agents' memory.
 *
 *   Identity comes from the kernel: SO_PEERCRED (pid, uid, gid) and a pidfd
 *   (SO_PEERPIDFD, else pidfd_open()).  The security domain is chosen from
 *   them (config.c); a process only ever sees stores of its own groups.
 *
 *   Grants (index.c) belong to processes, not connections: a connection
 *   that closes while its process lives leaves a "ghost" holding the grants
 *   until the pidfd reports the exit; FORK makes a ghost for the child.
 *
 * INVARIANTS
 *   - A message is validated (ksmu_wire_check()) before any field is used;
 *     a malformed one gets ERROR and a disconnect, and changes nothing.
 *     So does a well-formed one that is refused: a message out of order, a
 *     RELEASE of grants the client does not hold (checked for the whole
 *     message before any is taken back), a FORK naming a pid outside the
 *     kernel's range (checked first), pid 1, the sender itself, or a
 *     process that is not the sender's child.
 *   - STORE_FD for a store precedes the first message naming it, per
 *     connection.
 *   - A grant is counted only for a message the kernel accepted.
 *
 * LOCKING / THREADS
 *   Single-threaded.  Sends never block (MSG_DONTWAIT): an agent that does
 *   not read its replies is disconnected; a hint that does not fit is
 *   dropped (the merge is found later or never, nothing else).
 *
 * TEST HOOK
 *   KSMD_FAULT=POINT:N makes the daemon _exit(86) the N-th time it passes
 *   POINT, as a kill there would (tests/func/daemon-faults.c): create (a
 *   LOOKUP with CREATE made store pages, its RESULT not sent), result (the
 *   RESULT sent, its grants not counted), hint (before a HINT is sent).
 *   A malformed value refuses to start.  Not for production use.
 *
 * KERNEL REQUIREMENTS
 *   SOCK_SEQPACKET, SO_PEERCRED, pidfd_open (5.3; SO_PEERPIDFD 6.5 when
 *   present), signalfd, epoll, memfd (index.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <numa.h>
#include <numaif.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "config.h"
#include "index.h"
#include "ksmu.h"
#include "parse.h"
#include "wire.h"

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

#define MAX_CLIENTS 4096
#define MAX_GHOSTS_PER_UID 256
#define RECV_MAX                                                                   \
	(KSMU_WIRE_MAX > sizeof(struct ksmu_wire_hdr) + KSMU_WIRE_MAX_TEXT                 \
	     ? KSMU_WIRE_MAX                                                            \
	     : sizeof(struct ksmu_wire_hdr) + KSMU_WIRE_MAX_TEXT)

enum { EV_LISTEN = 1, EV_SIGNAL, EV_SOCK, EV_PIDFD };
enum { KIND_NEW = 0, KIND_AGENT, KIND_CTL };

struct client {
	uint32_t id; /* never reused */
	int fd;	     /* -1: a ghost (no connection) */
	int pidfd;   /* -1: unknown (ctl clients) */
	pid_t pid;
	uid_t uid;
	gid_t gid;
	int kind;
	bool forked; /* a ghost made by FORK */
	char domain[KSMD_NAME_MAX];
	uint64_t cgroup_key, zgroup_key;
	struct ksmd_grants grants;
	uint8_t stores_sent[KSMD_MAX_STORES / 8];
	struct ksmu_wire_report report;
	bool reported;
	uint32_t seq;
};

static struct {
	const char *config_path;
	bool config_given;
	char socket[108];
	bool socket_given;
	int log_level; /* 0 error, 1 warn, 2 info, 3 debug */
	struct ksmd_config cfg;
	struct ksmd_index *ix;
	int epfd, lfd, sfd;
	struct client *clients[MAX_CLIENTS];
	size_t nr_clients;
	uint32_t next_id;
	struct ksmd_knob knobs[KSMD_MAX_KNOBS]; /* host defaults */
	size_t nr_knobs;
	uint64_t started_ms;
	uint64_t hints;
	bool stop;
	uint8_t *rbuf;
	uint8_t *sbuf;
	int numa_nodes;
} D = {.log_level = 2, .epfd = -1, .lfd = -1, .sfd = -1};

static void logmsg(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logmsg(int level, const char *fmt, ...)
{
	static const char *names[] = {"error", "warn", "info", "debug"};
	va_list ap;

	if (level > D.log_level)
		return;
	fprintf(stderr, "ksmd-user: %s: ", names[level]);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}
#define LOG_ERR(...) logmsg(0, __VA_ARGS__)
#define LOG_WARN(...) logmsg(1, __VA_ARGS__)
#define LOG_INFO(...) logmsg(2, __VA_ARGS__)
#define LOG_DEBUG(...) logmsg(3, __VA_ARGS__)

#define STR2(x) #x
#define STR(x) STR2(x)
#define VERSION STR(KSMU_VERSION_MAJOR) "." STR(KSMU_VERSION_MINOR) "." STR(KSMU_VERSION_PATCH)

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------ test hook */

/*
 * KSMD_FAULT=POINT:N (tests only): the daemon _exits with KSMD_FAULT_EXIT
 * the N-th time it passes POINT, as if killed there (socket file left,
 * nothing cleaned up).  Points: create (a LOOKUP with CREATE made store
 * pages, no RESULT sent yet), result (RESULT sent, its grants not yet
 * counted), hint (a HINT about to be sent).
 */
#define KSMD_FAULT_EXIT 86
static const char *const fault_points[] = {"create", "result", "hint"};
static struct {
	const char *point; /* NULL: no fault */
	uint64_t left;
} F;

static int fault_parse(const char *v)
{
	const char *colon = strchr(v, ':');
	uint64_t n;
	size_t i;

	if (!colon)
		return -EINVAL;
	for (i = 0; i < sizeof(fault_points) / sizeof(fault_points[0]); i++)
		if (strlen(fault_points[i]) == (size_t)(colon - v) &&
		    !strncmp(v, fault_points[i], (size_t)(colon - v)))
			break;
	if (i == sizeof(fault_points) / sizeof(fault_points[0]))
		return -EINVAL;
	if (ksmu_parse_decimal(colon + 1, UINT32_MAX, &n) || n == 0)
		return -EINVAL;
	F.point = fault_points[i];
	F.left = n;
	return 0;
}

static void fault_point(const char *point)
{
	if (!F.point || strcmp(F.point, point) || --F.left)
		return;
	LOG_WARN("KSMD_FAULT: exiting at %s", point);
	_exit(KSMD_FAULT_EXIT);
}

/* ------------------------------------------------------------ clients */

static struct client *client_by_id(uint32_t id)
{
	size_t i;

	for (i = 0; i < D.nr_clients; i++)
		if (D.clients[i]->id == id)
			return D.clients[i];
	return NULL;
}

static int ep_add(int fd, uint32_t type, uint32_t id)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)type << 32 | id};

	return epoll_ctl(D.epfd, EPOLL_CTL_ADD, fd, &ev) < 0 ? -errno : 0;
}

static struct client *client_new(void)
{
	struct client *c;

	if (D.nr_clients == MAX_CLIENTS)
		return NULL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	c->id = ++D.next_id;
	c->fd = c->pidfd = -1;
	D.clients[D.nr_clients++] = c;
	return c;
}

/* The process is gone (or the client never was an agent): free everything. */
static void client_free(struct client *c)
{
	size_t i;

	if (c->fd >= 0)
		close(c->fd);
	if (c->pidfd >= 0)
		close(c->pidfd);
	ksmd_unstable_drop_client(D.ix, c->id);
	if (c->grants.total)
		LOG_DEBUG("pid %d gone: %llu grants released", (int)c->pid,
			  (unsigned long long)c->grants.total);
	ksmd_grants_drop(D.ix, &c->grants);
	for (i = 0; i < D.nr_clients; i++)
		if (D.clients[i] == c) {
			D.clients[i] = D.clients[--D.nr_clients];
			break;
		}
	free(c);
}

static bool pidfd_exited(int pidfd)
{
	struct pollfd p = {.fd = pidfd, .events = POLLIN};

	/* a pidfd turns readable when its process exits (a zombie included) */
	return poll(&p, 1, 0) == 1 && (p.revents & (POLLIN | POLLHUP));
}

/*
 * The connection is closed.  An agent whose process lives keeps its grants
 * (it still maps the pages) as a ghost until its pidfd reports the exit.
 */
static void client_disconnect(struct client *c, const char *why)
{
	LOG_DEBUG("client %u (pid %d) disconnected: %s", c->id, (int)c->pid, why);
	if (c->kind != KIND_AGENT || c->pidfd < 0 || !c->grants.total || pidfd_exited(c->pidfd)) {
		client_free(c);
		return;
	}
	close(c->fd);
	c->fd = -1;
	ksmd_unstable_drop_client(D.ix, c->id);
}

/* ------------------------------------------------------------ sending */

static int send_packet(struct client *c, const void *buf, size_t len, int fd)
{
	struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
	ssize_t n;

	if (c->fd < 0)
		return -ENOTCONN;
	if (fd >= 0) {
		struct cmsghdr *cm;

		memset(&u, 0, sizeof(u));
		mh.msg_control = u.buf;
		mh.msg_controllen = sizeof(u.buf);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	}
	n = sendmsg(c->fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
	if (n < 0)
		return -errno;
	return n == (ssize_t)len ? 0 : -EIO;
}

static int send_error(struct client *c, uint16_t type, uint32_t seq, int err)
{
	struct {
		struct ksmu_wire_hdr h;
		struct ksmu_wire_error e;
	} m;

	memset(&m, 0, sizeof(m));
	ksmu_wire_hdr_init(&m.h, KSMU_MSG_ERROR, sizeof(m), seq);
	m.e.err = err;
	m.e.type = type;
	return send_packet(c, &m, sizeof(m), -1);
}

/* Make sure @c has the descriptor of @st. */
static int send_store(struct client *c, struct ksmd_store *st)
{
	struct {
		struct ksmu_wire_hdr h;
		struct ksmu_wire_store_fd s;
	} m;
	int r;

	if (c->stores_sent[st->id / 8] & (1u << (st->id % 8)))
		return 0;
	memset(&m, 0, sizeof(m));
	ksmu_wire_hdr_init(&m.h, KSMU_MSG_STORE_FD, sizeof(m), 0);
	m.s.store = st->id;
	r = send_packet(c, &m, sizeof(m), st->ro_fd);
	if (!r)
		c->stores_sent[st->id / 8] |= (uint8_t)(1u << (st->id % 8));
	return r;
}

static void send_knob(struct client *c, const char *name, uint64_t value)
{
	struct {
		struct ksmu_wire_hdr h;
		struct ksmu_wire_knob k;
	} m;

	memset(&m, 0, sizeof(m));
	ksmu_wire_hdr_init(&m.h, KSMU_MSG_KNOB, sizeof(m), 0);
	snprintf(m.k.name, sizeof(m.k.name), "%s", name);
	m.k.value = value;
	if (send_packet(c, &m, sizeof(m), -1))
		LOG_DEBUG("knob %s to pid %d not sent", name, (int)c->pid);
}

/* A hint to the client that put @hit in the unstable table; counts the grant if sent. */
static void send_hint(const struct ksmd_unstable_hit *hit, struct ksmd_store *st, uint32_t idx)
{
	struct client *o = client_by_id(hit->client);
	struct {
		struct ksmu_wire_hdr h;
		struct ksmu_wire_count c;
		struct ksmu_wire_hint e;
	} m;

	if (!o || o->fd < 0 || o->kind != KIND_AGENT)
		return;
	if (send_store(o, st))
		return;
	memset(&m, 0, sizeof(m));
	ksmu_wire_hdr_init(&m.h, KSMU_MSG_HINT, sizeof(m), 0);
	m.c.count = 1;
	m.e.addr = hit->addr;
	m.e.store = st->id;
	m.e.idx = idx;
	fault_point("hint");
	if (send_packet(o, &m, sizeof(m), -1))
		return;
	D.hints++;
	if (ksmd_grant(D.ix, &o->grants, st, idx)) {
		/* cannot count it: the agent holds a page the daemon may free. */
		LOG_ERR("grant accounting failed for pid %d: disconnecting it", (int)o->pid);
		client_disconnect(o, "out of memory");
	}
}

/* ------------------------------------------------------------ agents */

static void domain_of(struct client *c, const char *label)
{
	struct ksmd_peer p = {.pid = c->pid, .uid = c->uid, .gid = c->gid, .label = label};
	char cg[256];
	int d;

	ksmd_read_cgroup(c->pid, cg, sizeof(cg));
	p.cgroup = cg;
	d = ksmd_config_match(&D.cfg, &p);
	if (d >= 0) {
		const struct ksmd_domain *dom = &D.cfg.domains[d];

		snprintf(c->domain, sizeof(c->domain), "%s", dom->name);
		c->cgroup_key = 1ULL << 33 | (uint64_t)dom->content_group;
		c->zgroup_key = 2ULL << 33 | (uint64_t)dom->zero_group;
	} else {
		snprintf(c->domain, sizeof(c->domain), "uid:%u", (unsigned)c->uid);
		c->cgroup_key = 3ULL << 33 | c->uid;
		c->zgroup_key = 4ULL << 33 | c->uid;
	}
}

static int handle_hello(struct client *c, const uint8_t *msg)
{
	struct ksmu_wire_hello h;
	struct {
		struct ksmu_wire_hdr h;
		struct ksmu_wire_welcome w;
	} m;
	size_t i;

	memcpy(&h, msg + sizeof(struct ksmu_wire_hdr), sizeof(h));
	c->kind = KIND_AGENT;
	domain_of(c, h.label);
	memset(&m, 0, sizeof(m));
	ksmu_wire_hdr_init(&m.h, KSMU_MSG_WELCOME, sizeof(m), c->seq);
	m.w.version = KSMU_WIRE_VERSION;
	m.w.max_pages = KSMU_WIRE_MAX_PAGES;
	m.w.domain = (uint32_t)(c->cgroup_key & 0xffffffffu);
	snprintf(m.w.domain_name, sizeof(m.w.domain_name), "%s", c->domain);
	if (send_packet(c, &m, sizeof(m), -1))
		return -EIO;
	for (i = 0; i < D.nr_knobs; i++)
		send_knob(c, D.knobs[i].name, D.knobs[i].value);
	LOG_INFO("agent pid %d uid %u joined, domain %s", (int)c->pid, (unsigned)c->uid, c->domain);
	return 0;
}

static bool page_is_zero(const uint8_t *p)
{
	static const uint8_t zero[KSMU_WIRE_PAGE];

	return !memcmp(p, zero, KSMU_WIRE_PAGE);
}

/* NUMA node of the agent's pages (merge_across_nodes 0 on a NUMA host). */
static void pages_nodes(struct client *c, const uint64_t *addrs, uint32_t n, int *nodes)
{
	void *pages[KSMU_WIRE_MAX_PAGES];
	uint32_t i;

	for (i = 0; i < n; i++) {
		nodes[i] = 0;
		pages[i] = (void *)(uintptr_t)addrs[i];
	}
	if (D.cfg.merge_across_nodes || D.numa_nodes <= 1)
		return;
	if (move_pages(c->pid, n, pages, NULL, nodes, 0) < 0)
		for (i = 0; i < n; i++)
			nodes[i] = 0;
	for (i = 0; i < n; i++)
		if (nodes[i] < 0 || nodes[i] >= D.numa_nodes)
			nodes[i] = 0;
}

static int handle_lookup(struct client *c, const uint8_t *msg, uint16_t flags)
{
	const size_t hdr = sizeof(struct ksmu_wire_hdr) + sizeof(struct ksmu_wire_count);
	uint32_t n = ksmu_wire_count(msg), i;
	uint64_t addrs[KSMU_WIRE_MAX_PAGES];
	int nodes[KSMU_WIRE_MAX_PAGES];
	struct ksmu_wire_ref refs[KSMU_WIRE_MAX_PAGES];
	struct ksmd_store *stores[KSMU_WIRE_MAX_PAGES];
	struct ksmd_unstable_hit hits[KSMU_WIRE_MAX_PAGES];
	bool hinted[KSMU_WIRE_MAX_PAGES];
	bool created = false;
	const uint8_t *pages;
	size_t len;
	int r;

	memcpy(addrs, msg + hdr, n * sizeof(uint64_t));
	pages = msg + hdr + n * sizeof(uint64_t);
	pages_nodes(c, addrs, n, nodes);
	for (i = 0; i < n; i++) {
		const uint8_t *pg = pages + (size_t)i * KSMU_WIRE_PAGE;
		bool zero = page_is_zero(pg);
		struct ksmd_store_key key = {.group = zero ? c->zgroup_key : c->cgroup_key,
					     .node = (uint16_t)nodes[i], .zero = zero};
		uint64_t h = XXH3_64bits(pg, KSMU_WIRE_PAGE);
		struct ksmd_store *st;
		long idx;
		int err = 0;

		refs[i].store = KSMU_WIRE_NO_STORE;
		refs[i].idx = 0;
		stores[i] = NULL;
		hinted[i] = false;
		st = ksmd_index_store(D.ix, &key, c->domain, &err);
		if (!st) {
			LOG_WARN("no store for domain %s: %s", c->domain, strerror(-err));
			continue;
		}
		idx = ksmd_index_find(D.ix, st, pg, h);
		if (idx < 0 && !(flags & KSMU_LOOKUP_CREATE) &&
		    ksmd_unstable_take(D.ix, c->id, h, key.group | (uint64_t)key.node << 48, &hits[i]))
			hinted[i] = true;
		if (idx < 0 && ((flags & KSMU_LOOKUP_CREATE) || hinted[i])) {
			idx = ksmd_index_create(D.ix, st, pg, h);
			if (idx < 0) {
				LOG_WARN("store page for pid %d: %s", (int)c->pid, strerror((int)-idx));
				hinted[i] = false;
			} else if (flags & KSMU_LOOKUP_CREATE) {
				created = true;
			}
		}
		if (idx < 0) {
			if (!(flags & KSMU_LOOKUP_CREATE))
				ksmd_unstable_put(D.ix, c->id, addrs[i], h,
						  key.group | (uint64_t)key.node << 48);
			continue;
		}
		stores[i] = st;
		refs[i].store = st->id;
		refs[i].idx = (uint32_t)idx;
	}
	if (created)
		fault_point("create");
	/* descriptors first, then the answer; a page not handed out is freed */
	for (i = 0; i < n; i++) {
		if (!stores[i])
			continue;
		if (send_store(c, stores[i])) {
			refs[i].store = KSMU_WIRE_NO_STORE;
			refs[i].idx = 0;
		}
	}
	len = ksmu_wire_size(KSMU_MSG_RESULT, n);
	{
		struct ksmu_wire_hdr h;
		struct ksmu_wire_count cnt = {.count = n};

		ksmu_wire_hdr_init(&h, KSMU_MSG_RESULT, (uint32_t)len, c->seq);
		memcpy(D.sbuf, &h, sizeof(h));
		memcpy(D.sbuf + sizeof(h), &cnt, sizeof(cnt));
		memcpy(D.sbuf + sizeof(h) + sizeof(cnt), refs, n * sizeof(refs[0]));
	}
	r = send_packet(c, D.sbuf, len, -1);
	if (!r)
		fault_point("result");
	for (i = 0; i < n; i++) {
		if (!stores[i])
			continue;
		if (!r && refs[i].store != KSMU_WIRE_NO_STORE &&
		    ksmd_grant(D.ix, &c->grants, stores[i], refs[i].idx)) {
			LOG_ERR("grant accounting failed for pid %d", (int)c->pid);
			r = -ENOMEM;
		}
	}
	/* hints go out once the asking client holds its grant */
	for (i = 0; i < n; i++)
		if (stores[i] && hinted[i])
			send_hint(&hits[i], stores[i], refs[i].idx);
	for (i = 0; i < n; i++)
		if (stores[i])
			ksmd_index_unused(D.ix, stores[i], refs[i].idx);
	return r;
}

static uint64_t release_key(const struct ksmu_wire_release *r)
{
	return (uint64_t)r->store << 32 | r->idx;
}

static int release_cmp(const void *a, const void *b)
{
	uint64_t x = release_key(a), y = release_key(b);

	return x < y ? -1 : x > y;
}

/*
 * RELEASE: all or nothing.  Every (store, idx) named, its counts summed
 * over the message, must be held by the client, or nothing is taken back
 * and the client is refused (an honest agent returns only the grants it
 * read).  Return: 0, or EINVAL for the ERROR reply.
 */
static int handle_release(struct client *c, const uint8_t *msg)
{
	static struct ksmu_wire_release rel[KSMU_WIRE_MAX_ENTRIES];
	uint32_t n = ksmu_wire_count(msg), i, j;

	memcpy(rel, msg + sizeof(struct ksmu_wire_hdr) + sizeof(struct ksmu_wire_count),
	       (size_t)n * sizeof(rel[0]));
	qsort(rel, n, sizeof(rel[0]), release_cmp);
	for (i = 0; i < n; i = j) {
		uint64_t sum = 0;

		for (j = i; j < n && release_key(&rel[j]) == release_key(&rel[i]); j++)
			sum += rel[j].count;
		if (sum > ksmd_grants_held(&c->grants, rel[i].store, rel[i].idx)) {
			LOG_WARN("pid %d: RELEASE of %llu grants of store %u page %u, holds %u: refused",
				 (int)c->pid, (unsigned long long)sum, rel[i].store, rel[i].idx,
				 ksmd_grants_held(&c->grants, rel[i].store, rel[i].idx));
			return EINVAL;
		}
	}
	for (i = 0; i < n; i++)
		ksmd_ungrant(D.ix, &c->grants, rel[i].store, rel[i].idx, rel[i].count);
	return 0;
}

/* The kernel's pid_max now (root may change it): every pid is below it. */
static uint32_t read_pid_max(void)
{
	FILE *f = fopen("/proc/sys/kernel/pid_max", "re");
	unsigned long v = 0;

	if (f) {
		if (fscanf(f, "%lu", &v) != 1)
			v = 0;
		fclose(f);
	}
	return v > 1 && v <= KSMU_WIRE_PID_LIMIT ? (uint32_t)v : KSMU_WIRE_PID_LIMIT;
}

/* Parent pid and real uid of @pid from /proc (-1 if unknown). */
static int proc_ppid_uid(pid_t pid, pid_t *ppid, uid_t *uid)
{
	char path[64], buf[2048], *l;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -EIO;
	buf[n] = 0;
	l = strstr(buf, "\nPPid:");
	if (!l || sscanf(l + 6, "%d", ppid) != 1)
		return -EIO;
	l = strstr(buf, "\nUid:");
	if (!l || sscanf(l + 5, "%u", uid) != 1)
		return -EIO;
	return 0;
}

/*
 * FORK: the sender's new child maps what the sender maps.  Return: 0
 * (recorded, or nothing to record), or EINVAL / EPERM for the ERROR reply:
 * a pid no child of the sender can have, or a process that is not its child.
 */
static int handle_fork(struct client *c, const uint8_t *msg)
{
	struct ksmu_wire_fork f;
	struct client *g;
	pid_t ppid, child;
	uid_t uid;
	size_t i, ghosts = 0;
	int pidfd;

	memcpy(&f, msg + sizeof(struct ksmu_wire_hdr), sizeof(f));
	child = (pid_t)f.child_pid;
	/*
	 * Before anything else, the kernel's pid range: no pid at or above
	 * pid_max exists, pid 1 is nobody's child, and the sender (or the
	 * daemon) is not its own child.  Nothing is opened for such a pid.
	 */
	if (f.child_pid <= 1 || f.child_pid >= read_pid_max() || child == c->pid ||
	    child == getpid()) {
		LOG_WARN("pid %d: FORK names pid %u, which cannot be its child: refused",
			 (int)c->pid, f.child_pid);
		return EINVAL;
	}
	pidfd = (int)syscall(SYS_pidfd_open, child, 0);
	if (pidfd < 0)
		return 0; /* already gone (and reaped): nothing to hold */
	/* only a child of the sender, checked after the pidfd pins its identity */
	if (proc_ppid_uid(child, &ppid, &uid) || ppid != c->pid) {
		LOG_WARN("pid %d: FORK names %u, not its child: refused", (int)c->pid, f.child_pid);
		close(pidfd);
		return EPERM;
	}
	if (!c->grants.total) {
		close(pidfd);
		return 0; /* nothing mapped: nothing to hold */
	}
	for (i = 0; i < D.nr_clients; i++)
		if (D.clients[i]->fd < 0 && D.clients[i]->uid == c->uid)
			ghosts++;
	if (ghosts >= MAX_GHOSTS_PER_UID) {
		LOG_WARN("pid %d: fork of %u not recorded: %zu processes of uid %u already",
			 (int)c->pid, f.child_pid, ghosts, (unsigned)c->uid);
		close(pidfd);
		return 0; /* its store pages then stay until the parent exits */
	}
	g = client_new();
	if (!g) {
		close(pidfd);
		return 0;
	}
	g->pid = (pid_t)f.child_pid;
	g->uid = c->uid;
	g->gid = c->gid;
	g->kind = KIND_AGENT;
	g->forked = true;
	g->pidfd = pidfd;
	snprintf(g->domain, sizeof(g->domain), "%s", c->domain);
	g->cgroup_key = c->cgroup_key;
	g->zgroup_key = c->zgroup_key;
	if (ksmd_grants_copy(D.ix, &g->grants, &c->grants) || ep_add(pidfd, EV_PIDFD, g->id)) {
		LOG_ERR("fork of pid %d: cannot hold its grants", (int)c->pid);
		client_free(g);
		return 0;
	}
	LOG_DEBUG("pid %d forked %d: %llu grants held for the child", (int)c->pid, (int)g->pid,
		  (unsigned long long)g->grants.total);
	return 0;
}

/* ------------------------------------------------------------ ctl */

struct text {
	char *buf;
	size_t len, cap;
	bool full;
};

static void tprintf(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tprintf(struct text *t, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (t->full)
		return;
	va_start(ap, fmt);
	n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= t->cap - t->len) {
		t->full = true;
		t->buf[t->len] = 0;
		return;
	}
	t->len += (size_t)n;
}

static void status_text(struct client *asker, struct text *t)
{
	struct ksmd_index_stats st;
	struct ksmd_store *s;
	uint64_t remote = 0, vmas = 0, meta, agents_meta = 0, connected = 0, ghosts = 0;
	int64_t profit;
	size_t i;
	bool root = asker->uid == 0;

	ksmd_index_get_stats(D.ix, &st);
	meta = ksmd_index_metadata_bytes(D.ix);
	for (i = 0; i < D.nr_clients; i++) {
		struct client *c = D.clients[i];

		if (c->kind != KIND_AGENT)
			continue;
		meta += sizeof(*c) + ksmd_grants_bytes(&c->grants);
		if (c->fd >= 0)
			connected++;
		else
			ghosts++;
		if (c->reported) {
			remote += c->report.remote_pages;
			vmas += c->report.vmas_added;
			agents_meta += c->report.metadata_bytes;
		}
	}
	tprintf(t, "daemon.version %s\n", VERSION);
	tprintf(t, "daemon.pid %d\n", (int)getpid());
	tprintf(t, "daemon.uptime_ms %llu\n", (unsigned long long)(now_ms() - D.started_ms));
	tprintf(t, "daemon.clients %llu\n", (unsigned long long)connected);
	tprintf(t, "daemon.ghosts %llu\n", (unsigned long long)ghosts);
	tprintf(t, "global.pages_shared %llu\n", (unsigned long long)st.store_pages);
	tprintf(t, "global.pages_sharing %llu\n",
		(unsigned long long)(remote > st.store_pages ? remote - st.store_pages : 0));
	tprintf(t, "global.pages_unshared %llu\n", (unsigned long long)st.unstable_entries);
	profit = (int64_t)(remote > st.store_pages ? remote - st.store_pages : 0) * KSMU_WIRE_PAGE -
		 (int64_t)meta - (int64_t)agents_meta - (int64_t)vmas * 192;
	tprintf(t, "global.general_profit %lld\n", (long long)profit);
	tprintf(t, "global.store_pages %llu\n", (unsigned long long)st.store_pages);
	tprintf(t, "global.store_bytes %llu\n", (unsigned long long)st.store_pages * KSMU_WIRE_PAGE);
	tprintf(t, "global.lookups %llu\n", (unsigned long long)st.lookups);
	tprintf(t, "global.matches_stable %llu\n", (unsigned long long)st.matches_stable);
	tprintf(t, "global.matches_unstable %llu\n", (unsigned long long)st.matches_unstable);
	tprintf(t, "global.hints %llu\n", (unsigned long long)D.hints);
	tprintf(t, "global.releases %llu\n", (unsigned long long)st.releases);
	tprintf(t, "global.hash_collisions %llu\n", (unsigned long long)st.hash_collisions);
	tprintf(t, "global.metadata_bytes %llu\n", (unsigned long long)meta);
	tprintf(t, "global.vmas_added %llu\n", (unsigned long long)vmas);
	for (i = 0; i < D.nr_knobs; i++)
		tprintf(t, "knob.%s %llu\n", D.knobs[i].name, (unsigned long long)D.knobs[i].value);
	for (s = ksmd_index_next_store(D.ix, NULL); s; s = ksmd_index_next_store(D.ix, s)) {
		if (!root && strcmp(s->domain, asker->domain))
			continue;
		tprintf(t, "store.%u.domain %s\n", s->id, s->domain);
		tprintf(t, "store.%u.node %u\n", s->id, s->key.node);
		tprintf(t, "store.%u.pages %llu\n", s->id, (unsigned long long)s->s.nr_used);
	}
	for (i = 0; i < D.nr_clients; i++) {
		struct client *c = D.clients[i];
		int pid = (int)c->pid, live = 0;
		uint64_t grants = 0;
		size_t j;
		bool dup = false;

		if (c->kind != KIND_AGENT || (!root && c->uid != asker->uid))
			continue;
		/* one block per process: a forked child's held grants and its own connection */
		for (j = 0; j < i; j++)
			if (D.clients[j]->kind == KIND_AGENT && D.clients[j]->pid == c->pid)
				dup = true;
		if (dup)
			continue;
		for (j = i; j < D.nr_clients; j++) {
			struct client *o = D.clients[j];

			if (o->kind != KIND_AGENT || o->pid != c->pid)
				continue;
			grants += o->grants.total;
			live |= o->fd >= 0;
			if (o->reported && !c->reported)
				c = o;
		}
		tprintf(t, "proc.%d.uid %u\n", pid, (unsigned)c->uid);
		tprintf(t, "proc.%d.domain %s\n", pid, c->domain);
		tprintf(t, "proc.%d.connected %d\n", pid, live);
		tprintf(t, "proc.%d.grants %llu\n", pid, (unsigned long long)grants);
		if (!c->reported)
			continue;
#define R(f) tprintf(t, "proc.%d." #f " %llu\n", pid, (unsigned long long)c->report.f)
		R(pages_shared);
		R(pages_sharing);
		R(pages_unshared);
		R(pages_volatile);
		R(full_scans);
		tprintf(t, "proc.%d.general_profit %lld\n", pid, (long long)c->report.general_profit);
		R(remote_pages);
		R(merges);
		R(cow_breaks);
		R(pages_tracked);
		R(scan_cpu_ns);
		R(metadata_bytes);
		R(vmas_added);
#undef R
	}
	/* domains last: counted from the clients and stores above */
	for (i = 0; i < D.nr_clients; i++) {
		struct client *c = D.clients[i];
		size_t j;
		bool seen = false;
		uint64_t n = 0, pages = 0;

		if (c->kind != KIND_AGENT || (!root && strcmp(c->domain, asker->domain)))
			continue;
		for (j = 0; j < i; j++)
			if (D.clients[j]->kind == KIND_AGENT && !strcmp(D.clients[j]->domain, c->domain))
				seen = true;
		if (seen)
			continue;
		for (j = i; j < D.nr_clients; j++)
			if (D.clients[j]->kind == KIND_AGENT && D.clients[j]->fd >= 0 &&
			    !strcmp(D.clients[j]->domain, c->domain))
				n++;
		for (s = ksmd_index_next_store(D.ix, NULL); s; s = ksmd_index_next_store(D.ix, s))
			if (!strcmp(s->domain, c->domain))
				pages += s->s.nr_used;
		tprintf(t, "domain.%s.clients %llu\n", c->domain, (unsigned long long)n);
		tprintf(t, "domain.%s.store_pages %llu\n", c->domain, (unsigned long long)pages);
	}
}

static int set_knob(const char *name, uint64_t value)
{
	size_t i;
	int r = ksmu_check_tunable(name, (unsigned long)value);

	if (r)
		return r;
	for (i = 0; i < D.nr_knobs; i++)
		if (!strcmp(D.knobs[i].name, name))
			break;
	if (i == D.nr_knobs) {
		if (D.nr_knobs == KSMD_MAX_KNOBS)
			return -ENOSPC;
		D.nr_knobs++;
	}
	snprintf(D.knobs[i].name, sizeof(D.knobs[i].name), "%s", name);
	D.knobs[i].value = value;
	return 0;
}

static size_t broadcast_knob(const char *name, uint64_t value)
{
	size_t i, n = 0;

	for (i = 0; i < D.nr_clients; i++)
		if (D.clients[i]->kind == KIND_AGENT && D.clients[i]->fd >= 0) {
			send_knob(D.clients[i], name, value);
			n++;
		}
	return n;
}

static const char *errname(int err)
{
	switch (err) {
	case EPERM: return "EPERM";
	case EINVAL: return "EINVAL";
	case ERANGE: return "ERANGE";
	case ENOENT: return "ENOENT";
	case ENOSPC: return "ENOSPC";
	default: return "EIO";
	}
}

static int handle_ctl(struct client *c, const uint8_t *msg, size_t len)
{
	size_t tlen = len - sizeof(struct ksmu_wire_hdr);
	char req[256], *w[4], *save = NULL, *tok;
	struct text t = {.buf = (char *)D.sbuf + sizeof(struct ksmu_wire_hdr),
			 .cap = KSMU_WIRE_MAX_TEXT + 1};
	struct ksmu_wire_hdr h;
	int nw = 0;

	c->kind = KIND_CTL;
	if (tlen >= sizeof(req)) {
		tprintf(&t, "ERR EINVAL request longer than 255 bytes\n");
		goto reply;
	}
	memcpy(req, msg + sizeof(struct ksmu_wire_hdr), tlen);
	req[tlen] = 0;
	for (tok = strtok_r(req, " \n", &save); tok && nw < 4; tok = strtok_r(NULL, " \n", &save))
		w[nw++] = tok;
	if (nw == 1 && !strcmp(w[0], "STATUS")) {
		status_text(c, &t);
	} else if (nw == 3 && !strcmp(w[0], "SET")) {
		uint64_t v;
		int r;

		if (c->uid != 0) {
			tprintf(&t, "ERR EPERM only root may change the host's knobs\n");
		} else if ((r = ksmu_parse_decimal(w[2], UINT64_MAX, &v)) != 0) {
			tprintf(&t, "ERR EINVAL value '%s' is not a decimal number\n", w[2]);
		} else if ((r = set_knob(w[1], v)) != 0) {
			tprintf(&t, "ERR %s %s %s: %s\n", errname(-r), w[1], w[2], strerror(-r));
		} else {
			size_t n = broadcast_knob(w[1], v);

			tprintf(&t, "OK\n");
			LOG_INFO("knob %s = %llu (sent to %zu agents)", w[1], (unsigned long long)v, n);
		}
	} else if (nw == 1 && !strcmp(w[0], "UNMERGE")) {
		if (c->uid != 0)
			tprintf(&t, "ERR EPERM only root may unmerge the host\n");
		else
			tprintf(&t, "OK %zu\n", broadcast_knob("run", 2));
	} else {
		tprintf(&t, "ERR EINVAL unknown request (STATUS, SET NAME VALUE, UNMERGE)\n");
	}
reply:
	if (t.full)
		LOG_WARN("status reply truncated at %u bytes", KSMU_WIRE_MAX_TEXT);
	if (t.len == 0)
		tprintf(&t, "ERR EIO empty\n");
	t.len = t.len > KSMU_WIRE_MAX_TEXT ? KSMU_WIRE_MAX_TEXT : t.len;
	ksmu_wire_hdr_init(&h, KSMU_MSG_CTL_REPLY, (uint32_t)(sizeof(h) + t.len), c->seq);
	memcpy(D.sbuf, &h, sizeof(h));
	return send_packet(c, D.sbuf, sizeof(h) + t.len, -1);
}

/* ------------------------------------------------------------ dispatch */

static void client_readable(struct client *c)
{
	struct iovec iov = {.iov_base = D.rbuf, .iov_len = RECV_MAX};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
	struct ksmu_wire_hdr h;
	ssize_t n;
	int err, r = 0;

	/* no control buffer: descriptors a client sends are closed by the kernel */
	n = recvmsg(c->fd, &mh, MSG_DONTWAIT | MSG_TRUNC);
	if (n < 0) {
		if (errno == EAGAIN || errno == EINTR)
			return;
		client_disconnect(c, strerror(errno));
		return;
	}
	if (n == 0) {
		client_disconnect(c, "closed");
		return;
	}
	if ((size_t)n > RECV_MAX)
		err = -EMSGSIZE;
	else
		err = ksmu_wire_check(D.rbuf, (size_t)n);
	if (err) {
		uint16_t type = 0;

		if ((size_t)n >= sizeof(h)) {
			memcpy(&h, D.rbuf, sizeof(h));
			type = h.type;
		}
		LOG_DEBUG("client %u (pid %d): malformed message (%s)", c->id, (int)c->pid,
			  strerror(-err));
		send_error(c, type, 0, -err);
		client_disconnect(c, "malformed message");
		return;
	}
	memcpy(&h, D.rbuf, sizeof(h));
	c->seq = h.seq;
	switch (h.type) {
	case KSMU_MSG_HELLO:
		if (c->kind != KIND_NEW)
			goto refuse;
		r = handle_hello(c, D.rbuf);
		break;
	case KSMU_MSG_CTL:
		if (c->kind == KIND_AGENT)
			goto refuse;
		r = handle_ctl(c, D.rbuf, (size_t)n);
		break;
	case KSMU_MSG_LOOKUP:
		if (c->kind != KIND_AGENT)
			goto refuse;
		r = handle_lookup(c, D.rbuf, h.flags);
		break;
	case KSMU_MSG_RELEASE:
		if (c->kind != KIND_AGENT)
			goto refuse;
		err = handle_release(c, D.rbuf);
		if (err)
			goto reject;
		break;
	case KSMU_MSG_FORK:
		if (c->kind != KIND_AGENT)
			goto refuse;
		err = handle_fork(c, D.rbuf);
		if (err)
			goto reject;
		break;
	case KSMU_MSG_REPORT:
		if (c->kind != KIND_AGENT)
			goto refuse;
		memcpy(&c->report, D.rbuf + sizeof(h), sizeof(c->report));
		c->reported = true;
		break;
	default:
		goto refuse;
	}
	if (r)
		client_disconnect(c, "reply not sent");
	return;
refuse:
	LOG_DEBUG("client %u (pid %d): %s out of order", c->id, (int)c->pid,
		  ksmu_wire_type_name(h.type));
	send_error(c, h.type, h.seq, EPROTO);
	client_disconnect(c, "message out of order");
	return;
reject:
	/* well formed, but refused: nothing was changed */
	send_error(c, h.type, h.seq, err);
	client_disconnect(c, "request refused");
}

static void accept_client(void)
{
	struct ucred cred;
	socklen_t cl = sizeof(cred);
	struct client *c;
	int fd, pidfd;

	fd = accept4(D.lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (fd < 0)
		return;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0) {
		close(fd);
		return;
	}
	c = client_new();
	if (!c) {
		LOG_WARN("too many clients: refusing pid %d", (int)cred.pid);
		close(fd);
		return;
	}
	c->fd = fd;
	c->pid = cred.pid;
	c->uid = cred.uid;
	c->gid = cred.gid;
	cl = sizeof(pidfd);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &cl) < 0)
		pidfd = (int)syscall(SYS_pidfd_open, cred.pid, 0);
	if (pidfd >= 0) {
		fcntl(pidfd, F_SETFD, FD_CLOEXEC);
		c->pidfd = pidfd;
	}
	if (ep_add(fd, EV_SOCK, c->id) || (pidfd >= 0 && ep_add(pidfd, EV_PIDFD, c->id))) {
		client_free(c);
		return;
	}
}

/* ------------------------------------------------------------ set-up */

static int load_config(bool initial)
{
	struct ksmd_config nc;
	char err[512];
	size_t i;
	int r;

	if (D.config_path) {
		r = ksmd_config_load(&nc, D.config_path, err, sizeof(err));
		if (r == -ENOENT && !D.config_given) {
			r = ksmd_config_parse(&nc, "", "(defaults)", err, sizeof(err));
		}
	} else {
		r = ksmd_config_parse(&nc, "", "(defaults)", err, sizeof(err));
	}
	if (r) {
		LOG_ERR("%s%s", err, initial ? "" : " (configuration kept)");
		return r;
	}
	if (!initial && strcmp(nc.socket, D.cfg.socket))
		LOG_WARN("socket path changes need a restart");
	ksmd_config_free(&D.cfg);
	D.cfg = nc;
	for (i = 0; i < D.cfg.nr_knobs; i++)
		set_knob(D.cfg.knobs[i].name, D.cfg.knobs[i].value);
	if (!initial) {
		/* domains of connected clients stay as they were chosen */
		LOG_INFO("configuration reloaded: %zu domains", D.cfg.nr_domains);
		for (i = 0; i < D.cfg.nr_knobs; i++)
			broadcast_knob(D.cfg.knobs[i].name, D.cfg.knobs[i].value);
	}
	return 0;
}

static int make_dirs(const char *path)
{
	char dir[108], *p;

	snprintf(dir, sizeof(dir), "%s", path);
	p = strrchr(dir, '/');
	if (!p || p == dir)
		return 0;
	*p = 0;
	for (p = dir + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(dir, 0755) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(dir, 0755) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

static int open_socket(void)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	int fd, probe;

	if (strlen(D.socket) >= sizeof(a.sun_path))
		return -ENAMETOOLONG;
	strcpy(a.sun_path, D.socket);
	if (make_dirs(D.socket)) {
		LOG_ERR("cannot create the directory of %s: %s", D.socket, strerror(errno));
		return -errno;
	}
	/* a live daemon answers on the path: never steal it */
	probe = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (probe >= 0 && connect(probe, (struct sockaddr *)&a, sizeof(a)) == 0) {
		close(probe);
		LOG_ERR("another ksmd-user is running on %s", D.socket);
		return -EADDRINUSE;
	}
	if (probe >= 0)
		close(probe);
	{
		struct stat st;

		if (lstat(D.socket, &st) == 0) {
			if (!S_ISSOCK(st.st_mode)) {
				LOG_ERR("%s exists and is not a socket", D.socket);
				return -EEXIST;
			}
			unlink(D.socket); /* stale: nobody listens */
		}
	}
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || chmod(D.socket, 0666) < 0 ||
	    listen(fd, 128) < 0) {
		int e = -errno;

		LOG_ERR("cannot listen on %s: %s", D.socket, strerror(-e));
		close(fd);
		return e;
	}
	return fd;
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: ksmd-user [--socket PATH] [--config FILE] [--log-level LEVEL]\n"
		"                 [--pidfile FILE] [--version] [--help]\n"
		"Host-wide user-space page deduplication daemon (see ksmd-user(8)).\n"
		"  --socket PATH      listen here (default /run/ksmu/ksmd.sock)\n"
		"  --config FILE      configuration (default /etc/ksmu/ksmd-user.conf if present)\n"
		"  --log-level LEVEL  error, warn, info (default) or debug\n"
		"  --pidfile FILE     write the daemon's pid here\n");
}

static void dispatch(const struct epoll_event *ev)
{
	uint32_t type = (uint32_t)(ev->data.u64 >> 32), id = (uint32_t)ev->data.u64;
	struct client *c;

	switch (type) {
	case EV_LISTEN:
		accept_client();
		return;
	case EV_SIGNAL: {
		struct signalfd_siginfo si;

		if (read(D.sfd, &si, sizeof(si)) != sizeof(si))
			return;
		if (si.ssi_signo == SIGHUP)
			load_config(false);
		else
			D.stop = true;
		return;
	}
	case EV_SOCK:
		c = client_by_id(id);
		if (c && c->fd >= 0)
			client_readable(c);
		return;
	case EV_PIDFD:
		c = client_by_id(id);
		if (c && pidfd_exited(c->pidfd))
			client_free(c);
		return;
	}
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"socket", required_argument, NULL, 's'},   {"config", required_argument, NULL, 'c'},
		{"log-level", required_argument, NULL, 'l'}, {"pidfile", required_argument, NULL, 'p'},
		{"version", no_argument, NULL, 'V'},	     {"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0}};
	const char *pidfile = NULL;
	struct epoll_event evs[64];
	sigset_t mask;
	int o, i, n;

	D.config_path = "/etc/ksmu/ksmd-user.conf";
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 's':
			if (optarg[0] != '/' || strlen(optarg) >= sizeof(D.socket)) {
				fprintf(stderr, "ksmd-user: --socket needs an absolute path under 108 bytes\n");
				return 2;
			}
			strcpy(D.socket, optarg);
			D.socket_given = true;
			break;
		case 'c':
			D.config_path = optarg;
			D.config_given = true;
			break;
		case 'l':
			if (!strcmp(optarg, "error"))
				D.log_level = 0;
			else if (!strcmp(optarg, "warn"))
				D.log_level = 1;
			else if (!strcmp(optarg, "info"))
				D.log_level = 2;
			else if (!strcmp(optarg, "debug"))
				D.log_level = 3;
			else {
				fprintf(stderr, "ksmd-user: --log-level: error, warn, info or debug\n");
				return 2;
			}
			break;
		case 'p':
			pidfile = optarg;
			break;
		case 'V':
			printf("ksmd-user %s\n", VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "ksmd-user: unexpected argument '%s'\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	{
		const char *fv = getenv("KSMD_FAULT");

		if (fv && fault_parse(fv)) {
			fprintf(stderr, "ksmd-user: KSMD_FAULT=%s: expected POINT:N, POINT one of "
					"create, result, hint, N >= 1 (a test hook)\n",
				fv);
			return 2;
		}
	}
	if (load_config(true))
		return 1;
	if (!D.socket_given)
		strcpy(D.socket, D.cfg.socket);
	D.numa_nodes = numa_available() < 0 ? 1 : numa_max_node() + 1;
	D.rbuf = malloc(RECV_MAX + 1);
	D.sbuf = malloc(RECV_MAX + 1);
	D.ix = ksmd_index_new();
	if (!D.rbuf || !D.sbuf || !D.ix) {
		LOG_ERR("out of memory");
		return 1;
	}
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	D.sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	D.epfd = epoll_create1(EPOLL_CLOEXEC);
	D.lfd = open_socket();
	if (D.lfd < 0 || D.sfd < 0 || D.epfd < 0)
		return 1;
	if (ep_add(D.lfd, EV_LISTEN, 0) || ep_add(D.sfd, EV_SIGNAL, 0)) {
		LOG_ERR("epoll: %s", strerror(errno));
		return 1;
	}
	if (pidfile) {
		FILE *f = fopen(pidfile, "we");

		if (!f || fprintf(f, "%d\n", (int)getpid()) < 0 || fclose(f)) {
			LOG_ERR("cannot write %s: %s", pidfile, strerror(errno));
			return 1;
		}
	}
	D.started_ms = now_ms();
	LOG_INFO("listening on %s (%zu domains configured, %d NUMA node%s)", D.socket,
		 D.cfg.nr_domains, D.numa_nodes, D.numa_nodes == 1 ? "" : "s");
	while (!D.stop) {
		n = epoll_wait(D.epfd, evs, 64, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			LOG_ERR("epoll_wait: %s", strerror(errno));
			break;
		}
		for (i = 0; i < n && !D.stop; i++)
			dispatch(&evs[i]);
	}
	LOG_INFO("stopping: %zu clients; agents keep their merged pages and go on alone",
		 D.nr_clients);
	unlink(D.socket);
	if (pidfile)
		unlink(pidfile);
	/* store pages stay valid in the agents' mappings; nothing to undo */
	while (D.nr_clients) {
		struct client *c = D.clients[0];

		free(c->grants.keys); /* pages are never punched now */
		free(c->grants.counts);
		memset(&c->grants, 0, sizeof(c->grants));
		client_free(c);
	}
	ksmd_index_free(D.ix);
	ksmd_config_free(&D.cfg);
	free(D.rbuf);
	free(D.sbuf);
	return 0;
}
