//! A copy onto the share with 128 KiB requests (`smb2 max write = 131072`): smbclient keeps
//! many writes of the file in flight, and the aio share writes those that continue one
//! another in one helper write each (`gathered_pwrites` in its stats line). The file lands
//! byte for byte as on the plain share, and the stats line accounts for every write.

mod common;

use std::time::Duration;

use common::client;
use common::data;
use common::module::ModuleKind;
use common::namespace::{run_in_namespace, NsContext};
use common::smbd::SmbdBuilder;
use common::stats;

const MIB: u64 = 1 << 20;
const REQUEST: u64 = 128 << 10;
const SIZE: u64 = 64 * MIB;
const TIMEOUT: Duration = Duration::from_secs(120);

#[test]
fn gathered_writes() {
    run_in_namespace("gathered_writes", TIMEOUT * 3, gathered);
}

fn gathered(ctx: &NsContext) {
    let smbd = SmbdBuilder::without_shares(&ctx.workdir)
        .global("smb2 max write", &REQUEST.to_string())
        .share("plain", &[])
        .share("aio", &[("vfs objects", "aio_fork")])
        .start();
    let source = ctx.workdir.join("source.bin");
    data::write_random_file(&source, SIZE, 7);
    let mut problems = Vec::new();
    for share in ["plain", "aio"] {
        let out = client::put(&smbd, share, &source, "copy.bin", TIMEOUT);
        let landed = smbd.share_path(share).join("copy.bin");
        match data::compare_files(&source, &landed) {
            Ok(()) => println!(
                "put {share}: identical ({:.2} s)",
                out.elapsed.as_secs_f64()
            ),
            Err(e) => problems.push(format!("put {share}: {e}\n{}", out.describe())),
        }
    }
    smbd.wait_idle(TIMEOUT);
    if ctx.module.kind == ModuleKind::Rust {
        let s = stats::total_for(&smbd.stats(), "aio");
        let gathered = s.other("gathered_pwrites");
        println!(
            "stats aio: pwrites={} pwrite_bytes={} gathered_pwrites={gathered}",
            s.pwrites, s.pwrite_bytes
        );
        let writes = SIZE / REQUEST;
        if s.pwrites < writes || s.pwrite_bytes < SIZE {
            problems.push(format!(
                "aio: pwrites={} pwrite_bytes={}, expected at least {writes} and {SIZE}",
                s.pwrites, s.pwrite_bytes
            ));
        }
        // Each gathered write is also one of `pwrites`; most of a copy's writes follow
        // one in flight.
        if gathered == 0 || gathered > s.pwrites {
            problems.push(format!(
                "aio: gathered_pwrites={gathered} of pwrites={}: expected some, at most all",
                s.pwrites
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
