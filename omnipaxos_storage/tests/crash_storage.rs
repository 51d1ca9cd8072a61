//! Crash and fault semantics of `CrashableStorage`: what survives a crash, and fail-stop after
//! an injected failure.

use omnipaxos_core::{
    ballot_leader_election::Ballot,
    storage::{Storage, StorageError, StorageOp},
};
use omnipaxos_storage::{
    conformance::{observe, proposals, ObservedState, SumSnapshot},
    crash_storage::{CrashKeep, CrashableStorage},
    memory_storage::MemoryStorage,
};

type Call = Vec<StorageOp<u64, SumSnapshot>>;

/// Three calls of several ops each, so a crash that split a call would show.
fn three_calls() -> Vec<Call> {
    vec![
        vec![StorageOp::SetPromise(Ballot::with(1, 1, 0, 1)), StorageOp::AppendEntries(proposals(0, 3, 1))],
        vec![
            StorageOp::SetAcceptedRound(Ballot::with(1, 1, 0, 1)),
            StorageOp::AppendOnPrefix(2, proposals(2, 5, 2)),
            StorageOp::SetDecidedIdx(2),
        ],
        vec![
            StorageOp::Trim(1),
            StorageOp::SetPromise(Ballot::with(1, 2, 0, 3)),
            StorageOp::SetIncarnation(1),
            StorageOp::SetSnapshot(Some(SumSnapshot(4))),
        ],
    ]
}

/// What a storage holds after exactly the first `count` of `calls`, computed independently of
/// `CrashableStorage`.
fn state_after(calls: &[Call], count: usize) -> ObservedState {
    let mut reference = MemoryStorage::<u64, SumSnapshot>::default();
    for call in &calls[..count] {
        reference.write_atomically(&mut call.clone()).expect("reference write");
    }
    observe(&reference)
}

fn write_all(storage: &mut CrashableStorage<u64, SumSnapshot>, calls: &[Call]) {
    for call in calls {
        storage.write_atomically(&mut call.clone()).expect("write");
    }
}

fn assert_io_error(result: Result<(), StorageError>) {
    assert!(matches!(result, Err(StorageError::Io(_))), "expected Io, got {result:?}");
}

fn assert_poisoned(result: Result<(), StorageError>) {
    assert!(matches!(result, Err(StorageError::Poisoned)), "expected Poisoned, got {result:?}");
}

#[test]
fn reads_see_unflushed_writes() {
    let calls = three_calls();
    let mut storage = CrashableStorage::default();
    write_all(&mut storage, &calls);
    assert_eq!(storage.unflushed_calls(), 3);
    assert_eq!(observe(&storage), state_after(&calls, 3));
}

#[test]
fn unflushed_writes_are_lost_with_crash_keep_nothing() {
    let calls = three_calls();
    let mut storage = CrashableStorage::default();
    write_all(&mut storage, &calls);
    let recovered = storage.crash(CrashKeep::Nothing);
    assert_eq!(observe(&recovered), state_after(&calls, 0));
}

#[test]
fn flushed_writes_survive_crash_keep_nothing() {
    let calls = three_calls();
    let mut storage = CrashableStorage::default();
    write_all(&mut storage, &calls[..2]);
    storage.flush().expect("flush");
    assert_eq!(storage.unflushed_calls(), 0);
    write_all(&mut storage, &calls[2..]);
    assert_eq!(storage.unflushed_calls(), 1);
    let recovered = storage.crash(CrashKeep::Nothing);
    assert_eq!(observe(&recovered), state_after(&calls, 2));
}

#[test]
fn crash_prefix_keeps_whole_calls_only() {
    let calls = three_calls();
    let mut storage = CrashableStorage::default();
    write_all(&mut storage, &calls);
    for kept in 0..=calls.len() {
        let recovered = storage.crash(CrashKeep::Prefix(kept));
        assert_eq!(observe(&recovered), state_after(&calls, kept), "Prefix({kept})");
    }
    for kept in 0..calls.len() {
        assert_ne!(state_after(&calls, kept), state_after(&calls, kept + 1), "calls must differ");
    }
}

#[test]
fn crash_keep_all_keeps_every_write() {
    let calls = three_calls();
    let mut storage = CrashableStorage::default();
    write_all(&mut storage, &calls[..1]);
    storage.flush().expect("flush");
    write_all(&mut storage, &calls[1..]);
    let recovered = storage.crash(CrashKeep::All);
    assert_eq!(observe(&recovered), state_after(&calls, 3));
}

#[test]
#[should_panic(expected = "crash keeps more calls than were written")]
fn crash_prefix_longer_than_unflushed_calls_panics() {
    let mut storage = CrashableStorage::default();
    write_all(&mut storage, &three_calls()[..1]);
    let _ = storage.crash(CrashKeep::Prefix(2));
}

#[test]
fn recovered_storage_starts_healthy_and_flushed() {
    let calls = three_calls();
    let mut storage = CrashableStorage::default();
    write_all(&mut storage, &calls[..2]);
    storage.fail_write_after(0);
    assert_io_error(storage.write_atomically(&mut calls[2].clone()));
    let mut recovered = storage.crash(CrashKeep::All);
    assert!(!recovered.is_poisoned());
    assert_eq!(recovered.unflushed_calls(), 0);
    assert_eq!(recovered.write_count(), 0);
    assert_eq!(recovered.flush_count(), 0);
    assert_eq!(observe(&recovered.crash(CrashKeep::Nothing)), state_after(&calls, 2));
    recovered.write_atomically(&mut calls[2].clone()).expect("write after recovery");
    assert_eq!(observe(&recovered), state_after(&calls, 3));
}

#[test]
fn injected_write_failure_changes_nothing_and_poisons() {
    let calls = three_calls();
    let mut storage = CrashableStorage::default();
    storage.fail_write_after(1);
    storage.write_atomically(&mut calls[0].clone()).expect("first write succeeds");
    assert_io_error(storage.write_atomically(&mut calls[1].clone()));
    assert!(storage.is_poisoned());
    assert_eq!(observe(&storage), state_after(&calls, 1), "failed write changed state");
    assert_eq!(storage.unflushed_calls(), 1, "failed write must not be queued");
    assert_eq!(observe(&storage.crash(CrashKeep::All)), state_after(&calls, 1));
    assert_poisoned(storage.write_atomically(&mut calls[1].clone()));
    assert_poisoned(storage.write_atomically(&mut Vec::new()));
    assert_poisoned(storage.flush());
    assert_eq!(observe(&storage), state_after(&calls, 1), "reads still work");
}

#[test]
fn fail_write_after_zero_fails_the_next_write() {
    let mut storage = CrashableStorage::<u64, SumSnapshot>::default();
    storage.fail_write_after(0);
    assert_io_error(storage.write_atomically(&mut Vec::new()));
    assert_eq!(observe(&storage), state_after(&three_calls(), 0));
}

#[test]
fn injected_flush_failure_poisons_and_keeps_writes_unflushed() {
    let calls = three_calls();
    let mut storage = CrashableStorage::default();
    storage.fail_flush_after(1);
    write_all(&mut storage, &calls[..1]);
    storage.flush().expect("first flush succeeds");
    write_all(&mut storage, &calls[1..]);
    assert_io_error(storage.flush());
    assert!(storage.is_poisoned());
    assert_eq!(storage.unflushed_calls(), 2, "a failed fsync makes nothing durable for sure");
    assert_poisoned(storage.write_atomically(&mut Vec::new()));
    assert_poisoned(storage.flush());
    assert_eq!(observe(&storage), state_after(&calls, 3), "reads still see every write");
    assert_eq!(observe(&storage.crash(CrashKeep::Nothing)), state_after(&calls, 1));
    assert_eq!(observe(&storage.crash(CrashKeep::Prefix(1))), state_after(&calls, 2));
    assert_eq!(observe(&storage.crash(CrashKeep::All)), state_after(&calls, 3));
}

#[test]
fn invalid_write_changes_nothing_poisons_and_is_not_queued() {
    let calls = three_calls();
    let mut storage = CrashableStorage::default();
    write_all(&mut storage, &calls[..1]);
    let mut invalid = vec![StorageOp::SetIncarnation(9), StorageOp::AppendOnPrefix(7, Vec::new())];
    let result = storage.write_atomically(&mut invalid);
    assert!(matches!(result, Err(StorageError::OutOfRange { .. })), "got {result:?}");
    assert!(storage.is_poisoned());
    assert_eq!(storage.unflushed_calls(), 1);
    assert_eq!(observe(&storage), state_after(&calls, 1));
    assert_poisoned(storage.flush());
}

#[test]
fn counters_count_every_call_failed_ones_included() {
    let calls = three_calls();
    let mut storage = CrashableStorage::default();
    write_all(&mut storage, &calls[..2]);
    storage.flush().expect("flush");
    storage.fail_flush_after(0);
    assert_io_error(storage.flush());
    assert_poisoned(storage.write_atomically(&mut calls[2].clone()));
    assert_eq!(storage.write_count(), 3);
    assert_eq!(storage.flush_count(), 2);
}
