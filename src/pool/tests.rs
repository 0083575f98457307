//! The pool against real helper processes and a real tevent loop (no smbd): large requests,
//! helper deaths and hangs, backpressure, fork failure, culling, freed requests.

use super::*;
use crate::config::Config;
use crate::test_util::{temp_file, Loop};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{Read, Seek};
use std::os::fd::{AsRawFd, FromRawFd};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Finish {
        req: usize,
        result: isize,
        error: i32,
    },
    Fallback {
        req: usize,
        done: usize,
    },
}

thread_local! {
    static OUTCOMES: RefCell<Vec<Outcome>> = const { RefCell::new(Vec::new()) };
}

fn record(action: Action) {
    let outcome = match action {
        Action::Finish {
            req, result, error, ..
        } => Outcome::Finish {
            req: req as usize,
            result,
            error,
        },
        Action::Fallback { req, done } => Outcome::Fallback {
            req: req as usize,
            done,
        },
    };
    OUTCOMES.with(|o| o.borrow_mut().push(outcome));
}

/// A request completed successfully with `result` bytes.
fn served(req: usize, result: isize) -> Outcome {
    Outcome::Finish {
        req,
        result,
        error: 0,
    }
}

/// Every outcome recorded for request `req` (by the action runner or by `submit`).
fn outcomes_of(req: usize) -> Vec<Outcome> {
    OUTCOMES.with(|o| {
        o.borrow()
            .iter()
            .filter(|x| match x {
                Outcome::Finish { req: r, .. } | Outcome::Fallback { req: r, .. } => *r == req,
            })
            .cloned()
            .collect()
    })
}

fn outcome_of(req: usize) -> Option<Outcome> {
    outcomes_of(req).into_iter().next()
}

fn pool(lp: &Loop, cfg: Config) -> Rc<Pool> {
    Pool::new(
        "test".into(),
        cfg,
        crate::test_util::helper_program(),
        lp.ev,
        record,
    )
}

/// What most tests start from: a loop of their own, a pool on it, and a file of
/// `pattern` bytes (`data`).
struct Fixture {
    // Before `lp`: fields drop in order, and the pool's events must go before their
    // tevent context.
    pool: Rc<Pool>,
    lp: Loop,
    data: Vec<u8>,
    file: std::fs::File,
}

impl Fixture {
    fn new(cfg: Config, len: usize, seed: u8) -> Fixture {
        let lp = Loop::new();
        let data = pattern(len, seed);
        let file = temp_file(&data);
        Fixture {
            pool: pool(&lp, cfg),
            lp,
            data,
            file,
        }
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Submits a request; `tag` stands for the tevent request (the pool never dereferences
/// it). An answer given at once is recorded as the action runner records the others.
fn submit(pool: &Pool, tag: usize, op: Op, fd: RawFd, offset: i64, buf: &mut [u8]) -> Submitted {
    let req = tag as *mut ffi::tevent_req;
    let spec = Spec {
        req,
        ev: pool.inner.borrow().ev,
        op,
        fd,
        offset,
        len: buf.len(),
        data: buf.as_mut_ptr(),
    };
    // SAFETY: every test keeps buf alive until its request is answered or forgotten.
    let answer = unsafe { pool.submit(spec) };
    match answer {
        Submitted::Queued(_) => {}
        Submitted::Done { result, error, .. } => record(Action::Finish {
            req,
            result,
            error,
            duration_ns: 0,
        }),
        Submitted::Fallback { done } => record(Action::Fallback { req, done }),
    }
    answer
}

fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).unwrap();
}

use crate::test_util::gone_soon;

/// Has the pool serve one small read, so that its crew (this test's credentials) exists:
/// the pool starts no process before its first request. `min helpers` are there after it.
fn warm_up(lp: &Loop, pool: &Pool) {
    const TAG: usize = 9999;
    let file = temp_file(b"w");
    let mut buf = vec![0u8; 1];
    submit(pool, TAG, Op::Read, file.as_raw_fd(), 0, &mut buf);
    lp.run_until("the warm-up read", LONG, || outcome_of(TAG).is_some());
    assert_eq!(outcome_of(TAG), Some(served(TAG, 1)));
}

/// Stops (SIGSTOP) the pool's first helper (warming the pool up if it has none), so that
/// a request sent to it stays in flight until the test resumes or kills it; returns its pid.
fn stop_first_helper(lp: &Loop, pool: &Pool) -> i32 {
    if pool.helper_pids().is_empty() {
        warm_up(lp, pool);
    }
    let pid = pool.helper_pids()[0];
    signal(pid, nix::sys::signal::Signal::SIGSTOP);
    pid
}

/// Every request goes to a helper: nothing is done in smbd without blocking.
fn config() -> Config {
    Config {
        max_helpers: 4,
        inline_cached_reads: false,
        inline_writes: false,
        ..Config::default()
    }
}

const LONG: Duration = Duration::from_secs(20);

#[test]
fn reads_and_writes_larger_than_the_buffer_go_in_pieces() {
    let mut t = Fixture::new(config(), 2 * BUFFER_SIZE + 12345, 1);

    let mut back = vec![0u8; t.data.len() + 100]; // asks past EOF: a short read
    submit(&t.pool, 1, Op::Read, t.file.as_raw_fd(), 0, &mut back);
    t.lp.run_until("the read", LONG, || outcome_of(1).is_some());
    let expected = served(1, t.data.len() as isize);
    assert_eq!(outcome_of(1), Some(expected));
    assert!(back[..t.data.len()] == t.data[..], "read data differs");

    let mut new = pattern(BUFFER_SIZE + 3, 7);
    submit(&t.pool, 2, Op::Write, t.file.as_raw_fd(), 5, &mut new);
    t.lp.run_until("the write", LONG, || outcome_of(2).is_some());
    let expected = served(2, new.len() as isize);
    assert_eq!(outcome_of(2), Some(expected));
    let mut on_disk = Vec::new();
    t.file.rewind().unwrap();
    t.file.read_to_end(&mut on_disk).unwrap();
    assert!(on_disk[5..5 + new.len()] == new[..], "written data differs");

    let stats = t.pool.stats();
    assert_eq!((stats.preads, stats.pwrites), (1, 1));
    assert_eq!(stats.pread_bytes, t.data.len() as u64);
    assert_eq!(stats.pwrite_bytes, new.len() as u64);
    assert_eq!(stats.latency.count(), 2);
    assert!(stats.latency.percentile_us(99.0) > 0);
}

#[test]
fn errors_come_back_as_errno() {
    let lp = Loop::new();
    let ro = std::fs::File::open("/proc/self/cmdline").unwrap();
    let pool = pool(&lp, config());
    let mut buf = vec![1u8; 10];
    submit(&pool, 1, Op::Write, ro.as_raw_fd(), 0, &mut buf);
    lp.run_until("the write", LONG, || outcome_of(1).is_some());
    assert_eq!(
        outcome_of(1),
        Some(Outcome::Finish {
            req: 1,
            result: -1,
            error: libc::EBADF
        })
    );
}

#[test]
fn a_killed_helper_costs_nothing_the_request_is_retried() {
    let t = Fixture::new(
        Config {
            min_helpers: 1,
            ..config()
        },
        100_000,
        3,
    );
    let victim = stop_first_helper(&t.lp, &t.pool);

    let mut back = vec![0u8; t.data.len()];
    submit(&t.pool, 1, Op::Read, t.file.as_raw_fd(), 0, &mut back);
    signal(victim, nix::sys::signal::Signal::SIGKILL);
    t.lp.run_until("the retried read", LONG, || outcome_of(1).is_some());

    assert_eq!(outcome_of(1), Some(served(1, t.data.len() as isize)));
    assert!(back == t.data);
    let stats = t.pool.stats();
    assert_eq!((stats.retries, stats.helper_deaths), (1, 1));
    assert!(!t.pool.helper_pids().contains(&victim));
    assert!(gone_soon(victim), "victim not reaped");
}

#[test]
fn a_hung_helper_is_replaced_after_the_request_timeout() {
    let cfg = Config {
        min_helpers: 1,
        request_timeout: Duration::from_secs(1),
        ..config()
    };
    let t = Fixture::new(cfg, 4096, 5);
    let hung = stop_first_helper(&t.lp, &t.pool);

    let started = Instant::now();
    let mut back = vec![0u8; t.data.len()];
    submit(&t.pool, 1, Op::Read, t.file.as_raw_fd(), 0, &mut back);
    t.lp.run_until("the read", LONG, || outcome_of(1).is_some());
    let took = started.elapsed();

    assert_eq!(outcome_of(1), Some(served(1, 4096)));
    assert!(back == t.data);
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(5),
        "took {took:?}"
    );
    assert_eq!(t.pool.stats().hung, 1);
    assert!(!t.pool.helper_pids().contains(&hung));
}

#[test]
fn a_retry_after_a_timeout_finds_a_zygote_never_the_next_module() {
    // No `min helpers`: the crew's only helper hangs; culling must not let its zygote go
    // while the request waits to be sent again (the zygote can only be started from a
    // request's own thread, and the next module would hang where the helper did).
    let cfg = Config {
        request_timeout: Duration::from_secs(1),
        ..config()
    };
    let t = Fixture::new(cfg, 4096, 6);
    stop_first_helper(&t.lp, &t.pool);
    let mut back = vec![0u8; t.data.len()];
    submit(&t.pool, 1, Op::Read, t.file.as_raw_fd(), 0, &mut back);
    t.lp.run_until("the read", LONG, || outcome_of(1).is_some());
    assert_eq!(outcome_of(1), Some(served(1, 4096)));
    assert!(back == t.data);
    let stats = t.pool.stats();
    assert_eq!((stats.hung, stats.retries, stats.fallbacks), (1, 1, 0));
}

/// An EIO completion, as a request that timed out gets.
fn timed_out(req: usize) -> Outcome {
    Outcome::Finish {
        req,
        result: -1,
        error: libc::EIO,
    }
}

#[test]
fn with_timeout_action_fail_a_hung_request_and_those_queued_behind_it_fail_with_eio() {
    let cfg = Config {
        max_helpers: 1,
        min_helpers: 1,
        request_timeout: Duration::from_secs(1),
        timeout_action: crate::config::TimeoutAction::Fail,
        ..config()
    };
    let t = Fixture::new(cfg, 4096, 6);
    let hung = stop_first_helper(&t.lp, &t.pool);

    let started = Instant::now();
    let mut bufs = vec![vec![0u8; 100]; 2];
    for (i, buf) in bufs.iter_mut().enumerate() {
        submit(&t.pool, i + 1, Op::Write, t.file.as_raw_fd(), 0, buf);
    }
    t.lp.run_until("both writes", LONG, || outcome_of(2).is_some());
    let took = started.elapsed();

    assert_eq!(
        (outcome_of(1), outcome_of(2)),
        (Some(timed_out(1)), Some(timed_out(2)))
    );
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(3),
        "took {took:?}"
    );
    let stats = t.pool.stats();
    assert_eq!((stats.hung, stats.timeouts, stats.retries), (1, 2, 0));
    assert!(gone_soon(hung), "the hung helper was not ended");
}

#[test]
fn a_zygote_that_does_not_answer_never_holds_the_event_loop() {
    let cfg = Config {
        max_helpers: 2,
        ..config()
    };
    let t = Fixture::new(cfg, 4096, 8);
    let helper = stop_first_helper(&t.lp, &t.pool);
    let zygote = t.pool.inner.borrow().crews[0]
        .zygote
        .as_ref()
        .unwrap()
        .pid();
    signal(zygote, nix::sys::signal::Signal::SIGSTOP);

    // The first read goes to the stopped helper; the second needs a new one.
    let mut bufs = vec![vec![0u8; 4096]; 2];
    let started = Instant::now();
    for (i, buf) in bufs.iter_mut().enumerate() {
        submit(&t.pool, i + 1, Op::Read, t.file.as_raw_fd(), 0, buf);
    }
    let submitting = started.elapsed();
    let mut longest_turn = Duration::ZERO;
    let mut last = Instant::now();
    t.lp.run_until("the zygote given up", LONG, || {
        longest_turn = longest_turn.max(last.elapsed());
        last = Instant::now();
        t.pool.inner.borrow().crews[0].zygote.is_none()
    });
    let gave_up = started.elapsed();
    signal(zygote, nix::sys::signal::Signal::SIGCONT);
    signal(helper, nix::sys::signal::Signal::SIGCONT);
    t.lp.run_until("both reads", LONG, || outcome_of(2).is_some());

    assert!(
        submitting < Duration::from_millis(100),
        "submit took {submitting:?}"
    );
    assert!(
        longest_turn < Duration::from_millis(500),
        "a loop turn took {longest_turn:?}"
    );
    assert!(
        gave_up >= crate::parent::zygote::ANSWER_TIMEOUT && gave_up < LONG,
        "given up after {gave_up:?}"
    );
    assert_eq!(
        (outcome_of(1), outcome_of(2)),
        (Some(served(1, 4096)), Some(served(2, 4096)))
    );
    assert!(bufs.iter().all(|b| *b == t.data));
}

#[test]
fn an_idle_helper_gives_its_buffer_pages_back() {
    let t = Fixture::new(config(), 4 << 20, 3);
    let mut back = vec![0u8; t.data.len()];
    submit(&t.pool, 1, Op::Read, t.file.as_raw_fd(), 0, &mut back);
    t.lp.run_until("the read", LONG, || outcome_of(1).is_some());
    assert!(back == t.data);
    let resident = || {
        let mut inner = t.pool.inner.borrow_mut();
        crate::test_util::resident_pages(inner.helpers[0].process.buffer())
    };
    assert_eq!(resident(), 1024, "the read went through the buffer");
    let idle = Instant::now();
    t.lp.run_until("the buffer released", LONG, || resident() == 0);
    let took = idle.elapsed();
    assert!(
        took >= RELEASE_BUFFER_AFTER - Duration::from_millis(50) && took < Duration::from_secs(3),
        "released after {took:?}"
    );
    // Only the idle timeout's cull is left to wake up for.
    let due = t.pool.inner.borrow().timer.as_ref().map(|t| t.due());
    assert!(
        due.is_some_and(|d| d > Instant::now() + Duration::from_secs(20)),
        "timer due {due:?}"
    );
}

/// Makes the pool's first helper one ended for a timeout that has not exited, writing
/// `file`: what a helper blocked in a hung backend is (it is not killed here, so it stays
/// until the test ends it). Returns its pid.
fn pretend_stuck_writing(pool: &Pool, file: RawFd) -> i32 {
    let mut inner = pool.inner.borrow_mut();
    let helper = inner.helpers.swap_remove(0);
    let pid = helper.process.pid();
    let (ev, mem, this, id) = (inner.ev, inner.mem, inner.this.clone(), helper.id);
    let watch = |pidfd| events::FdWatch::new(ev, mem, pidfd, this, id);
    let ending = ending::Ending::new(helper, watch, file_id::FileId::of(file), None, None).unwrap();
    inner.ending.push(ending);
    pid
}

#[test]
fn a_write_to_a_file_with_a_stuck_write_waits_until_its_helper_has_exited() {
    let lp = Loop::new();
    let stuck_file = temp_file(&[0u8; 4096]);
    let other_file = temp_file(&[0u8; 4096]);
    let pool = pool(&lp, config());
    warm_up(&lp, &pool);
    let stuck = pretend_stuck_writing(&pool, stuck_file.as_raw_fd());

    let mut newer = vec![7u8; 4096];
    let mut other = vec![8u8; 4096];
    submit(&pool, 1, Op::Write, stuck_file.as_raw_fd(), 0, &mut newer);
    submit(&pool, 2, Op::Write, other_file.as_raw_fd(), 0, &mut other);
    lp.run_until("the write to the other file", LONG, || {
        outcome_of(2).is_some()
    });
    let held_until = Instant::now() + Duration::from_millis(300);
    lp.run_until("a while", LONG, || Instant::now() > held_until);
    assert_eq!(
        outcome_of(1),
        None,
        "written while the stuck write may still land"
    );

    signal(stuck, nix::sys::signal::Signal::SIGKILL);
    lp.run_until("the held write", LONG, || outcome_of(1).is_some());
    assert_eq!(outcome_of(1), Some(served(1, 4096)));
    let mut back = Vec::new();
    let mut f = &stuck_file;
    f.rewind().unwrap();
    f.read_to_end(&mut back).unwrap();
    assert!(back == newer);
}

#[test]
fn a_large_write_waits_while_a_helper_writes_its_file() {
    let big = 2 * file_writers::LARGE;
    let mut t = Fixture::new(config(), 4 * big, 0);
    let other_file = temp_file(&vec![0u8; big]);
    let stopped = stop_first_helper(&t.lp, &t.pool);

    let mut first = pattern(big, 1);
    let mut second = pattern(big, 2);
    let mut elsewhere = pattern(big, 3);
    let mut small = pattern(4096, 4);
    let fd = t.file.as_raw_fd();
    submit(&t.pool, 1, Op::Write, fd, 0, &mut first);
    submit(&t.pool, 2, Op::Write, fd, big as i64, &mut second);
    submit(
        &t.pool,
        3,
        Op::Write,
        other_file.as_raw_fd(),
        0,
        &mut elsewhere,
    );
    submit(&t.pool, 4, Op::Write, fd, 3 * big as i64, &mut small);
    t.lp.run_until("the other file's and the small write", LONG, || {
        outcome_of(3).is_some() && outcome_of(4).is_some()
    });
    let held_until = Instant::now() + Duration::from_millis(300);
    t.lp.run_until("a while", LONG, || Instant::now() > held_until);
    assert_eq!(
        outcome_of(2),
        None,
        "written beside another write of its file"
    );

    signal(stopped, nix::sys::signal::Signal::SIGCONT);
    t.lp.run_until("both large writes", LONG, || {
        outcome_of(1).is_some() && outcome_of(2).is_some()
    });
    assert_eq!(outcome_of(1), Some(served(1, big as isize)));
    assert_eq!(outcome_of(2), Some(served(2, big as isize)));
    let mut expected = t.data.clone();
    expected[..big].copy_from_slice(&first);
    expected[big..2 * big].copy_from_slice(&second);
    expected[3 * big..3 * big + 4096].copy_from_slice(&small);
    let mut back = Vec::new();
    t.file.rewind().unwrap();
    t.file.read_to_end(&mut back).unwrap();
    assert!(back == expected, "file content differs");
}

#[test]
fn stuck_helpers_keep_their_place_under_max_helpers() {
    let cfg = Config {
        max_helpers: 2,
        ..config()
    };
    let t = Fixture::new(cfg, 4096, 12);
    warm_up(&t.lp, &t.pool);
    let scratch = temp_file(b"s");
    let stuck = pretend_stuck_writing(&t.pool, scratch.as_raw_fd());

    let mut bufs = vec![vec![0u8; 4096]; 4];
    for (i, buf) in bufs.iter_mut().enumerate() {
        submit(&t.pool, i + 1, Op::Read, t.file.as_raw_fd(), 0, buf);
    }
    let mut most = 0;
    t.lp.run_until("four reads", LONG, || {
        most = most.max(t.pool.helper_pids().len());
        (1..=4).all(|r| outcome_of(r).is_some())
    });
    assert_eq!(most, 1, "one place of two is the stuck helper's");
    assert!(bufs.iter().all(|b| *b == t.data));
    signal(stuck, nix::sys::signal::Signal::SIGKILL);
}

#[test]
fn past_max_queue_requests_go_to_the_next_module() {
    let cfg = Config {
        max_helpers: 1,
        min_helpers: 1,
        max_queue: 1,
        ..config()
    };
    let t = Fixture::new(cfg, 4096, 9);
    let only = stop_first_helper(&t.lp, &t.pool);

    let mut bufs = vec![vec![0u8; 100]; 3];
    let answers: Vec<Submitted> = bufs
        .iter_mut()
        .enumerate()
        .map(|(i, buf)| submit(&t.pool, i + 1, Op::Read, t.file.as_raw_fd(), 0, buf))
        .collect();
    // The first runs (stopped), the second waits, the third overflows: the answer comes
    // back from submit (smbd is still in its *_send), never through the action runner
    // (which would have left submit answering Queued).
    assert!(matches!(
        answers[..],
        [
            Submitted::Queued(_),
            Submitted::Queued(_),
            Submitted::Fallback { done: 0 }
        ]
    ));
    assert_eq!((outcome_of(1), outcome_of(2)), (None, None));
    assert_eq!(outcome_of(3), Some(Outcome::Fallback { req: 3, done: 0 }));
    assert_eq!(outcomes_of(3).len(), 1);

    signal(only, nix::sys::signal::Signal::SIGCONT);
    t.lp.run_until("the queued reads", LONG, || outcome_of(2).is_some());
    assert_eq!(outcome_of(1), Some(served(1, 100)));
    let stats = t.pool.stats();
    assert_eq!(
        (stats.queue_overflows, stats.fallbacks, stats.queue_max),
        (1, 1, 1)
    );
}

#[test]
fn when_no_helper_can_be_forked_the_next_module_serves() {
    let lp = Loop::new();
    let file = temp_file(b"abc");
    let cfg = Config {
        fail_fork_testing_mode: true,
        ..config()
    };
    let pool = pool(&lp, cfg);
    let mut buf = vec![0u8; 3];
    let answer = submit(&pool, 1, Op::Read, file.as_raw_fd(), 0, &mut buf);
    assert_eq!(answer, Submitted::Fallback { done: 0 });
    assert_eq!(
        outcomes_of(1).len(),
        1,
        "answered through the action runner too"
    );
    assert_eq!(pool.stats().fallbacks, 1);
    assert!(pool.helper_pids().is_empty());
}

#[test]
fn a_cached_read_is_done_in_smbd_at_once_and_a_write_to_tmpfs_goes_to_a_helper() {
    let cfg = Config {
        inline_cached_reads: true,
        inline_writes: true,
        ..config()
    };
    let t = Fixture::new(cfg, 4096, 11);
    let mut back = vec![0u8; 4096];
    let answer = submit(&t.pool, 1, Op::Read, t.file.as_raw_fd(), 0, &mut back);
    assert!(
        matches!(
            answer,
            Submitted::Done {
                result: 4096,
                error: 0,
                ..
            }
        ),
        "{answer:?}"
    );
    assert!(back == t.data);
    assert!(t.pool.helper_pids().is_empty(), "a helper was started");

    // A file without RWF_NOWAIT writes (tmpfs, ext4) is written by a helper, and the share
    // stops trying.
    let file = tmpfs_file();
    let mut new = pattern(100, 12);
    let answer = submit(&t.pool, 2, Op::Write, file.as_raw_fd(), 0, &mut new);
    assert!(matches!(answer, Submitted::Queued(_)), "{answer:?}");
    t.lp.run_until("the write", LONG, || outcome_of(2).is_some());
    assert_eq!(outcome_of(2), Some(served(2, 100)));
    assert!(!t.pool.inner.borrow().cfg.inline_writes);
    let stats = t.pool.stats();
    assert_eq!((stats.inline_preads, stats.inline_pwrites), (1, 0));
    assert_eq!((stats.preads, stats.pwrites), (1, 1));
}

/// An unlinked file on tmpfs, which does no RWF_NOWAIT writes.
fn tmpfs_file() -> std::fs::File {
    let path = format!("/dev/shm/aio_fork_pool_test.{}", std::process::id());
    let file = std::fs::File::create(&path).expect("a file in /dev/shm");
    std::fs::remove_file(&path).expect("unlink");
    file
}

#[test]
fn idle_helpers_above_min_are_culled_and_the_pool_still_serves() {
    let cfg = Config {
        min_helpers: 1,
        max_helpers: 3,
        idle_timeout: Duration::from_secs(1),
        ..config()
    };
    let t = Fixture::new(cfg, 4096, 2);
    // Stop the first helper so that the next requests need more helpers.
    let first = stop_first_helper(&t.lp, &t.pool);
    let mut bufs = vec![vec![0u8; 4096]; 3];
    for (i, buf) in bufs.iter_mut().enumerate() {
        submit(&t.pool, i + 1, Op::Read, t.file.as_raw_fd(), 0, buf);
    }
    t.lp.run_until("two more helpers", LONG, || t.pool.helper_pids().len() == 3);
    signal(first, nix::sys::signal::Signal::SIGCONT);
    t.lp.run_until("three reads", LONG, || {
        (1..=3).all(|r| outcome_of(r).is_some())
    });

    t.lp.run_until("culling down to min", LONG, || {
        t.pool.helper_pids().len() == 1
    });
    assert_eq!(t.pool.stats().culled, 2);
    // No timer runs forever once at the minimum.
    assert!(t.pool.inner.borrow().timer.is_none());

    let mut again = vec![0u8; 4096];
    submit(&t.pool, 4, Op::Read, t.file.as_raw_fd(), 0, &mut again);
    t.lp.run_until("a read after culling", LONG, || outcome_of(4).is_some());
    assert!(again == t.data);
}

#[test]
fn a_freed_request_is_never_completed_and_its_helper_comes_back() {
    let t = Fixture::new(
        Config {
            min_helpers: 1,
            max_helpers: 1,
            ..config()
        },
        4096,
        4,
    );
    let only = stop_first_helper(&t.lp, &t.pool);
    let mut buf = vec![0u8; 4096];
    let Submitted::Queued(job) = submit(&t.pool, 1, Op::Read, t.file.as_raw_fd(), 0, &mut buf)
    else {
        panic!("not queued");
    };
    t.pool.forget(job, 1 as *mut ffi::tevent_req);
    drop(buf); // smbd freed the buffer with the request
    signal(only, nix::sys::signal::Signal::SIGCONT);

    let mut next = vec![0u8; 10];
    submit(&t.pool, 2, Op::Read, t.file.as_raw_fd(), 0, &mut next);
    t.lp.run_until("the next read", LONG, || outcome_of(2).is_some());
    assert_eq!(outcome_of(1), None);
    assert_eq!(
        t.pool.helper_pids(),
        vec![only],
        "the same helper serves on"
    );
}

#[test]
fn dropping_the_pool_ends_and_reaps_every_helper() {
    let lp = Loop::new();
    let pool = pool(
        &lp,
        Config {
            min_helpers: 3,
            ..config()
        },
    );
    assert!(
        pool.helper_pids().is_empty(),
        "no process before the first request"
    );
    warm_up(&lp, &pool);
    lp.run_until("min helpers", LONG, || pool.helper_pids().len() == 3);
    let pids = pool.helper_pids();
    drop(pool);
    for pid in pids {
        assert!(gone_soon(pid), "helper {pid} left behind");
    }
}

#[test]
fn an_append_whose_helper_died_is_reported_not_repeated() {
    let lp = Loop::new();
    let file = temp_file(b"start");
    let path = format!("/proc/self/fd/{}", file.as_raw_fd());
    let appender = std::fs::OpenOptions::new()
        .append(true)
        .open(path.clone())
        .unwrap();
    let pool = pool(
        &lp,
        Config {
            min_helpers: 1,
            ..config()
        },
    );
    let victim = stop_first_helper(&lp, &pool);

    let mut data = b"more".to_vec();
    submit(&pool, 1, Op::Append, appender.as_raw_fd(), -1, &mut data);
    signal(victim, nix::sys::signal::Signal::SIGKILL);
    lp.run_until("the append's end", LONG, || outcome_of(1).is_some());

    assert_eq!(
        outcome_of(1),
        Some(Outcome::Finish {
            req: 1,
            result: -1,
            error: libc::EIO
        })
    );
    assert_eq!(pool.stats().retries, 0);
    assert_eq!(
        std::fs::read(path).unwrap(),
        b"start",
        "the append must not run again"
    );

    // A live helper appends normally.
    let mut again = b"+1".to_vec();
    submit(&pool, 2, Op::Append, appender.as_raw_fd(), -1, &mut again);
    lp.run_until("an append", LONG, || outcome_of(2).is_some());
    assert_eq!(outcome_of(2), Some(served(2, 2)));
    let mut content = Vec::new();
    let mut f = std::fs::File::open(format!("/proc/self/fd/{}", file.as_raw_fd())).unwrap();
    f.read_to_end(&mut content).unwrap();
    assert_eq!(content, b"start+1");
}

/// The uids (real, effective, saved, fs) of `pid`.
fn uids_of(pid: i32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line[4..]
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect()
}

/// Submits a read while this thread acts as `uid` (as smbd's thread does for a user).
fn submit_as(uid: u32, pool: &Pool, tag: usize, fd: RawFd, buf: &mut [u8]) {
    // SAFETY: switches only this thread's effective uid (raw syscall, as Samba does).
    assert_eq!(unsafe { libc::syscall(libc::SYS_setresuid, 0, uid, 0) }, 0);
    submit(pool, tag, Op::Read, fd, 0, buf);
    // SAFETY: back to root; the saved uid allows it.
    assert_eq!(unsafe { libc::syscall(libc::SYS_setresuid, 0, 0, 0) }, 0);
}

#[test]
fn requests_of_two_users_run_on_helpers_of_each_user() {
    // SAFETY: geteuid takes no arguments.
    if unsafe { libc::geteuid() } != 0 {
        panic!("this test needs root, to act as two users as smbd does");
    }
    let lp = Loop::new();
    let data = pattern(4096, 9);
    let file = temp_file(&data);
    let pool = pool(&lp, config());
    let (mut a, mut b) = (vec![0u8; 4096], vec![0u8; 4096]);
    submit_as(4321, &pool, 1, file.as_raw_fd(), &mut a);
    submit_as(4322, &pool, 2, file.as_raw_fd(), &mut b);
    lp.run_until("both reads", LONG, || {
        outcome_of(1).is_some() && outcome_of(2).is_some()
    });
    assert_eq!(outcome_of(1), Some(served(1, 4096)));
    assert_eq!(outcome_of(2), Some(served(2, 4096)));
    assert!(a == data && b == data);
    let mut seen: Vec<Vec<u32>> = pool.helper_pids().into_iter().map(uids_of).collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![vec![4321; 4], vec![4322; 4]],
        "one helper per user, each all theirs"
    );
    assert_eq!(pool.stats().zygotes, 2);
}

/// A large request whose next piece cannot be sent (its helper died right after answering
/// the first) goes on, on a new helper, without waiting for any other event.
#[test]
fn a_piece_that_cannot_be_sent_is_resent_at_once() {
    let t = Fixture::new(
        Config {
            max_helpers: 1,
            ..config()
        },
        2 * BUFFER_SIZE,
        6,
    );
    warm_up(&t.lp, &t.pool);
    let only = t.pool.helper_pids()[0];
    let mut back = vec![0u8; t.data.len()];
    submit(&t.pool, 1, Op::Read, t.file.as_raw_fd(), 0, &mut back);
    // The loop does not run: the helper's answer to the first piece waits in its socket.
    std::thread::sleep(Duration::from_millis(500));
    signal(only, nix::sys::signal::Signal::SIGKILL);
    assert!(gone_soon(only));
    t.lp.run_until("the read, on a new helper", Duration::from_secs(5), || {
        outcome_of(1).is_some()
    });
    assert_eq!(outcome_of(1), Some(served(1, t.data.len() as isize)));
    assert!(back == t.data);
    assert_ne!(t.pool.helper_pids(), vec![only]);
}

#[test]
fn a_helper_that_died_unnoticed_counts_in_the_final_stats() {
    let t = Fixture::new(config(), 4096, 4);
    warm_up(&t.lp, &t.pool);
    let victim = t.pool.helper_pids()[0];
    signal(victim, nix::sys::signal::Signal::SIGKILL);
    // The loop does not run: the pool has not read the socket's end-of-file.
    assert!(gone_soon(victim), "victim never exited");
    assert_eq!(t.pool.stats().helper_deaths, 0);
    assert_eq!(t.pool.final_stats().helper_deaths, 1);
    assert!(t.pool.helper_pids().is_empty());
}

/// The zygote of the pool's first crew.
fn zygote_pid(pool: &Pool) -> i32 {
    pool.inner.borrow().crews[0]
        .zygote
        .as_ref()
        .expect("a zygote")
        .pid()
}

/// Whether `pid` is reaped (gone from /proc, not even a zombie).
fn reaped(pid: i32) -> bool {
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn a_dropped_pools_zygote_is_reaped_as_it_exits_with_no_request_after() {
    let lp = Loop::new();
    let pool = pool(&lp, config());
    warm_up(&lp, &pool);
    let zygote = zygote_pid(&pool);
    drop(pool);
    lp.run_until("the zygote reaped", LONG, || reaped(zygote));
    assert_eq!(crate::parent::reap::kept(), 0, "its pidfd is closed");
}

#[test]
fn a_zygote_let_go_by_an_idle_pool_is_reaped_as_it_exits() {
    let cfg = Config {
        idle_timeout: Duration::from_secs(1),
        ..config()
    };
    let t = Fixture::new(cfg, 10, 1);
    warm_up(&t.lp, &t.pool);
    let zygote = zygote_pid(&t.pool);
    t.lp.run_until("the crew let go", LONG, || {
        t.pool.inner.borrow().crews[0].zygote.is_none()
    });
    t.lp.run_until("the zygote reaped", LONG, || reaped(zygote));
    assert!(
        t.pool.inner.borrow().timer.is_none(),
        "no timer needed for it"
    );
}

/// A request's buffer between two guard zones that no reply may reach; the buffer itself
/// starts as `fill` (what a write sends), or as [`UNTOUCHED`] bytes (a read's target).
struct Guarded(Vec<u8>);

const GUARD: usize = 4096;
const GUARD_BYTE: u8 = 0xC3;
const UNTOUCHED: u8 = 0x5A;

impl Guarded {
    fn new(len: usize, fill: Option<&[u8]>) -> Guarded {
        let mut bytes = vec![GUARD_BYTE; len + 2 * GUARD];
        match fill {
            Some(src) => bytes[GUARD..GUARD + len].copy_from_slice(src),
            None => bytes[GUARD..GUARD + len].fill(UNTOUCHED),
        }
        Guarded(bytes)
    }

    fn data(&mut self) -> &mut [u8] {
        let len = self.0.len() - 2 * GUARD;
        &mut self.0[GUARD..GUARD + len]
    }

    fn guards_intact(&self) -> bool {
        let len = self.0.len();
        self.0[..GUARD]
            .iter()
            .chain(&self.0[len - GUARD..])
            .all(|&b| b == GUARD_BYTE)
    }
}

/// Helpers that answer every request with a few random datagrams (random lengths and bytes,
/// right and wrong sequence numbers, results in and out of range, descriptors attached),
/// and some with the right reply: over many pools (each one's helpers differ), no request
/// is answered twice or left unanswered, no byte outside a request's buffer changes, and in
/// it only the part the answer reports: a read's bytes there are the file's, the rest of its
/// buffer untouched; a write's reported bytes are on disk.
#[test]
fn replies_of_random_bytes_never_reach_past_a_request_and_every_request_ends() {
    const POOLS: u64 = 32;
    let big = BUFFER_SIZE + 4096; // two pieces
    let reads = [(0i64, 1usize), (5000, 100_000), (200_000, big)];
    let write_at = 200_000 + big as i64 + 8192;
    let writes = [(write_at, 1usize), (write_at + 4096, 70_000)];
    let file_len = write_at as usize + 100_000;
    let mut violations = 0;
    let mut ends: BTreeMap<&str, usize> = BTreeMap::new();
    for seed in 1..=POOLS {
        let hostile = crate::test_util::Hostile::new("random", seed);
        let lp = Loop::new();
        let cfg = Config {
            request_timeout: Duration::from_secs(2),
            ..config()
        };
        let pool = Pool::new("t".into(), cfg, hostile.program.clone(), lp.ev, record);
        let data = pattern(file_len, seed as u8);
        let file = temp_file(&data);
        let tag = |i: usize| (seed as usize) * 100 + i;
        let mut bufs: Vec<(i64, bool, Guarded)> = Vec::new();
        for &(offset, len) in &reads {
            bufs.push((offset, false, Guarded::new(len, None)));
        }
        for &(offset, len) in &writes {
            bufs.push((offset, true, Guarded::new(len, Some(&pattern(len, 99)))));
        }
        for (i, (offset, write, buf)) in bufs.iter_mut().enumerate() {
            let op = if *write { Op::Write } else { Op::Read };
            submit(&pool, tag(i), op, file.as_raw_fd(), *offset, buf.data());
        }
        lp.run_until("every request answered", LONG, || {
            (0..bufs.len()).all(|i| outcome_of(tag(i)).is_some())
        });
        let on_disk = std::fs::read(format!("/proc/self/fd/{}", file.as_raw_fd())).unwrap();
        for (i, (offset, write, buf)) in bufs.iter_mut().enumerate() {
            let answers = outcomes_of(tag(i));
            assert_eq!(answers.len(), 1, "request {i} of pool {seed}: {answers:?}");
            let reported = match answers[0] {
                Outcome::Finish { result, .. } => {
                    *ends
                        .entry(if result < 0 { "error" } else { "served" })
                        .or_default() += 1;
                    result.max(0) as usize
                }
                Outcome::Fallback { done, .. } => {
                    *ends.entry("next module").or_default() += 1;
                    done
                }
            };
            assert!(
                buf.guards_intact(),
                "pool {seed}: a guard zone of request {i} changed"
            );
            let at = *offset as usize;
            let data_now = buf.data();
            assert!(
                reported <= data_now.len(),
                "request {i}: {reported} bytes reported"
            );
            if *write {
                let sent = pattern(data_now.len(), 99);
                assert!(
                    on_disk[at..at + reported] == sent[..reported],
                    "pool {seed}: write {i} reported {reported} bytes not on disk"
                );
            } else {
                assert!(
                    data_now[..reported] == data[at..at + reported],
                    "pool {seed}: read {i} holds other bytes than the file's"
                );
                assert!(
                    data_now[reported..].iter().all(|&b| b == UNTOUCHED),
                    "pool {seed}: read {i} changed bytes past the {reported} it reported"
                );
            }
        }
        violations += pool.stats().violations;
        drop(pool);
    }
    eprintln!(
        "random replies: {violations} helpers ended for breaking the protocol; requests: {ends:?}"
    );
    assert!(violations >= POOLS, "too few violations seen: {violations}");
}

/// tevent takes a watched descriptor out of epoll by its number, and the kernel drops it
/// from epoll only once no descriptor anywhere refers to the socket: a watch freed after
/// its socket is closed would stay in epoll while another reference lives (here a copy
/// made by the test), and epoll would go on reporting the dead helper's hang-up with a
/// pointer to the freed event. Each watch goes first.
#[test]
fn a_helpers_watch_is_freed_before_its_socket_closes() {
    let cfg = Config {
        min_helpers: 1,
        ..config()
    };
    let t = Fixture::new(cfg, 10, 1);
    warm_up(&t.lp, &t.pool);
    let (pid, sock) = {
        let inner = t.pool.inner.borrow();
        let helper = &inner.helpers[0].process;
        (helper.pid(), helper.socket())
    };
    // SAFETY: dup of a descriptor the pool holds open; the copy is ours.
    let copy = unsafe { std::os::fd::OwnedFd::from_raw_fd(libc::dup(sock)) };
    signal(pid, nix::sys::signal::Signal::SIGKILL);
    t.lp.run_until("the helper buried", LONG, || {
        !t.pool.helper_pids().contains(&pid)
    });
    // Turns of the loop in which a stale event would be reported (and abort the process).
    let until = Instant::now() + Duration::from_millis(300);
    t.lp.run_until("more turns of the loop", LONG, || Instant::now() > until);
    drop(copy);
    assert_eq!(t.pool.stats().helper_deaths, 1);
}

/// `base` with each of `writes` (offset, bytes) written over it.
fn written_over(base: &[u8], writes: &[(usize, &[u8])]) -> Vec<u8> {
    let mut out = base.to_vec();
    for (offset, bytes) in writes {
        out[*offset..offset + bytes.len()].copy_from_slice(bytes);
    }
    out
}

fn content_of(file: &mut std::fs::File) -> Vec<u8> {
    let mut back = Vec::new();
    file.rewind().unwrap();
    file.read_to_end(&mut back).unwrap();
    back
}

/// Runs the loop until writes `tags` are answered; each must be served whole.
fn all_served(t: &Fixture, tags: std::ops::RangeInclusive<usize>, len: usize) {
    t.lp.run_until("the writes", LONG, || {
        tags.clone().all(|k| outcome_of(k).is_some())
    });
    for k in tags {
        assert_eq!(outcome_of(k), Some(served(k, len as isize)));
    }
}

/// `pieces` as (offset, bytes), one after the other from the file's start.
fn one_after_another(pieces: &[Vec<u8>]) -> Vec<(usize, &[u8])> {
    let mut offset = 0;
    pieces
        .iter()
        .map(|p| {
            offset += p.len();
            (offset - p.len(), &p[..])
        })
        .collect()
}

/// Whether job `id` rides along with another job's write in a helper now.
fn is_carried(pool: &Pool, id: JobId) -> bool {
    pool.inner.borrow().helpers.iter().any(|h| {
        matches!(&h.state, HelperState::Busy { riders, .. } if riders.iter().any(|r| r.job == id))
    })
}

/// Sequential writes of one file, from its start, submitted in order with tags 1, 2, ...
/// and queued; their jobs.
fn submit_sequential(t: &Fixture, pieces: &mut [Vec<u8>]) -> Vec<JobId> {
    let mut offset = 0;
    let mut ids = Vec::new();
    for (k, piece) in pieces.iter_mut().enumerate() {
        let len = piece.len();
        match submit(&t.pool, 1 + k, Op::Write, t.file.as_raw_fd(), offset, piece) {
            Submitted::Queued(id) => ids.push(id),
            other => panic!("write {k} not queued: {other:?}"),
        }
        offset += len as i64;
    }
    ids
}

#[test]
fn writes_that_continue_one_in_flight_are_gathered_into_one_helper_write() {
    const PIECE: usize = 128 << 10;
    let mut t = Fixture::new(config(), 8 * PIECE, 0);
    let stopped = stop_first_helper(&t.lp, &t.pool);
    let mut pieces: Vec<Vec<u8>> = (0..4).map(|k| pattern(PIECE, 10 + k)).collect();
    submit_sequential(&t, &mut pieces);
    // A write of the same file that continues none waits for nothing.
    let mut apart = pattern(4096, 20);
    submit(
        &t.pool,
        9,
        Op::Write,
        t.file.as_raw_fd(),
        6 * PIECE as i64,
        &mut apart,
    );
    t.lp.run_until("the write that continues none", LONG, || {
        outcome_of(9).is_some()
    });
    let held_until = Instant::now() + Duration::from_millis(300);
    t.lp.run_until("a while", LONG, || Instant::now() > held_until);
    let early: Vec<usize> = (2..=4).filter(|&k| outcome_of(k).is_some()).collect();
    assert!(
        early.is_empty(),
        "written by helpers of their own: {early:?}"
    );

    signal(stopped, nix::sys::signal::Signal::SIGCONT);
    all_served(&t, 1..=4, PIECE);
    let stats = t.pool.stats();
    // The second write took the third and fourth along.
    assert_eq!((stats.pwrites, stats.gathered_pwrites), (5, 2));
    let mut writes = one_after_another(&pieces);
    writes.push((6 * PIECE, &apart));
    let expected = written_over(&t.data, &writes);
    assert!(content_of(&mut t.file) == expected, "file content differs");
}

/// Writes of 64 KiB, one after the other, to a pool of one helper that waits 5 ms or more
/// before each request (erratic testing mode); returns once the first is answered, when
/// its reply has sent the others to that helper as one write, not begun yet.
fn carried_writes(n: usize, seed: u8) -> (Fixture, Vec<Vec<u8>>, Vec<JobId>) {
    const PIECE: usize = 64 << 10;
    let cfg = Config {
        min_helpers: 1,
        max_helpers: 1,
        erratic_testing_mode: true,
        ..config()
    };
    let t = Fixture::new(cfg, n * PIECE, 0);
    warm_up(&t.lp, &t.pool);
    let mut pieces: Vec<Vec<u8>> = (0..n).map(|k| pattern(PIECE, seed + k as u8)).collect();
    let ids = submit_sequential(&t, &mut pieces);
    t.lp.run_until("the first write", LONG, || outcome_of(1).is_some());
    // The second write is the helper's job, the ones after it ride along.
    for id in &ids[2..] {
        assert!(is_carried(&t.pool, *id), "job {id} not carried");
    }
    (t, pieces, ids)
}

#[test]
fn writes_carried_by_a_helper_that_died_are_written_again() {
    // The kill must come within the helper's erratic wait (5 ms or more); a test thread
    // kept off the CPU longer than that sees the writes done first, and tries again.
    for _ in 0..5 {
        OUTCOMES.with(|o| o.borrow_mut().clear());
        let (mut t, pieces, _) = carried_writes(4, 30);
        let carrier = t.pool.helper_pids()[0];
        signal(carrier, nix::sys::signal::Signal::SIGKILL);
        all_served(&t, 1..=4, pieces[0].len());
        let stats = t.pool.stats();
        if stats.retries == 0 {
            continue;
        }
        assert_eq!((stats.helper_deaths, stats.retries), (1, 1));
        // Counted once: by the write that went through, not by the one that died.
        assert_eq!((stats.pwrites, stats.gathered_pwrites), (4, 2));
        let expected = written_over(&t.data, &one_after_another(&pieces));
        assert!(content_of(&mut t.file) == expected, "file content differs");
        assert!(gone_soon(carrier), "carrier not reaped");
        return;
    }
    panic!("five times the helper wrote the carried writes before its kill");
}

#[test]
fn a_carried_write_smbd_freed_is_never_completed() {
    let (t, pieces, ids) = carried_writes(3, 40);
    // The second write carries the third, which smbd now frees.
    t.pool.forget(ids[2], 3 as *mut ffi::tevent_req);
    t.lp.run_until("the second write", LONG, || outcome_of(2).is_some());
    assert_eq!(outcome_of(2), Some(served(2, pieces[1].len() as isize)));
    let settled = Instant::now() + Duration::from_millis(100);
    t.lp.run_until("a while", LONG, || Instant::now() > settled);
    assert_eq!(outcome_of(3), None);
    assert!(t.pool.inner.borrow().jobs.is_empty(), "a job is left over");
}
