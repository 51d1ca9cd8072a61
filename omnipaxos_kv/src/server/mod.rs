//! `opkv server`: one node of the replicated key-value service.
//!
//! ```text
//!  HTTP clients ──► axum handlers ──(append / read_barrier)──► omnipaxos_runtime Node
//!        ▲              │  wait for the answer /                 (replica thread, WAL,
//!        │              │  for the applied index                  TCP to peers)
//!        │              ▼                                              │ decided stream
//!        └──────── Store (KvState behind a RwLock) ◄── applier task ◄──┘ (entries, snapshots)
//! ```
//!
//! Start-up decides how the data directory is opened (see [`StartOptions`]); shutdown (first
//! SIGTERM or Ctrl-C) stops taking requests, ends watch streams, lets requests in flight
//! finish, then shuts the node down, which makes everything durable and closes the log.

pub mod error;
pub mod http;
pub mod store;

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{atomic::AtomicU64, Arc},
    time::Duration,
};

use omnipaxos_core::sequence_paxos::ReadLease;
use omnipaxos_runtime::{
    metrics::PrometheusExporter, LostStoragePolicy, Node, NodeConfig, OpenMode, PeerConfig, StartError,
    StorageConfig,
};
use omnipaxos_storage::persistent_storage::OpenError;
use tokio::sync::{watch, Semaphore};
use tracing::{info, warn};

use crate::{
    command::Command,
    config::ServerConfig,
    state::{KvSnapshot, STATE_QUOTA_BYTES},
};

/// Frames between nodes may carry a whole snapshot; it is bounded by the state's quota.
pub const MAX_FRAME_BYTES: u32 = (STATE_QUOTA_BYTES + (128 << 20)) as u32;
/// The type tag of the service's log (entries [`Command`], snapshots [`KvSnapshot`]): a node
/// refuses a data directory written with another. Change it whenever those types change.
pub const LOG_TYPE_TAG: &str = "omnipaxos_kv/command-v1";
/// How often the cached leader in response headers is refreshed.
const LEADER_REFRESH: Duration = Duration::from_millis(10);

/// How the data directory is opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StartOptions {
    /// First start of a new cluster: create the log (refused if the directory holds one).
    /// Without it the log must exist (a restart).
    pub bootstrap: bool,
    /// The node lost its data directory (or it may have lost acknowledged state): start it as
    /// a learner, which learns the log but never votes or takes writes again in this cluster
    /// configuration. Without it such a node refuses to start.
    pub replace_lost_storage: bool,
    /// Test switch (feature `test-switches`): serve every read from local state without any
    /// quorum check. Breaks linearizability on purpose; the fault harness must catch it.
    pub unsafe_stale_reads: bool,
}

/// Why the server could not start or stopped with an error; each maps to an exit code.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// An address could not be bound (exit code 4).
    #[error("cannot listen on {addr} ({field}): {source}")]
    Bind {
        /// `client_listen` or `peer_listen`.
        field: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The data directory was refused (exit code 3).
    #[error("data directory {path}: {message}")]
    DataDirectory {
        /// The directory.
        path: PathBuf,
        /// What is wrong and what to do.
        message: String,
    },
    /// Anything else (exit code 1).
    #[error("{0}")]
    Other(String),
}

impl ServerError {
    /// The process exit code.
    pub fn exit_code(&self) -> i32 {
        match self {
            ServerError::Bind { .. } => 4,
            ServerError::DataDirectory { .. } => 3,
            ServerError::Other(_) => 1,
        }
    }
}

/// The runtime configuration of a node from the service's.
fn node_config(config: &ServerConfig, options: StartOptions, mode: OpenMode) -> NodeConfig {
    let peers = config.peers.iter().map(|peer| PeerConfig { id: peer.id, addr: peer.addr }).collect();
    let mut node = NodeConfig::new(config.node_id, config.cluster_id, peers);
    node.listen_addr = config.peer_listen;
    node.tick_interval = config.tick;
    node.append_timeout = config.request_timeout;
    node.core.set_election_timeout_ticks(config.election_timeout_ticks);
    if !config.read_lease.is_zero() {
        let lease_ticks = (config.read_lease.as_millis() / config.tick.as_millis().max(1)) as u64;
        node.core.sequence_paxos.set_read_lease(Some(ReadLease {
            lease_ticks,
            max_clock_drift_percent: config.max_clock_drift_percent,
        }));
    }
    node.storage = StorageConfig::Persistent {
        data_dir: config.data_dir.clone(),
        mode,
        segment_size_bytes: config.wal_segment_bytes,
        type_tag: Some(LOG_TYPE_TAG.to_string()),
    };
    node.snapshot_interval_entries =
        (config.snapshot_interval_entries > 0).then_some(config.snapshot_interval_entries);
    node.lost_storage = if options.replace_lost_storage {
        LostStoragePolicy::StartAsLearner
    } else {
        LostStoragePolicy::Refuse
    };
    node.limits.max_frame_bytes = MAX_FRAME_BYTES;
    node
}

/// Starts the node over its data directory as `options` say, with the refusals explained.
async fn start_node(
    config: &ServerConfig,
    options: StartOptions,
) -> Result<(Node<Command, KvSnapshot>, omnipaxos_runtime::DecidedStream<Command, KvSnapshot>), ServerError> {
    let mode = if options.bootstrap { OpenMode::Bootstrap } else { OpenMode::Restart };
    let path = config.data_dir.clone();
    let refused = |message: String| ServerError::DataDirectory { path: path.clone(), message };
    match Node::start(node_config(config, options, mode)).await {
        Ok(started) => return Ok(started),
        Err(StartError::Storage(OpenError::LogMissing { found, .. })) if options.replace_lost_storage => {
            warn!(%found, "no log: replacing it; this node starts as a learner");
        }
        Err(StartError::Storage(OpenError::LogMissing { found, .. })) => {
            return Err(refused(format!(
                "holds no log ({found}). First start of a new cluster: add --bootstrap. If this node had \
                 data that was lost: add --replace-lost-storage (it rejoins as a learner, never as a voter)"
            )))
        }
        Err(StartError::Storage(OpenError::AlreadyInitialized { .. })) => {
            return Err(refused("already holds a log: this is a restart, drop --bootstrap".into()))
        }
        Err(StartError::AcknowledgedStateMayBeLost { report }) => {
            return Err(refused(format!(
                "may have lost state this node acknowledged ({:?}); it must not vote again. Start it with \
                 --replace-lost-storage to rejoin as a learner",
                report.possible_loss
            )))
        }
        Err(StartError::Storage(error)) => return Err(refused(error.to_string())),
        Err(StartError::Replica(error)) => return Err(refused(error.to_string())),
        Err(StartError::Bind { addr, source }) => {
            return Err(ServerError::Bind { field: "peer_listen", addr, source })
        }
        Err(error) => return Err(ServerError::Other(error.to_string())),
    }
    Node::start(node_config(config, options, OpenMode::Replace)).await.map_err(|error| match error {
        StartError::Bind { addr, source } => ServerError::Bind { field: "peer_listen", addr, source },
        other => refused(other.to_string()),
    })
}

/// Runs the server until `shutdown` turns true, then shuts down cleanly.
pub async fn run(
    config: ServerConfig,
    options: StartOptions,
    shutdown: watch::Receiver<bool>,
) -> Result<(), ServerError> {
    let client_listener = std::net::TcpListener::bind(config.client_listen)
        .map_err(|source| ServerError::Bind { field: "client_listen", addr: config.client_listen, source })?;
    client_listener.set_nonblocking(true).map_err(|error| ServerError::Other(error.to_string()))?;
    let client_addr = client_listener.local_addr().map_err(|error| ServerError::Other(error.to_string()))?;
    let client_listener = tokio::net::TcpListener::from_std(client_listener)
        .map_err(|error| ServerError::Other(error.to_string()))?;
    let exporter = PrometheusExporter::install().ok();
    let (node, decided) = start_node(&config, options).await?;
    let handle = node.handle();
    let store = store::Store::new(config.watch_history_events, config.watch_history_bytes);
    let applier = tokio::spawn(store::run_applier(decided, store.clone()));
    let leader = Arc::new(AtomicU64::new(0));
    tokio::spawn(refresh_leader(handle.clone(), leader.clone(), shutdown.clone()));
    let mut config = config;
    config.client_listen = client_addr;
    let state = http::AppState {
        handle: handle.clone(),
        store,
        config: Arc::new(config.clone()),
        leader,
        requests: Arc::new(Semaphore::new(config.max_concurrent_requests)),
        watchers: Arc::new(Semaphore::new(config.max_watchers)),
        shutdown: shutdown.clone(),
        exporter,
        http_metrics: http::HttpMetrics::default(),
        unsafe_stale_reads: options.unsafe_stale_reads,
    };
    if options.unsafe_stale_reads {
        warn!("--unsafe-stale-reads: every read is served locally without a quorum check (NOT linearizable)");
    }
    let status = handle.status();
    info!(
        node = config.node_id,
        %client_addr,
        peer_addr = %handle.listen_addr(),
        decided_idx = status.decided_idx,
        learner = status.is_learner,
        "serving"
    );
    println!(
        "opkv server: node {} serving clients on http://{client_addr} (peers on {})",
        config.node_id,
        handle.listen_addr()
    );
    let app = http::router(state);
    let mut stop = shutdown.clone();
    let served = axum::serve(client_listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|stop| *stop).await;
        })
        .await;
    info!("shutting down: requests drained, closing the node");
    node.shutdown().await;
    let _ = applier.await;
    served.map_err(|error| ServerError::Other(format!("HTTP server failed: {error}")))
}

async fn refresh_leader(
    handle: omnipaxos_runtime::NodeHandle<Command, KvSnapshot>,
    leader: Arc<AtomicU64>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut interval = tokio::time::interval(LEADER_REFRESH);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = interval.tick() => {
                let status = handle.status();
                leader.store(status.leader.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
            }
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}
