//! One simulated server: a replica per configuration it belongs to, the application (the
//! key-value state machine with its durable checkpoint) and the client requests it holds.
//!
//! ```text
//!   client request ──► submit ──► newest replica.append ──► ProposalId ─┐
//!   messages / ticks ─► replicas ──► take_proposal_outcomes ──► Decided(idx) ┘──► reply when the
//!                                └─► read_decided_suffix ──► application applies ──┘  entry at idx
//!                                                                  │                  is applied
//!                  decided StopSign, log fully applied ──► start the next configuration's replica
//! ```
//!
//! The application is volatile, like any process memory, but checkpoints its state machine to
//! its own durable store every few entries; after a crash it resumes from the checkpoint and
//! replays the log (or rebuilds from a snapshot, if the log was compacted past the checkpoint).
//! The simulator trims logs only below every member's checkpoint, as an application must.

use std::collections::{BTreeMap, BTreeSet};

use omnipaxos_core::{
    errors::ReplicaError,
    messages::Message,
    sequence_paxos::{
        DropReason, ProposalOutcome, ReadConsistency, ReadFailure, ReadId, ReadLease, ReadOutcome,
        SequencePaxosConfig,
    },
    storage::ClusterConfig,
    util::{ConfigurationId, LogEntry, LogIndex, NodeId, ProposalId},
    OmniPaxos, OmniPaxosConfig,
};

use crate::{
    invariants::{Checker, Replica, Violation},
    kv::{ClientId, Command, Key, KvState, Op, OpResult, RequestId},
    mutation::Mutation,
    reads::{DriftClock, GetPath, ReadCounts},
    storage::{Amnesia, ArmedFailure, CrashedDisk, DiskLoss, SimStorage, StorageKind},
};

/// Timing knobs every replica of a run shares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplicaSettings {
    /// Ticks per heartbeat round: the election timeout.
    pub hb_delay_ticks: u64,
    /// Ticks after which lost messages are resent.
    pub resend_ticks: u64,
    /// Proposals per leader batch.
    pub batch_size: usize,
    /// Proposals that may wait in memory (`buffer_size`), which also bounds the outcomes kept.
    pub buffer_size: usize,
    /// Leases for reads (`set_read_lease`), in the seeds that use them; `None`: read index only.
    pub read_lease: Option<ReadLease>,
    /// A deliberately reintroduced core bug (`--mutation`, feature `mutations`).
    pub mutation: Option<Mutation>,
}

/// The core's default `buffer_size`.
pub const DEFAULT_BUFFER_SIZE: usize = 100_000;

/// The configuration of `pid`'s replica in `cluster`.
pub fn replica_config(pid: NodeId, cluster: &ClusterConfig, settings: ReplicaSettings) -> OmniPaxosConfig {
    let mut sp = SequencePaxosConfig::default();
    sp.set_configuration_id(cluster.configuration_id);
    sp.set_pid(pid);
    sp.set_peers(cluster.nodes.iter().copied().filter(|&p| p != pid).collect());
    sp.set_resend_message_tick_timeout(settings.resend_ticks);
    sp.set_batch_size(settings.batch_size);
    sp.set_buffer_size(settings.buffer_size);
    sp.set_flush_batch_tick_timeout(2);
    sp.set_flexible_quorum(cluster.flexible_quorum);
    sp.set_read_lease(settings.read_lease);
    let mut config = OmniPaxosConfig::new(sp);
    config.set_hb_delay(settings.hb_delay_ticks);
    #[cfg(feature = "mutations")]
    config.set_mutation(settings.mutation);
    config
}

/// The configuration id a message belongs to.
pub fn message_config(m: &Message<Command, crate::kv::KvSnapshot>) -> ConfigurationId {
    match m {
        Message::SequencePaxos(p) => p.config_id,
        Message::BLE(b) => b.config_id,
    }
}

/// A reply to a client: the result, or `None` if the request was definitely not executed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The client to answer.
    pub client: ClientId,
    /// The request answered.
    pub request: RequestId,
    /// The result, or `None`: refused, never executed.
    pub result: Option<OpResult>,
    /// With a refused get in leader-read mode: the leader this node knows, for the next get.
    pub leader_hint: Option<NodeId>,
}

impl Reply {
    /// A reply with `result` and no leader hint.
    pub fn new(client: ClientId, request: RequestId, result: Option<OpResult>) -> Reply {
        Reply { client, request, result, leader_hint: None }
    }
}

/// What the application persisted of its state machine.
#[derive(Clone, Debug)]
struct Checkpoint {
    config_id: ConfigurationId,
    applied: LogIndex,
    state: KvState,
    /// The node left the cluster: it is in no configuration after `config_id`.
    finished: bool,
}

/// The volatile application.
#[derive(Clone, Debug)]
struct App {
    /// The configuration whose log it applies.
    config_id: ConfigurationId,
    /// Entries of that log applied.
    applied: LogIndex,
    state: KvState,
    /// Results of applied entries, for replies whose outcome arrives later.
    results: BTreeMap<(ConfigurationId, LogIndex), (RequestId, OpResult)>,
    /// This node is in no later configuration: nothing more to apply.
    finished: bool,
}

impl App {
    fn from_checkpoint(checkpoint: &Checkpoint) -> App {
        App {
            config_id: checkpoint.config_id,
            applied: checkpoint.applied,
            state: checkpoint.state.clone(),
            results: BTreeMap::new(),
            finished: checkpoint.finished,
        }
    }
}

/// What `settle` did besides replying.
#[derive(Clone, Debug, Default)]
pub struct Settled {
    /// Replies to send.
    pub replies: Vec<Reply>,
    /// Configurations this node's application moved into.
    pub started: Vec<ClusterConfig>,
}

/// One simulated server.
pub struct Node {
    pid: NodeId,
    up: bool,
    settings: ReplicaSettings,
    /// The backend of every replica's disk.
    storage: StorageKind,
    replicas: BTreeMap<ConfigurationId, Replica>,
    /// The disks of the replicas while the node is down.
    down_storage: BTreeMap<ConfigurationId, CrashedDisk>,
    configs: BTreeMap<ConfigurationId, OmniPaxosConfig>,
    app: App,
    checkpoint: Checkpoint,
    checkpoint_every: u64,
    /// Requests appended here and not yet answered, by the proposal that carries them.
    requests: BTreeMap<(ConfigurationId, ProposalId), (ClientId, RequestId)>,
    /// Requests decided at an index the application has not applied yet.
    awaiting_apply: BTreeMap<(ConfigurationId, LogIndex), (ClientId, RequestId)>,
    /// The state machine as each configuration started here (durable, like the checkpoint):
    /// what a node joining that configuration must start from.
    initial_states: BTreeMap<ConfigurationId, KvState>,
    /// A deliberately wrong design for testing the checkers: answer reads from the local state
    /// machine at once, without going through the log (stale reads from followers).
    pub read_locally: bool,
    /// How client gets are served.
    pub get_path: GetPath,
    /// This node's clock (drift in lease seeds).
    pub clock: DriftClock,
    /// Reads asked of a replica and not settled yet, by (configuration, read id).
    reads: BTreeMap<(ConfigurationId, ReadId), PendingRead>,
    /// Reads whose index is known, waiting for the application to apply up to it.
    ready_reads: Vec<ReadyRead>,
    /// Client gets by how they were served.
    pub read_counts: ReadCounts,
    /// Replies found outside `settle`, sent by the next `settle`.
    stashed_replies: Vec<Reply>,
    /// A violation seen where it could not be returned (a read's outcome at submission); the
    /// next `settle` reports it.
    stashed_violation: Option<Violation>,
    /// Configurations in which this node's replica is a learner: its disk lost state it may
    /// have acknowledged (durable: the disk holds the learner promise from the restart on).
    learner_in: BTreeSet<ConfigurationId>,
    /// Restarts over a fresh (wiped or replaced) disk so far: each such process gets its own
    /// `process_nonce` (the simulator's stand-in for a runtime's start time or randomness).
    fresh_starts: u32,
    /// Replica disks destroyed while the node was down: the restart must not take them for a
    /// log that is simply missing (`OpenMode::Replace` instead of `Restart`).
    wiped: BTreeSet<ConfigurationId>,
    /// Replica disks whose crash kept unsynced bytes: recovery may report a possible loss.
    suspect_loss: BTreeSet<ConfigurationId>,
    /// Deliberately unsafe (`--amnesia-voter`): a replica that lost its disk restarts as a
    /// voter, to show that the simulator then finds agreement broken.
    pub amnesia_voter: bool,
    /// A replica whose storage reports a possible loss becomes a learner over the log
    /// recovery left (`--learner-keeps-log`), instead of over an empty one.
    pub learner_keeps_log: bool,
}

/// What a restart found.
#[derive(Clone, Debug, Default)]
pub struct Restarted {
    /// What the disks' recovery repaired or reported, and restarts as learners, as
    /// `(summary name, trace detail)`.
    pub findings: Vec<(&'static str, String)>,
    /// Configurations whose replica starts over a fresh disk (its incarnations count anew).
    pub fresh_disks: Vec<ConfigurationId>,
}

/// A client get waiting for its read's outcome.
#[derive(Clone, Copy, Debug)]
struct PendingRead {
    client: ClientId,
    request: RequestId,
    key: Key,
    /// How the replica stood when the read was issued: where it is served.
    role: ReadRole,
}

/// Where a read was issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReadRole {
    Leader,
    Follower,
    Learner,
}

/// A read whose index is known: served once the application applied `idx` of `config_id`.
#[derive(Clone, Copy, Debug)]
struct ReadyRead {
    config_id: ConfigurationId,
    idx: LogIndex,
    read: PendingRead,
}

impl Node {
    /// A node that starts in `cluster` with the state machine `state` (empty at the start of a
    /// run; the previous configuration's final state for a node that joins later).
    pub fn new(
        pid: NodeId,
        cluster: &ClusterConfig,
        settings: ReplicaSettings,
        storage: StorageKind,
        state: KvState,
        checkpoint_every: u64,
    ) -> Node {
        let checkpoint =
            Checkpoint { config_id: cluster.configuration_id, applied: 0, state, finished: false };
        let mut node = Node {
            pid,
            up: true,
            settings,
            storage,
            replicas: BTreeMap::new(),
            down_storage: BTreeMap::new(),
            configs: BTreeMap::new(),
            app: App::from_checkpoint(&checkpoint),
            checkpoint,
            checkpoint_every: checkpoint_every.max(1),
            requests: BTreeMap::new(),
            awaiting_apply: BTreeMap::new(),
            initial_states: BTreeMap::new(),
            read_locally: false,
            get_path: GetPath::Log,
            clock: DriftClock::exact(),
            reads: BTreeMap::new(),
            ready_reads: Vec::new(),
            read_counts: ReadCounts::default(),
            stashed_replies: Vec::new(),
            stashed_violation: None,
            learner_in: BTreeSet::new(),
            fresh_starts: 0,
            wiped: BTreeSet::new(),
            suspect_loss: BTreeSet::new(),
            amnesia_voter: false,
            learner_keeps_log: false,
        };
        node.initial_states.insert(cluster.configuration_id, node.checkpoint.state.clone());
        node.start_replica(cluster);
        node
    }

    fn start_replica(&mut self, cluster: &ClusterConfig) {
        let config = replica_config(self.pid, cluster, self.settings);
        let storage = SimStorage::new(self.storage, self.pid, cluster.configuration_id);
        let replica = OmniPaxos::with(config.clone(), storage);
        self.configs.insert(cluster.configuration_id, config);
        self.replicas.insert(cluster.configuration_id, replica);
    }

    /// This node's id.
    pub fn pid(&self) -> NodeId {
        self.pid
    }

    /// True unless crashed.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// The replica of a configuration, if the node is up and has one.
    pub fn replica(&self, config_id: ConfigurationId) -> Option<&Replica> {
        self.replicas.get(&config_id)
    }

    /// Every running replica, by configuration.
    pub fn replicas(&self) -> impl Iterator<Item = (ConfigurationId, &Replica)> {
        self.replicas.iter().map(|(&c, r)| (c, r))
    }

    /// The newest configuration this node runs a replica of.
    pub fn newest_config(&self) -> Option<ConfigurationId> {
        self.configs.keys().next_back().copied()
    }

    /// True if this node has (or had, before a crash) a replica of `config_id`.
    pub fn has_config(&self, config_id: ConfigurationId) -> bool {
        self.configs.contains_key(&config_id)
    }

    /// The application's checkpoint: (configuration, entries applied).
    pub fn checkpoint_position(&self) -> (ConfigurationId, LogIndex) {
        (self.checkpoint.config_id, self.checkpoint.applied)
    }

    /// The application's current position, and whether it left the cluster.
    pub fn app_position(&self) -> (ConfigurationId, LogIndex, bool) {
        (self.app.config_id, self.app.applied, self.app.finished)
    }

    /// The state machine's current state.
    pub fn app_state(&self) -> &KvState {
        &self.app.state
    }

    /// One real tick: every replica ticks as often as this node's clock saw (0, 1 or 2 times
    /// with drift, else once).
    pub fn tick(&mut self) -> Result<(), ReplicaError> {
        for _ in 0..self.clock.advance() {
            for replica in self.replicas.values_mut() {
                replica.tick()?;
            }
        }
        Ok(())
    }

    /// The process resumes after a pause: every replica's read lease ends, as the runtime ends
    /// it when a tick comes late (a lease counted in ticks the clock missed would outlive real
    /// time).
    pub fn expire_read_leases(&mut self) {
        for replica in self.replicas.values_mut() {
            replica.expire_read_lease();
        }
    }

    /// Hands a message to the replica of its configuration; dropped if there is none.
    pub fn handle(&mut self, m: Message<Command, crate::kv::KvSnapshot>) -> Result<(), ReplicaError> {
        match self.replicas.get_mut(&message_config(&m)) {
            Some(replica) => replica.handle_incoming(m),
            None => Ok(()),
        }
    }

    /// Flushes every replica and collects its messages; calls `flushed` for each that flushed.
    pub fn take_outgoing(
        &mut self,
        out: &mut Vec<Message<Command, crate::kv::KvSnapshot>>,
        mut flushed: impl FnMut(ConfigurationId, &Replica),
    ) -> Result<(), ReplicaError> {
        for (&config_id, replica) in self.replicas.iter_mut() {
            replica.take_outgoing_messages(out)?;
            flushed(config_id, replica);
        }
        Ok(())
    }

    /// A client request arrives: append it to the newest configuration's log. A refusal is
    /// answered at once (the request was definitely not executed).
    pub fn submit(&mut self, client: ClientId, command: Command) -> Option<Reply> {
        let request = command.request;
        let refused = Some(Reply::new(client, request, None));
        if self.app.finished {
            return refused;
        }
        if let (true, Op::Get { key }) = (self.read_locally, command.op) {
            return Some(Reply::new(client, request, Some(OpResult::Read(self.app.state.get(key)))));
        }
        if let (GetPath::ReadIndex | GetPath::LeaderReadIndex, Op::Get { key }) = (self.get_path, command.op)
        {
            return self.submit_read(client, request, key);
        }
        let Some((&config_id, replica)) = self.replicas.iter_mut().next_back() else { return refused };
        match replica.append(command) {
            Ok(id) => {
                self.requests.insert((config_id, id), (client, request));
                None
            }
            Err(_) => refused,
        }
    }

    /// A get in a read-index mode: `read_index()` at the newest replica. In leader-read mode a
    /// node that does not lead refuses and names the leader it knows.
    fn submit_read(&mut self, client: ClientId, request: RequestId, key: Key) -> Option<Reply> {
        let refused = Some(Reply::new(client, request, None));
        let Some((&config_id, replica)) = self.replicas.iter_mut().next_back() else { return refused };
        let role = match (replica.is_accepting_leader(), replica.sequence_paxos().is_learner()) {
            (true, _) => ReadRole::Leader,
            (false, true) => ReadRole::Learner,
            (false, false) => ReadRole::Follower,
        };
        if self.get_path == GetPath::LeaderReadIndex && role != ReadRole::Leader {
            self.read_counts.failed += 1;
            let leader_hint = replica.get_current_leader().map(|(pid, _)| pid).filter(|&p| p != self.pid);
            return Some(Reply { client, request, result: None, leader_hint });
        }
        // Every third get insists on a quorum round (`ReadConsistency::Confirmed`; the same
        // without a lease): derived from the request, not drawn from the generator.
        let consistency = match request.seq % 3 {
            0 => ReadConsistency::Confirmed,
            _ => ReadConsistency::LeaseIfHeld,
        };
        let Ok(id) = replica.read_index_with(consistency) else {
            self.read_counts.failed += 1;
            return refused;
        };
        self.read_counts.issued += 1;
        self.read_counts.confirmed += u64::from(consistency == ReadConsistency::Confirmed);
        self.reads.insert((config_id, id), PendingRead { client, request, key, role });
        let mut outcomes = Vec::new();
        replica.take_read_outcomes(&mut outcomes);
        if outcomes.iter().any(|&(ready, outcome)| ready == id && matches!(outcome, ReadOutcome::Ready(_))) {
            self.read_counts.ready_at_once += 1;
        }
        // Outcomes of other reads may have come with it: `settle`, right after, sends them all.
        let mut settled =
            Settled { replies: std::mem::take(&mut self.stashed_replies), ..Settled::default() };
        if let Err(violation) = self.note_read_outcomes(config_id, &outcomes, &mut settled) {
            self.stashed_violation.get_or_insert(violation);
        }
        self.stashed_replies = settled.replies;
        None
    }

    /// After any event: settle proposal and read outcomes, apply decided entries, answer
    /// clients, and move into the next configuration once a decided StopSign is applied.
    pub fn settle(&mut self, checker: &mut Checker) -> Result<Settled, Violation> {
        if let Some(violation) = self.stashed_violation.take() {
            return Err(violation);
        }
        let mut settled =
            Settled { replies: std::mem::take(&mut self.stashed_replies), ..Settled::default() };
        self.take_outcomes(&mut settled)?;
        self.take_read_outcomes(&mut settled)?;
        loop {
            self.apply_decided(checker, &mut settled)?;
            self.serve_ready_reads(&mut settled);
            if !self.maybe_start_next_config(&mut settled) {
                return Ok(settled);
            }
        }
    }

    fn take_read_outcomes(&mut self, settled: &mut Settled) -> Result<(), Violation> {
        if self.reads.is_empty() {
            return Ok(());
        }
        let mut outcomes = Vec::new();
        let config_ids: Vec<ConfigurationId> = self.replicas.keys().copied().collect();
        for config_id in config_ids {
            outcomes.clear();
            self.replicas.get_mut(&config_id).expect("listed").take_read_outcomes(&mut outcomes);
            self.note_read_outcomes(config_id, &outcomes, settled)?;
        }
        Ok(())
    }

    /// `Ready(idx)`: the read waits for the application to apply `idx`; `Failed`: refused
    /// (definitely not served, so the client may treat it as not executed).
    ///
    /// A read index that reaches a decided StopSign must come as
    /// `Failed(ReadFailure::Reconfigured)`: the configuration had ended when the read's round
    /// started, so writes of the next configuration may have completed before the read was
    /// issued, and this log says nothing about them. A `Ready` past the StopSign is a violation
    /// of `read_ready_only_within_its_configuration`. (Below the StopSign the round started
    /// before the configuration ended, and no write of the next one could have completed before
    /// the read was issued.)
    fn note_read_outcomes(
        &mut self,
        config_id: ConfigurationId,
        outcomes: &[(ReadId, ReadOutcome)],
        settled: &mut Settled,
    ) -> Result<(), Violation> {
        for &(id, outcome) in outcomes {
            let Some(read) = self.reads.remove(&(config_id, id)) else { continue };
            let sealed = |idx| {
                let replica = &self.replicas[&config_id];
                replica.is_reconfigured().is_some() && idx >= replica.get_decided_idx()
            };
            match outcome {
                ReadOutcome::Ready(idx) if sealed(idx) => {
                    return Err(Violation {
                        tick: 0,
                        property: "read_ready_only_within_its_configuration",
                        detail: format!(
                            "node {}: read {id:?} Ready({idx}) in configuration {config_id}, at or past its decided StopSign",
                            self.pid
                        ),
                    });
                }
                ReadOutcome::Failed(ReadFailure::Reconfigured) => {
                    self.read_counts.failed_reconfigured += 1;
                    settled.replies.push(Reply::new(read.client, read.request, None));
                }
                ReadOutcome::Ready(idx) => self.ready_reads.push(ReadyRead { config_id, idx, read }),
                ReadOutcome::Failed(_) => {
                    self.read_counts.failed += 1;
                    settled.replies.push(Reply::new(read.client, read.request, None));
                }
            }
        }
        Ok(())
    }

    /// Answers the reads whose index the application has applied, from the state machine now.
    fn serve_ready_reads(&mut self, settled: &mut Settled) {
        let (app_config, applied) = (self.app.config_id, self.app.applied);
        let (state, path, pid) = (&self.app.state, self.get_path, self.pid);
        let counts = &mut self.read_counts;
        self.ready_reads.retain(|ready| {
            let reached =
                ready.config_id < app_config || (ready.config_id == app_config && ready.idx <= applied);
            if reached {
                let read = ready.read;
                counts.served += 1;
                match read.role {
                    ReadRole::Leader => counts.served_at_leader += 1,
                    ReadRole::Follower => counts.served_at_follower += 1,
                    ReadRole::Learner => counts.served_at_learner += 1,
                }
                let value = OpResult::Read(state.get(read.key));
                let mut reply = Reply::new(read.client, read.request, Some(value));
                if path == GetPath::LeaderReadIndex {
                    reply.leader_hint = Some(pid);
                }
                settled.replies.push(reply);
            }
            !reached
        });
    }

    fn take_outcomes(&mut self, settled: &mut Settled) -> Result<(), Violation> {
        let mut outcomes = Vec::new();
        for (&config_id, replica) in self.replicas.iter_mut() {
            outcomes.clear();
            replica.take_proposal_outcomes(&mut outcomes);
            for &(id, outcome) in &outcomes {
                let Some((client, request)) = self.requests.remove(&(config_id, id)) else { continue };
                match outcome {
                    ProposalOutcome::Decided(idx) => {
                        if let Some(&(applied, result)) = self.app.results.get(&(config_id, idx)) {
                            if applied != request {
                                return Err(outcome_violation(self.pid, idx, request, applied));
                            }
                            settled.replies.push(Reply::new(client, request, Some(result)));
                        } else if (config_id, idx) >= (self.app.config_id, self.app.applied) {
                            self.awaiting_apply.insert((config_id, idx), (client, request));
                        }
                        // Otherwise the application skipped it inside a snapshot: its result is
                        // unknown here, and the client will time out (indeterminate).
                    }
                    ProposalOutcome::Dropped(DropReason::LogSealed) => {
                        settled.replies.push(Reply::new(client, request, None));
                    }
                    ProposalOutcome::Dropped(DropReason::Indeterminate) => {}
                }
            }
        }
        Ok(())
    }

    fn apply_decided(&mut self, checker: &mut Checker, settled: &mut Settled) -> Result<(), Violation> {
        let config_id = self.app.config_id;
        let Some(replica) = self.replicas.get(&config_id) else { return Ok(()) };
        if self.app.finished || self.app.applied >= replica.get_decided_idx() {
            return Ok(());
        }
        let entries = replica.read_decided_suffix(self.app.applied).unwrap_or_default();
        let mut idx = self.app.applied;
        for entry in entries {
            match entry {
                LogEntry::Snapshotted(snapshotted) => {
                    let initial = self.initial_states.get(&config_id).expect("every started configuration");
                    self.app.state = initial.with_snapshot(&snapshotted.snapshot);
                    idx = snapshotted.trimmed_idx;
                    self.app.applied = idx;
                    checker.applied_state_machines_agree(
                        self.pid,
                        config_id,
                        idx,
                        self.app.state.digest(),
                    )?;
                }
                LogEntry::Decided(command) => {
                    self.apply_one(checker, settled, config_id, idx, &command)?;
                    idx += 1;
                }
                LogEntry::StopSign(_, true) => {
                    idx += 1;
                    self.app.applied = idx;
                }
                other => {
                    return Err(Violation {
                        tick: 0,
                        property: "application_can_replay_its_log",
                        detail: format!(
                        "node {}: config {config_id} index {idx} reads {other:?}; the application is at {}",
                        self.pid, self.app.applied
                    ),
                    })
                }
            }
        }
        if self.app.applied >= self.checkpoint.applied + self.checkpoint_every {
            self.write_checkpoint();
        }
        Ok(())
    }

    fn apply_one(
        &mut self,
        checker: &mut Checker,
        settled: &mut Settled,
        config_id: ConfigurationId,
        idx: LogIndex,
        command: &Command,
    ) -> Result<(), Violation> {
        let result = self.app.state.apply(&command.op);
        self.app.applied = idx + 1;
        self.app.results.insert((config_id, idx), (command.request, result));
        checker.applied_state_machines_agree(self.pid, config_id, idx + 1, self.app.state.digest())?;
        if let Some((client, request)) = self.awaiting_apply.remove(&(config_id, idx)) {
            if request != command.request {
                return Err(outcome_violation(self.pid, idx, request, command.request));
            }
            settled.replies.push(Reply::new(client, request, Some(result)));
        }
        Ok(())
    }

    fn write_checkpoint(&mut self) {
        self.checkpoint = Checkpoint {
            config_id: self.app.config_id,
            applied: self.app.applied,
            state: self.app.state.clone(),
            finished: self.app.finished,
        };
    }

    /// Moves the application into the next configuration once the current log is sealed by a
    /// decided StopSign and fully applied. Returns true if it moved.
    fn maybe_start_next_config(&mut self, settled: &mut Settled) -> bool {
        let Some(replica) = self.replicas.get(&self.app.config_id) else { return false };
        let Some(stopsign) = replica.is_reconfigured() else { return false };
        if self.app.finished || self.app.applied < replica.get_decided_idx() {
            return false;
        }
        let next = stopsign.next_config;
        if !next.nodes.contains(&self.pid) {
            self.app.finished = true;
            self.write_checkpoint();
            return false;
        }
        if !self.configs.contains_key(&next.configuration_id) {
            self.start_replica(&next);
        }
        self.initial_states.entry(next.configuration_id).or_insert_with(|| self.app.state.clone());
        self.app.config_id = next.configuration_id;
        self.app.applied = 0;
        self.write_checkpoint();
        settled.started.push(next);
        true
    }

    /// The process dies: each replica's disk loses what `loss` says for it (given the disk,
    /// whose kind and unflushed calls it may look at), and everything in memory is lost.
    pub fn crash(&mut self, mut loss: impl FnMut(&SimStorage) -> DiskLoss) {
        for (config_id, replica) in std::mem::take(&mut self.replicas) {
            let storage = replica.sequence_paxos().storage();
            let lost = loss(storage);
            if lost.may_report_possible_loss() {
                self.suspect_loss.insert(config_id);
            }
            self.down_storage.insert(config_id, storage.crash_disk(lost));
        }
        self.app = App::from_checkpoint(&self.checkpoint);
        self.requests.clear();
        self.awaiting_apply.clear();
        self.reads.clear();
        self.ready_reads.clear();
        self.stashed_replies.clear();
        self.up = false;
    }

    /// A new process starts over the disks the crash left; each disk is opened (for the
    /// persistent backend: the write-ahead log's recovery), then each replica recovers by itself
    /// (`OmniPaxos::try_with` runs `fail_recovery` when the disk holds a promise).
    /// Returns what the disks' recovery repaired, as `(name, detail)` (see
    /// [`SimStorage::recovery_findings`]).
    ///
    /// A disk that lost state the replica may have acknowledged — destroyed by an amnesia fault
    /// (crashable backend: the simulator knows), or one whose storage reports
    /// `acknowledged_state_may_be_lost` (persistent backend: a log it could not vouch for, or
    /// one opened with `OpenMode::Replace` because the old one was missing or refused) — makes
    /// the replica restart as a learner, for good in that configuration (unless
    /// [`Node::amnesia_voter`], the deliberately unsafe variant).
    ///
    /// A replica that becomes a learner over a log that recovery opened with a possible loss
    /// starts over an empty log instead (`OpenMode::Replace`), unless
    /// [`Node::learner_keeps_log`]: its log may hold entries it accepted but that were never
    /// decided, and the core's learner takes everything in its log for decided (a core bug,
    /// see docs/simulator.md). Returns what recovery found and the configurations whose replica
    /// starts over a fresh disk.
    pub fn restart(&mut self) -> Result<Restarted, String> {
        let mut findings = Vec::new();
        let mut fresh_disks = Vec::new();
        self.suspect_loss.clear();
        for (config_id, disk) in std::mem::take(&mut self.down_storage) {
            let wiped = self.wiped.remove(&config_id);
            let storage = match disk.recover() {
                Ok(storage) => storage,
                // The operator finds the log missing or damaged beyond repair, removes what is
                // left and starts over a replaced log (which records the possible loss).
                Err(e) if wiped => {
                    findings.push(("amnesia-log-replaced", format!("c{config_id}: {e}")));
                    SimStorage::replaced(self.storage, self.pid, config_id)
                }
                Err(e) => return Err(format!("node {} config {config_id} cannot reopen: {e}", self.pid)),
            };
            findings.extend(
                storage
                    .recovery_findings()
                    .into_iter()
                    .map(|(name, detail)| (name, format!("c{config_id}: {detail}"))),
            );
            let signalled = storage.acknowledged_state_may_be_lost();
            let lost = signalled || (wiped && self.storage == StorageKind::Crashable);
            if wiped && !lost {
                // A damaged persistent log that recovery opened without reporting a loss.
                findings
                    .push(("amnesia-undetected", format!("c{config_id}: opened without a possible loss")));
            }
            let mut storage = storage;
            if wiped {
                fresh_disks.push(config_id);
            }
            if lost && !self.learner_in.contains(&config_id) {
                if self.amnesia_voter {
                    findings.push(("amnesia-restarted-as-voter", format!("c{config_id}: unsafe")));
                } else {
                    if !wiped && !self.learner_keeps_log {
                        findings.push(("possible-loss-log-replaced", format!("c{config_id}: log replaced")));
                        storage = SimStorage::replaced(self.storage, self.pid, config_id);
                        fresh_disks.push(config_id);
                    }
                    findings.push(("restarted-as-learner", format!("c{config_id}: as a learner")));
                    self.learner_in.insert(config_id);
                    let config = self.configs.get_mut(&config_id).expect("every replica has a config");
                    config.sequence_paxos.set_learner(true);
                }
            }
            let mut config = self.configs[&config_id].clone();
            if fresh_disks.contains(&config_id) {
                // A fresh disk counts incarnations from 1 again: the nonce keeps this process's
                // read request numbers apart from its earlier lives' (above any incarnation).
                self.fresh_starts += 1;
                config.sequence_paxos.set_process_nonce(0x8000_0000 | self.fresh_starts);
            }
            let replica = OmniPaxos::try_with(config, storage)
                .map_err(|e| format!("node {} config {config_id} cannot restart: {e}", self.pid))?;
            self.replicas.insert(config_id, replica);
        }
        self.up = true;
        Ok(Restarted { findings, fresh_disks })
    }

    /// An amnesia fault on the down node: the disk of its newest replica loses state the replica
    /// acknowledged (see [`Amnesia`]). Returns that configuration and what was done.
    pub fn suffer_amnesia(&mut self, amnesia: Amnesia) -> Option<(ConfigurationId, String)> {
        assert!(!self.up, "amnesia strikes a node that is down");
        let config_id = *self.down_storage.keys().next_back()?;
        let disk = self.down_storage.remove(&config_id).expect("listed");
        let (disk, what) = disk.damaged(amnesia);
        self.down_storage.insert(config_id, disk);
        self.wiped.insert(config_id);
        Some((config_id, what))
    }

    /// True if this node's replica of `config_id` is a learner, or may restart as one (its disk
    /// was destroyed, or its crash may make recovery report a possible loss).
    pub fn may_be_learner(&self, config_id: ConfigurationId) -> bool {
        self.learner_in.contains(&config_id)
            || self.wiped.contains(&config_id)
            || self.suspect_loss.contains(&config_id)
    }

    /// True if this node's replica of `config_id` is a learner.
    pub fn is_learner_in(&self, config_id: ConfigurationId) -> bool {
        self.learner_in.contains(&config_id)
    }

    /// Allows or forbids crashes of this node's disks that may report a possible loss
    /// (see [`SimStorage::set_possible_loss_allowed`]); `allowed` says per configuration.
    pub fn set_possible_loss_allowed(&self, allowed: impl Fn(ConfigurationId) -> bool) {
        for (&config_id, replica) in &self.replicas {
            replica.sequence_paxos().storage().set_possible_loss_allowed(allowed(config_id));
        }
    }

    /// The state machine as `config_id` started at this node, if it did.
    pub fn initial_state(&self, config_id: ConfigurationId) -> Option<&KvState> {
        self.initial_states.get(&config_id)
    }

    /// Changes the leader priority of the newest replica's Ballot Leader Election (lost at a
    /// restart, like any runtime setting). Returns the configuration, if the node runs one.
    pub fn set_priority(&mut self, priority: u32) -> Option<ConfigurationId> {
        let (&config_id, replica) = self.replicas.iter_mut().next_back()?;
        replica.set_priority(priority);
        Some(config_id)
    }

    /// Arms a disk failure on the newest replica's storage.
    pub fn arm_storage_failure(&mut self, failure: ArmedFailure) {
        if let Some(replica) = self.replicas.values().next_back() {
            replica.sequence_paxos().storage().arm(Some(failure));
        }
    }

    /// Disarms every armed disk failure (the liveness phase).
    pub fn disarm_storage_failures(&mut self) {
        for replica in self.replicas.values() {
            replica.sequence_paxos().storage().arm(None);
        }
    }

    /// A mutable handle on a replica, for the nemesis (trim, snapshot, reconfigure).
    pub fn replica_mut(&mut self, config_id: ConfigurationId) -> Option<&mut Replica> {
        self.replicas.get_mut(&config_id)
    }
}

fn outcome_violation(pid: NodeId, idx: LogIndex, expected: RequestId, found: RequestId) -> Violation {
    Violation {
        tick: 0,
        property: "proposal_outcome_names_its_entry",
        detail: format!("node {pid}: outcome Decided({idx}) for {expected}, but index {idx} holds {found}"),
    }
}
