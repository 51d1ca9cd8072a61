//! The adversarial mode's invariants, checked after every step through the public API only.
//!
//! ```text
//!   after each step, per live replica:
//!     decided_at_most_accepted, decided_index_never_decreases (within one process)
//!     decided entries new since the last check, or rewritten (SimStorage says from where)
//!        └─► agreement (one global map index -> slot), exactly_once (ProposalId, value),
//!            decided_entries_were_proposed, stopsign_is_consistent
//!     take_proposal_outcomes ─► outcome_names_its_entry, one_outcome_per_proposal,
//!                               sealed_proposal_is_not_decided, outcome_not_lost
//! ```
//!
//! The global map remembers the first replica that decided each index; every later decision
//! at that index, by any replica in any process, must be the same slot. Outcomes are taken
//! after every step, so an own proposal that a proposer decided without reporting it in the
//! same step was lost (`outcome_not_lost`), unless the proposer restarted since it appended.

use std::collections::{BTreeMap, HashMap};

use omnipaxos_core::{
    sequence_paxos::{DropReason, ProposalOutcome},
    storage::{ClusterConfig, Storage, StorageError},
    util::{LogIndex, NodeId, ProposalId},
};

use super::{value_of, AdvReplica};
use crate::invariants::Violation;

/// What a decided log position holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Slot {
    /// An appended entry: its proposal id and its unique value.
    Entry {
        /// The id `append` returned.
        id: ProposalId,
        /// The unique value appended.
        value: u64,
    },
    /// A StopSign naming this next configuration.
    StopSign(ClusterConfig),
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Slot::Entry { id, value } => write!(f, "v{value} ({id})"),
            Slot::StopSign(next) => write!(f, "StopSign(c{} {:?})", next.configuration_id, next.nodes),
        }
    }
}

/// One `append` the scheduler made.
#[derive(Clone, Debug)]
struct ProposalRecord {
    value: u64,
    outcome: Option<ProposalOutcome>,
}

/// What the checker remembers of one node's replica.
#[derive(Clone, Debug, Default)]
struct ReplicaRecord {
    /// The process incarnation (from its storage) the fields below describe.
    incarnation: u64,
    /// The decided index last seen in this incarnation.
    decided_idx: LogIndex,
    /// Decided entries below this were checked in this incarnation.
    checked_to: LogIndex,
}

/// The checker's memory across one run.
#[derive(Default)]
pub struct Checker {
    /// The slot decided at each index, and the node that first reported it.
    decided: Vec<Option<(Slot, NodeId)>>,
    /// Where each proposal id and each value was decided (lookups only, never iterated).
    index_of_id: HashMap<ProposalId, LogIndex>,
    index_of_value: HashMap<u64, LogIndex>,
    proposals: HashMap<ProposalId, ProposalRecord>,
    replicas: BTreeMap<NodeId, ReplicaRecord>,
    /// Per proposer: own proposals of its current process, decided somewhere, not yet reported.
    awaiting_outcome: BTreeMap<NodeId, BTreeMap<LogIndex, ProposalId>>,
    /// `Decided(idx)` outcomes whose index no replica was seen deciding yet.
    unverified_outcomes: BTreeMap<LogIndex, Vec<ProposalId>>,
    step: u64,
}

impl Checker {
    /// Sets the step violations are stamped with.
    pub fn set_step(&mut self, step: u64) {
        self.step = step;
    }

    fn violation(&self, property: &'static str, detail: String) -> Violation {
        Violation { tick: self.step, property, detail }
    }

    /// Records an `append` that returned `id`.
    pub fn note_appended(&mut self, id: ProposalId, value: u64) {
        self.proposals.insert(id, ProposalRecord { value, outcome: None });
    }

    /// The outcome reported for `id`, if any.
    pub fn outcome(&self, id: &ProposalId) -> Option<ProposalOutcome> {
        self.proposals.get(id).and_then(|p| p.outcome)
    }

    /// True once some replica decided `id`.
    pub fn is_decided(&self, id: &ProposalId) -> bool {
        self.index_of_id.contains_key(id)
    }

    /// Log positions decided so far (by any replica).
    pub fn decided_len(&self) -> usize {
        self.decided.iter().filter(|slot| slot.is_some()).count()
    }

    /// `Decided` outcomes whose index no replica was seen deciding (they could not be verified).
    pub fn unverified_outcomes(&self) -> usize {
        self.unverified_outcomes.values().map(Vec::len).sum()
    }

    /// A node crashed: its process's outcomes are legitimately lost with it, and until it
    /// restarts no process of it can owe one.
    pub fn note_crashed(&mut self, pid: NodeId) {
        self.awaiting_outcome.remove(&pid);
        self.replicas.remove(&pid);
    }

    /// Checks one live replica after a step. `trace` receives a line per newly decided range.
    pub fn check_replica(
        &mut self,
        pid: NodeId,
        replica: &AdvReplica,
        trace: &mut dyn FnMut(String),
    ) -> Result<(), Violation> {
        let incarnation = replica.storage().get_incarnation().unwrap_or(0);
        let record = self.replicas.entry(pid).or_default();
        if record.incarnation != incarnation {
            *record = ReplicaRecord { incarnation, ..Default::default() };
        }
        let record = record.clone();
        let decided = replica.get_decided_idx();
        let accepted = replica.get_accepted_idx();
        if decided > accepted {
            let detail = format!("node {pid}: decided_idx {decided} > accepted_idx {accepted}");
            return Err(self.violation("decided_at_most_accepted", detail));
        }
        if decided < record.decided_idx {
            let detail = format!(
                "node {pid}: decided index went from {} down to {decided} in one process \
                 (a log synchronisation rewrote decided entries)",
                record.decided_idx
            );
            return Err(self.violation("decided_index_never_decreases", detail));
        }
        let rewritten_from = replica.storage().take_rewritten_from();
        let from = record.checked_to.min(rewritten_from);
        if from < decided {
            self.check_decided_range(pid, replica, from, decided)?;
            if decided > record.checked_to {
                trace(format!("node {pid} decided {}..{decided}", record.checked_to));
            }
        }
        self.check_reconfigured(pid, replica)?;
        let record = self.replicas.get_mut(&pid).expect("inserted above");
        record.decided_idx = decided;
        record.checked_to = decided;
        Ok(())
    }

    /// Reads `[from, to)` of `pid`'s decided prefix from its storage (which, unlike
    /// `read_entries`, gives each entry's proposal id) and checks every slot not compacted.
    fn check_decided_range(
        &mut self,
        pid: NodeId,
        replica: &AdvReplica,
        from: LogIndex,
        to: LogIndex,
    ) -> Result<(), Violation> {
        let storage = replica.storage();
        let unreadable =
            |e: StorageError| format!("node {pid}: its decided prefix {from}..{to} is unreadable: {e}");
        let log_end =
            storage.get_log_end().map_err(|e| self.violation("decided_prefix_is_readable", unreadable(e)))?;
        let start = from.max(replica.get_compacted_idx());
        let end = to.min(log_end);
        if start < end {
            let proposals = storage
                .get_entries(start, end)
                .map_err(|e| self.violation("decided_prefix_is_readable", unreadable(e)))?;
            for (idx, proposal) in (start..).zip(proposals) {
                let slot = Slot::Entry { id: proposal.id, value: value_of(&proposal.entry) };
                self.check_slot(pid, idx, slot)?;
            }
        }
        if to > log_end {
            match storage.get_stopsign() {
                Ok(Some(ss)) => self.check_slot(pid, log_end, Slot::StopSign(ss.next_config))?,
                _ => {
                    let detail = format!(
                        "node {pid}: decided index {to} passes its log end {log_end} without a StopSign"
                    );
                    return Err(self.violation("decided_prefix_is_readable", detail));
                }
            }
        }
        Ok(())
    }

    /// `pid` reports `slot` decided at `idx`: it must agree with every earlier report.
    fn check_slot(&mut self, pid: NodeId, idx: LogIndex, slot: Slot) -> Result<(), Violation> {
        let position = idx as usize;
        if let Some(Some((existing, first))) = self.decided.get(position) {
            if *existing != slot {
                let detail = format!(
                    "index {idx}: node {pid} decided {slot}, but node {first} decided {existing} there"
                );
                return Err(self.violation("agreement", detail));
            }
            return Ok(());
        }
        if let Slot::Entry { id, value } = &slot {
            self.check_new_entry(pid, idx, *id, *value)?;
        }
        if self.decided.len() <= position {
            self.decided.resize(position + 1, None);
        }
        self.decided[position] = Some((slot, pid));
        self.verify_pending_outcomes(idx)
    }

    /// A proposal decided for the first time: it was appended, it is decided only once, it
    /// was not reported sealed, and its proposer owes an outcome.
    fn check_new_entry(
        &mut self,
        pid: NodeId,
        idx: LogIndex,
        id: ProposalId,
        value: u64,
    ) -> Result<(), Violation> {
        match self.proposals.get(&id) {
            Some(p) if p.value == value => {}
            _ => {
                let detail = format!("node {pid} decided v{value} ({id}) at {idx}, which no append returned");
                return Err(self.violation("decided_entries_were_proposed", detail));
            }
        }
        if let Some(&other) = self.index_of_id.get(&id).or_else(|| self.index_of_value.get(&value)) {
            let detail =
                format!("v{value} ({id}) is decided at index {other} and again at {idx} (node {pid})");
            return Err(self.violation("exactly_once", detail));
        }
        self.index_of_id.insert(id, idx);
        self.index_of_value.insert(value, idx);
        match self.proposals[&id].outcome {
            Some(ProposalOutcome::Dropped(DropReason::LogSealed)) => {
                let detail =
                    format!("v{value} ({id}) was reported Dropped(LogSealed), then decided at {idx}");
                Err(self.violation("sealed_proposal_is_not_decided", detail))
            }
            Some(_) => Ok(()),
            None => {
                let current = self.replicas.get(&id.node).is_some_and(|r| r.incarnation == id.incarnation);
                if current {
                    self.awaiting_outcome.entry(id.node).or_default().insert(idx, id);
                }
                Ok(())
            }
        }
    }

    /// Outcomes that named `idx` before any replica was seen deciding it.
    fn verify_pending_outcomes(&mut self, idx: LogIndex) -> Result<(), Violation> {
        let Some(ids) = self.unverified_outcomes.remove(&idx) else { return Ok(()) };
        for id in ids {
            self.check_decided_outcome(id, idx)?;
        }
        Ok(())
    }

    /// A decided StopSign must be the slot decided at the end of the log.
    fn check_reconfigured(&mut self, pid: NodeId, replica: &AdvReplica) -> Result<(), Violation> {
        let Some(ss) = replica.is_reconfigured() else { return Ok(()) };
        let decided = replica.get_decided_idx();
        let Some(idx) = decided.checked_sub(1) else {
            let detail = format!("node {pid}: is_reconfigured() with decided index 0");
            return Err(self.violation("stopsign_is_consistent", detail));
        };
        match self.decided.get(idx as usize) {
            Some(Some((Slot::StopSign(next), _))) if *next == ss.next_config => Ok(()),
            Some(Some((other, first))) => {
                let detail = format!(
                    "node {pid}: is_reconfigured() returns a StopSign to c{} at {idx}, but node {first} decided {other} there",
                    ss.next_config.configuration_id
                );
                Err(self.violation("stopsign_is_consistent", detail))
            }
            _ => self.check_slot(pid, idx, Slot::StopSign(ss.next_config)),
        }
    }

    /// Checks the outcomes `pid` reported in this step, then that none was lost.
    pub fn check_outcomes(
        &mut self,
        pid: NodeId,
        decided_idx: LogIndex,
        outcomes: &[(ProposalId, ProposalOutcome)],
    ) -> Result<(), Violation> {
        for &(id, outcome) in outcomes {
            self.check_outcome(pid, id, outcome)?;
        }
        let awaiting = self.awaiting_outcome.get_mut(&pid).and_then(|a| a.first_entry());
        if let Some(first) = awaiting {
            if *first.key() < decided_idx {
                // Reported once: a run that tolerates this goes on checking the others.
                let (idx, id) = first.remove_entry();
                let value = self.proposals[&id].value;
                let detail = format!(
                    "v{value} ({id}) is decided at {idx} and node {pid} decided up to {decided_idx} in \
                     the process that appended it, but take_proposal_outcomes (called after every \
                     step) never reported it"
                );
                return Err(self.violation("outcome_not_lost", detail));
            }
        }
        Ok(())
    }

    fn check_outcome(
        &mut self,
        pid: NodeId,
        id: ProposalId,
        outcome: ProposalOutcome,
    ) -> Result<(), Violation> {
        let Some(record) = self.proposals.get_mut(&id) else {
            let detail = format!("node {pid} reported {outcome:?} for {id}, which no append returned");
            return Err(self.violation("outcome_names_its_entry", detail));
        };
        if id.node != pid {
            let detail = format!("node {pid} reported {outcome:?} for {id}, a proposal of node {}", id.node);
            return Err(self.violation("outcome_names_its_entry", detail));
        }
        if let Some(earlier) = record.outcome {
            let detail = format!("node {pid} reported {id} first as {earlier:?}, then as {outcome:?}");
            return Err(self.violation("one_outcome_per_proposal", detail));
        }
        record.outcome = Some(outcome);
        if let Some(&idx) = self.index_of_id.get(&id) {
            if let Some(awaiting) = self.awaiting_outcome.get_mut(&pid) {
                awaiting.remove(&idx);
            }
        }
        match outcome {
            ProposalOutcome::Decided(idx) => self.check_decided_outcome(id, idx),
            ProposalOutcome::Dropped(DropReason::LogSealed) => match self.index_of_id.get(&id) {
                Some(idx) => {
                    let detail =
                        format!("node {pid} reported {id} Dropped(LogSealed), but it is decided at {idx}");
                    Err(self.violation("sealed_proposal_is_not_decided", detail))
                }
                None => Ok(()),
            },
            ProposalOutcome::Dropped(DropReason::Indeterminate) => Ok(()),
        }
    }

    fn check_decided_outcome(&mut self, id: ProposalId, idx: LogIndex) -> Result<(), Violation> {
        match self.decided.get(idx as usize) {
            Some(Some((Slot::Entry { id: held, .. }, _))) if *held == id => Ok(()),
            Some(Some((other, first))) => {
                let detail = format!(
                    "node {} reported {id} Decided({idx}), but node {first} decided {other} there",
                    id.node
                );
                Err(self.violation("outcome_names_its_entry", detail))
            }
            _ => {
                self.unverified_outcomes.entry(idx).or_default().push(id);
                Ok(())
            }
        }
    }
}
