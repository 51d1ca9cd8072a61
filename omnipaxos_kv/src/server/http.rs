//! The HTTP/JSON API (axum): routes, request checks, and how writes and reads go through the
//! runtime. See the README for the API with curl examples.

use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    extract::{
        rejection::{BytesRejection, PathRejection, QueryRejection},
        DefaultBodyLimit, MatchedPath, Path, Query, Request, State,
    },
    http::{header, StatusCode},
    middleware::{self, Next},
    response::{
        sse::{Event, KeepAlive, Sse},
        IntoResponse, Response,
    },
    routing::{get, post},
    Json, Router,
};
use futures_util::stream::Stream;
use omnipaxos_runtime::{metrics::PrometheusExporter, NodeHandle, ReadConsistency};
use serde::{de::DeserializeOwned, Deserialize};
use tokio::sync::{broadcast, watch, Semaphore};

use super::{
    error::ApiError,
    store::{Store, WatchMessage, WatchStart},
};
use crate::{
    api::{
        CasRequest, CasResponse, Consistency, DeleteRequest, DeleteResponse, ErrorCode, GetResponse, Header,
        KeyValue, ListResponse, PeerStatus, PutRequest, PutResponse, StatusResponse, WatchEventBody,
    },
    command::{CasAction, Command, Compare, Op, SessionRef, WriteResult},
    config::ServerConfig,
    state::{KeyRecord, KvSnapshot},
};

/// Largest `limit` of a list.
pub const MAX_LIST_LIMIT: usize = 10_000;
/// Default `limit` of a list.
pub const DEFAULT_LIST_LIMIT: usize = 1000;

/// What every handler shares.
pub struct AppState {
    pub handle: NodeHandle<Command, KvSnapshot>,
    pub store: Arc<Store>,
    pub config: Arc<ServerConfig>,
    /// The leader this node follows (0: none), refreshed every tick by a task.
    pub leader: Arc<AtomicU64>,
    pub requests: Arc<Semaphore>,
    pub watchers: Arc<Semaphore>,
    pub shutdown: watch::Receiver<bool>,
    pub exporter: Option<PrometheusExporter>,
    /// Handles of the request metrics.
    pub http_metrics: HttpMetrics,
    /// Test switch (feature `test-switches`): serve every read from local state.
    pub unsafe_stale_reads: bool,
}

impl AppState {
    fn header(&self, revision: u64) -> Header {
        Header { node_id: self.config.node_id, leader: self.leader.load(Ordering::Relaxed), revision }
    }
}

/// The router with every route, the limits and the metrics middleware.
pub fn router(state: AppState) -> Router {
    let max_request_bytes = state.config.max_request_bytes;
    // Handlers get the state behind one `Arc`: extracting it per request is one reference count.
    let state = Arc::new(state);
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route("/v1/kv", get(list))
        .route("/v1/kv/{*key}", get(get_key).put(put_key).delete(delete_key))
        .route("/v1/cas/{*key}", post(cas))
        .route("/v1/watch", get(watch))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), limit_and_measure))
        .layer(DefaultBodyLimit::max(max_request_bytes))
        .with_state(state)
}

/// Bounds the requests in flight (a full server answers `429 overloaded` at once; watch
/// streams have their own bound) and records each request's route, status and latency.
async fn limit_and_measure(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let route =
        request.extensions().get::<MatchedPath>().map_or(UNMATCHED_ROUTE, |path| static_route(path.as_str()));
    let started = Instant::now();
    let response = if route == "/v1/watch" {
        next.run(request).await
    } else {
        match state.requests.clone().try_acquire_owned() {
            Ok(_permit) => next.run(request).await,
            Err(_) => ApiError::new(ErrorCode::Overloaded, "too many requests in flight").into_response(),
        }
    };
    let (requests, seconds) = state.http_metrics.handles(route, response.status().as_u16());
    requests.increment(1);
    seconds.record(started.elapsed().as_secs_f64());
    response
}

/// The label of requests that matched no route.
const UNMATCHED_ROUTE: &str = "unmatched";
/// Every route's label (a `MatchedPath` is one of them).
const ROUTES: [&str; 7] =
    ["/health", "/metrics", "/v1/status", "/v1/kv", "/v1/kv/{*key}", "/v1/cas/{*key}", "/v1/watch"];

fn static_route(path: &str) -> &'static str {
    ROUTES.iter().find(|route| **route == path).copied().unwrap_or(UNMATCHED_ROUTE)
}

/// A route's and status's request counter and latency histogram.
type RouteMetrics = (metrics::Counter, metrics::Histogram);

/// The request metrics' handles by route and status, registered once each: looking a labelled
/// metric up in the registry costs allocations and hashing per request.
#[derive(Default)]
pub struct HttpMetrics {
    handles: std::sync::RwLock<std::collections::HashMap<(&'static str, u16), RouteMetrics>>,
}

impl HttpMetrics {
    fn handles(&self, route: &'static str, status: u16) -> (metrics::Counter, metrics::Histogram) {
        let known = self
            .handles
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&(route, status))
            .cloned();
        if let Some(handles) = known {
            return handles;
        }
        let handles = (
            metrics::counter!("opkv_http_requests_total", "route" => route, "status" => status.to_string()),
            metrics::histogram!("opkv_http_request_seconds", "route" => route),
        );
        self.handles
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert((route, status), handles.clone());
        handles
    }
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such route; see the README for the API")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(ErrorCode::MethodNotAllowed, "this route does not take that method")
}

async fn health(State(state): State<Arc<AppState>>) -> Response {
    let status = state.handle.status();
    if status.stopped {
        return ApiError::new(ErrorCode::Stopped, "the replica stopped after a storage failure")
            .into_response();
    }
    match status.leader {
        Some(leader) if status.leader_ready => {
            Json(serde_json::json!({"health": "ok", "node_id": status.node_id, "leader": leader}))
                .into_response()
        }
        _ => ApiError::new(ErrorCode::Unavailable, "no leader reachable").into_response(),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    match &state.exporter {
        Some(exporter) => {
            ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], exporter.render()).into_response()
        }
        None => ApiError::new(ErrorCode::Internal, "no metrics recorder in this process").into_response(),
    }
}

async fn status(State(state): State<Arc<AppState>>) -> Json<StatusResponse> {
    let status = state.handle.status();
    let (applied, keys) = {
        let kv = state.store.read();
        (kv.applied(), kv.len() as u64)
    };
    let peers = status
        .peers
        .iter()
        .map(|peer| PeerStatus {
            id: peer.id,
            addr: peer.addr.to_string(),
            link: format!("{:?}", peer.link).to_lowercase(),
            reconnects: peer.reconnects,
            lag_entries: peer.lag_entries,
            decided_index: peer.peer_decided_idx,
        })
        .collect();
    let ballot = status.ballot;
    Json(StatusResponse {
        node_id: status.node_id,
        cluster_id: state.config.cluster_id,
        leader: status.leader,
        leader_ready: status.leader_ready,
        is_leader: status.is_leader,
        is_learner: status.is_learner,
        ballot: format!("{}.{}.{}", ballot.n, ballot.priority, ballot.pid),
        decided_index: status.decided_idx,
        accepted_index: status.accepted_idx,
        compacted_index: status.compacted_idx,
        applied_index: applied,
        keys,
        stopped: status.stopped,
        peers,
        client_addr: state.config.client_listen.to_string(),
        read_lease_ms: state.config.read_lease.as_millis() as u64,
    })
}

/// `?consistency=` of reads.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadParams {
    #[serde(default)]
    consistency: Consistency,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    #[serde(default)]
    prefix: String,
    /// The first key to return (pagination: the last key seen plus "\0").
    #[serde(default)]
    start: String,
    limit: Option<usize>,
    #[serde(default)]
    consistency: Consistency,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WatchParams {
    key: Option<String>,
    prefix: Option<String>,
    from_revision: Option<u64>,
}

fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query.map(|Query(params)| params).map_err(|rejection| {
        ApiError::new(ErrorCode::InvalidRequest, format!("bad query parameters: {}", rejection.body_text()))
    })
}

/// The key of `/v1/kv/{*key}` (percent-decoded), checked against the limits.
fn key(state: &AppState, path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(key) = path.map_err(|rejection| {
        ApiError::new(ErrorCode::InvalidRequest, format!("bad key in the path: {}", rejection.body_text()))
    })?;
    if key.is_empty() {
        return Err(ApiError::new(ErrorCode::InvalidRequest, "the key is empty"));
    }
    if key.len() > state.config.max_key_bytes {
        return Err(ApiError::new(
            ErrorCode::KeyTooLarge,
            format!("the key has {} bytes; the limit is {}", key.len(), state.config.max_key_bytes),
        ));
    }
    Ok(key)
}

/// A JSON body; an empty body reads as `T::default()` where `allow_empty`.
fn json_body<T: DeserializeOwned + Default>(
    body: Result<Bytes, BytesRejection>,
    allow_empty: bool,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(ErrorCode::RequestTooLarge, "the request body is larger than max_request_bytes")
        } else {
            ApiError::new(
                ErrorCode::InvalidRequest,
                format!("cannot read the body: {}", rejection.body_text()),
            )
        }
    })?;
    if allow_empty && bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes).map_err(|error| {
        ApiError::new(ErrorCode::InvalidJson, format!("the body is not valid JSON here: {error}"))
    })
}

fn check_value(state: &AppState, value: &str) -> Result<(), ApiError> {
    if value.len() > state.config.max_value_bytes {
        return Err(ApiError::new(
            ErrorCode::ValueTooLarge,
            format!("the value has {} bytes; the limit is {}", value.len(), state.config.max_value_bytes),
        ));
    }
    Ok(())
}

/// The request's session; without one, a random id that only routes the answer back.
fn session(client_id: Option<u64>, seq: Option<u64>) -> Result<SessionRef, ApiError> {
    match (client_id, seq) {
        (Some(0), _) => Err(ApiError::new(ErrorCode::InvalidRequest, "client_id must be non-zero")),
        (Some(_), Some(0)) => Err(ApiError::new(ErrorCode::InvalidRequest, "seq starts at 1")),
        (Some(client_id), Some(seq)) => Ok(SessionRef { client_id, seq }),
        (None, None) => Ok(SessionRef { client_id: 0, seq: rand::random() }),
        _ => Err(ApiError::new(ErrorCode::InvalidRequest, "client_id and seq go together")),
    }
}

/// Appends `op` and waits for its answer from the state machine.
///
/// The answer comes from the applier (which answers every waiter of the session when it
/// applies the command, also a duplicate). An append that fails definitely applied nothing; one
/// whose outcome is unknown, or that was decided but not answered in time, is reported
/// `unknown_outcome` unless the session's remembered answer settles it.
async fn write(state: &AppState, session: SessionRef, op: Op) -> Result<WriteResult, ApiError> {
    let deadline = tokio::time::Instant::now() + state.config.request_timeout;
    let (_guard, answer) = state.store.wait_for_answer(session);
    let command = Command { session, op };
    let header = state.header(state.store.applied());
    match tokio::time::timeout_at(deadline, state.handle.append(command)).await {
        Ok(Ok(_index)) => {}
        Ok(Err(error)) => {
            if !error.is_definite() {
                if let Some(result) = remembered(state, session) {
                    return Ok(result);
                }
            }
            return Err(ApiError::from_append(&error).with_header(header));
        }
        Err(_) => return Err(unknown_outcome(state, "no outcome within request_timeout_ms")),
    }
    match tokio::time::timeout_at(deadline, answer).await {
        Ok(Ok(result)) => Ok(result),
        // Decided, but the answer did not come: the state may have been replaced by a snapshot.
        _ => remembered(state, session)
            .ok_or_else(|| unknown_outcome(state, "decided, but the answer was not seen in time")),
    }
}

fn remembered(state: &AppState, session: SessionRef) -> Option<WriteResult> {
    (session.client_id != 0).then(|| state.store.read().remembered(session).cloned()).flatten()
}

fn unknown_outcome(state: &AppState, why: &str) -> ApiError {
    ApiError::new(
        ErrorCode::UnknownOutcome,
        format!("{why}: the write may or may not be applied; retry with the same client_id and seq"),
    )
    .with_header(state.header(state.store.applied()))
}

/// Refusals of the state machine, as errors.
fn refused(state: &AppState, result: &WriteResult) -> Option<ApiError> {
    let error = match result {
        WriteResult::QuotaExceeded => {
            ApiError::new(ErrorCode::QuotaExceeded, "the key space is at its quota")
        }
        WriteResult::StaleSequence { last_seq } => ApiError::new(
            ErrorCode::StaleSequence,
            format!("the session already answered seq {last_seq}; this request's answer is gone"),
        ),
        WriteResult::SessionExpired => ApiError::new(
            ErrorCode::SessionExpired,
            "unknown session and not its first request: not applied; start a new session",
        ),
        _ => return None,
    };
    Some(error.with_header(state.header(state.store.applied())))
}

fn unexpected(result: &WriteResult) -> ApiError {
    ApiError::new(ErrorCode::Internal, format!("the state machine answered {result:?} for another operation"))
}

async fn put_key(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<PutResponse>, ApiError> {
    let key = key(&state, path)?;
    let request: PutRequestBody = json_body(body, false)?;
    let request = request.0.ok_or_else(|| ApiError::new(ErrorCode::InvalidJson, "the body needs a value"))?;
    check_value(&state, &request.value)?;
    let session = session(request.client_id, request.seq)?;
    let result = write(&state, session, Op::Put { key: key.clone(), value: request.value }).await?;
    match result {
        WriteResult::Put { revision } => {
            Ok(Json(PutResponse { key, revision, header: state.header(state.store.applied()) }))
        }
        other => Err(refused(&state, &other).unwrap_or_else(|| unexpected(&other))),
    }
}

/// `PutRequest` has no default; wrap it so that `json_body` can require a body.
#[derive(Default)]
struct PutRequestBody(Option<PutRequest>);

impl<'de> Deserialize<'de> for PutRequestBody {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        PutRequest::deserialize(deserializer).map(|request| PutRequestBody(Some(request)))
    }
}

async fn delete_key(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<DeleteResponse>, ApiError> {
    let key = key(&state, path)?;
    let request: DeleteRequest = json_body(body, true)?;
    let session = session(request.client_id, request.seq)?;
    match write(&state, session, Op::Delete { key: key.clone() }).await? {
        WriteResult::Delete { revision, deleted } => {
            Ok(Json(DeleteResponse { key, deleted, revision, header: state.header(state.store.applied()) }))
        }
        other => Err(refused(&state, &other).unwrap_or_else(|| unexpected(&other))),
    }
}

async fn cas(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<CasResponse>, ApiError> {
    let key = key(&state, path)?;
    let request: CasRequest = json_body(body, false)?;
    let compare = match (request.expected_value, request.expected_revision) {
        (Some(value), None) => Compare::Value(value),
        (None, Some(revision)) => Compare::Revision(revision),
        _ => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "give exactly one of expected_value and expected_revision",
            ))
        }
    };
    let then = match (request.value, request.delete) {
        (Some(value), false) => {
            check_value(&state, &value)?;
            CasAction::Put(value)
        }
        (None, true) => CasAction::Delete,
        _ => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "give exactly one of value and delete: true",
            ))
        }
    };
    let session = session(request.client_id, request.seq)?;
    match write(&state, session, Op::Cas { key: key.clone(), compare, then }).await? {
        WriteResult::Cas { succeeded: true, revision, mod_revision } => Ok(Json(CasResponse {
            key,
            succeeded: true,
            revision,
            mod_revision,
            header: state.header(state.store.applied()),
        })),
        WriteResult::Cas { succeeded: false, mod_revision, .. } => {
            let mut error = ApiError::new(
                ErrorCode::CompareFailed,
                format!(
                    "the comparison did not hold (the key's mod revision is {mod_revision}); nothing changed"
                ),
            )
            .with_header(state.header(state.store.applied()));
            error.body.mod_revision = Some(mod_revision);
            Err(error)
        }
        other => Err(refused(&state, &other).unwrap_or_else(|| unexpected(&other))),
    }
}

/// Makes this node's state at least as new as `consistency` requires, before a read.
async fn read_barrier(state: &AppState, consistency: Consistency) -> Result<(), ApiError> {
    if state.unsafe_stale_reads || consistency == Consistency::Stale {
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + state.config.request_timeout;
    // Leases are the core's: with `read_lease_ms` set, a leader holding its lease answers a
    // `lease` barrier at once; without, `lease` reads are read-index reads. `linearizable`
    // reads always take a quorum round.
    let mode = match consistency {
        Consistency::Lease => ReadConsistency::LeaseIfHeld,
        Consistency::Linearizable | Consistency::Stale => ReadConsistency::Confirmed,
    };
    let index = match tokio::time::timeout_at(deadline, state.handle.read_barrier_with(mode)).await {
        Ok(Ok(index)) => index,
        Ok(Err(error)) => {
            return Err(ApiError::from_read(&error).with_header(state.header(state.store.applied())))
        }
        Err(_) => {
            return Err(ApiError::new(ErrorCode::Unavailable, "no read index within request_timeout_ms")
                .with_header(state.header(state.store.applied())))
        }
    };
    if tokio::time::timeout_at(deadline, state.store.wait_applied(index)).await.is_err() {
        return Err(ApiError::new(ErrorCode::Unavailable, "the state did not reach the read index in time")
            .with_header(state.header(state.store.applied())));
    }
    Ok(())
}

fn key_value(key: &str, record: &KeyRecord) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: record.value.clone(),
        create_revision: record.create_revision,
        mod_revision: record.mod_revision,
        version: record.version,
    }
}

async fn get_key(
    State(state): State<Arc<AppState>>,
    path: Result<Path<String>, PathRejection>,
    params: Result<Query<ReadParams>, QueryRejection>,
) -> Result<Json<GetResponse>, ApiError> {
    let key = key(&state, path)?;
    let params = query(params)?;
    read_barrier(&state, params.consistency).await?;
    let kv = state.store.read();
    let header = state.header(kv.applied());
    match kv.get(&key) {
        Some(record) => Ok(Json(GetResponse { kv: key_value(&key, record), header })),
        None => Err(ApiError::new(ErrorCode::KeyNotFound, format!("no key {key:?}")).with_header(header)),
    }
}

async fn list(
    State(state): State<Arc<AppState>>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<ListResponse>, ApiError> {
    let params = query(params)?;
    let limit = params.limit.unwrap_or(DEFAULT_LIST_LIMIT);
    if limit == 0 || limit > MAX_LIST_LIMIT {
        return Err(ApiError::new(ErrorCode::InvalidRequest, format!("limit must be 1..={MAX_LIST_LIMIT}")));
    }
    read_barrier(&state, params.consistency).await?;
    let kv = state.store.read();
    let (items, more) = kv.list(&params.prefix, &params.start, limit);
    let kvs = items.into_iter().map(|(key, record)| key_value(key, record)).collect();
    Ok(Json(ListResponse { kvs, more, header: state.header(kv.applied()) }))
}

/// `GET /v1/watch?key=K | prefix=P &from_revision=R`: a server-sent event per change
/// (`event: put|delete`, `id: revision`, `data: {...}`), from revision `R` (default: the next
/// one) on. Ends with an `event: error` if the watcher falls too far behind or the state was
/// replaced by a snapshot (`compacted`: read again and watch from the new revision).
async fn watch(
    State(state): State<Arc<AppState>>,
    params: Result<Query<WatchParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let params = query(params)?;
    let filter = match (params.key, params.prefix) {
        (Some(key), None) => Filter::Key(key),
        (None, Some(prefix)) => Filter::Prefix(prefix),
        (None, None) => Filter::Prefix(String::new()),
        (Some(_), Some(_)) => {
            return Err(ApiError::new(ErrorCode::InvalidRequest, "give key or prefix, not both"))
        }
    };
    let permit = state
        .watchers
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::new(ErrorCode::Overloaded, "too many watch streams (max_watchers)"))?;
    let from = params.from_revision.unwrap_or_else(|| state.store.applied() + 1).max(1);
    let (backlog, receiver) = match state.store.watch_from(from) {
        WatchStart::Ready(backlog, receiver) => (backlog, receiver),
        WatchStart::Compacted(oldest) => {
            return Err(ApiError::new(
                ErrorCode::Compacted,
                format!("revisions before {oldest} are no longer kept here; read the key space and watch from its revision"),
            ))
        }
    };
    let stream = WatchStream {
        backlog: backlog.into(),
        receiver,
        filter,
        from,
        shutdown: state.shutdown.clone(),
        _permit: permit,
        done: false,
    };
    Ok(Sse::new(stream.into_stream())
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
        .into_response())
}

enum Filter {
    Key(String),
    Prefix(String),
}

impl Filter {
    fn matches(&self, key: &str) -> bool {
        match self {
            Filter::Key(wanted) => key == wanted,
            Filter::Prefix(prefix) => key.starts_with(prefix.as_str()),
        }
    }
}

struct WatchStream {
    backlog: std::collections::VecDeque<crate::command::WatchEvent>,
    receiver: broadcast::Receiver<WatchMessage>,
    filter: Filter,
    from: u64,
    shutdown: watch::Receiver<bool>,
    _permit: tokio::sync::OwnedSemaphorePermit,
    done: bool,
}

impl WatchStream {
    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> + Send {
        futures_util::stream::unfold(self, |mut stream| async move {
            let event = stream.next_event().await?;
            Some((Ok(event), stream))
        })
    }

    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if self.done {
                return None;
            }
            while let Some(event) = self.backlog.pop_front() {
                if event.revision >= self.from && self.filter.matches(&event.key) {
                    self.from = event.revision + 1;
                    return Some(sse_event(event));
                }
            }
            let message = tokio::select! {
                message = self.receiver.recv() => message,
                _ = self.shutdown.wait_for(|stop| *stop) => {
                    self.done = true;
                    return Some(error_event(ErrorCode::ShuttingDown, "the server is shutting down"));
                }
            };
            match message {
                Ok(WatchMessage::Events(events)) => self.backlog.extend(events.iter().cloned()),
                Ok(WatchMessage::Reset) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.done = true;
                    return Some(error_event(
                        ErrorCode::Compacted,
                        "changes were missed (the watcher fell behind or the state was replaced by a snapshot); read again and watch from the new revision",
                    ));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

fn sse_event(event: crate::command::WatchEvent) -> Event {
    let kind = match event.kind {
        crate::command::EventKind::Put => "put",
        crate::command::EventKind::Delete => "delete",
    };
    let body =
        WatchEventBody { revision: event.revision, kind: event.kind, key: event.key, value: event.value };
    let data = serde_json::to_string(&body).unwrap_or_default();
    Event::default().event(kind).id(body.revision.to_string()).data(data)
}

fn error_event(code: ErrorCode, message: &str) -> Event {
    let data = serde_json::json!({"code": code, "message": message}).to_string();
    Event::default().event("error").data(data)
}
