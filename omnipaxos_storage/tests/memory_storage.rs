//! `MemoryStorage` behaviour beyond the conformance suite: counters and fail-stop.

use omnipaxos_core::storage::{Storage, StorageError, StorageOp};
use omnipaxos_storage::{
    conformance::{observe, proposals, SumSnapshot},
    memory_storage::MemoryStorage,
};

#[test]
fn counters_count_every_call_failed_ones_included() {
    let mut storage = MemoryStorage::<u64, SumSnapshot>::default();
    assert_eq!((storage.write_count(), storage.flush_count()), (0, 0));
    storage.write_atomically(&mut vec![StorageOp::AppendEntries(proposals(0, 2, 1))]).expect("write");
    storage.flush().expect("flush");
    storage.flush().expect("flush");
    let result = storage.write_atomically(&mut vec![StorageOp::Trim(5), StorageOp::Trim(1)]);
    assert!(matches!(result, Err(StorageError::OutOfRange { .. })), "got {result:?}");
    assert!(matches!(storage.flush(), Err(StorageError::Poisoned)));
    assert_eq!(storage.write_count(), 2);
    assert_eq!(storage.flush_count(), 3);
}

#[test]
fn out_of_range_error_names_the_request_and_the_stored_range() {
    let mut storage = MemoryStorage::<u64, SumSnapshot>::default();
    storage.write_atomically(&mut vec![StorageOp::AppendEntries(proposals(0, 4, 1))]).expect("write");
    match storage.get_entries(3, 9) {
        Err(StorageError::OutOfRange { from: 3, to: 9, compacted_idx: 0, log_end: 4 }) => {}
        other => panic!("unexpected {other:?}"),
    }
    match storage.write_atomically(&mut vec![StorageOp::AppendOnPrefix(6, proposals(6, 8, 2))]) {
        Err(StorageError::OutOfRange { from: 6, to: 8, compacted_idx: 0, log_end: 4 }) => {}
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn clone_is_independent() {
    let mut storage = MemoryStorage::<u64, SumSnapshot>::default();
    storage.write_atomically(&mut vec![StorageOp::AppendEntries(proposals(0, 2, 1))]).expect("write");
    let copy = storage.clone();
    storage.write_atomically(&mut vec![StorageOp::Trim(2)]).expect("write");
    assert_eq!(observe(&copy).entries, proposals(0, 2, 1));
    assert!(observe(&storage).entries.is_empty());
}
