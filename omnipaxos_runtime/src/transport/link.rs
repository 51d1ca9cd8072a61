//! One outgoing link per peer: a byte-bounded queue filled by the replica thread and a writer
//! task that connects (with backoff and jitter), writes every queued round with as few
//! syscalls as it can, and notices a closed connection at once.
//!
//! Each node dials each peer for its own outgoing traffic and accepts the peer's dial for the
//! incoming traffic, so a pair of nodes uses two one-way connections and never has to decide
//! which of two simultaneous dials wins.

use std::{
    collections::VecDeque,
    io::{self, IoSlice},
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use omnipaxos_core::util::NodeId;
use rand::Rng;
use tokio::{
    io::{AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    sync::{watch, Notify},
};
use tracing::{debug, info, warn};

use super::{filter::LinkFilter, frame::Progress};
use crate::{config::BackoffConfig, metrics::PeerMetrics, status::LinkState};

/// How long a writer keeps writing what is queued after shutdown was signalled.
const SHUTDOWN_WRITE_TIMEOUT: Duration = Duration::from_millis(200);

/// Frames in one queued round, by kind (for the per-kind counters once written).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FrameCounts {
    pub paxos: u64,
    pub ble: u64,
    pub progress: u64,
}

impl FrameCounts {
    pub fn total(&self) -> u64 {
        self.paxos + self.ble + self.progress
    }
}

/// One round's frames for a peer.
pub(crate) struct QueuedRound {
    bytes: Vec<u8>,
    counts: FrameCounts,
}

/// Why the replica's round was not queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EnqueueRefused {
    /// The link is not connected: what was queued would be stale by the time it is.
    Disconnected,
    /// `peer_queue_limit_bytes` are already queued.
    QueueFull,
}

/// Counters of one link, shared with `status()`.
#[derive(Default)]
pub(crate) struct LinkStats {
    pub frames_out: AtomicU64,
    pub bytes_out: AtomicU64,
    pub frames_in: AtomicU64,
    pub bytes_in: AtomicU64,
    pub dropped_frames: AtomicU64,
    pub reconnects: AtomicU64,
    pub peer_decided_idx: AtomicU64,
    pub peer_accepted_idx: AtomicU64,
    pub progress_seen: AtomicBool,
}

/// The state of one peer link, shared by the replica thread (which queues), the writer task
/// (which writes) and the inbound readers (which record what the peer reported).
pub(crate) struct PeerLink {
    pub id: NodeId,
    pub addr: SocketAddr,
    /// Invariant: `queued_bytes` = bytes of the rounds in `queue` plus those the writer has
    /// taken and not yet written.
    queue: Mutex<VecDeque<QueuedRound>>,
    queued_bytes: AtomicUsize,
    limit_bytes: usize,
    wake: Notify,
    state: AtomicU8,
    /// Set by the writer when the link came back after a loss; the replica thread takes it
    /// and calls `reconnected(pid)`.
    reconnected: AtomicBool,
    pub stats: LinkStats,
    pub metrics: PeerMetrics,
}

impl PeerLink {
    pub fn new(id: NodeId, addr: SocketAddr, limit_bytes: usize, metrics: PeerMetrics) -> Self {
        PeerLink {
            id,
            addr,
            queue: Mutex::new(VecDeque::new()),
            queued_bytes: AtomicUsize::new(0),
            limit_bytes,
            wake: Notify::new(),
            state: AtomicU8::new(LinkState::Connecting as u8),
            reconnected: AtomicBool::new(false),
            stats: LinkStats::default(),
            metrics,
        }
    }

    pub fn state(&self) -> LinkState {
        LinkState::from_u8(self.state.load(Ordering::Acquire))
    }

    fn set_state(&self, state: LinkState) {
        self.state.store(state as u8, Ordering::Release);
        self.metrics.connected.set(if state == LinkState::Connected { 1.0 } else { 0.0 });
    }

    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes.load(Ordering::Acquire)
    }

    pub fn limit_bytes(&self) -> usize {
        self.limit_bytes
    }

    /// True once after the writer re-established a lost link.
    pub fn take_reconnected(&self) -> bool {
        self.reconnected.swap(false, Ordering::AcqRel)
    }

    /// Queues one round's frames. Policy: a round is queued whole if less than the limit is
    /// queued, otherwise it is refused whole (the caller drops it: the protocol resends).
    /// So at most `limit_bytes` plus one round are held, and frames are never split.
    pub fn enqueue(&self, bytes: Vec<u8>, counts: FrameCounts) -> Result<(), EnqueueRefused> {
        if self.state() != LinkState::Connected {
            return Err(EnqueueRefused::Disconnected);
        }
        if self.queued_bytes() >= self.limit_bytes {
            return Err(EnqueueRefused::QueueFull);
        }
        let len = bytes.len();
        // Counted before the round is visible to the writer, which subtracts once it wrote it:
        // the other order lets the subtraction come first.
        let queued = self.queued_bytes.fetch_add(len, Ordering::AcqRel) + len;
        self.lock_queue().push_back(QueuedRound { bytes, counts });
        self.metrics.queue_bytes.set(queued as f64);
        self.wake.notify_one();
        Ok(())
    }

    /// Counts frames the replica thread dropped for this peer.
    pub fn count_dropped(&self, frames: u64) {
        self.stats.dropped_frames.fetch_add(frames, Ordering::Relaxed);
    }

    /// Records a progress report received from the peer.
    pub fn record_progress(&self, progress: Progress) {
        self.stats.peer_decided_idx.store(progress.decided_idx, Ordering::Relaxed);
        self.stats.peer_accepted_idx.store(progress.accepted_idx, Ordering::Relaxed);
        self.stats.progress_seen.store(true, Ordering::Release);
    }

    /// Records an incoming frame of `bytes` (header included) from the peer.
    pub fn record_incoming(&self, bytes: usize) {
        self.stats.frames_in.fetch_add(1, Ordering::Relaxed);
        self.stats.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
        self.metrics.bytes_in.increment(bytes as u64);
    }

    fn lock_queue(&self) -> std::sync::MutexGuard<'_, VecDeque<QueuedRound>> {
        // The queue is a plain list; a panic elsewhere cannot leave it half-changed.
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn take_all(&self, into: &mut Vec<QueuedRound>) {
        into.extend(self.lock_queue().drain(..));
    }

    /// Forgets everything queued (the link went down: it would be stale).
    fn discard_queue(&self, taken: &mut Vec<QueuedRound>) {
        self.take_all(taken);
        let frames: u64 = taken.iter().map(|round| round.counts.total()).sum();
        let bytes: usize = taken.iter().map(|round| round.bytes.len()).sum();
        taken.clear();
        self.count_dropped(frames);
        self.metrics.dropped_disconnected.increment(frames);
        let left = self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel) - bytes;
        self.metrics.queue_bytes.set(left as f64);
    }

    /// Accounts for rounds written to the socket.
    fn written(&self, rounds: &[QueuedRound]) {
        let mut bytes = 0;
        let mut counts = FrameCounts::default();
        for round in rounds {
            bytes += round.bytes.len();
            counts.paxos += round.counts.paxos;
            counts.ble += round.counts.ble;
            counts.progress += round.counts.progress;
        }
        self.stats.frames_out.fetch_add(counts.total(), Ordering::Relaxed);
        self.stats.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
        self.metrics.bytes_out.increment(bytes as u64);
        self.metrics.paxos_out.increment(counts.paxos);
        self.metrics.ble_out.increment(counts.ble);
        self.metrics.progress_out.increment(counts.progress);
        let left = self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel) - bytes;
        self.metrics.queue_bytes.set(left as f64);
    }
}

/// What a writer task needs besides its link.
pub(crate) struct WriterContext {
    pub own_id: NodeId,
    pub backoff: BackoffConfig,
    pub filter: Option<LinkFilter>,
    pub shutdown: watch::Receiver<bool>,
}

/// The writer task of one link: connect, write until the connection fails, back off, repeat;
/// until shutdown.
pub(crate) async fn run_writer(link: Arc<PeerLink>, mut ctx: WriterContext) {
    let mut failed_attempts: u32 = 0;
    let mut ever_connected = false;
    let mut taken = Vec::new();
    loop {
        if *ctx.shutdown.borrow() {
            break;
        }
        link.set_state(LinkState::Connecting);
        match connect(link.addr, ctx.backoff.connect_timeout).await {
            Ok(stream) => {
                failed_attempts = 0;
                link.set_state(LinkState::Connected);
                if ever_connected {
                    link.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                    link.metrics.reconnects.increment(1);
                    link.reconnected.store(true, Ordering::Release);
                    info!(peer = link.id, "link re-established");
                } else {
                    debug!(peer = link.id, "link established");
                }
                ever_connected = true;
                let result = write_loop(&link, stream, &mut ctx, &mut taken).await;
                link.set_state(LinkState::Backoff);
                link.discard_queue(&mut taken);
                match result {
                    Ok(()) => break,
                    Err(error) => warn!(peer = link.id, %error, "link lost"),
                }
            }
            Err(error) => {
                failed_attempts = failed_attempts.saturating_add(1);
                debug!(peer = link.id, %error, attempt = failed_attempts, "connect failed");
                link.set_state(LinkState::Backoff);
            }
        }
        let delay = backoff_delay(&ctx.backoff, failed_attempts.max(1));
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = ctx.shutdown.changed() => {}
        }
    }
    link.set_state(LinkState::Stopped);
    link.discard_queue(&mut taken);
}

async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The delay before attempt `attempt + 1`: `initial * 2^(attempt-1)` capped at `max`, drawn
/// uniformly from its upper half.
pub(crate) fn backoff_delay(backoff: &BackoffConfig, attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(20);
    let ceiling = backoff.initial.saturating_mul(1 << exponent).min(backoff.max);
    let ceiling_us = ceiling.as_micros().max(2) as u64;
    Duration::from_micros(rand::thread_rng().gen_range(ceiling_us / 2..=ceiling_us))
}

/// Writes queued rounds until the connection fails (`Err`) or shutdown (`Ok`).
async fn write_loop(
    link: &PeerLink,
    stream: TcpStream,
    ctx: &mut WriterContext,
    taken: &mut Vec<QueuedRound>,
) -> io::Result<()> {
    let (mut reader, mut writer) = stream.into_split();
    let mut filter_changes = ctx.filter.as_ref().map(LinkFilter::subscribe);
    let mut probe = [0u8; 64];
    loop {
        link.take_all(taken);
        if taken.is_empty() {
            tokio::select! {
                _ = link.wake.notified() => continue,
                // The peer never writes on this connection: a read returns only on close.
                read = reader.read(&mut probe) => match read {
                    Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed the connection")),
                    Ok(_) => continue,
                    Err(error) => return Err(error),
                },
                _ = ctx.shutdown.changed() => return Ok(()),
            }
        }
        while let (Some(filter), Some(changes)) = (&ctx.filter, &mut filter_changes) {
            if !filter.is_paused(ctx.own_id, link.id) {
                break;
            }
            tokio::select! {
                _ = changes.changed() => {}
                _ = ctx.shutdown.changed() => return Ok(()),
            }
        }
        if *ctx.shutdown.borrow() {
            let _ = tokio::time::timeout(SHUTDOWN_WRITE_TIMEOUT, write_rounds(&mut writer, taken)).await;
            return Ok(());
        }
        write_rounds(&mut writer, taken).await?;
        link.written(taken);
        taken.clear();
    }
}

/// Writes every round with vectored writes: one syscall for all of them unless the socket
/// takes less.
async fn write_rounds<W: AsyncWrite + Unpin>(writer: &mut W, rounds: &[QueuedRound]) -> io::Result<()> {
    if let [only] = rounds {
        return writer.write_all(&only.bytes).await;
    }
    let mut slices: Vec<IoSlice<'_>> = rounds.iter().map(|round| IoSlice::new(&round.bytes)).collect();
    let mut remaining = &mut slices[..];
    while !remaining.is_empty() {
        let written = writer.write_vectored(remaining).await?;
        if written == 0 {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "socket accepted no bytes"));
        }
        IoSlice::advance_slices(&mut remaining, written);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_with_jitter_in_the_upper_half() {
        let backoff = BackoffConfig {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(100),
            connect_timeout: Duration::from_secs(1),
        };
        for _ in 0..100 {
            let first = backoff_delay(&backoff, 1);
            assert!(first >= Duration::from_millis(5) && first <= Duration::from_millis(10), "{first:?}");
            let third = backoff_delay(&backoff, 3);
            assert!(third >= Duration::from_millis(20) && third <= Duration::from_millis(40), "{third:?}");
            let late = backoff_delay(&backoff, 1000);
            assert!(late >= Duration::from_millis(50) && late <= Duration::from_millis(100), "{late:?}");
        }
    }

    #[test]
    fn a_full_queue_refuses_whole_rounds_and_accounts_bytes() {
        let link = PeerLink::new(2, "127.0.0.1:1".parse().unwrap(), 100, PeerMetrics::register(1, 2));
        let one = FrameCounts { paxos: 1, ..FrameCounts::default() };
        assert_eq!(link.enqueue(vec![0; 10], one), Err(EnqueueRefused::Disconnected));
        link.set_state(LinkState::Connected);
        link.enqueue(vec![0; 60], one).unwrap();
        link.enqueue(vec![0; 60], one).unwrap(); // below the limit before: queued whole
        assert_eq!(link.queued_bytes(), 120);
        assert_eq!(link.enqueue(vec![0; 1], one), Err(EnqueueRefused::QueueFull));
        let mut taken = Vec::new();
        link.take_all(&mut taken);
        assert_eq!(link.queued_bytes(), 120, "taken but not written still counts");
        link.written(&taken);
        assert_eq!(link.queued_bytes(), 0);
        assert_eq!(link.stats.frames_out.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn vectored_writes_deliver_every_round_in_order() {
        let rounds: Vec<QueuedRound> = (0..5u8)
            .map(|i| QueuedRound { bytes: vec![i; 1000 + usize::from(i)], counts: FrameCounts::default() })
            .collect();
        let mut out = Vec::new();
        write_rounds(&mut out, &rounds).await.unwrap();
        let expected: Vec<u8> = rounds.iter().flat_map(|round| round.bytes.clone()).collect();
        assert_eq!(out, expected);
    }
}
