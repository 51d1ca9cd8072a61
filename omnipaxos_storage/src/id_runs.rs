//! Proposal ids of a log stored as runs: a few words per run instead of 24 bytes per entry.
//!
//! Entries one proposer appends in one batch have consecutive ids (same node and incarnation,
//! sequence numbers one apart), and a leader's own entries stay consecutive across batches, so
//! a log of millions of entries usually holds a handful of runs. A storage keeps its entries as
//! a plain `Vec<T>` next to an [`IdRuns`]: the per-entry cost of the ids drops from 24 bytes to
//! 40 bytes per run.

use std::collections::VecDeque;

use omnipaxos_core::util::{LogIndex, ProposalId};

/// `len` entries from `first_idx` whose ids are `first`, `first` + 1, ... (sequence numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdRun {
    /// The log index of the run's first entry.
    pub first_idx: LogIndex,
    /// The id of the run's first entry.
    pub first: ProposalId,
    /// Entries in the run; at least 1.
    pub len: u64,
}

impl IdRun {
    /// One past the run's last index.
    pub fn end_idx(&self) -> LogIndex {
        self.first_idx + self.len
    }

    /// The id at `idx`, which the run covers.
    fn id_at(&self, idx: LogIndex) -> ProposalId {
        debug_assert!(idx >= self.first_idx && idx < self.end_idx());
        ProposalId { seq: self.first.seq + (idx - self.first_idx), ..self.first }
    }

    /// True if `id` at `idx` continues this run.
    fn continues(&self, idx: LogIndex, id: &ProposalId) -> bool {
        idx == self.end_idx()
            && id.node == self.first.node
            && id.incarnation == self.first.incarnation
            && self.first.seq.checked_add(self.len) == Some(id.seq)
    }
}

/// The ids of the log `[start, end)` as runs, in index order, covering it without gaps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdRuns {
    runs: VecDeque<IdRun>,
}

impl IdRuns {
    /// Number of runs (what the ids cost in memory: about 40 bytes each).
    pub fn run_count(&self) -> usize {
        self.runs.len()
    }

    /// The runs, in index order.
    pub fn runs(&self) -> impl Iterator<Item = &IdRun> {
        self.runs.iter()
    }

    /// Records `id` at `idx`, which must be one past the last recorded index (or any index if
    /// none is recorded).
    pub fn push(&mut self, idx: LogIndex, id: ProposalId) {
        if let Some(last) = self.runs.back_mut() {
            assert_eq!(idx, last.end_idx(), "ids are recorded in index order without gaps");
            if last.continues(idx, &id) {
                last.len += 1;
                return;
            }
        }
        self.runs.push_back(IdRun { first_idx: idx, first: id, len: 1 });
    }

    /// Forgets the ids at `from_idx` and after.
    pub fn truncate(&mut self, from_idx: LogIndex) {
        while let Some(last) = self.runs.back_mut() {
            if last.first_idx >= from_idx {
                self.runs.pop_back();
            } else {
                last.len = last.len.min(from_idx - last.first_idx);
                break;
            }
        }
    }

    /// Forgets the ids before `to_idx`.
    pub fn trim(&mut self, to_idx: LogIndex) {
        while let Some(first) = self.runs.front_mut() {
            if first.end_idx() <= to_idx {
                self.runs.pop_front();
            } else {
                if first.first_idx < to_idx {
                    let cut = to_idx - first.first_idx;
                    first.first_idx = to_idx;
                    first.first.seq += cut;
                    first.len -= cut;
                }
                break;
            }
        }
    }

    /// Forgets every id.
    pub fn clear(&mut self) {
        self.runs.clear();
    }

    /// The ids of `[from, to)`, which must be recorded.
    pub fn ids(&self, from: LogIndex, to: LogIndex) -> impl Iterator<Item = ProposalId> + '_ {
        let start = self.runs.partition_point(|r| r.end_idx() <= from);
        self.runs
            .range(start..)
            .take_while(move |r| r.first_idx < to)
            .flat_map(move |r| (r.first_idx.max(from)..r.end_idx().min(to)).map(|idx| r.id_at(idx)))
    }

    /// Checks that the runs cover `[start, end)` without gaps (a broken invariant is a bug).
    pub fn check_covers(&self, start: LogIndex, end: LogIndex) {
        let mut next = start;
        for run in &self.runs {
            assert!(run.len >= 1, "empty id run");
            assert_eq!(run.first_idx, next, "id runs leave a gap or overlap");
            next = run.end_idx();
        }
        assert_eq!(next, end, "id runs do not reach the log end");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(node: u64, seq: u64) -> ProposalId {
        ProposalId { node, seq, incarnation: 1 }
    }

    #[test]
    fn consecutive_ids_share_a_run_and_read_back_exactly() {
        let mut runs = IdRuns::default();
        let ids: Vec<ProposalId> = (1..=100).map(|s| id(1, s)).chain((7..=9).map(|s| id(2, s))).collect();
        for (i, id) in ids.iter().enumerate() {
            runs.push(10 + i as u64, *id);
        }
        assert_eq!(runs.run_count(), 2);
        runs.check_covers(10, 113);
        assert_eq!(runs.ids(10, 113).collect::<Vec<_>>(), ids);
        assert_eq!(runs.ids(105, 112).collect::<Vec<_>>(), ids[95..102].to_vec());
    }

    #[test]
    fn truncate_and_trim_cut_runs_in_the_middle() {
        let mut runs = IdRuns::default();
        for s in 0..10 {
            runs.push(s, id(1, 100 + s));
        }
        for s in 10..20 {
            runs.push(s, id(3, s));
        }
        runs.truncate(15);
        runs.check_covers(0, 15);
        runs.trim(4);
        runs.check_covers(4, 15);
        let expected: Vec<ProposalId> =
            (4..10).map(|s| id(1, 100 + s)).chain((10..15).map(|s| id(3, s))).collect();
        assert_eq!(runs.ids(4, 15).collect::<Vec<_>>(), expected);
        runs.truncate(4);
        runs.check_covers(4, 4);
        assert_eq!(runs.run_count(), 0);
    }
}
