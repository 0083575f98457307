//! The module stacked with Samba's other VFS modules, above and below them: streams_xattr,
//! acl_xattr, fruit (with catia and streams_xattr, as macOS shares use it), and from Samba
//! 4.24 on aio_ratelimit above it (`vfs objects = aio_ratelimit aio_fork`). On every such
//! share a put and a get must come back byte for byte, and the module's counters must show
//! that its helpers did the reads and writes (inline cached reads off, so every read goes
//! to a helper). On the aio_ratelimit share the limit must also be felt: a 16 MiB put at
//! 4 MiB/s cannot finish in under 2 s (it takes ~0.1 s unlimited).

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::client;
use common::data;
use common::namespace::{run_in_namespace, NsContext};
use common::samba_root;
use common::smbd::SmbdBuilder;
use common::stats;

const MIB: u64 = 1 << 20;
const SIZE: u64 = 9 * MIB + 5;
const RATELIMITED_SIZE: u64 = 16 * MIB;
const TIMEOUT: Duration = Duration::from_secs(120);

/// Share name and its `vfs objects`.
const STACKS: &[(&str, &str)] = &[
    ("streams_above", "streams_xattr aio_fork"),
    ("streams_below", "aio_fork streams_xattr"),
    ("acl_above", "acl_xattr aio_fork"),
    ("acl_below", "aio_fork acl_xattr"),
    ("fruit_above", "catia fruit streams_xattr aio_fork"),
    ("fruit_below", "aio_fork catia fruit streams_xattr"),
];
const RATELIMIT_SHARE: &str = "ratelimit";

#[test]
fn stacked_modules() {
    run_in_namespace("stacked_modules", Duration::from_secs(10 * 60), run);
}

/// aio_ratelimit ships with Samba 4.24 and later (the host's 4.17 has none).
fn has_ratelimit() -> bool {
    samba_root::release()
        .and_then(|r| r.strip_prefix("4.").and_then(|m| m.parse::<u32>().ok()))
        .is_some_and(|minor| minor >= 24)
}

fn run(ctx: &NsContext) {
    let mut builder = SmbdBuilder::without_shares(&ctx.workdir);
    let mut shares: Vec<&str> = Vec::new();
    for (name, objects) in STACKS {
        builder = builder.share(
            name,
            &[
                ("vfs objects", objects),
                ("aio_fork:inline cached reads", "no"),
            ],
        );
        shares.push(name);
    }
    if has_ratelimit() {
        builder = builder.share(
            RATELIMIT_SHARE,
            &[
                ("vfs objects", "aio_ratelimit aio_fork"),
                ("aio_ratelimit:read_bw_limit", "4M"),
                ("aio_ratelimit:write_bw_limit", "4M"),
                ("aio_fork:inline cached reads", "no"),
            ],
        );
        shares.push(RATELIMIT_SHARE);
    } else {
        println!("this Samba has no aio_ratelimit (4.24 and later): that share is not set up");
    }
    let smbd = builder.start();

    let mut problems = Vec::new();
    for share in &shares {
        let size = if *share == RATELIMIT_SHARE {
            RATELIMITED_SIZE
        } else {
            SIZE
        };
        let source = ctx.workdir.join(format!("src_{share}"));
        data::write_random_file(&source, size, 7);

        let started = Instant::now();
        let put = client::put(&smbd, share, &source, "put.bin", TIMEOUT);
        let put_time = started.elapsed();
        if let Err(e) = data::compare_files(&source, &smbd.share_path(share).join("put.bin")) {
            problems.push(format!("{share}: put: {e}\n{}", put.describe()));
        }
        fs::copy(&source, smbd.share_path(share).join("get.bin")).expect("seed file");
        let back = ctx.workdir.join(format!("back_{share}"));
        let get = client::get(&smbd, share, "get.bin", &back, TIMEOUT);
        if let Err(e) = data::compare_files(&source, &back) {
            problems.push(format!("{share}: get: {e}\n{}", get.describe()));
        }
        println!("{share}: put of {size} bytes in {put_time:.2?}");
        if *share == RATELIMIT_SHARE && put_time < Duration::from_secs(2) {
            problems.push(format!(
                "{share}: {size} bytes put in {put_time:.2?} at a 4 MiB/s write limit: \
                 aio_ratelimit did not act"
            ));
        }
    }

    smbd.wait_idle(Duration::from_secs(60));
    let all = smbd.stats();
    for share in &shares {
        let total = stats::total_for(&all, share);
        let size = if *share == RATELIMIT_SHARE {
            RATELIMITED_SIZE
        } else {
            SIZE
        };
        println!(
            "stats {share}: pwrite_bytes={} pread_bytes={} spawned={} inline_preads={}",
            total.pwrite_bytes,
            total.pread_bytes,
            total.spawned,
            total.other("inline_preads")
        );
        if total.pwrite_bytes < size || total.pread_bytes < size || total.spawned == 0 {
            problems.push(format!(
                "{share}: helpers wrote {} and read {} bytes (spawned {}), expected each >= \
                 {size}: the module was not in the path",
                total.pwrite_bytes, total.pread_bytes, total.spawned
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} problem(s):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}
