//! Service calls (VIPs) and backend selection: explicit endpoint keys, a label
//! selector, a glob on the pod name. Selection is re-resolved on every endpoint
//! change and the Maglev table rebalanced with minimal movement.

use std::collections::{BTreeMap, BTreeSet};

use p4lb_proto::api;

use crate::addr::parse_ipv4;
use crate::controller::{Change, Controller};
use crate::error::{Error, Result};
use crate::maglev;
use crate::state::{EndpointRec, EndpointState, ServiceRec, State};

/// Labels that carry a pod or container name, in order of preference.
pub const NAME_LABELS: &[&str] = &["k8s.pod", "io.kubernetes.pod.name", "podman.name", "name"];

/// Parses a selector "k=v,k2=v2" into pairs.
pub fn parse_selector(s: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| Error::invalid(format!("selector term {part:?} is not key=value")))?;
        let (k, v) = (k.trim(), v.trim());
        if k.is_empty() {
            return Err(Error::invalid(format!("selector term {part:?} has no key")));
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

/// Shell-style glob with `*` and `?`.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let (mut star, mut mark) = (None::<usize>, 0usize);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

fn pod_name(e: &EndpointRec) -> Option<&str> {
    NAME_LABELS
        .iter()
        .find_map(|l| e.labels.get(*l).map(String::as_str))
}

/// Endpoint keys a service selects now.
pub fn resolve(svc: &ServiceRec, state: &State) -> Vec<String> {
    resolve_among(svc, &state.endpoints)
}

fn resolve_among(svc: &ServiceRec, endpoints: &BTreeMap<String, EndpointRec>) -> Vec<String> {
    let selector = parse_selector(&svc.selector).unwrap_or_default();
    let mut keys = BTreeSet::new();
    for e in endpoints.values() {
        // A restore target joins its services when it takes over its source's backend
        // (the switchover): before, it would only take slots from the source and give
        // them back at the switchover, two rewrites of the service's slots for nothing.
        if !e.active() || e.backend_id == 0 || e.state == EndpointState::Restoring {
            continue;
        }
        let explicit = svc.backends.contains(&e.key);
        let by_labels = !selector.is_empty()
            && selector
                .iter()
                .all(|(k, v)| e.labels.get(k).map(|x| x == v).unwrap_or(false));
        let by_name = !svc.name_pattern.is_empty()
            && pod_name(e)
                .map(|n| glob_match(&svc.name_pattern, n))
                .unwrap_or(false);
        if explicit || by_labels || by_name {
            keys.insert(e.key.clone());
        }
    }
    keys.into_iter().collect()
}

/// Re-resolves every service and rebalances its slots (kept as they are when the
/// service's backend ids did not change, which is what a migration does: the target
/// takes the source's backend id).
pub fn refresh_services(state: &mut State) {
    let State {
        endpoints,
        services,
        ..
    } = state;
    for svc in services.values_mut() {
        svc.resolved = resolve_among(svc, endpoints);
        let ids: Vec<u16> = svc
            .resolved
            .iter()
            .filter_map(|k| endpoints.get(k).map(|e| e.backend_id))
            .collect();
        svc.slots = maglev::rebalance(&svc.slots, &ids, svc.slot_count);
    }
}

fn parse_protocol(p: &str) -> Result<u8> {
    match p.to_ascii_lowercase().as_str() {
        "tcp" | "" => Ok(6),
        "udp" => Ok(17),
        other => Err(Error::invalid(format!(
            "protocol {other:?} is not \"tcp\" or \"udp\""
        ))),
    }
}

/// The fields of a service request that passed [`validate_service`].
pub(crate) struct ValidService {
    pub vip: std::net::Ipv4Addr,
    pub protocol: u8,
    pub port: u16,
    pub target_port: u16,
    pub slot_count: u16,
}

/// Checks every field of a service (name, VIP, protocol, ports, selector, slot
/// count; `default_slots` when it gives none) without looking at the state.
pub(crate) fn validate_service(s: &api::Service, default_slots: u16) -> Result<ValidService> {
    if s.name.is_empty()
        || s.name.len() > 128
        || s.name.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(Error::invalid(format!(
            "service name {:?} is not valid (1..128 characters, no spaces)",
            s.name
        )));
    }
    let vip = parse_ipv4("vip", &s.vip)?;
    if vip.is_unspecified() || vip.is_broadcast() || vip.is_multicast() {
        return Err(Error::invalid(format!(
            "vip {vip} is not a unicast address"
        )));
    }
    let protocol = parse_protocol(&s.protocol)?;
    let port = u16::try_from(s.port)
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| Error::invalid(format!("port {} is not in 1..=65535", s.port)))?;
    let target_port = u16::try_from(s.target_port).map_err(|_| {
        Error::invalid(format!("target_port {} is not in 0..=65535", s.target_port))
    })?;
    parse_selector(&s.selector)?;
    let slot_count = match s.slot_count {
        0 => default_slots,
        n if n <= u32::from(u16::MAX) && maglev::is_prime(n) => n as u16,
        n => {
            return Err(Error::invalid(format!(
                "slot_count {n} is not a prime below 65536"
            )))
        }
    };
    Ok(ValidService {
        vip,
        protocol,
        port,
        target_port,
        slot_count,
    })
}

impl Controller {
    /// AddService (or replace).
    pub async fn add_service(&self, r: api::AddServiceRequest) -> Result<ServiceRec> {
        let s = r
            .service
            .ok_or_else(|| Error::invalid("service is required"))?;
        let ValidService {
            vip,
            protocol,
            port,
            target_port,
            slot_count,
        } = validate_service(&s, self.cfg.maglev_slots)?;
        let mut g = self.inner.lock().await;
        let mut st = g.state.clone();
        for b in &s.backends {
            if !st.endpoints.contains_key(b) {
                return Err(Error::not_found(format!(
                    "backend endpoint {b} is not registered"
                )));
            }
        }
        let existing = st.services.get(&s.name).cloned();
        if existing.is_some() && !r.replace {
            return Err(Error::exists(format!("service {} already exists", s.name)));
        }
        if existing.is_none() {
            crate::limits::check_count(
                "services",
                st.services.len() + 1,
                crate::limits::MAX_SERVICES,
            )?;
        }
        if let Some(other) = st
            .services
            .values()
            .find(|o| o.name != s.name && o.vip == vip && o.protocol == protocol && o.port == port)
        {
            return Err(Error::exists(format!(
                "{vip} {}/{port} is already service {}",
                s.protocol, other.name
            )));
        }
        if let Some(e) = st.endpoint_by_ip(vip) {
            return Err(Error::exists(format!(
                "vip {vip} is the address of endpoint {}",
                e.key
            )));
        }
        let service_id = match &existing {
            Some(e) => e.service_id,
            None => st
                .free_service_id()
                .ok_or_else(|| Error::precondition("no free service id"))?,
        };
        let used_slots: usize = st
            .services
            .values()
            .filter(|o| o.name != s.name)
            .map(|o| usize::from(o.slot_count))
            .sum();
        if used_slots + usize::from(slot_count) > 65536 {
            return Err(Error::precondition(format!(
                "maglev_slots would exceed 65536 entries ({used_slots} used)"
            )));
        }
        let mut rec = ServiceRec {
            name: s.name.clone(),
            vip,
            protocol,
            port,
            target_port,
            backends: s.backends.clone(),
            selector: s.selector.clone(),
            name_pattern: s.name_pattern.clone(),
            service_id,
            slot_count,
            resolved: Vec::new(),
            slots: existing
                .as_ref()
                .filter(|e| e.slot_count == slot_count)
                .map(|e| e.slots.clone())
                .unwrap_or_default(),
        };
        rec.resolved = resolve(&rec, &st);
        st.services.insert(rec.name.clone(), rec);
        refresh_services(&mut st);
        let rec = st.services[&s.name].clone();
        let mut change = Change::new(st);
        if let Some(old) = existing {
            if old.vip != rec.vip || old.port != rec.port || old.protocol != rec.protocol {
                change.drop_services.push(old.service_id);
            }
        }
        self.commit(&mut g, change).await?;
        drop(g);
        tracing::info!(name = %rec.name, vip = %rec.vip, backends = rec.resolved.len(), "service added");
        self.emit(
            "service",
            "added",
            &rec.name,
            format!("{}:{}", rec.vip, rec.port),
        );
        Ok(rec)
    }

    /// RemoveService.
    pub async fn remove_service(&self, name: &str) -> Result<()> {
        if name.is_empty() {
            return Err(Error::invalid("name is required"));
        }
        let mut g = self.inner.lock().await;
        let mut st = g.state.clone();
        let rec = st
            .services
            .remove(name)
            .ok_or_else(|| Error::not_found(format!("no service {name}")))?;
        let mut change = Change::new(st);
        change.drop_services.push(rec.service_id);
        self.commit(&mut g, change).await?;
        drop(g);
        self.emit("service", "removed", name, String::new());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(key: &str, backend_id: u16, state: EndpointState) -> EndpointRec {
        let ip = std::net::Ipv4Addr::new(10, 88, 0, backend_id as u8);
        EndpointRec {
            locked: state != EndpointState::Ready,
            state,
            labels: [("app".to_string(), "web".to_string())].into(),
            ..EndpointRec::sample(key, ip, u32::from(backend_id))
        }
    }

    /// A restore target registered locked joins no service: the service's slots stay
    /// as they are from its registration through the switchover, where it takes the
    /// source's backend id.
    #[test]
    fn a_restore_target_joins_its_services_at_the_switchover() {
        let mut st = State::new();
        st.endpoints
            .insert("src".into(), endpoint("src", 2, EndpointState::Locked));
        st.services.insert(
            "web".into(),
            ServiceRec {
                name: "web".into(),
                vip: std::net::Ipv4Addr::new(10, 99, 0, 1),
                protocol: 6,
                port: 80,
                target_port: 0,
                backends: Vec::new(),
                selector: "app=web".into(),
                name_pattern: String::new(),
                service_id: 1,
                slot_count: 13,
                resolved: Vec::new(),
                slots: Vec::new(),
            },
        );
        refresh_services(&mut st);
        let before = st.services["web"].slots.clone();
        assert!(before.iter().all(|b| *b == 2), "{before:?}");
        // The target registers locked for the restore, with a backend id of its own.
        st.endpoints
            .insert("tgt".into(), endpoint("tgt", 3, EndpointState::Restoring));
        refresh_services(&mut st);
        assert_eq!(st.services["web"].resolved, vec!["src".to_string()]);
        assert_eq!(st.services["web"].slots, before);
        // The switchover: the target takes the source's backend id, still locked.
        let src = st.endpoints.get_mut("src").unwrap();
        src.backend_id = 0;
        src.state = EndpointState::Migrated;
        let tgt = st.endpoints.get_mut("tgt").unwrap();
        tgt.backend_id = 2;
        tgt.state = EndpointState::Locked;
        refresh_services(&mut st);
        assert_eq!(st.services["web"].resolved, vec!["tgt".to_string()]);
        assert_eq!(st.services["web"].slots, before);
    }

    #[test]
    fn globs() {
        assert!(glob_match("web-*", "web-1"));
        assert!(glob_match("web-?", "web-1"));
        assert!(!glob_match("web-?", "web-12"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXXbYc"));
        assert!(!glob_match("a*b", "ac"));
    }

    #[test]
    fn selectors() {
        assert_eq!(
            parse_selector("app=web, tier=front").unwrap(),
            vec![
                ("app".to_string(), "web".to_string()),
                ("tier".to_string(), "front".to_string())
            ]
        );
        assert!(parse_selector("app").is_err());
        assert!(parse_selector("=x").is_err());
        assert!(parse_selector("").unwrap().is_empty());
    }
}
