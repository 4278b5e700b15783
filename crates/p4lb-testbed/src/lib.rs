//! Hermetic testbed: a Debian rootfs with CRIU 4.2, Podman and containerd, entered with unshare + pivot_root, and network topologies for tests.
//!
//! - [`spec`]: what goes into the rootfs and the hash naming its cache entry,
//! - [`rootfs`]: building it (debootstrap + sid packages) atomically, or reusing it,
//! - [`enter`]: the namespaces, mounts and `pivot_root` of a session,
//! - [`session`]: a running [`Testbed`] and running commands inside it,
//! - [`topology`]: namespaces wired to a switch namespace by veth pairs,
//! - [`images`]: local images (busybox + `p4lb-testapp`), local registry,
//! - [`containerd`] and [`cri`]: containerd with a minimal CRI client,
//! - [`migration`]: the Podman checkpoint/restore scenario (baseline),
//! - [`scenario`]: live migration with p4lb installed (controller, CNI, VIP),
//! - [`preflight`] and [`cleanup`]: clear errors for a bad host, leftover removal.

pub mod cgroups;
pub mod cleanup;
pub mod containerd;
pub mod cri;
pub mod enter;
pub mod error;
pub mod images;
pub mod migration;
pub mod paths;
pub mod preflight;
pub mod rootfs;
pub mod scenario;
pub mod session;
pub mod spec;
pub mod testapp;
pub mod topology;
pub mod wait;

pub use error::{Error, Result};
pub use session::{Testbed, TestbedOptions};
pub use topology::{topology, Host, Node, Runner, Topology};
