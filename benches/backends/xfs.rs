//! A loop-mounted XFS file system for the XFS shares: a sparse image file in the
//! namespace's scratch directory, made with mkfs.xfs and mounted inside the
//! benchmark's private mount namespace (the host never sees the mount; the loop
//! device is released on unmount).
//!
//! Why XFS: it serves `pwritev2(RWF_NOWAIT)` overwrites of cached data without
//! blocking, where ext4 answers EOPNOTSUPP, so a backend that writes small cached
//! overwrites inline can only show it there.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::run;
use crate::common::tools;

const TOOL_TIMEOUT: Duration = Duration::from_secs(120);

/// A mounted XFS image; unmounted on drop.
pub struct XfsMount {
    pub dir: PathBuf,
}

impl XfsMount {
    /// Makes a sparse `size`-byte image at `image`, an XFS file system in it, and
    /// mounts it on `dir`. Err says why (e.g. no xfsprogs, no loop devices).
    pub fn create(image: &Path, dir: &Path, size: u64) -> Result<XfsMount, String> {
        let file = File::create(image).map_err(|e| format!("{}: {e}", image.display()))?;
        file.set_len(size)
            .map_err(|e| format!("sizing {}: {e}", image.display()))?;
        drop(file);
        let mkfs = tools::command("mkfs.xfs")
            .args(["-q", "-f"])
            .arg(image)
            .output()
            .map_err(|e| format!("mkfs.xfs: {e} (install xfsprogs)"))?;
        if !mkfs.status.success() {
            return Err(format!(
                "mkfs.xfs failed: {}",
                String::from_utf8_lossy(&mkfs.stderr).trim()
            ));
        }
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let out = run::run(
            tools::command("mount")
                .args(["-t", "xfs", "-o", "loop"])
                .arg(image)
                .arg(dir),
            TOOL_TIMEOUT,
        );
        if !out.success() {
            return Err(format!("mount -o loop failed: {}", out.describe()));
        }
        Ok(XfsMount {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for XfsMount {
    fn drop(&mut self) {
        let _ = run::run(tools::command("umount").arg(&self.dir), TOOL_TIMEOUT);
    }
}
