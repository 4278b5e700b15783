//! Translating P4Runtime `TableEntry` messages to table keys/actions and back, with the
//! validation the spec asks for (unknown ids, widths, match kinds, LPM masks, scopes).

use std::collections::HashSet;

use p4lb_proto::p4runtime as p4;
use p4lb_proto::p4runtime::field_match::FieldMatchType;

use super::status::{invalid, rt, RtResult};
use super::value::decode;
use crate::bytes;
use crate::program::bind::{Program, Scope, TableInfo};
use crate::program::{Act, ActionKind, MatchKind};
use crate::tables::{lpm, pack_key, Entry};

/// Where an entry lives in its table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRepr {
    Exact(u128),
    Lpm { prefix: u32, len: u32 },
}

#[derive(Debug, Clone)]
pub struct MatchKey {
    pub vals: Vec<u64>,
    pub prefix_len: u32,
    pub key: KeyRepr,
}

/// A decoded action call.
#[derive(Debug, Clone)]
pub struct ActionCall {
    pub action_id: u32,
    pub kind: ActionKind,
    pub params: Vec<Option<u64>>,
    pub act: Act,
}

pub fn decode_match(info: &TableInfo, matches: &[p4::FieldMatch]) -> RtResult<MatchKey> {
    let mut vals = vec![0u64; info.fields.len()];
    let mut seen = HashSet::new();
    let mut prefix_len = 0u32;
    let mut lpm_given = false;
    for m in matches {
        let Some(pos) = info.fields.iter().position(|f| f.id == m.field_id) else {
            return Err(invalid(format!(
                "unknown match field id {} for table {}",
                m.field_id, info.name
            )));
        };
        if !seen.insert(m.field_id) {
            return Err(invalid(format!(
                "match field id {} given twice",
                m.field_id
            )));
        }
        let f = &info.fields[pos];
        match (&m.field_match_type, f.kind) {
            (Some(FieldMatchType::Exact(e)), MatchKind::Exact) => {
                vals[pos] = decode(&e.value, f.bits, format_args!("match field {}", m.field_id))?;
            }
            (Some(FieldMatchType::Lpm(l)), MatchKind::Lpm) => {
                if l.prefix_len < 0 {
                    return Err(invalid("Prefix length cannot be < 0"));
                }
                if l.prefix_len as u32 > f.bits {
                    return Err(invalid("Prefix length cannot be > bitwidth"));
                }
                if l.prefix_len == 0 {
                    return Err(invalid(
                        "invalid representation of a don't-care LPM match: omit the field",
                    ));
                }
                let v = decode(&l.value, f.bits, format_args!("match field {}", m.field_id))?;
                let plen = l.prefix_len as u32;
                if v as u32 & !lpm::mask(plen) != 0 {
                    return Err(invalid(
                        "invalid LPM value: bits beyond the prefix length must be 0",
                    ));
                }
                vals[pos] = v;
                prefix_len = plen;
                lpm_given = true;
            }
            (None, _) => return Err(invalid(format!("match field {} has no value", m.field_id))),
            _ => {
                return Err(invalid(format!(
                    "match field {} must be a {:?} match",
                    m.field_id, f.kind
                )))
            }
        }
    }
    for (f, _) in info.fields.iter().zip(&vals) {
        if f.kind == MatchKind::Exact && !seen.contains(&f.id) {
            return Err(invalid(format!(
                "missing exact match field {} for table {}",
                f.id, info.name
            )));
        }
    }
    let key = if info.is_lpm() {
        let _ = lpm_given;
        KeyRepr::Lpm {
            prefix: vals[0] as u32,
            len: prefix_len,
        }
    } else {
        KeyRepr::Exact(pack_key(info, &vals))
    };
    Ok(MatchKey {
        vals,
        prefix_len,
        key,
    })
}

pub fn decode_action(
    program: &Program,
    info: &TableInfo,
    action: Option<&p4::TableAction>,
    for_default: bool,
) -> RtResult<ActionCall> {
    let a = match action.and_then(|a| a.r#type.as_ref()) {
        Some(p4::table_action::Type::Action(a)) => a,
        Some(_) => {
            return Err(invalid(
                "only direct actions are supported (table has no action profile)",
            ))
        }
        None => return Err(invalid("table entry has no action")),
    };
    let Some(ainfo) = program.actions.get(&a.action_id) else {
        return Err(invalid(format!("unknown action id {:#x}", a.action_id)));
    };
    let Some(scope) = info.actions.get(&a.action_id) else {
        return Err(invalid(format!(
            "action {} is not an action of table {}",
            ainfo.name, info.name
        )));
    };
    match (scope, for_default) {
        (Scope::DefaultOnly, false) => {
            return Err(rt(
                tonic::Code::PermissionDenied,
                format!(
                    "action {} can only be the default action of table {}",
                    ainfo.name, info.name
                ),
            ))
        }
        (Scope::TableOnly, true) => {
            return Err(invalid(format!(
                "action {} cannot be the default action of table {}",
                ainfo.name, info.name
            )))
        }
        _ => {}
    }
    let mut params: Vec<Option<u64>> = vec![None; ainfo.params.len()];
    let mut seen = HashSet::new();
    for p in &a.params {
        let Some(pos) = ainfo
            .params
            .iter()
            .position(|pi| pi.as_ref().map(|x| x.id) == Some(p.param_id))
        else {
            return Err(invalid(format!(
                "unknown parameter id {} for action {}",
                p.param_id, ainfo.name
            )));
        };
        if !seen.insert(p.param_id) {
            return Err(invalid(format!("parameter id {} given twice", p.param_id)));
        }
        let bits = ainfo.params[pos].as_ref().map(|x| x.bits).unwrap_or(64);
        let v = decode(
            &p.value,
            bits,
            format_args!("action {} parameter {}", ainfo.name, p.param_id),
        )?;
        params[pos] = Some(v);
    }
    for (i, pi) in ainfo.params.iter().enumerate() {
        if pi.is_some() && params[i].is_none() {
            return Err(invalid(format!(
                "missing parameter {} of action {}",
                pi.as_ref().map(|x| x.id).unwrap_or(0),
                ainfo.name
            )));
        }
    }
    Ok(ActionCall {
        action_id: a.action_id,
        kind: ainfo.kind,
        act: Act::build(ainfo.kind, &params),
        params,
    })
}

pub fn encode_action(program: &Program, action_id: u32, params: &[Option<u64>]) -> p4::TableAction {
    let ps = program
        .actions
        .get(&action_id)
        .map(|a| {
            a.params
                .iter()
                .zip(params)
                .filter_map(|(pi, v)| {
                    Some(p4::action::Param {
                        param_id: pi.as_ref()?.id,
                        value: bytes::encode((*v)?),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    p4::TableAction {
        r#type: Some(p4::table_action::Type::Action(p4::Action {
            action_id,
            params: ps,
        })),
    }
}

/// The canonical `TableEntry` of an installed entry (for Read and idle notifications).
pub fn encode_entry(program: &Program, info: &TableInfo, e: &Entry) -> p4::TableEntry {
    let matches = info
        .fields
        .iter()
        .zip(&e.match_vals)
        .map(|(f, v)| p4::FieldMatch {
            field_id: f.id,
            field_match_type: Some(match f.kind {
                MatchKind::Exact => FieldMatchType::Exact(p4::field_match::Exact {
                    value: bytes::encode(*v),
                }),
                MatchKind::Lpm => FieldMatchType::Lpm(p4::field_match::Lpm {
                    value: bytes::encode(*v),
                    prefix_len: e.prefix_len as i32,
                }),
            }),
        })
        // A zero-length prefix is "don't care": omitted.
        .filter(
            |m| !matches!(&m.field_match_type, Some(FieldMatchType::Lpm(l)) if l.prefix_len == 0),
        )
        .collect();
    p4::TableEntry {
        table_id: info.id,
        r#match: matches,
        action: Some(encode_action(program, e.action_id, &e.params)),
        idle_timeout_ns: e.idle_timeout_ns,
        metadata: e.metadata.clone(),
        ..Default::default()
    }
}
