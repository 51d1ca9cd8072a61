//! Metrics through the [`metrics`] facade, and a Prometheus text exporter.
//!
//! A node registers its metrics once when it starts, labelled `node="<id>"` (and
//! `peer="<id>"` where it applies), with whatever recorder is installed at that moment; with
//! none installed every update is a no-op. [`PrometheusExporter::install`] installs a
//! Prometheus recorder and keeps its histograms drained; [`PrometheusExporter::render`] gives
//! the text a `/metrics` endpoint serves.
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `omnipaxos_leader` | gauge | node | the leader's id (0: none known) |
//! | `omnipaxos_is_leader` | gauge | node | 1 on the leader |
//! | `omnipaxos_ballot_round` | gauge | node | round number of the promised ballot |
//! | `omnipaxos_decided_index` | gauge | node | decided index |
//! | `omnipaxos_accepted_index` | gauge | node | accepted index |
//! | `omnipaxos_compacted_index` | gauge | node | entries below it are compacted into a snapshot |
//! | `omnipaxos_snapshots_total` | counter | node | snapshots this node took |
//! | `omnipaxos_proposals_total` | counter | node | appends handed to the replica (rate = proposals/s) |
//! | `omnipaxos_decisions_total` | counter | node | entries decided (rate = decisions/s) |
//! | `omnipaxos_append_failures_total` | counter | node, reason | appends that did not resolve to an index |
//! | `omnipaxos_append_to_decided_seconds` | histogram | node | from `append` to the outcome |
//! | `omnipaxos_flush_seconds` | histogram | node | one storage flush (`fdatasync` for `PersistentStorage`) |
//! | `omnipaxos_rounds_total` | counter | node | rounds of the replica thread |
//! | `omnipaxos_queue_depth` | gauge | node, queue | proposals, inbound, pending (appends in the replica), undelivered (decided, not streamed) |
//! | `omnipaxos_messages_out_total` / `_in_total` | counter | node, peer, kind | frames (kind: paxos, ble, progress) |
//! | `omnipaxos_bytes_out_total` / `_in_total` | counter | node, peer | bytes on the socket |
//! | `omnipaxos_peer_queue_bytes` | gauge | node, peer | bytes queued for the peer |
//! | `omnipaxos_peer_connected` | gauge | node, peer | 1 while the outgoing link is up |
//! | `omnipaxos_reconnects_total` | counter | node, peer | outgoing link re-established |
//! | `omnipaxos_frames_dropped_total` | counter | node, peer, reason | outgoing frames dropped (queue_full, disconnected, filtered, oversized) |
//! | `omnipaxos_frames_rejected_total` | counter | node, reason | incoming frames rejected (the connection is closed) |

use std::time::Duration;

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{BuildError, PrometheusBuilder, PrometheusHandle};
use omnipaxos_core::util::NodeId;

/// How often the exporter drains histogram samples into buckets: bounds the samples held in
/// memory to those recorded in one interval.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Histogram buckets in seconds: 10 µs to 10 s.
const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A process-wide Prometheus recorder; render its text with [`PrometheusExporter::render`].
#[derive(Clone)]
pub struct PrometheusExporter {
    handle: PrometheusHandle,
}

impl PrometheusExporter {
    /// Installs a Prometheus recorder as the process's `metrics` recorder and, inside a tokio
    /// runtime, a task that drains histograms every [`UPKEEP_INTERVAL`] (outside one, call
    /// [`PrometheusExporter::run_upkeep`] yourself). Install it before starting nodes: a node
    /// registers its metrics when it starts. Fails if a recorder is already installed.
    pub fn install() -> Result<Self, BuildError> {
        let handle = PrometheusBuilder::new().set_buckets(LATENCY_BUCKETS_SECONDS)?.install_recorder()?;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let upkeep = handle.clone();
            runtime.spawn(async move {
                let mut interval = tokio::time::interval(UPKEEP_INTERVAL);
                interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                loop {
                    interval.tick().await;
                    upkeep.run_upkeep();
                }
            });
        }
        Ok(PrometheusExporter { handle })
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.handle.render()
    }

    /// Drains histogram samples into buckets (done by the upkeep task when there is one).
    pub fn run_upkeep(&self) {
        self.handle.run_upkeep();
    }
}

/// A node's metric handles, registered once.
pub(crate) struct NodeMetrics {
    pub leader: Gauge,
    pub is_leader: Gauge,
    pub ballot_round: Gauge,
    pub decided_index: Gauge,
    pub accepted_index: Gauge,
    pub compacted_index: Gauge,
    pub snapshots: Counter,
    pub proposals: Counter,
    pub decisions: Counter,
    pub append_latency: Histogram,
    pub flush_latency: Histogram,
    pub rounds: Counter,
    pub proposals_queued: Gauge,
    pub inbound_queued: Gauge,
    pub pending_appends: Gauge,
    pub undelivered: Gauge,
    node: String,
}

impl NodeMetrics {
    pub fn register(node_id: NodeId) -> Self {
        let node = node_id.to_string();
        let queue =
            |name: &'static str| gauge!("omnipaxos_queue_depth", "node" => node.clone(), "queue" => name);
        NodeMetrics {
            leader: gauge!("omnipaxos_leader", "node" => node.clone()),
            is_leader: gauge!("omnipaxos_is_leader", "node" => node.clone()),
            ballot_round: gauge!("omnipaxos_ballot_round", "node" => node.clone()),
            decided_index: gauge!("omnipaxos_decided_index", "node" => node.clone()),
            accepted_index: gauge!("omnipaxos_accepted_index", "node" => node.clone()),
            compacted_index: gauge!("omnipaxos_compacted_index", "node" => node.clone()),
            snapshots: counter!("omnipaxos_snapshots_total", "node" => node.clone()),
            proposals: counter!("omnipaxos_proposals_total", "node" => node.clone()),
            decisions: counter!("omnipaxos_decisions_total", "node" => node.clone()),
            append_latency: histogram!("omnipaxos_append_to_decided_seconds", "node" => node.clone()),
            flush_latency: histogram!("omnipaxos_flush_seconds", "node" => node.clone()),
            rounds: counter!("omnipaxos_rounds_total", "node" => node.clone()),
            proposals_queued: queue("proposals"),
            inbound_queued: queue("inbound"),
            pending_appends: queue("pending"),
            undelivered: queue("undelivered"),
            node,
        }
    }

    /// Counts an append that did not resolve to an index (rare: looked up per call).
    pub fn append_failed(&self, reason: &'static str) {
        counter!("omnipaxos_append_failures_total", "node" => self.node.clone(), "reason" => reason)
            .increment(1);
    }

    /// Counts a rejected incoming frame (rare: looked up per call).
    pub fn frame_rejected(&self, reason: &'static str) {
        counter!("omnipaxos_frames_rejected_total", "node" => self.node.clone(), "reason" => reason)
            .increment(1);
    }
}

/// One peer link's metric handles, registered once.
pub(crate) struct PeerMetrics {
    pub paxos_out: Counter,
    pub ble_out: Counter,
    pub progress_out: Counter,
    pub paxos_in: Counter,
    pub ble_in: Counter,
    pub progress_in: Counter,
    pub bytes_out: Counter,
    pub bytes_in: Counter,
    pub queue_bytes: Gauge,
    pub connected: Gauge,
    pub reconnects: Counter,
    pub dropped_queue_full: Counter,
    pub dropped_disconnected: Counter,
    pub dropped_filtered: Counter,
    pub dropped_oversized: Counter,
}

impl PeerMetrics {
    pub fn register(node_id: NodeId, peer_id: NodeId) -> Self {
        let (node, peer) = (node_id.to_string(), peer_id.to_string());
        let messages = |name: &'static str, kind: &'static str| counter!(name, "node" => node.clone(), "peer" => peer.clone(), "kind" => kind);
        let dropped = |reason: &'static str| counter!("omnipaxos_frames_dropped_total", "node" => node.clone(), "peer" => peer.clone(), "reason" => reason);
        PeerMetrics {
            paxos_out: messages("omnipaxos_messages_out_total", "paxos"),
            ble_out: messages("omnipaxos_messages_out_total", "ble"),
            progress_out: messages("omnipaxos_messages_out_total", "progress"),
            paxos_in: messages("omnipaxos_messages_in_total", "paxos"),
            ble_in: messages("omnipaxos_messages_in_total", "ble"),
            progress_in: messages("omnipaxos_messages_in_total", "progress"),
            bytes_out: counter!("omnipaxos_bytes_out_total", "node" => node.clone(), "peer" => peer.clone()),
            bytes_in: counter!("omnipaxos_bytes_in_total", "node" => node.clone(), "peer" => peer.clone()),
            queue_bytes: gauge!("omnipaxos_peer_queue_bytes", "node" => node.clone(), "peer" => peer.clone()),
            connected: gauge!("omnipaxos_peer_connected", "node" => node.clone(), "peer" => peer.clone()),
            reconnects: counter!("omnipaxos_reconnects_total", "node" => node.clone(), "peer" => peer.clone()),
            dropped_queue_full: dropped("queue_full"),
            dropped_disconnected: dropped("disconnected"),
            dropped_filtered: dropped("filtered"),
            dropped_oversized: dropped("oversized"),
        }
    }
}
