//! [`MemoryStorage`]: the whole durable state of a replica in process memory.
//!
//! It is the reference implementation of the storage contract: the conformance suite and the
//! model-based tests are written against it first, and [`crate::crash_storage`] uses it for both
//! its durable and its live state. Memory counts as "durable" here, so `flush` does nothing.

use crate::{
    id_runs::IdRuns,
    log_bounds::{index_as_position, length_as_index, LogBounds},
};
use omnipaxos_core::{
    ballot_leader_election::Ballot,
    storage::{ReplicaIdentity, StopSign, Storage, StorageError, StorageOp, StorageResult},
    util::{LogIndex, Proposal},
};

/// The log and the replica's persistent fields, held in memory.
///
/// Indices are absolute: entry `i` sits at position `i - compacted_idx` of `log`. Proposal ids
/// are kept apart as runs ([`IdRuns`]): a `u64` entry costs 8 bytes, not 32.
#[derive(Clone, Debug)]
pub struct MemoryStorage<T, S> {
    /// The stored entries `[compacted_idx, log_end)`.
    /// Invariant: `compacted_idx + log.len()` fits in a `LogIndex` (so `log_end` never overflows).
    log: Vec<T>,
    /// The entries' proposal ids. Invariant: cover `[compacted_idx, log_end)` exactly.
    ids: IdRuns,
    /// The first stored index; every index below it was trimmed or snapshotted.
    compacted_idx: LogIndex,
    promise: Option<Ballot>,
    accepted_round: Option<Ballot>,
    decided_idx: LogIndex,
    stopsign: Option<StopSign>,
    snapshot: Option<S>,
    incarnation: u64,
    identity: Option<ReplicaIdentity>,
    /// Set by the first failed write; from then on every write and flush is refused, because
    /// the storage contract is fail-stop (see `omnipaxos_core::storage`).
    poisoned: bool,
    /// Every `write_atomically` call, failed ones included: tests count what the core asked for.
    write_count: u64,
    /// Every `flush` call, failed ones included.
    flush_count: u64,
}

/// Hand-written so that `Default` needs no `T: Default` or `S: Default`: an empty log needs
/// neither an entry nor a snapshot value.
impl<T, S> Default for MemoryStorage<T, S> {
    fn default() -> Self {
        MemoryStorage {
            log: Vec::new(),
            ids: IdRuns::default(),
            compacted_idx: 0,
            promise: None,
            accepted_round: None,
            decided_idx: 0,
            stopsign: None,
            snapshot: None,
            incarnation: 0,
            identity: None,
            poisoned: false,
            write_count: 0,
            flush_count: 0,
        }
    }
}

impl<T, S> MemoryStorage<T, S> {
    /// How many times `flush` was called, failed calls included.
    pub fn flush_count(&self) -> u64 {
        self.flush_count
    }

    /// How many times `write_atomically` was called, failed calls included.
    pub fn write_count(&self) -> u64 {
        self.write_count
    }

    /// True once a write failed: every later write and flush returns `Poisoned`.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// One past the last stored entry.
    fn log_end(&self) -> LogIndex {
        self.compacted_idx + length_as_index(self.log.len())
    }

    fn bounds(&self) -> LogBounds {
        LogBounds { compacted_idx: self.compacted_idx, log_end: self.log_end() }
    }

    /// Panics if a field invariant is broken; a broken invariant is a bug in this file.
    pub fn check_invariants(&self) {
        let length = length_as_index(self.log.len());
        assert!(self.compacted_idx.checked_add(length).is_some(), "log_end must not overflow");
        if cfg!(debug_assertions) {
            self.ids.check_covers(self.compacted_idx, self.log_end());
        }
    }

    /// Runs of proposal ids held (the ids cost about 40 bytes per run, not 24 per entry).
    pub fn id_run_count(&self) -> usize {
        self.ids.run_count()
    }

    fn append(&mut self, entries: Vec<Proposal<T>>) {
        self.log.reserve(entries.len());
        for (idx, Proposal { id, entry }) in (self.log_end()..).zip(entries) {
            self.ids.push(idx, id);
            self.log.push(entry);
        }
    }

    /// Checks every op of a call against the bounds left by the ops before it.
    fn validate(&self, ops: &[StorageOp<T, S>]) -> StorageResult<LogBounds> {
        ops.iter().try_fold(self.bounds(), |bounds, op| bounds.after(op))
    }

    /// Applies one op that `validate` accepted; cannot fail.
    fn apply(&mut self, op: StorageOp<T, S>) {
        match op {
            StorageOp::AppendEntries(entries) => self.append(entries),
            StorageOp::AppendOnPrefix(from_idx, entries) => {
                self.truncate_to(from_idx);
                self.append(entries);
            }
            StorageOp::Trim(idx) => self.trim_to(idx),
            StorageOp::SetPromise(ballot) => self.promise = Some(ballot),
            StorageOp::SetAcceptedRound(ballot) => self.accepted_round = Some(ballot),
            StorageOp::SetDecidedIdx(idx) => self.decided_idx = idx,
            StorageOp::SetStopSign(stopsign) => self.stopsign = stopsign,
            StorageOp::SetSnapshot(snapshot) => self.snapshot = snapshot,
            StorageOp::SetIncarnation(incarnation) => self.incarnation = incarnation,
            StorageOp::SetIdentity(identity) => self.identity = Some(identity),
        }
    }

    /// Drops the entries `[from_idx, log_end)`.
    fn truncate_to(&mut self, from_idx: LogIndex) {
        assert!(from_idx >= self.compacted_idx, "validated: truncation point is stored");
        assert!(from_idx <= self.log_end(), "validated: truncation point is stored");
        self.log.truncate(index_as_position(from_idx - self.compacted_idx));
        self.ids.truncate(from_idx);
    }

    /// Drops the entries `[compacted_idx, idx)`; past `log_end` the log empties and restarts at
    /// `idx`, because a snapshot from a leader can cover more than the local log.
    fn trim_to(&mut self, idx: LogIndex) {
        assert!(idx >= self.compacted_idx, "validated: trim never moves backwards");
        if idx >= self.log_end() {
            self.log.clear();
            self.ids.clear();
        } else {
            self.log.drain(..index_as_position(idx - self.compacted_idx));
            self.ids.trim(idx);
        }
        self.compacted_idx = idx;
    }
}

impl<T: Clone, S: Clone> Storage<T, S> for MemoryStorage<T, S> {
    /// Validates the whole call first, then applies it: a failing call changes nothing but
    /// poisons the storage (fail-stop, as the trait requires of every failed write).
    fn write_atomically(&mut self, ops: &mut Vec<StorageOp<T, S>>) -> StorageResult<()> {
        self.write_count = self.write_count.saturating_add(1);
        if self.poisoned {
            return Err(StorageError::Poisoned);
        }
        let expected_bounds = match self.validate(ops) {
            Ok(bounds) => bounds,
            Err(error) => {
                self.poisoned = true;
                return Err(error);
            }
        };
        for op in ops.drain(..) {
            self.apply(op);
        }
        assert_eq!(self.bounds(), expected_bounds, "applying must match validation");
        self.check_invariants();
        Ok(())
    }

    /// Memory is as durable as this type gets, so there is nothing to do unless poisoned.
    fn flush(&mut self) -> StorageResult<()> {
        self.flush_count = self.flush_count.saturating_add(1);
        if self.poisoned {
            return Err(StorageError::Poisoned);
        }
        Ok(())
    }

    fn get_entries(&self, from: LogIndex, to: LogIndex) -> StorageResult<Vec<Proposal<T>>> {
        let bounds = self.bounds();
        if from < bounds.compacted_idx || from > to || to > bounds.log_end {
            return Err(bounds.out_of_range(from, to));
        }
        let start = index_as_position(from - self.compacted_idx);
        let end = index_as_position(to - self.compacted_idx);
        let entries: Vec<Proposal<T>> = self.log[start..end]
            .iter()
            .zip(self.ids.ids(from, to))
            .map(|(entry, id)| Proposal { id, entry: entry.clone() })
            .collect();
        debug_assert_eq!(length_as_index(entries.len()), to - from);
        Ok(entries)
    }

    fn get_log_end(&self) -> StorageResult<LogIndex> {
        Ok(self.log_end())
    }

    fn get_compacted_idx(&self) -> StorageResult<LogIndex> {
        Ok(self.compacted_idx)
    }

    fn get_promise(&self) -> StorageResult<Option<Ballot>> {
        Ok(self.promise)
    }

    fn get_accepted_round(&self) -> StorageResult<Option<Ballot>> {
        Ok(self.accepted_round)
    }

    fn get_decided_idx(&self) -> StorageResult<LogIndex> {
        Ok(self.decided_idx)
    }

    fn get_stopsign(&self) -> StorageResult<Option<StopSign>> {
        Ok(self.stopsign.clone())
    }

    fn get_snapshot(&self) -> StorageResult<Option<S>> {
        Ok(self.snapshot.clone())
    }

    fn get_incarnation(&self) -> StorageResult<u64> {
        Ok(self.incarnation)
    }

    fn get_identity(&self) -> StorageResult<Option<ReplicaIdentity>> {
        Ok(self.identity)
    }
}
