//! Devices seen to hang, per smbd process: a breaker per file system.
//!
//! A helper found in uninterruptible sleep when its request times out, or one that does
//! not exit after its SIGKILL, waits for its file system (a disk or SAN path that stopped
//! answering, a hung FUSE or NFS backend). From then on nothing the module does for smbd
//! may wait for that device in smbd's own threads, where no signal could end the wait and
//! the connection, and smbd's exit, would hang with it: requests on it go to helpers only
//! (no page-cache try in smbd, never the next module), smbd's own calls through the module
//! on its files are answered EIO at once (`vfs::guarded`), and a close hands smbd's last
//! reference to a helper (`Op::Close`).
//!
//! The breaker closes again once every helper ended on the device has exited and the
//! device is known to answer: a stuck helper (one that outlived its SIGKILL, waiting for
//! the device) has exited, which it does only once its I/O came back; or a probe was
//! answered within the request timeout: an fsync through a helper of a file on the device,
//! which reaches the device (on ext4 and XFS an fsync of a clean file still sends a cache
//! flush). A probe that times out leaves its helper as one more to wait for.
//!
//! The state belongs to smbd's main thread, which makes every VFS call the module sees; the
//! shares of one connection process share it (one device, many shares).

use super::file_id::FileId;
use crate::parent::reap;
use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// A file system, by its device number (`st_dev`).
pub type Dev = u64;

struct Breaker {
    /// The helpers ended on this device, until they have exited.
    ended: Vec<Ended>,
    /// The device answered since the breaker opened (a stuck helper exited, or a probe).
    answered: bool,
    /// A descriptor of a file on the device, for probes.
    probe_file: OwnedFd,
    /// A probe is on its way.
    probing: bool,
    /// When the last probe was sent.
    last_probe: Option<Instant>,
    /// The pool that sends the probes (0: none; the next pool that can takes it).
    prober: u64,
    since: Instant,
}

/// A helper ended on a hung device.
struct Ended {
    pid: i32,
    pidfd: OwnedFd,
    /// It outlived its SIGKILL: it waits for the device.
    stuck: bool,
}

impl Breaker {
    /// Forgets ended helpers that have exited (a stuck one's exit means the device
    /// answered it); true if none is left.
    fn all_exited(&mut self) -> bool {
        let answered = &mut self.answered;
        self.ended.retain(|e| {
            let gone = reap::has_exited(e.pidfd.as_fd());
            *answered |= gone && e.stuck;
            !gone
        });
        self.ended.is_empty()
    }

    fn note(&mut self, ended: Ended) {
        match self.ended.iter_mut().find(|e| e.pid == ended.pid) {
            Some(known) => known.stuck |= ended.stuck,
            None => self.ended.push(ended),
        }
    }
}

thread_local! {
    static BREAKERS: RefCell<HashMap<Dev, Breaker>> = RefCell::new(HashMap::new());
}

/// Whether any device of this process is known to hang: the cheap test every guarded call
/// makes first.
pub fn any_open() -> bool {
    BREAKERS.with(|b| !b.borrow().is_empty())
}

/// Whether `dev` is known to hang.
pub fn is_open(dev: Dev) -> bool {
    BREAKERS.with(|b| b.borrow().contains_key(&dev))
}

/// Whether the file open as `fd` (any descriptor, `O_PATH` and `AT_FDCWD` too) is on a
/// device known to hang. Asks nothing of the file system (see `device_of`).
pub fn open_for(fd: RawFd) -> bool {
    any_open() && device_of(fd).is_some_and(is_open)
}

/// The device of the file open as `fd` (`AT_FDCWD`: the working directory); never waits
/// for a backend (see `FileId::of`).
pub fn device_of(fd: RawFd) -> Option<Dev> {
    FileId::of(fd).map(|f| f.dev())
}

/// A helper that hangs in its file system.
pub struct Hung<'a> {
    pub pid: i32,
    pub pidfd: BorrowedFd<'a>,
    /// It outlived its SIGKILL.
    pub stuck: bool,
}

/// Records that `helper` hangs in `dev`, working on the file open as `file`. Opens the
/// breaker if it was closed; true if it did. `prober`: the pool that saw it, which probes
/// unless another one does.
pub fn trip(dev: Dev, helper: Hung, file: BorrowedFd, prober: u64) -> bool {
    let ended = helper.pidfd.try_clone_to_owned().ok().map(|pidfd| Ended {
        pid: helper.pid,
        pidfd,
        stuck: helper.stuck,
    });
    BREAKERS.with(|b| {
        let mut b = b.borrow_mut();
        if let Some(breaker) = b.get_mut(&dev) {
            if let Some(ended) = ended {
                breaker.note(ended);
            }
            if breaker.prober == 0 {
                breaker.prober = prober;
            }
            return false;
        }
        let Ok(probe_file) = file.try_clone_to_owned() else {
            tracing::error!("cannot keep a descriptor of a hung device to probe it");
            return false;
        };
        tracing::warn!(
            device = %name(dev),
            "a helper hangs in the kernel on this device: smbd's own calls on its files \
             through aio_fork now fail with EIO until it answers again"
        );
        b.insert(
            dev,
            Breaker {
                ended: ended.into_iter().collect(),
                answered: false,
                probe_file,
                probing: false,
                last_probe: None,
                prober,
                since: Instant::now(),
            },
        );
        true
    })
}

/// A probe to send: a descriptor of a file on the device, owned by the probe, and the
/// ticket that reports its outcome when the probe's job ends.
pub struct Probe {
    pub file: OwnedFd,
    pub ticket: Ticket,
}

/// Reports a probe's outcome to its breaker when dropped: answered (the device answers:
/// the breaker closes once its ended helpers are gone), or not.
pub struct Ticket {
    dev: Dev,
    answered: bool,
}

impl Ticket {
    /// The helper answered the probe (success or an error: the device answers).
    pub fn answered(&mut self) {
        self.answered = true;
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let (dev, answered) = (self.dev, self.answered);
        BREAKERS.with(|b| {
            let mut b = b.borrow_mut();
            if let Some(breaker) = b.get_mut(&dev) {
                breaker.probing = false;
                breaker.answered |= answered;
                close_if_answered(&mut b, dev);
            }
        })
    }
}

/// Closes the breaker of `dev` if every helper ended there has exited and the device has
/// answered; true if it did.
fn close_if_answered(b: &mut HashMap<Dev, Breaker>, dev: Dev) -> bool {
    let Some(breaker) = b.get_mut(&dev) else {
        return false;
    };
    if !(breaker.all_exited() && breaker.answered) {
        return false;
    }
    let hung_for = breaker.since.elapsed();
    b.remove(&dev);
    tracing::warn!(
        device = %name(dev),
        hung_for_s = hung_for.as_secs(),
        "the device answers again: smbd's calls on it go through"
    );
    true
}

/// Closes the breakers whose device has answered, and returns the probes pool `prober`
/// should send now: one per device it probes (or, if nobody does, that it `can` probe),
/// once every helper ended there has exited, no probe is on its way, and the last one is
/// at least `every` old.
pub fn probes_due(prober: u64, can: impl Fn(Dev) -> bool, every: Duration) -> Vec<(Dev, Probe)> {
    BREAKERS.with(|b| {
        let mut b = b.borrow_mut();
        let devs: Vec<Dev> = b.keys().copied().collect();
        let mut due = Vec::new();
        for dev in devs {
            if close_if_answered(&mut b, dev) {
                continue;
            }
            let Some(breaker) = b.get_mut(&dev) else {
                continue;
            };
            if breaker.prober == 0 && can(dev) {
                breaker.prober = prober;
            }
            let waited = breaker.last_probe.map_or(true, |t| t.elapsed() >= every);
            if breaker.prober != prober || breaker.probing || !waited || !breaker.all_exited() {
                continue;
            }
            let Ok(file) = breaker.probe_file.try_clone() else {
                continue;
            };
            breaker.probing = true;
            breaker.last_probe = Some(Instant::now());
            let ticket = Ticket {
                dev,
                answered: false,
            };
            due.push((dev, Probe { file, ticket }));
        }
        due
    })
}

/// Whether pool `prober` probes an open breaker, or one waits for a prober: the pool must
/// then wake up now and then to see to it.
pub fn probes_any(prober: u64) -> bool {
    BREAKERS.with(|b| {
        b.borrow()
            .values()
            .any(|br| br.prober == prober || br.prober == 0)
    })
}

/// Pool `prober` is going away: its breakers wait for another pool to probe them.
pub fn abandon(prober: u64) {
    BREAKERS.with(|b| {
        for breaker in b.borrow_mut().values_mut().filter(|br| br.prober == prober) {
            breaker.prober = 0;
            breaker.probing = false;
        }
    })
}

/// "major:minor", as admins find the device in /proc/self/mountinfo.
pub fn name(dev: Dev) -> String {
    format!("{}:{}", libc::major(dev), libc::minor(dev))
}

#[cfg(test)]
pub fn reset() {
    BREAKERS.with(|b| b.borrow_mut().clear());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::temp_file;
    use std::os::fd::AsRawFd;

    /// A child that exits when its stdin is closed, and its pidfd.
    fn child_until_stdin_closes() -> (OwnedFd, std::process::Child) {
        let child = std::process::Command::new("cat")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // SAFETY: pidfd_open of our own child.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id(), 0) };
        assert!(fd >= 0);
        // SAFETY: a new descriptor we own.
        let pidfd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as RawFd) };
        (pidfd, child)
    }

    fn end(mut child: std::process::Child) {
        drop(child.stdin.take());
        child.wait().unwrap();
    }

    fn hung<'a>(pidfd: &'a OwnedFd, child: &std::process::Child, stuck: bool) -> Hung<'a> {
        Hung {
            pid: child.id() as i32,
            pidfd: pidfd.as_fd(),
            stuck,
        }
    }

    #[test]
    fn a_killed_helper_leaves_it_open_until_a_probe_is_answered() {
        reset();
        let file = temp_file(b"x");
        let dev = device_of(file.as_raw_fd()).unwrap();
        assert!(!open_for(file.as_raw_fd()));
        let (pidfd, child) = child_until_stdin_closes();
        assert!(trip(dev, hung(&pidfd, &child, false), file.as_fd(), 7));
        assert!(open_for(file.as_raw_fd()) && is_open(dev) && probes_any(7));
        // Its helper has not exited: no probe yet.
        assert!(probes_due(7, |_| false, Duration::ZERO).is_empty());
        end(child);
        // Exited at once after its kill: that says nothing of the device.
        let mut due = probes_due(7, |_| false, Duration::ZERO);
        assert_eq!(due.len(), 1);
        assert!(is_open(dev));
        // One probe at a time; other pools do not probe a device that has a prober.
        assert!(probes_due(7, |_| false, Duration::ZERO).is_empty());
        assert!(probes_due(8, |_| true, Duration::ZERO).is_empty());
        let (_, mut probe) = due.pop().unwrap();
        assert_eq!(device_of(probe.file.as_raw_fd()), Some(dev));
        probe.ticket.answered();
        drop(probe);
        assert!(!is_open(dev) && !any_open());
    }

    #[test]
    fn a_stuck_helper_that_exits_closes_it_without_a_probe() {
        reset();
        let file = temp_file(b"x");
        let dev = device_of(file.as_raw_fd()).unwrap();
        let (pidfd, child) = child_until_stdin_closes();
        assert!(trip(dev, hung(&pidfd, &child, false), file.as_fd(), 3));
        // The same helper, found stuck after its grace.
        assert!(!trip(dev, hung(&pidfd, &child, true), file.as_fd(), 3));
        assert!(probes_due(3, |_| false, Duration::ZERO).is_empty());
        end(child);
        assert!(probes_due(3, |_| false, Duration::ZERO).is_empty());
        assert!(!is_open(dev));
    }

    #[test]
    fn an_unanswered_probe_keeps_it_open_and_another_pool_adopts_an_abandoned_one() {
        reset();
        let file = temp_file(b"x");
        let dev = device_of(file.as_raw_fd()).unwrap();
        let (pidfd, child) = child_until_stdin_closes();
        let pid = child.id() as i32;
        end(child);
        let gone = || Hung {
            pid,
            pidfd: pidfd.as_fd(),
            stuck: false,
        };
        assert!(trip(dev, gone(), file.as_fd(), 1));
        assert!(!trip(dev, gone(), file.as_fd(), 2));
        let (_, probe) = probes_due(1, |_| false, Duration::ZERO).pop().unwrap();
        drop(probe);
        assert!(is_open(dev));
        // Not again before `every`.
        assert!(probes_due(1, |_| false, Duration::from_secs(60)).is_empty());
        abandon(1);
        assert!(probes_any(1) && probes_any(2));
        assert!(probes_due(2, |_| false, Duration::ZERO).is_empty());
        assert_eq!(probes_due(2, |d| d == dev, Duration::ZERO).len(), 1);
        assert!(!probes_any(1));
        reset();
    }
}
