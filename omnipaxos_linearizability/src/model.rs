//! The key-value model the checker linearizes against: operations on one key, their results,
//! and the sequential step function. Every value written is unique in a run (the simulator and
//! the fault harness number them), so any read tells exactly which write it saw; that is what
//! makes the check cheap and its counterexamples short.

use serde::{Deserialize, Serialize};

/// A key; a handful are used so that clients contend.
pub type Key = u8;
/// A value; unique per write in a run.
pub type Value = u64;
/// A client.
pub type ClientId = u32;

/// A client operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Sets `key` to `value`.
    Put { key: Key, value: Value },
    /// Reads `key`.
    Get { key: Key },
    /// Sets `key` to `new` if it holds `expected` (`None`: absent).
    Cas { key: Key, expected: Option<Value>, new: Value },
    /// Removes `key`.
    Delete { key: Key },
}

impl Op {
    /// The key the operation touches.
    pub fn key(&self) -> Key {
        match *self {
            Op::Put { key, .. } | Op::Get { key } | Op::Cas { key, .. } | Op::Delete { key } => key,
        }
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::Put { key, value } => write!(f, "put k{key}={value}"),
            Op::Get { key } => write!(f, "get k{key}"),
            Op::Cas { key, expected, new } => write!(f, "cas k{key} {}->{new}", show(*expected)),
            Op::Delete { key } => write!(f, "delete k{key}"),
        }
    }
}

/// What an operation returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    /// A put or delete took effect.
    Done,
    /// A get read this value (`None`: absent).
    Read(Option<Value>),
    /// Whether a compare-and-swap swapped.
    Swapped(bool),
}

impl std::fmt::Display for OpResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpResult::Done => write!(f, "ok"),
            OpResult::Read(v) => write!(f, "read {}", show(*v)),
            OpResult::Swapped(b) => write!(f, "swapped={b}"),
        }
    }
}

/// `-` for an absent value.
pub fn show(value: Option<Value>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// What applying one operation does to one key's value.
pub fn step(before: Option<Value>, op: &Op) -> (Option<Value>, OpResult) {
    match *op {
        Op::Put { value, .. } => (Some(value), OpResult::Done),
        Op::Get { .. } => (before, OpResult::Read(before)),
        Op::Cas { expected, new, .. } if before == expected => (Some(new), OpResult::Swapped(true)),
        Op::Cas { .. } => (before, OpResult::Swapped(false)),
        Op::Delete { .. } => (None, OpResult::Done),
    }
}
