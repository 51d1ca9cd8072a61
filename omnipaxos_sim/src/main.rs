//! The simulator's command line.
//!
//! ```text
//!   omnipaxos_sim --seeds 0..10000 [--nodes 3,5] [--ops 500] [--threads 2]   many seeds, a summary
//!   omnipaxos_sim --seed 42 [--nodes 3]                                        one seed, its trace
//!   omnipaxos_sim adversarial --seeds 0..1000 [--nodes 3,5] [--storage persistent]  bare
//!                 SequencePaxos, adversarial leaders and replays, a summary (--seed N: a trace)
//!   omnipaxos_sim scenarios [--seeds 20]                                       our library alone
//!   omnipaxos_sim compare [--seeds 20] [--out docs]                            (feature raft-comparison)
//! ```

use std::{io::Write as _, ops::Range, process::ExitCode, time::Instant};

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use omnipaxos_sim::{
    adversary::{self, batch::AdversaryBatch, AdversaryConfig},
    invariants::Violation,
    mutation::{self, Mutation},
    nemesis::FaultKind,
    reads::ReadMode,
    runner::{self, Batch},
    storage::StorageKind,
};

#[derive(Parser, Debug)]
#[command(about = "Deterministic cluster simulator for omnipaxos_core")]
struct Cli {
    /// Seeds to run: `A..B` (B excluded), `A..=B`, or `N` for `0..N`.
    #[arg(long, default_value = "0..100", value_parser = parse_seeds)]
    seeds: Range<u64>,
    /// Replay one seed and print its trace (one line per message, fault and client event).
    #[arg(long)]
    seed: Option<u64>,
    /// Replica counts, each run for every seed.
    #[arg(long, value_delimiter = ',', default_value = "3,5")]
    nodes: Vec<usize>,
    /// Client operations per seed in the safety phase.
    #[arg(long, default_value_t = 500)]
    ops: u64,
    /// Worker threads (each seed runs on one thread).
    #[arg(long, default_value_t = std::thread::available_parallelism().map_or(1, |n| n.get()))]
    threads: usize,
    /// The replicas' disks: `crashable` (CrashableStorage: a crash keeps a prefix of the
    /// unflushed calls) or `persistent` (the write-ahead log PersistentStorage on the simulated
    /// disk SimFs: a crash loses, tears or flips unsynced bytes; restarts run its recovery).
    #[arg(long, default_value = "crashable")]
    storage: StorageKind,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Only the fault model from before issue 8: messages to a crashed node are dropped, no
    /// archive replays, no runtime priority changes, no small `buffer_size`. Seeds then run
    /// exactly as they did before those faults existed.
    #[arg(long)]
    classic_faults: bool,
    /// Properties whose violations are reported but do not fail the run (known open bugs),
    /// e.g. `replicas_converge_after_healing`. Safety properties should never be listed.
    #[arg(long, value_delimiter = ',')]
    tolerate: Vec<String>,
    /// How client gets are served: `log` (appended like writes), `leader` (read index at the
    /// leader), `follower` (read index at any node), `lease` (read leases, clock drift), or
    /// `mixed` (each seed draws one of the four).
    #[arg(long, default_value = "mixed")]
    reads: ReadMode,
    /// Lease seeds: every clock drifts beyond the lease's `max_clock_drift_percent`, which the
    /// documentation says is unsafe (does the checker see stale reads?).
    #[arg(long)]
    drift_beyond_bound: bool,
    /// Deliberately unsafe: a replica whose disk an amnesia fault destroyed restarts as a
    /// voter instead of a learner (the simulator should find agreement broken).
    #[arg(long)]
    amnesia_voter: bool,
    /// A replica whose storage reports a possible loss becomes a learner over the log that
    /// recovery left, instead of over an empty log (shows a core bug: the learner takes
    /// undecided entries of that log for decided).
    #[arg(long)]
    learner_keeps_log: bool,
    /// Deliberately unsafe: a node resuming from a pause keeps its read leases, counted in the
    /// ticks its clock missed (the simulator should find stale reads with `--reads lease`).
    #[arg(long)]
    keep_lease_after_pause: bool,
    /// Only these kinds of fault (names as in the summary table, e.g. `priority-flip`);
    /// every other random choice of a seed stays as it was.
    #[arg(long, value_delimiter = ',', value_parser = FaultKind::parse)]
    faults: Vec<FaultKind>,
    /// With `--expect-violation`: count only violations of these properties.
    #[arg(long, value_delimiter = ',')]
    expect_property: Vec<String>,
    /// Switch a fixed core bug back on in every replica (build with `--features mutations`):
    /// sync-replaces-log, forward-unsynced, drop-outcomes, ignore-identity,
    /// lower-announced-ballot, accept-unbeatable-rounds, read-without-quorum, lease-without-wait.
    #[arg(long, value_parser = mutation::parse)]
    mutation: Option<Mutation>,
    /// Succeed iff some seed reports a violation (print the first); fail if none does. Seeds
    /// above the first violating one are skipped.
    #[arg(long)]
    expect_violation: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Bare SequencePaxos under an adversarial scheduler: any leader ballots, replays of any
    /// earlier message (also across restarts), crashes, hostile peers (docs/simulator.md).
    Adversarial {
        /// Seeds to run: `A..B` (B excluded), `A..=B`, or `N` for `0..N`.
        #[arg(long, default_value = "0..1000", value_parser = parse_seeds)]
        seeds: Range<u64>,
        /// Replay one seed and print its trace, one line per event.
        #[arg(long)]
        seed: Option<u64>,
        /// Replica counts, each run for every seed.
        #[arg(long, value_delimiter = ',', default_value = "3,5")]
        nodes: Vec<usize>,
        /// The replicas' disks: `crashable` or `persistent` (see the top-level option).
        #[arg(long, default_value = "crashable")]
        storage: StorageKind,
        /// Adversarial steps per seed, before the calm phase.
        #[arg(long, default_value_t = 1000)]
        steps: u64,
        /// Worker threads.
        #[arg(long, default_value_t = std::thread::available_parallelism().map_or(1, |n| n.get()))]
        threads: usize,
        /// No progress bar, and no line per failing run.
        #[arg(long)]
        quiet: bool,
        /// Properties whose violations are recorded without ending the run (e.g.
        /// `outcome_not_lost,no_panic_on_input`, so that rarer violations behind them show).
        #[arg(long, value_delimiter = ',')]
        tolerate: Vec<String>,
        /// Switch a fixed core bug back on in every replica (see the top-level option).
        #[arg(long, value_parser = mutation::parse)]
        mutation: Option<Mutation>,
        /// Succeed iff some seed reports a violation (print the first); fail if none does.
        #[arg(long)]
        expect_violation: bool,
    },
    /// The partial-connectivity scenarios on our library alone (no raft-rs build needed).
    Scenarios {
        /// Seeds per scenario.
        #[arg(long, default_value_t = 20)]
        seeds: u64,
    },
    /// The partial-connectivity comparison with tikv's raft crate; writes the table and chart.
    Compare {
        /// Seeds per scenario and protocol.
        #[arg(long, default_value_t = 20)]
        seeds: u64,
        /// Directory for partial-connectivity.md and its chart.
        #[arg(long, default_value = "docs")]
        out: std::path::PathBuf,
    },
}

fn parse_seeds(text: &str) -> Result<Range<u64>, String> {
    let number = |s: &str| s.trim().parse::<u64>().map_err(|e| format!("bad seed `{s}`: {e}"));
    if let Some((a, b)) = text.split_once("..=") {
        Ok(number(a)?..number(b)? + 1)
    } else if let Some((a, b)) = text.split_once("..") {
        Ok(number(a)?..number(b)?)
    } else {
        Ok(0..number(text)?)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Compare { seeds, out }) => compare(*seeds, out),
        Some(Command::Scenarios { seeds }) => scenarios(*seeds),
        Some(Command::Adversarial {
            seeds,
            seed,
            nodes,
            storage,
            steps,
            threads,
            quiet,
            tolerate,
            mutation,
            expect_violation,
        }) => {
            let batch = AdversaryBatch {
                seeds: seeds.clone(),
                node_counts: nodes.clone(),
                storage: *storage,
                steps: *steps,
                threads: *threads,
                tolerate: tolerate.clone(),
                mutation: *mutation,
                stop_at_first_violation: *expect_violation,
            };
            match seed {
                Some(seed) => adversarial_replay(*seed, &batch),
                None => adversarial_batch(&batch, *quiet, *expect_violation),
            }
        }
        None => match cli.seed {
            Some(seed) => replay(seed, &cli),
            None => batch(&cli),
        },
    }
}

#[cfg(feature = "raft-comparison")]
fn compare(seeds: u64, out: &std::path::Path) -> ExitCode {
    match omnipaxos_sim::comparison::write_report(seeds, out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("comparison failed: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(not(feature = "raft-comparison"))]
fn compare(_seeds: u64, _out: &std::path::Path) -> ExitCode {
    eprintln!("build with `--features raft-comparison` to compare against raft-rs");
    ExitCode::FAILURE
}

fn scenarios(seeds: u64) -> ExitCode {
    use omnipaxos_sim::scenarios::{run_omnipaxos, summarize, Scenario};
    println!("| scenario (n) | ET to first decision median / max | never | progress ticks | leader changes median / max | idle msgs per ET |");
    println!("|---|---|---|---|---|---|");
    for (scenario, n) in Scenario::ALL {
        let results: Vec<_> = (0..seeds).map(|seed| run_omnipaxos(scenario, n, seed)).collect();
        let stats = summarize(&results);
        let first = stats
            .first_decision_election_timeouts
            .map_or("never".into(), |(m, x)| format!("{m:.1} / {x:.1}"));
        println!(
            "| {} ({n}) | {first} | {} | {:.1} % | {} / {} | {:.1} |",
            scenario.name(),
            stats.never,
            100.0 * stats.progress_share,
            stats.leader_changes.0,
            stats.leader_changes.1,
            stats.idle_messages_per_election_timeout
        );
    }
    ExitCode::SUCCESS
}

fn replay(seed: u64, cli: &Cli) -> ExitCode {
    let mut failed = false;
    for &nodes in &cli.nodes {
        let mut config = facade_batch(cli).config(seed, nodes);
        config.trace = true;
        config.trace_print = true;
        println!("=== seed {seed}, {nodes} replicas");
        let report = runner::run_one(config);
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(
            stdout,
            "=== seed {seed} N={nodes}: {} ticks, ops issued {} ok {} failed {} indeterminate {}, \
             decided {}, reconfigurations {}, recover ticks {:?}, linearizability {:?}",
            report.ticks,
            report.ops.invoked,
            report.ops.ok,
            report.ops.failed,
            report.ops.indeterminate,
            report.decided,
            report.reconfigurations,
            report.recover_ticks,
            report.linearizability
        );
        let faults: Vec<String> = report.faults.iter().map(|(k, n)| format!("{}={n}", k.name())).collect();
        let _ = writeln!(stdout, "=== faults: {}", faults.join(" "));
        let losses: Vec<String> = report.disk_losses.iter().map(|(loss, n)| format!("{loss}={n}")).collect();
        let _ = writeln!(stdout, "=== replica disks crashed ({} storage): {}", cli.storage, losses.join(" "));
        match &report.violation {
            Some(v) => {
                failed = true;
                let _ = writeln!(stdout, "=== VIOLATION {v}");
            }
            None => {
                let _ = writeln!(stdout, "=== no violation");
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The first 200 characters of a long report line.
fn first_line(text: &str) -> String {
    text.chars().take(200).collect()
}

/// The batch the top-level options describe.
fn facade_batch(cli: &Cli) -> Batch {
    Batch {
        seeds: cli.seeds.clone(),
        node_counts: cli.nodes.clone(),
        ops: cli.ops,
        threads: cli.threads,
        storage: cli.storage,
        extended_faults: !cli.classic_faults,
        reads: cli.reads,
        drift_beyond_bound: cli.drift_beyond_bound,
        amnesia_voter: cli.amnesia_voter,
        learner_keeps_log: cli.learner_keeps_log,
        fault_kinds: cli.faults.clone(),
        keep_lease_after_pause: cli.keep_lease_after_pause,
        mutation: cli.mutation,
        stop_at_first_violation: cli.expect_violation,
        expected_properties: cli.expect_property.clone(),
    }
}

/// The command that replays one facade run.
fn replay_command(cli: &Cli, seed: u64, nodes: usize) -> String {
    let features = if cli.mutation.is_some() { " --features mutations" } else { "" };
    let mut command = format!(
        "cargo run --release -p omnipaxos_sim{features} -- --seed {seed} --nodes {nodes} --storage {} --reads {}",
        cli.storage, cli.reads
    );
    for (on, flag) in [
        (cli.classic_faults, " --classic-faults"),
        (cli.drift_beyond_bound, " --drift-beyond-bound"),
        (cli.amnesia_voter, " --amnesia-voter"),
        (cli.learner_keeps_log, " --learner-keeps-log"),
        (cli.keep_lease_after_pause, " --keep-lease-after-pause"),
    ] {
        if on {
            command.push_str(flag);
        }
    }
    if !cli.faults.is_empty() {
        let kinds: Vec<&str> = cli.faults.iter().map(|k| k.name()).collect();
        command.push_str(&format!(" --faults {}", kinds.join(",")));
    }
    if let Some(mutation) = cli.mutation {
        command.push_str(&format!(" --mutation {}", mutation.name()));
    }
    command
}

fn batch(cli: &Cli) -> ExitCode {
    runner::install_quiet_panic_hook();
    let batch = facade_batch(cli);
    let jobs = (batch.seeds.end.saturating_sub(batch.seeds.start)) * batch.node_counts.len() as u64;
    let progress = if cli.quiet { ProgressBar::hidden() } else { ProgressBar::new(jobs) };
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} runs, {elapsed} elapsed, eta {eta} {msg}")
            .expect("a valid template"),
    );
    let started = Instant::now();
    let summary = runner::run_batch(&batch, |report| {
        progress.inc(1);
        if let (Some(v), false) = (&report.violation, cli.expect_violation) {
            progress.suspend(|| {
                eprintln!("violation: seed {} N={}: {v}", report.seed, report.nodes);
                eprintln!("  replay: {}", replay_command(cli, report.seed, report.nodes));
            });
        }
        if let Some(count) = report.disk_losses.get("amnesia-undetected") {
            // Not a violation by itself (the run goes on with the replica as a voter, as an
            // operator without a signal would), but the storage missed damage it must report.
            progress.suspend(|| {
                eprintln!(
                    "note: seed {} N={}: {count} damaged log(s) opened without a reported loss",
                    report.seed, report.nodes
                );
                eprintln!("  replay: {}", replay_command(cli, report.seed, report.nodes));
            });
        }
    });
    progress.finish_and_clear();
    let mutation = cli.mutation.map_or(String::new(), |m| format!(", mutation {}", m.name()));
    println!(
        "seeds {}..{} ({} runs), {} ops per seed, {} storage, {} faults, reads {}{}{}{mutation}\n",
        batch.seeds.start,
        batch.seeds.end,
        jobs,
        batch.ops,
        batch.storage,
        if batch.extended_faults { "extended" } else { "classic" },
        batch.reads,
        if batch.drift_beyond_bound { ", clock drift beyond the lease bound" } else { "" },
        match (batch.amnesia_voter, batch.learner_keeps_log) {
            (true, _) => ", wiped replicas restart as voters (unsafe)",
            (false, true) => ", learners keep the log recovery left",
            (false, false) => "",
        },
    );
    println!("{}", summary.render(started.elapsed().as_secs_f64()));
    let mut violations = summary.violations();
    violations.sort_by_key(|&(nodes, seed, _)| (seed, nodes));
    if cli.expect_violation {
        violations.retain(|(_, _, v)| {
            cli.expect_property.is_empty() || cli.expect_property.iter().any(|p| p == v.property)
        });
        return expected_violation(
            violations.first().map(|&(nodes, seed, v)| (nodes, seed, v)),
            jobs,
            || match violations.first() {
                Some(&(nodes, seed, _)) => replay_command(cli, seed, nodes),
                None => String::new(),
            },
        );
    }
    let (tolerated, failing): (Vec<_>, Vec<_>) =
        violations.into_iter().partition(|(_, _, v)| cli.tolerate.iter().any(|p| p == v.property));
    for (nodes, seed, v) in &tolerated {
        println!("TOLERATED (known bug) seed {seed} N={nodes}: {}", first_line(&v.to_string()));
    }
    for (nodes, seed, v) in &failing {
        println!("FAIL seed {seed} N={nodes}: {v}");
    }
    println!("{} failing, {} tolerated", failing.len(), tolerated.len());
    if failing.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `--expect-violation`: success iff a seed reported one; prints the first (lowest seed).
fn expected_violation(
    first: Option<(usize, u64, &Violation)>,
    jobs: u64,
    replay: impl FnOnce() -> String,
) -> ExitCode {
    match first {
        Some((nodes, seed, v)) => {
            println!(
                "EXPECTED VIOLATION FOUND: first at seed {seed} N={nodes}: {}: {}",
                v.property,
                first_line(&v.detail)
            );
            println!("  replay: {}", replay());
            ExitCode::SUCCESS
        }
        None => {
            println!("EXPECTED VIOLATION NOT FOUND in {jobs} runs");
            ExitCode::FAILURE
        }
    }
}

fn adversarial_replay(seed: u64, batch: &AdversaryBatch) -> ExitCode {
    let mut failed = false;
    for &nodes in &batch.node_counts {
        let mut config = AdversaryConfig::new(seed, nodes);
        config.storage = batch.storage;
        config.steps = batch.steps;
        config.tolerate = batch.tolerate.clone();
        config.mutation = batch.mutation;
        config.trace = true;
        config.trace_print = true;
        println!("=== adversarial seed {seed}, {nodes} replicas, {} storage", batch.storage);
        let report = adversary::run(config);
        let actions: Vec<String> = report.actions.iter().map(|(name, n)| format!("{name}={n}")).collect();
        println!(
            "=== seed {seed} N={nodes}: {} steps, {} positions decided, liveness {:?}\n=== actions: {}",
            report.steps,
            report.decided,
            report.liveness,
            actions.join(" ")
        );
        for v in &report.tolerated {
            println!("=== TOLERATED step {}: {}: {}", v.tick, v.property, v.detail);
        }
        match &report.violation {
            Some(v) => {
                failed = true;
                println!("=== VIOLATION step {}: {}: {}", v.tick, v.property, v.detail);
            }
            None => println!("=== no violation"),
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The command that replays one adversarial run.
fn adversarial_replay_command(batch: &AdversaryBatch, seed: u64, nodes: usize) -> String {
    let (features, mutation) = match batch.mutation {
        Some(m) => (" --features mutations", format!(" --mutation {}", m.name())),
        None => ("", String::new()),
    };
    format!(
        "cargo run --release -p omnipaxos_sim{features} -- adversarial --seed {seed} --nodes {nodes} --storage {} --steps {}{mutation}",
        batch.storage, batch.steps
    )
}

fn adversarial_batch(batch: &AdversaryBatch, quiet: bool, expect_violation: bool) -> ExitCode {
    adversary::install_panic_capture();
    let jobs = batch.seeds.end.saturating_sub(batch.seeds.start) * batch.node_counts.len() as u64;
    let progress = if quiet { ProgressBar::hidden() } else { ProgressBar::new(jobs) };
    progress.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} runs, {elapsed} elapsed, eta {eta} {msg}")
            .expect("a valid template"),
    );
    let started = Instant::now();
    let summary = adversary::batch::run_batch(batch, |report| {
        progress.inc(1);
        if let (Some(v), false) = (&report.violation, quiet || expect_violation) {
            progress.suspend(|| {
                eprintln!(
                    "violation: seed {} N={}: {}",
                    report.seed,
                    report.nodes,
                    first_line(&v.to_string())
                );
            });
        }
    });
    progress.finish_and_clear();
    let mutation = batch.mutation.map_or(String::new(), |m| format!(", mutation {}", m.name()));
    println!(
        "adversarial: seeds {}..{} ({jobs} runs), {} steps per seed, {} storage{mutation}\n",
        batch.seeds.start, batch.seeds.end, batch.steps, batch.storage
    );
    println!("{}", summary.render(started.elapsed().as_secs_f64(), batch.threads));
    let mut violations = summary.violations();
    if expect_violation {
        violations.sort_by_key(|&(nodes, seed, _)| (seed, nodes));
        let first = violations.first().copied();
        return expected_violation(first, jobs, || match first {
            Some((nodes, seed, _)) => adversarial_replay_command(batch, seed, nodes),
            None => String::new(),
        });
    }
    for (nodes, seed, v) in violations.iter().take(20) {
        println!("FAIL seed {seed} N={nodes}: {}", first_line(&v.to_string()));
        println!("  replay: {}", adversarial_replay_command(batch, *seed, *nodes));
    }
    println!("{} failing runs", violations.len());
    if violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
