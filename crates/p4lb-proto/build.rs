//! Compiles the .proto files under proto/ with protox (a pure-Rust protobuf
//! compiler, so building p4lb needs no system protoc) and generates tonic code.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "proto/google/rpc/status.proto",
    "proto/p4/v1/p4data.proto",
    "proto/p4/config/v1/p4info.proto",
    "proto/p4/v1/p4runtime.proto",
    "proto/p4lb/v1/controller.proto",
    "proto/p4lb/v1/switch.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
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
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
