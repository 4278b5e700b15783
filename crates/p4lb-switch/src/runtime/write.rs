//! Write: INSERT / MODIFY / DELETE of table entries (default entries included), counter
//! and register cells, and the digest configuration.

use std::sync::atomic::{AtomicBool, AtomicU64};

use p4lb_proto::p4runtime as p4;
use p4lb_proto::p4runtime::update::Type as UpdateType;
use tonic::Code;

use super::device::Installed;
use super::entry::{decode_action, decode_match, KeyRepr};
use super::status::{invalid, rt, RtResult};
use crate::limits::MAX_ENTRY_METADATA_BYTES;
use crate::program::spec::TableKind;
use crate::program::Act;
use crate::tables::{DefaultEntry, Entry};

pub fn apply_update(inst: &Installed, u: &p4::Update) -> RtResult<()> {
    let ty = UpdateType::try_from(u.r#type).unwrap_or(UpdateType::Unspecified);
    if ty == UpdateType::Unspecified {
        return Err(invalid("Update type is not set"));
    }
    let Some(entity) = u.entity.as_ref().and_then(|e| e.entity.as_ref()) else {
        return Err(invalid("update has no entity"));
    };
    use p4::entity::Entity;
    match entity {
        Entity::TableEntry(te) => table_write(inst, ty, te),
        Entity::CounterEntry(ce) => counter_write(inst, ty, ce),
        Entity::RegisterEntry(re) => register_write(inst, ty, re),
        Entity::DigestEntry(de) => digest_write(inst, ty, de),
        other => Err(super::unimplemented::write_error(
            super::unimplemented::kind(other).unwrap_or("these entities"),
        )),
    }
}

/// One Write RPC: every update in order, then, if one of them changed `backends` or
/// `ipv4_routes` (a lock may be lifted), one release of the held frames (crate::hold), so
/// they run again against the whole batch, never against half of it.
pub fn apply_batch(inst: &Installed, updates: &[p4::Update]) -> Vec<RtResult<()>> {
    let results: Vec<RtResult<()>> = updates.iter().map(|u| apply_update(inst, u)).collect();
    let releases = updates.iter().zip(&results).any(|(u, r)| {
        r.is_ok()
            && matches!(
                u.entity.as_ref().and_then(|e| e.entity.as_ref()),
                Some(p4::entity::Entity::TableEntry(te)) if may_lock(inst, te.table_id)
            )
    });
    if releases {
        inst.dp.hold.release();
    }
    results
}

/// `backends` and `ipv4_routes`: the tables whose actions lock.
fn may_lock(inst: &Installed, table_id: u32) -> bool {
    inst.program.table_by_id(table_id).is_some_and(|info| {
        [TableKind::Backends, TableKind::Ipv4Routes]
            .iter()
            .any(|k| k.index() == info.index)
    })
}

fn table_write(inst: &Installed, ty: UpdateType, te: &p4::TableEntry) -> RtResult<()> {
    let program = &inst.program;
    let Some(info) = program.table_by_id(te.table_id) else {
        return Err(invalid(format!(
            "Invalid P4 id: unknown table id {:#x}",
            te.table_id
        )));
    };
    let table = &inst.dp.tables[info.index];
    if te.time_since_last_hit.is_some() {
        return Err(invalid(
            "time_since_last_hit must not be set in a WriteRequest",
        ));
    }
    if te.is_default_action {
        return default_write(inst, ty, te);
    }
    if te.priority != 0 {
        return Err(invalid(format!(
            "priority must be 0: table {} has no ternary/range/optional match",
            info.name
        )));
    }
    if te.idle_timeout_ns < 0 {
        return Err(invalid("idle_timeout_ns must not be negative"));
    }
    if te.idle_timeout_ns > 0 && !info.idle_timeout {
        return Err(invalid(format!(
            "table {} does not support idle timeout",
            info.name
        )));
    }
    let key = decode_match(info, &te.r#match)?;
    let now = inst.dp.now_ns();
    match ty {
        UpdateType::Insert | UpdateType::Modify => {
            if te.metadata.len() > MAX_ENTRY_METADATA_BYTES {
                return Err(invalid(format!(
                    "entry metadata is {} bytes; this switch stores at most {MAX_ENTRY_METADATA_BYTES}",
                    te.metadata.len()
                )));
            }
            let call = decode_action(program, info, te.action.as_ref(), false)?;
            let entry = Entry {
                act: call.act,
                action_id: call.action_id,
                params: call.params,
                match_vals: key.vals.clone(),
                prefix_len: key.prefix_len,
                metadata: te.metadata.clone(),
                idle_timeout_ns: te.idle_timeout_ns,
                last_hit: AtomicU64::new(now),
                idle_notified: AtomicBool::new(false),
            };
            let mut d = table.data.write();
            let exists = match key.key {
                KeyRepr::Exact(k) => d.exact.contains_key(&k),
                KeyRepr::Lpm { prefix, len } => d.lpm.get(prefix, len).is_some(),
            };
            if ty == UpdateType::Insert {
                if exists {
                    return Err(rt(
                        Code::AlreadyExists,
                        "Match entry exists, use MODIFY if you wish to change action",
                    ));
                }
                if d.len() as u64 >= info.size {
                    return Err(rt(
                        Code::ResourceExhausted,
                        format!("table {} is full ({} entries)", info.name, info.size),
                    ));
                }
            } else if !exists {
                return Err(rt(Code::NotFound, "Cannot find match entry"));
            }
            match key.key {
                KeyRepr::Exact(k) => {
                    d.exact.insert(k, entry);
                }
                KeyRepr::Lpm { prefix, len } => {
                    d.lpm.insert(prefix, len, entry);
                }
            }
            Ok(())
        }
        UpdateType::Delete => {
            let mut d = table.data.write();
            let removed = match key.key {
                KeyRepr::Exact(k) => d.exact.remove(&k).is_some(),
                KeyRepr::Lpm { prefix, len } => d.lpm.remove(prefix, len).is_some(),
            };
            if removed {
                Ok(())
            } else {
                Err(rt(Code::NotFound, "Cannot find match entry"))
            }
        }
        UpdateType::Unspecified => Err(invalid("Update type is not set")),
    }
}

fn default_write(inst: &Installed, ty: UpdateType, te: &p4::TableEntry) -> RtResult<()> {
    let program = &inst.program;
    let Some(info) = program.table_by_id(te.table_id) else {
        return Err(invalid("Invalid P4 id"));
    };
    if ty != UpdateType::Modify {
        return Err(invalid(
            "the default entry can only be modified (INSERT and DELETE are invalid)",
        ));
    }
    if !te.r#match.is_empty() {
        return Err(invalid("a default entry must not have match fields"));
    }
    if info.const_default {
        return Err(rt(
            Code::PermissionDenied,
            format!("table {} has a const default action", info.name),
        ));
    }
    let table = &inst.dp.tables[info.index];
    let default = match te.action.as_ref() {
        None => {
            // Reset to the P4 program's initial default action.
            let (id, vals) = &info.default_action;
            let kind = program.actions.get(id).map(|a| a.kind);
            let params: Vec<Option<u64>> = vals.iter().map(|v| Some(*v)).collect();
            DefaultEntry {
                act: kind.map(|k| Act::build(k, &params)).unwrap_or(Act::Nop),
                action_id: *id,
                params,
            }
        }
        Some(_) => {
            let call = decode_action(program, info, te.action.as_ref(), true)?;
            DefaultEntry {
                act: call.act,
                action_id: call.action_id,
                params: call.params,
            }
        }
    };
    table.data.write().default = default;
    Ok(())
}

fn counter_write(inst: &Installed, ty: UpdateType, ce: &p4::CounterEntry) -> RtResult<()> {
    if ty != UpdateType::Modify {
        return Err(invalid("counter entries can only be modified"));
    }
    let Some(info) = inst.program.counter_by_id(ce.counter_id) else {
        return Err(invalid(format!(
            "Invalid P4 id: unknown counter id {:#x}",
            ce.counter_id
        )));
    };
    let counter = inst.dp.counter(info.kind);
    let data = ce.data.unwrap_or_default();
    if data.packet_count < 0 || data.byte_count < 0 {
        return Err(invalid("counter values must not be negative"));
    }
    match &ce.index {
        Some(ix) if ix.index < 0 => {
            return Err(invalid(format!("counter index {} is negative", ix.index)));
        }
        Some(ix) => {
            if !counter.set(
                ix.index as usize,
                data.packet_count as u64,
                data.byte_count as u64,
            ) {
                return Err(rt(
                    Code::OutOfRange,
                    format!("index {} out of range for counter {}", ix.index, info.name),
                ));
            }
        }
        None => {
            for i in 0..counter.size() {
                counter.set(i, data.packet_count as u64, data.byte_count as u64);
            }
        }
    }
    Ok(())
}

fn register_write(inst: &Installed, ty: UpdateType, re: &p4::RegisterEntry) -> RtResult<()> {
    if ty != UpdateType::Modify {
        return Err(invalid("register entries can only be modified"));
    }
    let Some(reg) = inst.dp.register_by_id(re.register_id) else {
        return Err(invalid(format!(
            "Invalid P4 id: unknown register id {:#x}",
            re.register_id
        )));
    };
    let value = match re.data.as_ref().and_then(|d| d.data.as_ref()) {
        Some(p4::p4_data::Data::Bitstring(b)) => {
            super::value::decode(b, reg.bits, "register value")?
        }
        _ => return Err(invalid("register data must be a bitstring")),
    };
    match &re.index {
        Some(ix) if ix.index < 0 => {
            return Err(invalid(format!("register index {} is negative", ix.index)));
        }
        Some(ix) => {
            if ix.index as usize >= reg.size() {
                return Err(rt(
                    Code::OutOfRange,
                    format!("register index {} out of range", ix.index),
                ));
            }
            reg.write(ix.index as usize, value as u32);
        }
        None => {
            for i in 0..reg.size() {
                reg.write(i, value as u32);
            }
        }
    }
    Ok(())
}

fn digest_write(inst: &Installed, ty: UpdateType, de: &p4::DigestEntry) -> RtResult<()> {
    if de.digest_id != inst.digest.digest_id {
        return Err(invalid(format!(
            "Invalid P4 id: unknown digest id {:#x}",
            de.digest_id
        )));
    }
    let mut cfg = inst.digest.config.lock();
    match ty {
        UpdateType::Insert | UpdateType::Modify => {
            if ty == UpdateType::Insert && cfg.is_some() {
                return Err(rt(
                    Code::AlreadyExists,
                    format!("Digest {} already configured", de.digest_id),
                ));
            }
            if ty == UpdateType::Modify && cfg.is_none() {
                return Err(rt(
                    Code::NotFound,
                    format!("Digest {} not configured", de.digest_id),
                ));
            }
            let Some(c) = de.config else {
                return Err(invalid("DigestEntry needs a config"));
            };
            if c.max_timeout_ns < 0 || c.ack_timeout_ns < 0 || c.max_list_size < 0 {
                return Err(invalid("DigestEntry config values must not be negative"));
            }
            inst.digest.set_config(Some(c));
            inst.dp
                .digests
                .enabled
                .store(true, std::sync::atomic::Ordering::Relaxed);
            *cfg = Some(*de);
            Ok(())
        }
        UpdateType::Delete => {
            if cfg.is_none() {
                return Err(rt(
                    Code::NotFound,
                    format!("Digest {} not configured", de.digest_id),
                ));
            }
            inst.dp
                .digests
                .enabled
                .store(false, std::sync::atomic::Ordering::Relaxed);
            inst.digest.set_config(None);
            *cfg = None;
            Ok(())
        }
        UpdateType::Unspecified => Err(invalid("Update type is not set")),
    }
}
