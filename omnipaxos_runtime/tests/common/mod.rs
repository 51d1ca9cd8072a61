//! A test cluster over real loopback sockets. Ports come from binding port 0 before any node
//! starts; data directories are temporary; every node is shut down when the cluster is
//! dropped, also when a test fails. Waits poll a condition with a bounded deadline and fail
//! with what they saw; no sleep is used as synchronisation.

#![allow(dead_code)] // each test binary uses a different part

use std::{
    collections::BTreeMap,
    future::Future,
    net::{SocketAddr, TcpListener},
    sync::{Arc, Mutex},
    time::Duration,
};

use omnipaxos_core::util::{LogIndex, NodeId};
use omnipaxos_runtime::{
    AppendError, Decided, DecidedStream, LinkFilter, Node, NodeConfig, NodeHandle, OpenMode, PeerConfig,
    Status, StorageConfig,
};
use tempfile::TempDir;

/// Long enough for a loaded 2-core machine, short enough to fail fast.
pub const DEADLINE: Duration = Duration::from_secs(30);
/// Small segments: each node preallocates one, so tests write little to disk.
pub const SEGMENT_BYTES: u64 = 1 << 20;
pub const CLUSTER_ID: u64 = 42;

pub type Entry = u64;

/// Polls `condition` every few milliseconds until it holds or `DEADLINE` passes; on timeout
/// panics with `describe()`, which should say what was seen.
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool, describe: impl Fn() -> String) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !condition() {
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out waiting until {what}; saw: {}", describe());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One node of the test cluster and what its decided stream delivered so far.
pub struct TestNode {
    pub node: Option<Node<Entry>>,
    pub handle: NodeHandle<Entry>,
    pub delivered: Arc<Mutex<Vec<Decided<Entry>>>>,
    /// The stream, when the test reads it itself (`collect == false`).
    pub stream: Option<DecidedStream<Entry>>,
}

impl TestNode {
    pub fn delivered(&self) -> Vec<Decided<Entry>> {
        self.delivered.lock().unwrap().clone()
    }

    pub fn delivered_len(&self) -> usize {
        self.delivered.lock().unwrap().len()
    }
}

pub struct ClusterOptions {
    pub size: u64,
    pub persistent: bool,
    /// Spawn a task per node that collects its decided stream.
    pub collect: bool,
    pub tune: fn(&mut NodeConfig),
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions { size: 3, persistent: false, collect: true, tune: |_| {} }
    }
}

pub struct TestCluster {
    pub nodes: BTreeMap<NodeId, TestNode>,
    pub addrs: BTreeMap<NodeId, SocketAddr>,
    pub filter: LinkFilter,
    pub dirs: TempDir,
    options: ClusterOptions,
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        // Dropping a Node signals its shutdown; the replica threads close their storage.
        for node in self.nodes.values_mut() {
            node.node.take();
        }
    }
}

impl TestCluster {
    pub async fn start(options: ClusterOptions) -> TestCluster {
        let mut listeners = BTreeMap::new();
        let mut addrs = BTreeMap::new();
        for id in 1..=options.size {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
            addrs.insert(id, listener.local_addr().unwrap());
            listeners.insert(id, listener);
        }
        let mut cluster = TestCluster {
            nodes: BTreeMap::new(),
            addrs,
            filter: LinkFilter::new(),
            dirs: tempfile::tempdir().expect("temp dir"),
            options,
        };
        for (id, listener) in listeners {
            cluster.start_node(id, listener, true).await;
        }
        cluster
    }

    pub fn config(&self, id: NodeId, create: bool) -> NodeConfig {
        let peers = self
            .addrs
            .iter()
            .filter(|(peer, _)| **peer != id)
            .map(|(peer, addr)| PeerConfig { id: *peer, addr: *addr })
            .collect();
        let mut config = NodeConfig::new(id, CLUSTER_ID, peers);
        config.listen_addr = self.addrs[&id];
        if self.options.persistent {
            config.storage = StorageConfig::Persistent {
                data_dir: self.data_dir(id),
                mode: if create { OpenMode::Bootstrap } else { OpenMode::Restart },
                segment_size_bytes: SEGMENT_BYTES,
                type_tag: None,
            };
        }
        // Peers come back within a tenth of a second, and leaders are elected in 100 ms
        // rounds (the core's default), so tests run fast.
        config.backoff.max = Duration::from_millis(100);
        config.core.set_election_timeout_ticks(10);
        (self.options.tune)(&mut config);
        config
    }

    pub fn data_dir(&self, id: NodeId) -> std::path::PathBuf {
        self.dirs.path().join(format!("node{id}"))
    }

    async fn start_node(&mut self, id: NodeId, listener: TcpListener, create: bool) {
        let config = self.config(id, create);
        let (node, stream) = Node::<Entry>::builder(config)
            .listener(listener)
            .link_filter(self.filter.clone())
            .start()
            .await
            .unwrap_or_else(|error| panic!("node {id} starts: {error}"));
        let delivered = Arc::new(Mutex::new(Vec::new()));
        let stream = if self.options.collect {
            let sink = delivered.clone();
            let mut stream = stream;
            tokio::spawn(async move {
                while let Some(batch) = stream.recv_batch().await {
                    sink.lock().unwrap().extend(batch);
                }
            });
            None
        } else {
            Some(stream)
        };
        let handle = node.handle();
        self.nodes.insert(id, TestNode { node: Some(node), handle, delivered, stream });
    }

    /// Shuts node `id` down and waits until its storage is closed.
    pub async fn stop(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("node exists").node.take().expect("node runs");
        node.shutdown().await;
    }

    /// Starts node `id` again on its address and data directory.
    pub async fn restart(&mut self, id: NodeId) {
        let listener = TcpListener::bind(self.addrs[&id]).expect("rebind the node's address");
        self.start_node(id, listener, false).await;
    }

    pub async fn shutdown_all(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(node) = node.node.take() {
                node.shutdown().await;
            }
        }
    }

    pub fn handle(&self, id: NodeId) -> NodeHandle<Entry> {
        self.nodes[&id].handle.clone()
    }

    pub fn statuses(&self) -> Vec<Status> {
        self.nodes.values().filter(|node| node.node.is_some()).map(|node| node.handle.status()).collect()
    }

    pub fn describe(&self) -> String {
        self.statuses()
            .iter()
            .map(|s| {
                format!(
                    "node {} leader={:?} ready={} is_leader={} decided={} accepted={} delivered={} queues={:?} peers={:?}",
                    s.node_id,
                    s.leader,
                    s.leader_ready,
                    s.is_leader,
                    s.decided_idx,
                    s.accepted_idx,
                    s.delivered_idx,
                    s.queues,
                    s.peers.iter().map(|p| (p.id, p.link, p.dropped_frames, p.reconnects)).collect::<Vec<_>>()
                )
            })
            .collect::<Vec<_>>()
            .join("\n  ")
    }

    /// Waits until the running nodes agree on one ready leader, and the same leader with the
    /// same ballot held for three heartbeat rounds; returns it. (Ballot Leader Election may
    /// move leadership while nodes start one after the other; tests that pin the leader, for
    /// example to pause its links, need the one that stays.)
    pub async fn wait_for_leader(&self) -> NodeId {
        let agreed = || {
            let statuses = self.statuses();
            let leader = statuses.iter().find(|s| s.is_leader)?;
            let all_follow = statuses.iter().all(|s| s.leader == Some(leader.node_id) && s.leader_ready);
            all_follow.then_some((leader.node_id, leader.ballot))
        };
        let config = self.config(1, false);
        let rounds = config.tick_interval * config.core.ble.hb_delay() as u32 * 3;
        let mut held_since: Option<(
            (NodeId, omnipaxos_core::ballot_leader_election::Ballot),
            tokio::time::Instant,
        )> = None;
        let stable = || {
            let now = tokio::time::Instant::now();
            match (agreed(), held_since) {
                (Some(current), Some((seen, since))) if current == seen => {
                    now.duration_since(since) >= rounds
                }
                (current, _) => {
                    held_since = current.map(|current| (current, now));
                    false
                }
            }
        };
        wait_until("one ready leader that stays", stable, || self.describe()).await;
        agreed().expect("checked").0
    }

    /// Waits until every running node delivered at least `count` entries.
    pub async fn wait_delivered(&self, count: usize) {
        let enough = || self.nodes.values().filter(|n| n.node.is_some()).all(|n| n.delivered_len() >= count);
        let describe = || {
            let lens: Vec<_> = self.nodes.iter().map(|(id, n)| (*id, n.delivered_len())).collect();
            format!("delivered {lens:?}\n  {}", self.describe())
        };
        wait_until(&format!("every node delivered {count} entries"), enough, describe).await;
    }

    /// Asserts that every node's decided stream is the same sequence with indices 0, 1, ...
    pub fn assert_streams_identical(&self) {
        let streams: Vec<(NodeId, Vec<Decided<Entry>>)> =
            self.nodes.iter().map(|(id, node)| (*id, node.delivered())).collect();
        let (first_id, first) = &streams[0];
        for (index, decided) in first.iter().enumerate() {
            assert_eq!(decided.index, index as LogIndex, "node {first_id} delivered out of order");
        }
        for (id, stream) in &streams[1..] {
            assert_eq!(stream.len(), first.len(), "node {id} and node {first_id} delivered different counts");
            if let Some(at) = stream.iter().zip(first).position(|(a, b)| a != b) {
                panic!("node {id} and node {first_id} differ at {at}: {:?} vs {:?}", stream[at], first[at]);
            }
        }
    }
}

/// Appends `entry` through `handle`, retrying definite refusals (no leader yet, overload)
/// until the deadline. Indeterminate outcomes fail the test: these tests never expect one.
pub async fn append_retrying(handle: &NodeHandle<Entry>, entry: Entry) -> LogIndex {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match handle.append(entry).await {
            Ok(index) => return index,
            Err(error @ AppendError::Indeterminate(_)) => panic!("append of {entry} indeterminate: {error}"),
            Err(error) if tokio::time::Instant::now() >= deadline => {
                panic!("append of {entry} kept failing: {error}")
            }
            Err(AppendError::NotLeaderReachable | AppendError::Overloaded) => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(error) => panic!("append of {entry} failed: {error}"),
        }
    }
}

/// Runs `count` appends of `first..first + count` through `handle` with `concurrency`
/// proposers; returns every (entry, index).
pub async fn append_many(
    handle: &NodeHandle<Entry>,
    first: Entry,
    count: u64,
    concurrency: u64,
) -> Vec<(Entry, LogIndex)> {
    let next = Arc::new(std::sync::atomic::AtomicU64::new(first));
    let end = first + count;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let handle = handle.clone();
        let next = next.clone();
        tasks.spawn(async move {
            let mut done = Vec::new();
            loop {
                let entry = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if entry >= end {
                    return done;
                }
                done.push((entry, append_retrying(&handle, entry).await));
            }
        });
    }
    let mut all = Vec::new();
    while let Some(done) = tasks.join_next().await {
        all.extend(done.expect("proposer task"));
    }
    all
}

/// Runs `future` with a deadline, failing with `what`.
pub async fn within<F: Future>(what: &str, future: F) -> F::Output {
    tokio::time::timeout(DEADLINE, future).await.unwrap_or_else(|_| panic!("timed out: {what}"))
}
