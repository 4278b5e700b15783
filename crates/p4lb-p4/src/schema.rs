//! Shapes used to describe P4Info objects as Rust constants.

/// How a match field is matched (P4Info `MatchField.match_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchKind {
    Exact,
    Lpm,
}

/// One key of a table, in P4Info order (IDs are 1..n in key order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MatchFieldInfo {
    pub id: u32,
    pub name: &'static str,
    pub bitwidth: u32,
    pub kind: MatchKind,
}

/// One parameter of an action (IDs are 1..n in declaration order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ParamInfo {
    pub id: u32,
    pub name: &'static str,
    pub bitwidth: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ActionInfo {
    pub id: u32,
    pub name: &'static str,
    pub params: &'static [ParamInfo],
}

/// Where an action may be used in a table (P4Info `ActionRef.scope`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActionScope {
    /// Entries and the default action.
    TableAndDefault,
    /// Only as the default action (`@defaultonly`): entries using it must be rejected.
    DefaultOnly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ActionRefInfo {
    pub action_id: u32,
    pub scope: ActionScope,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TableInfo {
    pub id: u32,
    pub name: &'static str,
    pub match_fields: &'static [MatchFieldInfo],
    pub actions: &'static [ActionRefInfo],
    /// The default action; it is `const` (the control plane cannot change it).
    pub const_default_action_id: u32,
    pub size: i64,
    /// Entries may carry an idle timeout (P4Info `NOTIFY_CONTROL`).
    pub idle_timeout: bool,
}

impl TableInfo {
    pub fn match_field(&self, id: u32) -> Option<&'static MatchFieldInfo> {
        self.match_fields.iter().find(|m| m.id == id)
    }

    pub fn action_ref(&self, action_id: u32) -> Option<&'static ActionRefInfo> {
        self.actions.iter().find(|a| a.action_id == action_id)
    }
}

/// Indirect counters count both packets and bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CounterInfo {
    pub id: u32,
    pub name: &'static str,
    pub size: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RegisterInfo {
    pub id: u32,
    pub name: &'static str,
    pub size: i32,
    pub bitwidth: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DigestFieldInfo {
    pub name: &'static str,
    pub bitwidth: u32,
}

/// A digest; its data is a struct whose members arrive in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DigestInfo {
    pub id: u32,
    pub name: &'static str,
    pub fields: &'static [DigestFieldInfo],
}
