//! One seed, one thread: the event loop, its two phases, and the report.
//!
//! ```text
//!   per tick:  nemesis (network) ─► pauses end or begin ─► every running node ticks ─► due
//!              messages delivered one by one
//!              ─► client requests and replies ─► nemesis (crash, disk, reconfigure, compact)
//!              ─► every node flushes and sends (take_outgoing_messages) ─► joiners start
//!              ─► clients time out and issue
//!   after every event at a node: settle (outcomes, apply, reply) ─► invariants of its replicas
//!
//!   safety phase: faults until the clients issued `ops` operations
//!   liveness phase: heal everything; every client must complete a new operation within
//!                   `liveness_bound_ticks`, then all replicas must converge
//!   end: linearizability of the whole client history
//! ```
//!
//! Crashes happen after the deliveries of a tick and before the flush, so the replicas' disks
//! hold unflushed writes for a crash to lose.

use std::collections::{BTreeMap, BTreeSet};

use omnipaxos_core::{
    messages::Message,
    storage::ClusterConfig,
    util::{ConfigurationId, NodeId},
};
use omnipaxos_storage::crash_storage::CrashKeep;
use rand::{rngs::SmallRng, Rng, SeedableRng};

use crate::{
    clients::{client_endpoint, ClientMessage, Clients, OpCounts, CLIENT_ENDPOINT_BASE},
    invariants::{Checker, Violation},
    kv::{Command, KvSnapshot, KvState, Op},
    linearizability::{self, Verdict},
    nemesis::{FaultKind, Nemesis},
    network::{LinkConfig, Network, NetworkStats, SendFate},
    node::{Node, ReplicaSettings, Reply},
    pause::Pauses,
    reads::{GetPath, ReadCounts, ReadMode, ReadProfile},
    storage::{DiskLoss, StorageKind},
};

/// A message between replicas.
pub type NodeMessage = Message<Command, KvSnapshot>;

/// A message for the trace; messages of later configurations name theirs (`[c2] 1->2 ...`).
pub(crate) fn show_message(message: &NodeMessage) -> String {
    match crate::node::message_config(message) {
        1 => message.to_string(),
        config_id => format!("[c{config_id}] {message}"),
    }
}

/// Limit on deliveries in one tick: a livelock of zero-delay messages ends the tick.
const DELIVERIES_PER_TICK_MAX: usize = 200_000;

/// Seeds the generator of the read profile and the clocks (xor the run's seed).
const READS_STREAM: u64 = 0x7265_6164_735f_636b;

/// Everything one run depends on besides the seed's random choices.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed of every random choice.
    pub seed: u64,
    /// Replicas in the first configuration.
    pub nodes: usize,
    /// Client operations to issue in the safety phase.
    pub ops: u64,
    /// Concurrent clients.
    pub clients: usize,
    /// Distinct keys.
    pub keys: u8,
    /// Replica timing.
    pub settings: ReplicaSettings,
    /// The replicas' disks: `CrashableStorage`, or `PersistentStorage` on `SimFs`.
    pub storage: StorageKind,
    /// Ticks after which a client gives up on a request.
    pub client_timeout_ticks: u64,
    /// Longest safety phase, whether or not all operations were issued.
    pub safety_max_ticks: u64,
    /// Ticks after healing within which every client must complete a new operation, and then
    /// again within which the replicas must converge.
    pub liveness_bound_ticks: u64,
    /// Whether to inject faults at all.
    pub faults: bool,
    /// Most reconfigurations proposed in one run.
    pub reconfigurations_max: u32,
    /// Record a readable trace: one line per message, fault and client event.
    pub trace: bool,
    /// Print trace lines as they happen instead of keeping them (survives a panic).
    pub trace_print: bool,
    /// Testing the checkers: replicas answer reads from their local state, bypassing the log.
    pub read_locally: bool,
    /// The faults added for issue 8: messages due at a crashed node wait for its restart
    /// instead of being dropped; archived messages are replayed to their original receivers
    /// (also after either end restarted); leader priorities change at runtime (`set_priority`);
    /// some seeds run with a small `buffer_size`. Off, a seed runs exactly as before them.
    /// Issue 9 and 11 added more: amnesia (a replica's disk destroyed or truncated), the
    /// leader isolated from every replica but still reachable by clients, priority storms,
    /// corrupted heartbeat replies.
    pub extended_faults: bool,
    /// How client gets are served (`Mixed`: each seed draws a mode).
    pub reads: ReadMode,
    /// Lease seeds: clock rates beyond `max_clock_drift_percent` (unsafe by the documentation).
    pub drift_beyond_bound: bool,
    /// Deliberately unsafe: a replica whose disk was destroyed restarts as a voter, not as a
    /// learner (shows why learners exist).
    pub amnesia_voter: bool,
    /// A replica whose storage reports a possible loss becomes a learner over the log that
    /// recovery left, instead of over an empty log (shows a core bug; see `Node::restart`).
    pub learner_keeps_log: bool,
    /// Only these kinds of fault (empty: all of them).
    pub fault_kinds: Vec<FaultKind>,
    /// Deliberately unsafe: a node resuming from a pause keeps its read leases, counted in
    /// the ticks its clock missed (the simulator should find stale reads; see `crate::pause`).
    pub keep_lease_after_pause: bool,
}

impl SimConfig {
    /// The defaults for `seed` with `nodes` replicas.
    pub fn new(seed: u64, nodes: usize) -> SimConfig {
        let hb_delay_ticks = 10;
        SimConfig {
            seed,
            nodes,
            ops: 500,
            clients: 5,
            keys: 4,
            settings: ReplicaSettings {
                hb_delay_ticks,
                resend_ticks: 2 * hb_delay_ticks,
                batch_size: 1,
                buffer_size: crate::node::DEFAULT_BUFFER_SIZE,
                read_lease: None,
                mutation: None,
            },
            storage: StorageKind::Crashable,
            client_timeout_ticks: 8 * hb_delay_ticks,
            safety_max_ticks: 60_000,
            liveness_bound_ticks: 60 * hb_delay_ticks,
            faults: true,
            reconfigurations_max: 2,
            trace: false,
            trace_print: false,
            read_locally: false,
            extended_faults: true,
            reads: ReadMode::Mixed,
            drift_beyond_bound: false,
            amnesia_voter: false,
            learner_keeps_log: false,
            fault_kinds: Vec::new(),
            keep_lease_after_pause: false,
        }
    }
}

/// What the linearizability check said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinearizabilityResult {
    /// Not run: the run stopped at a safety or liveness violation first.
    NotChecked,
    /// The history is linearizable.
    Linearizable,
    /// It is not (the violation says why).
    Violated,
    /// The search gave up on this key.
    Inconclusive(u8),
}

/// What one run found and measured.
#[derive(Clone, Debug)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Replicas in the first configuration.
    pub nodes: usize,
    /// Client operations by outcome.
    pub ops: OpCounts,
    /// Faults injected, by kind.
    pub faults: BTreeMap<FaultKind, u64>,
    /// The first violation (safety, liveness or linearizability), if any.
    pub violation: Option<Violation>,
    /// The linearizability check.
    pub linearizability: LinearizabilityResult,
    /// Ticks from healing until every client completed a new operation (`None`: they did not,
    /// or the run stopped before healing).
    pub recover_ticks: Option<u64>,
    /// Ticks simulated.
    pub ticks: u64,
    /// Replica-to-replica traffic.
    pub messages: NetworkStats,
    /// Log positions decided, over all configurations.
    pub decided: usize,
    /// Configurations started after the first.
    pub reconfigurations: u32,
    /// Replica disks crashed (by the nemesis or after a storage failure), by kind of loss; and
    /// (`recovered-*`) what the persistent storage's recovery repaired when reopening them;
    /// amnesia faults and restarts as learners.
    pub disk_losses: BTreeMap<&'static str, u64>,
    /// The seed's read mode (`log`, `leader`, `follower`, `lease`).
    pub read_mode: ReadMode,
    /// Client gets by how they were served.
    pub reads: ReadCounts,
    /// The trace, if asked for.
    pub trace: Vec<String>,
}

/// The phase a run is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Faults are injected.
    Safety,
    /// Everything is healed; progress is required.
    Liveness,
}

/// One run in progress.
pub struct Simulation {
    pub(crate) config: SimConfig,
    pub(crate) rng: SmallRng,
    pub(crate) now: u64,
    pub(crate) phase: Phase,
    pub(crate) nodes: BTreeMap<NodeId, Node>,
    pub(crate) network: Network<NodeMessage>,
    pub(crate) client_network: Network<ClientMessage>,
    pub(crate) clients: Clients,
    pub(crate) checker: Checker,
    /// Every configuration some node started, by id.
    pub(crate) configurations: BTreeMap<ConfigurationId, ClusterConfig>,
    pub(crate) nemesis: Nemesis,
    pub(crate) trace: Option<Vec<String>>,
    /// Ticks from healing until every client completed a new operation, once they have.
    pub(crate) recovered_ticks: Option<u64>,
    /// Replica disks crashed, by kind of loss.
    pub(crate) disk_losses: BTreeMap<&'static str, u64>,
    /// The seed's reads: mode, lease, clock rates.
    pub(crate) read_profile: ReadProfile,
    /// Draws the clocks of nodes that join later (a generator of its own).
    clock_rng: SmallRng,
    /// Replicas created so far (each takes the next clock of the profile).
    replicas_created: usize,
    /// Paused nodes and the seed's pauses.
    pub(crate) pauses: Pauses,
}

/// Runs one seed to the end.
pub fn run(config: SimConfig) -> Report {
    let mut sim = Simulation::new(config);
    let outcome = sim.run_phases();
    sim.into_report(outcome)
}

impl Simulation {
    /// Builds the first configuration, the networks and the clients.
    pub fn new(mut config: SimConfig) -> Simulation {
        let mut rng = SmallRng::seed_from_u64(config.seed);
        let first = ClusterConfig {
            configuration_id: 1,
            nodes: (1..=config.nodes as NodeId).collect(),
            flexible_quorum: None,
        };
        let mut nemesis =
            Nemesis::new(&mut rng, config.faults, config.extended_faults, config.settings.hb_delay_ticks);
        if !config.fault_kinds.is_empty() {
            nemesis.restrict_to(config.fault_kinds.iter().copied().collect());
        }
        if let Some(buffer_size) = nemesis.small_buffer_size() {
            config.settings.buffer_size = buffer_size;
        }
        // A generator of its own: the main stream does not depend on the read mode.
        let mut clock_rng = SmallRng::seed_from_u64(config.seed ^ READS_STREAM);
        let read_profile = ReadProfile::draw(
            config.reads,
            config.drift_beyond_bound,
            config.settings.hb_delay_ticks,
            &mut clock_rng,
        );
        config.settings.read_lease = read_profile.lease;
        let mut nodes = BTreeMap::new();
        for (index, &pid) in first.nodes.iter().enumerate() {
            let checkpoint_every = rng.gen_range(1..=40);
            let mut node =
                Node::new(pid, &first, config.settings, config.storage, KvState::default(), checkpoint_every);
            node.read_locally = config.read_locally;
            node.get_path = read_profile.path;
            node.clock = read_profile.clock(index, &mut clock_rng);
            node.amnesia_voter = config.amnesia_voter;
            node.learner_keeps_log = config.learner_keeps_log;
            nodes.insert(pid, node);
        }
        let replicas_created = nodes.len();
        let mut network = Network::new(nemesis.base_link());
        if config.faults && config.extended_faults {
            network.park_for_down_nodes();
            network.keep_archive();
        }
        let mut client_network = Network::new(nemesis.client_link());
        if config.faults && config.extended_faults {
            // Only pauses park client requests (kept in the paused process's socket buffers).
            client_network.park_for_down_nodes();
        }
        let pauses = Pauses::new(config.seed, config.faults && config.extended_faults);
        let clients = Clients::new(config.clients, config.keys, config.client_timeout_ticks);
        let trace = config.trace.then(Vec::new);
        let small_buffer = nemesis.small_buffer_size();
        let mut sim = Simulation {
            rng,
            now: 0,
            phase: Phase::Safety,
            nodes,
            network,
            client_network,
            clients,
            checker: Checker::default(),
            configurations: BTreeMap::from([(1, first)]),
            nemesis,
            trace,
            recovered_ticks: None,
            disk_losses: BTreeMap::new(),
            read_profile,
            clock_rng,
            replicas_created,
            pauses,
            config,
        };
        if let Some(buffer_size) = small_buffer {
            sim.trace(|| format!("PROFILE buffer_size {buffer_size}"));
        }
        let reads = sim.read_profile.to_string();
        sim.trace(|| format!("PROFILE {reads}"));
        sim
    }

    /// Adds a line to the trace, if one is kept; `line` is only built then.
    pub(crate) fn trace(&mut self, line: impl FnOnce() -> String) {
        if let Some(trace) = &mut self.trace {
            let line = format!("t={} {}", self.now, line());
            if self.config.trace_print {
                println!("{line}");
            } else {
                trace.push(line);
            }
        }
    }

    /// The newest configuration some node started.
    pub(crate) fn latest(&self) -> &ClusterConfig {
        self.configurations.values().next_back().expect("the first configuration exists")
    }

    fn run_phases(&mut self) -> Result<(), Violation> {
        while self.clients.counts().invoked < self.config.ops && self.now < self.config.safety_max_ticks {
            self.step()?;
        }
        self.heal_everything()?;
        let healed_at = self.now;
        let recovered = loop {
            self.step()?;
            if let Some(tick) = self.clients.all_completed_since_mark() {
                break tick - healed_at;
            }
            if self.now - healed_at > self.config.liveness_bound_ticks {
                return Err(self.liveness_violation("new_operations_complete_after_healing", healed_at));
            }
        };
        self.recovered_ticks = Some(recovered);
        self.clients.stop_issuing();
        let quiet_from = self.now;
        while !(self.clients.all_idle() && self.converged() && self.leader_election_agrees()) {
            self.step()?;
            if self.now - quiet_from > self.config.liveness_bound_ticks {
                let property = match self.converged() {
                    true => "leader_election_agrees_after_healing",
                    false => "replicas_converge_after_healing",
                };
                return Err(self.liveness_violation(property, quiet_from));
            }
        }
        Ok(())
    }

    fn liveness_violation(&self, property: &'static str, since: u64) -> Violation {
        let views: Vec<String> = self
            .nodes
            .values()
            .map(|node| {
                let (config, applied, finished) = node.app_position();
                let replicas: Vec<String> = node
                    .replicas()
                    .map(|(c, r)| {
                        format!(
                            "c{c}:dec={} acc={} prom={} lead={:?} ble={}",
                            r.get_decided_idx(),
                            r.sequence_paxos().get_accepted_idx(),
                            r.get_promise(),
                            r.get_current_leader(),
                            r.ballot_leader_election()
                                .get_current_leader()
                                .map_or_else(|| "-".to_string(), |b| b.to_string())
                        )
                    })
                    .collect();
                format!(
                    "node {} up={} app=c{config}/{applied}{} [{}]",
                    node.pid(),
                    node.is_up(),
                    if finished { " left" } else { "" },
                    replicas.join(" ")
                )
            })
            .collect();
        Violation {
            tick: self.now,
            property,
            detail: format!(
                "not within {} ticks of tick {since}; {}",
                self.config.liveness_bound_ticks,
                views.join("; ")
            ),
        }
    }

    /// Every member of the newest configuration is up, runs it, and applied the same decided
    /// prefix as the others.
    fn converged(&self) -> bool {
        let latest = self.latest();
        let mut decided = BTreeSet::new();
        for pid in &latest.nodes {
            let Some(node) = self.nodes.get(pid) else { return false };
            let Some(replica) = node.replica(latest.configuration_id) else { return false };
            let (config, applied, finished) = node.app_position();
            if finished || config != latest.configuration_id || applied != replica.get_decided_idx() {
                return false;
            }
            decided.insert(applied);
        }
        decided.len() == 1
    }

    /// Every voter of the newest configuration follows the same leader in Ballot Leader
    /// Election (learners take no part in it). A follower left following a ballot its owner no
    /// longer leads with would not notice that leader's failure (issue 8, finding 3).
    fn leader_election_agrees(&self) -> bool {
        let latest = self.latest();
        let config_id = latest.configuration_id;
        let mut leaders = BTreeSet::new();
        for pid in &latest.nodes {
            let Some(node) = self.nodes.get(pid) else { return false };
            let Some(replica) = node.replica(config_id) else { return false };
            if !node.is_learner_in(config_id) {
                leaders.insert(replica.ballot_leader_election().get_current_leader());
            }
        }
        leaders.len() == 1 && leaders.first().is_some_and(|leader| leader.is_some())
    }

    /// One tick of the whole world.
    pub(crate) fn step(&mut self) -> Result<(), Violation> {
        self.now += 1;
        self.checker.set_now(self.now);
        self.update_possible_loss_allowance();
        if self.phase == Phase::Safety {
            self.inject_network_faults();
        }
        self.apply_network_faults();
        self.pause_faults();
        self.tick_nodes()?;
        self.deliver_node_messages()?;
        self.deliver_client_messages()?;
        self.inject_process_faults()?;
        self.flush_nodes()?;
        self.start_joiners()?;
        self.step_clients();
        Ok(())
    }

    fn up_nodes(&self) -> Vec<NodeId> {
        // A paused node neither ticks nor flushes.
        self.nodes
            .iter()
            .filter(|(&pid, n)| n.is_up() && !self.pauses.is_paused(pid))
            .map(|(&pid, _)| pid)
            .collect()
    }

    fn tick_nodes(&mut self) -> Result<(), Violation> {
        for pid in self.up_nodes() {
            let result = self.nodes.get_mut(&pid).expect("listed").tick();
            if let Err(e) = result {
                self.fail_stop(pid, &e.to_string());
            }
            self.after_event(pid)?;
        }
        Ok(())
    }

    fn deliver_node_messages(&mut self) -> Result<(), Violation> {
        for _ in 0..DELIVERIES_PER_TICK_MAX {
            let Some(delivery) = self.network.pop_due(self.now) else { return Ok(()) };
            let (from, to, message) = match delivery {
                Ok(delivery) => delivery,
                Err((_, _, message)) => {
                    self.trace(|| format!("cut in flight {}", show_message(&message)));
                    continue;
                }
            };
            if !self.nodes.get(&to).is_some_and(|n| n.is_up()) {
                // Classic faults only: with the extended faults the network parks it.
                self.trace(|| format!("to a down node {}", show_message(&message)));
                continue;
            }
            let Some(message) = self.filter_delivery(to, message) else { continue };
            self.trace(|| show_message(&message));
            let node = self.nodes.get_mut(&to).expect("checked above");
            debug_assert_eq!(message.get_sender(), from);
            if let Err(e) = node.handle(message) {
                self.fail_stop(to, &e.to_string());
            }
            self.after_event(to)?;
        }
        Ok(())
    }

    fn deliver_client_messages(&mut self) -> Result<(), Violation> {
        while let Some(delivery) = self.client_network.pop_due(self.now) {
            let Ok((from, to, message)) = delivery else { continue };
            match message {
                ClientMessage::Request { client, command } => {
                    if !self.nodes.get(&to).is_some_and(|n| n.is_up()) {
                        self.trace(|| format!("c{client}->{to} lost at a down node: {}", command.request));
                        continue;
                    }
                    self.trace(|| format!("c{client}->{to} Request {} {}", command.request, command.op));
                    let node = self.nodes.get_mut(&to).expect("checked above");
                    if let Some(reply) = node.submit(client, command) {
                        self.send_reply(to, reply);
                    }
                    self.after_event(to)?;
                }
                ClientMessage::Reply(reply) => {
                    let accepted = self.clients.on_reply(&reply, self.now, &mut self.rng);
                    let message = ClientMessage::Reply(reply);
                    self.trace(|| {
                        let late = if accepted { "" } else { " (no longer awaited)" };
                        format!("{from}->c{} {message}{late}", reply.client)
                    });
                }
            }
        }
        Ok(())
    }

    fn send_reply(&mut self, from: NodeId, reply: Reply) {
        let to = client_endpoint(reply.client);
        self.client_network.send(from, to, ClientMessage::Reply(reply), self.now, &mut self.rng);
    }

    /// Flushes every up node and puts its messages on the network.
    fn flush_nodes(&mut self) -> Result<(), Violation> {
        let mut outgoing = Vec::new();
        for pid in self.up_nodes() {
            outgoing.clear();
            let node = self.nodes.get_mut(&pid).expect("listed");
            let checker = &mut self.checker;
            let result = node.take_outgoing(&mut outgoing, |config_id, replica| {
                checker.note_flushed(pid, config_id, replica);
            });
            if let Err(e) = result {
                self.fail_stop(pid, &e.to_string());
                self.after_event(pid)?;
                continue;
            }
            for message in outgoing.drain(..) {
                let (from, to) = (message.get_sender(), message.get_receiver());
                let line = self.trace.is_some().then(|| show_message(&message));
                let fate = self.network.send(from, to, message, self.now, &mut self.rng);
                if let Some(line) = line {
                    match fate {
                        SendFate::Lost => self.trace(|| format!("lost {line}")),
                        SendFate::Cut => self.trace(|| format!("cut {line}")),
                        SendFate::Duplicated(..) => self.trace(|| format!("duplicated {line}")),
                        SendFate::Queued(_) => {}
                    }
                }
            }
            self.after_event(pid)?;
        }
        Ok(())
    }

    /// After any event at `pid`: settle its application, send its replies, note new
    /// configurations, and check the invariants of each of its replicas.
    pub(crate) fn after_event(&mut self, pid: NodeId) -> Result<(), Violation> {
        let now = self.now;
        let stamp = |mut v: Violation| {
            v.tick = now;
            v
        };
        let Some(node) = self.nodes.get_mut(&pid) else { return Ok(()) };
        if !node.is_up() {
            return Ok(());
        }
        // The replicas first: a replica that decided another value at a decided index is an
        // agreement violation, which its application would otherwise report first as state
        // machines that disagree. Again after settling, for replicas it started.
        for (config_id, replica) in node.replicas() {
            self.checker.check_replica(pid, config_id, replica).map_err(stamp)?;
        }
        let settled = node.settle(&mut self.checker).map_err(stamp)?;
        if !settled.started.is_empty() {
            for (config_id, replica) in node.replicas() {
                self.checker.check_replica(pid, config_id, replica).map_err(stamp)?;
            }
        }
        for reply in settled.replies {
            self.send_reply(pid, reply);
        }
        for config in settled.started {
            if !self.configurations.contains_key(&config.configuration_id) {
                self.trace(|| {
                    format!("node {pid} starts configuration {} {:?}", config.configuration_id, config.nodes)
                });
                self.configurations.insert(config.configuration_id, config);
            }
        }
        Ok(())
    }

    /// A replica hit a storage failure and stopped: the process dies (after a failed fsync
    /// any prefix of the unflushed writes may be on disk; on the persistent backend, any crash
    /// variant of the unsynced bytes) and restarts later.
    pub(crate) fn fail_stop(&mut self, pid: NodeId, error: &str) {
        let node = self.nodes.get_mut(&pid).expect("a failing node exists");
        let (rng, losses) = (&mut self.rng, &mut self.disk_losses);
        let mut kept = Vec::new();
        node.crash(|disk| {
            let unflushed = disk.unflushed_calls();
            let loss = match disk.kind() {
                _ if disk.interrupted().is_some() => disk.interrupted().expect("checked"),
                StorageKind::Crashable => DiskLoss::Calls(CrashKeep::Prefix(rng.gen_range(0..=unflushed))),
                StorageKind::Persistent => DiskLoss::draw_bytes(rng, disk.possible_loss_allowed()),
            };
            kept.push(format!("{loss} of {unflushed}"));
            *losses.entry(loss.name()).or_default() += 1;
            loss
        });
        self.network.set_down(pid, true, self.now);
        self.update_possible_loss_allowance();
        let restart_at = self.now + self.nemesis.restart_delay(&mut self.rng);
        self.nemesis.schedule_restart(pid, restart_at);
        let kept = kept.join(", ");
        self.trace(|| {
            format!("FAULT node {pid} fail-stops ({error}) keeping {kept}; restart at t={restart_at}")
        });
    }

    /// Starts nodes that a configuration added, with the state a member had when it started it.
    fn start_joiners(&mut self) -> Result<(), Violation> {
        let configurations: Vec<ClusterConfig> = self.configurations.values().cloned().collect();
        for config in configurations {
            for &pid in &config.nodes {
                if self.nodes.contains_key(&pid) {
                    continue;
                }
                let donor = self.nodes.values().find(|n| {
                    n.is_up()
                        && n.initial_state(config.configuration_id).is_some()
                        && !self.network.is_cut(n.pid(), pid)
                });
                let Some(donor) = donor else { continue };
                let (donor_pid, state) = (donor.pid(), donor.initial_state(config.configuration_id).cloned());
                let state = state.expect("checked above");
                let checkpoint_every = self.rng.gen_range(1..=40);
                let mut node = Node::new(
                    pid,
                    &config,
                    self.config.settings,
                    self.config.storage,
                    state,
                    checkpoint_every,
                );
                node.read_locally = self.config.read_locally;
                node.get_path = self.read_profile.path;
                node.clock = self.read_profile.clock(self.replicas_created, &mut self.clock_rng);
                node.amnesia_voter = self.config.amnesia_voter;
                node.learner_keeps_log = self.config.learner_keeps_log;
                self.replicas_created += 1;
                self.nodes.insert(pid, node);
                self.trace(|| {
                    format!(
                        "node {pid} joins configuration {} with state from node {donor_pid}",
                        config.configuration_id
                    )
                });
                self.after_event(pid)?;
            }
        }
        Ok(())
    }

    fn step_clients(&mut self) {
        for request in self.clients.expire(self.now, &mut self.rng) {
            self.trace(|| format!("client timeout {request} (indeterminate)"));
        }
        let members = self.latest().nodes.clone();
        let to_leader = self.read_profile.path == GetPath::LeaderReadIndex;
        let requests = self.clients.issue(self.now, &mut self.rng, |rng, op, hint| match (op, hint) {
            (Op::Get { .. }, Some(leader)) if to_leader && members.contains(&leader) => leader,
            _ => members[rng.gen_range(0..members.len())],
        });
        for (client, to, command) in requests {
            self.trace(|| format!("c{client} sends {} {} to {to}", command.request, command.op));
            let from = client_endpoint(client);
            debug_assert!(from >= CLIENT_ENDPOINT_BASE);
            self.client_network.send(
                from,
                to,
                ClientMessage::Request { client, command },
                self.now,
                &mut self.rng,
            );
        }
    }

    /// The liveness phase starts: no more faults, every link healthy, every node up.
    fn heal_everything(&mut self) -> Result<(), Violation> {
        self.phase = Phase::Liveness;
        self.nemesis.clear();
        self.network.set_cuts(BTreeSet::new());
        self.network.reset_links(LinkConfig {
            delay_min_ticks: 1,
            delay_max_ticks: 2,
            ..LinkConfig::reliable(1)
        });
        self.client_network.reset_links(LinkConfig {
            delay_min_ticks: 1,
            delay_max_ticks: 2,
            ..LinkConfig::reliable(1)
        });
        self.trace(|| "HEAL everything: liveness phase".to_string());
        self.resume_all();
        for pid in self.nodes.keys().copied().collect::<Vec<_>>() {
            let node = self.nodes.get_mut(&pid).expect("listed");
            node.disarm_storage_failures();
            if !node.is_up() {
                self.restart(pid)?;
            }
        }
        self.clients.abandon_all(self.now);
        self.clients.mark_liveness();
        Ok(())
    }

    /// Restarts a crashed node.
    pub(crate) fn restart(&mut self, pid: NodeId) -> Result<(), Violation> {
        // A crash ends a pause (normally noticed at the next tick's `pause_faults`).
        self.end_pause_of_crashed(pid);
        let node = self.nodes.get_mut(&pid).expect("a crashed node exists");
        let restarted = node.restart().map_err(|detail| Violation {
            tick: self.now,
            property: "crashed_replicas_restart",
            detail,
        })?;
        for &config_id in &restarted.fresh_disks {
            self.checker.forget_replica(pid, config_id);
        }
        let findings = restarted.findings;
        self.network.set_down(pid, false, self.now);
        self.nemesis.note_restarted(pid, self.now);
        self.update_possible_loss_allowance();
        for (name, _) in &findings {
            *self.disk_losses.entry(name).or_default() += 1;
        }
        let details: Vec<String> = findings.into_iter().map(|(_, detail)| detail).collect();
        self.trace(|| match details.is_empty() {
            true => format!("RESTART node {pid}"),
            false => format!("RESTART node {pid}, recovery repaired: {}", details.join("; ")),
        });
        self.after_event(pid)
    }

    fn into_report(mut self, outcome: Result<(), Violation>) -> Report {
        let recover_ticks = self.recovered_ticks;
        let mut violation = outcome.err();
        let linearizability = if violation.is_some() {
            LinearizabilityResult::NotChecked
        } else {
            match linearizability::check(self.clients.history()) {
                Verdict::Linearizable => LinearizabilityResult::Linearizable,
                Verdict::Inconclusive(key) => LinearizabilityResult::Inconclusive(key),
                Verdict::NotLinearizable(counterexample) => {
                    violation = Some(Violation {
                        tick: self.now,
                        property: "client_history_is_linearizable",
                        detail: counterexample.to_string(),
                    });
                    LinearizabilityResult::Violated
                }
            }
        };
        if let Some(v) = &violation {
            let line = format!("VIOLATION {v}");
            self.trace(|| line);
        }
        Report {
            seed: self.config.seed,
            nodes: self.config.nodes,
            ops: self.clients.counts(),
            faults: self.nemesis.counts().clone(),
            violation,
            linearizability,
            recover_ticks,
            ticks: self.now,
            messages: self.network.stats(),
            decided: self.checker.decided_count(),
            reconfigurations: self.configurations.len() as u32 - 1,
            disk_losses: std::mem::take(&mut self.disk_losses),
            read_mode: self.read_profile.mode,
            reads: self.nodes.values().fold(ReadCounts::default(), |mut total, node| {
                total.add(&node.read_counts);
                total
            }),
            trace: self.trace.take().unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fault-free run of `nodes` replicas, stepped by hand.
    fn healthy(nodes: usize) -> Simulation {
        let mut config = SimConfig::new(1, nodes);
        config.faults = false;
        Simulation::new(config)
    }

    fn run_until(sim: &mut Simulation, ticks: u64, done: impl Fn(&Simulation) -> bool) -> bool {
        for _ in 0..ticks {
            sim.step().expect("no violation");
            if done(sim) {
                return true;
            }
        }
        false
    }

    /// A replica that crashes (keeping its disk) and restarts rejoins and catches up. With a
    /// promise *above* the leader's ballot it may not: see tests/core_bugs.rs.
    #[test]
    fn a_restarted_replica_rejoins_and_catches_up() {
        let mut sim = healthy(3);
        assert!(run_until(&mut sim, 200, |s| s.current_leader().is_some() && s.clients.counts().ok > 20));
        let leader = sim.current_leader().expect("elected");
        let other = if leader == 1 { 2 } else { 1 };
        sim.nodes.get_mut(&other).expect("exists").crash(|_| DiskLoss::Calls(CrashKeep::All));
        sim.restart(other).expect("restarts");
        let ok = sim.clients.counts().ok;
        assert!(run_until(&mut sim, 300, |s| s.clients.counts().ok > ok + 30));
        sim.clients.stop_issuing();
        assert!(run_until(&mut sim, 1000, |s| s.clients.all_idle() && s.converged()));
    }
}
