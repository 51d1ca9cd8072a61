//! The byte layout of segment files: segment header, frames, and frame payloads.
//!
//! Every integer is fixed-width little-endian. Entry, snapshot and StopSign values are encoded
//! with bincode 1 (fixed-width little-endian integers) inside a length-prefixed field; everything
//! around them is this module's own format, so `omnipaxos_wal_tool` can verify and dump a
//! directory without knowing the entry type. See `DESIGN.md` for the full picture.
//!
//! ```text
//! segment file: [ header 80 B + type tag ][ checkpoint ][ frame ] ... [ Seal ]? [ fill pattern ]
//! frame:        [ header 32 B ][ payload ][ zero padding to a multiple of 8 ]
//! ```
//!
//! Format version 2. Key decision: unwritten space holds a per-segment pseudo-random fill
//! pattern, not zeros, so recovery can prove a frame incomplete (torn: never acknowledged) or
//! erased (zeros: damage), instead of reading both as "end of data".

use std::marker::PhantomData;

use bincode::Options;
use omnipaxos_core::{
    ballot_leader_election::Ballot,
    storage::{StopSign, StorageOp},
    util::{ConfigurationId, LogIndex, NodeId, Proposal, ProposalId},
};
use serde::{de::DeserializeOwned, Serialize};

/// First 8 bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"OPAXWAL\0";
/// The format this code writes and the only one it reads. Version 1 (no seals, zero-filled
/// segments, no value type tag) is refused with [`HeaderError::UnsupportedVersion`].
pub const FORMAT_VERSION: u32 = 2;
/// Size of the fixed part of a segment header; the value type tag and the checksum follow.
pub const SEGMENT_HEADER_FIXED_BYTES: usize = 72;
/// Size of the smallest segment header (empty type tag).
pub const SEGMENT_HEADER_MIN_BYTES: usize = SEGMENT_HEADER_FIXED_BYTES + 8;
/// Longest value type tag, in bytes.
pub const TYPE_TAG_MAX_BYTES: usize = 4096;
/// Size of the largest segment header.
pub const SEGMENT_HEADER_MAX_BYTES: usize = SEGMENT_HEADER_MIN_BYTES + TYPE_TAG_MAX_BYTES;
/// Size of a frame header.
pub const FRAME_HEADER_BYTES: usize = 32;
/// Frames start at multiples of this.
pub const FRAME_ALIGNMENT_BYTES: usize = 8;
/// Largest frame payload. Checked before allocating on read and before writing.
pub const RECORD_PAYLOAD_MAX_BYTES: usize = 1 << 30;
/// Size of a Seal frame (header and its 8-byte payload).
pub const SEAL_FRAME_BYTES: usize = FRAME_HEADER_BYTES + 8;

/// Who owns a data directory. A directory is opened only by the identity that created it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    /// A user-chosen cluster id (0 unless set), so two clusters that both use configuration
    /// id 1 cannot open each other's directories.
    pub cluster_id: u64,
    /// The configuration whose log this is.
    pub configuration_id: ConfigurationId,
    /// The node whose log this is.
    pub node_id: NodeId,
}

/// The decoded header of a segment file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Segment ids are consecutive; the file name carries the same id.
    pub segment_id: u64,
    /// The directory's owner.
    pub identity: Identity,
    /// The lsn of the segment's first frame, its checkpoint.
    pub first_lsn: u64,
    /// The file was filled with [`fill_word`]s up to this size (and synced) before it got its
    /// name; 0 if it was not preallocated. Below this size, unwritten space holds the fill
    /// pattern, so zeros there are damage, never a torn write; a shorter file was truncated.
    pub preallocated_bytes: u64,
    /// What the entries and snapshots are (by default their Rust type names): a log written
    /// with other value types is refused with a type error instead of failing to decode.
    pub type_tag: String,
}

impl SegmentHeader {
    /// Bytes the encoded header takes; the checkpoint frame starts here.
    pub fn encoded_bytes(&self) -> usize {
        SEGMENT_HEADER_MIN_BYTES + padded(self.type_tag.len())
    }
}

/// What a frame holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// The full non-entry state when the segment was started; the first frame of a segment.
    Checkpoint,
    /// The ops of one `write_atomically` call.
    Write,
    /// The last frame of a rolled segment: names the next segment, which existed (durably)
    /// before this frame was written. Payload: `u64` next segment id.
    Seal,
    /// Written by a clean `close`: every earlier frame is synced (its `synced_lsn` says so).
    /// Empty payload.
    Close,
    /// Written by recovery where it dropped a tail that may have been acknowledged: the
    /// replica's acknowledged state may be lost. Payload: `u8` [`LossCause`] code.
    Loss,
    /// The user declared the replica repaired after a possible loss. Empty payload.
    LossResolved,
}

impl FrameKind {
    fn code(self) -> u8 {
        match self {
            FrameKind::Checkpoint => 1,
            FrameKind::Write => 2,
            FrameKind::Seal => 3,
            FrameKind::Close => 4,
            FrameKind::Loss => 5,
            FrameKind::LossResolved => 6,
        }
    }

    fn from_code(code: u8) -> Option<FrameKind> {
        match code {
            1 => Some(FrameKind::Checkpoint),
            2 => Some(FrameKind::Write),
            3 => Some(FrameKind::Seal),
            4 => Some(FrameKind::Close),
            5 => Some(FrameKind::Loss),
            6 => Some(FrameKind::LossResolved),
            _ => None,
        }
    }
}

/// Why a replica's acknowledged state may be lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LossCause {
    /// Recovery dropped a complete frame that failed verification at the end of the log, with
    /// nothing after it to prove it synced or never synced: a crash during that write, or
    /// damage to acknowledged data. The storage cannot tell which.
    DamagedTail,
    /// The log was bootstrapped with [`OpenMode::Replace`](super::OpenMode::Replace): it
    /// replaces a lost log of a replica that had history.
    LogReplaced,
}

impl LossCause {
    fn code(self) -> u8 {
        match self {
            LossCause::DamagedTail => 1,
            LossCause::LogReplaced => 2,
        }
    }

    fn from_code(code: u8) -> Option<LossCause> {
        match code {
            1 => Some(LossCause::DamagedTail),
            2 => Some(LossCause::LogReplaced),
            _ => None,
        }
    }
}

/// A recorded possible loss of acknowledged state: it stays in the log (and in every later
/// checkpoint) until resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PossibleLoss {
    /// Frames from this lsn on may be missing (the lsn of the Loss frame, or 1 for a replaced
    /// log).
    pub lsn: u64,
    /// Why.
    pub cause: LossCause,
}

/// A frame that passed every check.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    /// What the payload holds.
    pub kind: FrameKind,
    /// Log sequence number: frames of a directory are numbered 1, 2, 3, ... without gaps.
    pub lsn: u64,
    /// The highest lsn known durable when this frame was written: proof that every earlier
    /// frame up to it was synced.
    pub synced_lsn: u64,
    /// The payload (checksum verified).
    pub payload: &'a [u8],
    /// Bytes the frame occupies, header and padding included.
    pub len: usize,
}

/// The outcome of reading a frame at an offset.
#[derive(Clone, Copy, Debug)]
pub enum FrameRead<'a> {
    /// A complete frame whose checksums match.
    Valid(Frame<'a>),
    /// Zeros (or nothing) where a header would start.
    Zero,
    /// Anything else: torn, partial, unwritten (fill) or corrupt. The reason names the failed
    /// check.
    Invalid(&'static str),
}

/// Rounds up to the frame alignment.
pub fn padded(length: usize) -> usize {
    length.div_ceil(FRAME_ALIGNMENT_BYTES) * FRAME_ALIGNMENT_BYTES
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// The pattern a preallocated segment is filled with before use: one pseudo-random 64-bit
/// word per aligned offset, different per segment. A frame never equals it (a valid frame
/// header has matching checksums; a word of payload equals it with probability 2^-64), so
/// recovery can tell space that was never written from space that was written, torn, or
/// zeroed. A torn write leaves fill words inside the frame it tore; damage to a complete frame
/// does not.
pub fn fill_word(segment_id: u64, offset: u64) -> u64 {
    debug_assert_eq!(offset % FRAME_ALIGNMENT_BYTES as u64, 0);
    let mut z =
        (segment_id.rotate_left(29) ^ (offset / FRAME_ALIGNMENT_BYTES as u64) ^ 0x4F50_4158_5741_4C32)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Writes the fill pattern of `segment_id` for the file range starting at `offset` (aligned)
/// into `out` (a whole number of words; a shorter last word gets the word's first bytes).
pub fn fill_bytes(segment_id: u64, offset: u64, out: &mut [u8]) {
    assert_eq!(offset % FRAME_ALIGNMENT_BYTES as u64, 0, "fill starts aligned");
    for (index, chunk) in out.chunks_mut(FRAME_ALIGNMENT_BYTES).enumerate() {
        let word = fill_word(segment_id, offset + (index * FRAME_ALIGNMENT_BYTES) as u64).to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
}

/// True if `bytes` (starting at the aligned file offset `offset`, at most one word) equal the
/// fill pattern there.
pub fn is_fill(segment_id: u64, offset: u64, bytes: &[u8]) -> bool {
    debug_assert!(bytes.len() <= FRAME_ALIGNMENT_BYTES);
    bytes == &fill_word(segment_id, offset).to_le_bytes()[..bytes.len()]
}

/// First 8 bytes of a prepared (filled and synced) next segment that is not in use yet.
pub const PREPARED_MAGIC: [u8; 8] = *b"OPAXPREP";
/// Size of the marker of a prepared segment.
pub const PREPARED_MARKER_BYTES: usize = 32;

/// The marker written at offset 0 of a `.tmp` segment once its fill is durable: magic, `u64`
/// segment id, `u64` size, 4 reserved bytes, CRC32C of bytes 0..28.
pub fn encode_prepared_marker(segment_id: u64, size_bytes: u64) -> [u8; PREPARED_MARKER_BYTES] {
    let mut bytes = [0u8; PREPARED_MARKER_BYTES];
    bytes[0..8].copy_from_slice(&PREPARED_MAGIC);
    bytes[8..16].copy_from_slice(&segment_id.to_le_bytes());
    bytes[16..24].copy_from_slice(&size_bytes.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[..28]);
    bytes[28..32].copy_from_slice(&crc.to_le_bytes());
    bytes
}

/// The segment id and size a prepared-segment marker names, if `bytes` start with a valid one.
pub fn decode_prepared_marker(bytes: &[u8]) -> Option<(u64, u64)> {
    let bytes = bytes.get(..PREPARED_MARKER_BYTES)?;
    let valid = bytes[0..8] == PREPARED_MAGIC
        && bytes[24..28] == [0; 4]
        && crc32c::crc32c(&bytes[..28]) == u32_at(bytes, 28);
    valid.then(|| (u64_at(bytes, 8), u64_at(bytes, 16)))
}

/// Encodes a segment header (see `DESIGN.md` for the layout).
pub fn encode_segment_header(header: &SegmentHeader) -> Vec<u8> {
    assert!(header.type_tag.len() <= TYPE_TAG_MAX_BYTES, "the configuration bounds the tag");
    let size = header.encoded_bytes();
    let mut bytes = vec![0u8; size];
    bytes[0..8].copy_from_slice(&SEGMENT_MAGIC);
    bytes[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes[12..16].copy_from_slice(&(size as u32).to_le_bytes());
    bytes[16..24].copy_from_slice(&header.segment_id.to_le_bytes());
    bytes[24..32].copy_from_slice(&header.identity.cluster_id.to_le_bytes());
    bytes[32..40].copy_from_slice(&header.identity.node_id.to_le_bytes());
    bytes[40..44].copy_from_slice(&header.identity.configuration_id.to_le_bytes());
    bytes[44..48].copy_from_slice(&(header.type_tag.len() as u32).to_le_bytes());
    bytes[48..56].copy_from_slice(&header.first_lsn.to_le_bytes());
    bytes[56..64].copy_from_slice(&header.preallocated_bytes.to_le_bytes());
    let tag_end = SEGMENT_HEADER_FIXED_BYTES + header.type_tag.len();
    bytes[SEGMENT_HEADER_FIXED_BYTES..tag_end].copy_from_slice(header.type_tag.as_bytes());
    let crc = crc32c::crc32c(&bytes[..size - 4]);
    bytes[size - 4..].copy_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(decode_segment_header(&bytes).as_ref(), Ok(&(header.clone(), size)));
    bytes
}

/// Why a segment header was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Not a segment file, or a corrupt one.
    Corrupt(&'static str),
    /// A segment of another format version.
    UnsupportedVersion(u32),
}

/// Size of a version-1 header, whose checksum sits at bytes 60..64.
const VERSION_1_HEADER_BYTES: usize = 64;

/// Decodes and verifies a segment header at the start of `bytes`; returns it and its size.
/// Only the first [`SEGMENT_HEADER_MAX_BYTES`] bytes are ever looked at.
pub fn decode_segment_header(bytes: &[u8]) -> Result<(SegmentHeader, usize), HeaderError> {
    if bytes.len() < 16 {
        return Err(HeaderError::Corrupt("file shorter than a segment header"));
    }
    if bytes[0..8] != SEGMENT_MAGIC {
        return Err(HeaderError::Corrupt("bad segment magic"));
    }
    let version = u32_at(bytes, 8);
    if version == 1 {
        let verified =
            bytes.len() >= VERSION_1_HEADER_BYTES && crc32c::crc32c(&bytes[..60]) == u32_at(bytes, 60);
        return Err(if verified {
            HeaderError::UnsupportedVersion(1)
        } else {
            HeaderError::Corrupt("segment header checksum mismatch")
        });
    }
    if version != FORMAT_VERSION {
        return Err(HeaderError::UnsupportedVersion(version));
    }
    let size = u32_at(bytes, 12) as usize;
    if !(SEGMENT_HEADER_MIN_BYTES..=SEGMENT_HEADER_MAX_BYTES).contains(&size)
        || !size.is_multiple_of(FRAME_ALIGNMENT_BYTES)
    {
        return Err(HeaderError::Corrupt("unexpected segment header size"));
    }
    if bytes.len() < size {
        return Err(HeaderError::Corrupt("file shorter than its segment header"));
    }
    if crc32c::crc32c(&bytes[..size - 4]) != u32_at(bytes, size - 4) {
        return Err(HeaderError::Corrupt("segment header checksum mismatch"));
    }
    let tag_len = u32_at(bytes, 44) as usize;
    if tag_len > TYPE_TAG_MAX_BYTES || SEGMENT_HEADER_MIN_BYTES + padded(tag_len) != size {
        return Err(HeaderError::Corrupt("segment header tag length disagrees with its size"));
    }
    let tag_end = SEGMENT_HEADER_FIXED_BYTES + tag_len;
    if u64_at(bytes, 64) != 0 || bytes[tag_end..size - 4].iter().any(|byte| *byte != 0) {
        return Err(HeaderError::Corrupt("reserved segment header bytes are not zero"));
    }
    let Ok(type_tag) = std::str::from_utf8(&bytes[SEGMENT_HEADER_FIXED_BYTES..tag_end]) else {
        return Err(HeaderError::Corrupt("value type tag is not UTF-8"));
    };
    let identity = Identity {
        cluster_id: u64_at(bytes, 24),
        node_id: u64_at(bytes, 32),
        configuration_id: u32_at(bytes, 40),
    };
    let header = SegmentHeader {
        segment_id: u64_at(bytes, 16),
        identity,
        first_lsn: u64_at(bytes, 48),
        preallocated_bytes: u64_at(bytes, 56),
        type_tag: type_tag.to_owned(),
    };
    Ok((header, size))
}

/// Reserves a frame header at the end of `out`; returns where the frame starts. Append the
/// payload to `out`, then call [`finish_frame`].
pub fn begin_frame(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    assert_eq!(start % FRAME_ALIGNMENT_BYTES, 0, "frames start aligned");
    out.resize(start + FRAME_HEADER_BYTES, 0);
    start
}

/// Pads the frame that starts at `start` and fills in its header. Fails (leaving `out` as
/// it was before `begin_frame`) if the payload is larger than [`RECORD_PAYLOAD_MAX_BYTES`].
pub fn finish_frame(
    out: &mut Vec<u8>,
    start: usize,
    kind: FrameKind,
    lsn: u64,
    synced_lsn: u64,
) -> Result<(), EncodeError> {
    let payload_len = out.len() - start - FRAME_HEADER_BYTES;
    if payload_len > RECORD_PAYLOAD_MAX_BYTES {
        out.truncate(start);
        return Err(EncodeError::TooLarge { what: "frame payload", bytes: payload_len });
    }
    let payload_crc = crc32c::crc32c(&out[start + FRAME_HEADER_BYTES..]);
    out.resize(start + FRAME_HEADER_BYTES + padded(payload_len), 0);
    let header = &mut out[start..start + FRAME_HEADER_BYTES];
    header[0..4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    header[4] = kind.code();
    header[24..28].copy_from_slice(&payload_crc.to_le_bytes());
    set_frame_sequence(header, lsn, synced_lsn);
    Ok(())
}

/// Rewrites the lsn and synced lsn of an encoded frame header (and its header checksum): a
/// frame moved behind a new segment's checkpoint gets the next number. The payload checksum
/// is separate, so the payload is not read again.
pub fn set_frame_sequence(header: &mut [u8], lsn: u64, synced_lsn: u64) {
    assert!(synced_lsn < lsn, "a frame cannot be synced before it is written");
    header[8..16].copy_from_slice(&lsn.to_le_bytes());
    header[16..24].copy_from_slice(&synced_lsn.to_le_bytes());
    let header_crc = crc32c::crc32c(&header[..28]);
    header[28..32].copy_from_slice(&header_crc.to_le_bytes());
}

/// Reads and verifies the frame at `offset`. Never panics, never allocates: the length is
/// checked against the limit and the bytes present before the payload is touched.
pub fn read_frame(bytes: &[u8], offset: usize) -> FrameRead<'_> {
    let rest = bytes.get(offset..).unwrap_or(&[]);
    if rest.len() < FRAME_HEADER_BYTES {
        return if rest.iter().all(|byte| *byte == 0) {
            FrameRead::Zero
        } else {
            FrameRead::Invalid("truncated frame header")
        };
    }
    let header = &rest[..FRAME_HEADER_BYTES];
    if header.iter().all(|byte| *byte == 0) {
        return FrameRead::Zero;
    }
    if crc32c::crc32c(&header[..28]) != u32_at(header, 28) {
        return FrameRead::Invalid("frame header checksum mismatch");
    }
    let Some(kind) = FrameKind::from_code(header[4]) else {
        return FrameRead::Invalid("unknown frame kind");
    };
    if header[5..8] != [0, 0, 0] {
        return FrameRead::Invalid("reserved frame header bytes are not zero");
    }
    let payload_len = u32_at(header, 0) as usize;
    if payload_len > RECORD_PAYLOAD_MAX_BYTES {
        return FrameRead::Invalid("frame length above the limit");
    }
    let len = FRAME_HEADER_BYTES + padded(payload_len);
    if len > rest.len() {
        return FrameRead::Invalid("frame extends past the end of the file");
    }
    let payload = &rest[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + payload_len];
    if crc32c::crc32c(payload) != u32_at(header, 24) {
        return FrameRead::Invalid("frame payload checksum mismatch");
    }
    if rest[FRAME_HEADER_BYTES + payload_len..len].iter().any(|byte| *byte != 0) {
        return FrameRead::Invalid("frame padding is not zero");
    }
    let (lsn, synced_lsn) = (u64_at(header, 8), u64_at(header, 16));
    if synced_lsn >= lsn {
        return FrameRead::Invalid("frame claims to be synced before it was written");
    }
    FrameRead::Valid(Frame { kind, lsn, synced_lsn, payload, len })
}

/// Appends a whole frame with a small, already encoded `payload` (Seal, Close, Loss,
/// LossResolved).
pub fn encode_frame(out: &mut Vec<u8>, kind: FrameKind, lsn: u64, synced_lsn: u64, payload: &[u8]) {
    let start = begin_frame(out);
    out.extend_from_slice(payload);
    finish_frame(out, start, kind, lsn, synced_lsn).expect("a small payload is within the limit");
}

/// The payload of a Seal frame: the id of the next segment.
pub fn seal_payload(next_segment_id: u64) -> [u8; 8] {
    next_segment_id.to_le_bytes()
}

/// Decodes the payload of a Seal frame.
pub fn decode_seal(payload: &[u8]) -> Result<u64, DecodeError> {
    let bytes: [u8; 8] = payload.try_into().map_err(|_| "seal payload is not 8 bytes")?;
    Ok(u64::from_le_bytes(bytes))
}

/// The payload of a Loss frame.
pub fn loss_payload(cause: LossCause) -> [u8; 1] {
    [cause.code()]
}

/// Decodes the payload of a Loss frame.
pub fn decode_loss(payload: &[u8]) -> Result<LossCause, DecodeError> {
    match payload {
        [code] => LossCause::from_code(*code).ok_or("unknown loss cause"),
        _ => Err("loss payload is not 1 byte"),
    }
}

/// The valid frames of a segment file, with their offsets, from the end of its header up to
/// the first position that holds no valid frame (for tools, benchmarks and tests).
pub fn segment_frames(bytes: &[u8]) -> Vec<(usize, Frame<'_>)> {
    let Ok((_, mut offset)) = decode_segment_header(bytes) else { return Vec::new() };
    let mut frames = Vec::new();
    while let FrameRead::Valid(frame) = read_frame(bytes, offset) {
        frames.push((offset, frame));
        offset += frame.len;
    }
    frames
}

/// Why a value could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// A value or payload exceeds a length limit of the format.
    #[error("{what} of {bytes} bytes exceeds the format's limit")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size.
        bytes: usize,
    },
    /// bincode refused the value.
    #[error("cannot encode a value: {0}")]
    Bincode(#[from] bincode::Error),
}

/// The value encoding: bincode 1 with fixed-width little-endian integers, no trailing bytes.
fn bincode_options() -> impl Options + Copy {
    bincode::DefaultOptions::new().with_fixint_encoding().with_little_endian().reject_trailing_bytes()
}

/// Decodes a bincode value that must fill `bytes` exactly; the limit bounds allocations.
pub fn decode_bincode<V: DeserializeOwned>(bytes: &[u8]) -> Option<V> {
    bincode_options().with_limit(bytes.len() as u64).deserialize(bytes).ok()
}

/// Encodes `value` with bincode and returns its bytes (for tests and tools).
pub fn encode_bincode<V: Serialize>(value: &V) -> Result<Vec<u8>, EncodeError> {
    Ok(bincode_options().serialize(value)?)
}

fn put_u8(out: &mut Vec<u8>, value: u8) {
    out.push(value);
}

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

/// A `u32` length prefix, then the bincode bytes of `value`.
fn put_value<V: Serialize>(out: &mut Vec<u8>, value: &V, what: &'static str) -> Result<(), EncodeError> {
    let length_at = out.len();
    put_u32(out, 0);
    if let Err(error) = bincode_options().serialize_into(&mut *out, value) {
        out.truncate(length_at);
        return Err(error.into());
    }
    let length = out.len() - length_at - 4;
    let Ok(length) = u32::try_from(length) else {
        out.truncate(length_at);
        return Err(EncodeError::TooLarge { what, bytes: length });
    };
    out[length_at..length_at + 4].copy_from_slice(&length.to_le_bytes());
    Ok(())
}

fn put_ballot(out: &mut Vec<u8>, ballot: &Ballot) {
    put_u32(out, ballot.config_id);
    put_u32(out, ballot.n);
    put_u32(out, ballot.priority);
    put_u64(out, ballot.pid);
}

fn put_optional_ballot(out: &mut Vec<u8>, ballot: &Option<Ballot>) {
    match ballot {
        None => put_u8(out, 0),
        Some(ballot) => {
            put_u8(out, 1);
            put_ballot(out, ballot);
        }
    }
}

fn put_optional_value<V: Serialize>(
    out: &mut Vec<u8>,
    value: &Option<V>,
    what: &'static str,
) -> Result<(), EncodeError> {
    match value {
        None => {
            put_u8(out, 0);
            Ok(())
        }
        Some(value) => {
            put_u8(out, 1);
            put_value(out, value, what)
        }
    }
}

fn put_entries<T: Serialize>(out: &mut Vec<u8>, entries: &[Proposal<T>]) -> Result<(), EncodeError> {
    let count = u32::try_from(entries.len())
        .map_err(|_| EncodeError::TooLarge { what: "entry count", bytes: entries.len() })?;
    put_u32(out, count);
    for proposal in entries {
        put_u64(out, proposal.id.node);
        put_u64(out, proposal.id.seq);
        put_u64(out, proposal.id.incarnation);
        put_value(out, &proposal.entry, "entry")?;
    }
    Ok(())
}

const OP_APPEND_ENTRIES: u8 = 1;
const OP_APPEND_ON_PREFIX: u8 = 2;
const OP_SET_PROMISE: u8 = 3;
const OP_SET_ACCEPTED_ROUND: u8 = 4;
const OP_SET_DECIDED_IDX: u8 = 5;
const OP_SET_STOPSIGN: u8 = 6;
const OP_TRIM: u8 = 7;
const OP_SET_SNAPSHOT: u8 = 8;
const OP_SET_INCARNATION: u8 = 9;

/// Appends the payload of a Write frame: `u32` op count, then each op as a tag and its fields.
/// On error `out` may hold a partial payload; the caller truncates it.
pub fn encode_ops<T: Serialize, S: Serialize>(
    out: &mut Vec<u8>,
    ops: &[StorageOp<T, S>],
) -> Result<(), EncodeError> {
    let count =
        u32::try_from(ops.len()).map_err(|_| EncodeError::TooLarge { what: "op count", bytes: ops.len() })?;
    put_u32(out, count);
    for op in ops {
        match op {
            StorageOp::AppendEntries(entries) => {
                put_u8(out, OP_APPEND_ENTRIES);
                put_entries(out, entries)?;
            }
            StorageOp::AppendOnPrefix(from_idx, entries) => {
                put_u8(out, OP_APPEND_ON_PREFIX);
                put_u64(out, *from_idx);
                put_entries(out, entries)?;
            }
            StorageOp::SetPromise(ballot) => {
                put_u8(out, OP_SET_PROMISE);
                put_ballot(out, ballot);
            }
            StorageOp::SetAcceptedRound(ballot) => {
                put_u8(out, OP_SET_ACCEPTED_ROUND);
                put_ballot(out, ballot);
            }
            StorageOp::SetDecidedIdx(idx) => {
                put_u8(out, OP_SET_DECIDED_IDX);
                put_u64(out, *idx);
            }
            StorageOp::SetStopSign(stopsign) => {
                put_u8(out, OP_SET_STOPSIGN);
                put_optional_value(out, stopsign, "StopSign")?;
            }
            StorageOp::Trim(idx) => {
                put_u8(out, OP_TRIM);
                put_u64(out, *idx);
            }
            StorageOp::SetSnapshot(snapshot) => {
                put_u8(out, OP_SET_SNAPSHOT);
                put_optional_value(out, snapshot, "snapshot")?;
            }
            StorageOp::SetIncarnation(incarnation) => {
                put_u8(out, OP_SET_INCARNATION);
                put_u64(out, *incarnation);
            }
            // Never encoded: every segment header records the owner.
            StorageOp::SetIdentity(_) => {}
        }
    }
    Ok(())
}

/// The non-entry state of a replica plus the log bounds: the payload of a Checkpoint frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint<S> {
    /// First stored index.
    pub compacted_idx: LogIndex,
    /// One past the last stored index. Entries `[compacted_idx, log_end)` live in earlier
    /// segments.
    pub log_end: LogIndex,
    /// The decided index.
    pub decided_idx: LogIndex,
    /// The incarnation.
    pub incarnation: u64,
    /// The promise.
    pub promise: Option<Ballot>,
    /// The accepted round.
    pub accepted_round: Option<Ballot>,
    /// The StopSign.
    pub stopsign: Option<StopSign>,
    /// The snapshot.
    pub snapshot: Option<S>,
    /// An unresolved possible loss of acknowledged state.
    pub possible_loss: Option<PossibleLoss>,
}

/// Appends the payload of a Checkpoint frame.
pub fn encode_checkpoint<S: Serialize>(
    out: &mut Vec<u8>,
    checkpoint: &Checkpoint<&S>,
) -> Result<(), EncodeError> {
    put_u64(out, checkpoint.compacted_idx);
    put_u64(out, checkpoint.log_end);
    put_u64(out, checkpoint.decided_idx);
    put_u64(out, checkpoint.incarnation);
    put_optional_ballot(out, &checkpoint.promise);
    put_optional_ballot(out, &checkpoint.accepted_round);
    put_optional_value(out, &checkpoint.stopsign, "StopSign")?;
    put_optional_value(out, &checkpoint.snapshot, "snapshot")?;
    match checkpoint.possible_loss {
        None => put_u8(out, 0),
        Some(loss) => {
            put_u8(out, 1);
            put_u64(out, loss.lsn);
            put_u8(out, loss.cause.code());
        }
    }
    Ok(())
}

/// How entry and snapshot bytes become values: the typed storage decodes bincode, the data
/// directory tool keeps raw bytes.
pub trait ValueDecoder {
    /// The entry type.
    type Entry;
    /// The snapshot type.
    type Snapshot;
    /// Decodes one entry, `None` if the bytes are not a valid entry.
    fn entry(bytes: &[u8]) -> Option<Self::Entry>;
    /// Decodes one snapshot, `None` if the bytes are not a valid snapshot.
    fn snapshot(bytes: &[u8]) -> Option<Self::Snapshot>;
}

/// Decodes entries and snapshots with bincode.
#[derive(Debug)]
pub struct BincodeValues<T, S>(PhantomData<fn() -> (T, S)>);

impl<T: DeserializeOwned, S: DeserializeOwned> ValueDecoder for BincodeValues<T, S> {
    type Entry = T;
    type Snapshot = S;
    fn entry(bytes: &[u8]) -> Option<T> {
        decode_bincode(bytes)
    }
    fn snapshot(bytes: &[u8]) -> Option<S> {
        decode_bincode(bytes)
    }
}

/// Keeps entries and snapshots as their encoded bytes.
#[derive(Debug)]
pub struct RawValues;

impl ValueDecoder for RawValues {
    type Entry = Vec<u8>;
    type Snapshot = Vec<u8>;
    fn entry(bytes: &[u8]) -> Option<Vec<u8>> {
        Some(bytes.to_vec())
    }
    fn snapshot(bytes: &[u8]) -> Option<Vec<u8>> {
        Some(bytes.to_vec())
    }
}

/// Why a verified payload did not decode: a bug, or a directory written with another entry
/// type.
pub type DecodeError = &'static str;

/// A cursor over a payload.
struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.position.checked_add(count).ok_or("length overflows")?;
        let slice = self.bytes.get(self.position..end).ok_or("payload ends inside a field")?;
        self.position = end;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn flag(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err("option flag is neither 0 nor 1"),
        }
    }

    fn value_bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let length = self.u32()? as usize;
        self.take(length)
    }

    fn ballot(&mut self) -> Result<Ballot, DecodeError> {
        Ok(Ballot { config_id: self.u32()?, n: self.u32()?, priority: self.u32()?, pid: self.u64()? })
    }

    fn optional_ballot(&mut self) -> Result<Option<Ballot>, DecodeError> {
        Ok(if self.flag()? { Some(self.ballot()?) } else { None })
    }

    fn stopsign(&mut self) -> Result<Option<StopSign>, DecodeError> {
        if !self.flag()? {
            return Ok(None);
        }
        decode_bincode(self.value_bytes()?).map(Some).ok_or("StopSign does not decode")
    }

    fn snapshot<D: ValueDecoder>(&mut self) -> Result<Option<D::Snapshot>, DecodeError> {
        if !self.flag()? {
            return Ok(None);
        }
        D::snapshot(self.value_bytes()?).map(Some).ok_or("snapshot does not decode as this storage's type")
    }

    fn possible_loss(&mut self) -> Result<Option<PossibleLoss>, DecodeError> {
        if !self.flag()? {
            return Ok(None);
        }
        let lsn = self.u64()?;
        let cause = LossCause::from_code(self.u8()?).ok_or("unknown loss cause")?;
        Ok(Some(PossibleLoss { lsn, cause }))
    }

    fn entries<D: ValueDecoder>(&mut self) -> Result<Vec<Proposal<D::Entry>>, DecodeError> {
        let count = self.u32()? as usize;
        // Every entry takes at least 28 bytes, which bounds the allocation by the payload size.
        if count > (self.bytes.len() - self.position) / 28 {
            return Err("entry count exceeds the payload");
        }
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            let id = ProposalId { node: self.u64()?, seq: self.u64()?, incarnation: self.u64()? };
            let entry =
                D::entry(self.value_bytes()?).ok_or("entry does not decode as this storage's type")?;
            entries.push(Proposal { id, entry });
        }
        Ok(entries)
    }

    fn finish(self) -> Result<(), DecodeError> {
        if self.position == self.bytes.len() {
            Ok(())
        } else {
            Err("trailing bytes after the payload")
        }
    }
}

/// The ops of a Write frame, with entries and snapshots decoded by `D`.
pub type DecodedOps<D> = Vec<StorageOp<<D as ValueDecoder>::Entry, <D as ValueDecoder>::Snapshot>>;

/// Decodes the payload of a Write frame.
pub fn decode_ops<D: ValueDecoder>(payload: &[u8]) -> Result<DecodedOps<D>, DecodeError> {
    let mut reader = Reader { bytes: payload, position: 0 };
    let count = reader.u32()? as usize;
    if count > payload.len() {
        return Err("op count exceeds the payload");
    }
    let mut ops = Vec::with_capacity(count);
    for _ in 0..count {
        let op = match reader.u8()? {
            OP_APPEND_ENTRIES => StorageOp::AppendEntries(reader.entries::<D>()?),
            OP_APPEND_ON_PREFIX => {
                let from_idx = reader.u64()?;
                StorageOp::AppendOnPrefix(from_idx, reader.entries::<D>()?)
            }
            OP_SET_PROMISE => StorageOp::SetPromise(reader.ballot()?),
            OP_SET_ACCEPTED_ROUND => StorageOp::SetAcceptedRound(reader.ballot()?),
            OP_SET_DECIDED_IDX => StorageOp::SetDecidedIdx(reader.u64()?),
            OP_SET_STOPSIGN => StorageOp::SetStopSign(reader.stopsign()?),
            OP_TRIM => StorageOp::Trim(reader.u64()?),
            OP_SET_SNAPSHOT => StorageOp::SetSnapshot(reader.snapshot::<D>()?),
            OP_SET_INCARNATION => StorageOp::SetIncarnation(reader.u64()?),
            _ => return Err("unknown op tag"),
        };
        ops.push(op);
    }
    reader.finish()?;
    Ok(ops)
}

/// Decodes the payload of a Checkpoint frame.
pub fn decode_checkpoint<D: ValueDecoder>(payload: &[u8]) -> Result<Checkpoint<D::Snapshot>, DecodeError> {
    let mut reader = Reader { bytes: payload, position: 0 };
    let checkpoint = Checkpoint {
        compacted_idx: reader.u64()?,
        log_end: reader.u64()?,
        decided_idx: reader.u64()?,
        incarnation: reader.u64()?,
        promise: reader.optional_ballot()?,
        accepted_round: reader.optional_ballot()?,
        stopsign: reader.stopsign()?,
        snapshot: reader.snapshot::<D>()?,
        possible_loss: reader.possible_loss()?,
    };
    reader.finish()?;
    if checkpoint.compacted_idx > checkpoint.log_end {
        return Err("checkpoint has compacted_idx > log_end");
    }
    Ok(checkpoint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use omnipaxos_core::storage::ClusterConfig;

    fn sample_ops() -> Vec<StorageOp<String, u64>> {
        let proposal = |seq: u64, entry: &str| Proposal {
            id: ProposalId { node: 2, seq, incarnation: 7 },
            entry: entry.to_string(),
        };
        let next_config = ClusterConfig { configuration_id: 2, nodes: vec![1, 2], flexible_quorum: None };
        vec![
            StorageOp::AppendEntries(vec![proposal(1, "a"), proposal(2, "")]),
            StorageOp::AppendOnPrefix(1, vec![proposal(3, "ccc")]),
            StorageOp::SetPromise(Ballot::with(1, 2, 3, 4)),
            StorageOp::SetAcceptedRound(Ballot::with(1, 2, 0, 4)),
            StorageOp::SetDecidedIdx(u64::MAX),
            StorageOp::SetStopSign(Some(StopSign::with(next_config, Some(vec![1, 2])))),
            StorageOp::SetStopSign(None),
            StorageOp::Trim(1),
            StorageOp::SetSnapshot(Some(99)),
            StorageOp::SetSnapshot(None),
            StorageOp::SetIncarnation(5),
        ]
    }

    #[test]
    fn ops_round_trip_through_a_frame() {
        let ops = sample_ops();
        let mut out = vec![0u8; 16];
        let start = begin_frame(&mut out);
        encode_ops(&mut out, &ops).unwrap();
        finish_frame(&mut out, start, FrameKind::Write, 9, 4).unwrap();
        assert_eq!(out.len() % FRAME_ALIGNMENT_BYTES, 0);
        let FrameRead::Valid(frame) = read_frame(&out, start) else { panic!("frame must verify") };
        assert_eq!(
            (frame.kind, frame.lsn, frame.synced_lsn, frame.len),
            (FrameKind::Write, 9, 4, out.len() - 16)
        );
        let decoded = decode_ops::<BincodeValues<String, u64>>(frame.payload).unwrap();
        assert_eq!(format!("{decoded:?}"), format!("{ops:?}"));
        assert!(matches!(read_frame(&out, out.len()), FrameRead::Zero));
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let mut out = Vec::new();
        let start = begin_frame(&mut out);
        encode_ops(&mut out, &sample_ops()).unwrap();
        finish_frame(&mut out, start, FrameKind::Write, 2, 1).unwrap();
        for bit in 0..out.len() * 8 {
            let mut flipped = out.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(
                matches!(read_frame(&flipped, 0), FrameRead::Invalid(_)),
                "flip of bit {bit} went unnoticed"
            );
        }
    }

    #[test]
    fn lengths_are_checked_before_use() {
        let mut out = Vec::new();
        let start = begin_frame(&mut out);
        encode_ops::<u64, u64>(&mut out, &[StorageOp::Trim(3)]).unwrap();
        finish_frame(&mut out, start, FrameKind::Write, 2, 1).unwrap();
        for cut in 1..out.len() {
            assert!(matches!(read_frame(&out[..cut], 0), FrameRead::Invalid(_)), "cut at {cut}");
        }
        let mut huge = out.clone();
        huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        let crc = crc32c::crc32c(&huge[..28]);
        huge[28..32].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(read_frame(&huge, 0), FrameRead::Invalid("frame length above the limit")));
        assert!(decode_ops::<RawValues>(&[255, 255, 255, 255]).is_err(), "op count bounded by payload");
    }

    #[test]
    fn segment_header_round_trips_and_refuses_other_versions() {
        let identity = Identity { cluster_id: 5, configuration_id: 2, node_id: 3 };
        for tag in ["", "u64", "entry=alloc::string::String snapshot=()"] {
            let header = SegmentHeader {
                segment_id: 12,
                identity,
                first_lsn: 40,
                preallocated_bytes: 4096,
                type_tag: tag.to_string(),
            };
            let bytes = encode_segment_header(&header);
            assert_eq!(bytes.len() % FRAME_ALIGNMENT_BYTES, 0);
            assert_eq!(decode_segment_header(&bytes), Ok((header.clone(), bytes.len())));
            for bit in 0..bytes.len() * 8 {
                let mut flipped = bytes.clone();
                flipped[bit / 8] ^= 1 << (bit % 8);
                assert!(
                    decode_segment_header(&flipped).is_err(),
                    "flip of bit {bit} of the header went unnoticed"
                );
            }
        }
        // A version-1 header (checksum at 60..64) is named as such; other versions too.
        let mut version_1 = vec![0u8; 64];
        version_1[0..8].copy_from_slice(&SEGMENT_MAGIC);
        version_1[8..12].copy_from_slice(&1u32.to_le_bytes());
        let crc = crc32c::crc32c(&version_1[..60]);
        version_1[60..64].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode_segment_header(&version_1), Err(HeaderError::UnsupportedVersion(1)));
        version_1[8] = 3;
        assert_eq!(decode_segment_header(&version_1), Err(HeaderError::UnsupportedVersion(3)));
        version_1[0] = b'X';
        assert!(matches!(decode_segment_header(&version_1), Err(HeaderError::Corrupt(_))));
    }

    #[test]
    fn fill_differs_per_segment_and_offset_and_never_decodes() {
        let mut a = vec![0u8; 4096];
        let mut b = vec![0u8; 4096];
        fill_bytes(1, 0, &mut a);
        fill_bytes(2, 0, &mut b);
        assert_ne!(a, b);
        assert!(a.chunks(8).zip(b.chunks(8)).all(|(x, y)| x != y));
        for offset in (0..4096).step_by(FRAME_ALIGNMENT_BYTES) {
            assert!(is_fill(1, offset as u64, &a[offset..offset + 8]));
            assert!(!is_fill(1, offset as u64, &[0; 8]), "zeros are never fill");
            assert!(matches!(read_frame(&a, offset), FrameRead::Invalid(_)));
        }
        let mut shifted = vec![0u8; 16];
        fill_bytes(1, 8, &mut shifted);
        assert_eq!(&shifted[..], &a[8..24]);
    }

    #[test]
    fn small_frames_and_checkpoints_round_trip() {
        let mut out = Vec::new();
        encode_frame(&mut out, FrameKind::Seal, 7, 6, &seal_payload(9));
        assert_eq!(out.len(), SEAL_FRAME_BYTES);
        encode_frame(&mut out, FrameKind::Loss, 8, 6, &loss_payload(LossCause::DamagedTail));
        encode_frame(&mut out, FrameKind::Close, 9, 8, &[]);
        let FrameRead::Valid(seal) = read_frame(&out, 0) else { panic!("seal") };
        assert_eq!((seal.kind, decode_seal(seal.payload)), (FrameKind::Seal, Ok(9)));
        let FrameRead::Valid(loss) = read_frame(&out, seal.len) else { panic!("loss") };
        assert_eq!(decode_loss(loss.payload), Ok(LossCause::DamagedTail));
        let FrameRead::Valid(close) = read_frame(&out, seal.len + loss.len) else { panic!("close") };
        assert_eq!((close.kind, close.payload.len(), close.len), (FrameKind::Close, 0, FRAME_HEADER_BYTES));
        let checkpoint = Checkpoint {
            compacted_idx: 1,
            log_end: 4,
            decided_idx: 2,
            incarnation: 3,
            promise: Some(Ballot::with(1, 2, 3, 4)),
            accepted_round: None,
            stopsign: None,
            snapshot: Some(&5u64),
            possible_loss: Some(PossibleLoss { lsn: 11, cause: LossCause::LogReplaced }),
        };
        let mut payload = Vec::new();
        encode_checkpoint(&mut payload, &checkpoint).unwrap();
        let decoded = decode_checkpoint::<BincodeValues<u64, u64>>(&payload).unwrap();
        assert_eq!(decoded.possible_loss, checkpoint.possible_loss);
        assert_eq!(decoded.snapshot, Some(5));
    }
}
