//! One node trait and one delivery loop for every library.
//!
//! A *flush* proposes `batch` entries at the leader (node index 0), then delivers messages in
//! rounds until the cluster is quiet: each round drains every node's outgoing messages (the
//! library's durability point) and then delivers all of them. Everything runs on one thread, so
//! all n nodes share one core and a run costs the same CPU work every time.

use std::time::{Duration, Instant};

use crate::{alloc_counter::allocation_count, usage::Usage};

/// A flush that needs more delivery rounds than this is a bug in a library adapter (a message
/// loop), not a slow library.
pub const MAX_ROUNDS_PER_FLUSH: u32 = 64;

/// One replica of some library, as the delivery loop sees it.
pub trait Node: Sized {
    /// What the library sends between replicas.
    type Message;

    /// Builds the replicas of an `n`-node cluster; index `i` is node id `i + 1`.
    fn build_cluster(n: usize) -> Vec<Self>;

    /// Makes node index 0 the leader (the loop then delivers until quiet).
    fn elect_first(cluster: &mut [Self]);

    /// Proposes one 8-byte entry.
    fn propose(&mut self, value: u64);

    /// Handles one message addressed to this node.
    fn step(&mut self, message: Self::Message);

    /// Makes pending state durable and moves the messages that may now leave into `out`.
    fn drain(&mut self, out: &mut Vec<Self::Message>);

    /// The index in the cluster of the message's receiver.
    fn receiver_index(message: &Self::Message) -> usize;

    /// How many log entries this node knows to be decided (committed).
    fn decided_idx(&self) -> u64;

    /// Runs at the leader after every flush: what a user does after sending (take outcomes).
    fn after_flush(&mut self) {}

    /// True if followers learn the decided index (the null protocol does not tell them).
    const FOLLOWERS_LEARN_DECISIONS: bool = true;
}

/// The nodes and the messages between them.
pub struct Cluster<N: Node> {
    nodes: Vec<N>,
    in_flight: Vec<N::Message>,
    delivered_messages: u64,
    next_value: u64,
}

impl<N: Node> Cluster<N> {
    /// Builds an `n`-node cluster and elects node index 0.
    ///
    /// # Panics
    /// If the leader does not decide the entries of its election (a broken adapter).
    pub fn new(n: usize) -> Self {
        assert!(n >= 1, "a cluster has at least one node");
        let mut nodes = N::build_cluster(n);
        assert_eq!(nodes.len(), n, "build_cluster built the wrong number of nodes");
        N::elect_first(&mut nodes);
        let mut cluster = Cluster { nodes, in_flight: Vec::new(), delivered_messages: 0, next_value: 1 };
        cluster.deliver_until_quiet();
        cluster
    }

    /// The leader (node index 0).
    pub fn leader(&self) -> &N {
        &self.nodes[0]
    }

    /// The leader's decided index.
    pub fn leader_decided_idx(&self) -> u64 {
        self.nodes[0].decided_idx()
    }

    /// The lowest decided index over all nodes.
    pub fn min_decided_idx(&self) -> u64 {
        self.nodes.iter().map(Node::decided_idx).min().unwrap_or(0)
    }

    /// Messages delivered since the cluster was built.
    pub fn delivered_messages(&self) -> u64 {
        self.delivered_messages
    }

    /// Proposes `batch` entries at the leader, delivers until quiet, then runs the leader's
    /// `after_flush`.
    pub fn flush(&mut self, batch: usize) {
        let leader = &mut self.nodes[0];
        for _ in 0..batch {
            leader.propose(self.next_value);
            self.next_value += 1;
        }
        self.deliver_until_quiet();
        self.nodes[0].after_flush();
    }

    /// Drains every node, delivers what they sent, and repeats until no node sends anything.
    ///
    /// # Panics
    /// After [`MAX_ROUNDS_PER_FLUSH`] rounds that all sent messages.
    pub fn deliver_until_quiet(&mut self) {
        for _ in 0..MAX_ROUNDS_PER_FLUSH {
            for node in &mut self.nodes {
                node.drain(&mut self.in_flight);
            }
            if self.in_flight.is_empty() {
                return;
            }
            for message in self.in_flight.drain(..) {
                let to = N::receiver_index(&message);
                self.nodes[to].step(message);
                self.delivered_messages += 1;
            }
        }
        panic!("the cluster was not quiet after {MAX_ROUNDS_PER_FLUSH} delivery rounds");
    }
}

/// What one measured run did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Entries the leader decided during the run.
    pub decided_entries: u64,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
    /// CPU time of the benchmark thread during the run: user and system (kernel) parts.
    pub cpu_user: Duration,
    pub cpu_system: Duration,
    /// Minor page faults of the benchmark thread during the run (fresh memory touched).
    pub page_faults: u64,
    /// Messages delivered during the run.
    pub delivered_messages: u64,
    /// Heap allocations during the run (zero without the counting allocator).
    pub allocations: u64,
    /// Peak resident set size of the process in KiB, where the run had a process of its own
    /// (fresh-process runs); 0 for in-process runs, where the process's peak says nothing about
    /// one run.
    pub peak_rss_kib: u64,
}

/// Which time a rate is per.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rate {
    /// Per second of CPU time (user + system) of the benchmark thread.
    Cpu,
    /// Per second of wall-clock time: what a user's process sees, kernel time and time other
    /// processes held the core included.
    Wall,
}

impl Sample {
    /// The benchmark thread's CPU time (user + system) during the run.
    pub fn cpu_time(&self) -> Duration {
        self.cpu_user + self.cpu_system
    }

    /// The time the headline figures are based on: the thread's CPU time, which leaves out the
    /// time other processes held the core (wall-clock time where CPU time is not available).
    pub fn measured_time(&self) -> Duration {
        let cpu = self.cpu_time();
        if cpu.is_zero() {
            self.elapsed
        } else {
            cpu
        }
    }

    /// Decided entries per second of [`Sample::measured_time`] (CPU time).
    pub fn entries_per_s(&self) -> f64 {
        self.decided_entries as f64 / self.measured_time().as_secs_f64().max(1e-9)
    }

    /// Decided entries per second of wall-clock time.
    pub fn entries_per_wall_s(&self) -> f64 {
        self.decided_entries as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Decided entries per second of `rate`'s time.
    pub fn entries_per(&self, rate: Rate) -> f64 {
        match rate {
            Rate::Cpu => self.entries_per_s(),
            Rate::Wall => self.entries_per_wall_s(),
        }
    }

    /// The share of the CPU time spent in the kernel (page faults, mostly).
    pub fn system_share(&self) -> f64 {
        let cpu = (self.cpu_user + self.cpu_system).as_secs_f64();
        if cpu > 0.0 {
            self.cpu_system.as_secs_f64() / cpu
        } else {
            0.0
        }
    }

    /// Minor page faults per decided entry.
    pub fn page_faults_per_entry(&self) -> f64 {
        self.page_faults as f64 / self.decided_entries.max(1) as f64
    }

    /// Delivered messages per decided entry.
    pub fn messages_per_entry(&self) -> f64 {
        self.delivered_messages as f64 / self.decided_entries.max(1) as f64
    }

    /// Heap allocations per decided entry.
    pub fn allocations_per_entry(&self) -> f64 {
        self.allocations as f64 / self.decided_entries.max(1) as f64
    }
}

/// Builds a fresh cluster, runs `warmup_flushes` unmeasured flushes, then measures `flushes`
/// flushes of `batch` entries. Building and dropping the cluster are not measured.
///
/// # Panics
/// If a flush leaves entries undecided at the leader, or a follower that learns decisions more
/// than one flush behind after the run: the adapter or the library lost entries, and its numbers
/// would mean nothing.
pub fn measure<N: Node>(n: usize, batch: usize, warmup_flushes: u64, flushes: u64) -> Sample {
    let mut cluster = Cluster::<N>::new(n);
    for _ in 0..warmup_flushes {
        cluster.flush(batch);
    }
    let decided_before = cluster.leader_decided_idx();
    let delivered_before = cluster.delivered_messages();
    let allocations_before = allocation_count();
    let usage_before = Usage::thread();
    let start = Instant::now();
    for _ in 0..flushes {
        cluster.flush(batch);
    }
    let elapsed = start.elapsed();
    let usage = Usage::thread().since(&usage_before);
    let allocations = allocation_count() - allocations_before;
    let decided_entries = cluster.leader_decided_idx() - decided_before;
    let proposed = flushes * batch as u64;
    assert_eq!(decided_entries, proposed, "every flush must decide its entries at the leader");
    if N::FOLLOWERS_LEARN_DECISIONS {
        // A library may piggyback the decided index on the next flush's messages.
        let (followers, leader) = (cluster.min_decided_idx(), cluster.leader_decided_idx());
        assert!(followers + batch as u64 >= leader, "followers must learn decisions by the next flush");
    }
    let delivered_messages = cluster.delivered_messages() - delivered_before;
    let sample = Sample {
        decided_entries,
        elapsed,
        cpu_user: usage.user,
        cpu_system: usage.system,
        page_faults: usage.minor_faults,
        delivered_messages,
        allocations,
        peak_rss_kib: 0,
    };
    drop(cluster);
    sample
}

/// Finds how many flushes take about `target` of CPU time on this machine: doubles a probe run until it
/// takes at least a tenth of the target, then scales. At least one flush, at most
/// `max_entries / batch` flushes.
pub fn calibrate<N: Node>(n: usize, batch: usize, target: Duration, max_entries: u64) -> u64 {
    let max_flushes = (max_entries / batch as u64).max(1);
    let mut flushes = 1u64;
    loop {
        let sample = measure::<N>(n, batch, 0, flushes);
        let enough = sample.measured_time() >= target / 10 || flushes >= max_flushes;
        if enough {
            let per_flush_s = sample.measured_time().as_secs_f64() / flushes as f64;
            let wanted = (target.as_secs_f64() / per_flush_s.max(1e-12)).ceil() as u64;
            return wanted.clamp(1, max_flushes);
        }
        flushes = (flushes * 4).min(max_flushes);
    }
}
