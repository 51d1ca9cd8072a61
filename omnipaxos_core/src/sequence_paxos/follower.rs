//! The follower role: promise, get synchronised, accept entries, learn decisions.
//!
//! Safety here rests on durable state only, never on what this process remembers: a message of
//! ballot `n` changes the log only if the replica promised `n` and its log was synchronised in
//! `n` (`accepted_round == n`), and then it only *extends* the log, at the positions the leader
//! names. Every log synchronised in `n` is a prefix of the one log the leader of `n` builds, so a
//! delayed, duplicated or replayed message, also one sent before this replica restarted, can
//! add entries it lacks but never remove or move one it holds (see ARCHITECTURE.md).

use std::fmt::Debug;

use crate::{
    ballot::Ballot,
    messages::{AcceptDecide, AcceptStopSign, Accepted, Decide, NotAccepted, PaxosMsg, Promise},
    storage::{Snapshot, Storage, StorageError, StorageOp},
    util::NodeId,
};

use super::context::Context;

/// Where a follower stands with its leader (liveness bookkeeping only: what to resend).
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
    /// Entries are missing: ask this leader to prepare us again.
    Recover(NodeId),
}

/// The follower's own state.
pub(crate) struct Follower<T, S> {
    pub(crate) phase: FollowerPhase,
    /// The last Promise sent, resent until the AcceptSync arrives.
    pub(crate) cached_promise: Option<Promise<T, S>>,
    /// Position in the outgoing queue of an unsent Accepted, to update instead of adding another.
    pending_accepted: Option<usize>,
}

impl<T: Clone + Debug, S: Snapshot<T>> Follower<T, S> {
    pub(crate) fn new(phase: FollowerPhase) -> Self {
        Follower { phase, cached_promise: None, pending_accepted: None }
    }

    /// Enters the accept phase after an AcceptSync was applied.
    pub(crate) fn start_accepting(&mut self) {
        self.phase = FollowerPhase::Accept;
        self.cached_promise = None;
    }

    pub(crate) fn messages_taken(&mut self) {
        self.pending_accepted = None;
    }

    /// Phase 2a: extend the log with the entries it lacks, learn the decided index, reply
    /// Accepted.
    pub(crate) fn handle_accept_decide<B: Storage<T, S>>(
        &mut self,
        ctx: &mut Context<T, S, B>,
        from: NodeId,
        acc: AcceptDecide<T>,
    ) -> Result<Reaction, StorageError> {
        if let Some(reaction) = self.check_leader_message(ctx, from, acc.n) {
            return Ok(reaction);
        }
        let log_end = ctx.state.log_end;
        if acc.start_idx > log_end {
            tracing::info!(
                pid = ctx.pid,
                start_idx = acc.start_idx,
                log_end,
                "entries missing before an AcceptDecide"
            );
            return Ok(Reaction::Recover(from));
        }
        let mut entries = acc.entries;
        let held = (log_end - acc.start_idx).min(entries.len() as u64) as usize;
        entries.drain(..held);
        if ctx.state.stopsign.is_some() && !entries.is_empty() {
            // In ballot `n` the StopSign is the leader's last entry: nothing can follow it.
            tracing::warn!(pid = ctx.pid, "entries after a StopSign of the same ballot ignored");
            return Ok(Reaction::None);
        }
        ctx.append_and_decide(entries, acc.decided_idx)?;
        self.reply_accepted(ctx, from, acc.n);
        Ok(Reaction::None)
    }

    /// Learns the leader's decided index (for the part of its log this replica holds).
    pub(crate) fn handle_decide<B: Storage<T, S>>(
        &mut self,
        ctx: &mut Context<T, S, B>,
        from: NodeId,
        dec: Decide,
    ) -> Result<Reaction, StorageError> {
        if let Some(reaction) = self.check_leader_message(ctx, from, dec.n) {
            return Ok(reaction);
        }
        ctx.set_decided_idx(dec.decided_idx);
        Ok(Reaction::None)
    }

    /// Phase 2a for the StopSign: store it right after the leader's last entry, reply Accepted.
    pub(crate) fn handle_accept_stopsign<B: Storage<T, S>>(
        &mut self,
        ctx: &mut Context<T, S, B>,
        from: NodeId,
        acc: AcceptStopSign,
    ) -> Result<Reaction, StorageError> {
        if let Some(reaction) = self.check_leader_message(ctx, from, acc.n) {
            return Ok(reaction);
        }
        let log_end = ctx.state.log_end;
        if acc.log_end > log_end {
            return Ok(Reaction::Recover(from));
        }
        if acc.log_end < log_end {
            tracing::warn!(
                pid = ctx.pid,
                at = acc.log_end,
                log_end,
                "StopSign before entries of the same ballot ignored"
            );
            return Ok(Reaction::None);
        }
        match &ctx.state.stopsign {
            Some(ss) if *ss == *acc.ss => {}
            Some(_) => {
                tracing::warn!(pid = ctx.pid, "a second, different StopSign of the same ballot ignored");
                return Ok(Reaction::None);
            }
            None => ctx.write([StorageOp::SetStopSign(Some(*acc.ss))])?,
        }
        self.reply_accepted(ctx, from, acc.n);
        Ok(Reaction::None)
    }

    /// The common guard of accept-phase messages, on durable state only: the ballot must be the
    /// promise and the log synchronised in it. Returns `Some` when the message must not be
    /// handled.
    fn check_leader_message<B: Storage<T, S>>(
        &mut self,
        ctx: &mut Context<T, S, B>,
        from: NodeId,
        n: Ballot,
    ) -> Option<Reaction> {
        let promise = ctx.state.promise;
        if n.pid != from {
            tracing::warn!(pid = ctx.pid, from, ballot = %n, "a ballot sent by another node than its owner ignored");
            return Some(Reaction::None);
        }
        if n < promise {
            ctx.send(from, PaxosMsg::NotAccepted(NotAccepted { n: promise }));
            return Some(Reaction::None);
        }
        if n > promise {
            // A leader we never promised: we missed its Prepare.
            return Some(Reaction::Recover(from));
        }
        if ctx.state.accepted_round != n {
            // Promised, not synchronised yet: the AcceptSync is on its way, or was lost.
            return match self.phase {
                FollowerPhase::Prepare => Some(Reaction::None),
                _ => Some(Reaction::Recover(from)),
            };
        }
        None
    }

    /// Queues Accepted for the current accepted index, updating an unsent one if there is one.
    pub(crate) fn reply_accepted<B: Storage<T, S>>(
        &mut self,
        ctx: &mut Context<T, S, B>,
        leader: NodeId,
        n: Ballot,
    ) {
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
}
