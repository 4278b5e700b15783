//! The entry point of the `api_messages` fuzz target (`fuzz/` at the repository root).
//! Not an API: it exists so the target runs the controller's own request checks.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use prost::Message;

use p4lb_proto::api;

use crate::config::Uplink;
use crate::endpoints::{
    check_labels, check_name, endpoint_key, merge_labels, plan_deregistration, plan_registration,
    validate_registration,
};
use crate::limits::{self, check_request, Request};
use crate::migration::{next_state, parse_phase};
use crate::services::{glob_match, refresh_services, resolve, validate_service};
use crate::state::{MigrationRec, MigrationState, ServiceRec, State};

/// Switch ports the planning uses (the default configuration's range).
const PORTS: (u32, u32) = (1, p4lb_p4::MAX_DATA_PORT as u32);
/// The uplink of the node the planned registrations are on (the empty node name, as
/// [`validate_registration`] leaves it), so that registrations routed behind their node
/// are planned too.
fn uplinks() -> &'static [Uplink] {
    static UPLINKS: OnceLock<Vec<Uplink>> = OnceLock::new();
    UPLINKS.get_or_init(|| {
        vec![Uplink {
            node: String::new(),
            port: u32::from(p4lb_p4::MAX_DATA_PORT),
            mac: [2, 0, 0, 0, 0x0b, 1],
            interface: String::new(),
        }]
    })
}

/// Maglev slots of a service that names none (a small prime keeps runs fast).
const SLOTS: u16 = 251;

/// The kinds of request, selected by the first input byte.
const KINDS: u8 = 10;

fn seed_registration(cid: &str, ip: &str, labels: &[(&str, &str)]) -> api::RegisterEndpointRequest {
    api::RegisterEndpointRequest {
        container_id: cid.into(),
        ifname: "eth0".into(),
        ip: ip.into(),
        prefix_len: 24,
        mac: "02:00:00:00:00:01".into(),
        gateway: "10.88.0.1".into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        network: "p4lb".into(),
        ..Default::default()
    }
}

/// A small state the requests are planned against: two endpoints, a service that
/// selects one of them, and a checkpointed migration of the other.
pub fn seed_state() -> &'static State {
    static STATE: OnceLock<State> = OnceLock::new();
    STATE.get_or_init(|| {
        let mut st = State::new();
        for (cid, ip, labels) in [
            (
                "web-1",
                "10.88.0.5",
                &[
                    ("app", "web"),
                    ("k8s.namespace", "default"),
                    ("k8s.pod", "web-1"),
                ][..],
            ),
            ("db-1", "10.88.0.6", &[("app", "db")][..]),
        ] {
            let reg = validate_registration(seed_registration(cid, ip, labels))
                .expect("seed registration is valid");
            st = plan_registration(&st, reg, PORTS, &Default::default(), &[])
                .expect("seed registration plans")
                .0
                .state;
        }
        let svc = api::Service {
            name: "web".into(),
            vip: "10.96.0.10".into(),
            port: 80,
            selector: "app=web".into(),
            ..Default::default()
        };
        let v = validate_service(&svc, SLOTS).expect("seed service is valid");
        st.services.insert(
            svc.name.clone(),
            ServiceRec {
                name: svc.name,
                vip: v.vip,
                protocol: v.protocol,
                port: v.port,
                target_port: v.target_port,
                backends: Vec::new(),
                selector: svc.selector,
                name_pattern: String::new(),
                service_id: 1,
                slot_count: v.slot_count,
                resolved: Vec::new(),
                slots: Vec::new(),
            },
        );
        st.migrations.push(MigrationRec {
            id: "m-1".into(),
            source_key: endpoint_key("db-1", "eth0"),
            source_ip: "10.88.0.6".parse().ok(),
            state: MigrationState::Checkpointed,
            backend_id: st.endpoints[&endpoint_key("db-1", "eth0")].backend_id,
            ..Default::default()
        });
        refresh_services(&mut st);
        st
    })
}

/// One API request from fuzzer bytes: the first byte picks the request type, the rest
/// is its protobuf encoding. Decodes it like the server (refusing what is over
/// [`limits::MAX_REQUEST_BYTES`]), checks it against the limits, then runs the checks
/// and the state planning of its call against a small fixed state. Errors are the
/// expected outcome of most inputs; a panic is a bug.
pub fn api_request(data: &[u8]) {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    if body.len() > limits::MAX_REQUEST_BYTES {
        return;
    }
    let st = seed_state();
    match kind % KINDS {
        0 => {
            let Ok(r) = api::RegisterEndpointRequest::decode(body) else {
                return;
            };
            if check_request(Request::Register(&r)).is_err() {
                return;
            }
            if let Ok(reg) = validate_registration(r) {
                if let Ok((change, rec)) =
                    plan_registration(st, reg, PORTS, &Default::default(), uplinks())
                {
                    assert!(change.state.endpoints.contains_key(&rec.key));
                    let _ = rec.to_api();
                }
            }
        }
        1 => {
            let Ok(r) = api::DeregisterEndpointRequest::decode(body) else {
                return;
            };
            if check_request(Request::Deregister(&r)).is_err()
                || check_name("container_id", &r.container_id, 256).is_err()
                || check_name("ifname", &r.ifname, 15).is_err()
            {
                return;
            }
            let _ = plan_deregistration(st, &endpoint_key(&r.container_id, &r.ifname));
        }
        2 => {
            let Ok(r) = api::UpdateEndpointMetadataRequest::decode(body) else {
                return;
            };
            if check_request(Request::UpdateMetadata(&r)).is_err() {
                return;
            }
            let update: BTreeMap<String, String> = r.labels.into_iter().collect();
            if check_labels(&update).is_err() {
                return;
            }
            let Some(ep) = st.endpoints.values().next() else {
                return;
            };
            let mut labels = ep.labels.clone();
            let before = labels.clone();
            let kept = merge_labels(&mut labels, update);
            for k in &kept {
                assert_eq!(labels.get(k), before.get(k), "identity label {k} changed");
            }
            let _ = limits::check_labels(&labels);
        }
        3 => {
            let Ok(r) = api::GetEndpointRequest::decode(body) else {
                return;
            };
            if check_request(Request::GetEndpoint(&r)).is_ok() && !r.ip.is_empty() {
                if let Ok(ip) = crate::addr::parse_ipv4("ip", &r.ip) {
                    let _ = st.endpoint_by_ip(ip);
                }
            }
        }
        4 => {
            let Ok(r) = api::GarbageCollectRequest::decode(body) else {
                return;
            };
            if check_request(Request::GarbageCollect(&r)).is_ok() {
                let valid: std::collections::HashSet<String> = r
                    .valid_attachments
                    .iter()
                    .map(|a| endpoint_key(&a.container_id, &a.ifname))
                    .collect();
                let _ = st
                    .endpoints
                    .values()
                    .filter(|e| e.network == r.network && !valid.contains(&e.key))
                    .count();
            }
        }
        5 => {
            let Ok(r) = api::AddServiceRequest::decode(body) else {
                return;
            };
            if check_request(Request::AddService(&r)).is_err() {
                return;
            }
            let Some(s) = r.service else {
                return;
            };
            let Ok(v) = validate_service(&s, SLOTS) else {
                return;
            };
            // Keep a run short: the largest Maglev tables are left to the unit tests.
            if v.slot_count > 4093 {
                return;
            }
            let rec = ServiceRec {
                name: s.name,
                vip: v.vip,
                protocol: v.protocol,
                port: v.port,
                target_port: v.target_port,
                backends: s.backends,
                selector: s.selector,
                name_pattern: s.name_pattern,
                service_id: 2,
                slot_count: v.slot_count,
                resolved: Vec::new(),
                slots: Vec::new(),
            };
            let resolved = resolve(&rec, st);
            for e in st.endpoints.values() {
                let _ = glob_match(&rec.name_pattern, &e.key);
            }
            let mut next = st.clone();
            next.services.insert(rec.name.clone(), rec);
            refresh_services(&mut next);
            let _ = resolved;
        }
        6 => {
            let Ok(r) = api::RemoveServiceRequest::decode(body) else {
                return;
            };
            let _ = check_request(Request::RemoveService(&r));
        }
        7 => {
            let Ok(r) = api::MigrationEventRequest::decode(body) else {
                return;
            };
            if check_request(Request::MigrationEvent(&r)).is_err() {
                return;
            }
            let Ok(phase) = parse_phase(r.phase) else {
                return;
            };
            let _ = crate::addr::parse_opt_ipv4("source_ip", &r.source_ip);
            if phase != api::MigrationPhase::Lock {
                for s in MigrationState::ALL {
                    let _ = next_state(&r.migration_id, s, phase);
                }
            }
        }
        8 => {
            let Ok(r) = api::GetMigrationRequest::decode(body) else {
                return;
            };
            let _ = check_request(Request::GetMigration(&r));
        }
        _ => {
            let Ok(r) = api::DumpTablesRequest::decode(body) else {
                return;
            };
            let _ = check_request(Request::DumpTables(&r));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_state_builds_and_requests_run() {
        assert_eq!(seed_state().endpoints.len(), 2);
        assert_eq!(seed_state().services["web"].resolved.len(), 1);
        let reg = seed_registration("new", "10.88.0.9", &[("app", "web")]);
        let mut data = vec![0u8];
        data.extend(reg.encode_to_vec());
        api_request(&data);
        api_request(&[]);
        api_request(&[7, 0xff]);
    }
}
