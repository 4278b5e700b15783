#!/bin/sh
# Installs p4lb from a built workspace (cargo build --release) or from the
# directory given with --from. Everything is root-owned; the controller's API
# socket is created 0600 by the daemon.
#
#   packaging/install.sh [--from DIR] [--prefix /] [--no-systemd] [--no-criu]
set -eu

from=""
root=""
systemd=1
criu=1
while [ $# -gt 0 ]; do
    case "$1" in
        --from) from=$2; shift 2 ;;
        --prefix|--root) root=${2%/}; shift 2 ;;
        --no-systemd) systemd=0; shift ;;
        --no-criu) criu=0; shift ;;
        -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
[ -n "$from" ] || from="$repo/target/release"

if [ "$(id -u)" != 0 ]; then
    echo "install.sh: run as root" >&2
    exit 1
fi

need() {
    if [ ! -f "$from/$1" ]; then
        echo "install.sh: $from/$1 is missing (cargo build --release, or --from DIR)" >&2
        exit 1
    fi
}
for b in p4lb-controller p4lbctl p4lb-switch p4lb p4lb-netavark p4lb-criu-action p4lb-oci-hook; do need "$b"; done

inst() { install -o root -g root "$@"; }

inst -d -m 0755 "$root/usr/bin" "$root/usr/libexec/p4lb" "$root/usr/libexec/netavark" "$root/opt/cni/bin" \
    "$root/usr/share/containers/oci/hooks.d" "$root/usr/share/doc/p4lb"
inst -d -m 0700 "$root/etc/p4lb" "$root/var/lib/p4lb"
inst -m 0755 "$from/p4lb-controller" "$from/p4lbctl" "$from/p4lb-switch" "$root/usr/bin/"
inst -m 0755 "$from/p4lb" "$root/opt/cni/bin/p4lb"
# The netavark plugin: its file name is the driver name (`podman network create -d p4lb`).
inst -m 0755 "$from/p4lb-netavark" "$root/usr/libexec/netavark/p4lb"
inst -m 0755 "$from/p4lb-criu-action" "$from/p4lb-oci-hook" "$root/usr/libexec/p4lb/"
inst -m 0644 "$repo/crates/p4lb-oci-hook/hooks.d/p4lb.json" "$root/usr/share/containers/oci/hooks.d/p4lb.json"
[ -e "$root/etc/p4lb/criu-action.toml" ] ||
    inst -m 0600 "$here/p4lb/criu-action.toml" "$root/etc/p4lb/criu-action.toml"
# The controller talks to p4lb-switch.service; an existing configuration is kept.
[ -e "$root/etc/p4lb/controller.toml" ] ||
    inst -m 0600 "$here/p4lb/controller.toml" "$root/etc/p4lb/controller.toml"
inst -m 0644 "$here/README.md" "$here/cni/10-p4lb.conflist.example" "$root/usr/share/doc/p4lb/"
for d in migration.md controller.md podman.md; do
    [ -f "$repo/docs/$d" ] && inst -m 0644 "$repo/docs/$d" "$root/usr/share/doc/p4lb/"
done

if [ "$criu" = 1 ]; then
    inst -d -m 0755 "$root/etc/criu"
    # CRIU reads default.conf in every mode (command line, and the RPC mode of
    # runc and crun) and then the runtime's own file, adding up their
    # action-script lines: the script is named in default.conf only, so it runs
    # once per action. tcp-established goes into every file.
    for f in runc.conf crun.conf default.conf; do
        conf="$root/etc/criu/$f"
        [ -e "$conf" ] || : >"$conf"
        # Replace an earlier p4lb block, keep everything else as it is.
        tmp=$(mktemp "$conf.XXXXXX")
        sed '/^# BEGIN p4lb$/,/^# END p4lb$/d' "$conf" >"$tmp"
        {
            echo "# BEGIN p4lb"
            if [ "$f" = default.conf ]; then
                cat "$here/criu/p4lb.conf"
            else
                grep -v '^action-script ' "$here/criu/p4lb.conf"
            fi
            echo "# END p4lb"
        } >>"$tmp"
        chown root:root "$tmp"
        chmod 0644 "$tmp"
        mv "$tmp" "$conf"
    done
fi

if [ "$systemd" = 1 ]; then
    inst -d -m 0755 "$root/etc/systemd/system"
    inst -m 0644 "$here/systemd/p4lb-switch.service" "$here/systemd/p4lb-controller.service" \
        "$root/etc/systemd/system/"
    if [ -z "$root" ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        systemctl daemon-reload
        echo "install.sh: start with: systemctl enable --now p4lb-switch p4lb-controller"
    fi
fi
echo "install.sh: p4lb installed under ${root:-/}"
