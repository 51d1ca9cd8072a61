//! The findings of an independent black-box harness (issue 8), each as a short deterministic
//! sequence: stale messages replayed after a restart, leaders chosen by the user through
//! `handle_leader`, small buffers, hostile input and foreign storage. Safety may never depend
//! on the leader election or on the network being polite.

use std::collections::BTreeMap;

use omnipaxos_core::{
    ballot_leader_election::{BLEConfig, Ballot, BallotLeaderElection, HeartbeatMsg, HeartbeatReply},
    messages::{BLEMessage, Message, PaxosMessage},
    sequence_paxos::{CreateError, ProposalOutcome, SequencePaxos, SequencePaxosConfig},
    util::{LogEntry, NodeId, ProposalId},
    OmniPaxos, OmniPaxosConfig,
};
use omnipaxos_storage::crash_storage::{CrashKeep, CrashableStorage};

type Replica = SequencePaxos<u64, (), CrashableStorage<u64, ()>>;
type Msg = PaxosMessage<u64, ()>;

fn sp_config(pid: NodeId, pids: &[NodeId]) -> SequencePaxosConfig {
    let mut config = SequencePaxosConfig::default();
    config.set_configuration_id(1);
    config.set_pid(pid);
    config.set_peers(pids.iter().copied().filter(|&p| p != pid).collect());
    config
}

/// Replicas whose messages the test moves one by one: nothing is delivered unless the test says
/// so, and any message can be kept and delivered again later.
struct Manual {
    pids: Vec<NodeId>,
    replicas: BTreeMap<NodeId, Replica>,
    configs: BTreeMap<NodeId, SequencePaxosConfig>,
    outcomes: BTreeMap<ProposalId, ProposalOutcome>,
}

impl Manual {
    fn new(pids: &[NodeId], adjust: impl Fn(&mut SequencePaxosConfig)) -> Manual {
        let configs: BTreeMap<_, _> = pids
            .iter()
            .map(|&pid| {
                let mut c = sp_config(pid, pids);
                adjust(&mut c);
                (pid, c)
            })
            .collect();
        let replicas = configs
            .iter()
            .map(|(&pid, c)| (pid, SequencePaxos::with(c.clone(), CrashableStorage::default())))
            .collect();
        Manual { pids: pids.to_vec(), replicas, configs, outcomes: BTreeMap::new() }
    }

    fn replica(&mut self, pid: NodeId) -> &mut Replica {
        self.replicas.get_mut(&pid).expect("replica exists")
    }

    /// Flushes `pid` and returns what it sends; takes its proposal outcomes too.
    fn out(&mut self, pid: NodeId) -> Vec<Msg> {
        let mut buffer = Vec::new();
        self.replica(pid).take_outgoing_messages(&mut buffer).expect("take_outgoing_messages");
        self.take_outcomes(pid);
        buffer
    }

    fn take_outcomes(&mut self, pid: NodeId) {
        let mut outcomes = Vec::new();
        self.replica(pid).take_proposal_outcomes(&mut outcomes);
        for (id, outcome) in outcomes {
            assert!(self.outcomes.insert(id, outcome).is_none(), "proposal {id} settled twice");
        }
    }

    fn deliver(&mut self, m: Msg) {
        let to = m.to;
        self.replica(to).handle(m).expect("handle");
        self.take_outcomes(to);
        self.check_agreement();
    }

    /// Delivers messages between `pids` only until nothing is left, as a runtime would (an
    /// idle replica is asked once more, which releases held decisions); messages to or from
    /// others are lost.
    fn run_among(&mut self, pids: &[NodeId]) {
        let mut idle_rounds = 0;
        for _ in 0..200 {
            let mut in_flight = Vec::new();
            for &pid in pids {
                in_flight.extend(self.out(pid));
            }
            in_flight.retain(|m| pids.contains(&m.to));
            if in_flight.is_empty() {
                idle_rounds += 1;
                if idle_rounds == 2 {
                    return;
                }
                continue;
            }
            idle_rounds = 0;
            for m in in_flight {
                self.deliver(m);
            }
        }
        panic!("no quiet state among {pids:?}");
    }

    fn handle_leader(&mut self, pids: &[NodeId], ballot: Ballot) {
        for &pid in pids {
            self.replica(pid).handle_leader(ballot).expect("handle_leader");
        }
    }

    fn crash_and_restart(&mut self, pid: NodeId, keep: CrashKeep) {
        let storage = self.replicas.remove(&pid).expect("up").storage().crash(keep);
        let config = self.configs[&pid].clone();
        self.replicas.insert(pid, SequencePaxos::with(config, storage));
    }

    fn decided(&self, pid: NodeId) -> Vec<u64> {
        let replica = &self.replicas[&pid];
        let decided_idx = replica.get_decided_idx();
        if decided_idx == 0 {
            return Vec::new();
        }
        replica
            .read_entries(0..decided_idx)
            .expect("decided entries")
            .into_iter()
            .map(|e| match e {
                LogEntry::Decided(v) => v,
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    /// Every entry in `pid`'s log, decided or not.
    fn log(&self, pid: NodeId) -> Vec<u64> {
        let replica = &self.replicas[&pid];
        let accepted_idx = replica.get_accepted_idx();
        if accepted_idx == 0 {
            return Vec::new();
        }
        replica
            .read_entries(0..accepted_idx)
            .expect("entries")
            .into_iter()
            .filter_map(|e| match e {
                LogEntry::Decided(v) | LogEntry::Undecided(v) => Some(v),
                _ => None,
            })
            .collect()
    }

    /// Decided prefixes of all replicas agree.
    fn check_agreement(&self) {
        let logs: Vec<(NodeId, Vec<u64>)> = self.pids.iter().map(|&p| (p, self.decided(p))).collect();
        for (a, log_a) in &logs {
            for (b, log_b) in &logs {
                let common = log_a.len().min(log_b.len());
                assert_eq!(
                    log_a[..common],
                    log_b[..common],
                    "decided logs disagree: {a} has {log_a:?}, {b} has {log_b:?}"
                );
            }
        }
    }
}

fn kind(m: &Msg) -> String {
    m.msg.to_string().split_whitespace().next().unwrap_or_default().to_string()
}

fn take_kind(messages: &mut Vec<Msg>, kind_name: &str, to: NodeId) -> Msg {
    let position = messages
        .iter()
        .position(|m| kind(m) == kind_name && m.to == to)
        .unwrap_or_else(|| panic!("no {kind_name} to {to} in {messages:?}"));
    messages.remove(position)
}

/// Finding 1: a Prepare and an AcceptSync kept by the network and delivered again after the
/// follower restarted must not truncate entries it accepted (and decided) since.
#[test]
fn stale_prepare_and_accept_sync_after_a_restart_truncate_nothing() {
    stale_prepare_and_accept_sync(&|_| {});
}

fn stale_prepare_and_accept_sync(adjust: &dyn Fn(&mut SequencePaxosConfig)) {
    let mut net = Manual::new(&[1, 2, 3], adjust);
    let b3 = Ballot::with(1, 2, 0, 3);
    net.handle_leader(&[1, 2, 3], b3);
    let mut from3 = net.out(3);
    let prepare = take_kind(&mut from3, "Prepare", 1);
    net.deliver(prepare.clone());
    let mut from1 = net.out(1);
    net.deliver(take_kind(&mut from1, "Promise", 3));
    let mut from3 = net.out(3);
    let accept_sync = take_kind(&mut from3, "AcceptSync", 1);
    net.deliver(accept_sync.clone());
    net.replica(3).append(100).expect("append");
    net.replica(3).append(101).expect("append");
    net.run_among(&[1, 3]);
    assert_eq!(net.decided(3), vec![100, 101]);
    assert_eq!(net.decided(1), vec![100, 101]);

    net.crash_and_restart(1, CrashKeep::All);
    let _lost_prepare_requests = net.out(1);
    net.deliver(prepare);
    let _ = net.out(1);
    net.deliver(accept_sync);
    let _ = net.out(1);
    // (The restarted replica's stored decided index may lag by a tick; its log may not.)
    assert_eq!(net.log(1), vec![100, 101], "a stale sync truncated acknowledged entries");

    // n3 goes away; n2 leads with n1.
    let b2 = Ballot::with(1, 3, 0, 2);
    net.handle_leader(&[1, 2], b2);
    net.replica(2).append(200).expect("append");
    net.run_among(&[1, 2]);
    assert_eq!(net.decided(2), vec![100, 101, 200]);
    net.check_agreement();
}

/// Finding 2: a forwarded proposal buffered across the receiver's Prepare phase is not decided
/// again after another leader decided it.
#[test]
fn a_forward_buffered_during_a_prepare_phase_is_not_decided_twice() {
    forward_across_a_prepare_phase(&|_| {});
}

fn forward_across_a_prepare_phase(adjust: &dyn Fn(&mut SequencePaxosConfig)) {
    let mut net = Manual::new(&[1, 2, 3], adjust);
    let b2 = Ballot::with(1, 5, 2, 2);
    net.handle_leader(&[1, 2, 3], b2);
    let held_prepares = net.out(2);
    assert!(held_prepares.iter().all(|m| kind(m) == "Prepare"));
    net.replica(1).append(104).expect("append");
    // Whatever n1 sends now (a forward to n2, if it forwards before n2 synchronised it) arrives.
    for m in net.out(1).into_iter().filter(|m| m.to == 2) {
        net.deliver(m);
    }

    let b1 = Ballot::with(1, 5, 1, 1);
    net.handle_leader(&[1], b1);
    net.run_among(&[1, 3]);
    assert_eq!(net.decided(1), vec![104]);

    for m in held_prepares {
        net.deliver(m);
    }
    net.run_among(&[1, 2, 3]);
    net.replica(2).append(105).expect("append");
    net.run_among(&[1, 2, 3]);
    for pid in [1, 2, 3] {
        assert_eq!(net.decided(pid), vec![104, 105], "replica {pid}");
    }
}

/// Finding 4: `buffer_size` bounds pending proposals; it must not drop outcomes of proposals
/// that were decided.
#[test]
fn a_small_buffer_loses_no_outcome_of_a_decided_proposal() {
    outcomes_with_a_small_buffer(&|_| {});
}

fn outcomes_with_a_small_buffer(adjust: &dyn Fn(&mut SequencePaxosConfig)) {
    let mut net = Manual::new(&[1, 2, 3], |c| {
        c.set_buffer_size(4);
        adjust(c);
    });
    net.handle_leader(&[1, 2, 3], Ballot::with(1, 1, 0, 1));
    net.run_among(&[1, 2, 3]);
    let mut accept_decides = Vec::new();
    let mut ids = Vec::new();
    for round in 0..3 {
        for i in 0..4 {
            ids.push(net.replica(1).append(round * 4 + i).expect("append"));
        }
        accept_decides.extend(net.out(1));
    }
    // Followers accept all three rounds; their last Accepted decides all 12 at once.
    for m in accept_decides {
        net.deliver(m);
    }
    let mut accepted: Vec<Msg> = [2, 3].iter().flat_map(|&p| net.out(p)).collect();
    accepted.sort_by_key(|m| std::cmp::Reverse(m.to_string()));
    for m in accepted {
        net.deliver(m);
    }
    let _ = net.out(1);
    assert_eq!(net.replicas[&1].get_decided_idx(), 12);
    let decided: Vec<_> = ids.iter().filter_map(|id| net.outcomes.get(id)).collect();
    assert_eq!(decided.len(), 12, "outcomes: {:?}", net.outcomes);
}

/// Finding 5: a heartbeat reply with the largest possible round must not crash the receiver.
#[test]
fn a_hostile_heartbeat_reply_with_the_largest_round_does_not_panic() {
    hostile_heartbeat_replies(&|_| {});
}

fn hostile_heartbeat_replies(adjust: &dyn Fn(&mut BLEConfig)) {
    let mut config = BLEConfig::default();
    config.set_configuration_id(1);
    config.set_pid(1);
    config.set_peers(vec![2, 3]);
    config.set_hb_delay(2);
    adjust(&mut config);
    let mut ble = BallotLeaderElection::with(config);
    let mut rounds = Vec::new();
    for tick in 0..20u64 {
        if let Some(b) = ble.tick() {
            rounds.push(b);
        }
        let mut out = Vec::new();
        ble.take_outgoing_messages(&mut out);
        for request in out {
            let HeartbeatMsg::Request(req) = request.msg else { continue };
            let reply = HeartbeatReply {
                round: req.round,
                ballot: Ballot::with(1, u32::MAX, u32::MAX, request.to),
                leader: Ballot::with(1, u32::MAX, u32::MAX, request.to),
                happy: tick % 2 == 0,
                quorum_connected: true,
            };
            ble.handle(BLEMessage { from: request.to, to: 1, config_id: 1, msg: HeartbeatMsg::Reply(reply) });
        }
    }
    // Whatever it elected, the replica is still running and answers requests.
    let _ = rounds;
}

/// Finding 5: a configured election timeout of `u64::MAX` ticks is refused with a typed error
/// (it overflowed in BallotLeaderElection).
#[test]
fn an_election_timeout_of_u64_max_is_a_config_error_not_an_overflow() {
    let mut config = BLEConfig::default();
    config.set_configuration_id(1);
    config.set_pid(1);
    config.set_peers(vec![2, 3]);
    config.set_hb_delay(u64::MAX);
    assert!(BallotLeaderElection::try_with(config).is_err());
}

/// Finding 6: storage written by node 1 is refused when opened as node 3, and storage of
/// configuration 1 is refused by a replica of configuration 2.
#[test]
fn storage_of_another_node_or_configuration_is_refused() {
    foreign_storage(&|_| {});
}

fn foreign_storage(adjust: &dyn Fn(&mut SequencePaxosConfig)) {
    let config = |pid: NodeId| {
        let mut c = sp_config(pid, &[1, 2, 3]);
        adjust(&mut c);
        c
    };
    let mut net = Manual::new(&[1, 2, 3], |_| {});
    net.handle_leader(&[1, 2, 3], Ballot::with(1, 1, 0, 1));
    net.replica(1).append(7).expect("append");
    net.run_among(&[1, 2, 3]);
    let storage = net.replicas[&1].storage().crash(CrashKeep::All);

    let as_node_3 = SequencePaxos::<u64, (), _>::try_with(config(3), storage.crash(CrashKeep::All));
    let error = as_node_3.err().expect("node 1's storage opened as node 3 must be refused");
    assert!(error.to_string().contains("identity"), "{error}");

    let mut other_config = config(1);
    other_config.set_configuration_id(2);
    let as_config_2 = SequencePaxos::<u64, (), _>::try_with(other_config, storage.crash(CrashKeep::All));
    assert!(as_config_2.is_err(), "configuration 1's storage opened for configuration 2 must be refused");

    let mut other_cluster = config(1);
    other_cluster.set_cluster_id(7);
    let as_cluster_7 = SequencePaxos::<u64, (), _>::try_with(other_cluster, storage.crash(CrashKeep::All));
    assert!(
        matches!(as_cluster_7, Err(CreateError::IdentityMismatch { stored, expected })
            if stored.cluster_id == 0 && expected.cluster_id == 7),
        "cluster 0's storage opened for cluster 7 must be refused"
    );

    let same = SequencePaxos::<u64, (), _>::try_with(sp_config(1, &[1, 2, 3]), storage.crash(CrashKeep::All));
    assert!(same.is_ok(), "its own storage opens");
}

type Facade = OmniPaxos<u64, (), CrashableStorage<u64, ()>>;

/// One step: deliver until nothing is in flight (over the links that are up), then tick.
fn step(replicas: &mut BTreeMap<NodeId, Facade>, up: &dyn Fn(&Message<u64, ()>) -> bool) {
    for _ in 0..100 {
        let mut in_flight: Vec<Message<u64, ()>> = Vec::new();
        for r in replicas.values_mut() {
            r.take_outgoing_messages(&mut in_flight).expect("take");
        }
        in_flight.retain(|m| up(m));
        if in_flight.is_empty() {
            break;
        }
        for m in in_flight {
            let to = m.get_receiver();
            replicas.get_mut(&to).expect("up").handle_incoming(m).expect("handle");
        }
    }
    for r in replicas.values_mut() {
        r.tick().expect("tick");
    }
}

/// Whether every replica's Ballot Leader Election follows the same leader.
fn election_agrees(replicas: &BTreeMap<NodeId, Facade>) -> Result<(), String> {
    let elected: Vec<_> =
        replicas.values().map(|r| r.ballot_leader_election().get_current_leader()).collect();
    match elected.windows(2).all(|w| w[0] == w[1]) {
        true => Ok(()),
        false => Err(format!("leader election disagrees: {elected:?}")),
    }
}

/// The simulator's find (seed 988, N = 5, before ec2b535): at a first election n1 elects n3's
/// ballot from a reply of n3, which knows no leader yet; n3 then joins n2, which had declared
/// itself. n1 must drop the ballot nobody leads with and follow n2, not wait on it forever.
#[test]
fn a_follower_drops_a_first_election_ballot_its_owner_never_leads_with() {
    first_election_ballot_abandoned_by_its_owner(&|_| {});
}

fn first_election_ballot_abandoned_by_its_owner(adjust: &dyn Fn(&mut OmniPaxosConfig)) {
    let pids = [1, 2, 3];
    let mut replicas: BTreeMap<NodeId, Facade> = pids
        .iter()
        .map(|&pid| {
            let mut config = OmniPaxosConfig::new(sp_config(pid, &pids));
            config.set_hb_delay(2);
            adjust(&mut config);
            (pid, OmniPaxos::with(config, CrashableStorage::default()))
        })
        .collect();
    // Round 1: n1 hears only n3 (so it elects n3's ballot), n2 hears only n1 (so it elects
    // itself), n3 hears nobody.
    let round_1 = |m: &Message<u64, ()>| match m {
        Message::BLE(BLEMessage { from, to, msg: HeartbeatMsg::Request(_), .. }) => {
            (*from, *to) == (1, 3) || (*from, *to) == (2, 1)
        }
        Message::BLE(BLEMessage { from, to, msg: HeartbeatMsg::Reply(_), .. }) => {
            (*from, *to) == (3, 1) || (*from, *to) == (1, 2)
        }
        Message::SequencePaxos(_) => false,
    };
    for _ in 0..2 {
        step(&mut replicas, &round_1);
    }
    let n1_follows = replicas[&1].ballot_leader_election().get_current_leader();
    assert_eq!(n1_follows.map(|b| b.pid), Some(3), "the scenario needs n1 to elect n3's ballot first");
    for _ in 0..100 {
        step(&mut replicas, &|_| true);
    }
    if let Err(e) = election_agrees(&replicas) {
        panic!("{e}");
    }
}

/// Finding 3: a follower must not follow a dead leader ballot forever on a healthy network.
#[test]
fn a_follower_leaves_a_ballot_its_owner_no_longer_leads_with() {
    priority_lowered_before_first_leadership(&|_| {});
}

fn priority_lowered_before_first_leadership(adjust: &dyn Fn(&mut OmniPaxosConfig)) {
    let pids = [1, 2, 3];
    let mut replicas: BTreeMap<NodeId, Facade> = pids
        .iter()
        .map(|&pid| {
            let mut sp = sp_config(pid, &pids);
            if pid == 1 {
                sp.set_leader_priority(2);
            }
            let mut config = OmniPaxosConfig::new(sp);
            config.set_hb_delay(2);
            adjust(&mut config);
            (pid, OmniPaxos::with(config, CrashableStorage::default()))
        })
        .collect();
    // Round 1: only n3 exchanges heartbeats: its requests and the replies to them.
    let n3_heartbeats = |m: &Message<u64, ()>| match m {
        Message::BLE(BLEMessage { from, to, msg: HeartbeatMsg::Request(_), .. }) => *from == 3 && *to != 3,
        Message::BLE(BLEMessage { to, msg: HeartbeatMsg::Reply(_), .. }) => *to == 3,
        Message::SequencePaxos(_) => false,
    };
    for _ in 0..2 {
        step(&mut replicas, &n3_heartbeats);
    }
    let announced = replicas[&1].ballot_leader_election().get_ballot();
    replicas.get_mut(&1).expect("n1").set_priority(1);
    let now = replicas[&1].ballot_leader_election().get_ballot();
    assert!(now >= announced, "n1 lowered the ballot it announced: {announced} -> {now}");
    // Round 2: n3 is cut off.
    for _ in 0..2 {
        step(&mut replicas, &|m| m.get_sender() != 3 && m.get_receiver() != 3);
    }
    let id33 = replicas.get_mut(&3).expect("n3").append(33).expect("append");
    let id44 = replicas.get_mut(&2).expect("n2").append(44).expect("append");
    let mut outcomes = BTreeMap::new();
    for _ in 0..300 {
        step(&mut replicas, &|_| true);
        for (&pid, r) in replicas.iter_mut() {
            let mut taken = Vec::new();
            r.take_proposal_outcomes(&mut taken);
            for (id, outcome) in taken {
                outcomes.insert(id, (pid, outcome));
            }
        }
    }
    assert!(outcomes.contains_key(&id44), "n2's append was not decided");
    let leaders: Vec<_> = replicas.values().map(|r| r.get_promise()).collect();
    assert!(outcomes.contains_key(&id33), "n3's append never settled; promises {leaders:?}");
    if let Err(e) = election_agrees(&replicas) {
        panic!("{e}");
    }
}

/// Each finding's scenario with its fix switched off again (feature `mutations`) must fail:
/// the tests above would catch a regression.
#[cfg(feature = "mutations")]
mod fixes_reverted {
    use std::panic::{catch_unwind, AssertUnwindSafe};

    use omnipaxos_core::mutation::Mutation;

    use super::*;

    fn fails(scenario: impl FnOnce()) -> bool {
        catch_unwind(AssertUnwindSafe(scenario)).is_err()
    }

    #[test]
    fn finding_1_stale_sync_truncates_decided_entries() {
        assert!(fails(
            || stale_prepare_and_accept_sync(&|c| c.set_mutation(Some(Mutation::SyncReplacesLog)))
        ));
    }

    #[test]
    fn finding_2_a_forward_is_decided_twice() {
        assert!(fails(|| forward_across_a_prepare_phase(
            &|c| c.set_mutation(Some(Mutation::ForwardUnsynced))
        )));
    }

    #[test]
    fn finding_3_a_follower_keeps_an_abandoned_ballot() {
        assert!(fails(|| priority_lowered_before_first_leadership(&|c| {
            c.set_mutation(Some(Mutation::LowerAnnouncedBallot));
        })));
    }

    #[test]
    fn finding_3_a_follower_keeps_a_ballot_its_owner_abandoned() {
        assert!(fails(|| first_election_ballot_abandoned_by_its_owner(&|c| {
            c.set_mutation(Some(Mutation::KeepAbandonedLeader));
        })));
    }

    #[test]
    fn finding_4_outcomes_are_dropped() {
        assert!(fails(|| outcomes_with_a_small_buffer(&|c| c.set_mutation(Some(Mutation::DropOutcomes)))));
    }

    #[test]
    fn finding_5_an_unbeatable_round_panics() {
        assert!(fails(|| hostile_heartbeat_replies(
            &|c| c.set_mutation(Some(Mutation::AcceptUnbeatableRounds))
        )));
    }

    #[test]
    fn finding_6_foreign_storage_is_taken() {
        assert!(fails(|| foreign_storage(&|c| c.set_mutation(Some(Mutation::IgnoreIdentity)))));
    }
}
