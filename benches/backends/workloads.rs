//! The workloads' ids (CSV, chart file names, table order) and their titles.

use crate::plan::{Plan, MIB};
use crate::report::{Results, Workload};

pub const SEQ_READ: &str = "seq_read_8m";
pub const SEQ_WRITE: &str = "seq_write_8m";
pub const COLD_READ: &str = "cold_read_8m";
pub const COLD_READ_MID: &str = "cold_read_1m";
pub const SEQ_WRITE_MID: &str = "seq_write_1m";
pub const SEQ_READ_CAPPED: &str = "seq_read_128k";
pub const SEQ_WRITE_CAPPED: &str = "seq_write_128k";
pub const RAND_READ: &str = "rand_read_4k";
pub const RAND_WRITE: &str = "rand_write_4k";
pub const MIXED: &str = "mixed_4k";
pub const STREAM_READ: &str = "stream_read_8m";
pub const FSYNC_WRITE: &str = "fsync_write_4k";
pub const MEM_GET: &str = "mem_get";
pub const MEM_SMBCLIENT: &str = "mem_smbclient";
pub const XFS_RAND_READ: &str = "xfs_rand_read_4k";
pub const XFS_RAND_WRITE: &str = "xfs_rand_write_4k";
pub const XFS_SEQ_WRITE: &str = "xfs_seq_write_8m";
pub const XFS_COLD_READ: &str = "xfs_cold_read_8m";

/// The memory scenarios (their own table).
pub const MEMORY: [&str; 2] = [MEM_GET, MEM_SMBCLIENT];

/// The ext4 and XFS workloads printed side by side.
pub const FILESYSTEM_PAIRS: [(&str, &str, &str); 4] = [
    (
        SEQ_WRITE,
        XFS_SEQ_WRITE,
        "Sequential write (put), 8 MiB requests",
    ),
    (
        COLD_READ,
        XFS_COLD_READ,
        "Cold sequential read (get, page cache dropped), 8 MiB requests",
    ),
    (
        RAND_WRITE,
        XFS_RAND_WRITE,
        "4 KiB random writes (overwrites of a cached file)",
    ),
    (
        RAND_READ,
        XFS_RAND_READ,
        "4 KiB random reads of a cached file",
    ),
];

pub fn declare(results: &mut Results, plan: &Plan) {
    let seq = plan.seq_size / MIB;
    let rand = plan.rand_size / MIB;
    let secs = plan.duration.as_secs_f64();
    let transfer = |id, what: &str, requests: &str| Workload {
        id,
        title: format!("{what} of a {seq} MiB file, {requests} requests (one smbclient): MiB/s"),
        unit: "MiB/s",
        cpu_unit: "CPU s/GiB",
        latency: false,
        scaling: false,
    };
    let small = |id, what: String, scaling| Workload {
        id,
        title: format!("{what}, libsmbclient clients, {secs:.1} s per run: ops/s (all clients)"),
        unit: "ops/s",
        cpu_unit: "CPU us/op",
        latency: true,
        scaling,
    };
    let workloads = [
        transfer(SEQ_READ, "Sequential read (get)", "8 MiB"),
        transfer(SEQ_WRITE, "Sequential write (put)", "8 MiB"),
        transfer(
            COLD_READ,
            "Cold sequential read (get, page cache dropped before)",
            "8 MiB",
        ),
        transfer(
            COLD_READ_MID,
            "Cold sequential read (get, page cache dropped before)",
            "1 MiB",
        ),
        transfer(SEQ_WRITE_MID, "Sequential write (put)", "1 MiB"),
        transfer(SEQ_READ_CAPPED, "Sequential read (get)", "128 KiB"),
        transfer(SEQ_WRITE_CAPPED, "Sequential write (put)", "128 KiB"),
        small(
            RAND_READ,
            format!("4 KiB random reads of a cached {rand} MiB file"),
            true,
        ),
        small(
            RAND_WRITE,
            format!("4 KiB random writes to a cached {rand} MiB file"),
            true,
        ),
        small(
            MIXED,
            format!("4 KiB random reads and writes (half each) of a cached {rand} MiB file"),
            true,
        ),
        Workload {
            id: STREAM_READ,
            title: format!(
                "8 MiB sequential reads of a cached {seq} MiB file, each client from its own \
                 offset, {secs:.1} s per run: MiB/s (all clients)"
            ),
            unit: "MiB/s",
            cpu_unit: "CPU s/GiB",
            latency: true,
            scaling: true,
        },
        small(
            FSYNC_WRITE,
            format!(
                "4 KiB random writes each followed by an fsync (share: sync always = yes), {} MiB \
                 file",
                plan.sync_size / MIB
            ),
            false,
        ),
        Workload {
            id: MEM_GET,
            title: format!(
                "Memory: N clients each read a cached {} MiB file whole (8 MiB requests), then \
                 stay connected",
                plan.mem_file_size / MIB
            ),
            unit: "MiB/s",
            cpu_unit: "CPU s/GiB",
            latency: true,
            scaling: true,
        },
        Workload {
            id: MEM_SMBCLIENT,
            title: format!(
                "Memory: N smbclient sessions each get a cached {} MiB file (8 MiB requests, two \
                 in flight), then stay connected",
                plan.mem_file_size / MIB
            ),
            unit: "MiB/s",
            cpu_unit: "CPU s/GiB",
            latency: false,
            scaling: true,
        },
        small(
            XFS_RAND_READ,
            format!("XFS: 4 KiB random reads of a cached {rand} MiB file"),
            false,
        ),
        small(
            XFS_RAND_WRITE,
            format!("XFS: 4 KiB random writes to a cached {rand} MiB file"),
            false,
        ),
        transfer(XFS_SEQ_WRITE, "XFS: sequential write (put)", "8 MiB"),
        transfer(
            XFS_COLD_READ,
            "XFS: cold sequential read (get, page cache dropped before)",
            "8 MiB",
        ),
    ];
    for w in workloads {
        results.add_workload(w);
    }
}
