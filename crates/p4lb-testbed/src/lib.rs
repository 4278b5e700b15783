//! Hermetic testbed: a Debian rootfs with CRIU 4.2, Podman and containerd, entered with unshare + pivot_root, and network topologies for tests.
//!
//! This crate is only the machine. The scenarios and end-to-end tests that
//! run in it are `p4lb-e2e`; the demo and the benchmarks are `p4lb-tools`.
//!
//! - [`spec`]: what goes into the rootfs and the hash naming its cache entry,
//! - [`rootfs`]: building it (debootstrap + sid packages) atomically, or reusing it,
//! - [`enter`]: the namespaces, mounts and `pivot_root` of a session,
//! - [`session`]: a running [`Testbed`] and running commands inside it,
//! - [`cgroups`]: a cgroup2 leaf per session, pruning CRIU's restore copies,
//! - [`topology`]: namespaces wired to a switch namespace by veth pairs,
//! - [`images`]: local images (busybox + `p4lb-testapp`), local registry,
//! - [`containerd`]: containerd started inside a session,
//! - [`testapp`]: the static `p4lb-testapp` the images and tests run,
//! - [`paths`] and [`wait`]: where things are on the host, polling with a deadline,
//! - [`preflight`] and [`cleanup`]: clear errors for a bad host, leftover removal.

pub mod cgroups;
pub mod cleanup;
pub mod containerd;
pub mod enter;
pub mod error;
pub mod images;
pub mod paths;
pub mod preflight;
pub mod rootfs;
pub mod session;
pub mod spec;
pub mod testapp;
pub mod topology;
pub mod wait;

pub use error::{Error, Result};
pub use session::{Testbed, TestbedOptions};
pub use topology::{topology, Host, Node, Runner, Topology};
