#!/bin/sh
# /init of the benchmark guest (busybox sh, PID 1). Built into the initramfs
# by setup.sh. Parameters come from the kernel command line:
#   ksmb.secs=S      how long the workload runs after the ready marker (60)
#   ksmb.mb=M        size of the deterministic data file on tmpfs, MiB (16)
#   ksmb.interval=I  seconds between two checks (5)
# Console protocol (what run.sh greps in the serial log):
#   KSMB-READY <uptime>            boot finished, data file written
#   GUEST-OK <n> <md5>             check n: data checksum matches the first one
#   GUEST-BAD <n> <md5> <expected> check n failed
#   GUEST-DONE <n>                 workload finished, powering off
# The data are the same in every guest, so their pages duplicate across
# guests; each check also rewrites 1 MiB of the file in place with the same
# bytes, which breaks a host-side merge of those pages (copy on write), and
# then verifies the whole file again.

PATH=/bin:/sbin
export PATH

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1

SECS=60
MB=16
INTERVAL=5
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        ksmb.secs=*) SECS=${arg#ksmb.secs=} ;;
        ksmb.mb=*) MB=${arg#ksmb.mb=} ;;
        ksmb.interval=*) INTERVAL=${arg#ksmb.interval=} ;;
    esac
done

mount -t tmpfs -o size=$((MB + 8))m tmpfs /data

uptime_s() { cut -d' ' -f1 /proc/uptime; }

# Deterministic, non-zero, non-repeating content: 10-byte decimal lines.
seq 100000000 199999999 | head -c $((MB * 1048576)) > /data/blob
sync
EXPECT=$(md5sum /data/blob | cut -d' ' -f1)
echo "KSMB-INFO kernel=$(uname -r) mb=$MB secs=$SECS interval=$INTERVAL md5=$EXPECT"
grep -E '^(MemTotal|MemFree|Shmem):' /proc/meminfo | tr -s ' ' | sed 's/^/KSMB-INFO /'
echo "KSMB-READY $(uptime_s)"

start=$(cut -d. -f1 /proc/uptime)
n=0
bad=0
chunks=$MB
while :; do
    now=$(cut -d. -f1 /proc/uptime)
    [ $((now - start)) -ge "$SECS" ] && break
    sleep "$INTERVAL"
    n=$((n + 1))
    # Rewrite chunk (n mod chunks) with its own bytes, in place.
    c=$((n % chunks))
    dd if=/data/blob of=/data/chunk bs=1048576 skip=$c count=1 2>/dev/null
    dd if=/data/chunk of=/data/blob bs=1048576 seek=$c count=1 conv=notrunc 2>/dev/null
    rm -f /data/chunk
    sum=$(md5sum /data/blob | cut -d' ' -f1)
    if [ "$sum" = "$EXPECT" ]; then
        echo "GUEST-OK $n $sum"
    else
        echo "GUEST-BAD $n $sum $EXPECT"
        bad=$((bad + 1))
    fi
done
echo "GUEST-DONE $n bad=$bad uptime=$(uptime_s)"
sync
poweroff -f
# poweroff -f should not return; never let PID 1 exit.
while :; do sleep 3600; done
