/* SPDX-License-Identifier: MIT */
/* Description: libFuzzer target for ksmu_wire_check(), the one function that
 * parses untrusted bytes from the daemon socket.  Every input is checked;
 * when it is accepted, the message is read the way a receiver reads it
 * (header, count, every entry, every page byte, the text as a C string) and
 * the promises of wire.h are asserted: len == packet size, a known type,
 * flags only where defined, 1 <= count <= the type's maximum, size ==
 * ksmu_wire_size(), aligned addresses, non-zero ids, terminated strings,
 * reserved fields zero.  ASan catches a read past the input (libFuzzer
 * passes a heap copy of exactly the input's size), UBSan misaligned or
 * overflowing arithmetic.  Build and run: tests/fuzz/README.md. */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wire.h"

#define HDR sizeof(struct ksmu_wire_hdr)
#define CNT sizeof(struct ksmu_wire_count)

/* Always on (RelWithDebInfo defines NDEBUG). */
#define REQUIRE(expr)                                                                   \
	do {                                                                            \
		if (!(expr)) {                                                          \
			fprintf(stderr, "fuzz-wire: %s:%d: broken: %s\n", __FILE__,    \
				__LINE__, #expr);                                       \
			abort();                                                        \
		}                                                                       \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Keeps the reads of the body from being optimised away. */
static volatile uint64_t sink;

static uint64_t sum(const uint8_t *p, size_t n)
{
	uint64_t s = 0;
	size_t i;

	for (i = 0; i < n; i++)
		s = s * 31 + p[i];
	return s;
}

static void read_counted(const struct ksmu_wire_hdr *h, const uint8_t *data, size_t size)
{
	const uint8_t *body = data + HDR;
	size_t blen = size - HDR;
	struct ksmu_wire_count c;
	uint32_t count, i, max;
	size_t entry;

	memcpy(&c, body, sizeof(c));
	count = ksmu_wire_count(data);
	REQUIRE(count == c.count);
	REQUIRE(c.reserved == 0);
	max = h->type == KSMU_MSG_LOOKUP || h->type == KSMU_MSG_RESULT ? KSMU_WIRE_MAX_PAGES
								       : KSMU_WIRE_MAX_ENTRIES;
	REQUIRE(count >= 1 && count <= max);
	REQUIRE(size == ksmu_wire_size(h->type, count));
	REQUIRE(size <= KSMU_WIRE_MAX);

	switch (h->type) {
	case KSMU_MSG_LOOKUP: {
		const uint8_t *addrs = body + CNT, *pages = addrs + (size_t)count * 8u;

		REQUIRE(blen == CNT + (size_t)count * (8u + KSMU_WIRE_PAGE));
		for (i = 0; i < count; i++) {
			uint64_t a;

			memcpy(&a, addrs + (size_t)i * 8u, sizeof(a));
			REQUIRE((a & (KSMU_WIRE_PAGE - 1)) == 0);
			/* The daemon hashes and compares every byte of each page. */
			sink += a ^ sum(pages + (size_t)i * KSMU_WIRE_PAGE, KSMU_WIRE_PAGE);
		}
		REQUIRE(pages + (size_t)count * KSMU_WIRE_PAGE == body + blen);
		return;
	}
	case KSMU_MSG_RESULT:
		entry = sizeof(struct ksmu_wire_ref);
		break;
	case KSMU_MSG_HINT:
		entry = sizeof(struct ksmu_wire_hint);
		break;
	case KSMU_MSG_RELEASE:
		entry = sizeof(struct ksmu_wire_release);
		break;
	default:
		REQUIRE(!"a counted type");
		return;
	}
	REQUIRE(blen == CNT + (size_t)count * entry);
	for (i = 0; i < count; i++) {
		const uint8_t *e = body + CNT + (size_t)i * entry;

		switch (h->type) {
		case KSMU_MSG_RESULT: {
			struct ksmu_wire_ref r;

			memcpy(&r, e, sizeof(r));
			sink += r.store + r.idx; /* store 0: no match, any idx */
			break;
		}
		case KSMU_MSG_HINT: {
			struct ksmu_wire_hint m;

			memcpy(&m, e, sizeof(m));
			REQUIRE((m.addr & (KSMU_WIRE_PAGE - 1)) == 0);
			REQUIRE(m.store != KSMU_WIRE_NO_STORE);
			sink += m.idx;
			break;
		}
		default: {
			struct ksmu_wire_release r;

			memcpy(&r, e, sizeof(r));
			REQUIRE(r.store != KSMU_WIRE_NO_STORE);
			REQUIRE(r.count != 0);
			REQUIRE(r.reserved == 0);
			sink += r.idx;
			break;
		}
		}
	}
}

static void read_fixed(const struct ksmu_wire_hdr *h, const uint8_t *body, size_t blen)
{
	switch (h->type) {
	case KSMU_MSG_HELLO: {
		struct ksmu_wire_hello m;

		REQUIRE(blen == sizeof(m));
		memcpy(&m, body, sizeof(m));
		REQUIRE(m.version == KSMU_WIRE_VERSION);
		REQUIRE(m.flags == 0 && m.reserved == 0);
		REQUIRE(m.page_size == KSMU_WIRE_PAGE);
		REQUIRE(strnlen(m.label, sizeof(m.label)) < sizeof(m.label));
		sink += strlen(m.label);
		break;
	}
	case KSMU_MSG_WELCOME: {
		struct ksmu_wire_welcome m;

		REQUIRE(blen == sizeof(m));
		memcpy(&m, body, sizeof(m));
		REQUIRE(m.version == KSMU_WIRE_VERSION);
		REQUIRE(m.reserved == 0);
		REQUIRE(m.max_pages >= 1 && m.max_pages <= KSMU_WIRE_MAX_PAGES);
		REQUIRE(strnlen(m.domain_name, sizeof(m.domain_name)) < sizeof(m.domain_name));
		sink += strlen(m.domain_name) + m.domain;
		break;
	}
	case KSMU_MSG_STORE_FD: {
		struct ksmu_wire_store_fd m;

		REQUIRE(blen == sizeof(m));
		memcpy(&m, body, sizeof(m));
		REQUIRE(m.store != KSMU_WIRE_NO_STORE && m.reserved == 0);
		break;
	}
	case KSMU_MSG_FORK: {
		struct ksmu_wire_fork m;

		REQUIRE(blen == sizeof(m));
		memcpy(&m, body, sizeof(m));
		/* Fits a pid_t, and is not 0 (kill(0, ...) would mean the group). */
		REQUIRE(m.child_pid >= 1 && m.child_pid < KSMU_WIRE_PID_LIMIT);
		REQUIRE(m.reserved == 0);
		break;
	}
	case KSMU_MSG_REPORT: {
		struct ksmu_wire_report m;

		REQUIRE(blen == sizeof(m));
		memcpy(&m, body, sizeof(m));
		sink += m.pages_shared + m.pages_sharing + m.pages_unshared + m.pages_volatile +
			m.full_scans + (uint64_t)m.general_profit + m.remote_pages + m.merges +
			m.cow_breaks + m.pages_tracked + m.scan_cpu_ns + m.metadata_bytes +
			m.vmas_added;
		break;
	}
	case KSMU_MSG_KNOB: {
		struct ksmu_wire_knob m;
		size_t len;

		REQUIRE(blen == sizeof(m));
		memcpy(&m, body, sizeof(m));
		len = strnlen(m.name, sizeof(m.name));
		REQUIRE(len >= 1 && len < sizeof(m.name));
		sink += strlen(m.name) + m.value;
		break;
	}
	case KSMU_MSG_ERROR: {
		struct ksmu_wire_error m;

		REQUIRE(blen == sizeof(m));
		memcpy(&m, body, sizeof(m));
		REQUIRE(m.err >= 1 && m.err <= 4095);
		REQUIRE(m.reserved == 0);
		/* @type may name any type, even one the receiver does not know. */
		sink += (uint64_t)strlen(ksmu_wire_type_name(m.type));
		break;
	}
	default:
		REQUIRE(!"a fixed-size type");
	}
}

static void read_text(const uint8_t *body, size_t blen)
{
	char *s;

	REQUIRE(blen >= 1 && blen <= KSMU_WIRE_MAX_TEXT);
	REQUIRE(memchr(body, 0, blen) == NULL);
	/* A receiver makes it a C string. */
	s = malloc(blen + 1);
	REQUIRE(s != NULL);
	memcpy(s, body, blen);
	s[blen] = 0;
	REQUIRE(strlen(s) == blen);
	sink += (uint64_t)s[0];
	free(s);
}

/* Check one packet; read it as a receiver would if it is accepted. */
static void one(const uint8_t *data, size_t size)
{
	struct ksmu_wire_hdr h;
	const uint8_t *body;
	size_t blen;
	int ret;

	ret = ksmu_wire_check(data, size);
	REQUIRE(ret == 0 || ret == -EBADMSG || ret == -EMSGSIZE || ret == -EPROTO);
	/* Pure: the same bytes give the same answer. */
	REQUIRE(ksmu_wire_check(data, size) == ret);
	if (ret)
		return;

	REQUIRE(size >= HDR);
	memcpy(&h, data, sizeof(h));
	REQUIRE(h.magic == KSMU_WIRE_MAGIC);
	REQUIRE(h.len == size);
	REQUIRE(h.type >= 1 && h.type <= KSMU_MSG_TYPE_MAX);
	REQUIRE(strcmp(ksmu_wire_type_name(h.type), "?") != 0);
	REQUIRE(h.flags == 0 || (h.type == KSMU_MSG_LOOKUP && !(h.flags & ~KSMU_LOOKUP_FLAGS)));
	body = data + HDR;
	blen = size - HDR;

	switch (h.type) {
	case KSMU_MSG_LOOKUP:
	case KSMU_MSG_RESULT:
	case KSMU_MSG_HINT:
	case KSMU_MSG_RELEASE:
		REQUIRE(blen >= CNT);
		read_counted(&h, data, size);
		break;
	case KSMU_MSG_CTL:
	case KSMU_MSG_CTL_REPLY:
		REQUIRE(ksmu_wire_size(h.type, 1) == 0);
		read_text(body, blen);
		break;
	default:
		REQUIRE(ksmu_wire_size(h.type, 1) == 0);
		REQUIRE(size <= KSMU_WIRE_MAX);
		read_fixed(&h, body, blen);
		break;
	}

	/* len must equal the packet size: the same bytes cut short are refused. */
	REQUIRE(ksmu_wire_check(data, size - 1) != 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ksmu_wire_hdr h;
	uint8_t *copy;

	one(data, size);

	/*
	 * The same bytes with len set to the input's size: a mutation that
	 * grows or shrinks a body rarely fixes len too, and without this most
	 * inputs would stop at the len check.  A heap copy of exactly @size
	 * bytes, so ASan still sees any read past the packet.
	 */
	if (size < HDR)
		return 0;
	memcpy(&h, data, sizeof(h));
	if (h.len == size || size > UINT32_MAX)
		return 0;
	copy = malloc(size);
	REQUIRE(copy != NULL);
	memcpy(copy, data, size);
	h.len = (uint32_t)size;
	memcpy(copy, &h, sizeof(h));
	one(copy, size);
	free(copy);
	return 0;
}
