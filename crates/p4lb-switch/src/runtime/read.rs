//! Read: table entries (wildcards: table_id 0 = every table, no match = every entry of the
//! table, `is_default_action` = the default entry), counters (id 0 = all, no index = all
//! cells), the transit registers and the digest configuration.

use std::sync::atomic::Ordering;

use p4lb_proto::p4runtime as p4;
use tonic::Code;

use super::device::Installed;
use super::entry::{decode_match, encode_action, encode_entry, KeyRepr};
use super::status::{invalid, rt, RtResult};
use crate::bytes;
use crate::program::bind::TableInfo;
use crate::tables::{Entry, Table};

pub fn read_entity(
    inst: &Installed,
    entity: &p4::Entity,
    out: &mut Vec<p4::Entity>,
) -> RtResult<()> {
    use p4::entity::Entity as E;
    match entity.entity.as_ref() {
        Some(E::TableEntry(te)) => read_tables(inst, te, out),
        Some(E::CounterEntry(ce)) => read_counters(inst, ce, out),
        Some(E::RegisterEntry(re)) => read_register(inst, re, out),
        Some(E::DigestEntry(de)) => read_digest(inst, de, out),
        Some(other) => {
            // Kinds the program has none of: nothing to report (as BMv2 answers).
            debug_assert!(super::unimplemented::kind(other).is_some());
            Ok(())
        }
        None => Err(invalid("entity not set")),
    }
}

fn wrap(te: p4::TableEntry) -> p4::Entity {
    p4::Entity {
        entity: Some(p4::entity::Entity::TableEntry(te)),
    }
}

fn read_tables(inst: &Installed, req: &p4::TableEntry, out: &mut Vec<p4::Entity>) -> RtResult<()> {
    if req.table_id == 0 {
        if !req.r#match.is_empty() || req.is_default_action {
            return Err(invalid(
                "a read of all tables cannot name match fields or the default entry",
            ));
        }
        for t in &inst.dp.tables {
            if req.time_since_last_hit.is_some() && !t.info.idle_timeout {
                continue;
            }
            read_table(inst, t, req, out)?;
        }
        return Ok(());
    }
    let Some(info) = inst.program.table_by_id(req.table_id) else {
        return Err(invalid(format!(
            "Invalid P4 id: unknown table id {:#x}",
            req.table_id
        )));
    };
    let table = &inst.dp.tables[info.index];
    if req.is_default_action {
        if req.time_since_last_hit.is_some() {
            return Err(invalid(
                "default entries do not support entry ageing: do not set time_since_last_hit",
            ));
        }
        let d = table.data.read();
        out.push(wrap(p4::TableEntry {
            table_id: info.id,
            action: Some(encode_action(
                &inst.program,
                d.default.action_id,
                &d.default.params,
            )),
            is_default_action: true,
            ..Default::default()
        }));
        return Ok(());
    }
    if req.time_since_last_hit.is_some() && !info.idle_timeout {
        return Err(invalid(format!(
            "table {} does not support idle timeout: do not set time_since_last_hit",
            info.name
        )));
    }
    read_table(inst, table, req, out)
}

fn one(inst: &Installed, info: &TableInfo, e: &Entry, req: &p4::TableEntry) -> p4::Entity {
    let mut te = encode_entry(&inst.program, info, e);
    if req.time_since_last_hit.is_some() {
        let now = inst.dp.now_ns();
        te.time_since_last_hit = Some(p4::table_entry::IdleTimeout {
            elapsed_ns: now.saturating_sub(e.last_hit.load(Ordering::Relaxed)) as i64,
        });
    }
    wrap(te)
}

fn read_table(
    inst: &Installed,
    table: &Table,
    req: &p4::TableEntry,
    out: &mut Vec<p4::Entity>,
) -> RtResult<()> {
    let info = &table.info;
    let d = table.data.read();
    if req.r#match.is_empty() {
        for e in d.exact.values().chain(d.lpm.iter()) {
            out.push(one(inst, info, e, req));
        }
        return Ok(());
    }
    let key = decode_match(info, &req.r#match)?;
    let found = match key.key {
        KeyRepr::Exact(k) => d.exact.get(&k),
        KeyRepr::Lpm { prefix, len } => d.lpm.get(prefix, len),
    };
    if let Some(e) = found {
        out.push(one(inst, info, e, req));
    }
    Ok(())
}

fn read_counters(
    inst: &Installed,
    req: &p4::CounterEntry,
    out: &mut Vec<p4::Entity>,
) -> RtResult<()> {
    let counters: Vec<_> = if req.counter_id == 0 {
        inst.dp.counters.iter().collect()
    } else {
        let Some(info) = inst.program.counter_by_id(req.counter_id) else {
            return Err(invalid(format!(
                "Invalid P4 id: unknown counter id {:#x}",
                req.counter_id
            )));
        };
        vec![inst.dp.counter(info.kind)]
    };
    for c in counters {
        let push = |i: usize, out: &mut Vec<p4::Entity>| {
            if let Some((p, b)) = c.get(i) {
                out.push(p4::Entity {
                    entity: Some(p4::entity::Entity::CounterEntry(p4::CounterEntry {
                        counter_id: c.info.id,
                        index: Some(p4::Index { index: i as i64 }),
                        data: Some(p4::CounterData {
                            byte_count: b as i64,
                            packet_count: p as i64,
                        }),
                    })),
                });
            }
        };
        match &req.index {
            Some(ix) if ix.index < 0 => {
                return Err(invalid(format!("counter index {} is negative", ix.index)));
            }
            Some(ix) => {
                if ix.index as usize >= c.size() {
                    return Err(rt(
                        Code::OutOfRange,
                        format!(
                            "index {} out of range for counter {}",
                            ix.index, c.info.name
                        ),
                    ));
                }
                push(ix.index as usize, out);
            }
            None => {
                for i in 0..c.size() {
                    push(i, out);
                }
            }
        }
    }
    Ok(())
}

fn read_register(
    inst: &Installed,
    req: &p4::RegisterEntry,
    out: &mut Vec<p4::Entity>,
) -> RtResult<()> {
    let regs: Vec<&crate::state::Register> = if req.register_id == 0 {
        inst.dp.registers.iter().collect()
    } else {
        match inst.dp.register_by_id(req.register_id) {
            Some(r) => vec![r],
            None => {
                return Err(invalid(format!(
                    "Invalid P4 id: unknown register id {:#x}",
                    req.register_id
                )))
            }
        }
    };
    for reg in regs {
        let push = |i: usize, out: &mut Vec<p4::Entity>| {
            out.push(p4::Entity {
                entity: Some(p4::entity::Entity::RegisterEntry(p4::RegisterEntry {
                    register_id: reg.id,
                    index: Some(p4::Index { index: i as i64 }),
                    data: Some(p4::P4Data {
                        data: Some(p4::p4_data::Data::Bitstring(bytes::encode(u64::from(
                            reg.read(i),
                        )))),
                    }),
                })),
            });
        };
        match &req.index {
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
                push(ix.index as usize, out);
            }
            None => {
                for i in 0..reg.size() {
                    push(i, out);
                }
            }
        }
    }
    Ok(())
}

fn read_digest(inst: &Installed, req: &p4::DigestEntry, out: &mut Vec<p4::Entity>) -> RtResult<()> {
    if req.digest_id != 0 && req.digest_id != inst.digest.digest_id {
        return Err(invalid(format!(
            "Invalid P4 id: unknown digest id {:#x}",
            req.digest_id
        )));
    }
    match *inst.digest.config.lock() {
        Some(de) => {
            out.push(p4::Entity {
                entity: Some(p4::entity::Entity::DigestEntry(de)),
            });
            Ok(())
        }
        None if req.digest_id == 0 => Ok(()),
        None => Err(rt(
            Code::NotFound,
            format!("Digest {} not configured", req.digest_id),
        )),
    }
}
