//! tikv's raft-rs 0.7 behind [`ScenarioNode`], for the partial-connectivity comparison.
//!
//! ```text
//!   tick / step / propose ──► RawNode ──► Ready: send `messages` (the leader's, safe before
//!        persisting) ─► persist snapshot, entries, hard state to MemStorage ─► send
//!        `persisted_messages` ─► advance ─► persist the commit index, send the light ready's
//!        messages ─► advance_apply
//! ```
//!
//! raft-rs draws its randomized election timeouts from `rand::thread_rng`, which would make a
//! seed irreproducible; whenever the node's (term, role) changes — the only moments raft-rs
//! re-randomizes — the adapter overwrites the timeout with one drawn from the seed's
//! generator, uniformly in `[election_tick, 2 * election_tick)` as raft-rs does.

use raft::{
    eraftpb::{ConfState, Message},
    storage::MemStorage,
    Config, RawNode, StateRole,
};
use rand::{rngs::SmallRng, Rng, SeedableRng};

use crate::scenarios::{ScenarioNode, ELECTION_TIMEOUT_TICKS};

/// One raft-rs replica on memory storage.
pub struct RaftNode {
    node: RawNode<MemStorage>,
    rng: SmallRng,
    /// The (term, role) for which the election timeout was last drawn.
    drawn_for: (u64, StateRole),
}

impl RaftNode {
    /// Replica `pid` of `pids`: `election_tick` = [`ELECTION_TIMEOUT_TICKS`], `heartbeat_tick` = 1,
    /// with or without pre-vote and check-quorum (always set together, as the paper's "PV+CQ").
    pub fn new(pid: u64, pids: &[u64], pre_vote_check_quorum: bool, rng: &mut SmallRng) -> RaftNode {
        let config = Config {
            id: pid,
            election_tick: ELECTION_TIMEOUT_TICKS as usize,
            heartbeat_tick: 1,
            pre_vote: pre_vote_check_quorum,
            check_quorum: pre_vote_check_quorum,
            max_inflight_msgs: 4096,
            max_size_per_msg: 1 << 20,
            batch_append: true,
            ..Config::default()
        };
        let storage = MemStorage::new_with_conf_state(ConfState::from((pids.to_vec(), vec![])));
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let node = RawNode::new(&config, storage, &logger).expect("a valid raft config");
        let mut raft = RaftNode {
            node,
            rng: SmallRng::seed_from_u64(rng.gen()),
            drawn_for: (u64::MAX, StateRole::Follower),
        };
        raft.redraw_election_timeout();
        raft
    }

    fn redraw_election_timeout(&mut self) {
        let now = (self.node.raft.term, self.node.raft.state);
        if now != self.drawn_for {
            self.drawn_for = now;
            let et = ELECTION_TIMEOUT_TICKS as usize;
            self.node.raft.set_randomized_election_timeout(self.rng.gen_range(et..2 * et));
        }
    }

    /// Handles every pending Ready, persisting before the messages that need it.
    fn handle_ready(&mut self, out: &mut Vec<(u64, u64, Message)>) {
        while self.node.has_ready() {
            let mut ready = self.node.ready();
            push(out, ready.take_messages());
            let store = self.node.raft.raft_log.store.clone();
            if !ready.snapshot().is_empty() {
                store.wl().apply_snapshot(ready.snapshot().clone()).expect("apply snapshot");
            }
            store.wl().append(ready.entries()).expect("append");
            if let Some(hs) = ready.hs() {
                store.wl().set_hardstate(hs.clone());
            }
            push(out, ready.take_persisted_messages());
            let mut light = self.node.advance(ready);
            if let Some(commit) = light.commit_index() {
                store.wl().mut_hard_state().set_commit(commit);
            }
            push(out, light.take_messages());
            self.node.advance_apply();
        }
        self.redraw_election_timeout();
    }
}

fn push(out: &mut Vec<(u64, u64, Message)>, messages: Vec<Message>) {
    out.extend(messages.into_iter().map(|m| (m.from, m.to, m)));
}

impl ScenarioNode for RaftNode {
    type Message = Message;

    fn tick(&mut self) {
        self.node.tick();
        self.redraw_election_timeout();
    }

    fn propose(&mut self, value: u64) {
        // Dropped proposals (e.g. during a leader transfer) only mean no progress.
        let _ = self.node.propose(vec![], value.to_le_bytes().to_vec());
    }

    fn step(&mut self, message: Message) {
        // Messages of stale terms are refused by raft itself; errors change nothing here.
        let _ = self.node.step(message);
        self.redraw_election_timeout();
    }

    fn drain(&mut self, out: &mut Vec<(u64, u64, Message)>) {
        self.handle_ready(out);
    }

    fn is_leader(&self) -> bool {
        self.node.raft.state == StateRole::Leader
    }

    fn leadership(&self) -> u64 {
        self.node.raft.term
    }

    fn decided(&self) -> u64 {
        self.node.raft.raft_log.committed
    }
}
