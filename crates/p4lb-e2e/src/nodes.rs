//! Two nodes in one testbed: node A is Podman's default storage (the one
//! [`World`] uses), node B a second storage (`--root`, `--runroot`, `--tmpdir` of its
//! own), each with its own `p4lb-agent` and certificate (made with `p4lbctl cert`),
//! both on the one p4lb netavark network, the one controller and the one switch.
//!
//! The shortcut: the nodes share the testbed's kernel, so both nodes' pods sit on ports
//! of the one switch and Podman's address allocation (`/run/containers/networks`) is
//! shared; docs/multi-node.md says what real nodes need instead. The agents listen on
//! the testbed's loopback, each known by its certificate's name.

use std::time::Instant;

use p4lb_api::api;
use serde::Deserialize;

use p4lb_testbed::wait;

use crate::error::{Error, Result};
use crate::scenario::{bin, inside, World, SOCKET};

/// The nodes' names, agent addresses and Podman global options.
pub const NODES: [Node; 2] = [
    Node {
        name: "node-a",
        port: 7441,
        podman_args: "",
    },
    Node {
        name: "node-b",
        port: 7442,
        podman_args: "--root /var/lib/containers/node-b --runroot /run/containers/node-b \
                      --tmpdir /run/libpod-node-b",
    },
];

/// Where the CA and the certificates are inside the testbed.
pub const PKI: &str = "/etc/p4lb/pki";
/// The controller's API over TCP (mutual TLS), where the agents register their nodes.
pub const CONTROLLER_TCP: &str = "127.0.0.1:50061";

/// One simulated node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node {
    pub name: &'static str,
    pub port: u16,
    /// Podman's global options for this node's storage.
    pub podman_args: &'static str,
}

impl Node {
    pub fn agent_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// `podman` with this node's global options.
    pub fn podman(&self) -> String {
        format!("podman {}", self.podman_args)
            .trim_end()
            .to_string()
    }

    fn config_path(&self) -> String {
        format!("/etc/p4lb/agent-{}.toml", self.name)
    }

    fn log(&self) -> String {
        format!("/tmp/agent-{}.log", self.name)
    }

    fn pid_file(&self) -> String {
        format!("/tmp/agent-{}.pid", self.name)
    }
}

/// What `p4lbctl --json migrate` prints.
#[derive(Debug, Clone, Deserialize)]
pub struct Migrated {
    pub migration: api::MigrateResponse,
    pub controller: Option<api::Migration>,
    /// The whole command, as the test saw it.
    #[serde(skip)]
    pub command_ms: u128,
}

/// The two nodes of a [`World`].
pub struct Nodes<'w> {
    pub w: &'w World,
    pub agent: String,
}

impl<'w> Nodes<'w> {
    /// Node B's storage with the test image, certificates for both nodes, an admin and
    /// the controller, the controller restarted with its API also on TCP, and both agents
    /// started and registered with it.
    pub fn start(w: &'w World) -> Result<Nodes<'w>> {
        let n = Nodes {
            w,
            agent: inside(&bin("p4lb-agent")?)?,
        };
        let b = NODES[1];
        w.sh(&format!(
            "set -e; mkdir -p /var/lib/containers/node-b; \
             podman save {img} | {b} load >/dev/null",
            img = p4lb_testbed::images::TEST_IMAGE,
            b = b.podman()
        ))?;
        w.sh(&format!(
            "set -e; {c} cert ca --out {PKI} --cn p4lb-nodes >/dev/null; \
             for n in node-a node-b admin; do \
             {c} cert issue --ca {PKI} --name $n --out {PKI} >/dev/null; done; \
             {c} cert issue --ca {PKI} --name p4lb-controller --ip 127.0.0.1 --out {PKI} \
             >/dev/null; \
             cat > /etc/p4lb/controller.toml <<'EOF'\n\
             [api]\ntcp = \"{CONTROLLER_TCP}\"\ntls_cert = \"{PKI}/p4lb-controller.pem\"\n\
             tls_key = \"{PKI}/p4lb-controller-key.pem\"\ntls_client_ca = \"{PKI}/ca.pem\"\n\
             admins = [\"admin\"]\nEOF\n",
            c = w.ctl
        ))?;
        w.stop_controller()?;
        w.start_controller()?;
        for node in NODES {
            n.start_agent(node, "")?;
        }
        wait::until(20, "both agents to register with the controller", || {
            w.ctl_json::<Vec<api::Node>>("nodes ls")
                .map(|ns| {
                    NODES.iter().all(|n| {
                        ns.iter()
                            .any(|x| x.name == n.name && x.agent_address == n.agent_url())
                    })
                })
                .unwrap_or(false)
        })?;
        Ok(n)
    }

    /// Writes `node`'s configuration and (re)starts its agent with `extra` arguments.
    pub fn start_agent(&self, node: Node, extra: &str) -> Result<()> {
        self.start_agent_with(node, extra, "podman")
    }

    /// [`Nodes::start_agent`] with `podman` as the agent's Podman command (a wrapper that
    /// fails some commands, for a fault test).
    pub fn start_agent_with(&self, node: Node, extra: &str, podman: &str) -> Result<()> {
        let peer = NODES
            .iter()
            .find(|p| p.name != node.name)
            .map(|p| p.name)
            .unwrap_or_default();
        let args: Vec<String> = node
            .podman_args
            .split_whitespace()
            .map(|a| format!("{a:?}"))
            .collect();
        let config = format!(
            "node = \"{name}\"\nlisten = \"127.0.0.1:{port}\"\n\
             work_dir = \"/var/lib/p4lb-agent-{name}\"\nadmins = [\"admin\"]\n\
             peers = [\"{peer}\"]\n\n[tls]\nca = \"{PKI}/ca.pem\"\n\
             cert = \"{PKI}/{name}.pem\"\nkey = \"{PKI}/{name}-key.pem\"\n\n\
             [podman]\ncommand = \"{podman}\"\nglobal_args = [{args}]\n\n\
             [controller]\naddress = \"https://{CONTROLLER_TCP}\"\nadvertise = \"{url}\"\n",
            name = node.name,
            port = node.port,
            args = args.join(", "),
            url = node.agent_url()
        );
        self.stop_agent(node)?;
        self.w.sh(&format!(
            "cat > {path} <<'EOF'\n{config}EOF\n\
             setsid {agent} --config {path} {extra} </dev/null >>{log} 2>&1 & echo $! > {pid}; \
             for i in $(seq 100); do grep -q 'p4lb-agent serving' {log} && exit 0; \
             kill -0 $(cat {pid}) 2>/dev/null || break; sleep 0.1; done; \
             echo agent {name} did not start; cat {log}; exit 1",
            path = node.config_path(),
            agent = self.agent,
            log = node.log(),
            pid = node.pid_file(),
            name = node.name,
        ))?;
        Ok(())
    }

    /// Stops `node`'s agent if it runs.
    pub fn stop_agent(&self, node: Node) -> Result<()> {
        self.w.sh(&format!(
            "p=$(cat {pid} 2>/dev/null) || exit 0; kill -TERM $p 2>/dev/null || exit 0; \
             for i in $(seq 50); do kill -0 $p 2>/dev/null || exit 0; sleep 0.1; done; \
             kill -KILL $p; : > {log}",
            pid = node.pid_file(),
            log = node.log()
        ))?;
        self.w.sh(&format!(": > {}", node.log()))?;
        Ok(())
    }

    /// The command line of `p4lbctl migrate` of `container` to `to`, as an admin types
    /// it: the source node and both agents come from the controller's node registry.
    pub fn migrate_command(&self, container: &str, to: Node) -> String {
        format!(
            "{c} --socket {SOCKET} --json migrate {container} --to {t} --ca {PKI}/ca.pem \
             --cert {PKI}/admin.pem --key {PKI}/admin-key.pem",
            c = self.w.ctl,
            t = to.name,
        )
    }

    /// `p4lbctl migrate`; an error carries its output and the agents' logs.
    pub fn migrate(&self, container: &str, from: Node, to: Node) -> Result<Migrated> {
        let t = Instant::now();
        let (ok, out, err) = self.w.try_sh(&self.migrate_command(container, to))?;
        let command_ms = t.elapsed().as_millis();
        if !ok {
            return Err(Error::Scenario(format!(
                "p4lbctl migrate {container} {} -> {} failed: {out}{err}\n{}",
                from.name,
                to.name,
                self.diag()
            )));
        }
        let mut m: Migrated = serde_json::from_str(&out)
            .map_err(|e| Error::Scenario(format!("p4lbctl migrate printed {out:?}: {e}")))?;
        m.command_ms = command_ms;
        if let Ok(id) = self.w.sh(&format!(
            "{} inspect -f '{{{{.Id}}}}' {container}",
            to.podman()
        )) {
            p4lb_testbed::cgroups::prune_restore_copies(id.trim());
        }
        Ok(m)
    }

    /// The state of `container` on `node` ("running", "exited", …), or None.
    pub fn state_on(&self, container: &str, node: Node) -> Result<Option<String>> {
        let (ok, out, _) = self.w.try_sh(&format!(
            "{} inspect -f '{{{{.State.Status}}}}' {container}",
            node.podman()
        ))?;
        Ok(ok.then(|| out.trim().to_string()))
    }

    /// The agents' log tails and the controller's diagnostics.
    pub fn diag(&self) -> String {
        let script: String = NODES
            .iter()
            .map(|n| format!("echo '== {}'; tail -n 20 {}; ", n.name, n.log()))
            .collect();
        let agents = self
            .w
            .try_sh(&script)
            .map(|(_, o, _)| o)
            .unwrap_or_else(|e| format!("(no agent logs: {e})"));
        format!("{agents}\n{}", self.w.diag())
    }
}
