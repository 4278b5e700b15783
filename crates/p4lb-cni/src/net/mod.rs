//! Kernel-side plumbing: network namespaces, the veth pair, addresses/routes/neighbours,
//! the ethtool offload switch, and the sysctls of a pod routed behind its node. All
//! through netlink, ioctls and /proc/sys, no helper binaries.

pub mod addr;
pub mod ethtool;
pub mod link;
pub mod netns;
pub mod sysctl;

pub use link::Netlink;
pub use netns::NetNs;
