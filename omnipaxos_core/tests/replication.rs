//! Normal-case replication on the deterministic test network.

mod common;

use common::Cluster;

#[test]
fn three_replicas_decide_entries_appended_at_the_leader() {
    let mut cluster = Cluster::<()>::new(&[1, 2, 3]);
    cluster.elect(1);
    for v in 1..=5 {
        cluster.append(1, v);
    }
    cluster.stabilize();
    for pid in [1, 2, 3] {
        assert_eq!(cluster.decided(pid), vec![1, 2, 3, 4, 5], "replica {pid}:\n{}", cluster.trace_tail(40));
    }
}
