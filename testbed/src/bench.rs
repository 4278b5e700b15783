//! `p4lb-testbed bench-migration`: one Podman migration to a new address, with
//! the client-observed stall set against CRIU's own dump and restore times of
//! the same container in the same run (`podman ... --print-stats`).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use p4lb_testbed::scenario::{self, POD_NETNS};
use serde_json::Value;

const CONNS: usize = 20;
const RATE: f64 = 20.0;

/// CRIU's statistics of the one container in podman's `--print-stats` output.
fn criu_stats(what: &str, out: &str) -> Result<(Value, Value)> {
    let start = out
        .find('{')
        .with_context(|| format!("{what}: no JSON statistics in {out:?}"))?;
    let v: Value = serde_json::from_str(out[start..].trim())
        .with_context(|| format!("{what}: statistics are not JSON: {out:?}"))?;
    let c = v["container_statistics"][0].clone();
    if c.is_null() {
        bail!("{what}: no container statistics in {v}");
    }
    Ok((v, c))
}

fn ms(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN) / 1000.0
}

/// Runs the benchmark; prints the figures.
pub fn bench_migration() -> Result<()> {
    let helper = std::env::current_exe().context("finding the p4lb-testbed binary")?;
    let w = scenario::World::start(helper).context("setting up the testbed")?;
    w.pod_netns("cli", "cli", "clients", "")?;
    w.pod_netns("srv", "srv0", "pods", "")?;
    w.add_service()?;
    w.run_server("web", &[])?;
    let client = w.start_client(CONNS, RATE)?;
    std::thread::sleep(Duration::from_secs(3));
    client.mark()?;

    let archive = "/tmp/ck-bench.tar";
    let t = Instant::now();
    let (ok, out, err) = w.try_sh(&format!(
        "podman container checkpoint --tcp-established --compress none --print-stats \
         --export {archive} web"
    ))?;
    let checkpoint_wall = t.elapsed();
    if !ok {
        bail!("checkpoint failed: {out}{err}\n{}", w.diag());
    }
    let (dump_all, dump) = criu_stats("checkpoint", &out)?;
    let rec = w.record_in(archive)?;
    let old_ip = rec["source"]["ip"]
        .as_str()
        .with_context(|| format!("record without source ip: {rec}"))?
        .to_string();
    let t = Instant::now();
    w.sh("podman rm -f web >/dev/null")?;
    w.cni("DEL", "srv0", POD_NETNS, "pods", "")?;
    w.sh("ip netns del srv")?;
    let new_ip = w.pod_netns(
        "srv",
        "srv1",
        "pods",
        &format!("IgnoreUnknown=1;P4LB_RESTORE_FROM={old_ip}"),
    )?;
    let rewire = t.elapsed();
    let t = Instant::now();
    let (ok, out, err) = w.try_sh(&format!(
        "podman container restore --import {archive} --tcp-established --print-stats"
    ))?;
    let restore_wall = t.elapsed();
    if !ok {
        bail!("restore failed: {out}{err}\n{}", w.diag());
    }
    let (restore_all, restore) = criu_stats("restore", &out)?;
    if let Ok(id) = w.sh("podman inspect -f '{{.Id}}' web") {
        p4lb_testbed::cgroups::prune_restore_copies(id.trim());
    }
    std::thread::sleep(Duration::from_secs(3));
    let done = client.finish()?;
    let before = done
        .interim
        .first()
        .context("the client printed no interim report")?;
    let after = &done.last;
    let (survived, _) = p4lb_testbed::migration::judge(before, after)?;
    let migs = w.migrations()?;
    let m = migs
        .last()
        .context("the controller recorded no migration")?;
    w.sh(&format!("rm -f {archive}"))?;

    println!("podman --print-stats, checkpoint: {dump_all}");
    println!("podman --print-stats, restore:    {restore_all}");
    let ds = &dump["criu_statistics"];
    let rs = &restore["criu_statistics"];
    let freezing = ms(&ds["freezing_time"]);
    let frozen = ms(&ds["frozen_time"]);
    let memdump = ms(&ds["memdump_time"]);
    let memwrite = ms(&ds["memwrite_time"]);
    let restore_time = ms(&rs["restore_time"]);
    let forking = ms(&rs["forking_time"]);
    let criu = frozen + restore_time;
    let stall = ms(&m["stall_us"]);
    let client_stall = after.totals.longest_stall_ms as f64;
    println!(
        "migration {} ({old_ip} -> {new_ip}), {CONNS} connections at {RATE}/s each:",
        m["id"]
    );
    println!(
        "  CRIU dump:    freezing {freezing:.1} ms, frozen {frozen:.1} ms (memdump {memdump:.1}, \
         memwrite {memwrite:.1})"
    );
    println!("  CRIU restore: restore {restore_time:.1} ms (forking {forking:.1})");
    println!(
        "  podman: checkpoint {:.1} ms (runtime {:.1}), restore {:.1} ms (runtime {:.1}); \
         wall: checkpoint {} ms, pod rewire {} ms, restore {} ms",
        ms(&dump_all["podman_checkpoint_duration"]),
        ms(&dump["runtime_checkpoint_duration"]),
        ms(&restore_all["podman_restore_duration"]),
        ms(&restore["runtime_restore_duration"]),
        checkpoint_wall.as_millis(),
        rewire.as_millis(),
        restore_wall.as_millis()
    );
    println!("  CRIU frozen + restore:           {criu:.1} ms");
    println!("  p4lb lock -> unlock stall:       {stall:.1} ms");
    println!("  client longest stall:            {client_stall:.1} ms");
    println!(
        "  p4lb adds {:.1} ms over raw CRIU (lock -> unlock minus CRIU frozen + restore; \
         this is everything around CRIU: podman's export/import and container setup, the \
         pod rewiring and the action scripts); the client waits {:.1} ms more than \
         lock -> unlock (TCP retransmission backoff, request interval {:.0} ms)",
        stall - criu,
        client_stall - stall,
        1000.0 / RATE
    );
    println!(
        "  connections: {survived}/{CONNS} survived, {} reset, {} failed",
        after.totals.reset, after.totals.failed
    );
    if after.totals.reset != 0 || after.totals.failed != 0 || survived != CONNS as u64 {
        bail!("connections were lost: {}", done.stderr);
    }
    Ok(())
}
