//! [`CrashableStorage`]: a simulated disk with a volatile cache, for crash and fault tests.
//!
//! A real disk keeps written data in a cache until `fsync`; a crash loses whatever was not yet
//! synced. This type models exactly that at the granularity of the storage contract: each
//! `write_atomically` call is one indivisible unit, calls reach the disk in order, and `flush`
//! is the fsync.
//!
//! ```text
//!   write_atomically ──► live (durable + unflushed calls) ◄── every read
//!          │
//!          └─► unflushed calls: [c1, c2, c3] ──flush──► durable
//!
//!   crash(Nothing)   = durable
//!   crash(Prefix(2)) = durable + c1 + c2      (whole calls only: calls are atomic)
//!   crash(All)       = durable + c1 + c2 + c3
//! ```
//!
//! Faults are injected by count, never by chance, so a test or a simulator seed reproduces them.

use omnipaxos_core::{
    ballot_leader_election::Ballot,
    storage::{ReplicaIdentity, StopSign, Storage, StorageError, StorageOp, StorageResult},
    util::{LogIndex, Proposal},
};

use crate::memory_storage::MemoryStorage;

/// Most `write_atomically` calls that may wait for a flush. The core flushes before it releases
/// any message, so reaching this limit means the caller never flushes: a bug, not a workload.
pub const UNFLUSHED_CALLS_MAX: usize = 1 << 20;

/// Which unflushed calls survive a crash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashKeep {
    /// Only what was flushed: the cache was lost entirely.
    Nothing,
    /// What was flushed plus the first `k` unflushed calls, each one whole.
    Prefix(usize),
    /// Everything written: the cache reached the disk before the crash.
    All,
}

/// A storage whose unflushed writes can be lost in a simulated crash, and whose writes and
/// flushes can be made to fail.
#[derive(Clone, Debug)]
pub struct CrashableStorage<T, S> {
    /// What a restarted process would see if the cache were lost now.
    durable: MemoryStorage<T, S>,
    /// What reads see. Invariant: equals `durable` with `unflushed` applied in order.
    live: MemoryStorage<T, S>,
    /// Every successful `write_atomically` call since the last successful flush, oldest first.
    /// Invariant: `unflushed.len() <= UNFLUSHED_CALLS_MAX`.
    unflushed: Vec<Vec<StorageOp<T, S>>>,
    /// `Some(n)`: `n` more writes succeed, then one fails with `Io`.
    writes_before_failure: Option<u64>,
    /// `Some(n)`: `n` more flushes succeed, then one fails with `Io`.
    flushes_before_failure: Option<u64>,
    /// Set by the first failed write or flush: fail-stop, like a disk after a failed fsync.
    poisoned: bool,
    write_count: u64,
    flush_count: u64,
}

/// Hand-written so that `Default` needs no bounds on `T` or `S`.
impl<T, S> Default for CrashableStorage<T, S> {
    fn default() -> Self {
        CrashableStorage {
            durable: MemoryStorage::default(),
            live: MemoryStorage::default(),
            unflushed: Vec::new(),
            writes_before_failure: None,
            flushes_before_failure: None,
            poisoned: false,
            write_count: 0,
            flush_count: 0,
        }
    }
}

/// Counts one call down; true if this call is the one that must fail.
fn injected_failure_due(calls_before_failure: &mut Option<u64>) -> bool {
    match calls_before_failure {
        Some(0) => {
            *calls_before_failure = None;
            true
        }
        Some(remaining) => {
            *remaining -= 1;
            false
        }
        None => false,
    }
}

fn injected_io_error(what: &'static str) -> StorageError {
    StorageError::Io(std::io::Error::other(what))
}

impl<T, S> CrashableStorage<T, S> {
    /// The next `n` writes succeed (unless invalid) and the one after returns `Io`, which
    /// poisons the storage. `fail_write_after(0)` fails the very next write.
    pub fn fail_write_after(&mut self, n: u64) {
        self.writes_before_failure = Some(n);
    }

    /// The next `n` flushes succeed and the one after returns `Io`, which poisons the storage.
    /// The unflushed calls stay unflushed: after a failed fsync any prefix of them may or may
    /// not be on disk, so a later `crash` may keep any prefix.
    pub fn fail_flush_after(&mut self, n: u64) {
        self.flushes_before_failure = Some(n);
    }

    /// How many times `write_atomically` was called, failed calls included.
    pub fn write_count(&self) -> u64 {
        self.write_count
    }

    /// How many times `flush` was called, failed calls included.
    pub fn flush_count(&self) -> u64 {
        self.flush_count
    }

    /// How many successful writes a crash could still lose.
    pub fn unflushed_calls(&self) -> usize {
        self.unflushed.len()
    }

    /// True once a write or flush failed: every later write and flush returns `Poisoned`.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }
}

impl<T: Clone, S: Clone> CrashableStorage<T, S> {
    /// The storage a restarted process would open after a crash now: the durable state plus
    /// the unflushed calls `keep` names. It starts healthy, fully flushed, with zeroed counters
    /// and no injected faults, like a fresh process on the same disk.
    ///
    /// Panics if `CrashKeep::Prefix(k)` names more calls than are unflushed: the caller must
    /// pick `k` in `0..=unflushed_calls()`, otherwise the test does not mean what it says.
    pub fn crash(&self, keep: CrashKeep) -> CrashableStorage<T, S> {
        let kept_calls = match keep {
            CrashKeep::Nothing => 0,
            CrashKeep::Prefix(count) => count,
            CrashKeep::All => self.unflushed.len(),
        };
        assert!(kept_calls <= self.unflushed.len(), "crash keeps more calls than were written");
        let mut recovered = self.durable.clone();
        for call in &self.unflushed[..kept_calls] {
            apply_replayed_call(&mut recovered, call.clone());
        }
        CrashableStorage { durable: recovered.clone(), live: recovered, ..CrashableStorage::default() }
    }
}

/// Replays a call that already succeeded on the live state from the same starting state; it
/// cannot fail unless this file is wrong.
fn apply_replayed_call<T: Clone, S: Clone>(
    storage: &mut MemoryStorage<T, S>,
    mut call: Vec<StorageOp<T, S>>,
) {
    storage.write_atomically(&mut call).expect("a call that succeeded on the live state succeeds on replay");
}

impl<T: Clone, S: Clone> Storage<T, S> for CrashableStorage<T, S> {
    /// Applies the call to the live state and queues it for the next flush. A failed call
    /// (injected or invalid) changes nothing and poisons the storage.
    fn write_atomically(&mut self, ops: &mut Vec<StorageOp<T, S>>) -> StorageResult<()> {
        self.write_count = self.write_count.saturating_add(1);
        if self.poisoned {
            return Err(StorageError::Poisoned);
        }
        if injected_failure_due(&mut self.writes_before_failure) {
            self.poisoned = true;
            return Err(injected_io_error("injected write failure"));
        }
        assert!(self.unflushed.len() < UNFLUSHED_CALLS_MAX, "caller never flushes");
        let call = ops.clone();
        if let Err(error) = self.live.write_atomically(ops) {
            self.poisoned = true;
            return Err(error);
        }
        self.unflushed.push(call);
        Ok(())
    }

    /// Moves every unflushed call to the durable state, unless a failure is injected.
    fn flush(&mut self) -> StorageResult<()> {
        self.flush_count = self.flush_count.saturating_add(1);
        if self.poisoned {
            return Err(StorageError::Poisoned);
        }
        if injected_failure_due(&mut self.flushes_before_failure) {
            self.poisoned = true;
            return Err(injected_io_error("injected flush failure"));
        }
        for call in self.unflushed.drain(..) {
            apply_replayed_call(&mut self.durable, call);
        }
        assert_eq!(self.durable.get_log_end()?, self.live.get_log_end()?);
        assert_eq!(self.durable.get_compacted_idx()?, self.live.get_compacted_idx()?);
        Ok(())
    }

    fn get_entries(&self, from: LogIndex, to: LogIndex) -> StorageResult<Vec<Proposal<T>>> {
        self.live.get_entries(from, to)
    }

    fn get_log_end(&self) -> StorageResult<LogIndex> {
        self.live.get_log_end()
    }

    fn get_compacted_idx(&self) -> StorageResult<LogIndex> {
        self.live.get_compacted_idx()
    }

    fn get_promise(&self) -> StorageResult<Option<Ballot>> {
        self.live.get_promise()
    }

    fn get_accepted_round(&self) -> StorageResult<Option<Ballot>> {
        self.live.get_accepted_round()
    }

    fn get_decided_idx(&self) -> StorageResult<LogIndex> {
        self.live.get_decided_idx()
    }

    fn get_stopsign(&self) -> StorageResult<Option<StopSign>> {
        self.live.get_stopsign()
    }

    fn get_snapshot(&self) -> StorageResult<Option<S>> {
        self.live.get_snapshot()
    }

    fn get_incarnation(&self) -> StorageResult<u64> {
        self.live.get_incarnation()
    }

    fn get_identity(&self) -> StorageResult<Option<ReplicaIdentity>> {
        self.live.get_identity()
    }
}
