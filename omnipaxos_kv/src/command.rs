//! What the replicated log holds: one [`Command`] per entry, and what applying it answers.
//!
//! These types are the service's durable format (they are stored in every node's log and
//! snapshot and travel between nodes): change them only with a new type tag
//! ([`crate::server::LOG_TYPE_TAG`]).

use serde::{Deserialize, Serialize};

/// A revision: `r` is the change made by the log entry at index `r - 1`, and the cluster's
/// revision after applying the first `n` entries is `n`. 0 means "never" (a key that does not
/// exist has mod revision 0). Like etcd's revisions, every write (also a refused CAS or a
/// duplicate) advances the cluster's revision by one.
pub type Revision = u64;

/// The client session of a write: the state machine remembers the last answer per client, so
/// that a retried request (same `client_id` and `seq`) is applied at most once and gets the
/// original answer. `client_id == 0` means "no session": not deduplicated, not remembered
/// (`seq` then only tells the server which answer is this request's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SessionRef {
    /// Chosen by the client at random (non-zero for a session).
    pub client_id: u64,
    /// The client's request number: 1 for its first request, then increasing.
    pub seq: u64,
}

/// One replicated write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// Who sent it.
    pub session: SessionRef,
    /// What it does.
    pub op: Op,
}

/// A write operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Sets `key` to `value`.
    Put {
        /// The key.
        key: String,
        /// The new value.
        value: String,
    },
    /// Removes `key` (a no-op if absent; it still takes a revision).
    Delete {
        /// The key.
        key: String,
    },
    /// Compare-and-swap: if `compare` holds for `key`, do `then`.
    Cas {
        /// The key.
        key: String,
        /// The condition.
        compare: Compare,
        /// What to do if it holds.
        then: CasAction,
    },
}

impl Op {
    /// The key the operation writes.
    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Delete { key } | Op::Cas { key, .. } => key,
        }
    }
}

/// The condition of a compare-and-swap.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Compare {
    /// The key exists and has this value.
    Value(String),
    /// The key's mod revision is this (0: the key does not exist).
    Revision(Revision),
}

/// What a successful compare-and-swap does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CasAction {
    /// Sets the key to this value.
    Put(String),
    /// Deletes the key.
    Delete,
}

/// What applying a write answered. Deterministic from the log: every node computes the same.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteResult {
    /// The put took effect at `revision`.
    Put {
        /// The key's new mod revision.
        revision: Revision,
    },
    /// The delete was applied at `revision`; `deleted` is false if the key was absent.
    Delete {
        /// The revision of the delete.
        revision: Revision,
        /// Whether the key existed.
        deleted: bool,
    },
    /// The compare-and-swap was evaluated at `revision`.
    Cas {
        /// Whether the compare held (and the action was done).
        succeeded: bool,
        /// The revision of this command.
        revision: Revision,
        /// The key's mod revision after the command (0: absent): the new one if it succeeded,
        /// the unchanged current one if not.
        mod_revision: Revision,
    },
    /// Refused: the state would grow beyond [`crate::state::STATE_QUOTA_BYTES`]. Not applied.
    QuotaExceeded,
    /// Refused: the session already answered a later request (`seq` below its last), so this
    /// request's original answer is gone. It was not applied now (and may have been before).
    StaleSequence {
        /// The session's last sequence number.
        last_seq: u64,
    },
    /// Refused: the client's session is unknown (expired or evicted) and this is not its first
    /// request, so a duplicate cannot be ruled out. Not applied; start a new session.
    SessionExpired,
}

/// One change to the key space, as a watch stream reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEvent {
    /// The revision of the change.
    pub revision: Revision,
    /// `put` or `delete`.
    pub kind: EventKind,
    /// The key.
    pub key: String,
    /// The new value (puts only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// The kind of a [`WatchEvent`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The key was set.
    Put,
    /// The key was removed.
    Delete,
}
