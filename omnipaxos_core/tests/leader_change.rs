//! Leader failure, follower catch-up, and what happens to proposals across leader changes.

mod common;

use std::collections::BTreeSet;

use common::{is_kind, Cluster};
use omnipaxos_core::sequence_paxos::ProposalOutcome;

/// Every value appears at most once in the decided log.
fn assert_no_duplicates(log: &[u64]) {
    let unique: BTreeSet<_> = log.iter().collect();
    assert_eq!(unique.len(), log.len(), "duplicates in {log:?}");
}

#[test]
fn a_new_leader_keeps_every_decided_entry_and_goes_on_deciding() {
    let mut cluster = Cluster::<()>::new(&[1, 2, 3]);
    cluster.elect(1);
    for v in 1..=3 {
        cluster.append(1, v);
    }
    cluster.stabilize();
    cluster.isolate(1);
    cluster.elect(2);
    cluster.append(3, 4);
    cluster.stabilize();
    assert_eq!(cluster.decided(2), vec![1, 2, 3, 4]);
    assert_eq!(cluster.decided(3), vec![1, 2, 3, 4]);
}

#[test]
fn a_new_leader_adopts_entries_accepted_by_a_follower_but_not_decided() {
    let mut cluster = Cluster::<()>::new(&[1, 2, 3]);
    cluster.elect(1);
    // Followers accept entry 9, but no Accepted reaches the leader: it is not decided.
    cluster.drop_messages(|m| is_kind(m, "Accepted"));
    cluster.append(1, 9);
    cluster.stabilize();
    assert_eq!(cluster.decided_idx(1), 0);
    cluster.clear_drop_rules();
    cluster.isolate(1);
    cluster.elect(2);
    assert_eq!(cluster.decided(2), vec![9], "the accepted entry is chosen by the new leader");
}

#[test]
fn a_follower_that_missed_entries_catches_up_after_reconnecting() {
    let mut cluster = Cluster::<()>::new(&[1, 2, 3]);
    cluster.elect(1);
    cluster.isolate(3);
    for v in 1..=10 {
        cluster.append(2, v);
        cluster.stabilize();
        cluster.tick(1);
    }
    assert_eq!(cluster.decided(1).len(), 10);
    assert!(cluster.decided(3).is_empty());
    cluster.heal();
    cluster.tick(45);
    assert_eq!(cluster.decided(3), cluster.decided(1), "{}", cluster.trace_tail(30));
}

#[test]
fn proposals_at_a_partitioned_leader_are_forwarded_to_the_new_leader_not_lost() {
    let mut cluster = Cluster::<()>::new(&[1, 2, 3]);
    cluster.elect(1);
    cluster.append(1, 1);
    cluster.stabilize();
    cluster.isolate(1);
    let stranded = cluster.append(1, 2);
    cluster.stabilize();
    cluster.elect(2);
    cluster.append(2, 3);
    cluster.stabilize();
    cluster.heal();
    cluster.elect(2); // the old leader learns of the higher ballot
    cluster.tick(45);
    let log = cluster.decided(1);
    assert_no_duplicates(&log);
    assert!(log.contains(&2), "the stranded proposal was decided: {log:?}\n{}", cluster.trace_tail(40));
    let Some(ProposalOutcome::Decided(idx)) = cluster.outcomes.get(&stranded).copied() else {
        panic!("no outcome for the stranded proposal: {:?}", cluster.outcomes)
    };
    assert_eq!(log[idx as usize], 2);
}

#[test]
fn a_lost_forward_is_retried_and_decided_exactly_once() {
    let mut cluster = Cluster::<()>::new(&[1, 2, 3]);
    cluster.elect(1);
    let mut dropped = false;
    cluster.drop_messages(move |m| {
        let drop = !dropped && is_kind(m, "ProposalForward");
        dropped |= drop;
        drop
    });
    let id = cluster.append(3, 77);
    cluster.stabilize();
    assert!(cluster.decided(1).is_empty(), "the forward was lost");
    cluster.tick(45);
    assert_eq!(cluster.decided(1), vec![77]);
    assert_eq!(cluster.outcomes.get(&id), Some(&ProposalOutcome::Decided(0)));
}

#[test]
fn retried_forwards_in_flight_are_not_decided_twice() {
    let mut cluster = Cluster::<()>::new(&[1, 2, 3]);
    cluster.elect(1);
    let mut copies = 0;
    cluster.duplicate_messages(move |m| {
        let copy = copies < 5 && is_kind(m, "ProposalForward");
        copies += usize::from(copy);
        copy
    });
    for v in 0..5 {
        cluster.append(2, v);
    }
    cluster.tick(45);
    assert_eq!(cluster.decided(1), vec![0, 1, 2, 3, 4]);
}

#[test]
fn repeated_leader_changes_under_load_keep_logs_consistent() {
    let pids = [1, 2, 3, 4, 5];
    let mut cluster = Cluster::<()>::new(&pids);
    let mut value = 0;
    for round in 0..10u64 {
        let leader = pids[(round % 5) as usize];
        cluster.heal();
        cluster.isolate(pids[((round + 2) % 5) as usize]);
        cluster.elect(leader);
        for &pid in &pids {
            if cluster.replicas.contains_key(&pid) {
                value += 1;
                cluster.append(pid, value);
            }
        }
        cluster.stabilize();
    }
    cluster.heal();
    cluster.elect(1);
    cluster.tick(90);
    let log = cluster.decided(1);
    assert_no_duplicates(&log);
    assert_eq!(log.len() as u64, value, "every proposal decided exactly once: {log:?}");
    for pid in pids {
        assert_eq!(cluster.decided(pid), log);
    }
}

#[test]
fn a_delayed_forward_reaching_a_later_round_of_the_same_leader_is_not_appended_again() {
    use std::{cell::RefCell, rc::Rc};
    let mut cluster = Cluster::<()>::new(&[1, 2, 3]);
    cluster.elect(1);
    let captured = Rc::new(RefCell::new(Vec::new()));
    let sink = captured.clone();
    cluster.drop_messages(move |m| {
        if is_kind(m, "ProposalForward") {
            sink.borrow_mut().push(m.clone());
        }
        false
    });
    cluster.append(2, 5);
    cluster.stabilize();
    assert_eq!(cluster.decided(1), vec![5]);
    cluster.elect(1); // the same leader, a new round
    let stale = captured.borrow()[0].clone();
    cluster.replica(1).handle(stale).expect("handle");
    cluster.tick(45);
    assert_eq!(cluster.decided(1), vec![5], "the delayed copy was appended again");
}

#[test]
fn a_stale_leader_refused_by_a_follower_of_an_unheard_leader_does_not_outbid_it() {
    let mut cluster = Cluster::<()>::new(&[1, 2, 3]);
    cluster.elect(1);
    cluster.disconnect(1, 3);
    // Node 3 takes over; node 1 never hears of its ballot.
    cluster.elect_without_delivery(3);
    cluster.stabilize();
    let new = cluster.replicas[&3].get_promise();
    assert!(cluster.replica(3).is_accepting_leader());
    // The stale leader's next message is refused by node 2 with NotAccepted(new ballot).
    cluster.append(1, 5);
    cluster.stabilize();
    cluster.tick(45);
    assert!(cluster.trace.iter().any(|l| l.contains("2->1 NotAccepted")), "{}", cluster.trace_tail(20));
    assert!(cluster.replicas[&1].get_promise() < new, "the stale leader must not start a ballot war");
    assert!(cluster.replica(3).is_accepting_leader(), "node 3 keeps leading");
}

#[test]
fn a_recovering_replica_holding_its_own_unannounced_ballot_is_outbid_and_resynchronised() {
    let mut cluster = Cluster::<()>::new(&[1, 2, 3]);
    cluster.elect(1);
    cluster.append(1, 1);
    cluster.stabilize();
    // Node 3 takes over with a higher ballot, but crashes before its Prepare leaves.
    cluster.elect_without_delivery(3);
    let phantom = cluster.replicas[&3].get_promise();
    cluster.crash(3, omnipaxos_storage::crash_storage::CrashKeep::All);
    cluster.restart(3);
    cluster.append(1, 2);
    cluster.tick(45);
    assert!(cluster.replicas[&1].get_promise() > phantom, "the leader outbid the phantom promise");
    assert_eq!(cluster.decided(3), vec![1, 2], "node 3 is synchronised again\n{}", cluster.trace_tail(20));
}
