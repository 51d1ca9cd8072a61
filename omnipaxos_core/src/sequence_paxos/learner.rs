//! Learners: replicas that lost their storage (amnesia) and must never vote again in this
//! configuration.
//!
//! ```text
//!   learner ──LearnerRequest(from_idx)──► every peer (each resend timeout, or at once for more)
//!   leader  ──LearnerSync(n, decided_idx, decided entries from from_idx)──► learner
//!   learner: appends them as decided; reads go to the leader that answered
//! ```
//!
//! A replica whose storage lost acknowledged state may have promised a ballot, or accepted
//! entries, that it no longer knows of. If it voted again in the same configuration it could
//! break a promise a leader already counted, and a value decided with its acceptance could be
//! lost (ARCHITECTURE.md gives the three-node sequence). So a learner's storage holds the
//! *learner promise* — the largest possible ballot — durably: it refuses every Prepare and every
//! accept-phase message (they are all below its promise, so leaders see `NotAccepted` and stop
//! counting it), never leads, and keeps refusing after any restart. It only learns the decided
//! log, which is the same at every replica, so it can serve linearizable reads (it asks the
//! leader for read indices) and can join the next configuration through a reconfiguration with
//! fresh storage.

use crate::{
    ballot::Ballot,
    util::{ConfigurationId, NodeId},
};

/// At most this many decided entries travel in one LearnerSync; the learner asks again at once
/// for more.
pub(crate) const LEARNER_BATCH_ENTRIES: u64 = 4096;

/// The promise a learner stores: above every ballot a leader can hold.
pub(crate) fn learner_promise(config_id: ConfigurationId, pid: NodeId) -> Ballot {
    Ballot::with(config_id, u32::MAX, u32::MAX, pid)
}

/// A learner's view of where to ask for decided entries.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct LearnerState {
    /// The ballot of the leader that last answered, if any.
    pub(crate) leader: Option<Ballot>,
    /// When the last LearnerRequest went out.
    pub(crate) asked_at: Option<u64>,
    /// When the last LearnerSync arrived.
    pub(crate) answered_at: Option<u64>,
}
