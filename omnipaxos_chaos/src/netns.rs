//! The network: one Linux network namespace per node, each with a veth pair into a bridge that
//! lives in a namespace of its own, plus one veth from the root namespace (where the harness
//! and its clients run) into the bridge. Faults are nftables rules inside the node namespaces
//! that drop packets from chosen peers; the harness's own address is never dropped, so clients
//! keep reaching every node (the Jepsen model: clients on both sides of a partition).
//!
//! ```text
//!   root ns: harness, clients ── chh<pid> 10.77.0.254 ─┐
//!                                                       ▼
//!   ns chaos-<pid>-br:                 bridge br0 ── host, n1, n2, n3 (veth ends)
//!                                         │      │      │
//!   ns chaos-<pid>-n<i>: eth0 10.77.0.<i>, nft table inet chaos (input: drop from blocked peers)
//! ```
//!
//! Everything created is recorded in the [`crate::cleanup`] registry before it is created, so
//! teardown (on drop, on panic, on Ctrl-C) removes it; a run killed with SIGKILL leaves names
//! with its pid, which the next run removes ([`remove_stale`]).

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write,
    net::Ipv4Addr,
    process::{Command, Stdio},
};

use crate::{cleanup, ChaosError, NodeId};

/// The address of the harness (root namespace) on the cluster's subnet.
pub const HOST_OCTET: u8 = 254;

/// Runs a command and returns its standard output; a non-zero exit is an error with its
/// standard error.
pub fn run(program: &str, args: &[&str]) -> Result<String, ChaosError> {
    run_with_input(program, args, None)
}

/// [`run`] with `input` on standard input.
pub fn run_with_input(program: &str, args: &[&str], input: Option<&str>) -> Result<String, ChaosError> {
    let shown = format!("{program} {}", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| ChaosError::Command { command: shown.clone(), message: error.to_string() })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .map_err(|error| ChaosError::Command { command: shown.clone(), message: error.to_string() })?;
    }
    let output = child
        .wait_with_output()
        .map_err(|error| ChaosError::Command { command: shown.clone(), message: error.to_string() })?;
    if !output.status.success() {
        return Err(ChaosError::Command {
            command: shown,
            message: format!("{}: {}", output.status, String::from_utf8_lossy(&output.stderr).trim()),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Checks that this process can create network namespaces and has `ip` and `nft`: a clear
/// error otherwise (the harness never skips silently).
pub fn check_available() -> Result<(), ChaosError> {
    let unavailable = |reason: String| ChaosError::NamespacesUnavailable(reason);
    if !nix::unistd::Uid::effective().is_root() {
        return Err(unavailable("the harness must run as root (it creates network namespaces)".into()));
    }
    for tool in ["ip", "nft"] {
        run(tool, &["-V"]).map_err(|error| {
            unavailable(format!("`{tool}` is missing or broken ({error}); install iproute2 and nftables"))
        })?;
    }
    let probe = format!("chaos-{}-probe", std::process::id());
    run("ip", &["netns", "add", &probe])
        .map_err(|error| unavailable(format!("ip netns add failed: {error}")))?;
    let table = run_with_input(
        "ip",
        &["netns", "exec", &probe, "nft", "-f", "-"],
        Some("table inet probe {\n  chain input {\n    type filter hook input priority 0; policy accept;\n  }\n}\n"),
    );
    let _ = run("ip", &["netns", "del", &probe]);
    table.map_err(|error| unavailable(format!("nftables does not work in a namespace: {error}")))?;
    Ok(())
}

/// Removes namespaces, links and mounts left by earlier runs whose process is gone.
pub fn remove_stale() {
    let alive = |pid: &str| {
        pid.parse::<u32>().is_ok_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
    };
    if let Ok(list) = run("ip", &["netns", "list"]) {
        for name in list.lines().filter_map(|line| line.split_whitespace().next()) {
            let mut parts = name.split('-');
            if let (Some("chaos"), Some(pid)) = (parts.next(), parts.next()) {
                if !alive(pid) {
                    tracing::warn!("removing namespace {name} left by an earlier run (pid {pid})");
                    let _ = run("ip", &["netns", "del", name]);
                }
            }
        }
    }
    if let Ok(mounts) = std::fs::read_to_string("/proc/mounts") {
        for mount in mounts.lines().filter_map(|line| line.split_whitespace().nth(1)) {
            if let Some(rest) = mount.strip_prefix("/tmp/omnipaxos-chaos-") {
                let pid = rest.split('/').next().unwrap_or_default();
                if !alive(pid) {
                    tracing::warn!("unmounting {mount} left by an earlier run");
                    let _ = run("umount", &["-l", mount]);
                }
            }
        }
    }
    // Their (now unmounted, empty) mount points: removed one directory at a time, never
    // recursively, so nothing that is still mounted or holds files goes.
    if let Ok(entries) = std::fs::read_dir("/tmp") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // Only real directories (a symlink planted in /tmp is not followed).
            let is_dir = std::fs::symlink_metadata(entry.path()).is_ok_and(|m| m.file_type().is_dir());
            if let (Some(pid), true) = (name.strip_prefix("omnipaxos-chaos-"), is_dir) {
                if !alive(pid) {
                    if let Ok(nodes) = std::fs::read_dir(entry.path()) {
                        for node in nodes.flatten() {
                            let _ = std::fs::remove_dir(node.path());
                        }
                    }
                    let _ = std::fs::remove_dir(entry.path());
                }
            }
        }
    }
}

/// The cluster's network. Dropping it removes everything it created.
pub struct Network {
    pid: u32,
    subnet: [u8; 3],
    nodes: Vec<NodeId>,
    /// The directed links currently dropped, `(from, to)`.
    blocked: BTreeSet<(NodeId, NodeId)>,
}

impl Network {
    /// Creates the bridge namespace, one namespace per node, the veths and empty rule tables.
    pub fn create(nodes: &[NodeId], subnet: [u8; 3]) -> Result<Network, ChaosError> {
        let pid = std::process::id();
        let network = Network { pid, subnet, nodes: nodes.to_vec(), blocked: BTreeSet::new() };
        let host_addr = network.host_addr().to_string();
        let addrs = run("ip", &["-o", "-4", "addr"])?;
        if addrs.contains(&format!("inet {host_addr}/")) {
            return Err(ChaosError::Setup(format!(
                "{host_addr} is already in use on this machine (another harness run?); pass another --subnet"
            )));
        }
        let bridge = network.bridge_ns();
        cleanup::register_namespace(&bridge);
        run("ip", &["netns", "add", &bridge])?;
        run("ip", &["-n", &bridge, "link", "set", "lo", "up"])?;
        run("ip", &["-n", &bridge, "link", "add", "br0", "type", "bridge"])?;
        run("ip", &["-n", &bridge, "link", "set", "br0", "up"])?;
        let host = network.host_link();
        cleanup::register_link(&host);
        run("ip", &["link", "add", &host, "type", "veth", "peer", "name", "host", "netns", &bridge])?;
        run("ip", &["addr", "add", &format!("{host_addr}/24"), "dev", &host])?;
        run("ip", &["link", "set", &host, "up"])?;
        run("ip", &["-n", &bridge, "link", "set", "host", "master", "br0", "up"])?;
        for &id in nodes {
            let ns = network.node_ns(id);
            cleanup::register_namespace(&ns);
            run("ip", &["netns", "add", &ns])?;
            let end = format!("n{id}");
            run(
                "ip",
                &["-n", &bridge, "link", "add", &end, "type", "veth", "peer", "name", "eth0", "netns", &ns],
            )?;
            run("ip", &["-n", &bridge, "link", "set", &end, "master", "br0", "up"])?;
            run("ip", &["-n", &ns, "addr", "add", &format!("{}/24", network.node_addr(id)), "dev", "eth0"])?;
            run("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
            run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
            network.write_rules(id, &[])?;
        }
        Ok(network)
    }

    /// The namespace of the bridge.
    pub fn bridge_ns(&self) -> String {
        format!("chaos-{}-br", self.pid)
    }

    /// The namespace of node `id`.
    pub fn node_ns(&self, id: NodeId) -> String {
        format!("chaos-{}-n{id}", self.pid)
    }

    fn host_link(&self) -> String {
        format!("chh{}", self.pid)
    }

    /// Node `id`'s address.
    pub fn node_addr(&self, id: NodeId) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, id as u8)
    }

    /// The harness's address.
    pub fn host_addr(&self) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, HOST_OCTET)
    }

    /// The directed links dropped now.
    pub fn blocked(&self) -> &BTreeSet<(NodeId, NodeId)> {
        &self.blocked
    }

    /// Drops exactly the directed links `(from, to)` in `blocked` (packets from `from` are
    /// dropped at `to`'s input), and no others. Only changed nodes' rules are rewritten.
    pub fn set_blocked(&mut self, blocked: BTreeSet<(NodeId, NodeId)>) -> Result<(), ChaosError> {
        let by_receiver = |set: &BTreeSet<(NodeId, NodeId)>| {
            let mut map: BTreeMap<NodeId, Vec<NodeId>> = BTreeMap::new();
            for &(from, to) in set {
                map.entry(to).or_default().push(from);
            }
            map
        };
        let (old, new) = (by_receiver(&self.blocked), by_receiver(&blocked));
        for &id in &self.nodes {
            if old.get(&id) != new.get(&id) {
                self.write_rules(id, new.get(&id).map_or(&[][..], |v| v.as_slice()))?;
            }
        }
        self.blocked = blocked;
        Ok(())
    }

    /// Replaces node `id`'s table with one that drops packets from `sources` (one transaction).
    fn write_rules(&self, id: NodeId, sources: &[NodeId]) -> Result<(), ChaosError> {
        let mut script = String::from("add table inet chaos\ndelete table inet chaos\n");
        script.push_str(
            "table inet chaos {\n  chain input {\n    type filter hook input priority 0; policy accept;\n",
        );
        for &from in sources {
            script.push_str(&format!("    ip saddr {} drop\n", self.node_addr(from)));
        }
        script.push_str("  }\n}\n");
        run_with_input("ip", &["netns", "exec", &self.node_ns(id), "nft", "-f", "-"], Some(&script))
            .map(|_| ())
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        cleanup::run_all();
    }
}
