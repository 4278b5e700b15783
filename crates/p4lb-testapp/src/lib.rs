//! Test client/server: long-lived TCP connections streaming numbered requests, with per-connection integrity reports.
//!
//! The wire format lives in [`protocol`], the client's per-connection
//! bookkeeping in [`tracker`], the report format in [`report`]. The `client`,
//! `server` and `pause` modes of the `p4lb-testapp` binary are in [`client`],
//! [`server`] and [`pause`].

pub mod client;
pub mod pause;
pub mod protocol;
pub mod report;
pub mod server;
pub mod tracker;
