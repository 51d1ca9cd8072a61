//! Safety invariants, checked after every event through the replicas' public API.
//!
//! ```text
//!   event at replica (node, configuration) ──► Checker::check_replica
//!        ├─ decided_at_most_accepted
//!        ├─ promises_never_go_backwards            (against the promise last made durable)
//!        ├─ at_most_one_leader_per_ballot          (ballot -> (node, incarnation))
//!        └─ newly decided or rewritten entries ──► decided_prefix_never_shrinks_or_changes
//!                                              └─► at_most_one_value_decided_per_index
//!   state machine applied entry i ──► applied_state_machines_agree (digest after i entries)
//! ```
//!
//! Each property has its own function named after it. The checker keeps its own history per
//! replica (what it saw decided, the last promise made durable) and one global record of what
//! was decided at each index, so each check costs time proportional to what changed: a replica's
//! new decided entries, plus whatever its storage reports rewritten since the last check.

use std::collections::BTreeMap;

use omnipaxos_core::{
    ballot_leader_election::Ballot,
    storage::Storage,
    util::{ConfigurationId, LogEntry, LogIndex, NodeId},
    OmniPaxos,
};

use crate::{
    kv::{Command, KvSnapshot, RequestId},
    storage::SimStorage,
};

/// A replica as the simulator runs it.
pub type Replica = OmniPaxos<Command, KvSnapshot, SimStorage>;

/// A broken property.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The tick at which it was seen.
    pub tick: u64,
    /// The property, named as the function that checks it.
    pub property: &'static str,
    /// What exactly was seen.
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "t={} {}: {}", self.tick, self.property, self.detail)
    }
}

/// What a decided log position holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// A client command.
    Command(RequestId),
    /// The StopSign naming this next configuration.
    StopSign(ConfigurationId),
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Slot::Command(request) => write!(f, "{request}"),
            Slot::StopSign(next) => write!(f, "StopSign(->{next})"),
        }
    }
}

/// What the checker remembers of one replica (one node in one configuration).
#[derive(Clone, Debug, Default)]
struct ReplicaRecord {
    /// The process incarnation the fields below describe.
    incarnation: u64,
    /// Entries below this were checked against the global record in this incarnation.
    checked_to: LogIndex,
    /// The decided index last seen in this incarnation.
    decided_idx: LogIndex,
    /// The promise last seen in this incarnation.
    promise: Ballot,
    /// The highest promise seen right after a successful flush: it must survive any crash.
    durable_promise: Ballot,
}

/// The checker's memory across the run.
#[derive(Default)]
pub struct Checker {
    /// What each configuration's log decided at each index, as first seen.
    decided: BTreeMap<(ConfigurationId, LogIndex), (Slot, NodeId)>,
    replicas: BTreeMap<(NodeId, ConfigurationId), ReplicaRecord>,
    /// Each ballot that led in its accept phase, and the (node, incarnation) that led with it.
    leaders: BTreeMap<Ballot, (NodeId, u64)>,
    /// Digest of the state machine after the first `i` entries of a configuration's log.
    applied: BTreeMap<(ConfigurationId, LogIndex), (u64, NodeId)>,
    now: u64,
}

impl Checker {
    /// Sets the tick violations are stamped with.
    pub fn set_now(&mut self, now: u64) {
        self.now = now;
    }

    fn violation(&self, property: &'static str, detail: String) -> Violation {
        Violation { tick: self.now, property, detail }
    }

    /// Checks every per-replica property after an event at `pid`'s replica of `config_id`.
    pub fn check_replica(
        &mut self,
        pid: NodeId,
        config_id: ConfigurationId,
        replica: &Replica,
    ) -> Result<(), Violation> {
        let storage = replica.sequence_paxos().storage();
        let incarnation = storage.get_incarnation().expect("the simulated disk reads");
        let record = self.replicas.entry((pid, config_id)).or_default();
        let restarted = record.incarnation != incarnation;
        if restarted {
            // A new process: what it knows starts again from its disk.
            *record =
                ReplicaRecord { incarnation, durable_promise: record.durable_promise, ..Default::default() };
        }
        self.decided_at_most_accepted(pid, replica)?;
        self.promises_never_go_backwards(pid, config_id, replica)?;
        self.at_most_one_leader_per_ballot(pid, incarnation, replica)?;
        self.check_decided_entries(pid, config_id, replica)
    }

    /// Records that `pid`'s replica just flushed: its current promise is durable.
    pub fn note_flushed(&mut self, pid: NodeId, config_id: ConfigurationId, replica: &Replica) {
        let record = self.replicas.entry((pid, config_id)).or_default();
        record.durable_promise = record.durable_promise.max(replica.get_promise());
    }

    /// `pid`'s disk of `config_id` was destroyed on purpose (an amnesia fault): what the checker
    /// remembers of that replica's processes goes with it. The promise it made durable is gone,
    /// which is no fault of the storage or the core (a learner restarts with a promise above
    /// every ballot; a replica wrongly restarted as a voter with none), and a fresh disk counts
    /// incarnations from 1 again. The global record of decided entries stays: every later
    /// decision of that replica must still agree with it.
    pub fn forget_replica(&mut self, pid: NodeId, config_id: ConfigurationId) {
        self.replicas.remove(&(pid, config_id));
    }

    /// decided ≤ accepted on every replica, at every moment.
    fn decided_at_most_accepted(&self, pid: NodeId, replica: &Replica) -> Result<(), Violation> {
        let decided = replica.get_decided_idx();
        let accepted = replica.sequence_paxos().get_accepted_idx();
        if decided > accepted {
            return Err(self.violation(
                "decided_at_most_accepted",
                format!("node {pid}: decided_idx {decided} > accepted_idx {accepted}"),
            ));
        }
        Ok(())
    }

    /// Within a process the promise never decreases; after a crash it is at least the highest
    /// promise that was durable before the crash.
    fn promises_never_go_backwards(
        &mut self,
        pid: NodeId,
        config_id: ConfigurationId,
        replica: &Replica,
    ) -> Result<(), Violation> {
        let promise = replica.get_promise();
        let record = self.replicas.get_mut(&(pid, config_id)).expect("created by check_replica");
        let (seen, durable) = (record.promise, record.durable_promise);
        record.promise = promise;
        if promise < seen {
            return Err(self.violation(
                "promises_never_go_backwards",
                format!("node {pid}: promise fell from {seen} to {promise} within one process"),
            ));
        }
        if promise < durable {
            return Err(self.violation(
                "promises_never_go_backwards",
                format!("node {pid}: promise {promise} after restart is below the durable {durable}"),
            ));
        }
        Ok(())
    }

    /// A ballot leads (in its accept phase) in at most one process of one node: its owner's.
    fn at_most_one_leader_per_ballot(
        &mut self,
        pid: NodeId,
        incarnation: u64,
        replica: &Replica,
    ) -> Result<(), Violation> {
        if !replica.sequence_paxos().is_accepting_leader() {
            return Ok(());
        }
        let ballot = replica.get_promise();
        if ballot.pid != pid {
            return Err(self.violation(
                "at_most_one_leader_per_ballot",
                format!("node {pid} leads with ballot {ballot} of node {}", ballot.pid),
            ));
        }
        let first = *self.leaders.entry(ballot).or_insert((pid, incarnation));
        if first != (pid, incarnation) {
            return Err(self.violation(
                "at_most_one_leader_per_ballot",
                format!(
                    "ballot {ballot} led by node {} incarnation {} and by node {pid} incarnation {incarnation}",
                    first.0, first.1
                ),
            ));
        }
        Ok(())
    }

    /// Reads the entries decided since the last check (and any the storage rewrote) and checks
    /// both decided-log properties on each.
    fn check_decided_entries(
        &mut self,
        pid: NodeId,
        config_id: ConfigurationId,
        replica: &Replica,
    ) -> Result<(), Violation> {
        let decided = replica.get_decided_idx();
        let rewritten_from = replica.sequence_paxos().storage().take_rewritten_from();
        let record = self.replicas.get_mut(&(pid, config_id)).expect("created by check_replica");
        let (checked_to, seen_decided) = (record.checked_to, record.decided_idx);
        record.decided_idx = decided;
        record.checked_to = decided;
        if decided < seen_decided {
            return Err(self.violation(
                "decided_prefix_never_shrinks_or_changes",
                format!("node {pid}: decided_idx fell from {seen_decided} to {decided} within one process"),
            ));
        }
        let from = checked_to.min(rewritten_from).max(replica.get_compacted_idx());
        if from >= decided {
            return Ok(());
        }
        let entries = replica.read_entries(from..decided).unwrap_or_default();
        for (offset, entry) in entries.into_iter().enumerate() {
            let idx = from + offset as LogIndex;
            let slot = match entry {
                LogEntry::Decided(command) => Slot::Command(command.request),
                LogEntry::StopSign(ss, true) => Slot::StopSign(ss.next_config.configuration_id),
                other => {
                    return Err(self.violation(
                        "decided_prefix_never_shrinks_or_changes",
                        format!("node {pid}: index {idx} below decided_idx {decided} reads as {other:?}"),
                    ))
                }
            };
            if idx < checked_to {
                self.decided_prefix_never_shrinks_or_changes(pid, config_id, idx, slot)?;
            } else {
                self.at_most_one_value_decided_per_index(pid, config_id, idx, slot)?;
            }
        }
        Ok(())
    }

    /// An entry this replica decided earlier still holds what was decided there.
    fn decided_prefix_never_shrinks_or_changes(
        &self,
        pid: NodeId,
        config_id: ConfigurationId,
        idx: LogIndex,
        slot: Slot,
    ) -> Result<(), Violation> {
        match self.decided.get(&(config_id, idx)) {
            Some(&(first, _)) if first != slot => Err(self.violation(
                "decided_prefix_never_shrinks_or_changes",
                format!("node {pid} config {config_id}: decided index {idx} changed from {first} to {slot}"),
            )),
            _ => Ok(()),
        }
    }

    /// Every replica that decides index `idx` decides the same entry there.
    fn at_most_one_value_decided_per_index(
        &mut self,
        pid: NodeId,
        config_id: ConfigurationId,
        idx: LogIndex,
        slot: Slot,
    ) -> Result<(), Violation> {
        let (first, by) = *self.decided.entry((config_id, idx)).or_insert((slot, pid));
        if first != slot {
            return Err(self.violation(
                "at_most_one_value_decided_per_index",
                format!(
                    "config {config_id} index {idx}: node {by} decided {first}, node {pid} decided {slot}"
                ),
            ));
        }
        Ok(())
    }

    /// Every state machine that applied the first `count` entries of a log has the same state.
    pub fn applied_state_machines_agree(
        &mut self,
        pid: NodeId,
        config_id: ConfigurationId,
        count: LogIndex,
        digest: u64,
    ) -> Result<(), Violation> {
        let (first, by) = *self.applied.entry((config_id, count)).or_insert((digest, pid));
        if first != digest {
            return Err(self.violation(
                "applied_state_machines_agree",
                format!(
                    "config {config_id} after {count} entries: node {by} has state {first:#x}, node {pid} {digest:#x}"
                ),
            ));
        }
        Ok(())
    }

    /// The entry decided at `idx` of a configuration's log, if any replica decided it.
    pub fn decided_at(&self, config_id: ConfigurationId, idx: LogIndex) -> Option<Slot> {
        self.decided.get(&(config_id, idx)).map(|&(slot, _)| slot)
    }

    /// Number of decided positions recorded, over all configurations.
    pub fn decided_count(&self) -> usize {
        self.decided.len()
    }
}
