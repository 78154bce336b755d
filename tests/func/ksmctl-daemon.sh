#!/bin/sh
# SPDX-License-Identifier: MIT
# Description: ksmctl's ksmd-user commands (status, set, unmerge, top,
# export, daemon without --pid) against a stand-in daemon (fake-ksmd.py):
# the words, the JSON and the Prometheus output of a canned STATUS, the
# requests on the wire, the HTTP endpoint, the refresh loop, starting a
# daemon, and a clear error with exit status 1 for every malformed,
# refused or missing reply and for a missing daemon; bad knob values are
# refused before any connection.  The real daemon is tested elsewhere.
#
# Usage: ksmctl-daemon.sh PATH/TO/ksmctl
# Exit status: 0 pass, 1 fail, 77 skip (no python3).

if [ $# -ne 1 ]; then
	echo "usage: $0 PATH/TO/ksmctl" >&2
	exit 1
fi
KSMCTL=$1
[ -x "$KSMCTL" ] || { echo "FAIL: $KSMCTL is not executable" >&2; exit 1; }
case $KSMCTL in /*) ;; *) KSMCTL=$PWD/$KSMCTL ;; esac # the test changes directory
FAKE=$(cd "$(dirname "$0")" && pwd)/fake-ksmd.py
if ! command -v python3 >/dev/null 2>&1; then
	echo "SKIP: python3 not found (the stand-in daemon is a Python script)" >&2
	exit 77
fi
unset KSMU_LOG KSMU_DAEMON

T_PROG=$KSMCTL
T_NAME=ksmctl
. "$(dirname "$0")/t_cli.sh"

# Background processes of this test: all of them killed at exit.
pids=
trap 'kill $pids 2>/dev/null; rm -rf "$tmp"' EXIT INT TERM
sock=$tmp/ksmd.sock
req=$tmp/requests

# start_fake ARGS...: a stand-in on $sock (its pid in $fake), ready.
start_fake() {
	stop_fake
	rm -f "$tmp/ready" "$req"
	python3 "$FAKE" --socket "$sock" --ready "$tmp/ready" --requests "$req" "$@" \
		2>>"$tmp/fake.log" &
	fake=$!
	pids="$pids $fake"
	i=0
	while [ ! -e "$tmp/ready" ] && [ $i -lt 500 ] && kill -0 "$fake" 2>/dev/null; do
		sleep 0.02
		i=$((i + 1))
	done
	checks=$((checks + 1))
	[ -e "$tmp/ready" ] || fail "the stand-in daemon did not start ($*)"
}
fake=
stop_fake() {
	if [ -n "$fake" ]; then
		kill "$fake" 2>/dev/null
		wait "$fake" 2>/dev/null
		fake=
	fi
}

# failure REASON ARGS...: exit 1, REASON on stderr, nothing on stdout
failure() {
	reason=$1
	shift
	if run 1 "$@"; then
		expect "ksmctl $*: says '$reason'" grep -qF -- "$reason" "$err"
		expect "ksmctl $*: nothing on stdout" test ! -s "$out"
	fi
}

# usage_error CULPRIT ARGS...: exit 2, a message naming CULPRIT, nothing on stdout
usage_error() {
	culprit=$1
	shift
	if run 2 "$@"; then
		expect "ksmctl $*: message names '$culprit'" grep -qF -- "$culprit" "$err"
		expect "ksmctl $*: points to help" grep -q "ksmctl help" "$err"
		expect "ksmctl $*: nothing on stdout" test ! -s "$out"
	fi
}

# column FILE SECTION ID COLUMN: the value in COLUMN (a header word) of the
# row ID of the table under the line SECTION
column() {
	awk -v sec="$2" -v id="$3" -v col="$4" '
		$0 == sec { in_sec = 1; next }
		in_sec && head == "" { for (i = 1; i <= NF; i++) h[$i] = i; head = 1; next }
		in_sec && NF == 0 { exit }
		in_sec && $1 == id { print $(h[col]); exit }' "$1"
}

# ------------------------------------------------------------ status, words
start_fake
fpid=$fake
if run 0 status --socket "$sock"; then
	expect "status sends STATUS" grep -qx STATUS "$req"
	expect "status: title" \
		grep -qx "ksmd-user 0.3.0, pid $fpid, up 01:02:03, socket $sock" "$out"
	expect "status: pages_shared" grep -Eqx '  pages_shared +12' "$out"
	expect "status: pages_sharing" grep -Eqx '  pages_sharing +30' "$out"
	expect "status: pages_unshared" grep -Eqx '  pages_unshared +7' "$out"
	expect "status: general_profit in MiB" \
		grep -Eqx '  general_profit +-2097152 \(-2\.0 MiB\)' "$out"
	expect "status: store_bytes" grep -Eqx '  store_bytes +49152 \(0\.0469 MiB\)' "$out"
	expect "status: clients" grep -Eqx '  clients +3' "$out"
	expect "status: ghosts" grep -Eqx '  ghosts +1' "$out"
	expect "status: unknown global names kept" grep -Eqx '  future_counter +42' "$out"
	expect "status: 64-bit values" grep -Eqx '  big +18446744073709551615' "$out"
	expect "status: INT64_MIN" grep -Eqx '  most_negative +-9223372036854775808' "$out"
	expect "status: knob" grep -Eqx '  pages_to_scan +100' "$out"
	expect "status: kernel names first" sh -c '
		a=$(grep -n "^  pages_shared " "$1" | cut -d: -f1)
		b=$(grep -n "^  general_profit " "$1" | cut -d: -f1)
		c=$(grep -n "^  lookups " "$1" | cut -d: -f1)
		d=$(grep -n "^knobs" "$1" | cut -d: -f1)
		e=$(grep -n "^domains" "$1" | cut -d: -f1)
		f=$(grep -n "^stores" "$1" | cut -d: -f1)
		g=$(grep -n "^processes" "$1" | cut -d: -f1)
		[ -n "$a" ] && [ -n "$g" ] && [ "$a" -lt "$b" ] && [ "$b" -lt "$c" ] &&
		[ "$c" -lt "$d" ] && [ "$d" -lt "$e" ] && [ "$e" -lt "$f" ] && [ "$f" -lt "$g" ]' \
		sh "$out"
	expect "status: domain uid:1000 clients" \
		test "$(column "$out" domains uid:1000 CLIENTS)" = 2
	expect "status: domain uid:1000 store pages" \
		test "$(column "$out" domains uid:1000 STORE_PAGES)" = 12
	expect "status: domain with dots and dashes" \
		test "$(column "$out" domains web.front-1 CLIENTS)" = 1
	expect "status: domain with capitals" test "$(column "$out" domains Batch_2 CLIENTS)" = 0
	expect "status: store 7 domain" test "$(column "$out" stores 7 DOMAIN)" = web.front-1
	expect "status: store 7 node" test "$(column "$out" stores 7 NODE)" = 1
	expect "status: store 1 pages" test "$(column "$out" stores 1 PAGES)" = 12
	expect "status: process table header" grep -Eqx \
		'  PID +UID +DOMAIN +CONNECTED +GRANTS +PAGES_SHARING +REMOTE_PAGES +MERGES +COW_BREAKS +GENERAL_PROFIT' \
		"$out"
	for cv in UID=1000 DOMAIN=uid:1000 CONNECTED=1 GRANTS=17 PAGES_SHARING=20 \
		REMOTE_PAGES=18 MERGES=15 COW_BREAKS=2 GENERAL_PROFIT=-4096; do
		expect "status: process 4243 ${cv%%=*}" \
			test "$(column "$out" processes 4243 "${cv%%=*}")" = "${cv#*=}"
	done
	expect "status: a ghost without a report" \
		test "$(column "$out" processes 5000 CONNECTED)/$(column "$out" processes 5000 MERGES)" = "0/-"
	expect "status: nothing on stderr" test ! -s "$err"
fi

# The socket from KSMU_DAEMON; --socket wins over it; "off" means the default.
export KSMU_DAEMON="$sock"
if run 0 status; then
	expect "KSMU_DAEMON names the socket" grep -q "socket $sock\$" "$out"
fi
KSMU_DAEMON=$tmp/none
run 0 status --socket "$sock"
failure "ksmctl: no ksmd-user at $tmp/none: No such file or directory" unmerge
KSMU_DAEMON=off
if [ ! -e /run/ksmu/ksmd.sock ]; then
	usage_error "missing --pid PID, and no ksmd-user at /run/ksmu/ksmd.sock" status
	failure "no ksmd-user at /run/ksmu/ksmd.sock" top --count 1
fi
unset KSMU_DAEMON

# ------------------------------------------------------------ status --json
if run 0 status --socket "$sock" --json; then
	expect "status --json is valid JSON" python3 -m json.tool "$out" "$tmp/pretty"
	expect "status --json: documented shape and values" python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
fpid = int(sys.argv[2])
def want(cond, what):
    if not cond:
        sys.exit("%s: %r" % (what, d))
want(list(d) == ["daemon", "global", "knob", "domains", "stores", "processes"], "keys")
dm = d["daemon"]
want(dm == {"version": "0.3.0", "pid": fpid, "uptime_ms": 3723000, "clients": 3, "ghosts": 1},
     "daemon")
g = d["global"]
want(g["pages_shared"] == 12 and g["pages_sharing"] == 30 and g["pages_unshared"] == 7, "pages")
want(g["general_profit"] == -2097152 and g["store_bytes"] == 49152, "profit")
want(g["big"] == 2**64 - 1 and g["most_negative"] == -2**63, "64-bit values")
want(g["future_counter"] == 42 and len(g) == 17, "unknown globals kept")
want(all(type(v) is int for v in list(g.values()) + [dm["pid"]]), "numbers as numbers")
want(d["knob"] == {"pages_to_scan": 100, "sleep_millisecs": 20}, "knob")
want(d["domains"] == {"uid:1000": {"clients": 2, "store_pages": 12},
                      "web.front-1": {"clients": 1, "store_pages": 0},
                      "Batch_2": {"clients": 0, "store_pages": 0}}, "domains")
want(d["stores"] == {"1": {"domain": "uid:1000", "node": 0, "pages": 12},
                     "7": {"domain": "web.front-1", "node": 1, "pages": 0}}, "stores")
p = d["processes"]
want(sorted(p) == ["4243", "5000"], "process keys")
want(p["5000"] == {"uid": 0, "domain": "web.front-1", "connected": 0, "grants": 3}, "ghost")
q = p["4243"]
want(q["domain"] == "uid:1000" and q["uid"] == 1000 and q["general_profit"] == -4096, "proc")
want(q["cow_breaks"] == 2 and q["future_field"] == 7 and len(q) == 18, "proc fields")
' "$out" "$fpid"
fi

# ------------------------------------------------------------ export --prometheus
# A checker of the text format: names, labels, HELP and TYPE once and
# before the samples, the samples of a family together, values integers.
cat >"$tmp/promcheck.py" <<'EOF'
import re, sys
name = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
label = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\["\\n])*"'
sample = re.compile(r"^(%s)(\{%s(?:,%s)*\})? -?[0-9]+$" % (name, label, label))
meta = re.compile(r"^# (HELP|TYPE) (%s) (.+)$" % name)
seen, done, cur, typed, n = set(), set(), None, set(), 0
for i, line in enumerate(open(sys.argv[1]).read().split("\n")[:-1], 1):
    m = meta.match(line)
    if m:
        kind, fam = m.group(1), m.group(2)
        if (kind, fam) in seen or fam in done:
            sys.exit("line %d: %s again: %r" % (i, kind, line))
        if kind == "TYPE" and m.group(3) not in ("counter", "gauge", "untyped"):
            sys.exit("line %d: bad type" % i)
        seen.add((kind, fam))
        if cur != fam and cur is not None:
            done.add(cur)
        cur = fam
        continue
    m = sample.match(line)
    if not m:
        sys.exit("line %d: not a sample: %r" % (i, line))
    if m.group(1) != cur or ("HELP", cur) not in seen or ("TYPE", cur) not in seen:
        sys.exit("line %d: sample outside its family: %r" % (i, line))
    n += 1
if n < 40:
    sys.exit("only %d samples" % n)
EOF
if run 0 export --prometheus --socket "$sock"; then
	expect "prometheus: the text format" python3 "$tmp/promcheck.py" "$out"
	for line in 'ksmu_daemon_info{version="0.3.0"} 1' \
		'# TYPE ksmu_pages_shared gauge' 'ksmu_pages_shared 12' 'ksmu_pages_sharing 30' \
		'ksmu_pages_unshared 7' 'ksmu_general_profit -2097152' 'ksmu_store_pages 12' \
		'ksmu_store_bytes 49152' '# TYPE ksmu_lookups counter' 'ksmu_daemon_clients 3' \
		'ksmu_daemon_ghosts 1' 'ksmu_future_counter 42' 'ksmu_knob_pages_to_scan 100' \
		'ksmu_domain_clients{domain="uid:1000"} 2' \
		'ksmu_domain_store_pages{domain="web.front-1"} 0' \
		'ksmu_store_pages_by_store{store="1",domain="uid:1000"} 12' \
		'ksmu_store_node{store="7",domain="web.front-1"} 1' \
		'# TYPE ksmu_process_merges counter' \
		'ksmu_process_cow_breaks{pid="4243",uid="1000",domain="uid:1000"} 2' \
		'ksmu_process_general_profit{pid="4243",uid="1000",domain="uid:1000"} -4096' \
		'ksmu_process_grants{pid="5000",uid="0",domain="web.front-1"} 3' \
		'ksmu_big 18446744073709551615'; do
		expect "prometheus: $line" grep -qxF -- "$line" "$out"
	done
	expect "prometheus: the text domain is a label, not a sample" \
		sh -c '! grep -q "^ksmu_store_domain\|^ksmu_process_domain\|^ksmu_process_uid" "$1"' \
		sh "$out"
	expect "prometheus: nothing on stderr" test ! -s "$err"
fi

# --output: written whole, atomically, the same metrics; nothing on stdout
if run 0 export --prometheus --socket "$sock" --output "$tmp/ksmu.prom"; then
	expect "export --output: nothing on stdout" test ! -s "$out"
	expect "export --output: the file is the text format" python3 "$tmp/promcheck.py" \
		"$tmp/ksmu.prom"
	expect "export --output: the metrics" grep -qx 'ksmu_pages_shared 12' "$tmp/ksmu.prom"
	expect "export --output: no FILE.tmp left" test ! -e "$tmp/ksmu.prom.tmp"
fi
failure "cannot create $tmp/nodir/x.prom.tmp" export --prometheus --socket "$sock" \
	--output "$tmp/nodir/x.prom"
# A daemon that is down leaves the file as it was.
cp "$tmp/ksmu.prom" "$tmp/before.prom"
failure "no ksmd-user at $tmp/none" export --prometheus --socket "$tmp/none" \
	--output "$tmp/ksmu.prom"
expect "export --output: an old file is kept when the daemon is down" \
	cmp -s "$tmp/ksmu.prom" "$tmp/before.prom"
# Written beside, then renamed over: a reader sees the old file or the new one.
ino=$(ls -i "$tmp/ksmu.prom" | cut -d' ' -f1)
run 0 export --prometheus --socket "$sock" --output "$tmp/ksmu.prom"
expect "export --output: the file is replaced (rename), not rewritten" \
	test "$(ls -i "$tmp/ksmu.prom" | cut -d' ' -f1)" != "$ino"
expect "export --output: mode 0644 for the collector" \
	test "$(stat -c %a "$tmp/ksmu.prom")" = 644
cp "$tmp/ksmu.prom" "$tmp/before.prom"
mkdir "$tmp/ksmu.prom.tmp"
failure "cannot create $tmp/ksmu.prom.tmp" export --prometheus --socket "$sock" \
	--output "$tmp/ksmu.prom"
expect "export --output: the old file is intact when FILE.tmp cannot be written" \
	cmp -s "$tmp/ksmu.prom" "$tmp/before.prom"
rmdir "$tmp/ksmu.prom.tmp"

# ------------------------------------------------------------ text escaped
start_fake --version '0.3.0"q\x'
if run 0 status --socket "$sock" --json; then
	expect "json: text escaped" python3 -c '
import json, sys
v = json.load(open(sys.argv[1]))["daemon"]["version"]
sys.exit(0 if v == "0.3.0\"q\\x" else "version %r" % v)' "$out"
fi
if run 0 export --prometheus --socket "$sock"; then
	expect "prometheus: label escaped" grep -qxF 'ksmu_daemon_info{version="0.3.0\"q\\x"} 1' "$out"
	expect "prometheus: still the text format" python3 "$tmp/promcheck.py" "$out"
fi
start_fake

# ------------------------------------------------------------ set, unmerge
if run 0 set --socket "$sock" pages-to-scan 01000; then
	expect "set sends SET with the normalised name and value" \
		grep -qx "SET pages_to_scan 1000" "$req"
	expect "set prints the answer" grep -qx "OK: pages_to_scan is 1000 for every agent now (host default)" "$out"
fi
failure "ksmctl: ksmd-user at $sock refused: pages are shared (EBUSY)" \
	set --socket "$sock" max_page_sharing 10
expect "set: the refused request was sent" grep -qx "SET max_page_sharing 10" "$req"
# Refused locally: nothing reaches the daemon.
rm -f "$req"
usage_error "invalid value '1x' for pages_to_scan" set --socket "$sock" pages_to_scan 1x
usage_error "value 3 is out of range for run" set --socket "$sock" run 3
usage_error "out of range for max_page_sharing" set --socket "$sock" max_page_sharing 1
usage_error "unknown knob 'bogus'" set --socket "$sock" bogus 1
usage_error "unknown knob 'pages_shared'" set --socket "$sock" pages_shared 1
usage_error "missing VALUE for 'run'" set --socket "$sock" run
expect "set: a bad value never reaches the daemon" test ! -e "$req"

if run 0 unmerge --socket "$sock"; then
	expect "unmerge sends UNMERGE" grep -qx UNMERGE "$req"
	expect "unmerge: the agents told" grep -qx "unmerge requested from 3 agents" "$out"
fi

# ------------------------------------------------------------ top
if run 0 top --socket "$sock" --interval 100 --count 2; then
	expect "top: two refreshes" test "$(grep -c '^ksmctl top: ' "$out")" = 2
	expect "top: the status view twice" test "$(grep -c '^ksmd-user 0\.3\.0, pid ' "$out")" = 2
	expect "top: no rates on the first refresh" \
		grep -qx 'rates: lookups -/s, matches -/s, merges -/s (from the next refresh on)' "$out"
	# 1000 lookups, 5 matches, 10 merges per refresh, 100 ms apart and a bit more:
	# per second, not per refresh
	expect "top: rates on the second refresh" python3 -c '
import re, sys
r = [l for l in open(sys.argv[1]) if l.startswith("rates:")]
m = re.match(r"rates: lookups ([0-9.]+)/s, matches ([0-9.]+)/s, merges ([0-9.]+)/s$", r[1])
if not m:
    sys.exit("second rates line: %r" % r[1])
l, a, g = map(float, m.groups())
if not (1500 < l <= 10000 and 7.5 < a <= 50 and 15 < g <= 100) or \
        abs(l / a - 200) > 2 or abs(l / g - 100) > 1:
    sys.exit("rates %r" % (m.groups(),))' "$out"
	expect "top: no screen clearing when stdout is not a terminal" \
		sh -c '! grep -q "$(printf "\033")" "$1"' sh "$out"
	expect "top: one STATUS per refresh" test "$(grep -cx STATUS "$req")" = 2
fi
if command -v script >/dev/null 2>&1; then
	checks=$((checks + 1))
	script -qec "'$KSMCTL' top --socket '$sock' --count 1" /dev/null </dev/null >"$out" 2>"$err"
	grep -q "$(printf '\033\\[H\033\\[2J')" "$out" || fail "top clears a terminal"
fi
usage_error "invalid count '0'" top --socket "$sock" --count 0
usage_error "invalid interval '5'" top --socket "$sock" --interval 5
usage_error "invalid interval 'x'" top --socket "$sock" --interval x

# ------------------------------------------------------------ export --listen
# start_exporter ARGS...: ksmctl export in the background; its URL in $url.
start_exporter() {
	"$KSMCTL" export "$@" >"$tmp/http.out" 2>"$tmp/http.err" &
	exporter=$!
	pids="$pids $exporter"
	i=0
	while ! grep -q '^serving ' "$tmp/http.out" 2>/dev/null && [ $i -lt 100 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	url=$(sed -n 's/^serving \(http:[^ ]*\)\/metrics$/\1/p' "$tmp/http.out")
	checks=$((checks + 1))
	[ -n "$url" ] || fail "ksmctl export $* did not start serving"
}
# fetch METHOD PATH: "STATUS CONTENT-TYPE" on the first line, then the body
fetch() {
	python3 -c '
import sys, urllib.request, urllib.error
rq = urllib.request.Request(sys.argv[1] + sys.argv[3], method=sys.argv[2])
try:
    r = urllib.request.urlopen(rq, timeout=10)
except urllib.error.HTTPError as e:
    r = e
print(r.status, r.headers.get("Content-Type"))
sys.stdout.write(r.read().decode())' "$url" "$@"
}
start_exporter --socket "$sock" --listen 127.0.0.1:0
if [ -n "$url" ]; then
	expect "http: listens on loopback" sh -c 'echo "$1" | grep -q "^http://127\.0\.0\.1:[1-9][0-9]*$"' \
		sh "$url"
	rm -f "$req"
	fetch GET /metrics >"$tmp/page"
	expect "http: GET /metrics is 200, text format 0.0.4" \
		grep -qx '200 text/plain; version=0.0.4; charset=utf-8' "$tmp/page"
	expect "http: the metrics" grep -qx 'ksmu_pages_shared 12' "$tmp/page"
	sed 1d "$tmp/page" >"$tmp/page.body"
	expect "http: the body is the text format" python3 "$tmp/promcheck.py" "$tmp/page.body"
	fetch GET /metrics >/dev/null
	expect "http: one STATUS per request" test "$(grep -cx STATUS "$req")" = 2
	fetch GET / >"$tmp/page"
	expect "http: GET / is 404" grep -q '^404 ' "$tmp/page"
	fetch GET /metricsX >"$tmp/page"
	expect "http: GET /metricsX is 404" grep -q '^404 ' "$tmp/page"
	fetch POST /metrics >"$tmp/page"
	expect "http: POST is 405" grep -q '^405 ' "$tmp/page"
	# A client that sends nothing holds the server for the timeout only.
	expect "http: a silent client does not block the next" python3 -c '
import socket, sys, time, urllib.request
host, port = sys.argv[1][len("http://"):].rsplit(":", 1)
idle = socket.create_connection((host, int(port)))
t = time.time()
body = urllib.request.urlopen(sys.argv[1] + "/metrics", timeout=10).read().decode()
if "ksmu_pages_shared 12" not in body or time.time() - t > 5:
    sys.exit("served after %.1f s" % (time.time() - t))' "$url"
	# Garbage gets 400, and the server goes on.
	expect "http: a bad request is 400" python3 -c '
import socket, sys
host, port = sys.argv[1][len("http://"):].rsplit(":", 1)
s = socket.create_connection((host, int(port)), timeout=10)
s.sendall(b"HELLO\r\n\r\n")
a = s.recv(100)
sys.exit(0 if a.startswith(b"HTTP/1.0 400 ") else "answer %r" % a)' "$url"
	fetch GET /metrics >"$tmp/page"
	expect "http: still serving" grep -qx 'ksmu_pages_shared 12' "$tmp/page"
	kill "$exporter"
fi
# The daemon down: 503, and the reason.
start_exporter --socket "$tmp/none" --listen localhost:0
if [ -n "$url" ]; then
	fetch GET /metrics >"$tmp/page"
	expect "http: no daemon is 503" grep -q '^503 ' "$tmp/page"
	expect "http: 503 says why" grep -qF "no ksmd-user at $tmp/none" "$tmp/page"
	kill "$exporter"
fi
# Loopback only.  (Under timeout(1): a server that wrongly starts must not
# hang the test.)
printf '#!/bin/sh\nexec timeout 10 "%s" "$@"\n' "$KSMCTL" >"$tmp/ksmctl-timeout"
chmod +x "$tmp/ksmctl-timeout"
T_PROG=$tmp/ksmctl-timeout
usage_error "not a loopback address" export --socket "$sock" --listen 0.0.0.0:9464
usage_error "not a loopback address" export --socket "$sock" --listen 10.1.2.3:9464
usage_error "not a loopback address" export --socket "$sock" --listen 128.0.0.1:9464
usage_error "not a loopback address" export --socket "$sock" --listen '[::]:9464'
usage_error "not a loopback address" export --socket "$sock" --listen '[::ffff:10.0.0.1]:9464'
usage_error "invalid address 'example.com:80'" export --socket "$sock" --listen example.com:80
usage_error "invalid address '127.0.0.1'" export --socket "$sock" --listen 127.0.0.1
usage_error "invalid address '127.0.0.1:65536'" export --socket "$sock" --listen 127.0.0.1:65536
usage_error "invalid address '[::1]'" export --socket "$sock" --listen '[::1]'
T_PROG=$KSMCTL
usage_error "missing --prometheus or --listen" export --socket "$sock"
usage_error "exclude each other" export --listen 127.0.0.1:0 --output "$tmp/x"

# ------------------------------------------------------------ usage errors
usage_error "exclude each other" status --pid 1 --socket "$sock"
usage_error "exclude each other" set --pid 1 --socket "$sock" run 1
usage_error "empty socket path" status --socket ""
usage_error "is too long" unmerge --socket "/$(printf '%0120d' 0)"
usage_error "unexpected argument 'x'" unmerge --socket "$sock" x
for c in status set unmerge top export daemon; do
	if run 0 help "$c"; then
		expect "help $c: the synopsis" grep -q "^Usage: ksmctl $c " "$out"
		expect "help $c: --socket" grep -q -- '--socket PATH' "$out"
	fi
done
if run 0 help; then
	for c in status set unmerge top export daemon; do
		expect "help lists $c" grep -q "^  $c " "$out"
	done
fi

# ------------------------------------------------------------ no daemon
failure "ksmctl: no ksmd-user at $tmp/none: No such file or directory" status --socket "$tmp/none"
failure "ksmctl: no ksmd-user at $tmp/none: No such file or directory" status --json --socket "$tmp/none"
failure "ksmctl: no ksmd-user at $tmp/none: No such file or directory" set --socket "$tmp/none" run 1
failure "ksmctl: no ksmd-user at $tmp/none: No such file or directory" top --socket "$tmp/none"
# A socket nobody listens on (a daemon that died).
python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET).bind(sys.argv[1])' \
	"$tmp/stale.sock"
failure "ksmctl: no ksmd-user at $tmp/stale.sock: Connection refused" status --socket "$tmp/stale.sock"

# ------------------------------------------------------------ bad replies
# bad_reply REASON FAKE-ARGS...: status fails with REASON
bad_reply() {
	reason=$1
	shift
	start_fake "$@"
	failure "$reason" status --socket "$sock"
}
m="ksmctl: ksmd-user at $tmp/ksmd.sock sent a malformed reply: "
L=59 # the line after the 58 of the canned STATUS
s="ksmctl: ksmd-user at $tmp/ksmd.sock sent a malformed STATUS reply: "
bad_reply "${m}bad magic 0x4b534d57 (want 0x574d534b)" --mode badmagic
bad_reply "${m}seq 2, but the request was 1" --mode badseq
bad_reply "${m}a CTL message (type 11), not CTL_REPLY" --mode badtype
bad_reply "${m}the header says " --mode badlen
bad_reply "${m}flags 0x1 on a CTL_REPLY message" --mode badflags
bad_reply "${m}a packet of 8 bytes, shorter than a message header" --mode short
bad_reply "${m}a NUL byte in the CTL_REPLY text" --mode nul
bad_reply "${m}an empty CTL_REPLY text" --mode emptytext
bad_reply "${m}a bad CTL_REPLY message (Message too long)" --mode oversize
bad_reply "${m}byte 0x1b at offset " --mode nonprint
bad_reply "${m}a packet of 140024 bytes, more than the 131352 allowed" --mode huge
bad_reply "ksmctl: ksmd-user at $tmp/ksmd.sock refused the request: Operation not permitted" \
	--mode error
bad_reply "ksmctl: ksmd-user at $tmp/ksmd.sock did not answer within 2 s" --mode hang
bad_reply "ksmctl: ksmd-user at $tmp/ksmd.sock closed the connection without a reply" \
	--mode close
bad_reply "ksmctl: ksmd-user at $tmp/ksmd.sock refused: not for you (EPERM)" \
	--reply 'ERR EPERM not for you\n'
bad_reply "${m}bad ERR reply" --reply 'ERR eperm lowercase\n'
bad_reply "${m}bad ERR reply" --reply 'ERR EPERM x\nglobal.x 1\n'
# Lines: KEY VALUE, keys of the documented shapes, values of their kind.
bad_reply "${s}line $L: not KEY VALUE" --extra global.x
bad_reply "${s}line $L: an empty line" --extra "" --extra "global.x 1"
bad_reply "${s}line $L: more than one value for global.x" --extra "global.x 1 2"
bad_reply "${s}line $L: no value for global.x" --extra "global.x "
for k in Global.x foo.bar global global.a.b global.X knob.a-b "domain.bad/name.clients" \
	domain.uid:.clients domain.uid:x.clients domain.x.Clients domain..clients \
	domain.abcdefghijklmnopqrstuvwxyzABCDEF.clients store.x.pages store.01.pages \
	store.0.pages store.4294967296.pages store.1 proc.0.uid proc.-1.uid proc.1.2.uid \
	proc.4243 "proc.4243.a:b" daemon. daemon.a.b; do
	bad_reply "${s}line $L: unknown key shape '$k'" --extra "$k 1"
done
bad_reply "${s}line $L: more than one blank after global.x" --extra "global.x  1"
for v in 12x 1.5 +1 0x10 - -x 1e3 1_000; do
	bad_reply "${s}line $L: value of global.x is not a decimal integer: '$v'" --extra "global.x $v"
done
bad_reply "${s}line $L: value of global.x out of range" --extra "global.x 18446744073709551616"
bad_reply "${s}line $L: value of global.x out of range" --extra "global.x -9223372036854775809"
bad_reply "${s}line $L: bad domain name 'bad/dom'" --extra "proc.6000.domain bad/dom"
bad_reply "${s}line $L: bad domain name 'uid:x'" --extra "store.9.domain uid:x"
bad_reply "${s}line 58: bad version '$(printf '%064d' 0)'" \
	--omit daemon.version --extra "daemon.version $(printf '%070d' 0)"
bad_reply "${s}global.pages_shared sent twice" --extra "global.pages_shared 13"
bad_reply "${s}proc.4243.uid sent twice" --extra "proc.4243.uid 1000"
bad_reply "${s}proc.4243.connected is not 0 or 1" --omit proc.4243.connected \
	--extra "proc.4243.connected 2"
bad_reply "${s}no daemon.version" --omit daemon.version
bad_reply "${s}no daemon.pid" --omit daemon.pid
bad_reply "${s}bad daemon.pid" --omit daemon.pid --extra "daemon.pid 0"
bad_reply "${s}line 1: not KEY VALUE" --reply 'OK\n'
# Every output refuses a bad reply, and says so.
start_fake --mode badmagic
failure "${m}bad magic" status --json --socket "$sock"
failure "${m}bad magic" export --prometheus --socket "$sock"
failure "${m}bad magic" top --socket "$sock" --count 1
failure "${m}bad magic" unmerge --socket "$sock"
failure "${m}bad magic" set --socket "$sock" run 1
cp "$tmp/before.prom" "$tmp/ksmu.prom"
failure "${m}bad magic" export --prometheus --socket "$sock" --output "$tmp/ksmu.prom"
expect "export --output: an old file is kept when the reply is bad" \
	cmp -s "$tmp/ksmu.prom" "$tmp/before.prom"
# The one-line replies of SET and UNMERGE.
start_fake --reply 'OK 3\n'
failure "${m%: }" set --socket "$sock" run 1
expect "set: a reply other than OK is malformed" \
	grep -qF "sent a malformed reply to SET: 'OK 3' (want OK or ERR)" "$err"
for r in OK OK\ x "OK 3 4" "OK -1" "ok 3" "OK 3\nOK"; do
	start_fake --reply "$r"
	failure "${m%: }" unmerge --socket "$sock"
	expect "unmerge: '$r' is malformed" grep -qF "want OK N" "$err"
done
start_fake --reply 'ERR EPERM only root may unmerge the host\n'
failure "ksmctl: ksmd-user at $sock refused: only root may unmerge the host (EPERM)" \
	unmerge --socket "$sock"
stop_fake

# ------------------------------------------------------------ daemon
# A stand-in ksmd-user program: the fake, started by ksmctl with
# ksmd-user's options (the interpreter by its path: PATH may be changed).
PY=$(python3 -c 'import sys; print(sys.executable)')
mk_ksmd() {
	mkdir -p "$(dirname "$1")"
	printf '#!/bin/sh\nexec "%s" "%s" "$@"\n' "$PY" "$FAKE" >"$1"
	chmod +x "$1"
}
# reap PID: wait until the process is gone (it is not our child)
reap() {
	i=0
	while kill -0 "$1" 2>/dev/null && [ $i -lt 100 ]; do
		sleep 0.05
		i=$((i + 1))
	done
}
# mk_ksmctl DIR: a copy of ksmctl in DIR (it finds ksmd-user from there)
mk_ksmctl() {
	mkdir -p "$1"
	cp "$KSMCTL" "$1/ksmctl"
}
# daemon_started LOG: ksmctl printed "running", the daemon answers and is ours
daemon_started() {
	dpid=$(sed -n "s/^ksmd-user running, pid \([0-9]*\), socket .*/\1/p" "$out")
	checks=$((checks + 1))
	if [ -z "$dpid" ]; then
		fail "ksmctl daemon: no 'ksmd-user running, pid N, socket PATH'"
		return
	fi
	pids="$pids $dpid"
	expect "ksmctl daemon: the socket is printed" grep -q ", socket $dsock\$" "$out"
	expect "ksmctl daemon: the daemon answers, pid $dpid" sh -c \
		'"$1" status --socket "$2" --json | grep -q "\"pid\": $3,"' sh "$KSMCTL" "$dsock" "$dpid"
	expect "ksmctl daemon: $1 gets --socket" grep -qF -- "argv --socket $dsock" "$1"
	kill "$dpid" 2>/dev/null
	reap "$dpid"
}
dsock=$tmp/d.sock
# next to ksmctl (installed)
mk_ksmctl "$tmp/inst/bin"
mk_ksmd "$tmp/inst/bin/ksmd-user"
T_PROG=$tmp/inst/bin/ksmctl
if run 0 daemon --socket "$dsock" --log "$tmp/d1.log" -- --config "$tmp/conf" --log-level debug; then
	daemon_started "$tmp/d1.log"
	expect "ksmctl daemon: arguments after -- are passed" \
		grep -qF -- "argv --socket $dsock --config $tmp/conf --log-level debug" "$tmp/d1.log"
fi
# in the build tree: <build>/ksmctl, <build>/ksmd-user/ksmd-user
mk_ksmctl "$tmp/build"
mk_ksmd "$tmp/build/ksmd-user/ksmd-user"
T_PROG=$tmp/build/ksmctl
if run 0 daemon --socket "$dsock" --log "$tmp/d2.log"; then
	daemon_started "$tmp/d2.log"
fi
# in ../sbin (installed with ksmd-user in sbin/)
mk_ksmctl "$tmp/sb/bin"
mk_ksmd "$tmp/sb/sbin/ksmd-user"
T_PROG=$tmp/sb/bin/ksmctl
if run 0 daemon --socket "$dsock" --log "$tmp/d3.log"; then
	daemon_started "$tmp/d3.log"
fi
# in PATH (ksmctl run with another PATH by a wrapper: $T_PROG is run as is)
mk_ksmctl "$tmp/alone/bin"
mk_ksmd "$tmp/path/ksmd-user"
printf '#!/bin/sh\nPATH="%s" exec "%s" "$@"\n' "$tmp/path:$PATH" "$tmp/alone/bin/ksmctl" \
	>"$tmp/ksmctl-path"
printf '#!/bin/sh\nPATH=/nonexistent exec "%s" "$@"\n' "$tmp/alone/bin/ksmctl" >"$tmp/ksmctl-nopath"
chmod +x "$tmp/ksmctl-path" "$tmp/ksmctl-nopath"
T_PROG=$tmp/ksmctl-path
if run 0 daemon --socket "$dsock" --log "$tmp/d4.log"; then
	daemon_started "$tmp/d4.log"
fi
T_PROG=$tmp/ksmctl-nopath
failure "ksmd-user not found next to ksmctl nor in PATH (give --exec FILE)" daemon --socket "$dsock"
# --exec; a relative socket becomes absolute; the default log is /dev/null
T_PROG=$KSMCTL
mk_ksmd "$tmp/other/my-ksmd"
here=$PWD
cd "$tmp" || exit 1
phys=$(pwd -P)
if run 0 daemon --socket d.sock --exec "$tmp/other/my-ksmd" -- --pidfile "$tmp/d5.pid"; then
	dpid=$(cat "$tmp/d5.pid")
	pids="$pids $dpid"
	expect "ksmctl daemon --exec: running, the socket made absolute" \
		grep -qx "ksmd-user running, pid $dpid, socket $phys/d.sock" "$out"
	# One daemon per socket.
	failure "ksmd-user is already running at $phys/d.sock, pid $dpid" \
		daemon --socket "$phys/d.sock" --exec "$tmp/other/my-ksmd"
	kill "$dpid"
	reap "$dpid"
fi
cd "$here" || exit 1
# It did not come up: the reason, exit 1.
failure "ksmd-user exited with status 3 before answering; see $tmp/d6.log" \
	daemon --socket "$dsock" --exec "$tmp/other/my-ksmd" --log "$tmp/d6.log" -- --mode exit3
expect "ksmctl daemon: the log has the daemon's output" grep -q '^fake-ksmd: pid ' "$tmp/d6.log"
failure "(use --log FILE to see why)" daemon --socket "$dsock" --exec "$tmp/other/my-ksmd" -- \
	--mode exit3
failure "did not answer within 5 s, stopped it: no ksmd-user at $dsock" \
	daemon --socket "$dsock" --exec "$tmp/other/my-ksmd" -- --mode silent --pidfile "$tmp/d7.pid"
pids="$pids $(cat "$tmp/d7.pid" 2>/dev/null)"
expect "ksmctl daemon: a daemon that did not come up is stopped" \
	sh -c '! kill -0 "$(cat "$1")" 2>/dev/null' sh "$tmp/d7.pid"
failure "but pid 1 answers at $dsock; stopped pid" \
	daemon --socket "$dsock" --exec "$tmp/other/my-ksmd" -- --daemon-pid 1 --pidfile "$tmp/d8.pid"
pids="$pids $(cat "$tmp/d8.pid" 2>/dev/null)"
expect "ksmctl daemon: a daemon with another pid is stopped" \
	sh -c '! kill -0 "$(cat "$1")" 2>/dev/null' sh "$tmp/d8.pid"
printf 'not a program\n' >"$tmp/notexec"
failure "is not an executable file" daemon --socket "$dsock" --exec "$tmp/notexec"
chmod +x "$tmp/notexec"
printf '\177ELF garbage' >"$tmp/notexec"
failure "cannot run $tmp/notexec: Exec format error" daemon --socket "$dsock" --exec "$tmp/notexec"
usage_error "unexpected argument 'x' (ksmd-user's arguments follow --)" daemon --socket "$dsock" x
usage_error "give ksmctl daemon --socket PATH, not '--socket' after --" daemon -- --socket "$dsock"
usage_error "empty --log file name" daemon --log ""

t_finish
