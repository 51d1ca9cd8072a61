//! A deterministic in-memory test network for Sequence Paxos replicas.
//!
//! No threads, no clocks: the test decides when messages are delivered, which links are down,
//! which messages are lost, and when replicas crash. Leaders are chosen explicitly with
//! `elect`, which hands a ballot to `SequencePaxos::handle_leader` as Ballot Leader Election
//! would.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet, VecDeque};

use omnipaxos_core::{
    ballot_leader_election::Ballot,
    messages::PaxosMessage,
    sequence_paxos::{ProposalOutcome, SequencePaxos, SequencePaxosConfig},
    storage::Snapshot,
    util::{FlexibleQuorum, LogEntry, LogIndex, NodeId, ProposalId},
};
use omnipaxos_storage::crash_storage::{CrashKeep, CrashableStorage};

pub const CONFIG_ID: u32 = 1;

pub type Replica<S> = SequencePaxos<u64, S, CrashableStorage<u64, S>>;

/// A snapshot that sums entries: enough to check snapshot transfer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sum(pub u64);

impl Snapshot<u64> for Sum {
    fn create(entries: &[u64]) -> Self {
        Sum(entries.iter().sum())
    }
    fn merge(&mut self, delta: Self) {
        self.0 += delta.0;
    }
    fn use_snapshots() -> bool {
        true
    }
}

/// Decides which in-flight messages are lost.
pub type DropRule<S> = Box<dyn FnMut(&PaxosMessage<u64, S>) -> bool>;

pub struct Cluster<S: Snapshot<u64>> {
    pub pids: Vec<NodeId>,
    pub replicas: BTreeMap<NodeId, Replica<S>>,
    /// Storage of crashed replicas, kept for their restart.
    crashed: BTreeMap<NodeId, CrashableStorage<u64, S>>,
    configs: BTreeMap<NodeId, SequencePaxosConfig>,
    network: VecDeque<PaxosMessage<u64, S>>,
    down_links: HashSet<(NodeId, NodeId)>,
    drop_rules: Vec<DropRule<S>>,
    duplicate_rules: Vec<DropRule<S>>,
    pub trace: Vec<String>,
    pub delivered: usize,
    pub outcomes: BTreeMap<ProposalId, ProposalOutcome>,
    round: u32,
}

/// The configuration of replica `pid` in a cluster of `pids`.
pub fn config(pid: NodeId, pids: &[NodeId]) -> SequencePaxosConfig {
    let mut config = SequencePaxosConfig::default();
    config.set_configuration_id(CONFIG_ID);
    config.set_pid(pid);
    config.set_peers(pids.iter().copied().filter(|p| *p != pid).collect());
    config
}

impl<S: Snapshot<u64>> Cluster<S> {
    pub fn new(pids: &[NodeId]) -> Self {
        Self::with_configs(pids, |c| c)
    }

    /// A cluster whose configurations `adjust` changes (batch size, quorums, ...).
    pub fn with_configs(
        pids: &[NodeId],
        mut adjust: impl FnMut(SequencePaxosConfig) -> SequencePaxosConfig,
    ) -> Self {
        let configs: BTreeMap<NodeId, SequencePaxosConfig> =
            pids.iter().map(|&pid| (pid, adjust(config(pid, pids)))).collect();
        let replicas = configs
            .iter()
            .map(|(&pid, c)| (pid, SequencePaxos::with(c.clone(), CrashableStorage::default())))
            .collect();
        Cluster {
            pids: pids.to_vec(),
            replicas,
            crashed: BTreeMap::new(),
            configs,
            network: VecDeque::new(),
            down_links: HashSet::new(),
            drop_rules: Vec::new(),
            duplicate_rules: Vec::new(),
            trace: Vec::new(),
            delivered: 0,
            outcomes: BTreeMap::new(),
            round: 1,
        }
    }

    pub fn with_flexible_quorum(pids: &[NodeId], read: usize, write: usize) -> Self {
        Self::with_configs(pids, |mut c| {
            c.set_flexible_quorum(Some(FlexibleQuorum { read_quorum_size: read, write_quorum_size: write }));
            c
        })
    }

    pub fn replica(&mut self, pid: NodeId) -> &mut Replica<S> {
        self.replicas.get_mut(&pid).expect("replica is up")
    }

    /// Hands `pid` a ballot above every promise, as leader election would, and runs to quiet.
    pub fn elect(&mut self, pid: NodeId) {
        let max_round =
            self.replicas.values().filter(|r| !r.is_learner()).map(|r| r.get_promise().n).max().unwrap_or(0);
        self.round = self.round.max(max_round) + 1;
        let ballot = Ballot::with(CONFIG_ID, self.round, 0, pid);
        self.trace.push(format!("elect {pid} with {ballot}"));
        for replica in self.replicas.values_mut() {
            replica.handle_leader(ballot).expect("handle_leader");
        }
        self.stabilize();
    }

    /// Appends `value` at `pid`.
    pub fn append(&mut self, pid: NodeId, value: u64) -> ProposalId {
        self.trace.push(format!("append {value} at {pid}"));
        self.replica(pid).append(value).expect("append accepted")
    }

    /// Collects outgoing messages from every live replica.
    pub fn collect(&mut self) {
        let mut buffer = Vec::new();
        for replica in self.replicas.values_mut() {
            replica.take_outgoing_messages(&mut buffer).expect("take_outgoing_messages");
            let mut outcomes = Vec::new();
            replica.take_proposal_outcomes(&mut outcomes);
            for (id, outcome) in outcomes {
                let previous = self.outcomes.insert(id, outcome);
                assert!(previous.is_none(), "proposal {id} settled twice");
            }
        }
        self.network.extend(buffer);
    }

    /// Delivers one message; returns false if none is in flight.
    pub fn deliver_one(&mut self) -> bool {
        let Some(message) = self.network.pop_front() else { return false };
        let lost = self.down_links.contains(&(message.from, message.to))
            || !self.replicas.contains_key(&message.to)
            || self.drop_rules.iter_mut().any(|rule| rule(&message));
        self.trace.push(format!("{}{message}", if lost { "LOST " } else { "" }));
        if !lost && self.duplicate_rules.iter_mut().any(|rule| rule(&message)) {
            self.trace.push(format!("DUPLICATED {message}"));
            self.network.push_back(message.clone());
        }
        if !lost {
            self.delivered += 1;
            self.replica(message.to).handle(message).expect("handle");
        }
        true
    }

    /// Delivers messages until none are in flight or queued (bounded).
    pub fn stabilize(&mut self) {
        for _ in 0..100_000 {
            self.collect();
            if !self.deliver_one() {
                self.collect();
                if self.network.is_empty() {
                    self.check_safety();
                    return;
                }
            }
        }
        panic!("the cluster did not quiesce:\n{}", self.trace_tail(60));
    }

    /// Ticks every replica `ticks` times, delivering messages in between.
    pub fn tick(&mut self, ticks: usize) {
        for _ in 0..ticks {
            for replica in self.replicas.values_mut() {
                replica.tick().expect("tick");
            }
            self.stabilize();
        }
    }

    pub fn drop_messages(&mut self, rule: impl FnMut(&PaxosMessage<u64, S>) -> bool + 'static) {
        self.drop_rules.push(Box::new(rule));
    }

    pub fn clear_drop_rules(&mut self) {
        self.drop_rules.clear();
    }

    /// Messages matching `rule` are delivered twice (the copy goes to the back of the queue).
    pub fn duplicate_messages(&mut self, rule: impl FnMut(&PaxosMessage<u64, S>) -> bool + 'static) {
        self.duplicate_rules.push(Box::new(rule));
    }

    pub fn disconnect(&mut self, a: NodeId, b: NodeId) {
        self.down_links.insert((a, b));
        self.down_links.insert((b, a));
    }

    pub fn isolate(&mut self, pid: NodeId) {
        for other in self.pids.clone() {
            if other != pid {
                self.disconnect(pid, other);
            }
        }
    }

    pub fn heal(&mut self) {
        self.down_links.clear();
    }

    /// Crashes `pid`: its volatile state and the unflushed writes chosen by `keep` are lost.
    pub fn crash(&mut self, pid: NodeId, keep: CrashKeep) {
        let replica = self.replicas.remove(&pid).expect("replica is up");
        self.trace.push(format!("crash {pid} keeping {keep:?}"));
        self.crashed.insert(pid, replica.storage().crash(keep));
    }

    /// Restarts `pid` from its storage and runs `fail_recovery`.
    pub fn restart(&mut self, pid: NodeId) {
        let storage = self.crashed.remove(&pid).expect("replica is crashed");
        let mut replica = SequencePaxos::with(self.configs[&pid].clone(), storage);
        replica.fail_recovery();
        self.trace.push(format!("restart {pid}"));
        self.replicas.insert(pid, replica);
    }

    /// Replaces `pid` by a replica over `storage` (e.g. an empty one: its disk was wiped),
    /// started as a learner if `learner`.
    pub fn replace_storage(&mut self, pid: NodeId, storage: CrashableStorage<u64, S>, learner: bool) {
        self.replace_storage_with(pid, storage, |mut c| {
            c.set_learner(learner);
            c
        });
    }

    /// Replaces `pid` by a replica over `storage` with its configuration changed by `adjust`.
    pub fn replace_storage_with(
        &mut self,
        pid: NodeId,
        storage: CrashableStorage<u64, S>,
        adjust: impl FnOnce(SequencePaxosConfig) -> SequencePaxosConfig,
    ) {
        self.replicas.remove(&pid);
        let config = adjust(self.configs[&pid].clone());
        let learner = config.learner();
        self.trace.push(format!("replace the storage of {pid} (learner: {learner})"));
        self.replicas.insert(pid, SequencePaxos::with(config, storage));
    }

    /// The decided entries of `pid`, from the compacted index on.
    pub fn decided(&self, pid: NodeId) -> Vec<u64> {
        let replica = &self.replicas[&pid];
        let from = replica.get_compacted_idx();
        match replica.read_decided_suffix(from) {
            None => Vec::new(),
            Some(entries) => entries
                .into_iter()
                .filter_map(|e| match e {
                    LogEntry::Decided(v) => Some(v),
                    _ => None,
                })
                .collect(),
        }
    }

    pub fn decided_idx(&self, pid: NodeId) -> LogIndex {
        self.replicas[&pid].get_decided_idx()
    }

    /// Safety: decided entries agree across live replicas at every index both decided, and every
    /// replica's invariants hold.
    pub fn check_safety(&self) {
        let mut decided_at: BTreeMap<LogIndex, (NodeId, u64)> = BTreeMap::new();
        for (&pid, replica) in &self.replicas {
            replica.check_invariants();
            let from = replica.get_compacted_idx();
            let Some(entries) = replica.read_decided_suffix(from) else { continue };
            for (offset, entry) in entries.into_iter().enumerate() {
                let idx = from + offset as LogIndex;
                if let LogEntry::Decided(v) = entry {
                    if let Some((other, w)) = decided_at.insert(idx, (pid, v)) {
                        assert_eq!(v, w, "replicas {pid} and {other} decided different entries at {idx}");
                    }
                }
            }
        }
    }

    pub fn in_flight(&self) -> usize {
        self.network.len()
    }

    pub fn trace_tail(&self, lines: usize) -> String {
        let start = self.trace.len().saturating_sub(lines);
        self.trace[start..].join("\n")
    }
}

/// True for messages of the named kind (`"AcceptDecide"`, `"Prepare"`, ...).
pub fn is_kind<S>(message: &PaxosMessage<u64, S>, kind: &str) -> bool {
    let name = message.msg.kind();
    name == kind
}

/// Random faults for the seeded fuzz tests.
impl<S: Snapshot<u64>> Cluster<S> {
    /// Delivers the in-flight message at `position` (out of FIFO order).
    pub fn deliver_at(&mut self, position: usize) {
        if let Some(message) = self.network.remove(position) {
            self.network.push_front(message);
            self.deliver_one();
        }
    }

    /// Loses the in-flight message at `position`.
    pub fn lose_at(&mut self, position: usize) {
        if let Some(message) = self.network.remove(position) {
            self.trace.push(format!("LOST {message}"));
        }
    }

    /// Copies of the in-flight messages that `matches` (the originals stay in flight).
    pub fn copy_in_flight(
        &self,
        matches: impl Fn(&PaxosMessage<u64, S>) -> bool,
    ) -> Vec<PaxosMessage<u64, S>> {
        self.network.iter().filter(|m| matches(m)).cloned().collect()
    }

    /// Puts `message` in flight (at the front: it is delivered next), e.g. a copy kept from
    /// earlier, replayed.
    pub fn replay(&mut self, message: PaxosMessage<u64, S>) {
        self.trace.push(format!("REPLAYED {message}"));
        self.network.push_front(message);
    }

    /// Delivers a copy of the in-flight message at `position`, keeping the original in flight.
    pub fn duplicate_at(&mut self, position: usize) {
        if let Some(message) = self.network.get(position).cloned() {
            self.trace.push(format!("DUPLICATED {message}"));
            self.network.push_front(message);
            self.deliver_one();
        }
    }

    /// Queues a copy of the in-flight message at `position` at the back: a delayed duplicate.
    pub fn delay_copy_at(&mut self, position: usize) {
        if let Some(message) = self.network.get(position).cloned() {
            self.trace.push(format!("DELAYED COPY {message}"));
            self.network.push_back(message);
        }
    }

    /// Ticks every live replica once without delivering anything.
    pub fn tick_once(&mut self) {
        for replica in self.replicas.values_mut() {
            replica.tick().expect("tick");
        }
    }

    /// Hands `pid` a ballot above every promise, without delivering anything.
    pub fn elect_without_delivery(&mut self, pid: NodeId) {
        let max_round = self.replicas.values().map(|r| r.get_promise().n).max().unwrap_or(0);
        self.round = self.round.max(max_round) + 1;
        let ballot = Ballot::with(CONFIG_ID, self.round, 0, pid);
        self.trace.push(format!("elect {pid} with {ballot}"));
        self.replica(pid).handle_leader(ballot).expect("handle_leader");
    }

    pub fn is_up(&self, pid: NodeId) -> bool {
        self.replicas.contains_key(&pid)
    }

    pub fn leader_ballot_round(&self) -> u32 {
        self.round
    }
}
