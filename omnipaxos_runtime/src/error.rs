//! Typed errors, one enum per operation.
//!
//! An `append` outcome is either definite (the entry is certainly not in the log, so a retry
//! cannot duplicate it) or indeterminate (it may still be decided); [`AppendError::is_definite`]
//! tells which. An unknown outcome is never reported as a plain failure.

use std::{io, net::SocketAddr, time::Duration};

use omnipaxos_core::sequence_paxos::CreateError;
use omnipaxos_storage::persistent_storage::OpenError;

use crate::config::NodeConfigError;

/// Why an `append` did not resolve to a log index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// No leader that reaches a quorum is known to this node (an election is under way or
    /// the node is partitioned). Definite: the entry was not handed to the replica.
    #[error("no leader reachable; the entry was not appended")]
    NotLeaderReachable,
    /// The log is sealed by a StopSign (a reconfiguration ended this configuration). Definite.
    #[error("the log is sealed by a reconfiguration; the entry was not appended")]
    Dropped,
    /// The entry may or may not be decided. Treat it like a timed-out request: read the log
    /// (or make the entry idempotent) before retrying.
    #[error("outcome unknown: {0}")]
    Indeterminate(IndeterminateCause),
    /// The node is shutting down and did not hand the entry to the replica. Definite.
    #[error("the node is shutting down; the entry was not appended")]
    ShuttingDown,
    /// A queue is full: the entry waited `append_timeout` for room, or `try_append` found no
    /// room, or the replica's proposal buffer was full. Definite.
    #[error("overloaded; the entry was not appended")]
    Overloaded,
    /// The replica stopped after a storage failure (fail-stop); restart the node. Definite.
    #[error("the replica stopped after a storage failure; the entry was not appended")]
    Stopped,
    /// This node is a learner (it lost storage it may have acknowledged) and cannot propose;
    /// append at another node. Definite.
    #[error("this node is a learner and cannot propose; the entry was not appended")]
    Learner,
}

impl AppendError {
    /// True if the entry is certainly not in the log (a retry cannot duplicate it).
    pub fn is_definite(&self) -> bool {
        !matches!(self, AppendError::Indeterminate(_))
    }
}

/// Why a [`crate::NodeHandle::read_barrier`] did not give a read index. Reads change nothing,
/// so every one of these may simply be retried (possibly at another node).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// No read index within the core's `read_timeout_ticks`: no leader reachable, or it could
    /// not confirm its leadership with a quorum.
    #[error("no read index in time: no leader could confirm its leadership")]
    TimedOut,
    /// The leader changed while the read waited for its confirmation.
    #[error("the leader changed while the read waited")]
    LeaderChanged,
    /// The configuration ended (a decided StopSign) before the read could be confirmed in it.
    #[error("the configuration ended before the read was confirmed")]
    Reconfigured,
    /// The read queue or the core's read buffer is full.
    #[error("overloaded")]
    Overloaded,
    /// The node is shutting down.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// The replica stopped after a storage failure.
    #[error("the replica stopped after a storage failure")]
    Stopped,
}

/// Why an outcome is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IndeterminateCause {
    /// No outcome arrived within `append_timeout` after the entry was queued.
    #[error("no outcome within {0:?}")]
    Timeout(Duration),
    /// The node shut down after the entry was handed to the replica.
    #[error("the node shut down while the entry was in flight")]
    Shutdown,
    /// A snapshot replaced this node's log while the entry was in flight (the core's
    /// `DropReason::Indeterminate`).
    #[error("a snapshot replaced the log while the entry was in flight")]
    Snapshot,
    /// The storage failed while the entry was being written or was in flight.
    #[error("the storage failed while the entry was in flight")]
    StorageFailure,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is not usable.
    #[error("invalid configuration: {0}")]
    Config(#[from] NodeConfigError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The configured listen address.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The data directory could not be opened.
    #[error("cannot open the data directory: {0}")]
    Storage(#[from] OpenError),
    /// The replica could not be created over its storage.
    #[error("cannot create the replica: {0}")]
    Replica(#[from] CreateError),
    /// The replica thread could not be spawned or ended before it was ready.
    #[error("the replica thread failed to start: {0}")]
    Thread(io::Error),
    /// `Node::start` was called outside a tokio runtime.
    #[error("Node::start must run inside a tokio runtime")]
    NoRuntime,
    /// The data directory reports that acknowledged state (a promise, an accepted entry) may
    /// have been lost (its log was replaced, or its tail was damaged in a way that cannot be
    /// ruled out), and [`crate::NodeConfig::lost_storage`] says to refuse. Rejoining as a voter
    /// could break agreement; start it with [`crate::LostStoragePolicy::StartAsLearner`].
    #[error(
        "the data directory may have lost acknowledged state ({report:?}); refusing to start as a \
         voter (start it as a learner instead)"
    )]
    AcknowledgedStateMayBeLost {
        /// What the storage found when it opened.
        report: Box<omnipaxos_storage::persistent_storage::OpenReport>,
    },
}
