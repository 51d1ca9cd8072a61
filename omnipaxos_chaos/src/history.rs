//! The clients' history: one [`Record`] per operation with its invoke and completion times
//! (nanoseconds since the run began, unique across the run) and its outcome, saved as JSON
//! lines; and its conversion into the shared checker's [`HistoryOp`]s.

use std::{
    io::{BufRead, Write},
    path::Path,
    sync::atomic::{AtomicU64, Ordering},
    time::Instant,
};

use omnipaxos_linearizability::{HistoryOp, Op, OpResult, Outcome};
use serde::{Deserialize, Serialize};

use crate::{ChaosError, NodeId};

/// Run-wide time in nanoseconds since the start; every call returns a distinct, larger value
/// (the checker needs no two events at the same time).
pub struct Clock {
    start: Instant,
    last: AtomicU64,
}

impl Clock {
    /// A clock starting now.
    pub fn new() -> Clock {
        Clock { start: Instant::now(), last: AtomicU64::new(0) }
    }

    /// Nanoseconds since the start, strictly increasing across calls.
    pub fn now_ns(&self) -> u64 {
        let elapsed = self.start.elapsed().as_nanos() as u64;
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let next = elapsed.max(last + 1);
            match self.last.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// How a read asked to be served (the service's `consistency`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadMode {
    Linearizable,
    Lease,
    Stale,
}

/// What the operation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// An operation on a contended key of key generation `generation` (server key
    /// `c/g<generation>/k<key>`), checked for linearizability.
    Kv { generation: u32, op: Op, mode: Option<ReadMode> },
    /// A put of a key written once (`u/<value>`), checked at the end: acknowledged means
    /// present on every node.
    UniquePut { value: u64 },
}

/// How an operation ended, as the client saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Completed with a result.
    Ok,
    /// Definitely not executed (an error the service reports as definite, or nothing sent).
    Fail,
    /// May or may not have been executed (timeout, `unknown_outcome`, lost connection).
    Unknown,
}

/// One operation of the history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub client: u32,
    pub node: NodeId,
    pub action: Action,
    pub invoke_ns: u64,
    pub complete_ns: u64,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<OpResult>,
    /// The service's error code, or what went wrong on the wire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Record {
    /// True for an operation that changes state (everything but a get).
    pub fn is_write(&self) -> bool {
        !matches!(self.action, Action::Kv { op: Op::Get { .. }, .. })
    }

    /// The read mode of a get.
    pub fn read_mode(&self) -> Option<ReadMode> {
        match self.action {
            Action::Kv { mode, .. } => mode,
            Action::UniquePut { .. } => None,
        }
    }

    /// Latency in milliseconds.
    pub fn latency_ms(&self) -> f64 {
        (self.complete_ns.saturating_sub(self.invoke_ns)) as f64 / 1e6
    }

    /// The checker's view of this operation, if it is one the checker sees.
    pub fn to_history_op(&self) -> Option<HistoryOp> {
        let Action::Kv { op, .. } = self.action else { return None };
        let outcome = match (self.status, self.result) {
            (Status::Ok, Some(result)) => Outcome::Ok { result, at: self.complete_ns },
            (Status::Ok, None) | (Status::Unknown, _) => Outcome::Indeterminate,
            (Status::Fail, _) => Outcome::Failed,
        };
        Some(HistoryOp { client: self.client, op, call: self.invoke_ns, outcome })
    }
}

/// Writes records as JSON lines.
pub fn save(path: &Path, records: &[Record]) -> Result<(), ChaosError> {
    let file = std::fs::File::create(path).map_err(|e| ChaosError::io(path, e))?;
    let mut out = std::io::BufWriter::new(file);
    for record in records {
        let line = serde_json::to_string(record).map_err(|e| ChaosError::Setup(e.to_string()))?;
        writeln!(out, "{line}").map_err(|e| ChaosError::io(path, e))?;
    }
    out.flush().map_err(|e| ChaosError::io(path, e))
}

/// Reads a history saved by [`save`]; a malformed line is an error naming it.
pub fn load(path: &Path) -> Result<Vec<Record>, ChaosError> {
    let file = std::fs::File::open(path).map_err(|e| ChaosError::io(path, e))?;
    let mut records = Vec::new();
    for (number, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| ChaosError::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        let record: Record = serde_json::from_str(&line)
            .map_err(|e| ChaosError::BadHistory(format!("{}:{}: {e}", path.display(), number + 1)))?;
        if record.complete_ns <= record.invoke_ns {
            return Err(ChaosError::BadHistory(format!(
                "{}:{}: completes at {} ns, not after its invoke at {} ns",
                path.display(),
                number + 1,
                record.complete_ns,
                record.invoke_ns
            )));
        }
        records.push(record);
    }
    Ok(records)
}
