//! Two nodes in one testbed, each with its own `p4lb-agent` and certificate (made with
//! `p4lbctl cert`), the one controller and the one switch. Each node runs Podman or
//! containerd ([`NodeRuntime`]):
//!
//! - Podman: node A is Podman's default storage (the one [`World`] uses), node B a
//!   second storage (`--root`, `--runroot`, `--tmpdir` of its own), both on the one p4lb
//!   netavark network.
//! - containerd (CRI): node A is the testbed's containerd, node B a second containerd
//!   with its own root, state and socket ([`Node::containerd_config`]); both use the p4lb
//!   CNI plugin ([`crate::cri::use_p4lb_cni`]) and pull the test image from the
//!   testbed's local registry (containerd restores only an image it can pull by name).
//!
//! The shortcut: the nodes share the testbed's kernel, so both nodes' pods sit on ports
//! of the one switch and the address allocation (Podman's `/run/containers/networks`,
//! host-local's `/var/lib/cni/pods`) is shared; docs/multi-node.md says what real nodes
//! need instead. The agents listen on the testbed's loopback, each known by its
//! certificate's name. [`Nodes::start_routed`] takes the shortcut away for the network:
//! each node is then a host of its own (network namespace, management link, uplink on a
//! switch port) with its pods routed behind it.

use std::time::Instant;

use p4lb_testbed::images;

use p4lb_api::api;
use serde::Deserialize;

use p4lb_testbed::wait;

use crate::cri::{self, Cri};
use crate::error::{Error, Result};
use crate::scenario::{bin, inside, World, SOCKET};

/// The nodes' names, agent addresses, Podman global options and containerd sockets.
pub const NODES: [Node; 2] = [
    Node {
        name: "node-a",
        port: 7441,
        podman_args: "",
        cri_socket: p4lb_testbed::containerd::SOCKET,
    },
    Node {
        name: "node-b",
        port: 7442,
        podman_args: "--root /var/lib/containers/node-b --runroot /run/containers/node-b \
                      --tmpdir /run/libpod-node-b",
        cri_socket: "/run/containerd-node-b/containerd.sock",
    },
];

/// The runtime the simulated nodes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeRuntime {
    Podman,
    /// containerd over CRI; the pods' image as the local registry serves it.
    Cri,
}

/// Where the CA and the certificates are inside the testbed.
pub const PKI: &str = "/etc/p4lb/pki";
/// The controller's API over TCP (mutual TLS), where the agents register their nodes.
pub const CONTROLLER_TCP: &str = "127.0.0.1:50061";
/// The controller's side of the management network of routed nodes
/// ([`Nodes::start_routed`]): a bridge with this address (/24).
pub const MGMT_GATEWAY: &str = "10.250.0.1";
const MGMT_BRIDGE: &str = "p4lbmgmt";
/// The routing table of a routed node's pods (default route: the uplink).
const POD_TABLE: u32 = 100;
/// Where a background `p4lbctl migrate` keeps its script, output and exit code.
const BG: &str = "/tmp/migrate-bg";

/// One simulated node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node {
    pub name: &'static str,
    pub port: u16,
    /// Podman's global options for this node's storage.
    pub podman_args: &'static str,
    /// This node's containerd socket (inside the testbed).
    pub cri_socket: &'static str,
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

    /// Whether this node's containerd is the testbed's own (node A).
    fn default_containerd(&self) -> bool {
        self.cri_socket == p4lb_testbed::containerd::SOCKET
    }

    /// This node's containerd configuration file: the testbed's for node A; for the
    /// others a copy with its own root (under /var/lib/containerd, which the testbed
    /// keeps on the host's disk: overlayfs snapshots need that), state and address.
    pub fn containerd_config(&self) -> String {
        if self.default_containerd() {
            "/etc/containerd/config.toml".into()
        } else {
            format!("/etc/containerd/{}.toml", self.name)
        }
    }

    /// The directory of this node's containerd registry hosts (`hosts.toml` per
    /// registry; node B's own copy of the testbed's).
    pub fn registry_hosts(&self) -> String {
        if self.default_containerd() {
            "/etc/containerd/certs.d".into()
        } else {
            format!("/etc/containerd/certs-{}.d", self.name)
        }
    }

    /// The runc this node's containerd runs: the testbed's for node A; for the others a
    /// wrapper (`exec runc "$@"`) that a fault test can replace.
    pub fn runc(&self) -> String {
        if self.default_containerd() {
            "runc".into()
        } else {
            format!("/usr/local/bin/runc-{}", self.name)
        }
    }

    /// This node's containerd log.
    pub fn containerd_log(&self) -> String {
        if self.default_containerd() {
            p4lb_testbed::containerd::LOG.into()
        } else {
            format!("/tmp/containerd-{}.log", self.name)
        }
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
    pub runtime: NodeRuntime,
    /// With [`NodeRuntime::Cri`]: the test image's name in the local registry.
    pub image: String,
    /// Each node's plugins and action script reach the controller through their own
    /// agent's relay ([`Nodes::start_relayed`]) instead of the controller's socket.
    pub relayed: bool,
    /// Each node is a host of its own on the network: its own network namespace with
    /// an uplink on a switch port and its pods routed behind it ([`Nodes::start_routed`]).
    pub routed: bool,
    /// With `routed`: the pods' network, whose traffic the nodes send out of their uplink.
    pub pod_net: &'static str,
}

impl<'w> Nodes<'w> {
    /// Node B's storage with the test image, certificates for both nodes, an admin and
    /// the controller, the controller restarted with its API also on TCP, and both agents
    /// started and registered with it.
    pub fn start(w: &'w World) -> Result<Nodes<'w>> {
        Nodes::start_podman(w, false, None)
    }

    /// [`Nodes::start`] with each node as a node whose controller runs elsewhere: its
    /// agent serves the controller API to the node's plugins on the default socket and
    /// relays their calls over mutual TLS as that node. Each node has a mount namespace
    /// of its own (held by a process of its own, so that it outlives a restarted agent),
    /// where `/run/p4lb` is the node's directory ([`Nodes::relay_dir`]); its agent runs
    /// there, so everything the node's Podman starts (netavark and its p4lb plugin,
    /// conmon, crun, CRIU and p4lb's action script) finds the node's relay at
    /// `/run/p4lb/controller.sock` as on a real node; the pods' netns mounts stay in the
    /// node's namespace (propagation from the host only). Test commands run the node's
    /// Podman there through [`Nodes::podman`].
    pub fn start_relayed(w: &'w World) -> Result<Nodes<'w>> {
        Nodes::start_podman(w, true, None)
    }

    /// [`Nodes::start_relayed`] with each node also in a network namespace of its own,
    /// as a separate host: a management link to the controller's side (a bridge,
    /// [`MGMT_GATEWAY`]/24, the node at [`Nodes::node_ip`]) that carries the API and the
    /// archives, and an uplink (`uplink0`, MAC [`Nodes::uplink_mac`]) whose other end is
    /// a port of the switch ([`Nodes::uplink_port`], in the controller's `[[uplinks]]`).
    /// The node forwards IPv4; its own default route is the management network, and
    /// what its pods (on `pod_net`) send leaves through the uplink, where the switch
    /// answers every ARP request. Pods on a network with `-o routed=true` are routed
    /// behind their node (docs/multi-node.md).
    pub fn start_routed(w: &'w World, pod_net: &'static str) -> Result<Nodes<'w>> {
        Nodes::start_podman(w, true, Some(pod_net))
    }

    fn start_podman(
        w: &'w World,
        relayed: bool,
        routed: Option<&'static str>,
    ) -> Result<Nodes<'w>> {
        let n = Nodes {
            w,
            agent: inside(&bin("p4lb-agent")?)?,
            runtime: NodeRuntime::Podman,
            image: images::TEST_IMAGE.into(),
            relayed: relayed || routed.is_some(),
            routed: routed.is_some(),
            pod_net: routed.unwrap_or_default(),
        };
        let b = NODES[1];
        w.sh(&format!(
            "set -e; mkdir -p /var/lib/containers/node-b; \
             podman save {img} | {b} load >/dev/null",
            img = p4lb_testbed::images::TEST_IMAGE,
            b = b.podman()
        ))?;
        n.prepare_relays()?;
        n.start_agents()?;
        Ok(n)
    }

    /// For relayed nodes: each node's directory for `/run/p4lb` and its Podman wrapper
    /// (`nsenter` into the node's mount namespace).
    fn prepare_relays(&self) -> Result<()> {
        if !self.relayed {
            return Ok(());
        }
        if self.routed {
            self.w.sh(&format!(
                "set -e; ip link add {MGMT_BRIDGE} type bridge; \
                 ip addr add {MGMT_GATEWAY}/24 dev {MGMT_BRIDGE}; ip link set {MGMT_BRIDGE} up"
            ))?;
        }
        for node in NODES {
            // The node's namespaces outlive its agent (a test restarts agents), as a
            // host's do: a process of its own holds them.
            self.w.sh(&format!(
                "set -e; mkdir -p {dir}\n\
                 setsid unshare -m {net} --propagation slave sh -c \
                 'mount --bind {dir} /run/p4lb && exec sleep infinity' \
                 </dev/null >/dev/null 2>&1 & echo $! > {holder}\n\
                 for i in $(seq 100); do \
                 {enter} mountpoint -q /run/p4lb 2>/dev/null && break; sleep 0.05; done\n\
                 {enter} mountpoint -q /run/p4lb\n\
                 cat > {wrapper} <<'EOF'\n#!/bin/sh\n\
                 exec {enter} {podman} \"$@\"\nEOF\n\
                 chmod 0755 {wrapper}",
                dir = Nodes::relay_dir(node),
                net = if self.routed { "-n" } else { "" },
                holder = Nodes::holder_pid_file(node),
                wrapper = Nodes::podman_wrapper(node),
                enter = self.enter(node),
                podman = node.podman(),
            ))?;
            if self.routed {
                self.wire_host(node)?;
            }
        }
        Ok(())
    }

    /// A routed node's links: the management veth into the bridge, the uplink veth
    /// whose other end the switch takes as a port, forwarding on. The node's own
    /// default route is the management network; what its pods send (from the pods'
    /// network) leaves through the uplink (a table of its own, after the main table's
    /// more specific routes: the pods of this node), as docs/multi-node.md sets a node
    /// up; strict reverse-path filtering, the strictest a node may have.
    fn wire_host(&self, node: Node) -> Result<()> {
        let i = Nodes::index(node);
        self.w.sh(&format!(
            "set -e; p=$(cat {holder}); \
             ip link add {mg} type veth peer name mgmt0 netns $p; \
             ip link set {mg} master {MGMT_BRIDGE} up; \
             ip link add {up} type veth peer name uplink0 netns $p; ip link set {up} up; \
             nsenter --net=/proc/$p/ns/net sh -ec '\
             ip link set lo up; \
             ip addr add {ip}/24 dev mgmt0; ip link set mgmt0 up; \
             ip link set uplink0 address {mac}; ip link set uplink0 up; \
             ip route add default via {MGMT_GATEWAY} dev mgmt0; \
             ip route add default dev uplink0 table {POD_TABLE}; \
             ip rule add from {pods} lookup main suppress_prefixlength 0 priority 100; \
             ip rule add from {pods} lookup {POD_TABLE} priority 101; \
             echo 1 > /proc/sys/net/ipv4/ip_forward; \
             echo 1 > /proc/sys/net/ipv4/conf/all/rp_filter; \
             echo 1 > /proc/sys/net/ipv4/conf/default/rp_filter'",
            holder = Nodes::holder_pid_file(node),
            mg = format!("p4lbmg{i}"),
            up = Nodes::uplink_interface(node),
            ip = Nodes::node_ip(node),
            mac = Nodes::uplink_mac(node),
            pods = self.pod_net,
        ))?;
        Ok(())
    }

    fn index(node: Node) -> usize {
        NODES.iter().position(|n| n.name == node.name).unwrap_or(0)
    }

    /// A routed node's address on the management network.
    pub fn node_ip(node: Node) -> String {
        format!("10.250.0.{}", 11 + Nodes::index(node))
    }

    /// The MAC of a routed node's uplink.
    pub fn uplink_mac(node: Node) -> String {
        format!("02:00:0a:fa:00:{:02x}", 1 + Nodes::index(node))
    }

    /// The switch port of a routed node's uplink.
    pub fn uplink_port(node: Node) -> u32 {
        300 + Nodes::index(node) as u32
    }

    /// The switch's end of a routed node's uplink (in the controller's namespace).
    pub fn uplink_interface(node: Node) -> String {
        format!("p4lbup{}", Nodes::index(node))
    }

    /// Where `node`'s agent serves: its management address when routed, else loopback.
    pub fn agent_url(&self, node: Node) -> String {
        if self.routed {
            format!("https://{}:{}", Nodes::node_ip(node), node.port)
        } else {
            node.agent_url()
        }
    }

    /// `cmd` (a shell command without single quotes) run in `node`'s namespaces.
    pub fn on_host(&self, node: Node, cmd: &str) -> Result<String> {
        self.w.sh(&format!("{} sh -c '{cmd}'", self.enter(node)))
    }

    fn holder_pid_file(node: Node) -> String {
        format!("/tmp/node-{}-mnt.pid", node.name)
    }

    /// The command prefix that runs a command in a relayed node's mount namespace (and
    /// its network namespace when routed).
    fn enter(&self, node: Node) -> String {
        let holder = format!("/proc/$(cat {})/ns", Nodes::holder_pid_file(node));
        if self.routed {
            format!("nsenter --mount={holder}/mnt --net={holder}/net")
        } else {
            format!("nsenter --mount={holder}/mnt")
        }
    }

    /// The directory that is `/run/p4lb` in a relayed node's mount namespace.
    pub fn relay_dir(node: Node) -> String {
        format!("/run/p4lb-nodes/{}", node.name)
    }

    fn podman_wrapper(node: Node) -> String {
        format!("/usr/local/bin/podman-{}", node.name)
    }

    /// `podman` as `node` runs it: with its global options, and in the node's mount
    /// namespace when the nodes are relayed.
    pub fn podman(&self, node: Node) -> String {
        if self.relayed {
            Nodes::podman_wrapper(node)
        } else {
            node.podman()
        }
    }

    /// [`Nodes::start`] with containerd on both nodes: the p4lb CNI plugin for pods,
    /// the local registry with the test image, node A's and node B's containerd (each
    /// with the pause image and the test image pulled), then certificates, controller
    /// and agents (`runtime = "cri"`).
    pub fn start_cri(w: &'w World) -> Result<Nodes<'w>> {
        Nodes::start_containerd_nodes(w, false, false)
    }

    /// [`Nodes::start_cri`] with relayed nodes ([`Nodes::start_relayed`]): each node's
    /// containerd runs in the node's mount namespace, so the p4lb CNI plugin and the
    /// CRIU action script that containerd and runc start find the node's relay.
    pub fn start_cri_relayed(w: &'w World) -> Result<Nodes<'w>> {
        Nodes::start_containerd_nodes(w, true, false)
    }

    /// [`Nodes::start_cri_relayed`] with each node a host of its own
    /// ([`Nodes::start_routed`]): containerd runs in the node's namespaces, the pods are
    /// routed behind their node (`"routed": true`), and each node has the local
    /// registry in its own namespaces.
    pub fn start_cri_routed(w: &'w World) -> Result<Nodes<'w>> {
        Nodes::start_containerd_nodes(w, true, true)
    }

    fn start_containerd_nodes(w: &'w World, relayed: bool, routed: bool) -> Result<Nodes<'w>> {
        cri::use_p4lb_cni_with(w, routed)?;
        images::start_registry(&w.tb)?;
        let image = images::push_to_registry(&w.tb, images::TEST_IMAGE)?;
        let n = Nodes {
            w,
            agent: inside(&bin("p4lb-agent")?)?,
            runtime: NodeRuntime::Cri,
            image,
            relayed: relayed || routed,
            routed,
            pod_net: cri::POD_SUBNET,
        };
        if n.relayed {
            // The agents first: containerd starts in their namespaces.
            n.prepare_relays()?;
            if routed {
                n.registry_on_each_node()?;
            }
            n.start_agents()?;
            for node in NODES {
                n.start_containerd(node)?;
            }
        } else {
            for node in NODES {
                n.start_containerd(node)?;
            }
            n.start_agents()?;
        }
        Ok(n)
    }

    /// For routed nodes, whose loopback is their own: the local registry served again
    /// inside each node's namespaces (the same storage, the same address 127.0.0.1:5000),
    /// so the image name the pods were created with resolves on every node, also when
    /// containerd pulls a checkpoint's base image at a restore (that pull does not use
    /// the registry hosts configuration).
    fn registry_on_each_node(&self) -> Result<()> {
        for node in NODES {
            let enter = self.enter(node);
            self.w.sh(&format!(
                "setsid {enter} docker-registry serve /etc/docker/registry/config.yml \
                 >/tmp/docker-registry-{name}.log 2>&1 </dev/null &",
                name = node.name
            ))?;
            wait::until(20, "the registry inside a routed node", || {
                self.w
                    .sh(&format!(
                        "{enter} busybox wget -q -O /dev/null http://{}/v2/",
                        images::REGISTRY
                    ))
                    .is_ok()
            })?;
        }
        Ok(())
    }

    /// Starts `node`'s containerd (node B's with a configuration of its own), loads the
    /// pause and test images and pulls the test image from the registry.
    fn start_containerd(&self, node: Node) -> Result<()> {
        let config = node.containerd_config();
        if !node.default_containerd() {
            let dir = node
                .cri_socket
                .rsplit_once('/')
                .map(|(d, _)| d)
                .unwrap_or("/run");
            self.w.sh(&format!(
                "set -e; sed -e \"s|^root = .*|root = '/var/lib/containerd/{n}'|\" \
                 -e \"s|^state = .*|state = '{dir}'|\" \
                 -e \"s|^  address = .*|  address = '{sock}'|\" \
                 -e \"s|config_path = .*|config_path = '{hosts}'|\" \
                 -e \"s|SystemdCgroup = false|SystemdCgroup = false\\n          \
                 BinaryName = '{runc}'|\" \
                 /etc/containerd/config.toml > {config}; grep -q '{sock}' {config}; \
                 grep -q 'BinaryName' {config}; \
                 rm -rf {hosts}; cp -r /etc/containerd/certs.d {hosts}; \
                 printf '#!/bin/sh\\nexec %s \"$@\"\\n' \"$(command -v runc)\" > {runc}; \
                 chmod 755 {runc}",
                n = node.name,
                sock = node.cri_socket,
                hosts = node.registry_hosts(),
                runc = node.runc(),
            ))?;
        }
        let launcher = if self.relayed {
            self.enter(node)
        } else {
            String::new()
        };
        p4lb_testbed::containerd::start_config_via(
            &self.w.tb,
            &launcher,
            &config,
            node.cri_socket,
            &node.containerd_log(),
            cri::ready,
        )?;
        images::load_into_containerd_at(&self.w.tb, node.cri_socket)?;
        self.cri(node)?.pull_image(&self.image)?;
        Ok(())
    }

    /// A CRI client of `node`'s containerd.
    pub fn cri(&self, node: Node) -> Result<Cri> {
        Ok(Cri::connect(&self.w.tb.host_path(node.cri_socket))?)
    }

    /// Certificates for both nodes, an admin and the controller, the controller
    /// restarted with its API also on TCP, both agents started and registered.
    fn start_agents(&self) -> Result<()> {
        let w = self.w;
        w.sh(&format!(
            "set -e; {c} cert ca --out {PKI} --cn p4lb-nodes >/dev/null; \
             for n in node-a node-b admin; do \
             {c} cert issue --ca {PKI} --name $n --out {PKI} >/dev/null; done; \
             {c} cert issue --ca {PKI} --name p4lb-controller --ip 127.0.0.1 {mgmt_ip} \
             --out {PKI} >/dev/null; \
             cat > /etc/p4lb/controller.toml <<'EOF'\n\
             [api]\ntcp = \"{tcp}\"\ntls_cert = \"{PKI}/p4lb-controller.pem\"\n\
             tls_key = \"{PKI}/p4lb-controller-key.pem\"\ntls_client_ca = \"{PKI}/ca.pem\"\n\
             admins = [\"admin\"]\n{uplinks}EOF\n",
            c = w.ctl,
            mgmt_ip = if self.routed {
                format!("--ip {MGMT_GATEWAY}")
            } else {
                String::new()
            },
            tcp = if self.routed {
                "0.0.0.0:50061"
            } else {
                CONTROLLER_TCP
            },
            uplinks = if self.routed {
                self.uplinks()
            } else {
                String::new()
            },
        ))?;
        w.stop_controller()?;
        w.start_controller()?;
        for node in NODES {
            self.start_agent(node, "")?;
        }
        wait::until(20, "both agents to register with the controller", || {
            w.ctl_json::<Vec<api::Node>>("nodes ls")
                .map(|ns| {
                    NODES.iter().all(|n| {
                        ns.iter()
                            .any(|x| x.name == n.name && x.agent_address == self.agent_url(*n))
                    })
                })
                .unwrap_or(false)
        })?;
        Ok(())
    }

    /// The controller's `[[uplinks]]`: each routed node's uplink port, MAC and the
    /// switch's end of it.
    fn uplinks(&self) -> String {
        NODES
            .iter()
            .map(|n| {
                format!(
                    "\n[[uplinks]]\nnode = \"{}\"\nport = {}\nmac = \"{}\"\ninterface = \"{}\"\n",
                    n.name,
                    Nodes::uplink_port(*n),
                    Nodes::uplink_mac(*n),
                    Nodes::uplink_interface(*n)
                )
            })
            .collect()
    }

    /// Writes `node`'s configuration and (re)starts its agent with `extra` arguments.
    pub fn start_agent(&self, node: Node, extra: &str) -> Result<()> {
        if self.relayed {
            return self.start_agent_full(
                node,
                extra,
                &Nodes::podman_wrapper(node),
                node.cri_socket,
            );
        }
        self.start_agent_with(node, extra, "podman")
    }

    /// [`Nodes::start_agent`] with `podman` as the agent's Podman command (a wrapper that
    /// fails some commands, for a fault test).
    pub fn start_agent_with(&self, node: Node, extra: &str, podman: &str) -> Result<()> {
        self.start_agent_full(node, extra, podman, node.cri_socket)
    }

    /// [`Nodes::start_agent`] with `cri_socket` as the agent's containerd socket (one
    /// where no containerd answers, for a fault test).
    pub fn start_agent_on_socket(&self, node: Node, extra: &str, cri_socket: &str) -> Result<()> {
        self.start_agent_full(node, extra, "podman", cri_socket)
    }

    fn start_agent_full(
        &self,
        node: Node,
        extra: &str,
        podman: &str,
        cri_socket: &str,
    ) -> Result<()> {
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
        let runtime = match self.runtime {
            NodeRuntime::Podman => "podman",
            NodeRuntime::Cri => "cri",
        };
        let listen = if self.routed {
            Nodes::node_ip(node)
        } else {
            "127.0.0.1".into()
        };
        let controller = if self.routed {
            format!("{MGMT_GATEWAY}:50061")
        } else {
            CONTROLLER_TCP.into()
        };
        let config = format!(
            "node = \"{name}\"\nlisten = \"{listen}:{port}\"\n\
             work_dir = \"/var/lib/p4lb-agent-{name}\"\nadmins = [\"admin\"]\n\
             peers = [\"{peer}\"]\nruntime = \"{runtime}\"\n\n[tls]\nca = \"{PKI}/ca.pem\"\n\
             cert = \"{PKI}/{name}.pem\"\nkey = \"{PKI}/{name}-key.pem\"\n\n\
             [podman]\ncommand = \"{podman}\"\nglobal_args = [{args}]\n\n\
             [cri]\nsocket = \"{sock}\"\n\n\
             [controller]\naddress = \"https://{controller}\"\nadvertise = \"{url}\"\n{relay}",
            name = node.name,
            port = node.port,
            args = args.join(", "),
            sock = cri_socket,
            url = self.agent_url(node),
            relay = if self.relayed { "\n[relay]\n" } else { "" },
        );
        // A relayed node's agent runs in the node's mount namespace, where /run/p4lb is
        // the node's directory.
        let launch = format!("{} --config {} {extra}", self.agent, node.config_path());
        let launch = if self.relayed {
            // nsenter execs the agent: the pid file still names the agent.
            format!("{} {launch}", self.enter(node))
        } else {
            launch
        };
        self.stop_agent(node)?;
        self.w.sh(&format!(
            "cat > {path} <<'EOF'\n{config}EOF\n\
             setsid {launch} </dev/null >>{log} 2>&1 & echo $! > {pid}; \
             for i in $(seq 100); do grep -q 'p4lb-agent serving' {log} && exit 0; \
             kill -0 $(cat {pid}) 2>/dev/null || break; sleep 0.1; done; \
             echo agent {name} did not start; cat {log}; exit 1",
            path = node.config_path(),
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
        self.migrate_command_as(container, to, &format!("{PKI}/admin"))
    }

    /// [`Nodes::migrate_command`] with the identity `{who}.pem` / `{who}-key.pem`.
    pub fn migrate_command_as(&self, container: &str, to: Node, who: &str) -> String {
        format!(
            "{c} --socket {SOCKET} --json migrate {container} --to {t} --ca {PKI}/ca.pem \
             --cert {who}.pem --key {who}-key.pem",
            c = self.w.ctl,
            t = to.name,
        )
    }

    /// `p4lbctl` over the controller's TCP API (mutual TLS) with the identity
    /// `{who}.pem` / `{who}-key.pem`, running `args`.
    pub fn ctl_tcp_as(&self, who: &str, args: &str) -> String {
        format!(
            "{c} --controller https://{CONTROLLER_TCP} --tls-ca {PKI}/ca.pem \
             --tls-cert {who}.pem --tls-key {who}-key.pem {args}",
            c = self.w.ctl,
        )
    }

    /// The pid of `node`'s agent.
    fn agent_pid(&self, node: Node) -> Result<u32> {
        let p = self.w.sh(&format!("cat {}", node.pid_file()))?;
        p.trim()
            .parse()
            .map_err(|e| Error::Scenario(format!("{}: pid {p:?}: {e}", node.pid_file())))
    }

    /// Waits until `node`'s agent is stopped (state `T`): with `--inject-fault
    /// pause-receive` it stops itself when an archive's header arrives, so the source
    /// has checkpointed and is streaming the rest.
    pub fn wait_agent_stopped(&self, node: Node) -> Result<()> {
        let pid = self.agent_pid(node)?;
        wait::until(120, &format!("{}'s agent to stop", node.name), || {
            self.w
                .sh(&format!("cut -d' ' -f3 /proc/{pid}/stat"))
                .is_ok_and(|s| s.trim() == "T")
        })?;
        Ok(())
    }

    /// Sends `node`'s agent signal `sig` (`KILL`, `CONT`); after `KILL`, waits until it
    /// is gone.
    pub fn signal_agent(&self, node: Node, sig: &str) -> Result<()> {
        let pid = self.agent_pid(node)?;
        self.w.sh(&format!("kill -{sig} {pid}"))?;
        if sig == "KILL" {
            wait::until(10, &format!("{}'s agent to die", node.name), || {
                self.w
                    .try_sh(&format!("test -d /proc/{pid}"))
                    .is_ok_and(|(ok, _, _)| !ok)
            })?;
        }
        Ok(())
    }

    /// Starts [`Nodes::migrate_command`] in the background; [`Nodes::migrate_finished`]
    /// waits for it.
    pub fn migrate_in_background(&self, container: &str, to: Node) -> Result<()> {
        self.w.sh(&format!(
            "rm -f {BG}.out {BG}.err {BG}.rc; cat > {BG}.sh <<'EOF'\n\
             {cmd} >{BG}.out 2>{BG}.err; echo $? > {BG}.rc.tmp; mv {BG}.rc.tmp {BG}.rc\nEOF\n\
             setsid sh {BG}.sh </dev/null >/dev/null 2>&1 &",
            cmd = self.migrate_command(container, to)
        ))?;
        Ok(())
    }

    /// The background `p4lbctl migrate`'s (success, stdout, stderr) once it exits.
    pub fn migrate_finished(&self) -> Result<(bool, String, String)> {
        wait::until(300, "the background p4lbctl migrate to exit", || {
            self.w
                .try_sh(&format!("test -f {BG}.rc"))
                .is_ok_and(|(ok, _, _)| ok)
        })?;
        let rc = self.w.sh(&format!("cat {BG}.rc"))?;
        let out = self.w.sh(&format!("cat {BG}.out"))?;
        let err = self.w.sh(&format!("cat {BG}.err"))?;
        Ok((rc.trim() == "0", out, err))
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
        if self.runtime == NodeRuntime::Podman {
            if let Ok(id) = self.w.sh(&format!(
                "{} inspect -f '{{{{.Id}}}}' {container}",
                self.podman(to)
            )) {
                p4lb_testbed::cgroups::prune_restore_copies(id.trim());
            }
        }
        Ok(m)
    }

    /// The state of `container` on `node` ("running", "exited", …), or None. Under
    /// CRI `container` names a pod: the state of its one container, None without a
    /// pod of that name (in any state).
    pub fn state_on(&self, container: &str, node: Node) -> Result<Option<String>> {
        if self.runtime == NodeRuntime::Cri {
            let mut c = self.cri(node)?;
            let pods: Vec<_> = c
                .list_pod_sandboxes()?
                .into_iter()
                .filter(|p| p.metadata.as_ref().is_some_and(|m| m.name == container))
                .collect();
            let Some(pod) = pods.first() else {
                return Ok(None);
            };
            if pods.len() > 1 {
                return Ok(Some(format!("{} pods named {container}", pods.len())));
            }
            let cs = c.list_containers(&pod.id)?;
            return Ok(Some(match cs.as_slice() {
                [one] => match cri::pb::ContainerState::try_from(one.state) {
                    Ok(cri::pb::ContainerState::ContainerRunning) => "running".into(),
                    Ok(s) => format!("{s:?}"),
                    Err(_) => "unknown".into(),
                },
                many => format!("{} containers", many.len()),
            }));
        }
        let (ok, out, _) = self.w.try_sh(&format!(
            "{} inspect -f '{{{{.State.Status}}}}' {container}",
            self.podman(node)
        ))?;
        Ok(ok.then(|| out.trim().to_string()))
    }

    /// The agents' log tails and the controller's diagnostics.
    pub fn diag(&self) -> String {
        let script: String = NODES
            .iter()
            .map(|n| {
                let containerd = if self.runtime == NodeRuntime::Cri {
                    format!(
                        "echo '== containerd of {}'; tail -n 20 {}; ",
                        n.name,
                        n.containerd_log()
                    )
                } else {
                    String::new()
                };
                format!("echo '== {}'; tail -n 20 {}; {containerd}", n.name, n.log())
            })
            .collect();
        let agents = self
            .w
            .try_sh(&script)
            .map(|(_, o, _)| o)
            .unwrap_or_else(|e| format!("(no agent logs: {e})"));
        format!("{agents}\n{}", self.w.diag())
    }
}
