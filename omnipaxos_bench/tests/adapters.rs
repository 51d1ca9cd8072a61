//! Every library adapter decides every proposed entry through the shared delivery loop, and the
//! message counts match what each protocol sends per flush.

use omnipaxos_bench::{
    harness::{measure, Cluster, Node},
    peers::{
        null::NullNode,
        omnipaxos_peer::OmniPaxosNode,
        ours::{OurEagerNode, OurNode},
        raft_peer::RaftNode,
    },
    suite::Spread,
};

fn decides_everything<N: Node>() {
    for n in [1, 3, 5] {
        for batch in [1, 7, 100] {
            let sample = measure::<N>(n, batch, 2, 20);
            assert_eq!(sample.decided_entries, 20 * batch as u64, "n={n} B={batch}");
        }
    }
}

#[test]
fn our_core_decides_every_entry() {
    decides_everything::<OurNode>();
}

#[test]
fn our_core_with_piggybacked_decisions_decides_every_entry() {
    decides_everything::<OurEagerNode>();
}

#[test]
fn omnipaxos_decides_every_entry() {
    // omnipaxos 0.2.4 rejects single-node clusters ("Need more than 1 node"): n >= 3 only.
    for n in [3, 5] {
        for batch in [1, 7, 100] {
            let sample = measure::<OmniPaxosNode>(n, batch, 2, 20);
            assert_eq!(sample.decided_entries, 20 * batch as u64, "n={n} B={batch}");
        }
    }
}

#[test]
fn raft_decides_every_entry() {
    decides_everything::<RaftNode>();
}

#[test]
fn null_protocol_decides_every_entry() {
    decides_everything::<NullNode>();
}

#[test]
fn message_counts_per_flush_match_each_protocol() {
    // One proposal per flush on 3 nodes: Accept + Accepted to/from 2 followers, plus what each
    // protocol does to tell followers the decision.
    let per_entry = |s: omnipaxos_bench::harness::Sample| s.messages_per_entry();
    assert_eq!(per_entry(measure::<NullNode>(3, 1, 1, 50)), 4.0);
    assert_eq!(per_entry(measure::<RaftNode>(3, 1, 1, 50)), 8.0, "raft broadcasts commit");
    let ours = per_entry(measure::<OurNode>(3, 1, 1, 50));
    assert_eq!(ours, 4.0, "by default decisions ride on the next AcceptDecide: the 2(n-1) floor");
    let eager = per_entry(measure::<OurEagerNode>(3, 1, 1, 50));
    assert_eq!(eager, 6.0, "eager decisions: a Decide per follower");
}

#[test]
fn our_leader_reports_an_outcome_for_every_decided_proposal() {
    let mut cluster = Cluster::<OurNode>::new(3);
    for _ in 0..10 {
        cluster.flush(25);
    }
    assert_eq!(cluster.leader_decided_idx(), 250);
    assert_eq!(cluster.leader().decided_outcomes(), 250);
}

#[test]
fn spread_takes_the_median_of_odd_and_even_counts() {
    let odd = Spread::of([3.0, 1.0, 2.0]);
    assert_eq!((odd.median, odd.min, odd.max), (2.0, 1.0, 3.0));
    let even = Spread::of([4.0, 1.0, 2.0, 3.0]);
    assert_eq!((even.median, even.min, even.max), (2.5, 1.0, 4.0));
}
