//! `opkv server` start-up and shutdown: invalid configuration (exit 2, naming the field), an
//! address in use (exit 4), a data directory that is missing, already initialized, or of
//! another node or cluster (exit 3), HOCON configuration, SIGTERM (a clean close), and the
//! client commands' exit codes.

mod common;

use std::time::Duration;

use common::{free_port, path_str, run_opkv, spawn_server, Proc};

const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

/// Starts a single-node server and waits until it serves; returns it and its client address.
async fn single_node(
    node_id: u64,
    cluster_id: u64,
    dir: &std::path::Path,
    bootstrap: bool,
) -> (Proc, String) {
    let client = format!("127.0.0.1:{}", free_port());
    let peer = format!("127.0.0.1:{}", free_port());
    let (node, cluster) = (node_id.to_string(), cluster_id.to_string());
    let mut args = vec![
        "--node-id",
        &node,
        "--cluster-id",
        &cluster,
        "--data-dir",
        path_str(dir),
        "--client-listen",
        &client,
        "--peer-listen",
        &peer,
        "--tick-ms",
        "10",
        "--election-timeout-ticks",
        "10",
    ];
    if bootstrap {
        args.push("--bootstrap");
    }
    let proc = spawn_server(&args);
    let deadline = tokio::time::Instant::now() + common::DEADLINE;
    let url = format!("http://{client}/health");
    loop {
        if let Ok(response) = reqwest::get(&url).await {
            if response.status() == 200 {
                return (proc, client);
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "single node {node_id} did not become healthy");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn sigterm(proc: &Proc) {
    let pid = proc.child.as_ref().expect("running").id();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM)
        .expect("signal");
}

#[test]
fn invalid_configuration_exits_2_and_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--data-dir", path_str(&data)], "node_id"),
        (vec!["--node-id", "1"], "data_dir"),
        (vec!["--node-id", "1", "--data-dir", path_str(&data), "--peer", "2=nowhere"], "peers[0]"),
        (vec!["--node-id", "1", "--data-dir", path_str(&data), "--tick-ms", "0"], "tick_ms"),
        (
            vec!["--node-id", "1", "--data-dir", path_str(&data), "--client-listen", "nonsense"],
            "client_listen",
        ),
    ];
    for (args, field) in cases {
        let (code, output) = spawn_server(&args).wait_exit(EXIT_TIMEOUT);
        assert_eq!(code, Some(2), "{args:?}: {output}");
        assert!(output.contains(&format!("`{field}`")), "{args:?} must name {field}: {output}");
    }
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "node_id = 1\ndata_dir = \"x\"\nelection_timeout = 5\n").unwrap();
    let (code, output) = spawn_server(&["--config", path_str(&file)]).wait_exit(EXIT_TIMEOUT);
    assert_eq!(code, Some(2), "{output}");
    assert!(output.contains("election_timeout"), "names the unknown field: {output}");
    let (code, output) = spawn_server(&["--no-such-flag"]).wait_exit(EXIT_TIMEOUT);
    assert_eq!(code, Some(2), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_directories_are_refused_unless_they_are_this_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("node");
    // A restart without a log: refused with what to do.
    let (code, output) = spawn_server(&[
        "--node-id",
        "1",
        "--data-dir",
        path_str(&data),
        "--client-listen",
        "127.0.0.1:0",
        "--peer-listen",
        "127.0.0.1:0",
    ])
    .wait_exit(EXIT_TIMEOUT);
    assert_eq!(code, Some(3), "{output}");
    assert!(output.contains("--bootstrap") && output.contains("--replace-lost-storage"), "{output}");

    // Node 1 of cluster 7 creates it, writes, and stops cleanly on SIGTERM.
    let (mut proc, client) = single_node(1, 7, &data, true).await;
    let output = run_opkv(&["put", "k", "v", "--endpoints", &client]);
    assert!(output.status.success(), "{output:?}");
    sigterm(&proc);
    let (code, output) = proc.wait_exit(EXIT_TIMEOUT);
    assert_eq!(code, Some(0), "a SIGTERM is a clean stop: {output}");
    assert!(output.contains("storage closed cleanly"), "{output}");

    // --bootstrap again: refused (it is a restart).
    let port = free_port().to_string();
    let client_listen = format!("127.0.0.1:{port}");
    let base = [
        "--data-dir",
        path_str(&data),
        "--client-listen",
        client_listen.as_str(),
        "--peer-listen",
        "127.0.0.1:0",
    ];
    let with = |extra: &[&'static str]| -> Vec<String> {
        base.iter().chain(extra.iter()).map(|s| s.to_string()).collect()
    };
    let run = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        spawn_server(&args).wait_exit(EXIT_TIMEOUT)
    };
    let (code, output) = run(with(&["--node-id", "1", "--cluster-id", "7", "--bootstrap"]));
    assert_eq!(code, Some(3), "{output}");
    assert!(output.contains("drop --bootstrap"), "{output}");
    // Another node's or another cluster's directory: refused.
    let (code, output) = run(with(&["--node-id", "2", "--cluster-id", "7"]));
    assert_eq!(code, Some(3), "node 2 must not take node 1's directory: {output}");
    let (code, output) = run(with(&["--node-id", "1", "--cluster-id", "8"]));
    assert_eq!(code, Some(3), "cluster 8 must not take cluster 7's directory: {output}");

    // The right node restarts over it with its data, from a HOCON file.
    let conf = dir.path().join("node1.conf");
    std::fs::write(
        &conf,
        format!(
            "node_id = 1\ncluster_id = 7\ndata_dir = \"{}\"\nclient_listen = \"{client_listen}\"\npeer_listen = \"127.0.0.1:0\"\ntick_ms = 10\nelection_timeout_ticks = 10\n",
            path_str(&data)
        ),
    )
    .unwrap();
    let mut proc = spawn_server(&["--config", path_str(&conf)]);
    let deadline = tokio::time::Instant::now() + common::DEADLINE;
    loop {
        let output = run_opkv(&["get", "k", "--endpoints", &client_listen, "--timeout-ms", "500"]);
        if output.status.success() {
            assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "v");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "restarted node serves its data: {output:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A second server on the same client address: exit 4.
    let other = dir.path().join("other");
    let (code, output) = spawn_server(&[
        "--node-id",
        "1",
        "--data-dir",
        path_str(&other),
        "--bootstrap",
        "--client-listen",
        &client_listen,
        "--peer-listen",
        "127.0.0.1:0",
    ])
    .wait_exit(EXIT_TIMEOUT);
    assert_eq!(code, Some(4), "{output}");
    assert!(output.contains("client_listen"), "{output}");
    sigterm(&proc);
    assert_eq!(proc.wait_exit(EXIT_TIMEOUT).0, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_commands_print_text_or_json_and_exit_with_their_codes() {
    let dir = tempfile::tempdir().unwrap();
    let (_proc, client) = single_node(1, 1, &dir.path().join("d"), true).await;
    let opkv = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--endpoints", client.as_str()]);
        let output = run_opkv(&all);
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).to_string(),
            String::from_utf8_lossy(&output.stderr).to_string(),
        )
    };
    let (code, out, _) = opkv(&["put", "greeting", "hello"]);
    assert_eq!((code, out.trim()), (Some(0), "OK revision 1"));
    let (code, out, _) = opkv(&["get", "greeting"]);
    assert_eq!((code, out.trim()), (Some(0), "hello"));
    let (code, out, _) = opkv(&["get", "greeting", "--json"]);
    let value: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(
        (code, value["value"].as_str(), value["mod_revision"].as_u64()),
        (Some(0), Some("hello"), Some(1))
    );
    let (code, _, err) = opkv(&["get", "nothing"]);
    assert_eq!(code, Some(3), "key_not_found: {err}");
    let (code, out, _) = opkv(&["get", "nothing", "--json"]);
    assert_eq!(code, Some(3));
    assert!(out.contains("\"code\":\"key_not_found\""), "{out}");
    let (code, _, _) = opkv(&["cas", "greeting", "--expected-value", "hello", "--value", "hi"]);
    assert_eq!(code, Some(0));
    let (code, _, err) = opkv(&["cas", "greeting", "--expected-value", "hello", "--value", "hey"]);
    assert_eq!(code, Some(4), "compare_failed: {err}");
    let (code, _, _) = opkv(&["cas", "greeting", "--expected-revision", "2", "--delete"]);
    assert_eq!(code, Some(0));
    let (code, out, _) = opkv(&["delete", "greeting", "--json"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("\"deleted\":false"), "{out}");
    for i in 0..3 {
        opkv(&["put", &format!("p/{i}"), "x"]);
    }
    let (code, out, _) = opkv(&["list", "--prefix", "p/"]);
    assert_eq!((code, out.lines().count()), (Some(0), 3), "{out}");
    let (code, out, _) = opkv(&["watch", "--prefix", "p/", "--from-revision", "1", "--count", "3", "--json"]);
    assert_eq!((code, out.lines().count()), (Some(0), 3), "{out}");
    let (code, out, _) = opkv(&["status"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("leader"), "{out}");
    let (code, _, _) = opkv(&["put", "k"]);
    assert_eq!(code, Some(2), "a missing argument is a usage error");
    let long_key = "k".repeat(5000);
    let (code, _, err) = opkv(&["put", long_key.as_str(), "v"]);
    assert_eq!(code, Some(7), "key too large: {err}");
    let dead = format!("127.0.0.1:{}", free_port());
    let output = run_opkv(&["get", "k", "--endpoints", &dead, "--timeout-ms", "300"]);
    assert_eq!(output.status.code(), Some(8), "unreachable: {output:?}");
}
