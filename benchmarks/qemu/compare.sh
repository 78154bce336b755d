#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# compare.sh BUILD [OUTDIR] - the whole QEMU comparison in one command, one
# run after the other on an otherwise idle machine: baseline (no merging),
# kernel KSM and ksmu (LD_PRELOAD via ksmu-run), each at KSM's fastest
# setting (20000 pages, 0 ms) and at KSM's defaults (100 pages, 20 ms), then
# one table.  BUILD is a ksmu build directory (ksmu-run, ksmctl).  Needs root
# (kernel KSM); every KSM knob is restored by run.sh.  About 13 minutes.
set -euo pipefail
if [ $# -lt 1 ] || [ ! -x "$1/ksmu-run" ]; then
	echo "usage: $0 BUILD [OUTDIR]   (BUILD/ksmu-run must exist)" >&2
	exit 2
fi
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "$1" && pwd)
out=${2:-$here/results/compare-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
"$here/setup.sh"
run() { "$here/run.sh" "$@" >"$out/$(basename "${@: -1}").log" 2>&1 || {
	echo "run failed: $*" >&2; tail -20 "$out/$(basename "${@: -1}").log" >&2; exit 1; }; }
ksmu_args() { echo "--ksmu-run $build/ksmu-run --ksmctl $build/ksmctl --ksmu-arg=--pages_to_scan=$1 --ksmu-arg=--sleep_millisecs=$2"; }

run --mode none --out "$out/none"
run --mode ksm --ksm-pages 20000 --ksm-sleep 0 --baseline "$out/none" --out "$out/ksm-fast"
# shellcheck disable=SC2046
run --mode ksmu $(ksmu_args 20000 0) --baseline "$out/none" --out "$out/ksmu-fast"
run --mode ksm --ksm-pages 100 --ksm-sleep 20 --baseline "$out/none" --out "$out/ksm-default"
# shellcheck disable=SC2046
run --mode ksmu $(ksmu_args 100 20) --baseline "$out/none" --out "$out/ksmu-default"

printf '%-13s %9s %9s %10s %8s %9s %9s %s\n' run "Pss boot" "Pss end" "saving" "saving%" "QEMU cpu" "ksmd cpu" guests
for r in none ksm-fast ksmu-fast ksm-default ksmu-default; do
	# shellcheck disable=SC1090
	( . "$out/$r/summary.env"
	  base=$(sed -n 's/^pss_final_kib=//p' "$out/none/summary.env")
	  awk -v r="$r" -v b="$pss_boot_kib" -v f="$pss_final_kib" -v base="$base" \
	      -v q="$qemu_cpu_total_s" -v k="$ksmd_cpu_total_s" -v g="$guest_verdict" 'BEGIN {
		printf "%-13s %8.1fM %8.1fM %9.1fM %7.1f%% %8.1fs %8.1fs %s\n", r, b / 1024,
		       f / 1024, (base - f) / 1024, 100 * (base - f) / base, q, k, g }' )
done | tee "$out/table.txt"
