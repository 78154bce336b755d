#!/bin/sh
# SPDX-License-Identifier: MIT
# Description: ksmu-run command line: options become the environment of the
# program (LD_PRELOAD naming libksmu, KSMU_PRELOAD, KSMU_MERGE_ANY,
# KSMU_KERNEL_KSM, KSMU_LOG, KSMU_<KNOB>), the program is exec()ed (same pid,
# its exit status, its arguments untouched), and errors: bad options, knobs
# and values exit 2 before anything runs, a missing program 127, a program
# that cannot be executed 126.  Whether the preloaded engine then works is
# the preload tests' business.
#
# Usage: ksmu-run-cli.sh PATH/TO/ksmu-run
# Exit status: 0 pass, 1 fail, 77 skip (sanitizer build).

if [ $# -ne 1 ]; then
	echo "usage: $0 PATH/TO/ksmu-run" >&2
	exit 1
fi
RUN=$1
[ -x "$RUN" ] || { echo "FAIL: $RUN is not executable" >&2; exit 1; }
if [ -n "$KSMU_TEST_SANITIZED" ]; then
	# The programs it runs (env, sh) are not instrumented, and a library
	# built with a sanitizer cannot be preloaded into them.
	echo "SKIP: sanitizer build: libksmu cannot be preloaded into uninstrumented programs"
	exit 77
fi

# Start from a known environment: nothing that ksmu-run sets or passes on.
unset KSMU_LOG KSMU_PRELOAD KSMU_MERGE_ANY KSMU_KERNEL_KSM KSMU_PAGES_TO_SCAN LD_PRELOAD

T_PROG=$RUN
T_NAME=ksmu-run
. "$(dirname "$0")/t_cli.sh"

# help and version
for h in --help -h; do
	if run 0 $h; then
		expect "ksmu-run $h prints usage" grep -q '^Usage: ksmu-run' "$out"
		expect "ksmu-run $h: nothing on stderr" test ! -s "$err"
	fi
done
if run 0 --version; then
	expect "version prints libksmu X.Y.Z" grep -Eq '^libksmu [0-9]+\.[0-9]+\.[0-9]+$' "$out"
fi

# The environment the program gets.
if run 0 --pages_to_scan=1000 --merge-any -- env; then
	expect "LD_PRELOAD names libksmu.so by absolute path" \
		grep -Eq '^LD_PRELOAD=/[^: ]*libksmu\.so[^: ]*$' "$out"
	lib=$(sed -n 's/^LD_PRELOAD=//p' "$out")
	expect "LD_PRELOAD names an existing file" test -f "$lib"
	expect "KSMU_PRELOAD=1" grep -qx 'KSMU_PRELOAD=1' "$out"
	expect "KSMU_MERGE_ANY=1" grep -qx 'KSMU_MERGE_ANY=1' "$out"
	expect "KSMU_PAGES_TO_SCAN=1000" grep -qx 'KSMU_PAGES_TO_SCAN=1000' "$out"
	expect "no KSMU_LOG unless asked" sh -c '! grep -q "^KSMU_LOG=" "$1"' sh "$out"
	expect "no KSMU_KERNEL_KSM unless asked" sh -c '! grep -q "^KSMU_KERNEL_KSM=" "$1"' sh "$out"
fi
if run 0 --pages-to-scan 0100 --sleep-millisecs=5 --log debug --kernel-ksm=fallback env; then
	expect "dashes, next-word values, normalised numbers" \
		grep -qx 'KSMU_PAGES_TO_SCAN=100' "$out"
	expect "KSMU_SLEEP_MILLISECS=5" grep -qx 'KSMU_SLEEP_MILLISECS=5' "$out"
	expect "KSMU_LOG=debug" grep -qx 'KSMU_LOG=debug' "$out"
	expect "KSMU_KERNEL_KSM=fallback" grep -qx 'KSMU_KERNEL_KSM=fallback' "$out"
	expect "no KSMU_MERGE_ANY without --merge-any" \
		sh -c '! grep -q "^KSMU_MERGE_ANY=" "$1"' sh "$out"
fi
for mode in off also; do
	if run 0 --kernel-ksm "$mode" env; then
		expect "KSMU_KERNEL_KSM=$mode" grep -qx "KSMU_KERNEL_KSM=$mode" "$out"
	fi
done
for level in err warn info; do
	if run 0 --log="$level" env; then
		expect "KSMU_LOG=$level" grep -qx "KSMU_LOG=$level" "$out"
	fi
done
# A later knob wins; all writable knobs are accepted, at their limits.
if run 0 --run=2 --run=0 --max_page_sharing=2 --merge_across_nodes=1 --use_zero_pages=1 \
	--stable_node_chains_prune_millisecs=4294967295 --smart_scan=0 --dirty_tracker=1 \
	--dry_run=1 env; then
	for v in RUN=0 MAX_PAGE_SHARING=2 MERGE_ACROSS_NODES=1 USE_ZERO_PAGES=1 \
		STABLE_NODE_CHAINS_PRUNE_MILLISECS=4294967295 SMART_SCAN=0 DIRTY_TRACKER=1 DRY_RUN=1; do
		expect "KSMU_$v" grep -qx "KSMU_$v" "$out"
	done
fi
# An existing LD_PRELOAD is kept, after libksmu; libksmu is not added twice.
if [ -n "$lib" ]; then
	checks=$((checks + 1))
	LD_PRELOAD=libc.so.6 "$RUN" env >"$out" 2>"$err" || fail "LD_PRELOAD=libc.so.6 ksmu-run env failed"
	expect "LD_PRELOAD is prepended to" grep -qx "LD_PRELOAD=$lib:libc.so.6" "$out"
	checks=$((checks + 1))
	LD_PRELOAD=$lib "$RUN" env >"$out" 2>"$err" || fail "LD_PRELOAD=$lib ksmu-run env failed"
	expect "libksmu is not preloaded twice" grep -qx "LD_PRELOAD=$lib" "$out"
fi

# The program replaces ksmu-run: same pid, its exit status, its arguments.
checks=$((checks + 1))
sh -c 'echo $$; exec "$1" sh -c "echo \$\$"' sh "$RUN" >"$out" 2>"$err"
[ "$(sort -u "$out" | wc -l)" -eq 1 ] && [ "$(wc -l <"$out")" -eq 2 ] ||
	fail "the program does not keep ksmu-run's pid"
run 7 sh -c 'exit 7'
if run 0 printf '%s|' a 'b c' --merge-any --bogus=1 -- ''; then
	expect "arguments after the program are its own" \
		grep -qx 'a|b c|--merge-any|--bogus=1|--||' "$out"
fi

# Usage errors: exit 2, nothing run, a message naming the culprit.
usage_error() {
	culprit=$1
	shift
	if run 2 "$@"; then
		expect "ksmu-run $*: message names '$culprit'" grep -qF -- "$culprit" "$err"
		expect "ksmu-run $*: points to help" grep -q "ksmu-run --help" "$err"
		expect "ksmu-run $*: nothing on stdout (nothing ran)" test ! -s "$out"
	fi
}
usage_error "'--bogus'" --bogus=1 -- env
usage_error "'--bogus'" --bogus env
usage_error "'--pages_shared'" --pages_shared=1 env
usage_error "'--pages-shared'" --pages-shared=1 env
usage_error "'x' for pages_to_scan" --pages_to_scan=x env
usage_error "'' for pages_to_scan" --pages_to_scan= env
usage_error "'-1' for pages_to_scan" --pages_to_scan=-1 env
usage_error "'1k' for pages_to_scan" --pages_to_scan=1k env
usage_error "out of range for pages_to_scan" --pages_to_scan=4294967296 env
usage_error "'99999999999999999999999' for pages_to_scan" --pages_to_scan=99999999999999999999999 env
usage_error "out of range for run" --run=3 env
usage_error "out of range for max_page_sharing" --max-page-sharing=1 env
usage_error "out of range for use_zero_pages" --use_zero_pages=2 env
usage_error "'--pages_to_scan' needs a value" --pages_to_scan
usage_error "'--merge-any' takes no value" --merge-any=1 env
usage_error "'loud'" --log=loud env
usage_error "'--log' needs a value" --log
usage_error "'sometimes'" --kernel-ksm=sometimes env
usage_error "'--kernel-ksm' needs a value" --kernel-ksm
usage_error "'-x'" -x env
usage_error "missing program" --merge-any
usage_error "missing program" --
usage_error "missing program"
# The bad knob is found even after good options, and nothing runs.
usage_error "'--nope'" --merge-any --pages_to_scan=10 --nope=1 -- touch "$tmp/ran"
expect "nothing ran after a usage error" test ! -e "$tmp/ran"

# The program cannot be run: 127 not found, 126 not executable (as env(1)).
if run 127 ksmu-run-no-such-program-here; then
	expect "not found: names the program" grep -q 'ksmu-run-no-such-program-here' "$err"
fi
run 127 "$tmp/nonexistent"
printf 'echo hello\n' >"$tmp/noexec"
chmod 644 "$tmp/noexec"
if run 126 "$tmp/noexec"; then
	expect "not executable: names the program" grep -qF "$tmp/noexec" "$err"
fi
run 126 "$tmp"

t_finish
