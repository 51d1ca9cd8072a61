//! Concurrent clients over the HTTP API: put, get (every read mode), compare-and-swap and
//! delete on a small set of contended keys with values unique in the run, plus puts of keys
//! written once (for the lost-write check). Each operation is sent once, to one node, and
//! recorded with its outcome: ok, fail (certainly not applied) or unknown.
//!
//! The key set changes every `generation_s` seconds (`c/g<generation>/k<key>`), which splits
//! the history into independent pieces the checker handles one at a time.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use omnipaxos_kv::api::{CasRequest, ErrorBody, ErrorCode, GetResponse};
use omnipaxos_linearizability::{Op, OpResult, Value};
use rand::{rngs::SmallRng, Rng, SeedableRng};
use serde::Serialize;

use crate::{
    history::{Action, Clock, ReadMode, Record, Status},
    NodeId,
};

/// What the clients do.
#[derive(Clone, Debug)]
pub struct WorkloadConfig {
    pub clients: u32,
    pub keys: u8,
    pub generation_s: u64,
    /// Longest pause between two operations of one client, in ms (uniform from 0).
    pub think_ms_max: u64,
    /// Client-side limit on one request.
    pub request_timeout: Duration,
    /// Read modes used, drawn uniformly.
    pub read_modes: Vec<ReadMode>,
}

/// Shared by the clients: endpoints, clock, history, stop flag.
pub struct Shared {
    pub endpoints: Vec<(NodeId, String)>,
    pub clock: Arc<Clock>,
    pub history: Mutex<Vec<Record>>,
    pub stop: AtomicBool,
    pub http: reqwest::Client,
}

/// Builds the HTTP client: no proxies, no retries (reqwest never retries by itself).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_millis(500))
        .pool_idle_timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// The server key of contended key `key` in `generation`.
pub fn kv_key(generation: u32, key: u8) -> String {
    format!("c/g{generation}/k{key}")
}

/// Runs one client until `shared.stop`.
pub async fn run_client(shared: Arc<Shared>, config: WorkloadConfig, client: u32, seed: u64) {
    let mut rng = SmallRng::seed_from_u64(seed ^ (u64::from(client) << 32) ^ 0x5eed);
    let mut counter: u64 = 0;
    let nodes = shared.endpoints.len();
    let mut home = client as usize % nodes;
    // The last value this client saw per key (a good guess for a compare-and-swap).
    let mut seen: Vec<Option<Value>> = vec![None; usize::from(config.keys)];
    let mut seen_generation = u32::MAX;
    while !shared.stop.load(Ordering::Relaxed) {
        if rng.gen_bool(0.1) {
            home = rng.gen_range(0..nodes);
        }
        let (node, endpoint) = shared.endpoints[home].clone();
        let now_s = shared.clock.now_ns() / 1_000_000_000;
        let generation = (now_s / config.generation_s.max(1)) as u32;
        if generation != seen_generation {
            seen.iter_mut().for_each(|v| *v = None);
            seen_generation = generation;
        }
        counter += 1;
        // Unique in the run: the client in the high bits.
        let value: Value = (u64::from(client) + 1) << 40 | counter;
        let key = rng.gen_range(0..config.keys);
        let dice: f64 = rng.gen();
        let action = if dice < 0.25 {
            Action::Kv { generation, op: Op::Put { key, value }, mode: None }
        } else if dice < 0.6 {
            let mode = config.read_modes[rng.gen_range(0..config.read_modes.len())];
            Action::Kv { generation, op: Op::Get { key }, mode: Some(mode) }
        } else if dice < 0.8 {
            let expected = if rng.gen_bool(0.8) { seen[usize::from(key)] } else { None };
            Action::Kv { generation, op: Op::Cas { key, expected, new: value }, mode: None }
        } else if dice < 0.9 {
            Action::Kv { generation, op: Op::Delete { key }, mode: None }
        } else {
            Action::UniquePut { value }
        };
        let invoke_ns = shared.clock.now_ns();
        let (status, result, error) = perform(&shared.http, &endpoint, &action, config.request_timeout).await;
        let complete_ns = shared.clock.now_ns();
        if let (Action::Kv { op, .. }, Some(result)) = (action, result) {
            let slot = &mut seen[usize::from(op.key())];
            match (op, result) {
                (Op::Get { .. }, OpResult::Read(v)) => *slot = v,
                (Op::Put { value, .. }, _) | (Op::Cas { new: value, .. }, OpResult::Swapped(true)) => {
                    *slot = Some(value)
                }
                (Op::Delete { .. }, _) => *slot = None,
                _ => {}
            }
        }
        if status != Status::Ok && rng.gen_bool(0.5) {
            home = (home + 1) % nodes;
        }
        let record = Record { client, node, action, invoke_ns, complete_ns, status, result, error };
        shared.history.lock().unwrap_or_else(|p| p.into_inner()).push(record);
        if config.think_ms_max > 0 {
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..=config.think_ms_max))).await;
        }
    }
}

#[derive(Serialize)]
struct PutBody {
    value: String,
}

/// Sends one operation and classifies the answer.
async fn perform(
    http: &reqwest::Client,
    endpoint: &str,
    action: &Action,
    timeout: Duration,
) -> (Status, Option<OpResult>, Option<String>) {
    let request = match *action {
        Action::Kv { generation, op, mode } => {
            let url = format!("{endpoint}/v1/kv/{}", kv_key(generation, op.key()));
            match op {
                Op::Put { value, .. } => http.put(url).json(&PutBody { value: value.to_string() }),
                Op::Get { .. } => {
                    let consistency = match mode.unwrap_or(ReadMode::Linearizable) {
                        ReadMode::Linearizable => "linearizable",
                        ReadMode::Lease => "lease",
                        ReadMode::Stale => "stale",
                    };
                    http.get(format!("{url}?consistency={consistency}"))
                }
                Op::Delete { .. } => http.delete(url),
                Op::Cas { key, expected, new } => {
                    let body = CasRequest {
                        expected_value: expected.map(|v| v.to_string()),
                        expected_revision: expected.is_none().then_some(0),
                        value: Some(new.to_string()),
                        ..CasRequest::default()
                    };
                    http.post(format!("{endpoint}/v1/cas/{}", kv_key(generation, key))).json(&body)
                }
            }
        }
        Action::UniquePut { value } => {
            http.put(format!("{endpoint}/v1/kv/u/{value}")).json(&PutBody { value: value.to_string() })
        }
    };
    let response = match request.timeout(timeout).send().await {
        Ok(response) => response,
        // Nothing reached the server: certainly not applied.
        Err(error) if error.is_connect() => return (Status::Fail, None, Some(format!("connect: {error}"))),
        Err(error) if error.is_timeout() => return (Status::Unknown, None, Some("timeout".into())),
        Err(error) => return (Status::Unknown, None, Some(format!("transport: {error}"))),
    };
    let status = response.status().as_u16();
    let body = match response.bytes().await {
        Ok(body) => body,
        Err(error) => return (Status::Unknown, None, Some(format!("body: {error}"))),
    };
    let op = match action {
        Action::Kv { op, .. } => Some(*op),
        Action::UniquePut { .. } => None,
    };
    if (200..300).contains(&status) {
        let result = match op {
            Some(Op::Get { .. }) => match serde_json::from_slice::<GetResponse>(&body) {
                Ok(got) => match got.kv.value.parse::<Value>() {
                    Ok(v) => OpResult::Read(Some(v)),
                    Err(_) => {
                        return (Status::Unknown, None, Some(format!("unexpected value {:?}", got.kv.value)))
                    }
                },
                Err(error) => return (Status::Unknown, None, Some(format!("bad body: {error}"))),
            },
            Some(Op::Cas { .. }) => match serde_json::from_slice::<serde_json::Value>(&body) {
                Ok(json) => {
                    OpResult::Swapped(json.get("succeeded").and_then(|s| s.as_bool()).unwrap_or(false))
                }
                Err(error) => return (Status::Unknown, None, Some(format!("bad body: {error}"))),
            },
            _ => OpResult::Done,
        };
        return (Status::Ok, Some(result), None);
    }
    let code = serde_json::from_slice::<ErrorBody>(&body).ok().map(|b| b.code);
    match (op, code) {
        (Some(Op::Get { .. }), Some(ErrorCode::KeyNotFound)) => {
            (Status::Ok, Some(OpResult::Read(None)), None)
        }
        (Some(Op::Cas { .. }), Some(ErrorCode::CompareFailed)) => {
            (Status::Ok, Some(OpResult::Swapped(false)), None)
        }
        (_, Some(code)) if code.is_definite() => (Status::Fail, None, Some(code.to_string())),
        (_, Some(code)) => (Status::Unknown, None, Some(code.to_string())),
        (_, None) => (Status::Unknown, None, Some(format!("HTTP {status}"))),
    }
}
