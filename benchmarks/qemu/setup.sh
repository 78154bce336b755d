#!/usr/bin/env bash
# setup.sh: prepare everything the QEMU dedup benchmark needs, idempotently.
#
#  * apt-get installs qemu-system-x86 and cpio (skipped when already present);
#  * downloads (apt-get download, not installed) the real Debian kernel package
#    that linux-image-amd64 depends on, and busybox-static, and extracts them
#    with dpkg-deb -x under .cache/ (nothing goes into /boot, and a dynamic
#    busybox the machine may have is left alone);
#  * builds .cache/initramfs.cpio.gz from guest-init.sh + the static busybox.
#
# Outputs (used by run.sh):  .cache/vmlinuz  .cache/initramfs.cpio.gz
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE="$HERE/.cache"

usage() {
    cat <<USAGE
usage: $(basename "$0") [--force]

Installs qemu-system-x86 and cpio with apt-get if missing, fetches and extracts
a Debian kernel and busybox-static into $CACHE, and builds the guest initramfs.
Idempotent: steps already done are skipped.

  --force   re-download the packages and rebuild the initramfs
USAGE
}

FORCE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --force) FORCE=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "setup.sh: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: must run as root (apt-get install)" >&2
    exit 1
fi

log() { echo "setup.sh: $*"; }

export DEBIAN_FRONTEND=noninteractive
APT_UPDATED=0
apt_update_once() {
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        apt-get update -qq
        APT_UPDATED=1
    fi
}

# ---- 1. host packages -------------------------------------------------------
need=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
command -v cpio >/dev/null 2>&1 || need+=(cpio)
command -v gzip >/dev/null 2>&1 || need+=(gzip)
command -v pgrep >/dev/null 2>&1 || need+=(procps)
mkdir -p "$CACHE"
if [ ${#need[@]} -gt 0 ]; then
    apt_update_once
    log "apt-get install ${need[*]}"
    # No recommends: the GUI, OVMF, qemu-utils and block extras are not used.
    apt-get install -y -qq --no-install-recommends "${need[@]}" >"$CACHE/apt-install.log" 2>&1 || {
        cat "$CACHE/apt-install.log" >&2
        echo "setup.sh: apt-get install ${need[*]} failed" >&2
        exit 1
    }
else
    log "host packages present (qemu-system-x86_64, cpio, gzip, pgrep)"
fi

mkdir -p "$CACHE/debs"

# fetch_pkg NAME: apt-get download NAME into .cache/debs unless a .deb is
# there (or --force); sets FETCHED to the .deb's path.
FETCHED=
fetch_pkg() {
    local name=$1 deb
    deb=$(ls "$CACHE/debs/${name}_"*.deb 2>/dev/null | head -n1 || true)
    if [ -z "$deb" ] || [ "$FORCE" -eq 1 ]; then
        rm -f "$CACHE/debs/${name}_"*.deb
        apt_update_once
        log "apt-get download $name"
        # apt-get download writes into the current directory. As root, apt
        # warns that the download is unsandboxed (_apt cannot write there).
        (cd "$CACHE/debs" && apt-get download -qq "$name" 2>&1 |
            { grep -v -i 'unsandboxed' || true; } >&2)
        deb=$(ls "$CACHE/debs/${name}_"*.deb 2>/dev/null | head -n1 || true)
        if [ -z "$deb" ]; then
            echo "setup.sh: apt-get download $name produced no .deb" >&2
            exit 1
        fi
    fi
    FETCHED=$deb
}

# ---- 2. kernel -------------------------------------------------------------
if [ -e "$CACHE/vmlinuz" ] && [ "$FORCE" -eq 0 ]; then
    log "kernel present: $(readlink "$CACHE/vmlinuz")"
else
    # linux-image-amd64 is a metapackage; its Depends names the real image.
    kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
           awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    if [ -z "$kpkg" ]; then
        apt_update_once
        kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
               awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    fi
    if [ -z "$kpkg" ]; then
        echo "setup.sh: cannot resolve the kernel package behind linux-image-amd64" >&2
        exit 1
    fi
    log "kernel package: $kpkg"
    fetch_pkg "$kpkg"
    kdeb=$FETCHED
    rm -rf "$CACHE/kernel"
    mkdir -p "$CACHE/kernel"
    log "extracting boot/vmlinuz-* from $(basename "$kdeb")"
    # Only the kernel image: the modules (hundreds of MiB) are not needed,
    # the initramfs guest uses no module.
    dpkg-deb --fsys-tarfile "$kdeb" | tar -x -C "$CACHE/kernel" --wildcards './boot/vmlinuz-*' './boot/config-*'

    kimg=$(ls "$CACHE/kernel/boot/vmlinuz-"* | head -n1)
    ln -sfn "${kimg#"$CACHE"/}" "$CACHE/vmlinuz"
    log "kernel: $kimg"
fi

# ---- 3. busybox-static -----------------------------------------------------
if [ -x "$CACHE/busybox/bin/busybox" ] && [ "$FORCE" -eq 0 ]; then
    log "busybox-static present"
else
    fetch_pkg busybox-static
    bdeb=$FETCHED
    rm -rf "$CACHE/busybox"
    mkdir -p "$CACHE/busybox"
    dpkg-deb -x "$bdeb" "$CACHE/busybox"
    [ -x "$CACHE/busybox/bin/busybox" ] || {
        echo "setup.sh: $bdeb has no bin/busybox" >&2; exit 1; }
    log "busybox: $("$CACHE/busybox/bin/busybox" | head -n1)"
fi

# ---- 4. initramfs ------------------------------------------------------------
INITRD="$CACHE/initramfs.cpio.gz"
if [ -s "$INITRD" ] && [ "$FORCE" -eq 0 ] &&
   [ "$INITRD" -nt "$HERE/guest-init.sh" ] &&
   [ "$INITRD" -nt "$CACHE/busybox/bin/busybox" ]; then
    log "initramfs up to date: $INITRD"
else
    root="$CACHE/rootfs"
    rm -rf "$root"
    mkdir -p "$root"/{bin,sbin,dev,proc,sys,tmp,data,etc,root}
    cp "$CACHE/busybox/bin/busybox" "$root/bin/busybox"
    # Only the applets the init uses, as symlinks (deterministic image).
    for a in sh mount umount mkdir cat echo sleep md5sum seq dd cmp head tail \
             awk sed cut tr date uname poweroff reboot sync rm ls free wc \
             printf test '[' expr grep true false; do
        ln -sf busybox "$root/bin/$a"
    done
    ln -sf ../bin/busybox "$root/sbin/poweroff"
    install -m 0755 "$HERE/guest-init.sh" "$root/init"
    # The kernel creates /dev/console if missing only via devtmpfs; ship one
    # so that init's stdio works before devtmpfs is mounted.
    mknod -m 0600 "$root/dev/console" c 5 1 2>/dev/null || true
    # Fixed mtimes and sorted names: the same inputs give the same archive.
    find "$root" -exec touch -h -d '2000-01-01 00:00:00 UTC' {} +
    (cd "$root" && find . -print0 | LC_ALL=C sort -z |
        cpio --null -o -H newc --reproducible --quiet | gzip -9 -n) > "$INITRD.tmp"
    mv "$INITRD.tmp" "$INITRD"
    log "initramfs: $INITRD ($(stat -c %s "$INITRD") bytes)"
fi

log "ready: kernel=$CACHE/vmlinuz initrd=$INITRD"
