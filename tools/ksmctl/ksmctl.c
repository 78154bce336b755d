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
 *   command, unknown option, unexpected argument).  Usage errors name the
 *   offending word on standard error and point to the help.
 *
 *   ksmctl is a program, not the library: it prints.  It uses only the
 *   public API of libksmu (ksmu.h).
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ksmu.h"

/*
 * Part of the public API from release 0.1 on; declared here as well until
 * ksmu.h carries the declaration (an identical redeclaration is harmless).
 */
KSMU_API int ksmu_probe_describe(const struct ksmu_features *f, char *buf, size_t len, int json);

#define EXIT_USAGE 2

struct cmd {
	const char *name;
	const char *args;    /* synopsis after the name */
	const char *summary; /* one line for the help */
	int (*run)(const struct cmd *cmd, int argc, char **argv);
};

static int cmd_check(const struct cmd *cmd, int argc, char **argv);
static int cmd_version(const struct cmd *cmd, int argc, char **argv);
static int cmd_help(const struct cmd *cmd, int argc, char **argv);

static const struct cmd cmds[] = {
	{ "check", "[--json]", "report which kernel features ksmu can use, and what it does with them",
	  cmd_check },
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
	size_t i;

	fprintf(out, "Usage: ksmctl COMMAND [OPTIONS]\n\n"
		     "Inspect and control ksmu, the user-space page deduplication engine.\n\n"
		     "Commands:\n");
	for (i = 0; i < NCMDS; i++) {
		char synopsis[64];

		snprintf(synopsis, sizeof(synopsis), "%s %s", cmds[i].name, cmds[i].args);
		fprintf(out, "  %-20s %s\n", synopsis, cmds[i].summary);
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

/*
 * Parse a command's options.  @longopts' flag pointers receive the values
 * (no option takes an argument yet); -h/--help is handled here.  Returns -1
 * to go on, or an exit status.
 */
static int parse_opts(const struct cmd *cmd, int argc, char **argv, const struct option *longopts)
{
	int c;

	optind = 0; /* glibc: full re-initialisation */
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+:h", longopts, NULL)) != -1) {
		switch (c) {
		case 0:
			break;
		case 'h':
			cmd_usage(cmd, stdout);
			return 0;
		case ':':
			return usage_error(cmd, "option '%s' needs an argument", argv[optind - 1]);
		default:
			return bad_option(cmd, argv);
		}
	}
	if (optind < argc)
		return usage_error(cmd, "unexpected argument '%s'", argv[optind]);
	return -1;
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

	r = parse_opts(cmd, argc, argv, opts);
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

	r = parse_opts(cmd, argc, argv, opts);
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
