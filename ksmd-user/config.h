/* SPDX-License-Identifier: MIT */
/*
 * config.h - ksmd-user's configuration: security domains, cross-domain
 * permissions, host-default knobs (see config.c and docs/daemon-protocol.md).
 */
#ifndef KSMD_CONFIG_H
#define KSMD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define KSMD_NAME_MAX 32
#define KSMD_MAX_DOMAINS 256   /* configured domains */
#define KSMD_MAX_IDS 64	       /* uids or gids per selector */
#define KSMD_MAX_KNOBS 32

enum ksmd_allow { KSMD_ALLOW_NONE = 0, KSMD_ALLOW_ZERO = 1, KSMD_ALLOW_ALL = 2 };

struct ksmd_domain {
	char name[KSMD_NAME_MAX];
	uid_t uids[KSMD_MAX_IDS];
	size_t nr_uids;
	gid_t gids[KSMD_MAX_IDS];
	size_t nr_gids;
	char cgroup[256]; /* prefix, "" if no selector */
	char label[KSMD_NAME_MAX];
	/* groups (indexes of representative domains), set by ksmd_config_load() */
	int content_group;
	int zero_group;
};

struct ksmd_knob {
	char name[40];
	uint64_t value;
};

struct ksmd_config {
	char socket[108];
	struct ksmd_domain *domains; /* KSMD_MAX_DOMAINS entries */
	size_t nr_domains;
	uint8_t *allow; /* nr_domains x nr_domains, enum ksmd_allow */
	struct ksmd_knob knobs[KSMD_MAX_KNOBS];
	size_t nr_knobs;
	int merge_across_nodes;
};

/* The process a domain is chosen for. */
struct ksmd_peer {
	pid_t pid;
	uid_t uid;
	gid_t gid;
	const char *cgroup; /* cgroup v2 path, "" if unknown */
	const char *label;  /* KSMU_DOMAIN claim, "" if none */
};

/*
 * ksmd_config_parse() - read configuration text @text (NUL-terminated,
 * named @origin in messages) into @c, which is initialised first.
 * Return: 0, or -EINVAL with a message "ORIGIN:LINE: what" in @err.
 * On failure @c holds nothing to free.
 */
int ksmd_config_parse(struct ksmd_config *c, const char *text, const char *origin, char *err,
		      size_t errlen);

/* ksmd_config_load() - ksmd_config_parse() of file @path. */
int ksmd_config_load(struct ksmd_config *c, const char *path, char *err, size_t errlen);

void ksmd_config_free(struct ksmd_config *c);

/*
 * ksmd_config_match() - the configured domain of @p (index), or -1 if no
 * rule matches (the process then gets the domain "uid:N" of its uid).
 */
int ksmd_config_match(const struct ksmd_config *c, const struct ksmd_peer *p);

/* Read the cgroup v2 path of @pid into @buf ("" if unknown). */
void ksmd_read_cgroup(pid_t pid, char *buf, size_t len);

#endif
