//! `omnipaxos_chaos run`: a real opkv cluster under a seeded nemesis, checked; `omnipaxos_chaos
//! check HISTORY`: check a saved history again. See docs/fault-tests.md.

use std::{
    path::PathBuf,
    process::ExitCode,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use clap::{Args, Parser, Subcommand};
use omnipaxos_chaos::{
    cleanup,
    cluster::ServerSettings,
    history::{self, ReadMode},
    nemesis::{FaultKind, NemesisConfig},
    netns, report,
    run::{self, RunConfig},
    workload::WorkloadConfig,
    ChaosError,
};

#[derive(Parser)]
#[command(name = "omnipaxos_chaos", about = "Fault tests of a real opkv cluster in network namespaces")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a cluster (or several, one after the other) under faults and check it.
    Run(Box<RunArgs>),
    /// Check a saved history.jsonl again (every read mode but stale).
    Check { history: PathBuf },
    /// Draw the timeline of a run's output directory again (history.jsonl, faults.jsonl).
    Chart { dir: PathBuf },
}

#[derive(Args, Clone)]
struct RunArgs {
    /// The opkv binary (default: `opkv` next to this program).
    #[arg(long)]
    opkv: Option<PathBuf>,
    /// Cluster sizes, run one after the other (`--nodes 3 --nodes 5`), each for --duration-s.
    #[arg(long, default_value = "3")]
    nodes: Vec<u64>,
    /// How long faults are injected, per cluster size.
    #[arg(long, default_value_t = 120)]
    duration_s: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output directory (a subdirectory per cluster size).
    #[arg(long, default_value = "target/chaos")]
    out: PathBuf,
    /// Fault kinds (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    faults: Vec<FaultKind>,
    /// Probability that a fault is injected together with one of the other family.
    #[arg(long, default_value_t = 0.25)]
    combine: f64,
    #[arg(long, default_value_t = 6)]
    clients: u32,
    #[arg(long, default_value_t = 5)]
    keys: u8,
    /// Seconds per key generation (the checker checks generations one by one).
    #[arg(long, default_value_t = 30)]
    generation_s: u64,
    /// Longest pause between two operations of a client (ms).
    #[arg(long, default_value_t = 10)]
    think_ms: u64,
    /// Quiet time between faults, min and max (ms).
    #[arg(long, num_args = 2, default_values_t = [1500, 3000])]
    quiet_ms: Vec<u64>,
    /// How long a fault is held, min and max (ms).
    #[arg(long, num_args = 2, default_values_t = [2000, 5000])]
    hold_ms: Vec<u64>,
    #[arg(long, default_value_t = 10)]
    tick_ms: u64,
    #[arg(long, default_value_t = 30)]
    election_timeout_ticks: u64,
    #[arg(long, default_value_t = 2000)]
    request_timeout_ms: u64,
    /// Read lease (0: off); with it, lease reads take the lease path.
    #[arg(long, default_value_t = 200)]
    read_lease_ms: u64,
    #[arg(long, default_value_t = 10)]
    max_clock_drift_percent: u64,
    /// Clock rates within the drift bound (fault `skew`).
    #[arg(long, value_delimiter = ',', default_values_t = [0.95, 1.05])]
    skew_within: Vec<f64>,
    /// Clock rates beyond the bound (fault `skew-beyond`).
    #[arg(long, value_delimiter = ',', default_values_t = [0.5, 2.0])]
    skew_beyond: Vec<f64>,
    #[arg(long, default_value_t = 2000)]
    snapshot_interval_entries: u64,
    /// Log segment size of the servers (bytes; each segment is preallocated).
    #[arg(long, default_value_t = 1 << 20)]
    wal_segment_bytes: u64,
    /// Size of each node's data tmpfs (MiB).
    #[arg(long, default_value_t = 512)]
    disk_mib: u64,
    /// First three octets of the cluster's /24 (the harness is .254, node i is .i).
    #[arg(long, default_value = "10.77.0")]
    subnet: String,
    /// Mutation: start the servers with --unsafe-stale-reads (an opkv built with the feature
    /// `test-switches`); reads are then served locally without a quorum.
    #[arg(long)]
    unsafe_stale_reads: bool,
    /// Succeed only if some run found a linearizability violation (for the mutation check).
    #[arg(long)]
    expect_violation: bool,
    /// Test hook (the teardown test): panic once a fault is in force this many seconds into
    /// the run; everything must still be torn down.
    #[arg(long, hide = true)]
    test_panic_after_s: Option<u64>,
}

fn parse_subnet(text: &str) -> Result<[u8; 3], ChaosError> {
    let parts: Vec<u8> = text.split('.').filter_map(|p| p.parse().ok()).collect();
    match parts.as_slice() {
        [a, b, c] if text.split('.').count() == 3 => Ok([*a, *b, *c]),
        _ => Err(ChaosError::Setup(format!("--subnet {text:?}: three octets, like 10.77.0"))),
    }
}

fn default_opkv() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let candidate = exe.parent()?.join("opkv");
    candidate.is_file().then_some(candidate)
}

fn run_configs(args: &RunArgs) -> Result<Vec<RunConfig>, ChaosError> {
    let opkv = args.opkv.clone().or_else(default_opkv).ok_or_else(|| {
        ChaosError::Setup(
            "no opkv binary: build it (cargo build --release -p omnipaxos_kv) or pass --opkv".into(),
        )
    })?;
    let opkv = std::fs::canonicalize(&opkv).map_err(|e| ChaosError::io(&opkv, e))?;
    let subnet = parse_subnet(&args.subnet)?;
    if args.clients == 0 || args.keys == 0 || args.nodes.iter().any(|&n| !(3..=9).contains(&n)) {
        return Err(ChaosError::Setup(
            "--clients and --keys must be positive, --nodes between 3 and 9".into(),
        ));
    }
    let kinds = if args.faults.is_empty() { FaultKind::ALL.to_vec() } else { args.faults.clone() };
    let settings = ServerSettings {
        tick_ms: args.tick_ms,
        election_timeout_ticks: args.election_timeout_ticks,
        request_timeout_ms: args.request_timeout_ms,
        read_lease_ms: args.read_lease_ms,
        max_clock_drift_percent: args.max_clock_drift_percent,
        snapshot_interval_entries: args.snapshot_interval_entries,
        wal_segment_bytes: args.wal_segment_bytes,
        disk_mib: args.disk_mib,
        unsafe_stale_reads: args.unsafe_stale_reads,
    };
    let read_modes = vec![ReadMode::Linearizable, ReadMode::Lease, ReadMode::Stale];
    Ok(args
        .nodes
        .iter()
        .map(|&nodes| RunConfig {
            opkv: opkv.clone(),
            out: args.out.join(format!("n{nodes}-seed{}", args.seed)),
            nodes,
            seed: args.seed,
            duration: Duration::from_secs(args.duration_s),
            subnet,
            settings: settings.clone(),
            workload: WorkloadConfig {
                clients: args.clients,
                keys: args.keys,
                generation_s: args.generation_s,
                think_ms_max: args.think_ms,
                request_timeout: Duration::from_millis(args.request_timeout_ms + 1000),
                read_modes: read_modes.clone(),
            },
            nemesis: NemesisConfig {
                kinds: kinds.clone(),
                seed: args.seed ^ nodes,
                combine_probability: args.combine.clamp(0.0, 1.0),
                quiet_ms: (args.quiet_ms[0], args.quiet_ms[1]),
                hold_ms: (args.hold_ms[0], args.hold_ms[1]),
                skew_within: args.skew_within.clone(),
                skew_beyond: args.skew_beyond.clone(),
                recovery_timeout: Duration::from_secs(30),
                panic_after_ns: args.test_panic_after_s.map(|s| s.saturating_mul(1_000_000_000)),
            },
            mutation: args.unsafe_stale_reads.then(|| "unsafe-stale-reads".to_string()),
        })
        .collect())
}

/// First Ctrl-C or SIGTERM: stop injecting, heal, check, tear down. Second: tear down now, exit.
fn handle_signals(stop: Arc<AtomicBool>) {
    let mut interrupts = omnipaxos_kv::cli::interrupt_counter();
    tokio::spawn(async move {
        while interrupts.changed().await.is_ok() {
            let count = *interrupts.borrow_and_update();
            if count >= 2 || stop.swap(true, Ordering::Relaxed) {
                eprintln!("second interrupt: tearing down now");
                cleanup::run_all();
                std::process::exit(130);
            }
            eprintln!("interrupted: healing, checking and tearing down (interrupt again to stop at once)");
        }
    });
}

async fn run_all(args: RunArgs) -> Result<bool, ChaosError> {
    netns::check_available()?;
    netns::remove_stale();
    let stop = Arc::new(AtomicBool::new(false));
    handle_signals(stop.clone());
    let mut all_passed = true;
    let mut any_violation = false;
    for config in run_configs(&args)? {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let out = config.out.clone();
        eprintln!(
            "running {} nodes for {:?} (seed {}) -> {}",
            config.nodes,
            config.duration,
            config.seed,
            out.display()
        );
        let summary = run::run(config, stop.clone()).await?;
        println!("{summary}");
        println!("history, faults, summary, timeline and node logs: {}\n", out.display());
        all_passed &= summary.passed();
        any_violation |= summary.check.violations > 0;
    }
    Ok(if args.expect_violation {
        if any_violation {
            println!("expected a linearizability violation: found");
        } else {
            println!("expected a linearizability violation: NOT found");
        }
        any_violation
    } else {
        all_passed
    })
}

fn redraw(dir: &std::path::Path) -> Result<(), ChaosError> {
    let records = history::load(&dir.join("history.jsonl"))?;
    let path = dir.join("faults.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|e| ChaosError::io(&path, e))?;
    let mut faults = Vec::new();
    for (number, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        faults.push(
            serde_json::from_str(line)
                .map_err(|e| ChaosError::BadHistory(format!("{}:{}: {e}", path.display(), number + 1)))?,
        );
    }
    omnipaxos_chaos::chart::load_font()?;
    let title = format!("{}: latency per operation, faults shaded", dir.display());
    omnipaxos_chaos::chart::draw_timeline(&dir.join("timeline.png"), &title, &records, &faults, None)?;
    omnipaxos_chaos::chart::draw_timeline(
        &dir.join("timeline-first-120s.png"),
        &format!("{title} (first 120 s)"),
        &records,
        &faults,
        Some(120.0),
    )
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,reqwest=warn,hyper=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Check { history } => match history::load(&history) {
            Ok(records) => {
                let result = report::check_records(&records, |r| r.read_mode() != Some(ReadMode::Stale));
                println!("{} ({} operations checked)", result.verdict(), result.ops_checked);
                if let Some(violation) = &result.first_violation {
                    println!("{violation}");
                }
                if result.violations == 0 && result.inconclusive == 0 {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::from(2)
            }
        },
        Command::Chart { dir } => match redraw(&dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::from(2)
            }
        },
        Command::Run(args) => {
            let runtime =
                match tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        eprintln!("error: cannot start the async runtime: {error}");
                        return ExitCode::from(2);
                    }
                };
            let result = runtime.block_on(run_all(*args));
            drop(runtime);
            // Idempotent: everything was normally removed already.
            cleanup::run_all();
            match result {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(1),
                Err(error) => {
                    eprintln!("error: {error}");
                    ExitCode::from(2)
                }
            }
        }
    }
}
