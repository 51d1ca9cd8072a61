//! What became of each `append`: the proposer's ledger, and the leader's duplicate filter.
//!
//! Every proposal carries a [`ProposalId`] into the log. The proposer keeps a ledger of its own
//! proposals that are not settled yet:
//! - `Waiting`: not in the local log; the proposal is (re)forwarded to the leader until it shows
//!   up in the log. A forward lost in transit is therefore retried, never silently lost.
//! - `InLog(idx)`: in the local log at `idx`. Decided once the decided index passes `idx`; if a
//!   synchronisation truncates the log below `idx` and the new log does not hold the proposal,
//!   it goes back to `Waiting`.
//!
//! The leader drops forwarded proposals it already holds, so retries never decide an entry twice.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use crate::util::{LogIndex, NodeId, Proposal, ProposalId};

/// What became of a proposal, reported by [`super::SequencePaxos::take_proposal_outcomes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProposalOutcome {
    /// Decided at this log index.
    Decided(LogIndex),
    /// Will never be decided in this configuration's log.
    Dropped(DropReason),
}

/// Why a proposal was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// A StopSign was decided first: the log is sealed.
    LogSealed,
    /// The proposal reached this node's log only inside a snapshot, so this node cannot tell
    /// whether it was decided: its fate is unknown (treat like a timed-out request).
    Indeterminate,
}

/// Where one of this node's own proposals stands.
#[derive(Clone, Debug)]
enum OwnProposal<T> {
    /// Not in the local log; forwarded to the leader (again) until it appears there.
    Waiting { proposal: Proposal<T>, forwarded_at_tick: Option<u64> },
    /// In the local log at this index.
    InLog(LogIndex),
}

/// The proposer's ledger of its unsettled proposals.
#[derive(Debug)]
pub(crate) struct ProposalLedger<T> {
    node: NodeId,
    incarnation: u64,
    next_seq: u64,
    /// Unsettled proposals by sequence number. Invariant: every key < `next_seq`.
    unsettled: BTreeMap<u64, OwnProposal<T>>,
    /// Own proposals in the local log, by index. Invariant: mirrors the `InLog` entries.
    by_index: BTreeMap<LogIndex, u64>,
    /// Settled outcomes not yet taken by the user; bounded by `outcomes_limit`.
    outcomes: VecDeque<(ProposalId, ProposalOutcome)>,
    outcomes_limit: usize,
}

impl<T: Clone> ProposalLedger<T> {
    pub(crate) fn new(node: NodeId, incarnation: u64, outcomes_limit: usize) -> Self {
        ProposalLedger {
            node,
            incarnation,
            next_seq: 1,
            unsettled: BTreeMap::new(),
            by_index: BTreeMap::new(),
            outcomes: VecDeque::new(),
            outcomes_limit,
        }
    }

    /// A fresh id for a new proposal of this node.
    pub(crate) fn next_id(&mut self) -> ProposalId {
        let id = ProposalId { node: self.node, seq: self.next_seq, incarnation: self.incarnation };
        self.next_seq += 1;
        id
    }

    /// True if `id` is one of this node's proposals in this incarnation.
    pub(crate) fn is_own(&self, id: &ProposalId) -> bool {
        id.node == self.node && id.incarnation == self.incarnation
    }

    /// Number of unsettled proposals that are not in the log (they hold memory).
    pub(crate) fn waiting_count(&self) -> usize {
        self.unsettled.len() - self.by_index.len()
    }

    /// Records a proposal written to the local log at `idx`.
    pub(crate) fn record_in_log(&mut self, id: ProposalId, idx: LogIndex) {
        debug_assert!(self.is_own(&id));
        if let Some(OwnProposal::InLog(old_idx)) = self.unsettled.insert(id.seq, OwnProposal::InLog(idx)) {
            self.by_index.remove(&old_idx);
        }
        self.by_index.insert(idx, id.seq);
    }

    /// Records a proposal that must reach the leader.
    pub(crate) fn record_waiting(&mut self, proposal: Proposal<T>) {
        debug_assert!(self.is_own(&proposal.id));
        let seq = proposal.id.seq;
        self.unsettled.insert(seq, OwnProposal::Waiting { proposal, forwarded_at_tick: None });
    }

    /// Scans entries written at `first_idx..` for own proposals.
    pub(crate) fn observe_written(&mut self, first_idx: LogIndex, entries: &[Proposal<T>]) {
        for (offset, p) in entries.iter().enumerate() {
            if self.is_own(&p.id) && self.unsettled.contains_key(&p.id.seq) {
                self.record_in_log(p.id, first_idx + offset as LogIndex);
            }
        }
    }

    /// The log was truncated at `idx`: own proposals at or after it return to `Waiting` with
    /// their entries (read from the log before the truncation by the caller).
    pub(crate) fn observe_truncated(&mut self, removed: Vec<Proposal<T>>) {
        for p in removed {
            if self.is_own(&p.id) {
                if let Some(OwnProposal::InLog(idx)) = self.unsettled.get(&p.id.seq) {
                    self.by_index.remove(idx);
                    self.record_waiting(p);
                }
            }
        }
    }

    /// True if any own proposal sits in the log at or after `idx`.
    pub(crate) fn has_in_log_from(&self, idx: LogIndex) -> bool {
        self.by_index.range(idx..).next().is_some()
    }

    /// The log prefix `[.., compacted_idx)` was replaced by a snapshot: own proposals in it
    /// were decided (snapshots only cover decided entries).
    pub(crate) fn observe_decided(&mut self, decided_idx: LogIndex) {
        while let Some((&idx, &seq)) = self.by_index.first_key_value() {
            if idx >= decided_idx {
                break;
            }
            self.by_index.remove(&idx);
            self.unsettled.remove(&seq);
            self.push_outcome(self.id_of(seq), ProposalOutcome::Decided(idx));
        }
    }

    /// Waiting proposals whose fate this node can no longer learn (its log was replaced by a
    /// snapshot that may contain them).
    pub(crate) fn drop_waiting(&mut self, reason: DropReason) {
        let waiting: Vec<u64> = self
            .unsettled
            .iter()
            .filter(|(_, p)| matches!(p, OwnProposal::Waiting { .. }))
            .map(|(seq, _)| *seq)
            .collect();
        for seq in waiting {
            self.unsettled.remove(&seq);
            self.push_outcome(self.id_of(seq), ProposalOutcome::Dropped(reason));
        }
    }

    /// Drops every unsettled proposal (the log is sealed by a decided StopSign).
    pub(crate) fn drop_all(&mut self, reason: DropReason) {
        let all: Vec<u64> = self.unsettled.keys().copied().collect();
        self.by_index.clear();
        for seq in all {
            self.unsettled.remove(&seq);
            self.push_outcome(self.id_of(seq), ProposalOutcome::Dropped(reason));
        }
    }

    /// Waiting proposals due for a (re)forward at tick `now`: never forwarded, or forwarded at
    /// least `retry_ticks` ago. Marks them as forwarded now.
    pub(crate) fn due_for_forward(&mut self, now: u64, retry_ticks: u64) -> Vec<Proposal<T>> {
        let mut due = Vec::new();
        for p in self.unsettled.values_mut() {
            if let OwnProposal::Waiting { proposal, forwarded_at_tick } = p {
                let is_due = forwarded_at_tick.is_none_or(|at| now >= at.saturating_add(retry_ticks));
                if is_due {
                    *forwarded_at_tick = Some(now);
                    due.push(proposal.clone());
                }
            }
        }
        due
    }

    /// Takes back waiting proposals that were never forwarded (the leader appends them itself).
    pub(crate) fn take_waiting(&mut self) -> Vec<Proposal<T>> {
        let seqs: Vec<u64> = self
            .unsettled
            .iter()
            .filter(|(_, p)| matches!(p, OwnProposal::Waiting { .. }))
            .map(|(seq, _)| *seq)
            .collect();
        let mut taken = Vec::with_capacity(seqs.len());
        for seq in seqs {
            if let Some(OwnProposal::Waiting { proposal, .. }) = self.unsettled.remove(&seq) {
                taken.push(proposal);
            }
        }
        taken
    }

    /// Every sequence number below this is settled: the leader may forget them.
    pub(crate) fn settled_below(&self) -> u64 {
        self.unsettled.keys().next().copied().unwrap_or(self.next_seq)
    }

    /// Moves settled outcomes into `buf`.
    pub(crate) fn take_outcomes(&mut self, buf: &mut Vec<(ProposalId, ProposalOutcome)>) {
        buf.extend(self.outcomes.drain(..));
    }

    fn id_of(&self, seq: u64) -> ProposalId {
        ProposalId { node: self.node, seq, incarnation: self.incarnation }
    }

    fn push_outcome(&mut self, id: ProposalId, outcome: ProposalOutcome) {
        if self.outcomes.len() >= self.outcomes_limit {
            tracing::warn!(limit = self.outcomes_limit, "proposal outcomes not taken; dropping the oldest");
            self.outcomes.pop_front();
        }
        self.outcomes.push_back((id, outcome));
    }
}

/// The leader's filter against proposals forwarded twice (retries, duplicated messages).
///
/// Per proposer incarnation it remembers the sequence numbers it holds in its log window and
/// forgets those the proposer reports settled.
#[derive(Debug, Default)]
pub(crate) struct ForwardFilter {
    seen: HashMap<(NodeId, u64), ProposerWindow>,
}

#[derive(Debug, Default)]
struct ProposerWindow {
    /// The proposer settled everything below this.
    settled_below: u64,
    /// Sequence numbers at or above `settled_below` that are in the leader's log.
    held: HashSet<u64>,
}

impl ForwardFilter {
    /// Notes a proposal that is in the leader's log.
    pub(crate) fn note_held(&mut self, id: &ProposalId) {
        let window = self.seen.entry((id.node, id.incarnation)).or_default();
        if id.seq >= window.settled_below {
            window.held.insert(id.seq);
        }
    }

    /// Raises the proposer's settled watermark and forgets what is below it.
    pub(crate) fn note_settled_below(&mut self, node: NodeId, incarnation: u64, settled_below: u64) {
        let window = self.seen.entry((node, incarnation)).or_default();
        if settled_below > window.settled_below {
            window.settled_below = settled_below;
            window.held.retain(|seq| *seq >= settled_below);
        }
    }

    /// True if the proposal must not be appended: it is settled or already held.
    pub(crate) fn is_duplicate(&self, id: &ProposalId) -> bool {
        self.seen
            .get(&(id.node, id.incarnation))
            .is_some_and(|w| id.seq < w.settled_below || w.held.contains(&id.seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proposal(seq: u64) -> Proposal<u64> {
        Proposal { id: ProposalId { node: 1, seq, incarnation: 1 }, entry: seq * 10 }
    }

    #[test]
    fn decided_in_log_proposals_are_reported_in_index_order() {
        let mut ledger = ProposalLedger::<u64>::new(1, 1, 100);
        let a = ledger.next_id();
        let b = ledger.next_id();
        ledger.record_in_log(a, 5);
        ledger.record_in_log(b, 6);
        ledger.observe_decided(6);
        let mut out = Vec::new();
        ledger.take_outcomes(&mut out);
        assert_eq!(out, vec![(a, ProposalOutcome::Decided(5))]);
        assert_eq!(ledger.settled_below(), b.seq);
    }

    #[test]
    fn truncated_proposals_wait_again_and_are_forwarded() {
        let mut ledger = ProposalLedger::<u64>::new(1, 1, 100);
        let id = ledger.next_id();
        ledger.record_in_log(id, 3);
        ledger.observe_truncated(vec![proposal(id.seq)]);
        assert!(!ledger.has_in_log_from(0));
        let due = ledger.due_for_forward(10, 5);
        assert_eq!(due.len(), 1);
        assert!(ledger.due_for_forward(14, 5).is_empty(), "not due again before the retry time");
        assert_eq!(ledger.due_for_forward(15, 5).len(), 1);
    }

    #[test]
    fn filter_drops_held_and_settled_proposals() {
        let mut filter = ForwardFilter::default();
        let id = ProposalId { node: 2, seq: 7, incarnation: 1 };
        assert!(!filter.is_duplicate(&id));
        filter.note_held(&id);
        assert!(filter.is_duplicate(&id));
        filter.note_settled_below(2, 1, 8);
        assert!(filter.is_duplicate(&id), "settled proposals stay filtered");
        let other_incarnation = ProposalId { node: 2, seq: 7, incarnation: 2 };
        assert!(!filter.is_duplicate(&other_incarnation));
    }
}
