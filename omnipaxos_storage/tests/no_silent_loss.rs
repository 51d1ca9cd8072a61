//! The cases of issue 9, each of which lost acknowledged data silently (or opened a wrong
//! directory) before format version 2: a second writer on one directory, a deleted last
//! segment (or run of segments), a flipped byte in the last frame, zeroed frames after the last
//! checkpoint, a restart over a directory whose log is gone or that holds other files; and the
//! smaller ones: a path that is a file, a log of another entry type, an old format version,
//! parents of a new directory that were not made durable, the cost of opening an empty log.
//!
//! Most run over `SimFs` (deterministic, with durable damage injected as an operator or a
//! failing disk would); the lock and path cases also on the real file system. The lock across
//! two processes is tested in `omnipaxos_wal_tool/tests/lock.rs`.

use std::path::{Path, PathBuf};

use omnipaxos_core::storage::{Storage, StorageOp};
use omnipaxos_storage::{
    conformance::{observe, proposals, ObservedState, SumSnapshot},
    memory_storage::MemoryStorage,
    persistent_storage::{
        format::{segment_frames, LossCause, PossibleLoss},
        fs::{FileSystem, LockState},
        recovery::{segment_file_name, Tail},
        sim_fs::{CrashVariant, SimFs, SimOpKind},
        MissingLog, OpenError, OpenMode, PersistentStorage, PersistentStorageConfig,
    },
};

type SimStorage = PersistentStorage<u64, SumSnapshot, SimFs>;
type DiskStorage = PersistentStorage<u64, SumSnapshot>;

const DIR: &str = "/data/node1";

fn config(mode: OpenMode) -> PersistentStorageConfig {
    PersistentStorageConfig::new(DIR, 1, 1).mode(mode).segment_size_bytes(4096)
}

fn segment(id: u64) -> PathBuf {
    Path::new(DIR).join(segment_file_name(id))
}

fn restart(fs: &SimFs) -> Result<SimStorage, OpenError> {
    SimStorage::open_with_fs(&config(OpenMode::Restart), fs.clone())
}

/// `batches` flushed calls of 5 entries each; with 4 KiB segments, 40 batches roll several.
fn written(batches: u64) -> (SimFs, SimStorage) {
    let fs = SimFs::new();
    let mut storage = SimStorage::open_with_fs(&config(OpenMode::Bootstrap), fs.clone()).expect("bootstrap");
    for batch in 0..batches {
        let mut ops = vec![StorageOp::AppendEntries(proposals(batch * 5, batch * 5 + 5, 1))];
        storage.write_atomically(&mut ops).expect("write");
        storage.flush().expect("flush");
    }
    (fs, storage)
}

fn describe(result: Result<SimStorage, OpenError>) -> String {
    match result {
        Ok(storage) => format!("opened: {:?}, tail {:?}", observe(&storage), storage.open_report().tail),
        Err(error) => format!("error: {error}"),
    }
}

/// The last valid frame of segment `id` and its offset.
fn last_frame(fs: &SimFs, id: u64) -> (usize, usize) {
    let bytes = fs.file_bytes(&segment(id)).expect("segment");
    let frames = segment_frames(&bytes);
    let (offset, frame) = frames.last().expect("frames");
    (*offset, frame.len)
}

// ---- 1. One writer per directory -------------------------------------------------------------

#[test]
fn a_second_open_of_a_directory_is_locked_every_time_on_disk() {
    let root = tempfile::tempdir().expect("temporary directory");
    let dir = root.path().join("node1");
    let config = PersistentStorageConfig::new(&dir, 1, 1).segment_size_bytes(4096);
    let mut first = DiskStorage::open(&config.clone().mode(OpenMode::Bootstrap)).expect("bootstrap");
    first.write_atomically(&mut vec![StorageOp::AppendEntries(proposals(0, 3, 1))]).expect("write");
    first.flush().expect("flush");
    let me = Some(std::process::id());
    for attempt in 0..100 {
        match DiskStorage::open(&config) {
            Err(OpenError::Locked { path, holder_pid }) => assert_eq!((path, holder_pid), (dir.clone(), me)),
            other => panic!("attempt {attempt}: a second writer must be refused, got {:?}", other.err()),
        }
    }
    let message = DiskStorage::open(&config).err().expect("locked").to_string();
    assert!(message.contains(&format!("pid {}", std::process::id())), "{message}");
    // The read-only open works beside the writer and says there is one.
    let snapshot = DiskStorage::open_read_only(&config).expect("read-only open beside a writer");
    assert_eq!(snapshot.writer, LockState::Held { holder_pid: me });
    assert_eq!(snapshot.state.log_end(), 3);
    drop(first);
    let reopened = DiskStorage::open(&config).expect("the lock is released with the storage");
    assert_eq!(reopened.get_log_end().expect("read"), 3);
    assert_eq!(
        DiskStorage::open_read_only(&config).expect("read").writer,
        LockState::Held { holder_pid: me }
    );
    drop(reopened);
    assert_eq!(DiskStorage::open_read_only(&config).expect("read").writer, LockState::Free);
}

#[test]
fn a_second_open_of_a_directory_is_locked_on_the_simulated_disk() {
    let (fs, storage) = written(3);
    for _ in 0..100 {
        assert!(matches!(restart(&fs), Err(OpenError::Locked { holder_pid: None, .. })));
    }
    assert_eq!(fs.probe_lock(Path::new(DIR)).expect("probe"), LockState::Held { holder_pid: None });
    drop(storage);
    assert!(restart(&fs).is_ok(), "released with the storage");
}

// ---- 2. A deleted or truncated tail ----------------------------------------------------------

#[test]
fn a_deleted_last_segment_is_refused_naming_it() {
    let (fs, storage) = written(40);
    let last = storage.segment_count() as u64;
    assert!(last >= 3, "the log rolled: {last} segments");
    drop(storage);
    fs.remove_durably(&segment(last));
    match restart(&fs) {
        Err(OpenError::MissingSegment { sealed, missing }) => {
            assert_eq!((sealed, missing), (segment(last - 1), segment(last)));
        }
        other => panic!("a deleted last segment must be refused, got {}", describe(other)),
    }
    let message = restart(&fs).err().expect("refused").to_string();
    assert!(message.contains(&segment_file_name(last)) && message.contains("missing"), "{message}");
}

#[test]
fn deleted_last_two_segments_are_refused_naming_the_first_missing() {
    let (fs, storage) = written(40);
    let last = storage.segment_count() as u64;
    drop(storage);
    fs.remove_durably(&segment(last));
    fs.remove_durably(&segment(last - 1));
    match restart(&fs) {
        Err(OpenError::MissingSegment { sealed, missing }) => {
            assert_eq!((sealed, missing), (segment(last - 2), segment(last - 1)));
        }
        other => panic!("a deleted run of tail segments must be refused, got {}", describe(other)),
    }
}

#[test]
fn a_truncated_last_segment_is_refused() {
    let (fs, storage) = written(3);
    drop(storage);
    let (offset, len) = last_frame(&fs, 1);
    fs.truncate_durably(&segment(1), offset + len);
    match restart(&fs) {
        Err(OpenError::Corrupt { file, reason, .. }) => {
            assert_eq!(file, segment(1));
            assert!(reason.contains("truncated"), "{reason}");
        }
        other => panic!("a truncated segment must be refused, got {}", describe(other)),
    }
}

/// The order of a roll: the next segment exists durably before the seal that names it. A
/// crash in between (here: the seal's sync fails) leaves an interrupted roll, which recovery
/// undoes: the new segment is a stray, nothing acknowledged is lost.
#[test]
fn an_interrupted_roll_is_undone() {
    let (fs, mut storage) = written(2);
    let acknowledged = observe(&storage);
    let before = storage.segment_count();
    // Per roll on SimFs: sync of the new segment, then the seal's sync (fails here).
    fs.fail_op(SimOpKind::SyncData, 1);
    let rolled = storage.write_atomically(&mut vec![StorageOp::AppendEntries(proposals(10, 200, 1))]);
    assert!(rolled.is_err(), "the seal's sync failed");
    let crashed = fs.crash(CrashVariant::LoseUnsynced, 0);
    assert!(crashed.file_bytes(&segment(before as u64 + 1)).is_some(), "the new segment exists durably");
    let recovered = restart(&crashed).expect("an interrupted roll recovers");
    assert_eq!(observe(&recovered), acknowledged);
    assert!(recovered.open_report().removed_strays.contains(&segment(before as u64 + 1)));
    assert_eq!(recovered.segment_count(), before);
}

// ---- 3. Torn tail versus acknowledged loss ---------------------------------------------------

#[test]
fn a_flipped_byte_in_the_last_frame_after_a_clean_close_is_refused() {
    let (fs, storage) = written(3);
    storage.close().expect("close");
    let bytes = fs.file_bytes(&segment(1)).expect("segment");
    let frames = segment_frames(&bytes);
    // The Close frame is last; the last write frame before it is what a user would damage.
    let (offset, _) = frames[frames.len() - 2];
    fs.corrupt_byte(&segment(1), offset + 40, 0x08);
    match restart(&fs) {
        Err(OpenError::Corrupt { file, offset: at, reason }) => {
            assert_eq!((file, at), (segment(1), offset as u64));
            assert!(reason.contains("proves it was synced"), "{reason}");
        }
        other => panic!("damage before a Close frame is proven, got {}", describe(other)),
    }
}

#[test]
fn a_flipped_byte_in_the_last_frame_after_a_crash_is_a_recorded_possible_loss() {
    let (fs, storage) = written(3);
    let expected = state_after_batches(2);
    drop(storage);
    let (offset, _) = last_frame(&fs, 1);
    fs.corrupt_byte(&segment(1), offset + 40, 0x08);
    let lsn = 4; // checkpoint 1, then the three writes
    let read_only =
        SimStorage::open_read_only_with_fs(&config(OpenMode::Restart), &fs).expect("read-only open");
    assert!(matches!(read_only.tail, Tail::PossibleLoss { lsn: 4, .. }), "{:?}", read_only.tail);
    assert!(read_only.acknowledged_state_may_be_lost());
    let storage = restart(&fs).expect("open");
    let report = storage.open_report().clone();
    match &report.tail {
        Tail::PossibleLoss { file, offset: at, lsn: lost, .. } => {
            assert_eq!((file, *at, *lost), (&segment(1), offset as u64, lsn));
        }
        other => panic!("a complete bad last frame is a possible loss, never a silent torn tail: {other:?}"),
    }
    assert!(report.acknowledged_state_may_be_lost());
    assert_eq!(report.possible_loss, Some(PossibleLoss { lsn, cause: LossCause::DamagedTail }));
    assert_eq!(observe(&storage), expected, "the bad frame is dropped");
    // A crash right after the open keeps the signal: the Loss frame is in the log.
    let fs = storage.fs().crash(CrashVariant::LoseUnsynced, 0);
    let mut again = restart(&fs).expect("second open");
    assert_eq!(again.open_report().tail, Tail::Clean);
    assert!(again.open_report().acknowledged_state_may_be_lost(), "sticky across restarts");
    // Once the replica is repaired from its peers, the user resolves it.
    again.resolve_possible_loss().expect("resolve");
    again.flush().expect("flush");
    drop(again);
    let resolved = restart(&fs).expect("third open");
    assert!(!resolved.open_report().acknowledged_state_may_be_lost());
    assert_eq!(observe(&resolved), expected);
}

/// The state after the first `batches` calls of [`written`], from the model.
fn state_after_batches(batches: u64) -> ObservedState {
    let mut model = MemoryStorage::<u64, SumSnapshot>::default();
    for batch in 0..batches {
        let mut ops = vec![StorageOp::AppendEntries(proposals(batch * 5, batch * 5 + 5, 1))];
        model.write_atomically(&mut ops).expect("write");
    }
    observe(&model)
}

#[test]
fn frames_after_the_last_checkpoint_zeroed_are_refused() {
    for close in [false, true] {
        let (fs, storage) = written(40);
        let last = storage.segment_count() as u64;
        if close {
            storage.close().expect("close");
        } else {
            drop(storage);
        }
        let bytes = fs.file_bytes(&segment(last)).expect("segment");
        let frames = segment_frames(&bytes);
        assert!(frames.len() >= 2, "the last segment holds frames after its checkpoint");
        let (checkpoint_offset, checkpoint) = frames[0];
        let (end_offset, end_frame) = frames[frames.len() - 1];
        let from = checkpoint_offset + checkpoint.len;
        fs.overwrite_durably(&segment(last), from, &vec![0; end_offset + end_frame.len - from]);
        match restart(&fs) {
            Err(OpenError::Corrupt { file, offset, reason }) => {
                assert_eq!((file, offset), (segment(last), from as u64), "close {close}");
                assert!(reason.contains("erased"), "{reason}");
            }
            other => panic!("close {close}: zeroed frames must be refused, got {}", describe(other)),
        }
    }
}

/// Without preallocation there is no fill pattern: zeros after the last frame may be a torn
/// extension of the file or erased frames. Reported as a possible loss, never as a clean end.
#[test]
fn zeroed_frames_in_a_segment_that_was_not_preallocated_are_a_possible_loss() {
    let fs = SimFs::new();
    let growing = config(OpenMode::Bootstrap).preallocate_segments(false);
    let mut storage = SimStorage::open_with_fs(&growing, fs.clone()).expect("bootstrap");
    for batch in 0..3 {
        storage
            .write_atomically(&mut vec![StorageOp::AppendEntries(proposals(batch * 5, batch * 5 + 5, 1))])
            .expect("w");
        storage.flush().expect("flush");
    }
    drop(storage);
    let bytes = fs.file_bytes(&segment(1)).expect("segment");
    let frames = segment_frames(&bytes);
    let from = frames[1].0;
    fs.overwrite_durably(&segment(1), from, &vec![0; bytes.len() - from]);
    let storage = restart(&fs).expect("open");
    assert!(
        matches!(storage.open_report().tail, Tail::PossibleLoss { .. }),
        "{:?}",
        storage.open_report().tail
    );
    assert!(storage.open_report().acknowledged_state_may_be_lost());
}

// ---- 4. No amnesia: explicit bootstrap and restart -------------------------------------------

#[test]
fn restart_over_a_directory_whose_log_files_are_gone_is_refused() {
    let (fs, storage) = written(3);
    drop(storage);
    fs.remove_durably(&segment(1));
    match restart(&fs) {
        Err(OpenError::LogMissing { path, found: MissingLog::NoLogFiles }) => {
            assert_eq!(path, Path::new(DIR))
        }
        other => panic!("a restart without log files must be refused, got {}", describe(other)),
    }
    match restart(&SimFs::new()) {
        Err(OpenError::LogMissing { found: MissingLog::NoDirectory, .. }) => {}
        other => panic!("a restart without a directory must be refused, got {}", describe(other)),
    }
    // On disk: the lock file stays behind, and is not a log.
    let root = tempfile::tempdir().expect("temporary directory");
    let config = PersistentStorageConfig::new(root.path().join("node1"), 1, 1).segment_size_bytes(4096);
    drop(DiskStorage::open(&config.clone().mode(OpenMode::Bootstrap)).expect("bootstrap"));
    for entry in std::fs::read_dir(&config.path).expect("list") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|extension| extension != "lock") {
            std::fs::remove_file(path).expect("remove");
        }
    }
    assert!(matches!(
        DiskStorage::open(&config),
        Err(OpenError::LogMissing { found: MissingLog::NoLogFiles, .. })
    ));
    let message = DiskStorage::open(&config).err().expect("refused").to_string();
    assert!(message.contains("OpenMode::Replace") && message.contains("acknowledged state"), "{message}");
}

#[test]
fn a_directory_full_of_other_files_is_refused_and_left_untouched() {
    let root = tempfile::tempdir().expect("temporary directory");
    let dir = root.path().join("home");
    std::fs::create_dir_all(dir.join("photos")).expect("mkdir");
    std::fs::write(dir.join("notes.txt"), "x").expect("write");
    std::fs::write(dir.join("db.sqlite"), "y").expect("write");
    let config = PersistentStorageConfig::new(&dir, 1, 1);
    match DiskStorage::open(&config) {
        Err(OpenError::LogMissing { found: MissingLog::OtherFilesOnly { count, names }, .. }) => {
            assert_eq!(count, 3);
            assert_eq!(names, vec!["db.sqlite", "notes.txt", "photos"]);
        }
        other => panic!("restart over other files must be refused, got {:?}", other.err()),
    }
    match DiskStorage::open(&config.clone().mode(OpenMode::Bootstrap)) {
        Err(OpenError::DirectoryNotEmpty { names, .. }) => assert_eq!(names.len(), 3),
        other => panic!("bootstrap over other files must be refused, got {:?}", other.err()),
    }
    let mut left: Vec<String> = std::fs::read_dir(&dir)
        .expect("list")
        .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, vec!["db.sqlite", "notes.txt", "photos"], "nothing was created");
}

#[test]
fn bootstrap_refuses_a_directory_that_holds_a_log() {
    let (fs, storage) = written(1);
    drop(storage);
    match SimStorage::open_with_fs(&config(OpenMode::Bootstrap), fs.clone()) {
        Err(OpenError::AlreadyInitialized { path }) => assert_eq!(path, Path::new(DIR)),
        other => panic!("a second bootstrap must be refused, got {}", describe(other)),
    }
    assert!(matches!(
        SimStorage::open_with_fs(&config(OpenMode::Replace), fs),
        Err(OpenError::AlreadyInitialized { .. })
    ));
}

#[test]
fn replace_records_a_possible_loss_until_resolved() {
    let fs = SimFs::new();
    let mut storage = SimStorage::open_with_fs(&config(OpenMode::Replace), fs.clone()).expect("replace");
    let replaced = Some(PossibleLoss { lsn: 1, cause: LossCause::LogReplaced });
    assert_eq!(storage.open_report().possible_loss, replaced);
    for batch in 0..40 {
        storage
            .write_atomically(&mut vec![StorageOp::AppendEntries(proposals(batch * 5, batch * 5 + 5, 1))])
            .expect("w");
        storage.flush().expect("flush");
    }
    assert!(storage.segment_count() > 1, "rolled: the checkpoints carry the loss");
    drop(storage);
    let mut storage = restart(&fs).expect("restart");
    assert_eq!(storage.open_report().possible_loss, replaced, "sticky across restarts");
    storage.resolve_possible_loss().expect("resolve");
    storage.flush().expect("flush");
    drop(storage);
    assert_eq!(restart(&fs).expect("restart").open_report().possible_loss, None);
}

#[test]
fn a_clean_close_is_known_to_the_next_open() {
    let (fs, storage) = written(2);
    drop(storage);
    assert!(!restart(&fs).expect("open").open_report().previous_session_closed, "a drop is not a close");
    let storage = restart(&fs).expect("open");
    storage.close().expect("close");
    let reopened = restart(&fs).expect("open");
    assert!(reopened.open_report().previous_session_closed);
    assert_eq!(reopened.get_log_end().expect("read"), 10);
}

// ---- 5. Smaller things -----------------------------------------------------------------------

#[test]
fn a_path_that_is_a_regular_file_is_named() {
    let root = tempfile::tempdir().expect("temporary directory");
    let file = root.path().join("file");
    std::fs::write(&file, "x").expect("write");
    for mode in [OpenMode::Bootstrap, OpenMode::Restart, OpenMode::Replace] {
        match DiskStorage::open(&PersistentStorageConfig::new(&file, 1, 1).mode(mode)) {
            Err(OpenError::NotADirectory { path }) => assert_eq!(path, file),
            other => panic!("{mode:?}: expected NotADirectory, got {:?}", other.err()),
        }
    }
    let below = file.join("node1");
    match DiskStorage::open(&PersistentStorageConfig::new(&below, 1, 1).mode(OpenMode::Bootstrap)) {
        Err(OpenError::NotADirectory { path }) => {
            assert_eq!(path, file, "the parent that is a file is named")
        }
        other => panic!("expected NotADirectory for the parent, got {:?}", other.err()),
    }
}

#[test]
fn a_log_of_another_entry_type_is_a_type_error() {
    let root = tempfile::tempdir().expect("temporary directory");
    let config = PersistentStorageConfig::new(root.path().join("node1"), 1, 1).segment_size_bytes(4096);
    let mut strings =
        PersistentStorage::<String, ()>::open(&config.clone().mode(OpenMode::Bootstrap)).expect("boot");
    let entry = omnipaxos_core::util::Proposal { id: Default::default(), entry: "abc".to_string() };
    strings.write_atomically(&mut vec![StorageOp::AppendEntries(vec![entry])]).expect("write");
    strings.flush().expect("flush");
    drop(strings);
    match PersistentStorage::<u64, ()>::open(&config) {
        Err(OpenError::ValueTypeMismatch { recorded, expected, .. }) => {
            assert!(recorded.contains("String") && expected.contains("u64"), "{recorded} / {expected}");
        }
        other => panic!("expected a type error, got {:?}", other.err()),
    }
    assert!(PersistentStorage::<String, ()>::open(&config).is_ok(), "the right type opens");
}

#[test]
fn a_version_1_directory_is_refused_naming_both_versions() {
    let fs = SimFs::new();
    fs.create_dir(Path::new("/data")).expect("mkdir");
    fs.create_dir(Path::new(DIR)).expect("mkdir");
    let mut header = vec![0u8; 64];
    header[0..8].copy_from_slice(b"OPAXWAL\0");
    header[8..12].copy_from_slice(&1u32.to_le_bytes());
    header[12..16].copy_from_slice(&64u32.to_le_bytes());
    header[16..24].copy_from_slice(&1u64.to_le_bytes());
    let crc = crc32c::crc32c(&header[..60]);
    header[60..64].copy_from_slice(&crc.to_le_bytes());
    drop(fs.create_new(&segment(1)).expect("create"));
    fs.overwrite_durably(&segment(1), 0, &header);
    match restart(&fs) {
        Err(error @ OpenError::UnsupportedVersion { version: 1, .. }) => {
            let message = error.to_string();
            assert!(message.contains("version 1") && message.contains("version 2"), "{message}");
        }
        other => panic!("expected UnsupportedVersion, got {}", describe(other)),
    }
}

#[test]
fn every_created_parent_directory_is_durable() {
    let fs = SimFs::new();
    let deep = PersistentStorageConfig::new("/a/b/c/node1", 1, 1).segment_size_bytes(4096);
    let mut storage =
        SimStorage::open_with_fs(&deep.clone().mode(OpenMode::Bootstrap), fs.clone()).expect("boot");
    storage.write_atomically(&mut vec![StorageOp::AppendEntries(proposals(0, 5, 1))]).expect("write");
    storage.flush().expect("flush");
    let crashed = fs.crash(CrashVariant::LoseUnsynced, 0);
    let recovered = SimStorage::open_with_fs(&deep, crashed).expect("every parent survived the crash");
    assert_eq!(recovered.get_log_end().expect("read"), 5);
}

/// The cost of opening an empty log is one small read, not the whole preallocated segment.
#[test]
fn opening_an_empty_log_reads_one_small_chunk() {
    let fs = SimFs::new();
    let big = config(OpenMode::Bootstrap).segment_size_bytes(16 << 20);
    drop(SimStorage::open_with_fs(&big, fs.clone()).expect("bootstrap"));
    let before = fs.bytes_read();
    let storage =
        SimStorage::open_with_fs(&big.clone().mode(OpenMode::Restart), fs.clone()).expect("restart");
    let read = fs.bytes_read() - before;
    assert_eq!(storage.get_log_end().expect("read"), 0);
    assert!(read <= 256 << 10, "opening an empty 16 MiB segment read {read} bytes");
    println!("opening an empty log read {read} bytes of a 16 MiB segment");
}
