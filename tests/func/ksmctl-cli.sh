#!/bin/sh
# SPDX-License-Identifier: MIT
# Description: ksmctl command line: check (words and JSON), version, help,
# usage errors (unknown command or option: exit 2, message on stderr), and
# status/set: their usage errors, a pid without an engine, and (with
# python3) their handling of answers, good and malformed, from a stand-in
# control server (docs/control-protocol.md).  The real server, in a
# preloaded program, is tested elsewhere.
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

T_PROG=$KSMCTL
T_NAME=ksmctl
. "$(dirname "$0")/t_cli.sh"

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

# status and set: a pid is a positive decimal number
usage_error "missing --pid" status
usage_error "missing --pid" status --json
usage_error "missing --pid" set pages_to_scan 100
usage_error "'--pid' needs an argument" status --pid
usage_error "'0'" status --pid 0
usage_error "'-1'" status --pid -1
usage_error "'12x'" status --pid 12x
usage_error "' 12'" status --pid " 12"
usage_error "'99999999999'" status --pid 99999999999
usage_error "'abc'" set --pid abc run 1
usage_error extra status --pid 1 extra
usage_error --bogus status --pid 1 --bogus
# set: NAME and VALUE, checked before any connection (the pid has no engine)
usage_error "missing NAME and VALUE" set --pid $$
usage_error "missing VALUE for 'run'" set --pid $$ run
usage_error "unknown knob 'bogus'" set --pid $$ bogus 1
usage_error "unknown knob 'pages_shared'" set --pid $$ pages_shared 1
usage_error "'1x'" set --pid $$ pages_to_scan 1x
usage_error "'-1'" set --pid $$ pages_to_scan -1
usage_error "'+1'" set --pid $$ pages_to_scan +1
usage_error "''" set --pid $$ pages_to_scan ""
usage_error "'99999999999999999999999'" set --pid $$ pages_to_scan 99999999999999999999999
usage_error "out of range for run" set --pid $$ run 3
usage_error "out of range for max_page_sharing" set --pid $$ max_page_sharing 1
usage_error "out of range for pages_to_scan" set --pid $$ pages_to_scan 4294967296
usage_error extra set --pid $$ run 1 extra

# failure: exit 1, the reason on stderr, nothing on stdout
failure() {
	reason=$1
	shift
	if run 1 "$@"; then
		expect "ksmctl $*: says '$reason'" grep -qF -- "$reason" "$err"
		expect "ksmctl $*: nothing on stdout" test ! -s "$out"
	fi
}
# This shell runs no engine; a valid knob gets as far as the connection.
noengine="process $$ runs no ksmu engine (start it with ksmu-run, or it has not asked for merging yet)"
failure "$noengine" status --pid $$
failure "$noengine" status --pid $$ --json
failure "$noengine" set --pid $$ pages_to_scan 1000
failure "$noengine" set --pid $$ pages-to-scan 1000
# A pid that is not in use: pid_max is at most 4194304.
failure "no process 4194305" status --pid 4194305
failure "no process 4194305" set --pid 4194305 run 1

# status and set against a stand-in server: it serves, to each connection,
# the bytes of $mock/answer (the word HANG: nothing, for 8 seconds), and
# saves the request in $mock/request.  It listens on ksmu/ITS_PID, and also
# on ksmu/$decoy_pid, a socket that belongs to the wrong process.
mock_server() {
	python3 -c '
import os, socket, sys, time
d, decoy = sys.argv[1], int(sys.argv[2])
socks = []
for pid in (os.getpid(), decoy):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(b"\0ksmu/%d" % pid)
    s.listen(8)
    socks.append(s)
with open(os.path.join(d, "ready.tmp"), "w") as f:
    f.write("%d\n" % os.getpid())
os.rename(os.path.join(d, "ready.tmp"), os.path.join(d, "ready"))
import select
end = time.time() + 110  # within the TIMEOUT of 120 s
while time.time() < end:
    r, _, _ = select.select(socks, [], [], 1)
    for s in r:
        c, _ = s.accept()
        c.settimeout(2)
        req = b""
        try:
            while not req.endswith(b"\n") and len(req) < 1000:
                b = c.recv(1000)
                if not b:
                    break
                req += b
        except socket.timeout:
            pass
        with open(os.path.join(d, "request"), "wb") as f:
            f.write(req)
        with open(os.path.join(d, "answer"), "rb") as f:
            ans = f.read()
        if ans == b"HANG\n":
            time.sleep(8)
        else:
            try:
                c.sendall(ans)
            except OSError:
                pass  # the client gave up: that is what some checks want
        c.close()
' "$@"
}

# answer LINE...: what the stand-in serves next, one line per argument.
answer() {
	printf '%s\n' "$@" >"$mock/answer"
	rm -f "$mock/request"
}

# A well-formed STATUS answer for process $1, with $2... appended before END.
status_answer() {
	p=$1
	shift
	answer OK "pid $p" "version 300" "merge_any 1" "preload 1" \
		"pages_shared 12" "pages_sharing 30" "pages_unshared 7" "pages_volatile 1" \
		"pages_scanned 4096" "pages_skipped 0" "full_scans 5" "stable_node_chains 0" \
		"stable_node_dups 0" "ksm_zero_pages 3" "general_profit -2097152" \
		"run 1" "pages_to_scan 100" "sleep_millisecs 20" "max_page_sharing 256" \
		"merge_across_nodes 1" "use_zero_pages 0" "stable_node_chains_prune_millisecs 2000" \
		"smart_scan 1" "rmap_items 640" "metadata_bytes 1048576" \
		"est_profit -9223372036854775808" "scan_cpu_ns 18446744073709551615" \
		"future_counter 42" "dry_run 0" \
		"proc.ksm_rmap_items 640" "proc.ksm_zero_pages 3" "proc.ksm_merging_pages 30" \
		"proc.ksm_process_profit -4096" "proc.ksm_merge_any 1" "proc.ksm_mergeable 1" \
		"$@" END
}

if ! command -v python3 >/dev/null 2>&1; then
	echo "note: python3 not found, status/set answers not checked"
else
	mock=$tmp/mock
	mkdir "$mock"
	sleep 120 &
	decoy=$!
	mock_server "$mock" "$decoy" &
	mock_job=$!
	mpid=
	# (mock_job may be a shell waiting for python3: kill the server by its own pid too.)
	trap 'kill $mock_job $mpid $decoy 2>/dev/null; rm -rf "$tmp"' EXIT INT TERM
	i=0
	while [ ! -e "$mock/ready" ] && [ $i -lt 300 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	mpid=$(cat "$mock/ready" 2>/dev/null)
	checks=$((checks + 1))
	if [ -z "$mpid" ]; then
		fail "the stand-in control server did not start"
	else
		# status: the table, grouped, general_profit in MiB
		status_answer "$mpid"
		if run 0 status --pid "$mpid"; then
			expect "status sends STATUS" grep -qx STATUS "$mock/request"
			expect "status title" grep -Eq "^process $mpid .*libksmu 0\.3\.0, preloaded, merge-any on" "$out"
			expect "status shows general_profit in MiB" \
				grep -Eq '^  general_profit +-2097152 \(-2\.0 MiB\)$' "$out"
			expect "status shows pages_sharing" grep -Eq '^  pages_sharing +30$' "$out"
			expect "status keeps unknown names" grep -Eq '^  future_counter +42$' "$out"
			expect "status shows 64-bit values" \
				grep -Eq '^  scan_cpu_ns +18446744073709551615$' "$out"
			expect "status shows INT64_MIN" \
				grep -Eq '^  est_profit +-9223372036854775808 ' "$out"
			expect "status drops the proc. prefix" grep -Eq '^  ksm_merging_pages +30$' "$out"
			expect "status: counters, then knobs, then engine, then process" sh -c '
				c=$(grep -n "^counters" "$1" | cut -d: -f1)
				k=$(grep -n "^knobs" "$1" | cut -d: -f1)
				e=$(grep -n "^engine" "$1" | cut -d: -f1)
				p=$(grep -n "^this process" "$1" | cut -d: -f1)
				g=$(grep -n "general_profit" "$1" | cut -d: -f1)
				r=$(grep -n "^  pages_to_scan" "$1" | cut -d: -f1)
				d=$(grep -n "^  dry_run" "$1" | cut -d: -f1)
				m=$(grep -n "^  rmap_items" "$1" | cut -d: -f1)
				[ -n "$c" ] && [ -n "$k" ] && [ -n "$e" ] && [ -n "$p" ] &&
				[ "$c" -lt "$g" ] && [ "$g" -lt "$k" ] && [ "$k" -lt "$r" ] &&
				[ "$r" -lt "$e" ] && [ "$k" -lt "$d" ] && [ "$d" -lt "$e" ] &&
				[ "$e" -lt "$m" ] && [ "$m" -lt "$p" ]' sh "$out"
			expect "status prints nothing on stderr" test ! -s "$err"
		fi

		# status --json: the documented object
		status_answer "$mpid"
		if run 0 status --pid "$mpid" --json; then
			expect "status --json: documented keys and values" python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
want = {"pid": int(sys.argv[2]), "version": 300, "merge_any": 1, "preload": 1}
for k, v in want.items():
    if d.get(k) != v or type(d.get(k)) is not int:
        sys.exit("%s: %r, want %r" % (k, d.get(k), v))
st, pr = d["stats"], d["proc"]
if st.get("general_profit") != -2097152 or st.get("pages_sharing") != 30:
    sys.exit("stats: %r" % st)
if st.get("est_profit") != -2**63 or st.get("scan_cpu_ns") != 2**64 - 1:
    sys.exit("64-bit values: %r" % st)
if st.get("future_counter") != 42 or st.get("pages_to_scan") != 100:
    sys.exit("unknown names and knobs belong in stats: %r" % st)
if any(k in st for k in ("pid", "version", "merge_any", "preload")) or \
   any(k.startswith("proc") for k in st):
    sys.exit("header or proc names in stats: %r" % st)
if pr != {"ksm_rmap_items": 640, "ksm_zero_pages": 3, "ksm_merging_pages": 30,
          "ksm_process_profit": -4096, "ksm_merge_any": 1, "ksm_mergeable": 1}:
    sys.exit("proc: %r" % pr)
if set(d) != {"pid", "version", "merge_any", "preload", "stats", "proc"}:
    sys.exit("keys: %r" % sorted(d))
' "$out" "$mpid"
		fi

		# Malformed answers: exit 1 and say so, print nothing.
		# (Shell variables are global: not the names run/expect/failure use.)
		malformed() {
			problem=$1
			shift
			"$@"
			failure "malformed answer" status --pid "$mpid"
			expect "malformed answer ($problem): named" grep -qF -- "$problem" "$err"
		}
		malformed "not NAME VALUE" status_answer "$mpid" END2
		malformed "no END line" answer OK "pid $mpid" "version 1" "merge_any 0" "preload 0"
		malformed "no END line" answer OK "pid $mpid"
		malformed "lines after END" answer OK "pid $mpid" "version 1" "merge_any 0" "preload 0" END "pages_shared 1" END
		malformed "not a decimal integer" status_answer "$mpid" "pages_shared2 12x"
		malformed "not a decimal integer" status_answer "$mpid" "x 1.5"
		malformed "not a decimal integer" status_answer "$mpid" "x +1"
		malformed "not a decimal integer" status_answer "$mpid" "x "
		malformed "not NAME VALUE" status_answer "$mpid" "lonely"
		malformed "out of range" status_answer "$mpid" "x 18446744073709551616"
		malformed "out of range" status_answer "$mpid" "x -9223372036854775809"
		malformed "bad name" status_answer "$mpid" "x\"y 1"
		malformed "bad name" status_answer "$mpid" " 1"
		malformed "not a decimal integer" status_answer "$mpid" "x  1"
		malformed "name sent twice" status_answer "$mpid" "pages_shared 13"
		malformed "no 'preload'" answer OK "pid $mpid" "version 1" "merge_any 0" END
		malformed "merge_any is not 0 or 1" answer OK "pid $mpid" "version 1" "merge_any 2" "preload 0" END
		malformed "neither OK nor ERR" answer "HELLO" "pid $mpid" END
		malformed "bad ERR line" answer "ERR"
		malformed "bad ERR line" answer "ERR eperm lowercase"
		malformed "cut short" sh -c 'printf "OK\npid 1" >"$1"' sh "$mock/answer"
		malformed "not printable" sh -c 'printf "OK\npid 1\033[2J\nEND\n" >"$1"' sh "$mock/answer"
		malformed "without an answer" sh -c ': >"$1"' sh "$mock/answer"
		malformed "longer than" python3 -c 'open(__import__("sys").argv[1], "w").write("OK\n" + "x 1\n" * 20000 + "END\n")' "$mock/answer"
		status_answer 1
		failure "answered for process 1;" status --pid "$mpid"

		# The server's refusal is reported in its own words.
		answer "ERR EPERM not the owner of process $mpid"
		failure "not the owner of process $mpid (EPERM)" status --pid "$mpid"

		# set: the request on the wire, OK, ERR
		answer OK
		if run 0 set --pid "$mpid" pages-to-scan 01000; then
			expect "set sends SET with the normalised name and value" \
				grep -qx "SET pages_to_scan 1000" "$mock/request"
			expect "set prints nothing" test ! -s "$out"
		fi
		answer "ERR EBUSY pages are shared"
		failure "pages are shared (EBUSY)" set --pid "$mpid" max_page_sharing 10
		expect "set sent the request" grep -qx "SET max_page_sharing 10" "$mock/request"
		answer OK extra
		failure "lines after OK" set --pid "$mpid" run 1
		answer OK END
		failure "lines after OK" set --pid "$mpid" run 1

		# A socket named ksmu/PID that another process listens on.
		answer OK
		failure "belongs to process $mpid, not to process $decoy" set --pid "$decoy" run 0
		expect "nothing sent to the wrong process" test ! -s "$mock/request"

		# A server that never answers: give up after the timeout.
		answer HANG
		failure "did not answer within" status --pid "$mpid"
	fi
fi

t_finish
