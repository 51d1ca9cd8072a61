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
        check_length, decode_payload, parse_header, FrameError, FrameKind, Progress, HEADER_BYTES,
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
    pub idle_timeout: std::time::Duration,
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

/// Resolves once a connection newer than generation `mine` arrived from the same peer.
async fn superseded(generations: &mut watch::Receiver<u64>, mine: u64) {
    if generations.wait_for(|&newest| newest != mine).await.is_err() {
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
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        let span = tracing::debug_span!("inbound", %remote);
        readers.spawn(
            async move {
                serve_connection(stream, remote, &ctx, shutdown).await;
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
    ctx: &InboundContext<T, S>,
    mut shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, stream);
    let end = tokio::select! {
        end = read_frames(&mut reader, ctx) => end,
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
) -> ReadEnd {
    match read_frames_inner(reader, ctx).await {
        Ok(()) => ReadEnd::Closed,
        Err(end) => end,
    }
}

async fn read_frames_inner<T: DeserializeOwned, S: DeserializeOwned>(
    reader: &mut BufReader<TcpStream>,
    ctx: &InboundContext<T, S>,
) -> Result<(), ReadEnd> {
    let mut first_sender: Option<NodeId> = None;
    // Once the sender is known: this connection's generation among the sender's, and news of
    // newer ones.
    let mut newest: Option<(u64, watch::Receiver<u64>)> = None;
    let mut payload = Vec::new();
    loop {
        let mut length = [0u8; LENGTH_BYTES];
        // A dead connection ends here: silent for `idle_timeout`, or superseded by a newer
        // one from the same peer (which dials again after a partition).
        let read = tokio::time::timeout(ctx.idle_timeout, reader.read_exact(&mut length));
        let read = match &mut newest {
            Some((mine, generations)) => tokio::select! {
                read = read => read,
                _ = superseded(generations, *mine) => return Err(ReadEnd::Superseded),
            },
            None => read.await,
        };
        read.map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no frame within idle_timeout"))??;
        let payload_len = check_length(length, ctx.max_frame_bytes)?;
        let mut header_bytes = [0u8; HEADER_BYTES];
        reader.read_exact(&mut header_bytes).await?;
        let header = parse_header(&header_bytes, ctx.cluster_id, ctx.own_id, |id| ctx.link(id).is_some())?;
        let first = *first_sender.get_or_insert(header.sender);
        if first != header.sender {
            return Err(FrameError::SenderChanged { first, found: header.sender }.into());
        }
        let link = ctx.link(header.sender).expect("parse_header checked the sender");
        if newest.is_none() {
            newest = Some(link.claim_inbound());
        }
        payload.resize(payload_len, 0);
        reader.read_exact(&mut payload).await?;
        link.record_incoming(LENGTH_BYTES + HEADER_BYTES + payload_len);
        match header.kind {
            FrameKind::CoreMessage => {
                let message: Message<T, S> = decode_payload(&payload)?;
                let (sender, receiver) = (message.get_sender(), message.get_receiver());
                if sender != header.sender || receiver != ctx.own_id {
                    return Err(FrameError::PayloadMismatch { sender, receiver }.into());
                }
                match &message {
                    Message::SequencePaxos(_) => link.metrics.paxos_in.increment(1),
                    Message::BLE(_) => link.metrics.ble_in.increment(1),
                }
                if ctx.inbound.send(message).await.is_err() {
                    return Ok(()); // the replica thread is gone: the node is stopping
                }
            }
            FrameKind::Progress => {
                link.metrics.progress_in.increment(1);
                link.record_progress(decode_payload::<Progress>(&payload)?);
            }
        }
        if payload.capacity() > PAYLOAD_BUFFER_KEEP_BYTES {
            payload = Vec::new();
        }
    }
}
