//! The steady-state suite (every library at every cluster size and batch size, in this process,
//! memory reused, repeated with the libraries interleaved so that all of them see the same
//! machine at the same time), and the result types both suites share.

use std::time::Duration;

use crate::{
    harness::{calibrate, measure, Node, Rate, Sample},
    peers::{
        null::NullNode,
        omnipaxos_peer::OmniPaxosNode,
        ours::{OurEagerNode, OurNode},
        raft_peer::RaftNode,
    },
};

/// The libraries on the harness (the command-line names are `ours`, `ours-eager`, `omnipaxos`,
/// `raft`, `null`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Library {
    /// `omnipaxos_core` (this workspace), default configuration.
    Ours,
    /// `omnipaxos_core` with `set_piggyback_decide(false)`: every decision goes out at once.
    OursEager,
    /// The `omnipaxos` crate 0.2.4.
    #[value(name = "omnipaxos")]
    OmniPaxos,
    /// tikv's `raft` crate 0.7.
    Raft,
    /// The null protocol (a floor).
    Null,
}

impl Library {
    /// Every library, ours first.
    pub const ALL: [Library; 5] =
        [Library::Ours, Library::OursEager, Library::OmniPaxos, Library::Raft, Library::Null];

    /// The name used in tables and the chart.
    pub fn name(self) -> &'static str {
        match self {
            Library::Ours => "omnipaxos_core (ours)",
            Library::OursEager => "ours, eager Decide",
            Library::OmniPaxos => "omnipaxos 0.2.4",
            Library::Raft => "raft 0.7",
            Library::Null => "null protocol",
        }
    }

    /// The command-line name (`--only`), also the name in a child's report.
    pub fn arg_name(self) -> &'static str {
        match self {
            Library::Ours => "ours",
            Library::OursEager => "ours-eager",
            Library::OmniPaxos => "omnipaxos",
            Library::Raft => "raft",
            Library::Null => "null",
        }
    }

    /// The library with this command-line name.
    pub fn from_arg_name(name: &str) -> Option<Library> {
        Library::ALL.into_iter().find(|library| library.arg_name() == name)
    }

    /// One measured run in this process (see [`measure`]).
    pub fn measure(self, n: usize, batch: usize, warmup_flushes: u64, flushes: u64) -> Sample {
        match self {
            Library::Ours => measure::<OurNode>(n, batch, warmup_flushes, flushes),
            Library::OursEager => measure::<OurEagerNode>(n, batch, warmup_flushes, flushes),
            Library::OmniPaxos => measure::<OmniPaxosNode>(n, batch, warmup_flushes, flushes),
            Library::Raft => measure::<RaftNode>(n, batch, warmup_flushes, flushes),
            Library::Null => measure::<NullNode>(n, batch, warmup_flushes, flushes),
        }
    }

    fn calibrate(self, n: usize, batch: usize, target: Duration, max_entries: u64) -> u64 {
        fn run<N: Node>(n: usize, batch: usize, target: Duration, max_entries: u64) -> u64 {
            calibrate::<N>(n, batch, target, max_entries)
        }
        match self {
            Library::Ours => run::<OurNode>(n, batch, target, max_entries),
            Library::OursEager => run::<OurEagerNode>(n, batch, target, max_entries),
            Library::OmniPaxos => run::<OmniPaxosNode>(n, batch, target, max_entries),
            Library::Raft => run::<RaftNode>(n, batch, target, max_entries),
            Library::Null => run::<NullNode>(n, batch, target, max_entries),
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct SuiteOptions {
    pub cluster_sizes: Vec<usize>,
    pub batch_sizes: Vec<usize>,
    pub repetitions: usize,
    /// Repetitions run first and discarded (they also grow the reused heap).
    pub warmup_repetitions: usize,
    /// CPU time one measured run aims for.
    pub run_duration: Duration,
    /// Upper bound on the entries of one run (memory: every log grows for the whole run).
    pub max_entries_per_run: u64,
}

/// One workload: a cluster size and a number of proposals per flush.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Workload {
    pub cluster_size: usize,
    pub batch: usize,
}

/// Every repetition of one library on one workload.
#[derive(Clone, Debug)]
pub struct Measurement {
    pub library: Library,
    pub workload: Workload,
    /// Flushes per measured run (from calibration, or from the entries asked of a child).
    pub flushes: u64,
    /// One sample per repetition, in repetition order.
    pub samples: Vec<Sample>,
}

/// Median, minimum and maximum of some values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// # Panics
    /// If `values` is empty.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Spread {
        let mut values: Vec<f64> = values.into_iter().collect();
        assert!(!values.is_empty(), "a spread needs at least one value");
        values.sort_by(f64::total_cmp);
        let middle = values.len() / 2;
        let median =
            if values.len() % 2 == 1 { values[middle] } else { (values[middle - 1] + values[middle]) / 2.0 };
        Spread { median, min: values[0], max: values[values.len() - 1] }
    }
}

impl Measurement {
    /// Entries per CPU-second.
    pub fn entries_per_s(&self) -> Spread {
        Spread::of(self.samples.iter().map(Sample::entries_per_s))
    }

    /// Entries per second of `rate`'s time.
    pub fn entries_per(&self, rate: Rate) -> Spread {
        Spread::of(self.samples.iter().map(|s| s.entries_per(rate)))
    }

    /// Median CPU seconds (user + system) of a run.
    pub fn cpu_seconds(&self) -> f64 {
        Spread::of(self.samples.iter().map(|s| s.cpu_time().as_secs_f64())).median
    }

    /// Median wall-clock seconds of a run.
    pub fn wall_seconds(&self) -> f64 {
        Spread::of(self.samples.iter().map(|s| s.elapsed.as_secs_f64())).median
    }

    /// Entries decided in one run (the same in every repetition).
    pub fn entries_per_run(&self) -> u64 {
        self.samples.first().map_or(0, |s| s.decided_entries)
    }

    /// Median peak RSS of a run's process in MiB (0 for in-process runs).
    pub fn peak_rss_mib(&self) -> f64 {
        Spread::of(self.samples.iter().map(|s| s.peak_rss_kib as f64 / 1024.0)).median
    }

    /// Median minor page faults per 1000 decided entries.
    pub fn page_faults_per_1000_entries(&self) -> f64 {
        1000.0 * self.page_faults_per_entry()
    }

    /// Entries per wall-clock second (includes time other processes held the core).
    pub fn entries_per_wall_s(&self) -> Spread {
        Spread::of(self.samples.iter().map(Sample::entries_per_wall_s))
    }

    /// Median share of CPU time spent in the kernel.
    pub fn system_share(&self) -> f64 {
        Spread::of(self.samples.iter().map(Sample::system_share)).median
    }

    pub fn page_faults_per_entry(&self) -> f64 {
        Spread::of(self.samples.iter().map(Sample::page_faults_per_entry)).median
    }

    /// Nanoseconds per entry at the median rate.
    pub fn ns_per_entry(&self) -> f64 {
        1e9 / self.entries_per_s().median
    }

    pub fn messages_per_entry(&self) -> f64 {
        Spread::of(self.samples.iter().map(Sample::messages_per_entry)).median
    }

    pub fn allocations_per_entry(&self) -> f64 {
        Spread::of(self.samples.iter().map(Sample::allocations_per_entry)).median
    }
}

/// Everything one suite measured.
#[derive(Clone, Debug, Default)]
pub struct SuiteResults {
    pub measurements: Vec<Measurement>,
}

impl SuiteResults {
    /// The workloads in run order.
    pub fn workloads(&self) -> Vec<Workload> {
        let mut workloads = Vec::new();
        for m in &self.measurements {
            if !workloads.contains(&m.workload) {
                workloads.push(m.workload);
            }
        }
        workloads
    }

    pub fn get(&self, library: Library, workload: Workload) -> Option<&Measurement> {
        self.measurements.iter().find(|m| m.library == library && m.workload == workload)
    }

    /// Our entries per second of `rate`'s time over the peer's, per repetition (the two ran
    /// back to back): median, min, max of those paired ratios.
    pub fn paired_ratio(&self, peer: Library, workload: Workload, rate: Rate) -> Option<Spread> {
        let ours = self.get(Library::Ours, workload)?;
        let theirs = self.get(peer, workload)?;
        if ours.samples.is_empty() || theirs.samples.is_empty() {
            return None;
        }
        let ratios =
            ours.samples.iter().zip(&theirs.samples).map(|(a, b)| a.entries_per(rate) / b.entries_per(rate));
        Some(Spread::of(ratios))
    }
}

/// Runs the suite, printing progress to stderr. Libraries are calibrated once per workload,
/// then each repetition runs every workload and every library, rotating the library order.
pub fn run_suite(options: &SuiteOptions) -> SuiteResults {
    let mut measurements = Vec::new();
    for &cluster_size in &options.cluster_sizes {
        for &batch in &options.batch_sizes {
            let workload = Workload { cluster_size, batch };
            for library in Library::ALL {
                let flushes =
                    library.calibrate(cluster_size, batch, options.run_duration, options.max_entries_per_run);
                // Reserved now: no allocation between runs may split the heap's free memory.
                let samples = Vec::with_capacity(options.repetitions);
                measurements.push(Measurement { library, workload, flushes, samples });
            }
        }
    }
    let library_count = Library::ALL.len();
    let total = options.warmup_repetitions + options.repetitions;
    for repetition in 0..total {
        let warmup = repetition < options.warmup_repetitions;
        let label = if warmup { " (warm-up, discarded)" } else { "" };
        eprintln!("repetition {}/{total}{label}", repetition + 1);
        for group in measurements.chunks_mut(library_count) {
            for k in 0..library_count {
                let m = &mut group[(k + repetition) % library_count];
                let Workload { cluster_size, batch } = m.workload;
                let warmup_flushes = (m.flushes / 10).max(1);
                let sample = m.library.measure(cluster_size, batch, warmup_flushes, m.flushes);
                eprintln!(
                    "  n={cluster_size} B={batch:<5} {:<22} {:>8.3} M entries/CPU-s {:>8.3} M entries/wall-s",
                    m.library.name(),
                    sample.entries_per_s() / 1e6,
                    sample.entries_per_wall_s() / 1e6
                );
                if !warmup {
                    m.samples.push(sample);
                }
            }
        }
    }
    SuiteResults { measurements }
}
