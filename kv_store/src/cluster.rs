//! The replicas of one process and the deterministic network between them.
//!
//! ```text
//!   tick():  every live replica ticks ──► deliver_until_quiet()
//!   deliver_until_quiet():  take_outgoing_messages of every live replica (flush, then release)
//!                           ──► FIFO queue ──► handle_incoming at the receiver ──► repeat
//! ```
//!
//! Time is ticks and nothing else: no threads, no sleeps, no clock. A message is delivered in
//! the tick it was sent, in the order it was sent. A crashed replica neither ticks nor sends
//! nor receives; its disk is what `CrashableStorage::crash(CrashKeep::Nothing)` keeps, and a
//! restart builds a fresh `OmniPaxos` over exactly that.

use std::collections::{BTreeMap, VecDeque};

use omnipaxos_core::{
    ballot_leader_election::Ballot,
    config::OmniPaxosConfig,
    messages::Message,
    sequence_paxos::{ProposalOutcome, SequencePaxosConfig},
    storage::Storage,
    util::{ConfigurationId, LogEntry, NodeId, ProposalId},
    OmniPaxos,
};
use omnipaxos_storage::crash_storage::{CrashKeep, CrashableStorage};

use crate::{error::DemoError, kv::KeyValue};

/// A replica's simulated disk: writes are lost in a crash unless flushed.
pub type Disk = CrashableStorage<KeyValue, ()>;
/// One replica of the key-value store's log.
pub type Replica = OmniPaxos<KeyValue, (), Disk>;
type Msg = Message<KeyValue, ()>;

pub const CONFIGURATION_ID: ConfigurationId = 1;
/// Ticks per heartbeat round; a leader that stops answering is replaced after a few rounds.
pub const HB_DELAY_TICKS: u64 = 5;
/// Ticks after which an unanswered Sequence Paxos message is sent again.
pub const RESEND_MESSAGE_TICKS: u64 = 10;
/// Most messages delivered in one step; three replicas exchange a few dozen per tick.
pub const MESSAGES_PER_STEP_MAX: usize = 10_000;

/// The configuration of replica `pid` in a cluster of `pids`.
pub fn config(pid: NodeId, pids: &[NodeId]) -> OmniPaxosConfig {
    let mut sp_config = SequencePaxosConfig::default();
    sp_config.set_configuration_id(CONFIGURATION_ID);
    sp_config.set_pid(pid);
    sp_config.set_peers(pids.iter().copied().filter(|p| *p != pid).collect());
    sp_config.set_resend_message_tick_timeout(RESEND_MESSAGE_TICKS);
    let mut config = OmniPaxosConfig::new(sp_config);
    config.set_hb_delay(HB_DELAY_TICKS);
    config
}

/// What a crash did.
pub struct CrashReport {
    /// `write_atomically` calls the replica made but had not flushed: gone.
    pub unflushed_writes_lost: usize,
    /// Messages to or from the replica that were in flight: gone.
    pub messages_lost: usize,
}

pub struct Cluster {
    pids: Vec<NodeId>,
    live: BTreeMap<NodeId, Replica>,
    /// The disks of crashed replicas, kept for their restart.
    crashed: BTreeMap<NodeId, Disk>,
    network: VecDeque<Msg>,
    /// Every settled proposal and the tick it settled in.
    outcomes: BTreeMap<ProposalId, (ProposalOutcome, u64)>,
    /// Messages sent to each replica while it was down.
    lost_to: BTreeMap<NodeId, u64>,
    now: u64,
}

impl Cluster {
    /// Starts a replica with an empty disk for each of `pids`.
    pub fn new(pids: &[NodeId]) -> Result<Self, DemoError> {
        let mut live = BTreeMap::new();
        for &pid in pids {
            let replica = Replica::try_with(config(pid, pids), Disk::default())
                .map_err(|source| DemoError::Create { pid, source })?;
            live.insert(pid, replica);
        }
        Ok(Cluster {
            pids: pids.to_vec(),
            live,
            crashed: BTreeMap::new(),
            network: VecDeque::new(),
            outcomes: BTreeMap::new(),
            lost_to: BTreeMap::new(),
            now: 0,
        })
    }

    /// The current tick.
    pub fn now(&self) -> u64 {
        self.now
    }

    pub fn live_pids(&self) -> Vec<NodeId> {
        self.live.keys().copied().collect()
    }

    /// A running replica; asking for a crashed one is a bug in the demo.
    pub fn replica(&self, pid: NodeId) -> &Replica {
        self.live.get(&pid).unwrap_or_else(|| panic!("replica {pid} is not running"))
    }

    /// Advances time by one tick everywhere and delivers what that causes.
    pub fn tick(&mut self) -> Result<(), DemoError> {
        self.now += 1;
        for (&pid, replica) in self.live.iter_mut() {
            replica.tick().map_err(|source| DemoError::Replica { pid, source })?;
        }
        self.deliver_until_quiet()
    }

    /// Delivers pending messages, then ticks until `done` holds; returns the ticks taken.
    pub fn run_until(
        &mut self,
        waiting_for: &'static str,
        max_ticks: u64,
        done: impl Fn(&Cluster) -> bool,
    ) -> Result<u64, DemoError> {
        self.deliver_until_quiet()?;
        let start = self.now;
        while !done(self) {
            if self.now - start >= max_ticks {
                return Err(DemoError::Timeout { tick: self.now, ticks: max_ticks, waiting_for });
            }
            self.tick()?;
        }
        Ok(self.now - start)
    }

    /// Appends `entry` at replica `pid`; it travels with the next delivery.
    pub fn append(&mut self, pid: NodeId, entry: KeyValue) -> Result<ProposalId, DemoError> {
        let replica = self.live.get_mut(&pid).unwrap_or_else(|| panic!("replica {pid} is not running"));
        replica.append(entry.clone()).map_err(|reason| DemoError::Propose {
            pid,
            entry,
            reason: Box::new(reason),
        })
    }

    /// How proposal `id` settled and in which tick, if it has.
    pub fn outcome(&self, id: ProposalId) -> Option<(ProposalOutcome, u64)> {
        self.outcomes.get(&id).copied()
    }

    /// The leader every live replica follows and considers ready, if they all agree on one.
    pub fn agreed_leader(&self) -> Option<NodeId> {
        let mut views = self.live.values().map(|replica| replica.get_current_leader());
        let (leader, ready) = views.next()??;
        let all_agree = views.all(|view| view == Some((leader, true)));
        (ready && all_agree && self.live.contains_key(&leader)).then_some(leader)
    }

    /// True if every live replica has decided the same number of entries.
    pub fn decided_everywhere(&self) -> bool {
        let mut decided = self.live.values().map(|replica| replica.get_decided_idx());
        let first = decided.next();
        decided.all(|idx| Some(idx) == first)
    }

    /// The decided entries of replica `pid`, in log order.
    pub fn decided_log(&self, pid: NodeId) -> Result<Vec<KeyValue>, DemoError> {
        let entries = self.replica(pid).read_decided_suffix(0).unwrap_or_default();
        let mut log = Vec::with_capacity(entries.len());
        for (idx, entry) in (0..).zip(entries) {
            match entry {
                LogEntry::Decided(kv) => log.push(kv),
                _ => return Err(DemoError::UnexpectedEntry { pid, idx }),
            }
        }
        Ok(log)
    }

    /// Stops replica `pid` as a process crash would: its unflushed writes and every message to
    /// or from it are lost; its disk is kept for [`Cluster::restart`].
    pub fn crash(&mut self, pid: NodeId) -> CrashReport {
        let replica = self.live.remove(&pid).unwrap_or_else(|| panic!("replica {pid} is not running"));
        let unflushed_writes_lost = replica.sequence_paxos().storage().unflushed_calls();
        self.crashed.insert(pid, replica.sequence_paxos().storage().crash(CrashKeep::Nothing));
        let in_flight = self.network.len();
        self.network.retain(|m| m.get_sender() != pid && m.get_receiver() != pid);
        CrashReport { unflushed_writes_lost, messages_lost: in_flight - self.network.len() }
    }

    /// How many messages were sent to replica `pid` while it was down.
    pub fn messages_lost_to(&self, pid: NodeId) -> u64 {
        self.lost_to.get(&pid).copied().unwrap_or(0)
    }

    /// The promise on the disk of crashed replica `pid` (the default ballot if none).
    pub fn durable_promise(&self, pid: NodeId) -> Result<Ballot, DemoError> {
        let disk = self.crashed.get(&pid).unwrap_or_else(|| panic!("replica {pid} has not crashed"));
        let promise = disk.get_promise().map_err(|e| DemoError::Replica { pid, source: e.into() })?;
        Ok(promise.unwrap_or_default())
    }

    /// Starts replica `pid` again over the disk its crash left; `OmniPaxos::with` recovers it.
    pub fn restart(&mut self, pid: NodeId) -> Result<(), DemoError> {
        let disk = self.crashed.remove(&pid).unwrap_or_else(|| panic!("replica {pid} has not crashed"));
        let replica = Replica::try_with(config(pid, &self.pids), disk)
            .map_err(|source| DemoError::Create { pid, source })?;
        self.live.insert(pid, replica);
        Ok(())
    }

    /// Delivers messages until none are in flight. Every replica flushes and releases its
    /// messages after each delivery, as a real node would after each batch of inputs.
    fn deliver_until_quiet(&mut self) -> Result<(), DemoError> {
        for _ in 0..MESSAGES_PER_STEP_MAX {
            self.collect()?;
            let Some(message) = self.network.pop_front() else { return Ok(()) };
            let to = message.get_receiver();
            // Crashed replicas' messages were removed at the crash; none can be sent to them.
            let replica = self.live.get_mut(&to).unwrap_or_else(|| panic!("message to crashed {to}"));
            replica.handle_incoming(message).map_err(|source| DemoError::Replica { pid: to, source })?;
        }
        Err(DemoError::NoQuiescence { tick: self.now, messages: MESSAGES_PER_STEP_MAX })
    }

    /// Takes every live replica's outgoing messages and proposal outcomes.
    fn collect(&mut self) -> Result<(), DemoError> {
        let mut outgoing = Vec::new();
        let mut outcomes = Vec::new();
        for (&pid, replica) in self.live.iter_mut() {
            replica
                .take_outgoing_messages(&mut outgoing)
                .map_err(|source| DemoError::Replica { pid, source })?;
            replica.take_proposal_outcomes(&mut outcomes);
        }
        for message in outgoing {
            let to = message.get_receiver();
            if self.live.contains_key(&to) {
                self.network.push_back(message);
            } else {
                // A message to a crashed replica is lost, as on a real network.
                *self.lost_to.entry(to).or_default() += 1;
            }
        }
        for (id, outcome) in outcomes {
            let earlier = self.outcomes.insert(id, (outcome, self.now));
            assert!(earlier.is_none(), "proposal {id} settled twice");
        }
        Ok(())
    }
}
