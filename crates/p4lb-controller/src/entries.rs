//! The controller's use of the pipeline's table entries: which tables it derives from its
//! state, and entries rendered for people (`p4lbctl tables`, test failures).
//!
//! The entries themselves are built and read with [`p4lb_p4::entries`]; names, widths and
//! IDs come from [`p4lb_p4::tables`] and [`p4lb_p4::actions`].

use std::net::Ipv4Addr;

use p4lb_p4::entries::action_of;
use p4lb_p4::{actions, short_name, tables};
use p4lb_proto::p4runtime::{field_match::FieldMatchType, TableEntry};

/// Tables whose entries the controller derives from its persisted state (the connection
/// tables are learned instead).
pub const STATIC_TABLES: &[u32] = &[
    tables::arp_proxy::ID,
    tables::vip_services::ID,
    tables::maglev_slots::ID,
    tables::backends::ID,
    tables::service_vip::ID,
    tables::ipv4_routes::ID,
    tables::port_smac::ID,
];

/// A value of `bitwidth` bits as people read it: addresses dotted, MACs with colons.
fn format_value(v: u64, bitwidth: u32) -> String {
    match bitwidth {
        32 => Ipv4Addr::from(v as u32).to_string(),
        48 => {
            let b = v.to_be_bytes();
            crate::addr::format_mac(&[b[2], b[3], b[4], b[5], b[6], b[7]])
        }
        _ => v.to_string(),
    }
}

/// Human-readable match of an entry ("dst_addr=10.0.0.1/32"); match keys wider than 32
/// bits (MACs) are shown as integers.
pub fn format_match(e: &TableEntry) -> String {
    let table = tables::by_id(e.table_id);
    e.r#match
        .iter()
        .map(|f| {
            let field = table.and_then(|t| t.match_field(f.field_id));
            let name = field.map(|m| short_name(m.name)).unwrap_or("field");
            let (v, plen) = match &f.field_match_type {
                Some(FieldMatchType::Exact(x)) => (p4lb_p4::bytes::to_u64(&x.value), None),
                Some(FieldMatchType::Lpm(x)) => {
                    (p4lb_p4::bytes::to_u64(&x.value), Some(x.prefix_len))
                }
                _ => (0, None),
            };
            let vs = match field {
                Some(m) if m.bitwidth == 32 => format_value(v, 32),
                _ => v.to_string(),
            };
            match plen {
                Some(p) => format!("{name}={vs}/{p}"),
                None => format!("{name}={vs}"),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Human-readable action of an entry ("backend_forward(ip=10.0.0.2, dmac=..., port=2)").
pub fn format_action(e: &TableEntry) -> String {
    let Some((id, params)) = action_of(e) else {
        return String::from("-");
    };
    let info = actions::by_id(id);
    let args = match info {
        Some(a) if a.params.len() == params.len() => a
            .params
            .iter()
            .zip(&params)
            .map(|(p, v)| format!("{}={}", p.name, format_value(*v, p.bitwidth)))
            .collect::<Vec<_>>()
            .join(", "),
        _ => params
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    };
    let name = info.map(|a| short_name(a.name)).unwrap_or("?");
    format!("{name}({args})")
}

#[cfg(test)]
mod tests {
    use super::*;
    use p4lb_p4::entries;
    use p4lb_p4::FiveTuple;

    #[test]
    fn entries_read_as_text() {
        let t = FiveTuple {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 96, 0, 1),
            protocol: 6,
            sport: 40000,
            dport: 80,
        };
        let e = entries::conn_pin(&t, 3, 0);
        assert_eq!(
            format_match(&e),
            "src_addr=10.0.0.1 dst_addr=10.96.0.1 protocol=6 l4_sport=40000 l4_dport=80"
        );
        assert_eq!(format_action(&e), "conn_pin(backend_id=3)");
        let b = entries::backend_forward(1, Ipv4Addr::new(10, 0, 0, 2), 0x0242_ac11_0002, 5);
        assert_eq!(format_match(&b), "backend_id=1");
        assert_eq!(
            format_action(&b),
            "backend_forward(ip=10.0.0.2, dmac=02:42:ac:11:00:02, port=5)"
        );
        let r = entries::route_locked(Ipv4Addr::new(10, 0, 0, 2), 32);
        assert_eq!(format_match(&r), "dst_addr=10.0.0.2/32");
        assert_eq!(format_action(&r), "route_locked()");
        let s = entries::vip_service(Ipv4Addr::new(10, 96, 0, 1), 6, 80, 1, 7, 8080);
        assert_eq!(
            format_action(&s),
            "set_service(service_id=1, slot_count=7, target_port=8080)"
        );
        assert_eq!(format_action(&entries::conn_key(&t)), "-");
    }
}
