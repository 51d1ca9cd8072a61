//! Side-by-side throughput benchmark: `omnipaxos_core` against the `omnipaxos` crate 0.2.4,
//! tikv's `raft` crate 0.7 and a null protocol, in one process, through one delivery loop.
//!
//! ```text
//!   suite ──► for each repetition, workload (n, B), library:
//!               Cluster<N: Node>::new(n) ─► elect node 0 ─► warm up
//!               measure: flush × k  ──  flush = propose B at the leader,
//!                                        then rounds of { drain every node; deliver } until quiet
//!             ──► Sample { decided entries, time, delivered messages, allocations }
//!   report ──► terminal table, docs/benchmarks.md section, PNG chart
//! ```
//!
//! The key decision: every library implements the same [`harness::Node`] trait and runs in the
//! same single-threaded loop, interleaved with the others in every repetition. So the
//! comparison measures the libraries' CPU work per decided entry on the same core at the same
//! time, and nothing of threads, sockets or serialization.

pub mod alloc_counter;
pub mod chart;
pub mod harness;
pub mod machine;
pub mod memory_policy;
pub mod peers;
pub mod reads;
pub mod report;
pub mod suite;
pub mod thread_usage;
