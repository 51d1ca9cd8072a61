//! How the simulated key-value store serves client gets, and the replicas' clocks.
//!
//! ```text
//!   --reads mixed|log|leader|follower|lease ─► per seed: a ReadProfile
//!      log       get ─► append ─► decided at idx ─► reply with the result computed at idx
//!      leader    get ─► the node the client believes leads ─► read_index() there
//!                       (a node that does not lead refuses and names the leader it knows)
//!      follower  get ─► any member ─► read_index() there (followers ask the leader)
//!      lease     as follower, with leases (set_read_lease) and clock drift
//!   every third get uses read_index_with(Confirmed): a quorum round even under a lease
//!   read_index ─► ReadOutcome::Ready(idx) ─► wait until the application applied idx
//!               ─► reply with the state machine's value then
//! ```
//!
//! Clock drift ([`DriftClock`]): in lease seeds every replica's clock runs at its own rate,
//! within the configured `max_clock_drift_percent` of real time (the simulator's tick): a
//! replica with rate +8 % ticks twice in about one real tick of twelve, one with −8 % skips
//! about one in twelve. `--drift-beyond-bound` draws rates beyond the bound, which the core's
//! documentation calls unsafe for leases.

use std::fmt;

use omnipaxos_core::sequence_paxos::ReadLease;
use rand::{rngs::SmallRng, seq::SliceRandom, Rng};

/// The read mode asked for on the command line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadMode {
    /// Each seed draws one of the four modes below.
    #[default]
    Mixed,
    /// Gets go through the log, like writes.
    Log,
    /// Read index at the leader: clients send gets to the node they believe leads.
    Leader,
    /// Read index at any node: clients send gets to any member, followers ask the leader.
    Follower,
    /// As `Follower`, with read leases and per-replica clock drift.
    Lease,
}

impl ReadMode {
    /// Every mode a seed can run in.
    pub const CONCRETE: [ReadMode; 4] =
        [ReadMode::Log, ReadMode::Leader, ReadMode::Follower, ReadMode::Lease];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ReadMode::Mixed => "mixed",
            ReadMode::Log => "log",
            ReadMode::Leader => "leader",
            ReadMode::Follower => "follower",
            ReadMode::Lease => "lease",
        }
    }
}

impl fmt::Display for ReadMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ReadMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        [ReadMode::Mixed, ReadMode::Log, ReadMode::Leader, ReadMode::Follower, ReadMode::Lease]
            .into_iter()
            .find(|m| m.name() == text)
            .ok_or_else(|| format!("unknown read mode `{text}` (mixed, log, leader, follower or lease)"))
    }
}

/// How a node serves a client's get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GetPath {
    /// Appended to the log like a write.
    Log,
    /// `read_index()` at the node the client asked, leader or follower.
    ReadIndex,
    /// `read_index()`, only at a node that leads; another node refuses and names the leader
    /// it knows, and the client sends its next get there.
    LeaderReadIndex,
}

/// What one seed does with reads: the mode, how gets are served, the lease and the clocks.
#[derive(Clone, Debug, PartialEq)]
pub struct ReadProfile {
    /// The concrete mode of this seed.
    pub mode: ReadMode,
    /// How nodes serve gets.
    pub path: GetPath,
    /// The lease every replica uses, in lease seeds.
    pub lease: Option<ReadLease>,
    /// Clock rate of each replica in per mille off real time (index: the order in which the
    /// replicas are created, cycling); empty: every clock is exact.
    pub drift_permille: Vec<i64>,
}

impl ReadProfile {
    /// Draws the profile of a seed. `beyond_bound`: clock rates beyond `max_clock_drift_percent`.
    pub fn draw(mode: ReadMode, beyond_bound: bool, hb_delay_ticks: u64, rng: &mut SmallRng) -> ReadProfile {
        let mode = match mode {
            ReadMode::Mixed => *ReadMode::CONCRETE.choose(rng).expect("non-empty"),
            concrete => concrete,
        };
        let path = match mode {
            ReadMode::Log => GetPath::Log,
            ReadMode::Leader => GetPath::LeaderReadIndex,
            _ => GetPath::ReadIndex,
        };
        if mode != ReadMode::Lease {
            return ReadProfile { mode, path, lease: None, drift_permille: Vec::new() };
        }
        let lease = ReadLease {
            lease_ticks: hb_delay_ticks * rng.gen_range(2..=8),
            max_clock_drift_percent: *[0, 5, 10, 20, 30].choose(rng).expect("non-empty"),
        };
        let bound = lease.max_clock_drift_percent as i64 * 10;
        let drift_permille = (0..16)
            .map(|_| {
                let sign = if rng.gen_bool(0.5) { 1 } else { -1 };
                let magnitude = if beyond_bound {
                    // Beyond the bound: from just past it to three times it (at least 5 %).
                    rng.gen_range(bound + 1..=(3 * bound).max(bound + 50))
                } else if rng.gen_bool(0.5) {
                    // Half the clocks run at the bound exactly: the hardest legal case.
                    bound
                } else {
                    rng.gen_range(0..=bound)
                };
                sign * magnitude.min(900)
            })
            .collect();
        ReadProfile { mode, path, lease: Some(lease), drift_permille }
    }

    /// The clock of the `index`-th replica created.
    pub fn clock(&self, index: usize, rng: &mut SmallRng) -> DriftClock {
        match self.drift_permille.is_empty() {
            true => DriftClock::exact(),
            false => DriftClock::new(self.drift_permille[index % self.drift_permille.len()], rng),
        }
    }
}

impl fmt::Display for ReadProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "reads {}", self.mode)?;
        if let Some(lease) = self.lease {
            write!(
                f,
                " lease_ticks {} max_clock_drift_percent {} clock rates (per mille) {:?}",
                lease.lease_ticks, lease.max_clock_drift_percent, self.drift_permille
            )?;
        }
        Ok(())
    }
}

/// A replica's clock: how many ticks it sees in each real tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DriftClock {
    /// Rate off real time, per mille (−900..=900).
    pub rate_permille: i64,
    /// Fractional ticks carried over, in thousandths.
    carry: i64,
}

impl DriftClock {
    /// A clock that ticks exactly once per real tick.
    pub fn exact() -> DriftClock {
        DriftClock { rate_permille: 0, carry: 0 }
    }

    /// A clock at `rate_permille`, starting at a random phase.
    pub fn new(rate_permille: i64, rng: &mut SmallRng) -> DriftClock {
        assert!((-900..=900).contains(&rate_permille), "a clock runs forward");
        DriftClock { rate_permille, carry: rng.gen_range(0..1000) }
    }

    /// The ticks this clock sees in the next real tick: 0, 1 or 2.
    pub fn advance(&mut self) -> u64 {
        self.carry += 1000 + self.rate_permille;
        let ticks = self.carry / 1000;
        self.carry %= 1000;
        ticks as u64
    }
}

/// Client gets by how they were served (read-index modes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadCounts {
    /// `read_index()` calls that returned an id.
    pub issued: u64,
    /// Reads answered to the client with a value.
    pub served: u64,
    /// ... of which at a replica that led when the read was issued.
    pub served_at_leader: u64,
    /// ... at a follower.
    pub served_at_follower: u64,
    /// ... at a learner.
    pub served_at_learner: u64,
    /// Reads whose outcome was `Ready` right after `read_index()` (a lease, no messages).
    pub ready_at_once: u64,
    /// Reads issued with `ReadConsistency::Confirmed` (every third get: never from a lease).
    pub confirmed: u64,
    /// Reads that failed (`TimedOut`, `LeaderChanged`) or were refused.
    pub failed: u64,
    /// Reads refused because their index reached a decided StopSign (the configuration had
    /// ended: the next one's writes are not in this log).
    pub failed_reconfigured: u64,
}

impl ReadCounts {
    /// Adds another node's counts.
    pub fn add(&mut self, other: &ReadCounts) {
        self.issued += other.issued;
        self.served += other.served;
        self.served_at_leader += other.served_at_leader;
        self.served_at_follower += other.served_at_follower;
        self.served_at_learner += other.served_at_learner;
        self.ready_at_once += other.ready_at_once;
        self.confirmed += other.confirmed;
        self.failed += other.failed;
        self.failed_reconfigured += other.failed_reconfigured;
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn a_drifting_clock_gains_or_loses_its_rate() {
        let mut rng = SmallRng::seed_from_u64(1);
        for rate in [-300, -100, 0, 80, 250] {
            let mut clock = DriftClock::new(rate, &mut rng);
            let ticks: u64 = (0..10_000).map(|_| clock.advance()).sum();
            let expected = 10_000 + rate * 10;
            assert!((ticks as i64 - expected).abs() <= 1, "rate {rate}: {ticks} ticks");
        }
    }
}
