//! [`Node`]: starts the replica thread and the transport tasks; [`NodeHandle`]: what the
//! application uses; [`DecidedStream`]: decided entries in log order.

use std::{
    collections::VecDeque,
    fmt::Debug,
    marker::PhantomData,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};

use omnipaxos_core::{
    ballot_leader_election::Ballot,
    sequence_paxos::ReadConsistency,
    storage::{Snapshot, Storage},
    util::{LogIndex, NodeId},
    OmniPaxos,
};
use omnipaxos_storage::{
    memory_storage::MemoryStorage,
    persistent_storage::{PersistentStorage, PersistentStorageConfig},
};
use serde::{de::DeserializeOwned, Serialize};
use tokio::{
    net::TcpListener,
    sync::{mpsc, oneshot, watch},
    task::JoinSet,
};
use tracing::{info, info_span, warn, Instrument};

use crate::{
    appends::{completer, proposal_queue, AppendRequest, ProposalSender, QueueRefused},
    config::{LostStoragePolicy, NodeConfig, StorageConfig},
    error::{AppendError, IndeterminateCause, ReadError, StartError},
    metrics::{NodeMetrics, PeerMetrics},
    replica::{ReadReply, Replica, ReplicaChannels, ReplicaContext, TimedStorage},
    status::{LatencyHistogram, PeerStatus, QueueStatus, Status},
    transport::{
        filter::LinkFilter,
        inbound::{run_listener, InboundContext},
        link::{run_writer, PeerLink, WriterContext},
    },
};

/// How long shutdown waits for the transport tasks before it aborts them.
const TASK_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// What an entry type must be to travel through the runtime.
pub trait Entry: Serialize + DeserializeOwned + Clone + Debug + Send + 'static {}
impl<T: Serialize + DeserializeOwned + Clone + Debug + Send + 'static> Entry for T {}

/// What a snapshot type must be to travel through the runtime: the core's
/// [`Snapshot`](omnipaxos_core::storage::Snapshot) of entries `T`, serializable (it is stored in
/// the data directory and sent to peers that fell behind the compacted prefix). `()` (the
/// default everywhere) means no snapshots: the runtime then never compacts.
pub trait SnapshotState<T>: Snapshot<T> + Serialize + DeserializeOwned + Send + 'static {}
impl<T, S: Snapshot<T> + Serialize + DeserializeOwned + Send + 'static> SnapshotState<T> for S {}

/// One decided entry and its log index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decided<T> {
    /// The entry's position in the log.
    pub index: LogIndex,
    /// The entry.
    pub entry: T,
}

/// What the replica thread hands to the decided stream.
pub(crate) enum Delivery<T, S> {
    /// Consecutive decided entries.
    Entries(Vec<Decided<T>>),
    /// A snapshot of the decided prefix `[0, end)`: this node's log below `end` was compacted
    /// before it was delivered (it caught up from a peer's snapshot, or it restarted over a
    /// compacted log).
    Snapshot { snapshot: S, end: LogIndex },
}

/// One step of a [`DecidedStream`]: decided entries, or a snapshot that replaces everything
/// delivered before it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecidedEvent<T, S> {
    /// Consecutive decided entries, in log order, directly after what was delivered before.
    Entries(Vec<Decided<T>>),
    /// The state of the decided prefix `[0, end)`: replace the state machine with it; the next
    /// entries start at `end`. Comes first after a start over a compacted log, and whenever this
    /// node caught up from a peer's snapshot because the entries it lacked were compacted.
    Snapshot {
        /// The snapshot (built by the core from the decided entries, the same at every node).
        snapshot: S,
        /// The first log index it does not cover.
        end: LogIndex,
    },
}

/// Decided entries in log order, for the application's state machine. The queue behind it is
/// bounded; while it is full the replica keeps decided entries in storage, and once
/// `undelivered_limit_entries` wait it takes no new appends (a slow consumer slows proposals).
/// Dropping the stream turns delivery off.
///
/// With snapshots (`S` other than `()`), read it with [`DecidedStream::next_event`], which also
/// yields snapshots; `recv` and `recv_batch` exist only for `S = ()`, whose streams never hold
/// one.
pub struct DecidedStream<T, S = ()> {
    receiver: mpsc::Receiver<Delivery<T, S>>,
    buffered: VecDeque<Decided<T>>,
}

impl<T, S> DecidedStream<T, S> {
    /// The next batch of decided entries or a snapshot; `None` once the node has shut down and
    /// everything was read.
    pub async fn next_event(&mut self) -> Option<DecidedEvent<T, S>> {
        if !self.buffered.is_empty() {
            return Some(DecidedEvent::Entries(self.buffered.drain(..).collect()));
        }
        Some(match self.receiver.recv().await? {
            Delivery::Entries(entries) => DecidedEvent::Entries(entries),
            Delivery::Snapshot { snapshot, end } => DecidedEvent::Snapshot { snapshot, end },
        })
    }
}

impl<T> DecidedStream<T, ()> {
    /// The next decided entry; `None` once the node has shut down and everything was read.
    pub async fn recv(&mut self) -> Option<Decided<T>> {
        loop {
            if let Some(decided) = self.buffered.pop_front() {
                return Some(decided);
            }
            let batch = self.recv_batch().await?;
            self.buffered.extend(batch);
        }
    }

    /// The next batch of consecutive decided entries (cheaper per entry than `recv`).
    pub async fn recv_batch(&mut self) -> Option<Vec<Decided<T>>> {
        if !self.buffered.is_empty() {
            return Some(self.buffered.drain(..).collect());
        }
        loop {
            match self.receiver.recv().await? {
                Delivery::Entries(entries) => return Some(entries),
                // `()` never snapshots, so the runtime never compacts a `()` log.
                Delivery::Snapshot { .. } => continue,
            }
        }
    }
}

/// The replica's state as of the end of its last round.
#[derive(Clone, Debug, Default)]
pub(crate) struct ReplicaView {
    pub leader: Option<NodeId>,
    pub leader_ready: bool,
    pub is_leader: bool,
    pub ballot: Ballot,
    pub decided_idx: LogIndex,
    pub accepted_idx: LogIndex,
    pub delivered_idx: LogIndex,
    pub compacted_idx: LogIndex,
    pub is_learner: bool,
    pub pending_appends: usize,
    pub pending_reads: usize,
    pub stopped: bool,
    pub rounds: u64,
}

/// State shared by the replica thread, the transport tasks and the handles.
pub(crate) struct Shared {
    view: Mutex<ReplicaView>,
    pub rejected_frames: AtomicU64,
    pub flushes: AtomicU64,
    pub flush_time_ns: AtomicU64,
    /// Set by the replica thread at a graceful shutdown: dropping the storage closes it.
    pub close_storage: std::sync::atomic::AtomicBool,
    /// Flush latencies, bucketed as [`crate::status::latency_bucket`].
    pub flush_buckets: Vec<AtomicU64>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            view: Mutex::default(),
            rejected_frames: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            flush_time_ns: AtomicU64::new(0),
            close_storage: std::sync::atomic::AtomicBool::new(false),
            flush_buckets: (0..crate::status::LATENCY_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Shared {
    pub fn record_flush(&self, elapsed: Duration) {
        self.flushes.fetch_add(1, Ordering::Relaxed);
        self.flush_time_ns.fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
        let bucket = crate::status::latency_bucket(elapsed.as_micros() as u64);
        self.flush_buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    pub fn lock_view(&self) -> MutexGuard<'_, ReplicaView> {
        // The view is replaced whole; a panic elsewhere cannot leave it half-written.
        self.view.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

struct HandleInner<T, S> {
    node_id: NodeId,
    listen_addr: SocketAddr,
    append_timeout: Duration,
    proposals: ProposalSender<T>,
    reads: mpsc::Sender<(ReadConsistency, ReadReply)>,
    /// Kept only to report the inbound queue's depth.
    inbound: mpsc::Sender<omnipaxos_core::messages::Message<T, S>>,
    decided_queue: mpsc::WeakSender<Delivery<T, S>>,
    decided_queue_limit: usize,
    undelivered_limit: u64,
    shutdown: watch::Sender<bool>,
    finished: watch::Receiver<bool>,
    links: Vec<Arc<PeerLink>>,
    shared: Arc<Shared>,
}

/// What the application holds: append, status, shutdown. `Clone + Send + Sync`.
pub struct NodeHandle<T, S = ()> {
    inner: Arc<HandleInner<T, S>>,
}

impl<T, S> Clone for NodeHandle<T, S> {
    fn clone(&self) -> Self {
        NodeHandle { inner: self.inner.clone() }
    }
}

impl<T: Entry, S: SnapshotState<T>> NodeHandle<T, S> {
    /// Appends `entry` to the replicated log and resolves to the index where it was decided.
    ///
    /// Waits for room in the proposal queue (backpressure) and then for the outcome, both
    /// within `append_timeout`: if the queue had no room in time the error is `Overloaded`
    /// (definite), if the outcome did not come in time it is `Indeterminate`. The outcome's
    /// deadline is enforced by the replica thread (every round, so at least every tick): while
    /// a flush hangs, the append waits for it.
    pub async fn append(&self, entry: T) -> Result<LogIndex, AppendError> {
        let deadline = tokio::time::Instant::now() + self.inner.append_timeout;
        let (reply, outcome) = oneshot::channel();
        let request = AppendRequest { entry, reply, enqueued: Instant::now() };
        match self.inner.proposals.send(request, deadline).await {
            Err(QueueRefused::Full) => return Err(AppendError::Overloaded),
            Err(QueueRefused::Closed) => return Err(self.closed_error()),
            Ok(()) => {}
        }
        self.await_outcome(outcome).await
    }

    /// Like [`NodeHandle::append`], but reports `Overloaded` at once if the proposal queue is
    /// full instead of waiting for room.
    pub async fn try_append(&self, entry: T) -> Result<LogIndex, AppendError> {
        let (reply, outcome) = oneshot::channel();
        let request = AppendRequest { entry, reply, enqueued: Instant::now() };
        match self.inner.proposals.try_send(request) {
            Err(QueueRefused::Full) => return Err(AppendError::Overloaded),
            Err(QueueRefused::Closed) => return Err(self.closed_error()),
            Ok(()) => {}
        }
        self.await_outcome(outcome).await
    }

    /// The replica answers every append it took, at the latest when `append_timeout` has
    /// passed since the call (checked every round, so also at every tick).
    async fn await_outcome(
        &self,
        outcome: oneshot::Receiver<Result<LogIndex, AppendError>>,
    ) -> Result<LogIndex, AppendError> {
        match outcome.await {
            // The replica thread ended without answering: it may have taken the entry.
            Err(_) => Err(AppendError::Indeterminate(IndeterminateCause::Shutdown)),
            Ok(result) => result,
        }
    }

    /// A linearizable read barrier: resolves to a read index `i` once every decided entry
    /// below `i` was handed to this node's decided stream. A read served from a state machine
    /// that has applied the stream up to `i` reflects every append that completed (anywhere)
    /// before `read_barrier` was called. Uses the core's read index (a quorum confirms the
    /// leader's decided index; no log write). Every error may be retried.
    ///
    /// With a read lease configured (`SequencePaxosConfig::set_read_lease`) a leader holding
    /// its lease answers at once ([`ReadConsistency::LeaseIfHeld`]); see
    /// [`NodeHandle::read_barrier_with`] to insist on a quorum round.
    pub async fn read_barrier(&self) -> Result<LogIndex, ReadError> {
        self.read_barrier_with(ReadConsistency::LeaseIfHeld).await
    }

    /// [`NodeHandle::read_barrier`] with a choice per read: [`ReadConsistency::Confirmed`]
    /// always takes a confirmation round with a quorum (linearizable whatever the clocks do);
    /// [`ReadConsistency::LeaseIfHeld`] lets a leader holding a read lease answer at once.
    pub async fn read_barrier_with(&self, consistency: ReadConsistency) -> Result<LogIndex, ReadError> {
        let (reply, outcome) = oneshot::channel();
        if self.inner.reads.send((consistency, reply)).await.is_err() {
            return Err(if self.inner.shared.lock_view().stopped {
                ReadError::Stopped
            } else {
                ReadError::ShuttingDown
            });
        }
        outcome.await.unwrap_or(Err(ReadError::ShuttingDown))
    }

    fn closed_error(&self) -> AppendError {
        if self.inner.shared.lock_view().stopped {
            AppendError::Stopped
        } else {
            AppendError::ShuttingDown
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    /// The address this node listens on (with the port the OS chose for port 0).
    pub fn listen_addr(&self) -> SocketAddr {
        self.inner.listen_addr
    }

    /// A snapshot of the node: leader, ballot, indices, peers, queues.
    pub fn status(&self) -> Status {
        let view = self.inner.shared.lock_view().clone();
        let inner = &self.inner;
        let peers = inner.links.iter().map(|link| peer_status(link, view.accepted_idx)).collect();
        let decided_batches =
            inner.decided_queue.upgrade().map_or(0, |sender| sender.max_capacity() - sender.capacity());
        let queues = QueueStatus {
            proposals: inner.proposals.queued(),
            proposals_limit: inner.proposals.limit(),
            inbound: inner.inbound.max_capacity() - inner.inbound.capacity(),
            inbound_limit: inner.inbound.max_capacity(),
            decided_batches,
            decided_batches_limit: inner.decided_queue_limit,
            pending_appends: view.pending_appends,
            reads: inner.reads.max_capacity() - inner.reads.capacity(),
            reads_limit: inner.reads.max_capacity(),
            pending_reads: view.pending_reads,
            undelivered_entries: view.decided_idx.saturating_sub(view.delivered_idx),
            undelivered_limit: inner.undelivered_limit,
        };
        Status {
            node_id: inner.node_id,
            leader: view.leader,
            leader_ready: view.leader_ready,
            is_leader: view.is_leader,
            ballot: view.ballot,
            decided_idx: view.decided_idx,
            accepted_idx: view.accepted_idx,
            delivered_idx: view.delivered_idx,
            compacted_idx: view.compacted_idx,
            is_learner: view.is_learner,
            stopped: view.stopped,
            rounds: view.rounds,
            flushes: inner.shared.flushes.load(Ordering::Relaxed),
            flush_time: Duration::from_nanos(inner.shared.flush_time_ns.load(Ordering::Relaxed)),
            flush_latency: LatencyHistogram::from_counts(
                inner.shared.flush_buckets.iter().map(|count| count.load(Ordering::Relaxed)).collect(),
            ),
            rejected_frames: inner.shared.rejected_frames.load(Ordering::Relaxed),
            peers,
            queues,
        }
    }

    /// Shuts the node down and waits until it has: appends not yet taken are answered
    /// `ShuttingDown`, those in flight `Indeterminate`; the replica makes everything written
    /// durable and closes its storage; every task ends. Idempotent.
    pub async fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
        let mut finished = self.inner.finished.clone();
        // An error means the supervisor is gone (its runtime ended): nothing left to wait for.
        let _ = finished.wait_for(|finished| *finished).await;
    }
}

fn peer_status(link: &PeerLink, own_accepted_idx: LogIndex) -> PeerStatus {
    let stats = &link.stats;
    let seen = stats.progress_seen.load(Ordering::Acquire);
    let peer_accepted_idx = seen.then(|| stats.peer_accepted_idx.load(Ordering::Relaxed));
    PeerStatus {
        id: link.id,
        addr: link.addr,
        link: link.state(),
        reconnects: stats.reconnects.load(Ordering::Relaxed),
        queued_bytes: link.queued_bytes(),
        queue_limit_bytes: link.limit_bytes(),
        frames_out: stats.frames_out.load(Ordering::Relaxed),
        bytes_out: stats.bytes_out.load(Ordering::Relaxed),
        frames_in: stats.frames_in.load(Ordering::Relaxed),
        bytes_in: stats.bytes_in.load(Ordering::Relaxed),
        dropped_frames: stats.dropped_frames.load(Ordering::Relaxed),
        peer_decided_idx: seen.then(|| stats.peer_decided_idx.load(Ordering::Relaxed)),
        peer_accepted_idx,
        lag_entries: peer_accepted_idx.map(|peer| own_accepted_idx.saturating_sub(peer)),
    }
}

/// A running node. Dropping it signals shutdown without waiting; prefer
/// [`NodeHandle::shutdown`] (or [`Node::shutdown`]) to wait until the data directory is closed.
pub struct Node<T, S = ()> {
    handle: NodeHandle<T, S>,
}

impl<T, S> Drop for Node<T, S> {
    fn drop(&mut self) {
        self.handle.inner.shutdown.send_replace(true);
    }
}

impl<T: Entry, S: SnapshotState<T>> Node<T, S> {
    /// Starts a node from `config`; see [`NodeBuilder`] for the options.
    pub async fn start(config: NodeConfig) -> Result<(Node<T, S>, DecidedStream<T, S>), StartError> {
        NodeBuilder::new(config).start().await
    }

    /// A builder, for the options beyond the configuration.
    pub fn builder(config: NodeConfig) -> NodeBuilder<T, S> {
        NodeBuilder::new(config)
    }

    /// A handle for the application (cheap to clone).
    pub fn handle(&self) -> NodeHandle<T, S> {
        self.handle.clone()
    }

    /// The address this node listens on.
    pub fn listen_addr(&self) -> SocketAddr {
        self.handle.listen_addr()
    }

    /// Shuts the node down and waits until it has; see [`NodeHandle::shutdown`].
    pub async fn shutdown(self) {
        self.handle.shutdown().await;
    }
}

/// Starts a [`Node`] with options beyond its [`NodeConfig`].
pub struct NodeBuilder<T, S = ()> {
    config: NodeConfig,
    listener: Option<std::net::TcpListener>,
    filter: Option<LinkFilter>,
    deliver_from: LogIndex,
    _entry: PhantomData<fn() -> (T, S)>,
}

impl<T: Entry, S: SnapshotState<T>> NodeBuilder<T, S> {
    fn new(config: NodeConfig) -> Self {
        NodeBuilder { config, listener: None, filter: None, deliver_from: 0, _entry: PhantomData }
    }

    /// Serves on `listener` (already bound) instead of binding `listen_addr`: lets a caller
    /// learn every node's address before any node starts, e.g. by binding port 0.
    pub fn listener(mut self, listener: std::net::TcpListener) -> Self {
        self.listener = Some(listener);
        self
    }

    /// Consults `filter` for every outgoing round (fault injection for tests).
    pub fn link_filter(mut self, filter: LinkFilter) -> Self {
        self.filter = Some(filter);
        self
    }

    /// The first log index the decided stream delivers (default 0: after a restart the whole
    /// decided log is delivered again, for a state machine kept in memory).
    pub fn deliver_from(mut self, index: LogIndex) -> Self {
        self.deliver_from = index;
        self
    }

    /// Binds the listener, opens the storage and creates the replica on the replica thread,
    /// then starts the transport tasks. Must run inside a multi-threaded tokio runtime.
    pub async fn start(self) -> Result<(Node<T, S>, DecidedStream<T, S>), StartError> {
        let NodeBuilder { config, listener, filter, deliver_from, .. } = self;
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| StartError::NoRuntime)?;
        let node_id = config.node_id;
        let span = info_span!("omnipaxos_node", node = node_id);
        let (listener, listen_addr) = bind_listener(&config, listener)?;
        let limits = config.limits;
        let metrics = Arc::new(NodeMetrics::register(node_id));
        let shared = Arc::new(Shared::default());
        let links = register_links(&config);
        let (proposals_tx, proposals_rx) = proposal_queue(limits.proposal_queue_limit);
        let (completions, completer_task) = completer();
        let (inbound_tx, inbound_rx) = mpsc::channel(limits.inbound_queue_limit);
        let (reads_tx, reads_rx) = mpsc::channel(limits.read_queue_limit);
        let (ticks_tx, ticks_rx) = mpsc::channel(1);
        let (decided_tx, decided_rx) = mpsc::channel(limits.decided_queue_limit_batches);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (finished_tx, finished_rx) = watch::channel(false);
        let decided_weak = decided_tx.downgrade();

        let channels = ReplicaChannels {
            proposals: proposals_rx,
            reads: reads_rx,
            inbound: inbound_rx,
            ticks: ticks_rx,
            shutdown: shutdown_rx.clone(),
            decided: Some(decided_tx),
            completions,
        };
        let replica_ctx = ReplicaContext::new(
            &config,
            links.clone(),
            filter.clone(),
            shared.clone(),
            metrics.clone(),
            runtime.clone(),
        );
        let replica_done =
            spawn_replica_thread::<T, S>(&config, channels, replica_ctx, deliver_from, span.clone()).await?;

        // Answers wake the appending tasks: from a task of their own runtime that is cheap.
        // It ends when the replica thread drops its end, after the last answers.
        let completer = runtime.spawn(completer_task.instrument(span.clone()));
        let io = IoTasks {
            inbound: Arc::new(InboundContext::new(
                &config,
                links.clone(),
                inbound_tx.clone(),
                shared.clone(),
                metrics.clone(),
            )),
            connection_limit: limits.inbound_connection_limit,
            links: links.clone(),
            backoff: config.backoff,
            filter,
            tick_interval: config.tick_interval,
            ticks: ticks_tx,
            shutdown: shutdown_rx.clone(),
            span: span.clone(),
        };
        let io_done = spawn_io_thread::<T, S>(node_id, listener, listen_addr, io)?;
        runtime.spawn(
            supervise(replica_done, completer, io_done, shutdown_rx, finished_tx).instrument(span.clone()),
        );
        info!(parent: &span, %listen_addr, peers = links.len(), "node started");

        let handle = NodeHandle {
            inner: Arc::new(HandleInner {
                node_id,
                listen_addr,
                append_timeout: config.append_timeout,
                proposals: proposals_tx,
                reads: reads_tx,
                inbound: inbound_tx,
                decided_queue: decided_weak,
                decided_queue_limit: limits.decided_queue_limit_batches,
                undelivered_limit: limits.undelivered_limit_entries,
                shutdown: shutdown_tx,
                finished: finished_rx,
                links,
                shared,
            }),
        };
        let decided = DecidedStream { receiver: decided_rx, buffered: VecDeque::new() };
        Ok((Node { handle }, decided))
    }
}

/// The configured listener, or one bound to `listen_addr`; non-blocking, with its address.
fn bind_listener(
    config: &NodeConfig,
    listener: Option<std::net::TcpListener>,
) -> Result<(std::net::TcpListener, SocketAddr), StartError> {
    let bind_error = |source| StartError::Bind { addr: config.listen_addr, source };
    let listener = match listener {
        Some(listener) => listener,
        None => std::net::TcpListener::bind(config.listen_addr).map_err(bind_error)?,
    };
    listener.set_nonblocking(true).map_err(bind_error)?;
    let listen_addr = listener.local_addr().map_err(bind_error)?;
    Ok((listener, listen_addr))
}

/// One link per peer, with its metrics registered.
fn register_links(config: &NodeConfig) -> Vec<Arc<PeerLink>> {
    let limit_bytes = config.limits.peer_queue_limit_bytes;
    let link = |peer: &crate::config::PeerConfig| {
        let metrics = PeerMetrics::register(config.node_id, peer.id);
        Arc::new(PeerLink::new(peer.id, peer.addr, limit_bytes, metrics))
    };
    config.peers.iter().map(link).collect()
}

/// The transport tasks of one node, to be started on its I/O thread.
struct IoTasks<T, S> {
    inbound: Arc<InboundContext<T, S>>,
    connection_limit: usize,
    links: Vec<Arc<PeerLink>>,
    backoff: crate::config::BackoffConfig,
    filter: Option<LinkFilter>,
    tick_interval: Duration,
    ticks: mpsc::Sender<()>,
    shutdown: watch::Receiver<bool>,
    span: tracing::Span,
}

/// Starts the node's I/O thread: a single-threaded tokio runtime of its own that runs the
/// listener, the readers, the writers and the ticker. The application's tasks run on its own
/// runtime, so however many of them are runnable, they never delay a heartbeat or a frame of
/// this node. Returns a receiver that resolves when every transport task has ended.
fn spawn_io_thread<T: Entry, S: SnapshotState<T>>(
    node_id: NodeId,
    listener: std::net::TcpListener,
    listen_addr: SocketAddr,
    io: IoTasks<T, S>,
) -> Result<oneshot::Receiver<()>, StartError> {
    let io_runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(StartError::Thread)?;
    let listener = {
        // The listener registers with the reactor of the runtime it is created in.
        let _entered = io_runtime.enter();
        TcpListener::from_std(listener).map_err(|source| StartError::Bind { addr: listen_addr, source })?
    };
    let (done_tx, done_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name(format!("omnipaxos-io-{node_id}"))
        .spawn(move || {
            io_runtime.block_on(run_io(io, listener));
            drop(io_runtime);
            let _ = done_tx.send(());
        })
        .map_err(StartError::Thread)?;
    Ok(done_rx)
}

/// Runs the transport tasks until shutdown, then waits for them to end (aborting them after
/// a timeout).
async fn run_io<T: Entry, S: SnapshotState<T>>(io: IoTasks<T, S>, listener: TcpListener) {
    let IoTasks {
        inbound,
        connection_limit,
        links,
        backoff,
        filter,
        tick_interval,
        ticks,
        mut shutdown,
        span,
    } = io;
    let own_id = inbound.own_id;
    let mut tasks = JoinSet::new();
    tasks.spawn(run_listener(listener, inbound, connection_limit, shutdown.clone()).instrument(span.clone()));
    for link in links {
        let writer_ctx =
            WriterContext { own_id, backoff, filter: filter.clone(), shutdown: shutdown.clone() };
        let link_span = info_span!(parent: &span, "link", peer = link.id);
        tasks.spawn(run_writer(link, writer_ctx).instrument(link_span));
    }
    tasks.spawn(run_ticker(tick_interval, ticks, shutdown.clone()).instrument(span.clone()));
    let _ = shutdown.wait_for(|stop| *stop).await;
    let all_ended = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(TASK_SHUTDOWN_TIMEOUT, all_ended).await.is_err() {
        warn!(parent: &span, "transport tasks did not end in time; aborting them");
        tasks.shutdown().await;
    }
}

/// Starts the replica thread: it opens the storage and creates the replica (both may do disk
/// I/O, so not on a tokio worker), reports readiness, then runs rounds. Returns a receiver
/// that resolves when the thread has closed the replica.
async fn spawn_replica_thread<T: Entry, S: SnapshotState<T>>(
    config: &NodeConfig,
    channels: ReplicaChannels<T, S>,
    ctx: ReplicaContext,
    deliver_from: LogIndex,
    span: tracing::Span,
) -> Result<oneshot::Receiver<()>, StartError> {
    let (ready_tx, ready_rx) = oneshot::channel::<Result<(), StartError>>();
    let (done_tx, done_rx) = oneshot::channel();
    let core_config = config.core.clone();
    let storage_config = config.storage.clone();
    let (cluster_id, node_id) = (config.cluster_id, config.node_id);
    let lost_storage = config.lost_storage;
    let buffer_size = config.core.sequence_paxos.buffer_size();
    std::thread::Builder::new()
        .name(format!("omnipaxos-replica-{node_id}"))
        .spawn(move || {
            let _entered = span.enter();
            let (flush_latency, shared) = (ctx.metrics.flush_latency.clone(), ctx.shared.clone());
            match storage_config {
                StorageConfig::Memory => {
                    let storage =
                        TimedStorage::new(MemoryStorage::<T, S>::default(), flush_latency, shared, None);
                    run_replica(core_config, storage, channels, ctx, buffer_size, deliver_from, ready_tx);
                }
                StorageConfig::Persistent { data_dir, mode, segment_size_bytes, type_tag } => {
                    let mut storage_config = PersistentStorageConfig::new(
                        data_dir,
                        core_config.sequence_paxos.configuration_id(),
                        node_id,
                    )
                    .cluster_id(cluster_id)
                    .mode(mode)
                    .segment_size_bytes(segment_size_bytes);
                    if let Some(tag) = type_tag {
                        storage_config = storage_config.type_tag(tag);
                    }
                    let opened = PersistentStorage::<T, S>::open(&storage_config)
                        .map_err(StartError::from)
                        .and_then(|storage| apply_lost_storage_policy(storage, lost_storage, core_config));
                    match opened {
                        Ok((storage, core_config)) => {
                            let closer: fn(PersistentStorage<T, S>) -> _ = PersistentStorage::close;
                            let storage = TimedStorage::new(storage, flush_latency, shared, Some(closer));
                            run_replica(
                                core_config,
                                storage,
                                channels,
                                ctx,
                                buffer_size,
                                deliver_from,
                                ready_tx,
                            );
                        }
                        Err(error) => {
                            let _ = ready_tx.send(Err(error));
                        }
                    }
                }
            }
            let _ = done_tx.send(());
        })
        .map_err(StartError::Thread)?;
    match ready_rx.await {
        Ok(Ok(())) => Ok(done_rx),
        Ok(Err(error)) => Err(error),
        Err(_) => {
            Err(StartError::Thread(std::io::Error::other("the replica thread ended before it was ready")))
        }
    }
}

/// Decides whether a storage that may have lost acknowledged state may start, and as what.
/// A replica that already holds the learner promise (a round no leader can reach) is a learner
/// for good and starts as one; otherwise the node's [`LostStoragePolicy`] decides: refuse, or
/// start as a learner (it never votes again in this configuration; ARCHITECTURE.md, "Amnesia").
fn apply_lost_storage_policy<T, S>(
    storage: PersistentStorage<T, S>,
    policy: LostStoragePolicy,
    mut core_config: omnipaxos_core::OmniPaxosConfig,
) -> Result<(PersistentStorage<T, S>, omnipaxos_core::OmniPaxosConfig), StartError>
where
    T: Entry,
    S: SnapshotState<T>,
{
    let report = storage.open_report();
    if !report.acknowledged_state_may_be_lost() {
        return Ok((storage, core_config));
    }
    let promise = storage.get_promise().map_err(|error| StartError::Thread(std::io::Error::other(error)))?;
    let already_learner = promise.is_some_and(|promise| promise.is_learner_promise());
    if already_learner || policy == LostStoragePolicy::StartAsLearner {
        warn!(
            ?report,
            already_learner, "the storage may have lost acknowledged state: starting as a learner"
        );
        core_config.sequence_paxos.set_learner(true);
        return Ok((storage, core_config));
    }
    Err(StartError::AcknowledgedStateMayBeLost { report: Box::new(report.clone()) })
}

fn run_replica<T: Entry, S: SnapshotState<T>, B: Storage<T, S>>(
    mut core_config: omnipaxos_core::OmniPaxosConfig,
    storage: B,
    channels: ReplicaChannels<T, S>,
    ctx: ReplicaContext,
    buffer_size: usize,
    deliver_from: LogIndex,
    ready: oneshot::Sender<Result<(), StartError>>,
) {
    // Read request numbers never repeat across this replica's processes, also after its
    // storage was lost (a learner over a replaced log counts incarnations from 1 again).
    core_config.sequence_paxos.set_process_nonce(rand::random());
    let op = match OmniPaxos::try_with(core_config, storage) {
        Ok(op) => op,
        Err(error) => {
            let _ = ready.send(Err(error.into()));
            return;
        }
    };
    let replica = Replica::new(op, channels, ctx, buffer_size, deliver_from);
    // Published before `start` returns, so that the first `status()` shows the recovered state.
    replica.publish();
    if ready.send(Ok(())).is_err() {
        return; // start was cancelled
    }
    replica.run();
}

/// Sends a tick every `interval`; a tick the replica has not taken yet absorbs later ones
/// (capacity-1 queue), and missed ticks are skipped, never replayed in a burst.
async fn run_ticker(interval: Duration, ticks: mpsc::Sender<()>, mut shutdown: watch::Receiver<bool>) {
    let mut timer = tokio::time::interval(interval);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = timer.tick() => {
                if let Err(mpsc::error::TrySendError::Closed(())) = ticks.try_send(()) {
                    return;
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// Waits for the shutdown signal, then for the replica thread to close its storage, for the
/// last answers and for the transport; then reports the node finished.
async fn supervise(
    replica_done: oneshot::Receiver<()>,
    completer: tokio::task::JoinHandle<()>,
    io_done: oneshot::Receiver<()>,
    mut shutdown: watch::Receiver<bool>,
    finished: watch::Sender<bool>,
) {
    let _ = shutdown.wait_for(|stop| *stop).await;
    let _ = replica_done.await;
    let _ = completer.await;
    let _ = io_done.await;
    info!("node stopped");
    finished.send_replace(true);
}
