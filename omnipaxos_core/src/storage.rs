//! The storage port: the only way the core makes state durable.
//!
//! The core calls [`Storage`] synchronously from its handlers. Writes may be buffered by the
//! implementation; they become durable only when [`Storage::flush`] returns `Ok`. The core calls
//! `flush` exactly once before it releases any outgoing message (see
//! [`crate::sequence_paxos::SequencePaxos::take_outgoing_messages`]), so a durable implementation
//! turns every batch of handled messages into one fsync: group commit.
//!
//! Rules every implementation follows (the conformance suite in `omnipaxos_storage` checks them):
//! - `write_atomically` applies all of its ops in order or none of them, also across a crash: after
//!   recovery either every op of a call is visible or none is, and calls become durable in order.
//! - After any failed write or flush the storage refuses every later write with an error
//!   (fail-stop). The core then stops too: it never retries, never lets memory and disk disagree.
//! - Reads outside the stored range return [`StorageError::OutOfRange`], never a panic.

use std::{error::Error, fmt::Debug, path::PathBuf};

use serde::{Deserialize, Serialize};

use crate::{
    ballot::Ballot,
    util::{ConfigurationId, FlexibleQuorum, LogIndex, NodeId, Proposal},
};

/// Result of a storage call.
pub type StorageResult<V> = Result<V, StorageError>;

/// Why a storage call failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The operating system reported an I/O error.
    #[error("storage I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// An earlier write or flush failed; the storage refuses all writes from then on.
    #[error("storage refuses writes after an earlier failure")]
    Poisoned,
    /// Stored data failed verification.
    #[error("corrupt data in {file} at offset {offset}: {reason}")]
    Corrupt {
        /// The file holding the bad data.
        file: PathBuf,
        /// Byte offset of the bad record.
        offset: u64,
        /// What check failed.
        reason: &'static str,
    },
    /// A read or write named indices outside `[compacted_idx, log_end]`.
    #[error("index range {from}..{to} is outside the stored log {compacted_idx}..{log_end}")]
    OutOfRange {
        /// First requested index.
        from: LogIndex,
        /// One past the last requested index.
        to: LogIndex,
        /// First stored index.
        compacted_idx: LogIndex,
        /// One past the last stored index.
        log_end: LogIndex,
    },
    /// A write named an identity other than the one this storage records (see
    /// [`StorageOp::SetIdentity`]).
    #[error("storage identity mismatch: the storage is of {stored}, the write names {given}")]
    IdentityMismatch {
        /// The identity the storage records.
        stored: ReplicaIdentity,
        /// The identity the write named.
        given: ReplicaIdentity,
    },
    /// Any other failure of a user-supplied storage.
    #[error("storage failed: {0}")]
    Other(Box<dyn Error + Send + Sync>),
}

/// State machine snapshots for log compaction.
///
/// `()` implements this trait with `use_snapshots() == false`: a cluster with `S = ()` only
/// trims, never snapshots.
pub trait Snapshot<T>: Clone + Debug {
    /// Builds a snapshot from consecutive decided entries.
    fn create(entries: &[T]) -> Self;
    /// Applies `delta`, a snapshot of the entries that directly follow `self`.
    fn merge(&mut self, delta: Self);
    /// Whether this type really snapshots. If false, the core never calls `create` or `merge`.
    fn use_snapshots() -> bool;
}

impl<T> Snapshot<T> for () {
    fn create(_entries: &[T]) -> Self {}
    fn merge(&mut self, _delta: Self) {}
    fn use_snapshots() -> bool {
        false
    }
}

/// A snapshot as it travels from a leader to a lagging follower.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotType<S> {
    /// Replaces the receiver's whole decided prefix.
    Complete(S),
    /// Extends the receiver's own decided prefix (from its decided index on).
    Delta(S),
}

/// The membership of one configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterConfig {
    /// This configuration's id; a StopSign's next configuration has a greater one.
    pub configuration_id: ConfigurationId,
    /// Every server of the configuration.
    pub nodes: Vec<NodeId>,
    /// Optional flexible quorum sizes; majorities otherwise.
    pub flexible_quorum: Option<FlexibleQuorum>,
}

/// The last entry of a configuration's log: it seals the log and names the next configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopSign {
    /// The configuration that takes over once this StopSign is decided.
    pub next_config: ClusterConfig,
    /// Opaque data for the user, decided together with the StopSign.
    pub metadata: Option<Vec<u8>>,
}

impl StopSign {
    /// Creates a StopSign.
    pub fn with(next_config: ClusterConfig, metadata: Option<Vec<u8>>) -> StopSign {
        StopSign { next_config, metadata }
    }
}

/// Whose a storage is: the replica that wrote it. The core writes it with its first write and
/// refuses, at every later start, a storage whose identity differs from its configuration's: a
/// replica must never take another node's, configuration's or cluster's history as its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReplicaIdentity {
    /// The user-chosen cluster id (`SequencePaxosConfig::set_cluster_id`; 0 if unset).
    pub cluster_id: u64,
    /// The configuration the log belongs to.
    pub configuration_id: ConfigurationId,
    /// The replica's node id.
    pub pid: NodeId,
}

impl std::fmt::Display for ReplicaIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cluster {} configuration {} node {}", self.cluster_id, self.configuration_id, self.pid)
    }
}

/// One change to durable state. A `write_atomically` call applies a list of them as one unit.
#[derive(Clone, Debug)]
pub enum StorageOp<T, S> {
    /// Appends entries at the end of the log.
    AppendEntries(Vec<Proposal<T>>),
    /// Truncates the log to `from_idx` (must be in `[compacted_idx, log_end]`), then appends.
    AppendOnPrefix(LogIndex, Vec<Proposal<T>>),
    /// The highest ballot this node promised.
    SetPromise(Ballot),
    /// The ballot in which the node's log was last synchronised by a leader.
    SetAcceptedRound(Ballot),
    /// Length of the decided prefix.
    SetDecidedIdx(LogIndex),
    /// The StopSign after the last entry, or none.
    SetStopSign(Option<StopSign>),
    /// Removes the entries `[compacted_idx, idx)`; `idx` becomes the compacted index. `idx` may
    /// exceed `log_end` (a snapshot from a leader can cover more than the local log): the log is
    /// then empty and starts at `idx`.
    Trim(LogIndex),
    /// The snapshot of the compacted prefix.
    SetSnapshot(Option<S>),
    /// This process's incarnation number, bumped at every start.
    SetIncarnation(u64),
    /// Whose storage this is. Written once, with the replica's first write; a storage that
    /// records its owner in another way (e.g. in file headers) refuses a different identity
    /// with an error.
    SetIdentity(ReplicaIdentity),
}

/// Durable state of one replica. See the module docs for the contract.
///
/// Indices are absolute: entry `i` stays entry `i` after compaction.
pub trait Storage<T, S> {
    /// Applies `ops` in order as one atomic unit (all or nothing, also across crashes), taking
    /// them out of the vector: on `Ok` it is left empty, its capacity kept for the caller's
    /// next write (the core reuses one vector, so a write allocates nothing). After an error
    /// its content is unspecified.
    fn write_atomically(&mut self, ops: &mut Vec<StorageOp<T, S>>) -> StorageResult<()>;
    /// Makes every write that returned `Ok` durable. Returns only when they are.
    fn flush(&mut self) -> StorageResult<()>;

    /// The entries `[from, to)`. Errors with `OutOfRange` unless
    /// `compacted_idx <= from <= to <= log_end`.
    fn get_entries(&self, from: LogIndex, to: LogIndex) -> StorageResult<Vec<Proposal<T>>>;
    /// One past the last stored entry (the StopSign is not counted).
    fn get_log_end(&self) -> StorageResult<LogIndex>;
    /// The first stored index: everything below it was trimmed or snapshotted.
    fn get_compacted_idx(&self) -> StorageResult<LogIndex>;
    /// The promise, if one was ever stored.
    fn get_promise(&self) -> StorageResult<Option<Ballot>>;
    /// The accepted round, if one was ever stored.
    fn get_accepted_round(&self) -> StorageResult<Option<Ballot>>;
    /// The decided index (0 if never stored).
    fn get_decided_idx(&self) -> StorageResult<LogIndex>;
    /// The StopSign, if any.
    fn get_stopsign(&self) -> StorageResult<Option<StopSign>>;
    /// The snapshot of the compacted prefix, if any.
    fn get_snapshot(&self) -> StorageResult<Option<S>>;
    /// The incarnation number (0 if never stored).
    fn get_incarnation(&self) -> StorageResult<u64>;
    /// Whose storage this is, if recorded (see [`ReplicaIdentity`]).
    fn get_identity(&self) -> StorageResult<Option<ReplicaIdentity>>;
}
