//! The headline runs: every measured run in a process of its own, as a user's process sees it.
//!
//! ```text
//!   parent ──► for each repetition, cell (n, B), library (ours and omnipaxos back to back):
//!                spawn <this binary> --only <library> --cluster-size n --batch B --entries E
//!   child  ──► build the cluster, elect, decide E entries (measured), then print one JSON line:
//!                wall time, CPU user + system, minor page faults, peak RSS, messages, allocations
//!   parent ──► SuiteResults (one Sample per child) + load averages seen during the pass
//! ```
//!
//! The key decision: a fresh process per run, with the allocator's default settings and nothing
//! prefaulted, so each library pays for every page its logs touch, and nothing a run does
//! depends on the runs before it. The rate is per second of wall time, kernel time included.
//! Ours and omnipaxos run back to back in every repetition (who goes first alternates), so
//! their ratio is taken per repetition and the report gives the median of those ratios.

use std::{fmt, path::Path, process::Command, time::Duration};

use crate::{
    harness::Sample,
    machine::load_average,
    suite::{Library, Measurement, SuiteResults, Workload},
    usage::Usage,
};

/// What to run in fresh processes.
#[derive(Clone, Debug)]
pub struct FreshOptions {
    pub cluster_sizes: Vec<usize>,
    pub batch_sizes: Vec<usize>,
    pub repetitions: usize,
    /// Entries decided per run at one proposal per flush.
    pub entries_unbatched: u64,
    /// Entries decided per run at B > 1.
    pub entries_batched: u64,
    /// raft runs decide this many times fewer entries (it is about 10× slower, and its log
    /// entries are protobuf structs of about 100 bytes): its runs last about as long as the
    /// others'. Its page faults and RSS are therefore not comparable with the others'.
    pub raft_entries_divisor: u64,
}

impl FreshOptions {
    /// Entries one run of `library` decides at `batch` proposals per flush: a whole number of
    /// flushes, at least one.
    pub fn entries(&self, library: Library, batch: usize) -> u64 {
        let base = if batch == 1 { self.entries_unbatched } else { self.entries_batched };
        let divisor = if library == Library::Raft { self.raft_entries_divisor.max(1) } else { 1 };
        let batch = batch.max(1) as u64;
        ((base / divisor) / batch).max(1) * batch
    }
}

/// One child run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChildRequest {
    pub library: Library,
    pub workload: Workload,
    /// Entries to decide; a multiple of the batch.
    pub entries: u64,
}

impl ChildRequest {
    /// The child's command-line arguments.
    pub fn args(&self) -> Vec<String> {
        vec![
            "--only".into(),
            self.library.arg_name().into(),
            "--cluster-size".into(),
            self.workload.cluster_size.to_string(),
            "--batch".into(),
            self.workload.batch.to_string(),
            "--entries".into(),
            self.entries.to_string(),
        ]
    }
}

/// Runs the request in this process, which must be fresh (the child side): builds the cluster,
/// elects, decides the entries (measured: wall time, CPU, page faults, messages, allocations),
/// and reads the process's peak RSS.
pub fn run_child(request: &ChildRequest, warmup_flushes: u64) -> Sample {
    let Workload { cluster_size, batch } = request.workload;
    let flushes = (request.entries / batch.max(1) as u64).max(1);
    let mut sample = request.library.measure(cluster_size, batch, warmup_flushes, flushes);
    sample.peak_rss_kib = Usage::process().max_rss_kib;
    sample
}

/// The keys of a child's report line, in order.
const REPORT_KEYS: [&str; 11] = [
    "library",
    "cluster_size",
    "batch",
    "decided_entries",
    "wall_ns",
    "user_ns",
    "system_ns",
    "minor_faults",
    "peak_rss_kib",
    "messages",
    "allocations",
];

/// A child's report: one line of JSON, a flat object of integers and the library's name.
pub fn report_line(library: Library, workload: Workload, sample: &Sample) -> String {
    let values = [
        workload.cluster_size as u64,
        workload.batch as u64,
        sample.decided_entries,
        sample.elapsed.as_nanos() as u64,
        sample.cpu_user.as_nanos() as u64,
        sample.cpu_system.as_nanos() as u64,
        sample.page_faults,
        sample.peak_rss_kib,
        sample.delivered_messages,
        sample.allocations,
    ];
    let mut line = format!("{{\"{}\":\"{}\"", REPORT_KEYS[0], library.arg_name());
    for (key, value) in REPORT_KEYS[1..].iter().zip(values) {
        line.push_str(&format!(",\"{key}\":{value}"));
    }
    line.push('}');
    line
}

/// Parses a line written by [`report_line`].
pub fn parse_report_line(line: &str) -> Result<(Library, Workload, Sample), ChildError> {
    let bad = || ChildError::BadReport(line.to_string());
    let body = line.trim().strip_prefix('{').and_then(|s| s.strip_suffix('}')).ok_or_else(bad)?;
    let fields: Vec<(&str, &str)> = body
        .split(',')
        .map(|field| field.split_once(':').map(|(k, v)| (k.trim().trim_matches('"'), v.trim())))
        .collect::<Option<_>>()
        .ok_or_else(bad)?;
    let keys: Vec<&str> = fields.iter().map(|(k, _)| *k).collect();
    if keys != REPORT_KEYS {
        return Err(bad());
    }
    let library = fields[0].1.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
    let library = library.and_then(Library::from_arg_name).ok_or_else(bad)?;
    let numbers: Vec<u64> =
        fields[1..].iter().map(|(_, v)| v.parse::<u64>()).collect::<Result<_, _>>().map_err(|_| bad())?;
    let workload = Workload { cluster_size: numbers[0] as usize, batch: numbers[1] as usize };
    let sample = Sample {
        decided_entries: numbers[2],
        elapsed: Duration::from_nanos(numbers[3]),
        cpu_user: Duration::from_nanos(numbers[4]),
        cpu_system: Duration::from_nanos(numbers[5]),
        page_faults: numbers[6],
        peak_rss_kib: numbers[7],
        delivered_messages: numbers[8],
        allocations: numbers[9],
    };
    Ok((library, workload, sample))
}

/// Why a child run gave no figures.
#[derive(Debug)]
pub enum ChildError {
    Spawn(std::io::Error),
    /// The child exited unsuccessfully; its stderr.
    Failed {
        request: ChildRequest,
        status: String,
        stderr: String,
    },
    /// The child's stdout held no report line of the right form.
    BadReport(String),
    /// The report is for another run than the one asked for.
    Mismatch {
        request: ChildRequest,
        reported: String,
    },
}

impl fmt::Display for ChildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChildError::Spawn(e) => write!(f, "could not start the child process: {e}"),
            ChildError::Failed { request, status, stderr } => {
                write!(f, "child {} failed ({status}):\n{stderr}", request.args().join(" "))
            }
            ChildError::BadReport(line) => write!(f, "unreadable child report: {line:?}"),
            ChildError::Mismatch { request, reported } => {
                write!(f, "child {} reported another run: {reported}", request.args().join(" "))
            }
        }
    }
}

impl std::error::Error for ChildError {}

/// Runs the request in a new process of `exe` (this binary) and reads its report.
pub fn spawn_child(exe: &Path, request: &ChildRequest) -> Result<Sample, ChildError> {
    let output = Command::new(exe).args(request.args()).output().map_err(ChildError::Spawn)?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(ChildError::Failed {
            request: *request,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    let line = stdout.lines().rev().find(|l| l.starts_with('{')).unwrap_or_default();
    let (library, workload, sample) = parse_report_line(line)?;
    if library != request.library || workload != request.workload || sample.decided_entries != request.entries
    {
        return Err(ChildError::Mismatch { request: *request, reported: line.to_string() });
    }
    Ok(sample)
}

/// The order of the libraries in one repetition: ours and omnipaxos back to back, who goes
/// first alternating; the others after them, their order reversed every other repetition.
pub fn run_order(repetition: usize) -> [Library; 5] {
    use Library::*;
    if repetition % 2 == 0 {
        [Ours, OmniPaxos, Raft, Null, OursEager]
    } else {
        [OmniPaxos, Ours, OursEager, Null, Raft]
    }
}

/// What the fresh-process pass measured.
#[derive(Clone, Debug, Default)]
pub struct FreshResults {
    pub results: SuiteResults,
    /// The 1-minute load average before every repetition and after the last.
    pub load_averages_1min: Vec<f64>,
}

/// Runs every cell `repetitions` times, one child per run through `run` (normally
/// [`spawn_child`]), printing progress to stderr.
pub fn run_fresh_suite(
    options: &FreshOptions,
    run: &mut dyn FnMut(&ChildRequest) -> Result<Sample, ChildError>,
) -> Result<FreshResults, ChildError> {
    let mut measurements = Vec::new();
    for &cluster_size in &options.cluster_sizes {
        for &batch in &options.batch_sizes {
            let workload = Workload { cluster_size, batch };
            for library in Library::ALL {
                let flushes = options.entries(library, batch) / batch as u64;
                let samples = Vec::with_capacity(options.repetitions);
                measurements.push(Measurement { library, workload, flushes, samples });
            }
        }
    }
    let mut load_averages_1min = Vec::new();
    let mut note_load = || {
        let load = load_average();
        if let Some([one, ..]) = load {
            load_averages_1min.push(one);
        }
        load
    };
    for repetition in 0..options.repetitions {
        let load = note_load().map_or("unknown".to_string(), |[a, b, c]| format!("{a:.2} {b:.2} {c:.2}"));
        eprintln!("repetition {}/{} (load average {load})", repetition + 1, options.repetitions);
        for cell in measurements.chunks_mut(Library::ALL.len()) {
            for library in run_order(repetition) {
                let m = cell.iter_mut().find(|m| m.library == library).expect("every library has a cell");
                let request = ChildRequest {
                    library,
                    workload: m.workload,
                    entries: m.flushes * m.workload.batch as u64,
                };
                let sample = run(&request)?;
                eprintln!(
                    "  n={} B={:<5} {:<22} {:>8.3} M entries/wall-s {:>7.3} s CPU ({:>3.0}% kernel) {:>8.2} faults/1000 entries {:>7.1} MiB peak RSS",
                    m.workload.cluster_size,
                    m.workload.batch,
                    library.name(),
                    sample.entries_per_wall_s() / 1e6,
                    sample.cpu_time().as_secs_f64(),
                    100.0 * sample.system_share(),
                    1000.0 * sample.page_faults_per_entry(),
                    sample.peak_rss_kib as f64 / 1024.0
                );
                m.samples.push(sample);
            }
        }
    }
    note_load();
    Ok(FreshResults { results: SuiteResults { measurements }, load_averages_1min })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Sample {
        Sample {
            decided_entries: 4_000_000,
            elapsed: Duration::from_nanos(212_345_678),
            cpu_user: Duration::from_nanos(150_000_000),
            cpu_system: Duration::from_nanos(60_000_000),
            page_faults: 23_456,
            delivered_messages: 16_000,
            allocations: 68_000,
            peak_rss_kib: 123_456,
        }
    }

    #[test]
    fn a_report_line_reads_back_as_written() {
        let workload = Workload { cluster_size: 5, batch: 1000 };
        for library in Library::ALL {
            let line = report_line(library, workload, &sample());
            assert!(!line.contains('\n'));
            assert_eq!(parse_report_line(&line).unwrap(), (library, workload, sample()));
        }
    }

    #[test]
    fn malformed_report_lines_are_refused() {
        let good = report_line(Library::Ours, Workload { cluster_size: 3, batch: 1 }, &sample());
        for bad in [
            String::new(),
            good.replace("\"ours\"", "\"nobody\""),
            good.replace("\"wall_ns\"", "\"wall_s\""),
            good.replace(",\"allocations\":68000", ""),
            good.replace("23456", "-1"),
            good.trim_end_matches('}').to_string(),
        ] {
            assert!(parse_report_line(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ours_and_omnipaxos_run_back_to_back_and_take_turns_going_first() {
        for repetition in 0..4 {
            let order = run_order(repetition);
            let position = |l| order.iter().position(|&x| x == l).unwrap();
            let (ours, theirs) = (position(Library::Ours), position(Library::OmniPaxos));
            assert_eq!(ours.abs_diff(theirs), 1);
            assert_eq!(ours < theirs, repetition % 2 == 0);
            let mut sorted = order;
            sorted.sort();
            assert_eq!(sorted, Library::ALL, "every library once");
        }
    }

    #[test]
    fn runs_decide_whole_flushes_and_raft_fewer_entries() {
        let options = FreshOptions {
            cluster_sizes: vec![3],
            batch_sizes: vec![1, 1000],
            repetitions: 3,
            entries_unbatched: 1_000_000,
            entries_batched: 4_000_000,
            raft_entries_divisor: 4,
        };
        assert_eq!(options.entries(Library::Ours, 1), 1_000_000);
        assert_eq!(options.entries(Library::OmniPaxos, 1000), 4_000_000);
        assert_eq!(options.entries(Library::Raft, 1000), 1_000_000);
        assert_eq!(options.entries(Library::Ours, 300), 3_999_900);
        let tiny = FreshOptions { entries_batched: 10, ..options };
        assert_eq!(tiny.entries(Library::Raft, 1000), 1000, "at least one flush");
    }

    #[test]
    fn the_suite_pairs_samples_by_repetition() {
        let options = FreshOptions {
            cluster_sizes: vec![3],
            batch_sizes: vec![100],
            repetitions: 3,
            entries_unbatched: 100,
            entries_batched: 1000,
            raft_entries_divisor: 2,
        };
        let mut calls = Vec::new();
        let mut run = |request: &ChildRequest| {
            calls.push(*request);
            let mut s = sample();
            s.decided_entries = request.entries;
            Ok(s)
        };
        let fresh = run_fresh_suite(&options, &mut run).unwrap();
        assert_eq!(calls.len(), 3 * Library::ALL.len());
        assert_eq!(calls[0].library, Library::Ours);
        assert_eq!(calls[5].library, Library::OmniPaxos);
        let workload = Workload { cluster_size: 3, batch: 100 };
        for library in Library::ALL {
            assert_eq!(fresh.results.get(library, workload).unwrap().samples.len(), 3);
        }
        assert_eq!(fresh.results.get(Library::Raft, workload).unwrap().entries_per_run(), 500);
    }
}
