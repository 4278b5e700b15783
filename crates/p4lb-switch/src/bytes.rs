//! P4Runtime bytestrings: the one implementation is p4lb-p4's ([`p4lb_p4::bytes`]), used here
//! for decoding what clients write (width-checked) and encoding what the switch reports.

pub use p4lb_p4::bytes::*;
