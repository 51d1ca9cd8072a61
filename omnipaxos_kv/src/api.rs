//! The HTTP/JSON contract between `opkv server` and its clients (the CLI, the load generator,
//! curl, the fault harness): request and response bodies, and the error codes.
//!
//! Every error is an HTTP status plus a JSON body `{"code": "...", "message": "..."}` whose
//! `code` is stable ([`ErrorCode`]); the CLI maps each code to an exit code. A write whose
//! outcome cannot be known (a timeout, a lost leader) is answered `503 unknown_outcome`, never
//! as a failure: retrying it with the same `client_id` and `seq` is safe (the server applies it
//! at most once and returns the original answer).

use serde::{Deserialize, Serialize};

use crate::command::{EventKind, Revision};

/// The stable error codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: the body is not valid JSON for this request.
    InvalidJson,
    /// 400: a parameter or field is invalid (named in the message).
    InvalidRequest,
    /// 413: the key is longer than the server's `max_key_bytes` (or empty keys: 400).
    KeyTooLarge,
    /// 413: the value is longer than the server's `max_value_bytes`.
    ValueTooLarge,
    /// 413: the request body is larger than the server's `max_request_bytes`.
    RequestTooLarge,
    /// 404: no such route.
    NotFound,
    /// 405: the route exists, the method does not.
    MethodNotAllowed,
    /// 404: the key does not exist (at the read's revision).
    KeyNotFound,
    /// 412: a compare-and-swap's condition did not hold; nothing was changed.
    CompareFailed,
    /// 503: the write may or may not have been applied (timeout, leader lost, shutdown while in
    /// flight). Retry with the same `client_id` and `seq` to learn the outcome.
    UnknownOutcome,
    /// 503: no leader reachable or no quorum confirmed the read in time; nothing was applied.
    /// Retry (possibly at another node).
    Unavailable,
    /// 429: a queue is full; nothing was applied. Retry later.
    Overloaded,
    /// 503: this node is a learner (it lost its storage) and cannot propose; nothing was
    /// applied. Send writes to another node.
    Learner,
    /// 503: the node's storage failed and it stopped; nothing was applied. Use another node.
    Stopped,
    /// 503: the node is shutting down; nothing was applied.
    ShuttingDown,
    /// 507: the key space is at its quota; nothing was applied.
    QuotaExceeded,
    /// 409: the client's session expired and this is not its first request; nothing was
    /// applied. Start a new session (new `client_id`, `seq` 1).
    SessionExpired,
    /// 409: the session already answered a later request; this one's answer is gone.
    StaleSequence,
    /// 410: a watch asked for revisions this node no longer keeps; read the current state and
    /// watch from its revision.
    Compacted,
    /// 500: a bug; nothing is known about the request.
    Internal,
}

impl ErrorCode {
    /// The HTTP status of this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidJson | ErrorCode::InvalidRequest => 400,
            ErrorCode::KeyTooLarge | ErrorCode::ValueTooLarge | ErrorCode::RequestTooLarge => 413,
            ErrorCode::NotFound | ErrorCode::KeyNotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::CompareFailed => 412,
            ErrorCode::UnknownOutcome
            | ErrorCode::Unavailable
            | ErrorCode::Learner
            | ErrorCode::Stopped
            | ErrorCode::ShuttingDown => 503,
            ErrorCode::Overloaded => 429,
            ErrorCode::QuotaExceeded => 507,
            ErrorCode::SessionExpired | ErrorCode::StaleSequence => 409,
            ErrorCode::Compacted => 410,
            ErrorCode::Internal => 500,
        }
    }

    /// The `opkv` exit code for this error (see [`crate::cli`]).
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorCode::KeyNotFound => 3,
            ErrorCode::CompareFailed => 4,
            ErrorCode::UnknownOutcome => 5,
            ErrorCode::Unavailable
            | ErrorCode::Overloaded
            | ErrorCode::Learner
            | ErrorCode::Stopped
            | ErrorCode::ShuttingDown => 6,
            ErrorCode::InvalidJson
            | ErrorCode::InvalidRequest
            | ErrorCode::KeyTooLarge
            | ErrorCode::ValueTooLarge
            | ErrorCode::RequestTooLarge
            | ErrorCode::NotFound
            | ErrorCode::MethodNotAllowed => 7,
            ErrorCode::QuotaExceeded
            | ErrorCode::SessionExpired
            | ErrorCode::StaleSequence
            | ErrorCode::Compacted => 9,
            ErrorCode::Internal => 1,
        }
    }

    /// True if a request answered with this code was certainly not applied, so that a client
    /// may retry it elsewhere as a new request. False only for `unknown_outcome` and `internal`.
    pub fn is_definite(self) -> bool {
        !matches!(self, ErrorCode::UnknownOutcome | ErrorCode::Internal)
    }

    /// True if retrying the same request (at this or another node) may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorCode::UnknownOutcome
                | ErrorCode::Unavailable
                | ErrorCode::Overloaded
                | ErrorCode::Learner
                | ErrorCode::Stopped
                | ErrorCode::ShuttingDown
        )
    }

    /// The code's name as it appears in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::KeyTooLarge => "key_too_large",
            ErrorCode::ValueTooLarge => "value_too_large",
            ErrorCode::RequestTooLarge => "request_too_large",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::KeyNotFound => "key_not_found",
            ErrorCode::CompareFailed => "compare_failed",
            ErrorCode::UnknownOutcome => "unknown_outcome",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::Learner => "learner",
            ErrorCode::Stopped => "stopped",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::SessionExpired => "session_expired",
            ErrorCode::StaleSequence => "stale_sequence",
            ErrorCode::Compacted => "compacted",
            ErrorCode::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JSON body of every error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The stable code.
    pub code: ErrorCode,
    /// A sentence for people.
    pub message: String,
    /// For `compare_failed`: the key's current mod revision (0: absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mod_revision: Option<Revision>,
    /// The node that answered, with the leader it knew (for diagnosis).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<Header>,
}

/// What every successful response carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The node that answered.
    pub node_id: u64,
    /// The leader it follows (0: none known).
    pub leader: u64,
    /// The cluster revision the answer reflects: for a read, the state it read (at least the
    /// read index); for a write, this node's applied revision when it answered.
    pub revision: Revision,
}

/// `PUT /v1/kv/{key}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutRequest {
    /// The new value.
    pub value: String,
    /// Session, for exactly-once.
    #[serde(default)]
    pub client_id: Option<u64>,
    /// Sequence number in the session.
    #[serde(default)]
    pub seq: Option<u64>,
}

/// `DELETE /v1/kv/{key}` (the body is optional).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteRequest {
    /// Session, for exactly-once.
    #[serde(default)]
    pub client_id: Option<u64>,
    /// Sequence number in the session.
    #[serde(default)]
    pub seq: Option<u64>,
}

/// `POST /v1/cas/{key}`: exactly one of `expected_value` / `expected_revision`, and exactly one
/// of `value` / `delete: true`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CasRequest {
    /// Compare: the key exists with this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_value: Option<String>,
    /// Compare: the key's mod revision is this (0: the key does not exist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_revision: Option<Revision>,
    /// Then: set this value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Then: delete the key.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delete: bool,
    /// Session, for exactly-once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<u64>,
    /// Sequence number in the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// Answer to a put.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutResponse {
    /// The key.
    pub key: String,
    /// The revision of the put (the key's new mod revision).
    pub revision: Revision,
    /// Who answered.
    pub header: Header,
}

/// Answer to a delete.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteResponse {
    /// The key.
    pub key: String,
    /// Whether the key existed.
    pub deleted: bool,
    /// The revision of the delete.
    pub revision: Revision,
    /// Who answered.
    pub header: Header,
}

/// Answer to a successful compare-and-swap (a failed one is `412 compare_failed`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CasResponse {
    /// The key.
    pub key: String,
    /// Always true here.
    pub succeeded: bool,
    /// The revision of the CAS.
    pub revision: Revision,
    /// The key's mod revision after it (0 after a delete).
    pub mod_revision: Revision,
    /// Who answered.
    pub header: Header,
}

/// One key as reads return it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// Its value.
    pub value: String,
    /// The revision that created it.
    pub create_revision: Revision,
    /// The revision of its last change.
    pub mod_revision: Revision,
    /// Changes since creation.
    pub version: u64,
}

/// Answer to `GET /v1/kv/{key}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetResponse {
    /// The key and its value.
    #[serde(flatten)]
    pub kv: KeyValue,
    /// Who answered, and at which revision.
    pub header: Header,
}

/// Answer to `GET /v1/kv?prefix=...`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListResponse {
    /// The keys, in order.
    pub kvs: Vec<KeyValue>,
    /// True if more keys match than `limit`.
    pub more: bool,
    /// Who answered, and at which revision.
    pub header: Header,
}

/// How a read is served (`?consistency=`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    /// Linearizable through the read index: the leader confirms with a quorum that it still
    /// leads (no log write), this node waits until it applied the log up to that index. Reflects
    /// every write acknowledged anywhere before the read began. No clock assumption, also when
    /// the cluster runs with read leases (always a quorum round).
    #[default]
    Linearizable,
    /// As linearizable, but a leader holding a read lease answers without a quorum round. Needs
    /// the cluster's read lease (`read_lease_ms`); without it this is a read-index read. Safe as
    /// long as every node's clock rate stays within `max_clock_drift_percent`.
    Lease,
    /// Served from this node's state at once, without asking anyone: a state the cluster did
    /// reach (a prefix of the decided log, never an undecided write), possibly old; never older
    /// than an earlier stale read at the same node.
    Stale,
}

impl std::fmt::Display for Consistency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Consistency::Linearizable => "linearizable",
            Consistency::Lease => "lease",
            Consistency::Stale => "stale",
        })
    }
}

/// One watch event as it travels in a server-sent event (`event: put|delete`, `id: revision`,
/// `data:` this JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEventBody {
    /// The revision of the change.
    pub revision: Revision,
    /// `put` or `delete`.
    pub kind: EventKind,
    /// The key.
    pub key: String,
    /// The new value (puts only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// `GET /v1/status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusResponse {
    /// This node.
    pub node_id: u64,
    /// The cluster id.
    pub cluster_id: u64,
    /// The leader this node follows (absent: none known).
    pub leader: Option<u64>,
    /// True if that leader looks ready (writes are taken only then).
    pub leader_ready: bool,
    /// True on the leader.
    pub is_leader: bool,
    /// True if this node is a learner (it lost its storage): no votes, no writes.
    pub is_learner: bool,
    /// The promised ballot, as `n.priority.pid`.
    pub ballot: String,
    /// Length of the decided log.
    pub decided_index: u64,
    /// Length of the accepted log.
    pub accepted_index: u64,
    /// Entries below this are compacted into a snapshot.
    pub compacted_index: u64,
    /// Entries applied to the key-value state (the node's revision).
    pub applied_index: u64,
    /// Keys stored.
    pub keys: u64,
    /// True after a storage failure: the node refuses all work until restarted.
    pub stopped: bool,
    /// The peers as this node sees them.
    pub peers: Vec<PeerStatus>,
    /// The client address this node serves.
    pub client_addr: String,
    /// The read lease in ms (0: off).
    pub read_lease_ms: u64,
}

/// One peer in [`StatusResponse`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Its id.
    pub id: u64,
    /// Its peer address.
    pub addr: String,
    /// `connected`, `connecting`, `backoff` (unreachable, retrying) or `stopped`.
    pub link: String,
    /// Times the link came back.
    pub reconnects: u64,
    /// Entries its accepted log is behind this node's (as last reported), if known.
    pub lag_entries: Option<u64>,
    /// Its decided index as last reported, if known.
    pub decided_index: Option<u64>,
}
