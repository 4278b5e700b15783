//! Kernel-side plumbing: network namespaces, the veth pair, addresses/routes/neighbours,
//! and the ethtool offload switch. All through netlink and ioctls, no helper binaries.

pub mod addr;
pub mod ethtool;
pub mod link;
pub mod netns;

pub use link::Netlink;
pub use netns::NetNs;
