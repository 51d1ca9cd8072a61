//! The file-system port of the write-ahead log: every byte the WAL reads or writes goes through
//! [`FileSystem`] and [`WalFile`].
//!
//! Two implementations: [`StdFs`] (the real disk, `std::fs`) and
//! [`SimFs`](super::sim_fs::SimFs) (memory, with a crash model), so the crash-point tests run
//! the production code paths over a disk whose unsynced bytes can be lost, torn or flipped.
//!
//! The port is deliberately small: positioned writes, `fdatasync`, whole-file reads, and the
//! directory operations the WAL needs (create, rename, remove, fsync of the directory). Both
//! implementations count syncs, so tests and benchmarks can assert and report "one fdatasync per
//! batch" without `strace`.

use std::{
    fs::{File, OpenOptions},
    io,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

/// An open file of the WAL. Writes are positioned; nothing is durable before
/// [`WalFile::sync_data`] returns `Ok`.
pub trait WalFile {
    /// Writes all of `bytes` at `offset`, extending the file (with zeros) if needed.
    fn write_all_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()>;
    /// `fdatasync`: makes every write to this file durable, and the file length with it.
    fn sync_data(&mut self) -> io::Result<()>;
}

/// Size of one write of zeros when preallocating a file.
pub const ZERO_CHUNK_BYTES: usize = 1 << 20;

/// A new file being filled with zeros and synced, on this thread or another.
#[derive(Debug)]
pub enum ZeroedFile<W> {
    /// Done (or failed) already.
    Ready(io::Result<W>),
    /// Being made by a background thread.
    Background(std::thread::JoinHandle<io::Result<W>>),
}

impl<W> ZeroedFile<W> {
    /// Waits until the file is complete and synced.
    pub fn wait(self) -> io::Result<W> {
        match self {
            ZeroedFile::Ready(result) => result,
            ZeroedFile::Background(handle) => {
                handle.join().unwrap_or_else(|_| Err(io::Error::other("the preallocation thread panicked")))
            }
        }
    }
}

/// Creates the new file `path` holding `bytes` zeros and syncs it, through `fs`.
pub fn write_zeroed<F: FileSystem + ?Sized>(fs: &F, path: &Path, bytes: u64) -> io::Result<F::File> {
    let mut file = fs.create_new(path)?;
    let zeros = vec![0u8; ZERO_CHUNK_BYTES];
    let mut offset = 0u64;
    while offset < bytes {
        let chunk = (bytes - offset).min(ZERO_CHUNK_BYTES as u64);
        file.write_all_at(offset, &zeros[..chunk as usize])?;
        offset += chunk;
    }
    file.sync_data()?;
    Ok(file)
}

/// The directory and file operations of the WAL.
///
/// Directory entries (a created, renamed or removed file) are durable only after
/// [`FileSystem::sync_dir`] of the directory that holds them returns `Ok`.
pub trait FileSystem {
    /// The open-file type.
    type File: WalFile;
    /// True if `path` exists and is a directory.
    fn is_dir(&self, path: &Path) -> io::Result<bool>;
    /// Creates `path` and any missing parents (durable only after `sync_dir` of each parent).
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// The names of the files in `dir` (not recursive, no directories), in any order.
    fn list_files(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Creates a new, empty file; fails if it exists.
    fn create_new(&self, path: &Path) -> io::Result<Self::File>;
    /// Opens an existing file for positioned writes.
    fn open_for_write(&self, path: &Path) -> io::Result<Self::File>;
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
    /// Creates the new file `path` holding `bytes` zeros, synced: the next segment, prepared
    /// before it is needed. The default does it at once, on this thread (deterministic, for
    /// simulated disks); [`StdFs`] does it on a background thread, off the write path.
    fn create_zeroed(&self, path: &Path, bytes: u64) -> ZeroedFile<Self::File> {
        ZeroedFile::Ready(write_zeroed(self, path, bytes))
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
}

/// A file opened by [`StdFs`].
#[derive(Debug)]
pub struct StdFile {
    file: File,
    counters: Arc<StdFsCounters>,
}

impl WalFile for StdFile {
    fn write_all_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all_at(bytes, offset)
    }

    /// `File::sync_data` is `fdatasync(2)` on Linux.
    fn sync_data(&mut self) -> io::Result<()> {
        self.counters.data_syncs.fetch_add(1, Ordering::Relaxed);
        self.file.sync_data()
    }
}

impl FileSystem for StdFs {
    type File = StdFile;

    fn is_dir(&self, path: &Path) -> io::Result<bool> {
        match std::fs::metadata(path) {
            Ok(metadata) => Ok(metadata.is_dir()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(error) => Err(error),
        }
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
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
        std::fs::read(path)
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

    /// Zero-fills and syncs on a background thread (like etcd's WAL file pipeline), counted as
    /// `background_syncs`.
    fn create_zeroed(&self, path: &Path, bytes: u64) -> ZeroedFile<StdFile> {
        let counters = Arc::clone(&self.counters);
        let background = StdFs { counters: Arc::new(StdFsCounters::default()) };
        let path = path.to_path_buf();
        let spawned = std::thread::Builder::new().name("wal-preallocate".to_string()).spawn(move || {
            let file = write_zeroed(&background, &path, bytes)?;
            counters.background_syncs.fetch_add(1, Ordering::Relaxed);
            Ok(StdFile { file: file.file, counters })
        });
        match spawned {
            Ok(handle) => ZeroedFile::Background(handle),
            Err(error) => ZeroedFile::Ready(Err(error)),
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
