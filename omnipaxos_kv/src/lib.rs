//! A replicated key-value service on `omnipaxos_runtime`, and its one binary, `opkv`.
//!
//! Any node accepts any request over HTTP/JSON (see [`api`] and the README for curl
//! examples). Writes become [`command::Command`]s in the replicated log: a follower forwards
//! them through the core to the leader; the node answers once its own state machine applied
//! the command, with the answer the state machine computed. Reads are linearizable by default:
//! the runtime's `read_barrier` (the core's read index: the leader confirms with a quorum that
//! it still leads, no log write) gives an index, the node waits until it applied the log up to
//! it, then reads its local map.
//!
//! ```text
//!  opkv put/get/... ─┐  HTTP/JSON   ┌──────────── opkv server (one per node) ─────────────┐
//!  curl ─────────────┼────────────► │ axum handlers ── append / read_barrier ──► runtime   │
//!  opkv bench ───────┘              │   ▲   answers, applied index        (replica thread, │
//!                                   │   │                                  WAL, peers TCP) │
//!                                   │ Store: KvState ◄── applier ◄── decided stream ◄──────┘
//!                                   └──────────────────────────────────────────────────────┘
//! ```
//!
//! **The key design decision: the state machine is a pure function of the log, sessions
//! included.** Exactly-once writes, their answers, revisions, quotas and session expiry are
//! all computed by [`state::KvState::apply`] from the log alone (limits are constants, expiry
//! counts log entries, not seconds), so every node computes the same answers, a retry finds
//! the original answer at any node, and the snapshot the core builds from the entries
//! ([`state::KvSnapshot`]) is the same everywhere. Compaction therefore lives in the runtime
//! (`NodeConfig::snapshot_interval_entries`: each node snapshots its own applied prefix) and
//! a node that fell behind the compacted prefix catches up from the leader's snapshot.
//!
//! Modules: [`command`] and [`state`] (replicated types and the state machine), [`api`] (the
//! HTTP contract and error codes), [`config`] (TOML/HOCON/flags), [`server`] (the node),
//! [`client`] (exactly-once HTTP client), [`cli`] (the `opkv` command line and its exit
//! codes), [`local`] (child-process clusters), [`cluster`] (`cluster up`), [`demo`] (`cluster
//! demo`), [`mod@bench`] (the load generator and its pluggable target).

pub mod api;
pub mod bench;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod command;
#[cfg(feature = "etcd")]
pub mod compare;
#[cfg(feature = "etcd")]
pub mod compare_charts;
pub mod config;
pub mod demo;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod http1;
pub mod local;
pub mod server;
pub mod state;
