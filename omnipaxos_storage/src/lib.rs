//! Storage for `omnipaxos_core`: implementations of its storage port and the suite that
//! checks them.
//!
//! The core does no I/O; everything it must remember across a crash goes through the
//! [`Storage`](omnipaxos_core::storage::Storage) trait. This crate holds:
//! - [`memory_storage::MemoryStorage`]: the whole state in memory; the reference
//!   implementation, and the storage of tests and examples.
//! - [`crash_storage::CrashableStorage`]: a simulated disk with a volatile cache, whose unflushed
//!   writes a simulated crash can lose, and whose writes and flushes can be made to fail.
//! - [`persistent_storage::PersistentStorage`]: the durable storage: a segmented, checksummed
//!   write-ahead log with group commit (one `fdatasync` per flush), one writer per directory
//!   (a lock), explicit bootstrap and restart, crash recovery that drops a torn tail, refuses
//!   corruption and deleted segments, and reports a possible loss where it cannot tell, and a
//!   simulated file system ([`persistent_storage::sim_fs::SimFs`]) to crash it at every system
//!   call. `DESIGN.md` in this crate gives the byte layout, every fsync point, the durability
//!   argument and the failure table.
//! - [`conformance`]: the contract as executable checks, run against every implementation.
//!
//! How the core uses storage:
//!
//! ```text
//!   handle_incoming(msg) ──► handler ──► storage.write_atomically([op, op, ..])   (buffered)
//!   handle_incoming(msg) ──► handler ──► storage.write_atomically([..])           (buffered)
//!                                             │
//!   take_outgoing_messages() ──► storage.flush() ──► messages released to the network
//!                                (one fsync for the whole batch: group commit)
//! ```
//!
//! Key design decision: the unit of durability is a whole `write_atomically` call, and the
//! unit of *waiting* for durability is one `flush` per batch of messages. Each handler states
//! its state change as one list of ops, which storage applies all-or-nothing (validated first,
//! then applied), so a crash can never leave half a handler's change on disk. Flushing once per
//! `take_outgoing_messages` instead of once per write keeps persist-before-send structural while
//! paying one fsync per batch. A failed write or flush poisons the storage (fail-stop), because
//! after a failed fsync nobody knows what the disk holds.

pub mod conformance;
pub mod crash_storage;
pub mod id_runs;
mod log_bounds;
pub mod memory_storage;
pub mod persistent_storage;
