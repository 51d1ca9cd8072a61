//! A cluster of `opkv server` child processes on this machine, for `cluster up`, `cluster
//! demo` and the end-to-end tests.
//!
//! Layout of its directory: `cluster.toml` (the manifest: cluster id and every node's
//! addresses, written once, so a second run restarts the same cluster), `node<N>.toml` (each
//! node's server configuration), `data/node<N>/` (data directories), `logs/node<N>.log`
//! (each server's output). Ports come from binding port 0. Children run in their own process
//! group (a terminal's Ctrl-C reaches only the parent, which stops them gracefully) and are
//! killed when the `LocalCluster` is dropped.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};

use crate::{api::StatusResponse, client::Client};

/// How long a gracefully stopped server may take before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// One node in the manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    /// Node id.
    pub id: u64,
    /// Client (HTTP) address.
    pub client: String,
    /// Peer address.
    pub peer: String,
}

/// `cluster.toml`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The cluster id.
    pub cluster_id: u64,
    /// The nodes.
    pub node: Vec<NodeSpec>,
}

/// Extra server settings written into every node's configuration.
#[derive(Clone, Debug, Default)]
pub struct ServerSettings {
    /// `key = value` TOML lines.
    pub lines: Vec<String>,
}

/// A running (or stopped) local cluster.
pub struct LocalCluster {
    binary: PathBuf,
    dir: PathBuf,
    manifest: Manifest,
    children: BTreeMap<u64, Child>,
}

/// Why a local cluster could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The directory holds a cluster of another shape.
    #[error("{0}")]
    Mismatch(String),
    /// A child could not be started.
    #[error("cannot start node {id}: {source}")]
    Spawn {
        /// The node.
        id: u64,
        /// Why.
        source: std::io::Error,
    },
    /// Waiting for the cluster failed.
    #[error("{0}")]
    Wait(String),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> LocalError + '_ {
    move |source| LocalError::Io { path: path.to_path_buf(), source }
}

/// Ports from binding port 0 on 127.0.0.1 (all bound at once, so they differ).
pub fn free_ports(count: usize) -> std::io::Result<Vec<u16>> {
    let listeners: Vec<std::net::TcpListener> =
        (0..count).map(|_| std::net::TcpListener::bind("127.0.0.1:0")).collect::<Result<_, _>>()?;
    listeners.iter().map(|listener| listener.local_addr().map(|addr| addr.port())).collect()
}

impl LocalCluster {
    /// Opens the cluster in `dir`: loads its manifest, or creates a new one for `nodes` nodes
    /// with fresh ports. Returns whether it is new (its nodes must bootstrap).
    pub fn open(
        binary: &Path,
        dir: &Path,
        nodes: u64,
        settings: &ServerSettings,
    ) -> Result<(LocalCluster, bool), LocalError> {
        let manifest_path = dir.join("cluster.toml");
        let (manifest, new) = if manifest_path.exists() {
            let text = std::fs::read_to_string(&manifest_path).map_err(io_error(&manifest_path))?;
            let manifest: Manifest = toml::from_str(&text)
                .map_err(|error| LocalError::Mismatch(format!("{}: {error}", manifest_path.display())))?;
            if manifest.node.len() as u64 != nodes {
                return Err(LocalError::Mismatch(format!(
                    "{} holds a cluster of {} nodes, not {nodes}",
                    dir.display(),
                    manifest.node.len()
                )));
            }
            (manifest, false)
        } else {
            std::fs::create_dir_all(dir).map_err(io_error(dir))?;
            let ports = free_ports(2 * nodes as usize).map_err(io_error(dir))?;
            let node = (1..=nodes)
                .map(|id| {
                    let i = (id - 1) as usize * 2;
                    NodeSpec {
                        id,
                        client: format!("127.0.0.1:{}", ports[i]),
                        peer: format!("127.0.0.1:{}", ports[i + 1]),
                    }
                })
                .collect();
            let manifest = Manifest { cluster_id: rand::random::<u32>() as u64 + 1, node };
            let text = toml::to_string(&manifest).map_err(|error| LocalError::Mismatch(error.to_string()))?;
            std::fs::write(&manifest_path, text).map_err(io_error(&manifest_path))?;
            (manifest, true)
        };
        for dir in [dir.join("logs"), dir.join("data")] {
            std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        }
        let cluster = LocalCluster {
            binary: binary.to_path_buf(),
            dir: dir.to_path_buf(),
            manifest,
            children: BTreeMap::new(),
        };
        for node in &cluster.manifest.node {
            cluster.write_node_config(node, settings)?;
        }
        Ok((cluster, new))
    }

    fn write_node_config(&self, node: &NodeSpec, settings: &ServerSettings) -> Result<(), LocalError> {
        let peers: Vec<String> = self
            .manifest
            .node
            .iter()
            .filter(|other| other.id != node.id)
            .map(|other| format!("\"{}={}\"", other.id, other.peer))
            .collect();
        let mut text = format!(
            "# written by opkv cluster; the manifest is cluster.toml\nnode_id = {}\ncluster_id = {}\npeers = [{}]\npeer_listen = \"{}\"\nclient_listen = \"{}\"\ndata_dir = \"{}\"\n",
            node.id,
            self.manifest.cluster_id,
            peers.join(", "),
            node.peer,
            node.client,
            self.data_dir(node.id).display()
        );
        for line in &settings.lines {
            text.push_str(line);
            text.push('\n');
        }
        let path = self.config_path(node.id);
        std::fs::write(&path, text).map_err(io_error(&path))
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The cluster's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Node ids.
    pub fn ids(&self) -> Vec<u64> {
        self.manifest.node.iter().map(|node| node.id).collect()
    }

    /// Node `id`'s configuration file.
    pub fn config_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("node{id}.toml"))
    }

    /// Node `id`'s data directory.
    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.join("data").join(format!("node{id}"))
    }

    /// Node `id`'s log file.
    pub fn log_path(&self, id: u64) -> PathBuf {
        self.dir.join("logs").join(format!("node{id}.log"))
    }

    /// Node `id`'s client address (`host:port`).
    pub fn endpoint(&self, id: u64) -> String {
        self.manifest
            .node
            .iter()
            .find(|node| node.id == id)
            .map(|node| node.client.clone())
            .unwrap_or_default()
    }

    /// Every client address.
    pub fn endpoints(&self) -> Vec<String> {
        self.manifest.node.iter().map(|node| node.client.clone()).collect()
    }

    /// Starts node `id` (`bootstrap` on a new cluster's first start) with `extra` flags.
    pub fn start(&mut self, id: u64, bootstrap: bool, extra: &[&str]) -> Result<u32, LocalError> {
        let log_path = self.log_path(id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io_error(&log_path))?;
        let log_err = log.try_clone().map_err(io_error(&log_path))?;
        let mut command = Command::new(&self.binary);
        command
            .arg("server")
            .arg("--config")
            .arg(self.config_path(id))
            .arg("--parent-pid")
            .arg(std::process::id().to_string())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .kill_on_drop(true);
        if bootstrap {
            command.arg("--bootstrap");
        }
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "info");
        }
        let child = command.spawn().map_err(|source| LocalError::Spawn { id, source })?;
        let pid = child.id().unwrap_or(0);
        self.children.insert(id, child);
        Ok(pid)
    }

    /// The pid of node `id`'s process, if it runs.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.children.get(&id).and_then(|child| child.id())
    }

    /// Kills node `id` with SIGKILL and reaps it.
    pub async fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.children.remove(&id) {
            let _ = child.kill().await;
        }
    }

    /// Stops node `id` with SIGTERM (graceful), waiting up to [`STOP_TIMEOUT`] before SIGKILL.
    pub async fn stop(&mut self, id: u64) -> Option<ExitStatus> {
        let mut child = self.children.remove(&id)?;
        if let Some(pid) = child.id() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
            Ok(Ok(status)) => Some(status),
            _ => {
                let _ = child.kill().await;
                None
            }
        }
    }

    /// Stops every node gracefully: SIGTERM to all, then waits for each until a common
    /// deadline ([`STOP_TIMEOUT`]), then SIGKILL. Cancellation-safe: a node not yet reaped stays
    /// in the cluster (for [`LocalCluster::kill_all`]).
    pub async fn stop_all(&mut self) {
        for child in self.children.values() {
            if let Some(pid) = child.id() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
        for child in self.children.values_mut() {
            if tokio::time::timeout_at(deadline, child.wait()).await.is_err() {
                let _ = child.kill().await;
            }
        }
        self.children.clear();
    }

    /// Kills every node at once (SIGKILL).
    pub async fn kill_all(&mut self) {
        for (_, mut child) in std::mem::take(&mut self.children) {
            let _ = child.kill().await;
        }
    }

    /// Nodes whose process has exited since the last call, with their status.
    pub fn reap_exited(&mut self) -> Vec<(u64, ExitStatus)> {
        let mut exited = Vec::new();
        for (id, child) in &mut self.children {
            if let Ok(Some(status)) = child.try_wait() {
                exited.push((*id, status));
            }
        }
        for (id, _) in &exited {
            self.children.remove(id);
        }
        exited
    }

    /// Ids of nodes whose process runs.
    pub fn running(&self) -> Vec<u64> {
        self.children.keys().copied().collect()
    }

    /// The last `lines` lines of node `id`'s log.
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path(id)).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The status of every running node that answers.
    pub async fn statuses(&self, client: &Client) -> BTreeMap<u64, StatusResponse> {
        let mut statuses = BTreeMap::new();
        for id in self.running() {
            if let Ok(status) = client.status_of(&self.endpoint(id)).await {
                statuses.insert(id, status);
            }
        }
        statuses
    }

    /// Waits until every running node follows the same ready leader (polling, bounded by
    /// `timeout`); fails early if a node exits.
    pub async fn wait_for_leader(&mut self, timeout: Duration) -> Result<u64, LocalError> {
        let client = Client::new(&self.endpoints()).map_err(|error| LocalError::Wait(error.to_string()))?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some((id, status)) = self.reap_exited().into_iter().next() {
                return Err(LocalError::Wait(format!(
                    "node {id} exited ({status}) while waiting for a leader; its log ends with:\n{}",
                    self.log_tail(id, 10)
                )));
            }
            let statuses = self.statuses(&client).await;
            if statuses.len() == self.children.len() {
                let leaders: Vec<Option<u64>> =
                    statuses.values().map(|s| s.leader_ready.then_some(s.leader).flatten()).collect();
                if let Some(Some(leader)) = leaders.first() {
                    if leaders.iter().all(|l| *l == Some(*leader)) && statuses.values().any(|s| s.is_leader) {
                        return Ok(*leader);
                    }
                }
            }
            let seen = format!(
                "{:?}",
                statuses.iter().map(|(id, s)| (id, s.leader, s.leader_ready)).collect::<Vec<_>>()
            );
            if tokio::time::Instant::now() >= deadline {
                return Err(LocalError::Wait(format!(
                    "no leader within {timeout:?}; saw (node, leader, ready): {seen}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
