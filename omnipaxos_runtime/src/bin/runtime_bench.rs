//! Throughput and latency of a 3-node cluster in one process over loopback TCP.
//!
//! ```sh
//! cargo run --release -p omnipaxos_runtime --bin runtime_bench               # full matrix
//! cargo run --release -p omnipaxos_runtime --bin runtime_bench -- --smoke    # a few seconds
//! ```
//!
//! Options: `--seconds S` (measured time per cell, default 3), `--warmup S` (default 1),
//! `--storage memory,persistent`, `--sizes 16,256`, `--proposers 1,16,256,4096`,
//! `--piggyback-decide` (decisions ride on the next AcceptDecide), `--dir PATH` (where persistent data directories go, default `target/runtime_bench`; it must
//! be on the disk you want to measure).
//!
//! Environment: `BENCH_LOG_ERRORS=1` prints every append that failed; `BENCH_ELECTION_TIMEOUT_TICKS=N` sets
//! the election's heartbeat round to `N` ticks instead of the runtime's default.
//!
//! Each cell starts three nodes (a fresh data directory each with `PersistentStorage`, fsync
//! on), waits for a leader that stays, runs `P` proposer tasks that each `append` one entry at
//! a time through the leader's handle, and consumes every node's decided stream. Reported:
//! appends completed per second in the measured window, append-to-decided p50/p99 (the
//! `append` future's latency), decided entries/s at the leader, flushes (`fdatasync`s with
//! `PersistentStorage`) per second over the three nodes, and process CPU time (all three nodes,
//! the proposers and the consumers; from `/proc/self/stat`) per decided entry.
//!
//! Before the matrix it measures one `fdatasync` of a small write in the data directory and
//! one loopback TCP round trip, for the single-proposer target (p50 <= 2 fsyncs + 2 round
//! trips).

use std::{
    fmt,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use omnipaxos_runtime::{AppendError, Node, NodeConfig, NodeHandle, PeerConfig, StorageConfig};
use serde::{de::Visitor, Deserialize, Deserializer, Serialize, Serializer};

/// An entry of `len` bytes, serialized as one byte string (not byte by byte).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Blob(Vec<u8>);

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BlobVisitor;
        impl<'de> Visitor<'de> for BlobVisitor {
            type Value = Blob;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E>(self, bytes: &[u8]) -> Result<Blob, E> {
                Ok(Blob(bytes.to_vec()))
            }
            fn visit_byte_buf<E>(self, bytes: Vec<u8>) -> Result<Blob, E> {
                Ok(Blob(bytes))
            }
        }
        deserializer.deserialize_byte_buf(BlobVisitor)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StorageKind {
    Memory,
    Persistent,
}

impl fmt::Display for StorageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StorageKind::Memory => "memory",
            StorageKind::Persistent => "persistent",
        })
    }
}

struct Options {
    seconds: f64,
    warmup: f64,
    storages: Vec<StorageKind>,
    sizes: Vec<usize>,
    proposers: Vec<usize>,
    dir: PathBuf,
    piggyback_decide: bool,
}

fn parse_list<T: std::str::FromStr>(value: &str) -> Vec<T> {
    value
        .split(',')
        .map(|item| item.trim().parse().unwrap_or_else(|_| usage(&format!("bad list item {item}"))))
        .collect()
}

fn usage(problem: &str) -> ! {
    eprintln!("runtime_bench: {problem}");
    eprintln!("usage: runtime_bench [--smoke] [--seconds S] [--warmup S] [--storage memory,persistent] [--sizes 16,256] [--proposers 1,16,256,4096] [--piggyback-decide] [--dir PATH]");
    std::process::exit(2)
}

fn parse_options() -> Options {
    let mut options = Options {
        seconds: 3.0,
        warmup: 1.0,
        storages: vec![StorageKind::Memory, StorageKind::Persistent],
        sizes: vec![16, 256],
        proposers: vec![1, 16, 256, 4096],
        dir: PathBuf::from("target/runtime_bench"),
        piggyback_decide: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage(&format!("{arg} needs a value")));
        match arg.as_str() {
            "--smoke" => {
                options.seconds = 0.3;
                options.warmup = 0.2;
                options.sizes = vec![16];
                options.proposers = vec![1, 256];
            }
            "--seconds" => options.seconds = value().parse().unwrap_or_else(|_| usage("bad --seconds")),
            "--warmup" => options.warmup = value().parse().unwrap_or_else(|_| usage("bad --warmup")),
            "--sizes" => options.sizes = parse_list(&value()),
            "--proposers" => options.proposers = parse_list(&value()),
            "--dir" => options.dir = PathBuf::from(value()),
            "--piggyback-decide" => options.piggyback_decide = true,
            "--storage" => {
                options.storages = value()
                    .split(',')
                    .map(|kind| match kind {
                        "memory" => StorageKind::Memory,
                        "persistent" => StorageKind::Persistent,
                        other => usage(&format!("unknown storage {other}")),
                    })
                    .collect()
            }
            other => usage(&format!("unknown argument {other}")),
        }
    }
    options
}

/// User plus system CPU time of this process, from `/proc/self/stat` (clock ticks of 10 ms).
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of the file (utime, stime) are at 11 and 12 after the name.
    let ticks = |at: usize| fields.get(at).and_then(|field| field.parse::<u64>().ok()).unwrap_or(0);
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

fn percentile(sorted_us: &[u32], fraction: f64) -> u32 {
    if sorted_us.is_empty() {
        return 0;
    }
    let at = ((sorted_us.len() - 1) as f64 * fraction).round() as usize;
    sorted_us[at]
}

/// p50 of one 64-byte write + `fdatasync` in `dir`, into a preallocated, synced file (as the
/// write-ahead log writes into preallocated segments, so no sync has to write file-size
/// metadata).
fn measure_fsync_us(dir: &Path) -> u32 {
    use std::os::unix::fs::FileExt;
    std::fs::create_dir_all(dir).expect("bench directory");
    let path = dir.join("fsync_probe");
    let file =
        std::fs::OpenOptions::new().create(true).write(true).truncate(true).open(&path).expect("probe file");
    file.write_all_at(&vec![0u8; 1 << 20], 0).expect("preallocate");
    file.sync_all().expect("sync");
    let mut samples = Vec::new();
    for i in 0..300u64 {
        let start = Instant::now();
        file.write_all_at(&i.to_le_bytes().repeat(8), i * 64).expect("write");
        file.sync_data().expect("fdatasync");
        samples.push(start.elapsed().as_micros() as u32);
    }
    let _ = std::fs::remove_file(&path);
    samples.sort_unstable();
    percentile(&samples, 0.5)
}

/// p50 of a 64-byte ping-pong over loopback TCP (TCP_NODELAY), threads on both sides.
fn measure_loopback_rtt_us() -> u32 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().unwrap();
    let echo = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        stream.set_nodelay(true).unwrap();
        let mut buffer = [0u8; 64];
        while stream.read_exact(&mut buffer).is_ok() {
            if stream.write_all(&buffer).is_err() {
                break;
            }
        }
    });
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).unwrap();
    let mut buffer = [7u8; 64];
    let mut samples = Vec::new();
    for _ in 0..2000 {
        let start = Instant::now();
        stream.write_all(&buffer).unwrap();
        stream.read_exact(&mut buffer).unwrap();
        samples.push(start.elapsed().as_micros() as u32);
    }
    drop(stream);
    let _ = echo.join();
    samples.sort_unstable();
    percentile(&samples, 0.5)
}

struct Cluster {
    nodes: Vec<Node<Blob>>,
    consumers: Vec<tokio::task::JoinHandle<()>>,
}

async fn start_cluster(storage: StorageKind, dir: &Path, piggyback_decide: bool) -> Cluster {
    let listeners: Vec<TcpListener> =
        (0..3).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind")).collect();
    let addrs: Vec<SocketAddr> = listeners.iter().map(|listener| listener.local_addr().unwrap()).collect();
    let mut nodes = Vec::new();
    let mut consumers = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let id = i as u64 + 1;
        let peers =
            (0..3).filter(|j| *j != i).map(|j| PeerConfig { id: j as u64 + 1, addr: addrs[j] }).collect();
        let mut config = NodeConfig::new(id, 1, peers);
        config.core.sequence_paxos.set_piggyback_decide(piggyback_decide);
        if let Some(hb) = std::env::var("BENCH_ELECTION_TIMEOUT_TICKS").ok().and_then(|v| v.parse().ok()) {
            config.core.set_election_timeout_ticks(hb);
        }
        if storage == StorageKind::Persistent {
            config.storage = StorageConfig::persistent_bootstrap(dir.join(format!("node{id}")));
        }
        let (node, mut decided) =
            Node::<Blob>::builder(config).listener(listener).start().await.expect("node starts");
        consumers.push(tokio::spawn(async move { while decided.recv_batch().await.is_some() {} }));
        nodes.push(node);
    }
    Cluster { nodes, consumers }
}

/// The node that leads, once the same leader held for half a second.
async fn stable_leader(cluster: &Cluster) -> NodeHandle<Blob> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut held: Option<(u64, Instant)> = None;
    loop {
        let statuses: Vec<_> = cluster.nodes.iter().map(|node| node.handle().status()).collect();
        let leader = statuses.iter().find(|s| s.is_leader).map(|s| s.node_id);
        let agreed = leader.filter(|id| statuses.iter().all(|s| s.leader == Some(*id) && s.leader_ready));
        match (agreed, held) {
            (Some(id), Some((seen, since)))
                if id == seen && since.elapsed() >= Duration::from_millis(500) =>
            {
                return cluster.nodes[id as usize - 1].handle();
            }
            (Some(id), Some((seen, _))) if id == seen => {}
            (agreed, _) => held = agreed.map(|id| (id, Instant::now())),
        }
        assert!(Instant::now() < deadline, "no stable leader: {statuses:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `proposers` tasks, each appending one entry of `size` bytes at a time through `leader`
/// until `stop`; each returns the latencies of the appends that completed while `measuring`.
fn spawn_proposers(
    leader: &NodeHandle<Blob>,
    proposers: usize,
    size: usize,
    measuring: &Arc<AtomicBool>,
    stop: &Arc<AtomicBool>,
    errors: &Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<Vec<u32>>> {
    let mut tasks = Vec::new();
    for p in 0..proposers {
        let (leader, measuring, stop, errors) =
            (leader.clone(), measuring.clone(), stop.clone(), errors.clone());
        let blob = Blob(vec![p as u8; size]);
        tasks.push(tokio::spawn(async move {
            let mut latencies_us = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                match leader.append(blob.clone()).await {
                    Ok(_) if measuring.load(Ordering::Relaxed) => {
                        latencies_us.push(start.elapsed().as_micros() as u32)
                    }
                    Ok(_) => {}
                    Err(error) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        if std::env::var_os("BENCH_LOG_ERRORS").is_some() {
                            eprintln!("append error: {error:?}");
                        }
                        if matches!(error, AppendError::NotLeaderReachable | AppendError::Overloaded) {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                }
            }
            latencies_us
        }));
    }
    tasks
}

struct CellResult {
    /// Flush latency over the three nodes in the window (fdatasync with persistent storage).
    flush_p50_us: u32,
    flush_p99_us: u32,
    appends_per_second: f64,
    decided_per_second: f64,
    p50_us: u32,
    p99_us: u32,
    flushes_per_second: f64,
    cpu_us_per_entry: f64,
    errors: u64,
}

async fn run_cell(storage: StorageKind, size: usize, proposers: usize, options: &Options) -> CellResult {
    let dir = options.dir.join(format!("cell-{}-{storage}-{size}-{proposers}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cluster = start_cluster(storage, &dir, options.piggyback_decide).await;
    let leader = stable_leader(&cluster).await;
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let tasks = spawn_proposers(&leader, proposers, size, &measuring, &stop, &errors);
    tokio::time::sleep(Duration::from_secs_f64(options.warmup)).await;
    let flushes = |cluster: &Cluster| {
        let statuses: Vec<_> = cluster.nodes.iter().map(|node| node.handle().status()).collect();
        let count: u64 = statuses.iter().map(|status| status.flushes).sum();
        let histogram = statuses
            .iter()
            .skip(1)
            .fold(statuses[0].flush_latency.clone(), |all, status| all.merged(&status.flush_latency));
        (count, histogram)
    };
    let (decided_before, (flushes_before, flush_latency_before), cpu_before, start) =
        (leader.status().decided_idx, flushes(&cluster), process_cpu(), Instant::now());
    measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(options.seconds)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    let (decided_after, (flushes_after, flush_latency_after), cpu_after) =
        (leader.status().decided_idx, flushes(&cluster), process_cpu());
    stop.store(true, Ordering::Relaxed);
    let mut latencies_us = Vec::new();
    for task in tasks {
        latencies_us.extend(task.await.expect("proposer"));
    }
    latencies_us.sort_unstable();
    for node in cluster.nodes {
        node.shutdown().await;
    }
    for consumer in cluster.consumers {
        let _ = consumer.await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    let decided = decided_after - decided_before;
    let flush_window = flush_latency_after.since(&flush_latency_before);
    let flush_us = |q| flush_window.quantile(q).map_or(0, |latency| latency.as_micros() as u32);
    CellResult {
        flush_p50_us: flush_us(0.5),
        flush_p99_us: flush_us(0.99),
        appends_per_second: latencies_us.len() as f64 / elapsed,
        decided_per_second: decided as f64 / elapsed,
        p50_us: percentile(&latencies_us, 0.5),
        p99_us: percentile(&latencies_us, 0.99),
        flushes_per_second: (flushes_after - flushes_before) as f64 / elapsed,
        cpu_us_per_entry: (cpu_after - cpu_before).as_secs_f64() * 1e6 / decided.max(1) as f64,
        errors: errors.load(Ordering::Relaxed),
    }
}

fn main() {
    let options = parse_options();
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    println!(
        "machine: {} CPUs (std::thread::available_parallelism)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let rtt_us = measure_loopback_rtt_us();
    println!("loopback TCP round trip p50 {rtt_us} us (64 bytes, TCP_NODELAY, two blocking threads)");
    if options.storages.contains(&StorageKind::Persistent) {
        let fsync_us = measure_fsync_us(&options.dir);
        println!(
            "probe: 64-byte write + fdatasync into a preallocated file in {}: p50 {fsync_us} us",
            options.dir.display()
        );
    }
    println!();
    println!("| storage | entry | proposers | appends/s | decided/s (leader) | p50 µs | p99 µs | flushes/s (3 nodes) | flush p50/p99 µs | CPU µs/entry | errors |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut notes = Vec::new();
    for &storage in &options.storages {
        for &size in &options.sizes {
            for &proposers in &options.proposers {
                let result = runtime.block_on(run_cell(storage, size, proposers, &options));
                if storage == StorageKind::Persistent && proposers == 1 {
                    let bound_us = 2 * result.flush_p50_us + 2 * rtt_us;
                    notes.push(format!(
                        "single proposer, {size} B: p50 {} us against 2 x flush p50 ({} us) + 2 x round trip p50 ({rtt_us} us) = {bound_us} us",
                        result.p50_us, result.flush_p50_us
                    ));
                }
                println!(
                    "| {storage} | {size} B | {proposers} | {:.0} | {:.0} | {} | {} | {:.0} | {}/{} | {:.2} | {} |",
                    result.appends_per_second,
                    result.decided_per_second,
                    result.p50_us,
                    result.p99_us,
                    result.flushes_per_second,
                    result.flush_p50_us,
                    result.flush_p99_us,
                    result.cpu_us_per_entry,
                    result.errors
                );
            }
        }
    }
    println!();
    for note in notes {
        println!("{note}");
    }
    let _ = std::fs::remove_dir(&options.dir);
}
