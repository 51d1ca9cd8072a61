//! An HTTP client of the service with exactly-once writes: every write carries the client's
//! session (`client_id`, `seq`), and a write whose outcome is unknown (a timeout, a node that
//! died, `503 unknown_outcome`) is retried with the same session at the next endpoint, where
//! the server applies it at most once and returns the original answer. Used by the CLI, the
//! demo and the load generator.

use std::time::Duration;

use rand::Rng;
use serde::{de::DeserializeOwned, Serialize};

use crate::api::{
    CasRequest, CasResponse, Consistency, DeleteRequest, DeleteResponse, ErrorBody, ErrorCode, GetResponse,
    ListResponse, PutRequest, PutResponse, StatusResponse,
};
use crate::http1::{Http1Connection, Http1Error};

/// Default time an operation may take, retries included.
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(15);
/// Time one attempt may take (the server answers within its request timeout, 5 s by default).
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(6);
/// First pause between attempts; it doubles up to [`RETRY_PAUSE_MAX`].
const RETRY_PAUSE_MIN: Duration = Duration::from_millis(5);
const RETRY_PAUSE_MAX: Duration = Duration::from_millis(200);

/// Why an operation did not succeed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error (its code says whether anything was applied).
    #[error("{} ({}): {}", .body.code, .status, .body.message)]
    Api {
        /// The HTTP status.
        status: u16,
        /// The error body.
        body: ErrorBody,
    },
    /// A write may or may not have been applied, and retrying did not tell within the
    /// operation's timeout.
    #[error("unknown outcome: {0}")]
    UnknownOutcome(String),
    /// No endpoint could be reached (nothing was sent, so nothing was applied).
    #[error("no endpoint reachable: {0}")]
    Unreachable(String),
    /// The answer could not be understood.
    #[error("bad answer: {0}")]
    Protocol(String),
    /// The request is invalid before anything was sent.
    #[error("{0}")]
    Invalid(String),
}

impl ClientError {
    /// The error code, for API errors (`unknown_outcome` for an unknown outcome).
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Api { body, .. } => Some(body.code),
            ClientError::UnknownOutcome(_) => Some(ErrorCode::UnknownOutcome),
            _ => None,
        }
    }

    /// The `opkv` exit code (see the README's table).
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::Api { body, .. } => body.code.exit_code(),
            ClientError::UnknownOutcome(_) => ErrorCode::UnknownOutcome.exit_code(),
            ClientError::Unreachable(_) => 8,
            ClientError::Protocol(_) => 1,
            ClientError::Invalid(_) => 7,
        }
    }
}

/// One attempt's result.
enum Attempt<T> {
    Done(T),
    /// The request certainly did not reach the server (connection refused and the like).
    NotSent(String),
    /// Sent, but no answer: a write may have been applied.
    NoAnswer(String),
    Failed(ClientError),
}

/// A client of one cluster. Writes use `&mut self` (they advance the session's sequence
/// number); clone the client for concurrent use: each clone gets its own session.
pub struct Client {
    http: reqwest::Client,
    endpoints: Vec<String>,
    /// The endpoint tried first (the last that answered).
    preferred: usize,
    client_id: u64,
    next_seq: u64,
    operation_timeout: Duration,
    attempt_timeout: Duration,
    /// With [`Client::keep_alive_connections`]: one lean HTTP/1.1 connection per endpoint
    /// (opened when first used, dropped after an error), used instead of the pooled client for
    /// single requests.
    connections: Option<Vec<Option<Http1Connection>>>,
}

impl Clone for Client {
    fn clone(&self) -> Self {
        let mut client = Client {
            http: self.http.clone(),
            endpoints: self.endpoints.clone(),
            preferred: self.preferred,
            client_id: 0,
            next_seq: 1,
            operation_timeout: self.operation_timeout,
            attempt_timeout: self.attempt_timeout,
            connections: self.connections.as_ref().map(|slots| slots.iter().map(|_| None).collect()),
        };
        client.new_session();
        client
    }
}

/// `http://` in front of a bare `host:port`; no trailing slash.
pub fn normalize_endpoint(endpoint: &str) -> String {
    let endpoint = endpoint.trim().trim_end_matches('/');
    if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    }
}

impl Client {
    /// A client of the cluster at `endpoints` (`host:port` or URLs), with a fresh session.
    pub fn new(endpoints: &[String]) -> Result<Client, ClientError> {
        if endpoints.is_empty() {
            return Err(ClientError::Invalid("no endpoints given".into()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .build()
            .map_err(|error| ClientError::Invalid(format!("cannot build the HTTP client: {error}")))?;
        let mut client = Client {
            http,
            endpoints: endpoints.iter().map(|e| normalize_endpoint(e)).collect(),
            preferred: 0,
            client_id: 0,
            next_seq: 1,
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            connections: None,
        };
        client.new_session();
        Ok(client)
    }

    /// Sends single requests over one lean keep-alive HTTP/1.1 connection per endpoint
    /// ([`crate::http1`]) instead of the pooled HTTP client: the same API, a lower cost per
    /// request (what the load generator uses; `http://` endpoints only, others keep the pooled
    /// client). Watch streams always use the pooled client.
    pub fn keep_alive_connections(mut self) -> Self {
        self.connections = Some(self.endpoints.iter().map(|_| None).collect());
        self
    }

    /// Sets how long an operation (with retries) and one attempt may take.
    pub fn with_timeouts(mut self, operation: Duration, attempt: Duration) -> Self {
        self.operation_timeout = operation;
        self.attempt_timeout = attempt.min(operation);
        self
    }

    /// Tries `index` first from now on (e.g. to spread clients over nodes).
    pub fn prefer(mut self, index: usize) -> Self {
        self.preferred = index % self.endpoints.len();
        self
    }

    /// The endpoints.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// This client's session id.
    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    fn new_session(&mut self) {
        self.client_id = rand::thread_rng().gen_range(1..u64::MAX);
        self.next_seq = 1;
    }

    /// Sets `key` to `value`.
    pub async fn put(&mut self, key: &str, value: &str) -> Result<PutResponse, ClientError> {
        let path = format!("/v1/kv/{}", encode_key(key));
        self.write(reqwest::Method::PUT, &path, |client_id, seq| PutRequest {
            value: value.to_string(),
            client_id: Some(client_id),
            seq: Some(seq),
        })
        .await
    }

    /// Deletes `key`.
    pub async fn delete(&mut self, key: &str) -> Result<DeleteResponse, ClientError> {
        let path = format!("/v1/kv/{}", encode_key(key));
        self.write(reqwest::Method::DELETE, &path, |client_id, seq| DeleteRequest {
            client_id: Some(client_id),
            seq: Some(seq),
        })
        .await
    }

    /// Compare-and-swap; `request`'s session fields are filled in.
    pub async fn cas(&mut self, key: &str, request: CasRequest) -> Result<CasResponse, ClientError> {
        let path = format!("/v1/cas/{}", encode_key(key));
        self.write(reqwest::Method::POST, &path, |client_id, seq| CasRequest {
            client_id: Some(client_id),
            seq: Some(seq),
            ..request.clone()
        })
        .await
    }

    /// Reads `key`.
    pub async fn get(&mut self, key: &str, consistency: Consistency) -> Result<GetResponse, ClientError> {
        let path = format!("/v1/kv/{}?consistency={consistency}", encode_key(key));
        self.read(&path).await
    }

    /// Lists keys with `prefix`, at most `limit`.
    pub async fn list(
        &mut self,
        prefix: &str,
        limit: usize,
        consistency: Consistency,
    ) -> Result<ListResponse, ClientError> {
        self.list_from(prefix, "", limit, consistency).await
    }

    /// Lists keys with `prefix` from `start` on (inclusive), at most `limit`.
    pub async fn list_from(
        &mut self,
        prefix: &str,
        start: &str,
        limit: usize,
        consistency: Consistency,
    ) -> Result<ListResponse, ClientError> {
        let path = format!(
            "/v1/kv?prefix={}&start={}&limit={limit}&consistency={consistency}",
            encode_query(prefix),
            encode_query(start)
        );
        self.read(&path).await
    }

    /// Every key with `prefix`, page by page (each page a read of its own).
    pub async fn list_all(
        &mut self,
        prefix: &str,
        consistency: Consistency,
    ) -> Result<Vec<crate::api::KeyValue>, ClientError> {
        let mut all = Vec::new();
        let mut start = String::new();
        loop {
            let page =
                self.list_from(prefix, &start, crate::server::http::MAX_LIST_LIMIT, consistency).await?;
            let more = page.more;
            if let Some(last) = page.kvs.last() {
                start = format!("{}\0", last.key);
            }
            all.extend(page.kvs);
            if !more {
                return Ok(all);
            }
        }
    }

    /// The status of the node at `endpoint` (no retries elsewhere).
    pub async fn status_of(&self, endpoint: &str) -> Result<StatusResponse, ClientError> {
        let url = format!("{}/v1/status", normalize_endpoint(endpoint));
        match self.attempt::<(), StatusResponse>(reqwest::Method::GET, &url, None).await {
            Attempt::Done(status) => Ok(status),
            Attempt::NotSent(why) => Err(ClientError::Unreachable(why)),
            Attempt::NoAnswer(why) => Err(ClientError::Unreachable(why)),
            Attempt::Failed(error) => Err(error),
        }
    }

    /// A streaming GET (watch): the response, from the first endpoint that answers.
    pub async fn open_stream(&self, path_and_query: &str) -> Result<reqwest::Response, ClientError> {
        let mut last = String::new();
        for offset in 0..self.endpoints.len() {
            let endpoint = &self.endpoints[(self.preferred + offset) % self.endpoints.len()];
            match self.http.get(format!("{endpoint}{path_and_query}")).send().await {
                Ok(response) if response.status().is_success() => return Ok(response),
                Ok(response) => return Err(api_error(response).await),
                Err(error) => last = format!("{endpoint}: {error}"),
            }
        }
        Err(ClientError::Unreachable(last))
    }

    /// A write with retries under one session sequence number.
    async fn write<B: Serialize, R: DeserializeOwned>(
        &mut self,
        method: reqwest::Method,
        path: &str,
        body: impl Fn(u64, u64) -> B,
    ) -> Result<R, ClientError> {
        let deadline = tokio::time::Instant::now() + self.operation_timeout;
        let mut maybe_applied: Option<String> = None;
        let mut pause = RETRY_PAUSE_MIN;
        let mut attempt_no = 0usize;
        loop {
            let at = (self.preferred + attempt_no) % self.endpoints.len();
            let request = body(self.client_id, self.next_seq);
            let outcome = self.attempt_at(at, method.clone(), path, Some(&request)).await;
            let last = match outcome {
                Attempt::Done(response) => {
                    self.preferred = (self.preferred + attempt_no) % self.endpoints.len();
                    self.next_seq += 1;
                    return Ok(response);
                }
                Attempt::Failed(ClientError::Api { body, .. }) if body.code == ErrorCode::SessionExpired => {
                    // Definitely not applied; a new session starts at seq 1.
                    self.new_session();
                    continue;
                }
                Attempt::Failed(error @ ClientError::Api { .. }) => {
                    let code = error.code().unwrap_or(ErrorCode::Internal);
                    if !code.is_retryable() {
                        self.next_seq += 1;
                        return Err(error);
                    }
                    if code == ErrorCode::UnknownOutcome {
                        maybe_applied = Some(error.to_string());
                    }
                    error
                }
                Attempt::Failed(error) => {
                    self.next_seq += 1;
                    return Err(error);
                }
                Attempt::NoAnswer(why) => {
                    maybe_applied = Some(why.clone());
                    ClientError::UnknownOutcome(why)
                }
                Attempt::NotSent(why) => ClientError::Unreachable(why),
            };
            attempt_no += 1;
            if tokio::time::Instant::now() + pause >= deadline {
                // The sequence number is used up either way: a later request must not be
                // mistaken for a retry of this one.
                self.next_seq += 1;
                return Err(match maybe_applied {
                    Some(why) => ClientError::UnknownOutcome(why),
                    None => last,
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(RETRY_PAUSE_MAX);
        }
    }

    /// A read with retries at the next endpoint on retryable errors.
    async fn read<R: DeserializeOwned>(&mut self, path: &str) -> Result<R, ClientError> {
        let deadline = tokio::time::Instant::now() + self.operation_timeout;
        let mut pause = RETRY_PAUSE_MIN;
        let mut attempt_no = 0usize;
        loop {
            let at = (self.preferred + attempt_no) % self.endpoints.len();
            let last = match self.attempt_at::<(), R>(at, reqwest::Method::GET, path, None).await {
                Attempt::Done(response) => {
                    self.preferred = (self.preferred + attempt_no) % self.endpoints.len();
                    return Ok(response);
                }
                Attempt::Failed(error) if !error.code().is_some_and(ErrorCode::is_retryable) => {
                    return Err(error)
                }
                Attempt::Failed(error) => error,
                Attempt::NotSent(why) | Attempt::NoAnswer(why) => ClientError::Unreachable(why),
            };
            attempt_no += 1;
            if tokio::time::Instant::now() + pause >= deadline {
                return Err(last);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(RETRY_PAUSE_MAX);
        }
    }

    /// One attempt at endpoint number `at`: over its keep-alive connection if this client
    /// uses them, else through the pooled client.
    async fn attempt_at<B: Serialize, R: DeserializeOwned>(
        &mut self,
        at: usize,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Attempt<R> {
        let endpoint = &self.endpoints[at];
        let Some(addr) = endpoint.strip_prefix("http://").filter(|_| self.connections.is_some()) else {
            let url = format!("{endpoint}{path}");
            return self.attempt(method, &url, body).await;
        };
        let addr = addr.to_string();
        let body = match body.map(serde_json::to_vec).transpose() {
            Ok(body) => body,
            Err(error) => {
                return Attempt::Failed(ClientError::Invalid(format!("cannot encode the request: {error}")))
            }
        };
        let timeout = self.attempt_timeout;
        let Some(slot) = self.connections.as_mut().and_then(|slots| slots.get_mut(at)) else {
            return Attempt::Failed(ClientError::Invalid("no connection slot".into()));
        };
        let exchange = async {
            if slot.is_none() {
                *slot = Some(Http1Connection::connect(&addr, timeout.min(Duration::from_secs(2))).await?);
            }
            let connection = slot.as_mut().expect("set above");
            connection.request(method.as_str(), path, body.as_deref()).await
        };
        let result = tokio::time::timeout(timeout, exchange).await;
        let response = match result {
            Ok(Ok(response)) => {
                if slot.as_ref().is_some_and(|connection| !connection.reusable()) {
                    *slot = None;
                }
                response
            }
            Ok(Err(Http1Error::Connect { source, .. })) => {
                *slot = None;
                return Attempt::NotSent(format!("{addr}: {source}"));
            }
            Ok(Err(error)) => {
                *slot = None;
                return Attempt::NoAnswer(error.to_string());
            }
            Err(_) => {
                *slot = None;
                return Attempt::NoAnswer(format!("{addr}: no answer within {timeout:?}"));
            }
        };
        if !(200..300).contains(&response.status) {
            return Attempt::Failed(error_from_body(response.status, &response.body));
        }
        match serde_json::from_slice(&response.body) {
            Ok(value) => Attempt::Done(value),
            Err(error) => Attempt::Failed(ClientError::Protocol(format!("{addr}{path}: {error}"))),
        }
    }

    async fn attempt<B: Serialize, R: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        url: &str,
        body: Option<&B>,
    ) -> Attempt<R> {
        let mut request = self.http.request(method, url).timeout(self.attempt_timeout);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) if error.is_connect() => return Attempt::NotSent(format!("{url}: {error}")),
            Err(error) => return Attempt::NoAnswer(format!("{url}: {error}")),
        };
        if !response.status().is_success() {
            return Attempt::Failed(api_error(response).await);
        }
        match response.bytes().await {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(value) => Attempt::Done(value),
                Err(error) => Attempt::Failed(ClientError::Protocol(format!("{url}: {error}"))),
            },
            Err(error) => Attempt::NoAnswer(format!("{url}: {error}")),
        }
    }
}

/// The error of a non-success response.
async fn api_error(response: reqwest::Response) -> ClientError {
    let status = response.status().as_u16();
    match response.bytes().await {
        Ok(bytes) => error_from_body(status, &bytes),
        Err(error) => ClientError::Protocol(format!("HTTP {status}, body unreadable: {error}")),
    }
}

/// The error a non-success status and its body describe.
fn error_from_body(status: u16, bytes: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(bytes) {
        Ok(body) => ClientError::Api { status, body },
        Err(_) => ClientError::Protocol(format!(
            "HTTP {status} without an error body: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        )),
    }
}

/// Percent-encodes a key for the path, keeping `/` (keys may contain it; the route takes the
/// rest of the path).
pub fn encode_key(key: &str) -> String {
    encode(key, true)
}

/// Percent-encodes a query value.
pub fn encode_query(value: &str) -> String {
    encode(value, false)
}

fn encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        let plain = byte.is_ascii_alphanumeric()
            || matches!(byte, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && byte == b'/');
        if plain {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_encoded_for_the_path() {
        assert_eq!(encode_key("a/b c?d"), "a/b%20c%3Fd");
        assert_eq!(encode_query("a/b&c"), "a%2Fb%26c");
        assert_eq!(encode_key("é"), "%C3%A9");
    }

    #[test]
    fn endpoints_get_a_scheme() {
        assert_eq!(normalize_endpoint("127.0.0.1:2379/"), "http://127.0.0.1:2379");
        assert_eq!(normalize_endpoint("http://h:1"), "http://h:1");
    }
}
