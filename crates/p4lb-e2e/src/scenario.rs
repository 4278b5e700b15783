//! The live migration scenario: a testbed with p4lb installed the way
//! packaging/install.sh does (CRIU action script in /etc/criu/*.conf, the OCI
//! hook in hooks.d), the controller with its embedded software switch, the CNI
//! plugin wiring network namespaces that containers join (`--network ns:PATH`),
//! a VIP service, a `p4lb-testapp` server container behind it and a client
//! holding connections to the VIP while the container migrates.
//!
//! Two ways to migrate: [`World::migrate_podman`] is Podman's own commands on a p4lb
//! netavark network ([`World::create_network`], [`World::run_server_on_network`]):
//! the end-to-end tests of that path and `make demo` run it (and
//! [`World::migrate_podman_in_place`] the same without export/import, for a move on
//! one host); [`World::migrate`] is the
//! hand-wired `--network ns:` fallback (the namespace recreated and wired by the CNI
//! plugin with a restore hint).
//!
//! The p4lb binaries are used from `target/debug` (mounted read-only inside the
//! testbed); build them first:
//! `cargo build -p p4lb-controller -p p4lb-cni -p p4lb-netavark -p p4lb-criu-action
//! -p p4lb-oci-hook -p p4lb-agent`. The netavark plugin is copied to `/usr/libexec/netavark/p4lb`
//! (where packaging/install.sh puts it), so `podman network create -d p4lb` works
//! inside.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Instant;

use p4lb_api::api;
use p4lb_api::labels::CheckpointMode;
use p4lb_criu_action::record::{MigrationRecord, RecordState, RECORD_FILE};
use p4lb_testapp::report::Report;
use p4lb_testbed::session::{Testbed, TestbedOptions};
use p4lb_testbed::{cgroups, images, paths, testapp, wait};
use serde_json::Value;

use crate::error::{Context, Error, Result};

/// The service's virtual address and port.
pub const VIP: &str = "10.99.0.1";
pub const PORT: u16 = 7000;
/// The controller's API socket inside the testbed (the default one).
pub const SOCKET: &str = p4lb_api::DEFAULT_SOCKET;
/// The network namespace the server container joins (recreated per migration).
pub const POD_NETNS: &str = "/run/netns/srv";
/// The network namespace of the client.
pub const CLIENT_NETNS: &str = "/run/netns/cli";

/// Host path of a p4lb binary in target/debug; an error says how to build it.
pub(crate) fn bin(name: &str) -> Result<PathBuf> {
    let p = paths::target_dir().join("debug").join(name);
    if !p.is_file() {
        return Err(Error::Missing(format!(
            "{} is missing; build it first: cargo build -p p4lb-controller -p p4lb-cni \
             -p p4lb-netavark -p p4lb-criu-action -p p4lb-oci-hook -p p4lb-agent",
            p.display()
        )));
    }
    Ok(p)
}

/// Where a host path under the target directory appears inside the testbed.
pub(crate) fn inside(host: &Path) -> Result<String> {
    paths::inside_target(host)
        .map(|p| p.display().to_string())
        .ok_or_else(|| {
            Error::Scenario(format!(
                "{} is outside the target dir {}",
                host.display(),
                paths::target_dir().display()
            ))
        })
}

fn parse_json(what: &str, out: &str) -> Result<Value> {
    serde_json::from_str(out).map_err(|e| Error::Scenario(format!("{what}: {out:?}: {e}")))
}

/// Parses the migration record the CRIU action script writes
/// (`p4lb-migration.json` in the images).
pub fn parse_record(json: &str) -> Result<MigrationRecord> {
    serde_json::from_str(json)
        .map_err(|e| Error::Scenario(format!("migration record: {json:?}: {e}")))
}

/// The switch a scenario's controller drives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwitchTarget {
    /// p4lb's software switch, embedded in the controller (the default).
    Embedded,
    /// BMv2 from this install prefix (see [`crate::bmv2`]).
    Bmv2(PathBuf),
}

impl SwitchTarget {
    pub fn name(&self) -> &'static str {
        match self {
            SwitchTarget::Embedded => "p4lb-switch (embedded)",
            SwitchTarget::Bmv2(_) => "BMv2",
        }
    }
}

/// The testbed with p4lb installed and the controller running.
pub struct World {
    /// Declared before the testbed so that BMv2 stops first.
    bmv2: Option<crate::bmv2::Bmv2>,
    pub switch: SwitchTarget,
    pub tb: Testbed,
    /// Paths inside the testbed of the p4lb binaries.
    pub controller: String,
    pub ctl: String,
    pub cni: String,
    /// The netavark plugin, as built (installed as /usr/libexec/netavark/p4lb).
    pub netavark: String,
    pub action: String,
    pub hook: String,
    pub testapp: String,
}

impl World {
    /// Starts a testbed (`helper` is the `p4lb-testbed` binary that holds its
    /// namespaces, see [`p4lb_testbed::session::helper_binary`]), builds the
    /// images, installs p4lb and starts the controller.
    pub fn start(helper: PathBuf) -> Result<World> {
        World::start_on(helper, SwitchTarget::Embedded)
    }

    /// [`World::start`] with the controller driving `switch`.
    pub fn start_on(helper: PathBuf, switch: SwitchTarget) -> Result<World> {
        let testapp = testapp::ensure_static()?;
        let controller = inside(&bin("p4lb-controller")?)?;
        let ctl = inside(&bin("p4lbctl")?)?;
        let cni = inside(&bin("p4lb")?)?;
        let netavark = inside(&bin("p4lb-netavark")?)?;
        let action = inside(&bin("p4lb-criu-action")?)?;
        let hook = inside(&bin("p4lb-oci-hook")?)?;
        let testapp = inside(&testapp)?;
        let tb = Testbed::start(TestbedOptions {
            helper: Some(helper),
            ..Default::default()
        })?;
        let mut w = World {
            bmv2: None,
            switch,
            tb,
            controller,
            ctl,
            cni,
            netavark,
            action,
            hook,
            testapp,
        };
        images::build_podman_images(&w.tb)?;
        w.install()?;
        if let SwitchTarget::Bmv2(prefix) = &w.switch {
            w.bmv2 = Some(crate::bmv2::Bmv2::start(&w.tb, prefix)?);
        }
        w.start_controller()?;
        Ok(w)
    }

    /// A testbed where p4lb was installed by other means (a package, the node installer
    /// of the image) and whose controller runs already: `ctl` is how `p4lbctl` is run
    /// (a path, or a command prefix such as `podman exec NAME /usr/bin/p4lbctl`), `cni`
    /// the installed CNI plugin. Nothing of the build tree is used but the test
    /// application. Writes the scenario's CNI configurations.
    pub fn installed(tb: Testbed, ctl: &str, cni: &str) -> Result<World> {
        let testapp = inside(&testapp::ensure_static()?)?;
        let w = World {
            bmv2: None,
            switch: SwitchTarget::Embedded,
            tb,
            controller: String::new(),
            ctl: ctl.to_string(),
            cni: cni.to_string(),
            netavark: "/usr/libexec/netavark/p4lb".into(),
            action: "/usr/libexec/p4lb/p4lb-criu-action".into(),
            hook: "/usr/libexec/p4lb/p4lb-oci-hook".into(),
            testapp,
        };
        w.write_cni_confs()?;
        Ok(w)
    }

    /// What packaging/install.sh puts in /etc/criu and hooks.d, pointing at the
    /// binaries in the mounted target dir; and the CNI configurations.
    fn install(&self) -> Result<()> {
        let root = paths::repo_root();
        let hooks_file = root.join("crates/p4lb-oci-hook/hooks.d/p4lb.json");
        let hooks = std::fs::read_to_string(&hooks_file)
            .ctx(|| format!("reading {}", hooks_file.display()))?
            .replace("/usr/libexec/p4lb/p4lb-oci-hook", &self.hook);
        let criu_file = root.join("packaging/criu/p4lb.conf");
        let criu = std::fs::read_to_string(&criu_file)
            .ctx(|| format!("reading {}", criu_file.display()))?
            .replace("/usr/libexec/p4lb/p4lb-criu-action", &self.action);
        self.sh(&format!(
            "set -e; mkdir -p /run/p4lb /var/lib/p4lb /etc/p4lb /usr/share/containers/oci/hooks.d && \
             chmod 0700 /run/p4lb /var/lib/p4lb /etc/p4lb && \
             for f in runc.conf crun.conf; do grep -v '^action-script ' > /etc/criu/$f <<'EOF'\n{criu}EOF\n\
             done && cat > /etc/criu/default.conf <<'EOF'\n{criu}EOF\n\
             cat > /usr/share/containers/oci/hooks.d/p4lb.json <<'EOF'\n{hooks}\nEOF\n\
             mkdir -p /usr/libexec/netavark && install -m 0755 {} /usr/libexec/netavark/p4lb\n",
            self.netavark
        ))?;
        self.write_cni_confs()
    }

    /// /tmp/pods.json and /tmp/clients.json, the networks of the scenario's
    /// namespaces.
    fn write_cni_confs(&self) -> Result<()> {
        for (name, labels, subnet) in [
            ("pods", r#"{"app":"web"}"#, "10.88.0.0/24"),
            ("clients", "{}", "10.66.0.0/24"),
        ] {
            // addRestoredIp=false: the CRIU action script moves every address the
            // container had (also those of earlier migrations).
            let conf = format!(
                r#"{{"cniVersion":"1.0.0","name":"{name}","type":"p4lb","controllerSocket":"{SOCKET}","addRestoredIp":false,"labels":{labels},"ipam":{{"type":"host-local","subnet":"{subnet}","routes":[{{"dst":"0.0.0.0/0"}}],"dataDir":"/var/lib/cni/{name}"}}}}"#
            );
            self.sh(&format!("cat > /tmp/{name}.json <<'EOF'\n{conf}\nEOF\n"))?;
        }
        Ok(())
    }

    /// Starts the controller (embedded software switch, or BMv2 over P4Runtime and
    /// Thrift); its socket must be 0600.
    pub fn start_controller(&self) -> Result<()> {
        let switch = match &self.bmv2 {
            None => String::new(),
            Some(b) => format!(
                " --switch-kind bmv2 --switch-address unix:{} --bmv2-json {} --thrift {}",
                crate::bmv2::P4RT_SOCKET,
                inside(&b.json)?,
                crate::bmv2::THRIFT
            ),
        };
        // The controller's log filter (RUST_LOG) comes from P4LB_CONTROLLER_LOG on the
        // host, so that a bench or test run can keep a debug log; default info.
        let filter = std::env::var("P4LB_CONTROLLER_LOG")
            .ok()
            .filter(|f| {
                !f.is_empty()
                    && f.len() <= 200
                    && f.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_=,:.".contains(c))
            })
            .unwrap_or_else(|| "info".into());
        self.sh(&format!(
            "rm -f {SOCKET}; RUST_LOG={filter} setsid {} --state-dir /var/lib/p4lb --socket {SOCKET}{switch} \
             </dev/null >>/tmp/controller.log 2>&1 & echo $! > /tmp/controller.pid; \
             for i in $(seq 100); do [ -S {SOCKET} ] && exit 0; sleep 0.1; done; \
             echo controller did not start; cat /tmp/controller.log; exit 1",
            self.controller
        ))?;
        let mode = self.sh(&format!("stat -c %a {SOCKET}"))?;
        if mode.trim() != "600" {
            return Err(Error::Scenario(format!(
                "controller socket mode is {}, not 600",
                mode.trim()
            )));
        }
        Ok(())
    }

    pub fn stop_controller(&self) -> Result<()> {
        self.sh("kill -TERM $(cat /tmp/controller.pid); \
             for i in $(seq 50); do kill -0 $(cat /tmp/controller.pid) 2>/dev/null || exit 0; \
             sleep 0.1; done; kill -KILL $(cat /tmp/controller.pid)")
            .map(|_| ())
    }

    /// Runs a shell script inside; an error carries its output when it fails.
    pub fn sh(&self, script: &str) -> Result<String> {
        Ok(self.tb.sh(script)?)
    }

    /// Runs a shell script inside; returns (success, stdout, stderr).
    pub fn try_sh(&self, script: &str) -> Result<(bool, String, String)> {
        let out = self.tb.output(&["/bin/sh", "-c", script])?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// Runs the CNI plugin like a runtime does; returns its JSON result.
    pub fn cni(&self, cmd: &str, id: &str, netns: &str, conf: &str, args: &str) -> Result<Value> {
        let out = self.sh(&format!(
            "CNI_COMMAND={cmd} CNI_CONTAINERID={id} CNI_NETNS={netns} CNI_IFNAME=eth0 \
             CNI_PATH=/opt/cni/bin:/usr/lib/cni CNI_ARGS='{args}' {} < /tmp/{conf}.json",
            self.cni
        ))?;
        if out.trim().is_empty() {
            return Ok(Value::Null);
        }
        parse_json(&format!("CNI {cmd} output"), &out)
    }

    /// Creates a network namespace at /run/netns/<name> wired by the CNI
    /// plugin; returns its address.
    pub fn pod_netns(&self, name: &str, id: &str, conf: &str, args: &str) -> Result<String> {
        self.sh(&format!("ip netns add {name}"))?;
        let r = self.cni("ADD", id, &format!("/run/netns/{name}"), conf, args)?;
        r["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .map(str::to_string)
            .ok_or_else(|| Error::Scenario(format!("CNI ADD gave no address: {r}")))
    }

    /// `p4lbctl --json ARGS`, read into `T`: an API message (or a list of them)
    /// through its serde derive, or a `Value`.
    pub fn ctl_json<T: serde::de::DeserializeOwned>(&self, args: &str) -> Result<T> {
        let out = self.sh(&format!("{} --socket {SOCKET} --json {args}", self.ctl))?;
        serde_json::from_str(&out)
            .map_err(|e| Error::Scenario(format!("p4lbctl {args}: {out:?}: {e}")))
    }

    pub fn endpoint(&self, key: &str) -> Result<api::Endpoint> {
        self.ctl_json(&format!("endpoints show {key}"))
    }

    /// The controller's migration records, oldest first.
    pub fn migrations(&self) -> Result<Vec<api::Migration>> {
        self.ctl_json("migrations ls")
    }

    /// The service `web` at VIP:PORT selecting `app=web`.
    pub fn add_service(&self) -> Result<()> {
        self.sh(&format!(
            "{} --socket {SOCKET} services add --vip {VIP} --port {PORT} --selector app=web web",
            self.ctl
        ))
        .map(|_| ())
    }

    /// IPv4 addresses configured in a namespace (`ip -j addr`).
    pub fn addrs_in(&self, netns_name: &str) -> Result<Vec<String>> {
        let out = self.sh(&format!("ip -n {netns_name} -4 -j addr show dev eth0"))?;
        let v = parse_json("ip -j addr", &out)?;
        let mut a = Vec::new();
        for l in v.as_array().cloned().unwrap_or_default() {
            for i in l["addr_info"].as_array().cloned().unwrap_or_default() {
                if let Some(s) = i["local"].as_str() {
                    a.push(s.to_string());
                }
            }
        }
        Ok(a)
    }

    /// Starts the server container in the network namespace at POD_NETNS.
    pub fn run_server(&self, name: &str, annotations: &[&str]) -> Result<()> {
        let ann: String = annotations
            .iter()
            .map(|a| format!(" --annotation {a}"))
            .collect();
        self.start_test_server(name, &format!("{ann} --network ns:{POD_NETNS}"))
    }

    /// `podman run -d --name NAME{options}` of the stateful test server listening on
    /// PORT; returns once it listens.
    fn start_test_server(&self, name: &str, options: &str) -> Result<()> {
        self.start_test_server_as("podman", name, options)
    }

    fn start_test_server_as(&self, podman: &str, name: &str, options: &str) -> Result<()> {
        self.sh(&format!(
            "{podman} run -d --name {name}{options} {} {} server --listen 0.0.0.0:{PORT} \
             --stateful",
            images::TEST_IMAGE,
            images::TESTAPP_IN_IMAGE
        ))?;
        wait::until(20, "the server container to listen", || {
            self.try_sh(&format!("{podman} logs {name} 2>&1 | grep -q listening"))
                .map(|(ok, _, _)| ok)
                .unwrap_or(false)
        })?;
        Ok(())
    }

    /// Controller log tail and state, for errors.
    pub fn diag(&self) -> String {
        self.try_sh(&format!(
            "tail -n 40 /tmp/controller.log; {c} --socket {SOCKET} endpoints ls; \
             {c} --socket {SOCKET} migrations ls",
            c = self.ctl
        ))
        .map(|(_, o, _)| o)
        .unwrap_or_else(|e| format!("(no diagnostics: {e})"))
    }

    /// Checkpoints `name` to an uncompressed archive; returns (ok, stdout+stderr).
    pub fn checkpoint(&self, name: &str, archive: &str) -> Result<(bool, String)> {
        let (ok, o, e) = self.try_sh(&checkpoint_command(name, archive))?;
        Ok((ok, format!("{o}{e}")))
    }

    /// Runs `cmd`; when it fails, an error saying `what` failed, with its output and the
    /// testbed's diagnostics.
    fn step(&self, what: &str, cmd: &str) -> Result<()> {
        let (ok, o, e) = self.try_sh(cmd)?;
        if ok {
            return Ok(());
        }
        Err(Error::Scenario(format!(
            "{what} failed: {o}{e}\n{}",
            self.diag()
        )))
    }

    /// The record in `archive`, which must be a checkpointed migration.
    fn checkpointed_record(&self, archive: &str) -> Result<MigrationRecord> {
        let rec = self.record_in(archive)?;
        if rec.state != RecordState::Checkpointed || rec.mode != CheckpointMode::Migrate {
            return Err(Error::Scenario(format!(
                "record is not a checkpointed migration: {rec:?}"
            )));
        }
        Ok(rec)
    }

    /// The record the CRIU action script wrote into the images, read back
    /// from the archive.
    pub fn record_in(&self, archive: &str) -> Result<MigrationRecord> {
        let j = self.sh(&format!("tar -xOf {archive} checkpoint/{RECORD_FILE}"))?;
        parse_record(&j)
    }

    /// One migration of container `name`: checkpoint, remove, a new network
    /// namespace at the same path with a new address (registered locked, as a
    /// restore of the old one), restore. `cur_id`/`new_id` are the CNI
    /// container ids of the old and new pod; `i` numbers the archive.
    pub fn migrate(&self, name: &str, cur_id: &str, new_id: &str, i: usize) -> Result<Moved> {
        let archive = format!("/tmp/ck-{i}.tar");
        let t = Instant::now();
        self.step(
            &format!("checkpoint {i}"),
            &checkpoint_command(name, &archive),
        )?;
        let checkpoint_ms = t.elapsed().as_millis();
        let rec = self.checkpointed_record(&archive)?;
        let old_ip = rec.source.ip.to_string();
        self.sh(&format!("podman rm -f {name} >/dev/null"))?;
        self.cni("DEL", cur_id, POD_NETNS, "pods", "")?;
        self.sh("ip netns del srv")?;
        let t = Instant::now();
        let new_ip = self.pod_netns(
            "srv",
            new_id,
            "pods",
            &format!("IgnoreUnknown=1;P4LB_RESTORE_FROM={old_ip}"),
        )?;
        self.step(
            &format!("restore {i}"),
            &format!("podman container restore --import {archive} --tcp-established"),
        )?;
        let restore_ms = t.elapsed().as_millis();
        if let Ok(id) = self.sh(&format!("podman inspect -f '{{{{.Id}}}}' {name}")) {
            cgroups::prune_restore_copies(id.trim());
        }
        self.sh(&format!("rm -f {archive}"))?;
        Ok(Moved {
            old_ip,
            new_ip,
            checkpoint_ms,
            restore_ms,
        })
    }

    /// Starts `p4lb-testapp client` in the client namespace (`cli`, see
    /// [`World::pod_netns`]) against VIP:PORT.
    pub fn start_client(&self, conns: usize, rate: f64) -> Result<Client<'_>> {
        self.start_client_to(&format!("{VIP}:{PORT}"), CLIENT_PID, conns, rate)
    }

    /// [`World::start_client`] with `--pipeline`: requests leave on schedule without
    /// waiting for replies, so they keep coming while the backend is locked.
    pub fn start_pipelined_client(&self, conns: usize, rate: f64) -> Result<Client<'_>> {
        self.spawn_client(
            &format!("{VIP}:{PORT}"),
            CLIENT_PID,
            &format!("--conns {conns} --rate {rate} --pipeline"),
        )
    }

    /// Starts `p4lb-testapp client` in the client namespace against `target`;
    /// its pid goes to `pid_file` (one per client running at the same time).
    pub fn start_client_to(
        &self,
        target: &str,
        pid_file: &str,
        conns: usize,
        rate: f64,
    ) -> Result<Client<'_>> {
        self.spawn_client(target, pid_file, &format!("--conns {conns} --rate {rate}"))
    }

    fn spawn_client(&self, target: &str, pid_file: &str, args: &str) -> Result<Client<'_>> {
        let child = self.tb.spawn(&[
            "/bin/sh",
            "-c",
            &format!(
                "echo $$ > {pid_file}; ulimit -n $(ulimit -Hn); exec ip netns exec cli {} \
                 client --target {target} {args}",
                self.testapp
            ),
        ])?;
        Ok(Client {
            w: self,
            child: Some(child),
            pid_file: pid_file.to_string(),
        })
    }
}

/// The Podman-native steps: a p4lb netavark network (`podman network create -d
/// p4lb`), containers run on it, and a migration that is nothing but `podman
/// container checkpoint --export`, `podman rm` and `podman container restore
/// --import`. The netavark plugin tells the restore from a fresh start by itself.
impl World {
    /// `podman network create -d p4lb --subnet SUBNET -o labels=app=web NAME`: a p4lb
    /// network whose endpoints the service `web` (see [`World::add_service`]) selects.
    pub fn create_network(&self, name: &str, subnet: &str) -> Result<()> {
        self.sh(&format!(
            "podman network create -d p4lb --subnet {subnet} -o labels=app=web {name}"
        ))
        .map(|_| ())
    }

    /// `podman run --network NET` of the stateful test server listening on PORT;
    /// returns once it listens.
    pub fn run_server_on_network(&self, name: &str, net: &str) -> Result<()> {
        self.start_test_server(name, &format!(" --network {net}"))
    }

    /// [`World::run_server_on_network`] with `podman` as the command (a node's).
    pub fn run_server_on_network_as(&self, podman: &str, name: &str, net: &str) -> Result<()> {
        self.start_test_server_as(podman, name, &format!(" --network {net}"))
    }

    /// The container's address on network `net`, as `podman inspect` reports it.
    pub fn address(&self, name: &str, net: &str) -> Result<String> {
        let ip = self.sh(&format!(
            "podman inspect -f '{{{{(index .NetworkSettings.Networks \"{net}\").IPAddress}}}}' \
             {name}"
        ))?;
        let ip = ip.trim();
        if ip.parse::<std::net::Ipv4Addr>().is_err() {
            return Err(Error::Scenario(format!(
                "container {name} has no IPv4 address on network {net}: {ip:?}"
            )));
        }
        Ok(ip.to_string())
    }

    /// The container's network namespace: its name under /run/netns.
    pub fn netns_of(&self, name: &str) -> Result<String> {
        let key = self.sh(&format!(
            "podman inspect -f '{{{{.NetworkSettings.SandboxKey}}}}' {name}"
        ))?;
        match key.trim().rsplit('/').next() {
            Some(n) if !n.is_empty() => Ok(n.to_string()),
            _ => Err(Error::Scenario(format!(
                "container {name} has no network namespace: {key:?}"
            ))),
        }
    }

    /// The controller's endpoints (`p4lbctl --json endpoints ls`).
    pub fn endpoints(&self) -> Result<Vec<api::Endpoint>> {
        self.ctl_json("endpoints ls")
    }

    /// One migration of container `name` on p4lb network `net` as a Podman user
    /// types it: `podman container checkpoint --tcp-established --export`, `podman
    /// rm`, `podman container restore --import … --tcp-established`, with
    /// `--ignore-static-ip` (a new address) or without (the address kept). The
    /// record in the archive must be a checkpointed migration of the address the
    /// container had. `i` numbers the archive.
    pub fn migrate_podman(
        &self,
        name: &str,
        net: &str,
        i: usize,
        ignore_static_ip: bool,
    ) -> Result<Moved> {
        let archive = format!("/tmp/native-ck-{i}.tar");
        let old_ip = self.address(name, net)?;
        let t = Instant::now();
        self.step(
            &format!("checkpoint {i}"),
            &checkpoint_command(name, &archive),
        )?;
        let checkpoint_ms = t.elapsed().as_millis();
        let rec = self.checkpointed_record(&archive)?;
        if rec.source.ip.to_string() != old_ip {
            return Err(Error::Scenario(format!(
                "the record's source is {}, the container was at {old_ip}: {rec:?}",
                rec.source.ip
            )));
        }
        let t = Instant::now();
        self.sh(&format!("podman rm {name} >/dev/null"))?;
        self.restore_podman(
            &format!("podman container restore --import {archive} --tcp-established"),
            name,
            i,
            ignore_static_ip,
        )?;
        let restore_ms = t.elapsed().as_millis();
        self.sh(&format!("rm -f {archive}"))?;
        Ok(Moved {
            old_ip,
            new_ip: self.address(name, net)?,
            checkpoint_ms,
            restore_ms,
        })
    }

    /// One migration of container `name` on p4lb network `net` on the same host, without
    /// an archive: `podman container checkpoint --tcp-established NAME` (the images stay
    /// in the container's storage), then `podman container restore --tcp-established
    /// [--ignore-static-ip] NAME`. No export, `rm` or import; the netavark plugin tells
    /// the restore from a fresh start as it does for an imported archive.
    pub fn migrate_podman_in_place(
        &self,
        name: &str,
        net: &str,
        i: usize,
        ignore_static_ip: bool,
    ) -> Result<Moved> {
        self.migrate_podman_in_place_with(name, net, i, ignore_static_ip, "")
    }

    /// [`World::migrate_podman_in_place`] with more options (`flags`, e.g. ` --keep`)
    /// for both podman commands.
    pub fn migrate_podman_in_place_with(
        &self,
        name: &str,
        net: &str,
        i: usize,
        ignore_static_ip: bool,
        flags: &str,
    ) -> Result<Moved> {
        let old_ip = self.address(name, net)?;
        let t = Instant::now();
        self.step(
            &format!("checkpoint {i} (in place)"),
            &format!("podman container checkpoint --tcp-established{flags} {name}"),
        )?;
        let checkpoint_ms = t.elapsed().as_millis();
        let t = Instant::now();
        self.restore_podman(
            &format!("podman container restore --tcp-established{flags} {name}"),
            name,
            i,
            ignore_static_ip,
        )?;
        Ok(Moved {
            old_ip,
            new_ip: self.address(name, net)?,
            checkpoint_ms,
            restore_ms: t.elapsed().as_millis(),
        })
    }

    /// Runs the restore command `restore` (with `--ignore-static-ip` when asked) of
    /// container `name`, and prunes the cgroup copies the restore left.
    fn restore_podman(
        &self,
        restore: &str,
        name: &str,
        i: usize,
        ignore_static_ip: bool,
    ) -> Result<()> {
        let ignore = if ignore_static_ip {
            " --ignore-static-ip"
        } else {
            ""
        };
        self.step(&format!("restore {i}"), &format!("{restore}{ignore}"))?;
        let id = self.sh(&format!("podman inspect -f '{{{{.Id}}}}' {name}"))?;
        cgroups::prune_restore_copies(id.trim());
        Ok(())
    }
}

const CLIENT_PID: &str = "/tmp/client.pid";

/// `podman container checkpoint` of `name` to the uncompressed archive `archive`.
fn checkpoint_command(name: &str, archive: &str) -> String {
    format!(
        "podman container checkpoint --tcp-established --compress none --export {archive} {name}"
    )
}

/// What one migration did.
#[derive(Debug, Clone)]
pub struct Moved {
    pub old_ip: String,
    pub new_ip: String,
    pub checkpoint_ms: u128,
    /// From the new namespace's creation ([`World::migrate`]), from `podman rm`
    /// ([`World::migrate_podman`]) or from the restore command
    /// ([`World::migrate_podman_in_place`]) to the end of the restore.
    pub restore_ms: u128,
}

/// A running `p4lb-testapp client`; stopped when dropped.
pub struct Client<'a> {
    w: &'a World,
    child: Option<Child>,
    pid_file: String,
}

/// The client's reports: interim ones (one per [`Client::mark`]) and the final one.
#[derive(Debug, Clone)]
pub struct ClientOutput {
    pub interim: Vec<Report>,
    pub last: Report,
    pub stderr: String,
}

impl Client<'_> {
    /// Asks for an interim report (SIGUSR1) and lets it reach stdout.
    pub fn mark(&self) -> Result<()> {
        self.w.sh(&format!("kill -USR1 $(cat {})", self.pid_file))?;
        std::thread::sleep(std::time::Duration::from_millis(300));
        Ok(())
    }

    /// Stops the client (SIGTERM) and parses its reports.
    pub fn finish(mut self) -> Result<ClientOutput> {
        // A client that already exited still has its reports to give.
        let (running, _, _) = self
            .w
            .try_sh(&format!("kill -TERM $(cat {})", self.pid_file))?;
        if !running {
            eprintln!("p4lb-e2e: the client had exited before the end of the run");
        }
        let child = self
            .child
            .take()
            .ok_or_else(|| Error::Scenario("client already finished".into()))?;
        let out = child
            .wait_with_output()
            .ctx(|| "waiting for the client".to_string())?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let mut reps = reports(&stdout)?;
        let last = match reps.iter().position(|r| r.r#final) {
            Some(i) => reps.remove(i),
            None => {
                return Err(Error::Scenario(format!(
                    "the client printed no final report; stderr: {stderr}"
                )))
            }
        };
        Ok(ClientOutput {
            interim: reps,
            last,
            stderr,
        })
    }
}

impl Drop for Client<'_> {
    /// A client dropped without [`Client::finish`] (a test that failed midway): its
    /// output pipes are closed first, so that a client blocked on a full pipe while
    /// writing its reports ends too instead of being waited for forever.
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            drop(c.stdout.take());
            drop(c.stderr.take());
            let _ = self
                .w
                .sh(&format!("kill -TERM $(cat {}) 2>/dev/null", self.pid_file));
            let _ = c.wait();
        }
    }
}

/// Parses the JSON reports among the client's stdout lines.
pub fn reports(stdout: &str) -> Result<Vec<Report>> {
    stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| {
            serde_json::from_str::<Report>(l)
                .map_err(|e| Error::Scenario(format!("bad client report {l:?}: {e}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_skip_human_lines_and_reject_bad_json() {
        let r = Report::new(true, 5, vec![]);
        let line = serde_json::to_string(&r).unwrap();
        let got = reports(&format!("hello\n{line}\n")).unwrap();
        assert_eq!(got.len(), 1);
        assert!(got[0].r#final);
        assert!(reports("{not json").is_err());
    }

    #[test]
    fn the_action_scripts_record_is_read_typed() {
        let json = r#"{"version":1,"migration_id":"mig-1","mode":"migrate",
            "state":"checkpointed","source":{"key":"srv0/eth0","container_id":"srv0",
            "ifname":"eth0","ip":"10.88.0.2","prefix_len":24,"mac":"02:00:00:00:00:01",
            "netns_inode":4026532000},"addresses":["10.88.0.2"],"created_unix_ms":1}"#;
        let rec = parse_record(json).unwrap();
        assert_eq!(rec.state, RecordState::Checkpointed);
        assert_eq!(rec.mode, CheckpointMode::Migrate);
        assert_eq!(rec.source.ip.to_string(), "10.88.0.2");
        assert!(!rec.leave_running);
        let e = parse_record("{\"version\": 1, \"migration_id\": \n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("migration record"), "{e}");
    }

    #[test]
    fn missing_binary_says_how_to_build_it() {
        let e = bin("no-such-p4lb-binary").unwrap_err().to_string();
        assert!(e.contains("cargo build -p p4lb-controller"), "{e}");
    }
}
