//! Behaviour of `PersistentStorage` beyond the conformance suite: recovery decisions (torn tail
//! dropped, corruption refused with file and offset, foreign directories), group commit (one
//! fdatasync per flush), fail-stop after I/O errors, and segment removal. The cases of issue 9
//! (locking, deleted tails, possible losses, open modes) are in `no_silent_loss.rs`.

use std::path::{Path, PathBuf};

use omnipaxos_core::{
    ballot_leader_election::Ballot,
    storage::{Storage, StorageError, StorageOp},
};
use omnipaxos_storage::{
    conformance::{observe, proposals, SumSnapshot},
    persistent_storage::{
        format::segment_frames,
        fs::SyncCounts,
        recovery::{segment_file_name, Tail},
        sim_fs::{CrashVariant, SimFs, SimOpKind},
        OpenError, OpenMode, PersistentStorage, PersistentStorageConfig,
    },
};

type SimStorage = PersistentStorage<u64, SumSnapshot, SimFs>;

const DIR: &str = "/data/node1";

/// Restarts the log in `DIR`.
fn config() -> PersistentStorageConfig {
    PersistentStorageConfig::new(DIR, 1, 1).segment_size_bytes(4096)
}

fn segment(id: u64) -> PathBuf {
    Path::new(DIR).join(segment_file_name(id))
}

/// Bootstraps a new log in `DIR`.
fn create(fs: SimFs) -> SimStorage {
    SimStorage::open_with_fs(&config().mode(OpenMode::Bootstrap), fs).expect("bootstrap")
}

fn open(fs: SimFs) -> Result<SimStorage, OpenError> {
    SimStorage::open_with_fs(&config(), fs)
}

fn write(storage: &mut SimStorage, mut ops: Vec<StorageOp<u64, SumSnapshot>>) {
    storage.write_atomically(&mut ops).expect("write");
}

/// The offsets of the valid frames of a segment file, checkpoint first.
fn frame_offsets(bytes: &[u8]) -> Vec<usize> {
    segment_frames(bytes).iter().map(|(offset, _)| *offset).collect()
}

/// A storage with three flushed batches of entries in one segment.
fn three_batches() -> (SimFs, SimStorage) {
    let fs = SimFs::new();
    let mut storage = create(fs.clone());
    for batch in 0..3 {
        write(&mut storage, vec![StorageOp::AppendEntries(proposals(batch * 4, batch * 4 + 4, 1))]);
        storage.flush().expect("flush");
    }
    (fs, storage)
}

#[test]
fn group_commit_makes_one_fdatasync_per_flush() {
    let fs = SimFs::new();
    let big_segments = config().segment_size_bytes(1 << 20);
    let mut storage = SimStorage::open_with_fs(&big_segments.clone().mode(OpenMode::Bootstrap), fs.clone())
        .expect("create");
    let before = storage.sync_counts();
    for idx in 0..100 {
        write(
            &mut storage,
            vec![StorageOp::AppendEntries(proposals(idx, idx + 1, 1)), StorageOp::SetDecidedIdx(idx)],
        );
    }
    assert_eq!(storage.sync_counts(), before, "writes alone never sync");
    storage.flush().expect("flush");
    let after = storage.sync_counts();
    assert_eq!(after.data_syncs - before.data_syncs, 1, "one fdatasync for 100 writes");
    assert_eq!(after.dir_syncs, before.dir_syncs, "no directory sync without directory changes");
    storage.flush().expect("empty flush");
    assert_eq!(storage.sync_counts(), after, "nothing to make durable, no sync");
    let recovered =
        SimStorage::open_with_fs(&big_segments, fs.crash(CrashVariant::LoseUnsynced, 0)).expect("reopen");
    assert_eq!(observe(&recovered), observe(&storage));
}

#[test]
fn an_unsynced_tail_is_dropped_and_a_second_open_agrees() {
    let (fs, mut storage) = three_batches();
    let acknowledged = observe(&storage);
    write(&mut storage, vec![StorageOp::AppendEntries(proposals(12, 30, 2))]);
    fs.fail_op(SimOpKind::SyncData, 0);
    assert!(matches!(storage.flush(), Err(StorageError::Io(_))), "the injected fsync failure surfaces");
    for variant in CrashVariant::ALL {
        let recovered = open(fs.crash(variant, 11)).expect("recover");
        let state = observe(&recovered);
        assert!(
            state == acknowledged || state.log_end == 30,
            "{variant:?}: a prefix of calls, got {state:?}"
        );
        let report = recovered.open_report().clone();
        match variant {
            CrashVariant::LoseUnsynced => assert_eq!(report.tail, Tail::Clean),
            // Every byte of the frame landed, one bit flipped: the frame is complete, so
            // nothing tells a torn write from damage to synced data. Reported, not hidden.
            CrashVariant::FlipUnsyncedBit => {
                assert_eq!(state, acknowledged, "the flipped frame is dropped");
                assert!(matches!(report.tail, Tail::PossibleLoss { .. }), "{:?}", report.tail);
                assert!(report.acknowledged_state_may_be_lost());
            }
            _ => assert!(!matches!(report.tail, Tail::PossibleLoss { .. }), "{variant:?}: {:?}", report.tail),
        }
        let again = open(recovered.fs().crash(CrashVariant::LoseUnsynced, 0)).expect("second open");
        assert_eq!(observe(&again), state, "{variant:?}: opening twice gives the same state");
        assert_eq!(again.open_report().tail, Tail::Clean, "{variant:?}: the tail was repaired");
        assert_eq!(again.open_report().possible_loss, report.possible_loss, "{variant:?}: the loss is kept");
    }
}

#[test]
fn corruption_followed_by_synced_frames_is_refused_with_file_and_offset() {
    let (fs, storage) = three_batches();
    drop(storage);
    let bytes = fs.file_bytes(&segment(1)).expect("segment 1");
    let offsets = frame_offsets(&bytes);
    assert_eq!(offsets.len(), 4, "checkpoint and three write frames");
    fs.corrupt_byte(&segment(1), offsets[1] + 40, 0x10);
    match open(fs.crash(CrashVariant::LoseUnsynced, 0)) {
        Err(OpenError::Corrupt { file, offset, reason }) => {
            assert_eq!(file, segment(1));
            assert_eq!(offset, offsets[1] as u64, "the offset of the bad frame");
            assert!(reason.contains("synced"), "{reason}");
        }
        other => panic!("corruption must be refused, got {:?}", other.map(|s| observe(&s))),
    }
}

#[test]
fn corruption_in_a_sealed_segment_is_refused() {
    let fs = SimFs::new();
    let mut storage = create(fs.clone());
    for batch in 0..40 {
        write(&mut storage, vec![StorageOp::AppendEntries(proposals(batch * 5, batch * 5 + 5, 1))]);
        storage.flush().expect("flush");
    }
    assert!(storage.segment_count() >= 3, "the log rolled: {} segments", storage.segment_count());
    let offsets = frame_offsets(&fs.file_bytes(&segment(1)).expect("segment 1"));
    let last = *offsets.last().expect("frames");
    fs.corrupt_byte(&segment(1), last, 0x01);
    match open(fs.crash(CrashVariant::LoseUnsynced, 0)) {
        Err(OpenError::Corrupt { file, offset, .. }) => assert_eq!((file, offset), (segment(1), last as u64)),
        other => panic!("corruption must be refused, got {:?}", other.map(|s| observe(&s))),
    }
}

#[test]
fn a_lost_segment_with_live_entries_is_refused() {
    let fs = SimFs::new();
    let mut storage = create(fs.clone());
    for batch in 0..40 {
        write(&mut storage, vec![StorageOp::AppendEntries(proposals(batch * 5, batch * 5 + 5, 1))]);
        storage.flush().expect("flush");
    }
    drop(storage);
    fs.remove_durably(&segment(2));
    match open(fs.crash(CrashVariant::LoseUnsynced, 0)) {
        Err(OpenError::Corrupt { reason, .. }) => assert!(reason.contains("missing"), "{reason}"),
        other => panic!("a lost segment must be refused, got {:?}", other.map(|s| observe(&s))),
    }
}

#[test]
fn segments_whose_entries_are_compacted_are_removed() {
    let fs = SimFs::new();
    let mut storage = create(fs.clone());
    for batch in 0..40 {
        write(&mut storage, vec![StorageOp::AppendEntries(proposals(batch * 5, batch * 5 + 5, 1))]);
        storage.flush().expect("flush");
    }
    let rolled = storage.segment_count();
    write(&mut storage, vec![StorageOp::SetSnapshot(Some(SumSnapshot(5))), StorageOp::Trim(190)]);
    storage.flush().expect("flush");
    assert!(
        storage.segment_count() < rolled,
        "{} segments before, {} after",
        rolled,
        storage.segment_count()
    );
    let expected = observe(&storage);
    for variant in CrashVariant::ALL {
        let recovered = open(fs.crash(variant, 3)).expect("recover after removal");
        assert_eq!(observe(&recovered), expected, "{variant:?}");
    }
}

#[test]
fn a_directory_of_another_cluster_or_node_is_refused() {
    let fs = SimFs::new();
    let mut storage = create(fs.clone());
    write(&mut storage, vec![StorageOp::SetPromise(Ballot::with(1, 2, 0, 1))]);
    storage.flush().expect("flush");
    drop(storage);
    let others = [
        PersistentStorageConfig { node_id: 2, ..config() },
        PersistentStorageConfig { configuration_id: 2, ..config() },
        config().cluster_id(7),
    ];
    for other in others {
        match SimStorage::open_with_fs(&other, fs.clone()) {
            Err(OpenError::ForeignDirectory { expected, found, .. }) => {
                assert_eq!(expected, other.identity());
                assert_eq!(found, config().identity());
            }
            result => panic!("{other:?} must be refused, got {:?}", result.map(|s| observe(&s))),
        }
    }
    assert_eq!(
        open(fs).expect("the owner opens").get_promise().expect("read"),
        Some(Ballot::with(1, 2, 0, 1))
    );
}

#[test]
fn a_failed_fsync_poisons_writes_but_not_reads() {
    let (fs, mut storage) = three_batches();
    write(&mut storage, vec![StorageOp::SetDecidedIdx(5)]);
    let before = observe(&storage);
    fs.fail_op(SimOpKind::SyncData, 0);
    assert!(matches!(storage.flush(), Err(StorageError::Io(_))));
    assert!(storage.is_poisoned());
    assert!(matches!(storage.flush(), Err(StorageError::Poisoned)), "never retry an fsync");
    assert!(matches!(
        storage.write_atomically(&mut vec![StorageOp::SetDecidedIdx(6)]),
        Err(StorageError::Poisoned)
    ));
    assert_eq!(observe(&storage), before, "reads keep working");
}

#[test]
fn a_failed_segment_roll_changes_nothing_and_poisons() {
    let fs = SimFs::new();
    let mut storage = create(fs.clone());
    write(&mut storage, vec![StorageOp::AppendEntries(proposals(0, 60, 1))]);
    storage.flush().expect("flush");
    let before = observe(&storage);
    fs.fail_op(SimOpKind::Rename, 0);
    let result = storage.write_atomically(&mut vec![StorageOp::AppendEntries(proposals(60, 120, 1))]);
    assert!(matches!(result, Err(StorageError::Io(_))), "the roll's rename fails: {result:?}");
    assert!(storage.is_poisoned());
    assert_eq!(observe(&storage), before, "the failed call is not visible");
    let recovered = open(fs.crash(CrashVariant::FlipUnsyncedBit, 1)).expect("recover");
    assert_eq!(observe(&recovered), before);
}

#[test]
fn sync_counts_include_segment_rolls() {
    let fs = SimFs::new();
    let mut storage = create(fs);
    let start = storage.sync_counts();
    write(&mut storage, vec![StorageOp::AppendEntries(proposals(0, 60, 1))]);
    storage.flush().expect("flush");
    write(&mut storage, vec![StorageOp::AppendEntries(proposals(60, 120, 1))]);
    storage.flush().expect("flush");
    let used = storage.sync_counts();
    let rolls = storage.segment_count() as u64 - 1;
    assert!(rolls >= 1, "the second batch rolled");
    // Per roll: fdatasync of the new segment's header and checkpoint, fsync of the directory,
    // fdatasync of the old segment's last frames and Seal, and (SimFs prepares on the calling
    // thread) fdatasync of the filled segment after the new one.
    let expected = SyncCounts {
        data_syncs: start.data_syncs + 2 + 3 * rolls,
        dir_syncs: start.dir_syncs + rolls,
        background_syncs: 0,
    };
    assert_eq!(used, expected);
}

/// The real file system: reopen after a clean shutdown, with rolls and removals on disk.
#[test]
fn reopens_from_disk_with_rolled_and_removed_segments() {
    let root = tempfile::tempdir().expect("temporary directory");
    let config = PersistentStorageConfig::new(root.path().join("node1"), 3, 2).segment_size_bytes(4096);
    let mut storage = PersistentStorage::<u64, SumSnapshot>::open(&config.clone().mode(OpenMode::Bootstrap))
        .expect("create");
    for batch in 0..50 {
        let mut ops = vec![
            StorageOp::AppendEntries(proposals(batch * 10, batch * 10 + 10, 1)),
            StorageOp::SetDecidedIdx(batch),
        ];
        storage.write_atomically(&mut ops).expect("write");
        storage.flush().expect("flush");
    }
    storage.write_atomically(&mut vec![StorageOp::Trim(450)]).expect("trim");
    storage.flush().expect("flush");
    storage.write_atomically(&mut vec![StorageOp::SetPromise(Ballot::with(3, 9, 0, 2))]).expect("write");
    storage.flush().expect("flush");
    let expected = observe(&storage);
    let names: Vec<String> = std::fs::read_dir(config.path.clone())
        .expect("list")
        .map(|entry| entry.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    let segments = names.iter().filter(|name| name.ends_with(".log")).count();
    assert_eq!(segments, storage.segment_count(), "removed segments are gone from the directory: {names:?}");
    assert!(
        names.iter().filter(|name| name.ends_with(".tmp")).count() <= 1,
        "at most the prepared next segment"
    );
    drop(storage);
    let reopened = PersistentStorage::<u64, SumSnapshot>::open(&config).expect("reopen");
    assert_eq!(observe(&reopened), expected);
    assert_eq!(reopened.get_entries(450, 500).expect("read"), proposals(450, 500, 1));
}

/// A checkpoint as large as a segment (here: 256-byte segments, whose header and checkpoint
/// alone nearly fill one) must not make every write roll and write another checkpoint: the
/// fault harness saw 1 MiB segments behind a snapshot past 1 MiB fill a 512 MiB disk in 5 s.
/// A segment holds frames worth at least its checkpoint before it rolls.
#[test]
fn a_checkpoint_as_large_as_a_segment_does_not_make_every_write_roll() {
    let fs = SimFs::new();
    let config = config().segment_size_bytes(256);
    let mut storage =
        SimStorage::open_with_fs(&config.clone().mode(OpenMode::Bootstrap), fs.clone()).expect("bootstrap");
    let writes = 60;
    for i in 0..writes {
        write(&mut storage, vec![StorageOp::AppendEntries(proposals(i, i + 1, 1))]);
        storage.flush().expect("flush");
    }
    let segments = storage.segment_count();
    assert!(segments <= writes as usize / 2 + 1, "{segments} segments for {writes} single-entry writes");
    let expected = observe(&storage);
    drop(storage);
    assert_eq!(observe(&SimStorage::open_with_fs(&config, fs).expect("reopen")), expected);
}
