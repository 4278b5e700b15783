#!/bin/sh
# Removes what install.sh installed (packaging/files.list), the CRIU configuration
# block and the /opt/cni/bin link, and the directories left empty. Keeps /etc/p4lb,
# /var/lib/p4lb (state) and /var/lib/cni/p4lb (the CNI plugin's state) unless
# --purge is given.
#
#   packaging/uninstall.sh [--prefix /] [--purge]
set -eu
case "${1:-}" in -h | --help) sed -n '2,7p' "$0"; exit 0 ;; esac
here=$(cd "$(dirname "$0")" && pwd)
exec sh "$here/p4lb-setup.sh" remove --source "$(dirname "$here")" "$@"
