//! SetForwardingPipelineConfig: binds a P4Info to the pipeline contract of `p4lb_p4` by name,
//! checking widths and match kinds, and keeps the P4Info IDs for the runtime. Every table
//! of [`p4lb_p4::tables::ALL`] is bound (those the data path applies first, in
//! [`TableKind`] order), every action of [`p4lb_p4::actions::ALL`], the counters of
//! [`CounterKind`], the transit registers of [`RegisterKind`] and the `conn_learn` digest.

use std::collections::HashMap;

use p4lb_p4::schema as contract;
use p4lb_p4::{externs, short_name as short};
use p4lb_proto::p4info::{self, match_field, p4_data_type_spec, P4Info};

use super::spec::{ActionKind, CounterKind, MatchKind, RegisterKind, TableKind, OPTIONAL_PARAMS};

#[derive(Debug, thiserror::Error)]
#[error("P4Info is not the p4lb program: {0}")]
pub struct BindError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, BindError> {
    Err(BindError(msg.into()))
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
    /// The contract's ID of this action (equal to `id` unless the P4Info renumbered it).
    pub contract_id: u32,
    pub name: String,
    /// In the contract's parameter order; `None` for an absent optional parameter.
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
    /// The data-path table; `None` for a table of the contract the data path does not apply.
    pub kind: Option<TableKind>,
    /// Position in [`Program::tables`] (and in the data plane's tables).
    pub index: usize,
    pub id: u32,
    pub name: String,
    /// In the contract's key order (the key layout).
    pub fields: Vec<FieldInfo>,
    /// Action id -> scope.
    pub actions: HashMap<u32, Scope>,
    pub const_default: bool,
    /// Initial default action: id and its parameter values (contract order).
    pub default_action: (u32, Vec<u64>),
    pub idle_timeout: bool,
    /// Most entries the table holds: its P4Info size, or [`crate::limits::MAX_TABLE_ENTRIES`]
    /// when that is unspecified.
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
    pub kind: RegisterKind,
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
    /// The tables the data path applies first, indexed by [`TableKind::index`], then the
    /// other tables of the contract.
    pub tables: Vec<TableInfo>,
    table_ids: HashMap<u32, usize>,
    pub actions: HashMap<u32, ActionInfo>,
    action_ids: HashMap<ActionKind, u32>,
    /// Indexed by [`CounterKind`] as usize.
    pub counters: Vec<CounterInfo>,
    /// Indexed by [`RegisterKind`] as usize; all of the same size.
    pub registers: Vec<RegisterInfo>,
    pub digest: DigestInfo,
}

impl Program {
    pub fn table(&self, kind: TableKind) -> &TableInfo {
        &self.tables[kind.index()]
    }

    pub fn table_by_id(&self, id: u32) -> Option<&TableInfo> {
        self.table_ids.get(&id).map(|i| &self.tables[*i])
    }

    pub fn action_id(&self, kind: ActionKind) -> Option<u32> {
        self.action_ids.get(&kind).copied()
    }

    pub fn counter_by_id(&self, id: u32) -> Option<&CounterInfo> {
        self.counters.iter().find(|c| c.id == id)
    }

    pub fn register_by_id(&self, id: u32) -> Option<&RegisterInfo> {
        self.registers.iter().find(|r| r.id == id)
    }

    /// Binds `p4info` by name; every object of the contract must be present and well-typed.
    pub fn bind(p4info: P4Info) -> Result<Program, BindError> {
        let actions = bind_actions(&p4info)?;
        let action_ids: HashMap<ActionKind, u32> =
            actions.values().map(|a| (a.kind, a.id)).collect();
        // The applied tables first, in TableKind order, then the rest of the contract.
        let applied = TableKind::ALL.iter().map(|k| k.info());
        let others = p4lb_p4::tables::ALL
            .iter()
            .filter(|t| TableKind::of(t.id).is_none());
        let mut tables = Vec::with_capacity(p4lb_p4::tables::ALL.len());
        let mut table_ids = HashMap::new();
        for (index, ts) in applied.chain(others).enumerate() {
            let t = bind_table(&p4info, ts, index, &actions)?;
            table_ids.insert(t.id, index);
            tables.push(t);
        }
        let mut counters = Vec::new();
        for kind in CounterKind::ALL {
            let name = kind.info().name;
            let c = p4info
                .counters
                .iter()
                .find(|c| preamble_name(&c.preamble) == name)
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
                kind,
                id,
                name: name.to_string(),
                size: c.size as u64,
            });
        }
        let registers = bind_registers(&p4info)?;
        let digest = bind_digest(&p4info)?;
        Ok(Program {
            p4info,
            tables,
            table_ids,
            actions,
            action_ids,
            counters,
            registers,
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
    for spec in p4lb_p4::actions::ALL {
        let name = short(spec.name);
        let found: Vec<&p4info::Action> = p4info
            .actions
            .iter()
            .filter(|a| short(preamble_name(&a.preamble)) == name)
            .collect();
        let a = match found.as_slice() {
            [a] => *a,
            [] => return err(format!("action `{name}` missing")),
            _ => return err(format!("action `{name}` is defined more than once")),
        };
        let id = preamble_id(&a.preamble);
        if id == 0 {
            return err(format!("action `{name}` has no id"));
        }
        let mut params = Vec::new();
        for ps in spec.params {
            match a.params.iter().find(|p| p.name == ps.name) {
                Some(p) => {
                    if p.bitwidth as u32 != ps.bitwidth {
                        return err(format!(
                            "action `{name}` parameter `{}` is {} bits wide, expected {}",
                            ps.name, p.bitwidth, ps.bitwidth
                        ));
                    }
                    params.push(Some(ParamInfo {
                        id: p.id,
                        bits: ps.bitwidth,
                    }));
                }
                None if OPTIONAL_PARAMS.contains(&(spec.id, ps.id)) => params.push(None),
                None => return err(format!("action `{name}` lacks parameter `{}`", ps.name)),
            }
        }
        if let Some(extra) = a
            .params
            .iter()
            .find(|p| !spec.params.iter().any(|ps| ps.name == p.name))
        {
            return err(format!(
                "action `{name}` has unexpected parameter `{}`",
                extra.name
            ));
        }
        out.insert(
            id,
            ActionInfo {
                id,
                kind: ActionKind::of(spec.id),
                contract_id: spec.id,
                name: preamble_name(&a.preamble).to_string(),
                params,
            },
        );
    }
    Ok(out)
}

fn bind_table(
    p4info: &P4Info,
    ts: &contract::TableInfo,
    index: usize,
    actions: &HashMap<u32, ActionInfo>,
) -> Result<TableInfo, BindError> {
    let t = p4info
        .tables
        .iter()
        .find(|t| preamble_name(&t.preamble) == ts.name)
        .ok_or_else(|| BindError(format!("table `{}` missing", ts.name)))?;
    let id = preamble_id(&t.preamble);
    let mut fields = Vec::new();
    for fs in ts.match_fields {
        let mf = t
            .match_fields
            .iter()
            .find(|m| short(&m.name) == short(fs.name))
            .ok_or_else(|| {
                BindError(format!(
                    "table `{}` lacks match field `{}`",
                    ts.name,
                    short(fs.name)
                ))
            })?;
        if mf.bitwidth as u32 != fs.bitwidth {
            return err(format!(
                "table `{}` match field `{}` is {} bits wide, expected {}",
                ts.name, mf.name, mf.bitwidth, fs.bitwidth
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
            bits: fs.bitwidth,
            kind: fs.kind,
        });
    }
    if t.match_fields.len() != ts.match_fields.len() {
        return err(format!(
            "table `{}` has {} match fields, expected {}",
            ts.name,
            t.match_fields.len(),
            ts.match_fields.len()
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
        if ts.action_ref(a.contract_id).is_none() {
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
    let bound_id = |contract_id: u32| {
        actions
            .values()
            .find(|a| a.contract_id == contract_id)
            .map(|a| a.id)
    };
    for r in ts.actions {
        let Some(aid) = bound_id(r.action_id) else {
            return err(format!("action {:#x} missing", r.action_id));
        };
        if !table_actions.contains_key(&aid) {
            return err(format!(
                "table `{}` lacks action `{}`",
                ts.name,
                p4lb_p4::actions::by_id(r.action_id)
                    .map(|a| short(a.name))
                    .unwrap_or("?")
            ));
        }
    }
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
                    .map(|arg| p4lb_p4::bytes::to_u64(&arg.value))
                    .unwrap_or(0),
                None => 0,
            };
            let _ = i;
            vals.push(v);
        }
        (init.action_id, vals)
    } else {
        let id = bound_id(ts.const_default_action_id)
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
        kind: TableKind::of(ts.id),
        index,
        id,
        name: ts.name.to_string(),
        fields,
        actions: table_actions,
        const_default: t.const_default_action_id != 0,
        default_action: (default_id, default_params),
        idle_timeout: t.idle_timeout_behavior
            == p4info::table::IdleTimeoutBehavior::NotifyControl as i32,
        size: crate::limits::table_capacity(t.size),
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

/// Binds every transit register; they are indexed alike, so they must have one size.
fn bind_registers(p4info: &P4Info) -> Result<Vec<RegisterInfo>, BindError> {
    let mut out: Vec<RegisterInfo> = Vec::with_capacity(RegisterKind::ALL.len());
    for kind in RegisterKind::ALL {
        let (name, want) = (kind.info().name, kind.info().bitwidth);
        let r = p4info
            .registers
            .iter()
            .find(|r| preamble_name(&r.preamble) == name)
            .ok_or_else(|| BindError(format!("register `{name}` missing")))?;
        let bits = bitstring_width(&r.type_spec).unwrap_or(0);
        if bits != want {
            return err(format!(
                "register `{name}` must hold bit<{want}>, found width {bits}"
            ));
        }
        if r.size <= 0 {
            return err(format!("register `{name}` has size {}", r.size));
        }
        if let Some(first) = out.first() {
            if first.size != r.size as u64 {
                return err(format!(
                    "register `{name}` has size {}, the transit registers must all have {}",
                    r.size, first.size
                ));
            }
        }
        out.push(RegisterInfo {
            kind,
            id: preamble_id(&r.preamble),
            size: r.size as u64,
            bits,
        });
    }
    Ok(out)
}

fn bind_digest(p4info: &P4Info) -> Result<DigestInfo, BindError> {
    const DIGEST: &str = externs::conn_learn::NAME;
    let fields = externs::conn_learn::INFO.fields;
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
    if st.members.len() != fields.len() {
        return err(format!(
            "digest struct `{struct_name}` has {} members, expected {}",
            st.members.len(),
            fields.len()
        ));
    }
    for (m, f) in st.members.iter().zip(fields) {
        let (name, bits) = (f.name, f.bitwidth);
        let w = bitstring_width(&m.type_spec).unwrap_or(0);
        if m.name != name || w != bits {
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
