#!/bin/sh
# SPDX-License-Identifier: MIT
# Description: ksmctl command line: check (words and JSON), version, help,
# and usage errors (unknown command or option: exit 2, message on stderr).
#
# Usage: ksmctl-cli.sh PATH/TO/ksmctl
# Exit status: 0 pass, 1 fail.

if [ $# -ne 1 ]; then
	echo "usage: $0 PATH/TO/ksmctl" >&2
	exit 1
fi
KSMCTL=$1
[ -x "$KSMCTL" ] || { echo "FAIL: $KSMCTL is not executable" >&2; exit 1; }

# The library prints only when KSMU_LOG asks it to; keep stderr quiet.
unset KSMU_LOG

tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM
out=$tmp/out
err=$tmp/err
failures=0
checks=0

fail() {
	failures=$((failures + 1))
	echo "FAIL: $*" >&2
	sed 's/^/  stdout: /' "$out" >&2
	sed 's/^/  stderr: /' "$err" >&2
}

# run WANT_RC ARGS...: run ksmctl, check its exit status.
run() {
	want=$1
	shift
	checks=$((checks + 1))
	"$KSMCTL" "$@" >"$out" 2>"$err"
	rc=$?
	if [ "$rc" -ne "$want" ]; then
		fail "ksmctl $*: exit $rc, want $want"
		return 1
	fi
	return 0
}

# expect DESCRIPTION COMMAND...: one more check that COMMAND succeeds.
expect() {
	what=$1
	shift
	checks=$((checks + 1))
	"$@" || fail "$what"
}

# check: words, exit 0, nothing on stderr
if run 0 check; then
	expect "check mentions userfaultfd" grep -q '^userfaultfd:' "$out"
	expect "check says yes or no for async write-protect" \
		grep -Eq '^async write-protect: +(yes|no) \(' "$out"
	expect "check prints nothing on stderr" test ! -s "$err"
fi

# check --json: a valid JSON object with the documented keys
if run 0 check --json; then
	if command -v python3 >/dev/null 2>&1; then
		expect "check --json is valid JSON" python3 -m json.tool "$out" "$tmp/pretty"
		expect "check --json has typed keys" python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
bools = ["userfaultfd", "uffd_wp", "uffd_wp_async", "uffd_wp_unpopulated", "uffd_move",
         "uffd_events", "pagemap_scan", "pagemap_pfn", "soft_dirty", "process_madvise",
         "kernel_ksm"]
ints = ["kernel_major", "kernel_minor", "page_size", "uffd_features", "numa_nodes",
        "max_map_count", "thp_mode"]
missing = [k for k in bools + ints if k not in d]
wrong = [k for k in bools if not isinstance(d.get(k), bool)] + \
        [k for k in ints if type(d.get(k)) is not int]
if missing or wrong:
    sys.exit("missing %s, wrong type %s" % (missing, wrong))
' "$out"
	else
		echo "note: python3 not found, JSON validity not checked"
		expect "check --json looks like an object" grep -q '^{' "$out"
	fi
	expect "check --json has userfaultfd" grep -q '"userfaultfd": ' "$out"
fi

# version
if run 0 version; then
	expect "version prints libksmu X.Y.Z" grep -Eq '^libksmu [0-9]+\.[0-9]+\.[0-9]+$' "$out"
fi
run 0 --version

# help, in all its spellings, goes to stdout and lists check
for h in help --help -h "help check" "check --help"; do
	# shellcheck disable=SC2086 # split on purpose
	if run 0 $h; then
		expect "ksmctl $h prints usage to stdout" grep -q 'check' "$out"
		expect "ksmctl $h: nothing on stderr" test ! -s "$err"
	fi
done

# usage errors: exit 2, nothing on stdout, a message naming the culprit
usage_error() {
	culprit=$1
	shift
	if run 2 "$@"; then
		expect "ksmctl $*: message names '$culprit'" grep -qF -- "$culprit" "$err"
		expect "ksmctl $*: points to help" grep -q "ksmctl help" "$err"
		expect "ksmctl $*: nothing on stdout" test ! -s "$out"
	fi
}
usage_error bogus bogus
usage_error --bogus check --bogus
usage_error -x check -x
usage_error extra check extra
usage_error --json version --json
usage_error "missing command"
usage_error -q -q

if [ "$failures" -ne 0 ]; then
	echo "$failures of $checks checks failed" >&2
	exit 1
fi
echo "all $checks checks passed"
exit 0
