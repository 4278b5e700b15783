//! Table programming by difference: the controller remembers what it believes the
//! switch holds for the state-derived tables, and each change writes only the
//! inserts, modifies and deletes that turn it into the desired set.

use std::collections::{BTreeMap, HashMap};

use p4lb_proto::p4runtime::{entity, update, Entity, TableEntry, Update};

use crate::desired::{entry_key, same_action, EntryKey};
use crate::entries::STATIC_TABLES;
use crate::error::{Error, Result};
use crate::southbound::session::SwitchSession;

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
}

impl Programmer {
    pub fn new(batch: usize) -> Programmer {
        Programmer {
            installed: HashMap::new(),
            batch: batch.max(1),
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

    /// Writes the difference to `desired`. On success the installed view is
    /// `desired` (updated entry by entry: a switchover changes a handful of entries
    /// among thousands); on failure it is re-read from the switch (when reachable).
    pub async fn apply(
        &mut self,
        link: &SwitchSession,
        desired: &BTreeMap<EntryKey, TableEntry>,
    ) -> Result<usize> {
        let changes = self.diff(desired);
        let n = changes.len();
        for chunk in changes.chunks(self.batch) {
            let ups: Vec<Update> = chunk
                .iter()
                .map(|(_, ty, e)| table_update(*ty, e.clone()))
                .collect();
            if let Err(f) = link.write(ups).await {
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
