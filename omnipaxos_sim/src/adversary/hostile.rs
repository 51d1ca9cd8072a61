//! Hostile peers: messages with extreme field values, from senders outside the cluster, for
//! other receivers, of other configurations.
//!
//! **Every hostile message is built by [`hostile_message`]**, and only there: the message
//! types of `omnipaxos_core::messages` change with the core (the fields of AcceptDecide,
//! AcceptSync, Prepare and Decide among them), and this is the one function to adapt.
//!
//! The four kinds differ in what a correct replica must do with them:
//! - [`HostileKind::Outsider`], [`HostileKind::Misaddressed`], [`HostileKind::ForeignConfiguration`]:
//!   drop them. Their payloads are anything at all, forged entries and ballots equal to the
//!   receiver's own promise included, so a replica that lets one through decides a value no
//!   `append` returned (`decided_entries_were_proposed`) or breaks agreement.
//! - [`HostileKind::ExtremeFromPeer`]: a cluster member's id, the right receiver and
//!   configuration, and extreme values in fields whose contents a correct replica cannot be
//!   misled by: a PrepareReq or NotAccepted with any ballot; a Prepare whose ballot belongs to
//!   another node than its sender (refused); log-carrying messages under the reserved ballot
//!   [`reserved_ballot`], which no leader ever uses (ignored); compaction requests beyond any
//!   decided index. Safety must hold and nothing may panic; such a peer may cost liveness
//!   only through ballots the receiver adopts, and the liveness phase outbids every promise.

use omnipaxos_core::{
    ballot_leader_election::Ballot,
    messages::{
        AcceptDecide, AcceptStopSign, AcceptSync, Accepted, Compaction, Decide, LearnerRequest, LearnerSync,
        LogSync, NotAccepted, PaxosMessage, PaxosMsg, Prepare, PrepareReq, Promise, ProposalForward, ReadAsk,
        ReadReply, ReadRound,
    },
    storage::{ClusterConfig, SnapshotType, StopSign},
    util::{ConfigurationId, FlexibleQuorum, LogIndex, NodeId, Proposal, ProposalId},
};
use rand::{rngs::SmallRng, seq::SliceRandom, Rng};

use super::{entry, AdvMessage};
use crate::kv::KvSnapshot;

/// Values of forged entries start here; no `append` ever uses one.
pub const HOSTILE_VALUE_BASE: u64 = 1 << 62;

/// How a hostile message is wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum HostileKind {
    /// The sender is not a member of the cluster.
    Outsider,
    /// The receiver named in the envelope is not the replica it is delivered to.
    Misaddressed,
    /// The envelope names another configuration.
    ForeignConfiguration,
    /// A member's id and a correct envelope; extreme values where they cannot mislead.
    ExtremeFromPeer,
}

impl HostileKind {
    /// A short name for traces and counts.
    pub fn name(self) -> &'static str {
        match self {
            HostileKind::Outsider => "hostile-outsider",
            HostileKind::Misaddressed => "hostile-misaddressed",
            HostileKind::ForeignConfiguration => "hostile-foreign-config",
            HostileKind::ExtremeFromPeer => "hostile-extreme-from-peer",
        }
    }
}

/// Where a hostile message goes and what it may imitate.
#[derive(Clone, Copy, Debug)]
pub struct HostileTarget<'a> {
    /// The cluster's configuration.
    pub config_id: ConfigurationId,
    /// The cluster's members.
    pub pids: &'a [NodeId],
    /// The replica the message is delivered to.
    pub receiver: NodeId,
    /// The receiver's current promise: forged ballots sometimes equal it exactly.
    pub receiver_promise: Ballot,
}

/// The ballot no leader uses: every handle_leader ballot of the scheduler has a lower
/// priority, and leaders only ever take their own ballots.
pub fn reserved_ballot(config_id: ConfigurationId, pid: NodeId) -> Ballot {
    Ballot::with(config_id, u32::MAX, u32::MAX, pid)
}

/// Builds one hostile message for `target.receiver`. The one place that constructs hostile
/// messages (see the module docs).
pub fn hostile_message(rng: &mut SmallRng, target: HostileTarget<'_>) -> (HostileKind, AdvMessage) {
    let peers: Vec<NodeId> = target.pids.iter().copied().filter(|&p| p != target.receiver).collect();
    let peer = *peers.choose(rng).unwrap_or(&target.receiver);
    let kind = match rng.gen_range(0..4) {
        0 => HostileKind::Outsider,
        1 => HostileKind::Misaddressed,
        2 => HostileKind::ForeignConfiguration,
        _ => HostileKind::ExtremeFromPeer,
    };
    let mut m = PaxosMessage {
        from: peer,
        to: target.receiver,
        config_id: target.config_id,
        msg: PaxosMsg::PrepareReq(PrepareReq { n: Ballot::default() }),
    };
    match kind {
        HostileKind::Outsider => {
            m.from = *[0, 1000 + rng.gen_range(0..10), u64::MAX].choose(rng).expect("non-empty");
            m.msg = any_payload(rng, &target, m.from);
        }
        HostileKind::Misaddressed => {
            let others: Vec<NodeId> =
                [0, u64::MAX, peer].into_iter().filter(|&p| p != target.receiver).collect();
            m.to = *others.choose(rng).expect("0 and u64::MAX are never members");
            m.msg = any_payload(rng, &target, m.from);
        }
        HostileKind::ForeignConfiguration => {
            let config_id = target.config_id;
            m.config_id = *[0, config_id.wrapping_add(1), config_id.wrapping_sub(1), u32::MAX]
                .choose(rng)
                .expect("non-empty");
            m.msg = any_payload(rng, &target, m.from);
        }
        HostileKind::ExtremeFromPeer => m.msg = peer_payload(rng, &target, peer),
    }
    (kind, m)
}

/// Payloads a member may send with extreme values without misleading a correct receiver.
fn peer_payload(
    rng: &mut SmallRng,
    target: &HostileTarget<'_>,
    from: NodeId,
) -> PaxosMsg<super::Entry, KvSnapshot> {
    let reserved = reserved_ballot(target.config_id, from);
    let not_from = *[0, u64::MAX, target.receiver].choose(rng).expect("non-empty");
    match rng.gen_range(0..6) {
        0 => PaxosMsg::PrepareReq(PrepareReq { n: extreme_ballot(rng, target, from) }),
        1 => PaxosMsg::NotAccepted(NotAccepted { n: extreme_ballot(rng, target, from) }),
        2 => {
            let mut n = extreme_ballot(rng, target, not_from);
            n.pid = not_from;
            prepare(rng, target, n)
        }
        3 => PaxosMsg::Compaction(match rng.gen_bool(0.5) {
            true => Compaction::Trim(u64::MAX - rng.gen_range(0..2)),
            false => Compaction::Snapshot(Some(u64::MAX - rng.gen_range(0..2))),
        }),
        _ => log_payload(rng, target, reserved, from),
    }
}

/// Any payload at all, for messages a correct receiver must drop whole.
fn any_payload(
    rng: &mut SmallRng,
    target: &HostileTarget<'_>,
    from: NodeId,
) -> PaxosMsg<super::Entry, KvSnapshot> {
    let n = extreme_ballot(rng, target, from);
    match rng.gen_range(0..8) {
        0 => PaxosMsg::PrepareReq(PrepareReq { n }),
        1 => PaxosMsg::NotAccepted(NotAccepted { n }),
        6 => read_payload(rng, n),
        7 => {
            let entries = forged_entries(rng, from);
            let log_sync = log_sync(rng, entries);
            PaxosMsg::LearnerSync(Box::new(LearnerSync { n, decided_idx: extreme_index(rng), log_sync }))
        }
        2 => prepare(rng, target, n),
        3 => PaxosMsg::Compaction(match rng.gen_bool(0.5) {
            true => Compaction::Trim(extreme_index(rng)),
            false => Compaction::Snapshot(rng.gen_bool(0.5).then(|| extreme_index(rng))),
        }),
        4 => PaxosMsg::ForwardStopSign(Box::new(stopsign(rng))),
        _ => log_payload(rng, target, n, from),
    }
}

/// Read-path messages with extreme rounds and indices (and learner requests).
fn read_payload(rng: &mut SmallRng, n: Ballot) -> PaxosMsg<super::Entry, KvSnapshot> {
    let round = ReadRound { n, round: extreme_u64(rng) };
    match rng.gen_range(0..5) {
        0 => PaxosMsg::ReadConfirm(round),
        1 => PaxosMsg::ReadConfirmed(round),
        // Derived from the round, not drawn: the seeds' runs stay as they were.
        2 => PaxosMsg::ReadRequest(ReadAsk { n, round: round.round, allow_lease: round.round % 2 == 0 }),
        3 => PaxosMsg::ReadReply(ReadReply {
            n,
            round: round.round,
            read_idx: extreme_index(rng),
            decided_idx: extreme_index(rng),
        }),
        _ => PaxosMsg::LearnerRequest(LearnerRequest { from_idx: extreme_index(rng) }),
    }
}

fn prepare(rng: &mut SmallRng, target: &HostileTarget<'_>, n: Ballot) -> PaxosMsg<super::Entry, KvSnapshot> {
    PaxosMsg::Prepare(Prepare {
        n,
        decided_idx: extreme_index(rng),
        n_accepted: extreme_ballot(rng, target, n.pid),
        accepted_idx: extreme_index(rng),
    })
}

/// A message carrying log state, entries or decisions under ballot `n`.
fn log_payload(
    rng: &mut SmallRng,
    target: &HostileTarget<'_>,
    n: Ballot,
    from: NodeId,
) -> PaxosMsg<super::Entry, KvSnapshot> {
    let entries = forged_entries(rng, from);
    match rng.gen_range(0..7) {
        0 => PaxosMsg::Promise(Promise {
            n,
            n_accepted: extreme_ballot(rng, target, from),
            decided_idx: extreme_index(rng),
            accepted_idx: extreme_index(rng),
            log_sync: rng.gen_bool(0.7).then(|| Box::new(log_sync(rng, entries))),
            lease_wait_ticks: extreme_u64(rng),
        }),
        1 => PaxosMsg::AcceptSync(AcceptSync {
            n,
            decided_idx: extreme_index(rng),
            adopted_end: extreme_index(rng),
            log_sync: Box::new(log_sync(rng, entries)),
        }),
        2 => PaxosMsg::AcceptDecide(AcceptDecide {
            n,
            start_idx: extreme_index(rng),
            decided_idx: extreme_index(rng),
            entries,
        }),
        3 => PaxosMsg::Accepted(Accepted {
            n,
            accepted_idx: extreme_index(rng),
            decided_idx: extreme_index(rng),
        }),
        4 => PaxosMsg::Decide(Decide { n, decided_idx: extreme_index(rng) }),
        5 => PaxosMsg::ProposalForward(ProposalForward {
            n,
            proposals: entries,
            settled_below: extreme_u64(rng),
        }),
        _ => PaxosMsg::AcceptStopSign(AcceptStopSign {
            n,
            log_end: extreme_index(rng),
            ss: Box::new(stopsign(rng)),
        }),
    }
}

fn log_sync(rng: &mut SmallRng, suffix: Vec<Proposal<super::Entry>>) -> LogSync<super::Entry, KvSnapshot> {
    let decided_snapshot = match rng.gen_range(0..3) {
        0 => Some(SnapshotType::Complete(KvSnapshot::default())),
        1 => Some(SnapshotType::Delta(KvSnapshot::default())),
        _ => None,
    };
    LogSync {
        decided_snapshot,
        suffix,
        sync_idx: extreme_index(rng),
        stopsign: rng.gen_bool(0.2).then(|| stopsign(rng)),
    }
}

/// Entries no append made: values from [`HOSTILE_VALUE_BASE`] on, ids of the sender's or
/// another node's, with extreme sequence numbers and incarnations.
fn forged_entries(rng: &mut SmallRng, from: NodeId) -> Vec<Proposal<super::Entry>> {
    (0..rng.gen_range(0..4))
        .map(|_| {
            let node = if rng.gen_bool(0.7) { from } else { rng.gen_range(0..4) };
            let id = ProposalId { node, seq: extreme_u64(rng), incarnation: extreme_u64(rng) };
            Proposal { id, entry: entry(node, HOSTILE_VALUE_BASE + rng.gen_range(0..1 << 20)) }
        })
        .collect()
}

fn stopsign(rng: &mut SmallRng) -> StopSign {
    let nodes = match rng.gen_range(0..4) {
        0 => Vec::new(),
        1 => vec![0],
        2 => vec![u64::MAX, 1],
        _ => vec![1, 2, 3],
    };
    let flexible_quorum =
        rng.gen_bool(0.3).then_some(FlexibleQuorum { read_quorum_size: 0, write_quorum_size: usize::MAX });
    let configuration_id = *[0, 2, u32::MAX].choose(rng).expect("non-empty");
    StopSign::with(ClusterConfig { configuration_id, nodes, flexible_quorum }, None)
}

/// A ballot with extreme fields, owned by `pid`; sometimes exactly the receiver's promise.
fn extreme_ballot(rng: &mut SmallRng, target: &HostileTarget<'_>, pid: NodeId) -> Ballot {
    if rng.gen_bool(0.2) {
        return target.receiver_promise;
    }
    let n = *[0, 1, u32::MAX - 1, u32::MAX].choose(rng).expect("non-empty");
    let priority = *[0, 1, u32::MAX].choose(rng).expect("non-empty");
    let config_id = if rng.gen_bool(0.8) { target.config_id } else { u32::MAX };
    Ballot::with(config_id, n, priority, pid)
}

fn extreme_index(rng: &mut SmallRng) -> LogIndex {
    *[0, 1, 7, 1 << 32, u64::MAX - 1, u64::MAX].choose(rng).expect("non-empty")
}

fn extreme_u64(rng: &mut SmallRng) -> u64 {
    *[0, 1, 2, u64::MAX - 1, u64::MAX].choose(rng).expect("non-empty")
}
