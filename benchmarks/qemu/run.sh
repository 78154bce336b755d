#!/usr/bin/env bash
# shellcheck disable=SC2154  # the summary variables come from summary.env
# run.sh: boot N identical QEMU/TCG guests at once and measure how much of
# their memory is deduplicated, how fast, and at what CPU cost, with kernel
# KSM (--mode ksm), with ksmu preloaded into QEMU (--mode ksmu), or with no
# merging at all (--mode none, the baseline). See README.md.
set -euo pipefail
# The whole script is one brace group, parsed before it runs: editing run.sh
# while a run is going on cannot change what that run executes.
{

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE="$HERE/.cache"
KSM_DIR=/sys/kernel/mm/ksm
KSM_COUNTERS=(pages_sharing pages_shared full_scans general_profit ksm_zero_pages pages_unshared)
# Knobs sampled too (columns ksm_KNOB): shows whether anything else changed
# the machine's KSM settings during the run.
KSM_SAMPLED_KNOBS=(run pages_to_scan sleep_millisecs)

usage() {
    cat <<USAGE
usage: $(basename "$0") --mode ksm|ksmu|none [options]

Boots N identical guests (Debian kernel + busybox initramfs built by
setup.sh) concurrently with qemu-system-x86_64 -accel tcg, samples their
memory and CPU every second, and writes samples.csv and summary.txt.

  --mode MODE         ksm:  kernel KSM (QEMU's default mem-merge=on madvises
                            guest RAM MADV_MERGEABLE; ksmd is switched on)
                      ksmu: the QEMU command is prefixed with KSMU_RUN --
                      none: -machine mem-merge=off, the baseline
  --guests N          guests booted at once (default 2)
  --mem MiB           guest RAM (default 256)
  --seconds S         how long each guest runs its workload after boot
                      (default 90); the guests then power off
  --data-mb M         size of the guests' deterministic tmpfs file (default 16)
  --interval I        seconds between two guest checks (default 5)
  --boot-timeout S    give up when a guest has not booted after S s (default 150)
  --out DIR           output directory (default results/MODE-YYYYmmdd-HHMMSS)
  --baseline DIR      a finished --mode none output directory to compare with
  --qemu PATH         QEMU binary (default qemu-system-x86_64)
 mode ksm:
  --ksm-pages N       /sys/kernel/mm/ksm/pages_to_scan during the run (20000)
  --ksm-sleep MS      /sys/kernel/mm/ksm/sleep_millisecs during the run (0)
                      Every writable KSM knob is saved before and restored on
                      any exit (run last).
 mode ksmu:
  --ksmu-run PATH     the ksmu-run launcher (required for --mode ksmu)
  --ksmu-arg ARG      an argument for ksmu-run before its --, e.g.
                      --ksmu-arg=--merge-any or --ksmu-arg=--KNOB=VALUE
                      (repeatable)
  --ksmctl PATH       ksmctl: record 'ksmctl status --pid PID --json' for
                      every QEMU once per sample (ksmctl-gN.jsonl)
 other:
  --restore-ksm FILE  only restore the KSM knobs saved in FILE (the
                      ksm-knobs-before.txt of an interrupted run) and exit
  -h, --help          this text
USAGE
}

die_usage() {
    echo "run.sh: $*" >&2
    usage | head -n1 >&2
    echo "(run.sh --help for every option)" >&2
    exit 2
}
die() { echo "run.sh: $*" >&2; exit 1; }
log() { echo "[$(date +%H:%M:%S)] $*"; }

# ---- KSM knobs ---------------------------------------------------------------
# A knob's value as written back: advisor_mode reads "[none] scan-time".
ksm_read() {
    local v
    v=$(cat "$KSM_DIR/$1")
    if [[ $v == *"["*"]"* ]]; then v=${v#*[}; v=${v%%]*}; fi
    printf '%s' "$v"
}

# Writable = the owner write bit (as root, test -w is true for every file).
ksm_writable_knobs() {
    local f
    for f in "$KSM_DIR"/*; do
        [ -f "$f" ] || continue
        [ "$(stat -c %A "$f" | cut -c3)" = w ] && basename "$f"
    done
}

ksm_save() { # FILE
    local k
    : > "$1"
    for k in $(ksm_writable_knobs); do
        printf '%s=%s\n' "$k" "$(ksm_read "$k")" >> "$1"
    done
}

ksm_write() { # KNOB VALUE
    if ! printf '%s' "$2" > "$KSM_DIR/$1" 2>/dev/null; then
        echo "run.sh: warning: could not write $2 to $KSM_DIR/$1" >&2
        return 1
    fi
}

# Restore every knob saved in FILE; run last. Waits (with ksmd still running)
# until the exited guests' stable pages are gone, since merge_across_nodes and
# max_page_sharing refuse writes while KSM has pages merged.
ksm_restore() { # FILE
    local file=$1 k v cur run_val='' bad=0 i
    [ -s "$file" ] || return 0
    for i in $(seq 1 30); do
        [ "$(cat $KSM_DIR/pages_shared)" = 0 ] && [ "$(cat $KSM_DIR/pages_sharing)" = 0 ] && break
        sleep 0.5
    done
    while IFS='=' read -r k v; do
        [ -n "$k" ] || continue
        if [ "$k" = run ]; then run_val=$v; continue; fi
        cur=$(ksm_read "$k")
        [ "$cur" = "$v" ] || ksm_write "$k" "$v" || bad=1
    done < "$file"
    if [ -n "$run_val" ]; then
        [ "$(ksm_read run)" = "$run_val" ] || ksm_write run "$run_val" || bad=1
    fi
    while IFS='=' read -r k v; do
        [ -n "$k" ] || continue
        cur=$(ksm_read "$k")
        if [ "$cur" != "$v" ]; then
            echo "run.sh: warning: KSM knob $k is $cur, was $v" >&2
            bad=1
        fi
    done < "$file"
    if [ $bad -eq 0 ]; then
        log "KSM knobs restored ($(tr '\n' ' ' < "$file"))"
    fi
    return $bad
}

# ---- arguments ---------------------------------------------------------------
MODE='' GUESTS=2 MEM=256 SECONDS_RUN=90 DATA_MB=16 INTERVAL=5 BOOT_TIMEOUT=150
OUT='' BASELINE='' QEMU=qemu-system-x86_64 KSM_PAGES=20000 KSM_SLEEP=0
KSMU_RUN='' KSMCTL='' KSMU_ARGS=()

need_val() { [ $# -ge 2 ] && [ -n "$2" ] || die_usage "$1 needs a value"; }
is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

while [ $# -gt 0 ]; do
    opt=$1
    if [[ $opt == --*=* ]]; then
        set -- "${opt%%=*}" "${opt#*=}" "${@:2}"
        opt=$1
    fi
    case "$opt" in
        --mode) need_val "$@"; MODE=$2; shift ;;
        --guests) need_val "$@"; GUESTS=$2; shift ;;
        --mem) need_val "$@"; MEM=$2; shift ;;
        --seconds) need_val "$@"; SECONDS_RUN=$2; shift ;;
        --data-mb) need_val "$@"; DATA_MB=$2; shift ;;
        --interval) need_val "$@"; INTERVAL=$2; shift ;;
        --boot-timeout) need_val "$@"; BOOT_TIMEOUT=$2; shift ;;
        --out) need_val "$@"; OUT=$2; shift ;;
        --baseline) need_val "$@"; BASELINE=$2; shift ;;
        --qemu) need_val "$@"; QEMU=$2; shift ;;
        --ksm-pages) need_val "$@"; KSM_PAGES=$2; shift ;;
        --ksm-sleep) need_val "$@"; KSM_SLEEP=$2; shift ;;
        --ksmu-run) need_val "$@"; KSMU_RUN=$2; shift ;;
        --ksmu-arg) need_val "$@"; KSMU_ARGS+=("$2"); shift ;;
        --ksmctl) need_val "$@"; KSMCTL=$2; shift ;;
        --restore-ksm)
            need_val "$@"
            [ -f "$2" ] || die "no such file: $2"
            ksm_restore "$2"; exit $? ;;
        -h|--help) usage; exit 0 ;;
        *) die_usage "unknown argument: $1" ;;
    esac
    shift
done

case "$MODE" in
    ksm|ksmu|none) ;;
    "") die_usage "--mode is required" ;;
    *) die_usage "--mode must be ksm, ksmu or none, not '$MODE'" ;;
esac
for v in GUESTS MEM SECONDS_RUN DATA_MB INTERVAL BOOT_TIMEOUT KSM_PAGES KSM_SLEEP; do
    is_uint "${!v}" || die_usage "--$(echo "$v" | tr 'A-Z_' 'a-z-' | sed 's/^seconds-run$/seconds/') must be a non-negative integer, not '${!v}'"
done
[ "$GUESTS" -ge 1 ] || die_usage "--guests must be at least 1"
[ "$MEM" -ge 64 ] || die_usage "--mem must be at least 64 (MiB)"
[ "$INTERVAL" -ge 1 ] || die_usage "--interval must be at least 1"
[ "$KSM_PAGES" -ge 1 ] || die_usage "--ksm-pages must be at least 1"
[ $((DATA_MB + 96)) -le "$MEM" ] || die_usage "--data-mb $DATA_MB does not fit in --mem $MEM (keep 96 MiB for the kernel)"
if [ "$MODE" = ksmu ]; then
    [ -n "$KSMU_RUN" ] || die_usage "--mode ksmu needs --ksmu-run PATH"
    [ -x "$KSMU_RUN" ] || die "ksmu-run not found or not executable: $KSMU_RUN (build ksmu first: <build>/tools/ksmu-run)"
    [ -n "$KSMCTL" ] || log "note: no --ksmctl given, the engine's counters will not be recorded"
else
    [ -z "$KSMU_RUN" ] && [ ${#KSMU_ARGS[@]} -eq 0 ] || die_usage "--ksmu-run/--ksmu-arg only apply to --mode ksmu"
fi
if [ -n "$KSMCTL" ]; then
    [ -x "$KSMCTL" ] || die "ksmctl not found or not executable: $KSMCTL"
fi
if [ -n "$BASELINE" ]; then
    [ -f "$BASELINE/summary.env" ] && [ -f "$BASELINE/samples.csv" ] ||
        die "--baseline $BASELINE: no summary.env/samples.csv there (a finished run.sh output dir)"
fi
[ "$(id -u)" -eq 0 ] || die "must run as root (KSM knobs, /proc/PID of the guests)"
command -v "$QEMU" >/dev/null 2>&1 || die "$QEMU not found: run $HERE/setup.sh first"
[ -e "$CACHE/vmlinuz" ] && [ -s "$CACHE/initramfs.cpio.gz" ] ||
    die "no kernel/initramfs in $CACHE: run $HERE/setup.sh first"
if [ "$GUESTS" -gt "$(nproc)" ]; then
    log "warning: $GUESTS guests on $(nproc) CPUs: TCG guests will compete for CPU"
fi
if [ "$MODE" = ksm ] && [ ! -w "$KSM_DIR/run" ]; then
    die "$KSM_DIR/run is not writable (kernel without KSM?)"
fi

[ -n "$OUT" ] || OUT="$HERE/results/$MODE-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
rm -f "$OUT"/guest-*.log "$OUT"/ksmctl-*.jsonl "$OUT"/samples.csv "$OUT"/summary.*

# ---- state and cleanup -------------------------------------------------------
LAUNCH_PIDS=()   # what we started ($!): qemu itself, or ksmu-run
QEMU_PIDS=()     # the qemu process of each guest (resolved, see resolve_qemu)
KSM_SAVED=
CLEANED=0

kill_guests() {
    local p alive i
    local all=("${LAUNCH_PIDS[@]}" "${QEMU_PIDS[@]}")
    [ ${#all[@]} -gt 0 ] || return 0
    for p in "${all[@]}"; do
        [ -n "$p" ] && [ "$p" != 0 ] && kill -TERM "$p" 2>/dev/null || true
    done
    for i in $(seq 1 50); do
        alive=0
        for p in "${all[@]}"; do
            [ -n "$p" ] && [ "$p" != 0 ] && kill -0 "$p" 2>/dev/null && alive=1
        done
        [ $alive -eq 0 ] && break
        sleep 0.1
    done
    for p in "${all[@]}"; do
        [ -n "$p" ] && [ "$p" != 0 ] && kill -KILL "$p" 2>/dev/null || true
    done
    wait 2>/dev/null || true
}

cleanup() {
    local rc=$?
    [ $CLEANED -eq 1 ] && return
    CLEANED=1
    set +e
    kill_guests
    if [ -n "$KSM_SAVED" ]; then
        ksm_restore "$KSM_SAVED" || rc=1
        ksm_save "$OUT/ksm-knobs-after.txt"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- host facts ----------------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)
KSMD_PID=$(pgrep -x ksmd | head -n1 || true)
{
    echo "mode=$MODE guests=$GUESTS mem_mib=$MEM seconds=$SECONDS_RUN data_mb=$DATA_MB interval=$INTERVAL"
    echo "date=$(date -Is)"
    echo "host_kernel=$(uname -r)"
    echo "cpus=$(nproc)"
    echo "qemu=$("$QEMU" --version | head -n1)"
    echo "guest_kernel=$(readlink "$CACHE/vmlinuz")"
    echo "initramfs_md5=$(md5sum < "$CACHE/initramfs.cpio.gz" | cut -d' ' -f1)"
    echo "thp_enabled=$(cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null || echo n/a)"
    echo "ksmd_pid=${KSMD_PID:-none}"
    if [ -d "$KSM_DIR" ]; then
        for k in $(ksm_writable_knobs); do echo "ksm_$k=$(ksm_read "$k")"; done
    fi
    [ "$MODE" != ksmu ] || echo "ksmu_run=$KSMU_RUN ${KSMU_ARGS[*]}"
} > "$OUT/meta.txt"

# ---- KSM setup -----------------------------------------------------------------
if [ "$MODE" = ksm ]; then
    KSM_SAVED="$OUT/ksm-knobs-before.txt"
    ksm_save "$KSM_SAVED"
    log "saved KSM knobs: $(tr '\n' ' ' < "$KSM_SAVED")"
    ksm_write pages_to_scan "$KSM_PAGES"
    ksm_write sleep_millisecs "$KSM_SLEEP"
    if [ -e "$KSM_DIR/advisor_mode" ] && [ "$(ksm_read advisor_mode)" != none ]; then
        ksm_write advisor_mode none   # the advisor would override pages_to_scan
    fi
    ksm_write run 1
    log "KSM on: pages_to_scan=$KSM_PAGES sleep_millisecs=$KSM_SLEEP use_zero_pages=$(ksm_read use_zero_pages)" \
        "smart_scan=$(ksm_read smart_scan 2>/dev/null || echo n/a)"
elif [ -d "$KSM_DIR" ] && [ "$(ksm_read run)" != 0 ]; then
    log "warning: kernel KSM is running (run=$(ksm_read run)); in mode $MODE that may merge pages too"
fi

# ---- launch ------------------------------------------------------------------
case "$MODE" in
    none) MACHINE="pc,mem-merge=off" ;;
    *)    MACHINE="pc,mem-merge=on" ;;
esac
APPEND="console=ttyS0 panic=-1 quiet ksmb.secs=$SECONDS_RUN ksmb.mb=$DATA_MB ksmb.interval=$INTERVAL"

qemu_cmd() { # GUEST-INDEX
    local cmd=()
    [ "$MODE" = ksmu ] && cmd+=("$KSMU_RUN" "${KSMU_ARGS[@]}" --)
    cmd+=("$QEMU" -name "ksmb-g$1" -accel tcg -machine "$MACHINE" -cpu qemu64
          -m "${MEM}M" -smp 1 -nodefaults -no-user-config -display none
          -monitor none -serial "file:$OUT/guest-$1.log" -no-reboot
          -kernel "$CACHE/vmlinuz" -initrd "$CACHE/initramfs.cpio.gz"
          -append "$APPEND")
    printf '%s\n' "${cmd[@]}"
}

# NOW_US := microseconds since the epoch (bash 5's EPOCHREALTIME, no fork).
now_us() { local t=$EPOCHREALTIME; NOW_US=$((10#${t/./})); }
now_us; T0_US=$NOW_US
cat /proc/vmstat > "$OUT/vmstat-start.txt"

for i in $(seq 1 "$GUESTS"); do
    mapfile -t cmd < <(qemu_cmd "$i")
    printf '%q ' "${cmd[@]}" > "$OUT/cmd-$i.txt"; echo >> "$OUT/cmd-$i.txt"
    : > "$OUT/guest-$i.log"
    "${cmd[@]}" < /dev/null > "$OUT/qemu-$i.stdout" 2>&1 &
    LAUNCH_PIDS+=($!)
    QEMU_PIDS+=(0)
done
log "mode $MODE: started $GUESTS guest(s), ${MEM} MiB each, workload ${SECONDS_RUN}s; output in $OUT"
log "command: $(cat "$OUT/cmd-1.txt")"

# The qemu process of guest i: the launched process if it is (or exec'd) qemu,
# else its qemu descendant (a launcher that forks).
QEMU_REAL=$(readlink -f "$(command -v "$QEMU")")
resolve_qemu() { # INDEX(0-based)
    local lp=${LAUNCH_PIDS[$1]} c
    [ "${QEMU_PIDS[$1]}" != 0 ] && return 0
    kill -0 "$lp" 2>/dev/null || return 0
    if [ "$(readlink -f /proc/$lp/exe 2>/dev/null)" = "$QEMU_REAL" ]; then
        QEMU_PIDS[$1]=$lp
        return 0
    fi
    for c in $(pgrep -P "$lp" 2>/dev/null) ; do
        if [ "$(readlink -f /proc/$c/exe 2>/dev/null)" = "$QEMU_REAL" ]; then
            QEMU_PIDS[$1]=$c
            return 0
        fi
    done
}

# The sampling loop below forks nothing but sleep (and ksmctl when asked):
# with ksmd and two TCG guests on two CPUs, forks would delay the samples.

# CPU_T := utime+stime of a process, in clock ticks; empty when it is gone.
cpu_ticks() {
    local line rest f
    CPU_T=
    read -r line 2>/dev/null < "/proc/$1/stat" || return 0
    rest=${line##*) }
    read -r -a f <<< "$rest"
    CPU_T=$((f[11] + f[12]))
}

# VAR := seconds with 2 decimals, of clock ticks / of microseconds.
ticks_s() { printf -v "$1" '%d.%02d' $(($2 / CLK_TCK)) $(( ($2 % CLK_TCK) * 100 / CLK_TCK )); }
us_s() { printf -v "$1" '%d.%02d' $(($2 / 1000000)) $(( ($2 % 1000000) / 10000 )); }

# ROLL_* := Rss, Pss, AnonHugePages, Anonymous, Pss_Anon, Pss_Shmem, KSM
# (KiB) of a process, from smaps_rollup.
rollup() {
    local k v _
    ROLL_RSS=0 ROLL_PSS=0 ROLL_THP=0 ROLL_ANON=0 ROLL_PSS_ANON=0 ROLL_PSS_SHMEM=0 ROLL_KSM=0
    while read -r k v _; do
        case $k in
            Rss:) ROLL_RSS=$v ;;
            Pss:) ROLL_PSS=$v ;;
            AnonHugePages:) ROLL_THP=$v ;;
            Anonymous:) ROLL_ANON=$v ;;
            Pss_Anon:) ROLL_PSS_ANON=$v ;;
            Pss_Shmem:) ROLL_PSS_SHMEM=$v ;;
            KSM:) ROLL_KSM=$v ;;
        esac
    done 2>/dev/null < "/proc/$1/smaps_rollup" || true
}

# HOST_SHMEM := Shmem of /proc/meminfo (KiB): memfd/tmpfs pages, mapped or not.
host_shmem() {
    local k v _
    HOST_SHMEM=
    while read -r k v _; do
        [ "$k" = Shmem: ] && { HOST_SHMEM=$v; return 0; }
    done < /proc/meminfo
}

# True when the serial log of guest $1 (1-based) has a line starting with $2.
log_has() {
    local txt=
    read -r -d '' txt 2>/dev/null < "$OUT/guest-$1.log" || true
    [[ $'\n'$txt == *$'\n'"$2"* ]]
}

KSMD_T0=0
if [ -n "$KSMD_PID" ]; then cpu_ticks "$KSMD_PID"; KSMD_T0=${CPU_T:-0}; fi

declare -a LAST_CPU READY_T DONE_T PSS_G
for i in $(seq 0 $((GUESTS - 1))); do LAST_CPU[$i]=0; READY_T[$i]=; DONE_T[$i]=; PSS_G[$i]=0; done

hdr="t,alive,ready,done,pss_kib_total,rss_kib_total,anon_huge_kib_total,qemu_cpu_s,ksmd_cpu_s"
hdr+=",anon_kib_total,pss_anon_kib_total,pss_shmem_kib_total,ksm_kib_total,host_shmem_kib"
for k in "${KSM_COUNTERS[@]}"; do hdr+=",$k"; done
for k in "${KSM_SAMPLED_KNOBS[@]}"; do hdr+=",ksm_$k"; done
for i in $(seq 1 "$GUESTS"); do hdr+=",pss_kib_g$i"; done
echo "$hdr" > "$OUT/samples.csv"

DEADLINE_S=$((BOOT_TIMEOUT + SECONDS_RUN + 60))
BOOT_FAILED=0
NEXT_LOG=0
while :; do
    now_us; t_us=$((NOW_US - T0_US))
    us_s t "$t_us"
    alive=0 ready=0 ndone=0 pss_tot=0 rss_tot=0 thp_tot=0 cpu_tot=0
    anon_tot=0 pss_anon_tot=0 pss_shmem_tot=0 ksm_tot=0
    for ((i = 0; i < GUESTS; i++)); do
        resolve_qemu "$i"
        p=${QEMU_PIDS[$i]}
        if [ -z "${READY_T[$i]}" ] && log_has $((i + 1)) KSMB-READY; then READY_T[$i]=$t; fi
        [ -n "${READY_T[$i]}" ] && ready=$((ready + 1))
        if [ -z "${DONE_T[$i]}" ] && log_has $((i + 1)) GUEST-DONE; then DONE_T[$i]=$t; fi
        [ -n "${DONE_T[$i]}" ] && ndone=$((ndone + 1))
        PSS_G[$i]=0
        if [ "$p" != 0 ]; then
            rollup "$p"
            cpu_ticks "$p"
            if [ -n "$CPU_T" ] && [ "$ROLL_RSS" != 0 ]; then
                alive=$((alive + 1))
                rss_tot=$((rss_tot + ROLL_RSS)); pss_tot=$((pss_tot + ROLL_PSS)); thp_tot=$((thp_tot + ROLL_THP))
                anon_tot=$((anon_tot + ROLL_ANON)); pss_anon_tot=$((pss_anon_tot + ROLL_PSS_ANON))
                pss_shmem_tot=$((pss_shmem_tot + ROLL_PSS_SHMEM)); ksm_tot=$((ksm_tot + ROLL_KSM))
                PSS_G[$i]=$ROLL_PSS
                LAST_CPU[$i]=$CPU_T
            fi
        fi
        cpu_tot=$((cpu_tot + LAST_CPU[i]))
    done
    ksmd_s=0.00
    if [ -n "$KSMD_PID" ]; then
        cpu_ticks "$KSMD_PID"
        ticks_s ksmd_s $(( ${CPU_T:-$KSMD_T0} - KSMD_T0 ))
    fi
    ticks_s qemu_s "$cpu_tot"
    host_shmem
    row="$t,$alive,$ready,$ndone,$pss_tot,$rss_tot,$thp_tot,$qemu_s,$ksmd_s"
    row+=",$anon_tot,$pss_anon_tot,$pss_shmem_tot,$ksm_tot,$HOST_SHMEM"
    for k in "${KSM_COUNTERS[@]}"; do
        v=
        read -r v 2>/dev/null < "$KSM_DIR/$k" || true
        row+=",$v"
        [ "$k" = pages_sharing ] && sharing=$v
    done
    for k in "${KSM_SAMPLED_KNOBS[@]}"; do
        v=
        read -r v 2>/dev/null < "$KSM_DIR/$k" || true
        row+=",$v"
    done
    for ((i = 0; i < GUESTS; i++)); do row+=",${PSS_G[$i]}"; done
    echo "$row" >> "$OUT/samples.csv"

    if [ -n "$KSMCTL" ]; then
        for ((i = 0; i < GUESTS; i++)); do
            p=${QEMU_PIDS[$i]}
            [ "$p" != 0 ] && kill -0 "$p" 2>/dev/null || continue
            if js=$(timeout 5 "$KSMCTL" status --pid "$p" --json 2>"$OUT/ksmctl.err"); then
                js=${js//$'\n'/}
                printf '{"t":%s,"pid":%s,"status":%s}\n' "$t" "$p" "${js:-null}" >> "$OUT/ksmctl-$((i + 1)).jsonl"
            else
                printf '{"t":%s,"pid":%s,"status":null,"error":"%s"}\n' "$t" "$p" \
                    "$(tr -d '\n"\\' < "$OUT/ksmctl.err" | head -c 300)" >> "$OUT/ksmctl-$((i + 1)).jsonl"
            fi
        done
    fi

    # Stop when every launched process has exited, at the deadline, or when
    # a guest has not booted in time.
    running=0
    for lp in "${LAUNCH_PIDS[@]}"; do kill -0 "$lp" 2>/dev/null && running=$((running + 1)); done
    [ $running -eq 0 ] && break
    t_s=$((t_us / 1000000))
    if [ "$ready" -lt "$GUESTS" ] && [ "$t_s" -ge "$BOOT_TIMEOUT" ]; then
        log "error: only $ready of $GUESTS guests booted within ${BOOT_TIMEOUT}s"
        BOOT_FAILED=1
        break
    fi
    if [ "$t_s" -ge "$DEADLINE_S" ]; then
        log "warning: deadline ${DEADLINE_S}s reached with $running guest(s) still running"
        break
    fi
    if [ "$t_s" -ge "$NEXT_LOG" ]; then
        NEXT_LOG=$((t_s - t_s % 10 + 10))
        log "t=${t}s alive=$alive ready=$ready done=$ndone pss_total=${pss_tot}KiB rss_total=${rss_tot}KiB" \
            "qemu_cpu=${qemu_s}s ksmd_cpu=${ksmd_s}s pages_sharing=${sharing:-}"
    fi
    # Sleep to the next whole second since start (at least 0.2 s).
    now_us; el=$((NOW_US - T0_US))
    r=$(( 1000000 - el % 1000000 ))
    [ $r -ge 200000 ] || r=$((r + 1000000))
    sleep "$((r / 1000000)).$(printf '%06d' $((r % 1000000)))"
done
rm -f "$OUT/ksmctl.err"
cat /proc/vmstat > "$OUT/vmstat-end.txt"
kill_guests

# ---- summary -----------------------------------------------------------------------
# Guest verdicts.
GUEST_VERDICT=PASS
verdicts=()
sums=()
for i in $(seq 1 "$GUESTS"); do
    lg="$OUT/guest-$i.log"
    ok=$(grep -c '^GUEST-OK ' "$lg" || true)
    bad=$(grep -c '^GUEST-BAD' "$lg" || true)
    rdy=$(grep -c '^KSMB-READY' "$lg" || true)
    done_=$(grep -c '^GUEST-DONE' "$lg" || true)
    md5=$(awk '/^KSMB-INFO kernel=/ { for (i = 1; i <= NF; i++) if ($i ~ /^md5=/) print substr($i, 5) }' "$lg" | head -n1)
    sums+=("$md5")
    v=PASS
    { [ "$rdy" -ge 1 ] && [ "$ok" -ge 1 ] && [ "$bad" -eq 0 ] && [ "$done_" -ge 1 ]; } || v=FAIL
    [ $v = PASS ] || GUEST_VERDICT=FAIL
    verdicts+=("guest $i: $v (ready=$rdy GUEST-OK=$ok GUEST-BAD=$bad done=$done_ md5=${md5:-none})")
done
same_md5=yes
for s in "${sums[@]}"; do [ "$s" = "${sums[0]}" ] && [ -n "$s" ] || same_md5=no; done
[ $same_md5 = yes ] || GUEST_VERDICT=FAIL
[ $BOOT_FAILED -eq 0 ] || GUEST_VERDICT=FAIL

ready_all=
for i in $(seq 0 $((GUESTS - 1))); do
    r=${READY_T[$i]}
    [ -n "$r" ] || { ready_all=; break; }
    ready_all=$(awk -v a="${ready_all:-0}" -v b="$r" 'BEGIN { print (b > a) ? b : a }')
done

# Everything numeric from the CSV, in one awk. Samples "in steady state" are
# those with every guest alive and booted and none finished (a QEMU that is
# exiting changes the others' Pss of shared libraries). The saving of sharing at time t is
# (Rss - Pss)(t) minus its value at the first sample with every guest alive
# (shared libraries): for a page mapped k times, Rss counts it k times and Pss
# once, so Rss - Pss is what sharing saves.
awk -F, -v n="$GUESTS" -v ready_t="${ready_all:-}" -v mode="$MODE" '
NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
{
    t = $col["t"]; alive = $col["alive"]; pss = $col["pss_kib_total"]; rss = $col["rss_kib_total"]
    qcpu = $col["qemu_cpu_s"]; kcpu = $col["ksmd_cpu_s"]; ps = $col["pages_sharing"]
    knobs = $col["ksm_run"] " " $col["ksm_pages_to_scan"] " " $col["ksm_sleep_millisecs"]
    if (NR > 2 && knobs != prev_knobs) knob_changes++
    prev_knobs = knobs
    last_qcpu = qcpu; last_kcpu = kcpu; last_t = t
    if (alive != n || $col["done"] > 0) next
    if (!have_first) { have_first = 1; share0 = rss - pss }
    # every sample with all guests alive, for the time to 90%
    a++; AT[a] = t; AS[a] = (rss - pss) - share0; APS[a] = ps
    if (ready_t == "" || t + 0 < ready_t + 0) next
    m++; T[m] = t; P[m] = pss; S[m] = (rss - pss) - share0; PS[m] = ps; QC[m] = qcpu; KC[m] = kcpu
    R[m] = rss; H[m] = $col["anon_huge_kib_total"]
    AN[m] = $col["anon_kib_total"] - $col["pss_anon_kib_total"]; K[m] = $col["ksm_kib_total"]
    SH[m] = $col["pss_shmem_kib_total"]; HS[m] = $col["host_shmem_kib"]
    if (!have_hs0) { have_hs0 = 1; hs0 = HS[m] }
}
END {
    if (m == 0) { print "steady_samples=0"; exit }
    min = P[1]; max = P[1]
    for (i = 1; i <= m; i++) { if (P[i] < min) { min = P[i]; tmin = T[i] } if (P[i] > max) max = P[i] }
    # Pss at boot-done: the first sample at or after the last KSMB-READY.
    printf "steady_samples=%d\n", m
    printf "t_boot_done_s=%.1f\n", ready_t
    printf "t_final_s=%.1f\n", T[m]
    printf "pss_boot_kib=%d\n", P[1]
    printf "pss_min_kib=%d\n", min
    printf "t_pss_min_s=%.1f\n", (tmin == "" ? T[1] : tmin)
    printf "pss_max_kib=%d\n", max
    printf "pss_final_kib=%d\n", P[m]
    printf "share_final_kib=%d\n", S[m]
    printf "rss_boot_kib=%d\n", R[1]
    printf "rss_final_kib=%d\n", R[m]
    printf "anon_huge_boot_kib=%d\n", H[1]
    printf "anon_huge_final_kib=%d\n", H[m]
    printf "anon_share_final_kib=%d\n", AN[m]
    printf "ksm_mapped_final_kib=%d\n", K[m]
    printf "pss_shmem_final_kib=%d\n", SH[m]
    printf "host_shmem_boot_kib=%d\n", hs0
    printf "host_shmem_final_kib=%d\n", HS[m]
    printf "pages_sharing_final=%d\n", PS[m]
    # time to 90%% of the final sharing saving (first sample at or above it,
    # counted from the QEMU start; negative after-boot = before boot-done)
    t90 = ""
    if (S[m] > 0) for (i = 1; i <= a; i++) if (AS[i] >= 0.9 * S[m]) { t90 = AT[i]; break }
    printf "t90_share_s=%s\n", t90
    printf "t90_share_after_boot_s=%s\n", (t90 == "" ? "" : sprintf("%.1f", t90 - ready_t))
    t90p = ""
    if (PS[m] > 0) for (i = 1; i <= a; i++) if (APS[i] >= 0.9 * PS[m]) { t90p = AT[i]; break }
    printf "t90_pages_sharing_s=%s\n", t90p
    t50 = ""
    if (S[m] > 0) for (i = 1; i <= a; i++) if (AS[i] >= 0.5 * S[m]) { t50 = AT[i]; break }
    printf "t50_share_s=%s\n", t50
    printf "qemu_cpu_at_boot_s=%.2f\n", QC[1]
    printf "qemu_cpu_final_s=%.2f\n", QC[m]
    printf "qemu_cpu_total_s=%.2f\n", last_qcpu
    printf "ksmd_cpu_at_boot_s=%.2f\n", KC[1]
    printf "ksmd_cpu_final_s=%.2f\n", KC[m]
    printf "ksmd_cpu_total_s=%.2f\n", last_kcpu
    printf "wall_s=%.1f\n", last_t
    printf "ksm_knob_changes=%d\n", knob_changes
}' "$OUT/samples.csv" > "$OUT/summary.env"
{
    echo "mode=$MODE"
    echo "guests=$GUESTS"
    echo "mem_mib=$MEM"
    echo "guest_verdict=$GUEST_VERDICT"
} >> "$OUT/summary.env"

# shellcheck disable=SC1091
. "$OUT/summary.env"

mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.1f%%", 100 * a / b; else print "n/a" }'; }

{
    echo "ksmu QEMU benchmark: mode=$MODE guests=$GUESTS mem=${MEM}MiB workload=${SECONDS_RUN}s data=${DATA_MB}MiB"
    echo "output: $OUT"
    [ "$MODE" != ksm ] || echo "kernel KSM: pages_to_scan=$KSM_PAGES sleep_millisecs=$KSM_SLEEP (others unchanged: see ksm-knobs-before.txt)"
    [ "$MODE" != ksmu ] || echo "ksmu: $KSMU_RUN ${KSMU_ARGS[*]} --"
    echo
    if [ "${steady_samples:-0}" -eq 0 ]; then
        echo "no sample with every guest booted and alive: no memory figures"
    else
        echo "boot done (all guests KSMB-READY) at ${t_boot_done_s}s; steady samples until ${t_final_s}s"
        echo "Pss total (sum over the QEMUs):"
        echo "  at boot-done  $(mib "$pss_boot_kib")"
        echo "  max           $(mib "$pss_max_kib")"
        echo "  min           $(mib "$pss_min_kib") at ${t_pss_min_s}s"
        echo "  final         $(mib "$pss_final_kib") at ${t_final_s}s"
        echo "Rss total at boot-done $(mib "$rss_boot_kib"), final $(mib "$rss_final_kib");" \
             "AnonHugePages (THP) at boot-done $(mib "$anon_huge_boot_kib"), final $(mib "$anon_huge_final_kib")"
        echo "saving by sharing at the final sample (Rss-Pss growth since the first sample): $(mib "$share_final_kib")"
        echo "  of which anonymous (Anonymous - Pss_Anon): $(mib "$anon_share_final_kib");" \
             "KSM pages mapped (smaps KSM:) $(mib "$ksm_mapped_final_kib"); Pss_Shmem $(mib "$pss_shmem_final_kib")"
        echo "  host Shmem (all memfd/tmpfs, mapped or not) at boot-done $(mib "$host_shmem_boot_kib")," \
             "final $(mib "$host_shmem_final_kib")"
        if [ -n "$t90_share_s" ] && [ "$share_final_kib" -ge 8192 ]; then
            echo "  50% of it reached at ${t50_share_s}s, 90% at ${t90_share_s}s after the QEMU start" \
                 "(${t90_share_after_boot_s}s relative to boot-done)"
        else
            echo "  (under 8 MiB: no merging, only the shared libraries' Pss moving)"
        fi
        [ "$MODE" != ksm ] || echo "kernel KSM pages_sharing final: $pages_sharing_final ($(mib $((pages_sharing_final * 4)))); 90% at ${t90_pages_sharing_s:-n/a}s"
        if [ -n "$BASELINE" ]; then
            b_final=$(awk -F= '$1 == "pss_final_kib" { print $2 }' "$BASELINE/summary.env")
            b_boot=$(awk -F= '$1 == "pss_boot_kib" { print $2 }' "$BASELINE/summary.env")
            b_cpu=$(awk -F= '$1 == "qemu_cpu_final_s" { print $2 }' "$BASELINE/summary.env")
            b_mode=$(awk -F= '$1 == "mode" { print $2 }' "$BASELINE/summary.env")
            if [ -n "$b_final" ]; then
                echo "vs baseline $BASELINE (mode $b_mode):"
                echo "  baseline Pss at boot-done $(mib "$b_boot"), final $(mib "$b_final")"
                echo "  saving at boot-done: $(mib $((b_boot - pss_boot_kib))) ($(pct $((b_boot - pss_boot_kib)) "$b_boot"))"
                echo "  saving at final: $(mib $((b_final - pss_final_kib))) ($(pct $((b_final - pss_final_kib)) "$b_final") of the baseline)"
                echo "  saving at min:   $(mib $((b_final - pss_min_kib))) ($(pct $((b_final - pss_min_kib)) "$b_final"))"
                # When did Pss get within 10% of the final saving? Only steady
                # samples count (before boot-done the guests have simply not
                # touched their RAM yet).
                t90b=$(awk -F, -v base="$b_final" -v fin="$pss_final_kib" -v n="$GUESTS" \
                           -v rt="${t_boot_done_s}" '
                    NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
                    $col["alive"] == n && $col["done"] == 0 && $col["t"] + 0 >= rt + 0 &&
                    base - $col["pss_kib_total"] >= 0.9 * (base - fin) { print $col["t"]; exit }' "$OUT/samples.csv")
                if [ $((b_final - pss_final_kib)) -ge 8192 ] && [ -n "$t90b" ]; then
                    echo "  90% of the final saving first reached at ${t90b}s" \
                         "($(awk -v a="$t90b" -v b="$t_boot_done_s" 'BEGIN { printf "%.1f", a - b }')s after boot-done;" \
                         "0 = already at boot-done)"
                fi
                echo "  QEMU CPU to the final sample: ${qemu_cpu_final_s}s vs baseline ${b_cpu}s"
            fi
        fi
        echo "CPU seconds:"
        echo "  QEMU (all guests, utime+stime) at boot-done ${qemu_cpu_at_boot_s}s, at final sample ${qemu_cpu_final_s}s, whole run ${qemu_cpu_total_s}s"
        echo "  ksmd at boot-done ${ksmd_cpu_at_boot_s}s, at final sample ${ksmd_cpu_final_s}s, whole run ${ksmd_cpu_total_s}s"
        [ "$MODE" != ksmu ] || echo "  (ksmu's engine runs inside the QEMU processes: its CPU is in the QEMU figure)"
        echo "wall time: ${wall_s}s"
        # System-wide, so other activity on the machine counts too.
        echo "host /proc/vmstat deltas over the run (system-wide): $(awk '
            NR == FNR { a[$1] = $2; next }
            $1 ~ /^(thp_fault_alloc|thp_split_page|thp_split_page_failed|thp_underused_split_page|thp_collapse_alloc|cow_ksm)$/ {
                printf "%s%s=%d", sep, $1, $2 - a[$1]; sep = " " }' \
            "$OUT/vmstat-start.txt" "$OUT/vmstat-end.txt")"
    fi
    if [ "${ksm_knob_changes:-0}" -gt 0 ]; then
        echo
        echo "WARNING: /sys/kernel/mm/ksm run/pages_to_scan/sleep_millisecs changed $ksm_knob_changes time(s)" \
             "during the run: something else on this machine uses kernel KSM; the figures are suspect" \
             "(columns ksm_* of samples.csv)"
    fi
    echo
    echo "guests: $GUEST_VERDICT (same data md5 in every guest: $same_md5)"
    for v in "${verdicts[@]}"; do echo "  $v"; done
} | tee "$OUT/summary.txt"

[ "$GUEST_VERDICT" = PASS ]
exit
}
