//! etcd 3.4 as a [`BenchTarget`] (feature `etcd`), for the side-by-side comparison (issue 15).
//!
//! The client is the `etcd-client` crate (etcd's v3 API over gRPC with tonic), used as etcd's
//! own benchmark tool uses its Go client: a few gRPC connections shared by many clients
//! (`tools/benchmark --conns --clients`; its documented runs use one connection per ten
//! clients), each connection balancing its requests over every endpoint. Puts are plain `Put`s,
//! reads are `Range` requests with etcd's default, linearizable consistency (etcd's read index).

use std::time::Duration;

use etcd_client::{Client, ConnectOptions, KvClient};

use crate::bench::{BenchClient, BenchTarget, OpError};

/// How long one etcd request may take before it counts as failed (like our client's attempt
/// timeout).
pub const ETCD_REQUEST_TIMEOUT: Duration = Duration::from_secs(6);
/// Clients per gRPC connection by default (etcd's benchmark documentation: 100 connections for
/// 1,000 clients).
pub const ETCD_CLIENTS_PER_CONNECTION: usize = 10;

/// An etcd cluster reached through `connections` shared gRPC connections.
pub struct EtcdTarget {
    connections: Vec<KvClient>,
}

impl EtcdTarget {
    /// Opens `connections` gRPC connections (at least one), each balancing over `endpoints`
    /// (`host:port` or URLs).
    pub async fn connect(endpoints: &[String], connections: usize) -> Result<EtcdTarget, String> {
        let urls: Vec<String> = endpoints.iter().map(|e| crate::client::normalize_endpoint(e)).collect();
        let mut clients = Vec::new();
        for _ in 0..connections.max(1) {
            let options = ConnectOptions::new()
                .with_connect_timeout(Duration::from_secs(2))
                .with_timeout(ETCD_REQUEST_TIMEOUT);
            let client = Client::connect(&urls, Some(options))
                .await
                .map_err(|error| format!("cannot connect to etcd at {urls:?}: {error}"))?;
            clients.push(client.kv_client());
        }
        Ok(EtcdTarget { connections: clients })
    }

    /// The number of gRPC connections.
    pub fn connections(&self) -> usize {
        self.connections.len()
    }
}

/// Connections for `clients` clients when none is given: one per
/// [`ETCD_CLIENTS_PER_CONNECTION`] clients, at least one.
pub fn default_connections(clients: usize) -> usize {
    clients.div_ceil(ETCD_CLIENTS_PER_CONNECTION).max(1)
}

/// One benchmark client of etcd: a handle on a shared connection.
pub struct EtcdClient {
    kv: KvClient,
}

impl BenchTarget for EtcdTarget {
    type Client = EtcdClient;

    fn name(&self) -> String {
        "etcd".into()
    }

    async fn connect(&self, index: usize) -> Result<EtcdClient, String> {
        Ok(EtcdClient { kv: self.connections[index % self.connections.len()].clone() })
    }
}

/// What an etcd error means for the benchmark: a put whose request may have reached the server
/// has an unknown outcome (etcd puts carry no session, so a retry could apply twice).
fn etcd_error(error: etcd_client::Error, write: bool) -> OpError {
    let kind = match &error {
        etcd_client::Error::GRpcStatus(status) => {
            let code = format!("{:?}", status.code());
            // Unavailable: the connection failed (maybe after sending); DeadlineExceeded: no
            // answer in time. Either way a put may have been applied.
            if write && matches!(code.as_str(), "Unavailable" | "DeadlineExceeded" | "Unknown") {
                return OpError::Unknown;
            }
            format!("grpc_{}", code.to_lowercase())
        }
        etcd_client::Error::TransportError(_) if write => return OpError::Unknown,
        etcd_client::Error::TransportError(_) => "transport".to_string(),
        _ => "other".to_string(),
    };
    OpError::Failed { kind }
}

impl BenchClient for EtcdClient {
    async fn put(&mut self, key: &str, value: &str) -> Result<(), OpError> {
        self.kv.put(key, value, None).await.map(|_| ()).map_err(|error| etcd_error(error, true))
    }

    async fn get(&mut self, key: &str) -> Result<(), OpError> {
        self.kv.get(key, None).await.map(|_| ()).map_err(|error| etcd_error(error, false))
    }
}

/// What one etcd member says about itself: its member id and the leader it knows (0: none).
pub async fn member_status(endpoint: &str) -> Result<(u64, u64), String> {
    let url = crate::client::normalize_endpoint(endpoint);
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(500))
        .with_timeout(Duration::from_secs(1));
    let mut client =
        Client::connect([url.as_str()], Some(options)).await.map_err(|error| format!("{url}: {error}"))?;
    let status = client.status().await.map_err(|error| format!("{url}: {error}"))?;
    let member = status.header().map_or(0, |header| header.member_id());
    Ok((member, status.leader()))
}
