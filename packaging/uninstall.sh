#!/bin/sh
# Removes what install.sh installed. Keeps /var/lib/p4lb (state),
# /var/lib/cni/p4lb (the CNI plugin's state) and /etc/p4lb unless --purge is given.
#
#   packaging/uninstall.sh [--prefix /] [--purge]
set -eu
root=""
purge=0
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix|--root) root=${2%/}; shift 2 ;;
        --purge) purge=1; shift ;;
        *) echo "uninstall.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
if [ "$(id -u)" != 0 ]; then
    echo "uninstall.sh: run as root" >&2
    exit 1
fi
if [ -z "$root" ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl disable --now p4lb-controller 2>/dev/null || true
    systemctl disable --now p4lb-switch 2>/dev/null || true
fi
rm -f "$root/etc/systemd/system/p4lb-controller.service" \
    "$root/etc/systemd/system/p4lb-switch.service" \
    "$root/usr/bin/p4lb-controller" "$root/usr/bin/p4lbctl" "$root/usr/bin/p4lb-switch" \
    "$root/opt/cni/bin/p4lb" \
    "$root/usr/libexec/netavark/p4lb" \
    "$root/usr/libexec/p4lb/p4lb-criu-action" "$root/usr/libexec/p4lb/p4lb-oci-hook" \
    "$root/usr/share/containers/oci/hooks.d/p4lb.json"
rmdir "$root/usr/libexec/p4lb" 2>/dev/null || true
rmdir "$root/usr/libexec/netavark" 2>/dev/null || true
rm -rf "$root/usr/share/doc/p4lb"
for f in runc.conf crun.conf default.conf; do
    conf="$root/etc/criu/$f"
    [ -f "$conf" ] || continue
    tmp=$(mktemp "$conf.XXXXXX")
    sed '/^# BEGIN p4lb$/,/^# END p4lb$/d' "$conf" >"$tmp"
    chmod 0644 "$tmp"
    mv "$tmp" "$conf"
    [ -s "$conf" ] || rm -f "$conf"
done
if [ -z "$root" ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
fi
rm -rf "$root/run/p4lb-switch"
if [ "$purge" = 1 ]; then
    rm -rf "$root/etc/p4lb" "$root/var/lib/p4lb" "$root/var/lib/cni/p4lb"
fi
echo "uninstall.sh: p4lb removed from ${root:-/}"
