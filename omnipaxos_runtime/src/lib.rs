//! A tokio runtime for one `omnipaxos_core` replica: TCP between peers, durable storage, a
//! future per append, a stream of decided entries, status, metrics and graceful shutdown.
//!
//! (Documentation written below.)

mod appends;
mod config;
mod error;
pub mod metrics;
mod node;
mod replica;
mod status;
pub mod transport;

pub use config::{BackoffConfig, Limits, NodeConfig, NodeConfigError, PeerConfig, StorageConfig};
pub use error::{AppendError, IndeterminateCause, StartError};
pub use node::{Decided, DecidedStream, Entry, Node, NodeBuilder, NodeHandle};
pub use status::{LinkState, PeerStatus, QueueStatus, Status};
pub use transport::filter::LinkFilter;
