//! `omnipaxos_wal_tool`: verifies and dumps a `PersistentStorage` data directory, like etcd's
//! `etcd-dump-logs`. It never writes and takes no lock, so it works beside a live writer (it
//! says so: the result is then a snapshot of a log being written). A dropped tail is reported
//! with what opening the storage would do, not repaired: a torn frame (incomplete: never
//! acknowledged) or a possible loss (a complete frame that fails verification: acknowledged
//! data may be lost; the storage cannot tell).
//!
//! ```text
//!   omnipaxos_wal_tool verify <DIR>
//!       exit 0: the log recovers; 1: it does not; 2: it recovers, but acknowledged data may
//!       be lost (a possible loss found now, or recorded earlier and not resolved)
//!   omnipaxos_wal_tool dump <DIR> [--entries hex|u64|string|none] [--frames]   (same codes)
//! ```
//!
//! The tool does not know the entry type of the cluster that wrote the directory, so entries
//! and snapshots are shown as their stored bytes (bincode 1, fixed-width little-endian): in hex
//! by default, or decoded as `u64` or `String` when the user says that is what they are.
//! Everything else (ballots, indices, proposal ids, StopSigns) is decoded fully.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::{Parser, Subcommand, ValueEnum};
use omnipaxos_core::{
    ballot_leader_election::Ballot,
    storage::StorageOp,
    util::{LogIndex, Proposal},
};
use omnipaxos_storage::persistent_storage::{
    format::{decode_bincode, decode_checkpoint, decode_loss, decode_ops, decode_seal, FrameKind, RawValues},
    fs::{FileSystem, LockState, StdFs},
    open_read_only_with,
    recovery::{Expected, FrameView, Tail},
    OpenError, ReadOnlyLog,
};

/// Verify or dump a PersistentStorage data directory (read-only).
#[derive(Parser, Debug)]
#[command(name = "omnipaxos_wal_tool", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check every frame and report how the log ends; exit 1 if it does not recover.
    Verify {
        /// The data directory.
        dir: PathBuf,
    },
    /// Print the recovered state and the log entries.
    Dump {
        /// The data directory.
        dir: PathBuf,
        /// How to print entries and snapshots.
        #[arg(long, value_enum, default_value_t = EntryFormat::Hex)]
        entries: EntryFormat,
        /// Also print every frame with its ops, in log order.
        #[arg(long)]
        frames: bool,
    },
}

/// How entry bytes are shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum EntryFormat {
    /// The stored bytes in hex.
    Hex,
    /// A bincode `u64` (8 bytes, little-endian).
    U64,
    /// A bincode `String` (u64 length, then UTF-8).
    String,
    /// Do not print entries.
    None,
}

/// Exit code of a log that recovers but may have lost acknowledged data.
const EXIT_POSSIBLE_LOSS: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Verify { dir } => verify(dir),
        Command::Dump { dir, entries, frames } => dump(dir, *entries, *frames),
    };
    match result {
        Ok(log) if log.acknowledged_state_may_be_lost() => ExitCode::from(EXIT_POSSIBLE_LOSS),
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

type RawLog = ReadOnlyLog<Vec<u8>, Vec<u8>>;

/// Read-only recovery; `observe` sees every verified frame.
fn read_log(dir: &Path, observe: &mut dyn FnMut(FrameView<'_>)) -> Result<RawLog, OpenError> {
    let result =
        open_read_only_with::<RawValues, StdFs>(&StdFs::default(), dir, Expected::default(), observe);
    if result.is_err() {
        // Say whether a writer was changing the directory while it was read.
        if let Ok(LockState::Held { holder_pid }) = StdFs::default().probe_lock(dir) {
            eprintln!(
                "note: a live writer ({}) holds the directory: run again, or stop it first",
                pid(holder_pid)
            );
        }
    }
    result
}

fn pid(holder_pid: Option<u32>) -> String {
    holder_pid.map_or_else(|| "pid unknown".to_string(), |pid| format!("pid {pid}"))
}

fn verify(dir: &Path) -> Result<RawLog, OpenError> {
    let mut frames = 0u64;
    let mut frame_bytes = 0u64;
    let log = read_log(dir, &mut |view| {
        frames += 1;
        frame_bytes += view.frame.len as u64;
    })?;
    print_summary(dir, &log, frames, frame_bytes);
    if log.acknowledged_state_may_be_lost() {
        println!("POSSIBLE LOSS: the log recovers, but acknowledged data may be lost (see above)");
    } else {
        println!("OK: every frame verified; the log recovers");
    }
    Ok(log)
}

fn dump(dir: &Path, format: EntryFormat, show_frames: bool) -> Result<RawLog, OpenError> {
    let mut frames = 0u64;
    let mut frame_bytes = 0u64;
    let log = read_log(dir, &mut |view| {
        frames += 1;
        frame_bytes += view.frame.len as u64;
        if show_frames {
            println!("{}", describe_frame(view, format));
        }
    })?;
    print_summary(dir, &log, frames, frame_bytes);
    print_state(&log, format);
    Ok(log)
}

fn print_summary(dir: &Path, log: &RawLog, frames: u64, frame_bytes: u64) {
    println!("directory: {}", dir.display());
    let live = match log.writer {
        LockState::Free => {
            println!("writer: none (the directory is not locked)");
            false
        }
        LockState::Held { holder_pid } => {
            println!(
                "writer: live ({}): this is a snapshot of a log being written; a torn tail may be \
                 a write in flight",
                pid(holder_pid)
            );
            true
        }
    };
    println!("owner: {}", log.identity);
    println!("value types: {}", log.type_tag);
    let first = log.segments.first().expect("recovery found a segment");
    println!(
        "segments: {} (ids {}..={}), {} frames, {} bytes of frames, lsn {}..={}",
        log.segments.len(),
        first.id,
        log.segments.last().map_or(first.id, |last| last.id),
        frames,
        frame_bytes,
        first.first_lsn,
        log.last_lsn
    );
    println!(
        "last session: {}",
        match log.last_session_closed {
            true => "closed cleanly",
            false => "ended without a close (crash, kill, or still running)",
        }
    );
    print_tail(&log.tail, live);
    if let Some(loss) = log.state.possible_loss() {
        println!(
            "recorded possible loss: from lsn {} ({:?}), unresolved: acknowledged data may be lost",
            loss.lsn, loss.cause
        );
    }
    for stray in &log.strays {
        println!("stray: {} (unused; opening removes it)", stray.display());
    }
}

fn print_tail(tail: &Tail, live_writer: bool) {
    match tail {
        Tail::Clean => println!("tail: clean"),
        Tail::Torn { file, offset, bytes, reason } => println!(
            "tail: torn at {}:{offset} ({bytes} bytes, {reason}); the frame is incomplete, so its \
             write never returned: never acknowledged{}; opening drops it",
            file.display(),
            if live_writer { " (or a write in flight)" } else { "" }
        ),
        Tail::PossibleLoss { file, offset, bytes, lsn, reason } => println!(
            "tail: POSSIBLY ACKNOWLEDGED DATA LOST at {}:{offset} (lsn {lsn}, {bytes} bytes, {reason}): \
             the frame is complete but fails verification, and nothing after it shows whether it \
             was synced: a crash during its write, or damage to acknowledged data{}; opening \
             drops it and records the possible loss",
            file.display(),
            if live_writer { ", or a write in flight" } else { "" }
        ),
    }
}

fn ballot(ballot: &Option<Ballot>) -> String {
    match ballot {
        Some(ballot) => format!("{ballot} (configuration {})", ballot.config_id),
        None => "none".to_string(),
    }
}

fn print_state(log: &RawLog, format: EntryFormat) {
    let state = &log.state;
    let (compacted_idx, log_end) = (state.compacted_idx(), state.log_end());
    println!("compacted_idx: {compacted_idx}");
    println!("log_end: {log_end}");
    println!("decided_idx: {}", state.decided_idx());
    println!("promise: {}", ballot(&state.promise()));
    println!("accepted_round: {}", ballot(&state.accepted_round()));
    println!("incarnation: {}", state.incarnation());
    println!("stopsign: {:?}", state.stopsign());
    match state.snapshot() {
        Some(bytes) => println!("snapshot: {} bytes: {}", bytes.len(), value(bytes, EntryFormat::Hex)),
        None => println!("snapshot: none"),
    }
    if format == EntryFormat::None {
        return;
    }
    let entries = state.get_entries(compacted_idx, log_end).expect("a recovered state reads its whole log");
    for (idx, proposal) in (compacted_idx..).zip(&entries) {
        println!("{}", entry_line(idx, proposal, format));
    }
}

fn entry_line(idx: LogIndex, proposal: &Proposal<Vec<u8>>, format: EntryFormat) -> String {
    format!("entry {idx} id={} {}", proposal.id, value(&proposal.entry, format))
}

/// Entry or snapshot bytes in the chosen format; undecodable bytes fall back to hex.
fn value(bytes: &[u8], format: EntryFormat) -> String {
    let hex = || {
        bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut text, byte| {
            let _ = write!(text, "{byte:02x}");
            text
        })
    };
    match format {
        EntryFormat::U64 => match decode_bincode::<u64>(bytes) {
            Some(number) => number.to_string(),
            None => format!("{} (not a u64)", hex()),
        },
        EntryFormat::String => match decode_bincode::<String>(bytes) {
            Some(text) => format!("{text:?}"),
            None => format!("{} (not a String)", hex()),
        },
        EntryFormat::Hex | EntryFormat::None => hex(),
    }
}

fn describe_frame(view: FrameView<'_>, format: EntryFormat) -> String {
    let frame = view.frame;
    let name = view.file.file_name().map_or_else(String::new, |name| name.to_string_lossy().into_owned());
    let mut line = format!(
        "frame lsn={} {name}@{} len={} synced_lsn={}",
        frame.lsn, view.offset, frame.len, frame.synced_lsn
    );
    match frame.kind {
        FrameKind::Checkpoint => match decode_checkpoint::<RawValues>(frame.payload) {
            Ok(checkpoint) => {
                let _ = write!(
                    line,
                    " checkpoint compacted_idx={} log_end={} decided_idx={} promise={} incarnation={}",
                    checkpoint.compacted_idx,
                    checkpoint.log_end,
                    checkpoint.decided_idx,
                    ballot(&checkpoint.promise),
                    checkpoint.incarnation
                );
            }
            Err(reason) => line.push_str(&format!(" checkpoint (does not decode: {reason})")),
        },
        FrameKind::Write => match decode_ops::<RawValues>(frame.payload) {
            Ok(ops) => {
                line.push_str(" write");
                for op in &ops {
                    line.push_str("\n  ");
                    line.push_str(&describe_op(op, format));
                }
            }
            Err(reason) => line.push_str(&format!(" write (does not decode: {reason})")),
        },
        FrameKind::Seal => match decode_seal(frame.payload) {
            Ok(next) => {
                let _ = write!(line, " seal: the next segment is {next}");
            }
            Err(reason) => line.push_str(&format!(" seal (does not decode: {reason})")),
        },
        FrameKind::Close => line.push_str(" close: the session ended cleanly"),
        FrameKind::Loss => match decode_loss(frame.payload) {
            Ok(cause) => {
                let _ = write!(
                    line,
                    " loss: acknowledged data from lsn {} on may be lost ({cause:?})",
                    frame.lsn
                );
            }
            Err(reason) => line.push_str(&format!(" loss (does not decode: {reason})")),
        },
        FrameKind::LossResolved => line.push_str(" loss resolved"),
    }
    line
}

fn describe_entries(entries: &[Proposal<Vec<u8>>], format: EntryFormat) -> String {
    let shown: Vec<String> =
        entries.iter().take(8).map(|p| format!("{}={}", p.id, value(&p.entry, format))).collect();
    let more = if entries.len() > 8 { format!(", ... {} more", entries.len() - 8) } else { String::new() };
    format!("{} entries [{}{more}]", entries.len(), shown.join(", "))
}

fn describe_op(op: &StorageOp<Vec<u8>, Vec<u8>>, format: EntryFormat) -> String {
    match op {
        StorageOp::AppendEntries(entries) => format!("AppendEntries {}", describe_entries(entries, format)),
        StorageOp::AppendOnPrefix(from_idx, entries) => {
            format!("AppendOnPrefix from {from_idx}: {}", describe_entries(entries, format))
        }
        StorageOp::SetPromise(b) => format!("SetPromise {}", ballot(&Some(*b))),
        StorageOp::SetAcceptedRound(b) => format!("SetAcceptedRound {}", ballot(&Some(*b))),
        StorageOp::SetDecidedIdx(idx) => format!("SetDecidedIdx {idx}"),
        StorageOp::SetStopSign(stopsign) => format!("SetStopSign {stopsign:?}"),
        StorageOp::Trim(idx) => format!("Trim {idx}"),
        StorageOp::SetSnapshot(Some(bytes)) => format!("SetSnapshot {} bytes", bytes.len()),
        StorageOp::SetSnapshot(None) => "SetSnapshot none".to_string(),
        StorageOp::SetIncarnation(incarnation) => format!("SetIncarnation {incarnation}"),
        StorageOp::SetIdentity(identity) => format!("SetIdentity {identity}"),
    }
}
