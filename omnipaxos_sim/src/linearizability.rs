//! The linearizability checker, which lives in `omnipaxos_linearizability` so that the fault
//! harness of real processes (`omnipaxos_chaos`) checks its histories with the same code.

pub use omnipaxos_linearizability::*;
