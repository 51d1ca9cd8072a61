//! Reading the log: single entries, ranges and the decided suffix.

use std::{fmt::Debug, ops::Bound, ops::RangeBounds};

use super::SequencePaxos;
use crate::{
    storage::{Snapshot, Storage},
    util::{LogEntry, LogIndex, SnapshottedEntry},
};

impl<T, S, B> SequencePaxos<T, S, B>
where
    T: Clone + Debug,
    S: Snapshot<T>,
    B: Storage<T, S>,
{
    /// The entry at `idx`, or `None` beyond the accepted index. A compacted position reads as
    /// `Trimmed` or `Snapshotted`; the StopSign as `StopSign(ss, decided)`.
    pub fn read(&self, idx: LogIndex) -> Option<LogEntry<T, S>> {
        self.read_entries(idx..=idx).and_then(|mut entries| entries.pop())
    }

    /// The entries in `range`, or `None` if the range is empty or reaches beyond the accepted
    /// index. A compacted part of the range reads as one `Trimmed`/`Snapshotted` element first.
    pub fn read_entries<R: RangeBounds<LogIndex>>(&self, range: R) -> Option<Vec<LogEntry<T, S>>> {
        let accepted_idx = self.ctx.state.accepted_idx();
        let from = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.checked_add(1)?,
            Bound::Unbounded => 0,
        };
        let to = match range.end_bound() {
            Bound::Included(&i) => i.checked_add(1)?,
            Bound::Excluded(&i) => i,
            Bound::Unbounded => accepted_idx,
        };
        if from >= to || to > accepted_idx {
            return None;
        }
        let mut result = Vec::new();
        let state = &self.ctx.state;
        if from < state.compacted_idx {
            result.push(self.compacted_entry()?);
        }
        let entries_from = from.max(state.compacted_idx);
        let entries_to = to.min(state.log_end);
        if entries_from < entries_to {
            let entries = match self.ctx.storage.get_entries(entries_from, entries_to) {
                Ok(entries) => entries,
                Err(e) => {
                    tracing::error!(pid = self.ctx.pid, error = %e, "log read failed");
                    return None;
                }
            };
            let decided_idx = state.decided_idx;
            result.extend(entries.into_iter().enumerate().map(|(offset, p)| {
                if entries_from + (offset as LogIndex) < decided_idx {
                    LogEntry::Decided(p.entry)
                } else {
                    LogEntry::Undecided(p.entry)
                }
            }));
        }
        if to > state.log_end {
            let ss = state.stopsign.clone()?;
            result.push(LogEntry::StopSign(ss, state.stopsign_decided()));
        }
        Some(result)
    }

    /// The decided entries from `from_idx` on, or `None` unless `from_idx < decided_idx`.
    pub fn read_decided_suffix(&self, from_idx: LogIndex) -> Option<Vec<LogEntry<T, S>>> {
        let decided_idx = self.ctx.state.decided_idx;
        if from_idx >= decided_idx {
            return None;
        }
        self.read_entries(from_idx..decided_idx)
    }

    fn compacted_entry(&self) -> Option<LogEntry<T, S>> {
        let trimmed_idx = self.ctx.state.compacted_idx;
        match self.ctx.storage.get_snapshot() {
            Ok(Some(snapshot)) => Some(LogEntry::Snapshotted(SnapshottedEntry { trimmed_idx, snapshot })),
            Ok(None) => Some(LogEntry::Trimmed(trimmed_idx)),
            Err(e) => {
                tracing::error!(pid = self.ctx.pid, error = %e, "snapshot read failed");
                None
            }
        }
    }
}
