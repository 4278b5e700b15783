//! Running a delegated plugin (IPAM): found in `CNI_PATH`, run with our own
//! environment (only `CNI_COMMAND` and what the caller overrides changed), our stdin,
//! its stderr going to ours, its stdout parsed as a result or as a CNI error.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::error::{CniError, Code};

/// Looks `name` up in the `CNI_PATH` directories.
pub fn find_in_path(name: &str, paths: &[PathBuf]) -> Result<PathBuf, CniError> {
    for dir in paths {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(
        CniError::new(Code::Ipam, format!("delegated plugin {name:?} not found")).details(format!(
            "searched CNI_PATH [{}]",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(":")
        )),
    )
}

/// One invocation of a delegated plugin.
pub struct Delegate<'a> {
    pub plugin: &'a Path,
    pub command: &'a str,
    pub stdin: &'a [u8],
    /// Variables to set (`CNI_COMMAND` is always set from `command`).
    pub set_env: Vec<(&'static str, String)>,
}

impl Delegate<'_> {
    /// Runs the plugin; returns its stdout on success.
    pub fn run(&self) -> Result<Vec<u8>, CniError> {
        let name = self
            .plugin
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut attempt = 0;
        let output = loop {
            let mut cmd = Command::new(self.plugin);
            cmd.env("CNI_COMMAND", self.command)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            for (k, v) in &self.set_env {
                cmd.env(k, v);
            }
            let child = cmd.spawn();
            let mut child = match child {
                Ok(c) => c,
                // The binary is being replaced (upgrade): wait and retry, as runtimes do.
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < 5 => {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
                Err(e) => {
                    return Err(CniError::new(Code::Ipam, format!("cannot run {name}"))
                        .details(format!("{}: {e}", self.plugin.display())))
                }
            };
            if let Some(mut stdin) = child.stdin.take() {
                // A plugin that exits without reading stdin closes the pipe: not our error.
                let _ = stdin.write_all(self.stdin);
            }
            match child.wait_with_output() {
                Ok(out) => break out,
                Err(e) => {
                    return Err(
                        CniError::new(Code::IoFailure, format!("waiting for {name}"))
                            .details(e.to_string()),
                    )
                }
            }
        };
        if output.status.success() {
            return Ok(output.stdout);
        }
        // The plugin's own CNI error is passed on with its code.
        if let Ok(v) = serde_json::from_slice::<Value>(&output.stdout) {
            if let (Some(code), Some(msg)) = (v.get("code").and_then(Value::as_u64), v.get("msg")) {
                let details = v.get("details").and_then(Value::as_str).unwrap_or("");
                let msg = msg.as_str().unwrap_or("");
                return Err(CniError::with_code(
                    u32::try_from(code).unwrap_or(Code::Ipam as u32),
                    format!("{name} {}: {msg}", self.command),
                )
                .details(details.to_string()));
            }
        }
        Err(
            CniError::new(Code::Ipam, format!("{name} {} failed", self.command)).details(format!(
                "{}; stdout: {}",
                output.status,
                String::from_utf8_lossy(&output.stdout).trim()
            )),
        )
    }
}
