//! The tutorial's log entry and the key-value map that applying the decided log builds.

use std::{collections::BTreeMap, fmt};

/// One write of the key-value store: the tutorial's log entry (`Clone` and `Debug` are what the
/// log requires; `PartialEq` lets the demo compare logs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: u64,
}

impl KeyValue {
    pub fn new(key: &str, value: u64) -> Self {
        KeyValue { key: key.to_string(), value }
    }
}

impl fmt::Display for KeyValue {
    /// `a=1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

/// The store's state: each key's latest value.
pub type KvMap = BTreeMap<String, u64>;

/// Applies decided writes in log order, so a later write of a key replaces an earlier one.
pub fn apply(log: &[KeyValue]) -> KvMap {
    let mut map = KvMap::new();
    for write in log {
        map.insert(write.key.clone(), write.value);
    }
    map
}

/// `[0: a=1, 1: b=2]`: each entry with its log index.
pub fn show_log(log: &[KeyValue]) -> String {
    let entries: Vec<String> = log.iter().enumerate().map(|(idx, kv)| format!("{idx}: {kv}")).collect();
    format!("[{}]", entries.join(", "))
}

/// `{a: 1, b: 2}`.
pub fn show_map(map: &KvMap) -> String {
    let entries: Vec<String> = map.iter().map(|(key, value)| format!("{key}: {value}")).collect();
    format!("{{{}}}", entries.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_writes_of_a_key_win() {
        let log = [KeyValue::new("a", 1), KeyValue::new("b", 2), KeyValue::new("a", 3)];
        let map = apply(&log);
        assert_eq!(map.get("a"), Some(&3));
        assert_eq!(map.get("b"), Some(&2));
        assert_eq!(show_map(&map), "{a: 3, b: 2}");
        assert_eq!(show_log(&log[..2]), "[0: a=1, 1: b=2]");
    }
}
