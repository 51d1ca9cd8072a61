//! The follower role: promise, get synchronised, accept entries, learn decisions.

use std::fmt::Debug;

use crate::{
    ballot::Ballot,
    messages::{AcceptDecide, AcceptStopSign, Accepted, Decide, NotAccepted, PaxosMsg, Promise},
    storage::{Snapshot, Storage, StorageError, StorageOp},
    util::{NodeId, SequenceNumber},
};

use super::context::Context;

/// Where a follower stands with its leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FollowerPhase {
    /// No leader has prepared this replica yet.
    Idle,
    /// Promised a leader; waiting for its AcceptSync.
    Prepare,
    /// Synchronised with the leader; accepting entries.
    Accept,
    /// Lost messages or restarted; asked the leader to prepare it again (PrepareReq).
    Recover,
}

/// What the replica must do after a follower handler, beyond the follower's own state.
pub(crate) enum Reaction {
    None,
    /// A message was lost: recover from this leader.
    Recover(NodeId),
    /// Just synchronised with the leader.
    Synced,
}

/// The follower's own state.
pub(crate) struct Follower<T, S> {
    pub(crate) phase: FollowerPhase,
    /// Last sequence number received from the leader in this session.
    seq: SequenceNumber,
    /// The highest session opened by a Prepare of the promised ballot in this process: an
    /// AcceptSync of a lower session is a delayed copy and must not be applied. `None` until a
    /// Prepare was handled (after a restart, every AcceptSync in flight is stale).
    prepared_session: Option<(Ballot, u64)>,
    /// The last Promise sent, resent until the AcceptSync arrives.
    pub(crate) cached_promise: Option<Promise<T, S>>,
    /// Position in the outgoing queue of an unsent Accepted, to update instead of adding another.
    pending_accepted: Option<usize>,
}

/// How a sequence number relates to the last one received.
enum SequenceCheck {
    Expected,
    Outdated,
    /// Messages before this one were lost.
    Gap,
}

impl<T: Clone + Debug, S: Snapshot<T>> Follower<T, S> {
    pub(crate) fn new(phase: FollowerPhase) -> Self {
        Follower {
            phase,
            seq: SequenceNumber::default(),
            prepared_session: None,
            cached_promise: None,
            pending_accepted: None,
        }
    }

    /// Records the session a Prepare of ballot `n` opened.
    pub(crate) fn note_prepare(&mut self, n: Ballot, session: u64) {
        let session = match self.prepared_session {
            Some((b, s)) if b == n => s.max(session),
            _ => {
                // A new ballot: the sessions of the previous one are over.
                self.seq = SequenceNumber::default();
                session
            }
        };
        self.prepared_session = Some((n, session));
    }

    /// True if an AcceptSync of ballot `n` and `session` answers the latest Prepare: not older
    /// than the session that Prepare opened and newer than every session already applied.
    pub(crate) fn is_fresh_accept_sync(&self, n: Ballot, session: u64) -> bool {
        let prepared = matches!(self.prepared_session, Some((b, s)) if b == n && session >= s);
        prepared && session > self.seq.session
    }

    /// True if a Prepare of ballot `n` opening `session` is a delayed copy: a later Prepare or
    /// AcceptSync of the same ballot was already seen. Answering it would reopen the Prepare
    /// phase for an older session.
    pub(crate) fn is_stale_prepare(&self, n: Ballot, session: u64) -> bool {
        let seen_later_prepare = matches!(self.prepared_session, Some((b, s)) if b == n && session < s);
        let applied_later_sync =
            self.prepared_session.is_some_and(|(b, _)| b == n) && session <= self.seq.session;
        seen_later_prepare || applied_later_sync
    }

    /// Enters the accept phase of a new session after an AcceptSync was applied.
    pub(crate) fn start_session(&mut self, seq: SequenceNumber) {
        self.phase = FollowerPhase::Accept;
        self.seq = seq;
        self.cached_promise = None;
    }

    pub(crate) fn messages_taken(&mut self) {
        self.pending_accepted = None;
    }

    /// Phase 2a: append the entries after the log end, learn the decided index, reply Accepted.
    pub(crate) fn handle_accept_decide<B: Storage<T, S>>(
        &mut self,
        ctx: &mut Context<T, S, B>,
        from: NodeId,
        acc: AcceptDecide<T>,
    ) -> Result<Reaction, StorageError> {
        if let Some(reaction) = self.check_leader_message(ctx, from, acc.n, acc.seq_num) {
            return Ok(reaction);
        }
        if ctx.state.stopsign.is_some() && !acc.entries.is_empty() {
            tracing::warn!(pid = ctx.pid, "entries after a StopSign refused; recovering");
            return Ok(Reaction::Recover(from));
        }
        ctx.append_and_decide(acc.entries, acc.decided_idx)?;
        self.reply_accepted(ctx, from, acc.n);
        Ok(Reaction::None)
    }

    /// Learns the leader's decided index.
    pub(crate) fn handle_decide<B: Storage<T, S>>(
        &mut self,
        ctx: &mut Context<T, S, B>,
        from: NodeId,
        dec: Decide,
    ) -> Result<Reaction, StorageError> {
        if let Some(reaction) = self.check_leader_message(ctx, from, dec.n, dec.seq_num) {
            return Ok(reaction);
        }
        ctx.set_decided_idx(dec.decided_idx);
        Ok(Reaction::None)
    }

    /// Phase 2a for the StopSign: store it after the log end and reply Accepted.
    pub(crate) fn handle_accept_stopsign<B: Storage<T, S>>(
        &mut self,
        ctx: &mut Context<T, S, B>,
        from: NodeId,
        acc: AcceptStopSign,
    ) -> Result<Reaction, StorageError> {
        if let Some(reaction) = self.check_leader_message(ctx, from, acc.n, acc.seq_num) {
            return Ok(reaction);
        }
        if ctx.state.stopsign.as_ref() != Some(&*acc.ss) {
            ctx.write(vec![StorageOp::SetStopSign(Some(*acc.ss))])?;
        }
        self.reply_accepted(ctx, from, acc.n);
        Ok(Reaction::None)
    }

    /// The common guard of accept-phase messages: the ballot must be the promise, the phase
    /// Accept, and the sequence number the next one. Returns `Some` when the message must not be
    /// handled.
    fn check_leader_message<B: Storage<T, S>>(
        &mut self,
        ctx: &mut Context<T, S, B>,
        from: NodeId,
        n: Ballot,
        seq: SequenceNumber,
    ) -> Option<Reaction> {
        let promise = ctx.state.promise;
        if n < promise {
            ctx.send(from, PaxosMsg::NotAccepted(NotAccepted { n: promise }));
            return Some(Reaction::None);
        }
        if n > promise {
            // A leader we never promised: we missed its Prepare.
            return Some(Reaction::Recover(from));
        }
        if self.phase != FollowerPhase::Accept {
            return Some(Reaction::None);
        }
        match self.check_sequence(seq) {
            SequenceCheck::Expected => {
                self.seq = seq;
                None
            }
            SequenceCheck::Outdated => Some(Reaction::None),
            SequenceCheck::Gap => {
                tracing::info!(pid = ctx.pid, expected = %self.seq, got = %seq, "lost messages from the leader");
                Some(Reaction::Recover(from))
            }
        }
    }

    fn check_sequence(&self, seq: SequenceNumber) -> SequenceCheck {
        if seq.session == self.seq.session && seq.counter == self.seq.counter + 1 {
            SequenceCheck::Expected
        } else if seq <= self.seq {
            SequenceCheck::Outdated
        } else {
            SequenceCheck::Gap
        }
    }

    /// Queues Accepted for the current accepted index, updating an unsent one if there is one.
    fn reply_accepted<B: Storage<T, S>>(&mut self, ctx: &mut Context<T, S, B>, leader: NodeId, n: Ballot) {
        let accepted_idx = ctx.state.accepted_idx();
        let decided_idx = ctx.state.decided_idx;
        if let Some(i) = self.pending_accepted {
            if let Some(PaxosMsg::Accepted(acc)) = ctx.outgoing.get_mut(i).map(|m| &mut m.msg) {
                if acc.n == n {
                    acc.accepted_idx = accepted_idx;
                    acc.decided_idx = decided_idx;
                    return;
                }
            }
        }
        self.pending_accepted = Some(ctx.outgoing.len());
        ctx.send(leader, PaxosMsg::Accepted(Accepted { n, accepted_idx, decided_idx }));
    }

    /// Queues Accepted after an AcceptSync.
    pub(crate) fn reply_synced<B: Storage<T, S>>(
        &mut self,
        ctx: &mut Context<T, S, B>,
        leader: NodeId,
        n: Ballot,
    ) {
        self.pending_accepted = None;
        self.reply_accepted(ctx, leader, n);
    }
}
