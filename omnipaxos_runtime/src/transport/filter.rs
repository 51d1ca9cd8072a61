//! [`LinkFilter`]: fault injection for tests. One filter may be shared by every node of a
//! test cluster; nodes consult it on the sending side.

use std::{
    collections::HashSet,
    sync::{Arc, RwLock},
};

use omnipaxos_core::util::NodeId;
use tokio::sync::watch;

#[derive(Default)]
struct Rules {
    /// Links whose traffic is dropped before it is queued, as a network partition would.
    blocked: HashSet<(NodeId, NodeId)>,
    /// Links whose writer holds its queue without writing, as a stalled peer would: the
    /// queue fills and the per-peer limit's drop policy applies.
    paused: HashSet<(NodeId, NodeId)>,
}

/// Drops or holds traffic on chosen directed links (`from -> to`). For tests: a node started
/// with a filter (see [`crate::NodeBuilder::link_filter`]) checks it for every round of
/// outgoing frames. Cloning shares the rules.
#[derive(Clone)]
pub struct LinkFilter {
    rules: Arc<RwLock<Rules>>,
    /// Bumped on every change, so that paused writers wake up.
    changed: Arc<watch::Sender<u64>>,
}

impl Default for LinkFilter {
    fn default() -> Self {
        LinkFilter { rules: Arc::default(), changed: Arc::new(watch::channel(0).0) }
    }
}

impl std::fmt::Debug for LinkFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rules = self.read();
        f.debug_struct("LinkFilter").field("blocked", &rules.blocked).field("paused", &rules.paused).finish()
    }
}

impl LinkFilter {
    /// A filter that lets everything through.
    pub fn new() -> Self {
        Self::default()
    }

    /// Drops everything `from` sends to `to` from now on.
    pub fn block(&self, from: NodeId, to: NodeId) {
        self.update(|rules| rules.blocked.insert((from, to)));
    }

    /// Drops traffic in both directions between `a` and `b`.
    pub fn block_both(&self, a: NodeId, b: NodeId) {
        self.block(a, b);
        self.block(b, a);
    }

    /// Holds what `from` queued for `to` without writing it, until [`LinkFilter::resume`]:
    /// the per-peer queue fills and its drop policy applies.
    pub fn pause(&self, from: NodeId, to: NodeId) {
        self.update(|rules| rules.paused.insert((from, to)));
    }

    /// Ends a [`LinkFilter::pause`].
    pub fn resume(&self, from: NodeId, to: NodeId) {
        self.update(|rules| rules.paused.remove(&(from, to)));
    }

    /// Removes every rule.
    pub fn heal(&self) {
        self.update(|rules| {
            rules.blocked.clear();
            rules.paused.clear();
            true
        });
    }

    /// True unless `from -> to` is blocked.
    pub fn allows(&self, from: NodeId, to: NodeId) -> bool {
        !self.read().blocked.contains(&(from, to))
    }

    /// True if `from -> to` is paused.
    pub fn is_paused(&self, from: NodeId, to: NodeId) -> bool {
        self.read().paused.contains(&(from, to))
    }

    /// A receiver that sees every change.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Rules> {
        // A panic while holding the lock cannot leave the sets half-changed: recover them.
        self.rules.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn update(&self, change: impl FnOnce(&mut Rules) -> bool) {
        let mut rules = self.rules.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        change(&mut rules);
        drop(rules);
        self.changed.send_modify(|generation| *generation += 1);
    }
}
