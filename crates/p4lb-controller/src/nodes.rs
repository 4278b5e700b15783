//! The node registry (RegisterNode, ListNodes): which nodes there are and where their
//! agents serve. A node's name is the one its certificate carries ([`Caller::Node`]),
//! never one a message claims; callers on the Unix socket register the controller's own
//! node (`node_name`). Persisted with the rest of the state.

use p4lb_proto::api;

use crate::caller::Caller;
use crate::controller::{Change, Controller};
use crate::error::{Error, Result};
use crate::limits::{MAX_NODES, MAX_NODE_NAME_LEN};
use crate::state::{now_ms, NodeRec};

/// A node (or admin) name: a DNS name of letters, digits, '-' and '.', at most 253
/// bytes, not starting with '-' or '.', not ending with '.', without "..". `field`
/// names it in the error.
pub fn check_node_name(field: &str, name: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::invalid(format!(
            "{field} {name:?} is not valid: {why}"
        )))
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_NODE_NAME_LEN {
        return bad("longer than 253 bytes");
    }
    if name.starts_with(['-', '.']) || name.ends_with('.') || name.contains("..") {
        return bad("a DNS name does not start with '-' or '.', end with '.' or hold '..'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return bad("only letters, digits, '-' and '.' are allowed");
    }
    Ok(())
}

/// An agent address: `https://HOST:PORT` (agents serve with mutual TLS only).
fn check_agent_address(a: &str) -> Result<()> {
    let bad = || {
        Err(Error::invalid(format!(
            "agent_address {a:?} is not https://HOST:PORT"
        )))
    };
    let Some(rest) = a.strip_prefix("https://") else {
        return bad();
    };
    let Some((host, port)) = rest.rsplit_once(':') else {
        return bad();
    };
    if host.is_empty()
        || port.parse::<u16>().map_or(true, |p| p == 0)
        || host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '/')
    {
        return bad();
    }
    Ok(())
}

impl Controller {
    /// RegisterNode: records (or updates) the caller's node and its agent's address.
    pub async fn register_node(
        &self,
        caller: &Caller,
        r: api::RegisterNodeRequest,
    ) -> Result<NodeRec> {
        let name = match caller {
            Caller::Node(n) => n.clone(),
            Caller::Local | Caller::InProcess => self.node_name.clone(),
            Caller::Admin(a) => {
                return Err(Error::invalid(format!(
                    "admin {a} is no node: RegisterNode is called by a node (its certificate \
                     names it) or on the controller's own socket"
                )))
            }
        };
        check_node_name("node name", &name)?;
        check_agent_address(&r.agent_address)?;
        let mut g = self.inner.lock().await;
        let mut st = g.state.clone();
        if !st.nodes.contains_key(&name) && st.nodes.len() >= MAX_NODES {
            return Err(Error::precondition(format!(
                "{MAX_NODES} nodes are registered, the limit"
            )));
        }
        let rec = NodeRec {
            name: name.clone(),
            agent_address: r.agent_address,
            registered_unix_ms: now_ms(),
        };
        st.nodes.insert(name.clone(), rec.clone());
        self.commit(&mut g, Change::new(st)).await?;
        drop(g);
        tracing::info!(node = %name, agent = %rec.agent_address, "node registered");
        self.emit("node", "registered", &name, rec.agent_address.clone());
        Ok(rec)
    }

    /// ListNodes.
    pub async fn list_nodes(&self) -> Vec<NodeRec> {
        let g = self.inner.lock().await;
        g.state.nodes.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses() {
        for ok in ["node-a", "n1.example", "a"] {
            check_node_name("n", ok).unwrap();
        }
        for bad in ["", "-a", ".a", "a.", "a..b", "a b", "a/b", "a_b"] {
            assert!(check_node_name("n", bad).is_err(), "{bad}");
        }
        assert!(check_node_name("n", &"a".repeat(254)).is_err());
        for ok in ["https://192.0.2.7:7443", "https://node-a.example:1"] {
            check_agent_address(ok).unwrap();
        }
        for bad in [
            "",
            "http://a:1",
            "https://a",
            "https://:1",
            "https://a:0",
            "https://a:x",
            "https://a b:1",
        ] {
            assert!(check_agent_address(bad).is_err(), "{bad}");
        }
    }
}
