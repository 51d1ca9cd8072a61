//! How a simulator uses the storage's crash model: a 3-replica Sequence Paxos cluster, each
//! replica over `PersistentStorage` on its own `SimFs` disk. Replicas crash mid-traffic (the disk
//! is replaced by `SimFs::crash(variant, seed)`: unsynced bytes lost, torn or flipped), restart
//! from what the disk kept with `fail_recovery()`, and the cluster goes on. Every value acknowledged
//! (decided at its proposer) stays decided at the same index on every replica.

use std::collections::{BTreeMap, VecDeque};

use omnipaxos_core::{
    ballot_leader_election::Ballot,
    messages::PaxosMessage,
    sequence_paxos::{ProposalOutcome, SequencePaxos, SequencePaxosConfig},
    util::{LogEntry, NodeId},
};
use omnipaxos_storage::persistent_storage::{
    sim_fs::{CrashVariant, SimFs},
    OpenMode, PersistentStorage, PersistentStorageConfig,
};

type Replica = SequencePaxos<u64, (), PersistentStorage<u64, (), SimFs>>;

const NODES: [NodeId; 3] = [1, 2, 3];

fn storage_config(pid: NodeId, mode: OpenMode) -> PersistentStorageConfig {
    PersistentStorageConfig::new(format!("/node{pid}"), 1, pid).mode(mode).segment_size_bytes(2048)
}

fn replica(pid: NodeId, fs: SimFs, mode: OpenMode) -> Replica {
    let storage =
        PersistentStorage::open_with_fs(&storage_config(pid, mode), fs).expect("open the replica's disk");
    let mut config = SequencePaxosConfig::default();
    config.set_configuration_id(1);
    config.set_pid(pid);
    config.set_peers(NODES.iter().copied().filter(|peer| *peer != pid).collect());
    SequencePaxos::with(config, storage)
}

struct Cluster {
    replicas: BTreeMap<NodeId, Replica>,
    network: VecDeque<PaxosMessage<u64, ()>>,
    /// value -> index where it was decided, as its proposer learned.
    acked: BTreeMap<u64, u64>,
    proposed: BTreeMap<omnipaxos_core::util::ProposalId, u64>,
    round: u32,
}

impl Cluster {
    fn collect(&mut self) {
        let mut buffer = Vec::new();
        let mut outcomes = Vec::new();
        for replica in self.replicas.values_mut() {
            replica.take_outgoing_messages(&mut buffer).expect("flush and take");
            replica.take_proposal_outcomes(&mut outcomes);
        }
        self.network.extend(buffer);
        for (id, outcome) in outcomes {
            if let (Some(value), ProposalOutcome::Decided(idx)) = (self.proposed.get(&id), outcome) {
                assert!(self.acked.insert(*value, idx).is_none(), "value {value} decided twice");
            }
        }
    }

    /// Delivers at most `limit` messages (FIFO); messages to a crashed replica are lost.
    fn deliver(&mut self, limit: usize) {
        for _ in 0..limit {
            self.collect();
            let Some(message) = self.network.pop_front() else { return };
            if let Some(replica) = self.replicas.get_mut(&message.to) {
                replica.handle(message).expect("handle");
            }
        }
    }

    fn elect(&mut self, leader: NodeId) {
        self.round += 1;
        let ballot = Ballot::with(1, self.round, 0, leader);
        for replica in self.replicas.values_mut() {
            replica.handle_leader(ballot).expect("handle_leader");
        }
        self.deliver(usize::MAX);
    }

    fn propose(&mut self, at: NodeId, values: std::ops::Range<u64>) {
        for value in values {
            let id = self.replicas.get_mut(&at).expect("up").append(value).expect("append");
            self.proposed.insert(id, value);
        }
    }

    /// Crashes `pid`: its process state is gone, its disk keeps what `variant` keeps.
    fn crash_and_restart(&mut self, pid: NodeId, variant: CrashVariant, seed: u64) {
        let crashed = self.replicas.remove(&pid).expect("up");
        let disk = crashed.storage().fs().crash(variant, seed);
        drop(crashed);
        let mut restarted = replica(pid, disk, OpenMode::Restart);
        restarted.fail_recovery();
        self.replicas.insert(pid, restarted);
    }

    fn check_acked_values_are_decided_everywhere(&self) {
        for (pid, replica) in &self.replicas {
            let entries = replica.read_decided_suffix(0).unwrap_or_default();
            for (value, idx) in &self.acked {
                match entries.get(*idx as usize) {
                    Some(LogEntry::Decided(decided)) => assert_eq!(decided, value, "node {pid} index {idx}"),
                    other => panic!("node {pid}: acknowledged value {value} at {idx} is {other:?}"),
                }
            }
        }
    }
}

#[test]
fn replicas_crashed_with_every_variant_keep_every_acknowledged_value() {
    let mut cluster = Cluster {
        replicas: NODES.iter().map(|&pid| (pid, replica(pid, SimFs::new(), OpenMode::Bootstrap))).collect(),
        network: VecDeque::new(),
        acked: BTreeMap::new(),
        proposed: BTreeMap::new(),
        round: 0,
    };
    cluster.elect(1);
    let mut next_value = 1;
    for (round, variant) in CrashVariant::ALL.into_iter().cycle().take(12).enumerate() {
        let leader = NODES[round % 3];
        cluster.elect(leader);
        cluster.propose(leader, next_value..next_value + 10);
        next_value += 10;
        // Crash a follower, then the leader, each in the middle of the traffic.
        cluster.deliver(7);
        cluster.crash_and_restart(NODES[(round + 1) % 3], variant, round as u64);
        cluster.deliver(5);
        cluster.crash_and_restart(leader, variant, round as u64 + 100);
        cluster.elect(NODES[(round + 2) % 3]);
        cluster.deliver(usize::MAX);
        cluster.check_acked_values_are_decided_everywhere();
    }
    assert!(
        cluster.acked.len() >= 60,
        "the cluster kept deciding: {} values acknowledged",
        cluster.acked.len()
    );
    let segments: usize = cluster.replicas.values().map(|replica| replica.storage().segment_count()).sum();
    assert!(segments >= 3, "the logs rolled segments");
}
