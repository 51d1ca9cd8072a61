//! The calm phase: the liveness check at the end of every run.
//!
//! ```text
//!   no more faults, replays or hostile messages; every node restarts; disks disarmed
//!   a fresh ballot above every promise and every announced ballot ─► handle_leader at all
//!   per tick: every node ticks ─► flush all, deliver everything in flight (random order),
//!             until nothing is in flight ─► append the calm proposals (retry if refused)
//!   done when every replica's decided index equals every accepted index, and every calm
//!   proposal is decided (or dropped: a sealed log); violation `liveness_after_calm` after `calm_ticks_max` ticks
//! ```

use std::convert::Infallible;

use omnipaxos_core::{
    ballot_leader_election::Ballot,
    errors::ProposeErr,
    util::{NodeId, ProposalId},
};
use rand::seq::SliceRandom;

use super::{
    entry,
    world::{Source, World, CONFIG_ID},
    Liveness,
};
use crate::invariants::Violation;

/// Proposals appended during the calm phase.
const CALM_PROPOSALS: usize = 3;
/// Most flush-and-deliver rounds in one tick (a livelock of messages ends the tick).
const DELIVERY_ROUNDS_MAX: usize = 16;

impl World {
    /// Runs the calm phase and sets `self.liveness`.
    pub(super) fn calm_phase(&mut self) -> Result<(), Violation> {
        self.step += 1;
        self.checker.set_step(self.step);
        self.trace(|| "CALM: no more faults; reliable delivery; every node restarts".to_string());
        for pid in self.profile.pids.clone() {
            self.restart(pid)?;
            let node = self.nodes.get_mut(&pid).expect("a member");
            node.armed = false;
            if let Some(replica) = node.replica.as_ref() {
                replica.storage().arm(None);
            }
        }
        self.after_step()?;
        let Some(ballot) = self.fresh_ballot() else {
            let ceiling = self.ceiling;
            self.trace(|| format!("CALM: no ballot above {ceiling} is left: liveness not checked"));
            self.liveness = Liveness::BallotsExhausted;
            return Ok(());
        };
        self.trace(|| format!("CALM: handle_leader {ballot} at every node"));
        for pid in self.up_pids() {
            self.call(pid, "handle_leader", |r| r.handle_leader(ballot))?;
        }
        self.after_step()?;
        self.calm_ticks(ballot)
    }

    fn calm_ticks(&mut self, ballot: Ballot) -> Result<(), Violation> {
        let mut to_append: Vec<NodeId> =
            (0..CALM_PROPOSALS).map(|_| *self.profile.pids.choose(&mut self.rng).expect("members")).collect();
        let mut appended: Vec<ProposalId> = Vec::new();
        for tick in 1..=self.config.calm_ticks_max {
            for pid in self.up_pids() {
                self.step += 1;
                self.checker.set_step(self.step);
                self.call(pid, "tick", |r| r.tick())?;
                self.after_step()?;
            }
            self.deliver_everything()?;
            if tick > 1 {
                to_append = self.append_calm(to_append, &mut appended)?;
            }
            if to_append.is_empty() && self.converged(&appended) {
                self.trace(|| format!("CALM: converged after {tick} ticks"));
                self.liveness = Liveness::Converged { ticks: tick };
                return Ok(());
            }
        }
        self.liveness = Liveness::Failed;
        Err(self.liveness_violation(ballot, &appended, &to_append))
    }

    /// The lowest ballot above the ceiling that a live node can own, if any is left.
    fn fresh_ballot(&mut self) -> Option<Ballot> {
        let ceiling = self.ceiling;
        let up = self.up_pids();
        let leader = *up.choose(&mut self.rng)?;
        if ceiling.n < u32::MAX {
            return Some(Ballot::with(CONFIG_ID, ceiling.n + 1, 0, leader));
        }
        if ceiling.priority < u32::MAX - 1 {
            return Some(Ballot::with(CONFIG_ID, u32::MAX, ceiling.priority + 1, leader));
        }
        let higher = up.into_iter().find(|&p| p > ceiling.pid)?;
        Some(Ballot::with(CONFIG_ID, u32::MAX, ceiling.priority, higher))
    }

    /// Flushes every node and delivers everything in flight, in random order, until the
    /// network is empty.
    fn deliver_everything(&mut self) -> Result<(), Violation> {
        for _ in 0..DELIVERY_ROUNDS_MAX {
            for pid in self.up_pids() {
                self.step += 1;
                self.checker.set_step(self.step);
                self.flush(pid)?;
                self.after_step()?;
            }
            if self.in_flight.is_empty() {
                return Ok(());
            }
            let mut batch = std::mem::take(&mut self.in_flight);
            batch.shuffle(&mut self.rng);
            for id in batch {
                self.step += 1;
                self.checker.set_step(self.step);
                self.deliver(Source::Archive(id), "deliver")?;
                self.after_step()?;
            }
        }
        Ok(())
    }

    /// Appends the calm proposals still to append; returns those refused for now (buffer
    /// full). A sealed log takes no more entries: those are not required.
    fn append_calm(
        &mut self,
        to_append: Vec<NodeId>,
        appended: &mut Vec<ProposalId>,
    ) -> Result<Vec<NodeId>, Violation> {
        let mut again = Vec::new();
        for pid in to_append {
            let value = self.next_value;
            self.next_value += 1;
            self.step += 1;
            self.checker.set_step(self.step);
            let result = self.call(pid, "append", |r| Ok::<_, Infallible>(r.append(entry(pid, value))))?;
            match result {
                Some(Ok(id)) => {
                    self.checker.note_appended(id, value);
                    self.trace(|| format!("CALM: append v{value} at {pid} -> {id}"));
                    appended.push(id);
                }
                Some(Err(ProposeErr::BufferFull(..))) => again.push(pid),
                Some(Err(e)) => self.trace(|| format!("CALM: append v{value} at {pid} refused: {e}")),
                None => again.push(pid),
            }
            self.after_step()?;
        }
        Ok(again)
    }

    /// Every node up, every replica's decided index equal to every accepted index, every calm
    /// proposal decided or dropped. (That its proposer reports it is `outcome_not_lost`'s
    /// business, checked after every step; a lost outcome is not counted twice.)
    fn converged(&self, appended: &[ProposalId]) -> bool {
        let mut indices = self
            .nodes
            .values()
            .map(|n| n.replica.as_ref().map(|r| (r.get_decided_idx(), r.get_accepted_idx())));
        let Some(Some((decided, _))) = indices.next() else { return false };
        let all_equal = self.nodes.values().all(|n| {
            n.replica
                .as_ref()
                .is_some_and(|r| r.get_decided_idx() == decided && r.get_accepted_idx() == decided)
        });
        all_equal
            && appended.iter().all(|id| self.checker.is_decided(id) || self.checker.outcome(id).is_some())
    }

    fn liveness_violation(&self, ballot: Ballot, appended: &[ProposalId], to_append: &[NodeId]) -> Violation {
        let views: Vec<String> = self
            .nodes
            .iter()
            .map(|(pid, n)| match n.replica.as_ref() {
                None => format!("node {pid} down"),
                Some(r) => format!(
                    "node {pid}: dec={} acc={} prom={} leader={:?} accepting={}",
                    r.get_decided_idx(),
                    r.get_accepted_idx(),
                    r.get_promise(),
                    r.get_current_leader(),
                    r.is_accepting_leader()
                ),
            })
            .collect();
        let outcomes: Vec<String> =
            appended.iter().map(|id| format!("{id}: {:?}", self.checker.outcome(id))).collect();
        let detail = format!(
            "not converged {} ticks after handle_leader({ballot}) at every node; {}; calm proposals {}; \
             never accepted by append at {to_append:?}",
            self.config.calm_ticks_max,
            views.join("; "),
            outcomes.join(", ")
        );
        self.violation("liveness_after_calm", detail)
    }
}
