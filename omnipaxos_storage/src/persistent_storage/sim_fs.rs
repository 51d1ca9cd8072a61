//! [`SimFs`]: an in-memory file system with a crash model, for crash-point enumeration and for
//! simulators.
//!
//! Each file has a *durable* and a *current* content; each directory entry change (create,
//! rename, remove, mkdir) is *pending* until the directory is synced. A crash builds a new file
//! system from the durable state plus some of what was pending, as chosen by a
//! [`CrashVariant`]:
//!
//! ```text
//!   write_all_at ──► current bytes ──sync_data──► durable bytes
//!   create / rename / remove / mkdir ──► pending dir ops ──sync_dir(parent)──► durable entries
//!
//!   crash(LoseUnsynced)      durable bytes,                           no pending dir op
//!   crash(KeepPrefix)        durable + a prefix of the current bytes, a prefix of the dir ops
//!   crash(KeepRandomSectors) durable + random unsynced 512 B sectors, a prefix of the dir ops
//!   crash(FlipUnsyncedBit)   current bytes with one unsynced bit flipped, every dir op
//!   process_crash()          current bytes and entries visible, durable state unchanged
//! ```
//!
//! This is the weakest model the WAL must survive (ALICE: unsynced writes may be lost, torn or
//! reordered; only fsync of the file and of the directory make anything durable). Every
//! mutating call is a *crash point*: with capture on, the file system records its whole state
//! after each one, so a test can crash the WAL after every write, sync, create and rename.
//! Randomness comes from a caller's seed only.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt, io,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
};

use super::fs::{parent_dir, FileSystem, LockError, LockState, PathKind, SyncCounts, WalFile};

/// Size of the unit a crash keeps or loses in [`CrashVariant::KeepRandomSectors`].
pub const SECTOR_BYTES: usize = 512;

/// How a crash treats what was not yet synced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CrashVariant {
    /// Every unsynced byte and directory change is lost.
    LoseUnsynced,
    /// Each file keeps a random prefix of its current bytes over its durable bytes; a random
    /// prefix of the pending directory changes survives.
    KeepPrefix,
    /// Each unsynced 512-byte sector survives or not at random (torn and reordered writes); a
    /// random prefix of the pending directory changes survives.
    KeepRandomSectors,
    /// Everything reached the disk, but one random bit of the unsynced bytes flipped.
    FlipUnsyncedBit,
}

impl CrashVariant {
    /// Every variant, in a fixed order.
    pub const ALL: [CrashVariant; 4] = [
        CrashVariant::LoseUnsynced,
        CrashVariant::KeepPrefix,
        CrashVariant::KeepRandomSectors,
        CrashVariant::FlipUnsyncedBit,
    ];
}

/// The kinds of mutating call, for crash-point reports and fault injection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SimOpKind {
    /// `create_dir`.
    CreateDir,
    /// `create_new`.
    Create,
    /// `write_all_at`.
    Write,
    /// `sync_data`.
    SyncData,
    /// `rename`.
    Rename,
    /// `remove_file`.
    Remove,
    /// `sync_dir`.
    SyncDir,
}

/// The state of the file system right after one mutating call.
#[derive(Clone)]
pub struct CrashPoint {
    /// 0 for the first mutating call since capture started.
    pub op_index: u64,
    /// What the call was.
    pub op: SimOpKind,
    /// The file or directory it named.
    pub path: PathBuf,
    /// The label set with [`SimFs::set_label`] when the call was made.
    pub label: u64,
    image: SimImage,
}

impl CrashPoint {
    /// The file system a restarted process finds after a crash right after this call.
    pub fn crash(&self, variant: CrashVariant, seed: u64) -> SimFs {
        SimFs::from_image(self.image.crash(variant, seed))
    }

    /// The file system a restarted process finds after only the process died right after this
    /// call: see [`SimFs::process_crash`].
    pub fn process_crash(&self) -> SimFs {
        SimFs::from_image(self.image.clone())
    }
}

impl fmt::Debug for CrashPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} {:?} {} (label {})", self.op_index, self.op, self.path.display(), self.label)
    }
}

#[derive(Clone, Debug, Default)]
struct Inode {
    durable: Vec<u8>,
    current: Vec<u8>,
}

#[derive(Clone, Debug)]
enum DirOp {
    CreateDir(PathBuf),
    CreateFile(PathBuf, usize),
    Rename(PathBuf, PathBuf),
    Remove(PathBuf),
}

impl DirOp {
    /// The directory whose sync makes this change durable.
    fn parent(&self) -> PathBuf {
        match self {
            DirOp::CreateDir(path) | DirOp::CreateFile(path, _) | DirOp::Remove(path) => parent_dir(path),
            DirOp::Rename(from, _) => parent_dir(from),
        }
    }
}

/// Directory entries: files (path to inode) and directories.
#[derive(Clone, Debug, Default)]
struct Entries {
    files: BTreeMap<PathBuf, usize>,
    dirs: BTreeSet<PathBuf>,
}

impl Entries {
    fn apply(&mut self, op: &DirOp) {
        match op {
            DirOp::CreateDir(path) => {
                self.dirs.insert(path.clone());
            }
            DirOp::CreateFile(path, inode) => {
                self.files.insert(path.clone(), *inode);
            }
            DirOp::Rename(from, to) => {
                if let Some(inode) = self.files.remove(from) {
                    self.files.insert(to.clone(), inode);
                }
            }
            DirOp::Remove(path) => {
                self.files.remove(path);
            }
        }
    }
}

#[derive(Clone, Debug, Default)]
struct SimImage {
    inodes: Vec<Inode>,
    durable: Entries,
    current: Entries,
    /// Invariant: applying these to `durable` in order gives `current`.
    pending: Vec<DirOp>,
}

/// SplitMix64: a tiny seeded generator, so the crash model needs no dependency.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..=max`.
    fn up_to(&mut self, max: usize) -> usize {
        let bound = u64::try_from(max).expect("usize fits in u64") + 1;
        usize::try_from(self.next_u64() % bound).expect("below a usize bound")
    }

    fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }
}

impl SimImage {
    fn crash(&self, variant: CrashVariant, seed: u64) -> SimImage {
        let mut rng = SplitMix64(seed);
        let kept_dir_ops = match variant {
            CrashVariant::LoseUnsynced => 0,
            CrashVariant::KeepPrefix | CrashVariant::KeepRandomSectors => rng.up_to(self.pending.len()),
            CrashVariant::FlipUnsyncedBit => self.pending.len(),
        };
        let mut entries = self.durable.clone();
        for op in &self.pending[..kept_dir_ops] {
            entries.apply(op);
        }
        let mut inodes = vec![Inode::default(); self.inodes.len()];
        for &inode in entries.files.values() {
            let content = crash_content(&self.inodes[inode], variant, &mut rng);
            inodes[inode] = Inode { durable: content.clone(), current: content };
        }
        SimImage { inodes, durable: entries.clone(), current: entries, pending: Vec::new() }
    }
}

/// The byte ranges where `current` differs from `durable` (bytes beyond `durable` included).
fn unsynced_ranges(inode: &Inode) -> Vec<(usize, usize)> {
    let mut ranges = Vec::new();
    let mut start = None;
    for position in 0..inode.current.len() {
        let differs = inode.durable.get(position) != Some(&inode.current[position]);
        match (differs, start) {
            (true, None) => start = Some(position),
            (false, Some(first)) => {
                ranges.push((first, position));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(first) = start {
        ranges.push((first, inode.current.len()));
    }
    ranges
}

/// What one file holds after a crash.
fn crash_content(inode: &Inode, variant: CrashVariant, rng: &mut SplitMix64) -> Vec<u8> {
    assert!(inode.current.len() >= inode.durable.len(), "files never shrink");
    match variant {
        CrashVariant::LoseUnsynced => inode.durable.clone(),
        CrashVariant::KeepPrefix => {
            let kept = rng.up_to(inode.current.len());
            let mut content = inode.durable.clone();
            content.resize(content.len().max(kept), 0);
            content[..kept].copy_from_slice(&inode.current[..kept]);
            content
        }
        CrashVariant::KeepRandomSectors => {
            let grows = inode.current.len() > inode.durable.len() && rng.coin();
            let length = if grows { inode.current.len() } else { inode.durable.len() };
            let mut content = inode.durable.clone();
            content.resize(length, 0);
            for sector_start in (0..length).step_by(SECTOR_BYTES) {
                let sector_end = (sector_start + SECTOR_BYTES).min(length);
                if rng.coin() {
                    content[sector_start..sector_end]
                        .copy_from_slice(&inode.current[sector_start..sector_end]);
                }
            }
            content
        }
        CrashVariant::FlipUnsyncedBit => {
            let mut content = inode.current.clone();
            let ranges = unsynced_ranges(inode);
            let total: usize = ranges.iter().map(|(start, end)| end - start).sum();
            if total > 0 {
                let mut pick = rng.up_to(total - 1);
                for (start, end) in ranges {
                    if pick < end - start {
                        let bit = rng.up_to(7);
                        content[start + pick] ^= 1 << bit;
                        break;
                    }
                    pick -= end - start;
                }
            }
            content
        }
    }
}

#[derive(Debug, Default)]
struct SimState {
    image: SimImage,
    counts: SyncCounts,
    op_count: u64,
    label: u64,
    captures: Option<Vec<CrashPoint>>,
    /// `(kind, n)`: the `n`-th later call of `kind` (0 = the next) fails without effect.
    faults: Vec<(SimOpKind, u64)>,
    /// Directories whose lock is held (by a [`SimDirLock`]). Not part of the disk image: a
    /// crash ends every process, so a crashed disk starts with no lock held.
    locks: BTreeSet<PathBuf>,
    /// Bytes read so far.
    bytes_read: u64,
}

impl SimState {
    /// Counts a mutating call down against the injected faults; `Err` if it must fail.
    fn check_fault(&mut self, kind: SimOpKind) -> io::Result<()> {
        let before = self.faults.len();
        self.faults.retain(|(fault_kind, remaining)| !(*fault_kind == kind && *remaining == 0));
        let fired = self.faults.len() < before;
        for (fault_kind, remaining) in &mut self.faults {
            if *fault_kind == kind {
                *remaining -= 1;
            }
        }
        if fired {
            return Err(io::Error::other(format!("injected {kind:?} failure")));
        }
        Ok(())
    }

    /// Records a crash point after a successful mutating call.
    fn completed(&mut self, op: SimOpKind, path: &Path) {
        let op_index = self.op_count;
        self.op_count += 1;
        let label = self.label;
        let image = self.image.clone();
        if let Some(captures) = &mut self.captures {
            captures.push(CrashPoint { op_index, op, path: path.to_path_buf(), label, image });
        }
    }

    fn push_dir_op(&mut self, op: DirOp) {
        self.image.current.apply(&op);
        self.image.pending.push(op);
    }

    fn require_dir(&self, dir: &Path) -> io::Result<()> {
        if self.image.current.dirs.contains(dir) {
            Ok(())
        } else {
            Err(io::Error::new(io::ErrorKind::NotFound, format!("no directory {}", dir.display())))
        }
    }

    fn inode_of(&self, path: &Path) -> io::Result<usize> {
        self.image
            .current
            .files
            .get(path)
            .copied()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no file {}", path.display())))
    }
}

/// An in-memory file system with a crash model. Clones share the same disk.
#[derive(Clone, Debug)]
pub struct SimFs {
    state: Arc<Mutex<SimState>>,
}

impl Default for SimFs {
    fn default() -> Self {
        SimFs::new()
    }
}

impl SimFs {
    /// An empty file system holding only the root directory `/`.
    pub fn new() -> SimFs {
        let mut image = SimImage::default();
        image.durable.dirs.insert(PathBuf::from("/"));
        image.current.dirs.insert(PathBuf::from("/"));
        SimFs::from_image(image)
    }

    fn from_image(image: SimImage) -> SimFs {
        SimFs { state: Arc::new(Mutex::new(SimState { image, ..SimState::default() })) }
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        self.state.lock().expect("a panic while holding the SimFs lock")
    }

    /// The file system a restarted process finds if the machine crashed now.
    pub fn crash(&self, variant: CrashVariant, seed: u64) -> SimFs {
        SimFs::from_image(self.lock().image.crash(variant, seed))
    }

    /// The file system a restarted process finds if only the process died now (SIGKILL): every
    /// write is visible, as the kernel kept its page cache, but what was not synced is still
    /// not durable, so a later [`SimFs::crash`] can lose it. No lock is held.
    pub fn process_crash(&self) -> SimFs {
        SimFs::from_image(self.lock().image.clone())
    }

    /// Starts (or restarts) recording a [`CrashPoint`] after every mutating call.
    pub fn capture_crash_points(&self) {
        self.lock().captures = Some(Vec::new());
    }

    /// The crash points recorded since capture started; capture stops.
    pub fn take_crash_points(&self) -> Vec<CrashPoint> {
        self.lock().captures.take().unwrap_or_default()
    }

    /// Tags the following calls (their crash points carry it): a test stores there what was
    /// acknowledged when the call happened.
    pub fn set_label(&self, label: u64) {
        self.lock().label = label;
    }

    /// Mutating calls made so far.
    pub fn op_count(&self) -> u64 {
        self.lock().op_count
    }

    /// Makes the `n`-th later call of `kind` (0 = the very next) fail without effect.
    pub fn fail_op(&self, kind: SimOpKind, n: u64) {
        self.lock().faults.push((kind, n));
    }

    /// The current content of a file, if it exists.
    pub fn file_bytes(&self, path: &Path) -> Option<Vec<u8>> {
        let state = self.lock();
        let inode = state.inode_of(path).ok()?;
        Some(state.image.inodes[inode].current.clone())
    }

    /// Bit rot: XORs `mask` into the byte at `offset`, durably, as if the medium changed.
    /// Panics if the file or offset does not exist.
    pub fn corrupt_byte(&self, path: &Path, offset: usize, mask: u8) {
        let mut state = self.lock();
        let inode = state.inode_of(path).expect("corrupt_byte: the file exists");
        let inode = &mut state.image.inodes[inode];
        inode.current[offset] ^= mask;
        if offset < inode.durable.len() {
            inode.durable[offset] ^= mask;
        }
    }

    /// Overwrites bytes of a file at once and durably (extending it if needed), as a failing
    /// disk or an operator might: zeroing frames, for example.
    pub fn overwrite_durably(&self, path: &Path, offset: usize, bytes: &[u8]) {
        let mut state = self.lock();
        let inode = state.inode_of(path).expect("overwrite_durably: the file exists");
        let inode = &mut state.image.inodes[inode];
        for content in [&mut inode.current, &mut inode.durable] {
            if content.len() < offset + bytes.len() {
                content.resize(offset + bytes.len(), 0);
            }
            content[offset..offset + bytes.len()].copy_from_slice(bytes);
        }
    }

    /// Cuts a file to `length` bytes at once and durably, as `truncate` by an operator might.
    pub fn truncate_durably(&self, path: &Path, length: usize) {
        let mut state = self.lock();
        let inode = state.inode_of(path).expect("truncate_durably: the file exists");
        let inode = &mut state.image.inodes[inode];
        inode.current.truncate(length);
        inode.durable.truncate(length);
    }

    /// Removes a file at once and durably, as an operator or a failing disk might.
    pub fn remove_durably(&self, path: &Path) {
        let mut state = self.lock();
        state.image.durable.files.remove(path);
        state.image.current.files.remove(path);
        state.image.pending.retain(|op| !matches!(op, DirOp::CreateFile(created, _) if created == path));
    }
}

/// A file opened through [`SimFs`]; it names an inode, so it survives renames.
#[derive(Debug)]
pub struct SimFile {
    fs: SimFs,
    inode: usize,
    path: PathBuf,
}

impl WalFile for SimFile {
    fn write_all_at(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let mut state = self.fs.lock();
        state.check_fault(SimOpKind::Write)?;
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let content = &mut state.image.inodes[self.inode].current;
        if content.len() < start + bytes.len() {
            content.resize(start + bytes.len(), 0);
        }
        content[start..start + bytes.len()].copy_from_slice(bytes);
        state.completed(SimOpKind::Write, &self.path);
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let mut state = self.fs.lock();
        state.counts.data_syncs += 1;
        state.check_fault(SimOpKind::SyncData)?;
        let inode = &mut state.image.inodes[self.inode];
        inode.durable.clone_from(&inode.current);
        state.completed(SimOpKind::SyncData, &self.path);
        Ok(())
    }

    fn read_at(&mut self, offset: u64, buffer: &mut [u8]) -> io::Result<usize> {
        let mut state = self.fs.lock();
        let content = &state.image.inodes[self.inode].current;
        let start = usize::try_from(offset).map_err(io::Error::other)?.min(content.len());
        let count = buffer.len().min(content.len() - start);
        buffer[..count].copy_from_slice(&content[start..start + count]);
        state.bytes_read += count as u64;
        Ok(count)
    }

    fn size_bytes(&mut self) -> io::Result<u64> {
        Ok(self.fs.lock().image.inodes[self.inode].current.len() as u64)
    }
}

/// A held lock of a directory of a [`SimFs`]; dropping it releases the lock.
#[derive(Debug)]
pub struct SimDirLock {
    fs: SimFs,
    dir: PathBuf,
}

impl Drop for SimDirLock {
    fn drop(&mut self) {
        self.fs.lock().locks.remove(&self.dir);
    }
}

impl FileSystem for SimFs {
    type File = SimFile;
    type DirLock = SimDirLock;

    fn path_kind(&self, path: &Path) -> io::Result<PathKind> {
        let state = self.lock();
        Ok(if state.image.current.dirs.contains(path) {
            PathKind::Directory
        } else if state.image.current.files.contains_key(path) {
            PathKind::NotADirectory
        } else {
            PathKind::Missing
        })
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.check_fault(SimOpKind::CreateDir)?;
        state.require_dir(&parent_dir(path))?;
        if state.image.current.dirs.contains(path) || state.image.current.files.contains_key(path) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{} exists", path.display())));
        }
        state.push_dir_op(DirOp::CreateDir(path.to_path_buf()));
        state.completed(SimOpKind::CreateDir, path);
        Ok(())
    }

    fn list_names(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = self.lock();
        state.require_dir(dir)?;
        let files = state.image.current.files.keys();
        let dirs = state.image.current.dirs.iter();
        Ok(files
            .chain(dirs)
            .filter(|path| path.parent() == Some(dir))
            .filter_map(|path| path.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    fn open_for_read(&self, path: &Path) -> io::Result<SimFile> {
        self.open_for_write(path)
    }

    fn bytes_read(&self) -> u64 {
        self.lock().bytes_read
    }

    fn lock_dir(&self, dir: &Path) -> Result<SimDirLock, LockError> {
        let mut state = self.lock();
        state.require_dir(dir).map_err(LockError::Io)?;
        if !state.locks.insert(dir.to_path_buf()) {
            return Err(LockError::Held { holder_pid: None });
        }
        Ok(SimDirLock { fs: self.clone(), dir: dir.to_path_buf() })
    }

    fn probe_lock(&self, dir: &Path) -> io::Result<LockState> {
        Ok(match self.lock().locks.contains(dir) {
            true => LockState::Held { holder_pid: None },
            false => LockState::Free,
        })
    }

    fn list_files(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = self.lock();
        state.require_dir(dir)?;
        let names = state
            .image
            .current
            .files
            .keys()
            .filter(|path| path.parent() == Some(dir))
            .filter_map(|path| path.file_name()?.to_str().map(str::to_owned))
            .collect();
        Ok(names)
    }

    fn create_new(&self, path: &Path) -> io::Result<SimFile> {
        let mut state = self.lock();
        state.check_fault(SimOpKind::Create)?;
        state.require_dir(&parent_dir(path))?;
        if state.image.current.files.contains_key(path) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{} exists", path.display())));
        }
        let inode = state.image.inodes.len();
        state.image.inodes.push(Inode::default());
        state.push_dir_op(DirOp::CreateFile(path.to_path_buf(), inode));
        state.completed(SimOpKind::Create, path);
        Ok(SimFile { fs: self.clone(), inode, path: path.to_path_buf() })
    }

    fn open_for_write(&self, path: &Path) -> io::Result<SimFile> {
        let inode = self.lock().inode_of(path)?;
        Ok(SimFile { fs: self.clone(), inode, path: path.to_path_buf() })
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut state = self.lock();
        let inode = state.inode_of(path)?;
        let bytes = state.image.inodes[inode].current.clone();
        state.bytes_read += bytes.len() as u64;
        Ok(bytes)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.check_fault(SimOpKind::Rename)?;
        state.inode_of(from)?;
        assert_eq!(parent_dir(from), parent_dir(to), "SimFs renames within one directory only");
        state.push_dir_op(DirOp::Rename(from.to_path_buf(), to.to_path_buf()));
        state.completed(SimOpKind::Rename, to);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.check_fault(SimOpKind::Remove)?;
        state.inode_of(path)?;
        state.push_dir_op(DirOp::Remove(path.to_path_buf()));
        state.completed(SimOpKind::Remove, path);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock();
        state.counts.dir_syncs += 1;
        state.check_fault(SimOpKind::SyncDir)?;
        state.require_dir(dir)?;
        let pending = std::mem::take(&mut state.image.pending);
        let (synced, still_pending): (Vec<DirOp>, Vec<DirOp>) =
            pending.into_iter().partition(|op| op.parent() == dir);
        for op in &synced {
            state.image.durable.apply(op);
        }
        state.image.pending = still_pending;
        state.completed(SimOpKind::SyncDir, dir);
        Ok(())
    }

    fn sync_counts(&self) -> SyncCounts {
        self.lock().counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(text: &str) -> PathBuf {
        PathBuf::from(text)
    }

    #[test]
    fn unsynced_bytes_and_entries_are_lost() {
        let fs = SimFs::new();
        fs.create_dir(&path("/d")).unwrap();
        fs.sync_dir(&path("/")).unwrap();
        let mut file = fs.create_new(&path("/d/a")).unwrap();
        file.write_all_at(0, b"hello").unwrap();
        file.sync_data().unwrap();
        let lost = fs.crash(CrashVariant::LoseUnsynced, 1);
        assert!(lost.read(&path("/d/a")).is_err(), "the entry was never synced");
        fs.sync_dir(&path("/d")).unwrap();
        file.write_all_at(5, b" world").unwrap();
        let lost = fs.crash(CrashVariant::LoseUnsynced, 1);
        assert_eq!(lost.read(&path("/d/a")).unwrap(), b"hello");
        let flipped = fs.crash(CrashVariant::FlipUnsyncedBit, 7).read(&path("/d/a")).unwrap();
        assert_eq!(&flipped[..5], b"hello", "synced bytes never flip");
        assert_ne!(&flipped[5..], b" world", "one unsynced bit flipped");
        assert_eq!(fs.sync_counts(), SyncCounts { data_syncs: 1, dir_syncs: 2, background_syncs: 0 });
    }

    #[test]
    fn renames_are_durable_after_directory_sync() {
        let fs = SimFs::new();
        let mut file = fs.create_new(&path("/a.tmp")).unwrap();
        file.write_all_at(0, b"x").unwrap();
        file.sync_data().unwrap();
        fs.sync_dir(&path("/")).unwrap();
        fs.rename(&path("/a.tmp"), &path("/a")).unwrap();
        let lost = fs.crash(CrashVariant::LoseUnsynced, 3);
        assert_eq!(lost.list_files(&path("/")).unwrap(), vec!["a.tmp".to_string()]);
        fs.sync_dir(&path("/")).unwrap();
        let kept = fs.crash(CrashVariant::LoseUnsynced, 3);
        assert_eq!(kept.list_files(&path("/")).unwrap(), vec!["a".to_string()]);
    }

    #[test]
    fn crash_points_are_captured_with_labels_and_faults_fail_once() {
        let fs = SimFs::new();
        fs.capture_crash_points();
        fs.set_label(9);
        let mut file = fs.create_new(&path("/f")).unwrap();
        fs.fail_op(SimOpKind::Write, 1);
        file.write_all_at(0, b"a").unwrap();
        assert!(file.write_all_at(1, b"b").is_err(), "the second write fails");
        file.write_all_at(1, b"c").unwrap();
        let points = fs.take_crash_points();
        let kinds: Vec<SimOpKind> = points.iter().map(|point| point.op).collect();
        assert_eq!(kinds, vec![SimOpKind::Create, SimOpKind::Write, SimOpKind::Write]);
        assert!(points.iter().all(|point| point.label == 9));
        assert_eq!(fs.read(&path("/f")).unwrap(), b"ac");
    }
}
