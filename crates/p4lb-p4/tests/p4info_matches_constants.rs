//! The Rust constants and the checked-in P4Info must describe the same program.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use p4lb_p4::schema::{ActionScope, MatchKind};
use p4lb_p4::{actions, bytes, check_ids, externs, p4info, tables, ConnEvent, ConnLearn};
use p4lb_proto::p4info::{
    action_ref::Scope, counter_spec::Unit, match_field, p4_bitstring_like_type_spec,
    p4_data_type_spec, table::IdleTimeoutBehavior, MatchField, P4DataTypeSpec, P4Info,
};
use p4lb_proto::p4runtime::p4_data;

fn load() -> P4Info {
    p4info().expect("checked-in p4lb.p4info.txtpb parses as P4Info")
}

fn bit_width(spec: &P4DataTypeSpec) -> Option<i32> {
    match spec.type_spec.as_ref()? {
        p4_data_type_spec::TypeSpec::Bitstring(b) => match b.type_spec.as_ref()? {
            p4_bitstring_like_type_spec::TypeSpec::Bit(bit) => Some(bit.bitwidth),
            _ => None,
        },
        _ => None,
    }
}

fn match_kind(m: &MatchField) -> Option<MatchKind> {
    match m.r#match.as_ref()? {
        match_field::Match::MatchType(t) => match match_field::MatchType::try_from(*t).ok()? {
            match_field::MatchType::Exact => Some(MatchKind::Exact),
            match_field::MatchType::Lpm => Some(MatchKind::Lpm),
            _ => None,
        },
        _ => None,
    }
}

#[test]
fn pkg_info_is_v1model() {
    let info = load();
    assert_eq!(info.pkg_info.expect("pkg_info").arch, "v1model");
}

#[test]
fn tables_match() {
    let info = load();
    let in_p4info: BTreeSet<u32> = info
        .tables
        .iter()
        .map(|t| t.preamble.as_ref().unwrap().id)
        .collect();
    let in_rust: BTreeSet<u32> = tables::ALL.iter().map(|t| t.id).collect();
    assert_eq!(in_p4info, in_rust, "table IDs differ");

    for t in &info.tables {
        let pre = t.preamble.as_ref().unwrap();
        let c = tables::by_id(pre.id).unwrap();
        assert_eq!(pre.name, c.name, "table {:#x}", pre.id);
        assert_eq!(tables::by_name(c.name).map(|x| x.id), Some(c.id));
        assert_eq!(t.size, c.size, "{} size", c.name);
        assert_eq!(
            t.const_default_action_id, c.const_default_action_id,
            "{} default action",
            c.name
        );
        let idle = t.idle_timeout_behavior == IdleTimeoutBehavior::NotifyControl as i32;
        assert_eq!(idle, c.idle_timeout, "{} idle timeout", c.name);
        assert!(!t.is_const_table, "{} must be writable", c.name);

        assert_eq!(
            t.match_fields.len(),
            c.match_fields.len(),
            "{} keys",
            c.name
        );
        for (m, cm) in t.match_fields.iter().zip(c.match_fields) {
            assert_eq!(m.id, cm.id, "{} key {}", c.name, cm.name);
            assert_eq!(m.name, cm.name, "{} key {}", c.name, cm.id);
            assert_eq!(m.bitwidth as u32, cm.bitwidth, "{} key {}", c.name, cm.name);
            assert_eq!(match_kind(m), Some(cm.kind), "{} key {}", c.name, cm.name);
            assert_eq!(c.match_field(cm.id), Some(cm));
        }

        assert_eq!(t.action_refs.len(), c.actions.len(), "{} actions", c.name);
        for (r, cr) in t.action_refs.iter().zip(c.actions) {
            assert_eq!(r.id, cr.action_id, "{} action order", c.name);
            let scope = match Scope::try_from(r.scope).unwrap() {
                Scope::TableAndDefault => ActionScope::TableAndDefault,
                Scope::DefaultOnly => ActionScope::DefaultOnly,
                other => panic!("{}: unexpected scope {other:?}", c.name),
            };
            assert_eq!(scope, cr.scope, "{} action {:#x} scope", c.name, r.id);
        }
    }
}

#[test]
fn actions_match() {
    let info = load();
    let in_p4info: BTreeSet<u32> = info
        .actions
        .iter()
        .map(|a| a.preamble.as_ref().unwrap().id)
        .collect();
    let in_rust: BTreeSet<u32> = actions::ALL.iter().map(|a| a.id).collect();
    assert_eq!(in_p4info, in_rust, "action IDs differ");

    for a in &info.actions {
        let pre = a.preamble.as_ref().unwrap();
        let c = actions::by_id(pre.id).unwrap();
        assert_eq!(pre.name, c.name, "action {:#x}", pre.id);
        assert_eq!(actions::by_name(c.name).map(|x| x.id), Some(c.id));
        assert_eq!(a.params.len(), c.params.len(), "{} params", c.name);
        for (p, cp) in a.params.iter().zip(c.params) {
            assert_eq!(p.id, cp.id, "{} param {}", c.name, cp.name);
            assert_eq!(p.name, cp.name, "{} param {}", c.name, cp.id);
            assert_eq!(
                p.bitwidth as u32, cp.bitwidth,
                "{} param {}",
                c.name, cp.name
            );
        }
    }
}

#[test]
fn counters_match() {
    let info = load();
    assert_eq!(info.counters.len(), externs::COUNTERS.len());
    assert!(info.direct_counters.is_empty());
    for c in externs::COUNTERS {
        let p = info
            .counters
            .iter()
            .find(|x| x.preamble.as_ref().unwrap().id == c.id)
            .unwrap_or_else(|| panic!("counter {} missing", c.name));
        assert_eq!(p.preamble.as_ref().unwrap().name, c.name);
        assert_eq!(p.size, c.size, "{} size", c.name);
        assert_eq!(
            p.spec.as_ref().unwrap().unit,
            Unit::Both as i32,
            "{}",
            c.name
        );
    }
    let max_reason = p4lb_p4::DropReason::ALL
        .iter()
        .map(|r| r.index())
        .max()
        .unwrap();
    assert!(i64::from(max_reason) < externs::drops::SIZE);
}

#[test]
fn registers_match() {
    let info = load();
    assert_eq!(info.registers.len(), externs::REGISTERS.len());
    for r in externs::REGISTERS {
        let p = info
            .registers
            .iter()
            .find(|x| x.preamble.as_ref().unwrap().id == r.id)
            .unwrap_or_else(|| panic!("register {} missing", r.name));
        assert_eq!(p.preamble.as_ref().unwrap().name, r.name);
        assert_eq!(p.size, r.size);
        assert_eq!(
            bit_width(p.type_spec.as_ref().unwrap()),
            Some(r.bitwidth as i32)
        );
    }
}

#[test]
fn digest_matches() {
    let info = load();
    assert_eq!(info.digests.len(), externs::DIGESTS.len());
    let d = &externs::conn_learn::INFO;
    let p = &info.digests[0];
    let pre = p.preamble.as_ref().unwrap();
    assert_eq!(pre.id, d.id);
    assert_eq!(pre.name, d.name);
    let struct_name = match p.type_spec.as_ref().unwrap().type_spec.as_ref().unwrap() {
        p4_data_type_spec::TypeSpec::Struct(n) => n.name.clone(),
        other => panic!("digest type is not a struct: {other:?}"),
    };
    let ty = info
        .type_info
        .as_ref()
        .unwrap()
        .structs
        .get(&struct_name)
        .unwrap_or_else(|| panic!("struct {struct_name} missing from type_info"));
    assert_eq!(ty.members.len(), d.fields.len());
    for (m, f) in ty.members.iter().zip(d.fields) {
        assert_eq!(m.name, f.name);
        assert_eq!(
            bit_width(m.type_spec.as_ref().unwrap()),
            Some(f.bitwidth as i32),
            "{}",
            f.name
        );
    }
}

/// The typed digest message is laid out as the P4Info's digest struct: one bitstring per
/// member, in member order, each fitting the member's width; and the contract check finds the
/// P4Info's digest ID.
#[test]
fn conn_learn_message_follows_the_p4info_struct() {
    let info = load();
    let p = &info.digests[0];
    let struct_name = match p.type_spec.as_ref().unwrap().type_spec.as_ref().unwrap() {
        p4_data_type_spec::TypeSpec::Struct(n) => n.name.clone(),
        other => panic!("digest type is not a struct: {other:?}"),
    };
    let ty = &info.type_info.as_ref().unwrap().structs[&struct_name];
    let msg = ConnLearn {
        src_addr: Ipv4Addr::new(10, 0, 0, 1),
        dst_addr: Ipv4Addr::new(10, 96, 0, 1),
        protocol: 6,
        src_port: 40000,
        dst_port: 80,
        service_id: 1023,
        backend_id: 4095,
        event: ConnEvent::Fin,
    };
    let data = msg.to_p4data();
    let Some(p4_data::Data::Struct(s)) = &data.data else {
        panic!("digest data is a struct")
    };
    assert_eq!(s.members.len(), ty.members.len());
    for ((m, member), f) in ty
        .members
        .iter()
        .zip(&s.members)
        .zip(externs::conn_learn::INFO.fields)
    {
        assert_eq!(m.name, f.name);
        let width = bit_width(m.type_spec.as_ref().unwrap()).unwrap() as u32;
        let Some(p4_data::Data::Bitstring(b)) = &member.data else {
            panic!("{} is a bitstring", m.name)
        };
        assert_eq!(bytes::decode(b, width), Ok(msg.value(f)), "{}", m.name);
    }
    assert_eq!(ConnLearn::from_p4data(&data), Some(msg));
    let pre = p.preamble.as_ref().unwrap();
    assert_eq!(check_ids(&info).unwrap().conn_learn_digest, pre.id);
}

#[test]
fn ids_carry_their_p4runtime_prefix() {
    for t in tables::ALL {
        assert_eq!(t.id >> 24, 0x02, "{}", t.name);
        for a in t.actions {
            assert!(actions::by_id(a.action_id).is_some(), "{}", t.name);
        }
        assert!(
            t.action_ref(t.const_default_action_id).is_some(),
            "{}",
            t.name
        );
    }
    for a in actions::ALL {
        assert_eq!(a.id >> 24, 0x01, "{}", a.name);
    }
    for c in externs::COUNTERS {
        assert_eq!(c.id >> 24, 0x12, "{}", c.name);
    }
    for r in externs::REGISTERS {
        assert_eq!(r.id >> 24, 0x16, "{}", r.name);
    }
    for d in externs::DIGESTS {
        assert_eq!(d.id >> 24, 0x17, "{}", d.name);
    }
}
