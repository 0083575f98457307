//! Small file systems for shares: an image file made with `mkfs.<kind>` and loop-mounted
//! inside the test's private mount namespace (gone with it).

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::run;

const TIMEOUT: Duration = Duration::from_secs(120);

/// Makes a sparse `size`-byte image at `image` with `mkfs` (program and options, the
/// image path is appended) and mounts it on `dir`.
pub fn loop_mount(image: &Path, size: u64, mkfs: &[&str], dir: &Path) {
    let f = fs::File::create(image).expect("image");
    f.set_len(size).expect("size image");
    let made = run::run(Command::new(mkfs[0]).args(&mkfs[1..]).arg(image), TIMEOUT);
    assert!(
        made.success(),
        "{} (apt-get install xfsprogs for mkfs.xfs):\n{}",
        mkfs.join(" "),
        made.describe()
    );
    let mount = run::run(
        Command::new("mount")
            .args(["-o", "loop"])
            .arg(image)
            .arg(dir),
        TIMEOUT,
    );
    assert!(mount.success(), "mount -o loop:\n{}", mount.describe());
}
