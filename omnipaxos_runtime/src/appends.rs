//! The path of an `append`: a bounded proposal queue into the replica thread, the appends
//! the replica holds until the core reports their outcome, and the completer task that
//! answers them.
//!
//! Costs are paid per round where they can be: the queue is bounded by a semaphore whose
//! permits the replica returns once per round (a tokio bounded channel takes a lock per
//! item), appends wait for their outcome without a timer of their own (the replica enforces
//! `append_timeout`, oldest first), and answers are sent in one batch per round to a task on a
//! tokio worker, whose wakes of the appending tasks are cheap local wakes.

use std::{
    collections::VecDeque,
    sync::Arc,
    time::{Duration, Instant},
};

use omnipaxos_core::util::{LogIndex, NodeId, ProposalId};
use tokio::sync::{mpsc, oneshot, Semaphore, TryAcquireError};

use crate::error::{AppendError, IndeterminateCause};

/// Up to this many answers of a round are sent by the replica thread itself.
const DIRECT_ANSWERS_MAX: usize = 4;

/// Where an append's answer goes.
pub(crate) type Reply = oneshot::Sender<Result<LogIndex, AppendError>>;

/// One `append` on its way to the replica thread.
pub(crate) struct AppendRequest<T> {
    pub entry: T,
    pub reply: Reply,
    pub enqueued: Instant,
}

/// Why a request was not queued.
pub(crate) enum QueueRefused {
    /// No room within the deadline (or at once, for `try_send`).
    Full,
    /// The replica no longer takes appends.
    Closed,
}

/// A proposal queue of `limit` requests.
pub(crate) fn proposal_queue<T>(limit: usize) -> (ProposalSender<T>, ProposalReceiver<T>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let permits = Arc::new(Semaphore::new(limit));
    (ProposalSender { tx, permits: permits.clone(), limit }, ProposalReceiver { rx, permits, taken: 0 })
}

/// The appending side. Invariant: queued requests + requests taken since the last
/// `release` <= `limit` (each holds a permit).
pub(crate) struct ProposalSender<T> {
    tx: mpsc::UnboundedSender<AppendRequest<T>>,
    permits: Arc<Semaphore>,
    limit: usize,
}

impl<T> ProposalSender<T> {
    /// Queues `request`, waiting for room until `deadline`.
    pub async fn send(
        &self,
        request: AppendRequest<T>,
        deadline: tokio::time::Instant,
    ) -> Result<(), QueueRefused> {
        match self.permits.try_acquire() {
            Ok(permit) => permit.forget(),
            Err(TryAcquireError::Closed) => return Err(QueueRefused::Closed),
            Err(TryAcquireError::NoPermits) => {
                match tokio::time::timeout_at(deadline, self.permits.acquire()).await {
                    Err(_) => return Err(QueueRefused::Full),
                    Ok(Err(_)) => return Err(QueueRefused::Closed),
                    Ok(Ok(permit)) => permit.forget(),
                }
            }
        }
        self.tx.send(request).map_err(|_| QueueRefused::Closed)
    }

    /// Queues `request` if there is room now.
    pub fn try_send(&self, request: AppendRequest<T>) -> Result<(), QueueRefused> {
        match self.permits.try_acquire() {
            Ok(permit) => permit.forget(),
            Err(TryAcquireError::Closed) => return Err(QueueRefused::Closed),
            Err(TryAcquireError::NoPermits) => return Err(QueueRefused::Full),
        }
        self.tx.send(request).map_err(|_| QueueRefused::Closed)
    }

    /// Requests queued or taken in the replica's current round.
    pub fn queued(&self) -> usize {
        self.limit.saturating_sub(self.permits.available_permits())
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// The replica's side.
pub(crate) struct ProposalReceiver<T> {
    rx: mpsc::UnboundedReceiver<AppendRequest<T>>,
    permits: Arc<Semaphore>,
    /// Requests taken since the last `release`.
    taken: usize,
}

impl<T> ProposalReceiver<T> {
    pub fn try_recv(&mut self) -> Option<AppendRequest<T>> {
        let request = self.rx.try_recv().ok()?;
        self.taken += 1;
        Some(request)
    }

    pub async fn recv(&mut self) -> Option<AppendRequest<T>> {
        let request = self.rx.recv().await?;
        self.taken += 1;
        Some(request)
    }

    /// Returns the permits of every request taken since the last call: one lock per round.
    pub fn release(&mut self) {
        if self.taken > 0 {
            self.permits.add_permits(std::mem::take(&mut self.taken));
        }
    }

    /// Refuses every later request; waiting appenders see `Closed`.
    pub fn close(&mut self) {
        self.permits.close();
        self.rx.close();
    }

    pub fn len(&self) -> usize {
        self.rx.len()
    }
}

/// Answers collected during a round and sent to the completer task at its end.
pub(crate) struct Completions {
    batch: Vec<(Reply, Result<LogIndex, AppendError>)>,
    tx: mpsc::UnboundedSender<Vec<(Reply, Result<LogIndex, AppendError>)>>,
}

impl Completions {
    pub fn push(&mut self, reply: Reply, result: Result<LogIndex, AppendError>) {
        self.batch.push((reply, result));
    }

    /// Sends this round's answers: a few directly (one wake each, no extra hop: what a lone
    /// proposer waits for), more through the completer task (one wake per round).
    pub fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        if self.batch.len() <= DIRECT_ANSWERS_MAX {
            for (reply, result) in self.batch.drain(..) {
                let _ = reply.send(result);
            }
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        if let Err(mpsc::error::SendError(batch)) = self.tx.send(batch) {
            // The completer is gone (its runtime ended): answer from here.
            for (reply, result) in batch {
                let _ = reply.send(result);
            }
        }
    }
}

/// A completer channel: the replica's [`Completions`] and the task that answers appends.
/// The channel is unbounded in batches, but each batch holds at most one answer per append
/// the replica took, and those are bounded by the core's `buffer_size` plus the queue limit.
pub(crate) fn completer() -> (Completions, impl std::future::Future<Output = ()>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<(Reply, Result<LogIndex, AppendError>)>>();
    let task = async move {
        while let Some(batch) = rx.recv().await {
            for (reply, result) in batch {
                let _ = reply.send(result);
            }
        }
    };
    (Completions { batch: Vec::new(), tx }, task)
}

/// An append handed to the core, waiting for its outcome.
pub(crate) struct PendingAppend {
    pub reply: Reply,
    pub enqueued: Instant,
}

/// The appends handed to the core, by proposal sequence number. The core numbers the appends
/// of one incarnation consecutively, so a slot is found by subtraction, and the oldest is in
/// front, which is where deadlines expire.
pub(crate) struct PendingAppends {
    /// `(node, incarnation)` of this replica's proposal ids, once one was seen.
    owner: Option<(NodeId, u64)>,
    /// Sequence number of `slots[0]`.
    base_seq: u64,
    /// Invariant: the front slot, if any, is `Some` (answered slots are trimmed from the front).
    slots: VecDeque<Option<PendingAppend>>,
    live: usize,
}

impl PendingAppends {
    pub fn new() -> Self {
        PendingAppends { owner: None, base_seq: 0, slots: VecDeque::new(), live: 0 }
    }

    /// Appends waiting for an outcome.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Records an append the core accepted as `id`. Returns it back if `id` is out of order
    /// (never for the core as it is; the caller then answers it as indeterminate).
    pub fn insert(&mut self, id: ProposalId, pending: PendingAppend) -> Result<(), PendingAppend> {
        let owner = (id.node, id.incarnation);
        if *self.owner.get_or_insert(owner) != owner {
            return Err(pending);
        }
        if self.slots.is_empty() {
            self.base_seq = id.seq;
        }
        let next = self.base_seq + self.slots.len() as u64;
        if id.seq < next || id.seq - next > 1024 {
            return Err(pending);
        }
        // A gap means sequence numbers that belong to no pending append.
        self.slots.extend((next..id.seq).map(|_| None));
        self.slots.push_back(Some(pending));
        self.live += 1;
        Ok(())
    }

    /// Takes the append with `id`, if it is pending here.
    pub fn take(&mut self, id: &ProposalId) -> Option<PendingAppend> {
        if self.owner != Some((id.node, id.incarnation)) {
            return None;
        }
        let at = usize::try_from(id.seq.checked_sub(self.base_seq)?).ok()?;
        let pending = self.slots.get_mut(at)?.take()?;
        self.live -= 1;
        self.trim_front();
        Some(pending)
    }

    /// Answers every append older than `timeout` as indeterminate (oldest first; all share
    /// the timeout, so they expire in order).
    pub fn expire(&mut self, now: Instant, timeout: Duration, completions: &mut Completions) {
        while let Some(Some(front)) = self.slots.front() {
            if now.duration_since(front.enqueued) < timeout {
                break;
            }
            let pending = self.slots.pop_front().flatten().expect("front is Some");
            self.base_seq += 1;
            self.live -= 1;
            completions
                .push(pending.reply, Err(AppendError::Indeterminate(IndeterminateCause::Timeout(timeout))));
            self.trim_front();
        }
    }

    /// Takes every pending append.
    pub fn drain(&mut self) -> impl Iterator<Item = PendingAppend> + '_ {
        self.live = 0;
        self.slots.drain(..).flatten()
    }

    fn trim_front(&mut self) {
        while let Some(None) = self.slots.front() {
            self.slots.pop_front();
            self.base_seq += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(seq: u64) -> ProposalId {
        ProposalId { node: 1, seq, incarnation: 2 }
    }

    fn pending(enqueued: Instant) -> (PendingAppend, oneshot::Receiver<Result<LogIndex, AppendError>>) {
        let (reply, outcome) = oneshot::channel();
        (PendingAppend { reply, enqueued }, outcome)
    }

    #[test]
    fn slots_are_found_by_sequence_number_in_any_order() {
        let now = Instant::now();
        let mut appends = PendingAppends::new();
        for seq in 5..10 {
            assert!(appends.insert(id(seq), pending(now).0).is_ok());
        }
        assert_eq!(appends.len(), 5);
        assert!(appends.take(&id(7)).is_some());
        assert!(appends.take(&id(7)).is_none(), "taken once");
        assert!(appends.take(&id(5)).is_some());
        assert!(appends.take(&id(6)).is_some());
        assert_eq!(appends.base_seq, 8, "answered slots leave the front");
        assert!(appends.take(&ProposalId { incarnation: 1, ..id(8) }).is_none(), "another incarnation");
        assert!(appends.take(&id(4)).is_none());
        assert!(appends.take(&id(99)).is_none());
        assert_eq!(appends.len(), 2);
        assert!(appends.insert(id(3), pending(now).0).is_err(), "out of order is refused");
        assert!(appends.insert(id(12), pending(now).0).is_ok(), "a gap is skipped");
        assert!(appends.take(&id(12)).is_some());
        assert_eq!(appends.drain().count(), 2);
    }

    #[tokio::test]
    async fn the_oldest_appends_expire_first() {
        let start = Instant::now();
        let (tx, _rx) = mpsc::unbounded_channel();
        let mut completions = Completions { batch: Vec::new(), tx };
        let mut appends = PendingAppends::new();
        let mut outcomes = Vec::new();
        for (seq, age_ms) in [(1, 0), (2, 10), (3, 20)] {
            let (pending, outcome) = pending(start + Duration::from_millis(age_ms));
            appends.insert(id(seq), pending).ok().unwrap();
            outcomes.push(outcome);
        }
        appends.expire(start + Duration::from_millis(115), Duration::from_millis(100), &mut completions);
        assert_eq!(appends.len(), 1, "the two older than 100 ms expired");
        completions.flush(); // few answers: sent directly
        let expired =
            Err(AppendError::Indeterminate(IndeterminateCause::Timeout(Duration::from_millis(100))));
        assert_eq!(outcomes.remove(0).await.unwrap(), expired);
        assert_eq!(outcomes.remove(0).await.unwrap(), expired);
        assert!(appends.take(&id(3)).is_some());
    }

    #[tokio::test]
    async fn many_answers_go_through_the_completer_task() {
        let (mut completions, task) = completer();
        let completer = tokio::spawn(task);
        let mut outcomes = Vec::new();
        for index in 0..(DIRECT_ANSWERS_MAX as u64 + 3) {
            let (reply, outcome) = oneshot::channel();
            completions.push(reply, Ok(index));
            outcomes.push(outcome);
        }
        completions.flush();
        for (index, outcome) in outcomes.into_iter().enumerate() {
            assert_eq!(outcome.await.unwrap(), Ok(index as u64));
        }
        drop(completions);
        completer.await.unwrap(); // ends once the replica's side is dropped
    }

    #[tokio::test]
    async fn the_queue_holds_at_most_its_limit_until_permits_are_released() {
        let (sender, mut receiver) = proposal_queue::<u32>(2);
        let request = |entry| AppendRequest { entry, reply: oneshot::channel().0, enqueued: Instant::now() };
        assert!(sender.try_send(request(1)).is_ok());
        assert!(sender.try_send(request(2)).is_ok());
        assert!(matches!(sender.try_send(request(3)), Err(QueueRefused::Full)));
        assert_eq!(receiver.try_recv().map(|r| r.entry), Some(1));
        assert!(matches!(sender.try_send(request(3)), Err(QueueRefused::Full)), "taken, not released");
        receiver.release();
        assert!(sender.try_send(request(3)).is_ok());
        assert_eq!(sender.queued(), 2);
        receiver.close();
        assert!(matches!(sender.try_send(request(4)), Err(QueueRefused::Closed)));
    }
}
