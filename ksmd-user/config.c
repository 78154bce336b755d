/* SPDX-License-Identifier: MIT */
/*
 * config.c - ksmd-user's configuration file: security domains and which of
 * them may merge with which (docs/daemon-protocol.md, "Configuration").
 *
 * DESIGN
 *   A line-oriented parser with no defaults hidden in it: every directive
 *   is checked completely (names, numbers, duplicates) and any error names
 *   the line; a configuration is all or nothing.
 *
 *   Domains are matched in file order; a process that matches none is in
 *   the implicit domain "uid:N" (same-user merging only, the default).
 *   Cross-domain permissions form two relations, "all" and "zero" (where
 *   "all" implies "zero").  Pages are shared through stores: a store serves
 *   a group of domains, and every process of the group can read every page
 *   of the store.  So a group must be a set of domains that are pairwise
 *   allowed: the relations must be transitive.  The parser computes the
 *   groups (connected components) and refuses a configuration in which a
 *   component contains a pair that is not allowed, instead of silently
 *   letting C read A's pages through B.
 *
 * INVARIANTS
 *   - allow[i][j] == allow[j][i]; allow[i][i] == ALL.
 *   - Every pair in one content group is allowed ALL; every pair in one
 *     zero group is allowed at least ZERO.
 *
 * LOCKING / THREADS
 *   Single-threaded daemon: none.
 *
 * KERNEL REQUIREMENTS
 *   /proc/PID/cgroup (cgroup v2) for cgroup= selectors.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "ksmu.h"
#include "parse.h"

#define DEFAULT_SOCKET "/run/ksmu/ksmd.sock"
#define MAX_TEXT (1u << 20)

static int fail(char *err, size_t errlen, const char *origin, int line, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

static int fail(char *err, size_t errlen, const char *origin, int line, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	snprintf(err, errlen, "%s:%d: %s", origin, line, msg);
	return -EINVAL;
}

static bool valid_name(const char *s)
{
	size_t n = strlen(s), i;

	if (n == 0 || n >= KSMD_NAME_MAX || !strncmp(s, "uid:", 4))
		return false;
	for (i = 0; i < n; i++) {
		char ch = s[i];

		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '_' || ch == '.' || ch == '-'))
			return false;
	}
	return true;
}

static int find_domain(const struct ksmd_config *c, const char *name)
{
	size_t i;

	for (i = 0; i < c->nr_domains; i++)
		if (!strcmp(c->domains[i].name, name))
			return (int)i;
	return -1;
}

/* "N[,N...]" into @out (at most KSMD_MAX_IDS).  Return: count, or -1. */
static int parse_ids(const char *s, uint32_t *out)
{
	char buf[1024], *tok, *save = NULL;
	int n = 0;

	if (strlen(s) >= sizeof(buf))
		return -1;
	strcpy(buf, s);
	for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		uint64_t v;

		if (n == KSMD_MAX_IDS || ksmu_parse_decimal(tok, 0xfffffffeu, &v))
			return -1;
		out[n++] = (uint32_t)v;
	}
	/* "1,,2", ",1" and "1," leave empty tokens strtok() skips: refuse them */
	if (!n || s[0] == ',' || s[strlen(s) - 1] == ',' || strstr(s, ",,"))
		return -1;
	return n;
}

static int parse_domain(struct ksmd_config *c, char **w, int nw, const char *origin, int line,
			char *err, size_t errlen)
{
	struct ksmd_domain *d;
	int i;

	if (nw < 3)
		return fail(err, errlen, origin, line, "usage: domain NAME SELECTOR...");
	if (!valid_name(w[1]))
		return fail(err, errlen, origin, line,
			    "bad domain name '%s' (1-31 of [A-Za-z0-9_.-], not uid:...)", w[1]);
	if (find_domain(c, w[1]) >= 0)
		return fail(err, errlen, origin, line, "domain '%s' defined twice", w[1]);
	if (c->nr_domains == KSMD_MAX_DOMAINS)
		return fail(err, errlen, origin, line, "more than %d domains", KSMD_MAX_DOMAINS);
	d = &c->domains[c->nr_domains];
	memset(d, 0, sizeof(*d));
	strcpy(d->name, w[1]);
	for (i = 2; i < nw; i++) {
		const char *v = strchr(w[i], '=');
		int n;

		if (!v || !v[1])
			return fail(err, errlen, origin, line, "bad selector '%s'", w[i]);
		v++;
		if (!strncmp(w[i], "uid=", 4) && !d->nr_uids) {
			n = parse_ids(v, d->uids);
			if (n < 0)
				return fail(err, errlen, origin, line, "bad uid list '%s'", v);
			d->nr_uids = (size_t)n;
		} else if (!strncmp(w[i], "gid=", 4) && !d->nr_gids) {
			n = parse_ids(v, d->gids);
			if (n < 0)
				return fail(err, errlen, origin, line, "bad gid list '%s'", v);
			d->nr_gids = (size_t)n;
		} else if (!strncmp(w[i], "cgroup=", 7) && !d->cgroup[0]) {
			if (v[0] != '/' || strlen(v) >= sizeof(d->cgroup))
				return fail(err, errlen, origin, line,
					    "cgroup prefix must be an absolute path under 256 bytes");
			strcpy(d->cgroup, v);
		} else if (!strncmp(w[i], "label=", 6) && !d->label[0]) {
			if (!valid_name(v))
				return fail(err, errlen, origin, line, "bad label '%s'", v);
			strcpy(d->label, v);
		} else {
			return fail(err, errlen, origin, line,
				    "unknown or repeated selector '%s' (uid= gid= cgroup= label=)",
				    w[i]);
		}
	}
	c->nr_domains++;
	return 0;
}

/* union-find over domain indexes */
static int uf_find(int *p, int i)
{
	while (p[i] != i)
		i = p[i] = p[p[i]];
	return i;
}

static int compute_groups(struct ksmd_config *c, const char *origin, char *err, size_t errlen)
{
	size_t n = c->nr_domains, i, j;
	int pc[KSMD_MAX_DOMAINS], pz[KSMD_MAX_DOMAINS];

	for (i = 0; i < n; i++)
		pc[i] = pz[i] = (int)i;
	for (i = 0; i < n; i++)
		for (j = 0; j < n; j++) {
			uint8_t a = c->allow[i * n + j];

			if (a == KSMD_ALLOW_ALL)
				pc[uf_find(pc, (int)i)] = uf_find(pc, (int)j);
			if (a >= KSMD_ALLOW_ZERO)
				pz[uf_find(pz, (int)i)] = uf_find(pz, (int)j);
		}
	for (i = 0; i < n; i++)
		for (j = i + 1; j < n; j++) {
			uint8_t a = c->allow[i * n + j];

			if (uf_find(pc, (int)i) == uf_find(pc, (int)j) && a != KSMD_ALLOW_ALL)
				return fail(err, errlen, origin, 0,
					    "'allow ... all' is not transitive: %s and %s are linked "
					    "through other domains; add 'allow %s %s all'",
					    c->domains[i].name, c->domains[j].name,
					    c->domains[i].name, c->domains[j].name);
			if (uf_find(pz, (int)i) == uf_find(pz, (int)j) && a < KSMD_ALLOW_ZERO)
				return fail(err, errlen, origin, 0,
					    "'allow ... zero' is not transitive: %s and %s are linked "
					    "through other domains; add 'allow %s %s zero'",
					    c->domains[i].name, c->domains[j].name,
					    c->domains[i].name, c->domains[j].name);
		}
	for (i = 0; i < n; i++) {
		c->domains[i].content_group = uf_find(pc, (int)i);
		c->domains[i].zero_group = uf_find(pz, (int)i);
	}
	return 0;
}

void ksmd_config_free(struct ksmd_config *c)
{
	free(c->domains);
	free(c->allow);
	c->domains = NULL;
	c->allow = NULL;
	c->nr_domains = 0;
}

#define MAX_WORDS 16

int ksmd_config_parse(struct ksmd_config *c, const char *text, const char *origin, char *err,
		      size_t errlen)
{
	/* allow lines are kept until all domains are known */
	struct {
		char a[KSMD_NAME_MAX], b[KSMD_NAME_MAX];
		uint8_t level;
		int line;
	} *allows = NULL;
	size_t nr_allows = 0, i;
	char *copy = NULL, *p, *next;
	int line = 0, ret = -ENOMEM;

	memset(c, 0, sizeof(*c));
	strcpy(c->socket, DEFAULT_SOCKET);
	c->merge_across_nodes = 1;
	if (strlen(text) > MAX_TEXT)
		return fail(err, errlen, origin, 0, "file larger than 1 MiB");
	c->domains = calloc(KSMD_MAX_DOMAINS, sizeof(*c->domains));
	allows = calloc(KSMD_MAX_DOMAINS * 4, sizeof(*allows));
	copy = strdup(text);
	if (!c->domains || !allows || !copy) {
		snprintf(err, errlen, "%s: out of memory", origin);
		goto out;
	}
	for (p = copy; p; p = next) {
		char *w[MAX_WORDS], *save = NULL, *tok, *hash;
		int nw = 0;

		line++;
		next = strchr(p, '\n');
		if (next)
			*next++ = 0;
		hash = strchr(p, '#');
		if (hash)
			*hash = 0;
		for (tok = strtok_r(p, " \t\r", &save); tok; tok = strtok_r(NULL, " \t\r", &save)) {
			if (nw == MAX_WORDS) {
				ret = fail(err, errlen, origin, line, "too many words");
				goto out;
			}
			w[nw++] = tok;
		}
		if (!nw)
			continue;
		if (!strcmp(w[0], "socket")) {
			if (nw != 2 || w[1][0] != '/' || strlen(w[1]) >= sizeof(c->socket)) {
				ret = fail(err, errlen, origin, line,
					   "usage: socket ABSOLUTE-PATH (under 108 bytes)");
				goto out;
			}
			strcpy(c->socket, w[1]);
		} else if (!strcmp(w[0], "domain")) {
			ret = parse_domain(c, w, nw, origin, line, err, errlen);
			if (ret)
				goto out;
		} else if (!strcmp(w[0], "allow")) {
			uint8_t level;

			if (nw != 4 || (strcmp(w[3], "zero") && strcmp(w[3], "all"))) {
				ret = fail(err, errlen, origin, line, "usage: allow NAME1 NAME2 zero|all");
				goto out;
			}
			level = !strcmp(w[3], "all") ? KSMD_ALLOW_ALL : KSMD_ALLOW_ZERO;
			if (nr_allows == KSMD_MAX_DOMAINS * 4 || strlen(w[1]) >= KSMD_NAME_MAX ||
			    strlen(w[2]) >= KSMD_NAME_MAX) {
				ret = fail(err, errlen, origin, line, "too many allow lines or long names");
				goto out;
			}
			strcpy(allows[nr_allows].a, w[1]);
			strcpy(allows[nr_allows].b, w[2]);
			allows[nr_allows].level = level;
			allows[nr_allows].line = line;
			nr_allows++;
		} else if (!strcmp(w[0], "knob")) {
			uint64_t v;
			int r;

			if (nw != 3 || ksmu_parse_decimal(w[2], UINT64_MAX, &v)) {
				ret = fail(err, errlen, origin, line, "usage: knob NAME DECIMAL-VALUE");
				goto out;
			}
			r = ksmu_check_tunable(w[1], v);
			if (r) {
				ret = fail(err, errlen, origin, line, "knob %s %s: %s", w[1], w[2],
					   strerror(-r));
				goto out;
			}
			if (c->nr_knobs == KSMD_MAX_KNOBS || strlen(w[1]) >= sizeof(c->knobs[0].name)) {
				ret = fail(err, errlen, origin, line, "too many knobs");
				goto out;
			}
			strcpy(c->knobs[c->nr_knobs].name, w[1]);
			c->knobs[c->nr_knobs].value = v;
			c->nr_knobs++;
		} else if (!strcmp(w[0], "merge_across_nodes")) {
			if (nw != 2 || (strcmp(w[1], "0") && strcmp(w[1], "1"))) {
				ret = fail(err, errlen, origin, line, "usage: merge_across_nodes 0|1");
				goto out;
			}
			c->merge_across_nodes = w[1][0] == '1';
		} else {
			ret = fail(err, errlen, origin, line, "unknown directive '%s'", w[0]);
			goto out;
		}
	}
	ret = -ENOMEM;
	c->allow = calloc(c->nr_domains ? c->nr_domains * c->nr_domains : 1, 1);
	if (!c->allow) {
		snprintf(err, errlen, "%s: out of memory", origin);
		goto out;
	}
	for (i = 0; i < c->nr_domains; i++)
		c->allow[i * c->nr_domains + i] = KSMD_ALLOW_ALL;
	for (i = 0; i < nr_allows; i++) {
		int a = find_domain(c, allows[i].a), b = find_domain(c, allows[i].b);
		size_t n = c->nr_domains;

		if (a < 0 || b < 0) {
			ret = fail(err, errlen, origin, allows[i].line, "allow: unknown domain '%s'",
				   a < 0 ? allows[i].a : allows[i].b);
			goto out;
		}
		if (a == b) {
			ret = fail(err, errlen, origin, allows[i].line, "allow: a domain with itself");
			goto out;
		}
		if (allows[i].level > c->allow[(size_t)a * n + (size_t)b])
			c->allow[(size_t)a * n + (size_t)b] = c->allow[(size_t)b * n + (size_t)a] =
			    allows[i].level;
	}
	ret = compute_groups(c, origin, err, errlen);
out:
	free(allows);
	free(copy);
	if (ret)
		ksmd_config_free(c);
	return ret;
}

int ksmd_config_load(struct ksmd_config *c, const char *path, char *err, size_t errlen)
{
	char *buf;
	ssize_t n;
	size_t len = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC), ret;

	if (fd < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -errno;
	}
	buf = malloc(MAX_TEXT + 2);
	if (!buf) {
		close(fd);
		return -ENOMEM;
	}
	while ((n = read(fd, buf + len, MAX_TEXT + 1 - len)) > 0)
		len += (size_t)n;
	close(fd);
	if (n < 0 || len > MAX_TEXT) {
		snprintf(err, errlen, "%s: %s", path, n < 0 ? strerror(errno) : "larger than 1 MiB");
		free(buf);
		return -EINVAL;
	}
	buf[len] = 0;
	if (memchr(buf, 0, len)) {
		snprintf(err, errlen, "%s: contains a NUL byte", path);
		free(buf);
		return -EINVAL;
	}
	ret = ksmd_config_parse(c, buf, path, err, errlen);
	free(buf);
	return ret;
}

static bool id_in(const uint32_t *ids, size_t n, uint32_t id)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (ids[i] == id)
			return true;
	return false;
}

int ksmd_config_match(const struct ksmd_config *c, const struct ksmd_peer *p)
{
	size_t i;

	for (i = 0; i < c->nr_domains; i++) {
		const struct ksmd_domain *d = &c->domains[i];
		size_t cl = strlen(d->cgroup);

		if (d->nr_uids && !id_in(d->uids, d->nr_uids, p->uid))
			continue;
		if (d->nr_gids && !id_in(d->gids, d->nr_gids, p->gid))
			continue;
		if (cl && (strncmp(p->cgroup, d->cgroup, cl) ||
			   (p->cgroup[cl] != 0 && p->cgroup[cl] != '/' && d->cgroup[cl - 1] != '/')))
			continue;
		if (d->label[0] && strcmp(d->label, p->label))
			continue;
		return (int)i;
	}
	return -1;
}

void ksmd_read_cgroup(pid_t pid, char *buf, size_t len)
{
	char path[64], text[1024];
	ssize_t n;
	int fd;

	buf[0] = 0;
	snprintf(path, sizeof(path), "/proc/%d/cgroup", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	n = read(fd, text, sizeof(text) - 1);
	close(fd);
	if (n <= 0)
		return;
	text[n] = 0;
	/* cgroup v2: the line "0::/path" */
	{
		char *l = strstr(text, "0::");

		if (l && (l == text || l[-1] == '\n')) {
			char *e = strchr(l, '\n');

			if (e)
				*e = 0;
			snprintf(buf, len, "%s", l + 3);
		}
	}
}
