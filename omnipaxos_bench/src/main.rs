//! Runs the side-by-side benchmark and writes its section of `docs/benchmarks.md` and its chart.
//!
//! ```sh
//! cargo run --profile release-lto -p omnipaxos_bench -- --out docs   # full run, writes docs/
//! cargo run -p omnipaxos_bench -- --smoke --out /tmp/bench           # seconds; for CI
//! target/release-lto/omnipaxos_bench --only ours --cluster-size 3 --batch 1000  # one run, to profile
//! ```

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use clap::{Parser, ValueEnum};
use omnipaxos_bench::{
    alloc_counter::CountingAllocator,
    chart::{draw_chart, load_font},
    harness::{measure, Sample},
    machine::MachineInfo,
    memory_policy::{self, MemoryPolicy},
    peers::{
        null::NullNode,
        omnipaxos_peer::OmniPaxosNode,
        ours::{OurNode, OurPiggybackNode},
        raft_peer::RaftNode,
    },
    reads::{read_section, run_read_suite, READS_SECTION_HEADING},
    report::{markdown_section, replace_named_section, replace_section, text_report, Provenance},
    suite::{run_suite, SuiteOptions, SuiteResults},
};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// The command that regenerates the document section and the chart (from the workspace root).
const REGENERATE_COMMAND: &str = "cargo run --profile release-lto -p omnipaxos_bench -- --out docs";
const DOCUMENT_FILE_NAME: &str = "benchmarks.md";
const CHART_FILE_NAME: &str = "benchmarks-core.png";
/// Every log grows for a whole run; this bounds one run's memory (about 32 B per entry per
/// node), and so the heap that `MemoryPolicy::Reuse` keeps.
const MAX_ENTRIES_PER_RUN: u64 = 2_000_000;
/// Heap grown and touched up front under `MemoryPolicy::Reuse`: room for the largest run (5
/// nodes × 2 M entries × 32 B, Vec growth and messages) several times over.
const HEAP_PREFAULT_BYTES: usize = 1536 << 20;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum MemoryArg {
    /// Freed memory is reused (no mmap, no heap trimming): steady state, no page faults after
    /// a warm-up repetition.
    Reuse,
    /// Every large log is fresh memory (fixed 128 KiB mmap threshold): runs pay page faults.
    Fresh,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LibraryArg {
    Ours,
    OursPiggyback,
    Omnipaxos,
    Raft,
    Null,
}

/// Side-by-side benchmark of omnipaxos_core, omnipaxos 0.2.4, raft 0.7 and a null protocol.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Write `benchmarks.md` (only this benchmark's section is replaced) and
    /// `benchmarks-core.png` into this directory.
    #[arg(long)]
    out: Option<PathBuf>,
    /// A tiny workload that runs in seconds (for CI); its numbers mean nothing.
    #[arg(long)]
    smoke: bool,
    /// Repetitions of every measurement (median, min and max are reported).
    #[arg(long, default_value_t = 7)]
    repetitions: usize,
    /// Target duration of one measured run, in seconds.
    #[arg(long, default_value_t = 0.25)]
    run_seconds: f64,
    /// Profiling mode: where the logs' memory comes from (a full run measures with `reuse`,
    /// then repeats B = 1000 with `fresh`).
    #[arg(long, value_enum, default_value_t = MemoryArg::Reuse)]
    memory: MemoryArg,
    /// TrueType font for the chart (default: DejaVu Sans from the usual places).
    #[arg(long)]
    font: Option<PathBuf>,
    /// Profiling mode: one measured run of this library only; no calibration, no files.
    #[arg(long)]
    only: Option<LibraryArg>,
    /// Profiling mode: cluster size.
    #[arg(long, default_value_t = 3)]
    cluster_size: usize,
    /// Profiling mode: proposals per flush.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Profiling mode: run the measurement once unmeasured first (grows the heap under
    /// `--memory reuse`, so the measured run faults no pages).
    #[arg(long)]
    profile_warmup: bool,
    /// Profiling mode: entries to decide in the measured run.
    #[arg(long, default_value_t = 1_000_000)]
    entries: u64,
    /// Run the linearizable-read benchmark instead (its own section of `benchmarks.md`).
    #[arg(long)]
    reads: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(library) = args.only {
        let policy = match args.memory {
            MemoryArg::Reuse => MemoryPolicy::Reuse,
            MemoryArg::Fresh => MemoryPolicy::Fresh,
        };
        set_memory_policy(policy);
        if policy == MemoryPolicy::Reuse {
            memory_policy::prefault_heap(HEAP_PREFAULT_BYTES);
        }
        profile_run(library, &args);
        return ExitCode::SUCCESS;
    }
    if args.reads {
        return match read_run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match full_run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn set_memory_policy(policy: MemoryPolicy) {
    if !memory_policy::apply(policy) {
        eprintln!("warning: could not set the allocator's memory policy (not glibc?); its default applies");
    }
}

fn profile_run(library: LibraryArg, args: &Args) {
    let flushes = (args.entries / args.batch as u64).max(1);
    let (n, batch, warmup) = (args.cluster_size, args.batch, (flushes / 10).max(1));
    let run = || match library {
        LibraryArg::Ours => measure::<OurNode>(n, batch, warmup, flushes),
        LibraryArg::OursPiggyback => measure::<OurPiggybackNode>(n, batch, warmup, flushes),
        LibraryArg::Omnipaxos => measure::<OmniPaxosNode>(n, batch, warmup, flushes),
        LibraryArg::Raft => measure::<RaftNode>(n, batch, warmup, flushes),
        LibraryArg::Null => measure::<NullNode>(n, batch, warmup, flushes),
    };
    if args.profile_warmup {
        run();
    }
    let sample: Sample = run();
    println!(
        "{library:?} n={n} B={batch}: {} entries in {:.3} s wall, {:.3} s CPU ({:.0}% system): \
         {:.2} M entries/CPU-s ({:.2} M/wall-s), {:.1} ns/entry, {:.3} msgs/entry, \
         {:.3} allocs/entry, {:.4} page faults/entry",
        sample.decided_entries,
        sample.elapsed.as_secs_f64(),
        sample.cpu_time().as_secs_f64(),
        100.0 * sample.system_share(),
        sample.entries_per_s() / 1e6,
        sample.entries_per_wall_s() / 1e6,
        1e9 / sample.entries_per_s(),
        sample.messages_per_entry(),
        sample.allocations_per_entry(),
        sample.page_faults_per_entry()
    );
}

/// The command that regenerates the read benchmark's section.
const READS_COMMAND: &str = "cargo run --profile release-lto -p omnipaxos_bench -- --reads --out docs";

fn read_run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let machine = MachineInfo::detect();
    eprintln!("machine: {}", machine.summary());
    let repetitions = if args.smoke { 1 } else { args.repetitions.max(1) };
    let rows = run_read_suite(repetitions, Duration::from_secs_f64(args.run_seconds.max(0.001)), args.smoke);
    let section = read_section(&rows, &machine.summary(), READS_COMMAND, args.smoke);
    println!("{section}");
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(DOCUMENT_FILE_NAME);
        let existing = match std::fs::read_to_string(&path) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        std::fs::write(&path, replace_named_section(existing.as_deref(), READS_SECTION_HEADING, &section))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn full_run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    if args.out.is_some() {
        // Fail before measuring, not after.
        load_font(args.font.as_deref())?;
    }
    let options = if args.smoke {
        SuiteOptions {
            cluster_sizes: vec![3, 5],
            batch_sizes: vec![1, 100, 1000],
            repetitions: 1,
            warmup_repetitions: 0,
            memory_policy: MemoryPolicy::Reuse,
            run_duration: Duration::from_millis(5),
            max_entries_per_run: 20_000,
        }
    } else {
        SuiteOptions {
            cluster_sizes: vec![3, 5],
            batch_sizes: vec![1, 100, 1000],
            repetitions: args.repetitions.max(1),
            warmup_repetitions: 1,
            memory_policy: MemoryPolicy::Reuse,
            run_duration: Duration::from_secs_f64(args.run_seconds.max(0.001)),
            max_entries_per_run: MAX_ENTRIES_PER_RUN,
        }
    };
    // The other pass: the large batches again, each run's logs in fresh memory.
    let fresh_options = SuiteOptions {
        batch_sizes: vec![1000],
        warmup_repetitions: 0,
        memory_policy: MemoryPolicy::Fresh,
        ..options.clone()
    };
    if cfg!(debug_assertions) && !args.smoke {
        eprintln!("warning: a debug build; use `--profile release-lto` for numbers that mean anything");
    }
    let machine = MachineInfo::detect();
    eprintln!("machine: {}", machine.summary());
    // Fresh first: the `reuse` pass leaves a large heap behind, which large allocations would
    // be served from instead of fresh pages.
    eprintln!("fresh-memory pass: B = 1000, every large log in fresh pages");
    set_memory_policy(fresh_options.memory_policy);
    let fresh = run_suite(&fresh_options);
    eprintln!("main pass: memory reused (steady state)");
    set_memory_policy(options.memory_policy);
    memory_policy::prefault_heap(if args.smoke { 64 << 20 } else { HEAP_PREFAULT_BYTES });
    let results = run_suite(&options);
    println!("{}", text_report(&results, Some(&fresh), &machine));
    if let Some(dir) = &args.out {
        write_outputs(dir, &results, &fresh, &machine, args.smoke)?;
    }
    Ok(())
}

fn write_outputs(
    dir: &Path,
    results: &SuiteResults,
    fresh: &SuiteResults,
    machine: &MachineInfo,
    smoke: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    let chart_path = dir.join(CHART_FILE_NAME);
    let title = format!(
        "Decided entries per CPU-second, all nodes on one core, steady-state memory ({}, {} UTC)",
        machine.cpu_model, machine.date_utc
    );
    draw_chart(results, &title, &chart_path)?;
    let provenance = Provenance { command: REGENERATE_COMMAND, chart_file_name: CHART_FILE_NAME, smoke };
    let section = markdown_section(results, Some(fresh), machine, &provenance);
    let document_path = dir.join(DOCUMENT_FILE_NAME);
    let existing = match std::fs::read_to_string(&document_path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    std::fs::write(&document_path, replace_section(existing.as_deref(), &section))?;
    eprintln!("wrote {} and {}", document_path.display(), chart_path.display());
    Ok(())
}
