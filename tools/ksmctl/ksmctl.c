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
 *   Without --pid, status and set, and unmerge, top, export and daemon,
 *   talk to ksmd-user, the host-wide daemon (docs/daemon-protocol.md): a
 *   SOCK_SEQPACKET Unix socket (--socket PATH, else KSMU_DAEMON unless it
 *   is "off", else /run/ksmu/ksmd.sock), one connection per request, one
 *   CTL packet out and one packet back under 2-second timeouts.  The daemon
 *   is trusted no more than an engine: the reply goes through
 *   ksmu_wire_check() (src/wire.c, the validator the daemon runs too), must
 *   be a CTL_REPLY (or an ERROR) carrying our seq, its text must be
 *   printable ASCII, and a STATUS reply is parsed whole before anything is
 *   printed: "KEY VALUE" lines whose keys have one of the documented shapes
 *   (daemon.F, global.F, knob.F, domain.NAME.F, store.ID.F, proc.PID.F,
 *   with F of [a-z0-9_]), each key once, values decimal 64-bit integers
 *   except the three text keys (daemon.version, store.ID.domain,
 *   proc.PID.domain).  Fields ksmctl does not know are kept and shown, in
 *   JSON and Prometheus output at least.  Text reaches JSON and Prometheus
 *   escaped.
 *
 *   status and set without --pid and without a daemon: before the daemon,
 *   both were usage errors ("missing --pid"); when no socket was named
 *   (neither --socket nor KSMU_DAEMON) and the default one does not exist,
 *   they still are, and the message says that no daemon was found either.
 *
 *   ksmctl is a program, not the library: it prints.  It uses only the
 *   public API of libksmu (ksmu.h), and never starts an engine in its own
 *   process: the only library calls are ksmu_probe(), ksmu_probe_describe(),
 *   ksmu_version() and ksmu_check_tunable(), none of which does.  (The
 *   wire validator, src/wire.c, is compiled into ksmctl itself: libksmu
 *   does not export it.)
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ksmu.h"
#include "parse.h"
#include "wire.h"

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
	const char *details; /* options, for "ksmctl help COMMAND"; NULL if none */
};

static int cmd_check(const struct cmd *cmd, int argc, char **argv);
static int cmd_status(const struct cmd *cmd, int argc, char **argv);
static int cmd_set(const struct cmd *cmd, int argc, char **argv);
static int cmd_unmerge(const struct cmd *cmd, int argc, char **argv);
static int cmd_top(const struct cmd *cmd, int argc, char **argv);
static int cmd_export(const struct cmd *cmd, int argc, char **argv);
static int cmd_daemon(const struct cmd *cmd, int argc, char **argv);
static int cmd_version(const struct cmd *cmd, int argc, char **argv);
static int cmd_help(const struct cmd *cmd, int argc, char **argv);

#define SOCKET_HELP                                                                         \
	"  --socket PATH  ksmd-user's socket (default: $KSMU_DAEMON unless it is \"off\",\n" \
	"                 else /run/ksmu/ksmd.sock)\n"

static const struct cmd cmds[] = {
	{ "check", "[--json]", "report which kernel features ksmu can use, and what it does with them",
	  cmd_check, "  --json         one JSON object\n" },
	{ "status", "[--pid PID | --socket PATH] [--json]",
	  "show the counters and knobs of ksmd-user, or of the engine in process PID", cmd_status,
	  "  --pid PID      the engine running in process PID (its control socket)\n" SOCKET_HELP
	  "  --json         one JSON object\n" },
	{ "set", "[--pid PID | --socket PATH] NAME VALUE",
	  "set knob NAME to VALUE: host default (ksmd-user), or in process PID", cmd_set,
	  "  --pid PID      the engine running in process PID only\n" SOCKET_HELP },
	{ "unmerge", "[--socket PATH]", "ask every agent of ksmd-user to unmerge all its pages",
	  cmd_unmerge, SOCKET_HELP },
	{ "top", "[--socket PATH] [--interval MS] [--count N]",
	  "show ksmd-user's status, refreshed, with rates per second", cmd_top,
	  SOCKET_HELP "  --interval MS  between refreshes (default 1000)\n"
		      "  --count N      stop after N refreshes (default: until interrupted)\n" },
	{ "export", "[--socket PATH] --prometheus [--output FILE] | --listen ADDR:PORT",
	  "ksmd-user's status as Prometheus metrics: printed, written, or served", cmd_export,
	  SOCKET_HELP "  --prometheus   Prometheus text format (the only format)\n"
		      "  --output FILE  write FILE atomically (FILE.tmp, then rename) instead of\n"
		      "                 standard output: for the node exporter textfile collector\n"
		      "  --listen ADDR:PORT\n"
		      "                 serve GET /metrics over HTTP on a loopback address\n"
		      "                 (127.0.0.1:9464, [::1]:9464, localhost:9464) until killed\n" },
	{ "daemon", "[--socket PATH] [--log FILE] [--exec FILE] [-- ARGS...]",
	  "start ksmd-user in the background and wait until it answers", cmd_daemon,
	  SOCKET_HELP "  --log FILE     append ksmd-user's output to FILE (default: discard it)\n"
		      "  --exec FILE    run FILE (default: ksmd-user next to ksmctl, else in PATH)\n"
		      "  -- ARGS...     more arguments for ksmd-user (--config FILE, ...)\n" },
	{ "version", "", "print the versions of ksmctl and of the libksmu in use", cmd_version, NULL },
	{ "help", "[COMMAND]", "print this help, or the help of COMMAND", cmd_help, NULL },
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
	size_t i;

	fprintf(out, "Usage: ksmctl COMMAND [OPTIONS]\n\n"
		     "Inspect and control ksmu, the user-space page deduplication engine, and\n"
		     "ksmd-user, its host-wide daemon.\n\n"
		     "Commands:\n");
	/* Synopses are long: each on its line, the summary under it. */
	for (i = 0; i < NCMDS; i++)
		fprintf(out, "  %s%s%s\n      %s\n", cmds[i].name, *cmds[i].args ? " " : "",
			cmds[i].args, cmds[i].summary);
	fprintf(out, "\nEvery command accepts -h, --help.  See ksmctl(1) and ksmd-user(8).\n");
}

static void cmd_usage(const struct cmd *cmd, FILE *out)
{
	fprintf(out, "Usage: ksmctl %s%s%s\n%s\n", cmd->name, *cmd->args ? " " : "", cmd->args,
		cmd->summary);
	if (cmd->details)
		fprintf(out, "\nOptions:\n%s", cmd->details);
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

/* getopt_long() values of the options with an argument (beyond any character). */
enum {
	OPT_PID = 256,
	OPT_SOCKET,
	OPT_INTERVAL,
	OPT_COUNT,
	OPT_OUTPUT,
	OPT_LISTEN,
	OPT_LOG,
	OPT_EXEC,
};

/*
 * What parse_opts() found besides flags.
 * @pid:  the argument of --pid, NULL if the option was not given
 * @socket, @interval, @count, @output, @listen, @log, @exec: likewise
 * @args: the positional arguments (they follow the options)
 * @nargs: how many
 * @dashdash: they follow a "--"
 */
struct cmd_args {
	const char *pid;
	const char *socket;
	const char *interval;
	const char *count;
	const char *output;
	const char *listen;
	const char *log;
	const char *exec;
	char **args;
	int nargs;
	int dashdash;
};

/*
 * Parse a command's options.  @longopts' flag pointers receive the flags;
 * the options with an argument (val OPT_*) are stored in @a; -h/--help is
 * handled here.  Up to @max_args positional arguments are accepted into @a
 * (which may be NULL when @max_args is 0 and there are no OPT_* options).
 * Returns -1 to go on, or an exit status.
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
		case OPT_SOCKET:
			a->socket = optarg;
			break;
		case OPT_INTERVAL:
			a->interval = optarg;
			break;
		case OPT_COUNT:
			a->count = optarg;
			break;
		case OPT_OUTPUT:
			a->output = optarg;
			break;
		case OPT_LISTEN:
			a->listen = optarg;
			break;
		case OPT_LOG:
			a->log = optarg;
			break;
		case OPT_EXEC:
			a->exec = optarg;
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
		a->dashdash = optind > 1 && !strcmp(argv[optind - 1], "--");
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

/* ------------------------------------------------------------ ksmd-user */

#define DAEMON_SOCKET "/run/ksmu/ksmd.sock"
#define DAEMON_TIMEOUT_MS 2000 /* connect, send, and recv, each */
#define DAEMON_START_MS 5000   /* ksmctl daemon: wait for the first answer */
#define DKEY_MAX 127	       /* longest key accepted in a STATUS reply */
#define DWORD_MAX 63	       /* longest text value */

/*
 * Where ksmd-user listens.
 * @path:     socket path (fits sun_path with its NUL)
 * @implicit: the default path, neither --socket nor KSMU_DAEMON named one
 */
struct daemon_addr {
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	int implicit;
};

/* Results of a request (the message is in the caller's buffer). */
enum { DREQ_OK = 0, DREQ_NOENT, DREQ_FAIL };

static uint32_t daemon_seq;

/* --socket, else KSMU_DAEMON (unless "off"), else the default.  Returns -1 to go on, or an exit status. */
static int resolve_socket(const struct cmd *cmd, const char *opt, struct daemon_addr *d)
{
	const char *env = getenv("KSMU_DAEMON"), *p, *from = "--socket";

	d->implicit = 0;
	if (opt) {
		p = opt;
	} else if (env && *env && strcmp(env, "off")) {
		p = env;
		from = "KSMU_DAEMON";
	} else {
		p = DAEMON_SOCKET;
		d->implicit = 1;
	}
	if (!*p)
		return usage_error(cmd, "empty socket path (%s)", from);
	if (strlen(p) >= sizeof(d->path))
		return usage_error(cmd, "socket path '%s' (%s) is too long: at most %zu bytes", p,
				   from, sizeof(d->path) - 1);
	strcpy(d->path, p);
	return -1;
}

/* Say which rule of ksmu_wire_check() a packet broke, for the message. */
static void wire_why(const unsigned char *buf, size_t n, int r, char *why, size_t len)
{
	struct ksmu_wire_hdr h;

	if (n < sizeof(h)) {
		snprintf(why, len, "a packet of %zu bytes, shorter than a message header", n);
		return;
	}
	memcpy(&h, buf, sizeof(h));
	if (h.magic != KSMU_WIRE_MAGIC)
		snprintf(why, len, "bad magic 0x%08x (want 0x%08x)", (unsigned)h.magic,
			 KSMU_WIRE_MAGIC);
	else if (h.type == 0 || h.type > KSMU_MSG_TYPE_MAX)
		snprintf(why, len, "unknown message type %u", (unsigned)h.type);
	else if (h.len != n)
		snprintf(why, len, "the header says %u bytes, the packet has %zu",
			 (unsigned)h.len, n);
	else if (h.flags && h.type != KSMU_MSG_LOOKUP)
		snprintf(why, len, "flags 0x%x on a %s message", (unsigned)h.flags,
			 ksmu_wire_type_name(h.type));
	else if ((h.type == KSMU_MSG_CTL || h.type == KSMU_MSG_CTL_REPLY) && n == sizeof(h))
		snprintf(why, len, "an empty %s text", ksmu_wire_type_name(h.type));
	else if ((h.type == KSMU_MSG_CTL || h.type == KSMU_MSG_CTL_REPLY) &&
		 memchr(buf + sizeof(h), 0, n - sizeof(h)))
		snprintf(why, len, "a NUL byte in the %s text", ksmu_wire_type_name(h.type));
	else
		snprintf(why, len, "a bad %s message (%s)", ksmu_wire_type_name(h.type),
			 strerror(-r));
}

/*
 * daemon_request() - send the CTL request @req to ksmd-user at @path and
 * return its CTL_REPLY text in *@reply (malloc'd, NUL-terminated, checked:
 * printable ASCII and '\n' only).  An ERROR reply, a malformed or
 * unexpected packet, a timeout or a closed connection are failures.
 * Return: DREQ_OK; DREQ_NOENT (no socket at @path) or DREQ_FAIL with a
 * message "no ksmd-user at PATH: ..." or "ksmd-user at PATH ..." in @err.
 */
static int daemon_request(const char *path, const char *req, char **reply, char *err,
			  size_t errlen)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t rlen = strlen(req), blen, i;
	struct ksmu_wire_hdr h;
	unsigned char *pkt;
	char why[160];
	uint32_t seq = ++daemon_seq;
	ssize_t got;
	int fd, r, ret = DREQ_FAIL;

	*reply = NULL;
	strcpy(sa.sun_path, path); /* resolve_socket() checked the length */
	pkt = malloc(KSMU_WIRE_MAX + 1);
	if (!pkt) {
		snprintf(err, errlen, "out of memory");
		return DREQ_FAIL;
	}
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		goto out_free;
	}
	/* SO_SNDTIMEO bounds connect() too (a full backlog) and send(). */
	if (set_timeout(fd, SO_SNDTIMEO, DAEMON_TIMEOUT_MS) < 0 ||
	    set_timeout(fd, SO_RCVTIMEO, DAEMON_TIMEOUT_MS) < 0) {
		snprintf(err, errlen, "setsockopt: %s", strerror(errno));
		goto out_close;
	}
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		if (errno == EAGAIN || errno == EINPROGRESS)
			snprintf(err, errlen,
				 "ksmd-user at %s does not accept connections (none within %d s)",
				 path, DAEMON_TIMEOUT_MS / 1000);
		else
			snprintf(err, errlen, "no ksmd-user at %s: %s", path, strerror(errno));
		if (errno == ENOENT)
			ret = DREQ_NOENT;
		goto out_close;
	}

	if (rlen == 0 || rlen > KSMU_WIRE_MAX_TEXT) { /* our own requests: never */
		snprintf(err, errlen, "request too long");
		goto out_close;
	}
	ksmu_wire_hdr_init(&h, KSMU_MSG_CTL, (uint32_t)(sizeof(h) + rlen), seq);
	memcpy(pkt, &h, sizeof(h));
	memcpy(pkt + sizeof(h), req, rlen);
	if (send(fd, pkt, sizeof(h) + rlen, MSG_NOSIGNAL) < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			snprintf(err, errlen, "ksmd-user at %s did not take the request within %d s",
				 path, DAEMON_TIMEOUT_MS / 1000);
		else
			snprintf(err, errlen, "cannot send to ksmd-user at %s: %s", path,
				 strerror(errno));
		goto out_close;
	}

	/* MSG_TRUNC: the packet's real size, even if it is larger than the buffer. */
	do
		got = recv(fd, pkt, KSMU_WIRE_MAX + 1, MSG_TRUNC);
	while (got < 0 && errno == EINTR);
	if (got < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			snprintf(err, errlen, "ksmd-user at %s did not answer within %d s", path,
				 DAEMON_TIMEOUT_MS / 1000);
		else if (errno == ECONNRESET)
			snprintf(err, errlen,
				 "ksmd-user at %s closed the connection without a reply", path);
		else
			snprintf(err, errlen, "cannot read from ksmd-user at %s: %s", path,
				 strerror(errno));
		goto out_close;
	}
	if (got == 0) {
		snprintf(err, errlen, "ksmd-user at %s closed the connection without a reply",
			 path);
		goto out_close;
	}
	if ((size_t)got > KSMU_WIRE_MAX) {
		snprintf(err, errlen,
			 "ksmd-user at %s sent a malformed reply: a packet of %zd bytes, more "
			 "than the %zu allowed",
			 path, got, (size_t)KSMU_WIRE_MAX);
		goto out_close;
	}
	r = ksmu_wire_check(pkt, (size_t)got);
	if (r < 0) {
		wire_why(pkt, (size_t)got, r, why, sizeof(why));
		snprintf(err, errlen, "ksmd-user at %s sent a malformed reply: %s", path, why);
		goto out_close;
	}
	memcpy(&h, pkt, sizeof(h));
	if (h.type != KSMU_MSG_CTL_REPLY && h.type != KSMU_MSG_ERROR) {
		snprintf(err, errlen,
			 "ksmd-user at %s sent a malformed reply: a %s message (type %u), not "
			 "CTL_REPLY",
			 path, ksmu_wire_type_name(h.type), (unsigned)h.type);
		goto out_close;
	}
	if (h.seq != seq) {
		snprintf(err, errlen,
			 "ksmd-user at %s sent a malformed reply: seq %u, but the request was %u",
			 path, (unsigned)h.seq, (unsigned)seq);
		goto out_close;
	}
	if (h.type == KSMU_MSG_ERROR) {
		struct ksmu_wire_error e;

		memcpy(&e, pkt + sizeof(h), sizeof(e));
		snprintf(err, errlen, "ksmd-user at %s refused the request: %s", path,
			 strerror(e.err));
		goto out_close;
	}
	blen = (size_t)got - sizeof(h);
	for (i = 0; i < blen; i++) {
		unsigned char c = pkt[sizeof(h) + i];

		if (c != '\n' && (c < 0x20 || c > 0x7e)) {
			snprintf(err, errlen,
				 "ksmd-user at %s sent a malformed reply: byte 0x%02x at offset %zu "
				 "of the text is not printable ASCII",
				 path, c, i);
			goto out_close;
		}
	}
	*reply = malloc(blen + 1);
	if (!*reply) {
		snprintf(err, errlen, "out of memory");
		goto out_close;
	}
	memcpy(*reply, pkt + sizeof(h), blen);
	(*reply)[blen] = '\0';
	ret = DREQ_OK;
out_close:
	close(fd);
out_free:
	free(pkt);
	return ret;
}

/*
 * Is @text an "ERR ERRNAME [message]" reply (one line, one final '\n'
 * allowed)?  Return: 0 if it is not; 1 if it is, with the refusal, or why
 * the reply is malformed, in @err.
 */
static int reply_is_err(const char *path, const char *text, char *err, size_t errlen)
{
	size_t nlen, mlen, llen = strcspn(text, "\n");
	const char *name, *msg;

	if (strncmp(text, "ERR", 3) || (llen > 3 && text[3] != ' '))
		return 0;
	name = text + (llen > 3 ? 4 : 3);
	nlen = strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789");
	msg = name + nlen + (name[nlen] == ' ');
	mlen = (size_t)(text + llen - msg);
	if (nlen == 0 || nlen > 31 || (name[nlen] != ' ' && name + nlen != text + llen) ||
	    (text[llen] && text[llen + 1])) {
		snprintf(err, errlen, "ksmd-user at %s sent a malformed reply: bad ERR reply", path);
		return 1;
	}
	if (mlen)
		snprintf(err, errlen, "ksmd-user at %s refused: %.*s (%.*s)", path, (int)mlen, msg,
			 (int)nlen, name);
	else
		snprintf(err, errlen, "ksmd-user at %s refused: %.*s", path, (int)nlen, name);
	return 1;
}

/* The one-line replies, "OK" or "OK N": drop one final '\n'. */
static void chomp(char *text)
{
	size_t n = strlen(text);

	if (n && text[n - 1] == '\n')
		text[n - 1] = '\0';
}

/* ------------------------------------------------------------ STATUS of ksmd-user */

enum dkind { DK_DAEMON, DK_GLOBAL, DK_KNOB, DK_DOMAIN, DK_STORE, DK_PROC, DK_N };

static const char *const dkind_prefix[DK_N] = { "daemon.", "global.", "knob.",
						"domain.", "store.",  "proc." };
static const char *const dkind_json[DK_N] = { "daemon",	 "global", "knob",
					      "domains", "stores", "processes" };

/*
 * One line of a STATUS reply.
 * @key:   the whole key, NUL-terminated (in the reply text)
 * @id:    DK_DOMAIN, DK_STORE, DK_PROC: the NAME, ID or PID part of the key
 *         (@idlen bytes, not terminated); "" otherwise
 * @field: the key's last part, [a-z0-9_]+ (a suffix of @key)
 * @text:  the value, when the key is a text key; NULL for a number
 * @neg, @mag: a number's sign and magnitude (<= INT64_MAX + 1 when @neg)
 * @kind:  the key's shape
 * @obj:   index of its object in struct dstatus (DK_DOMAIN..DK_PROC)
 * @next:  the next entry of the same object, or SIZE_MAX
 */
struct dentry {
	const char *key;
	const char *id;
	size_t idlen;
	const char *field;
	const char *text;
	int neg;
	uint64_t mag;
	enum dkind kind;
	size_t obj;
	size_t next;
};

/* A domain, store or process: @kind, @id/@idlen, its entries from @first to @last. */
struct dobj {
	enum dkind kind;
	const char *id;
	size_t idlen;
	size_t first, last;
};

/*
 * A parsed STATUS reply.
 * @text: the reply, split in place (owned)
 * @e, @n: its entries, in the order sent
 * @o, @no: the domains, stores and processes, in the order first named
 */
struct dstatus {
	char *text;
	struct dentry *e;
	size_t n;
	struct dobj *o;
	size_t no;
};

static void dstatus_free(struct dstatus *st)
{
	free(st->text);
	free(st->e);
	free(st->o);
	memset(st, 0, sizeof(*st));
}

static int is_text_key(enum dkind k, const char *field)
{
	return (k == DK_DAEMON && !strcmp(field, "version")) ||
	       ((k == DK_STORE || k == DK_PROC) && !strcmp(field, "domain"));
}

static int all_of(const char *s, size_t n, const char *set)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!s[i] || !strchr(set, s[i]))
			return 0;
	return 1;
}

#define LOWER_DIGITS "abcdefghijklmnopqrstuvwxyz0123456789"

/* A decimal with no leading zero, 1..@max. */
static int valid_id(const char *s, size_t n, uint64_t max)
{
	char buf[24];
	uint64_t v;

	if (n == 0 || n >= sizeof(buf) || s[0] == '0')
		return 0;
	memcpy(buf, s, n);
	buf[n] = '\0';
	return ksmu_parse_decimal(buf, max, &v) == 0;
}

/* A domain name: 1-31 of [A-Za-z0-9_.-], or "uid:N" (the implicit domains). */
static int valid_domain(const char *s, size_t n)
{
	if (n == 0 || n > 31)
		return 0;
	if (n > 4 && !strncmp(s, "uid:", 4))
		return (n == 5 && s[4] == '0') || valid_id(s + 4, n - 4, 0xffffffffu);
	return all_of(s, n, LOWER_DIGITS "ABCDEFGHIJKLMNOPQRSTUVWXYZ_.-");
}

/* "KEY VALUE" of a STATUS reply, split in place into @e.  Return: NULL or why not. */
static const char *parse_dline(char *line, struct dentry *e, char *why, size_t whylen)
{
	char *sp = strchr(line, ' '), *val, *rest, *dot;
	size_t plen = 0;
	int k, r;

	memset(e, 0, sizeof(*e));
	if (!*line)
		return "an empty line";
	if (!sp)
		return "not KEY VALUE";
	*sp = '\0';
	val = sp + 1;
	if (strlen(line) > DKEY_MAX)
		return "key too long";
	for (k = 0; k < DK_N; k++) {
		plen = strlen(dkind_prefix[k]);
		if (!strncmp(line, dkind_prefix[k], plen))
			break;
	}
	if (k == DK_N)
		goto bad_shape;
	e->key = line;
	e->kind = (enum dkind)k;
	rest = line + plen;
	e->id = "";
	if (k == DK_DAEMON || k == DK_GLOBAL || k == DK_KNOB) {
		e->field = rest;
	} else {
		/* Domain names may hold dots; fields do not: split at the last one. */
		dot = strrchr(rest, '.');
		if (!dot)
			goto bad_shape;
		e->id = rest;
		e->idlen = (size_t)(dot - rest);
		e->field = dot + 1;
		if (k == DK_DOMAIN ? !valid_domain(e->id, e->idlen)
				   : !valid_id(e->id, e->idlen, k == DK_STORE ? UINT32_MAX : INT_MAX))
			goto bad_shape;
	}
	if (!*e->field || !all_of(e->field, strlen(e->field), LOWER_DIGITS "_"))
		goto bad_shape;

	if (!*val) {
		snprintf(why, whylen, "no value for %s", line);
		return why;
	}
	if (*val == ' ') {
		snprintf(why, whylen, "more than one blank after %s", line);
		return why;
	}
	if (strchr(val, ' ')) {
		snprintf(why, whylen, "more than one value for %s", line);
		return why;
	}
	if (is_text_key(e->kind, e->field)) {
		size_t n = strlen(val);

		if (e->kind == DK_DAEMON ? n > DWORD_MAX : !valid_domain(val, n)) {
			snprintf(why, whylen, "bad %s '%.64s'",
				 e->kind == DK_DAEMON ? "version" : "domain name", val);
			return why;
		}
		e->text = val;
		return NULL;
	}
	e->neg = *val == '-';
	/* INT64_MIN's magnitude is INT64_MAX + 1. */
	r = ksmu_parse_decimal(val + e->neg, e->neg ? (uint64_t)INT64_MAX + 1 : UINT64_MAX,
			       &e->mag);
	if (r == -ERANGE) {
		snprintf(why, whylen, "value of %s out of range", line);
		return why;
	}
	if (r < 0) {
		snprintf(why, whylen, "value of %s is not a decimal integer: '%.32s'", line, val);
		return why;
	}
	if (e->mag == 0)
		e->neg = 0; /* "-0" */
	return NULL;

bad_shape:
	snprintf(why, whylen, "unknown key shape '%.64s'", line);
	return why;
}

static int cmp_key(const void *a, const void *b)
{
	return strcmp((*(const struct dentry *const *)a)->key,
		      (*(const struct dentry *const *)b)->key);
}

/* The object of @e (created on first use).  Return: its index, or SIZE_MAX (no memory). */
static size_t dobj_of(struct dstatus *st, size_t cap, const struct dentry *e)
{
	size_t i;

	/* Lines of one object usually come together: try the last one first. */
	for (i = st->no; i-- > 0;) {
		const struct dobj *o = &st->o[i];

		if (o->kind == e->kind && o->idlen == e->idlen && !memcmp(o->id, e->id, e->idlen))
			return i;
	}
	if (st->no == cap)
		return SIZE_MAX;
	st->o[st->no] = (struct dobj){ e->kind, e->id, e->idlen, SIZE_MAX, SIZE_MAX };
	return st->no++;
}

static const struct dentry *dfind(const struct dstatus *st, enum dkind k, const char *field)
{
	size_t i;

	for (i = 0; i < st->n; i++)
		if (st->e[i].kind == k && !strcmp(st->e[i].field, field))
			return &st->e[i];
	return NULL;
}

static const struct dentry *dobj_field(const struct dstatus *st, size_t obj, const char *field)
{
	size_t i;

	for (i = st->o[obj].first; i != SIZE_MAX; i = st->e[i].next)
		if (!strcmp(st->e[i].field, field))
			return &st->e[i];
	return NULL;
}

/*
 * Parse the STATUS reply @text (taken over) into @st.  Return: 0, or -1
 * with why it is malformed in @why.
 */
static int dstatus_parse(struct dstatus *st, char *text, char *why, size_t whylen)
{
	struct dentry **sorted = NULL;
	const struct dentry *d;
	size_t nlines = 1, i, len = strlen(text);
	char *line, *nl, what[160];
	const char *bad;

	memset(st, 0, sizeof(*st));
	st->text = text;
	/* One final '\n' is allowed, and no empty line anywhere. */
	if (len && text[len - 1] == '\n')
		text[--len] = '\0';
	for (i = 0; i < len; i++)
		nlines += text[i] == '\n';
	st->e = calloc(nlines, sizeof(*st->e));
	st->o = calloc(nlines, sizeof(*st->o));
	sorted = calloc(nlines, sizeof(*sorted));
	if (!st->e || !st->o || !sorted) {
		snprintf(why, whylen, "out of memory");
		goto fail;
	}
	for (line = text, i = 0; line; line = nl, i++) {
		struct dentry *e = &st->e[st->n];

		nl = strchr(line, '\n');
		if (nl)
			*nl++ = '\0';
		bad = parse_dline(line, e, what, sizeof(what));
		if (bad) {
			snprintf(why, whylen, "line %zu: %s", i + 1, bad);
			goto fail;
		}
		e->next = SIZE_MAX;
		e->obj = SIZE_MAX;
		if (e->kind >= DK_DOMAIN) {
			struct dobj *o;

			e->obj = dobj_of(st, nlines, e);
			o = &st->o[e->obj];
			if (o->last == SIZE_MAX)
				o->first = st->n;
			else
				st->e[o->last].next = st->n;
			o->last = st->n;
		}
		sorted[st->n] = e;
		st->n++;
	}
	qsort(sorted, st->n, sizeof(*sorted), cmp_key);
	for (i = 1; i < st->n; i++)
		if (!strcmp(sorted[i - 1]->key, sorted[i]->key)) {
			snprintf(why, whylen, "%.64s sent twice", sorted[i]->key);
			goto fail;
		}

	/* What the rest of ksmctl relies on. */
	if (!dfind(st, DK_DAEMON, "version")) {
		snprintf(why, whylen, "no daemon.version");
		goto fail;
	}
	d = dfind(st, DK_DAEMON, "pid");
	if (!d || d->neg || d->mag == 0 || d->mag > INT_MAX) {
		snprintf(why, whylen, d ? "bad daemon.pid" : "no daemon.pid");
		goto fail;
	}
	for (i = 0; i < st->n; i++) {
		const struct dentry *e = &st->e[i];

		if (e->kind == DK_PROC && !strcmp(e->field, "connected") && (e->neg || e->mag > 1)) {
			snprintf(why, whylen, "%s is not 0 or 1", e->key);
			goto fail;
		}
	}
	free(sorted);
	return 0;
fail:
	free(sorted);
	dstatus_free(st);
	return -1;
}

/*
 * Fetch and parse ksmd-user's STATUS.  Return: DREQ_OK, or DREQ_NOENT /
 * DREQ_FAIL with the message in @err.
 */
static int daemon_status(const struct daemon_addr *d, struct dstatus *st, char *err,
			 size_t errlen)
{
	char *text, why[256];
	int r;

	memset(st, 0, sizeof(*st));
	r = daemon_request(d->path, "STATUS", &text, err, errlen);
	if (r != DREQ_OK)
		return r;
	if (reply_is_err(d->path, text, err, errlen)) {
		free(text);
		return DREQ_FAIL;
	}
	if (dstatus_parse(st, text, why, sizeof(why)) < 0) {
		snprintf(err, errlen, "ksmd-user at %s sent a malformed STATUS reply: %s", d->path,
			 why);
		return DREQ_FAIL;
	}
	return DREQ_OK;
}

/* Report a failure of the daemon channel.  Return: EXIT_FAILURE. */
static int daemon_failure(const char *err)
{
	fprintf(stderr, "ksmctl: %s\n", err);
	return EXIT_FAILURE;
}

/* The commands' daemon halves (below, with the other daemon commands). */
static int daemon_status_cmd(const struct cmd *cmd, const struct cmd_args *a, int json);
static int daemon_set(const struct cmd *cmd, const struct cmd_args *a, const char *name,
		      uint64_t value);

/* ---- the words */

/* A value as text: the text, or the number. */
static const char *dval(const struct dentry *e, char *buf, size_t len)
{
	if (!e)
		return "-";
	if (e->text)
		return e->text;
	snprintf(buf, len, "%s%llu", e->neg ? "-" : "", (unsigned long long)e->mag);
	return buf;
}

/* Byte counts get MiB too (as print_row()). */
static int is_bytes(const char *field)
{
	size_t len = strlen(field);

	return (len >= 6 && !strcmp(field + len - 6, "profit")) ||
	       (len >= 5 && !strcmp(field + len - 5, "bytes"));
}

static void drow(const char *name, const struct dentry *e)
{
	char buf[32];

	printf("  %-20s  %s", name, dval(e, buf, sizeof(buf)));
	if (!e->text && is_bytes(e->field))
		printf(" (%s%.*f MiB)", e->neg ? "-" : "", e->mag >= 1024 * 1024 ? 1 : 4,
		       (double)e->mag / (1024.0 * 1024.0));
	putchar('\n');
}

/* The global block, in the order of /sys/kernel/mm/ksm first. */
static const char *const global_first[] = {
	"pages_shared", "pages_sharing", "pages_unshared", "general_profit", "store_pages",
	"store_bytes",
};

#define NGLOBAL_FIRST (sizeof(global_first) / sizeof(global_first[0]))

static int in_list(const char *const *list, size_t n, const char *s)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!strcmp(list[i], s))
			return 1;
	return 0;
}

/* daemon.* shown in the title line rather than in the global block. */
static const char *const daemon_title[] = { "version", "pid", "uptime_ms" };

#define NDAEMON_TITLE (sizeof(daemon_title) / sizeof(daemon_title[0]))

#define MAX_COLS 24

/*
 * A table of the objects of @kind: the identifier, then the fields @fixed,
 * then (if @extras) the other fields in the order first seen.
 */
static void print_table(const struct dstatus *st, enum dkind kind, const char *title,
			const char *idname, const char *const *fixed, size_t nfixed, int extras)
{
	const char *col[MAX_COLS];
	int width[MAX_COLS + 1], left[MAX_COLS + 1];
	size_t ncol = 0, i, j, o, nrows = 0;
	char buf[32], head[48];

	for (i = 0; i < nfixed && ncol < MAX_COLS; i++)
		col[ncol++] = fixed[i];
	for (i = 0; extras && i < st->n && ncol < MAX_COLS; i++)
		if (st->e[i].kind == kind && !in_list(col, ncol, st->e[i].field))
			col[ncol++] = st->e[i].field;
	for (o = 0; o < st->no; o++)
		nrows += st->o[o].kind == kind;
	if (!nrows) {
		printf("\n%s: none\n", title);
		return;
	}

	width[0] = (int)strlen(idname);
	left[0] = kind == DK_DOMAIN;
	for (j = 0; j < ncol; j++) {
		width[j + 1] = (int)strlen(col[j]);
		left[j + 1] = is_text_key(kind, col[j]);
	}
	for (o = 0; o < st->no; o++) {
		if (st->o[o].kind != kind)
			continue;
		if ((int)st->o[o].idlen > width[0])
			width[0] = (int)st->o[o].idlen;
		for (j = 0; j < ncol; j++) {
			int w = (int)strlen(dval(dobj_field(st, o, col[j]), buf, sizeof(buf)));

			if (w > width[j + 1])
				width[j + 1] = w;
		}
	}

	printf("\n%s\n  %-*s", title, width[0], idname);
	for (j = 0; j < ncol; j++) {
		for (i = 0; col[j][i] && i < sizeof(head) - 1; i++)
			head[i] = (char)(col[j][i] >= 'a' && col[j][i] <= 'z' ? col[j][i] - 32
									      : col[j][i]);
		head[i] = '\0';
		printf("  %*s", left[j + 1] ? -width[j + 1] : width[j + 1], head);
	}
	putchar('\n');
	for (o = 0; o < st->no; o++) {
		if (st->o[o].kind != kind)
			continue;
		printf("  %*.*s", left[0] ? -width[0] : width[0], (int)st->o[o].idlen, st->o[o].id);
		for (j = 0; j < ncol; j++)
			printf("  %*s", left[j + 1] ? -width[j + 1] : width[j + 1],
			       dval(dobj_field(st, o, col[j]), buf, sizeof(buf)));
		putchar('\n');
	}
}

static void print_uptime(uint64_t ms)
{
	uint64_t s = ms / 1000;

	if (s >= 86400)
		printf("%llud ", (unsigned long long)(s / 86400));
	printf("%02llu:%02llu:%02llu", (unsigned long long)(s / 3600 % 24),
	       (unsigned long long)(s / 60 % 60), (unsigned long long)(s % 60));
}

static void print_dstatus_text(const struct daemon_addr *d, const struct dstatus *st)
{
	static const char *const domain_cols[] = { "clients", "store_pages" };
	static const char *const store_cols[] = { "domain", "node", "pages" };
	static const char *const proc_cols[] = { "uid",		  "domain",	  "connected",
						 "grants",	  "pages_sharing", "remote_pages",
						 "merges",	  "cow_breaks",	  "general_profit" };
	const struct dentry *e;
	size_t i;
	int shown = 0;

	printf("ksmd-user %s, pid %llu", dfind(st, DK_DAEMON, "version")->text,
	       (unsigned long long)dfind(st, DK_DAEMON, "pid")->mag);
	e = dfind(st, DK_DAEMON, "uptime_ms");
	if (e && !e->neg) {
		printf(", up ");
		print_uptime(e->mag);
	}
	printf(", socket %s\n", d->path);

	printf("\nglobal (names as /sys/kernel/mm/ksm, over all agents)\n");
	for (i = 0; i < NGLOBAL_FIRST; i++) {
		e = dfind(st, DK_GLOBAL, global_first[i]);
		if (e)
			drow(e->field, e);
	}
	for (i = 0; i < st->n; i++) {
		e = &st->e[i];
		if (e->kind == DK_GLOBAL && !in_list(global_first, NGLOBAL_FIRST, e->field))
			drow(e->field, e);
	}
	/* clients, ghosts, and whatever else the daemon says of itself */
	for (i = 0; i < st->n; i++) {
		e = &st->e[i];
		if (e->kind == DK_DAEMON && !in_list(daemon_title, NDAEMON_TITLE, e->field))
			drow(e->field, e);
	}

	for (i = 0; i < st->n; i++) {
		e = &st->e[i];
		if (e->kind != DK_KNOB)
			continue;
		if (!shown++)
			printf("\nknobs (host defaults for agents: ksmctl set NAME VALUE)\n");
		drow(e->field, e);
	}

	print_table(st, DK_DOMAIN, "domains", "DOMAIN", domain_cols,
		    sizeof(domain_cols) / sizeof(domain_cols[0]), 1);
	print_table(st, DK_STORE, "stores", "STORE", store_cols,
		    sizeof(store_cols) / sizeof(store_cols[0]), 1);
	/* struct ksmu_wire_report has many fields: the rest are in --json. */
	print_table(st, DK_PROC, "processes", "PID", proc_cols,
		    sizeof(proc_cols) / sizeof(proc_cols[0]), 0);
}

/* ---- JSON */

/* @s (@n bytes) as a JSON string. */
static void json_string(FILE *f, const char *s, size_t n)
{
	size_t i;

	fputc('"', f);
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20 || c > 0x7e)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

static void json_member(FILE *f, const struct dentry *e, const char *indent, const char **sep)
{
	fprintf(f, "%s\n%s", *sep, indent);
	json_string(f, e->field, strlen(e->field));
	fputs(": ", f);
	if (e->text)
		json_string(f, e->text, strlen(e->text));
	else
		fprintf(f, "%s%llu", e->neg ? "-" : "", (unsigned long long)e->mag);
	*sep = ",";
}

static void print_dstatus_json(const struct dstatus *st)
{
	const char *sep, *osep;
	size_t i, o;
	int k;

	printf("{");
	for (k = 0; k < DK_N; k++) {
		printf("%s\n  \"%s\": {", k ? "," : "", dkind_json[k]);
		sep = "";
		if (k < DK_DOMAIN) {
			for (i = 0; i < st->n; i++)
				if (st->e[i].kind == (enum dkind)k)
					json_member(stdout, &st->e[i], "    ", &sep);
			printf("%s}", *sep ? "\n  " : "");
			continue;
		}
		osep = "";
		for (o = 0; o < st->no; o++) {
			if (st->o[o].kind != (enum dkind)k)
				continue;
			printf("%s\n    ", osep);
			json_string(stdout, st->o[o].id, st->o[o].idlen);
			printf(": {");
			sep = "";
			for (i = st->o[o].first; i != SIZE_MAX; i = st->e[i].next)
				json_member(stdout, &st->e[i], "      ", &sep);
			printf("\n    }");
			osep = ",";
		}
		printf("%s}", *osep ? "\n  " : "");
	}
	printf("\n}\n");
}

/* ---- Prometheus text format (version 0.0.4) */

/* The documented global counters; HELP texts from docs/daemon-protocol.md. */
static const struct {
	const char *field;
	const char *help;
	int counter;
} metric_doc[] = {
	{ "pages_shared", "Store pages in use (each holds one page of memory).", 0 },
	{ "pages_sharing", "Pages that map a store page, minus pages_shared (the saving, as "
			   "reported by agents).", 0 },
	{ "pages_unshared", "Entries of the global unstable table.", 0 },
	{ "general_profit", "Bytes saved minus the metadata of the daemon and the agents (may be "
			    "negative).", 0 },
	{ "store_pages", "Pages of the daemon's stores.", 0 },
	{ "store_bytes", "Bytes of the daemon's stores.", 0 },
	{ "lookups", "Pages looked up by agents, cumulative.", 1 },
	{ "matches_stable", "Pages looked up and found in a store, cumulative.", 1 },
	{ "matches_unstable", "Pages looked up and paired with another process's page, "
			      "cumulative.", 1 },
	{ "hints", "Hints sent to agents, cumulative.", 1 },
	{ "releases", "Store pages released by agents, cumulative.", 1 },
	{ "hash_collisions", "Pages whose hash matched a store page of other content, "
			     "cumulative.", 1 },
	{ "metadata_bytes", "Bytes of the daemon's own metadata.", 0 },
	{ "vmas_added", "Memory areas added, as reported by agents, cumulative.", 1 },
};

#define NMETRIC_DOC (sizeof(metric_doc) / sizeof(metric_doc[0]))

/* Per-process counters (struct ksmu_wire_report) that only grow. */
static const char *const proc_counters[] = { "full_scans", "merges", "cow_breaks",
					     "scan_cpu_ns", "vmas_added" };

static const char *metric_type(enum dkind k, const char *field, const char **help)
{
	size_t i;

	*help = NULL;
	if (k == DK_GLOBAL)
		for (i = 0; i < NMETRIC_DOC; i++)
			if (!strcmp(metric_doc[i].field, field)) {
				*help = metric_doc[i].help;
				return metric_doc[i].counter ? "counter" : "gauge";
			}
	if (k == DK_PROC && in_list(proc_counters, sizeof(proc_counters) / sizeof(proc_counters[0]),
				    field))
		return "counter";
	return "gauge";
}

/* A label value: backslash, double quote and newline escaped. */
static void prom_label(FILE *f, const char *name, const char *v, size_t n, const char **sep)
{
	size_t i;

	fprintf(f, "%s%s=\"", *sep, name);
	for (i = 0; i < n; i++) {
		if (v[i] == '\\' || v[i] == '"')
			fputc('\\', f);
		if (v[i] == '\n')
			fputs("\\n", f);
		else
			fputc(v[i], f);
	}
	fputc('"', f);
	*sep = ",";
}

static const char *const prom_name[DK_N] = { "ksmu_daemon_", "ksmu_",	     "ksmu_knob_",
					     "ksmu_domain_", "ksmu_store_", "ksmu_process_" };
static const char *const prom_label_name[DK_N] = { NULL, NULL, NULL, "domain", "store", "pid" };
static const char *const prom_kind[DK_N] = { NULL, NULL, NULL, "domain", "store", "process" };

/*
 * The family name of @field of @k.  Global keys name the host totals
 * ksmu_KEY, so ksmu_store_pages is global.store_pages; a per-object family
 * that would take the name of a global one (store.ID.pages) gets a
 * "_by_KIND" suffix instead.  Documented keys decide it, whatever this
 * reply holds, so that names stay put; an undocumented global key that
 * collides is looked up in the reply.
 */
static void prom_metric(const struct dstatus *st, enum dkind k, const char *field, char *buf,
			size_t len)
{
	char global[DKEY_MAX + 16];
	size_t i;
	int clash = 0;

	snprintf(buf, len, "%s%s", prom_name[k], field);
	if (k < DK_DOMAIN)
		return;
	snprintf(global, sizeof(global), "%s_%s", prom_kind[k], field);
	for (i = 0; i < NMETRIC_DOC && !clash; i++)
		clash = !strcmp(metric_doc[i].field, global);
	if (!clash && dfind(st, DK_GLOBAL, global))
		clash = 1;
	if (clash)
		snprintf(buf, len, "%s%s_by_%s", prom_name[k], field, prom_kind[k]);
}

static void prom_family(FILE *f, enum dkind k, const char *name, const char *field)
{
	const char *help, *type = metric_type(k, field, &help);

	fprintf(f, "# HELP %s ", name);
	if (help)
		fprintf(f, "%s\n", help);
	else
		fprintf(f, "ksmd-user STATUS %s%s%s.\n", dkind_prefix[k],
			k >= DK_DOMAIN ? (k == DK_DOMAIN ? "NAME." : k == DK_STORE ? "ID." : "PID.")
				       : "",
			field);
	fprintf(f, "# TYPE %s %s\n", name, type);
}

/* Is @field of @k a label rather than a metric? */
static int is_label(enum dkind k, const char *field)
{
	return is_text_key(k, field) || (k == DK_PROC && !strcmp(field, "uid"));
}

/* Write @st in the Prometheus text format.  Return: 0, or -1 if @f failed. */
static int print_prometheus(FILE *f, const struct dstatus *st)
{
	char name[DKEY_MAX + 48];
	const struct dentry *e, *v;
	size_t i, j, o;
	int k;

	e = dfind(st, DK_DAEMON, "version");
	fprintf(f, "# HELP ksmu_daemon_info ksmd-user's version.\n"
		   "# TYPE ksmu_daemon_info gauge\nksmu_daemon_info{");
	{
		const char *sep = "";

		prom_label(f, "version", e->text, strlen(e->text), &sep);
	}
	fprintf(f, "} 1\n");
	for (k = 0; k < DK_N; k++) {
		/* One family per field, all its samples together. */
		for (i = 0; i < st->n; i++) {
			e = &st->e[i];
			if (e->kind != (enum dkind)k || is_label(e->kind, e->field))
				continue;
			for (j = 0; j < i; j++) /* seen before: done */
				if (st->e[j].kind == e->kind && !strcmp(st->e[j].field, e->field))
					break;
			if (j < i)
				continue;
			prom_metric(st, e->kind, e->field, name, sizeof(name));
			prom_family(f, e->kind, name, e->field);
			if (k < DK_DOMAIN) {
				fprintf(f, "%s %s%llu\n", name, e->neg ? "-" : "",
					(unsigned long long)e->mag);
				continue;
			}
			for (o = 0; o < st->no; o++) {
				const struct dentry *uid, *dom;
				const char *sep = "";
				char buf[32];

				if (st->o[o].kind != (enum dkind)k)
					continue;
				v = dobj_field(st, o, e->field);
				if (!v)
					continue;
				uid = k == DK_PROC ? dobj_field(st, o, "uid") : NULL;
				dom = k != DK_DOMAIN ? dobj_field(st, o, "domain") : NULL;
				fprintf(f, "%s{", name);
				prom_label(f, prom_label_name[k], st->o[o].id, st->o[o].idlen, &sep);
				if (uid) {
					const char *u = dval(uid, buf, sizeof(buf));

					prom_label(f, "uid", u, strlen(u), &sep);
				}
				if (dom && dom->text)
					prom_label(f, "domain", dom->text, strlen(dom->text), &sep);
				fprintf(f, "} %s%llu\n", v->neg ? "-" : "", (unsigned long long)v->mag);
			}
		}
	}
	return fflush(f) || ferror(f) ? -1 : 0;
}

static int cmd_status(const struct cmd *cmd, int argc, char **argv)
{
	static int json;
	static const struct option opts[] = {
		{ "pid", required_argument, NULL, OPT_PID },
		{ "socket", required_argument, NULL, OPT_SOCKET },
		{ "json", no_argument, &json, 1 },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct ctl_answer an;
	struct cmd_args a;
	struct status st;
	pid_t pid = 0;
	int r;

	r = parse_opts(cmd, argc, argv, opts, 0, &a);
	if (r >= 0)
		return r;
	if (a.pid && a.socket)
		return usage_error(cmd, "--pid and --socket exclude each other");
	if (!a.pid)
		return daemon_status_cmd(cmd, &a, json);
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
		{ "socket", required_argument, NULL, OPT_SOCKET },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	char name[CTL_NAME_MAX], req[CTL_REQUEST_MAX + 2];
	struct ctl_answer an;
	struct cmd_args a;
	uint64_t value;
	size_t i;
	pid_t pid = 0;
	int r;

	r = parse_opts(cmd, argc, argv, opts, 2, &a);
	if (r >= 0)
		return r;
	if (a.pid && a.socket)
		return usage_error(cmd, "--pid and --socket exclude each other");
	if (a.pid) {
		r = parse_pid(cmd, &a, &pid);
		if (r >= 0)
			return r;
	}
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

	if (!a.pid)
		return daemon_set(cmd, &a, name, value);

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

/* ------------------------------------------------------------ ksmd-user commands */

/* status without --pid. */
static int daemon_status_cmd(const struct cmd *cmd, const struct cmd_args *a, int json)
{
	struct daemon_addr d;
	struct dstatus st;
	char err[512];
	int r;

	r = resolve_socket(cmd, a->socket, &d);
	if (r >= 0)
		return r;
	r = daemon_status(&d, &st, err, sizeof(err));
	/* No daemon, none named: the usage error of the days before ksmd-user. */
	if (r == DREQ_NOENT && d.implicit)
		return usage_error(cmd, "missing --pid PID, and %s", err);
	if (r != DREQ_OK)
		return daemon_failure(err);
	if (json)
		print_dstatus_json(&st);
	else
		print_dstatus_text(&d, &st);
	dstatus_free(&st);
	return EXIT_SUCCESS;
}

/* set without --pid: @name and @value are checked already. */
static int daemon_set(const struct cmd *cmd, const struct cmd_args *a, const char *name,
		      uint64_t value)
{
	struct daemon_addr d;
	char req[128], err[512], *text;
	int r;

	r = resolve_socket(cmd, a->socket, &d);
	if (r >= 0)
		return r;
	snprintf(req, sizeof(req), "SET %s %llu", name, (unsigned long long)value);
	r = daemon_request(d.path, req, &text, err, sizeof(err));
	if (r == DREQ_NOENT && d.implicit)
		return usage_error(cmd, "missing --pid PID, and %s", err);
	if (r != DREQ_OK)
		return daemon_failure(err);
	chomp(text);
	if (reply_is_err(d.path, text, err, sizeof(err))) {
		free(text);
		return daemon_failure(err);
	}
	if (strcmp(text, "OK")) {
		snprintf(err, sizeof(err),
			 "ksmd-user at %s sent a malformed reply to SET: '%.64s' (want OK or ERR)",
			 d.path, text);
		free(text);
		return daemon_failure(err);
	}
	printf("%s: %s is %llu for every agent now (host default)\n", text, name,
	       (unsigned long long)value);
	free(text);
	return EXIT_SUCCESS;
}

static int cmd_unmerge(const struct cmd *cmd, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, OPT_SOCKET },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct daemon_addr d;
	struct cmd_args a;
	char err[512], *text;
	uint64_t n;
	int r;

	r = parse_opts(cmd, argc, argv, opts, 0, &a);
	if (r >= 0)
		return r;
	r = resolve_socket(cmd, a.socket, &d);
	if (r >= 0)
		return r;
	r = daemon_request(d.path, "UNMERGE", &text, err, sizeof(err));
	if (r != DREQ_OK)
		return daemon_failure(err);
	chomp(text);
	if (reply_is_err(d.path, text, err, sizeof(err))) {
		free(text);
		return daemon_failure(err);
	}
	if (strncmp(text, "OK ", 3) || ksmu_parse_decimal(text + 3, UINT32_MAX, &n) < 0) {
		snprintf(err, sizeof(err),
			 "ksmd-user at %s sent a malformed reply to UNMERGE: '%.64s' (want OK N)",
			 d.path, text);
		free(text);
		return daemon_failure(err);
	}
	printf("unmerge requested from %llu agent%s\n", (unsigned long long)n, n == 1 ? "" : "s");
	free(text);
	return EXIT_SUCCESS;
}

/* ---- top */

static volatile sig_atomic_t interrupted;

static void on_interrupt(int sig)
{
	(void)sig;
	interrupted = 1;
}

/* Sum of @field over the processes (agents' own counters), 0 if none has it. */
static uint64_t proc_sum(const struct dstatus *st, const char *field, int *found)
{
	uint64_t sum = 0;
	size_t i;

	*found = 0;
	for (i = 0; i < st->n; i++)
		if (st->e[i].kind == DK_PROC && !st->e[i].text && !st->e[i].neg &&
		    !strcmp(st->e[i].field, field)) {
			sum += st->e[i].mag;
			*found = 1;
		}
	return sum;
}

/*
 * The counters top turns into rates.
 * @v:     values, @have[i] whether the reply had it
 * @pid:   daemon.pid (a restart resets the counters)
 * @at_ms: when the reply came
 */
struct top_sample {
	uint64_t v[3];
	int have[3];
	uint64_t pid;
	int64_t at_ms;
};

static const char *const top_rate_name[3] = { "lookups", "matches", "merges" };

static void top_sample(const struct dstatus *st, struct top_sample *s)
{
	const struct dentry *e, *m;

	memset(s, 0, sizeof(*s));
	s->at_ms = now_ms();
	s->pid = dfind(st, DK_DAEMON, "pid")->mag;
	e = dfind(st, DK_GLOBAL, "lookups");
	if (e && !e->neg) {
		s->v[0] = e->mag;
		s->have[0] = 1;
	}
	e = dfind(st, DK_GLOBAL, "matches_stable");
	m = dfind(st, DK_GLOBAL, "matches_unstable");
	if (e && m && !e->neg && !m->neg) {
		s->v[1] = e->mag + m->mag;
		s->have[1] = 1;
	}
	/* merges are counted by the agents; processes come and go, so a sum may drop */
	s->v[2] = proc_sum(st, "merges", &s->have[2]);
}

static void print_rates(const struct top_sample *prev, const struct top_sample *cur)
{
	double secs = prev ? (double)(cur->at_ms - prev->at_ms) / 1000.0 : 0;
	int i;

	printf("rates:");
	for (i = 0; i < 3; i++) {
		if (!prev || !prev->have[i] || !cur->have[i] || prev->pid != cur->pid ||
		    cur->v[i] < prev->v[i] || secs <= 0)
			printf(" %s -/s%s", top_rate_name[i], i < 2 ? "," : "");
		else
			printf(" %s %.1f/s%s", top_rate_name[i],
			       (double)(cur->v[i] - prev->v[i]) / secs, i < 2 ? "," : "");
	}
	printf("%s\n", prev ? "" : " (from the next refresh on)");
}

static int cmd_top(const struct cmd *cmd, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, OPT_SOCKET },
		{ "interval", required_argument, NULL, OPT_INTERVAL },
		{ "count", required_argument, NULL, OPT_COUNT },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct top_sample prev, cur;
	struct sigaction sa;
	struct daemon_addr d;
	struct dstatus st;
	struct cmd_args a;
	uint64_t interval = 1000, count = 0, n;
	char err[512];
	int r, tty = isatty(STDOUT_FILENO);

	r = parse_opts(cmd, argc, argv, opts, 0, &a);
	if (r >= 0)
		return r;
	if (a.interval && (ksmu_parse_decimal(a.interval, 86400000, &interval) < 0 ||
			   interval < 10))
		return usage_error(cmd, "invalid interval '%s' (want 10 to 86400000 ms)",
				   a.interval);
	if (a.count && (ksmu_parse_decimal(a.count, UINT32_MAX, &count) < 0 || count == 0))
		return usage_error(cmd, "invalid count '%s' (want a positive decimal number)",
				   a.count);
	r = resolve_socket(cmd, a.socket, &d);
	if (r >= 0)
		return r;

	/* Ctrl-C ends the loop (no SA_RESTART: the sleep returns at once). */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_interrupt;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	for (n = 1; !interrupted; n++) {
		struct timespec ts;
		time_t t = time(NULL);
		struct tm tm;
		char when[16];

		r = daemon_status(&d, &st, err, sizeof(err));
		if (r != DREQ_OK)
			return daemon_failure(err);
		top_sample(&st, &cur);
		if (tty)
			printf("\033[H\033[2J"); /* home, clear screen */
		else if (n > 1)
			putchar('\n');
		localtime_r(&t, &tm);
		strftime(when, sizeof(when), "%H:%M:%S", &tm);
		printf("ksmctl top: %s, every %llu ms, refresh %llu%s\n", when,
		       (unsigned long long)interval, (unsigned long long)n,
		       tty ? " (Ctrl-C to quit)" : "");
		print_rates(n > 1 ? &prev : NULL, &cur);
		print_dstatus_text(&d, &st);
		dstatus_free(&st);
		if (fflush(stdout) != 0)
			return EXIT_FAILURE; /* main() reports it */
		prev = cur;
		if (count && n == count)
			break;
		ts.tv_sec = (time_t)(interval / 1000);
		ts.tv_nsec = (long)(interval % 1000) * 1000000L;
		while (!interrupted && nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
	}
	return EXIT_SUCCESS;
}

/* ---- export */

/* Write @st to @path atomically: @path.tmp, then rename().  Return: exit status. */
static int export_file(const char *path, const struct dstatus *st)
{
	char *tmp;
	FILE *f;
	int fd, r;

	if (asprintf(&tmp, "%s.tmp", path) < 0)
		return daemon_failure("out of memory");
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0) {
		fprintf(stderr, "ksmctl export: cannot create %s: %s\n", tmp, strerror(errno));
		free(tmp);
		return EXIT_FAILURE;
	}
	f = fdopen(fd, "w");
	if (!f) {
		close(fd);
		goto fail;
	}
	r = print_prometheus(f, st);
	/* The collector may read it the moment it has its name: data first. */
	if (r < 0 || fsync(fd) < 0) {
		fclose(f);
		goto fail;
	}
	if (fclose(f) != 0)
		goto fail;
	if (rename(tmp, path) < 0) {
		fprintf(stderr, "ksmctl export: cannot rename %s to %s: %s\n", tmp, path,
			strerror(errno));
		unlink(tmp);
		free(tmp);
		return EXIT_FAILURE;
	}
	free(tmp);
	return EXIT_SUCCESS;
fail:
	fprintf(stderr, "ksmctl export: cannot write %s: %s\n", tmp, strerror(errno));
	unlink(tmp);
	free(tmp);
	return EXIT_FAILURE;
}

/*
 * "HOST:PORT" for --listen: HOST an IPv4 address, "[IPv6]" or localhost,
 * and a loopback address: the metrics are not authenticated.  Returns -1
 * to go on, or an exit status.
 */
static int parse_listen(const struct cmd *cmd, const char *arg, struct sockaddr_storage *ss,
			socklen_t *sslen)
{
	char host[64];
	const char *colon;
	uint64_t port;
	size_t hlen;

	memset(ss, 0, sizeof(*ss));
	if (arg[0] == '[') {
		colon = strstr(arg, "]:");
		if (!colon)
			goto bad;
		hlen = (size_t)(colon - arg - 1);
		if (hlen >= sizeof(host))
			goto bad;
		memcpy(host, arg + 1, hlen);
		host[hlen] = '\0';
		colon++;
	} else {
		colon = strrchr(arg, ':');
		if (!colon || (size_t)(colon - arg) >= sizeof(host))
			goto bad;
		hlen = (size_t)(colon - arg);
		memcpy(host, arg, hlen);
		host[hlen] = '\0';
	}
	if (ksmu_parse_decimal(colon + 1, 65535, &port) < 0)
		goto bad;
	if (!strcmp(host, "localhost"))
		strcpy(host, "127.0.0.1");
	if (arg[0] != '[') {
		struct sockaddr_in *in = (struct sockaddr_in *)ss;

		if (inet_pton(AF_INET, host, &in->sin_addr) != 1)
			goto bad;
		if ((ntohl(in->sin_addr.s_addr) >> 24) != 127)
			goto not_loopback;
		in->sin_family = AF_INET;
		in->sin_port = htons((uint16_t)port);
		*sslen = sizeof(*in);
	} else {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;

		if (inet_pton(AF_INET6, host, &in6->sin6_addr) != 1)
			goto bad;
		if (!IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr))
			goto not_loopback;
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)port);
		*sslen = sizeof(*in6);
	}
	return -1;
bad:
	return usage_error(cmd,
			   "invalid address '%s' (want 127.0.0.1:PORT, [::1]:PORT or "
			   "localhost:PORT)",
			   arg);
not_loopback:
	return usage_error(cmd,
			   "refusing to listen on '%s': not a loopback address (the metrics "
			   "are not authenticated; publish them through a proxy if needed)",
			   arg);
}

static void http_send(int fd, const char *status, const char *ctype, const char *body,
		      size_t blen, int head)
{
	char hdr[256];
	int n;
	size_t off = 0;
	ssize_t w;

	n = snprintf(hdr, sizeof(hdr),
		     "HTTP/1.0 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
		     "Connection: close\r\n%s\r\n",
		     status, ctype, blen, !strncmp(status, "405", 3) ? "Allow: GET, HEAD\r\n" : "");
	if (send(fd, hdr, (size_t)n, MSG_NOSIGNAL) != n || head)
		return;
	while (off < blen) {
		w = send(fd, body + off, blen - off, MSG_NOSIGNAL);
		if (w <= 0)
			return; /* the client went away, or the 2-second timeout */
		off += (size_t)w;
	}
}

/* Answer one HTTP request on @fd (its timeouts are set). */
static void http_serve(int fd, const struct daemon_addr *d)
{
	static const char text[] = "text/plain; charset=utf-8";
	char req[8192], *sp, *target, *version, err[512];
	size_t len = 0;
	ssize_t got;
	int head;

	/* Up to the end of the headers, within 8 KiB and the timeout. */
	for (;;) {
		got = recv(fd, req + len, sizeof(req) - 1 - len, 0);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			return; /* closed, or timed out: nobody to answer */
		len += (size_t)got;
		req[len] = '\0';
		if (strstr(req, "\r\n\r\n") || strstr(req, "\n\n"))
			break;
		if (len == sizeof(req) - 1) {
			http_send(fd, "431 Request Header Fields Too Large", text,
				  "request too large\n", 18, 0);
			return;
		}
	}
	req[strcspn(req, "\r\n")] = '\0';
	sp = strchr(req, ' ');
	if (!sp)
		goto bad;
	*sp = '\0';
	target = sp + 1;
	version = strchr(target, ' ');
	if (!version || strncmp(version + 1, "HTTP/", 5))
		goto bad;
	*version = '\0';
	head = !strcmp(req, "HEAD");
	if (strcmp(req, "GET") && !head) {
		http_send(fd, "405 Method Not Allowed", text, "only GET and HEAD\n", 18, 0);
		return;
	}
	if (strcmp(target, "/metrics") && strncmp(target, "/metrics?", 9)) {
		static const char nf[] = "not found: the metrics are at /metrics\n";

		http_send(fd, "404 Not Found", text, nf, sizeof(nf) - 1, head);
		return;
	}
	{
		struct dstatus st;
		char *body = NULL;
		size_t blen = 0;
		FILE *f;
		int r = daemon_status(d, &st, err, sizeof(err));

		if (r != DREQ_OK) {
			fprintf(stderr, "ksmctl export: %s\n", err);
			strcat(err, "\n");
			http_send(fd, "503 Service Unavailable", text, err, strlen(err), head);
			return;
		}
		f = open_memstream(&body, &blen);
		if (!f || print_prometheus(f, &st) < 0) {
			if (f)
				fclose(f);
			free(body);
			dstatus_free(&st);
			http_send(fd, "500 Internal Server Error", text, "out of memory\n", 14,
				  head);
			return;
		}
		fclose(f);
		dstatus_free(&st);
		http_send(fd, "200 OK", "text/plain; version=0.0.4; charset=utf-8", body, blen,
			  head);
		free(body);
	}
	return;
bad:
	http_send(fd, "400 Bad Request", text, "bad request\n", 12, 0);
}

static int export_listen(const struct cmd *cmd, const char *arg, const struct daemon_addr *d)
{
	struct sockaddr_storage ss, bound;
	socklen_t sslen = 0, blen = sizeof(bound);
	char host[INET6_ADDRSTRLEN];
	int fd, one = 1, r;
	unsigned port;

	r = parse_listen(cmd, arg, &ss, &sslen);
	if (r >= 0)
		return r;
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return failure(cmd, "socket: %s", strerror(errno));
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, sslen) < 0 || listen(fd, 16) < 0 ||
	    getsockname(fd, (struct sockaddr *)&bound, &blen) < 0) {
		r = errno;
		close(fd);
		return failure(cmd, "cannot listen on %s: %s", arg, strerror(r));
	}
	if (bound.ss_family == AF_INET) {
		inet_ntop(AF_INET, &((struct sockaddr_in *)&bound)->sin_addr, host, sizeof(host));
		port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
		printf("serving http://%s:%u/metrics\n", host, port);
	} else {
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&bound)->sin6_addr, host,
			  sizeof(host));
		port = ntohs(((struct sockaddr_in6 *)&bound)->sin6_port);
		printf("serving http://[%s]:%u/metrics\n", host, port);
	}
	fflush(stdout);

	/* One request at a time, each under the timeouts: a slow client only delays. */
	for (;;) {
		int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC);

		if (c < 0) {
			if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE ||
			    errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
				continue;
			r = errno;
			close(fd);
			return failure(cmd, "accept: %s", strerror(r));
		}
		if (set_timeout(c, SO_RCVTIMEO, DAEMON_TIMEOUT_MS) == 0 &&
		    set_timeout(c, SO_SNDTIMEO, DAEMON_TIMEOUT_MS) == 0)
			http_serve(c, d);
		close(c);
	}
}

static int cmd_export(const struct cmd *cmd, int argc, char **argv)
{
	static int prometheus;
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, OPT_SOCKET },
		{ "prometheus", no_argument, &prometheus, 1 },
		{ "output", required_argument, NULL, OPT_OUTPUT },
		{ "listen", required_argument, NULL, OPT_LISTEN },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct daemon_addr d;
	struct dstatus st;
	struct cmd_args a;
	char err[512];
	int r;

	r = parse_opts(cmd, argc, argv, opts, 0, &a);
	if (r >= 0)
		return r;
	if (!prometheus && !a.listen)
		return usage_error(cmd, "missing --prometheus or --listen ADDR:PORT");
	if (a.listen && a.output)
		return usage_error(cmd, "--output and --listen exclude each other");
	if (a.output && !*a.output)
		return usage_error(cmd, "empty --output file name");
	r = resolve_socket(cmd, a.socket, &d);
	if (r >= 0)
		return r;
	if (a.listen)
		return export_listen(cmd, a.listen, &d);

	/* The reply first: a daemon that is down leaves FILE as it was. */
	r = daemon_status(&d, &st, err, sizeof(err));
	if (r != DREQ_OK)
		return daemon_failure(err);
	if (a.output)
		r = export_file(a.output, &st);
	else
		r = print_prometheus(stdout, &st) < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
	dstatus_free(&st);
	return r;
}

/* ---- daemon */

/* Is @path an executable regular file? */
static int is_exec(const char *path)
{
	struct stat sb;

	return stat(path, &sb) == 0 && S_ISREG(sb.st_mode) && access(path, X_OK) == 0;
}

/*
 * Where is ksmd-user?  Next to ksmctl or in ../sbin (installed), in the
 * build tree (<build>/ksmctl and <build>/ksmd-user, or
 * <build>/ksmd-user/ksmd-user if it gets a directory of its own), else in
 * PATH.
 * Return: a malloc'd path, or NULL.
 */
static char *find_ksmd_user(void)
{
	static const char *const rel[] = { "ksmd-user", "../sbin/ksmd-user",
					   "ksmd-user/ksmd-user", "../ksmd-user/ksmd-user" };
	char self[PATH_MAX], *slash, *p, *path, *dir, *save = NULL;
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	size_t i;

	if (n > 0) {
		self[n] = '\0';
		slash = strrchr(self, '/');
		if (slash) {
			*slash = '\0';
			for (i = 0; i < sizeof(rel) / sizeof(rel[0]); i++) {
				if (asprintf(&p, "%s/%s", self, rel[i]) < 0)
					return NULL;
				if (is_exec(p))
					return p;
				free(p);
			}
		}
	}
	p = getenv("PATH");
	path = strdup(p && *p ? p : "/usr/local/bin:/usr/bin:/bin");
	if (!path)
		return NULL;
	for (dir = strtok_r(path, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
		if (asprintf(&p, "%s/ksmd-user", *dir ? dir : ".") < 0)
			break;
		if (is_exec(p)) {
			free(path);
			return p;
		}
		free(p);
	}
	free(path);
	return NULL;
}

static int cmd_daemon(const struct cmd *cmd, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, OPT_SOCKET },
		{ "log", required_argument, NULL, OPT_LOG },
		{ "exec", required_argument, NULL, OPT_EXEC },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct daemon_addr d;
	struct dstatus st;
	struct cmd_args a;
	char err[512], **xargv;
	char *prog;
	int64_t deadline;
	int r, i, pipefd[2], logfd, status, child_err = 0;
	pid_t pid = 0;
	ssize_t got;

	r = parse_opts(cmd, argc, argv, opts, INT_MAX, &a);
	if (r >= 0)
		return r;
	if (a.nargs && !a.dashdash)
		return usage_error(cmd, "unexpected argument '%s' (ksmd-user's arguments follow --)",
				   a.args[0]);
	for (i = 0; i < a.nargs; i++)
		if (!strcmp(a.args[i], "--socket") || !strncmp(a.args[i], "--socket=", 9))
			return usage_error(cmd, "give ksmctl daemon --socket PATH, not '%s' after --",
					   a.args[i]);
	if (a.log && !*a.log)
		return usage_error(cmd, "empty --log file name");
	r = resolve_socket(cmd, a.socket, &d);
	if (r >= 0)
		return r;
	/* ksmd-user wants an absolute path (its working directory is not ours to rely on). */
	if (d.path[0] != '/') {
		char cwd[PATH_MAX];

		if (!getcwd(cwd, sizeof(cwd)))
			return failure(cmd, "getcwd: %s", strerror(errno));
		if (strlen(cwd) + 1 + strlen(d.path) >= sizeof(d.path))
			return usage_error(cmd, "socket path '%s/%s' is too long: at most %zu bytes",
					   cwd, d.path, sizeof(d.path) - 1);
		memmove(d.path + strlen(cwd) + 1, d.path, strlen(d.path) + 1);
		memcpy(d.path, cwd, strlen(cwd));
		d.path[strlen(cwd)] = '/';
	}

	if (a.exec) {
		if (!is_exec(a.exec))
			return failure(cmd, "%s is not an executable file", a.exec);
		prog = strdup(a.exec);
	} else {
		prog = find_ksmd_user();
		if (!prog)
			return failure(cmd, "ksmd-user not found next to ksmctl nor in PATH "
					    "(give --exec FILE)");
	}
	if (!prog)
		return failure(cmd, "out of memory");

	/* One daemon per socket. */
	r = daemon_status(&d, &st, err, sizeof(err));
	if (r == DREQ_OK) {
		failure(cmd, "ksmd-user is already running at %s, pid %llu", d.path,
			(unsigned long long)dfind(&st, DK_DAEMON, "pid")->mag);
		dstatus_free(&st);
		free(prog);
		return EXIT_FAILURE;
	}

	/* ARGV: prog --socket PATH ARGS... NULL */
	xargv = calloc((size_t)a.nargs + 4, sizeof(*xargv));
	if (!xargv) {
		free(prog);
		return failure(cmd, "out of memory");
	}
	xargv[0] = prog;
	xargv[1] = (char *)"--socket";
	xargv[2] = d.path;
	for (i = 0; i < a.nargs; i++)
		xargv[3 + i] = a.args[i];

	logfd = open(a.log ? a.log : "/dev/null",
		     (a.log ? O_WRONLY | O_CREAT | O_APPEND : O_RDWR) | O_CLOEXEC, 0644);
	if (logfd < 0) {
		r = failure(cmd, "cannot open %s: %s", a.log ? a.log : "/dev/null", strerror(errno));
		goto out_free;
	}
	/* The child reports a failed exec through this pipe; a successful one closes it. */
	if (pipe2(pipefd, O_CLOEXEC) < 0) {
		r = failure(cmd, "pipe: %s", strerror(errno));
		close(logfd);
		goto out_free;
	}
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0) {
		r = failure(cmd, "fork: %s", strerror(errno));
		close(pipefd[0]);
		close(pipefd[1]);
		close(logfd);
		goto out_free;
	}
	if (pid == 0) {
		int nullfd = open("/dev/null", O_RDONLY | O_CLOEXEC), e;

		/* A session of its own: no terminal, no job control signals from ours. */
		setsid();
		if (nullfd < 0 || dup2(nullfd, STDIN_FILENO) < 0 ||
		    dup2(logfd, STDOUT_FILENO) < 0 || dup2(logfd, STDERR_FILENO) < 0) {
			e = errno;
		} else {
			signal(SIGPIPE, SIG_DFL);
			execv(prog, xargv);
			e = errno;
		}
		if (write(pipefd[1], &e, sizeof(e)) < 0)
			_exit(127);
		_exit(127);
	}
	close(pipefd[1]);
	close(logfd);
	do
		got = read(pipefd[0], &child_err, sizeof(child_err));
	while (got < 0 && errno == EINTR);
	close(pipefd[0]);
	if (got == (ssize_t)sizeof(child_err)) {
		waitpid(pid, NULL, 0);
		r = failure(cmd, "cannot run %s: %s", prog, strerror(child_err));
		goto out_free;
	}

	/* Up to DAEMON_START_MS for a STATUS to succeed. */
	deadline = now_ms() + DAEMON_START_MS;
	for (;;) {
		struct timespec ts = { 0, 50 * 1000000L };

		r = waitpid(pid, &status, WNOHANG);
		if (r == pid) {
			if (WIFEXITED(status))
				r = failure(cmd, "ksmd-user exited with status %d before answering%s%s",
					    WEXITSTATUS(status), a.log ? "; see " : "",
					    a.log ? a.log : " (use --log FILE to see why)");
			else
				r = failure(cmd, "ksmd-user was killed by signal %d before answering",
					    WTERMSIG(status));
			goto out_free;
		}
		r = daemon_status(&d, &st, err, sizeof(err));
		if (r == DREQ_OK)
			break;
		if (now_ms() >= deadline) {
			kill(pid, SIGTERM);
			waitpid(pid, NULL, 0);
			r = failure(cmd, "ksmd-user (pid %d) did not answer within %d s, stopped it: %s",
				    (int)pid, DAEMON_START_MS / 1000, err);
			goto out_free;
		}
		nanosleep(&ts, NULL);
	}
	if (dfind(&st, DK_DAEMON, "pid")->mag != (uint64_t)pid) {
		r = failure(cmd, "started ksmd-user as pid %d, but pid %llu answers at %s; stopped "
				 "pid %d",
			    (int)pid, (unsigned long long)dfind(&st, DK_DAEMON, "pid")->mag, d.path,
			    (int)pid);
		kill(pid, SIGTERM);
		waitpid(pid, NULL, 0);
		dstatus_free(&st);
		goto out_free;
	}
	dstatus_free(&st);
	printf("ksmd-user running, pid %d, socket %s\n", (int)pid, d.path);
	r = EXIT_SUCCESS;
out_free:
	free(xargv);
	free(prog);
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
