//! Mutation checks (feature `mutations`): each fixed core bug switched back on must be found by
//! the simulator mode that fits it, within a small budget of seeds. CI runs the release budgets
//! of `.ci/run`; these are the same checks on fewer seeds, so that `cargo test --features
//! mutations` alone shows the checkers have teeth. (The read mutations are in `tests/reads.rs`.)
#![cfg(feature = "mutations")]

use omnipaxos_core::mutation::Mutation;
use omnipaxos_sim::{
    adversary::{self, AdversaryConfig},
    nemesis::FaultKind,
    runner,
    sim::SimConfig,
};

/// The first (seed, N) of `seeds` × N = 3, 5 whose adversarial run reports a violation.
fn adversarial(mutation: Mutation, seeds: std::ops::Range<u64>) -> Option<(u64, usize, &'static str)> {
    seeds.flat_map(|seed| [(seed, 3), (seed, 5)]).find_map(|(seed, nodes)| {
        let mut config = AdversaryConfig::new(seed, nodes);
        config.mutation = Some(mutation);
        adversary::run(config).violation.map(|v| (seed, nodes, v.property))
    })
}

#[test]
fn the_adversarial_mode_finds_each_reverted_sequence_paxos_fix() {
    for (mutation, expected) in [
        (Mutation::SyncReplacesLog, None),
        (Mutation::ForwardUnsynced, Some("exactly_once")),
        (Mutation::DropOutcomes, Some("outcome_not_lost")),
        (Mutation::IgnoreIdentity, Some("foreign_storage_is_refused")),
    ] {
        let found = adversarial(mutation, 0..10);
        let Some((seed, nodes, property)) = found else {
            panic!("{} not found in 10 seeds", mutation.name())
        };
        if let Some(expected) = expected {
            assert_eq!(property, expected, "{} at seed {seed} N={nodes}", mutation.name());
        }
    }
}

/// The first seed of `seeds` (N = 3) whose facade run reports a violation of `property`.
fn facade(
    mutation: Mutation,
    faults: &[FaultKind],
    property: &str,
    seeds: std::ops::Range<u64>,
    nodes: usize,
) -> Option<u64> {
    seeds.into_iter().find(|&seed| {
        let mut config = SimConfig::new(seed, nodes);
        config.settings.mutation = Some(mutation);
        config.fault_kinds = faults.to_vec();
        runner::run_one(config).violation.is_some_and(|v| v.property == property)
    })
}

/// A heartbeat reply with a round of `u32::MAX` (a corrupted message) is accepted, and the
/// next takeover panics.
#[test]
fn accepted_unbeatable_rounds_panic_on_a_corrupted_reply() {
    let faults = [FaultKind::CorruptReply, FaultKind::LeaderIsolation, FaultKind::Crash];
    let found = facade(Mutation::AcceptUnbeatableRounds, &faults, "core_does_not_panic", 0..20, 3);
    assert!(found.is_some(), "not found in 20 seeds");
}

/// A read reported `Ready` at or past a decided StopSign (it may miss writes of the next
/// configuration) is caught within a few seeds of follower reads.
#[test]
fn a_read_past_a_decided_stopsign_is_caught() {
    let mut found = None;
    for seed in 0..10 {
        let mut config = SimConfig::new(seed, 3);
        config.settings.mutation = Some(Mutation::ReadPastStopSign);
        config.reads = omnipaxos_sim::reads::ReadMode::Follower;
        let report = runner::run_one(config);
        if report.violation.is_some_and(|v| v.property == "read_ready_only_within_its_configuration") {
            found = Some(seed);
            break;
        }
    }
    assert!(found.is_some(), "not found in 10 seeds");
}

/// Finding 3 as found (the announced ballot lowered, the abandoned-ballot rule off): a peer
/// follows a ballot nobody leads with, and leader election does not agree after healing.
#[test]
fn a_lowered_announced_ballot_leaves_leader_election_disagreeing() {
    let found = facade(
        Mutation::LowerAnnouncedBallot,
        &[FaultKind::PriorityFlip],
        "leader_election_agrees_after_healing",
        0..40,
        3,
    );
    assert!(found.is_some(), "not found in 40 seeds");
}
