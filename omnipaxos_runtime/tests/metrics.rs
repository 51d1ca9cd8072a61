//! The Prometheus exporter renders every family the runtime records. One test in its own
//! binary: the recorder is process-wide.

mod common;

use common::{append_many, ClusterOptions, TestCluster};
use omnipaxos_runtime::metrics::PrometheusExporter;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prometheus_text_shows_the_runtime_metrics() {
    let exporter = PrometheusExporter::install().expect("first recorder of this process");
    let mut cluster =
        TestCluster::start(ClusterOptions { persistent: true, ..ClusterOptions::default() }).await;
    // Leadership may still move at start-up; the metrics of the node appended through count
    // its 200 proposals wherever they were decided.
    let proposer = cluster.wait_for_leader().await;
    append_many(&cluster.handle(proposer), 0, 200, 4).await;
    cluster.wait_delivered(200).await;
    exporter.run_upkeep();
    let text = exporter.render();
    let expected = [
        "omnipaxos_leader{node=".to_string(),
        "omnipaxos_is_leader{node=".to_string(),
        format!("omnipaxos_proposals_total{{node=\"{proposer}\"}} 200"),
        "omnipaxos_decisions_total{node=".to_string(),
        "omnipaxos_decided_index{node=".to_string(),
        "omnipaxos_accepted_index{node=".to_string(),
        "omnipaxos_ballot_round{node=".to_string(),
        format!("omnipaxos_append_to_decided_seconds_count{{node=\"{proposer}\"}} 200"),
        "omnipaxos_flush_seconds_bucket{node=".to_string(),
        "omnipaxos_messages_out_total{".to_string(),
        "omnipaxos_messages_in_total{".to_string(),
        "omnipaxos_bytes_out_total{".to_string(),
        "omnipaxos_bytes_in_total{".to_string(),
        "omnipaxos_peer_connected{".to_string(),
        "omnipaxos_queue_depth{".to_string(),
        "omnipaxos_rounds_total{".to_string(),
    ];
    for line in &expected {
        assert!(text.contains(line.as_str()), "missing `{line}` in:\n{text}");
    }
    cluster.shutdown_all().await;
}
