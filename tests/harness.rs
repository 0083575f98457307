//! The harness's own parsers and helpers, on recorded or made-up input: no smbd, no
//! namespace, so they run in milliseconds and pin down what the slow tests rely on.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use common::data;
use common::expected;
use common::procs;
use common::stats;
use common::torture::{self, Outcome};

#[test]
fn smbtorture_parser_reads_real_output() {
    // Trimmed from smbtorture 4.17 output: glued lines, multi-line messages, names
    // with spaces, a test left unfinished by a kill.
    let text = "\
test: smb2.rw.rw1
Checking data integrity over 10 ops
0time: 2026-11-23 13:43:16.320365
success: smb2.rw.rw1
test: smb2.rw.invalid
failure: smb2.rw.invalid [
../../source4/torture/smb2/read_write.c:334: status was NT_STATUS_OK
success: not.a.result
]debug_lookup_classname: Unknown classname[aio_fork] -> adding it...
test: smb2.ioctl.copy-chunk streams
failure: smb2.ioctl.copy-chunk streams [
copy_one_stream failed
]
test: smb2.ioctl.shadow_copy
skip: smb2.ioctl.shadow_copy [
FSCTL_SRV_ENUM_SNAPS not supported
]
test: smb2.lock.valid-request
some output without newlinesuccess: smb2.lock.valid-request
test: smb2.aio_delay.aio_cancel
";
    let results = torture::parse_results(text, true);
    let want: BTreeMap<String, Outcome> = [
        ("smb2.rw.rw1", Outcome::Success),
        ("smb2.rw.invalid", Outcome::Failure),
        ("smb2.ioctl.copy-chunk streams", Outcome::Failure),
        ("smb2.ioctl.shadow_copy", Outcome::Skip),
        ("smb2.lock.valid-request", Outcome::Success),
        ("smb2.aio_delay.aio_cancel", Outcome::Timeout),
    ]
    .iter()
    .map(|(n, o)| (n.to_string(), *o))
    .collect();
    assert_eq!(results, want);
}

#[test]
fn smbtorture_test_without_result_is_an_error_unless_killed() {
    let results = torture::parse_results("test: x.y\n", false);
    assert_eq!(results.get("x.y"), Some(&Outcome::Error));
}

#[test]
fn stats_lines_are_paired_with_their_log_level() {
    let log = "\
[2026/11/23 14:01:58.508701,  5] src/pool.rs:548(aio_fork::pool)
  aio_fork stats share=aio preads=0 pread_bytes=0 pwrites=2 pwrite_bytes=8 fsyncs=0 spawned=2 culled=0 retries=0 fallbacks=0 queue_max=0 helper_deaths=0 hung=0 queue_overflows=0
[2026/11/23 14:02:01.421357,  2] src/vfs_ops.rs:102(aio_fork::vfs_ops)
  aio_fork stats share=aio preads=2 pread_bytes=8 pwrites=2 pwrite_bytes=8 fsyncs=1 spawned=2 culled=1 retries=0 fallbacks=0 queue_max=3 helper_deaths=4 hung=1 queue_overflows=6 inline_preads=1
[2026/11/23 14:02:02.000000,  2, pid=7, effective(0, 0), real(0, 0)] src/vfs_ops.rs:102(x)
  aio_fork stats share=plain2 preads=1 pread_bytes=1 pwrites=0 pwrite_bytes=0 fsyncs=0 spawned=1 culled=0 retries=0 fallbacks=0 queue_max=5 helper_deaths=0 hung=0 queue_overflows=0
";
    let all = stats::parse_log(log);
    assert_eq!(all.len(), 3);
    assert_eq!(all[0].level, Some(5));
    let closing = stats::at_disconnect(&all);
    assert_eq!(closing.len(), 2, "the level-5 snapshot is not a total");
    let aio = stats::total_for(&closing, "aio");
    assert_eq!(
        (aio.preads, aio.fsyncs, aio.culled, aio.lines),
        (2, 1, 1, 1)
    );
    assert_eq!((aio.other("inline_preads"), aio.other("absent")), (1, 0));
    assert_eq!(
        (aio.helper_deaths, aio.hung, aio.queue_overflows),
        (4, 1, 6)
    );
    assert_eq!(stats::total_for(&closing, "plain2").queue_max, 5);
    assert_eq!(stats::total_for(&closing, "none").lines, 0);
}

#[test]
fn malformed_stats_line_is_reported() {
    let bad = "aio_fork stats share=aio preads=x";
    let err = stats::parse_line(bad)
        .expect("is a stats line")
        .unwrap_err();
    assert!(err.contains("preads=x"), "{err}");
    let short = "aio_fork stats share=aio preads=1";
    let err = stats::parse_line(short)
        .expect("is a stats line")
        .unwrap_err();
    assert!(err.contains("no pread_bytes="), "{err}");
    assert!(stats::parse_line("something else").is_none());
}

#[test]
fn proc_stat_with_odd_comm_is_parsed() {
    let p = procs::parse_stat("42 (a (b) c) S 7 42 42 0 -1").expect("parsed");
    assert_eq!(
        (p.pid, p.ppid, p.comm.as_str(), p.state),
        (42, 7, "a (b) c", 'S')
    );
    let z = procs::parse_stat("43 (aio_fork_helper) Z 42 0").expect("parsed");
    assert!(!z.is_live());
}

#[test]
fn compare_files_finds_size_and_content_differences() {
    let dir = scratch_dir("compare");
    let (a, b, c) = (dir.join("a"), dir.join("b"), dir.join("c"));
    data::write_random_file(&a, 3 << 20, 1);
    data::write_random_file(&b, 3 << 20, 1);
    assert_eq!(data::compare_files(&a, &b), Ok(()));
    let mut bytes = fs::read(&b).expect("read");
    bytes[(2 << 20) + 5] ^= 1;
    fs::write(&b, &bytes).expect("write");
    let err = data::compare_files(&a, &b).unwrap_err();
    assert!(err.contains(&format!("byte {}", (2 << 20) + 5)), "{err}");
    data::write_random_file(&c, (3 << 20) - 1, 1);
    assert!(data::compare_files(&a, &c).unwrap_err().contains("bytes"));
    assert!(data::compare_files(&a, &dir.join("missing")).is_err());
    data::write_random_file(&c, 3 << 20, 2);
    assert!(
        data::compare_files(&a, &c).is_err(),
        "another seed, other bytes"
    );
    fs::remove_dir_all(&dir).expect("clean up");
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("aio_fork_harness.{name}.{}", std::process::id()));
    fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

const SHARES: [&str; 2] = ["plain", "aio"];

#[test]
fn expected_entries_with_alternatives_parse_and_judge() {
    let text = "# c\n\nsmb2.x.y | plain=timeout/success aio=failure | why it races\n";
    let entries = expected::parse(text, &SHARES).unwrap();
    let e = &entries["smb2.x.y"];
    assert_eq!(e.allows("plain", Some(Outcome::Success)), Some(true));
    assert_eq!(e.allows("plain", Some(Outcome::Timeout)), Some(true));
    assert_eq!(e.allows("plain", Some(Outcome::Failure)), Some(false));
    assert_eq!(e.allows("plain", None), Some(false));
    assert_eq!(e.allows("aio", Some(Outcome::Failure)), Some(true));
    assert_eq!(e.allows("other", Some(Outcome::Failure)), None);
    assert_eq!(e.show("plain"), "success/timeout");
}

#[test]
fn malformed_expected_entries_are_refused() {
    for bad in [
        "smb2.x.y | aio=failure | \n",
        "smb2.x.y | aio=failure\n",
        "smb2.x.y | aio=maybe | why\n",
        "smb2.x.y | nas=failure | why\n",
        "smb2.x.y | aio=failure aio=success | why\n",
        "smb2.x.y | aio=failure | why\nsmb2.x.y | aio=success | why\n",
    ] {
        assert!(expected::parse(bad, &SHARES).is_err(), "accepted {bad:?}");
    }
}
