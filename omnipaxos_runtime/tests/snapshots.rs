//! Snapshots through the runtime: a node compacts its delivered prefix every
//! `snapshot_interval_entries`, a node that fell behind the compacted prefix catches up from a
//! peer's snapshot (delivered as a `DecidedEvent::Snapshot`), a restart over a compacted log
//! delivers the snapshot first; and a data directory that may have lost acknowledged state
//! starts only as a learner, when asked to.

use std::{
    collections::BTreeMap,
    net::{SocketAddr, TcpListener},
    sync::{Arc, Mutex},
    time::Duration,
};

use omnipaxos_core::{storage::Snapshot, util::NodeId};
use omnipaxos_runtime::{
    AppendError, DecidedEvent, LostStoragePolicy, Node, NodeConfig, NodeHandle, OpenMode, PeerConfig,
    StartError, StorageConfig,
};
use serde::{Deserialize, Serialize};

const DEADLINE: Duration = Duration::from_secs(30);
const CLUSTER_ID: u64 = 77;

/// The state machine of these tests: how many entries were applied and their sum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Sum {
    count: u64,
    sum: u64,
}

impl Snapshot<u64> for Sum {
    fn create(entries: &[u64]) -> Self {
        Sum { count: entries.len() as u64, sum: entries.iter().sum() }
    }
    fn merge(&mut self, delta: Self) {
        self.count += delta.count;
        self.sum += delta.sum;
    }
    fn use_snapshots() -> bool {
        true
    }
}

/// What a node's decided stream built, and how many snapshots it received.
#[derive(Default)]
struct Applied {
    state: Sum,
    snapshots: u64,
    /// Set if an entry arrived out of order (a test failure).
    gap: Option<String>,
}

/// A running node and what its stream applied.
type RunningNode = (Node<u64, Sum>, Arc<Mutex<Applied>>);

struct Cluster {
    addrs: BTreeMap<NodeId, SocketAddr>,
    dir: tempfile::TempDir,
    nodes: BTreeMap<NodeId, RunningNode>,
    interval: Option<u64>,
}

impl Cluster {
    fn new(size: u64, interval: Option<u64>) -> Cluster {
        let addrs = (1..=size)
            .map(|id| {
                let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
                (id, listener.local_addr().unwrap())
            })
            .collect();
        Cluster { addrs, dir: tempfile::tempdir().unwrap(), nodes: BTreeMap::new(), interval }
    }

    fn config(&self, id: NodeId, mode: OpenMode) -> NodeConfig {
        let peers = self
            .addrs
            .iter()
            .filter(|(peer, _)| **peer != id)
            .map(|(peer, addr)| PeerConfig { id: *peer, addr: *addr })
            .collect();
        let mut config = NodeConfig::new(id, CLUSTER_ID, peers);
        config.listen_addr = self.addrs[&id];
        config.storage = StorageConfig::Persistent {
            data_dir: self.dir.path().join(format!("node{id}")),
            mode,
            segment_size_bytes: 1 << 20,
            type_tag: None,
        };
        config.backoff.max = Duration::from_millis(100);
        config.core.set_election_timeout_ticks(10);
        config.snapshot_interval_entries = self.interval;
        config
    }

    async fn start(&mut self, config: NodeConfig) -> Result<(), StartError> {
        let id = config.node_id;
        let (node, mut stream) = Node::<u64, Sum>::start(config).await?;
        let applied = Arc::new(Mutex::new(Applied::default()));
        let sink = applied.clone();
        tokio::spawn(async move {
            while let Some(event) = stream.next_event().await {
                let mut applied = sink.lock().unwrap();
                match event {
                    DecidedEvent::Snapshot { snapshot, end } => {
                        assert_eq!(snapshot.count, end, "a snapshot covers exactly [0, end)");
                        applied.state = snapshot;
                        applied.snapshots += 1;
                    }
                    DecidedEvent::Entries(entries) => {
                        for decided in entries {
                            if decided.index != applied.state.count {
                                applied.gap = Some(format!(
                                    "entry {} after {} applied",
                                    decided.index, applied.state.count
                                ));
                            }
                            applied.state.count += 1;
                            applied.state.sum += decided.entry;
                        }
                    }
                }
            }
        });
        self.nodes.insert(id, (node, applied));
        Ok(())
    }

    async fn start_all(&mut self) {
        for id in self.addrs.keys().copied().collect::<Vec<_>>() {
            let config = self.config(id, OpenMode::Bootstrap);
            self.start(config).await.expect("node starts");
        }
    }

    fn handle(&self, id: NodeId) -> NodeHandle<u64, Sum> {
        self.nodes[&id].0.handle()
    }

    fn applied(&self, id: NodeId) -> (Sum, u64, Option<String>) {
        let applied = self.nodes[&id].1.lock().unwrap();
        (applied.state, applied.snapshots, applied.gap.clone())
    }

    async fn stop(&mut self, id: NodeId) {
        let (node, _) = self.nodes.remove(&id).expect("node runs");
        node.shutdown().await;
    }

    async fn leader(&self) -> NodeId {
        let found = || {
            let statuses: Vec<_> = self.nodes.values().map(|(node, _)| node.handle().status()).collect();
            let leader = statuses.iter().find(|s| s.is_leader)?;
            statuses
                .iter()
                .all(|s| s.leader == Some(leader.node_id) && s.leader_ready)
                .then_some(leader.node_id)
        };
        wait_until("a ready leader", || found().is_some()).await;
        found().expect("checked")
    }
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Appends `values` one by one through `handle`, retrying definite refusals.
async fn append_all(handle: &NodeHandle<u64, Sum>, values: std::ops::Range<u64>) {
    for value in values {
        loop {
            match handle.append(value).await {
                Ok(_) => break,
                Err(AppendError::NotLeaderReachable | AppendError::Overloaded) => {
                    tokio::time::sleep(Duration::from_millis(5)).await
                }
                Err(error) => panic!("append of {value}: {error}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_the_compacted_prefix_catches_up_from_a_snapshot() {
    let mut cluster = Cluster::new(3, Some(100));
    cluster.start_all().await;
    let leader = cluster.leader().await;
    let lagging = *cluster.addrs.keys().find(|id| **id != leader).unwrap();
    append_all(&cluster.handle(leader), 0..50).await;
    cluster.stop(lagging).await;
    append_all(&cluster.handle(leader), 50..1000).await;
    let expected = Sum { count: 1000, sum: (0..1000).sum() };
    wait_until("the leader compacted", || cluster.handle(leader).status().compacted_idx >= 900).await;

    let config = cluster.config(lagging, OpenMode::Restart);
    cluster.start(config).await.expect("restart");
    wait_until("the lagging node applied everything", || cluster.applied(lagging).0 == expected).await;
    let (_, snapshots, gap) = cluster.applied(lagging);
    assert_eq!(gap, None);
    assert!(snapshots >= 1, "the entries it lacked were compacted: it got a snapshot");
    for id in cluster.addrs.keys() {
        wait_until("every node applied everything", || cluster.applied(*id).0 == expected).await;
    }

    // A restart over a compacted log delivers the snapshot first, then the rest of the log.
    cluster.stop(leader).await;
    let config = cluster.config(leader, OpenMode::Restart);
    cluster.start(config).await.expect("restart over a compacted log");
    wait_until("the restarted node rebuilt its state", || cluster.applied(leader).0 == expected).await;
    let (_, snapshots, gap) = cluster.applied(leader);
    assert_eq!((snapshots, gap), (1, None), "the snapshot came first, then entries in order");
    let ids: Vec<NodeId> = cluster.nodes.keys().copied().collect();
    for id in ids {
        cluster.stop(id).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_data_directory_starts_only_as_a_learner() {
    let mut cluster = Cluster::new(3, None);
    cluster.start_all().await;
    let leader = cluster.leader().await;
    append_all(&cluster.handle(leader), 0..100).await;
    let wiped = *cluster.addrs.keys().find(|id| **id != leader).unwrap();
    cluster.stop(wiped).await;
    std::fs::remove_dir_all(cluster.dir.path().join(format!("node{wiped}"))).unwrap();

    // Replace records a possible loss: refused by default.
    let config = cluster.config(wiped, OpenMode::Replace);
    match cluster.start(config).await {
        Err(StartError::AcknowledgedStateMayBeLost { .. }) => {}
        other => panic!("a replaced log must not start as a voter: {:?}", other.map(|_| ())),
    }
    // It stays refused on a plain restart too (the loss is recorded in the new log).
    let config = cluster.config(wiped, OpenMode::Restart);
    assert!(matches!(cluster.start(config).await, Err(StartError::AcknowledgedStateMayBeLost { .. })));

    let mut config = cluster.config(wiped, OpenMode::Restart);
    config.lost_storage = LostStoragePolicy::StartAsLearner;
    cluster.start(config).await.expect("starts as a learner when asked");
    assert!(cluster.handle(wiped).status().is_learner);
    let expected = Sum { count: 100, sum: (0..100).sum() };
    wait_until("the learner learned the decided log", || cluster.applied(wiped).0 == expected).await;
    assert_eq!(cluster.handle(wiped).append(1).await, Err(AppendError::Learner));

    // Once a learner, it restarts as one without being asked again.
    cluster.stop(wiped).await;
    let config = cluster.config(wiped, OpenMode::Restart);
    cluster.start(config).await.expect("a learner restarts as a learner");
    assert!(cluster.handle(wiped).status().is_learner);
    let ids: Vec<NodeId> = cluster.nodes.keys().copied().collect();
    for id in ids {
        cluster.stop(id).await;
    }
}
