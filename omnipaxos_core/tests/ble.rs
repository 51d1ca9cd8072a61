//! Ballot Leader Election against a deterministic in-memory network.
//!
//! The harness delivers queued messages until none are left, dropping those sent over a link
//! that is down, then ticks every server once. A harness round is `HB_DELAY_TICKS` such steps
//! and ends with the servers' round end. No sleeps, no clock, no randomness.
//! A failing assertion prints the last lines of the message trace.

use std::collections::{BTreeMap, BTreeSet};

use omnipaxos_core::ballot_leader_election::{
    BLEConfig, BLEMessage, Ballot, BallotLeaderElection, HeartbeatMsg, HeartbeatReply, HeartbeatRequest,
};
use omnipaxos_core::util::FlexibleQuorum;

const CONFIG_ID: u32 = 1;
const HB_DELAY_TICKS: u64 = 3;
/// How many trace lines a failing assertion prints.
const STORY_LINES: usize = 60;

fn config(pid: u64, cluster_size: u64, priority: u32) -> BLEConfig {
    let mut c = BLEConfig::default();
    c.set_configuration_id(CONFIG_ID);
    c.set_pid(pid);
    c.set_peers((1..=cluster_size).filter(|&p| p != pid).collect());
    c.set_priority(priority);
    c.set_hb_delay(HB_DELAY_TICKS);
    c
}

/// N servers, a directed link matrix and a trace of everything that happened.
struct Cluster {
    nodes: BTreeMap<u64, BallotLeaderElection>,
    /// Directed links `(from, to)` that drop every message.
    down: BTreeSet<(u64, u64)>,
    /// Every leader a server's `tick` reported, in order.
    leader_changes: BTreeMap<u64, Vec<Ballot>>,
    delivered: usize,
    rounds: u64,
    trace: Vec<String>,
}

impl Cluster {
    /// Servers `1..=priorities.len()`; server `i` has priority `priorities[i-1]`.
    fn new(priorities: &[u32]) -> Cluster {
        let n = priorities.len() as u64;
        let configs = (1..=n).map(|pid| config(pid, n, priorities[pid as usize - 1])).collect();
        Cluster::with_configs(configs)
    }

    fn with_configs(configs: Vec<BLEConfig>) -> Cluster {
        let nodes: BTreeMap<u64, BallotLeaderElection> =
            configs.into_iter().map(|c| (c.pid(), BallotLeaderElection::with(c))).collect();
        let leader_changes = nodes.keys().map(|&pid| (pid, vec![])).collect();
        Cluster { nodes, down: BTreeSet::new(), leader_changes, delivered: 0, rounds: 0, trace: vec![] }
    }

    fn node(&self, pid: u64) -> &BallotLeaderElection {
        &self.nodes[&pid]
    }

    fn node_mut(&mut self, pid: u64) -> &mut BallotLeaderElection {
        self.nodes.get_mut(&pid).unwrap()
    }

    fn tick_all(&mut self) {
        for (&pid, node) in self.nodes.iter_mut() {
            if let Some(leader) = node.tick() {
                self.trace.push(format!("{pid}: leader -> {leader}"));
                self.leader_changes.get_mut(&pid).unwrap().push(leader);
            }
        }
    }

    fn deliver_until_quiet(&mut self) {
        loop {
            let mut in_flight: Vec<BLEMessage> = vec![];
            for node in self.nodes.values_mut() {
                node.take_outgoing_messages(&mut in_flight);
            }
            if in_flight.is_empty() {
                return;
            }
            for m in in_flight {
                let up = !self.down.contains(&(m.from, m.to));
                self.trace.push(format!("{m}{}", if up { "" } else { "  (dropped)" }));
                if let (true, Some(receiver)) = (up, self.nodes.get_mut(&m.to)) {
                    receiver.handle(m);
                    self.delivered += 1;
                }
            }
        }
    }

    fn run_rounds(&mut self, rounds: u64) {
        for _ in 0..rounds {
            self.trace.push(format!("--- round {} ---", self.rounds + 1));
            // Deliver first: a link change between rounds then hits the round's requests.
            for _ in 0..HB_DELAY_TICKS {
                self.deliver_until_quiet();
                self.tick_all();
            }
            self.rounds += 1;
        }
    }

    /// Runs whole rounds until `done` holds; returns how many rounds that took.
    fn run_until(&mut self, max_rounds: u64, done: impl Fn(&Cluster) -> bool) -> u64 {
        for round in 1..=max_rounds {
            self.run_rounds(1);
            if done(self) {
                return round;
            }
        }
        panic!("not done after {max_rounds} rounds\n{}", self.story());
    }

    fn set_link(&mut self, a: u64, b: u64, up: bool) {
        for link in [(a, b), (b, a)] {
            if up {
                self.down.remove(&link);
            } else {
                self.down.insert(link);
            }
        }
        self.trace.push(format!("link {a}<->{b} {}", if up { "up" } else { "down" }));
    }

    fn isolate(&mut self, pid: u64) {
        let others: Vec<u64> = self.nodes.keys().copied().filter(|&p| p != pid).collect();
        for other in others {
            self.set_link(pid, other, false);
        }
    }

    /// Leaves up only the links listed.
    fn only_links(&mut self, links: &[(u64, u64)]) {
        let pids: Vec<u64> = self.nodes.keys().copied().collect();
        for &a in &pids {
            for &b in pids.iter().filter(|&&b| b > a) {
                let up = links.contains(&(a, b)) || links.contains(&(b, a));
                self.set_link(a, b, up);
            }
        }
    }

    /// True if `pid` considers itself the leader.
    fn leads(&self, pid: u64) -> bool {
        let node = self.node(pid);
        node.get_current_leader() == Some(node.get_ballot())
    }

    /// True if every listed server follows `leader`'s current ballot.
    fn all_follow(&self, pids: &[u64], leader: u64) -> bool {
        let ballot = self.node(leader).get_ballot();
        self.leads(leader) && pids.iter().all(|&p| self.node(p).get_current_leader() == Some(ballot))
    }

    fn change_counts(&self) -> BTreeMap<u64, usize> {
        self.leader_changes.iter().map(|(&pid, changes)| (pid, changes.len())).collect()
    }

    fn story(&self) -> String {
        let start = self.trace.len().saturating_sub(STORY_LINES);
        self.trace[start..].join("\n")
    }
}

/// Elects in a fully connected cluster and checks everyone agrees on `expected` as the leader.
fn elect(cluster: &mut Cluster, expected: u64) {
    let pids: Vec<u64> = cluster.nodes.keys().copied().collect();
    let rounds =
        cluster.run_until(5, |c| c.all_follow(&pids, expected) && pids.iter().all(|&p| c.node(p).is_happy()));
    assert_eq!(rounds, 2, "elected in round 1, followers happy in round 2\n{}", cluster.story());
}

fn expect_ballot(n: u32, priority: u32, pid: u64) -> Ballot {
    Ballot::with(CONFIG_ID, n, priority, pid)
}

#[test]
fn three_nodes_elect_the_highest_priority() {
    let mut cluster = Cluster::new(&[1, 3, 2]);
    elect(&mut cluster, 2);
    let leader = expect_ballot(1, 3, 2);
    for pid in 1..=3 {
        let node = cluster.node(pid);
        assert_eq!(node.get_current_leader(), Some(leader), "server {pid}\n{}", cluster.story());
        assert!(node.is_quorum_connected());
        assert_eq!(cluster.leader_changes[&pid], vec![leader], "one change per server");
    }
    assert_eq!((1..=3).filter(|&p| cluster.leads(p)).count(), 1, "exactly one leader");
}

#[test]
fn five_nodes_elect_the_highest_priority_not_the_highest_pid() {
    let mut cluster = Cluster::new(&[2, 5, 1, 4, 3]);
    elect(&mut cluster, 2);
    assert_eq!((1..=5).filter(|&p| cluster.leads(p)).count(), 1, "exactly one leader");
    cluster.run_rounds(20);
    let counts = cluster.change_counts();
    assert!(counts.values().all(|&c| c == 1), "a stable cluster changes no leader: {counts:?}");
}

#[test]
fn equal_priorities_elect_the_highest_pid() {
    let mut cluster = Cluster::new(&[7, 7, 7, 7, 7]);
    elect(&mut cluster, 5);
}

#[test]
fn single_node_elects_itself_at_the_first_round_end() {
    let mut node = BallotLeaderElection::with(config(1, 1, 0));
    for _ in 1..HB_DELAY_TICKS {
        assert_eq!(node.tick(), None, "no round ended yet");
    }
    let own = expect_ballot(1, 0, 1);
    assert_eq!(node.tick(), Some(own));
    assert_eq!(node.get_current_leader(), Some(own));
    assert!(node.is_happy() && node.is_quorum_connected());
    let mut out = vec![];
    for _ in 0..10 * HB_DELAY_TICKS {
        assert_eq!(node.tick(), None, "the leader never changes again");
    }
    node.take_outgoing_messages(&mut out);
    assert!(out.is_empty(), "a single server has nobody to talk to: {out:?}");
}

#[test]
fn initial_delay_sets_the_first_round_end() {
    let mut c = config(1, 1, 0);
    c.set_initial_delay(1);
    let mut node = BallotLeaderElection::with(c);
    assert!(node.tick().is_some(), "the first round ends after initial_delay ticks");
    for _ in 1..HB_DELAY_TICKS {
        assert_eq!(node.tick(), None);
    }
}

#[test]
fn heartbeat_traffic_is_two_messages_per_link_per_round() {
    for n in [3u64, 5] {
        let priorities: Vec<u32> = (1..=n as u32).collect();
        let mut cluster = Cluster::new(&priorities);
        elect(&mut cluster, n);
        let before = cluster.delivered;
        cluster.run_rounds(10);
        let per_round = (cluster.delivered - before) / 10;
        let expected = (n * (n - 1) * 2) as usize;
        assert_eq!(per_round, expected, "{n} servers: messages per round");
        assert_eq!((cluster.delivered - before) % 10, 0, "every round costs the same");
    }
}

#[test]
fn leader_crash_elects_the_highest_priority_survivor() {
    let mut cluster = Cluster::new(&[1, 2, 3, 4, 5]);
    elect(&mut cluster, 5);
    let old = cluster.node(5).get_ballot();
    let before = cluster.change_counts();
    cluster.isolate(5);
    let survivors = [1, 2, 3, 4];
    let rounds = cluster.run_until(10, |c| c.all_follow(&survivors, 4) && c.node(4).is_happy());
    // The silent leader is suspected as soon as its reply is overdue; the survivors ask each
    // other again at once and take over within that round; the highest ballot is followed at
    // the next round end.
    assert_eq!(rounds, 2, "suspect and take over, followed\n{}", cluster.story());
    let new = cluster.node(4).get_ballot();
    assert_eq!(new.n, old.n + 1, "the new leader's round is just above the old one");
    let crashed = cluster.node(5);
    assert!(!crashed.is_happy(), "an isolated leader knows it lost its quorum");
    assert!(!crashed.is_quorum_connected());
    assert_eq!(crashed.get_current_leader(), Some(old), "it cannot hear anybody else");
    cluster.run_rounds(20);
    assert!(cluster.all_follow(&survivors, 4), "stable afterwards\n{}", cluster.story());
    // Every survivor is quorum-connected and hears only unhappy peers, so all take over in the
    // same round; the highest ballot wins one round later. Nobody changes more often.
    let after = cluster.change_counts();
    let changes: Vec<usize> = (1..=5).map(|p| after[&p] - before[&p]).collect();
    assert_eq!(changes, vec![2, 2, 2, 1, 0], "leader changes per server");
}

#[test]
fn isolated_leader_rejoins_as_a_follower() {
    let mut cluster = Cluster::new(&[1, 2, 3, 4, 5]);
    elect(&mut cluster, 5);
    cluster.isolate(5);
    cluster.run_until(10, |c| c.all_follow(&[1, 2, 3, 4], 4));
    cluster.down.clear();
    let rounds = cluster.run_until(5, |c| c.all_follow(&[1, 2, 3, 4, 5], 4) && c.node(5).is_happy());
    assert_eq!(rounds, 1, "the old leader hears the new one declare itself\n{}", cluster.story());
    let changes = cluster.leader_changes[&5].len();
    cluster.run_rounds(20);
    assert_eq!(cluster.leader_changes[&5].len(), changes, "no flapping after the heal");
    assert!(cluster.all_follow(&[1, 2, 3, 4, 5], 4));
}

/// Paper scenario (a): the leader keeps a link only to C; every other server is connected only
/// to C. C is the only quorum-connected server and must take over.
#[test]
fn quorum_loss_the_only_quorum_connected_server_takes_over() {
    let (leader, c) = (5, 3);
    let mut cluster = Cluster::new(&[1, 2, 3, 4, 5]);
    elect(&mut cluster, leader);
    let before = cluster.change_counts();
    cluster.only_links(&[(c, 1), (c, 2), (c, 4), (c, leader)]);
    cluster.run_rounds(1);
    assert!(!cluster.node(leader).is_happy(), "the leader lost its quorum\n{}", cluster.story());
    assert!(!cluster.node(leader).is_quorum_connected());
    let rounds = 1 + cluster.run_until(10, |c3| c3.all_follow(&[1, 2, 4, leader], c));
    assert_eq!(rounds, 3, "unhappy, take over, followed\n{}", cluster.story());
    let new = cluster.node(c);
    assert!(new.is_happy() && new.is_quorum_connected());
    assert_eq!(new.get_ballot().n, 2);
    cluster.run_rounds(20);
    assert!(cluster.all_follow(&[1, 2, 4, leader], c), "stable afterwards\n{}", cluster.story());
    let after = cluster.change_counts();
    for pid in 1..=5 {
        assert_eq!(after[&pid] - before[&pid], 1, "server {pid} changed leader once: {after:?}");
    }
    assert!(!cluster.node(leader).is_quorum_connected(), "the old leader is still cut off");
}

/// Paper scenario (b): the leader fails and only server 1, the lowest priority, is
/// quorum-connected (to 2, 3 and 4, which are not connected to each other).
#[test]
fn constrained_election_elects_the_only_quorum_connected_server() {
    let mut cluster = Cluster::new(&[1, 2, 3, 4, 5]);
    elect(&mut cluster, 5);
    let old = cluster.node(5).get_ballot();
    let before = cluster.change_counts();
    cluster.only_links(&[(1, 2), (1, 3), (1, 4)]);
    let rounds = cluster.run_until(10, |c| c.all_follow(&[2, 3, 4], 1) && c.node(1).is_happy());
    assert_eq!(rounds, 2, "suspect and take over, followed\n{}", cluster.story());
    assert!(cluster.node(1).is_quorum_connected());
    for pid in [2, 3, 4] {
        assert!(!cluster.node(pid).is_quorum_connected(), "server {pid} has one neighbour");
    }
    let isolated = cluster.node(5);
    assert!(!isolated.is_happy() && !isolated.is_quorum_connected());
    assert_eq!(isolated.get_current_leader(), Some(old));
    cluster.run_rounds(20);
    let after = cluster.change_counts();
    for pid in 1..=4 {
        assert_eq!(after[&pid] - before[&pid], 1, "server {pid} changed leader once: {after:?}");
    }
    assert_eq!(after[&5], before[&5], "the isolated server changes nothing");
}

/// Paper scenario (c): A–B–C with A and C not connected and C the leader. B hears C and stays
/// happy, so A, though unhappy and quorum-connected through B, must not take over.
#[test]
fn chained_scenario_changes_no_leader() {
    let (a, b, c) = (1, 2, 3);
    let mut cluster = Cluster::new(&[2, 1, 3]);
    elect(&mut cluster, c);
    let before = cluster.change_counts();
    let a_ballot = cluster.node(a).get_ballot();
    cluster.set_link(a, c, false);
    cluster.run_rounds(30);
    assert_eq!(cluster.change_counts(), before, "no leader change at all\n{}", cluster.story());
    assert!(cluster.leads(c) && cluster.node(c).is_happy());
    assert!(cluster.node(b).is_happy(), "B hears its happy leader");
    assert!(!cluster.node(a).is_happy(), "A does not hear its leader");
    assert!(cluster.node(a).is_quorum_connected(), "A could take over, but must not");
    assert_eq!(cluster.node(a).get_ballot(), a_ballot, "A never bumped its ballot");
}

#[test]
fn set_priority_above_the_leader_takes_over_at_the_next_round_end() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    elect(&mut cluster, 3);
    let old = cluster.node(3).get_ballot();
    cluster.node_mut(1).set_priority(10);
    assert_eq!(cluster.node(1).get_ballot().priority, 10, "a follower's ballot carries it now");
    cluster.run_rounds(1);
    assert_eq!(cluster.node(1).get_ballot(), expect_ballot(old.n + 1, 10, 1));
    assert!(cluster.leads(1), "took over at the round end\n{}", cluster.story());
    let rounds = cluster.run_until(3, |c| c.all_follow(&[2, 3], 1));
    assert_eq!(rounds, 1, "the others follow one round later");
    cluster.run_rounds(20);
    assert!(cluster.all_follow(&[2, 3], 1) && cluster.node(1).is_happy());
    assert_eq!(cluster.change_counts(), BTreeMap::from([(1, 2), (2, 2), (3, 2)]));
}

#[test]
fn set_priority_not_above_the_leader_changes_no_leader() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    elect(&mut cluster, 3);
    let before = cluster.change_counts();
    cluster.node_mut(1).set_priority(3);
    cluster.node_mut(3).set_priority(0);
    assert_eq!(cluster.node(3).get_ballot(), expect_ballot(1, 3, 3), "a leader keeps its ballot");
    cluster.run_rounds(10);
    assert_eq!(cluster.change_counts(), before, "equal priority does not preempt\n{}", cluster.story());
    assert_eq!(cluster.node(1).get_ballot(), expect_ballot(1, 3, 1));
}

#[test]
fn set_priority_before_the_first_round_wins_the_first_election() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    cluster.node_mut(1).set_priority(9);
    elect(&mut cluster, 1);
    assert_eq!(cluster.node(1).get_ballot(), expect_ballot(1, 9, 1));
}

#[test]
fn set_priority_without_quorum_lapses() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    elect(&mut cluster, 3);
    cluster.isolate(1);
    cluster.node_mut(1).set_priority(10);
    cluster.run_rounds(1);
    assert!(!cluster.leads(1), "not quorum-connected: no takeover\n{}", cluster.story());
    cluster.down.clear();
    cluster.run_rounds(5);
    assert!(cluster.all_follow(&[1, 2], 3), "the request lapsed\n{}", cluster.story());
}

#[test]
fn recover_uses_round_zero_and_the_persisted_promise() {
    let promise = expect_ballot(4, 2, 2);
    let mut node = BallotLeaderElection::with(config(1, 3, 5));
    node.recover(promise);
    assert_eq!(node.get_ballot(), expect_ballot(0, 5, 1));
    assert_eq!(node.get_current_leader(), Some(promise));
    assert!(!node.is_happy());
}

#[test]
fn recovered_ex_leader_does_not_lead_with_its_old_ballot() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    elect(&mut cluster, 3);
    let old = cluster.node(3).get_ballot();
    let mut restarted = BallotLeaderElection::with(config(3, 3, 3));
    restarted.recover(old);
    assert_eq!(restarted.get_ballot(), expect_ballot(0, 3, 3));
    assert_eq!(restarted.get_current_leader(), Some(old));
    cluster.nodes.insert(3, restarted);
    let reported_before = cluster.leader_changes[&3].len();
    // The others notice that 3 no longer leads with its old ballot and one of them takes over
    // in a fresh round; 3 follows it.
    let leader_of = |c: &Cluster| c.node(1).get_current_leader().map(|b| b.pid).unwrap_or(0);
    cluster.run_until(6, |c| {
        let leader = leader_of(c);
        leader != 0 && c.all_follow(&[1, 2, 3], leader) && c.node(leader).get_ballot() > old
    });
    let new = cluster.node(leader_of(&cluster)).get_ballot();
    assert_eq!(new.n, old.n + 1, "a fresh round\n{}", cluster.story());
    assert!(cluster.node(3).get_ballot() != old, "3 never leads with its old ballot again");
    let reported = &cluster.leader_changes[&3][reported_before..];
    assert!(!reported.is_empty() && !reported.contains(&old), "never its old ballot: {reported:?}");
}

#[test]
fn set_paxos_state_adopts_a_higher_promise() {
    let mut cluster = Cluster::new(&[1, 2, 3]);
    elect(&mut cluster, 3);
    let others = expect_ballot(5, 0, 2);
    cluster.node_mut(1).set_paxos_state(others, false);
    assert_eq!(cluster.node(1).get_current_leader(), Some(others));
    let own = expect_ballot(6, 1, 1);
    cluster.node_mut(1).set_paxos_state(own, true);
    assert_eq!(cluster.node(1).get_ballot(), own, "our own promise becomes our ballot");
    assert!(cluster.leads(1));
    cluster.node_mut(1).set_paxos_state(expect_ballot(2, 9, 3), false);
    assert_eq!(cluster.node(1).get_current_leader(), Some(own), "a lower promise changes nothing");
    let rounds = cluster.run_until(3, |c| c.all_follow(&[2, 3], 1));
    assert_eq!(rounds, 1, "the others hear it declare itself\n{}", cluster.story());
}

/// Five servers with read quorum 4 and write quorum 2. The leader keeps only two followers:
/// enough for the accept phase, not for a Prepare.
#[test]
fn accepting_leader_judges_happiness_by_the_write_quorum() {
    let flexible = FlexibleQuorum { read_quorum_size: 4, write_quorum_size: 2 };
    let run = |accepting: bool| -> Cluster {
        let configs = (1..=5)
            .map(|pid| {
                let mut c = config(pid, 5, pid as u32);
                c.set_flexible_quorum(Some(flexible));
                c
            })
            .collect();
        let mut cluster = Cluster::with_configs(configs);
        elect(&mut cluster, 5);
        let ballot = cluster.node(5).get_ballot();
        cluster.node_mut(5).set_paxos_state(ballot, accepting);
        cluster.set_link(5, 3, false);
        cluster.set_link(5, 4, false);
        cluster.run_rounds(6);
        cluster
    };
    let accepting = run(true);
    assert!(accepting.node(5).is_happy(), "two followers + itself form a write quorum");
    assert!(accepting.all_follow(&[1, 2, 3, 4], 5), "nobody takes over\n{}", accepting.story());
    let preparing = run(false);
    assert!(!preparing.all_follow(&[1, 2, 3, 4], 5), "without a read quorum it is replaced");
}

#[test]
fn messages_from_unknown_servers_or_configurations_are_ignored() {
    let mut node = BallotLeaderElection::with(config(1, 3, 0));
    let mut out = vec![];
    node.take_outgoing_messages(&mut out);
    out.clear();
    let request = |from, to, config_id| BLEMessage {
        from,
        to,
        config_id,
        msg: HeartbeatMsg::Request(HeartbeatRequest { round: 1 }),
    };
    node.handle(request(9, 1, CONFIG_ID));
    node.handle(request(2, 1, CONFIG_ID + 1));
    node.handle(request(2, 7, CONFIG_ID));
    node.take_outgoing_messages(&mut out);
    assert!(out.is_empty(), "answered a foreign request: {out:?}");
    node.handle(request(2, 1, CONFIG_ID));
    node.take_outgoing_messages(&mut out);
    assert_eq!(out.len(), 1, "a valid request is answered");

    let reply = |from, config_id, round, ballot: Ballot| BLEMessage {
        from,
        to: 1,
        config_id,
        msg: HeartbeatMsg::Reply(HeartbeatReply {
            round,
            ballot,
            leader: ballot,
            happy: true,
            quorum_connected: true,
        }),
    };
    node.handle(reply(9, CONFIG_ID, 1, expect_ballot(50, 0, 9)));
    node.handle(reply(2, CONFIG_ID + 1, 1, Ballot::with(CONFIG_ID + 1, 50, 0, 2)));
    node.handle(reply(2, CONFIG_ID, 1, expect_ballot(50, 0, 3)));
    node.handle(reply(3, CONFIG_ID, 0, expect_ballot(50, 0, 3)));
    for _ in 0..HB_DELAY_TICKS {
        assert_eq!(node.tick(), None, "no valid reply: no quorum, no leader");
    }
    assert_eq!(node.get_current_leader(), None);
    assert!(!node.is_quorum_connected());

    node.handle(reply(2, CONFIG_ID, 2, expect_ballot(50, 0, 2)));
    for _ in 0..HB_DELAY_TICKS {
        node.tick();
    }
    assert_eq!(node.get_current_leader(), Some(expect_ballot(50, 0, 2)), "a valid reply counts");
}

/// Server 1 hears only server 2. It learns leaders from repliers' own ballots, never from the
/// ballot a replier follows (that gossip caused a Raft-like livelock upstream, issue #1), and
/// it stops being happy once its leader no longer leads.
#[test]
fn leaders_are_learnt_from_own_ballots_never_from_gossip() {
    let mut node = BallotLeaderElection::with(config(1, 3, 0));
    let mut round = 1;
    let mut end_round_with_reply = |node: &mut BallotLeaderElection, leader: Ballot, happy| {
        let ballot = expect_ballot(1, 5, 2);
        let msg =
            HeartbeatMsg::Reply(HeartbeatReply { round, ballot, leader, happy, quorum_connected: true });
        node.handle(BLEMessage { from: 2, to: 1, config_id: CONFIG_ID, msg });
        round += 1;
        (0..HB_DELAY_TICKS).filter_map(|_| node.tick()).last()
    };
    let two = expect_ballot(1, 5, 2);
    assert_eq!(end_round_with_reply(&mut node, two, true), Some(two), "2 declares itself");
    assert!(node.is_happy());

    let gossip = expect_ballot(7, 0, 3);
    assert_eq!(end_round_with_reply(&mut node, gossip, true), None, "gossip is not adopted");
    assert_eq!(node.get_current_leader(), Some(two));
    assert!(!node.is_happy(), "2 no longer leads, so 1 is not happy with it");

    let takeover = end_round_with_reply(&mut node, gossip, false);
    assert_eq!(takeover, Some(expect_ballot(8, 0, 1)), "takes over above every round seen");
}

/// The simulator's seed 7209 (N = 3): server 1 follows the ballot it promised in Sequence
/// Paxos, 14.2.2; its owner now follows 15.0.3, whose owner restarted and follows it without
/// leading. Server 1 drops 14.2.2 as abandoned, and must not adopt it again from its (stale)
/// Paxos promise: that made it happy with a ballot nobody leads with, round after round, so
/// nobody could take over and the cluster stopped deciding.
#[test]
fn an_abandoned_ballot_is_not_adopted_again_from_the_paxos_promise() {
    let mut node = BallotLeaderElection::with(config(1, 3, 0));
    let stale_promise = expect_ballot(14, 2, 2);
    let ghost = expect_ballot(15, 0, 3);
    node.set_paxos_state(stale_promise, false);
    assert_eq!(node.get_current_leader(), Some(stale_promise));
    let mut took_over: Option<Ballot> = None;
    for round in 1..=10 {
        for (from, ballot) in [(2, expect_ballot(15, 0, 2)), (3, expect_ballot(0, 0, 3))] {
            let reply = HeartbeatReply { round, ballot, leader: ghost, happy: false, quorum_connected: true };
            node.handle(BLEMessage { from, to: 1, config_id: CONFIG_ID, msg: HeartbeatMsg::Reply(reply) });
        }
        for _ in 0..HB_DELAY_TICKS {
            if let Some(leader) = node.tick().filter(|l| l.pid == 1 && *l > ghost) {
                took_over = Some(leader);
            }
            // The facade reports Sequence Paxos's promise after every step.
            node.set_paxos_state(stale_promise, false);
        }
        if took_over.is_some() {
            break;
        }
    }
    assert!(
        took_over.is_some(),
        "server 1 never took over above every round seen; it follows {:?}, happy {}",
        node.get_current_leader(),
        node.is_happy()
    );
}

#[test]
fn outgoing_buffer_keeps_the_newest_messages_within_its_bound() {
    let mut c = config(1, 5, 0);
    c.set_buffer_size(3);
    let mut node = BallotLeaderElection::with(c);
    let mut out = vec![];
    node.take_outgoing_messages(&mut out);
    let receivers: Vec<u64> = out.iter().map(|m| m.to).collect();
    assert_eq!(receivers, vec![3, 4, 5], "four requests, the oldest dropped");
    out.clear();
    for round in 1..=10 {
        let msg = HeartbeatMsg::Request(HeartbeatRequest { round });
        node.handle(BLEMessage { from: 2, to: 1, config_id: CONFIG_ID, msg });
    }
    node.take_outgoing_messages(&mut out);
    let rounds: Vec<u32> = out
        .iter()
        .map(|m| match &m.msg {
            HeartbeatMsg::Reply(r) => r.round,
            other => panic!("expected a reply, got {other:?}"),
        })
        .collect();
    assert_eq!(rounds, vec![8, 9, 10]);
    let mut more = vec![out[0].clone()];
    node.handle(BLEMessage {
        from: 3,
        to: 1,
        config_id: CONFIG_ID,
        msg: HeartbeatMsg::Request(HeartbeatRequest { round: 11 }),
    });
    node.take_outgoing_messages(&mut more);
    assert_eq!(more.len(), 2, "take appends to a non-empty buffer");
}

#[test]
fn messages_display_on_one_line() {
    let request = BLEMessage {
        from: 1,
        to: 2,
        config_id: CONFIG_ID,
        msg: HeartbeatMsg::Request(HeartbeatRequest { round: 4 }),
    };
    assert_eq!(request.to_string(), "1->2 HbRequest r=4");
    let reply = |leader, happy| BLEMessage {
        from: 2,
        to: 1,
        config_id: CONFIG_ID,
        msg: HeartbeatMsg::Reply(HeartbeatReply {
            round: 4,
            ballot: expect_ballot(1, 0, 2),
            leader,
            happy,
            quorum_connected: true,
        }),
    };
    assert_eq!(reply(expect_ballot(3, 0, 3), true).to_string(), "2->1 HbReply r=4 b=1.0.2 l=3.0.3 happy");
    assert_eq!(reply(Ballot::default(), false).to_string(), "2->1 HbReply r=4 b=1.0.2 l=- unhappy");
}

#[test]
#[should_panic(expected = "invalid BLEConfig")]
fn with_panics_on_an_invalid_config() {
    let mut c = config(1, 3, 0);
    c.set_pid(0);
    BallotLeaderElection::with(c);
}

#[test]
fn try_with_reports_an_invalid_config() {
    let mut c = config(1, 3, 0);
    c.set_pid(0);
    assert!(BallotLeaderElection::try_with(c).is_err());
    let mut c = config(1, 3, 0);
    c.set_buffer_size(0);
    assert!(BallotLeaderElection::try_with(c).is_err(), "a BLE that can send nothing");
    assert!(BallotLeaderElection::try_with(config(1, 3, 0)).is_ok());
}
