//! End-to-end scenarios of p4lb in the hermetic testbed (`p4lb-testbed`), and
//! the end-to-end tests (`tests/`) that run them.
//!
//! - [`scenario`]: live migration with p4lb installed the way packaging does
//!   (controller with its embedded switch, CNI plugin, netavark plugin, CRIU action
//!   script, OCI hook, a VIP service), a server container and a client holding connections;
//!   its Podman-native steps (network create, run, address, checkpoint → rm → restore)
//!   are the one source for the tests and `make demo`,
//! - [`nodes`]: two nodes in one testbed (a second Podman storage, or a second
//!   containerd), each with its own `p4lb-agent` and certificate, and `p4lbctl
//!   migrate` between them,
//! - [`bmv2`]: BMv2 as the scenario's switch (`P4LB_P4_PREFIX`; the host's
//!   `simple_switch_grpc` in the testbed's network namespace),
//! - [`judge`]: which client connections survived a checkpoint/restore,
//! - [`cri`]: containerd in the testbed (start, the p4lb CNI configuration, pod
//!   settings); the CRI client itself is p4lb-agent's `cri` module,
//! - [`files_list`]: `packaging/files.list`, what p4lb installs (the package and
//!   node-installer tests check installed trees against it),
//! - [`manifests`]: deploy/kubernetes parsed into typed objects (unknown fields
//!   refused), and its containers as `podman run` arguments,
//! - [`walkthrough`]: the user guide's walkthroughs (marked shell blocks of the docs)
//!   read out for the tests that run them as written,
//! - [`error`]: the scenarios' error type.
//!
//! The tests: `migration_podman_native` (a p4lb netavark network and only Podman
//! commands: migrations, network commands, faults, figures), `migration_podman`
//! (migrations to new addresses under load, namespaces wired by hand),
//! `migration_faults` (restores that must be refused), `migration_cri` and
//! `cni_containerd` (containerd's CRI path), `containerd` (containerd with the
//! `bridge` plugin and the local registry), `packages` (the .deb installed, upgraded,
//! removed and purged in the testbed; the .rpm's contents and scripts; CRI and Podman
//! migrations with nothing of p4lb but the installed .deb), `kubernetes`
//! (deploy/kubernetes parsed into typed objects; the node installer run with the
//! DaemonSet's hostPath mounts), `kubernetes_node` (the image's installer and controller
//! run by Podman as the DaemonSet declares them, then a CRI migration with nothing else
//! of p4lb on the node), `multi_node` (a server moved between two nodes with `p4lbctl migrate`; a tampered
//! archive, a failed restore, the target killed mid-transfer, the controller restarted, foreign
//! and node certificates), `multi_node_cri` (a CRI pod moved between two containerd nodes
//! with `p4lbctl migrate`; node B's containerd down, and failing the restore after its pod
//! ran), `multi_node_bench` (an `#[ignore]`d benchmark: a 256 MiB server
//! moved on one node and across nodes, per phase, with the client-observed stall),
//! `walkthroughs` (the guide's walkthroughs run as written:
//! docs/podman.md with the source install and uninstall, the recovery of a failed restore
//! in docs/migration.md, the package install and purge of docs/install.md). They need root and the p4lb
//! binaries built first (`cargo build --workspace --bins` and the static
//! `p4lb-testapp`), and they serialize themselves with the testbed's tests.

pub mod bmv2;
pub mod cri;
pub mod error;
pub mod files_list;
pub mod judge;
pub mod manifests;
pub mod nodes;
pub mod scenario;
pub mod walkthrough;

pub use error::{Error, Result};
