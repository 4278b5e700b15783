//! Compiles the .proto files under proto/ with protox (a pure-Rust protobuf
//! compiler, so building p4lb needs no system protoc) and generates tonic code.
//!
//! p4lb's own API messages (package `p4lb.v1`) also derive serde: that derive is
//! the one JSON mapping of them (`p4lbctl --json` prints it, the testbed reads it
//! back). Field names are the proto field names; every field may be absent on
//! input (`#[serde(default)]`, as in protobuf).

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "proto/google/rpc/status.proto",
    "proto/p4/v1/p4data.proto",
    "proto/p4/config/v1/p4info.proto",
    "proto/p4/v1/p4runtime.proto",
    "proto/p4lb/v1/controller.proto",
    "proto/p4lb/v1/switch.proto",
    "proto/p4lb/v1/agent.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The generated code depends on this file too (the serde attributes below).
    println!("cargo:rerun-if-changed=build.rs");
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    // Keep the descriptor set: text-format parsing of P4Info and reflection need it.
    std::fs::write(
        out.join("p4lb_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .message_attribute(
            ".p4lb.v1",
            "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]",
        )
        .enum_attribute(
            ".p4lb.v1",
            "#[derive(serde::Serialize, serde::Deserialize)]",
        )
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
