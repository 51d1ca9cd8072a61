//! Runs the side-by-side benchmark and writes its section of `docs/benchmarks.md` and its chart.
//!
//! ```sh
//! cargo run --profile release-lto -p omnipaxos_bench -- --out docs   # full run, writes docs/
//! cargo run -p omnipaxos_bench -- --smoke --out /tmp/bench           # seconds; for CI
//! # one run as the headline measures it (a fresh process; prints one JSON line), e.g. to profile:
//! target/release-lto/omnipaxos_bench --only ours --cluster-size 3 --batch 1000 --entries 1000000
//! ```
//!
//! A full run first measures every run in a child process of its own (the same binary with
//! `--only`), then the steady state in this process.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use clap::{Parser, ValueEnum};
use omnipaxos_bench::{
    alloc_counter::CountingAllocator,
    chart::{draw_chart, load_font, Panel},
    fresh_process::{
        report_line, run_child, run_fresh_suite, spawn_child, ChildRequest, FreshOptions, FreshResults,
    },
    harness::Rate,
    machine::{load_average, MachineInfo},
    memory_policy,
    reads::{read_section, run_read_suite, READS_SECTION_HEADING},
    report::{
        markdown_section, replace_named_section, replace_section, text_report, LoadSummary, Provenance,
    },
    suite::{run_suite, Library, SuiteOptions, SuiteResults, Workload},
};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// The command that regenerates the document section and the chart (from the workspace root).
const REGENERATE_COMMAND: &str = "cargo run --profile release-lto -p omnipaxos_bench -- --out docs";
const DOCUMENT_FILE_NAME: &str = "benchmarks.md";
const CHART_FILE_NAME: &str = "benchmarks-core.png";
/// Every log grows for a whole run; this bounds one steady-state run's memory, and so the heap
/// the steady-state pass keeps.
const MAX_ENTRIES_PER_RUN: u64 = 2_000_000;
/// Heap grown and touched up front for the steady-state pass: room for the largest run (5
/// nodes × 2 M entries, Vec growth and messages) several times over.
const HEAP_PREFAULT_BYTES: usize = 1536 << 20;
/// Paired medians need at least this many repetitions.
const MIN_REPETITIONS: usize = 3;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum MemoryArg {
    /// The allocator's default settings, nothing prefaulted: what a user's process gets (the
    /// headline runs).
    Default,
    /// Freed memory is kept and reused and the heap is prefaulted: the steady state (with
    /// `--profile-warmup`, the measured run faults no pages).
    Reuse,
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
    /// Repetitions of every measurement, in both passes (medians are reported; at least 3).
    #[arg(long, default_value_t = 5)]
    repetitions: usize,
    /// Fresh-process pass: entries decided per run at B = 1.
    #[arg(long, default_value_t = 1_000_000)]
    fresh_entries_unbatched: u64,
    /// Fresh-process pass: entries decided per run at B = 100 and 1000 (raft: a quarter).
    #[arg(long, default_value_t = 4_000_000)]
    fresh_entries: u64,
    /// Steady-state pass: target CPU time of one measured run, in seconds.
    #[arg(long, default_value_t = 0.25)]
    run_seconds: f64,
    /// TrueType font for the chart (default: DejaVu Sans from the usual places).
    #[arg(long)]
    font: Option<PathBuf>,
    /// One measured run of this library in this process, reported as one JSON line on stdout
    /// (how the full run measures each fresh-process run; also for profiling); no files.
    #[arg(long, value_enum)]
    only: Option<Library>,
    /// With `--only`: cluster size.
    #[arg(long, default_value_t = 3)]
    cluster_size: usize,
    /// With `--only`: proposals per flush.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// With `--only`: entries to decide in the measured run (rounded down to whole flushes).
    #[arg(long, default_value_t = 1_000_000)]
    entries: u64,
    /// With `--only`: where the logs' memory comes from.
    #[arg(long, value_enum, default_value_t = MemoryArg::Default)]
    memory: MemoryArg,
    /// With `--only`: run the measurement once unmeasured first (with `--memory reuse`, the
    /// measured run then faults no pages).
    #[arg(long)]
    profile_warmup: bool,
    /// Run the linearizable-read benchmark instead (its own section of `benchmarks.md`).
    #[arg(long)]
    reads: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let outcome = if let Some(library) = args.only {
        single_run(library, &args)
    } else if args.reads {
        read_run(&args)
    } else {
        full_run(&args)
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn keep_freed_memory() {
    if !memory_policy::keep_freed_memory() {
        eprintln!(
            "warning: could not make the allocator keep freed memory (not glibc?); its default applies"
        );
    }
}

/// `--only`: one run in this process; the JSON line on stdout, a readable line on stderr.
fn single_run(library: Library, args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let (n, batch) = (args.cluster_size, args.batch);
    if n == 0 || batch == 0 || args.entries < batch as u64 {
        return Err("--only needs a cluster size and batch of at least 1 and --entries ≥ --batch".into());
    }
    if let MemoryArg::Reuse = args.memory {
        keep_freed_memory();
        memory_policy::prefault_heap(HEAP_PREFAULT_BYTES);
    }
    let workload = Workload { cluster_size: n, batch };
    let request = ChildRequest { library, workload, entries: args.entries / batch as u64 * batch as u64 };
    if args.profile_warmup {
        run_child(&request, 0);
    }
    let sample = run_child(&request, 0);
    println!("{}", report_line(library, workload, &sample));
    eprintln!(
        "{} n={n} B={batch}: {} entries in {:.3} s wall, {:.3} s CPU ({:.0}% system): \
         {:.2} M entries/wall-s ({:.2} M/CPU-s), {:.3} msgs/entry, {:.3} allocs/entry, \
         {:.2} page faults/1000 entries, peak RSS {:.1} MiB",
        library.arg_name(),
        sample.decided_entries,
        sample.elapsed.as_secs_f64(),
        sample.cpu_time().as_secs_f64(),
        100.0 * sample.system_share(),
        sample.entries_per_wall_s() / 1e6,
        sample.entries_per_s() / 1e6,
        sample.messages_per_entry(),
        sample.allocations_per_entry(),
        1000.0 * sample.page_faults_per_entry(),
        sample.peak_rss_kib as f64 / 1024.0
    );
    Ok(())
}

/// The command that regenerates the read benchmark's section.
const READS_COMMAND: &str = "cargo run --profile release-lto -p omnipaxos_bench -- --reads --out docs";

fn read_run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let machine = MachineInfo::detect();
    eprintln!("machine: {}", machine.summary());
    let repetitions = if args.smoke { 1 } else { args.repetitions.max(1) };
    let load_before = load_average();
    let rows = run_read_suite(repetitions, Duration::from_secs_f64(args.run_seconds.max(0.001)), args.smoke);
    let load = |l: Option<[f64; 3]>| l.map_or("unknown".to_string(), |[one, ..]| format!("{one:.2}"));
    let summary = format!(
        "{}; {repetitions} repetitions per cell; 1-minute load average {} before and {} after the run (2 cores: \
         above 2, work waited for a core; the rates are per CPU-second, which leaves that wait out)",
        machine.summary(),
        load(load_before),
        load(load_average())
    );
    let section = read_section(&rows, &summary, READS_COMMAND, args.smoke);
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
    if !args.smoke && args.repetitions < MIN_REPETITIONS {
        return Err(format!("--repetitions must be at least {MIN_REPETITIONS} (paired medians)").into());
    }
    let cells = (vec![3, 5], vec![1, 100, 1000]);
    let (fresh_options, steady_options) = if args.smoke {
        let fresh = FreshOptions {
            cluster_sizes: cells.0.clone(),
            batch_sizes: cells.1.clone(),
            repetitions: 1,
            entries_unbatched: 1_000,
            entries_batched: 20_000,
            raft_entries_divisor: 4,
        };
        let steady = SuiteOptions {
            cluster_sizes: cells.0,
            batch_sizes: cells.1,
            repetitions: 1,
            warmup_repetitions: 0,
            run_duration: Duration::from_millis(5),
            max_entries_per_run: 20_000,
        };
        (fresh, steady)
    } else {
        let fresh = FreshOptions {
            cluster_sizes: cells.0.clone(),
            batch_sizes: cells.1.clone(),
            repetitions: args.repetitions,
            entries_unbatched: args.fresh_entries_unbatched.max(1),
            entries_batched: args.fresh_entries.max(1),
            raft_entries_divisor: 4,
        };
        let steady = SuiteOptions {
            cluster_sizes: cells.0,
            batch_sizes: cells.1,
            repetitions: args.repetitions,
            warmup_repetitions: 1,
            run_duration: Duration::from_secs_f64(args.run_seconds.max(0.001)),
            max_entries_per_run: MAX_ENTRIES_PER_RUN,
        };
        (fresh, steady)
    };
    if cfg!(debug_assertions) && !args.smoke {
        eprintln!("warning: a debug build; use `--profile release-lto` for numbers that mean anything");
    }
    let machine = MachineInfo::detect();
    eprintln!("machine: {}", machine.summary());
    eprintln!("fresh-process pass (headline): every run in a child process of its own");
    let exe = std::env::current_exe()?;
    let fresh = run_fresh_suite(&fresh_options, &mut |request| spawn_child(&exe, request))?;
    eprintln!("steady-state pass: in this process, memory reused");
    let mut load = LoadSummary { fresh_1min: fresh.load_averages_1min.clone(), steady_1min: Vec::new() };
    load.steady_1min.extend(load_average().map(|[one, ..]| one));
    keep_freed_memory();
    memory_policy::prefault_heap(if args.smoke { 64 << 20 } else { HEAP_PREFAULT_BYTES });
    let steady = run_suite(&steady_options);
    load.steady_1min.extend(load_average().map(|[one, ..]| one));
    println!("{}", text_report(&fresh, &steady, &load, &machine));
    if let Some(dir) = &args.out {
        let outputs = Outputs {
            fresh: &fresh,
            fresh_options: &fresh_options,
            steady: &steady,
            steady_options: &steady_options,
            load: &load,
            machine: &machine,
        };
        write_outputs(dir, &outputs, args.smoke)?;
    }
    Ok(())
}

/// Everything the document section and the chart are made from.
struct Outputs<'a> {
    fresh: &'a FreshResults,
    fresh_options: &'a FreshOptions,
    steady: &'a SuiteResults,
    steady_options: &'a SuiteOptions,
    load: &'a LoadSummary,
    machine: &'a MachineInfo,
}

fn write_outputs(dir: &Path, outputs: &Outputs, smoke: bool) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    let chart_path = dir.join(CHART_FILE_NAME);
    let when = format!("{}, {} UTC", outputs.machine.cpu_model, outputs.machine.date_utc);
    let panels = [
        Panel {
            results: &outputs.fresh.results,
            rate: Rate::Wall,
            title: format!("Headline: entries per wall-second, a fresh process per run ({when})"),
        },
        Panel {
            results: outputs.steady,
            rate: Rate::Cpu,
            title: "Steady state: entries per CPU-second, in process, memory reused (all nodes on one core)"
                .to_string(),
        },
    ];
    draw_chart(&panels, &chart_path)?;
    let provenance = Provenance { command: REGENERATE_COMMAND, chart_file_name: CHART_FILE_NAME, smoke };
    let section = markdown_section(
        outputs.fresh,
        outputs.fresh_options,
        outputs.steady,
        outputs.steady_options,
        outputs.load,
        outputs.machine,
        &provenance,
    );
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
