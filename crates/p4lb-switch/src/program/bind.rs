//! SetForwardingPipelineConfig: binds a P4Info to the pipeline of [`super::spec`] by name,
//! checking widths and match kinds, and keeps the P4Info IDs for the runtime.

use std::collections::HashMap;

use p4lb_proto::p4info::{self, match_field, p4_data_type_spec, P4Info};

use super::spec::{
    self, ActionKind, CounterKind, MatchKind, TableKind, ACTIONS, COUNTERS, DIGEST, DIGEST_FIELDS,
    TABLES, TRANSIT_BITS, TRANSIT_REGISTER,
};

#[derive(Debug, thiserror::Error)]
#[error("P4Info is not the p4lb program: {0}")]
pub struct BindError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, BindError> {
    Err(BindError(msg.into()))
}

/// Last dotted component of a P4 name.
fn short(name: &str) -> &str {
    name.rsplit('.').next().unwrap_or(name)
}

#[derive(Debug, Clone)]
pub struct FieldInfo {
    pub id: u32,
    pub bits: u32,
    pub kind: MatchKind,
}

#[derive(Debug, Clone)]
pub struct ParamInfo {
    pub id: u32,
    pub bits: u32,
}

#[derive(Debug, Clone)]
pub struct ActionInfo {
    pub id: u32,
    pub kind: ActionKind,
    pub name: String,
    /// In the order of [`spec::ActionSpec::params`]; `None` for an absent optional parameter.
    pub params: Vec<Option<ParamInfo>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    TableAndDefault,
    TableOnly,
    DefaultOnly,
}

#[derive(Debug, Clone)]
pub struct TableInfo {
    pub kind: TableKind,
    pub id: u32,
    pub name: String,
    /// In the order of [`spec::TableSpec::fields`] (the key layout).
    pub fields: Vec<FieldInfo>,
    /// Action id -> scope.
    pub actions: HashMap<u32, Scope>,
    pub const_default: bool,
    /// Initial default action: id and its parameter values (contract order).
    pub default_action: (u32, Vec<u64>),
    pub idle_timeout: bool,
    pub size: u64,
}

impl TableInfo {
    pub fn is_lpm(&self) -> bool {
        self.fields.iter().any(|f| f.kind == MatchKind::Lpm)
    }
}

#[derive(Debug, Clone)]
pub struct CounterInfo {
    pub kind: CounterKind,
    pub id: u32,
    pub name: String,
    pub size: u64,
}

#[derive(Debug, Clone)]
pub struct RegisterInfo {
    pub id: u32,
    pub size: u64,
    pub bits: u32,
}

#[derive(Debug, Clone)]
pub struct DigestInfo {
    pub id: u32,
}

/// A P4Info bound to the p4lb pipeline.
#[derive(Debug, Clone)]
pub struct Program {
    pub p4info: P4Info,
    /// Indexed by [`TableKind::index`].
    pub tables: Vec<TableInfo>,
    table_ids: HashMap<u32, TableKind>,
    pub actions: HashMap<u32, ActionInfo>,
    action_ids: HashMap<ActionKind, u32>,
    /// Indexed by [`CounterKind`] as usize.
    pub counters: Vec<CounterInfo>,
    pub register: RegisterInfo,
    pub digest: DigestInfo,
}

impl Program {
    pub fn table(&self, kind: TableKind) -> &TableInfo {
        &self.tables[kind.index()]
    }

    pub fn table_by_id(&self, id: u32) -> Option<&TableInfo> {
        self.table_ids.get(&id).map(|k| self.table(*k))
    }

    pub fn action_id(&self, kind: ActionKind) -> Option<u32> {
        self.action_ids.get(&kind).copied()
    }

    pub fn counter_by_id(&self, id: u32) -> Option<&CounterInfo> {
        self.counters.iter().find(|c| c.id == id)
    }

    /// Binds `p4info` by name; every object of the contract must be present and well-typed.
    pub fn bind(p4info: P4Info) -> Result<Program, BindError> {
        let actions = bind_actions(&p4info)?;
        let action_ids: HashMap<ActionKind, u32> =
            actions.values().map(|a| (a.kind, a.id)).collect();
        let mut tables = Vec::with_capacity(TABLES.len());
        let mut table_ids = HashMap::new();
        for ts in TABLES {
            let t = bind_table(&p4info, ts, &actions)?;
            table_ids.insert(t.id, t.kind);
            tables.push(t);
        }
        // TABLES is in TableKind order.
        for (i, t) in tables.iter().enumerate() {
            if t.kind.index() != i {
                return err("internal table order mismatch");
            }
        }
        let mut counters = Vec::new();
        for (kind, name) in COUNTERS {
            let c = p4info
                .counters
                .iter()
                .find(|c| preamble_name(&c.preamble) == *name)
                .ok_or_else(|| BindError(format!("counter `{name}` missing")))?;
            let id = preamble_id(&c.preamble);
            if c.size <= 0 {
                return err(format!("counter `{name}` has size {}", c.size));
            }
            let unit = c.spec.as_ref().map(|s| s.unit).unwrap_or(0);
            if unit != p4info::counter_spec::Unit::Both as i32 {
                return err(format!(
                    "counter `{name}` must count packets and bytes (unit BOTH)"
                ));
            }
            counters.push(CounterInfo {
                kind: *kind,
                id,
                name: name.to_string(),
                size: c.size as u64,
            });
        }
        let register = bind_register(&p4info)?;
        let digest = bind_digest(&p4info)?;
        Ok(Program {
            p4info,
            tables,
            table_ids,
            actions,
            action_ids,
            counters,
            register,
            digest,
        })
    }
}

fn preamble_name(p: &Option<p4info::Preamble>) -> &str {
    p.as_ref().map(|p| p.name.as_str()).unwrap_or("")
}

fn preamble_id(p: &Option<p4info::Preamble>) -> u32 {
    p.as_ref().map(|p| p.id).unwrap_or(0)
}

fn bind_actions(p4info: &P4Info) -> Result<HashMap<u32, ActionInfo>, BindError> {
    let mut out = HashMap::new();
    for spec in ACTIONS {
        let found: Vec<&p4info::Action> = p4info
            .actions
            .iter()
            .filter(|a| short(preamble_name(&a.preamble)) == spec.name)
            .collect();
        let a = match found.as_slice() {
            [a] => *a,
            [] => return err(format!("action `{}` missing", spec.name)),
            _ => return err(format!("action `{}` is defined more than once", spec.name)),
        };
        let id = preamble_id(&a.preamble);
        if id == 0 {
            return err(format!("action `{}` has no id", spec.name));
        }
        let mut params = Vec::new();
        for ps in spec.params {
            match a.params.iter().find(|p| p.name == ps.name) {
                Some(p) => {
                    if p.bitwidth as u32 != ps.bits {
                        return err(format!(
                            "action `{}` parameter `{}` is {} bits wide, expected {}",
                            spec.name, ps.name, p.bitwidth, ps.bits
                        ));
                    }
                    params.push(Some(ParamInfo {
                        id: p.id,
                        bits: ps.bits,
                    }));
                }
                None if ps.optional => params.push(None),
                None => {
                    return err(format!(
                        "action `{}` lacks parameter `{}`",
                        spec.name, ps.name
                    ))
                }
            }
        }
        if let Some(extra) = a
            .params
            .iter()
            .find(|p| !spec.params.iter().any(|ps| ps.name == p.name))
        {
            return err(format!(
                "action `{}` has unexpected parameter `{}`",
                spec.name, extra.name
            ));
        }
        out.insert(
            id,
            ActionInfo {
                id,
                kind: spec.kind,
                name: preamble_name(&a.preamble).to_string(),
                params,
            },
        );
    }
    Ok(out)
}

fn bind_table(
    p4info: &P4Info,
    ts: &spec::TableSpec,
    actions: &HashMap<u32, ActionInfo>,
) -> Result<TableInfo, BindError> {
    let t = p4info
        .tables
        .iter()
        .find(|t| preamble_name(&t.preamble) == ts.name)
        .ok_or_else(|| BindError(format!("table `{}` missing", ts.name)))?;
    let id = preamble_id(&t.preamble);
    let mut fields = Vec::new();
    for fs in ts.fields {
        let mf = t
            .match_fields
            .iter()
            .find(|m| short(&m.name) == fs.name)
            .ok_or_else(|| {
                BindError(format!(
                    "table `{}` lacks match field `{}`",
                    ts.name, fs.name
                ))
            })?;
        if mf.bitwidth as u32 != fs.bits {
            return err(format!(
                "table `{}` match field `{}` is {} bits wide, expected {}",
                ts.name, mf.name, mf.bitwidth, fs.bits
            ));
        }
        let want = match fs.kind {
            MatchKind::Exact => match_field::MatchType::Exact,
            MatchKind::Lpm => match_field::MatchType::Lpm,
        };
        let got = match &mf.r#match {
            Some(match_field::Match::MatchType(m)) => *m,
            _ => -1,
        };
        if got != want as i32 {
            return err(format!(
                "table `{}` match field `{}` must be {:?}",
                ts.name, mf.name, fs.kind
            ));
        }
        fields.push(FieldInfo {
            id: mf.id,
            bits: fs.bits,
            kind: fs.kind,
        });
    }
    if t.match_fields.len() != ts.fields.len() {
        return err(format!(
            "table `{}` has {} match fields, expected {}",
            ts.name,
            t.match_fields.len(),
            ts.fields.len()
        ));
    }
    let mut table_actions = HashMap::new();
    for r in &t.action_refs {
        let a = actions.get(&r.id).ok_or_else(|| {
            BindError(format!(
                "table `{}` refers to action {:#x} which is not part of the p4lb program",
                ts.name, r.id
            ))
        })?;
        if !ts.actions.contains(&a.kind) {
            return err(format!(
                "table `{}` must not offer action `{}`",
                ts.name, a.name
            ));
        }
        let scope = match r.scope {
            1 => Scope::TableOnly,
            2 => Scope::DefaultOnly,
            _ => Scope::TableAndDefault,
        };
        table_actions.insert(r.id, scope);
    }
    for k in ts.actions {
        let Some(aid) = actions.values().find(|a| a.kind == *k).map(|a| a.id) else {
            return err(format!("action {k:?} missing"));
        };
        if !table_actions.contains_key(&aid) {
            return err(format!(
                "table `{}` lacks action `{}`",
                ts.name,
                spec::action_spec(*k).name
            ));
        }
    }
    let default_kind_id =
        |kind: ActionKind| actions.values().find(|a| a.kind == kind).map(|a| a.id);
    let (default_id, default_params) = if t.const_default_action_id != 0 {
        (t.const_default_action_id, Vec::new())
    } else if let Some(init) = &t.initial_default_action {
        let a = actions.get(&init.action_id).ok_or_else(|| {
            BindError(format!("table `{}` has an unknown default action", ts.name))
        })?;
        let mut vals = Vec::new();
        for (i, p) in a.params.iter().enumerate() {
            let v = match p {
                Some(p) => init
                    .arguments
                    .iter()
                    .find(|arg| arg.param_id == p.id)
                    .map(|arg| crate::bytes::to_u64(&arg.value))
                    .unwrap_or(0),
                None => 0,
            };
            let _ = i;
            vals.push(v);
        }
        (init.action_id, vals)
    } else {
        let id = default_kind_id(ts.default_action)
            .ok_or_else(|| BindError(format!("table `{}` has no default action", ts.name)))?;
        (id, Vec::new())
    };
    let default_action = actions
        .get(&default_id)
        .ok_or_else(|| BindError(format!("table `{}` has an unknown default action", ts.name)))?;
    let mut default_params = default_params;
    default_params.resize(default_action.params.len(), 0);
    if ts.idle_timeout
        && t.idle_timeout_behavior != p4info::table::IdleTimeoutBehavior::NotifyControl as i32
    {
        return err(format!(
            "table `{}` must support idle timeout (NOTIFY_CONTROL)",
            ts.name
        ));
    }
    Ok(TableInfo {
        kind: ts.kind,
        id,
        name: ts.name.to_string(),
        fields,
        actions: table_actions,
        const_default: t.const_default_action_id != 0,
        default_action: (default_id, default_params),
        idle_timeout: t.idle_timeout_behavior
            == p4info::table::IdleTimeoutBehavior::NotifyControl as i32,
        size: t.size.max(0) as u64,
    })
}

fn bitstring_width(ts: &Option<p4info::P4DataTypeSpec>) -> Option<u32> {
    match ts.as_ref()?.type_spec.as_ref()? {
        p4_data_type_spec::TypeSpec::Bitstring(b) => match b.type_spec.as_ref()? {
            p4info::p4_bitstring_like_type_spec::TypeSpec::Bit(bit) => Some(bit.bitwidth as u32),
            _ => None,
        },
        _ => None,
    }
}

fn bind_register(p4info: &P4Info) -> Result<RegisterInfo, BindError> {
    let r = p4info
        .registers
        .iter()
        .find(|r| preamble_name(&r.preamble) == TRANSIT_REGISTER)
        .ok_or_else(|| BindError(format!("register `{TRANSIT_REGISTER}` missing")))?;
    let bits = bitstring_width(&r.type_spec).unwrap_or(0);
    if bits != TRANSIT_BITS {
        return err(format!(
            "register `{TRANSIT_REGISTER}` must hold bit<{TRANSIT_BITS}>, found width {bits}"
        ));
    }
    if r.size <= 0 {
        return err(format!("register `{TRANSIT_REGISTER}` has size {}", r.size));
    }
    Ok(RegisterInfo {
        id: preamble_id(&r.preamble),
        size: r.size as u64,
        bits,
    })
}

fn bind_digest(p4info: &P4Info) -> Result<DigestInfo, BindError> {
    let d = p4info
        .digests
        .iter()
        .find(|d| short(preamble_name(&d.preamble)) == DIGEST)
        .ok_or_else(|| BindError(format!("digest `{DIGEST}` missing")))?;
    let struct_name = match d.type_spec.as_ref().and_then(|t| t.type_spec.as_ref()) {
        Some(p4_data_type_spec::TypeSpec::Struct(n)) => n.name.clone(),
        _ => return err(format!("digest `{DIGEST}` must carry a struct")),
    };
    let st = p4info
        .type_info
        .as_ref()
        .and_then(|ti| ti.structs.get(&struct_name))
        .ok_or_else(|| BindError(format!("struct `{struct_name}` of digest missing")))?;
    if st.members.len() != DIGEST_FIELDS.len() {
        return err(format!(
            "digest struct `{struct_name}` has {} members, expected {}",
            st.members.len(),
            DIGEST_FIELDS.len()
        ));
    }
    for (m, (name, bits)) in st.members.iter().zip(DIGEST_FIELDS) {
        let w = bitstring_width(&m.type_spec).unwrap_or(0);
        if m.name != *name || w != *bits {
            return err(format!(
                "digest struct `{struct_name}` member `{}` (bit<{w}>) where `{name}` (bit<{bits}>) is expected",
                m.name
            ));
        }
    }
    Ok(DigestInfo {
        id: preamble_id(&d.preamble),
    })
}
