//! Linearizable reads per second: read index at the leader and at a follower, lease reads at
//! the leader and at a follower, against reads through the log (an append per read).
//!
//! ```text
//!   cluster of n SequencePaxos over MemoryStorage, node 1 leads, one entry decided
//!   round = issue R reads at the reader, then { drain every node; deliver } until quiet
//!         ──► every read Ready (asserted); count messages and storage writes
//! ```
//!
//! Same single-threaded loop as the write benchmark: all nodes share one core, nothing of
//! threads, sockets or serialization is measured.

use std::time::{Duration, Instant};

use omnipaxos_core::{
    ballot_leader_election::Ballot,
    messages::PaxosMessage,
    sequence_paxos::{ReadId, ReadLease, ReadOutcome, SequencePaxos, SequencePaxosConfig},
    util::NodeId,
};
use omnipaxos_storage::memory_storage::MemoryStorage;

use crate::usage::Usage;

type Replica = SequencePaxos<u64, (), MemoryStorage<u64, ()>>;

/// The heading of this benchmark's section in `docs/benchmarks.md`.
pub const READS_SECTION_HEADING: &str = "## Linearizable reads (omnipaxos_core)";

/// How a read is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    /// `read_index` at the leader: one confirmation round per batch.
    LeaderReadIndex,
    /// `read_index` at a follower: a ReadRequest to the leader, which confirms a round.
    FollowerReadIndex,
    /// `read_index` at the leader while it holds a lease: answered at once.
    LeaderLease,
    /// `read_index` at a follower while the leader holds a lease: one request and reply.
    FollowerLease,
    /// A read through the log: an append per read, decided by a quorum.
    LogRead,
}

impl ReadMode {
    /// Every mode, in report order.
    pub const ALL: [ReadMode; 5] = [
        ReadMode::LeaderReadIndex,
        ReadMode::FollowerReadIndex,
        ReadMode::LeaderLease,
        ReadMode::FollowerLease,
        ReadMode::LogRead,
    ];

    /// The name in the report.
    pub fn name(self) -> &'static str {
        match self {
            ReadMode::LeaderReadIndex => "read index at the leader",
            ReadMode::FollowerReadIndex => "read index at a follower",
            ReadMode::LeaderLease => "lease read at the leader",
            ReadMode::FollowerLease => "lease read at a follower",
            ReadMode::LogRead => "log read (append per read)",
        }
    }

    fn lease(self) -> bool {
        matches!(self, ReadMode::LeaderLease | ReadMode::FollowerLease)
    }

    fn at_follower(self) -> bool {
        matches!(self, ReadMode::FollowerReadIndex | ReadMode::FollowerLease)
    }
}

/// What one measured run did.
#[derive(Clone, Copy, Debug)]
pub struct ReadSample {
    pub reads: u64,
    pub elapsed: Duration,
    pub cpu: Duration,
    pub messages: u64,
    pub storage_writes: u64,
}

impl ReadSample {
    /// Reads per second of the thread's CPU time.
    pub fn reads_per_cpu_s(&self) -> f64 {
        let time = if self.cpu.is_zero() { self.elapsed } else { self.cpu };
        self.reads as f64 / time.as_secs_f64().max(1e-9)
    }

    /// Reads per second of wall-clock time.
    pub fn reads_per_wall_s(&self) -> f64 {
        self.reads as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn messages_per_read(&self) -> f64 {
        self.messages as f64 / self.reads.max(1) as f64
    }

    pub fn writes_per_read(&self) -> f64 {
        self.storage_writes as f64 / self.reads.max(1) as f64
    }
}

struct ReadCluster {
    nodes: Vec<Replica>,
    in_flight: Vec<PaxosMessage<u64, ()>>,
    delivered: u64,
    outcomes: Vec<(ReadId, ReadOutcome)>,
}

const LEASE: ReadLease = ReadLease { lease_ticks: 100, max_clock_drift_percent: 10 };

impl ReadCluster {
    fn new(n: usize, lease: bool) -> ReadCluster {
        let pids: Vec<NodeId> = (1..=n as NodeId).collect();
        let nodes = pids
            .iter()
            .map(|&pid| {
                let mut config = SequencePaxosConfig::default();
                config.set_configuration_id(1);
                config.set_pid(pid);
                config.set_peers(pids.iter().copied().filter(|&p| p != pid).collect());
                config.set_buffer_size(1 << 20);
                if lease {
                    config.set_read_lease(Some(LEASE));
                }
                SequencePaxos::with(config, MemoryStorage::default())
            })
            .collect();
        let mut cluster = ReadCluster { nodes, in_flight: Vec::new(), delivered: 0, outcomes: Vec::new() };
        if lease {
            // A fresh replica assumes it may have confirmed a lease just before it started.
            for _ in 0..lease_expiry_ticks(LEASE) {
                for node in &mut cluster.nodes {
                    node.tick().expect("tick");
                }
            }
        }
        let ballot = Ballot::with(1, 1, 0, 1);
        for node in &mut cluster.nodes {
            node.handle_leader(ballot).expect("handle_leader");
        }
        cluster.deliver_until_quiet();
        cluster.nodes[0].append(1).expect("append");
        cluster.deliver_until_quiet();
        assert_eq!(cluster.nodes[0].get_decided_idx(), 1, "the leader decides");
        cluster
    }

    fn deliver_until_quiet(&mut self) {
        for _ in 0..64 {
            for node in &mut self.nodes {
                node.take_outgoing_messages(&mut self.in_flight).expect("take_outgoing_messages");
            }
            if self.in_flight.is_empty() {
                return;
            }
            for message in self.in_flight.drain(..) {
                let to = (message.to - 1) as usize;
                self.nodes[to].handle(message).expect("handle");
                self.delivered += 1;
            }
        }
        panic!("not quiet after 64 rounds");
    }

    fn writes(&self) -> u64 {
        self.nodes.iter().map(|n| n.storage().write_count()).sum()
    }

    /// One round of `reads` reads at `reader`; returns how many completed.
    fn round(&mut self, reader: usize, reads: usize, mode: ReadMode) -> u64 {
        if mode == ReadMode::LogRead {
            let before = self.nodes[reader].get_decided_idx();
            for i in 0..reads {
                self.nodes[reader].append(i as u64).expect("append");
            }
            self.deliver_until_quiet();
            return self.nodes[reader].get_decided_idx() - before;
        }
        for _ in 0..reads {
            self.nodes[reader].read_index().expect("read_index");
        }
        self.deliver_until_quiet();
        self.outcomes.clear();
        self.nodes[reader].take_read_outcomes(&mut self.outcomes);
        self.outcomes.iter().filter(|(_, o)| matches!(o, ReadOutcome::Ready(_))).count() as u64
    }
}

/// How long a fresh cluster with leases waits before its first decision (a fresh replica may
/// have confirmed a lease just before it started).
fn lease_expiry_ticks(lease: ReadLease) -> u64 {
    lease.lease_ticks * (100 + lease.max_clock_drift_percent) / 100 + 2
}

/// Measures `rounds` rounds of `reads_per_round` reads in an `n`-node cluster.
///
/// # Panics
/// If a read does not complete within its round (a bug, and numbers that would mean nothing).
pub fn measure_reads(n: usize, reads_per_round: usize, mode: ReadMode, rounds: u64) -> ReadSample {
    let mut cluster = ReadCluster::new(n, mode.lease());
    let reader = if mode.at_follower() { 1.min(n - 1) } else { 0 };
    // Warm up (and, with leases, confirm the first round, which grants the lease).
    for _ in 0..2 {
        cluster.round(reader, reads_per_round, mode);
    }
    let (delivered, writes) = (cluster.delivered, cluster.writes());
    let usage = Usage::thread();
    let start = Instant::now();
    let mut reads = 0;
    for _ in 0..rounds {
        let done = cluster.round(reader, reads_per_round, mode);
        assert_eq!(done, reads_per_round as u64, "{mode:?}: every read completes in its round");
        reads += done;
    }
    let elapsed = start.elapsed();
    let cpu = Usage::thread().since(&usage).cpu();
    ReadSample {
        reads,
        elapsed,
        cpu,
        messages: cluster.delivered - delivered,
        storage_writes: cluster.writes() - writes,
    }
}

/// One row of the report.
pub struct ReadRow {
    pub n: usize,
    pub reads_per_round: usize,
    pub mode: ReadMode,
    /// The median run by CPU rate.
    pub sample: ReadSample,
}

/// Runs every cell (`n` in 3, 5; 1, 100 and 1000 reads per round; every mode) `repetitions`
/// times, each run about `target` long, and keeps the median.
pub fn run_read_suite(repetitions: usize, target: Duration, smoke: bool) -> Vec<ReadRow> {
    let mut rows = Vec::new();
    for n in [3, 5] {
        for reads_per_round in [1, 100, 1000] {
            for mode in ReadMode::ALL {
                let reads_goal = if smoke { 2_000 } else { (target.as_secs_f64() * 5e6) as u64 };
                let rounds = (reads_goal / reads_per_round as u64).clamp(2, 200_000);
                let mut samples: Vec<ReadSample> = (0..repetitions.max(1))
                    .map(|_| measure_reads(n, reads_per_round, mode, rounds))
                    .collect();
                samples.sort_by(|a, b| a.reads_per_cpu_s().total_cmp(&b.reads_per_cpu_s()));
                let sample = samples[samples.len() / 2];
                eprintln!(
                    "n={n} R={reads_per_round:>4} {:<28} {:>8.2} M reads/CPU-s {:>6.3} msgs/read {:>5.2} writes/read",
                    mode.name(),
                    sample.reads_per_cpu_s() / 1e6,
                    sample.messages_per_read(),
                    sample.writes_per_read()
                );
                rows.push(ReadRow { n, reads_per_round, mode, sample });
            }
        }
    }
    rows
}

/// The markdown section for `docs/benchmarks.md`.
pub fn read_section(rows: &[ReadRow], machine_summary: &str, command: &str, smoke: bool) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "{READS_SECTION_HEADING}\n");
    if smoke {
        let _ = writeln!(s, "**Smoke run: the figures below mean nothing.**\n");
    }
    let _ = writeln!(
        s,
        "Reads per CPU-second of the single benchmark thread (all nodes on one core, as the write \
         benchmark), median of the repetitions. A round = R reads issued at the reader, then \
         messages delivered until the cluster is quiet; every read must be `Ready` by then. \
         *msgs/read* counts delivered messages, *writes/read* storage writes (all nodes).\n\n\
         **Machine.** {machine_summary}\n\n**Command.** `{command}`\n"
    );
    let _ =
        writeln!(s, "| n | reads/round | mode | M reads/CPU-s | M reads/wall-s | msgs/read | writes/read |");
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    for row in rows {
        let sample = &row.sample;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.2} | {:.2} | {:.3} | {:.3} |",
            row.n,
            row.reads_per_round,
            row.mode.name(),
            sample.reads_per_cpu_s() / 1e6,
            sample.reads_per_wall_s() / 1e6,
            sample.messages_per_read(),
            sample.writes_per_read()
        );
    }
    let _ = writeln!(
        s,
        "\nRead index costs 2(n−1) messages per round however many reads it carries, and no \
         storage write; a follower read adds one request and one reply. A lease read at the \
         leader sends nothing. A log read is a write: a storage write on every node and the \
         accept-phase messages."
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mode_completes_its_reads_and_read_index_writes_nothing() {
        for mode in ReadMode::ALL {
            let sample = measure_reads(3, 10, mode, 5);
            assert_eq!(sample.reads, 50, "{mode:?}");
            if mode != ReadMode::LogRead {
                assert_eq!(sample.storage_writes, 0, "{mode:?} writes nothing");
            }
        }
        let leader = measure_reads(3, 100, ReadMode::LeaderReadIndex, 3);
        assert_eq!(leader.messages, 3 * 2 * 2, "2(n-1) messages per round");
        let lease = measure_reads(3, 100, ReadMode::LeaderLease, 3);
        assert_eq!(lease.messages, 0, "a lease read sends nothing");
    }
}
