//! The partial-connectivity scenarios of the Omni-Paxos paper, plus a leader crash, for any
//! replicated log behind [`ScenarioNode`]: our library here, tikv's raft-rs in
//! `raft_node` (feature `raft-comparison`).
//!
//! ```text
//!   warm-up (leader elected, random phase) ─► idle window: count messages per election timeout
//!   ─► partition (60 election timeouts): every tick, each self-believed leader gets one
//!      proposal, every node ticks, messages are delivered until the cluster is quiet
//!   metrics: ticks to the first increase of the cluster-wide decided index, share of ticks
//!            with progress, leader changes
//! ```
//!
//! Wiring as in omnipaxos-artifacts (`client.rs::create_partition`), L the leader and f1 a
//! follower: quorum-loss keeps only f1's links; constrained election first cuts L–f1 for half an
//! election timeout while L keeps deciding, then leaves f1 connected to all but L; chained cuts
//! L–f1 only; leader crash cuts L from everyone. Messages take no simulated time (delivered to
//! quiet in the tick they are sent), as in the reference measurements, so a result in election
//! timeouts is the protocol's own latency.

use std::collections::BTreeSet;

use omnipaxos_core::{
    messages::Message, sequence_paxos::SequencePaxosConfig, util::NodeId, OmniPaxos, OmniPaxosConfig,
};
use omnipaxos_storage::memory_storage::MemoryStorage;
use rand::{rngs::SmallRng, seq::SliceRandom, Rng, SeedableRng};

use crate::network::{all_cut_except, both_ways, LinkConfig, Network};

/// Ticks per election timeout in every scenario.
pub const ELECTION_TIMEOUT_TICKS: u64 = 10;
/// How long the partition lasts, in election timeouts.
pub const PARTITION_ELECTION_TIMEOUTS: u64 = 60;
/// Length of the idle window used to count heartbeat traffic, in election timeouts; it starts
/// three election timeouts after the last proposal.
const IDLE_WINDOW_ELECTION_TIMEOUTS: u64 = 20;
/// Longest wait for the first leader.
const WARM_UP_TICKS_MAX: u64 = 200;
/// Limit on delivery rounds within one tick.
const DELIVERY_ROUNDS_MAX: usize = 1000;

/// One replica of any replicated log, as the scenarios drive it.
pub trait ScenarioNode {
    /// The protocol's message.
    type Message: Clone;
    /// Advances one tick.
    fn tick(&mut self);
    /// Proposes an entry (called only while `is_leader`).
    fn propose(&mut self, value: u64);
    /// Handles one message.
    fn step(&mut self, message: Self::Message);
    /// Moves outgoing messages, as (from, to, message), into `out`; persists first if needed.
    fn drain(&mut self, out: &mut Vec<(NodeId, NodeId, Self::Message)>);
    /// Whether this node believes it leads and can propose.
    fn is_leader(&self) -> bool;
    /// Identifies its current leadership (term or ballot), while `is_leader`.
    fn leadership(&self) -> u64;
    /// Entries decided (committed) here.
    fn decided(&self) -> u64;
}

/// The scenarios.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scenario {
    /// Only f1 stays connected to everyone (n = 5).
    QuorumLoss,
    /// f1 lags, then is the only quorum-connected server; L is gone (n = 5).
    ConstrainedElection,
    /// L and f1 lose their link; the third server sees both (n = 3).
    Chained,
    /// The leader is cut from everyone.
    LeaderCrash,
}

impl Scenario {
    /// Every scenario with its cluster sizes, in report order.
    pub const ALL: [(Scenario, usize); 5] = [
        (Scenario::QuorumLoss, 5),
        (Scenario::ConstrainedElection, 5),
        (Scenario::Chained, 3),
        (Scenario::LeaderCrash, 3),
        (Scenario::LeaderCrash, 5),
    ];

    /// Its name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::QuorumLoss => "quorum-loss",
            Scenario::ConstrainedElection => "constrained election",
            Scenario::Chained => "chained",
            Scenario::LeaderCrash => "leader crash",
        }
    }
}

/// What one run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct ScenarioResult {
    /// Ticks from the partition to the first increase of the cluster-wide decided index;
    /// `None` if it never increased during the partition.
    pub ticks_to_first_decision: Option<u64>,
    /// Partition ticks in which the cluster-wide decided index increased.
    pub progress_ticks: u64,
    /// Ticks the partition lasted.
    pub partition_ticks: u64,
    /// New leaderships (a node leading with a term or ballot not seen before) during the partition.
    pub leader_changes: u64,
    /// Messages delivered per election timeout in the idle window before the partition.
    pub idle_messages_per_election_timeout: f64,
}

/// A cluster of scenario nodes on a zero-delay network.
struct Harness<N: ScenarioNode> {
    nodes: Vec<N>,
    pids: Vec<NodeId>,
    network: Network<N::Message>,
    rng: SmallRng,
    now: u64,
    leaderships: BTreeSet<(usize, u64)>,
    delivered: u64,
    next_value: u64,
}

impl<N: ScenarioNode> Harness<N> {
    fn tick(&mut self, propose: bool) {
        self.now += 1;
        if propose {
            for node in self.nodes.iter_mut().filter(|n| n.is_leader()) {
                self.next_value += 1;
                node.propose(self.next_value);
            }
        }
        for node in &mut self.nodes {
            node.tick();
        }
        self.deliver_to_quiet();
    }

    fn deliver_to_quiet(&mut self) {
        let mut out = Vec::new();
        for _ in 0..DELIVERY_ROUNDS_MAX {
            for node in &mut self.nodes {
                node.drain(&mut out);
            }
            for (from, to, m) in out.drain(..) {
                self.network.send(from, to, m, self.now, &mut self.rng);
            }
            let mut any = false;
            while let Some(delivery) = self.network.pop_due(self.now) {
                if let Ok((_, to, m)) = delivery {
                    any = true;
                    self.delivered += 1;
                    let index = self.pids.iter().position(|&p| p == to).expect("a cluster member");
                    self.nodes[index].step(m);
                }
            }
            if !any {
                return;
            }
        }
    }

    fn leader(&self) -> Option<usize> {
        let leaders: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.nodes[i].is_leader()).collect();
        (leaders.len() == 1).then(|| leaders[0])
    }

    fn decided(&self) -> u64 {
        self.nodes.iter().map(ScenarioNode::decided).max().unwrap_or(0)
    }

    /// Records leaderships; returns how many are new.
    fn note_leaderships(&mut self) -> u64 {
        let mut new = 0;
        for (i, node) in self.nodes.iter().enumerate() {
            if node.is_leader() && self.leaderships.insert((i, node.leadership())) {
                new += 1;
            }
        }
        new
    }

    fn cut(&mut self, cuts: BTreeSet<(NodeId, NodeId)>) {
        self.network.set_cuts(cuts);
    }
}

/// Runs one scenario on nodes built by `make(pid, pids, rng)`.
pub fn run<N: ScenarioNode>(
    scenario: Scenario,
    n: usize,
    seed: u64,
    mut make: impl FnMut(NodeId, &[NodeId], &mut SmallRng) -> N,
) -> ScenarioResult {
    let mut rng = SmallRng::seed_from_u64(seed);
    let pids: Vec<NodeId> = (1..=n as NodeId).collect();
    let nodes = pids.iter().map(|&pid| make(pid, &pids, &mut rng)).collect();
    let mut h = Harness {
        nodes,
        pids: pids.clone(),
        network: Network::new(LinkConfig::reliable(0)),
        rng,
        now: 0,
        leaderships: BTreeSet::new(),
        delivered: 0,
        next_value: 0,
    };
    while h.leader().is_none() && h.now < WARM_UP_TICKS_MAX {
        h.tick(false);
    }
    // Settle, then start at a random phase of the heartbeat rounds.
    let settle = 2 * ELECTION_TIMEOUT_TICKS + h.rng.gen_range(0..ELECTION_TIMEOUT_TICKS);
    for _ in 0..settle {
        h.tick(true);
    }
    // Let the last proposals settle (acknowledgements, probes) before counting idle traffic.
    for _ in 0..3 * ELECTION_TIMEOUT_TICKS {
        h.tick(false);
    }
    let delivered_before = h.delivered;
    let idle_ticks = IDLE_WINDOW_ELECTION_TIMEOUTS * ELECTION_TIMEOUT_TICKS;
    for _ in 0..idle_ticks {
        h.tick(false);
    }
    let idle = (h.delivered - delivered_before) as f64 / IDLE_WINDOW_ELECTION_TIMEOUTS as f64;
    for _ in 0..h.rng.gen_range(0..ELECTION_TIMEOUT_TICKS) {
        h.tick(true);
    }
    let leader = h.leader().map_or(pids[0], |i| pids[i]);
    let followers: Vec<NodeId> = pids.iter().copied().filter(|&p| p != leader).collect();
    let f1 = *followers.choose(&mut h.rng).expect("followers");
    h.note_leaderships();
    let mut result = partition(&mut h, scenario, &pids, leader, f1);
    result.idle_messages_per_election_timeout = idle;
    result
}

fn partition<N: ScenarioNode>(
    h: &mut Harness<N>,
    scenario: Scenario,
    pids: &[NodeId],
    leader: NodeId,
    f1: NodeId,
) -> ScenarioResult {
    let only_f1 = |exclude: &[NodeId]| {
        let up: Vec<(NodeId, NodeId)> =
            pids.iter().filter(|p| **p != f1 && !exclude.contains(p)).map(|&p| (f1, p)).collect();
        all_cut_except(pids, &both_ways(&up))
    };
    let start = h.now;
    let partition_ticks = PARTITION_ELECTION_TIMEOUTS * ELECTION_TIMEOUT_TICKS;
    let mut decided = h.decided();
    let mut first = None;
    let mut progress_ticks = 0;
    let mut leader_changes = 0;
    let lag_ticks = ELECTION_TIMEOUT_TICKS / 2;
    match scenario {
        Scenario::QuorumLoss => h.cut(only_f1(&[])),
        Scenario::ConstrainedElection => {
            // f1 falls behind first; this lag is not part of the measured partition.
            h.cut(both_ways(&[(leader, f1)]));
            for _ in 0..lag_ticks {
                h.tick(true);
            }
            h.cut(only_f1(&[leader]));
            decided = h.decided();
            h.note_leaderships();
        }
        Scenario::Chained => h.cut(both_ways(&[(leader, f1)])),
        Scenario::LeaderCrash => {
            let others: Vec<(NodeId, NodeId)> = pids
                .iter()
                .flat_map(|&a| pids.iter().map(move |&b| (a, b)))
                .filter(|&(a, b)| a != b && a != leader && b != leader)
                .collect();
            h.cut(all_cut_except(pids, &others.into_iter().collect()));
        }
    }
    let start = if scenario == Scenario::ConstrainedElection { start + lag_ticks } else { start };
    for _ in 0..partition_ticks {
        h.tick(true);
        leader_changes += h.note_leaderships();
        let now_decided = h.decided();
        if now_decided > decided {
            progress_ticks += 1;
            first.get_or_insert(h.now - start);
            decided = now_decided;
        }
    }
    ScenarioResult {
        ticks_to_first_decision: first,
        progress_ticks,
        partition_ticks,
        leader_changes,
        idle_messages_per_election_timeout: 0.0,
    }
}

/// Our library through its `OmniPaxos` facade, on memory storage.
pub struct OmniPaxosNode {
    replica: OmniPaxos<u64, (), MemoryStorage<u64, ()>>,
    buffer: Vec<Message<u64, ()>>,
}

impl OmniPaxosNode {
    /// Replica `pid` of `pids` with an election timeout of [`ELECTION_TIMEOUT_TICKS`].
    pub fn new(pid: NodeId, pids: &[NodeId]) -> OmniPaxosNode {
        let mut sp = SequencePaxosConfig::default();
        sp.set_configuration_id(1);
        sp.set_pid(pid);
        sp.set_peers(pids.iter().copied().filter(|&p| p != pid).collect());
        let mut config = OmniPaxosConfig::new(sp);
        config.set_hb_delay(ELECTION_TIMEOUT_TICKS);
        OmniPaxosNode { replica: OmniPaxos::with(config, MemoryStorage::default()), buffer: Vec::new() }
    }
}

impl ScenarioNode for OmniPaxosNode {
    type Message = Message<u64, ()>;

    fn tick(&mut self) {
        self.replica.tick().expect("memory storage does not fail");
    }

    fn propose(&mut self, value: u64) {
        // A full buffer only means the isolated leader cannot decide: nothing to measure.
        let _ = self.replica.append(value);
    }

    fn step(&mut self, message: Self::Message) {
        self.replica.handle_incoming(message).expect("memory storage does not fail");
    }

    fn drain(&mut self, out: &mut Vec<(NodeId, NodeId, Self::Message)>) {
        self.replica.take_outgoing_messages(&mut self.buffer).expect("memory storage does not fail");
        out.extend(self.buffer.drain(..).map(|m| (m.get_sender(), m.get_receiver(), m)));
        // Outcomes are not needed here; keep their queue short.
        let mut outcomes = Vec::new();
        self.replica.take_proposal_outcomes(&mut outcomes);
    }

    fn is_leader(&self) -> bool {
        self.replica.sequence_paxos().is_accepting_leader()
    }

    fn leadership(&self) -> u64 {
        let ballot = self.replica.get_promise();
        (u64::from(ballot.n) << 32) | (u64::from(ballot.priority) << 16) | ballot.pid
    }

    fn decided(&self) -> u64 {
        self.replica.get_decided_idx()
    }
}

/// Runs a scenario on our library.
pub fn run_omnipaxos(scenario: Scenario, n: usize, seed: u64) -> ScenarioResult {
    run(scenario, n, seed, |pid, pids, _| OmniPaxosNode::new(pid, pids))
}

/// Summary statistics of one (scenario, protocol) over many seeds.
#[derive(Clone, Debug, PartialEq)]
pub struct ScenarioStats {
    /// Seeds run.
    pub seeds: usize,
    /// Seeds with no decision during the whole partition.
    pub never: usize,
    /// Median and max election timeouts to the first decision, over the seeds that decided.
    pub first_decision_election_timeouts: Option<(f64, f64)>,
    /// Share of partition ticks with progress, over all seeds.
    pub progress_share: f64,
    /// Median and max leader changes.
    pub leader_changes: (u64, u64),
    /// Median idle messages per election timeout.
    pub idle_messages_per_election_timeout: f64,
}

/// Aggregates the results of many seeds.
pub fn summarize(results: &[ScenarioResult]) -> ScenarioStats {
    let median_f = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let firsts: Vec<f64> = results
        .iter()
        .filter_map(|r| r.ticks_to_first_decision)
        .map(|t| t as f64 / ELECTION_TIMEOUT_TICKS as f64)
        .collect();
    let first_decision_election_timeouts = (!firsts.is_empty()).then(|| {
        let max = firsts.iter().copied().fold(0.0, f64::max);
        (median_f(firsts.clone()), max)
    });
    let mut changes: Vec<u64> = results.iter().map(|r| r.leader_changes).collect();
    changes.sort_unstable();
    let progress: u64 = results.iter().map(|r| r.progress_ticks).sum();
    let ticks: u64 = results.iter().map(|r| r.partition_ticks).sum();
    ScenarioStats {
        seeds: results.len(),
        never: results.iter().filter(|r| r.ticks_to_first_decision.is_none()).count(),
        first_decision_election_timeouts,
        progress_share: progress as f64 / ticks.max(1) as f64,
        leader_changes: (
            changes.get(changes.len() / 2).copied().unwrap_or(0),
            changes.last().copied().unwrap_or(0),
        ),
        idle_messages_per_election_timeout: median_f(
            results.iter().map(|r| r.idle_messages_per_election_timeout).collect(),
        ),
    }
}
