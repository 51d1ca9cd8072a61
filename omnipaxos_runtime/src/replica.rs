//! The replica thread: the one owner of the `OmniPaxos` replica.
//!
//! A round: take everything queued (network messages, a pending tick, appends while there is
//! room), then one `take_outgoing_messages`, which flushes storage and only then releases
//! messages; frame what it released into one buffer per peer and queue each buffer whole; tell
//! proposers their outcomes; hand decided entries to the decided stream. While a flush runs,
//! new inputs queue up and become the next round: group commit without a timer.
//!
//! Nothing leaves this thread that the core did not release from `take_outgoing_messages`,
//! apart from progress frames, which carry only the two indices the core reports.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use metrics::Histogram;
use omnipaxos_core::{
    ballot_leader_election::Ballot,
    errors::{ProposeErr, ReadErr, ReplicaError},
    messages::Message,
    sequence_paxos::{DropReason, ProposalOutcome, ReadConsistency, ReadFailure, ReadId, ReadOutcome},
    storage::{ReplicaIdentity, Snapshot, StopSign, Storage, StorageError, StorageOp, StorageResult},
    util::{LogEntry, LogIndex, NodeId, Proposal, ProposalId},
    OmniPaxos,
};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info, warn};

use crate::{
    appends::{AppendRequest, Completions, PendingAppend, PendingAppends, ProposalReceiver},
    config::{Limits, NodeConfig},
    error::{AppendError, IndeterminateCause, ReadError},
    metrics::NodeMetrics,
    node::{Decided, Delivery, ReplicaView, Shared},
    status::LinkState,
    transport::{
        filter::LinkFilter,
        frame::{encode_frame, FrameKind, Header, Progress},
        link::{EnqueueRefused, FrameCounts, PeerLink},
    },
};

/// The inputs and outputs of the replica thread.
pub(crate) struct ReplicaChannels<T, S> {
    pub proposals: ProposalReceiver<T>,
    pub reads: mpsc::Receiver<(ReadConsistency, ReadReply)>,
    pub inbound: mpsc::Receiver<Message<T, S>>,
    pub ticks: mpsc::Receiver<()>,
    pub shutdown: watch::Receiver<bool>,
    /// `None` once the user dropped the decided stream.
    pub decided: Option<mpsc::Sender<Delivery<T, S>>>,
    /// Answers to appends, sent once per round.
    pub completions: Completions,
}

/// What the replica thread needs besides the replica and its channels.
pub(crate) struct ReplicaContext {
    pub node_id: NodeId,
    pub cluster_id: u64,
    pub limits: Limits,
    pub progress_interval_ticks: u64,
    pub tick_interval: Duration,
    pub append_timeout: Duration,
    pub resync_after_drop: bool,
    pub snapshot_interval_entries: Option<u64>,
    pub links: Vec<Arc<PeerLink>>,
    pub filter: Option<LinkFilter>,
    pub shared: Arc<Shared>,
    pub metrics: Arc<NodeMetrics>,
    pub runtime: tokio::runtime::Handle,
}

impl ReplicaContext {
    pub fn new(
        config: &NodeConfig,
        links: Vec<Arc<PeerLink>>,
        filter: Option<LinkFilter>,
        shared: Arc<Shared>,
        metrics: Arc<NodeMetrics>,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        ReplicaContext {
            node_id: config.node_id,
            cluster_id: config.cluster_id,
            limits: config.limits,
            progress_interval_ticks: config.progress_interval_ticks,
            tick_interval: config.tick_interval,
            append_timeout: config.append_timeout,
            resync_after_drop: config.resync_after_drop,
            snapshot_interval_entries: config.snapshot_interval_entries,
            links,
            filter,
            shared,
            metrics,
            runtime,
        }
    }
}

/// The replica's view of one peer during a round.
struct PeerOut {
    link: Arc<PeerLink>,
    /// Frames of this round, not yet queued.
    buffer: Vec<u8>,
    counts: FrameCounts,
    /// Whether this round's frames can be queued (connected and not filtered).
    sendable: bool,
    /// Frames were dropped because the queue was full: once it has drained, ask the core to
    /// resynchronise this peer (`reconnected`), so the loss is repaired at once instead of at
    /// the next resend timeout.
    needs_resync: bool,
}

impl PeerOut {
    /// Appends one core message to this round's buffer, or counts it dropped.
    fn frame_message<T: Serialize, S: Serialize>(
        &mut self,
        message: &Message<T, S>,
        cluster_id: u64,
        own_id: NodeId,
        max_frame_bytes: u32,
    ) {
        if !self.sendable {
            self.link.count_dropped(1);
            let counter = if self.link.state() == LinkState::Connected {
                &self.link.metrics.dropped_filtered
            } else {
                &self.link.metrics.dropped_disconnected
            };
            counter.increment(1);
            return;
        }
        let header =
            Header { kind: FrameKind::CoreMessage, cluster_id, sender: own_id, receiver: self.link.id };
        match encode_frame(&mut self.buffer, &header, message, max_frame_bytes) {
            Ok(()) => match message {
                Message::SequencePaxos(_) => self.counts.paxos += 1,
                Message::BLE(_) => self.counts.ble += 1,
            },
            Err(error) => {
                self.link.count_dropped(1);
                self.link.metrics.dropped_oversized.increment(1);
                warn!(to = self.link.id, %error, "message not sent");
            }
        }
    }

    /// Appends a progress frame to this round's buffer.
    fn frame_progress(&mut self, progress: &Progress, cluster_id: u64, own_id: NodeId, max_frame_bytes: u32) {
        let header = Header { kind: FrameKind::Progress, cluster_id, sender: own_id, receiver: self.link.id };
        if encode_frame(&mut self.buffer, &header, progress, max_frame_bytes).is_ok() {
            self.counts.progress += 1;
        }
    }

    /// Hands this round's buffer to the link (written at once if `direct` and the link is
    /// idle), or counts it dropped.
    fn send_round(&mut self, direct: bool, resync_after_drop: bool) {
        if self.buffer.is_empty() {
            return;
        }
        let keep = self.buffer.len().min(ROUND_BUFFER_KEEP_BYTES);
        let bytes = std::mem::replace(&mut self.buffer, Vec::with_capacity(keep));
        let counts = std::mem::take(&mut self.counts);
        let Err(refused) = self.link.enqueue(bytes, counts, direct) else {
            return;
        };
        self.link.count_dropped(counts.total());
        match refused {
            EnqueueRefused::QueueFull => {
                self.link.metrics.dropped_queue_full.increment(counts.total());
                self.needs_resync = resync_after_drop;
            }
            EnqueueRefused::Disconnected => self.link.metrics.dropped_disconnected.increment(counts.total()),
        }
    }
}

/// Where a read barrier's answer goes.
pub(crate) type ReadReply = oneshot::Sender<Result<LogIndex, ReadError>>;

/// What woke the replica thread.
enum Wake<T, S> {
    Message(Message<T, S>),
    Tick,
    Proposal(AppendRequest<T>),
    Read(ReadConsistency, ReadReply),
    Shutdown,
}

/// Largest buffer kept between rounds for a peer; a larger one (one big round) is freed.
const ROUND_BUFFER_KEEP_BYTES: usize = 4 << 20;

pub(crate) struct Replica<T, S, B: Storage<T, S>> {
    op: OmniPaxos<T, S, B>,
    channels: ReplicaChannels<T, S>,
    ctx: ReplicaContext,
    peers: Vec<PeerOut>,
    /// Invariant: at most the core's `buffer_size` entries (appends are taken only below it).
    pending: PendingAppends,
    buffer_size: usize,
    outgoing: Vec<Message<T, S>>,
    outcomes: Vec<(ProposalId, ProposalOutcome)>,
    /// Reads handed to the core, waiting for their read index. Invariant: at most the core's
    /// `buffer_size` (the core refuses more).
    reads_waiting: HashMap<ReadId, ReadReply>,
    /// Reads with a read index, waiting until the decided stream was handed every entry below it.
    reads_ready: Vec<(LogIndex, ReadReply)>,
    read_outcomes: Vec<(ReadId, ReadOutcome)>,
    /// Invariant: `delivered_idx <= op.get_decided_idx()`.
    delivered_idx: LogIndex,
    /// The decided index at the end of the last round (for the decisions counter).
    counted_decided_idx: LogIndex,
    ticks: u64,
    /// When the last tick was taken: a tick overdue by half an interval means the process was
    /// paused or this thread blocked, and the core's clock fell behind real time.
    last_tick_at: Instant,
    progress_due: bool,
    rounds: u64,
}

impl<T, S, B> Replica<T, S, B>
where
    T: Clone + std::fmt::Debug + Serialize + Send + 'static,
    S: Snapshot<T> + Serialize + Send + 'static,
    B: Storage<T, S>,
{
    pub fn new(
        op: OmniPaxos<T, S, B>,
        channels: ReplicaChannels<T, S>,
        ctx: ReplicaContext,
        buffer_size: usize,
        deliver_from: LogIndex,
    ) -> Self {
        let peers = ctx
            .links
            .iter()
            .map(|link| PeerOut {
                link: link.clone(),
                buffer: Vec::new(),
                counts: FrameCounts::default(),
                sendable: false,
                needs_resync: false,
            })
            .collect();
        // With snapshots, a compacted prefix is delivered as the snapshot first; without, the
        // compacted prefix cannot be named and delivery starts after it.
        let first = if S::use_snapshots() { deliver_from } else { deliver_from.max(op.get_compacted_idx()) };
        let delivered_idx = first.min(op.get_decided_idx());
        let counted_decided_idx = op.get_decided_idx();
        Replica {
            op,
            channels,
            ctx,
            peers,
            pending: PendingAppends::new(),
            reads_waiting: HashMap::new(),
            reads_ready: Vec::new(),
            read_outcomes: Vec::new(),
            buffer_size,
            outgoing: Vec::new(),
            outcomes: Vec::new(),
            delivered_idx,
            counted_decided_idx,
            ticks: 0,
            last_tick_at: Instant::now(),
            progress_due: true,
            rounds: 0,
        }
    }

    /// Runs rounds until shutdown, then closes the replica (a last flush) and drops it.
    pub fn run(mut self) {
        loop {
            // Idle, but holding decisions for the next AcceptDecide: a round with no input
            // sends them at once (the core's idle take), so followers learn them now.
            let idle_take = self.op.sequence_paxos().holds_decisions();
            if !self.take_queued() && !idle_take {
                match self.wait() {
                    Wake::Shutdown => break,
                    wake => self.take(wake),
                }
                self.take_queued();
            }
            if let Err(error) = self.finish_round() {
                error!(%error, "the replica stopped after a storage failure; restart the node");
                self.fail_pending(AppendError::Indeterminate(IndeterminateCause::StorageFailure));
                self.fail_reads(ReadError::Stopped);
                self.publish();
                self.serve_stopped();
                return;
            }
            if *self.channels.shutdown.borrow() {
                break;
            }
        }
        self.close();
    }

    /// Room for new appends: none while too many decided entries wait for the user or the
    /// core's proposal buffer is full.
    fn proposal_room(&self) -> usize {
        // Saturating: after a failed storage write the core reloads its state from storage, and
        // its decided index may then be below what was already delivered (the replica stops).
        let undelivered = self.op.get_decided_idx().saturating_sub(self.delivered_idx);
        if undelivered >= self.ctx.limits.undelivered_limit_entries {
            return 0;
        }
        self.buffer_size.saturating_sub(self.pending.len()).min(self.ctx.limits.round_limit_inputs)
    }

    /// Blocks until an input arrives or shutdown is signalled.
    fn wait(&mut self) -> Wake<T, S> {
        let accept_proposals = self.proposal_room() > 0;
        let channels = &mut self.channels;
        self.ctx.runtime.block_on(async {
            tokio::select! {
                biased;
                _ = channels.shutdown.changed() => Wake::Shutdown,
                Some(message) = channels.inbound.recv() => Wake::Message(message),
                Some(()) = channels.ticks.recv() => Wake::Tick,
                Some(request) = channels.proposals.recv(), if accept_proposals => Wake::Proposal(request),
                Some((consistency, reply)) = channels.reads.recv() => Wake::Read(consistency, reply),
                else => Wake::Shutdown,
            }
        })
    }

    fn take(&mut self, wake: Wake<T, S>) {
        match wake {
            Wake::Message(message) => self.handle_message(message),
            Wake::Tick => self.tick(),
            Wake::Proposal(request) => {
                let leader_ready = self.leader_ready();
                self.propose(request, leader_ready, Instant::now());
            }
            Wake::Read(consistency, reply) => self.read(consistency, reply),
            Wake::Shutdown => {}
        }
    }

    /// Takes what is queued without blocking; false if nothing was.
    fn take_queued(&mut self) -> bool {
        let mut taken = false;
        for _ in 0..self.ctx.limits.round_limit_inputs {
            match self.channels.inbound.try_recv() {
                Ok(message) => {
                    self.handle_message(message);
                    taken = true;
                }
                Err(_) => break,
            }
        }
        if self.channels.ticks.try_recv().is_ok() {
            self.tick();
            taken = true;
        }
        self.maybe_resync_peers();
        for _ in 0..self.ctx.limits.round_limit_inputs {
            let Ok((consistency, reply)) = self.channels.reads.try_recv() else { break };
            self.read(consistency, reply);
            taken = true;
        }
        let room = self.proposal_room();
        if room > 0 {
            let leader_ready = self.leader_ready();
            let now = Instant::now();
            for _ in 0..room {
                let Some(request) = self.channels.proposals.try_recv() else { break };
                self.propose(request, leader_ready, now);
                taken = true;
            }
        }
        taken
    }

    fn handle_message(&mut self, message: Message<T, S>) {
        // The process may have stopped since the last check, in the middle of a batch: a late
        // ReadConfirmed or a peer's ReadRequest must not meet a lease that real time ended.
        self.check_clock();
        // A storage failure here also fails the next take_outgoing_messages, which stops us.
        if let Err(error) = self.op.handle_incoming(message) {
            warn!(%error, "handling a message failed");
        }
    }

    /// Ends the leader's read lease if a tick is overdue (more than 1.5 intervals since the
    /// last): the core counts its lease in ticks, and ticks missed while the process was
    /// stopped (SIGSTOP, a frozen VM) or this thread was blocked are skipped, not replayed, so
    /// the lease would outlive real time while the other nodes, whose clocks ran, elect a new
    /// leader and decide: a stale read. Checked before every input that can use or grant a lease: each
    /// message, each tick (before it resets the clock), each lease read.
    fn check_clock(&mut self) {
        if self.last_tick_at.elapsed() > self.ctx.tick_interval.saturating_mul(3) / 2 {
            self.op.expire_read_lease();
        }
    }

    fn tick(&mut self) {
        // Before the tick resets the clock: a stop since the last check ends the lease now.
        self.check_clock();
        if let Err(error) = self.op.tick() {
            warn!(%error, "tick failed");
        }
        self.last_tick_at = Instant::now();
        self.ticks += 1;
        if self.ticks % self.ctx.progress_interval_ticks == 0 {
            self.progress_due = true;
        }
    }

    fn leader_ready(&self) -> bool {
        matches!(self.op.get_current_leader(), Some((_, true)))
    }

    /// Hands one append to the core, or answers it at once.
    fn propose(&mut self, request: AppendRequest<T>, leader_ready: bool, now: Instant) {
        // An append whose caller dropped its future is still handed over: checking costs a
        // cache miss per append, and its answer is simply not read.
        let AppendRequest { entry, reply, enqueued } = request;
        let refused = if now.duration_since(enqueued) >= self.ctx.append_timeout {
            AppendError::Overloaded // waited its whole timeout in the queue; never handed over
        } else if self.op.sequence_paxos().is_learner() {
            AppendError::Learner // never proposes, whoever leads
        } else if !leader_ready {
            AppendError::NotLeaderReachable
        } else {
            match self.op.append(entry) {
                Ok(id) => {
                    self.ctx.metrics.proposals.increment(1);
                    if let Err(pending) = self.pending.insert(id, PendingAppend { reply, enqueued }) {
                        error!(%id, "proposal id out of order; its outcome cannot be reported");
                        let unknown = AppendError::Indeterminate(IndeterminateCause::StorageFailure);
                        self.channels.completions.push(pending.reply, Err(unknown));
                    }
                    return;
                }
                Err(ProposeErr::BufferFull(..)) => AppendError::Overloaded,
                Err(ProposeErr::Stopped(_)) => AppendError::Stopped,
                Err(ProposeErr::Storage(_)) => AppendError::Indeterminate(IndeterminateCause::StorageFailure),
                Err(ProposeErr::Learner(_)) => AppendError::Learner,
                Err(_) => AppendError::Dropped, // the log is sealed by a StopSign
            }
        };
        self.ctx.metrics.append_failed(append_error_reason(&refused));
        self.channels.completions.push(reply, Err(refused));
    }

    /// Hands one read barrier to the core, or answers it at once.
    fn read(&mut self, consistency: ReadConsistency, reply: ReadReply) {
        if consistency == ReadConsistency::LeaseIfHeld {
            // A lease answers at once: it must hold now, when the read is handed over, not
            // only when this round of inputs began (the process may have stopped in between).
            self.check_clock();
        }
        match self.op.read_index_with(consistency) {
            Ok(id) => {
                self.reads_waiting.insert(id, reply);
            }
            Err(ReadErr::BufferFull(_)) => {
                let _ = reply.send(Err(ReadError::Overloaded));
            }
            Err(ReadErr::Stopped) => {
                let _ = reply.send(Err(ReadError::Stopped));
            }
        }
    }

    /// Moves reads that got a read index to `reads_ready`, answers failed ones, and answers
    /// every ready read whose entries were all handed to the decided stream.
    fn settle_reads(&mut self) {
        self.op.take_read_outcomes(&mut self.read_outcomes);
        for (id, outcome) in self.read_outcomes.drain(..) {
            let Some(reply) = self.reads_waiting.remove(&id) else { continue };
            match outcome {
                ReadOutcome::Ready(read_idx) => self.reads_ready.push((read_idx, reply)),
                ReadOutcome::Failed(ReadFailure::TimedOut) => {
                    let _ = reply.send(Err(ReadError::TimedOut));
                }
                ReadOutcome::Failed(ReadFailure::LeaderChanged) => {
                    let _ = reply.send(Err(ReadError::LeaderChanged));
                }
                ReadOutcome::Failed(ReadFailure::Reconfigured) => {
                    let _ = reply.send(Err(ReadError::Reconfigured));
                }
            }
        }
        let delivered_idx = self.delivered_idx;
        let mut at = 0;
        while at < self.reads_ready.len() {
            if self.reads_ready[at].0 <= delivered_idx {
                let (read_idx, reply) = self.reads_ready.swap_remove(at);
                let _ = reply.send(Ok(read_idx));
            } else {
                at += 1;
            }
        }
    }

    /// After a drop for a full queue, resynchronise the peer once its queue has drained to half.
    fn maybe_resync_peers(&mut self) {
        for peer in &mut self.peers {
            let drained = peer.needs_resync && peer.link.queued_bytes() <= peer.link.limit_bytes() / 2;
            if peer.link.take_reconnected() || drained {
                peer.needs_resync = false;
                self.op.reconnected(peer.link.id);
            }
        }
    }

    /// Flush and release, send, settle outcomes, deliver, publish.
    ///
    /// Outcomes and decided entries are handed out before the flush as well as after it: an
    /// entry the core reports decided is already durable on a quorum (a leader counts its own
    /// log only after a flush), so it need not wait for this round's flush, which may only be
    /// making the decided index durable. Messages still leave only after the flush.
    fn finish_round(&mut self) -> Result<(), ReplicaError> {
        self.settle_outcomes();
        self.channels.completions.flush();
        self.deliver_decided();
        self.settle_reads();
        self.op.take_outgoing_messages(&mut self.outgoing)?;
        self.route_outgoing();
        self.settle_outcomes();
        self.pending.expire(Instant::now(), self.ctx.append_timeout, &mut self.channels.completions);
        self.channels.proposals.release();
        self.channels.completions.flush();
        self.deliver_decided();
        self.settle_reads();
        self.maybe_snapshot();
        self.rounds += 1;
        self.ctx.metrics.rounds.increment(1);
        self.publish();
        Ok(())
    }

    /// Frames every released message into its peer's round buffer, then sends each buffer.
    fn route_outgoing(&mut self) {
        let own_id = self.ctx.node_id;
        for peer in &mut self.peers {
            let connected = peer.link.state() == LinkState::Connected;
            let allowed = self.ctx.filter.as_ref().is_none_or(|filter| filter.allows(own_id, peer.link.id));
            peer.sendable = connected && allowed;
        }
        let max_frame_bytes = self.ctx.limits.max_frame_bytes;
        let cluster_id = self.ctx.cluster_id;
        for message in self.outgoing.drain(..) {
            let to = message.get_receiver();
            match self.peers.iter_mut().find(|peer| peer.link.id == to) {
                Some(peer) => peer.frame_message(&message, cluster_id, own_id, max_frame_bytes),
                None => warn!(to, "the core addressed a node that is not a peer; message dropped"),
            }
        }
        if std::mem::take(&mut self.progress_due) {
            let progress = Progress {
                decided_idx: self.op.get_decided_idx(),
                accepted_idx: self.op.sequence_paxos().get_accepted_idx(),
            };
            for peer in self.peers.iter_mut().filter(|peer| peer.sendable) {
                peer.frame_progress(&progress, cluster_id, own_id, max_frame_bytes);
            }
        }
        for peer in &mut self.peers {
            let paused =
                self.ctx.filter.as_ref().is_some_and(|filter| filter.is_paused(own_id, peer.link.id));
            peer.send_round(!paused, self.ctx.resync_after_drop);
        }
    }

    /// Answers every append whose outcome the core reported.
    fn settle_outcomes(&mut self) {
        self.op.take_proposal_outcomes(&mut self.outcomes);
        let now = Instant::now();
        for (id, outcome) in self.outcomes.drain(..) {
            let Some(pending) = self.pending.take(&id) else {
                continue; // an id of an earlier incarnation, or the caller already gave up
            };
            let result = match outcome {
                ProposalOutcome::Decided(idx) => {
                    self.ctx
                        .metrics
                        .append_latency
                        .record(now.duration_since(pending.enqueued).as_secs_f64());
                    Ok(idx)
                }
                ProposalOutcome::Dropped(DropReason::LogSealed) => Err(AppendError::Dropped),
                ProposalOutcome::Dropped(DropReason::Indeterminate) => {
                    Err(AppendError::Indeterminate(IndeterminateCause::Snapshot))
                }
            };
            if let Err(error) = &result {
                self.ctx.metrics.append_failed(append_error_reason(error));
            }
            self.channels.completions.push(pending.reply, result);
        }
    }

    /// Hands decided entries to the decided stream while it has room: the snapshot first if
    /// the next entry to deliver was compacted, then entries in batches.
    fn deliver_decided(&mut self) {
        let decided_idx = self.op.get_decided_idx();
        if decided_idx > self.counted_decided_idx {
            self.ctx.metrics.decisions.increment(decided_idx - self.counted_decided_idx);
            self.counted_decided_idx = decided_idx;
        }
        let Some(sender) = &self.channels.decided else {
            self.delivered_idx = decided_idx; // nobody listens
            return;
        };
        let mut stop_delivery = false;
        while self.delivered_idx < decided_idx {
            let permit = match sender.try_reserve() {
                Ok(permit) => permit,
                Err(mpsc::error::TrySendError::Full(())) => break,
                Err(mpsc::error::TrySendError::Closed(())) => {
                    stop_delivery = true; // the user dropped the stream
                    break;
                }
            };
            let compacted_idx = self.op.get_compacted_idx();
            let end = if self.delivered_idx < compacted_idx {
                compacted_idx.min(decided_idx)
            } else {
                decided_idx.min(self.delivered_idx + self.ctx.limits.decided_batch_limit_entries as u64)
            };
            let Some(entries) = self.op.read_entries(self.delivered_idx..end) else {
                error!(from = self.delivered_idx, end, "decided entries cannot be read; delivery stops");
                stop_delivery = true;
                break;
            };
            if self.delivered_idx < compacted_idx && S::use_snapshots() {
                // The range starts below the compacted index and ends at it: one element.
                match entries.into_iter().next() {
                    Some(LogEntry::Snapshotted(snapshotted)) => {
                        let end = snapshotted.trimmed_idx.max(self.delivered_idx);
                        permit.send(Delivery::Snapshot { snapshot: snapshotted.snapshot, end });
                        self.delivered_idx = end;
                        continue;
                    }
                    other => {
                        error!(?other, compacted_idx, "compacted prefix has no snapshot; delivery stops");
                        stop_delivery = true;
                        break;
                    }
                }
            }
            let mut batch = Vec::with_capacity(entries.len());
            for (index, entry) in (self.delivered_idx..).zip(entries) {
                match entry {
                    LogEntry::Decided(entry) => batch.push(Decided { index, entry }),
                    // Without snapshots the runtime never compacts; skip what it cannot name.
                    other => warn!(index, ?other, "decided slot is not an entry; skipped"),
                }
            }
            self.delivered_idx = end;
            permit.send(Delivery::Entries(batch));
        }
        if stop_delivery {
            self.channels.decided = None;
            self.delivered_idx = decided_idx;
        }
    }

    /// Snapshots the delivered decided prefix on this node once `snapshot_interval_entries`
    /// delivered entries lie beyond the compacted index (only with a snapshot type). The core
    /// builds the snapshot from the entries and the previous snapshot, writes it with the trim
    /// (durable at the next flush), and sends it to a peer that later needs compacted entries.
    fn maybe_snapshot(&mut self) {
        let Some(interval) = self.ctx.snapshot_interval_entries else { return };
        if !S::use_snapshots() || self.op.sequence_paxos().is_stopped() {
            return;
        }
        let compacted_idx = self.op.get_compacted_idx();
        let target = self.delivered_idx.min(self.op.get_decided_idx());
        if target < compacted_idx.saturating_add(interval) {
            return;
        }
        let started = Instant::now();
        match self.op.snapshot(Some(target), true) {
            Ok(()) => {
                self.ctx.metrics.snapshots.increment(1);
                info!(
                    compacted_idx = target,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "snapshot taken"
                );
            }
            Err(error) => warn!(target, %error, "snapshot not taken"),
        }
    }

    /// Publishes what `status()` and the gauges show.
    pub fn publish(&self) {
        let sp = self.op.sequence_paxos();
        let leader = self.op.get_current_leader();
        let view = ReplicaView {
            leader: leader.map(|(id, _)| id),
            leader_ready: leader.is_some_and(|(_, ready)| ready),
            is_leader: sp.is_accepting_leader(),
            ballot: self.op.get_promise(),
            decided_idx: self.op.get_decided_idx(),
            accepted_idx: sp.get_accepted_idx(),
            delivered_idx: self.delivered_idx,
            compacted_idx: self.op.get_compacted_idx(),
            is_learner: sp.is_learner(),
            pending_appends: self.pending.len(),
            pending_reads: self.reads_waiting.len() + self.reads_ready.len(),
            stopped: sp.is_stopped(),
            rounds: self.rounds,
        };
        let metrics = &self.ctx.metrics;
        metrics.leader.set(view.leader.unwrap_or(0) as f64);
        metrics.is_leader.set(if view.is_leader { 1.0 } else { 0.0 });
        metrics.ballot_round.set(f64::from(view.ballot.n));
        metrics.decided_index.set(view.decided_idx as f64);
        metrics.accepted_index.set(view.accepted_idx as f64);
        metrics.compacted_index.set(view.compacted_idx as f64);
        metrics.pending_appends.set(view.pending_appends as f64);
        metrics.undelivered.set(view.decided_idx.saturating_sub(view.delivered_idx) as f64);
        metrics.proposals_queued.set(self.channels.proposals.len() as f64);
        metrics.inbound_queued.set(self.channels.inbound.len() as f64);
        *self.ctx.shared.lock_view() = view;
    }

    /// Answers every read not yet answered with `error`.
    fn fail_reads(&mut self, error: ReadError) {
        for (_, reply) in self.reads_waiting.drain() {
            let _ = reply.send(Err(error));
        }
        for (_, reply) in self.reads_ready.drain(..) {
            let _ = reply.send(Err(error));
        }
        self.channels.reads.close();
        while let Ok((_, reply)) = self.channels.reads.try_recv() {
            let _ = reply.send(Err(error));
        }
    }

    fn fail_pending(&mut self, error: AppendError) {
        for pending in self.pending.drain() {
            self.channels.completions.push(pending.reply, Err(error.clone()));
        }
        self.channels.completions.flush();
    }

    /// Answers queued appends with `error` without handing them to the replica.
    fn refuse_queued(&mut self, error: AppendError) {
        while let Some(request) = self.channels.proposals.try_recv() {
            self.channels.completions.push(request.reply, Err(error.clone()));
        }
        self.channels.proposals.release();
        self.channels.completions.flush();
    }

    /// After a storage failure: refuse every append until shutdown.
    fn serve_stopped(mut self) {
        loop {
            self.refuse_queued(AppendError::Stopped);
            let channels = &mut self.channels;
            let shutdown = self.ctx.runtime.block_on(async {
                tokio::select! {
                    biased;
                    _ = channels.shutdown.changed() => true,
                    Some(request) = channels.proposals.recv() => {
                        channels.completions.push(request.reply, Err(AppendError::Stopped));
                        false
                    }
                    Some(_) = channels.inbound.recv() => false,
                    else => true,
                }
            });
            if shutdown || *self.channels.shutdown.borrow() {
                return;
            }
        }
    }

    /// Shutdown: refuse what was not taken, make everything written durable (the last flush
    /// also releases the last messages, which are queued for the writers' final write), then
    /// settle what is in flight as indeterminate and drop the replica (closing its storage).
    fn close(mut self) {
        self.channels.proposals.close();
        self.refuse_queued(AppendError::ShuttingDown);
        match self.op.take_outgoing_messages(&mut self.outgoing) {
            Ok(()) => {
                self.route_outgoing();
                self.settle_outcomes();
                self.deliver_decided();
            }
            Err(error) => error!(%error, "last flush failed"),
        }
        // The decided index rides on later writes while running; a shutdown writes it now.
        if let Err(error) = self.op.persist_all() {
            error!(%error, "writing the decided index at shutdown failed");
        }
        self.fail_pending(AppendError::Indeterminate(IndeterminateCause::Shutdown));
        self.fail_reads(ReadError::ShuttingDown);
        self.publish();
        // Dropping the replica now closes the storage cleanly (see `TimedStorage`).
        self.ctx.shared.close_storage.store(true, std::sync::atomic::Ordering::Release);
        info!(decided_idx = self.op.get_decided_idx(), "replica closed");
    }
}

fn append_error_reason(error: &AppendError) -> &'static str {
    match error {
        AppendError::NotLeaderReachable => "not_leader_reachable",
        AppendError::Dropped => "dropped",
        AppendError::Indeterminate(_) => "indeterminate",
        AppendError::ShuttingDown => "shutting_down",
        AppendError::Overloaded => "overloaded",
        AppendError::Stopped => "stopped",
        AppendError::Learner => "learner",
    }
}

/// A storage that times each flush that has writes to make durable (for the flush latency
/// histogram and `status()`), and closes the inner storage cleanly when it is dropped after a
/// graceful shutdown (`Shared::close_storage`): `OmniPaxos` offers no way to take its storage
/// back, and `PersistentStorage::close` needs it by value.
pub(crate) struct TimedStorage<B> {
    /// Invariant: `Some` until dropped.
    inner: Option<B>,
    flush_latency: Histogram,
    shared: Arc<Shared>,
    /// A write happened since the last flush.
    dirty: bool,
    /// How to close `inner` cleanly, if it can be.
    closer: Option<fn(B) -> StorageResult<()>>,
}

impl<B> TimedStorage<B> {
    pub fn new(
        inner: B,
        flush_latency: Histogram,
        shared: Arc<Shared>,
        closer: Option<fn(B) -> StorageResult<()>>,
    ) -> Self {
        TimedStorage { inner: Some(inner), flush_latency, shared, dirty: false, closer }
    }

    fn inner(&self) -> StorageResult<&B> {
        self.inner.as_ref().ok_or(StorageError::Poisoned)
    }

    fn inner_mut(&mut self) -> StorageResult<&mut B> {
        self.inner.as_mut().ok_or(StorageError::Poisoned)
    }
}

impl<B> Drop for TimedStorage<B> {
    fn drop(&mut self) {
        if !self.shared.close_storage.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        if let (Some(inner), Some(closer)) = (self.inner.take(), self.closer) {
            match closer(inner) {
                Ok(()) => info!("storage closed cleanly"),
                Err(error) => error!(%error, "closing the storage failed"),
            }
        }
    }
}

impl<T, S, B: Storage<T, S>> Storage<T, S> for TimedStorage<B> {
    fn write_atomically(&mut self, ops: &mut Vec<StorageOp<T, S>>) -> StorageResult<()> {
        self.dirty = true;
        self.inner_mut()?.write_atomically(ops)
    }

    fn flush(&mut self) -> StorageResult<()> {
        if !std::mem::take(&mut self.dirty) {
            return self.inner_mut()?.flush();
        }
        let start = Instant::now();
        let result = self.inner_mut()?.flush();
        let elapsed = start.elapsed();
        self.flush_latency.record(elapsed.as_secs_f64());
        self.shared.record_flush(elapsed);
        result
    }

    fn get_entries(&self, from: LogIndex, to: LogIndex) -> StorageResult<Vec<Proposal<T>>> {
        self.inner()?.get_entries(from, to)
    }

    fn get_log_end(&self) -> StorageResult<LogIndex> {
        self.inner()?.get_log_end()
    }

    fn get_compacted_idx(&self) -> StorageResult<LogIndex> {
        self.inner()?.get_compacted_idx()
    }

    fn get_promise(&self) -> StorageResult<Option<Ballot>> {
        self.inner()?.get_promise()
    }

    fn get_accepted_round(&self) -> StorageResult<Option<Ballot>> {
        self.inner()?.get_accepted_round()
    }

    fn get_decided_idx(&self) -> StorageResult<LogIndex> {
        self.inner()?.get_decided_idx()
    }

    fn get_stopsign(&self) -> StorageResult<Option<StopSign>> {
        self.inner()?.get_stopsign()
    }

    fn get_snapshot(&self) -> StorageResult<Option<S>> {
        self.inner()?.get_snapshot()
    }

    fn get_incarnation(&self) -> StorageResult<u64> {
        self.inner()?.get_incarnation()
    }

    fn get_identity(&self) -> StorageResult<Option<ReplicaIdentity>> {
        self.inner()?.get_identity()
    }
}
