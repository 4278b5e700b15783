#!/bin/sh
# Builds the Debian (.deb) and RPM (.rpm) packages of p4lb from release binaries, with
# dpkg-deb and rpmbuild, and checks them with lintian and rpmlint (`make packages` runs
# it after the release build). Both packages ship the files of packaging/files.list,
# staged by p4lb-setup.sh; their maintainer scripts run the installed
# /usr/libexec/p4lb/p4lb-setup (configure after install, unconfigure before removal).
#
#   packaging/build-packages.sh --from BINDIR --out DIR [--version X.Y.Z] [--no-lint]
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
from=""
out=""
version=""
lint=1
while [ $# -gt 0 ]; do
    case "$1" in
        --from) from=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --version) version=$2; shift 2 ;;
        --no-lint) lint=0; shift ;;
        *) echo "build-packages.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ -n "$from" ] && [ -n "$out" ] || { sed -n '2,8p' "$0"; exit 2; }
if [ -z "$version" ]; then
    version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml")
fi
release=1
arch_deb=amd64
arch_rpm=x86_64
setup="$here/p4lb-setup.sh"
from=$(cd "$from" && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/p4lb-packages.XXXXXX")
trap 'rm -rf "$work"' EXIT

summary="P4 load balancer that keeps TCP connections across container live migration"
description="p4lb keeps clients' TCP connections to a virtual IP open while the container
behind it is checkpointed and restored with CRIU (Podman, containerd, CRI-O)
and comes back with a new address. A P4 switch (p4lb's own software switch or
BMv2) holds the connections; the controller repoints the backend; a CNI plugin
wires containers to switch ports; a CRIU action script and an OCI hook lock
and unlock the backend around checkpoint and restore."

# Man pages of the commands in /usr/bin, generated from their --help.
mkdir -p "$from/man"
for b in p4lb-controller p4lbctl p4lb-switch p4lb-agent; do
    case "$b" in
        p4lb-controller) what="p4lb controller: endpoints, services, migrations; programs the P4 switch" ;;
        p4lbctl) what="command-line client of the p4lb controller" ;;
        p4lb-switch) what="p4lb software switch, a P4Runtime target" ;;
        p4lb-agent) what="p4lb node agent: moves containers between nodes" ;;
    esac
    help2man --no-info --no-discard-stderr --section 1 --name "$what" \
        --version-string "$version" "$from/$b" | gzip -9n >"$from/man/$b.1.gz"
done

# The staged tree both packages are made of.
stage="$work/root"
sh "$setup" stage --from "$from" --source "$repo" --root "$stage" --strip
chmod 0755 "$stage"

# The directories removed on purge (and the ones that hold them), as shell words.
purge_paths=$(sh "$setup" list config dir state | awk '{ printf " %s", $4 }')

# ---- Debian ----
deb="$work/deb"
cp -a "$stage" "$deb"
mkdir -p "$deb/DEBIAN" "$deb/usr/share/doc/p4lb"
{
    echo "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
    echo "Upstream-Name: p4lb"
    echo "Source: https://github.com/p4lb/p4lb"
    echo
    echo "Files: *"
    echo "Copyright: 2026 The p4lb authors"
    echo "License: Apache-2.0"
    echo " On Debian systems, the full text of the Apache License 2.0 is in"
    echo " /usr/share/common-licenses/Apache-2.0."
} >"$deb/usr/share/doc/p4lb/copyright"
{
    echo "p4lb ($version-$release) unstable; urgency=medium"
    echo
    echo "  * Release $version."
    echo
    echo " -- p4lb authors <p4lb@p4lb.dev>  $(date -R -d @"${SOURCE_DATE_EPOCH:-$(date +%s)}")"
} | gzip -9n >"$deb/usr/share/doc/p4lb/changelog.Debian.gz"
mkdir -p "$deb/usr/share/lintian/overrides"
cp "$here/deb/lintian-overrides" "$deb/usr/share/lintian/overrides/p4lb"
chmod 0644 "$deb/usr/share/doc/p4lb/copyright" "$deb/usr/share/doc/p4lb/changelog.Debian.gz" \
    "$deb/usr/share/lintian/overrides/p4lb"
size=$(du -sk --exclude=DEBIAN "$deb" | cut -f1)
{
    echo "Package: p4lb"
    echo "Version: $version-$release"
    echo "Architecture: $arch_deb"
    echo "Maintainer: p4lb authors <p4lb@p4lb.dev>"
    echo "Installed-Size: $size"
    echo "Recommends: criu (>= 4.2), iproute2"
    echo "Suggests: podman, containerd, containernetworking-plugins"
    echo "Section: net"
    echo "Priority: optional"
    echo "Homepage: https://github.com/p4lb/p4lb"
    echo "Description: $summary"
    echo "$description" | sed 's/^/ /'
} >"$deb/DEBIAN/control"
sh "$setup" list config | awk '{ print $4 }' >"$deb/DEBIAN/conffiles"
cat >"$deb/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
# State directories, the /opt/cni/bin link, the CRIU configuration block, systemd reload.
if [ "$1" = configure ]; then
    /usr/libexec/p4lb/p4lb-setup configure
fi
EOF
cat >"$deb/DEBIAN/prerm" <<'EOF'
#!/bin/sh
set -e
# On removal (not on upgrade): stop the services, take the CRIU block and the link out.
if [ "$1" = remove ] || [ "$1" = deconfigure ]; then
    if [ -d /run/systemd/system ]; then
        systemctl disable --now p4lb-agent.service p4lb-controller.service p4lb-switch.service >/dev/null 2>&1 || true
    fi
    /usr/libexec/p4lb/p4lb-setup unconfigure
fi
EOF
cat >"$deb/DEBIAN/postrm" <<EOF
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "\$1" = remove ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
fi
# Purge: the configuration and the state of the controller and of the CNI plugin (a
# directory that is a mount point is emptied), and a parent left empty (/var/lib/cni when
# only p4lb's plugin state was in it), as p4lb-setup's remove --purge does.
if [ "\$1" = purge ]; then
    for p in$purge_paths /run/p4lb-switch; do
        if [ -d "\$p" ] && mountpoint -q "\$p"; then
            find "\$p" -mindepth 1 -delete
        else
            rm -rf "\$p"
            rmdir "\$(dirname "\$p")" 2>/dev/null || true
        fi
    done
fi
EOF
chmod 0755 "$deb/DEBIAN/postinst" "$deb/DEBIAN/prerm" "$deb/DEBIAN/postrm"
chmod 0644 "$deb/DEBIAN/control" "$deb/DEBIAN/conffiles"
debfile="$out/p4lb_${version}-${release}_${arch_deb}.deb"
dpkg-deb --root-owner-group -Zxz --build "$deb" "$debfile" >/dev/null
echo "built $debfile"

# ---- RPM ----
top="$work/rpm"
mkdir -p "$top/SPECS" "$top/BUILD" "$top/RPMS" "$top/SOURCES" "$top/SRPMS"
spec="$top/SPECS/p4lb.spec"
{
    echo "Name: p4lb"
    echo "Version: $version"
    echo "Release: $release"
    echo "Summary: $summary"
    echo "License: Apache-2.0"
    echo "URL: https://github.com/p4lb/p4lb"
    echo "Group: System Environment/Daemons"
    echo "Packager: p4lb authors <p4lb@p4lb.dev>"
    echo "Recommends: criu >= 4.2"
    echo "Recommends: iproute"
    echo "%global debug_package %{nil}"
    echo "%global __os_install_post %{nil}"
    echo "%description"
    echo "$description"
    echo "%install"
    echo "cp -a $stage/. %{buildroot}/"
    echo "%post"
    echo "/usr/libexec/p4lb/p4lb-setup configure"
    echo "%preun"
    echo "# \$1 = 0: removal, not an upgrade."
    echo "if [ \$1 -eq 0 ]; then"
    echo "    if [ -d /run/systemd/system ]; then systemctl disable --now p4lb-agent.service p4lb-controller.service p4lb-switch.service >/dev/null 2>&1 || :; fi"
    echo "    /usr/libexec/p4lb/p4lb-setup unconfigure"
    echo "fi"
    echo "%postun"
    echo "if [ \$1 -eq 0 ] && [ -d /run/systemd/system ]; then systemctl daemon-reload >/dev/null 2>&1 || :; fi"
    echo "%changelog"
    echo "* $(LC_ALL=C date -u -d @"${SOURCE_DATE_EPOCH:-$(date +%s)}" '+%a %b %d %Y') p4lb authors <p4lb@p4lb.dev> - $version-$release"
    echo "- Release $version."
    echo "%files"
    # The directories p4lb owns (the others belong to the filesystem or other packages).
    echo "%dir /usr/libexec/p4lb"
    echo "%dir /usr/share/p4lb"
    echo "%dir /usr/share/p4lb/criu"
    echo "%dir /usr/share/doc/p4lb"
    sh "$setup" list build 'build?' repo unit config dir | while read -r kind mode src dest; do
        [ -e "$stage$dest" ] || continue
        case "$kind" in
            config) echo "%config(noreplace) %attr($mode,root,root) $dest" ;;
            dir) echo "%dir %attr($mode,root,root) $dest" ;;
            *) echo "%attr($mode,root,root) $dest" ;;
        esac
    done
} >"$spec"
rpmbuild -bb --quiet --define "_topdir $top" --define "_build_id_links none" \
    --target "$arch_rpm" "$spec" >/dev/null
rpmfile="$out/p4lb-${version}-${release}.${arch_rpm}.rpm"
cp "$top/RPMS/$arch_rpm/p4lb-${version}-${release}.${arch_rpm}.rpm" "$rpmfile"
echo "built $rpmfile"

if [ "$lint" = 1 ]; then
    echo "lintian $(basename "$debfile"):"
    # Errors fail the build; the warnings left are explained in packaging/README.md.
    lintian --profile debian --fail-on error "$debfile"
    echo "rpmlint $(basename "$rpmfile"):"
    rpmlint -c "$here/rpm/rpmlint.toml" "$rpmfile"
fi
