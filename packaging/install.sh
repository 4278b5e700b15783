#!/bin/sh
# Installs p4lb from a built workspace (cargo build --release) or from the
# directory given with --from, following packaging/files.list (p4lb-setup.sh does
# the work; the Debian and RPM packages install the same files). Everything is
# root-owned; the controller's API socket is created 0600 by the daemon.
#
#   packaging/install.sh [--from DIR] [--prefix /] [--no-systemd] [--no-criu]
set -eu
case "${1:-}" in -h | --help) sed -n '2,7p' "$0"; exit 0 ;; esac
here=$(cd "$(dirname "$0")" && pwd)
exec sh "$here/p4lb-setup.sh" install --source "$(dirname "$here")" "$@"
