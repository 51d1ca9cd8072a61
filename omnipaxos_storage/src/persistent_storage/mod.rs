//! [`PersistentStorage`]: a crash-safe write-ahead log behind the storage port.
//!
//! Every `write_atomically` call becomes one checksummed frame appended to a segment file;
//! `flush` writes the batch and calls `fdatasync` once (group commit). Reads are served from
//! memory; the disk is read only when the storage is opened.
//!
//! ```text
//!  write_atomically(ops) ─► validate ─► encode one Write frame into the pending batch ─► apply
//!                                    │ (a full segment rolls: next segment, then Seal + sync)
//!  flush() ─────────────► write batch ─► fdatasync(active segment) ─► [fsync(dir)] ─► Ok
//!                                           └► remove segments that hold no live entry
//!  open(config) ────────► Bootstrap / Replace: refuse a used directory; create it and the log
//!                         Restart: refuse a missing log (LogMissing), take the lock (Locked),
//!                         recover: verify every frame, refuse a deleted tail or damage it can
//!                         prove, drop a torn tail, report a possible loss it cannot rule out
//!                                   ─► replay into memory ─► sync what was recovered
//!  open_read_only ──────► the same recovery, changing nothing, beside a live writer
//! ```
//!
//! Key design decision: **one frame per call, state and entries in the same log.** Promise,
//! accepted round, decided index, compaction, snapshot and StopSign changes travel in the same
//! frame as the entries of the same call, so a multi-field update is atomic by the frame's
//! checksum, with no second file to keep consistent. Each segment starts with a checkpoint of
//! the non-entry state, so old segments can be deleted once their entries are compacted.
//!
//! Memory model: like etcd's `MemoryStorage` + WAL, the whole un-compacted log and the state
//! live in memory (about the size of the encoded entries); trim or snapshot to bound it. Frames
//! waiting for a flush take at most [`wal::WRITE_BUFFER_MAX_BYTES`] before they are written
//! out (not synced); recovery reads each segment through a window of a few MiB and stops at the
//! end of its data. On the real file system one short-lived background thread per segment
//! fills the next segment ahead of time; dropping the storage waits for it.
//!
//! One writer per directory: an open storage holds an exclusive `flock` on `wal.lock` (with
//! its pid in it) until it is dropped; a second open fails at once with
//! [`OpenError::Locked`].
//!
//! Crash model and the argument why acknowledged writes survive: see `DESIGN.md` in this crate.
//! For crash tests, [`sim_fs::SimFs`] runs this code over an in-memory disk that can lose,
//! tear or flip unsynced bytes; a simulator can use it too (open with
//! [`PersistentStorage::open_with_fs`], crash with [`sim_fs::SimFs::crash`], reopen).

pub mod format;
pub mod fs;
pub mod recovery;
pub mod sim_fs;
pub mod state;
pub mod wal;

use std::{
    fmt, io,
    path::{Path, PathBuf},
};

use omnipaxos_core::{
    ballot_leader_election::Ballot,
    storage::{ReplicaIdentity, StopSign, Storage, StorageError, StorageOp, StorageResult},
    util::{ConfigurationId, LogIndex, NodeId, Proposal},
};
use serde::{de::DeserializeOwned, Serialize};

use self::{
    format::{
        encode_checkpoint, encode_ops, BincodeValues, EncodeError, FrameKind, Identity, LossCause,
        PossibleLoss, ValueDecoder, FORMAT_VERSION, FRAME_ALIGNMENT_BYTES, TYPE_TAG_MAX_BYTES,
    },
    fs::{parent_dir, FileSystem, LockError, LockState, PathKind, StdFs, SyncCounts, LOCK_FILE_NAME},
    recovery::{parse_file_name, recover, Expected, FrameView, Mode, SegmentInfo, Tail},
    state::LogState,
    wal::{SegmentFormat, SegmentPolicy, Wal},
};

/// Smallest allowed segment size (tests use small segments to roll often).
pub const SEGMENT_SIZE_MIN_BYTES: u64 = 256;
/// Largest allowed segment size.
pub const SEGMENT_SIZE_MAX_BYTES: u64 = 1 << 30;
/// Default segment size, as etcd's WAL.
pub const SEGMENT_SIZE_DEFAULT_BYTES: u64 = 64 << 20;
/// At most this many names of unexpected files are kept in an error.
pub const LISTED_FILES_MAX: usize = 16;

/// How [`PersistentStorage::open`] treats the data directory. There is deliberately no "create
/// if missing": a replica that lost its log must never come back as if it never promised or
/// accepted anything (amnesia can break agreement across the cluster).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpenMode {
    /// A new replica with no history: creates the directory (and any missing parents, each
    /// made durable) and an empty log. Refuses a directory that already holds a log
    /// ([`OpenError::AlreadyInitialized`]) or any other file ([`OpenError::DirectoryNotEmpty`]).
    Bootstrap,
    /// A replica that had history but lost its log ([`OpenError::LogMissing`] on restart):
    /// as `Bootstrap`, and the new log records a possible loss ([`LossCause::LogReplaced`]), so
    /// [`OpenReport::acknowledged_state_may_be_lost`] stays true, across restarts, until
    /// [`PersistentStorage::resolve_possible_loss`].
    Replace,
    /// A replica restarting: the log must be there. A missing directory, a directory without
    /// log files, or one holding only other files is refused with [`OpenError::LogMissing`].
    Restart,
}

/// Where and whose a [`PersistentStorage`] is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersistentStorageConfig {
    /// The data directory; it holds the segment files `wal-<16 hex digits>.log` and the lock
    /// file `wal.lock`.
    pub path: PathBuf,
    /// A user-chosen cluster id, recorded in every segment (default 0).
    pub cluster_id: u64,
    /// The configuration this log belongs to, recorded in every segment.
    pub configuration_id: ConfigurationId,
    /// The node this log belongs to, recorded in every segment.
    pub node_id: NodeId,
    /// Bootstrap a new log or restart an existing one (default: restart).
    pub mode: OpenMode,
    /// Names the entry and snapshot types in every segment header; opening with another tag
    /// fails with [`OpenError::ValueTypeMismatch`]. `None` (the default) uses the Rust type
    /// names ([`default_type_tag`]), which may change between compiler versions: set a stable
    /// tag of your own (`"kv-command-v1"`) for logs that must outlive toolchain upgrades.
    pub type_tag: Option<String>,
    /// A segment is rolled when it would grow past this size (a single larger frame gets a
    /// segment of its own). Between [`SEGMENT_SIZE_MIN_BYTES`] and [`SEGMENT_SIZE_MAX_BYTES`],
    /// a multiple of 8.
    pub segment_size_bytes: u64,
    /// Fill each new segment to `segment_size_bytes` with a fill pattern before use, so that
    /// each `fdatasync` writes data blocks only, not file-size metadata (faster by 20-40 % on
    /// ext4), and recovery can tell never-written space from torn, zeroed or truncated data.
    pub preallocate_segments: bool,
}

/// The type tag recorded when [`PersistentStorageConfig::type_tag`] is `None`.
pub fn default_type_tag<T, S>() -> String {
    format!("entry={} snapshot={}", std::any::type_name::<T>(), std::any::type_name::<S>())
}

impl PersistentStorageConfig {
    /// A configuration with the defaults: cluster id 0, restart mode, the type names as the
    /// type tag, 64 MiB preallocated segments.
    pub fn new(path: impl Into<PathBuf>, configuration_id: ConfigurationId, node_id: NodeId) -> Self {
        PersistentStorageConfig {
            path: path.into(),
            cluster_id: 0,
            configuration_id,
            node_id,
            mode: OpenMode::Restart,
            type_tag: None,
            segment_size_bytes: SEGMENT_SIZE_DEFAULT_BYTES,
            preallocate_segments: true,
        }
    }

    /// Sets `mode`.
    pub fn mode(mut self, mode: OpenMode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets `type_tag`.
    pub fn type_tag(mut self, tag: impl Into<String>) -> Self {
        self.type_tag = Some(tag.into());
        self
    }

    /// Sets `cluster_id`.
    pub fn cluster_id(mut self, cluster_id: u64) -> Self {
        self.cluster_id = cluster_id;
        self
    }

    /// Sets `segment_size_bytes`.
    pub fn segment_size_bytes(mut self, bytes: u64) -> Self {
        self.segment_size_bytes = bytes;
        self
    }

    /// Sets `preallocate_segments`.
    pub fn preallocate_segments(mut self, preallocate: bool) -> Self {
        self.preallocate_segments = preallocate;
        self
    }

    /// The owner recorded in the segment headers.
    pub fn identity(&self) -> Identity {
        Identity {
            cluster_id: self.cluster_id,
            configuration_id: self.configuration_id,
            node_id: self.node_id,
        }
    }

    /// The type tag a storage of entries `T` and snapshots `S` records and expects.
    pub fn resolved_type_tag<T, S>(&self) -> String {
        self.type_tag.clone().unwrap_or_else(default_type_tag::<T, S>)
    }

    fn policy(&self) -> SegmentPolicy {
        SegmentPolicy { segment_size_bytes: self.segment_size_bytes, preallocate: self.preallocate_segments }
    }

    fn validate(&self, type_tag: &str) -> Result<(), OpenError> {
        if !(SEGMENT_SIZE_MIN_BYTES..=SEGMENT_SIZE_MAX_BYTES).contains(&self.segment_size_bytes) {
            return Err(OpenError::InvalidConfig("segment_size_bytes is outside the allowed range"));
        }
        if !self.segment_size_bytes.is_multiple_of(FRAME_ALIGNMENT_BYTES as u64) {
            return Err(OpenError::InvalidConfig("segment_size_bytes is not a multiple of 8"));
        }
        if type_tag.len() > TYPE_TAG_MAX_BYTES {
            return Err(OpenError::InvalidConfig(
                "the type tag is longer than 4096 bytes: set a shorter type_tag",
            ));
        }
        Ok(())
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cluster {} configuration {} node {}", self.cluster_id, self.configuration_id, self.node_id)
    }
}

/// What a restart found instead of a log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MissingLog {
    /// The directory does not exist.
    NoDirectory,
    /// The directory holds no segment file (at most the lock file and unfinished `.tmp`
    /// segments of an interrupted bootstrap).
    NoLogFiles,
    /// The directory holds other files but no segment file: the wrong directory?
    OtherFilesOnly {
        /// How many other entries it holds.
        count: usize,
        /// The first [`LISTED_FILES_MAX`] of their names, sorted.
        names: Vec<String>,
    },
}

impl fmt::Display for MissingLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MissingLog::NoDirectory => write!(f, "the directory does not exist"),
            MissingLog::NoLogFiles => write!(f, "the directory holds no wal-*.log file"),
            MissingLog::OtherFilesOnly { count, names } => {
                write!(
                    f,
                    "the directory holds {count} other entries ({}) and no wal-*.log file",
                    names.join(", ")
                )
            }
        }
    }
}

/// Why a data directory could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Another open storage, in this or another process, holds the directory's lock.
    #[error(
        "data directory {path} is locked by another open storage (pid {}): one writer per directory",
        holder_pid.map_or_else(|| "unknown".to_string(), |pid| pid.to_string())
    )]
    Locked {
        /// The data directory.
        path: PathBuf,
        /// The pid the holder recorded in `wal.lock`, if readable.
        holder_pid: Option<u32>,
    },
    /// A restart found no log: this replica's acknowledged state (promises, accepted entries)
    /// is gone. It must not come back as if it had no history.
    #[error(
        "{path} holds no log: {found}. If this replica had a log, its acknowledged state \
         is lost: bring it back with OpenMode::Replace (the core keeps it from voting until it is \
         repaired from its peers); if it never had one, use OpenMode::Bootstrap"
    )]
    LogMissing {
        /// The configured directory.
        path: PathBuf,
        /// What was there instead.
        found: MissingLog,
    },
    /// A bootstrap found a log already there.
    #[error("bootstrap refused: {path} already holds a log (open it with OpenMode::Restart)")]
    AlreadyInitialized {
        /// The configured directory.
        path: PathBuf,
    },
    /// A bootstrap found other files in the directory.
    #[error("bootstrap refused: {path} is not empty ({}); a data directory holds only its log", names.join(", "))]
    DirectoryNotEmpty {
        /// The configured directory.
        path: PathBuf,
        /// The first [`LISTED_FILES_MAX`] names of what it holds, sorted.
        names: Vec<String>,
    },
    /// The path, or one of its parents, exists but is not a directory.
    #[error("{path} exists and is not a directory")]
    NotADirectory {
        /// The path that is not a directory.
        path: PathBuf,
    },
    /// The directory belongs to another cluster, configuration or node.
    #[error("{file} belongs to {found}, not to {expected}")]
    ForeignDirectory {
        /// The segment whose header names another owner.
        file: PathBuf,
        /// The owner in the configuration.
        expected: Identity,
        /// The owner in the file.
        found: Identity,
    },
    /// The log was written with other entry or snapshot types.
    #[error("{file} holds values of type tag {recorded:?}, but this storage reads {expected:?}")]
    ValueTypeMismatch {
        /// The segment whose header carries another tag.
        file: PathBuf,
        /// The tag in the file.
        recorded: String,
        /// The tag of this storage.
        expected: String,
    },
    /// A segment of a format this build does not read.
    #[error(
        "{file} has on-disk format version {version}; this build reads only version {FORMAT_VERSION} \
         (no upgrade: open it with the build that wrote it, or replace the replica's log from its peers)"
    )]
    UnsupportedVersion {
        /// The segment.
        file: PathBuf,
        /// Its format version.
        version: u32,
    },
    /// The last segment is sealed, so a later one existed and is gone: the log's tail was
    /// deleted or lost. Never opened as a shorter log.
    #[error(
        "segment {} is missing: {} is sealed and names it as the next segment (the log's tail was \
         deleted or lost; refusing to open a shorter log)", missing.display(), sealed.display()
    )]
    MissingSegment {
        /// The last segment present, whose Seal names the missing one.
        sealed: PathBuf,
        /// The first missing segment.
        missing: PathBuf,
    },
    /// Data that was (or must have been) synced failed verification. Never skipped: the
    /// operator decides (restore the node from its peers).
    #[error("corrupt data in {file} at offset {offset}: {reason}")]
    Corrupt {
        /// The file holding the bad data.
        file: PathBuf,
        /// Byte offset of the bad frame or header.
        offset: u64,
        /// The check that failed.
        reason: &'static str,
    },
    /// The file system failed.
    #[error("cannot {operation} {path}: {source}")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// To which file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The configuration is not usable.
    #[error("invalid storage configuration: {0}")]
    InvalidConfig(&'static str),
    /// The initial checkpoint could not be encoded.
    #[error("cannot encode the initial checkpoint: {0}")]
    Encode(#[from] EncodeError),
}

impl From<OpenError> for StorageError {
    fn from(error: OpenError) -> Self {
        match error {
            OpenError::Corrupt { file, offset, reason } => StorageError::Corrupt { file, offset, reason },
            OpenError::MissingSegment { missing, .. } => StorageError::Corrupt {
                file: missing,
                offset: 0,
                reason: "segment missing from a sealed log",
            },
            OpenError::Io { source, .. } => StorageError::Io(source),
            other => StorageError::Other(Box::new(other)),
        }
    }
}

/// What [`PersistentStorage::open`] found, for logs, tests and the core's recovery decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenReport {
    /// The mode it was opened with.
    pub mode: OpenMode,
    /// True if the directory was initialized by this open.
    pub created: bool,
    /// How the recovered log ended (a dropped tail was refilled).
    pub tail: Tail,
    /// Files removed as leftovers of an interrupted segment creation, roll or deletion.
    pub removed_strays: Vec<PathBuf>,
    /// The unresolved possible loss of acknowledged state the log records after this open: one
    /// found now (a [`Tail::PossibleLoss`]), an earlier one never resolved, or a replaced log.
    pub possible_loss: Option<PossibleLoss>,
    /// True if the previous session ended with [`PersistentStorage::close`] (nothing was
    /// written after); false after a crash, a kill or a drop without close.
    pub previous_session_closed: bool,
}

impl OpenReport {
    /// True if this replica may have lost state it acknowledged (a promise, an accepted entry):
    /// it must not promise, accept or vote until repaired from its peers, then
    /// [`PersistentStorage::resolve_possible_loss`]. Sticky: it stays true across restarts.
    pub fn acknowledged_state_may_be_lost(&self) -> bool {
        self.possible_loss.is_some()
    }
}

/// A durable [`Storage`]: a segmented write-ahead log with group commit. See the module docs.
pub struct PersistentStorage<T, S, F: FileSystem = StdFs> {
    /// Everything reads see. Invariant: equals the replay of every frame appended so far.
    state: LogState<T, S>,
    wal: Wal<F>,
    /// Set by the first failed write or flush: fail-stop, never retry an fsync.
    poisoned: bool,
    report: OpenReport,
    /// The directory's exclusive lock, held for the storage's lifetime. Declared last: it is
    /// released after the WAL (and its preallocation thread) is gone.
    _lock: F::DirLock,
}

impl<T, S> PersistentStorage<T, S, StdFs>
where
    T: Serialize + DeserializeOwned,
    S: Serialize + DeserializeOwned,
{
    /// Opens the data directory of `config` on the real file system, as its
    /// [`mode`](PersistentStorageConfig::mode) says.
    pub fn open(config: &PersistentStorageConfig) -> Result<Self, OpenError> {
        Self::open_with_fs(config, StdFs::default())
    }

    /// Reads the data directory of `config` without changing it and without taking its lock:
    /// works beside a live writer (and says so). See [`open_read_only_with`].
    pub fn open_read_only(config: &PersistentStorageConfig) -> Result<ReadOnlyLog<T, S>, OpenError> {
        let type_tag = config.resolved_type_tag::<T, S>();
        let expected =
            Expected { identity: Some(config.identity()), type_tag: Some(&type_tag), ..Expected::default() };
        open_read_only_with::<BincodeValues<T, S>, StdFs>(
            &StdFs::default(),
            &config.path,
            expected,
            &mut |_| {},
        )
    }
}

impl<T, S, F> PersistentStorage<T, S, F>
where
    T: Serialize + DeserializeOwned,
    S: Serialize + DeserializeOwned,
    F: FileSystem,
{
    /// Reads the data directory of `config` on `fs` without changing it and without taking its
    /// lock (the open mode is ignored). See [`open_read_only_with`].
    pub fn open_read_only_with_fs(
        config: &PersistentStorageConfig,
        fs: &F,
    ) -> Result<ReadOnlyLog<T, S>, OpenError> {
        let type_tag = config.resolved_type_tag::<T, S>();
        let expected =
            Expected { identity: Some(config.identity()), type_tag: Some(&type_tag), ..Expected::default() };
        open_read_only_with::<BincodeValues<T, S>, F>(fs, &config.path, expected, &mut |_| {})
    }

    /// Opens the data directory of `config` on `fs`: bootstraps it or recovers it, as
    /// [`PersistentStorageConfig::mode`] says, holding its lock from before the first read.
    /// Everything recovered is durable when this returns.
    pub fn open_with_fs(config: &PersistentStorageConfig, fs: F) -> Result<Self, OpenError> {
        let type_tag = config.resolved_type_tag::<T, S>();
        config.validate(&type_tag)?;
        let format = SegmentFormat { identity: config.identity(), type_tag };
        match config.mode {
            OpenMode::Restart => Self::restart(config, fs, format),
            OpenMode::Bootstrap | OpenMode::Replace => Self::bootstrap(config, fs, format),
        }
    }

    fn restart(config: &PersistentStorageConfig, fs: F, format: SegmentFormat) -> Result<Self, OpenError> {
        let dir = &config.path;
        let lock = match inspect_directory(&fs, dir)? {
            DirectoryContents::NotADirectory => return Err(OpenError::NotADirectory { path: dir.clone() }),
            DirectoryContents::Log => lock_directory(&fs, dir)?,
            DirectoryContents::Missing(found) => {
                return Err(OpenError::LogMissing { path: dir.clone(), found })
            }
            DirectoryContents::Other(names) => {
                let found = MissingLog::OtherFilesOnly { count: names.len(), names: first_names(names) };
                return Err(OpenError::LogMissing { path: dir.clone(), found });
            }
        };
        let expected = Expected {
            identity: Some(format.identity),
            type_tag: Some(&format.type_tag),
            prepared_segment_bytes: config.preallocate_segments.then_some(config.segment_size_bytes),
        };
        let recovered = recover::<BincodeValues<T, S>, F>(&fs, dir, expected, Mode::Repair, &mut |_| {})?;
        let Some(recovered) = recovered else {
            // The log files vanished between the check and the lock.
            return Err(OpenError::LogMissing { path: dir.clone(), found: MissingLog::NoLogFiles });
        };
        let active = recovered.active_file.expect("repair mode opens the active segment");
        let (segments, prepared) = (&recovered.segments, recovered.prepared_file);
        let wal = Wal::resume(
            fs,
            dir,
            format,
            config.policy(),
            segments,
            active,
            prepared,
            recovered.last_lsn,
            recovered.synced_lsn,
        );
        let report = OpenReport {
            mode: config.mode,
            created: false,
            tail: recovered.tail,
            removed_strays: recovered.strays,
            possible_loss: recovered.state.possible_loss(),
            previous_session_closed: recovered.last_session_closed,
        };
        recovered.state.check_invariants();
        Ok(PersistentStorage { state: recovered.state, wal, poisoned: false, report, _lock: lock })
    }

    fn bootstrap(config: &PersistentStorageConfig, fs: F, format: SegmentFormat) -> Result<Self, OpenError> {
        let dir = &config.path;
        let mut lock = None;
        // Checked before and after taking the lock (which creates wal.lock), so that a
        // bootstrap never leaves a lock file in a directory it refuses.
        for _ in 0..2 {
            match inspect_directory(&fs, dir)? {
                DirectoryContents::NotADirectory => {
                    return Err(OpenError::NotADirectory { path: dir.clone() })
                }
                DirectoryContents::Missing(MissingLog::NoDirectory) => create_directories(&fs, dir)?,
                DirectoryContents::Missing(_) => {}
                DirectoryContents::Log => return Err(OpenError::AlreadyInitialized { path: dir.clone() }),
                DirectoryContents::Other(names) => {
                    return Err(OpenError::DirectoryNotEmpty {
                        path: dir.clone(),
                        names: first_names(names),
                    });
                }
            }
            if lock.is_none() {
                lock = Some(lock_directory(&fs, dir)?);
            }
        }
        remove_unfinished_segments(&fs, dir)?;
        let mut state = LogState::default();
        if config.mode == OpenMode::Replace {
            state.possible_loss = Some(PossibleLoss { lsn: 1, cause: LossCause::LogReplaced });
        }
        let wal =
            Wal::start(fs, dir, format, config.policy(), |out| encode_checkpoint(out, &state.checkpoint()))?;
        let report = OpenReport {
            mode: config.mode,
            created: true,
            tail: Tail::Clean,
            removed_strays: Vec::new(),
            possible_loss: state.possible_loss,
            previous_session_closed: false,
        };
        let lock = lock.expect("taken in the first pass");
        Ok(PersistentStorage { state, wal, poisoned: false, report, _lock: lock })
    }
}

/// What a data directory holds, as far as opening it is concerned.
enum DirectoryContents {
    /// The path is a file (or one of its parents is).
    NotADirectory,
    /// No log (the directory may not exist).
    Missing(MissingLog),
    /// At least one segment file.
    Log,
    /// No segment file, but entries that are not the WAL's (names sorted).
    Other(Vec<String>),
}

fn inspect_directory<F: FileSystem>(fs: &F, dir: &Path) -> Result<DirectoryContents, OpenError> {
    match fs.path_kind(dir).map_err(|source| io_error("inspect", dir, source))? {
        PathKind::Missing => return Ok(DirectoryContents::Missing(MissingLog::NoDirectory)),
        PathKind::NotADirectory => return Ok(DirectoryContents::NotADirectory),
        PathKind::Directory => {}
    }
    let names = fs.list_names(dir).map_err(|source| io_error("list", dir, source))?;
    let mut other: Vec<String> = Vec::new();
    for name in names {
        match parse_file_name(&name) {
            Some((_, false)) => return Ok(DirectoryContents::Log),
            Some((_, true)) => {}
            None if name == LOCK_FILE_NAME => {}
            None => other.push(name),
        }
    }
    other.sort();
    Ok(match other.is_empty() {
        true => DirectoryContents::Missing(MissingLog::NoLogFiles),
        false => DirectoryContents::Other(other),
    })
}

fn first_names(mut names: Vec<String>) -> Vec<String> {
    names.truncate(LISTED_FILES_MAX);
    names
}

/// Creates `dir` and every missing parent, syncing each new directory's parent so the whole
/// chain is durable (not only the last link).
fn create_directories<F: FileSystem>(fs: &F, dir: &Path) -> Result<(), OpenError> {
    let mut missing = Vec::new();
    let mut current = dir.to_path_buf();
    loop {
        match fs.path_kind(&current).map_err(|source| io_error("inspect", &current, source))? {
            PathKind::Directory => break,
            PathKind::NotADirectory => return Err(OpenError::NotADirectory { path: current }),
            PathKind::Missing => {}
        }
        let parent = current.parent().filter(|parent| !parent.as_os_str().is_empty()).map(Path::to_path_buf);
        missing.push(current);
        match parent {
            Some(parent) => current = parent,
            None => break,
        }
    }
    for created in missing.iter().rev() {
        match fs.create_dir(created) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(io_error("create", created, source)),
        }
        let parent = parent_dir(created);
        fs.sync_dir(&parent).map_err(|source| io_error("sync directory", &parent, source))?;
    }
    Ok(())
}

/// Removes `.tmp` segments an interrupted bootstrap left (the directory holds no log).
fn remove_unfinished_segments<F: FileSystem>(fs: &F, dir: &Path) -> Result<(), OpenError> {
    let names = fs.list_files(dir).map_err(|source| io_error("list", dir, source))?;
    let unfinished: Vec<PathBuf> = names
        .iter()
        .filter(|name| parse_file_name(name).is_some_and(|(_, tmp)| tmp))
        .map(|name| dir.join(name))
        .collect();
    if unfinished.is_empty() {
        return Ok(());
    }
    for path in &unfinished {
        fs.remove_file(path).map_err(|source| io_error("remove", path, source))?;
    }
    fs.sync_dir(dir).map_err(|source| io_error("sync directory", dir, source))
}

fn lock_directory<F: FileSystem>(fs: &F, dir: &Path) -> Result<F::DirLock, OpenError> {
    fs.lock_dir(dir).map_err(|error| match error {
        LockError::Held { holder_pid } => OpenError::Locked { path: dir.to_path_buf(), holder_pid },
        LockError::Io(source) => io_error("lock", &dir.join(LOCK_FILE_NAME), source),
    })
}

fn io_error(operation: &'static str, path: &Path, source: io::Error) -> OpenError {
    OpenError::Io { operation, path: path.to_path_buf(), source }
}

/// What a read-only open found: the recovered state and how the log ends, as opening for
/// writes would see it (nothing is repaired or removed).
#[derive(Debug)]
pub struct ReadOnlyLog<E, S> {
    /// The replayed state.
    pub state: LogState<E, S>,
    /// Whether a writer held the directory's lock when it was read. With a live writer, the
    /// result is a snapshot of a log being written: a torn tail may be a write in flight.
    pub writer: LockState,
    /// The owner recorded in the segment headers.
    pub identity: Identity,
    /// The value type tag recorded in the segment headers.
    pub type_tag: String,
    /// The segments, oldest first.
    pub segments: Vec<SegmentInfo>,
    /// The lsn of the last valid frame.
    pub last_lsn: u64,
    /// How the log ends.
    pub tail: Tail,
    /// True if the last frame is a Close frame.
    pub last_session_closed: bool,
    /// Files opening for writes would remove.
    pub strays: Vec<PathBuf>,
}

impl<E, S> ReadOnlyLog<E, S> {
    /// True if a writer opening this log would report
    /// [`OpenReport::acknowledged_state_may_be_lost`].
    pub fn acknowledged_state_may_be_lost(&self) -> bool {
        self.state.possible_loss().is_some() || self.tail.may_have_lost_acknowledged_data()
    }
}

/// Reads the data directory `dir` on `fs` without changing it and without holding any lock
/// (it only probes whether a writer holds one), decoding values with `D`. `observe` sees every
/// verified frame in log order. A directory without a log is [`OpenError::LogMissing`].
pub fn open_read_only_with<D: ValueDecoder, F: FileSystem>(
    fs: &F,
    dir: &Path,
    expected: Expected<'_>,
    observe: &mut dyn FnMut(FrameView<'_>),
) -> Result<ReadOnlyLog<D::Entry, D::Snapshot>, OpenError> {
    match inspect_directory(fs, dir)? {
        DirectoryContents::NotADirectory => return Err(OpenError::NotADirectory { path: dir.to_path_buf() }),
        DirectoryContents::Missing(found) => {
            return Err(OpenError::LogMissing { path: dir.to_path_buf(), found })
        }
        DirectoryContents::Other(names) => {
            let found = MissingLog::OtherFilesOnly { count: names.len(), names: first_names(names) };
            return Err(OpenError::LogMissing { path: dir.to_path_buf(), found });
        }
        DirectoryContents::Log => {}
    }
    let writer = fs.probe_lock(dir).map_err(|source| io_error("probe the lock of", dir, source))?;
    let Some(recovered) = recover::<D, F>(fs, dir, expected, Mode::ReadOnly, observe)? else {
        return Err(OpenError::LogMissing { path: dir.to_path_buf(), found: MissingLog::NoLogFiles });
    };
    Ok(ReadOnlyLog {
        state: recovered.state,
        writer,
        identity: recovered.identity,
        type_tag: recovered.type_tag,
        segments: recovered.segments,
        last_lsn: recovered.last_lsn,
        tail: recovered.tail,
        last_session_closed: recovered.last_session_closed,
        strays: recovered.strays,
    })
}

impl<T, S, F: FileSystem> PersistentStorage<T, S, F> {
    /// True once a write or flush failed: every later write and flush returns `Poisoned`.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// `fdatasync` and directory `fsync` calls made through this storage's file system.
    pub fn sync_counts(&self) -> SyncCounts {
        self.wal.fs().sync_counts()
    }

    /// How many segment files the log has now.
    pub fn segment_count(&self) -> usize {
        self.wal.segment_count()
    }

    /// What the open found.
    pub fn open_report(&self) -> &OpenReport {
        &self.report
    }

    /// The unresolved possible loss of acknowledged state the log records now.
    pub fn possible_loss(&self) -> Option<PossibleLoss> {
        self.state.possible_loss()
    }

    /// The file system (a [`sim_fs::SimFs`] to crash, or the real one).
    pub fn fs(&self) -> &F {
        self.wal.fs()
    }

    fn fail<V>(&mut self, error: StorageError) -> StorageResult<V> {
        self.poisoned = true;
        Err(error)
    }

    /// The owner recorded in the segment headers, as the core names it.
    pub fn replica_identity(&self) -> ReplicaIdentity {
        let identity = self.wal.identity();
        ReplicaIdentity {
            cluster_id: identity.cluster_id,
            configuration_id: identity.configuration_id,
            pid: identity.node_id,
        }
    }

    /// A `SetIdentity` op must name the owner the headers record.
    fn check_identity_ops(&self, ops: &[StorageOp<T, S>]) -> Option<StorageError> {
        let stored = self.replica_identity();
        ops.iter().find_map(|op| match op {
            StorageOp::SetIdentity(given) if *given != stored => {
                Some(StorageError::IdentityMismatch { stored, given: *given })
            }
            _ => None,
        })
    }
}

impl<T, S, F> PersistentStorage<T, S, F>
where
    T: Serialize,
    S: Serialize,
    F: FileSystem,
{
    /// A clean close: flushes, then writes and syncs a Close frame, whose record that every
    /// earlier frame was synced lets the next open prove damage to the newest frames (instead
    /// of reporting a possible loss). Dropping the storage without `close` is a crash as far as
    /// the log is concerned (nothing is lost, but nothing is proven either).
    pub fn close(mut self) -> StorageResult<()> {
        if self.poisoned {
            return Err(StorageError::Poisoned);
        }
        self.wal.close().map_err(StorageError::from)
    }

    /// Declares the replica repaired after a possible loss (it holds again everything it may
    /// have acknowledged, re-fetched from its peers): appends a frame that clears the recorded
    /// loss, durable at the next flush. Does nothing if no loss is recorded.
    pub fn resolve_possible_loss(&mut self) -> StorageResult<()> {
        if self.poisoned {
            return Err(StorageError::Poisoned);
        }
        if self.state.possible_loss.is_none() {
            return Ok(());
        }
        if let Err(error) = self.append(FrameKind::LossResolved, |_| Ok(())) {
            return self.fail(error.into());
        }
        self.state.possible_loss = None;
        Ok(())
    }

    /// Encodes one frame into the pending batch, rolling the segment if it is full.
    fn append(
        &mut self,
        kind: FrameKind,
        encode: impl FnOnce(&mut Vec<u8>) -> Result<(), EncodeError>,
    ) -> Result<(), wal::WalError> {
        self.wal.append_frame(kind, encode)?;
        if self.wal.needs_roll() {
            let checkpoint = self.state.checkpoint();
            self.wal.roll(|out| encode_checkpoint(out, &checkpoint))?;
        }
        self.wal.maybe_write_out()
    }
}

impl<T, S, F> Storage<T, S> for PersistentStorage<T, S, F>
where
    T: Clone + Serialize + DeserializeOwned,
    S: Clone + Serialize + DeserializeOwned,
    F: FileSystem,
{
    /// Validates the call, encodes it as one frame of the pending batch (rolling the segment
    /// if it is full), then applies it in memory. Any failure changes no state in memory and
    /// poisons the storage.
    fn write_atomically(&mut self, ops: &mut Vec<StorageOp<T, S>>) -> StorageResult<()> {
        if self.poisoned {
            return Err(StorageError::Poisoned);
        }
        if let Some(error) = self.check_identity_ops(ops) {
            return self.fail(error);
        }
        ops.retain(|op| !matches!(op, StorageOp::SetIdentity(_)));
        if ops.is_empty() {
            return Ok(());
        }
        if let Err(error) = self.state.validate(ops) {
            return self.fail(error);
        }
        if let Err(error) = self.append(FrameKind::Write, |out| encode_ops(out, ops)) {
            return self.fail(error.into());
        }
        let segment = self.wal.active_id();
        for op in ops.drain(..) {
            self.state.apply(op, segment);
        }
        Ok(())
    }

    /// Group commit: one write and one `fdatasync` for every call since the last flush; then
    /// removes segments whose entries are all compacted.
    fn flush(&mut self) -> StorageResult<()> {
        if self.poisoned {
            return Err(StorageError::Poisoned);
        }
        if let Err(error) = self.wal.flush() {
            return self.fail(error.into());
        }
        let keep_from = self.state.oldest_live_segment().unwrap_or_else(|| self.wal.active_id());
        if keep_from > self.wal.oldest_id() {
            if let Err(error) = self.wal.remove_segments_before(keep_from) {
                return self.fail(error.into());
            }
        }
        Ok(())
    }

    fn get_entries(&self, from: LogIndex, to: LogIndex) -> StorageResult<Vec<Proposal<T>>> {
        self.state.get_entries(from, to)
    }

    fn get_log_end(&self) -> StorageResult<LogIndex> {
        Ok(self.state.log_end())
    }

    fn get_compacted_idx(&self) -> StorageResult<LogIndex> {
        Ok(self.state.compacted_idx())
    }

    fn get_promise(&self) -> StorageResult<Option<Ballot>> {
        Ok(self.state.promise)
    }

    fn get_accepted_round(&self) -> StorageResult<Option<Ballot>> {
        Ok(self.state.accepted_round)
    }

    fn get_decided_idx(&self) -> StorageResult<LogIndex> {
        Ok(self.state.decided_idx)
    }

    fn get_stopsign(&self) -> StorageResult<Option<StopSign>> {
        Ok(self.state.stopsign.clone())
    }

    fn get_snapshot(&self) -> StorageResult<Option<S>> {
        Ok(self.state.snapshot.clone())
    }

    fn get_incarnation(&self) -> StorageResult<u64> {
        Ok(self.state.incarnation)
    }

    /// The owner recorded in every segment header.
    fn get_identity(&self) -> StorageResult<Option<ReplicaIdentity>> {
        Ok(Some(self.replica_identity()))
    }
}
