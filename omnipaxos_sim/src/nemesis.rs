//! The nemesis: which faults a seed injects, when, and for how long.
//!
//! ```text
//!   seed ──► FaultProfile (rate of new faults, base link quality, weights)
//!   each tick of the safety phase:
//!     network: maybe start a fault (loss, duplication, delay, partitions, one-way, flapping,
//!              the paper's quorum-loss / constrained-election / chained) for a few timeouts
//!     process: scheduled restarts; maybe crash a node (losing all, a prefix or none of its
//!              unflushed writes), arm a disk failure, reconfigure, trim, snapshot
//!     extended (issue 8, `SimConfig::extended_faults`): maybe replay archived messages to
//!              their original receivers (often into the node that restarted last); maybe
//!              change a node's leader priority (`set_priority`)
//! ```
//!
//! Network faults are stored as effects with a start and an end tick; every tick the network's
//! cut set and link qualities are recomputed from the effects alive at that tick.

use std::collections::{BTreeMap, BTreeSet};

use omnipaxos_core::{
    ballot_leader_election::{BLEMessage, HeartbeatMsg},
    messages::Message,
    storage::ClusterConfig,
    util::{ConfigurationId, NodeId},
};
use omnipaxos_storage::crash_storage::CrashKeep;
use rand::{rngs::SmallRng, seq::SliceRandom, Rng};

use crate::{
    invariants::Violation,
    network::{all_cut_except, both_ways, LinkConfig},
    sim::{NodeMessage, Simulation},
    storage::{Amnesia, ArmedFailure, DiskLoss, StorageKind},
};

/// The kinds of fault, as counted in the summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// Links lose messages.
    Loss,
    /// Links duplicate messages.
    Duplication,
    /// Links delay and reorder messages, sometimes beyond an election timeout.
    Delay,
    /// Two groups that cannot talk to each other.
    FullPartition,
    /// Random links cut: connectivity that is not transitive.
    PartialPartition,
    /// A link that delivers one way only.
    OneWayLink,
    /// A link that goes up and down.
    FlappingLink,
    /// The paper's quorum-loss: one server stays connected to all, the others only to it.
    QuorumLoss,
    /// The paper's constrained election: the only quorum-connected server has a stale log.
    ConstrainedElection,
    /// The paper's chained scenario: the leader loses its link to one follower.
    Chained,
    /// A node crashes (and restarts later).
    Crash,
    /// A disk write or flush fails (fail-stop, then a restart).
    DiskFailure,
    /// A reconfiguration is proposed.
    Reconfiguration,
    /// The leader trims the log.
    Trim,
    /// A replica snapshots its log.
    Snapshot,
    /// Archived messages are delivered again to their original receivers (extended faults).
    Replay,
    /// A node's leader priority changes at runtime (`set_priority`; extended faults).
    Priority,
    /// The leader is cut from every other replica (in N ≥ 5 sometimes but one), while every
    /// client still reaches it: a deposed leader that may still answer reads.
    LeaderIsolation,
    /// A replica's disk is destroyed or its newest segment truncated; it restarts as a learner
    /// (at most one replica of a configuration at a time, until a reconfiguration replaces it).
    Amnesia,
    /// A reconfiguration that re-adds (or swaps out) a learner, as an operator would.
    ReplaceLearner,
    /// At a configuration's first election a node raises its priority while only one peer
    /// hears heartbeats, lowers it again, and that peer is cut off (issue 8, finding 3).
    PriorityFlip,
    /// A heartbeat reply arrives with a ballot round of `u32::MAX`, as from a faulty peer.
    CorruptReply,
    /// A node's process stops for a while and resumes with its missed ticks skipped
    /// (extended faults; see `crate::pause`).
    Pause,
}

impl FaultKind {
    /// Every kind, in summary order.
    pub const ALL: [FaultKind; 23] = [
        FaultKind::Loss,
        FaultKind::Duplication,
        FaultKind::Delay,
        FaultKind::FullPartition,
        FaultKind::PartialPartition,
        FaultKind::OneWayLink,
        FaultKind::FlappingLink,
        FaultKind::QuorumLoss,
        FaultKind::ConstrainedElection,
        FaultKind::Chained,
        FaultKind::Crash,
        FaultKind::DiskFailure,
        FaultKind::Reconfiguration,
        FaultKind::Trim,
        FaultKind::Snapshot,
        FaultKind::Replay,
        FaultKind::Priority,
        FaultKind::LeaderIsolation,
        FaultKind::Amnesia,
        FaultKind::ReplaceLearner,
        FaultKind::PriorityFlip,
        FaultKind::CorruptReply,
        FaultKind::Pause,
    ];

    /// The kind named `name` (see [`FaultKind::name`]).
    pub fn from_name(name: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Parses a command-line fault kind.
    pub fn parse(name: &str) -> Result<FaultKind, String> {
        FaultKind::from_name(name).ok_or_else(|| {
            let names: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
            format!("unknown fault kind `{name}`; one of: {}", names.join(", "))
        })
    }

    /// A short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Loss => "loss",
            FaultKind::Duplication => "dup",
            FaultKind::Delay => "delay",
            FaultKind::FullPartition => "partition",
            FaultKind::PartialPartition => "partial",
            FaultKind::OneWayLink => "one-way",
            FaultKind::FlappingLink => "flapping",
            FaultKind::QuorumLoss => "quorum-loss",
            FaultKind::ConstrainedElection => "constrained",
            FaultKind::Chained => "chained",
            FaultKind::Crash => "crash",
            FaultKind::DiskFailure => "disk",
            FaultKind::Reconfiguration => "reconfig",
            FaultKind::Trim => "trim",
            FaultKind::Snapshot => "snapshot",
            FaultKind::Replay => "replay",
            FaultKind::Priority => "priority",
            FaultKind::LeaderIsolation => "isolate-leader",
            FaultKind::Amnesia => "amnesia",
            FaultKind::ReplaceLearner => "replace-learner",
            FaultKind::PriorityFlip => "priority-flip",
            FaultKind::CorruptReply => "corrupt-reply",
            FaultKind::Pause => "pause",
        }
    }
}

/// What a network fault does while it is alive.
#[derive(Clone, Debug)]
enum Effect {
    /// These directed links deliver nothing.
    Cut(BTreeSet<(NodeId, NodeId)>),
    /// These directed links are cut in every other period of `period_ticks`.
    Flap { links: BTreeSet<(NodeId, NodeId)>, period_ticks: u64 },
    /// These directed links behave like this.
    Degrade(Vec<((NodeId, NodeId), LinkConfig)>),
}

impl std::fmt::Display for Effect {
    /// `cut 1->2 2->1`, `flap every 3 ticks 1->2 2->1`, `degrade 1->3 2->3 loss=0.17 dup=0 delay=1..3`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |links: &mut dyn Iterator<Item = &(NodeId, NodeId)>| {
            links.map(|(a, b)| format!("{a}->{b}")).collect::<Vec<_>>().join(" ")
        };
        match self {
            Effect::Cut(links) => write!(f, "cut {}", show(&mut links.iter())),
            Effect::Flap { links, period_ticks } => {
                write!(f, "flap every {period_ticks} ticks {}", show(&mut links.iter()))
            }
            Effect::Degrade(links) => {
                let Some((_, link)) = links.first() else { return write!(f, "degrade nothing") };
                write!(
                    f,
                    "degrade {} loss={:.2} dup={:.2} delay={}..{} spike={:.2}..{}",
                    show(&mut links.iter().map(|(l, _)| l)),
                    link.loss,
                    link.duplication,
                    link.delay_min_ticks,
                    link.delay_max_ticks,
                    link.spike,
                    link.spike_max_ticks
                )
            }
        }
    }
}

#[derive(Clone, Debug)]
struct ActiveFault {
    from: u64,
    until: u64,
    effect: Effect,
}

/// The seed's choices of how hard to push.
#[derive(Clone, Copy, Debug)]
struct FaultProfile {
    /// Chance per tick that a network fault starts.
    network_fault_per_tick: f64,
    /// Chance per tick that a process fault (crash, disk, reconfiguration, compaction) happens.
    process_fault_per_tick: f64,
    /// The link quality outside network faults.
    base_link: LinkConfig,
    /// The client links' quality.
    client_link: LinkConfig,
    /// The faults added for issue 8, if the run has them.
    extended: Option<ExtendedProfile>,
}

/// The seed's choices for the extended faults ([`crate::sim::SimConfig::extended_faults`]).
#[derive(Clone, Copy, Debug)]
struct ExtendedProfile {
    /// Chance per tick that archived messages are replayed.
    replay_per_tick: f64,
    /// Chance per tick that a node's leader priority changes.
    priority_per_tick: f64,
    /// A small `buffer_size` for every replica, in some seeds.
    small_buffer_size: Option<usize>,
    /// Priority flips at the first election of a configuration (issue 8, finding 3).
    priority_flips: bool,
    /// Chance per tick that the next heartbeat reply to a node arrives corrupted.
    corrupt_per_tick: f64,
}

/// The network faults the nemesis draws among.
const NETWORK_FAULTS: [FaultKind; 11] = [
    FaultKind::Loss,
    FaultKind::Duplication,
    FaultKind::Delay,
    FaultKind::FullPartition,
    FaultKind::PartialPartition,
    FaultKind::OneWayLink,
    FaultKind::FlappingLink,
    FaultKind::QuorumLoss,
    FaultKind::ConstrainedElection,
    FaultKind::Chained,
    FaultKind::LeaderIsolation,
];

/// The process faults the nemesis draws among.
const PROCESS_FAULTS: [FaultKind; 6] = [
    FaultKind::Crash,
    FaultKind::Amnesia,
    FaultKind::DiskFailure,
    FaultKind::Reconfiguration,
    FaultKind::Trim,
    FaultKind::Snapshot,
];

/// Most learner replacements proposed in one run.
const LEARNER_REPLACEMENTS_MAX: u32 = 4;
/// Chance per tick that the operator proposes replacing a learner of the newest configuration.
const REPLACE_LEARNER_PER_TICK: f64 = 0.03;

/// The fault injector's state.
pub struct Nemesis {
    enabled: bool,
    profile: FaultProfile,
    hb_delay_ticks: u64,
    active: Vec<ActiveFault>,
    restarts: BTreeMap<NodeId, u64>,
    counts: BTreeMap<FaultKind, u64>,
    reconfigurations_proposed: u32,
    /// The tick each node last restarted at: replays go to restarted nodes more often.
    restarted: BTreeMap<NodeId, u64>,
    /// Priority changes due later (tick, node, priority): the second half of a priority flip.
    scheduled_priorities: Vec<(u64, NodeId, u32)>,
    /// The next heartbeat reply delivered to this node arrives corrupted.
    pub(crate) corrupt_next_reply: Option<NodeId>,
    learner_replacements: u32,
    /// Configurations whose log the nemesis trimmed (compacted without a snapshot).
    trimmed: BTreeSet<ConfigurationId>,
    /// Configurations whose first election a priority flip was considered for.
    flipped: BTreeSet<ConfigurationId>,
    /// Only these kinds of fault are injected (`None`: all).
    only: Option<BTreeSet<FaultKind>>,
    /// During a priority flip: only this node receives heartbeat replies, until this tick.
    replies_only_to: Option<(NodeId, u64)>,
}

impl Nemesis {
    /// Draws the seed's fault profile; with `extended`, also that of the extended faults
    /// (drawn after everything else, so a seed's other choices do not depend on it).
    pub fn new(rng: &mut SmallRng, enabled: bool, extended: bool, hb_delay_ticks: u64) -> Nemesis {
        let delay_max_ticks = rng.gen_range(1..=3);
        let base_link = if enabled {
            LinkConfig {
                loss: *[0.0, 0.0, 0.01, 0.03].choose(rng).expect("non-empty"),
                duplication: *[0.0, 0.01, 0.02].choose(rng).expect("non-empty"),
                delay_min_ticks: 1,
                delay_max_ticks,
                spike: *[0.0, 0.002, 0.01].choose(rng).expect("non-empty"),
                spike_max_ticks: 2 * hb_delay_ticks,
                // Half the seeds run over TCP-like links, half over a datagram network.
                fifo: rng.gen_bool(0.5),
            }
        } else {
            LinkConfig { delay_min_ticks: 1, ..LinkConfig::reliable(delay_max_ticks) }
        };
        let client_link = LinkConfig {
            loss: if enabled { *[0.0, 0.01].choose(rng).expect("non-empty") } else { 0.0 },
            delay_min_ticks: 1,
            ..LinkConfig::reliable(2)
        };
        let mut profile = FaultProfile {
            network_fault_per_tick: rng.gen_range(0.005..0.04),
            process_fault_per_tick: rng.gen_range(0.003..0.03),
            base_link,
            client_link,
            extended: None,
        };
        if enabled && extended {
            profile.extended = Some(ExtendedProfile {
                replay_per_tick: rng.gen_range(0.002..0.03),
                priority_per_tick: rng.gen_range(0.0..0.01),
                small_buffer_size: rng.gen_bool(0.3).then(|| rng.gen_range(1..=8)),
                priority_flips: rng.gen_bool(0.5),
                corrupt_per_tick: if rng.gen_bool(0.3) { rng.gen_range(0.0..0.005) } else { 0.0 },
            });
        }
        Nemesis {
            enabled,
            profile,
            hb_delay_ticks,
            active: Vec::new(),
            restarts: BTreeMap::new(),
            counts: BTreeMap::new(),
            reconfigurations_proposed: 0,
            restarted: BTreeMap::new(),
            scheduled_priorities: Vec::new(),
            corrupt_next_reply: None,
            learner_replacements: 0,
            trimmed: BTreeSet::new(),
            flipped: BTreeSet::new(),
            only: None,
            replies_only_to: None,
        }
    }

    /// From now on injects only faults of these kinds (the draws stay as they were, so every
    /// other choice of the seed is unchanged).
    /// The seed's base link quality loses, duplicates or delays messages only if those kinds
    /// are among them.
    pub fn restrict_to(&mut self, kinds: BTreeSet<FaultKind>) {
        let link = &mut self.profile.base_link;
        if !kinds.contains(&FaultKind::Loss) {
            link.loss = 0.0;
            self.profile.client_link.loss = 0.0;
        }
        if !kinds.contains(&FaultKind::Duplication) {
            link.duplication = 0.0;
        }
        if !kinds.contains(&FaultKind::Delay) {
            link.spike = 0.0;
        }
        self.only = Some(kinds);
    }

    pub(crate) fn allows(&self, kind: FaultKind) -> bool {
        self.only.as_ref().is_none_or(|only| only.contains(&kind))
    }

    /// `kind` if it is allowed, else one of the allowed kinds among `group` (drawn only when
    /// the kinds are restricted, so unrestricted seeds draw as before), or none.
    fn allowed_instead(&self, kind: FaultKind, group: &[FaultKind], rng: &mut SmallRng) -> Option<FaultKind> {
        if self.allows(kind) {
            return Some(kind);
        }
        let allowed: Vec<FaultKind> = group.iter().copied().filter(|&k| self.allows(k)).collect();
        allowed.choose(rng).copied()
    }

    /// The small `buffer_size` this seed gives every replica, if it does.
    pub fn small_buffer_size(&self) -> Option<usize> {
        self.profile.extended.and_then(|e| e.small_buffer_size)
    }

    /// Notes that `pid` restarted at tick `now`.
    pub fn note_restarted(&mut self, pid: NodeId, now: u64) {
        self.restarted.insert(pid, now);
    }

    /// The replica links' quality outside faults.
    pub fn base_link(&self) -> LinkConfig {
        self.profile.base_link
    }

    /// The client links' quality.
    pub fn client_link(&self) -> LinkConfig {
        self.profile.client_link
    }

    /// Faults injected so far, by kind.
    pub fn counts(&self) -> &BTreeMap<FaultKind, u64> {
        &self.counts
    }

    pub(crate) fn count(&mut self, kind: FaultKind) {
        *self.counts.entry(kind).or_default() += 1;
    }

    /// Ends every fault (the liveness phase); scheduled restarts are dropped too.
    pub fn clear(&mut self) {
        self.enabled = false;
        self.active.clear();
        self.restarts.clear();
        self.scheduled_priorities.clear();
        self.corrupt_next_reply = None;
        self.replies_only_to = None;
    }

    /// How long a crashed node stays down.
    pub fn restart_delay(&self, rng: &mut SmallRng) -> u64 {
        rng.gen_range(self.hb_delay_ticks / 2..=6 * self.hb_delay_ticks)
    }

    /// Restarts `pid` at tick `at`.
    pub fn schedule_restart(&mut self, pid: NodeId, at: u64) {
        self.restarts.insert(pid, at);
    }

    fn duration(&self, rng: &mut SmallRng) -> u64 {
        rng.gen_range(2 * self.hb_delay_ticks..=12 * self.hb_delay_ticks)
    }
}

impl Simulation {
    /// Maybe starts a network fault.
    pub(crate) fn inject_network_faults(&mut self) {
        if !self.nemesis.enabled || !self.rng.gen_bool(self.nemesis.profile.network_fault_per_tick) {
            return;
        }
        let nodes: Vec<NodeId> = self.nodes.keys().copied().collect();
        if nodes.len() < 2 {
            return;
        }
        let extended = self.nemesis.profile.extended.is_some();
        let kind = match self.rng.gen_range(0..if extended { 110 } else { 100 }) {
            100.. => FaultKind::LeaderIsolation,
            0..=9 => FaultKind::Loss,
            10..=17 => FaultKind::Duplication,
            18..=29 => FaultKind::Delay,
            30..=41 => FaultKind::FullPartition,
            42..=55 => FaultKind::PartialPartition,
            56..=63 => FaultKind::OneWayLink,
            64..=71 => FaultKind::FlappingLink,
            72..=80 => FaultKind::QuorumLoss,
            81..=89 => FaultKind::ConstrainedElection,
            _ => FaultKind::Chained,
        };
        let duration = self.nemesis.duration(&mut self.rng);
        let Some(kind) = self.nemesis.allowed_instead(kind, &NETWORK_FAULTS, &mut self.rng) else { return };
        let faults = self.network_fault(kind, &nodes, duration);
        self.nemesis.count(kind);
        for fault in faults {
            let (from, until) = (fault.from, fault.until);
            let effect = fault.effect.to_string();
            self.trace(|| format!("FAULT {} t={from}..{until} {effect}", kind.name()));
            self.nemesis.active.push(fault);
        }
    }

    fn random_links(&mut self, nodes: &[NodeId], share: f64) -> Vec<(NodeId, NodeId)> {
        let mut links = Vec::new();
        for &a in nodes {
            for &b in nodes {
                if a != b && self.rng.gen_bool(share) {
                    links.push((a, b));
                }
            }
        }
        links
    }

    fn network_fault(&mut self, kind: FaultKind, nodes: &[NodeId], duration: u64) -> Vec<ActiveFault> {
        let (now, et) = (self.now, self.nemesis.hb_delay_ticks);
        let until = now + duration;
        let rng = &mut self.rng;
        let base = self.nemesis.profile.base_link;
        let effect = match kind {
            FaultKind::Loss | FaultKind::Duplication | FaultKind::Delay => {
                let share = rng.gen_range(0.2..=1.0);
                let links = self.random_links(nodes, share);
                let rng = &mut self.rng;
                let link = match kind {
                    FaultKind::Loss => LinkConfig { loss: rng.gen_range(0.05..0.6), ..base },
                    FaultKind::Duplication => LinkConfig { duplication: rng.gen_range(0.05..0.4), ..base },
                    _ => LinkConfig {
                        delay_max_ticks: rng.gen_range(2..=et),
                        spike: 0.05,
                        spike_max_ticks: 3 * et,
                        fifo: false,
                        ..base
                    },
                };
                Effect::Degrade(links.into_iter().map(|l| (l, link)).collect())
            }
            FaultKind::FullPartition => {
                let mut shuffled = nodes.to_vec();
                shuffled.shuffle(rng);
                let split = rng.gen_range(1..shuffled.len());
                let (left, right) = shuffled.split_at(split);
                let pairs: Vec<(NodeId, NodeId)> =
                    left.iter().flat_map(|&a| right.iter().map(move |&b| (a, b))).collect();
                Effect::Cut(both_ways(&pairs))
            }
            FaultKind::PartialPartition => {
                let share = rng.gen_range(0.2..0.6);
                let mut pairs = Vec::new();
                for (i, &a) in nodes.iter().enumerate() {
                    for &b in &nodes[i + 1..] {
                        if self.rng.gen_bool(share) {
                            pairs.push((a, b));
                        }
                    }
                }
                Effect::Cut(both_ways(&pairs))
            }
            FaultKind::OneWayLink => {
                let node = *nodes.choose(rng).expect("two nodes or more");
                let outgoing = rng.gen_bool(0.5);
                let others = nodes.iter().filter(|&&p| p != node && rng.gen_bool(0.7));
                Effect::Cut(others.map(|&p| if outgoing { (node, p) } else { (p, node) }).collect())
            }
            FaultKind::FlappingLink => {
                let pair: Vec<NodeId> = nodes.choose_multiple(rng, 2).copied().collect();
                let period_ticks = rng.gen_range(1..=et);
                Effect::Flap { links: both_ways(&[(pair[0], pair[1])]), period_ticks }
            }
            FaultKind::QuorumLoss | FaultKind::ConstrainedElection | FaultKind::Chained => {
                return self.paper_scenario(kind, nodes, until);
            }
            FaultKind::LeaderIsolation => self.isolate_leader(nodes),
            _ => unreachable!("process faults are not network faults"),
        };
        vec![ActiveFault { from: now, until, effect }]
    }

    /// The current leader of the newest configuration (the accepting leader with the highest
    /// ballot), if any.
    pub(crate) fn current_leader(&self) -> Option<NodeId> {
        let config_id = self.latest().configuration_id;
        self.nodes
            .values()
            .filter_map(|n| n.replica(config_id).map(|r| (n.pid(), r)))
            .filter(|(_, r)| r.sequence_paxos().is_accepting_leader())
            .max_by_key(|(_, r)| r.get_promise())
            .map(|(pid, _)| pid)
    }

    /// Cuts the leader (or a random member) from every other replica, both ways; with five
    /// or more replicas, half the time it keeps one peer (connectivity that is not
    /// transitive, and still no quorum). Clients are never cut: they keep reaching the old
    /// leader, which is where a stale read would show.
    fn isolate_leader(&mut self, nodes: &[NodeId]) -> Effect {
        let members = self.latest().nodes.clone();
        let leader =
            self.current_leader().unwrap_or_else(|| *members.choose(&mut self.rng).expect("members"));
        let others: Vec<NodeId> = nodes.iter().copied().filter(|&p| p != leader).collect();
        let kept = match members.len() >= 5 && self.rng.gen_bool(0.5) {
            true => others.choose(&mut self.rng).copied(),
            false => None,
        };
        let pairs: Vec<(NodeId, NodeId)> =
            others.into_iter().filter(|&p| Some(p) != kept).map(|p| (leader, p)).collect();
        Effect::Cut(both_ways(&pairs))
    }

    /// The paper's scenarios, wired as in omnipaxos-artifacts relative to the current leader.
    fn paper_scenario(&mut self, kind: FaultKind, nodes: &[NodeId], until: u64) -> Vec<ActiveFault> {
        let members = self.latest().nodes.clone();
        let leader =
            self.current_leader().unwrap_or_else(|| *members.choose(&mut self.rng).expect("members"));
        let others: Vec<NodeId> = members.iter().copied().filter(|&p| p != leader).collect();
        let Some(&pivot) = others.choose(&mut self.rng) else { return Vec::new() };
        let now = self.now;
        match kind {
            FaultKind::QuorumLoss => {
                let up: Vec<(NodeId, NodeId)> =
                    nodes.iter().filter(|&&p| p != pivot).map(|&p| (pivot, p)).collect();
                vec![ActiveFault {
                    from: now,
                    until,
                    effect: Effect::Cut(all_cut_except(nodes, &both_ways(&up))),
                }]
            }
            FaultKind::ConstrainedElection => {
                // The pivot falls behind first, then becomes the only server connected to all
                // but the (now isolated) leader.
                let lag_until = now + self.nemesis.hb_delay_ticks / 2;
                let lag = Effect::Cut(both_ways(&[(leader, pivot)]));
                let up: Vec<(NodeId, NodeId)> =
                    nodes.iter().filter(|&&p| p != pivot && p != leader).map(|&p| (pivot, p)).collect();
                let isolate = Effect::Cut(all_cut_except(nodes, &both_ways(&up)));
                vec![
                    ActiveFault { from: now, until: lag_until, effect: lag },
                    ActiveFault { from: lag_until, until: until.max(lag_until + 1), effect: isolate },
                ]
            }
            _ => vec![ActiveFault { from: now, until, effect: Effect::Cut(both_ways(&[(leader, pivot)])) }],
        }
    }

    /// Sets the network's cuts and link qualities from the faults alive now.
    pub(crate) fn apply_network_faults(&mut self) {
        let now = self.now;
        self.nemesis.active.retain(|f| f.until > now);
        if !self.nemesis.enabled {
            return;
        }
        let mut cuts = BTreeSet::new();
        self.network.reset_links(self.nemesis.profile.base_link);
        for fault in self.nemesis.active.iter().filter(|f| f.from <= now) {
            match &fault.effect {
                Effect::Cut(links) => cuts.extend(links.iter().copied()),
                Effect::Flap { links, period_ticks } => {
                    if ((now - fault.from) / period_ticks) % 2 == 1 {
                        cuts.extend(links.iter().copied());
                    }
                }
                Effect::Degrade(links) => {
                    for &((a, b), link) in links {
                        self.network.set_link(a, b, link);
                    }
                }
            }
        }
        self.network.set_cuts(cuts);
    }

    /// Scheduled restarts, then maybe one process fault.
    pub(crate) fn inject_process_faults(&mut self) -> Result<(), Violation> {
        let due: Vec<NodeId> =
            self.nemesis.restarts.iter().filter(|(_, &at)| at <= self.now).map(|(&p, _)| p).collect();
        for pid in due {
            self.nemesis.restarts.remove(&pid);
            if !self.nodes[&pid].is_up() {
                self.restart(pid)?;
            }
        }
        if !self.nemesis.enabled {
            return Ok(());
        }
        if let Some(extended) = self.nemesis.profile.extended {
            if self.rng.gen_bool(extended.replay_per_tick) && self.nemesis.allows(FaultKind::Replay) {
                self.replay_archived();
            }
            if extended.priority_per_tick > 0.0
                && self.rng.gen_bool(extended.priority_per_tick)
                && self.nemesis.allows(FaultKind::Priority)
            {
                self.change_priority();
            }
            self.extended_process_faults(extended);
        }
        if !self.rng.gen_bool(self.nemesis.profile.process_fault_per_tick) {
            return Ok(());
        }
        let extended = self.nemesis.profile.extended.is_some();
        let kind = match self.rng.gen_range(0..100) {
            40..=44 if extended => FaultKind::Amnesia,
            0..=44 => FaultKind::Crash,
            45..=59 => FaultKind::DiskFailure,
            60..=67 => FaultKind::Reconfiguration,
            68..=83 => FaultKind::Trim,
            _ => FaultKind::Snapshot,
        };
        let Some(kind) = self.nemesis.allowed_instead(kind, &PROCESS_FAULTS, &mut self.rng) else {
            return Ok(());
        };
        match kind {
            FaultKind::Amnesia if extended => self.amnesia(),
            FaultKind::Crash => self.crash_a_node(),
            FaultKind::DiskFailure => self.arm_disk_failure(),
            FaultKind::Reconfiguration => self.propose_reconfiguration(),
            FaultKind::Trim => self.trim_log(),
            FaultKind::Snapshot => self.snapshot_log(),
            _ => {}
        }
        Ok(())
    }

    fn crash_a_node(&mut self) {
        let up: Vec<NodeId> = self.nodes.values().filter(|n| n.is_up()).map(|n| n.pid()).collect();
        let members = self.latest().nodes.len();
        if self.nodes.len() - up.len() > members / 2 || up.is_empty() {
            return;
        }
        let victim = match self.current_leader() {
            Some(leader) if self.rng.gen_bool(0.4) => leader,
            _ => *up.choose(&mut self.rng).expect("non-empty"),
        };
        let choice = self.rng.gen_range(0..10);
        let (rng, losses) = (&mut self.rng, &mut self.disk_losses);
        let mut kept = Vec::new();
        self.nodes.get_mut(&victim).expect("up").crash(|disk| {
            let unflushed = disk.unflushed_calls();
            let loss = match disk.kind() {
                StorageKind::Crashable => DiskLoss::Calls(match choice {
                    0..=3 => CrashKeep::Nothing,
                    4..=5 => CrashKeep::All,
                    _ => CrashKeep::Prefix(rng.gen_range(0..=unflushed)),
                }),
                StorageKind::Persistent => DiskLoss::draw_bytes(rng, disk.possible_loss_allowed()),
            };
            kept.push(format!("{loss} of {unflushed}"));
            *losses.entry(loss.name()).or_default() += 1;
            loss
        });
        self.nemesis.count(FaultKind::Crash);
        self.network.set_down(victim, true, self.now);
        self.update_possible_loss_allowance();
        let restart_at = self.now + self.nemesis.restart_delay(&mut self.rng);
        self.nemesis.schedule_restart(victim, restart_at);
        self.trace(|| {
            format!("FAULT crash node {victim} keeping {}; restart at t={restart_at}", kept.join(", "))
        });
    }

    /// The extended faults of issues 8, 9 and 11 that happen every tick with a small chance:
    /// due halves of priority flips, new flips, corrupted heartbeat replies, and the
    /// operator replacing a learner.
    fn extended_process_faults(&mut self, extended: ExtendedProfile) {
        let now = self.now;
        let due: Vec<(u64, NodeId, u32)> =
            self.nemesis.scheduled_priorities.iter().copied().filter(|&(at, _, _)| at <= now).collect();
        self.nemesis.scheduled_priorities.retain(|&(at, _, _)| at > now);
        for (_, pid, priority) in due {
            if let Some(config_id) =
                self.nodes.get_mut(&pid).filter(|n| n.is_up()).and_then(|n| n.set_priority(priority))
            {
                self.trace(|| {
                    format!("FAULT node {pid} set_priority({priority}) in configuration {config_id} (flip)")
                });
            }
        }
        if extended.priority_flips && self.nemesis.allows(FaultKind::PriorityFlip) {
            self.maybe_priority_flip();
        }
        if extended.corrupt_per_tick > 0.0
            && self.rng.gen_bool(extended.corrupt_per_tick)
            && self.nemesis.allows(FaultKind::CorruptReply)
        {
            let up: Vec<NodeId> = self.nodes.values().filter(|n| n.is_up()).map(|n| n.pid()).collect();
            self.nemesis.corrupt_next_reply = up.choose(&mut self.rng).copied();
        }
        if self.nemesis.learner_replacements < LEARNER_REPLACEMENTS_MAX
            && self.rng.gen_bool(REPLACE_LEARNER_PER_TICK)
            && self.nemesis.allows(FaultKind::ReplaceLearner)
        {
            self.replace_learner();
        }
    }

    /// A priority flip at a configuration's first election (no leader known yet), issue 8's
    /// finding 3 as a fault: a member X raises its priority; for two election timeouts only a
    /// peer F hears heartbeat replies (every link into another member is cut), so F alone elects
    /// X's raised ballot while X, hearing nobody, does not lead yet; X lowers its priority
    /// again in between; then F is cut off from everyone for 2–6 election timeouts while the
    /// others elect. A ballot once announced must never decrease: F must not be left following
    /// X's raised ballot after the cut heals.
    fn maybe_priority_flip(&mut self) {
        let latest = self.latest().clone();
        let config_id = latest.configuration_id;
        if self.nemesis.flipped.contains(&config_id) {
            return;
        }
        let young = latest.nodes.iter().all(|p| {
            self.nodes
                .get(p)
                .and_then(|n| n.replica(config_id))
                .is_some_and(|r| r.ballot_leader_election().get_current_leader().is_none())
        });
        if !young {
            return;
        }
        self.nemesis.flipped.insert(config_id);
        let started: Vec<NodeId> = latest
            .nodes
            .iter()
            .copied()
            .filter(|p| self.nodes.get(p).is_some_and(|n| n.is_up() && n.newest_config() == Some(config_id)))
            .collect();
        if started.len() < 2 || !self.rng.gen_bool(0.5) {
            return;
        }
        let pair: Vec<NodeId> = started.choose_multiple(&mut self.rng, 2).copied().collect();
        let (raised, follower) = (pair[0], pair[1]);
        let priority = self.rng.gen_range(1..=3);
        self.nodes.get_mut(&raised).expect("up").set_priority(priority);
        let et = self.nemesis.hb_delay_ticks;
        let now = self.now;
        // The follower's first round ends within an election timeout: it elects the raised
        // ballot then, and must be cut off before its second round ends (it would take over).
        let lower_at = now + et;
        self.nemesis.scheduled_priorities.push((lower_at, raised, 0));
        let nodes: Vec<NodeId> = self.nodes.keys().copied().collect();
        self.nemesis.replies_only_to = Some((follower, lower_at));
        let cut_off_until = lower_at + self.rng.gen_range(2 * et..=6 * et);
        let isolated: Vec<(NodeId, NodeId)> =
            nodes.iter().filter(|&&p| p != follower).map(|&p| (follower, p)).collect();
        let faults =
            [ActiveFault { from: lower_at, until: cut_off_until, effect: Effect::Cut(both_ways(&isolated)) }];
        self.nemesis.count(FaultKind::PriorityFlip);
        self.trace(|| {
            format!(
                "FAULT priority flip in configuration {config_id}: node {raised} set_priority({priority}), \
                 back to 0 at t={lower_at}; only node {follower} hears replies until then, then it is cut \
                 off until t={cut_off_until}"
            )
        });
        self.nemesis.active.extend(faults);
    }

    /// Destroys (or, on the persistent backend, truncates) the disk of one member's replica of
    /// the newest configuration, if no replica of it is (or may become) a learner: the node
    /// crashes if it was up, and restarts later as a learner (see `Node::restart`).
    fn amnesia(&mut self) {
        let latest = self.latest().clone();
        let config_id = latest.configuration_id;
        if latest.nodes.iter().any(|p| self.nodes.get(p).is_some_and(|n| n.may_be_learner(config_id))) {
            return;
        }
        // A learner starts from an empty log; once the log was trimmed (without a snapshot)
        // nobody can send it the trimmed prefix: the core has no way to start a learner past it.
        if self.nemesis.trimmed.contains(&config_id) {
            return;
        }
        let candidates: Vec<NodeId> = latest
            .nodes
            .iter()
            .copied()
            .filter(|p| self.nodes.get(p).is_some_and(|n| n.has_config(config_id)))
            .collect();
        let victim = match self.current_leader() {
            Some(leader) if self.rng.gen_bool(0.4) => leader,
            _ => match candidates.choose(&mut self.rng) {
                Some(&pid) => pid,
                None => return,
            },
        };
        let down = self.nodes.values().filter(|n| !n.is_up()).count();
        let victim_up = self.nodes[&victim].is_up();
        if victim_up && down + 1 > latest.nodes.len() / 2 {
            return;
        }
        let amnesia = match self.config.storage == StorageKind::Persistent && self.rng.gen_bool(0.5) {
            true => Amnesia::Truncated { seed: self.rng.gen() },
            false => Amnesia::Wiped,
        };
        if victim_up {
            let (rng, losses) = (&mut self.rng, &mut self.disk_losses);
            self.nodes.get_mut(&victim).expect("up").crash(|disk| {
                let loss = match disk.kind() {
                    StorageKind::Crashable => DiskLoss::Calls(CrashKeep::All),
                    StorageKind::Persistent => DiskLoss::draw_bytes(rng, disk.possible_loss_allowed()),
                };
                *losses.entry(loss.name()).or_default() += 1;
                loss
            });
            self.network.set_down(victim, true, self.now);
            let restart_at = self.now + self.nemesis.restart_delay(&mut self.rng);
            self.nemesis.schedule_restart(victim, restart_at);
        }
        let Some((damaged, what)) = self.nodes.get_mut(&victim).expect("exists").suffer_amnesia(amnesia)
        else {
            return;
        };
        self.checker.forget_replica(victim, damaged);
        self.nemesis.count(FaultKind::Amnesia);
        *self.disk_losses.entry("amnesia").or_default() += 1;
        self.update_possible_loss_allowance();
        let restart_at = self.nemesis.restarts.get(&victim).copied();
        self.trace(|| {
            format!(
                "FAULT amnesia: node {victim}'s disk of configuration {damaged} {amnesia}: {what}; restart at t={restart_at:?}"
            )
        });
    }

    /// The operator replaces a learner of the newest configuration by a reconfiguration: the
    /// same members (the learner's node gets a fresh replica, a voter, in the next
    /// configuration), or, half the time, a new node in its place.
    fn replace_learner(&mut self) {
        let latest = self.latest().clone();
        let Some(&learner) = latest
            .nodes
            .iter()
            .find(|p| self.nodes.get(p).is_some_and(|n| n.is_learner_in(latest.configuration_id)))
        else {
            return;
        };
        let proposers: Vec<NodeId> = latest
            .nodes
            .iter()
            .copied()
            .filter(|&p| p != learner && self.nodes.get(&p).is_some_and(|n| n.is_up()))
            .collect();
        let Some(&proposer) = proposers.choose(&mut self.rng) else { return };
        let mut nodes = latest.nodes.clone();
        if self.rng.gen_bool(0.5) {
            let newcomer = self.nodes.keys().next_back().copied().unwrap_or(0).max(learner) + 1;
            nodes.retain(|&p| p != learner);
            nodes.push(newcomer);
            nodes.sort_unstable();
        }
        let next =
            ClusterConfig { configuration_id: latest.configuration_id + 1, nodes, flexible_quorum: None };
        let Some(replica) =
            self.nodes.get_mut(&proposer).and_then(|n| n.replica_mut(latest.configuration_id))
        else {
            return;
        };
        if replica.reconfigure(next.clone(), None).is_ok() {
            self.nemesis.learner_replacements += 1;
            self.nemesis.count(FaultKind::ReplaceLearner);
            self.trace(|| {
                format!(
                    "FAULT node {proposer} proposes configuration {} {:?} to replace learner {learner}",
                    next.configuration_id, next.nodes
                )
            });
        }
    }

    /// What the nemesis does to a message about to be delivered to `to`: nothing; dropped (a
    /// heartbeat reply while a priority flip lets only one node hear replies); or corrupted
    /// (a heartbeat reply whose ballot round becomes `u32::MAX`, which no correct server
    /// reaches: a correct receiver drops it).
    pub(crate) fn filter_delivery(&mut self, to: NodeId, message: NodeMessage) -> Option<NodeMessage> {
        let is_reply = matches!(&message, Message::BLE(BLEMessage { msg: HeartbeatMsg::Reply(_), .. }));
        if let Some((hears, until)) = self.nemesis.replies_only_to {
            if self.now >= until {
                self.nemesis.replies_only_to = None;
            } else if is_reply && to != hears {
                let line = crate::sim::show_message(&message);
                self.trace(|| format!("dropped (only node {hears} hears heartbeat replies) {line}"));
                return None;
            }
        }
        if !is_reply || self.nemesis.corrupt_next_reply != Some(to) {
            return Some(message);
        }
        let Message::BLE(mut ble) = message else { return Some(message) };
        let HeartbeatMsg::Reply(reply) = &mut ble.msg else { return Some(Message::BLE(ble)) };
        reply.ballot.n = u32::MAX;
        self.nemesis.corrupt_next_reply = None;
        self.nemesis.count(FaultKind::CorruptReply);
        let line = ble.to_string();
        self.trace(|| format!("FAULT corrupted: {line}"));
        Some(Message::BLE(ble))
    }

    /// Allows a crash that may report a possible loss only on replicas of configurations with
    /// no other replica that is, or may become, a learner: at most one per configuration.
    /// And not in a configuration whose log was trimmed: a learner starts over an empty log and
    /// no replica could send it the trimmed prefix.
    pub(crate) fn update_possible_loss_allowance(&self) {
        for node in self.nodes.values().filter(|n| n.is_up()) {
            node.set_possible_loss_allowed(|config_id| {
                let trimmed = self.nemesis.trimmed.contains(&config_id) && !node.is_learner_in(config_id);
                !trimmed
                    && !self
                        .nodes
                        .values()
                        .any(|other| other.pid() != node.pid() && other.may_be_learner(config_id))
            });
        }
    }

    /// Replays archived messages: 60 % of the time into the node that restarted last (a
    /// message queued for it before its crash), otherwise into any node.
    fn replay_archived(&mut self) {
        let last_restarted = self
            .nemesis
            .restarted
            .iter()
            .filter(|(pid, _)| self.nodes.get(pid).is_some_and(|n| n.is_up()))
            .max_by_key(|(_, &at)| at)
            .map(|(&pid, _)| pid);
        let receiver = last_restarted.filter(|_| self.rng.gen_bool(0.6));
        let replayed = self.network.replay(receiver, self.now, &mut self.rng);
        if replayed.is_empty() {
            return;
        }
        self.nemesis.count(FaultKind::Replay);
        for ((_, _, message), at) in replayed {
            self.trace(|| format!("FAULT replay due t={at}: {}", crate::sim::show_message(&message)));
        }
    }

    /// Changes the leader priority of a live node at runtime.
    fn change_priority(&mut self) {
        let up: Vec<NodeId> = self.nodes.values().filter(|n| n.is_up()).map(|n| n.pid()).collect();
        let Some(&pid) = up.choose(&mut self.rng) else { return };
        let priority = self.rng.gen_range(0..=3);
        let Some(config_id) = self.nodes.get_mut(&pid).expect("up").set_priority(priority) else { return };
        self.nemesis.count(FaultKind::Priority);
        self.trace(|| format!("FAULT node {pid} set_priority({priority}) in configuration {config_id}"));
    }

    fn arm_disk_failure(&mut self) {
        let up: Vec<NodeId> = self.nodes.values().filter(|n| n.is_up()).map(|n| n.pid()).collect();
        let Some(&pid) = up.choose(&mut self.rng) else { return };
        let failure = if self.config.storage == StorageKind::Persistent && self.rng.gen_bool(0.6) {
            // Only the persistent backend has crash points inside a flush; the crashable
            // backend's draws stay as they were, so its seeds replay unchanged.
            ArmedFailure::CrashInFlush { seed: self.rng.gen() }
        } else if self.rng.gen_bool(0.5) {
            ArmedFailure::Write(self.rng.gen_range(0..20))
        } else {
            ArmedFailure::Flush(self.rng.gen_range(0..5))
        };
        self.nodes.get_mut(&pid).expect("up").arm_storage_failure(failure);
        self.nemesis.count(FaultKind::DiskFailure);
        self.trace(|| format!("FAULT node {pid} disk armed: {failure:?}"));
    }

    fn propose_reconfiguration(&mut self) {
        if self.nemesis.reconfigurations_proposed >= self.config.reconfigurations_max {
            return;
        }
        let latest = self.latest().clone();
        let proposer = latest.nodes[self.rng.gen_range(0..latest.nodes.len())];
        let mut nodes = latest.nodes.clone();
        if self.rng.gen_bool(0.5) {
            let newcomer = self
                .nodes
                .keys()
                .next_back()
                .copied()
                .unwrap_or(0)
                .max(*nodes.iter().max().expect("members"))
                + 1;
            let leaving = self.rng.gen_range(0..nodes.len());
            nodes[leaving] = newcomer;
            nodes.sort_unstable();
        }
        let next =
            ClusterConfig { configuration_id: latest.configuration_id + 1, nodes, flexible_quorum: None };
        let Some(replica) =
            self.nodes.get_mut(&proposer).and_then(|n| n.replica_mut(latest.configuration_id))
        else {
            return;
        };
        let result = replica.reconfigure(next.clone(), None);
        if result.is_ok() {
            self.nemesis.reconfigurations_proposed += 1;
            self.nemesis.count(FaultKind::Reconfiguration);
            self.trace(|| {
                format!(
                    "FAULT node {proposer} proposes configuration {} {:?}",
                    next.configuration_id, next.nodes
                )
            });
        }
    }

    /// Trims the newest configuration's log at its leader, no further than every member's
    /// application checkpoint (an application must not let its replica drop entries it may
    /// still need to replay).
    fn trim_log(&mut self) {
        let Some(leader) = self.current_leader() else { return };
        let latest = self.latest().clone();
        let mut bound = u64::MAX;
        for pid in &latest.nodes {
            let position = self.nodes.get(pid).map(|n| n.checkpoint_position());
            bound = bound.min(match position {
                Some((config_id, applied)) if config_id == latest.configuration_id => applied,
                Some((config_id, _)) if config_id > latest.configuration_id => u64::MAX,
                _ => 0,
            });
            // A learner learns the decided log from its own decided index on, and a trimmed
            // prefix has no snapshot to send it: trim no further than it holds.
            if let Some(node) = self.nodes.get(pid).filter(|n| n.may_be_learner(latest.configuration_id)) {
                bound = bound.min(node.replica(latest.configuration_id).map_or(0, |r| r.get_decided_idx()));
            }
        }
        let Some(replica) = self.nodes.get_mut(&leader).and_then(|n| n.replica_mut(latest.configuration_id))
        else {
            return;
        };
        let compacted = replica.get_compacted_idx();
        let bound = bound.min(replica.get_decided_idx());
        if bound <= compacted {
            return;
        }
        let idx = self.rng.gen_range(compacted + 1..=bound);
        if replica.trim(Some(idx)).is_ok() {
            self.nemesis.trimmed.insert(latest.configuration_id);
            self.update_possible_loss_allowance();
            self.nemesis.count(FaultKind::Trim);
            self.trace(|| {
                format!("FAULT leader {leader} trims configuration {} to {idx}", latest.configuration_id)
            });
        }
    }

    fn snapshot_log(&mut self) {
        let latest = self.latest().configuration_id;
        let candidates: Vec<NodeId> =
            self.nodes.values().filter(|n| n.replica(latest).is_some()).map(|n| n.pid()).collect();
        let Some(&pid) = candidates.choose(&mut self.rng) else { return };
        let local_only = self.rng.gen_bool(0.5);
        let replica = self.nodes.get_mut(&pid).and_then(|n| n.replica_mut(latest)).expect("has the replica");
        let (compacted, decided) = (replica.get_compacted_idx(), replica.get_decided_idx());
        if decided <= compacted {
            return;
        }
        let idx =
            if self.rng.gen_bool(0.5) { None } else { Some(self.rng.gen_range(compacted + 1..=decided)) };
        if replica.snapshot(idx, local_only).is_ok() {
            self.nemesis.count(FaultKind::Snapshot);
            self.trace(|| {
                format!(
                    "FAULT node {pid} snapshots configuration {latest} to {idx:?} local_only={local_only}"
                )
            });
        }
    }
}
