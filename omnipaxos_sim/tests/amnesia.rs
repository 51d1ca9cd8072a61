//! Amnesia (issue 9): a replica's disk is destroyed or truncated, or its storage reports that
//! acknowledged state may be lost; the replica restarts as a learner, at most one per
//! configuration until a reconfiguration replaces it. Every check must hold — and restarting
//! it as a voter instead must break agreement, which is why learners exist.

use std::collections::BTreeMap;

use omnipaxos_sim::{
    nemesis::FaultKind,
    reads::{ReadCounts, ReadMode},
    runner,
    sim::{LinearizabilityResult, Report, SimConfig},
    storage::StorageKind,
};

fn config(seed: u64, storage: StorageKind, faults: &[FaultKind]) -> SimConfig {
    let mut config = SimConfig::new(seed, 3);
    config.storage = storage;
    config.reads = ReadMode::Follower;
    config.fault_kinds = faults.to_vec();
    config
}

/// Runs the seeds, requires every check to pass, and sums what the disks went through, the
/// faults and the reads.
fn totals(
    configs: impl Iterator<Item = SimConfig>,
) -> (BTreeMap<&'static str, u64>, BTreeMap<FaultKind, u64>, ReadCounts) {
    let (mut losses, mut faults, mut reads) = (BTreeMap::new(), BTreeMap::new(), ReadCounts::default());
    for config in configs {
        let seed = config.seed;
        let report: Report = runner::run_one(config);
        assert_eq!(report.violation, None, "seed {seed}");
        assert_eq!(report.linearizability, LinearizabilityResult::Linearizable, "seed {seed}");
        assert!(report.recover_ticks.is_some(), "seed {seed}: new operations completed after healing");
        for (name, count) in report.disk_losses {
            *losses.entry(name).or_insert(0) += count;
        }
        for (kind, count) in report.faults {
            *faults.entry(kind).or_insert(0) += count;
        }
        reads.add(&report.reads);
    }
    (losses, faults, reads)
}

/// Wiped disks (crashable backend): each wiped replica restarts as a learner, learners are
/// replaced by reconfigurations, gets sent to a learner are served by it, and every check holds.
#[test]
fn wiped_replicas_restart_as_learners_serve_reads_and_are_replaced() {
    let faults =
        [FaultKind::Amnesia, FaultKind::ReplaceLearner, FaultKind::Crash, FaultKind::LeaderIsolation];
    let (losses, faults, reads) = totals((0..3).map(|seed| config(seed, StorageKind::Crashable, &faults)));
    let amnesia = losses.get("amnesia").copied().unwrap_or(0);
    assert!(amnesia >= 3, "{losses:?}");
    assert_eq!(losses.get("restarted-as-learner").copied(), Some(amnesia), "{losses:?}");
    assert!(faults.get(&FaultKind::ReplaceLearner).is_some_and(|&n| n > 0), "{faults:?}");
    assert!(reads.served_at_learner > 0, "{reads:?}");
}

/// On the write-ahead log, a wiped or truncated data directory is always noticed at the
/// restart (missing log, or a tail recovery refuses): the replica starts over a replaced log
/// (`OpenMode::Replace`, which records the possible loss) as a learner.
#[test]
fn wiped_or_truncated_write_ahead_logs_are_replaced_and_restart_as_learners() {
    let faults = [FaultKind::Amnesia, FaultKind::ReplaceLearner];
    let (losses, _, _) = totals((0..2).map(|seed| config(seed, StorageKind::Persistent, &faults)));
    let amnesia = losses.get("amnesia").copied().unwrap_or(0);
    assert!(amnesia >= 2, "{losses:?}");
    assert_eq!(losses.get("amnesia-log-replaced").copied(), Some(amnesia), "{losses:?}");
    assert_eq!(losses.get("amnesia-undetected"), None, "{losses:?}");
    assert_eq!(losses.get("restarted-as-learner").copied(), Some(amnesia), "{losses:?}");
}

/// A crash that flips an unsynced bit makes `PersistentStorage` report that acknowledged state
/// may be lost; the replica then restarts as a learner over a replaced log, and every check
/// holds.
#[test]
fn a_possible_loss_makes_the_replica_a_learner() {
    let faults = [FaultKind::Crash, FaultKind::DiskFailure, FaultKind::ReplaceLearner];
    let (losses, _, _) = totals((0..4).map(|seed| config(seed, StorageKind::Persistent, &faults)));
    let replaced = losses.get("possible-loss-log-replaced").copied().unwrap_or(0);
    assert!(replaced > 0, "{losses:?}");
    assert!(losses.get("restarted-as-learner").copied().unwrap_or(0) >= replaced, "{losses:?}");
}

/// The same fault with the replica restarted as a voter (`--amnesia-voter`): it promises and
/// accepts again with no memory of what it acknowledged, and a value decided at an index is
/// replaced by another (also its proposal ids repeat: the incarnation counter was on the disk).
#[test]
fn a_wiped_replica_restarted_as_a_voter_breaks_agreement() {
    let agreement_broken = (0..10).find(|&seed| {
        let mut config = config(seed, StorageKind::Crashable, &[FaultKind::Amnesia]);
        config.amnesia_voter = true;
        let report = runner::run_one(config);
        report.violation.is_some_and(|v| v.property == "at_most_one_value_decided_per_index")
    });
    assert!(agreement_broken.is_some(), "no seed of ten broke agreement");
}

/// Core bug (open): a replica whose storage reported a possible loss, restarted as a learner
/// over the log recovery left (as `SequencePaxosConfig::set_learner` documents), takes entries
/// of that log it had only accepted for decided: its state machine disagrees with the others
/// (`--learner-keeps-log`; the simulator replaces the log instead). Seed 9 with N = 3 at the
/// branch's core: `at_most_one_value_decided_per_index`. Passes once fixed.
#[test]
fn a_learner_over_its_recovered_log_agrees_with_the_others() {
    let mut config = SimConfig::new(9, 3);
    config.storage = StorageKind::Persistent;
    config.learner_keeps_log = true;
    assert_eq!(runner::run_one(config).violation, None);
}

/// Core bug (open): at a configuration's first election a server elects the ballot of a peer
/// that knows no leader yet; that peer then joins another declared leader, and the server
/// follows a ballot nobody leads with, forever (issue 8's finding 3, without priorities).
/// Seed 988 with N = 5 at the branch's core: `leader_election_agrees_after_healing`.
#[test]
fn every_voter_follows_the_same_leader_after_healing() {
    assert_eq!(runner::run_one(SimConfig::new(988, 5)).violation, None);
}

/// Core bug (fixed in a0c4c05, see `tests/ble.rs`), found by the facade soak: a follower dropped a leader ballot
/// whose owner follows another leader, then adopted it again from Sequence Paxos's stale
/// promise and counted itself happy with it, round after round, so nobody could take over.
/// Seeds 7209 (N = 3) and 7012, 9522 (N = 5): `new_operations_complete_after_healing`.
#[test]
fn a_follower_does_not_readopt_a_ballot_nobody_leads_with() {
    for (seed, nodes) in [(7209, 3), (7012, 5)] {
        assert_eq!(runner::run_one(SimConfig::new(seed, nodes)).violation, None, "seed {seed} N={nodes}");
    }
}

/// `--expect-violation`: a batch that stops at the first violating seed still finds the lowest
/// one (every seed below it runs) and skips most seeds above it.
#[test]
fn a_batch_stopping_at_the_first_violation_finds_the_lowest_violating_seed() {
    let batch = runner::Batch {
        seeds: 0..30,
        node_counts: vec![3],
        ops: 500,
        threads: 2,
        storage: StorageKind::Crashable,
        extended_faults: true,
        reads: ReadMode::Follower,
        drift_beyond_bound: false,
        amnesia_voter: true,
        learner_keeps_log: false,
        fault_kinds: vec![FaultKind::Amnesia],
        keep_lease_after_pause: false,
        mutation: None,
        stop_at_first_violation: true,
        expected_properties: Vec::new(),
    };
    let summary = runner::run_batch(&batch, |_| {});
    let lowest = (0..30).find(|&seed| runner::run_one(batch.config(seed, 3)).violation.is_some());
    assert!(lowest.is_some(), "a wiped voter breaks something within 30 seeds");
    let found = summary.violations().iter().map(|&(_, seed, _)| seed).min();
    assert_eq!(found, lowest);
    assert!(summary.by_nodes[&3].seeds < 20, "ran {} seeds", summary.by_nodes[&3].seeds);
}

/// Core bug (open): a learner asks only the leader that last answered it; once that leader is
/// deposed (and the new leader's Prepare did not reach the learner) it never learns again, and
/// its node cannot move on to the next configuration. Seed 2472 with N = 3 and leader reads at
/// the branch's core: `replicas_converge_after_healing`, the learner of configuration 2 stuck at
/// 179 of 187 decided entries, asking node 3 while node 2 leads. Passes once fixed.
#[test]
fn a_learner_finds_the_new_leader_after_a_leader_change() {
    let mut config = SimConfig::new(2472, 3);
    config.reads = ReadMode::Leader;
    assert_eq!(runner::run_one(config).violation, None);
}
