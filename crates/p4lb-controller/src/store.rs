//! Crash-safe persistence of [`State`]: the whole state is written with
//! [`p4lb_api::write_atomic`] (temporary file, fsync, rename over `state.json`,
//! fsync of the directory). A reader therefore sees either the old or the new
//! state, never a mix.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::limits::MAX_STATE_FILE_BYTES;
use crate::state::{State, STATE_VERSION};

pub const STATE_FILE: &str = "state.json";

/// The state directory and its file.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Opens (creating, mode 0700) the state directory.
    pub fn open(dir: &Path) -> Result<Store> {
        fs::create_dir_all(dir).map_err(|e| Error::store(dir.display().to_string(), e))?;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::store(dir.display().to_string(), e))?;
        Ok(Store {
            dir: dir.to_path_buf(),
        })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Loads the state; a missing file is an empty state. A file that cannot be
    /// parsed is an error (never silently replaced), and so is one that is not a
    /// regular file or is larger than [`MAX_STATE_FILE_BYTES`]
    /// ([`p4lb_api::read_bounded`]).
    pub fn load(&self) -> Result<State> {
        let path = self.path();
        let text = match p4lb_api::read_bounded(&path, MAX_STATE_FILE_BYTES) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::new()),
            Err(e) => return Err(Error::store(path.display().to_string(), e)),
        };
        let state: State = serde_json::from_slice(&text).map_err(|e| {
            Error::store(
                path.display().to_string(),
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            )
        })?;
        if state.version > STATE_VERSION {
            return Err(Error::store(
                path.display().to_string(),
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "state version {} is newer than this controller",
                        state.version
                    ),
                ),
            ));
        }
        Ok(state)
    }

    /// Atomically replaces the persisted state with `state`.
    pub fn save(&self, state: &State) -> Result<()> {
        let data = Self::encode(state, &self.path())?;
        self.write(&data)
    }

    /// The persisted form of `state` (`path` names the file in errors).
    pub fn encode(state: &State, path: &Path) -> Result<Vec<u8>> {
        serde_json::to_vec(state).map_err(|e| {
            Error::store(
                path.display().to_string(),
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            )
        })
    }

    /// Atomically replaces the persisted state with `data` (from [`Store::encode`]).
    pub fn write(&self, data: &[u8]) -> Result<()> {
        let path = self.path();
        p4lb_api::write_atomic(&path, data).map_err(|e| Error::store(path.display().to_string(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_atomic_replace() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.load().unwrap(), State::new());
        let mut s = State::new();
        s.next_migration = 7;
        store.save(&s).unwrap();
        assert_eq!(store.load().unwrap().next_migration, 7);
        s.next_migration = 8;
        store.save(&s).unwrap();
        assert_eq!(store.load().unwrap().next_migration, 8);
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(STATE_FILE)]);
    }

    #[test]
    fn a_torn_temporary_file_does_not_affect_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut s = State::new();
        s.next_migration = 3;
        store.save(&s).unwrap();
        // A crash in the middle of a save leaves only a partial temporary file.
        fs::write(dir.path().join(".state.json.tmp"), b"{\"version\":1,\"endp").unwrap();
        assert_eq!(store.load().unwrap().next_migration, 3);
    }

    #[test]
    fn a_state_file_that_is_a_symlink_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let mut s = State::new();
        s.next_migration = 5;
        Store::open(other.path()).unwrap().save(&s).unwrap();
        let store = Store::open(dir.path()).unwrap();
        std::os::unix::fs::symlink(other.path().join(STATE_FILE), store.path()).unwrap();
        let e = store.load().unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
    }

    #[test]
    fn corrupt_state_is_an_error_not_an_empty_state() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        fs::write(store.path(), b"not json").unwrap();
        assert!(store.load().is_err());
    }
}
