//! Local container images (no registry is reachable): built from
//! busybox-static and the static `p4lb-testapp`, imported into Podman, and
//! loaded into containerd (directly and through the testbed's local registry).

use crate::error::{Error, Result};
use crate::paths;
use crate::session::Testbed;

/// busybox + p4lb-testapp; default command `sh`.
pub const TEST_IMAGE: &str = "localhost/p4lb/testimg:latest";
/// The pod sandbox image containerd is configured with (`p4lb-testapp pause`).
pub const PAUSE_IMAGE: &str = "localhost/p4lb/pause:latest";
/// The local registry inside the testbed's network namespace.
pub const REGISTRY: &str = "127.0.0.1:5000";
/// Path of the test application inside images.
pub const TESTAPP_IN_IMAGE: &str = "/usr/local/bin/p4lb-testapp";

/// Builds the test and pause images into Podman's storage.
pub fn build_podman_images(tb: &Testbed) -> Result<()> {
    let testapp = crate::testapp::ensure_static()?;
    let inside = paths::inside_target(&testapp).ok_or_else(|| {
        Error::Testbed(format!(
            "{} is not under the target directory bound into the testbed",
            testapp.display()
        ))
    })?;
    let script = format!(
        r#"set -e
d=$(mktemp -d /tmp/p4lb-image.XXXXXX)
mkdir -p "$d/bin" "$d/usr/local/bin" "$d/tmp" "$d/etc" "$d/proc" "$d/sys" "$d/dev" "$d/run"
cp /bin/busybox "$d/bin/busybox"
for a in $(/bin/busybox --list); do [ -e "$d/bin/$a" ] || ln -s busybox "$d/bin/$a"; done
cp {inside} "$d{TESTAPP_IN_IMAGE}"
echo 'root:x:0:0:root:/:/bin/sh' > "$d/etc/passwd"
echo 'root:x:0:' > "$d/etc/group"
tar -C "$d" -cf "$d.tar" .
podman import --change 'CMD=["/bin/sh"]' "$d.tar" {TEST_IMAGE} >/dev/null
podman import --change 'ENTRYPOINT=["{TESTAPP_IN_IMAGE}","pause"]' "$d.tar" {PAUSE_IMAGE} >/dev/null
rm -rf "$d" "$d.tar"
"#,
        inside = inside.display(),
    );
    tb.sh(&script)?;
    Ok(())
}

/// Loads the pause and test images into containerd's CRI namespace (k8s.io).
pub fn load_into_containerd(tb: &Testbed) -> Result<()> {
    load_into_containerd_at(tb, crate::containerd::SOCKET)
}

/// [`load_into_containerd`] for the containerd at `socket` (inside the testbed).
pub fn load_into_containerd_at(tb: &Testbed, socket: &str) -> Result<()> {
    for image in [PAUSE_IMAGE, TEST_IMAGE] {
        tb.sh(&format!(
            "set -e; f=$(mktemp /tmp/p4lb-oci.XXXXXX); \
             podman save --quiet --format oci-archive -o $f {image}; \
             ctr --address {socket} -n k8s.io images import --index-name {image} $f \
             >/dev/null; rm -f $f"
        ))?;
    }
    Ok(())
}

/// Starts the local registry (Debian docker-registry) on 127.0.0.1:5000 and
/// waits until it answers.
pub fn start_registry(tb: &Testbed) -> Result<()> {
    tb.sh(
        "setsid docker-registry serve /etc/docker/registry/config.yml \
         >/tmp/docker-registry.log 2>&1 &",
    )?;
    crate::wait::until(20, "the local registry on 127.0.0.1:5000", || {
        tb.sh("busybox wget -q -O /dev/null http://127.0.0.1:5000/v2/")
            .is_ok()
    })
}

/// Pushes a Podman image to the local registry; returns its name there.
pub fn push_to_registry(tb: &Testbed, image: &str) -> Result<String> {
    let path = image
        .strip_prefix("localhost/")
        .unwrap_or(image)
        .to_string();
    let remote = format!("{REGISTRY}/{path}");
    tb.run(&[
        "podman",
        "push",
        "--quiet",
        "--tls-verify=false",
        image,
        &format!("docker://{remote}"),
    ])?;
    Ok(remote)
}
