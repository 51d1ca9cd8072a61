//! Bad input: misaddressed, foreign or stale messages, out-of-range reads, invalid
//! configurations and failing storage. A replica answers each with no state change, a typed
//! error or a clean stop, and never panics.

mod common;

use common::{config, Cluster, Replica, CONFIG_ID};
use omnipaxos_core::{
    ballot_leader_election::Ballot,
    config::ConfigError,
    errors::{ProposeErr, ReplicaError},
    messages::{
        AcceptDecide, AcceptSync, Accepted, Compaction, Decide, LogSync, NotAccepted, PaxosMessage, PaxosMsg,
        Prepare, Promise,
    },
    sequence_paxos::{CreateError, SequencePaxos, SequencePaxosConfig},
    storage::ClusterConfig,
    util::{FlexibleQuorum, LogEntry, LogIndex, NodeId, Proposal, ProposalId},
};
use omnipaxos_storage::crash_storage::CrashableStorage;

const PIDS: [NodeId; 3] = [1, 2, 3];

type Message = PaxosMessage<u64, ()>;

/// Everything observable about a replica: promise, decided, accepted and compacted index, log.
type Observable = (Ballot, LogIndex, LogIndex, LogIndex, Option<Vec<LogEntry<u64, ()>>>);

fn observable(replica: &Replica<()>) -> Observable {
    (
        replica.get_promise(),
        replica.get_decided_idx(),
        replica.get_accepted_idx(),
        replica.get_compacted_idx(),
        replica.read_entries(..),
    )
}

fn outgoing(replica: &mut Replica<()>) -> Vec<Message> {
    let mut buffer = Vec::new();
    replica.take_outgoing_messages(&mut buffer).expect("take_outgoing_messages");
    buffer
}

fn message(from: NodeId, to: NodeId, msg: PaxosMsg<u64, ()>) -> Message {
    PaxosMessage { from, to, config_id: CONFIG_ID, msg }
}

fn prepare(n: Ballot) -> PaxosMsg<u64, ()> {
    PaxosMsg::Prepare(Prepare { n, decided_idx: 0, n_accepted: Ballot::default(), accepted_idx: 0 })
}

fn accept_decide(n: Ballot, start_idx: LogIndex, entries: &[u64]) -> PaxosMsg<u64, ()> {
    PaxosMsg::AcceptDecide(AcceptDecide {
        n,
        start_idx,
        decided_idx: 0,
        entries: entries
            .iter()
            .enumerate()
            .map(|(i, &entry)| Proposal {
                id: ProposalId { node: n.pid, seq: 1000 + i as u64, incarnation: 1 },
                entry,
            })
            .collect(),
    })
}

/// A cluster led by 1 with 1, 2 and 3 decided everywhere.
fn running_cluster() -> Cluster<()> {
    let mut cluster = Cluster::<()>::new(&PIDS);
    cluster.elect(1);
    for v in 1..=3 {
        cluster.append(1, v);
    }
    cluster.stabilize();
    cluster
}

#[test]
fn misaddressed_unknown_and_foreign_messages_are_ignored() {
    let mut cluster = running_cluster();
    let high = Ballot::with(CONFIG_ID, 99, 0, 3);
    for pid in [1, 2] {
        let to_other = if pid == 1 { 2 } else { 1 };
        let bad: Vec<Message> = vec![
            message(9, pid, prepare(Ballot::with(CONFIG_ID, 99, 0, 9))),
            message(0, pid, prepare(Ballot::with(CONFIG_ID, 99, 0, 0))),
            message(pid, pid, prepare(Ballot::with(CONFIG_ID, 99, 0, pid))),
            message(3, to_other, prepare(high)),
            message(3, 9, prepare(high)),
            PaxosMessage { config_id: CONFIG_ID + 1, ..message(3, pid, prepare(high)) },
            PaxosMessage { config_id: 0, ..message(3, pid, prepare(high)) },
            message(9, pid, accept_decide(Ballot::with(CONFIG_ID, 99, 0, 9), 1, &[66])),
            PaxosMessage { config_id: CONFIG_ID + 1, ..message(3, pid, accept_decide(high, 1, &[66])) },
            message(9, pid, PaxosMsg::Compaction(Compaction::Trim(3))),
            message(9, pid, PaxosMsg::NotAccepted(NotAccepted { n: high })),
        ];
        for m in bad {
            let before = observable(&cluster.replicas[&pid]);
            let shown = m.to_string();
            cluster.replica(pid).handle(m).unwrap_or_else(|e| panic!("replica {pid}, {shown}: {e}"));
            assert_eq!(observable(&cluster.replicas[&pid]), before, "replica {pid} changed on {shown}");
            let replies = outgoing(cluster.replica(pid));
            assert!(replies.is_empty(), "replica {pid} answered {shown} with {replies:?}");
        }
    }
    // The cluster still works, with the same leader.
    cluster.append(2, 4);
    cluster.stabilize();
    for pid in PIDS {
        assert_eq!(cluster.decided(pid), vec![1, 2, 3, 4], "replica {pid}");
    }
    assert!(cluster.replica(1).is_accepting_leader());
}

#[test]
fn accept_decide_with_a_stale_ballot_gets_not_accepted() {
    let mut cluster = running_cluster();
    let old = cluster.replicas[&2].get_promise();
    cluster.elect(3);
    let promise = cluster.replicas[&2].get_promise();
    assert!(promise > old);
    let before = observable(&cluster.replicas[&2]);
    cluster.replica(2).handle(message(1, 2, accept_decide(old, 99, &[66]))).expect("handle");
    assert_eq!(observable(&cluster.replicas[&2]), before, "a stale AcceptDecide changes nothing");
    let replies = outgoing(cluster.replica(2));
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0].to, 1);
    match &replies[0].msg {
        PaxosMsg::NotAccepted(na) => assert_eq!(na.n, promise, "the reply names the promise"),
        other => panic!("expected NotAccepted, got {other}"),
    }
    // A stale Decide is refused the same way.
    let stale_decide = PaxosMsg::Decide(Decide { n: old, decided_idx: 9 });
    cluster.replica(2).handle(message(1, 2, stale_decide)).expect("handle");
    assert_eq!(observable(&cluster.replicas[&2]), before);
    assert!(matches!(&outgoing(cluster.replica(2))[..], [m] if matches!(m.msg, PaxosMsg::NotAccepted(_))));
}

#[test]
fn prepare_with_a_lower_ballot_gets_not_accepted() {
    let mut cluster = running_cluster();
    cluster.elect(3);
    let promise = cluster.replicas[&2].get_promise();
    let lower = Ballot::with(CONFIG_ID, promise.n - 1, 0, 1);
    let mismatched = Ballot::with(CONFIG_ID, promise.n + 5, 0, 3);
    for (from, n) in [(1, lower), (1, Ballot::default()), (1, mismatched)] {
        let before = observable(&cluster.replicas[&2]);
        cluster.replica(2).handle(message(from, 2, prepare(n))).expect("handle");
        assert_eq!(observable(&cluster.replicas[&2]), before, "Prepare {n} from {from} changed the follower");
        let replies = outgoing(cluster.replica(2));
        match &replies[..] {
            [PaxosMessage { to: 1, msg: PaxosMsg::NotAccepted(na), .. }] => assert_eq!(na.n, promise),
            other => panic!("Prepare {n} from {from}: expected one NotAccepted to 1, got {other:?}"),
        }
    }
    cluster.append(2, 4);
    cluster.stabilize();
    assert_eq!(cluster.decided(1), vec![1, 2, 3, 4], "{}", cluster.trace_tail(20));
}

#[test]
fn a_stale_leaders_entry_is_not_decided_in_its_old_ballot_but_forwarded() {
    let mut cluster = running_cluster();
    cluster.isolate(1);
    cluster.elect(2);
    cluster.append(2, 4);
    cluster.stabilize();
    cluster.heal();
    // The old leader still believes it leads and appends in its old ballot.
    let id = cluster.replica(1).append(66).expect("append");
    cluster.stabilize();
    assert_eq!(
        cluster.decided(2),
        vec![1, 2, 3, 4],
        "the old ballot decides nothing\n{}",
        cluster.trace_tail(40)
    );
    assert_eq!(cluster.replicas[&1].get_decided_idx(), 3);
    // Once the new leader prepares it, the old leader's entry is forwarded and decided once.
    cluster.tick(60);
    for pid in PIDS {
        assert_eq!(cluster.decided(pid), vec![1, 2, 3, 4, 66], "replica {pid}:\n{}", cluster.trace_tail(20));
    }
    assert_eq!(cluster.outcomes.get(&id), Some(&omnipaxos_core::sequence_paxos::ProposalOutcome::Decided(4)));
}

#[test]
fn out_of_range_reads_return_none() {
    let cluster = running_cluster();
    for pid in PIDS {
        let replica = &cluster.replicas[&pid];
        assert_eq!(replica.get_decided_idx(), 3);
        assert_eq!(replica.read(3), None, "replica {pid}");
        assert_eq!(replica.read(1 << 40), None);
        assert_eq!(replica.read(u64::MAX), None);
        #[allow(clippy::reversed_empty_ranges)]
        let backwards = replica.read_entries(5..3);
        assert_eq!(backwards, None);
        assert_eq!(replica.read_entries(2..2), None, "an empty range");
        assert_eq!(replica.read_entries(0..1 << 40), None);
        assert_eq!(replica.read_entries(0..=u64::MAX), None);
        assert_eq!(replica.read_entries(u64::MAX..), None);
        assert_eq!(replica.read_decided_suffix(3), None);
        assert_eq!(replica.read_decided_suffix(u64::MAX), None);
        // In range, for contrast.
        assert_eq!(replica.read(2), Some(LogEntry::Decided(3)));
        assert_eq!(replica.read_entries(1..3), Some(vec![LogEntry::Decided(2), LogEntry::Decided(3)]));
        assert_eq!(replica.read_decided_suffix(2), Some(vec![LogEntry::Decided(3)]));
    }
    let empty = Cluster::<()>::new(&PIDS);
    assert_eq!(empty.replicas[&1].read(0), None);
    assert_eq!(empty.replicas[&1].read_entries(..), None);
    assert_eq!(empty.replicas[&1].read_decided_suffix(0), None);
}

fn try_create(adjust: impl FnOnce(&mut SequencePaxosConfig)) -> Result<Replica<()>, CreateError> {
    let mut c = config(1, &PIDS);
    adjust(&mut c);
    SequencePaxos::try_with(c, CrashableStorage::default())
}

#[test]
fn try_with_rejects_invalid_configurations() {
    let flexible = |read, write| Some(FlexibleQuorum { read_quorum_size: read, write_quorum_size: write });
    type Adjust = Box<dyn FnOnce(&mut SequencePaxosConfig)>;
    type Check = fn(&ConfigError) -> bool;
    let cases: Vec<(&str, Adjust, Check)> = vec![
        ("pid 0", Box::new(|c| c.set_pid(0)), |e| matches!(e, ConfigError::UnsetPid)),
        ("own pid among peers", Box::new(|c| c.set_peers(vec![2, 1, 3])), |e| {
            matches!(e, ConfigError::PidAmongPeers(1))
        }),
        ("duplicate peers", Box::new(|c| c.set_peers(vec![2, 3, 2])), |e| {
            matches!(e, ConfigError::DuplicateNode(2))
        }),
        ("peer 0", Box::new(|c| c.set_peers(vec![2, 0])), |e| matches!(e, ConfigError::ZeroNodeId)),
        ("configuration id 0", Box::new(|c| c.set_configuration_id(0)), |e| {
            matches!(e, ConfigError::UnsetConfigurationId)
        }),
        ("quorums that miss each other", Box::new(move |c| c.set_flexible_quorum(flexible(1, 2))), |e| {
            matches!(
                e,
                ConfigError::QuorumsDoNotIntersect { read_quorum_size: 1, write_quorum_size: 2, nodes: 3 }
            )
        }),
        ("read quorum above the cluster", Box::new(move |c| c.set_flexible_quorum(flexible(4, 3))), |e| {
            matches!(e, ConfigError::ReadQuorumOutOfRange { read_quorum_size: 4, nodes: 3 })
        }),
        ("write quorum 0", Box::new(move |c| c.set_flexible_quorum(flexible(3, 0))), |e| {
            matches!(e, ConfigError::WriteQuorumOutOfRange { write_quorum_size: 0, nodes: 3 })
        }),
        (
            "batch larger than buffer",
            Box::new(|c| {
                c.set_buffer_size(4);
                c.set_batch_size(5);
            }),
            |e| matches!(e, ConfigError::BatchLargerThanBuffer { batch_size: 5, buffer_size: 4 }),
        ),
        ("zero resend timeout", Box::new(|c| c.set_resend_message_tick_timeout(0)), |e| {
            matches!(e, ConfigError::ZeroResendMessageTickTimeout)
        }),
    ];
    for (name, adjust, expected) in cases {
        match try_create(adjust) {
            Err(CreateError::Config(e)) if expected(&e) => {}
            Err(other) => panic!("{name}: wrong error {other:?}"),
            Ok(_) => panic!("{name}: accepted"),
        }
    }
    try_create(|c| c.set_flexible_quorum(flexible(2, 2))).expect("intersecting flexible quorums are valid");
    try_create(|c| c.set_peers(Vec::new())).expect("a single-node cluster is valid");
}

#[test]
fn try_with_reports_a_failing_storage() {
    let mut storage = CrashableStorage::default();
    storage.fail_write_after(0);
    match SequencePaxos::<u64, (), _>::try_with(config(1, &PIDS), storage) {
        Err(CreateError::Storage(_)) => {}
        Err(other) => panic!("wrong error {other:?}"),
        Ok(_) => panic!("created over a storage whose first write fails"),
    }
}

/// One input to a replica under test, with a name for failure messages.
enum Step {
    Handle(Message),
    Leader(Ballot),
    Append(u64),
    Tick,
    Take,
}

fn run_step(replica: &mut Replica<()>, step: &Step) -> Result<(), String> {
    match step {
        Step::Handle(m) => replica.handle(m.clone()).map_err(|e| format!("handle {m}: {e}")),
        Step::Leader(n) => replica.handle_leader(*n).map_err(|e| format!("handle_leader {n}: {e}")),
        Step::Append(v) => replica.append(*v).map(|_| ()).map_err(|e| format!("append {v}: {e}")),
        Step::Tick => replica.tick().map_err(|e| format!("tick: {e}")),
        Step::Take => {
            let mut buffer = Vec::new();
            replica.take_outgoing_messages(&mut buffer).map_err(|e| format!("take_outgoing_messages: {e}"))
        }
    }
}

/// Runs `steps` on a replica of `pid` whose storage `fail` arms. Returns the step at which the
/// replica stopped, after checking the fail-stop contract: the failing call returned an error,
/// the replica is stopped, nothing is released, and every later call fails too.
fn run_until_stopped(
    pid: NodeId,
    fail: impl FnOnce(&mut CrashableStorage<u64, ()>),
    steps: &[Step],
) -> Option<usize> {
    let mut storage = CrashableStorage::default();
    fail(&mut storage);
    let Ok(mut replica) = SequencePaxos::try_with(config(pid, &PIDS), storage) else { return Some(0) };
    let mut stopped_at = None;
    for (i, step) in steps.iter().enumerate() {
        let result = run_step(&mut replica, step);
        match (stopped_at, result) {
            (None, Ok(())) => assert!(!replica.is_stopped(), "step {i} stopped the replica but returned Ok"),
            (None, Err(e)) => {
                assert!(replica.is_stopped(), "step {i} failed without stopping the replica: {e}");
                stopped_at = Some(i + 1);
                let mut buffer = Vec::new();
                assert!(
                    replica.take_outgoing_messages(&mut buffer).is_err(),
                    "a stopped replica releases nothing"
                );
                assert!(buffer.is_empty(), "released after a storage failure: {buffer:?}");
            }
            (Some(_), Ok(())) => panic!("step {i} succeeded on a stopped replica"),
            (Some(_), Err(_)) => {}
        }
    }
    if stopped_at.is_some() {
        match replica.append(5) {
            Err(ProposeErr::Stopped(5)) => {}
            other => panic!("append on a stopped replica gave {other:?}"),
        }
        assert!(matches!(replica.tick(), Err(ReplicaError::Stopped)));
    }
    stopped_at
}

fn leader_ballot() -> Ballot {
    Ballot::with(CONFIG_ID, 5, 0, 1)
}

/// Replica 1 becomes leader, gets a promise and an Accepted from 2, and decides.
fn leader_steps() -> Vec<Step> {
    let n = leader_ballot();
    let promise = Promise {
        n,
        n_accepted: Ballot::default(),
        decided_idx: 0,
        accepted_idx: 0,
        log_sync: None,
        lease_wait_ticks: 0,
    };
    let mut steps = vec![
        Step::Leader(n),
        Step::Take,
        Step::Handle(message(2, 1, PaxosMsg::Promise(promise))),
        Step::Take,
        Step::Append(10),
        Step::Append(11),
        Step::Take,
        Step::Handle(message(2, 1, PaxosMsg::Accepted(Accepted { n, accepted_idx: 2, decided_idx: 0 }))),
        Step::Take,
    ];
    steps.extend((0..25).map(|_| Step::Tick));
    steps.push(Step::Take);
    steps
}

/// Replica 2 promises leader 1, is synchronised, accepts two entries and learns one decided.
fn follower_steps() -> Vec<Step> {
    let n = leader_ballot();
    let sync = AcceptSync {
        n,
        decided_idx: 0,
        adopted_end: 0,
        log_sync: Box::new(LogSync {
            decided_snapshot: None,
            suffix: Vec::new(),
            sync_idx: 0,
            stopsign: None,
        }),
    };
    let decide = Decide { n, decided_idx: 1 };
    let mut steps = vec![
        Step::Handle(message(1, 2, prepare(n))),
        Step::Take,
        Step::Handle(message(1, 2, PaxosMsg::AcceptSync(sync))),
        Step::Take,
        Step::Handle(message(1, 2, accept_decide(n, 0, &[10, 11]))),
        Step::Take,
        Step::Handle(message(1, 2, PaxosMsg::Decide(decide))),
        Step::Append(20),
        Step::Take,
    ];
    steps.extend((0..25).map(|_| Step::Tick));
    steps.push(Step::Take);
    steps
}

#[test]
fn the_scripts_run_without_faults() {
    let mut leader = SequencePaxos::with(config(1, &PIDS), CrashableStorage::default());
    for step in leader_steps() {
        run_step(&mut leader, &step).expect("leader step");
    }
    assert_eq!(leader.get_decided_idx(), 2);
    let mut follower = SequencePaxos::with(config(2, &PIDS), CrashableStorage::default());
    for step in follower_steps() {
        run_step(&mut follower, &step).expect("follower step");
    }
    assert_eq!(follower.get_accepted_idx(), 2);
    assert_eq!(follower.get_decided_idx(), 1);
}

#[test]
fn every_write_failure_stops_the_replica_cleanly() {
    for (pid, steps) in [(1, leader_steps()), (2, follower_steps())] {
        let mut stop_points = Vec::new();
        for n in 0..20 {
            stop_points.push(run_until_stopped(pid, |s| s.fail_write_after(n), &steps));
        }
        assert_eq!(stop_points[0], Some(0), "the first write is in try_with");
        assert!(stop_points.iter().filter(|s| s.is_some()).count() >= 4, "replica {pid}: {stop_points:?}");
        assert_eq!(stop_points.last(), Some(&None), "replica {pid}: the script writes fewer than 20 times");
    }
}

#[test]
fn every_flush_failure_stops_the_replica_cleanly() {
    for (pid, steps) in [(1, leader_steps()), (2, follower_steps())] {
        let mut stop_points = Vec::new();
        for n in 0..10 {
            stop_points.push(run_until_stopped(pid, |s| s.fail_flush_after(n), &steps));
        }
        assert!(stop_points[0].is_some(), "replica {pid}: the first flush fails");
        assert!(stop_points.iter().filter(|s| s.is_some()).count() >= 3, "replica {pid}: {stop_points:?}");
    }
}

#[test]
fn a_promise_is_never_released_when_its_write_fails() {
    let mut storage = CrashableStorage::default();
    storage.fail_write_after(1); // try_with writes the incarnation; the promise write fails.
    let mut follower: Replica<()> = SequencePaxos::with(config(2, &PIDS), storage);
    let n = leader_ballot();
    match follower.handle(message(1, 2, prepare(n))) {
        Err(ReplicaError::Storage(_)) => {}
        other => panic!("expected the storage error, got {other:?}"),
    }
    assert!(follower.is_stopped());
    assert_eq!(follower.get_promise(), Ballot::default(), "memory never runs ahead of storage");
    let mut buffer = Vec::new();
    assert!(follower.take_outgoing_messages(&mut buffer).is_err());
    assert!(buffer.is_empty());
    assert!(follower.storage().is_poisoned());
}

#[test]
fn a_promise_is_never_released_when_its_flush_fails() {
    let mut storage = CrashableStorage::default();
    storage.fail_flush_after(1); // try_with flushes the incarnation; the Promise's flush fails.
    let mut follower: Replica<()> = SequencePaxos::with(config(2, &PIDS), storage);
    follower.handle(message(1, 2, prepare(leader_ballot()))).expect("the write succeeds");
    let mut buffer = Vec::new();
    match follower.take_outgoing_messages(&mut buffer) {
        Err(ReplicaError::Storage(_)) => {}
        other => panic!("expected the flush error, got {other:?}"),
    }
    assert!(buffer.is_empty(), "the Promise must not leave: {buffer:?}");
    assert!(follower.is_stopped());
    assert!(matches!(follower.take_outgoing_messages(&mut buffer), Err(ReplicaError::Stopped)));
    assert!(buffer.is_empty());
}

/// `reconfigure` on a stopped replica must fail like `append` does, not report success for a
/// StopSign that can never leave.
#[test]
fn reconfigure_on_a_stopped_replica_fails() {
    let mut storage = CrashableStorage::default();
    storage.fail_write_after(1);
    let mut follower: Replica<()> = SequencePaxos::with(config(2, &PIDS), storage);
    assert!(follower.handle(message(1, 2, prepare(leader_ballot()))).is_err());
    assert!(follower.is_stopped());
    let next = ClusterConfig { configuration_id: 2, nodes: vec![1, 2, 3], flexible_quorum: None };
    let result = follower.reconfigure(next, None);
    assert!(result.is_err(), "reconfigure on a stopped replica gave {result:?}");
}

/// An Accepted that claims more than the leader's log (a corrupt or forged message) must not
/// crash the leader.
#[test]
fn accepted_beyond_the_leaders_log_does_not_panic() {
    let mut cluster = running_cluster();
    let n = cluster.replicas[&1].get_promise();
    let bogus = message(2, 1, PaxosMsg::Accepted(Accepted { n, accepted_idx: 1000, decided_idx: 3 }));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cluster.replica(1).handle(bogus)));
    assert!(result.is_ok(), "the leader panicked on an Accepted beyond its log");
    assert_eq!(cluster.decided_idx(1), 3);
}

/// A Trim request from a replica that is not the leader (Compaction carries no ballot) is not
/// a reason to trim: the leader could no longer synchronise a follower that lags behind the
/// trimmed index, and the follower must never place entries at the wrong index.
#[test]
fn trim_requested_by_a_follower_does_not_strand_a_lagging_replica() {
    let mut cluster = running_cluster();
    cluster.isolate(3);
    for v in 4..=6 {
        cluster.append(1, v);
    }
    cluster.stabilize();
    cluster.trace.push("forged 2->1 Compaction Trim(6)".into());
    cluster.replica(1).handle(message(2, 1, PaxosMsg::Compaction(Compaction::Trim(6)))).expect("handle");
    cluster.append(1, 7);
    cluster.stabilize();
    cluster.heal();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cluster.tick(80)));
    assert!(result.is_ok(), "safety check failed:\n{}", cluster.trace_tail(16));
    let follower = &cluster.replicas[&3];
    assert_eq!(follower.read(3), Some(LogEntry::Decided(4)), "{}", cluster.trace_tail(16));
    assert_eq!(follower.get_decided_idx(), 7);
}
