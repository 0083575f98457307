//! Writes done in smbd with `pwritev2(RWF_NOWAIT)` where the kernel can do them at once.
//!
//! Shares on loop-mounted XFS (which does buffered NOWAIT writes into cached pages) and on
//! the test's ext4 (which refuses them), a plain and an aio_fork share on each. A user
//! (alice) overwrites a cached 1 MiB file with seeded random 4 KiB writes on every share:
//! - the files end byte for byte alike on all four shares;
//! - on XFS the aio share did the writes in smbd (`inline_pwrites`), on ext4 its helpers
//!   did them all (the first write learns EOPNOTSUPP and the share stops trying);
//! - the kernel's rules are the plain share's: her write at offset 100 into a root-owned
//!   mode-6777 file clears both set-id bits on XFS too (NOWAIT refuses a write that must
//!   clear them, and a helper running as her does it).

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::data;
use common::images;
use common::namespace::{run_in_namespace, NsContext};
use common::python;
use common::run;
use common::setid;
use common::smbd::SmbdBuilder;
use common::stats;
use common::users::{self, User};

const MIB: u64 = 1 << 20;
const TIMEOUT: Duration = Duration::from_secs(120);
const FILE_SIZE: u64 = MIB;
const WRITES: usize = 256;
const WRITES_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/clients/random_writes.py"
);
/// Share, its module, and whether it lives on XFS.
const SHARES: [(&str, bool, bool); 4] = [
    ("plain_xfs", false, true),
    ("aio_xfs", true, true),
    ("plain_ext4", false, false),
    ("aio_ext4", true, false),
];

#[test]
fn inline_writes_on_xfs_only() {
    run_in_namespace("inline_writes_on_xfs_only", TIMEOUT * 3, inline_writes);
}

fn inline_writes(ctx: &NsContext) {
    python::check();
    let alice = users::add_unix_users(&ctx.workdir, &["alice"]).remove(0);
    let mut builder = SmbdBuilder::without_shares(&ctx.workdir);
    for (share, aio, _) in SHARES {
        let options: &[(&str, &str)] = if aio {
            &[("vfs objects", "aio_fork")]
        } else {
            &[]
        };
        builder = builder.share(share, options);
    }
    let smbd = builder.start();
    users::add_smb_user(&smbd, &alice);

    let source = ctx.workdir.join("source.bin");
    data::write_random_file(&source, FILE_SIZE, 9);
    for (share, _, xfs) in SHARES {
        let dir = smbd.share_path(share);
        if xfs {
            let image = ctx.workdir.join(format!("{share}.xfs"));
            images::loop_mount(&image, 512 * MIB, &["mkfs.xfs", "-q", "-f"], &dir);
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).expect("chmod share");
        let file = dir.join("file.bin");
        fs::copy(&source, &file).expect("seed file");
        std::os::unix::fs::chown(&file, Some(alice.uid), Some(alice.gid)).expect("chown");
        // Read once so that its pages are cached (as a file in use would be).
        fs::read(&file).expect("cache file");
    }

    let mut problems = Vec::new();
    for (share, _, _) in SHARES {
        let out = run::run(
            client(&alice, share, &smbd.conf, WRITES_SCRIPT)
                .args(["--file", "file.bin", "--size", &FILE_SIZE.to_string()])
                .args(["--writes", &WRITES.to_string(), "--seed", "3"]),
            TIMEOUT,
        );
        let line = out.stdout.trim().to_string();
        println!("{share}: {line}");
        if !line.contains(&format!("\"writes\": {WRITES}")) || !line.contains("\"error\": null") {
            problems.push(format!(
                "{share}: random writes failed:\n{}",
                out.describe()
            ));
        }
    }
    let expected = smbd.share_path("plain_ext4").join("file.bin");
    for (share, _, _) in SHARES {
        if let Err(e) = data::compare_files(&expected, &smbd.share_path(share).join("file.bin")) {
            problems.push(format!("{share} differs from plain_ext4: {e}"));
        }
    }
    problems.extend(setid::user_writes_clear_set_id_bits(
        &smbd,
        &alice,
        &["plain_xfs", "aio_xfs"],
    ));

    smbd.wait_idle(TIMEOUT);
    for (share, _, xfs) in SHARES.into_iter().filter(|(_, aio, _)| *aio) {
        let s = stats::total_for(&smbd.stats(), share);
        let inline = s.other("inline_pwrites");
        println!(
            "stats {share}: pwrites={} inline_pwrites={inline} spawned={}",
            s.pwrites, s.spawned
        );
        let ok = if xfs {
            // A few may be refused (EAGAIN: a page under writeback) and go to a helper.
            s.pwrites >= WRITES as u64 && inline * 10 >= s.pwrites * 9
        } else {
            s.pwrites >= WRITES as u64 && inline == 0 && s.spawned > 0
        };
        if !ok {
            problems.push(format!(
                "{share}: pwrites={} inline_pwrites={inline} spawned={}: want {}",
                s.pwrites,
                s.spawned,
                if xfs {
                    "at least 90% done in smbd"
                } else {
                    "none in smbd, helpers doing them"
                }
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn client(alice: &User, share: &str, conf: &Path, script: &str) -> std::process::Command {
    let mut cmd = python::command(Path::new(script));
    cmd.args(["--share", share, "--user", &alice.name])
        .args(["--password", &alice.password])
        .arg("--conf")
        .arg(conf);
    cmd
}
