//! The partial-connectivity scenarios: our library keeps deciding in every one of them (timing
//! figures live in docs/partial-connectivity.md, not in tests), and the harness is sensitive
//! enough to show raft-rs's deadlock in the constrained election.

use omnipaxos_sim::scenarios::{run_omnipaxos, Scenario};

#[test]
fn omnipaxos_decides_again_in_every_scenario() {
    for (scenario, n) in Scenario::ALL {
        for seed in 0..3 {
            let result = run_omnipaxos(scenario, n, seed);
            assert!(
                result.ticks_to_first_decision.is_some(),
                "{} n={n} seed {seed}: {result:?}",
                scenario.name()
            );
            assert!(
                result.progress_ticks * 2 > result.partition_ticks,
                "{} n={n} seed {seed}",
                scenario.name()
            );
        }
    }
}

#[test]
fn chained_partition_keeps_the_leader() {
    for seed in 0..3 {
        let result = run_omnipaxos(Scenario::Chained, 3, seed);
        assert_eq!(result.leader_changes, 0, "seed {seed}");
        assert_eq!(result.progress_ticks, result.partition_ticks, "seed {seed}");
    }
}

#[cfg(feature = "raft-comparison")]
#[test]
fn raft_deadlocks_in_the_constrained_election_and_recovers_from_a_leader_crash() {
    use omnipaxos_sim::{raft_node::RaftNode, scenarios::run};
    for pre_vote_check_quorum in [false, true] {
        let make = |pid, pids: &[u64], rng: &mut _| RaftNode::new(pid, pids, pre_vote_check_quorum, rng);
        let constrained = run(Scenario::ConstrainedElection, 5, 1, make);
        assert_eq!(constrained.ticks_to_first_decision, None, "PV+CQ {pre_vote_check_quorum}");
        let crash = run(Scenario::LeaderCrash, 3, 1, make);
        assert!(crash.ticks_to_first_decision.is_some(), "PV+CQ {pre_vote_check_quorum}");
    }
}
