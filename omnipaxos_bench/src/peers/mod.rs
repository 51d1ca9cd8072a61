//! One [`crate::harness::Node`] implementation per library.

pub mod null;
pub mod omnipaxos_peer;
pub mod ours;
pub mod raft_peer;
