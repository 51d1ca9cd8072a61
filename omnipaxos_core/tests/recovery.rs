//! Crash and recovery with `fail_recovery`: acknowledged state survives, promises never go back.

mod common;

use common::{is_kind, Cluster};
use omnipaxos_core::util::LogEntry;
use omnipaxos_storage::crash_storage::CrashKeep;

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
    assert_eq!(cluster.decided(3), vec![1, 2, 3, 4, 5], "flushed and acknowledged entries survive");
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
