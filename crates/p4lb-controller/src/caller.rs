//! Who calls the API, as the transport proves it, and what that caller may change.
//!
//! - [`Caller::Local`]: a process on the Unix socket, checked by the kernel's peer
//!   credentials (root, or the socket's group) and, for identity claims, by its network
//!   namespace ([`crate::identity`]). Its endpoints are on the controller's own node
//!   (`node_name`).
//! - [`Caller::Admin`]: a client certificate whose name is in `api.admins`: the whole
//!   API over TCP.
//! - [`Caller::Node`]: any other client certificate of the client CA, named by its first
//!   DNS subject alternative name (`p4lb_api::tls::peer_name`). A node changes only its
//!   own endpoints (see [`Caller::require_own`]), adds or removes no service, and takes
//!   over another node's endpoint only through a migration that names it as target.
//! - [`Caller::InProcess`]: no transport information at all (the API service called
//!   directly, in tests): treated as a local caller without peer credentials.
//!
//! A TCP connection without a valid certificate never reaches the API: the TLS
//! handshake refuses it. Callers over TCP (admins and nodes) name endpoints by key: the
//! controller never resolves their pids or netns paths, which belong to another kernel.

use crate::error::{Error, Result};

/// The caller of one API request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Local,
    Admin(String),
    Node(String),
    InProcess,
}

impl Caller {
    /// The node the caller registers endpoints on: a node its own, every other caller
    /// the controller's (`local`).
    pub fn node<'a>(&'a self, local: &'a str) -> &'a str {
        match self {
            Caller::Node(n) => n,
            _ => local,
        }
    }

    /// Whether the caller's namespaces are the controller's kernel's (pids and netns
    /// paths in its requests can be resolved here).
    pub fn is_local(&self) -> bool {
        matches!(self, Caller::Local | Caller::InProcess)
    }

    /// The node a node caller is restricted to; `None` for callers with the whole API.
    pub fn restricted_to(&self) -> Option<&str> {
        match self {
            Caller::Node(n) => Some(n),
            _ => None,
        }
    }

    /// PERMISSION_DENIED when a node caller acts on an endpoint of another node.
    pub fn require_own(&self, what: &str, node: &str) -> Result<()> {
        match self.restricted_to() {
            Some(n) if n != node => Err(Error::denied(format!(
                "node {n} may not change {what}: it is on node {node}"
            ))),
            _ => Ok(()),
        }
    }

    /// PERMISSION_DENIED for node callers (calls for admins and local callers only).
    pub fn require_admin(&self, call: &str) -> Result<()> {
        match self {
            Caller::Node(n) => Err(Error::denied(format!(
                "node {n} may not call {call}: admins and local callers only"
            ))),
            _ => Ok(()),
        }
    }

    /// For logs.
    pub fn describe(&self) -> String {
        match self {
            Caller::Local => String::from("local"),
            Caller::Admin(n) => format!("admin {n}"),
            Caller::Node(n) => format!("node {n}"),
            Caller::InProcess => String::from("in-process"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_held_to_its_own_endpoints_and_no_services() {
        let a = Caller::Node("a".into());
        assert_eq!(a.node("ctl"), "a");
        assert!(a.require_own("endpoint x", "a").is_ok());
        let e = a.require_own("endpoint x", "b").unwrap_err();
        assert!(matches!(e, Error::PermissionDenied(_)), "{e}");
        assert!(a.require_admin("AddService").is_err());
        assert!(!a.is_local());
        for c in [
            Caller::Local,
            Caller::InProcess,
            Caller::Admin("ops".into()),
        ] {
            assert_eq!(c.node("ctl"), "ctl");
            assert!(c.require_own("endpoint x", "b").is_ok());
            assert!(c.require_admin("AddService").is_ok());
        }
        assert!(!Caller::Admin("ops".into()).is_local());
        assert!(Caller::Local.is_local() && Caller::InProcess.is_local());
    }
}
