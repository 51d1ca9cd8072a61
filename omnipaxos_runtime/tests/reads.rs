//! Linearizable read barriers through the core's read index, over loopback TCP.

mod common;

use std::net::TcpListener;

use common::{append_retrying, wait_until, ClusterOptions, TestCluster};
use omnipaxos_runtime::{Node, NodeConfig, PeerConfig, ReadConsistency, ReadError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_barrier_at_any_node_covers_every_append_completed_before_it() {
    let mut cluster = TestCluster::start(ClusterOptions::default()).await;
    let leader = cluster.wait_for_leader().await;
    let nodes: Vec<u64> = cluster.nodes.keys().copied().collect();
    for round in 0..30u64 {
        // An append completes at one node; a barrier then starts at another.
        let writer = nodes[round as usize % nodes.len()];
        let reader = nodes[(round as usize + 1) % nodes.len()];
        let index = append_retrying(&cluster.handle(writer), round).await;
        // Both consistencies (the same without a read lease): the choice reaches the core.
        let consistency = match round % 2 {
            0 => ReadConsistency::Confirmed,
            _ => ReadConsistency::LeaseIfHeld,
        };
        let reader_handle = cluster.handle(reader);
        let read_idx = common::within("read barrier", reader_handle.read_barrier_with(consistency))
            .await
            .unwrap_or_else(|error| panic!("read at node {reader} failed: {error}"));
        assert!(read_idx > index, "read at {reader} got {read_idx}, but {round} was decided at {index}");
        // The barrier is answered once the stream was handed every entry below `read_idx`;
        // `status()` is published at the end of the replica's round, so it may trail by a round.
        let handle = cluster.handle(reader);
        wait_until(
            "the reader's status shows the delivered entries",
            || handle.status().delivered_idx >= read_idx,
            || format!("{:?}", handle.status()),
        )
        .await;
        // What the barrier promises: the reader's state machine, applied up to read_idx,
        // holds the completed append.
        let node = &cluster.nodes[&reader];
        wait_until(
            "the reader applied the read index",
            || node.delivered_len() as u64 >= read_idx,
            || format!("delivered {}", node.delivered_len()),
        )
        .await;
        assert_eq!(node.delivered()[index as usize].entry, round);
    }
    assert_eq!(cluster.wait_for_leader().await, leader, "no leader change in a quiet cluster");
    let status = cluster.handle(leader).status();
    assert_eq!(status.queues.pending_reads, 0, "{status:?}");
    cluster.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_barrier_without_a_quorum_times_out_and_shutdown_refuses_reads() {
    let peers = (0..2)
        .map(|i| {
            let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap(); // closed again
            PeerConfig { id: i + 2, addr }
        })
        .collect();
    let mut config = NodeConfig::new(1, common::CLUSTER_ID, peers);
    config.core.sequence_paxos.set_read_timeout_ticks(5);
    let (node, _decided) = Node::<u64>::start(config).await.expect("starts");
    let handle = node.handle();
    let result = common::within("read barrier", handle.read_barrier()).await;
    assert_eq!(result, Err(ReadError::TimedOut), "no leader can confirm a read index");
    node.shutdown().await;
    assert_eq!(handle.read_barrier().await, Err(ReadError::ShuttingDown));
}
