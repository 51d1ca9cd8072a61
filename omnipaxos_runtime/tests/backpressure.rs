//! A consumer that stops reading its decided stream: proposals stall, every queue stays
//! within its limit, and nothing is lost once the consumer reads again.

mod common;

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use common::{wait_until, ClusterOptions, TestCluster};
use tokio::task::JoinSet;

const DECIDED_BATCHES: usize = 2;
const BATCH_ENTRIES: usize = 16;
const UNDELIVERED_LIMIT: u64 = 64;
const PROPOSAL_QUEUE: usize = 32;
const CORE_BUFFER: usize = 64;
const APPENDS: u64 = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_stops_reading_stalls_proposals_within_the_queue_limits() {
    let options = ClusterOptions {
        collect: false,
        tune: |config| {
            config.limits.decided_queue_limit_batches = DECIDED_BATCHES;
            config.limits.decided_batch_limit_entries = BATCH_ENTRIES;
            config.limits.undelivered_limit_entries = UNDELIVERED_LIMIT;
            config.limits.proposal_queue_limit = PROPOSAL_QUEUE;
            config.core.sequence_paxos.set_buffer_size(CORE_BUFFER);
            config.append_timeout = Duration::from_secs(120);
        },
        ..ClusterOptions::default()
    };
    let mut cluster = TestCluster::start(options).await;
    let leader = cluster.wait_for_leader().await;
    let handle = cluster.handle(leader);
    let completed = Arc::new(AtomicU64::new(0));
    let mut appends = JoinSet::new();
    for entry in 0..APPENDS {
        let (handle, completed) = (handle.clone(), completed.clone());
        appends.spawn(async move {
            let result = handle.append(entry).await;
            completed.fetch_add(1, Ordering::Relaxed);
            result
        });
    }

    // Nobody reads any decided stream. The leader stops taking appends once
    // UNDELIVERED_LIMIT decided entries wait, so its proposal queue fills up.
    let stalled = || {
        let status = handle.status();
        status.queues.proposals == PROPOSAL_QUEUE
            && status.queues.decided_batches == DECIDED_BATCHES
            && status.queues.undelivered_entries >= UNDELIVERED_LIMIT
            && status.queues.pending_appends == 0
    };
    wait_until("the leader stalls", stalled, || format!("{:?}", handle.status().queues)).await;
    let status = handle.status();
    let queues = status.queues;
    // Every bound holds: the decided queue holds its batches, the entries decided beyond it
    // wait in storage, and at most one core buffer of appends was taken past the limit.
    assert!(queues.decided_batches <= DECIDED_BATCHES, "{queues:?}");
    assert!(queues.undelivered_entries <= UNDELIVERED_LIMIT + CORE_BUFFER as u64, "{queues:?}");
    assert!(queues.proposals <= PROPOSAL_QUEUE, "{queues:?}");
    let delivered_bound = (DECIDED_BATCHES * BATCH_ENTRIES) as u64;
    assert!(status.delivered_idx <= delivered_bound, "{status:?}");
    assert!(status.decided_idx <= delivered_bound + UNDELIVERED_LIMIT + CORE_BUFFER as u64, "{status:?}");
    let completed = completed.load(Ordering::Relaxed);
    assert!(completed <= status.decided_idx, "only decided appends completed: {completed} {status:?}");

    // The consumers read again: every append completes and every stream is the whole log.
    let mut readers = JoinSet::new();
    for node in cluster.nodes.values_mut() {
        let mut stream = node.stream.take().expect("the test holds the stream");
        readers.spawn(async move {
            let mut entries = Vec::new();
            while entries.len() < APPENDS as usize {
                entries.push(stream.recv().await.expect("stream open"));
            }
            entries
        });
    }
    let mut indices = Vec::new();
    while let Some(result) = common::within("every append completes", appends.join_next()).await {
        indices.push(result.expect("append task").expect("append decided"));
    }
    indices.sort_unstable();
    assert!(indices == (0..APPENDS).collect::<Vec<_>>(), "each append decided at its own index");
    let mut streams = Vec::new();
    while let Some(entries) = common::within("every stream is read", readers.join_next()).await {
        streams.push(entries.expect("reader task"));
    }
    for stream in &streams {
        assert!(stream.iter().enumerate().all(|(i, decided)| decided.index == i as u64));
        assert_eq!(stream, &streams[0]);
    }
    cluster.shutdown_all().await;
}
