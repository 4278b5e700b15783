#!/bin/sh
# Builds the p4lb container image (OCI archive) from the static release binaries
# (`make image` runs it after the release build). No registry is needed: the files of
# packaging/files.list are staged with p4lb-setup.sh, then Podman inside the testbed
# (p4lb-testbed run) imports them, with busybox-static for the node installer's shell,
# and saves the image as an OCI archive.
#
#   packaging/build-image.sh --from BINDIR --out DIR --testbed P4LB-TESTBED [--version X.Y.Z]
#
# Load the result with `podman load -i DIR/p4lb-<version>.oci.tar`, or on a Kubernetes
# node with `ctr -n k8s.io images import DIR/p4lb-<version>.oci.tar`.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
from=""
out=""
testbed=""
version=""
while [ $# -gt 0 ]; do
    case "$1" in
        --from) from=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --testbed) testbed=$2; shift 2 ;;
        --version) version=$2; shift 2 ;;
        *) echo "build-image.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ -n "$from" ] && [ -n "$out" ] && [ -n "$testbed" ] || { sed -n '2,11p' "$0"; exit 2; }
if [ -z "$version" ]; then
    version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml")
fi
target_dir=${CARGO_TARGET_DIR:-$repo/target}
mkdir -p "$out"
out=$(cd "$out" && pwd)
case "$out" in
    "$target_dir"/*) ;;
    *) echo "build-image.sh: --out must be under the target dir ($target_dir), which the testbed sees" >&2; exit 2 ;;
esac
inside="/p4lb/target/${out#"$target_dir"/}"
name="localhost/p4lb:$version"
archive="$out/p4lb-$version.oci.tar"

rm -rf "$out/rootfs"
sh "$here/p4lb-setup.sh" stage --from "$from" --source "$repo" --root "$out/rootfs" --strip

tmp="$archive.part"
"$testbed" run /bin/sh -c "set -e
d=\$(mktemp -d /tmp/p4lb-image.XXXXXX)
cp -a $inside/rootfs/. \"\$d/\"
mkdir -p \"\$d/bin\" \"\$d/tmp\" \"\$d/proc\" \"\$d/sys\" \"\$d/dev\" \"\$d/run\" \"\$d/host\"
# Runtimes name network namespaces /var/run/netns/...: /var/run is /run, as on a host.
mkdir -p \"\$d/var\" && ln -s ../run \"\$d/var/run\"
cp /bin/busybox \"\$d/bin/busybox\"
for a in \$(/bin/busybox --list); do [ -e \"\$d/bin/\$a\" ] || ln -s busybox \"\$d/bin/\$a\"; done
echo 'root:x:0:0:root:/:/bin/sh' > \"\$d/etc/passwd\"
echo 'root:x:0:' > \"\$d/etc/group\"
tar -C \"\$d\" -cf \"\$d.tar\" .
podman import --change 'CMD=[\"/usr/bin/p4lb-controller\"]' \
    --change 'LABEL=org.opencontainers.image.title=p4lb' \
    --change 'LABEL=org.opencontainers.image.version=$version' \"\$d.tar\" $name >/dev/null
podman save --quiet --format oci-archive -o \"\$d.oci\" $name >/dev/null
cat \"\$d.oci\"
" >"$tmp"
mv "$tmp" "$archive"
rm -rf "$out/rootfs"
echo "built $archive ($name)"
