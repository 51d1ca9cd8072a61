//! Reconnection after lost messages: for every message kind, losing the first message(s) of that
//! kind must only delay the cluster. After a few resend timeouts every replica has decided every
//! appended entry exactly once, and every proposer learns where its proposal was decided.

mod common;

use std::{
    cell::RefCell,
    collections::{BTreeSet, HashSet},
    rc::Rc,
};

use common::{is_kind, Cluster};
use omnipaxos_core::{
    messages::PaxosMessage,
    sequence_paxos::ProposalOutcome,
    storage::ClusterConfig,
    util::{LogEntry, NodeId, ProposalId},
};

const PIDS: [NodeId; 3] = [1, 2, 3];
/// The default `resend_message_tick_timeout`.
const RESEND_TICKS: usize = 20;
/// Enough ticks for several resends, so that a retry of a retry also happens.
const RECOVERY_TICKS: usize = 4 * RESEND_TICKS;

/// Loses the first `count` messages of `kind` (counted from when the rule is installed).
fn drop_first(cluster: &mut Cluster<()>, kind: &'static str, count: usize) {
    let mut dropped = 0;
    cluster.drop_messages(move |m| {
        if dropped < count && is_kind(m, kind) {
            dropped += 1;
            true
        } else {
            false
        }
    });
}

/// Loses the first `count` messages of `kind` sent to `to`.
fn drop_first_to(cluster: &mut Cluster<()>, kind: &'static str, to: NodeId, count: usize) {
    let mut dropped = 0;
    cluster.drop_messages(move |m| {
        if dropped < count && m.to == to && is_kind(m, kind) {
            dropped += 1;
            true
        } else {
            false
        }
    });
}

/// Loses every message of the given kinds sent to `to`, until the rules are cleared.
fn drop_all_to(cluster: &mut Cluster<()>, kinds: &'static [&'static str], to: NodeId) {
    cluster.drop_messages(move |m| m.to == to && kinds.iter().any(|k| is_kind(m, k)));
}

/// Delivers every message of the given kinds twice. The copy goes to the back of the queue; it
/// is recognised by its trace line and not copied again.
fn duplicate_once(cluster: &mut Cluster<()>, kinds: &'static [&'static str]) {
    let mut copied = HashSet::new();
    cluster.duplicate_messages(move |m| kinds.iter().any(|k| is_kind(m, k)) && copied.insert(m.to_string()));
}

fn next_config() -> ClusterConfig {
    ClusterConfig { configuration_id: 2, nodes: vec![1, 2, 3, 4], flexible_quorum: None }
}

/// Every replica decided exactly the `appended` values, each once, in the same order, and every
/// proposal's outcome is `Decided` at the index where its value is.
fn assert_all_decided_once(cluster: &Cluster<()>, appended: &[(ProposalId, u64)]) {
    let context = cluster.trace_tail(60);
    let reference = cluster.decided(cluster.pids[0]);
    for &pid in &cluster.pids {
        let decided = cluster.decided(pid);
        let unique: HashSet<u64> = decided.iter().copied().collect();
        assert_eq!(
            unique.len(),
            decided.len(),
            "replica {pid} decided an entry twice: {decided:?}\n{context}"
        );
        let expected: BTreeSet<u64> = appended.iter().map(|(_, v)| *v).collect();
        let got: BTreeSet<u64> = decided.iter().copied().collect();
        assert_eq!(got, expected, "replica {pid} decided {decided:?}\n{context}");
        assert_eq!(decided, reference, "replica {pid} disagrees with replica {}\n{context}", cluster.pids[0]);
    }
    for (id, value) in appended {
        let idx = reference.iter().position(|v| v == value).expect("decided above") as u64;
        assert_eq!(
            cluster.outcomes.get(id),
            Some(&ProposalOutcome::Decided(idx)),
            "outcome of proposal {id} (value {value})\n{context}"
        );
    }
}

/// Appends `values` at `pid`, letting the network run to quiet after each.
fn append_each(
    cluster: &mut Cluster<()>,
    pid: NodeId,
    values: impl IntoIterator<Item = u64>,
) -> Vec<(ProposalId, u64)> {
    values
        .into_iter()
        .map(|v| {
            let id = cluster.append(pid, v);
            cluster.stabilize();
            (id, v)
        })
        .collect()
}

#[test]
fn lost_prepares_are_resent_and_buffered_entries_decided() {
    let mut cluster = Cluster::<()>::new(&PIDS);
    drop_first(&mut cluster, "Prepare", 2);
    cluster.elect(1);
    assert!(!cluster.replica(1).is_accepting_leader(), "no promise can have arrived");
    let appended = append_each(&mut cluster, 1, 1..=3);
    assert_eq!(cluster.decided_idx(1), 0, "nothing decides without a read quorum");
    cluster.tick(RECOVERY_TICKS);
    assert_all_decided_once(&cluster, &appended);
}

#[test]
fn lost_promises_are_resent() {
    let mut cluster = Cluster::<()>::new(&PIDS);
    drop_first(&mut cluster, "Promise", 2);
    cluster.elect(1);
    assert!(!cluster.replica(1).is_accepting_leader());
    let appended = append_each(&mut cluster, 1, 1..=3);
    cluster.tick(RECOVERY_TICKS);
    assert!(cluster.replica(1).is_accepting_leader());
    assert_all_decided_once(&cluster, &appended);
}

#[test]
fn lost_accept_syncs_are_resent() {
    let mut cluster = Cluster::<()>::new(&PIDS);
    let early = append_each(&mut cluster, 2, [10]);
    drop_first(&mut cluster, "AcceptSync", 2);
    cluster.elect(1);
    let mut appended = append_each(&mut cluster, 1, 1..=3);
    assert_eq!(cluster.decided_idx(1), 0, "no follower is synchronised");
    cluster.tick(RECOVERY_TICKS);
    appended.extend(early);
    assert_all_decided_once(&cluster, &appended);
}

#[test]
fn lost_accept_decides_are_detected_by_the_next_one() {
    let mut cluster = Cluster::<()>::new(&PIDS);
    cluster.elect(1);
    drop_first(&mut cluster, "AcceptDecide", 2);
    let mut appended = append_each(&mut cluster, 1, [1]);
    assert_eq!(cluster.decided_idx(1), 0, "no follower accepted the first entry");
    appended.extend(append_each(&mut cluster, 1, 2..=4));
    appended.extend(append_each(&mut cluster, 2, [20]));
    cluster.tick(RECOVERY_TICKS);
    assert_all_decided_once(&cluster, &appended);
}

#[test]
fn lost_accepteds_are_recovered_by_the_leader_probe() {
    let mut cluster = Cluster::<()>::new(&PIDS);
    cluster.elect(1);
    drop_first(&mut cluster, "Accepted", 2);
    let appended = append_each(&mut cluster, 1, [1]);
    assert_eq!(cluster.decided_idx(1), 0, "no Accepted arrived");
    cluster.tick(RECOVERY_TICKS);
    assert_all_decided_once(&cluster, &appended);
}

#[test]
fn lost_decides_are_recovered_by_later_traffic() {
    let mut cluster = Cluster::<()>::new(&PIDS);
    cluster.elect(1);
    drop_first(&mut cluster, "Decide", 2);
    let mut appended = append_each(&mut cluster, 1, [1]);
    assert_eq!(cluster.decided_idx(1), 1);
    assert_eq!(cluster.decided_idx(2), 0, "the Decide was lost");
    appended.extend(append_each(&mut cluster, 1, 2..=3));
    cluster.tick(RECOVERY_TICKS);
    assert_all_decided_once(&cluster, &appended);
}

#[test]
fn lost_prepare_reqs_are_resent() {
    let mut cluster = Cluster::<()>::new(&PIDS);
    cluster.elect(1);
    // Follower 2 misses an AcceptDecide, sees the gap at the next one and asks for a Prepare,
    // but that request is lost too.
    drop_first_to(&mut cluster, "AcceptDecide", 2, 1);
    drop_first(&mut cluster, "PrepareReq", 1);
    let appended = append_each(&mut cluster, 1, 1..=3);
    assert!(
        cluster.trace.iter().any(|l| l.starts_with("LOST 2->1 PrepareReq")),
        "{}",
        cluster.trace_tail(30)
    );
    assert_eq!(cluster.replicas[&2].get_accepted_idx(), 0, "follower 2 waits in recovery");
    cluster.tick(RECOVERY_TICKS);
    assert_all_decided_once(&cluster, &appended);
}

#[test]
fn lost_accept_stopsigns_are_recovered() {
    let mut cluster = Cluster::<()>::new(&PIDS);
    cluster.elect(1);
    let appended = append_each(&mut cluster, 1, 1..=2);
    drop_first(&mut cluster, "AcceptStopSign", 2);
    cluster.replica(1).reconfigure(next_config(), None).expect("reconfigure");
    cluster.stabilize();
    assert!(cluster.replica(1).is_reconfigured().is_none(), "no follower accepted the StopSign");
    cluster.tick(RECOVERY_TICKS);
    assert_all_decided_once(&cluster, &appended);
    for pid in PIDS {
        let ss = cluster.replicas[&pid].is_reconfigured();
        assert_eq!(ss.map(|ss| ss.next_config), Some(next_config()), "replica {pid}");
    }
}

#[test]
fn lost_proposal_forwards_are_retried() {
    let mut cluster = Cluster::<()>::new(&PIDS);
    cluster.elect(1);
    drop_first(&mut cluster, "ProposalForward", 2);
    let mut appended = append_each(&mut cluster, 2, [21]);
    appended.extend(append_each(&mut cluster, 3, [31]));
    assert_eq!(cluster.decided_idx(1), 0, "no forward arrived");
    appended.extend(append_each(&mut cluster, 1, [11]));
    cluster.tick(RECOVERY_TICKS);
    assert_all_decided_once(&cluster, &appended);
}

#[test]
fn lost_forward_stopsigns_are_retried() {
    let mut cluster = Cluster::<()>::new(&PIDS);
    cluster.elect(1);
    let appended = append_each(&mut cluster, 2, [21, 22]);
    drop_first(&mut cluster, "ForwardStopSign", 1);
    cluster.replica(2).reconfigure(next_config(), Some(vec![7])).expect("reconfigure");
    cluster.stabilize();
    assert!(cluster.replica(1).read(2).is_none(), "the leader never saw the StopSign");
    cluster.tick(RECOVERY_TICKS);
    assert_all_decided_once(&cluster, &appended);
    for pid in PIDS {
        let ss = cluster.replicas[&pid].is_reconfigured().expect("reconfigured");
        assert_eq!(ss.next_config, next_config(), "replica {pid}");
        assert_eq!(ss.metadata, Some(vec![7]), "replica {pid}");
    }
}

#[test]
fn reconnected_follower_resyncs_without_waiting_for_traffic() {
    let mut cluster = Cluster::<()>::new(&PIDS);
    cluster.elect(1);
    drop_all_to(&mut cluster, &["AcceptDecide", "Decide"], 2);
    let appended = append_each(&mut cluster, 1, 1..=3);
    assert_eq!(cluster.decided(2), Vec::<u64>::new(), "follower 2 lost every AcceptDecide");
    assert_eq!(cluster.decided(3), vec![1, 2, 3]);
    cluster.clear_drop_rules();
    cluster.replica(2).reconnected(1);
    cluster.stabilize();
    assert_eq!(cluster.decided(2), vec![1, 2, 3], "{}", cluster.trace_tail(30));
    assert_all_decided_once(&cluster, &appended);
}

#[test]
fn reconnected_at_the_leader_resyncs_the_follower() {
    let mut cluster = Cluster::<()>::new(&PIDS);
    cluster.elect(1);
    drop_all_to(&mut cluster, &["AcceptDecide", "Decide"], 3);
    let appended = append_each(&mut cluster, 1, 1..=2);
    assert_eq!(cluster.decided(3), Vec::<u64>::new());
    cluster.clear_drop_rules();
    cluster.replica(1).reconnected(3);
    cluster.stabilize();
    assert_eq!(cluster.decided(3), vec![1, 2], "{}", cluster.trace_tail(30));
    assert_all_decided_once(&cluster, &appended);
}

#[test]
fn reconnected_with_a_non_leader_changes_nothing() {
    let mut cluster = Cluster::<()>::new(&PIDS);
    cluster.elect(1);
    let appended = append_each(&mut cluster, 1, 1..=2);
    let delivered = cluster.delivered;
    cluster.replica(2).reconnected(3);
    cluster.replica(2).reconnected(2);
    cluster.replica(2).reconnected(99);
    cluster.stabilize();
    assert_eq!(cluster.delivered, delivered, "no message is sent:\n{}", cluster.trace_tail(10));
    assert_all_decided_once(&cluster, &appended);
}

#[test]
fn duplicated_proposal_forwards_decide_once() {
    let mut cluster = Cluster::<()>::new(&PIDS);
    cluster.elect(1);
    duplicate_once(&mut cluster, &["ProposalForward"]);
    let mut appended = append_each(&mut cluster, 2, 1..=3);
    appended.extend(append_each(&mut cluster, 3, 4..=5));
    cluster.tick(RECOVERY_TICKS);
    assert!(cluster.trace.iter().any(|l| l.starts_with("DUPLICATED 2->1 ProposalForward")));
    assert_all_decided_once(&cluster, &appended);
}

#[test]
fn duplicated_accept_decides_and_accepteds_decide_once() {
    let mut cluster = Cluster::<()>::new(&PIDS);
    cluster.elect(1);
    duplicate_once(&mut cluster, &["AcceptDecide", "Accepted"]);
    let mut appended = append_each(&mut cluster, 1, 1..=3);
    appended.extend(append_each(&mut cluster, 2, 4..=5));
    cluster.tick(RECOVERY_TICKS);
    assert!(cluster.trace.iter().any(|l| l.starts_with("DUPLICATED 1->2 AcceptDecide")));
    assert!(cluster.trace.iter().any(|l| l.starts_with("DUPLICATED 2->1 Accepted")));
    assert_all_decided_once(&cluster, &appended);
}

#[test]
fn lost_last_accept_decide_is_recovered_by_ticks() {
    let mut cluster = Cluster::<()>::new(&PIDS);
    cluster.elect(1);
    let mut appended = append_each(&mut cluster, 1, 1..=2);
    // The AcceptDecide is lost, and so is the Decide after it that would reveal the gap.
    drop_first_to(&mut cluster, "AcceptDecide", 2, 1);
    drop_first_to(&mut cluster, "Decide", 2, 1);
    appended.extend(append_each(&mut cluster, 1, [3]));
    assert_eq!(cluster.replicas[&2].get_accepted_idx(), 2, "follower 2 lost the last AcceptDecide");
    cluster.tick(RECOVERY_TICKS);
    assert_all_decided_once(&cluster, &appended);
}

#[test]
fn lost_last_decide_is_recovered_by_ticks() {
    let mut cluster = Cluster::<()>::new(&PIDS);
    cluster.elect(1);
    let mut appended = append_each(&mut cluster, 1, 1..=2);
    drop_first_to(&mut cluster, "Decide", 2, 1);
    appended.extend(append_each(&mut cluster, 1, [3]));
    assert_eq!(cluster.replicas[&2].get_accepted_idx(), 3);
    assert_eq!(cluster.decided_idx(2), 2, "follower 2 lost the last Decide");
    cluster.tick(RECOVERY_TICKS);
    assert_eq!(cluster.replicas[&2].read(2), Some(LogEntry::Decided(3)), "{}", cluster.trace_tail(30));
    assert_all_decided_once(&cluster, &appended);
}

#[test]
fn lost_decides_of_a_follower_proposal_report_its_outcome() {
    let mut cluster = Cluster::<()>::new(&PIDS);
    cluster.elect(1);
    drop_first_to(&mut cluster, "Decide", 2, 1);
    let appended = append_each(&mut cluster, 2, [21]);
    assert_eq!(cluster.outcomes.get(&appended[0].0), None, "the proposer did not learn the decision yet");
    cluster.tick(RECOVERY_TICKS);
    assert_all_decided_once(&cluster, &appended);
}

/// Seeded random loss of every kind of message during a mixed workload: each seed must end,
/// after the losses stop and a few resend timeouts pass, with every entry decided once.
#[test]
fn random_losses_of_every_kind_recover_after_ticks() {
    use rand::{rngs::SmallRng, Rng, SeedableRng};
    for seed in 0..20u64 {
        let mut cluster = Cluster::<()>::new(&PIDS);
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut loss_rng = SmallRng::seed_from_u64(seed ^ 0x5eed);
        cluster.drop_messages(move |_| loss_rng.gen_bool(0.2));
        cluster.elect(1);
        let mut appended = Vec::new();
        for v in 0..20u64 {
            let pid = PIDS[rng.gen_range(0..PIDS.len())];
            appended.push((cluster.append(pid, v), v));
            cluster.stabilize();
            cluster.tick(rng.gen_range(0..5));
        }
        cluster.clear_drop_rules();
        cluster.tick(2 * RECOVERY_TICKS);
        assert_all_decided_once(&cluster, &appended);
    }
}

/// A delayed copy of the leader's first AcceptSync arrives while the follower is being
/// prepared again by the same leader (same ballot). The follower must not apply it: it would
/// truncate its log back to what the stale sync described and lower its decided index.
#[test]
fn delayed_duplicate_accept_sync_does_not_undo_decided_entries() {
    let mut cluster = Cluster::<()>::new(&PIDS);
    let captured: Rc<RefCell<Vec<PaxosMessage<u64, ()>>>> = Rc::default();
    let sink = captured.clone();
    cluster.drop_messages(move |m| {
        if m.to == 3 && is_kind(m, "AcceptSync") {
            sink.borrow_mut().push(m.clone());
        }
        false
    });
    cluster.elect(1);
    let stale_sync = captured.borrow()[0].clone();
    cluster.clear_drop_rules();
    // Entries are decided by leader 1 and follower 3 alone.
    cluster.isolate(2);
    append_each(&mut cluster, 1, 1..=3);
    assert_eq!(cluster.decided(3), vec![1, 2, 3]);
    // Follower 3 asks to be prepared again; its Promise is lost, so it stays in the Prepare phase.
    drop_first_to(&mut cluster, "Promise", 1, 1);
    cluster.replica(3).reconnected(1);
    cluster.stabilize();
    cluster.clear_drop_rules();
    cluster.trace.push(format!("DELAYED COPY {stale_sync}"));
    cluster.replica(3).handle(stale_sync).expect("handle");
    cluster.stabilize();
    assert_eq!(
        cluster.decided_idx(3),
        3,
        "a decided index never decreases; replica 3 now holds {:?}\n{}",
        cluster.replicas[&3].read_entries(..),
        cluster.trace_tail(20)
    );
    // What the regression makes possible: leader 1 fails, and 3 and 2, which never accepted
    // the entries, form a quorum that decides something else at index 0.
    cluster.heal();
    cluster.isolate(1);
    cluster.elect(3);
    cluster.append(3, 99);
    cluster.stabilize();
    assert_eq!(cluster.decided(3)[..3], [1, 2, 3], "decided entries were lost:\n{}", cluster.trace_tail(30));
}

/// The same hazard through two delayed copies: the leader answered a duplicated Promise with a
/// second AcceptSync, so follower 2 applied two syncs. Later a delayed copy of the leader's
/// first Prepare puts it back into the Prepare phase, and then a delayed copy of the second
/// AcceptSync arrives. It must not truncate anything: the entries the follower acknowledged
/// since are decided.
#[test]

fn delayed_prepare_and_accept_sync_copies_do_not_undo_decided_entries() {
    let mut cluster = Cluster::<()>::new(&PIDS);
    let captured: Rc<RefCell<Vec<PaxosMessage<u64, ()>>>> = Rc::default();
    let sink = captured.clone();
    cluster.drop_messages(move |m| {
        if m.to == 2 && (is_kind(m, "Prepare") || is_kind(m, "AcceptSync")) {
            sink.borrow_mut().push(m.clone());
        }
        false
    });
    let mut copied = false;
    cluster.duplicate_messages(move |m| {
        let copy = !copied && m.from == 2 && is_kind(m, "Promise");
        copied |= copy;
        copy
    });
    cluster.elect(1);
    let (stale_prepare, stale_sync) = {
        let captured = captured.borrow();
        assert_eq!(captured.len(), 3, "one Prepare and two AcceptSyncs: {}", cluster.trace_tail(12));
        (captured[0].clone(), captured[1].clone())
    };
    cluster.clear_drop_rules();
    cluster.isolate(3);
    append_each(&mut cluster, 1, 1..=3);
    assert_eq!(cluster.decided(2), vec![1, 2, 3]);
    // Both copies arrive before the follower's new Promise is answered.
    for stale in [stale_prepare, stale_sync] {
        cluster.trace.push(format!("DELAYED COPY {stale}"));
        cluster.replica(2).handle(stale).expect("handle");
    }
    cluster.stabilize();
    assert_eq!(
        (cluster.replicas[&2].get_accepted_idx(), cluster.decided_idx(2)),
        (3, 3),
        "follower 2 dropped entries it acknowledged; it now holds {:?}\n{}",
        cluster.replicas[&2].read_entries(..),
        cluster.trace_tail(24)
    );
}

/// Replica 3 forwards a proposal to replica 2, which is still preparing and buffers it. Then 3
/// becomes leader itself and gets its own (still waiting) proposal decided while 2 is cut off.
/// When 2 is elected again it must not append the buffered copy: the proposal is decided once.
#[test]

fn a_forward_buffered_by_a_preparing_leader_is_not_decided_twice() {
    let mut cluster = Cluster::<()>::new(&PIDS);
    cluster.drop_messages(|m| m.to == 2 && is_kind(m, "Promise"));
    cluster.elect(2);
    assert!(!cluster.replica(2).is_accepting_leader());
    let id = cluster.append(3, 30);
    cluster.stabilize();
    cluster.clear_drop_rules();
    cluster.isolate(2);
    cluster.elect(3);
    assert_eq!(cluster.decided(3), vec![30]);
    cluster.elect(2);
    cluster.heal();
    cluster.tick(RECOVERY_TICKS);
    for pid in PIDS {
        assert_eq!(cluster.decided(pid), vec![30], "replica {pid}:\n{}", cluster.trace_tail(24));
    }
    assert_eq!(cluster.outcomes.get(&id), Some(&ProposalOutcome::Decided(0)));
}
