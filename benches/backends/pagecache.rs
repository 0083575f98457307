//! Keeping the page cache the same for every backend's run.
//!
//! A sequential write lands in the page cache; how fast it goes depends on whether the
//! kernel is writing back dirty data at the time (an earlier run's, or another
//! program's) and on whether free pages are at hand or must be reclaimed. So before
//! every sequential run the benchmark writes all dirty data back and waits until the
//! kernel reports (almost) none dirty or under writeback, and before every sequential
//! write it also drops the clean page cache (`echo 1 > /proc/sys/vm/drop_caches`), so
//! each put allocates from free memory. The put's size is kept below the kernel's
//! background writeback threshold, so no writeback starts during the put itself, and
//! its file is deleted right after (its dirty pages are discarded, never written).
//! Files a run reads are read once beforehand, so reads are always served from cache.

use std::fs::{self, File};
use std::io::Read;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

/// Dirty + writeback below this counts as quiet (the rest of the machine always has a
/// little).
const QUIET_KIB: u64 = 16 * 1024;
const SETTLE_TIMEOUT: Duration = Duration::from_secs(20);

/// Writes dirty data back and waits for the kernel to report it done. Returns how much
/// was still dirty or under writeback at the end (KiB).
pub fn settle_writeback() -> u64 {
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let left = dirty_kib();
        if left < QUIET_KIB || Instant::now() >= deadline {
            return left;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Drops the clean page cache of the whole machine (after a sync, nothing dirty is
/// lost: dirty pages are never dropped anyway).
pub fn drop_page_cache() -> Result<(), String> {
    fs::write("/proc/sys/vm/drop_caches", "1").map_err(|e| format!("drop_caches: {e}"))
}

/// Where a guest kernel with free page reporting (virtio-balloon) counts what it gave back
/// to its host.
const REPORTED: &str = "/sys/module/page_reporting/parameters/reported_kib";
/// The kernel reports free memory a couple of seconds after it was freed.
const REPORTING_SETTLES: Duration = Duration::from_secs(3);

/// On a virtual machine that hands freed memory back to its host (free page reporting), a
/// page freed a moment ago is still backed and cheap to reuse, one freed a few seconds ago
/// costs a fault in the host when touched again (over 1 us a page here). Dropping the
/// page cache frees gigabytes at once: without a wait, the next run gets some of its pages
/// warm, depending on timing (a put ran at 900 or at 2400 MiB/s by that alone). So after
/// a drop every run starts once the reporting is done, with the same cold free memory.
/// True if the machine reports free pages (and so was waited for).
pub fn settle_free_memory() -> bool {
    if !Path::new(REPORTED).exists() {
        return false;
    }
    thread::sleep(REPORTING_SETTLES);
    true
}

/// Reads a file once so that it is in the page cache.
pub fn warm(path: &Path) {
    let Ok(mut file) = File::open(path) else {
        return;
    };
    let mut buf = vec![0u8; 1 << 20];
    while matches!(file.read(&mut buf), Ok(n) if n > 0) {}
}

/// Dirty + Writeback from /proc/meminfo, in KiB.
fn dirty_kib() -> u64 {
    meminfo(&["Dirty:", "Writeback:"])
}

fn meminfo(keys: &[&str]) -> u64 {
    let text = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .filter(|l| keys.iter().any(|k| l.starts_with(k)))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

fn vm_knob(name: &str) -> u64 {
    fs::read_to_string(format!("/proc/sys/vm/{name}"))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// The kernel's dirty limits now: (background threshold, hard limit) in bytes. The
/// ratios apply to "dirtyable" memory, which MemFree + Active/Inactive(file)
/// approximates (the kernel's own figure is a little lower).
pub fn dirty_thresholds() -> (u64, u64) {
    let dirtyable = meminfo(&["MemFree:", "Active(file):", "Inactive(file):"]) * 1024;
    let limit = |bytes_knob: &str, ratio_knob: &str| {
        let bytes = vm_knob(bytes_knob);
        if bytes > 0 {
            bytes
        } else {
            dirtyable / 100 * vm_knob(ratio_knob)
        }
    };
    (
        limit("dirty_background_bytes", "dirty_background_ratio"),
        limit("dirty_bytes", "dirty_ratio"),
    )
}

/// One line for the plan: how sequential runs are kept fair on this machine.
pub fn describe(put_bytes: u64, drop_caches: bool) -> String {
    let (background, hard) = dirty_thresholds();
    let mib = |b: u64| b >> 20;
    let fits = if put_bytes < background {
        "below"
    } else {
        "NOT below (writeback will start during puts: figures are less comparable)"
    };
    format!(
        "page cache: before each sequential run sync and wait until dirty+writeback < {} MiB; \
         {}; files read are pre-read; put size {} MiB is {fits} the background writeback \
         threshold ~{} MiB (hard limit ~{} MiB; dirty_expire {} cs)",
        QUIET_KIB / 1024,
        if drop_caches {
            "before each put drop the clean page cache (drop_caches=1)"
        } else {
            "page cache not dropped (--no-drop-caches)"
        },
        mib(put_bytes),
        mib(background),
        mib(hard),
        vm_knob("dirty_expire_centisecs")
    )
}
