//! Sequence Paxos: one replica of the replicated log.
//!
//! ```text
//!   handle_leader(ballot) ─┐         ┌─► take_outgoing_messages(buf)  (flush, then release)
//!   handle(message) ───────┼─► role ─┤
//!   append / reconfigure ──┤  handler└─► storage.write_atomically(ops)  (buffered writes)
//!   tick() ────────────────┘
//! ```
//!
//! Roles are an enum that owns its data: a `Role::Follower` is in phase Idle, Prepare, Accept
//! or Recover; a `Role::Leader` is in phase Prepare (collecting promises) or Accept. Every
//! message is checked once at [`SequencePaxos::handle`] (receiver, sender, configuration) and
//! then goes to one `handle_<message>` function.
//!
//! Key decision: messages are queued, never sent directly, and the only way out is
//! `take_outgoing_messages`, which first flushes storage. So no Promise, Accepted or any other
//! message can leave before the writes it depends on are durable, and one flush covers every
//! message handled since the last call (group commit).

mod context;
mod follower;
mod leader;
mod learner;
mod proposals;
mod read;
mod reads;
mod roles;

use std::fmt::Debug;

pub use proposals::{DropReason, ProposalOutcome};
pub use reads::{ReadConsistency, ReadFailure, ReadId, ReadLease, ReadOutcome};

pub use crate::config::SequencePaxosConfig;
use crate::{
    ballot::Ballot,
    config::ConfigError,
    errors::{CompactionErr, ProposeErr, ReadErr, ReplicaError},
    messages::{Compaction, PaxosMessage, PaxosMsg, PrepareReq},
    storage::{ClusterConfig, ReplicaIdentity, Snapshot, StopSign, Storage, StorageError, StorageOp},
    util::{LogIndex, NodeId, Proposal, ProposalId},
};
use context::{Context, DurableState};
use follower::{Follower, FollowerPhase};
use leader::Leader;

/// A replica's role, owning the data only that role has. One per replica, so the size
/// difference between the variants costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
enum Role<T, S> {
    Follower(Follower<T, S>),
    Leader(Leader<T, S>),
}

/// One replica of the replicated log. See the module docs.
pub struct SequencePaxos<T, S, B> {
    ctx: Context<T, S, B>,
    role: Role<T, S>,
    /// The highest leader ballot known (from `handle_leader` or a Prepare). Forwards go to it.
    leader: Ballot,
    /// A StopSign forwarded to the leader and not yet in the log.
    pending_stopsign: Option<StopSign>,
    flush_batch_ticks: u64,
    /// Where a learner asks for decided entries (unused by voters).
    learner: learner::LearnerState,
    /// The end of the log the leader of this ballot adopted, from its AcceptSync (in memory: a
    /// restarted replica forwards nothing until synchronised again).
    adopted_end: Option<(Ballot, LogIndex)>,
    /// An input arrived since the last `take_outgoing_messages` (held decisions may still ride
    /// on what it causes); a call without one means the replica is idle.
    input_since_take: bool,
    resend_clock: u64,
    flush_clock: u64,
    dispatch: Option<tracing::Dispatch>,
}

/// Runs `f` under the replica's own log file, if it has one.
macro_rules! logged {
    ($self:ident, $body:expr) => {{
        match $self.dispatch.clone() {
            Some(dispatch) => tracing::dispatcher::with_default(&dispatch, || $body),
            None => $body,
        }
    }};
}

impl<T, S, B> SequencePaxos<T, S, B>
where
    T: Clone + Debug,
    S: Snapshot<T>,
    B: Storage<T, S>,
{
    /// Creates a replica over `storage`, which may hold state from an earlier run.
    ///
    /// # Panics
    /// If the configuration is invalid or the storage fails: use [`SequencePaxos::try_with`] to
    /// get these as errors.
    pub fn with(config: SequencePaxosConfig, storage: B) -> Self {
        match Self::try_with(config, storage) {
            Ok(sp) => sp,
            Err(e) => panic!("cannot create SequencePaxos: {e}"),
        }
    }

    /// Creates a replica over `storage`, which may hold state from an earlier run. If the storage
    /// holds a promise, the replica starts recovering at once (as after
    /// [`SequencePaxos::fail_recovery`]); it never overwrites a persisted promise.
    pub fn try_with(config: SequencePaxosConfig, storage: B) -> Result<Self, CreateError> {
        config.validate()?;
        let dispatch = match config.log_file_path() {
            Some(path) => Some(crate::config::file_dispatch(path, config.pid())?),
            None => None,
        };
        let identity = ReplicaIdentity {
            cluster_id: config.cluster_id(),
            configuration_id: config.configuration_id(),
            pid: config.pid(),
        };
        let stored_identity = storage.get_identity()?;
        if let Some(stored) = stored_identity {
            if stored != identity && !mutated!(config, IgnoreIdentity) {
                return Err(CreateError::IdentityMismatch { stored, expected: identity });
            }
        }
        let state = load_state(&storage)?;
        let mut ctx = Context::new(
            config.pid(),
            config.peers().to_vec(),
            config.configuration_id(),
            config.quorum(),
            config.batch_size(),
            config.buffer_size(),
            config.resend_message_tick_timeout(),
            storage,
            state,
        );
        ctx.piggyback_decide = config.piggyback_decide();
        ctx.max_sync_entries = config.max_sync_entries();
        ctx.read_timeout_ticks = config.read_timeout_ticks();
        ctx.lease = config.read_lease();
        // A restarted replica may have confirmed a lease just before it stopped.
        ctx.lease_confirmed_at = ctx.lease.map(|_| 0);
        #[cfg(feature = "mutations")]
        {
            ctx.mutation = config.mutation();
        }
        let incarnation = ctx.state.incarnation + 1;
        // Durable before any proposal id of this incarnation exists: ids must never repeat. The
        // first start also records whose storage this is.
        let mut ops = vec![StorageOp::SetIncarnation(incarnation)];
        if stored_identity.is_none() {
            ops.push(StorageOp::SetIdentity(identity));
        }
        ctx.write(ops)?;
        ctx.flush()?;
        ctx.reads = reads::ReadBook::for_process(incarnation, config.process_nonce());
        ctx.ledger = proposals::ProposalLedger::new(
            ctx.pid,
            incarnation,
            ABANDONED_PROPOSALS_MAX,
            config.proposal_outcomes(),
        );
        if mutated!(config, DropOutcomes) {
            ctx.ledger.drop_outcomes_beyond(ctx.buffer_size);
        }
        let learner_promise = learner::learner_promise(config.configuration_id(), config.pid());
        if config.learner() && ctx.state.promise != learner_promise {
            // Durable before anything else happens: this replica never votes again here.
            ctx.write([StorageOp::SetPromise(learner_promise)])?;
            ctx.flush()?;
            tracing::warn!(
                pid = ctx.pid,
                "starts as a learner: it lost its storage and never votes again in this configuration"
            );
        }
        let recovering = !ctx.state.promise.is_initial() && ctx.state.promise != learner_promise;
        let mut sp = SequencePaxos {
            leader: ctx.state.promise,
            ctx,
            role: Role::Follower(Follower::new(FollowerPhase::Idle)),
            pending_stopsign: None,
            flush_batch_ticks: config.flush_batch_tick_timeout(),
            resend_clock: 0,
            flush_clock: 0,
            learner: learner::LearnerState::default(),
            input_since_take: false,
            adopted_end: None,
            dispatch,
        };
        if recovering {
            sp.fail_recovery();
        }
        Ok(sp)
    }

    /// Call after restarting from persisted storage: the replica asks every peer for the current
    /// leader's Prepare (PrepareReq) and takes no part in the accept phase until it is
    /// synchronised again. Its persisted promise stays in force.
    pub fn fail_recovery(&mut self) {
        logged!(self, {
            tracing::info!(pid = self.ctx.pid, promise = %self.ctx.state.promise, "recovering");
            self.become_follower(FollowerPhase::Recover);
            let n = self.ctx.state.promise;
            for peer in self.ctx.peers.clone() {
                self.ctx.send(peer, PaxosMsg::PrepareReq(PrepareReq { n }));
            }
        })
    }

    /// Tells the replica which ballot Ballot Leader Election elected. If it is this replica's own
    /// ballot and higher than its promise, the replica becomes leader and sends Prepare;
    /// otherwise the ballot only tells where to forward proposals.
    pub fn handle_leader(&mut self, n: Ballot) -> Result<(), ReplicaError> {
        logged!(self, self.handle_leader_inner(n))
    }

    fn handle_leader_inner(&mut self, n: Ballot) -> Result<(), ReplicaError> {
        self.check_running()?;
        self.input_since_take = true;
        if n.config_id != self.ctx.config_id {
            tracing::debug!(pid = self.ctx.pid, ballot = %n, "leader ballot of another configuration ignored");
            return Ok(());
        }
        if n > self.leader {
            self.leader = n;
        }
        if n.pid == self.ctx.pid && n > self.ctx.state.promise {
            self.become_leader(n)?;
        }
        Ok(())
    }

    /// Handles one incoming message. Messages for another receiver, from unknown nodes or of
    /// another configuration are dropped (logged at debug level).
    pub fn handle(&mut self, m: PaxosMessage<T, S>) -> Result<(), ReplicaError> {
        logged!(self, self.handle_inner(m))
    }

    fn handle_inner(&mut self, m: PaxosMessage<T, S>) -> Result<(), ReplicaError> {
        self.check_running()?;
        self.input_since_take = true;
        if m.to != self.ctx.pid || !self.ctx.peers.contains(&m.from) || m.config_id != self.ctx.config_id {
            tracing::debug!(pid = self.ctx.pid, message = %m, "dropped: wrong receiver, unknown sender or other configuration");
            return Ok(());
        }
        tracing::trace!(message = %m, "handle");
        let from = m.from;
        let result = match m.msg {
            PaxosMsg::PrepareReq(req) => self.handle_prepare_req(from, req),
            PaxosMsg::Prepare(prep) => self.handle_prepare(from, prep),
            PaxosMsg::Promise(prom) => self.with_leader(|l, ctx| l.handle_promise(ctx, from, prom)),
            PaxosMsg::AcceptSync(sync) => self.handle_accept_sync(from, sync),
            PaxosMsg::AcceptDecide(acc) => {
                let result = self.with_follower(|f, ctx| f.handle_accept_decide(ctx, from, acc));
                // A catch-up chunk may complete the adopted log: forwards can go now.
                self.maybe_forward_proposals();
                result
            }
            PaxosMsg::Accepted(acc) => self.with_leader(|l, ctx| l.handle_accepted(ctx, from, acc)),
            PaxosMsg::NotAccepted(na) => self.handle_not_accepted(from, na.n),
            PaxosMsg::Decide(dec) => self.with_follower(|f, ctx| f.handle_decide(ctx, from, dec)),
            PaxosMsg::ProposalForward(fwd) => self.handle_proposal_forward(from, fwd),
            PaxosMsg::Compaction(c) => self.handle_compaction(from, c),
            PaxosMsg::AcceptStopSign(acc) => {
                self.with_follower(|f, ctx| f.handle_accept_stopsign(ctx, from, acc))
            }
            PaxosMsg::ForwardStopSign(ss) => self.handle_forward_stopsign(*ss),
            PaxosMsg::ReadConfirm(round) => {
                self.handle_read_confirm(from, round);
                Ok(())
            }
            PaxosMsg::ReadConfirmed(round) => {
                if let Role::Leader(leader) = &mut self.role {
                    leader.handle_read_confirmed(&mut self.ctx, from, round);
                }
                Ok(())
            }
            PaxosMsg::ReadRequest(request) => {
                if let Role::Leader(leader) = &mut self.role {
                    leader.handle_read_request(&mut self.ctx, from, request);
                }
                Ok(())
            }
            PaxosMsg::LearnerRequest(request) => {
                if let Role::Leader(leader) = &mut self.role {
                    leader.handle_learner_request(&mut self.ctx, from, request)
                } else {
                    Ok(())
                }
            }
            PaxosMsg::LearnerSync(sync) => self.handle_learner_sync(from, *sync),
            PaxosMsg::ReadReply(reply) => {
                if reply.n.pid == from {
                    let state = &self.ctx.state;
                    if state.promise == reply.n && state.accepted_round == reply.n {
                        // The leader of our log's round: its decided index applies to our log.
                        self.ctx.set_decided_idx(reply.decided_idx);
                    }
                    self.ctx.reads.answered(reply.n, reply.round, reply.read_idx);
                    self.ctx.reads.settle(
                        self.ctx.state.decided_idx,
                        self.ctx.now,
                        self.ctx.read_timeout_ticks,
                    );
                }
                Ok(())
            }
        };
        self.after_step();
        result.map_err(ReplicaError::from)
    }

    /// Appends an entry to the replicated log; works on every replica (followers forward it to
    /// the leader). Returns the proposal's id; its fate is reported by
    /// [`SequencePaxos::take_proposal_outcomes`].
    pub fn append(&mut self, entry: T) -> Result<ProposalId, ProposeErr<T>> {
        logged!(self, self.append_inner(entry))
    }

    fn append_inner(&mut self, entry: T) -> Result<ProposalId, ProposeErr<T>> {
        if self.ctx.stopped {
            return Err(ProposeErr::Stopped(entry));
        }
        self.input_since_take = true;
        if self.is_learner() {
            return Err(ProposeErr::Learner(entry));
        }
        if self.has_stopsign() {
            return Err(ProposeErr::PendingReconfigEntry(entry));
        }
        if self.pending_count() >= self.ctx.buffer_size
            || self.ctx.ledger.outcome_runs() >= self.ctx.buffer_size
        {
            return Err(ProposeErr::BufferFull(entry, self.ctx.buffer_size));
        }
        let id = self.ctx.ledger.next_id();
        let proposal = Proposal { id, entry };
        let result = match &mut self.role {
            Role::Leader(leader) => leader.propose(&mut self.ctx, proposal),
            Role::Follower(_) => {
                self.ctx.ledger.record_waiting(proposal);
                self.maybe_forward_proposals();
                Ok(())
            }
        };
        self.after_step();
        result.map(|()| id).map_err(ProposeErr::Storage)
    }

    /// Requests a linearizable read, without writing to the log; works on every replica
    /// (followers ask the leader for a read index). Its fate comes out of
    /// [`SequencePaxos::take_read_outcomes`]: `Ready(idx)` once this replica's decided index
    /// reaches the confirmed read index (then read the state machine after applying at least up
    /// to `idx`), or `Failed` (timed out, or this leader stepped down). Reads between two
    /// `take_outgoing_messages` calls share one confirmation round; with a read lease a leader
    /// answers at once (see [`SequencePaxos::read_index_with`] to insist on a round). See the
    /// `reads` module docs for why the result is linearizable.
    pub fn read_index(&mut self) -> Result<ReadId, ReadErr> {
        self.read_index_with(ReadConsistency::LeaseIfHeld)
    }

    /// Ends this leader's read lease now, if it holds one: reads take a confirmation round
    /// until a round started after this call is confirmed and grants a new lease (a round
    /// already in flight still confirms its reads, but grants no lease: it started on the
    /// clock that may have stopped). Call it whenever this replica's ticks may
    /// have fallen behind real time — the process was paused (SIGSTOP, a VM freeze), or the
    /// thread that ticks it was blocked for more than a tick (a slow fsync): leases are
    /// counted in ticks, and a lease counted on a clock that stopped would outlive the real
    /// one, while the other replicas (whose clocks ran) elect a new leader and decide.
    /// `omnipaxos_runtime` calls it when a tick is overdue.
    pub fn expire_read_lease(&mut self) {
        if let Role::Leader(leader) = &mut self.role {
            leader.expire_read_lease(&self.ctx);
        }
    }

    /// [`SequencePaxos::read_index`] with a choice per read: [`ReadConsistency::Confirmed`]
    /// never answers from a lease (a confirmation round with a quorum, safe whatever the
    /// clocks do), [`ReadConsistency::LeaseIfHeld`] lets a leader holding a lease answer at once.
    /// Without a configured lease both are the same.
    pub fn read_index_with(&mut self, consistency: ReadConsistency) -> Result<ReadId, ReadErr> {
        logged!(self, {
            if self.ctx.stopped {
                return Err(ReadErr::Stopped);
            }
            if self.ctx.reads.pending() >= self.ctx.buffer_size {
                return Err(ReadErr::BufferFull(self.ctx.buffer_size));
            }
            let id = self.ctx.reads.issue();
            let now = self.ctx.now;
            match &mut self.role {
                Role::Leader(leader) => leader.local_read(&mut self.ctx, id, now, consistency),
                Role::Follower(_) => self.ctx.reads.wait(id, now, consistency),
            }
            Ok(id)
        })
    }

    /// Moves the outcomes of this replica's reads into `buffer`.
    ///
    /// A read whose index reaches a decided StopSign fails with
    /// [`ReadFailure::Reconfigured`]: the configuration had ended when its round started, so
    /// writes of the next configuration may have completed before the read was requested, and
    /// this log says nothing about them. Read again in the next configuration.
    pub fn take_read_outcomes(&mut self, buffer: &mut Vec<(ReadId, ReadOutcome)>) {
        let from = buffer.len();
        self.ctx.reads.take_outcomes(buffer);
        if self.ctx.state.stopsign.is_some() && !mutated!(self.ctx, ReadPastStopSign) {
            // Ready(idx) means this replica decided up to idx, so its log holds the StopSign
            // (at position log_end) whenever idx passes it.
            let sealed_at = self.ctx.state.log_end;
            for (_, outcome) in &mut buffer[from..] {
                if matches!(outcome, ReadOutcome::Ready(idx) if *idx > sealed_at) {
                    *outcome = ReadOutcome::Failed(ReadFailure::Reconfigured);
                }
            }
        }
    }

    /// Proposes a StopSign that ends this configuration and names the next one. Once it is
    /// decided, [`SequencePaxos::is_reconfigured`] returns it and `append` fails.
    pub fn reconfigure(
        &mut self,
        new_configuration: ClusterConfig,
        metadata: Option<Vec<u8>>,
    ) -> Result<(), ProposeErr<T>> {
        logged!(self, self.reconfigure_inner(new_configuration, metadata))
    }

    fn reconfigure_inner(
        &mut self,
        next: ClusterConfig,
        metadata: Option<Vec<u8>>,
    ) -> Result<(), ProposeErr<T>> {
        if next.configuration_id <= self.ctx.config_id {
            return Err(ProposeErr::ConfigurationIdNotIncreasing(next, metadata));
        }
        if let Err(e) = validate_next_config(&next) {
            return Err(ProposeErr::ConfigError(e, next, metadata));
        }
        if self.ctx.stopped {
            return Err(ProposeErr::Storage(StorageError::Poisoned));
        }
        if self.is_learner() {
            return Err(ProposeErr::LearnerReconfig(next, metadata));
        }
        if self.has_stopsign() {
            return Err(ProposeErr::PendingReconfigConfig(next, metadata));
        }
        let ss = StopSign::with(next, metadata);
        let result = match &mut self.role {
            Role::Leader(leader) => leader.propose_stopsign(&mut self.ctx, ss),
            Role::Follower(_) => {
                self.pending_stopsign = Some(ss);
                self.maybe_forward_stopsign();
                Ok(())
            }
        };
        self.after_step();
        result.map_err(ProposeErr::Storage)
    }

    /// Advances logical time by one tick: flushes a partial batch every
    /// `flush_batch_tick_timeout` ticks and resends possibly lost messages every
    /// `resend_message_tick_timeout` ticks.
    pub fn tick(&mut self) -> Result<(), ReplicaError> {
        logged!(self, self.tick_inner())
    }

    fn tick_inner(&mut self) -> Result<(), ReplicaError> {
        self.check_running()?;
        self.input_since_take = true;
        self.ctx.persist_decided_idx()?;
        self.ctx.now += 1;
        self.flush_clock += 1;
        self.resend_clock += 1;
        if self.flush_clock >= self.flush_batch_ticks {
            self.flush_clock = 0;
            if let Role::Leader(leader) = &mut self.role {
                leader.flush_batch(&mut self.ctx)?;
            }
        }
        if let Role::Leader(leader) = &mut self.role {
            leader.on_tick(&mut self.ctx)?;
            leader.send_pending_decisions(&mut self.ctx);
        }
        self.ctx.reads.settle(self.ctx.state.decided_idx, self.ctx.now, self.ctx.read_timeout_ticks);
        if self.resend_clock >= self.ctx.resend_ticks {
            self.resend_clock = 0;
            self.resend()?;
        }
        self.after_step();
        Ok(())
    }

    /// Flushes storage, then moves every queued message into `buffer` (appending; the caller's
    /// buffer is reused). This is the replica's durability point: call it after handling a batch
    /// of messages and send what it returns, also on a single-node cluster, where it is what lets
    /// entries become decided.
    pub fn take_outgoing_messages(
        &mut self,
        buffer: &mut Vec<PaxosMessage<T, S>>,
    ) -> Result<(), ReplicaError> {
        logged!(self, self.take_outgoing_inner(buffer))
    }

    fn take_outgoing_inner(&mut self, buffer: &mut Vec<PaxosMessage<T, S>>) -> Result<(), ReplicaError> {
        self.check_running()?;
        if let Role::Leader(leader) = &mut self.role {
            leader.before_flush(&mut self.ctx)?;
        }
        self.ctx.flush()?;
        if let Role::Leader(leader) = &mut self.role {
            leader.after_flush(&mut self.ctx)?;
            // Deciding may have written the decided index; it need not be durable to send Decide.
            if !std::mem::take(&mut self.input_since_take) {
                // Idle: nothing new will carry held decisions soon.
                leader.send_pending_decisions(&mut self.ctx);
            }
            leader.absorb_local_reads(&mut self.ctx);
            leader.maybe_start_read_round(&mut self.ctx);
        } else {
            self.maybe_ask_read_index();
        }
        if buffer.is_empty() {
            std::mem::swap(buffer, &mut self.ctx.outgoing);
        } else {
            buffer.append(&mut self.ctx.outgoing);
        }
        if let Role::Leader(leader) = &mut self.role {
            leader.messages_taken();
        }
        if let Role::Follower(follower) = &mut self.role {
            follower.messages_taken();
        }
        Ok(())
    }

    /// Writes everything held in memory only (the decided index, which otherwise rides on the
    /// next write or tick) and flushes storage; for a graceful shutdown. Messages stay queued
    /// for the next `take_outgoing_messages`.
    pub fn persist_all(&mut self) -> Result<(), ReplicaError> {
        logged!(self, {
            self.check_running()?;
            self.ctx.persist_decided_idx()?;
            self.ctx.flush()?;
            Ok(())
        })
    }

    /// Moves the outcomes of this replica's own proposals (decided at an index, or dropped) into
    /// `buffer`. Outcomes are kept until taken, never dropped; while `buffer_size` runs of them
    /// wait, `append` refuses with `BufferFull` (see
    /// [`SequencePaxosConfig::set_proposal_outcomes`] to turn them off).
    pub fn take_proposal_outcomes(&mut self, buffer: &mut Vec<(ProposalId, ProposalOutcome)>) {
        self.ctx.ledger.take_outcomes(buffer);
    }

    /// A peer's connection was re-established (messages may have been lost): if it is the
    /// leader, ask it to synchronise this replica again.
    pub fn reconnected(&mut self, pid: NodeId) {
        logged!(self, {
            if pid == self.ctx.pid || !self.ctx.peers.contains(&pid) || self.ctx.stopped {
                return;
            }
            match &mut self.role {
                Role::Follower(_) if self.ctx.state.promise.pid == pid => {
                    self.become_follower(FollowerPhase::Recover);
                    let n = self.ctx.state.promise;
                    self.ctx.send(pid, PaxosMsg::PrepareReq(PrepareReq { n }));
                }
                Role::Leader(leader) => leader.reconnected(&mut self.ctx, pid),
                Role::Follower(_) => {}
            }
        })
    }

    /// Compacts the log up to `trim_idx` (or as far as allowed) on every replica. Only the
    /// leader can trim, and only what every replica has accepted and the leader decided.
    pub fn trim(&mut self, trim_idx: Option<LogIndex>) -> Result<(), CompactionErr> {
        logged!(self, {
            let result = match &mut self.role {
                Role::Leader(leader) => leader.trim(&mut self.ctx, trim_idx),
                Role::Follower(_) => Err(CompactionErr::NotCurrentLeader(self.leader.pid)),
            };
            self.after_step();
            result
        })
    }

    /// Replaces the decided prefix up to `compact_idx` (default: the decided index) with a
    /// snapshot. With `local_only == false`, every other replica is asked to do the same.
    pub fn snapshot(&mut self, compact_idx: Option<LogIndex>, local_only: bool) -> Result<(), CompactionErr> {
        logged!(self, {
            let idx = self.snapshot_local(compact_idx)?;
            if !local_only {
                for peer in self.ctx.peers.clone() {
                    self.ctx.send(peer, PaxosMsg::Compaction(Compaction::Snapshot(Some(idx))));
                }
            }
            self.after_step();
            Ok(())
        })
    }

    /// The decided StopSign, once this configuration is over.
    pub fn is_reconfigured(&self) -> Option<StopSign> {
        if self.ctx.state.stopsign_decided() {
            self.ctx.state.stopsign.clone()
        } else {
            None
        }
    }

    /// Length of the decided prefix: entries `[0, decided_idx)` are decided.
    pub fn get_decided_idx(&self) -> LogIndex {
        self.ctx.state.decided_idx
    }

    /// Entries below this index are compacted.
    pub fn get_compacted_idx(&self) -> LogIndex {
        self.ctx.state.compacted_idx
    }

    /// The accepted index: the local log end, plus one for a StopSign.
    pub fn get_accepted_idx(&self) -> LogIndex {
        self.ctx.state.accepted_idx()
    }

    /// The promised ballot.
    pub fn get_promise(&self) -> Ballot {
        self.ctx.state.promise
    }

    /// The leader this replica follows (the owner of its promise), if any. A replica that holds
    /// its own ballot as promise but does not lead (it restarted) knows no leader.
    pub fn get_current_leader(&self) -> Option<NodeId> {
        let promise = self.ctx.state.promise;
        let own_but_not_leading = promise.pid == self.ctx.pid && !matches!(self.role, Role::Leader(_));
        (!promise.is_initial() && !own_but_not_leading).then_some(promise.pid)
    }

    /// True if this replica is a learner: it lost its storage, never votes again in this
    /// configuration and only learns the decided log (see `SequencePaxosConfig::set_learner`).
    pub fn is_learner(&self) -> bool {
        self.ctx.state.promise == learner::learner_promise(self.ctx.config_id, self.ctx.pid)
    }

    /// True if a decided index waits to ride on the next AcceptDecide (see
    /// [`SequencePaxosConfig::set_piggyback_decide`]): a runtime that has no further input
    /// calls `take_outgoing_messages` again to send it.
    pub fn holds_decisions(&self) -> bool {
        matches!(&self.role, Role::Leader(l) if l.holds_decisions())
    }

    /// True if this replica is the leader and in its accept phase: it can decide entries.
    pub fn is_accepting_leader(&self) -> bool {
        matches!(&self.role, Role::Leader(l) if l.is_accepting())
    }

    /// True after a storage failure: the replica refuses all work until it is restarted.
    pub fn is_stopped(&self) -> bool {
        self.ctx.stopped
    }

    /// This replica's id.
    pub fn pid(&self) -> NodeId {
        self.ctx.pid
    }

    /// The storage, for inspection.
    pub fn storage(&self) -> &B {
        &self.ctx.storage
    }

    /// Takes the storage back (e.g. to close it cleanly at shutdown); the replica is gone.
    pub fn into_storage(self) -> B {
        self.ctx.storage
    }

    /// At the leader: how far each peer's log is known to be durable in this ballot (its last
    /// Accepted), by peer id; empty at a follower. For status pages and lag metrics.
    pub fn peer_accepted_indices(&self) -> Vec<(NodeId, LogIndex)> {
        match &self.role {
            Role::Leader(leader) => leader.peer_accepted_indices(),
            Role::Follower(_) => Vec::new(),
        }
    }

    /// Checks the invariants of the replica's state; the simulator calls it after every event.
    /// Panics on a violation (a bug in this crate).
    pub fn check_invariants(&self) {
        self.ctx.state.check_invariants();
        if let Role::Leader(leader) = &self.role {
            leader.check_invariants(&self.ctx);
        }
    }

    fn check_running(&self) -> Result<(), ReplicaError> {
        if self.ctx.stopped {
            Err(ReplicaError::Stopped)
        } else {
            Ok(())
        }
    }

    /// True if a StopSign is in the log or waiting to get there: the log takes no more entries.
    fn has_stopsign(&self) -> bool {
        let leader_holds_one = matches!(&self.role, Role::Leader(l) if l.has_buffered_stopsign());
        self.ctx.state.stopsign.is_some() || self.pending_stopsign.is_some() || leader_holds_one
    }

    fn pending_count(&self) -> usize {
        let in_role = match &self.role {
            Role::Leader(leader) => leader.pending_count(),
            Role::Follower(_) => 0,
        };
        in_role + self.ctx.ledger.waiting_count()
    }

    /// Runs after every input: checks invariants in debug builds.
    fn after_step(&mut self) {
        if cfg!(debug_assertions) && !self.ctx.stopped {
            self.check_invariants();
        }
    }

    fn with_leader<F>(&mut self, f: F) -> Result<(), StorageError>
    where
        F: FnOnce(&mut Leader<T, S>, &mut Context<T, S, B>) -> Result<(), StorageError>,
    {
        match &mut self.role {
            Role::Leader(leader) => f(leader, &mut self.ctx),
            Role::Follower(_) => {
                tracing::debug!(pid = self.ctx.pid, "leader message dropped: not the leader");
                Ok(())
            }
        }
    }

    fn with_follower<F>(&mut self, f: F) -> Result<(), StorageError>
    where
        F: FnOnce(&mut Follower<T, S>, &mut Context<T, S, B>) -> Result<follower::Reaction, StorageError>,
    {
        let reaction = match &mut self.role {
            Role::Follower(follower) => f(follower, &mut self.ctx)?,
            Role::Leader(_) => {
                tracing::debug!(pid = self.ctx.pid, "follower message dropped: this replica leads");
                return Ok(());
            }
        };
        self.react(reaction)
    }

    fn react(&mut self, reaction: follower::Reaction) -> Result<(), StorageError> {
        match reaction {
            follower::Reaction::None => Ok(()),
            follower::Reaction::Recover(leader) => {
                // Ask once; the resend timer asks again while we stay in Recover.
                let asked = matches!(&self.role, Role::Follower(f) if f.phase == FollowerPhase::Recover);
                self.become_follower(FollowerPhase::Recover);
                if !asked {
                    let n = self.ctx.state.promise;
                    self.ctx.send(leader, PaxosMsg::PrepareReq(PrepareReq { n }));
                }
                Ok(())
            }
        }
    }
}

/// Proposals reported `Dropped(Indeterminate)` that are remembered so that a copy reaching
/// the log later is not reported again (8 bytes each). Independent of `buffer_size`: a small
/// buffer must not make a proposal settle twice.
const ABANDONED_PROPOSALS_MAX: usize = 1 << 16;

/// Why a replica could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// Reading or writing the storage failed.
    #[error("storage failed: {0}")]
    Storage(#[from] StorageError),
    /// The storage belongs to another replica: another node, configuration or cluster.
    #[error("storage identity mismatch: the storage is of {stored}, this replica is {expected}")]
    IdentityMismatch {
        /// The identity recorded in the storage.
        stored: ReplicaIdentity,
        /// This replica's identity, from its configuration.
        expected: ReplicaIdentity,
    },
}

/// Loads the durable state from storage and checks that it is consistent.
pub(crate) fn load_state<T, S, B: Storage<T, S>>(storage: &B) -> Result<DurableState, StorageError> {
    let state = DurableState {
        promise: storage.get_promise()?.unwrap_or_default(),
        accepted_round: storage.get_accepted_round()?.unwrap_or_default(),
        decided_idx: storage.get_decided_idx()?,
        log_end: storage.get_log_end()?,
        compacted_idx: storage.get_compacted_idx()?,
        stopsign: storage.get_stopsign()?,
        incarnation: storage.get_incarnation()?,
    };
    let consistent = state.compacted_idx <= state.log_end
        && state.compacted_idx <= state.decided_idx
        && state.decided_idx <= state.accepted_idx()
        && state.accepted_round <= state.promise;
    if !consistent {
        return Err(StorageError::Corrupt {
            file: "<storage>".into(),
            offset: 0,
            reason: "stored indices or ballots contradict each other",
        });
    }
    Ok(state)
}

/// Checks a proposed next configuration.
fn validate_next_config(next: &ClusterConfig) -> Result<(), ConfigError> {
    crate::config::validate_cluster_config(next)
}
