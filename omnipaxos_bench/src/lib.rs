//! Side-by-side throughput benchmark: `omnipaxos_core` against the `omnipaxos` crate 0.2.4,
//! tikv's `raft` crate 0.7 and a null protocol, through one delivery loop.
//!
//! ```text
//!   headline (fresh_process) ──► for each repetition, cell (n, B), library:
//!       spawn this binary --only <library> ... ─► child: Cluster<N: Node>::new(n) ─► elect
//!         ─► flush × E/B (measured: wall, CPU, page faults) ─► one JSON line (+ peak RSS)
//!   steady state (suite) ──► same loop in this process, memory reused, per CPU-second
//!       flush = propose B at the leader, then rounds of { drain every node; deliver } until quiet
//!   report ──► terminal tables, docs/benchmarks.md section, PNG chart (both passes)
//! ```
//!
//! The key decisions: every library implements the same [`harness::Node`] trait and runs in the
//! same single-threaded loop, so the comparison measures the libraries' work per decided entry
//! and nothing of threads, sockets or serialization; and the headline runs each measurement in a
//! fresh process with default allocator settings, so the figures are what a user's process sees
//! (wall time, page faults of fresh log memory, peak RSS), with ours and omnipaxos run back to
//! back and compared per repetition.

pub mod alloc_counter;
pub mod chart;
pub mod fresh_process;
pub mod harness;
pub mod machine;
pub mod memory_policy;
pub mod peers;
pub mod reads;
pub mod report;
pub mod suite;
pub mod usage;
