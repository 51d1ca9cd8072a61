//! The listener and one reader task per incoming connection. A reader checks each frame's
//! header before it reads the payload, decodes the payload on the tokio worker (not on the
//! replica thread), and hands core messages to the replica through the bounded inbound queue:
//! when that queue is full the reader waits, so TCP flow control slows the sender.
//!
//! A frame that fails a check is logged with its typed [`FrameError`], counted, and the
//! connection is closed; nothing of it reaches the replica.

use std::{
    io,
    net::SocketAddr,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use omnipaxos_core::{messages::Message, util::NodeId};
use serde::de::DeserializeOwned;
use tokio::{
    io::{AsyncReadExt, BufReader},
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch, Semaphore},
    task::JoinSet,
};
use tracing::{debug, warn, Instrument};

use super::{
    frame::{
        check_length, decode_payload, parse_header, FrameError, FrameKind, Header, Progress, HEADER_BYTES,
        LENGTH_BYTES,
    },
    link::PeerLink,
};
use crate::{config::NodeConfig, metrics::NodeMetrics, node::Shared};

/// Read buffer of one connection: large enough that a busy follower reads many frames per
/// syscall.
const READ_BUFFER_BYTES: usize = 256 << 10;
/// A payload buffer that grew beyond this (one large frame) is shrunk back after use.
const PAYLOAD_BUFFER_KEEP_BYTES: usize = 1 << 20;

/// What every reader of a node shares.
pub(crate) struct InboundContext<T, S> {
    pub own_id: NodeId,
    pub cluster_id: u64,
    pub max_frame_bytes: u32,
    /// A connection silent this long is closed (peers send heartbeats every round).
    pub idle_timeout: Duration,
    pub links: Vec<Arc<PeerLink>>,
    pub inbound: mpsc::Sender<Message<T, S>>,
    pub shared: Arc<Shared>,
    pub metrics: Arc<NodeMetrics>,
}

impl<T, S> InboundContext<T, S> {
    pub fn new(
        config: &NodeConfig,
        links: Vec<Arc<PeerLink>>,
        inbound: mpsc::Sender<Message<T, S>>,
        shared: Arc<Shared>,
        metrics: Arc<NodeMetrics>,
    ) -> Self {
        InboundContext {
            own_id: config.node_id,
            cluster_id: config.cluster_id,
            max_frame_bytes: config.limits.max_frame_bytes,
            idle_timeout: config.backoff.idle_timeout,
            links,
            inbound,
            shared,
            metrics,
        }
    }

    fn link(&self, id: NodeId) -> Option<&Arc<PeerLink>> {
        self.links.iter().find(|link| link.id == id)
    }
}

/// Why a connection ended.
enum ReadEnd {
    /// The peer closed it, or the node is shutting down.
    Closed,
    /// The peer opened a newer connection (after a partition it dials again; this one is dead).
    Superseded,
    Io(io::Error),
    Rejected(FrameError),
}

impl From<io::Error> for ReadEnd {
    fn from(error: io::Error) -> Self {
        if error.kind() == io::ErrorKind::UnexpectedEof {
            ReadEnd::Closed
        } else {
            ReadEnd::Io(error)
        }
    }
}

impl From<FrameError> for ReadEnd {
    fn from(error: FrameError) -> Self {
        ReadEnd::Rejected(error)
    }
}

/// Resolves once a connection accepted after this one (`mine`) spoke for the same peer.
async fn superseded(generations: &mut watch::Receiver<u64>, mine: u64) {
    if generations.wait_for(|&newest| newest > mine).await.is_err() {
        std::future::pending::<()>().await; // the link is gone: the node is stopping
    }
}

/// Accepts connections until shutdown; at most `connection_limit` are served at once.
pub(crate) async fn run_listener<T, S>(
    listener: TcpListener,
    ctx: Arc<InboundContext<T, S>>,
    connection_limit: usize,
    mut shutdown: watch::Receiver<bool>,
) where
    T: DeserializeOwned + Send + 'static,
    S: DeserializeOwned + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(connection_limit));
    let mut readers = JoinSet::new();
    // Connections numbered in accept order (see `PeerLink::claim_inbound`).
    let mut accept_count: u64 = 0;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => break,
        };
        while readers.try_join_next().is_some() {}
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: log and keep serving.
                warn!(%error, "accept failed");
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            warn!(%remote, limit = connection_limit, "too many inbound connections; closing the new one");
            continue;
        };
        accept_count += 1;
        let number = accept_count;
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        let span = tracing::debug_span!("inbound", %remote);
        readers.spawn(
            async move {
                serve_connection(stream, remote, number, &ctx, shutdown).await;
                drop(permit);
            }
            .instrument(span),
        );
    }
    readers.shutdown().await;
}

async fn serve_connection<T: DeserializeOwned, S: DeserializeOwned>(
    stream: TcpStream,
    remote: SocketAddr,
    accepted: u64,
    ctx: &InboundContext<T, S>,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, stream);
    let end = tokio::select! {
        end = read_frames(&mut reader, ctx, accepted) => end,
        _ = shutdown.changed() => ReadEnd::Closed,
    };
    match end {
        ReadEnd::Closed => debug!(%remote, "connection closed"),
        ReadEnd::Superseded => debug!(%remote, "connection superseded by a newer one from the peer"),
        ReadEnd::Io(error) => debug!(%remote, %error, "connection failed"),
        ReadEnd::Rejected(error) => {
            ctx.shared.rejected_frames.fetch_add(1, Ordering::Relaxed);
            ctx.metrics.frame_rejected(error.reason());
            warn!(%remote, reason = error.reason(), %error, "frame rejected; closing the connection");
        }
    }
}

async fn read_frames<T: DeserializeOwned, S: DeserializeOwned>(
    reader: &mut BufReader<TcpStream>,
    ctx: &InboundContext<T, S>,
    accepted: u64,
) -> ReadEnd {
    match read_frames_inner(reader, ctx, accepted).await {
        Ok(()) => ReadEnd::Closed,
        Err(end) => end,
    }
}

async fn read_frames_inner<T: DeserializeOwned, S: DeserializeOwned>(
    reader: &mut BufReader<TcpStream>,
    ctx: &InboundContext<T, S>,
    accepted: u64,
) -> Result<(), ReadEnd> {
    let mut first_sender: Option<NodeId> = None;
    // Once this connection speaks for its sender (its first whole, valid frame): news of
    // newer connections from the same peer, which supersede it.
    let mut newest: Option<watch::Receiver<u64>> = None;
    let mut payload = Vec::new();
    loop {
        // A dead connection ends here: no whole frame within the time limits (`read_frame`),
        // or a newer connection from the same peer (which dials again after a partition).
        let frame = read_frame(reader, ctx, &mut payload);
        let header = match &mut newest {
            Some(generations) => tokio::select! {
                biased;
                _ = superseded(generations, accepted) => return Err(ReadEnd::Superseded),
                header = frame => header?,
            },
            None => frame.await?,
        };
        let first = *first_sender.get_or_insert(header.sender);
        if first != header.sender {
            return Err(FrameError::SenderChanged { first, found: header.sender }.into());
        }
        let link = ctx.link(header.sender).expect("parse_header checked the sender");
        link.record_incoming(LENGTH_BYTES + HEADER_BYTES + payload.len());
        let message = match header.kind {
            FrameKind::CoreMessage => {
                let message: Message<T, S> = decode_payload(&payload)?;
                let (sender, receiver) = (message.get_sender(), message.get_receiver());
                if sender != header.sender || receiver != ctx.own_id {
                    return Err(FrameError::PayloadMismatch { sender, receiver }.into());
                }
                Some(message)
            }
            FrameKind::Progress => {
                link.metrics.progress_in.increment(1);
                link.record_progress(decode_payload::<Progress>(&payload)?);
                None
            }
        };
        if newest.is_none() {
            // Connections count in accept order: an older one never replaces a newer one.
            match link.claim_inbound(accepted) {
                Some(generations) => newest = Some(generations),
                None => return Err(ReadEnd::Superseded),
            }
        }
        if let Some(message) = message {
            match &message {
                Message::SequencePaxos(_) => link.metrics.paxos_in.increment(1),
                Message::BLE(_) => link.metrics.ble_in.increment(1),
            }
            if ctx.inbound.send(message).await.is_err() {
                return Ok(()); // the replica thread is gone: the node is stopping
            }
        }
        if payload.capacity() > PAYLOAD_BUFFER_KEEP_BYTES {
            payload = Vec::new();
        }
    }
}

/// Reads one frame: its length within `idle_timeout` (peers send heartbeats every round), then
/// its header and payload (into `payload`) within `idle_timeout` plus a second per MiB, so a
/// connection cut in the middle of a frame does not hold its reader for ever.
async fn read_frame<T, S>(
    reader: &mut BufReader<TcpStream>,
    ctx: &InboundContext<T, S>,
    payload: &mut Vec<u8>,
) -> Result<Header, ReadEnd> {
    let timed_out = |_| io::Error::new(io::ErrorKind::TimedOut, "no whole frame within idle_timeout");
    let mut length = [0u8; LENGTH_BYTES];
    tokio::time::timeout(ctx.idle_timeout, reader.read_exact(&mut length)).await.map_err(timed_out)??;
    let payload_len = check_length(length, ctx.max_frame_bytes)?;
    let rest = ctx.idle_timeout.saturating_add(Duration::from_secs((payload_len >> 20) as u64));
    let deadline = tokio::time::Instant::now() + rest;
    let mut header_bytes = [0u8; HEADER_BYTES];
    tokio::time::timeout_at(deadline, reader.read_exact(&mut header_bytes)).await.map_err(timed_out)??;
    let header = parse_header(&header_bytes, ctx.cluster_id, ctx.own_id, |id| ctx.link(id).is_some())?;
    payload.resize(payload_len, 0);
    tokio::time::timeout_at(deadline, reader.read_exact(payload)).await.map_err(timed_out)??;
    Ok(header)
}
