#!/bin/sh
# Install the Debian packages ksmu builds and tests with, if any is missing.
# Runs apt-get as root, or through sudo when not root.  Idempotent and quiet
# when everything is already there.
set -eu
PKGS="build-essential cmake pkg-config libxxhash-dev libnuma-dev liburing-dev \
libgoogle-perftools-dev clang python3"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
echo "installing:$missing"
$SUDO apt-get update -qq
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
