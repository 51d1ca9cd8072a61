//! What a [`crate::Node`] starts from: its identity, its peers, its limits and its storage.
//!
//! Every limit is a named field with its unit in the name (`peer_queue_limit_bytes`), and
//! [`NodeConfig::validate`] checks each one before anything is started.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use omnipaxos_core::{
    config::ConfigError as CoreConfigError,
    sequence_paxos::SequencePaxosConfig,
    util::{ConfigurationId, NodeId},
    OmniPaxosConfig,
};
use omnipaxos_storage::persistent_storage::OpenMode;

/// Default time between two ticks of the replica (the core counts its timeouts in ticks).
pub const DEFAULT_TICK_INTERVAL: Duration = Duration::from_millis(10);
/// Default ticks per heartbeat round of leader election, which is also the election timeout:
/// 300 ms with the default tick. The core's own default (10 ticks, 100 ms here) left leaders
/// briefly "not ready" under full load on a 2-core machine shared with builds: a round that
/// runs long delays heartbeat replies past the round, and appends are refused meanwhile.
pub const DEFAULT_ELECTION_TIMEOUT_TICKS: u64 = 30;
/// Default time an `append` waits for its outcome before it reports `Indeterminate`.
pub const DEFAULT_APPEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Default largest frame (header and payload), as read from or written to a socket.
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 16 << 20;
/// Default limit on bytes queued for one peer and not yet written to its socket.
pub const DEFAULT_PEER_QUEUE_LIMIT_BYTES: usize = 32 << 20;
/// Default limit on appends waiting for the replica thread to take them.
pub const DEFAULT_PROPOSAL_QUEUE_LIMIT: usize = 8192;
/// Default limit on read barriers waiting for the replica thread.
pub const DEFAULT_READ_QUEUE_LIMIT: usize = 4096;
/// Default limit on decoded messages (and link events) waiting for the replica thread.
pub const DEFAULT_INBOUND_QUEUE_LIMIT: usize = 4096;
/// Default limit on decided batches waiting for the user's state machine.
pub const DEFAULT_DECIDED_QUEUE_LIMIT_BATCHES: usize = 64;
/// Default limit on entries in one decided batch.
pub const DEFAULT_DECIDED_BATCH_LIMIT_ENTRIES: usize = 1024;
/// Default limit on decided entries not yet handed to the decided stream before the replica
/// stops taking new appends.
pub const DEFAULT_UNDELIVERED_LIMIT_ENTRIES: u64 = 65_536;
/// Default limit on inputs (messages or appends) the replica thread takes in one round.
pub const DEFAULT_ROUND_LIMIT_INPUTS: usize = 16_384;
/// Default limit on simultaneously open inbound connections.
pub const DEFAULT_INBOUND_CONNECTION_LIMIT: usize = 64;
/// Default ticks between two progress reports (decided and accepted index) to each peer.
pub const DEFAULT_PROGRESS_INTERVAL_TICKS: u64 = 10;

/// A peer: its node id and the address it listens on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerConfig {
    /// The peer's node id (non-zero, not this node's).
    pub id: NodeId,
    /// Where the peer accepts connections.
    pub addr: SocketAddr,
}

/// Where the replica keeps its durable state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageConfig {
    /// `PersistentStorage` (a write-ahead log with one `fdatasync` per round) in `data_dir`.
    Persistent {
        /// The data directory.
        data_dir: PathBuf,
        /// `Bootstrap` for a node's first start (creates the log, refuses an existing one),
        /// `Restart` afterwards (the log must be there: a node that lost its log must not
        /// come back as if it never promised), `Replace` for a node whose log was lost.
        mode: OpenMode,
        /// Size of one segment file; see `PersistentStorageConfig::segment_size_bytes`.
        segment_size_bytes: u64,
        /// The type tag recorded in the log (`PersistentStorageConfig::type_tag`): `None` uses
        /// the Rust type names, which may change with the compiler; a service whose logs must
        /// outlive toolchain upgrades sets a stable one (e.g. `"kv-command-v1"`).
        type_tag: Option<String>,
    },
    /// `MemoryStorage`: nothing survives the process. For tests and benchmarks.
    Memory,
}

impl StorageConfig {
    /// `PersistentStorage` in `data_dir`, which must already hold this node's log (restart).
    pub fn persistent(data_dir: impl Into<PathBuf>) -> Self {
        Self::persistent_with_mode(data_dir, OpenMode::Restart)
    }

    /// `PersistentStorage` created in `data_dir` (a node's first start; an existing log is
    /// refused).
    pub fn persistent_bootstrap(data_dir: impl Into<PathBuf>) -> Self {
        Self::persistent_with_mode(data_dir, OpenMode::Bootstrap)
    }

    /// `PersistentStorage` in `data_dir` opened with `mode`, default segment size.
    pub fn persistent_with_mode(data_dir: impl Into<PathBuf>, mode: OpenMode) -> Self {
        StorageConfig::Persistent {
            data_dir: data_dir.into(),
            mode,
            segment_size_bytes: omnipaxos_storage::persistent_storage::SEGMENT_SIZE_DEFAULT_BYTES,
            type_tag: None,
        }
    }
}

/// What a node does when its storage reports that acknowledged state may have been lost
/// (`OpenReport::acknowledged_state_may_be_lost`: a replaced log, or a damaged tail that cannot
/// be ruled out). A replica that already is a learner always starts (as a learner).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LostStoragePolicy {
    /// Refuse to start ([`crate::StartError::AcknowledgedStateMayBeLost`]): the default, so
    /// that an operator decides.
    #[default]
    Refuse,
    /// Start as a learner (`SequencePaxosConfig::set_learner`): it learns the decided log and
    /// serves reads, but never votes or proposes again in this configuration.
    StartAsLearner,
}

/// Reconnection backoff and dead-connection detection.
///
/// The delay doubles from `initial` up to `max` after each failed attempt; each delay is drawn
/// uniformly from `[delay / 2, delay]` (jitter), so that peers that lost each other at the same
/// moment do not retry in lockstep.
///
/// A link whose packets are dropped (a partition, a pulled cable) does not fail a TCP
/// connection: the kernel retransmits with exponential backoff (200 ms, 400 ms, 800 ms, ...),
/// so after a partition of a few seconds heals, a connection can stay silent for seconds more
/// — measured on real processes: a new leader elected 1.6 s (5.5 election timeouts) after a
/// 1.5 s partition healed. So an outgoing connection whose sent data stays unacknowledged for
/// `unacked_timeout` is closed (`TCP_USER_TIMEOUT`) and dialled again, each attempt bounded by
/// `connect_timeout` and `max` apart at most: a healed link carries traffic again within about
/// `max + connect_timeout`. The defaults suit a LAN (round trips far below `connect_timeout`);
/// `unacked_timeout` stays well above the kernel's minimum retransmission timeout (200 ms), so
/// a lost segment or two do not cost a connection, and it also ends a connection to a peer
/// that takes no data for that long (Linux ≥ 5.11 applies it to zero-window probes): the rounds
/// queued for it are dropped and the peer is resynchronised when it is back. Raise all three
/// for links with long round trips. On the other end, a newer incoming connection from a peer closes
/// the older one, and one that brings nothing for `idle_timeout` (peers send heartbeats every
/// round) is closed too, so dead connections hold no slot of `inbound_connection_limit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffConfig {
    /// First delay after a failed attempt.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
    /// Time a single connection attempt may take.
    pub connect_timeout: Duration,
    /// Sent data unacknowledged this long closes the outgoing connection (Linux only).
    pub unacked_timeout: Duration,
    /// An incoming connection silent this long is closed.
    pub idle_timeout: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(200),
            connect_timeout: Duration::from_millis(200),
            unacked_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(10),
        }
    }
}

/// Every queue's limit. See the crate docs for what happens when each is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest frame, header included; a larger incoming frame closes the connection, a larger
    /// outgoing message is dropped (and logged).
    pub max_frame_bytes: u32,
    /// Bytes queued for one peer's socket. Policy when full: the round's frames for that peer
    /// are dropped (the protocol resends); see the crate docs.
    pub peer_queue_limit_bytes: usize,
    /// Appends waiting for the replica thread. Policy when full: `append` waits (backpressure)
    /// until its timeout, then reports `Overloaded`; `try_append` reports it at once.
    pub proposal_queue_limit: usize,
    /// Read barriers waiting for the replica thread. Policy when full: `read_barrier` waits.
    pub read_queue_limit: usize,
    /// Messages from the network waiting for the replica thread. Policy when full: the
    /// connection's reader waits, so TCP flow control slows the sender.
    pub inbound_queue_limit: usize,
    /// Decided batches waiting for the user. Policy when full: the replica stops taking new
    /// appends once `undelivered_limit_entries` decided entries wait (a slow consumer slows
    /// proposals); the entries wait in storage, not in a queue.
    pub decided_queue_limit_batches: usize,
    /// Entries per decided batch.
    pub decided_batch_limit_entries: usize,
    /// Decided entries not yet handed to the decided stream beyond which no append is taken.
    pub undelivered_limit_entries: u64,
    /// Inputs taken in one round before the replica flushes and sends.
    pub round_limit_inputs: usize,
    /// Inbound connections open at once; more are closed on accept.
    pub inbound_connection_limit: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            peer_queue_limit_bytes: DEFAULT_PEER_QUEUE_LIMIT_BYTES,
            proposal_queue_limit: DEFAULT_PROPOSAL_QUEUE_LIMIT,
            read_queue_limit: DEFAULT_READ_QUEUE_LIMIT,
            inbound_queue_limit: DEFAULT_INBOUND_QUEUE_LIMIT,
            decided_queue_limit_batches: DEFAULT_DECIDED_QUEUE_LIMIT_BATCHES,
            decided_batch_limit_entries: DEFAULT_DECIDED_BATCH_LIMIT_ENTRIES,
            undelivered_limit_entries: DEFAULT_UNDELIVERED_LIMIT_ENTRIES,
            round_limit_inputs: DEFAULT_ROUND_LIMIT_INPUTS,
            inbound_connection_limit: DEFAULT_INBOUND_CONNECTION_LIMIT,
        }
    }
}

/// Everything a [`crate::Node`] starts from.
///
/// Build it with [`NodeConfig::new`], then change fields; the core's settings live in
/// `core` (its pid, peers and configuration id are set from the node's and must not be
/// changed there).
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// This node's id (non-zero).
    pub node_id: NodeId,
    /// A user-chosen id of the cluster: frames carrying another one are rejected, and the
    /// data directory records it.
    pub cluster_id: u64,
    /// Where this node accepts connections from its peers (default `127.0.0.1:0`).
    pub listen_addr: SocketAddr,
    /// The other nodes.
    pub peers: Vec<PeerConfig>,
    /// Time between ticks. Missed ticks are skipped, never replayed in a burst.
    pub tick_interval: Duration,
    /// How long `append` waits for an outcome.
    pub append_timeout: Duration,
    /// Ticks between two progress reports to each peer (used for `status()`'s lag).
    pub progress_interval_ticks: u64,
    /// After frames for a peer were dropped at its full queue, call the core's
    /// `reconnected(peer)` once the queue has drained to half, so the peer is resynchronised at
    /// once (default true). Off, recovery is left to the protocol's own mechanisms (sequence
    /// gaps, resend timeouts), which is slower but equally safe.
    pub resync_after_drop: bool,
    /// The core's settings (batching, timeouts in ticks, priority, quorums, ...).
    pub core: OmniPaxosConfig,
    /// Snapshot the decided prefix (the core's `snapshot`, on this node only) whenever this
    /// many decided entries delivered to the decided stream lie beyond the last snapshot; a
    /// peer that needs compacted entries is sent the snapshot instead. `None` (the default)
    /// never compacts. Has an effect only with a snapshot type other than `()`.
    pub snapshot_interval_entries: Option<u64>,
    /// What to do when the storage may have lost acknowledged state (default: refuse).
    pub lost_storage: LostStoragePolicy,
    /// Where durable state lives.
    pub storage: StorageConfig,
    /// Queue and frame limits.
    pub limits: Limits,
    /// Reconnection backoff.
    pub backoff: BackoffConfig,
}

impl NodeConfig {
    /// A configuration with the defaults: configuration id 1, listening on `127.0.0.1:0`,
    /// 10 ms ticks, heartbeat rounds of [`DEFAULT_ELECTION_TIMEOUT_TICKS`], memory storage. Set
    /// `storage` for a durable node.
    pub fn new(node_id: NodeId, cluster_id: u64, peers: Vec<PeerConfig>) -> Self {
        let mut sequence_paxos = SequencePaxosConfig::default();
        sequence_paxos.set_configuration_id(1);
        sequence_paxos.set_pid(node_id);
        sequence_paxos.set_cluster_id(cluster_id);
        sequence_paxos.set_peers(peers.iter().map(|peer| peer.id).collect());
        let mut core = OmniPaxosConfig::new(sequence_paxos);
        core.set_election_timeout_ticks(DEFAULT_ELECTION_TIMEOUT_TICKS);
        NodeConfig {
            node_id,
            cluster_id,
            listen_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            peers,
            tick_interval: DEFAULT_TICK_INTERVAL,
            append_timeout: DEFAULT_APPEND_TIMEOUT,
            progress_interval_ticks: DEFAULT_PROGRESS_INTERVAL_TICKS,
            resync_after_drop: true,
            core,
            snapshot_interval_entries: None,
            lost_storage: LostStoragePolicy::Refuse,
            storage: StorageConfig::Memory,
            limits: Limits::default(),
            backoff: BackoffConfig::default(),
        }
    }

    /// The configuration id the core runs in.
    pub fn configuration_id(&self) -> ConfigurationId {
        self.core.sequence_paxos.configuration_id()
    }

    /// Checks the node's fields, then the core's, then that they agree.
    pub fn validate(&self) -> Result<(), NodeConfigError> {
        self.core.validate()?;
        if self.core.sequence_paxos.cluster_id() != self.cluster_id {
            return Err(NodeConfigError::CoreClusterMismatch {
                cluster_id: self.cluster_id,
                core_cluster_id: self.core.sequence_paxos.cluster_id(),
            });
        }
        if self.core.sequence_paxos.pid() != self.node_id {
            return Err(NodeConfigError::CorePidMismatch {
                node_id: self.node_id,
                core_pid: self.core.sequence_paxos.pid(),
            });
        }
        let mut peer_ids: Vec<NodeId> = self.peers.iter().map(|peer| peer.id).collect();
        let mut core_peers = self.core.sequence_paxos.peers().to_vec();
        peer_ids.sort_unstable();
        core_peers.sort_unstable();
        if peer_ids != core_peers {
            return Err(NodeConfigError::CorePeersMismatch { peers: peer_ids, core_peers });
        }
        let limits = &self.limits;
        let zero = [
            ("tick_interval", self.tick_interval.is_zero()),
            ("append_timeout", self.append_timeout.is_zero()),
            ("progress_interval_ticks", self.progress_interval_ticks == 0),
            ("snapshot_interval_entries", self.snapshot_interval_entries == Some(0)),
            ("peer_queue_limit_bytes", limits.peer_queue_limit_bytes == 0),
            ("proposal_queue_limit", limits.proposal_queue_limit == 0),
            ("inbound_queue_limit", limits.inbound_queue_limit == 0),
            ("read_queue_limit", limits.read_queue_limit == 0),
            ("decided_queue_limit_batches", limits.decided_queue_limit_batches == 0),
            ("decided_batch_limit_entries", limits.decided_batch_limit_entries == 0),
            ("undelivered_limit_entries", limits.undelivered_limit_entries == 0),
            ("round_limit_inputs", limits.round_limit_inputs == 0),
            ("inbound_connection_limit", limits.inbound_connection_limit == 0),
            ("backoff.initial", self.backoff.initial.is_zero()),
            ("backoff.connect_timeout", self.backoff.connect_timeout.is_zero()),
            ("backoff.unacked_timeout", self.backoff.unacked_timeout.is_zero()),
            ("backoff.idle_timeout", self.backoff.idle_timeout.is_zero()),
        ];
        if let Some((field, _)) = zero.iter().find(|(_, is_zero)| *is_zero) {
            return Err(NodeConfigError::Zero(field));
        }
        if limits.max_frame_bytes < crate::transport::frame::MIN_MAX_FRAME_BYTES {
            return Err(NodeConfigError::MaxFrameTooSmall(limits.max_frame_bytes));
        }
        if self.backoff.max < self.backoff.initial {
            return Err(NodeConfigError::BackoffMaxBelowInitial);
        }
        Ok(())
    }
}

/// Why a [`NodeConfig`] is not usable.
#[derive(Debug, thiserror::Error)]
pub enum NodeConfigError {
    /// The core's own checks failed.
    #[error("core configuration: {0}")]
    Core(#[from] CoreConfigError),
    /// `core` names another pid than `node_id`.
    #[error("core pid {core_pid} differs from node_id {node_id}")]
    CorePidMismatch {
        /// The node's id.
        node_id: NodeId,
        /// The core's pid.
        core_pid: NodeId,
    },
    /// `core` names another cluster id than `cluster_id`.
    #[error("core cluster id {core_cluster_id} differs from cluster_id {cluster_id}")]
    CoreClusterMismatch {
        /// The node's cluster id.
        cluster_id: u64,
        /// The core's cluster id.
        core_cluster_id: u64,
    },
    /// `core` names other peers than `peers`.
    #[error("core peers {core_peers:?} differ from the configured peers {peers:?}")]
    CorePeersMismatch {
        /// The ids of `peers`, sorted.
        peers: Vec<NodeId>,
        /// The core's peers, sorted.
        core_peers: Vec<NodeId>,
    },
    /// A duration, interval or limit is zero.
    #[error("`{0}` is zero")]
    Zero(&'static str),
    /// `max_frame_bytes` is below the smallest useful frame.
    #[error("max_frame_bytes {0} is too small")]
    MaxFrameTooSmall(u32),
    /// `backoff.max` is below `backoff.initial`.
    #[error("backoff.max is below backoff.initial")]
    BackoffMaxBelowInitial,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three_node_config() -> NodeConfig {
        let peer = |id, port| PeerConfig { id, addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)) };
        NodeConfig::new(1, 7, vec![peer(2, 1), peer(3, 2)])
    }

    #[test]
    fn defaults_validate() {
        three_node_config().validate().expect("defaults are valid");
    }

    #[test]
    fn core_must_agree_with_the_node() {
        let mut config = three_node_config();
        config.core.sequence_paxos.set_peers(vec![2]);
        config.core.ble.set_peers(vec![2]);
        assert!(matches!(config.validate(), Err(NodeConfigError::CorePeersMismatch { .. })));
        let mut config = three_node_config();
        config.node_id = 9;
        assert!(matches!(
            config.validate(),
            Err(NodeConfigError::CorePidMismatch { node_id: 9, core_pid: 1 })
        ));
    }

    #[test]
    fn zero_limits_are_refused() {
        let mut config = three_node_config();
        config.limits.peer_queue_limit_bytes = 0;
        assert!(matches!(config.validate(), Err(NodeConfigError::Zero("peer_queue_limit_bytes"))));
        let mut config = three_node_config();
        config.limits.max_frame_bytes = 8;
        assert!(matches!(config.validate(), Err(NodeConfigError::MaxFrameTooSmall(8))));
    }
}
