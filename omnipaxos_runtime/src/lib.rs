//! A tokio runtime for one `omnipaxos_core` replica: it runs an [`omnipaxos_core::OmniPaxos`]
//! over real TCP with durable storage, answers each `append` with the log index where the
//! entry was decided, streams decided entries in log order to the application's state
//! machine, and reports status and metrics. It is what turns the sans-IO core into a service.
//!
//! ```text
//!  application's runtime        node's I/O thread               replica thread (owns OmniPaxos)
//!  (tokio workers)              (own 1-thread tokio runtime)    ─────────────────────────────────
//!  ─────────────────            ────────────────────────────
//!  append futures ──► proposal queue (permits) ───────────┐     1. take everything queued: messages,
//!                               ticker (interval, missed   │        the tick, appends (only while
//!                                 ticks skipped) ──► tick ─┤        the decided stream keeps up)
//!                                 slot (capacity 1)        │     2. answer appends decided so far
//!                               reader task per incoming   │     3. take_outgoing_messages:
//!                                 connection (header check,├──►       storage.flush() (fsync)  persist
//!                                 decode) ──► inbound ─────┘          then release messages    before
//!                                 queue (messages)                4. one frame buffer per peer:  send
//!                               writer task per peer ◄── peer        idle link: one try_write by
//!                                 (connect, backoff +    queue       this thread; else the peer
//!                                 jitter, vectored writes, ◄──────    queue (bytes)
//!                                 reconnected(pid))               5. answers ─┐
//!  completer task ◄──────────────────────────────────────────────────────────┘ (one batch per round)
//!    └─► append futures        decided stream (bounded) ◄──────── 6. decided entries
//!                                                                 7. publish status and gauges
//! ```
//!
//! **Persist before send.** The core releases messages only from `take_outgoing_messages`,
//! which flushes storage first; the replica thread frames exactly what that call returned and
//! nothing else reaches a socket, apart from progress frames that carry the node's decided and
//! accepted index for [`NodeHandle::status`]. So a Promise or Accepted can never leave before
//! the write behind it is durable, and one `fdatasync` covers everything taken in step 1.
//!
//! **The key design decision: one owner thread, rounds instead of events.** The replica lives
//! on a dedicated OS thread (not a tokio worker) and is driven in rounds: everything that
//! queued up while the previous round was flushing becomes the next round's input, then one
//! flush, then one write per peer. Slow fsyncs therefore never stall network I/O (which runs
//! on the node's I/O thread), and the slower the disk, the larger each round's batch (natural group commit,
//! without a timer). Costs that would be paid per append are paid per round where possible:
//! the proposal queue's permits are returned once per round, append deadlines are checked by
//! the replica (oldest first, no timer per append), answers go out in one batch per round,
//! and a round for an idle link is written by the replica thread itself with one
//! non-blocking `try_write`. The transport runs on a single-threaded tokio runtime of its own
//! per node (the I/O thread), so however many application tasks are runnable on the
//! application's runtime, none of them delays a frame or a heartbeat of the node (with 4096
//! proposer tasks on two workers, sharing their runtime doubled append latency and let
//! leaders look unready).
//!
//! # Queues and what happens when each is full
//!
//! | queue | limit ([`Limits`]) | when full |
//! |---|---|---|
//! | appends into the replica | `proposal_queue_limit` requests | `append` waits (backpressure) up to `append_timeout`, then `Overloaded`; `try_append` answers `Overloaded` at once |
//! | appends in the core | the core's `buffer_size` | no more appends are taken from the queue |
//! | read barriers into the replica | `read_queue_limit` | `read_barrier` waits |
//! | messages from the network | `inbound_queue_limit` messages (each at most `max_frame_bytes`) | the reader waits; TCP flow control slows the sender |
//! | decided entries for the user | `decided_queue_limit_batches` × `decided_batch_limit_entries` | decided entries wait in storage; once `undelivered_limit_entries` wait, no append is taken (a slow consumer slows proposals; memory does not grow) |
//! | frames for a peer | `peer_queue_limit_bytes` (+ one round) | the round for that peer is dropped whole and counted; once the queue has drained to half, the replica calls `reconnected(peer)` so the core resynchronises it at once (the protocol would also resend on its own: sequence numbers and resend timeouts) |
//! | pending ticks | 1 | later ticks merge into the pending one |
//! | incoming connections | `inbound_connection_limit` | a new connection is closed |
//!
//! # Errors of `append`
//!
//! [`AppendError`]: definite errors (`NotLeaderReachable`, `Dropped`, `ShuttingDown`,
//! `Overloaded`, `Stopped`) guarantee the entry is not in the log; `Indeterminate` means it
//! may be (timeout, shutdown while in flight, storage failure, snapshot). An append is taken
//! only while this node knows a ready leader (the core's `get_current_leader`), so during an
//! election appends are refused with `NotLeaderReachable` instead of waiting.
//!
//! # Wire format and transport
//!
//! Length-prefixed frames with a versioned header (magic, protocol version, kind, cluster
//! id, sender, receiver) and a bincode 1.3 payload; see [`transport::frame`]. A frame from a
//! wrong cluster, an unknown sender, for another receiver, of another version, oversized or
//! undecodable is logged with its typed [`transport::frame::FrameError`], counted in
//! `Status::rejected_frames` and the `omnipaxos_frames_rejected_total` metric, and its
//! connection is closed; nothing of it reaches the replica. Each node dials every peer for its
//! own outgoing traffic (`TCP_NODELAY`) and accepts the peers' dials for incoming traffic.
//! There is no authentication or encryption: run it on a trusted network.
//!
//! # Observability
//!
//! Every task runs in a `tracing` span `omnipaxos_node{node=<id>}` (links in
//! `link{peer=<id>}`). Metrics go through the [`metrics`](::metrics) facade; see
//! [`crate::metrics`] for the list and for [`metrics::PrometheusExporter`], which renders the
//! Prometheus text format.
//!
//! # Linearizable reads
//!
//! [`NodeHandle::read_barrier`] uses the core's read index (`OmniPaxos::read_index`; a write
//! quorum confirms that the leader still leads, no log write). It resolves to a read index
//! `i` once every decided entry below `i` was handed to this node's decided stream; a read
//! served from a state machine that applied the stream up to `i` reflects every append that
//! completed anywhere before the barrier was requested. Barriers go through a bounded queue
//! (`read_queue_limit`) into the replica thread, next to appends; the core bounds those it
//! holds (`buffer_size`) and times them out (`read_timeout_ticks`). The issue's
//! `linearizable_read(f)` (run `f` on the state machine at the barrier) is left to the
//! application, which owns the state machine: await the barrier, then wait until its applied
//! index reaches it. The brief for this crate was written while the core had no read index;
//! it landed meanwhile and this was added at the end (two tests in `tests/reads.rs`).
//!
//! # Snapshots and compaction
//!
//! A node's entry type `T` may come with a snapshot type `S` (the core's
//! [`Snapshot`](omnipaxos_core::storage::Snapshot), serializable; [`SnapshotState`]): `Node<T, S>`.
//! With [`NodeConfig::snapshot_interval_entries`] set, the replica thread calls the core's
//! `snapshot(idx, local_only = true)` whenever that many delivered decided entries lie beyond
//! the compacted index: the core builds the snapshot from the entries (and the previous
//! snapshot), stores it with the trim in the same write, and from then on sends it (in an
//! AcceptSync or LearnerSync) to any peer that needs compacted entries. Each node compacts on
//! its own schedule, only what its own state machine has already received; nothing waits for
//! the slowest peer, and a peer that is down for long catches up from the snapshot. The
//! decided stream ([`DecidedStream::next_event`]) then yields [`DecidedEvent::Snapshot`]:
//! first after a start over a compacted log (state = snapshot + the log after it), and
//! whenever the node installed a peer's snapshot. With `S = ()` (the default) nothing is ever
//! compacted and `recv`/`recv_batch` work as before. The snapshot lives in the data
//! directory's log (each segment's checkpoint holds it) and in memory, and travels in one
//! frame: keep it below `max_frame_bytes`.
//!
//! # A data directory that may have lost acknowledged state
//!
//! If `PersistentStorage` reports a possible loss (`OpenReport::acknowledged_state_may_be_lost`:
//! a log replaced with `OpenMode::Replace`, a damaged tail it cannot rule out), the node must not
//! vote again in its configuration (ARCHITECTURE.md, "Amnesia"). [`NodeConfig::lost_storage`]
//! decides: [`LostStoragePolicy::Refuse`] (default) fails the start with
//! [`StartError::AcknowledgedStateMayBeLost`]; [`LostStoragePolicy::StartAsLearner`] starts it
//! as a learner (it learns the decided log and serves reads; appends answer
//! [`AppendError::Learner`]). A replica that already is a learner restarts as one.
//!
//! # Example
//!
//! ```no_run
//! use omnipaxos_runtime::{Node, NodeConfig, PeerConfig, StorageConfig};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let peers = vec![
//!     PeerConfig { id: 2, addr: "10.0.0.2:7000".parse()? },
//!     PeerConfig { id: 3, addr: "10.0.0.3:7000".parse()? },
//! ];
//! let mut config = NodeConfig::new(1, 0xC1A5, peers);
//! config.listen_addr = "10.0.0.1:7000".parse()?;
//! config.storage = StorageConfig::persistent_bootstrap("/var/lib/mylog/node1"); // first start
//! let (node, mut decided) = Node::<String>::start(config).await?;
//! let handle = node.handle();
//! tokio::spawn(async move {
//!     while let Some(entry) = decided.recv().await {
//!         println!("{}: {}", entry.index, entry.entry); // apply to the state machine
//!     }
//! });
//! let index = handle.append("hello".to_string()).await?;
//! println!("decided at {index}; status: {:?}", handle.status());
//! node.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod appends;
mod config;
mod error;
pub mod metrics;
mod node;
mod replica;
mod status;
pub mod transport;

pub use config::{
    BackoffConfig, Limits, LostStoragePolicy, NodeConfig, NodeConfigError, PeerConfig, StorageConfig,
    DEFAULT_APPEND_TIMEOUT, DEFAULT_DECIDED_BATCH_LIMIT_ENTRIES, DEFAULT_DECIDED_QUEUE_LIMIT_BATCHES,
    DEFAULT_ELECTION_TIMEOUT_TICKS, DEFAULT_INBOUND_CONNECTION_LIMIT, DEFAULT_INBOUND_QUEUE_LIMIT,
    DEFAULT_MAX_FRAME_BYTES, DEFAULT_PEER_QUEUE_LIMIT_BYTES, DEFAULT_PROGRESS_INTERVAL_TICKS,
    DEFAULT_PROPOSAL_QUEUE_LIMIT, DEFAULT_ROUND_LIMIT_INPUTS, DEFAULT_TICK_INTERVAL,
    DEFAULT_UNDELIVERED_LIMIT_ENTRIES,
};
pub use error::{AppendError, IndeterminateCause, ReadError, StartError};
pub use node::{Decided, DecidedEvent, DecidedStream, Entry, Node, NodeBuilder, NodeHandle, SnapshotState};
pub use omnipaxos_core::sequence_paxos::ReadConsistency;
pub use omnipaxos_storage::persistent_storage::OpenMode;
pub use status::{LatencyHistogram, LinkState, PeerStatus, QueueStatus, Status};
pub use transport::filter::LinkFilter;
