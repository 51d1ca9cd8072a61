//! Small shared types: ids, indices, quorums, and what a log read returns.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::storage::StopSign;

/// A server's id. Any non-zero value; ids need not be contiguous.
pub type NodeId = u64;
/// Identifies one configuration (membership) of the cluster. Non-zero.
pub type ConfigurationId = u32;
/// An absolute position in the replicated log, counted from 0 and never reset by compaction.
pub type LogIndex = u64;

/// Identifies one proposal for its whole life: the node where `append` was called and that
/// node's counter. It travels with the entry in every message and is stored with it, so a
/// node can tell exactly whether *its* proposal was decided, and at which index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ProposalId {
    /// The node whose `append` created the proposal.
    pub node: NodeId,
    /// That node's proposal counter (starts at 1 after each start of the process).
    pub seq: u64,
    /// The process incarnation of the proposer: distinguishes proposals made before and after a
    /// restart, whose counters start again.
    pub incarnation: u64,
}

impl fmt::Display for ProposalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}/{}", self.node, self.incarnation, self.seq)
    }
}

/// One slot of the log as it is stored and replicated: the user's entry and its proposal id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal<T> {
    /// Who proposed this entry.
    pub id: ProposalId,
    /// The user's entry.
    pub entry: T,
}

/// What a read of one log position returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogEntry<T, S> {
    /// A decided entry: it is durable on a quorum and will never change.
    Decided(T),
    /// An accepted entry that is not (yet known to be) decided; it may still be replaced.
    Undecided(T),
    /// The position was trimmed away without a snapshot.
    Trimmed(TrimmedIndex),
    /// The position is covered by a snapshot.
    Snapshotted(SnapshottedEntry<S>),
    /// The StopSign that seals this configuration's log; `true` once it is decided.
    StopSign(StopSign, bool),
}

/// The index up to which (exclusive) the log was trimmed.
pub type TrimmedIndex = LogIndex;

/// A snapshot covering the log prefix `[0, trimmed_idx)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshottedEntry<S> {
    /// The first index not covered by the snapshot.
    pub trimmed_idx: LogIndex,
    /// The snapshot itself.
    pub snapshot: S,
}

/// Quorum sizes for the two phases. With majorities both are `n / 2 + 1`; flexible quorums
/// trade one for the other as long as every read quorum meets every write quorum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlexibleQuorum {
    /// Size of a Prepare (read) quorum, the leader included.
    pub read_quorum_size: usize,
    /// Size of an Accept (write) quorum, the leader included.
    pub write_quorum_size: usize,
}

/// The quorum arithmetic of one configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quorum {
    /// Promises needed (own included) to finish the Prepare phase.
    pub read: usize,
    /// Acceptances needed (own included) to decide.
    pub write: usize,
}

impl Quorum {
    /// Majority quorums for a cluster of `n` servers.
    pub fn majority(n: usize) -> Quorum {
        Quorum { read: n / 2 + 1, write: n / 2 + 1 }
    }

    /// Flexible quorums; the caller has validated them against the cluster size.
    pub fn flexible(q: FlexibleQuorum) -> Quorum {
        Quorum { read: q.read_quorum_size, write: q.write_quorum_size }
    }

    /// True if `count` servers form a read (Prepare) quorum.
    pub fn is_read_quorum(&self, count: usize) -> bool {
        count >= self.read
    }

    /// True if `count` servers form a write (Accept) quorum.
    pub fn is_write_quorum(&self, count: usize) -> bool {
        count >= self.write
    }
}
