//! Bugs the simulator found in the core, reduced to scripted schedules that do not depend on a
//! seed (seeds stop reproducing a bug as soon as the core's behaviour changes anywhere).
//! Each test is `#[ignore]`d with its diagnosis until the core is fixed; run them with
//! `cargo test -p omnipaxos_sim --test core_bugs -- --ignored`.
//!
//! Found by seeds 268, 924, 1175, 1596, 2500 (N=5), 1488 (N=3) with the core before commit
//! bff164d; 3227, 3637, 3667, 5884, 6519, 6808 (N=3), 3250, 3797, 5987 (N=5) at bff164d; and
//! 577, 1628, 1948, 5639, 6123, 8810 (N=3), 1554, 8953, 9312 (N=5) at 0e6a858
//! (`tests/regressions.rs` replays them). Both tests still fail at commit 1d36117.

use std::collections::{BTreeMap, BTreeSet};

use omnipaxos_core::{
    ballot_leader_election::Ballot,
    messages::{PaxosMessage, PaxosMsg},
    sequence_paxos::{ProposalOutcome, SequencePaxos, SequencePaxosConfig},
    util::NodeId,
};
use omnipaxos_storage::crash_storage::CrashableStorage;

type Replica = SequencePaxos<u64, (), CrashableStorage<u64, ()>>;

/// Three replicas wired by hand: the test says who leads and which messages are lost.
struct Cluster {
    replicas: BTreeMap<NodeId, Replica>,
    in_flight: Vec<PaxosMessage<u64, ()>>,
    /// Directed links that lose everything.
    cut: BTreeSet<(NodeId, NodeId)>,
}

impl Cluster {
    fn new() -> Cluster {
        let pids = [1, 2, 3];
        let replicas = pids
            .iter()
            .map(|&pid| {
                let mut config = SequencePaxosConfig::default();
                config.set_configuration_id(1);
                config.set_pid(pid);
                config.set_peers(pids.iter().copied().filter(|&p| p != pid).collect());
                (pid, SequencePaxos::with(config, CrashableStorage::default()))
            })
            .collect();
        Cluster { replicas, in_flight: Vec::new(), cut: BTreeSet::new() }
    }

    fn replica(&mut self, pid: NodeId) -> &mut Replica {
        self.replicas.get_mut(&pid).expect("exists")
    }

    /// Collects and delivers messages until none are left (cut links lose theirs).
    fn deliver_all(&mut self) {
        for _ in 0..100 {
            for replica in self.replicas.values_mut() {
                replica.take_outgoing_messages(&mut self.in_flight).expect("flush");
            }
            if self.in_flight.is_empty() {
                return;
            }
            for m in std::mem::take(&mut self.in_flight) {
                if !self.cut.contains(&(m.from, m.to)) {
                    self.replicas.get_mut(&m.to).expect("exists").handle(m).expect("handle");
                }
            }
        }
        panic!("messages never quiesce");
    }

    /// Ticks every replica `n` times, delivering after each tick.
    fn ticks(&mut self, n: usize) {
        for _ in 0..n {
            for replica in self.replicas.values_mut() {
                replica.tick().expect("tick");
            }
            self.deliver_all();
        }
    }

    /// Where `pid`'s forwards go: the receivers of its ProposalForwards during one resend.
    fn forward_targets(&mut self, pid: NodeId) -> BTreeSet<NodeId> {
        let mut out = Vec::new();
        let replica = self.replica(pid);
        for _ in 0..25 {
            replica.tick().expect("tick");
        }
        replica.take_outgoing_messages(&mut out).expect("flush");
        out.iter().filter(|m| matches!(m.msg, PaxosMsg::ProposalForward(_))).map(|m| m.to).collect()
    }
}

/// Bug: a follower forwards its proposals to the owner of the highest ballot it ever *heard
/// of*, not to the leader it follows, so none of them is ever decided.
///
/// `SequencePaxos::leader` ("the highest leader ballot known; forwards go to it") is raised by
/// `handle_not_accepted` and `handle_prepare` for any higher ballot. Here node 3 took over with
/// 2.0.3, wrote its promise, and its Prepares were lost (in the simulator: it crashed before
/// its flush, or its links were cut); leader 1 learns 2.0.3 from node 3's NotAccepted. Then
/// node 2 is elected with 2.0.2 (it had not seen round 2 from node 3) and node 1 follows it —
/// but `maybe_forward_proposals` still sends to `self.leader.pid` = 3, which is not leading and
/// drops every forward ("forward dropped: not the leader; the proposer retries"), forever.
/// In the simulator, clients of node 1 time out until the next leader change
/// (`new_operations_complete_after_healing`, seed 3227 N=3).
///
/// Forwards should go to the leader this replica is synchronised with (its promise, once in
/// the accept phase), or `leader` should be raised only by ballots that are actually leading.
#[test]
fn a_follower_forwards_to_the_leader_it_follows() {
    let mut cluster = Cluster::new();
    let first = Ballot::with(1, 1, 0, 1);
    for pid in [1, 2, 3] {
        cluster.replica(pid).handle_leader(first).unwrap();
    }
    cluster.deliver_all();
    assert!(cluster.replica(1).is_accepting_leader());
    // Node 3 takes over with 2.0.3, but its Prepares are lost.
    cluster.cut.extend([(3, 1), (3, 2)]);
    cluster.replica(3).handle_leader(Ballot::with(1, 2, 0, 3)).unwrap();
    cluster.deliver_all();
    cluster.cut.clear();
    // It crashes and restarts (recovering with its persisted promise 2.0.3).
    cluster.replica(3).fail_recovery();
    // Leader 1 replicates an entry; node 3 refuses it with NotAccepted(2.0.3).
    cluster.replica(1).append(10).unwrap();
    cluster.deliver_all();
    // Node 1 outbids the phantom promise 2.0.3 with 3.0.1. Node 2 is then elected with 4.0.2
    // and node 1 follows it.
    let second = Ballot::with(1, 4, 0, 2);
    for pid in [1, 2] {
        cluster.replica(pid).handle_leader(second).unwrap();
    }
    cluster.deliver_all();
    assert!(cluster.replica(2).is_accepting_leader());
    assert_eq!(cluster.replica(1).get_promise(), second);
    // Node 1 proposes: the entry must reach leader 2, which has a quorum with node 1.
    let id = cluster.replica(1).append(20).unwrap();
    let targets = cluster.forward_targets(1);
    cluster.ticks(50);
    let mut outcomes = Vec::new();
    cluster.replica(1).take_proposal_outcomes(&mut outcomes);
    let decided =
        outcomes.iter().any(|(o, outcome)| *o == id && matches!(outcome, ProposalOutcome::Decided(_)));
    assert!(decided, "node 1 follows leader 2 but forwards to {targets:?}; its proposal is never decided");
}

/// Bug: a replica that restarts holding its own, never-established ballot as its promise is
/// not resynchronised while the current leader, whose ballot is lower, keeps a write quorum.
///
/// - `SequencePaxos::fail_recovery` sends PrepareReq with that promise; `handle_prepare_req`
///   (roles.rs) drops it because `req.n > leader.n`;
/// - the leader's AcceptDecide/Prepare get `NotAccepted(promise)` back; the leader marks the
///   peer `PromisedHigher` (`Leader::handle_not_accepted`) and never contacts it again;
/// - with Ballot Leader Election, the leader stays happy (a write quorum follows it), so the
///   stuck replica's neighbours are happy and it may not take over either.
///
/// The replica rejoins only at the next leader change; in a stable cluster that is never
/// (`replicas_converge_after_healing` in 8 of 10,000 runs). Meanwhile the cluster tolerates one
/// failure less. A fix belongs to the leader: on learning of a higher promise from a follower
/// (NotAccepted, PrepareReq), take over again with a round above it.
#[test]
fn a_replica_with_a_higher_promise_is_resynchronised() {
    let mut cluster = Cluster::new();
    let first = Ballot::with(1, 1, 0, 1);
    for pid in [1, 2, 3] {
        cluster.replica(pid).handle_leader(first).unwrap();
    }
    cluster.deliver_all();
    // Node 3 takes over with 2.0.3 but its Prepares are lost; then it recovers.
    cluster.cut.extend([(3, 1), (3, 2)]);
    cluster.replica(3).handle_leader(Ballot::with(1, 2, 0, 3)).unwrap();
    cluster.deliver_all();
    cluster.cut.clear();
    cluster.replica(3).fail_recovery();
    for value in 1..=5 {
        cluster.replica(1).append(value).unwrap();
        cluster.ticks(5);
    }
    cluster.ticks(100);
    let (leader, stuck) = (cluster.replica(1).get_decided_idx(), cluster.replica(3).get_decided_idx());
    assert_eq!(leader, 5, "leader 1 decides with node 2");
    assert_eq!(stuck, leader, "node 3 (promise 2.0.3) never catches up with leader 1 (1.0.1)");
}
