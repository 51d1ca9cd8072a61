//! One outgoing link per peer: a byte-bounded queue filled by the replica thread and a writer
//! task that connects (with backoff and jitter), writes every queued round with as few
//! syscalls as it can, and notices a closed connection at once.
//!
//! Fast path: when nothing is queued and the writer is idle, the replica thread writes its
//! round itself with one non-blocking `try_write` (one syscall per round per peer, and no
//! wake-up of the writer task); whatever the socket does not take at once is queued for the
//! writer. A slow peer therefore never blocks the replica thread.
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
    io::AsyncReadExt,
    net::{
        tcp::{OwnedReadHalf, OwnedWriteHalf},
        TcpStream,
    },
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

/// One round's frames for a peer (or what the fast path did not write of them).
pub(crate) struct QueuedRound {
    bytes: Vec<u8>,
    counts: FrameCounts,
}

/// What the replica thread and the writer task share under one lock.
#[derive(Default)]
struct LinkIo {
    queue: VecDeque<QueuedRound>,
    /// The connection's write half while it is up.
    writer: Option<Arc<OwnedWriteHalf>>,
    /// The writer task has taken rounds and is writing them: the fast path must queue.
    busy: bool,
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
    /// Invariant: `queued_bytes` = bytes of the rounds in `io.queue` plus those the writer
    /// has taken and not yet written.
    io: Mutex<LinkIo>,
    queued_bytes: AtomicUsize,
    limit_bytes: usize,
    wake: Notify,
    state: AtomicU8,
    /// Set by the writer when the link came back after a loss; the replica thread takes it
    /// and calls `reconnected(pid)`.
    reconnected: AtomicBool,
    /// Accept number of the newest incoming connection that speaks for this peer: an older
    /// one is closed when a newer one sends its first valid frame (the peer dialled again
    /// after a partition; the old one is dead).
    inbound_generation: watch::Sender<u64>,
    pub stats: LinkStats,
    pub metrics: PeerMetrics,
}

impl PeerLink {
    pub fn new(id: NodeId, addr: SocketAddr, limit_bytes: usize, metrics: PeerMetrics) -> Self {
        PeerLink {
            id,
            addr,
            io: Mutex::new(LinkIo::default()),
            queued_bytes: AtomicUsize::new(0),
            limit_bytes,
            wake: Notify::new(),
            state: AtomicU8::new(LinkState::Connecting as u8),
            reconnected: AtomicBool::new(false),
            inbound_generation: watch::Sender::new(0),
            stats: LinkStats::default(),
            metrics,
        }
    }

    /// An incoming connection from this peer, the `accepted`-th the listener accepted, sent its
    /// first whole, valid frame: it speaks for the peer unless a connection accepted later
    /// already does (`None`: close this one). Returns a receiver of the newest's number, which
    /// tells this one when it is superseded.
    pub fn claim_inbound(&self, accepted: u64) -> Option<watch::Receiver<u64>> {
        let claimed = self.inbound_generation.send_if_modified(|newest| {
            let newer = accepted > *newest;
            if newer {
                *newest = accepted;
            }
            newer
        });
        claimed.then(|| self.inbound_generation.subscribe())
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

    /// Sends one round's frames: written at once if the link is idle (`direct` allows it),
    /// otherwise queued for the writer. Policy when full: a round is queued whole if less than
    /// the limit is queued, otherwise it is refused whole (the caller drops it: the protocol
    /// resends). So at most `limit_bytes` plus one round are held, and frames are never split
    /// between a kept and a dropped part.
    pub fn enqueue(&self, bytes: Vec<u8>, counts: FrameCounts, direct: bool) -> Result<(), EnqueueRefused> {
        if self.state() != LinkState::Connected {
            return Err(EnqueueRefused::Disconnected);
        }
        if self.queued_bytes() >= self.limit_bytes {
            return Err(EnqueueRefused::QueueFull);
        }
        let mut io = self.lock_io();
        let mut written = 0;
        if direct && !io.busy && io.queue.is_empty() {
            if let Some(writer) = &io.writer {
                // An error or WouldBlock leaves it to the writer task, which sees the error too.
                written = writer.try_write(&bytes).unwrap_or(0);
            }
        }
        if written == bytes.len() {
            drop(io);
            self.account_written(bytes.len() as u64, counts);
            return Ok(());
        }
        let rest = if written == 0 { bytes } else { bytes[written..].to_vec() };
        if written > 0 {
            self.account_written(written as u64, FrameCounts::default());
        }
        // Counted before the round is visible to the writer, which subtracts once it wrote it:
        // the other order lets the subtraction come first.
        let queued = self.queued_bytes.fetch_add(rest.len(), Ordering::AcqRel) + rest.len();
        io.queue.push_back(QueuedRound { bytes: rest, counts });
        drop(io);
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

    fn lock_io(&self) -> std::sync::MutexGuard<'_, LinkIo> {
        // Plain data; a panic elsewhere cannot leave it half-changed.
        self.io.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes every queued round; the writer is busy while it holds any.
    fn take_all(&self, into: &mut Vec<QueuedRound>) {
        let mut io = self.lock_io();
        into.extend(io.queue.drain(..));
        io.busy = !into.is_empty();
    }

    fn set_writer(&self, writer: Option<Arc<OwnedWriteHalf>>) {
        let mut io = self.lock_io();
        io.writer = writer;
        io.busy = false;
    }

    /// Forgets everything queued (the link went down: it would be stale).
    fn discard_queue(&self, taken: &mut Vec<QueuedRound>) {
        self.take_all(taken);
        self.lock_io().busy = false;
        let frames: u64 = taken.iter().map(|round| round.counts.total()).sum();
        let bytes: usize = taken.iter().map(|round| round.bytes.len()).sum();
        taken.clear();
        self.count_dropped(frames);
        self.metrics.dropped_disconnected.increment(frames);
        let left = self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel) - bytes;
        self.metrics.queue_bytes.set(left as f64);
    }

    /// Counts bytes and frames that reached the socket.
    fn account_written(&self, bytes: u64, counts: FrameCounts) {
        self.stats.frames_out.fetch_add(counts.total(), Ordering::Relaxed);
        self.stats.bytes_out.fetch_add(bytes, Ordering::Relaxed);
        self.metrics.bytes_out.increment(bytes);
        self.metrics.paxos_out.increment(counts.paxos);
        self.metrics.ble_out.increment(counts.ble);
        self.metrics.progress_out.increment(counts.progress);
    }

    /// Accounts for queued rounds the writer wrote.
    fn written(&self, rounds: &[QueuedRound]) {
        let mut bytes = 0;
        let mut counts = FrameCounts::default();
        for round in rounds {
            bytes += round.bytes.len();
            counts.paxos += round.counts.paxos;
            counts.ble += round.counts.ble;
            counts.progress += round.counts.progress;
        }
        self.account_written(bytes as u64, counts);
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
        match connect(link.addr, &ctx.backoff).await {
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

async fn connect(addr: SocketAddr, backoff: &BackoffConfig) -> io::Result<TcpStream> {
    let stream = tokio::time::timeout(backoff.connect_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    if let Err(error) = set_unacked_timeout(&stream, backoff.unacked_timeout) {
        // TCP's own (much longer) timeouts still apply: slower recovery after a partition.
        warn!(%error, "TCP_USER_TIMEOUT not set");
    }
    Ok(stream)
}

/// Closes the connection once sent data stays unacknowledged for `timeout` (see
/// [`BackoffConfig`]: a connection in TCP's retransmission backoff would stay silent long after
/// its path healed; a new one is dialled instead).
#[cfg(target_os = "linux")]
fn set_unacked_timeout(stream: &TcpStream, timeout: Duration) -> io::Result<()> {
    let millis = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX).max(1);
    nix::sys::socket::setsockopt(stream, nix::sys::socket::sockopt::TcpUserTimeout, &millis)
        .map_err(io::Error::from)
}

/// Elsewhere TCP's own timeouts apply.
#[cfg(not(target_os = "linux"))]
fn set_unacked_timeout(_stream: &TcpStream, _timeout: Duration) -> io::Result<()> {
    Ok(())
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
    let (mut reader, writer) = stream.into_split();
    let writer = Arc::new(writer);
    link.set_writer(Some(writer.clone()));
    let result = write_queued(link, &mut reader, &writer, ctx, taken).await;
    link.set_writer(None);
    result
}

async fn write_queued(
    link: &PeerLink,
    reader: &mut OwnedReadHalf,
    writer: &OwnedWriteHalf,
    ctx: &mut WriterContext,
    taken: &mut Vec<QueuedRound>,
) -> io::Result<()> {
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
            let _ = tokio::time::timeout(SHUTDOWN_WRITE_TIMEOUT, write_rounds(writer, taken)).await;
            return Ok(());
        }
        write_rounds(writer, taken).await?;
        link.written(taken);
        taken.clear();
    }
}

/// Writes every round with vectored writes: one syscall for all of them unless the socket
/// takes less.
async fn write_rounds(writer: &OwnedWriteHalf, rounds: &[QueuedRound]) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = rounds.iter().map(|round| IoSlice::new(&round.bytes)).collect();
    let mut remaining = &mut slices[..];
    while !remaining.is_empty() {
        writer.writable().await?;
        match writer.try_write_vectored(remaining) {
            Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "socket accepted no bytes")),
            Ok(written) => IoSlice::advance_slices(&mut remaining, written),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
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
            ..BackoffConfig::default()
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

    /// An outgoing connection gives up on data unacknowledged for `unacked_timeout` (so that
    /// a link in TCP's retransmission backoff is dialled again instead).
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn an_outgoing_connection_carries_the_unacked_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let backoff =
            BackoffConfig { unacked_timeout: Duration::from_millis(345), ..BackoffConfig::default() };
        let stream = connect(listener.local_addr().expect("addr"), &backoff).await.expect("connect");
        let set =
            nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::TcpUserTimeout).expect("get");
        assert_eq!(set, 345);
    }

    #[test]
    fn a_full_queue_refuses_whole_rounds_and_accounts_bytes() {
        let link = PeerLink::new(2, "127.0.0.1:1".parse().unwrap(), 100, PeerMetrics::register(1, 2));
        let one = FrameCounts { paxos: 1, ..FrameCounts::default() };
        assert_eq!(link.enqueue(vec![0; 10], one, true), Err(EnqueueRefused::Disconnected));
        link.set_state(LinkState::Connected);
        link.enqueue(vec![0; 60], one, true).unwrap(); // no socket yet: queued
        link.enqueue(vec![0; 60], one, true).unwrap(); // below the limit before: queued whole
        assert_eq!(link.queued_bytes(), 120);
        assert_eq!(link.enqueue(vec![0; 1], one, true), Err(EnqueueRefused::QueueFull));
        let mut taken = Vec::new();
        link.take_all(&mut taken);
        assert_eq!(link.queued_bytes(), 120, "taken but not written still counts");
        link.written(&taken);
        assert_eq!(link.queued_bytes(), 0);
        assert_eq!(link.stats.frames_out.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn rounds_reach_the_socket_in_order_by_either_path() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let link = PeerLink::new(2, "127.0.0.1:1".parse().unwrap(), 1 << 20, PeerMetrics::register(1, 2));
        link.set_state(LinkState::Connected);
        let (_reader, writer) = stream.into_split();
        let writer = Arc::new(writer);
        link.set_writer(Some(writer.clone()));
        writer.writable().await.unwrap();
        let one = FrameCounts { paxos: 1, ..FrameCounts::default() };
        link.enqueue(vec![1; 1000], one, true).unwrap(); // idle: written directly
        assert_eq!(link.queued_bytes(), 0);
        link.enqueue(vec![2; 1001], one, false).unwrap(); // queued for the writer
        link.enqueue(vec![3; 1002], one, true).unwrap(); // something is queued: queued behind it
        let mut taken = Vec::new();
        link.take_all(&mut taken);
        write_rounds(&writer, &taken).await.unwrap();
        link.written(&taken);
        let mut received = vec![0u8; 3003];
        tokio::io::AsyncReadExt::read_exact(&mut server, &mut received).await.unwrap();
        let expected: Vec<u8> = [vec![1u8; 1000], vec![2; 1001], vec![3; 1002]].concat();
        assert!(received == expected, "bytes arrive in round order");
        assert_eq!(link.stats.frames_out.load(Ordering::Relaxed), 3);
        assert_eq!(link.queued_bytes(), 0);
    }
}
