//! Learned connections on disk (`conns.json` next to `state.json`).
//!
//! Learned connections are soft state: the switch holds them, and a controller
//! that restarts against a running switch reads them back from it. When the
//! switch restarts together with the controller (the embedded software switch
//! lives in the controller process) nothing holds them any more, and an
//! established VIP connection whose reply finds no `conn_reverse` entry leaves
//! the switch untranslated and is reset by the client. So the controller writes
//! a snapshot of them every `conn.persist_interval_ms` when they changed (the
//! table's version moved), and on shutdown; at start, a switch that comes up
//! empty gets them back.
//!
//! Only what a connection was learned as is kept (5-tuple, service, backend);
//! its reverse tuple and VIP are derived again from the state when it is loaded,
//! and a connection whose service or backend is gone is dropped then.
//! Connections learned after the last snapshot before a crash are lost; nothing
//! acknowledged to a caller depends on this file.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use p4lb_p4::FiveTuple;

use crate::conn::{self, ConnRec, ConnTable, Learned};
use crate::error::{Error, Result};
use crate::limits::MAX_CONNS_FILE_BYTES;
use crate::state::State;

pub const CONNS_FILE: &str = "conns.json";
const VERSION: u32 = 1;

/// One learned connection as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredConn {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub sport: u16,
    pub dport: u16,
    pub service_id: u16,
    pub backend_id: u16,
}

impl StoredConn {
    fn of(t: &FiveTuple, c: &ConnRec) -> Self {
        StoredConn {
            src: t.src,
            dst: t.dst,
            protocol: t.protocol,
            sport: t.sport,
            dport: t.dport,
            service_id: c.service_id,
            backend_id: c.backend_id,
        }
    }

    fn learned(&self) -> Learned {
        Learned {
            tuple: FiveTuple {
                src: self.src,
                dst: self.dst,
                protocol: self.protocol,
                sport: self.sport,
                dport: self.dport,
            },
            service_id: self.service_id,
            backend_id: self.backend_id,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct ConnsFile {
    version: u32,
    connections: Vec<StoredConn>,
}

/// What to write: every connection of the table.
pub fn snapshot(t: &ConnTable) -> Vec<StoredConn> {
    t.iter().map(|(k, c)| StoredConn::of(k, c)).collect()
}

/// The file in `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(CONNS_FILE)
}

/// Atomically replaces the file with `conns` ([`p4lb_api::write_atomic`]).
pub fn save(dir: &Path, conns: &[StoredConn]) -> Result<()> {
    let data = serde_json::to_vec(&ConnsFile {
        version: VERSION,
        connections: conns.to_vec(),
    })
    .map_err(|e| {
        Error::store(
            path(dir).display().to_string(),
            std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        )
    })?;
    let path = path(dir);
    p4lb_api::write_atomic(&path, &data).map_err(|e| Error::store(path.display().to_string(), e))
}

/// Loads the snapshot and resolves it against `state`. A missing file is an
/// empty table; a file that cannot be read or parsed, is not a regular file or
/// is larger than [`MAX_CONNS_FILE_BYTES`] is an error (the caller
/// logs it and starts without the connections: they are soft state).
/// Returns the table and how many stored connections no longer resolve.
pub fn load(dir: &Path, state: &State) -> Result<(ConnTable, usize)> {
    let path = path(dir);
    let text = match p4lb_api::read_bounded(&path, MAX_CONNS_FILE_BYTES) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((ConnTable::default(), 0)),
        Err(e) => return Err(Error::store(path.display().to_string(), e)),
    };
    let bad = |msg: String| {
        Error::store(
            path.display().to_string(),
            std::io::Error::new(std::io::ErrorKind::InvalidData, msg),
        )
    };
    let f: ConnsFile = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    if f.version != VERSION {
        return Err(bad(format!("unknown version {}", f.version)));
    }
    let mut t = ConnTable::default();
    let mut dropped = 0;
    for s in &f.connections {
        let l = s.learned();
        match conn::resolve(state, &l) {
            Some(c) => {
                t.insert(l.tuple, c);
            }
            None => dropped += 1,
        }
    }
    Ok((t, dropped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn rec(backend_id: u16) -> ConnRec {
        ConnRec {
            backend_id,
            service_id: 1,
            reverse: FiveTuple {
                src: Ipv4Addr::new(10, 88, 0, 2),
                dst: Ipv4Addr::new(10, 66, 0, 2),
                protocol: 6,
                sport: 8080,
                dport: 40000,
            },
            vip: Ipv4Addr::new(10, 99, 0, 1),
            vport: 80,
        }
    }

    fn tuple(sport: u16) -> FiveTuple {
        FiveTuple {
            src: Ipv4Addr::new(10, 66, 0, 2),
            dst: Ipv4Addr::new(10, 99, 0, 1),
            protocol: 6,
            sport,
            dport: 80,
        }
    }

    #[test]
    fn save_and_load_round_trip_and_refuse_garbage() {
        let d = tempfile::tempdir().unwrap();
        let mut t = ConnTable::default();
        t.insert(tuple(40000), rec(2));
        save(d.path(), &snapshot(&t)).unwrap();
        let text = fs::read_to_string(path(d.path())).unwrap();
        assert!(text.contains("\"backend_id\":2"), "{text}");
        // Against an empty state nothing resolves: counted, not loaded.
        let (got, dropped) = load(d.path(), &State::new()).unwrap();
        assert!(got.is_empty());
        assert_eq!(dropped, 1);
        // No file: nothing, no error.
        let e = tempfile::tempdir().unwrap();
        assert!(load(e.path(), &State::new()).unwrap().0.is_empty());
        fs::write(path(d.path()), b"{not json").unwrap();
        assert!(load(d.path(), &State::new()).is_err());
        fs::write(path(d.path()), br#"{"version":9,"connections":[]}"#).unwrap();
        assert!(load(d.path(), &State::new()).is_err());
    }
}
