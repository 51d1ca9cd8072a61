//! The `opkv` command line: `server`, `cluster up|demo`, the client commands and `bench`.
//!
//! Exit codes (stable, for scripts):
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | other failure (a check of `cluster demo` failed, a server error, a bad answer) |
//! | 2 | invalid flags or configuration (the field is named) |
//! | 3 | `key_not_found`; for `server`: the data directory was refused |
//! | 4 | `compare_failed` (a CAS whose condition did not hold); for `server`: an address in use |
//! | 5 | `unknown_outcome`: the write may or may not have been applied |
//! | 6 | unavailable, overloaded, learner, stopped, shutting down: nothing was applied; retry |
//! | 7 | invalid request (bad JSON, too large, unknown route) |
//! | 8 | no endpoint reachable (nothing was sent) |
//! | 9 | refused by the state machine: `quota_exceeded`, `session_expired`, `stale_sequence`, `compacted` |
//! | 130 | interrupted (a second Ctrl-C) |

use std::{io::Write, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};
use tokio::sync::watch;

use crate::{
    api::{CasRequest, Consistency, ErrorCode, WatchEventBody},
    client::{Client, ClientError},
    config::{FileConfig, ServerConfig},
    server::{self, StartOptions},
};

/// opkv: a replicated key-value service on Omni-Paxos.
#[derive(Debug, Parser)]
#[command(name = "opkv", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Every subcommand.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs one node of a cluster.
    Server(ServerArgs),
    /// Local clusters of child processes: `up` and `demo`.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Sets a key.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Reads a key.
    Get {
        /// The key.
        key: String,
        /// linearizable (default), lease or stale.
        #[arg(long, default_value = "linearizable", value_parser = parse_consistency)]
        consistency: Consistency,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Deletes a key.
    #[command(alias = "del")]
    Delete {
        /// The key.
        key: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Compare-and-swap: if the key has the expected value (or mod revision; 0 = absent), set
    /// it to the new value (or delete it).
    Cas {
        /// The key.
        key: String,
        /// Compare: the current value.
        #[arg(long, conflicts_with = "expected_revision", required_unless_present = "expected_revision")]
        expected_value: Option<String>,
        /// Compare: the current mod revision (0: the key does not exist).
        #[arg(long)]
        expected_revision: Option<u64>,
        /// Then: the new value.
        #[arg(long, conflicts_with = "delete", required_unless_present = "delete")]
        value: Option<String>,
        /// Then: delete the key.
        #[arg(long)]
        delete: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Lists keys by prefix.
    List {
        /// The prefix ("" lists everything).
        #[arg(long, default_value = "")]
        prefix: String,
        /// At most this many keys.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        /// linearizable (default), lease or stale.
        #[arg(long, default_value = "linearizable", value_parser = parse_consistency)]
        consistency: Consistency,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Streams changes of a key or prefix (Ctrl-C ends it).
    Watch {
        /// The key (or use --prefix).
        key: Option<String>,
        /// Watch every key with this prefix.
        #[arg(long, conflicts_with = "key")]
        prefix: Option<String>,
        /// Start at this revision (default: changes from now on).
        #[arg(long)]
        from_revision: Option<u64>,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Shows every endpoint's view: leader, ballot, indices, peers, lag.
    Status {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Load generator: N concurrent clients against a cluster.
    Bench(crate::bench::BenchArgs),
    /// The side-by-side comparison with etcd 3.4 (needs the `etcd` feature and the `etcd`
    /// binary): both 3-node clusters in turn, the bench matrix, failover, tables and charts.
    #[cfg(feature = "etcd")]
    CompareEtcd(crate::compare::CompareArgs),
}

/// `opkv cluster ...`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Starts a local cluster of child processes and keeps it running until Ctrl-C.
    Up(crate::cluster::UpArgs),
    /// The tour: a 3-process cluster, a workload, the leader killed with SIGKILL, failover,
    /// restart, and a check that every acknowledged write is there.
    Demo(crate::demo::DemoArgs),
}

/// Options of every client command.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The cluster's client addresses, comma-separated.
    #[arg(long, env = "OPKV_ENDPOINTS", value_delimiter = ',', default_value = "127.0.0.1:2379")]
    pub endpoints: Vec<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// How long the command may take, retries included.
    #[arg(long, default_value_t = 15_000)]
    pub timeout_ms: u64,
}

impl ClientArgs {
    fn client(&self) -> Result<Client, ClientError> {
        let timeout = Duration::from_millis(self.timeout_ms.max(1));
        Ok(Client::new(&self.endpoints)?
            .with_timeouts(timeout, timeout.min(crate::client::DEFAULT_ATTEMPT_TIMEOUT)))
    }
}

/// `opkv server` flags; each overrides the config file's field of the same name.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// A TOML file (or HOCON: `.conf`/`.hocon`) with the fields below.
    #[arg(long, env = "OPKV_CONFIG")]
    pub config: Option<PathBuf>,
    /// This node's id (non-zero).
    #[arg(long, env = "OPKV_NODE_ID")]
    pub node_id: Option<u64>,
    /// The cluster id (recorded in the data directory; default 1).
    #[arg(long, env = "OPKV_CLUSTER_ID")]
    pub cluster_id: Option<u64>,
    /// A peer, `id=host:port` (repeat, or comma-separate).
    #[arg(long = "peer", env = "OPKV_PEERS", value_delimiter = ',')]
    pub peers: Vec<String>,
    /// Where peers connect (default 127.0.0.1:2380).
    #[arg(long, env = "OPKV_PEER_LISTEN")]
    pub peer_listen: Option<String>,
    /// Where clients connect (default 127.0.0.1:2379).
    #[arg(long, env = "OPKV_CLIENT_LISTEN")]
    pub client_listen: Option<String>,
    /// The data directory.
    #[arg(long, env = "OPKV_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Milliseconds per tick (default 10).
    #[arg(long)]
    pub tick_ms: Option<u64>,
    /// Election timeout in ticks (default 30).
    #[arg(long)]
    pub election_timeout_ticks: Option<u64>,
    /// How long a request waits for its outcome (default 5000).
    #[arg(long)]
    pub request_timeout_ms: Option<u64>,
    /// Read lease in ms (default 0: off). Every node must use the same value.
    #[arg(long)]
    pub read_lease_ms: Option<u64>,
    /// Compact every this many entries (default 100000; 0: never).
    #[arg(long)]
    pub snapshot_interval_entries: Option<u64>,
    /// Largest key (default 4096).
    #[arg(long)]
    pub max_key_bytes: Option<usize>,
    /// Largest value (default 1 MiB).
    #[arg(long)]
    pub max_value_bytes: Option<usize>,
    /// Largest request body (default 1.5 MiB).
    #[arg(long)]
    pub max_request_bytes: Option<usize>,
    /// First start of a new cluster: create the data directory's log.
    #[arg(long)]
    pub bootstrap: bool,
    /// This node lost its data: rejoin as a learner (never as a voter).
    #[arg(long)]
    pub replace_lost_storage: bool,
    /// TEST ONLY: serve every read locally without a quorum check (not linearizable). A
    /// mutation for the fault harness, which must report violations.
    #[cfg(feature = "test-switches")]
    #[arg(long)]
    pub unsafe_stale_reads: bool,
    /// Stop (as on SIGTERM) when the process with this pid, our parent, exits: set by
    /// `cluster up`, the demo and the tests, so that no server outlives them.
    #[arg(long, hide = true)]
    pub parent_pid: Option<u32>,
}

impl ServerArgs {
    fn file_config(&self) -> FileConfig {
        FileConfig {
            node_id: self.node_id,
            cluster_id: self.cluster_id,
            peers: (!self.peers.is_empty()).then(|| self.peers.clone()),
            peer_listen: self.peer_listen.clone(),
            client_listen: self.client_listen.clone(),
            data_dir: self.data_dir.clone(),
            tick_ms: self.tick_ms,
            election_timeout_ticks: self.election_timeout_ticks,
            request_timeout_ms: self.request_timeout_ms,
            read_lease_ms: self.read_lease_ms,
            snapshot_interval_entries: self.snapshot_interval_entries,
            max_key_bytes: self.max_key_bytes,
            max_value_bytes: self.max_value_bytes,
            max_request_bytes: self.max_request_bytes,
            ..FileConfig::default()
        }
    }

    fn start_options(&self) -> StartOptions {
        StartOptions {
            bootstrap: self.bootstrap,
            replace_lost_storage: self.replace_lost_storage,
            #[cfg(feature = "test-switches")]
            unsafe_stale_reads: self.unsafe_stale_reads,
            #[cfg(not(feature = "test-switches"))]
            unsafe_stale_reads: false,
        }
    }
}

fn parse_consistency(text: &str) -> Result<Consistency, String> {
    match text {
        "linearizable" => Ok(Consistency::Linearizable),
        "lease" => Ok(Consistency::Lease),
        "stale" => Ok(Consistency::Stale),
        other => Err(format!("{other:?}: use linearizable, lease or stale")),
    }
}

/// A shutdown signal fed by SIGINT and SIGTERM: the first sets it, the second exits at once
/// with 130.
pub fn shutdown_on_signals() -> watch::Receiver<bool> {
    let (sender, receiver) = watch::channel(false);
    let mut interrupts = interrupt_counter();
    tokio::spawn(async move {
        while interrupts.changed().await.is_ok() {
            if *interrupts.borrow() > 1 {
                eprintln!("second interrupt: exiting now");
                std::process::exit(130);
            }
            eprintln!("stopping (interrupt again to force)");
            sender.send_replace(true);
        }
    });
    receiver
}

/// Counts SIGINT and SIGTERM deliveries (the caller decides what the first and second mean).
pub fn interrupt_counter() -> watch::Receiver<u32> {
    let (sender, receiver) = watch::channel(0u32);
    tokio::spawn(async move {
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        for round in 0u32.. {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async {
                    match terminate.as_mut() {
                        Some(signal) => { signal.recv().await; }
                        None => std::future::pending::<()>().await,
                    }
                } => {}
            }
            sender.send_replace(round + 1);
        }
    });
    receiver
}

/// With `--parent-pid`: the kernel sends SIGTERM when the parent exits (and if it already
/// has, the shutdown starts now).
fn follow_parent(parent_pid: Option<u32>, shutdown: &watch::Receiver<bool>) -> Option<watch::Receiver<bool>> {
    let parent = parent_pid?;
    if let Err(error) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM) {
        eprintln!("opkv server: cannot follow the parent process: {error}");
    }
    if nix::unistd::getppid().as_raw() as u32 != parent {
        let (sender, receiver) = watch::channel(true);
        drop(sender);
        return Some(receiver);
    }
    Some(shutdown.clone())
}

/// Runs `opkv server`; returns the exit code.
pub async fn run_server(args: ServerArgs) -> i32 {
    let file = match &args.config {
        Some(path) => match FileConfig::load(path) {
            Ok(file) => file,
            Err(error) => {
                eprintln!("opkv server: {error}");
                return 2;
            }
        },
        None => FileConfig::default(),
    };
    let config = match ServerConfig::resolve(file.overridden_by(args.file_config())) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("opkv server: {error}");
            return 2;
        }
    };
    let shutdown = shutdown_on_signals();
    let shutdown = follow_parent(args.parent_pid, &shutdown).unwrap_or(shutdown);
    match server::run(config, args.start_options(), shutdown).await {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("opkv server: {error}");
            error.exit_code()
        }
    }
}

/// Prints `error` as the CLI does and returns its exit code.
pub fn report(error: &ClientError, json: bool) -> i32 {
    if json {
        let value = match error {
            ClientError::Api { body, .. } => serde_json::to_value(body).unwrap_or_default(),
            other => {
                serde_json::json!({"code": other.code().map(ErrorCode::as_str).unwrap_or("client_error"), "message": other.to_string()})
            }
        };
        println!("{value}");
    } else {
        eprintln!("error: {error}");
    }
    error.exit_code()
}

fn print_json<T: serde::Serialize>(value: &T) {
    println!("{}", serde_json::to_string(value).unwrap_or_default());
}

/// Runs a client command; returns the exit code.
pub async fn run_client(command: Command) -> i32 {
    let (client_args, result) = match command {
        Command::Put { key, value, client } => {
            let result = put(&client, &key, &value).await;
            (client, result)
        }
        Command::Get { key, consistency, client } => {
            let result = get(&client, &key, consistency).await;
            (client, result)
        }
        Command::Delete { key, client } => {
            let result = delete(&client, &key).await;
            (client, result)
        }
        Command::Cas { key, expected_value, expected_revision, value, delete, client } => {
            let request =
                CasRequest { expected_value, expected_revision, value, delete, ..CasRequest::default() };
            let result = cas(&client, &key, request).await;
            (client, result)
        }
        Command::List { prefix, limit, consistency, client } => {
            let result = list(&client, &prefix, limit, consistency).await;
            (client, result)
        }
        Command::Watch { key, prefix, from_revision, count, client } => {
            let result = watch(&client, key, prefix, from_revision, count).await;
            (client, result)
        }
        Command::Status { client } => return status(&client).await,
        _ => return 2,
    };
    match result {
        Ok(()) => 0,
        Err(error) => report(&error, client_args.json),
    }
}

async fn put(args: &ClientArgs, key: &str, value: &str) -> Result<(), ClientError> {
    let response = args.client()?.put(key, value).await?;
    if args.json {
        print_json(&response);
    } else {
        println!("OK revision {}", response.revision);
    }
    Ok(())
}

async fn get(args: &ClientArgs, key: &str, consistency: Consistency) -> Result<(), ClientError> {
    let response = args.client()?.get(key, consistency).await?;
    if args.json {
        print_json(&response);
    } else {
        println!("{}", response.kv.value);
    }
    Ok(())
}

async fn delete(args: &ClientArgs, key: &str) -> Result<(), ClientError> {
    let response = args.client()?.delete(key).await?;
    if args.json {
        print_json(&response);
    } else if response.deleted {
        println!("deleted (revision {})", response.revision);
    } else {
        println!("no such key (revision {})", response.revision);
    }
    Ok(())
}

async fn cas(args: &ClientArgs, key: &str, request: CasRequest) -> Result<(), ClientError> {
    let response = args.client()?.cas(key, request).await?;
    if args.json {
        print_json(&response);
    } else {
        println!("OK revision {} (mod revision {})", response.revision, response.mod_revision);
    }
    Ok(())
}

async fn list(
    args: &ClientArgs,
    prefix: &str,
    limit: usize,
    consistency: Consistency,
) -> Result<(), ClientError> {
    let response = args.client()?.list(prefix, limit, consistency).await?;
    if args.json {
        print_json(&response);
    } else {
        for kv in &response.kvs {
            println!("{} = {}", kv.key, kv.value);
        }
        if response.more {
            println!("(more keys; raise --limit)");
        }
    }
    Ok(())
}

async fn watch(
    args: &ClientArgs,
    key: Option<String>,
    prefix: Option<String>,
    from_revision: Option<u64>,
    count: Option<u64>,
) -> Result<(), ClientError> {
    let mut query = match (key, prefix) {
        (Some(key), _) => format!("/v1/watch?key={}", crate::client::encode_query(&key)),
        (None, Some(prefix)) => format!("/v1/watch?prefix={}", crate::client::encode_query(&prefix)),
        (None, None) => "/v1/watch?prefix=".to_string(),
    };
    if let Some(revision) = from_revision {
        query.push_str(&format!("&from_revision={revision}"));
    }
    let mut response = args.client()?.open_stream(&query).await?;
    let mut parser = SseParser::default();
    let mut seen = 0u64;
    let stdout = std::io::stdout();
    loop {
        let chunk = response.chunk().await.map_err(|error| ClientError::Unreachable(error.to_string()))?;
        let Some(chunk) = chunk else { return Ok(()) };
        for (event, data) in parser.push(&chunk) {
            if event == "error" {
                let body: crate::api::ErrorBody =
                    serde_json::from_str(&data).map_err(|error| ClientError::Protocol(error.to_string()))?;
                return Err(ClientError::Api { status: body.code.http_status(), body });
            }
            let Ok(body) = serde_json::from_str::<WatchEventBody>(&data) else { continue };
            let mut out = stdout.lock();
            if args.json {
                let _ = writeln!(out, "{data}");
            } else {
                match &body.value {
                    Some(value) => {
                        let _ =
                            writeln!(out, "{} {} = {} (revision {})", event, body.key, value, body.revision);
                    }
                    None => {
                        let _ = writeln!(out, "{} {} (revision {})", event, body.key, body.revision);
                    }
                }
            }
            let _ = out.flush();
            seen += 1;
            if count.is_some_and(|count| seen >= count) {
                return Ok(());
            }
        }
    }
}

/// Splits a server-sent event stream into `(event, data)` pairs.
#[derive(Default)]
pub struct SseParser {
    buffer: String,
}

impl SseParser {
    /// Adds bytes; returns the events they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<(String, String)> {
        self.buffer.push_str(&String::from_utf8_lossy(bytes));
        let mut events = Vec::new();
        while let Some(end) = self.buffer.find("\n\n") {
            let block: String = self.buffer.drain(..end + 2).collect();
            let (mut event, mut data) = (String::from("message"), String::new());
            for line in block.lines() {
                if let Some(value) = line.strip_prefix("event:") {
                    event = value.trim().to_string();
                } else if let Some(value) = line.strip_prefix("data:") {
                    if !data.is_empty() {
                        data.push('\n');
                    }
                    data.push_str(value.strip_prefix(' ').unwrap_or(value));
                }
            }
            if !data.is_empty() {
                events.push((event, data));
            }
        }
        events
    }
}

async fn status(args: &ClientArgs) -> i32 {
    let client = match args.client() {
        Ok(client) => client,
        Err(error) => return report(&error, args.json),
    };
    let mut failures = 0;
    let mut rows = Vec::new();
    for endpoint in client.endpoints() {
        match client.status_of(endpoint).await {
            Ok(status) => rows.push((endpoint.clone(), Ok(status))),
            Err(error) => {
                failures += 1;
                rows.push((endpoint.clone(), Err(error)));
            }
        }
    }
    if args.json {
        for (endpoint, row) in &rows {
            match row {
                Ok(status) => println!("{}", serde_json::json!({"endpoint": endpoint, "status": status})),
                Err(error) => {
                    println!("{}", serde_json::json!({"endpoint": endpoint, "error": error.to_string()}))
                }
            }
        }
    } else {
        println!(
            "{:<24} {:>4} {:>6} {:>8} {:>10} {:>9} {:>9} {:>9}  peers (id:link/lag)",
            "endpoint", "node", "leader", "role", "ballot", "decided", "applied", "compacted"
        );
        for (endpoint, row) in &rows {
            match row {
                Ok(s) => {
                    let role = if s.is_leader {
                        "leader"
                    } else if s.is_learner {
                        "learner"
                    } else {
                        "follower"
                    };
                    let leader = s.leader.map_or("-".to_string(), |l| l.to_string());
                    let peers: Vec<String> = s
                        .peers
                        .iter()
                        .map(|p| {
                            let lag = p.lag_entries.map_or("?".to_string(), |l| l.to_string());
                            format!("{}:{}/{}", p.id, p.link, lag)
                        })
                        .collect();
                    println!(
                        "{:<24} {:>4} {:>6} {:>8} {:>10} {:>9} {:>9} {:>9}  {}",
                        endpoint.trim_start_matches("http://"),
                        s.node_id,
                        leader,
                        role,
                        s.ballot,
                        s.decided_index,
                        s.applied_index,
                        s.compacted_index,
                        peers.join(" ")
                    );
                }
                Err(error) => println!("{:<24} unreachable: {error}", endpoint.trim_start_matches("http://")),
            }
        }
    }
    if failures == rows.len() {
        8
    } else {
        0
    }
}
