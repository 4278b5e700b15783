//! The exec floor of `bench-migration`: what CRIU spends on an action script
//! that does nothing, measured in the same CRIU runs as p4lb's action script and
//! compared with it action by action.
//!
//! /etc/criu/default.conf names three action scripts for the bench: p4lb's
//! script between two do-nothing scripts (`#!/bin/sh` / `exit 0`). CRIU runs them
//! one after the other for every action (`sh -c <path>`, the same environment;
//! CRIU 4.2 runs them in the reverse order of the configuration) and logs each
//! start, so:
//! - the do-nothing script that runs first lasts from its start to the start of
//!   p4lb's script: exact; that is the floor;
//! - p4lb's run lasts from its start to the start of the other do-nothing
//!   script: exact too, without CRIU's own work after the scripts (its iptables
//!   lock and unlock follow the `network-lock` and `network-unlock` scripts).
//!   The run of the last script is not used (it ends at CRIU's next line).
//!
//! The two do-nothing scripts add their exec time to every action (about twice
//! the floor per action, inside the lock for the actions from `network-lock` to
//! `network-unlock`); the bench prints how much (`P4LB_BENCH_FLOOR=0` leaves them
//! out, and the comparison with them).

use anyhow::{Context, Result};
use p4lb_e2e::scenario::{World, SOCKET};

use crate::bench::{script_times, ScriptTimes};

/// The two do-nothing scripts, inside the testbed: one runs before p4lb's (the
/// floor), the other after it (the end of p4lb's run).
pub const NOOP_SCRIPTS: [&str; 2] = [
    "/usr/local/libexec/p4lb-bench/noop-1",
    "/usr/local/libexec/p4lb-bench/noop-2",
];
/// Most p4lb may spend per action above the floor.
pub const PER_ACTION_GOAL_MS: f64 = 2.0;
/// Most p4lb may spend in total (both sides) above the floor.
pub const TOTAL_GOAL_MS: f64 = 10.0;

/// Whether the bench measures the floor (`P4LB_BENCH_FLOOR`, on unless `0`).
pub fn enabled() -> bool {
    std::env::var("P4LB_BENCH_FLOOR").map_or(true, |v| v != "0")
}

/// Puts the do-nothing scripts around p4lb's script (`action`) in
/// /etc/criu/default.conf.
pub fn install(w: &World, action: &str) -> Result<()> {
    let [one, two] = NOOP_SCRIPTS;
    let dir = one.rsplit_once('/').map_or("/", |(d, _)| d);
    w.sh(&format!(
        "set -e; mkdir -p {dir}; \
         for s in {one} {two}; do printf '#!/bin/sh\\nexit 0\\n' > $s; \
         chmod 0755 $s; done; \
         sed -i 's|^action-script {action}$|action-script {one}\\naction-script \
         {action}\\naction-script {two}|' /etc/criu/default.conf; \
         grep -c '^action-script ' /etc/criu/default.conf"
    ))
    .map(|_| ())
    .context("putting the do-nothing action scripts into /etc/criu/default.conf")
}

/// The controller's commit counters (Prometheus text of `p4lbctl metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Commits {
    pub saves: f64,
    pub save_ms: f64,
    pub write_ms: f64,
}

impl Commits {
    pub fn parse(metrics: &str) -> Commits {
        let get = |name: &str| {
            metrics
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
                .unwrap_or(f64::NAN)
        };
        Commits {
            saves: get("p4lb_controller_commit_saves_total"),
            save_ms: get("p4lb_controller_commit_save_microseconds_total") / 1000.0,
            write_ms: get("p4lb_controller_commit_write_microseconds_total") / 1000.0,
        }
    }

    pub fn read(w: &World) -> Result<Commits> {
        let out = w.sh(&format!("{} --socket {SOCKET} metrics", w.ctl))?;
        Ok(Commits::parse(&out))
    }

    /// What the controller committed between `self` and `later`, as a line.
    pub fn since(&self, later: &Commits) -> String {
        let n = later.saves - self.saves;
        let save = later.save_ms - self.save_ms;
        format!(
            "{n:.0} durable saves of its state, {save:.2} ms in all ({:.2} ms each); switch \
             writes {:.2} ms",
            if n > 0.0 { save / n } else { 0.0 },
            later.write_ms - self.write_ms
        )
    }
}

/// The floor of one migration: of its dump and of its restore ([`floor_of`]).
pub fn floors_of(dump_log: &str, restore_log: &str) -> Result<(ScriptTimes, ScriptTimes)> {
    let read = |log: &str, what: &str| {
        floor_of(log).with_context(|| format!("reading the floor's runs in CRIU's {what}"))
    };
    Ok((
        read(dump_log, "dump.log")?,
        read(restore_log, "restore.log")?,
    ))
}

/// The floor from the two do-nothing scripts' runs in one CRIU log: per action,
/// the runs that ended exactly (at the start of the next script, p4lb's).
pub fn floor_of(log: &str) -> Result<ScriptTimes> {
    let mut floor: Option<ScriptTimes> = None;
    for s in NOOP_SCRIPTS {
        let mut t = script_times(log, s).with_context(|| format!("reading the runs of {s}"))?;
        t.actions.retain(|a| a.bound_ms == 0.0);
        match floor.as_mut() {
            None => floor = Some(t),
            Some(f) => {
                for a in t.actions {
                    match f.actions.iter_mut().find(|x| x.action == a.action) {
                        Some(x) => {
                            x.runs += a.runs;
                            x.ms += a.ms;
                        }
                        None => f.actions.push(a),
                    }
                }
            }
        }
    }
    floor.context("no do-nothing script configured")
}

/// One action, p4lb against the floor.
#[derive(Debug, Clone, PartialEq)]
pub struct Compared {
    pub side: &'static str,
    pub action: String,
    /// Per run, ms.
    pub p4lb_ms: f64,
    pub floor_ms: f64,
}

impl Compared {
    pub fn over_ms(&self) -> f64 {
        self.p4lb_ms - self.floor_ms
    }
}

/// Pairs the timed actions of p4lb's runs with the floor's (per run, so that
/// an action CRIU ran more than once is compared run for run). Actions only
/// one of them has are left out and named in the second value.
pub fn compare(
    side: &'static str,
    p4lb: &ScriptTimes,
    floor: &ScriptTimes,
) -> (Vec<Compared>, Vec<String>) {
    let mut out = Vec::new();
    let mut unpaired = Vec::new();
    for a in &p4lb.actions {
        match floor.actions.iter().find(|f| f.action == a.action) {
            Some(f) => out.push(Compared {
                side,
                action: a.action.clone(),
                p4lb_ms: a.ms / a.runs as f64,
                floor_ms: f.ms / f.runs as f64,
            }),
            None => unpaired.push(format!("{side} {} (p4lb only)", a.action)),
        }
    }
    for f in &floor.actions {
        if !p4lb.actions.iter().any(|a| a.action == f.action) {
            unpaired.push(format!("{side} {} (floor only)", f.action));
        }
    }
    (out, unpaired)
}

/// Both sides of one migration compared ([`compare`]), dump first.
pub fn compare_migration(
    floor: (&ScriptTimes, &ScriptTimes),
    p4lb_dump: &ScriptTimes,
    p4lb_restore: &ScriptTimes,
) -> (Vec<Compared>, Vec<String>) {
    let (mut rows, mut unpaired) = compare("dump", p4lb_dump, floor.0);
    let (r, u) = compare("restore", p4lb_restore, floor.1);
    rows.extend(r);
    unpaired.extend(u);
    (rows, unpaired)
}

/// One action's excess over the floor across several migrations of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct OverMigrations {
    pub side: &'static str,
    pub action: String,
    /// Excess over the floor, ms, one per migration that timed the action, sorted.
    pub over_ms: Vec<f64>,
}

impl OverMigrations {
    pub fn median(&self) -> f64 {
        crate::bench::median(self.over_ms.iter().copied())
    }

    pub fn max(&self) -> f64 {
        self.over_ms.last().copied().unwrap_or(0.0)
    }

    /// In how many migrations the excess was within `goal_ms`.
    pub fn within(&self, goal_ms: f64) -> usize {
        self.over_ms.iter().filter(|o| **o <= goal_ms).count()
    }
}

/// Per action (in the order of the first migration), the excess over the floor in
/// each of `migrations`; and each migration's total excess, sorted.
pub fn over_migrations(migrations: &[Vec<Compared>]) -> (Vec<OverMigrations>, Vec<f64>) {
    let mut per: Vec<OverMigrations> = Vec::new();
    let mut totals = Vec::new();
    for rows in migrations {
        totals.push(rows.iter().map(Compared::over_ms).sum::<f64>());
        for c in rows {
            match per
                .iter_mut()
                .find(|p| p.side == c.side && p.action == c.action)
            {
                Some(p) => p.over_ms.push(c.over_ms()),
                None => per.push(OverMigrations {
                    side: c.side,
                    action: c.action.clone(),
                    over_ms: vec![c.over_ms()],
                }),
            }
        }
    }
    for p in &mut per {
        p.over_ms.sort_by(f64::total_cmp);
    }
    totals.sort_by(f64::total_cmp);
    (per, totals)
}

/// Prints [`over_migrations`]: one migration's figure is one sample of a busy
/// machine, the median over the run's migrations is the action's cost.
pub fn print_over_migrations(migrations: &[Vec<Compared>]) {
    let (per, totals) = over_migrations(migrations);
    let n = migrations.len();
    println!(
        "p4lb's action script against the exec floor over the {n} migrations of this run that \
         kept CRIU's logs (the one above and the in-place rounds; ms above the floor of the \
         same CRIU run):"
    );
    println!(
        "  {:<8} {:<22} {:>7} {:>9} {:>9}  within {PER_ACTION_GOAL_MS} ms ({TOTAL_GOAL_MS} ms for \
         the sum): median, migrations",
        "side", "action", "timed", "median", "max"
    );
    let row = |p: &OverMigrations, goal_ms: f64| {
        println!(
            "  {:<8} {:<22} {:>7} {:>9.2} {:>9.2}  {:<6} {}/{}",
            p.side,
            p.action,
            p.over_ms.len(),
            p.median(),
            p.max(),
            yes_no(p.median() <= goal_ms),
            p.within(goal_ms),
            p.over_ms.len()
        )
    };
    for p in &per {
        row(p, PER_ACTION_GOAL_MS);
    }
    row(
        &OverMigrations {
            side: "both",
            action: "sum".into(),
            over_ms: totals,
        },
        TOTAL_GOAL_MS,
    );
    let actions_within = per
        .iter()
        .filter(|p| p.median() <= PER_ACTION_GOAL_MS)
        .count();
    println!(
        "  every action within {PER_ACTION_GOAL_MS} ms of the floor on the median: {} \
         ({actions_within} of {} actions)",
        yes_no(actions_within == per.len()),
        per.len()
    );
}

/// "yes" or "NO", as the tables print whether a goal holds.
fn yes_no(holds: bool) -> &'static str {
    if holds {
        "yes"
    } else {
        "NO"
    }
}

/// Prints one migration's comparison ([`compare_migration`]: the paired rows and
/// what was left unpaired); returns (p4lb total, floor total) over the rows.
pub fn print(rows: &[Compared], unpaired: &[String]) -> (f64, f64) {
    println!(
        "p4lb's action script against the exec floor (CRIU's sh -c of a do-nothing script, \
         run by the same CRIU just before p4lb's; ms per run, exact: each run ends where CRIU \
         starts the next script):"
    );
    println!(
        "  {:<8} {:<22} {:>9} {:>9} {:>9} {:>7}  within {PER_ACTION_GOAL_MS} ms of the floor",
        "side", "action", "p4lb", "floor", "p4lb-fl", "ratio"
    );
    for c in rows {
        println!(
            "  {:<8} {:<22} {:>9.2} {:>9.2} {:>9.2} {:>7.2}  {}",
            c.side,
            c.action,
            c.p4lb_ms,
            c.floor_ms,
            c.over_ms(),
            c.p4lb_ms / c.floor_ms,
            yes_no(c.over_ms() <= PER_ACTION_GOAL_MS)
        );
    }
    let p4lb: f64 = rows.iter().map(|c| c.p4lb_ms).sum();
    let fl: f64 = rows.iter().map(|c| c.floor_ms).sum();
    let worst = rows
        .iter()
        .max_by(|a, b| a.over_ms().total_cmp(&b.over_ms()));
    println!(
        "  {:<8} {:<22} {p4lb:>9.2} {fl:>9.2} {:>9.2} {:>7.2}  total within {TOTAL_GOAL_MS} ms \
         of the floor: {}",
        "both",
        "sum",
        p4lb - fl,
        p4lb / fl,
        yes_no(p4lb - fl <= TOTAL_GOAL_MS)
    );
    if let Some(w) = worst {
        println!(
            "  largest excess over the floor: {} {} {:.2} ms",
            w.side,
            w.action,
            w.over_ms()
        );
    }
    if !unpaired.is_empty() {
        println!("  not compared: {}", unpaired.join(", "));
    }
    (p4lb, fl)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three scripts per action, as `install` configures them; post-dump has
    /// no floor run, pre-resume no p4lb run.
    const LOG: &str = "(00.010000) Running network-lock scripts
(00.010000) \t[/usr/local/libexec/p4lb-bench/noop-1]
(00.012000) \t[/x/p4lb]
(00.018000) \t[/usr/local/libexec/p4lb-bench/noop-2]
(00.019500) Writing stats
(00.020000) Running post-dump scripts
(00.020000) \t[/x/p4lb]
(00.022500) \t[/usr/local/libexec/p4lb-bench/noop-2]
(00.024000) done
(00.030000) Running pre-resume scripts
(00.030000) \t[/usr/local/libexec/p4lb-bench/noop-1]
(00.031000) \t[/usr/local/libexec/p4lb-bench/noop-2]
(00.033000) done
";

    #[test]
    fn commit_counters_are_read_from_the_metrics_text() {
        let m = "# HELP p4lb_controller_commit_saves_total Durable saves\n\
                 p4lb_controller_commit_saves_total 7\n\
                 p4lb_controller_commit_save_microseconds_total 10500\n\
                 p4lb_controller_commit_write_microseconds_total 2000\n";
        let c = Commits::parse(m);
        assert_eq!(
            c,
            Commits {
                saves: 7.0,
                save_ms: 10.5,
                write_ms: 2.0
            }
        );
        let later = Commits {
            saves: 10.0,
            save_ms: 16.5,
            write_ms: 2.5,
        };
        assert_eq!(
            c.since(&later),
            "3 durable saves of its state, 6.00 ms in all (2.00 ms each); switch writes 0.50 ms"
        );
        assert!(Commits::parse("").saves.is_nan());
    }

    #[test]
    fn the_floor_and_p4lbs_runs_end_exactly_at_the_next_script() {
        let p = script_times(LOG, "/x/p4lb").unwrap();
        let f = floor_of(LOG).unwrap();
        // Each run ends where the next script starts: no upper-bound part.
        assert!(p.actions.iter().all(|a| a.bound_ms == 0.0), "{p:?}");
        assert!(f.actions.iter().all(|a| a.bound_ms == 0.0), "{f:?}");
        let (rows, unpaired) = compare("dump", &p, &f);
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].action, "network-lock");
        assert!((rows[0].p4lb_ms - 6.0).abs() < 1e-6, "{rows:?}");
        assert!((rows[0].floor_ms - 2.0).abs() < 1e-6, "{rows:?}");
        assert!((rows[0].over_ms() - 4.0).abs() < 1e-6, "{rows:?}");
        assert_eq!(
            unpaired,
            vec![
                "dump post-dump (p4lb only)".to_string(),
                "dump pre-resume (floor only)".to_string()
            ]
        );
        // Whichever do-nothing script CRIU runs first is the floor.
        let swapped = LOG
            .replace("noop-1", "noop-x")
            .replace("noop-2", "noop-1")
            .replace("noop-x", "noop-2");
        let f2 = floor_of(&swapped).unwrap();
        assert_eq!(f2.actions, f.actions);
    }

    #[test]
    fn each_actions_excess_is_summed_up_over_the_migrations_of_a_run() {
        let c = |side, action: &str, p4lb_ms, floor_ms| Compared {
            side,
            action: action.into(),
            p4lb_ms,
            floor_ms,
        };
        let migrations = vec![
            vec![
                c("dump", "network-lock", 4.0, 1.0),
                c("restore", "pre-resume", 2.5, 1.0),
            ],
            vec![
                c("dump", "network-lock", 2.5, 1.0),
                c("restore", "pre-resume", 3.0, 1.5),
            ],
            // A migration whose log timed only one of the two.
            vec![c("dump", "network-lock", 2.0, 1.0)],
        ];
        let (per, totals) = over_migrations(&migrations);
        assert_eq!(per.len(), 2);
        assert_eq!(
            (per[0].side, per[0].action.as_str()),
            ("dump", "network-lock")
        );
        assert_eq!(per[0].over_ms, vec![1.0, 1.5, 3.0]);
        assert_eq!(per[0].median(), 1.5);
        assert_eq!(per[0].max(), 3.0);
        assert_eq!(per[0].within(PER_ACTION_GOAL_MS), 2);
        assert_eq!(per[1].over_ms, vec![1.5, 1.5]);
        assert_eq!(per[1].median(), 1.5);
        assert_eq!(per[1].within(PER_ACTION_GOAL_MS), 2);
        assert_eq!(totals, vec![1.0, 3.0, 4.5]);
        let (none, no_totals) = over_migrations(&[]);
        assert!(none.is_empty() && no_totals.is_empty());
    }
}
