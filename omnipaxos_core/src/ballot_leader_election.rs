//! Ballot Leader Election (BLE): picks the ballot that Sequence Paxos runs its Prepare phase with.
//!
//! ```text
//!   tick() ──► every hb_delay ticks: end the heartbeat round ──► Option<Ballot> (leader changed)
//!                 │  evaluate the replies, start the next round      └─► SequencePaxos::handle_leader
//!                 └─► HeartbeatRequest to every peer ─┐
//!   handle(BLEMessage) ◄── HeartbeatRequest/Reply ────┘   take_outgoing_messages(&mut buf) ──► network
//! ```
//!
//! Every round each server asks all peers for their state and gets back a
//! [`HeartbeatReply`]: the peer's own ballot, the leader it follows and whether it is *happy*.
//! At the end of a round a server
//! 1. learns a leader only from a peer that declares itself leader (`reply.ballot == reply.leader`)
//!    with a ballot above the current leader. The ballot a peer *follows* is never adopted: that
//!    gossip caused a Raft-like livelock under partial connectivity (upstream issue #1);
//! 2. is happy if it is the leader and a quorum (itself included) follows a ballot no greater than
//!    its own, or if it is a follower that heard its leader, still leading and happy, this round;
//! 3. takes over with a new ballot (`n` = highest round seen + 1) if it is unhappy, every reply is
//!    unhappy and it is quorum-connected (replies + 1 form a read quorum). Only the round number
//!    is taken from followed ballots, so the new ballot beats them; they are never adopted.
//!
//!
//! Fast failover, at no cost in idle traffic:
//! - a happy follower that has not heard its leader happy for one round plus a margin
//!   (`hb_delay + hb_delay / 5` ticks) *suspects* it: it becomes unhappy at once and asks every
//!   peer again, without waiting for the round end;
//! - the takeover condition is checked whenever a reply arrives, as soon as every peer that
//!   answered in the last round (less a suspected leader) has answered this round, instead of
//!   only at the round end.
//!
//! So a leader crash costs about half a round to notice plus one message round trip, not up to
//! two rounds. Both only add messages while a leader is silent.
//!
//! So any quorum-connected server whose neighbours all lost their leader takes over, which keeps
//! the cluster deciding in the paper's quorum-loss, constrained-election and chained scenarios,
//! while a server that still has a happy neighbour leaves the leadership alone (no livelock).
//!
//! Before any leader is known (start-up), a quorum-connected server joins a peer that declares
//! itself leader, or else elects the highest ballot among itself and the peers that know no leader
//! either; all start in round [`INITIAL_ROUND`], so the highest priority (then pid) wins.
//! Sequence Paxos state comes in through [`BallotLeaderElection::set_paxos_state`] (promises
//! BLE never saw, and which quorum a leader must keep) and
//! [`BallotLeaderElection::recover`] (after a crash-restart).
//!
//! Key decision: a server that adopted a new leader in a round does not take over in that same
//! round. Its neighbours' replies still describe the previous round, so they cannot show whether
//! the new leader is followed yet; without the pause every follower of a fresh leader would take
//! over at the first round end.
//!
//! The module is sans-IO: no clock, no randomness, no I/O (apart from the opt-in log file of
//! `log_file_path`). A reply counts only within the round it answers, so `hb_delay` must cover
//! a round trip.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

pub use crate::ballot::Ballot;
pub use crate::config::BLEConfig;
use crate::config::ConfigError;
use crate::util::{ConfigurationId, NodeId, Quorum};

/// The round of every server's first ballot.
pub const INITIAL_ROUND: u32 = 1;
/// The round of a server's own ballot after a crash-restart ([`BallotLeaderElection::recover`]):
/// below every ballot it can have led with, so it cannot lead again under its old ballot.
pub const RECOVERY_ROUND: u32 = 0;

/// A BLE message with its envelope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BLEMessage {
    /// The sender.
    pub from: NodeId,
    /// The receiver.
    pub to: NodeId,
    /// The sender's configuration; a receiver drops messages of other configurations.
    pub config_id: ConfigurationId,
    /// The payload.
    pub msg: HeartbeatMsg,
}

impl fmt::Display for BLEMessage {
    /// `1->2 HbRequest r=4` or `2->1 HbReply r=4 b=1.0.2 l=3.0.3 happy`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}->{} {}", self.from, self.to, self.msg)
    }
}

/// The two heartbeat messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HeartbeatMsg {
    /// Asks a peer for its state in round `round`.
    Request(HeartbeatRequest),
    /// A peer's state, answering the request of round `round`.
    Reply(HeartbeatReply),
}

impl fmt::Display for HeartbeatMsg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeartbeatMsg::Request(request) => write!(f, "HbRequest r={}", request.round),
            HeartbeatMsg::Reply(reply) => {
                write!(f, "HbReply r={} b={} l=", reply.round, reply.ballot)?;
                if reply.leader.is_initial() {
                    write!(f, "-")?;
                } else {
                    write!(f, "{}", reply.leader)?;
                }
                write!(f, " {}", if reply.happy { "happy" } else { "unhappy" })
            }
        }
    }
}

/// Starts a heartbeat round at a peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    /// The requester's heartbeat round.
    pub round: u32,
}

/// A peer's state at the moment it answered a [`HeartbeatRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    /// The round of the request this answers.
    pub round: u32,
    /// The replier's own ballot. Invariant: `ballot.pid` is the replier.
    pub ballot: Ballot,
    /// The ballot the replier follows; the default ballot if it knows no leader yet.
    pub leader: Ballot,
    /// Whether the replier is happy with its leader (see the module docs).
    pub happy: bool,
    /// Whether the replier's last completed round formed a read quorum: it could take over.
    pub quorum_connected: bool,
}

/// One server's Ballot Leader Election. See the module docs for the algorithm.
#[derive(Clone, Debug)]
pub struct BallotLeaderElection {
    pid: NodeId,
    config_id: ConfigurationId,
    /// The other servers, sorted, without duplicates and without `pid`.
    peers: Vec<NodeId>,
    quorum: Quorum,
    hb_delay_ticks: u64,
    /// Invariant: >= 1 between calls.
    ticks_until_round_end: u64,
    /// Invariant: `outgoing.len() <= buffer_size`.
    buffer_size: usize,
    outgoing: VecDeque<BLEMessage>,
    /// Messages dropped since the last `take_outgoing_messages`; only the first one warns.
    dropped_messages: u64,
    /// The priority of the next ballot this server creates.
    priority: u32,
    /// Invariant: `pid` and `config_id` are this server's; `n <= highest_round_seen`.
    current_ballot: Ballot,
    /// Invariant: if it carries our pid, it is `current_ballot`, or we recovered and have not
    /// taken over since (`current_ballot.n == RECOVERY_ROUND`).
    leader: Option<Ballot>,
    /// Invariant: happy implies a known leader.
    happy: bool,
    hb_round: u32,
    /// This round's replies, by replier. Invariant: each answers `hb_round` and carries the
    /// replier's own ballot; at most one per peer.
    replies: BTreeMap<NodeId, HeartbeatReply>,
    /// Whether the last completed round formed a read quorum with this server.
    quorum_connected: bool,
    /// The highest round of any ballot seen: a takeover goes above it so it can win.
    highest_round_seen: u32,
    /// Sequence Paxos reported that this server leads in its accept phase.
    paxos_accepting: bool,
    /// `set_priority` raised our priority above the leader's: take over at the next round end.
    priority_takeover_pending: bool,
    /// The peers that replied in the last completed round: this round's takeover can be decided
    /// as soon as all of them replied, without waiting for the round end.
    responsive_peers: Vec<NodeId>,
    /// The leader as last returned by `tick` (changes made in `handle` are reported by the next
    /// `tick`).
    reported_leader: Option<Ballot>,
    /// Ticks since start.
    now: u64,
    /// When a follower last got a reply from its leader, still leading and happy.
    leader_heard_at: u64,
    /// A follower suspects its leader when it has not heard it happy for this many ticks:
    /// one heartbeat round plus a margin for message delay jitter.
    suspect_after_ticks: u64,
    /// This round was started early because the leader fell silent.
    suspecting: bool,
    /// The last round end dropped a leader ballot whose owner follows another leader.
    abandoned_leader: bool,
    /// The highest leader ballot dropped because its owner follows another leader: Sequence
    /// Paxos's promise of it (or of a lower one) is not adopted again (it would make this
    /// server follow, and count as happy with, a ballot nobody leads with, round after round).
    abandoned_floor: Option<Ballot>,
    /// A leader was adopted from Sequence Paxos's promise during this round: its replies this
    /// round predate its leadership, so this round's end must not judge it (nor take over).
    adopted_from_paxos: bool,
    /// The subscriber writing this server's log file, if `log_file_path` is set.
    dispatch: Option<tracing::Dispatch>,
    #[cfg(feature = "mutations")]
    mutation: Option<crate::mutation::Mutation>,
}

impl BallotLeaderElection {
    /// Creates the BLE of one server and queues the first round's HeartbeatRequests.
    ///
    /// # Panics
    /// If `config` is invalid, with the [`ConfigError`] message. Use [`Self::try_with`] to get
    /// the error instead.
    pub fn with(config: BLEConfig) -> Self {
        match Self::try_with(config) {
            Ok(ble) => ble,
            Err(error) => panic!("invalid BLEConfig: {error}"),
        }
    }

    /// Creates the BLE of one server, or says why `config` is invalid or its log file cannot
    /// be opened.
    pub fn try_with(config: BLEConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let dispatch = match config.log_file_path() {
            Some(path) => Some(crate::config::file_dispatch(path, config.pid())?),
            None => None,
        };
        let pid = config.pid();
        let mut peers = config.peers().to_vec();
        peers.sort_unstable();
        // `validate` guarantees these; `handle` relies on them to recognise senders.
        assert!(peers.windows(2).all(|pair| pair[0] < pair[1]) && !peers.contains(&pid));
        assert!(config.hb_delay() >= 1 && config.initial_delay() >= 1 && config.buffer_size() >= 1);
        let config_id = config.configuration_id();
        let current_ballot = Ballot::with(config_id, INITIAL_ROUND, config.priority(), pid);
        let mut ble = BallotLeaderElection {
            pid,
            config_id,
            peers,
            quorum: config.quorum(),
            hb_delay_ticks: config.hb_delay(),
            ticks_until_round_end: config.initial_delay(),
            buffer_size: config.buffer_size(),
            outgoing: VecDeque::new(),
            dropped_messages: 0,
            priority: config.priority(),
            current_ballot,
            leader: None,
            happy: false,
            hb_round: 0,
            replies: BTreeMap::new(),
            quorum_connected: false,
            highest_round_seen: INITIAL_ROUND,
            paxos_accepting: false,
            priority_takeover_pending: false,
            responsive_peers: Vec::new(),
            reported_leader: None,
            now: 0,
            leader_heard_at: 0,
            suspect_after_ticks: config.hb_delay().saturating_add((config.hb_delay() / 5).max(1)),
            suspecting: false,
            adopted_from_paxos: false,
            abandoned_leader: false,
            abandoned_floor: None,
            dispatch,
            #[cfg(feature = "mutations")]
            mutation: config.mutation(),
        };
        ble.logged(|ble| {
            ble.start_round();
            ble.check_invariants();
        });
        Ok(ble)
    }

    /// Advances one tick. When a heartbeat round ends (after `initial_delay` ticks, then every
    /// `hb_delay` ticks) it evaluates the round's replies and starts the next round.
    ///
    /// Returns the leader's ballot exactly when the elected leader changed in this tick, whoever
    /// it is; pass it to `SequencePaxos::handle_leader`. Changes made by
    /// [`Self::set_paxos_state`] and [`Self::recover`] are not reported: they came from Sequence
    /// Paxos's own state.
    pub fn tick(&mut self) -> Option<Ballot> {
        self.logged(Self::tick_inner)
    }

    fn tick_inner(&mut self) -> Option<Ballot> {
        assert!(self.ticks_until_round_end >= 1);
        self.now += 1;
        self.ticks_until_round_end -= 1;
        if self.ticks_until_round_end > 0 {
            self.maybe_suspect_leader();
        }
        if self.ticks_until_round_end == 0 {
            self.ticks_until_round_end = self.hb_delay_ticks;
            let previous_leader = self.leader;
            let previous_ballot = self.current_ballot;
            let was_happy_follower = self.happy && !self.is_leader();
            self.end_round();
            self.start_round();
            // Just lost a leader we followed: the new round does not wait for it.
            self.suspecting = was_happy_follower && !self.happy && self.leader == previous_leader;
            assert!(
                self.leader >= previous_leader || std::mem::take(&mut self.abandoned_leader),
                "a round end lowers the leader only when its owner follows another"
            );
            assert!(self.current_ballot >= previous_ballot, "a round end never lowers our ballot");
            self.check_invariants();
        }
        if self.leader != self.reported_leader {
            self.reported_leader = self.leader;
            self.leader
        } else {
            None
        }
    }

    /// Handles one incoming message: a request is answered at once, a reply is recorded if it
    /// answers the current round. Messages for another receiver, of another configuration or
    /// from a server outside the configuration are dropped (logged at debug level).
    pub fn handle(&mut self, m: BLEMessage) {
        self.logged(|ble| ble.handle_inner(m))
    }

    fn handle_inner(&mut self, m: BLEMessage) {
        if m.to != self.pid {
            debug!(msg = %m, pid = self.pid, "BLE: dropped a message for another server");
            return;
        }
        if m.config_id != self.config_id {
            debug!(msg = %m, config_id = self.config_id, "BLE: dropped a message of another configuration");
            return;
        }
        if self.peers.binary_search(&m.from).is_err() {
            debug!(msg = %m, "BLE: dropped a message from a server outside the configuration");
            return;
        }
        match m.msg {
            HeartbeatMsg::Request(request) => self.handle_request(m.from, request),
            HeartbeatMsg::Reply(reply) => self.handle_reply(m.from, reply),
        }
    }

    /// Appends the queued outgoing messages, oldest first, to `buf` and empties the queue.
    pub fn take_outgoing_messages(&mut self, buf: &mut Vec<BLEMessage>) {
        buf.extend(self.outgoing.drain(..));
        self.dropped_messages = 0;
    }

    /// The ballot of the elected leader as this server knows it; `None` before any is known.
    pub fn get_current_leader(&self) -> Option<Ballot> {
        self.leader
    }

    /// This server's own current ballot.
    pub fn get_ballot(&self) -> Ballot {
        self.current_ballot
    }

    /// Whether the last completed round got replies from enough peers to form a read quorum
    /// with this server. A leader that lost its quorum sees `false` here.
    pub fn is_quorum_connected(&self) -> bool {
        self.quorum_connected
    }

    /// Whether this server is happy with its leader (see the module docs).
    pub fn is_happy(&self) -> bool {
        self.happy
    }

    /// Changes this server's priority.
    ///
    /// A higher priority goes into this server's ballot now if it does not lead; a leader, and a
    /// server lowering its priority, keep their ballot and use the new priority in their next
    /// one. A ballot once announced never decreases: peers may follow it, and a lower ballot
    /// of the same server would leave them following a ballot nobody leads with (issue 8).
    /// If the new priority is higher than the current leader's, this server takes over at the
    /// next round end with ballot `n = leader.n + 1` (or above any higher round it has seen),
    /// provided it is quorum-connected then; otherwise the request lapses. This is a one-shot
    /// takeover, so a flaky high-priority server does not keep pulling leadership back.
    pub fn set_priority(&mut self, priority: u32) {
        self.logged(|ble| ble.set_priority_inner(priority))
    }

    fn set_priority_inner(&mut self, priority: u32) {
        self.priority = priority;
        if self.is_leader() {
            self.priority_takeover_pending = false;
            return;
        }
        self.current_ballot.priority = if mutated!(self, LowerAnnouncedBallot) {
            priority
        } else {
            self.current_ballot.priority.max(priority)
        };
        self.priority_takeover_pending = self.leader.is_some_and(|l| priority > l.priority);
        self.check_invariants();
    }

    /// Reports Sequence Paxos's promise and whether this server leads in the accept phase.
    ///
    /// A promise above the BLE leader comes from a Prepare that BLE never saw (e.g.
    /// `try_become_leader`); it is adopted as the leader, and as our own ballot if it is ours, and
    /// this server counts as happy until its next round end judges the new leader. A leader in
    /// the accept phase judges its happiness against the write quorum, otherwise the read quorum.
    pub fn set_paxos_state(&mut self, promise: Ballot, is_accepting_leader: bool) {
        self.logged(|ble| ble.set_paxos_state_inner(promise, is_accepting_leader))
    }

    fn set_paxos_state_inner(&mut self, promise: Ballot, is_accepting_leader: bool) {
        self.paxos_accepting = is_accepting_leader;
        if promise.is_initial() || Some(promise) <= self.leader || Some(promise) <= self.abandoned_floor {
            return;
        }
        if promise.config_id != self.config_id {
            debug!(%promise, "BLE: ignored a promise of another configuration");
            return;
        }
        self.observe_round(promise.n);
        if promise.pid == self.pid {
            self.current_ballot = promise;
        }
        self.leader = Some(promise);
        self.reported_leader = self.leader;
        self.happy = true;
        self.leader_heard_at = self.now;
        self.adopted_from_paxos = true;
        self.check_invariants();
    }

    /// Restores BLE after a crash-restart, given the promise Sequence Paxos persisted.
    ///
    /// Our own ballot drops to [`RECOVERY_ROUND`] and the leader becomes the persisted promise.
    /// A recovered ex-leader therefore does not lead again under its old ballot: the other
    /// servers may have moved on, and if they have not, its next takeover uses a fresh round.
    pub fn recover(&mut self, persisted_promise: Ballot) {
        self.logged(|ble| ble.recover_inner(persisted_promise))
    }

    fn recover_inner(&mut self, persisted_promise: Ballot) {
        self.current_ballot = Ballot::with(self.config_id, RECOVERY_ROUND, self.priority, self.pid);
        self.leader = None;
        self.happy = false;
        self.paxos_accepting = false;
        self.priority_takeover_pending = false;
        if persisted_promise.is_initial() {
            // Never promised anything: elect as at a fresh start.
        } else if persisted_promise.config_id != self.config_id {
            warn!(promise = %persisted_promise, "BLE: ignored a persisted promise of another configuration");
        } else {
            self.observe_round(persisted_promise.n);
            self.leader = Some(persisted_promise);
        }
        self.reported_leader = self.leader;
        self.check_invariants();
    }

    /// Runs `f` under this server's log file, if it has one.
    fn logged<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        match self.dispatch.clone() {
            Some(dispatch) => tracing::dispatcher::with_default(&dispatch, || f(self)),
            None => f(self),
        }
    }

    fn is_leader(&self) -> bool {
        self.leader == Some(self.current_ballot)
    }

    fn handle_request(&mut self, from: NodeId, request: HeartbeatRequest) {
        let reply = HeartbeatReply {
            round: request.round,
            ballot: self.current_ballot,
            leader: self.leader.unwrap_or_default(),
            happy: self.happy,
            quorum_connected: self.quorum_connected,
        };
        self.queue(BLEMessage {
            from: self.pid,
            to: from,
            config_id: self.config_id,
            msg: HeartbeatMsg::Reply(reply),
        });
    }

    fn handle_reply(&mut self, from: NodeId, reply: HeartbeatReply) {
        if reply.round != self.hb_round {
            debug!(from, round = reply.round, current = self.hb_round, "BLE: dropped a late reply");
            return;
        }
        let leader_ok = reply.leader.is_initial() || reply.leader.config_id == self.config_id;
        // A round of u32::MAX could never be outbid: no correct server reaches it.
        let rounds_ok = (reply.ballot.n < u32::MAX && reply.leader.n < u32::MAX)
            || mutated!(self, AcceptUnbeatableRounds);
        if reply.ballot.pid != from || reply.ballot.config_id != self.config_id || !leader_ok || !rounds_ok {
            debug!(from, ballot = %reply.ballot, leader = %reply.leader, "BLE: dropped a malformed reply");
            return;
        }
        self.observe_round(reply.ballot.n.max(reply.leader.n));
        if Some(reply.ballot) == self.leader && reply.leader == reply.ballot && reply.happy {
            self.leader_heard_at = self.now;
        }
        self.replies.insert(from, reply);
        assert!(self.replies.len() <= self.peers.len());
        self.maybe_take_over_early();
    }

    /// A happy follower that has not heard its leader happy for `suspect_after_ticks` becomes
    /// unhappy at once and starts a new round: its neighbours' replies then tell within a round
    /// trip whether they lost the leader too (see [`Self::maybe_take_over_early`]). Waiting for
    /// the round end instead would add up to a whole round to every failover. Costs messages only
    /// when a leader stops answering.
    fn maybe_suspect_leader(&mut self) {
        let follower = self.leader.is_some() && !self.is_leader();
        if !follower
            || !self.happy
            || self.now < self.leader_heard_at.saturating_add(self.suspect_after_ticks)
        {
            return;
        }
        debug!(pid = self.pid, leader = ?self.leader, "BLE: leader silent, starting a round early");
        // The round keeps its end (suspecting never delays a round-end evaluation); it just asks
        // everyone again now.
        self.happy = false;
        self.suspecting = true;
        self.replies.clear();
        self.hb_round = self.hb_round.wrapping_add(1);
        self.send_requests();
    }

    /// Takes over before the round ends once every peer that answered last round has answered
    /// this one: the takeover condition is then decided on the same neighbours a round end
    /// would see, so waiting adds only latency. An unhappy server whose neighbours all lost
    /// their leader takes over one message round trip after it noticed, not one round later.
    fn maybe_take_over_early(&mut self) {
        // A leader we suspect is not waited for: its silence is why we are unhappy.
        let leader_pid = self.leader.filter(|_| self.suspecting).map(|l| l.pid);
        let mut expected = self.responsive_peers.iter().filter(|&&p| Some(p) != leader_pid).peekable();
        let all_answered = expected.peek().is_some() && expected.all(|p| self.replies.contains_key(p));
        let declared_higher =
            self.replies.values().any(|r| r.ballot == r.leader && Some(r.ballot) > self.leader);
        let quorum_connected = self.quorum.is_read_quorum(self.replies.len() + 1);
        let all_unhappy = self.replies.values().all(|r| !r.happy);
        if all_answered
            && !declared_higher
            && !self.happy
            && quorum_connected
            && all_unhappy
            && !self.is_leader()
            && !self.defers_to_a_better_candidate()
        {
            self.quorum_connected = true;
            self.take_over();
            self.check_invariants();
        }
    }

    /// Evaluates the round that just ended: quorum-connectivity, leader, happiness, takeover.
    fn end_round(&mut self) {
        self.suspecting = false;
        self.quorum_connected = self.quorum.is_read_quorum(self.replies.len() + 1);
        let adopted_from_paxos = std::mem::take(&mut self.adopted_from_paxos);
        let leader_changed = self.maybe_learn_leader(adopted_from_paxos) || adopted_from_paxos;
        if !adopted_from_paxos {
            self.happy = self.judge_happiness();
        }
        if self.happy && leader_changed {
            // A leader learnt at this round end was heard happy during the round.
            self.leader_heard_at = self.now;
        }
        let priority_due =
            std::mem::take(&mut self.priority_takeover_pending) && self.priority_takeover_allowed();
        if priority_due || (!leader_changed && self.takeover_allowed()) {
            self.take_over();
        }
    }

    /// Starts the next round: forgets the old replies and asks every peer.
    fn start_round(&mut self) {
        self.responsive_peers = self.replies.keys().copied().collect();
        self.replies.clear();
        self.hb_round = self.hb_round.wrapping_add(1);
        self.send_requests();
    }

    fn send_requests(&mut self) {
        let requests: Vec<BLEMessage> = self
            .peers
            .iter()
            .map(|&to| BLEMessage {
                from: self.pid,
                to,
                config_id: self.config_id,
                msg: HeartbeatMsg::Request(HeartbeatRequest { round: self.hb_round }),
            })
            .collect();
        for request in requests {
            self.queue(request);
        }
    }

    /// Adopts a peer that declares itself leader with a ballot above the current leader. Without
    /// any leader,
    /// such a declared leader is joined; failing that, a quorum-connected server elects the
    /// highest ballot among itself and the peers that know no leader either (the first election,
    /// where the highest priority wins). Returns whether the leader changed.
    /// The abandoned-leader rule of `maybe_learn_leader` is on (off only as a mutation).
    fn drops_abandoned_leaders(&self) -> bool {
        if mutated!(self, KeepAbandonedLeader) {
            return false;
        }
        !mutated!(self, LowerAnnouncedBallot)
    }

    fn maybe_learn_leader(&mut self, adopted_from_paxos: bool) -> bool {
        let declared = self.replies.values().filter(|r| r.ballot == r.leader).map(|r| r.ballot).max();
        // The owner of the ballot we follow answered that it follows another leader and either
        // moved on to another ballot or follows a lower one (a first election picked a peer
        // that then joined someone else): nobody leads with our ballot, so it is dropped and the
        // leader learnt afresh, even if lower. An owner that still holds our ballot but follows
        // a higher one was deposed by a leader we may not hear: we stay, become unhappy and take
        // over above it instead of adopting gossip. (Not for a leader adopted from Paxos this
        // round: the replies predate it.)
        let abandoned = !adopted_from_paxos
            && self.drops_abandoned_leaders()
            && self.leader.is_some_and(|l| {
                l.pid != self.pid
                    && self.replies.get(&l.pid).is_some_and(|r| {
                        !r.leader.is_initial() && r.leader != l && (r.ballot != l || r.leader < l)
                    })
            });
        let current = if abandoned { None } else { self.leader };
        self.abandoned_leader = abandoned;
        if abandoned {
            self.abandoned_floor = self.abandoned_floor.max(self.leader);
        }
        let learnt = match (current, declared) {
            (Some(leader), Some(declared)) => (declared > leader).then_some(declared),
            (Some(_), None) => None,
            (None, Some(declared)) => Some(declared),
            (None, None) => self.quorum_connected.then(|| self.first_election()),
        };
        let Some(new_leader) = learnt else {
            if abandoned {
                debug!(pid = self.pid, leader = ?self.leader, "BLE: the leader's owner follows another; no leader");
                self.leader = None;
                return true;
            }
            return false;
        };
        assert_eq!(new_leader.config_id, self.config_id);
        assert!(new_leader.pid != self.pid || new_leader == self.current_ballot);
        debug!(pid = self.pid, leader = %new_leader, "BLE: new leader");
        self.leader = Some(new_leader);
        true
    }

    fn first_election(&self) -> Ballot {
        let undecided_peers = self.replies.values().filter(|r| r.leader.is_initial()).map(|r| r.ballot);
        let candidate = undecided_peers.chain(std::iter::once(self.current_ballot)).max();
        candidate.expect("our own ballot is always a candidate")
    }

    /// A leader is happy if a quorum, itself included, follows a ballot no greater than its own
    /// (the write quorum in the accept phase, else the read quorum). A follower is happy if it
    /// heard its leader this round, still leading and happy.
    fn judge_happiness(&self) -> bool {
        let Some(leader) = self.leader else {
            return false;
        };
        if leader == self.current_ballot {
            let followers = self.replies.values().filter(|r| r.leader <= leader).count();
            if self.paxos_accepting {
                self.quorum.is_write_quorum(followers + 1)
            } else {
                self.quorum.is_read_quorum(followers + 1)
            }
        } else {
            self.replies.get(&leader.pid).is_some_and(|r| r.ballot == leader && r.leader == leader && r.happy)
        }
    }

    /// The paper's takeover condition: unhappy, every neighbour unhappy, and quorum-connected.
    fn takeover_allowed(&self) -> bool {
        !self.happy && self.quorum_connected && self.replies.values().all(|r| !r.happy)
    }

    /// True if a neighbour that answered this round could take over early as well (unhappy,
    /// quorum-connected, not leading) and would win a simultaneous takeover (higher priority,
    /// then pid): this server leaves the early takeover to it and follows its Prepare, so a
    /// leader crash costs one leader change instead of two. Only the early path defers: at the
    /// round end the paper's condition alone decides, so a wrong guess (the candidate's
    /// connectivity changed since its last round) costs at most the rest of a round.
    fn defers_to_a_better_candidate(&self) -> bool {
        let own = (self.priority, self.pid);
        self.replies.values().any(|r| {
            let candidate = !r.happy && r.quorum_connected && r.ballot != r.leader;
            candidate && (r.ballot.priority, r.ballot.pid) > own
        })
    }

    fn priority_takeover_allowed(&self) -> bool {
        self.quorum_connected && !self.is_leader() && self.leader.is_some_and(|l| self.priority > l.priority)
    }

    /// Becomes leader with a ballot above every round seen, so it beats the current leader.
    fn take_over(&mut self) {
        if mutated!(self, AcceptUnbeatableRounds) {
            assert!(self.highest_round_seen < u32::MAX, "ballot rounds exhausted");
        }
        let Some(n) = self.highest_round_seen.checked_add(1) else {
            // Only a promise of round u32::MAX from a faulty peer gets here: nothing can outbid it.
            warn!(pid = self.pid, "BLE: cannot take over: ballot rounds exhausted");
            return;
        };
        let ballot = Ballot::with(self.config_id, n, self.priority, self.pid);
        assert!(Some(ballot) > self.leader, "a takeover ballot beats the current leader");
        info!(pid = self.pid, ballot = %ballot, previous = ?self.leader, "BLE: taking over");
        self.highest_round_seen = n;
        self.current_ballot = ballot;
        self.leader = Some(ballot);
        self.happy = true;
    }

    fn observe_round(&mut self, n: u32) {
        self.highest_round_seen = self.highest_round_seen.max(n);
    }

    /// Queues an outgoing message; when the queue is full the oldest message is dropped, as a
    /// newer heartbeat carries fresher state.
    fn queue(&mut self, m: BLEMessage) {
        if self.outgoing.len() >= self.buffer_size {
            let dropped = self.outgoing.pop_front().expect("buffer_size >= 1, so a full queue holds one");
            self.dropped_messages += 1;
            if self.dropped_messages == 1 {
                warn!(
                    buffer_size = self.buffer_size,
                    %dropped,
                    "BLE: outgoing buffer full, dropping the oldest heartbeat; take messages more often"
                );
            } else {
                debug!(%dropped, "BLE: outgoing buffer full, dropped the oldest heartbeat");
            }
        }
        self.outgoing.push_back(m);
        assert!(self.outgoing.len() <= self.buffer_size);
    }

    fn check_invariants(&self) {
        let own = self.current_ballot;
        assert_eq!(own.pid, self.pid, "our ballot carries our pid");
        assert_eq!(own.config_id, self.config_id, "our ballot is of our configuration");
        assert!(own.n <= self.highest_round_seen);
        if let Some(leader) = self.leader {
            assert_eq!(leader.config_id, self.config_id, "the leader is of our configuration");
            assert!(leader.n <= self.highest_round_seen);
            if leader.pid == self.pid {
                // Outside recovery, a leader with our pid is exactly our ballot (so leader >= own).
                assert!(leader == own || own.n == RECOVERY_ROUND, "a leader with our pid is our ballot");
            }
        }
        assert!(!self.happy || self.leader.is_some(), "happy implies a known leader");
        assert!(self.replies.len() <= self.peers.len());
        assert!(self.outgoing.len() <= self.buffer_size);
        assert!(self.ticks_until_round_end >= 1);
    }
}
