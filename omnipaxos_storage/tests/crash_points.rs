//! Crash-point enumeration: `PersistentStorage` runs a workload over [`SimFs`], which records
//! its state after every mutating system call (create, write, fdatasync, rename, remove, fsync
//! of a directory). For every such crash point and every [`CrashVariant`] (unsynced bytes lost,
//! a prefix kept, random sectors kept, a bit flipped) the storage is reopened and must hold
//! exactly the state after some prefix of its `write_atomically` calls: at least every call a
//! returned `flush` covered, at most the calls made so far, byte-identical to a model
//! (`MemoryStorage` fed the same calls). Then, on the recovered disk: a second open gives the
//! same state, and a new write + flush survives one more crash. Also after every crash point:
//! the process alone dies (every write visible, nothing more durable), the storage recovers,
//! then the power fails: the recovered state must survive (recovery synced what it accepted).
//!
//! The workload appends, truncates (`AppendOnPrefix`), trims, snapshots, sets every field,
//! closes and reopens the storage now and then (crash points inside `close` and inside the
//! reopen's recovery), and uses tiny segments so that segments roll (new segment, then Seal)
//! and are deleted many times.
//!
//! What each recovery reports is checked too: a crash that loses exactly the unsynced writes
//! ends cleanly (no torn tail, no possible loss); a dropped tail is reported as torn or as a
//! possible loss, never silently; a possible loss is recorded and survives the next open.
//!
//! CI runs a small size by default. The large run is one command:
//! `cargo test -p omnipaxos_storage --release --test crash_points -- --ignored --nocapture`

use omnipaxos_core::{
    ballot_leader_election::Ballot,
    storage::{ClusterConfig, StopSign, Storage, StorageOp},
    util::LogIndex,
};
use omnipaxos_storage::{
    conformance::{observe, proposals, ObservedState, SumSnapshot},
    memory_storage::MemoryStorage,
    persistent_storage::{
        recovery::Tail,
        sim_fs::{CrashPoint, CrashVariant, SimFs, SimOpKind},
        OpenError, OpenMode, PersistentStorage, PersistentStorageConfig,
    },
};

type Call = Vec<StorageOp<u64, SumSnapshot>>;
type SimStorage = PersistentStorage<u64, SumSnapshot, SimFs>;

/// A small seeded generator (SplitMix64): the workload is a pure function of its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    /// Uniform in `low..=high`.
    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low + 1)
    }
}

struct Workload {
    /// The calls; call `i` (1-based) sets the incarnation to `i`, which names it after recovery.
    calls: Vec<Call>,
    /// `flush_after[i]`: flush after call `i + 1`.
    flush_after: Vec<bool>,
    /// `reopen_after[i]`: after call `i + 1` (and its flush), close the storage and reopen it.
    reopen_after: Vec<bool>,
    /// `models[j]`: the model after the first `j` calls.
    models: Vec<MemoryStorage<u64, SumSnapshot>>,
}

/// A random valid workload of `count` calls.
fn workload(seed: u64, count: usize) -> Workload {
    let mut rng = Rng(seed);
    let mut model = MemoryStorage::<u64, SumSnapshot>::default();
    let mut workload = Workload {
        calls: Vec::new(),
        flush_after: Vec::new(),
        reopen_after: Vec::new(),
        models: vec![model.clone()],
    };
    for number in 1..=count as u64 {
        let call = random_call(&mut rng, &model, number);
        model.write_atomically(&mut call.clone()).expect("the workload is valid");
        workload.calls.push(call);
        workload.flush_after.push(rng.below(3) == 0);
        workload.reopen_after.push(rng.below(25) == 0);
        workload.models.push(model.clone());
    }
    workload
}

fn random_call(rng: &mut Rng, model: &MemoryStorage<u64, SumSnapshot>, number: u64) -> Call {
    let compacted = model.get_compacted_idx().expect("read");
    let log_end = model.get_log_end().expect("read");
    let mut call = vec![StorageOp::SetIncarnation(number)];
    match rng.below(10) {
        0..=3 => {
            let count = rng.between(1, 12);
            call.push(StorageOp::AppendEntries(proposals(log_end, log_end + count, number)));
        }
        4 => {
            let from = rng.between(compacted, log_end);
            let count = rng.between(0, 5);
            call.push(StorageOp::AppendOnPrefix(from, proposals(from, from + count, number)));
        }
        5 => {
            let beyond = u64::from(rng.below(8) == 0);
            call.push(StorageOp::Trim(rng.between(compacted, log_end + beyond)));
        }
        6 => {
            let idx = rng.between(compacted, log_end);
            call.push(StorageOp::SetSnapshot(Some(SumSnapshot(number * 7))));
            call.push(StorageOp::Trim(idx));
            call.push(StorageOp::SetDecidedIdx(idx));
        }
        7 => {
            call.push(StorageOp::SetPromise(Ballot::with(1, number as u32, 0, rng.between(1, 3))));
            call.push(StorageOp::SetAcceptedRound(Ballot::with(1, number as u32, 0, 2)));
        }
        8 => {
            let stopsign = (rng.below(2) == 0).then(|| {
                let next = ClusterConfig { configuration_id: 2, nodes: vec![1, 2, 3], flexible_quorum: None };
                StopSign::with(next, Some(number.to_le_bytes().to_vec()))
            });
            call.push(StorageOp::SetStopSign(stopsign));
            call.push(StorageOp::SetDecidedIdx(rng.between(compacted, log_end)));
        }
        _ => {
            // Many entries at once: frames larger than a sector, sometimes than a segment.
            let count = rng.between(20, 60);
            call.push(StorageOp::AppendEntries(proposals(log_end, log_end + count, number)));
        }
    }
    call
}

/// Tiny segments: they roll and are removed often.
const SEGMENT_SIZE_BYTES: u64 = 1024;

fn config(preallocate: bool, mode: OpenMode) -> PersistentStorageConfig {
    PersistentStorageConfig::new("/data/node1", 1, 1)
        .mode(mode)
        .segment_size_bytes(SEGMENT_SIZE_BYTES)
        .preallocate_segments(preallocate)
}

/// The label a crash point carries: what was acknowledged and issued when its call ran.
fn label(acked: usize, issued: usize) -> u64 {
    ((acked as u64) << 32) | issued as u64
}

/// The label of crash points inside the bootstrap, before it returned.
const BOOTSTRAPPING: u64 = u64::MAX;

fn unlabel(label: u64) -> (usize, usize) {
    ((label >> 32) as usize, (label & 0xffff_ffff) as usize)
}

/// Runs the workload once over a capturing `SimFs`; returns the crash points.
fn run_capturing(workload: &Workload, preallocate: bool) -> Vec<CrashPoint> {
    let fs = SimFs::new();
    fs.capture_crash_points();
    fs.set_label(BOOTSTRAPPING);
    let mut storage =
        SimStorage::open_with_fs(&config(preallocate, OpenMode::Bootstrap), fs.clone()).expect("create");
    let mut acked = 0;
    for (index, call) in workload.calls.iter().enumerate() {
        let issued = index + 1;
        fs.set_label(label(acked, issued));
        storage.write_atomically(&mut call.clone()).expect("write");
        if workload.flush_after[index] {
            let syncs_before = storage.sync_counts().data_syncs;
            storage.flush().expect("flush");
            let syncs = storage.sync_counts().data_syncs - syncs_before;
            assert!(syncs <= 1, "a flush makes at most one fdatasync, made {syncs}");
            acked = issued;
        }
        if workload.reopen_after[index] {
            storage.close().expect("close");
            acked = issued;
            fs.set_label(label(acked, issued));
            storage = SimStorage::open_with_fs(&config(preallocate, OpenMode::Restart), fs.clone())
                .expect("reopen");
            assert!(storage.open_report().previous_session_closed, "the close was recorded");
            assert_eq!(storage.open_report().tail, Tail::Clean);
        }
    }
    fs.take_crash_points()
}

/// Totals of one enumeration.
#[derive(Debug, Default)]
struct Counts {
    crash_points: usize,
    recoveries: usize,
    torn_tails: usize,
    /// Recoveries that dropped a complete frame that failed verification: reported as a
    /// possible loss of acknowledged data (here never an actual loss: the oracle checks it).
    possible_losses: usize,
    /// The same, per crash variant.
    possible_losses_by_variant: std::collections::BTreeMap<String, usize>,
    /// Recoveries that undid an interrupted roll (the new segment removed as a stray).
    interrupted_rolls: usize,
    /// Crashes inside the bootstrap that left no log (bootstrapped again).
    interrupted_bootstraps: usize,
    /// Process-only crashes, each followed by a power loss after recovery.
    process_crashes: usize,
    /// Recoveries that kept calls beyond the acknowledged ones.
    kept_unacknowledged: usize,
}

/// Which workload's crash point is being recovered: its calls and whether it preallocated.
struct Run<'a> {
    workload: &'a Workload,
    preallocated: bool,
}

fn check_recovery(run: &Run<'_>, point: &CrashPoint, variant: CrashVariant, seed: u64, counts: &mut Counts) {
    let workload = run.workload;
    let context = format!("crash after {point:?}, {variant:?}, seed {seed}");
    let crashed = point.crash(variant, seed);
    let (acked, issued) = match point.label {
        BOOTSTRAPPING => (0, 0),
        label => unlabel(label),
    };
    let storage =
        match SimStorage::open_with_fs(&config(seed.is_multiple_of(2), OpenMode::Restart), crashed.clone()) {
            Ok(storage) => storage,
            // A bootstrap that never returned may leave no log: the replica never started, so it
            // bootstraps again (over whatever the interrupted bootstrap left).
            Err(OpenError::LogMissing { .. }) if point.label == BOOTSTRAPPING => {
                counts.interrupted_bootstraps += 1;
                SimStorage::open_with_fs(&config(seed.is_multiple_of(2), OpenMode::Bootstrap), crashed)
                    .unwrap_or_else(|error| panic!("{context}: bootstrap again: {error}"))
            }
            Err(error) => panic!("{context}: recovery failed: {error}"),
        };
    let observed = observe(&storage);
    let recovered_calls = observed.incarnation as usize;
    assert!(
        (acked..=issued).contains(&recovered_calls),
        "{context}: recovered {recovered_calls} calls, acknowledged {acked}, issued {issued}"
    );
    let expected = observe(&workload.models[recovered_calls]);
    assert_eq!(observed, expected, "{context}: state differs from the model after {recovered_calls} calls");
    let report = storage.open_report();
    if variant == CrashVariant::LoseUnsynced {
        assert_eq!(report.tail, Tail::Clean, "{context}: losing exactly the unsynced writes ends cleanly");
    }
    if let (true, CrashVariant::KeepRandomSectors, Tail::PossibleLoss { offset, bytes, .. }) =
        (run.preallocated, variant, &report.tail)
    {
        // A lost sector of the preallocated range still holds the fill pattern, so a torn frame
        // there is always proven torn; only a frame that grew the file past it can look complete.
        assert!(offset + bytes > SEGMENT_SIZE_BYTES, "{context}: {:?}", report.tail);
    }
    assert_eq!(
        report.acknowledged_state_may_be_lost(),
        report.tail.may_have_lost_acknowledged_data(),
        "{context}: a possible loss is reported exactly when this open found one"
    );
    counts.recoveries += 1;
    counts.torn_tails += usize::from(matches!(report.tail, Tail::Torn { .. }));
    if matches!(report.tail, Tail::PossibleLoss { .. }) {
        counts.possible_losses += 1;
        *counts.possible_losses_by_variant.entry(format!("{variant:?}")).or_insert(0) += 1;
    }
    counts.interrupted_rolls += usize::from(
        report.removed_strays.iter().any(|path| path.extension().is_some_and(|extension| extension == "log")),
    );
    counts.kept_unacknowledged += usize::from(recovered_calls > acked);
    check_reopen_and_continue(storage, &observed, workload, recovered_calls, &context);
}

/// A second open of the recovered disk gives the same state; a write after recovery survives.
fn check_reopen_and_continue(
    storage: SimStorage,
    observed: &ObservedState,
    workload: &Workload,
    recovered_calls: usize,
    context: &str,
) {
    let possible_loss = storage.possible_loss();
    let reopened_fs = storage.fs().crash(CrashVariant::LoseUnsynced, 0);
    let mut reopened =
        SimStorage::open_with_fs(&config(false, OpenMode::Restart), reopened_fs).expect("second open");
    assert_eq!(&observe(&reopened), observed, "{context}: a second open differs");
    assert_eq!(reopened.open_report().tail, Tail::Clean, "{context}: the first open repaired the tail");
    assert_eq!(reopened.possible_loss(), possible_loss, "{context}: a recorded possible loss is kept");
    let log_end = observed.log_end;
    let mut next = vec![
        StorageOp::SetIncarnation(1_000_000),
        StorageOp::AppendEntries(proposals(log_end, log_end + 3, 99)),
    ];
    reopened.write_atomically(&mut next.clone()).expect("write after recovery");
    reopened.flush().expect("flush after recovery");
    let mut model = workload.models[recovered_calls].clone();
    model.write_atomically(&mut next).expect("model");
    for variant in [CrashVariant::LoseUnsynced, CrashVariant::KeepRandomSectors] {
        let crashed = reopened.fs().crash(variant, 5);
        let again = SimStorage::open_with_fs(&config(false, OpenMode::Restart), crashed)
            .expect("open after the second crash");
        assert_eq!(
            observe(&again),
            observe(&model),
            "{context}: the acknowledged write after recovery was lost"
        );
    }
}

/// After a crash of the process alone (the kernel keeps every write, durable or not), the
/// storage recovers a prefix of calls; then a power loss (every unsynced byte lost) must not
/// change what it recovered: recovery made everything it accepted durable before returning.
fn check_process_crash(workload: &Workload, point: &CrashPoint, seed: u64, counts: &mut Counts) {
    let context = format!("process crash after {point:?}");
    let (acked, issued) = match point.label {
        BOOTSTRAPPING => return,
        label => unlabel(label),
    };
    let storage = match SimStorage::open_with_fs(
        &config(seed.is_multiple_of(2), OpenMode::Restart),
        point.process_crash(),
    ) {
        Ok(storage) => storage,
        Err(error) => panic!("{context}: recovery failed: {error}"),
    };
    let observed = observe(&storage);
    let recovered_calls = observed.incarnation as usize;
    assert!(
        (acked..=issued).contains(&recovered_calls),
        "{context}: recovered {recovered_calls} of {acked}..={issued}"
    );
    assert_eq!(observed, observe(&workload.models[recovered_calls]), "{context}");
    let power_loss = storage.fs().crash(CrashVariant::LoseUnsynced, 0);
    drop(storage);
    let again = SimStorage::open_with_fs(&config(false, OpenMode::Restart), power_loss)
        .unwrap_or_else(|error| panic!("{context}: reopen after a power loss: {error}"));
    assert_eq!(
        observe(&again),
        observed,
        "{context}: a power loss after recovery changed the recovered state"
    );
    counts.process_crashes += 1;
}

/// Enumerates every crash point of `seeds` workloads of `calls` calls, every variant.
fn enumerate(seeds: std::ops::Range<u64>, calls: usize) -> Counts {
    let mut counts = Counts::default();
    for seed in seeds {
        let workload = workload(seed, calls);
        let preallocated = seed.is_multiple_of(2);
        let points = run_capturing(&workload, preallocated);
        let run = Run { workload: &workload, preallocated };
        counts.crash_points += points.len();
        for point in &points {
            check_process_crash(&workload, point, seed, &mut counts);
            for (number, variant) in CrashVariant::ALL.into_iter().enumerate() {
                let variant_seed = seed.wrapping_mul(1_000_003) ^ (point.op_index << 3) ^ number as u64;
                check_recovery(&run, point, variant, variant_seed, &mut counts);
            }
        }
    }
    counts
}

fn report(name: &str, counts: &Counts) {
    println!(
        "{name}: {} crash points x {} variants = {} recoveries; 0 acknowledged writes lost, 0 phantom \
         writes, 0 recovery failures; {} torn tails dropped; {} complete bad frames dropped and \
         reported as possible losses ({:?}); {} interrupted rolls undone; {} interrupted bootstraps \
         redone; {} recoveries kept unacknowledged calls; {} process crashes, each recovered and \
         then power-lost with the recovered state intact",
        counts.crash_points,
        CrashVariant::ALL.len(),
        counts.recoveries,
        counts.torn_tails,
        counts.possible_losses,
        counts.possible_losses_by_variant,
        counts.interrupted_rolls,
        counts.interrupted_bootstraps,
        counts.kept_unacknowledged,
        counts.process_crashes
    );
}

#[test]
fn every_crash_point_recovers_an_acknowledged_prefix() {
    let counts = enumerate(0..2, 80);
    report("crash enumeration (CI size: 2 workloads x 80 calls)", &counts);
    assert_eq!(counts.recoveries, counts.crash_points * CrashVariant::ALL.len());
    assert!(counts.crash_points > 300, "the workload must reach many crash points");
    assert!(counts.torn_tails > 0, "some crashes must tear the tail");
    assert!(counts.possible_losses > 0, "some crashes must flip a bit of a complete frame");
    assert!(counts.interrupted_rolls > 0, "some crashes must interrupt a roll");
    assert!(counts.kept_unacknowledged > 0, "some crashes must keep unacknowledged calls");
}

/// The large run: `cargo test -p omnipaxos_storage --release --test crash_points -- --ignored --nocapture`
#[test]
#[ignore = "large crash enumeration; run with --ignored (see the module docs)"]
fn every_crash_point_recovers_an_acknowledged_prefix_large() {
    let counts = enumerate(0..32, 1000);
    report("crash enumeration (large: 32 workloads x 1000 calls)", &counts);
    assert_eq!(counts.recoveries, counts.crash_points * CrashVariant::ALL.len());
}

/// The workload covers what the issue asks for: rolls, deletions, renames, and syncs.
#[test]
fn workload_rolls_and_deletes_segments() {
    let workload = workload(0, 80);
    let points = run_capturing(&workload, true);
    let count = |kind: SimOpKind| points.iter().filter(|point| point.op == kind).count();
    assert!(workload.reopen_after.iter().any(|reopen| *reopen), "the workload closes and reopens");
    assert!(count(SimOpKind::Rename) >= 5, "segments roll: {} renames", count(SimOpKind::Rename));
    assert!(count(SimOpKind::Remove) >= 2, "dead segments are removed: {}", count(SimOpKind::Remove));
    assert!(count(SimOpKind::SyncDir) >= 5 && count(SimOpKind::SyncData) >= 20);
    let truncations =
        workload.calls.iter().flatten().filter(|op| matches!(op, StorageOp::AppendOnPrefix(..))).count();
    let trims = workload.calls.iter().flatten().filter(|op| matches!(op, StorageOp::Trim(_))).count();
    assert!(truncations >= 3 && trims >= 5, "{truncations} truncations, {trims} trims");
    let _: LogIndex = workload.models.last().expect("model").get_log_end().expect("read");
}
