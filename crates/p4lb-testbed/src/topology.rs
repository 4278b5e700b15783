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
//!
//! The namespace work goes through the [`Runner`]: on the host ([`Host`]) it is
//! done by `p4lb-testutil` over rtnetlink; inside a [`Testbed`] it stays `ip`
//! commands run there, because the testbed's namespaces and their `/run/netns`
//! bind mounts live in the testbed's own mount and network namespaces, which
//! this (multi-threaded) process cannot join but a command started by
//! `nsenter` can.

use std::process::{Command, Output, Stdio};

use crate::error::{Context, Error, Result};
use crate::session::{check, show, Testbed};

/// Where topology commands run: on the host or inside a [`Testbed`].
///
/// The namespace operations default to `ip` commands through [`Runner::run`];
/// [`Host`] does them itself over rtnetlink.
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

    /// Creates the named network namespace `ns` with `lo` up.
    fn add_netns(&self, ns: &str) -> Result<()> {
        self.run(&["ip", "netns", "add", ns])?;
        self.run(&["ip", "-n", ns, "link", "set", "lo", "up"])
            .map(|_| ())
    }

    /// Kills the processes in `ns` and deletes it; a namespace that does not
    /// exist is not an error.
    fn delete_netns(&self, ns: &str) -> Result<()> {
        let list = self.run(&["ip", "netns", "list"])?;
        if !list
            .lines()
            .any(|l| l.split_whitespace().next() == Some(ns))
        {
            return Ok(());
        }
        if let Ok(pids) = self.run(&["ip", "netns", "pids", ns]) {
            let pids: Vec<&str> = pids.split_whitespace().collect();
            if !pids.is_empty() {
                let mut a = vec!["kill", "-9"];
                a.extend(pids);
                let _ = self.run(&a);
            }
        }
        self.run(&["ip", "netns", "del", ns]).map(|_| ())
    }

    /// Deletes link `ifname` in `ns` (a veth takes its peer with it); a link
    /// that does not exist is not an error.
    fn delete_link(&self, ns: &str, ifname: &str) -> Result<()> {
        let present = || -> Result<bool> {
            let links = self.run(&["ip", "-n", ns, "-o", "link", "show"])?;
            Ok(links.lines().any(|l| {
                l.split(": ")
                    .nth(1)
                    .and_then(|n| n.split('@').next())
                    .is_some_and(|n| n == ifname)
            }))
        };
        if !present()? {
            return Ok(());
        }
        match self.run(&["ip", "-n", ns, "link", "del", ifname]) {
            // The kernel may have removed it in between.
            Err(_) if !present()? => Ok(()),
            r => r.map(|_| ()),
        }
    }

    /// Creates bridge `br` in `ns` and sets it up.
    fn add_bridge(&self, ns: &str, br: &str) -> Result<()> {
        self.run(&["ip", "-n", ns, "link", "add", br, "type", "bridge"])?;
        self.run(&["ip", "-n", ns, "link", "set", br, "up"])
            .map(|_| ())
    }

    /// Creates veth `name` in `ns` with its peer `peer` in `peer_ns`.
    fn add_veth(&self, ns: &str, name: &str, peer: &str, peer_ns: &str) -> Result<()> {
        self.run(&[
            "ip", "-n", ns, "link", "add", name, "type", "veth", "peer", "name", peer, "netns",
            peer_ns,
        ])
        .map(|_| ())
    }

    /// Sets the MAC (`02:..`) of `ifname` in `ns`.
    fn set_mac(&self, ns: &str, ifname: &str, mac: &str) -> Result<()> {
        self.run(&["ip", "-n", ns, "link", "set", ifname, "address", mac])
            .map(|_| ())
    }

    /// Sets `ifname` in `ns` up.
    fn link_up(&self, ns: &str, ifname: &str) -> Result<()> {
        self.run(&["ip", "-n", ns, "link", "set", ifname, "up"])
            .map(|_| ())
    }

    /// Makes `ifname` in `ns` a port of bridge `master`.
    fn set_master(&self, ns: &str, ifname: &str, master: &str) -> Result<()> {
        self.run(&["ip", "-n", ns, "link", "set", ifname, "master", master])
            .map(|_| ())
    }

    /// Adds `cidr` to `ifname` in `ns`.
    fn add_address(&self, ns: &str, ifname: &str, cidr: &str) -> Result<()> {
        self.run(&["ip", "-n", ns, "addr", "add", cidr, "dev", ifname])
            .map(|_| ())
    }

    /// A command running `args` inside the named namespace `ns`.
    fn netns_command(&self, ns: &str, args: &[&str]) -> Command {
        let mut a = vec!["ip", "netns", "exec", ns];
        a.extend_from_slice(args);
        self.command(&a)
    }
}

/// Runs commands on the host; namespaces and links are made over rtnetlink.
#[derive(Debug, Clone, Copy, Default)]
pub struct Host;

fn wiring<T>(what: impl FnOnce() -> String, r: p4lb_testutil::Result<T>) -> Result<T> {
    r.map_err(|e| Error::Testbed(format!("{}: {e}", what())))
}

fn net(ns: &str) -> Result<p4lb_testutil::Net> {
    wiring(
        || format!("opening network namespace {ns}"),
        p4lb_testutil::Net::named(ns),
    )
}

impl Runner for Host {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(args.first().copied().unwrap_or("true"));
        c.args(args.iter().skip(1)).stdin(Stdio::null());
        c
    }

    fn add_netns(&self, ns: &str) -> Result<()> {
        let made = wiring(
            || format!("creating network namespace {ns}"),
            p4lb_testutil::NamedNetns::create(ns),
        )?;
        wiring(|| format!("setting lo up in {ns}"), made.link_up("lo"))?;
        made.keep();
        Ok(())
    }

    fn delete_netns(&self, ns: &str) -> Result<()> {
        if !p4lb_testutil::named_exists(ns) {
            return Ok(());
        }
        if let Ok(n) = p4lb_testutil::NetNs::open(p4lb_testutil::named_path(ns)) {
            p4lb_testutil::kill_all_in(&n);
        }
        wiring(
            || format!("deleting network namespace {ns}"),
            p4lb_testutil::remove_named(ns),
        )
    }

    fn delete_link(&self, ns: &str, ifname: &str) -> Result<()> {
        wiring(
            || format!("deleting {ifname} in {ns}"),
            net(ns)?.delete_link(ifname),
        )
        .map(|_| ())
    }

    fn add_bridge(&self, ns: &str, br: &str) -> Result<()> {
        let n = net(ns)?;
        wiring(|| format!("creating bridge {br} in {ns}"), n.add_bridge(br))?;
        wiring(|| format!("setting {br} up in {ns}"), n.link_up(br))
    }

    fn add_veth(&self, ns: &str, name: &str, peer: &str, peer_ns: &str) -> Result<()> {
        let there = net(peer_ns)?;
        wiring(
            || format!("creating veth {name} in {ns} / {peer} in {peer_ns}"),
            net(ns)?.add_veth(name, peer, Some(there.netns())),
        )
    }

    fn set_mac(&self, ns: &str, ifname: &str, mac: &str) -> Result<()> {
        let bytes = parse_mac(mac)?;
        wiring(
            || format!("setting the MAC of {ifname} in {ns}"),
            net(ns)?.set_mac(ifname, bytes),
        )
    }

    fn link_up(&self, ns: &str, ifname: &str) -> Result<()> {
        wiring(
            || format!("setting {ifname} up in {ns}"),
            net(ns)?.link_up(ifname),
        )
    }

    fn set_master(&self, ns: &str, ifname: &str, master: &str) -> Result<()> {
        wiring(
            || format!("adding {ifname} to {master} in {ns}"),
            net(ns)?.set_master(ifname, master),
        )
    }

    fn add_address(&self, ns: &str, ifname: &str, cidr: &str) -> Result<()> {
        wiring(
            || format!("adding {cidr} to {ifname} in {ns}"),
            net(ns)?.add_addr(ifname, cidr),
        )
    }

    fn netns_command(&self, ns: &str, args: &[&str]) -> Command {
        let mut c = p4lb_testutil::command_in(
            &p4lb_testutil::named_path(ns),
            args.first().copied().unwrap_or("true"),
        );
        c.args(args.iter().skip(1)).stdin(Stdio::null());
        c
    }
}

/// `02:4c:42:00:00:01` → bytes.
fn parse_mac(mac: &str) -> Result<[u8; 6]> {
    let bad = || Error::Testbed(format!("bad MAC `{mac}`"));
    let mut out = [0u8; 6];
    let mut parts = mac.split(':');
    for b in out.iter_mut() {
        *b = u8::from_str_radix(parts.next().ok_or_else(bad)?, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(out)
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
        runner.add_netns(&topo.switch_ns)?;
        if topo.bridge {
            runner.add_bridge(&topo.switch_ns, "br0")?;
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

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Result<&Node> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| Error::Testbed(format!("no node `{name}` in topology {}", self.prefix)))
    }

    fn wire(&self, n: &Node, with_address: bool) -> Result<()> {
        let r = self.runner;
        r.add_netns(&n.netns)?;
        r.add_veth(&self.switch_ns, &n.switch_port, &n.ifname, &n.netns)?;
        r.set_mac(&n.netns, &n.ifname, &n.mac)?;
        r.link_up(&n.netns, &n.ifname)?;
        if self.bridge {
            r.set_master(&self.switch_ns, &n.switch_port, "br0")?;
        }
        r.link_up(&self.switch_ns, &n.switch_port)?;
        if with_address {
            self.add_address(&n.name)?;
        }
        Ok(())
    }

    /// Puts the node's address on its interface.
    pub fn add_address(&self, name: &str) -> Result<()> {
        let n = self.node(name)?;
        self.runner.add_address(&n.netns, &n.ifname, &n.cidr)
    }

    /// Runs `args` inside node `name`'s network namespace.
    pub fn exec(&self, name: &str, args: &[&str]) -> Result<String> {
        let n = self.node(name)?;
        let out = self
            .runner
            .netns_command(&n.netns, args)
            .output()
            .ctx(|| format!("running {} in {}", show(args), n.netns))?;
        check(format!("{} (in {})", show(args), n.netns), out)
    }

    /// Starts `args` in node `name`'s namespace in the background (stdout and
    /// stderr piped). Only the tests below need it.
    #[cfg(test)]
    pub fn spawn(&self, name: &str, args: &[&str]) -> Result<std::process::Child> {
        let n = self.node(name)?;
        self.runner
            .netns_command(&n.netns, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .ctx(|| format!("starting {} in {}", show(args), n.netns))
    }

    /// Kills the processes in node `name`'s namespace and deletes it (its veth
    /// pair goes with it). Only the tests below need it.
    #[cfg(test)]
    pub fn remove_node_netns(&self, name: &str) -> Result<()> {
        let n = self.node(name)?;
        self.runner.delete_netns(&n.netns)
    }

    /// Deletes and recreates node `name`'s namespace at the same path, with
    /// the same interface, MAC and switch port; the address only when
    /// `with_address` (else call [`Topology::add_address`] later).
    pub fn recreate_node(&self, name: &str, with_address: bool) -> Result<()> {
        let n = self.node(name)?.clone();
        let _ = self.runner.delete_netns(&n.netns);
        // The kernel dismantles a deleted namespace (and the veth inside it)
        // asynchronously, so the switch-side end can outlive it for a while and
        // the new pair would collide with it: delete that end now.
        self.runner.delete_link(&self.switch_ns, &n.switch_port)?;
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
            if let Err(e) = self.runner.delete_netns(&n.netns) {
                errors.push(e.to_string());
            }
        }
        if let Err(e) = self.runner.delete_netns(&self.switch_ns) {
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
    fn macs_parse_or_fail() {
        assert_eq!(
            parse_mac("02:4c:42:00:01:ff").unwrap(),
            [2, 0x4c, 0x42, 0, 1, 0xff]
        );
        for bad in [
            "02:4c:42:00:01",
            "02:4c:42:00:01:ff:00",
            "zz:4c:42:00:01:ff",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
    }

    /// The host path end to end: namespaces, veths, bridge, MACs, addresses over
    /// rtnetlink; commands inside; recreate; nothing left after teardown.
    #[test]
    fn host_topology_wires_nodes_over_rtnetlink_and_tears_down() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test creates network namespaces: run it as root"
        );
        let prefix = format!("p4tt{}", std::process::id() % 100_000);
        let names: Vec<String> = ["sw", "a", "b"]
            .iter()
            .map(|n| format!("{prefix}-{n}"))
            .collect();
        {
            let topo = topology(&prefix)
                .bridge(true)
                .node("a", "10.67.0.1/24")
                .node("b", "10.67.0.2/24")
                .build(&Host)
                .unwrap();
            for n in &names {
                assert!(p4lb_testutil::named_exists(n), "{n}");
            }
            let b = topo.node("b").unwrap().clone();
            let mac = topo
                .exec("b", &["cat", "/sys/class/net/eth0/address"])
                .unwrap();
            assert_eq!(mac.trim(), b.mac);
            let sw = p4lb_testutil::Net::named(topo.switch_netns()).unwrap();
            assert_eq!(sw.links().unwrap(), vec!["lo", "br0", "port1", "port2"]);
            // (An open handle keeps a namespace alive: drop it before recreating.)
            let pod = p4lb_testutil::Net::named(&b.netns).unwrap();
            assert_eq!(pod.ipv4_addrs("eth0").unwrap(), vec!["10.67.0.2/24"]);
            drop(pod);
            topo.exec("a", &["ping", "-c", "1", "-W", "5", &b.ip])
                .unwrap();

            topo.recreate_node("b", false).unwrap();
            let pod = p4lb_testutil::Net::named(&b.netns).unwrap();
            assert!(pod.ipv4_addrs("eth0").unwrap().is_empty());
            drop(pod);
            topo.add_address("b").unwrap();
            topo.exec("a", &["ping", "-c", "1", "-W", "5", &b.ip])
                .unwrap();
            let mut sleeper = topo.spawn("b", &["sleep", "30"]).unwrap();
            topo.remove_node_netns("b").unwrap();
            assert!(
                !sleeper.wait().unwrap().success(),
                "killed with its namespace"
            );
            assert!(!p4lb_testutil::named_exists(&b.netns));
        }
        for n in &names {
            assert!(!p4lb_testutil::named_exists(n), "{n} left behind");
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
