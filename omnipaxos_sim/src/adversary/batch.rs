//! Many seeds of the adversarial mode on a few threads, and their summary.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    ops::Range,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Mutex,
    },
};

use super::{run, AdversaryConfig, AdversaryReport, Liveness};
use crate::{invariants::Violation, mutation::Mutation, storage::StorageKind};

/// Seeds listed per property in the summary.
const FIRST_SEEDS_LISTED: usize = 10;

/// What to run.
#[derive(Clone, Debug)]
pub struct AdversaryBatch {
    /// Seeds, each run once per node count.
    pub seeds: Range<u64>,
    /// Node counts.
    pub node_counts: Vec<usize>,
    /// The replicas' disks.
    pub storage: StorageKind,
    /// Adversarial steps per run.
    pub steps: u64,
    /// Worker threads.
    pub threads: usize,
    /// Properties whose violations do not end a run (see [`AdversaryConfig::tolerate`]).
    pub tolerate: Vec<String>,
    /// A core bug switched back on in every replica.
    pub mutation: Option<Mutation>,
    /// Stop at the first violating seed (seeds below it still run; see
    /// [`crate::runner::Batch::stop_at_first_violation`]).
    pub stop_at_first_violation: bool,
}

/// Totals over the runs of one node count.
#[derive(Clone, Debug, Default)]
pub struct Totals {
    /// Runs.
    pub runs: u64,
    /// Steps taken.
    pub steps: u64,
    /// Log positions decided.
    pub decided: u64,
    /// Failing seeds with the violation that ended the run.
    pub violations: Vec<(u64, Violation)>,
    /// Seeds with the first violation of each tolerated property.
    pub tolerated: Vec<(u64, Violation)>,
    /// Calm phases that converged, with their ticks.
    pub converged_ticks: Vec<u64>,
    /// Calm phases skipped because no ballot was left above the ceiling.
    pub ballots_exhausted: u64,
    /// Actions taken, by name.
    pub actions: BTreeMap<&'static str, u64>,
}

impl Totals {
    fn add(&mut self, report: &AdversaryReport) {
        self.runs += 1;
        self.steps += report.steps;
        self.decided += report.decided as u64;
        if let Some(v) = &report.violation {
            self.violations.push((report.seed, v.clone()));
        }
        self.tolerated.extend(report.tolerated.iter().map(|v| (report.seed, v.clone())));
        match report.liveness {
            Liveness::Converged { ticks } => self.converged_ticks.push(ticks),
            Liveness::BallotsExhausted => self.ballots_exhausted += 1,
            Liveness::NotRun | Liveness::Failed => {}
        }
        for (&name, &count) in &report.actions {
            *self.actions.entry(name).or_default() += count;
        }
    }
}

/// Results per node count.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Totals by node count.
    pub by_nodes: BTreeMap<usize, Totals>,
}

impl Summary {
    /// Every failing run, as (node count, seed, violation), by node count then seed.
    pub fn violations(&self) -> Vec<(usize, u64, &Violation)> {
        let mut all: Vec<_> = self
            .by_nodes
            .iter()
            .flat_map(|(&nodes, t)| t.violations.iter().map(move |(seed, v)| (nodes, *seed, v)))
            .collect();
        all.sort_by_key(|&(nodes, seed, _)| (nodes, seed));
        all
    }

    /// The summary, as Markdown: runs per node count, violations by property with the first
    /// seeds that found each, actions, and speed.
    pub fn render(&self, elapsed_s: f64, threads: usize) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "| N | runs | violating runs | calm phase converged | ballots exhausted | calm ticks p50 / max | steps | decided |");
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
        let mut runs = 0;
        for (nodes, t) in &self.by_nodes {
            runs += t.runs;
            let mut ticks = t.converged_ticks.clone();
            ticks.sort_unstable();
            let p50 = ticks.get(ticks.len() / 2).copied().unwrap_or(0);
            let max = ticks.last().copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "| {nodes} | {} | {} | {} | {} | {p50} / {max} | {} | {} |",
                t.runs,
                t.violations.len(),
                t.converged_ticks.len(),
                t.ballots_exhausted,
                t.steps,
                t.decided
            );
        }
        self.render_violations(&mut out);
        let mut actions: BTreeMap<&str, u64> = BTreeMap::new();
        for t in self.by_nodes.values() {
            for (&name, &count) in &t.actions {
                *actions.entry(name).or_default() += count;
            }
        }
        let listed: Vec<String> = actions.iter().map(|(name, n)| format!("{name} {n}")).collect();
        let _ = writeln!(out, "\nactions: {}", listed.join(", "));
        let per_run_ms = if runs > 0 { 1000.0 * elapsed_s * threads as f64 / runs as f64 } else { 0.0 };
        let _ = writeln!(
            out,
            "\nwall time {elapsed_s:.1} s on {threads} threads: {:.0} runs/s, {per_run_ms:.2} ms per run per thread",
            runs as f64 / elapsed_s.max(1e-9)
        );
        out
    }

    /// Runs per property: the violations that ended runs and the tolerated ones.
    fn render_violations(&self, out: &mut String) {
        let mut by_property: BTreeMap<&str, Vec<(usize, u64)>> = BTreeMap::new();
        for (&nodes, t) in &self.by_nodes {
            for (seed, v) in t.violations.iter().chain(&t.tolerated) {
                by_property.entry(v.property).or_default().push((nodes, *seed));
            }
        }
        if by_property.is_empty() {
            let _ = writeln!(out, "\nno violations");
            return;
        }
        let _ =
            writeln!(out, "\n| property | runs violating it (ending the run or tolerated) | first seeds |");
        let _ = writeln!(out, "|---|---|---|");
        for (property, mut runs) in by_property {
            runs.sort_by_key(|&(nodes, seed)| (seed, nodes));
            let first: Vec<String> = runs
                .iter()
                .take(FIRST_SEEDS_LISTED)
                .map(|(nodes, seed)| format!("{seed} (N={nodes})"))
                .collect();
            let _ = writeln!(out, "| {property} | {} | {} |", runs.len(), first.join(", "));
        }
    }
}

/// Runs every (seed, node count) of the batch; `on_report` sees each report as it finishes.
pub fn run_batch(batch: &AdversaryBatch, on_report: impl Fn(&AdversaryReport) + Sync) -> Summary {
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
                let mut config = AdversaryConfig::new(seed, nodes);
                config.storage = batch.storage;
                config.steps = batch.steps;
                config.tolerate = batch.tolerate.clone();
                config.mutation = batch.mutation;
                let report = run(config);
                if report.violation.is_some() {
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
