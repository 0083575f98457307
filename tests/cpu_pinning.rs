//! Where a helper runs: after a connection's lone small write its helper may run only on
//! one CPU (smbd's), after a large one on every CPU smbd may use again; the data is as on
//! a plain share either way. Watched from /proc/<helper>/status (`Cpus_allowed_list`).

mod common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use common::client::Session;
use common::data;
use common::module::ModuleKind;
use common::namespace::{run_in_namespace, NsContext};
use common::procs;
use common::smbd::SmbdBuilder;

const AIO: &str = "pin";
const PLAIN: &str = "plain";
/// One request, small enough to be served pinned.
const SMALL: u64 = 64 << 10;
/// One request (of SMB2's 8 MiB), larger than what is served pinned.
const LARGE: u64 = 4 << 20;
const TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn a_lone_small_write_runs_its_helper_on_one_cpu_a_large_one_on_all() {
    run_in_namespace(
        "a_lone_small_write_runs_its_helper_on_one_cpu_a_large_one_on_all",
        Duration::from_secs(5 * 60),
        run,
    );
}

fn run(ctx: &NsContext) {
    let all = cpus_allowed(std::process::id());
    assert!(
        all.len() >= 2,
        "this test needs two CPUs to tell one from all; the machine allows {all:?}"
    );
    let smbd = SmbdBuilder::without_shares(&ctx.workdir)
        .share(
            AIO,
            &[
                ("vfs objects", "aio_fork"),
                // One helper serves every request: the one watched.
                ("aio_fork:max helpers", "1"),
            ],
        )
        .share(PLAIN, &[])
        .start();
    let small = ctx.workdir.join("small.bin");
    let large = ctx.workdir.join("large.bin");
    data::write_random_file(&small, SMALL, 1);
    data::write_random_file(&large, LARGE, 2);

    let mut plain = Session::open(&smbd, PLAIN, TIMEOUT);
    let mut aio = Session::open(&smbd, AIO, TIMEOUT);
    for session in [&mut plain, &mut aio] {
        session.run(&format!("put {} small.bin", small.display()), TIMEOUT);
    }
    let helpers = procs::helpers_of(aio.server_pid, smbd.pid(), ctx.module.kind);
    assert_eq!(
        helpers.len(),
        1,
        "one helper after the first write: {helpers:?}"
    );
    let helper = helpers[0].pid;
    let after_small = cpus_allowed(helper);
    println!("helper {helper} after a {SMALL}-byte write: CPUs {after_small:?} of {all:?}");

    for session in [&mut plain, &mut aio] {
        session.run(&format!("put {} large.bin", large.display()), TIMEOUT);
    }
    let after_large = cpus_allowed(helper);
    println!("helper {helper} after a {LARGE}-byte write: CPUs {after_large:?}");

    for (name, local) in [("small.bin", &small), ("large.bin", &large)] {
        for share in [AIO, PLAIN] {
            let stored = smbd.share_path(share).join(name);
            if let Err(e) = data::compare_files(local, &stored) {
                panic!("{share}/{name} differs from what was put: {e}");
            }
        }
    }
    if ctx.module.kind == ModuleKind::Rust {
        assert_eq!(
            after_small.len(),
            1,
            "pinned to one CPU after a lone small write"
        );
        assert!(all.contains(&after_small[0]));
        assert_eq!(after_large, all, "every CPU again after a large write");
    }
    for session in [plain, aio] {
        let closed = session.close(TIMEOUT);
        assert!(
            closed.success(),
            "session did not quit:\n{}",
            closed.describe()
        );
    }
}

/// The CPUs process `pid` may run on, from `Cpus_allowed_list` ("0-1,3").
fn cpus_allowed(pid: u32) -> Vec<usize> {
    let status = fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status"))
        .expect("read /proc/<pid>/status");
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list in /proc/<pid>/status")
        .trim();
    let mut cpus = Vec::new();
    for part in list.split(',') {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<usize>().unwrap()..=b.parse::<usize>().unwrap()),
            None => cpus.push(part.parse().unwrap()),
        }
    }
    cpus
}
