//! A Samba release the build has no table for (here 4.26) must be refused: smbd's log
//! gets one line naming the release and the known range, the module's share cannot be
//! connected, and the rest of smbd keeps serving.
//!
//! smbd is made to report 4.26 by an LD_PRELOADed `samba_version_string()` (a one-line C
//! file compiled here): the module asks that function, through the process's symbol
//! table, which release it runs in.

mod common;

use std::fs;
use std::process::Command;
use std::time::Duration;

use common::client;
use common::namespace::{run_in_namespace, NsContext};
use common::smbd::SmbdBuilder;

const FAKE_VERSION: &str = "4.26.0-aio-fork-test";
const TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn unknown_release_is_refused_and_named() {
    run_in_namespace(
        "unknown_release_is_refused_and_named",
        Duration::from_secs(5 * 60),
        run,
    );
}

fn run(ctx: &NsContext) {
    let source = ctx.workdir.join("version.c");
    let shim = ctx.workdir.join("version.so");
    fs::write(
        &source,
        format!("const char *samba_version_string(void) {{ return \"{FAKE_VERSION}\"; }}\n"),
    )
    .expect("write shim source");
    let out = Command::new("gcc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&shim)
        .arg(&source)
        .output()
        .expect("gcc (apt-get install gcc)");
    assert!(
        out.status.success(),
        "gcc: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let smbd = SmbdBuilder::without_shares(&ctx.workdir)
        .share("plain", &[])
        .share("aio", &[("vfs objects", "aio_fork")])
        .env("LD_PRELOAD", shim.to_str().expect("utf-8 path"))
        .start();

    let aio = client::smbclient(&smbd, "aio", "ls", TIMEOUT);
    assert!(
        !aio.success(),
        "the aio_fork share must not be usable on an unknown release:\n{}",
        aio.combined()
    );
    assert!(
        aio.combined().contains("NT_STATUS_BAD_NETWORK_NAME"),
        "tree connect should fail as smbd does for a module that does not load:\n{}",
        aio.combined()
    );
    let plain = client::smbclient(&smbd, "plain", "ls", TIMEOUT);
    assert!(
        plain.success(),
        "the plain share must still work:\n{}",
        plain.combined()
    );

    let want = format!(
        "aio_fork cannot load into Samba {FAKE_VERSION}: this build knows the VFS interfaces \
         of Samba 4.17 to 4.25 only"
    );
    let log = smbd.log_text();
    let lines = log.lines().filter(|l| l.contains(&want)).count();
    assert!(
        lines >= 1,
        "smbd's log should say: {want}\n--- log tail ---\n{}",
        smbd.log_tail(40)
    );
    // One line per attempt to load (smbd tries at each tree connect), not a flood.
    assert!(lines <= 2, "{lines} refusal lines for one tree connect");
}
