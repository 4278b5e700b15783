//! The container runtime as the agent uses it: [`Runtime`] (checkpoint to an archive,
//! restore from an archive, restore in place, remove, inspect), [`Podman`] (Podman's own
//! commands, with the node's global options from the agent's configuration),
//! [`CriRuntime`] (containerd over its CRI socket, in [`crate::cri_runtime`]),
//! [`NodeRuntime`] (the one the configuration names) and [`fake::FakeRuntime`] (in
//! memory, for tests).
//!
//! The calls are blocking (a runtime command takes hundreds of milliseconds); the
//! service runs them on tokio's blocking pool.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

use serde::Deserialize;

/// Most bytes of a runtime command's stdout that are read (an inspect of one container
/// is a few KiB).
pub const MAX_STDOUT: u64 = 1 << 20;
/// Most bytes of a runtime command's stderr kept for an error message.
pub const MAX_STDERR: u64 = 64 << 10;
/// Most bytes of a restore spec ([`Runtime::checkpoint`]'s answer, carried in the
/// archive's header): the sender refuses to send a larger one, the receiver to accept it.
pub const MAX_RESTORE_SPEC: usize = 64 << 10;

pub use crate::cri_runtime::CriRuntime;

/// Why a runtime call failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("no container {0:?}")]
    NotFound(String),
    #[error("`{command}` failed: {output}")]
    Command { command: String, output: String },
    #[error("`{command}` could not run: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("`{command}`: unexpected output: {detail}")]
    Output { command: String, detail: String },
}

/// What the agent needs to know of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    /// The runtime's state word ("running", "exited", …).
    pub state: String,
    /// Its first IPv4 address, or empty.
    pub address: String,
}

/// A container runtime on this node.
pub trait Runtime: Send + Sync + 'static {
    /// A short name ("podman").
    fn name(&self) -> &str;
    /// The container `container` (name or ID).
    fn inspect(&self, container: &str) -> Result<ContainerInfo, RuntimeError>;
    /// Checkpoints the running `container` (its TCP connections included) to `archive`;
    /// the container stays checkpointed here, so that [`Runtime::restore_in_place`]
    /// can bring it back. Answers the restore spec: what a target's runtime needs
    /// besides the archive (at most [`MAX_RESTORE_SPEC`] bytes; empty for Podman).
    fn checkpoint(&self, container: &str, archive: &Path) -> Result<Vec<u8>, RuntimeError>;
    /// Restores the container held in `archive` with the `spec` its checkpoint answered
    /// (a new container on this node, with the address the runtime gives it).
    fn restore_archive(&self, archive: &Path, spec: &[u8]) -> Result<ContainerInfo, RuntimeError>;
    /// Restores the checkpointed `container` on this node, after a failed migration
    /// (`archive` and `spec`: what its checkpoint wrote and answered).
    fn restore_in_place(
        &self,
        container: &str,
        archive: &Path,
        spec: &[u8],
    ) -> Result<(), RuntimeError>;
    /// Removes the (checkpointed) `container`.
    fn remove(&self, container: &str) -> Result<(), RuntimeError>;
    /// The shell command that restores `container` by hand, for a message to a person
    /// when the agent could not.
    fn restore_in_place_command(&self, container: &str, archive: &Path, spec: &[u8]) -> String;
    /// The shell command that lists this node's containers (for a message to a person).
    fn list_command(&self) -> String;
}

/// Podman, run as `COMMAND GLOBAL_ARGS… container …`: the global arguments (`--root`,
/// `--runroot`, `--tmpdir`, …) make a node of a storage, so that two agents with
/// different ones on one machine are two nodes.
#[derive(Debug, Clone)]
pub struct Podman {
    pub command: String,
    pub global_args: Vec<String>,
    /// `--ignore-static-ip` on restores from an archive: the container gets a new
    /// address on its new node (the old one moves with it through p4lb's action script).
    pub ignore_static_ip: bool,
}

impl Default for Podman {
    fn default() -> Self {
        Podman {
            command: "podman".into(),
            global_args: Vec::new(),
            ignore_static_ip: true,
        }
    }
}

/// The part of `podman container inspect` the agent reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Inspected {
    id: String,
    name: String,
    #[serde(default)]
    state: InspectedState,
    #[serde(default)]
    network_settings: InspectedNetworks,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectedState {
    #[serde(default)]
    status: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectedNetworks {
    #[serde(default)]
    networks: std::collections::BTreeMap<String, InspectedNetwork>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectedNetwork {
    #[serde(default, rename = "IPAddress")]
    ip_address: String,
}

/// Reads `podman container inspect` output (a JSON array of one container).
pub fn parse_inspect(command: &str, out: &str) -> Result<ContainerInfo, RuntimeError> {
    let bad = |detail: String| RuntimeError::Output {
        command: command.to_string(),
        detail,
    };
    let list: Vec<Inspected> = serde_json::from_str(out).map_err(|e| bad(e.to_string()))?;
    let [c] = <[Inspected; 1]>::try_from(list)
        .map_err(|l| bad(format!("{} containers, expected one", l.len())))?;
    let address = c
        .network_settings
        .networks
        .values()
        .map(|n| n.ip_address.clone())
        .find(|a| !a.is_empty())
        .unwrap_or_default();
    Ok(ContainerInfo {
        id: c.id,
        name: c.name,
        state: c.state.status,
        address,
    })
}

impl Podman {
    fn args<'a>(&'a self, rest: &[&'a str]) -> Vec<&'a str> {
        self.global_args
            .iter()
            .map(String::as_str)
            .chain(rest.iter().copied())
            .collect()
    }

    /// The command line as a person types it (for messages).
    pub fn command_line(&self, rest: &[&str]) -> String {
        std::iter::once(self.command.as_str())
            .chain(self.args(rest))
            .map(shell_word)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs podman with `rest` after the global arguments; its stdout on success.
    fn run(&self, rest: &[&str]) -> Result<String, RuntimeError> {
        let command = self.command_line(rest);
        tracing::debug!(%command, "running");
        let mut child = Command::new(&self.command)
            .args(self.args(rest))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| RuntimeError::Spawn {
                command: command.clone(),
                source,
            })?;
        let stderr = child.stderr.take().map(|e| {
            std::thread::spawn(move || {
                let mut s = Vec::new();
                let mut e = e;
                let _ = e.by_ref().take(MAX_STDERR).read_to_end(&mut s);
                // Drain the rest so that podman never blocks on a full pipe.
                let _ = std::io::copy(&mut e, &mut std::io::sink());
                s
            })
        });
        let mut out = Vec::new();
        if let Some(mut o) = child.stdout.take() {
            let _ = o.by_ref().take(MAX_STDOUT).read_to_end(&mut out);
            let _ = std::io::copy(&mut o, &mut std::io::sink());
        }
        let err = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
        let status = child.wait().map_err(|source| RuntimeError::Spawn {
            command: command.clone(),
            source,
        })?;
        let out = String::from_utf8_lossy(&out).into_owned();
        if !status.success() {
            let err = String::from_utf8_lossy(&err);
            return Err(RuntimeError::Command {
                command,
                output: format!("{status}: {}{}", out.trim(), err.trim()),
            });
        }
        Ok(out)
    }
}

/// `s` quoted for a POSIX shell when it needs to be.
pub(crate) fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

impl Runtime for Podman {
    fn name(&self) -> &str {
        "podman"
    }

    fn inspect(&self, container: &str) -> Result<ContainerInfo, RuntimeError> {
        let rest = ["container", "inspect", "--format", "json", container];
        match self.run(&rest) {
            Ok(out) => parse_inspect(&self.command_line(&rest), &out),
            Err(RuntimeError::Command { output, .. }) if output.contains("no such container") => {
                Err(RuntimeError::NotFound(container.to_string()))
            }
            Err(e) => Err(e),
        }
    }

    fn checkpoint(&self, container: &str, archive: &Path) -> Result<Vec<u8>, RuntimeError> {
        let archive = archive.display().to_string();
        self.run(&[
            "container",
            "checkpoint",
            "--tcp-established",
            "--keep",
            "--compress",
            "none",
            "--export",
            &archive,
            container,
        ])
        .map(|_| Vec::new())
    }

    fn restore_archive(&self, archive: &Path, _spec: &[u8]) -> Result<ContainerInfo, RuntimeError> {
        let archive = archive.display().to_string();
        let mut rest = vec![
            "container",
            "restore",
            "--import",
            &archive,
            "--tcp-established",
        ];
        if self.ignore_static_ip {
            rest.push("--ignore-static-ip");
        }
        let out = self.run(&rest)?;
        // podman prints the restored container's ID.
        let id = out.lines().map(str::trim).rfind(|l| !l.is_empty());
        let id = id.ok_or_else(|| RuntimeError::Output {
            command: self.command_line(&rest),
            detail: "no container ID printed".into(),
        })?;
        self.inspect(id)
    }

    fn restore_in_place(&self, container: &str, _: &Path, _: &[u8]) -> Result<(), RuntimeError> {
        self.run(&["container", "restore", "--tcp-established", container])
            .map(|_| ())
    }

    fn remove(&self, container: &str) -> Result<(), RuntimeError> {
        self.run(&["rm", container]).map(|_| ())
    }

    fn restore_in_place_command(&self, container: &str, _: &Path, _: &[u8]) -> String {
        self.command_line(&["container", "restore", "--tcp-established", container])
    }

    fn list_command(&self) -> String {
        self.command_line(&["ps", "--all"])
    }
}

/// The runtime an agent's configuration names (`runtime = "podman"` or `"cri"`).
#[derive(Debug, Clone)]
pub enum NodeRuntime {
    Podman(Podman),
    Cri(CriRuntime),
}

impl NodeRuntime {
    fn get(&self) -> &dyn Runtime {
        match self {
            NodeRuntime::Podman(p) => p,
            NodeRuntime::Cri(c) => c,
        }
    }
}

impl Runtime for NodeRuntime {
    fn name(&self) -> &str {
        self.get().name()
    }
    fn inspect(&self, container: &str) -> Result<ContainerInfo, RuntimeError> {
        self.get().inspect(container)
    }
    fn checkpoint(&self, container: &str, archive: &Path) -> Result<Vec<u8>, RuntimeError> {
        self.get().checkpoint(container, archive)
    }
    fn restore_archive(&self, archive: &Path, spec: &[u8]) -> Result<ContainerInfo, RuntimeError> {
        self.get().restore_archive(archive, spec)
    }
    fn restore_in_place(
        &self,
        container: &str,
        archive: &Path,
        spec: &[u8],
    ) -> Result<(), RuntimeError> {
        self.get().restore_in_place(container, archive, spec)
    }
    fn remove(&self, container: &str) -> Result<(), RuntimeError> {
        self.get().remove(container)
    }
    fn restore_in_place_command(&self, container: &str, archive: &Path, spec: &[u8]) -> String {
        self.get()
            .restore_in_place_command(container, archive, spec)
    }
    fn list_command(&self) -> String {
        self.get().list_command()
    }
}

/// A runtime in memory for tests: containers with states, archives as files holding the
/// container's name, and failures on demand.
pub mod fake {
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::sync::Mutex;

    use super::{ContainerInfo, Runtime, RuntimeError};

    /// Which call fails.
    #[derive(Debug, Default, Clone)]
    pub struct Failures {
        /// Every inspect fails (the runtime does not answer).
        pub inspect: bool,
        pub checkpoint: bool,
        pub restore_archive: bool,
        pub restore_in_place: bool,
        /// How long a restore from an archive takes (it is recorded when it starts).
        pub restore_delay: std::time::Duration,
    }

    /// Containers by name; an archive is a file with a first line `fake-archive NAME`
    /// followed by `padding` bytes.
    #[derive(Debug, Default)]
    pub struct FakeRuntime {
        pub node: String,
        state: Mutex<State>,
    }

    #[derive(Debug, Default)]
    struct State {
        containers: BTreeMap<String, ContainerInfo>,
        fail: Failures,
        padding: usize,
        next_address: u8,
        calls: Vec<String>,
    }

    impl FakeRuntime {
        pub fn new(node: &str) -> FakeRuntime {
            FakeRuntime {
                node: node.to_string(),
                state: Mutex::new(State {
                    next_address: 2,
                    ..Default::default()
                }),
            }
        }

        fn state(&self) -> std::sync::MutexGuard<'_, State> {
            self.state.lock().unwrap_or_else(|p| p.into_inner())
        }

        /// A running container `name` with a fresh address.
        pub fn run(&self, name: &str) {
            let mut s = self.state();
            let address = format!("10.89.0.{}", s.next_address);
            s.next_address += 1;
            s.containers.insert(
                name.to_string(),
                ContainerInfo {
                    id: format!("id-{name}"),
                    name: name.to_string(),
                    state: "running".into(),
                    address,
                },
            );
        }

        pub fn fail(&self, f: Failures) {
            self.state().fail = f;
        }

        /// Bytes added to every archive (to make it large).
        pub fn pad_archives(&self, bytes: usize) {
            self.state().padding = bytes;
        }

        /// The container's state word, if it exists.
        pub fn state_of(&self, name: &str) -> Option<String> {
            self.state().containers.get(name).map(|c| c.state.clone())
        }

        /// Every call so far ("checkpoint web", "restore-archive", …).
        pub fn calls(&self) -> Vec<String> {
            self.state().calls.clone()
        }

        fn failed(what: &str) -> RuntimeError {
            RuntimeError::Command {
                command: format!("fake {what}"),
                output: "exit status: 125: injected failure".into(),
            }
        }
    }

    impl Runtime for FakeRuntime {
        fn name(&self) -> &str {
            "fake"
        }

        fn inspect(&self, container: &str) -> Result<ContainerInfo, RuntimeError> {
            if self.state().fail.inspect {
                return Err(Self::failed("inspect"));
            }
            self.state()
                .containers
                .get(container)
                .cloned()
                .ok_or_else(|| RuntimeError::NotFound(container.to_string()))
        }

        fn checkpoint(&self, container: &str, archive: &Path) -> Result<Vec<u8>, RuntimeError> {
            let mut s = self.state();
            s.calls.push(format!("checkpoint {container}"));
            if s.fail.checkpoint {
                return Err(Self::failed("checkpoint"));
            }
            let padding = s.padding;
            let c = s
                .containers
                .get_mut(container)
                .filter(|c| c.state == "running")
                .ok_or_else(|| RuntimeError::NotFound(container.to_string()))?;
            c.state = "exited".into();
            let mut data = format!("fake-archive {container}\n").into_bytes();
            data.resize(data.len() + padding, b'x');
            std::fs::write(archive, data).map_err(|source| RuntimeError::Spawn {
                command: "fake checkpoint".into(),
                source,
            })?;
            Ok(format!("spec {container}").into_bytes())
        }

        fn restore_archive(
            &self,
            archive: &Path,
            spec: &[u8],
        ) -> Result<ContainerInfo, RuntimeError> {
            let data = std::fs::read(archive).map_err(|source| RuntimeError::Spawn {
                command: "fake restore".into(),
                source,
            })?;
            let delay = {
                let mut s = self.state();
                s.calls.push(format!(
                    "restore-archive ({})",
                    String::from_utf8_lossy(spec)
                ));
                s.fail.restore_delay
            };
            std::thread::sleep(delay);
            let mut s = self.state();
            if s.fail.restore_archive {
                return Err(Self::failed("restore --import"));
            }
            let first = data.split(|b| *b == b'\n').next().unwrap_or_default();
            let name = std::str::from_utf8(first)
                .ok()
                .and_then(|l| l.strip_prefix("fake-archive "))
                .ok_or_else(|| RuntimeError::Output {
                    command: "fake restore".into(),
                    detail: "not an archive".into(),
                })?
                .to_string();
            let address = format!("10.89.0.{}", s.next_address);
            s.next_address += 1;
            let c = ContainerInfo {
                id: format!("id-{name}"),
                name: name.clone(),
                state: "running".into(),
                address,
            };
            s.containers.insert(name, c.clone());
            Ok(c)
        }

        fn restore_in_place(
            &self,
            container: &str,
            _: &Path,
            _: &[u8],
        ) -> Result<(), RuntimeError> {
            let mut s = self.state();
            s.calls.push(format!("restore-in-place {container}"));
            if s.fail.restore_in_place {
                return Err(Self::failed("restore"));
            }
            let c = s
                .containers
                .get_mut(container)
                .ok_or_else(|| RuntimeError::NotFound(container.to_string()))?;
            c.state = "running".into();
            Ok(())
        }

        fn remove(&self, container: &str) -> Result<(), RuntimeError> {
            let mut s = self.state();
            s.calls.push(format!("remove {container}"));
            s.containers
                .remove(container)
                .map(|_| ())
                .ok_or_else(|| RuntimeError::NotFound(container.to_string()))
        }

        fn restore_in_place_command(&self, container: &str, _: &Path, _: &[u8]) -> String {
            format!("fake container restore {container}")
        }

        fn list_command(&self) -> String {
            "fake ps".into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_output_gives_id_name_state_and_the_first_address() {
        let out = r#"[{"Id":"abc","Name":"web","State":{"Status":"running"},
            "NetworkSettings":{"Networks":{"p4pods":{"IPAddress":"10.89.0.5"}}}}]"#;
        let c = parse_inspect("podman inspect", out).unwrap();
        assert_eq!(
            c,
            ContainerInfo {
                id: "abc".into(),
                name: "web".into(),
                state: "running".into(),
                address: "10.89.0.5".into()
            }
        );
        let e = parse_inspect("podman inspect", "[]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("0 containers"), "{e}");
        assert!(parse_inspect("podman inspect", "{").is_err());
    }

    #[test]
    fn podman_commands_carry_the_nodes_global_options_and_quote_for_a_shell() {
        let p = Podman {
            command: "podman".into(),
            global_args: vec!["--root".into(), "/var/lib/node b".into()],
            ignore_static_ip: true,
        };
        assert_eq!(
            p.restore_in_place_command("web", Path::new("/x.tar"), b""),
            "podman --root '/var/lib/node b' container restore --tcp-established web"
        );
    }

    #[test]
    fn a_failing_command_says_what_it_ran_and_what_it_printed() {
        let p = Podman {
            command: "sh".into(),
            global_args: vec!["-c".into(), "echo out; echo err >&2; exit 3".into()],
            ignore_static_ip: false,
        };
        let e = p.remove("x").unwrap_err().to_string();
        assert!(e.contains("exit status: 3"), "{e}");
        assert!(e.contains("out") && e.contains("err"), "{e}");
        let p = Podman {
            command: "/nonexistent/podman".into(),
            ..Podman::default()
        };
        assert!(matches!(p.remove("x"), Err(RuntimeError::Spawn { .. })));
    }
}
