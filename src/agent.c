/* SPDX-License-Identifier: MIT */
/*
 * agent.c - the process's side of ksmd-user (docs/daemon-protocol.md).
 *
 * DESIGN
 *   When a daemon is reachable (KSMU_DAEMON=PATH, else /run/ksmu/ksmd.sock
 *   if it exists; KSMU_DAEMON=off never tries), the engine joins it and
 *   merges across processes:
 *     - a page with no duplicate in this process (it went into the local
 *       unstable tree) is sent to the daemon in a LOOKUP (32 per message);
 *       the daemon answers with a store page of the same content if one
 *       exists, or remembers the page and later sends a HINT when another
 *       process has it too;
 *     - a local duplicate pair gets its store page from the daemon
 *       (LOOKUP with CREATE), so that other processes can share it;
 *     - every merge goes through the same merge window as a local one
 *       (merge.c): the page is detached, compared in full with the store
 *       page the agent read itself, and mapped only if equal.  Nothing the
 *       daemon says is trusted beyond "try this page".
 *   Daemon stores are pstores with @remote set (dedup.c): the agent cannot
 *   allocate, write or punch them; a page nothing maps any more is given
 *   back with RELEASE, with the number of grants (messages naming it) read.
 *
 *   Without a daemon, or when it goes away, the engine works alone as
 *   before: merged pages stay valid (nobody punches a store page an agent
 *   holds), new merges use local stores, and a connection is tried again
 *   every 5 s (KSMU_DAEMON_RETRY_MS=10..3600000 changes it), so a
 *   restarted daemon is rejoined.
 *
 * INVARIANTS
 *   - STORE_FD precedes any message naming its store (daemon's side); a
 *     message naming an unknown store is refused (disconnect).
 *   - A reply answers exactly one request: the one waited for, of the type
 *     waited for (RESULT to LOOKUP, WELCOME to HELLO), with its seq.  Any
 *     other reply, an ERROR or a reply while no request waits, a malformed
 *     packet or a descriptor on anything but STORE_FD ends the connection
 *     (tests/func/agent-hostile.c plays such a daemon).
 *   - Grants are counted per (store, idx) in the pstore; a RELEASE returns
 *     all of them, and only once nothing maps the page and no node names it.
 *     A queued HINT's grant is counted when the hint is applied, never
 *     before, so no RELEASE can return it while the hint waits (the daemon
 *     then holds one grant more than we counted: a page kept, not freed).
 *   - fork(): no RELEASE is sent between fork() and the FORK message that
 *     tells the daemon the child's pid (hold_releases); in the child the
 *     inherited stores are retired (never released) and the connection is
 *     closed (the child joins as a process of its own).
 *
 * LOCKING / THREADS
 *   Engine lock held for everything (scanner thread or API caller).
 *   Socket I/O blocks at most 2 s (SO_SNDTIMEO/SO_RCVTIMEO); a timeout
 *   drops the connection.
 *
 * KERNEL REQUIREMENTS
 *   SOCK_SEQPACKET Unix sockets, SCM_RIGHTS.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define LOG_PREFIX "agent: "
#include "engine.h"
#include "log.h"
#include "parse.h"

#define DEFAULT_SOCKET "/run/ksmu/ksmd.sock"
#define RETRY_MS 5000
#define RETRY_MS_MIN 10
#define RETRY_MS_MAX 3600000
#define REPORT_MS 1000
#define IO_TIMEOUT_S 2

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* KSMU_DAEMON_RETRY_MS: ms between connection attempts (tests shorten it). */
static uint32_t retry_interval_from_env(void)
{
	const char *v = getenv("KSMU_DAEMON_RETRY_MS");
	uint64_t x;
	int r;

	if (!v)
		return RETRY_MS;
	r = ksmu_parse_decimal(v, RETRY_MS_MAX, &x);
	if (!r && x < RETRY_MS_MIN)
		r = -ERANGE;
	if (!r)
		return (uint32_t)x;
	/* asked-for output, as for the knobs (options.c): straight to stderr */
	fprintf(stderr, "ksmu: KSMU_DAEMON_RETRY_MS=%s ignored: %s (%u..%u ms); using %u\n", v,
		r == -ERANGE ? "out of range" : "not a decimal number", RETRY_MS_MIN, RETRY_MS_MAX,
		RETRY_MS);
	return RETRY_MS;
}

void ksmu_agent_init(struct ksmu_engine *e)
{
	struct ksmu_agent *a = &e->agent;
	const char *env = getenv("KSMU_DAEMON");

	memset(a, 0, sizeof(*a));
	a->fd = -1;
	a->retry_interval_ms = retry_interval_from_env();
	if (env && !strcmp(env, "off")) {
		a->state = KSMU_AGENT_OFF;
		return;
	}
	if (env && *env && (env[0] != '/' || strlen(env) >= sizeof(a->path))) {
		pr_warn("KSMU_DAEMON=%s: not an absolute socket path; not joining a daemon", env);
		a->state = KSMU_AGENT_OFF;
		return;
	}
	snprintf(a->path, sizeof(a->path), "%s", env && *env ? env : DEFAULT_SOCKET);
	a->state = KSMU_AGENT_IDLE;
}

/* Forget the connection; the pstores stay (pages keep their mappings). */
/*
 * Close the connection and drop what belonged to it: queued lookups,
 * hints and releases (grants not given back stay with the daemon: a
 * leak, never an early free).  Async-signal-safe (the fork child).
 */
static void forget_connection(struct ksmu_agent *a)
{
	if (a->fd >= 0)
		close(a->fd);
	a->fd = -1;
	if (a->state == KSMU_AGENT_CONNECTED)
		a->state = KSMU_AGENT_IDLE;
	a->nr_stores = 0;
	a->nr_hints = 0;
	a->q_n = 0;
	a->nr_rel = 0;
}

static void disconnect(struct ksmu_engine *e, const char *why)
{
	struct ksmu_agent *a = &e->agent;
	size_t i;

	if (a->fd >= 0) {
		pr_info("left ksmd-user (%s): merging alone", why);
		a->st.disconnects++;
	}
	/* the daemon's stores: no more releases (nobody to tell), never freed by us */
	for (i = 0; i < a->nr_stores; i++)
		a->stores[i].ps->retired = true;
	forget_connection(a);
	a->retry_ms = mono_ms() + a->retry_interval_ms;
}

void ksmu_agent_fini(struct ksmu_engine *e)
{
	struct ksmu_agent *a = &e->agent;

	if (a->fd >= 0) {
		close(a->fd);
		a->fd = -1;
	}
	a->state = KSMU_AGENT_OFF;
	free(a->hints);
	a->hints = NULL;
	if (a->buf)
		munmap(a->buf, KSMU_WIRE_MAX);
	a->buf = NULL;
}

static struct ksmu_pstore *store_of(struct ksmu_agent *a, uint32_t id)
{
	size_t i;

	for (i = 0; i < a->nr_stores; i++)
		if (a->stores[i].id == id)
			return a->stores[i].ps;
	return NULL;
}

/* ------------------------------------------------------------ I/O */

static int send_msg(struct ksmu_agent *a, const void *buf, size_t len)
{
	ssize_t n = send(a->fd, buf, len, MSG_NOSIGNAL);

	if (n < 0) {
		pr_debug("send of %zu bytes: %s", len, strerror(errno));
		return -errno;
	}
	return n == (ssize_t)len ? 0 : -EIO;
}

static int on_store_fd(struct ksmu_engine *e, int fd)
{
	struct ksmu_agent *a = &e->agent;
	struct ksmu_wire_store_fd m;
	struct ksmu_pstore *ps;
	struct stat st;

	memcpy(&m, a->buf + sizeof(struct ksmu_wire_hdr), sizeof(m));
	if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || store_of(a, m.store) ||
	    a->nr_stores == KSMU_AGENT_MAX_STORES) {
		if (fd >= 0)
			close(fd);
		return -EPROTO;
	}
	ps = ksmu_dedup_remote_store(e, fd, m.store, (uint64_t)st.st_ino);
	if (!ps) {
		close(fd);
		return -ENOMEM;
	}
	a->stores[a->nr_stores].id = m.store;
	a->stores[a->nr_stores].ps = ps;
	a->nr_stores++;
	return 0;
}

static void on_knob(struct ksmu_engine *e)
{
	struct ksmu_wire_knob k;
	int r;

	memcpy(&k, e->agent.buf + sizeof(struct ksmu_wire_hdr), sizeof(k));
	e->agent.st.knobs++;
	/* validated like any API call; the daemon's word is a request */
	r = ksmu_knob_set(e, k.name, (unsigned long)k.value);
	if (r)
		pr_warn("daemon asked for %s=%llu: %s", k.name, (unsigned long long)k.value,
			strerror(-r));
}

static int on_hint(struct ksmu_engine *e)
{
	struct ksmu_agent *a = &e->agent;
	uint32_t n = ksmu_wire_count(a->buf), i;
	const uint8_t *p = a->buf + sizeof(struct ksmu_wire_hdr) + sizeof(struct ksmu_wire_count);

	if (!a->hints) {
		a->hints = malloc(KSMU_AGENT_MAX_HINTS * sizeof(*a->hints));
		if (!a->hints)
			return -ENOMEM;
	}
	for (i = 0; i < n; i++) {
		struct ksmu_wire_hint h;
		struct ksmu_pstore *ps;
		int err;

		memcpy(&h, p + (size_t)i * sizeof(h), sizeof(h));
		ps = store_of(a, h.store);
		if (!ps)
			return -EPROTO;
		a->st.hints++;
		/*
		 * Every hint is a grant, but it is counted only when the hint is
		 * acted on: a RELEASE of the page sent meanwhile (its last
		 * mapping went) must not give back a grant the queued hint still
		 * needs, or the daemon could free the page before we map it.
		 */
		if (a->nr_hints < KSMU_AGENT_MAX_HINTS) {
			a->hints[a->nr_hints++] = h;
			continue;
		}
		err = ksmu_dedup_remote_grant(ps, h.idx);
		if (err)
			return err == -ERANGE ? -EPROTO : err;
		ksmu_dedup_remote_unused(e, ps, h.idx);
	}
	return 0;
}

/*
 * Read one packet (blocking unless @nowait).  Unsolicited messages are
 * handled here; a RESULT/WELCOME/ERROR is left in a->buf for the caller.
 * Return: its type, 0 if nothing (nowait), or -errno (connection unusable).
 */
static int recv_one(struct ksmu_engine *e, bool nowait)
{
	struct ksmu_agent *a = &e->agent;
	struct iovec iov = {.iov_base = a->buf, .iov_len = KSMU_WIRE_MAX};
	union {
		char b[CMSG_SPACE(sizeof(int) * 4)];
		struct cmsghdr align;
	} u;
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b,
			    .msg_controllen = sizeof(u.b)};
	struct ksmu_wire_hdr h;
	struct cmsghdr *cm;
	int fd = -1, err;
	ssize_t n;

	n = recvmsg(a->fd, &mh, MSG_CMSG_CLOEXEC | MSG_TRUNC | (nowait ? MSG_DONTWAIT : 0));
	if (n < 0)
		return (errno == EAGAIN && nowait) ? 0 : -errno;
	if (n == 0)
		return -ECONNRESET;
	for (cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
			size_t k, nfd = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);

			for (k = 0; k < nfd; k++) {
				int x;

				memcpy(&x, CMSG_DATA(cm) + k * sizeof(int), sizeof(int));
				if (fd < 0)
					fd = x;
				else
					close(x);
			}
		}
	}
	err = (size_t)n > KSMU_WIRE_MAX || (mh.msg_flags & MSG_CTRUNC) ? -EMSGSIZE
								     : ksmu_wire_check(a->buf, (size_t)n);
	if (err)
		goto bad;
	memcpy(&h, a->buf, sizeof(h));
	if (h.type != KSMU_MSG_STORE_FD && fd >= 0) {
		err = -EPROTO;
		goto bad;
	}
	switch (h.type) {
	case KSMU_MSG_STORE_FD:
		err = on_store_fd(e, fd);
		fd = -1;
		return err ? err : KSMU_MSG_STORE_FD;
	case KSMU_MSG_HINT:
		err = on_hint(e);
		return err ? err : KSMU_MSG_HINT;
	case KSMU_MSG_KNOB:
		on_knob(e);
		return KSMU_MSG_KNOB;
	case KSMU_MSG_RESULT:
	case KSMU_MSG_WELCOME:
	case KSMU_MSG_ERROR:
		return h.type;
	default:
		err = -EPROTO;
		goto bad;
	}
bad:
	if (fd >= 0)
		close(fd);
	a->st.errors++;
	pr_warn("bad message from ksmd-user (%zd bytes, flags %#x): %s", n, mh.msg_flags,
		strerror(-err));
	return err;
}

/* A message that answers a request (only wait_reply() may take one). */
static bool is_reply(int type)
{
	return type == KSMU_MSG_RESULT || type == KSMU_MSG_WELCOME || type == KSMU_MSG_ERROR;
}

/*
 * Wait for the reply of type @type to request @seq.  A reply (ERROR
 * included) carrying another seq is not the answer to this request: the
 * daemon lost track of our requests, so the connection is unusable.  An
 * ERROR with another seq can be an honest one (seq 0 for a malformed
 * packet, or the seq of a RELEASE, which has no reply), but the daemon
 * disconnects after any ERROR, so nothing is lost by giving up here.
 * Return: 0 (the reply is in a->buf), the daemon's -errno for an ERROR to
 * @seq, -EPROTO for a reply to another request or of another type, or
 * recv_one()'s -errno.
 */
static int wait_reply(struct ksmu_engine *e, int type, uint32_t seq)
{
	struct ksmu_wire_hdr h;
	int t;

	for (;;) {
		t = recv_one(e, false);
		if (t < 0)
			return t;
		memcpy(&h, e->agent.buf, sizeof(h));
		if (t == KSMU_MSG_ERROR) {
			struct ksmu_wire_error m;

			/* err is 1..4095: ksmu_wire_check() refused anything else */
			memcpy(&m, e->agent.buf + sizeof(h), sizeof(m));
			if (h.seq != seq) {
				pr_debug("ERROR (%s) for request %u while waiting for %u",
					 strerror(m.err), h.seq, seq);
				return -EPROTO;
			}
			return -m.err;
		}
		if (t == type) {
			if (h.seq != seq)
				return -EPROTO;
			return 0;
		}
		if (is_reply(t)) {
			/* a reply, but not of the kind asked for: not ours */
			pr_debug("%s for request %u while waiting for %s to %u",
				 ksmu_wire_type_name((uint16_t)t), h.seq,
				 ksmu_wire_type_name((uint16_t)type), seq);
			return -EPROTO;
		}
		/* STORE_FD, HINT, KNOB: handled by recv_one(); go on waiting */
	}
}

/* ------------------------------------------------------------ connection */

static int connect_daemon(struct ksmu_engine *e)
{
	struct ksmu_agent *a = &e->agent;
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct timeval tv = {.tv_sec = IO_TIMEOUT_S};
	struct {
		struct ksmu_wire_hdr h;
		struct ksmu_wire_hello m;
	} hello;
	struct ksmu_wire_welcome w;
	const char *label = getenv("KSMU_DOMAIN");
	int fd, r;

	if (!a->buf) {
		void *p = mmap(NULL, KSMU_WIRE_MAX, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (p == MAP_FAILED)
			return -ENOMEM;
		a->buf = p; /* mmap'd: selfmem.c keeps it out of merge-any */
	}
	strcpy(sa.sun_path, a->path);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0 ||
	    connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	a->fd = fd;
	memset(&hello, 0, sizeof(hello));
	ksmu_wire_hdr_init(&hello.h, KSMU_MSG_HELLO, sizeof(hello), ++a->seq);
	hello.m.version = KSMU_WIRE_VERSION;
	hello.m.page_size = KSMU_WIRE_PAGE;
	if (label && strlen(label) < sizeof(hello.m.label))
		strcpy(hello.m.label, label);
	else if (label)
		pr_warn("KSMU_DOMAIN longer than 31 bytes: ignored");
	r = send_msg(a, &hello, sizeof(hello));
	if (!r)
		r = wait_reply(e, KSMU_MSG_WELCOME, a->seq);
	if (r) {
		close(fd);
		a->fd = -1;
		return r;
	}
	memcpy(&w, a->buf + sizeof(struct ksmu_wire_hdr), sizeof(w));
	snprintf(a->domain, sizeof(a->domain), "%s", w.domain_name);
	a->state = KSMU_AGENT_CONNECTED;
	a->st.connects++;
	pr_info("joined ksmd-user at %s, domain %s", a->path, a->domain);
	return 0;
}

static void flush_releases(struct ksmu_engine *e)
{
	struct ksmu_agent *a = &e->agent;
	size_t len;
	int r;

	if (!a->nr_rel || a->hold_releases || !ksmu_agent_connected(a))
		return;
	len = ksmu_wire_size(KSMU_MSG_RELEASE, (uint32_t)a->nr_rel);
	{
		struct ksmu_wire_hdr h;
		struct ksmu_wire_count c = {.count = (uint32_t)a->nr_rel};

		ksmu_wire_hdr_init(&h, KSMU_MSG_RELEASE, (uint32_t)len, ++a->seq);
		memcpy(a->buf, &h, sizeof(h));
		memcpy(a->buf + sizeof(h), &c, sizeof(c));
		memcpy(a->buf + sizeof(h) + sizeof(c), a->rel, a->nr_rel * sizeof(a->rel[0]));
	}
	r = send_msg(a, a->buf, len);
	a->st.releases += a->nr_rel;
	a->nr_rel = 0;
	if (r)
		disconnect(e, strerror(-r));
}

void ksmu_agent_release(struct ksmu_engine *e, uint32_t store, uint32_t idx, uint32_t count)
{
	struct ksmu_agent *a = &e->agent;

	if (!ksmu_agent_connected(a) || !count)
		return;
	if (a->nr_rel == sizeof(a->rel) / sizeof(a->rel[0]))
		flush_releases(e);
	if (a->nr_rel == sizeof(a->rel) / sizeof(a->rel[0]))
		return; /* held (fork in progress): the page stays until exit */
	a->rel[a->nr_rel].store = store;
	a->rel[a->nr_rel].idx = idx;
	a->rel[a->nr_rel].count = count;
	a->rel[a->nr_rel].reserved = 0;
	a->nr_rel++;
}

static void send_report(struct ksmu_engine *e)
{
	struct ksmu_agent *a = &e->agent;
	struct {
		struct ksmu_wire_hdr h;
		struct ksmu_wire_report r;
	} m;
	struct ksmu_stats s;

	memset(&m, 0, sizeof(m));
	ksmu_stats_fill(e, &s);
	ksmu_wire_hdr_init(&m.h, KSMU_MSG_REPORT, sizeof(m), ++a->seq);
	m.r.pages_shared = s.pages_shared;
	m.r.pages_sharing = s.pages_sharing;
	m.r.pages_unshared = s.pages_unshared;
	m.r.pages_volatile = s.pages_volatile;
	m.r.full_scans = s.full_scans;
	m.r.general_profit = s.general_profit;
	m.r.remote_pages = ksmu_dedup_remote_pages(e);
	m.r.merges = s.merges;
	m.r.cow_breaks = s.cow_breaks;
	m.r.pages_tracked = s.pages_tracked;
	m.r.scan_cpu_ns = s.scan_cpu_ns;
	m.r.metadata_bytes = s.metadata_bytes;
	m.r.vmas_added = s.vmas_added;
	if (send_msg(a, &m, sizeof(m)))
		disconnect(e, "report not sent");
}

void ksmu_agent_tick(struct ksmu_engine *e)
{
	struct ksmu_agent *a = &e->agent;
	uint64_t now;
	int t;

	if (a->state == KSMU_AGENT_OFF)
		return;
	now = mono_ms();
	if (a->state == KSMU_AGENT_IDLE) {
		struct stat st;
		int r;

		if (now < a->retry_ms)
			return;
		a->retry_ms = now + a->retry_interval_ms;
		if (stat(a->path, &st) < 0 || !S_ISSOCK(st.st_mode))
			return;
		r = connect_daemon(e);
		if (r)
			pr_debug("ksmd-user at %s: %s", a->path, strerror(-r));
		return;
	}
	/*
	 * Only unsolicited messages are legitimate here: a reply (RESULT,
	 * WELCOME) or an ERROR while no request waits means that the daemon
	 * lost track of this connection.
	 */
	while ((t = recv_one(e, true)) > 0)
		if (is_reply(t)) {
			t = -EPROTO;
			break;
		}
	if (t < 0) {
		disconnect(e, strerror(-t));
		return;
	}
	flush_releases(e);
	if (ksmu_agent_connected(a) && now >= a->report_ms) {
		a->report_ms = now + REPORT_MS;
		send_report(e);
	}
}

/* ------------------------------------------------------------ lookups */

/* Send a LOOKUP of @n pages and wait for the RESULT into @refs. */
static int lookup(struct ksmu_engine *e, const uint64_t *addrs, const void *const *pages, size_t n,
		  uint16_t flags, struct ksmu_wire_ref *refs)
{
	struct ksmu_agent *a = &e->agent;
	const size_t base = sizeof(struct ksmu_wire_hdr) + sizeof(struct ksmu_wire_count);
	size_t len = ksmu_wire_size(KSMU_MSG_LOOKUP, (uint32_t)n), i;
	struct ksmu_wire_hdr h;
	struct ksmu_wire_count c = {.count = (uint32_t)n};
	uint32_t seq = ++a->seq;
	int r;

	ksmu_wire_hdr_init(&h, KSMU_MSG_LOOKUP, (uint32_t)len, seq);
	h.flags = flags;
	memcpy(a->buf, &h, sizeof(h));
	memcpy(a->buf + sizeof(h), &c, sizeof(c));
	memcpy(a->buf + base, addrs, n * sizeof(uint64_t));
	for (i = 0; i < n; i++)
		memcpy(a->buf + base + n * sizeof(uint64_t) + i * KSMU_WIRE_PAGE, pages[i],
		       KSMU_WIRE_PAGE);
	r = send_msg(a, a->buf, len);
	if (!r)
		r = wait_reply(e, KSMU_MSG_RESULT, seq);
	if (!r && ksmu_wire_count(a->buf) != n)
		r = -EPROTO;
	if (r) {
		disconnect(e, strerror(-r));
		return r;
	}
	memcpy(refs, a->buf + base, n * sizeof(*refs));
	a->st.lookups++;
	a->st.lookup_pages += n;
	return 0;
}

/* Take a grant for every answer; Return: -EPROTO if one names an unknown store. */
static int grant_refs(struct ksmu_engine *e, const struct ksmu_wire_ref *refs, size_t n,
		      struct ksmu_pstore **ps)
{
	size_t i;

	for (i = 0; i < n; i++) {
		ps[i] = NULL;
		if (refs[i].store == KSMU_WIRE_NO_STORE)
			continue;
		ps[i] = store_of(&e->agent, refs[i].store);
		if (!ps[i] || ksmu_dedup_remote_grant(ps[i], refs[i].idx)) {
			/* grants taken so far are kept (the daemon counted them) */
			disconnect(e, "answer names an unknown store");
			return -EPROTO;
		}
	}
	return 0;
}

struct ksmu_pstore *ksmu_agent_store_page(struct ksmu_engine *e, uintptr_t addr, const void *page,
					  uint32_t *idx)
{
	struct ksmu_wire_ref ref;
	struct ksmu_pstore *ps;
	uint64_t a64 = addr;

	if (!ksmu_agent_connected(&e->agent) || lookup(e, &a64, &page, 1, KSMU_LOOKUP_CREATE, &ref))
		return NULL;
	if (grant_refs(e, &ref, 1, &ps) || !ps)
		return NULL;
	*idx = ref.idx;
	return ps;
}

void ksmu_agent_queue(struct ksmu_engine *e, struct ksmu_rmap_item *it, const void *page,
		      uint64_t key)
{
	struct ksmu_agent *a = &e->agent;

	if (!ksmu_agent_connected(a))
		return;
	/* our copy of the content, as compared: the batch buffer is reused */
	memcpy(e->agent_pages + a->q_n * KSMU_WIRE_PAGE, page, KSMU_WIRE_PAGE);
	a->q_items[a->q_n] = it;
	a->q_keys[a->q_n] = key;
	a->q_n++;
	if (a->q_n == KSMU_WIRE_MAX_PAGES)
		ksmu_agent_flush(e);
}

void ksmu_agent_flush(struct ksmu_engine *e)
{
	struct ksmu_agent *a = &e->agent;
	struct ksmu_wire_ref refs[KSMU_WIRE_MAX_PAGES];
	struct ksmu_pstore *ps[KSMU_WIRE_MAX_PAGES];
	const void *pages[KSMU_WIRE_MAX_PAGES];
	uint64_t addrs[KSMU_WIRE_MAX_PAGES];
	size_t n = a->q_n, i;

	a->q_n = 0;
	if (!n || !ksmu_agent_connected(a))
		return;
	/*
	 * The items stay valid until the end of the scanner's batch (events
	 * are applied between batches, under the same lock), and this runs
	 * before it ends.
	 */
	for (i = 0; i < n; i++) {
		addrs[i] = ksmu_item_addr(a->q_items[i]);
		pages[i] = e->agent_pages + i * KSMU_WIRE_PAGE;
	}
	if (lookup(e, addrs, pages, n, 0, refs) || grant_refs(e, refs, n, ps))
		return;
	for (i = 0; i < n; i++) {
		if (!ps[i])
			continue;
		a->st.remote_found++;
		ksmu_dedup_remote_merge(e, a->q_items[i], a->q_keys[i], ps[i], refs[i].idx);
	}
}

void ksmu_agent_apply_hints(struct ksmu_engine *e)
{
	struct ksmu_agent *a = &e->agent;
	size_t i;

	for (i = 0; i < a->nr_hints; i++) {
		const struct ksmu_wire_hint *h = &a->hints[i];
		struct ksmu_pstore *ps = store_of(a, h->store);

		if (!ps)
			continue; /* connection lost since: the grant stays with the daemon */
		int gerr = ksmu_dedup_remote_grant(ps, h->idx);

		if (gerr) {
			disconnect(e, gerr == -ERANGE ? "a hint names an impossible store page"
						      : "out of memory for grants");
			break;
		}
		if (ksmu_dedup_remote_hint(e, (uintptr_t)h->addr, ps, h->idx) == 0)
			a->st.hints_merged++;
	}
	a->nr_hints = 0;
}

/* ------------------------------------------------------------ fork */

void ksmu_agent_fork_prepare(struct ksmu_engine *e)
{
	/* until the FORK with the child's pid is sent, no page may be given back */
	if (ksmu_agent_connected(&e->agent))
		e->agent.hold_releases = true;
}

void ksmu_agent_fork_parent(struct ksmu_engine *e, int child_pid)
{
	struct ksmu_agent *a = &e->agent;
	struct {
		struct ksmu_wire_hdr h;
		struct ksmu_wire_fork f;
	} m;

	if (!a->hold_releases)
		return;
	if (child_pid > 0 && ksmu_agent_connected(a)) {
		memset(&m, 0, sizeof(m));
		ksmu_wire_hdr_init(&m.h, KSMU_MSG_FORK, sizeof(m), ++a->seq);
		m.f.child_pid = (uint32_t)child_pid;
		if (send_msg(a, &m, sizeof(m))) {
			/* the child's pages are protected only by ours now: keep them */
			disconnect(e, "FORK not sent");
			return;
		}
	}
	a->hold_releases = false;
	flush_releases(e);
}

void ksmu_agent_fork_child(struct ksmu_engine *e)
{
	struct ksmu_agent *a = &e->agent;

	/* the pstores are retired by ksmu_dedup_fork() */
	forget_connection(a);
	a->retry_ms = 0; /* join as a process of its own at the first tick */
	a->hold_releases = false;
}
