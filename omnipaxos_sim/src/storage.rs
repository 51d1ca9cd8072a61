//! The simulated disk: the real [`CrashableStorage`] behind the real [`Storage`] port, plus what
//! the simulator needs to see and to break.
//!
//! ```text
//!   replica ──write_atomically / flush──► SimStorage ──► CrashableStorage (volatile + durable)
//!                                            │ notes the lowest log index a write rewrote
//!                                            └ arms injected write / flush failures
//!   crash(keep) ──► a new SimStorage over what survived (durable + a prefix of unflushed calls)
//! ```
//!
//! The replica owns its storage and lends it out only as `&B`, so the simulator's two handles
//! on it (the rewrite mark and the armed failures) are `Cell`s: set and read through `&self`.

use std::cell::Cell;

use omnipaxos_core::{
    ballot_leader_election::Ballot,
    storage::{StopSign, Storage, StorageOp, StorageResult},
    util::{LogIndex, Proposal},
};
use omnipaxos_storage::crash_storage::{CrashKeep, CrashableStorage};

use crate::kv::{Command, KvSnapshot};

/// A failure armed to hit a later storage call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArmedFailure {
    /// The write after this many successful writes fails.
    Write(u64),
    /// The flush after this many successful flushes fails.
    Flush(u64),
}

/// The simulated disk of one replica.
#[derive(Debug)]
pub struct SimStorage {
    inner: CrashableStorage<Command, KvSnapshot>,
    /// Lowest log index rewritten (truncated, replaced or compacted) since the invariant checker
    /// last took it; `LogIndex::MAX` if none.
    rewritten_from: Cell<LogIndex>,
    /// A failure counting down; handed to `inner` only for the call that must fail, so that
    /// disarming always works.
    armed: Cell<Option<ArmedFailure>>,
}

impl Default for SimStorage {
    fn default() -> Self {
        SimStorage::over(CrashableStorage::default())
    }
}

impl SimStorage {
    fn over(inner: CrashableStorage<Command, KvSnapshot>) -> Self {
        SimStorage { inner, rewritten_from: Cell::new(LogIndex::MAX), armed: Cell::new(None) }
    }

    /// The disk a restarted process finds after a crash now.
    pub fn crash(&self, keep: CrashKeep) -> SimStorage {
        SimStorage::over(self.inner.crash(keep))
    }

    /// Successful writes a crash could still lose.
    pub fn unflushed_calls(&self) -> usize {
        self.inner.unflushed_calls()
    }

    /// Arms a failure for a later write or flush (fail-stop: the storage then refuses all), or
    /// disarms with `None`.
    pub fn arm(&self, failure: Option<ArmedFailure>) {
        self.armed.set(failure);
    }

    /// Takes the lowest index rewritten since the last call (`LogIndex::MAX`: none).
    pub fn take_rewritten_from(&self) -> LogIndex {
        self.rewritten_from.replace(LogIndex::MAX)
    }

    /// Marks the log rewritten from `from`, as a truncating write would (tests of the checker).
    pub fn mark_rewritten(&self, from: LogIndex) {
        self.rewritten_from.set(self.rewritten_from.get().min(from));
    }

    /// True once a write or flush failed.
    pub fn is_poisoned(&self) -> bool {
        self.inner.is_poisoned()
    }

    /// Counts one write (or flush) down; makes this very call fail when the count is spent.
    fn count_down(&mut self, is_write: bool) {
        let next = match self.armed.get() {
            Some(ArmedFailure::Write(0)) if is_write => {
                self.inner.fail_write_after(0);
                None
            }
            Some(ArmedFailure::Flush(0)) if !is_write => {
                self.inner.fail_flush_after(0);
                None
            }
            Some(ArmedFailure::Write(n)) if is_write => Some(ArmedFailure::Write(n - 1)),
            Some(ArmedFailure::Flush(n)) if !is_write => Some(ArmedFailure::Flush(n - 1)),
            other => other,
        };
        self.armed.set(next);
    }

    fn note_rewrites(&self, ops: &[StorageOp<Command, KvSnapshot>]) {
        for op in ops {
            let from = match op {
                StorageOp::AppendOnPrefix(from, _) => *from,
                StorageOp::Trim(idx) => *idx,
                _ => continue,
            };
            self.rewritten_from.set(self.rewritten_from.get().min(from));
        }
    }
}

impl Storage<Command, KvSnapshot> for SimStorage {
    fn write_atomically(&mut self, ops: Vec<StorageOp<Command, KvSnapshot>>) -> StorageResult<()> {
        self.count_down(true);
        self.note_rewrites(&ops);
        self.inner.write_atomically(ops)
    }

    fn flush(&mut self) -> StorageResult<()> {
        self.count_down(false);
        self.inner.flush()
    }

    fn get_entries(&self, from: LogIndex, to: LogIndex) -> StorageResult<Vec<Proposal<Command>>> {
        self.inner.get_entries(from, to)
    }

    fn get_log_end(&self) -> StorageResult<LogIndex> {
        self.inner.get_log_end()
    }

    fn get_compacted_idx(&self) -> StorageResult<LogIndex> {
        self.inner.get_compacted_idx()
    }

    fn get_promise(&self) -> StorageResult<Option<Ballot>> {
        self.inner.get_promise()
    }

    fn get_accepted_round(&self) -> StorageResult<Option<Ballot>> {
        self.inner.get_accepted_round()
    }

    fn get_decided_idx(&self) -> StorageResult<LogIndex> {
        self.inner.get_decided_idx()
    }

    fn get_stopsign(&self) -> StorageResult<Option<StopSign>> {
        self.inner.get_stopsign()
    }

    fn get_snapshot(&self) -> StorageResult<Option<KvSnapshot>> {
        self.inner.get_snapshot()
    }

    fn get_incarnation(&self) -> StorageResult<u64> {
        self.inner.get_incarnation()
    }
}
