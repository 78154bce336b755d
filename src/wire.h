/* SPDX-License-Identifier: MIT */
/*
 * wire.h - the messages between ksmd-user and its agents (libksmu in each
 * participating process) and ksmctl: layout, limits and the one validator
 * both sides run on every message they receive (wire.c).  The protocol is
 * described in docs/daemon-protocol.md.
 *
 * DESIGN
 *   A SOCK_SEQPACKET Unix socket: one message per packet, never split or
 *   merged, at most KSMU_WIRE_MAX bytes, in host byte order (both ends run
 *   on one machine).  Every message starts with struct ksmu_wire_hdr; @len
 *   must equal the packet's size, and the body's size must be exactly what
 *   the type and its count say.  A receiver validates with
 *   ksmu_wire_check() before it looks at anything else, so the parsing of
 *   untrusted bytes lives in one function (fuzzed: tests/fuzz/).
 *
 *   Page contents travel in the message (LOOKUP): the daemon never reads an
 *   agent's memory, so a client cannot make it block on a fault or read
 *   another process, and it needs no ptrace rights.  It hashes and compares
 *   what it receives; agents compare every store page in full against their
 *   own page before mapping it.  Nothing either side claims is trusted.
 */
#ifndef KSMU_WIRE_H
#define KSMU_WIRE_H

#include <stddef.h>
#include <stdint.h>

#define KSMU_WIRE_MAGIC 0x574d534bu /* "KSMW" */
#define KSMU_WIRE_VERSION 1u
/* Largest packet: a LOOKUP of KSMU_WIRE_MAX_PAGES pages (fits the default
 * unix socket buffer, net.core.wmem_default = 212992). */
#define KSMU_WIRE_MAX_PAGES 32u
#define KSMU_WIRE_PAGE 4096u
#define KSMU_WIRE_MAX (sizeof(struct ksmu_wire_hdr) + 8u + KSMU_WIRE_MAX_PAGES * (8u + KSMU_WIRE_PAGE))
/* Entries of the messages that carry no pages. */
#define KSMU_WIRE_MAX_ENTRIES 1024u
/* Text of CTL and CTL_REPLY messages. */
#define KSMU_WIRE_MAX_TEXT 65536u
/* Pids are below the kernel's PID_MAX_LIMIT (4194304 on 64-bit). */
#define KSMU_WIRE_PID_LIMIT (1u << 22)
/* Store id 0 means "none". */
#define KSMU_WIRE_NO_STORE 0u

enum ksmu_wire_type {
	KSMU_MSG_HELLO = 1,	/* agent -> daemon: struct ksmu_wire_hello */
	KSMU_MSG_WELCOME = 2,	/* daemon -> agent: struct ksmu_wire_welcome */
	KSMU_MSG_STORE_FD = 3,	/* daemon -> agent: struct ksmu_wire_store_fd + one fd */
	KSMU_MSG_LOOKUP = 4,	/* agent -> daemon: count, addrs, pages */
	KSMU_MSG_RESULT = 5,	/* daemon -> agent: count, struct ksmu_wire_ref[] */
	KSMU_MSG_HINT = 6,	/* daemon -> agent: count, struct ksmu_wire_hint[] */
	KSMU_MSG_RELEASE = 7,	/* agent -> daemon: count, struct ksmu_wire_release[] */
	KSMU_MSG_FORK = 8,	/* agent -> daemon: struct ksmu_wire_fork */
	KSMU_MSG_REPORT = 9,	/* agent -> daemon: struct ksmu_wire_report */
	KSMU_MSG_KNOB = 10,	/* daemon -> agent: struct ksmu_wire_knob */
	KSMU_MSG_CTL = 11,	/* ksmctl -> daemon: text request */
	KSMU_MSG_CTL_REPLY = 12, /* daemon -> ksmctl: text answer */
	KSMU_MSG_ERROR = 13,	/* either way: struct ksmu_wire_error */
	KSMU_MSG_TYPE_MAX = 13,
};

/* LOOKUP flags */
#define KSMU_LOOKUP_CREATE 0x1u /* no store page with this content: make one */
#define KSMU_LOOKUP_FLAGS 0x1u

struct ksmu_wire_hdr {
	uint32_t magic;
	uint16_t type;
	uint16_t flags; /* LOOKUP: KSMU_LOOKUP_*; others: 0 */
	uint32_t len;	/* whole packet, header included */
	uint32_t seq;	/* requests: sender's number; replies: the request's */
};

struct ksmu_wire_hello {
	uint32_t version; /* KSMU_WIRE_VERSION */
	uint32_t flags;	  /* 0 */
	uint32_t page_size;
	uint32_t reserved;
	char label[32]; /* KSMU_DOMAIN of the agent, "" if none; NUL-terminated */
};

struct ksmu_wire_welcome {
	uint32_t version;
	uint32_t max_pages; /* pages per LOOKUP the daemon accepts */
	uint32_t domain;    /* the client's security domain (an index) */
	uint32_t reserved;
	char domain_name[32]; /* NUL-terminated */
};

struct ksmu_wire_store_fd {
	uint32_t store; /* id, >= 1 */
	uint32_t reserved;
};

/* The body of LOOKUP: this, then count addresses, then count pages. */
struct ksmu_wire_count {
	uint32_t count;
	uint32_t reserved;
};

struct ksmu_wire_ref {
	uint32_t store; /* KSMU_WIRE_NO_STORE: no match */
	uint32_t idx;
};

struct ksmu_wire_hint {
	uint64_t addr;
	uint32_t store;
	uint32_t idx;
};

struct ksmu_wire_release {
	uint32_t store;
	uint32_t idx;
	uint32_t count; /* grants: messages naming (store, idx) the agent read */
	uint32_t reserved;
};

struct ksmu_wire_fork {
	uint32_t child_pid; /* 1 .. KSMU_WIRE_PID_LIMIT - 1 */
	uint32_t reserved;
};

/* An agent's own counters, for `ksmctl status` (shown, never trusted). */
struct ksmu_wire_report {
	uint64_t pages_shared;
	uint64_t pages_sharing;
	uint64_t pages_unshared;
	uint64_t pages_volatile;
	uint64_t full_scans;
	int64_t general_profit;
	uint64_t remote_pages; /* pages mapping a daemon store page */
	uint64_t merges;
	uint64_t cow_breaks;
	uint64_t pages_tracked;
	uint64_t scan_cpu_ns;
	uint64_t metadata_bytes;
	uint64_t vmas_added;
};

struct ksmu_wire_knob {
	char name[40]; /* NUL-terminated knob name (ksmu_knob_name()) */
	uint64_t value;
};

struct ksmu_wire_error {
	int32_t err;	  /* positive errno */
	uint16_t type;	  /* the type of the message refused */
	uint16_t reserved;
};

/*
 * ksmu_wire_check() - validate a received packet of @n bytes at @buf.
 * Checks the header (magic, known type, @len == @n, flags defined for the
 * type, reserved fields zero) and that the body's size is exactly what the
 * type requires (for counted messages: 1 <= count <= the type's maximum,
 * size == header + count entries [+ pages]), and that text is NUL-free and
 * within KSMU_WIRE_MAX_TEXT; addresses of LOOKUP and HINT are page-aligned.
 * Return: 0, or -EBADMSG (malformed), -EMSGSIZE (too large), -EPROTO
 * (unknown type or version-dependent field).  Never reads past @n.
 */
int ksmu_wire_check(const void *buf, size_t n);

/* Count of a counted message already checked (LOOKUP, RESULT, HINT, RELEASE). */
uint32_t ksmu_wire_count(const void *buf);

/* Size of a counted message of @count entries of @type (LOOKUP: with pages). */
size_t ksmu_wire_size(uint16_t type, uint32_t count);

/* Fill @h for a message of @type, @len bytes in all. */
void ksmu_wire_hdr_init(struct ksmu_wire_hdr *h, uint16_t type, uint32_t len, uint32_t seq);

/* Name of a message type, for logs. */
const char *ksmu_wire_type_name(uint16_t type);

#endif /* KSMU_WIRE_H */
