//! Durable-append benchmark of `PersistentStorage`, side by side with raw `pwrite` +
//! `fdatasync` loops on the same disk, and the recovery scan speed.
//!
//! ```text
//! cargo bench -p omnipaxos_storage --bench durable_append            # full run, ~2 min
//! BENCH_SECONDS=5 BENCH_DIR=/path/on/disk cargo bench -p omnipaxos_storage --bench durable_append
//! BENCH_PARTS=append (or recovery, or open) cargo bench -p omnipaxos_storage --bench durable_append
//! cargo test -p omnipaxos_storage --benches                          # smoke run (CI), ~1 s
//! ```
//!
//! One batch = one `write_atomically([AppendEntries(batch), SetAcceptedRound, SetDecidedIdx])`
//! and one `flush`; latency is from the write call to the flush's return (append-to-durable).
//! The raw loops write the same number of bytes per `fdatasync` as the WAL writes per batch
//! (frame header, ids and encoding included): into a preallocated, zero-filled file of one
//! segment (64 MiB) that they wrap around in (the floor), and appending to a growing file.
//! The three run interleaved, one batch each per round in a rotating order, so they see the
//! same disk conditions (this disk's latency jumps between ~0.1 ms and ~4 ms phases); a rate
//! is batches divided by the time spent in that loop's own batches. Syncs (fdatasync + directory fsync) are counted
//! through the storage's file system. Prints markdown tables for `docs/benchmarks.md`.
//!
//! `open` times a restart of an empty log (one preallocated 64 MiB segment) and reports the
//! bytes it read and the growth of the process's peak resident memory during the open
//! (`VmHWM`, reset through `/proc/self/clear_refs`).

use std::{
    fs::{File, OpenOptions},
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use omnipaxos_core::{
    ballot_leader_election::Ballot,
    storage::{Storage, StorageOp},
    util::{Proposal, ProposalId},
};
use serde::{de::Visitor, Deserialize, Deserializer, Serialize, Serializer};

use omnipaxos_storage::persistent_storage::{
    format::{segment_frames, FrameKind},
    fs::{FileSystem, StdFs},
    OpenMode, PersistentStorage, PersistentStorageConfig,
};

type Wal = PersistentStorage<Entry, ()>;

/// A field of `/proc/self/status` in bytes (`VmRSS`, `VmHWM`).
fn proc_status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let line = status.lines().find(|line| line.starts_with(field)).expect("the field is there");
    let kib: u64 = line.split_whitespace().nth(1).and_then(|number| number.parse().ok()).expect("a number");
    kib * 1024
}

/// The benchmark's entry: a byte blob serialized as bytes (`serialize_bytes`: a length and one
/// copy), as a byte payload is stored in practice (`serde_bytes`, `bytes::Bytes`). A plain
/// `Vec<u8>` is serialized by serde one element at a time, which costs more CPU than the WAL.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry(Vec<u8>);

impl Serialize for Entry {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Entry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BytesVisitor;
        impl Visitor<'_> for BytesVisitor {
            type Value = Entry;
            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Entry, E> {
                Ok(Entry(bytes.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, bytes: Vec<u8>) -> Result<Entry, E> {
                Ok(Entry(bytes))
            }
        }
        deserializer.deserialize_byte_buf(BytesVisitor)
    }
}

struct Settings {
    seconds_per_run: f64,
    /// WAL segment size, and the size of the raw loop's preallocated file.
    segment_bytes: u64,
    batches_max: usize,
    recovery_bytes: u64,
    smoke: bool,
}

#[derive(Clone, Debug, Default)]
struct Measured {
    batches: usize,
    entries: usize,
    bytes_per_batch: u64,
    elapsed: Duration,
    latencies_us: Vec<f64>,
    data_syncs: u64,
    dir_syncs: u64,
    batches_over_one_sync: usize,
}

impl Measured {
    fn percentile(&self, fraction: f64) -> f64 {
        let mut sorted = self.latencies_us.clone();
        sorted.sort_by(f64::total_cmp);
        let position = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
        sorted[position]
    }

    fn batches_per_second(&self) -> f64 {
        self.batches as f64 / self.elapsed.as_secs_f64()
    }
}

fn batch(start: u64, count: usize, entry_bytes: usize) -> Vec<Proposal<Entry>> {
    (0..count as u64)
        .map(|offset| Proposal {
            id: ProposalId { node: 1, seq: start + offset, incarnation: 1 },
            entry: Entry(vec![(start + offset) as u8; entry_bytes]),
        })
        .collect()
}

fn wal_config(dir: &Path, settings: &Settings, mode: OpenMode) -> PersistentStorageConfig {
    PersistentStorageConfig::new(dir, 1, 1).mode(mode).segment_size_bytes(settings.segment_bytes)
}

/// A raw `pwrite` + `fdatasync` loop's file: preallocated (zero-filled, wrapping around) or
/// appending to a growing file.
struct RawFile {
    file: File,
    path: PathBuf,
    offset: u64,
    wrap_at: Option<u64>,
}

impl RawFile {
    fn create(path: &Path, preallocate_bytes: Option<u64>) -> RawFile {
        let _ = std::fs::remove_file(path);
        let file =
            OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path).expect("open");
        if let Some(bytes) = preallocate_bytes {
            let zeros = vec![0u8; 1 << 20];
            for chunk in 0..bytes / (1 << 20) {
                file.write_all_at(&zeros, chunk << 20).expect("zero-fill");
            }
            file.sync_all().expect("sync the preallocated file");
        }
        RawFile { file, path: path.to_path_buf(), offset: 0, wrap_at: preallocate_bytes }
    }

    /// One `pwrite` of `buffer` and one `fdatasync`; returns the latency.
    fn write_and_sync(&mut self, buffer: &[u8]) -> f64 {
        if self.wrap_at.is_some_and(|size| self.offset + buffer.len() as u64 > size) {
            self.offset = 0;
        }
        let began = Instant::now();
        self.file.write_all_at(buffer, self.offset).expect("pwrite");
        self.file.sync_data().expect("fdatasync");
        self.offset += buffer.len() as u64;
        began.elapsed().as_secs_f64() * 1e6
    }
}

impl Drop for RawFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One cell: WAL batches interleaved with raw writes of the same size (preallocated and
/// appending), one of each in turn, so that all three see the same disk conditions.
fn run_cell(base: &Path, entries_per_batch: usize, entry_bytes: usize, settings: &Settings) -> [Measured; 3] {
    let dir = base.join("wal");
    let _ = std::fs::remove_dir_all(&dir);
    let mut wal =
        Wal::open(&wal_config(&dir, settings, OpenMode::Bootstrap)).expect("open the benchmark WAL");
    let bytes_per_batch = probe_frame_bytes(entries_per_batch, entry_bytes);
    let buffer = vec![0x5au8; bytes_per_batch as usize];
    let mut raw = RawFile::create(&base.join("raw.dat"), Some(settings.segment_bytes));
    let mut raw_append = RawFile::create(&base.join("raw-append.dat"), None);
    let ballot = Ballot::with(1, 1, 0, 1);
    let mut measured: [Measured; 3] = Default::default();
    let start_counts = wal.sync_counts();
    let started = Instant::now();
    let mut log_end = 0u64;
    while started.elapsed().as_secs_f64() < 3.0 * settings.seconds_per_run
        && measured[0].batches < settings.batches_max
    {
        // Rotate the order each round: a loop that always ran right after the growing file's
        // fdatasync (which commits ext4 metadata) would be measured against a busier journal.
        for turn in 0..3 {
            match (turn + measured[0].batches) % 3 {
                0 => {
                    let entries = batch(log_end, entries_per_batch, entry_bytes);
                    let before = wal.sync_counts();
                    let began = Instant::now();
                    let mut ops = vec![
                        StorageOp::AppendEntries(entries),
                        StorageOp::SetAcceptedRound(ballot),
                        StorageOp::SetDecidedIdx(log_end),
                    ];
                    wal.write_atomically(&mut ops).expect("write");
                    wal.flush().expect("flush");
                    measured[0].latencies_us.push(began.elapsed().as_secs_f64() * 1e6);
                    let after = wal.sync_counts();
                    if after.data_syncs + after.dir_syncs - before.data_syncs - before.dir_syncs > 1 {
                        measured[0].batches_over_one_sync += 1;
                    }
                    log_end += entries_per_batch as u64;
                }
                1 => measured[1].latencies_us.push(raw.write_and_sync(&buffer)),
                _ => measured[2].latencies_us.push(raw_append.write_and_sync(&buffer)),
            }
        }
        for (index, one) in measured.iter_mut().enumerate() {
            one.batches += 1;
            one.entries += entries_per_batch;
            one.bytes_per_batch = bytes_per_batch;
            one.data_syncs += u64::from(index > 0);
        }
    }
    let end_counts = wal.sync_counts();
    measured[0].data_syncs = end_counts.data_syncs - start_counts.data_syncs;
    measured[0].dir_syncs = end_counts.dir_syncs - start_counts.dir_syncs;
    assert_eq!(frame_bytes(&dir), bytes_per_batch * measured[0].batches as u64, "every batch is one frame");
    for one in &mut measured {
        one.elapsed = Duration::from_secs_f64(one.latencies_us.iter().sum::<f64>() / 1e6);
    }
    drop(wal);
    let _ = std::fs::remove_dir_all(&dir);
    measured
}

/// The bytes of the Write frame of one batch (all batches of a cell encode to the same size).
fn probe_frame_bytes(entries_per_batch: usize, entry_bytes: usize) -> u64 {
    let root = std::env::temp_dir().join(format!("durable_append_probe_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let config = PersistentStorageConfig::new(&root, 1, 1)
        .mode(OpenMode::Bootstrap)
        .segment_size_bytes(64 << 20)
        .preallocate_segments(false);
    let mut wal = Wal::open(&config).expect("open the probe WAL");
    let mut ops = vec![
        StorageOp::AppendEntries(batch(0, entries_per_batch, entry_bytes)),
        StorageOp::SetAcceptedRound(Ballot::with(1, 1, 0, 1)),
        StorageOp::SetDecidedIdx(0),
    ];
    wal.write_atomically(&mut ops).expect("write");
    wal.flush().expect("flush");
    drop(wal);
    let bytes = frame_bytes(&root);
    let _ = std::fs::remove_dir_all(&root);
    bytes
}

/// Bytes of write frames in a WAL directory (checkpoints and seals excluded).
fn frame_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for path in segment_paths(dir) {
        let bytes = std::fs::read(&path).expect("read segment");
        let frames = segment_frames(&bytes);
        total += frames
            .iter()
            .filter(|(_, frame)| frame.kind == FrameKind::Write)
            .map(|(_, frame)| frame.len as u64)
            .sum::<u64>();
    }
    total
}

fn segment_paths(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "log"))
        .collect();
    paths.sort();
    paths
}

fn print_append_table(rows: &[(usize, usize, Measured, Measured, Measured)]) {
    println!("| batch | entry | bytes/batch | WAL p50 µs | WAL p99 µs | WAL entries/s | raw p50 µs | raw p99 µs | raw batches/s | p50 WAL/raw | rate WAL/raw | append-raw p50 µs | append-raw batches/s | syncs/batch |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (entries_per_batch, entry_bytes, wal, raw, raw_append) in rows {
        let syncs = (wal.data_syncs + wal.dir_syncs) as f64 / wal.batches as f64;
        println!(
            "| {entries_per_batch} | {entry_bytes} B | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2}× | {:.0} % | {:.0} | {:.0} | {:.3} ({} of {} >1: rolls) |",
            wal.bytes_per_batch,
            wal.percentile(0.5),
            wal.percentile(0.99),
            wal.entries as f64 / wal.elapsed.as_secs_f64(),
            raw.percentile(0.5),
            raw.percentile(0.99),
            raw.batches_per_second(),
            wal.percentile(0.5) / raw.percentile(0.5),
            100.0 * wal.batches_per_second() / raw.batches_per_second(),
            raw_append.percentile(0.5),
            raw_append.batches_per_second(),
            syncs,
            wal.batches_over_one_sync,
            wal.batches,
        );
    }
}

/// Writes about `settings.recovery_bytes` of log, then times a raw verification scan, a
/// read-only recovery into raw bytes, and a full open (decode into typed entries).
fn recovery_scan(dir: &Path, settings: &Settings) {
    let _ = std::fs::remove_dir_all(dir);
    let mut wal = Wal::open(&wal_config(dir, settings, OpenMode::Bootstrap)).expect("open");
    let mut log_end = 0u64;
    let entries_per_batch = 1024;
    while log_end * 300 < settings.recovery_bytes {
        let entries = batch(log_end, entries_per_batch, 256);
        wal.write_atomically(&mut vec![StorageOp::AppendEntries(entries)]).expect("write");
        if log_end.is_multiple_of(entries_per_batch as u64 * 64) {
            wal.flush().expect("flush");
        }
        log_end += entries_per_batch as u64;
    }
    wal.flush().expect("flush");
    drop(wal);
    let bytes: u64 = frame_bytes(dir);
    let file_bytes: u64 =
        segment_paths(dir).iter().map(|path| std::fs::metadata(path).expect("stat").len()).sum();
    // Warm the page cache so every variant reads from memory.
    for path in segment_paths(dir) {
        std::hint::black_box(std::fs::read(&path).expect("read"));
    }
    let started = Instant::now();
    let mut scanned = 0u64;
    for path in segment_paths(dir) {
        let content = std::fs::read(&path).expect("read");
        scanned += segment_frames(&content).iter().map(|(_, frame)| frame.len as u64).sum::<u64>();
    }
    let scan = started.elapsed();
    let started = Instant::now();
    let opened = Wal::open(&wal_config(dir, settings, OpenMode::Restart)).expect("reopen");
    let open = started.elapsed();
    assert_eq!(opened.get_log_end().expect("read"), log_end);
    drop(opened);
    let gb = |duration: Duration| scanned as f64 / duration.as_secs_f64() / 1e9;
    println!("| what | log bytes | segment file bytes | time | speed |");
    println!("|---|---|---|---|---|");
    println!(
        "| verify scan: read whole files + check every frame's two CRC32C | {bytes} | {file_bytes} | {:.1} ms | {:.2} GB/s |",
        scan.as_secs_f64() * 1e3,
        gb(scan)
    );
    println!(
        "| full open: verify + decode {log_end} entries (bincode) + replay into memory + sync | {bytes} | {file_bytes} | {:.1} ms | {:.2} GB/s |",
        open.as_secs_f64() * 1e3,
        gb(open)
    );
    let _ = std::fs::remove_dir_all(dir);
}

fn main() {
    let smoke = !std::env::args().any(|argument| argument == "--bench");
    let seconds_per_run: f64 =
        std::env::var("BENCH_SECONDS").ok().and_then(|text| text.parse().ok()).unwrap_or(2.0);
    let settings = if smoke {
        Settings {
            seconds_per_run: 1.0,
            segment_bytes: 1 << 20,
            batches_max: 5,
            recovery_bytes: 1 << 20,
            smoke,
        }
    } else {
        let segment_bytes = 64 << 20;
        Settings { seconds_per_run, segment_bytes, batches_max: usize::MAX, recovery_bytes: 512 << 20, smoke }
    };
    let base = std::env::var_os("BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")))
        .join("durable_append");
    std::fs::create_dir_all(&base).expect("benchmark directory");
    println!("benchmark directory: {} (smoke: {})", base.display(), settings.smoke);
    let parts = std::env::var("BENCH_PARTS").unwrap_or_else(|_| "append,recovery,open".to_string());
    if parts.contains("append") {
        append_tables(&base, &settings);
    }
    if parts.contains("recovery") {
        recovery_scan(&base.join("recovery"), &settings);
    }
    if parts.contains("open") {
        open_empty_log(&base.join("empty"), &settings);
    }
}

/// Restarts an empty log (one preallocated segment of `settings.segment_bytes`) several times;
/// prints the median open time, the bytes read and the growth of peak resident memory.
fn open_empty_log(dir: &Path, settings: &Settings) {
    let _ = std::fs::remove_dir_all(dir);
    let wal = Wal::open(&wal_config(dir, settings, OpenMode::Bootstrap)).expect("bootstrap");
    drop(wal);
    let mut times_ms = Vec::new();
    let mut bytes_read = 0;
    let mut peak_growth = Vec::new();
    for _ in 0..if settings.smoke { 2 } else { 20 } {
        let fs = StdFs::default();
        // "5" resets the peak resident set size (VmHWM) to the current one.
        let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
        let resident_before = proc_status_bytes("VmRSS:");
        let started = Instant::now();
        let wal =
            Wal::open_with_fs(&wal_config(dir, settings, OpenMode::Restart), fs.clone()).expect("restart");
        let elapsed = started.elapsed();
        if reset {
            peak_growth.push(proc_status_bytes("VmHWM:").saturating_sub(resident_before));
        }
        times_ms.push(elapsed.as_secs_f64() * 1e3);
        bytes_read = fs.bytes_read();
        assert_eq!(wal.get_log_end().expect("read"), 0);
        // Dropping waits for the next segment's background preallocation (not part of the open).
        drop(wal);
    }
    times_ms.sort_by(f64::total_cmp);
    peak_growth.sort_unstable();
    let growth = peak_growth.get(peak_growth.len() / 2).map_or("n/a".to_string(), |bytes| bytes.to_string());
    println!(
        "| what | segment bytes | median time | bytes read | median growth of peak RSS during the open |"
    );
    println!("|---|---|---|---|---|");
    println!(
        "| restart of an empty log ({} opens) | {} | {:.2} ms | {} | {} |",
        times_ms.len(),
        settings.segment_bytes,
        times_ms[times_ms.len() / 2],
        bytes_read,
        growth
    );
    let _ = std::fs::remove_dir_all(dir);
}

fn append_tables(base: &Path, settings: &Settings) {
    let mut rows = Vec::new();
    for entry_bytes in [8, 256] {
        for entries_per_batch in [1, 64, 1024] {
            let [wal, raw, raw_append] = run_cell(base, entries_per_batch, entry_bytes, settings);
            rows.push((entries_per_batch, entry_bytes, wal, raw, raw_append));
        }
    }
    print_append_table(&rows);
    println!();
}
