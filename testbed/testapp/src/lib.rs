//! Test client/server: long-lived TCP connections streaming numbered requests, with per-connection integrity reports.
