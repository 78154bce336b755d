# SPDX-License-Identifier: MIT
# t_cli.sh - the harness of the shell tests, sourced after setting:
#   T_PROG  the program run() runs       T_NAME  its name in messages
# Provides $tmp (removed at exit, with the background process $bg_pid
# killed), $out/$err (run()'s output), and:
#   run WANT_RC ARGS...       run T_PROG, count a check on its exit status
#   expect DESCRIPTION CMD... one more check that CMD succeeds
#   fail MESSAGE              count a failure, show run()'s last output
#   t_finish                  report and exit 0 (all passed) or 1

tmp=$(mktemp -d) || exit 1
bg_pid=
t_cleanup() {
	[ -n "$bg_pid" ] && kill "$bg_pid" 2>/dev/null
	rm -rf "$tmp"
}
trap t_cleanup EXIT INT TERM
out=$tmp/out
err=$tmp/err
: >"$out"
: >"$err"
failures=0
checks=0

fail() {
	failures=$((failures + 1))
	echo "FAIL: $*" >&2
	sed 's/^/  stdout: /' "$out" >&2
	sed 's/^/  stderr: /' "$err" >&2
}

run() {
	want=$1
	shift
	checks=$((checks + 1))
	"$T_PROG" "$@" >"$out" 2>"$err"
	rc=$?
	if [ "$rc" -ne "$want" ]; then
		fail "$T_NAME $*: exit $rc, want $want"
		return 1
	fi
	return 0
}

expect() {
	what=$1
	shift
	checks=$((checks + 1))
	"$@" || fail "$what"
}

t_finish() {
	if [ "$failures" -ne 0 ]; then
		echo "$failures of $checks checks failed" >&2
		exit 1
	fi
	echo "all $checks checks passed"
	exit 0
}
