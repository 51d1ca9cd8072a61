//! The node's copy of the state machine, fed by the decided stream; the writers waiting for
//! their answers; the recent changes for watches.
//!
//! One task (the applier) owns every change: it applies decided batches under the state's
//! write lock, then answers waiting writers, then publishes the changes to watchers, then
//! raises the applied index that readers wait for. Readers take the read lock briefly.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, RwLock, RwLockReadGuard},
};

use omnipaxos_runtime::{DecidedEvent, DecidedStream};
use tokio::sync::{broadcast, oneshot, watch};
use tracing::{info, warn};

use crate::{
    command::{Command, Revision, SessionRef, WatchEvent, WriteResult},
    state::{KvSnapshot, KvState},
};

/// Batches of changes buffered for each watcher before it is cut off as too slow (it then gets
/// `compacted` and must re-read).
pub const WATCH_CHANNEL_BATCHES: usize = 1024;

/// What watchers receive.
#[derive(Clone, Debug)]
pub enum WatchMessage {
    /// Changes, in revision order.
    Events(Arc<Vec<WatchEvent>>),
    /// The state was replaced by a snapshot: changes before it are gone.
    Reset,
}

/// Recent changes, for watches that start in the past.
struct History {
    events: VecDeque<WatchEvent>,
    limit: usize,
    /// Bytes of keys and values held, and their limit.
    bytes: usize,
    limit_bytes: usize,
    /// Every change with a revision at or above this is in `events` (or still to come).
    complete_from: Revision,
}

/// Shared by the applier, the HTTP handlers and the watch streams.
pub struct Store {
    state: RwLock<KvState>,
    applied: watch::Sender<u64>,
    waiters: Mutex<HashMap<SessionRef, Vec<oneshot::Sender<WriteResult>>>>,
    history: Mutex<History>,
    events: broadcast::Sender<WatchMessage>,
}

/// Removes a writer's waiter when its request ends, answered or not.
pub struct WaiterGuard<'a> {
    store: &'a Store,
    session: SessionRef,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        let mut waiters = self.store.lock_waiters();
        if let Some(senders) = waiters.get_mut(&self.session) {
            senders.retain(|sender| !sender.is_closed());
            if senders.is_empty() {
                waiters.remove(&self.session);
            }
        }
    }
}

/// Where a watch starts.
pub enum WatchStart {
    /// The changes from the requested revision up to now, and a receiver for the rest.
    Ready(Vec<WatchEvent>, broadcast::Receiver<WatchMessage>),
    /// Changes before this revision are no longer kept.
    Compacted(Revision),
}

impl Store {
    /// An empty store keeping at most `history_limit` recent changes (and `history_limit_bytes`
    /// of their keys and values) for watches that start in the past.
    pub fn new(history_limit: usize, history_limit_bytes: usize) -> Arc<Store> {
        let (events, _) = broadcast::channel(WATCH_CHANNEL_BATCHES);
        Arc::new(Store {
            state: RwLock::new(KvState::default()),
            applied: watch::channel(0).0,
            waiters: Mutex::new(HashMap::new()),
            history: Mutex::new(History {
                events: VecDeque::new(),
                limit: history_limit,
                bytes: 0,
                limit_bytes: history_limit_bytes,
                complete_from: 1,
            }),
            events,
        })
    }

    /// The state, for reading. Held briefly: the applier waits for it.
    pub fn read(&self) -> RwLockReadGuard<'_, KvState> {
        // A panic while holding the lock would be a bug in `apply`; the state is still whole
        // (apply changes one field after another but leaves no invariant broken between
        // commands), so serve it rather than fail every request after.
        self.state.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Entries applied so far.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Waits until at least `index` entries are applied.
    pub async fn wait_applied(&self, index: u64) {
        let mut applied = self.applied.subscribe();
        let _ = applied.wait_for(|applied| *applied >= index).await;
    }

    fn lock_waiters(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<SessionRef, Vec<oneshot::Sender<WriteResult>>>> {
        self.waiters.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_history(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers interest in the answer to `session`'s request; the guard removes it.
    pub fn wait_for_answer(&self, session: SessionRef) -> (WaiterGuard<'_>, oneshot::Receiver<WriteResult>) {
        let (sender, receiver) = oneshot::channel();
        self.lock_waiters().entry(session).or_default().push(sender);
        (WaiterGuard { store: self, session }, receiver)
    }

    /// Where a watch from `from` starts: the kept changes at or after it and a receiver for
    /// later ones, taken together so that none is missed or repeated.
    pub fn watch_from(&self, from: Revision) -> WatchStart {
        let history = self.lock_history();
        if from < history.complete_from {
            return WatchStart::Compacted(history.complete_from);
        }
        let receiver = self.events.subscribe();
        let skip = history.events.partition_point(|event| event.revision < from);
        WatchStart::Ready(history.events.iter().skip(skip).cloned().collect(), receiver)
    }

    /// The oldest revision a watch can start from.
    pub fn watch_complete_from(&self) -> Revision {
        self.lock_history().complete_from
    }

    /// Applies one decided batch (consecutive entries).
    pub fn apply_batch(&self, batch: Vec<omnipaxos_runtime::Decided<Command>>) {
        let mut answers = Vec::with_capacity(batch.len());
        let mut events = Vec::new();
        let applied = {
            let mut state = self.state.write().unwrap_or_else(|poisoned| poisoned.into_inner());
            for decided in &batch {
                if decided.index != state.applied() {
                    // The runtime delivers in order without gaps; this would be a bug there.
                    warn!(
                        index = decided.index,
                        applied = state.applied(),
                        "decided entry out of order; skipped"
                    );
                    continue;
                }
                let result = state.apply(&decided.entry, &mut events);
                answers.push((decided.entry.session, result));
            }
            state.applied()
        };
        {
            let mut waiters = self.lock_waiters();
            if !waiters.is_empty() {
                for (session, result) in answers {
                    for sender in waiters.remove(&session).into_iter().flatten() {
                        let _ = sender.send(result.clone());
                    }
                }
            }
        }
        if !events.is_empty() {
            let mut history = self.lock_history();
            for event in &events {
                history.bytes += event_bytes(event);
                history.events.push_back(event.clone());
            }
            while history.events.len() > history.limit || history.bytes > history.limit_bytes {
                let Some(old) = history.events.pop_front() else { break };
                history.bytes -= event_bytes(&old);
                history.complete_from = old.revision + 1;
            }
            // Sent under the history lock, so `watch_from` sees each change exactly once.
            let _ = self.events.send(WatchMessage::Events(Arc::new(events)));
        }
        self.applied.send_replace(applied);
    }

    /// Replaces the state with a snapshot of the decided prefix `[0, end)`.
    pub fn install(&self, snapshot: KvSnapshot, end: u64) {
        let state = snapshot.into_state();
        if state.applied() != end {
            warn!(covers = state.applied(), end, "snapshot does not cover what the runtime says");
        }
        let applied = state.applied();
        info!(applied, keys = state.len(), "state replaced by a snapshot");
        {
            // Writers whose requests the snapshot covers learn their answers from the sessions.
            let mut waiters = self.lock_waiters();
            waiters.retain(|session, senders| match state.remembered(*session) {
                Some(result) => {
                    for sender in senders.drain(..) {
                        let _ = sender.send(result.clone());
                    }
                    false
                }
                None => true,
            });
        }
        *self.state.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = state;
        {
            let mut history = self.lock_history();
            history.events.clear();
            history.bytes = 0;
            history.complete_from = applied + 1;
            let _ = self.events.send(WatchMessage::Reset);
        }
        self.applied.send_replace(applied);
    }
}

/// What an event costs in the history's byte limit.
fn event_bytes(event: &WatchEvent) -> usize {
    event.key.len() + event.value.as_ref().map_or(0, String::len) + 32
}

/// Applies the decided stream to `store` until the node shuts down.
pub async fn run_applier(mut stream: DecidedStream<Command, KvSnapshot>, store: Arc<Store>) {
    while let Some(event) = stream.next_event().await {
        match event {
            DecidedEvent::Entries(batch) => store.apply_batch(batch),
            DecidedEvent::Snapshot { snapshot, end } => store.install(snapshot, end),
        }
    }
}

#[cfg(test)]
mod tests {
    use omnipaxos_runtime::Decided;

    use super::*;
    use crate::command::{Op, SessionRef};

    fn put(index: u64, key: &str) -> Decided<Command> {
        let op = Op::Put { key: key.into(), value: "v".into() };
        Decided { index, entry: Command { session: SessionRef { client_id: 0, seq: index + 1 }, op } }
    }

    #[tokio::test]
    async fn watches_start_from_the_kept_history_or_are_told_it_is_compacted() {
        let store = Store::new(3, 1 << 20);
        let mut waiter = store.wait_for_answer(SessionRef { client_id: 0, seq: 2 }).1;
        store.apply_batch((0..5).map(|i| put(i, &format!("k{i}"))).collect());
        assert_eq!(store.applied(), 5);
        assert_eq!(
            waiter.try_recv(),
            Ok(WriteResult::Put { revision: 2 }),
            "the writer of index 1 got its answer"
        );
        // Three changes kept: revisions 3, 4, 5.
        assert!(matches!(store.watch_from(2), WatchStart::Compacted(3)));
        let WatchStart::Ready(backlog, mut receiver) = store.watch_from(4) else { panic!("kept") };
        assert_eq!(backlog.iter().map(|e| e.revision).collect::<Vec<_>>(), [4, 5]);
        store.apply_batch(vec![put(5, "k5")]);
        match receiver.try_recv() {
            Ok(WatchMessage::Events(events)) => assert_eq!(events[0].revision, 6),
            other => panic!("the next change reaches the watcher: {other:?}"),
        }
        // A snapshot replaces the state: watchers are told, history restarts after it.
        let mut state = KvState::default();
        let mut events = Vec::new();
        for i in 0..10 {
            state.apply(&put(i, "x").entry, &mut events);
        }
        store.install(KvSnapshot::of(state), 10);
        assert!(matches!(receiver.try_recv(), Ok(WatchMessage::Reset)));
        assert_eq!(store.applied(), 10);
        assert!(matches!(store.watch_from(10), WatchStart::Compacted(11)));
    }

    #[test]
    fn the_history_is_bounded_in_bytes_too() {
        let store = Store::new(1000, 200);
        store.apply_batch((0..10).map(|i| put(i, &"k".repeat(50))).collect());
        let WatchStart::Ready(backlog, _) = store.watch_from(store.watch_complete_from()) else { panic!() };
        assert!(backlog.len() <= 2, "{} events of ~83 bytes kept under 200 bytes", backlog.len());
    }
}
