//! `opkv cluster up`: a local cluster of `opkv server` child processes that runs until Ctrl-C.

use std::{path::PathBuf, time::Duration};

use clap::Args;

use crate::local::{LocalCluster, ServerSettings};

/// `opkv cluster up` options.
#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// Number of nodes: 3 or 5.
    #[arg(long, default_value_t = 3, value_parser = parse_nodes)]
    pub nodes: u64,
    /// The cluster's directory; running again over it restarts the same cluster with its data.
    #[arg(long, default_value = "opkv-cluster")]
    pub data_dir: PathBuf,
    /// How long to wait for a leader.
    #[arg(long, default_value_t = 30)]
    pub timeout_s: u64,
}

fn parse_nodes(text: &str) -> Result<u64, String> {
    match text {
        "3" => Ok(3),
        "5" => Ok(5),
        other => Err(format!("{other:?}: a local cluster has 3 or 5 nodes")),
    }
}

/// Runs `opkv cluster up`; returns the exit code.
pub async fn run(args: UpArgs) -> i32 {
    let binary = match std::env::current_exe() {
        Ok(binary) => binary,
        Err(error) => {
            eprintln!("cannot find the opkv binary: {error}");
            return 1;
        }
    };
    let (mut cluster, new) =
        match LocalCluster::open(&binary, &args.data_dir, args.nodes, &ServerSettings::default()) {
            Ok(opened) => opened,
            Err(error) => {
                eprintln!("opkv cluster up: {error}");
                return 2;
            }
        };
    let interrupts = crate::cli::interrupt_counter();
    println!(
        "{} cluster {} of {} nodes in {}",
        if new { "creating" } else { "restarting" },
        cluster.manifest().cluster_id,
        args.nodes,
        args.data_dir.display()
    );
    for id in cluster.ids() {
        if let Err(error) = cluster.start(id, new, &[]) {
            eprintln!("opkv cluster up: {error}");
            cluster.stop_all().await;
            return 1;
        }
    }
    let leader = tokio::select! {
        leader = cluster.wait_for_leader(Duration::from_secs(args.timeout_s)) => leader,
        _ = interrupted(interrupts.clone(), 1) => {
            cluster.kill_all().await;
            return 130;
        }
    };
    let leader = match leader {
        Ok(leader) => leader,
        Err(error) => {
            eprintln!("opkv cluster up: {error}");
            eprintln!("stopping the other nodes (logs in {})", cluster.dir().join("logs").display());
            cluster.stop_all().await;
            return 1;
        }
    };
    print_endpoints(&cluster, leader);
    monitor(&mut cluster, interrupts.clone()).await;
    println!("stopping the cluster (graceful: each node makes its data durable and closes its log; Ctrl-C again kills them)");
    let forced = tokio::select! {
        _ = cluster.stop_all() => false,
        _ = interrupted(interrupts, 2) => true,
    };
    if forced {
        cluster.kill_all().await;
        eprintln!("killed every node (SIGKILL)");
        return 130;
    }
    println!(
        "stopped; run `opkv cluster up --nodes {} --data-dir {}` to restart it",
        args.nodes,
        args.data_dir.display()
    );
    0
}

/// Resolves once `count` interrupts were received.
async fn interrupted(mut interrupts: tokio::sync::watch::Receiver<u32>, count: u32) {
    let _ = interrupts.wait_for(|seen| *seen >= count).await;
}

fn print_endpoints(cluster: &LocalCluster, leader: u64) {
    println!("the cluster is up; leader: node {leader}");
    for id in cluster.ids() {
        println!(
            "  node {id}  client http://{}  pid {}  log {}",
            cluster.endpoint(id),
            cluster.pid(id).map_or("-".into(), |pid| pid.to_string()),
            cluster.log_path(id).display()
        );
    }
    let endpoints = cluster.endpoints().join(",");
    let first = cluster.endpoint(cluster.ids()[0]);
    println!("try:");
    println!("  export OPKV_ENDPOINTS={endpoints}");
    println!("  opkv put greeting hello");
    println!("  opkv get greeting");
    println!("  opkv status");
    println!("  curl -s -X PUT http://{first}/v1/kv/greeting -d '{{\"value\":\"hello\"}}'");
    println!("  curl -s http://{first}/v1/kv/greeting");
    println!("  curl -sN 'http://{first}/v1/watch?prefix=&from_revision=1'");
    println!(
        "(`opkv` is `cargo run --release -p omnipaxos_kv --` from the repository.) Ctrl-C stops the cluster."
    );
}

/// Reports children that die, until Ctrl-C.
async fn monitor(cluster: &mut LocalCluster, interrupts: tokio::sync::watch::Receiver<u32>) {
    let mut interval = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = interrupted(interrupts.clone(), 1) => return,
        }
        for (id, status) in cluster.reap_exited() {
            eprintln!(
                "node {id} exited ({status}); the others keep running. Last lines of {}:\n{}",
                cluster.log_path(id).display(),
                cluster.log_tail(id, 10)
            );
            if cluster.running().is_empty() {
                eprintln!("every node has exited");
                return;
            }
        }
    }
}
