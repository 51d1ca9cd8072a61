//! One run: set up the cluster, start the clients and the nemesis, heal, let the cluster
//! recover, check, write the history, faults, summary and timeline, tear everything down.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use omnipaxos_kv::api::{KeyValue, ListResponse};

use crate::{
    chart,
    cluster::{Cluster, ServerSettings},
    history::{self, Action, Clock, ReadMode, Record, Status},
    nemesis::{self, FaultKind, FaultRecord, Nemesis, NemesisConfig},
    report::{self, Summary},
    workload::{self, Shared, WorkloadConfig},
    ChaosError, NodeId,
};

/// Everything one run needs.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub opkv: PathBuf,
    pub out: PathBuf,
    pub nodes: u64,
    pub seed: u64,
    pub duration: Duration,
    pub subnet: [u8; 3],
    pub settings: ServerSettings,
    pub workload: WorkloadConfig,
    pub nemesis: NemesisConfig,
    pub mutation: Option<String>,
}

/// Runs the cluster under faults and checks it. `stop` (Ctrl-C) ends the faults early; the
/// run then heals, checks and tears down as usual.
pub async fn run(config: RunConfig, stop: Arc<AtomicBool>) -> Result<Summary, ChaosError> {
    std::fs::create_dir_all(&config.out).map_err(|e| ChaosError::io(&config.out, e))?;
    let mut cluster =
        Cluster::create(&config.opkv, &config.out, config.nodes, config.subnet, config.settings.clone())?;
    for id in cluster.ids() {
        cluster.start(id, 1.0)?;
    }
    let http = workload::http_client();
    if !nemesis::probe_write(&cluster, &http, Duration::from_secs(30)).await {
        let tails: Vec<String> =
            cluster.ids().iter().map(|&id| format!("node {id}:\n{}", cluster.log_tail(id, 8))).collect();
        return Err(ChaosError::Setup(format!(
            "the cluster took no write within 30 s of its start\n{}",
            tails.join("\n")
        )));
    }
    let clock = Arc::new(Clock::new());
    let shared = Arc::new(Shared {
        endpoints: cluster.ids().into_iter().map(|id| (id, cluster.endpoint(id))).collect(),
        clock: clock.clone(),
        history: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
        http: http.clone(),
    });
    let mut clients = Vec::new();
    for client in 0..config.workload.clients {
        clients.push(tokio::spawn(workload::run_client(
            shared.clone(),
            config.workload.clone(),
            client,
            config.seed,
        )));
    }
    let mut nemesis = Nemesis::new(config.nemesis.clone());
    let until_ns = config.duration.as_nanos() as u64;
    let nemesis_shared = Arc::new(NemesisView { shared: shared.clone(), stop: stop.clone() });
    let outcome = nemesis_loop(&mut nemesis, &mut cluster, &nemesis_shared, until_ns).await;
    let heal_ns = clock.now_ns();
    let recovered = nemesis::probe_write(&cluster, &http, Duration::from_secs(60)).await;
    // Clients go on a little after the final heal, so the history ends on a healthy cluster.
    tokio::time::sleep(Duration::from_secs(3)).await;
    shared.stop.store(true, Ordering::Relaxed);
    for client in clients {
        let _ = client.await;
    }
    outcome?;
    let records = std::mem::take(&mut *shared.history.lock().unwrap_or_else(|p| p.into_inner()));
    let faults = nemesis.faults.clone();
    let (converged, convergence, maps) = converge(&cluster, &http).await;
    let summary = summarize(&config, &records, &faults, converged, convergence, &maps, clock.now_ns());
    if !recovered {
        tracing::error!(
            "no write acknowledged within 60 s of the final heal at {:.1} s",
            heal_ns as f64 / 1e9
        );
    }
    let disk_used_mib = cluster.disk_used_mib();
    let summary = Summary { disk_used_mib, ..summary };
    drop(cluster);
    history::save(&config.out.join("history.jsonl"), &records)?;
    let faults_text: Vec<String> = faults.iter().filter_map(|f| serde_json::to_string(f).ok()).collect();
    let path = config.out.join("faults.jsonl");
    std::fs::write(&path, faults_text.join("\n") + "\n").map_err(|e| ChaosError::io(&path, e))?;
    let path = config.out.join("summary.json");
    std::fs::write(&path, serde_json::to_string_pretty(&summary).unwrap_or_default())
        .map_err(|e| ChaosError::io(&path, e))?;
    let path = config.out.join("summary.md");
    std::fs::write(&path, summary.to_string()).map_err(|e| ChaosError::io(&path, e))?;
    chart::load_font()?;
    let title = format!(
        "opkv, {} nodes, seed {}, {:.0} s{}: latency per operation, faults shaded",
        config.nodes,
        config.seed,
        summary.duration_s,
        config.mutation.as_ref().map(|m| format!(", mutation {m}")).unwrap_or_default()
    );
    chart::draw_timeline(&config.out.join("timeline.png"), &title, &records, &faults, None)?;
    if summary.duration_s > 150.0 {
        let title = format!("{title} (first 120 s)");
        chart::draw_timeline(
            &config.out.join("timeline-first-120s.png"),
            &title,
            &records,
            &faults,
            Some(120.0),
        )?;
    }
    Ok(summary)
}

/// What the nemesis loop looks at: the clients' shared state and the outer stop flag.
struct NemesisView {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
}

async fn nemesis_loop(
    nemesis: &mut Nemesis,
    cluster: &mut Cluster,
    view: &Arc<NemesisView>,
    until_ns: u64,
) -> Result<(), ChaosError> {
    // The nemesis stops on the outer flag too: mirror it into a deadline it checks.
    let watcher = {
        let view = view.clone();
        tokio::spawn(async move {
            loop {
                if view.stop.load(Ordering::Relaxed) {
                    view.shared.stop.store(true, Ordering::Relaxed);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let result = nemesis.run(cluster, &view.shared, until_ns).await;
    watcher.abort();
    // A stop during the run stopped the clients too: they restart for the final phase.
    if view.stop.load(Ordering::Relaxed) {
        tracing::warn!("interrupted: healing and checking what ran so far");
    }
    let healed = nemesis.heal_all(cluster, &view.shared.http).await;
    result.and(healed)
}

/// Waits (bounded) until every node applied the same index, then reads every node's map
/// (stale reads: each node's own state). Returns whether they are equal, a description, and
/// the maps.
async fn converge(
    cluster: &Cluster,
    http: &reqwest::Client,
) -> (bool, String, BTreeMap<NodeId, BTreeMap<String, KeyValue>>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut seen = String::new();
    let mut maps = BTreeMap::new();
    while tokio::time::Instant::now() < deadline {
        let statuses = nemesis::statuses(cluster, http).await;
        let applied: Vec<(NodeId, u64)> = statuses.iter().map(|(id, s)| (*id, s.applied_index)).collect();
        seen = format!("applied indices {applied:?}");
        let all_same = applied.len() == cluster.ids().len() && applied.windows(2).all(|w| w[0].1 == w[1].1);
        if all_same {
            maps.clear();
            for id in cluster.ids() {
                match list_all(&cluster.endpoint(id), http).await {
                    Ok(map) => {
                        maps.insert(id, map);
                    }
                    Err(error) => seen = format!("{seen}; node {id}: {error}"),
                }
            }
            let first = maps.values().next();
            if maps.len() == cluster.ids().len() && maps.values().all(|m| Some(m) == first) {
                let keys = first.map_or(0, |m| m.len());
                return (true, format!("{keys} keys, {seen}"), maps);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Not converged: the lost-write check still runs, on the nodes that applied the most.
    let statuses = nemesis::statuses(cluster, http).await;
    let most = statuses.iter().map(|(_, s)| s.applied_index).max().unwrap_or(0);
    maps.clear();
    for (id, _) in statuses.iter().filter(|(_, s)| s.applied_index == most) {
        if let Ok(map) = list_all(&cluster.endpoint(*id), http).await {
            maps.insert(*id, map);
        }
    }
    let checked: Vec<NodeId> = maps.keys().copied().collect();
    (false, format!("not equal within 60 s: {seen}; lost writes checked on {checked:?} only"), maps)
}

/// Every key of a node's own state, page by page.
async fn list_all(endpoint: &str, http: &reqwest::Client) -> Result<BTreeMap<String, KeyValue>, String> {
    let mut map = BTreeMap::new();
    let mut start = String::new();
    loop {
        let url = format!(
            "{endpoint}/v1/kv?prefix=&limit=5000&consistency=stale&start={}",
            omnipaxos_kv::client::encode_query(&start)
        );
        let response =
            http.get(url).timeout(Duration::from_secs(10)).send().await.map_err(|e| e.to_string())?;
        let page: ListResponse = response.json().await.map_err(|e| e.to_string())?;
        let last = page.kvs.last().map(|kv| kv.key.clone());
        for kv in page.kvs {
            map.insert(kv.key.clone(), kv);
        }
        match (page.more, last) {
            (true, Some(last)) if last != start => start = last,
            _ => return Ok(map),
        }
    }
}

/// The run's summary from its history, faults and final maps.
fn summarize(
    config: &RunConfig,
    records: &[Record],
    faults: &[FaultRecord],
    converged: bool,
    convergence: String,
    maps: &BTreeMap<NodeId, BTreeMap<String, KeyValue>>,
    end_ns: u64,
) -> Summary {
    let settings = &config.settings;
    // Reads during beyond-bound skew may be stale by design: checked apart.
    let margin_ns = (2 * settings.read_lease_ms + settings.election_timeout_ms()) * 1_000_000;
    let beyond: Vec<(u64, u64)> = faults
        .iter()
        .filter(|f| f.kind == FaultKind::SkewBeyond)
        .map(|f| (f.start_ns, f.heal_ns + margin_ns))
        .collect();
    let in_beyond =
        |r: &Record| !r.is_write() && beyond.iter().any(|&(a, b)| r.invoke_ns >= a && r.invoke_ns <= b);
    let not_stale = |r: &Record| r.read_mode() != Some(ReadMode::Stale);
    let check = report::check_records(records, |r| not_stale(r) && !in_beyond(r));
    let check_beyond_bound = (!beyond.is_empty())
        .then(|| report::check_records(records, |r| not_stale(r) && (r.is_write() || in_beyond(r))));
    let mut lost_examples = Vec::new();
    let mut acknowledged = 0;
    let mut lost = 0;
    for record in records {
        if let (Action::UniquePut { value }, Status::Ok) = (record.action, record.status) {
            acknowledged += 1;
            let key = format!("u/{value}");
            let missing: Vec<NodeId> = maps
                .iter()
                .filter(|(_, map)| map.get(&key).is_none_or(|kv| kv.value != value.to_string()))
                .map(|(id, _)| *id)
                .collect();
            if !missing.is_empty() || maps.is_empty() {
                lost += 1;
                if lost_examples.len() < 10 {
                    lost_examples.push(format!(
                        "{key} acknowledged at {:.3} s, missing on {missing:?}",
                        record.complete_ns as f64 / 1e9
                    ));
                }
            }
        }
    }
    let figures = report::fault_figures(records, faults);
    let leader_kill_to_write = |combined: bool| -> Vec<f64> {
        faults
            .iter()
            .zip(&figures)
            .filter(|(f, _)| {
                f.kind == FaultKind::Kill && f.leader_before.is_some_and(|l| f.targets.contains(&l))
            })
            .filter(|(f, _)| f.combined == combined)
            .filter_map(|(_, x)| x.first_write_after_start_ms)
            .collect()
    };
    let leader_kill_to_write_ms = leader_kill_to_write(false);
    let leader_kill_combined_to_write_ms = leader_kill_to_write(true);
    let partial_partition_to_write_ms = faults
        .iter()
        .zip(&figures)
        .filter(|(f, _)| {
            matches!(f.kind, FaultKind::QuorumLoss | FaultKind::ConstrainedElection) && !f.combined
        })
        .filter_map(|(_, x)| x.first_write_after_start_ms)
        .collect();
    let paused: Vec<&report::FaultFigures> = faults
        .iter()
        .zip(&figures)
        .filter(|(f, _)| {
            f.kind == FaultKind::Pause && f.leader_before.is_some_and(|l| f.targets.contains(&l))
        })
        .map(|(_, x)| x)
        .collect();
    let mut faults_by_kind = BTreeMap::new();
    for fault in faults {
        *faults_by_kind.entry(fault.kind.name().to_string()).or_insert(0) += 1;
    }
    Summary {
        nodes: config.nodes,
        seed: config.seed,
        duration_s: end_ns as f64 / 1e9,
        mutation: config.mutation.clone(),
        election_timeout_ms: settings.election_timeout_ms(),
        read_lease_ms: settings.read_lease_ms,
        ops: report::count_ops(records),
        faults_by_kind,
        combined_faults: faults.iter().filter(|f| f.combined).count(),
        check,
        check_beyond_bound,
        lost_writes: lost,
        lost_examples,
        acknowledged_unique_writes: acknowledged,
        converged,
        convergence,
        leader_kill_to_write_ms,
        leader_kill_combined_to_write_ms,
        partial_partition_to_write_ms,
        paused_leaders: paused.len(),
        paused_leader_reads_after_resume: paused.iter().map(|x| x.reads_by_targets_after_heal).sum(),
        faults: figures,
        disk_used_mib: BTreeMap::new(),
    }
}
