//! Every message the core sends. Each has a one-line `Display` for traces and logs, e.g.
//! `1->2 Prepare n=3.0.1 dec=4 acc=2.0.1/5`.
//!
//! Rare, large payloads (log synchronisations, StopSigns) are boxed so that the frequent
//! messages (AcceptDecide, Accepted, Decide) stay small when they are moved around.

use std::fmt;

use serde::{Deserialize, Serialize};

pub use crate::ballot_leader_election::{BLEMessage, HeartbeatMsg, HeartbeatReply, HeartbeatRequest};
use crate::{
    ballot::Ballot,
    storage::{SnapshotType, StopSign},
    util::{ConfigurationId, LogIndex, NodeId, Proposal},
};

/// A message of the combined [`crate::OmniPaxos`] facade.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Message<T, S> {
    /// A Sequence Paxos message.
    SequencePaxos(PaxosMessage<T, S>),
    /// A Ballot Leader Election message.
    BLE(BLEMessage),
}

impl<T, S> Message<T, S> {
    /// The sender.
    pub fn get_sender(&self) -> NodeId {
        match self {
            Message::SequencePaxos(m) => m.from,
            Message::BLE(m) => m.from,
        }
    }

    /// The message's kind, e.g. `"AcceptDecide"` or `"HeartbeatRequest"` (for metrics).
    pub fn kind(&self) -> &'static str {
        match self {
            Message::SequencePaxos(m) => m.msg.kind(),
            Message::BLE(m) => match m.msg {
                HeartbeatMsg::Request(_) => "HeartbeatRequest",
                HeartbeatMsg::Reply(_) => "HeartbeatReply",
            },
        }
    }

    /// The receiver.
    pub fn get_receiver(&self) -> NodeId {
        match self {
            Message::SequencePaxos(m) => m.to,
            Message::BLE(m) => m.to,
        }
    }
}

impl<T, S> fmt::Display for Message<T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Message::SequencePaxos(m) => m.fmt(f),
            Message::BLE(m) => m.fmt(f),
        }
    }
}

/// A Sequence Paxos message with its envelope.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PaxosMessage<T, S> {
    /// The sender.
    pub from: NodeId,
    /// The receiver.
    pub to: NodeId,
    /// The sender's configuration; a receiver drops messages of other configurations.
    pub config_id: ConfigurationId,
    /// The payload.
    pub msg: PaxosMsg<T, S>,
}

impl<T, S> fmt::Display for PaxosMessage<T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}->{} {}", self.from, self.to, self.msg)
    }
}

/// The Sequence Paxos payloads.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum PaxosMsg<T, S> {
    /// A follower asks the leader to (re)send Prepare: it lost messages or restarted.
    PrepareReq(PrepareReq),
    /// Phase 1a of a new leader.
    Prepare(Prepare),
    /// Phase 1b: the follower's promise, with the part of its log the leader may lack.
    Promise(Promise<T, S>),
    /// The leader's synchronisation of a promised follower's log.
    AcceptSync(AcceptSync<T, S>),
    /// Phase 2a: new entries, and the leader's decided index.
    AcceptDecide(AcceptDecide<T>),
    /// Phase 2b: the follower's log is durable up to `accepted_idx` in ballot `n`.
    Accepted(Accepted),
    /// The receiver's ballot is stale: the follower promised `n`.
    NotAccepted(NotAccepted),
    /// The leader's decided index, when there is no AcceptDecide to carry it.
    Decide(Decide),
    /// Proposals a non-leader forwards to the leader.
    ProposalForward(ProposalForward<T>),
    /// Compaction request.
    Compaction(Compaction),
    /// Phase 2a for a StopSign.
    AcceptStopSign(AcceptStopSign),
    /// A StopSign a non-leader forwards to the leader.
    ForwardStopSign(Box<StopSign>),
    /// The leader asks whether the receiver still promises its ballot (a read round).
    ReadConfirm(ReadRound),
    /// The receiver still promised the ballot when it answered this read round.
    ReadConfirmed(ReadRound),
    /// A follower asks the leader for a read index for the reads it holds.
    ReadRequest(ReadAsk),
    /// The leader's answer to a ReadRequest: a confirmed read index.
    ReadReply(ReadReply),
    /// A learner (a replica that lost its storage) asks for decided entries.
    LearnerRequest(LearnerRequest),
    /// Decided entries for a learner.
    LearnerSync(Box<LearnerSync<T, S>>),
}

/// See [`PaxosMsg::LearnerRequest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearnerRequest {
    /// The learner's decided index: it needs the decided entries from here on.
    pub from_idx: LogIndex,
}

/// See [`PaxosMsg::LearnerSync`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LearnerSync<T, S> {
    /// The leader's ballot.
    pub n: Ballot,
    /// The leader's decided index (the learner asks again while it is behind it).
    pub decided_idx: LogIndex,
    /// Decided entries (and a snapshot if the learner needs compacted ones), plus the StopSign
    /// if it is decided and the entries reach it.
    pub log_sync: LogSync<T, S>,
}

/// See [`PaxosMsg::ReadConfirm`], [`PaxosMsg::ReadConfirmed`] and [`PaxosMsg::ReadRequest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadRound {
    /// The leader's ballot.
    pub n: Ballot,
    /// The round: the leader's confirmation round, or the follower's request number.
    pub round: u64,
}

/// See [`PaxosMsg::ReadRequest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadAsk {
    /// The leader's ballot.
    pub n: Ballot,
    /// The follower's request number.
    pub round: u64,
    /// The leader may answer from its lease (no read waiting at the follower asked for a
    /// confirmation round).
    pub allow_lease: bool,
}

/// See [`PaxosMsg::ReadReply`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadReply {
    /// The leader's ballot.
    pub n: Ballot,
    /// The follower's request this answers (and every earlier one).
    pub round: u64,
    /// Reads of that request are linearizable once the follower decided this far.
    pub read_idx: LogIndex,
    /// The leader's decided index (the follower learns it at once instead of on the next
    /// AcceptDecide).
    pub decided_idx: LogIndex,
}

/// See [`PaxosMsg::PrepareReq`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrepareReq {
    /// The sender's promise.
    pub n: Ballot,
}

/// See [`PaxosMsg::Prepare`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepare {
    /// The new leader's ballot.
    pub n: Ballot,
    /// The leader's decided index.
    pub decided_idx: LogIndex,
    /// The round in which the leader's log was last synchronised.
    pub n_accepted: Ballot,
    /// The leader's accepted index (log end, plus one for a StopSign).
    pub accepted_idx: LogIndex,
}

/// The part of a log a synchronisation transfers. The receiver truncates its log to
/// `sync_idx` and appends `suffix`; a snapshot, if present, first replaces or extends the
/// receiver's decided prefix up to `sync_idx`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LogSync<T, S> {
    /// A snapshot of the decided prefix up to `sync_idx`.
    pub decided_snapshot: Option<SnapshotType<S>>,
    /// The entries from `sync_idx` on.
    pub suffix: Vec<Proposal<T>>,
    /// Where the suffix starts.
    pub sync_idx: LogIndex,
    /// The StopSign after the suffix, if the sender has one.
    pub stopsign: Option<StopSign>,
}

/// See [`PaxosMsg::Promise`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Promise<T, S> {
    /// The ballot promised.
    pub n: Ballot,
    /// The round in which the follower's log was last synchronised.
    pub n_accepted: Ballot,
    /// The follower's decided index.
    pub decided_idx: LogIndex,
    /// The follower's accepted index.
    pub accepted_idx: LogIndex,
    /// Entries the leader may lack, if the follower's log is more up to date.
    pub log_sync: Option<Box<LogSync<T, S>>>,
    /// With read leases: ticks for which a lease this follower confirmed to an earlier leader
    /// may still run; the new leader decides nothing before they passed (0 without leases).
    pub lease_wait_ticks: u64,
}

/// See [`PaxosMsg::AcceptSync`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AcceptSync<T, S> {
    /// The leader's ballot.
    pub n: Ballot,
    /// The leader's decided index.
    pub decided_idx: LogIndex,
    /// The end (accepted index) of the log the leader adopted in its Prepare phase. A follower
    /// forwards proposals only once its log reaches it (the sync may come in chunks): only
    /// then is a proposal still waiting there not in the leader's log.
    pub adopted_end: LogIndex,
    /// What the follower must change to hold the leader's log.
    pub log_sync: Box<LogSync<T, S>>,
}

/// See [`PaxosMsg::AcceptDecide`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AcceptDecide<T> {
    /// The leader's ballot.
    pub n: Ballot,
    /// The log index of the first entry: the leader's log end before it appended them. A
    /// follower only ever extends a log of ballot `n` with these (never truncates it), so a
    /// delayed, duplicated or replayed copy changes nothing it already holds.
    pub start_idx: LogIndex,
    /// The leader's decided index.
    pub decided_idx: LogIndex,
    /// The leader's entries `[start_idx, start_idx + entries.len())`.
    pub entries: Vec<Proposal<T>>,
}

/// See [`PaxosMsg::Accepted`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    /// The leader's ballot.
    pub n: Ballot,
    /// The follower's log (including a StopSign) is durable up to here.
    pub accepted_idx: LogIndex,
    /// The follower's decided index: tells the leader whether a Decide was lost.
    pub decided_idx: LogIndex,
}

/// See [`PaxosMsg::NotAccepted`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotAccepted {
    /// The follower's promise, higher than the sender's ballot.
    pub n: Ballot,
}

/// See [`PaxosMsg::Decide`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decide {
    /// The leader's ballot.
    pub n: Ballot,
    /// The leader's decided index.
    pub decided_idx: LogIndex,
}

/// See [`PaxosMsg::ProposalForward`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProposalForward<T> {
    /// The leader ballot the proposals are meant for. A leader drops forwards meant for another
    /// ballot (a delayed copy could otherwise be appended again after its first copy was decided);
    /// the proposer forwards again once it is synchronised with the current leader.
    pub n: Ballot,
    /// The proposals, in the order the sender appended them.
    pub proposals: Vec<Proposal<T>>,
    /// Every proposal of the sender (this incarnation) with a lower sequence number is settled:
    /// the leader may forget them when it removes duplicates.
    pub settled_below: u64,
}

/// See [`PaxosMsg::Compaction`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Compaction {
    /// Trim up to this index (every server has decided it).
    Trim(LogIndex),
    /// Snapshot up to this index, or up to the decided index.
    Snapshot(Option<LogIndex>),
}

/// See [`PaxosMsg::AcceptStopSign`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AcceptStopSign {
    /// The leader's ballot.
    pub n: Ballot,
    /// The leader's log end: the StopSign follows the entry before it.
    pub log_end: LogIndex,
    /// The StopSign.
    pub ss: Box<StopSign>,
}

impl<T, S> PaxosMsg<T, S> {
    /// The message's kind, e.g. `"AcceptDecide"` (for traces, metrics and tests).
    pub fn kind(&self) -> &'static str {
        match self {
            PaxosMsg::PrepareReq(_) => "PrepareReq",
            PaxosMsg::Prepare(_) => "Prepare",
            PaxosMsg::Promise(_) => "Promise",
            PaxosMsg::AcceptSync(_) => "AcceptSync",
            PaxosMsg::AcceptDecide(_) => "AcceptDecide",
            PaxosMsg::Accepted(_) => "Accepted",
            PaxosMsg::NotAccepted(_) => "NotAccepted",
            PaxosMsg::Decide(_) => "Decide",
            PaxosMsg::ProposalForward(_) => "ProposalForward",
            PaxosMsg::Compaction(_) => "Compaction",
            PaxosMsg::AcceptStopSign(_) => "AcceptStopSign",
            PaxosMsg::ForwardStopSign(_) => "ForwardStopSign",
            PaxosMsg::ReadConfirm(_) => "ReadConfirm",
            PaxosMsg::ReadConfirmed(_) => "ReadConfirmed",
            PaxosMsg::ReadRequest(_) => "ReadRequest",
            PaxosMsg::ReadReply(_) => "ReadReply",
            PaxosMsg::LearnerRequest(_) => "LearnerRequest",
            PaxosMsg::LearnerSync(_) => "LearnerSync",
        }
    }
}

impl<T, S> fmt::Display for PaxosMsg<T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PaxosMsg::PrepareReq(m) => write!(f, "PrepareReq n={}", m.n),
            PaxosMsg::Prepare(m) => {
                write!(f, "Prepare n={} dec={} acc={}/{}", m.n, m.decided_idx, m.n_accepted, m.accepted_idx)
            }
            PaxosMsg::Promise(m) => {
                write!(f, "Promise n={} dec={} acc={}/{}", m.n, m.decided_idx, m.n_accepted, m.accepted_idx)?;
                if let Some(sync) = &m.log_sync {
                    write!(f, " {sync}")?;
                }
                Ok(())
            }
            PaxosMsg::AcceptSync(m) => {
                write!(f, "AcceptSync n={} dec={} {}", m.n, m.decided_idx, m.log_sync)
            }
            PaxosMsg::AcceptDecide(m) => write!(
                f,
                "AcceptDecide n={} at={} dec={} entries={}",
                m.n,
                m.start_idx,
                m.decided_idx,
                m.entries.len()
            ),
            PaxosMsg::Accepted(m) => {
                write!(f, "Accepted n={} acc={} dec={}", m.n, m.accepted_idx, m.decided_idx)
            }
            PaxosMsg::NotAccepted(m) => write!(f, "NotAccepted n={}", m.n),
            PaxosMsg::Decide(m) => write!(f, "Decide n={} dec={}", m.n, m.decided_idx),
            PaxosMsg::ProposalForward(m) => {
                write!(f, "ProposalForward proposals={} settled_below={}", m.proposals.len(), m.settled_below)
            }
            PaxosMsg::Compaction(Compaction::Trim(idx)) => write!(f, "Compaction Trim({idx})"),
            PaxosMsg::Compaction(Compaction::Snapshot(idx)) => {
                write!(f, "Compaction Snapshot({idx:?})")
            }
            PaxosMsg::AcceptStopSign(m) => write!(
                f,
                "AcceptStopSign n={} at={} next_config={}",
                m.n, m.log_end, m.ss.next_config.configuration_id
            ),
            PaxosMsg::ForwardStopSign(ss) => {
                write!(f, "ForwardStopSign next_config={}", ss.next_config.configuration_id)
            }
            PaxosMsg::ReadConfirm(m) => write!(f, "ReadConfirm n={} round={}", m.n, m.round),
            PaxosMsg::ReadConfirmed(m) => write!(f, "ReadConfirmed n={} round={}", m.n, m.round),
            PaxosMsg::ReadRequest(m) => {
                write!(f, "ReadRequest n={} round={} allow_lease={}", m.n, m.round, m.allow_lease)
            }
            PaxosMsg::ReadReply(m) => write!(f, "ReadReply n={} round={} idx={}", m.n, m.round, m.read_idx),
            PaxosMsg::LearnerRequest(m) => write!(f, "LearnerRequest from={}", m.from_idx),
            PaxosMsg::LearnerSync(m) => {
                write!(f, "LearnerSync n={} dec={} {}", m.n, m.decided_idx, m.log_sync)
            }
        }
    }
}

impl<T, S> fmt::Display for LogSync<T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let snapshot = match &self.decided_snapshot {
            None => "",
            Some(SnapshotType::Complete(_)) => " snapshot=complete",
            Some(SnapshotType::Delta(_)) => " snapshot=delta",
        };
        write!(
            f,
            "sync={}+{}{}{}",
            self.sync_idx,
            self.suffix.len(),
            snapshot,
            if self.stopsign.is_some() { " +ss" } else { "" }
        )
    }
}
