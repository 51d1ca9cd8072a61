//! Log compaction: trimming at the leader (and with it at every follower), snapshots with the
//! `Sum` snapshot type, the typed refusals, and a lagging follower catching up from a snapshot.

mod common;

use common::{is_kind, Cluster, Sum};
use omnipaxos_core::{
    errors::CompactionErr,
    sequence_paxos::{DropReason, ProposalOutcome},
    util::{LogEntry, LogIndex, NodeId, SnapshottedEntry},
};
use omnipaxos_storage::crash_storage::CrashKeep;

const PIDS: [NodeId; 3] = [1, 2, 3];
/// A few resend timeouts (the default timeout is 20 ticks).
const RECOVERY_TICKS: usize = 80;

/// A cluster led by `leader` in which `values` are decided on every replica.
fn decided_cluster<S: omnipaxos_core::storage::Snapshot<u64>>(
    pids: &[NodeId],
    leader: NodeId,
    values: impl IntoIterator<Item = u64>,
) -> Cluster<S> {
    let mut cluster = Cluster::<S>::new(pids);
    cluster.elect(leader);
    let values: Vec<u64> = values.into_iter().collect();
    for &v in &values {
        cluster.append(leader, v);
    }
    cluster.stabilize();
    for &pid in pids {
        assert_eq!(cluster.decided(pid), values, "replica {pid}");
    }
    cluster
}

fn snapshotted(trimmed_idx: LogIndex, sum: u64) -> Option<LogEntry<u64, Sum>> {
    Some(LogEntry::Snapshotted(SnapshottedEntry { trimmed_idx, snapshot: Sum(sum) }))
}

#[test]
fn trim_all_at_the_leader_trims_every_replica() {
    let mut cluster = decided_cluster::<()>(&PIDS, 1, 1..=5);
    cluster.replica(1).trim(None).expect("trim");
    cluster.stabilize();
    for pid in PIDS {
        let replica = &cluster.replicas[&pid];
        assert_eq!(replica.get_compacted_idx(), 5, "replica {pid}:\n{}", cluster.trace_tail(10));
        for idx in 0..5 {
            assert_eq!(replica.read(idx), Some(LogEntry::Trimmed(5)), "replica {pid} index {idx}");
        }
        assert_eq!(replica.read(5), None, "nothing after the log");
    }
    for v in 6..=7 {
        cluster.append(2, v);
    }
    cluster.stabilize();
    for pid in PIDS {
        assert_eq!(cluster.decided(pid), vec![6, 7], "replica {pid}");
        assert_eq!(cluster.replicas[&pid].read(5), Some(LogEntry::Decided(6)));
        assert_eq!(
            cluster.replicas[&pid].read_entries(3..7),
            Some(vec![LogEntry::Trimmed(5), LogEntry::Decided(6), LogEntry::Decided(7)])
        );
    }
}

#[test]
fn trim_to_an_index_keeps_the_entries_after_it() {
    let mut cluster = decided_cluster::<()>(&PIDS, 1, 1..=5);
    cluster.replica(1).trim(Some(3)).expect("trim");
    cluster.stabilize();
    for pid in PIDS {
        let replica = &cluster.replicas[&pid];
        assert_eq!(replica.get_compacted_idx(), 3, "replica {pid}");
        assert_eq!(replica.read(2), Some(LogEntry::Trimmed(3)), "replica {pid}");
        assert_eq!(replica.read(3), Some(LogEntry::Decided(4)), "replica {pid}");
        assert_eq!(cluster.decided(pid), vec![4, 5], "replica {pid}");
    }
    assert!(
        matches!(cluster.replica(1).trim(Some(2)), Err(CompactionErr::TrimmedIndex(2))),
        "trimming below the compacted index is refused"
    );
    cluster.replica(1).trim(Some(3)).expect("trimming to the compacted index again is a no-op");
    cluster.replica(1).trim(Some(5)).expect("trim further");
    cluster.stabilize();
    for pid in PIDS {
        assert_eq!(cluster.replicas[&pid].get_compacted_idx(), 5, "replica {pid}");
    }
}

#[test]
fn trim_beyond_what_every_replica_accepted_is_refused() {
    let mut cluster = decided_cluster::<()>(&PIDS, 1, 1..=3);
    cluster.isolate(3);
    for v in 4..=6 {
        cluster.append(1, v);
    }
    cluster.stabilize();
    assert_eq!(cluster.decided_idx(1), 6, "leader 1 and follower 2 decide alone");
    match cluster.replica(1).trim(Some(6)) {
        Err(CompactionErr::NotAllDecided(bound)) => assert_eq!(bound, 3, "follower 3 accepted 3 entries"),
        other => panic!("expected NotAllDecided(3), got {other:?}"),
    }
    match cluster.replica(1).trim(Some(100)) {
        Err(CompactionErr::NotAllDecided(3)) => {}
        other => panic!("expected NotAllDecided(3), got {other:?}"),
    }
    assert_eq!(cluster.replicas[&1].get_compacted_idx(), 0, "a refused trim changes nothing");
    cluster.replica(1).trim(None).expect("trim as far as allowed");
    cluster.stabilize();
    assert_eq!(cluster.replicas[&1].get_compacted_idx(), 3);
    assert_eq!(cluster.replicas[&2].get_compacted_idx(), 3);
    // Follower 3 heals and catches up from the untrimmed suffix (it missed the Trim, so it
    // keeps its prefix), and the trim can go further.
    cluster.heal();
    cluster.tick(RECOVERY_TICKS);
    assert_eq!(cluster.decided_idx(3), 6, "{}", cluster.trace_tail(20));
    assert_eq!(cluster.replicas[&3].read(3), Some(LogEntry::Decided(4)));
    cluster.replica(1).trim(None).expect("trim");
    cluster.stabilize();
    for pid in PIDS {
        assert_eq!(cluster.replicas[&pid].get_compacted_idx(), 6, "replica {pid}");
    }
}

#[test]
fn trim_at_a_follower_names_the_leader() {
    let mut cluster = decided_cluster::<()>(&PIDS, 2, 1..=3);
    for pid in [1, 3] {
        match cluster.replica(pid).trim(None) {
            Err(CompactionErr::NotCurrentLeader(2)) => {}
            other => panic!("replica {pid}: expected NotCurrentLeader(2), got {other:?}"),
        }
        assert_eq!(cluster.replicas[&pid].get_compacted_idx(), 0);
    }
}

#[test]
fn trim_with_non_contiguous_pids() {
    let pids = [5, 6, 7];
    let mut cluster = decided_cluster::<()>(&pids, 7, 1..=4);
    cluster.replica(7).trim(None).expect("trim");
    cluster.stabilize();
    for pid in pids {
        assert_eq!(cluster.replicas[&pid].get_compacted_idx(), 4, "replica {pid}");
        assert_eq!(cluster.replicas[&pid].read(0), Some(LogEntry::Trimmed(4)));
    }
    cluster.append(5, 9);
    cluster.stabilize();
    for pid in pids {
        assert_eq!(cluster.decided(pid), vec![9], "replica {pid}");
    }
}

#[test]
fn snapshot_at_the_leader_is_taken_by_every_replica() {
    let mut cluster = decided_cluster::<Sum>(&PIDS, 1, 1..=5);
    cluster.replica(1).snapshot(None, false).expect("snapshot");
    cluster.stabilize();
    cluster.append(3, 6);
    cluster.stabilize();
    for pid in PIDS {
        let replica = &cluster.replicas[&pid];
        assert_eq!(replica.get_compacted_idx(), 5, "replica {pid}:\n{}", cluster.trace_tail(10));
        for idx in 0..5 {
            assert_eq!(replica.read(idx), snapshotted(5, 15), "replica {pid} index {idx}");
        }
        assert_eq!(replica.read(5), Some(LogEntry::Decided(6)), "replica {pid}");
        assert_eq!(cluster.decided(pid), vec![6]);
    }
    // A second snapshot merges into the first.
    cluster.replica(1).snapshot(Some(6), false).expect("snapshot");
    cluster.stabilize();
    for pid in PIDS {
        assert_eq!(cluster.replicas[&pid].read(0), snapshotted(6, 21), "replica {pid}");
    }
}

#[test]
fn snapshot_at_a_follower_compacts_locally() {
    let mut cluster = decided_cluster::<Sum>(&PIDS, 1, 1..=4);
    cluster.replica(2).snapshot(Some(2), true).expect("snapshot");
    cluster.stabilize();
    assert_eq!(cluster.replicas[&2].read(1), snapshotted(2, 3));
    assert_eq!(cluster.replicas[&2].read(2), Some(LogEntry::Decided(3)));
    assert_eq!(cluster.replicas[&1].get_compacted_idx(), 0, "local_only stays local");
    assert_eq!(cluster.replicas[&3].get_compacted_idx(), 0, "local_only stays local");
}

#[test]
fn snapshot_of_an_undecided_or_compacted_index_is_refused() {
    let mut cluster = decided_cluster::<Sum>(&PIDS, 1, 1..=3);
    match cluster.replica(1).snapshot(Some(4), false) {
        Err(CompactionErr::UndecidedIndex(4)) => {}
        other => panic!("expected UndecidedIndex(4), got {other:?}"),
    }
    cluster.isolate(2);
    cluster.isolate(3);
    cluster.append(1, 4);
    cluster.stabilize();
    assert_eq!(cluster.replicas[&1].get_accepted_idx(), 4);
    match cluster.replica(1).snapshot(Some(4), true) {
        Err(CompactionErr::UndecidedIndex(4)) => {}
        other => panic!("an accepted but undecided index: expected UndecidedIndex(4), got {other:?}"),
    }
    cluster.replica(1).snapshot(Some(2), true).expect("snapshot");
    match cluster.replica(1).snapshot(Some(2), true) {
        Err(CompactionErr::TrimmedIndex(2)) => {}
        other => panic!("expected TrimmedIndex(2), got {other:?}"),
    }
    assert_eq!(cluster.replicas[&1].read(0), snapshotted(2, 3));
}

#[test]
fn snapshot_without_a_snapshot_type_is_refused() {
    let mut cluster = decided_cluster::<()>(&PIDS, 1, 1..=3);
    for pid in PIDS {
        for local_only in [true, false] {
            match cluster.replica(pid).snapshot(None, local_only) {
                Err(CompactionErr::SnapshotsDisabled) => {}
                other => panic!("replica {pid}: expected SnapshotsDisabled, got {other:?}"),
            }
        }
    }
    cluster.stabilize();
    for pid in PIDS {
        assert_eq!(cluster.replicas[&pid].get_compacted_idx(), 0);
    }
}

#[test]
fn lagging_follower_catches_up_from_a_snapshot() {
    let mut cluster = decided_cluster::<Sum>(&PIDS, 1, 1..=3);
    cluster.isolate(3);
    for v in 4..=8 {
        cluster.append(1, v);
    }
    cluster.stabilize();
    assert_eq!(cluster.decided(3), vec![1, 2, 3]);
    cluster.replica(1).snapshot(None, true).expect("snapshot");
    assert_eq!(cluster.replicas[&1].read(0), snapshotted(8, 36));
    cluster.heal();
    cluster.tick(RECOVERY_TICKS);
    let follower = &cluster.replicas[&3];
    assert_eq!(follower.read(7), cluster.replicas[&1].read(7), "{}", cluster.trace_tail(20));
    assert_eq!(follower.read(7), snapshotted(8, 36));
    assert_eq!(follower.get_decided_idx(), 8);
    cluster.append(3, 9);
    cluster.stabilize();
    for pid in PIDS {
        assert_eq!(cluster.replicas[&pid].read(8), Some(LogEntry::Decided(9)), "replica {pid}");
    }
    // The replica that was never compacted still reads every entry.
    assert_eq!(cluster.decided(2), (1..=9).collect::<Vec<u64>>());
}

#[test]
fn lagging_follower_catches_up_from_a_trimmed_and_snapshotted_leader_after_leader_change() {
    let mut cluster = decided_cluster::<Sum>(&PIDS, 1, 1..=2);
    cluster.isolate(3);
    for v in 3..=6 {
        cluster.append(1, v);
    }
    cluster.stabilize();
    cluster.replica(1).snapshot(None, false).expect("snapshot");
    cluster.stabilize();
    assert_eq!(cluster.replicas[&2].read(0), snapshotted(6, 21), "follower 2 snapshots too");
    cluster.heal();
    cluster.elect(2);
    cluster.tick(RECOVERY_TICKS);
    for pid in PIDS {
        assert_eq!(cluster.replicas[&pid].read(5), snapshotted(6, 21), "replica {pid}");
    }
    cluster.append(1, 7);
    cluster.stabilize();
    for pid in PIDS {
        assert_eq!(cluster.decided(pid), vec![7], "replica {pid}");
    }
}

/// The leader trims right after it decided, before its Decide left: the followers get the Trim
/// first. They must still end up trimmed (or trim once they learn the decision).
#[test]
fn trim_right_after_a_decision_reaches_the_followers() {
    let mut cluster = decided_cluster::<()>(&PIDS, 1, 1..=2);
    cluster.append(1, 3);
    cluster.collect();
    // Deliver the two AcceptDecides and the two Accepteds, without collecting the Decide.
    for _ in 0..2 {
        cluster.deliver_one();
    }
    cluster.collect();
    for _ in 0..2 {
        cluster.deliver_one();
    }
    assert_eq!(cluster.decided_idx(1), 3, "the leader decided on the Accepteds");
    cluster.replica(1).trim(None).expect("trim");
    cluster.stabilize();
    cluster.tick(RECOVERY_TICKS);
    for pid in PIDS {
        assert_eq!(
            cluster.replicas[&pid].get_compacted_idx(),
            3,
            "replica {pid}:\n{}",
            cluster.trace_tail(12)
        );
    }
}

/// Follower 3 holds its own proposal in its log, accepted in an old round but never decided.
/// A new leader decides other entries at that index and compacts them into a snapshot. When 3
/// catches up from the snapshot it must not report its proposal as decided there.
#[test]
fn snapshot_sync_never_reports_a_replaced_proposal_as_decided() {
    let pids = [1, 2, 3, 4, 5];
    let mut cluster = Cluster::<Sum>::new(&pids);
    cluster.elect(1);
    // Only follower 3 hears from leader 1, and its Accepted is lost: nothing is decided.
    for other in [2, 4, 5] {
        cluster.disconnect(1, other);
    }
    cluster.drop_messages(|m| m.from == 3 && is_kind(m, "Accepted"));
    let lost = cluster.append(3, 100);
    cluster.stabilize();
    assert_eq!(cluster.replicas[&3].read(0), Some(LogEntry::Undecided(100)));
    assert_eq!(cluster.decided_idx(1), 0);
    // Leader 1 fails; 2, 4 and 5 decide other entries and 2 compacts them.
    cluster.clear_drop_rules();
    cluster.crash(1, CrashKeep::All);
    cluster.heal();
    cluster.isolate(3);
    cluster.elect(2);
    for v in 1..=4 {
        cluster.append(2, v);
    }
    cluster.stabilize();
    assert_eq!(cluster.decided(2), vec![1, 2, 3, 4]);
    cluster.replica(2).snapshot(None, true).expect("snapshot");
    cluster.heal();
    cluster.tick(RECOVERY_TICKS);
    assert_eq!(cluster.replicas[&3].read(0), snapshotted(4, 10), "{}", cluster.trace_tail(20));
    let outcome = cluster.outcomes.get(&lost).copied();
    let decided_at_4 = cluster.decided(3);
    assert!(
        matches!(outcome, Some(ProposalOutcome::Dropped(DropReason::Indeterminate)))
            || (outcome == Some(ProposalOutcome::Decided(4)) && decided_at_4.first() == Some(&100)),
        "proposal {lost} (100) was never decided at index 0 (1 is), but its outcome is {outcome:?}:\n{}",
        cluster.trace_tail(20)
    );
}

/// Follower 3 lags behind the leader's snapshot. It is prepared again and, while it waits for
/// the AcceptSync (which brings the snapshot), it appends a proposal that the leader appends
/// right after that AcceptSync. The proposal is decided once, and its proposer must learn
/// exactly one outcome for it.
#[test]

fn a_proposal_made_while_catching_up_from_a_snapshot_is_settled_once() {
    let mut cluster = decided_cluster::<Sum>(&PIDS, 1, 1..=2);
    cluster.isolate(3);
    for v in 3..=4 {
        cluster.append(1, v);
    }
    cluster.stabilize();
    cluster.replica(1).snapshot(None, true).expect("snapshot");
    cluster.heal();
    // Follower 3 asks to be prepared again and handles the leader's Prepare.
    cluster.replica(3).reconnected(1);
    cluster.collect();
    assert!(cluster.deliver_one(), "PrepareReq");
    cluster.collect();
    assert!(cluster.deliver_one(), "Prepare");
    // Its Promise is in flight; the proposal is forwarded right behind it.
    let id = cluster.append(3, 30);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        cluster.stabilize();
        cluster.tick(RECOVERY_TICKS);
    }));
    let outcome = cluster.outcomes.get(&id).copied();
    assert!(result.is_ok(), "outcome so far {outcome:?}:\n{}", cluster.trace_tail(20));
    assert_eq!(cluster.replicas[&3].read(4), Some(LogEntry::Decided(30)), "{}", cluster.trace_tail(20));
    // The forward left before the snapshot replaced follower 3's log, so 3 cannot tell whether
    // the snapshot holds it: the honest outcome is Indeterminate (settled once, never twice).
    assert_eq!(
        outcome,
        Some(ProposalOutcome::Dropped(DropReason::Indeterminate)),
        "{}",
        cluster.trace_tail(20)
    );
}

/// What a seeded schedule mixes in besides delivery, loss, duplication and crashes.
#[derive(Clone, Copy)]
struct Schedule {
    pids: &'static [NodeId],
    batch_size: usize,
    snapshots: bool,
}

/// One seeded random schedule with trims, snapshots, a reconfiguration, leader changes, message
/// reordering, loss, (delayed) duplicates, partitions and crashes. Checked after every step: a
/// decided entry never changes and no value is decided twice (`ever` remembers every decided
/// index, so entries a replica compacted or lost in a crash still count). Checked at the end,
/// after healing and a few resend timeouts: every replica decided the same prefix, snapshot sums
/// match the decided entries, every outcome is right, and every proposal of a proposer that did
/// not crash since has an outcome.
fn run_schedule(seed: u64, schedule: Schedule) {
    use std::collections::{BTreeMap, HashMap};

    use omnipaxos_core::{storage::ClusterConfig, storage::Storage, util::ProposalId};
    use rand::{rngs::SmallRng, Rng, SeedableRng};

    let Schedule { pids, batch_size, snapshots } = schedule;
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut cluster = Cluster::<Sum>::with_configs(pids, |mut c| {
        c.set_batch_size(batch_size);
        c
    });
    let mut ever: BTreeMap<LogIndex, u64> = BTreeMap::new();
    let mut sums: Vec<(NodeId, LogIndex, u64)> = Vec::new();
    let mut values: BTreeMap<ProposalId, u64> = BTreeMap::new();
    let mut next_value = 1;
    let mut reconfigured = false;
    let observe = |cluster: &Cluster<Sum>, ever: &mut BTreeMap<LogIndex, u64>, sums: &mut Vec<_>| {
        cluster.check_safety();
        for (&pid, replica) in &cluster.replicas {
            let from = replica.get_compacted_idx();
            if from > 0 {
                if let Some(LogEntry::Snapshotted(s)) = replica.read(from - 1) {
                    sums.push((pid, s.trimmed_idx, s.snapshot.0));
                }
            }
            for (offset, entry) in
                replica.read_decided_suffix(from).unwrap_or_default().into_iter().enumerate()
            {
                if let LogEntry::Decided(v) = entry {
                    let idx = from + offset as LogIndex;
                    let old = ever.insert(idx, v);
                    assert!(old.is_none_or(|o| o == v), "seed {seed}: decided entry {idx} changed on {pid}");
                }
            }
        }
        let mut at = HashMap::new();
        for (&idx, &v) in ever.iter() {
            if let Some(other) = at.insert(v, idx) {
                panic!("seed {seed}: value {v} decided twice, at {other} and {idx}");
            }
        }
    };
    let pick = |rng: &mut SmallRng| pids[rng.gen_range(0..pids.len())];
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        for _ in 0..500 {
            cluster.collect();
            let in_flight = cluster.in_flight();
            match rng.gen_range(0..100) {
                0..=34 if in_flight > 0 => cluster.deliver_at(rng.gen_range(0..in_flight.min(4))),
                35..=41 if in_flight > 0 => cluster.deliver_at(rng.gen_range(0..in_flight)),
                42..=46 if in_flight > 0 => cluster.lose_at(rng.gen_range(0..in_flight)),
                47..=49 if in_flight > 0 => cluster.delay_copy_at(rng.gen_range(0..in_flight)),
                50..=52 if in_flight > 0 => cluster.duplicate_at(rng.gen_range(0..in_flight)),
                53..=66 => {
                    let pid = pick(&mut rng);
                    if cluster.is_up(pid) {
                        if let Ok(id) = cluster.replica(pid).append(next_value) {
                            values.insert(id, next_value);
                            cluster.trace.push(format!("append {next_value} at {pid}"));
                        }
                        next_value += 1;
                    }
                }
                67..=76 => cluster.tick_once(),
                77..=79 => {
                    let pid = pick(&mut rng);
                    if cluster.is_up(pid) {
                        cluster.elect_without_delivery(pid);
                    }
                }
                80..=82 => {
                    let (a, b) = (pick(&mut rng), pick(&mut rng));
                    if a != b {
                        cluster.disconnect(a, b);
                    }
                }
                83..=86 => cluster.heal(),
                87..=88 => {
                    let pid = pick(&mut rng);
                    if pids.iter().all(|p| cluster.is_up(*p)) {
                        let keep =
                            [CrashKeep::Nothing, CrashKeep::All, CrashKeep::Prefix(0)][rng.gen_range(0..3)];
                        cluster.crash(pid, keep);
                    }
                }
                89..=90 => {
                    for &pid in pids {
                        if !cluster.is_up(pid) {
                            cluster.restart(pid);
                        }
                    }
                }
                91..=93 => {
                    let pid = pick(&mut rng);
                    if cluster.is_up(pid) {
                        let idx = if rng.gen_bool(0.5) { None } else { Some(rng.gen_range(0..10)) };
                        let result = cluster.replica(pid).trim(idx);
                        cluster.trace.push(format!("trim {idx:?} at {pid}: {result:?}"));
                    }
                }
                94..=96 if snapshots => {
                    let pid = pick(&mut rng);
                    if cluster.is_up(pid) {
                        let local_only = rng.gen_bool(0.5);
                        let result = cluster.replica(pid).snapshot(None, local_only);
                        cluster.trace.push(format!("snapshot local_only={local_only} at {pid}: {result:?}"));
                    }
                }
                97 if !reconfigured && next_value > 20 => {
                    let pid = pick(&mut rng);
                    if cluster.is_up(pid) {
                        let next = ClusterConfig {
                            configuration_id: 2,
                            nodes: pids.to_vec(),
                            flexible_quorum: None,
                        };
                        let result = cluster.replica(pid).reconfigure(next, None);
                        cluster.trace.push(format!("reconfigure at {pid}: {result:?}"));
                        reconfigured = result.is_ok();
                    }
                }
                98..=99 => {
                    let (at, peer) = (pick(&mut rng), pick(&mut rng));
                    if cluster.is_up(at) {
                        cluster.replica(at).reconnected(peer);
                        cluster.trace.push(format!("reconnected({peer}) at {at}"));
                    }
                }
                _ => {}
            }
            cluster.collect();
            observe(&cluster, &mut ever, &mut sums);
        }
        for &pid in pids {
            if !cluster.is_up(pid) {
                cluster.restart(pid);
            }
        }
        cluster.heal();
        // Ballot Leader Election would replace a leader that crashed; the test network does not.
        cluster.elect(pick(&mut rng));
        cluster.tick(300);
        observe(&cluster, &mut ever, &mut sums);
        for &(pid, trimmed_idx, sum) in &sums {
            if (0..trimmed_idx).all(|i| ever.contains_key(&i)) {
                let expected: u64 = (0..trimmed_idx).map(|i| ever[&i]).sum();
                assert_eq!(sum, expected, "seed {seed}: snapshot sum on {pid} up to {trimmed_idx}");
            }
        }
        let decided_idx = cluster.decided_idx(pids[0]);
        for &pid in pids {
            assert_eq!(cluster.decided_idx(pid), decided_idx, "seed {seed}: replica {pid} lags");
            let sealed = cluster.replicas[&pid].is_reconfigured();
            assert_eq!(sealed, cluster.replicas[&pids[0]].is_reconfigured(), "seed {seed}: replica {pid}");
        }
        for (id, &v) in &values {
            let decided_at = ever.iter().find(|(_, w)| **w == v).map(|(i, _)| *i);
            match cluster.outcomes.get(id) {
                Some(ProposalOutcome::Decided(idx)) => {
                    assert!(
                        decided_at.is_none_or(|at| at == *idx),
                        "seed {seed}: {id} ({v}) decided at {decided_at:?}, reported {idx}"
                    );
                }
                Some(ProposalOutcome::Dropped(DropReason::LogSealed)) => {
                    assert_eq!(decided_at, None, "seed {seed}: {id} ({v}) reported dropped but decided");
                }
                Some(ProposalOutcome::Dropped(DropReason::Indeterminate)) => {}
                None => {
                    let incarnation = cluster.replicas[&id.node].storage().get_incarnation().expect("read");
                    assert_ne!(incarnation, id.incarnation, "seed {seed}: {id} ({v}) never settled");
                }
            }
        }
    }));
    if let Err(panic) = run {
        eprintln!("seed {seed} failed; trace tail:\n{}", cluster.trace_tail(60));
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn random_schedules_with_trims_and_reconfiguration_five_replicas() {
    let schedule = Schedule { pids: &[1, 2, 3, 4, 5], batch_size: 1, snapshots: false };
    for seed in 0..60 {
        run_schedule(seed, schedule);
    }
}

/// Seeds that failed when written: 5235 (batches of 5: a value decided twice), 5276 (batches of
/// 5: two replicas decided different entries at one index), 7280 (a proposal never settled),
/// 7288 (a proposal reported dropped as LogSealed although it was decided), and several seeds of
/// the sweep below (a proposal settled twice).
#[test]

fn random_schedules_with_snapshots_batches_and_reconfiguration() {
    let three = |batch_size, snapshots| Schedule { pids: &[1, 2, 3], batch_size, snapshots };
    for (seed, schedule) in
        [(5235, three(5, false)), (5276, three(5, false)), (7280, three(3, true)), (7288, three(3, true))]
    {
        run_schedule(seed, schedule);
    }
    for seed in 0..100 {
        run_schedule(seed, three(3, true));
    }
}
