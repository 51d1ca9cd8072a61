//! The conformance suite every [`Storage`] implementation must pass.
//!
//! One suite for every implementation means the in-memory reference, the crash simulator and a
//! durable file-based storage are held to the same contract, so the core can treat them alike.
//! Each property is its own `check_*` function (a failure names the property); [`run_all`] runs
//! them all, each on fresh storages from the caller's factory:
//!
//! ```
//! use omnipaxos_storage::{conformance, memory_storage::MemoryStorage};
//! conformance::run_all(MemoryStorage::default);
//! ```
//!
//! Contract decisions the suite pins down (the trait leaves them open):
//! - A failed `write_atomically` changes nothing *and* poisons the storage: every later write
//!   and flush fails, reads still work. The trait says "after any failed write", and the core
//!   stops on any storage error anyway, so there is no reason to keep accepting writes.
//! - `Trim(idx)` below `compacted_idx` fails with `OutOfRange`; `Trim(compacted_idx)` is a no-op.
//! - Ops of one call are validated against the state left by the earlier ops of the same call.
//! - Storage checks log bounds only, no cross-field rules: a decided index beyond `log_end` is
//!   stored as given, because ops of one call may legally set it before appending.
//! - An op whose resulting `log_end` would not fit in a `u64` fails with `OutOfRange`.

use omnipaxos_core::{
    ballot_leader_election::Ballot,
    storage::{ClusterConfig, Snapshot, StopSign, Storage, StorageError, StorageOp},
    util::{LogIndex, Proposal, ProposalId},
};
use serde::{Deserialize, Serialize};

/// The snapshot type of the suite: the sum of the entries it covers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SumSnapshot(pub u64);

impl Snapshot<u64> for SumSnapshot {
    fn create(entries: &[u64]) -> Self {
        SumSnapshot(entries.iter().fold(0, |sum, entry| sum.wrapping_add(*entry)))
    }

    fn merge(&mut self, delta: Self) {
        self.0 = self.0.wrapping_add(delta.0);
    }

    fn use_snapshots() -> bool {
        true
    }
}

/// Everything a storage reports through its read methods, in one comparable value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedState {
    /// The first stored index.
    pub compacted_idx: LogIndex,
    /// One past the last stored index.
    pub log_end: LogIndex,
    /// The entries `[compacted_idx, log_end)`.
    pub entries: Vec<Proposal<u64>>,
    /// The stored promise.
    pub promise: Option<Ballot>,
    /// The stored accepted round.
    pub accepted_round: Option<Ballot>,
    /// The stored decided index.
    pub decided_idx: LogIndex,
    /// The stored StopSign.
    pub stopsign: Option<StopSign>,
    /// The stored snapshot.
    pub snapshot: Option<SumSnapshot>,
    /// The stored incarnation.
    pub incarnation: u64,
}

/// Reads every field of `storage`; panics if a read fails, since reads of a stored range and
/// of plain fields must always succeed.
pub fn observe<St: Storage<u64, SumSnapshot>>(storage: &St) -> ObservedState {
    let compacted_idx = storage.get_compacted_idx().expect("get_compacted_idx");
    let log_end = storage.get_log_end().expect("get_log_end");
    assert!(compacted_idx <= log_end, "compacted_idx {compacted_idx} > log_end {log_end}");
    ObservedState {
        compacted_idx,
        log_end,
        entries: storage.get_entries(compacted_idx, log_end).expect("read the stored range"),
        promise: storage.get_promise().expect("get_promise"),
        accepted_round: storage.get_accepted_round().expect("get_accepted_round"),
        decided_idx: storage.get_decided_idx().expect("get_decided_idx"),
        stopsign: storage.get_stopsign().expect("get_stopsign"),
        snapshot: storage.get_snapshot().expect("get_snapshot"),
        incarnation: storage.get_incarnation().expect("get_incarnation"),
    }
}

/// A storage wrapper that flushes after every successful write, so the suite also runs
/// against implementations whose state changes when data becomes durable.
#[derive(Clone, Debug, Default)]
pub struct FlushAfterEveryWrite<St>(pub St);

impl<T, S, St: Storage<T, S>> Storage<T, S> for FlushAfterEveryWrite<St> {
    fn write_atomically(&mut self, ops: &mut Vec<StorageOp<T, S>>) -> Result<(), StorageError> {
        self.0.write_atomically(ops)?;
        self.0.flush()
    }

    fn flush(&mut self) -> Result<(), StorageError> {
        self.0.flush()
    }

    fn get_entries(&self, from: LogIndex, to: LogIndex) -> Result<Vec<Proposal<T>>, StorageError> {
        self.0.get_entries(from, to)
    }

    fn get_log_end(&self) -> Result<LogIndex, StorageError> {
        self.0.get_log_end()
    }

    fn get_compacted_idx(&self) -> Result<LogIndex, StorageError> {
        self.0.get_compacted_idx()
    }

    fn get_promise(&self) -> Result<Option<Ballot>, StorageError> {
        self.0.get_promise()
    }

    fn get_accepted_round(&self) -> Result<Option<Ballot>, StorageError> {
        self.0.get_accepted_round()
    }

    fn get_decided_idx(&self) -> Result<LogIndex, StorageError> {
        self.0.get_decided_idx()
    }

    fn get_stopsign(&self) -> Result<Option<StopSign>, StorageError> {
        self.0.get_stopsign()
    }

    fn get_snapshot(&self) -> Result<Option<S>, StorageError> {
        self.0.get_snapshot()
    }

    fn get_incarnation(&self) -> Result<u64, StorageError> {
        self.0.get_incarnation()
    }

    fn get_identity(&self) -> Result<Option<omnipaxos_core::storage::ReplicaIdentity>, StorageError> {
        self.0.get_identity()
    }
}

/// Runs every check, each on fresh storages made by `make_empty`.
pub fn run_all<St: Storage<u64, SumSnapshot>, F: FnMut() -> St>(mut make_empty: F) {
    let make_empty = &mut make_empty;
    check_fresh_storage_is_empty(make_empty);
    check_append_and_read_back(make_empty);
    check_append_on_prefix_truncates_then_appends(make_empty);
    check_append_on_prefix_at_log_end_appends(make_empty);
    check_append_on_prefix_at_compacted_idx_replaces_log(make_empty);
    check_append_on_prefix_out_of_range_fails(make_empty);
    check_get_entries_out_of_range_fails(make_empty);
    check_trim_keeps_absolute_indices(make_empty);
    check_trim_beyond_log_end_empties_log(make_empty);
    check_trim_below_compacted_idx_fails(make_empty);
    check_failed_write_changes_nothing(make_empty);
    check_failed_write_poisons_storage(make_empty);
    check_ops_apply_in_order(make_empty);
    check_ops_validated_against_earlier_ops_of_call(make_empty);
    check_empty_write_changes_nothing(make_empty);
    check_promise_round_trip(make_empty);
    check_accepted_round_round_trip(make_empty);
    check_decided_idx_round_trip(make_empty);
    check_stopsign_round_trip(make_empty);
    check_snapshot_round_trip(make_empty);
    check_incarnation_round_trip(make_empty);
    check_flush_succeeds_when_healthy(make_empty);
    check_index_overflow_is_rejected(make_empty);
}

/// The entry stored at absolute index `idx` by generation `generation`: distinct generations
/// give distinct entries and ids, so a read shows which write it came from.
pub fn proposal_at(idx: LogIndex, generation: u64) -> Proposal<u64> {
    let id = ProposalId { node: 1 + idx % 3, seq: idx.wrapping_add(1), incarnation: generation };
    Proposal { id, entry: idx.wrapping_mul(1_000).wrapping_add(generation) }
}

/// The entries `[from, to)` of generation `generation`.
pub fn proposals(from: LogIndex, to: LogIndex, generation: u64) -> Vec<Proposal<u64>> {
    assert!(from <= to);
    (from..to).map(|idx| proposal_at(idx, generation)).collect()
}

fn write<St: Storage<u64, SumSnapshot>>(
    storage: &mut St,
    mut ops: Vec<StorageOp<u64, SumSnapshot>>,
    check: &str,
) {
    if let Err(error) = storage.write_atomically(&mut ops) {
        panic!("{check}: a valid write_atomically failed: {error}");
    }
}

fn assert_out_of_range<V: std::fmt::Debug>(result: Result<V, StorageError>, check: &str) {
    match result {
        Err(StorageError::OutOfRange { .. }) => {}
        other => panic!("{check}: expected OutOfRange, got {other:?}"),
    }
}

fn read<St: Storage<u64, SumSnapshot>>(
    storage: &St,
    from: LogIndex,
    to: LogIndex,
    check: &str,
) -> Vec<Proposal<u64>> {
    match storage.get_entries(from, to) {
        Ok(entries) => entries,
        Err(error) => panic!("{check}: get_entries({from}, {to}) failed: {error}"),
    }
}

fn stopsign(configuration_id: u32) -> StopSign {
    let next_config = ClusterConfig { configuration_id, nodes: vec![1, 2, 3], flexible_quorum: None };
    StopSign::with(next_config, Some(vec![configuration_id as u8, 0, 255]))
}

/// A storage with entries `[0, 6)` of generation 1, trimmed to 2, and every field set, so a
/// check can tell whether a call changed anything.
fn populated<St: Storage<u64, SumSnapshot>, F: FnMut() -> St>(make_empty: &mut F) -> St {
    let mut storage = make_empty();
    let ops = vec![
        StorageOp::AppendEntries(proposals(0, 6, 1)),
        StorageOp::Trim(2),
        StorageOp::SetPromise(Ballot::with(1, 4, 0, 2)),
        StorageOp::SetAcceptedRound(Ballot::with(1, 3, 0, 1)),
        StorageOp::SetDecidedIdx(4),
        StorageOp::SetStopSign(Some(stopsign(2))),
        StorageOp::SetSnapshot(Some(SumSnapshot(7))),
        StorageOp::SetIncarnation(3),
    ];
    write(&mut storage, ops, "populated");
    storage
}

/// A fresh storage holds nothing and reports the documented defaults.
pub fn check_fresh_storage_is_empty<St, F>(make_empty: &mut F)
where
    St: Storage<u64, SumSnapshot>,
    F: FnMut() -> St,
{
    let storage = make_empty();
    let expected = ObservedState {
        compacted_idx: 0,
        log_end: 0,
        entries: Vec::new(),
        promise: None,
        accepted_round: None,
        decided_idx: 0,
        stopsign: None,
        snapshot: None,
        incarnation: 0,
    };
    assert_eq!(observe(&storage), expected, "check_fresh_storage_is_empty");
}

/// Appended entries read back identical, ids included, over any sub-range.
pub fn check_append_and_read_back<St, F>(make_empty: &mut F)
where
    St: Storage<u64, SumSnapshot>,
    F: FnMut() -> St,
{
    let check = "check_append_and_read_back";
    let mut storage = make_empty();
    write(&mut storage, vec![StorageOp::AppendEntries(proposals(0, 5, 1))], check);
    write(&mut storage, vec![StorageOp::AppendEntries(proposals(5, 8, 2))], check);
    let mut expected = proposals(0, 5, 1);
    expected.extend(proposals(5, 8, 2));
    assert_eq!(storage.get_log_end().expect("get_log_end"), 8, "{check}: log_end");
    assert_eq!(read(&storage, 0, 8, check), expected, "{check}: whole log");
    assert_eq!(read(&storage, 3, 6, check), expected[3..6], "{check}: sub-range");
    assert_eq!(read(&storage, 7, 8, check), expected[7..8], "{check}: last entry");
    assert!(read(&storage, 4, 4, check).is_empty(), "{check}: empty range");
    assert!(read(&storage, 8, 8, check).is_empty(), "{check}: empty range at log_end");
    write(&mut storage, vec![StorageOp::AppendEntries(Vec::new())], check);
    assert_eq!(read(&storage, 0, 8, check), expected, "{check}: empty append");
}

/// `AppendOnPrefix` drops everything from its index on, then appends.
pub fn check_append_on_prefix_truncates_then_appends<St, F>(make_empty: &mut F)
where
    St: Storage<u64, SumSnapshot>,
    F: FnMut() -> St,
{
    let check = "check_append_on_prefix_truncates_then_appends";
    let mut storage = make_empty();
    write(&mut storage, vec![StorageOp::AppendEntries(proposals(0, 6, 1))], check);
    write(&mut storage, vec![StorageOp::AppendOnPrefix(3, proposals(3, 5, 2))], check);
    let mut expected = proposals(0, 3, 1);
    expected.extend(proposals(3, 5, 2));
    assert_eq!(storage.get_log_end().expect("get_log_end"), 5, "{check}: shorter log");
    assert_eq!(read(&storage, 0, 5, check), expected, "{check}: entries");
    write(&mut storage, vec![StorageOp::AppendOnPrefix(2, Vec::new())], check);
    assert_eq!(storage.get_log_end().expect("get_log_end"), 2, "{check}: pure truncation");
    assert_eq!(read(&storage, 0, 2, check), expected[..2], "{check}: kept prefix");
    write(&mut storage, vec![StorageOp::AppendOnPrefix(1, proposals(1, 9, 3))], check);
    let mut expected = proposals(0, 1, 1);
    expected.extend(proposals(1, 9, 3));
    assert_eq!(read(&storage, 0, 9, check), expected, "{check}: longer than before");
}

/// `AppendOnPrefix(log_end, ..)` truncates nothing: it is a plain append.
pub fn check_append_on_prefix_at_log_end_appends<St, F>(make_empty: &mut F)
where
    St: Storage<u64, SumSnapshot>,
    F: FnMut() -> St,
{
    let check = "check_append_on_prefix_at_log_end_appends";
    let mut storage = make_empty();
    write(&mut storage, vec![StorageOp::AppendOnPrefix(0, proposals(0, 3, 1))], check);
    write(&mut storage, vec![StorageOp::AppendOnPrefix(3, proposals(3, 5, 2))], check);
    let mut expected = proposals(0, 3, 1);
    expected.extend(proposals(3, 5, 2));
    assert_eq!(storage.get_log_end().expect("get_log_end"), 5, "{check}: log_end");
    assert_eq!(read(&storage, 0, 5, check), expected, "{check}: entries");
}

/// `AppendOnPrefix(compacted_idx, ..)` replaces the whole stored log, keeping absolute indices.
pub fn check_append_on_prefix_at_compacted_idx_replaces_log<St, F>(make_empty: &mut F)
where
    St: Storage<u64, SumSnapshot>,
    F: FnMut() -> St,
{
    let check = "check_append_on_prefix_at_compacted_idx_replaces_log";
    let mut storage = make_empty();
    write(&mut storage, vec![StorageOp::AppendEntries(proposals(0, 6, 1))], check);
    write(&mut storage, vec![StorageOp::Trim(4)], check);
    write(&mut storage, vec![StorageOp::AppendOnPrefix(4, proposals(4, 7, 2))], check);
    assert_eq!(storage.get_compacted_idx().expect("get_compacted_idx"), 4, "{check}: start");
    assert_eq!(storage.get_log_end().expect("get_log_end"), 7, "{check}: log_end");
    assert_eq!(read(&storage, 4, 7, check), proposals(4, 7, 2), "{check}: entries");
}

/// `AppendOnPrefix` outside `[compacted_idx, log_end]` fails with `OutOfRange`, changing nothing.
pub fn check_append_on_prefix_out_of_range_fails<St, F>(make_empty: &mut F)
where
    St: Storage<u64, SumSnapshot>,
    F: FnMut() -> St,
{
    let check = "check_append_on_prefix_out_of_range_fails";
    for from_idx in [0, 1, 7, 100, LogIndex::MAX] {
        let mut storage = populated(make_empty);
        let before = observe(&storage);
        let mut ops = vec![StorageOp::AppendOnPrefix(from_idx, proposals(0, 2, 9))];
        assert_out_of_range(storage.write_atomically(&mut ops), check);
        assert_eq!(observe(&storage), before, "{check}: from_idx {from_idx} changed state");
    }
}

/// Reads outside `compacted_idx <= from <= to <= log_end` fail with `OutOfRange`, never panic.
pub fn check_get_entries_out_of_range_fails<St, F>(make_empty: &mut F)
where
    St: Storage<u64, SumSnapshot>,
    F: FnMut() -> St,
{
    let check = "check_get_entries_out_of_range_fails";
    let storage = populated(make_empty);
    let max = LogIndex::MAX;
    let bad_ranges = [(4, 3), (2, 7), (1, 4), (0, 0), (7, 7), (6, 0), (max, 0), (0, max), (max, max)];
    for (from, to) in bad_ranges {
        assert_out_of_range(storage.get_entries(from, to), check);
    }
    assert!(read(&storage, 2, 2, check).is_empty(), "{check}: empty range at compacted_idx");
    assert!(read(&storage, 6, 6, check).is_empty(), "{check}: empty range at log_end");
    assert_eq!(read(&storage, 2, 6, check), proposals(2, 6, 1), "{check}: whole stored log");
}

/// `Trim` moves `compacted_idx`; later entries keep their absolute indices.
pub fn check_trim_keeps_absolute_indices<St, F>(make_empty: &mut F)
where
    St: Storage<u64, SumSnapshot>,
    F: FnMut() -> St,
{
    let check = "check_trim_keeps_absolute_indices";
    let mut storage = make_empty();
    write(&mut storage, vec![StorageOp::AppendEntries(proposals(0, 10, 1))], check);
    write(&mut storage, vec![StorageOp::Trim(4)], check);
    assert_eq!(storage.get_compacted_idx().expect("get_compacted_idx"), 4, "{check}: start");
    assert_eq!(storage.get_log_end().expect("get_log_end"), 10, "{check}: log_end kept");
    assert_eq!(read(&storage, 4, 10, check), proposals(4, 10, 1), "{check}: entries kept");
    write(&mut storage, vec![StorageOp::Trim(4)], check);
    assert_eq!(read(&storage, 4, 10, check), proposals(4, 10, 1), "{check}: same-index trim");
    write(&mut storage, vec![StorageOp::AppendEntries(proposals(10, 12, 2))], check);
    assert_eq!(read(&storage, 9, 12, check)[1..], proposals(10, 12, 2), "{check}: append");
    write(&mut storage, vec![StorageOp::Trim(12)], check);
    assert_eq!(storage.get_compacted_idx().expect("get_compacted_idx"), 12, "{check}: all");
    assert_eq!(storage.get_log_end().expect("get_log_end"), 12, "{check}: empty log end");
}

/// `Trim` past `log_end` empties the log, which then starts at the trim index.
pub fn check_trim_beyond_log_end_empties_log<St, F>(make_empty: &mut F)
where
    St: Storage<u64, SumSnapshot>,
    F: FnMut() -> St,
{
    let check = "check_trim_beyond_log_end_empties_log";
    let mut storage = make_empty();
    write(&mut storage, vec![StorageOp::AppendEntries(proposals(0, 3, 1))], check);
    write(&mut storage, vec![StorageOp::Trim(8)], check);
    assert_eq!(storage.get_compacted_idx().expect("get_compacted_idx"), 8, "{check}: start");
    assert_eq!(storage.get_log_end().expect("get_log_end"), 8, "{check}: log_end");
    assert!(read(&storage, 8, 8, check).is_empty(), "{check}: empty");
    assert_out_of_range(storage.get_entries(2, 8), check);
    write(&mut storage, vec![StorageOp::AppendEntries(proposals(8, 10, 2))], check);
    assert_eq!(read(&storage, 8, 10, check), proposals(8, 10, 2), "{check}: append after");
}

/// `Trim` below `compacted_idx` fails with `OutOfRange` and changes nothing.
pub fn check_trim_below_compacted_idx_fails<St, F>(make_empty: &mut F)
where
    St: Storage<u64, SumSnapshot>,
    F: FnMut() -> St,
{
    let check = "check_trim_below_compacted_idx_fails";
    for idx in [0, 1] {
        let mut storage = populated(make_empty);
        let before = observe(&storage);
        assert_out_of_range(storage.write_atomically(&mut vec![StorageOp::Trim(idx)]), check);
        assert_eq!(observe(&storage), before, "{check}: Trim({idx}) changed state");
    }
}

/// A call whose last op is invalid changes nothing, not even the valid ops before it.
pub fn check_failed_write_changes_nothing<St, F>(make_empty: &mut F)
where
    St: Storage<u64, SumSnapshot>,
    F: FnMut() -> St,
{
    let check = "check_failed_write_changes_nothing";
    let mut storage = populated(make_empty);
    let before = observe(&storage);
    let mut ops = vec![
        StorageOp::SetPromise(Ballot::with(1, 9, 0, 3)),
        StorageOp::AppendOnPrefix(9, proposals(9, 10, 2)),
    ];
    assert_out_of_range(storage.write_atomically(&mut ops), check);
    assert_eq!(observe(&storage), before, "{check}: promise must not be set");

    let mut storage = populated(make_empty);
    let mut ops = vec![
        StorageOp::AppendEntries(proposals(6, 8, 2)),
        StorageOp::SetAcceptedRound(Ballot::with(1, 9, 0, 3)),
        StorageOp::SetDecidedIdx(7),
        StorageOp::SetStopSign(None),
        StorageOp::SetSnapshot(None),
        StorageOp::SetIncarnation(4),
        StorageOp::Trim(5),
        StorageOp::Trim(3),
    ];
    assert_out_of_range(storage.write_atomically(&mut ops), check);
    assert_eq!(observe(&storage), before, "{check}: no op of the call may apply");
}

/// After a failed write, every write and flush fails (fail-stop) while reads keep working.
pub fn check_failed_write_poisons_storage<St, F>(make_empty: &mut F)
where
    St: Storage<u64, SumSnapshot>,
    F: FnMut() -> St,
{
    let check = "check_failed_write_poisons_storage";
    let mut storage = populated(make_empty);
    let before = observe(&storage);
    assert_out_of_range(storage.write_atomically(&mut vec![StorageOp::Trim(0)]), check);
    let mut valid = vec![StorageOp::SetIncarnation(9), StorageOp::AppendEntries(proposals(6, 7, 2))];
    assert!(storage.write_atomically(&mut valid).is_err(), "{check}: later write must fail");
    assert!(storage.write_atomically(&mut Vec::new()).is_err(), "{check}: even an empty write");
    assert!(storage.flush().is_err(), "{check}: later flush must fail");
    assert_eq!(observe(&storage), before, "{check}: reads still work, state unchanged");
}

/// Ops of one call apply in the order given: later ops see and override earlier ones.
pub fn check_ops_apply_in_order<St, F>(make_empty: &mut F)
where
    St: Storage<u64, SumSnapshot>,
    F: FnMut() -> St,
{
    let check = "check_ops_apply_in_order";
    let mut storage = make_empty();
    let ops = vec![
        StorageOp::SetDecidedIdx(3),
        StorageOp::AppendEntries(proposals(0, 5, 1)),
        StorageOp::AppendEntries(proposals(5, 8, 1)),
        StorageOp::AppendOnPrefix(6, proposals(6, 7, 2)),
        StorageOp::Trim(2),
        StorageOp::SetPromise(Ballot::with(1, 5, 0, 1)),
        StorageOp::SetPromise(Ballot::with(1, 2, 0, 2)),
        StorageOp::SetStopSign(Some(stopsign(2))),
        StorageOp::SetStopSign(None),
        StorageOp::SetSnapshot(Some(SumSnapshot(1))),
        StorageOp::SetSnapshot(Some(SumSnapshot(2))),
        StorageOp::SetIncarnation(1),
        StorageOp::SetIncarnation(2),
        StorageOp::SetDecidedIdx(5),
    ];
    write(&mut storage, ops, check);
    let mut entries = proposals(2, 6, 1);
    entries.extend(proposals(6, 7, 2));
    let expected = ObservedState {
        compacted_idx: 2,
        log_end: 7,
        entries,
        promise: Some(Ballot::with(1, 2, 0, 2)),
        accepted_round: None,
        decided_idx: 5,
        stopsign: None,
        snapshot: Some(SumSnapshot(2)),
        incarnation: 2,
    };
    assert_eq!(observe(&storage), expected, "{check}");
}

/// Each op is valid or not in the state left by the earlier ops of its call, not the state
/// before the call.
pub fn check_ops_validated_against_earlier_ops_of_call<St, F>(make_empty: &mut F)
where
    St: Storage<u64, SumSnapshot>,
    F: FnMut() -> St,
{
    let check = "check_ops_validated_against_earlier_ops_of_call";
    let mut storage = make_empty();
    write(&mut storage, vec![StorageOp::AppendEntries(proposals(0, 3, 1))], check);
    let grows_then_truncates =
        vec![StorageOp::AppendEntries(proposals(3, 6, 1)), StorageOp::AppendOnPrefix(5, proposals(5, 6, 2))];
    write(&mut storage, grows_then_truncates, check);
    assert_eq!(read(&storage, 4, 6, check)[1], proposal_at(5, 2), "{check}: valid after grow");

    let mut storage = make_empty();
    write(&mut storage, vec![StorageOp::AppendEntries(proposals(0, 6, 1))], check);
    let before = observe(&storage);
    let mut trims_then_truncates_below =
        vec![StorageOp::Trim(4), StorageOp::AppendOnPrefix(2, proposals(2, 3, 2))];
    assert_out_of_range(storage.write_atomically(&mut trims_then_truncates_below), check);
    assert_eq!(observe(&storage), before, "{check}: invalid after trim, nothing applied");
}

/// An empty call succeeds and changes nothing.
pub fn check_empty_write_changes_nothing<St, F>(make_empty: &mut F)
where
    St: Storage<u64, SumSnapshot>,
    F: FnMut() -> St,
{
    let check = "check_empty_write_changes_nothing";
    let mut storage = populated(make_empty);
    let before = observe(&storage);
    write(&mut storage, Vec::new(), check);
    assert_eq!(observe(&storage), before, "{check}");
}

/// The promise reads back as last written; storage does not compare ballots.
pub fn check_promise_round_trip<St, F>(make_empty: &mut F)
where
    St: Storage<u64, SumSnapshot>,
    F: FnMut() -> St,
{
    let check = "check_promise_round_trip";
    let mut storage = make_empty();
    for ballot in [Ballot::with(1, 3, 0, 2), Ballot::with(2, 1, 1, 3), Ballot::with(1, 1, 0, 1)] {
        write(&mut storage, vec![StorageOp::SetPromise(ballot)], check);
        assert_eq!(storage.get_promise().expect("get_promise"), Some(ballot), "{check}");
    }
}

/// The accepted round reads back as last written.
pub fn check_accepted_round_round_trip<St, F>(make_empty: &mut F)
where
    St: Storage<u64, SumSnapshot>,
    F: FnMut() -> St,
{
    let check = "check_accepted_round_round_trip";
    let mut storage = make_empty();
    for ballot in [Ballot::with(1, 3, 0, 2), Ballot::with(3, 7, 2, 1), Ballot::default()] {
        write(&mut storage, vec![StorageOp::SetAcceptedRound(ballot)], check);
        let stored = storage.get_accepted_round().expect("get_accepted_round");
        assert_eq!(stored, Some(ballot), "{check}");
        assert_eq!(storage.get_promise().expect("get_promise"), None, "{check}: promise apart");
    }
}

/// The decided index reads back as last written, even beyond `log_end` or moving backwards.
pub fn check_decided_idx_round_trip<St, F>(make_empty: &mut F)
where
    St: Storage<u64, SumSnapshot>,
    F: FnMut() -> St,
{
    let check = "check_decided_idx_round_trip";
    let mut storage = make_empty();
    write(&mut storage, vec![StorageOp::AppendEntries(proposals(0, 4, 1))], check);
    for decided_idx in [3, 4, 9, 0, LogIndex::MAX, 2] {
        write(&mut storage, vec![StorageOp::SetDecidedIdx(decided_idx)], check);
        let stored = storage.get_decided_idx().expect("get_decided_idx");
        assert_eq!(stored, decided_idx, "{check}");
    }
}

/// The StopSign reads back as last written, including its removal.
pub fn check_stopsign_round_trip<St, F>(make_empty: &mut F)
where
    St: Storage<u64, SumSnapshot>,
    F: FnMut() -> St,
{
    let check = "check_stopsign_round_trip";
    let mut storage = make_empty();
    let without_metadata =
        StopSign::with(ClusterConfig { configuration_id: 4, nodes: vec![7], flexible_quorum: None }, None);
    for stopsign in [Some(stopsign(2)), Some(without_metadata), Some(stopsign(3)), None] {
        write(&mut storage, vec![StorageOp::SetStopSign(stopsign.clone())], check);
        assert_eq!(storage.get_stopsign().expect("get_stopsign"), stopsign, "{check}");
    }
}

/// The snapshot reads back as last written, including its removal.
pub fn check_snapshot_round_trip<St, F>(make_empty: &mut F)
where
    St: Storage<u64, SumSnapshot>,
    F: FnMut() -> St,
{
    let check = "check_snapshot_round_trip";
    let mut storage = make_empty();
    let mut merged = SumSnapshot::create(&[1, 2, 3]);
    merged.merge(SumSnapshot::create(&[4]));
    assert_eq!(merged, SumSnapshot(10), "{check}: SumSnapshot arithmetic");
    for snapshot in [Some(merged), Some(SumSnapshot(u64::MAX)), None, Some(SumSnapshot(0))] {
        write(&mut storage, vec![StorageOp::SetSnapshot(snapshot)], check);
        assert_eq!(storage.get_snapshot().expect("get_snapshot"), snapshot, "{check}");
    }
}

/// The incarnation reads back as last written.
pub fn check_incarnation_round_trip<St, F>(make_empty: &mut F)
where
    St: Storage<u64, SumSnapshot>,
    F: FnMut() -> St,
{
    let check = "check_incarnation_round_trip";
    let mut storage = make_empty();
    for incarnation in [1, 2, u64::MAX, 0] {
        write(&mut storage, vec![StorageOp::SetIncarnation(incarnation)], check);
        assert_eq!(storage.get_incarnation().expect("get_incarnation"), incarnation, "{check}");
    }
}

/// A healthy storage flushes successfully, empty or not, and flushing changes no read.
pub fn check_flush_succeeds_when_healthy<St, F>(make_empty: &mut F)
where
    St: Storage<u64, SumSnapshot>,
    F: FnMut() -> St,
{
    let check = "check_flush_succeeds_when_healthy";
    let mut storage = make_empty();
    assert!(storage.flush().is_ok(), "{check}: empty storage");
    let mut storage = populated(make_empty);
    let before = observe(&storage);
    assert!(storage.flush().is_ok(), "{check}: after writes");
    assert!(storage.flush().is_ok(), "{check}: twice in a row");
    assert_eq!(observe(&storage), before, "{check}: flush changed state");
}

/// An op that would push `log_end` past `u64::MAX` fails with `OutOfRange` instead of panicking.
pub fn check_index_overflow_is_rejected<St, F>(make_empty: &mut F)
where
    St: Storage<u64, SumSnapshot>,
    F: FnMut() -> St,
{
    let check = "check_index_overflow_is_rejected";
    let max = LogIndex::MAX;
    let overflowing = [
        StorageOp::AppendEntries(vec![proposal_at(max, 1)]),
        StorageOp::AppendOnPrefix(max, vec![proposal_at(max, 1)]),
    ];
    for op in overflowing {
        let mut storage = make_empty();
        write(&mut storage, vec![StorageOp::Trim(max)], check);
        assert_eq!(storage.get_log_end().expect("get_log_end"), max, "{check}: log_end");
        assert!(read(&storage, max, max, check).is_empty(), "{check}: empty at the top");
        let before = observe(&storage);
        assert_out_of_range(storage.write_atomically(&mut vec![op]), check);
        assert_eq!(observe(&storage), before, "{check}: state changed");
    }
}
