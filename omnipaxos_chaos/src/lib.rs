//! Fault tests of a real multi-process `opkv` cluster: each server in its own Linux network
//! namespace, a seeded nemesis injecting partitions (full, partial: quorum-loss,
//! constrained-election, chained; one-way), leader isolation, SIGKILL and restart, SIGSTOP and
//! SIGCONT, clock skew (libfaketime) and full disks (tmpfs), while concurrent HTTP clients run
//! put, get (every read mode), compare-and-swap and delete. The history is checked with the
//! simulator's linearizability checker (`omnipaxos_linearizability`), acknowledged writes are
//! looked up on every node after the final heal, and the nodes must converge.
//!
//! ```text
//!   seed ─► Nemesis ──rules (nft in each namespace), signals, faketime, tmpfs filler──┐
//!                                                                                      ▼
//!   clients (root ns) ──HTTP──► bridge ──► opkv server 1..n (netns each, data on tmpfs)
//!      │
//!      └─► history.jsonl ─► checker per key generation ─► summary.md/json, timeline.png
//! ```
//!
//! Key decision: **the clients stay outside every fault** (the rules drop only packets between
//! nodes), so each side of a partition keeps its clients, as in Jepsen; a minority node must
//! then refuse or time out, and any read it answers is judged by the checker. Everything the
//! run creates is registered for teardown before it is created ([`cleanup`]), so a panic, an
//! error or Ctrl-C leaves no namespace, rule, mount or process behind.

pub mod chart;
pub mod cleanup;
pub mod cluster;
pub mod history;
pub mod nemesis;
pub mod netns;
pub mod report;
pub mod run;
pub mod workload;

use std::path::Path;

/// A node id (1..=n); node `i` has address `<subnet>.i`.
pub type NodeId = u64;

/// What can go wrong in the harness itself (not findings about the cluster).
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    /// Network namespaces cannot be used here: the harness refuses to run (never skips).
    #[error("network namespaces are not available: {0}")]
    NamespacesUnavailable(String),
    #[error("`{command}` failed: {message}")]
    Command { command: String, message: String },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("setup: {0}")]
    Setup(String),
    #[error("no node {0}")]
    UnknownNode(NodeId),
    #[error("bad history: {0}")]
    BadHistory(String),
}

impl ChaosError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> ChaosError {
        ChaosError::Io { path: path.display().to_string(), source }
    }
}
