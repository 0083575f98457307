//! README's first command, `scripts/demo.sh`, run as an admin runs it: it builds the
//! module (release), serves `//127.0.0.1/demo` with `vfs objects = aio_fork` and checks a
//! 9 MiB round trip itself. Then, independently of the script's own check:
//! - a client of the test's puts and gets a file through the demo share and through a
//!   plain share of the test's own smbd: both byte for byte the source, and the demo
//!   share's file on disk too;
//! - the demo smbd's stats lines show that the module's helpers wrote those bytes;
//! - `scripts/demo.sh stop` ends the demo smbd and its port is closed.
//!
//! Runs in a private namespace (the demo's port 4445 on a private loopback; its smbd,
//! started with setsid, dies with the namespace at the latest). Where the demo's user
//! is not an account yet, the test makes it inside the namespace only, so the script's
//! `useradd` is not reached and the host's accounts are untouched.

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::data;
use common::namespace::{run_in_namespace, NsContext};
use common::run;
use common::smbd::SmbdBuilder;
use common::stats;
use common::{client, faults, tools, users};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// The demo builds the module with `cargo build --release`: on a fresh machine that is
/// a full release build.
const DEMO_TIMEOUT: Duration = Duration::from_secs(20 * 60);
const TIMEOUT: Duration = Duration::from_secs(120);
const PORT: u16 = 4445;
const USER: &str = "aiofork";
const PASSWORD: &str = "aiofork-demo";
/// Larger than one 8 MiB SMB2 request, so the put goes in several pieces.
const FILE_SIZE: u64 = 20 * (1 << 20) + 5;

#[test]
fn demo_serves_its_share() {
    run_in_namespace("demo_serves_its_share", DEMO_TIMEOUT + TIMEOUT, demo);
}

fn demo(ctx: &NsContext) {
    if !user_exists(USER) {
        users::add_unix_users(&ctx.workdir, &[USER]);
    }
    let demo_dir = ctx.workdir.join("d");
    let started = Instant::now();
    let out = demo_script(&demo_dir, &[], DEMO_TIMEOUT);
    assert!(out.success(), "scripts/demo.sh failed:\n{}", out.describe());
    let said = out.combined();
    for line in [
        "demo: 9 MiB put/get through the module's helpers: identical bytes".to_string(),
        format!("demo: serving //127.0.0.1/demo on port {PORT} with vfs objects = aio_fork"),
    ] {
        assert!(
            said.contains(&line),
            "demo.sh did not say {line:?}:\n{said}"
        );
    }
    println!(
        "demo.sh: served the demo share after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let demo_pid: u32 = std::fs::read_to_string(demo_dir.join("smbd.pid"))
        .expect("demo.sh writes smbd.pid")
        .trim()
        .parse()
        .expect("a pid in smbd.pid");

    let source = ctx.workdir.join("source.bin");
    data::write_random_file(&source, FILE_SIZE, 31);
    let demo_copy = round_trip_demo(&source, &ctx.workdir);
    let plain_copy = round_trip_plain(&source, &ctx.workdir);
    for (share, copy) in [("demo", &demo_copy), ("plain", &plain_copy)] {
        data::compare_files(&source, copy)
            .unwrap_or_else(|e| panic!("get through the {share} share: {e}"));
    }
    data::compare_files(&source, &demo_dir.join("share/test.bin"))
        .unwrap_or_else(|e| panic!("the demo share's file on disk: {e}"));

    // The script's own 9 MiB + 3 put, then ours.
    let written = 9 * (1 << 20) + 3 + FILE_SIZE;
    let total = demo_stats_reaching(&demo_dir, written, Duration::from_secs(10));
    println!("demo share stats (all its tree connects): {total:?}");
    assert!(
        total.pwrite_bytes >= written && total.spawned >= 1,
        "the demo share's helpers wrote {} bytes (spawned {}), expected at least {written}",
        total.pwrite_bytes,
        total.spawned
    );

    let out = demo_script(&demo_dir, &["stop"], TIMEOUT);
    assert!(out.success(), "demo.sh stop failed:\n{}", out.describe());
    let gone = faults::wait_all_dead(&[demo_pid], Duration::from_secs(10));
    assert!(
        gone.is_ok(),
        "demo smbd {demo_pid} still there after demo.sh stop"
    );
    assert!(
        port_closed_within(Duration::from_secs(10)),
        "port {PORT} still open after demo.sh stop"
    );
    println!("demo.sh stop: smbd {demo_pid} gone, port {PORT} closed");
}

/// The demo share's stats summed over its tree disconnects, once their `pwrite_bytes`
/// reach `bytes` or at `deadline`: a connection process logs its line as it ends, which
/// may be a moment after its client has exited.
fn demo_stats_reaching(demo_dir: &Path, bytes: u64, deadline: Duration) -> stats::Stats {
    let until = Instant::now() + deadline;
    loop {
        let log = std::fs::read_to_string(demo_dir.join("log.smbd")).expect("the demo's log");
        let total = stats::total_for(&stats::at_disconnect(&stats::parse_log(&log)), "demo");
        if total.pwrite_bytes >= bytes || Instant::now() >= until {
            return total;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Whether `name` is an account already (a machine where the demo ran before).
fn user_exists(name: &str) -> bool {
    run::run(tools::command("id").arg(name), TIMEOUT).success()
}

/// Runs `scripts/demo.sh <args>` with its state under `demo_dir`.
fn demo_script(demo_dir: &Path, args: &[&str], timeout: Duration) -> run::Output {
    let mut cmd = Command::new(Path::new(REPO).join("scripts/demo.sh"));
    cmd.args(args)
        .current_dir(REPO)
        .env("DEMO_DIR", demo_dir)
        .env("DEMO_PORT", PORT.to_string())
        // smbd, smbpasswd, useradd: a PATH under `cargo test` may lack the sbin directories.
        .env("PATH", tools::search_path());
    run::run(&mut cmd, timeout)
}

/// Puts `source` on the demo share as test.bin and gets it back; returns the copy.
fn round_trip_demo(source: &Path, workdir: &Path) -> PathBuf {
    let copy = workdir.join("from_demo.bin");
    let commands = format!(
        "put {} test.bin; get test.bin {}",
        source.display(),
        copy.display()
    );
    let out = run::run(
        tools::command("smbclient")
            .args(["-p", &PORT.to_string(), "//127.0.0.1/demo", "-U"])
            .arg(format!("{USER}%{PASSWORD}"))
            .arg("-c")
            .arg(&commands),
        TIMEOUT,
    );
    assert!(
        out.success(),
        "smbclient on the demo share:\n{}",
        out.describe()
    );
    copy
}

/// The same round trip through a plain share of the test's own smbd.
fn round_trip_plain(source: &Path, workdir: &Path) -> PathBuf {
    let smbd = SmbdBuilder::without_shares(workdir)
        .share("plain", &[])
        .start();
    let copy = workdir.join("from_plain.bin");
    let out = client::put(&smbd, "plain", source, "test.bin", TIMEOUT);
    assert!(out.success(), "put on the plain share:\n{}", out.describe());
    let out = client::get(&smbd, "plain", "test.bin", &copy, TIMEOUT);
    assert!(out.success(), "get on the plain share:\n{}", out.describe());
    copy
}

fn port_closed_within(deadline: Duration) -> bool {
    let until = Instant::now() + deadline;
    while Instant::now() < until {
        if TcpStream::connect(("127.0.0.1", PORT)).is_err() {
            return true;
        }
        thread::sleep(Duration::from_millis(50));
    }
    false
}
