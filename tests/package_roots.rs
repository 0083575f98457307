//! The Debian package on the other Debian releases: built once here (on the host, as
//! `scripts/build-deb.sh` does for admins), then installed, used and removed inside the
//! root file systems of Debian 13 (Samba 4.22.11), trixie-backports (4.24.7) and sid
//! (4.25.1) by `scripts/testing/deb-in-samba-root.sh` (an overlay on the cached tree, in private
//! namespaces: the tree stays as it is). Each run must install with the release's own
//! dpkg and dependencies, divert the C module, serve a 9 MiB put/get through helpers,
//! and on removal give the C module back byte for byte.

use std::process::Command;

const BUILD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/build-deb.sh");
const IN_ROOT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/scripts/testing/deb-in-samba-root.sh"
);
const RELEASES: &[&str] = &["4.22.11", "4.24.7", "4.25.1"];

#[test]
fn deb_installs_serves_and_removes_in_other_releases() {
    let out = Command::new(BUILD).output().expect("run build-deb.sh");
    assert!(
        out.status.success(),
        "build-deb.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let deb = stdout
        .lines()
        .last()
        .expect("build-deb.sh names the .deb")
        .trim();

    let mut failures = Vec::new();
    for release in RELEASES {
        let out = Command::new(IN_ROOT)
            .args([release, deb])
            .output()
            .expect("run deb-in-samba-root.sh");
        print!("{}", String::from_utf8_lossy(&out.stdout));
        if !out.status.success() {
            failures.push(format!(
                "{release}: {}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
