//! Many seeds on a few threads, each seed on one thread from start to end, and the summary.
//!
//! ```text
//!   seeds × node counts ──► work queue (atomic counter) ──► threads: run_one(seed) ──► Report
//!                                                                     (panics caught)   │
//!   Summary per node count ◄─────────────────────────────────────────────────────────────┘
//! ```
//!
//! A panic inside a run (a core assertion, e.g. `check_invariants`) is caught and reported as a
//! violation of that seed; the other seeds go on.

use std::{
    cell::RefCell,
    collections::BTreeMap,
    fmt::Write as _,
    ops::Range,
    panic::AssertUnwindSafe,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Mutex,
    },
};

use crate::{
    clients::OpCounts,
    invariants::Violation,
    mutation::Mutation,
    nemesis::FaultKind,
    reads::{ReadCounts, ReadMode},
    sim::{self, LinearizabilityResult, Report, SimConfig},
    storage::StorageKind,
};

thread_local! {
    /// The last panic on this thread, as the panic hook saw it (message and location).
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Makes panics quiet: they are caught and reported per seed instead of printed.
pub fn install_quiet_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        LAST_PANIC.with(|last| *last.borrow_mut() = Some(info.to_string()));
    }));
}

/// Runs one seed; a panic becomes a violation named `core_does_not_panic`.
pub fn run_one(config: SimConfig) -> Report {
    let (seed, nodes, read_mode) = (config.seed, config.nodes, config.reads);
    match std::panic::catch_unwind(AssertUnwindSafe(|| sim::run(config))) {
        Ok(report) => report,
        Err(payload) => {
            let message = LAST_PANIC.with(|last| last.borrow_mut().take()).unwrap_or_else(|| {
                payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into())
            });
            Report {
                seed,
                nodes,
                ops: OpCounts::default(),
                faults: BTreeMap::new(),
                violation: Some(Violation { tick: 0, property: "core_does_not_panic", detail: message }),
                linearizability: LinearizabilityResult::NotChecked,
                recover_ticks: None,
                ticks: 0,
                messages: Default::default(),
                decided: 0,
                reconfigurations: 0,
                disk_losses: BTreeMap::new(),
                read_mode,
                reads: ReadCounts::default(),
                trace: Vec::new(),
            }
        }
    }
}

/// Totals over the seeds of one node count.
#[derive(Clone, Debug, Default)]
pub struct Totals {
    /// Seeds run.
    pub seeds: u64,
    /// Operations by outcome.
    pub ops: OpCounts,
    /// Fewest operations issued in one seed.
    pub ops_min: Option<u64>,
    /// Faults by kind.
    pub faults: BTreeMap<FaultKind, u64>,
    /// Failing seeds with their first violation.
    pub violations: Vec<(u64, Violation)>,
    /// Seeds whose linearizability search gave up.
    pub inconclusive: Vec<u64>,
    /// Ticks to recover after healing, one per seed that recovered.
    pub recover_ticks: Vec<u64>,
    /// Ticks simulated.
    pub ticks: u64,
    /// Replica messages delivered.
    pub messages: u64,
    /// Configurations started after the first.
    pub reconfigurations: u64,
    /// Decided log positions.
    pub decided: u64,
    /// Replica disks crashed, by kind of loss.
    pub disk_losses: BTreeMap<&'static str, u64>,
    /// Seeds by read mode.
    pub read_modes: BTreeMap<&'static str, u64>,
    /// Client gets by how they were served.
    pub reads: ReadCounts,
}

impl Totals {
    fn add(&mut self, report: &Report) {
        self.seeds += 1;
        self.ops.invoked += report.ops.invoked;
        self.ops.ok += report.ops.ok;
        self.ops.failed += report.ops.failed;
        self.ops.indeterminate += report.ops.indeterminate;
        self.ops_min = Some(self.ops_min.map_or(report.ops.invoked, |m| m.min(report.ops.invoked)));
        for (&kind, &count) in &report.faults {
            *self.faults.entry(kind).or_default() += count;
        }
        if let Some(v) = &report.violation {
            self.violations.push((report.seed, v.clone()));
        }
        if let LinearizabilityResult::Inconclusive(_) = report.linearizability {
            self.inconclusive.push(report.seed);
        }
        if let Some(ticks) = report.recover_ticks {
            self.recover_ticks.push(ticks);
        }
        self.ticks += report.ticks;
        self.messages += report.messages.delivered;
        self.reconfigurations += u64::from(report.reconfigurations);
        self.decided += report.decided as u64;
        for (&loss, &count) in &report.disk_losses {
            *self.disk_losses.entry(loss).or_default() += count;
        }
        *self.read_modes.entry(report.read_mode.name()).or_default() += 1;
        self.reads.add(&report.reads);
    }
}

/// Results per node count.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Totals by node count.
    pub by_nodes: BTreeMap<usize, Totals>,
}

impl Summary {
    /// Failing seeds over every node count, as (node count, seed, violation).
    pub fn violations(&self) -> Vec<(usize, u64, &Violation)> {
        let mut all = Vec::new();
        for (&nodes, totals) in &self.by_nodes {
            all.extend(totals.violations.iter().map(|(seed, v)| (nodes, *seed, v)));
        }
        all
    }

    /// The summary table, as Markdown.
    pub fn render(&self, elapsed_s: f64) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| N | seeds | ops issued (min/seed) | ok | failed | indeterminate | violations | inconclusive | new ops completed after healing | recover ticks p50 / max | reconfigs | decided | ticks |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
        for (nodes, t) in &self.by_nodes {
            let mut recover = t.recover_ticks.clone();
            recover.sort_unstable();
            let p50 = recover.get(recover.len() / 2).copied().unwrap_or(0);
            let max = recover.last().copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "| {nodes} | {} | {} ({}) | {} | {} | {} | {} | {} | {}/{} | {p50} / {max} | {} | {} | {} |",
                t.seeds,
                t.ops.invoked,
                t.ops_min.unwrap_or(0),
                t.ops.ok,
                t.ops.failed,
                t.ops.indeterminate,
                t.violations.len(),
                t.inconclusive.len(),
                t.recover_ticks.len(),
                t.seeds,
                t.reconfigurations,
                t.decided,
                t.ticks
            );
        }
        let _ = writeln!(out);
        let kinds: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
        let _ = writeln!(out, "| N | {} |", kinds.join(" | "));
        let _ = writeln!(out, "|---|{}", "---|".repeat(kinds.len()));
        for (nodes, t) in &self.by_nodes {
            let counts: Vec<String> =
                FaultKind::ALL.iter().map(|k| t.faults.get(k).copied().unwrap_or(0).to_string()).collect();
            let _ = writeln!(out, "| {nodes} | {} |", counts.join(" | "));
        }
        for (nodes, t) in &self.by_nodes {
            let losses: Vec<String> = t.disk_losses.iter().map(|(loss, n)| format!("{loss} {n}")).collect();
            let _ = writeln!(
                out,
                "\nN={nodes}: replica disks crashed by loss, and recovery repairs: {}",
                losses.join(", ")
            );
        }
        for (nodes, t) in &self.by_nodes {
            let modes: Vec<String> = t.read_modes.iter().map(|(mode, n)| format!("{mode} {n}")).collect();
            let r = t.reads;
            let _ = writeln!(
                out,
                "\nN={nodes}: seeds by read mode: {}; read-index gets issued {} ({} confirmed, never from a \
                 lease), served {} (at a leader {}, a follower {}, a learner {}; ready at once {}), \
                 failed or refused {} (of which after a decided StopSign {})",
                modes.join(", "),
                r.issued,
                r.confirmed,
                r.served,
                r.served_at_leader,
                r.served_at_follower,
                r.served_at_learner,
                r.ready_at_once,
                r.failed + r.failed_reconfigured,
                r.failed_reconfigured
            );
        }
        for (nodes, t) in self.by_nodes.iter().filter(|(_, t)| !t.inconclusive.is_empty()) {
            let mut seeds = t.inconclusive.clone();
            seeds.sort_unstable();
            let _ = writeln!(
                out,
                "\nN={nodes}: the linearizability search gave up (no verdict) on seeds {seeds:?}"
            );
        }
        let mut by_property: BTreeMap<&str, usize> = BTreeMap::new();
        for (_, _, v) in self.violations() {
            *by_property.entry(v.property).or_default() += 1;
        }
        if !by_property.is_empty() {
            let listed: Vec<String> = by_property.iter().map(|(p, n)| format!("{p}: {n}")).collect();
            let _ = writeln!(out, "\nviolations by property: {}", listed.join(", "));
        }
        let _ = writeln!(out, "\nwall time {elapsed_s:.1} s");
        out
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Batch {
    /// Seeds, each run once per node count.
    pub seeds: Range<u64>,
    /// Node counts.
    pub node_counts: Vec<usize>,
    /// Client operations per seed.
    pub ops: u64,
    /// Worker threads.
    pub threads: usize,
    /// The replicas' disks.
    pub storage: StorageKind,
    /// The faults added for issue 8 ([`SimConfig::extended_faults`]).
    pub extended_faults: bool,
    /// How client gets are served ([`SimConfig::reads`]).
    pub reads: ReadMode,
    /// Clock drift beyond the lease's bound ([`SimConfig::drift_beyond_bound`]).
    pub drift_beyond_bound: bool,
    /// Wiped replicas restart as voters ([`SimConfig::amnesia_voter`], unsafe).
    pub amnesia_voter: bool,
    /// Learners keep the log recovery left ([`SimConfig::learner_keeps_log`]).
    pub learner_keeps_log: bool,
    /// Only these kinds of fault ([`SimConfig::fault_kinds`]; empty: all).
    pub fault_kinds: Vec<FaultKind>,
    /// Paused nodes keep their read leases ([`SimConfig::keep_lease_after_pause`], unsafe).
    pub keep_lease_after_pause: bool,
    /// A core bug switched back on in every replica.
    pub mutation: Option<Mutation>,
    /// Stop at the first violating seed: seeds above the lowest violating seed found so far
    /// are skipped; every seed below it still runs, so the lowest is always found.
    pub stop_at_first_violation: bool,
    /// With `stop_at_first_violation`: only violations of these properties count (empty: any).
    pub expected_properties: Vec<String>,
}

impl Batch {
    /// The configuration of one run of the batch.
    pub fn config(&self, seed: u64, nodes: usize) -> SimConfig {
        let mut config = SimConfig::new(seed, nodes);
        config.ops = self.ops;
        config.storage = self.storage;
        config.extended_faults = self.extended_faults;
        config.reads = self.reads;
        config.drift_beyond_bound = self.drift_beyond_bound;
        config.amnesia_voter = self.amnesia_voter;
        config.learner_keeps_log = self.learner_keeps_log;
        config.fault_kinds = self.fault_kinds.clone();
        config.keep_lease_after_pause = self.keep_lease_after_pause;
        config.settings.mutation = self.mutation;
        config
    }
}

/// Runs every (seed, node count) of the batch; `on_report` sees each report as it finishes
/// (from the worker threads, one at a time).
pub fn run_batch(batch: &Batch, on_report: impl Fn(&Report) + Sync) -> Summary {
    let jobs: Vec<(u64, usize)> =
        batch.seeds.clone().flat_map(|seed| batch.node_counts.iter().map(move |&n| (seed, n))).collect();
    let next = AtomicUsize::new(0);
    let lowest_violating_seed = AtomicU64::new(u64::MAX);
    let summary = Mutex::new(Summary::default());
    std::thread::scope(|scope| {
        for _ in 0..batch.threads.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(seed, nodes)) = jobs.get(i) else { break };
                if batch.stop_at_first_violation && seed > lowest_violating_seed.load(Ordering::Relaxed) {
                    continue;
                }
                let report = run_one(batch.config(seed, nodes));
                let expected = |v: &Violation| {
                    batch.expected_properties.is_empty()
                        || batch.expected_properties.iter().any(|p| p == v.property)
                };
                if report.violation.as_ref().is_some_and(expected) {
                    lowest_violating_seed.fetch_min(seed, Ordering::Relaxed);
                }
                let mut summary = summary.lock().expect("no worker panics while holding the lock");
                summary.by_nodes.entry(nodes).or_default().add(&report);
                on_report(&report);
            });
        }
    });
    summary.into_inner().expect("workers are done")
}
