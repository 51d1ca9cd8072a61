//! Why the demo stopped: a replica failed, or an expectation of the story did not hold.

use omnipaxos_core::{
    ballot_leader_election::Ballot,
    errors::{ProposeErr, ReplicaError},
    sequence_paxos::{CreateError, DropReason},
    util::{LogIndex, NodeId, ProposalId},
};

use crate::kv::{show_log, show_map, KeyValue, KvMap};

/// One variant per way the demo can fail; each names the replica and the tick where useful.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("replica {pid} could not be created: {source}")]
    Create { pid: NodeId, source: CreateError },
    #[error("replica {pid} stopped: {source}")]
    Replica { pid: NodeId, source: ReplicaError },
    #[error("replica {pid} refused {entry}: {reason}")]
    Propose { pid: NodeId, entry: KeyValue, reason: Box<ProposeErr<KeyValue>> },
    #[error("tick {tick}: the network did not go quiet after {messages} messages")]
    NoQuiescence { tick: u64, messages: usize },
    #[error("tick {tick}: gave up after {ticks} ticks waiting for {waiting_for}")]
    Timeout { tick: u64, ticks: u64, waiting_for: &'static str },
    #[error("proposal {id} ({entry}) was dropped: {reason:?}")]
    Dropped { id: ProposalId, entry: KeyValue, reason: DropReason },
    #[error("replica {pid}: index {idx} is compacted or a StopSign; this demo creates neither")]
    UnexpectedEntry { pid: NodeId, idx: LogIndex },
    #[error(
        "replica {pid} decided {}, but replica {reference} decided {}",
        show_log(log),
        show_log(expected)
    )]
    Diverged { pid: NodeId, log: Vec<KeyValue>, reference: NodeId, expected: Vec<KeyValue> },
    #[error("replica {pid} restarted with promise {after}, not its persisted promise {before}")]
    PromiseChanged { pid: NodeId, before: Ballot, after: Ballot },
    #[error("replica {pid} ends with map {}, expected {}", show_map(found), show_map(expected))]
    WrongFinalMap { pid: NodeId, found: KvMap, expected: KvMap },
}
