//! Crash and recovery with `fail_recovery`: acknowledged state survives, promises never go back.

mod common;

use common::{is_kind, Cluster};
use omnipaxos_core::util::LogEntry;
use omnipaxos_storage::crash_storage::{CrashKeep, CrashableStorage};

#[test]
fn a_follower_that_lost_all_unflushed_writes_recovers_and_catches_up() {
    let mut cluster = Cluster::<()>::new(&[1, 2, 3]);
    cluster.elect(1);
    for v in 1..=5 {
        cluster.append(1, v);
    }
    cluster.stabilize();
    cluster.crash(3, CrashKeep::Nothing);
    cluster.append(1, 6);
    cluster.stabilize();
    cluster.restart(3);
    let log: Vec<u64> = cluster.replicas[&3]
        .read_entries(..)
        .expect("entries")
        .into_iter()
        .filter_map(|e| match e {
            LogEntry::Decided(v) | LogEntry::Undecided(v) => Some(v),
            _ => None,
        })
        .collect();
    assert_eq!(log, vec![1, 2, 3, 4, 5], "flushed and acknowledged entries survive");
    cluster.tick(25);
    assert_eq!(cluster.decided(3), vec![1, 2, 3, 4, 5, 6]);
}

#[test]
fn a_restarted_replica_keeps_its_promise() {
    let mut cluster = Cluster::<()>::new(&[1, 2, 3]);
    cluster.elect(1);
    cluster.elect(2);
    let promise = cluster.replica(3).get_promise();
    cluster.crash(3, CrashKeep::Nothing);
    cluster.restart(3);
    assert_eq!(cluster.replica(3).get_promise(), promise, "the persisted promise is not overwritten");
}

#[test]
fn acknowledged_entries_survive_a_crash_right_after_the_acknowledgement() {
    let mut cluster = Cluster::<()>::new(&[1, 2, 3]);
    cluster.elect(1);
    cluster.append(1, 11);
    // Deliver until replica 2 released its Accepted, then crash it losing unflushed writes.
    cluster.collect();
    while cluster.deliver_one() {}
    cluster.collect();
    cluster.crash(2, CrashKeep::Nothing);
    cluster.restart(2);
    assert_eq!(cluster.replica(2).read(0), Some(LogEntry::Undecided(11)), "the accepted entry is durable");
}

#[test]
fn a_crashed_leader_restarts_as_follower_and_the_cluster_goes_on() {
    let mut cluster = Cluster::<()>::new(&[1, 2, 3]);
    cluster.elect(1);
    for v in 1..=3 {
        cluster.append(1, v);
    }
    cluster.stabilize();
    cluster.crash(1, CrashKeep::All);
    cluster.elect(2);
    cluster.append(2, 4);
    cluster.stabilize();
    cluster.restart(1);
    cluster.tick(25);
    assert!(!cluster.replica(1).is_accepting_leader());
    assert_eq!(cluster.decided(1), vec![1, 2, 3, 4], "{}", cluster.trace_tail(30));
    cluster.append(1, 5);
    cluster.tick(25);
    assert_eq!(cluster.decided(3), vec![1, 2, 3, 4, 5]);
}

#[test]
fn a_leader_restarted_before_anyone_noticed_is_resynchronised() {
    let mut cluster = Cluster::<()>::new(&[1, 2, 3]);
    cluster.elect(1);
    cluster.append(1, 1);
    cluster.stabilize();
    cluster.crash(2, CrashKeep::Prefix(0));
    cluster.restart(2);
    // Replica 2 asks for a Prepare; the leader answers and synchronises it.
    cluster.stabilize();
    cluster.append(1, 2);
    cluster.stabilize();
    assert_eq!(cluster.decided(2), vec![1, 2], "{}", cluster.trace_tail(30));
    assert!(cluster.trace.iter().any(|l| l.contains("PrepareReq")));
}

#[test]
fn crashes_of_every_replica_in_turn_lose_no_decided_entry() {
    let pids = [1, 2, 3];
    let mut cluster = Cluster::<()>::new(&pids);
    let mut expected = Vec::new();
    for round in 0..6u64 {
        let victim = pids[(round % 3) as usize];
        let leader = pids[((round + 1) % 3) as usize];
        cluster.elect(leader);
        for v in 0..3 {
            let value = round * 10 + v;
            cluster.append(leader, value);
            expected.push(value);
        }
        cluster.stabilize();
        let keep = if round % 2 == 0 { CrashKeep::Nothing } else { CrashKeep::All };
        cluster.crash(victim, keep);
        cluster.restart(victim);
        cluster.tick(25);
    }
    cluster.elect(1);
    cluster.tick(25);
    for pid in pids {
        assert_eq!(cluster.decided(pid), expected, "replica {pid}:\n{}", cluster.trace_tail(30));
    }
    let _ = is_kind::<()>;
}

/// A replica whose storage was wiped, restarted as a voter with empty storage, can break
/// agreement: it promises a new leader without the entry it accepted before, and that leader
/// decides something else at the same index. Started as a learner instead, it refuses to vote,
/// and nothing is decided until a replica that holds the entry is back.
fn wiped_replica_rejoins(as_learner: bool) -> (Vec<u64>, Vec<u64>) {
    let mut cluster = Cluster::<()>::with_configs(&[1, 2, 3], move |mut c| {
        c.set_learner(as_learner && c.pid() == 3);
        c
    });
    // Built as a learner would only start later: rebuild 3 as a voter first.
    if as_learner {
        cluster.replace_storage(3, CrashableStorage::default(), false);
    }
    cluster.elect(1);
    cluster.isolate(2);
    cluster.append(1, 10);
    cluster.stabilize();
    assert_eq!(cluster.decided(1), vec![10], "decided by 1 and 3");
    // 3 loses its disk and comes back; 1 is gone; 2 is back.
    cluster.heal();
    cluster.isolate(1);
    cluster.replace_storage(3, CrashableStorage::default(), as_learner);
    cluster.elect(2);
    cluster.append(2, 20);
    cluster.stabilize();
    cluster.tick(30);
    (cluster.decided(1), cluster.decided(2))
}

#[test]
fn a_wiped_replica_that_rejoins_as_a_voter_breaks_agreement() {
    let outcome = std::panic::catch_unwind(|| wiped_replica_rejoins(false));
    let message = outcome.err().and_then(|e| e.downcast::<String>().ok()).expect("the safety check fires");
    assert!(message.contains("decided different entries at 0"), "{message}");
}

#[test]
fn a_wiped_replica_that_rejoins_as_a_learner_votes_for_nobody() {
    let (at_1, at_2) = wiped_replica_rejoins(true);
    assert_eq!(at_1, vec![10]);
    assert!(at_2.is_empty(), "2 cannot form a quorum without 3's vote: {at_2:?}");
}

#[test]
fn a_learner_learns_the_decided_log_reads_but_never_proposes_and_stays_a_learner() {
    let mut cluster = Cluster::<()>::new(&[1, 2, 3]);
    cluster.elect(1);
    for v in 1..=10 {
        cluster.append(1, v);
    }
    cluster.stabilize();
    assert!(!cluster.replica(3).get_promise().is_learner_promise());
    cluster.replace_storage(3, CrashableStorage::default(), true);
    assert!(cluster.replicas[&3].is_learner());
    assert!(cluster.replica(3).get_promise().is_learner_promise(), "runtimes recognise a learner's storage");
    cluster.tick(25);
    assert_eq!(cluster.decided(3), (1..=10).collect::<Vec<_>>(), "caught up from the leader");
    cluster.append(2, 11);
    cluster.stabilize();
    cluster.tick(25);
    assert_eq!(cluster.decided(3).len(), 11);
    assert!(matches!(cluster.replica(3).append(99), Err(omnipaxos_core::errors::ProposeErr::Learner(99))));
    let read = cluster.replica(3).read_index().expect("read");
    cluster.tick(25);
    let mut outcomes = Vec::new();
    cluster.replica(3).take_read_outcomes(&mut outcomes);
    assert_eq!(outcomes, vec![(read, omnipaxos_core::sequence_paxos::ReadOutcome::Ready(11))]);
    // A restart without the learner setting keeps it a learner: the promise is durable.
    cluster.crash(3, CrashKeep::All);
    cluster.restart(3);
    assert!(cluster.replicas[&3].is_learner());
    // 1 and 2 still decide without it.
    cluster.append(1, 12);
    cluster.stabilize();
    assert_eq!(cluster.decided(1).len(), 12);
}

/// A learner started over a log that holds entries it had only accepted (which may differ from
/// the decided ones) replaces them with the decided entries it learns.
#[test]
fn a_learner_over_a_log_with_undecided_entries_learns_the_decided_ones() {
    use omnipaxos_core::{
        storage::{Storage, StorageOp},
        util::{Proposal, ProposalId},
    };
    let mut cluster = Cluster::<()>::new(&[1, 2, 3]);
    cluster.elect(1);
    for v in 1..=5 {
        cluster.append(1, v);
    }
    cluster.stabilize();
    let mut storage = CrashableStorage::<u64, ()>::default();
    let stale = |seq, entry| Proposal { id: ProposalId { node: 3, seq, incarnation: 1 }, entry };
    let mut ops = vec![
        StorageOp::AppendEntries(vec![stale(1, 1), stale(2, 777), stale(3, 778)]),
        StorageOp::SetDecidedIdx(1),
    ];
    storage.write_atomically(&mut ops).expect("write");
    storage.flush().expect("flush");
    cluster.replace_storage(3, storage, true);
    cluster.tick(25);
    assert_eq!(cluster.decided(3), vec![1, 2, 3, 4, 5], "the accepted-only entries were replaced");
}

/// A LearnerSync that teaches a learner nothing (here a duplicate of a batch it already applied)
/// does not make it ask again at once: only a batch that helped is followed by the next request,
/// so a learner that cannot be helped does not trade requests and replies as fast as the network
/// delivers them.
#[test]
fn a_learner_asks_again_at_once_only_after_a_batch_that_helped() {
    use std::{cell::Cell, rc::Rc};
    let mut cluster = Cluster::<()>::new(&[1, 2, 3]);
    cluster.elect(1);
    for v in 1..=5000 {
        cluster.replica(1).append(v).expect("append");
    }
    cluster.stabilize();
    let requests = Rc::new(Cell::new(0));
    let duplicated = Rc::new(Cell::new(false));
    let (seen, once) = (requests.clone(), duplicated.clone());
    cluster.duplicate_messages(move |m| {
        if let omnipaxos_core::messages::PaxosMsg::LearnerRequest(r) = &m.msg {
            if r.from_idx == 4096 {
                seen.set(seen.get() + 1);
            }
        }
        let first_sync = m.to == 3 && common::is_kind(m, "LearnerSync") && !once.get();
        once.set(once.get() || first_sync);
        first_sync
    });
    cluster.replace_storage(3, CrashableStorage::default(), true);
    // Tick until the learner has learned; the tick whose messages teach it runs them to the end.
    for _ in 0..100 {
        cluster.tick_once();
        cluster.stabilize();
        if cluster.decided_idx(3) == 5000 {
            break;
        }
    }
    assert!(duplicated.get(), "the first batch was delivered twice");
    assert_eq!(cluster.decided(3).len(), 5000, "learned everything in two batches");
    assert_eq!(requests.get(), 1, "one request for the second batch:\n{}", cluster.trace_tail(20));
}
