#!/usr/bin/env bash
# Builds the testbed's Debian rootfs into $1 (an empty, temporary directory).
# Called by `p4lb-testbed build`; the caller renames the directory into the
# cache only when this script exits 0, so a half-built tree is never reused.
#
# Environment (set by the caller):
#   P4LB_SUITE      base suite for debootstrap (trixie)
#   P4LB_MIRROR     Debian mirror URL
#   P4LB_PACKAGES   space separated packages installed from sid
#   P4LB_CONFIG_DIR directory whose tree is copied over the rootfs (/etc files)
set -euo pipefail

dir=$1
: "${P4LB_SUITE:?}" "${P4LB_MIRROR:?}" "${P4LB_PACKAGES:?}" "${P4LB_CONFIG_DIR:?}"

step() { printf '[build-rootfs] %s\n' "$*" >&2; }

step "debootstrap --variant=minbase $P4LB_SUITE $dir $P4LB_MIRROR"
debootstrap --variant=minbase "$P4LB_SUITE" "$dir" "$P4LB_MIRROR" >"$dir.debootstrap.log" 2>&1 || {
    tail -n 30 "$dir.debootstrap.log" >&2
    exit 1
}

cat >"$dir/etc/apt/sources.list.d/sid.list" <<SRC
deb $P4LB_MIRROR sid main
SRC
# Prefer the base suite; packages named explicitly come from sid via -t.
cat >"$dir/etc/apt/apt.conf.d/90p4lb" <<'CONF'
Acquire::Check-Valid-Until "false";
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Dpkg::Use-Pty "0";
CONF
# Daemons must not start inside the chroot during installation.
printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d"
chmod 0755 "$dir/usr/sbin/policy-rc.d"

in_root() {
    chroot "$dir" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        DEBIAN_FRONTEND=noninteractive LC_ALL=C "$@"
}

mount -t proc proc "$dir/proc"
trap 'umount -l "$dir/proc" 2>/dev/null || true' EXIT

step "apt-get update (with sid)"
in_root apt-get -o Acquire::Check-Valid-Until=false update >"$dir.apt.log" 2>&1 || {
    tail -n 30 "$dir.apt.log" >&2
    exit 1
}
step "apt-get install -t sid: $P4LB_PACKAGES"
# shellcheck disable=SC2086
in_root apt-get -o Acquire::Check-Valid-Until=false install -y -t sid $P4LB_PACKAGES >>"$dir.apt.log" 2>&1 || {
    tail -n 40 "$dir.apt.log" >&2
    exit 1
}
in_root apt-get clean

step "configuration"
cp -a "$P4LB_CONFIG_DIR"/. "$dir"/
rm -f "$dir/usr/sbin/policy-rc.d"

# Record what was installed, for `p4lb-testbed info`.
in_root dpkg-query -W -f '${Package} ${Version}\n' >"$dir/etc/p4lb-testbed.packages"
umount -l "$dir/proc"
trap - EXIT
rm -f "$dir.debootstrap.log" "$dir.apt.log"
step "done"
