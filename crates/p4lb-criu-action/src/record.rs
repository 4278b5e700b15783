//! `p4lb-migration.json`: the record written into the CRIU image directory at
//! checkpoint. It travels with the images (`podman container checkpoint --export`,
//! CRI checkpoint archives) and tells the restore side which addresses the
//! restored sockets are bound to and which migration to continue.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use p4lb_api::CheckpointMode;

pub const RECORD_FILE: &str = "p4lb-migration.json";
/// Record format version; a record with another version is refused.
pub const RECORD_VERSION: u32 = 1;
/// Refuse anything larger: a record is a few hundred bytes.
const MAX_RECORD_BYTES: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is larger than {limit} bytes, more than a p4lb migration record can be")]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{path} is not a p4lb migration record: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: record version {found} is not supported (this build reads version {RECORD_VERSION})")]
    Version { path: PathBuf, found: u32 },
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
}

/// The endpoint the checkpointed container had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceEndpoint {
    pub key: String,
    pub container_id: String,
    pub ifname: String,
    pub ip: Ipv4Addr,
    pub prefix_len: u32,
    pub mac: String,
    pub netns_inode: u64,
    #[serde(default)]
    pub network: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecordState {
    /// LOCK acknowledged by the controller; dump in progress.
    Locked,
    /// CHECKPOINTED acknowledged: the images are complete.
    Checkpointed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationRecord {
    pub version: u32,
    pub migration_id: String,
    pub mode: CheckpointMode,
    pub state: RecordState,
    pub source: SourceEndpoint,
    /// Every address restored sockets may be bound to: the source's own address
    /// and the addresses that had already moved to it by earlier migrations.
    pub addresses: Vec<Ipv4Addr>,
    #[serde(default)]
    pub leave_running: bool,
    /// The controller's migration state when it answered LOCK / CHECKPOINTED.
    #[serde(default)]
    pub controller_state: String,
    pub created_unix_ms: i64,
}

impl MigrationRecord {
    pub fn path_in(image_dir: &Path) -> PathBuf {
        image_dir.join(RECORD_FILE)
    }

    fn validate(&self, path: &Path) -> Result<(), RecordError> {
        let bad = |what: String| RecordError::Invalid {
            path: path.to_path_buf(),
            what,
        };
        if self.version != RECORD_VERSION {
            return Err(RecordError::Version {
                path: path.to_path_buf(),
                found: self.version,
            });
        }
        if self.migration_id.is_empty() || self.migration_id.len() > 256 {
            return Err(bad("migration_id is empty or too long".into()));
        }
        if self.addresses.is_empty() {
            return Err(bad("no addresses".into()));
        }
        if !self.addresses.contains(&self.source.ip) {
            return Err(bad(format!(
                "addresses {:?} do not include the source address {}",
                self.addresses, self.source.ip
            )));
        }
        for a in &self.addresses {
            if a.is_unspecified() || a.is_loopback() || a.is_multicast() || a.is_broadcast() {
                return Err(bad(format!("address {a} cannot be moved")));
            }
        }
        if self.addresses.len() > 64 {
            return Err(bad("more than 64 addresses".into()));
        }
        if self.source.prefix_len > 32 {
            return Err(bad(format!("prefix length {}", self.source.prefix_len)));
        }
        Ok(())
    }

    /// Reads the record from `image_dir`. `Ok(None)` when there is none (a
    /// checkpoint of a container p4lb does not manage). Anything present but
    /// unreadable, foreign or inconsistent is an error, and so is a record that
    /// is not a regular file (a symlink, a FIFO, a device) or is over 64 KiB
    /// ([`p4lb_api::read_bounded`]).
    pub fn read_from(image_dir: &Path) -> Result<Option<Self>, RecordError> {
        let path = Self::path_in(image_dir);
        let bytes = match p4lb_api::read_bounded(&path, MAX_RECORD_BYTES) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Err(RecordError::TooLarge {
                    path,
                    limit: MAX_RECORD_BYTES,
                })
            }
            Err(e) => return Err(RecordError::Read { path, source: e }),
        };
        Self::parse(&bytes, &path).map(Some)
    }

    /// Parses and validates the bytes of a record (`path` only names it in errors):
    /// what [`Self::read_from`] does once the file is read, with no file access.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self, RecordError> {
        if bytes.len() as u64 > MAX_RECORD_BYTES {
            return Err(RecordError::TooLarge {
                path: path.to_path_buf(),
                limit: MAX_RECORD_BYTES,
            });
        }
        let rec: Self = serde_json::from_slice(bytes).map_err(|e| RecordError::Parse {
            path: path.to_path_buf(),
            source: e,
        })?;
        rec.validate(path)?;
        Ok(rec)
    }

    /// Writes the record atomically, without fsync ([`p4lb_api::replace_atomic`]):
    /// CRIU does not fsync the images the record travels with either, and the
    /// runtimes copy or archive them from the page cache. A crash of the machine
    /// during or right after the dump loses CRIU's images as much as the record;
    /// a dump that dies (CRIU, the script) leaves the record whole (old or new,
    /// by the rename), and the restore side refuses any record that is not
    /// `checkpointed`.
    pub fn write_to(&self, image_dir: &Path) -> Result<PathBuf, RecordError> {
        let path = Self::path_in(image_dir);
        self.validate(&path)?;
        let mut text = serde_json::to_vec_pretty(self).map_err(|e| RecordError::Write {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        text.push(b'\n');
        p4lb_api::replace_atomic(&path, &text).map_err(|e| RecordError::Write {
            path: path.clone(),
            source: e,
        })?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> MigrationRecord {
        MigrationRecord {
            version: RECORD_VERSION,
            migration_id: "m-42".into(),
            mode: CheckpointMode::Migrate,
            state: RecordState::Locked,
            source: SourceEndpoint {
                key: "abc/eth0".into(),
                container_id: "abc".into(),
                ifname: "eth0".into(),
                ip: "10.88.0.5".parse().unwrap(),
                prefix_len: 24,
                mac: "02:00:0a:58:00:05".into(),
                netns_inode: 4026532385,
                network: "p4lb".into(),
            },
            addresses: vec!["10.88.0.5".parse().unwrap(), "10.88.0.2".parse().unwrap()],
            leave_running: false,
            controller_state: "locked".into(),
            created_unix_ms: 1,
        }
    }

    #[test]
    fn round_trip() {
        let d = tempfile::tempdir().unwrap();
        let r = sample();
        let p = r.write_to(d.path()).unwrap();
        assert_eq!(p, d.path().join(RECORD_FILE));
        assert_eq!(
            MigrationRecord::read_from(d.path()).unwrap(),
            Some(r.clone())
        );
        // Overwrite (state change) keeps one file, no temporaries.
        let mut r2 = r;
        r2.state = RecordState::Checkpointed;
        r2.write_to(d.path()).unwrap();
        assert_eq!(MigrationRecord::read_from(d.path()).unwrap(), Some(r2));
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn absent_record_is_none() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(MigrationRecord::read_from(d.path()).unwrap(), None);
    }

    #[test]
    fn foreign_or_corrupt_records_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(RECORD_FILE);
        for bad in [&b"not json"[..], b"{}", b"{\"version\": 1}", b"\xff\xfe"] {
            std::fs::write(&p, bad).unwrap();
            assert!(MigrationRecord::read_from(d.path()).is_err());
        }
        let mut v = serde_json::to_value(sample()).unwrap();
        v["version"] = 99.into();
        std::fs::write(&p, v.to_string()).unwrap();
        assert!(matches!(
            MigrationRecord::read_from(d.path()),
            Err(RecordError::Version { found: 99, .. })
        ));
        std::fs::write(&p, vec![b' '; 70 * 1024]).unwrap();
        assert!(matches!(
            MigrationRecord::read_from(d.path()),
            Err(RecordError::TooLarge { .. })
        ));
    }

    #[test]
    fn a_record_that_is_a_symlink_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let target = sample().write_to(elsewhere.path()).unwrap();
        std::os::unix::fs::symlink(&target, MigrationRecord::path_in(d.path())).unwrap();
        let e = MigrationRecord::read_from(d.path()).unwrap_err();
        assert!(matches!(e, RecordError::Read { .. }), "{e}");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        // A symlink to /dev/zero is refused without reading from it.
        std::fs::remove_file(MigrationRecord::path_in(d.path())).unwrap();
        std::os::unix::fs::symlink("/dev/zero", MigrationRecord::path_in(d.path())).unwrap();
        assert!(MigrationRecord::read_from(d.path()).is_err());
    }

    #[test]
    fn a_record_that_is_a_fifo_is_refused_without_hanging() {
        let d = tempfile::tempdir().unwrap();
        let p = MigrationRecord::path_in(d.path());
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let dir = d.path().to_path_buf();
        std::thread::spawn(move || {
            let _ = tx.send(MigrationRecord::read_from(&dir).map_err(|e| e.to_string()));
        });
        let r = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("reading a FIFO record must not block");
        let e = r.unwrap_err();
        assert!(e.contains("a FIFO"), "{e}");
    }

    #[test]
    fn inconsistent_records_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let mut r = sample();
        r.addresses = vec!["10.1.1.1".parse().unwrap()];
        assert!(r.write_to(d.path()).is_err());
        let mut r = sample();
        r.addresses.push("127.0.0.1".parse().unwrap());
        assert!(r.write_to(d.path()).is_err());
        let mut r = sample();
        r.migration_id.clear();
        assert!(r.write_to(d.path()).is_err());
        // Nothing was left behind by the refused writes.
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
    }
}
