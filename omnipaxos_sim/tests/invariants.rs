//! The invariant checker catches what it is named after, on replicas built to break it.

use omnipaxos_core::{storage::ClusterConfig, OmniPaxos};
use omnipaxos_sim::{
    invariants::{Checker, Replica},
    kv::{Command, Op, RequestId},
    node::{replica_config, ReplicaSettings, DEFAULT_BUFFER_SIZE},
    storage::SimStorage,
};

const SETTINGS: ReplicaSettings = ReplicaSettings {
    hb_delay_ticks: 10,
    resend_ticks: 20,
    batch_size: 1,
    buffer_size: DEFAULT_BUFFER_SIZE,
    read_lease: None,
    mutation: None,
};

/// A single-node cluster `pid` (configuration 1) that decided one put of `value`.
fn single_node_that_decided(pid: u64, value: u64) -> Replica {
    let cluster = ClusterConfig { configuration_id: 1, nodes: vec![pid], flexible_quorum: None };
    let mut replica = OmniPaxos::with(replica_config(pid, &cluster, SETTINGS), SimStorage::default());
    for _ in 0..SETTINGS.hb_delay_ticks + 1 {
        replica.tick().unwrap();
        replica.take_outgoing_messages(&mut Vec::new()).unwrap();
    }
    let command = Command { request: RequestId { client: 0, seq: value }, op: Op::Put { key: 1, value } };
    replica.append(command).unwrap();
    replica.take_outgoing_messages(&mut Vec::new()).unwrap();
    assert_eq!(replica.get_decided_idx(), 1, "a single node decides after its flush");
    replica
}

/// Two single-node "clusters" that both think they are configuration 1 decide different
/// values at index 0: exactly what the property forbids.
#[test]
fn two_values_decided_at_one_index_are_caught() {
    let mut checker = Checker::default();
    checker.check_replica(1, 1, &single_node_that_decided(1, 10)).unwrap();
    let violation = checker.check_replica(2, 1, &single_node_that_decided(2, 20)).unwrap_err();
    assert_eq!(violation.property, "at_most_one_value_decided_per_index");
}

/// The same node's replica is replaced by one with a different decided entry and the same
/// incarnation: its decided prefix changed.
#[test]
fn a_changed_decided_entry_is_caught() {
    let mut checker = Checker::default();
    let first = single_node_that_decided(1, 10);
    checker.check_replica(1, 1, &first).unwrap();
    // Same pid and incarnation, other content: the checker rereads it because its storage
    // reports the index rewritten.
    let second = single_node_that_decided(1, 11);
    second.sequence_paxos().storage().take_rewritten_from();
    second.sequence_paxos().storage().mark_rewritten(0);
    let violation = checker.check_replica(1, 1, &second).unwrap_err();
    assert_eq!(violation.property, "decided_prefix_never_shrinks_or_changes");
}

/// A restarted replica whose promise is below the one it had made durable.
#[test]
fn a_promise_lost_across_a_restart_is_caught() {
    let mut checker = Checker::default();
    let leader = single_node_that_decided(1, 10);
    checker.check_replica(1, 1, &leader).unwrap();
    checker.note_flushed(1, 1, &leader);
    // A "restart" over an empty disk: a new incarnation with no promise at all.
    let cluster = ClusterConfig { configuration_id: 1, nodes: vec![1, 2, 3], flexible_quorum: None };
    let wiped = OmniPaxos::with(replica_config(1, &cluster, SETTINGS), SimStorage::default());
    let mut wiped_twice = wiped;
    // Bump the incarnation past the first replica's, as a restart does.
    let storage =
        wiped_twice.sequence_paxos().storage().crash(omnipaxos_storage::crash_storage::CrashKeep::All);
    wiped_twice = OmniPaxos::with(replica_config(1, &cluster, SETTINGS), storage);
    let violation = checker.check_replica(1, 1, &wiped_twice).unwrap_err();
    assert_eq!(violation.property, "promises_never_go_backwards");
}

#[test]
fn diverging_state_machines_are_caught() {
    let mut checker = Checker::default();
    checker.applied_state_machines_agree(1, 1, 5, 0xabc).unwrap();
    checker.applied_state_machines_agree(2, 1, 5, 0xabc).unwrap();
    let violation = checker.applied_state_machines_agree(3, 1, 5, 0xdef).unwrap_err();
    assert_eq!(violation.property, "applied_state_machines_agree");
}
