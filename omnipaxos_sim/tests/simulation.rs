//! Whole runs of the simulator: every seed of a small budget passes every check, a seed
//! reproduces its run exactly, and the checks catch a deliberately wrong design.

use omnipaxos_sim::{
    reads::ReadMode,
    runner,
    sim::{LinearizabilityResult, SimConfig},
};

/// A small budget for debug builds: the CI budget runs the release binary (see docs/simulator.md).
fn config(seed: u64, nodes: usize) -> SimConfig {
    let mut config = SimConfig::new(seed, nodes);
    config.ops = 500;
    config
}

#[test]
fn a_small_seed_budget_passes_every_check_with_three_five_and_seven_replicas() {
    for (nodes, seeds) in [(3, 0..40), (5, 100..130), (7, 200..210)] {
        for seed in seeds {
            let report = runner::run_one(config(seed, nodes));
            assert_eq!(report.violation, None, "seed {seed} N={nodes}");
            assert_eq!(report.linearizability, LinearizabilityResult::Linearizable, "seed {seed} N={nodes}");
            assert!(
                report.ops.invoked >= 500 && report.ops.ok > 0,
                "seed {seed} N={nodes}: {:?}",
                report.ops
            );
            assert!(report.recover_ticks.is_some());
            assert!(report.faults.values().sum::<u64>() > 0, "seed {seed} N={nodes} injected no fault");
        }
    }
}

#[test]
fn one_seed_reproduces_its_run_exactly() {
    let run = |seed| {
        let mut config = config(seed, 5);
        config.trace = true;
        runner::run_one(config)
    };
    let (first, second) = (run(7), run(7));
    assert!(first.trace.len() > 1000, "the trace has a line per message");
    assert_eq!(first.trace, second.trace);
    assert_eq!((first.ticks, first.ops, first.decided), (second.ticks, second.ops, second.decided));
    assert_ne!(run(8).trace, first.trace, "another seed is another run");
}

/// Replicas that answer reads from their own state machine serve stale reads under partitions:
/// the linearizability check must notice on some seed of a handful.
#[test]
fn reads_that_bypass_the_log_are_caught_as_not_linearizable() {
    let caught = (0..10).find(|&seed| {
        let mut config = config(seed, 3);
        config.read_locally = true;
        let report = runner::run_one(config);
        report.violation.is_some_and(|v| v.property == "client_history_is_linearizable")
    });
    assert!(caught.is_some(), "no seed of ten exposed the stale reads");
}

/// Without faults every operation completes, except those the clients abandon when the
/// liveness phase starts (one per client at most). In leader-read mode a get sent to a node
/// that does not lead is refused (and names the leader); in lease mode the clocks drift, which
/// may cost a leader change: only gets fail there, and almost everything completes.
#[test]
fn without_faults_every_operation_completes() {
    for mode in ReadMode::CONCRETE {
        let mut config = config(3, 3);
        config.faults = false;
        config.reads = mode;
        let clients = config.clients as u64;
        let report = runner::run_one(config);
        assert_eq!(report.violation, None, "{mode}");
        assert_eq!(report.read_mode, mode);
        assert!(report.faults.is_empty());
        let (ops, reads) = (report.ops, report.reads);
        match mode {
            ReadMode::Log | ReadMode::Follower => {
                assert_eq!(ops.failed, 0, "{mode}: {ops:?} {reads:?}");
                assert!(ops.indeterminate <= clients, "{mode}: {ops:?}");
                assert_eq!(ops.invoked, ops.ok + ops.indeterminate);
            }
            _ => {
                assert_eq!(ops.failed, reads.failed, "{mode}: only gets fail: {ops:?} {reads:?}");
                assert!(ops.ok * 100 >= ops.invoked * 95, "{mode}: {ops:?} {reads:?}");
            }
        }
    }
}

/// The faults added for issue 8 happen: archived messages are replayed, messages wait for
/// crashed nodes, leader priorities change; with the classic faults none of them does.
#[test]
fn extended_faults_replay_park_and_change_priorities_and_classic_faults_do_not() {
    use omnipaxos_sim::nemesis::FaultKind;
    let (mut replays, mut priorities, mut replayed, mut parked) = (0, 0, 0, 0);
    for seed in 0..8 {
        let report = runner::run_one(config(seed, 3));
        assert_eq!(report.violation, None, "seed {seed}");
        replays += report.faults.get(&FaultKind::Replay).copied().unwrap_or(0);
        priorities += report.faults.get(&FaultKind::Priority).copied().unwrap_or(0);
        replayed += report.messages.replayed;
        parked += report.messages.parked;

        let mut classic = config(seed, 3);
        classic.extended_faults = false;
        let report = runner::run_one(classic);
        assert!(
            !report.faults.contains_key(&FaultKind::Replay)
                && !report.faults.contains_key(&FaultKind::Priority)
        );
        assert_eq!((report.messages.replayed, report.messages.parked), (0, 0));
    }
    assert!(replays > 0 && replayed >= replays, "replays {replays}, messages replayed {replayed}");
    assert!(priorities > 0, "no set_priority in 8 seeds");
    assert!(parked > 0, "no message waited for a crashed node in 8 seeds");
}

/// Seeds that found, with the extended faults, a replica's decided prefix truncated by a
/// stale Prepare + AcceptSync replayed to it after its restart (issue 8, finding 1):
/// `decided_prefix_never_shrinks_or_changes`, at the core of the issue.
#[test]
fn seeds_that_found_stale_log_synchronisations_pass() {
    for (seed, nodes) in [(454, 5), (303, 5), (665, 3), (737, 3), (753, 3)] {
        let report = runner::run_one(config(seed, nodes));
        assert_eq!(report.violation, None, "seed {seed} N={nodes}");
    }
}
