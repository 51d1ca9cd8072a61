//! `opkv server`'s configuration: a TOML or HOCON file and/or flags (flags win), checked field
//! by field into a [`ServerConfig`]. An invalid field is a [`ConfigError`] naming it (exit
//! code 2).
//!
//! ```toml
//! node_id = 1
//! cluster_id = 7
//! peers = ["2=127.0.0.1:7002", "3=127.0.0.1:7003"]
//! peer_listen = "127.0.0.1:7001"
//! client_listen = "127.0.0.1:2379"
//! data_dir = "data/node1"
//! # everything below is optional (defaults shown)
//! tick_ms = 10
//! election_timeout_ticks = 30
//! request_timeout_ms = 5000
//! read_lease_ms = 0                    # 0: no read leases
//! max_clock_drift_percent = 10
//! snapshot_interval_entries = 100000
//! wal_segment_bytes = 67108864         # log segment size (preallocated)
//! max_key_bytes = 4096
//! max_value_bytes = 1048576
//! max_request_bytes = 1572864
//! max_concurrent_requests = 4096
//! max_watchers = 256
//! watch_history_events = 100000
//! watch_history_bytes = 16777216
//! ```

use std::{
    net::{SocketAddr, ToSocketAddrs},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

/// Default client (HTTP) address.
pub const DEFAULT_CLIENT_LISTEN: &str = "127.0.0.1:2379";
/// Default peer address.
pub const DEFAULT_PEER_LISTEN: &str = "127.0.0.1:2380";
/// Default tick: the core counts its timeouts in ticks.
pub const DEFAULT_TICK_MS: u64 = 10;
/// Default election timeout in ticks (300 ms with the default tick; the runtime's default).
pub const DEFAULT_ELECTION_TIMEOUT_TICKS: u64 = omnipaxos_runtime::DEFAULT_ELECTION_TIMEOUT_TICKS;
/// Default time a request waits for its outcome before it answers `unknown_outcome` (writes)
/// or `unavailable` (reads).
pub const DEFAULT_REQUEST_TIMEOUT_MS: u64 = 5000;
/// Default bound on clock rate differences for read leases.
pub const DEFAULT_MAX_CLOCK_DRIFT_PERCENT: u64 = 10;
/// Default compaction interval (etcd 3.4 snapshots every 100,000 applied entries).
pub const DEFAULT_SNAPSHOT_INTERVAL_ENTRIES: u64 = 100_000;
/// Default largest key.
pub const DEFAULT_MAX_KEY_BYTES: usize = 4096;
/// Default largest value (etcd's request limit is 1.5 MiB).
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1 << 20;
/// Default largest request body.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 3 << 19;
/// Default bound on requests in flight (more are answered `429 overloaded`).
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 4096;
/// Default bound on open watch streams.
pub const DEFAULT_MAX_WATCHERS: usize = 256;
/// Default number of recent changes kept for watches that start in the past.
pub const DEFAULT_WATCH_HISTORY_EVENTS: usize = 100_000;
/// Default bound on the bytes of keys and values kept for watches from the past.
pub const DEFAULT_WATCH_HISTORY_BYTES: usize = 16 << 20;
/// Largest accepted value of `max_value_bytes` and `max_request_bytes`.
pub const MAX_REQUEST_BYTES_LIMIT: usize = 64 << 20;

/// The file format: every field optional here; [`ServerConfig::resolve`] checks them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// This node's id (non-zero).
    pub node_id: Option<u64>,
    /// The cluster's id (data directories record it; default 1).
    pub cluster_id: Option<u64>,
    /// The other nodes, `id=host:port` (their peer addresses).
    pub peers: Option<Vec<String>>,
    /// Where this node accepts its peers.
    pub peer_listen: Option<String>,
    /// Where this node serves HTTP clients.
    pub client_listen: Option<String>,
    /// The data directory.
    pub data_dir: Option<PathBuf>,
    /// Milliseconds per tick.
    pub tick_ms: Option<u64>,
    /// Election timeout (a heartbeat round) in ticks.
    pub election_timeout_ticks: Option<u64>,
    /// How long a request waits for its outcome.
    pub request_timeout_ms: Option<u64>,
    /// Read lease length (0: off).
    pub read_lease_ms: Option<u64>,
    /// Clock rate bound for leases, in percent.
    pub max_clock_drift_percent: Option<u64>,
    /// Compact every this many applied entries.
    pub snapshot_interval_entries: Option<u64>,
    /// Size of a log segment file (each is preallocated): smaller segments ask the file
    /// system for space more often (the fault harness fills disks).
    pub wal_segment_bytes: Option<u64>,
    /// Largest key.
    pub max_key_bytes: Option<usize>,
    /// Largest value.
    pub max_value_bytes: Option<usize>,
    /// Largest request body.
    pub max_request_bytes: Option<usize>,
    /// Requests in flight at once.
    pub max_concurrent_requests: Option<usize>,
    /// Open watch streams at once.
    pub max_watchers: Option<usize>,
    /// Changes kept for watches from the past.
    pub watch_history_events: Option<usize>,
    /// Bytes of keys and values kept for watches from the past.
    pub watch_history_bytes: Option<usize>,
}

impl FileConfig {
    /// Reads `path`: HOCON if it ends in `.conf` or `.hocon`, TOML otherwise.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| {
            ConfigError::new("--config", format!("cannot read {}: {error}", path.display()))
        })?;
        let hocon = matches!(path.extension().and_then(|e| e.to_str()), Some("conf" | "hocon"));
        if hocon {
            Self::from_hocon_str(&text)
                .map_err(|message| ConfigError::new(path.display().to_string(), message))
        } else {
            toml::from_str(&text)
                .map_err(|error| ConfigError::new(path.display().to_string(), error.to_string()))
        }
    }

    /// Parses HOCON text. Strict: text that does not parse completely is an error (the
    /// `hocon` crate's strict mode also trips over trailing whitespace, so it is trimmed).
    pub fn from_hocon_str(text: &str) -> Result<FileConfig, String> {
        let text = format!("{}\n", text.trim());
        hocon::HoconLoader::new()
            .no_system()
            .strict()
            .load_str(&text)
            .and_then(|loader| loader.resolve::<FileConfig>())
            .map_err(|error| error.to_string())
    }

    /// `other`'s fields where set, else `self`'s.
    pub fn overridden_by(self, other: FileConfig) -> FileConfig {
        macro_rules! pick {
            ($($field:ident),*) => { FileConfig { $($field: other.$field.or(self.$field)),* } };
        }
        pick!(
            node_id,
            cluster_id,
            peers,
            peer_listen,
            client_listen,
            data_dir,
            tick_ms,
            election_timeout_ticks,
            request_timeout_ms,
            read_lease_ms,
            max_clock_drift_percent,
            snapshot_interval_entries,
            wal_segment_bytes,
            max_key_bytes,
            max_value_bytes,
            max_request_bytes,
            max_concurrent_requests,
            max_watchers,
            watch_history_events,
            watch_history_bytes
        )
    }
}

/// A field that is not usable, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: `{field}`: {message}")]
pub struct ConfigError {
    /// The field (or file) at fault.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// An error of `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError { field: field.into(), message: message.into() }
    }
}

/// One peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Its node id.
    pub id: u64,
    /// Its peer address.
    pub addr: SocketAddr,
}

/// A checked configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// This node's id.
    pub node_id: u64,
    /// The cluster id.
    pub cluster_id: u64,
    /// The other nodes.
    pub peers: Vec<Peer>,
    /// Peer address.
    pub peer_listen: SocketAddr,
    /// Client address.
    pub client_listen: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Tick length.
    pub tick: Duration,
    /// Election timeout in ticks.
    pub election_timeout_ticks: u64,
    /// Request timeout.
    pub request_timeout: Duration,
    /// Read lease length (zero: off).
    pub read_lease: Duration,
    /// Clock rate bound for leases, in percent.
    pub max_clock_drift_percent: u64,
    /// Compaction interval in entries (0: never).
    pub snapshot_interval_entries: u64,
    /// Log segment size in bytes.
    pub wal_segment_bytes: u64,
    /// Largest key.
    pub max_key_bytes: usize,
    /// Largest value.
    pub max_value_bytes: usize,
    /// Largest request body.
    pub max_request_bytes: usize,
    /// Requests in flight at once.
    pub max_concurrent_requests: usize,
    /// Watch streams at once.
    pub max_watchers: usize,
    /// Changes kept for watches from the past.
    pub watch_history_events: usize,
    /// Bytes of keys and values kept for watches from the past.
    pub watch_history_bytes: usize,
}

impl ServerConfig {
    /// Checks every field of `file` (flags already merged in).
    pub fn resolve(file: FileConfig) -> Result<ServerConfig, ConfigError> {
        let node_id = required(file.node_id, "node_id")?;
        if node_id == 0 {
            return Err(ConfigError::new("node_id", "must be non-zero"));
        }
        let cluster_id = file.cluster_id.unwrap_or(1);
        let peers = parse_peers(file.peers.as_deref().unwrap_or(&[]), node_id)?;
        let peer_listen =
            parse_addr(file.peer_listen.as_deref().unwrap_or(DEFAULT_PEER_LISTEN), "peer_listen")?;
        let client_listen =
            parse_addr(file.client_listen.as_deref().unwrap_or(DEFAULT_CLIENT_LISTEN), "client_listen")?;
        if client_listen == peer_listen && client_listen.port() != 0 {
            return Err(ConfigError::new("client_listen", "must differ from peer_listen"));
        }
        let data_dir = required(file.data_dir, "data_dir")?;
        if data_dir.as_os_str().is_empty() {
            return Err(ConfigError::new("data_dir", "must not be empty"));
        }
        let tick_ms = positive(file.tick_ms.unwrap_or(DEFAULT_TICK_MS), "tick_ms")?;
        let election_timeout_ticks = positive(
            file.election_timeout_ticks.unwrap_or(DEFAULT_ELECTION_TIMEOUT_TICKS),
            "election_timeout_ticks",
        )?;
        if election_timeout_ticks < 2 {
            return Err(ConfigError::new("election_timeout_ticks", "must be at least 2"));
        }
        let request_timeout_ms =
            positive(file.request_timeout_ms.unwrap_or(DEFAULT_REQUEST_TIMEOUT_MS), "request_timeout_ms")?;
        let read_lease_ms = file.read_lease_ms.unwrap_or(0);
        let max_clock_drift_percent = file.max_clock_drift_percent.unwrap_or(DEFAULT_MAX_CLOCK_DRIFT_PERCENT);
        if max_clock_drift_percent > 50 {
            return Err(ConfigError::new("max_clock_drift_percent", "must be at most 50"));
        }
        if read_lease_ms > 0 && read_lease_ms < 2 * tick_ms {
            return Err(ConfigError::new("read_lease_ms", "must be 0 (off) or at least two ticks"));
        }
        let wal_segment_bytes = file
            .wal_segment_bytes
            .unwrap_or(omnipaxos_storage::persistent_storage::SEGMENT_SIZE_DEFAULT_BYTES);
        if !(1 << 20..=1 << 30).contains(&wal_segment_bytes) {
            return Err(ConfigError::new("wal_segment_bytes", "must be between 1 MiB and 1 GiB"));
        }
        let max_key_bytes = positive(file.max_key_bytes.unwrap_or(DEFAULT_MAX_KEY_BYTES), "max_key_bytes")?;
        let max_value_bytes = file.max_value_bytes.unwrap_or(DEFAULT_MAX_VALUE_BYTES);
        let max_request_bytes =
            positive(file.max_request_bytes.unwrap_or(DEFAULT_MAX_REQUEST_BYTES), "max_request_bytes")?;
        for (field, value) in [("max_value_bytes", max_value_bytes), ("max_request_bytes", max_request_bytes)]
        {
            if value > MAX_REQUEST_BYTES_LIMIT {
                return Err(ConfigError::new(field, format!("must be at most {MAX_REQUEST_BYTES_LIMIT}")));
            }
        }
        Ok(ServerConfig {
            node_id,
            cluster_id,
            peers,
            peer_listen,
            client_listen,
            data_dir,
            tick: Duration::from_millis(tick_ms),
            election_timeout_ticks,
            request_timeout: Duration::from_millis(request_timeout_ms),
            read_lease: Duration::from_millis(read_lease_ms),
            max_clock_drift_percent,
            snapshot_interval_entries: file
                .snapshot_interval_entries
                .unwrap_or(DEFAULT_SNAPSHOT_INTERVAL_ENTRIES),
            wal_segment_bytes,
            max_key_bytes,
            max_value_bytes,
            max_request_bytes,
            max_concurrent_requests: positive(
                file.max_concurrent_requests.unwrap_or(DEFAULT_MAX_CONCURRENT_REQUESTS),
                "max_concurrent_requests",
            )?,
            max_watchers: file.max_watchers.unwrap_or(DEFAULT_MAX_WATCHERS),
            watch_history_events: file.watch_history_events.unwrap_or(DEFAULT_WATCH_HISTORY_EVENTS),
            watch_history_bytes: file.watch_history_bytes.unwrap_or(DEFAULT_WATCH_HISTORY_BYTES),
        })
    }

    /// The election timeout as a duration.
    pub fn election_timeout(&self) -> Duration {
        self.tick * self.election_timeout_ticks as u32
    }
}

fn required<T>(value: Option<T>, field: &str) -> Result<T, ConfigError> {
    value.ok_or_else(|| ConfigError::new(field, "is required (config file or flag)"))
}

fn positive<T: PartialEq + Default>(value: T, field: &str) -> Result<T, ConfigError> {
    if value == T::default() {
        return Err(ConfigError::new(field, "must be greater than 0"));
    }
    Ok(value)
}

/// `host:port`, resolved (the first address).
pub fn parse_addr(text: &str, field: &str) -> Result<SocketAddr, ConfigError> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    text.to_socket_addrs()
        .map_err(|error| ConfigError::new(field, format!("{text:?} is not host:port ({error})")))?
        .next()
        .ok_or_else(|| ConfigError::new(field, format!("{text:?} resolves to no address")))
}

/// `id=host:port` entries; ids non-zero, distinct and not `own_id`.
pub fn parse_peers(entries: &[String], own_id: u64) -> Result<Vec<Peer>, ConfigError> {
    let mut peers: Vec<Peer> = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let field = format!("peers[{i}]");
        let (id, addr) = entry
            .split_once('=')
            .ok_or_else(|| ConfigError::new(&field, format!("{entry:?} is not id=host:port")))?;
        let id: u64 =
            id.trim().parse().map_err(|_| ConfigError::new(&field, format!("{id:?} is not a node id")))?;
        if id == 0 || id == own_id {
            return Err(ConfigError::new(&field, format!("peer id {id} must be non-zero and not node_id")));
        }
        if peers.iter().any(|peer| peer.id == id) {
            return Err(ConfigError::new(&field, format!("peer id {id} appears twice")));
        }
        peers.push(Peer { id, addr: parse_addr(addr.trim(), &field)? });
    }
    Ok(peers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> FileConfig {
        FileConfig { node_id: Some(1), data_dir: Some("d".into()), ..FileConfig::default() }
    }

    #[test]
    fn toml_and_hocon_give_the_same_config() {
        let toml_text = r#"
            node_id = 2
            cluster_id = 9
            peers = ["1=127.0.0.1:7001", "3=127.0.0.1:7003"]
            peer_listen = "127.0.0.1:7002"
            client_listen = "127.0.0.1:8002"
            data_dir = "/tmp/n2"
            snapshot_interval_entries = 500
        "#;
        let hocon_text = r#"
            node_id = 2
            cluster_id = 9
            peers = ["1=127.0.0.1:7001", "3=127.0.0.1:7003"]
            peer_listen = "127.0.0.1:7002"
            client_listen = "127.0.0.1:8002"
            data_dir = "/tmp/n2"
            snapshot_interval_entries = 500
        "#;
        let from_toml: FileConfig = toml::from_str(toml_text).unwrap();
        let from_hocon = FileConfig::from_hocon_str(hocon_text).unwrap();
        assert_eq!(from_toml, from_hocon);
        let config = ServerConfig::resolve(from_toml).unwrap();
        assert_eq!(config.peers.len(), 2);
        assert_eq!(config.snapshot_interval_entries, 500);
        assert_eq!(config.election_timeout(), Duration::from_millis(300));
    }

    #[test]
    fn flags_override_the_file() {
        let file = FileConfig { node_id: Some(1), tick_ms: Some(5), ..minimal() };
        let flags = FileConfig { node_id: Some(4), ..FileConfig::default() };
        let merged = file.overridden_by(flags);
        assert_eq!((merged.node_id, merged.tick_ms), (Some(4), Some(5)));
    }

    #[test]
    fn errors_name_the_field() {
        let field = |file: FileConfig| ServerConfig::resolve(file).unwrap_err().field;
        assert_eq!(field(FileConfig { node_id: None, ..minimal() }), "node_id");
        assert_eq!(field(FileConfig { data_dir: None, ..minimal() }), "data_dir");
        assert_eq!(
            field(FileConfig { peers: Some(vec!["2=127.0.0.1:1".into(), "x".into()]), ..minimal() }),
            "peers[1]"
        );
        assert_eq!(field(FileConfig { peers: Some(vec!["1=127.0.0.1:1".into()]), ..minimal() }), "peers[0]");
        assert_eq!(field(FileConfig { tick_ms: Some(0), ..minimal() }), "tick_ms");
        assert_eq!(field(FileConfig { wal_segment_bytes: Some(1), ..minimal() }), "wal_segment_bytes");
        assert_eq!(
            field(FileConfig { client_listen: Some("nonsense".into()), ..minimal() }),
            "client_listen"
        );
        assert_eq!(field(FileConfig { max_value_bytes: Some(1 << 30), ..minimal() }), "max_value_bytes");
        let unknown = toml::from_str::<FileConfig>("node_idd = 1").unwrap_err().to_string();
        assert!(unknown.contains("node_idd"), "{unknown}");
        assert!(FileConfig::from_hocon_str("node_idd = 1").is_err());
        assert!(FileConfig::from_hocon_str("node_id = 1\n((garbage").is_err());
    }
}
