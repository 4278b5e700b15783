//! The cost of one durable save of the controller's state (not a test):
//! `cargo bench -p p4lb-controller --bench save` (options after `--`, e.g.
//! `-- --saves 500 --endpoints 1,100 --dir /var/lib/p4lb-bench`).
//!
//! For each state size (endpoints, with one service selecting them all and a history
//! of finished migrations), in one run, p50 / p99 / max over `--saves` saves:
//! 1. the parts of a save: encoding the state to JSON; the hand-off to a blocking
//!    thread and back (`spawn_blocking`, as the commit path does); and the parts of
//!    the atomic replacement of `state.json` (create the temporary file, write, fsync,
//!    rename, fsync of the directory);
//! 2. the whole save the old way (`p4lb_api::write_atomic` of the encoded state) and
//!    the new way (`Store::save`: one record written into the journal's existing
//!    blocks, one fdatasync; compactions included), alternating save by save so both
//!    see the same disk and load, and their ratio; and, for comparison, the same
//!    bytes appended to a file that grows, with one fdatasync (which then also
//!    commits the file's new size).
//!
//! `--busy` adds another writer on the same file system (CRIU's images during a
//! checkpoint), whose pending data the file system's journal commit of the old save
//! may have to wait for.
//!
//! The state directory is a temporary directory under `--dir` (default: the system's
//! temporary directory; use a directory on the disk the controller's state lives on).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser;

use p4lb_controller::state::{
    EndpointRec, EndpointState, MigrationRec, MigrationState, ServiceRec, State,
};
use p4lb_controller::store::Store;

#[derive(Debug, Parser)]
struct Args {
    /// Saves per measured row.
    #[arg(long, default_value_t = 300)]
    saves: usize,
    /// Endpoints in the state; one group of rows per value.
    #[arg(long, value_delimiter = ',', default_value = "1,100")]
    endpoints: Vec<usize>,
    /// Finished migrations kept in the state.
    #[arg(long, default_value_t = 20)]
    migrations: usize,
    /// Where the temporary state directories are made.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Another writer on the same file system meanwhile, as CRIU writing its images
    /// during a checkpoint: a thread that writes a new 64 MiB file 1 MiB at a time, over
    /// and over, without syncing it.
    #[arg(long)]
    busy: bool,
    /// Passed by `cargo bench` to every bench target; nothing to do with it.
    #[arg(long, hide = true)]
    bench: bool,
}

fn state_of(endpoints: usize, migrations: usize) -> State {
    let mut s = State::new();
    let mut keys = Vec::new();
    for i in 0..endpoints {
        let key = format!("c{i:04}/eth0");
        let ip = Ipv4Addr::new(10, 88, (i / 250) as u8, (i % 250) as u8 + 2);
        let mut labels = BTreeMap::new();
        labels.insert("app".to_string(), "web".to_string());
        labels.insert("podman.name".to_string(), format!("web-{i}"));
        s.endpoints.insert(
            key.clone(),
            EndpointRec {
                key: key.clone(),
                container_id: format!("{:064x}", i as u128 * 0x9e37_79b9_7f4a_7c15),
                ifname: "eth0".into(),
                netns_path: format!("/run/netns/netns-{i:08x}-1234-5678-9abc-def012345678"),
                netns_inode: 4026532000 + i as u64,
                ip,
                prefix_len: 16,
                mac: [0x02, 0x42, 10, 88, (i / 250) as u8, (i % 250) as u8],
                gateway: Some(Ipv4Addr::new(10, 88, 0, 1)),
                host_ifname: format!("p4lb{i:08x}"),
                switch_port: 10 + i as u32,
                backend_id: 1 + i as u16,
                backend_ip: ip,
                locked: false,
                state: EndpointState::Ready,
                labels,
                network: "p4lb".into(),
                migrated_ips: Vec::new(),
                restore_of_ip: None,
                created_unix_ms: 1_790_000_000_000 + i as i64,
                detached: false,
                host_if_local: true,
                node: "node-a".into(),
                behind_node: false,
                next_hop_mac: None,
            },
        );
        keys.push(key);
    }
    let backends: Vec<u16> = (1..=endpoints as u16).collect();
    let slots =
        p4lb_controller::maglev::populate(&backends, p4lb_controller::maglev::DEFAULT_SLOTS);
    s.services.insert(
        "web".into(),
        ServiceRec {
            name: "web".into(),
            vip: Ipv4Addr::new(10, 96, 0, 10),
            protocol: 6,
            port: 80,
            target_port: 8080,
            backends: Vec::new(),
            selector: "app=web".into(),
            name_pattern: String::new(),
            service_id: 1,
            slot_count: p4lb_controller::maglev::DEFAULT_SLOTS,
            resolved: keys,
            slots,
        },
    );
    for m in 0..migrations {
        s.migrations.push(MigrationRec {
            id: format!("m{m}"),
            source_key: "c0000/eth0".into(),
            target_key: "c0001/eth0".into(),
            source_ip: Some(Ipv4Addr::new(10, 88, 0, 2)),
            target_ip: Some(Ipv4Addr::new(10, 88, 0, 3)),
            state: MigrationState::Done,
            backend_id: 1,
            locked_unix_us: 1_790_000_000_000_000 + m as i64,
            checkpointed_unix_us: 1_790_000_000_100_000,
            restore_started_unix_us: 1_790_000_000_200_000,
            restored_unix_us: 1_790_000_000_300_000,
            unlocked_unix_us: 1_790_000_000_400_000,
            switchover_us: 1900,
            stall_us: 400_000,
            connections_carried: 20,
            image_dir: "/var/lib/containers/storage/overlay-containers/x/userdata/checkpoint"
                .into(),
            source_node: "node-a".into(),
            ..Default::default()
        });
    }
    s.next_migration = migrations as u64;
    s
}

#[derive(Default)]
struct Series(Vec<f64>);

impl Series {
    fn add(&mut self, d: Duration) {
        self.0.push(d.as_secs_f64() * 1e3);
    }
    fn pct(&self, p: f64) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        if v.is_empty() {
            return 0.0;
        }
        let i = ((v.len() - 1) as f64 * p).round() as usize;
        v[i]
    }
    fn row(&self, name: &str) {
        println!(
            "  {name:<48} p50 {:>7.3} ms  p99 {:>7.3} ms  max {:>7.3} ms",
            self.pct(0.5),
            self.pct(0.99),
            self.pct(1.0)
        );
    }
}

/// The atomic replacement of `state.json` step by step (what `write_atomic` does).
fn write_atomic_parts(dir: &std::path::Path, data: &[u8], parts: &mut [Series; 5]) -> Result<()> {
    let tmp = dir.join(".state.json.tmp");
    let path = dir.join("state.json");
    let t = Instant::now();
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    parts[0].add(t.elapsed());
    let t = Instant::now();
    f.write_all(data)?;
    parts[1].add(t.elapsed());
    let t = Instant::now();
    f.sync_all()?;
    parts[2].add(t.elapsed());
    let t = Instant::now();
    std::fs::rename(&tmp, &path)?;
    parts[3].add(t.elapsed());
    let t = Instant::now();
    File::open(dir)?.sync_all()?;
    parts[4].add(t.elapsed());
    Ok(())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "durable save of the controller's state, {} saves per row, in {} (load average {})",
        args.saves,
        base.display(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy_dir = tempfile::tempdir_in(&base)?;
    let writer = args.busy.then(|| {
        let stop = stop.clone();
        let path = busy_dir.path().join("images");
        println!("with another writer on the same file system (--busy)");
        std::thread::spawn(move || -> std::io::Result<u64> {
            let chunk = vec![0x5au8; 1024 * 1024];
            let mut written = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut f = File::create(&path)?;
                for _ in 0..64 {
                    f.write_all(&chunk)?;
                    written += chunk.len() as u64;
                }
            }
            Ok(written)
        })
    });
    let started = Instant::now();
    for &n in &args.endpoints {
        let mut state = state_of(n, args.migrations);
        let size = Store::encode(&state, std::path::Path::new("state.json"))?.len();
        println!(
            "\n{n} endpoints, {} migrations: state {size} bytes",
            args.migrations
        );

        // 1. The parts.
        let d = tempfile::tempdir_in(&base)?;
        let mut encode = Series::default();
        let mut handoff = Series::default();
        let mut parts: [Series; 5] = Default::default();
        for i in 0..args.saves {
            state.next_migration = i as u64;
            let t = Instant::now();
            let data = Store::encode(&state, std::path::Path::new("state.json"))?;
            encode.add(t.elapsed());
            let t = Instant::now();
            let inside = rt.block_on(async {
                tokio::task::spawn_blocking(move || {
                    let t = Instant::now();
                    std::hint::black_box(&data);
                    t.elapsed()
                })
                .await
            })?;
            handoff.add(t.elapsed().saturating_sub(inside));
            write_atomic_parts(d.path(), &Store::encode(&state, d.path())?, &mut parts)?;
        }
        encode.row("encode to JSON");
        handoff.row("spawn_blocking hand-off and back");
        for (name, s) in [
            "create the temporary file",
            "write",
            "fsync of the file",
            "rename",
            "fsync of the directory",
        ]
        .iter()
        .zip(parts.iter())
        {
            s.row(name);
        }

        // 2. Old against new, alternating.
        let old_dir = tempfile::tempdir_in(&base)?;
        let new_dir = tempfile::tempdir_in(&base)?;
        let grow_dir = tempfile::tempdir_in(&base)?;
        let store = Store::open(new_dir.path())?;
        // As the controller does when it starts: the journal exists before any save.
        store.load()?;
        store.compact_state(&state)?;
        let mut grow = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(grow_dir.path().join("state.journal"))?;
        let mut old = Series::default();
        let mut new = Series::default();
        let mut appended = Series::default();
        for i in 0..args.saves {
            state.next_migration = 1_000_000 + i as u64;
            let t = Instant::now();
            let data = Store::encode(&state, old_dir.path())?;
            p4lb_api::write_atomic(&old_dir.path().join("state.json"), &data)?;
            old.add(t.elapsed());
            let t = Instant::now();
            store.save(&state)?;
            new.add(t.elapsed());
            // The same bytes appended to a file that grows (not what the store does).
            let t = Instant::now();
            let data = Store::encode(&state, grow_dir.path())?;
            grow.write_all(&data)?;
            grow.sync_data()?;
            appended.add(t.elapsed());
        }
        old.row("old: encode + write_atomic(state.json)");
        new.row("new: encode + Store::save (journal)");
        appended.row("(encode + append to a growing file + fdatasync)");
        println!(
            "  ratio old / new: p50 {:.2}, p99 {:.2}",
            old.pct(0.5) / new.pct(0.5),
            old.pct(0.99) / new.pct(0.99)
        );
        if store.load()? != state {
            anyhow::bail!("the store did not load back the last state saved");
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(w) = writer {
        let written = w
            .join()
            .map_err(|_| anyhow::anyhow!("the writer panicked"))??;
        println!(
            "\nthe other writer wrote {:.0} MiB/s meanwhile",
            written as f64 / (1024.0 * 1024.0) / started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
