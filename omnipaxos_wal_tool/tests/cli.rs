//! `omnipaxos_wal_tool verify` and `dump` on directories written by `PersistentStorage`.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use omnipaxos_core::{
    ballot_leader_election::Ballot,
    storage::{Storage, StorageOp},
    util::{Proposal, ProposalId},
};
use omnipaxos_storage::persistent_storage::{
    format::segment_frames, recovery::segment_file_name, OpenMode, PersistentStorage, PersistentStorageConfig,
};

const TOOL: &str = env!("CARGO_BIN_EXE_omnipaxos_wal_tool");

fn tool(args: &[&str], dir: &Path) -> Output {
    Command::new(TOOL).args(args).arg(dir).output().expect("run the tool")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A directory with three flushed batches of `String` entries and a promise.
fn written_dir(root: &Path) -> PathBuf {
    let dir = root.join("node2");
    let config = PersistentStorageConfig::new(&dir, 4, 2).mode(OpenMode::Bootstrap).segment_size_bytes(4096);
    let mut storage = PersistentStorage::<String, ()>::open(&config).expect("create");
    for batch in 0..3u64 {
        let entries = (0..2)
            .map(|seq| Proposal {
                id: ProposalId { node: 2, seq: batch * 2 + seq, incarnation: 1 },
                entry: format!("value-{batch}-{seq}"),
            })
            .collect();
        storage
            .write_atomically(&mut vec![StorageOp::AppendEntries(entries), StorageOp::SetDecidedIdx(batch)])
            .expect("write");
        storage.flush().expect("flush");
    }
    storage.write_atomically(&mut vec![StorageOp::SetPromise(Ballot::with(4, 7, 0, 3))]).expect("write");
    storage.flush().expect("flush");
    dir
}

#[test]
fn verify_accepts_a_healthy_directory() {
    let root = tempfile::tempdir().expect("temporary directory");
    let dir = written_dir(root.path());
    let output = tool(&["verify"], &dir);
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", text(&output.stderr));
    assert!(stdout.contains("owner: cluster 0 configuration 4 node 2"), "{stdout}");
    assert!(stdout.contains("tail: clean") && stdout.contains("OK"), "{stdout}");
}

#[test]
fn dump_prints_state_entries_and_frames() {
    let root = tempfile::tempdir().expect("temporary directory");
    let dir = written_dir(root.path());
    let output = tool(&["dump", "--entries", "string", "--frames"], &dir);
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", text(&output.stderr));
    assert!(stdout.contains("promise: 7.0.3 (configuration 4)"), "{stdout}");
    assert!(stdout.contains("decided_idx: 2") && stdout.contains("log_end: 6"), "{stdout}");
    assert!(stdout.contains("entry 5 id=2#1/5 \"value-2-1\""), "{stdout}");
    assert!(stdout.contains("AppendEntries 2 entries"), "{stdout}");
    let hex = text(&tool(&["dump"], &dir).stdout);
    assert!(
        hex.contains("entry 0 id=2#1/0 090000000000000076616c75652d302d30"),
        "bincode String in hex: {hex}"
    );
    let as_u64 = text(&tool(&["dump", "--entries", "u64"], &dir).stdout);
    assert!(as_u64.contains("(not a u64)"), "undecodable entries fall back to hex: {as_u64}");
}

#[test]
fn verify_refuses_corruption_naming_file_and_offset() {
    let root = tempfile::tempdir().expect("temporary directory");
    let dir = written_dir(root.path());
    let segment = dir.join(segment_file_name(1));
    let mut bytes = std::fs::read(&segment).expect("read segment");
    let (first_write, _) = segment_frames(&bytes)[1];
    bytes[first_write + 40] ^= 0x04;
    std::fs::write(&segment, &bytes).expect("corrupt the segment");
    let output = tool(&["verify"], &dir);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("{} at offset {first_write}", segment.display())), "{stderr}");
}

#[test]
fn verify_reports_a_missing_or_empty_directory() {
    let root = tempfile::tempdir().expect("temporary directory");
    let output = tool(&["verify"], &root.path().join("absent"));
    assert_eq!(output.status.code(), Some(1));
    let output = tool(&["verify"], root.path());
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output.stderr).contains("holds no log"), "{}", text(&output.stderr));
}

/// The last frame of segment 1 of `dir`: its offset and length.
fn last_frame(segment: &Path) -> (usize, usize) {
    let bytes = std::fs::read(segment).expect("read segment");
    let frames = segment_frames(&bytes);
    let (offset, frame) = frames.last().expect("frames");
    (*offset, frame.len)
}

fn patch(path: &Path, offset: usize, patch: &[u8]) {
    let mut bytes = std::fs::read(path).expect("read");
    bytes[offset..offset + patch.len()].copy_from_slice(patch);
    std::fs::write(path, &bytes).expect("write");
}

#[test]
fn a_damaged_complete_last_frame_is_reported_as_a_possible_loss_never_as_unacknowledged() {
    let root = tempfile::tempdir().expect("temporary directory");
    let dir = written_dir(root.path());
    let segment = dir.join(segment_file_name(1));
    let (offset, _) = last_frame(&segment);
    let byte = std::fs::read(&segment).expect("read")[offset + 33];
    patch(&segment, offset + 33, &[byte ^ 0x01]);
    for command in [&["verify"][..], &["dump"][..]] {
        let output = tool(command, &dir);
        let stdout = text(&output.stdout);
        assert_eq!(output.status.code(), Some(2), "{command:?}: {stdout}{}", text(&output.stderr));
        assert!(stdout.contains("POSSIBLY ACKNOWLEDGED DATA LOST"), "{stdout}");
        assert!(!stdout.contains("never acknowledged"), "{stdout}");
    }
    // Opening for writes drops the frame and records the possible loss; the tool reports it.
    let config = PersistentStorageConfig::new(&dir, 4, 2).segment_size_bytes(4096);
    let storage = PersistentStorage::<String, ()>::open(&config).expect("open");
    assert!(storage.open_report().acknowledged_state_may_be_lost());
    drop(storage);
    let output = tool(&["verify"], &dir);
    let stdout = text(&output.stdout);
    assert_eq!(output.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("tail: clean") && stdout.contains("recorded possible loss"), "{stdout}");
}

#[test]
fn an_incomplete_last_frame_is_reported_as_torn_and_never_acknowledged() {
    let root = tempfile::tempdir().expect("temporary directory");
    let dir = written_dir(root.path());
    let segment = dir.join(segment_file_name(1));
    let (offset, len) = last_frame(&segment);
    // The frame's last word still holds the fill pattern: its write never completed.
    let mut fill = [0u8; 8];
    let word = offset + len - 8;
    omnipaxos_storage::persistent_storage::format::fill_bytes(1, word as u64, &mut fill);
    patch(&segment, word, &fill);
    let output = tool(&["verify"], &dir);
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", text(&output.stderr));
    assert!(stdout.contains(&format!("tail: torn at {}:{offset}", segment.display())), "{stdout}");
    assert!(stdout.contains("never acknowledged"), "{stdout}");
}

#[test]
fn verify_refuses_a_deleted_last_segment_naming_it() {
    let root = tempfile::tempdir().expect("temporary directory");
    let dir = root.path().join("node1");
    let config = PersistentStorageConfig::new(&dir, 1, 1).mode(OpenMode::Bootstrap).segment_size_bytes(4096);
    let mut storage = PersistentStorage::<String, ()>::open(&config).expect("create");
    for batch in 0..40u64 {
        let entries = (0..5)
            .map(|seq| Proposal {
                id: ProposalId { node: 1, seq: batch * 5 + seq, incarnation: 1 },
                entry: format!("{seq}"),
            })
            .collect();
        storage.write_atomically(&mut vec![StorageOp::AppendEntries(entries)]).expect("write");
        storage.flush().expect("flush");
    }
    let last = storage.segment_count() as u64;
    assert!(last >= 2, "the log rolled");
    drop(storage);
    std::fs::remove_file(dir.join(segment_file_name(last))).expect("delete the last segment");
    let output = tool(&["verify"], &dir);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{}{stderr}", text(&output.stdout));
    assert!(
        stderr.contains(&format!("segment {} is missing", dir.join(segment_file_name(last)).display())),
        "{stderr}"
    );
}
