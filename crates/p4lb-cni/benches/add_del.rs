//! ADD/DEL latency of `p4lb` against Debian's reference `bridge` plugin, measured in
//! the same run on the same host: sequential, and 50 at once. Prints p50/p99 and the
//! p4lb/bridge ratio. Run as root: `cargo bench -p p4lb-cni --bench add_del`.
//!
//! Both plugins use host-local IPAM with their own data directory; bridge sets up a
//! Linux bridge. p4lb is measured twice: against p4lb-controller with its embedded
//! software switch (the real cost of attaching a pod), and against the in-test fake of
//! the controller API (the plugin's own cost, the controller's work taken out).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const SEQUENTIAL: usize = 40;
const PARALLEL: usize = 50;

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let idx = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[idx]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The controller's cumulative commit-phase counters (microseconds) by name.
fn commit_phases(w: &World) -> Vec<(String, u64)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let text = rt.block_on(async {
        let c =
            p4lb_api::Client::connect(&w.socket, Duration::from_secs(5), Duration::from_secs(30))
                .await
                .ok()?;
        c.metrics().await.ok()
    });
    text.unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("p4lb_controller_commit"))
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((
                k.trim_start_matches("p4lb_controller_").to_string(),
                v.parse().ok()?,
            ))
        })
        .collect()
}

/// Prints where the controller's commit time went between two samples.
fn print_phases(label: &str, before: &[(String, u64)], after: &[(String, u64)]) {
    let delta = |k: &str| {
        let get = |v: &[(String, u64)]| v.iter().find(|(n, _)| n == k).map(|(_, x)| *x);
        get(after).unwrap_or(0) - get(before).unwrap_or(0)
    };
    let commits = delta("commits_total").max(1);
    let saves = delta("commit_saves_total");
    let mut line = format!(
        "  controller during {label}: {commits} commits, {saves} saves; mean ms per commit:"
    );
    for phase in ["queue_wait", "port", "desired", "write", "save"] {
        let us = delta(&format!("commit_{phase}_microseconds_total"));
        line.push_str(&format!(
            " {phase} {:.2}",
            us as f64 / commits as f64 / 1000.0
        ));
    }
    println!("{line}");
}

struct Figures {
    add: Vec<Duration>,
    del: Vec<Duration>,
}

fn bridge_conf(w: &World) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": format!("{}b", w.network),
        "type": "bridge",
        "bridge": "p4lbbench0",
        "isGateway": true,
        "ipam": {
            "type": "host-local",
            "subnet": "10.254.0.0/16",
            "dataDir": w.dir.path().join("bridge-ipam"),
            "routes": [{"dst": "0.0.0.0/0"}],
        },
    })
}

fn run_one(w: &World, plugin: &str, cmd: &str, cid: &str, ns: &Netns, conf: &Value) -> Duration {
    let t = Instant::now();
    let out = if plugin.starts_with("p4lb") {
        w.p4lb(cmd, cid, &ns.path, "", conf)
    } else {
        w.system(plugin, cmd, cid, &ns.path, conf)
    };
    let d = t.elapsed();
    out.ok();
    d
}

fn sequential(w: &World, plugin: &str, conf: &Value) -> Figures {
    let mut f = Figures {
        add: Vec::new(),
        del: Vec::new(),
    };
    for i in 0..SEQUENTIAL {
        let ns = Netns::new();
        let cid = format!("seq{}{i}", plugin.replace('/', ""));
        f.add.push(run_one(w, plugin, "ADD", &cid, &ns, conf));
        f.del.push(run_one(w, plugin, "DEL", &cid, &ns, conf));
    }
    f
}

/// 50 ADDs at once, then 50 DELs at once; `phases` samples the controller's
/// commit counters before, between and after.
fn parallel(
    w: &World,
    plugin: &str,
    conf: &Value,
    phases: &mut Vec<Vec<(String, u64)>>,
) -> (Figures, Duration, Duration) {
    let real = plugin == "p4lb";
    let nss: Vec<Netns> = (0..PARALLEL).map(|_| Netns::new()).collect();
    let go = |cmd: &str| -> (Vec<Duration>, Duration) {
        let t = Instant::now();
        let v = std::thread::scope(|s| {
            let hs: Vec<_> = nss
                .iter()
                .enumerate()
                .map(|(i, ns)| {
                    let cid = format!("par{}{i}", plugin.replace('/', ""));
                    s.spawn(move || run_one(w, plugin, cmd, &cid, ns, conf))
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        (v, t.elapsed())
    };
    if real {
        phases.push(commit_phases(w));
    }
    let (add, add_wall) = go("ADD");
    if real {
        phases.push(commit_phases(w));
    }
    let (del, del_wall) = go("DEL");
    if real {
        phases.push(commit_phases(w));
    }
    (Figures { add, del }, add_wall, del_wall)
}

fn main() {
    require_root();
    require_system_plugins(&["bridge", "host-local"]);
    let w = World::new();
    let mut wf = World::without_controller();
    wf.start_fake_controller();
    let p4 = w.conf("1.0.0");
    let p4f = wf.conf("1.0.0");
    let br = bridge_conf(&w);
    let cases: [(&str, &World, &Value); 3] = [
        ("p4lb", &w, &p4),
        ("p4lb/fakectl", &wf, &p4f),
        ("bridge", &w, &br),
    ];

    // warm-up (page cache, first bridge creation)
    for (plugin, world, conf) in cases {
        let ns = Netns::new();
        run_one(world, plugin, "ADD", "warm", &ns, conf);
        run_one(world, plugin, "DEL", "warm", &ns, conf);
    }

    println!("p4lb:         {}", w.controller_description());
    println!("p4lb/fakectl: {}", wf.controller_description());
    println!(
        "{:<32} {:>9} {:>9} {:>9} {:>5}",
        "case", "p50 ms", "p99 ms", "max ms", "n"
    );
    let mut table: Vec<(String, f64, f64)> = Vec::new();
    let mut report = |name: String, mut v: Vec<Duration>| {
        let n = v.len();
        let p50 = pct(&mut v, 0.5);
        let p99 = pct(&mut v, 0.99);
        let max = *v.last().unwrap();
        println!(
            "{name:<32} {:>9.2} {:>9.2} {:>9.2} {n:>5}",
            ms(p50),
            ms(p99),
            ms(max)
        );
        table.push((name, ms(p50), ms(p99)));
    };
    let mut walls = Vec::new();
    for (plugin, world, conf) in cases {
        let real = plugin == "p4lb";
        let t0 = if real {
            commit_phases(world)
        } else {
            Vec::new()
        };
        let s = sequential(world, plugin, conf);
        let t1 = if real {
            commit_phases(world)
        } else {
            Vec::new()
        };
        report(format!("{plugin} ADD sequential"), s.add);
        report(format!("{plugin} DEL sequential"), s.del);
        let mut ph = Vec::new();
        let (p, aw, dw) = parallel(world, plugin, conf, &mut ph);
        if real {
            print_phases("the sequential ADD+DEL", &t0, &t1);
            print_phases(&format!("the {PARALLEL} parallel ADDs"), &ph[0], &ph[1]);
            print_phases(&format!("the {PARALLEL} parallel DELs"), &ph[1], &ph[2]);
        }
        report(format!("{plugin} ADD {PARALLEL} parallel"), p.add);
        report(format!("{plugin} DEL {PARALLEL} parallel"), p.del);
        walls.push((plugin, aw, dw));
    }
    for (plugin, aw, dw) in &walls {
        println!(
            "{plugin}: {PARALLEL} parallel ADD wall {:.1} ms, DEL wall {:.1} ms",
            ms(*aw),
            ms(*dw)
        );
    }
    for p4 in ["p4lb", "p4lb/fakectl"] {
        println!("\nratio {p4} / bridge (p50, p99):");
        for case in [
            "ADD sequential",
            "DEL sequential",
            &format!("ADD {PARALLEL} parallel"),
            &format!("DEL {PARALLEL} parallel"),
        ] {
            let a = table
                .iter()
                .find(|(n, ..)| *n == format!("{p4} {case}"))
                .unwrap();
            let b = table
                .iter()
                .find(|(n, ..)| *n == format!("bridge {case}"))
                .unwrap();
            println!("  {case:<22} {:>6.2}x {:>6.2}x", a.1 / b.1, a.2 / b.2);
        }
    }
    wf.assert_clean();
    w.assert_clean();
    if let Ok(host) = p4lb_testutil::Net::host() {
        let _ = host.delete_link("p4lbbench0");
    }
}
