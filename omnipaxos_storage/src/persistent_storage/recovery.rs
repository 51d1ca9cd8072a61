//! Recovery: reads a data directory, verifies every frame, decides where the log ends, and
//! replays it into a [`LogState`].
//!
//! ```text
//!  list files ─► segments wal-N.log (longest run of consecutive ids) + strays (*.tmp, older)
//!  per segment: header (magic, version, identity, id) ─► checkpoint frame ─► write frames
//!  first frame that is not valid and in sequence, at offset X:
//!     sealed segment (not the last) ─────────────────────────────► Corrupt(file, X)
//!     last segment, a later valid frame has synced_lsn >= lsn(X) ─► Corrupt(file, X)
//!     last segment, otherwise ───────────────────────────────────► torn tail: dropped
//!  at the end: a live entry that lived in a deleted segment ─────► Corrupt
//! ```
//!
//! In [`Mode::Repair`] (opening for writes) recovery also removes strays, zeroes a torn tail,
//! and syncs the last segment and the directory, so that everything recovered is durable
//! before the replica acts on it, and a later crash cannot resurrect a dropped frame.

use std::path::{Path, PathBuf};

use super::{
    format::{
        decode_checkpoint, decode_ops, decode_segment_header, read_frame, Checkpoint, Frame, FrameKind,
        FrameRead, HeaderError, Identity, ValueDecoder, FRAME_ALIGNMENT_BYTES, SEGMENT_HEADER_BYTES,
    },
    fs::{FileSystem, WalFile},
    state::{LogState, SegmentId},
    OpenError,
};

/// Whether recovery may change the directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Opening for writes: remove strays, zero a torn tail, sync.
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

fn parse_file_name(name: &str) -> Option<(SegmentId, bool)> {
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
    /// The lsn of the segment's checkpoint.
    pub first_lsn: u64,
    /// The lsn of its last valid frame.
    pub last_lsn: u64,
}

/// How the last segment ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tail {
    /// After the last valid frame there are only zeros.
    Clean,
    /// A frame that was never acknowledged (its sync had not returned) was torn by a crash; it
    /// and everything after it is dropped.
    Torn {
        /// The last segment.
        file: PathBuf,
        /// Where the first bad frame starts.
        offset: u64,
        /// Bytes from there to the last non-zero byte (what repair zeroes).
        bytes: u64,
        /// The check the first bad frame failed.
        reason: &'static str,
    },
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

/// The result of recovery.
#[derive(Debug)]
pub struct Recovered<E, S, W> {
    /// The directory's owner, from the segment headers.
    pub identity: Identity,
    /// The replayed state.
    pub state: LogState<E, S>,
    /// The retained segments, oldest first.
    pub segments: Vec<SegmentInfo>,
    /// The lsn of the last valid frame.
    pub last_lsn: u64,
    /// How the log ends.
    pub tail: Tail,
    /// Files recovery does not use: `*.tmp` leftovers of an interrupted segment creation and
    /// segments older than a gap (left by an interrupted deletion). Removed in repair mode.
    pub strays: Vec<PathBuf>,
    /// In repair mode, the last segment opened for writes.
    pub active_file: Option<W>,
}

/// What [`recover`] returns for a value decoder `D` and a file system `F`.
pub type RecoveredWith<D, F> =
    Recovered<<D as ValueDecoder>::Entry, <D as ValueDecoder>::Snapshot, <F as FileSystem>::File>;

fn corrupt(file: &Path, offset: usize, reason: &'static str) -> OpenError {
    OpenError::Corrupt { file: file.to_path_buf(), offset: offset as u64, reason }
}

fn io_error<'a>(operation: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> OpenError + 'a {
    move |source| OpenError::Io { operation, path: path.to_path_buf(), source }
}

/// Recovers the directory `dir`; `Ok(None)` if it holds no segment (not initialized).
/// `expected`, if given, must match the owner recorded in every segment header.
pub fn recover<D: ValueDecoder, F: FileSystem>(
    fs: &F,
    dir: &Path,
    expected: Option<Identity>,
    mode: Mode,
    observe: &mut dyn FnMut(FrameView<'_>),
) -> Result<Option<RecoveredWith<D, F>>, OpenError> {
    let names = fs.list_files(dir).map_err(io_error("list", dir))?;
    let (ids, mut strays) = classify_files(dir, &names);
    if ids.is_empty() {
        remove_strays(fs, dir, &strays, mode)?;
        return Ok(None);
    }
    let mut replay = Replay::<D> { state: None, identity: None, expected, segments: Vec::new(), last_lsn: 0 };
    let mut tail = Tail::Clean;
    for (position, id) in ids.iter().enumerate() {
        let path = dir.join(segment_file_name(*id));
        let bytes = fs.read(&path).map_err(io_error("read", &path))?;
        let is_last = position + 1 == ids.len();
        tail = replay.segment(*id, &path, &bytes, is_last, observe)?;
    }
    let Replay { state, identity, segments, last_lsn, .. } = replay;
    let state = state.expect("every segment starts with a checkpoint");
    if !state.is_complete() {
        return Err(corrupt(&segments[0].path, 0, "live entries are missing: they were in a lost segment"));
    }
    strays.sort();
    let active_file = match mode {
        Mode::ReadOnly => None,
        Mode::Repair => Some(repair(fs, dir, &segments, &tail, &strays)?),
    };
    let identity = identity.expect("a segment header was read");
    Ok(Some(Recovered { identity, state, segments, last_lsn, tail, strays, active_file }))
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

/// Makes the recovered state durable and the tail clean before anything new is written.
fn repair<F: FileSystem>(
    fs: &F,
    dir: &Path,
    segments: &[SegmentInfo],
    tail: &Tail,
    strays: &[PathBuf],
) -> Result<F::File, OpenError> {
    let last = segments.last().expect("at least one segment");
    let mut file = fs.open_for_write(&last.path).map_err(io_error("open", &last.path))?;
    if let Tail::Torn { offset, bytes, .. } = tail {
        assert_eq!(*offset, last.end_offset, "the torn frame starts where the valid ones end");
        let zeros = vec![0u8; usize::try_from(*bytes).expect("a torn region fits in memory")];
        file.write_all_at(*offset, &zeros).map_err(io_error("zero the torn tail of", &last.path))?;
    }
    file.sync_data().map_err(io_error("sync", &last.path))?;
    remove_strays(fs, dir, strays, Mode::Repair)?;
    fs.sync_dir(dir).map_err(io_error("sync directory", dir))?;
    Ok(file)
}

/// The replay across segments.
struct Replay<D: ValueDecoder> {
    state: Option<LogState<D::Entry, D::Snapshot>>,
    identity: Option<Identity>,
    expected: Option<Identity>,
    segments: Vec<SegmentInfo>,
    last_lsn: u64,
}

impl<D: ValueDecoder> Replay<D> {
    /// Verifies and replays one segment; returns how it ends.
    fn segment(
        &mut self,
        id: SegmentId,
        path: &Path,
        bytes: &[u8],
        is_last: bool,
        observe: &mut dyn FnMut(FrameView<'_>),
    ) -> Result<Tail, OpenError> {
        let header = decode_segment_header(bytes).map_err(|error| match error {
            HeaderError::Corrupt(reason) => corrupt(path, 0, reason),
            HeaderError::UnsupportedVersion(version) => {
                OpenError::UnsupportedVersion { file: path.to_path_buf(), version }
            }
        })?;
        if header.segment_id != id {
            return Err(corrupt(path, 0, "segment id in the header differs from the file name"));
        }
        self.check_identity(path, header.identity)?;
        if !self.segments.is_empty() && header.first_lsn != self.last_lsn + 1 {
            return Err(corrupt(path, 0, "segment does not continue the previous one's sequence"));
        }
        let mut offset = SEGMENT_HEADER_BYTES;
        let mut expected_lsn = header.first_lsn;
        let end = loop {
            let frame = match read_frame(bytes, offset) {
                FrameRead::Valid(frame) if frame.lsn != expected_lsn => Err("frame out of sequence"),
                FrameRead::Valid(frame)
                    if (frame.kind == FrameKind::Checkpoint) != (offset == SEGMENT_HEADER_BYTES) =>
                {
                    Err("checkpoint frame not at the start of its segment")
                }
                FrameRead::Valid(frame) => Ok(frame),
                FrameRead::Zero => break None,
                FrameRead::Invalid(reason) => Err(reason),
            };
            match frame {
                Ok(frame) => {
                    self.apply(id, path, offset, frame)?;
                    observe(FrameView { file: path, offset: offset as u64, frame });
                    self.last_lsn = frame.lsn;
                    expected_lsn += 1;
                    offset += frame.len;
                    debug_assert_eq!(offset % FRAME_ALIGNMENT_BYTES, 0);
                }
                Err(reason) => break Some(reason),
            }
        };
        if offset == SEGMENT_HEADER_BYTES {
            return Err(corrupt(path, offset, end.unwrap_or("segment has no checkpoint")));
        }
        let tail = classify_end(path, bytes, offset, expected_lsn, end, is_last)?;
        let info = SegmentInfo {
            id,
            path: path.to_path_buf(),
            end_offset: offset as u64,
            file_bytes: bytes.len() as u64,
            first_lsn: header.first_lsn,
            last_lsn: self.last_lsn,
        };
        self.segments.push(info);
        Ok(tail)
    }

    fn check_identity(&mut self, path: &Path, found: Identity) -> Result<(), OpenError> {
        if let Some(expected) = self.expected {
            if expected != found {
                return Err(OpenError::ForeignDirectory { file: path.to_path_buf(), expected, found });
            }
        }
        match self.identity {
            Some(identity) if identity != found => Err(corrupt(path, 0, "segments of different owners")),
            _ => {
                self.identity = Some(found);
                Ok(())
            }
        }
    }

    /// Replays one verified frame.
    fn apply(
        &mut self,
        id: SegmentId,
        path: &Path,
        offset: usize,
        frame: Frame<'_>,
    ) -> Result<(), OpenError> {
        match frame.kind {
            FrameKind::Checkpoint => {
                let checkpoint =
                    decode_checkpoint::<D>(frame.payload).map_err(|reason| corrupt(path, offset, reason))?;
                match &self.state {
                    None => self.state = Some(LogState::from_checkpoint(checkpoint)),
                    Some(state) if !checkpoint_matches(state, &checkpoint) => {
                        return Err(corrupt(path, offset, "checkpoint disagrees with the replayed log"));
                    }
                    Some(_) => {}
                }
            }
            FrameKind::Write => {
                let ops = decode_ops::<D>(frame.payload).map_err(|reason| corrupt(path, offset, reason))?;
                let state = self.state.as_mut().expect("a checkpoint comes first");
                if state.validate(&ops).is_err() {
                    return Err(corrupt(path, offset, "frame's ops are outside the replayed log"));
                }
                for op in ops {
                    state.apply(op, id);
                }
            }
        }
        Ok(())
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
}

/// Decides what the bytes from `offset` (the first position without a valid in-sequence frame)
/// mean. `reason` is `None` if a zero header stopped the scan.
fn classify_end(
    path: &Path,
    bytes: &[u8],
    offset: usize,
    expected_lsn: u64,
    reason: Option<&'static str>,
    is_last: bool,
) -> Result<Tail, OpenError> {
    let rest = &bytes[offset..];
    let last_non_zero = rest.iter().rposition(|byte| *byte != 0);
    let Some(last_non_zero) = last_non_zero else {
        return Ok(Tail::Clean);
    };
    let reason = reason.unwrap_or("non-zero bytes after the end of the log");
    if !is_last {
        // A segment is synced completely before the next one exists: nothing in it was torn.
        return Err(corrupt(path, offset, reason));
    }
    if later_frame_proves_synced(&bytes[..offset + last_non_zero + 1], offset, expected_lsn) {
        return Err(corrupt(path, offset, "frame fails verification but a later frame proves it was synced"));
    }
    Ok(Tail::Torn {
        file: path.to_path_buf(),
        offset: offset as u64,
        bytes: last_non_zero as u64 + 1,
        reason,
    })
}

/// True if some valid frame after `offset` was written after the frame with `expected_lsn`
/// (or a later one) had been synced: then the bad bytes at `offset` were synced too, and are
/// corruption, not a torn write. `bytes` ends at the last non-zero byte (zeros hold no frame).
fn later_frame_proves_synced(bytes: &[u8], offset: usize, expected_lsn: u64) -> bool {
    let mut candidate = offset + FRAME_ALIGNMENT_BYTES;
    while candidate < bytes.len() {
        if let FrameRead::Valid(frame) = read_frame(bytes, candidate) {
            if frame.synced_lsn >= expected_lsn {
                return true;
            }
        }
        candidate += FRAME_ALIGNMENT_BYTES;
    }
    false
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
