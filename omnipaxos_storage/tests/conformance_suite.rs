//! Runs the conformance suite against every storage in this crate, and checks that the suite
//! itself fails on storages that break the contract (a suite that cannot fail proves nothing).

use std::panic::{catch_unwind, AssertUnwindSafe};

use omnipaxos_core::{
    ballot_leader_election::Ballot,
    storage::{StopSign, Storage, StorageOp, StorageResult},
    util::{LogIndex, Proposal},
};
use omnipaxos_storage::{
    conformance::{self, FlushAfterEveryWrite, SumSnapshot},
    crash_storage::{CrashKeep, CrashableStorage},
    memory_storage::MemoryStorage,
    persistent_storage::{
        sim_fs::{CrashVariant, SimFs},
        OpenMode, PersistentStorage, PersistentStorageConfig,
    },
};

type SimStorage = PersistentStorage<u64, SumSnapshot, SimFs>;

/// Small segments, so the suite's writes also roll and delete segments.
fn sim_config(mode: OpenMode) -> PersistentStorageConfig {
    PersistentStorageConfig::new("/data/node1", 1, 1).mode(mode).segment_size_bytes(512)
}

fn fresh_sim_storage() -> SimStorage {
    PersistentStorage::open_with_fs(&sim_config(OpenMode::Bootstrap), SimFs::new())
        .expect("open a fresh directory")
}

#[test]
fn memory_storage_conforms() {
    conformance::run_all(MemoryStorage::<u64, SumSnapshot>::default);
}

#[test]
fn memory_storage_flushing_after_every_write_conforms() {
    conformance::run_all(FlushAfterEveryWrite::<MemoryStorage<u64, SumSnapshot>>::default);
}

#[test]
fn crashable_storage_without_flushing_conforms() {
    conformance::run_all(CrashableStorage::<u64, SumSnapshot>::default);
}

#[test]
fn crashable_storage_flushing_after_every_write_conforms() {
    conformance::run_all(FlushAfterEveryWrite::<CrashableStorage<u64, SumSnapshot>>::default);
}

/// A storage recovered from a crash must behave like a fresh one.
#[test]
fn crashable_storage_recovered_from_crash_conforms() {
    conformance::run_all(|| {
        let mut storage = CrashableStorage::<u64, SumSnapshot>::default();
        storage.write_atomically(&mut vec![StorageOp::SetIncarnation(5)]).expect("write");
        storage.crash(CrashKeep::Nothing)
    });
}

#[test]
fn persistent_storage_over_simulated_disk_conforms() {
    conformance::run_all(fresh_sim_storage);
}

#[test]
fn persistent_storage_flushing_after_every_write_conforms() {
    conformance::run_all(|| FlushAfterEveryWrite(fresh_sim_storage()));
}

/// After every successful write: flush, crash (losing nothing unsynced, since all is flushed)
/// and reopen. Every check then also tests that recovery rebuilds exactly what was written.
struct ReopenAfterEveryWrite(Option<SimStorage>);

impl ReopenAfterEveryWrite {
    fn inner(&self) -> &SimStorage {
        self.0.as_ref().expect("storage is open")
    }
}

impl Storage<u64, SumSnapshot> for ReopenAfterEveryWrite {
    fn write_atomically(&mut self, ops: &mut Vec<StorageOp<u64, SumSnapshot>>) -> StorageResult<()> {
        let mut storage = self.0.take().expect("storage is open");
        let written = storage.write_atomically(ops).and_then(|()| storage.flush());
        if written.is_err() {
            self.0 = Some(storage);
            return written;
        }
        let crashed = storage.fs().crash(CrashVariant::LoseUnsynced, 0);
        self.0 =
            Some(PersistentStorage::open_with_fs(&sim_config(OpenMode::Restart), crashed).expect("reopen"));
        Ok(())
    }
    fn flush(&mut self) -> StorageResult<()> {
        self.0.as_mut().expect("storage is open").flush()
    }
    fn get_entries(&self, from: LogIndex, to: LogIndex) -> StorageResult<Vec<Proposal<u64>>> {
        self.inner().get_entries(from, to)
    }
    fn get_log_end(&self) -> StorageResult<LogIndex> {
        self.inner().get_log_end()
    }
    fn get_compacted_idx(&self) -> StorageResult<LogIndex> {
        self.inner().get_compacted_idx()
    }
    fn get_promise(&self) -> StorageResult<Option<Ballot>> {
        self.inner().get_promise()
    }
    fn get_accepted_round(&self) -> StorageResult<Option<Ballot>> {
        self.inner().get_accepted_round()
    }
    fn get_decided_idx(&self) -> StorageResult<LogIndex> {
        self.inner().get_decided_idx()
    }
    fn get_stopsign(&self) -> StorageResult<Option<StopSign>> {
        self.inner().get_stopsign()
    }
    fn get_snapshot(&self) -> StorageResult<Option<SumSnapshot>> {
        self.inner().get_snapshot()
    }
    fn get_incarnation(&self) -> StorageResult<u64> {
        self.inner().get_incarnation()
    }

    fn get_identity(&self) -> StorageResult<Option<omnipaxos_core::storage::ReplicaIdentity>> {
        self.inner().get_identity()
    }
}

#[test]
fn persistent_storage_reopened_after_every_write_conforms() {
    conformance::run_all(|| ReopenAfterEveryWrite(Some(fresh_sim_storage())));
}

/// The same suite on the real file system, each check in a fresh temporary directory.
#[test]
fn persistent_storage_on_disk_conforms() {
    let root = tempfile::tempdir().expect("temporary directory");
    let mut next = 0;
    conformance::run_all(|| {
        next += 1;
        let config = PersistentStorageConfig::new(root.path().join(format!("node{next}")), 1, 1)
            .mode(OpenMode::Bootstrap)
            .segment_size_bytes(4096);
        PersistentStorage::<u64, SumSnapshot>::open(&config).expect("open a fresh directory")
    });
}

/// A deliberately broken storage: it applies each op of a call as its own call, so a failing
/// op leaves the ops before it applied.
#[derive(Default)]
struct NonAtomicStorage(MemoryStorage<u64, SumSnapshot>);

impl Storage<u64, SumSnapshot> for NonAtomicStorage {
    fn write_atomically(&mut self, ops: &mut Vec<StorageOp<u64, SumSnapshot>>) -> StorageResult<()> {
        for op in ops.drain(..) {
            self.0.write_atomically(&mut vec![op])?;
        }
        Ok(())
    }
    fn flush(&mut self) -> StorageResult<()> {
        self.0.flush()
    }
    fn get_entries(&self, from: LogIndex, to: LogIndex) -> StorageResult<Vec<Proposal<u64>>> {
        self.0.get_entries(from, to)
    }
    fn get_log_end(&self) -> StorageResult<LogIndex> {
        self.0.get_log_end()
    }
    fn get_compacted_idx(&self) -> StorageResult<LogIndex> {
        self.0.get_compacted_idx()
    }
    fn get_promise(&self) -> StorageResult<Option<Ballot>> {
        self.0.get_promise()
    }
    fn get_accepted_round(&self) -> StorageResult<Option<Ballot>> {
        self.0.get_accepted_round()
    }
    fn get_decided_idx(&self) -> StorageResult<LogIndex> {
        self.0.get_decided_idx()
    }
    fn get_stopsign(&self) -> StorageResult<Option<StopSign>> {
        self.0.get_stopsign()
    }
    fn get_snapshot(&self) -> StorageResult<Option<SumSnapshot>> {
        self.0.get_snapshot()
    }
    fn get_incarnation(&self) -> StorageResult<u64> {
        self.0.get_incarnation()
    }

    fn get_identity(&self) -> StorageResult<Option<omnipaxos_core::storage::ReplicaIdentity>> {
        self.0.get_identity()
    }
}

/// Returns the panic message of `check`, or `None` if it passed.
fn failure_of(check: impl FnOnce()) -> Option<String> {
    let payload = catch_unwind(AssertUnwindSafe(check)).err()?;
    let message = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|text| text.to_string()));
    Some(message.unwrap_or_default())
}

#[test]
fn suite_rejects_non_atomic_storage() {
    let mut make_empty = NonAtomicStorage::default;
    let failure = failure_of(|| conformance::check_failed_write_changes_nothing(&mut make_empty));
    let message = failure.expect("a non-atomic storage must fail the atomicity check");
    assert!(message.contains("check_failed_write_changes_nothing"), "names the property: {message}");
    assert!(failure_of(|| conformance::run_all(NonAtomicStorage::default)).is_some());
}

#[test]
fn suite_accepts_non_atomic_storage_where_atomicity_is_not_at_stake() {
    let mut make_empty = NonAtomicStorage::default;
    assert_eq!(failure_of(|| conformance::check_append_and_read_back(&mut make_empty)), None);
    assert_eq!(failure_of(|| conformance::check_ops_apply_in_order(&mut make_empty)), None);
}

/// A generic value type without `Default` still gets a `Default` storage.
#[test]
fn default_needs_no_default_entry_or_snapshot() {
    #[derive(Clone, Debug, PartialEq)]
    struct KeyValue {
        key: String,
        value: u64,
    }
    let storage = MemoryStorage::<KeyValue, ()>::default();
    assert_eq!(storage.get_log_end().expect("get_log_end"), 0);
    let crashable = CrashableStorage::<KeyValue, ()>::default();
    assert_eq!(crashable.get_log_end().expect("get_log_end"), 0);
}
