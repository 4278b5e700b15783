//! Everything that talks to the switch: the P4Runtime session ([`session`]) over a
//! connection or, to the embedded switch, in process ([`channel`]), table
//! programming by diff ([`programmer`]), the pipeline config ([`forwarding`]) and port
//! attachment ([`ports`], with BMv2's Thrift encoding in [`thrift`]), mutual TLS to a switch
//! over TCP ([`tls`]).

pub mod channel;
pub mod forwarding;
pub mod ports;
pub mod programmer;
pub mod session;
pub mod thrift;
pub mod tls;
