//! [`LogState`]: the replica's durable state as held in memory, and which segment holds each
//! live entry.
//!
//! Every read is served from here; the disk is read only at open. The same type replays the
//! log at open, where it may start with *holes*: entries that lived in segments deleted since
//! (they were dead when deleted, so by the end of a correct replay no hole is live).

use std::collections::VecDeque;

use omnipaxos_core::{
    ballot_leader_election::Ballot,
    storage::{StopSign, StorageError, StorageOp, StorageResult},
    util::{LogIndex, Proposal},
};

use super::format::{Checkpoint, PossibleLoss};
use crate::log_bounds::{index_as_position, length_as_index, LogBounds};

/// A segment's id (its position in the sequence of segment files).
pub type SegmentId = u64;

/// The log and the persistent fields of one replica, in memory.
#[derive(Clone, Debug)]
pub struct LogState<T, S> {
    /// First stored index. Invariant: `compacted_idx <= first_present_idx`.
    compacted_idx: LogIndex,
    /// First index whose entry is in `entries`. Above `compacted_idx` only while replaying
    /// (the entries between lived in deleted segments). Invariant: `<= log_end()`.
    first_present_idx: LogIndex,
    /// The entries `[first_present_idx, log_end)`.
    entries: VecDeque<Proposal<T>>,
    /// Which segment holds which entries: `(first index, segment)` runs, ascending in both.
    /// Invariant: empty iff `entries` is; the first run starts at or below `first_present_idx`.
    runs: VecDeque<(LogIndex, SegmentId)>,
    pub(crate) promise: Option<Ballot>,
    pub(crate) accepted_round: Option<Ballot>,
    pub(crate) decided_idx: LogIndex,
    pub(crate) stopsign: Option<StopSign>,
    pub(crate) snapshot: Option<S>,
    pub(crate) incarnation: u64,
    /// A possible loss of acknowledged state, recorded until resolved.
    pub(crate) possible_loss: Option<PossibleLoss>,
}

impl<T, S> Default for LogState<T, S> {
    fn default() -> Self {
        LogState {
            compacted_idx: 0,
            first_present_idx: 0,
            entries: VecDeque::new(),
            runs: VecDeque::new(),
            promise: None,
            accepted_round: None,
            decided_idx: 0,
            stopsign: None,
            snapshot: None,
            incarnation: 0,
            possible_loss: None,
        }
    }
}

impl<T, S> LogState<T, S> {
    /// The state a checkpoint describes: its entries are holes until the replay replaces them.
    pub fn from_checkpoint(checkpoint: Checkpoint<S>) -> Self {
        LogState {
            compacted_idx: checkpoint.compacted_idx,
            first_present_idx: checkpoint.log_end,
            entries: VecDeque::new(),
            runs: VecDeque::new(),
            promise: checkpoint.promise,
            accepted_round: checkpoint.accepted_round,
            decided_idx: checkpoint.decided_idx,
            stopsign: checkpoint.stopsign,
            snapshot: checkpoint.snapshot,
            incarnation: checkpoint.incarnation,
            possible_loss: checkpoint.possible_loss,
        }
    }

    /// The checkpoint of this state (borrowing the snapshot).
    pub fn checkpoint(&self) -> Checkpoint<&S> {
        Checkpoint {
            compacted_idx: self.compacted_idx,
            log_end: self.log_end(),
            decided_idx: self.decided_idx,
            incarnation: self.incarnation,
            promise: self.promise,
            accepted_round: self.accepted_round,
            stopsign: self.stopsign.clone(),
            snapshot: self.snapshot.as_ref(),
            possible_loss: self.possible_loss,
        }
    }

    /// First stored index.
    pub fn compacted_idx(&self) -> LogIndex {
        self.compacted_idx
    }

    /// One past the last stored index.
    pub fn log_end(&self) -> LogIndex {
        self.first_present_idx + length_as_index(self.entries.len())
    }

    /// The promise.
    pub fn promise(&self) -> Option<Ballot> {
        self.promise
    }

    /// The accepted round.
    pub fn accepted_round(&self) -> Option<Ballot> {
        self.accepted_round
    }

    /// The decided index.
    pub fn decided_idx(&self) -> LogIndex {
        self.decided_idx
    }

    /// The StopSign.
    pub fn stopsign(&self) -> Option<&StopSign> {
        self.stopsign.as_ref()
    }

    /// The snapshot.
    pub fn snapshot(&self) -> Option<&S> {
        self.snapshot.as_ref()
    }

    /// The incarnation.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The recorded, unresolved possible loss of acknowledged state, if any.
    pub fn possible_loss(&self) -> Option<PossibleLoss> {
        self.possible_loss
    }

    /// True if every stored entry is present (no hole left by a deleted segment).
    pub fn is_complete(&self) -> bool {
        self.first_present_idx == self.compacted_idx
    }

    /// The oldest segment that holds a live entry, if any entry is stored.
    pub fn oldest_live_segment(&self) -> Option<SegmentId> {
        self.runs.front().map(|(_, segment)| *segment)
    }

    /// Checks a call's ops against the bounds each earlier op leaves; nothing changes.
    pub fn validate(&self, ops: &[StorageOp<T, S>]) -> StorageResult<()> {
        let start = LogBounds { compacted_idx: self.compacted_idx, log_end: self.log_end() };
        ops.iter().try_fold(start, |bounds, op| bounds.after(op)).map(|_| ())
    }

    /// Applies a validated op whose entries are stored in `segment`.
    pub fn apply(&mut self, op: StorageOp<T, S>, segment: SegmentId) {
        match op {
            StorageOp::AppendEntries(entries) => self.append(entries, segment),
            StorageOp::AppendOnPrefix(from_idx, entries) => {
                self.truncate(from_idx);
                self.append(entries, segment);
            }
            StorageOp::Trim(idx) => self.trim(idx),
            StorageOp::SetPromise(ballot) => self.promise = Some(ballot),
            StorageOp::SetAcceptedRound(ballot) => self.accepted_round = Some(ballot),
            StorageOp::SetDecidedIdx(idx) => self.decided_idx = idx,
            StorageOp::SetStopSign(stopsign) => self.stopsign = stopsign,
            StorageOp::SetSnapshot(snapshot) => self.snapshot = snapshot,
            StorageOp::SetIncarnation(incarnation) => self.incarnation = incarnation,
            // The segment headers record the owner; `write_atomically` checked it.
            StorageOp::SetIdentity(_) => {}
        }
        self.check_invariants();
    }

    fn append(&mut self, entries: Vec<Proposal<T>>, segment: SegmentId) {
        if entries.is_empty() {
            return;
        }
        let start = self.log_end();
        assert!(start.checked_add(length_as_index(entries.len())).is_some(), "validated: no overflow");
        match self.runs.back() {
            Some((_, last)) if *last == segment => {}
            Some((_, last)) => {
                assert!(*last < segment, "entries are appended to the newest segment");
                self.runs.push_back((start, segment));
            }
            None => self.runs.push_back((start, segment)),
        }
        self.entries.extend(entries);
    }

    /// Drops the entries `[from_idx, log_end)`.
    fn truncate(&mut self, from_idx: LogIndex) {
        assert!(self.compacted_idx <= from_idx && from_idx <= self.log_end(), "validated truncation");
        if from_idx < self.first_present_idx {
            self.entries.clear();
            self.first_present_idx = from_idx;
        } else {
            self.entries.truncate(index_as_position(from_idx - self.first_present_idx));
        }
        while self.runs.back().is_some_and(|(start, _)| *start >= from_idx) {
            self.runs.pop_back();
        }
        if self.entries.is_empty() {
            self.runs.clear();
        }
    }

    /// Drops the entries `[compacted_idx, idx)`; past `log_end` the log restarts at `idx`.
    fn trim(&mut self, idx: LogIndex) {
        assert!(idx >= self.compacted_idx, "validated: trim never moves backwards");
        if idx >= self.log_end() {
            self.entries.clear();
            self.runs.clear();
            self.first_present_idx = idx;
        } else if idx > self.first_present_idx {
            self.entries.drain(..index_as_position(idx - self.first_present_idx));
            self.first_present_idx = idx;
            while self.runs.len() >= 2 && self.runs[1].0 <= idx {
                self.runs.pop_front();
            }
        }
        self.compacted_idx = idx;
    }

    /// The entries `[from, to)`, or `OutOfRange`.
    pub fn get_entries(&self, from: LogIndex, to: LogIndex) -> StorageResult<Vec<Proposal<T>>>
    where
        T: Clone,
    {
        let log_end = self.log_end();
        if from < self.compacted_idx || from > to || to > log_end {
            return Err(StorageError::OutOfRange { from, to, compacted_idx: self.compacted_idx, log_end });
        }
        assert!(from >= self.first_present_idx || from == to, "a live state has no holes");
        if from == to {
            return Ok(Vec::new());
        }
        let start = index_as_position(from - self.first_present_idx);
        let end = index_as_position(to - self.first_present_idx);
        Ok(self.entries.range(start..end).cloned().collect())
    }

    /// Panics if a field invariant is broken: a bug in this module.
    pub fn check_invariants(&self) {
        assert!(self.compacted_idx <= self.first_present_idx, "holes start at compacted_idx");
        assert!(self.first_present_idx.checked_add(length_as_index(self.entries.len())).is_some());
        assert_eq!(self.runs.is_empty(), self.entries.is_empty(), "runs describe the entries");
        if let Some((first_start, _)) = self.runs.front() {
            assert!(*first_start <= self.first_present_idx.max(self.compacted_idx), "runs cover the entries");
        }
        debug_assert!(self.runs.iter().zip(self.runs.iter().skip(1)).all(|(a, b)| a.0 < b.0 && a.1 < b.1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use omnipaxos_core::util::ProposalId;

    fn entries(from: u64, to: u64) -> Vec<Proposal<u64>> {
        (from..to).map(|idx| Proposal { id: ProposalId::default(), entry: idx }).collect()
    }

    #[test]
    fn runs_track_the_oldest_live_segment() {
        let mut state = LogState::<u64, ()>::default();
        state.apply(StorageOp::AppendEntries(entries(0, 4)), 1);
        state.apply(StorageOp::AppendEntries(entries(4, 8)), 2);
        state.apply(StorageOp::AppendEntries(entries(8, 9)), 3);
        assert_eq!(state.oldest_live_segment(), Some(1));
        state.apply(StorageOp::Trim(4), 3);
        assert_eq!(state.oldest_live_segment(), Some(2));
        state.apply(StorageOp::AppendOnPrefix(5, entries(5, 6)), 4);
        assert_eq!(state.runs, VecDeque::from(vec![(4, 2), (5, 4)]));
        state.apply(StorageOp::Trim(20), 4);
        assert_eq!(state.oldest_live_segment(), None);
        assert_eq!(state.log_end(), 20);
    }

    #[test]
    fn holes_close_when_trimmed_or_truncated() {
        let checkpoint = Checkpoint {
            compacted_idx: 2,
            log_end: 6,
            decided_idx: 0,
            incarnation: 0,
            promise: None,
            accepted_round: None,
            stopsign: None,
            snapshot: None::<()>,
            possible_loss: None,
        };
        let mut state = LogState::<u64, ()>::from_checkpoint(checkpoint.clone());
        assert!(!state.is_complete());
        state.apply(StorageOp::AppendEntries(entries(6, 8)), 5);
        state.apply(StorageOp::Trim(6), 5);
        assert!(state.is_complete());
        assert_eq!(state.get_entries(6, 8).unwrap(), entries(6, 8));
        let mut state = LogState::<u64, ()>::from_checkpoint(checkpoint);
        state.apply(StorageOp::AppendOnPrefix(2, entries(2, 3)), 5);
        assert!(state.is_complete());
        assert_eq!(state.get_entries(2, 3).unwrap(), entries(2, 3));
    }
}
