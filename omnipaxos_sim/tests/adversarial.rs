//! The adversarial mode (`omnipaxos_sim adversarial`, docs/simulator.md): the CI budget of
//! seeds, and deterministic tests of its machinery (archive replays, the scheduler, the
//! checker, hostile messages, panic capture).
//!
//! The budget tests failed on the core before issue 8's fixes (agreement broken by stale log
//! synchronisations, values decided twice, lost outcomes, panics on `u32::MAX` ballots); CI
//! runs a larger budget in release through the command line (`.ci/run`).

use std::collections::{BTreeMap, BTreeSet};

use omnipaxos_core::{
    ballot_leader_election::Ballot,
    sequence_paxos::{ProposalOutcome, SequencePaxosConfig},
    util::NodeId,
};
use omnipaxos_sim::{
    adversary::{
        self,
        checker::Checker,
        entry,
        hostile::{hostile_message, HostileKind, HostileTarget},
        AdvReplica, AdversaryConfig, Liveness,
    },
    storage::{SimStorage, StorageKind},
};
use rand::{rngs::SmallRng, SeedableRng};

/// Seeds per node count of the test budget. In release a run takes about a millisecond; in a
/// debug build (where the core checks its invariants after every input) about 30 times more,
/// so the test command runs 300 and `.ci/run` runs 2,000 more in release.
const CI_SEEDS: u64 = 300;

fn assert_budget_passes(storage: StorageKind, seeds: std::ops::Range<u64>) {
    let mut failures = Vec::new();
    for nodes in [3, 5] {
        for seed in seeds.clone() {
            let mut config = AdversaryConfig::new(seed, nodes);
            config.storage = storage;
            let report = adversary::run(config);
            if let Some(v) = report.violation {
                failures.push(format!("seed {seed} N={nodes}: {v}"));
                continue;
            }
            let checked = matches!(report.liveness, Liveness::Converged { .. } | Liveness::BallotsExhausted);
            assert!(checked, "seed {seed} N={nodes}: liveness {:?}", report.liveness);
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing runs; first: {:#?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
}

#[test]
fn ci_budget_of_adversarial_seeds_finds_no_violation() {
    assert_budget_passes(StorageKind::Crashable, 0..CI_SEEDS);
}

#[test]
fn ci_budget_of_adversarial_seeds_over_persistent_storage_finds_no_violation() {
    assert_budget_passes(StorageKind::Persistent, 0..CI_SEEDS / 5);
}

fn traced(seed: u64, nodes: usize) -> adversary::AdversaryReport {
    let mut config = AdversaryConfig::new(seed, nodes);
    config.steps = 400;
    config.trace = true;
    config.tolerate = [
        "outcome_not_lost",
        "no_panic_on_input",
        "decided_index_never_decreases",
        "agreement",
        "exactly_once",
        "foreign_storage_is_refused",
    ]
    .map(String::from)
    .to_vec();
    adversary::run(config)
}

#[test]
fn one_seed_reproduces_its_trace_exactly() {
    let (first, second) = (traced(7, 3), traced(7, 3));
    assert!(first.trace.len() > 200, "a line per event: {}", first.trace.len());
    assert_eq!(first.trace, second.trace);
    assert_eq!((first.steps, first.decided, &first.actions), (second.steps, second.decided, &second.actions));
    assert_ne!(traced(8, 3).trace, first.trace, "another seed is another run");
}

/// The parts of a trace line `s=STEP WHAT #ID FROM->TO ...`.
fn parse(line: &str) -> Option<(u64, &str, &str)> {
    let rest = line.strip_prefix("s=")?;
    let (step, rest) = rest.split_once(' ')?;
    let (what, rest) = rest.split_once(' ')?;
    Some((step.parse().ok()?, what, rest))
}

/// Some replay delivers a message to a node that restarted after the message was sent: the
/// archive outlives processes, as a real network's queues do.
#[test]
fn replays_reach_restarted_nodes_with_messages_sent_before_the_restart() {
    let mut found = 0;
    for seed in 0..10 {
        let report = traced(seed, 3);
        let mut sent_at: BTreeMap<String, u64> = BTreeMap::new();
        let mut restarts: BTreeMap<NodeId, Vec<u64>> = BTreeMap::new();
        for line in &report.trace {
            let Some((step, what, rest)) = parse(line) else { continue };
            let mut words = rest.split(' ');
            match what {
                "send" => {
                    sent_at.insert(words.next().unwrap_or_default().to_string(), step);
                }
                "restart" => {
                    let pid = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
                    restarts.entry(pid).or_default().push(step);
                }
                "replay" => {
                    let id = words.next().unwrap_or_default();
                    let to: NodeId = words
                        .next()
                        .and_then(|link| link.split_once("->"))
                        .and_then(|(_, to)| to.parse().ok())
                        .unwrap_or(0);
                    let sent = sent_at[id];
                    if restarts.get(&to).is_some_and(|r| r.iter().any(|&at| at > sent)) {
                        found += 1;
                    }
                }
                _ => {}
            }
        }
    }
    assert!(found > 10, "only {found} replays crossed a restart of their receiver");
}

/// Over a few seeds the scheduler takes every kind of action, hostile messages of every kind
/// included.
#[test]
fn the_scheduler_takes_every_action() {
    let mut actions: BTreeMap<&str, u64> = BTreeMap::new();
    for seed in 0..40 {
        for (name, n) in traced(seed, 3).actions {
            *actions.entry(name).or_default() += n;
        }
    }
    let expected = [
        "deliver",
        "drop",
        "duplicate",
        "replay",
        "handle_leader",
        "append",
        "tick",
        "take_outgoing",
        "crash",
        "restart",
        "reconnected",
        "fail_recovery",
        "trim",
        "snapshot",
        "reconfigure",
        "disk_failure",
        "foreign_disk",
        "hostile",
        "hostile-outsider",
        "hostile-misaddressed",
        "hostile-foreign-config",
        "hostile-extreme-from-peer",
    ];
    for name in expected {
        assert!(actions.get(name).copied().unwrap_or(0) > 0, "no {name} in 40 seeds: {actions:?}");
    }
}

#[test]
fn seeds_draw_varied_profiles() {
    let profiles: BTreeSet<String> = (0..40).map(|seed| traced(seed, 3).profile).collect();
    assert!(profiles.len() == 40);
    assert!(profiles.iter().any(|p| p.contains("pids [1, 2, 3]")), "contiguous pids");
    assert!(profiles.iter().any(|p| !p.contains("pids [1, 2, 3]")), "non-contiguous pids");
    let buffer_size = |p: &String| -> usize {
        p.split("buffer_size ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    assert!(profiles.iter().any(|p| buffer_size(p) <= 8), "small buffer sizes");
    assert!(profiles.iter().any(|p| buffer_size(p) >= 64), "large buffer sizes");
    assert!(profiles.iter().any(|p| p.contains("piggyback_decide true")));
    assert!(profiles.iter().any(|p| p.contains("piggyback_decide false")));
}

// ---- the checker, on replicas built to break it ----------------------------------------

/// A single-replica cluster `pid` that has decided `values` (in order).
fn decided_alone(pid: NodeId, values: &[u64]) -> (AdvReplica, Vec<omnipaxos_core::util::ProposalId>) {
    let mut config = SequencePaxosConfig::default();
    config.set_configuration_id(1);
    config.set_pid(pid);
    let mut replica = AdvReplica::with(config, SimStorage::new(StorageKind::Crashable, pid, 1));
    replica.handle_leader(Ballot::with(1, 1, 0, pid)).expect("leads");
    let mut out = Vec::new();
    replica.take_outgoing_messages(&mut out).expect("flush");
    let ids = values.iter().map(|&v| replica.append(entry(pid, v)).expect("appends")).collect();
    replica.take_outgoing_messages(&mut out).expect("flush");
    assert_eq!(replica.get_decided_idx(), values.len() as u64);
    (replica, ids)
}

fn ignore(_: String) {}

#[test]
fn the_checker_catches_two_values_decided_at_one_index() {
    let mut checker = Checker::default();
    let (one, one_ids) = decided_alone(1, &[10]);
    let (two, two_ids) = decided_alone(2, &[20]);
    checker.note_appended(one_ids[0], 10);
    checker.note_appended(two_ids[0], 20);
    checker.check_replica(1, &one, &mut ignore).expect("the first decision is fine");
    let v = checker.check_replica(2, &two, &mut ignore).expect_err("index 0 holds two values");
    assert_eq!(v.property, "agreement", "{v}");
}

#[test]
fn the_checker_catches_a_value_decided_twice_and_an_invented_one() {
    let mut checker = Checker::default();
    let (replica, ids) = decided_alone(1, &[10, 10]);
    checker.note_appended(ids[0], 10);
    checker.note_appended(ids[1], 10);
    let v = checker.check_replica(1, &replica, &mut ignore).expect_err("v10 twice");
    assert_eq!(v.property, "exactly_once", "{v}");

    let mut checker = Checker::default();
    let (replica, _) = decided_alone(1, &[10]);
    let v = checker.check_replica(1, &replica, &mut ignore).expect_err("no append returned it");
    assert_eq!(v.property, "decided_entries_were_proposed", "{v}");
}

#[test]
fn the_checker_catches_wrong_repeated_and_lost_outcomes() {
    let (mut replica, ids) = decided_alone(1, &[10, 11]);
    let fresh = || {
        let mut checker = Checker::default();
        checker.note_appended(ids[0], 10);
        checker.note_appended(ids[1], 11);
        checker
    };
    let mut outcomes = Vec::new();
    replica.take_proposal_outcomes(&mut outcomes);
    assert_eq!(outcomes, vec![(ids[0], ProposalOutcome::Decided(0)), (ids[1], ProposalOutcome::Decided(1))]);

    let mut checker = fresh();
    checker.check_replica(1, &replica, &mut ignore).expect("fine");
    checker.check_outcomes(1, 2, &outcomes).expect("the true outcomes");
    let v = checker.check_outcomes(1, 2, &outcomes[..1]).expect_err("reported twice");
    assert_eq!(v.property, "one_outcome_per_proposal", "{v}");

    let mut checker = fresh();
    checker.check_replica(1, &replica, &mut ignore).expect("fine");
    let v = checker.check_outcomes(1, 2, &[(ids[0], ProposalOutcome::Decided(1))]).expect_err("wrong index");
    assert_eq!(v.property, "outcome_names_its_entry", "{v}");

    let mut checker = fresh();
    checker.check_replica(1, &replica, &mut ignore).expect("fine");
    let v = checker.check_outcomes(1, 2, &outcomes[1..]).expect_err("the outcome of index 0 is missing");
    assert_eq!(v.property, "outcome_not_lost", "{v}");
}

#[test]
fn hostile_messages_are_deterministic_and_of_every_kind() {
    let pids = [2, 5, 9];
    let target =
        HostileTarget { config_id: 1, pids: &pids, receiver: 5, receiver_promise: Ballot::with(1, 3, 0, 9) };
    let draw = |seed| {
        let mut rng = SmallRng::seed_from_u64(seed);
        (0..200).map(|_| hostile_message(&mut rng, target)).collect::<Vec<_>>()
    };
    let (first, second) = (draw(1), draw(1));
    let show = |ms: &[(HostileKind, adversary::AdvMessage)]| {
        ms.iter().map(|(k, m)| format!("{k:?} {m:?}")).collect::<Vec<_>>()
    };
    assert_eq!(show(&first), show(&second));
    let kinds: BTreeSet<HostileKind> = first.iter().map(|(k, _)| *k).collect();
    assert_eq!(kinds.len(), 4, "{kinds:?}");
    for (kind, m) in &first {
        match kind {
            HostileKind::Outsider => assert!(!pids.contains(&m.from)),
            HostileKind::Misaddressed => assert_ne!(m.to, 5),
            HostileKind::ForeignConfiguration => assert_ne!(m.config_id, 1),
            HostileKind::ExtremeFromPeer => {
                assert!(pids.contains(&m.from) && m.from != 5 && m.to == 5 && m.config_id == 1)
            }
        }
    }
}

#[test]
fn guard_turns_a_panic_into_its_message_and_leaves_other_results_alone() {
    adversary::install_panic_capture();
    assert_eq!(adversary::guard(|| 7), Ok(7));
    let message =
        adversary::guard(|| -> u32 { panic!("ballot rounds exhausted\nsecond line") }).expect_err("panics");
    assert!(message.contains("ballot rounds exhausted second line"), "{message}");
}

/// `PersistentStorage` records its node and configuration in every segment and refuses to open
/// as another: the foreign-disk experiment runs and is always refused there. (Over
/// `CrashableStorage`, which records no identity, only the core can refuse.)
#[test]
fn persistent_storage_refuses_foreign_disks() {
    let mut experiments = 0;
    for seed in 0..60 {
        let mut config = AdversaryConfig::new(seed, 3);
        config.storage = StorageKind::Persistent;
        config.steps = 300;
        config.tolerate =
            ["outcome_not_lost", "no_panic_on_input", "decided_index_never_decreases", "agreement"]
                .map(String::from)
                .to_vec();
        let report = adversary::run(config);
        experiments += report.actions.get("foreign_disk").copied().unwrap_or(0);
        let foreign = report
            .violation
            .iter()
            .chain(&report.tolerated)
            .any(|v| v.property == "foreign_storage_is_refused");
        assert!(!foreign, "seed {seed}: {:?}", report.violation);
    }
    assert!(experiments > 10, "only {experiments} foreign-disk experiments in 60 seeds");
}
