//! The environment CRIU gives an action script.
//!
//! - `CRTOOLS_SCRIPT_ACTION`: the hook point (always set by CRIU).
//! - `CRTOOLS_IMAGE_DIR`: the image directory, usually as `/proc/<criu pid>/fd/<n>`.
//! - `CRTOOLS_INIT_PID`: host pid of the (restored) tree's init; absent at `pre-restore`.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::action::CriuAction;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvError {
    #[error("CRTOOLS_SCRIPT_ACTION is not set: this program is a CRIU action script (action-script in /etc/criu/*.conf)")]
    NoAction,
    #[error("{name}={value:?} is not a valid pid")]
    BadPid { name: &'static str, value: String },
}

/// What CRIU told us, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionEnv {
    pub action: CriuAction,
    /// The raw action name (for logs when it is [`CriuAction::Other`]).
    pub action_name: String,
    pub image_dir: Option<PathBuf>,
    pub init_pid: Option<u32>,
    /// The CRIU process, when the image dir is given as /proc/<pid>/fd/<n>.
    pub criu_pid: Option<u32>,
}

impl ActionEnv {
    pub fn from_map(vars: &HashMap<String, String>) -> Result<Self, EnvError> {
        let action_name = vars
            .get("CRTOOLS_SCRIPT_ACTION")
            .filter(|s| !s.is_empty())
            .ok_or(EnvError::NoAction)?
            .clone();
        let image_dir = vars
            .get("CRTOOLS_IMAGE_DIR")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from);
        let init_pid = match vars.get("CRTOOLS_INIT_PID").filter(|s| !s.is_empty()) {
            None => None,
            Some(v) => Some(parse_pid("CRTOOLS_INIT_PID", v)?),
        };
        let criu_pid = image_dir
            .as_ref()
            .and_then(|d| criu_pid_of_image_dir(&d.to_string_lossy()));
        Ok(Self {
            action: CriuAction::parse(&action_name),
            action_name,
            image_dir,
            init_pid,
            criu_pid,
        })
    }
}

fn parse_pid(name: &'static str, value: &str) -> Result<u32, EnvError> {
    match value.trim().parse::<u32>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(EnvError::BadPid {
            name,
            value: value.to_owned(),
        }),
    }
}

/// `/proc/<pid>/fd/<n>` → `<pid>`.
pub fn criu_pid_of_image_dir(dir: &str) -> Option<u32> {
    let rest = dir.strip_prefix("/proc/")?;
    let mut parts = rest.split('/');
    let pid = parts.next()?.parse::<u32>().ok()?;
    if parts.next()? != "fd" {
        return None;
    }
    parts.next()?.parse::<u32>().ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn full_dump_env() {
        let e = ActionEnv::from_map(&vars(&[
            ("CRTOOLS_SCRIPT_ACTION", "network-lock"),
            ("CRTOOLS_IMAGE_DIR", "/proc/4242/fd/7"),
            ("CRTOOLS_INIT_PID", "1234"),
        ]))
        .unwrap();
        assert_eq!(e.action, CriuAction::NetworkLock);
        assert_eq!(e.init_pid, Some(1234));
        assert_eq!(e.criu_pid, Some(4242));
        assert_eq!(e.image_dir, Some(PathBuf::from("/proc/4242/fd/7")));
    }

    #[test]
    fn pre_restore_has_no_init_pid() {
        let e = ActionEnv::from_map(&vars(&[
            ("CRTOOLS_SCRIPT_ACTION", "pre-restore"),
            ("CRTOOLS_IMAGE_DIR", "/var/lib/ckpt"),
        ]))
        .unwrap();
        assert_eq!(e.action, CriuAction::PreRestore);
        assert_eq!(e.init_pid, None);
        assert_eq!(e.criu_pid, None);
    }

    #[test]
    fn missing_action_is_an_error() {
        assert_eq!(ActionEnv::from_map(&vars(&[])), Err(EnvError::NoAction));
        assert_eq!(
            ActionEnv::from_map(&vars(&[("CRTOOLS_SCRIPT_ACTION", "")])),
            Err(EnvError::NoAction)
        );
    }

    #[test]
    fn bad_pid_is_an_error() {
        for bad in ["abc", "-1", "0", "12x"] {
            let r = ActionEnv::from_map(&vars(&[
                ("CRTOOLS_SCRIPT_ACTION", "post-restore"),
                ("CRTOOLS_INIT_PID", bad),
            ]));
            assert!(matches!(r, Err(EnvError::BadPid { .. })), "{bad}: {r:?}");
        }
    }

    #[test]
    fn unknown_action_is_kept_by_name() {
        let e = ActionEnv::from_map(&vars(&[("CRTOOLS_SCRIPT_ACTION", "status-ready")])).unwrap();
        assert_eq!(e.action, CriuAction::Other);
        assert_eq!(e.action_name, "status-ready");
    }

    #[test]
    fn criu_pid_parsing() {
        assert_eq!(criu_pid_of_image_dir("/proc/1/fd/3"), Some(1));
        assert_eq!(criu_pid_of_image_dir("/proc/1/fd/3/x"), None);
        assert_eq!(criu_pid_of_image_dir("/proc/self/fd/3"), None);
        assert_eq!(criu_pid_of_image_dir("/proc/1/fdinfo/3"), None);
        assert_eq!(criu_pid_of_image_dir("/tmp/img"), None);
    }
}
