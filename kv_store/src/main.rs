//! `cargo run -p kv_store`: the Sequence Paxos tutorial's replicated key-value store, told step
//! by step.
//!
//! Three replicas (pids 1, 2, 3) of an `OmniPaxos<KeyValue, (), CrashableStorage<..>>` run in
//! one process over a deterministic in-process network: one FIFO queue, no threads, no sleeps,
//! no clock; time is ticks. The demo shows, and checks, that
//! 1. Ballot Leader Election elects one leader that every replica follows;
//! 2. an `append` at a follower (forwarded) and one at the leader are both decided, each at the
//!    log index `take_proposal_outcomes` reports, and every replica applies the same decided log
//!    to the same key-value map;
//! 3. when the leader crashes (losing its unflushed writes, its messages and its clock), the
//!    survivors elect a new leader and keep deciding;
//! 4. the crashed replica, restarted with `OmniPaxos::with(config, disk)` over exactly what its
//!    disk kept, recovers by itself: it keeps its promise, catches up, and takes writes again.
//!
//! It prints the story on stdout and exits 0; if any expectation fails it prints why on stderr
//! and exits 1. Every run prints the same story. `RUST_LOG=debug` (or `trace`, which shows every
//! message handled) adds the library's own log on stderr.
//!
//! ```text
//!   main ──► demo::run (the steps) ──► cluster::Cluster (replicas, network, crashes) ──► omnipaxos_core
//! ```

mod cluster;
mod demo;
mod error;
mod kv;

use std::process::ExitCode;

fn main() -> ExitCode {
    init_tracing();
    match demo::run(&mut |line| println!("{line}")) {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("kv_store demo FAILED: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr only when `RUST_LOG` asks for it: by default the demo prints its story alone.
/// No timestamps: the run is in ticks, and two runs should log the same lines.
fn init_tracing() {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .without_time()
            .with_writer(std::io::stderr)
            .init();
    }
}
