//! A user's write into a root-owned set-id file: the kernel clears both set-id bits for a
//! writer without CAP_FSETID, so the bits left tell with whose powers the write was done.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use super::python;
use super::run;
use super::smbd::Smbd;
use super::users::User;

const CLIENT_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/clients/privileges_client.py"
);
const TIMEOUT: Duration = Duration::from_secs(120);
const MARK: &[u8] = b"written by a user";

/// `user` writes a few bytes at offset 100 (no truncate) into a 4 KiB root-owned file of
/// mode 6777 on each of `shares` (the first the plain share): the problems found (a write
/// that did not land, bits not cleared, or other modes than the plain share's).
pub fn user_writes_clear_set_id_bits(smbd: &Smbd, user: &User, shares: &[&str]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut modes = Vec::new();
    for share in shares {
        let dir = smbd.share_path(share);
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).expect("chmod share");
        let file = dir.join("setid.bin");
        fs::write(&file, vec![7u8; 4096]).expect("seed file");
        fs::read(&file).expect("cache file");
        fs::set_permissions(&file, fs::Permissions::from_mode(0o6777)).expect("chmod 6777");
        let out = run::run(
            python::command(Path::new(CLIENT_SCRIPT))
                .args(["--share", share, "--user", &user.name])
                .args(["--password", &user.password, "--file", "setid.bin"])
                .arg("--conf")
                .arg(&smbd.conf),
            TIMEOUT,
        );
        let mode = fs::metadata(&file).expect("stat").mode() & 0o7777;
        let content = fs::read(&file).expect("read back");
        println!(
            "{share}: write at offset 100 as {}: {} -> mode {mode:o}, {} bytes",
            user.name,
            out.stdout.trim(),
            content.len()
        );
        if out.stdout.trim() != "OK" || content.len() != 4096 || &content[100..117] != MARK {
            problems.push(format!(
                "{share}: the write did not land:\n{}",
                out.describe()
            ));
        }
        modes.push((share, mode));
    }
    let (plain, plain_mode) = modes[0];
    for (share, mode) in &modes {
        if *mode != plain_mode || mode & 0o6000 != 0 {
            problems.push(format!(
                "set-id bits after a user's write: {plain} {plain_mode:o}, {share} {mode:o} \
                 (all must be cleared)"
            ));
        }
    }
    problems
}
