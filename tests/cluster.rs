//! The module on a two-node clustered Samba (CTDB) on one machine: clients on both
//! nodes at once, smbtorture suites on both nodes against the aio_fork share and a
//! plain share of the same cluster, helpers and stats on both nodes, and node 1 killed
//! during a 256 MiB put through it and a get through node 2.
//!
//! One test: starting the cluster takes about ten seconds, and the fault phase, which
//! ends node 1, comes last.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use common::cluster::{self, Cluster, HelperSeen, Node, NodeHelperSampler, Share};
use common::data;
use common::expected::{self, Expected};
use common::namespace::{run_in_namespace, NsContext};
use common::procs;
use common::python;
use common::run::{self, Output};
use common::stats::{self, Stats};
use common::torture::Outcome;

const MIB: u64 = 1 << 20;
const AIO: &str = "aio";
/// aio_fork with reads already in the page cache sent to helpers too (they are served
/// inline in smbd by default): proves reads reach helpers on both nodes.
const AIO_NOINLINE: &str = "aio_noinline";
const PLAIN: &str = "plain";
const SUITES: [&str; 5] = [
    "smb2.rw",
    "smb2.lock",
    "smb2.compound_async",
    "smb2.deny",
    "base.rw1",
];
/// Each suite takes at most a few seconds here; this only bounds a hang.
const SUITE_TIMEOUT: Duration = Duration::from_secs(120);
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(300);
const EXPECTED_FILE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/expected/expected-cluster.txt"
);
const CLIENT_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/clients/cluster_client.py"
);
/// The fault phase's files: large enough that the kill lands mid-transfer.
const FAULT_SIZE: u64 = 256 * MIB;
/// Node 1 is killed once this much of the put has reached the disk.
const KILL_AT: u64 = 32 * MIB;

#[test]
fn cluster_two_nodes() {
    run_in_namespace("cluster_two_nodes", Duration::from_secs(20 * 60), run_all);
}

fn run_all(ctx: &NsContext) {
    let started = Instant::now();
    let expected = load_expected();
    let shares = [
        Share::new(AIO, &[("vfs objects", "aio_fork")]),
        Share::new(
            AIO_NOINLINE,
            &[
                ("vfs objects", "aio_fork"),
                ("aio_fork:inline cached reads", "no"),
            ],
        ),
        // The same cluster's share without any VFS module: the reference.
        Share::new(PLAIN, &[]),
    ];
    let mut cluster = Cluster::start(&ctx.workdir, &shares);
    let healthy_after = started.elapsed();
    let status = cluster.nodestatus(0);
    println!("CLUSTER nodestatus all (healthy after {healthy_after:.1?}):\n{status}");
    let mut problems = Vec::new();
    let mut summary = Vec::new();

    let sampler = NodeHelperSampler::start(cluster.nodes.iter().map(Node::smbd_pid).collect());
    let sources = ctx.workdir.join("sources");
    fs::create_dir_all(&sources).expect("create sources dir");
    for share in [AIO, AIO_NOINLINE, PLAIN] {
        problems.extend(both_nodes_at_once(&cluster, share, &sources));
    }
    problems.extend(one_file_from_both_nodes(&cluster, &sources));
    let suites_started = Instant::now();
    let results = run_suites(&cluster);
    let suites_time = suites_started.elapsed();
    for node in &cluster.nodes {
        node.wait_idle(Duration::from_secs(60));
    }
    let seen = sampler.finish();
    problems.extend(compare_suites(&results, &expected));
    summary.push(suite_table(&results, suites_time));
    let (helper_problems, helper_lines) = check_helpers_and_stats(&cluster, &seen);
    problems.extend(helper_problems);
    summary.extend(helper_lines);

    let (fault_problems, fault_lines) = fault_node1(&mut cluster, &sources);
    problems.extend(fault_problems);
    summary.extend(fault_lines);

    drop(cluster);
    problems.extend(check_nothing_left());
    println!("\n==== CLUSTER SUMMARY ====\nnodestatus at start:\n{status}");
    for line in &summary {
        println!("{line}");
    }
    println!(
        "CLUSTER runtime {:.1?} ({} problem(s))",
        started.elapsed(),
        problems.len()
    );
    assert!(
        problems.is_empty(),
        "{} problem(s):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

// ---- clients on both nodes at once ----

/// Each node uploads its own file while both download one shared file, all at once;
/// then each node downloads the file the other uploaded. Every file is compared byte
/// for byte with its source, as downloaded and as on the shared disk.
fn both_nodes_at_once(cluster: &Cluster, share: &str, sources: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let dir = sources.join(format!("both_{share}"));
    fs::create_dir_all(&dir).expect("create dir");
    let own: Vec<PathBuf> = (0..2)
        .map(|i| {
            let path = dir.join(format!("own{i}.bin"));
            // Odd sizes, distinct seeds: a mixed-up file cannot compare equal.
            data::write_random_file(&path, 16 * MIB + 3 + i, 100 + i);
            path
        })
        .collect();
    let same = dir.join("same.bin");
    data::write_random_file(&same, 24 * MIB + 7, 200);
    fs::copy(&same, cluster.share_path(share).join("same.bin")).expect("place same.bin");

    let first: Vec<(String, Output)> = thread::scope(|s| {
        let handles: Vec<_> = cluster
            .nodes
            .iter()
            .map(|node| {
                let local = dir.join(format!("same_via{}.bin", node.pnn));
                let cmds = format!(
                    "put {} own{}.bin; get same.bin {}",
                    own[node.pnn].display(),
                    node.pnn,
                    local.display()
                );
                s.spawn(move || {
                    let out = cluster::smbclient(node, share, &cmds, TRANSFER_TIMEOUT);
                    (node.name(), out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect()
    });
    for (name, out) in &first {
        if !out.success() {
            problems.push(format!(
                "{share}: put/get at once through {name} failed:\n{}",
                out.describe()
            ));
        }
    }
    for node in &cluster.nodes {
        let local = dir.join(format!("same_via{}.bin", node.pnn));
        push_compare(
            &mut problems,
            &format!("{share}: same.bin via {}", node.name()),
            &same,
            &local,
        );
        let on_disk = cluster
            .share_path(share)
            .join(format!("own{}.bin", node.pnn));
        push_compare(
            &mut problems,
            &format!("{share}: own{}.bin on disk", node.pnn),
            &own[node.pnn],
            &on_disk,
        );
    }

    // Each node reads what the other one wrote, both at once.
    let second: Vec<(String, Output)> = thread::scope(|s| {
        let handles: Vec<_> = cluster
            .nodes
            .iter()
            .map(|node| {
                let other = 1 - node.pnn;
                let local = dir.join(format!("own{other}_via{}.bin", node.pnn));
                let cmds = format!("get own{other}.bin {}", local.display());
                s.spawn(move || {
                    (
                        node.name(),
                        cluster::smbclient(node, share, &cmds, TRANSFER_TIMEOUT),
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect()
    });
    for (name, out) in &second {
        if !out.success() {
            problems.push(format!(
                "{share}: cross get through {name} failed:\n{}",
                out.describe()
            ));
        }
    }
    for node in &cluster.nodes {
        let other = 1 - node.pnn;
        let local = dir.join(format!("own{other}_via{}.bin", node.pnn));
        let what = format!(
            "{share}: own{other}.bin (written via node {}) read via {}",
            other + 1,
            node.name()
        );
        push_compare(&mut problems, &what, &own[other], &local);
    }
    println!(
        "CLUSTER both nodes at once on {share}: {} problem(s)",
        problems.len()
    );
    problems
}

/// Both nodes write one file at the same time through libsmbclient, each every other
/// 1 MiB chunk at its offset; then both read it whole at the same time.
fn one_file_from_both_nodes(cluster: &Cluster, sources: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let source = sources.join("striped.bin");
    data::write_random_file(&source, 32 * MIB + 11, 300);
    let script = Path::new(CLIENT_SCRIPT);
    let url = |node: &Node| format!("smb://{}/{AIO}/striped.bin", node.address);
    let writes: Vec<(String, Output)> = thread::scope(|s| {
        let handles: Vec<_> = cluster
            .nodes
            .iter()
            .map(|node| {
                let mut cmd = smbc_command(script);
                cmd.arg("stripes")
                    .arg(url(node))
                    .arg(&source)
                    .arg(MIB.to_string())
                    .arg(node.pnn.to_string())
                    .arg(cluster::PASSWORD);
                s.spawn(move || (node.name(), run::run(&mut cmd, TRANSFER_TIMEOUT)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect()
    });
    for (name, out) in &writes {
        if !out.success() || !out.stdout.starts_with("ok ") {
            problems.push(format!(
                "libsmbclient striped write via {name} failed:\n{}",
                out.describe()
            ));
        }
    }
    push_compare(
        &mut problems,
        "striped.bin on disk",
        &source,
        &cluster.share_path(AIO).join("striped.bin"),
    );
    let reads: Vec<(String, Output, PathBuf)> = thread::scope(|s| {
        let handles: Vec<_> = cluster
            .nodes
            .iter()
            .map(|node| {
                let local = sources.join(format!("striped_via{}.bin", node.pnn));
                let mut cmd = smbc_command(script);
                cmd.arg("read")
                    .arg(url(node))
                    .arg(&local)
                    .arg(cluster::PASSWORD);
                s.spawn(move || (node.name(), run::run(&mut cmd, TRANSFER_TIMEOUT), local))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect()
    });
    for (name, out, local) in &reads {
        if !out.success() {
            problems.push(format!(
                "libsmbclient read via {name} failed:\n{}",
                out.describe()
            ));
        }
        push_compare(
            &mut problems,
            &format!("striped.bin read via {name}"),
            &source,
            local,
        );
    }
    println!(
        "CLUSTER one file written from both nodes (libsmbclient): {} problem(s)",
        problems.len()
    );
    problems
}

/// `/usr/bin/python3 <script>`, the interpreter Debian's python3-smbc installs into.
fn smbc_command(script: &Path) -> Command {
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(|| {
        let out = run::run(
            Command::new(python::PYTHON).args(["-c", "import smbc"]),
            Duration::from_secs(60),
        );
        assert!(
            out.success(),
            "{} cannot import smbc (libsmbclient); install it with \
             `apt-get install -y python3-smbc` (these tests never skip):\n{}",
            python::PYTHON,
            out.describe()
        );
    });
    let mut cmd = Command::new(python::PYTHON);
    cmd.arg(script);
    cmd
}

fn push_compare(problems: &mut Vec<String>, what: &str, expected: &Path, actual: &Path) {
    if let Err(e) = data::compare_files(expected, actual) {
        problems.push(format!("{what}: {e}"));
    }
}

// ---- smbtorture on both nodes ----

/// (node pnn, share) -> test -> outcome.
type SuiteResults = BTreeMap<(usize, String), BTreeMap<String, Outcome>>;

/// Every suite against both shares of each node, one run at a time: the suites use
/// fixed file names, and both nodes serve the same directory.
fn run_suites(cluster: &Cluster) -> SuiteResults {
    let mut results = SuiteResults::new();
    for node in &cluster.nodes {
        for share in [AIO, PLAIN] {
            let entry = results.entry((node.pnn, share.to_string())).or_default();
            for suite in SUITES {
                let (found, out) = cluster::run_suite(node, share, suite, SUITE_TIMEOUT);
                println!(
                    "CLUSTER suite {suite} on {} {share}: {} test(s) in {:.1?}{}",
                    node.name(),
                    found.len(),
                    out.elapsed,
                    if out.timed_out {
                        " (killed at deadline)"
                    } else {
                        ""
                    }
                );
                if found.is_empty() {
                    // A suite that reports nothing is an error of its own, not a pass.
                    entry.insert(format!("{suite} (no results)"), Outcome::Error);
                    println!("{}", out.describe());
                }
                entry.extend(found);
            }
        }
    }
    results
}

/// An entry of tests/expected/expected-cluster.txt: on every node, each listed share gives the
/// listed outcome.
/// The shares tests/expected/expected-cluster.txt may name.
const EXPECTED_SHARES: [&str; 2] = [AIO, PLAIN];

fn load_expected() -> BTreeMap<String, Expected> {
    let text = fs::read_to_string(EXPECTED_FILE).expect("read tests/expected/expected-cluster.txt");
    parse_expected(&text)
}

fn parse_expected(text: &str) -> BTreeMap<String, Expected> {
    expected::parse(text, &EXPECTED_SHARES)
        .unwrap_or_else(|e| panic!("tests/expected/expected-cluster.txt: {e}"))
}

/// Per node, the aio share's outcome of every test must equal the plain share's,
/// except as tests/expected/expected-cluster.txt says; an entry that no longer holds fails.
fn compare_suites(results: &SuiteResults, expected: &BTreeMap<String, Expected>) -> Vec<String> {
    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    for pnn in 0..2 {
        let empty = BTreeMap::new();
        let aio = results.get(&(pnn, AIO.to_string())).unwrap_or(&empty);
        let plain = results.get(&(pnn, PLAIN.to_string())).unwrap_or(&empty);
        let tests: BTreeSet<&String> = aio.keys().chain(plain.keys()).collect();
        for test in tests {
            let got = |share: &str| {
                let map = if share == AIO { aio } else { plain };
                map.get(test).copied()
            };
            if let Some(entry) = expected.get(test.as_str()) {
                used.insert(test.clone());
                for share in entry.outcomes.keys() {
                    if entry.allows(share, got(share)) != Some(true) {
                        problems.push(format!(
                            "stale entry in expected-cluster.txt: {test} on node {} {share}: \
                             expected {}, got {:?} ({})",
                            pnn + 1,
                            entry.show(share),
                            got(share),
                            entry.reason
                        ));
                    }
                }
                continue;
            }
            if got(AIO) != got(PLAIN) {
                problems.push(format!(
                    "{test} on node {}: aio {:?} but plain {:?}",
                    pnn + 1,
                    got(AIO),
                    got(PLAIN)
                ));
            }
        }
    }
    for test in expected.keys().filter(|t| !used.contains(*t)) {
        problems.push(format!(
            "stale entry in expected-cluster.txt: {test} did not run"
        ));
    }
    problems
}

fn suite_table(results: &SuiteResults, took: Duration) -> String {
    let mut text = format!(
        "suites (successes/results per suite), {:.1?} in all:\n",
        took
    );
    let _ = writeln!(
        text,
        "  {:<22} {:>10} {:>10} {:>10} {:>10}",
        "suite", "n1 aio", "n1 plain", "n2 aio", "n2 plain"
    );
    for suite in SUITES {
        let mut row = format!("  {suite:<22}");
        for pnn in 0..2 {
            for share in [AIO, PLAIN] {
                let map = &results[&(pnn, share.to_string())];
                let mine: Vec<&Outcome> = map
                    .iter()
                    .filter(|(t, _)| {
                        t.starts_with(&format!("{suite}."))
                            || t.as_str() == suite
                            || t.starts_with(&format!("{suite} "))
                    })
                    .map(|(_, o)| o)
                    .collect();
                let ok = mine.iter().filter(|o| ***o == Outcome::Success).count();
                let _ = write!(row, " {:>10}", format!("{ok}/{}", mine.len()));
            }
        }
        let _ = writeln!(text, "{row}");
    }
    for pnn in 0..2 {
        for share in [AIO, PLAIN] {
            let bad: Vec<String> = results[&(pnn, share.to_string())]
                .iter()
                .filter(|(_, o)| **o != Outcome::Success)
                .map(|(t, o)| format!("{t}={o}"))
                .collect();
            let _ = writeln!(
                text,
                "  not success on node {} {share}: {}",
                pnn + 1,
                if bad.is_empty() {
                    "none".to_string()
                } else {
                    bad.join(", ")
                }
            );
        }
    }
    text
}

// ---- helpers and stats on both nodes ----

fn check_helpers_and_stats(cluster: &Cluster, seen: &[HelperSeen]) -> (Vec<String>, Vec<String>) {
    let mut problems = Vec::new();
    let mut lines = Vec::new();
    for node in &cluster.nodes {
        let helpers = &seen[node.pnn];
        lines.push(format!(
            "helpers on {}: {} distinct below smbd {}, at most {} at once",
            node.name(),
            helpers.distinct.len(),
            node.smbd_pid(),
            helpers.max_live
        ));
        if helpers.distinct.is_empty() {
            problems.push(format!(
                "no helper process was seen below {}'s smbd",
                node.name()
            ));
        }
        let all = node.stats();
        for share in [AIO, AIO_NOINLINE] {
            let total = stats::total_for(&all, share);
            // One line per tree connect is too many to print: the share's sum, and the
            // busiest single line as the module logged it.
            lines.push(format!(
                "stats {} (sum of {} tree-disconnect lines): {}",
                node.name(),
                total.lines,
                stats_line(&total)
            ));
            if let Some(busiest) = all
                .iter()
                .filter(|s| s.share == share)
                .max_by_key(|s| s.pread_bytes + s.pwrite_bytes)
            {
                lines.push(format!(
                    "stats {} busiest {share} line: {}",
                    node.name(),
                    stats_line(busiest)
                ));
            }
            if total.lines == 0
                || total.pwrites == 0
                || total.pwrite_bytes == 0
                || total.preads == 0
            {
                problems.push(format!(
                    "{}: {share}'s stats show no I/O through the module (lines {}, preads {}, pwrites {})",
                    node.name(),
                    total.lines,
                    total.preads,
                    total.pwrites
                ));
            }
        }
        let noinline = stats::total_for(&all, AIO_NOINLINE);
        if noinline.other("inline_preads") != 0 {
            problems.push(format!(
                "{}: {AIO_NOINLINE} served {} reads inline although inline cached reads are off",
                node.name(),
                noinline.other("inline_preads")
            ));
        }
        let plain = stats::total_for(&all, PLAIN);
        if plain.lines != 0 {
            problems.push(format!(
                "{}: stats lines for the plain share, which has no module",
                node.name()
            ));
        }
    }
    (problems, lines)
}

fn stats_line(s: &Stats) -> String {
    format!(
        "share={} preads={} (inline {}) pread_bytes={} pwrites={} pwrite_bytes={} fsyncs={} \
         spawned={} retries={} fallbacks={} helper_deaths={}",
        s.share,
        s.preads,
        s.other("inline_preads"),
        s.pread_bytes,
        s.pwrites,
        s.pwrite_bytes,
        s.fsyncs,
        s.spawned,
        s.retries,
        s.fallbacks,
        s.helper_deaths
    )
}

// ---- node 1 fails ----

/// Node 1 (smbd and ctdbd) is killed while a 256 MiB put runs through it and a get
/// runs through node 2. Node 2 must go on serving without an error; what node 1 had
/// written must be intact (every byte on disk is the source's byte or never written);
/// the client then reconnects to node 2 and finishes; node 1's helpers must all end.
fn fault_node1(cluster: &mut Cluster, sources: &Path) -> (Vec<String>, Vec<String>) {
    let mut problems = Vec::new();
    let mut lines = Vec::new();
    let put_src = sources.join("fault_put.bin");
    let get_src = sources.join("fault_get.bin");
    data::write_random_file(&put_src, FAULT_SIZE, 400);
    data::write_random_file(&get_src, FAULT_SIZE, 401);
    let share_dir = cluster.share_path(AIO);
    // The get goes through helpers of node 2 (no inline reads), the put through node 1's.
    fs::copy(
        &get_src,
        cluster.share_path(AIO_NOINLINE).join("fault_get.bin"),
    )
    .expect("place fault_get.bin");
    let on_disk = share_dir.join("fault_put.bin");
    let gets: Vec<PathBuf> = (0..2)
        .map(|i| sources.join(format!("fault_got{i}.bin")))
        .collect();

    let sampler1 = NodeHelperSampler::start(vec![cluster.nodes[0].smbd_pid()]);
    let sampler2 = NodeHelperSampler::start(vec![cluster.nodes[1].smbd_pid()]);
    let put_cmds = format!("put {} fault_put.bin", put_src.display());
    // Two gets in a row: the second is still running when node 1 goes.
    let get_cmds = format!(
        "get fault_get.bin {}; get fault_get.bin {}",
        gets[0].display(),
        gets[1].display()
    );
    let mut put = cluster::spawn_smbclient(
        &cluster.nodes[0],
        AIO,
        &put_cmds,
        &sources.join("fault_put.log"),
    );
    let mut get = cluster::spawn_smbclient(
        &cluster.nodes[1],
        AIO_NOINLINE,
        &get_cmds,
        &sources.join("fault_get.log"),
    );
    let reached = wait_file_size(&on_disk, KILL_AT, Duration::from_secs(120));
    let put_running = is_running(&mut put);
    let get_running = is_running(&mut get);
    let killed_at = Instant::now();
    let victims = cluster.nodes[0].kill();
    let node1_helpers = sampler1.finish().remove(0);
    lines.push(format!(
        "fault: node 1 killed (pids {victims:?}) with {reached} bytes of the put on disk; \
         put running {put_running}, get via node 2 running {get_running}; \
         node 1 had {} helper(s)",
        node1_helpers.distinct.len()
    ));
    if !put_running || !get_running {
        problems.push(format!(
            "fault not exercised: at the kill the put was running: {put_running}, the get via node 2: {get_running}"
        ));
    }
    if node1_helpers.distinct.is_empty() {
        problems.push("fault: no helper of node 1 was seen during its put".to_string());
    }

    let (put_status, put_timed_out) = run::wait_deadline(&mut put, TRANSFER_TIMEOUT);
    let put_log = fs::read_to_string(sources.join("fault_put.log")).unwrap_or_default();
    lines.push(format!(
        "fault: node 1's client ended after {:.1?}: {put_status:?} ({})",
        killed_at.elapsed(),
        run::tail(put_log.trim(), 2).replace('\n', " / ")
    ));
    if put_timed_out {
        problems.push("fault: node 1's client hung after its node was killed".to_string());
    } else if put_status.is_some_and(|s| s.success()) {
        problems.push(
            "fault: node 1's put reported success although its node was killed mid-transfer"
                .to_string(),
        );
    }
    let (get_status, get_timed_out) = run::wait_deadline(&mut get, TRANSFER_TIMEOUT);
    let node2_helpers = sampler2.finish().remove(0);
    lines.push(format!(
        "fault: node 2 served the get with {} helper(s)",
        node2_helpers.distinct.len()
    ));
    if node2_helpers.distinct.is_empty() {
        problems.push("fault: no helper of node 2 was seen during its get".to_string());
    }
    let get_log = fs::read_to_string(sources.join("fault_get.log")).unwrap_or_default();
    if get_timed_out || !get_status.is_some_and(|s| s.success()) {
        problems.push(format!("fault: the get through node 2 failed ({get_status:?}, timed out {get_timed_out}):\n{get_log}"));
    }
    for (i, got) in gets.iter().enumerate() {
        push_compare(
            &mut problems,
            &format!("fault: get {} via node 2", i + 1),
            &get_src,
            got,
        );
    }
    lines.push(format!("fault: get via node 2 ended {get_status:?} after {:.1?} from the kill, both copies compared", killed_at.elapsed()));

    // Node 1's helpers must end by themselves once their smbd is gone.
    let gone = wait_helpers_gone(&node1_helpers.distinct, Duration::from_secs(10));
    match gone {
        Ok(after) => lines.push(format!(
            "fault: all {} helper(s) of node 1 gone {after:.1?} after the kill",
            node1_helpers.distinct.len()
        )),
        Err(left) => problems.push(format!(
            "fault: helpers of node 1 still running 10 s after the kill: {left:?}"
        )),
    }
    let node2_pid = cluster.nodes[1].smbd_pid();
    let snap = procs::snapshot();
    let strays: Vec<_> = cluster::all_helpers()
        .into_iter()
        .filter(|h| !cluster::descends_from(&snap, h.pid, node2_pid))
        .collect();
    if !strays.is_empty() {
        problems.push(format!(
            "fault: helpers not below node 2's smbd: {strays:?}"
        ));
    }

    match committed_bytes(&put_src, &on_disk) {
        Ok(c) => lines.push(format!(
            "fault: on disk after the kill: {} bytes, {} of them the source's, an intact prefix of {} bytes, {} never written (zero)",
            c.len, c.matching, c.prefix, c.unwritten
        )),
        Err(e) => problems.push(format!("fault: the put's file is damaged: {e}")),
    }

    let status = cluster.nodestatus(1);
    lines.push(format!(
        "fault: nodestatus all from node 2 after the kill:\n{status}"
    ));
    if cluster::node_status(&status, 1).as_deref() != Some("OK")
        || cluster::node_status(&status, 0).as_deref() == Some("OK")
    {
        problems.push(format!(
            "fault: node status after the kill is not node 1 down, node 2 OK:\n{status}"
        ));
    }

    // The client of node 1 reconnects to node 2: it reads what is there, then puts again.
    let seen = sources.join("fault_seen_via2.bin");
    let node2 = &cluster.nodes[1];
    let (reread, tries) = retry(Duration::from_secs(60), || {
        cluster::smbclient(
            node2,
            AIO,
            &format!("get fault_put.bin {}", seen.display()),
            TRANSFER_TIMEOUT,
        )
    });
    if !reread.success() {
        problems.push(format!(
            "fault: node 2 could not read node 1's partial file:\n{}",
            reread.describe()
        ));
    } else {
        push_compare(
            &mut problems,
            "fault: partial file as node 2 serves it",
            &on_disk,
            &seen,
        );
    }
    let (reput, put_tries) = retry(Duration::from_secs(60), || {
        cluster::smbclient(
            node2,
            AIO,
            &format!("put {} fault_put.bin", put_src.display()),
            TRANSFER_TIMEOUT,
        )
    });
    if !reput.success() {
        problems.push(format!(
            "fault: put again through node 2 failed:\n{}",
            reput.describe()
        ));
    }
    push_compare(
        &mut problems,
        "fault: the file put again through node 2",
        &put_src,
        &on_disk,
    );
    let listed = cluster::smbclient(node2, AIO, "ls", Duration::from_secs(60));
    if !listed.success() {
        problems.push(format!(
            "fault: node 2 stopped serving:\n{}",
            listed.describe()
        ));
    }
    lines.push(format!(
        "fault: reconnected to node 2: read the partial file (attempts {tries}), put it whole again (attempts {put_tries}), compared"
    ));
    (problems, lines)
}

fn is_running(child: &mut Child) -> bool {
    matches!(child.try_wait(), Ok(None))
}

/// Waits until `path` holds at least `size` bytes; returns the size seen.
fn wait_file_size(path: &Path, size: u64, timeout: Duration) -> u64 {
    let deadline = Instant::now() + timeout;
    loop {
        let len = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if len >= size || Instant::now() >= deadline {
            return len;
        }
        thread::sleep(Duration::from_millis(2));
    }
}

/// Waits until none of `pids` is a live helper; returns how long that took or the ones left.
fn wait_helpers_gone(pids: &BTreeSet<u32>, timeout: Duration) -> Result<Duration, Vec<u32>> {
    let start = Instant::now();
    loop {
        let live: Vec<u32> = cluster::all_helpers()
            .into_iter()
            .map(|p| p.pid)
            .filter(|pid| pids.contains(pid))
            .collect();
        if live.is_empty() {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return Err(live);
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `attempt` until it succeeds or `timeout` passes (a client's reconnect while
/// the cluster recovers from the lost node); returns the last output and attempts.
fn retry(timeout: Duration, mut attempt: impl FnMut() -> Output) -> (Output, usize) {
    let deadline = Instant::now() + timeout;
    let mut tries = 0;
    loop {
        tries += 1;
        let out = attempt();
        if out.success() || Instant::now() >= deadline {
            return (out, tries);
        }
        thread::sleep(Duration::from_millis(500));
    }
}

/// What a killed upload left on disk.
struct Committed {
    len: u64,
    /// Bytes equal to the source's at the same offset.
    matching: u64,
    /// Length of the longest prefix equal to the source's.
    prefix: u64,
    /// Zero bytes where the source has others: writes that never happened.
    unwritten: u64,
}

/// Compares a partial upload with its source: it may be shorter and have holes
/// (writes in flight complete out of order), but every byte must be the source's
/// byte or zero; anything else is damage.
fn committed_bytes(source: &Path, partial: &Path) -> Result<Committed, String> {
    let mut src = File::open(source).map_err(|e| e.to_string())?;
    let mut got = File::open(partial).map_err(|e| format!("{}: {e}", partial.display()))?;
    let src_len = src.metadata().map_err(|e| e.to_string())?.len();
    let len = got.metadata().map_err(|e| e.to_string())?.len();
    if len > src_len {
        return Err(format!("{len} bytes, longer than the source's {src_len}"));
    }
    let mut c = Committed {
        len,
        matching: 0,
        prefix: 0,
        unwritten: 0,
    };
    let mut in_prefix = true;
    let mut a = vec![0u8; MIB as usize];
    let mut b = vec![0u8; MIB as usize];
    let mut offset = 0u64;
    while offset < len {
        let n = (len - offset).min(MIB) as usize;
        src.read_exact(&mut a[..n]).map_err(|e| e.to_string())?;
        got.read_exact(&mut b[..n]).map_err(|e| e.to_string())?;
        for i in 0..n {
            if a[i] == b[i] {
                c.matching += 1;
                if in_prefix {
                    c.prefix += 1;
                }
            } else if b[i] == 0 {
                c.unwritten += 1;
                in_prefix = false;
            } else {
                return Err(format!(
                    "byte {} is {:#04x}, the source has {:#04x}",
                    offset + i as u64,
                    b[i],
                    a[i]
                ));
            }
        }
        offset += n as u64;
    }
    Ok(c)
}

/// After the cluster is stopped only this process (the namespace's init) may be left.
fn check_nothing_left() -> Vec<String> {
    let me = std::process::id();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left: Vec<_> = procs::snapshot()
            .into_iter()
            .filter(|p| p.is_live() && p.pid != me)
            .collect();
        if left.is_empty() {
            return Vec::new();
        }
        if Instant::now() >= deadline {
            return vec![format!(
                "processes left after the cluster stopped: {left:?}"
            )];
        }
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn expected_file_parses() {
    let entries = load_expected();
    for (test, entry) in &entries {
        assert!(!entry.outcomes.is_empty(), "{test}: no outcomes");
    }
}

/// The fault check's judge of a partial upload: a prefix and holes pass, a wrong byte
/// or a longer file does not.
#[test]
fn committed_bytes_judges_partial_files() {
    let dir = std::env::temp_dir().join(format!("aio_fork_committed.{}", std::process::id()));
    fs::create_dir_all(&dir).expect("create dir");
    let source = dir.join("source");
    data::write_random_file(&source, 3 * MIB + 5, 9);
    let full = fs::read(&source).expect("read source");
    let partial = dir.join("partial");

    fs::write(&partial, &full[..MIB as usize + 1]).expect("write");
    let c = committed_bytes(&source, &partial).expect("a prefix is intact");
    assert_eq!((c.len, c.prefix, c.unwritten), (MIB + 1, MIB + 1, 0));

    // A hole: the second MiB never written, the third written.
    let mut holed = full[..3 * MIB as usize].to_vec();
    holed[MIB as usize..2 * MIB as usize].fill(0);
    fs::write(&partial, &holed).expect("write");
    let c = committed_bytes(&source, &partial).expect("holes are not damage");
    assert_eq!(c.prefix, MIB);
    assert!(c.unwritten > MIB - 64 * 1024, "unwritten {}", c.unwritten);

    let mut damaged = full[..2 * MIB as usize].to_vec();
    damaged[12345] ^= 0xff;
    if damaged[12345] == 0 {
        damaged[12345] = 1;
    }
    fs::write(&partial, &damaged).expect("write");
    assert!(
        committed_bytes(&source, &partial).is_err(),
        "a wrong byte must fail"
    );

    let mut longer = full.clone();
    longer.push(1);
    fs::write(&partial, &longer).expect("write");
    assert!(
        committed_bytes(&source, &partial).is_err(),
        "a longer file must fail"
    );
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn nodestatus_parsing() {
    let healthy =
        "Number of nodes:2\npnn:0 127.0.0.1        OK (THIS NODE)\npnn:1 127.0.0.2        OK\n";
    assert!(cluster::nodestatus_all_ok(healthy, 2));
    assert!(!cluster::nodestatus_all_ok(healthy, 3));
    let down = "Number of nodes:2\npnn:0 127.0.0.1        DISCONNECTED|UNHEALTHY|INACTIVE\npnn:1 127.0.0.2        OK (THIS NODE)\n";
    assert!(!cluster::nodestatus_all_ok(down, 2));
    assert_eq!(
        cluster::node_status(down, 0).as_deref(),
        Some("DISCONNECTED|UNHEALTHY|INACTIVE")
    );
    assert_eq!(cluster::node_status(down, 1).as_deref(), Some("OK"));
    assert!(!cluster::nodestatus_all_ok("Number of nodes:2\npnn:0 127.0.0.1        UNHEALTHY (THIS NODE)\npnn:1 127.0.0.2        UNHEALTHY\n", 2));
}

#[test]
fn expected_entries_parse_and_need_reasons() {
    let entries = parse_expected("# c\n\nsmb2.x.y | aio=failure plain=success | why\n");
    assert_eq!(
        entries["smb2.x.y"].allows(AIO, Some(Outcome::Failure)),
        Some(true)
    );
    assert_eq!(
        entries["smb2.x.y"].allows(PLAIN, Some(Outcome::Success)),
        Some(true)
    );
    let no_reason = std::panic::catch_unwind(|| parse_expected("smb2.x.y | aio=failure | \n"));
    assert!(no_reason.is_err());
}

/// The suite comparison fails on a per-node difference and on a stale entry, and
/// accepts a difference that an entry explains.
#[test]
fn suite_comparison_finds_differences() {
    let mut results = SuiteResults::new();
    for pnn in 0..2 {
        for share in [AIO, PLAIN] {
            let mut tests = BTreeMap::new();
            tests.insert("smb2.rw.rw1".to_string(), Outcome::Success);
            // Differs on node 2 only.
            let odd = if pnn == 1 && share == AIO {
                Outcome::Failure
            } else {
                Outcome::Success
            };
            tests.insert("smb2.lock.valid-request".to_string(), odd);
            results.insert((pnn, share.to_string()), tests);
        }
    }
    let none = BTreeMap::new();
    let problems = compare_suites(&results, &none);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("node 2"), "{problems:?}");

    let explained = parse_expected("smb2.rw.rw1 | aio=success plain=success | listed\nsmb2.gone.test | aio=failure | never runs\n");
    let problems = compare_suites(&results, &explained);
    assert!(
        problems
            .iter()
            .any(|p| p.contains("smb2.gone.test did not run")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("smb2.lock.valid-request")),
        "{problems:?}"
    );
    assert_eq!(problems.len(), 2, "{problems:?}");
}
