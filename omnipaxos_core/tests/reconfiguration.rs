//! Reconfiguration: a StopSign proposed at the leader or at a follower is decided on every
//! replica after every entry proposed before it, seals the log, and is refused when invalid or
//! when one is already pending. Proposals that can no longer be decided are reported dropped.

mod common;

use common::{is_kind, Cluster};
use omnipaxos_core::{
    errors::{ConfigError, ProposeErr},
    sequence_paxos::{DropReason, ProposalOutcome},
    storage::{ClusterConfig, StopSign},
    util::{FlexibleQuorum, LogEntry, NodeId},
};

const PIDS: [NodeId; 3] = [1, 2, 3];
/// A few resend timeouts (the default timeout is 20 ticks).
const RECOVERY_TICKS: usize = 80;

fn next_config() -> ClusterConfig {
    ClusterConfig { configuration_id: 2, nodes: vec![1, 2, 3, 4], flexible_quorum: None }
}

fn metadata() -> Option<Vec<u8>> {
    Some(vec![4, 2])
}

fn stopsign() -> StopSign {
    StopSign::with(next_config(), metadata())
}

/// Every replica decided `entries` followed by the StopSign, and the log is sealed everywhere.
fn assert_sealed_after(cluster: &mut Cluster<()>, entries: &[u64]) {
    let context = cluster.trace_tail(30);
    let ss_idx = entries.len() as u64;
    for pid in cluster.pids.clone() {
        assert_eq!(cluster.decided(pid), entries, "replica {pid}:\n{context}");
        let replica = cluster.replica(pid);
        assert_eq!(replica.is_reconfigured(), Some(stopsign()), "replica {pid}:\n{context}");
        assert_eq!(replica.get_decided_idx(), ss_idx + 1, "replica {pid}");
        assert_eq!(replica.read(ss_idx), Some(LogEntry::StopSign(stopsign(), true)), "replica {pid}");
        assert_eq!(replica.read(ss_idx + 1), None, "replica {pid}: nothing after the StopSign");
        match replica.append(77) {
            Err(ProposeErr::PendingReconfigEntry(77)) => {}
            other => panic!("replica {pid}: append after the StopSign gave {other:?}"),
        }
        let later = ClusterConfig { configuration_id: 3, ..next_config() };
        match replica.reconfigure(later.clone(), None) {
            Err(ProposeErr::PendingReconfigConfig(config, None)) => assert_eq!(config, later),
            other => panic!("replica {pid}: second reconfigure gave {other:?}"),
        }
    }
    cluster.stabilize();
    assert_eq!(cluster.decided(cluster.pids[0]), entries, "refused proposals change nothing");
}

#[test]
fn reconfigure_at_the_leader_is_decided_everywhere() {
    let mut cluster = Cluster::<()>::new(&PIDS);
    cluster.elect(1);
    for v in 1..=3 {
        cluster.append(1, v);
    }
    cluster.stabilize();
    cluster.replica(1).reconfigure(next_config(), metadata()).expect("reconfigure");
    cluster.stabilize();
    assert_sealed_after(&mut cluster, &[1, 2, 3]);
}

#[test]
fn reconfigure_at_a_follower_is_decided_everywhere() {
    let mut cluster = Cluster::<()>::new(&PIDS);
    cluster.elect(1);
    for v in 1..=3 {
        cluster.append(3, v);
    }
    cluster.stabilize();
    cluster.replica(2).reconfigure(next_config(), metadata()).expect("reconfigure");
    match cluster.replica(2).append(5) {
        Err(ProposeErr::PendingReconfigEntry(5)) => {}
        other => panic!("append at a follower with a pending StopSign gave {other:?}"),
    }
    match cluster.replica(2).reconfigure(ClusterConfig { configuration_id: 3, ..next_config() }, None) {
        Err(ProposeErr::PendingReconfigConfig(..)) => {}
        other => panic!("second reconfigure at the follower gave {other:?}"),
    }
    cluster.stabilize();
    assert_sealed_after(&mut cluster, &[1, 2, 3]);
}

#[test]
fn reconfigure_with_an_empty_log() {
    let mut cluster = Cluster::<()>::new(&PIDS);
    cluster.elect(2);
    cluster.replica(2).reconfigure(next_config(), metadata()).expect("reconfigure");
    cluster.stabilize();
    assert_sealed_after(&mut cluster, &[]);
}

#[test]
fn invalid_next_configurations_are_refused_with_typed_errors() {
    let mut cluster = Cluster::<()>::new(&PIDS);
    cluster.elect(1);
    let config = |id, nodes: &[NodeId], quorum| ClusterConfig {
        configuration_id: id,
        nodes: nodes.to_vec(),
        flexible_quorum: quorum,
    };
    let flexible = |read, write| Some(FlexibleQuorum { read_quorum_size: read, write_quorum_size: write });
    for pid in [1, 2] {
        let replica = cluster.replica(pid);
        for id in [0, 1] {
            match replica.reconfigure(config(id, &[1, 2, 3], None), metadata()) {
                Err(ProposeErr::ConfigurationIdNotIncreasing(c, m)) => {
                    assert_eq!((c.configuration_id, m), (id, metadata()), "the proposal is handed back");
                }
                other => panic!("replica {pid}, id {id}: {other:?}"),
            }
        }
        type Check = fn(&ConfigError) -> bool;
        let cases: Vec<(ClusterConfig, Check)> = vec![
            (config(2, &[1, 2, 3, 3], None), |e| matches!(e, ConfigError::DuplicateNode(3))),
            (config(2, &[1, 2, 0], None), |e| matches!(e, ConfigError::ZeroNodeId)),
            (config(2, &[1, 2, 3, 4], flexible(2, 2)), |e| {
                matches!(e, ConfigError::QuorumsDoNotIntersect { nodes: 4, .. })
            }),
            (config(2, &[1, 2, 3], flexible(4, 2)), |e| {
                matches!(e, ConfigError::ReadQuorumOutOfRange { read_quorum_size: 4, nodes: 3 })
            }),
            (config(2, &[1, 2, 3], flexible(2, 0)), |e| {
                matches!(e, ConfigError::WriteQuorumOutOfRange { write_quorum_size: 0, nodes: 3 })
            }),
        ];
        for (next, expected) in cases {
            match replica.reconfigure(next.clone(), None) {
                Err(ProposeErr::ConfigError(e, c, None)) if expected(&e) => assert_eq!(c, next),
                other => panic!("replica {pid}, {next:?}: {other:?}"),
            }
        }
    }
    cluster.stabilize();
    // Nothing was proposed: the log still takes entries.
    cluster.append(2, 9);
    cluster.stabilize();
    for pid in PIDS {
        assert_eq!(cluster.decided(pid), vec![9], "replica {pid}");
        assert_eq!(cluster.replicas[&pid].is_reconfigured(), None);
    }
}

/// The first node of the next configuration is checked like the others: duplicates, zero and an
/// empty node list get the same errors as `validate_cluster_config` gives.
#[test]
fn invalid_first_node_of_the_next_configuration_gets_the_matching_error() {
    let mut cluster = Cluster::<()>::new(&PIDS);
    cluster.elect(1);
    let config = |nodes: &[NodeId]| ClusterConfig {
        configuration_id: 2,
        nodes: nodes.to_vec(),
        flexible_quorum: None,
    };
    let mut errors = Vec::new();
    for nodes in [&[1, 2, 3, 1][..], &[0, 1, 2][..], &[][..]] {
        match cluster.replica(1).reconfigure(config(nodes), None) {
            Err(ProposeErr::ConfigError(e, ..)) => errors.push(format!("{e:?}")),
            other => panic!("{nodes:?}: {other:?}"),
        }
    }
    let expected: Vec<String> = [
        omnipaxos_core::config::validate_cluster_config(&config(&[1, 2, 3, 1])),
        omnipaxos_core::config::validate_cluster_config(&config(&[0, 1, 2])),
        omnipaxos_core::config::validate_cluster_config(&config(&[])),
    ]
    .into_iter()
    .map(|r| format!("{:?}", r.expect_err("invalid")))
    .collect();
    assert_eq!(errors, expected, "[DuplicateNode(1), ZeroNodeId, NoNodes] expected");
}

#[test]
fn entries_proposed_before_the_stopsign_are_decided_before_it() {
    // Batches of 10: the entries are still in the leader's batch when the StopSign comes.
    let mut cluster = Cluster::<()>::with_configs(&PIDS, |mut c| {
        c.set_batch_size(10);
        c
    });
    cluster.elect(1);
    let mut ids = Vec::new();
    for v in 1..=3 {
        ids.push(cluster.append(1, v));
    }
    ids.push(cluster.append(2, 20));
    cluster.stabilize();
    assert_eq!(cluster.replicas[&1].get_accepted_idx(), 0, "the batch is not full");
    cluster.replica(1).reconfigure(next_config(), metadata()).expect("reconfigure");
    cluster.stabilize();
    assert_sealed_after(&mut cluster, &[1, 2, 3, 20]);
    for (idx, id) in ids.iter().enumerate() {
        assert_eq!(cluster.outcomes.get(id), Some(&ProposalOutcome::Decided(idx as u64)), "proposal {id}");
    }
}

#[test]
fn entries_proposed_before_the_stopsign_in_the_prepare_phase_are_decided_before_it() {
    let mut cluster = Cluster::<()>::new(&PIDS);
    let mut dropped = 0;
    cluster.drop_messages(move |m| {
        let drop = dropped < 2 && is_kind(m, "Promise");
        dropped += usize::from(drop);
        drop
    });
    cluster.elect(1);
    assert!(!cluster.replica(1).is_accepting_leader());
    let ids = [cluster.append(1, 1), cluster.append(1, 2)];
    cluster.replica(1).reconfigure(next_config(), metadata()).expect("reconfigure");
    cluster.tick(RECOVERY_TICKS);
    assert_sealed_after(&mut cluster, &[1, 2]);
    for (idx, id) in ids.iter().enumerate() {
        assert_eq!(cluster.outcomes.get(id), Some(&ProposalOutcome::Decided(idx as u64)));
    }
}

/// While the leader is still preparing, a StopSign it was given must already seal its log:
/// later appends and a second reconfiguration are refused, as they are in the accept phase.
#[test]
fn a_stopsign_buffered_in_the_prepare_phase_seals_the_log() {
    let mut cluster = Cluster::<()>::new(&PIDS);
    cluster.drop_messages(|m| is_kind(m, "Promise"));
    cluster.elect(1);
    assert!(!cluster.replica(1).is_accepting_leader());
    cluster.replica(1).reconfigure(next_config(), metadata()).expect("reconfigure");
    let appended = cluster.replica(1).append(5);
    let second =
        cluster.replica(1).reconfigure(ClusterConfig { configuration_id: 3, ..next_config() }, Some(vec![9]));
    cluster.clear_drop_rules();
    cluster.tick(RECOVERY_TICKS);
    let sealed_by = cluster.replicas[&1].is_reconfigured();
    assert!(
        matches!(appended, Err(ProposeErr::PendingReconfigEntry(5))),
        "append after reconfigure gave {appended:?}; decided {:?}",
        cluster.decided(1)
    );
    assert!(
        matches!(second, Err(ProposeErr::PendingReconfigConfig(..))),
        "a second reconfigure gave {second:?}; the log was sealed by {sealed_by:?}"
    );
    assert_sealed_after(&mut cluster, &[]);
}

#[test]
fn a_proposal_waiting_at_a_follower_is_dropped_when_the_log_is_sealed() {
    let mut cluster = Cluster::<()>::new(&PIDS);
    cluster.elect(1);
    cluster.drop_messages(|m| is_kind(m, "ProposalForward"));
    let waiting = cluster.append(2, 20);
    let decided = cluster.append(1, 10);
    cluster.stabilize();
    cluster.replica(1).reconfigure(next_config(), metadata()).expect("reconfigure");
    cluster.stabilize();
    assert_sealed_after(&mut cluster, &[10]);
    assert_eq!(cluster.outcomes.get(&waiting), Some(&ProposalOutcome::Dropped(DropReason::LogSealed)));
    assert_eq!(cluster.outcomes.get(&decided), Some(&ProposalOutcome::Decided(0)));
    // Retries stop, and nothing is reported twice (the harness checks that).
    cluster.clear_drop_rules();
    cluster.tick(RECOVERY_TICKS);
    assert_sealed_after(&mut cluster, &[10]);
}

#[test]
fn a_forward_arriving_after_the_stopsign_is_dropped_not_lost() {
    let mut cluster = Cluster::<()>::new(&PIDS);
    cluster.elect(1);
    cluster.replica(1).reconfigure(next_config(), metadata()).expect("reconfigure");
    // The follower has not heard of the StopSign yet when it appends.
    let late = cluster.append(3, 30);
    cluster.stabilize();
    cluster.tick(RECOVERY_TICKS);
    assert_sealed_after(&mut cluster, &[]);
    assert_eq!(cluster.outcomes.get(&late), Some(&ProposalOutcome::Dropped(DropReason::LogSealed)));
}

#[test]
fn a_partitioned_follower_learns_the_stopsign_after_healing() {
    let mut cluster = Cluster::<()>::new(&PIDS);
    cluster.elect(1);
    cluster.append(1, 1);
    cluster.stabilize();
    cluster.isolate(3);
    cluster.append(1, 2);
    let stranded = cluster.append(3, 30);
    cluster.stabilize();
    cluster.replica(1).reconfigure(next_config(), metadata()).expect("reconfigure");
    cluster.stabilize();
    assert_eq!(cluster.replicas[&1].is_reconfigured(), Some(stopsign()));
    assert_eq!(cluster.replicas[&3].is_reconfigured(), None);
    assert_eq!(cluster.decided(3), vec![1]);
    cluster.heal();
    cluster.tick(RECOVERY_TICKS);
    assert_sealed_after(&mut cluster, &[1, 2]);
    assert_eq!(cluster.outcomes.get(&stranded), Some(&ProposalOutcome::Dropped(DropReason::LogSealed)));
}

#[test]
fn an_accepted_stopsign_survives_a_leader_change() {
    let mut cluster = Cluster::<()>::new(&PIDS);
    cluster.elect(1);
    cluster.append(1, 1);
    cluster.stabilize();
    // Follower 2 accepts the StopSign but the leader never hears it: it is not decided.
    cluster.drop_messages(|m| m.to == 1 && is_kind(m, "Accepted"));
    cluster.drop_messages(|m| m.to == 3 && is_kind(m, "AcceptStopSign"));
    cluster.replica(1).reconfigure(next_config(), metadata()).expect("reconfigure");
    cluster.stabilize();
    assert_eq!(cluster.replicas[&2].read(1), Some(LogEntry::StopSign(stopsign(), false)));
    assert_eq!(cluster.replicas[&1].is_reconfigured(), None);
    cluster.clear_drop_rules();
    cluster.isolate(1);
    cluster.elect(2);
    cluster.heal();
    cluster.tick(RECOVERY_TICKS);
    assert_sealed_after(&mut cluster, &[1]);
}

#[test]
fn a_stopsign_forwarded_by_a_follower_reaches_a_new_leader() {
    let mut cluster = Cluster::<()>::new(&PIDS);
    cluster.elect(1);
    cluster.append(2, 1);
    cluster.stabilize();
    cluster.isolate(1);
    cluster.replica(3).reconfigure(next_config(), metadata()).expect("reconfigure");
    cluster.stabilize();
    cluster.elect(2);
    cluster.tick(RECOVERY_TICKS);
    cluster.heal();
    cluster.tick(RECOVERY_TICKS);
    assert_sealed_after(&mut cluster, &[1]);
}

/// Replica 2 is cut off while the StopSign is decided, then becomes leader and, while it still
/// prepares, is given an entry. The log it adopts is sealed by the decided StopSign, so the
/// entry can never be decided: its proposer must be told so (never left waiting forever).
#[test]

fn an_entry_buffered_by_a_preparing_leader_is_dropped_when_the_adopted_log_is_sealed() {
    let mut cluster = Cluster::<()>::new(&PIDS);
    cluster.elect(1);
    cluster.append(1, 1);
    cluster.stabilize();
    cluster.isolate(2);
    cluster.replica(1).reconfigure(next_config(), metadata()).expect("reconfigure");
    cluster.stabilize();
    assert_eq!(cluster.replicas[&1].is_reconfigured(), Some(stopsign()));
    cluster.elect(2);
    assert!(!cluster.replica(2).is_accepting_leader(), "replica 2 is cut off: still preparing");
    let buffered = cluster.append(2, 50);
    cluster.heal();
    cluster.tick(RECOVERY_TICKS);
    assert_sealed_after(&mut cluster, &[1]);
    assert_eq!(
        cluster.outcomes.get(&buffered),
        Some(&ProposalOutcome::Dropped(DropReason::LogSealed)),
        "{}",
        cluster.trace_tail(20)
    );
}
