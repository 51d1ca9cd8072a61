//! What a run found: the linearizability verdict (per key generation, with reads during
//! beyond-bound clock skew checked apart), lost acknowledged writes, convergence, and the
//! availability figures per fault; as JSON and as a table for people.

use std::collections::BTreeMap;

use omnipaxos_linearizability::{check, HistoryOp, Op, Verdict};
use serde::{Deserialize, Serialize};

use crate::{
    history::{Action, ReadMode, Record, Status},
    nemesis::{FaultKind, FaultRecord},
};

/// The checker's answer on a set of operations.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CheckResult {
    /// Operations given to the checker.
    pub ops_checked: usize,
    /// Key generations that are not linearizable.
    pub violations: usize,
    /// Key generations on which the search gave up.
    pub inconclusive: usize,
    /// The first counterexample, as the checker prints it.
    pub first_violation: Option<String>,
}

impl CheckResult {
    /// `linearizable`, `NOT linearizable (n)` or `inconclusive (n)`.
    pub fn verdict(&self) -> String {
        if self.violations > 0 {
            format!("NOT linearizable ({} key generations)", self.violations)
        } else if self.inconclusive > 0 {
            format!("inconclusive ({} key generations)", self.inconclusive)
        } else {
            "linearizable".into()
        }
    }
}

/// Checks `records` (those `keep` selects), one key generation at a time.
pub fn check_records(records: &[Record], keep: impl Fn(&Record) -> bool) -> CheckResult {
    let mut by_generation: BTreeMap<u32, Vec<HistoryOp>> = BTreeMap::new();
    for record in records.iter().filter(|r| keep(r)) {
        if let (Action::Kv { generation, .. }, Some(op)) = (record.action, record.to_history_op()) {
            by_generation.entry(generation).or_default().push(op);
        }
    }
    let mut result = CheckResult::default();
    for (generation, ops) in by_generation {
        result.ops_checked += ops.len();
        match check(&ops) {
            Verdict::Linearizable => {}
            Verdict::NotLinearizable(why) => {
                result.violations += 1;
                if result.first_violation.is_none() {
                    result.first_violation = Some(format!("key generation {generation}: {why}"));
                }
            }
            Verdict::Inconclusive(key) => {
                result.inconclusive += 1;
                if result.first_violation.is_none() {
                    result.first_violation =
                        Some(format!("key generation {generation}, key k{key}: search gave up"));
                }
            }
        }
    }
    result
}

/// Availability around one fault.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FaultFigures {
    pub kind: FaultKind,
    pub combined: bool,
    pub description: String,
    pub start_s: f64,
    pub held_ms: f64,
    /// Longest time without an acknowledged write, from the fault's start to its recovery.
    pub unavailable_ms: Option<f64>,
    /// From the fault's start to the completion of the first acknowledged write invoked after it.
    pub first_write_after_start_ms: Option<f64>,
    /// From the heal to the nemesis's first acknowledged probe write.
    pub recovery_after_heal_ms: Option<f64>,
    /// Reads acknowledged by the fault's target nodes within 2 s after the heal (for pauses:
    /// what a resumed old leader served; the checker judges them).
    pub reads_by_targets_after_heal: usize,
    pub notes: Vec<String>,
}

/// Figures for every fault.
pub fn fault_figures(records: &[Record], faults: &[FaultRecord]) -> Vec<FaultFigures> {
    let mut writes: Vec<(u64, u64)> = records
        .iter()
        .filter(|r| r.is_write() && r.status == Status::Ok)
        .map(|r| (r.invoke_ns, r.complete_ns))
        .collect();
    writes.sort_by_key(|w| w.1);
    faults
        .iter()
        .map(|fault| {
            let end = fault.recovered_ns.unwrap_or(fault.heal_ns) + 1_000_000_000;
            let first_after = writes.iter().filter(|w| w.0 >= fault.start_ns).map(|w| w.1).min();
            let mut last = fault.start_ns;
            let mut longest = 0u64;
            for &(_, done) in writes.iter().filter(|w| w.1 >= fault.start_ns && w.1 <= end) {
                longest = longest.max(done - last);
                last = done;
            }
            longest = longest.max(end.saturating_sub(last).min(end - fault.start_ns));
            let reads_by_targets_after_heal = records
                .iter()
                .filter(|r| {
                    !r.is_write()
                        && r.status == Status::Ok
                        && fault.targets.contains(&r.node)
                        && r.invoke_ns >= fault.heal_ns
                        && r.invoke_ns < fault.heal_ns + 2_000_000_000
                })
                .count();
            FaultFigures {
                kind: fault.kind,
                combined: fault.combined,
                description: fault.description.clone(),
                start_s: fault.start_ns as f64 / 1e9,
                held_ms: (fault.heal_ns - fault.start_ns) as f64 / 1e6,
                unavailable_ms: fault.recovered_ns.map(|_| longest as f64 / 1e6),
                first_write_after_start_ms: first_after.map(|t| (t - fault.start_ns) as f64 / 1e6),
                recovery_after_heal_ms: fault.recovered_ns.map(|t| (t - fault.heal_ns) as f64 / 1e6),
                reads_by_targets_after_heal,
                notes: fault.notes.clone(),
            }
        })
        .collect()
}

/// The whole summary of one run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    pub nodes: u64,
    pub seed: u64,
    pub duration_s: f64,
    pub mutation: Option<String>,
    pub election_timeout_ms: u64,
    pub read_lease_ms: u64,
    /// Operations by kind and outcome: `kind -> [ok, fail, unknown]`.
    pub ops: BTreeMap<String, [u64; 3]>,
    pub faults_by_kind: BTreeMap<String, usize>,
    pub combined_faults: usize,
    /// Every read mode but stale, outside beyond-bound skew.
    pub check: CheckResult,
    /// Reads (every mode but stale) during beyond-bound clock skew, with the writes.
    pub check_beyond_bound: Option<CheckResult>,
    /// Acknowledged writes of write-once keys missing (or changed) on some node after the heal.
    pub lost_writes: usize,
    pub lost_examples: Vec<String>,
    pub acknowledged_unique_writes: usize,
    pub converged: bool,
    pub convergence: String,
    /// Leader SIGKILL to the next acknowledged write (ms), one per leader kill injected alone.
    pub leader_kill_to_write_ms: Vec<f64>,
    /// The same for leader kills injected together with a network fault (which may leave no
    /// quorum connected until its heal).
    #[serde(default)]
    pub leader_kill_combined_to_write_ms: Vec<f64>,
    /// Quorum-loss and constrained-election: fault start to the next acknowledged write (ms).
    pub partial_partition_to_write_ms: Vec<f64>,
    /// Leaders paused (SIGSTOP), and the reads they acknowledged within 2 s of their SIGCONT
    /// (all judged by the checker above).
    pub paused_leaders: usize,
    pub paused_leader_reads_after_resume: usize,
    pub faults: Vec<FaultFigures>,
    /// Each node's data directory at the end (MiB, of its tmpfs).
    pub disk_used_mib: BTreeMap<u64, u64>,
}

impl Summary {
    /// True if the run found nothing wrong (used for the exit code).
    pub fn passed(&self) -> bool {
        self.check.violations == 0
            && self.check.inconclusive == 0
            && self.lost_writes == 0
            && self.converged
            && self.faults.iter().all(|f| f.recovery_after_heal_ms.is_some())
    }
}

/// The operation kind's name in the table.
pub fn op_kind(record: &Record) -> &'static str {
    match record.action {
        Action::Kv { op: Op::Put { .. }, .. } => "put",
        Action::Kv { op: Op::Get { .. }, mode, .. } => match mode {
            Some(ReadMode::Lease) => "get lease",
            Some(ReadMode::Stale) => "get stale",
            _ => "get linearizable",
        },
        Action::Kv { op: Op::Cas { .. }, .. } => "cas",
        Action::Kv { op: Op::Delete { .. }, .. } => "delete",
        Action::UniquePut { .. } => "put write-once",
    }
}

/// Counts per kind: `[ok, fail, unknown]`.
pub fn count_ops(records: &[Record]) -> BTreeMap<String, [u64; 3]> {
    let mut ops: BTreeMap<String, [u64; 3]> = BTreeMap::new();
    for record in records {
        let slot = ops.entry(op_kind(record).to_string()).or_default();
        slot[match record.status {
            Status::Ok => 0,
            Status::Fail => 1,
            Status::Unknown => 2,
        }] += 1;
    }
    ops
}

fn stats(values: &[f64], election_timeout_ms: u64) -> String {
    if values.is_empty() {
        return "none".into();
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let max = sorted[sorted.len() - 1];
    let et = election_timeout_ms.max(1) as f64;
    format!(
        "n={}, median {:.0} ms ({:.2} ET), max {:.0} ms ({:.2} ET)",
        sorted.len(),
        median,
        median / et,
        max,
        max / et
    )
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "run: {} nodes, seed {}, {:.0} s, election timeout {} ms, read lease {} ms{}",
            self.nodes,
            self.seed,
            self.duration_s,
            self.election_timeout_ms,
            self.read_lease_ms,
            self.mutation.as_ref().map(|m| format!(", MUTATION {m}")).unwrap_or_default()
        )?;
        writeln!(f, "\n| operation | ok | fail | unknown |\n|---|---:|---:|---:|")?;
        let mut total = [0u64; 3];
        for (kind, counts) in &self.ops {
            writeln!(f, "| {kind} | {} | {} | {} |", counts[0], counts[1], counts[2])?;
            for i in 0..3 {
                total[i] += counts[i];
            }
        }
        writeln!(f, "| **all** | {} | {} | {} |", total[0], total[1], total[2])?;
        writeln!(f, "\n| fault | count |\n|---|---:|")?;
        for (kind, count) in &self.faults_by_kind {
            writeln!(f, "| {kind} | {count} |")?;
        }
        writeln!(f, "| (of these, injected two at once) | {} |", self.combined_faults)?;
        writeln!(f, "\n| check | result |\n|---|---|")?;
        writeln!(
            f,
            "| linearizability (put, get linearizable + lease, cas, delete) | {} ({} ops) |",
            self.check.verdict(),
            self.check.ops_checked
        )?;
        if let Some(beyond) = &self.check_beyond_bound {
            writeln!(
                f,
                "| reads during clock skew beyond the lease bound (allowed to be stale) | {} ({} ops) |",
                beyond.verdict(),
                beyond.ops_checked
            )?;
        }
        writeln!(
            f,
            "| lost acknowledged writes (write-once keys, every node) | {} of {} |",
            self.lost_writes, self.acknowledged_unique_writes
        )?;
        writeln!(f, "| nodes converged to the same map | {} ({}) |", self.converged, self.convergence)?;
        writeln!(f, "| data directory per node at the end (MiB) | {:?} |", self.disk_used_mib)?;
        writeln!(
            f,
            "| leader SIGKILL alone → next acknowledged write | {} |",
            stats(&self.leader_kill_to_write_ms, self.election_timeout_ms)
        )?;
        writeln!(
            f,
            "| leader SIGKILL with a network fault → next acknowledged write | {} |",
            stats(&self.leader_kill_combined_to_write_ms, self.election_timeout_ms)
        )?;
        writeln!(
            f,
            "| quorum-loss / constrained-election start → next acknowledged write | {} |",
            stats(&self.partial_partition_to_write_ms, self.election_timeout_ms)
        )?;
        writeln!(
            f,
            "| leaders paused (SIGSTOP) / reads they acknowledged within 2 s of SIGCONT | {} / {} (judged by the check above) |",
            self.paused_leaders, self.paused_leader_reads_after_resume
        )?;
        let recoveries: Vec<f64> = self.faults.iter().filter_map(|x| x.recovery_after_heal_ms).collect();
        writeln!(
            f,
            "| heal → next acknowledged write (all faults) | {} |",
            stats(&recoveries, self.election_timeout_ms)
        )?;
        writeln!(f, "\nper fault kind: longest time without an acknowledged write from the fault's start to its recovery")?;
        writeln!(f, "\n| fault | n | unavailable median ms | max ms | heal → write median ms |\n|---|---:|---:|---:|---:|")?;
        let mut by_kind: BTreeMap<&str, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
        for figure in &self.faults {
            let entry = by_kind.entry(figure.kind.name()).or_default();
            entry.0.extend(figure.unavailable_ms);
            entry.1.extend(figure.recovery_after_heal_ms);
        }
        for (kind, (unavailable, recovery)) in by_kind {
            let median = |v: &[f64]| {
                let mut s = v.to_vec();
                s.sort_by(f64::total_cmp);
                s.get(s.len() / 2).copied().unwrap_or(f64::NAN)
            };
            let max = unavailable.iter().copied().fold(f64::NAN, f64::max);
            writeln!(
                f,
                "| {kind} | {} | {:.0} | {:.0} | {:.0} |",
                unavailable.len(),
                median(&unavailable),
                max,
                median(&recovery)
            )?;
        }
        if let Some(violation) = &self.check.first_violation {
            writeln!(f, "\nfirst violation:\n{violation}")?;
        }
        if let Some(violation) = self.check_beyond_bound.as_ref().and_then(|c| c.first_violation.as_ref()) {
            writeln!(f, "\nfirst stale read under beyond-bound skew:\n{violation}")?;
        }
        for example in &self.lost_examples {
            writeln!(f, "lost: {example}")?;
        }
        let notes: Vec<String> = self
            .faults
            .iter()
            .flat_map(|x| x.notes.iter().map(move |n| format!("{:.1}s {}: {n}", x.start_s, x.kind.name())))
            .collect();
        if !notes.is_empty() {
            writeln!(f, "\nnotes:")?;
            for note in notes {
                writeln!(f, "- {note}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use omnipaxos_linearizability::OpResult;

    fn record(client: u32, op: Op, mode: Option<ReadMode>, times: (u64, u64), result: OpResult) -> Record {
        Record {
            client,
            node: 1,
            action: Action::Kv { generation: 0, op, mode },
            invoke_ns: times.0,
            complete_ns: times.1,
            status: Status::Ok,
            result: Some(result),
            error: None,
        }
    }

    /// A read of an overwritten value is a violation, unless it is a stale-mode read (which
    /// the main check leaves out).
    #[test]
    fn stale_reads_are_violations_except_in_stale_mode() {
        let mut history = vec![
            record(1, Op::Put { key: 0, value: 1 }, None, (1, 2), OpResult::Done),
            record(1, Op::Put { key: 0, value: 2 }, None, (3, 4), OpResult::Done),
            record(2, Op::Get { key: 0 }, Some(ReadMode::Linearizable), (5, 6), OpResult::Read(Some(2))),
        ];
        let not_stale = |r: &Record| r.read_mode() != Some(ReadMode::Stale);
        assert_eq!(check_records(&history, not_stale).violations, 0);
        history.push(record(2, Op::Get { key: 0 }, Some(ReadMode::Stale), (7, 8), OpResult::Read(Some(1))));
        assert_eq!(check_records(&history, not_stale).violations, 0);
        history.push(record(3, Op::Get { key: 0 }, Some(ReadMode::Lease), (9, 10), OpResult::Read(Some(1))));
        let result = check_records(&history, not_stale);
        assert_eq!(result.violations, 1);
        assert!(result.first_violation.is_some_and(|text| text.contains("stale read")));
    }

    #[test]
    fn a_history_survives_saving_and_loading() {
        let history = vec![
            record(1, Op::Cas { key: 2, expected: None, new: 7 }, None, (1, 2), OpResult::Swapped(true)),
            Record {
                client: 3,
                node: 2,
                action: Action::UniquePut { value: 9 },
                invoke_ns: 3,
                complete_ns: 9,
                status: Status::Unknown,
                result: None,
                error: Some("timeout".into()),
            },
        ];
        let dir = std::env::temp_dir().join(format!("chaos-history-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("history.jsonl");
        crate::history::save(&path, &history).expect("save");
        assert_eq!(crate::history::load(&path).expect("load"), history);
        std::fs::write(&path, "{\"not\": \"a record\"}\n").expect("write");
        assert!(matches!(crate::history::load(&path), Err(crate::ChaosError::BadHistory(_))));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
