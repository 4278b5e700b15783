//! Test support shared by the switch's integration tests: a P4Runtime client, frame
//! builders, netns/veth topologies and the targets (p4lb-switch, BMv2) packet tests run on.
#![allow(dead_code)]

pub mod frames;
pub mod netns;
pub mod p4rt;
pub mod target;
