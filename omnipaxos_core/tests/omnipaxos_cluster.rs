//! The combined facade (Sequence Paxos + Ballot Leader Election) on a deterministic,
//! tick-driven network with per-link connectivity: elections, leader failure, and the three
//! partial-connectivity scenarios of the Omni-Paxos paper (quorum-loss, constrained election,
//! chained), where the cluster must keep deciding while one server reaches a quorum.

use std::collections::{BTreeMap, BTreeSet};

use omnipaxos_core::{
    messages::Message,
    sequence_paxos::SequencePaxosConfig,
    util::{LogEntry, NodeId},
    OmniPaxos, OmniPaxosConfig,
};
use omnipaxos_storage::crash_storage::{CrashKeep, CrashableStorage};

const HB_DELAY_TICKS: u64 = 5;

type Replica = OmniPaxos<u64, (), CrashableStorage<u64, ()>>;

struct Net {
    pids: Vec<NodeId>,
    replicas: BTreeMap<NodeId, Replica>,
    configs: BTreeMap<NodeId, OmniPaxosConfig>,
    crashed: BTreeMap<NodeId, CrashableStorage<u64, ()>>,
    down: BTreeSet<(NodeId, NodeId)>,
    now: u64,
    /// (tick, pid, leader pid) each time a replica's view of the leader changes.
    leader_views: Vec<(u64, NodeId, Option<NodeId>)>,
}

fn config(pid: NodeId, pids: &[NodeId]) -> OmniPaxosConfig {
    let mut sp = SequencePaxosConfig::default();
    sp.set_configuration_id(1);
    sp.set_pid(pid);
    sp.set_peers(pids.iter().copied().filter(|&p| p != pid).collect());
    sp.set_resend_message_tick_timeout(10);
    let mut config = OmniPaxosConfig::new(sp);
    config.set_hb_delay(HB_DELAY_TICKS);
    config
}

impl Net {
    fn new(pids: &[NodeId]) -> Net {
        let configs: BTreeMap<_, _> = pids.iter().map(|&p| (p, config(p, pids))).collect();
        let replicas = configs
            .iter()
            .map(|(&p, c)| (p, OmniPaxos::with(c.clone(), CrashableStorage::default())))
            .collect();
        Net {
            pids: pids.to_vec(),
            replicas,
            configs,
            crashed: BTreeMap::new(),
            down: BTreeSet::new(),
            now: 0,
            leader_views: Vec::new(),
        }
    }

    /// One tick: every replica ticks, then messages are delivered until none are left.
    fn tick(&mut self) {
        self.now += 1;
        for replica in self.replicas.values_mut() {
            replica.tick().expect("tick");
        }
        for _ in 0..1000 {
            let mut in_flight: Vec<Message<u64, ()>> = Vec::new();
            for replica in self.replicas.values_mut() {
                replica.take_outgoing_messages(&mut in_flight).expect("take");
            }
            if in_flight.is_empty() {
                break;
            }
            for m in in_flight {
                let (from, to) = (m.get_sender(), m.get_receiver());
                if self.down.contains(&(from, to)) {
                    continue;
                }
                if let Some(r) = self.replicas.get_mut(&to) {
                    r.handle_incoming(m).expect("handle");
                }
            }
        }
        self.record_leader_views();
        self.check_safety();
    }

    fn ticks(&mut self, n: u64) {
        for _ in 0..n {
            self.tick();
        }
    }

    fn record_leader_views(&mut self) {
        for (&pid, r) in &self.replicas {
            let view = r.get_current_leader().map(|(l, _)| l);
            let last = self.leader_views.iter().rev().find(|(_, p, _)| *p == pid).map(|(_, _, v)| *v);
            if last != Some(view) {
                self.leader_views.push((self.now, pid, view));
            }
        }
    }

    fn leader_changes_since(&self, tick: u64) -> usize {
        self.leader_views.iter().filter(|(t, _, _)| *t > tick).count()
    }

    /// The leader every live replica agrees on and which reports itself ready.
    fn agreed_leader(&self) -> Option<NodeId> {
        let views: BTreeSet<Option<NodeId>> =
            self.replicas.values().map(|r| r.get_current_leader().map(|(l, _)| l)).collect();
        let leader = (*views.iter().next()?)?;
        let ready = self.replicas.get(&leader)?.get_current_leader() == Some((leader, true));
        (views.len() == 1 && ready).then_some(leader)
    }

    fn run_until_leader(&mut self, max_ticks: u64) -> NodeId {
        for _ in 0..max_ticks {
            if let Some(l) = self.agreed_leader() {
                return l;
            }
            self.tick();
        }
        panic!(
            "no leader after {max_ticks} ticks: {:?}",
            self.leader_views.iter().rev().take(10).collect::<Vec<_>>()
        );
    }

    /// Ticks until `pid` has decided at least `idx` entries; returns the ticks it took.
    fn run_until_decided(&mut self, pid: NodeId, idx: u64, max_ticks: u64) -> u64 {
        let start = self.now;
        while self.replicas[&pid].get_decided_idx() < idx {
            assert!(self.now - start < max_ticks, "replica {pid} did not decide {idx} in {max_ticks} ticks");
            self.tick();
        }
        self.now - start
    }

    fn decided(&self, pid: NodeId) -> Vec<u64> {
        let r = &self.replicas[&pid];
        r.read_decided_suffix(0)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|e| if let LogEntry::Decided(v) = e { Some(v) } else { None })
            .collect()
    }

    fn check_safety(&self) {
        let logs: Vec<Vec<u64>> = self.replicas.keys().map(|&p| self.decided(p)).collect();
        for a in &logs {
            for b in &logs {
                let common = a.len().min(b.len());
                assert_eq!(a[..common], b[..common], "decided logs diverge");
            }
        }
        for r in self.replicas.values() {
            r.check_invariants();
        }
    }

    fn set_link(&mut self, a: NodeId, b: NodeId, up: bool) {
        for link in [(a, b), (b, a)] {
            if up {
                self.down.remove(&link);
            } else {
                self.down.insert(link);
            }
        }
    }

    /// Only the listed undirected links are up.
    fn only_links(&mut self, links: &[(NodeId, NodeId)]) {
        for &a in &self.pids.clone() {
            for &b in &self.pids.clone() {
                if a != b {
                    self.down.insert((a, b));
                }
            }
        }
        for &(a, b) in links {
            self.set_link(a, b, true);
        }
    }

    fn heal(&mut self) {
        self.down.clear();
    }

    fn crash(&mut self, pid: NodeId) {
        let r = self.replicas.remove(&pid).expect("up");
        self.crashed.insert(pid, r.sequence_paxos().storage().crash(CrashKeep::Nothing));
    }

    fn restart(&mut self, pid: NodeId) {
        let storage = self.crashed.remove(&pid).expect("crashed");
        self.replicas.insert(pid, OmniPaxos::with(self.configs[&pid].clone(), storage));
    }

    fn append(&mut self, pid: NodeId, v: u64) {
        self.replicas.get_mut(&pid).unwrap().append(v).expect("append");
    }
}

#[test]
fn three_and_five_replicas_elect_one_leader_and_decide_appends_from_every_replica() {
    for n in [3u64, 5] {
        let pids: Vec<NodeId> = (1..=n).collect();
        let mut net = Net::new(&pids);
        let leader = net.run_until_leader(50);
        assert_eq!(leader, n, "equal priorities: the highest pid wins");
        for &p in &pids {
            net.append(p, p * 100);
        }
        net.run_until_decided(1, n, 50);
        net.ticks(3);
        let log = net.decided(1);
        assert_eq!(log.iter().collect::<BTreeSet<_>>().len(), n as usize);
        for &p in &pids {
            assert_eq!(net.decided(p), log);
        }
    }
}

#[test]
fn the_cluster_survives_the_crash_of_its_leader_and_its_restart() {
    let mut net = Net::new(&[1, 2, 3]);
    let first = net.run_until_leader(50);
    net.append(1, 1);
    net.run_until_decided(1, 1, 50);
    net.crash(first);
    let crash_tick = net.now;
    let second = net.run_until_leader(100);
    assert_ne!(second, first);
    let failover = net.now - crash_tick;
    assert!(failover <= 6 * HB_DELAY_TICKS, "failover took {failover} ticks");
    let survivor = if second == 1 { 2 } else { 1 };
    net.append(survivor, 2);
    net.run_until_decided(survivor, 2, 50);
    net.restart(first);
    net.ticks(4 * HB_DELAY_TICKS);
    assert_eq!(net.decided(first), vec![1, 2], "the restarted replica caught up");
}

/// Quorum-loss (paper, Fig. 1a): the leader stays up but keeps a link only to C, which is the
/// only server connected to everyone. C must take over and the cluster must keep deciding.
#[test]
fn quorum_loss_the_only_quorum_connected_server_takes_over() {
    let mut net = Net::new(&[1, 2, 3, 4, 5]);
    let leader = net.run_until_leader(50);
    assert_eq!(leader, 5);
    let c = 1;
    net.only_links(&[(c, 2), (c, 3), (c, 4), (c, 5)]);
    let start = net.now;
    net.append(c, 7);
    let ticks = net.run_until_decided(c, 1, 20 * HB_DELAY_TICKS);
    assert_eq!(net.agreed_leader_among(&[1, 2, 3, 4]), Some(c));
    let election_timeouts = ticks as f64 / HB_DELAY_TICKS as f64;
    assert!(election_timeouts <= 4.0, "first decision after {election_timeouts} election timeouts");
    assert!(net.now > start);
    // The old leader no longer looks like a working leader.
    let old = net.replicas[&5].get_current_leader();
    assert_ne!(old, Some((5, true)), "the isolated old leader must not report itself ready");
    // After healing, every replica converges on the same decided log.
    net.heal();
    net.append(5, 8);
    net.ticks(6 * HB_DELAY_TICKS);
    let log = net.decided(c);
    assert_eq!(log, vec![7, 8]);
    for pid in [1, 2, 3, 4, 5] {
        assert_eq!(net.decided(pid), log, "replica {pid} after healing");
    }
}

/// Constrained election (paper, Fig. 1b): the leader is gone and the only quorum-connected
/// server has a stale log. It must still be elected and must recover the decided entries.
#[test]
fn constrained_election_elects_the_quorum_connected_server_even_with_a_stale_log() {
    let mut net = Net::new(&[1, 2, 3, 4, 5]);
    assert_eq!(net.run_until_leader(50), 5);
    let c = 1;
    net.only_links(&[(2, 3), (2, 4), (2, 5), (3, 4), (3, 5), (4, 5)]);
    for v in 1..=3 {
        net.append(5, v);
    }
    net.run_until_decided(5, 3, 50);
    assert!(net.decided(c).is_empty(), "C missed every entry");
    // The leader crashes; the others keep a link only to C.
    net.crash(5);
    net.only_links(&[(c, 2), (c, 3), (c, 4)]);
    net.append(c, 4);
    let ticks = net.run_until_decided(c, 4, 20 * HB_DELAY_TICKS);
    assert_eq!(net.decided(c), vec![1, 2, 3, 4], "C recovered the decided entries and decided its own");
    let election_timeouts = ticks as f64 / HB_DELAY_TICKS as f64;
    assert!(election_timeouts <= 4.0, "first decision after {election_timeouts} election timeouts");
}

/// Chained (paper, Fig. 1c): A–B–C with A and C disconnected and C the leader. B keeps
/// following C; A must not take over, so the cluster keeps deciding with no leader changes.
#[test]
fn chained_partition_keeps_deciding_without_leader_changes() {
    let mut net = Net::new(&[1, 2, 3]);
    let leader = net.run_until_leader(50);
    assert_eq!(leader, 3);
    net.only_links(&[(1, 2), (2, 3)]);
    let start = net.now;
    let mut expected = 0;
    for round in 0..40 {
        net.append(2 + (round % 2), round);
        expected += 1;
        net.run_until_decided(3, expected, 3 * HB_DELAY_TICKS);
    }
    let changes = net.leader_changes_since(start);
    assert_eq!(changes, 0, "leader views changed: {:?}", &net.leader_views);
    assert_eq!(net.agreed_leader_among(&[2, 3]), Some(3));
}

impl Net {
    fn agreed_leader_among(&self, pids: &[NodeId]) -> Option<NodeId> {
        let views: BTreeSet<Option<NodeId>> =
            pids.iter().map(|p| self.replicas[p].get_current_leader().map(|(l, _)| l)).collect();
        if views.len() == 1 {
            *views.iter().next().unwrap()
        } else {
            None
        }
    }
}

/// Leader crash at every offset within a heartbeat round: election timeouts (ET = one heartbeat
/// round) from the crash to the first decision of an entry appended at a survivor right after
/// the crash. Deterministic (logical ticks); the figures are printed for the closing notes.
#[test]
fn leader_crash_failover_in_election_timeouts() {
    let mut results = Vec::new();
    for offset in 0..HB_DELAY_TICKS {
        let mut net = Net::new(&[1, 2, 3]);
        let leader = net.run_until_leader(50);
        net.ticks(3 * HB_DELAY_TICKS + offset);
        net.crash(leader);
        let survivor = if leader == 1 { 2 } else { 1 };
        let decided = net.replicas[&survivor].get_decided_idx();
        net.append(survivor, 1000 + offset);
        let ticks = net.run_until_decided(survivor, decided + 1, 20 * HB_DELAY_TICKS);
        results.push(ticks as f64 / HB_DELAY_TICKS as f64);
    }
    results.sort_by(f64::total_cmp);
    let median = results[results.len() / 2];
    let max = results[results.len() - 1];
    eprintln!("leader crash, 3 replicas: failover in ET: median {median:.2}, max {max:.2}, all {results:?}");
    assert!(max <= 2.0, "failover took {max} election timeouts");
}

/// The one-call builder, with shared fields set through `OmniPaxosConfig`'s setters (which set
/// both halves), and the typed error when one half is edited alone.
#[test]
fn the_builder_makes_a_replica_and_shared_fields_are_set_in_both_halves() {
    let mut config = OmniPaxosConfig::new(SequencePaxosConfig::default());
    config.set_configuration_id(1);
    config.set_pid(2);
    config.set_peers(vec![1, 3]);
    config.set_election_timeout_ticks(7);
    config.set_leader_priority(4);
    let replica: Replica = config.clone().build(CrashableStorage::default()).expect("valid configuration");
    assert_eq!(replica.ballot_leader_election().get_ballot().priority, 4);
    assert_eq!(config.ble.election_timeout_ticks(), 7);

    let mut edited_alone = config;
    edited_alone.sequence_paxos.set_peers(vec![1, 3, 4]);
    let error = edited_alone.build::<u64, (), _>(CrashableStorage::default()).err().expect("mismatch");
    assert!(error.to_string().contains("disagree on `peers`"), "{error}");
}
