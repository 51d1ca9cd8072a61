//! A deterministic cluster simulator for `omnipaxos_core`: N replicas of the library, a
//! simulated network and disk, a nemesis, clients of a replicated key-value store, safety
//! invariants after every event, and a linearizability check of the client history. One seed
//! reproduces one run exactly.
//!
//! ```text
//!   seed ──► SmallRng ──┬─► Nemesis ──(cuts, link quality, crashes, disk failures, amnesia,
//!                       │              reconfigurations, trims, snapshots, replays of archived
//!                       │              messages, set_priority, priority flips, corrupt replies)
//!                       ▼
//!   Clients ─requests─► Network ─► Node { OmniPaxos replica per configuration (voter or
//!      ▲                   ▲            learner), a clock that may drift, SimStorage
//!      │                   │            (CrashableStorage, or PersistentStorage on SimFs),
//!      │                   │            KV application; gets through the log or read_index }
//!      └─────replies───────┴──────────────┘ │
//!   history ──► linearizability (WGL)       └─► invariants (Checker) after every event
//! ```
//!
//! Key decision: **the simulator drives the real `OmniPaxos` facade over the real
//! `CrashableStorage` (or the real write-ahead log `PersistentStorage` on the simulated disk
//! `SimFs`, whose crashes tear and flip unsynced bytes), and observes only through their public API.** Nothing in the core knows
//! it is simulated, so a run tests exactly what a user runs; the price is that a few properties
//! are checked from outside (e.g. "never changes" needs the disk to say which indices a write
//! rewrote, which [`storage::SimStorage`] does by wrapping the storage port).
//!
//! Two phases per seed: faults (safety), then healing and a bounded wait for new client
//! operations to complete and replicas to converge (liveness). See `docs/simulator.md`.
//!
//! A second mode, [`adversary`], drives bare `SequencePaxos` replicas instead: the scheduler
//! chooses every input, leader ballots and replays of any earlier message included, to check
//! that Sequence Paxos is safe for any message delay and any sequence of leaders.
//!
//! Both modes run the core with a fixed bug switched back on ([`mutation`], feature
//! `mutations`) to show that their checks find it.

pub mod adversary;
pub mod clients;
#[cfg(feature = "raft-comparison")]
pub mod comparison;
pub mod invariants;
pub mod kv;
pub mod linearizability;
pub mod mutation;
pub mod nemesis;
pub mod network;
pub mod node;
pub mod pause;
#[cfg(feature = "raft-comparison")]
pub mod raft_node;
pub mod reads;
pub mod runner;
pub mod scenarios;
pub mod sim;
pub mod storage;
