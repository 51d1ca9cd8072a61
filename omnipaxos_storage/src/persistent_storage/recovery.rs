//! Recovery: reads a data directory, verifies every frame, decides where the log ends and what
//! that ending means, and replays the log into a [`LogState`].
//!
//! ```text
//!  list files ─► segments wal-N.log (longest run of consecutive ids) + strays (*.tmp, older)
//!  per segment: header (magic, version, owner, value type, id, size) ─► checkpoint ─► frames
//!  a segment that is not the last must end with a Seal naming the next one, except:
//!     unsealed, and the next (last) holds only its checkpoint ─► interrupted roll: the next
//!                                                                is a stray, this one is last
//!  the last segment ends with a Seal ─────────────────────────► MissingSegment (tail deleted)
//!  first position X in the last segment without a valid, in-sequence frame:
//!     only unwritten space (fill pattern, or end of file) from X ───► clean end
//!     a later valid frame has synced_lsn >= lsn(X) ──────────────► Corrupt(file, X)
//!     preallocated range, zeros where a frame header must be ──────► Corrupt(file, X)
//!     the frame at X is incomplete (holds fill, or the file ends) ─► Torn: never acknowledged
//!     otherwise (complete, fails its checksum) ───────────────────► PossibleLoss
//!  at the end: a live entry that lived in a deleted segment ──────► Corrupt
//! ```
//!
//! Reads stop at the end of the data: a sealed segment is read up to its Seal, the last one up
//! to a run of [`TAIL_SCAN_FILL_RUN_BYTES`] of unwritten space, so opening an empty 64 MiB
//! segment reads one [`READ_CHUNK_FIRST_BYTES`] chunk.
//!
//! In [`Mode::Repair`] (opening for writes) recovery also refills a dropped tail with the fill
//! pattern (writing a Loss frame first where acknowledged data may have been lost, so the
//! signal survives a crash right after the open) and syncs the last segment (unless every
//! state-changing frame is proven synced by a later frame's `synced_lsn`: after a clean close,
//! or in an empty log), so that everything recovered is durable before the replica acts on it
//! and a later crash cannot resurrect a dropped frame; it removes strays (and syncs the directory), except a prepared
//! next segment, which it keeps for reuse.

use std::{
    io,
    path::{Path, PathBuf},
};

use super::{
    format::{
        decode_checkpoint, decode_loss, decode_ops, decode_prepared_marker, decode_seal,
        decode_segment_header, encode_frame, fill_bytes, is_fill, loss_payload, padded, read_frame,
        Checkpoint, Frame, FrameKind, FrameRead, HeaderError, Identity, LossCause, PossibleLoss,
        ValueDecoder, FRAME_ALIGNMENT_BYTES, FRAME_HEADER_BYTES, PREPARED_MARKER_BYTES,
        RECORD_PAYLOAD_MAX_BYTES, SEGMENT_HEADER_MAX_BYTES,
    },
    fs::{FileSystem, WalFile},
    state::{LogState, SegmentId},
    OpenError,
};

/// Bytes of the first read of a segment file; each further read doubles, up to
/// [`READ_CHUNK_MAX_BYTES`], so an empty segment costs one small read and a full one few calls.
pub const READ_CHUNK_FIRST_BYTES: usize = 128 << 10;
/// The largest read of a segment file.
pub const READ_CHUNK_MAX_BYTES: usize = 4 << 20;
/// After the last frame of the last segment, recovery reads on until it has seen this many
/// consecutive bytes of unwritten space (or the end of the file): torn writes and frames that
/// could prove damage lie within the last batch, which is contiguous.
pub const TAIL_SCAN_FILL_RUN_BYTES: u64 = 64 << 10;
/// A segment reader drops the bytes it has passed once they exceed this.
const READER_COMPACT_BYTES: usize = READ_CHUNK_MAX_BYTES;

/// Whether recovery may change the directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Opening for writes: remove strays, refill a dropped tail, record a possible loss, sync.
    Repair,
    /// Verification only: read, never write.
    ReadOnly,
}

/// The file name of segment `id`.
pub fn segment_file_name(id: SegmentId) -> String {
    format!("wal-{id:016x}.log")
}

/// The temporary name a segment has until it is complete and synced.
pub fn temporary_file_name(id: SegmentId) -> String {
    format!("wal-{id:016x}.tmp")
}

/// Parses a segment (`false`) or temporary (`true`) file name.
pub fn parse_file_name(name: &str) -> Option<(SegmentId, bool)> {
    let rest = name.strip_prefix("wal-")?;
    let (hex, temporary) = match (rest.strip_suffix(".log"), rest.strip_suffix(".tmp")) {
        (Some(hex), _) => (hex, false),
        (_, Some(hex)) => (hex, true),
        _ => return None,
    };
    if hex.len() != 16 {
        return None;
    }
    Some((u64::from_str_radix(hex, 16).ok()?, temporary))
}

/// A retained segment as recovery found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The segment id.
    pub id: SegmentId,
    /// The file.
    pub path: PathBuf,
    /// Where the next frame would start: the end of the valid frames.
    pub end_offset: u64,
    /// The file's length (larger than `end_offset` when preallocated).
    pub file_bytes: u64,
    /// The size it was preallocated to (0: not preallocated).
    pub preallocated_bytes: u64,
    /// The lsn of the segment's checkpoint.
    pub first_lsn: u64,
    /// The lsn of its last valid frame.
    pub last_lsn: u64,
    /// True if it ends with a Seal naming the next segment.
    pub sealed: bool,
    /// The lsn of its last frame whose loss would matter (Write, Loss, LossResolved, Seal); 0
    /// if none. Checkpoints are synced before their segment gets its name; a Close frame
    /// carries no state.
    pub last_vital_lsn: u64,
}

/// How the last segment ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tail {
    /// After the last valid frame there is only unwritten space.
    Clean,
    /// The frame at `offset` is incomplete: part of it was never written (it still holds the
    /// fill pattern, or the file ends inside it). A synced frame is complete, so it was torn
    /// by a crash during its write and never acknowledged. It and everything after it is
    /// dropped.
    Torn {
        /// The last segment.
        file: PathBuf,
        /// Where the first bad frame starts.
        offset: u64,
        /// Bytes from there to the end of the written region (what repair refills).
        bytes: u64,
        /// The check the first bad frame failed.
        reason: &'static str,
    },
    /// The frame at `offset` is complete but fails verification, and nothing after it proves
    /// whether it was synced: a crash during its write damaged it (never acknowledged), or
    /// acknowledged data was damaged. The storage cannot tell: **acknowledged data may be
    /// lost**. It and everything after it is dropped, and opening for writes records the
    /// possible loss in the log (see [`super::OpenReport::acknowledged_state_may_be_lost`]).
    PossibleLoss {
        /// The last segment.
        file: PathBuf,
        /// Where the first bad frame starts.
        offset: u64,
        /// Bytes from there to the end of the written region.
        bytes: u64,
        /// The lsn the bad frame would have had: frames from it on may be lost.
        lsn: u64,
        /// The check the frame failed.
        reason: &'static str,
    },
}

impl Tail {
    /// True if dropping this tail may have dropped acknowledged data.
    pub fn may_have_lost_acknowledged_data(&self) -> bool {
        matches!(self, Tail::PossibleLoss { .. })
    }
}

/// One verified frame, as recovery passes it to an observer (the dump tool).
#[derive(Clone, Copy, Debug)]
pub struct FrameView<'a> {
    /// The segment file.
    pub file: &'a Path,
    /// The frame's offset in it.
    pub offset: u64,
    /// The frame.
    pub frame: Frame<'a>,
}

/// What the directory must hold to be opened.
#[derive(Clone, Copy, Debug, Default)]
pub struct Expected<'a> {
    /// The owner every segment header must name (`None`: any, the same in every segment).
    pub identity: Option<Identity>,
    /// The value type tag every segment header must carry (`None`: any).
    pub type_tag: Option<&'a str>,
    /// In repair mode, a `.tmp` of the segment after the last one that is prepared (filled
    /// to this size, durably, and marked) is kept for reuse instead of removed as a stray.
    pub prepared_segment_bytes: Option<u64>,
}

/// The result of recovery.
#[derive(Debug)]
pub struct Recovered<E, S, W> {
    /// The directory's owner, from the segment headers.
    pub identity: Identity,
    /// The value type tag, from the segment headers.
    pub type_tag: String,
    /// The replayed state.
    pub state: LogState<E, S>,
    /// The retained segments, oldest first.
    pub segments: Vec<SegmentInfo>,
    /// The lsn of the last valid frame (after repair: of the Loss frame it wrote).
    pub last_lsn: u64,
    /// In repair mode, every frame up to this lsn is durable (`last_lsn`, or one less when a
    /// final Close frame was neither synced by repair nor vouched for by a later frame).
    pub synced_lsn: u64,
    /// How the log ends.
    pub tail: Tail,
    /// True if the last frame is a Close frame: nothing was written since a clean close.
    pub last_session_closed: bool,
    /// Files recovery does not use: `*.tmp` leftovers of an interrupted segment creation,
    /// segments older than a gap (left by an interrupted deletion), and the new segment of an
    /// interrupted roll. Removed in repair mode.
    pub strays: Vec<PathBuf>,
    /// In repair mode, the last segment opened for writes.
    pub active_file: Option<W>,
    /// In repair mode, the prepared next segment kept for reuse (see
    /// [`Expected::prepared_segment_bytes`]), open for writes.
    pub prepared_file: Option<W>,
}

/// What [`recover`] returns for a value decoder `D` and a file system `F`.
pub type RecoveredWith<D, F> =
    Recovered<<D as ValueDecoder>::Entry, <D as ValueDecoder>::Snapshot, <F as FileSystem>::File>;

fn corrupt(file: &Path, offset: u64, reason: &'static str) -> OpenError {
    OpenError::Corrupt { file: file.to_path_buf(), offset, reason }
}

fn io_error<'a>(operation: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> OpenError + 'a {
    move |source| OpenError::Io { operation, path: path.to_path_buf(), source }
}

/// Reads a segment file through a window that moves forward, so recovery holds at most a few
/// MiB of a segment and reads nothing past the end of its data.
struct SegmentReader<W> {
    file: W,
    size: u64,
    buffer: Vec<u8>,
    /// The file offset of `buffer[0]`.
    start: u64,
    /// Bytes of `buffer` read from the file.
    filled: usize,
    /// The size of the next read.
    chunk: usize,
}

impl<W: WalFile> SegmentReader<W> {
    fn open<F: FileSystem<File = W>>(fs: &F, path: &Path) -> Result<Self, OpenError> {
        let mut file = fs.open_for_read(path).map_err(io_error("open", path))?;
        let size = file.size_bytes().map_err(io_error("inspect", path))?;
        Ok(SegmentReader {
            file,
            size,
            buffer: Vec::new(),
            start: 0,
            filled: 0,
            chunk: READ_CHUNK_FIRST_BYTES,
        })
    }

    /// The bytes `[offset, offset + len)`, fewer at the end of the file. `offset` must not be
    /// before the last [`SegmentReader::release_before`].
    fn window(&mut self, offset: u64, len: usize) -> io::Result<&[u8]> {
        assert!(offset >= self.start, "the window only moves forward");
        let end = offset.saturating_add(len as u64).min(self.size);
        let loaded_end = self.start + self.filled as u64;
        if end > loaded_end {
            let want_end = end.max(loaded_end + self.chunk as u64).min(self.size);
            self.chunk = (self.chunk * 2).min(READ_CHUNK_MAX_BYTES);
            let want = usize::try_from(want_end - self.start).expect("a window fits in memory");
            if self.buffer.len() < want {
                self.buffer.resize(want, 0);
            }
            let read = self.file.read_at(loaded_end, &mut self.buffer[self.filled..want])?;
            self.filled += read;
            if self.filled < want {
                // The file shrank while it was read (a live writer's repair, or damage).
                self.size = self.start + self.filled as u64;
            }
        }
        let from = usize::try_from(offset.min(self.size) - self.start).expect("in the window");
        let to = usize::try_from(end.min(self.size) - self.start).expect("in the window");
        Ok(&self.buffer[from..to])
    }

    /// The bytes before `offset` are not needed again.
    fn release_before(&mut self, offset: u64) {
        let passed =
            usize::try_from(offset.saturating_sub(self.start)).expect("in the window").min(self.filled);
        if passed >= READER_COMPACT_BYTES {
            self.buffer.copy_within(passed..self.filled, 0);
            self.filled -= passed;
            self.start += passed as u64;
        }
    }

    /// Reads the frame at `offset`: the header first, the payload only if the header verifies.
    fn frame_at(&mut self, offset: u64) -> io::Result<FrameRead<'_>> {
        let length = claimed_frame_bytes(self.window(offset, FRAME_HEADER_BYTES)?);
        Ok(read_frame(self.window(offset, length.unwrap_or(FRAME_HEADER_BYTES))?, 0))
    }
}

/// The length a frame header claims, if the header verifies and the length is within limits.
fn claimed_frame_bytes(header: &[u8]) -> Option<usize> {
    if header.len() < FRAME_HEADER_BYTES {
        return None;
    }
    let crc = u32::from_le_bytes(header[28..32].try_into().expect("4 bytes"));
    let payload = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
    (crc32c::crc32c(&header[..28]) == crc && payload <= RECORD_PAYLOAD_MAX_BYTES)
        .then(|| FRAME_HEADER_BYTES + padded(payload))
}

/// How a segment's frames ended.
#[derive(Clone, Copy, Debug)]
enum SegmentEnd {
    /// With a Seal naming the next segment.
    Sealed,
    /// At `offset`, the first position without a valid, in-sequence frame, for `reason`.
    Open { offset: u64, reason: &'static str },
}

/// Recovers the directory `dir`; `Ok(None)` if it holds no segment.
pub fn recover<D: ValueDecoder, F: FileSystem>(
    fs: &F,
    dir: &Path,
    expected: Expected<'_>,
    mode: Mode,
    observe: &mut dyn FnMut(FrameView<'_>),
) -> Result<Option<RecoveredWith<D, F>>, OpenError> {
    let names = fs.list_files(dir).map_err(io_error("list", dir))?;
    let (mut ids, mut strays) = classify_files(dir, &names);
    if ids.is_empty() {
        remove_strays(fs, dir, &strays, mode)?;
        return Ok(None);
    }
    let mut replay = Replay::<D>::new(expected);
    let mut tail = Tail::Clean;
    let mut position = 0;
    while position < ids.len() {
        let id = ids[position];
        let path = dir.join(segment_file_name(id));
        let mut reader = SegmentReader::open(fs, &path)?;
        match replay.segment(id, &path, &mut reader, observe)? {
            SegmentEnd::Sealed if position + 1 == ids.len() => {
                let missing = dir.join(segment_file_name(id + 1));
                return Err(OpenError::MissingSegment { sealed: path, missing });
            }
            SegmentEnd::Sealed => {}
            SegmentEnd::Open { offset, reason } => {
                let unsealed = UnsealedEnd { offset, reason, position };
                tail =
                    end_of_unsealed_segment(fs, dir, &mut ids, &mut strays, &replay, &mut reader, unsealed)?;
            }
        }
        position += 1;
    }
    let Replay { state, identity, type_tag, segments, last_lsn, max_synced_claim, last_kind, .. } = replay;
    let state = state.expect("every segment starts with a checkpoint");
    if !state.is_complete() {
        return Err(corrupt(&segments[0].path, 0, "live entries are missing: they were in a lost segment"));
    }
    strays.sort();
    let mut recovered = Recovered {
        identity: identity.expect("a segment header was read"),
        type_tag: type_tag.expect("a segment header was read"),
        state,
        segments,
        last_lsn,
        synced_lsn: last_lsn,
        tail,
        last_session_closed: last_kind == Some(FrameKind::Close),
        strays,
        active_file: None,
        prepared_file: None,
    };
    if mode == Mode::Repair {
        make_durable(fs, dir, &mut recovered, max_synced_claim, expected.prepared_segment_bytes)?;
    }
    Ok(Some(recovered))
}

/// Repair mode: keeps a prepared next segment, syncs what is unproven, repairs the tail,
/// removes strays, and opens the last segment for writes.
fn make_durable<E, S, F: FileSystem>(
    fs: &F,
    dir: &Path,
    recovered: &mut Recovered<E, S, F::File>,
    max_synced_claim: u64,
    prepared_segment_bytes: Option<u64>,
) -> Result<(), OpenError> {
    let segments = &mut recovered.segments;
    let next_id = segments.last().expect("at least one segment").id + 1;
    if let Some(size) = prepared_segment_bytes {
        recovered.prepared_file = take_prepared(fs, dir, &mut recovered.strays, next_id, size)?;
    }
    // Frames that matter and that no later frame proves synced may live only in the page cache
    // of a crashed process: they are synced before anyone acts on them. That is the last
    // segment, and the one before it if the process died inside a roll (the new segment exists
    // before the old one's last frames and Seal are synced).
    let (last, earlier) = segments.split_last_mut().expect("at least one segment");
    for unproven in earlier.iter().filter(|segment| segment.last_vital_lsn > max_synced_claim) {
        let mut file = fs.open_for_write(&unproven.path).map_err(io_error("open", &unproven.path))?;
        file.sync_data().map_err(io_error("sync", &unproven.path))?;
    }
    let unproven = last.last_vital_lsn > max_synced_claim;
    let repaired = repair(fs, dir, last, &recovered.tail, &recovered.strays, max_synced_claim, unproven)?;
    if let Some(loss) = repaired.loss {
        recovered.last_lsn = loss.lsn;
        recovered.state.possible_loss = Some(loss);
    }
    // A final Close frame that repair did not sync is not claimed synced by the next session.
    recovered.synced_lsn = match repaired.synced || !recovered.last_session_closed {
        true => recovered.last_lsn,
        false => recovered.last_lsn - 1,
    };
    recovered.active_file = Some(repaired.file);
    Ok(())
}

/// If `strays` holds the `.tmp` of segment `id`, filled to `size` bytes and marked prepared,
/// takes it out of `strays` and opens it for writes.
fn take_prepared<F: FileSystem>(
    fs: &F,
    dir: &Path,
    strays: &mut Vec<PathBuf>,
    id: SegmentId,
    size: u64,
) -> Result<Option<F::File>, OpenError> {
    let path = dir.join(temporary_file_name(id));
    let Some(position) = strays.iter().position(|stray| *stray == path) else { return Ok(None) };
    let mut file = fs.open_for_write(&path).map_err(io_error("open", &path))?;
    let mut marker = [0u8; PREPARED_MARKER_BYTES];
    let read = file.read_at(0, &mut marker).map_err(io_error("read", &path))?;
    let file_bytes = file.size_bytes().map_err(io_error("inspect", &path))?;
    if read == marker.len() && decode_prepared_marker(&marker) == Some((id, size)) && file_bytes == size {
        strays.remove(position);
        return Ok(Some(file));
    }
    Ok(None)
}

/// Where and why a segment's frames ended without a Seal.
struct UnsealedEnd {
    offset: u64,
    reason: &'static str,
    /// The segment's position in `ids`.
    position: usize,
}

/// Decides how an unsealed segment ends. Only the last segment may be unsealed, or the one
/// before it if the last holds nothing but its checkpoint (an interrupted roll: the last
/// becomes a stray, `ids` is cut). Returns the tail.
fn end_of_unsealed_segment<D: ValueDecoder, F: FileSystem>(
    fs: &F,
    dir: &Path,
    ids: &mut Vec<SegmentId>,
    strays: &mut Vec<PathBuf>,
    replay: &Replay<'_, D>,
    reader: &mut SegmentReader<F::File>,
    end: UnsealedEnd,
) -> Result<Tail, OpenError> {
    let segment = replay.segments.last().expect("this segment");
    let mut only_the_seal_is_missing = false;
    if end.position + 1 < ids.len() {
        let next_id = ids[end.position + 1];
        let next = dir.join(segment_file_name(next_id));
        let checkpoint_lsn = match end.position + 2 == ids.len() {
            true => checkpoint_only_lsn(fs, &next, next_id)?,
            false => None,
        };
        let Some(checkpoint_lsn) = checkpoint_lsn else {
            return Err(corrupt(
                &segment.path,
                end.offset,
                "segment is not sealed, but a later segment holds frames",
            ));
        };
        strays.push(next);
        ids.truncate(end.position + 1);
        // The new segment's checkpoint follows the seal: if it names the lsn after the next
        // one, every frame but the seal is here, and the bad bytes can only be the seal.
        only_the_seal_is_missing = checkpoint_lsn == replay.last_lsn + 2;
    }
    let tail = classify_tail(reader, segment, end.offset, replay.last_lsn + 1, end.reason)?;
    Ok(match tail {
        Tail::PossibleLoss { file, offset, bytes, .. } if only_the_seal_is_missing => {
            Tail::Torn { file, offset, bytes, reason: "the seal of an interrupted roll fails verification" }
        }
        tail => tail,
    })
}

/// Splits file names into the ids of the segments to replay (the longest run of consecutive
/// ids ending at the newest) and stray files.
fn classify_files(dir: &Path, names: &[String]) -> (Vec<SegmentId>, Vec<PathBuf>) {
    let mut ids = Vec::new();
    let mut strays = Vec::new();
    for name in names {
        match parse_file_name(name) {
            Some((id, false)) => ids.push(id),
            Some((_, true)) => strays.push(dir.join(name)),
            None => {}
        }
    }
    ids.sort_unstable();
    let mut first_kept = ids.len().saturating_sub(1);
    while first_kept > 0 && ids[first_kept - 1] + 1 == ids[first_kept] {
        first_kept -= 1;
    }
    for older in ids.drain(..first_kept) {
        strays.push(dir.join(segment_file_name(older)));
    }
    (ids, strays)
}

fn remove_strays<F: FileSystem>(fs: &F, dir: &Path, strays: &[PathBuf], mode: Mode) -> Result<(), OpenError> {
    if mode == Mode::ReadOnly || strays.is_empty() {
        return Ok(());
    }
    for stray in strays {
        fs.remove_file(stray).map_err(io_error("remove", stray))?;
    }
    fs.sync_dir(dir).map_err(io_error("sync directory", dir))
}

/// If segment `id` at `path` holds a valid checkpoint frame and nothing after it (the new
/// segment of a roll whose seal never became durable), the checkpoint's lsn.
fn checkpoint_only_lsn<F: FileSystem>(fs: &F, path: &Path, id: SegmentId) -> Result<Option<u64>, OpenError> {
    let mut reader = SegmentReader::open(fs, path)?;
    let head = reader.window(0, SEGMENT_HEADER_MAX_BYTES).map_err(io_error("read", path))?;
    let Ok((header, header_bytes)) = decode_segment_header(head) else { return Ok(None) };
    let (after, lsn) = match reader.frame_at(header_bytes as u64).map_err(io_error("read", path))? {
        FrameRead::Valid(frame) if frame.kind == FrameKind::Checkpoint && header.segment_id == id => {
            ((header_bytes + frame.len) as u64, frame.lsn)
        }
        _ => return Ok(None),
    };
    let written_end = scan_written_end(&mut reader, id, after).map_err(io_error("read", path))?;
    Ok((written_end == after).then_some(lsn))
}

/// From the aligned offset `from`, finds the end of the written region: the end of the last
/// word that is not unwritten space, looking until [`TAIL_SCAN_FILL_RUN_BYTES`] of unwritten
/// space in a row or the end of the file. Unwritten space is the segment's fill pattern
/// (anywhere: a repaired tail is refilled) or, beyond the preallocated size, nothing at all;
/// zeros are written bytes (beyond the preallocated size they may be a torn extension).
fn scan_written_end<W: WalFile>(
    reader: &mut SegmentReader<W>,
    segment_id: SegmentId,
    from: u64,
) -> io::Result<u64> {
    let word = FRAME_ALIGNMENT_BYTES as u64;
    let mut offset = from;
    let mut written_end = from;
    while offset < reader.size && offset - written_end < TAIL_SCAN_FILL_RUN_BYTES {
        let window = reader.window(offset, TAIL_SCAN_FILL_RUN_BYTES as usize)?;
        let count = window.len() as u64;
        for (index, bytes) in window.chunks(FRAME_ALIGNMENT_BYTES).enumerate() {
            let at = offset + index as u64 * word;
            if !is_fill(segment_id, at, bytes) {
                written_end = at + bytes.len() as u64;
            } else if at + word - written_end >= TAIL_SCAN_FILL_RUN_BYTES {
                return Ok(written_end);
            }
        }
        offset += count;
    }
    Ok(written_end)
}

/// Decides what the bytes from `offset` in the last segment mean (see the module docs).
fn classify_tail<W: WalFile>(
    reader: &mut SegmentReader<W>,
    segment: &SegmentInfo,
    offset: u64,
    lsn: u64,
    reason: &'static str,
) -> Result<Tail, OpenError> {
    let path = &segment.path;
    let read = |error| OpenError::Io { operation: "read", path: path.clone(), source: error };
    let written_end = scan_written_end(reader, segment.id, offset).map_err(read)?;
    if written_end == offset {
        return Ok(Tail::Clean);
    }
    if later_frame_proves_synced(reader, offset, written_end, lsn).map_err(read)? {
        return Err(corrupt(path, offset, "frame fails verification but a later frame proves it was synced"));
    }
    let header = reader.window(offset, FRAME_HEADER_BYTES).map_err(read)?;
    let in_preallocated = offset + FRAME_HEADER_BYTES as u64 <= segment.preallocated_bytes;
    if in_preallocated && header.len() == FRAME_HEADER_BYTES && header.iter().all(|byte| *byte == 0) {
        return Err(corrupt(
            path,
            offset,
            "zeros where the next frame or unwritten space must be: written frames were erased",
        ));
    }
    // A frame whose header does not verify: look at it and the first payload word.
    let extent = claimed_frame_bytes(header).unwrap_or(FRAME_HEADER_BYTES + FRAME_ALIGNMENT_BYTES) as u64;
    let bytes = written_end - offset;
    let frame = reader.window(offset, extent as usize).map_err(read)?;
    let incomplete = (frame.len() as u64) < extent
        || frame
            .chunks(FRAME_ALIGNMENT_BYTES)
            .enumerate()
            .any(|(index, word)| is_fill(segment.id, offset + (index * FRAME_ALIGNMENT_BYTES) as u64, word));
    Ok(if incomplete {
        Tail::Torn { file: path.clone(), offset, bytes, reason }
    } else {
        Tail::PossibleLoss { file: path.clone(), offset, bytes, lsn, reason }
    })
}

/// True if a valid frame in `(offset, end)` was written after the frame with `lsn` (or a later
/// one) had been synced: then the bad bytes at `offset` were synced too, and are corruption.
fn later_frame_proves_synced<W: WalFile>(
    reader: &mut SegmentReader<W>,
    offset: u64,
    end: u64,
    lsn: u64,
) -> io::Result<bool> {
    let mut candidate = offset + FRAME_ALIGNMENT_BYTES as u64;
    while candidate < end {
        if let FrameRead::Valid(frame) = reader.frame_at(candidate)? {
            if frame.synced_lsn >= lsn {
                return Ok(true);
            }
        }
        candidate += FRAME_ALIGNMENT_BYTES as u64;
    }
    Ok(false)
}

/// What repair did.
struct Repaired<W> {
    /// The last segment, open for writes.
    file: W,
    /// The possible loss it recorded with a Loss frame.
    loss: Option<PossibleLoss>,
    /// True if it synced the last segment.
    synced: bool,
}

/// Makes the recovered state durable and the tail clean before anything new is written: the
/// dropped tail is refilled with the fill pattern (after a Loss frame if acknowledged data may
/// be lost), the last segment synced, strays removed, the directory synced.
fn repair<F: FileSystem>(
    fs: &F,
    dir: &Path,
    last: &mut SegmentInfo,
    tail: &Tail,
    strays: &[PathBuf],
    max_synced_claim: u64,
    unproven: bool,
) -> Result<Repaired<F::File>, OpenError> {
    let mut file = fs.open_for_write(&last.path).map_err(io_error("open", &last.path))?;
    let mut loss = None;
    let mut sync = unproven;
    if let Tail::Torn { offset, bytes, .. } | Tail::PossibleLoss { offset, bytes, .. } = tail {
        sync = true;
        assert_eq!(*offset, last.end_offset, "the dropped tail starts where the valid frames end");
        let mut region = Vec::new();
        if let Tail::PossibleLoss { lsn, .. } = tail {
            // The claim of a frame that was written is true whether or not that frame is durable.
            let synced_lsn = max_synced_claim.min(lsn - 1);
            encode_frame(
                &mut region,
                FrameKind::Loss,
                *lsn,
                synced_lsn,
                &loss_payload(LossCause::DamagedTail),
            );
            loss = Some(PossibleLoss { lsn: *lsn, cause: LossCause::DamagedTail });
            last.last_lsn = *lsn;
        }
        let loss_bytes = region.len();
        let length = usize::try_from(*bytes).expect("a dropped tail fits in memory").max(loss_bytes);
        region.resize(padded(length), 0);
        fill_bytes(last.id, offset + loss_bytes as u64, &mut region[loss_bytes..]);
        file.write_all_at(*offset, &region).map_err(io_error("refill the dropped tail of", &last.path))?;
        last.end_offset += loss_bytes as u64;
    }
    if sync {
        file.sync_data().map_err(io_error("sync", &last.path))?;
    }
    // Syncs the directory if it removed anything. Nothing else needs it: every segment in the
    // run got its name before a directory sync (a roll syncs the directory before the Seal
    // that names the new segment), except the new segment of an interrupted roll, a stray.
    remove_strays(fs, dir, strays, Mode::Repair)?;
    Ok(Repaired { file, loss, synced: sync })
}

/// The replay across segments.
struct Replay<'e, D: ValueDecoder> {
    state: Option<LogState<D::Entry, D::Snapshot>>,
    identity: Option<Identity>,
    type_tag: Option<String>,
    expected: Expected<'e>,
    segments: Vec<SegmentInfo>,
    last_lsn: u64,
    /// The highest `synced_lsn` any valid frame claims.
    max_synced_claim: u64,
    last_kind: Option<FrameKind>,
    /// The lsn of the current segment's last Write, Loss, LossResolved or Seal frame (0: none).
    last_vital_lsn: u64,
}

impl<'e, D: ValueDecoder> Replay<'e, D> {
    fn new(expected: Expected<'e>) -> Self {
        Replay {
            state: None,
            identity: None,
            type_tag: None,
            expected,
            segments: Vec::new(),
            last_lsn: 0,
            max_synced_claim: 0,
            last_kind: None,
            last_vital_lsn: 0,
        }
    }

    /// Verifies and replays one segment's frames, up to its Seal or its first invalid position.
    fn segment<W: WalFile>(
        &mut self,
        id: SegmentId,
        path: &Path,
        reader: &mut SegmentReader<W>,
        observe: &mut dyn FnMut(FrameView<'_>),
    ) -> Result<SegmentEnd, OpenError> {
        let read = |error| OpenError::Io { operation: "read", path: path.to_path_buf(), source: error };
        let head = reader.window(0, SEGMENT_HEADER_MAX_BYTES).map_err(read)?;
        let (header, header_bytes) = decode_segment_header(head).map_err(|error| match error {
            HeaderError::Corrupt(reason) => corrupt(path, 0, reason),
            HeaderError::UnsupportedVersion(version) => {
                OpenError::UnsupportedVersion { file: path.to_path_buf(), version }
            }
        })?;
        if header.segment_id != id {
            return Err(corrupt(path, 0, "segment id in the header differs from the file name"));
        }
        self.check_owner(path, header.identity, &header.type_tag)?;
        if !self.segments.is_empty() && header.first_lsn != self.last_lsn + 1 {
            return Err(corrupt(path, 0, "segment does not continue the previous one's sequence"));
        }
        if reader.size < header.preallocated_bytes {
            return Err(corrupt(
                path,
                reader.size,
                "segment file is shorter than its preallocated size: truncated",
            ));
        }
        let start = header_bytes as u64;
        let mut offset = start;
        self.last_vital_lsn = 0;
        let mut expected_lsn = header.first_lsn;
        let end = loop {
            reader.release_before(offset);
            let frame = match reader.frame_at(offset).map_err(read)? {
                FrameRead::Valid(frame) if frame.lsn != expected_lsn => Err("frame out of sequence"),
                FrameRead::Valid(frame) if (frame.kind == FrameKind::Checkpoint) != (offset == start) => {
                    Err("checkpoint frame not at the start of its segment")
                }
                FrameRead::Valid(frame) => Ok(frame),
                FrameRead::Zero => Err("zeros where a frame header must be"),
                FrameRead::Invalid(reason) => Err(reason),
            };
            let frame = match frame {
                Ok(frame) => frame,
                Err(reason) => break SegmentEnd::Open { offset, reason },
            };
            let sealed = self.apply(id, path, offset, frame)?;
            observe(FrameView { file: path, offset, frame });
            self.last_lsn = frame.lsn;
            self.max_synced_claim = self.max_synced_claim.max(frame.synced_lsn);
            expected_lsn += 1;
            offset += frame.len as u64;
            if sealed {
                break SegmentEnd::Sealed;
            }
        };
        if offset == start {
            let SegmentEnd::Open { reason, .. } = end else { unreachable!("a seal is never first") };
            return Err(corrupt(path, offset, reason));
        }
        self.segments.push(SegmentInfo {
            id,
            path: path.to_path_buf(),
            end_offset: offset,
            file_bytes: reader.size,
            preallocated_bytes: header.preallocated_bytes,
            first_lsn: header.first_lsn,
            last_lsn: self.last_lsn,
            sealed: matches!(end, SegmentEnd::Sealed),
            last_vital_lsn: self.last_vital_lsn,
        });
        Ok(end)
    }

    fn check_owner(&mut self, path: &Path, found: Identity, type_tag: &str) -> Result<(), OpenError> {
        if let Some(expected) = self.expected.identity {
            if expected != found {
                return Err(OpenError::ForeignDirectory { file: path.to_path_buf(), expected, found });
            }
        }
        if let Some(expected) = self.expected.type_tag {
            if expected != type_tag {
                return Err(OpenError::ValueTypeMismatch {
                    file: path.to_path_buf(),
                    recorded: type_tag.to_owned(),
                    expected: expected.to_owned(),
                });
            }
        }
        if self.identity.is_some_and(|identity| identity != found)
            || self.type_tag.as_deref().is_some_and(|tag| tag != type_tag)
        {
            return Err(corrupt(path, 0, "segments of different owners or value types"));
        }
        self.identity = Some(found);
        self.type_tag = Some(type_tag.to_owned());
        Ok(())
    }

    /// Replays one verified frame; returns true for a Seal (the segment's last frame).
    fn apply(
        &mut self,
        id: SegmentId,
        path: &Path,
        offset: u64,
        frame: Frame<'_>,
    ) -> Result<bool, OpenError> {
        self.last_kind = Some(frame.kind);
        if !matches!(frame.kind, FrameKind::Checkpoint | FrameKind::Close) {
            self.last_vital_lsn = frame.lsn;
        }
        let bad = |reason| corrupt(path, offset, reason);
        match frame.kind {
            FrameKind::Checkpoint => {
                let checkpoint = decode_checkpoint::<D>(frame.payload).map_err(bad)?;
                match &self.state {
                    None => self.state = Some(LogState::from_checkpoint(checkpoint)),
                    Some(state) if !checkpoint_matches(state, &checkpoint) => {
                        return Err(bad("checkpoint disagrees with the replayed log"));
                    }
                    Some(_) => {}
                }
            }
            FrameKind::Write => {
                let ops = decode_ops::<D>(frame.payload).map_err(bad)?;
                let state = self.state.as_mut().expect("a checkpoint comes first");
                if state.validate(&ops).is_err() {
                    return Err(bad("frame's ops are outside the replayed log"));
                }
                for op in ops {
                    state.apply(op, id);
                }
            }
            FrameKind::Seal => {
                if decode_seal(frame.payload).map_err(bad)? != id + 1 {
                    return Err(bad("seal names a segment other than the next one"));
                }
                return Ok(true);
            }
            FrameKind::Close => {}
            FrameKind::Loss => {
                let cause = decode_loss(frame.payload).map_err(bad)?;
                let state = self.state.as_mut().expect("a checkpoint comes first");
                state.possible_loss = Some(PossibleLoss { lsn: frame.lsn, cause });
            }
            FrameKind::LossResolved => {
                self.state.as_mut().expect("a checkpoint comes first").possible_loss = None;
            }
        }
        Ok(false)
    }
}

/// The scalar fields of a later segment's checkpoint must equal the replayed state.
fn checkpoint_matches<E, S, C>(state: &LogState<E, S>, checkpoint: &Checkpoint<C>) -> bool {
    state.compacted_idx() == checkpoint.compacted_idx
        && state.log_end() == checkpoint.log_end
        && state.decided_idx == checkpoint.decided_idx
        && state.incarnation == checkpoint.incarnation
        && state.promise == checkpoint.promise
        && state.accepted_round == checkpoint.accepted_round
        && state.stopsign == checkpoint.stopsign
        && state.snapshot.is_some() == checkpoint.snapshot.is_some()
        && state.possible_loss == checkpoint.possible_loss
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip_and_gaps_make_strays() {
        assert_eq!(parse_file_name(&segment_file_name(0xab)), Some((0xab, false)));
        assert_eq!(parse_file_name(&temporary_file_name(7)), Some((7, true)));
        assert_eq!(parse_file_name("wal-12.log"), None);
        assert_eq!(parse_file_name("notes.txt"), None);
        let names: Vec<String> = [1, 3, 4, 5].iter().map(|id| segment_file_name(*id)).collect();
        let (ids, strays) = classify_files(Path::new("/d"), &names);
        assert_eq!(ids, vec![3, 4, 5]);
        assert_eq!(strays, vec![Path::new("/d").join(segment_file_name(1))]);
    }
}
