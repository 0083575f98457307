//! Helpers for the unit tests.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// An unlinked temporary file (read/write) holding `content`, just written, hence in the
/// page cache. Each call gets its own file, whatever other tests run at the same time.
pub fn temp_file(content: &[u8]) -> std::fs::File {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let path = std::env::temp_dir().join(format!(
        "aio_fork_test_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    f.write_all(content).unwrap();
    f
}
