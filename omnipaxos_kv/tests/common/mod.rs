//! Real `opkv server` processes on loopback for the end-to-end tests. Ports come from binding
//! port 0, data lives in a temporary directory, and every child is killed when its owner is
//! dropped (also when a test fails). Waits poll with a bounded deadline; no sleep is used to
//! wait for something to happen.

#![allow(dead_code)] // each test binary uses a different part

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use omnipaxos_kv::{
    api::StatusResponse,
    client::Client,
    local::{LocalCluster, ServerSettings},
};

/// Long enough for a loaded 2-core machine, short enough to fail fast.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The `opkv` binary under test.
pub fn opkv() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_opkv"))
}

/// Fast elections for tests: 10 ms ticks, 10-tick rounds.
pub fn fast_settings(extra: &[&str]) -> ServerSettings {
    let mut lines = vec!["tick_ms = 10".to_string(), "election_timeout_ticks = 10".to_string()];
    lines.extend(extra.iter().map(|line| line.to_string()));
    ServerSettings { lines }
}

/// A local cluster in a temporary directory.
pub struct TestCluster {
    pub cluster: LocalCluster,
    pub dir: tempfile::TempDir,
}

impl TestCluster {
    /// Starts `nodes` servers with `settings` and waits for a leader.
    pub async fn start(nodes: u64, settings: ServerSettings) -> TestCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let (mut cluster, new) =
            LocalCluster::open(&opkv(), dir.path(), nodes, &settings).expect("cluster dir");
        assert!(new);
        for id in cluster.ids() {
            cluster.start(id, true, &[]).expect("spawn");
        }
        let mut test = TestCluster { cluster, dir };
        test.wait_for_leader().await;
        test
    }

    pub async fn wait_for_leader(&mut self) -> u64 {
        match self.cluster.wait_for_leader(DEADLINE).await {
            Ok(leader) => leader,
            Err(error) => panic!("{error}\n{}", self.logs()),
        }
    }

    /// Every node's log, for failure messages.
    pub fn logs(&self) -> String {
        self.cluster
            .ids()
            .iter()
            .map(|id| format!("--- node {id}:\n{}", self.cluster.log_tail(*id, 30)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn client(&self) -> Client {
        Client::new(&self.cluster.endpoints())
            .expect("client")
            .with_timeouts(Duration::from_secs(20), Duration::from_secs(6))
    }

    /// A client of node `id` only.
    pub fn client_of(&self, id: u64) -> Client {
        Client::new(&[self.cluster.endpoint(id)])
            .expect("client")
            .with_timeouts(Duration::from_secs(20), Duration::from_secs(6))
    }

    pub fn url(&self, id: u64, path: &str) -> String {
        format!("http://{}{path}", self.cluster.endpoint(id))
    }

    pub async fn status(&self, id: u64) -> Option<StatusResponse> {
        self.client().status_of(&self.cluster.endpoint(id)).await.ok()
    }

    pub async fn leader(&self) -> u64 {
        let statuses = self.cluster.statuses(&self.client()).await;
        statuses.values().find(|s| s.is_leader).map(|s| s.node_id).expect("a leader")
    }

    /// Waits until `condition` holds for node `id`'s status.
    pub async fn wait_status(
        &self,
        id: u64,
        what: &str,
        condition: impl Fn(&StatusResponse) -> bool,
    ) -> StatusResponse {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let status = self.status(id).await;
            if let Some(status) = &status {
                if condition(status) {
                    return status.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting until {what}; last status {status:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A child process killed on drop.
pub struct Proc {
    pub child: Option<Child>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Proc {
    /// Waits for the process to exit (bounded); returns its exit code and output.
    pub fn wait_exit(&mut self, timeout: Duration) -> (Option<i32>, String) {
        let deadline = Instant::now() + timeout;
        let mut child = self.child.take().expect("running");
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                let output = child.wait_with_output().expect("output");
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
                return (output.status.code(), text);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let output = child.wait_with_output().expect("output");
                panic!(
                    "process did not exit within {timeout:?}: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Starts `opkv server` with `args`, output captured.
pub fn spawn_server(args: &[&str]) -> Proc {
    let child = Command::new(opkv())
        .arg("server")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn opkv server");
    Proc { child: Some(child) }
}

/// Runs an `opkv` client command to completion.
pub fn run_opkv(args: &[&str]) -> Output {
    Command::new(opkv()).args(args).stdin(Stdio::null()).output().expect("run opkv")
}

/// One free port on 127.0.0.1.
pub fn free_port() -> u16 {
    omnipaxos_kv::local::free_ports(1).expect("free port")[0]
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}
