//! Linearizable reads without log writes: read index (default), follower reads, leases.
//!
//! ```text
//!   read_index() ─► ReadBook (every replica): NeedsIndex ─► Asked ─► Indexed ─► Ready
//!                     follower: ReadRequest(n, round) ──────► leader ─┐
//!                     leader:   queued in ReadRounds ─────────────────┤
//!   leader, at take_outgoing: start a round (read_idx = decided index)┘
//!       ReadConfirm(n, round) ─► every peer ─► ReadConfirmed if still promised to n
//!       a write quorum (leader included) confirmed ─► read_idx for every read of the round
//!   replica decided index >= read_idx ─► ReadOutcome::Ready(read_idx)
//! ```
//!
//! Why a confirmed round makes a read linearizable: the round starts after the read was issued
//! and the confirmations come from a write quorum that still promised the leader's ballot when
//! they answered. Any higher ballot needs a read quorum of promises before it can decide
//! anything, and every read quorum meets that write quorum, so nothing was decided by a newer
//! leader before the confirmation: everything decided before the read began is at or below the
//! leader's decided index at the round's start. A leader starts rounds only once its decided
//! index covers the whole log it adopted in its Prepare phase (it may hold entries an earlier
//! leader decided without it knowing); until then reads wait in the queue (Raft's "commit an
//! entry of your term first").
//!
//! Leases (opt-in, `SequencePaxosConfig::set_read_lease`): a confirmed round also grants the
//! leader a lease from the round's start for `lease_ticks × (1 − drift)` of its own ticks, during
//! which it answers reads at once (no messages). A replica that confirms a round remembers when;
//! its Promise to a later ballot carries how long that lease may still run
//! (`lease_ticks × (1 + drift)` minus the ticks since), and a new leader decides nothing (and so
//! answers no read) until the longest such wait is over. A restarted replica assumes it confirmed
//! a lease just before it stopped. Safe as long as every clock's rate is within the configured
//! drift of real time (see ARCHITECTURE.md).

use std::collections::VecDeque;

use crate::{ballot::Ballot, util::LogIndex, util::NodeId};

/// Identifies one read requested with `read_index` at this replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReadId(pub u64);

impl std::fmt::Display for ReadId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "read#{}", self.0)
    }
}

/// What became of a read, reported by `take_read_outcomes`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// The read may be served now from this replica's state machine once it applied every
    /// decided entry up to at least this index (this replica's decided index already reaches
    /// it): the result reflects every write that completed before the read was requested.
    Ready(LogIndex),
    /// The read was not served; try again (possibly at another replica).
    Failed(ReadFailure),
}

/// How a read may be confirmed; see [`SequencePaxos::read_index_with`](super::SequencePaxos::read_index_with).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ReadConsistency {
    /// A leader holding a valid read lease (if leases are configured) answers at once, from
    /// its lease; otherwise a confirmation round. Linearizable while every clock runs within
    /// the configured drift bound. What [`read_index`](super::SequencePaxos::read_index) does.
    #[default]
    LeaseIfHeld,
    /// Always a confirmation round with a quorum (read index), even under a lease: linearizable
    /// whatever the clocks do, at the cost of one round of messages (shared by the reads
    /// waiting for it).
    Confirmed,
}

/// Why a read failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadFailure {
    /// No read index arrived within `read_timeout_ticks` (no leader reachable, or it could not
    /// confirm its leadership).
    TimedOut,
    /// This replica stopped leading while the read waited for its confirmation.
    LeaderChanged,
    /// The read's index reaches a decided StopSign: this configuration ended before the read
    /// could be confirmed in it; read again in the next configuration.
    Reconfigured,
}

/// Leases for reads: see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadLease {
    /// Nominal length of a lease in ticks.
    pub lease_ticks: u64,
    /// Bound on how far any replica's tick rate may differ from real time, in percent (0–50).
    pub max_clock_drift_percent: u64,
}

impl ReadLease {
    /// Ticks of its own clock for which a leader may serve after a round started.
    pub(crate) fn serve_ticks(&self) -> u64 {
        self.lease_ticks * (100 - self.max_clock_drift_percent) / 100
    }

    /// Ticks of any clock after which a lease confirmed at tick 0 has surely ended.
    pub(crate) fn expiry_ticks(&self) -> u64 {
        self.lease_ticks * (100 + self.max_clock_drift_percent) / 100 + 1
    }
}

/// Where one read of this replica stands, while no leader role of this replica holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Waits to be sent to a leader (none known or not synchronised yet).
    NeedsIndex,
    /// Sent to the leader of ballot `leader` in request `round` at tick `at`.
    Asked { leader: Ballot, round: u64, at: u64 },
    /// Has its read index; ready once the decided index reaches it.
    Indexed(LogIndex),
}

#[derive(Clone, Copy, Debug)]
struct LocalRead {
    id: ReadId,
    issued_at: u64,
    stage: Stage,
    consistency: ReadConsistency,
}

/// The reads requested at this replica and their outcomes. Reads its own leader role holds
/// live in that role's [`ReadRounds`]; the rest wait here.
#[derive(Debug, Default)]
pub(crate) struct ReadBook {
    next_id: u64,
    reads: VecDeque<LocalRead>,
    outcomes: Vec<(ReadId, ReadOutcome)>,
    /// Number of the last ReadRequest this replica sent (`first_round` before the first).
    next_round: u64,
    /// Number of this process's first ReadRequest minus one: replies to numbers outside
    /// `first_round + 1..=next_round` answer requests of another process and are ignored.
    first_round: u64,
    /// Reads issued and not yet settled, wherever they wait.
    pending: usize,
}

impl ReadBook {
    /// An empty book for a process: its ReadRequests are numbered from `nonce << 32` if the
    /// process has a nonce, else from `incarnation << 32`, and a ReadReply to a number this
    /// process did not send (an earlier process's request, delayed, parked while this replica
    /// was down, or replayed) answers nothing. The incarnation alone repeats after the storage
    /// was lost (see `SequencePaxosConfig::set_process_nonce`).
    pub(crate) fn for_process(incarnation: u64, nonce: Option<u32>) -> ReadBook {
        let first = nonce.map_or(incarnation, u64::from) << 32;
        ReadBook { next_round: first, first_round: first, ..ReadBook::default() }
    }

    /// Reads issued and not settled yet.
    pub(crate) fn pending(&self) -> usize {
        self.pending
    }

    /// True if reads wait here (not at a leader role).
    #[inline]
    pub(crate) fn has_waiting(&self) -> bool {
        !self.reads.is_empty()
    }

    /// A new read's id; the caller routes it (`wait`, a leader queue, or `settle_one`).
    pub(crate) fn issue(&mut self) -> ReadId {
        self.next_id += 1;
        self.pending += 1;
        ReadId(self.next_id)
    }

    /// The read waits here for an index.
    pub(crate) fn wait(&mut self, id: ReadId, now: u64, consistency: ReadConsistency) {
        self.reads.push_back(LocalRead { id, issued_at: now, stage: Stage::NeedsIndex, consistency });
    }

    /// Settles one read.
    pub(crate) fn settle_one(&mut self, id: ReadId, outcome: ReadOutcome) {
        debug_assert!(self.pending > 0, "a read is settled once");
        self.pending = self.pending.saturating_sub(1);
        self.outcomes.push((id, outcome));
    }

    /// Reads waiting here for an index, handed to this replica's new leader role (with the
    /// tick each was issued at and its consistency); reads that already have their index stay.
    pub(crate) fn take_for_leader(&mut self) -> Vec<(ReadId, u64, ReadConsistency)> {
        let mut taken = Vec::new();
        self.reads.retain(|read| match read.stage {
            Stage::Indexed(_) => true,
            _ => {
                taken.push((read.id, read.issued_at, read.consistency));
                false
            }
        });
        taken
    }

    /// Marks reads that need an index (new, or asked longer than `retry_ticks` ago, or asked of
    /// another leader) as asked of `leader` in a new request; returns its round, if any, and
    /// whether the leader may answer it from a lease: only if no read still waiting for an
    /// index is [`ReadConsistency::Confirmed`] (a reply answers every earlier request too, so
    /// a lease answer must not reach a read that asked for a round).
    pub(crate) fn ask(&mut self, leader: Ballot, now: u64, retry_ticks: u64) -> Option<(u64, bool)> {
        let round = self.next_round + 1;
        let mut any = false;
        for read in self.reads.iter_mut() {
            let due = match read.stage {
                Stage::NeedsIndex => true,
                Stage::Asked { leader: asked, at, .. } => {
                    asked != leader || now >= at.saturating_add(retry_ticks)
                }
                Stage::Indexed(_) => false,
            };
            if due {
                read.stage = Stage::Asked { leader, round, at: now };
                any = true;
            }
        }
        if !any {
            return None;
        }
        self.next_round = round;
        let allow_lease = self.reads.iter().all(|read| {
            matches!(read.stage, Stage::Indexed(_)) || read.consistency == ReadConsistency::LeaseIfHeld
        });
        Some((round, allow_lease))
    }

    /// The leader of ballot `leader` answered request `round` (and so every earlier one) with
    /// `read_idx`.
    pub(crate) fn answered(&mut self, leader: Ballot, round: u64, read_idx: LogIndex) {
        if round <= self.first_round || round > self.next_round {
            return; // not a request of this process (an earlier life's, or a forged one)
        }
        for read in self.reads.iter_mut() {
            if matches!(read.stage, Stage::Asked { leader: l, round: r, .. } if l == leader && r <= round) {
                read.stage = Stage::Indexed(read_idx);
            }
        }
    }

    /// Settles reads whose index the decided index reached, and reads that timed out.
    #[inline]
    pub(crate) fn settle(&mut self, decided_idx: LogIndex, now: u64, timeout_ticks: u64) {
        if !self.reads.is_empty() {
            self.settle_waiting(decided_idx, now, timeout_ticks);
        }
    }

    fn settle_waiting(&mut self, decided_idx: LogIndex, now: u64, timeout_ticks: u64) {
        let mut settled = Vec::new();
        self.reads.retain(|read| match read.stage {
            Stage::Indexed(idx) if idx <= decided_idx => {
                settled.push((read.id, ReadOutcome::Ready(idx)));
                false
            }
            Stage::Indexed(_) => true,
            _ if now >= read.issued_at.saturating_add(timeout_ticks) => {
                settled.push((read.id, ReadOutcome::Failed(ReadFailure::TimedOut)));
                false
            }
            _ => true,
        });
        for (id, outcome) in settled {
            self.settle_one(id, outcome);
        }
    }

    pub(crate) fn take_outcomes(&mut self, buffer: &mut Vec<(ReadId, ReadOutcome)>) {
        buffer.append(&mut self.outcomes);
    }
}

/// Who asked the leader for a read index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Requester {
    /// A read of the leader's own replica, issued at this tick.
    Local(ReadId, u64),
    /// A follower's ReadRequest `round`.
    Remote(NodeId, u64),
}

/// A confirmation round in flight.
#[derive(Debug)]
struct Round {
    number: u64,
    started_at: u64,
    read_idx: LogIndex,
    requesters: Vec<Requester>,
    confirmed_by: Vec<NodeId>,
}

/// What a completed round answers.
pub(crate) struct Confirmed {
    pub(crate) read_idx: LogIndex,
    pub(crate) requesters: Vec<Requester>,
}

/// The leader's read rounds and lease.
#[derive(Debug, Default)]
pub(crate) struct ReadRounds {
    queued: Vec<Requester>,
    in_flight: Option<Round>,
    next_number: u64,
    /// The leader may answer reads from its lease while `now < lease_until`.
    lease_until: Option<u64>,
    /// Rounds numbered up to this one grant no lease: they started before the lease was
    /// expired, on a clock that may have stopped since (see `expire_lease`).
    no_lease_through: u64,
    /// A renewal round is due at this tick (lease mode).
    renew_at: u64,
}

impl ReadRounds {
    pub(crate) fn queue(&mut self, requester: Requester) {
        self.queued.push(requester);
    }

    /// Ends the lease now; the next round confirmed *and started after this call* grants a
    /// new one. A round in flight still confirms its reads (its quorum answered after they
    /// were issued), but its start was counted on the clock that may have stopped: a process
    /// paused right after sending a round's confirmations finds the replies waiting when it
    /// resumes, and a lease counted from that round's start would run on after the others
    /// elected a new leader and decided. With `in_flight_too` false (a mutation: the bug as
    /// found by the simulator's pauses), only the current lease ends.
    pub(crate) fn expire_lease(&mut self, in_flight_too: bool) {
        self.lease_until = None;
        if in_flight_too {
            self.no_lease_through = self.next_number;
        }
    }

    /// True while the lease lets the leader answer at once.
    pub(crate) fn lease_valid(&self, now: u64) -> bool {
        self.lease_until.is_some_and(|until| now < until)
    }

    /// True if a round should start now: reads wait, or the lease needs renewing.
    #[inline]
    pub(crate) fn round_due(&self, now: u64, lease: Option<ReadLease>) -> bool {
        if self.in_flight.is_some() {
            return false;
        }
        !self.queued.is_empty() || (lease.is_some() && now >= self.renew_at)
    }

    /// Starts a round at `read_idx`; returns its number.
    pub(crate) fn start(&mut self, now: u64, read_idx: LogIndex, lease: Option<ReadLease>) -> u64 {
        assert!(self.in_flight.is_none(), "one read round at a time");
        self.next_number += 1;
        let requesters = std::mem::take(&mut self.queued);
        self.in_flight = Some(Round {
            number: self.next_number,
            started_at: now,
            read_idx,
            requesters,
            confirmed_by: Vec::new(),
        });
        if let Some(lease) = lease {
            self.renew_at = now + (lease.serve_ticks() / 3).max(1);
        }
        self.next_number
    }

    /// The number of the round in flight, if any, and whether it started before `tick`.
    pub(crate) fn in_flight_since(&self) -> Option<(u64, u64)> {
        self.in_flight.as_ref().map(|r| (r.number, r.started_at))
    }

    /// Records a confirmation; returns the round's answer once `write_quorum` (the leader
    /// included) confirmed it.
    pub(crate) fn confirm(
        &mut self,
        from: NodeId,
        number: u64,
        write_quorum: usize,
        lease: Option<ReadLease>,
    ) -> Option<Confirmed> {
        let round = self.in_flight.as_mut().filter(|r| r.number == number)?;
        if from != 0 && !round.confirmed_by.contains(&from) {
            round.confirmed_by.push(from);
        }
        if round.confirmed_by.len() + 1 < write_quorum {
            return None;
        }
        let round = self.in_flight.take().expect("checked above");
        if let Some(lease) = lease.filter(|_| round.number > self.no_lease_through) {
            let until = round.started_at + lease.serve_ticks();
            self.lease_until = Some(self.lease_until.map_or(until, |u| u.max(until)));
        }
        Some(Confirmed { read_idx: round.read_idx, requesters: round.requesters })
    }

    /// Takes the leader's own reads that waited longer than `timeout_ticks`.
    pub(crate) fn take_expired(&mut self, now: u64, timeout_ticks: u64) -> Vec<ReadId> {
        let mut expired = Vec::new();
        let mut keep = |r: &Requester| match *r {
            Requester::Local(id, at) if now >= at.saturating_add(timeout_ticks) => {
                expired.push(id);
                false
            }
            _ => true,
        };
        self.queued.retain(&mut keep);
        if let Some(round) = &mut self.in_flight {
            round.requesters.retain(&mut keep);
        }
        expired
    }

    /// Takes every read of the leader's own replica (the role ends).
    pub(crate) fn take_local(&mut self) -> Vec<ReadId> {
        let mut local = Vec::new();
        let rounds = self.in_flight.take().map(|r| r.requesters).unwrap_or_default();
        for requester in std::mem::take(&mut self.queued).into_iter().chain(rounds) {
            if let Requester::Local(id, _) = requester {
                local.push(id);
            }
        }
        local
    }

    /// The round in flight is given up (its messages may be lost): its reads go back to the
    /// queue and the next round starts afresh.
    pub(crate) fn abandon_in_flight(&mut self) {
        if let Some(round) = self.in_flight.take() {
            let mut requesters = round.requesters;
            requesters.append(&mut self.queued);
            self.queued = requesters;
        }
    }
}
