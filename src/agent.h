/* SPDX-License-Identifier: MIT */
/*
 * agent.h - the process's side of ksmd-user: connection, lookups, hints,
 * grants (see agent.c and docs/daemon-protocol.md).
 */
#ifndef KSMU_AGENT_H
#define KSMU_AGENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "wire.h"

struct ksmu_engine;
struct ksmu_pstore;
struct ksmu_rmap_item;

#define KSMU_AGENT_MAX_STORES 64
#define KSMU_AGENT_MAX_HINTS 4096

enum ksmu_agent_state {
	KSMU_AGENT_OFF = -1,	  /* KSMU_DAEMON=off */
	KSMU_AGENT_IDLE = 0,	  /* not connected; tries again at @retry_ms */
	KSMU_AGENT_CONNECTED = 1,
};

struct ksmu_agent_stats {
	uint64_t connects, disconnects, lookups, lookup_pages, remote_found, hints, hints_merged;
	uint64_t releases, knobs, errors;
};

struct ksmu_agent {
	int state;
	int fd;
	uint32_t seq;
	uint64_t retry_ms;	     /* next connection attempt (CLOCK_MONOTONIC ms) */
	uint32_t retry_interval_ms; /* between attempts: KSMU_DAEMON_RETRY_MS, else 5000 */
	uint64_t report_ms;
	char path[108];
	char domain[32];
	/* stores the daemon sent: id -> pstore (pstores live in engine->stores) */
	struct {
		uint32_t id;
		struct ksmu_pstore *ps;
	} stores[KSMU_AGENT_MAX_STORES];
	size_t nr_stores;
	/* hints read, applied by the scanner */
	struct ksmu_wire_hint *hints;
	size_t nr_hints;
	/* pages waiting for a LOOKUP (scanner) */
	struct ksmu_rmap_item *q_items[KSMU_WIRE_MAX_PAGES];
	uint64_t q_keys[KSMU_WIRE_MAX_PAGES];
	size_t q_n;
	/* RELEASE entries waiting to be sent */
	struct ksmu_wire_release rel[256];
	size_t nr_rel;
	bool hold_releases; /* fork() in progress: the child's FORK goes first */
	uint8_t *buf;	    /* one packet (KSMU_WIRE_MAX), mmap'd */
	struct ksmu_agent_stats st;
};

/* Set up (no connection yet): reads KSMU_DAEMON.  Engine lock held. */
void ksmu_agent_init(struct ksmu_engine *e);
/* Close and forget everything (exit). */
void ksmu_agent_fini(struct ksmu_engine *e);
/* Scanner tick: connect/reconnect when due, read messages, send REPORT. */
void ksmu_agent_tick(struct ksmu_engine *e);
static inline bool ksmu_agent_connected(const struct ksmu_agent *a)
{
	return a->state == KSMU_AGENT_CONNECTED;
}
/*
 * Queue page @it (content @page, hash @key, just put in the unstable tree)
 * for a LOOKUP; a full queue is sent at once.
 */
void ksmu_agent_queue(struct ksmu_engine *e, struct ksmu_rmap_item *it, const void *page,
		      uint64_t key);
/* Send the queued LOOKUP and merge what the daemon found (scanner, end of a batch). */
void ksmu_agent_flush(struct ksmu_engine *e);
/* Apply the hints read so far. */
void ksmu_agent_apply_hints(struct ksmu_engine *e);
/*
 * A store page for content @page (a local duplicate pair at @addr):
 * LOOKUP with CREATE.  Return: the pstore and *@idx, or NULL.
 */
struct ksmu_pstore *ksmu_agent_store_page(struct ksmu_engine *e, uintptr_t addr, const void *page,
					  uint32_t *idx);
/* Give back @count grants of (@store, @idx) (nothing maps the page any more). */
void ksmu_agent_release(struct ksmu_engine *e, uint32_t store, uint32_t idx, uint32_t count);
/* fork(): in the parent, before the engine lock is released / once the pid is known; in the child. */
void ksmu_agent_fork_prepare(struct ksmu_engine *e);
void ksmu_agent_fork_parent(struct ksmu_engine *e, int child_pid);
void ksmu_agent_fork_child(struct ksmu_engine *e);

#endif
