//! Protocol definitions shared by every p4lb binary.
//!
//! - [`p4::v1`] and [`p4::config::v1`]: the subset of P4Runtime v1 that p4lb's
//!   controller and software switch speak, with the specification's field numbers.
//! - [`google::rpc`]: the status model P4Runtime carries write errors in.
//! - [`p4lb::v1`]: p4lb's own controller API (endpoints, services, migrations) and
//!   the node agent's API (`Agent`: migrate a container to another node, receive a
//!   checkpoint archive).
//!   Its messages derive `serde::Serialize`/`Deserialize` (see build.rs): the one
//!   JSON form of them, with the proto field names.
//!
//! [`FILE_DESCRIPTOR_SET`] holds the compiled descriptors, for reflection and for
//! parsing P4Info text format.

#![allow(clippy::large_enum_variant, clippy::doc_lazy_continuation)]

pub mod google {
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}

pub mod p4 {
    pub mod v1 {
        tonic::include_proto!("p4.v1");
    }
    pub mod config {
        pub mod v1 {
            tonic::include_proto!("p4.config.v1");
        }
    }
}

pub mod p4lb {
    pub mod v1 {
        tonic::include_proto!("p4lb.v1");
    }
}

/// Encoded `google.protobuf.FileDescriptorSet` of every .proto in this crate.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/p4lb_descriptor.bin"));

pub use p4::config::v1 as p4info;
pub use p4::v1 as p4runtime;
pub use p4lb::v1 as api;
