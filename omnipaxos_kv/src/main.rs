//! `opkv`: see the crate docs of `omnipaxos_kv` and the README.

use clap::Parser;
use omnipaxos_kv::cli::{Cli, ClusterCommand, Command};

fn main() {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // Servers log at info by default; client commands stay quiet.
        let level = if matches!(cli.command, Command::Server(_)) { "info" } else { "warn" };
        tracing_subscriber::EnvFilter::new(level)
    });
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("opkv: cannot start the tokio runtime: {error}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(async move {
        match cli.command {
            Command::Server(args) => omnipaxos_kv::cli::run_server(args).await,
            Command::Cluster(ClusterCommand::Up(args)) => omnipaxos_kv::cluster::run(args).await,
            Command::Cluster(ClusterCommand::Demo(args)) => omnipaxos_kv::demo::run(args).await,
            Command::Bench(args) => omnipaxos_kv::bench::run(args).await,
            #[cfg(feature = "etcd")]
            Command::CompareEtcd(args) => omnipaxos_kv::compare::run(args).await,
            other => omnipaxos_kv::cli::run_client(other).await,
        }
    });
    // Tasks still running (a watch stream, a probe) must not delay the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    std::process::exit(code);
}
