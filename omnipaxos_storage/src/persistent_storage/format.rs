//! The byte layout of segment files: segment header, frames, and frame payloads.
//!
//! Every integer is fixed-width little-endian. Entry, snapshot and StopSign values are encoded
//! with bincode 1 (fixed-width little-endian integers) inside a length-prefixed field; everything
//! around them is this module's own format, so `omnipaxos_wal_tool` can verify and dump a
//! directory without knowing the entry type. See `DESIGN.md` for the full picture.
//!
//! ```text
//! segment file: [ header 64 B ][ frame ][ frame ] ... [ zeros (preallocated) ]
//! frame:        [ header 32 B ][ payload ][ zero padding to a multiple of 8 ]
//! ```

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
/// The format this code writes and the only one it reads.
pub const FORMAT_VERSION: u32 = 1;
/// Size of the segment header; the first frame starts here.
pub const SEGMENT_HEADER_BYTES: usize = 64;
/// Size of a frame header.
pub const FRAME_HEADER_BYTES: usize = 32;
/// Frames start at multiples of this.
pub const FRAME_ALIGNMENT_BYTES: usize = 8;
/// Largest frame payload. Checked before allocating on read and before writing.
pub const RECORD_PAYLOAD_MAX_BYTES: usize = 1 << 30;

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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Segment ids are consecutive; the file name carries the same id.
    pub segment_id: u64,
    /// The directory's owner.
    pub identity: Identity,
    /// The lsn of the segment's first frame, its checkpoint.
    pub first_lsn: u64,
}

/// What a frame holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// The full non-entry state when the segment was started; the first frame of a segment.
    Checkpoint,
    /// The ops of one `write_atomically` call.
    Write,
}

impl FrameKind {
    fn code(self) -> u8 {
        match self {
            FrameKind::Checkpoint => 1,
            FrameKind::Write => 2,
        }
    }

    fn from_code(code: u8) -> Option<FrameKind> {
        match code {
            1 => Some(FrameKind::Checkpoint),
            2 => Some(FrameKind::Write),
            _ => None,
        }
    }
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
    /// Zeros (or nothing) where a header would start: the end of written data.
    Zero,
    /// Anything else: torn, partial or corrupt. The reason names the failed check.
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

/// Encodes a segment header.
pub fn encode_segment_header(header: &SegmentHeader) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut bytes = [0u8; SEGMENT_HEADER_BYTES];
    bytes[0..8].copy_from_slice(&SEGMENT_MAGIC);
    bytes[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes[12..16].copy_from_slice(&(SEGMENT_HEADER_BYTES as u32).to_le_bytes());
    bytes[16..24].copy_from_slice(&header.segment_id.to_le_bytes());
    bytes[24..32].copy_from_slice(&header.identity.cluster_id.to_le_bytes());
    bytes[32..40].copy_from_slice(&header.identity.node_id.to_le_bytes());
    bytes[40..44].copy_from_slice(&header.identity.configuration_id.to_le_bytes());
    bytes[48..56].copy_from_slice(&header.first_lsn.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[..60]);
    bytes[60..64].copy_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(decode_segment_header(&bytes), Ok(*header));
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

/// Decodes and verifies a segment header.
pub fn decode_segment_header(bytes: &[u8]) -> Result<SegmentHeader, HeaderError> {
    if bytes.len() < SEGMENT_HEADER_BYTES {
        return Err(HeaderError::Corrupt("file shorter than a segment header"));
    }
    if bytes[0..8] != SEGMENT_MAGIC {
        return Err(HeaderError::Corrupt("bad segment magic"));
    }
    if crc32c::crc32c(&bytes[..60]) != u32_at(bytes, 60) {
        return Err(HeaderError::Corrupt("segment header checksum mismatch"));
    }
    let version = u32_at(bytes, 8);
    if version != FORMAT_VERSION {
        return Err(HeaderError::UnsupportedVersion(version));
    }
    if u32_at(bytes, 12) as usize != SEGMENT_HEADER_BYTES {
        return Err(HeaderError::Corrupt("unexpected segment header size"));
    }
    let identity = Identity {
        cluster_id: u64_at(bytes, 24),
        node_id: u64_at(bytes, 32),
        configuration_id: u32_at(bytes, 40),
    };
    Ok(SegmentHeader { segment_id: u64_at(bytes, 16), identity, first_lsn: u64_at(bytes, 48) })
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
    put_optional_value(out, &checkpoint.snapshot, "snapshot")
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
        let header = SegmentHeader { segment_id: 12, identity, first_lsn: 40 };
        let mut bytes = encode_segment_header(&header);
        assert_eq!(decode_segment_header(&bytes), Ok(header));
        bytes[8] = 2;
        let crc = crc32c::crc32c(&bytes[..60]);
        bytes[60..64].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode_segment_header(&bytes), Err(HeaderError::UnsupportedVersion(2)));
        bytes[0] = b'X';
        assert!(matches!(decode_segment_header(&bytes), Err(HeaderError::Corrupt(_))));
    }
}
