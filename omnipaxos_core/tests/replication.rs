//! Normal-case replication on the deterministic test network.

mod common;

use common::{is_kind, Cluster};
use omnipaxos_core::{
    messages::PaxosMsg,
    sequence_paxos::ProposalOutcome,
    util::{LogEntry, NodeId},
};

fn assert_all_decided(cluster: &Cluster<()>, pids: &[NodeId], expected: &[u64]) {
    for &pid in pids {
        assert_eq!(cluster.decided(pid), expected, "replica {pid}:\n{}", cluster.trace_tail(40));
    }
}

#[test]
fn three_replicas_decide_entries_appended_at_the_leader() {
    let mut cluster = Cluster::<()>::new(&[1, 2, 3]);
    cluster.elect(1);
    for v in 1..=5 {
        cluster.append(1, v);
    }
    cluster.stabilize();
    assert_all_decided(&cluster, &[1, 2, 3], &[1, 2, 3, 4, 5]);
}

#[test]
fn five_replicas_decide_entries_appended_at_every_replica() {
    let pids = [1, 2, 3, 4, 5];
    let mut cluster = Cluster::<()>::new(&pids);
    cluster.elect(3);
    for (i, &pid) in pids.iter().enumerate() {
        cluster.append(pid, 10 + i as u64);
        cluster.stabilize();
    }
    assert_all_decided(&cluster, &pids, &[10, 11, 12, 13, 14]);
}

#[test]
fn followers_forward_and_learn_where_their_proposals_were_decided() {
    let mut cluster = Cluster::<()>::new(&[1, 2, 3]);
    cluster.elect(1);
    let a = cluster.append(2, 100);
    let b = cluster.append(3, 200);
    let c = cluster.append(1, 300);
    cluster.stabilize();
    let log = cluster.decided(1);
    assert_eq!(log.len(), 3);
    for (id, value) in [(a, 100), (b, 200), (c, 300)] {
        let Some(ProposalOutcome::Decided(idx)) = cluster.outcomes.get(&id).copied() else {
            panic!("no outcome for {id}: {:?}", cluster.outcomes);
        };
        assert_eq!(log[idx as usize], value, "proposal {id} decided at {idx}");
    }
}

#[test]
fn non_contiguous_pids_elect_replicate_and_decide() {
    let pids = [5, 6, 7];
    let mut cluster = Cluster::<()>::new(&pids);
    cluster.elect(6);
    cluster.append(5, 1);
    cluster.append(6, 2);
    cluster.append(7, 3);
    cluster.stabilize();
    assert_eq!(cluster.decided(5).len(), 3);
    assert_eq!(cluster.decided(5), cluster.decided(7));
}

#[test]
fn a_single_replica_decides_only_after_its_storage_flush() {
    let mut cluster = Cluster::<()>::new(&[1]);
    cluster.elect(1);
    cluster.append(1, 42);
    let replica = cluster.replica(1);
    assert_eq!(replica.read(0), None, "not in the log before take_outgoing_messages");
    let flushes = replica.storage().flush_count();
    let mut out = Vec::new();
    replica.take_outgoing_messages(&mut out).unwrap();
    assert!(out.is_empty());
    assert_eq!(replica.storage().flush_count(), flushes + 1);
    assert_eq!(replica.read(0), Some(LogEntry::Decided(42)));
}

#[test]
fn no_message_leaves_before_the_writes_behind_it_are_flushed() {
    let mut cluster = Cluster::<()>::new(&[1, 2, 3]);
    cluster.elect(1);
    for v in 0..20 {
        cluster.append(1 + v % 3, v);
        // Release messages from every replica and check that each replica that released any
        // has nothing unflushed left.
        for pid in [1, 2, 3] {
            let replica = cluster.replica(pid);
            let mut out = Vec::new();
            replica.take_outgoing_messages(&mut out).unwrap();
            assert_eq!(replica.storage().unflushed_calls(), 0, "replica {pid} sent before flushing");
            for m in out {
                let to = m.to;
                cluster.replica(to).handle(m).unwrap();
            }
        }
    }
    cluster.stabilize();
    assert_eq!(cluster.decided(2).len(), 20);
}

#[test]
fn proposals_between_two_takes_travel_as_one_batch() {
    let mut cluster = Cluster::<()>::new(&[1, 2, 3]);
    cluster.elect(1);
    for v in 0..50 {
        cluster.append(1, v);
    }
    let writes = cluster.replica(1).storage().write_count();
    let mut out = Vec::new();
    cluster.replica(1).take_outgoing_messages(&mut out).unwrap();
    assert_eq!(cluster.replica(1).storage().write_count(), writes + 1, "one write for the whole batch");
    let sizes: Vec<usize> = out
        .iter()
        .filter_map(|m| if let PaxosMsg::AcceptDecide(acc) = &m.msg { Some(acc.entries.len()) } else { None })
        .collect();
    assert_eq!(sizes, vec![50, 50], "one AcceptDecide per follower");
    for m in out {
        let to = m.to;
        cluster.replica(to).handle(m).unwrap();
    }
    cluster.stabilize();
    assert_eq!(cluster.decided(3).len(), 50);
}

#[test]
fn batching_holds_partial_batches_until_the_flush_timer() {
    let mut cluster = Cluster::<()>::with_configs(&[1, 2, 3], |mut c| {
        c.set_batch_size(4);
        c.set_flush_batch_tick_timeout(3);
        c
    });
    cluster.elect(1);
    for v in 0..6 {
        cluster.append(1, v);
    }
    cluster.stabilize();
    assert_eq!(cluster.decided(2).len(), 6, "a batch of at least batch_size goes out at once");
    for v in 6..9 {
        cluster.append(1, v);
    }
    cluster.stabilize();
    assert_eq!(cluster.decided(2).len(), 6, "a partial batch waits");
    cluster.tick(3);
    assert_eq!(cluster.decided(2).len(), 9, "the flush timer sends the partial batch");
}

#[test]
fn flexible_quorums_decide_with_a_write_quorum_and_elect_with_a_read_quorum() {
    let pids = [1, 2, 3, 4, 5];
    let mut cluster = Cluster::<()>::with_flexible_quorum(&pids, 4, 2);
    cluster.elect(1);
    cluster.isolate(3);
    cluster.isolate(4);
    cluster.isolate(5);
    cluster.append(1, 7);
    cluster.stabilize();
    assert_eq!(cluster.decided(1), vec![7], "leader + one follower form a write quorum of 2");
    // A new leader needs 4 promises: with 3 replicas reachable it cannot finish Prepare.
    cluster.heal();
    cluster.isolate(1);
    cluster.isolate(5);
    cluster.elect(2);
    cluster.append(2, 8);
    cluster.stabilize();
    assert!(!cluster.replica(2).is_accepting_leader(), "3 promises are not a read quorum of 4");
    cluster.heal();
    cluster.isolate(1);
    cluster.tick(25);
    assert!(cluster.replica(2).is_accepting_leader());
    assert_eq!(cluster.decided(2), vec![7, 8], "the decided entry survives; the buffered one is decided");
}

#[test]
fn steady_state_needs_at_most_four_messages_per_entry_with_three_replicas() {
    let mut cluster = Cluster::<()>::new(&[1, 2, 3]);
    cluster.elect(1);
    let before = cluster.delivered;
    let entries = 100;
    for v in 0..entries {
        cluster.append(1, v);
        // One round: leader sends, followers answer.
        cluster.collect();
        while cluster.deliver_one() {}
        cluster.collect();
        while cluster.deliver_one() {}
    }
    cluster.stabilize();
    let per_entry = (cluster.delivered - before) as f64 / entries as f64;
    assert!(per_entry <= 4.1, "{per_entry} messages per entry");
    assert_eq!(cluster.decided(3).len(), entries as usize);
    let decides = cluster.trace.iter().filter(|l| l.contains(" Decide n=")).count();
    assert!(decides <= 2, "{decides} separate Decide messages: decisions should ride on AcceptDecide");
    let _ = is_kind::<()>;
}

/// Rounds as a runtime runs them: every replica hands out what it has, then everything is
/// delivered; until a round sends nothing. No replica is asked while it had no input.
fn run_rounds_until_quiet(cluster: &mut Cluster<()>) {
    loop {
        cluster.collect();
        if cluster.in_flight() == 0 {
            return;
        }
        while cluster.deliver_one() {}
    }
}

/// With one proposal per round, a decision waits for the next AcceptDecide while the leader is
/// busy: 2(n−1) messages per entry. It goes out as a Decide as soon as the leader is asked
/// for messages with no new input (idle), or at the next tick.
#[test]
fn piggybacked_decisions_cost_two_messages_per_follower_and_go_out_when_idle_or_at_a_tick() {
    let mut cluster = Cluster::<()>::new(&[1, 2, 3]);
    cluster.elect(1);
    cluster.stabilize();
    let before = cluster.delivered;
    let entries = 50;
    for v in 0..entries {
        cluster.append(1, v);
        run_rounds_until_quiet(&mut cluster);
    }
    let per_entry = (cluster.delivered - before) as f64 / entries as f64;
    assert!(per_entry <= 4.0, "{per_entry} messages per entry");
    assert_eq!(cluster.decided(1).len(), entries as usize);
    assert_eq!(cluster.decided(2).len(), entries as usize - 1, "the last decision is held");
    assert!(cluster.replica(1).holds_decisions());
    // An idle take sends it.
    cluster.stabilize();
    assert_eq!(cluster.decided(2).len(), entries as usize);
    // And a tick, when the runtime never takes while idle.
    cluster.append(1, 99);
    run_rounds_until_quiet(&mut cluster);
    assert_eq!(cluster.decided(3).len(), entries as usize);
    cluster.tick(1);
    assert_eq!(cluster.decided(3).len(), entries as usize + 1);
}

/// A follower far behind is caught up in chunks of at most `max_sync_entries`, each sent when
/// the previous one is acknowledged, and then follows new batches as before.
#[test]
fn a_follower_far_behind_catches_up_in_bounded_chunks() {
    let mut cluster = Cluster::<()>::with_configs(&[1, 2, 3], |mut c| {
        c.set_max_sync_entries(100);
        c
    });
    cluster.elect(1);
    cluster.isolate(3);
    for v in 0..1050 {
        cluster.replica(1).append(v).expect("append");
        if v % 50 == 0 {
            cluster.stabilize();
        }
    }
    cluster.stabilize();
    assert_eq!(cluster.decided(1).len(), 1050);
    assert!(cluster.decided(3).is_empty());
    cluster.heal();
    let trace_from = cluster.trace.len();
    cluster.replica(3).reconnected(1);
    cluster.tick(30);
    cluster.append(1, 5000);
    cluster.stabilize();
    assert_eq!(cluster.decided(3).len(), 1051, "caught up, then follows new entries");
    let largest = cluster.trace[trace_from..]
        .iter()
        .filter(|l| l.contains("->3 "))
        .filter_map(|l| {
            let entries = l.split("entries=").nth(1).map(|n| n.split_whitespace().next().unwrap_or("0"));
            let synced = l
                .split("sync=")
                .nth(1)
                .and_then(|s| s.split('+').nth(1))
                .map(|n| n.split_whitespace().next().unwrap_or("0"));
            entries.or(synced).and_then(|n| n.parse::<usize>().ok())
        })
        .max()
        .unwrap_or(0);
    assert!(largest <= 100, "a message to the follower carried {largest} entries");
    let chunks = cluster.trace[trace_from..]
        .iter()
        .filter(|l| l.contains("1->3 AcceptDecide") && l.contains("entries=100"))
        .count();
    assert!(chunks >= 9, "{chunks} full chunks");
}
