//! `omnipaxos_wal_tool`: verifies and dumps a `PersistentStorage` data directory, like etcd's
//! `etcd-dump-logs`. It never writes: a torn tail is reported (with what opening the storage
//! would drop), not repaired.
//!
//! ```text
//!   omnipaxos_wal_tool verify <DIR>                        exit 0: the log recovers; 1: it does not
//!   omnipaxos_wal_tool dump <DIR> [--entries hex|u64|string|none] [--frames]
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
    format::{decode_bincode, decode_checkpoint, decode_ops, FrameKind, RawValues},
    fs::StdFs,
    recovery::{recover, FrameView, Mode, Recovered, Tail},
    OpenError,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Verify { dir } => verify(dir),
        Command::Dump { dir, entries, frames } => dump(dir, *entries, *frames),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

type RawRecovered = Recovered<Vec<u8>, Vec<u8>, omnipaxos_storage::persistent_storage::fs::StdFile>;

/// Read-only recovery; `observe` sees every verified frame.
fn recover_read_only(dir: &Path, observe: &mut dyn FnMut(FrameView<'_>)) -> Result<RawRecovered, OpenError> {
    match recover::<RawValues, StdFs>(&StdFs::default(), dir, None, Mode::ReadOnly, observe)? {
        Some(recovered) => Ok(recovered),
        None => Err(OpenError::NotInitialized { path: dir.to_path_buf() }),
    }
}

fn verify(dir: &Path) -> Result<(), OpenError> {
    let mut frames = 0u64;
    let mut frame_bytes = 0u64;
    let recovered = recover_read_only(dir, &mut |view| {
        frames += 1;
        frame_bytes += view.frame.len as u64;
    })?;
    print_summary(dir, &recovered, frames, frame_bytes);
    println!("OK: every frame verified; the log recovers");
    Ok(())
}

fn dump(dir: &Path, format: EntryFormat, show_frames: bool) -> Result<(), OpenError> {
    let mut frames = 0u64;
    let mut frame_bytes = 0u64;
    let recovered = recover_read_only(dir, &mut |view| {
        frames += 1;
        frame_bytes += view.frame.len as u64;
        if show_frames {
            println!("{}", describe_frame(view, format));
        }
    })?;
    print_summary(dir, &recovered, frames, frame_bytes);
    print_state(&recovered, format);
    Ok(())
}

fn print_summary(dir: &Path, recovered: &RawRecovered, frames: u64, frame_bytes: u64) {
    println!("directory: {}", dir.display());
    println!("owner: {}", recovered.identity);
    let first = recovered.segments.first().expect("recovery found a segment");
    println!(
        "segments: {} (ids {}..={}), {} frames, {} bytes of frames, lsn {}..={}",
        recovered.segments.len(),
        first.id,
        recovered.segments.last().map_or(first.id, |last| last.id),
        frames,
        frame_bytes,
        first.first_lsn,
        recovered.last_lsn
    );
    match &recovered.tail {
        Tail::Clean => println!("tail: clean"),
        Tail::Torn { file, offset, bytes, reason } => println!(
            "tail: torn at {}:{offset} ({bytes} bytes, {reason}); never acknowledged, opening drops it",
            file.display()
        ),
    }
    for stray in &recovered.strays {
        println!("stray: {} (unused; opening removes it)", stray.display());
    }
}

fn ballot(ballot: &Option<Ballot>) -> String {
    match ballot {
        Some(ballot) => format!("{ballot} (configuration {})", ballot.config_id),
        None => "none".to_string(),
    }
}

fn print_state(recovered: &RawRecovered, format: EntryFormat) {
    let state = &recovered.state;
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
