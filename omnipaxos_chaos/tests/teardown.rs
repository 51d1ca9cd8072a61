//! Teardown of a real run on every way out: a panic while a fault is in force, a second
//! interrupt (tear down at once), and one interrupt (heal, check, tear down). Each test starts
//! the harness binary with a 3-node cluster, waits until its servers run, ends it that way, and
//! checks that no namespace, mount, root-namespace link or server process of it is left.
//!
//! They need root (network namespaces, tmpfs mounts) and a built `opkv` next to the harness
//! (`cargo build -p omnipaxos_kv`), so they are `#[ignore]`d in `cargo test --workspace`;
//! `.ci/run`'s fault-harness step runs them as root with `--ignored`.

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

const HARNESS: &str = env!("CARGO_BIN_EXE_omnipaxos_chaos");
/// Bound on every wait: the cluster's start, the exit.
const DEADLINE: Duration = Duration::from_secs(90);

fn opkv() -> PathBuf {
    let opkv = Path::new(HARNESS).with_file_name("opkv");
    assert!(opkv.exists(), "no {}: build it first (cargo build -p omnipaxos_kv)", opkv.display());
    opkv
}

/// The harness process; if a test fails before it exits, it is interrupted twice (it then
/// tears down at once) and, failing that, killed, so that no run outlives the test.
struct Harness(Child);

impl Drop for Harness {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            for _ in 0..2 {
                let _ = kill(Pid::from_raw(self.0.id() as i32), Signal::SIGINT);
                std::thread::sleep(Duration::from_millis(200));
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(self.0.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts a 3-node run on its own subnet; returns the harness process and its output dir.
fn start(subnet: &str, extra: &[&str]) -> (Harness, tempfile::TempDir) {
    let out = tempfile::tempdir().expect("temp dir");
    let child = Command::new(HARNESS)
        .args(["run", "--nodes", "3", "--duration-s", "120", "--seed", "3", "--subnet", subnet])
        .arg("--out")
        .arg(out.path())
        .arg("--opkv")
        .arg(opkv())
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the harness");
    (Harness(child), out)
}

/// Polls `condition` every 50 ms until it holds; panics with `describe()` after `DEADLINE`.
fn wait_until(what: &str, mut condition: impl FnMut() -> bool, describe: impl Fn() -> String) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < DEADLINE, "{what}: not within {DEADLINE:?}; {}", describe());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Pids of the live `opkv` children of `parent` (the server processes; not the short-lived
/// `ip` or `umount` helpers).
fn children(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| state_and_parent(pid).is_some_and(|(state, ppid)| ppid == parent && state != "Z"))
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/exe"))
                .is_ok_and(|exe| exe.file_name().is_some_and(|name| name == "opkv"))
        })
        .collect()
}

fn alive(pid: u32) -> bool {
    state_and_parent(pid).is_some_and(|(state, _)| state != "Z")
}

/// A process's state letter and parent pid, from `/proc/<pid>/stat` (`pid (comm) state ppid
/// ...`; comm may hold spaces, so the fields are split after its `)`).
fn state_and_parent(pid: u32) -> Option<(String, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?.to_string();
    Some((state, fields.next()?.parse().ok()?))
}

fn namespaces(harness: u32) -> Vec<String> {
    let listed = Command::new("ip").args(["netns", "list"]).output().expect("ip netns list");
    let prefix = format!("chaos-{harness}-");
    String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| name.starts_with(&prefix))
        .map(str::to_string)
        .collect()
}

fn leftovers(harness: u32, servers: &[u32]) -> Vec<String> {
    let mut left: Vec<String> = namespaces(harness).into_iter().map(|n| format!("namespace {n}")).collect();
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mount_root = format!("/tmp/omnipaxos-chaos-{harness}/");
    left.extend(mounts.lines().filter(|l| l.contains(&mount_root)).map(|l| format!("mount {l}")));
    if Path::new(mount_root.trim_end_matches('/')).exists() {
        left.push(format!("directory {mount_root}"));
    }
    let link = format!("chh{harness}");
    let links = Command::new("ip").args(["-o", "link", "show"]).output().expect("ip link show");
    left.extend(
        String::from_utf8_lossy(&links.stdout)
            .lines()
            .filter(|l| l.contains(&format!(" {link}:")) || l.contains(&format!(" {link}@")))
            .map(|l| format!("link {l}")),
    );
    left.extend(servers.iter().filter(|&&pid| alive(pid)).map(|pid| format!("server process {pid}")));
    left
}

/// Starts a run, waits until its cluster runs (namespaces and three servers), ends it with
/// `end`, and checks that nothing of it is left. Returns the harness's exit status.
fn run_and_end(subnet: &str, extra: &[&str], end: impl FnOnce(u32)) -> ExitStatus {
    let (mut child, _out) = start(subnet, extra);
    let harness = child.0.id();
    let mut servers = Vec::new();
    wait_until(
        "the cluster runs",
        || {
            servers = children(harness);
            namespaces(harness).len() == 4 && servers.len() == 3
        },
        || format!("namespaces {:?}, servers {:?}", namespaces(harness), children(harness)),
    );
    end(harness);
    let mut status = None;
    wait_until(
        "the harness exits",
        || {
            status = child.0.try_wait().expect("try_wait");
            status.is_some()
        },
        || "still running".to_string(),
    );
    let left = leftovers(harness, &servers);
    assert!(left.is_empty(), "left behind: {left:?}");
    status.expect("exited")
}

fn signal(pid: u32, signal: Signal) {
    kill(Pid::from_raw(pid as i32), signal).unwrap_or_else(|e| panic!("{signal} to {pid}: {e}"));
}

#[test]
#[ignore = "needs root and a built opkv; run by .ci/run's fault-harness step"]
fn a_panic_while_a_fault_is_in_force_tears_everything_down() {
    let status = run_and_end("10.79.1", &["--test-panic-after-s", "2"], |_| {});
    assert_eq!(status.code(), Some(101), "the panic's exit code");
}

#[test]
#[ignore = "needs root and a built opkv; run by .ci/run's fault-harness step"]
fn a_second_interrupt_tears_everything_down_at_once() {
    let status = run_and_end("10.79.2", &[], |harness| {
        signal(harness, Signal::SIGINT);
        std::thread::sleep(Duration::from_millis(200));
        signal(harness, Signal::SIGINT);
    });
    assert_eq!(status.code(), Some(130));
}

#[test]
#[ignore = "needs root and a built opkv; run by .ci/run's fault-harness step"]
fn an_interrupt_heals_checks_and_tears_down() {
    let status = run_and_end("10.79.3", &[], |harness| {
        std::thread::sleep(Duration::from_secs(3)); // a fault or two
        signal(harness, Signal::SIGTERM);
    });
    assert!(matches!(status.code(), Some(0 | 1)), "checked and reported, then exited: {status:?}");
}
