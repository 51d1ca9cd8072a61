//! The log bounds every storage validates a `write_atomically` call against, and the index
//! conversions they share.

use omnipaxos_core::{
    storage::{StorageError, StorageOp, StorageResult},
    util::LogIndex,
};

/// The two log positions that decide whether an op is valid. Validation walks a call's ops over
/// this small value instead of over a copy of the log, so a failing call costs no cloning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LogBounds {
    pub(crate) compacted_idx: LogIndex,
    pub(crate) log_end: LogIndex,
}

impl LogBounds {
    /// The bounds after `op`, or the error `op` fails with when applied at `self`.
    pub(crate) fn after<T, S>(self, op: &StorageOp<T, S>) -> StorageResult<LogBounds> {
        debug_assert!(self.compacted_idx <= self.log_end);
        let next = match op {
            StorageOp::AppendEntries(entries) => self.after_append(self.log_end, entries.len())?,
            StorageOp::AppendOnPrefix(from_idx, entries) => self.after_append(*from_idx, entries.len())?,
            StorageOp::Trim(idx) => self.after_trim(*idx)?,
            StorageOp::SetPromise(_)
            | StorageOp::SetAcceptedRound(_)
            | StorageOp::SetDecidedIdx(_)
            | StorageOp::SetStopSign(_)
            | StorageOp::SetSnapshot(_)
            | StorageOp::SetIncarnation(_)
            | StorageOp::SetIdentity(_) => self,
        };
        debug_assert!(next.compacted_idx <= next.log_end);
        Ok(next)
    }

    /// Truncating to `from_idx` and appending `count` entries: `from_idx` must lie in
    /// `[compacted_idx, log_end]` and the new end must be representable.
    fn after_append(self, from_idx: LogIndex, count: usize) -> StorageResult<LogBounds> {
        let count = length_as_index(count);
        let out_of_range = self.out_of_range(from_idx, from_idx.saturating_add(count));
        if from_idx < self.compacted_idx || from_idx > self.log_end {
            return Err(out_of_range);
        }
        let log_end = from_idx.checked_add(count).ok_or(out_of_range)?;
        Ok(LogBounds { compacted_idx: self.compacted_idx, log_end })
    }

    /// Trimming to `idx`. Below `compacted_idx` is an error rather than a no-op: the core never
    /// asks for it, so a request means its idea of the log is wrong, and failing stops it.
    fn after_trim(self, idx: LogIndex) -> StorageResult<LogBounds> {
        if idx < self.compacted_idx {
            return Err(self.out_of_range(idx, idx));
        }
        Ok(LogBounds { compacted_idx: idx, log_end: self.log_end.max(idx) })
    }

    pub(crate) fn out_of_range(self, from: LogIndex, to: LogIndex) -> StorageError {
        StorageError::OutOfRange { from, to, compacted_idx: self.compacted_idx, log_end: self.log_end }
    }
}

/// A `usize` length as a log distance. Lossless on every platform Rust supports (<= 64 bits).
pub(crate) fn length_as_index(length: usize) -> LogIndex {
    LogIndex::try_from(length).expect("a usize length fits in a u64 log index")
}

/// A log distance that is known to be at most a vector length, as a vector position.
pub(crate) fn index_as_position(distance: LogIndex) -> usize {
    usize::try_from(distance).expect("a distance bounded by a Vec length fits in usize")
}
