//! Pauses: a node's process stops (SIGSTOP, a long GC or a blocked thread) and resumes.
//!
//! ```text
//!   pause(pid, until)  ─► pid neither ticks nor flushes; messages and client requests for it
//!                         are parked in the networks (kernel buffers keep them)
//!   resume(pid)        ─► its clock missed every tick of the pause (the runtime's ticker skips
//!                         missed ticks, it does not replay them) ─► its read leases end
//!                         (what the runtime does when a tick comes late) ─► client requests
//!                         released, in half the pauses one tick before the peers' messages
//! ```
//!
//! A lease is counted in the leader's ticks. A leader paused for longer than its lease wakes
//! with a tick count that says the lease still runs, while the others waited the lease out on
//! their own clocks, elected a new leader and decided writes. The fault harness of real
//! processes found that stale read twice (`docs/fault-tests.md`, findings 1 and 3); here it
//! is deterministic. `SimConfig::keep_lease_after_pause` skips the expiry on resume, and the
//! simulator must then report stale reads (CI keeps that check).
//!
//! Pauses are extended faults. Their draws come from a generator of their own, so the other
//! random choices of a seed are the same with and without them until the first pause.

use std::collections::BTreeMap;

use omnipaxos_core::util::NodeId;
use rand::{rngs::SmallRng, seq::SliceRandom, Rng, SeedableRng};

use crate::{
    nemesis::FaultKind,
    sim::{Phase, Simulation},
};

/// Seeds the generator of pauses (xor the run's seed).
const PAUSE_STREAM: u64 = 0x7061_7573_655f_7374;

/// The seed's pauses: how often, and which nodes are paused until when.
pub(crate) struct Pauses {
    rng: SmallRng,
    /// Chance per tick that a pause starts (0: the seed has none).
    per_tick: f64,
    /// Paused nodes and the tick each resumes at.
    paused: BTreeMap<NodeId, u64>,
}

impl Pauses {
    /// The pauses of a seed; none unless `enabled`.
    pub(crate) fn new(seed: u64, enabled: bool) -> Pauses {
        let mut rng = SmallRng::seed_from_u64(seed ^ PAUSE_STREAM);
        let per_tick = if enabled { rng.gen_range(0.001..0.008) } else { 0.0 };
        Pauses { rng, per_tick, paused: BTreeMap::new() }
    }

    /// True while `pid` is paused.
    pub(crate) fn is_paused(&self, pid: NodeId) -> bool {
        self.paused.contains_key(&pid)
    }
}

impl Simulation {
    /// Resumes the nodes whose pause is over, then, during the safety phase, maybe pauses one.
    pub(crate) fn pause_faults(&mut self) {
        let now = self.now;
        let due: Vec<NodeId> = self
            .pauses
            .paused
            .iter()
            .filter(|(pid, &until)| until <= now || !self.nodes[*pid].is_up())
            .map(|(&pid, _)| pid)
            .collect();
        for pid in due {
            self.resume(pid);
        }
        if self.phase != Phase::Safety
            || self.pauses.per_tick == 0.0
            || !self.nemesis.allows(FaultKind::Pause)
            || !self.pauses.paused.is_empty()
            || !self.pauses.rng.gen_bool(self.pauses.per_tick)
        {
            return;
        }
        let running: Vec<NodeId> = self.nodes.values().filter(|n| n.is_up()).map(|n| n.pid()).collect();
        let victim = match self.current_leader() {
            Some(leader) if running.contains(&leader) && self.pauses.rng.gen_bool(0.6) => leader,
            _ => match running.choose(&mut self.pauses.rng) {
                Some(&pid) => pid,
                None => return,
            },
        };
        let hb = self.config.settings.hb_delay_ticks;
        let until = now + self.pauses.rng.gen_range(2 * hb..=16 * hb);
        self.pauses.paused.insert(victim, until);
        self.network.set_down(victim, true, now);
        self.client_network.set_down(victim, true, now);
        self.nemesis.count(FaultKind::Pause);
        self.trace(|| format!("FAULT pause node {victim} until t={until}"));
    }

    /// Resumes every paused node (the liveness phase).
    pub(crate) fn resume_all(&mut self) {
        let paused: Vec<NodeId> = self.pauses.paused.keys().copied().collect();
        for pid in paused {
            self.resume(pid);
        }
    }

    /// A crashed node about to restart is paused no more (its parked client requests are
    /// released and lost at the down node).
    pub(crate) fn end_pause_of_crashed(&mut self, pid: NodeId) {
        if self.pauses.is_paused(pid) && !self.nodes[&pid].is_up() {
            self.resume(pid);
        }
    }

    /// Ends the pause of `pid`. A node that crashed while paused stays down: only the client
    /// requests parked for it are released (and lost at the down node).
    fn resume(&mut self, pid: NodeId) {
        self.pauses.paused.remove(&pid);
        let now = self.now;
        let clients_first = self.pauses.rng.gen_bool(0.5);
        // Due this tick (they are delivered after the peers' messages of this tick) or, with
        // `clients_first`, before any parked peer message, which is due next tick.
        self.client_network.set_down(pid, false, now.saturating_sub(u64::from(clients_first)));
        let node = self.nodes.get_mut(&pid).expect("a paused node exists");
        if !node.is_up() {
            self.trace(|| format!("FAULT pause of node {pid} ended by its crash"));
            return;
        }
        if !self.config.keep_lease_after_pause {
            node.expire_read_leases();
        }
        self.network.set_down(pid, false, now);
        self.trace(|| {
            let order = if clients_first { "client requests first" } else { "peers' messages first" };
            format!("FAULT resume node {pid} ({order})")
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_without_extended_faults_has_no_pauses() {
        assert_eq!(Pauses::new(7, false).per_tick, 0.0);
        assert!(Pauses::new(7, true).per_tick > 0.0);
    }
}
