//! What `append` answers when it cannot decide, and shutdown's guarantees.

mod common;

use std::net::TcpListener;

use omnipaxos_runtime::{AppendError, Node, NodeConfig, PeerConfig};

/// Addresses where nothing listens (bound, then closed).
fn dead_addresses(count: usize) -> Vec<std::net::SocketAddr> {
    let listeners: Vec<TcpListener> = (0..count).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    listeners.iter().map(|listener| listener.local_addr().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_quorum_appends_are_refused_definitely_and_shutdown_is_reported() {
    let peers = dead_addresses(2).into_iter().zip([2, 3]).map(|(addr, id)| PeerConfig { id, addr }).collect();
    let config = NodeConfig::new(1, common::CLUSTER_ID, peers);
    let (node, _decided) = Node::<u64>::start(config).await.expect("starts");
    let handle = node.handle();

    let refused = handle.append(7).await.expect_err("no leader without a quorum");
    assert_eq!(refused, AppendError::NotLeaderReachable);
    assert!(refused.is_definite(), "safe to retry");
    let status = handle.status();
    assert_eq!(status.leader, None);
    assert!(status.peers.iter().all(|peer| peer.link != omnipaxos_runtime::LinkState::Connected));

    node.shutdown().await;
    assert_eq!(handle.append(8).await, Err(AppendError::ShuttingDown));
    handle.shutdown().await; // idempotent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_configuration_is_refused_before_anything_starts() {
    let mut config = NodeConfig::new(1, common::CLUSTER_ID, Vec::new());
    config.limits.proposal_queue_limit = 0;
    let error = Node::<u64>::start(config).await.err().expect("refused");
    assert!(error.to_string().contains("proposal_queue_limit"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_data_directory_is_not_created_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = NodeConfig::new(1, common::CLUSTER_ID, Vec::new());
    config.storage = omnipaxos_runtime::StorageConfig::persistent(dir.path().join("lost"));
    let error = Node::<u64>::start(config).await.err().expect("refused");
    assert!(matches!(error, omnipaxos_runtime::StartError::Storage(_)), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_cluster_decides_durably() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = NodeConfig::new(1, common::CLUSTER_ID, Vec::new());
    config.storage = omnipaxos_runtime::StorageConfig::persistent_bootstrap(dir.path().join("node1"));
    let (node, mut decided) = Node::<u64>::start(config.clone()).await.expect("starts");
    let handle = node.handle();
    common::wait_until(
        "the node leads itself",
        || handle.status().is_leader,
        || format!("{:?}", handle.status()),
    )
    .await;
    for entry in 0..10 {
        assert_eq!(handle.append(entry * 3).await, Ok(entry));
    }
    for entry in 0..10 {
        let next = decided.recv().await.expect("decided");
        assert_eq!((next.index, next.entry), (entry, entry * 3));
    }
    node.shutdown().await;
    assert!(decided.recv().await.is_none(), "the stream ends after shutdown");

    // Restarted over the same directory, it delivers the decided log again.
    config.storage = omnipaxos_runtime::StorageConfig::persistent(dir.path().join("node1"));
    let (node, mut decided) = Node::<u64>::start(config).await.expect("restarts");
    for entry in 0..10 {
        assert_eq!(decided.recv().await.map(|d| d.entry), Some(entry * 3));
    }
    node.shutdown().await;
}
