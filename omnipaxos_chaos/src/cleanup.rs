//! One registry of everything a run created that outlives it unless removed: server processes,
//! tmpfs mounts, network namespaces and the root namespace's veth. Resources are registered
//! before they are created; [`run_all`] removes them in a safe order and is idempotent. It runs
//! from the guards' `Drop` (normal end and panics), and from the signal handler on a second
//! Ctrl-C (the first one lets the run stop and heal in order).

use std::sync::Mutex;

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};

#[derive(Default)]
struct Registry {
    pids: Vec<u32>,
    mounts: Vec<String>,
    namespaces: Vec<String>,
    links: Vec<String>,
}

static REGISTRY: Mutex<Registry> =
    Mutex::new(Registry { pids: Vec::new(), mounts: Vec::new(), namespaces: Vec::new(), links: Vec::new() });

fn with<T>(f: impl FnOnce(&mut Registry) -> T) -> T {
    let mut registry = REGISTRY.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    f(&mut registry)
}

/// A server process this run started (killed at teardown unless [`forget_pid`] ran first).
pub fn register_pid(pid: u32) {
    with(|r| r.pids.push(pid));
}

/// The process was reaped: its pid may be reused, so it must not be signalled any more.
pub fn forget_pid(pid: u32) {
    with(|r| r.pids.retain(|&p| p != pid));
}

/// A tmpfs mount point.
pub fn register_mount(path: &str) {
    with(|r| r.mounts.push(path.to_string()));
}

/// A network namespace.
pub fn register_namespace(name: &str) {
    with(|r| r.namespaces.push(name.to_string()));
}

/// A link in the root namespace.
pub fn register_link(name: &str) {
    with(|r| r.links.push(name.to_string()));
}

/// Removes everything registered: processes (SIGCONT then SIGKILL, so a paused one dies too),
/// mounts, namespaces (their veths and rules go with them), links. Errors are logged, never
/// fatal: teardown goes on with the rest.
pub fn run_all() {
    let registry = with(std::mem::take);
    for &pid in &registry.pids {
        let pid = Pid::from_raw(pid as i32);
        let _ = kill(pid, Signal::SIGCONT);
        let _ = kill(pid, Signal::SIGKILL);
    }
    for mount in registry.mounts.iter().rev() {
        // The killed processes may still hold files for a moment: a lazy unmount detaches now.
        if let Err(error) = crate::netns::run("umount", &["-l", mount]) {
            tracing::warn!("teardown: {error}");
        }
        // The mount point, then its parent once empty (`/tmp/omnipaxos-chaos-<pid>`).
        let mount = std::path::Path::new(mount);
        let _ = std::fs::remove_dir(mount);
        if let Some(parent) = mount.parent() {
            let _ = std::fs::remove_dir(parent);
        }
    }
    for namespace in registry.namespaces.iter().rev() {
        if let Err(error) = crate::netns::run("ip", &["netns", "del", namespace]) {
            tracing::warn!("teardown: {error}");
        }
    }
    for link in &registry.links {
        // Usually gone with its peer in the bridge namespace.
        let _ = crate::netns::run("ip", &["link", "del", link]);
    }
}
