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
    /// Read barriers waiting for the replica thread.
    pub reads: usize,
    /// Limit of `reads`.
    pub reads_limit: usize,
    /// Read barriers handed to the core, waiting for a read index or for delivery.
    pub pending_reads: usize,
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
    /// Entries below this index are compacted into a snapshot (0 without snapshots).
    pub compacted_idx: LogIndex,
    /// True if this replica is a learner: it lost storage it may have acknowledged, never votes
    /// again in this configuration and cannot propose (see ARCHITECTURE.md, "Amnesia").
    pub is_learner: bool,
    /// True after a storage failure: the replica refuses all work until restarted.
    pub stopped: bool,
    /// Rounds the replica thread ran.
    pub rounds: u64,
    /// Storage flushes (each is one `fdatasync` with `PersistentStorage` when writes were
    /// pending).
    pub flushes: u64,
    /// Time spent in those flushes.
    pub flush_time: std::time::Duration,
    /// Their latencies (every flush since the node started).
    pub flush_latency: LatencyHistogram,
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

/// Sub-buckets per power of two: a bucket's largest value is less than 25 % above its smallest.
const BUCKETS_PER_OCTAVE: usize = 4;
/// Octaves from 1 µs: up to about 70 s.
const OCTAVES: usize = 26;
/// Buckets of a [`LatencyHistogram`].
pub(crate) const LATENCY_BUCKETS: usize = BUCKETS_PER_OCTAVE * OCTAVES;

/// The bucket of a latency in microseconds: 0 to 3 µs have a bucket each; above, each octave
/// `[2^k, 2^(k+1))` is cut in four by the two bits after the leading one.
pub(crate) fn latency_bucket(micros: u64) -> usize {
    if micros < 4 {
        return micros as usize;
    }
    let octave = 63 - micros.leading_zeros() as usize; // floor(log2), at least 2
    let fraction = ((micros >> (octave - 2)) & 0b11) as usize;
    (octave * BUCKETS_PER_OCTAVE + fraction).min(LATENCY_BUCKETS - 1)
}

/// The largest latency in microseconds that falls in a bucket.
fn bucket_upper_micros(bucket: usize) -> u64 {
    let (octave, fraction) = (bucket / BUCKETS_PER_OCTAVE, (bucket % BUCKETS_PER_OCTAVE) as u64);
    if octave < 2 {
        return bucket as u64; // 0 to 3 µs (buckets 4 to 7 stay empty)
    }
    ((BUCKETS_PER_OCTAVE as u64 + fraction + 1) << (octave - 2)) - 1
}

/// Counts of latencies in buckets 4 per octave wide; quantiles are reported as the largest
/// value of their bucket (less than 25 % above the true value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LatencyHistogram {
    counts: Vec<u64>,
}

impl LatencyHistogram {
    pub(crate) fn from_counts(counts: Vec<u64>) -> Self {
        LatencyHistogram { counts }
    }

    /// How many latencies were recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The latencies recorded after `earlier` (a snapshot of the same histogram).
    pub fn since(&self, earlier: &LatencyHistogram) -> LatencyHistogram {
        let counts = self.counts.iter().zip(earlier.counts.iter().chain(std::iter::repeat(&0)));
        LatencyHistogram { counts: counts.map(|(now, then)| now.saturating_sub(*then)).collect() }
    }

    /// The latencies of both histograms (for example of several nodes).
    pub fn merged(&self, other: &LatencyHistogram) -> LatencyHistogram {
        let len = self.counts.len().max(other.counts.len());
        let at = |counts: &[u64], i: usize| counts.get(i).copied().unwrap_or(0);
        LatencyHistogram { counts: (0..len).map(|i| at(&self.counts, i) + at(&other.counts, i)).collect() }
    }

    /// The `q` quantile (0.0 to 1.0), or `None` if nothing was recorded.
    pub fn quantile(&self, q: f64) -> Option<std::time::Duration> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64 * q.clamp(0.0, 1.0)).ceil() as u64).max(1);
        let mut seen = 0;
        for (bucket, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(std::time::Duration::from_micros(bucket_upper_micros(bucket)));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_bound_their_values() {
        let mut previous = 0;
        for micros in 1..100_000u64 {
            let bucket = latency_bucket(micros);
            assert!(bucket >= previous, "{micros}");
            assert!(bucket_upper_micros(bucket) >= micros, "{micros} above its bucket's bound");
            assert!(bucket_upper_micros(bucket) as f64 <= micros as f64 * 1.25, "{micros}");
            previous = bucket;
        }
    }

    #[test]
    fn quantiles_come_from_the_counts() {
        let mut counts = vec![0; LATENCY_BUCKETS];
        for micros in [100, 100, 100, 200, 5000] {
            counts[latency_bucket(micros)] += 1;
        }
        let histogram = LatencyHistogram::from_counts(counts);
        let p50 = histogram.quantile(0.5).unwrap().as_micros();
        assert!((100..=125).contains(&p50), "{p50}");
        let p99 = histogram.quantile(0.99).unwrap().as_micros();
        assert!((5000..=6250).contains(&p99), "{p99}");
        assert_eq!(histogram.since(&histogram).quantile(0.5), None);
    }
}
