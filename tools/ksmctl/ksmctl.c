/* SPDX-License-Identifier: MIT */
/*
 * ksmctl - inspect and control ksmu from the command line.
 *
 * DESIGN
 *   One entry per command in cmds[]: its name, a one-line synopsis, a
 *   one-line description and a handler taking the command's own argv
 *   (argv[0] is the command name), so that later commands slot in as one
 *   function and one table line.  Each handler parses its options with
 *   getopt_long() and returns the process exit status.
 *
 *   Exit status: 0 success, 1 the operation failed, 2 usage error (unknown
 *   command, unknown option, unexpected argument, a bad pid, an unknown knob
 *   or a bad value).  Usage errors name the offending word on standard
 *   error and point to the help.
 *
 *   status and set talk to the engine of another process through its control
 *   socket (docs/control-protocol.md): the abstract Unix socket "ksmu/PID",
 *   one request line per connection, an answer that the server ends by
 *   closing.  The peer is another program, possibly older, newer, buggy or
 *   not ksmu at all, so ksmctl trusts nothing it sends:
 *     - the socket must belong to process PID itself (SO_PEERCRED, which the
 *       kernel translates into our PID namespace): a name in the shared
 *       abstract namespace can be taken by anyone, e.g. by a process of
 *       another PID namespace whose own pid is PID;
 *     - the whole answer is read under one deadline (CTL_TIMEOUT_MS, kept by
 *       SO_SNDTIMEO for connect() and SO_RCVTIMEO for each read) and a size
 *       limit (CTL_ANSWER_MAX), so a stuck or chatty peer cannot hang ksmctl;
 *     - it is checked whole before anything is printed: printable ASCII
 *       only (the server's ERR message reaches the terminal), OK or ERR
 *       first, then for STATUS "NAME VALUE" lines with names of
 *       [A-Za-z0-9_.] (which is what lets them go into JSON unescaped) and
 *       decimal 64-bit values, each name once, END last and nothing after.
 *   Names ksmctl does not know are kept and shown (the protocol may add
 *   names); knobs are told from counters by asking ksmu_check_tunable()
 *   whether the name would accept its current value, so new knobs of the
 *   library are grouped right without a list here.
 *
 *   set validates NAME and VALUE locally (ksmu_check_tunable()) before it
 *   connects, so a typo is a usage error rather than a round trip.
 *
 *   ksmctl is a program, not the library: it prints.  It uses only the
 *   public API of libksmu (ksmu.h), and never starts an engine in its own
 *   process: the only library calls are ksmu_probe(), ksmu_probe_describe(),
 *   ksmu_version() and ksmu_check_tunable(), none of which does.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "ksmu.h"
#include "parse.h"

/*
 * Part of the public API from release 0.1 on; declared here as well until
 * ksmu.h carries the declaration (an identical redeclaration is harmless).
 */
KSMU_API int ksmu_probe_describe(const struct ksmu_features *f, char *buf, size_t len, int json);

#define EXIT_USAGE 2

/* The control channel (docs/control-protocol.md). */
#define CTL_TIMEOUT_MS 5000	    /* for the whole exchange, connect to last byte */
#define CTL_ANSWER_MAX (64 * 1024) /* a STATUS answer is about 2 KiB */
#define CTL_NAME_MAX 64		    /* longest name accepted in an answer, with its NUL */
#define CTL_REQUEST_MAX 255	    /* the server's limit, before the '\n' */

struct cmd {
	const char *name;
	const char *args;    /* synopsis after the name */
	const char *summary; /* one line for the help */
	int (*run)(const struct cmd *cmd, int argc, char **argv);
};

static int cmd_check(const struct cmd *cmd, int argc, char **argv);
static int cmd_status(const struct cmd *cmd, int argc, char **argv);
static int cmd_set(const struct cmd *cmd, int argc, char **argv);
static int cmd_version(const struct cmd *cmd, int argc, char **argv);
static int cmd_help(const struct cmd *cmd, int argc, char **argv);

static const struct cmd cmds[] = {
	{ "check", "[--json]", "report which kernel features ksmu can use, and what it does with them",
	  cmd_check },
	{ "status", "--pid PID [--json]",
	  "show the counters and knobs of the engine running in process PID", cmd_status },
	{ "set", "--pid PID NAME VALUE", "set knob NAME of the engine in process PID to VALUE",
	  cmd_set },
	{ "version", "", "print the versions of ksmctl and of the libksmu in use", cmd_version },
	{ "help", "[COMMAND]", "print this help, or the help of COMMAND", cmd_help },
};

#define NCMDS (sizeof(cmds) / sizeof(cmds[0]))

static const struct cmd *find_cmd(const char *name)
{
	size_t i;

	for (i = 0; i < NCMDS; i++)
		if (!strcmp(cmds[i].name, name))
			return &cmds[i];
	return NULL;
}

static void usage(FILE *out)
{
	int width = 0, n;
	size_t i;

	for (i = 0; i < NCMDS; i++) {
		n = (int)(strlen(cmds[i].name) + 1 + strlen(cmds[i].args));
		if (n > width)
			width = n;
	}
	fprintf(out, "Usage: ksmctl COMMAND [OPTIONS]\n\n"
		     "Inspect and control ksmu, the user-space page deduplication engine.\n\n"
		     "Commands:\n");
	for (i = 0; i < NCMDS; i++) {
		char synopsis[64];

		snprintf(synopsis, sizeof(synopsis), "%s %s", cmds[i].name, cmds[i].args);
		fprintf(out, "  %-*s  %s\n", width, synopsis, cmds[i].summary);
	}
	fprintf(out, "\nEvery command accepts -h, --help.  See ksmctl(1).\n");
}

static void cmd_usage(const struct cmd *cmd, FILE *out)
{
	fprintf(out, "Usage: ksmctl %s%s%s\n%s\n", cmd->name, *cmd->args ? " " : "", cmd->args,
		cmd->summary);
}

/* Report a usage error about @cmd (NULL: the command line as a whole). */
static int __attribute__((format(printf, 2, 3)))
usage_error(const struct cmd *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "ksmctl%s%s: ", cmd ? " " : "", cmd ? cmd->name : "");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	if (cmd)
		fprintf(stderr, "\nUsage: ksmctl %s%s%s\nTry 'ksmctl help %s' for more information.\n",
			cmd->name, *cmd->args ? " " : "", cmd->args, cmd->name);
	else
		fprintf(stderr, "\nTry 'ksmctl help' for more information.\n");
	return EXIT_USAGE;
}

/* Report that the operation of @cmd failed.  Return: EXIT_FAILURE. */
static int __attribute__((format(printf, 2, 3)))
failure(const struct cmd *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "ksmctl %s: ", cmd->name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return EXIT_FAILURE;
}

/* Name the option getopt_long() just refused. */
static int bad_option(const struct cmd *cmd, char **argv)
{
	const char *word = argv[optind - 1];
	const char *eq;

	if (strncmp(word, "--", 2) && optopt > ' ' && optopt < 127)
		return usage_error(cmd, "unknown option '-%c'", optopt);
	eq = strchr(word, '=');
	if (eq && optopt)
		return usage_error(cmd, "option '%.*s' takes no argument", (int)(eq - word), word);
	return usage_error(cmd, "unknown option '%s'", word);
}

/* getopt_long() value of --pid (beyond any character). */
#define OPT_PID 256

/*
 * What parse_opts() found besides flags.
 * @pid:  the argument of --pid, NULL if the option was not given
 * @args: the positional arguments (they follow the options)
 * @nargs: how many
 */
struct cmd_args {
	const char *pid;
	char **args;
	int nargs;
};

/*
 * Parse a command's options.  @longopts' flag pointers receive the flags;
 * --pid (val OPT_PID) is stored in @a; -h/--help is handled here.  Up to
 * @max_args positional arguments are accepted into @a (which may be NULL
 * when @max_args is 0 and there is no --pid).  Returns -1 to go on, or an
 * exit status.
 */
static int parse_opts(const struct cmd *cmd, int argc, char **argv, const struct option *longopts,
		      int max_args, struct cmd_args *a)
{
	int c;

	if (a)
		memset(a, 0, sizeof(*a));
	optind = 0; /* glibc: full re-initialisation */
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+:h", longopts, NULL)) != -1) {
		switch (c) {
		case 0:
			break;
		case 'h':
			cmd_usage(cmd, stdout);
			return 0;
		case OPT_PID:
			a->pid = optarg;
			break;
		case ':':
			return usage_error(cmd, "option '%s' needs an argument", argv[optind - 1]);
		default:
			return bad_option(cmd, argv);
		}
	}
	if (argc - optind > max_args)
		return usage_error(cmd, "unexpected argument '%s'", argv[optind + max_args]);
	if (a) {
		a->args = argv + optind;
		a->nargs = argc - optind;
	}
	return -1;
}

/* --pid's argument: a positive decimal that fits pid_t.  Returns -1 to go on, or an exit status. */
static int parse_pid(const struct cmd *cmd, const struct cmd_args *a, pid_t *pid)
{
	uint64_t v;

	if (!a->pid)
		return usage_error(cmd, "missing --pid PID");
	if (ksmu_parse_decimal(a->pid, INT_MAX, &v) < 0 || v == 0)
		return usage_error(cmd, "invalid pid '%s' (want a positive decimal number)",
				   a->pid);
	*pid = (pid_t)v;
	return -1;
}

/*
 * Is @name a writable knob of ksmu_set_tunable()?  ksmu_check_tunable()
 * answers -EINVAL alike for an unknown name and a bad value, so ask with
 * values that every knob accepts one of: 0 is valid for all rules but
 * max_page_sharing's, which takes 2.
 */
static int knob_known(const char *name)
{
	return ksmu_check_tunable(name, 0) == 0 || ksmu_check_tunable(name, 2) == 0;
}

/* ------------------------------------------------------------ control channel */

/*
 * One entry of a STATUS answer.
 * @name: as sent, [A-Za-z0-9_.], at most CTL_NAME_MAX - 1 bytes
 * @neg:  the value is negative (-@mag); never set with @mag 0
 * @mag:  magnitude of the value (<= INT64_MAX + 1 when @neg)
 */
struct ctl_entry {
	const char *name;
	int neg;
	uint64_t mag;
};

/*
 * An answer, read whole.
 * @buf:    the bytes received, '\n' replaced by NUL once split
 * @len:    how many
 * @line:   start of each line in @buf
 * @nlines: how many lines
 */
struct ctl_answer {
	char *buf;
	size_t len;
	char **line;
	size_t nlines;
};

static void answer_free(struct ctl_answer *an)
{
	free(an->buf);
	free(an->line);
	memset(an, 0, sizeof(*an));
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int set_timeout(int fd, int opt, int64_t ms)
{
	struct timeval tv = { .tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000 };

	/* A zero timeval means "wait forever" to the kernel. */
	if (tv.tv_sec == 0 && tv.tv_usec == 0)
		tv.tv_usec = 1000;
	if (setsockopt(fd, SOL_SOCKET, opt, &tv, sizeof(tv)) < 0)
		return -errno;
	return 0;
}

/*
 * Why can we not reach the engine of @pid (connect() said ECONNREFUSED or
 * ENOENT)?  Nothing listens on "ksmu/PID"; tell the user which of the usual
 * reasons applies.  Return: EXIT_FAILURE.
 */
static int explain_no_engine(const struct cmd *cmd, pid_t pid)
{
	char path[64], ours[64], theirs[64], line[256];
	ssize_t n1, n2;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d", (int)pid);
	if (access(path, F_OK) < 0 && errno == ENOENT)
		return failure(cmd, "no process %d", (int)pid);

	/* /proc/TID exists too, although it is not listed: the socket is per process. */
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (f) {
		long tgid = -1;

		while (fgets(line, sizeof(line), f))
			if (sscanf(line, "Tgid: %ld", &tgid) == 1)
				break;
		fclose(f);
		if (tgid > 0 && tgid != pid)
			return failure(cmd, "%d is a thread of process %ld: use --pid %ld",
				       (int)pid, tgid, tgid);
	}

	/* Abstract socket names are per network namespace. */
	snprintf(path, sizeof(path), "/proc/%d/ns/net", (int)pid);
	n1 = readlink("/proc/self/ns/net", ours, sizeof(ours) - 1);
	n2 = readlink(path, theirs, sizeof(theirs) - 1);
	if (n1 > 0 && n2 > 0 && (n1 != n2 || memcmp(ours, theirs, (size_t)n1)))
		return failure(cmd,
			       "process %d is in another network namespace, where its control "
			       "socket is; run ksmctl there (nsenter --net --target %d ksmctl ...)",
			       (int)pid, (int)pid);

	return failure(cmd,
		       "process %d runs no ksmu engine (start it with ksmu-run, or it has not "
		       "asked for merging yet)",
		       (int)pid);
}

/* Split @an into lines and check its bytes.  Return: NULL, or why it is malformed. */
static const char *answer_split(struct ctl_answer *an, char *why, size_t whylen)
{
	size_t i, n = 0;

	if (an->len == 0)
		return "the connection was closed without an answer";
	for (i = 0; i < an->len; i++) {
		unsigned char c = (unsigned char)an->buf[i];

		if (c == '\n')
			n++;
		else if (c < 0x20 || c > 0x7e) {
			snprintf(why, whylen, "byte 0x%02x at offset %zu is not printable ASCII", c,
				 i);
			return why;
		}
	}
	if (an->buf[an->len - 1] != '\n')
		return "the answer is cut short (its last line has no end)";
	an->line = calloc(n, sizeof(*an->line));
	if (!an->line)
		return "out of memory";
	an->line[0] = an->buf;
	for (i = 0; i < an->len; i++) {
		if (an->buf[i] != '\n')
			continue;
		an->buf[i] = '\0';
		if (++an->nlines < n)
			an->line[an->nlines] = an->buf + i + 1;
	}
	return NULL;
}

/*
 * Send @req (one line, with its '\n') to the engine of process @pid and
 * read the whole answer into @an.  Errors are reported here, naming @cmd.
 * Return: 0, or EXIT_FAILURE after a message.
 */
static int ctl_exchange(const struct cmd *cmd, pid_t pid, const char *req, struct ctl_answer *an)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int64_t deadline = now_ms() + CTL_TIMEOUT_MS;
	struct ucred cred;
	socklen_t credlen = sizeof(cred);
	char why[128];
	const char *bad;
	socklen_t salen;
	size_t cap = CTL_ANSWER_MAX + 1;
	int fd, n, ret = EXIT_FAILURE, send_err = 0;
	ssize_t got;

	memset(an, 0, sizeof(*an));
	/* Abstract address: NUL, then the name without a trailing NUL. */
	n = snprintf(sa.sun_path + 1, sizeof(sa.sun_path) - 1, "ksmu/%d", (int)pid);
	salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return failure(cmd, "socket: %s", strerror(errno));
	/* connect() waits while the server's backlog is full: SO_SNDTIMEO bounds it. */
	if (set_timeout(fd, SO_SNDTIMEO, CTL_TIMEOUT_MS) < 0) {
		failure(cmd, "setsockopt: %s", strerror(errno));
		goto out_close;
	}
	if (connect(fd, (struct sockaddr *)&sa, salen) < 0) {
		if (errno == ECONNREFUSED || errno == ENOENT)
			explain_no_engine(cmd, pid);
		else if (errno == EAGAIN || errno == EINPROGRESS)
			failure(cmd,
				"process %d does not accept connections (its control thread is "
				"busy or stuck)",
				(int)pid);
		else
			failure(cmd, "cannot connect to process %d: %s", (int)pid, strerror(errno));
		goto out_close;
	}

	/*
	 * The listener's credentials are those of the process that called
	 * listen(), with its pid as seen from our PID namespace (0 if it is
	 * not visible from here).  Anything but @pid is somebody else's
	 * socket under that name: do not send it a SET.
	 */
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &credlen) < 0) {
		failure(cmd, "SO_PEERCRED: %s", strerror(errno));
		goto out_close;
	}
	if (cred.pid != pid) {
		if (cred.pid > 0)
			failure(cmd, "socket ksmu/%d belongs to process %d, not to process %d; "
				     "ignoring it", (int)pid, (int)cred.pid, (int)pid);
		else
			failure(cmd,
				"socket ksmu/%d belongs to a process outside this PID "
				"namespace, not to process %d; ignoring it",
				(int)pid, (int)pid);
		goto out_close;
	}

	/*
	 * A server that refuses us (ERR EPERM) answers and closes without
	 * reading: then send() may fail with EPIPE, and the refusal is still
	 * there to read.  MSG_NOSIGNAL: no SIGPIPE.
	 */
	if (send(fd, req, strlen(req), MSG_NOSIGNAL) < 0) {
		if (errno != EPIPE && errno != ECONNRESET) {
			failure(cmd, "cannot send to process %d: %s", (int)pid, strerror(errno));
			goto out_close;
		}
		send_err = errno;
	}

	an->buf = malloc(cap + 1);
	if (!an->buf) {
		failure(cmd, "out of memory");
		goto out_close;
	}
	for (;;) {
		int64_t left = deadline - now_ms();

		if (left <= 0 || set_timeout(fd, SO_RCVTIMEO, left) < 0) {
			failure(cmd, "process %d did not answer within %d seconds", (int)pid,
				CTL_TIMEOUT_MS / 1000);
			goto out_free;
		}
		got = recv(fd, an->buf + an->len, cap - an->len, 0);
		if (got == 0)
			break;
		if (got < 0) {
			if (errno == EINTR)
				continue;
			/*
			 * Closing a Unix socket with unread data resets the
			 * connection: what was sent before is still read first.
			 */
			if (errno == ECONNRESET && an->len)
				break;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				failure(cmd, "process %d did not answer within %d seconds",
					(int)pid, CTL_TIMEOUT_MS / 1000);
			else if (send_err && !an->len)
				failure(cmd, "cannot send to process %d: %s", (int)pid,
					strerror(send_err));
			else
				failure(cmd, "cannot read from process %d: %s", (int)pid,
					strerror(errno));
			goto out_free;
		}
		an->len += (size_t)got;
		if (an->len == cap) {
			failure(cmd, "process %d sent a malformed answer: longer than %d bytes",
				(int)pid, CTL_ANSWER_MAX);
			goto out_free;
		}
	}
	an->buf[an->len] = '\0';

	bad = answer_split(an, why, sizeof(why));
	if (bad) {
		failure(cmd, "process %d sent a malformed answer: %s", (int)pid, bad);
		goto out_free;
	}
	ret = 0;
	goto out_close;

out_free:
	answer_free(an);
out_close:
	close(fd);
	return ret;
}

/*
 * The first line of an answer: "OK", or "ERR ERRNO message".  An ERR line
 * is reported here (the server's own words: we checked they are printable).
 * Return: 0 for OK; EXIT_FAILURE after a message otherwise.
 */
static int answer_status_line(const struct cmd *cmd, pid_t pid, const struct ctl_answer *an)
{
	const char *l = an->line[0], *name, *msg;
	size_t nlen;

	if (!strcmp(l, "OK"))
		return 0;
	if (strncmp(l, "ERR", 3) || (l[3] && l[3] != ' '))
		return failure(cmd,
			       "process %d sent a malformed answer: line 1 is neither OK nor ERR",
			       (int)pid);
	name = l[3] ? l + 4 : l + 3;
	nlen = strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789");
	if (nlen == 0 || nlen > 31 || (name[nlen] && name[nlen] != ' ') || an->nlines != 1)
		return failure(cmd, "process %d sent a malformed answer: bad ERR line", (int)pid);
	msg = name[nlen] ? name + nlen + 1 : "";
	if (*msg)
		return failure(cmd, "process %d refused: %s (%.*s)", (int)pid, msg, (int)nlen,
			       name);
	return failure(cmd, "process %d refused: %.*s", (int)pid, (int)nlen, name);
}

/*
 * A parsed STATUS answer.
 * @e:        its NAME VALUE lines, in the order sent (pid, version,
 *            merge_any and preload included)
 * @n:        how many
 * @version, @merge_any, @preload: the header values, checked
 */
struct status {
	struct ctl_entry *e;
	size_t n;
	uint64_t version;
	int merge_any, preload;
};

static const struct ctl_entry *status_find(const struct status *st, const char *name)
{
	size_t i;

	for (i = 0; i < st->n; i++)
		if (!strcmp(st->e[i].name, name))
			return &st->e[i];
	return NULL;
}

/* Is @name one of the header lines (printed apart, top-level keys in JSON)? */
static int is_header(const char *name)
{
	return !strcmp(name, "pid") || !strcmp(name, "version") || !strcmp(name, "merge_any") ||
	       !strcmp(name, "preload");
}

/* "NAME VALUE", split in place.  Return: NULL or why not. */
static const char *parse_entry(char *line, struct ctl_entry *e)
{
	char *sp = strchr(line, ' ');
	const char *v;
	size_t nlen;
	int r;

	if (!sp)
		return "not NAME VALUE";
	*sp = '\0';
	nlen = strspn(line, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.");
	if (nlen == 0 || line[nlen])
		return "bad name";
	if (nlen >= CTL_NAME_MAX)
		return "name too long";
	if (!strncmp(line, "proc.", 5) && !line[5])
		return "empty proc. name";
	e->name = line;
	v = sp + 1;
	e->neg = *v == '-';
	if (e->neg)
		v++;
	/* INT64_MIN's magnitude is INT64_MAX + 1. */
	r = ksmu_parse_decimal(v, e->neg ? (uint64_t)INT64_MAX + 1 : UINT64_MAX, &e->mag);
	if (r == -ERANGE)
		return "value out of range";
	if (r < 0)
		return "value is not a decimal integer";
	if (e->mag == 0)
		e->neg = 0; /* "-0" */
	return NULL;
}

/*
 * Check a STATUS answer (first line OK already) and index its entries.
 * Return: 0, or EXIT_FAILURE after a message.
 */
static int parse_status(const struct cmd *cmd, pid_t pid, struct ctl_answer *an, struct status *st)
{
	static const char *const header[] = { "pid", "version", "merge_any", "preload" };
	const struct ctl_entry *h;
	const char *why = NULL;
	size_t i, j, last = an->nlines - 1;

	memset(st, 0, sizeof(*st));
	if (an->nlines < 2 || strcmp(an->line[last], "END")) {
		why = "no END line";
		goto malformed;
	}
	st->e = calloc(an->nlines, sizeof(*st->e));
	if (!st->e)
		return failure(cmd, "out of memory");
	for (i = 1; i < last; i++) {
		struct ctl_entry *e = &st->e[st->n];

		if (!strcmp(an->line[i], "END")) {
			why = "lines after END";
			goto malformed_line;
		}
		why = parse_entry(an->line[i], e);
		if (why)
			goto malformed_line;
		for (j = 0; j < st->n; j++)
			if (!strcmp(st->e[j].name, e->name)) {
				why = "name sent twice";
				goto malformed_line;
			}
		st->n++;
	}

	for (i = 0; i < sizeof(header) / sizeof(header[0]); i++) {
		h = status_find(st, header[i]);
		if (!h || h->neg) {
			failure(cmd, "process %d sent a malformed answer: %s '%s'", (int)pid,
				h ? "negative" : "no", header[i]);
			goto out_free;
		}
		if (i >= 2 && h->mag > 1) {
			failure(cmd, "process %d sent a malformed answer: %s is not 0 or 1",
				(int)pid, header[i]);
			goto out_free;
		}
	}
	h = status_find(st, "pid");
	if (h->mag != (uint64_t)pid) {
		failure(cmd, "process %d answered for process %llu; ignoring it", (int)pid,
			(unsigned long long)h->mag);
		goto out_free;
	}
	st->version = status_find(st, "version")->mag;
	st->merge_any = (int)status_find(st, "merge_any")->mag;
	st->preload = (int)status_find(st, "preload")->mag;
	return 0;

malformed_line:
	failure(cmd, "process %d sent a malformed answer: line %zu: %s", (int)pid, i + 1, why);
	goto out_free;
malformed:
	failure(cmd, "process %d sent a malformed answer: %s", (int)pid, why);
out_free:
	free(st->e);
	st->e = NULL;
	return EXIT_FAILURE;
}

static void print_value(const struct ctl_entry *e)
{
	printf("%s%llu", e->neg ? "-" : "", (unsigned long long)e->mag);
}

/* The counters of /sys/kernel/mm/ksm, in the kernel's documentation order. */
static const char *const sysfs_counters[] = {
	"pages_shared",	      "pages_sharing",	    "pages_unshared", "pages_volatile",
	"pages_scanned",      "pages_skipped",	    "full_scans",     "stable_node_chains",
	"stable_node_dups",   "ksm_zero_pages",	    "general_profit",
};

#define NSYSFS (sizeof(sysfs_counters) / sizeof(sysfs_counters[0]))

static int is_sysfs_counter(const char *name)
{
	size_t i;

	for (i = 0; i < NSYSFS; i++)
		if (!strcmp(sysfs_counters[i], name))
			return 1;
	return 0;
}

/*
 * A knob is a name that ksmu_set_tunable() would accept with the value it
 * has now (a knob's current value is always valid, a counter is refused
 * whatever the value).  Knobs that only a newer library knows end up with
 * the engine state: they are still shown.
 */
static int is_knob(const struct ctl_entry *e)
{
	if (e->neg || e->mag > ULONG_MAX || is_header(e->name) || !strncmp(e->name, "proc.", 5))
		return 0;
	return ksmu_check_tunable(e->name, (unsigned long)e->mag) == 0;
}

enum group { G_COUNTER, G_KNOB, G_ENGINE, G_PROC, G_NONE };

static enum group entry_group(const struct ctl_entry *e)
{
	if (is_header(e->name))
		return G_NONE;
	if (!strncmp(e->name, "proc.", 5))
		return G_PROC;
	if (is_sysfs_counter(e->name))
		return G_COUNTER;
	if (is_knob(e))
		return G_KNOB;
	return G_ENGINE;
}

static void print_row(const struct ctl_entry *e, const char *name, int width)
{
	size_t len = strlen(name);

	printf("  %-*s  ", width, name);
	print_value(e);
	/* Byte counts: the profits, metadata_bytes.  Below 1 MiB, keep 4 decimals to show any. */
	if ((len > 7 && !strcmp(name + len - 7, "_profit")) ||
	    (len > 6 && !strcmp(name + len - 6, "_bytes")))
		printf(" (%s%.*f MiB)", e->neg ? "-" : "", e->mag >= 1024 * 1024 ? 1 : 4,
		       (double)e->mag / (1024.0 * 1024.0));
	putchar('\n');
}

/* Read /proc/PID/comm for the title; "?" for anything unprintable. */
static void read_comm(pid_t pid, char *buf, size_t len)
{
	char path[64];
	size_t n = 0, i;
	FILE *f;

	buf[0] = '\0';
	snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return;
	n = fread(buf, 1, len - 1, f);
	fclose(f);
	buf[n] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	for (i = 0; buf[i]; i++)
		if ((unsigned char)buf[i] < 0x20 || (unsigned char)buf[i] > 0x7e)
			buf[i] = '?';
}

static void print_title(enum group g, pid_t pid)
{
	switch (g) {
	case G_COUNTER:
		printf("\ncounters (as /sys/kernel/mm/ksm)\n");
		break;
	case G_KNOB:
		printf("\nknobs (ksmctl set --pid %d NAME VALUE)\n", (int)pid);
		break;
	case G_ENGINE:
		printf("\nengine (ksmu)\n");
		break;
	default:
		printf("\nthis process (as /proc/%d/ksm_stat)\n", (int)pid);
		break;
	}
}

static void print_status_text(pid_t pid, const struct status *st)
{
	const struct ctl_entry *e;
	char comm[64];
	int width = 20, g;
	size_t i;

	for (i = 0; i < st->n; i++) {
		int len = (int)strlen(st->e[i].name);

		if (len > width)
			width = len;
	}

	read_comm(pid, comm, sizeof(comm));
	printf("process %d%s%s%s: libksmu %llu.%llu.%llu, %s, merge-any %s\n", (int)pid,
	       *comm ? " (" : "", comm, *comm ? ")" : "", (unsigned long long)(st->version / 10000),
	       (unsigned long long)(st->version / 100 % 100),
	       (unsigned long long)(st->version % 100),
	       st->preload ? "preloaded" : "linked", st->merge_any ? "on" : "off");

	for (g = G_COUNTER; g < G_NONE; g++) {
		int shown = 0;

		if (g == G_COUNTER) {
			/* In the kernel's order, whatever the server's. */
			for (i = 0; i < NSYSFS; i++) {
				e = status_find(st, sysfs_counters[i]);
				if (!e)
					continue;
				if (!shown++)
					print_title(G_COUNTER, pid);
				print_row(e, e->name, width);
			}
			continue;
		}
		for (i = 0; i < st->n; i++) {
			e = &st->e[i];
			if (entry_group(e) != (enum group)g)
				continue;
			if (!shown++)
				print_title((enum group)g, pid);
			print_row(e, g == G_PROC ? e->name + 5 : e->name, width);
		}
	}
}

static void print_json_group(const struct status *st, enum group which)
{
	const char *sep = "";
	size_t i;

	for (i = 0; i < st->n; i++) {
		const struct ctl_entry *e = &st->e[i];
		enum group g = entry_group(e);

		if (g == G_NONE || (which == G_PROC) != (g == G_PROC))
			continue;
		/* Names are [A-Za-z0-9_.] (parse_entry()): nothing to escape. */
		printf("%s\n    \"%s\": ", sep, g == G_PROC ? e->name + 5 : e->name);
		print_value(e);
		sep = ",";
	}
	printf("%s", *sep ? "\n  " : "");
}

static void print_status_json(pid_t pid, const struct status *st)
{
	printf(
	    "{\n  \"pid\": %d,\n  \"version\": %llu,\n  \"merge_any\": %d,\n  \"preload\": %d,\n",
	    (int)pid, (unsigned long long)st->version, st->merge_any, st->preload);
	printf("  \"stats\": {");
	print_json_group(st, G_ENGINE);
	printf("},\n  \"proc\": {");
	print_json_group(st, G_PROC);
	printf("}\n}\n");
}

static int cmd_status(const struct cmd *cmd, int argc, char **argv)
{
	static int json;
	static const struct option opts[] = {
		{ "pid", required_argument, NULL, OPT_PID },
		{ "json", no_argument, &json, 1 },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct ctl_answer an;
	struct cmd_args a;
	struct status st;
	pid_t pid;
	int r;

	r = parse_opts(cmd, argc, argv, opts, 0, &a);
	if (r >= 0)
		return r;
	r = parse_pid(cmd, &a, &pid);
	if (r >= 0)
		return r;

	r = ctl_exchange(cmd, pid, "STATUS\n", &an);
	if (r)
		return r;
	r = answer_status_line(cmd, pid, &an);
	if (r == 0)
		r = parse_status(cmd, pid, &an, &st);
	if (r == 0) {
		if (json)
			print_status_json(pid, &st);
		else
			print_status_text(pid, &st);
		free(st.e);
	}
	answer_free(&an);
	return r;
}

static int cmd_set(const struct cmd *cmd, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "pid", required_argument, NULL, OPT_PID },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	char name[CTL_NAME_MAX], req[CTL_REQUEST_MAX + 2];
	struct ctl_answer an;
	struct cmd_args a;
	uint64_t value;
	size_t i;
	pid_t pid;
	int r;

	r = parse_opts(cmd, argc, argv, opts, 2, &a);
	if (r >= 0)
		return r;
	r = parse_pid(cmd, &a, &pid);
	if (r >= 0)
		return r;
	if (a.nargs == 0)
		return usage_error(cmd, "missing NAME and VALUE");
	if (a.nargs == 1)
		return usage_error(cmd, "missing VALUE for '%s'", a.args[0]);

	/* pages-to-scan is pages_to_scan, as in ksmu-run. */
	if (strlen(a.args[0]) >= sizeof(name))
		return usage_error(cmd, "unknown knob '%s'", a.args[0]);
	for (i = 0; a.args[0][i]; i++)
		name[i] = a.args[0][i] == '-' ? '_' : a.args[0][i];
	name[i] = '\0';
	if (!knob_known(name))
		return usage_error(cmd, "unknown knob '%s' (or a read-only counter)", a.args[0]);
	r = ksmu_parse_decimal(a.args[1], ULONG_MAX, &value);
	if (r == -ERANGE)
		return usage_error(cmd, "value '%s' for %s is too large", a.args[1], name);
	if (r < 0)
		return usage_error(cmd, "invalid value '%s' for %s (want a decimal number)",
				   a.args[1], name);
	if (ksmu_check_tunable(name, (unsigned long)value) < 0)
		return usage_error(cmd, "value %s is out of range for %s (see ksmctl(1))",
				   a.args[1], name);

	snprintf(req, sizeof(req), "SET %s %llu\n", name, (unsigned long long)value);
	r = ctl_exchange(cmd, pid, req, &an);
	if (r)
		return r;
	r = answer_status_line(cmd, pid, &an);
	if (r == 0 && an.nlines != 1)
		r = failure(cmd, "process %d sent a malformed answer: lines after OK", (int)pid);
	answer_free(&an);
	return r;
}

static int cmd_check(const struct cmd *cmd, int argc, char **argv)
{
	static int json;
	static const struct option opts[] = {
		{ "json", no_argument, &json, 1 },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct ksmu_features f;
	char buf[8192];
	int r;

	r = parse_opts(cmd, argc, argv, opts, 0, NULL);
	if (r >= 0)
		return r;

	r = ksmu_probe(&f);
	if (r == 0)
		r = ksmu_probe_describe(&f, buf, sizeof(buf), json);
	if (r < 0) {
		fprintf(stderr, "ksmctl check: %s\n", strerror(-r));
		return EXIT_FAILURE;
	}
	fputs(buf, stdout);
	return EXIT_SUCCESS;
}

static int cmd_version(const struct cmd *cmd, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int r, v;

	r = parse_opts(cmd, argc, argv, opts, 0, NULL);
	if (r >= 0)
		return r;

	v = ksmu_version();
	printf("ksmctl %d.%d.%d\nlibksmu %d.%d.%d\n", KSMU_VERSION_MAJOR, KSMU_VERSION_MINOR,
	       KSMU_VERSION_PATCH, v / 10000, v / 100 % 100, v % 100);
	return EXIT_SUCCESS;
}

static int cmd_help(const struct cmd *cmd, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const struct cmd *about;
	int r;

	/* "help COMMAND" takes one argument, so parse_opts() cannot be used. */
	optind = 0;
	opterr = 0;
	while ((r = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		if (r == 'h') {
			cmd_usage(cmd, stdout);
			return EXIT_SUCCESS;
		}
		return bad_option(cmd, argv);
	}
	if (optind == argc) {
		usage(stdout);
		return EXIT_SUCCESS;
	}
	if (optind + 1 < argc)
		return usage_error(cmd, "unexpected argument '%s'", argv[optind + 1]);
	about = find_cmd(argv[optind]);
	if (!about)
		return usage_error(NULL, "unknown command '%s'", argv[optind]);
	cmd_usage(about, stdout);
	return EXIT_SUCCESS;
}

int main(int argc, char **argv)
{
	const struct cmd *cmd;
	int status;

	if (argc < 2)
		return usage_error(NULL, "missing command");
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))
		cmd = find_cmd("help");
	else if (!strcmp(argv[1], "--version"))
		cmd = find_cmd("version");
	else if (argv[1][0] == '-')
		return usage_error(NULL, "unknown option '%s' (options follow the command)", argv[1]);
	else
		cmd = find_cmd(argv[1]);
	if (!cmd)
		return usage_error(NULL, "unknown command '%s'", argv[1]);

	status = cmd->run(cmd, argc - 1, argv + 1);

	/* A full disk or a closed pipe must not pass for success. */
	if (fflush(stdout) != 0 || ferror(stdout)) {
		if (status == EXIT_SUCCESS)
			fprintf(stderr, "ksmctl: write error: %s\n", strerror(errno));
		return status == EXIT_SUCCESS ? EXIT_FAILURE : status;
	}
	return status;
}
