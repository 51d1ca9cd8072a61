//! What [`crate::NodeHandle::status`] reports.

use std::net::SocketAddr;

use omnipaxos_core::{
    ballot_leader_election::Ballot,
    util::{LogIndex, NodeId},
};

/// The state of the outgoing link to a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum LinkState {
    /// A connection attempt is under way.
    Connecting = 0,
    /// Connected: frames are written.
    Connected = 1,
    /// The last attempt failed or the connection was lost; waiting before the next attempt.
    Backoff = 2,
    /// The node is shutting down.
    Stopped = 3,
}

impl LinkState {
    pub(crate) fn from_u8(value: u8) -> Self {
        match value {
            0 => LinkState::Connecting,
            1 => LinkState::Connected,
            2 => LinkState::Backoff,
            _ => LinkState::Stopped,
        }
    }
}

/// One peer as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer's id.
    pub id: NodeId,
    /// The peer's configured address.
    pub addr: SocketAddr,
    /// The outgoing link's state.
    pub link: LinkState,
    /// Times the outgoing link came back after it was lost.
    pub reconnects: u64,
    /// Bytes queued for the peer and not yet written.
    pub queued_bytes: usize,
    /// The per-peer queue limit.
    pub queue_limit_bytes: usize,
    /// Frames written to the peer.
    pub frames_out: u64,
    /// Bytes written to the peer.
    pub bytes_out: u64,
    /// Frames received from the peer.
    pub frames_in: u64,
    /// Bytes received from the peer.
    pub bytes_in: u64,
    /// Frames for the peer that were dropped (queue full, link down, filtered, too large).
    pub dropped_frames: u64,
    /// The decided index the peer last reported (progress frames), if any.
    pub peer_decided_idx: Option<LogIndex>,
    /// The accepted index the peer last reported, if any.
    pub peer_accepted_idx: Option<LogIndex>,
    /// How many entries the peer's accepted index is behind this node's, as last reported
    /// (reports come every `progress_interval_ticks`, so it lags by up to that).
    pub lag_entries: Option<u64>,
}

/// How full each queue of the node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueStatus {
    /// Appends waiting for the replica thread.
    pub proposals: usize,
    /// Limit of `proposals`.
    pub proposals_limit: usize,
    /// Messages from the network waiting for the replica thread.
    pub inbound: usize,
    /// Limit of `inbound`.
    pub inbound_limit: usize,
    /// Decided batches waiting for the user.
    pub decided_batches: usize,
    /// Limit of `decided_batches`.
    pub decided_batches_limit: usize,
    /// Appends handed to the replica and waiting for their outcome.
    pub pending_appends: usize,
    /// Decided entries not yet handed to the decided stream.
    pub undelivered_entries: u64,
    /// Beyond this many undelivered entries, no new append is taken.
    pub undelivered_limit: u64,
}

/// A snapshot of one node. The replica's fields are as of the end of its last round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// This node's id.
    pub node_id: NodeId,
    /// The leader this node follows, if any.
    pub leader: Option<NodeId>,
    /// True if that leader looks ready (see `OmniPaxos::get_current_leader`): appends are
    /// taken only then.
    pub leader_ready: bool,
    /// True if this node is the leader in its accept phase.
    pub is_leader: bool,
    /// The promised ballot.
    pub ballot: Ballot,
    /// Length of the decided prefix.
    pub decided_idx: LogIndex,
    /// The accepted index (log end).
    pub accepted_idx: LogIndex,
    /// Entries `[0, delivered_idx)` were handed to the decided stream.
    pub delivered_idx: LogIndex,
    /// True after a storage failure: the replica refuses all work until restarted.
    pub stopped: bool,
    /// Rounds the replica thread ran.
    pub rounds: u64,
    /// Storage flushes (each is one `fdatasync` with `PersistentStorage` when writes were
    /// pending).
    pub flushes: u64,
    /// Time spent in those flushes.
    pub flush_time: std::time::Duration,
    /// Incoming frames rejected (each closed its connection).
    pub rejected_frames: u64,
    /// Every peer.
    pub peers: Vec<PeerStatus>,
    /// Queue depths.
    pub queues: QueueStatus,
}

impl Status {
    /// The peer with `id`.
    pub fn peer(&self, id: NodeId) -> Option<&PeerStatus> {
        self.peers.iter().find(|peer| peer.id == id)
    }
}
