//! smbclient put and get of files from empty to 256 MiB through the aio_fork shares
//! (and the `plain` share, as the reference), compared byte for byte on disk; and
//! proof that the aio shares' I/O went through helpers.
//!
//! Our module serves reads already in the page cache at once in smbd
//! (`aio_fork:inline cached reads`, default yes, off in erratic mode), so reads are
//! proven to go through helpers on `aio_erratic` and on `aio_noinline`; `aio` keeps
//! the default.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::client::{self, Session};
use common::data;
use common::module::ModuleKind;
use common::namespace::{run_in_namespace, NsContext};
use common::procs;
use common::run::Output;
use common::smbd::{Smbd, SmbdBuilder};
use common::stats;

const MIB: u64 = 1 << 20;
/// Empty, one byte, one page less one, just over the C module's 128 KiB limit, just
/// over SMB2's 8 MiB maximum request, and large.
const SIZES: [u64; 6] = [0, 1, 4095, 128 * 1024 + 1, 8 * MIB + 3, 256 * MIB];
const SHARES: [&str; 4] = ["plain", "aio", "aio_erratic", "aio_noinline"];
/// Shares on which every read must reach a helper.
const NO_INLINE_SHARES: [&str; 2] = ["aio_erratic", "aio_noinline"];
/// Samba's C module fails any request larger than this.
const C_MODULE_MAX_REQUEST: u64 = 128 * 1024;
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(300);
/// The file the session check downloads while it watches the helpers.
const SESSION_FILE_SIZE: u64 = 4095;

#[test]
fn transfers_round_trip_byte_for_byte() {
    run_in_namespace(
        "transfers_round_trip_byte_for_byte",
        Duration::from_secs(20 * 60),
        run_all,
    );
}

fn run_all(ctx: &NsContext) {
    let kind = ctx.module.kind;
    let smbd = SmbdBuilder::new(&ctx.workdir)
        .share(
            "aio_noinline",
            &[
                ("vfs objects", "aio_fork"),
                ("aio_fork:inline cached reads", "no"),
            ],
        )
        .start();
    let sources = make_sources(&ctx.workdir);
    let mut problems = Vec::new();
    for share in SHARES {
        for (size, source) in SIZES.iter().zip(&sources) {
            let expect_ok = expect_success(kind, share, *size);
            let put = check_put(&smbd, share, source, *size);
            problems.extend(judge("put", share, *size, expect_ok, put));
            let get = check_get(&smbd, share, source, *size, &ctx.workdir);
            problems.extend(judge("get", share, *size, expect_ok, get));
        }
        problems.extend(check_session_helpers(&smbd, share, kind, &ctx.workdir));
        remove_share_files(&smbd, share);
    }
    smbd.wait_idle(Duration::from_secs(60));
    if kind == ModuleKind::Rust {
        problems.extend(check_stats(&smbd));
    }
    assert!(
        problems.is_empty(),
        "{} problem(s) (module kind {}):\n  {}",
        problems.len(),
        kind.as_str(),
        problems.join("\n  ")
    );
}

/// Our module must serve every size; Samba's C module fails requests over 128 KiB
/// (a known limit, checked so the harness is seen to notice a broken transfer).
fn expect_success(kind: ModuleKind, share: &str, size: u64) -> bool {
    share == "plain" || kind == ModuleKind::Rust || size <= C_MODULE_MAX_REQUEST
}

fn make_sources(workdir: &Path) -> Vec<PathBuf> {
    let dir = workdir.join("sources");
    fs::create_dir_all(&dir).expect("create sources dir");
    SIZES
        .iter()
        .map(|&size| {
            let path = dir.join(format!("src_{size}.bin"));
            // A distinct seed per size: files cannot be mistaken for one another.
            data::write_random_file(&path, size, size + 1);
            path
        })
        .collect()
}

/// Uploads `source` and compares the file smbd wrote with it.
fn check_put(smbd: &Smbd, share: &str, source: &Path, size: u64) -> Result<Output, String> {
    let remote = format!("put_{size}.bin");
    let out = client::put(smbd, share, source, &remote, TRANSFER_TIMEOUT);
    let on_disk = smbd.share_path(share).join(&remote);
    match data::compare_files(source, &on_disk) {
        Ok(()) => Ok(out),
        Err(e) => Err(format!("{e}\n{}", out.describe())),
    }
}

/// Places `source` in the share behind smbd's back, downloads it, compares.
fn check_get(
    smbd: &Smbd,
    share: &str,
    source: &Path,
    size: u64,
    workdir: &Path,
) -> Result<Output, String> {
    let remote = format!("get_{size}.bin");
    fs::copy(source, smbd.share_path(share).join(&remote)).expect("seed file in share");
    let local = workdir.join(format!("back_{share}_{size}.bin"));
    let out = client::get(smbd, share, &remote, &local, TRANSFER_TIMEOUT);
    let result = data::compare_files(source, &local);
    let _ = fs::remove_file(&local);
    match result {
        Ok(()) => Ok(out),
        Err(e) => Err(format!("{e}\n{}", out.describe())),
    }
}

/// Prints the transfer's outcome; returns a problem if it is not the expected one.
fn judge(
    op: &str,
    share: &str,
    size: u64,
    expect_ok: bool,
    result: Result<Output, String>,
) -> Option<String> {
    match (result, expect_ok) {
        (Ok(out), true) => {
            let secs = out.elapsed.as_secs_f64();
            let rate = size as f64 / MIB as f64 / secs.max(1e-6);
            println!("{op} {share} {size} bytes: identical ({secs:.2} s, {rate:.0} MiB/s)");
            None
        }
        (Err(e), false) => {
            let first = e.lines().next().unwrap_or_default();
            println!("{op} {share} {size} bytes: fails, as expected of this module ({first})");
            None
        }
        (Ok(_), false) => Some(format!(
            "{op} {share} {size} bytes: identical, but this module is expected to fail it \
             (Samba's C module limit; has the module changed?)"
        )),
        (Err(e), true) => Some(format!("{op} {share} {size} bytes: {e}")),
    }
}

/// Holds one connection open after a small upload and download and looks at its
/// helpers: the aio shares' connection process must have at least one (writes always
/// go to helpers), the plain share's none.
fn check_session_helpers(
    smbd: &Smbd,
    share: &str,
    kind: ModuleKind,
    workdir: &Path,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut session = Session::open(smbd, share, Duration::from_secs(60));
    let source = workdir
        .join("sources")
        .join(format!("src_{SESSION_FILE_SIZE}.bin"));
    let local = workdir.join(format!("session_{share}.bin"));
    session.run(
        &format!("put {} session.bin", source.display()),
        TRANSFER_TIMEOUT,
    );
    session.run(
        &format!("get session.bin {}", local.display()),
        TRANSFER_TIMEOUT,
    );
    let on_disk = smbd.share_path(share).join("session.bin");
    for copy in [&on_disk, &local] {
        if let Err(e) = data::compare_files(&source, copy) {
            problems.push(format!("session put/get on {share}: {e}"));
        }
    }
    let helpers = procs::helpers_of(session.server_pid, smbd.pid(), kind);
    println!(
        "{share}: connection process {} has {} helper(s) after a put and a get",
        session.server_pid,
        helpers.len()
    );
    let is_aio = share != "plain";
    if is_aio && helpers.is_empty() {
        problems.push(format!(
            "{share}: no helper process under the connection process {} after a put",
            session.server_pid
        ));
    }
    if !is_aio && !helpers.is_empty() {
        problems.push(format!("{share}: unexpected helper processes {helpers:?}"));
    }
    let closed = session.close(Duration::from_secs(30));
    if !closed.success() {
        problems.push(format!(
            "{share}: session did not quit cleanly\n{}",
            closed.describe()
        ));
    }
    problems
}

fn remove_share_files(smbd: &Smbd, share: &str) {
    let dir = smbd.share_path(share);
    for entry in fs::read_dir(&dir).expect("read share dir").flatten() {
        let _ = fs::remove_file(entry.path());
    }
}

/// Our module's tree-disconnect lines must account for every byte put and got
/// through the aio shares, and show helpers spawned; plain has no line.
fn check_stats(smbd: &Smbd) -> Vec<String> {
    let all = smbd.stats();
    let total_bytes: u64 = SIZES.iter().sum();
    let mut problems = Vec::new();
    for share in SHARES {
        let total = stats::total_for(&all, share);
        println!("stats {share}: {total:?}");
        if share == "plain" {
            if total.lines != 0 {
                problems.push(format!(
                    "plain: {} stats line(s), expected none",
                    total.lines
                ));
            }
            continue;
        }
        if total.pwrite_bytes < total_bytes || total.pread_bytes < total_bytes {
            problems.push(format!(
                "{share}: stats show pwrite_bytes={} pread_bytes={}, expected each >= {} \
                 (every byte put and got)",
                total.pwrite_bytes, total.pread_bytes, total_bytes
            ));
        }
        if total.spawned == 0 {
            problems.push(format!("{share}: stats show no helper spawned"));
        }
        let inline = total.other("inline_preads");
        if NO_INLINE_SHARES.contains(&share) && inline != 0 {
            problems.push(format!(
                "{share}: {inline} read(s) served inline, expected every read in a helper"
            ));
        }
    }
    problems
}
