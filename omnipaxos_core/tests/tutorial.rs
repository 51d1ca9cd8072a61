//! The Sequence Paxos tutorial (`sequence-paxos-tutorial.md`) as tests: its code compiles as
//! written (with its `...` filled in) and does what the tutorial says it does.
//!
//! - `creating_a_node_*`: replica 2 of a three-server key-value store, built with setters and
//!   `MemoryStorage`, and a cluster of three such replicas deciding `KeyValue` entries.
//! - `hocon_*`: the configuration of replica 2 loaded from `tests/config/node2.conf`.
//! - `crash_recovery_*`: a replica restarted from its persisted state with `SequencePaxos::with`
//!   and `fail_recovery()` keeps its decided entries and its promise, and catches up.
//!
//! The network is driven by hand: a leader is chosen with `handle_leader` (as Ballot Leader
//! Election would), and messages go from `take_outgoing_messages` to `handle` in FIFO order.

use std::collections::{BTreeMap, VecDeque};

use hocon::HoconLoader;
use omnipaxos_core::{
    ballot_leader_election::Ballot,
    sequence_paxos::{ProposalOutcome, SequencePaxos, SequencePaxosConfig},
    storage::Storage,
    util::{LogEntry, NodeId, ProposalId},
};
use omnipaxos_storage::{
    crash_storage::{CrashKeep, CrashableStorage},
    memory_storage::MemoryStorage,
};

// ---- The tutorial's log entry, as written. ----

#[derive(Clone, Debug)] // Clone and Debug are required traits.
pub struct KeyValue {
    pub key: String,
    pub value: u64,
}

fn kv(key: &str, value: u64) -> KeyValue {
    KeyValue { key: key.to_string(), value }
}

/// `KeyValue` has only the traits the tutorial requires, so tests compare `(key, value)` pairs.
fn pairs(entries: &[KeyValue]) -> Vec<(String, u64)> {
    entries.iter().map(|e| (e.key.clone(), e.value)).collect()
}

fn expected(items: &[(&str, u64)]) -> Vec<(String, u64)> {
    items.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

const CLUSTER: [NodeId; 3] = [1, 2, 3];
const CONFIGURATION_ID: u32 = 1;

/// The tutorial's "Creating a Node" code for any pid of the three-server cluster.
fn tutorial_config(my_pid: NodeId) -> SequencePaxosConfig {
    let configuration_id = CONFIGURATION_ID;
    let my_peers: Vec<NodeId> = CLUSTER.iter().copied().filter(|p| *p != my_pid).collect();

    let mut sp_config = SequencePaxosConfig::default();
    sp_config.set_configuration_id(configuration_id);
    sp_config.set_pid(my_pid);
    sp_config.set_peers(my_peers);
    sp_config
}

/// The decided entries of a replica, from index 0; panics on a compacted or StopSign entry,
/// which these tests never create.
fn decided<S: Storage<KeyValue, ()>>(sp: &SequencePaxos<KeyValue, (), S>) -> Vec<(String, u64)> {
    let entries = sp.read_decided_suffix(0).unwrap_or_default();
    let values: Vec<KeyValue> = entries
        .into_iter()
        .map(|entry| match entry {
            LogEntry::Decided(kv) => kv,
            other => panic!("only decided entries expected, found {other:?}"),
        })
        .collect();
    pairs(&values)
}

// ---- A hand-driven network of three replicas. ----

struct Network<S: Storage<KeyValue, ()>> {
    replicas: BTreeMap<NodeId, SequencePaxos<KeyValue, (), S>>,
    in_flight: VecDeque<omnipaxos_core::messages::PaxosMessage<KeyValue, ()>>,
    outcomes: BTreeMap<ProposalId, ProposalOutcome>,
    /// Messages addressed to a replica that is down.
    lost: usize,
}

impl<S: Storage<KeyValue, ()>> Network<S> {
    fn new(replicas: BTreeMap<NodeId, SequencePaxos<KeyValue, (), S>>) -> Self {
        Network { replicas, in_flight: VecDeque::new(), outcomes: BTreeMap::new(), lost: 0 }
    }

    fn replica(&mut self, pid: NodeId) -> &mut SequencePaxos<KeyValue, (), S> {
        self.replicas.get_mut(&pid).expect("replica is up")
    }

    /// Tells every replica that `pid` leads with ballot `Ballot::with(1, round, 0, pid)`.
    fn elect(&mut self, round: u32, pid: NodeId) {
        let ballot = Ballot::with(CONFIGURATION_ID, round, 0, pid);
        for sp in self.replicas.values_mut() {
            sp.handle_leader(ballot).expect("handle_leader");
        }
        self.deliver_all();
    }

    /// Flushes every replica and queues what it sends; records proposal outcomes.
    fn collect(&mut self) {
        let mut outgoing = Vec::new();
        for sp in self.replicas.values_mut() {
            sp.take_outgoing_messages(&mut outgoing).expect("take_outgoing_messages");
            let mut outcomes = Vec::new();
            sp.take_proposal_outcomes(&mut outcomes);
            for (id, outcome) in outcomes {
                assert!(self.outcomes.insert(id, outcome).is_none(), "{id} settled twice");
            }
        }
        self.in_flight.extend(outgoing);
    }

    /// Delivers messages until none are in flight (bounded: the cluster must go quiet).
    /// Delivers until nothing is in flight, asking every replica once more when none sends
    /// anything (an idle replica releases decisions it held back to piggyback them).
    fn deliver_all(&mut self) {
        let mut idle = false;
        for _ in 0..10_000 {
            self.collect();
            let Some(message) = self.in_flight.pop_front() else {
                if idle {
                    return;
                }
                idle = true;
                continue;
            };
            idle = false;
            match self.replicas.get_mut(&message.to) {
                Some(sp) => sp.handle(message).expect("handle"),
                None => self.lost += 1,
            }
        }
        panic!("the cluster did not go quiet");
    }

    /// Ticks every replica `ticks` times, delivering everything after each tick.
    fn tick(&mut self, ticks: usize) {
        for _ in 0..ticks {
            for sp in self.replicas.values_mut() {
                sp.tick().expect("tick");
            }
            self.deliver_all();
        }
    }

    fn append(&mut self, pid: NodeId, entry: KeyValue) -> ProposalId {
        let id = self.replica(pid).append(entry).expect("append accepted");
        self.deliver_all();
        id
    }
}

// ---- Creating a node. ----

#[test]
#[allow(clippy::useless_vec)] // `_cluster` is the tutorial's code as written.
fn creating_a_node_as_in_the_tutorial_gives_an_empty_replica_2() {
    // configuration with id 1 and the following cluster
    let configuration_id = 1;
    let _cluster = vec![1, 2, 3];

    // create the replica 2 in this cluster (other replica instances are created similarly with
    // pid 1 and 3 on the other nodes)
    let my_pid = 2;
    let my_peers = vec![1, 3];

    let mut sp_config = SequencePaxosConfig::default();
    sp_config.set_configuration_id(configuration_id);
    sp_config.set_pid(my_pid);
    sp_config.set_peers(my_peers);

    let storage = MemoryStorage::<KeyValue, ()>::default();
    let mut sp = SequencePaxos::with(sp_config, storage);

    assert_eq!(sp.pid(), 2);
    assert_eq!(sp.get_decided_idx(), 0);
    assert_eq!(sp.get_current_leader(), None, "no leader before an election");
    assert!(!sp.is_accepting_leader());
    assert!(sp.read(0).is_none(), "the log is empty");
    // With no leader known, an append waits at the replica; nothing is decided.
    let id = sp.append(kv("a", 1)).expect("a follower takes proposals");
    assert_eq!(id.node, 2);
    let mut outcomes = Vec::new();
    sp.take_proposal_outcomes(&mut outcomes);
    assert!(outcomes.is_empty());
}

#[test]
fn creating_a_node_three_tutorial_replicas_replicate_key_value_entries() {
    let replicas = CLUSTER
        .iter()
        .map(|&pid| {
            let storage = MemoryStorage::<KeyValue, ()>::default();
            (pid, SequencePaxos::with(tutorial_config(pid), storage))
        })
        .collect();
    let mut net = Network::new(replicas);
    net.elect(2, 2);
    assert!(net.replica(2).is_accepting_leader());
    let at_leader = net.append(2, kv("a", 1));
    let at_follower = net.append(3, kv("b", 2));
    net.append(1, kv("a", 3));

    for pid in CLUSTER {
        assert_eq!(net.replica(pid).get_current_leader(), Some(2));
        assert_eq!(decided(net.replica(pid)), expected(&[("a", 1), ("b", 2), ("a", 3)]), "replica {pid}");
    }
    assert_eq!(net.outcomes.get(&at_leader), Some(&ProposalOutcome::Decided(0)));
    assert_eq!(net.outcomes.get(&at_follower), Some(&ProposalOutcome::Decided(1)));
    assert_eq!(net.outcomes.len(), 3, "every proposal settled once");
}

// ---- Configuration from HOCON. ----

#[test]
fn hocon_node2_conf_loads_the_tutorial_values() {
    let raw_cfg = HoconLoader::new()
        .load_file("tests/config/node2.conf")
        .expect("Failed to load hocon file")
        .hocon()
        .unwrap();

    let sp_config = SequencePaxosConfig::with_hocon(&raw_cfg);

    assert_eq!(sp_config.configuration_id(), 1);
    assert_eq!(sp_config.pid(), 2);
    assert_eq!(sp_config.log_file_path(), Some(std::path::Path::new("/sequencepaxos/logs")));
    assert!(sp_config.peers().is_empty(), "node2.conf names no peers");
    let defaults = SequencePaxosConfig::default();
    assert_eq!(sp_config.buffer_size(), defaults.buffer_size());
    assert_eq!(sp_config.batch_size(), defaults.batch_size());
    assert_eq!(sp_config.resend_message_tick_timeout(), defaults.resend_message_tick_timeout());
    sp_config.validate().expect("a single-server configuration is valid");
}

#[test]
fn hocon_config_with_peers_set_equals_the_one_built_with_setters() {
    let raw_cfg = HoconLoader::new()
        .load_file("tests/config/node2.conf")
        .expect("Failed to load hocon file")
        .hocon()
        .unwrap();
    let mut from_file = SequencePaxosConfig::with_hocon(&raw_cfg);
    from_file.set_peers(vec![1, 3]);

    let mut by_hand = tutorial_config(2);
    by_hand.set_log_file_path("/sequencepaxos/logs");
    assert_eq!(from_file, by_hand);
}

// ---- Crash recovery. ----

type CrashReplica = SequencePaxos<KeyValue, (), CrashableStorage<KeyValue, ()>>;

fn crashable_network() -> Network<CrashableStorage<KeyValue, ()>> {
    let replicas: BTreeMap<NodeId, CrashReplica> = CLUSTER
        .iter()
        .map(|&pid| (pid, SequencePaxos::with(tutorial_config(pid), CrashableStorage::default())))
        .collect();
    Network::new(replicas)
}

/// Crashes `pid`, losing every write it did not flush; returns what its disk holds.
fn crash(net: &mut Network<CrashableStorage<KeyValue, ()>>, pid: NodeId) -> CrashableStorage<KeyValue, ()> {
    let crashed = net.replicas.remove(&pid).expect("replica is up");
    crashed.storage().crash(CrashKeep::Nothing)
}

#[test]
fn crash_recovery_a_restarted_replica_keeps_decided_entries_and_catches_up() {
    let mut net = crashable_network();
    let ballot = Ballot::with(CONFIGURATION_ID, 2, 0, 1);
    net.elect(2, 1);
    net.append(2, kv("a", 1));
    net.append(1, kv("b", 2));
    assert_eq!(decided(net.replica(2)), expected(&[("a", 1), ("b", 2)]));
    // The stored decided index trails by at most a tick (a decision costs no fsync of its own).
    net.tick(1);

    /* Restarting our node after a crash... */
    let sp_config = tutorial_config(2);
    let recovered_storage = crash(&mut net, 2); // the recovered persistent state.
    net.append(3, kv("c", 3));
    assert!(net.lost > 0, "messages to the crashed replica were lost");
    let mut recovered_paxos = SequencePaxos::with(sp_config, recovered_storage);
    recovered_paxos.fail_recovery();

    assert_eq!(decided(&recovered_paxos), expected(&[("a", 1), ("b", 2)]), "decided entries survive");
    assert_eq!(recovered_paxos.get_promise(), ballot, "the promise survives");
    assert!(recovered_paxos.read(2).is_none(), "c=3 was decided while replica 2 was down");

    net.replicas.insert(2, recovered_paxos);
    net.deliver_all();
    assert_eq!(decided(net.replica(2)), expected(&[("a", 1), ("b", 2), ("c", 3)]), "caught up");
    let after_restart = net.append(2, kv("d", 4));
    assert_eq!(net.outcomes.get(&after_restart), Some(&ProposalOutcome::Decided(3)));
    for pid in CLUSTER {
        let log = decided(net.replica(pid));
        assert_eq!(log, expected(&[("a", 1), ("b", 2), ("c", 3), ("d", 4)]), "replica {pid}");
    }
}

#[test]
fn crash_recovery_a_restarted_leader_follows_the_new_leader() {
    let mut net = crashable_network();
    net.elect(2, 1);
    net.append(1, kv("a", 1));
    let recovered_storage = crash(&mut net, 1);
    net.elect(3, 3);
    net.append(2, kv("b", 2));

    let mut recovered_paxos = SequencePaxos::with(tutorial_config(1), recovered_storage);
    recovered_paxos.fail_recovery();
    assert!(!recovered_paxos.is_accepting_leader(), "a restarted leader does not lead");
    assert_eq!(recovered_paxos.get_promise(), Ballot::with(CONFIGURATION_ID, 2, 0, 1));
    net.replicas.insert(1, recovered_paxos);
    // The recovering replica's PrepareReq went to every peer; the leader resynchronises it.
    net.deliver_all();
    net.tick(25);
    assert_eq!(net.replica(1).get_promise(), Ballot::with(CONFIGURATION_ID, 3, 0, 3));
    assert_eq!(decided(net.replica(1)), expected(&[("a", 1), ("b", 2)]));
    net.append(1, kv("c", 3));
    for pid in CLUSTER {
        assert_eq!(decided(net.replica(pid)), expected(&[("a", 1), ("b", 2), ("c", 3)]), "replica {pid}");
    }
}

#[test]
fn crash_recovery_loses_unflushed_writes_and_the_replica_catches_up_again() {
    let mut net = crashable_network();
    net.elect(2, 1);
    net.append(1, kv("a", 1));
    net.tick(1); // the stored decided index trails by at most a tick
                 // The leader proposes b=2; replica 3 handles the leader's messages (accepting b=2) but
                 // crashes before its next take_outgoing_messages, so the write was never flushed.
    net.replica(1).append(kv("b", 2)).expect("append accepted");
    let mut from_leader = Vec::new();
    net.replica(1).take_outgoing_messages(&mut from_leader).expect("take_outgoing_messages");
    let mut to_replica_3 = 0;
    for message in from_leader.into_iter().filter(|m| m.to == 3) {
        net.replica(3).handle(message).expect("handle");
        to_replica_3 += 1;
    }
    assert!(to_replica_3 > 0, "the leader sent b=2 to replica 3");
    assert!(matches!(net.replica(3).read(1), Some(LogEntry::Undecided(ref e)) if e.key == "b"));
    assert!(net.replica(3).storage().unflushed_calls() > 0);

    let recovered_storage = crash(&mut net, 3);
    let mut recovered_paxos = SequencePaxos::with(tutorial_config(3), recovered_storage);
    recovered_paxos.fail_recovery();
    assert_eq!(decided(&recovered_paxos), expected(&[("a", 1)]));
    assert!(recovered_paxos.read(1).is_none(), "the unflushed b=2 is gone");

    net.replicas.insert(3, recovered_paxos);
    net.deliver_all();
    net.tick(25);
    for pid in CLUSTER {
        assert_eq!(decided(net.replica(pid)), expected(&[("a", 1), ("b", 2)]), "replica {pid}");
    }
}
