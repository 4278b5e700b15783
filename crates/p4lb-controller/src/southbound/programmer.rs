//! Table programming by difference: the controller remembers what it believes the
//! switch holds for the state-derived tables, and each change writes only the
//! inserts, modifies and deletes that turn it into the desired set.
//!
//! The desired set is kept part by part ([`DesiredIndex`]): while the installed view is
//! known to equal the desired set of the previous state, a change compares only the
//! keys its parts touched, so a switchover costs the migrating endpoint's entries
//! whatever the number of services and their Maglev slots. After a failed write, a
//! re-read of the switch or a pipeline push, the next change compares everything.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use p4lb_proto::p4runtime::{entity, update, Entity, TableEntry, Update};

use crate::desired::{entry_key, same_action, DesiredIndex, EntryKey, Shape};
use crate::entries::STATIC_TABLES;
use crate::error::{Error, Result};
use crate::southbound::session::SwitchSession;
use crate::state::State;

/// Builds an Update of a table entry.
pub fn table_update(ty: update::Type, e: TableEntry) -> Update {
    Update {
        r#type: ty as i32,
        entity: Some(Entity {
            entity: Some(entity::Entity::TableEntry(e)),
        }),
    }
}

/// The controller's view of the switch's state-derived tables.
#[derive(Debug, Default)]
pub struct Programmer {
    installed: HashMap<EntryKey, TableEntry>,
    batch: usize,
    index: DesiredIndex,
    /// `installed` equals the index's entries (as of its last sync).
    in_step: bool,
}

/// What [`Programmer::apply_state`] did.
#[derive(Debug, Clone, Copy)]
pub struct Programmed {
    /// Updates written.
    pub writes: usize,
    /// Time spent bringing the desired entries to the state.
    pub desired: Duration,
}

impl Programmer {
    pub fn new(batch: usize) -> Programmer {
        Programmer {
            installed: HashMap::new(),
            batch: batch.max(1),
            index: DesiredIndex::default(),
            in_step: false,
        }
    }

    /// Number of entries believed installed.
    pub fn len(&self) -> usize {
        self.installed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.installed.is_empty()
    }

    /// Forgets everything (the switch was reset by a pipeline push).
    pub fn clear(&mut self) {
        self.installed.clear();
        self.in_step = false;
    }

    /// Entries believed installed (for DumpTables).
    pub fn entries(&self) -> impl Iterator<Item = &TableEntry> {
        self.installed.values()
    }

    /// The difference to `desired`, entry by entry: (key, update type, entry; the key
    /// fields only for a delete).
    fn diff(
        &self,
        desired: &BTreeMap<EntryKey, TableEntry>,
    ) -> Vec<(EntryKey, update::Type, TableEntry)> {
        let mut out = Vec::new();
        for (k, e) in &self.installed {
            if !desired.contains_key(k) {
                out.push((k.clone(), update::Type::Delete, key_only(e)));
            }
        }
        for (k, e) in desired {
            match self.installed.get(k) {
                None => out.push((k.clone(), update::Type::Insert, e.clone())),
                Some(cur) if !same_action(cur, e) => {
                    out.push((k.clone(), update::Type::Modify, e.clone()))
                }
                Some(_) => {}
            }
        }
        out
    }

    /// The difference to the index's entry of each key in `keys` (valid only while
    /// the installed view is in step with the index).
    fn diff_keys(&self, keys: &[EntryKey]) -> Vec<(EntryKey, update::Type, TableEntry)> {
        let mut out = Vec::new();
        for k in keys {
            match (self.index.get(k), self.installed.get(k)) {
                (None, Some(cur)) => out.push((k.clone(), update::Type::Delete, key_only(cur))),
                (Some(e), None) => out.push((k.clone(), update::Type::Insert, e.clone())),
                (Some(e), Some(cur)) if !same_action(cur, e) => {
                    out.push((k.clone(), update::Type::Modify, e.clone()))
                }
                _ => {}
            }
        }
        // Deletes first, as the full difference orders them.
        out.sort_by_key(|(_, ty, _)| *ty != update::Type::Delete);
        out
    }

    /// Writes the entries `state` implies: only the difference to what is installed,
    /// found among the keys the change touched while the installed view is in step
    /// (see the module doc), else among all of them. On failure the installed view
    /// is re-read from the switch (when reachable).
    pub async fn apply_state(
        &mut self,
        link: &SwitchSession,
        state: &State,
        shape: Shape,
    ) -> Result<Programmed> {
        let t = Instant::now();
        let touched = self.index.sync(state, shape);
        let changes = if self.in_step {
            self.diff_keys(&touched)
        } else {
            self.diff(&self.index.to_map())
        };
        let desired = t.elapsed();
        let writes = self.write(link, changes).await?;
        self.in_step = true;
        Ok(Programmed { writes, desired })
    }

    async fn write(
        &mut self,
        link: &SwitchSession,
        changes: Vec<(EntryKey, update::Type, TableEntry)>,
    ) -> Result<usize> {
        let n = changes.len();
        for chunk in changes.chunks(self.batch) {
            let ups: Vec<Update> = chunk
                .iter()
                .map(|(_, ty, e)| table_update(*ty, e.clone()))
                .collect();
            if let Err(f) = link.write(ups).await {
                self.in_step = false;
                let err: Error = f.into();
                if link.is_connected() {
                    if let Err(e) = self.resync(link).await {
                        tracing::warn!(error = %e, "re-reading switch tables after a failed write");
                    }
                }
                return Err(err);
            }
        }
        for (k, ty, e) in changes {
            if ty == update::Type::Delete {
                self.installed.remove(&k);
            } else {
                self.installed.insert(k, e);
            }
        }
        Ok(n)
    }

    /// Replaces the installed view with what the switch reports.
    pub async fn resync(&mut self, link: &SwitchSession) -> Result<()> {
        let mut fresh = HashMap::new();
        for t in STATIC_TABLES {
            for mut e in link.read_table(*t, false).await? {
                p4lb_p4::entries::canonicalize(&mut e);
                e.counter_data = None;
                e.time_since_last_hit = None;
                fresh.insert(entry_key(&e), e);
            }
        }
        self.installed = fresh;
        self.in_step = false;
        Ok(())
    }
}

/// An entry reduced to its key (for deletes).
pub fn key_only(e: &TableEntry) -> TableEntry {
    TableEntry {
        table_id: e.table_id,
        r#match: e.r#match.clone(),
        priority: e.priority,
        ..Default::default()
    }
}
