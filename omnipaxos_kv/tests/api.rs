//! The HTTP API of a real 3-process cluster: writes at any node, linearizable reads at any
//! node, revisions, compare-and-swap, lists, exactly-once retries, watch, and JSON errors for
//! bad input.

mod common;

use common::{fast_settings, TestCluster};
use omnipaxos_kv::{
    api::{CasRequest, Consistency, ErrorCode},
    client::ClientError,
};
use serde_json::{json, Value};

async fn send(method: reqwest::Method, url: &str, body: Option<String>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut request = client.request(method, url);
    if let Some(body) = body {
        request = request.body(body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let bytes = response.bytes().await.expect("body");
    let value =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| json!({"raw": String::from_utf8_lossy(&bytes)}));
    (status, value)
}

fn code(error: ClientError) -> ErrorCode {
    error.code().unwrap_or_else(|| panic!("an API error, got {error}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_node_takes_writes_and_every_node_reads_them_linearizably() {
    let test = TestCluster::start(3, fast_settings(&[])).await;
    let ids = test.cluster.ids();
    let mut revision = 0;
    for (round, writer) in ids.iter().enumerate() {
        let response = test.client_of(*writer).put("k", &format!("v{round}")).await.expect("put");
        assert!(response.revision > revision, "revisions grow");
        revision = response.revision;
        // Acknowledged at one node: every node's linearizable read sees it at once.
        for reader in &ids {
            let read = test.client_of(*reader).get("k", Consistency::Linearizable).await.expect("get");
            assert_eq!(read.kv.value, format!("v{round}"), "node {reader} after a write at node {writer}");
            assert_eq!(read.kv.mod_revision, revision);
            assert!(read.header.revision >= revision);
        }
    }
    let record = test.client().get("k", Consistency::Lease).await.expect("lease read");
    assert_eq!((record.kv.version, record.kv.create_revision), (3, revision - 2));

    let mut client = test.client();
    assert_eq!(
        code(client.get("missing", Consistency::Linearizable).await.unwrap_err()),
        ErrorCode::KeyNotFound
    );
    let deleted = client.delete("k").await.expect("delete");
    assert!(deleted.deleted);
    assert!(!client.delete("k").await.expect("delete again").deleted);

    // Compare-and-swap on revision (0: absent) and on value.
    let create = CasRequest { expected_revision: Some(0), value: Some("a".into()), ..CasRequest::default() };
    let created = client.cas("lock", create.clone()).await.expect("create if absent");
    let error = client.cas("lock", create).await.unwrap_err();
    match &error {
        ClientError::Api { status: 412, body } => assert_eq!(body.mod_revision, Some(created.mod_revision)),
        other => panic!("expected compare_failed, got {other}"),
    }
    let swap =
        CasRequest { expected_value: Some("a".into()), value: Some("b".into()), ..CasRequest::default() };
    client.cas("lock", swap.clone()).await.expect("swap on value");
    assert_eq!(code(client.cas("lock", swap).await.unwrap_err()), ErrorCode::CompareFailed);
    let remove = CasRequest { expected_value: Some("b".into()), delete: true, ..CasRequest::default() };
    assert_eq!(client.cas("lock", remove).await.expect("delete on value").mod_revision, 0);

    // Prefix lists with a limit, at a stale and a linearizable consistency.
    for i in 0..5 {
        client.put(&format!("dir/{i}"), "x").await.expect("put");
    }
    client.put("dirt", "y").await.expect("put");
    let page = client.list("dir/", 3, Consistency::Linearizable).await.expect("list");
    assert_eq!(page.kvs.iter().map(|kv| kv.key.as_str()).collect::<Vec<_>>(), ["dir/0", "dir/1", "dir/2"]);
    assert!(page.more);
    let all = client.list_all("dir/", Consistency::Stale).await.expect("list all");
    assert_eq!(all.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_write_is_applied_once_and_gets_the_original_answer() {
    let test = TestCluster::start(3, fast_settings(&[])).await;
    let body = json!({"value": "once", "client_id": 4242, "seq": 1}).to_string();
    let (status, first) =
        send(reqwest::Method::PUT, &test.url(1, "/v1/kv/counter"), Some(body.clone())).await;
    assert_eq!(status, 200, "{first}");
    // The same request again, at another node (a client retrying after a timeout).
    let (status, again) = send(reqwest::Method::PUT, &test.url(2, "/v1/kv/counter"), Some(body)).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(first["revision"], again["revision"], "the original answer");
    let read = test.client().get("counter", Consistency::Linearizable).await.expect("get");
    assert_eq!(read.kv.version, 1, "applied once");

    let next = json!({"value": "twice", "client_id": 4242, "seq": 2}).to_string();
    let (status, _) = send(reqwest::Method::PUT, &test.url(3, "/v1/kv/counter"), Some(next)).await;
    assert_eq!(status, 200);
    let stale = json!({"value": "old", "client_id": 4242, "seq": 1}).to_string();
    let (status, body) = send(reqwest::Method::PUT, &test.url(1, "/v1/kv/counter"), Some(stale)).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("stale_sequence")), "{body}");
    let unknown = json!({"value": "x", "client_id": 777, "seq": 9}).to_string();
    let (status, body) = send(reqwest::Method::PUT, &test.url(1, "/v1/kv/counter"), Some(unknown)).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("session_expired")), "{body}");
    let read = test.client().get("counter", Consistency::Linearizable).await.expect("get");
    assert_eq!((read.kv.value.as_str(), read.kv.version), ("twice", 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_an_http_status_and_a_json_code() {
    let test = TestCluster::start(
        3,
        fast_settings(&["max_key_bytes = 16", "max_value_bytes = 32", "max_request_bytes = 256"]),
    )
    .await;
    let put = |key: &str| test.url(1, &format!("/v1/kv/{key}"));
    let cases: Vec<(reqwest::Method, String, Option<String>, u16, &str)> = vec![
        (reqwest::Method::PUT, put("k"), Some("{not json".into()), 400, "invalid_json"),
        (reqwest::Method::PUT, put("k"), Some(r#"{"valeu": "x"}"#.into()), 400, "invalid_json"),
        (reqwest::Method::PUT, put("k"), Some(r#"{"value": 5}"#.into()), 400, "invalid_json"),
        (
            reqwest::Method::PUT,
            put("k"),
            Some(r#"{"value": "x", "client_id": 3}"#.into()),
            400,
            "invalid_request",
        ),
        (
            reqwest::Method::PUT,
            put("k"),
            Some(json!({"value": "v".repeat(33)}).to_string()),
            413,
            "value_too_large",
        ),
        (reqwest::Method::PUT, put(&"k".repeat(17)), Some(r#"{"value": "x"}"#.into()), 413, "key_too_large"),
        (
            reqwest::Method::PUT,
            put("k"),
            Some(format!(r#"{{"value": "{}"}}"#, "v".repeat(300))),
            413,
            "request_too_large",
        ),
        (reqwest::Method::GET, test.url(1, "/v1/kv/k?consistency=sometimes"), None, 400, "invalid_request"),
        (reqwest::Method::GET, test.url(1, "/v1/kv?limit=0"), None, 400, "invalid_request"),
        (
            reqwest::Method::POST,
            test.url(1, "/v1/cas/k"),
            Some(r#"{"value": "x"}"#.into()),
            400,
            "invalid_request",
        ),
        (reqwest::Method::GET, test.url(1, "/v2/nothing"), None, 404, "not_found"),
        (reqwest::Method::POST, put("k"), Some("{}".into()), 405, "method_not_allowed"),
        (reqwest::Method::GET, test.url(1, "/v1/watch?key=a&prefix=b"), None, 400, "invalid_request"),
    ];
    for (method, url, body, status, expected) in cases {
        let (got, value) = send(method.clone(), &url, body.clone()).await;
        assert_eq!(
            (got, value["code"].as_str()),
            (status, Some(expected)),
            "{method} {url} {body:?}: {value}"
        );
        assert!(value["message"].as_str().is_some_and(|m| !m.is_empty()), "{value}");
    }
    // Nothing of it was applied, and the node still serves.
    let listed = test.client().list("", 100, Consistency::Linearizable).await.expect("list");
    assert!(listed.kvs.is_empty(), "{listed:?}");
    test.client().put("k", "fine").await.expect("a good request still works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_changes_from_a_revision_as_server_sent_events() {
    let test = TestCluster::start(3, fast_settings(&[])).await;
    let mut client = test.client();
    let first = client.put("w/a", "1").await.expect("put").revision;
    client.put("other", "x").await.expect("put");
    client.delete("w/a").await.expect("delete");
    let url = test.url(2, &format!("/v1/watch?prefix=w/&from_revision={first}"));
    let mut response = reqwest::get(&url).await.expect("watch");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    client.put("w/b", "2").await.expect("put after the watch began");
    let mut parser = omnipaxos_kv::cli::SseParser::default();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + common::DEADLINE;
    while events.len() < 3 {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .expect("events in time")
            .expect("chunk");
        events.extend(parser.push(&chunk.expect("stream open")));
    }
    let seen: Vec<(String, Value)> =
        events.into_iter().map(|(event, data)| (event, serde_json::from_str(&data).expect("json"))).collect();
    assert_eq!(seen[0].0, "put");
    assert_eq!((seen[0].1["key"].as_str(), seen[0].1["revision"].as_u64()), (Some("w/a"), Some(first)));
    assert_eq!((seen[1].0.as_str(), seen[1].1["key"].as_str()), ("delete", Some("w/a")));
    assert_eq!((seen[2].0.as_str(), seen[2].1["value"].as_str()), ("put", Some("2")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_read_leases_lease_reads_see_every_acknowledged_write() {
    let mut test = TestCluster::start(3, fast_settings(&["read_lease_ms = 80"])).await;
    let ids = test.cluster.ids();
    for round in 0..20 {
        let writer = ids[round % ids.len()];
        test.client_of(writer).put("k", &format!("v{round}")).await.expect("put");
        for reader in &ids {
            for consistency in [Consistency::Lease, Consistency::Linearizable] {
                let read = test.client_of(*reader).get("k", consistency).await.expect("get");
                assert_eq!(read.kv.value, format!("v{round}"), "{consistency} read at node {reader}");
            }
        }
    }
    // After the leader dies, the new leader waits out the old lease, then serves again.
    let leader = test.leader().await;
    test.cluster.kill(leader).await;
    let mut client = test.client();
    client.put("k", "after").await.expect("put after the failover");
    let read = client.get("k", Consistency::Lease).await.expect("lease read after the failover");
    assert_eq!(read.kv.value, "after");
    assert_eq!(
        test.status(ids.iter().copied().find(|id| *id != leader).unwrap()).await.unwrap().read_lease_ms,
        80
    );
}
