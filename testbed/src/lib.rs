//! Hermetic testbed: a Debian rootfs with CRIU 4.2, Podman and containerd, entered with unshare + pivot_root, and network topologies for tests.
