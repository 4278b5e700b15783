#!/bin/sh
# Runs the plugin's tests as a runtime would exercise it. Needs root (network
# namespaces, veths, iptables for portmap). Installs Debian's reference CNI plugins
# (host-local, tuning, portmap, bridge in /usr/lib/cni) when they are missing.
# Usage: crates/p4lb-cni/scripts/test.sh [--bench] [extra cargo test args]
set -eu

if [ "$(id -u)" != 0 ]; then
    echo "p4lb-cni tests need root" >&2
    exit 1
fi
for p in host-local tuning portmap bridge; do
    if [ ! -x "/usr/lib/cni/$p" ]; then
        echo "installing containernetworking-plugins (missing /usr/lib/cni/$p)" >&2
        apt-get install -y containernetworking-plugins >&2
        break
    fi
done
if ! command -v iptables >/dev/null 2>&1; then
    apt-get install -y iptables >&2
fi

cd "$(dirname "$0")/../../.."
bench=0
if [ "${1:-}" = "--bench" ]; then
    bench=1
    shift
fi
cargo test -p p4lb-cni "$@"
if [ "$bench" = 1 ]; then
    cargo bench -p p4lb-cni --bench add_del
fi
