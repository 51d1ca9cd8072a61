//! Typed errors, one enum per operation.

use crate::{
    storage::{ClusterConfig, StorageError},
    util::{LogIndex, NodeId},
};

pub use crate::config::ConfigError;

/// Why `append` or `reconfigure` did not take a proposal. The proposal is handed back.
#[derive(Debug, thiserror::Error)]
pub enum ProposeErr<T> {
    /// A StopSign is accepted: this configuration's log takes no more entries.
    #[error("the log is sealed by a StopSign; propose in the next configuration")]
    PendingReconfigEntry(T),
    /// A StopSign is already accepted; a second reconfiguration cannot be proposed.
    #[error("a reconfiguration is already pending")]
    PendingReconfigConfig(ClusterConfig, Option<Vec<u8>>),
    /// The proposed next configuration is invalid.
    #[error("invalid next configuration: {0}")]
    ConfigError(ConfigError, ClusterConfig, Option<Vec<u8>>),
    /// The next configuration's id must be greater than the current one.
    #[error("the next configuration id {} is not greater than the current one", .0.configuration_id)]
    ConfigurationIdNotIncreasing(ClusterConfig, Option<Vec<u8>>),
    /// Too many proposals wait (`buffer_size`); try again after outgoing messages were sent.
    #[error("too many pending proposals (limit {1})")]
    BufferFull(T, usize),
    /// The storage failed earlier; this replica accepts nothing until it is restarted.
    #[error("the replica stopped after a storage failure")]
    Stopped(T),
    /// This replica is a learner (it lost its storage): it cannot propose; propose at another
    /// replica.
    #[error("a learner cannot propose; propose at a voting replica")]
    Learner(T),
    /// This replica is a learner and cannot propose a reconfiguration.
    #[error("a learner cannot propose a reconfiguration")]
    LearnerReconfig(ClusterConfig, Option<Vec<u8>>),
    /// Writing the proposal failed; the replica has stopped and the proposal is lost with it.
    #[error("storage failed: {0}")]
    Storage(#[source] StorageError),
}

/// Why `read_index` refused a read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReadErr {
    /// Too many reads wait (`buffer_size`); take read outcomes and try again.
    #[error("too many pending reads (limit {0})")]
    BufferFull(usize),
    /// The storage failed earlier; this replica serves nothing until it is restarted.
    #[error("the replica stopped after a storage failure")]
    Stopped,
}

/// Why `trim` or `snapshot` refused.
#[derive(Debug, thiserror::Error)]
pub enum CompactionErr {
    /// The index is not decided yet.
    #[error("index {0} is not decided")]
    UndecidedIndex(LogIndex),
    /// The index is already compacted.
    #[error("index {0} is already trimmed")]
    TrimmedIndex(LogIndex),
    /// Not every server has decided the index; the highest index they all decided is given.
    #[error("not every server has decided the index; the minimum decided is {0}")]
    NotAllDecided(LogIndex),
    /// Only the leader can trim; the current leader is given (0 if unknown).
    #[error("only the leader can trim; the current leader is {0}")]
    NotCurrentLeader(NodeId),
    /// Snapshots are not enabled (`S::use_snapshots()` is false).
    #[error("this log's snapshot type does not snapshot")]
    SnapshotsDisabled,
    /// The storage failed; the replica has stopped.
    #[error("storage failed: {0}")]
    Storage(#[from] StorageError),
}

/// The replica hit a storage failure and stopped (fail-stop). Restart it from its storage.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// A write or flush failed.
    #[error("storage failed: {0}")]
    Storage(#[from] StorageError),
    /// An earlier storage failure stopped the replica.
    #[error("the replica stopped after an earlier storage failure")]
    Stopped,
}
