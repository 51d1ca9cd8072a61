//! `opkv compare-etcd` (feature `etcd`): the same 3-node workload against etcd 3.4 and against
//! this service, one system at a time, on loopback, with each node's data directory on the same
//! disk (issue 15).
//!
//! For each system: start a 3-node cluster (etcd: the `etcd` binary with `--heartbeat-interval`
//! and `--election-timeout` set to match ours; ours: `opkv server` children as `cluster up` starts
//! them, `PersistentStorage` with fsync), run the matrix (clients × value size × workload) with
//! [`crate::bench`], sampling the server processes' `/proc/<pid>/stat` (CPU), `/proc/<pid>/io`
//! (`write_bytes`) and `/proc/<pid>/status` (`VmRSS`) at the start and end of each measured
//! window, then measure failover (SIGKILL of the leader under a steady write load; time until a
//! write sent after the kill to a surviving node is acknowledged), and tear the cluster down.
//!
//! Output in `--out`: `results.jsonl` (one line per cell and per failover run), `tables.md`
//! (the tables with ratios), `throughput.png`, `latency.png`, `failover.png`.

use std::{
    collections::BTreeMap,
    io::Write as _,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use clap::{Args, ValueEnum};
use serde::Serialize;
use tokio::process::{Child, Command};

use crate::{
    bench::{
        run_bench_observed, BenchArgs, BenchClient, BenchReport, BenchTarget, OpkvTarget, Phase, Workload,
    },
    client::Client,
    etcd::{default_connections, member_status, EtcdTarget},
    local::{free_ports, LocalCluster, ServerSettings},
};

/// Linux's `USER_HZ`: the unit of the CPU times in `/proc/<pid>/stat`.
const CLOCK_TICKS_PER_S: f64 = 100.0;
/// How long a cluster may take to elect a leader and accept writes.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The write load's timeline buckets.
const BUCKET_MS: u64 = 100;

/// The systems compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum System {
    /// This service.
    Ours,
    /// etcd 3.4.
    Etcd,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Ours => "ours",
            System::Etcd => "etcd",
        }
    }
}

/// `opkv compare-etcd` options.
#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// Where the results, tables and charts go.
    #[arg(long, default_value = "docs/etcd-comparison")]
    pub out: PathBuf,
    /// Where the clusters' data directories and logs go (emptied first).
    #[arg(long, default_value = "target/etcd-compare")]
    pub work_dir: PathBuf,
    /// Systems, in order (one at a time).
    #[arg(long, value_delimiter = ',', default_value = "etcd,ours")]
    pub systems: Vec<System>,
    /// Concurrent clients per cell.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    pub clients: Vec<usize>,
    /// Value sizes in bytes.
    #[arg(long, value_delimiter = ',', default_value = "64,1024")]
    pub value_sizes: Vec<usize>,
    /// Workloads.
    #[arg(long, value_delimiter = ',', default_value = "write,read,mixed")]
    pub workloads: Vec<Workload>,
    /// Measured seconds per cell.
    #[arg(long, default_value_t = 5.0)]
    pub duration_s: f64,
    /// Warm-up seconds per cell (not measured).
    #[arg(long, default_value_t = 1.0)]
    pub warmup_s: f64,
    /// Key space.
    #[arg(long, default_value_t = 1000)]
    pub keys: u64,
    /// Failover runs per system.
    #[arg(long, default_value_t = 3)]
    pub failovers: usize,
    /// Writers of the steady load during failover.
    #[arg(long, default_value_t = 16)]
    pub failover_clients: usize,
    /// The etcd binary.
    #[arg(long, default_value = "etcd")]
    pub etcd_bin: String,
    /// etcd's `--heartbeat-interval` (ms).
    #[arg(long, default_value_t = 50)]
    pub etcd_heartbeat_ms: u64,
    /// etcd's `--election-timeout` (ms); ours is `tick_ms` × `election_timeout_ticks` (300 ms by
    /// default).
    #[arg(long, default_value_t = 300)]
    pub etcd_election_ms: u64,
    /// A few seconds in all: one small cell per workload and one failover per system (CI).
    #[arg(long)]
    pub smoke: bool,
    /// Skip the charts.
    #[arg(long)]
    pub no_charts: bool,
    /// Keep each system's data directories and logs after its run (by default they are
    /// removed once the cluster is stopped: the matrix writes gigabytes).
    #[arg(long)]
    pub keep_data: bool,
}

/// CPU, disk and memory of one process at one moment.
#[derive(Clone, Copy, Debug, Default)]
struct ProcSample {
    cpu_ticks: u64,
    write_bytes: u64,
    rss_kib: u64,
}

fn sample(pid: u32) -> ProcSample {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) start after the last ')'.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the ')'.
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    let cpu_ticks = field(11) + field(12);
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    let write_bytes = io
        .lines()
        .find_map(|line| line.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    ProcSample { cpu_ticks, write_bytes, rss_kib }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// One cell of the matrix.
#[derive(Debug, Clone, Serialize)]
pub struct CellResult {
    pub kind: &'static str,
    pub system: System,
    pub report: BenchReport,
    /// CPU seconds of the three server processes per 1,000 measured operations.
    pub cpu_s_per_1k_ops: f64,
    /// Bytes the server processes caused to be written to storage, per measured operation.
    pub disk_bytes_per_op: f64,
    /// Resident memory of each server process at the end of the measured window (MiB).
    pub rss_mib: Vec<f64>,
    /// `/proc/loadavg` (1, 5, 15 min) at the end of the cell.
    pub load_average: String,
}

/// One failover run.
#[derive(Debug, Clone, Serialize)]
pub struct FailoverResult {
    pub kind: &'static str,
    pub system: System,
    pub run: usize,
    /// SIGKILL to the first acknowledged write sent after it to a surviving node.
    pub failover_ms: Option<f64>,
    pub error: Option<String>,
    /// Acknowledged writes of the steady load per `bucket_ms` bucket; bucket 0 starts
    /// `pre_kill_ms` before the kill.
    pub timeline: Vec<u64>,
    pub bucket_ms: u64,
    pub pre_kill_ms: u64,
}

/// A running 3-node cluster of either system.
enum Cluster {
    Ours(LocalCluster),
    Etcd(EtcdCluster),
}

struct EtcdNode {
    name: String,
    client: String,
    peer: String,
    child: Option<Child>,
}

struct EtcdCluster {
    binary: String,
    dir: PathBuf,
    heartbeat_ms: u64,
    election_ms: u64,
    nodes: Vec<EtcdNode>,
}

impl EtcdCluster {
    fn new(binary: &str, dir: &Path, heartbeat_ms: u64, election_ms: u64) -> Result<EtcdCluster, String> {
        let ports = free_ports(6).map_err(|error| format!("no free ports: {error}"))?;
        let nodes = (0..3)
            .map(|i| EtcdNode {
                name: format!("etcd{}", i + 1),
                client: format!("127.0.0.1:{}", ports[2 * i]),
                peer: format!("127.0.0.1:{}", ports[2 * i + 1]),
                child: None,
            })
            .collect();
        std::fs::create_dir_all(dir.join("logs")).map_err(|error| format!("{}: {error}", dir.display()))?;
        Ok(EtcdCluster {
            binary: binary.to_string(),
            dir: dir.to_path_buf(),
            heartbeat_ms,
            election_ms,
            nodes,
        })
    }

    fn start(&mut self, index: usize) -> Result<(), String> {
        let initial: Vec<String> =
            self.nodes.iter().map(|n| format!("{}=http://{}", n.name, n.peer)).collect();
        let node = &self.nodes[index];
        let log_path = self.dir.join("logs").join(format!("{}.log", node.name));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|error| format!("{}: {error}", log_path.display()))?;
        let log_err = log.try_clone().map_err(|error| format!("{}: {error}", log_path.display()))?;
        let child = Command::new(&self.binary)
            .arg("--name")
            .arg(&node.name)
            .arg("--data-dir")
            .arg(self.dir.join("data").join(&node.name))
            .arg("--listen-client-urls")
            .arg(format!("http://{}", node.client))
            .arg("--advertise-client-urls")
            .arg(format!("http://{}", node.client))
            .arg("--listen-peer-urls")
            .arg(format!("http://{}", node.peer))
            .arg("--initial-advertise-peer-urls")
            .arg(format!("http://{}", node.peer))
            .arg("--initial-cluster")
            .arg(initial.join(","))
            .arg("--initial-cluster-state")
            .arg("new")
            .arg("--initial-cluster-token")
            .arg("opkv-compare")
            .arg("--heartbeat-interval")
            .arg(self.heartbeat_ms.to_string())
            .arg("--election-timeout")
            .arg(self.election_ms.to_string())
            .arg("--logger")
            .arg("zap")
            .arg("--log-level")
            .arg("warn")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| format!("cannot start {} ({}): {error}", self.binary, node.name))?;
        self.nodes[index].child = Some(child);
        Ok(())
    }
}

impl Cluster {
    fn endpoints(&self) -> Vec<String> {
        match self {
            Cluster::Ours(cluster) => cluster.endpoints(),
            Cluster::Etcd(cluster) => cluster.nodes.iter().map(|n| n.client.clone()).collect(),
        }
    }

    /// Node indices (0-based) with their pid, of the running nodes.
    fn pids(&self) -> Vec<(usize, u32)> {
        match self {
            Cluster::Ours(cluster) => cluster
                .ids()
                .into_iter()
                .enumerate()
                .filter_map(|(index, id)| cluster.pid(id).map(|pid| (index, pid)))
                .collect(),
            Cluster::Etcd(cluster) => cluster
                .nodes
                .iter()
                .enumerate()
                .filter_map(|(index, n)| n.child.as_ref().and_then(|c| c.id()).map(|pid| (index, pid)))
                .collect(),
        }
    }

    /// The leader's index, once every running node agrees on it.
    async fn leader(&self) -> Result<usize, String> {
        let running: Vec<usize> = self.pids().into_iter().map(|(index, _)| index).collect();
        let endpoints = self.endpoints();
        match self {
            Cluster::Ours(cluster) => {
                let client = Client::new(&endpoints).map_err(|error| error.to_string())?;
                let ids = cluster.ids();
                let mut leaders = Vec::new();
                for &index in &running {
                    let status =
                        client.status_of(&endpoints[index]).await.map_err(|error| error.to_string())?;
                    leaders.push(status.leader_ready.then_some(status.leader).flatten());
                }
                match leaders.first() {
                    Some(Some(leader)) if leaders.iter().all(|l| l == &Some(*leader)) => {
                        ids.iter().position(|id| id == leader).ok_or_else(|| "unknown leader id".to_string())
                    }
                    _ => Err(format!("no agreed leader yet: {leaders:?}")),
                }
            }
            Cluster::Etcd(_) => {
                let mut members = Vec::new();
                for &index in &running {
                    members.push((index, member_status(&endpoints[index]).await?));
                }
                let leader = members.first().map(|(_, (_, leader))| *leader).unwrap_or(0);
                if leader == 0 || members.iter().any(|(_, (_, l))| *l != leader) {
                    return Err(format!("no agreed leader yet: {members:?}"));
                }
                members
                    .iter()
                    .find(|(_, (member, _))| *member == leader)
                    .map(|(index, _)| *index)
                    .ok_or_else(|| "the leader is not a running member".to_string())
            }
        }
    }

    /// Waits (bounded) until every running node agrees on a leader.
    async fn wait_ready(&self, timeout: Duration) -> Result<usize, String> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.leader().await {
                Ok(leader) => return Ok(leader),
                Err(error) if Instant::now() >= deadline => {
                    return Err(format!("no leader within {timeout:?}: {error}"))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    async fn kill(&mut self, index: usize) {
        match self {
            Cluster::Ours(cluster) => {
                let id = cluster.ids()[index];
                cluster.kill(id).await;
            }
            Cluster::Etcd(cluster) => {
                if let Some(mut child) = cluster.nodes[index].child.take() {
                    let _ = child.kill().await;
                }
            }
        }
    }

    fn restart(&mut self, index: usize) -> Result<(), String> {
        match self {
            Cluster::Ours(cluster) => {
                let id = cluster.ids()[index];
                cluster.start(id, false, &[]).map(|_| ()).map_err(|error| error.to_string())
            }
            Cluster::Etcd(cluster) => cluster.start(index),
        }
    }

    async fn stop_all(&mut self) {
        match self {
            Cluster::Ours(cluster) => cluster.stop_all().await,
            Cluster::Etcd(cluster) => {
                for node in &mut cluster.nodes {
                    if let Some(pid) = node.child.as_ref().and_then(|c| c.id()) {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid as i32),
                            nix::sys::signal::Signal::SIGTERM,
                        );
                    }
                }
                for node in &mut cluster.nodes {
                    if let Some(mut child) = node.child.take() {
                        if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
                            let _ = child.kill().await;
                        }
                    }
                }
            }
        }
    }
}

async fn start_cluster(system: System, args: &CompareArgs) -> Result<Cluster, String> {
    let dir = args.work_dir.join(system.name());
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|error| format!("{}: {error}", dir.display()))?;
    }
    let cluster = match system {
        System::Ours => {
            let binary = std::env::current_exe().map_err(|error| format!("cannot find opkv: {error}"))?;
            let (mut cluster, _) = LocalCluster::open(&binary, &dir, 3, &ServerSettings::default())
                .map_err(|error| error.to_string())?;
            for id in cluster.ids() {
                cluster.start(id, true, &[]).map_err(|error| error.to_string())?;
            }
            Cluster::Ours(cluster)
        }
        System::Etcd => {
            let mut cluster =
                EtcdCluster::new(&args.etcd_bin, &dir, args.etcd_heartbeat_ms, args.etcd_election_ms)?;
            for index in 0..3 {
                cluster.start(index)?;
            }
            Cluster::Etcd(cluster)
        }
    };
    match cluster.wait_ready(READY_TIMEOUT).await {
        Ok(_) => Ok(cluster),
        Err(error) => {
            let mut cluster = cluster;
            cluster.stop_all().await;
            Err(format!("{}: {error} (logs in {})", system.name(), dir.display()))
        }
    }
}

/// A benchmark target over `endpoints` of `system`, shared by tasks.
enum AnyTarget {
    Ours(OpkvTarget),
    Etcd(EtcdTarget),
}

impl AnyTarget {
    async fn new(system: System, endpoints: &[String], clients: usize) -> Result<AnyTarget, String> {
        Ok(match system {
            System::Ours => AnyTarget::Ours(OpkvTarget { endpoints: endpoints.to_vec() }),
            System::Etcd => {
                AnyTarget::Etcd(EtcdTarget::connect(endpoints, default_connections(clients)).await?)
            }
        })
    }

    async fn bench(
        &self,
        args: &BenchArgs,
        observe: &mut (dyn FnMut(Phase) + Send),
    ) -> Result<BenchReport, String> {
        match self {
            AnyTarget::Ours(target) => run_bench_observed(target, args, observe).await,
            AnyTarget::Etcd(target) => run_bench_observed(target, args, observe).await,
        }
    }

    async fn put(&self, index: usize, key: &str, value: &str) -> Result<(), String> {
        match self {
            AnyTarget::Ours(target) => {
                let mut client = target.connect(index).await?;
                BenchClient::put(&mut client, key, value).await.map_err(|error| format!("{error:?}"))
            }
            AnyTarget::Etcd(target) => {
                let mut client = target.connect(index).await?;
                BenchClient::put(&mut client, key, value).await.map_err(|error| format!("{error:?}"))
            }
        }
    }
}

/// A steady write load: `clients` writers, each with its own client, counting acknowledged
/// writes per bucket from `origin`.
fn spawn_writers(
    target: Arc<AnyTarget>,
    clients: usize,
    origin: Instant,
    buckets: Arc<Vec<AtomicU64>>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..clients)
        .map(|index| {
            let (target, buckets, stop) = (target.clone(), buckets.clone(), stop.clone());
            tokio::spawn(async move {
                macro_rules! write_loop {
                    ($client:expr) => {{
                        let mut client = $client;
                        let mut n = 0u64;
                        while !stop.load(Ordering::Acquire) {
                            n += 1;
                            let key = format!("failover/{index}/{}", n % 100);
                            let ok = BenchClient::put(&mut client, &key, "0123456789abcdef").await.is_ok();
                            if ok {
                                let bucket = (origin.elapsed().as_millis() as u64 / BUCKET_MS) as usize;
                                if let Some(count) = buckets.get(bucket) {
                                    count.fetch_add(1, Ordering::Relaxed);
                                }
                            } else {
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                        }
                    }};
                }
                match &*target {
                    AnyTarget::Ours(t) => {
                        if let Ok(client) = t.connect(index).await {
                            write_loop!(client)
                        }
                    }
                    AnyTarget::Etcd(t) => {
                        if let Ok(client) = t.connect(index).await {
                            write_loop!(client)
                        }
                    }
                }
            })
        })
        .collect()
}

/// Starts a probe write to the survivors every 10 ms after the kill; the first acknowledged
/// probe ends the measurement (bounded by 15 s).
async fn probe_until_write(probe: Arc<AnyTarget>, killed_at: Instant) -> Result<Duration, String> {
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<Instant>(16);
    let mut probes = tokio::task::JoinSet::new();
    let deadline = killed_at + Duration::from_secs(15);
    let mut interval = tokio::time::interval(Duration::from_millis(10));
    let mut n = 0usize;
    loop {
        tokio::select! {
            done = done_rx.recv() => {
                probes.abort_all();
                return done.map(|at| at.duration_since(killed_at)).ok_or_else(|| "probes ended".to_string());
            }
            _ = interval.tick() => {
                if Instant::now() >= deadline {
                    probes.abort_all();
                    return Err("no write succeeded within 15 s of the kill".to_string());
                }
                if probes.len() < 256 {
                    n += 1;
                    let (probe, done) = (probe.clone(), done_tx.clone());
                    probes.spawn(async move {
                        if probe.put(n, &format!("probe/{n}"), "p").await.is_ok() {
                            let _ = done.send(Instant::now()).await;
                        }
                    });
                }
            }
        }
    }
}

async fn failover_run(
    cluster: &mut Cluster,
    system: System,
    args: &CompareArgs,
    run: usize,
) -> Result<FailoverResult, String> {
    let leader = cluster.wait_ready(READY_TIMEOUT).await?;
    let endpoints = cluster.endpoints();
    let survivors: Vec<String> =
        endpoints.iter().enumerate().filter(|(i, _)| *i != leader).map(|(_, e)| e.clone()).collect();
    let load = Arc::new(AnyTarget::new(system, &endpoints, args.failover_clients).await?);
    let probe = Arc::new(AnyTarget::new(system, &survivors, 40).await?);
    let pre_kill = Duration::from_millis(if args.smoke { 500 } else { 2000 });
    let post_kill = Duration::from_millis(if args.smoke { 1500 } else { 3000 });
    let buckets: Arc<Vec<AtomicU64>> = Arc::new(
        (0..((pre_kill + post_kill + Duration::from_secs(20)).as_millis() as u64 / BUCKET_MS))
            .map(|_| AtomicU64::new(0))
            .collect(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let origin = Instant::now();
    let writers = spawn_writers(load, args.failover_clients, origin, buckets.clone(), stop.clone());
    tokio::time::sleep(pre_kill).await;
    let killed_at = Instant::now();
    cluster.kill(leader).await;
    let measured = probe_until_write(probe, killed_at).await;
    let after = killed_at + measured.as_ref().map_or(Duration::ZERO, |d| *d) + post_kill;
    tokio::time::sleep_until(tokio::time::Instant::from_std(after)).await;
    stop.store(true, Ordering::Release);
    for writer in writers {
        let _ = tokio::time::timeout(Duration::from_secs(10), writer).await;
    }
    let kill_offset_ms = killed_at.duration_since(origin).as_millis() as u64;
    let end_bucket = (after.duration_since(origin).as_millis() as u64 / BUCKET_MS) as usize;
    let first_bucket = (kill_offset_ms.saturating_sub(pre_kill.as_millis() as u64) / BUCKET_MS) as usize;
    let timeline: Vec<u64> = buckets
        .iter()
        .take(end_bucket)
        .skip(first_bucket)
        .map(|count| count.load(Ordering::Relaxed))
        .collect();
    cluster.restart(leader)?;
    cluster.wait_ready(READY_TIMEOUT).await?;
    let (failover_ms, error) = match measured {
        Ok(duration) => (Some(duration.as_secs_f64() * 1000.0), None),
        Err(error) => (None, Some(error)),
    };
    Ok(FailoverResult {
        kind: "failover",
        system,
        run,
        failover_ms,
        error,
        timeline,
        bucket_ms: BUCKET_MS,
        pre_kill_ms: kill_offset_ms - first_bucket as u64 * BUCKET_MS,
    })
}

async fn run_cell(cluster: &Cluster, system: System, bench: &BenchArgs) -> Result<CellResult, String> {
    let pids: Vec<u32> = cluster.pids().into_iter().map(|(_, pid)| pid).collect();
    let target = AnyTarget::new(system, &cluster.endpoints(), bench.clients).await?;
    let samples: Arc<Mutex<(Vec<ProcSample>, Vec<ProcSample>)>> = Arc::default();
    let mut observe = {
        let (samples, pids) = (samples.clone(), pids.clone());
        move |phase: Phase| {
            let now: Vec<ProcSample> = pids.iter().map(|pid| sample(*pid)).collect();
            if let Ok(mut samples) = samples.lock() {
                match phase {
                    Phase::MeasureStart => samples.0 = now,
                    Phase::MeasureEnd => samples.1 = now,
                }
            }
        }
    };
    let report = target.bench(bench, &mut observe).await?;
    let (start, end) = samples.lock().map(|s| s.clone()).unwrap_or_default();
    let cpu_ticks: u64 = start.iter().zip(&end).map(|(a, b)| b.cpu_ticks.saturating_sub(a.cpu_ticks)).sum();
    let written: u64 = start.iter().zip(&end).map(|(a, b)| b.write_bytes.saturating_sub(a.write_bytes)).sum();
    let ops = report.ops.max(1) as f64;
    Ok(CellResult {
        kind: "cell",
        system,
        cpu_s_per_1k_ops: cpu_ticks as f64 / CLOCK_TICKS_PER_S / ops * 1000.0,
        disk_bytes_per_op: written as f64 / ops,
        rss_mib: end.iter().map(|s| s.rss_kib as f64 / 1024.0).collect(),
        load_average: load_average(),
        report,
    })
}

/// Everything one run produced.
#[derive(Default)]
struct Results {
    cells: Vec<CellResult>,
    failovers: Vec<FailoverResult>,
}

/// Runs `opkv compare-etcd`; returns the exit code.
pub async fn run(mut args: CompareArgs) -> i32 {
    if args.smoke {
        args.clients = vec![4];
        args.value_sizes = vec![64];
        args.duration_s = args.duration_s.min(1.0);
        args.warmup_s = args.warmup_s.min(0.3);
        args.failovers = args.failovers.min(1);
    }
    if let Err(error) = std::fs::create_dir_all(&args.out) {
        eprintln!("opkv compare-etcd: {}: {error}", args.out.display());
        return 1;
    }
    let jsonl_path = args.out.join("results.jsonl");
    let mut jsonl = match std::fs::File::create(&jsonl_path) {
        Ok(file) => file,
        Err(error) => {
            eprintln!("opkv compare-etcd: {}: {error}", jsonl_path.display());
            return 1;
        }
    };
    let started = Instant::now();
    let mut results = Results::default();
    let mut failed = false;
    eprintln!("load average at start: {}", load_average());
    for &system in &args.systems {
        eprintln!("== {}: starting a 3-node cluster", system.name());
        let mut cluster = match start_cluster(system, &args).await {
            Ok(cluster) => cluster,
            Err(error) => {
                eprintln!("opkv compare-etcd: {error}");
                failed = true;
                continue;
            }
        };
        let interrupted = tokio::select! {
            outcome = run_system(&mut cluster, system, &args, &mut results, &mut jsonl) => {
                if let Err(error) = outcome {
                    eprintln!("opkv compare-etcd: {}: {error}", system.name());
                    failed = true;
                }
                false
            }
            _ = tokio::signal::ctrl_c() => true,
        };
        eprintln!("== {}: stopping the cluster", system.name());
        cluster.stop_all().await;
        let dir = args.work_dir.join(system.name());
        if !args.keep_data && !failed {
            if let Err(error) = std::fs::remove_dir_all(&dir) {
                eprintln!("opkv compare-etcd: cannot remove {}: {error}", dir.display());
            }
        }
        if interrupted {
            eprintln!("interrupted");
            return 130;
        }
    }
    eprintln!("load average at end: {} ({:.0} s in all)", load_average(), started.elapsed().as_secs_f64());
    let tables = tables(&results, &args);
    print!("{tables}");
    let tables_path = args.out.join("tables.md");
    if let Err(error) = std::fs::write(&tables_path, &tables) {
        eprintln!("opkv compare-etcd: {}: {error}", tables_path.display());
        failed = true;
    }
    if !args.no_charts {
        if let Err(error) = crate::compare_charts::draw_all(&results.cells, &results.failovers, &args.out) {
            eprintln!("opkv compare-etcd: charts: {error}");
            failed = true;
        }
    }
    if failed {
        1
    } else {
        0
    }
}

async fn run_system(
    cluster: &mut Cluster,
    system: System,
    args: &CompareArgs,
    results: &mut Results,
    jsonl: &mut std::fs::File,
) -> Result<(), String> {
    for &value_size in &args.value_sizes {
        for &workload in &args.workloads {
            for &clients in &args.clients {
                let bench = BenchArgs {
                    clients,
                    keys: args.keys,
                    value_size,
                    workload,
                    duration_s: args.duration_s,
                    warmup_s: args.warmup_s,
                    ..BenchArgs::default()
                };
                let cell = run_cell(cluster, system, &bench).await?;
                let r = &cell.report;
                eprintln!(
                    "{:<4} {:<6} {:>4} B {:>3} clients: {:>8.0} ops/s  p50 {:>6} µs  p99 {:>7} µs  p99.9 {:>7} µs  cpu {:.3} s/1k ops  disk {:.0} B/op  errors {}",
                    system.name(),
                    format!("{workload:?}").to_lowercase(),
                    value_size,
                    clients,
                    r.ops_per_second,
                    r.latency_us_p50,
                    r.latency_us_p99,
                    r.latency_us_p999,
                    cell.cpu_s_per_1k_ops,
                    cell.disk_bytes_per_op,
                    r.errors.values().sum::<u64>() + r.unknown_outcomes
                );
                let _ = writeln!(jsonl, "{}", serde_json::to_string(&cell).unwrap_or_default());
                results.cells.push(cell);
            }
        }
    }
    for run in 0..args.failovers {
        let result = failover_run(cluster, system, args, run).await?;
        eprintln!(
            "{:<4} failover run {}: {}",
            system.name(),
            run + 1,
            result.failover_ms.map_or_else(
                || result.error.clone().unwrap_or_default(),
                |ms| format!("{ms:.0} ms to the first acknowledged write")
            )
        );
        let _ = writeln!(jsonl, "{}", serde_json::to_string(&result).unwrap_or_default());
        results.failovers.push(result);
    }
    Ok(())
}

fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 { values[mid] } else { (values[mid - 1] + values[mid]) / 2.0 })
}

fn ratio(ours: f64, etcd: f64) -> String {
    if etcd > 0.0 {
        format!("{:.2}×", ours / etcd)
    } else {
        "–".into()
    }
}

/// The markdown tables: per cell ours and etcd side by side with ratios, resources, failover.
fn tables(results: &Results, args: &CompareArgs) -> String {
    let find = |system: System, workload: Workload, value_size: usize, clients: usize| {
        results.cells.iter().find(|c| {
            c.system == system
                && c.report.workload == workload
                && c.report.value_size == value_size
                && c.report.clients == clients
        })
    };
    let mut out = String::new();
    out.push_str(&format!(
        "Measured {:.0} s per cell after {:.0} s of warm-up; {} keys; 3 nodes on loopback.\n\n",
        args.duration_s, args.warmup_s, args.keys
    ));
    out.push_str("### Throughput and latency\n\n");
    out.push_str("| workload | value | clients | ours ops/s | etcd ops/s | ours ÷ etcd | ours p50 / p99 / p99.9 ms | etcd p50 / p99 / p99.9 ms | errors ours / etcd |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let ms = |us: u64| us as f64 / 1000.0;
    let errors = |c: Option<&CellResult>| {
        c.map_or("–".to_string(), |c| {
            (c.report.errors.values().sum::<u64>() + c.report.unknown_outcomes).to_string()
        })
    };
    for &workload in &args.workloads {
        for &value_size in &args.value_sizes {
            for &clients in &args.clients {
                let ours = find(System::Ours, workload, value_size, clients);
                let etcd = find(System::Etcd, workload, value_size, clients);
                let ops = |c: Option<&CellResult>| {
                    c.map_or("–".to_string(), |c| format!("{:.0}", c.report.ops_per_second))
                };
                let lat = |c: Option<&CellResult>| {
                    c.map_or("–".to_string(), |c| {
                        format!(
                            "{:.2} / {:.2} / {:.2}",
                            ms(c.report.latency_us_p50),
                            ms(c.report.latency_us_p99),
                            ms(c.report.latency_us_p999)
                        )
                    })
                };
                let r = match (ours, etcd) {
                    (Some(o), Some(e)) => ratio(o.report.ops_per_second, e.report.ops_per_second),
                    _ => "–".into(),
                };
                out.push_str(&format!(
                    "| {} | {} B | {} | {} | {} | {} | {} | {} | {} / {} |\n",
                    format!("{workload:?}").to_lowercase(),
                    value_size,
                    clients,
                    ops(ours),
                    ops(etcd),
                    r,
                    lat(ours),
                    lat(etcd),
                    errors(ours),
                    errors(etcd)
                ));
            }
        }
    }
    out.push_str("\n### Resources (the three server processes)\n\n");
    out.push_str("| workload | value | clients | CPU s / 1k ops ours | etcd | disk bytes written / op ours | etcd | RSS MiB per node ours | etcd |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let rss = |c: Option<&CellResult>| {
        c.map_or("–".to_string(), |c| {
            c.rss_mib.iter().map(|m| format!("{m:.0}")).collect::<Vec<_>>().join(", ")
        })
    };
    for &workload in &args.workloads {
        for &value_size in &args.value_sizes {
            for &clients in &args.clients {
                let ours = find(System::Ours, workload, value_size, clients);
                let etcd = find(System::Etcd, workload, value_size, clients);
                let cpu = |c: Option<&CellResult>| {
                    c.map_or("–".to_string(), |c| format!("{:.3}", c.cpu_s_per_1k_ops))
                };
                let disk = |c: Option<&CellResult>| {
                    c.map_or("–".to_string(), |c| format!("{:.0}", c.disk_bytes_per_op))
                };
                out.push_str(&format!(
                    "| {} | {} B | {} | {} | {} | {} | {} | {} | {} |\n",
                    format!("{workload:?}").to_lowercase(),
                    value_size,
                    clients,
                    cpu(ours),
                    cpu(etcd),
                    disk(ours),
                    disk(etcd),
                    rss(ours),
                    rss(etcd)
                ));
            }
        }
    }
    let peak = |system: System| {
        results
            .cells
            .iter()
            .filter(|c| c.system == system)
            .flat_map(|c| c.rss_mib.iter().copied())
            .fold(0.0f64, f64::max)
    };
    out.push_str(&format!(
        "\nPeak RSS of a node over the matrix: ours {:.0} MiB, etcd {:.0} MiB.\n",
        peak(System::Ours),
        peak(System::Etcd)
    ));
    out.push_str("\n### Failover (leader SIGKILL under a steady write load)\n\n");
    out.push_str(
        "| system | runs (ms to the first acknowledged write after the kill) | median ms |\n|---|---|---:|\n",
    );
    let mut by_system: BTreeMap<&str, Vec<&FailoverResult>> = BTreeMap::new();
    for result in &results.failovers {
        by_system.entry(result.system.name()).or_default().push(result);
    }
    for (system, runs) in by_system {
        let mut measured: Vec<f64> = runs.iter().filter_map(|r| r.failover_ms).collect();
        let shown: Vec<String> = runs
            .iter()
            .map(|r| r.failover_ms.map_or_else(|| "failed".to_string(), |ms| format!("{ms:.0}")))
            .collect();
        out.push_str(&format!(
            "| {system} | {} | {} |\n",
            shown.join(", "),
            median(&mut measured).map_or("–".into(), |m| format!("{m:.0}"))
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let mut spin = 0u64;
        for i in 0..50_000_000u64 {
            spin = spin.wrapping_add(i ^ (spin >> 3));
        }
        assert_ne!(spin, 1);
        let now = sample(std::process::id());
        assert!(now.rss_kib > 0, "{now:?}");
        assert!(now.cpu_ticks > 0, "{now:?}");
        assert_eq!(sample(u32::MAX).rss_kib, 0, "a missing process reads as zeros");
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }
}
