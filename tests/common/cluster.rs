//! A two-node clustered Samba on one machine: two `ctdbd` in CTDB's test mode (each
//! with its own `CTDB_BASE`, node addresses 127.0.0.1 and 127.0.0.2) and two smbd with
//! `clustering = yes`, the same netbios name and the same shares on one shared
//! directory, each smbd bound to its node's address on port 445.
//!
//! Runs inside the test's namespace (see [`super::namespace`]): the addresses, port 445
//! and every daemon exist only there, and whatever is left dies with the namespace.
//! Uses the host's Samba and ctdb (Debian's `ctdb` package), not a Samba root file system.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::procs::{self, Proc};
use super::run::{self, Output};
use super::stats::{self, Stats};
use super::tools;
use super::torture::{self, Outcome};

/// The SMB user (root always exists and smbd can become it) and its password.
pub const USER: &str = "root";
pub const PASSWORD: &str = "AioFork-Cluster-Pw1";
/// One name for the whole cluster, as clients see it.
pub const NETBIOS_NAME: &str = "AIOFORKCLUSTER";
/// Node i (0-based, CTDB's pnn) listens on `127.0.0.<i+1>`.
pub const ADDRESSES: [&str; 2] = ["127.0.0.1", "127.0.0.2"];
const PORT: u16 = 445;
const LIBEXEC: &str = "/usr/libexec/ctdb";
pub const INSTALL_HINT: &str = "apt-get install -y ctdb";

const HEALTHY_TIMEOUT: Duration = Duration::from_secs(90);
const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
const CTDB_TOOL_TIMEOUT: Duration = Duration::from_secs(15);

/// A share served by every node: its name and options beyond `path`/`read only`.
#[derive(Clone, Debug)]
pub struct Share {
    pub name: String,
    pub options: Vec<(String, String)>,
}

impl Share {
    pub fn new(name: &str, options: &[(&str, &str)]) -> Self {
        Share {
            name: name.to_string(),
            options: options
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }
}

/// One node: its ctdbd and its smbd.
#[derive(Debug)]
pub struct Node {
    /// CTDB's pnn (0 or 1); the node is called "node <pnn+1>" in messages.
    pub pnn: usize,
    pub address: String,
    /// This node's directory: `CTDB_BASE` and smbd's state below it.
    pub dir: PathBuf,
    pub conf: PathBuf,
    ctdbd: Option<Child>,
    /// ctdbd in test mode exits when its stdin closes: held open while it should run.
    ctdbd_stdin: Option<ChildStdin>,
    smbd: Option<Child>,
    smbd_pid: u32,
}

impl Node {
    pub fn name(&self) -> String {
        format!("node {}", self.pnn + 1)
    }

    pub fn smbd_pid(&self) -> u32 {
        self.smbd_pid
    }

    pub fn unc(&self, share: &str) -> String {
        format!("//{}/{share}", self.address)
    }

    pub fn credentials(&self) -> String {
        format!("{USER}%{PASSWORD}")
    }

    /// `ctdb <args>` against this node's ctdbd.
    pub fn ctdb(&self, args: &[&str]) -> Output {
        let mut cmd = ctdb_command("ctdb", &self.dir);
        cmd.args(args);
        run::run(&mut cmd, CTDB_TOOL_TIMEOUT)
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("log.smbd")
    }

    pub fn log_text(&self) -> String {
        String::from_utf8_lossy(&fs::read(self.log_path()).unwrap_or_default()).into_owned()
    }

    /// The last lines of smbd's and ctdbd's logs, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let ctdb = fs::read(self.dir.join("log.ctdb")).unwrap_or_default();
        let console = fs::read(self.dir.join("smbd.console")).unwrap_or_default();
        format!(
            "--- {} smbd log (tail) ---\n{}\n--- smbd console ---\n{}\n--- ctdbd log (tail) ---\n{}",
            self.name(),
            run::tail(&self.log_text(), lines),
            run::tail(&String::from_utf8_lossy(&console), lines),
            run::tail(&String::from_utf8_lossy(&ctdb), lines)
        )
    }

    /// The module's tree-disconnect stats lines in this node's smbd log.
    pub fn stats(&self) -> Vec<Stats> {
        stats::at_disconnect(&stats::parse_log(&self.log_text()))
    }

    /// Live helpers of this node: processes with the helpers' comm that descend from
    /// this node's smbd.
    pub fn helpers(&self) -> Vec<Proc> {
        let snap = procs::snapshot();
        helpers_under(&snap, self.smbd_pid)
    }

    /// Live connection processes of this node's smbd.
    pub fn connections(&self) -> Vec<u32> {
        procs::connection_pids(&procs::snapshot(), self.smbd_pid)
    }

    /// Waits until this node has no client connection and no helper left: then every
    /// tree disconnect has happened and its stats line is in the log.
    pub fn wait_idle(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let conns = self.connections();
            let helpers = self.helpers();
            if conns.is_empty() && helpers.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} not idle within {timeout:?}: connections {conns:?}, helpers {helpers:?}\n{}",
                self.name(),
                self.log_tail(30)
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// A node crash as far as the other node and the clients can tell: SIGKILL to every
    /// smbd process of this node (the main one, its connection processes and daemons;
    /// the module's helpers are left to notice on their own) and to ctdbd's process group.
    /// Returns the pids killed.
    pub fn kill(&mut self) -> Vec<u32> {
        let snap = procs::snapshot();
        let mut victims: Vec<u32> = snap
            .iter()
            // smbd, its connection processes and its daemons (smbd-notifyd, ...).
            .filter(|p| p.is_live() && p.comm.starts_with("smbd"))
            .filter(|p| p.pid == self.smbd_pid || descends_from(&snap, p.pid, self.smbd_pid))
            .map(|p| p.pid)
            .collect();
        victims.sort_unstable();
        for pid in &victims {
            run::signal(*pid, libc::SIGKILL);
        }
        if let Some(mut child) = self.smbd.take() {
            let _ = child.wait();
        }
        if let Some(mut child) = self.ctdbd.take() {
            victims.push(child.id());
            run::kill_group(child.id());
            let _ = child.wait();
        }
        self.ctdbd_stdin = None;
        victims
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.smbd.take() {
            run::signal(child.id(), libc::SIGTERM);
            let _ = run::wait_deadline(&mut child, STOP_TIMEOUT);
        }
        // Closing stdin ends ctdbd in test mode; the group kill takes its helpers along.
        self.ctdbd_stdin = None;
        if let Some(mut child) = self.ctdbd.take() {
            run::signal(child.id(), libc::SIGTERM);
            let _ = run::wait_deadline(&mut child, STOP_TIMEOUT);
        }
    }
}

/// The running cluster; stopped (smbd first, then ctdbd) on drop.
#[derive(Debug)]
pub struct Cluster {
    /// The shared directory: cluster lock and every share's files.
    pub shared: PathBuf,
    pub nodes: Vec<Node>,
    pub shares: Vec<Share>,
}

impl Cluster {
    /// Starts both ctdbd, waits until `ctdb nodestatus all` shows both nodes OK, then
    /// starts both smbd serving `shares` from `<dir>/shared/<share>`.
    pub fn start(dir: &Path, shares: &[Share]) -> Cluster {
        check_tools();
        add_loopback_addresses();
        let shared = dir.join("shared");
        for share in shares {
            fs::create_dir_all(shared.join(&share.name)).expect("create share dir");
        }
        let mut nodes: Vec<Node> = ADDRESSES
            .iter()
            .enumerate()
            .map(|(pnn, address)| {
                // Short names: smbd's unix sockets live below, paths of at most 108 bytes.
                let node_dir = dir.join(format!("n{pnn}"));
                write_ctdb_base(&node_dir, &shared, address);
                let conf = node_dir.join("smb.conf");
                fs::write(&conf, smb_conf(&node_dir, &shared, address, shares))
                    .expect("write smb.conf");
                Node {
                    pnn,
                    address: address.to_string(),
                    dir: node_dir,
                    conf,
                    ctdbd: None,
                    ctdbd_stdin: None,
                    smbd: None,
                    smbd_pid: 0,
                }
            })
            .collect();
        for node in &mut nodes {
            let (child, stdin) = spawn_ctdbd(&node.dir);
            node.ctdbd = Some(child);
            node.ctdbd_stdin = Some(stdin);
        }
        let mut cluster = Cluster {
            shared,
            nodes,
            shares: shares.to_vec(),
        };
        cluster.wait_healthy();
        // One node at a time: smbd claims its version under a clustered lock, read then
        // upgraded to write, and two smbds starting at once can each hold the read lock
        // the other's upgrade waits for (NT_STATUS_POSSIBLE_DEADLOCK: one exits at start).
        for node in &mut cluster.nodes {
            add_user(&node.conf);
            let child = spawn_smbd(&node.dir, &node.conf);
            node.smbd_pid = child.id();
            node.smbd = Some(child);
            wait_port(node);
        }
        cluster
    }

    /// The directory a share serves, to check files behind the nodes' backs.
    pub fn share_path(&self, share: &str) -> PathBuf {
        self.shared.join(share)
    }

    /// `ctdb nodestatus all` as seen from node `pnn`.
    pub fn nodestatus(&self, pnn: usize) -> String {
        let out = self.nodes[pnn].ctdb(&["nodestatus", "all"]);
        out.combined()
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + HEALTHY_TIMEOUT;
        loop {
            let all_ok = self.nodes.iter().all(|node| {
                let text = node.ctdb(&["nodestatus", "all"]).combined();
                nodestatus_all_ok(&text, self.nodes.len())
            });
            if all_ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not become healthy within {HEALTHY_TIMEOUT:?}:\n{}\n{}\n{}",
                self.nodestatus(0),
                self.nodes[0].log_tail(30),
                self.nodes[1].log_tail(30)
            );
            thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.stop();
        }
    }
}

/// Whether `ctdb nodestatus all` output lists `nodes` nodes, each `OK`.
pub fn nodestatus_all_ok(text: &str, nodes: usize) -> bool {
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("pnn:")).collect();
    lines.len() == nodes
        && lines
            .iter()
            .all(|l| l.split_whitespace().nth(2) == Some("OK"))
}

/// The status word of node `pnn` in `ctdb nodestatus all` output (`OK`, `DISCONNECTED`,
/// `UNHEALTHY`, ...).
pub fn node_status(text: &str, pnn: usize) -> Option<String> {
    let prefix = format!("pnn:{pnn} ");
    let line = text.lines().find(|l| l.starts_with(&prefix))?;
    line.split_whitespace().nth(2).map(str::to_string)
}

/// Whether `pid` has `ancestor` above it in `snap` (by parent links).
pub fn descends_from(snap: &[Proc], pid: u32, ancestor: u32) -> bool {
    let parents: BTreeMap<u32, u32> = snap.iter().map(|p| (p.pid, p.ppid)).collect();
    let mut at = pid;
    // Bounded: a pid reused mid-scan cannot make this loop forever.
    for _ in 0..64 {
        match parents.get(&at) {
            Some(&parent) if parent == ancestor => return true,
            Some(&parent) if parent > 1 => at = parent,
            _ => return false,
        }
    }
    false
}

/// Live helpers (comm `aio_fork_helper`) below `smbd_pid` in `snap`.
pub fn helpers_under(snap: &[Proc], smbd_pid: u32) -> Vec<Proc> {
    snap.iter()
        .filter(|p| p.is_live() && p.comm == procs::HELPER_COMM)
        .filter(|p| descends_from(snap, p.pid, smbd_pid))
        .cloned()
        .collect()
}

/// Every live helper, wherever it hangs.
pub fn all_helpers() -> Vec<Proc> {
    procs::snapshot()
        .into_iter()
        .filter(|p| p.is_live() && p.comm == procs::HELPER_COMM)
        .collect()
}

/// Polls /proc on a thread and records, per node, every helper seen below that node's
/// smbd and the most seen at one instant.
pub struct NodeHelperSampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Vec<HelperSeen>>,
}

#[derive(Clone, Debug, Default)]
pub struct HelperSeen {
    pub distinct: BTreeSet<u32>,
    pub max_live: usize,
}

impl NodeHelperSampler {
    pub fn start(smbd_pids: Vec<u32>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = thread::spawn(move || {
            let mut seen = vec![HelperSeen::default(); smbd_pids.len()];
            loop {
                let done = flag.load(Ordering::Relaxed);
                let snap = procs::snapshot();
                for (i, pid) in smbd_pids.iter().enumerate() {
                    let found = helpers_under(&snap, *pid);
                    seen[i].max_live = seen[i].max_live.max(found.len());
                    seen[i].distinct.extend(found.iter().map(|p| p.pid));
                }
                if done {
                    return seen;
                }
                thread::sleep(Duration::from_millis(10));
            }
        });
        NodeHelperSampler { stop, handle }
    }

    pub fn finish(self) -> Vec<HelperSeen> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("helper sampler panicked")
    }
}

/// `smbclient //<node>/<share> -c <commands>` under a deadline.
pub fn smbclient(node: &Node, share: &str, commands: &str, timeout: Duration) -> Output {
    run::run(client_command(node, share).arg("-c").arg(commands), timeout)
}

/// Starts `smbclient ... -c <commands>` in the background in its own process group,
/// its output in `log`.
pub fn spawn_smbclient(node: &Node, share: &str, commands: &str, log: &Path) -> Child {
    let out = File::create(log).expect("create client log");
    let err = out.try_clone().expect("dup client log");
    let mut cmd = client_command(node, share);
    cmd.arg("-c")
        .arg(commands)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    run::spawn(&mut cmd)
}

fn client_command(node: &Node, share: &str) -> Command {
    let mut cmd = tools::command("smbclient");
    // The node's smb.conf keeps the host's client settings out of the test.
    cmd.arg("-s")
        .arg(&node.conf)
        .arg(node.unc(share))
        .arg("-U")
        .arg(node.credentials());
    cmd
}

/// One smbtorture suite against one share of one node; results by full test name.
pub fn run_suite(
    node: &Node,
    share: &str,
    suite: &str,
    timeout: Duration,
) -> (BTreeMap<String, Outcome>, Output) {
    // smbtorture leaves a temp dir in its cwd when killed: keep it in the node's dir.
    let cwd = node.dir.join("torture");
    fs::create_dir_all(&cwd).expect("create smbtorture dir");
    let mut cmd = tools::command("smbtorture");
    cmd.current_dir(&cwd)
        .arg("--fullname")
        .arg("--target=samba3")
        .arg("-s")
        .arg(&node.conf)
        .arg(node.unc(share))
        .arg(format!("-U{}", node.credentials()))
        .arg(suite);
    let output = run::run(&mut cmd, timeout);
    let results = torture::parse_results(&output.combined(), output.timed_out);
    (results, output)
}

fn check_tools() {
    for helper in [
        "ctdb-eventd",
        "ctdb-event",
        "ctdb_lock_helper",
        "ctdb_recovery_helper",
        "ctdb_takeover_helper",
        "ctdb_mutex_fcntl_helper",
    ] {
        let path = Path::new(LIBEXEC).join(helper);
        assert!(
            path.is_file(),
            "{} missing: install it with `{INSTALL_HINT}` (these tests never skip)",
            path.display()
        );
    }
    for tool in [
        "ctdbd",
        "ctdb",
        "smbd",
        "smbpasswd",
        "smbclient",
        "smbtorture",
    ] {
        tools::path_of(tool);
    }
}

/// Only 127.0.0.1 is on a fresh namespace's loopback. ctdbd would bind 127.0.0.2 anyway
/// (the kernel routes all of 127/8 to lo), but smbd's `interfaces = 127.0.0.2` matches
/// only addresses an interface has: without this, node 2's smbd finds "no network
/// interfaces" and listens nowhere.
fn add_loopback_addresses() {
    let shown = run::run(
        tools::command("ip").args(["-o", "addr", "show", "dev", "lo"]),
        Duration::from_secs(10),
    );
    assert!(shown.success(), "ip addr show:\n{}", shown.describe());
    for address in &ADDRESSES[1..] {
        if shown.stdout.contains(&format!("inet {address}/")) {
            continue;
        }
        let added = run::run(
            tools::command("ip").args(["addr", "add", &format!("{address}/8"), "dev", "lo"]),
            Duration::from_secs(10),
        );
        assert!(added.success(), "ip addr add:\n{}", added.describe());
    }
}

/// `CTDB_BASE` of one node: nodes file, no public addresses, database directories and
/// a `ctdb.conf` with the shared cluster lock and fail-over (IP takeover) disabled:
/// clients here pick a node's address themselves.
fn write_ctdb_base(base: &Path, shared: &Path, address: &str) {
    for sub in [
        "events/legacy",
        "run",
        "db/volatile",
        "db/persistent",
        "db/state",
    ] {
        fs::create_dir_all(base.join(sub)).expect("create ctdb dir");
    }
    let nodes: String = ADDRESSES.iter().map(|a| format!("{a}\n")).collect();
    fs::write(base.join("nodes"), nodes).expect("write nodes");
    fs::write(base.join("public_addresses"), "").expect("write public_addresses");
    let b = base.display();
    let conf = format!(
        "[logging]\n    location = file:{b}/log.ctdb\n    log level = NOTICE\n\
         [cluster]\n    cluster lock = !{LIBEXEC}/ctdb_mutex_fcntl_helper {}/cluster.lock\n\
         \x20   node address = {address}\n\
         [database]\n    volatile database directory = {b}/db/volatile\n\
         \x20   persistent database directory = {b}/db/persistent\n\
         \x20   state database directory = {b}/db/state\n\
         [failover]\n    disabled = true\n",
        shared.display()
    );
    fs::write(base.join("ctdb.conf"), conf).expect("write ctdb.conf");
}

/// `ctdbd`/`ctdb` in test mode for the node whose `CTDB_BASE` is `base`: test mode
/// takes every path from `CTDB_BASE` and the helpers from these variables.
fn ctdb_command(tool: &str, base: &Path) -> Command {
    let mut cmd = tools::command(tool);
    cmd.env("CTDB_TEST_MODE", "yes").env("CTDB_BASE", base);
    for (var, helper) in [
        ("CTDB_EVENTD", "ctdb-eventd"),
        ("CTDB_EVENT_HELPER", "ctdb-event"),
        ("CTDB_LOCK_HELPER", "ctdb_lock_helper"),
        ("CTDB_RECOVERY_HELPER", "ctdb_recovery_helper"),
        ("CTDB_TAKEOVER_HELPER", "ctdb_takeover_helper"),
        ("CTDB_CLUSTER_MUTEX_HELPER", "ctdb_mutex_fcntl_helper"),
    ] {
        cmd.env(var, Path::new(LIBEXEC).join(helper));
    }
    cmd
}

fn spawn_ctdbd(base: &Path) -> (Child, ChildStdin) {
    let console = File::create(base.join("ctdbd.console")).expect("create ctdbd.console");
    let console_err = console.try_clone().expect("dup ctdbd.console");
    let mut cmd = ctdb_command("ctdbd", base);
    cmd.stdin(Stdio::piped())
        .stdout(console)
        .stderr(console_err)
        // Its own process group: a group kill ends its eventd, recoverd and lock helpers.
        .process_group(0);
    let mut child = run::spawn(&mut cmd);
    let stdin = child.stdin.take().expect("ctdbd stdin");
    (child, stdin)
}

/// smb.conf of one node. Clustering needs `clustering = yes` and the node's ctdbd
/// socket; the rest is a private smbd as in [`super::smbd`], bound to the node's address.
pub fn smb_conf(dir: &Path, shared: &Path, address: &str, shares: &[Share]) -> String {
    let d = dir.display();
    let mut text = String::from("[global]\n");
    let globals = [
        ("clustering", "yes".to_string()),
        ("ctdbd socket", format!("{d}/run/ctdbd.socket")),
        ("netbios name", NETBIOS_NAME.to_string()),
        ("workgroup", "WORKGROUP".to_string()),
        ("server role", "standalone server".to_string()),
        ("private dir", format!("{d}/private")),
        ("lock directory", format!("{d}/lock")),
        ("state directory", format!("{d}/state")),
        ("cache directory", format!("{d}/cache")),
        ("pid directory", format!("{d}/pid")),
        ("ncalrpc dir", format!("{d}/ncalrpc")),
        ("passdb backend", format!("tdbsam:{d}/private/passdb.tdb")),
        ("smb ports", PORT.to_string()),
        ("interfaces", address.to_string()),
        ("bind interfaces only", "yes".to_string()),
        ("load printers", "no".to_string()),
        ("printcap name", "/dev/null".to_string()),
        ("disable spoolss", "yes".to_string()),
        // SMB1 suites (base.rw1) need NT1.
        ("server min protocol", "NT1".to_string()),
        ("log file", format!("{d}/log.smbd")),
        ("max log size", "0".to_string()),
        // The module's stats lines are debug class aio_fork, level 2.
        ("log level", "1 aio_fork:5".to_string()),
    ];
    for (key, value) in &globals {
        let _ = writeln!(text, "    {key} = {value}");
    }
    for share in shares {
        let _ = writeln!(text, "\n[{}]", share.name);
        let _ = writeln!(text, "    path = {}", shared.join(&share.name).display());
        let _ = writeln!(text, "    read only = no\n    guest ok = no");
        for (key, value) in &share.options {
            let _ = writeln!(text, "    {key} = {value}");
        }
    }
    text
}

fn add_user(conf: &Path) {
    for sub in ["private", "lock", "state", "cache", "pid", "ncalrpc"] {
        fs::create_dir_all(conf.parent().expect("node dir").join(sub)).expect("create smbd dir");
    }
    let input = format!("{PASSWORD}\n{PASSWORD}\n");
    let out = run::run_with_input(
        tools::command("smbpasswd")
            .arg("-c")
            .arg(conf)
            .args(["-s", "-a", USER]),
        Duration::from_secs(30),
        input.as_bytes(),
    );
    assert!(out.success(), "smbpasswd failed:\n{}", out.describe());
}

fn spawn_smbd(dir: &Path, conf: &Path) -> Child {
    let console = File::create(dir.join("smbd.console")).expect("create smbd.console");
    let console_err = console.try_clone().expect("dup smbd.console");
    let mut cmd = tools::command("smbd");
    cmd.arg("-s")
        .arg(conf)
        .args(["-F", "--no-process-group"])
        .stdin(Stdio::null())
        .stdout(console)
        .stderr(console_err)
        .process_group(0);
    run::spawn(&mut cmd)
}

fn wait_port(node: &Node) {
    let addr: SocketAddr = format!("{}:{PORT}", node.address).parse().expect("address");
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        let alive = procs::snapshot()
            .iter()
            .any(|p| p.pid == node.smbd_pid && p.is_live());
        assert!(
            alive,
            "{} smbd exited at start\n{}",
            node.name(),
            node.log_tail(40)
        );
        assert!(
            Instant::now() < deadline,
            "{} smbd not listening on {addr} within {START_TIMEOUT:?}\n{}",
            node.name(),
            node.log_tail(40)
        );
        thread::sleep(Duration::from_millis(50));
    }
}
