#!/bin/sh
# SPDX-License-Identifier: MIT
# Description: LD_PRELOAD mode from outside.  A program written for kernel
# KSM (preload-ksm --serve) runs under ksmu-run, merges, publishes what the
# API says, and waits; ksmctl status --pid must report the same numbers (in
# words and as JSON), KSMU_<KNOB> variables must configure it (a bad one is
# reported and ignored), ksmctl set --pid must change a knob live, the engine's
# threads must be named, its descriptors close-on-exec; and a program that
# never asks for merging must be left alone (no thread, no socket).
#
# Usage: ksmctl-pid.sh KSMCTL KSMU-RUN PRELOAD-KSM
# Exit status: 0 pass, 1 fail, 77 skip (merging unavailable here).

if [ $# -ne 3 ]; then
	echo "usage: $0 KSMCTL KSMU-RUN PRELOAD-KSM" >&2
	exit 1
fi
KSMCTL=$1
RUN=$2
PROG=$3
unset KSMU_LOG LD_PRELOAD KSMU_PRELOAD KSMU_MERGE_ANY

T_PROG=$KSMCTL
T_NAME=ksmctl
. "$(dirname "$0")/t_cli.sh"

# --- a preloaded program that merged
# (with two knobs from the environment: one good, one bad)
KSMU_PAGES_TO_SCAN=1234 KSMU_SLEEP_MILLISECS=2x "$RUN" -- "$PROG" --serve "$tmp/api" \
	>"$tmp/out" 2>"$tmp/err" &
bg_pid=$!
pid=$bg_pid
i=0
while [ ! -s "$tmp/api" ] && [ $i -lt 300 ] && kill -0 "$pid" 2>/dev/null; do
	sleep 0.1
	i=$((i + 1))
done
if ! [ -s "$tmp/api" ]; then
	if grep -q "merging unavailable" "$tmp/out" "$tmp/err" 2>/dev/null; then
		echo "SKIP: merging unavailable here" >&2
		exit 77
	fi
	echo "FAIL: the preloaded program did not come up" >&2
	cat "$tmp/out" "$tmp/err" >&2
	exit 1
fi
sleep 0.2 # the API's numbers are written before the server is asked

expect "ksmctl status --pid exits 0" sh -c "'$KSMCTL' status --pid $pid >'$tmp/words' 2>'$tmp/werr'"
expect "ksmctl status --pid --json exits 0" \
	sh -c "'$KSMCTL' status --pid $pid --json >'$tmp/json' 2>'$tmp/jerr'"
while read -r name value; do
	expect "words: $name $value" grep -Eq "^ +$name +$value( |\$)" "$tmp/words"
	expect "json: $name $value" grep -Eq "\"$name\": $value,?\$" "$tmp/json"
done <"$tmp/api"
expect "merged something" sh -c "! grep -q '^pages_sharing 0\$' '$tmp/api'"
expect "json: pid" grep -q "\"pid\": $pid," "$tmp/json"
expect "json: preload 1" grep -q '"preload": 1,' "$tmp/json"

expect "KSMU_PAGES_TO_SCAN=1234 applied" grep -q '"pages_to_scan": 1234,' "$tmp/json"
expect "KSMU_SLEEP_MILLISECS=2x ignored: the default stays" grep -q '"sleep_millisecs": 20,' "$tmp/json"
expect "... and said so on stderr" grep -q 'KSMU_SLEEP_MILLISECS=2x ignored' "$tmp/err"
expect "nothing else on stderr" test "$(grep -vc 'KSMU_SLEEP_MILLISECS=2x ignored' "$tmp/err")" = 0
expect "set --pid exits 0" "$KSMCTL" set --pid "$pid" pages_to_scan 555
"$KSMCTL" status --pid "$pid" --json >"$tmp/json2" 2>/dev/null
expect "the knob changed" grep -q '"pages_to_scan": 555,' "$tmp/json2"
"$KSMCTL" set --pid "$pid" run 7 >/dev/null 2>&1
expect "a bad value is refused (exit 2)" test $? -eq 2
"$KSMCTL" status --pid "$pid" --json >"$tmp/json3" 2>/dev/null
expect "nothing changed" grep -q '"run": 0,' "$tmp/json3"

# --- not disturbing the host
for t in ksmu-scan ksmu-uffd ksmu-ctl; do
	expect "thread $t named" grep -qx "$t" /proc/"$pid"/task/*/comm
done
bad=
for fd in /proc/"$pid"/fd/*; do
	n=${fd##*/}
	[ "$n" -le 2 ] && continue
	target=$(readlink "$fd")
	case $target in
	*userfaultfd* | *ksmu-store* | */pagemap | */maps | socket:*) ;;
	*) continue ;; # inherited from whoever started the test
	esac
	flags=$(sed -n 's/^flags:[[:space:]]*//p' /proc/"$pid"/fdinfo/"$n")
	# O_CLOEXEC is 02000000 (octal) in fdinfo
	if [ $(((0$flags >> 19) & 1)) -ne 1 ]; then
		bad="$bad $n:$target"
	fi
done
expect "the engine's descriptors are close-on-exec:${bad:- all}" test -z "$bad"
kill "$pid"
wait "$pid" 2>/dev/null
bg_pid=

# --- a program that never asks for merging is left alone (sh is not
# instrumented: a sanitizer-built library cannot be preloaded into it)
if [ -z "$KSMU_TEST_SANITIZED" ]; then
	"$RUN" -- sh -c 'sleep 0.5; ls /proc/$$/task | wc -l; grep -c "@ksmu/$$" /proc/net/unix' \
		>"$tmp/alone" 2>&1
	expect "no engine thread in a program that does not use KSM" \
		test "$(sed -n 1p "$tmp/alone")" = 1
	expect "no control socket either" test "$(sed -n 2p "$tmp/alone")" = 0
fi

# --- no engine: ksmctl says so
"$KSMCTL" status --pid $$ >"$tmp/none" 2>&1
expect "a process without an engine: exit 1" test $? -eq 1

t_finish
