//! The state every role shares: durable state (cached), storage, outgoing messages, proposals.
//!
//! Durable state is changed only through [`Context::write`], which updates the in-memory cache
//! with the storage write; a failed write stops the replica for good, so the cache of a running
//! replica always equals its storage. Messages queued here leave only through
//! [`super::SequencePaxos::take_outgoing_messages`], after the storage flush: persist before send.

use std::marker::PhantomData;

use crate::{
    ballot::Ballot,
    messages::{LogSync, PaxosMessage, PaxosMsg},
    storage::{SnapshotType, StopSign, Storage, StorageError, StorageOp},
    util::{ConfigurationId, LogIndex, NodeId, Proposal, Quorum},
};

use super::proposals::ProposalLedger;

/// In-memory copy of the replica's durable state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct DurableState {
    /// Highest ballot promised. Invariant: never decreases, also across restarts.
    pub(crate) promise: Ballot,
    /// Ballot in which the log was last synchronised. Invariant: `accepted_round <= promise`.
    pub(crate) accepted_round: Ballot,
    /// Length of the decided prefix. Invariant: `compacted_idx <= decided_idx <= accepted_idx()`.
    pub(crate) decided_idx: LogIndex,
    /// One past the last entry. Invariant: `compacted_idx <= log_end`.
    pub(crate) log_end: LogIndex,
    /// Entries below this are compacted.
    pub(crate) compacted_idx: LogIndex,
    /// The StopSign at `log_end`, if any.
    pub(crate) stopsign: Option<StopSign>,
    /// This process's incarnation.
    pub(crate) incarnation: u64,
}

impl DurableState {
    /// The accepted index: the log end, plus one for a StopSign.
    pub(crate) fn accepted_idx(&self) -> LogIndex {
        self.log_end + u64::from(self.stopsign.is_some())
    }

    /// True if a StopSign is decided: the log is sealed for good.
    pub(crate) fn stopsign_decided(&self) -> bool {
        self.stopsign.is_some() && self.decided_idx == self.accepted_idx()
    }

    /// Applies one op as the storage will. Storage validated it; we assert what must hold.
    fn apply<T, S>(&mut self, op: &StorageOp<T, S>) {
        match op {
            StorageOp::AppendEntries(entries) => self.log_end += entries.len() as LogIndex,
            StorageOp::AppendOnPrefix(from, entries) => {
                assert!(*from >= self.compacted_idx, "truncation below the compacted index");
                self.log_end = from + entries.len() as LogIndex;
            }
            StorageOp::SetPromise(b) => self.promise = *b,
            StorageOp::SetAcceptedRound(b) => self.accepted_round = *b,
            StorageOp::SetDecidedIdx(idx) => self.decided_idx = *idx,
            StorageOp::SetStopSign(ss) => self.stopsign = ss.clone(),
            StorageOp::Trim(idx) => {
                self.compacted_idx = (*idx).max(self.compacted_idx);
                self.log_end = self.log_end.max(self.compacted_idx);
            }
            StorageOp::SetSnapshot(_) => {}
            StorageOp::SetIncarnation(i) => self.incarnation = *i,
            StorageOp::SetIdentity(_) => {}
        }
    }

    /// Checks the invariants that relate the fields. Programmer errors panic.
    pub(crate) fn check_invariants(&self) {
        assert!(self.compacted_idx <= self.log_end, "compacted beyond the log end: {self:?}");
        assert!(self.compacted_idx <= self.decided_idx, "compacted beyond decided: {self:?}");
        assert!(self.decided_idx <= self.accepted_idx(), "decided beyond accepted: {self:?}");
        assert!(self.accepted_round <= self.promise, "accepted round above promise: {self:?}");
    }
}

/// Everything the roles share. Handlers borrow it next to their role state.
pub(crate) struct Context<T, S, B> {
    pub(crate) pid: NodeId,
    pub(crate) peers: Vec<NodeId>,
    pub(crate) config_id: ConfigurationId,
    pub(crate) quorum: Quorum,
    pub(crate) batch_size: usize,
    pub(crate) buffer_size: usize,
    pub(crate) resend_ticks: u64,
    /// At most this many entries travel in one AcceptSync or catch-up AcceptDecide.
    pub(crate) max_sync_entries: usize,
    /// Decided indices ride only on AcceptDecide or go out at a tick (see the config).
    pub(crate) piggyback_decide: bool,
    pub(crate) storage: B,
    pub(crate) state: DurableState,
    /// Messages waiting for the next flush. Never handed out before it.
    pub(crate) outgoing: Vec<PaxosMessage<T, S>>,
    /// True if storage holds writes that were not flushed yet.
    pub(crate) unflushed: bool,
    /// The decided index in `state` is ahead of the stored one. It rides on the next write (a
    /// flush that syncs other writes includes it), or is written at the next tick: a decision
    /// costs no storage write and no fsync of its own, and the stored decided index lags by at
    /// most a tick. (A stored decided index that lags is safe: a restarted replica learns the
    /// rest again.)
    decided_unpersisted: bool,
    /// Set after a storage failure: the replica refuses everything (fail-stop).
    pub(crate) stopped: bool,
    pub(crate) ledger: ProposalLedger<T>,
    /// Ticks since start; used to pace retries.
    pub(crate) now: u64,
    /// The ops of the write in progress; kept between writes for its capacity.
    write_batch: Vec<StorageOp<T, S>>,
    /// This replica's reads.
    pub(crate) reads: super::reads::ReadBook,
    pub(crate) read_timeout_ticks: u64,
    pub(crate) lease: Option<super::reads::ReadLease>,
    /// With leases: the tick at which this replica last confirmed a read round of a leader.
    pub(crate) lease_confirmed_at: Option<u64>,
    #[cfg(feature = "mutations")]
    pub(crate) mutation: Option<crate::mutation::Mutation>,
    _snapshot: PhantomData<S>,
}

impl<T, S, B> Context<T, S, B>
where
    T: Clone + std::fmt::Debug,
    S: crate::storage::Snapshot<T>,
    B: Storage<T, S>,
{
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        pid: NodeId,
        peers: Vec<NodeId>,
        config_id: ConfigurationId,
        quorum: Quorum,
        batch_size: usize,
        buffer_size: usize,
        resend_ticks: u64,
        storage: B,
        state: DurableState,
    ) -> Self {
        let ledger = ProposalLedger::new(pid, state.incarnation, buffer_size, true);
        Context {
            pid,
            peers,
            config_id,
            quorum,
            batch_size,
            buffer_size,
            resend_ticks,
            max_sync_entries: usize::MAX,
            piggyback_decide: false,
            storage,
            state,
            outgoing: Vec::new(),
            unflushed: false,
            decided_unpersisted: false,
            stopped: false,
            ledger,
            now: 0,
            write_batch: Vec::with_capacity(8),
            reads: super::reads::ReadBook::default(),
            read_timeout_ticks: 1,
            lease: None,
            lease_confirmed_at: None,
            #[cfg(feature = "mutations")]
            mutation: None,
            _snapshot: PhantomData,
        }
    }

    /// Writes `ops` atomically, then updates the cache. On failure the replica stops and every
    /// queued message is discarded: nothing that depends on the failed write may leave.
    pub(crate) fn write(
        &mut self,
        ops: impl IntoIterator<Item = StorageOp<T, S>>,
    ) -> Result<(), StorageError> {
        if self.stopped {
            return Err(StorageError::Poisoned);
        }
        // One vector serves every write: `write_atomically` empties it and leaves its capacity.
        let mut batch = std::mem::take(&mut self.write_batch);
        batch.clear();
        batch.extend(ops);
        let result = self.write_batch_now(&mut batch);
        batch.clear();
        self.write_batch = batch;
        result
    }

    fn write_batch_now(&mut self, ops: &mut Vec<StorageOp<T, S>>) -> Result<(), StorageError> {
        if std::mem::take(&mut self.decided_unpersisted)
            && !ops.iter().any(|op| matches!(op, StorageOp::SetDecidedIdx(_)))
        {
            ops.push(StorageOp::SetDecidedIdx(self.state.decided_idx));
        }
        // The cache follows the ops before they move into storage (no copy of the state per
        // write). If the write fails, the storage applied none of them: the cache is loaded
        // again from it, and the replica stops for good (fail-stop).
        for op in ops.iter() {
            match op {
                StorageOp::SetStopSign(ss) => self.state.stopsign = ss.clone(),
                _ => self.state.apply(op),
            }
        }
        self.state.check_invariants();
        match self.storage.write_atomically(ops) {
            Ok(()) => {
                self.unflushed = true;
                Ok(())
            }
            Err(e) => {
                if let Ok(stored) = super::load_state(&self.storage) {
                    self.state = stored;
                }
                self.fail(&e);
                Err(e)
            }
        }
    }

    /// With leases: how long a lease this replica confirmed may still run, in ticks of any
    /// clock (what a Promise tells a new leader to wait).
    pub(crate) fn lease_wait_ticks(&self) -> u64 {
        match (self.lease, self.lease_confirmed_at) {
            (Some(lease), Some(at)) => lease.expiry_ticks().saturating_sub(self.now.saturating_sub(at)),
            _ => 0,
        }
    }

    /// Flushes storage if anything is unflushed.
    pub(crate) fn flush(&mut self) -> Result<(), StorageError> {
        if self.stopped {
            return Err(StorageError::Poisoned);
        }
        // A new decided index rides on this flush only if the flush syncs other writes anyway,
        // or if it seals the configuration: a flush (an fsync) for it alone would double the
        // fsyncs of a lightly loaded cluster. Otherwise it rides on the next write, or is
        // written at the next tick at the latest. A stored decided index that lags is safe: a
        // restarted replica learns the rest from its peers.
        if self.unflushed || self.state.stopsign_decided() {
            self.persist_decided_idx()?;
        }
        if !self.unflushed {
            return Ok(());
        }
        match self.storage.flush() {
            Ok(()) => {
                self.unflushed = false;
                Ok(())
            }
            Err(e) => {
                self.fail(&e);
                Err(e)
            }
        }
    }

    fn fail(&mut self, e: &StorageError) {
        tracing::error!(pid = self.pid, error = %e, "storage failed; the replica stops");
        self.stopped = true;
        self.outgoing.clear();
    }

    /// Queues a message for `to`.
    pub(crate) fn send(&mut self, to: NodeId, msg: PaxosMsg<T, S>) {
        debug_assert_ne!(to, self.pid, "a replica never sends to itself");
        self.outgoing.push(PaxosMessage { from: self.pid, to, config_id: self.config_id, msg });
    }

    /// Reads `[from, to)` from storage; a failure stops the replica.
    pub(crate) fn read_entries(
        &mut self,
        from: LogIndex,
        to: LogIndex,
    ) -> Result<Vec<Proposal<T>>, StorageError> {
        if from >= to {
            return Ok(Vec::new());
        }
        self.storage.get_entries(from, to).inspect_err(|e| self.fail(e))
    }

    /// Builds what a receiver needs to hold this log from `from_idx` on. If entries before
    /// `from_idx` up to the compacted index are gone, a complete snapshot replaces them.
    pub(crate) fn create_log_sync(&mut self, from_idx: LogIndex) -> Result<LogSync<T, S>, StorageError> {
        let mut from = from_idx.min(self.state.log_end);
        let mut decided_snapshot = None;
        if from < self.state.compacted_idx {
            from = self.state.compacted_idx;
            match self.storage.get_snapshot().inspect_err(|e| self.fail(e))? {
                Some(snapshot) if S::use_snapshots() => {
                    decided_snapshot = Some(SnapshotType::Complete(snapshot));
                }
                _ => tracing::error!(
                    pid = self.pid,
                    from_idx,
                    compacted_idx = self.state.compacted_idx,
                    "a peer needs trimmed entries and there is no snapshot"
                ),
            }
        }
        let suffix = self.read_entries(from, self.state.log_end)?;
        Ok(LogSync { decided_snapshot, suffix, sync_idx: from, stopsign: self.state.stopsign.clone() })
    }

    /// Makes this replica's log hold the sender's log of ballot `round` as described by `sync`
    /// (a snapshot of the decided prefix, then the entries from `sync_idx` on), and sets the
    /// accepted round and decided index, in one atomic write. Own proposals that the new log no
    /// longer holds go back to waiting.
    ///
    /// Two rules make this safe against any delayed or replayed sync:
    /// - a log already synchronised in `round` is only ever extended: both it and the sync are
    ///   prefixes of the one log the leader of `round` builds, so the longer one wins;
    /// - decided entries are never rewritten: a sync of another round starts at our decided
    ///   index at the lowest, and one whose log ends before it is refused.
    ///
    /// Returns false, changing nothing, if the sync cannot be applied (it leaves a gap, or it
    /// contradicts the decided prefix).
    pub(crate) fn apply_log_sync(
        &mut self,
        sync: LogSync<T, S>,
        round: Ballot,
        decided_idx: LogIndex,
    ) -> Result<bool, StorageError> {
        if sync.sync_idx.checked_add(sync.suffix.len() as LogIndex).is_none() {
            tracing::warn!(pid = self.pid, sync_idx = sync.sync_idx, "log sync refused: its end overflows");
            return Ok(false);
        }
        if self.state.stopsign_decided() {
            // This configuration's log is final and every later leader holds it: note the round.
            if self.state.accepted_round != round {
                self.write([StorageOp::SetAcceptedRound(round)])?;
            }
            return Ok(true);
        }
        let same_round = self.state.accepted_round == round;
        if same_round && sync.sync_idx <= self.state.log_end && !mutated!(self, SyncReplacesLog) {
            self.extend_with_sync(sync, round, decided_idx)
        } else {
            self.replace_with_sync(sync, round, decided_idx, same_round)
        }
    }

    /// A sync of the round our log is already synchronised in, starting inside our log: both
    /// are prefixes of the same log, so we keep ours and append what the sync has beyond it.
    fn extend_with_sync(
        &mut self,
        sync: LogSync<T, S>,
        round: Ballot,
        decided_idx: LogIndex,
    ) -> Result<bool, StorageError> {
        let LogSync { mut suffix, sync_idx, stopsign, .. } = sync;
        let log_end = self.state.log_end;
        let sync_end = sync_idx + suffix.len() as LogIndex;
        let mut ops = Vec::with_capacity(3);
        if self.state.stopsign.is_none() && sync_end >= log_end {
            suffix.drain(..(log_end - sync_idx) as usize);
            let new_accepted = sync_end + u64::from(stopsign.is_some());
            if !suffix.is_empty() {
                self.record_own(&suffix);
                ops.push(StorageOp::AppendEntries(suffix));
            }
            if stopsign.is_some() {
                ops.push(StorageOp::SetStopSign(stopsign));
            }
            let decided = decided_idx.min(new_accepted);
            if decided > self.state.decided_idx {
                ops.push(StorageOp::SetDecidedIdx(decided));
            }
        } else {
            let decided = decided_idx.min(self.state.accepted_idx());
            if decided > self.state.decided_idx {
                ops.push(StorageOp::SetDecidedIdx(decided));
            }
        }
        debug_assert_eq!(self.state.accepted_round, round);
        if !ops.is_empty() {
            self.write(ops)?;
        }
        self.observe_decided();
        Ok(true)
    }

    /// A sync of a newer round (or one reaching beyond our log with a snapshot): our log from
    /// the sync's start is replaced, but never below our decided index.
    fn replace_with_sync(
        &mut self,
        sync: LogSync<T, S>,
        round: Ballot,
        decided_idx: LogIndex,
        same_round: bool,
    ) -> Result<bool, StorageError> {
        let LogSync { decided_snapshot, mut suffix, sync_idx, stopsign } = sync;
        let log_end = self.state.log_end;
        let sync_end = sync_idx + suffix.len() as LogIndex;
        // Our decided entries stay. A sync that ends inside them contradicts them: refuse it.
        let keep = if mutated!(self, SyncReplacesLog) {
            self.state.compacted_idx
        } else if same_round {
            log_end
        } else {
            self.state.decided_idx.min(log_end)
        };
        if sync_end < keep {
            tracing::error!(
                pid = self.pid,
                sync_end,
                keep,
                "log sync refused: it ends inside our decided prefix"
            );
            return Ok(false);
        }
        let mut ops = self.snapshot_ops(decided_snapshot, sync_idx)?;
        let installed_snapshot = !ops.is_empty();
        if !installed_snapshot && sync_idx > log_end {
            // Entries between our log end and the sync are missing and no snapshot covers them:
            // applying it would place entries at the wrong index. Refuse it.
            tracing::warn!(
                pid = self.pid,
                sync_idx,
                log_end,
                "log sync refused: it leaves a gap and carries no snapshot"
            );
            return Ok(false);
        }
        let compacted_after = if installed_snapshot { sync_idx } else { self.state.compacted_idx };
        let start = sync_idx.max(keep).max(compacted_after);
        suffix.drain(..(start - sync_idx) as usize);
        let truncated = if start < log_end && self.ledger.has_in_log_from(start) {
            self.read_entries(start.max(self.state.compacted_idx), log_end)?
        } else {
            Vec::new()
        };
        let new_accepted = sync_end + u64::from(stopsign.is_some());
        let decided = decided_idx.min(new_accepted).max(self.state.decided_idx).max(compacted_after);
        ops.push(StorageOp::AppendOnPrefix(start, suffix.clone()));
        ops.push(StorageOp::SetStopSign(stopsign));
        ops.push(StorageOp::SetAcceptedRound(round));
        ops.push(StorageOp::SetDecidedIdx(decided));
        self.write(ops)?;
        self.ledger.observe_truncated(start, truncated);
        self.ledger.observe_written(start, &suffix);
        if installed_snapshot {
            // A truncated own proposal not in the suffix may be inside the snapshot.
            self.ledger.drop_waiting(super::proposals::DropReason::Indeterminate);
        }
        self.observe_decided();
        Ok(true)
    }

    /// What a learner needs: the decided entries `[from_idx, to)` (with a complete snapshot if
    /// some are compacted), and the StopSign if it is decided and `to` reaches it.
    pub(crate) fn create_decided_sync(
        &mut self,
        from_idx: LogIndex,
        to: LogIndex,
    ) -> Result<LogSync<T, S>, StorageError> {
        debug_assert!(to <= self.state.decided_idx.min(self.state.log_end));
        let mut sync = self.create_log_sync(from_idx)?;
        let keep = to.saturating_sub(sync.sync_idx) as usize;
        sync.suffix.truncate(keep);
        let reaches_stopsign = to == self.state.log_end && self.state.stopsign_decided();
        if !reaches_stopsign {
            sync.stopsign = None;
        }
        Ok(sync)
    }

    /// A learner takes decided entries from a LearnerSync: what it lacks after its own decided
    /// prefix replaces whatever follows that prefix (entries it only accepted before it lost its
    /// storage may differ from the decided ones). Returns its decided index after.
    pub(crate) fn apply_decided_sync(&mut self, sync: LogSync<T, S>) -> Result<LogIndex, StorageError> {
        if self.state.stopsign_decided() {
            return Ok(self.state.decided_idx);
        }
        let LogSync { decided_snapshot, mut suffix, sync_idx, stopsign } = sync;
        let decided_end = self.state.decided_idx.min(self.state.log_end);
        let snapshot = if sync_idx > decided_end { decided_snapshot } else { None };
        let mut ops = self.snapshot_ops(snapshot, sync_idx)?;
        let installed_snapshot = !ops.is_empty();
        let start = if installed_snapshot { sync_idx } else { decided_end.max(self.state.compacted_idx) };
        let Some(sync_end) = sync_idx.checked_add(suffix.len() as LogIndex) else {
            return Ok(self.state.decided_idx);
        };
        if sync_idx > start || sync_end < start {
            // A gap no snapshot covers, or nothing beyond what is decided here.
            return Ok(self.state.decided_idx);
        }
        suffix.drain(..(start - sync_idx) as usize);
        let new_end = start + suffix.len() as LogIndex;
        let decided = new_end + u64::from(stopsign.is_some());
        if decided <= self.state.decided_idx && !installed_snapshot {
            return Ok(self.state.decided_idx);
        }
        ops.push(StorageOp::AppendOnPrefix(start, suffix));
        ops.push(StorageOp::SetStopSign(stopsign));
        ops.push(StorageOp::SetDecidedIdx(decided.max(self.state.decided_idx)));
        self.write(ops)?;
        self.observe_decided();
        Ok(self.state.decided_idx)
    }

    /// The ops that install a snapshot received with a log sync (none if we already compacted
    /// at least as far).
    fn snapshot_ops(
        &mut self,
        decided_snapshot: Option<SnapshotType<S>>,
        sync_idx: LogIndex,
    ) -> Result<Vec<StorageOp<T, S>>, StorageError> {
        let mut ops = Vec::with_capacity(6);
        match decided_snapshot {
            Some(_) if sync_idx <= self.state.compacted_idx => {
                // We already compacted at least as far: the snapshot adds nothing.
            }
            Some(SnapshotType::Complete(snapshot)) => {
                ops.push(StorageOp::SetSnapshot(Some(snapshot)));
                ops.push(StorageOp::Trim(sync_idx));
                // Own proposals below our decided index are decided where they are; above it our
                // log may have differed from the leader's, and waiting ones may be inside the
                // snapshot: their fate is unknown.
                self.ledger.observe_decided(self.state.decided_idx);
                self.ledger.drop_in_log_below(sync_idx, super::proposals::DropReason::Indeterminate);
                self.ledger.drop_waiting(super::proposals::DropReason::Indeterminate);
            }
            Some(SnapshotType::Delta(delta)) => {
                let merged = match self.storage.get_snapshot().inspect_err(|e| self.fail(e))? {
                    Some(mut s) => {
                        s.merge(delta);
                        s
                    }
                    None => delta,
                };
                ops.push(StorageOp::SetSnapshot(Some(merged)));
                ops.push(StorageOp::Trim(sync_idx));
            }
            None => {}
        }
        Ok(ops)
    }

    /// Raises the decided index to `idx` (capped at the accepted index).
    pub(crate) fn set_decided_idx(&mut self, idx: LogIndex) {
        let idx = idx.min(self.state.accepted_idx());
        if idx <= self.state.decided_idx {
            return;
        }
        self.state.decided_idx = idx;
        self.decided_unpersisted = true;
        self.observe_decided();
    }

    /// Stores a decided index that is still only in memory.
    pub(crate) fn persist_decided_idx(&mut self) -> Result<(), StorageError> {
        if self.decided_unpersisted {
            self.write([StorageOp::SetDecidedIdx(self.state.decided_idx)])?;
        }
        Ok(())
    }

    /// Settles own proposals below the decided index; a decided StopSign settles all others.
    /// Reads whose index the decided index reached become ready.
    pub(crate) fn observe_decided(&mut self) {
        self.reads.settle(self.state.decided_idx, self.now, self.read_timeout_ticks);
        self.ledger.observe_decided(self.state.decided_idx);
        if self.state.stopsign_decided() {
            self.ledger.drop_all(super::proposals::DropReason::LogSealed);
        }
    }

    /// Appends entries and raises the decided index to `decided_idx` (capped at the new accepted
    /// index) in one atomic write.
    pub(crate) fn append_and_decide(
        &mut self,
        entries: Vec<Proposal<T>>,
        decided_idx: LogIndex,
    ) -> Result<(), StorageError> {
        assert!(self.state.stopsign.is_none() || entries.is_empty(), "append after a StopSign");
        let accepted_after = self.state.accepted_idx() + entries.len() as LogIndex;
        let decided = decided_idx.min(accepted_after);
        let append = (!entries.is_empty()).then(|| {
            self.record_own(&entries);
            StorageOp::AppendEntries(entries)
        });
        let decide = (decided > self.state.decided_idx).then_some(StorageOp::SetDecidedIdx(decided));
        if append.is_none() && decide.is_none() {
            return Ok(());
        }
        self.write(append.into_iter().chain(decide))?;
        self.observe_decided();
        Ok(())
    }

    fn record_own(&mut self, entries: &[Proposal<T>]) {
        self.ledger.record_written(self.state.log_end, entries);
    }

    /// Appends entries at the log end (one atomic write) and records own proposals.
    pub(crate) fn append_entries(&mut self, entries: Vec<Proposal<T>>) -> Result<(), StorageError> {
        if entries.is_empty() {
            return Ok(());
        }
        assert!(self.state.stopsign.is_none(), "append after a StopSign");
        self.record_own(&entries);
        self.write([StorageOp::AppendEntries(entries)])
    }
}
