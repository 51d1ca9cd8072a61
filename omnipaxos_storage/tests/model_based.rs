//! Model-based tests: random sequences of calls give the same results on the storages of this
//! crate as on a small model written independently of them (a `Vec` of slots indexed by
//! absolute log index, where trimmed slots are `None`, plus plain fields).
//!
//! The seed is fixed, so a failure reproduces on every run; set `PROPTEST_CASES` to run more.

use omnipaxos_core::{
    ballot_leader_election::Ballot,
    storage::{ClusterConfig, StopSign, Storage, StorageError, StorageOp},
    util::{LogIndex, Proposal},
};
use omnipaxos_storage::{
    conformance::{observe, proposals, ObservedState, SumSnapshot},
    crash_storage::{CrashKeep, CrashableStorage},
    memory_storage::MemoryStorage,
};
use proptest::{
    collection::vec,
    prelude::*,
    test_runner::{Config, RngSeed},
};

type Op = StorageOp<u64, SumSnapshot>;

/// Raw indices stay small so the model's slot vector stays small, yet reach past every log.
const RAW_INDEX_MAX: LogIndex = 48;
const CALLS_PER_CASE_MAX: usize = 40;
const OPS_PER_CALL_MAX: usize = 5;
const ENTRIES_PER_OP_MAX: usize = 4;

fn config() -> Config {
    Config {
        cases: 256,
        rng_seed: RngSeed::Fixed(0x5eed_1095),
        failure_persistence: None,
        ..Config::default()
    }
}

/// An index picked relative to the log at the time the op runs (mostly valid), or a raw one.
#[derive(Clone, Debug)]
enum IndexChoice {
    Relative(u8),
    Raw(LogIndex),
}

/// An op before its indices and entries are fixed against the current log.
#[derive(Clone, Debug)]
enum AbstractOp {
    Append(usize),
    AppendOnPrefix(IndexChoice, usize),
    Trim(IndexChoice),
    SetPromise(u32),
    SetAcceptedRound(u32),
    SetDecidedIdx(LogIndex),
    SetStopSign(Option<u32>),
    SetSnapshot(Option<u64>),
    SetIncarnation(u64),
}

fn index_choice() -> impl Strategy<Value = IndexChoice> {
    prop_oneof![
        9 => any::<u8>().prop_map(IndexChoice::Relative),
        1 => (0..RAW_INDEX_MAX).prop_map(IndexChoice::Raw),
    ]
}

fn abstract_op() -> impl Strategy<Value = AbstractOp> {
    let count = 0..ENTRIES_PER_OP_MAX;
    prop_oneof![
        4 => count.clone().prop_map(AbstractOp::Append),
        3 => (index_choice(), count).prop_map(|(at, count)| AbstractOp::AppendOnPrefix(at, count)),
        2 => index_choice().prop_map(AbstractOp::Trim),
        1 => (0u32..6).prop_map(AbstractOp::SetPromise),
        1 => (0u32..6).prop_map(AbstractOp::SetAcceptedRound),
        1 => (0..RAW_INDEX_MAX).prop_map(AbstractOp::SetDecidedIdx),
        1 => proptest::option::of(1u32..4).prop_map(AbstractOp::SetStopSign),
        1 => proptest::option::of(0u64..100).prop_map(AbstractOp::SetSnapshot),
        1 => (0u64..4).prop_map(AbstractOp::SetIncarnation),
    ]
}

fn abstract_call() -> impl Strategy<Value = Vec<AbstractOp>> {
    vec(abstract_op(), 0..OPS_PER_CALL_MAX)
}

/// How a storage call failed, without payloads, so model and storage results compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    OutOfRange,
    Poisoned,
    Io,
}

fn classify(error: StorageError) -> Failure {
    match error {
        StorageError::OutOfRange { .. } => Failure::OutOfRange,
        StorageError::Poisoned => Failure::Poisoned,
        StorageError::Io(_) => Failure::Io,
        other => panic!("unexpected storage error {other}"),
    }
}

/// The reference model of one storage's state.
#[derive(Clone, Debug, Default)]
struct Model {
    /// Slot `i` holds entry `i`; trimmed slots hold `None`. `log_end` is the length.
    slots: Vec<Option<Proposal<u64>>>,
    compacted_idx: LogIndex,
    promise: Option<Ballot>,
    accepted_round: Option<Ballot>,
    decided_idx: LogIndex,
    stopsign: Option<StopSign>,
    snapshot: Option<SumSnapshot>,
    incarnation: u64,
}

impl Model {
    fn log_end(&self) -> LogIndex {
        self.slots.len() as LogIndex
    }

    fn apply(&mut self, op: &Op) -> Result<(), Failure> {
        match op {
            StorageOp::AppendEntries(entries) => {
                self.slots.extend(entries.iter().cloned().map(Some));
            }
            StorageOp::AppendOnPrefix(from_idx, entries) => {
                if *from_idx < self.compacted_idx || *from_idx > self.log_end() {
                    return Err(Failure::OutOfRange);
                }
                self.slots.truncate(*from_idx as usize);
                self.slots.extend(entries.iter().cloned().map(Some));
            }
            StorageOp::Trim(idx) => self.trim(*idx)?,
            StorageOp::SetPromise(ballot) => self.promise = Some(*ballot),
            StorageOp::SetAcceptedRound(ballot) => self.accepted_round = Some(*ballot),
            StorageOp::SetDecidedIdx(idx) => self.decided_idx = *idx,
            StorageOp::SetStopSign(stopsign) => self.stopsign = stopsign.clone(),
            StorageOp::SetSnapshot(snapshot) => self.snapshot = *snapshot,
            StorageOp::SetIncarnation(incarnation) => self.incarnation = *incarnation,
            StorageOp::SetIdentity(_) => {}
        }
        Ok(())
    }

    fn trim(&mut self, idx: LogIndex) -> Result<(), Failure> {
        if idx < self.compacted_idx {
            return Err(Failure::OutOfRange);
        }
        if idx > self.log_end() {
            self.slots.resize(idx as usize, None);
        }
        for slot in &mut self.slots[self.compacted_idx as usize..idx as usize] {
            *slot = None;
        }
        self.compacted_idx = idx;
        Ok(())
    }

    /// All ops or none: applies to a copy and keeps it only if every op succeeded.
    fn write(&mut self, ops: &[Op]) -> Result<(), Failure> {
        let mut next = self.clone();
        for op in ops {
            next.apply(op)?;
        }
        *self = next;
        Ok(())
    }

    fn get_entries(&self, from: LogIndex, to: LogIndex) -> Result<Vec<Proposal<u64>>, Failure> {
        if from < self.compacted_idx || from > to || to > self.log_end() {
            return Err(Failure::OutOfRange);
        }
        let slots = &self.slots[from as usize..to as usize];
        Ok(slots.iter().map(|slot| slot.clone().expect("stored slot")).collect())
    }

    fn observe(&self) -> ObservedState {
        ObservedState {
            compacted_idx: self.compacted_idx,
            log_end: self.log_end(),
            entries: self.get_entries(self.compacted_idx, self.log_end()).expect("whole log"),
            promise: self.promise,
            accepted_round: self.accepted_round,
            decided_idx: self.decided_idx,
            stopsign: self.stopsign.clone(),
            snapshot: self.snapshot,
            incarnation: self.incarnation,
        }
    }
}

/// Fixes the indices of `call` against `model`, op by op as the call would see the log, with
/// entries tagged by `generation` so every write is distinguishable.
fn concretize(model: &Model, call: &[AbstractOp], generation: u64) -> Vec<Op> {
    let mut scratch = model.clone();
    let mut ops = Vec::new();
    for (position, abstract_op) in call.iter().enumerate() {
        let op = concretize_op(&scratch, abstract_op, generation * 16 + position as u64);
        let _ = scratch.apply(&op);
        ops.push(op);
    }
    ops
}

fn concretize_op(model: &Model, abstract_op: &AbstractOp, generation: u64) -> Op {
    let stored = model.log_end() - model.compacted_idx;
    let pick = |choice: &IndexChoice, span: LogIndex| match choice {
        IndexChoice::Relative(offset) => model.compacted_idx + LogIndex::from(*offset) % span,
        IndexChoice::Raw(idx) => *idx,
    };
    match abstract_op {
        AbstractOp::Append(count) => {
            let from = model.log_end();
            StorageOp::AppendEntries(proposals(from, from + *count as LogIndex, generation))
        }
        AbstractOp::AppendOnPrefix(choice, count) => {
            let from = pick(choice, stored + 1);
            StorageOp::AppendOnPrefix(from, proposals(from, from + *count as LogIndex, generation))
        }
        AbstractOp::Trim(choice) => StorageOp::Trim(pick(choice, stored + 3)),
        AbstractOp::SetPromise(n) => StorageOp::SetPromise(Ballot::with(1, *n, 0, 1)),
        AbstractOp::SetAcceptedRound(n) => StorageOp::SetAcceptedRound(Ballot::with(1, *n, 0, 2)),
        AbstractOp::SetDecidedIdx(idx) => StorageOp::SetDecidedIdx(*idx),
        AbstractOp::SetStopSign(id) => StorageOp::SetStopSign(id.map(stopsign)),
        AbstractOp::SetSnapshot(sum) => StorageOp::SetSnapshot(sum.map(SumSnapshot)),
        AbstractOp::SetIncarnation(incarnation) => StorageOp::SetIncarnation(*incarnation),
    }
}

fn stopsign(configuration_id: u32) -> StopSign {
    let next_config = ClusterConfig { configuration_id, nodes: vec![1, 2, 3], flexible_quorum: None };
    StopSign::with(next_config, None)
}

fn read_ranges() -> impl Strategy<Value = Vec<(LogIndex, LogIndex)>> {
    vec((0..RAW_INDEX_MAX + 8, 0..RAW_INDEX_MAX + 8), 0..16)
}

/// Compares every read of `storage` with `model`, including reads that must fail.
fn assert_reads_agree<St: Storage<u64, SumSnapshot>>(
    storage: &St,
    model: &Model,
    ranges: &[(LogIndex, LogIndex)],
) -> Result<(), TestCaseError> {
    prop_assert_eq!(observe(storage), model.observe());
    for &(from, to) in ranges {
        let actual = storage.get_entries(from, to).map_err(classify);
        prop_assert_eq!(actual, model.get_entries(from, to), "get_entries({}, {})", from, to);
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn memory_storage_agrees_with_model(
        calls in vec(abstract_call(), 1..CALLS_PER_CASE_MAX),
        ranges in read_ranges(),
    ) {
        let mut storage = MemoryStorage::<u64, SumSnapshot>::default();
        let mut model = Model::default();
        let mut poisoned = false;
        for (call_number, call) in calls.iter().enumerate() {
            let mut ops = concretize(&model, call, call_number as u64);
            let expected = if poisoned { Err(Failure::Poisoned) } else { model.write(&ops) };
            poisoned |= expected.is_err();
            let actual = storage.write_atomically(&mut ops).map_err(classify);
            prop_assert_eq!(actual, expected, "call {}", call_number);
            prop_assert_eq!(storage.is_poisoned(), poisoned);
            assert_reads_agree(&storage, &model, &ranges)?;
        }
        prop_assert_eq!(storage.write_count(), calls.len() as u64);
    }
}

/// One step of a crash simulation.
#[derive(Clone, Debug)]
enum Step {
    Write(Vec<AbstractOp>),
    Flush,
    /// 0 keeps nothing, 1 keeps all, anything else a prefix of it modulo the unflushed calls.
    Crash(u8),
    FailNextWrite,
    FailNextFlush,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => abstract_call().prop_map(Step::Write),
        3 => Just(Step::Flush),
        2 => any::<u8>().prop_map(Step::Crash),
        1 => Just(Step::FailNextWrite),
        1 => Just(Step::FailNextFlush),
    ]
}

/// The model of a disk with a volatile cache: durable state, queued calls, fault flags.
#[derive(Clone, Debug, Default)]
struct DiskModel {
    durable: Model,
    live: Model,
    unflushed: Vec<Vec<Op>>,
    poisoned: bool,
    fail_next_write: bool,
    fail_next_flush: bool,
}

impl DiskModel {
    fn write(&mut self, ops: &[Op]) -> Result<(), Failure> {
        if self.poisoned {
            return Err(Failure::Poisoned);
        }
        if std::mem::take(&mut self.fail_next_write) {
            self.poisoned = true;
            return Err(Failure::Io);
        }
        let result = self.live.write(ops);
        match result {
            Ok(()) => self.unflushed.push(ops.to_vec()),
            Err(_) => self.poisoned = true,
        }
        result
    }

    fn flush(&mut self) -> Result<(), Failure> {
        if self.poisoned {
            return Err(Failure::Poisoned);
        }
        if std::mem::take(&mut self.fail_next_flush) {
            self.poisoned = true;
            return Err(Failure::Io);
        }
        for call in self.unflushed.drain(..) {
            self.durable.write(&call).expect("replay of a successful call");
        }
        Ok(())
    }

    fn crash(&mut self, keep: CrashKeep) {
        let kept = match keep {
            CrashKeep::Nothing => 0,
            CrashKeep::Prefix(count) => count,
            CrashKeep::All => self.unflushed.len(),
        };
        let mut recovered = self.durable.clone();
        for call in &self.unflushed[..kept] {
            recovered.write(call).expect("replay of a successful call");
        }
        *self = DiskModel { durable: recovered.clone(), live: recovered, ..DiskModel::default() };
    }
}

fn crash_keep(choice: u8, unflushed_calls: usize) -> CrashKeep {
    match choice {
        0 => CrashKeep::Nothing,
        1 => CrashKeep::All,
        _ => CrashKeep::Prefix(usize::from(choice) % (unflushed_calls + 1)),
    }
}

/// Applies one step to both; returns the storage to continue with (a crash replaces it).
fn run_step(
    mut storage: CrashableStorage<u64, SumSnapshot>,
    disk: &mut DiskModel,
    step: &Step,
    generation: u64,
) -> Result<CrashableStorage<u64, SumSnapshot>, TestCaseError> {
    match step {
        Step::Write(call) => {
            let mut ops = concretize(&disk.live, call, generation);
            let expected = disk.write(&ops);
            prop_assert_eq!(storage.write_atomically(&mut ops).map_err(classify), expected);
        }
        Step::Flush => prop_assert_eq!(storage.flush().map_err(classify), disk.flush()),
        Step::Crash(choice) => {
            let keep = crash_keep(*choice, disk.unflushed.len());
            disk.crash(keep);
            storage = storage.crash(keep);
        }
        Step::FailNextWrite => {
            storage.fail_write_after(0);
            disk.fail_next_write = true;
        }
        Step::FailNextFlush => {
            storage.fail_flush_after(0);
            disk.fail_next_flush = true;
        }
    }
    Ok(storage)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn crashable_storage_agrees_with_model_across_crashes(
        steps in vec(step(), 1..CALLS_PER_CASE_MAX),
        ranges in read_ranges(),
    ) {
        let mut storage = CrashableStorage::<u64, SumSnapshot>::default();
        let mut disk = DiskModel::default();
        for (step_number, step) in steps.iter().enumerate() {
            storage = run_step(storage, &mut disk, step, step_number as u64)?;
            prop_assert_eq!(storage.unflushed_calls(), disk.unflushed.len());
            prop_assert_eq!(storage.is_poisoned(), disk.poisoned);
            assert_reads_agree(&storage, &disk.live, &ranges)?;
            let durable_only = storage.crash(CrashKeep::Nothing);
            prop_assert_eq!(observe(&durable_only), disk.durable.observe());
        }
    }
}
