//! The `omnipaxos` crate 0.2.4 over its own `MemoryStorage` (0.2.4), default server
//! configuration (`batch_size = 1`: every append is written and sent at once, and the unsent
//! AcceptDecide per follower is extended, like ours).
//!
//! Node index 0 becomes leader through `try_become_leader`, which hands the node's own ballot to
//! Sequence Paxos as `handle_leader` does in our library. No ticks are needed afterwards.

use omnipaxos::{
    messages::Message,
    storage::{Entry, NoSnapshot},
    ClusterConfig, OmniPaxos, OmniPaxosConfig, ServerConfig,
};
use upstream_storage::memory_storage::MemoryStorage;

use crate::harness::Node;

/// An 8-byte entry (the crate implements `Entry` for no foreign type).
#[derive(Clone, Copy, Debug)]
pub struct Value(pub u64);

impl Entry for Value {
    type Snapshot = NoSnapshot;
}

/// One replica of omnipaxos 0.2.4.
pub struct OmniPaxosNode {
    replica: OmniPaxos<Value, MemoryStorage<Value>>,
}

impl Node for OmniPaxosNode {
    type Message = Message<Value>;

    fn build_cluster(n: usize) -> Vec<Self> {
        let nodes: Vec<u64> = (1..=n as u64).collect();
        nodes
            .iter()
            .map(|&pid| {
                let cluster_config =
                    ClusterConfig { configuration_id: 1, nodes: nodes.clone(), flexible_quorum: None };
                let server_config = ServerConfig { pid, ..ServerConfig::default() };
                let config = OmniPaxosConfig { cluster_config, server_config };
                let replica = config.build(MemoryStorage::default()).expect("omnipaxos configuration");
                OmniPaxosNode { replica }
            })
            .collect()
    }

    fn elect_first(cluster: &mut [Self]) {
        cluster[0].replica.try_become_leader();
    }

    fn propose(&mut self, value: u64) {
        self.replica.append(Value(value)).expect("append");
    }

    fn step(&mut self, message: Self::Message) {
        self.replica.handle_incoming(message);
    }

    fn drain(&mut self, out: &mut Vec<Self::Message>) {
        // MemoryStorage writes are durable when they return: nothing to flush first.
        self.replica.take_outgoing_messages(out);
    }

    fn receiver_index(message: &Self::Message) -> usize {
        (message.get_receiver() - 1) as usize
    }

    fn decided_idx(&self) -> u64 {
        self.replica.get_decided_idx() as u64
    }
}
