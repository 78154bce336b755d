/* SPDX-License-Identifier: MIT */
/* Description: the daemon wire-protocol validator ksmu_wire_check(): a
 * well-formed message of every type is accepted (LOOKUP with 1 and 32 pages,
 * with and without CREATE; text of 1 and KSMU_WIRE_MAX_TEXT bytes), and each
 * way a packet can be malformed is refused with its code: short packets, bad
 * magic, unknown types (-EPROTO), len != packet size, undefined flags, counts
 * of 0 or above the type's maximum (-EMSGSIZE), bodies one byte or one entry
 * off, unaligned addresses, non-zero reserved fields, wrong versions
 * (-EPROTO) and page size, unterminated or empty strings, ids and pids of 0,
 * errors out of range, text with a NUL, empty or too long, a NULL buffer.
 * Every message is checked where it ends right at a PROT_NONE page, so a read
 * past the packet crashes the test.  Also ksmu_wire_size(),
 * ksmu_wire_count(), ksmu_wire_type_name(), the struct layouts, and that the
 * fuzz seeds in tests/fuzz/corpus/ are accepted.
 *
 * `test-wire --write-corpus DIR` writes the fuzz seeds (one file per type). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "test.h"
#include "wire.h"

#define HDR sizeof(struct ksmu_wire_hdr)
#define CNT sizeof(struct ksmu_wire_count)
#define PG KSMU_WIRE_PAGE
#define LOOKUP_ENTRY (8u + PG)

/* Big enough for a LOOKUP of KSMU_WIRE_MAX_PAGES + 2 pages. */
#define MSG_CAP (KSMU_WIRE_MAX + 2 * LOOKUP_ENTRY)

/* Where messages are built. */
static _Alignas(8) unsigned char msg[MSG_CAP];
/* Where they are checked: copied so that they end at guard_end, a PROT_NONE page. */
static unsigned char *guard_end;

static const char *const names[] = {
	[KSMU_MSG_HELLO] = "HELLO",	    [KSMU_MSG_WELCOME] = "WELCOME",
	[KSMU_MSG_STORE_FD] = "STORE_FD",   [KSMU_MSG_LOOKUP] = "LOOKUP",
	[KSMU_MSG_RESULT] = "RESULT",	    [KSMU_MSG_HINT] = "HINT",
	[KSMU_MSG_RELEASE] = "RELEASE",	    [KSMU_MSG_FORK] = "FORK",
	[KSMU_MSG_REPORT] = "REPORT",	    [KSMU_MSG_KNOB] = "KNOB",
	[KSMU_MSG_CTL] = "CTL",		    [KSMU_MSG_CTL_REPLY] = "CTL_REPLY",
	[KSMU_MSG_ERROR] = "ERROR",
};

static int check_at_guard(size_t n)
{
	unsigned char *p = guard_end - n;

	memcpy(p, msg, n);
	return ksmu_wire_check(p, n);
}

/* The first @n bytes of msg, as a packet of @n bytes, must give @want. */
#define EXPECT(what, n, want) CHECK_RET(what, check_at_guard(n), want)

static void put16(size_t off, uint16_t v)
{
	memcpy(msg + off, &v, sizeof(v));
}

static void put32(size_t off, uint32_t v)
{
	memcpy(msg + off, &v, sizeof(v));
}

static void put64(size_t off, uint64_t v)
{
	memcpy(msg + off, &v, sizeof(v));
}

/* Header with @flags, len = @n; returns @n. */
static size_t put_hdr(uint16_t type, uint16_t flags, size_t n)
{
	struct ksmu_wire_hdr h;

	ksmu_wire_hdr_init(&h, type, (uint32_t)n, 0x1234);
	h.flags = flags;
	memcpy(msg, &h, sizeof(h));
	return n;
}

/* Set len to @n (after growing or shrinking a body); returns @n. */
static size_t set_len(size_t n)
{
	put32(offsetof(struct ksmu_wire_hdr, len), (uint32_t)n);
	return n;
}

static size_t mk_fixed(uint16_t type, const void *body, size_t len)
{
	memset(msg, 0, HDR + len + 1);
	memcpy(msg + HDR, body, len);
	return put_hdr(type, 0, HDR + len);
}

static size_t mk_hello(void)
{
	struct ksmu_wire_hello m;

	memset(&m, 0, sizeof(m));
	m.version = KSMU_WIRE_VERSION;
	m.page_size = KSMU_WIRE_PAGE;
	strcpy(m.label, "batch");
	return mk_fixed(KSMU_MSG_HELLO, &m, sizeof(m));
}

static size_t mk_welcome(uint32_t max_pages)
{
	struct ksmu_wire_welcome m;

	memset(&m, 0, sizeof(m));
	m.version = KSMU_WIRE_VERSION;
	m.max_pages = max_pages;
	m.domain = 3;
	strcpy(m.domain_name, "uid:1000");
	return mk_fixed(KSMU_MSG_WELCOME, &m, sizeof(m));
}

static size_t mk_store_fd(void)
{
	struct ksmu_wire_store_fd m = {.store = 1};

	return mk_fixed(KSMU_MSG_STORE_FD, &m, sizeof(m));
}

static size_t mk_fork(uint32_t pid)
{
	struct ksmu_wire_fork m = {.child_pid = pid};

	return mk_fixed(KSMU_MSG_FORK, &m, sizeof(m));
}

static size_t mk_report(void)
{
	struct ksmu_wire_report m;

	/* Any values: shown, never trusted. */
	memset(&m, 0xff, sizeof(m));
	m.general_profit = -123456789;
	m.full_scans = 0;
	return mk_fixed(KSMU_MSG_REPORT, &m, sizeof(m));
}

static size_t mk_knob(const char *name)
{
	struct ksmu_wire_knob m;

	memset(&m, 0, sizeof(m));
	memcpy(m.name, name, strnlen(name, sizeof(m.name) - 1));
	m.value = UINT64_MAX;
	return mk_fixed(KSMU_MSG_KNOB, &m, sizeof(m));
}

static size_t mk_error(int32_t err)
{
	struct ksmu_wire_error m = {.err = err, .type = KSMU_MSG_LOOKUP};

	return mk_fixed(KSMU_MSG_ERROR, &m, sizeof(m));
}

/* Text of @len bytes: "KEY VALUE\n" lines, never a NUL. */
static size_t mk_text(uint16_t type, size_t len)
{
	static const char line[] = "global.pages_shared 12345\n";
	size_t i;

	for (i = 0; i < len; i++)
		msg[HDR + i] = (unsigned char)line[i % (sizeof(line) - 1)];
	return put_hdr(type, 0, HDR + len);
}

static size_t entry_size(uint16_t type)
{
	switch (type) {
	case KSMU_MSG_LOOKUP:
		return LOOKUP_ENTRY;
	case KSMU_MSG_RESULT:
		return sizeof(struct ksmu_wire_ref);
	case KSMU_MSG_HINT:
		return sizeof(struct ksmu_wire_hint);
	default:
		return sizeof(struct ksmu_wire_release);
	}
}

/* Offset of LOOKUP address @i / page @i in a LOOKUP of @count pages. */
static size_t lookup_addr(uint32_t i)
{
	return HDR + CNT + (size_t)i * 8u;
}

static size_t lookup_page(uint32_t count, uint32_t i)
{
	return HDR + CNT + (size_t)count * 8u + (size_t)i * PG;
}

/* Offset of entry @i of a RESULT, HINT or RELEASE. */
static size_t entry(uint16_t type, uint32_t i)
{
	return HDR + CNT + (size_t)i * entry_size(type);
}

/* A counted message of @count well-formed entries; size computed here, not
 * by ksmu_wire_size(), so that a wrong ksmu_wire_size() shows. */
static size_t mk_counted(uint16_t type, uint32_t count, uint16_t flags)
{
	size_t n = HDR + CNT + (size_t)count * entry_size(type);
	struct ksmu_wire_count c = {.count = count};
	uint32_t i;

	memset(msg, 0, n + 1);
	memcpy(msg + HDR, &c, sizeof(c));
	for (i = 0; i < count; i++) {
		switch (type) {
		case KSMU_MSG_LOOKUP:
			put64(lookup_addr(i), 0x7f1234560000ull + (uint64_t)i * 2 * PG);
			memset(msg + lookup_page(count, i), (int)(i * 37 + 1), PG);
			break;
		case KSMU_MSG_RESULT: {
			struct ksmu_wire_ref r = {.store = i % 3, .idx = i};

			memcpy(msg + entry(type, i), &r, sizeof(r));
			break;
		}
		case KSMU_MSG_HINT: {
			struct ksmu_wire_hint h = {.addr = 0x7f0000000000ull + (uint64_t)i * PG,
						   .store = 1 + i % 5, .idx = i};

			memcpy(msg + entry(type, i), &h, sizeof(h));
			break;
		}
		default: {
			struct ksmu_wire_release r = {.store = 1 + i % 5, .idx = i, .count = 1 + i};

			memcpy(msg + entry(type, i), &r, sizeof(r));
			break;
		}
		}
	}
	return put_hdr(type, flags, n);
}

static int counted(uint16_t type)
{
	return type == KSMU_MSG_LOOKUP || type == KSMU_MSG_RESULT || type == KSMU_MSG_HINT ||
	       type == KSMU_MSG_RELEASE;
}

static uint32_t max_entries(uint16_t type)
{
	return type == KSMU_MSG_LOOKUP || type == KSMU_MSG_RESULT ? KSMU_WIRE_MAX_PAGES
								  : KSMU_WIRE_MAX_ENTRIES;
}

/* The canonical well-formed message of @type (counted ones: 2 entries). */
static size_t mk_good(uint16_t type)
{
	switch (type) {
	case KSMU_MSG_HELLO:
		return mk_hello();
	case KSMU_MSG_WELCOME:
		return mk_welcome(KSMU_WIRE_MAX_PAGES);
	case KSMU_MSG_STORE_FD:
		return mk_store_fd();
	case KSMU_MSG_FORK:
		return mk_fork(4242);
	case KSMU_MSG_REPORT:
		return mk_report();
	case KSMU_MSG_KNOB:
		return mk_knob("pages_to_scan");
	case KSMU_MSG_CTL:
		return mk_text(type, 6);
	case KSMU_MSG_CTL_REPLY:
		return mk_text(type, 200);
	case KSMU_MSG_ERROR:
		return mk_error(EBADMSG);
	default:
		return mk_counted(type, 2, type == KSMU_MSG_LOOKUP ? KSMU_LOOKUP_CREATE : 0);
	}
}

static void test_layout(void)
{
	CHECK("hdr", sizeof(struct ksmu_wire_hdr) == 16);
	CHECK("hello", sizeof(struct ksmu_wire_hello) == 48);
	CHECK("welcome", sizeof(struct ksmu_wire_welcome) == 48);
	CHECK("store_fd", sizeof(struct ksmu_wire_store_fd) == 8);
	CHECK("count", sizeof(struct ksmu_wire_count) == 8);
	CHECK("ref", sizeof(struct ksmu_wire_ref) == 8);
	CHECK("hint", sizeof(struct ksmu_wire_hint) == 16);
	CHECK("release", sizeof(struct ksmu_wire_release) == 16);
	CHECK("fork", sizeof(struct ksmu_wire_fork) == 8);
	CHECK("report", sizeof(struct ksmu_wire_report) == 13 * 8);
	CHECK("knob", sizeof(struct ksmu_wire_knob) == 48);
	CHECK("error", sizeof(struct ksmu_wire_error) == 8);
	CHECK("KSMU_WIRE_MAX", KSMU_WIRE_MAX == 131352);
}

static void test_helpers(void)
{
	struct ksmu_wire_hdr h;
	uint16_t t;
	size_t n;

	memset(&h, 0xa5, sizeof(h));
	ksmu_wire_hdr_init(&h, KSMU_MSG_FORK, 24, 99);
	CHECK("hdr_init", h.magic == KSMU_WIRE_MAGIC && h.type == KSMU_MSG_FORK &&
				  h.flags == 0 && h.len == 24 && h.seq == 99);

	for (t = 1; t <= KSMU_MSG_TYPE_MAX; t++)
		CHECK(names[t], strcmp(ksmu_wire_type_name(t), names[t]) == 0);
	CHECK("name 0", strcmp(ksmu_wire_type_name(0), "?") == 0);
	CHECK("name 14", strcmp(ksmu_wire_type_name(14), "?") == 0);
	CHECK("name 65535", strcmp(ksmu_wire_type_name(65535), "?") == 0);

	CHECK("size LOOKUP 1", ksmu_wire_size(KSMU_MSG_LOOKUP, 1) == 16 + 8 + 8 + 4096);
	CHECK("size LOOKUP max", ksmu_wire_size(KSMU_MSG_LOOKUP, KSMU_WIRE_MAX_PAGES) == KSMU_WIRE_MAX);
	CHECK("size RESULT 3", ksmu_wire_size(KSMU_MSG_RESULT, 3) == 16 + 8 + 3 * 8);
	CHECK("size HINT 5", ksmu_wire_size(KSMU_MSG_HINT, 5) == 16 + 8 + 5 * 16);
	CHECK("size RELEASE max",
	      ksmu_wire_size(KSMU_MSG_RELEASE, KSMU_WIRE_MAX_ENTRIES) == 16 + 8 + 1024 * 16);
	CHECK("size count 0", ksmu_wire_size(KSMU_MSG_HINT, 0) == 16 + 8);
	for (t = 1; t <= KSMU_MSG_TYPE_MAX; t++)
		if (!counted(t))
			CHECK(names[t], ksmu_wire_size(t, 1) == 0);
	CHECK("size type 0", ksmu_wire_size(0, 1) == 0);
	CHECK("size type 14", ksmu_wire_size(14, 1) == 0);
	CHECK("size type 65535", ksmu_wire_size(65535, 1) == 0);

	n = mk_counted(KSMU_MSG_LOOKUP, 7, 0);
	CHECK("count LOOKUP 7", ksmu_wire_count(msg) == 7);
	CHECK("LOOKUP 7 size", n == ksmu_wire_size(KSMU_MSG_LOOKUP, 7));
	mk_counted(KSMU_MSG_RELEASE, KSMU_WIRE_MAX_ENTRIES, 0);
	CHECK("count RELEASE max", ksmu_wire_count(msg) == KSMU_WIRE_MAX_ENTRIES);
}

static void test_accept(void)
{
	uint32_t counts[] = {1, 2, KSMU_WIRE_MAX_PAGES};
	uint16_t t;
	size_t i, n;

	for (t = 1; t <= KSMU_MSG_TYPE_MAX; t++) {
		n = mk_good(t);
		EXPECT(names[t], n, 0);
		/* The same bytes one short, or one more: len != packet size. */
		EXPECT(names[t], n - 1, -EBADMSG);
		msg[n] = 'x';
		EXPECT(names[t], n + 1, -EBADMSG);
	}

	for (i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
		EXPECT("LOOKUP", mk_counted(KSMU_MSG_LOOKUP, counts[i], 0), 0);
		EXPECT("LOOKUP CREATE", mk_counted(KSMU_MSG_LOOKUP, counts[i], KSMU_LOOKUP_CREATE), 0);
		EXPECT("RESULT", mk_counted(KSMU_MSG_RESULT, counts[i], 0), 0);
		EXPECT("HINT", mk_counted(KSMU_MSG_HINT, counts[i], 0), 0);
		EXPECT("RELEASE", mk_counted(KSMU_MSG_RELEASE, counts[i], 0), 0);
	}
	n = mk_counted(KSMU_MSG_LOOKUP, KSMU_WIRE_MAX_PAGES, KSMU_LOOKUP_CREATE);
	CHECK("LOOKUP 32 is KSMU_WIRE_MAX", n == KSMU_WIRE_MAX);
	/* Address 0 is aligned; a RESULT entry with store 0 is "no match". */
	n = mk_counted(KSMU_MSG_LOOKUP, 1, 0);
	put64(lookup_addr(0), 0);
	EXPECT("LOOKUP addr 0", n, 0);
	n = mk_counted(KSMU_MSG_RESULT, 1, 0);
	CHECK("RESULT store 0", msg[entry(KSMU_MSG_RESULT, 0)] == 0);
	EXPECT("RESULT store 0", n, 0);
	EXPECT("HINT max", mk_counted(KSMU_MSG_HINT, KSMU_WIRE_MAX_ENTRIES, 0), 0);
	EXPECT("RELEASE max", mk_counted(KSMU_MSG_RELEASE, KSMU_WIRE_MAX_ENTRIES, 0), 0);

	EXPECT("WELCOME max_pages 1", mk_welcome(1), 0);
	n = mk_hello();
	memset(msg + HDR + offsetof(struct ksmu_wire_hello, label), 0, 32);
	EXPECT("HELLO empty label", n, 0);
	n = mk_hello();
	memset(msg + HDR + offsetof(struct ksmu_wire_hello, label), 'a', 31);
	EXPECT("HELLO label 31", n, 0);
	n = mk_welcome(1);
	memset(msg + HDR + offsetof(struct ksmu_wire_welcome, domain_name), 'a', 31);
	EXPECT("WELCOME domain_name 31", n, 0);
	EXPECT("KNOB name 39", mk_knob("abcdefghijklmnopqrstuvwxyzabcdefghijklm"), 0);
	EXPECT("FORK pid 1", mk_fork(1), 0);
	EXPECT("FORK pid 4194303", mk_fork((1u << 22) - 1), 0);
	EXPECT("ERROR 1", mk_error(1), 0);
	EXPECT("ERROR 4095", mk_error(4095), 0);
	EXPECT("CTL 1", mk_text(KSMU_MSG_CTL, 1), 0);
	EXPECT("CTL max", mk_text(KSMU_MSG_CTL, KSMU_WIRE_MAX_TEXT), 0);
	EXPECT("CTL_REPLY max", mk_text(KSMU_MSG_CTL_REPLY, KSMU_WIRE_MAX_TEXT), 0);
	n = mk_text(KSMU_MSG_CTL, 3);
	msg[HDR] = 0xff; /* bytes, not necessarily ASCII */
	EXPECT("CTL 0xff", n, 0);
}

static void test_header(void)
{
	uint16_t t;
	size_t n;

	EXPECT("n 0", 0, -EBADMSG);
	EXPECT("n 1", 1, -EBADMSG);
	mk_good(KSMU_MSG_HELLO);
	EXPECT("n HDR-1", HDR - 1, -EBADMSG);
	CHECK_RET("NULL 0", ksmu_wire_check(NULL, 0), -EBADMSG);
	CHECK_RET("NULL HDR", ksmu_wire_check(NULL, HDR), -EBADMSG);
	CHECK_RET("NULL 64", ksmu_wire_check(NULL, 64), -EBADMSG);

	for (t = 1; t <= KSMU_MSG_TYPE_MAX; t++) {
		/* Header alone: every type has a body. */
		put_hdr(t, 0, HDR);
		EXPECT(names[t], HDR, -EBADMSG);

		n = mk_good(t);
		put32(offsetof(struct ksmu_wire_hdr, magic), 0x4b534d57u); /* byte-swapped */
		EXPECT(names[t], n, -EBADMSG);
		n = mk_good(t);
		msg[3] ^= 0x01;
		EXPECT(names[t], n, -EBADMSG);

		n = mk_good(t);
		set_len(n + 1);
		EXPECT(names[t], n, -EBADMSG);
		set_len(n - 1);
		EXPECT(names[t], n, -EBADMSG);
		set_len(0);
		EXPECT(names[t], n, -EBADMSG);
		put32(offsetof(struct ksmu_wire_hdr, len), UINT32_MAX);
		EXPECT(names[t], n, -EBADMSG);
		set_len(n + 0x10000); /* equal in the low 16 bits */
		EXPECT(names[t], n, -EBADMSG);

		if (t == KSMU_MSG_LOOKUP)
			continue;
		n = mk_good(t);
		put16(offsetof(struct ksmu_wire_hdr, flags), 1);
		EXPECT(names[t], n, -EBADMSG);
		put16(offsetof(struct ksmu_wire_hdr, flags), 0x8000);
		EXPECT(names[t], n, -EBADMSG);
	}
	n = mk_good(KSMU_MSG_LOOKUP);
	put16(offsetof(struct ksmu_wire_hdr, flags), 0x2);
	EXPECT("LOOKUP flag 2", n, -EBADMSG);
	put16(offsetof(struct ksmu_wire_hdr, flags), 0x8001);
	EXPECT("LOOKUP flag 0x8001", n, -EBADMSG);
	put16(offsetof(struct ksmu_wire_hdr, flags), 0xffff);
	EXPECT("LOOKUP flag 0xffff", n, -EBADMSG);

	/* Unknown types, with bodies of the sizes known types have. */
	n = mk_good(KSMU_MSG_HELLO);
	put16(offsetof(struct ksmu_wire_hdr, type), 0);
	EXPECT("type 0", n, -EPROTO);
	put16(offsetof(struct ksmu_wire_hdr, type), KSMU_MSG_TYPE_MAX + 1);
	EXPECT("type 14", n, -EPROTO);
	put16(offsetof(struct ksmu_wire_hdr, type), 65535);
	EXPECT("type 65535", n, -EPROTO);
	n = mk_counted(KSMU_MSG_RESULT, 1, 0);
	put16(offsetof(struct ksmu_wire_hdr, type), 0);
	EXPECT("type 0 counted", n, -EPROTO);
	put16(offsetof(struct ksmu_wire_hdr, type), 14);
	EXPECT("type 14 counted", n, -EPROTO);
	n = mk_text(KSMU_MSG_CTL, 6);
	put16(offsetof(struct ksmu_wire_hdr, type), 14);
	EXPECT("type 14 text", n, -EPROTO);
	put_hdr(65535, 0, HDR);
	EXPECT("type 65535 header only", HDR, -EPROTO);

	/* Larger than any message: refused before anything else is read. */
	memset(msg, 0, KSMU_WIRE_MAX + 1);
	EXPECT("garbage > MAX", KSMU_WIRE_MAX + 1, -EMSGSIZE);
	n = put_hdr(KSMU_MSG_CTL_REPLY, 0, KSMU_WIRE_MAX + 1);
	memset(msg + HDR, 'a', n - HDR);
	EXPECT("text > MAX", n, -EMSGSIZE);
	n = mk_counted(KSMU_MSG_LOOKUP, KSMU_WIRE_MAX_PAGES + 1, 0);
	EXPECT("LOOKUP 33 pages", n, -EMSGSIZE);
	n = mk_counted(KSMU_MSG_LOOKUP, KSMU_WIRE_MAX_PAGES, 0);
	msg[n] = 0;
	EXPECT("LOOKUP 32 + 1 byte", set_len(n + 1), -EMSGSIZE);
}

static void test_fixed(void)
{
	const size_t hello = HDR, welcome = HDR;
	uint16_t t;
	size_t n;

	/* Body one byte short or long, for every fixed-size type. */
	for (t = 1; t <= KSMU_MSG_TYPE_MAX; t++) {
		if (counted(t) || t == KSMU_MSG_CTL || t == KSMU_MSG_CTL_REPLY)
			continue;
		n = mk_good(t);
		EXPECT(names[t], set_len(n - 1), -EBADMSG);
		n = mk_good(t);
		msg[n] = 0;
		EXPECT(names[t], set_len(n + 1), -EBADMSG);
		n = mk_good(t);
		EXPECT(names[t], set_len(n + 8), -EBADMSG);
	}

	n = mk_hello();
	put32(hello + offsetof(struct ksmu_wire_hello, version), 0);
	EXPECT("HELLO version 0", n, -EPROTO);
	put32(hello + offsetof(struct ksmu_wire_hello, version), KSMU_WIRE_VERSION + 1);
	EXPECT("HELLO version 2", n, -EPROTO);
	n = mk_hello();
	put32(hello + offsetof(struct ksmu_wire_hello, flags), 1);
	EXPECT("HELLO flags", n, -EBADMSG);
	n = mk_hello();
	put32(hello + offsetof(struct ksmu_wire_hello, reserved), 0x80000000u);
	EXPECT("HELLO reserved", n, -EBADMSG);
	n = mk_hello();
	put32(hello + offsetof(struct ksmu_wire_hello, page_size), 0);
	EXPECT("HELLO page 0", n, -EBADMSG);
	put32(hello + offsetof(struct ksmu_wire_hello, page_size), 8192);
	EXPECT("HELLO page 8192", n, -EBADMSG);
	put32(hello + offsetof(struct ksmu_wire_hello, page_size), 65536);
	EXPECT("HELLO page 65536", n, -EBADMSG);
	n = mk_hello();
	memset(msg + hello + offsetof(struct ksmu_wire_hello, label), 'a', 32);
	EXPECT("HELLO label unterminated", n, -EBADMSG);

	n = mk_welcome(1);
	put32(welcome + offsetof(struct ksmu_wire_welcome, version), 2);
	EXPECT("WELCOME version 2", n, -EPROTO);
	n = mk_welcome(1);
	put32(welcome + offsetof(struct ksmu_wire_welcome, reserved), 1);
	EXPECT("WELCOME reserved", n, -EBADMSG);
	EXPECT("WELCOME max_pages 0", mk_welcome(0), -EBADMSG);
	EXPECT("WELCOME max_pages 33", mk_welcome(KSMU_WIRE_MAX_PAGES + 1), -EBADMSG);
	EXPECT("WELCOME max_pages ~0", mk_welcome(UINT32_MAX), -EBADMSG);
	n = mk_welcome(1);
	memset(msg + welcome + offsetof(struct ksmu_wire_welcome, domain_name), 'd', 32);
	EXPECT("WELCOME domain_name unterminated", n, -EBADMSG);

	n = mk_store_fd();
	put32(HDR + offsetof(struct ksmu_wire_store_fd, store), KSMU_WIRE_NO_STORE);
	EXPECT("STORE_FD store 0", n, -EBADMSG);
	n = mk_store_fd();
	put32(HDR + offsetof(struct ksmu_wire_store_fd, reserved), 1);
	EXPECT("STORE_FD reserved", n, -EBADMSG);

	EXPECT("FORK pid 0", mk_fork(0), -EBADMSG);
	EXPECT("FORK pid 2^22 (PID_MAX_LIMIT)", mk_fork(1u << 22), -EBADMSG);
	EXPECT("FORK pid 2^22+1", mk_fork((1u << 22) + 1), -EBADMSG);
	EXPECT("FORK pid ~0", mk_fork(UINT32_MAX), -EBADMSG);
	n = mk_fork(4242);
	put32(HDR + offsetof(struct ksmu_wire_fork, reserved), 1);
	EXPECT("FORK reserved", n, -EBADMSG);

	EXPECT("KNOB empty", mk_knob(""), -EBADMSG);
	n = mk_knob("");
	msg[HDR + 1] = 'x'; /* "" then bytes: still empty */
	EXPECT("KNOB empty, bytes after", n, -EBADMSG);
	n = mk_knob("pages_to_scan");
	memset(msg + HDR + offsetof(struct ksmu_wire_knob, name), 'k', 40);
	EXPECT("KNOB name unterminated", n, -EBADMSG);

	EXPECT("ERROR 0", mk_error(0), -EBADMSG);
	EXPECT("ERROR -1", mk_error(-1), -EBADMSG);
	EXPECT("ERROR -EBADMSG", mk_error(-EBADMSG), -EBADMSG);
	EXPECT("ERROR INT32_MIN", mk_error(INT32_MIN), -EBADMSG);
	EXPECT("ERROR 4096", mk_error(4096), -EBADMSG);
	n = mk_error(EPROTO);
	put16(HDR + offsetof(struct ksmu_wire_error, reserved), 1);
	EXPECT("ERROR reserved", n, -EBADMSG);
}

static void test_counted(void)
{
	static const uint16_t types[] = {KSMU_MSG_LOOKUP, KSMU_MSG_RESULT, KSMU_MSG_HINT,
					 KSMU_MSG_RELEASE};
	size_t i, n, last;
	uint32_t max;
	uint16_t t;

	for (i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		t = types[i];
		max = max_entries(t);

		EXPECT(names[t], mk_counted(t, 0, 0), -EBADMSG);
		/* Count header cut short. */
		n = mk_counted(t, 1, 0);
		EXPECT(names[t], set_len(HDR + 4), -EBADMSG);
		n = mk_counted(t, 1, 0);
		put32(HDR + offsetof(struct ksmu_wire_count, reserved), 1);
		EXPECT(names[t], n, -EBADMSG);

		/* Above the maximum: the count decides, whatever the size. */
		n = mk_counted(t, 1, 0);
		put32(HDR, max + 1);
		EXPECT(names[t], n, -EMSGSIZE);
		put32(HDR, UINT32_MAX);
		EXPECT(names[t], n, -EMSGSIZE);
		put32(HDR, 0x80000001u);
		EXPECT(names[t], n, -EMSGSIZE);
		if (t != KSMU_MSG_LOOKUP) /* (a LOOKUP of 33 pages is > KSMU_WIRE_MAX) */
			EXPECT(names[t], mk_counted(t, max + 1, 0), -EMSGSIZE);

		/* Size not what the count says: one byte, one entry, more or less. */
		n = mk_counted(t, 2, 0);
		EXPECT(names[t], set_len(n - 1), -EBADMSG);
		n = mk_counted(t, 2, 0);
		msg[n] = 0;
		EXPECT(names[t], set_len(n + 1), -EBADMSG);
		n = mk_counted(t, 2, 0);
		put32(HDR, 1);
		EXPECT(names[t], n, -EBADMSG);
		put32(HDR, 3);
		EXPECT(names[t], n, -EBADMSG);
		n = mk_counted(t, max, 0);
		EXPECT(names[t], set_len(n - 1), -EBADMSG);
		n = mk_counted(t, 1, 0);
		EXPECT(names[t], set_len(HDR + CNT), -EBADMSG);
	}

	/* Unaligned addresses, in the first and in the last entry. */
	for (last = 0; last < 2; last++) {
		uint32_t cnt = last ? KSMU_WIRE_MAX_PAGES : 3, at = last ? cnt - 1 : 0;
		static const uint64_t bad[] = {1, 0x800, PG - 1, 0x7f1234560008ull,
					       0xffffffffffffffffull};
		size_t j;

		for (j = 0; j < sizeof(bad) / sizeof(bad[0]); j++) {
			n = mk_counted(KSMU_MSG_LOOKUP, cnt, KSMU_LOOKUP_CREATE);
			put64(lookup_addr(at), bad[j]);
			EXPECT("LOOKUP unaligned", n, -EBADMSG);
			n = mk_counted(KSMU_MSG_HINT, cnt, 0);
			put64(entry(KSMU_MSG_HINT, at) + offsetof(struct ksmu_wire_hint, addr), bad[j]);
			EXPECT("HINT unaligned", n, -EBADMSG);
		}
		/* Page bytes that would be unaligned as addresses are content. */
		n = mk_counted(KSMU_MSG_LOOKUP, cnt, 0);
		memset(msg + lookup_page(cnt, at), 0x11, PG);
		EXPECT("LOOKUP page content", n, 0);

		n = mk_counted(KSMU_MSG_HINT, cnt, 0);
		put32(entry(KSMU_MSG_HINT, at) + offsetof(struct ksmu_wire_hint, store), 0);
		EXPECT("HINT store 0", n, -EBADMSG);

		cnt = last ? KSMU_WIRE_MAX_ENTRIES : 3;
		at = last ? cnt - 1 : 0;
		n = mk_counted(KSMU_MSG_RELEASE, cnt, 0);
		put32(entry(KSMU_MSG_RELEASE, at) + offsetof(struct ksmu_wire_release, store), 0);
		EXPECT("RELEASE store 0", n, -EBADMSG);
		n = mk_counted(KSMU_MSG_RELEASE, cnt, 0);
		put32(entry(KSMU_MSG_RELEASE, at) + offsetof(struct ksmu_wire_release, count), 0);
		EXPECT("RELEASE count 0", n, -EBADMSG);
		n = mk_counted(KSMU_MSG_RELEASE, cnt, 0);
		put32(entry(KSMU_MSG_RELEASE, at) + offsetof(struct ksmu_wire_release, reserved), 1);
		EXPECT("RELEASE reserved", n, -EBADMSG);
		n = mk_counted(KSMU_MSG_HINT, cnt, 0);
		put64(entry(KSMU_MSG_HINT, at) + offsetof(struct ksmu_wire_hint, addr), 0x10);
		EXPECT("HINT unaligned (1024)", n, -EBADMSG);
	}
}

static void test_text(void)
{
	static const uint16_t types[] = {KSMU_MSG_CTL, KSMU_MSG_CTL_REPLY};
	size_t i, n;
	uint16_t t;

	for (i = 0; i < 2; i++) {
		t = types[i];
		EXPECT(names[t], mk_text(t, 0), -EBADMSG);
		n = mk_text(t, 1);
		msg[HDR] = 0;
		EXPECT(names[t], n, -EBADMSG);
		n = mk_text(t, 100);
		msg[HDR] = 0;
		EXPECT(names[t], n, -EBADMSG);
		n = mk_text(t, 100);
		msg[HDR + 50] = 0;
		EXPECT(names[t], n, -EBADMSG);
		n = mk_text(t, 100);
		msg[n - 1] = 0; /* a C string's terminator is not sent */
		EXPECT(names[t], n, -EBADMSG);
		n = mk_text(t, KSMU_WIRE_MAX_TEXT);
		msg[n - 1] = 0;
		EXPECT(names[t], n, -EBADMSG);
		EXPECT(names[t], mk_text(t, KSMU_WIRE_MAX_TEXT + 1), -EMSGSIZE);
		EXPECT(names[t], mk_text(t, KSMU_WIRE_MAX_TEXT + 4096), -EMSGSIZE);
	}
}

static size_t mk_seed(const char *name)
{
	static const struct {
		const char *name;
		uint16_t type;
		uint32_t count;
		uint16_t flags;
	} counted_seeds[] = {
		{"lookup-1", KSMU_MSG_LOOKUP, 1, 0},
		{"lookup-2-create", KSMU_MSG_LOOKUP, 2, KSMU_LOOKUP_CREATE},
		{"result-32", KSMU_MSG_RESULT, KSMU_WIRE_MAX_PAGES, 0},
		{"hint-2", KSMU_MSG_HINT, 2, 0},
		{"release-2", KSMU_MSG_RELEASE, 2, 0},
	};
	uint16_t t;
	size_t i;

	for (i = 0; i < sizeof(counted_seeds) / sizeof(counted_seeds[0]); i++)
		if (!strcmp(name, counted_seeds[i].name))
			return mk_counted(counted_seeds[i].type, counted_seeds[i].count,
					  counted_seeds[i].flags);
	for (t = 1; t <= KSMU_MSG_TYPE_MAX; t++) {
		char lower[16];

		for (i = 0; names[t][i] && i < sizeof(lower) - 1; i++)
			lower[i] = names[t][i] == '_' ? '_' : (char)(names[t][i] | 0x20);
		lower[i] = 0;
		if (!counted(t) && !strcmp(name, lower))
			return mk_good(t);
	}
	return 0;
}

static const char *const seeds[] = {
	"hello",    "welcome",	 "store_fd", "lookup-1", "lookup-2-create", "result-32", "hint-2",
	"release-2", "fork",	 "report",   "knob",	 "ctl",		    "ctl_reply", "error",
};

static int write_corpus(const char *dir)
{
	size_t i;

	for (i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++) {
		char path[4096];
		size_t n = mk_seed(seeds[i]);
		int fd;

		if (!n || ksmu_wire_check(msg, n)) {
			fprintf(stderr, "seed %s: not a valid message\n", seeds[i]);
			return T_EXIT_FAIL;
		}
		snprintf(path, sizeof(path), "%s/%s", dir, seeds[i]);
		fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd < 0 || write(fd, msg, n) != (ssize_t)n) {
			perror(path);
			return T_EXIT_FAIL;
		}
		close(fd);
		printf("%s: %zu bytes\n", path, n);
	}
	return T_EXIT_PASS;
}

/* The committed fuzz seeds are valid messages, one of each type at least. */
static void test_corpus(void)
{
#ifdef KSMU_WIRE_CORPUS
	unsigned seen = 0;
	struct dirent *de;
	DIR *d = opendir(KSMU_WIRE_CORPUS);

	CHECK("opendir " KSMU_WIRE_CORPUS, d != NULL);
	if (!d)
		return;
	while ((de = readdir(d))) {
		char path[4096];
		ssize_t n;
		int fd;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", KSMU_WIRE_CORPUS, de->d_name);
		fd = open(path, O_RDONLY);
		CHECK(path, fd >= 0);
		if (fd < 0)
			continue;
		n = read(fd, msg, MSG_CAP);
		close(fd);
		CHECK(path, n > 0);
		if (n <= 0)
			continue;
		CHECK_RET(path, check_at_guard((size_t)n), 0);
		if (n >= (ssize_t)HDR) {
			struct ksmu_wire_hdr h;

			memcpy(&h, msg, sizeof(h));
			if (h.type < 32)
				seen |= 1u << h.type;
		}
	}
	closedir(d);
	CHECK("a seed of every type", seen == ((1u << (KSMU_MSG_TYPE_MAX + 1)) - 2));
#endif
}

int main(int argc, char **argv)
{
	size_t len = (MSG_CAP + 2 * PG) & ~(size_t)(PG - 1);
	unsigned char *m;

	if (argc == 3 && !strcmp(argv[1], "--write-corpus"))
		return write_corpus(argv[2]);
	if (argc != 1) {
		fprintf(stderr, "usage: %s [--write-corpus DIR]\n", argv[0]);
		return T_EXIT_FAIL;
	}

	m = mmap(NULL, len + PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED || mprotect(m + len, PG, PROT_NONE)) {
		perror("mmap");
		return T_EXIT_FAIL;
	}
	guard_end = m + len;

	test_layout();
	test_helpers();
	test_accept();
	test_header();
	test_fixed();
	test_counted();
	test_text();
	test_corpus();
	return t_exit();
}
