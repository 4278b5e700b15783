#!/bin/bash
# usage: enter-rootfs.sh ROOTFS CMD...
# Copies this directory to ROOTFS/exp, enters ROOTFS in a private mount and network
# namespace with pivot_root (CRIU refuses a plain chroot) and runs CMD there.
set -eu
R=$(readlink -f "$1"); shift
HERE=$(dirname "$(readlink -f "$0")")
mkdir -p "$R/oldroot" "$R/exp"
cp -a "$HERE"/. "$R/exp/"
exec unshare -m -n --propagation private -- bash -c '
set -e
R=$1; shift
mount --bind "$R" "$R"
mount -t proc proc "$R/proc"
mount --rbind /sys "$R/sys"
mount -t devtmpfs devtmpfs "$R/dev"
mkdir -p "$R/dev/pts"; mount -t devpts devpts "$R/dev/pts"
mount -t tmpfs tmpfs "$R/run"
cd "$R"
pivot_root . oldroot
umount -l /oldroot
cd /
exec "$@"' bash "$R" "$@"
