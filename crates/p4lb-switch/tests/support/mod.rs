//! Test support shared by the switch's integration tests: a P4Runtime client, frame
//! builders (etherparse), netns/veth topologies, the targets (p4lb-switch, BMv2) packet tests
//! run on, and the data-plane fixture runner.
#![allow(dead_code)]

pub mod fixtures;
pub mod frames;
pub mod netns;
pub mod p4rt;
pub mod target;
