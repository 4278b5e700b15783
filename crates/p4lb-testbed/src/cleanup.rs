//! Removing what testbeds and topologies left behind (crashed tests, killed
//! runs): sessions by name prefix, host network namespaces and links.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::paths;

/// What a cleanup removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CleanupReport {
    pub sessions_stopped: usize,
    pub session_dirs_removed: usize,
    pub netns_removed: usize,
    pub links_removed: usize,
    pub errors: Vec<String>,
}

/// The holder PID of a session directory if that process is alive and is the
/// `hold` of this very session (guards against PID reuse).
fn live_holder(session: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(session.join("holder.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmdline = String::from_utf8_lossy(&cmdline);
    let session = session.to_string_lossy();
    (cmdline.contains("hold") && cmdline.contains(session.as_ref())).then_some(pid)
}

fn stop_holder(pid: i32) {
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Removes session directories whose hold process is gone.
pub fn remove_dead_sessions() -> usize {
    let Ok(entries) = std::fs::read_dir(paths::sessions_dir()) else {
        return 0;
    };
    let mut n = 0;
    for e in entries.flatten() {
        let p = e.path();
        // A session being set up has no holder.pid yet: leave young ones alone.
        let young = e
            .metadata()
            .and_then(|m| m.modified())
            .map(|t| t.elapsed().unwrap_or_default() < Duration::from_secs(120))
            .unwrap_or(false);
        let being_set_up = young && !p.join("holder.pid").exists();
        if !being_set_up && live_holder(&p).is_none() {
            crate::cgroups::remove_session_leaf(&e.file_name().to_string_lossy());
            if std::fs::remove_dir_all(&p).is_ok() {
                n += 1;
            }
        }
    }
    n
}

fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Kills the processes in host network namespace `ns` and deletes it.
pub(crate) fn delete_host_netns(ns: &str) -> Result<(), String> {
    if let Ok(pids) = ip(&["netns", "pids", ns]) {
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    ip(&["netns", "del", ns]).map(|_| ())
}

/// Stops every session, host network namespace and host link whose name
/// starts with `prefix`, and removes the session directories.
pub fn cleanup(prefix: &str) -> CleanupReport {
    let mut r = CleanupReport::default();
    if prefix.is_empty() {
        r.errors.push("refusing an empty prefix".into());
        return r;
    }
    if let Ok(entries) = std::fs::read_dir(paths::sessions_dir()) {
        for e in entries.flatten() {
            if !e.file_name().to_string_lossy().starts_with(prefix) {
                continue;
            }
            let p = e.path();
            if let Some(pid) = live_holder(&p) {
                stop_holder(pid);
                r.sessions_stopped += 1;
            }
            crate::cgroups::remove_session_leaf(&e.file_name().to_string_lossy());
            match std::fs::remove_dir_all(&p) {
                Ok(()) => r.session_dirs_removed += 1,
                Err(err) => r.errors.push(format!("removing {}: {err}", p.display())),
            }
        }
    }
    crate::cgroups::prune_empty(Duration::from_secs(10));
    if let Ok(list) = ip(&["netns", "list"]) {
        for ns in list.lines().filter_map(|l| l.split_whitespace().next()) {
            if ns.starts_with(prefix) {
                match delete_host_netns(ns) {
                    Ok(()) => r.netns_removed += 1,
                    Err(e) => r.errors.push(e),
                }
            }
        }
    }
    if let Ok(list) = ip(&["-o", "link", "show"]) {
        for line in list.lines() {
            // "7: name@peer: <...>"
            let Some(name) = line.split(':').nth(1) else {
                continue;
            };
            let name = name.trim().split('@').next().unwrap_or("");
            if !name.is_empty() && name.starts_with(prefix) {
                match ip(&["link", "del", name]) {
                    Ok(_) => r.links_removed += 1,
                    Err(e) => r.errors.push(e),
                }
            }
        }
    }
    r
}
