#!/bin/sh
# run-all.sh BUILD_DIR [--quick] - run the side-by-side suite (ksmu against
# kernel KSM) with repeats and regenerate benchmarks/REPORT.md and its PNG
# plots from the RESULT lines.  Take measurements under
#   flock /tmp/ksmu-measure.lock benchmarks/run-all.sh build
# Sizes and repeats: REPEAT (3), STEADY_MIB (1024,4096,16384), SCALE_MIB
# (1024,4096,16384), CHURN_S (60), INTERFERE_S (10), CONV_MIB (1024,4096)
# and CONV_RUNS (0 64: scattered, runs of 64) for bench-merge's
# convergence; DAEMON_PROCS (8) x DAEMON_MIB (512) for bench-daemon (across
# processes through ksmd-user, vm.max_map_count raised for the run);
# --quick: CI-sized.
set -eu
[ $# -ge 1 ] || { echo "usage: $0 BUILD_DIR [--quick]" >&2; exit 2; }
B=$1/benchmarks
HERE=$(cd "$(dirname "$0")" && pwd)
QUICK=${2:-}
REPEAT=${REPEAT:-3}
STEADY_MIB=${STEADY_MIB:-1024,4096,16384}
SCALE_MIB=${SCALE_MIB:-1024,4096,16384}
CHURN_S=${CHURN_S:-60}
INTERFERE_S=${INTERFERE_S:-10}
INTERFERE_MIB=${INTERFERE_MIB:-1024}
CHURN_MIB=${CHURN_MIB:-512}
SCALE_PROCS=${SCALE_PROCS:-1,2,4}
SCALE_PROC_MIB=${SCALE_PROC_MIB:-1024}
CONV_MIB=${CONV_MIB:-1024,4096}
CONV_RUNS=${CONV_RUNS:-0 64}
DAEMON_PROCS=${DAEMON_PROCS:-8}
DAEMON_MIB=${DAEMON_MIB:-512}
OUT=${OUT:-$HERE/results.txt}
if [ "$QUICK" = --quick ]; then
	REPEAT=1
	Q=--quick
else
	Q=
fi
command -v gnuplot >/dev/null 2>&1 || apt-get install -y -q gnuplot-nox >/dev/null 2>&1 || true
: >"$OUT"
echo "CMD $0 $* REPEAT=$REPEAT STEADY_MIB=$STEADY_MIB SCALE_MIB=$SCALE_MIB CHURN_S=$CHURN_S INTERFERE_S=$INTERFERE_S INTERFERE_MIB=$INTERFERE_MIB CHURN_MIB=$CHURN_MIB SCALE_PROCS=$SCALE_PROCS SCALE_PROC_MIB=$SCALE_PROC_MIB CONV_MIB=$CONV_MIB CONV_RUNS=$CONV_RUNS DAEMON_PROCS=$DAEMON_PROCS DAEMON_MIB=$DAEMON_MIB" >>"$OUT"
echo "MACHINE kernel=$(uname -r) cpus=$(nproc) mem_kb=$(awk '/MemTotal/{print $2}' /proc/meminfo) load_start=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' /)" >>"$OUT"
run() { echo "# $*" >&2; "$@" | grep '^RESULT' >>"$OUT" || echo "FAILED $*" >>"$OUT"; }
run "$B/bench-limits" $Q
i=0
while [ $i -lt "$REPEAT" ]; do
	i=$((i + 1))
	if [ -n "$Q" ]; then
		run "$B/bench-steady" $Q; run "$B/bench-interfere" $Q
		run "$B/bench-churn" $Q; run "$B/bench-scale" $Q
		[ $i -eq 1 ] && run "$B/bench-merge" $Q
		[ $i -eq 1 ] && run "$B/bench-daemon" --procs 2 --mib 8 --engine ksmu
	else
		run "$B/bench-steady" --mib "$STEADY_MIB"
		run "$B/bench-interfere" --seconds "$INTERFERE_S" --mib "$INTERFERE_MIB" --write-mib $((INTERFERE_MIB / 4))
		run "$B/bench-churn" --seconds "$CHURN_S" --mib "$CHURN_MIB" --cow-policy 1
		run "$B/bench-churn" --seconds "$CHURN_S" --mib "$CHURN_MIB" --cow-policy 0 --engine ksmu
		[ $i -eq 1 ] && run "$B/bench-scale" --mib "$SCALE_MIB" --procs "$SCALE_PROCS" --proc-mib "$SCALE_PROC_MIB"
		for m in $(echo "$CONV_MIB" | tr , ' '); do
			for l in $CONV_RUNS; do
				run "$B/bench-merge" --regions 1 --mib "$m" --run-len "$l" \
					--no-default-limit --no-detect-run
			done
		done
		run "$B/bench-daemon" --procs "$DAEMON_PROCS" --mib "$DAEMON_MIB" --max-map-count 1048576
	fi
done
echo "MACHINE load_end=$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' /)" >>"$OUT"
python3 "$HERE/report.py" "$OUT" "$HERE"
