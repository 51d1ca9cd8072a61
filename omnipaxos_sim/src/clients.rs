//! Simulated clients: each issues one operation at a time to a replica and records the history
//! the linearizability checker reads.
//!
//! ```text
//!   idle ──issue (unique value, new request id)──► waiting ──reply──► idle (think a few ticks)
//!                                                    └──timeout──► idle; recorded indeterminate
//! ```
//!
//! A timed-out operation may still take effect later, so it stays open forever in the history
//! (Jepsen's `info`). A client never retries a request: it issues a new one.

use std::collections::BTreeMap;

use omnipaxos_core::util::NodeId;
use rand::{rngs::SmallRng, Rng};

use crate::{
    kv::{show, ClientId, Command, Key, Op, OpResult, RequestId, Value},
    linearizability::{HistoryOp, Outcome},
    node::Reply,
};

/// Client endpoints on the client network are numbered from here, far above any node id.
pub const CLIENT_ENDPOINT_BASE: NodeId = 1 << 40;

/// The network address of a client.
pub fn client_endpoint(client: ClientId) -> NodeId {
    CLIENT_ENDPOINT_BASE + NodeId::from(client)
}

/// A message between a client and a replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientMessage {
    /// A client asks a replica to execute a command.
    Request { client: ClientId, command: Command },
    /// A replica answers.
    Reply(Reply),
}

impl std::fmt::Display for ClientMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientMessage::Request { command, .. } => write!(f, "Request {} {}", command.request, command.op),
            ClientMessage::Reply(reply) => match reply.result {
                Some(result) => write!(f, "Reply {} {result}", reply.request),
                None => write!(f, "Reply {} refused", reply.request),
            },
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Waiting {
    request: RequestId,
    history_index: usize,
    deadline: u64,
}

#[derive(Clone, Debug)]
struct Client {
    id: ClientId,
    waiting: Option<Waiting>,
    ready_at: u64,
    next_seq: u64,
    /// The last value this client saw per key: its compare-and-swaps expect it.
    seen: BTreeMap<Key, Option<Value>>,
    /// Tick at which an operation issued after the liveness mark first completed.
    completed_after_mark: Option<u64>,
    /// The node this client believes leads (leader-read mode): a refused get names it.
    leader_hint: Option<NodeId>,
}

/// Counts of operations by how they ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpCounts {
    /// Operations issued.
    pub invoked: u64,
    /// Completed with a result.
    pub ok: u64,
    /// Refused: definitely not executed.
    pub failed: u64,
    /// Timed out or abandoned: may or may not have happened.
    pub indeterminate: u64,
}

/// Every client of a run, and the history they recorded.
pub struct Clients {
    clients: Vec<Client>,
    history: Vec<HistoryOp>,
    /// Run-wide event counter: history times, so no two events share one.
    clock: u64,
    next_value: Value,
    keys: Key,
    timeout_ticks: u64,
    issuing: bool,
    /// History entries from here on were issued after the liveness mark.
    mark_index: usize,
    counts: OpCounts,
}

impl Clients {
    /// `count` idle clients on `keys` keys, timing out after `timeout_ticks`.
    pub fn new(count: usize, keys: Key, timeout_ticks: u64) -> Clients {
        let clients = (0..count as ClientId)
            .map(|id| Client {
                id,
                waiting: None,
                ready_at: 0,
                next_seq: 1,
                seen: BTreeMap::new(),
                completed_after_mark: None,
                leader_hint: None,
            })
            .collect();
        Clients {
            clients,
            history: Vec::new(),
            clock: 0,
            next_value: 1,
            keys: keys.max(1),
            timeout_ticks,
            issuing: true,
            mark_index: usize::MAX,
            counts: OpCounts::default(),
        }
    }

    fn tick_clock(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// New requests of idle clients whose think time is over, each sent to `pick_node`'s choice
    /// (given the operation and the node the client believes leads, if it knows one).
    pub fn issue(
        &mut self,
        now: u64,
        rng: &mut SmallRng,
        mut pick_node: impl FnMut(&mut SmallRng, &Op, Option<NodeId>) -> NodeId,
    ) -> Vec<(ClientId, NodeId, Command)> {
        let mut requests = Vec::new();
        if !self.issuing {
            return requests;
        }
        for i in 0..self.clients.len() {
            let client = &self.clients[i];
            if client.waiting.is_some() || client.ready_at > now {
                continue;
            }
            let op = self.next_op(i, rng);
            let client = &mut self.clients[i];
            let request = RequestId { client: client.id, seq: client.next_seq };
            client.next_seq += 1;
            let id = client.id;
            let call = self.tick_clock();
            self.history.push(HistoryOp { client: id, op, call, outcome: Outcome::Indeterminate });
            let waiting = Waiting {
                request,
                history_index: self.history.len() - 1,
                deadline: now + self.timeout_ticks,
            };
            self.clients[i].waiting = Some(waiting);
            self.counts.invoked += 1;
            let to = pick_node(rng, &op, self.clients[i].leader_hint);
            requests.push((id, to, Command { request, op }));
        }
        requests
    }

    fn next_op(&mut self, client: usize, rng: &mut SmallRng) -> Op {
        let key = rng.gen_range(0..self.keys);
        let value = self.next_value;
        match rng.gen_range(0..100) {
            0..=34 => {
                self.next_value += 1;
                Op::Put { key, value }
            }
            35..=69 => Op::Get { key },
            70..=89 => {
                self.next_value += 1;
                let seen = self.clients[client].seen.get(&key).copied().flatten();
                let expected = if rng.gen_bool(0.8) { seen } else { None };
                Op::Cas { key, expected, new: value }
            }
            _ => Op::Delete { key },
        }
    }

    /// Times out every request past its deadline.
    pub fn expire(&mut self, now: u64, rng: &mut SmallRng) -> Vec<RequestId> {
        let mut expired = Vec::new();
        for client in &mut self.clients {
            if let Some(waiting) = client.waiting.filter(|w| w.deadline <= now) {
                client.waiting = None;
                client.ready_at = now + rng.gen_range(0..3);
                self.counts.indeterminate += 1;
                expired.push(waiting.request);
            }
        }
        expired
    }

    /// Abandons every request in flight (recorded indeterminate) and issues anew at once.
    pub fn abandon_all(&mut self, now: u64) {
        for client in &mut self.clients {
            if client.waiting.take().is_some() {
                self.counts.indeterminate += 1;
            }
            client.ready_at = now;
        }
    }

    /// A reply arrives; replies to requests no longer awaited are ignored (returns false).
    pub fn on_reply(&mut self, reply: &Reply, now: u64, rng: &mut SmallRng) -> bool {
        let Some(client) = self.clients.get(reply.client as usize) else { return false };
        let Some(waiting) = client.waiting.filter(|w| w.request == reply.request) else { return false };
        let at = self.tick_clock();
        let entry = &mut self.history[waiting.history_index];
        entry.outcome = match reply.result {
            Some(result) => Outcome::Ok { result, at },
            None => Outcome::Failed,
        };
        let op = entry.op;
        let after_mark = waiting.history_index >= self.mark_index;
        let client = &mut self.clients[reply.client as usize];
        client.waiting = None;
        client.ready_at = now + rng.gen_range(0..3);
        // A refusal names the leader its node knows (or none: ask anyone next time); a read
        // served in leader-read mode names the node that served it.
        if reply.result.is_none() || reply.leader_hint.is_some() {
            client.leader_hint = reply.leader_hint;
        }
        match reply.result {
            Some(result) => {
                self.counts.ok += 1;
                remember(client, &op, result);
                if after_mark && client.completed_after_mark.is_none() {
                    client.completed_after_mark = Some(now);
                }
            }
            None => self.counts.failed += 1,
        }
        true
    }

    /// From now on, count completions of newly issued operations (the liveness phase).
    pub fn mark_liveness(&mut self) {
        self.mark_index = self.history.len();
        for client in &mut self.clients {
            client.completed_after_mark = None;
        }
    }

    /// The latest first completion after the mark, once every client has one.
    pub fn all_completed_since_mark(&self) -> Option<u64> {
        self.clients.iter().map(|c| c.completed_after_mark).collect::<Option<Vec<u64>>>()?.into_iter().max()
    }

    /// Stops issuing new operations.
    pub fn stop_issuing(&mut self) {
        self.issuing = false;
    }

    /// True if no client waits for a reply.
    pub fn all_idle(&self) -> bool {
        self.clients.iter().all(|c| c.waiting.is_none())
    }

    /// The recorded history.
    pub fn history(&self) -> &[HistoryOp] {
        &self.history
    }

    /// Operations by how they ended.
    pub fn counts(&self) -> OpCounts {
        self.counts
    }

    /// Human-readable description of an operation in the history, for traces.
    pub fn describe(command: &Command) -> String {
        format!("{} {}", command.request, command.op)
    }
}

fn remember(client: &mut Client, op: &Op, result: OpResult) {
    let after = match (*op, result) {
        (Op::Put { value, .. }, _) => Some(value),
        (Op::Get { .. }, OpResult::Read(v)) => v,
        (Op::Cas { new, .. }, OpResult::Swapped(true)) => Some(new),
        (Op::Cas { .. }, _) => return,
        (Op::Delete { .. }, _) => None,
        (Op::Get { .. }, _) => return,
    };
    client.seen.insert(op.key(), after);
}

/// `-` or the value, for traces.
pub fn show_value(value: Option<Value>) -> String {
    show(value)
}
