//! The P4Runtime server: arbitration, pipeline config, Write/Read, digests, idle timeout.

pub mod arbitration;
pub mod device;
pub mod digest;
pub mod entry;
pub mod idle;
pub mod read;
pub mod replay;
pub mod service;
pub mod status;
pub mod unimplemented;
pub mod value;
pub mod write;

pub use device::{DataplaneSlot, Device};
pub use service::P4RuntimeService;
