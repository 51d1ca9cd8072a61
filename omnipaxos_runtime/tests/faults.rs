//! Faults over real sockets: a partial partition, a peer queue that overflows, bad frames.

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
};

use common::{append_many, append_retrying, wait_until, ClusterOptions, TestCluster};
use omnipaxos_core::util::NodeId;
use omnipaxos_runtime::transport::frame::{encode_frame, FrameKind, Header, Progress, LENGTH_BYTES};

fn followers(cluster: &TestCluster, leader: NodeId) -> Vec<NodeId> {
    cluster.nodes.keys().copied().filter(|id| *id != leader).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_partition_does_not_stop_the_cluster_from_deciding() {
    let mut cluster = TestCluster::start(ClusterOptions::default()).await;
    let leader = cluster.wait_for_leader().await;
    append_many(&cluster.handle(leader), 0, 200, 8).await;
    cluster.wait_delivered(200).await;

    // The leader and one follower lose each other; the other follower still reaches both.
    let [cut, bridge] = followers(&cluster, leader)[..] else { panic!("two followers") };
    cluster.filter.block_both(leader, cut);
    // Proposals go through the bridge node, which forwards them to whichever node leads.
    append_many(&cluster.handle(bridge), 200, 500, 8).await;
    let quorum_delivered = || cluster.nodes.values().filter(|node| node.delivered_len() >= 700).count() >= 2;
    wait_until("a quorum delivered 700 entries", quorum_delivered, || cluster.describe()).await;
    let dropped = cluster.handle(leader).status().peer(cut).expect("peer").dropped_frames;
    assert!(dropped > 0, "the filter dropped traffic to node {cut}");

    cluster.filter.heal();
    cluster.wait_delivered(700).await;
    cluster.assert_streams_identical();
    cluster.shutdown_all().await;
}

const QUEUE_LIMIT_BYTES: usize = 4096;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_peer_queue_drops_rounds_and_the_runtime_resynchronises_the_peer() {
    let options = ClusterOptions {
        tune: |config| config.limits.peer_queue_limit_bytes = QUEUE_LIMIT_BYTES,
        ..ClusterOptions::default()
    };
    dropped_rounds_are_recovered(options).await;
}

/// Without the runtime's resync hint, only the protocol's own mechanisms (sequence gaps,
/// resend timeouts) repair the loss: dropping is safe because the protocol resends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_peer_queue_drops_rounds_and_the_protocol_alone_resends_them() {
    let options = ClusterOptions {
        tune: |config| {
            config.limits.peer_queue_limit_bytes = QUEUE_LIMIT_BYTES;
            config.resync_after_drop = false;
        },
        ..ClusterOptions::default()
    };
    dropped_rounds_are_recovered(options).await;
}

async fn dropped_rounds_are_recovered(options: ClusterOptions) {
    let mut cluster = TestCluster::start(options).await;
    let leader = cluster.wait_for_leader().await;
    let stalled = followers(&cluster, leader)[0];

    // The leader's writer to one follower stops writing: its queue fills, then rounds drop.
    cluster.filter.pause(leader, stalled);
    append_many(&cluster.handle(leader), 0, 2000, 32).await;
    let link = cluster.handle(leader).status().peer(stalled).expect("peer").clone();
    assert!(link.dropped_frames > 0, "rounds were dropped at the full queue: {link:?}");
    // A round is queued whole while less than the limit is queued: at most one round more.
    assert!(link.queued_bytes < QUEUE_LIMIT_BYTES + 64 * 1024, "the queue stayed bounded: {link:?}");

    // Nothing in the runtime keeps dropped frames: once the link writes again, the stalled
    // follower is brought up to date and delivers the same stream as the others.
    cluster.filter.resume(leader, stalled);
    cluster.wait_delivered(2000).await;
    cluster.assert_streams_identical();
    cluster.shutdown_all().await;
}

/// Writes `bytes` on a fresh connection to `addr` and waits until the node closes it.
async fn send_and_expect_close(addr: std::net::SocketAddr, bytes: Vec<u8>) {
    tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(common::DEADLINE)).unwrap();
        stream.write_all(&bytes).expect("write");
        let mut buffer = [0u8; 16];
        match stream.read(&mut buffer) {
            Ok(0) => {}
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("expected the node to close the connection, got {other:?}"),
        }
    })
    .await
    .expect("probe task");
}

fn frame(kind: FrameKind, cluster_id: u64, sender: NodeId, receiver: NodeId, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(&mut out, &Header { kind, cluster_id, sender, receiver }, &payload, 1 << 20).unwrap();
    out
}

/// An incoming connection that brings nothing for `idle_timeout`, or stops in the middle of a
/// frame, is closed (a peer dials a new one after a partition; the dead one must not hold a
/// connection slot), while the peers' connections, which carry heartbeats every round, stay up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_incoming_connection_is_closed_and_the_peers_stay_connected() {
    let mut cluster = TestCluster::start(ClusterOptions {
        tune: |config| config.backoff.idle_timeout = std::time::Duration::from_millis(500),
        ..ClusterOptions::default()
    })
    .await;
    let leader = cluster.wait_for_leader().await;
    let reconnects = |cluster: &TestCluster| -> u64 {
        cluster.statuses().iter().flat_map(|s| s.peers.iter().map(|p| p.reconnects)).sum()
    };
    let before = reconnects(&cluster);
    send_and_expect_close(cluster.addrs[&leader], Vec::new()).await;
    // Cut in the middle of a frame: its length and half its header, then nothing.
    let peer = followers(&cluster, leader)[0];
    let whole = frame(FrameKind::Progress, common::CLUSTER_ID, peer, leader, &[]);
    send_and_expect_close(cluster.addrs[&leader], whole[..LENGTH_BYTES + 4].to_vec()).await;
    append_retrying(&cluster.handle(leader), 7).await;
    assert_eq!(reconnects(&cluster), before, "no peer connection was closed for being idle");
    cluster.shutdown_all().await;
}

/// A newer connection from a peer closes the older one (after a partition the peer dials
/// again and the old connection is dead; it must not wait for `idle_timeout`). A connection
/// that claims to be a follower supersedes that follower's own connection; the follower dials
/// again, and its new connection supersedes the impostor's, which the node closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_connection_from_a_peer_closes_the_older_one() {
    let mut cluster = TestCluster::start(ClusterOptions {
        tune: |config| config.backoff.idle_timeout = std::time::Duration::from_secs(3600),
        ..ClusterOptions::default()
    })
    .await;
    let leader = cluster.wait_for_leader().await;
    let peer = followers(&cluster, leader)[0];
    let reconnects = |cluster: &TestCluster| -> u64 {
        let status = cluster.handle(peer).status();
        status.peers.iter().filter(|p| p.id == leader).map(|p| p.reconnects).sum()
    };
    let before = reconnects(&cluster);
    let header =
        Header { kind: FrameKind::Progress, cluster_id: common::CLUSTER_ID, sender: peer, receiver: leader };
    let mut progress = Vec::new();
    encode_frame(&mut progress, &header, &Progress { decided_idx: 0, accepted_idx: 0 }, 1 << 20).unwrap();
    send_and_expect_close(cluster.addrs[&leader], progress).await;
    assert!(
        reconnects(&cluster) > before,
        "the follower's superseded connection was closed and dialled again"
    );
    append_retrying(&cluster.handle(leader), 9).await;
    cluster.shutdown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_are_rejected_and_the_node_keeps_serving() {
    let mut cluster = TestCluster::start(ClusterOptions::default()).await;
    let leader = cluster.wait_for_leader().await;
    let target = leader;
    let addr = cluster.addrs[&target];
    let peer = followers(&cluster, leader)[0];
    let cluster_id = common::CLUSTER_ID;

    let mut garbage: Vec<u8> = 100u32.to_le_bytes().to_vec();
    garbage.extend((0..100u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8));
    let oversized = (u32::MAX - 1).to_le_bytes().to_vec();
    let wrong_cluster = frame(FrameKind::Progress, cluster_id + 1, peer, target, &[]);
    let unknown_sender = frame(FrameKind::Progress, cluster_id, 77, target, &[]);
    let wrong_receiver = frame(FrameKind::Progress, cluster_id, peer, 99, &[]);
    let mut bad_version = frame(FrameKind::Progress, cluster_id, peer, target, &[]);
    bad_version[8] = 2;
    // A valid header from a real peer with a payload that is not a message.
    let undecodable = frame(FrameKind::CoreMessage, cluster_id, peer, target, &[0xFF; 40]);
    let cases = [garbage, oversized, wrong_cluster, unknown_sender, wrong_receiver, bad_version, undecodable];
    let count = cases.len() as u64;
    for bytes in cases {
        send_and_expect_close(addr, bytes).await;
    }
    let handle = cluster.handle(target);
    wait_until(
        "every bad frame is counted",
        || handle.status().rejected_frames == count,
        || format!("{:?}", handle.status().rejected_frames),
    )
    .await;

    // Nothing reached the replica: it still leads and decides.
    assert_eq!(cluster.wait_for_leader().await, leader);
    append_many(&handle, 0, 100, 4).await;
    cluster.wait_delivered(100).await;
    cluster.assert_streams_identical();
    cluster.shutdown_all().await;
}
