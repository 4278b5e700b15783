#!/bin/sh
# p4lb-setup: installs, configures and removes p4lb following packaging/files.list.
# It is the one implementation behind packaging/install.sh and uninstall.sh (source
# installs), the Debian and RPM maintainer scripts (installed as
# /usr/libexec/p4lb/p4lb-setup) and the Kubernetes node installer of the p4lb image
# (run by busybox sh). Plain POSIX sh, so that it runs in all three places.
#
#   p4lb-setup install     [--from DIR | --from-root DIR] [--source DIR] [--root DIR]
#                          [--set host|node] [--no-systemd] [--no-criu] [--cni-conflist FILE]
#       copy every entry of the set into ROOT, then `configure`
#   p4lb-setup stage       --from DIR --source DIR --root DIR [--strip]
#       copy the files the packages and the image ship (no links, no host configuration;
#       no root needed); --strip strips the programs' debug information
#   p4lb-setup configure   [--root DIR] [--set host|node] [--no-systemd] [--no-criu]
#       state directories, links, the CRIU configuration block, systemd reload
#   p4lb-setup unconfigure [--root DIR] [--no-systemd]
#       undo `configure` (the CRIU block, links) and leave no empty directory behind
#   p4lb-setup remove      [--root DIR] [--purge] [--no-systemd]
#       stop the services, remove every installed file, `unconfigure`; --purge also
#       deletes /etc/p4lb and the state directories
#   p4lb-setup list        KIND...
#       print `kind mode source destination` of the entries of those kinds (package builds)
#
# --from DIR:      the build output (cargo's target/release) holding the `build` entries
# --from-root DIR: take every file from DIR/<destination> instead (an installed tree,
#                  such as the p4lb image's own root)
# --source DIR:    the source tree holding `repo`, `config` and `unit` entries
set -eu

prog=p4lb-setup
die() { echo "$prog: $*" >&2; exit 1; }

here=$(cd "$(dirname "$0")" && pwd)
list=${P4LB_FILES_LIST:-}
if [ -z "$list" ]; then
    if [ -f "$here/files.list" ]; then list="$here/files.list"; else list="$here/../../share/p4lb/files.list"; fi
fi
[ -f "$list" ] || die "file list $list not found (set P4LB_FILES_LIST)"

cmd=${1:-}
[ $# -gt 0 ] && shift
from=""
fromroot=""
source=""
root=""
set_name=host
systemd=1
criu=1
purge=0
strip=0
conflist=""
case "$cmd" in
    list)
        [ $# -gt 0 ] || die "list: name at least one kind"
        for k in "$@"; do
            grep -v '^[[:space:]]*\(#\|$\)' "$list" | while read -r kind mode sets src dest; do
                if [ "$kind" = "$k" ]; then echo "$kind $mode $src $dest"; fi
            done
        done
        exit 0
        ;;
    install | stage | configure | unconfigure | remove) ;;
    -h | --help | "") sed -n '2,28p' "$0"; exit 0 ;;
    *) die "unknown command $cmd (install, stage, configure, unconfigure, remove, list)" ;;
esac
while [ $# -gt 0 ]; do
    case "$1" in
        --from) from=$2; shift 2 ;;
        # Kept as given: "/" (the image's own root) must not become "".
        --from-root) fromroot=$2; shift 2 ;;
        --source) source=$2; shift 2 ;;
        --prefix | --root) root=${2%/}; shift 2 ;;
        --set) set_name=$2; shift 2 ;;
        --no-systemd) systemd=0; shift ;;
        --no-criu) criu=0; shift ;;
        --purge) purge=1; shift ;;
        --strip) strip=1; shift ;;
        --cni-conflist) conflist=$2; shift 2 ;;
        *) die "unknown argument $1" ;;
    esac
done
case "$set_name" in host | node) ;; *) die "--set $set_name: not host or node" ;; esac
if [ -z "$source" ]; then source=$(dirname "$here"); fi
if [ -z "$from" ]; then from="$source/target/release"; fi

privileged=0
[ "$(id -u)" = 0 ] && privileged=1
[ "$cmd" = stage ] || [ "$privileged" = 1 ] || die "$cmd: run as root"

# The entries of the chosen set: `kind mode source destination` lines.
entries() {
    grep -v '^[[:space:]]*\(#\|$\)' "$list" | while read -r kind mode sets src dest; do
        case ",$sets," in *",$set_name,"*) echo "$kind $mode $src $dest" ;; esac
    done
}

# Where the file of an entry comes from (empty for an optional one that is absent).
origin() { # kind src dest
    if [ -n "$fromroot" ]; then
        p="${fromroot%/}$3"
    elif [ "$1" = build ] || [ "$1" = "build?" ]; then
        p="$from/$2"
    else
        p="$source/$2"
    fi
    if [ ! -f "$p" ]; then
        [ "$1" = "build?" ] && return 0
        die "$p is missing (cargo build --release, or --from DIR); nothing was installed"
    fi
    echo "$p"
}

inst() {
    if [ "$privileged" = 1 ]; then install -o 0 -g 0 "$@"; else install "$@"; fi
}

# Copies every file entry (not links) into $root; config files are kept when present.
copy_files() {
    # Check first, so that a missing file leaves nothing half installed.
    entries | while read -r kind mode src dest; do
        case "$kind" in build | "build?" | repo | config | unit) origin "$kind" "$src" "$dest" >/dev/null ;; esac
    done
    entries | while read -r kind mode src dest; do
        case "$kind" in
            dir) inst -d -m "$mode" "$root$dest" ;;
            unit) [ "$systemd" = 1 ] || continue ;;
        esac
        case "$kind" in
            build | "build?" | repo | config | unit)
                p=$(origin "$kind" "$src" "$dest")
                [ -n "$p" ] || continue
                [ "$kind" = config ] && [ -e "$root$dest" ] && continue
                parent=$(dirname "$root$dest")
                [ -d "$parent" ] || inst -d -m 0755 "$parent"
                inst -m "$mode" "$p" "$root$dest"
                ;;
        esac
    done
}

# Replaces the p4lb block of one CRIU configuration file by $2 (empty: remove it); a
# file left empty is deleted.
criu_block() { # file block-source-or-empty
    conf=$1
    [ -n "$2" ] || [ -f "$conf" ] || return 0
    [ -e "$conf" ] || : >"$conf"
    tmp=$(mktemp "$conf.XXXXXX")
    sed '/^# BEGIN p4lb$/,/^# END p4lb$/d' "$conf" >"$tmp"
    if [ -n "$2" ]; then
        {
            echo "# BEGIN p4lb"
            cat "$2"
            echo "# END p4lb"
        } >>"$tmp"
    fi
    chown 0:0 "$tmp"
    chmod 0644 "$tmp"
    mv "$tmp" "$conf"
    [ -s "$conf" ] || rm -f "$conf"
}

# Removes empty directories from $1 upwards, stopping at the directories every system has.
prune() {
    d=$1
    while :; do
        case "$d" in
            "$root" | "$root/" | "$root/etc" | "$root/opt" | "$root/usr" | "$root/usr/bin" | \
                "$root/usr/lib" | "$root/usr/libexec" | "$root/usr/share" | "$root/usr/share/doc" | \
                "$root/usr/share/man" | "$root/usr/share/man/man1" | "$root/var" | "$root/var/lib" | \
                "$root/usr/lib/systemd" | "$root/usr/lib/systemd/system") return 0 ;;
        esac
        rmdir "$d" 2>/dev/null || return 0
        d=$(dirname "$d")
    done
}

systemd_here() {
    [ "$systemd" = 1 ] && [ -z "$root" ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]
}

configure() {
    entries | while read -r kind mode src dest; do
        case "$kind" in
            dir) inst -d -m "$mode" "$root$dest" ;;
            link)
                parent=$(dirname "$root$dest")
                [ -d "$parent" ] || inst -d -m 0755 "$parent"
                ln -sfn "$src" "$root$dest"
                ;;
        esac
    done
    if [ "$criu" = 1 ]; then
        snippet="$root/usr/share/p4lb/criu/p4lb.conf"
        [ -f "$snippet" ] || die "$snippet is missing: install the files first"
        [ -d "$root/etc/criu" ] || inst -d -m 0755 "$root/etc/criu"
        # CRIU reads default.conf in every mode (command line, and the RPC mode of runc
        # and crun) and then the runtime's own file, adding up their action-script
        # lines: the script is named in default.conf only, so it runs once per action.
        # tcp-established goes into every file.
        noscript=$(mktemp "$root/etc/criu/p4lb-block.XXXXXX")
        grep -v '^action-script ' "$snippet" >"$noscript"
        criu_block "$root/etc/criu/runc.conf" "$noscript"
        criu_block "$root/etc/criu/crun.conf" "$noscript"
        rm -f "$noscript"
        criu_block "$root/etc/criu/default.conf" "$snippet"
    fi
    if [ -n "$conflist" ]; then
        [ -d "$root/etc/cni/net.d" ] || inst -d -m 0755 "$root/etc/cni/net.d"
        inst -m 0644 "$conflist" "$root/etc/cni/net.d/$(basename "$conflist")"
    fi
    if systemd_here; then systemctl daemon-reload; fi
}

unconfigure() {
    for f in runc.conf crun.conf default.conf; do criu_block "$root/etc/criu/$f" ""; done
    prune "$root/etc/criu"
    entries | while read -r kind mode src dest; do
        if [ "$kind" = link ] && [ -L "$root$dest" ] && [ "$(readlink "$root$dest")" = "$src" ]; then
            rm -f "$root$dest"
            prune "$(dirname "$root$dest")"
        fi
    done
}

remove() {
    if systemd_here; then
        systemctl disable --now p4lb-agent 2>/dev/null || true
        systemctl disable --now p4lb-controller 2>/dev/null || true
        systemctl disable --now p4lb-switch 2>/dev/null || true
    fi
    unconfigure
    entries | while read -r kind mode src dest; do
        case "$kind" in
            build | "build?" | repo | unit) rm -f "$root$dest"; prune "$(dirname "$root$dest")" ;;
            config | dir | state)
                [ "$purge" = 1 ] || continue
                # A directory that is a mount point is emptied.
                if [ -d "$root$dest" ] && mountpoint -q "$root$dest"; then
                    find "$root$dest" -mindepth 1 -delete
                else
                    rm -rf "$root$dest"
                    prune "$(dirname "$root$dest")"
                fi
                ;;
        esac
    done
    rm -rf "$root/run/p4lb-switch"
    if systemd_here; then systemctl daemon-reload; fi
}

case "$cmd" in
    stage)
        copy_files
        # Release binaries carry line tables (profile.release debug = 1).
        if [ "$strip" = 1 ]; then
            entries | while read -r kind mode src dest; do
                f="$root$dest"
                case "$kind" in build | "build?") ;; *) continue ;; esac
                if [ -f "$f" ] && head -c 4 "$f" | grep -q ELF; then strip --strip-unneeded "$f"; fi
            done
        fi
        ;;
    install)
        copy_files
        configure
        echo "$prog: p4lb installed under ${root:-/}"
        if systemd_here && [ "$set_name" = host ]; then
            echo "$prog: start with: systemctl enable --now p4lb-switch p4lb-controller"
        fi
        ;;
    configure) configure ;;
    unconfigure) unconfigure ;;
    remove)
        remove
        echo "$prog: p4lb removed from ${root:-/}"
        ;;
esac
