//! A connection that read a large file and stays connected holds no more memory than
//! before the reads: its smbd process gives freed read buffers back once it is quiet
//! (glibc keeps up to twice the largest freed block in the heap otherwise; see
//! src/pool/heap.rs). Measured on the connection process's anonymous memory
//! (`/proc/PID/smaps_rollup`), the plain share's connection beside it in the same run.

mod common;

use std::fs;
use std::thread;
use std::time::Duration;

use common::client::Session;
use common::data;
use common::module::ModuleKind;
use common::namespace::{run_in_namespace, NsContext};
use common::smbd::SmbdBuilder;

const MIB: u64 = 1 << 20;
const FILE_SIZE: u64 = 64 * MIB;
/// Connections per share, each with its own process: how much a burst leaves in the
/// heap depends on timing, so several are looked at.
const SESSIONS: usize = 4;
/// Gets per connection: each a burst of 8 MiB reads.
const GETS: usize = 2;
/// Longer than the module's quiet time (1 s) before it trims.
const SETTLE: Duration = Duration::from_millis(2500);
/// What one idle connection may hold above its own state before the reads.
const ALLOWED_GROWTH_KIB: u64 = 1024;
const TIMEOUT: Duration = Duration::from_secs(120);

#[test]
fn an_idle_connection_keeps_no_read_buffers() {
    run_in_namespace(
        "an_idle_connection_keeps_no_read_buffers",
        Duration::from_secs(5 * 60),
        check,
    );
}

fn check(ctx: &NsContext) {
    let smbd = SmbdBuilder::new(&ctx.workdir).start();
    for share in ["plain", "aio"] {
        let path = smbd.share_path(share).join("big.bin");
        data::write_random_file(&path, FILE_SIZE, 19);
        // In the page cache: the reads are quick, the buffers the same for both shares.
        let _ = fs::read(&path).expect("read the file into the page cache");
    }
    let mut report = Vec::new();
    let mut idle_total = Vec::new();
    let mut kept = Vec::new();
    for share in ["plain", "aio"] {
        let mut sessions: Vec<Session> = (0..SESSIONS)
            .map(|_| Session::open(&smbd, share, TIMEOUT))
            .collect();
        thread::sleep(SETTLE);
        let before: Vec<u64> = sessions
            .iter()
            .map(|s| anonymous_kib(s.server_pid))
            .collect();
        for session in &mut sessions {
            for _ in 0..GETS {
                let lines = session.run("get big.bin /dev/null", TIMEOUT);
                let failed = lines.iter().any(|l| l.contains("NT_STATUS_"));
                if share == "aio" && ctx.module.kind == ModuleKind::SambaC {
                    // Samba's C module fails requests over 128 KiB (SMB2 reads are 8 MiB).
                    assert!(failed, "the C module served an 8 MiB read: {lines:?}");
                    return;
                }
                assert!(!failed, "get on {share} failed: {lines:?}");
            }
        }
        thread::sleep(SETTLE);
        let after: Vec<u64> = sessions
            .iter()
            .map(|s| anonymous_kib(s.server_pid))
            .collect();
        report.push(format!(
            "{share}: anonymous KiB of {SESSIONS} connections before {GETS} gets of {} MiB \
             each: {before:?}, idle after: {after:?}",
            FILE_SIZE / MIB
        ));
        idle_total.push(after.iter().sum::<u64>());
        if share == "aio" {
            kept = before
                .iter()
                .zip(&after)
                .map(|(b, a)| a.saturating_sub(*b))
                .collect();
        }
        for session in sessions {
            session.close(TIMEOUT);
        }
    }
    let report = report.join("\n  ");
    println!("idle memory of the connection processes:\n  {report}");
    assert!(
        kept.iter().all(|&k| k <= ALLOWED_GROWTH_KIB),
        "aio connections kept {kept:?} KiB after their reads (allowed {ALLOWED_GROWTH_KIB} \
         each):\n  {report}"
    );
    let allowed_total = idle_total[0] + ALLOWED_GROWTH_KIB * SESSIONS as u64;
    assert!(
        idle_total[1] <= allowed_total,
        "the idle aio connections hold more than the plain ones (+{ALLOWED_GROWTH_KIB} KiB \
         each):\n  {report}"
    );
}

/// `Anonymous:` of `/proc/PID/smaps_rollup`: the process's private and copy-on-write
/// memory (its heap among it), in KiB.
fn anonymous_kib(pid: u32) -> u64 {
    let text = fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_else(|e| panic!("smaps_rollup of {pid}: {e}"));
    text.lines()
        .find_map(|l| l.strip_prefix("Anonymous:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("Anonymous: line")
}
