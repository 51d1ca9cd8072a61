//! `opkv cluster demo`: the README's main job. A local 3-process cluster, a concurrent
//! write/read workload, SIGKILL of the leader's process, the time until writes succeed again,
//! a restart of the killed process (which catches up, from a snapshot if the others compacted
//! past it), and a check that every acknowledged write is readable with its acknowledged value
//! from every node. Exit code 0, or 1 if a check failed.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::{
    api::Consistency,
    client::{Client, ClientError},
    local::{LocalCluster, ServerSettings},
};

/// `opkv cluster demo` options.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Where the cluster lives (default: a temporary directory, removed afterwards).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Concurrent writers (each also reads back what it wrote, linearizably, at another node).
    #[arg(long, default_value_t = 8)]
    pub writers: usize,
    /// Workload before the leader is killed.
    #[arg(long, default_value_t = 2000)]
    pub warmup_ms: u64,
    /// Workload after writes succeed again, before the killed node is restarted.
    #[arg(long, default_value_t = 1500)]
    pub after_failover_ms: u64,
    /// Workload after the restarted node caught up.
    #[arg(long, default_value_t = 1000)]
    pub after_restart_ms: u64,
    /// Compaction interval of the demo's servers (small, so that the restarted node catches up
    /// from a snapshot).
    #[arg(long, default_value_t = 2000)]
    pub snapshot_interval_entries: u64,
    /// Print the summary as one JSON line (for scripts and repeated runs).
    #[arg(long)]
    pub json: bool,
}

/// What the demo measured.
#[derive(Debug, Default, Clone, Serialize)]
pub struct DemoReport {
    pub wall_time_ms: u64,
    pub election_timeout_ms: u64,
    pub writes_acknowledged: u64,
    pub writes_unknown_outcome: u64,
    pub writes_failed: u64,
    pub reads_checked: u64,
    pub reads_stale: u64,
    pub killed_node: u64,
    pub new_leader: u64,
    /// From the SIGKILL to the first acknowledged write issued after it.
    pub failover_ms: f64,
    pub failover_election_timeouts: f64,
    pub restarted_catch_up_ms: u64,
    /// The restarted node's compacted index after catching up (above what it had decided
    /// before the kill: it installed a snapshot).
    pub restarted_compacted_index: u64,
    pub restarted_decided_before_kill: u64,
    pub caught_up_from_snapshot: bool,
    /// Per node: acknowledged writes missing or with another value.
    pub lost_writes: BTreeMap<u64, u64>,
    pub changed_writes: BTreeMap<u64, u64>,
    pub nodes_agree: bool,
    pub passed: bool,
    pub failure: Option<String>,
}

/// Counters the workload shares.
#[derive(Default)]
struct Tally {
    acked: AtomicU64,
    unknown: AtomicU64,
    failed: AtomicU64,
    reads: AtomicU64,
    stale: AtomicU64,
    /// Acknowledged writes: key → value.
    acknowledged: Mutex<BTreeMap<String, String>>,
    /// Writes with an unknown outcome: key → the value they tried.
    uncertain: Mutex<BTreeMap<String, String>>,
    /// Examples of stale reads (for the report).
    stale_examples: Mutex<Vec<String>>,
}

/// Runs the demo; returns the exit code.
pub async fn run(args: DemoArgs) -> i32 {
    let started = Instant::now();
    let (dir, _temp) = match &args.data_dir {
        Some(dir) => (dir.clone(), None),
        None => match tempfile::Builder::new().prefix("opkv-demo-").tempdir() {
            Ok(temp) => (temp.path().to_path_buf(), Some(temp)),
            Err(error) => {
                eprintln!("cannot create a temporary directory: {error}");
                return 1;
            }
        },
    };
    let binary = match std::env::current_exe() {
        Ok(binary) => binary,
        Err(error) => {
            eprintln!("cannot find the opkv binary: {error}");
            return 1;
        }
    };
    let settings = ServerSettings {
        lines: vec![format!("snapshot_interval_entries = {}", args.snapshot_interval_entries)],
    };
    let (mut cluster, new) = match LocalCluster::open(&binary, &dir, 3, &settings) {
        Ok(opened) => opened,
        Err(error) => {
            eprintln!("opkv cluster demo: {error}");
            return 2;
        }
    };
    let ui = Ui::new(args.json, args.warmup_ms + args.after_failover_ms + args.after_restart_ms);
    let mut report = DemoReport {
        election_timeout_ms: crate::config::DEFAULT_TICK_MS * crate::config::DEFAULT_ELECTION_TIMEOUT_TICKS,
        ..DemoReport::default()
    };
    let outcome = tokio::select! {
        outcome = run_phases(&mut cluster, new, &args, &ui, &mut report) => outcome,
        _ = interrupted() => Err("interrupted".to_string()),
    };
    ui.finish();
    if outcome.is_ok() {
        cluster.stop_all().await;
    } else {
        cluster.kill_all().await;
    }
    report.wall_time_ms = started.elapsed().as_millis() as u64;
    if let Err(failure) = outcome {
        report.failure = Some(failure);
        report.passed = false;
    }
    print_summary(&report, &cluster, args.json);
    if report.passed {
        0
    } else {
        1
    }
}

async fn interrupted() {
    let _ = tokio::signal::ctrl_c().await;
}

/// Progress output: a bar on a terminal, plain lines otherwise (and nothing with `--json`).
struct Ui {
    bar: Option<ProgressBar>,
    quiet: bool,
}

impl Ui {
    /// A bar over the workload's planned duration (`workload_ms`; the failover and the
    /// catch-up add to it).
    fn new(quiet: bool, workload_ms: u64) -> Ui {
        let bar = (!quiet && console_is_terminal()).then(|| {
            let bar = ProgressBar::new(workload_ms);
            bar.set_style(
                ProgressStyle::with_template("{bar:30.cyan/blue} [{elapsed}] {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        Ui { bar, quiet }
    }

    /// Moves the bar by `ms` of workload.
    fn advance(&self, ms: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(ms);
        }
    }

    /// A step of the story: printed above the bar.
    fn step(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(format!("• {text}")),
            None if !self.quiet => println!("• {text}"),
            None => {}
        }
    }

    fn progress(&self, text: String) {
        if let Some(bar) = &self.bar {
            bar.set_message(text);
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn console_is_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
}

async fn run_phases(
    cluster: &mut LocalCluster,
    new: bool,
    args: &DemoArgs,
    ui: &Ui,
    report: &mut DemoReport,
) -> Result<(), String> {
    ui.step(&format!("starting 3 `opkv server` processes in {}", cluster.dir().display()));
    for id in cluster.ids() {
        cluster.start(id, new, &[]).map_err(|error| error.to_string())?;
    }
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await.map_err(|error| error.to_string())?;
    ui.step(&format!("node {leader} leads; endpoints {}", cluster.endpoints().join(", ")));

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let endpoints = cluster.endpoints();
    let writers = spawn_writers(&endpoints, args.writers, tally.clone(), stop.clone())?;
    ui.step(&format!(
        "{} writers: each puts unique keys at any node and reads them back linearizably at another",
        args.writers
    ));
    wait_with_progress(ui, &tally, Duration::from_millis(args.warmup_ms), "warm-up").await;

    let client = Client::new(&endpoints).map_err(|error| error.to_string())?;
    let victim = kill_leader(cluster, &client, ui, report).await?;
    wait_with_progress(ui, &tally, Duration::from_millis(args.after_failover_ms), "two nodes").await;
    let statuses = cluster.statuses(&client).await;
    report.new_leader = statuses.values().find(|s| s.is_leader).map_or(0, |s| s.node_id);
    restart(cluster, &client, victim, ui, report).await?;
    wait_with_progress(ui, &tally, Duration::from_millis(args.after_restart_ms), "three nodes again").await;
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        let _ = writer.await;
    }
    finish(cluster, &tally, ui, report).await
}

/// SIGKILL to the leader of the moment, then the time until writes succeed again.
async fn kill_leader(
    cluster: &mut LocalCluster,
    client: &Client,
    ui: &Ui,
    report: &mut DemoReport,
) -> Result<u64, String> {
    let statuses = cluster.statuses(client).await;
    let victim = statuses
        .values()
        .find(|status| status.is_leader)
        .map(|status| status.node_id)
        .ok_or_else(|| format!("no node reports itself leader: {statuses:?}"))?;
    report.restarted_decided_before_kill = statuses.get(&victim).map_or(0, |status| status.decided_index);
    let pid = cluster.pid(victim).unwrap_or(0);
    let killed_at = Instant::now();
    cluster.kill(victim).await;
    report.killed_node = victim;
    ui.step(&format!("SIGKILL to node {victim} (pid {pid}), the leader"));
    let survivors: Vec<String> = cluster.running().iter().map(|id| cluster.endpoint(*id)).collect();
    let failover = measure_failover(&survivors, killed_at).await?;
    report.failover_ms = failover.as_secs_f64() * 1000.0;
    report.failover_election_timeouts = report.failover_ms / report.election_timeout_ms as f64;
    ui.step(&format!(
        "writes succeed again {:.0} ms after the kill ({:.2} election timeouts of {} ms)",
        report.failover_ms, report.failover_election_timeouts, report.election_timeout_ms
    ));
    Ok(victim)
}

/// Restarts the killed node over its data directory and waits until it caught up.
async fn restart(
    cluster: &mut LocalCluster,
    client: &Client,
    victim: u64,
    ui: &Ui,
    report: &mut DemoReport,
) -> Result<(), String> {
    let restart_at = Instant::now();
    cluster.start(victim, false, &[]).map_err(|error| error.to_string())?;
    ui.step(&format!("restarted node {victim} over its data directory"));
    let caught_up = wait_caught_up(cluster, client, victim, Duration::from_secs(30)).await?;
    report.restarted_catch_up_ms = restart_at.elapsed().as_millis() as u64;
    report.restarted_compacted_index = caught_up.compacted_index;
    report.caught_up_from_snapshot = caught_up.compacted_index > report.restarted_decided_before_kill;
    let how = if report.caught_up_from_snapshot {
        format!(
            " from a snapshot (the others had compacted past its log; it now starts at {})",
            caught_up.compacted_index
        )
    } else {
        String::new()
    };
    ui.step(&format!("node {victim} caught up in {} ms{how}", report.restarted_catch_up_ms));
    Ok(())
}

/// Counts, then checks every acknowledged write on every node.
async fn finish(
    cluster: &LocalCluster,
    tally: &Tally,
    ui: &Ui,
    report: &mut DemoReport,
) -> Result<(), String> {
    report.writes_acknowledged = tally.acked.load(Ordering::Relaxed);
    report.writes_unknown_outcome = tally.unknown.load(Ordering::Relaxed);
    report.writes_failed = tally.failed.load(Ordering::Relaxed);
    report.reads_checked = tally.reads.load(Ordering::Relaxed);
    report.reads_stale = tally.stale.load(Ordering::Relaxed);
    ui.step(&format!(
        "workload stopped: {} writes acknowledged; checking every one on every node",
        report.writes_acknowledged
    ));
    check(cluster, tally, report).await?;
    let stale = tally.stale_examples.lock().map(|examples| examples.clone()).unwrap_or_default();
    report.passed = report.lost_writes.values().all(|n| *n == 0)
        && report.changed_writes.values().all(|n| *n == 0)
        && report.nodes_agree
        && report.reads_stale == 0
        && report.writes_acknowledged > 0;
    if !stale.is_empty() {
        return Err(format!("stale reads, e.g. {}", stale.join("; ")));
    }
    Ok(())
}

fn spawn_writers(
    endpoints: &[String],
    writers: usize,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, String> {
    let base = Client::new(endpoints)
        .map_err(|error| error.to_string())?
        .with_timeouts(Duration::from_secs(10), Duration::from_secs(2));
    Ok((0..writers)
        .map(|writer| {
            let writer_client = base.clone().prefer(writer);
            let reader_client = base.clone().prefer(writer + 1);
            tokio::spawn(write_and_read(writer, writer_client, reader_client, tally.clone(), stop.clone()))
        })
        .collect())
}

/// One writer: put a unique key, then read it back (linearizably) at another node.
async fn write_and_read(
    writer: usize,
    mut client: Client,
    mut reader: Client,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let key = format!("demo/{writer:02}/{n:07}");
        let value = format!("w{writer}-{n}-{:08x}", rand::random::<u32>());
        match client.put(&key, &value).await {
            Ok(_) => {
                tally.acked.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut acknowledged) = tally.acknowledged.lock() {
                    acknowledged.insert(key.clone(), value.clone());
                }
            }
            Err(ClientError::UnknownOutcome(_)) => {
                tally.unknown.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut uncertain) = tally.uncertain.lock() {
                    uncertain.insert(key, value);
                }
                continue;
            }
            Err(_) => {
                tally.failed.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        }
        match reader.get(&key, Consistency::Linearizable).await {
            Ok(read) if read.kv.value == value => {
                tally.reads.fetch_add(1, Ordering::Relaxed);
            }
            Ok(read) => {
                tally.reads.fetch_add(1, Ordering::Relaxed);
                tally.stale.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut examples) = tally.stale_examples.lock() {
                    examples.push(format!(
                        "{key}: wrote {value}, read {} at node {}",
                        read.kv.value, read.header.node_id
                    ));
                }
            }
            Err(ClientError::Api { body, .. }) if body.code == crate::api::ErrorCode::KeyNotFound => {
                tally.reads.fetch_add(1, Ordering::Relaxed);
                tally.stale.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut examples) = tally.stale_examples.lock() {
                    let node = body.header.map_or(0, |header| header.node_id);
                    examples.push(format!("{key}: acknowledged, then not found at node {node}"));
                }
            }
            Err(_) => {} // unavailable during the failover: not a check
        }
    }
}

async fn wait_with_progress(ui: &Ui, tally: &Tally, duration: Duration, phase: &str) {
    let start = tokio::time::Instant::now();
    let end = start + duration;
    let mut shown = 0;
    while tokio::time::Instant::now() < end {
        let elapsed = start.elapsed().as_millis() as u64;
        ui.advance(elapsed - shown);
        shown = elapsed;
        ui.progress(format!(
            "{phase}: {} writes acknowledged, {} reads checked, {} unknown outcomes",
            tally.acked.load(Ordering::Relaxed),
            tally.reads.load(Ordering::Relaxed),
            tally.unknown.load(Ordering::Relaxed)
        ));
        tokio::time::sleep(Duration::from_millis(100).min(end - tokio::time::Instant::now())).await;
    }
}

/// Starts a probe write to a surviving node every 10 ms; the first probe started after the
/// kill that is acknowledged ends the measurement.
async fn measure_failover(survivors: &[String], killed_at: Instant) -> Result<Duration, String> {
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<Instant>(16);
    let mut probes = tokio::task::JoinSet::new();
    let deadline = killed_at + Duration::from_secs(15);
    let mut n = 0usize;
    let mut interval = tokio::time::interval(Duration::from_millis(10));
    loop {
        tokio::select! {
            done = done_rx.recv() => {
                probes.abort_all();
                return done.map(|at| at.duration_since(killed_at)).ok_or_else(|| "probes ended".to_string());
            }
            _ = interval.tick() => {
                if Instant::now() >= deadline {
                    return Err("writes did not succeed within 15 s of the kill".to_string());
                }
                if probes.len() < 256 {
                    let endpoint = survivors[n % survivors.len()].clone();
                    n += 1;
                    let done = done_tx.clone();
                    probes.spawn(async move {
                        let Ok(client) = Client::new(&[endpoint]) else { return };
                        let mut client = client.with_timeouts(Duration::from_secs(5), Duration::from_secs(5));
                        if client.put(&format!("probe/{n}"), "p").await.is_ok() {
                            let _ = done.send(Instant::now()).await;
                        }
                    });
                }
            }
        }
    }
}

/// Waits until node `id` applied what the leader had applied when the wait began.
async fn wait_caught_up(
    cluster: &mut LocalCluster,
    client: &Client,
    id: u64,
    timeout: Duration,
) -> Result<crate::api::StatusResponse, String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut target = None;
    loop {
        if let Some((exited, status)) = cluster.reap_exited().into_iter().next() {
            return Err(format!("node {exited} exited ({status}): {}", cluster.log_tail(exited, 10)));
        }
        let statuses = cluster.statuses(client).await;
        if target.is_none() {
            target = statuses.values().find(|s| s.is_leader).map(|s| s.applied_index);
        }
        if let (Some(target), Some(status)) = (target, statuses.get(&id)) {
            if status.applied_index >= target {
                return Ok(status.clone());
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("node {id} did not catch up within {timeout:?}: {statuses:?}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads every node's key space and compares it with the acknowledged writes.
async fn check(cluster: &LocalCluster, tally: &Tally, report: &mut DemoReport) -> Result<(), String> {
    let acknowledged = tally.acknowledged.lock().map(|map| map.clone()).unwrap_or_default();
    let uncertain = tally.uncertain.lock().map(|map| map.clone()).unwrap_or_default();
    let mut maps = Vec::new();
    for id in cluster.ids() {
        let mut client = Client::new(&[cluster.endpoint(id)])
            .map_err(|error| error.to_string())?
            .with_timeouts(Duration::from_secs(15), Duration::from_secs(5));
        let kvs = client
            .list_all("demo/", Consistency::Linearizable)
            .await
            .map_err(|error| format!("node {id}: cannot list: {error}"))?;
        let map: BTreeMap<String, String> = kvs.into_iter().map(|kv| (kv.key, kv.value)).collect();
        let lost = acknowledged.keys().filter(|key| !map.contains_key(*key)).count() as u64;
        let changed =
            acknowledged.iter().filter(|(key, value)| map.get(*key).is_some_and(|v| v != *value)).count()
                as u64
                + uncertain.iter().filter(|(key, value)| map.get(*key).is_some_and(|v| v != *value)).count()
                    as u64;
        report.lost_writes.insert(id, lost);
        report.changed_writes.insert(id, changed);
        maps.push(map);
    }
    report.nodes_agree = maps.windows(2).all(|pair| pair[0] == pair[1]);
    Ok(())
}

fn print_summary(report: &DemoReport, cluster: &LocalCluster, json: bool) {
    if json {
        println!("{}", serde_json::to_string(report).unwrap_or_default());
        return;
    }
    let ok = |good: bool| if good { "OK" } else { "FAILED" };
    println!();
    println!("summary");
    println!("  wall time                  {:.1} s", report.wall_time_ms as f64 / 1000.0);
    println!(
        "  writes                     {} acknowledged, {} unknown outcome, {} failed",
        report.writes_acknowledged, report.writes_unknown_outcome, report.writes_failed
    );
    println!("  linearizable reads         {} checked, {} stale", report.reads_checked, report.reads_stale);
    println!("  leader killed              node {} (SIGKILL)", report.killed_node);
    println!(
        "  writes succeed again       {:.0} ms after the kill = {:.2} election timeouts ({} ms)",
        report.failover_ms, report.failover_election_timeouts, report.election_timeout_ms
    );
    println!("  new leader                 node {}", report.new_leader);
    println!(
        "  restarted node             node {} caught up in {} ms{}",
        report.killed_node,
        report.restarted_catch_up_ms,
        if report.caught_up_from_snapshot { " (from a snapshot)" } else { "" }
    );
    let lost: u64 = report.lost_writes.values().sum();
    let changed: u64 = report.changed_writes.values().sum();
    println!(
        "  acknowledged writes        {} lost, {} changed, on nodes {:?}: {}",
        lost,
        changed,
        cluster.ids(),
        ok(lost == 0 && changed == 0)
    );
    println!("  nodes agree                {}", ok(report.nodes_agree));
    if let Some(failure) = &report.failure {
        println!("  failure                    {failure}");
    }
    println!("  result                     {}", if report.passed { "PASSED" } else { "FAILED" });
}
