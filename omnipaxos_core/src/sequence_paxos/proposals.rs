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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use crate::{
    ballot::Ballot,
    util::{LogIndex, NodeId, Proposal, ProposalId},
};

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

/// A proposal waiting to reach the leader's log.
#[derive(Clone, Debug)]
struct Waiting<T> {
    proposal: Proposal<T>,
    /// The leader ballot it was last forwarded to, and when.
    forwarded: Option<(Ballot, u64)>,
    /// It was forwarded or was in a log: some leader may hold it.
    exposed: bool,
}

/// Settled outcomes of consecutive own proposals: decided at consecutive indices from
/// `first_idx`, or all dropped for `reason`.
#[derive(Clone, Copy, Debug)]
struct OutcomeRun {
    first_seq: u64,
    first_idx: Option<LogIndex>,
    len: u64,
    reason: Option<DropReason>,
}

/// Consecutive own proposals at consecutive log indices: `len` proposals with sequence numbers
/// `first_seq..` at indices `first_idx..`. A leader's own appends form one long run, so the
/// ledger costs O(1) per entry and no allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    first_idx: LogIndex,
    first_seq: u64,
    len: u64,
}

impl Run {
    fn end_idx(&self) -> LogIndex {
        self.first_idx + self.len
    }
}

/// The proposer's ledger of its unsettled proposals.
#[derive(Debug)]
pub(crate) struct ProposalLedger<T> {
    node: NodeId,
    incarnation: u64,
    next_seq: u64,
    /// Own proposals not in the local log, by sequence number.
    waiting: BTreeMap<u64, Waiting<T>>,
    /// Own proposals in the local log. Invariant: sorted by index, not overlapping, and no
    /// sequence number is also in `waiting`.
    in_log: VecDeque<Run>,
    /// Proposals reported `Dropped(Indeterminate)` that may still reach the log (a forward in
    /// flight): they must not be settled a second time. Bounded by `abandoned_limit`.
    abandoned: BTreeSet<u64>,
    abandoned_limit: usize,
    /// Settled outcomes not yet taken by the user, as runs; adjacent runs merge. Never dropped:
    /// `append` refuses new proposals while too many runs wait (see `outcome_runs`).
    outcomes: VecDeque<OutcomeRun>,
    /// Proposals in `outcomes`.
    outcomes_len: usize,
    /// False if the user turned outcomes off: nothing is kept.
    keep_outcomes: bool,
    /// Mutation `DropOutcomes`: the oldest outcomes beyond this many are dropped.
    outcomes_limit: Option<usize>,
}

impl<T: Clone> ProposalLedger<T> {
    pub(crate) fn new(node: NodeId, incarnation: u64, abandoned_limit: usize, keep_outcomes: bool) -> Self {
        ProposalLedger {
            node,
            incarnation,
            next_seq: 1,
            waiting: BTreeMap::new(),
            in_log: VecDeque::new(),
            abandoned: BTreeSet::new(),
            abandoned_limit,
            outcomes: VecDeque::new(),
            outcomes_len: 0,
            keep_outcomes,
            outcomes_limit: None,
        }
    }

    /// Mutation `DropOutcomes` (issue 8, finding 4): drops the oldest outcomes beyond `limit`.
    pub(crate) fn drop_outcomes_beyond(&mut self, limit: usize) {
        self.outcomes_limit = Some(limit);
    }

    /// Runs of outcomes waiting to be taken (each costs a few words of memory).
    pub(crate) fn outcome_runs(&self) -> usize {
        self.outcomes.len()
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

    /// Number of own proposals not in the log (they hold memory).
    pub(crate) fn waiting_count(&self) -> usize {
        self.waiting.len()
    }

    /// Records a proposal written to the local log at `idx`, after every index recorded so far.
    pub(crate) fn record_in_log(&mut self, id: ProposalId, idx: LogIndex) {
        debug_assert!(self.is_own(&id));
        if !self.abandoned.is_empty() && self.abandoned.contains(&id.seq) {
            return;
        }
        if !self.waiting.is_empty() {
            self.waiting.remove(&id.seq);
        }
        if let Some(last) = self.in_log.back_mut() {
            assert!(idx >= last.end_idx(), "own proposals are recorded in log order");
            if idx == last.end_idx() && id.seq == last.first_seq + last.len {
                last.len += 1;
                return;
            }
        }
        self.in_log.push_back(Run { first_idx: idx, first_seq: id.seq, len: 1 });
    }

    /// Records the own proposals among `entries`, written at `first_idx..`.
    pub(crate) fn record_written(&mut self, first_idx: LogIndex, entries: &[Proposal<T>]) {
        for (offset, p) in entries.iter().enumerate() {
            if p.id.node != self.node || p.id.incarnation != self.incarnation {
                continue;
            }
            let idx = first_idx + offset as LogIndex;
            // Fast path: the next proposal of the last run, nothing waiting or abandoned.
            if self.waiting.is_empty() && self.abandoned.is_empty() {
                if let Some(last) = self.in_log.back_mut() {
                    if idx == last.end_idx() && p.id.seq == last.first_seq + last.len {
                        last.len += 1;
                        continue;
                    }
                }
            }
            self.record_in_log(p.id, idx);
        }
    }

    /// Records a proposal that must reach the leader.
    pub(crate) fn record_waiting(&mut self, proposal: Proposal<T>) {
        self.insert_waiting(proposal, false);
    }

    fn insert_waiting(&mut self, proposal: Proposal<T>, exposed: bool) {
        debug_assert!(self.is_own(&proposal.id));
        let seq = proposal.id.seq;
        self.waiting.insert(seq, Waiting { proposal, forwarded: None, exposed });
    }

    /// Scans entries written at `first_idx..` for own waiting proposals.
    pub(crate) fn observe_written(&mut self, first_idx: LogIndex, entries: &[Proposal<T>]) {
        if self.waiting.is_empty() {
            return;
        }
        for (offset, p) in entries.iter().enumerate() {
            if self.is_own(&p.id) && self.waiting.contains_key(&p.id.seq) {
                self.record_in_log(p.id, first_idx + offset as LogIndex);
            }
        }
    }

    /// The log was truncated at `start`; `removed` are the entries that were at `start..`.
    /// Own proposals among them return to `Waiting` (they will be forwarded again).
    pub(crate) fn observe_truncated(&mut self, start: LogIndex, removed: Vec<Proposal<T>>) {
        let mut cut = Vec::new();
        while let Some(last) = self.in_log.back_mut() {
            if last.end_idx() <= start {
                break;
            }
            if last.first_idx >= start {
                cut.push(*last);
                self.in_log.pop_back();
            } else {
                let kept = start - last.first_idx;
                cut.push(Run { first_idx: start, first_seq: last.first_seq + kept, len: last.len - kept });
                last.len = kept;
            }
        }
        let was_cut = |seq: u64| cut.iter().any(|r| seq >= r.first_seq && seq < r.first_seq + r.len);
        for p in removed {
            if self.is_own(&p.id) && was_cut(p.id.seq) {
                self.insert_waiting(p, true);
            }
        }
    }

    /// True if any own proposal sits in the log at or after `idx`.
    pub(crate) fn has_in_log_from(&self, idx: LogIndex) -> bool {
        self.in_log.back().is_some_and(|r| r.end_idx() > idx)
    }

    /// Settles own proposals below the decided index: decided where they are.
    pub(crate) fn observe_decided(&mut self, decided_idx: LogIndex) {
        while let Some(first) = self.in_log.front_mut() {
            if first.first_idx >= decided_idx {
                break;
            }
            let decided = (decided_idx - first.first_idx).min(first.len);
            let run = Run { len: decided, ..*first };
            first.first_idx += decided;
            first.first_seq += decided;
            first.len -= decided;
            if first.len == 0 {
                self.in_log.pop_front();
            }
            self.push_outcomes(OutcomeRun {
                first_seq: run.first_seq,
                first_idx: Some(run.first_idx),
                len: run.len,
                reason: None,
            });
        }
    }

    /// Own proposals in the log below `idx` whose fate this node can no longer learn (its log
    /// below `idx` was replaced by a snapshot).
    pub(crate) fn drop_in_log_below(&mut self, idx: LogIndex, reason: DropReason) {
        while let Some(first) = self.in_log.front_mut() {
            if first.first_idx >= idx {
                break;
            }
            let dropped = (idx - first.first_idx).min(first.len);
            let first_seq = first.first_seq;
            first.first_idx += dropped;
            first.first_seq += dropped;
            first.len -= dropped;
            if first.len == 0 {
                self.in_log.pop_front();
            }
            for seq in first_seq..first_seq + dropped {
                self.push_outcome(self.id_of(seq), ProposalOutcome::Dropped(reason));
            }
        }
    }

    /// Waiting proposals whose fate this node can no longer learn (its log was replaced by a
    /// snapshot that may contain them).
    pub(crate) fn drop_waiting(&mut self, reason: DropReason) {
        let waiting = std::mem::take(&mut self.waiting);
        let (dropped, kept): (BTreeMap<_, _>, BTreeMap<_, _>) =
            waiting.into_iter().partition(|(_, w)| reason != DropReason::Indeterminate || w.exposed);
        // A proposal never forwarded and never in a log cannot be in any log: it stays waiting.
        self.waiting = kept;
        for seq in dropped.into_keys() {
            if reason == DropReason::Indeterminate {
                self.abandon(seq);
            }
            self.push_outcome(self.id_of(seq), ProposalOutcome::Dropped(reason));
        }
    }

    fn abandon(&mut self, seq: u64) {
        if self.abandoned.len() >= self.abandoned_limit {
            self.abandoned.pop_first();
        }
        self.abandoned.insert(seq);
    }

    /// Drops every unsettled proposal (the log is sealed by a decided StopSign).
    pub(crate) fn drop_all(&mut self, reason: DropReason) {
        self.drop_waiting(reason);
        for run in std::mem::take(&mut self.in_log) {
            for i in 0..run.len {
                self.push_outcome(self.id_of(run.first_seq + i), ProposalOutcome::Dropped(reason));
            }
        }
    }

    /// Waiting proposals due for a forward to the leader with ballot `leader` (which this replica
    /// is synchronised with) at tick `now`, marked as forwarded now: those never forwarded, those
    /// last forwarded to another ballot, and the others `retry_ticks` after their last forward.
    pub(crate) fn due_for_forward(&mut self, leader: Ballot, now: u64, retry_ticks: u64) -> Vec<Proposal<T>> {
        let mut due = Vec::new();
        for w in self.waiting.values_mut() {
            let is_due = match w.forwarded {
                None => true,
                Some((ballot, _)) if ballot != leader => true,
                Some((_, at)) => now >= at.saturating_add(retry_ticks),
            };
            if is_due {
                w.forwarded = Some((leader, now));
                w.exposed = true;
                due.push(w.proposal.clone());
            }
        }
        due
    }

    /// Takes every waiting proposal out of the ledger (a new leader appends them itself).
    pub(crate) fn take_waiting(&mut self) -> Vec<Proposal<T>> {
        std::mem::take(&mut self.waiting).into_values().map(|w| w.proposal).collect()
    }

    /// Every sequence number below this is settled: the leader may forget them.
    pub(crate) fn settled_below(&self) -> u64 {
        let waiting = self.waiting.keys().next().copied();
        let in_log = self.in_log.iter().map(|r| r.first_seq).min();
        waiting.into_iter().chain(in_log).min().unwrap_or(self.next_seq)
    }

    /// Moves settled outcomes into `buf`.
    pub(crate) fn take_outcomes(&mut self, buf: &mut Vec<(ProposalId, ProposalOutcome)>) {
        buf.reserve(self.outcomes_len);
        let (node, incarnation) = (self.node, self.incarnation);
        for run in self.outcomes.drain(..) {
            buf.extend((0..run.len).map(|i| {
                let id = ProposalId { node, seq: run.first_seq + i, incarnation };
                let outcome = match (run.first_idx, run.reason) {
                    (Some(idx), _) => ProposalOutcome::Decided(idx + i),
                    (None, Some(reason)) => ProposalOutcome::Dropped(reason),
                    (None, None) => unreachable!("an outcome run is decided or dropped"),
                };
                (id, outcome)
            }));
        }
        self.outcomes_len = 0;
    }

    fn id_of(&self, seq: u64) -> ProposalId {
        ProposalId { node: self.node, seq, incarnation: self.incarnation }
    }

    fn push_outcome(&mut self, id: ProposalId, outcome: ProposalOutcome) {
        debug_assert!(self.is_own(&id));
        let run = match outcome {
            ProposalOutcome::Decided(idx) => {
                OutcomeRun { first_seq: id.seq, first_idx: Some(idx), len: 1, reason: None }
            }
            ProposalOutcome::Dropped(reason) => {
                OutcomeRun { first_seq: id.seq, first_idx: None, len: 1, reason: Some(reason) }
            }
        };
        self.push_outcomes(run);
    }

    /// Queues a run of outcomes, merged into the last run if it continues it.
    fn push_outcomes(&mut self, run: OutcomeRun) {
        if !self.keep_outcomes || run.len == 0 {
            return;
        }
        self.outcomes_len += run.len as usize;
        if let Some(last) = self.outcomes.back_mut() {
            let continues_seq = last.first_seq + last.len == run.first_seq;
            let continues_idx = match (last.first_idx, run.first_idx) {
                (Some(a), Some(b)) => a + last.len == b,
                (None, None) => last.reason == run.reason,
                _ => false,
            };
            if continues_seq && continues_idx {
                last.len += run.len;
                self.apply_outcomes_limit();
                return;
            }
        }
        self.outcomes.push_back(run);
        self.apply_outcomes_limit();
    }

    fn apply_outcomes_limit(&mut self) {
        let Some(limit) = self.outcomes_limit else { return };
        while self.outcomes_len > limit {
            let first = self.outcomes.front_mut().expect("outcomes_len > 0");
            let excess = (self.outcomes_len - limit).min(first.len as usize) as u64;
            first.first_seq += excess;
            first.first_idx = first.first_idx.map(|idx| idx + excess);
            first.len -= excess;
            self.outcomes_len -= excess as usize;
            if first.len == 0 {
                self.outcomes.pop_front();
            }
        }
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
        let mut ledger = ProposalLedger::<u64>::new(1, 1, 100, true);
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
        let mut ledger = ProposalLedger::<u64>::new(1, 1, 100, true);
        let id = ledger.next_id();
        ledger.record_in_log(id, 3);
        ledger.observe_truncated(0, vec![proposal(id.seq)]);
        assert!(!ledger.has_in_log_from(0));
        let (first, second) = (Ballot::with(1, 2, 0, 2), Ballot::with(1, 3, 0, 3));
        assert_eq!(ledger.due_for_forward(first, 10, 5).len(), 1, "never forwarded: due");
        assert!(ledger.due_for_forward(first, 14, 5).is_empty(), "not due before the retry time");
        assert_eq!(ledger.due_for_forward(first, 15, 5).len(), 1);
        assert_eq!(ledger.due_for_forward(second, 16, 5).len(), 1, "a new leader gets it at once");
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
