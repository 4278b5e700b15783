//! Network topologies for tests: named network namespaces (pods, hosts,
//! clients) each wired by a veth pair to a switch namespace, with addresses in
//! private ranges set inside those namespaces only.
//!
//! ```text
//!   <prefix>-client [eth0 10.77.0.1/24] ──veth── [port1] <prefix>-sw [port2] ──veth── [eth0 10.77.0.2/24] <prefix>-pod-a
//! ```
//!
//! With `bridge(true)` the switch namespace bridges its ports (a plain L2
//! switch); without it the ports are left for a P4 switch to attach to.
//! Everything is removed on drop, also when a test panics.

use std::process::{Child, Command, Output, Stdio};

use crate::error::{Context, Error, Result};
use crate::session::{check, show, Testbed};

/// Where topology commands run: on the host or inside a [`Testbed`].
pub trait Runner {
    /// A command running `args` there.
    fn command(&self, args: &[&str]) -> Command;

    /// Runs `args` there; fails unless it exits 0.
    fn run(&self, args: &[&str]) -> Result<String> {
        let out: Output = self
            .command(args)
            .output()
            .ctx(|| format!("running {}", show(args)))?;
        check(show(args), out)
    }
}

/// Runs commands on the host.
#[derive(Debug, Clone, Copy, Default)]
pub struct Host;

impl Runner for Host {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(args.first().copied().unwrap_or("true"));
        c.args(args.iter().skip(1)).stdin(Stdio::null());
        c
    }
}

impl Runner for Testbed {
    fn command(&self, args: &[&str]) -> Command {
        Testbed::command(self, args)
    }
}

/// A namespace of the topology and its link to the switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    /// Network namespace name (`ip netns`); its path is `/run/netns/<netns>`.
    pub netns: String,
    /// Address with prefix length, e.g. `10.77.0.2/24`.
    pub cidr: String,
    /// Address without prefix length.
    pub ip: String,
    pub mac: String,
    /// Interface inside the node.
    pub ifname: String,
    /// The veth end in the switch namespace.
    pub switch_port: String,
    /// Port number (1-based, in creation order).
    pub port: u32,
}

impl Node {
    /// Path of the node's network namespace (for `--network ns:<path>`).
    pub fn netns_path(&self) -> String {
        format!("/run/netns/{}", self.netns)
    }
}

/// Builds a [`Topology`].
#[derive(Debug, Clone)]
pub struct TopologyBuilder {
    prefix: String,
    nodes: Vec<(String, String)>,
    bridge: bool,
}

impl TopologyBuilder {
    /// Adds a node with an address such as `10.77.0.2/24`.
    pub fn node(mut self, name: &str, cidr: &str) -> Self {
        self.nodes.push((name.to_string(), cidr.to_string()));
        self
    }

    /// Bridge the switch ports (plain L2) instead of leaving them bare.
    pub fn bridge(mut self, on: bool) -> Self {
        self.bridge = on;
        self
    }

    /// Creates the namespaces and links through `runner`.
    pub fn build<R: Runner>(self, runner: &R) -> Result<Topology<'_, R>> {
        validate_name(&self.prefix)?;
        let mut topo = Topology {
            runner,
            switch_ns: format!("{}-sw", self.prefix),
            prefix: self.prefix,
            nodes: Vec::new(),
            bridge: self.bridge,
            active: true,
        };
        // On error the partly built topology is torn down by Drop.
        topo.add_ns(&topo.switch_ns.clone())?;
        if topo.bridge {
            topo.sw(&["link", "add", "br0", "type", "bridge"])?;
            topo.sw(&["link", "set", "br0", "up"])?;
        }
        for (i, (name, cidr)) in self.nodes.iter().enumerate() {
            validate_name(name)?;
            let ip = cidr
                .split_once('/')
                .map(|(a, _)| a.to_string())
                .ok_or_else(|| Error::Testbed(format!("address `{cidr}` needs a /prefix")))?;
            let port = i as u32 + 1;
            let node = Node {
                name: name.clone(),
                netns: format!("{}-{}", topo.prefix, name),
                cidr: cidr.clone(),
                ip,
                mac: format!("02:4c:42:00:{:02x}:{:02x}", (port >> 8) & 0xff, port & 0xff),
                ifname: "eth0".into(),
                switch_port: format!("port{port}"),
                port,
            };
            topo.nodes.push(node.clone());
            topo.wire(&node, true)?;
        }
        Ok(topo)
    }
}

fn validate_name(n: &str) -> Result<()> {
    let ok = !n.is_empty()
        && n.len() <= 24
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::Testbed(format!(
            "bad topology name `{n}`: use 1-24 of [A-Za-z0-9_-]"
        )))
    }
}

/// A wired set of namespaces; removed on drop.
pub struct Topology<'r, R: Runner> {
    runner: &'r R,
    prefix: String,
    switch_ns: String,
    nodes: Vec<Node>,
    bridge: bool,
    active: bool,
}

impl<R: Runner> std::fmt::Debug for Topology<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topology")
            .field("prefix", &self.prefix)
            .field("switch_ns", &self.switch_ns)
            .field("nodes", &self.nodes)
            .finish()
    }
}

/// Starts a topology whose namespaces are named `<prefix>-<node>`.
pub fn topology(prefix: &str) -> TopologyBuilder {
    TopologyBuilder {
        prefix: prefix.to_string(),
        nodes: Vec::new(),
        bridge: false,
    }
}

impl<'r, R: Runner> Topology<'r, R> {
    /// The switch namespace's name.
    pub fn switch_netns(&self) -> &str {
        &self.switch_ns
    }

    /// All nodes.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Result<&Node> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| Error::Testbed(format!("no node `{name}` in topology {}", self.prefix)))
    }

    fn add_ns(&self, ns: &str) -> Result<()> {
        self.runner.run(&["ip", "netns", "add", ns])?;
        self.runner
            .run(&["ip", "-n", ns, "link", "set", "lo", "up"])
            .map(|_| ())
    }

    fn sw(&self, args: &[&str]) -> Result<String> {
        let mut a = vec!["ip", "-n", self.switch_ns.as_str()];
        a.extend_from_slice(args);
        self.runner.run(&a)
    }

    fn wire(&self, n: &Node, with_address: bool) -> Result<()> {
        self.add_ns(&n.netns)?;
        self.sw(&[
            "link",
            "add",
            &n.switch_port,
            "type",
            "veth",
            "peer",
            "name",
            &n.ifname,
            "netns",
            &n.netns,
        ])?;
        self.runner.run(&[
            "ip", "-n", &n.netns, "link", "set", &n.ifname, "address", &n.mac,
        ])?;
        self.runner
            .run(&["ip", "-n", &n.netns, "link", "set", &n.ifname, "up"])?;
        if self.bridge {
            self.sw(&["link", "set", &n.switch_port, "master", "br0"])?;
        }
        self.sw(&["link", "set", &n.switch_port, "up"])?;
        if with_address {
            self.add_address(&n.name)?;
        }
        Ok(())
    }

    /// Puts the node's address on its interface.
    pub fn add_address(&self, name: &str) -> Result<()> {
        let n = self.node(name)?;
        self.runner
            .run(&[
                "ip", "-n", &n.netns, "addr", "add", &n.cidr, "dev", &n.ifname,
            ])
            .map(|_| ())
    }

    /// Runs `args` inside node `name`'s network namespace.
    pub fn exec(&self, name: &str, args: &[&str]) -> Result<String> {
        let n = self.node(name)?;
        let mut a = vec!["ip", "netns", "exec", n.netns.as_str()];
        a.extend_from_slice(args);
        self.runner.run(&a)
    }

    /// Starts `args` in node `name`'s namespace in the background (stdout and
    /// stderr piped).
    pub fn spawn(&self, name: &str, args: &[&str]) -> Result<Child> {
        let n = self.node(name)?;
        let mut a = vec!["ip", "netns", "exec", n.netns.as_str()];
        a.extend_from_slice(args);
        self.runner
            .command(&a)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .ctx(|| format!("starting {}", show(&a)))
    }

    /// Kills the processes in node `name`'s namespace and deletes it (its veth
    /// pair goes with it).
    pub fn remove_node_netns(&self, name: &str) -> Result<()> {
        let n = self.node(name)?;
        delete_ns(self.runner, &n.netns)
    }

    /// Deletes and recreates node `name`'s namespace at the same path, with
    /// the same interface, MAC and switch port; the address only when
    /// `with_address` (else call [`Topology::add_address`] later).
    pub fn recreate_node(&self, name: &str, with_address: bool) -> Result<()> {
        let n = self.node(name)?.clone();
        let _ = delete_ns(self.runner, &n.netns);
        self.wire(&n, with_address)
    }

    /// Removes every namespace (also done on drop).
    pub fn teardown(&mut self) -> Result<()> {
        if !self.active {
            return Ok(());
        }
        self.active = false;
        let mut errors = Vec::new();
        for n in &self.nodes {
            if let Err(e) = delete_ns(self.runner, &n.netns) {
                errors.push(e.to_string());
            }
        }
        if let Err(e) = delete_ns(self.runner, &self.switch_ns) {
            errors.push(e.to_string());
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::Testbed(format!(
                "tearing down topology {}: {}",
                self.prefix,
                errors.join("; ")
            )))
        }
    }
}

/// Kills the processes in `ns` and deletes it; a namespace that does not
/// exist is not an error.
fn delete_ns<R: Runner>(runner: &R, ns: &str) -> Result<()> {
    let list = runner.run(&["ip", "netns", "list"])?;
    if !list
        .lines()
        .any(|l| l.split_whitespace().next() == Some(ns))
    {
        return Ok(());
    }
    if let Ok(pids) = runner.run(&["ip", "netns", "pids", ns]) {
        let pids: Vec<&str> = pids.split_whitespace().collect();
        if !pids.is_empty() {
            let mut a = vec!["kill", "-9"];
            a.extend(pids);
            let _ = runner.run(&a);
        }
    }
    runner.run(&["ip", "netns", "del", ns]).map(|_| ())
}

impl<R: Runner> Drop for Topology<'_, R> {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("p4lb-testbed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records commands instead of running them.
    struct Recorder(std::cell::RefCell<Vec<String>>);

    impl Runner for Recorder {
        fn command(&self, args: &[&str]) -> Command {
            self.0.borrow_mut().push(args.join(" "));
            let mut c = Command::new("true");
            c.stdin(Stdio::null());
            c
        }
    }

    #[test]
    fn bad_names_and_addresses_are_rejected_before_anything_runs() {
        let r = Recorder(Default::default());
        assert!(topology("bad name").build(&r).is_err());
        assert!(r.0.borrow().is_empty());
        let e = topology("ok").node("a", "10.0.0.1").build(&r).unwrap_err();
        assert!(e.to_string().contains("needs a /prefix"), "{e}");
    }

    #[test]
    fn nodes_get_ports_macs_and_addresses_inside_their_namespace() {
        let r = Recorder(Default::default());
        let mut t = topology("t")
            .bridge(true)
            .node("client", "10.77.0.1/24")
            .node("pod", "10.77.0.2/24")
            .build(&r)
            .unwrap();
        let pod = t.node("pod").unwrap().clone();
        assert_eq!(pod.netns, "t-pod");
        assert_eq!(pod.netns_path(), "/run/netns/t-pod");
        assert_eq!(pod.switch_port, "port2");
        assert_eq!(pod.mac, "02:4c:42:00:00:02");
        assert_eq!(pod.ip, "10.77.0.2");
        let cmds = r.0.borrow().clone();
        assert!(cmds.contains(&"ip netns add t-sw".to_string()), "{cmds:?}");
        assert!(cmds.contains(&"ip -n t-pod addr add 10.77.0.2/24 dev eth0".to_string()));
        assert!(cmds.contains(&"ip -n t-sw link set port2 master br0".to_string()));
        // No address is ever put outside the node namespaces.
        assert!(cmds
            .iter()
            .filter(|c| c.contains(" addr add "))
            .all(|c| c.starts_with("ip -n t-client") || c.starts_with("ip -n t-pod")));
        t.teardown().unwrap();
    }
}
