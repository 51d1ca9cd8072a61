//! The child process of the SIGKILL test (`tests/sigkill.rs`): a 3-replica Sequence Paxos
//! cluster in one process, each replica over its own `PersistentStorage` directory, messages
//! delivered in a deterministic order, no clock, no sleeps.
//!
//! ```text
//!   omnipaxos_crash_child start   <root> <first value> <count>
//!   omnipaxos_crash_child restart <root> <first value> <count>
//!   omnipaxos_crash_child hold    <dir>      (for the lock test)
//!   omnipaxos_crash_child try     <dir>      (for the lock test)
//! ```
//!
//! `start` bootstraps `<root>/node1..3`; `restart` opens them (`OpenMode::Restart`: never
//! creates) and calls `fail_recovery()` on each replica.
//!
//! `hold` bootstraps (or restarts) one storage in `<dir>`, writes and flushes one entry, prints
//! `holding <pid>`, and keeps the storage open until its stdin is closed; then it closes the
//! storage and prints `closed`. `try` opens `<dir>` once and prints `locked <holder pid>` if the
//! lock is held, `opened` if the open succeeded, `error <message>` otherwise. Both then elect replica 1 with a ballot above every
//! promise, print the decided log of replica 1 once synchronised (`decided <idx> <value>`, and
//! `compacted <idx>`), and propose `count` values from `first value` on in small batches,
//! printing `ack <value> <idx>` once a value is decided — after the flushes that made it durable
//! on a majority. Every 100 acks the leader trims, so segments are also removed. The parent
//! kills the process with SIGKILL at any point after an ack and checks the next run.

use std::{
    collections::{BTreeMap, VecDeque},
    io::Write,
    path::Path,
    process::ExitCode,
};

use omnipaxos_core::{
    ballot_leader_election::Ballot,
    messages::PaxosMessage,
    sequence_paxos::{ProposalOutcome, SequencePaxos, SequencePaxosConfig},
    storage::{Storage, StorageOp},
    util::{LogEntry, NodeId, Proposal, ProposalId},
};
use omnipaxos_storage::persistent_storage::{
    OpenError, OpenMode, PersistentStorage, PersistentStorageConfig,
};

const CONFIGURATION_ID: u32 = 1;
const NODES: [NodeId; 3] = [1, 2, 3];
const LEADER: NodeId = 1;
/// Small segments so that a short run rolls and removes several.
const SEGMENT_SIZE_BYTES: u64 = 16 << 10;
/// Values proposed before the cluster is run to quiet.
const BATCH: u64 = 4;
/// Bound on deliveries per quiet period: a cluster that never quiets is a bug.
const DELIVERIES_MAX: usize = 100_000;

type Replica = SequencePaxos<u64, (), PersistentStorage<u64, ()>>;

struct Cluster {
    replicas: BTreeMap<NodeId, Replica>,
    network: VecDeque<PaxosMessage<u64, ()>>,
    outcomes: Vec<(ProposalId, ProposalOutcome)>,
}

fn open(root: &Path, pid: NodeId, create: bool) -> Replica {
    let mode = if create { OpenMode::Bootstrap } else { OpenMode::Restart };
    let storage_config = PersistentStorageConfig::new(root.join(format!("node{pid}")), CONFIGURATION_ID, pid)
        .mode(mode)
        .segment_size_bytes(SEGMENT_SIZE_BYTES);
    let storage = match PersistentStorage::open(&storage_config) {
        Ok(storage) => storage,
        Err(error) => panic!("cannot open the storage of node {pid}: {error}"),
    };
    let mut config = SequencePaxosConfig::default();
    config.set_configuration_id(CONFIGURATION_ID);
    config.set_pid(pid);
    config.set_peers(NODES.iter().copied().filter(|peer| *peer != pid).collect());
    SequencePaxos::with(config, storage)
}

impl Cluster {
    fn collect(&mut self) {
        let mut buffer = Vec::new();
        for replica in self.replicas.values_mut() {
            replica.take_outgoing_messages(&mut buffer).expect("flush and take messages");
            replica.take_proposal_outcomes(&mut self.outcomes);
        }
        self.network.extend(buffer);
    }

    /// Delivers messages in FIFO order until none is in flight.
    fn run_to_quiet(&mut self) {
        for _ in 0..DELIVERIES_MAX {
            self.collect();
            let Some(message) = self.network.pop_front() else { return };
            self.replicas.get_mut(&message.to).expect("known node").handle(message).expect("handle");
        }
        panic!("the cluster did not quiet down");
    }

    fn elect_leader(&mut self) {
        let round = self.replicas.values().map(|replica| replica.get_promise().n).max().unwrap_or(0) + 1;
        let ballot = Ballot::with(CONFIGURATION_ID, round, 0, LEADER);
        for replica in self.replicas.values_mut() {
            replica.handle_leader(ballot).expect("handle_leader");
        }
        self.run_to_quiet();
    }

    fn print_decided_log(&self, out: &mut impl Write) {
        let leader = &self.replicas[&LEADER];
        let compacted = leader.get_compacted_idx();
        writeln!(out, "compacted {compacted}").expect("stdout");
        if let Some(entries) = leader.read_decided_suffix(compacted) {
            for (idx, entry) in (compacted..).zip(entries) {
                match entry {
                    LogEntry::Decided(value) => writeln!(out, "decided {idx} {value}").expect("stdout"),
                    other => panic!("entry {idx} of the decided suffix is {other:?}"),
                }
            }
        }
        writeln!(out, "synchronised decided_idx={}", leader.get_decided_idx()).expect("stdout");
    }
}

/// The storage of the lock test: node 1 of configuration 1 in `dir`, small segments.
fn lock_test_config(dir: &Path, mode: OpenMode) -> PersistentStorageConfig {
    PersistentStorageConfig::new(dir, CONFIGURATION_ID, 1).mode(mode).segment_size_bytes(SEGMENT_SIZE_BYTES)
}

/// `hold <dir>`: keeps the storage of `dir` open until stdin is closed.
fn hold(dir: &Path) -> ExitCode {
    let mode = if dir.exists() { OpenMode::Restart } else { OpenMode::Bootstrap };
    let mut storage = match PersistentStorage::<u64, ()>::open(&lock_test_config(dir, mode)) {
        Ok(storage) => storage,
        Err(error) => panic!("cannot open {}: {error}", dir.display()),
    };
    let log_end = storage.get_log_end().expect("read");
    let entry = Proposal { id: Default::default(), entry: log_end };
    storage.write_atomically(&mut vec![StorageOp::AppendEntries(vec![entry])]).expect("write");
    storage.flush().expect("flush");
    println!("holding {}", std::process::id());
    std::io::stdout().flush().expect("stdout");
    // Blocks until the parent closes our stdin (or dies): no sleeps, no timers.
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut rest);
    storage.close().expect("close");
    println!("closed");
    ExitCode::SUCCESS
}

/// `try <dir>`: one open attempt, its outcome on stdout.
fn try_open(dir: &Path) -> ExitCode {
    match PersistentStorage::<u64, ()>::open(&lock_test_config(dir, OpenMode::Restart)) {
        Ok(_) => println!("opened"),
        Err(OpenError::Locked { holder_pid, .. }) => {
            println!("locked {}", holder_pid.map_or_else(|| "unknown".to_string(), |pid| pid.to_string()))
        }
        Err(error) => println!("error {error}"),
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match (args.get(1).map(String::as_str), args.get(2)) {
        (Some("hold"), Some(dir)) => return hold(Path::new(dir)),
        (Some("try"), Some(dir)) => return try_open(Path::new(dir)),
        _ => {}
    }
    let (Some(mode), Some(root), Some(first), Some(count)) =
        (args.get(1), args.get(2), args.get(3), args.get(4))
    else {
        eprintln!("usage: omnipaxos_crash_child start|restart <root> <first value> <count> | hold|try <dir>");
        return ExitCode::from(2);
    };
    let create = mode == "start";
    let first: u64 = first.parse().expect("first value is a number");
    let count: u64 = count.parse().expect("count is a number");
    let root = Path::new(root);
    let mut cluster = Cluster {
        replicas: NODES.iter().map(|&pid| (pid, open(root, pid, create))).collect(),
        network: VecDeque::new(),
        outcomes: Vec::new(),
    };
    if !create {
        for replica in cluster.replicas.values_mut() {
            replica.fail_recovery();
        }
    }
    cluster.elect_leader();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    cluster.print_decided_log(&mut out);
    out.flush().expect("stdout");
    propose(&mut cluster, first, count, &mut out);
    writeln!(out, "done").expect("stdout");
    ExitCode::SUCCESS
}

/// Proposes `count` values in batches and prints an ack line for each decided one.
fn propose(cluster: &mut Cluster, first: u64, count: u64, out: &mut impl Write) {
    let mut values: BTreeMap<ProposalId, u64> = BTreeMap::new();
    let mut acks = 0u64;
    for batch_start in (first..first + count).step_by(BATCH as usize) {
        for value in batch_start..(batch_start + BATCH).min(first + count) {
            let id = cluster.replicas.get_mut(&LEADER).expect("leader").append(value).expect("append");
            values.insert(id, value);
        }
        cluster.run_to_quiet();
        let outcomes: Vec<(ProposalId, ProposalOutcome)> = cluster.outcomes.drain(..).collect();
        for (id, outcome) in outcomes {
            let value = values.remove(&id).expect("an outcome of a proposal of this run");
            match outcome {
                ProposalOutcome::Decided(idx) => {
                    writeln!(out, "ack {value} {idx}").expect("stdout");
                    acks += 1;
                    if acks % 100 == 0 {
                        maybe_trim(cluster);
                    }
                }
                ProposalOutcome::Dropped(reason) => panic!("value {value} dropped: {reason:?}"),
            }
        }
        out.flush().expect("stdout");
    }
}

/// Compacts all but the last 50 decided entries (the leader may refuse; then nothing happens).
fn maybe_trim(cluster: &mut Cluster) {
    let leader = cluster.replicas.get_mut(&LEADER).expect("leader");
    let decided = leader.get_decided_idx();
    if decided > 50 && leader.trim(Some(decided - 50)).is_ok() {
        cluster.run_to_quiet();
    }
}
