//! Deregistrations that DEL could not make because the controller was unreachable.
//!
//! DEL then does its local part (the veth), keeps the IPAM lease (the switch may still
//! route to the address) and records the attachment in
//! `<stateDir>/pending-del/<network>.json`. The next DEL or GC of the same network that
//! reaches the controller deregisters every recorded attachment and only then releases
//! its lease ([`complete`]); an ADD of a recorded attachment finishes it first
//! ([`finish_own`]), so a fresh endpoint is never deregistered for a stale record.
//!
//! The file is read with [`p4lb_api::read_bounded`] and replaced with
//! [`p4lb_api::write_atomic`]; a `.lock` file next to it (`flock`) serialises
//! concurrent invocations. One file per network, because finishing a record needs the
//! network's IPAM configuration.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::api_client::Controller;
use crate::cmd::Invocation;
use crate::cni::error::{CniError, Code};

/// Most attachments one network's file records; DEL fails with 11 beyond.
pub const MAX_PENDING: usize = 4096;
/// Size bound for reading the file.
const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// One attachment whose endpoint may still be registered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub container_id: String,
    pub ifname: String,
    /// `CNI_ARGS` for the IPAM DEL that releases its lease (as the DEL would have sent).
    pub ipam_args: String,
}

impl Pending {
    fn is(&self, container_id: &str, ifname: &str) -> bool {
        self.container_id == container_id && self.ifname == ifname
    }
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> CniError {
    CniError::new(Code::IoFailure, format!("pending deregistrations: {what}"))
        .details(format!("{}: {e}", path.display()))
}

/// The network's record file, locked for as long as this lives.
struct Locked {
    path: PathBuf,
    _lock: Flock<File>,
}

impl Locked {
    fn path(inv: &Invocation) -> PathBuf {
        inv.p4
            .state_dir
            .join("pending-del")
            .join(format!("{}.json", inv.conf.name))
    }

    fn open(inv: &Invocation) -> Result<Self, CniError> {
        let path = Self::path(inv);
        let dir = path.parent().unwrap_or(Path::new("/"));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| io_error("creating the directory", dir, e))?;
        let lock_path = path.with_extension("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&lock_path)
            .map_err(|e| io_error("opening the lock", &lock_path, e))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| io_error("locking", &lock_path, e.into()))?;
        Ok(Self { path, _lock: lock })
    }

    fn load(&self) -> Result<Vec<Pending>, CniError> {
        match p4lb_api::read_bounded(&self.path, MAX_FILE_BYTES) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                CniError::new(Code::DecodingFailure, "pending deregistrations unreadable")
                    .details(format!("{}: {e}", self.path.display()))
            }),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io_error("reading", &self.path, e)),
        }
    }

    fn save(&self, entries: &[Pending]) -> Result<(), CniError> {
        if entries.is_empty() {
            return match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != ErrorKind::NotFound => {
                    Err(io_error("removing", &self.path, e))
                }
                _ => Ok(()),
            };
        }
        let data = serde_json::to_vec(entries).map_err(|e| {
            CniError::new(Code::IoFailure, "pending deregistrations: encoding")
                .details(e.to_string())
        })?;
        p4lb_api::write_atomic(&self.path, &data).map_err(|e| io_error("writing", &self.path, e))
    }
}

/// Whether the network has records (a cheap check before taking the lock).
fn any(inv: &Invocation) -> bool {
    Locked::path(inv).exists()
}

/// Records `entry` (once per attachment). Fails with 11 when the network already has
/// [`MAX_PENDING`] records.
pub fn record(inv: &Invocation, entry: Pending) -> Result<(), CniError> {
    let file = Locked::open(inv)?;
    let mut entries = file.load()?;
    if entries
        .iter()
        .any(|p| p.is(&entry.container_id, &entry.ifname))
    {
        return Ok(());
    }
    if entries.len() >= MAX_PENDING {
        return Err(
            CniError::new(Code::TryAgainLater, "too many pending deregistrations").details(
                format!(
                    "{}: {MAX_PENDING} attachments wait for the controller",
                    file.path.display()
                ),
            ),
        );
    }
    entries.push(entry);
    file.save(&entries)
}

/// Deregisters `entry` and releases its lease; `Err` leaves it recorded.
async fn finish(inv: &Invocation, c: &mut Controller, entry: &Pending) -> Result<(), CniError> {
    c.deregister(&entry.container_id, &entry.ifname).await?;
    let env = vec![
        ("CNI_CONTAINERID", entry.container_id.clone()),
        ("CNI_IFNAME", entry.ifname.clone()),
        ("CNI_NETNS", String::new()),
        ("CNI_ARGS", entry.ipam_args.clone()),
    ];
    inv.ipam("DEL", env)?;
    Ok(())
}

/// Finishes the network's records over `c`, except those `keep` selects (GC keeps the
/// attachments the runtime lists as valid). Returns one message per record that stays.
pub async fn complete(
    inv: &Invocation,
    c: &mut Controller,
    keep: impl Fn(&Pending) -> bool,
) -> Result<Vec<String>, CniError> {
    if !any(inv) {
        return Ok(Vec::new());
    }
    let file = Locked::open(inv)?;
    let entries = file.load()?;
    let mut left = Vec::new();
    let mut errors = Vec::new();
    for entry in entries {
        if keep(&entry) {
            left.push(entry);
            continue;
        }
        if let Err(e) = finish(inv, c, &entry).await {
            errors.push(format!(
                "pending deregistration of {}/{}: {e}",
                entry.container_id, entry.ifname
            ));
            left.push(entry);
        }
    }
    file.save(&left)?;
    Ok(errors)
}

/// Before ADD of an attachment DEL left recorded: deregisters the old endpoint and
/// releases its lease, so neither outlives the record. Nothing to do → `Ok`; the
/// controller unreachable → 11, before ADD has created anything.
pub async fn finish_own(inv: &Invocation) -> Result<(), CniError> {
    if !any(inv) {
        return Ok(());
    }
    let file = Locked::open(inv)?;
    let mut entries = file.load()?;
    let Some(pos) = entries
        .iter()
        .position(|p| p.is(&inv.env.container_id, &inv.env.ifname))
    else {
        return Ok(());
    };
    let mut c = Controller::connect(&inv.p4.controller_socket, inv.p4.controller_timeout)
        .await
        .map_err(|e| e.context("a previous DEL of this attachment is not finished"))?;
    finish(inv, &mut c, &entries[pos]).await?;
    entries.remove(pos);
    file.save(&entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::env::RuntimeEnv;
    use crate::cni::netconf::NetConf;
    use crate::config::P4lbConf;

    fn inv(state_dir: &Path) -> Invocation {
        let conf =
            NetConf::parse(br#"{"cniVersion":"1.0.0","name":"n","type":"p4lb"}"#.to_vec()).unwrap();
        let mut p4 = P4lbConf::from_netconf(&conf.value).unwrap();
        p4.state_dir = state_dir.to_path_buf();
        let env = RuntimeEnv {
            container_id: "c".into(),
            netns: String::new(),
            ifname: "eth0".into(),
            args: String::new(),
            path: Vec::new(),
        };
        Invocation { env, conf, p4 }
    }

    fn entry(cid: &str) -> Pending {
        Pending {
            container_id: cid.into(),
            ifname: "eth0".into(),
            ipam_args: String::new(),
        }
    }

    #[test]
    fn recorded_once_per_attachment_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let inv = inv(dir.path());
        assert!(!any(&inv));
        record(&inv, entry("a")).unwrap();
        record(&inv, entry("a")).unwrap();
        record(&inv, entry("b")).unwrap();
        let file = Locked::open(&inv).unwrap();
        assert_eq!(file.load().unwrap(), vec![entry("a"), entry("b")]);
        let full: Vec<Pending> = (0..MAX_PENDING).map(|i| entry(&format!("x{i}"))).collect();
        file.save(&full).unwrap();
        drop(file);
        let e = record(&inv, entry("one-more")).unwrap_err();
        assert_eq!(e.code, Code::TryAgainLater as u32);
        // an attachment already recorded is not refused
        record(&inv, entry("x0")).unwrap();
        // saving nothing removes the file
        Locked::open(&inv).unwrap().save(&[]).unwrap();
        assert!(!any(&inv));
    }

    #[test]
    fn a_symlinked_record_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let inv = inv(dir.path());
        let path = Locked::path(&inv);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
        assert!(record(&inv, entry("a")).is_err());
    }
}
