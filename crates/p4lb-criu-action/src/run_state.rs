//! State kept between the actions of one CRIU run (one `criu dump` or
//! `criu restore` process): which side it is, the endpoint, the migration id and
//! how far the migration got. One small JSON file per CRIU process under the state
//! directory (root-only, 0700/0600), keyed by the CRIU pid and its start time so a
//! reused pid never picks up a stale file.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use std::net::Ipv4Addr;

use crate::record::{MigrationRecord, SourceEndpoint};
use p4lb_api::CheckpointMode;

/// Refuse larger run-state files: one is a few hundred bytes.
pub const MAX_STATE_BYTES: u64 = 64 * 1024;
/// Files older than this are left over from crashed runs and removed.
const STALE_AFTER: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunSide {
    Dump,
    Restore,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunState {
    pub side: RunSide,
    /// False when the container is not a p4lb endpoint (nothing to do).
    pub managed: bool,
    #[serde(default)]
    pub endpoint_key: String,
    #[serde(default)]
    pub migration_id: String,
    pub mode: CheckpointMode,
    #[serde(default)]
    pub locked: bool,
    #[serde(default)]
    pub checkpointed: bool,
    #[serde(default)]
    pub restore_started: bool,
    #[serde(default)]
    pub unlocked: bool,
    /// Dump side: the endpoint LOCK's answer named and the addresses that move.
    #[serde(default)]
    pub source: Option<SourceEndpoint>,
    #[serde(default)]
    pub addresses: Vec<Ipv4Addr>,
    /// Restore side: the record read from the images at pre-restore.
    #[serde(default)]
    pub record: Option<MigrationRecord>,
}

impl RunState {
    pub fn unmanaged(side: RunSide) -> Self {
        Self {
            side,
            managed: false,
            endpoint_key: String::new(),
            migration_id: String::new(),
            mode: CheckpointMode::Migrate,
            locked: false,
            checkpointed: false,
            restore_started: false,
            unlocked: false,
            source: None,
            addresses: Vec::new(),
            record: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {path} is corrupt: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// Where the state of one CRIU run lives.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// `criu_pid`: the CRIU process (from the image dir path or the parent chain).
    pub fn for_run(state_dir: &Path, criu_pid: u32) -> Self {
        let start = process_start_ticks(criu_pid).unwrap_or(0);
        Self {
            path: state_dir.join(format!("{criu_pid}-{start}.json")),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn load(&self) -> Result<Option<RunState>, StateError> {
        match p4lb_api::read_bounded(&self.path, MAX_STATE_BYTES) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| StateError::Corrupt {
                    path: self.path.clone(),
                    source: e,
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StateError::Io {
                path: self.path.clone(),
                source: e,
            }),
        }
    }

    pub fn save(&self, st: &RunState) -> Result<(), StateError> {
        let io = |e| StateError::Io {
            path: self.path.clone(),
            source: e,
        };
        if let Some(dir) = self.path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io)?;
        }
        let body = serde_json::to_vec(st).map_err(|e| io(std::io::Error::other(e)))?;
        // No fsync (replace_atomic): the state lives between the actions of one
        // CRIU run, in /run (tmpfs); a crash of the machine ends that run anyway.
        // The rename still keeps a dying script from leaving a torn file.
        p4lb_api::replace_atomic(&self.path, &body).map_err(io)
    }

    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Removes state files of CRIU runs that are over: the CRIU process named in the
/// file name (`<pid>-<start ticks>.json`) is gone or is another process now. A
/// dump that stops the task ends with `post-dump`, after which no action runs,
/// so its file is removed here by a later run. Files that do not look like ours
/// are removed only when older than a day.
pub fn remove_stale(state_dir: &Path) {
    let Ok(rd) = std::fs::read_dir(state_dir) else {
        return;
    };
    let now = SystemTime::now();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let run_over = parse_state_name(&name)
            .map(|(pid, start)| process_start_ticks(pid) != Some(start) || start == 0);
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > STALE_AFTER);
        if run_over.unwrap_or(old) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

fn parse_state_name(name: &str) -> Option<(u32, u64)> {
    let (pid, start) = name.strip_suffix(".json")?.split_once('-')?;
    Some((pid.parse().ok()?, start.parse().ok()?))
}

/// Field 22 of /proc/PID/stat (start time in clock ticks).
pub fn process_start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_ticks(&stat)
}

fn parse_start_ticks(stat: &str) -> Option<u64> {
    // comm (field 2) may contain spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The CRIU process that runs this action script: given by the image dir path when
/// it is /proc/<pid>/fd/<n>; otherwise the nearest ancestor named `criu`; otherwise
/// the parent.
pub fn find_criu_pid(from_image_dir: Option<u32>) -> u32 {
    if let Some(p) = from_image_dir {
        return p;
    }
    let mut pid = std::os::unix::process::parent_id();
    let parent = pid;
    for _ in 0..4 {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() == "criu" {
            return pid;
        }
        match parent_of(pid) {
            Some(pp) if pp > 1 => pid = pp,
            _ => break,
        }
    }
    parent
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_ticks_parse_with_odd_comm() {
        let stat =
            "123 (we ird) (x)) S 1 123 123 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 98765 1 2 3";
        assert_eq!(parse_start_ticks(stat), Some(98765));
        assert_eq!(parse_start_ticks("garbage"), None);
        assert!(process_start_ticks(std::process::id()).is_some());
    }

    #[test]
    fn save_load_remove() {
        let d = tempfile::tempdir().unwrap();
        let sf = StateFile::for_run(&d.path().join("sub"), std::process::id());
        assert_eq!(sf.load().unwrap(), None);
        let mut st = RunState::unmanaged(RunSide::Dump);
        st.managed = true;
        st.migration_id = "m1".into();
        st.locked = true;
        sf.save(&st).unwrap();
        assert_eq!(sf.load().unwrap(), Some(st));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(sf.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        sf.remove();
        assert_eq!(sf.load().unwrap(), None);
    }

    #[test]
    fn files_of_finished_runs_are_removed() {
        let d = tempfile::tempdir().unwrap();
        let live = StateFile::for_run(d.path(), std::process::id());
        let st = RunState::unmanaged(RunSide::Dump);
        live.save(&st).unwrap();
        // A run whose CRIU process is gone (pid 0 never names a process).
        let gone = d.path().join("0-12345.json");
        std::fs::write(&gone, b"{}").unwrap();
        // A reused pid: ours, with another start time.
        let reused = d.path().join(format!("{}-1.json", std::process::id()));
        std::fs::write(&reused, b"{}").unwrap();
        let foreign = d.path().join("notes.txt");
        std::fs::write(&foreign, b"x").unwrap();
        remove_stale(d.path());
        assert!(live.path().exists());
        assert!(!gone.exists());
        assert!(!reused.exists());
        assert!(foreign.exists(), "young foreign files are kept");
        assert_eq!(parse_state_name("12-34.json"), Some((12, 34)));
        assert_eq!(parse_state_name("12-34.tmp7"), None);
    }

    #[test]
    fn a_state_file_that_is_a_symlink_or_too_large_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let sf = StateFile::for_run(d.path(), 1);
        let elsewhere = d.path().join("elsewhere.json");
        let body = serde_json::to_vec(&RunState::unmanaged(RunSide::Dump)).unwrap();
        std::fs::write(&elsewhere, &body).unwrap();
        std::os::unix::fs::symlink(&elsewhere, sf.path()).unwrap();
        let e = sf.load().unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        std::fs::remove_file(sf.path()).unwrap();
        let mut big = body.clone();
        big.resize(MAX_STATE_BYTES as usize + 1, b' ');
        std::fs::write(sf.path(), &big).unwrap();
        let e = sf.load().unwrap_err();
        assert!(e.to_string().contains("over the limit"), "{e}");
    }

    #[test]
    fn corrupt_state_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        let sf = StateFile::for_run(d.path(), 1);
        std::fs::write(sf.path(), b"{").unwrap();
        assert!(matches!(sf.load(), Err(StateError::Corrupt { .. })));
    }

    #[test]
    fn parent_is_found() {
        assert_eq!(find_criu_pid(Some(77)), 77);
        assert!(find_criu_pid(None) > 0);
    }
}
