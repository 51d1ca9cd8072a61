//! The simulated network: directed links with their own delay, loss and duplication, link cuts
//! (full, partial, one-way), and an in-flight queue ordered by delivery tick.
//!
//! ```text
//!   send(from, to, m) ─► link down? lost : lost by chance? lost : queue at now + delay
//!                                            (a duplicate gets its own delay)
//!   pop_due(now) ─► the due message with the lowest (tick, random rank); dropped if its link
//!                   went down in flight
//! ```
//!
//! Reordering comes from the per-message delay and from the random rank among messages due in
//! the same tick. All randomness comes from the caller's seeded generator.
//!
//! Two extensions, both off unless the simulation turns them on (so a run without them draws
//! the same random numbers as before they existed):
//! - **parking** ([`Network::set_down`]): a message due at a node that is down waits, in its
//!   order, until the node is up again, like a message a peer queued for a connection and sent
//!   after the restart; without parking it is dropped.
//! - **the archive** ([`Network::keep_archive`]): the last [`ARCHIVE_PER_LINK`] messages of
//!   every directed link and a uniform sample of [`ARCHIVE_OLD_MAX`] older ones;
//!   [`Network::replay`] delivers archived messages again to their original receivers, a burst
//!   of consecutive ones of one link (a stale Prepare and its AcceptSync) or one old message.

use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};

use omnipaxos_core::util::NodeId;
use rand::{rngs::SmallRng, Rng};

/// The behaviour of one directed link.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkConfig {
    /// Chance that a message is lost.
    pub loss: f64,
    /// Chance that a message is delivered twice.
    pub duplication: f64,
    /// Smallest delay in ticks (0: delivered in the tick it was sent).
    pub delay_min_ticks: u64,
    /// Largest delay in ticks of an ordinary message.
    pub delay_max_ticks: u64,
    /// Chance that a message takes a long detour instead.
    pub spike: f64,
    /// Largest delay in ticks of a detour.
    pub spike_max_ticks: u64,
    /// Deliver in send order, like a TCP connection: a message never overtakes an earlier one
    /// on the same link (it waits for it instead). Without it, delays reorder messages.
    pub fifo: bool,
}

impl LinkConfig {
    /// A reliable link with a fixed delay.
    pub fn reliable(delay_ticks: u64) -> LinkConfig {
        LinkConfig {
            loss: 0.0,
            duplication: 0.0,
            delay_min_ticks: delay_ticks,
            delay_max_ticks: delay_ticks,
            spike: 0.0,
            spike_max_ticks: delay_ticks,
            fifo: true,
        }
    }

    fn delay(&self, rng: &mut SmallRng) -> u64 {
        if self.spike > 0.0 && rng.gen_bool(self.spike) {
            rng.gen_range(self.delay_max_ticks..=self.spike_max_ticks.max(self.delay_max_ticks))
        } else {
            rng.gen_range(self.delay_min_ticks..=self.delay_max_ticks)
        }
    }
}

/// A message taken off the network: (from, to, message).
pub type Delivery<M> = (NodeId, NodeId, M);

/// Recent messages kept per directed link for replays.
pub const ARCHIVE_PER_LINK: usize = 64;
/// Older messages kept for replays (a uniform sample of everything sent).
pub const ARCHIVE_OLD_MAX: usize = 512;
/// Most messages one replay delivers again.
const REPLAY_BURST_MAX: usize = 4;

/// Messages kept for replays.
struct Archive<M> {
    recent: BTreeMap<(NodeId, NodeId), VecDeque<M>>,
    old: Vec<Delivery<M>>,
    /// Messages archived so far (for the uniform sample).
    seen: u64,
}

impl<M: Clone> Archive<M> {
    fn record(&mut self, from: NodeId, to: NodeId, message: &M, rng: &mut SmallRng) {
        self.seen += 1;
        let link = self.recent.entry((from, to)).or_default();
        if link.len() == ARCHIVE_PER_LINK {
            let evicted = link.pop_front().expect("full");
            // Reservoir sampling over the evicted messages: every one is kept with equal chance.
            if self.old.len() < ARCHIVE_OLD_MAX {
                self.old.push((from, to, evicted));
            } else {
                let slot = rng.gen_range(0..self.seen) as usize;
                if slot < ARCHIVE_OLD_MAX {
                    self.old[slot] = (from, to, evicted);
                }
            }
        }
        link.push_back(message.clone());
    }

    /// Consecutive recent messages of one link into `receiver` (any link if `None`), or one
    /// old message.
    fn pick(&self, receiver: Option<NodeId>, rng: &mut SmallRng) -> Vec<Delivery<M>> {
        if !self.old.is_empty() && rng.gen_bool(0.3) {
            let (from, to, m) = &self.old[rng.gen_range(0..self.old.len())];
            if receiver.is_none_or(|r| r == *to) {
                return vec![(*from, *to, m.clone())];
            }
        }
        let links: Vec<(&(NodeId, NodeId), &VecDeque<M>)> = self
            .recent
            .iter()
            .filter(|((_, to), ms)| receiver.is_none_or(|r| r == *to) && !ms.is_empty())
            .collect();
        if links.is_empty() {
            return Vec::new();
        }
        let (&(from, to), messages) = links[rng.gen_range(0..links.len())];
        let start = rng.gen_range(0..messages.len());
        let end = (start + rng.gen_range(1..=REPLAY_BURST_MAX)).min(messages.len());
        messages.range(start..end).map(|m| (from, to, m.clone())).collect()
    }
}

/// What happened to a message handed to [`Network::send`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendFate {
    /// Queued for delivery at this tick.
    Queued(u64),
    /// Queued twice, at these ticks.
    Duplicated(u64, u64),
    /// The link is cut.
    Cut,
    /// Lost by chance.
    Lost,
}

#[derive(Debug)]
struct InFlight<M> {
    deliver_at: u64,
    rank: u64,
    from: NodeId,
    to: NodeId,
    message: M,
}

impl<M> PartialEq for InFlight<M> {
    fn eq(&self, other: &Self) -> bool {
        (self.deliver_at, self.rank) == (other.deliver_at, other.rank)
    }
}
impl<M> Eq for InFlight<M> {}
impl<M> PartialOrd for InFlight<M> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<M> Ord for InFlight<M> {
    /// Reversed: `BinaryHeap` is a max-heap and the earliest message must come out first.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.deliver_at, other.rank).cmp(&(self.deliver_at, self.rank))
    }
}

/// Counters of what the network did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetworkStats {
    /// Messages handed to `send`.
    pub sent: u64,
    /// Messages delivered (duplicates count twice).
    pub delivered: u64,
    /// Messages lost by chance.
    pub lost: u64,
    /// Messages dropped because their link was cut (at send or in flight).
    pub cut: u64,
    /// Extra copies created.
    pub duplicated: u64,
    /// Archived messages delivered again.
    pub replayed: u64,
    /// Messages that waited for their receiver to restart.
    pub parked: u64,
}

/// Directed links between nodes, and the messages in flight.
pub struct Network<M> {
    /// Every link not listed in `links` behaves like this.
    default_link: LinkConfig,
    links: BTreeMap<(NodeId, NodeId), LinkConfig>,
    /// Directed links that deliver nothing.
    cut: BTreeSet<(NodeId, NodeId)>,
    in_flight: BinaryHeap<InFlight<M>>,
    /// Per directed link, the (tick, rank) of the last message queued: FIFO links queue after it.
    last_queued: BTreeMap<(NodeId, NodeId), (u64, u64)>,
    /// Breaks ties between equal ranks so the order never depends on the heap's layout.
    sequence: u64,
    stats: NetworkStats,
    /// Nodes that are down, with the messages waiting for them (`None`: no parking; messages
    /// to down nodes reach the caller, which drops them).
    parked: Option<BTreeMap<NodeId, Vec<InFlight<M>>>>,
    archive: Option<Archive<M>>,
}

impl<M: Clone> Network<M> {
    /// A network whose links all behave like `default_link`.
    pub fn new(default_link: LinkConfig) -> Network<M> {
        Network {
            default_link,
            links: BTreeMap::new(),
            cut: BTreeSet::new(),
            in_flight: BinaryHeap::new(),
            last_queued: BTreeMap::new(),
            sequence: 0,
            stats: NetworkStats::default(),
            parked: None,
            archive: None,
        }
    }

    /// From now on, messages due at a node marked down wait for it (see the module docs).
    pub fn park_for_down_nodes(&mut self) {
        self.parked.get_or_insert_with(BTreeMap::new);
    }

    /// From now on, keeps an archive of sent messages for [`Network::replay`].
    pub fn keep_archive(&mut self) {
        self.archive.get_or_insert_with(|| Archive { recent: BTreeMap::new(), old: Vec::new(), seen: 0 });
    }

    /// Marks `node` down (messages due at it are parked) or up again (its parked messages are
    /// due at `now + 1`, in the order they would have been delivered). No effect without parking.
    pub fn set_down(&mut self, node: NodeId, down: bool, now: u64) {
        let Some(parked) = &mut self.parked else { return };
        if down {
            parked.entry(node).or_default();
            return;
        }
        let Some(mut waiting) = parked.remove(&node) else { return };
        waiting.sort_by_key(|m| (m.deliver_at, m.rank));
        for (i, mut message) in waiting.into_iter().enumerate() {
            message.deliver_at = now + 1;
            message.rank = i as u64;
            self.in_flight.push(message);
        }
    }

    /// Delivers archived messages again to their original receivers, due within 2 ticks: a
    /// burst of consecutive messages of one link into `receiver` (any link if `None`), or one
    /// old message. Returns them for the trace. No effect without an archive.
    pub fn replay(
        &mut self,
        receiver: Option<NodeId>,
        now: u64,
        rng: &mut SmallRng,
    ) -> Vec<(Delivery<M>, u64)> {
        let Some(archive) = &self.archive else { return Vec::new() };
        let picked = archive.pick(receiver, rng);
        let deliver_at = now + rng.gen_range(0..=2);
        let mut replayed = Vec::with_capacity(picked.len());
        for (i, (from, to, message)) in picked.into_iter().enumerate() {
            self.sequence += 1;
            let rank = (self.sequence & 0x7F_FFFF) | ((i as u64) << 56);
            self.in_flight.push(InFlight { deliver_at, rank, from, to, message: message.clone() });
            self.stats.replayed += 1;
            replayed.push(((from, to, message), deliver_at));
        }
        replayed
    }

    /// Hands a message to the network at tick `now`.
    pub fn send(&mut self, from: NodeId, to: NodeId, message: M, now: u64, rng: &mut SmallRng) -> SendFate {
        self.stats.sent += 1;
        if let Some(archive) = &mut self.archive {
            archive.record(from, to, &message, rng);
        }
        if self.cut.contains(&(from, to)) {
            self.stats.cut += 1;
            return SendFate::Cut;
        }
        let link = self.link(from, to);
        if link.loss > 0.0 && rng.gen_bool(link.loss) {
            self.stats.lost += 1;
            return SendFate::Lost;
        }
        let first = now + link.delay(rng);
        if link.duplication > 0.0 && rng.gen_bool(link.duplication) {
            let second = now + link.delay(rng);
            self.stats.duplicated += 1;
            let first = self.enqueue(first, link.fifo, from, to, message.clone(), rng);
            let second = self.enqueue(second, link.fifo, from, to, message, rng);
            return SendFate::Duplicated(first, second);
        }
        SendFate::Queued(self.enqueue(first, link.fifo, from, to, message, rng))
    }

    /// Queues a message; returns its delivery tick.
    fn enqueue(
        &mut self,
        at: u64,
        fifo: bool,
        from: NodeId,
        to: NodeId,
        message: M,
        rng: &mut SmallRng,
    ) -> u64 {
        self.sequence += 1;
        // The random high bits shuffle messages due in the same tick; the sequence breaks ties.
        let mut rank = ((rng.gen::<u64>() >> 24) << 23) | (self.sequence & 0x7F_FFFF);
        let mut deliver_at = at;
        if fifo {
            if let Some(&(last_at, last_rank)) = self.last_queued.get(&(from, to)) {
                if (deliver_at, rank) <= (last_at, last_rank) {
                    deliver_at = last_at;
                    rank = last_rank + 1;
                }
            }
        }
        self.last_queued.insert((from, to), (deliver_at, rank));
        self.in_flight.push(InFlight { deliver_at, rank, from, to, message });
        deliver_at
    }

    /// The next message due at or before `now` whose link is up; messages whose link was cut
    /// while in flight are dropped on the way (returned as `Err` for the trace).
    pub fn pop_due(&mut self, now: u64) -> Option<Result<Delivery<M>, Delivery<M>>> {
        loop {
            if self.in_flight.peek()?.deliver_at > now {
                return None;
            }
            let due = self.in_flight.pop().expect("peeked");
            match self.parked.as_mut().and_then(|p| p.get_mut(&due.to)) {
                Some(waiting) => {
                    self.stats.parked += 1;
                    waiting.push(due);
                }
                None => return Some(self.take_due(due)),
            }
        }
    }

    fn take_due(&mut self, due: InFlight<M>) -> Result<Delivery<M>, Delivery<M>> {
        let InFlight { from, to, message, .. } = due;
        if self.cut.contains(&(from, to)) {
            self.stats.cut += 1;
            return Err((from, to, message));
        }
        self.stats.delivered += 1;
        Ok((from, to, message))
    }

    /// Messages in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The behaviour of the directed link `from -> to`.
    pub fn link(&self, from: NodeId, to: NodeId) -> LinkConfig {
        self.links.get(&(from, to)).copied().unwrap_or(self.default_link)
    }

    /// Changes the behaviour of one directed link.
    pub fn set_link(&mut self, from: NodeId, to: NodeId, config: LinkConfig) {
        self.links.insert((from, to), config);
    }

    /// Every link behaves like `default_link` again (cuts stay).
    pub fn reset_links(&mut self, default_link: LinkConfig) {
        self.default_link = default_link;
        self.links.clear();
    }

    /// Cuts or restores one directed link.
    pub fn set_cut(&mut self, from: NodeId, to: NodeId, cut: bool) {
        if cut {
            self.cut.insert((from, to));
        } else {
            self.cut.remove(&(from, to));
        }
    }

    /// Replaces the set of cut directed links.
    pub fn set_cuts(&mut self, cuts: BTreeSet<(NodeId, NodeId)>) {
        self.cut = cuts;
    }

    /// True if `from -> to` is cut.
    pub fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.cut.contains(&(from, to))
    }

    /// Drops every message in flight to or from `node` (its process died with its sockets).
    pub fn drop_node_traffic(&mut self, node: NodeId) {
        let kept: Vec<InFlight<M>> =
            self.in_flight.drain().filter(|m| m.from != node && m.to != node).collect();
        self.in_flight.extend(kept);
    }

    /// What the network did so far.
    pub fn stats(&self) -> NetworkStats {
        self.stats
    }
}

/// The directed links of an undirected list, both ways.
pub fn both_ways(links: &[(NodeId, NodeId)]) -> BTreeSet<(NodeId, NodeId)> {
    links.iter().flat_map(|&(a, b)| [(a, b), (b, a)]).collect()
}

/// Cuts every directed link between distinct nodes of `nodes` except those in `up`.
pub fn all_cut_except(nodes: &[NodeId], up: &BTreeSet<(NodeId, NodeId)>) -> BTreeSet<(NodeId, NodeId)> {
    let mut cuts = BTreeSet::new();
    for &a in nodes {
        for &b in nodes {
            if a != b && !up.contains(&(a, b)) {
                cuts.insert((a, b));
            }
        }
    }
    cuts
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn messages_arrive_in_delivery_order_and_cut_links_deliver_nothing() {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut net: Network<u32> = Network::new(LinkConfig::reliable(2));
        net.set_link(1, 3, LinkConfig::reliable(5));
        assert_eq!(net.send(1, 3, 10, 0, &mut rng), SendFate::Queued(5));
        assert_eq!(net.send(1, 2, 11, 0, &mut rng), SendFate::Queued(2));
        net.set_cut(2, 1, true);
        assert_eq!(net.send(2, 1, 12, 0, &mut rng), SendFate::Cut);
        assert!(net.pop_due(1).is_none());
        assert_eq!(net.pop_due(2), Some(Ok((1, 2, 11))));
        net.set_cut(1, 3, true);
        assert_eq!(net.pop_due(9), Some(Err((1, 3, 10))), "cut while in flight");
        assert_eq!(net.in_flight(), 0);
        assert_eq!(net.stats().cut, 2);
    }

    #[test]
    fn fifo_links_keep_send_order_and_other_links_reorder() {
        let mut rng = SmallRng::seed_from_u64(3);
        let jittery = LinkConfig { delay_min_ticks: 1, delay_max_ticks: 9, ..LinkConfig::reliable(1) };
        let mut net: Network<u32> = Network::new(jittery);
        for i in 0..200 {
            net.send(1, 2, i, i as u64 / 4, &mut rng);
        }
        let order = |net: &mut Network<u32>| -> Vec<u32> {
            std::iter::from_fn(|| net.pop_due(u64::MAX).map(|m| m.expect("up").2)).collect()
        };
        assert_eq!(order(&mut net), (0..200).collect::<Vec<_>>(), "FIFO by default");
        net.set_link(1, 2, LinkConfig { fifo: false, ..jittery });
        for i in 0..200 {
            net.send(1, 2, i, 1000 + i as u64 / 4, &mut rng);
        }
        assert_ne!(order(&mut net), (0..200).collect::<Vec<_>>(), "a non-FIFO link reorders");
    }

    #[test]
    fn messages_for_a_down_node_wait_for_it_in_order() {
        let mut rng = SmallRng::seed_from_u64(5);
        let mut net: Network<u32> = Network::new(LinkConfig::reliable(1));
        net.set_down(2, true, 0);
        assert_eq!(net.send(1, 2, 1, 0, &mut rng), SendFate::Queued(1), "without parking nothing changes");
        assert_eq!(net.pop_due(1), Some(Ok((1, 2, 1))));
        net.park_for_down_nodes();
        net.set_down(2, true, 1);
        for (i, m) in (10..20).enumerate() {
            net.send(1, 2, m, i as u64, &mut rng);
        }
        net.send(1, 3, 99, 0, &mut rng);
        assert_eq!(net.pop_due(100), Some(Ok((1, 3, 99))), "other nodes are not held up");
        assert_eq!(net.pop_due(100), None, "everything for node 2 waits");
        assert_eq!(net.stats().parked, 10);
        net.set_down(2, false, 100);
        assert_eq!(net.pop_due(100), None, "due after the restart");
        let delivered: Vec<u32> = std::iter::from_fn(|| net.pop_due(101).map(|m| m.expect("up").2)).collect();
        assert_eq!(delivered, (10..20).collect::<Vec<_>>(), "in their order");
    }

    #[test]
    fn replays_deliver_archived_messages_to_their_original_receivers() {
        let mut rng = SmallRng::seed_from_u64(9);
        let mut net: Network<u32> = Network::new(LinkConfig::reliable(1));
        assert!(net.replay(None, 0, &mut rng).is_empty(), "no archive, no replays");
        net.keep_archive();
        for m in 0..(ARCHIVE_PER_LINK as u32 + 100) {
            net.send(1, 2, m, 0, &mut rng);
            net.send(3, 2, 1000 + m, 0, &mut rng);
            net.send(2, 1, 2000 + m, 0, &mut rng);
        }
        while net.pop_due(u64::MAX).is_some() {}
        let mut old = false;
        for _ in 0..200 {
            let replayed = net.replay(Some(2), 50, &mut rng);
            assert!(!replayed.is_empty() && replayed.len() <= REPLAY_BURST_MAX);
            let first = replayed[0].0 .2;
            for (i, ((from, to, m), at)) in replayed.into_iter().enumerate() {
                assert_eq!(to, 2, "only into the receiver asked for");
                assert!((50..=52).contains(&at));
                assert_eq!(m, first + i as u32, "a burst is consecutive on one link");
                assert_eq!(from, if m >= 1000 { 3 } else { 1 });
                old |= m % 1000 < 100;
            }
        }
        assert!(old, "messages evicted from the recent window are replayed too");
        assert_eq!(net.stats().replayed, std::iter::from_fn(|| net.pop_due(u64::MAX)).count() as u64);
    }
}
