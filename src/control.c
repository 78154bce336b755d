/* SPDX-License-Identifier: MIT */
/*
 * control.c - the control channel of a process: `ksmctl status --pid PID`
 * and `ksmctl set --pid PID NAME VALUE` (docs/control-protocol.md).
 *
 * DESIGN
 *   One thread ("ksmu-ctl") per process serves an abstract Unix stream
 *   socket named "ksmu/PID", one client at a time, one request per
 *   connection: STATUS (every counter of ksmu_stats and ksmu_proc_stats by
 *   its C name) or SET NAME VALUE (ksmu_set_tunable()).  It starts with the
 *   engine in LD_PRELOAD mode, or with KSMU_CONTROL=1; a program that never
 *   asks for merging has neither socket nor thread.
 *
 *   The server trusts no client: the peer's credentials (SO_PEERCRED) are
 *   checked before anything is read (root or the process's own uid only),
 *   a request is one line of at most 255 bytes, read with a 1 s timeout,
 *   parsed strictly, and answered through the public API, which validates
 *   again.  A bad request gets "ERR ..." and changes nothing.
 *
 * INVARIANTS
 *   - At most one server per process; a forked child closes the parent's
 *     listening socket at once (async-signal-safe) and opens its own at its
 *     first API call.
 *   - The socket is SOCK_CLOEXEC: never inherited by an exec'd program.
 *
 * LOCKING / THREADS
 *   ksmu_control_start() is called with the engine lock held or at engine
 *   start-up; the thread takes the engine lock only through the public API.
 *   It blocks all signals (engine.c start_thread()).
 *
 * KERNEL REQUIREMENTS
 *   Abstract Unix sockets and SO_PEERCRED (Linux 2.2).
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#define LOG_PREFIX "control: "
#include "control.h"
#include "engine.h"
#include "ksmu.h"
#include "log.h"
#include "parse.h"
#include "preload.h"

#define REQ_MAX 256

static int listen_fd = -1;
static bool serving;	  /* a server thread runs in this process */
static bool parent_served; /* in a forked child: the parent had one */

struct field {
	const char *name;
	size_t off;
	bool is_signed;
};

#define STAT_FIELD(n, s) {#n, offsetof(struct ksmu_stats, n), s}
#define PROC_FIELD(n, s) {#n, offsetof(struct ksmu_proc_stats, n), s}

/* struct ksmu_stats, in declaration order (checked below) */
static const struct field stat_fields[] = {
	STAT_FIELD(pages_shared, 0),
	STAT_FIELD(pages_sharing, 0),
	STAT_FIELD(pages_unshared, 0),
	STAT_FIELD(pages_volatile, 0),
	STAT_FIELD(pages_scanned, 0),
	STAT_FIELD(pages_skipped, 0),
	STAT_FIELD(full_scans, 0),
	STAT_FIELD(stable_node_chains, 0),
	STAT_FIELD(stable_node_dups, 0),
	STAT_FIELD(ksm_zero_pages, 0),
	STAT_FIELD(general_profit, 1),
	STAT_FIELD(run, 0),
	STAT_FIELD(pages_to_scan, 0),
	STAT_FIELD(sleep_millisecs, 0),
	STAT_FIELD(max_page_sharing, 0),
	STAT_FIELD(merge_across_nodes, 0),
	STAT_FIELD(use_zero_pages, 0),
	STAT_FIELD(stable_node_chains_prune_millisecs, 0),
	STAT_FIELD(smart_scan, 0),
	STAT_FIELD(rmap_items, 0),
	STAT_FIELD(pages_tracked, 0),
	STAT_FIELD(regions, 0),
	STAT_FIELD(pages_hashed, 0),
	STAT_FIELD(pages_clean, 0),
	STAT_FIELD(pages_compared, 0),
	STAT_FIELD(hash_collisions, 0),
	STAT_FIELD(metadata_bytes, 0),
	STAT_FIELD(rmap_item_size, 0),
	STAT_FIELD(dirty_tracker, 0),
	STAT_FIELD(scan_cpu_ns, 0),
	STAT_FIELD(est_pages_shared, 0),
	STAT_FIELD(est_pages_sharing, 0),
	STAT_FIELD(est_zero_pages, 0),
	STAT_FIELD(est_profit, 1),
	STAT_FIELD(uffd_events, 0),
	STAT_FIELD(dry_run, 0),
	STAT_FIELD(merging, 0),
	STAT_FIELD(merges, 0),
	STAT_FIELD(merge_busy, 0),
	STAT_FIELD(merge_changed, 0),
	STAT_FIELD(merge_failed, 0),
	STAT_FIELD(merge_vma_limited, 0),
	STAT_FIELD(cow_breaks, 0),
	STAT_FIELD(pages_unmerged, 0),
	STAT_FIELD(unmerge_failed, 0),
	STAT_FIELD(minor_zero, 0),
	STAT_FIELD(minor_store, 0),
	STAT_FIELD(store_pages, 0),
	STAT_FIELD(store_orphans, 0),
	STAT_FIELD(store_vmas, 0),
	STAT_FIELD(vmas_added, 0),
	STAT_FIELD(vma_limit, 0),
	STAT_FIELD(merge_zapped, 0),
	STAT_FIELD(merge_unsettled, 0),
	STAT_FIELD(unmerge_retries, 0),
	STAT_FIELD(window_ns, 0),
	STAT_FIELD(window_ns_max, 0),
	STAT_FIELD(pages_adopted, 0),
	STAT_FIELD(zap_ranges, 0),
	STAT_FIELD(reader_cpu_ns, 0),
	STAT_FIELD(cow_policy, 0),
	STAT_FIELD(cow_user, 0),
	STAT_FIELD(cow_user_ns, 0),
	STAT_FIELD(cow_user_ns_max, 0),
	STAT_FIELD(cow_kernel, 0),
	STAT_FIELD(max_vmas, 0),
	STAT_FIELD(merge_windows, 0),
	STAT_FIELD(store_near, 0),
};

static const struct field proc_fields[] = {
	PROC_FIELD(ksm_rmap_items, 0),
	PROC_FIELD(ksm_zero_pages, 0),
	PROC_FIELD(ksm_merging_pages, 0),
	PROC_FIELD(ksm_process_profit, 1),
	PROC_FIELD(ksm_merge_any, 0),
	PROC_FIELD(ksm_mergeable, 0),
};

_Static_assert(sizeof(stat_fields) / sizeof(stat_fields[0]) * sizeof(uint64_t) ==
		   sizeof(struct ksmu_stats),
	       "every field of struct ksmu_stats has a name in stat_fields[]");
_Static_assert(sizeof(proc_fields) / sizeof(proc_fields[0]) * sizeof(uint64_t) ==
		   sizeof(struct ksmu_proc_stats),
	       "every field of struct ksmu_proc_stats has a name in proc_fields[]");

/* Abstract address "\0ksmu/PID"; returns its length. */
static socklen_t control_addr(struct sockaddr_un *a, pid_t pid)
{
	int n;

	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	n = snprintf(a->sun_path + 1, sizeof(a->sun_path) - 1, "ksmu/%d", (int)pid);
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
}

/* Append to a fixed buffer; a full buffer truncates (then the answer has no END). */
struct out {
	char buf[8192];
	size_t len;
};

static void put(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct out *o, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (o->len >= sizeof(o->buf))
		return;
	va_start(ap, fmt);
	n = vsnprintf(o->buf + o->len, sizeof(o->buf) - o->len, fmt, ap);
	va_end(ap);
	if (n > 0)
		o->len = KSMU_MIN(o->len + (size_t)n, sizeof(o->buf));
}

static void put_fields(struct out *o, const char *prefix, const void *base,
		       const struct field *f, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		uint64_t v;

		memcpy(&v, (const char *)base + f[i].off, sizeof(v));
		if (f[i].is_signed)
			put(o, "%s%s %lld\n", prefix, f[i].name, (long long)(int64_t)v);
		else
			put(o, "%s%s %llu\n", prefix, f[i].name, (unsigned long long)v);
	}
}

static const char *errno_name(int err)
{
	switch (err) {
	case EINVAL: return "EINVAL";
	case EBUSY: return "EBUSY";
	case EOPNOTSUPP: return "EOPNOTSUPP";
	case ENOMEM: return "ENOMEM";
	case EPERM: return "EPERM";
	default: return "EIO";
	}
}

static void do_status(struct out *o)
{
	struct ksmu_stats s;
	struct ksmu_proc_stats p;
	int ret = ksmu_stats(&s);

	if (!ret)
		ret = ksmu_proc_stats(&p);
	if (ret) {
		put(o, "ERR %s %s\n", errno_name(-ret), strerror(-ret));
		return;
	}
	put(o, "OK\npid %d\nversion %d\nmerge_any %llu\npreload %d\n", (int)getpid(),
	    ksmu_version(), (unsigned long long)p.ksm_merge_any, ksmu_preload_active() ? 1 : 0);
	put_fields(o, "", &s, stat_fields, KSMU_ARRAY_SIZE(stat_fields));
	put_fields(o, "proc.", &p, proc_fields, KSMU_ARRAY_SIZE(proc_fields));
	put(o, "END\n");
}

/* "SET NAME VALUE": strict decimal VALUE. */
static void do_set(struct out *o, char *args)
{
	char *name = args, *val = strchr(args, ' ');
	unsigned long v;
	uint64_t v64;
	int ret;

	if (!val || !*name) {
		put(o, "ERR EINVAL usage: SET NAME VALUE\n");
		return;
	}
	*val++ = 0;
	if (ksmu_parse_decimal(val, ULONG_MAX, &v64)) {
		put(o, "ERR EINVAL value '%s' is not a decimal number\n", val);
		return;
	}
	v = (unsigned long)v64;
	ret = ksmu_set_tunable(name, v);
	if (ret == -EINVAL)
		put(o, "ERR EINVAL unknown or read-only knob '%s', or value %lu out of range\n",
		    name, v);
	else if (ret)
		put(o, "ERR %s %s\n", errno_name(-ret), strerror(-ret));
	else
		put(o, "OK\n");
}

static void send_all(int fd, const char *p, size_t len)
{
	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n <= 0)
			return;
		p += n;
		len -= (size_t)n;
	}
}

static void serve(int fd)
{
	struct timeval tv = {1, 0};
	struct ucred cred;
	socklen_t cl = sizeof(cred);
	static struct out o; /* this thread only; the engine's own memory (.bss) */
	char req[REQ_MAX + 1];
	size_t len = 0;
	char *nl = NULL;

	o.len = 0;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) ||
	    (cred.uid != 0 && cred.uid != getuid() && cred.uid != geteuid())) {
		put(&o, "ERR EPERM not the owner of process %d\n", (int)getpid());
		send_all(fd, o.buf, o.len);
		/* read what the client sent, so that closing does not reset its read */
		shutdown(fd, SHUT_WR);
		while (len < REQ_MAX) { /* bounded: a client that keeps sending is cut off */
			ssize_t n = recv(fd, req, REQ_MAX - len, 0);

			if (n <= 0)
				break;
			len += (size_t)n;
		}
		return;
	}
	while (len < REQ_MAX && !(nl = memchr(req, '\n', len))) {
		ssize_t n = recv(fd, req + len, REQ_MAX - len, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	if (!nl)
		nl = memchr(req, '\n', len);
	if (!nl) {
		put(&o, len >= REQ_MAX ? "ERR EINVAL request longer than 255 bytes\n"
				       : "ERR ETIMEDOUT no request line within 1 s\n");
	} else {
		*nl = 0;
		if (nl > req && nl[-1] == '\r')
			nl[-1] = 0;
		if (!strcmp(req, "STATUS"))
			do_status(&o);
		else if (!strncmp(req, "SET ", 4))
			do_set(&o, req + 4);
		else
			put(&o, "ERR EINVAL unknown request\n");
	}
	send_all(fd, o.buf, o.len);
}

static void *control_main(void *arg)
{
	(void)arg;
	for (;;) {
		int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED || errno == EAGAIN)
				continue;
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
				usleep(100000); /* the host is short of descriptors: wait */
				continue;
			}
			pr_warn("accept failed: %s; control channel closed", strerror(errno));
			return NULL;
		}
		serve(fd);
		close(fd);
	}
	return NULL;
}

int ksmu_control_start(void)
{
	struct sockaddr_un a;
	socklen_t alen;
	pthread_t t;
	int fd, ret;

	if (serving)
		return 0;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	alen = control_addr(&a, getpid());
	if (bind(fd, (struct sockaddr *)&a, alen) || listen(fd, 8)) {
		ret = -errno;
		pr_warn("no control channel (ksmu/%d): %s", (int)getpid(), strerror(-ret));
		close(fd);
		return ret;
	}
	listen_fd = fd;
	ret = ksmu_engine_start_thread(&t, control_main, NULL, "ksmu-ctl");
	if (ret) {
		close(fd);
		listen_fd = -1;
		return ret;
	}
	serving = true;
	return 0;
}

void ksmu_control_atfork_child(void)
{
	parent_served = serving;
	serving = false;
	if (listen_fd >= 0)
		close(listen_fd);
	listen_fd = -1;
}

bool ksmu_control_child(void)
{
	bool was = parent_served;

	parent_served = false;
	return was;
}
