/* SPDX-License-Identifier: MIT */
/*
 * ksmu-run - run a program with libksmu preloaded.
 *
 * DESIGN
 *   ksmu-run turns its options into environment variables and exec()s the
 *   program, as env(1) does.  It does not fork and does not stay around: the
 *   program keeps ksmu-run's pid (so "ksmctl status --pid $!" after
 *   "ksmu-run prog &" finds the engine), its signals and its exit status.
 *
 *   The environment it sets (read by the preloaded library, src/preload.c):
 *     LD_PRELOAD       the absolute path of the libksmu that ksmu-run itself
 *                      was linked with, found with dladdr() on one of its
 *                      functions, so that the program gets the same build
 *                      as the one that validated the options; put in front
 *                      of an existing LD_PRELOAD (':'), unless already there
 *     KSMU_PRELOAD=1   always
 *     KSMU_MERGE_ANY=1 with --merge-any
 *     KSMU_KERNEL_KSM  with --kernel-ksm=off|also|fallback
 *     KSMU_LOG         with --log=err|warn|info|debug
 *     KSMU_<KNOB>=N    for each --KNOB=N, the knob name in upper case
 *   Variables already in the environment and not named by an option are
 *   passed on unchanged.
 *
 *   Everything is validated before anything is set or exec()ed, the knobs
 *   with ksmu_check_tunable() (which starts no engine in ksmu-run): a typo
 *   is an error here, with exit status 2, instead of a warning lost in the
 *   program's own standard error.
 *
 *   Options end at the first word that does not start with '-', or after
 *   "--"; everything from there on is the program and its arguments.  Option
 *   values may follow the '=' or come as the next word (--log debug).  Knob
 *   names may be spelt with dashes (--pages-to-scan=1000).
 *
 *   Exit status: the program's; 2 usage error (unknown option or knob, bad
 *   value, no program); 127 program not found and 126 found but not
 *   executable (as env(1)); 1 other failure (libksmu not locatable).
 */
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ksmu.h"
#include "parse.h"

#define EXIT_USAGE 2
#define EXIT_CANNOT_INVOKE 126
#define EXIT_ENOENT 127

#define KNOB_NAME_MAX 64

/*
 * One --KNOB=VALUE, validated.
 * @env:   "KSMU_PAGES_TO_SCAN"
 * @value: the value, normalised ("0100" becomes "100")
 */
struct knob_opt {
	char env[5 + KNOB_NAME_MAX];
	char value[24];
};

/*
 * The command line, parsed.
 * @merge_any:  --merge-any given
 * @kernel_ksm: --kernel-ksm's value, NULL if not given
 * @log:        --log's value, NULL if not given
 * @knobs:      the --KNOB=VALUE options, in order (a later one wins)
 * @nknobs:     how many
 * @prog:       index in argv of the program
 */
struct run_opts {
	int merge_any;
	const char *kernel_ksm;
	const char *log;
	struct knob_opt *knobs;
	int nknobs;
	int prog;
};

static const char *const kernel_ksm_modes[] = { "off", "also", "fallback", NULL };
static const char *const log_levels[] = { "err", "warn", "info", "debug", NULL };

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: ksmu-run [OPTIONS] [--] PROGRAM [ARGS...]\n\n"
		"Run PROGRAM with libksmu preloaded: its madvise(MADV_MERGEABLE) and\n"
		"prctl(PR_SET_MEMORY_MERGE) calls are served by ksmu, the user-space page\n"
		"deduplication engine.\n\n"
		"Options:\n"
		"  --merge-any         merge all private anonymous memory of PROGRAM,\n"
		"                      as prctl(PR_SET_MEMORY_MERGE, 1) would\n"
		"  --kernel-ksm=MODE   off, also or fallback: what to do with kernel KSM\n"
		"  --log=LEVEL         err, warn, info or debug: libksmu messages on stderr\n"
		"  --KNOB=VALUE        set a knob, e.g. --pages_to_scan=1000 (run,\n"
		"                      pages_to_scan, sleep_millisecs, max_page_sharing,\n"
		"                      merge_across_nodes, use_zero_pages, smart_scan, ...)\n"
		"  -h, --help          print this help\n"
		"  --version           print the versions of ksmu-run and libksmu\n\n"
		"Exit status: PROGRAM's; 2 usage error; 126 PROGRAM not executable;\n"
		"127 PROGRAM not found.  See ksmu-run(1).\n");
}

static int __attribute__((format(printf, 1, 2))) usage_error(const char *fmt, ...)
{
	va_list ap;

	fputs("ksmu-run: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\nTry 'ksmu-run --help' for more information.\n", stderr);
	return EXIT_USAGE;
}

/*
 * Is @name a writable knob?  ksmu_check_tunable() answers -EINVAL alike
 * for an unknown name and a bad value; every knob accepts 0 or (for
 * max_page_sharing) 2.
 */
static int knob_known(const char *name)
{
	return ksmu_check_tunable(name, 0) == 0 || ksmu_check_tunable(name, 2) == 0;
}

static int one_of(const char *v, const char *const *set)
{
	for (; *set; set++)
		if (!strcmp(v, *set))
			return 1;
	return 0;
}

/* --NAME=VALUE where NAME is not ours: a knob.  Return: 0 or an exit status. */
static int parse_knob(const char *opt, const char *name, size_t nlen, const char *value,
		      struct knob_opt *k)
{
	char knob[KNOB_NAME_MAX];
	uint64_t v;
	size_t i;
	int r;

	if (nlen == 0 || nlen >= sizeof(knob))
		return usage_error("unknown option '%s'", opt);
	for (i = 0; i < nlen; i++)
		knob[i] = name[i] == '-' ? '_' : name[i];
	knob[nlen] = '\0';
	if (!knob_known(knob))
		return usage_error("unknown option '--%.*s' (not a ksmu-run option nor a knob)",
				   (int)nlen, name);
	if (!value)
		return usage_error("option '--%.*s' needs a value (--%s=VALUE)", (int)nlen, name,
				   knob);
	r = ksmu_parse_decimal(value, ULONG_MAX, &v);
	if (r == -ERANGE)
		return usage_error("value '%s' for %s is too large", value, knob);
	if (r < 0)
		return usage_error("invalid value '%s' for %s (want a decimal number)", value,
				   knob);
	if (ksmu_check_tunable(knob, (unsigned long)v) < 0)
		return usage_error("value %s is out of range for %s (see ksmu-run(1))", value,
				   knob);

	memcpy(k->env, "KSMU_", 5);
	for (i = 0; i <= nlen; i++)
		k->env[5 + i] = (char)(knob[i] >= 'a' && knob[i] <= 'z' ? knob[i] - 'a' + 'A'
									: knob[i]);
	snprintf(k->value, sizeof(k->value), "%llu", (unsigned long long)v);
	return 0;
}

/*
 * Parse the options into @o.  Return: -1 to go on and run @o->prog, or an
 * exit status (0 after --help or --version).
 */
static int parse_args(int argc, char **argv, struct run_opts *o)
{
	int i, r;

	memset(o, 0, sizeof(*o));
	o->knobs = calloc((size_t)argc, sizeof(*o->knobs));
	if (!o->knobs) {
		fprintf(stderr, "ksmu-run: out of memory\n");
		return EXIT_FAILURE;
	}
	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *name, *eq, *value;
		size_t nlen;
		int has_eq;

		if (!strcmp(a, "--")) {
			i++;
			break;
		}
		if (a[0] != '-')
			break;
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			usage(stdout);
			return EXIT_SUCCESS;
		}
		if (!strcmp(a, "--version")) {
			int v = ksmu_version();

			printf("ksmu-run %d.%d.%d\nlibksmu %d.%d.%d\n", KSMU_VERSION_MAJOR,
			       KSMU_VERSION_MINOR, KSMU_VERSION_PATCH, v / 10000, v / 100 % 100,
			       v % 100);
			return EXIT_SUCCESS;
		}
		if (a[1] != '-')
			return usage_error("unknown option '%s'", a);

		name = a + 2;
		eq = strchr(name, '=');
		has_eq = eq != NULL;
		nlen = has_eq ? (size_t)(eq - name) : strlen(name);
		value = has_eq ? eq + 1 : NULL;

		if (nlen == 9 && !strncmp(name, "merge-any", 9)) {
			if (has_eq)
				return usage_error("option '--merge-any' takes no value");
			o->merge_any = 1;
			continue;
		}
		/* The value of a known option may be the next word. */
		if (!has_eq && i + 1 < argc) {
			char knob[KNOB_NAME_MAX];
			size_t j;
			int ours = !strcmp(name, "kernel-ksm") || !strcmp(name, "log");

			if (!ours && nlen < sizeof(knob)) {
				for (j = 0; j <= nlen; j++)
					knob[j] = name[j] == '-' ? '_' : name[j];
				ours = knob_known(knob);
			}
			if (ours)
				value = argv[++i];
		}
		if (nlen == 10 && !strncmp(name, "kernel-ksm", 10)) {
			if (!value)
				return usage_error(
				    "option '--kernel-ksm' needs a value (off, also or "
				    "fallback)");
			if (!one_of(value, kernel_ksm_modes))
				return usage_error("invalid --kernel-ksm '%s' (want off, also or "
						   "fallback)", value);
			o->kernel_ksm = value;
			continue;
		}
		if (nlen == 3 && !strncmp(name, "log", 3)) {
			if (!value)
				return usage_error("option '--log' needs a value (err, warn, info "
						   "or debug)");
			if (!one_of(value, log_levels))
				return usage_error("invalid --log '%s' (want err, warn, info or "
						   "debug)", value);
			o->log = value;
			continue;
		}
		r = parse_knob(a, name, nlen, value, &o->knobs[o->nknobs]);
		if (r)
			return r;
		o->nknobs++;
	}
	if (i >= argc)
		return usage_error("missing program to run");
	o->prog = i;
	return -1;
}

/*
 * The path of the libksmu we run with, absolute, into @buf.
 *
 * &ksmu_version is the library's own function as long as ksmu-run is a
 * position-independent executable (CMake builds it so): a non-PIE program
 * would get the canonical address of its own PLT entry, and dladdr() would
 * name the program.  That case is detected, not guessed around.
 * Return: 0, or -errno after a message.
 */
static int libksmu_path(char *buf, size_t len)
{
	int (*fn)(void) = ksmu_version;
	void (*self)(FILE *) = usage;
	Dl_info lib, prog;
	char *real;

	if (!dladdr((void *)fn, &lib) || !lib.dli_fname || !*lib.dli_fname) {
		fprintf(stderr, "ksmu-run: cannot locate libksmu: dladdr failed\n");
		return -ENOENT;
	}
	if (dladdr((void *)self, &prog) && prog.dli_fbase == lib.dli_fbase) {
		fprintf(stderr, "ksmu-run: cannot locate libksmu: ksmu_version resolves into "
				"ksmu-run itself (not built as PIE?)\n");
		return -ENOENT;
	}
	if (lib.dli_fname[0] == '/') {
		if (strlen(lib.dli_fname) >= len)
			return -ENAMETOOLONG;
		strcpy(buf, lib.dli_fname);
	} else {
		/* Found through a relative LD_LIBRARY_PATH or RUNPATH entry. */
		real = realpath(lib.dli_fname, NULL);
		if (!real || strlen(real) >= len) {
			fprintf(stderr, "ksmu-run: cannot make '%s' absolute: %s\n", lib.dli_fname,
				real ? strerror(ENAMETOOLONG) : strerror(errno));
			free(real);
			return -ENOENT;
		}
		strcpy(buf, real);
		free(real);
	}
	/* ld.so splits LD_PRELOAD at ':' and ' ': such a path cannot be preloaded. */
	if (strpbrk(buf, ": \t")) {
		fprintf(stderr, "ksmu-run: cannot preload '%s': LD_PRELOAD paths cannot hold ':' "
				"or blanks\n", buf);
		return -EINVAL;
	}
	return 0;
}

/* Does the LD_PRELOAD list @list name @path already? */
static int preload_has(const char *list, const char *path)
{
	size_t plen = strlen(path);
	const char *p = list;

	while (*p) {
		size_t n = strcspn(p, ": \t");

		if (n == plen && !strncmp(p, path, n))
			return 1;
		p += n;
		if (*p)
			p++;
	}
	return 0;
}

static int set_env(const char *name, const char *value)
{
	if (setenv(name, value, 1) < 0) {
		fprintf(stderr, "ksmu-run: cannot set %s: %s\n", name, strerror(errno));
		return -errno;
	}
	return 0;
}

int main(int argc, char **argv)
{
	char lib[PATH_MAX], *preload = NULL;
	const char *old;
	struct run_opts o;
	int r, i, err;

	r = parse_args(argc, argv, &o);
	if (r >= 0) {
		free(o.knobs);
		if (fflush(stdout) != 0 || ferror(stdout)) {
			fprintf(stderr, "ksmu-run: write error: %s\n", strerror(errno));
			return r ? r : EXIT_FAILURE;
		}
		return r;
	}
	if (libksmu_path(lib, sizeof(lib)) < 0)
		return EXIT_FAILURE;

	old = getenv("LD_PRELOAD");
	if (old && *old && !preload_has(old, lib)) {
		if (asprintf(&preload, "%s:%s", lib, old) < 0) {
			fprintf(stderr, "ksmu-run: out of memory\n");
			return EXIT_FAILURE;
		}
	}
	if (set_env("LD_PRELOAD", preload ? preload : (old && *old ? old : lib)) < 0 ||
	    set_env("KSMU_PRELOAD", "1") < 0 ||
	    (o.merge_any && set_env("KSMU_MERGE_ANY", "1") < 0) ||
	    (o.kernel_ksm && set_env("KSMU_KERNEL_KSM", o.kernel_ksm) < 0) ||
	    (o.log && set_env("KSMU_LOG", o.log) < 0))
		return EXIT_FAILURE;
	for (i = 0; i < o.nknobs; i++)
		if (set_env(o.knobs[i].env, o.knobs[i].value) < 0)
			return EXIT_FAILURE;
	free(preload);
	free(o.knobs);

	execvp(argv[o.prog], argv + o.prog);
	err = errno;
	fprintf(stderr, "ksmu-run: %s: %s\n", argv[o.prog], strerror(err));
	return err == ENOENT ? EXIT_ENOENT : EXIT_CANNOT_INVOKE;
}
