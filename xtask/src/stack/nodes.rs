//! `--nodes N`: more Swarm nodes on this one machine, so that replicas
//! spread over several Engines and a node can be lost for real.
//!
//! Each extra node is a `dockerd` of its own in a network namespace of
//! its own (`taxi-fare-node2`, …), joined to this Engine's swarm as a
//! worker. The namespaces hang off one bridge, `tfnodes0`, on a /24 that
//! must not overlap any route of the machine (checked first), with this
//! Engine at `.1` (the manager's advertise address) and node `i` at `.i`.
//! A node's daemon has its own config file (data root, the `vfs` storage
//! driver, which needs nothing of the host), exec root, socket and pid
//! file, no bridge and no iptables of its own; it is started with
//! `nsenter --net=…` (not `ip netns exec`, which remounts /sys and hides
//! the cgroup mounts dockerd needs).
//!
//! Images reach a node through the registry on 127.0.0.1:5000, where the
//! service's image references point: inside each namespace, connections
//! to 127.0.0.1:5000 are sent to the bridge address, and on the host
//! those arriving on the bridge are sent to the registry on loopback
//! (NAT rules, tagged with [`RULE_TAG`], removed by [`remove`]).
//!
//! Everything here is named `taxi-fare-node*` / `tfn*`, lives under
//! [`RUN`] and [`DATA`], and [`remove`] takes all of it away, also what a
//! killed `up` left half made.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::effects::docker::docker;
use crate::effects::poll::{self, Poll};
use crate::effects::process::{cmd, output, run};

/// The bridge the nodes' namespaces hang off.
pub const BRIDGE: &str = "tfnodes0";
/// The /24 of the bridge, as its first three octets.
const SUBNET: [u8; 3] = [10, 213, 37];
/// The registry's port, as the image references name it.
const REGISTRY_PORT: u16 = 5000;
/// The comment every NAT rule of ours carries.
const RULE_TAG: &str = "taxi-fare-nodes";
/// The nodes' sockets, pid files, config files, logs and exec roots.
const RUN: &str = "/run/taxi-fare-nodes";
/// The nodes' data roots (images, containers).
const DATA: &str = "/var/lib/taxi-fare-nodes";
/// The most nodes, this Engine included (the /24 has room for more; the
/// machine has not).
pub const MAX_NODES: u32 = 5;
/// How long a node's daemon may take to answer, and a join to be seen.
const START: Duration = Duration::from_secs(90);

/// The address of this Engine on the bridge: the manager's advertise
/// address when there are nodes.
pub fn manager_address() -> String {
    address(1)
}

fn address(i: u32) -> String {
    let [a, b, c] = SUBNET;
    format!("{a}.{b}.{c}.{i}")
}

/// Node `i`'s namespace (2 and up: 1 is this Engine).
pub fn namespace(i: u32) -> String {
    format!("taxi-fare-node{i}")
}

/// Node `i`'s Docker socket, for `docker -H`.
pub fn socket(i: u32) -> String {
    format!("unix://{RUN}/node{i}.sock")
}

fn pid_file(i: u32) -> PathBuf {
    PathBuf::from(format!("{RUN}/node{i}.pid"))
}

/// Node `i`'s daemon log.
pub fn log_file(i: u32) -> PathBuf {
    PathBuf::from(format!("{RUN}/node{i}.log"))
}

/// `docker` against node `i`'s daemon.
pub fn docker_on<I, S>(i: u32, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut c = docker(["-H", &socket(i)]);
    c.args(args);
    c
}

/// Whether the route table has a route into our /24 that is not ours.
fn subnet_taken() -> Result<Option<String>> {
    let [a, b, c] = SUBNET;
    let ours = format!("{a}.{b}.{c}.");
    let routes = output(cmd("ip", ["-4", "route", "show"]))?;
    Ok(routes
        .lines()
        .find(|l| {
            let dest = l.split_whitespace().next().unwrap_or("");
            !l.contains(&format!("dev {BRIDGE}")) && overlaps(dest, [a, b, c])
        })
        .map(|l| format!("{l} (we need {ours}0/24)")))
}

/// Whether a route destination (`default`, `a.b.c.d` or `a.b.c.d/n`)
/// covers any address of the /24 `net`.
fn overlaps(dest: &str, net: [u8; 3]) -> bool {
    if dest == "default" {
        return false;
    }
    let (addr, len) = dest.split_once('/').unwrap_or((dest, "32"));
    let (Ok(addr), Ok(len)) = (addr.parse::<std::net::Ipv4Addr>(), len.parse::<u32>()) else {
        return false;
    };
    let ours = u32::from_be_bytes([net[0], net[1], net[2], 0]);
    let theirs = u32::from(addr);
    let common = len.min(24);
    let mask = if common == 0 { 0 } else { u32::MAX << (32 - common) };
    ours & mask == theirs & mask
}

fn link_exists(name: &str) -> bool {
    cmd("ip", ["link", "show", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn namespaces() -> Result<Vec<String>> {
    Ok(output(cmd("ip", ["netns", "list"]))?
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("taxi-fare-node"))
        .map(str::to_owned)
        .collect())
}

/// The bridge with the manager's address, and the host's half of the
/// registry's forwarding. Idempotent.
pub fn ensure_bridge() -> Result<()> {
    if let Some(route) = subnet_taken()? {
        bail!("cannot add Swarm nodes: the machine already routes {route}");
    }
    if !link_exists(BRIDGE) {
        run(cmd("ip", ["link", "add", BRIDGE, "type", "bridge"]))?;
        run(cmd("ip", ["addr", "add", &format!("{}/24", manager_address()), "dev", BRIDGE]))?;
    }
    run(cmd("ip", ["link", "set", BRIDGE, "up"]))?;
    // Packets from the nodes to the bridge's registry port go to the
    // registry on loopback, which the kernel allows only with this.
    run(cmd("sysctl", ["-q", "-w", &format!("net.ipv4.conf.{BRIDGE}.route_localnet=1")]))?;
    for (table, add, rule) in host_rules() {
        let mut check = cmd("iptables", ["-t", table, "-C"]);
        check.args(&rule).stdout(Stdio::null()).stderr(Stdio::null());
        if !check.status().is_ok_and(|s| s.success()) {
            let mut c = cmd("iptables", ["-t", table, add]);
            c.args(&rule);
            run(c)?;
        }
    }
    Ok(())
}

/// The host's rules for the nodes, as (table, how to add, rule): the
/// registry's forwarding, and the frames between two nodes, which cross
/// the bridge and so Docker's FORWARD chain (its policy is DROP once
/// `br_netfilter` is loaded) — first in the chain, before Docker's.
fn host_rules() -> [(&'static str, &'static str, Vec<String>); 2] {
    let forward = ["FORWARD", "-i", BRIDGE, "-o", BRIDGE, "-m", "comment", "--comment", RULE_TAG]
        .into_iter()
        .chain(["-j", "ACCEPT"])
        .map(str::to_owned)
        .collect();
    [("nat", "-A", host_rule()), ("filter", "-I", forward)]
}

fn host_rule() -> Vec<String> {
    [
        "PREROUTING",
        "-i",
        BRIDGE,
        "-p",
        "tcp",
        "-d",
        &manager_address(),
        "--dport",
        &REGISTRY_PORT.to_string(),
        "-m",
        "comment",
        "--comment",
        RULE_TAG,
        "-j",
        "DNAT",
        "--to-destination",
        &format!("127.0.0.1:{REGISTRY_PORT}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Runs a command inside node `i`'s namespace (`ip netns exec`: fine
/// for `ip`, `sysctl` and `iptables`, not for dockerd).
fn in_namespace(i: u32, program: &str, args: &[&str]) -> Command {
    let ns = namespace(i);
    let mut c = cmd("ip", ["netns", "exec", ns.as_str(), program]);
    c.args(args);
    c
}

/// Node `i`'s namespace, its half of the veth pair on the bridge, and the
/// namespace's half of the registry's forwarding.
fn ensure_namespace(i: u32) -> Result<()> {
    let ns = namespace(i);
    let (host_end, node_end) = (format!("tfn{i}h"), format!("tfn{i}"));
    if !namespaces()?.contains(&ns) {
        run(cmd("ip", ["netns", "add", &ns]))?;
    }
    if !link_exists(&host_end) {
        run(cmd("ip", ["link", "add", &host_end, "type", "veth", "peer", "name", &node_end]))?;
        run(cmd("ip", ["link", "set", &node_end, "netns", &ns]))?;
        run(cmd(
            "ip",
            ["-n", &ns, "addr", "add", &format!("{}/24", address(i)), "dev", &node_end],
        ))?;
    }
    run(cmd("ip", ["link", "set", &host_end, "master", BRIDGE, "up"]))?;
    run(cmd("ip", ["-n", &ns, "link", "set", "lo", "up"]))?;
    run(cmd("ip", ["-n", &ns, "link", "set", &node_end, "up"]))?;
    run(in_namespace(i, "sysctl", &["-q", "-w", "net.ipv4.conf.all.route_localnet=1"]))?;
    let registry = format!("{}:{REGISTRY_PORT}", manager_address());
    let manager = manager_address();
    let port = REGISTRY_PORT.to_string();
    // To the bridge address, then from the node's own address (which
    // MASQUERADE sees after the DNAT): a reply to loopback would never
    // leave the host.
    let rules: [&[&str]; 2] = [
        &[
            "OUTPUT",
            "-p",
            "tcp",
            "-d",
            "127.0.0.1",
            "--dport",
            &port,
            "-j",
            "DNAT",
            "--to-destination",
            &registry,
        ],
        &["POSTROUTING", "-p", "tcp", "-d", &manager, "--dport", &port, "-j", "MASQUERADE"],
    ];
    // A namespace of an earlier try may hold them already.
    run(in_namespace(i, "iptables", &["-t", "nat", "-F"]))?;
    for rule in rules {
        let mut args = vec!["-t", "nat", "-A"];
        args.extend_from_slice(rule);
        run(in_namespace(i, "iptables", &args))?;
    }
    Ok(())
}

/// Starts node `i`'s daemon unless it answers already, and waits until
/// it does.
fn ensure_daemon(i: u32) -> Result<()> {
    if daemon_answers(i) {
        return Ok(());
    }
    fs::create_dir_all(RUN).with_context(|| format!("cannot create {RUN}"))?;
    let data = format!("{DATA}/node{i}");
    fs::create_dir_all(&data).with_context(|| format!("cannot create {data}"))?;
    let config = format!("{RUN}/node{i}.json");
    let json = serde_json::json!({
        "data-root": data,
        "storage-driver": "vfs",
        "mtu": 1400,
        "log-driver": "json-file",
        "log-opts": {"max-size": "10m", "max-file": "2"},
    });
    fs::write(&config, json.to_string()).with_context(|| format!("cannot write {config}"))?;
    let log = fs::File::create(log_file(i))
        .with_context(|| format!("cannot create {}", log_file(i).display()))?;
    let exec_root = format!("{RUN}/x{i}");
    let mut c = cmd(
        "nsenter",
        [
            format!("--net=/var/run/netns/{}", namespace(i)),
            "dockerd".into(),
            "--config-file".into(),
            config,
            "--exec-root".into(),
            exec_root,
            "-H".into(),
            socket(i),
            "--pidfile".into(),
            pid_file(i).display().to_string(),
            "--bridge=none".into(),
            "--iptables=false".into(),
            "--ip6tables=false".into(),
        ],
    );
    c.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    // Its own process group: it outlives this command, as the registry
    // does, and a Ctrl-C here does not reach it.
    use std::os::unix::process::CommandExt;
    c.process_group(0);
    eprintln!("$ nsenter --net=… dockerd … (node {i}; log {})", log_file(i).display());
    c.spawn().context("cannot start a node's dockerd")?;
    poll::until(START, Duration::from_millis(500), || {
        Ok(if daemon_answers(i) {
            Poll::Ready(())
        } else {
            Poll::Pending(format!("node {i}'s dockerd does not answer yet"))
        })
    })
    .with_context(|| format!("node {i}'s daemon (see {})", log_file(i).display()))
}

fn daemon_answers(i: u32) -> bool {
    docker_on(i, ["version", "--format", "{{.Server.Version}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Node `i`'s swarm state, as its daemon says.
fn node_state(i: u32) -> Result<String> {
    output(docker_on(i, ["info", "--format", "{{.Swarm.LocalNodeState}}"]))
}

/// Makes nodes 2..=`nodes` workers of this Engine's swarm, whose manager
/// must advertise [`manager_address`]. Idempotent: a node already in
/// the swarm is left as it is.
pub fn add(nodes: u32) -> Result<()> {
    if !(2..=MAX_NODES).contains(&nodes) {
        bail!("--nodes takes 2 to {MAX_NODES} (this Engine is the first), not {nodes}");
    }
    ensure_bridge()?;
    let token = output(docker(["swarm", "join-token", "-q", "worker"]))?;
    for i in 2..=nodes {
        ensure_namespace(i)?;
        ensure_daemon(i)?;
        if node_state(i)? != "active" {
            run(docker_on(
                i,
                [
                    "swarm",
                    "join",
                    "--token",
                    &token,
                    "--advertise-addr",
                    &address(i),
                    "--listen-addr",
                    &format!("{}:2377", address(i)),
                    &format!("{}:2377", manager_address()),
                ],
            ))?;
        }
    }
    poll::until(START, Duration::from_millis(500), || {
        let ready =
            output(docker(["node", "ls", "--filter", "role=worker", "--format", "{{.Status}}"]))?;
        let n = ready.lines().filter(|l| *l == "Ready").count() as u32;
        Ok(if n >= nodes - 1 {
            Poll::Ready(())
        } else {
            Poll::Pending(format!("{n} of {} workers ready", nodes - 1))
        })
    })
    .context("waiting for the nodes to join")
}

/// The node ids of this swarm's workers at our addresses.
fn our_workers() -> Result<Vec<String>> {
    let ids = output(docker(["node", "ls", "-q", "--filter", "role=worker"]))?;
    let [a, b, c] = SUBNET;
    let prefix = format!("{a}.{b}.{c}.");
    let mut ours = Vec::new();
    for id in ids.lines() {
        let addr = output(docker(["node", "inspect", id, "--format", "{{.Status.Addr}}"]))?;
        if addr.starts_with(&prefix) {
            ours.push(id.to_owned());
        }
    }
    Ok(ours)
}

/// Stops node `i` at once: every process in its namespace (its dockerd,
/// containerd, the containers' processes) is killed with SIGKILL, as
/// when a node's daemon and everything under it die. Its addresses
/// stay (the namespaces are still mounted), so a connection to one of
/// its tasks is refused, not left hanging. [`revive`] starts it again.
pub fn kill(i: u32) -> Result<()> {
    let pids = output(cmd("ip", ["netns", "pids", &namespace(i)]))?;
    for pid in pids.split_whitespace() {
        let _ = cmd("kill", ["-KILL", pid]).stderr(Stdio::null()).status();
    }
    poll::until(Duration::from_secs(15), Duration::from_millis(200), || {
        let left = output(cmd("ip", ["netns", "pids", &namespace(i)]))?;
        Ok(if left.is_empty() { Poll::Ready(()) } else { Poll::Pending(format!("pids {left}")) })
    })
    .with_context(|| format!("killing node {i}"))
}

/// Starts a killed node's daemon again; Swarm takes it back as the same
/// node (its state is in its data root). The runtime state the kill left
/// (the exec root's mounts, containerd's socket and pid file, with which
/// a new containerd never starts) goes first.
pub fn revive(i: u32) -> Result<()> {
    clear_runtime(i)?;
    ensure_daemon(i)
}

/// Unmounts and removes node `i`'s exec root, socket and pid file.
fn clear_runtime(i: u32) -> Result<()> {
    let exec_root = format!("{RUN}/x{i}");
    unmount_under(&exec_root)?;
    if let Err(e) = fs::remove_dir_all(&exec_root)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        bail!("cannot remove {exec_root}: {e}");
    }
    for file in [pid_file(i), PathBuf::from(format!("{RUN}/node{i}.sock"))] {
        let _ = fs::remove_file(file);
    }
    Ok(())
}

/// Lazily unmounts every mount under `dir` (a killed daemon leaves its
/// containers' mounts), deepest first.
fn unmount_under(dir: &str) -> Result<()> {
    let info = fs::read_to_string("/proc/self/mountinfo").context("cannot read mountinfo")?;
    let mut points: Vec<&str> = info
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = cmd("umount", ["-l", p]).stderr(Stdio::null()).status();
    }
    Ok(())
}

/// Takes every node away: their workers out of the swarm, their daemons
/// and every process in their namespaces, their mounts, files,
/// namespaces, the bridge and the NAT rule. Nothing to do when there is
/// none; safe to repeat.
pub fn remove() -> Result<()> {
    let mut problems = Vec::new();
    for ns in namespaces()? {
        let Some(i) = ns.strip_prefix("taxi-fare-node").and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if daemon_answers(i) {
            let _ = docker_on(i, ["swarm", "leave", "--force"]).stdout(Stdio::null()).status();
        }
        if let Err(e) = kill(i) {
            problems.push(format!("{e:#}"));
        }
        if let Err(e) = clear_runtime(i) {
            problems.push(format!("{e:#}"));
        }
        unmount_under(&format!("{DATA}/node{i}"))?;
        if let Err(e) = run(cmd("ip", ["netns", "delete", &ns])) {
            problems.push(format!("{e:#}"));
        }
        let data = format!("{DATA}/node{i}");
        if let Err(e) = fs::remove_dir_all(&data)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            problems.push(format!("cannot remove {data}: {e}"));
        }
        for file in [log_file(i), PathBuf::from(format!("{RUN}/node{i}.json"))] {
            let _ = fs::remove_file(file);
        }
    }
    if super::swarm::state().is_ok_and(|s| s == "active") {
        for id in our_workers().unwrap_or_default() {
            let _ = output(docker(["node", "rm", "--force", &id]));
        }
    }
    for (table, _, rule) in host_rules() {
        loop {
            let mut del = cmd("iptables", ["-t", table, "-D"]);
            del.args(&rule).stdout(Stdio::null()).stderr(Stdio::null());
            if !del.status().is_ok_and(|s| s.success()) {
                break;
            }
        }
    }
    if link_exists(BRIDGE)
        && let Err(e) = run(cmd("ip", ["link", "delete", BRIDGE]))
    {
        problems.push(format!("{e:#}"));
    }
    let _ = fs::remove_dir(RUN);
    let _ = fs::remove_dir(DATA);
    if !problems.is_empty() {
        bail!("the Swarm nodes are not all gone: {}", problems.join("; "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_overlaps_our_subnet_only_when_it_covers_it() {
        let ours = [10, 213, 37];
        assert!(overlaps("10.0.0.0/8", ours));
        assert!(overlaps("10.213.37.0/24", ours));
        assert!(overlaps("10.213.37.128/25", ours));
        assert!(overlaps("10.213.37.9", ours));
        assert!(!overlaps("10.213.38.0/24", ours));
        assert!(!overlaps("172.17.0.0/16", ours));
        assert!(!overlaps("default", ours));
        assert!(!overlaps("192.0.2.0/24", ours));
    }
}
