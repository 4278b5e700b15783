//! The functions p4lb's fuzz targets run, one per target. `fuzz_targets/<name>.rs`
//! hands libFuzzer's input to the function of the same name; `tests/corpus.rs` runs
//! every file of `corpus/<name>/` through it on stable Rust, so the corpus and every
//! input that once crashed stay a regression test without nightly. See README.md.
//!
//! A target must never panic, whatever its input: errors are the expected outcome
//! of most inputs; a panic, an overflow (debug assertions are on), a hang or
//! unbounded memory is a bug.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use futures::StreamExt;
use prost::Message;
use tonic::Request;

use p4lb_p4::entries::{self as p, FiveTuple};
use p4lb_proto::p4runtime::{self as p4, p4_runtime_server::P4Runtime};
use p4lb_switch::runtime::{DataplaneSlot, Device, P4RuntimeService};
use p4lb_switch::state::Dataplane;

/// A target function: runs one input.
pub type Target = fn(&[u8]);

/// Every target, by name (the names of `fuzz_targets/*.rs` and `corpus/*/`).
pub const TARGETS: &[(&str, Target)] = &[
    ("cni_input", cni_input),
    ("api_messages", api_messages),
    ("p4rt_write", p4rt_write),
    ("packet_pipeline", packet_pipeline),
    ("checkpoint_record", checkpoint_record),
    ("netavark_input", netavark_input),
];

/// The largest input any target looks at; longer ones are cut.
const MAX_INPUT: usize = 1024 * 1024;

fn bounded(data: &[u8]) -> &[u8] {
    &data[..data.len().min(MAX_INPUT)]
}

// ---- cni_input -----------------------------------------------------------

/// The CNI plugin's input: `KEY=VALUE` lines of `CNI_*` environment, a NUL byte, then
/// the network configuration (stdin). Without a NUL the whole input is stdin and the
/// command is ADD. Runs the plugin's parsing and validation ([`p4lb_cni::parse_invocation`])
/// and what the verbs derive from it without side effects: `CNI_ARGS`, endpoint labels,
/// the restore hint, the IPAM environment, `prevResult` in every version, error output.
pub fn cni_input(data: &[u8]) {
    use p4lb_cni::cni::env::Command;
    use p4lb_cni::cni::netconf::sniff_version;
    use p4lb_cni::cni::version::{Version, SUPPORTED};

    let data = bounded(data);
    let (env, stdin) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&[][..], data),
    };
    let env = String::from_utf8_lossy(env);
    let vars: HashMap<String, String> = env
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let version = sniff_version(stdin);
    let command = vars.get("CNI_COMMAND").map(String::as_str).unwrap_or("ADD");
    let command = match Command::parse(command) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.to_json(version.as_deref().unwrap_or("1.1.0"));
            return;
        }
    };
    if command == Command::Version {
        let _ = p4lb_cni::cmd::version::run(stdin);
        return;
    }
    match p4lb_cni::parse_invocation(command, |k| vars.get(k).cloned(), stdin.to_vec()) {
        Err(e) => {
            let _ = e.to_json(version.as_deref().unwrap_or("1.1.0"));
        }
        Ok(inv) => {
            if let Ok(args) = inv.args() {
                let _ = inv.labels(&args);
                if let Ok(hint) = p4lb_cni::restore::detect(&args, &inv.conf.runtime_config) {
                    let _ = inv.ipam_env(hint.as_ref());
                }
            }
            if let Some(prev) = &inv.conf.prev_result {
                for v in SUPPORTED {
                    if let Ok(v) = Version::parse(v) {
                        let out = prev.to_value(v);
                        let _ = p4lb_cni::cni::result::CniResult::from_value(&out, "prevResult");
                    }
                }
                let _ = prev.sandbox_interface(&inv.env.ifname, &inv.env.netns);
            }
        }
    }
}

// ---- api_messages --------------------------------------------------------

/// A controller API request: the first byte picks the request type, the rest is its
/// protobuf encoding ([`p4lb_controller::fuzzing::api_request`]).
pub fn api_messages(data: &[u8]) {
    p4lb_controller::fuzzing::api_request(data)
}

// ---- the software switch -------------------------------------------------

const DEVICE_ID: u64 = 1;
/// The switch's router MAC in the programmed tables.
const ROUTER_MAC: u64 = 0x02_00_00_00_00_fe;

/// The runtime the switch's handlers run on. A worker thread of its own runs the tasks
/// each committed pipeline spawns (digests, idle sweep) and reaps them when a switch is
/// dropped; on a current-thread runtime they would pile up between calls.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_time()
            .build()
            .expect("a tokio runtime")
    })
}

/// The pipeline config of the checked-in P4Info (parsed once: parsing is slow).
pub fn real_config() -> p4::ForwardingPipelineConfig {
    static CONFIG: OnceLock<p4::ForwardingPipelineConfig> = OnceLock::new();
    CONFIG
        .get_or_init(|| p4::ForwardingPipelineConfig {
            p4info: Some(p4lb_p4::p4info().expect("the checked-in P4Info parses")),
            p4_device_config: Vec::new(),
            cookie: None,
        })
        .clone()
}

fn set_pipeline(
    svc: &P4RuntimeService,
    r: p4::SetForwardingPipelineConfigRequest,
) -> Result<(), tonic::Status> {
    runtime()
        .block_on(svc.set_forwarding_pipeline_config(Request::new(r)))
        .map(|_| ())
}

pub fn write(svc: &P4RuntimeService, updates: Vec<p4::Update>) -> Result<(), tonic::Status> {
    let r = p4::WriteRequest {
        device_id: DEVICE_ID,
        updates,
        ..Default::default()
    };
    runtime().block_on(svc.write(Request::new(r))).map(|_| ())
}

/// A switch with the real pipeline committed and empty tables.
pub fn fresh_switch() -> P4RuntimeService {
    let svc = P4RuntimeService {
        device: Arc::new(Device::new(DEVICE_ID, Arc::new(DataplaneSlot::default()))),
    };
    set_pipeline(
        &svc,
        p4::SetForwardingPipelineConfigRequest {
            device_id: DEVICE_ID,
            action: p4::set_forwarding_pipeline_config_request::Action::VerifyAndCommit as i32,
            config: Some(real_config()),
            ..Default::default()
        },
    )
    .expect("the real pipeline commits");
    svc
}

/// The switch port clients are behind, and the MAC of their next hop.
const UPLINK_PORT: u32 = 3;
const CLIENT_MAC: u64 = 0x02_00_00_00_0c_01;

/// A client connection learned through the VIP of the seed service, pinned to the first
/// endpoint's backend (forward entry and reverse translation).
fn learned() -> FiveTuple {
    FiveTuple {
        src: Ipv4Addr::new(192, 168, 1, 10),
        dst: Ipv4Addr::new(10, 96, 0, 10),
        protocol: 6,
        sport: 40000,
        dport: 80,
    }
}

/// The table set a controller derives from its fuzzing seed state (two endpoints, a
/// VIP with a Maglev table, routes, ARP), plus one learned connection, as updates.
pub fn programmed_updates() -> Vec<p4::Update> {
    static UPDATES: OnceLock<Vec<p4::Update>> = OnceLock::new();
    UPDATES.get_or_init(table_set).clone()
}

fn table_set() -> Vec<p4::Update> {
    let st = p4lb_controller::fuzzing::seed_state();
    let shape = p4lb_controller::desired::Shape {
        router_mac: ROUTER_MAC,
        arp_proxy_all: true,
    };
    let mut entries: Vec<p4::TableEntry> = p4lb_controller::desired::desired(st, shape)
        .into_values()
        .collect();
    // The service's backend (the first seed endpoint) serves the learned connection.
    let web = Ipv4Addr::new(10, 88, 0, 5);
    let backend = st.endpoint_by_ip(web).map(|e| e.backend_id).unwrap_or(1);
    let t = learned();
    entries.push(p::conn_pin(&t, backend, 0));
    // Clients are reached through an uplink on port 3.
    entries.push(p::route_to_port(
        Ipv4Addr::new(192, 168, 1, 0),
        24,
        UPLINK_PORT,
        CLIENT_MAC,
    ));
    let back = FiveTuple {
        src: web,
        dst: t.src,
        protocol: t.protocol,
        sport: t.dport,
        dport: t.sport,
    };
    entries.push(p::conn_reverse(&back, t.dst, t.dport, 1));
    entries
        .into_iter()
        .map(|e| p4::Update {
            r#type: p4::update::Type::Insert as i32,
            entity: Some(p4::Entity {
                entity: Some(p4::entity::Entity::TableEntry(e)),
            }),
        })
        .collect()
}

/// Reads every entity back (what was accepted must encode again).
fn read_back(svc: &P4RuntimeService) {
    let wildcard = |e: p4::entity::Entity| p4::Entity { entity: Some(e) };
    let r = p4::ReadRequest {
        device_id: DEVICE_ID,
        entities: vec![
            wildcard(p4::entity::Entity::TableEntry(p4::TableEntry::default())),
            wildcard(p4::entity::Entity::CounterEntry(p4::CounterEntry::default())),
            wildcard(p4::entity::Entity::RegisterEntry(
                p4::RegisterEntry::default(),
            )),
        ],
        ..Default::default()
    };
    runtime().block_on(async {
        if let Ok(resp) = svc.read(Request::new(r)).await {
            let mut s = resp.into_inner();
            while let Some(item) = s.next().await {
                if item.is_err() {
                    break;
                }
            }
        }
    });
}

/// An IPv4/TCP SYN from the client of [`learned`] to the VIP, as the switch receives it.
pub fn syn_frame() -> Vec<u8> {
    let t = learned();
    tcp_frame((t.src, t.sport), (t.dst, t.dport), 0x02)
}

/// An IPv4/TCP segment (no payload, `flags` in the TCP flags byte) to the switch's router
/// MAC, with correct checksums.
pub fn tcp_frame(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), flags: u8) -> Vec<u8> {
    let mut f = Vec::with_capacity(54);
    f.extend_from_slice(&ROUTER_MAC.to_be_bytes()[2..]);
    f.extend_from_slice(&CLIENT_MAC.to_be_bytes()[2..]);
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&40u16.to_be_bytes());
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&src.0.octets());
    ip[16..20].copy_from_slice(&dst.0.octets());
    let sum = checksum(&ip, 0);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&src.1.to_be_bytes());
    tcp[2..4].copy_from_slice(&dst.1.to_be_bytes());
    tcp[4..8].copy_from_slice(&1u32.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = flags;
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&src.0.octets());
    pseudo.extend_from_slice(&dst.0.octets());
    pseudo.extend_from_slice(&[0, 6, 0, 20]);
    let sum = checksum(&tcp, sum_words(&pseudo));
    tcp[16..18].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&tcp);
    f
}

fn sum_words(b: &[u8]) -> u32 {
    b.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

fn checksum(b: &[u8], init: u32) -> u16 {
    let mut s = init + sum_words(b);
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

// ---- p4rt_write ----------------------------------------------------------

/// The switch's P4Runtime Write and SetForwardingPipelineConfig handling, called
/// directly (no gRPC server) on a switch with the real pipeline committed. First
/// byte: bit 0 selects a `WriteRequest` (0) or a `SetForwardingPipelineConfigRequest`
/// (1) encoded in the rest; unless bit 1 is set, the device id, role and election id
/// are those of the primary, so the request reaches the table code; bit 2 set = the
/// programmed table set is written first (so MODIFY and DELETE find entries). After a
/// Write everything is read back; after a pipeline config the programmed table set is
/// written and a SYN runs through whatever pipeline is installed.
pub fn p4rt_write(data: &[u8]) {
    let Some((&mode, body)) = bounded(data).split_first() else {
        return;
    };
    let as_primary = mode & 2 == 0;
    let svc = fresh_switch();
    if mode & 4 != 0 {
        write(&svc, programmed_updates()).expect("the programmed table set is accepted");
    }
    if mode & 1 == 0 {
        let Ok(mut r) = p4::WriteRequest::decode(body) else {
            return;
        };
        if as_primary {
            r.device_id = DEVICE_ID;
            r.role.clear();
            r.election_id = None;
        }
        let _ = runtime().block_on(svc.write(Request::new(r)));
        read_back(&svc);
    } else {
        let Ok(mut r) = p4::SetForwardingPipelineConfigRequest::decode(body) else {
            return;
        };
        if as_primary {
            r.device_id = DEVICE_ID;
            r.role.clear();
            r.election_id = None;
        }
        let _ = set_pipeline(&svc, r);
        let _ = runtime().block_on(svc.get_forwarding_pipeline_config(Request::new(
            p4::GetForwardingPipelineConfigRequest {
                device_id: DEVICE_ID,
                response_type: 0,
            },
        )));
        let _ = write(&svc, programmed_updates());
        read_back(&svc);
        if let Some(dp) = svc.device.slot.get() {
            let mut f = syn_frame();
            let _ = p4lb_switch::pipeline::process(&dp, &mut f, 3, false);
        }
    }
}

// ---- packet_pipeline -----------------------------------------------------

/// The switch programmed once with [`programmed_updates`].
fn programmed() -> &'static (P4RuntimeService, Arc<Dataplane>) {
    static SW: OnceLock<(P4RuntimeService, Arc<Dataplane>)> = OnceLock::new();
    SW.get_or_init(|| {
        let svc = fresh_switch();
        write(&svc, programmed_updates()).expect("the programmed table set is accepted");
        let dp = svc.device.slot.get().expect("a committed pipeline");
        (svc, dp)
    })
}

/// Largest frame the target passes to the pipeline (a jumbo frame).
const MAX_FRAME: usize = 9216;

/// An arbitrary frame through the software switch's packet pipeline with a programmed
/// table set (VIP, Maglev slots, backends, routes, ARP, a learned connection). First
/// byte: ingress port (low 3 bits, 0..=7) and whether the checksum is partial (bit 7);
/// the rest is the frame.
pub fn packet_pipeline(data: &[u8]) {
    let _ = packet_verdict(data);
}

/// What [`packet_pipeline`] does, with the pipeline's verdict (`None`: empty input).
pub fn packet_verdict(data: &[u8]) -> Option<p4lb_switch::pipeline::Verdict> {
    let (&meta, frame) = data.split_first()?;
    let (_, dp) = programmed();
    let mut f = frame[..frame.len().min(MAX_FRAME)].to_vec();
    Some(p4lb_switch::pipeline::process(
        dp,
        &mut f,
        u16::from(meta & 7),
        meta & 0x80 != 0,
    ))
}

// ---- checkpoint_record ---------------------------------------------------

/// The CRIU action's checkpoint record (`p4lb-migration.json`): parsed and validated
/// ([`p4lb_criu_action::record::MigrationRecord::parse`]); an accepted record must
/// serialize and parse back to itself.
pub fn checkpoint_record(data: &[u8]) {
    use p4lb_criu_action::record::MigrationRecord;
    let path = Path::new("p4lb-migration.json");
    let Ok(rec) = MigrationRecord::parse(bounded(data), path) else {
        return;
    };
    let text = serde_json::to_vec_pretty(&rec).expect("a record serializes");
    let again = MigrationRecord::parse(&text, path).expect("a written record parses");
    assert_eq!(rec, again, "a record changed through a write and a read");
}

// ---- netavark_input ------------------------------------------------------

/// The namespace path of a `setup`/`teardown` input without one.
const DEFAULT_NETNS: &str = "/run/netns/netavark-fuzz";

/// The netavark plugin's input. First byte, modulo 3: the verb (0 `create`, 1
/// `setup`, 2 `teardown`); the rest is `create`'s network JSON, or for `setup` and
/// `teardown` the namespace path argument, a NUL byte, then stdin (without a NUL
/// all of it is stdin and the path is [`DEFAULT_NETNS`]). Runs the plugin's pure
/// parsing and validation ([`p4lb_netavark::plugin::create`],
/// [`p4lb_netavark::plugin::parse_setup`], [`p4lb_netavark::plugin::parse_teardown`]),
/// then what `setup` derives from an accepted input without the controller: the
/// endpoint's labels and the restore hint against a fixed list of migrations. An
/// accepted network must be accepted again as podman stores it (the output of
/// `create`), an accepted address must lie in a subnet of the network, and every
/// refusal must be the JSON error netavark expects.
pub fn netavark_input(data: &[u8]) {
    use p4lb_netavark::plugin;

    let data = bounded(data);
    let Some((&verb, rest)) = data.split_first() else {
        return;
    };
    let (netns, stdin) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (
            String::from_utf8_lossy(&rest[..i]).into_owned(),
            &rest[i + 1..],
        ),
        None => (DEFAULT_NETNS.to_string(), rest),
    };
    let refused = |e: p4lb_netavark::Error| {
        let doc: serde_json::Value =
            serde_json::from_str(&e.to_json()).expect("an error is a JSON document");
        let msg = doc["error"].as_str().expect("an error has an error string");
        assert!(msg.starts_with("p4lb: "), "{msg:?}");
    };
    match verb % 3 {
        0 => match plugin::create(stdin) {
            Err(e) => refused(e),
            Ok(net) => {
                assert_eq!(net["dns_enabled"], serde_json::Value::Bool(false));
                let stored = serde_json::to_vec(&net).expect("a network serializes");
                if let Err(e) = plugin::create(&stored) {
                    panic!("create refused the network it returned: {e}");
                }
            }
        },
        1 => match plugin::parse_setup(&netns, stdin) {
            Err(e) => refused(e),
            Ok(r) => {
                assert!(r.address.addr.is_ipv4(), "{:?}", r.address);
                assert!(
                    r.request
                        .exec
                        .network
                        .subnets
                        .iter()
                        .flatten()
                        .filter_map(|s| s.subnet.parse::<p4lb_cni::cni::result::IpNet>().ok())
                        .any(|s| s.contains(r.address.addr) && s.contains(r.gateway)),
                    "{:?} / {} in no subnet of the network",
                    r.address,
                    r.gateway
                );
                let t = &r.request.target;
                assert_eq!(
                    t.container_id,
                    plugin::endpoint_id(&r.request.exec.container_id, &netns)
                );
                let _ = r.request.opts.endpoint_labels();
                let migrations = fixed_migrations();
                if let Err(e) = plugin::restore_hint(
                    &migrations,
                    &r.request.exec.container_id,
                    &t.ifname,
                    r.mac,
                ) {
                    refused(e);
                }
            }
        },
        _ => match plugin::parse_teardown(&netns, stdin) {
            Err(e) => refused(e),
            Ok(r) => assert_eq!(
                r.target.container_id,
                plugin::endpoint_id(&r.exec.container_id, &netns)
            ),
        },
    }
}

/// The podman container ID of the netavark seeds: [`fixed_migrations`] holds a
/// checkpointed migration of it, so a `setup` seed of it takes the restore path.
pub const SEED_CONTAINER: &str = "e782cb91648c0d7a4e1f35b9c2a8d6e0f4b7a1c3e5d9f2b6a8c0e4d7f1a3b5c9";

/// Migrations as the controller lists them: a checkpointed one of [`SEED_CONTAINER`]
/// on `eth0`, a finished one of it, and one whose source address is not IPv4.
pub fn fixed_migrations() -> Vec<p4lb_api::api::Migration> {
    use p4lb_netavark::plugin::endpoint_id;
    let mig = |id: &str, container: &str, ip: &str, state: &str| p4lb_api::api::Migration {
        id: id.into(),
        state: state.into(),
        source_key: format!("{}/eth0", endpoint_id(container, "/run/netns/netns-old")),
        source_ip: ip.into(),
        ..Default::default()
    };
    vec![
        mig("mig-1", SEED_CONTAINER, "10.89.0.2", "done"),
        mig("mig-2", SEED_CONTAINER, "10.89.0.3", "checkpointed"),
        mig("mig-3", "c6", "not-an-address", "restoring"),
    ]
}
