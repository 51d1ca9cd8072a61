//! The simulator over the durable write-ahead log: every replica runs on `PersistentStorage`
//! over its own `SimFs` disk (`--storage persistent`), crashes lose, tear or flip unsynced bytes,
//! and restarts go through the storage's real recovery and then `OmniPaxos::try_with`.

use omnipaxos_core::{
    storage::{Storage, StorageOp},
    util::{Proposal, ProposalId},
};
use omnipaxos_sim::{
    kv::{Command, Op, RequestId},
    runner,
    sim::{LinearizabilityResult, SimConfig},
    storage::{CrashedDisk, DiskLoss, SimStorage, StorageKind},
};
use omnipaxos_storage::persistent_storage::{format::segment_frames, fs::FileSystem, sim_fs::CrashVariant};

fn config(seed: u64, nodes: usize) -> SimConfig {
    let mut config = SimConfig::new(seed, nodes);
    config.storage = StorageKind::Persistent;
    config
}

/// 50 seeds × N = 3: every safety invariant, liveness after healing and linearizability hold;
/// and the run really exercised the crash model: crashes inside flushes under every variant,
/// and recoveries that dropped a torn tail.
#[test]
fn fifty_seeds_over_persistent_storage_pass_every_check() {
    let mut losses = std::collections::BTreeMap::new();
    for seed in 0..50 {
        let report = runner::run_one(config(seed, 3));
        assert_eq!(report.violation, None, "seed {seed} N=3 --storage persistent");
        assert_eq!(report.linearizability, LinearizabilityResult::Linearizable, "seed {seed}");
        assert!(report.ops.invoked >= 500 && report.ops.ok > 0, "seed {seed}: {:?}", report.ops);
        for (name, count) in report.disk_losses {
            *losses.entry(name).or_insert(0) += count;
        }
    }
    for name in [
        "in-flush lose-unsynced",
        "in-flush keep-prefix",
        "in-flush keep-random-sectors",
        "in-flush flip-unsynced-bit",
        "recovered-torn-tail",
    ] {
        assert!(losses.get(name).copied().unwrap_or(0) > 0, "no {name} in 50 seeds: {losses:?}");
    }
    assert!(
        !losses.keys().any(|name| name.starts_with("keep-nothing")),
        "only byte-level losses: {losses:?}"
    );
}

#[test]
fn one_seed_reproduces_its_persistent_run_exactly() {
    let run = |seed| {
        let mut config = config(seed, 3);
        config.trace = true;
        runner::run_one(config)
    };
    let (first, second) = (run(11), run(11));
    assert!(first.trace.iter().any(|line| line.contains("RESTART")), "the seed restarts a node");
    assert_eq!(first.trace, second.trace);
    assert_eq!(first.disk_losses, second.disk_losses);
}

/// A disk whose *synced* data is damaged must not reopen: the refusal reaches the simulator as
/// an error (reported as the violation `crashed_replicas_restart`), never a silent empty log.
#[test]
fn corrupt_synced_data_is_a_recovery_error_not_an_empty_disk() {
    let mut storage = SimStorage::new(StorageKind::Persistent, 1, 1);
    let entries: Vec<Command> = (0..5)
        .map(|seq| Command { request: RequestId { client: 0, seq }, op: Op::Put { key: 1, value: seq } })
        .collect();
    let proposals = (1..)
        .zip(entries)
        .map(|(seq, entry)| Proposal { id: ProposalId { node: 1, seq, incarnation: 0 }, entry })
        .collect();
    storage.write_atomically(&mut vec![StorageOp::AppendEntries(proposals)]).expect("write");
    storage.flush().expect("flush");
    let clean = storage.crash_disk(DiskLoss::Bytes { variant: CrashVariant::LoseUnsynced, seed: 1 });
    let reopened = clean.recover().expect("a clean crash reopens");
    assert_eq!(reopened.get_log_end().expect("read"), 5, "the synced entries survive");

    let crashed = storage.crash_disk(DiskLoss::Bytes { variant: CrashVariant::FlipUnsyncedBit, seed: 2 });
    let CrashedDisk::Persistent { fs, config } = &crashed else { panic!("a persistent disk") };
    let mut segments = fs.list_files(&config.path).expect("the data directory");
    segments.retain(|name| name.ends_with(".log"));
    let segment = config.path.join(&segments[0]);
    let bytes = fs.read(&segment).expect("segment");
    let frames = segment_frames(&bytes);
    assert!(frames.len() >= 2, "a checkpoint and the synced write");
    // A byte inside the checkpoint, which was synced before the segment got its name.
    let (checkpoint_offset, _) = frames[0];
    fs.corrupt_byte(&segment, checkpoint_offset + 40, 0x40);
    let error = crashed.recover().expect_err("synced data that fails its checksum is refused");
    assert!(error.contains("refuses to open"), "{error}");
}

#[test]
fn the_storage_option_parses_both_backends() {
    assert_eq!("persistent".parse::<StorageKind>(), Ok(StorageKind::Persistent));
    assert_eq!("crashable".parse::<StorageKind>(), Ok(StorageKind::Crashable));
    assert!("disk".parse::<StorageKind>().is_err());
    assert_eq!(SimConfig::new(0, 3).storage, StorageKind::Crashable, "the default is unchanged");
}
