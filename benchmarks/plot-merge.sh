#!/bin/sh
# plot-merge.sh OUT.png RUN.txt [RUN.txt ...]
#
# One picture of bench-merge runs: for each run (the saved output of a full
# bench-merge), ksmu's figures divided by kernel KSM's from the same run,
# one bar per run, with the targets of the issue as black marks.  The ksmu
# run is the one the ratio line names (the raised vm.max_map_count run).
# Costs (passes, CPU, COW latency): below 1 ksmu is better; savings: above
# 1 ksmu is better.  Log scale.
#
# Needs gnuplot; installs Debian's gnuplot-nox with apt-get if it is missing.
set -eu
[ $# -ge 2 ] || { echo "usage: $0 OUT.png RUN.txt [RUN.txt ...]" >&2; exit 2; }
out=$1
shift
if ! command -v gnuplot >/dev/null 2>&1; then
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gnuplot-nox >/dev/null
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# One line per run: the ratios, in the order of the groups below.
n=0
for f in "$@"; do
	n=$((n + 1))
	awk -v run="$n" '
	/^RESULT bench=merge / {
		delete kv
		for (i = 3; i <= NF; i++) { split($i, p, "="); kv[p[1]] = p[2] }
		if ($3 == "ratio") { ku = kv["ksmu_run"]; next }
		for (k in kv) v[kv["run"] "," k] = kv[k]
	}
	END {
		if (ku == "" || v["ksm,passes"] == "") { print "no ratio line in run " run > "/dev/stderr"; exit 1 }
		printf "%d %g %g %g %g %g %g %g\n", run,
			v[ku ",passes"] / v["ksm,passes"],
			v[ku ",final_cpu_s"] / v["ksm,final_cpu_s"],
			v[ku ",final_alt_cpu_s"] / v["ksm,final_cpu_s"],
			v[ku ",general_profit"] / v["ksm,general_profit"],
			v[ku ",net_measured"] / v["ksm,net_measured"],
			v[ku ",cow_p50_ns"] / v["ksm,cow_p50_ns"],
			v[ku ",cow_p99_ns"] / v["ksm,cow_p99_ns"]
	}' "$f" >>"$tmp/runs"
done

# Bars: x = group + offset of the run; targets: a mark across the group.
awk -v n="$n" '
{ for (g = 2; g <= NF; g++) printf "%g %g %d\n", (g - 2) + ($1 - (n + 1) / 2) * 0.8 / n, $g, $1 }
' "$tmp/runs" >"$tmp/bars"
printf '%s\n' "1 1" "2 1" "3 0.97" "4 0.97" "5 1.2" >"$tmp/targets"

gnuplot <<EOF
set terminal pngcairo size 1000,560 font ",10" noenhanced
set bmargin 4
set output "$out"
set title "bench-merge: ksmu / kernel KSM, same run ($n runs; black: target)"
set logscale y
set yrange [0.1:30]
set ytics (0.1, 0.2, 0.5, 1, 2, 5, 10, 20)
set grid ytics
set xrange [-0.6:6.6]
set xtics ("passes to final" 0, "CPU to final\n(scan_cpu_ns)" 1, "CPU to final\n(process CPU)" 2, \
	"net saving\n(general_profit)" 3, "net saving\n(measured)" 4, "COW p50" 5, "COW p99" 6)
set ylabel "ksmu / KSM (log)   costs: lower is better; savings: higher"
set style fill solid 0.7 border -1
set key top right
bw = 0.8 / $n
plot for [r=1:$n] "$tmp/bars" using (\$3 == r ? \$1 : 1/0):2:(bw) with boxes title sprintf("run %d", r), \
	"$tmp/targets" using 1:2:(0.45) with xerrorbars lc rgb "black" lw 3 pt -1 notitle, \
	1 with lines lc rgb "gray40" dt 2 notitle
EOF
echo "$out"
