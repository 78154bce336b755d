/* SPDX-License-Identifier: MIT */
/*
 * wire.c - validation of daemon/agent/ksmctl messages (see wire.h).
 *
 * DESIGN
 *   One function decides whether a packet is well formed; every receiver
 *   calls it first and may then read the body at fixed offsets.  Sizes are
 *   computed in size_t from 32-bit counts bounded before any
 *   multiplication, so no arithmetic can overflow.  Unknown types,
 *   undefined flags and non-zero reserved fields are refused, so that a
 *   later version can give them meaning.
 *
 * INVARIANTS
 *   - ksmu_wire_check() reads at most @n bytes and never writes.
 *
 * LOCKING / THREADS
 *   None: pure functions.
 *
 * KERNEL REQUIREMENTS
 *   None.
 */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "wire.h"

static const struct {
	const char *name;
	size_t fixed;	/* body size of a fixed message, or of the count header */
	size_t entry;	/* bytes per entry of a counted message, 0 if fixed */
	uint32_t max;	/* entries at most */
	bool text;	/* body is text */
} types[KSMU_MSG_TYPE_MAX + 1] = {
	[KSMU_MSG_HELLO] = {"HELLO", sizeof(struct ksmu_wire_hello), 0, 0, false},
	[KSMU_MSG_WELCOME] = {"WELCOME", sizeof(struct ksmu_wire_welcome), 0, 0, false},
	[KSMU_MSG_STORE_FD] = {"STORE_FD", sizeof(struct ksmu_wire_store_fd), 0, 0, false},
	[KSMU_MSG_LOOKUP] = {"LOOKUP", sizeof(struct ksmu_wire_count), 8u + KSMU_WIRE_PAGE,
			     KSMU_WIRE_MAX_PAGES, false},
	[KSMU_MSG_RESULT] = {"RESULT", sizeof(struct ksmu_wire_count), sizeof(struct ksmu_wire_ref),
			     KSMU_WIRE_MAX_PAGES, false},
	[KSMU_MSG_HINT] = {"HINT", sizeof(struct ksmu_wire_count), sizeof(struct ksmu_wire_hint),
			   KSMU_WIRE_MAX_ENTRIES, false},
	[KSMU_MSG_RELEASE] = {"RELEASE", sizeof(struct ksmu_wire_count),
			      sizeof(struct ksmu_wire_release), KSMU_WIRE_MAX_ENTRIES, false},
	[KSMU_MSG_FORK] = {"FORK", sizeof(struct ksmu_wire_fork), 0, 0, false},
	[KSMU_MSG_REPORT] = {"REPORT", sizeof(struct ksmu_wire_report), 0, 0, false},
	[KSMU_MSG_KNOB] = {"KNOB", sizeof(struct ksmu_wire_knob), 0, 0, false},
	[KSMU_MSG_CTL] = {"CTL", 0, 0, 0, true},
	[KSMU_MSG_CTL_REPLY] = {"CTL_REPLY", 0, 0, 0, true},
	[KSMU_MSG_ERROR] = {"ERROR", sizeof(struct ksmu_wire_error), 0, 0, false},
};

#define HDR sizeof(struct ksmu_wire_hdr)

const char *ksmu_wire_type_name(uint16_t type)
{
	if (type == 0 || type > KSMU_MSG_TYPE_MAX)
		return "?";
	return types[type].name;
}

size_t ksmu_wire_size(uint16_t type, uint32_t count)
{
	if (type == 0 || type > KSMU_MSG_TYPE_MAX || !types[type].entry)
		return 0;
	return HDR + types[type].fixed + (size_t)count * types[type].entry;
}

uint32_t ksmu_wire_count(const void *buf)
{
	struct ksmu_wire_count c;

	memcpy(&c, (const char *)buf + HDR, sizeof(c));
	return c.count;
}

void ksmu_wire_hdr_init(struct ksmu_wire_hdr *h, uint16_t type, uint32_t len, uint32_t seq)
{
	h->magic = KSMU_WIRE_MAGIC;
	h->type = type;
	h->flags = 0;
	h->len = len;
	h->seq = seq;
}

/* Fixed-size bodies: reserved fields zero, strings terminated. */
static int check_fixed(uint16_t type, const char *b)
{
	switch (type) {
	case KSMU_MSG_HELLO: {
		struct ksmu_wire_hello m;

		memcpy(&m, b, sizeof(m));
		if (m.version != KSMU_WIRE_VERSION)
			return -EPROTO;
		if (m.flags || m.reserved || m.page_size != KSMU_WIRE_PAGE ||
		    !memchr(m.label, 0, sizeof(m.label)))
			return -EBADMSG;
		return 0;
	}
	case KSMU_MSG_WELCOME: {
		struct ksmu_wire_welcome m;

		memcpy(&m, b, sizeof(m));
		if (m.version != KSMU_WIRE_VERSION)
			return -EPROTO;
		if (m.reserved || !m.max_pages || m.max_pages > KSMU_WIRE_MAX_PAGES ||
		    !memchr(m.domain_name, 0, sizeof(m.domain_name)))
			return -EBADMSG;
		return 0;
	}
	case KSMU_MSG_STORE_FD: {
		struct ksmu_wire_store_fd m;

		memcpy(&m, b, sizeof(m));
		return m.store == KSMU_WIRE_NO_STORE || m.reserved ? -EBADMSG : 0;
	}
	case KSMU_MSG_FORK: {
		struct ksmu_wire_fork m;

		memcpy(&m, b, sizeof(m));
		if (m.child_pid == 0 || m.child_pid >= KSMU_WIRE_PID_LIMIT || m.reserved)
			return -EBADMSG;
		return 0;
	}
	case KSMU_MSG_KNOB: {
		struct ksmu_wire_knob m;

		memcpy(&m, b, sizeof(m));
		return !m.name[0] || !memchr(m.name, 0, sizeof(m.name)) ? -EBADMSG : 0;
	}
	case KSMU_MSG_ERROR: {
		struct ksmu_wire_error m;

		memcpy(&m, b, sizeof(m));
		return m.err <= 0 || m.err > 4095 || m.reserved ? -EBADMSG : 0;
	}
	default: /* REPORT: any values (shown, never trusted) */
		return 0;
	}
}

/* Entries of counted bodies: reserved fields zero, addresses aligned. */
static int check_entries(uint16_t type, const char *b, uint32_t count)
{
	uint32_t i;

	for (i = 0; i < count; i++) {
		switch (type) {
		case KSMU_MSG_LOOKUP: {
			uint64_t a;

			memcpy(&a, b + (size_t)i * 8u, sizeof(a));
			if (a & (KSMU_WIRE_PAGE - 1))
				return -EBADMSG;
			break;
		}
		case KSMU_MSG_HINT: {
			struct ksmu_wire_hint h;

			memcpy(&h, b + (size_t)i * sizeof(h), sizeof(h));
			if ((h.addr & (KSMU_WIRE_PAGE - 1)) || h.store == KSMU_WIRE_NO_STORE)
				return -EBADMSG;
			break;
		}
		case KSMU_MSG_RELEASE: {
			struct ksmu_wire_release r;

			memcpy(&r, b + (size_t)i * sizeof(r), sizeof(r));
			if (r.store == KSMU_WIRE_NO_STORE || !r.count || r.reserved)
				return -EBADMSG;
			break;
		}
		default: /* RESULT: a store of 0 is "no match" */
			break;
		}
	}
	return 0;
}

int ksmu_wire_check(const void *buf, size_t n)
{
	struct ksmu_wire_hdr h;
	const char *body;
	size_t blen;
	uint16_t allowed = 0;

	if (!buf || n < HDR)
		return -EBADMSG;
	if (n > KSMU_WIRE_MAX && n > HDR + KSMU_WIRE_MAX_TEXT)
		return -EMSGSIZE;
	memcpy(&h, buf, HDR);
	if (h.magic != KSMU_WIRE_MAGIC)
		return -EBADMSG;
	if (h.type == 0 || h.type > KSMU_MSG_TYPE_MAX)
		return -EPROTO;
	if (h.len != n)
		return -EBADMSG;
	if (h.type == KSMU_MSG_LOOKUP)
		allowed = KSMU_LOOKUP_FLAGS;
	if (h.flags & ~allowed)
		return -EBADMSG;
	body = (const char *)buf + HDR;
	blen = n - HDR;

	if (types[h.type].text) {
		if (blen == 0 || blen > KSMU_WIRE_MAX_TEXT)
			return blen ? -EMSGSIZE : -EBADMSG;
		return memchr(body, 0, blen) ? -EBADMSG : 0;
	}
	if (n > KSMU_WIRE_MAX)
		return -EMSGSIZE;
	if (!types[h.type].entry) {
		if (blen != types[h.type].fixed)
			return -EBADMSG;
		return check_fixed(h.type, body);
	} else {
		struct ksmu_wire_count c;

		if (blen < sizeof(c))
			return -EBADMSG;
		memcpy(&c, body, sizeof(c));
		if (c.reserved || c.count == 0)
			return -EBADMSG;
		if (c.count > types[h.type].max)
			return -EMSGSIZE;
		if (n != ksmu_wire_size(h.type, c.count))
			return -EBADMSG;
		return check_entries(h.type, body + sizeof(c), c.count);
	}
}
