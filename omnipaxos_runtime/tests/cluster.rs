//! A 3-node cluster over loopback TCP with durable storage: election, replication, restart.

mod common;

use std::collections::BTreeSet;

use common::{append_many, ClusterOptions, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_elect_replicate_10000_entries_and_deliver_identical_streams() {
    let mut cluster =
        TestCluster::start(ClusterOptions { persistent: true, ..ClusterOptions::default() }).await;
    let leader = cluster.wait_for_leader().await;
    let results = append_many(&cluster.handle(leader), 0, 10_000, 64).await;

    let indices: BTreeSet<u64> = results.iter().map(|(_, index)| *index).collect();
    assert_eq!(indices.len(), 10_000, "every append got its own index");
    cluster.wait_delivered(10_000).await;
    cluster.assert_streams_identical();
    let stream = cluster.nodes[&leader].delivered();
    for (entry, index) in &results {
        assert_eq!(stream[*index as usize].entry, *entry, "append of {entry} resolved to index {index}");
    }
    let status = cluster.handle(leader).status();
    assert!(status.flushes > 0, "persistent storage flushed: {status:?}");
    cluster.shutdown_all().await;
}
