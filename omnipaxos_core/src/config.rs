//! Configuration of a replica: Sequence Paxos, Ballot Leader Election, and both together.
//!
//! A configuration is built with setters, from HOCON (the tutorial's format, usually a file
//! shared with the application) or from TOML (a file owned by the replica alone). The two
//! formats read the same key names but differ on purpose in one point: HOCON ignores keys it
//! does not know, because the application keeps its own keys in the same file, while TOML
//! rejects them, so that a typo such as `bufer_size` is an error instead of a silent default.
//!
//! Loading never validates; [`SequencePaxosConfig::validate`] and friends do, and the
//! replica's constructor calls them. Every failure is a typed [`ConfigError`].
//!
//! This module also holds the one opt-in piece of I/O of the crate: a per-node log file
//! (`file_dispatch`) for users who set `log_file_path`. It writes no timestamps, so a
//! simulated run logs the same bytes each time.

use std::{
    fmt, fs, io,
    path::{Path, PathBuf},
    sync::Mutex,
};

use hocon::Hocon;
use serde::{de::DeserializeOwned, Deserialize};
use tracing_subscriber::{
    fmt::{
        format::{self, FormatEvent, FormatFields, Writer},
        FmtContext,
    },
    registry::LookupSpan,
};

use crate::{
    storage::ClusterConfig,
    util::{ConfigurationId, FlexibleQuorum, NodeId, Quorum},
};

/// Default limit on proposals waiting in memory: large enough for bursts, small enough to
/// bound memory when the leader is unreachable.
const DEFAULT_BUFFER_SIZE: usize = 100_000;
/// Default number of proposals per Accept message: 1 sends each proposal at once.
const DEFAULT_BATCH_SIZE: usize = 1;
/// Default ticks after which a partial batch is sent anyway.
const DEFAULT_FLUSH_BATCH_TICK_TIMEOUT: u64 = 5;
/// Default ticks after which an unanswered Prepare or lost-message request is sent again.
const DEFAULT_RESEND_MESSAGE_TICK_TIMEOUT: u64 = 20;
/// Default ticks per heartbeat round, which is also the election timeout.
const DEFAULT_HB_DELAY: u64 = 10;
/// Default `max_sync_entries`: 4096 entries per synchronisation message.
const DEFAULT_MAX_SYNC_ENTRIES: usize = 4096;
/// Default `read_timeout_ticks`.
const DEFAULT_READ_TIMEOUT_TICKS: u64 = 40;
/// Default `max_clock_drift_percent` when a lease is configured without it.
const DEFAULT_MAX_CLOCK_DRIFT_PERCENT: u64 = 10;
/// The largest allowed `max_clock_drift_percent`.
pub const MAX_CLOCK_DRIFT_PERCENT: u64 = 50;
/// The largest timeout in ticks any setting accepts (about 136 years at one tick per
/// millisecond): deadlines are sums of timeouts and must not overflow.
pub const MAX_TIMEOUT_TICKS: u64 = u32::MAX as u64;
/// Default limit on outgoing Ballot Leader Election messages.
const DEFAULT_BLE_BUFFER_SIZE: usize = 1000;

/// What [`ConfigError::WrongType`] says a 32-bit key must hold.
const EXPECTED_U32: &str = "an integer from 0 to 4294967295";
/// What [`ConfigError::WrongType`] says a 64-bit or size key must hold.
const EXPECTED_U64: &str = "a non-negative integer";
/// What [`ConfigError::WrongType`] says `peers` must hold.
const EXPECTED_PEERS: &str = "an array of non-negative integers";
/// What [`ConfigError::WrongType`] says `log_file_path` must hold.
const EXPECTED_PATH: &str = "a string";

/// Why a configuration could not be loaded, validated, or its log file opened.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required key (`config_id` or `pid`) is absent.
    #[error("required key `{0}` is missing")]
    MissingKey(&'static str),
    /// A key holds a value of the wrong type, or a negative or too large number.
    #[error("key `{key}` must be {expected}")]
    WrongType {
        /// The key as written in the file.
        key: &'static str,
        /// What the key must hold.
        expected: &'static str,
    },
    /// Only one of `read_quorum_size` and `write_quorum_size` is given.
    #[error("flexible quorum is incomplete: `{missing_key}` is missing; give both quorum sizes or neither")]
    IncompleteFlexibleQuorum {
        /// The quorum size key that is absent.
        missing_key: &'static str,
    },
    /// The configuration file could not be read.
    #[error("cannot read configuration file {path:?}: {source}")]
    ReadFile {
        /// The file that was read.
        path: PathBuf,
        /// Why reading failed.
        source: io::Error,
    },
    /// The TOML text is malformed, has a key of the wrong type, or has an unknown key.
    /// Boxed because the parser's error is large, and every `Result` carrying a
    /// `ConfigError` (such as `ProposeErr`) would pay for its size.
    #[error("invalid TOML configuration: {0}")]
    Toml(#[source] Box<toml::de::Error>),
    /// The log file (or its directory) could not be created or opened for appending.
    #[error("cannot open log file {path:?}: {source}")]
    LogFile {
        /// The log file that was opened.
        path: PathBuf,
        /// Why opening failed.
        source: io::Error,
    },
    /// The configuration id is 0, which means unset.
    #[error("configuration id is 0 (unset); set `config_id` to a non-zero value")]
    UnsetConfigurationId,
    /// The pid is 0, which means unset.
    #[error("pid is 0 (unset); set `pid` to a non-zero value")]
    UnsetPid,
    /// A peer (or node of a cluster configuration) has id 0, which no server may have.
    #[error("a node id is 0; node ids must be non-zero")]
    ZeroNodeId,
    /// The server's own pid is listed among its peers.
    #[error("pid {0} is listed in `peers`; peers are the other servers only")]
    PidAmongPeers(NodeId),
    /// A node id appears twice among the peers (or nodes of a cluster configuration).
    #[error("node {0} is listed twice")]
    DuplicateNode(NodeId),
    /// A cluster configuration has no nodes.
    #[error("the cluster configuration has no nodes")]
    NoNodes,
    /// `buffer_size` is 0: no proposal could ever wait.
    #[error("`buffer_size` is 0; it must be at least 1")]
    ZeroBufferSize,
    /// `batch_size` is 0: no batch could ever be sent.
    #[error("`batch_size` is 0; it must be at least 1")]
    ZeroBatchSize,
    /// `flush_batch_tick_timeout` is 0 ticks.
    #[error("`flush_batch_tick_timeout` is 0; it must be at least 1 tick")]
    ZeroFlushBatchTickTimeout,
    /// `resend_message_tick_timeout` is 0 ticks.
    #[error("`resend_message_tick_timeout` is 0; it must be at least 1 tick")]
    ZeroResendMessageTickTimeout,
    /// A batch could never fill because it is larger than the buffer that feeds it.
    #[error("`batch_size` {batch_size} is larger than `buffer_size` {buffer_size}")]
    BatchLargerThanBuffer {
        /// The configured batch size.
        batch_size: usize,
        /// The configured buffer size.
        buffer_size: usize,
    },
    /// A timeout in ticks is larger than [`MAX_TIMEOUT_TICKS`]: deadlines computed from it
    /// could overflow.
    #[error("`{key}` is {ticks} ticks; it must be at most {max} ticks", max = MAX_TIMEOUT_TICKS)]
    TimeoutTooLarge {
        /// The key of the timeout.
        key: &'static str,
        /// The configured value.
        ticks: u64,
    },
    /// `max_sync_entries` is 0: no follower could be synchronised.
    #[error("`max_sync_entries` is 0; it must be at least 1")]
    ZeroMaxSyncEntries,
    /// `read_timeout_ticks` is 0: every read would time out at once.
    #[error("`read_timeout_ticks` is 0; it must be at least 1 tick")]
    ZeroReadTimeout,
    /// `read_lease_ticks` is 0: a lease would never let a leader answer a read.
    #[error("`read_lease_ticks` is 0; it must be at least 1 tick (or leave leases off)")]
    ZeroReadLease,
    /// `max_clock_drift_percent` is above [`MAX_CLOCK_DRIFT_PERCENT`].
    #[error("`max_clock_drift_percent` is {0}; it must be at most {max}", max = MAX_CLOCK_DRIFT_PERCENT)]
    ClockDriftTooLarge(u64),
    /// `hb_delay` is 0 ticks: a heartbeat round would never end.
    #[error("`hb_delay` is 0; it must be at least 1 tick")]
    ZeroHeartbeatDelay,
    /// `initial_delay` is 0 ticks: the first heartbeat round would never end.
    #[error("`initial_delay` is 0; it must be at least 1 tick")]
    ZeroInitialDelay,
    /// `ble_buffer_size` is 0: Ballot Leader Election could send no message.
    #[error("`ble_buffer_size` is 0; it must be at least 1")]
    ZeroBleBufferSize,
    /// The read quorum is smaller than 1 or larger than the cluster.
    #[error("`read_quorum_size` {read_quorum_size} is not between 1 and the {nodes} nodes")]
    ReadQuorumOutOfRange {
        /// The configured read quorum size.
        read_quorum_size: usize,
        /// The number of nodes, this server included.
        nodes: usize,
    },
    /// The write quorum is smaller than 1 or larger than the cluster.
    #[error("`write_quorum_size` {write_quorum_size} is not between 1 and the {nodes} nodes")]
    WriteQuorumOutOfRange {
        /// The configured write quorum size.
        write_quorum_size: usize,
        /// The number of nodes, this server included.
        nodes: usize,
    },
    /// A read and a write quorum could miss each other, which would lose decided entries.
    #[error(
        "quorums do not intersect: read {read_quorum_size} + write {write_quorum_size} must exceed {nodes} nodes"
    )]
    QuorumsDoNotIntersect {
        /// The configured read quorum size.
        read_quorum_size: usize,
        /// The configured write quorum size.
        write_quorum_size: usize,
        /// The number of nodes, this server included.
        nodes: usize,
    },
    /// The Sequence Paxos and Ballot Leader Election halves disagree on a field they share.
    #[error(
        "Sequence Paxos and Ballot Leader Election configurations disagree on `{field}`; \
         set shared fields with OmniPaxosConfig's setters, which set both halves"
    )]
    SharedFieldMismatch {
        /// The shared field, by its Sequence Paxos name.
        field: &'static str,
    },
}

impl From<toml::de::Error> for ConfigError {
    fn from(error: toml::de::Error) -> Self {
        ConfigError::Toml(Box::new(error))
    }
}

/// The configuration of one Sequence Paxos replica.
///
/// Build it with [`Default`] and setters, [`with_hocon`](Self::with_hocon) or
/// [`from_toml_file`](Self::from_toml_file); check it with [`validate`](Self::validate).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SequencePaxosConfig {
    /// Invariant (checked by `validate`): non-zero.
    configuration_id: ConfigurationId,
    /// Invariant (checked by `validate`): non-zero and not in `peers`.
    pid: NodeId,
    /// The other servers. Invariant (checked by `validate`): non-zero, no duplicates.
    peers: Vec<NodeId>,
    /// Invariant (checked by `validate`): `1 <= batch_size <= buffer_size`.
    buffer_size: usize,
    batch_size: usize,
    /// Invariant (checked by `validate`): at least 1 tick.
    flush_batch_tick_timeout: u64,
    /// Invariant (checked by `validate`): at least 1 tick.
    resend_message_tick_timeout: u64,
    leader_priority: u32,
    /// Invariant (checked by `validate`): the quorums intersect and fit the cluster.
    flexible_quorum: Option<FlexibleQuorum>,
    log_file_path: Option<PathBuf>,
    /// Send decided indices only on the next AcceptDecide or at the next tick.
    piggyback_decide: bool,
    /// A user-chosen id of the cluster; persisted with the replica's identity in its storage.
    cluster_id: u64,
    /// Keep the outcome of every own proposal until `take_proposal_outcomes` takes it.
    proposal_outcomes: bool,
    /// A read that has no read index after this many ticks fails. Invariant: at least 1.
    read_timeout_ticks: u64,
    /// Leases for reads, if enabled.
    read_lease: Option<crate::sequence_paxos::ReadLease>,
    /// Start as a learner: this replica's storage lost acknowledged state.
    learner: bool,
    /// Entries per synchronisation message. Invariant (checked by `validate`): at least 1.
    max_sync_entries: usize,
    /// Differs between this replica's processes even when its storage was lost.
    process_nonce: Option<u32>,
    #[cfg(feature = "mutations")]
    pub(crate) mutation: Option<crate::mutation::Mutation>,
}

impl Default for SequencePaxosConfig {
    fn default() -> Self {
        Self {
            configuration_id: 0,
            pid: 0,
            peers: Vec::new(),
            buffer_size: DEFAULT_BUFFER_SIZE,
            batch_size: DEFAULT_BATCH_SIZE,
            flush_batch_tick_timeout: DEFAULT_FLUSH_BATCH_TICK_TIMEOUT,
            resend_message_tick_timeout: DEFAULT_RESEND_MESSAGE_TICK_TIMEOUT,
            leader_priority: 0,
            flexible_quorum: None,
            log_file_path: None,
            piggyback_decide: true,
            cluster_id: 0,
            proposal_outcomes: true,
            read_timeout_ticks: DEFAULT_READ_TIMEOUT_TICKS,
            read_lease: None,
            learner: false,
            max_sync_entries: DEFAULT_MAX_SYNC_ENTRIES,
            process_nonce: None,
            #[cfg(feature = "mutations")]
            mutation: None,
        }
    }
}

impl SequencePaxosConfig {
    /// Sets the id of the configuration (membership) this replica runs in; must be non-zero.
    pub fn set_configuration_id(&mut self, configuration_id: ConfigurationId) {
        self.configuration_id = configuration_id;
    }

    /// Sets this server's id; must be non-zero and unique in the cluster.
    pub fn set_pid(&mut self, pid: NodeId) {
        self.pid = pid;
    }

    /// Sets the other servers of the cluster; empty means a single-server cluster.
    pub fn set_peers(&mut self, peers: Vec<NodeId>) {
        self.peers = peers;
    }

    /// Sets how many proposals may wait in memory before `append` refuses (default 100 000).
    pub fn set_buffer_size(&mut self, buffer_size: usize) {
        self.buffer_size = buffer_size;
    }

    /// Sets how many proposals the leader collects before sending them (default 1).
    pub fn set_batch_size(&mut self, batch_size: usize) {
        self.batch_size = batch_size;
    }

    /// Sets after how many ticks a partly filled batch is sent anyway (default 5).
    pub fn set_flush_batch_tick_timeout(&mut self, ticks: u64) {
        self.flush_batch_tick_timeout = ticks;
    }

    /// Sets after how many ticks an unanswered message is sent again (default 20).
    pub fn set_resend_message_tick_timeout(&mut self, ticks: u64) {
        self.resend_message_tick_timeout = ticks;
    }

    /// Sets the priority to become leader; higher wins among equally up-to-date servers (default 0).
    pub fn set_leader_priority(&mut self, priority: u32) {
        self.leader_priority = priority;
    }

    /// Sets flexible quorum sizes; `None` (the default) means majorities.
    pub fn set_flexible_quorum(&mut self, flexible_quorum: Option<FlexibleQuorum>) {
        self.flexible_quorum = flexible_quorum;
    }

    /// Sets a file this replica appends its debug log to; without one it logs nowhere.
    pub fn set_log_file_path(&mut self, path: impl Into<PathBuf>) {
        self.log_file_path = Some(path.into());
    }

    /// The id of the configuration this replica runs in.
    pub fn configuration_id(&self) -> ConfigurationId {
        self.configuration_id
    }

    /// This server's id.
    pub fn pid(&self) -> NodeId {
        self.pid
    }

    /// The other servers of the cluster.
    pub fn peers(&self) -> &[NodeId] {
        &self.peers
    }

    /// The limit on proposals waiting in memory.
    pub fn buffer_size(&self) -> usize {
        self.buffer_size
    }

    /// The number of proposals per batch.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Ticks after which a partial batch is sent.
    pub fn flush_batch_tick_timeout(&self) -> u64 {
        self.flush_batch_tick_timeout
    }

    /// Ticks after which an unanswered message is sent again.
    pub fn resend_message_tick_timeout(&self) -> u64 {
        self.resend_message_tick_timeout
    }

    /// When true (the default), a new decided index waits to ride on the next AcceptDecide
    /// instead of going out as a Decide of its own: 2(n−1) messages per entry instead of
    /// 3(n−1) with one proposal at a time. It waits only while the replica is busy: a
    /// `take_outgoing_messages` call with no input since the previous call (the replica is
    /// idle), or the next tick, sends it; a follower whose forwarded proposals were just decided
    /// gets it at once, and a ReadReply carries it. With false, every decision goes out at once.
    pub fn set_piggyback_decide(&mut self, piggyback: bool) {
        self.piggyback_decide = piggyback;
    }

    /// See [`Self::set_piggyback_decide`].
    pub fn piggyback_decide(&self) -> bool {
        self.piggyback_decide
    }

    /// Sets the id of the cluster (default 0). It is persisted with the replica's identity in
    /// its storage, so storage of another cluster is refused at start.
    pub fn set_cluster_id(&mut self, cluster_id: u64) {
        self.cluster_id = cluster_id;
    }

    /// The cluster id.
    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    /// Whether the replica keeps the outcome of each own proposal until
    /// [`take_proposal_outcomes`](crate::sequence_paxos::SequencePaxos::take_proposal_outcomes)
    /// takes it (default `true`). Outcomes are never dropped: they are kept as runs (a leader's
    /// consecutive proposals decided at consecutive indices take one run, whatever their
    /// number), and `append` refuses with `BufferFull` while `buffer_size` runs wait to be
    /// taken. With `false`, nothing is kept or reported and nothing is refused for it.
    pub fn set_proposal_outcomes(&mut self, keep: bool) {
        self.proposal_outcomes = keep;
    }

    /// Whether proposal outcomes are kept; see [`set_proposal_outcomes`](Self::set_proposal_outcomes).
    pub fn proposal_outcomes(&self) -> bool {
        self.proposal_outcomes
    }

    /// Ticks after which a read still without a read index fails with `TimedOut` (default 40).
    pub fn set_read_timeout_ticks(&mut self, ticks: u64) {
        self.read_timeout_ticks = ticks;
    }

    /// The read timeout in ticks.
    pub fn read_timeout_ticks(&self) -> u64 {
        self.read_timeout_ticks
    }

    /// A number that differs between the processes of this replica, also when its storage was
    /// lost (a runtime uses randomness or the start time; `omnipaxos_runtime` sets one).
    ///
    /// A follower numbers its read requests from it, and a `ReadReply` answers the reads asked
    /// up to its request number; so a reply to an earlier process (delayed, parked while the
    /// replica was down, or replayed) must never carry a number this process uses. Without a
    /// nonce the numbering starts from the incarnation kept in storage, which is enough as
    /// long as the storage survives; a replica restarted over a replaced (wiped) log counts
    /// incarnations from 1 again, and without a nonce a reply to its previous life could
    /// answer a new read with an old read index: a stale read. Set a nonce whenever a replica
    /// may start over lost storage (a learner, see [`Self::set_learner`]).
    pub fn set_process_nonce(&mut self, nonce: u32) {
        self.process_nonce = Some(nonce);
    }

    /// See [`Self::set_process_nonce`].
    pub fn process_nonce(&self) -> Option<u32> {
        self.process_nonce
    }

    /// Turns on leases for reads (default off): a leader answers reads without messages while
    /// it holds a lease of `lease.lease_ticks` ticks, provided every replica's tick rate stays
    /// within `lease.max_clock_drift_percent` of real time. Every replica of a cluster must use
    /// the same setting. With leases on, a new leader decides nothing until the lease of the
    /// previous one has surely ended. See [`crate::sequence_paxos::ReadLease`] and
    /// ARCHITECTURE.md for the safety argument and its clock assumption.
    pub fn set_read_lease(&mut self, lease: Option<crate::sequence_paxos::ReadLease>) {
        self.read_lease = lease;
    }

    /// The read lease, if leases are on.
    pub fn read_lease(&self) -> Option<crate::sequence_paxos::ReadLease> {
        self.read_lease
    }

    /// Starts the replica as a *learner*: for a replica whose storage lost state it may have
    /// acknowledged (a wiped or damaged data directory). A learner never votes again in this
    /// configuration — its storage durably records a promise above every ballot, so it refuses
    /// all Prepares and accepts, also after later restarts — and it learns the decided log from
    /// the leader. It serves linearizable reads but cannot propose; it joins the next
    /// configuration through a reconfiguration (with fresh storage). See ARCHITECTURE.md for why
    /// rejoining the same configuration as a voter is unsafe.
    pub fn set_learner(&mut self, learner: bool) {
        self.learner = learner;
    }

    /// Whether the replica starts as a learner.
    pub fn learner(&self) -> bool {
        self.learner
    }

    /// The most entries one synchronisation message carries (default 4096): a follower far
    /// behind is caught up in chunks, each sent when the previous one is acknowledged, so no
    /// message grows with the gap (a runtime's frame limit stays met).
    pub fn set_max_sync_entries(&mut self, entries: usize) {
        self.max_sync_entries = entries;
    }

    /// See [`Self::set_max_sync_entries`].
    pub fn max_sync_entries(&self) -> usize {
        self.max_sync_entries
    }

    /// Reintroduces a fixed bug, for mutation testing of the checkers (feature `mutations`).
    #[cfg(feature = "mutations")]
    pub fn set_mutation(&mut self, mutation: Option<crate::mutation::Mutation>) {
        self.mutation = mutation;
    }

    /// The mutation in force, if any.
    #[cfg(feature = "mutations")]
    pub fn mutation(&self) -> Option<crate::mutation::Mutation> {
        self.mutation
    }

    /// The priority to become leader.
    pub fn leader_priority(&self) -> u32 {
        self.leader_priority
    }

    /// The flexible quorum sizes, if any.
    pub fn flexible_quorum(&self) -> Option<FlexibleQuorum> {
        self.flexible_quorum
    }

    /// The file the debug log goes to, if any.
    pub fn log_file_path(&self) -> Option<&Path> {
        self.log_file_path.as_deref()
    }

    /// Every server of the cluster, this one included, in ascending order.
    pub fn nodes(&self) -> Vec<NodeId> {
        sorted_nodes(self.pid, &self.peers)
    }

    /// The quorum sizes in force: the flexible ones if set, majorities otherwise.
    pub fn quorum(&self) -> Quorum {
        quorum_of(self.flexible_quorum, self.peers.len() + 1)
    }

    /// The membership as it is stored and carried by a StopSign.
    pub fn cluster_config(&self) -> ClusterConfig {
        ClusterConfig {
            configuration_id: self.configuration_id,
            nodes: self.nodes(),
            flexible_quorum: self.flexible_quorum,
        }
    }

    /// Checks every invariant; the first violation found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_membership(self.configuration_id, self.pid, &self.peers, self.flexible_quorum)?;
        validate_buffering(self.buffer_size, self.batch_size)?;
        if self.flush_batch_tick_timeout == 0 {
            return Err(ConfigError::ZeroFlushBatchTickTimeout);
        }
        if self.resend_message_tick_timeout == 0 {
            return Err(ConfigError::ZeroResendMessageTickTimeout);
        }
        check_timeout("flush_batch_tick_timeout", self.flush_batch_tick_timeout)?;
        check_timeout("resend_message_tick_timeout", self.resend_message_tick_timeout)?;
        check_timeout("read_timeout_ticks", self.read_timeout_ticks)?;
        if self.max_sync_entries == 0 {
            return Err(ConfigError::ZeroMaxSyncEntries);
        }
        if self.read_timeout_ticks == 0 {
            return Err(ConfigError::ZeroReadTimeout);
        }
        if let Some(lease) = self.read_lease {
            check_timeout("read_lease_ticks", lease.lease_ticks)?;
            if lease.lease_ticks == 0 {
                return Err(ConfigError::ZeroReadLease);
            }
            if lease.max_clock_drift_percent > MAX_CLOCK_DRIFT_PERCENT {
                return Err(ConfigError::ClockDriftTooLarge(lease.max_clock_drift_percent));
            }
        }
        Ok(())
    }

    /// Reads the configuration from a HOCON document, as in the tutorial:
    /// `SequencePaxosConfig::with_hocon(&raw_cfg)`.
    ///
    /// Keys: `config_id` and `pid` (required), `peers`, `log_file_path`, `buffer_size`,
    /// `batch_size`, `flush_batch_tick_timeout`, `resend_message_tick_timeout`,
    /// `leader_priority`, and `read_quorum_size` with `write_quorum_size`. Unknown keys are
    /// ignored because the file is usually shared with the application; `null` means absent.
    /// The result is not validated; `SequencePaxos::with` validates it.
    ///
    /// # Panics
    ///
    /// With the [`ConfigError`] message if a required key is missing, a key has the wrong
    /// type, or only one quorum size is given. Use [`try_with_hocon`](Self::try_with_hocon)
    /// to handle these as errors.
    pub fn with_hocon(cfg: &Hocon) -> Self {
        Self::try_with_hocon(cfg).unwrap_or_else(|error| panic!("{error}"))
    }

    /// Like [`with_hocon`](Self::with_hocon), but returns the error instead of panicking.
    pub fn try_with_hocon(cfg: &Hocon) -> Result<Self, ConfigError> {
        Self::from_keys(SequencePaxosKeys::from_hocon(cfg)?)
    }

    /// Reads the configuration from TOML text with the same keys as
    /// [`with_hocon`](Self::with_hocon); unknown keys are an error. Not validated.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        Self::from_keys(parse_toml(text)?)
    }

    /// Reads the configuration from a TOML file; see [`from_toml_str`](Self::from_toml_str).
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        Self::from_toml_str(&read_file(path.as_ref())?)
    }

    /// Builds the configuration from the keys found, defaults filling the absent ones.
    fn from_keys(keys: SequencePaxosKeys) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        Ok(Self {
            configuration_id: required(keys.config_id, "config_id")?,
            pid: required(keys.pid, "pid")?,
            peers: keys.peers.unwrap_or_default(),
            buffer_size: keys.buffer_size.unwrap_or(defaults.buffer_size),
            batch_size: keys.batch_size.unwrap_or(defaults.batch_size),
            flush_batch_tick_timeout: keys
                .flush_batch_tick_timeout
                .unwrap_or(defaults.flush_batch_tick_timeout),
            resend_message_tick_timeout: keys
                .resend_message_tick_timeout
                .unwrap_or(defaults.resend_message_tick_timeout),
            leader_priority: keys.leader_priority.unwrap_or(defaults.leader_priority),
            flexible_quorum: flexible_quorum(keys.read_quorum_size, keys.write_quorum_size)?,
            log_file_path: keys.log_file_path,
            piggyback_decide: keys.piggyback_decide.unwrap_or(defaults.piggyback_decide),
            cluster_id: keys.cluster_id.unwrap_or(defaults.cluster_id),
            proposal_outcomes: keys.proposal_outcomes.unwrap_or(defaults.proposal_outcomes),
            read_timeout_ticks: keys.read_timeout_ticks.unwrap_or(defaults.read_timeout_ticks),
            read_lease: match (keys.read_lease_ticks, keys.max_clock_drift_percent) {
                (None, None) => None,
                (Some(lease_ticks), drift) => Some(crate::sequence_paxos::ReadLease {
                    lease_ticks,
                    max_clock_drift_percent: drift.unwrap_or(DEFAULT_MAX_CLOCK_DRIFT_PERCENT),
                }),
                (None, Some(_)) => return Err(ConfigError::MissingKey("read_lease_ticks")),
            },
            learner: false,
            max_sync_entries: keys.max_sync_entries.unwrap_or(defaults.max_sync_entries),
            process_nonce: None,
            #[cfg(feature = "mutations")]
            mutation: None,
        })
    }
}

/// The configuration of one Ballot Leader Election instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BLEConfig {
    /// Invariant (checked by `validate`): non-zero.
    configuration_id: ConfigurationId,
    /// Invariant (checked by `validate`): non-zero and not in `peers`.
    pid: NodeId,
    /// The other servers. Invariant (checked by `validate`): non-zero, no duplicates.
    peers: Vec<NodeId>,
    priority: u32,
    /// Ticks per heartbeat round. Invariant (checked by `validate`): at least 1.
    hb_delay: u64,
    /// Ticks of the first round; `None` means `hb_delay`. Invariant: at least 1 if set.
    initial_delay: Option<u64>,
    /// Invariant (checked by `validate`): the quorums intersect and fit the cluster.
    flexible_quorum: Option<FlexibleQuorum>,
    /// Invariant (checked by `validate`): at least 1.
    buffer_size: usize,
    log_file_path: Option<PathBuf>,
    #[cfg(feature = "mutations")]
    pub(crate) mutation: Option<crate::mutation::Mutation>,
}

impl Default for BLEConfig {
    fn default() -> Self {
        Self {
            configuration_id: 0,
            pid: 0,
            peers: Vec::new(),
            priority: 0,
            hb_delay: DEFAULT_HB_DELAY,
            initial_delay: None,
            flexible_quorum: None,
            buffer_size: DEFAULT_BLE_BUFFER_SIZE,
            log_file_path: None,
            #[cfg(feature = "mutations")]
            mutation: None,
        }
    }
}

impl BLEConfig {
    /// Sets the id of the configuration (membership) this instance runs in; must be non-zero.
    pub fn set_configuration_id(&mut self, configuration_id: ConfigurationId) {
        self.configuration_id = configuration_id;
    }

    /// Sets this server's id; must be non-zero and unique in the cluster.
    pub fn set_pid(&mut self, pid: NodeId) {
        self.pid = pid;
    }

    /// Sets the other servers of the cluster; empty means a single-server cluster.
    pub fn set_peers(&mut self, peers: Vec<NodeId>) {
        self.peers = peers;
    }

    /// Sets the priority to become leader; higher wins among equally up-to-date servers (default 0).
    pub fn set_priority(&mut self, priority: u32) {
        self.priority = priority;
    }

    /// Sets the ticks per heartbeat round, which is the election timeout (default 10); the
    /// seed's name for [`set_election_timeout_ticks`](Self::set_election_timeout_ticks).
    pub fn set_hb_delay(&mut self, ticks: u64) {
        self.hb_delay = ticks;
    }

    /// Sets the election timeout in ticks (default 10): the length of one heartbeat round. A
    /// follower suspects a silent leader after about 1.2 timeouts; at most
    /// [`MAX_TIMEOUT_TICKS`].
    pub fn set_election_timeout_ticks(&mut self, ticks: u64) {
        self.hb_delay = ticks;
    }

    /// The election timeout in ticks (the same as [`hb_delay`](Self::hb_delay)).
    pub fn election_timeout_ticks(&self) -> u64 {
        self.hb_delay
    }

    /// Sets the ticks before the first round ends; a short value elects a first leader
    /// sooner after start-up (default: `hb_delay`).
    pub fn set_initial_delay(&mut self, ticks: u64) {
        self.initial_delay = Some(ticks);
    }

    /// Sets flexible quorum sizes; `None` (the default) means majorities.
    pub fn set_flexible_quorum(&mut self, flexible_quorum: Option<FlexibleQuorum>) {
        self.flexible_quorum = flexible_quorum;
    }

    /// Sets how many outgoing messages may wait before the oldest are dropped (default 1000).
    pub fn set_buffer_size(&mut self, buffer_size: usize) {
        self.buffer_size = buffer_size;
    }

    /// Sets a file this instance appends its debug log to; without one it logs nowhere.
    pub fn set_log_file_path(&mut self, path: impl Into<PathBuf>) {
        self.log_file_path = Some(path.into());
    }

    /// The id of the configuration this instance runs in.
    pub fn configuration_id(&self) -> ConfigurationId {
        self.configuration_id
    }

    /// This server's id.
    pub fn pid(&self) -> NodeId {
        self.pid
    }

    /// The other servers of the cluster.
    pub fn peers(&self) -> &[NodeId] {
        &self.peers
    }

    /// The priority to become leader.
    pub fn priority(&self) -> u32 {
        self.priority
    }

    /// Ticks per heartbeat round.
    pub fn hb_delay(&self) -> u64 {
        self.hb_delay
    }

    /// Ticks before the first round ends: the value set, or `hb_delay` if none was.
    pub fn initial_delay(&self) -> u64 {
        self.initial_delay.unwrap_or(self.hb_delay)
    }

    /// The flexible quorum sizes, if any.
    pub fn flexible_quorum(&self) -> Option<FlexibleQuorum> {
        self.flexible_quorum
    }

    /// The limit on outgoing messages.
    pub fn buffer_size(&self) -> usize {
        self.buffer_size
    }

    /// The file the debug log goes to, if any.
    pub fn log_file_path(&self) -> Option<&Path> {
        self.log_file_path.as_deref()
    }

    /// Reintroduces a fixed bug, for mutation testing of the checkers (feature `mutations`).
    #[cfg(feature = "mutations")]
    pub fn set_mutation(&mut self, mutation: Option<crate::mutation::Mutation>) {
        self.mutation = mutation;
    }

    /// The mutation in force, if any.
    #[cfg(feature = "mutations")]
    pub fn mutation(&self) -> Option<crate::mutation::Mutation> {
        self.mutation
    }

    /// Every server of the cluster, this one included, in ascending order.
    pub fn nodes(&self) -> Vec<NodeId> {
        sorted_nodes(self.pid, &self.peers)
    }

    /// The quorum sizes in force: the flexible ones if set, majorities otherwise.
    pub fn quorum(&self) -> Quorum {
        quorum_of(self.flexible_quorum, self.peers.len() + 1)
    }

    /// Checks every invariant; the first violation found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_membership(self.configuration_id, self.pid, &self.peers, self.flexible_quorum)?;
        if self.hb_delay == 0 {
            return Err(ConfigError::ZeroHeartbeatDelay);
        }
        if self.initial_delay == Some(0) {
            return Err(ConfigError::ZeroInitialDelay);
        }
        check_timeout("hb_delay", self.hb_delay)?;
        check_timeout("initial_delay", self.initial_delay())?;
        if self.buffer_size == 0 {
            return Err(ConfigError::ZeroBleBufferSize);
        }
        Ok(())
    }

    /// Reads the configuration from a HOCON document.
    ///
    /// Keys: `config_id` and `pid` (required), `peers`, `priority` (or `leader_priority`;
    /// `priority` wins if both are given), `hb_delay`, `initial_delay`, `ble_buffer_size`,
    /// `log_file_path`, and `read_quorum_size` with `write_quorum_size`. Unknown keys are
    /// ignored; `null` means absent. The result is not validated; the constructor of the
    /// election validates it.
    ///
    /// # Panics
    ///
    /// With the [`ConfigError`] message if a required key is missing, a key has the wrong
    /// type, or only one quorum size is given. Use [`try_with_hocon`](Self::try_with_hocon)
    /// to handle these as errors.
    pub fn with_hocon(cfg: &Hocon) -> Self {
        Self::try_with_hocon(cfg).unwrap_or_else(|error| panic!("{error}"))
    }

    /// Like [`with_hocon`](Self::with_hocon), but returns the error instead of panicking.
    pub fn try_with_hocon(cfg: &Hocon) -> Result<Self, ConfigError> {
        Self::from_keys(BleKeys::from_hocon(cfg)?)
    }

    /// Reads the configuration from TOML text with the same keys as
    /// [`with_hocon`](Self::with_hocon); unknown keys are an error. Not validated.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        Self::from_keys(parse_toml(text)?)
    }

    /// Reads the configuration from a TOML file; see [`from_toml_str`](Self::from_toml_str).
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        Self::from_toml_str(&read_file(path.as_ref())?)
    }

    /// Builds the configuration from the keys found, defaults filling the absent ones.
    fn from_keys(keys: BleKeys) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        Ok(Self {
            configuration_id: required(keys.config_id, "config_id")?,
            pid: required(keys.pid, "pid")?,
            peers: keys.peers.unwrap_or_default(),
            priority: keys.priority.or(keys.leader_priority).unwrap_or(defaults.priority),
            hb_delay: keys.election_timeout_ticks.or(keys.hb_delay).unwrap_or(defaults.hb_delay),
            initial_delay: keys.initial_delay,
            flexible_quorum: flexible_quorum(keys.read_quorum_size, keys.write_quorum_size)?,
            buffer_size: keys.ble_buffer_size.unwrap_or(defaults.buffer_size),
            log_file_path: keys.log_file_path,
            #[cfg(feature = "mutations")]
            mutation: None,
        })
    }
}

/// The configuration of a replica that runs Sequence Paxos with Ballot Leader Election.
///
/// The two halves share `configuration_id`, `pid`, `peers`, the priority, the flexible
/// quorum and the log file; [`validate`](Self::validate) checks that they agree.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OmniPaxosConfig {
    /// The Sequence Paxos half.
    pub sequence_paxos: SequencePaxosConfig,
    /// The Ballot Leader Election half.
    pub ble: BLEConfig,
}

impl OmniPaxosConfig {
    /// Combines `sequence_paxos` with an election configuration derived from it, so the
    /// shared fields agree by construction; election-only fields keep their defaults.
    pub fn new(sequence_paxos: SequencePaxosConfig) -> Self {
        let ble = BLEConfig {
            configuration_id: sequence_paxos.configuration_id,
            pid: sequence_paxos.pid,
            peers: sequence_paxos.peers.clone(),
            priority: sequence_paxos.leader_priority,
            flexible_quorum: sequence_paxos.flexible_quorum,
            log_file_path: sequence_paxos.log_file_path.clone(),
            ..BLEConfig::default()
        };
        Self { sequence_paxos, ble }
    }

    /// Sets the election's ticks per heartbeat round (the election timeout); the seed's name
    /// for [`set_election_timeout_ticks`](Self::set_election_timeout_ticks).
    pub fn set_hb_delay(&mut self, ticks: u64) {
        self.ble.set_hb_delay(ticks);
    }

    /// Sets the election timeout in ticks (default 10): one heartbeat round of Ballot Leader
    /// Election. A follower suspects a silent leader after about 1.2 timeouts.
    pub fn set_election_timeout_ticks(&mut self, ticks: u64) {
        self.ble.set_hb_delay(ticks);
    }

    /// Sets the configuration id in both halves.
    pub fn set_configuration_id(&mut self, configuration_id: ConfigurationId) {
        self.sequence_paxos.set_configuration_id(configuration_id);
        self.ble.set_configuration_id(configuration_id);
    }

    /// Sets this server's id in both halves.
    pub fn set_pid(&mut self, pid: NodeId) {
        self.sequence_paxos.set_pid(pid);
        self.ble.set_pid(pid);
    }

    /// Sets the other servers in both halves.
    pub fn set_peers(&mut self, peers: Vec<NodeId>) {
        self.sequence_paxos.set_peers(peers.clone());
        self.ble.set_peers(peers);
    }

    /// Sets the leader priority in both halves.
    pub fn set_leader_priority(&mut self, priority: u32) {
        self.sequence_paxos.set_leader_priority(priority);
        self.ble.set_priority(priority);
    }

    /// Sets flexible quorums in both halves.
    pub fn set_flexible_quorum(&mut self, flexible_quorum: Option<FlexibleQuorum>) {
        self.sequence_paxos.set_flexible_quorum(flexible_quorum);
        self.ble.set_flexible_quorum(flexible_quorum);
    }

    /// Sets the per-replica log file in both halves.
    pub fn set_log_file_path(&mut self, path: impl Into<PathBuf>) {
        let path = path.into();
        self.sequence_paxos.set_log_file_path(path.clone());
        self.ble.set_log_file_path(path);
    }

    /// Builds the replica over `storage` in one call (validating first): the reference
    /// design's `OmniPaxosConfig { .. }.build(storage)`.
    pub fn build<T, S, B>(
        self,
        storage: B,
    ) -> Result<crate::OmniPaxos<T, S, B>, crate::sequence_paxos::CreateError>
    where
        T: Clone + std::fmt::Debug,
        S: crate::storage::Snapshot<T>,
        B: crate::storage::Storage<T, S>,
    {
        crate::OmniPaxos::try_with(self, storage)
    }

    /// Reintroduces a fixed bug in both halves, for mutation testing (feature `mutations`).
    #[cfg(feature = "mutations")]
    pub fn set_mutation(&mut self, mutation: Option<crate::mutation::Mutation>) {
        self.sequence_paxos.set_mutation(mutation);
        self.ble.set_mutation(mutation);
    }

    /// Checks both halves, then that they agree on every shared field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.sequence_paxos.validate()?;
        self.ble.validate()?;
        self.validate_shared_fields()
    }

    /// Reads both halves from one HOCON document holding the keys of both (see
    /// [`SequencePaxosConfig::with_hocon`] and [`BLEConfig::with_hocon`]). Not validated.
    ///
    /// # Panics
    ///
    /// With the [`ConfigError`] message, as the two halves do. Use
    /// [`try_with_hocon`](Self::try_with_hocon) to handle these as errors.
    pub fn with_hocon(cfg: &Hocon) -> Self {
        Self::try_with_hocon(cfg).unwrap_or_else(|error| panic!("{error}"))
    }

    /// Like [`with_hocon`](Self::with_hocon), but returns the error instead of panicking.
    pub fn try_with_hocon(cfg: &Hocon) -> Result<Self, ConfigError> {
        Ok(Self {
            sequence_paxos: SequencePaxosConfig::try_with_hocon(cfg)?,
            ble: BLEConfig::try_with_hocon(cfg)?,
        })
    }

    /// Reads both halves from TOML text holding the keys of both; any other key is an
    /// error. Not validated.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let (sequence_paxos_keys, ble_keys) = parse_toml::<OmniPaxosKeys>(text)?.split();
        Ok(Self {
            sequence_paxos: SequencePaxosConfig::from_keys(sequence_paxos_keys)?,
            ble: BLEConfig::from_keys(ble_keys)?,
        })
    }

    /// Reads both halves from a TOML file; see [`from_toml_str`](Self::from_toml_str).
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        Self::from_toml_str(&read_file(path.as_ref())?)
    }

    /// A disagreement would make the election and the log run different clusters.
    fn validate_shared_fields(&self) -> Result<(), ConfigError> {
        let (sequence_paxos, ble) = (&self.sequence_paxos, &self.ble);
        let mismatch = if sequence_paxos.configuration_id != ble.configuration_id {
            Some("configuration_id")
        } else if sequence_paxos.pid != ble.pid {
            Some("pid")
        } else if sequence_paxos.nodes() != ble.nodes() {
            Some("peers")
        } else if sequence_paxos.leader_priority != ble.priority {
            Some("leader_priority")
        } else if sequence_paxos.flexible_quorum != ble.flexible_quorum {
            Some("flexible_quorum")
        } else if sequence_paxos.log_file_path != ble.log_file_path {
            Some("log_file_path")
        } else {
            None
        };
        mismatch.map_or(Ok(()), |field| Err(ConfigError::SharedFieldMismatch { field }))
    }
}

/// Checks a cluster configuration, such as the next one a StopSign proposes: a non-zero id,
/// at least one node, non-zero distinct node ids, and quorums that fit and intersect.
pub fn validate_cluster_config(config: &ClusterConfig) -> Result<(), ConfigError> {
    if config.configuration_id == 0 {
        return Err(ConfigError::UnsetConfigurationId);
    }
    if config.nodes.is_empty() {
        return Err(ConfigError::NoNodes);
    }
    validate_node_ids(&config.nodes)?;
    validate_flexible_quorum(config.flexible_quorum, config.nodes.len())
}

/// The membership checks shared by both halves.
fn validate_membership(
    configuration_id: ConfigurationId,
    pid: NodeId,
    peers: &[NodeId],
    flexible_quorum: Option<FlexibleQuorum>,
) -> Result<(), ConfigError> {
    if configuration_id == 0 {
        return Err(ConfigError::UnsetConfigurationId);
    }
    if pid == 0 {
        return Err(ConfigError::UnsetPid);
    }
    if peers.contains(&pid) {
        return Err(ConfigError::PidAmongPeers(pid));
    }
    validate_node_ids(peers)?;
    validate_flexible_quorum(flexible_quorum, peers.len() + 1)
}

/// Node ids are non-zero and distinct.
fn validate_node_ids(nodes: &[NodeId]) -> Result<(), ConfigError> {
    if nodes.contains(&0) {
        return Err(ConfigError::ZeroNodeId);
    }
    let mut sorted = nodes.to_vec();
    sorted.sort_unstable();
    match sorted.windows(2).find(|pair| pair[0] == pair[1]) {
        Some(pair) => Err(ConfigError::DuplicateNode(pair[0])),
        None => Ok(()),
    }
}

/// Every read quorum must meet every write quorum, or a new leader could miss a decided entry.
fn validate_flexible_quorum(
    flexible_quorum: Option<FlexibleQuorum>,
    nodes: usize,
) -> Result<(), ConfigError> {
    let Some(FlexibleQuorum { read_quorum_size, write_quorum_size }) = flexible_quorum else {
        return Ok(());
    };
    if !(1..=nodes).contains(&read_quorum_size) {
        return Err(ConfigError::ReadQuorumOutOfRange { read_quorum_size, nodes });
    }
    if !(1..=nodes).contains(&write_quorum_size) {
        return Err(ConfigError::WriteQuorumOutOfRange { write_quorum_size, nodes });
    }
    if read_quorum_size + write_quorum_size <= nodes {
        return Err(ConfigError::QuorumsDoNotIntersect { read_quorum_size, write_quorum_size, nodes });
    }
    Ok(())
}

/// The limits on proposals held in memory.
fn check_timeout(key: &'static str, ticks: u64) -> Result<(), ConfigError> {
    if ticks > MAX_TIMEOUT_TICKS {
        return Err(ConfigError::TimeoutTooLarge { key, ticks });
    }
    Ok(())
}

fn validate_buffering(buffer_size: usize, batch_size: usize) -> Result<(), ConfigError> {
    if buffer_size == 0 {
        return Err(ConfigError::ZeroBufferSize);
    }
    if batch_size == 0 {
        return Err(ConfigError::ZeroBatchSize);
    }
    if batch_size > buffer_size {
        return Err(ConfigError::BatchLargerThanBuffer { batch_size, buffer_size });
    }
    Ok(())
}

/// `pid` and `peers` together, in ascending order.
fn sorted_nodes(pid: NodeId, peers: &[NodeId]) -> Vec<NodeId> {
    let mut nodes = Vec::with_capacity(peers.len() + 1);
    nodes.push(pid);
    nodes.extend_from_slice(peers);
    nodes.sort_unstable();
    nodes
}

/// The flexible quorum if set, majorities of `nodes` otherwise.
fn quorum_of(flexible_quorum: Option<FlexibleQuorum>, nodes: usize) -> Quorum {
    flexible_quorum.map_or_else(|| Quorum::majority(nodes), Quorum::flexible)
}

/// The value of a required key.
fn required<T>(value: Option<T>, key: &'static str) -> Result<T, ConfigError> {
    value.ok_or(ConfigError::MissingKey(key))
}

/// Pairs the quorum sizes; one without the other is an error rather than a silent majority.
fn flexible_quorum(read: Option<usize>, write: Option<usize>) -> Result<Option<FlexibleQuorum>, ConfigError> {
    match (read, write) {
        (None, None) => Ok(None),
        (Some(read_quorum_size), Some(write_quorum_size)) => {
            Ok(Some(FlexibleQuorum { read_quorum_size, write_quorum_size }))
        }
        (Some(_), None) => Err(ConfigError::IncompleteFlexibleQuorum { missing_key: "write_quorum_size" }),
        (None, Some(_)) => Err(ConfigError::IncompleteFlexibleQuorum { missing_key: "read_quorum_size" }),
    }
}

/// Reads a whole configuration file.
fn read_file(path: &Path) -> Result<String, ConfigError> {
    fs::read_to_string(path).map_err(|source| ConfigError::ReadFile { path: path.to_path_buf(), source })
}

/// Parses TOML text into one of the key structs.
fn parse_toml<Keys: DeserializeOwned>(text: &str) -> Result<Keys, ConfigError> {
    Ok(toml::from_str(text)?)
}

/// The keys of a Sequence Paxos configuration as found in a file; `None` means absent.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SequencePaxosKeys {
    config_id: Option<ConfigurationId>,
    pid: Option<NodeId>,
    peers: Option<Vec<NodeId>>,
    log_file_path: Option<PathBuf>,
    buffer_size: Option<usize>,
    batch_size: Option<usize>,
    flush_batch_tick_timeout: Option<u64>,
    resend_message_tick_timeout: Option<u64>,
    leader_priority: Option<u32>,
    read_quorum_size: Option<usize>,
    write_quorum_size: Option<usize>,
    piggyback_decide: Option<bool>,
    cluster_id: Option<u64>,
    proposal_outcomes: Option<bool>,
    read_timeout_ticks: Option<u64>,
    read_lease_ticks: Option<u64>,
    max_clock_drift_percent: Option<u64>,
    max_sync_entries: Option<usize>,
}

impl SequencePaxosKeys {
    /// Reads only these keys, so an unrelated application key can never fail the load.
    fn from_hocon(cfg: &Hocon) -> Result<Self, ConfigError> {
        Ok(Self {
            config_id: hocon_integer(cfg, "config_id", EXPECTED_U32)?,
            pid: hocon_integer(cfg, "pid", EXPECTED_U64)?,
            peers: hocon_peers(cfg)?,
            log_file_path: hocon_path(cfg)?,
            buffer_size: hocon_integer(cfg, "buffer_size", EXPECTED_U64)?,
            batch_size: hocon_integer(cfg, "batch_size", EXPECTED_U64)?,
            flush_batch_tick_timeout: hocon_integer(cfg, "flush_batch_tick_timeout", EXPECTED_U64)?,
            resend_message_tick_timeout: hocon_integer(cfg, "resend_message_tick_timeout", EXPECTED_U64)?,
            leader_priority: hocon_integer(cfg, "leader_priority", EXPECTED_U32)?,
            read_quorum_size: hocon_integer(cfg, "read_quorum_size", EXPECTED_U64)?,
            write_quorum_size: hocon_integer(cfg, "write_quorum_size", EXPECTED_U64)?,
            piggyback_decide: hocon_bool(cfg, "piggyback_decide")?,
            cluster_id: hocon_integer(cfg, "cluster_id", EXPECTED_U64)?,
            proposal_outcomes: hocon_bool(cfg, "proposal_outcomes")?,
            read_timeout_ticks: hocon_integer(cfg, "read_timeout_ticks", EXPECTED_U64)?,
            read_lease_ticks: hocon_integer(cfg, "read_lease_ticks", EXPECTED_U64)?,
            max_clock_drift_percent: hocon_integer(cfg, "max_clock_drift_percent", EXPECTED_U64)?,
            max_sync_entries: hocon_integer(cfg, "max_sync_entries", EXPECTED_U64)?,
        })
    }
}

/// The keys of a Ballot Leader Election configuration as found in a file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BleKeys {
    config_id: Option<ConfigurationId>,
    pid: Option<NodeId>,
    peers: Option<Vec<NodeId>>,
    log_file_path: Option<PathBuf>,
    priority: Option<u32>,
    leader_priority: Option<u32>,
    hb_delay: Option<u64>,
    election_timeout_ticks: Option<u64>,
    initial_delay: Option<u64>,
    ble_buffer_size: Option<usize>,
    read_quorum_size: Option<usize>,
    write_quorum_size: Option<usize>,
}

impl BleKeys {
    /// Reads only these keys, so an unrelated application key can never fail the load.
    fn from_hocon(cfg: &Hocon) -> Result<Self, ConfigError> {
        Ok(Self {
            config_id: hocon_integer(cfg, "config_id", EXPECTED_U32)?,
            pid: hocon_integer(cfg, "pid", EXPECTED_U64)?,
            peers: hocon_peers(cfg)?,
            log_file_path: hocon_path(cfg)?,
            priority: hocon_integer(cfg, "priority", EXPECTED_U32)?,
            leader_priority: hocon_integer(cfg, "leader_priority", EXPECTED_U32)?,
            hb_delay: hocon_integer(cfg, "hb_delay", EXPECTED_U64)?,
            election_timeout_ticks: hocon_integer(cfg, "election_timeout_ticks", EXPECTED_U64)?,
            initial_delay: hocon_integer(cfg, "initial_delay", EXPECTED_U64)?,
            ble_buffer_size: hocon_integer(cfg, "ble_buffer_size", EXPECTED_U64)?,
            read_quorum_size: hocon_integer(cfg, "read_quorum_size", EXPECTED_U64)?,
            write_quorum_size: hocon_integer(cfg, "write_quorum_size", EXPECTED_U64)?,
        })
    }
}

/// The keys of both halves in one TOML file; anything else is a typo.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OmniPaxosKeys {
    config_id: Option<ConfigurationId>,
    pid: Option<NodeId>,
    peers: Option<Vec<NodeId>>,
    log_file_path: Option<PathBuf>,
    buffer_size: Option<usize>,
    batch_size: Option<usize>,
    flush_batch_tick_timeout: Option<u64>,
    resend_message_tick_timeout: Option<u64>,
    leader_priority: Option<u32>,
    priority: Option<u32>,
    hb_delay: Option<u64>,
    election_timeout_ticks: Option<u64>,
    initial_delay: Option<u64>,
    ble_buffer_size: Option<usize>,
    read_quorum_size: Option<usize>,
    write_quorum_size: Option<usize>,
    piggyback_decide: Option<bool>,
    cluster_id: Option<u64>,
    proposal_outcomes: Option<bool>,
    read_timeout_ticks: Option<u64>,
    read_lease_ticks: Option<u64>,
    max_clock_drift_percent: Option<u64>,
    max_sync_entries: Option<usize>,
}

impl OmniPaxosKeys {
    /// Hands each half its keys; the shared ones go to both.
    fn split(self) -> (SequencePaxosKeys, BleKeys) {
        let sequence_paxos = SequencePaxosKeys {
            config_id: self.config_id,
            pid: self.pid,
            peers: self.peers.clone(),
            log_file_path: self.log_file_path.clone(),
            buffer_size: self.buffer_size,
            batch_size: self.batch_size,
            flush_batch_tick_timeout: self.flush_batch_tick_timeout,
            resend_message_tick_timeout: self.resend_message_tick_timeout,
            leader_priority: self.leader_priority,
            read_quorum_size: self.read_quorum_size,
            write_quorum_size: self.write_quorum_size,
            piggyback_decide: self.piggyback_decide,
            cluster_id: self.cluster_id,
            proposal_outcomes: self.proposal_outcomes,
            read_timeout_ticks: self.read_timeout_ticks,
            read_lease_ticks: self.read_lease_ticks,
            max_clock_drift_percent: self.max_clock_drift_percent,
            max_sync_entries: self.max_sync_entries,
        };
        let ble = BleKeys {
            config_id: self.config_id,
            pid: self.pid,
            peers: self.peers,
            log_file_path: self.log_file_path,
            priority: self.priority,
            leader_priority: self.leader_priority,
            hb_delay: self.hb_delay,
            election_timeout_ticks: self.election_timeout_ticks,
            initial_delay: self.initial_delay,
            ble_buffer_size: self.ble_buffer_size,
            read_quorum_size: self.read_quorum_size,
            write_quorum_size: self.write_quorum_size,
        };
        (sequence_paxos, ble)
    }
}

/// The value of `key`, or `None` if it is absent or `null`. A document that is not an
/// object has no keys at all.
fn hocon_value<'a>(cfg: &'a Hocon, key: &str) -> Option<&'a Hocon> {
    match &cfg[key] {
        Hocon::Null
        | Hocon::BadValue(hocon::Error::MissingKey)
        | Hocon::BadValue(hocon::Error::InvalidKey) => None,
        value => Some(value),
    }
}

/// An integer key that must fit `T`; HOCON's string-to-number conversion applies.
fn hocon_integer<T: TryFrom<i64>>(
    cfg: &Hocon,
    key: &'static str,
    expected: &'static str,
) -> Result<Option<T>, ConfigError> {
    let Some(value) = hocon_value(cfg, key) else {
        return Ok(None);
    };
    let integer = value.as_i64().and_then(|integer| T::try_from(integer).ok());
    integer.map(Some).ok_or(ConfigError::WrongType { key, expected })
}

/// A boolean key; `None` when absent.
fn hocon_bool(cfg: &Hocon, key: &'static str) -> Result<Option<bool>, ConfigError> {
    let Some(value) = hocon_value(cfg, key) else {
        return Ok(None);
    };
    value.as_bool().map(Some).ok_or(ConfigError::WrongType { key, expected: "a boolean" })
}

/// The `peers` key: an array of node ids.
fn hocon_peers(cfg: &Hocon) -> Result<Option<Vec<NodeId>>, ConfigError> {
    let wrong_type = ConfigError::WrongType { key: "peers", expected: EXPECTED_PEERS };
    match hocon_value(cfg, "peers") {
        None => Ok(None),
        Some(Hocon::Array(items)) => items
            .iter()
            .map(|item| item.as_i64().and_then(|id| NodeId::try_from(id).ok()))
            .collect::<Option<Vec<NodeId>>>()
            .map(Some)
            .ok_or(wrong_type),
        Some(_) => Err(wrong_type),
    }
}

/// The `log_file_path` key.
fn hocon_path(cfg: &Hocon) -> Result<Option<PathBuf>, ConfigError> {
    let Some(value) = hocon_value(cfg, "log_file_path") else {
        return Ok(None);
    };
    let path = value.as_string().map(PathBuf::from);
    path.map(Some).ok_or(ConfigError::WrongType { key: "log_file_path", expected: EXPECTED_PATH })
}

/// A subscriber that appends this node's debug log, one line per event prefixed with
/// `pid=<pid>`, to the file at `path`, creating the file and its directories if needed.
///
/// Lines carry no timestamp and no colour: the core reads no clock, and a file is not a
/// terminal. The core wraps its handlers in `tracing::dispatcher::with_default` with it.
pub(crate) fn file_dispatch(path: &Path, pid: NodeId) -> Result<tracing::Dispatch, ConfigError> {
    let log_file_error = |source| ConfigError::LogFile { path: path.to_path_buf(), source };
    if let Some(directory) = path.parent().filter(|parent| !parent.as_os_str().is_empty()) {
        fs::create_dir_all(directory).map_err(log_file_error)?;
    }
    let file = fs::OpenOptions::new().create(true).append(true).open(path).map_err(log_file_error)?;
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(Mutex::new(file))
        .event_format(PidPrefix { pid, inner: format::Format::default().with_ansi(false).without_time() })
        .finish();
    Ok(tracing::Dispatch::new(subscriber))
}

/// The default line format without time, with `pid=<pid>` in front so that logs of several
/// nodes can be merged and still be told apart.
struct PidPrefix<Inner> {
    pid: NodeId,
    inner: Inner,
}

impl<Subscriber, Fields, Inner> FormatEvent<Subscriber, Fields> for PidPrefix<Inner>
where
    Subscriber: tracing::Subscriber + for<'a> LookupSpan<'a>,
    Fields: for<'a> FormatFields<'a> + 'static,
    Inner: FormatEvent<Subscriber, Fields>,
{
    fn format_event(
        &self,
        context: &FmtContext<'_, Subscriber, Fields>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        write!(writer, "pid={} ", self.pid)?;
        self.inner.format_event(context, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of its own under the system temporary directory, removed first so that
    /// an earlier failed run cannot change the outcome.
    fn fresh_directory(name: &str) -> PathBuf {
        let directory = std::env::temp_dir().join(format!("omnipaxos_config_{name}_{}", std::process::id()));
        let _ = fs::remove_dir_all(&directory);
        directory
    }

    #[test]
    fn file_dispatch_appends_lines_prefixed_with_pid() {
        let directory = fresh_directory("dispatch");
        let path = directory.join("nested").join("node3.log");
        for round in 0..2 {
            let dispatch = file_dispatch(&path, 3).expect("log file opens");
            tracing::dispatcher::with_default(&dispatch, || {
                tracing::debug!(round, "became leader");
                tracing::trace!("below the level, not written");
            });
        }
        let text = fs::read_to_string(&path).expect("log file exists");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "append mode keeps the first round: {text}");
        for (round, line) in lines.iter().enumerate() {
            assert!(line.starts_with("pid=3 "), "{line}");
            assert!(line.contains("became leader") && line.contains(&format!("round={round}")));
            assert!(!line.contains('\u{1b}'), "no ANSI colour codes: {line:?}");
        }
        fs::remove_dir_all(&directory).expect("clean up");
    }

    #[test]
    fn file_dispatch_reports_unopenable_path() {
        let directory = fresh_directory("unopenable");
        fs::create_dir_all(&directory).expect("create test directory");
        let blocking_file = directory.join("a_file");
        fs::write(&blocking_file, b"").expect("create blocking file");
        let path = blocking_file.join("node1.log");
        let error = file_dispatch(&path, 1).expect_err("a file cannot be a directory");
        assert!(matches!(&error, ConfigError::LogFile { path: failed, .. } if *failed == path));
        assert!(error.to_string().contains("cannot open log file"), "{error}");
        let source = std::error::Error::source(&error).expect("the io::Error");
        assert!(source.downcast_ref::<io::Error>().is_some());
        fs::remove_dir_all(&directory).expect("clean up");
    }

    #[test]
    fn config_error_stays_small() {
        // Larger errors make every `Result<_, ProposeErr>` larger (clippy's result_large_err).
        assert!(std::mem::size_of::<ConfigError>() <= 48, "{}", std::mem::size_of::<ConfigError>());
    }

    #[test]
    fn validate_cluster_config_checks_membership() {
        let cluster = |configuration_id, nodes: Vec<NodeId>| ClusterConfig {
            configuration_id,
            nodes,
            flexible_quorum: None,
        };
        assert!(validate_cluster_config(&cluster(2, vec![1, 2, 3])).is_ok());
        let unset = validate_cluster_config(&cluster(0, vec![1]));
        assert!(matches!(unset, Err(ConfigError::UnsetConfigurationId)));
        let empty = validate_cluster_config(&cluster(2, vec![]));
        assert!(matches!(empty, Err(ConfigError::NoNodes)));
        let zero = validate_cluster_config(&cluster(2, vec![1, 0]));
        assert!(matches!(zero, Err(ConfigError::ZeroNodeId)));
        let duplicate = validate_cluster_config(&cluster(2, vec![3, 1, 3]));
        assert!(matches!(duplicate, Err(ConfigError::DuplicateNode(3))));
        let mut no_intersection = cluster(2, vec![1, 2, 3, 4]);
        no_intersection.flexible_quorum = Some(FlexibleQuorum { read_quorum_size: 2, write_quorum_size: 2 });
        let error = validate_cluster_config(&no_intersection);
        assert!(matches!(error, Err(ConfigError::QuorumsDoNotIntersect { nodes: 4, .. })));
    }
}
