//! The wire format: length-prefixed frames with a versioned header.
//!
//! ```text
//!  offset size  field
//!       0    4  frame_len   u32 LE: bytes after this field (header rest + payload)
//!       4    4  magic       b"OPXR"
//!       8    2  version     u16 LE (PROTOCOL_VERSION)
//!      10    1  kind        1 = core message (omnipaxos_core::messages::Message), 2 = progress
//!      11    1  reserved    0
//!      12    8  cluster_id  u64 LE
//!      20    8  sender      u64 LE (NodeId)
//!      28    8  receiver    u64 LE (NodeId)
//!      36    -  payload     bincode 1.3 (varint integers, little endian, size-limited)
//! ```
//!
//! The header is checked before the payload is read, so a frame from another cluster, an
//! unknown sender, for another receiver, of another version or larger than the limit never
//! costs more than its 36 bytes. Decoding is limited to the frame's size, so a forged length
//! inside the payload cannot make the decoder allocate more than the frame holds.

use bincode::Options;
use omnipaxos_core::util::{LogIndex, NodeId};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// The first four bytes after the length of every frame.
pub const MAGIC: [u8; 4] = *b"OPXR";
/// The version this build writes and the only one it reads.
pub const PROTOCOL_VERSION: u16 = 1;
/// Bytes of the length field.
pub const LENGTH_BYTES: usize = 4;
/// Bytes of the header after the length field.
pub const HEADER_BYTES: usize = 32;
/// The smallest `max_frame_bytes` a configuration may set.
pub const MIN_MAX_FRAME_BYTES: u32 = 1024;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// One `omnipaxos_core::messages::Message`, for the replica.
    CoreMessage,
    /// The sender's [`Progress`], for `status()`; never reaches the replica.
    Progress,
}

impl FrameKind {
    fn to_byte(self) -> u8 {
        match self {
            FrameKind::CoreMessage => 1,
            FrameKind::Progress => 2,
        }
    }

    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(FrameKind::CoreMessage),
            2 => Some(FrameKind::Progress),
            _ => None,
        }
    }
}

/// A node's own indices, sent to each peer every few ticks so that `status()` can show lag.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The sender's decided index.
    pub decided_idx: LogIndex,
    /// The sender's accepted index.
    pub accepted_idx: LogIndex,
}

/// A frame header after the length field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// What the payload is.
    pub kind: FrameKind,
    /// The cluster the sender belongs to.
    pub cluster_id: u64,
    /// The sending node.
    pub sender: NodeId,
    /// The node the frame is for.
    pub receiver: NodeId,
}

/// Why an incoming frame was rejected. The connection it came on is closed.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length field is above `max_frame_bytes`.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    Oversized {
        /// The announced length.
        len: u32,
        /// The limit.
        max: u32,
    },
    /// The length field is below the header size.
    #[error("frame of {0} bytes is shorter than its header")]
    Undersized(u32),
    /// The magic bytes are wrong: not a frame of this protocol.
    #[error("bad magic {0:02x?}")]
    BadMagic([u8; 4]),
    /// A protocol version this build does not read.
    #[error("unsupported protocol version {0} (this build reads {PROTOCOL_VERSION})")]
    UnsupportedVersion(u16),
    /// An unknown frame kind.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// The frame belongs to another cluster.
    #[error("frame for cluster {found}, this is cluster {expected}")]
    WrongCluster {
        /// This node's cluster id.
        expected: u64,
        /// The frame's cluster id.
        found: u64,
    },
    /// The sender is not a configured peer.
    #[error("unknown sender {0}")]
    UnknownSender(NodeId),
    /// The frame is for another node.
    #[error("frame for node {found}, this is node {expected}")]
    WrongReceiver {
        /// This node's id.
        expected: NodeId,
        /// The frame's receiver.
        found: NodeId,
    },
    /// The sender changed within one connection.
    #[error("sender changed from {first} to {found} within one connection")]
    SenderChanged {
        /// The first sender seen on the connection.
        first: NodeId,
        /// The frame's sender.
        found: NodeId,
    },
    /// The payload names another sender or receiver than the header.
    #[error("payload from {sender} to {receiver} does not match its header")]
    PayloadMismatch {
        /// The payload's sender.
        sender: NodeId,
        /// The payload's receiver.
        receiver: NodeId,
    },
    /// The payload does not decode.
    #[error("payload does not decode: {0}")]
    Decode(#[from] bincode::Error),
}

impl FrameError {
    /// A short, stable name for metrics labels.
    pub fn reason(&self) -> &'static str {
        match self {
            FrameError::Oversized { .. } => "oversized",
            FrameError::Undersized(_) => "undersized",
            FrameError::BadMagic(_) => "bad_magic",
            FrameError::UnsupportedVersion(_) => "unsupported_version",
            FrameError::UnknownKind(_) => "unknown_kind",
            FrameError::WrongCluster { .. } => "wrong_cluster",
            FrameError::UnknownSender(_) => "unknown_sender",
            FrameError::WrongReceiver { .. } => "wrong_receiver",
            FrameError::SenderChanged { .. } => "sender_changed",
            FrameError::PayloadMismatch { .. } => "payload_mismatch",
            FrameError::Decode(_) => "decode",
        }
    }
}

/// Why an outgoing message was not framed.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The encoded message would exceed `max_frame_bytes`.
    #[error("message exceeds the frame limit of {max} bytes")]
    Oversized {
        /// The limit.
        max: u32,
    },
    /// The codec failed for another reason (a `Serialize` impl that errs).
    #[error("message does not encode: {0}")]
    Codec(bincode::Error),
}

/// The payload codec: bincode 1.3 with varint integers, limited to `limit` bytes.
pub fn codec(limit: u64) -> impl Options + Copy {
    bincode::DefaultOptions::new().with_limit(limit)
}

/// Appends one frame to `out`. On error `out` is left as it was.
pub fn encode_frame<P: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    header: &Header,
    payload: &P,
    max_frame_bytes: u32,
) -> Result<(), EncodeError> {
    let start = out.len();
    out.extend_from_slice(&[0; LENGTH_BYTES]);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    out.push(header.kind.to_byte());
    out.push(0);
    out.extend_from_slice(&header.cluster_id.to_le_bytes());
    out.extend_from_slice(&header.sender.to_le_bytes());
    out.extend_from_slice(&header.receiver.to_le_bytes());
    debug_assert_eq!(out.len() - start, LENGTH_BYTES + HEADER_BYTES);
    let payload_limit = u64::from(max_frame_bytes) - HEADER_BYTES as u64;
    if let Err(error) = codec(payload_limit).serialize_into(&mut *out, payload) {
        out.truncate(start);
        return Err(match *error {
            bincode::ErrorKind::SizeLimit => EncodeError::Oversized { max: max_frame_bytes },
            _ => EncodeError::Codec(error),
        });
    }
    let frame_len = u32::try_from(out.len() - start - LENGTH_BYTES).expect("bounded by max_frame_bytes");
    debug_assert!(frame_len <= max_frame_bytes);
    out[start..start + LENGTH_BYTES].copy_from_slice(&frame_len.to_le_bytes());
    Ok(())
}

/// Checks a length field; returns the number of bytes after the header.
pub fn check_length(len_bytes: [u8; LENGTH_BYTES], max_frame_bytes: u32) -> Result<usize, FrameError> {
    let len = u32::from_le_bytes(len_bytes);
    if len > max_frame_bytes {
        return Err(FrameError::Oversized { len, max: max_frame_bytes });
    }
    if (len as usize) < HEADER_BYTES {
        return Err(FrameError::Undersized(len));
    }
    Ok(len as usize - HEADER_BYTES)
}

/// Parses a header (the bytes after the length field) and checks it against this node.
pub fn parse_header(
    bytes: &[u8; HEADER_BYTES],
    cluster_id: u64,
    own_id: NodeId,
    is_peer: impl Fn(NodeId) -> bool,
) -> Result<Header, FrameError> {
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let magic: [u8; 4] = bytes[0..4].try_into().expect("4 bytes");
    if magic != MAGIC {
        return Err(FrameError::BadMagic(magic));
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != PROTOCOL_VERSION {
        return Err(FrameError::UnsupportedVersion(version));
    }
    let kind = FrameKind::from_byte(bytes[6]).ok_or(FrameError::UnknownKind(bytes[6]))?;
    let header = Header { kind, cluster_id: u64_at(8), sender: u64_at(16), receiver: u64_at(24) };
    if header.cluster_id != cluster_id {
        return Err(FrameError::WrongCluster { expected: cluster_id, found: header.cluster_id });
    }
    if !is_peer(header.sender) {
        return Err(FrameError::UnknownSender(header.sender));
    }
    if header.receiver != own_id {
        return Err(FrameError::WrongReceiver { expected: own_id, found: header.receiver });
    }
    Ok(header)
}

/// Decodes a payload of exactly `bytes`.
pub fn decode_payload<P: DeserializeOwned>(bytes: &[u8]) -> Result<P, FrameError> {
    Ok(codec(bytes.len() as u64).deserialize(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: u32 = 4096;

    fn header() -> Header {
        Header { kind: FrameKind::Progress, cluster_id: 7, sender: 2, receiver: 1 }
    }

    fn split(frame: &[u8]) -> ([u8; LENGTH_BYTES], [u8; HEADER_BYTES], &[u8]) {
        let len = frame[..LENGTH_BYTES].try_into().unwrap();
        let header = frame[LENGTH_BYTES..LENGTH_BYTES + HEADER_BYTES].try_into().unwrap();
        (len, header, &frame[LENGTH_BYTES + HEADER_BYTES..])
    }

    #[test]
    fn a_frame_round_trips() {
        let progress = Progress { decided_idx: 5, accepted_idx: 300 };
        let mut out = vec![0xAA];
        encode_frame(&mut out, &header(), &progress, MAX).unwrap();
        let (len, head, payload) = split(&out[1..]);
        assert_eq!(check_length(len, MAX).unwrap(), payload.len());
        assert_eq!(parse_header(&head, 7, 1, |id| id == 2).unwrap(), header());
        assert_eq!(decode_payload::<Progress>(payload).unwrap(), progress);
    }

    #[test]
    fn each_header_check_rejects_with_its_own_error() {
        let mut out = Vec::new();
        encode_frame(&mut out, &header(), &Progress::default(), MAX).unwrap();
        let (_, head, _) = split(&out);
        let is_peer = |id| id == 2;
        assert!(matches!(parse_header(&head, 8, 1, is_peer), Err(FrameError::WrongCluster { found: 7, .. })));
        assert!(matches!(
            parse_header(&head, 7, 3, is_peer),
            Err(FrameError::WrongReceiver { found: 1, .. })
        ));
        assert!(matches!(parse_header(&head, 7, 1, |_| false), Err(FrameError::UnknownSender(2))));
        let mut bad = head;
        bad[0] = b'X';
        assert!(matches!(parse_header(&bad, 7, 1, is_peer), Err(FrameError::BadMagic(_))));
        let mut bad = head;
        bad[4] = 9;
        assert!(matches!(parse_header(&bad, 7, 1, is_peer), Err(FrameError::UnsupportedVersion(9))));
        let mut bad = head;
        bad[6] = 77;
        assert!(matches!(parse_header(&bad, 7, 1, is_peer), Err(FrameError::UnknownKind(77))));
    }

    #[test]
    fn lengths_outside_the_limits_are_rejected() {
        assert!(matches!(check_length((MAX + 1).to_le_bytes(), MAX), Err(FrameError::Oversized { .. })));
        assert!(matches!(check_length(3u32.to_le_bytes(), MAX), Err(FrameError::Undersized(3))));
        assert_eq!(check_length((HEADER_BYTES as u32).to_le_bytes(), MAX).unwrap(), 0);
    }

    #[test]
    fn an_oversized_message_is_not_framed_and_leaves_the_buffer_alone() {
        let big = vec![7u64; 10_000];
        let mut out = vec![1, 2, 3];
        let error = encode_frame(&mut out, &header(), &big, MAX).unwrap_err();
        assert!(matches!(error, EncodeError::Oversized { max: MAX }));
        assert_eq!(out, vec![1, 2, 3]);
    }

    #[test]
    fn garbage_payloads_fail_to_decode_without_panicking() {
        let garbage: Vec<u8> = (0..200u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
        for end in 0..garbage.len() {
            let _ = decode_payload::<omnipaxos_core::messages::Message<Vec<u8>, ()>>(&garbage[..end]);
        }
        // A forged huge vector length must not allocate beyond the frame.
        let mut forged = vec![0xFB];
        forged.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode_payload::<Vec<u64>>(&forged).is_err());
    }
}
