//! One run of the adversarial mode: the replicas, the network with its archive, the
//! scheduler's actions, and the step loop.
//!
//! ```text
//!   take_outgoing_messages(p) ──► archive (every message ever sent, numbered #id)
//!                                    └─► in flight (ids; a duplicate is the id twice)
//!   deliver: a random in-flight id to its receiver (if up) ── drop ── duplicate
//!   replay: any archived id to its original receiver, at any later step
//! ```
//!
//! A crashed node stays down until a restart action (or the calm phase) restarts it; messages
//! in flight to it wait. Every call into the core runs under [`super::guard`].

use std::collections::BTreeMap;

use omnipaxos_core::{
    ballot_leader_election::Ballot,
    sequence_paxos::{ProposalOutcome, SequencePaxosConfig},
    storage::ClusterConfig,
    util::{ConfigurationId, NodeId, ProposalId},
};
use rand::{
    distributions::WeightedIndex, prelude::Distribution, rngs::SmallRng, seq::SliceRandom, Rng, SeedableRng,
};

use super::{checker::Checker, guard, AdvMessage, AdvReplica, AdversaryConfig, AdversaryReport, Liveness};
use crate::{
    invariants::Violation,
    storage::{CrashedDisk, SimStorage},
};

/// The configuration every replica of a run belongs to.
pub(super) const CONFIG_ID: ConfigurationId = 1;
/// Most messages in flight; beyond it the network loses new ones (a bounded queue).
const IN_FLIGHT_MAX: usize = 4096;

/// One kind of step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Action {
    Deliver,
    Drop,
    Duplicate,
    Replay,
    Leader,
    Append,
    Tick,
    Flush,
    Crash,
    Restart,
    Reconnected,
    FailRecovery,
    Trim,
    Snapshot,
    Reconfigure,
    DiskFailure,
    Hostile,
    ForeignDisk,
}

/// Every action with its base weight (per mille of a typical step mix).
const ACTIONS: [(Action, u32); 18] = [
    (Action::Deliver, 400),
    (Action::Drop, 25),
    (Action::Duplicate, 20),
    (Action::Replay, 40),
    (Action::Leader, 12),
    (Action::Append, 100),
    (Action::Tick, 80),
    (Action::Flush, 160),
    (Action::Crash, 6),
    (Action::Restart, 25),
    (Action::Reconnected, 10),
    (Action::FailRecovery, 5),
    (Action::Trim, 8),
    (Action::Snapshot, 8),
    (Action::Reconfigure, 6),
    (Action::DiskFailure, 5),
    (Action::Hostile, 20),
    (Action::ForeignDisk, 3),
];

impl Action {
    /// The name used in traces and counts.
    pub(super) fn name(self) -> &'static str {
        match self {
            Action::Deliver => "deliver",
            Action::Drop => "drop",
            Action::Duplicate => "duplicate",
            Action::Replay => "replay",
            Action::Leader => "handle_leader",
            Action::Append => "append",
            Action::Tick => "tick",
            Action::Flush => "take_outgoing",
            Action::Crash => "crash",
            Action::Restart => "restart",
            Action::Reconnected => "reconnected",
            Action::FailRecovery => "fail_recovery",
            Action::Trim => "trim",
            Action::Snapshot => "snapshot",
            Action::Reconfigure => "reconfigure",
            Action::DiskFailure => "disk_failure",
            Action::Hostile => "hostile",
            Action::ForeignDisk => "foreign_disk",
        }
    }

    /// Actions every seed keeps: without them nothing happens.
    fn is_essential(self) -> bool {
        self.is_lull() || self == Action::Leader
    }

    /// The actions of a lull: a healthy cluster's inputs.
    fn is_lull(self) -> bool {
        matches!(self, Action::Deliver | Action::Flush | Action::Append | Action::Tick)
    }
}

/// The seed's choices of cluster, replica settings and how hard to push.
#[derive(Clone, Debug)]
pub struct Profile {
    /// The members, ascending; sometimes not contiguous (e.g. 2, 5, 9).
    pub pids: Vec<NodeId>,
    /// `buffer_size` of every replica (small in about a third of the seeds).
    pub buffer_size: usize,
    /// `batch_size` of every replica.
    pub batch_size: usize,
    /// `piggyback_decide` of every replica.
    pub piggyback_decide: bool,
    /// `resend_message_tick_timeout`.
    pub resend_ticks: u64,
    /// `flush_batch_tick_timeout`.
    pub flush_batch_ticks: u64,
    /// `max_sync_entries`: a handful in a third of the seeds, so followers catch up in chunks.
    /// Derived from the seed, not drawn: the other choices of a seed stay as they were.
    pub max_sync_entries: usize,
    /// Some handle_leader ballots have rounds near `u32::MAX`.
    pub extreme_rounds: bool,
    /// Chance that a delivery takes the oldest deliverable message instead of a random one.
    pub oldest_first: f64,
    /// Chance that a node flushes (take_outgoing_messages) right after an input.
    pub flush_after_input: f64,
    /// Share of the adversarial phase's windows that are lulls (no faults, no leader changes).
    pub lull_share: f64,
    pub(super) weights: Vec<u32>,
}

impl Profile {
    /// Draws the profile of `seed` with `nodes` replicas from `rng` (seeded with `seed`).
    pub fn draw(rng: &mut SmallRng, seed: u64, nodes: usize) -> Profile {
        let pids = if rng.gen_bool(0.6) {
            (1..=nodes as NodeId).collect()
        } else {
            let mut pids: Vec<NodeId> = (1..=3 * nodes as NodeId + 6)
                .collect::<Vec<_>>()
                .choose_multiple(rng, nodes)
                .copied()
                .collect();
            pids.sort_unstable();
            pids
        };
        let buffer_size = match rng.gen_range(0..3) {
            0 => rng.gen_range(1..=8),
            1 => 64,
            _ => 100_000,
        };
        let batch_size = if rng.gen_bool(0.5) { 1 } else { rng.gen_range(1..=buffer_size.min(16)) };
        let hostile = rng.gen_bool(0.3);
        let reconfigure = rng.gen_bool(0.25);
        let weights = ACTIONS
            .iter()
            .map(|&(action, base)| {
                let enabled = match action {
                    Action::Hostile => hostile,
                    Action::Reconfigure => reconfigure,
                    // Drawn last, below: seeds without it run as before it existed.
                    Action::ForeignDisk => false,
                    _ => action.is_essential() || rng.gen_bool(0.8),
                };
                if enabled {
                    // Tenths: from a tenth of the base weight (rare) to four times it (dominant).
                    base * [1, 2, 5, 10, 15, 20, 30, 40].choose(rng).expect("non-empty") / 10 + 1
                } else {
                    0
                }
            })
            .collect();
        let mut profile = Profile {
            pids,
            buffer_size,
            batch_size,
            piggyback_decide: rng.gen_bool(0.5),
            resend_ticks: rng.gen_range(2..=8),
            flush_batch_ticks: rng.gen_range(1..=4),
            max_sync_entries: if seed % 3 == 0 { 1 + (seed / 3 % 8) as usize } else { 4096 },
            extreme_rounds: rng.gen_bool(0.1),
            oldest_first: *[0.0, 0.5, 0.9].choose(rng).expect("non-empty"),
            flush_after_input: *[0.0, 0.3, 0.6, 0.9].choose(rng).expect("non-empty"),
            lull_share: *[0.0, 0.3, 0.5, 0.7].choose(rng).expect("non-empty"),
            weights,
        };
        // A generator of its own: the main stream, and so every seed without the action, stays
        // as it was before the action existed.
        let mut side = SmallRng::seed_from_u64(seed ^ 0x6d69_736d_6174_6368);
        if side.gen_bool(0.1) {
            let (i, (_, base)) =
                ACTIONS.iter().enumerate().find(|(_, (a, _))| *a == Action::ForeignDisk).expect("listed");
            profile.weights[i] =
                base * [1, 2, 5, 10, 15, 20, 30, 40].choose(&mut side).expect("non-empty") / 10 + 1;
        }
        profile
    }

    /// The configuration of `pid`'s replica.
    fn replica_config(&self, pid: NodeId) -> SequencePaxosConfig {
        let mut config = SequencePaxosConfig::default();
        config.set_configuration_id(CONFIG_ID);
        config.set_pid(pid);
        config.set_peers(self.pids.iter().copied().filter(|&p| p != pid).collect());
        config.set_buffer_size(self.buffer_size);
        config.set_batch_size(self.batch_size);
        config.set_piggyback_decide(self.piggyback_decide);
        config.set_resend_message_tick_timeout(self.resend_ticks);
        config.set_flush_batch_tick_timeout(self.flush_batch_ticks);
        config.set_max_sync_entries(self.max_sync_entries);
        config
    }

    fn weight(&self, wanted: Action) -> u32 {
        ACTIONS.iter().zip(&self.weights).find(|((a, _), _)| *a == wanted).map_or(0, |(_, &w)| w)
    }
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pids {:?} buffer_size {} batch_size {} piggyback_decide {} resend {} flush_batch {} hostile {} reconfigure {} mismatched_storage {} extreme_rounds {} oldest_first {} flush_after_input {} lull_share {}",
            self.pids,
            self.buffer_size,
            self.batch_size,
            self.piggyback_decide,
            self.resend_ticks,
            self.flush_batch_ticks,
            self.weight(Action::Hostile) > 0,
            self.weight(Action::Reconfigure) > 0,
            self.weight(Action::ForeignDisk) > 0,
            self.extreme_rounds,
            self.oldest_first,
            self.flush_after_input,
            self.lull_share
        )
    }
}

/// One simulated server.
pub(super) struct Node {
    pub(super) config: SequencePaxosConfig,
    /// The running replica; `None` while the node is down.
    pub(super) replica: Option<AdvReplica>,
    /// The disk a crash left, until the restart opens it.
    pub(super) disk: Option<CrashedDisk>,
    /// A disk failure is armed: a stop is expected.
    pub(super) armed: bool,
    /// The last error a core call returned.
    pub(super) last_error: Option<String>,
}

/// Where a delivered message comes from.
#[derive(Clone, Copy, Debug)]
pub(super) enum Source {
    /// The archive, as a first delivery (`deliver`) or a replay.
    Archive(usize),
    /// The list of hostile messages.
    Hostile(usize),
}

/// One run in progress.
pub(super) struct World {
    pub(super) config: AdversaryConfig,
    pub(super) profile: Profile,
    pub(super) rng: SmallRng,
    pub(super) step: u64,
    pub(super) nodes: BTreeMap<NodeId, Node>,
    /// Every message ever sent, by id.
    pub(super) archive: Vec<AdvMessage>,
    /// Ids of archived messages in flight.
    pub(super) in_flight: Vec<usize>,
    /// Ids of archived messages per directed link, in send order.
    pub(super) by_link: BTreeMap<(NodeId, NodeId), Vec<usize>>,
    /// Per node, the archive length when it last restarted: older messages to it are stale.
    pub(super) restarted_at: BTreeMap<NodeId, usize>,
    /// Every hostile message injected, with the replica it was delivered to.
    pub(super) hostile: Vec<(NodeId, AdvMessage)>,
    pub(super) next_value: u64,
    /// Every ballot handed to handle_leader (stale ones are announced again).
    pub(super) led: Vec<Ballot>,
    /// The highest ballot of this configuration any node promised or was told leads.
    pub(super) ceiling: Ballot,
    pub(super) checker: Checker,
    pub(super) actions: BTreeMap<&'static str, u64>,
    pub(super) liveness: Liveness,
    pub(super) tolerated: Vec<Violation>,
    pub(super) trace: Option<Vec<String>>,
    pub(super) outgoing: Vec<AdvMessage>,
    /// Nodes a core call reached in this step (for `flush_after_input`).
    pub(super) touched: Vec<NodeId>,
    pub(super) outcomes: Vec<(ProposalId, ProposalOutcome)>,
    /// The next configurations a StopSign may name.
    pub(super) next_configs: [ClusterConfig; 2],
}

impl World {
    pub(super) fn new(config: AdversaryConfig) -> World {
        let mut rng = SmallRng::seed_from_u64(config.seed);
        let profile = Profile::draw(&mut rng, config.seed, config.nodes);
        let nodes = profile
            .pids
            .iter()
            .map(|&pid| {
                #[allow(unused_mut)]
                let mut replica_config = profile.replica_config(pid);
                #[cfg(feature = "mutations")]
                replica_config.set_mutation(config.mutation);
                let node = Node {
                    config: replica_config,
                    replica: None,
                    disk: None,
                    armed: false,
                    last_error: None,
                };
                (pid, node)
            })
            .collect();
        let newcomer = profile.pids.last().copied().unwrap_or(0) + 1;
        let mut replaced = profile.pids.clone();
        replaced[0] = newcomer;
        let next_configs = [
            ClusterConfig {
                configuration_id: CONFIG_ID + 1,
                nodes: profile.pids.clone(),
                flexible_quorum: None,
            },
            ClusterConfig { configuration_id: CONFIG_ID + 2, nodes: replaced, flexible_quorum: None },
        ];
        World {
            trace: config.trace.then(Vec::new),
            config,
            profile,
            rng,
            step: 0,
            nodes,
            archive: Vec::new(),
            in_flight: Vec::new(),
            by_link: BTreeMap::new(),
            restarted_at: BTreeMap::new(),
            hostile: Vec::new(),
            next_value: 1,
            led: Vec::new(),
            ceiling: Ballot::default(),
            checker: Checker::default(),
            actions: BTreeMap::new(),
            liveness: Liveness::NotRun,
            tolerated: Vec::new(),
            outgoing: Vec::new(),
            touched: Vec::new(),
            outcomes: Vec::new(),
            next_configs,
        }
    }

    /// Runs both phases and reports.
    pub(super) fn run(mut self) -> AdversaryReport {
        let profile = self.profile.to_string();
        let storage = self.config.storage;
        self.trace(|| format!("PROFILE {profile} storage {storage}"));
        let outcome =
            self.start_all().and_then(|()| self.adversarial_phase()).and_then(|()| self.calm_phase());
        let violation = outcome.err();
        if let Some(v) = &violation {
            let line = format!("VIOLATION {v}");
            self.trace(|| line);
        }
        AdversaryReport {
            seed: self.config.seed,
            nodes: self.config.nodes,
            profile,
            violation,
            tolerated: std::mem::take(&mut self.tolerated),
            liveness: self.liveness,
            steps: self.step,
            actions: std::mem::take(&mut self.actions),
            decided: self.checker.decided_len(),
            trace: self.trace.take().unwrap_or_default(),
        }
    }

    fn start_all(&mut self) -> Result<(), Violation> {
        for pid in self.profile.pids.clone() {
            let storage = SimStorage::new(self.config.storage, pid, CONFIG_ID);
            self.open_replica(pid, storage)?;
        }
        self.after_step()
    }

    /// Alternates storms (every action of the seed's mix) and lulls (only deliveries, flushes,
    /// appends and ticks, so that a leader makes progress and there are decisions for stale
    /// messages to contradict), each a random number of steps long.
    fn adversarial_phase(&mut self) -> Result<(), Violation> {
        let storm = WeightedIndex::new(&self.profile.weights).expect("the essential actions have weight");
        let lull_weights: Vec<u32> = ACTIONS
            .iter()
            .zip(&self.profile.weights)
            .map(|((action, _), &w)| if action.is_lull() { w } else { 0 })
            .collect();
        let lull = WeightedIndex::new(&lull_weights).expect("the lull actions have weight");
        let mut storming = true;
        let mut window_end = 0;
        for _ in 0..self.config.steps {
            if self.step >= window_end {
                storming = !storming || self.rng.gen_bool(1.0 - self.profile.lull_share);
                window_end = self.step + self.rng.gen_range(20..=200);
                let kind = if storming { "STORM" } else { "LULL" };
                self.trace(|| format!("{kind} until step {window_end}"));
            }
            self.step += 1;
            self.checker.set_step(self.step);
            let choose = if storming { &storm } else { &lull };
            let action = ACTIONS[choose.sample(&mut self.rng)].0;
            *self.actions.entry(action.name()).or_default() += 1;
            self.act(action)?;
            self.after_step()?;
            self.maybe_flush_touched()?;
        }
        Ok(())
    }

    /// A node's loop usually flushes right after an input: each node an input reached flushes
    /// now with the seed's `flush_after_input` chance, as a step of its own. Otherwise its
    /// writes stay unflushed (and its messages unsent) until a later take_outgoing, or a crash.
    fn maybe_flush_touched(&mut self) -> Result<(), Violation> {
        let mut touched = std::mem::take(&mut self.touched);
        touched.sort_unstable();
        touched.dedup();
        for pid in touched {
            if self.rng.gen_bool(self.profile.flush_after_input) {
                self.step += 1;
                self.checker.set_step(self.step);
                self.flush(pid)?;
                self.after_step()?;
            }
        }
        self.touched.clear();
        Ok(())
    }

    fn act(&mut self, action: Action) -> Result<(), Violation> {
        match action {
            Action::Deliver => self.deliver_one(),
            Action::Drop => self.drop_one(),
            Action::Duplicate => self.duplicate_one(),
            Action::Replay => self.replay_one(),
            Action::Leader => self.announce_leader(),
            Action::Append => self.on_random_up(|w, pid| w.append(pid)),
            Action::Tick => self.tick_some(),
            Action::Flush => self.flush_some(),
            Action::Crash => self.crash_one(),
            Action::Restart => self.restart_one(),
            Action::Reconnected => self.on_random_up(|w, pid| w.reconnected(pid)),
            Action::FailRecovery => self.on_random_up(|w, pid| w.fail_recovery(pid)),
            Action::Trim | Action::Snapshot => self.on_random_up(|w, pid| w.compact(pid, action)),
            Action::Reconfigure => self.on_random_up(|w, pid| w.reconfigure(pid)),
            Action::DiskFailure => self.on_random_up(|w, pid| w.arm_disk_failure(pid)),
            Action::Hostile => self.on_random_up(|w, pid| w.inject_hostile(pid)),
            Action::ForeignDisk => self.on_random_up(|w, pid| w.open_foreign_disk(pid)),
        }
    }

    /// Adds a line to the trace, if one is kept; `line` is only built then.
    pub(super) fn trace(&mut self, line: impl FnOnce() -> String) {
        if let Some(trace) = &mut self.trace {
            let line = format!("s={} {}", self.step, line());
            if self.config.trace_print {
                println!("{line}");
            } else {
                trace.push(line);
            }
        }
    }

    pub(super) fn tracing(&self) -> bool {
        self.trace.is_some()
    }

    pub(super) fn violation(&self, property: &'static str, detail: String) -> Violation {
        Violation { tick: self.step, property, detail }
    }

    /// `Ok` if `v`'s property is tolerated (the first of each is kept), else `Err(v)`.
    pub(super) fn tolerate(&mut self, v: Violation) -> Result<(), Violation> {
        if !self.config.tolerate.iter().any(|p| p == v.property) {
            return Err(v);
        }
        if !self.tolerated.iter().any(|t| t.property == v.property) {
            let line = format!("TOLERATED {v}");
            self.trace(|| line);
            self.tolerated.push(v);
        }
        Ok(())
    }

    pub(super) fn up_pids(&self) -> Vec<NodeId> {
        self.nodes.iter().filter(|(_, n)| n.replica.is_some()).map(|(&p, _)| p).collect()
    }

    fn on_random_up(
        &mut self,
        f: impl FnOnce(&mut World, NodeId) -> Result<(), Violation>,
    ) -> Result<(), Violation> {
        let up = self.up_pids();
        match up.choose(&mut self.rng) {
            Some(&pid) => f(self, pid),
            None => Ok(()),
        }
    }

    /// Runs one core call on `pid`'s replica (if it is up) under [`guard`]; a panic is the
    /// violation `no_panic_on_input`, an error is remembered for the stop check.
    pub(super) fn call<R, E: std::fmt::Display>(
        &mut self,
        pid: NodeId,
        what: &str,
        f: impl FnOnce(&mut AdvReplica) -> Result<R, E>,
    ) -> Result<Option<R>, Violation> {
        let node = self.nodes.get_mut(&pid).expect("a member");
        let Some(replica) = node.replica.as_mut() else { return Ok(None) };
        match guard(|| f(replica)) {
            Ok(Ok(value)) => {
                self.touched.push(pid);
                Ok(Some(value))
            }
            Ok(Err(e)) => {
                let text = format!("{what}: {e}");
                node.last_error = Some(text.clone());
                self.trace(|| format!("node {pid} {text}"));
                Ok(None)
            }
            Err(panic) => {
                self.tolerate(
                    self.violation("no_panic_on_input", format!("node {pid} panicked in {what}: {panic}")),
                )?;
                self.crash(pid, "panicked:");
                Ok(None)
            }
        }
    }

    // ---- the network ------------------------------------------------------------------

    /// Delivers one in-flight message to its (live) receiver: the oldest with the seed's
    /// `oldest_first` chance (progress), otherwise a random one (reordering).
    fn deliver_one(&mut self) -> Result<(), Violation> {
        let deliverable = |w: &World, i: usize| w.is_up(w.archive[w.in_flight[i]].to);
        let position = if self.rng.gen_bool(self.profile.oldest_first) {
            (0..self.in_flight.len()).find(|&i| deliverable(self, i))
        } else {
            let len = self.in_flight.len();
            let tries: Vec<usize> = (0..4.min(len)).map(|_| self.rng.gen_range(0..len)).collect();
            tries.into_iter().find(|&i| deliverable(self, i))
        };
        match position {
            Some(i) => {
                let id = self.in_flight.remove(i);
                self.deliver(Source::Archive(id), "deliver")
            }
            None => Ok(()),
        }
    }

    fn drop_one(&mut self) -> Result<(), Violation> {
        if !self.in_flight.is_empty() {
            let id = self.in_flight.remove(self.rng.gen_range(0..self.in_flight.len()));
            self.trace(|| format!("drop #{id}"));
        }
        Ok(())
    }

    fn duplicate_one(&mut self) -> Result<(), Violation> {
        if let Some(&id) = self.in_flight.choose(&mut self.rng) {
            self.in_flight.push(id);
            self.trace(|| format!("duplicate #{id}"));
        }
        Ok(())
    }

    /// Delivers archived messages again to their original receivers: one message of the
    /// whole run, one of the last 32 sent, or a burst of up to 4 consecutive messages of one
    /// link, sent to a node before its last restart when there is one (a stale Prepare and
    /// its AcceptSync, say).
    fn replay_one(&mut self) -> Result<(), Violation> {
        let len = self.archive.len();
        if len == 0 {
            return Ok(());
        }
        let ids = match self.rng.gen_range(0..10) {
            0..=3 => vec![self.rng.gen_range(0..len)],
            4..=5 => vec![len - 1 - self.rng.gen_range(0..len.min(32))],
            _ => self.replay_burst(),
        };
        for id in ids {
            if self.is_up(self.archive[id].to) {
                self.deliver(Source::Archive(id), "replay")?;
                self.after_step()?;
            }
        }
        Ok(())
    }

    /// Consecutive messages of one link into a live node, preferably a restarted one and
    /// from before its restart.
    fn replay_burst(&mut self) -> Vec<usize> {
        let restarted: Vec<NodeId> = self.restarted_at.keys().copied().filter(|&p| self.is_up(p)).collect();
        let receiver = match restarted.choose(&mut self.rng) {
            Some(&pid) if self.rng.gen_bool(0.7) => pid,
            _ => match self.up_pids().choose(&mut self.rng) {
                Some(&pid) => pid,
                None => return Vec::new(),
            },
        };
        let links: Vec<&Vec<usize>> =
            self.by_link.iter().filter(|((_, to), _)| *to == receiver).map(|(_, ids)| ids).collect();
        let Some(&link) = links.choose(&mut self.rng) else { return Vec::new() };
        let before_restart = self
            .restarted_at
            .get(&receiver)
            .map_or(link.len(), |&mark| link.partition_point(|&id| id < mark));
        let end = if before_restart > 0 && self.rng.gen_bool(0.8) { before_restart } else { link.len() };
        let start = self.rng.gen_range(0..end);
        let burst = self.rng.gen_range(1..=4).min(link.len() - start);
        link[start..start + burst].to_vec()
    }

    pub(super) fn is_up(&self, pid: NodeId) -> bool {
        self.nodes.get(&pid).is_some_and(|n| n.replica.is_some())
    }

    /// Hands a stored message to its receiver (or, for a hostile one, to the replica chosen).
    pub(super) fn deliver(&mut self, source: Source, how: &str) -> Result<(), Violation> {
        let (message, to, label) = match source {
            Source::Archive(id) => (self.archive[id].clone(), self.archive[id].to, format!("{how} #{id}")),
            Source::Hostile(i) => (self.hostile[i].1.clone(), self.hostile[i].0, format!("{how} h{i}")),
        };
        if self.tracing() {
            let line = format!("{label} {message}");
            self.trace(|| line);
        }
        let result = self.call(to, &label, |r| r.handle(message));
        result.map(|_| ()).map_err(|mut v| {
            let stored = match source {
                Source::Archive(id) => self.archive[id].to_string(),
                Source::Hostile(i) => format!("{:?}", self.hostile[i].1),
            };
            v.detail = format!("{}; the message: {stored}", v.detail);
            v
        })
    }

    /// Flushes `pid` and puts what it sends into the archive and in flight.
    pub(super) fn flush(&mut self, pid: NodeId) -> Result<(), Violation> {
        let mut out = std::mem::take(&mut self.outgoing);
        self.call(pid, "take_outgoing_messages", |r| r.take_outgoing_messages(&mut out))?;
        for message in out.drain(..) {
            let valid = message.from == pid
                && message.to != pid
                && message.config_id == CONFIG_ID
                && self.profile.pids.contains(&message.to);
            if !valid {
                return Err(
                    self.violation("messages_are_well_addressed", format!("node {pid} sent {message:?}"))
                );
            }
            let id = self.archive.len();
            if self.tracing() {
                let line = format!("send #{id} {message}");
                self.trace(|| line);
            }
            self.by_link.entry((message.from, message.to)).or_default().push(id);
            self.archive.push(message);
            if self.in_flight.len() < IN_FLIGHT_MAX {
                self.in_flight.push(id);
            }
        }
        self.outgoing = out;
        Ok(())
    }

    fn flush_some(&mut self) -> Result<(), Violation> {
        let up = self.up_pids();
        if self.rng.gen_bool(0.3) {
            for pid in up {
                self.flush(pid)?;
            }
            return Ok(());
        }
        match up.choose(&mut self.rng) {
            Some(&pid) => self.flush(pid),
            None => Ok(()),
        }
    }

    fn tick_some(&mut self) -> Result<(), Violation> {
        let up = self.up_pids();
        let all = self.rng.gen_bool(0.4);
        let chosen: Vec<NodeId> =
            if all { up } else { up.choose(&mut self.rng).copied().into_iter().collect() };
        for pid in chosen {
            self.trace(|| format!("tick {pid}"));
            self.call(pid, "tick", |r| r.tick())?;
        }
        Ok(())
    }
}
