//! Faults on a real 3-process cluster: SIGKILL of the leader under load, a node restarted
//! behind the compacted prefix, a node cut off from the quorum, a node that lost its data.

mod common;

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use common::{fast_settings, TestCluster};
use omnipaxos_kv::{
    api::{Consistency, ErrorCode},
    client::{Client, ClientError},
};

/// Acknowledged writes: key → value.
type Acked = Arc<Mutex<BTreeMap<String, String>>>;

/// Writers putting unique keys through every endpoint; returns the acknowledged writes.
fn spawn_writers(
    test: &TestCluster,
    count: usize,
    stop: Arc<AtomicBool>,
) -> (Vec<tokio::task::JoinHandle<()>>, Acked) {
    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let tasks = (0..count)
        .map(|writer| {
            let mut client = test.client().prefer(writer);
            let (stop, acked) = (stop.clone(), acked.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let (key, value) = (format!("w{writer}/{n:06}"), format!("{writer}-{n}"));
                    if client.put(&key, &value).await.is_ok() {
                        acked.lock().unwrap().insert(key, value);
                    }
                }
            })
        })
        .collect();
    (tasks, acked)
}

/// Every acknowledged write is on every node with its value.
async fn assert_all_present(test: &TestCluster, acked: &BTreeMap<String, String>) {
    for id in test.cluster.ids() {
        let kvs = test.client_of(id).list_all("w", Consistency::Linearizable).await.expect("list");
        let map: BTreeMap<String, String> = kvs.into_iter().map(|kv| (kv.key, kv.value)).collect();
        for (key, value) in acked {
            assert_eq!(map.get(key), Some(value), "node {id}: acknowledged write {key}={value}");
        }
    }
}

async fn wait_applied(test: &TestCluster, writes: usize, acked: &Mutex<BTreeMap<String, String>>) {
    let deadline = tokio::time::Instant::now() + common::DEADLINE;
    while acked.lock().unwrap().len() < writes {
        assert!(tokio::time::Instant::now() < deadline, "writes stalled\n{}", test.logs());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_under_load_loses_no_acknowledged_write() {
    let mut test = TestCluster::start(3, fast_settings(&["snapshot_interval_entries = 200"])).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (writers, acked) = spawn_writers(&test, 4, stop.clone());
    wait_applied(&test, 100, &acked).await;
    let leader = test.leader().await;
    test.cluster.kill(leader).await;
    let before = acked.lock().unwrap().len();
    wait_applied(&test, before + 300, &acked).await; // the survivors elected a leader and go on
    test.cluster.start(leader, false, &[]).expect("restart");
    let target = test.status(test.leader().await).await.expect("status").applied_index;
    test.wait_status(leader, "the restarted node caught up", |s| s.applied_index >= target).await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.await.expect("writer");
    }
    let acked = acked.lock().unwrap().clone();
    assert_all_present(&test, &acked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_the_compacted_prefix_catches_up_from_a_snapshot_and_restarts_from_it() {
    let mut test = TestCluster::start(3, fast_settings(&["snapshot_interval_entries = 50"])).await;
    let leader = test.leader().await;
    let follower = test.cluster.ids().into_iter().find(|id| *id != leader).expect("a follower");
    let mut client = test.client_of(leader);
    client.put("first", "1").await.expect("put");
    assert!(test.cluster.stop(follower).await.is_some_and(|status| status.success()), "graceful stop");
    let mut acked = BTreeMap::new();
    for i in 0..300 {
        let (key, value) = (format!("w/{i:04}"), format!("v{i}"));
        client.put(&key, &value).await.expect("put with two of three nodes");
        acked.insert(key, value);
    }
    let compacted = test.wait_status(leader, "the leader compacted", |s| s.compacted_index >= 250).await;
    test.cluster.start(follower, false, &[]).expect("restart");
    // It lacked entries the others had compacted: it catches up by installing a snapshot
    // (its own compacted index jumps past the two entries it had).
    test.wait_status(follower, "the follower caught up from a snapshot", |s| {
        s.applied_index >= compacted.applied_index && s.compacted_index > 2
    })
    .await;
    // Its own state now answers stale reads with every value.
    let stale = test.client_of(follower).list_all("w/", Consistency::Stale).await.expect("stale list");
    assert_eq!(stale.len(), 300);
    // Restarting every node: each recovers from its snapshot plus its log.
    for id in test.cluster.ids() {
        test.cluster.stop(id).await;
    }
    for id in test.cluster.ids() {
        test.cluster.start(id, false, &[]).expect("restart");
    }
    test.wait_for_leader().await;
    assert_all_present(&test, &acked).await;
    let first = test.client().get("first", Consistency::Linearizable).await.expect("get");
    assert_eq!(first.kv.value, "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_the_quorum_answers_503_with_a_json_body() {
    let mut test = TestCluster::start(3, fast_settings(&["request_timeout_ms = 1500"])).await;
    test.client().put("k", "v").await.expect("put");
    let leader = test.leader().await;
    let alone = test.cluster.ids().into_iter().find(|id| *id != leader).expect("a follower");
    for id in test.cluster.ids() {
        if id != alone {
            test.cluster.kill(id).await;
        }
    }
    let mut client = Client::new(&[test.cluster.endpoint(alone)])
        .expect("client")
        .with_timeouts(Duration::from_secs(3), Duration::from_secs(3));
    match client.put("k", "w").await {
        Err(ClientError::UnknownOutcome(_)) => {}
        Err(ClientError::Api { status: 503, body }) => {
            assert!(matches!(body.code, ErrorCode::Unavailable | ErrorCode::UnknownOutcome), "{body:?}")
        }
        other => panic!("a write without a quorum must be unavailable or of unknown outcome: {other:?}"),
    }
    match client.get("k", Consistency::Linearizable).await {
        Err(ClientError::Api { status: 503, body }) => {
            assert_eq!(body.code, ErrorCode::Unavailable, "{body:?}")
        }
        other => panic!("a linearizable read without a quorum must be unavailable: {other:?}"),
    }
    let stale = client.get("k", Consistency::Stale).await.expect("a stale read is served locally");
    assert_eq!(stale.kv.value, "v");
    // `status` shows the peers as unreachable while the node keeps retrying them.
    let status =
        test.wait_status(alone, "peers unreachable", |s| s.peers.iter().all(|p| p.link != "connected")).await;
    assert!(!status.leader_ready || status.leader.is_none(), "{status:?}");
    let raw = reqwest::Client::new()
        .put(test.url(alone, "/v1/kv/k"))
        .body(r#"{"value": "x"}"#)
        .send()
        .await
        .expect("answer");
    assert_eq!(raw.status().as_u16(), 503);
    let body: serde_json::Value = raw.json().await.expect("a JSON body");
    assert!(matches!(body["code"].as_str(), Some("unavailable" | "unknown_outcome")), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_lost_its_data_rejoins_only_as_a_learner_when_asked() {
    let mut test = TestCluster::start(3, fast_settings(&[])).await;
    let mut client = test.client();
    for i in 0..20 {
        client.put(&format!("w/{i}"), "v").await.expect("put");
    }
    let leader = test.leader().await;
    let wiped = test.cluster.ids().into_iter().find(|id| *id != leader).expect("a follower");
    test.cluster.stop(wiped).await;
    std::fs::remove_dir_all(test.cluster.data_dir(wiped)).expect("wipe");

    // Without the flag it refuses to start, and says why.
    test.cluster.start(wiped, false, &[]).expect("spawn");
    let deadline = tokio::time::Instant::now() + common::DEADLINE;
    let exited = loop {
        if let Some(exited) = test.cluster.reap_exited().into_iter().next() {
            break exited;
        }
        assert!(tokio::time::Instant::now() < deadline, "the wiped node must refuse to start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!((exited.0, exited.1.code()), (wiped, Some(3)));
    assert!(
        test.cluster.log_tail(wiped, 5).contains("--replace-lost-storage"),
        "{}",
        test.cluster.log_tail(wiped, 5)
    );

    test.cluster.start(wiped, false, &["--replace-lost-storage"]).expect("spawn");
    let status = test.wait_status(wiped, "the learner learned the log", |s| s.applied_index >= 20).await;
    assert!(status.is_learner, "{status:?}");
    let read =
        test.client_of(wiped).get("w/7", Consistency::Linearizable).await.expect("a learner serves reads");
    assert_eq!(read.kv.value, "v");
    let mut only_learner =
        test.client_of(wiped).with_timeouts(Duration::from_secs(1), Duration::from_secs(1));
    match only_learner.put("x", "y").await {
        Err(ClientError::Api { body, .. }) => assert_eq!(body.code, ErrorCode::Learner),
        other => panic!("a learner takes no writes: {other:?}"),
    }
    // A client with every endpoint goes on past the learner.
    test.client().prefer(wiped as usize - 1).put("x", "y").await.expect("write elsewhere");
}

/// The fault harness's mutation (feature `test-switches`): with `--unsafe-stale-reads` a node
/// cut off from the quorum answers "linearizable" reads from its own state instead of 503. The
/// harness (issue 14) must report the stale reads this allows as linearizability violations.
#[cfg(feature = "test-switches")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_stale_reads_serve_reads_without_a_quorum() {
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = fast_settings(&["request_timeout_ms = 1000"]);
    let (cluster, new) = omnipaxos_kv::local::LocalCluster::open(&common::opkv(), dir.path(), 3, &settings)
        .expect("cluster dir");
    let mut test = TestCluster { cluster, dir };
    for id in test.cluster.ids() {
        test.cluster.start(id, new, &["--unsafe-stale-reads"]).expect("spawn");
    }
    test.wait_for_leader().await;
    test.client().put("k", "v1").await.expect("put");
    let leader = test.leader().await;
    let alone = test.cluster.ids().into_iter().find(|id| *id != leader).expect("a follower");
    test.wait_status(alone, "the follower applied the put", |s| s.applied_index >= 1).await;
    for id in test.cluster.ids() {
        if id != alone {
            test.cluster.kill(id).await;
        }
    }
    let read =
        test.client_of(alone).get("k", Consistency::Linearizable).await.expect("served without a quorum");
    assert_eq!(read.kv.value, "v1");
}
