//! placeholder
pub mod ballot_leader_election;
mod ballot;
pub mod config;
pub mod errors;
pub mod messages;
pub mod omni_paxos;
pub mod sequence_paxos;
pub mod storage;
pub mod util;

pub use config::OmniPaxosConfig;
pub use omni_paxos::OmniPaxos;
