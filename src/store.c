/* SPDX-License-Identifier: MIT */
/*
 * store.c - the memfd that holds canonical ("store") pages, and their
 * allocator.
 *
 * A merged page becomes a MAP_PRIVATE mapping of one page of a memfd that
 * the engine owns, the store.  Every process page with the same content maps
 * the same store page, so the content costs memory once; when the
 * application writes, the kernel breaks copy-on-write at kernel speed and
 * the store page is left untouched.  This module owns the memfd, hands out
 * and takes back its page indexes, writes and reads their content, and maps
 * them.  It is the store's only writer.
 *
 * DESIGN
 *   Nothing but the engine can write a store page.  Content is written with
 *   pwrite() only, once, when the page is allocated; the engine never
 *   creates a MAP_SHARED (writable or not) mapping of the memfd, and every
 *   mapping it gives out is MAP_PRIVATE, where a write makes the kernel copy
 *   the page first.  So no address in the process aliases store memory
 *   writably: a stray application write, a buggy memcpy, even a write by
 *   the engine through a merged address, can never change a store page and
 *   with it every page merged onto it.  The remaining exposure is the file
 *   descriptor itself, which sits in the process's table like any other:
 *     - code in the process can write(2) to it or mmap it MAP_SHARED (found
 *       through /proc/self/fd, or by an application that closes or dup2()s
 *       over descriptors it does not own).  Seals cannot forbid this: every
 *       write seal (F_SEAL_WRITE, F_SEAL_FUTURE_WRITE) also forbids the
 *       engine's own pwrite().  What the store does: it adds F_SEAL_SEAL
 *       (when sealing is available) so no one can seal the file against the
 *       engine, and before every operation that writes, punches or maps it
 *       checks (fstat: device and inode) that the descriptor number still
 *       names the store, failing with -EBADF instead of writing into, or
 *       mapping, some other file that took the number;
 *     - a forked child inherits the descriptor (MFD_CLOEXEC only covers
 *       exec) and a copy of this struct: the child must never allocate or
 *       free in the inherited store (it would reuse indexes its parent
 *       still maps), only close it;
 *     - anyone with ptrace rights over the process (root) can open
 *       /proc/PID/fd/N, as they can read or write its memory anyway.
 *
 *   Allocation is a bitmap of used pages, 1 bit per page of file size (the
 *   only metadata: 128 KiB for 4 GiB of file), searched a 64-bit word at a
 *   time.  Allocation is lowest-index first fit: the search starts at
 *   @hint, the lowest index that may be free.  A single page is the first
 *   clear bit from there (full words skipped 64 at a time: O(1) in the
 *   common case, as the hint follows allocations).  A run of n is one pass
 *   over the words from the hint carrying the length of the free run that
 *   reaches the top of the previous word, with a shift-and trick for runs
 *   inside one word (find_free_run()): O(words scanned), not O(holes).
 *   First fit keeps the used pages packed at the bottom, so the file stays
 *   compact and its free tail can be cut.
 *
 *   Runs exist because adjacent merged pages that map adjacent store pages
 *   need one mmap() and one VMA for the whole run instead of one per page
 *   (vm.max_map_count, and 1 us/page instead of 10 us/page).
 *
 *   The store never grows without bound.  Freed pages are reused first;
 *   the file grows by ftruncate() only when no free run of n pages exists
 *   inside it, in steps of KSMU_STORE_STEP_PAGES (2 MiB), never past
 *   @max_pages (-ENOSPC).  It shrinks (ftruncate down, keeping one step of
 *   slack to avoid see-sawing) once at least two steps at its end are free.
 *   File size costs no memory: only written, unpunched pages do, and a free
 *   page is always a hole (punched on free, never written, or cut off).
 *
 *   NUMA: one store per process for now.  A later release keeps one store
 *   per node (merge_across_nodes=0), each memfd's pages allocated on its
 *   node (mbind of a mapping, or writing from a thread bound to the node).
 *
 * INVARIANTS
 *   - A page is allocated iff its bit is set; bits at and beyond
 *     @size_pages are clear; @nr_used is the number of set bits.
 *   - Every page below @hint is allocated; every page in [@used_end,
 *     @size_pages) is free.
 *   - A free page inside the file holds no memory (it is a hole); an
 *     allocated page holds the content written when it was allocated and
 *     is never written again until it has been freed.  (A pwrite() to a
 *     page that is mapped changes what every MAP_PRIVATE mapping that has
 *     not copied it reads: checked on 6.18.)
 *   - The CALLER frees a page only when nothing maps it any more, in this
 *     process or in any forked child.  Punching a hole zaps every mapping
 *     of the page that has not copied it (they then read zeros), and the
 *     next allocation that reuses the index makes them read the new
 *     content: a page freed while mapped is silent corruption, which the
 *     store cannot detect.  The same goes for shrinking: a mapping of a page
 *     beyond the new end would SIGBUS, which is why only free pages are cut.
 *
 * LOCKING / THREADS
 *   None inside.  Every function is called with the engine lock held;
 *   ksmu_store_read() and ksmu_store_map() only read the struct and may run
 *   concurrently with each other, never with alloc/free/destroy.
 *
 * KERNEL REQUIREMENTS
 *   memfd_create (3.17), fallocate(FALLOC_FL_PUNCH_HOLE) on shmem (3.5),
 *   MADV_POPULATE_READ (5.14; probe.c has no flag for it yet: on older
 *   kernels ksmu_store_map() returns -EINVAL after mapping, and the pages
 *   are mapped on first access instead).  MFD_NOEXEC_SEAL (6.3) is used
 *   when offered (required where vm.memfd_noexec=2).  If shmem huge pages
 *   are forced (/sys/kernel/mm/transparent_hugepage/shmem_enabled =
 *   force/always), a 4 KiB punch inside a huge folio may only zero it until
 *   the folio can be split; the project's machines have "never".
 *
 *   Observed on 6.18 and worth knowing downstream (test-store checks the
 *   first two):
 *     - a mapping made by ksmu_store_map() next to another store mapping
 *       whose file offsets it continues is merged into that VMA by the
 *       kernel: allocating runs in address order saves VMAs even across
 *       separate calls;
 *     - smaps "Private_Dirty" is no sign of a copy: a shmem page is always
 *       dirty and counts as private once a single address maps it.  A
 *       COW copy shows as "Anonymous" (and pagemap loses PM_FILE);
 *     - every mapping of a store page counts in the process's RssShmem
 *       (1000 addresses mapping one store page: 4000 kB of RSS, 4 kB of
 *       Pss_Shmem): merging does not lower RSS, only PSS and the
 *       system's memory use (the page counts once in Shmem).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "compat.h"
#include "store.h"

#ifndef MFD_CLOEXEC
#define MFD_CLOEXEC 0x0001U
#endif
#ifndef MFD_NOEXEC_SEAL
#define MFD_NOEXEC_SEAL 0x0008U /* 6.3: not executable, implies MFD_ALLOW_SEALING */
#endif
#ifndef F_SEAL_SEAL
#define F_SEAL_SEAL 0x0001
#endif

#define WORD_BITS 64U

/* Largest store: page offsets must fit off_t and byte lengths size_t. */
#define STORE_MAX_PAGES                                                                            \
	((size_t)KSMU_MIN((uint64_t)INT64_MAX >> KSMU_PAGE_SHIFT,                                  \
			  (uint64_t)SIZE_MAX >> KSMU_PAGE_SHIFT))

static inline off_t page_off(size_t page)
{
	return (off_t)((uint64_t)page << KSMU_PAGE_SHIFT);
}

static inline size_t words_for(size_t pages)
{
	return (pages + WORD_BITS - 1) / WORD_BITS;
}

static inline size_t round_up_step(size_t pages)
{
	return (pages + KSMU_STORE_STEP_PAGES - 1) / KSMU_STORE_STEP_PAGES * KSMU_STORE_STEP_PAGES;
}

/* Bits [lo, hi) of a word, 0 <= lo < hi <= 64. */
static inline uint64_t bits_mask(unsigned int lo, unsigned int hi)
{
	uint64_t m = hi >= WORD_BITS ? ~UINT64_C(0) : (UINT64_C(1) << hi) - 1;

	return m & (~UINT64_C(0) << lo);
}

/* ---------------------------------------------------------------- bitmap */

static inline bool bit_test(const uint64_t *m, size_t i)
{
	return (m[i / WORD_BITS] >> (i % WORD_BITS)) & 1;
}

/*
 * The word holding bit @start (*@w) and the mask of the bits of [@start,
 * @end) inside it; the next word to visit starts at (*@w + 1) * WORD_BITS.
 */
static uint64_t word_span(size_t start, size_t end, size_t *w)
{
	unsigned int lo, hi;

	*w = start / WORD_BITS;
	lo = (unsigned int)(start % WORD_BITS);
	hi = end - *w * WORD_BITS >= WORD_BITS ? WORD_BITS : (unsigned int)(end - *w * WORD_BITS);
	return bits_mask(lo, hi);
}

/* Set (val) or clear (!val) bits [start, start + n), a word at a time. */
static void bits_assign(uint64_t *m, size_t start, size_t n, bool val)
{
	size_t end = start + n;

	while (start < end) {
		size_t w;
		uint64_t mask = word_span(start, end, &w);

		if (val)
			m[w] |= mask;
		else
			m[w] &= ~mask;
		start = (w + 1) * WORD_BITS;
	}
}

/* Are bits [start, start + n) all set (val) or all clear (!val)? */
static bool bits_all(const uint64_t *m, size_t start, size_t n, bool val)
{
	size_t end = start + n;

	while (start < end) {
		size_t w;
		uint64_t mask = word_span(start, end, &w);
		uint64_t word = val ? m[w] : ~m[w];

		if ((word & mask) != mask)
			return false;
		start = (w + 1) * WORD_BITS;
	}
	return true;
}

/*
 * First bit in [from, limit) that is clear (want_set false) or set
 * (want_set true); limit if there is none.  The bitmap must cover
 * words_for(limit) words.
 */
static size_t bits_find(const uint64_t *m, size_t from, size_t limit, bool want_set)
{
	size_t w, idx;
	uint64_t word;

	if (from >= limit)
		return limit;
	w = from / WORD_BITS;
	word = (want_set ? m[w] : ~m[w]) & (~UINT64_C(0) << (from % WORD_BITS));
	for (;;) {
		if (word) {
			idx = w * WORD_BITS + (size_t)__builtin_ctzll(word);
			return idx < limit ? idx : limit;
		}
		if (++w * WORD_BITS >= limit)
			return limit;
		word = want_set ? m[w] : ~m[w];
	}
}

/* One past the highest set bit below @end, or 0 if none. */
static size_t bits_last_set_before(const uint64_t *m, size_t end)
{
	size_t w;
	uint64_t word;

	if (end == 0)
		return 0;
	w = (end - 1) / WORD_BITS;
	word = m[w] & bits_mask(0, (unsigned int)((end - 1) % WORD_BITS) + 1);
	for (;;) {
		if (word)
			return w * WORD_BITS + (WORD_BITS - 1 - (size_t)__builtin_clzll(word)) + 1;
		if (w == 0)
			return 0;
		word = m[--w];
	}
}

/*
 * Starts of runs of @n set bits lying wholly inside @x (1 <= n <= 64): bit i
 * of the result is set iff bits i .. i+n-1 of @x are all set.  Doubling
 * shifts: after each step bit i stands for a run of @s bits from i; shifting
 * in zeros from the top drops runs that would cross the word.
 */
static inline uint64_t runs_in_word(uint64_t x, size_t n)
{
	size_t s = 1;

	while (s < n && x) {
		size_t t = KSMU_MIN(s, n - s);

		x &= x >> t;
		s += t;
	}
	return x;
}

/*
 * Lowest-index run of @n free pages inside the file; SIZE_MAX if none.
 * Also moves @hint up to the lowest free page (all below it are used).
 *
 * One pass over the words from the hint: a full word resets the current
 * free run, an empty one extends it by 64, a mixed one ends the run that
 * reaches its bottom bits (ctz), is searched inside (runs_in_word, when
 * n <= 64) and starts a new run with its free top bits (clz).  O(words
 * between the hint and the result), O(log n) per mixed word.
 */
static size_t find_free_run(struct ksmu_store *s, size_t n)
{
	const uint64_t *m = s->used;
	size_t limit = s->size_pages, nwords = words_for(limit);
	size_t p, w, run = 0, run_start = 0;

	p = bits_find(m, s->hint, limit, false);
	s->hint = p;
	if (p >= limit || n > limit - p)
		return SIZE_MAX;
	if (n == 1)
		return p;
	/* Bits of word p/64 below p are used: p is the first free page. */
	for (w = p / WORD_BITS; w < nwords; w++) {
		uint64_t used = m[w];
		size_t base = w * WORD_BITS;

		if (limit - base < WORD_BITS) /* pages past the file count as used */
			used |= ~bits_mask(0, (unsigned int)(limit - base));
		if (used == ~UINT64_C(0)) {
			run = 0;
			continue;
		}
		if (run == 0)
			run_start = base;
		if (used == 0) {
			run += WORD_BITS;
			if (run >= n)
				return run_start;
			continue;
		}
		if (run + (size_t)__builtin_ctzll(used) >= n)
			return run_start;
		if (n <= WORD_BITS) {
			uint64_t starts = runs_in_word(~used, n);

			if (starts)
				return base + (size_t)__builtin_ctzll(starts);
		}
		run = (size_t)__builtin_clzll(used);
		run_start = base + WORD_BITS - run;
	}
	return SIZE_MAX;
}

/* Make the bitmap exactly words_for(@pages) words; new words are zero. */
static int resize_map(struct ksmu_store *s, size_t pages)
{
	size_t words = words_for(pages);
	uint64_t *m;

	if (words == s->map_words)
		return 0;
	if (words == 0) {
		free(s->used);
		s->used = NULL;
		s->map_words = 0;
		return 0;
	}
	m = realloc(s->used, words * sizeof(*m));
	if (!m)
		return -ENOMEM;
	if (words > s->map_words)
		memset(m + s->map_words, 0, (words - s->map_words) * sizeof(*m));
	s->used = m;
	s->map_words = words;
	return 0;
}

/* ---------------------------------------------------------------- file */

/*
 * Does s->fd still name the store?  An application that closes descriptors
 * it does not own, and opens a file that gets the number, would otherwise
 * have its file written, punched or mapped by the engine.  One fstat (about
 * 1 us), paid on alloc, free and map, never on read.
 */
static bool fd_is_store(const struct ksmu_store *s)
{
	struct stat st;

	if (s->fd < 0 || fstat(s->fd, &st) < 0)
		return false;
	return st.st_dev == s->dev && st.st_ino == s->ino;
}

static int set_size(struct ksmu_store *s, size_t pages)
{
	if (ftruncate(s->fd, page_off(pages)) < 0)
		return -errno;
	return 0;
}

static int punch(int fd, size_t first, size_t n)
{
	int r;

	do {
		r = fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, page_off(first),
			      page_off(n));
	} while (r < 0 && errno == EINTR);
	return r < 0 ? -errno : 0;
}

static int write_all(int fd, const void *buf, size_t len, off_t off)
{
	const char *p = buf;

	while (len) {
		ssize_t r = pwrite(fd, p, len, off);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			return -EIO;
		p += r;
		off += r;
		len -= (size_t)r;
	}
	return 0;
}

/* ---------------------------------------------------------------- API */

int ksmu_store_init(struct ksmu_store *s, size_t max_pages)
{
	struct stat st;
	int fd, err;

	if (!s)
		return -EINVAL;
	memset(s, 0, sizeof(*s));
	s->fd = -1;
	if (max_pages == 0 || max_pages > STORE_MAX_PAGES)
		return -EINVAL;

	/*
	 * MFD_NOEXEC_SEAL (6.3) makes the file non-executable for good and is
	 * required where vm.memfd_noexec=2; older kernels reject the unknown
	 * flag with EINVAL, and there a memfd created without
	 * MFD_ALLOW_SEALING is born with F_SEAL_SEAL, which is all we want.
	 */
	fd = memfd_create("ksmu-store", MFD_CLOEXEC | MFD_NOEXEC_SEAL);
	if (fd < 0 && errno == EINVAL)
		fd = memfd_create("ksmu-store", MFD_CLOEXEC);
	if (fd < 0)
		return -errno;
	/*
	 * Forbid further seals, so that no one in the process can add a write
	 * or shrink seal and make the engine's pwrite()/ftruncate() fail.
	 * EPERM here means F_SEAL_SEAL is already set: fine.
	 */
	(void)fcntl(fd, F_ADD_SEALS, F_SEAL_SEAL);
	if (fstat(fd, &st) < 0) {
		err = -errno;
		close(fd);
		return err;
	}
	s->fd = fd;
	s->dev = st.st_dev;
	s->ino = st.st_ino;
	s->max_pages = max_pages;
	return 0;
}

void ksmu_store_destroy(struct ksmu_store *s)
{
	if (!s)
		return;
	if (s->fd >= 0)
		close(s->fd);
	free(s->used);
	memset(s, 0, sizeof(*s));
	s->fd = -1;
}

/*
 * Allocate [p, p+n), known free and below max_pages, and fill it with @buf:
 * grow the file if the run reaches past its end.  On failure nothing
 * changes (a free page must stay a hole).
 */
static int place_run(struct ksmu_store *s, size_t p, size_t n, const void *buf)
{
	size_t old_size, new_size = 0;
	bool grew = false;
	int err;

	if (p + n > s->size_pages)
		new_size = KSMU_MIN(round_up_step(p + n), s->max_pages);
	if (!fd_is_store(s))
		return -EBADF;

	old_size = s->size_pages;
	if (new_size) {
		err = set_size(s, new_size);
		if (err)
			return err;
		err = resize_map(s, new_size);
		if (err) {
			(void)set_size(s, old_size);
			return err;
		}
		s->size_pages = new_size;
		grew = true;
	}

	err = write_all(s->fd, buf, n << KSMU_PAGE_SHIFT, page_off(p));
	if (err) {
		/*
		 * Undo: a free page must be a hole.  Cutting the file back
		 * drops what was written past the old end; a punch drops the
		 * rest (a partial write may have filled some pages).
		 */
		if (grew && set_size(s, old_size) == 0) {
			(void)resize_map(s, old_size);
			s->size_pages = old_size;
			if (p < old_size)
				(void)punch(s->fd, p, KSMU_MIN(n, old_size - p));
		} else {
			(void)punch(s->fd, p, n);
		}
		return err;
	}

	bits_assign(s->used, p, n, true);
	s->nr_used += n;
	if (p + n > s->used_end)
		s->used_end = p + n;
	if (p == s->hint)
		s->hint = p + n;
	s->nr_allocs++;
	s->nr_alloc_pages += n;
	if (grew)
		s->nr_grows++;
	return 0;
}

int ksmu_store_alloc_run(struct ksmu_store *s, size_t n, const void *buf, size_t *first)
{
	size_t p;
	int err;

	if (!s || !buf || !first || n == 0 || s->fd < 0)
		return -EINVAL;
	if (n > s->max_pages)
		return -ENOSPC;

	p = find_free_run(s, n);
	if (p == SIZE_MAX) {
		/*
		 * No hole of n pages inside the file.  Every free run below
		 * used_end is shorter than n, so the lowest place the run fits
		 * is used_end itself, reaching past the end of the file.
		 */
		p = s->used_end;
		if (n > s->max_pages - p)
			return -ENOSPC;
	}
	err = place_run(s, p, n, buf);
	if (!err)
		*first = p;
	return err;
}

int ksmu_store_alloc_at(struct ksmu_store *s, size_t first, size_t n, const void *buf)
{
	if (!s || !buf || n == 0 || s->fd < 0)
		return -EINVAL;
	if (first >= s->max_pages || n > s->max_pages - first)
		return -ENOSPC;
	/* Pages at and beyond size_pages are free (and have no bits yet). */
	if (first < s->size_pages &&
	    !bits_all(s->used, first, KSMU_MIN(n, s->size_pages - first), false))
		return -EBUSY;
	return place_run(s, first, n, buf);
}

/*
 * Cut the file back when at least two steps at its end are free, keeping
 * one step of slack above the last used page so that an alloc/free cycle
 * at the boundary does not ftruncate() every time.  Only free pages are cut
 * (see INVARIANTS: nothing maps them).
 */
static void maybe_shrink(struct ksmu_store *s)
{
	size_t new_size;

	if (s->size_pages - s->used_end < 2 * KSMU_STORE_STEP_PAGES)
		return;
	new_size = round_up_step(s->used_end) + KSMU_STORE_STEP_PAGES;
	if (!fd_is_store(s) || set_size(s, new_size) < 0)
		return; /* harmless: the tail is all holes anyway */
	/* Bits at and beyond new_size are clear, so the map may lose them. */
	(void)resize_map(s, new_size);
	s->size_pages = new_size;
	s->nr_shrinks++;
}

void ksmu_store_free_run(struct ksmu_store *s, size_t first, size_t n)
{
	int err;

	if (n == 0)
		return;
	KSMU_BUG_ON(!s || s->fd < 0);
	KSMU_BUG_ON(first >= s->size_pages || n > s->size_pages - first);
	KSMU_BUG_ON(!bits_all(s->used, first, n, true)); /* double free, or never allocated */

	bits_assign(s->used, first, n, false);
	s->nr_used -= n;
	s->nr_frees++;
	s->nr_free_pages += n;
	if (first < s->hint)
		s->hint = first;

	/*
	 * Return the memory now rather than at reuse.  If the punch is
	 * refused, the pages keep their memory (and stale content nobody
	 * maps) until the index is rewritten or cut off: counted, not fatal.
	 */
	err = fd_is_store(s) ? punch(s->fd, first, n) : -EBADF;
	if (err) {
		s->nr_punch_errors++;
		s->last_punch_error = -err;
	} else {
		s->nr_punches++;
	}

	if (first + n == s->used_end) {
		s->used_end = bits_last_set_before(s->used, first);
		maybe_shrink(s);
	}
	ksmu_assert(s->hint <= s->used_end && s->used_end <= s->size_pages);
	ksmu_assert_expensive(bits_all(s->used, s->used_end, s->size_pages - s->used_end, false));
}

int ksmu_store_read(const struct ksmu_store *s, size_t page, void *buf)
{
	char *p = buf;
	size_t done = 0;
	off_t off;

	if (!s || !buf || s->fd < 0 || page >= s->size_pages)
		return -EINVAL;
	KSMU_BUG_ON(!bit_test(s->used, page)); /* comparing against a freed page */
	off = page_off(page);
	while (done < KSMU_PAGE_SIZE) {
		ssize_t r = pread(s->fd, p + done, KSMU_PAGE_SIZE - done, off + (off_t)done);

		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			return -EIO;
		done += (size_t)r;
	}
	return 0;
}

int ksmu_store_map(const struct ksmu_store *s, size_t first, size_t n, void *addr, int prot)
{
	size_t len;

	if (!s || s->fd < 0 || n == 0 || !addr || ((uintptr_t)addr & (KSMU_PAGE_SIZE - 1)) ||
	    first >= s->size_pages || n > s->size_pages - first)
		return -EINVAL;
	KSMU_BUG_ON(!bits_all(s->used, first, n, true)); /* mapping a free page */
	if (!fd_is_store(s))
		return -EBADF;

	len = n << KSMU_PAGE_SHIFT;
	if (mmap(addr, len, prot, MAP_PRIVATE | MAP_FIXED, s->fd, page_off(first)) == MAP_FAILED)
		return -errno;
	/*
	 * Pre-fault for READ: each PTE then points at the store page itself,
	 * read-only, so the mapping costs no memory and the first write takes
	 * an ordinary COW fault.  MAP_POPULATE would fault a writable private
	 * mapping for WRITE and copy every page (kernel-facts.md).  Without
	 * PROT_READ there is nothing to pre-fault.
	 */
	if ((prot & PROT_READ) && madvise(addr, len, MADV_POPULATE_READ) < 0)
		return -errno;
	return 0;
}

int ksmu_store_is_used(const struct ksmu_store *s, size_t page)
{
	return s && page < s->size_pages && bit_test(s->used, page);
}

void ksmu_store_get_stats(const struct ksmu_store *s, struct ksmu_store_stats *st)
{
	memset(st, 0, sizeof(*st));
	st->pages_used = s->nr_used;
	st->file_pages = s->size_pages;
	st->max_pages = s->max_pages;
	st->allocs = s->nr_allocs;
	st->alloc_pages = s->nr_alloc_pages;
	st->frees = s->nr_frees;
	st->free_pages = s->nr_free_pages;
	st->holes_punched = s->nr_punches;
	st->punch_errors = s->nr_punch_errors;
	st->grows = s->nr_grows;
	st->shrinks = s->nr_shrinks;
	st->metadata_bytes = ksmu_store_metadata_bytes(s);
}
