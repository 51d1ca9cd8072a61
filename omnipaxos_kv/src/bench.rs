//! `opkv bench`: a load generator. N concurrent clients, each with one operation in flight,
//! over a key space of `--keys` keys with `--value-size`-byte values; write-only,
//! linearizable-read-only or a 90 % read mix; for a fixed duration or operation count after a
//! warm-up that is not measured. Prints a table (or JSON lines with `--json`) with
//! operations/s, latency percentiles and errors by kind.
//!
//! The system under test is a [`BenchTarget`]: this crate's service is [`OpkvTarget`] (its
//! HTTP/JSON API, one keep-alive HTTP/1.1 connection per client and node); with the `etcd`
//! feature, `--target etcd` is etcd 3.4's v3 gRPC API through the `etcd-client` crate
//! (module `etcd`). `opkv compare-etcd` (module `compare`, same feature) runs both side by side.

use std::{
    future::Future,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rand::{rngs::SmallRng, Rng, SeedableRng};
use serde::Serialize;

use crate::{
    api::Consistency,
    client::{Client, ClientError},
};

/// What a failed operation tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpError {
    /// Definitely not applied (or a read that failed): counted by `kind`.
    Failed {
        /// A short stable name (e.g. an error code).
        kind: String,
    },
    /// A write whose outcome is unknown.
    Unknown,
}

/// A client of the system under test: one operation at a time.
pub trait BenchClient: Send + 'static {
    /// Sets `key` to `value`.
    fn put(&mut self, key: &str, value: &str) -> impl Future<Output = Result<(), OpError>> + Send;
    /// Reads `key` linearizably (a missing key counts as a successful read).
    fn get(&mut self, key: &str) -> impl Future<Output = Result<(), OpError>> + Send;
}

/// The system under test.
pub trait BenchTarget: Send + Sync + 'static {
    /// Its client.
    type Client: BenchClient;
    /// A name for reports (`opkv`, `etcd`).
    fn name(&self) -> String;
    /// Client number `index` (clients may spread over endpoints by index).
    fn connect(&self, index: usize) -> impl Future<Output = Result<Self::Client, String>> + Send;
}

/// This crate's service over its HTTP API.
pub struct OpkvTarget {
    /// The cluster's client addresses.
    pub endpoints: Vec<String>,
}

impl BenchTarget for OpkvTarget {
    type Client = Client;

    fn name(&self) -> String {
        "opkv".into()
    }

    async fn connect(&self, index: usize) -> Result<Client, String> {
        Client::new(&self.endpoints)
            .map(|client| client.prefer(index).keep_alive_connections())
            .map_err(|error| error.to_string())
    }
}

fn op_error(error: ClientError) -> OpError {
    match error {
        ClientError::UnknownOutcome(_) => OpError::Unknown,
        ClientError::Api { body, .. } => OpError::Failed { kind: body.code.as_str().to_string() },
        ClientError::Unreachable(_) => OpError::Failed { kind: "unreachable".into() },
        ClientError::Protocol(_) => OpError::Failed { kind: "protocol".into() },
        ClientError::Invalid(_) => OpError::Failed { kind: "invalid".into() },
    }
}

impl BenchClient for Client {
    async fn put(&mut self, key: &str, value: &str) -> Result<(), OpError> {
        Client::put(self, key, value).await.map(|_| ()).map_err(op_error)
    }

    async fn get(&mut self, key: &str) -> Result<(), OpError> {
        match Client::get(self, key, Consistency::Linearizable).await {
            Ok(_) => Ok(()),
            Err(ClientError::Api { body, .. }) if body.code == crate::api::ErrorCode::KeyNotFound => Ok(()),
            Err(error) => Err(op_error(error)),
        }
    }
}

/// The operation mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    /// Puts only.
    Write,
    /// Linearizable gets only (the keys are written first).
    Read,
    /// 90 % linearizable gets, 10 % puts.
    Mixed,
}

/// Systems `bench` can target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TargetKind {
    /// This service (`--endpoints`).
    Opkv,
    /// etcd 3.4 through its v3 gRPC API (`--endpoints`: its client URLs; needs the `etcd`
    /// feature).
    Etcd,
}

/// `opkv bench` options.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// The system under test.
    #[arg(long, value_enum, default_value = "opkv")]
    pub target: TargetKind,
    /// The cluster's client addresses, comma-separated.
    #[arg(long, env = "OPKV_ENDPOINTS", value_delimiter = ',', default_value = "127.0.0.1:2379")]
    pub endpoints: Vec<String>,
    /// Concurrent clients (each has one operation in flight).
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Keys in the key space (`bench/<n>`).
    #[arg(long, default_value_t = 1000)]
    pub keys: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 64)]
    pub value_size: usize,
    /// write, read (linearizable) or mixed (90 % reads).
    #[arg(long, value_enum, default_value = "write")]
    pub workload: Workload,
    /// Measured duration in seconds (ignored with --ops).
    #[arg(long, default_value_t = 10.0)]
    pub duration_s: f64,
    /// Measured operations (instead of a duration).
    #[arg(long)]
    pub ops: Option<u64>,
    /// Warm-up in seconds, not measured.
    #[arg(long, default_value_t = 2.0)]
    pub warmup_s: f64,
    /// Random seed of the key choice.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print JSON lines (a summary line) instead of the table.
    #[arg(long)]
    pub json: bool,
    /// etcd only: gRPC connections shared by the clients (default: one per 10 clients, as in
    /// etcd's benchmark documentation).
    #[arg(long)]
    pub etcd_connections: Option<usize>,
}

impl Default for BenchArgs {
    fn default() -> Self {
        BenchArgs {
            target: TargetKind::Opkv,
            endpoints: vec!["127.0.0.1:2379".into()],
            clients: 16,
            keys: 1000,
            value_size: 64,
            workload: Workload::Write,
            duration_s: 10.0,
            ops: None,
            warmup_s: 2.0,
            seed: 1,
            json: false,
            etcd_connections: None,
        }
    }
}

/// The result of one run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub target: String,
    pub workload: Workload,
    pub clients: usize,
    pub keys: u64,
    pub value_size: usize,
    pub ops: u64,
    pub reads: u64,
    pub writes: u64,
    pub seconds: f64,
    pub ops_per_second: f64,
    pub latency_us_p50: u64,
    pub latency_us_p99: u64,
    pub latency_us_p999: u64,
    pub latency_us_max: u64,
    pub unknown_outcomes: u64,
    pub errors: std::collections::BTreeMap<String, u64>,
}

/// Shared by the clients of a run.
struct Run {
    measuring: AtomicBool,
    stop: AtomicBool,
    measured_ops: AtomicU64,
    ops_limit: Option<u64>,
    /// With an operation count: when the last measured operation completed.
    finished_at: std::sync::Mutex<Option<Instant>>,
}

/// What one client saw while measuring.
struct ClientResult {
    histogram: Histogram<u64>,
    reads: u64,
    writes: u64,
    unknown: u64,
    errors: std::collections::BTreeMap<String, u64>,
}

/// Runs `opkv bench`; returns the exit code.
pub async fn run(args: BenchArgs) -> i32 {
    let result = match args.target {
        TargetKind::Opkv => run_bench(&OpkvTarget { endpoints: args.endpoints.clone() }, &args).await,
        TargetKind::Etcd => run_etcd(&args).await,
    };
    match result {
        Ok(report) => {
            print_report(&report, args.json);
            0
        }
        Err(error) => {
            eprintln!("opkv bench: {error}");
            1
        }
    }
}

#[cfg(feature = "etcd")]
async fn run_etcd(args: &BenchArgs) -> Result<BenchReport, String> {
    let connections = args.etcd_connections.unwrap_or_else(|| crate::etcd::default_connections(args.clients));
    let target = crate::etcd::EtcdTarget::connect(&args.endpoints, connections).await?;
    run_bench(&target, args).await
}

#[cfg(not(feature = "etcd"))]
async fn run_etcd(_args: &BenchArgs) -> Result<BenchReport, String> {
    Err("this opkv was built without etcd support: build it with `--features etcd` (needs protoc)".into())
}

/// When the measured window starts and ends (for samplers of CPU, memory and disk).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Warm-up is over; measuring starts now.
    MeasureStart,
    /// Measuring ended now.
    MeasureEnd,
}

fn value_of(size: usize, rng: &mut SmallRng) -> String {
    (0..size).map(|_| rng.gen_range(b'a'..=b'z') as char).collect()
}

/// Runs the workload of `args` against `target`.
pub async fn run_bench<T: BenchTarget>(target: &T, args: &BenchArgs) -> Result<BenchReport, String> {
    run_bench_observed(target, args, &mut |_| {}).await
}

/// [`run_bench`], calling `observe` when the measured window starts and ends.
pub async fn run_bench_observed<T: BenchTarget>(
    target: &T,
    args: &BenchArgs,
    observe: &mut (dyn FnMut(Phase) + Send),
) -> Result<BenchReport, String> {
    if args.clients == 0 || args.keys == 0 {
        return Err("--clients and --keys must be at least 1".into());
    }
    if args.workload != Workload::Write {
        preload(target, args).await?;
    }
    let run = Arc::new(Run {
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        measured_ops: AtomicU64::new(0),
        ops_limit: args.ops,
        finished_at: std::sync::Mutex::new(None),
    });
    let mut tasks = Vec::with_capacity(args.clients);
    for index in 0..args.clients {
        let client = target.connect(index).await?;
        let run = run.clone();
        let (keys, value_size, workload) = (args.keys, args.value_size, args.workload);
        let seed = args.seed.wrapping_mul(1_000_003).wrapping_add(index as u64);
        tasks.push(tokio::spawn(client_loop(client, run, keys, value_size, workload, seed)));
    }
    let bar = progress_bar(args);
    tokio::time::sleep(Duration::from_secs_f64(args.warmup_s.max(0.0))).await;
    observe(Phase::MeasureStart);
    run.measuring.store(true, Ordering::Release);
    let started = Instant::now();
    let duration = Duration::from_secs_f64(args.duration_s.max(0.001));
    loop {
        tokio::time::sleep(Duration::from_millis(if args.ops.is_some() { 5 } else { 100 })).await;
        let done = run.measured_ops.load(Ordering::Relaxed);
        let elapsed = started.elapsed();
        if let Some(bar) = &bar {
            match args.ops {
                Some(_) => bar.set_position(done),
                None => bar.set_position(elapsed.as_millis() as u64),
            }
            bar.set_message(format!("{:.0} ops/s", done as f64 / elapsed.as_secs_f64().max(1e-9)));
        }
        let finished = match args.ops {
            Some(limit) => done >= limit,
            None => elapsed >= duration,
        };
        if finished {
            break;
        }
    }
    run.stop.store(true, Ordering::Release);
    observe(Phase::MeasureEnd);
    let finished_at = run.finished_at.lock().ok().and_then(|at| *at).unwrap_or_else(Instant::now);
    let seconds = finished_at.duration_since(started).as_secs_f64();
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let mut report = BenchReport {
        target: target.name(),
        workload: args.workload,
        clients: args.clients,
        keys: args.keys,
        value_size: args.value_size,
        ops: 0,
        reads: 0,
        writes: 0,
        seconds,
        ops_per_second: 0.0,
        latency_us_p50: 0,
        latency_us_p99: 0,
        latency_us_p999: 0,
        latency_us_max: 0,
        unknown_outcomes: 0,
        errors: Default::default(),
    };
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await.map_err(|error| format!("a client task failed: {error}"))?);
    }
    summarize(&mut report, results);
    Ok(report)
}

/// Adds the clients' results to `report`.
fn summarize(report: &mut BenchReport, results: Vec<ClientResult>) {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("constant, valid bounds");
    for result in results {
        let _ = histogram.add(&result.histogram);
        report.reads += result.reads;
        report.writes += result.writes;
        report.unknown_outcomes += result.unknown;
        for (kind, count) in result.errors {
            *report.errors.entry(kind).or_default() += count;
        }
    }
    report.ops = report.reads + report.writes;
    report.ops_per_second = report.ops as f64 / report.seconds.max(1e-9);
    report.latency_us_p50 = histogram.value_at_quantile(0.5);
    report.latency_us_p99 = histogram.value_at_quantile(0.99);
    report.latency_us_p999 = histogram.value_at_quantile(0.999);
    report.latency_us_max = histogram.max();
}

fn progress_bar(args: &BenchArgs) -> Option<ProgressBar> {
    use std::io::IsTerminal;
    if args.json || !std::io::stderr().is_terminal() {
        return None;
    }
    let (length, template) = match args.ops {
        Some(ops) => (ops, "{bar:40} {pos}/{len} ops  {msg}"),
        None => ((args.duration_s * 1000.0) as u64, "{bar:40} {elapsed}  {msg}"),
    };
    let bar = ProgressBar::new(length);
    bar.set_style(ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()));
    Some(bar)
}

/// Writes every key once, so that reads find values.
async fn preload<T: BenchTarget>(target: &T, args: &BenchArgs) -> Result<(), String> {
    let writers = args.clients.min(64);
    let mut tasks = Vec::new();
    for index in 0..writers {
        let mut client = target.connect(index).await?;
        let (keys, value_size) = (args.keys, args.value_size);
        tasks.push(tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(index as u64);
            let mut key = index as u64;
            while key < keys {
                let value = value_of(value_size, &mut rng);
                client
                    .put(&format!("bench/{key}"), &value)
                    .await
                    .map_err(|error| format!("preload: {error:?}"))?;
                key += writers as u64;
            }
            Ok::<(), String>(())
        }));
    }
    for task in tasks {
        task.await.map_err(|error| error.to_string())??;
    }
    Ok(())
}

async fn client_loop<C: BenchClient>(
    mut client: C,
    run: Arc<Run>,
    keys: u64,
    value_size: usize,
    workload: Workload,
    seed: u64,
) -> ClientResult {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut result = ClientResult {
        // 1 µs to 60 s, 3 significant digits.
        histogram: Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant, valid bounds"),
        reads: 0,
        writes: 0,
        unknown: 0,
        errors: Default::default(),
    };
    let value = value_of(value_size, &mut rng);
    while !run.stop.load(Ordering::Acquire) {
        let key = format!("bench/{}", rng.gen_range(0..keys));
        let write = match workload {
            Workload::Write => true,
            Workload::Read => false,
            Workload::Mixed => rng.gen_range(0..10) == 0,
        };
        let started = Instant::now();
        let outcome = if write { client.put(&key, &value).await } else { client.get(&key).await };
        if !run.measuring.load(Ordering::Acquire) || run.stop.load(Ordering::Acquire) {
            continue;
        }
        match outcome {
            Ok(()) => {
                let done = run.measured_ops.fetch_add(1, Ordering::Relaxed) + 1;
                if let Some(limit) = run.ops_limit {
                    if done > limit {
                        continue; // beyond the count: not measured
                    }
                    if done == limit {
                        if let Ok(mut at) = run.finished_at.lock() {
                            *at = Some(Instant::now());
                        }
                    }
                }
                let _ = result.histogram.record(started.elapsed().as_micros().max(1) as u64);
                if write {
                    result.writes += 1;
                } else {
                    result.reads += 1;
                }
            }
            Err(OpError::Unknown) => result.unknown += 1,
            Err(OpError::Failed { kind }) => *result.errors.entry(kind).or_default() += 1,
        }
    }
    result
}

fn print_report(report: &BenchReport, json: bool) {
    if json {
        println!("{}", serde_json::to_string(report).unwrap_or_default());
        return;
    }
    println!(
        "{:<6} {:<7} {:>7} {:>7} {:>6} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8}",
        "target",
        "load",
        "clients",
        "keys",
        "value",
        "ops/s",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "max µs",
        "errors"
    );
    let errors: u64 = report.errors.values().sum::<u64>() + report.unknown_outcomes;
    println!(
        "{:<6} {:<7} {:>7} {:>7} {:>6} {:>10.0} {:>10} {:>10} {:>10} {:>10} {:>8}",
        report.target,
        format!("{:?}", report.workload).to_lowercase(),
        report.clients,
        report.keys,
        report.value_size,
        report.ops_per_second,
        report.latency_us_p50,
        report.latency_us_p99,
        report.latency_us_p999,
        report.latency_us_max,
        errors
    );
    if errors > 0 {
        println!("errors: {:?}, unknown outcomes: {}", report.errors, report.unknown_outcomes);
    }
}
