//! Linearizable reads without log writes: read index at the leader and at followers, batching,
//! lost messages, timeouts, a deposed leader, a new leader with an undecided adopted log, and
//! leases.

mod common;

use common::{is_kind, Cluster};
use omnipaxos_core::{
    sequence_paxos::{ReadConsistency, ReadFailure, ReadId, ReadLease, ReadOutcome},
    util::{LogIndex, NodeId},
};

fn take_reads(cluster: &mut Cluster<()>, pid: NodeId) -> Vec<(ReadId, ReadOutcome)> {
    let mut outcomes = Vec::new();
    cluster.replica(pid).take_read_outcomes(&mut outcomes);
    outcomes
}

fn ready(cluster: &mut Cluster<()>, pid: NodeId, id: ReadId) -> Option<LogIndex> {
    take_reads(cluster, pid).into_iter().find(|(r, _)| *r == id).map(|(_, outcome)| match outcome {
        ReadOutcome::Ready(idx) => idx,
        ReadOutcome::Failed(why) => panic!("read {id} failed: {why:?}"),
    })
}

fn count_kind(cluster: &Cluster<()>, kind: &str) -> usize {
    cluster.trace.iter().filter(|l| l.split_whitespace().nth(1) == Some(kind)).count()
}

fn lease() -> ReadLease {
    ReadLease { lease_ticks: 30, max_clock_drift_percent: 10 }
}

/// Three replicas with leases; node 1 leads, has decided one entry, and a first read's round
/// granted it the lease.
fn leader_1_holding_a_lease() -> Cluster<()> {
    let mut cluster = Cluster::<()>::with_configs(&[1, 2, 3], |mut c| {
        c.set_read_lease(Some(lease()));
        c
    });
    cluster.tick(34);
    cluster.elect(1);
    cluster.append(1, 1);
    cluster.stabilize();
    let first = cluster.replica(1).read_index().expect("read");
    cluster.stabilize();
    assert_eq!(ready(&mut cluster, 1, first), Some(1), "the first round grants the lease");
    cluster
}

#[test]
fn a_read_at_the_leader_sees_every_completed_write() {
    let mut cluster = Cluster::<()>::new(&[1, 2, 3]);
    cluster.elect(1);
    for v in 1..=5 {
        cluster.append(2, v);
    }
    cluster.stabilize();
    assert_eq!(cluster.decided_idx(1), 5);
    let id = cluster.replica(1).read_index().expect("read");
    cluster.stabilize();
    assert_eq!(ready(&mut cluster, 1, id), Some(5));
}

#[test]
fn a_read_at_a_follower_waits_until_its_log_reaches_the_read_index() {
    let mut cluster = Cluster::<()>::new(&[1, 2, 3]);
    cluster.elect(1);
    // Follower 3 does not learn decisions: its read must wait for them.
    cluster.drop_messages(|m| m.to == 3 && (is_kind(m, "Decide") || is_kind(m, "AcceptDecide")));
    for v in 1..=4 {
        cluster.append(1, v);
    }
    cluster.stabilize();
    assert_eq!(cluster.decided_idx(1), 4);
    assert_eq!(cluster.decided_idx(3), 0);
    let id = cluster.replica(3).read_index().expect("read");
    cluster.stabilize();
    assert!(take_reads(&mut cluster, 3).is_empty(), "not ready before the follower decided index 4");
    cluster.clear_drop_rules();
    cluster.tick(25);
    assert_eq!(cluster.decided_idx(3), 4);
    assert_eq!(ready(&mut cluster, 3, id), Some(4));
}

#[test]
fn reads_of_one_batch_share_one_round_of_2_n_minus_1_messages_and_write_nothing() {
    let mut cluster = Cluster::<()>::new(&[1, 2, 3, 4, 5]);
    cluster.elect(1);
    cluster.append(1, 7);
    cluster.stabilize();
    let writes_before: u64 = (1..=5).map(|p| cluster.replicas[&p].storage().write_count()).sum();
    let trace_before = cluster.trace.len();
    let ids: Vec<ReadId> = (0..1000).map(|_| cluster.replica(1).read_index().expect("read")).collect();
    cluster.stabilize();
    let outcomes = take_reads(&mut cluster, 1);
    assert_eq!(outcomes.len(), 1000);
    assert!(outcomes.iter().all(|(id, o)| ids.contains(id) && *o == ReadOutcome::Ready(1)));
    let messages = cluster.trace.len() - trace_before;
    assert_eq!(messages, 2 * 4, "one ReadConfirm and one ReadConfirmed per follower");
    let writes_after: u64 = (1..=5).map(|p| cluster.replicas[&p].storage().write_count()).sum();
    assert_eq!(writes_after, writes_before, "reads write nothing");
}

#[test]
fn a_deposed_leader_never_answers_a_read() {
    let mut cluster = Cluster::<()>::new(&[1, 2, 3]);
    cluster.elect(1);
    cluster.append(1, 1);
    cluster.stabilize();
    // Leader 1 is cut off and still believes it leads; 2 and 3 move on and decide a write.
    cluster.isolate(1);
    cluster.elect(2);
    cluster.append(2, 2);
    cluster.stabilize();
    assert_eq!(cluster.decided(2), vec![1, 2]);
    let id = cluster.replica(1).read_index().expect("read");
    cluster.tick(50);
    let outcomes = take_reads(&mut cluster, 1);
    assert_eq!(
        outcomes,
        vec![(id, ReadOutcome::Failed(ReadFailure::TimedOut))],
        "a stale read would say index 1"
    );
}

#[test]
fn a_new_leader_answers_reads_only_once_the_log_it_adopted_is_decided() {
    let mut cluster = Cluster::<()>::new(&[1, 2, 3]);
    cluster.elect(1);
    // Entry 9 is accepted by the followers but its decision never reaches them.
    cluster.drop_messages(|m| is_kind(m, "Accepted"));
    cluster.append(1, 9);
    cluster.stabilize();
    cluster.clear_drop_rules();
    cluster.isolate(1);
    // 2 becomes leader; its Accepted from 3 is held back, so it cannot decide the adopted entry.
    cluster.drop_messages(|m| is_kind(m, "Accepted"));
    cluster.elect(2);
    assert_eq!(cluster.decided_idx(2), 0);
    let id = cluster.replica(2).read_index().expect("read");
    cluster.stabilize();
    assert!(take_reads(&mut cluster, 2).is_empty(), "answering now would return index 0 and miss entry 9");
    cluster.clear_drop_rules();
    cluster.tick(25);
    assert_eq!(cluster.decided_idx(2), 1);
    assert_eq!(ready(&mut cluster, 2, id), Some(1));
}

#[test]
fn lost_read_messages_are_resent() {
    // Enough copies are lost that the first attempt cannot succeed: both followers' round
    // messages, or the one follower's request or reply.
    for (kind, losses) in [("ReadConfirm", 2), ("ReadConfirmed", 2), ("ReadRequest", 1), ("ReadReply", 1)] {
        let mut cluster = Cluster::<()>::new(&[1, 2, 3]);
        cluster.elect(1);
        cluster.append(1, 1);
        cluster.stabilize();
        let mut dropped = 0;
        cluster.drop_messages(move |m| {
            let drop = is_kind(m, kind) && dropped < losses;
            dropped += usize::from(drop);
            drop
        });
        let at_leader = cluster.replica(1).read_index().expect("read");
        let at_follower = cluster.replica(3).read_index().expect("read");
        cluster.tick(30);
        let leader = take_reads(&mut cluster, 1);
        let follower = take_reads(&mut cluster, 3);
        assert_eq!(leader, vec![(at_leader, ReadOutcome::Ready(1))], "{kind} lost: leader");
        assert_eq!(follower, vec![(at_follower, ReadOutcome::Ready(1))], "{kind} lost: follower");
    }
}

#[test]
fn a_read_without_a_reachable_leader_times_out() {
    let mut cluster = Cluster::<()>::new(&[1, 2, 3]);
    cluster.elect(1);
    cluster.isolate(3);
    let id = cluster.replica(3).read_index().expect("read");
    cluster.tick(39);
    assert!(take_reads(&mut cluster, 3).is_empty());
    cluster.tick(1);
    assert_eq!(take_reads(&mut cluster, 3), vec![(id, ReadOutcome::Failed(ReadFailure::TimedOut))]);
}

#[test]
fn reads_held_by_a_leader_that_steps_down_fail_with_leader_changed() {
    let mut cluster = Cluster::<()>::new(&[1, 2, 3]);
    cluster.elect(1);
    cluster.drop_messages(|m| is_kind(m, "ReadConfirmed"));
    let id = cluster.replica(1).read_index().expect("read");
    cluster.stabilize();
    cluster.clear_drop_rules();
    cluster.elect(2);
    assert_eq!(take_reads(&mut cluster, 1), vec![(id, ReadOutcome::Failed(ReadFailure::LeaderChanged))]);
}

#[test]
fn a_single_node_cluster_reads_at_once() {
    let mut cluster = Cluster::<()>::new(&[4]);
    cluster.elect(4);
    cluster.append(4, 1);
    cluster.stabilize();
    let id = cluster.replica(4).read_index().expect("read");
    cluster.stabilize();
    assert_eq!(ready(&mut cluster, 4, id), Some(1));
}

#[test]
fn a_leader_with_a_lease_answers_reads_without_messages() {
    let mut cluster = Cluster::<()>::with_configs(&[1, 2, 3], |mut c| {
        c.set_read_lease(Some(lease()));
        c
    });
    // A restarted (or new) replica may have confirmed a lease just before: the first leader
    // waits that out before deciding.
    cluster.tick(34);
    cluster.elect(1);
    cluster.append(1, 1);
    cluster.stabilize();
    assert_eq!(cluster.decided_idx(1), 1);
    // The first read confirms a round, which grants the lease.
    let first = cluster.replica(1).read_index().expect("read");
    cluster.stabilize();
    assert_eq!(ready(&mut cluster, 1, first), Some(1));
    let before = count_kind(&cluster, "ReadConfirm");
    let id = cluster.replica(1).read_index().expect("read");
    assert_eq!(ready(&mut cluster, 1, id), Some(1), "answered inside read_index, from the lease");
    cluster.stabilize();
    assert_eq!(count_kind(&cluster, "ReadConfirm"), before, "no round for a read under the lease");
}

/// `expire_read_lease` (a runtime calls it when its ticks fell behind real time: the process
/// was paused) ends the lease: the next read takes a round, which grants a new lease.
#[test]
fn an_expired_lease_answers_no_read_until_a_round_renews_it() {
    let mut cluster = leader_1_holding_a_lease();
    cluster.replica(1).expire_read_lease();
    the_next_read_takes_a_round_that_renews_the_lease(&mut cluster);
}

/// Leader 1 holds no lease: a read waits for one round (a ReadConfirm to each peer), and that
/// round grants a lease, so the read after it is answered at once.
fn the_next_read_takes_a_round_that_renews_the_lease(cluster: &mut Cluster<()>) {
    let rounds = count_kind(cluster, "ReadConfirm");
    let read = cluster.replica(1).read_index().expect("read");
    assert_eq!(ready(cluster, 1, read), None, "not answered without a lease");
    cluster.stabilize();
    assert_eq!(ready(cluster, 1, read), Some(1));
    assert_eq!(count_kind(cluster, "ReadConfirm"), rounds + 2, "one round");
    let leased = cluster.replica(1).read_index().expect("read");
    assert_eq!(ready(cluster, 1, leased), Some(1), "the round renewed the lease");
}

/// A process paused right after sending a round's confirmations finds the replies waiting when
/// it resumes. `expire_read_lease` (called on resume) must also keep that round from granting a
/// lease: the round started on the clock that stopped, so a lease counted from its start would
/// run on while the others waited the old lease out and elected a new leader. The round's
/// reads are still answered (its quorum confirmed after they were issued). Found by the
/// simulator's pauses; mutation `lease-from-paused-round`.
#[test]
fn a_round_in_flight_when_the_lease_is_expired_grants_no_lease() {
    let mut cluster = leader_1_holding_a_lease();
    let rounds = count_kind(&cluster, "ReadConfirm");
    let read = cluster.replica(1).read_index_with(ReadConsistency::Confirmed).expect("read");
    cluster.collect(); // the round's ReadConfirms are sent ...
    assert_eq!(cluster.in_flight(), 2);
    cluster.replica(1).expire_read_lease(); // ... the process pauses and resumes
    cluster.stabilize(); // the confirmations arrive
    assert_eq!(count_kind(&cluster, "ReadConfirm"), rounds + 2, "that round only");
    assert_eq!(ready(&mut cluster, 1, read), Some(1), "the round's read is answered");
    // No lease from the round that spanned the pause; one started after it grants one.
    the_next_read_takes_a_round_that_renews_the_lease(&mut cluster);
}

/// `ReadConsistency::Confirmed` insists on a round even under a lease, at the leader and at a
/// follower, and so does a follower's request that carries a lease read together with a
/// confirmed one (a reply answers every read asked up to it).
#[test]
fn a_confirmed_read_takes_a_round_even_under_a_lease() {
    let mut cluster = leader_1_holding_a_lease();

    // At the leader.
    let rounds = count_kind(&cluster, "ReadConfirm");
    let confirmed = cluster.replica(1).read_index_with(ReadConsistency::Confirmed).expect("read");
    assert_eq!(ready(&mut cluster, 1, confirmed), None, "not answered from the lease");
    cluster.stabilize();
    assert_eq!(ready(&mut cluster, 1, confirmed), Some(1));
    assert_eq!(count_kind(&cluster, "ReadConfirm"), rounds + 2, "one round: a ReadConfirm to each peer");

    // At a follower: a lease read is answered without a round...
    let rounds = count_kind(&cluster, "ReadConfirm");
    let leased = cluster.replica(2).read_index_with(ReadConsistency::LeaseIfHeld).expect("read");
    cluster.stabilize();
    assert_eq!(ready(&mut cluster, 2, leased), Some(1));
    assert_eq!(count_kind(&cluster, "ReadConfirm"), rounds, "answered from the leader's lease");
    // ...a confirmed one, alone or asked with a lease read, is not.
    for with_a_lease_read in [false, true] {
        let rounds = count_kind(&cluster, "ReadConfirm");
        let leased = with_a_lease_read.then(|| cluster.replica(2).read_index().expect("read"));
        let confirmed = cluster.replica(2).read_index_with(ReadConsistency::Confirmed).expect("read");
        cluster.stabilize();
        let outcomes = take_reads(&mut cluster, 2);
        let expected: Vec<_> =
            leased.into_iter().chain([confirmed]).map(|id| (id, ReadOutcome::Ready(1))).collect();
        assert_eq!(outcomes, expected);
        assert_eq!(
            count_kind(&cluster, "ReadConfirm"),
            rounds + 2,
            "a round (lease read too: {with_a_lease_read})"
        );
    }
}

#[test]
fn a_new_leader_decides_nothing_while_the_old_lease_may_run() {
    let mut cluster = Cluster::<()>::with_configs(&[1, 2, 3], |mut c| {
        c.set_read_lease(Some(lease()));
        c
    });
    cluster.tick(34);
    cluster.elect(1);
    let read = cluster.replica(1).read_index().expect("read");
    cluster.stabilize();
    assert!(ready(&mut cluster, 1, read).is_some());
    // Leader 1 holds a lease; it is cut off and 2 takes over at once.
    cluster.isolate(1);
    cluster.elect(2);
    cluster.append(2, 5);
    cluster.stabilize();
    assert_eq!(cluster.decided_idx(2), 0, "the old leader may still answer reads from its lease");
    // The lease (30 ticks, 10 % drift) has surely run out after 34 ticks.
    cluster.tick(34);
    assert_eq!(cluster.decided(2), vec![5]);
}

/// A read whose index reaches a decided StopSign fails with `Reconfigured`, at the leader and at
/// a follower, including one that asked before it knew the StopSign was decided: writes of the
/// next configuration may have completed before such a read, and this log cannot show them.
/// A read confirmed below the StopSign is still served.
#[test]
fn a_read_past_a_decided_stopsign_fails_as_reconfigured() {
    use omnipaxos_core::storage::ClusterConfig;
    let mut cluster = Cluster::<()>::new(&[1, 2, 3]);
    cluster.elect(1);
    for v in 1..=3 {
        cluster.append(1, v);
    }
    cluster.stabilize();
    let below = cluster.replica(2).read_index().expect("read");
    cluster.stabilize();
    assert_eq!(ready(&mut cluster, 2, below), Some(3), "below the StopSign: served");
    // Follower 3 does not learn that the StopSign is decided until its read is confirmed.
    cluster.drop_messages(|m| m.to == 3 && (is_kind(m, "Decide") || is_kind(m, "AcceptDecide")));
    let next = ClusterConfig { configuration_id: 2, nodes: vec![1, 2, 3], flexible_quorum: None };
    cluster.replica(1).reconfigure(next, None).expect("reconfigure");
    cluster.stabilize();
    assert!(cluster.replica(1).is_reconfigured().is_some());
    assert!(cluster.replica(3).is_reconfigured().is_none(), "3 has not seen the decision");
    let at_follower = cluster.replica(3).read_index().expect("read");
    let at_leader = cluster.replica(1).read_index().expect("read");
    cluster.stabilize();
    cluster.clear_drop_rules();
    cluster.tick(25);
    assert!(cluster.replica(3).is_reconfigured().is_some());
    for (pid, id) in [(1, at_leader), (3, at_follower)] {
        assert_eq!(
            take_reads(&mut cluster, pid),
            vec![(id, ReadOutcome::Failed(ReadFailure::Reconfigured))],
            "replica {pid}"
        );
    }
}

/// A replica whose storage was wiped restarts as a learner and counts incarnations from 1
/// again. A ReadReply to its previous life (delayed or replayed) must not answer a read of the
/// new process: with the process nonce its requests are numbered apart, and replies to numbers
/// it never sent are ignored. Found by the simulator's follower-read soak (seed 8777 N=3: a
/// learner served a value overwritten before the read began).
#[test]
fn a_read_reply_to_a_wiped_replica_s_earlier_life_answers_no_new_read() {
    // A nonce below the earlier life's tag (its incarnation, 1) and one above it.
    for nonce in [0, 7] {
        wiped_replica_gets_an_old_read_reply(nonce);
    }
}

fn wiped_replica_gets_an_old_read_reply(nonce: u32) {
    use omnipaxos_storage::crash_storage::CrashableStorage;
    let mut cluster = Cluster::<()>::new(&[1, 2, 3]);
    cluster.elect(1);
    cluster.append(1, 1);
    cluster.stabilize();
    // Node 3 reads at index 1; a copy of the leader's ReadReply is kept.
    let first = cluster.replica(3).read_index().expect("read");
    cluster.collect();
    let mut kept = Vec::new();
    for _ in 0..20 {
        kept = cluster.copy_in_flight(|m| m.to == 3 && is_kind(m, "ReadReply"));
        if !kept.is_empty() || !cluster.deliver_one() {
            break;
        }
        cluster.collect();
    }
    assert_eq!(kept.len(), 1, "the leader answered node 3's read");
    cluster.stabilize();
    assert_eq!(ready(&mut cluster, 3, first), Some(1));
    // Two more writes complete; then node 3's disk is wiped and it restarts as a learner.
    cluster.append(1, 2);
    cluster.append(1, 3);
    cluster.stabilize();
    cluster.replace_storage_with(3, CrashableStorage::default(), |mut c| {
        c.set_learner(true);
        c.set_process_nonce(nonce);
        c
    });
    // Once the learner asks the leader for the read's index, the old reply arrives first.
    let read = cluster.replica(3).read_index().expect("read");
    let mut replayed = false;
    for _ in 0..1000 {
        cluster.collect();
        if !cluster.copy_in_flight(|m| m.from == 3 && is_kind(m, "ReadRequest")).is_empty() {
            cluster.replay(kept.pop().expect("kept"));
            replayed = true;
            break;
        }
        if !cluster.deliver_one() {
            cluster.tick_once();
        }
    }
    assert!(replayed, "the learner never asked for a read index\n{}", cluster.trace_tail(30));
    cluster.stabilize();
    cluster.tick(30);
    let outcomes = take_reads(&mut cluster, 3);
    assert_eq!(
        outcomes,
        vec![(read, ReadOutcome::Ready(3))],
        "nonce {nonce}: the old reply (index 1) answered the new read\n{}",
        cluster.trace_tail(40)
    );
}
