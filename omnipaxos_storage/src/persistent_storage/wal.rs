//! [`Wal`]: the append side of the write-ahead log: the pending batch, segment rolls, group
//! commit, and removal of dead segments.
//!
//! ```text
//!  append_frame ──► pending (memory) ──write_out──► active segment (page cache)
//!                                                       │ flush: fdatasync (one per batch)
//!  after each roll (and at open): wal-N+1.tmp filled + fdatasync, on a background thread
//!  roll: header + checkpoint into wal-N+1.tmp ─► fdatasync ─► rename to wal-N+1.log
//!        ─► fsync directory ─► pending frames + Seal(N+1) into wal-N ─► fdatasync(wal-N)
//!        ─► the moved frame follows the new checkpoint
//!  close: flush ─► Close frame ─► fdatasync
//! ```

use std::{
    collections::VecDeque,
    io,
    path::{Path, PathBuf},
};

use omnipaxos_core::storage::StorageError;

use super::{
    format::{
        begin_frame, encode_frame, encode_segment_header, finish_frame, seal_payload, set_frame_sequence,
        EncodeError, FrameKind, Identity, SegmentHeader, FRAME_ALIGNMENT_BYTES, FRAME_HEADER_BYTES,
        SEAL_FRAME_BYTES,
    },
    fs::{FileSystem, FilledFile, WalFile},
    recovery::{segment_file_name, temporary_file_name, SegmentInfo},
    state::SegmentId,
    OpenError,
};

/// Bytes of encoded frames kept in memory before they are written out (without a sync) even
/// though no flush came: bounds the memory of a caller that writes much between flushes.
pub const WRITE_BUFFER_MAX_BYTES: usize = 4 << 20;

/// A failed WAL operation.
#[derive(Debug)]
pub enum WalError {
    /// The file system failed.
    Io {
        /// What was being done.
        operation: &'static str,
        /// To which file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A value could not be encoded.
    Encode(EncodeError),
}

impl From<EncodeError> for WalError {
    fn from(error: EncodeError) -> Self {
        WalError::Encode(error)
    }
}

impl From<WalError> for StorageError {
    fn from(error: WalError) -> Self {
        match error {
            WalError::Io { operation, path, source } => StorageError::Io(io::Error::new(
                source.kind(),
                format!("{operation} {}: {source}", path.display()),
            )),
            WalError::Encode(error) => StorageError::Other(Box::new(error)),
        }
    }
}

impl From<WalError> for OpenError {
    fn from(error: WalError) -> Self {
        match error {
            WalError::Io { operation, path, source } => OpenError::Io { operation, path, source },
            WalError::Encode(error) => OpenError::Encode(error),
        }
    }
}

fn io_error<'a>(operation: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> WalError + 'a {
    move |source| WalError::Io { operation, path: path.to_path_buf(), source }
}

/// How segments are made.
#[derive(Clone, Copy, Debug)]
pub struct SegmentPolicy {
    /// A segment is rolled when the next frame (and the seal after it) would take it past this
    /// size.
    pub segment_size_bytes: u64,
    /// Fill a new segment's whole size with the fill pattern before it is used, so that appends
    /// overwrite allocated blocks, `fdatasync` need not commit file-size metadata, and recovery
    /// can tell unwritten space from torn or zeroed frames.
    pub preallocate: bool,
}

/// What every segment header of a directory records besides its position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentFormat {
    /// The owner.
    pub identity: Identity,
    /// The value type tag.
    pub type_tag: String,
}

/// Where a new segment starts in the log.
#[derive(Clone, Copy, Debug)]
pub struct NewSegment {
    /// Its id.
    pub id: SegmentId,
    /// The lsn of its checkpoint frame.
    pub first_lsn: u64,
    /// Every frame up to this lsn is durable.
    pub synced_lsn: u64,
}

/// Makes segment `segment.id`, whose checkpoint frame `encode_checkpoint` writes: header and
/// checkpoint into `prepared` (the filled `.tmp` file and its size) or a new `.tmp` file,
/// fdatasync, rename to `.log`, fsync of the directory. Returns the open file and where the
/// next frame goes.
pub fn create_segment<F: FileSystem>(
    fs: &F,
    dir: &Path,
    format: &SegmentFormat,
    segment: NewSegment,
    prepared: Option<(F::File, u64)>,
    encode_checkpoint: impl FnOnce(&mut Vec<u8>) -> Result<(), EncodeError>,
) -> Result<(F::File, u64), WalError> {
    let header = SegmentHeader {
        segment_id: segment.id,
        identity: format.identity,
        first_lsn: segment.first_lsn,
        preallocated_bytes: prepared.as_ref().map_or(0, |(_, bytes)| *bytes),
        type_tag: format.type_tag.clone(),
    };
    let mut buffer = encode_segment_header(&header);
    let start = begin_frame(&mut buffer);
    encode_checkpoint(&mut buffer)?;
    finish_frame(&mut buffer, start, FrameKind::Checkpoint, segment.first_lsn, segment.synced_lsn)?;
    let temporary = dir.join(temporary_file_name(segment.id));
    let path = dir.join(segment_file_name(segment.id));
    let mut file = match prepared {
        Some((file, _)) => file,
        None => fs.create_new(&temporary).map_err(io_error("create", &temporary))?,
    };
    file.write_all_at(0, &buffer).map_err(io_error("write", &temporary))?;
    file.sync_data().map_err(io_error("sync", &temporary))?;
    fs.rename(&temporary, &path).map_err(io_error("rename", &temporary))?;
    fs.sync_dir(dir).map_err(io_error("sync directory", dir))?;
    Ok((file, buffer.len() as u64))
}

/// The append side of the log. See the module docs.
pub struct Wal<F: FileSystem> {
    fs: F,
    dir: PathBuf,
    format: SegmentFormat,
    policy: SegmentPolicy,
    /// Retained segments, oldest first; the last one is active.
    segments: VecDeque<(SegmentId, PathBuf)>,
    active: F::File,
    /// Where `pending` goes in the active segment.
    written_end: u64,
    /// Encoded frames not yet written to the file.
    pending: Vec<u8>,
    /// Where the newest frame starts in `pending` (a roll moves it into the new segment).
    last_frame_start: Option<usize>,
    /// Frames after the checkpoint in the active segment, the pending ones included.
    active_write_frames: u64,
    /// Where the active segment's checkpoint ends (0 if unknown: a segment resumed after
    /// recovery). A roll waits until the frames after it take at least as many bytes as the
    /// checkpoint, so a checkpoint as large as a segment cannot make every write roll.
    checkpoint_end: u64,
    /// True if the active file has writes its last `sync_data` did not cover.
    unsynced: bool,
    /// True if directory entries changed since the last directory sync.
    dir_dirty: bool,
    next_lsn: u64,
    /// Every frame up to this lsn is durable. Invariant: `synced_lsn < next_lsn`.
    synced_lsn: u64,
    /// The next segment's `.tmp` file, filled ahead of time (when preallocating).
    next_segment: Option<FilledFile<F::File>>,
}

impl<F: FileSystem> Drop for Wal<F> {
    /// Waits for a background preallocation, so no thread outlives the storage.
    fn drop(&mut self) {
        if let Some(next) = self.next_segment.take() {
            let _ = next.wait();
        }
    }
}

impl<F: FileSystem> Wal<F> {
    /// A WAL over a freshly created first segment.
    pub fn start(
        fs: F,
        dir: &Path,
        format: SegmentFormat,
        policy: SegmentPolicy,
        encode_checkpoint: impl FnOnce(&mut Vec<u8>) -> Result<(), EncodeError>,
    ) -> Result<Self, WalError> {
        let prepared = match policy.preallocate {
            true => {
                let temporary = dir.join(temporary_file_name(1));
                let filled = fs.create_filled(&temporary, policy.segment_size_bytes, 1).wait();
                Some((filled.map_err(io_error("preallocate", &temporary))?, policy.segment_size_bytes))
            }
            false => None,
        };
        let first = NewSegment { id: 1, first_lsn: 1, synced_lsn: 0 };
        let (active, written_end) = create_segment(&fs, dir, &format, first, prepared, encode_checkpoint)?;
        let segments = VecDeque::from(vec![(1, dir.join(segment_file_name(1)))]);
        let mut wal = Wal::with_active(fs, dir, format, policy, segments, active, written_end, 1);
        wal.prepare_next_segment();
        Ok(wal)
    }

    /// A WAL continuing recovered segments; `active` is the last one, opened for writes;
    /// `prepared`, if recovery kept one, the filled next segment; every frame up to
    /// `synced_lsn` is durable.
    #[allow(clippy::too_many_arguments)]
    pub fn resume(
        fs: F,
        dir: &Path,
        format: SegmentFormat,
        policy: SegmentPolicy,
        segments: &[SegmentInfo],
        active: F::File,
        prepared: Option<F::File>,
        last_lsn: u64,
        synced_lsn: u64,
    ) -> Self {
        assert!(synced_lsn <= last_lsn, "nothing past the log is synced");
        let last = segments.last().expect("recovery found at least one segment");
        let retained = segments.iter().map(|segment| (segment.id, segment.path.clone())).collect();
        let mut wal = Wal::with_active(fs, dir, format, policy, retained, active, last.end_offset, last_lsn);
        wal.synced_lsn = synced_lsn;
        // Frames past `synced_lsn` are on file but unproven: the next flush syncs them.
        wal.unsynced = synced_lsn < last_lsn;
        // Recovery does not count frames; a resumed segment rolls as soon as it is full.
        wal.active_write_frames = u64::from(last.last_lsn > last.first_lsn);
        match prepared {
            Some(file) if policy.preallocate => wal.next_segment = Some(FilledFile::Ready(Ok(file))),
            _ => wal.prepare_next_segment(),
        }
        wal
    }

    #[allow(clippy::too_many_arguments)]
    fn with_active(
        fs: F,
        dir: &Path,
        format: SegmentFormat,
        policy: SegmentPolicy,
        segments: VecDeque<(SegmentId, PathBuf)>,
        active: F::File,
        written_end: u64,
        last_lsn: u64,
    ) -> Self {
        Wal {
            fs,
            dir: dir.to_path_buf(),
            format,
            policy,
            segments,
            active,
            written_end,
            checkpoint_end: 0,
            pending: Vec::new(),
            last_frame_start: None,
            active_write_frames: 0,
            unsynced: false,
            dir_dirty: false,
            next_lsn: last_lsn + 1,
            synced_lsn: last_lsn,
            next_segment: None,
        }
    }

    /// Starts filling the segment after the active one (on a background thread with
    /// [`super::fs::StdFs`]), so a roll only writes a header and a checkpoint.
    fn prepare_next_segment(&mut self) {
        if self.policy.preallocate {
            let id = self.active_id() + 1;
            let temporary = self.dir.join(temporary_file_name(id));
            self.next_segment = Some(self.fs.create_filled(&temporary, self.policy.segment_size_bytes, id));
        }
    }

    /// The prepared next segment and its size, once complete and synced.
    fn take_next_segment(&mut self) -> Result<Option<(F::File, u64)>, WalError> {
        let Some(next) = self.next_segment.take() else { return Ok(None) };
        let temporary = self.dir.join(temporary_file_name(self.active_id() + 1));
        let file = next.wait().map_err(io_error("preallocate", &temporary))?;
        Ok(Some((file, self.policy.segment_size_bytes)))
    }

    /// The file system (for its sync counters).
    pub fn fs(&self) -> &F {
        &self.fs
    }

    /// The owner recorded in every segment header.
    pub fn identity(&self) -> Identity {
        self.format.identity
    }

    /// The segment new entries go to.
    pub fn active_id(&self) -> SegmentId {
        self.segments.back().expect("there is always an active segment").0
    }

    /// How many segment files the log has.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The oldest retained segment.
    pub fn oldest_id(&self) -> SegmentId {
        self.segments.front().expect("there is always an active segment").0
    }

    /// Encodes a frame of `kind` (Write or LossResolved) into the pending batch. On error
    /// nothing was added.
    pub fn append_frame(
        &mut self,
        kind: FrameKind,
        encode_payload: impl FnOnce(&mut Vec<u8>) -> Result<(), EncodeError>,
    ) -> Result<(), WalError> {
        assert!(
            matches!(kind, FrameKind::Write | FrameKind::LossResolved),
            "{kind:?} is not appended by calls"
        );
        let start = begin_frame(&mut self.pending);
        let encoded = encode_payload(&mut self.pending)
            .and_then(|()| finish_frame(&mut self.pending, start, kind, self.next_lsn, self.synced_lsn));
        if let Err(error) = encoded {
            self.pending.truncate(start);
            return Err(error.into());
        }
        self.last_frame_start = Some(start);
        self.next_lsn += 1;
        self.active_write_frames += 1;
        Ok(())
    }

    /// True if the frame just appended, and the seal after it, would take the active segment
    /// past its size and the segment already holds another frame (a frame larger than a
    /// segment gets one alone).
    ///
    /// A segment also holds frames worth at least its own checkpoint (and header) before it
    /// rolls: with a checkpoint (the state's snapshot) near or
    /// above the segment size, every write rolled and wrote another checkpoint, filling any disk
    /// in seconds (found by the fault harness with 1 MiB segments). Such a segment grows past
    /// its preallocated size instead; checkpoints then cost at most as many bytes as frames.
    pub fn needs_roll(&self) -> bool {
        let end = self.written_end + self.pending.len() as u64 + SEAL_FRAME_BYTES as u64;
        // The frames that stay in this segment: all but the one just appended (a roll moves it).
        let kept_end = self.written_end + self.last_frame_start.unwrap_or(self.pending.len()) as u64;
        let frames = kept_end.saturating_sub(self.checkpoint_end);
        let enough_frames = frames >= self.checkpoint_end;
        self.active_write_frames >= 2 && end > self.policy.segment_size_bytes && enough_frames
    }

    /// Rolls to a new segment and moves the frame just appended into it, in this order:
    /// 1. the next segment is created with the checkpoint `encode_checkpoint` writes, synced,
    ///    renamed to its `.log` name, and the directory synced: it exists durably;
    /// 2. the active segment's pending frames and a Seal frame naming the next segment are
    ///    written and synced with one `fdatasync`.
    ///
    /// So a Seal on disk proves its next segment exists (a missing one was deleted), and until
    /// the Seal is durable the new segment holds nothing but its checkpoint (a crash in
    /// between leaves an interrupted roll, which recovery undoes).
    pub fn roll(
        &mut self,
        encode_checkpoint: impl FnOnce(&mut Vec<u8>) -> Result<(), EncodeError>,
    ) -> Result<(), WalError> {
        let start = self.last_frame_start.take().expect("a roll follows append_frame");
        let mut frame = self.pending.split_off(start);
        let seal_lsn = self.next_lsn - 1;
        let checkpoint_lsn = seal_lsn + 1;
        self.active_write_frames -= 1;
        let id = self.active_id() + 1;
        let prepared = self.take_next_segment()?;
        let next = NewSegment { id, first_lsn: checkpoint_lsn, synced_lsn: self.synced_lsn };
        let (active, written_end) =
            create_segment(&self.fs, &self.dir, &self.format, next, prepared, encode_checkpoint)?;
        encode_frame(&mut self.pending, FrameKind::Seal, seal_lsn, self.synced_lsn, &seal_payload(id));
        self.next_lsn = seal_lsn + 1;
        self.flush()?;
        assert_eq!(self.synced_lsn, seal_lsn, "the sealed segment is durable");
        self.active = active;
        self.written_end = written_end;
        self.checkpoint_end = written_end;
        self.segments.push_back((id, self.dir.join(segment_file_name(id))));
        self.synced_lsn = checkpoint_lsn;
        set_frame_sequence(&mut frame[..FRAME_HEADER_BYTES], checkpoint_lsn + 1, checkpoint_lsn);
        self.pending = frame;
        self.last_frame_start = Some(0);
        self.next_lsn = checkpoint_lsn + 2;
        self.active_write_frames = 1;
        self.prepare_next_segment();
        Ok(())
    }

    /// A clean close: flushes, then writes a Close frame (whose `synced_lsn` proves every
    /// earlier frame durable) and syncs it. Two `fdatasync`s: the Close frame must not share
    /// the sync that makes the frames it vouches for durable.
    pub fn close(&mut self) -> Result<(), WalError> {
        self.flush()?;
        encode_frame(&mut self.pending, FrameKind::Close, self.next_lsn, self.synced_lsn, &[]);
        self.next_lsn += 1;
        self.flush()
    }

    /// Writes the pending batch out (no sync) if it grew past [`WRITE_BUFFER_MAX_BYTES`].
    pub fn maybe_write_out(&mut self) -> Result<(), WalError> {
        if self.pending.len() >= WRITE_BUFFER_MAX_BYTES {
            self.write_out()?;
        }
        Ok(())
    }

    fn write_out(&mut self) -> Result<(), WalError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let path = &self.segments.back().expect("active segment").1;
        self.active.write_all_at(self.written_end, &self.pending).map_err(io_error("write", path))?;
        self.written_end += self.pending.len() as u64;
        self.pending.clear();
        self.last_frame_start = None;
        debug_assert_eq!(self.written_end % FRAME_ALIGNMENT_BYTES as u64, 0);
        self.unsynced = true;
        Ok(())
    }

    /// Group commit: writes the pending batch, then one `fdatasync` of the active segment, and
    /// an fsync of the directory only if files were removed since the last one.
    pub fn flush(&mut self) -> Result<(), WalError> {
        self.write_out()?;
        if self.unsynced {
            let path = &self.segments.back().expect("active segment").1;
            self.active.sync_data().map_err(io_error("sync", path))?;
            self.unsynced = false;
        }
        self.synced_lsn = self.next_lsn - 1;
        if self.dir_dirty {
            self.fs.sync_dir(&self.dir).map_err(io_error("sync directory", &self.dir))?;
            self.dir_dirty = false;
        }
        Ok(())
    }

    /// Removes the segments older than `keep_from` (never the active one). Call right after a
    /// flush: the frames that made their entries dead must be durable first. The directory is
    /// synced by the next flush; until then a crash may bring a removed segment back, which
    /// recovery ignores or replays harmlessly.
    pub fn remove_segments_before(&mut self, keep_from: SegmentId) -> Result<(), WalError> {
        assert!(self.pending.is_empty() && !self.unsynced, "removal follows a flush");
        let keep_from = keep_from.min(self.active_id());
        while let Some((id, path)) = self.segments.front() {
            if *id >= keep_from {
                break;
            }
            self.fs.remove_file(path).map_err(io_error("remove", path))?;
            self.segments.pop_front();
            self.dir_dirty = true;
        }
        Ok(())
    }
}
