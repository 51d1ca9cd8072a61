//! The `opkv server` processes: one per node namespace, each with its data directory on its own
//! small tmpfs (so that a disk can be filled), its log appended to `node-<id>.log` in the run's
//! output directory. Processes can be killed (SIGKILL), paused (SIGSTOP/SIGCONT) and restarted,
//! optionally under libfaketime with a clock rate other than real time.

use std::{
    collections::BTreeMap,
    fs::{File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};

use crate::{cleanup, netns::Network, ChaosError, NodeId};

/// Where libfaketime is looked for (Debian's `faketime` package).
pub const FAKETIME_CANDIDATES: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
    "/usr/lib/faketime/libfaketimeMT.so.1",
];

/// The libfaketime library, if installed.
pub fn faketime_library() -> Option<&'static str> {
    FAKETIME_CANDIDATES.iter().copied().find(|path| Path::new(path).is_file())
}

/// The servers' settings (the same on every node).
#[derive(Clone, Debug)]
pub struct ServerSettings {
    pub tick_ms: u64,
    pub election_timeout_ticks: u64,
    pub request_timeout_ms: u64,
    pub read_lease_ms: u64,
    pub max_clock_drift_percent: u64,
    pub snapshot_interval_entries: u64,
    /// Log segment size: small, so that the log asks the file system for space often.
    pub wal_segment_bytes: u64,
    /// Size of each node's data tmpfs.
    pub disk_mib: u64,
    /// `--unsafe-stale-reads` (needs a binary built with the feature `test-switches`).
    pub unsafe_stale_reads: bool,
}

impl ServerSettings {
    /// The election timeout in milliseconds.
    pub fn election_timeout_ms(&self) -> u64 {
        self.tick_ms * self.election_timeout_ticks
    }
}

struct NodeProcess {
    child: Option<Child>,
    paused: bool,
    /// The clock rate of the running process (1.0: real time).
    clock_rate: f64,
    mount: PathBuf,
    bootstrapped: bool,
    filled: bool,
}

/// The running cluster. Dropping it kills every process and removes the network and mounts.
pub struct Cluster {
    network: Network,
    opkv: PathBuf,
    out: PathBuf,
    settings: ServerSettings,
    nodes: BTreeMap<NodeId, NodeProcess>,
}

impl Cluster {
    /// Creates the network and the tmpfs data directories; starts no process yet.
    pub fn create(
        opkv: &Path,
        out: &Path,
        nodes: u64,
        subnet: [u8; 3],
        settings: ServerSettings,
    ) -> Result<Cluster, ChaosError> {
        let ids: Vec<NodeId> = (1..=nodes).collect();
        let network = Network::create(&ids, subnet)?;
        let mount_root = PathBuf::from(format!("/tmp/omnipaxos-chaos-{}", std::process::id()));
        let mut processes = BTreeMap::new();
        for &id in &ids {
            let mount = mount_root.join(format!("n{id}"));
            std::fs::create_dir_all(&mount).map_err(|e| ChaosError::io(&mount, e))?;
            let text = mount.display().to_string();
            cleanup::register_mount(&text);
            crate::netns::run(
                "mount",
                &["-t", "tmpfs", "-o", &format!("size={}m", settings.disk_mib), "tmpfs", &text],
            )?;
            processes.insert(
                id,
                NodeProcess {
                    child: None,
                    paused: false,
                    clock_rate: 1.0,
                    mount,
                    bootstrapped: false,
                    filled: false,
                },
            );
        }
        let cluster =
            Cluster { network, opkv: opkv.to_path_buf(), out: out.to_path_buf(), settings, nodes: processes };
        for &id in &ids {
            cluster.write_config(id)?;
        }
        Ok(cluster)
    }

    /// The node ids.
    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// The settings.
    pub fn settings(&self) -> &ServerSettings {
        &self.settings
    }

    /// The network (for faults).
    pub fn network(&mut self) -> &mut Network {
        &mut self.network
    }

    /// Node `id`'s HTTP base URL.
    pub fn endpoint(&self, id: NodeId) -> String {
        format!("http://{}:2379", self.network.node_addr(id))
    }

    fn config_path(&self, id: NodeId) -> PathBuf {
        self.out.join(format!("node-{id}.toml"))
    }

    fn write_config(&self, id: NodeId) -> Result<(), ChaosError> {
        let s = &self.settings;
        let peers: Vec<String> = self
            .ids()
            .into_iter()
            .filter(|&p| p != id)
            .map(|p| format!("\"{p}={}:2380\"", self.network.node_addr(p)))
            .collect();
        let addr = self.network.node_addr(id);
        let data = self.nodes[&id].mount.join("data");
        let text = format!(
            "node_id = {id}\ncluster_id = 1\npeers = [{}]\npeer_listen = \"{addr}:2380\"\n\
             client_listen = \"{addr}:2379\"\ndata_dir = \"{}\"\ntick_ms = {}\nelection_timeout_ticks = {}\n\
             request_timeout_ms = {}\nread_lease_ms = {}\nmax_clock_drift_percent = {}\n\
             snapshot_interval_entries = {}\nwal_segment_bytes = {}\n",
            peers.join(", "),
            data.display(),
            s.tick_ms,
            s.election_timeout_ticks,
            s.request_timeout_ms,
            s.read_lease_ms,
            s.max_clock_drift_percent,
            s.snapshot_interval_entries,
            s.wal_segment_bytes,
        );
        let path = self.config_path(id);
        std::fs::write(&path, text).map_err(|e| ChaosError::io(&path, e))
    }

    /// Starts node `id` (bootstrapping its data directory the first time), with its clock
    /// running at `clock_rate` times real time (1.0: no libfaketime).
    pub fn start(&mut self, id: NodeId, clock_rate: f64) -> Result<(), ChaosError> {
        if self.is_running(id) {
            return Ok(());
        }
        let log_path = self.out.join(format!("node-{id}.log"));
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| ChaosError::io(&log_path, e))?;
        let _ = writeln!(log, "=== harness: starting node {id} (clock rate {clock_rate})");
        let log_err = log.try_clone().map_err(|e| ChaosError::io(&log_path, e))?;
        let ns = self.network.node_ns(id);
        let config = self.config_path(id).display().to_string();
        let opkv = self.opkv.display().to_string();
        let parent = std::process::id().to_string();
        let mut args: Vec<String> = vec!["netns".into(), "exec".into(), ns, "env".into()];
        if (clock_rate - 1.0).abs() > f64::EPSILON {
            let library = faketime_library().ok_or_else(|| {
                ChaosError::Setup("clock skew needs libfaketime: apt-get install faketime".into())
            })?;
            args.push(format!("LD_PRELOAD={library}"));
            args.push(format!("FAKETIME=+0 x{clock_rate}"));
        }
        args.extend([opkv, "server".into(), "--config".into(), config, "--parent-pid".into(), parent]);
        let node = self.nodes.get_mut(&id).ok_or(ChaosError::UnknownNode(id))?;
        if !node.bootstrapped {
            args.push("--bootstrap".into());
        }
        if self.settings.unsafe_stale_reads {
            args.push("--unsafe-stale-reads".into());
        }
        let child = Command::new("ip")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .spawn()
            .map_err(|e| ChaosError::Command {
                command: format!("ip {}", args.join(" ")),
                message: e.to_string(),
            })?;
        cleanup::register_pid(child.id());
        node.child = Some(child);
        node.bootstrapped = true;
        node.paused = false;
        node.clock_rate = clock_rate;
        Ok(())
    }

    /// True if node `id`'s process runs (possibly paused).
    pub fn is_running(&self, id: NodeId) -> bool {
        self.nodes.get(&id).is_some_and(|n| n.child.is_some())
    }

    /// True if node `id` is paused.
    pub fn is_paused(&self, id: NodeId) -> bool {
        self.nodes.get(&id).is_some_and(|n| n.paused)
    }

    /// Node `id`'s clock rate.
    pub fn clock_rate(&self, id: NodeId) -> f64 {
        self.nodes.get(&id).map_or(1.0, |n| n.clock_rate)
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self, id: NodeId) {
        if let Some(node) = self.nodes.get_mut(&id) {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
                cleanup::forget_pid(child.id());
            }
            node.paused = false;
        }
    }

    /// SIGTERM (graceful stop), waiting up to `timeout`, then SIGKILL.
    pub async fn stop(&mut self, id: NodeId, timeout: Duration) {
        let Some(node) = self.nodes.get_mut(&id) else { return };
        let Some(child) = node.child.as_mut() else { return };
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGCONT);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.kill(id);
    }

    /// SIGSTOP.
    pub fn pause(&mut self, id: NodeId) {
        if let Some(node) = self.nodes.get_mut(&id) {
            if let Some(child) = &node.child {
                let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGSTOP);
                node.paused = true;
            }
        }
    }

    /// SIGCONT.
    pub fn resume(&mut self, id: NodeId) {
        if let Some(node) = self.nodes.get_mut(&id) {
            if let Some(child) = &node.child {
                let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGCONT);
            }
            node.paused = false;
        }
    }

    /// Processes that exited by themselves since the last call, with their exit status.
    pub fn reap_exited(&mut self) -> Vec<(NodeId, String)> {
        let mut exited = Vec::new();
        for (&id, node) in &mut self.nodes {
            if let Some(child) = node.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    cleanup::forget_pid(child.id());
                    node.child = None;
                    node.paused = false;
                    exited.push((id, status.to_string()));
                }
            }
        }
        exited
    }

    /// The last `lines` lines of node `id`'s log.
    pub fn log_tail(&self, id: NodeId, lines: usize) -> String {
        let text = std::fs::read_to_string(self.out.join(format!("node-{id}.log"))).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Fills node `id`'s data tmpfs with a filler file until the file system is full; returns
    /// the bytes written.
    pub fn fill_disk(&mut self, id: NodeId) -> Result<u64, ChaosError> {
        let node = self.nodes.get_mut(&id).ok_or(ChaosError::UnknownNode(id))?;
        let path = node.mount.join("filler");
        let mut file = File::create(&path).map_err(|e| ChaosError::io(&path, e))?;
        node.filled = true;
        let chunk = vec![0xa5u8; 1 << 20];
        let mut written = 0u64;
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(error) if error.raw_os_error() == Some(nix::libc::ENOSPC) => break,
                Err(error) => return Err(ChaosError::io(&path, error)),
            }
        }
        let _ = file.flush();
        Ok(written)
    }

    /// The size of each node's data directory in MiB (`du`; 0 if unknown).
    pub fn disk_used_mib(&self) -> BTreeMap<NodeId, u64> {
        self.nodes
            .iter()
            .map(|(&id, node)| {
                let data = node.mount.join("data").display().to_string();
                let mib = crate::netns::run("du", &["-sm", &data])
                    .ok()
                    .and_then(|out| out.split_whitespace().next().and_then(|n| n.parse().ok()))
                    .unwrap_or(0);
                (id, mib)
            })
            .collect()
    }

    /// Removes the filler file of node `id`: space returns.
    pub fn free_disk(&mut self, id: NodeId) -> Result<(), ChaosError> {
        let node = self.nodes.get_mut(&id).ok_or(ChaosError::UnknownNode(id))?;
        if node.filled {
            let path = node.mount.join("filler");
            std::fs::remove_file(&path).map_err(|e| ChaosError::io(&path, e))?;
            node.filled = false;
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.child.take() {
                let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGCONT);
                let _ = child.kill();
                let _ = child.wait();
                cleanup::forget_pid(child.id());
            }
        }
        // The network's own Drop (a field, dropped after this) runs the cleanup registry:
        // mounts, namespaces, links.
    }
}
