//! Our library: `omnipaxos_core::SequencePaxos` over `omnipaxos_storage::MemoryStorage`, default
//! configuration.
//!
//! The leader is chosen by handing every replica the ballot Ballot Leader Election would elect
//! (`handle_leader`); BLE itself adds nothing to a throughput run. Batching is the library's own:
//! entries appended between two `take_outgoing_messages` calls become one storage write and one
//! AcceptDecide per follower, and the decided index rides on the next AcceptDecide (or goes as a
//! Decide when none is pending at take time). With `set_piggyback_decide(true)`
//! ([`OurEagerNode`]) the decided index only rides on the next AcceptDecide (or goes out at
//! the next tick, which this harness never gives): 2(n-1) messages per flush.

use omnipaxos_core::{
    ballot_leader_election::Ballot,
    messages::PaxosMessage,
    sequence_paxos::{ProposalOutcome, SequencePaxos, SequencePaxosConfig},
    util::{NodeId, ProposalId},
};
use omnipaxos_storage::memory_storage::MemoryStorage;

use crate::harness::Node;

const CONFIGURATION_ID: u32 = 1;

type Replica = SequencePaxos<u64, (), MemoryStorage<u64, ()>>;

/// One replica of our library, default configuration.
pub type OurNode = OurNodeWith<false>;

/// One replica of our library with `set_piggyback_decide(false)`: every decision goes out at
/// once as a Decide (3(n−1) messages per entry at one proposal per flush).
pub type OurEagerNode = OurNodeWith<true>;

/// One replica of our library; `EAGER_DECIDE` is the one setting changed from the default.
pub struct OurNodeWith<const EAGER_DECIDE: bool> {
    replica: Replica,
    /// Reused buffer for `take_proposal_outcomes`.
    outcomes: Vec<(ProposalId, ProposalOutcome)>,
    /// Own proposals reported decided so far (checked against the decided index in tests).
    decided_outcomes: u64,
}

impl<const EAGER_DECIDE: bool> OurNodeWith<EAGER_DECIDE> {
    /// Own proposals the replica reported decided through `take_proposal_outcomes`.
    pub fn decided_outcomes(&self) -> u64 {
        self.decided_outcomes
    }
}

fn node_id(index: usize) -> NodeId {
    index as NodeId + 1
}

impl<const EAGER_DECIDE: bool> Node for OurNodeWith<EAGER_DECIDE> {
    type Message = PaxosMessage<u64, ()>;

    fn build_cluster(n: usize) -> Vec<Self> {
        let pids: Vec<NodeId> = (0..n).map(node_id).collect();
        pids.iter()
            .map(|&pid| {
                let mut config = SequencePaxosConfig::default();
                config.set_configuration_id(CONFIGURATION_ID);
                config.set_pid(pid);
                config.set_peers(pids.iter().copied().filter(|&p| p != pid).collect());
                config.set_piggyback_decide(!EAGER_DECIDE);
                OurNodeWith {
                    replica: SequencePaxos::with(config, MemoryStorage::default()),
                    outcomes: Vec::new(),
                    decided_outcomes: 0,
                }
            })
            .collect()
    }

    fn elect_first(cluster: &mut [Self]) {
        let ballot = Ballot::with(CONFIGURATION_ID, 1, 0, node_id(0));
        for node in cluster {
            node.replica.handle_leader(ballot).expect("handle_leader");
        }
    }

    fn propose(&mut self, value: u64) {
        self.replica.append(value).expect("append");
    }

    fn step(&mut self, message: Self::Message) {
        self.replica.handle(message).expect("handle");
    }

    fn drain(&mut self, out: &mut Vec<Self::Message>) {
        self.replica.take_outgoing_messages(out).expect("take_outgoing_messages");
    }

    fn receiver_index(message: &Self::Message) -> usize {
        (message.to - 1) as usize
    }

    fn decided_idx(&self) -> u64 {
        self.replica.get_decided_idx()
    }

    /// A real user learns what became of its appends: take the outcomes every flush.
    fn after_flush(&mut self) {
        self.replica.take_proposal_outcomes(&mut self.outcomes);
        for (_, outcome) in self.outcomes.drain(..) {
            assert!(matches!(outcome, ProposalOutcome::Decided(_)), "no proposal is dropped here");
            self.decided_outcomes += 1;
        }
    }
}
