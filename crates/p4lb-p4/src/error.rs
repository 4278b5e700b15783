use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum P4Error {
    #[error("protobuf descriptors of P4Info are unusable: {0}")]
    Descriptor(String),
    #[error("P4Info text does not parse: {0}")]
    P4InfoText(String),
    #[error("P4Info does not match the p4lb pipeline: {0}")]
    Mismatch(String),
    #[error("reading BMv2 JSON {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path} is not a BMv2 JSON program (missing {missing:?}); build it with `make p4`")]
    NotBmv2 {
        path: PathBuf,
        missing: &'static str,
    },
}
