//! The file-system port of the write-ahead log: every byte the WAL reads or writes goes through
//! [`FileSystem`] and [`WalFile`].
//!
//! Two implementations: [`StdFs`] (the real disk, `std::fs`) and
//! [`SimFs`](super::sim_fs::SimFs) (memory, with a crash model), so the crash-point tests run
//! the production code paths over a disk whose unsynced bytes can be lost, torn or flipped.
//!
//! The port is deliberately small: positioned reads and writes, `fdatasync`, the directory
//! operations the WAL needs (create, rename, remove, fsync of the directory), and the
//! directory lock. Both implementations count syncs and bytes read, so tests and benchmarks
//! can assert and report "one fdatasync per batch" and "opening an empty log reads 1 MiB"
//! without `strace`.

use std::{
    fs::{File, OpenOptions, TryLockError},
    io,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use super::format::{encode_prepared_marker, fill_bytes, PREPARED_MARKER_BYTES};

/// The lock file in a data directory: a writer holds an exclusive advisory lock (`flock`) on it
/// for the storage's lifetime and records its pid in it.
pub const LOCK_FILE_NAME: &str = "wal.lock";

/// An open file of the WAL. Writes are positioned; nothing is durable before
/// [`WalFile::sync_data`] returns `Ok`.
pub trait WalFile {
    /// Writes all of `bytes` at `offset`, extending the file (with zeros) if needed.
    fn write_all_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()>;
    /// `fdatasync`: makes every write to this file durable, and the file length with it.
    fn sync_data(&mut self) -> io::Result<()>;
    /// Reads up to `buffer.len()` bytes at `offset`; fewer only at the end of the file.
    fn read_at(&mut self, offset: u64, buffer: &mut [u8]) -> io::Result<usize>;
    /// The file's current length.
    fn size_bytes(&mut self) -> io::Result<u64>;
    /// A hint that the file's synced contents will not be read soon: their cached pages may be
    /// dropped. Best effort, never an error.
    fn drop_cached_pages(&mut self) {}
}

/// Size of one write when preallocating a file with the fill pattern.
pub const FILL_CHUNK_BYTES: usize = 1 << 20;

/// What is at a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathKind {
    /// Nothing.
    Missing,
    /// A directory.
    Directory,
    /// Anything else: a regular file, a socket, ...
    NotADirectory,
}

/// Whether a data directory's lock is held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockState {
    /// No process holds the lock: no writer is running.
    Free,
    /// A writer holds it.
    Held {
        /// The pid the holder recorded in the lock file, if it could be read.
        holder_pid: Option<u32>,
    },
}

/// Why the directory lock was not taken.
#[derive(Debug)]
pub enum LockError {
    /// Another open storage (in this or another process) holds it.
    Held {
        /// The pid the holder recorded, if it could be read.
        holder_pid: Option<u32>,
    },
    /// The lock file could not be created, opened or locked.
    Io(io::Error),
}

/// A new file being filled with the fill pattern and synced, on this thread or another.
#[derive(Debug)]
pub enum FilledFile<W> {
    /// Done (or failed) already.
    Ready(io::Result<W>),
    /// Being made by a background thread.
    Background(std::thread::JoinHandle<io::Result<W>>),
}

impl<W> FilledFile<W> {
    /// Waits until the file is complete and synced.
    pub fn wait(self) -> io::Result<W> {
        match self {
            FilledFile::Ready(result) => result,
            FilledFile::Background(handle) => {
                handle.join().unwrap_or_else(|_| Err(io::Error::other("the preallocation thread panicked")))
            }
        }
    }
}

/// Creates the new file `path` holding `bytes` bytes of segment `segment_id`'s fill pattern
/// and syncs it, through `fs`.
pub fn write_filled<F: FileSystem + ?Sized>(
    fs: &F,
    path: &Path,
    bytes: u64,
    segment_id: u64,
) -> io::Result<F::File> {
    let mut file = fs.create_new(path)?;
    let mut chunk = vec![0u8; FILL_CHUNK_BYTES.min(usize::try_from(bytes).unwrap_or(usize::MAX))];
    let mut offset = 0u64;
    while offset < bytes {
        let length = (bytes - offset).min(chunk.len() as u64) as usize;
        fill_bytes(segment_id, offset, &mut chunk[..length]);
        file.write_all_at(offset, &chunk[..length])?;
        offset += length as u64;
    }
    file.sync_data()?;
    // The fill sits in the page cache in large blocks (2 MiB on ext4 with large folios); left
    // there, every later fdatasync of a small frame wrote back a whole block (megabytes per
    // append, measured in docs/etcd-comparison.md). Dropped, a write dirties only its pages.
    file.drop_cached_pages();
    // Written only once the fill is durable (and never synced itself: it proves nothing but
    // that the sync above returned), so a later open can reuse the file instead of filling a
    // new one. The segment header overwrites it.
    if bytes >= PREPARED_MARKER_BYTES as u64 {
        file.write_all_at(0, &encode_prepared_marker(segment_id, bytes))?;
    }
    Ok(file)
}

/// The directory and file operations of the WAL.
///
/// Directory entries (a created, renamed or removed file) are durable only after
/// [`FileSystem::sync_dir`] of the directory that holds them returns `Ok`.
pub trait FileSystem {
    /// The open-file type.
    type File: WalFile;
    /// A held directory lock; dropping it releases the lock.
    type DirLock;
    /// What is at `path`.
    fn path_kind(&self, path: &Path) -> io::Result<PathKind>;
    /// Creates the directory `path`, whose parent exists (durable only after `sync_dir` of the
    /// parent).
    fn create_dir(&self, path: &Path) -> io::Result<()>;
    /// The names of the files in `dir` (not recursive, no directories), in any order.
    fn list_files(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// The names of every entry of `dir` (files, directories and anything else), in any order.
    fn list_names(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Creates a new, empty file; fails if it exists.
    fn create_new(&self, path: &Path) -> io::Result<Self::File>;
    /// Opens an existing file for positioned writes.
    fn open_for_write(&self, path: &Path) -> io::Result<Self::File>;
    /// Opens an existing file for positioned reads only.
    fn open_for_read(&self, path: &Path) -> io::Result<Self::File>;
    /// The whole content of a file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Renames a file within one directory, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// `fsync` of a directory: makes its entries durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// How many times `sync_data` and `sync_dir` were called so far, failed calls included.
    fn sync_counts(&self) -> SyncCounts;
    /// Bytes read through this file system so far (`read` and `read_at`).
    fn bytes_read(&self) -> u64;
    /// Takes the exclusive lock of the data directory `dir` (which exists) without waiting.
    fn lock_dir(&self, dir: &Path) -> Result<Self::DirLock, LockError>;
    /// Tells whether a writer holds the lock of `dir`, without keeping any lock.
    fn probe_lock(&self, dir: &Path) -> io::Result<LockState>;
    /// Creates the new file `path` holding `bytes` bytes of segment `segment_id`'s fill
    /// pattern, synced: the next segment, prepared before it is needed. The default does it at
    /// once, on this thread (deterministic, for simulated disks); [`StdFs`] does it on a
    /// background thread, off the write path.
    fn create_filled(&self, path: &Path, bytes: u64, segment_id: u64) -> FilledFile<Self::File> {
        FilledFile::Ready(write_filled(self, path, bytes, segment_id))
    }
}

/// Sync calls made through one file system value (and its clones).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncCounts {
    /// `fdatasync` calls on files.
    pub data_syncs: u64,
    /// `fsync` calls on directories.
    pub dir_syncs: u64,
    /// `fdatasync` calls of [`StdFs`]'s background thread preparing the next segment (not on
    /// any write's path).
    pub background_syncs: u64,
}

/// The real file system. Cloning shares the sync counters.
#[derive(Clone, Debug, Default)]
pub struct StdFs {
    counters: Arc<StdFsCounters>,
}

#[derive(Debug, Default)]
struct StdFsCounters {
    data_syncs: AtomicU64,
    dir_syncs: AtomicU64,
    background_syncs: AtomicU64,
    bytes_read: AtomicU64,
}

/// A file opened by [`StdFs`].
#[derive(Debug)]
pub struct StdFile {
    file: File,
    counters: Arc<StdFsCounters>,
}

impl WalFile for StdFile {
    #[cfg(target_os = "linux")]
    fn drop_cached_pages(&mut self) {
        use std::os::fd::AsRawFd;
        let advice = nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED;
        // Best effort: a file system without the hint keeps its pages, which costs only speed.
        let _ = nix::fcntl::posix_fadvise(self.file.as_raw_fd(), 0, 0, advice);
    }

    fn write_all_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all_at(bytes, offset)
    }

    /// `File::sync_data` is `fdatasync(2)` on Linux.
    fn sync_data(&mut self) -> io::Result<()> {
        self.counters.data_syncs.fetch_add(1, Ordering::Relaxed);
        self.file.sync_data()
    }

    fn read_at(&mut self, offset: u64, buffer: &mut [u8]) -> io::Result<usize> {
        let mut done = 0;
        while done < buffer.len() {
            match self.file.read_at(&mut buffer[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(count) => done += count,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        self.counters.bytes_read.fetch_add(done as u64, Ordering::Relaxed);
        Ok(done)
    }

    fn size_bytes(&mut self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
}

/// The lock of a data directory held through [`StdFs`]: the open lock file, `flock`ed
/// exclusively. Closing it (drop) releases the lock; so does the death of the process.
#[derive(Debug)]
pub struct StdDirLock {
    _file: File,
}

/// The pid recorded in a lock file (its first line), if readable.
fn recorded_pid(file: &File) -> Option<u32> {
    let mut buffer = [0u8; 32];
    let count = file.read_at(&mut buffer, 0).ok()?;
    let text = std::str::from_utf8(&buffer[..count]).ok()?;
    text.lines().next()?.trim().parse().ok()
}

impl FileSystem for StdFs {
    type File = StdFile;
    type DirLock = StdDirLock;

    fn path_kind(&self, path: &Path) -> io::Result<PathKind> {
        match std::fs::metadata(path) {
            Ok(metadata) if metadata.is_dir() => Ok(PathKind::Directory),
            Ok(_) => Ok(PathKind::NotADirectory),
            // ENOTDIR: a parent is not a directory, so nothing is at `path`.
            Err(error) if matches!(error.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {
                Ok(PathKind::Missing)
            }
            Err(error) => Err(error),
        }
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }

    fn list_names(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }

    fn open_for_read(&self, path: &Path) -> io::Result<StdFile> {
        let file = File::open(path)?;
        Ok(StdFile { file, counters: Arc::clone(&self.counters) })
    }

    fn bytes_read(&self) -> u64 {
        self.counters.bytes_read.load(Ordering::Relaxed)
    }

    /// `flock(LOCK_EX | LOCK_NB)` on `<dir>/wal.lock` (created if missing), then the pid is
    /// written into it. The lock belongs to the open file, so a second open in the same process
    /// fails too.
    fn lock_dir(&self, dir: &Path) -> Result<StdDirLock, LockError> {
        let path = dir.join(LOCK_FILE_NAME);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(LockError::Io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(LockError::Held { holder_pid: recorded_pid(&file) }),
            Err(TryLockError::Error(error)) => return Err(LockError::Io(error)),
        }
        // One write of the whole record, then cut what an earlier, longer record left: a
        // concurrent reader sees the old or the new first line.
        let record = format!("{}\n", std::process::id());
        file.write_all_at(record.as_bytes(), 0).map_err(LockError::Io)?;
        file.set_len(record.len() as u64).map_err(LockError::Io)?;
        Ok(StdDirLock { _file: file })
    }

    /// `flock(LOCK_SH | LOCK_NB)`, released at once: it fails only while a writer holds the
    /// exclusive lock.
    fn probe_lock(&self, dir: &Path) -> io::Result<LockState> {
        let file = match File::open(dir.join(LOCK_FILE_NAME)) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(LockState::Free),
            Err(error) => return Err(error),
        };
        match file.try_lock_shared() {
            Ok(()) => Ok(LockState::Free),
            Err(TryLockError::WouldBlock) => Ok(LockState::Held { holder_pid: recorded_pid(&file) }),
            Err(TryLockError::Error(error)) => Err(error),
        }
    }

    fn list_files(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                if let Some(name) = entry.file_name().to_str() {
                    names.push(name.to_owned());
                }
            }
        }
        Ok(names)
    }

    fn create_new(&self, path: &Path) -> io::Result<StdFile> {
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(path)?;
        Ok(StdFile { file, counters: Arc::clone(&self.counters) })
    }

    fn open_for_write(&self, path: &Path) -> io::Result<StdFile> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(StdFile { file, counters: Arc::clone(&self.counters) })
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let bytes = std::fs::read(path)?;
        self.counters.bytes_read.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(bytes)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.counters.dir_syncs.fetch_add(1, Ordering::Relaxed);
        File::open(dir)?.sync_all()
    }

    fn sync_counts(&self) -> SyncCounts {
        SyncCounts {
            data_syncs: self.counters.data_syncs.load(Ordering::Relaxed),
            dir_syncs: self.counters.dir_syncs.load(Ordering::Relaxed),
            background_syncs: self.counters.background_syncs.load(Ordering::Relaxed),
        }
    }

    /// Fills and syncs on a background thread (like etcd's WAL file pipeline), counted as
    /// `background_syncs`.
    fn create_filled(&self, path: &Path, bytes: u64, segment_id: u64) -> FilledFile<StdFile> {
        let counters = Arc::clone(&self.counters);
        let background = StdFs { counters: Arc::new(StdFsCounters::default()) };
        let path = path.to_path_buf();
        let spawned = std::thread::Builder::new().name("wal-preallocate".to_string()).spawn(move || {
            let file = write_filled(&background, &path, bytes, segment_id)?;
            counters.background_syncs.fetch_add(1, Ordering::Relaxed);
            Ok(StdFile { file: file.file, counters })
        });
        match spawned {
            Ok(handle) => FilledFile::Background(handle),
            Err(error) => FilledFile::Ready(Err(error)),
        }
    }
}

/// The directory holding `path`, for `sync_dir` after creating, renaming or removing `path`.
pub(crate) fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
