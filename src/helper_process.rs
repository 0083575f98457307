//! One helper process, seen from smbd: spawn it, hand it a request, read its reply, end it.
//!
//! Spawning prepares everything the child needs (socket, shared buffer) before `fork()`,
//! because the child may not allocate (see `helper_main`).

use crate::helper_main::{self, SharedBuf};
use crate::protocol::{self, Reply, Request};
use crate::zygote::{Spawned, Zygote};
use memmap2::MmapMut;
use nix::sys::socket::{self, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Size of each helper's shared buffer: the largest SMB2 read or write (8 MiB). Larger
/// requests are served in pieces of this size. Pages are only allocated when touched.
pub const BUFFER_SIZE: usize = 8 << 20;

pub struct HelperProcess {
    pid: Pid,
    sock: OwnedFd,
    buf: MmapMut,
    /// Set when the zygote forked the helper (the zygote reaps it; the pidfd names it
    /// safely); unset when smbd forked it itself (smbd reaps it).
    pidfd: Option<OwnedFd>,
}

/// What reading a helper's socket gave.
#[derive(Debug, PartialEq, Eq)]
pub enum ReplyRead {
    Reply(Reply),
    /// Nothing to read yet (spurious wake-up).
    NotYet,
    /// The helper is gone or spoke nonsense: it must be ended and its request retried.
    Dead,
}

impl HelperProcess {
    /// A helper whose shared buffer holds `buf_size` bytes: forked by the zygote if there is
    /// one (cheap whatever smbd's size), else by smbd itself.
    pub fn spawn(buf_size: usize, zygote: Option<&Zygote>) -> io::Result<HelperProcess> {
        match zygote {
            Some(z) => Self::from_zygote(z.spawn(buf_size)?),
            None => Self::fork(buf_size),
        }
    }

    fn from_zygote(spawned: Spawned) -> io::Result<HelperProcess> {
        let file = std::fs::File::from(spawned.memfd);
        // SAFETY: the memfd is private to this helper and never truncated under the mapping.
        let buf = unsafe { MmapMut::map_mut(&file) }?;
        set_nonblocking(&spawned.sock)?;
        Ok(HelperProcess {
            pid: spawned.pid,
            sock: spawned.sock,
            buf,
            pidfd: Some(spawned.pidfd),
        })
    }

    /// Forks a helper from this process.
    pub fn fork(buf_size: usize) -> io::Result<HelperProcess> {
        let (parent_sock, child_sock) = socket::socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        let buf = shared_buffer(buf_size)?;
        let shared = SharedBuf {
            ptr: buf.as_ptr() as *mut u8,
            len: buf.len(),
        };
        let parent = nix::unistd::getpid();
        // SAFETY: the child runs only helper_main::run, which makes async-signal-safe
        // calls on memory prepared above; it never returns into Rust code of the parent.
        match unsafe { nix::unistd::fork() }? {
            ForkResult::Child => {
                // SAFETY: freshly forked child; child_sock and the mapping are ours.
                unsafe { helper_main::run(child_sock.as_raw_fd(), shared, parent.as_raw()) }
            }
            ForkResult::Parent { child } => {
                drop(child_sock);
                set_nonblocking(&parent_sock)?;
                Ok(HelperProcess {
                    pid: child,
                    sock: parent_sock,
                    buf,
                    pidfd: None,
                })
            }
        }
    }

    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    /// The descriptor to watch for replies (and for the helper's death: EOF).
    pub fn socket(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    pub fn buffer(&mut self) -> &mut [u8] {
        &mut self.buf[..]
    }

    /// Sends a request with `fd`, the file to work on; the helper gets its own copy.
    pub fn send(&self, req: &Request, fd: RawFd) -> io::Result<()> {
        let iov = [IoSlice::new(protocol::as_bytes(req))];
        let fds = [fd];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        loop {
            match socket::sendmsg::<()>(
                self.sock.as_raw_fd(),
                &iov,
                &cmsg,
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
                None,
            ) {
                Ok(n) if n == iov[0].len() => return Ok(()),
                Ok(_) => return Err(io::Error::from_raw_os_error(libc::EMSGSIZE)),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Reads one reply without blocking.
    pub fn read_reply(&self) -> ReplyRead {
        // One byte more than a reply, so that an oversized message shows as such.
        let mut bytes = [0u8; std::mem::size_of::<Reply>() + 1];
        loop {
            match socket::recv(self.sock.as_raw_fd(), &mut bytes, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => return ReplyRead::Dead,
                Ok(n) => {
                    return match protocol::from_bytes::<Reply>(&bytes[..n]) {
                        Some(reply) => ReplyRead::Reply(reply),
                        None => ReplyRead::Dead,
                    }
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::EAGAIN) => return ReplyRead::NotYet,
                Err(_) => return ReplyRead::Dead,
            }
        }
    }
}

fn set_nonblocking(sock: &OwnedFd) -> io::Result<()> {
    nix::fcntl::fcntl(
        sock.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )?;
    Ok(())
}

impl Drop for HelperProcess {
    /// Ends the helper and reaps it: no helper outlives its pool, none stays a zombie.
    fn drop(&mut self) {
        if let Some(pidfd) = &self.pidfd {
            // The zygote's child: signalled through the pidfd (a pid could have been
            // reused once the zygote reaped it), reaped by the zygote.
            // SAFETY: pidfd_send_signal on a pidfd we own, without siginfo.
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    pidfd.as_raw_fd(),
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            };
            wait_exit(pidfd, REAP_WAIT);
            return;
        }
        let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL);
        if !reap_within(self.pid, REAP_WAIT) {
            // Stuck in an uninterruptible syscall (e.g. I/O on a dead NFS server): smbd must
            // not block on it. It is reaped later, by `reap_pending`.
            PENDING_REAP
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(self.pid);
        }
    }
}

/// How long ending a helper may wait for it to die (SIGKILL takes effect at once unless the
/// helper is inside an uninterruptible syscall).
const REAP_WAIT: Duration = Duration::from_millis(100);

/// Helpers killed but not dead yet, to reap later.
static PENDING_REAP: Mutex<Vec<Pid>> = Mutex::new(Vec::new());

/// Waits up to `limit` for `pid` to exit; true once it is reaped (or not our child any more:
/// smbd's own SIGCHLD handling may reap it first).
pub(crate) fn reap_within(pid: Pid, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)) {
            Ok(WaitStatus::StillAlive) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_micros(200))
            }
            Ok(WaitStatus::StillAlive) => return false,
            Err(nix::errno::Errno::EINTR) => continue,
            _ => return true,
        }
    }
}

/// Waits up to `limit` for the process of `pidfd` to exit (a pidfd polls readable then).
fn wait_exit(pidfd: &OwnedFd, limit: Duration) {
    let mut pfd = [libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    // SAFETY: one pollfd on a descriptor we own.
    unsafe { libc::poll(pfd.as_mut_ptr(), 1, limit.as_millis() as libc::c_int) };
}

/// Reaps helpers that were still dying when they were ended. Cheap when there are none.
pub fn reap_pending() {
    let mut pending = PENDING_REAP.lock().unwrap_or_else(|e| e.into_inner());
    pending.retain(|&pid| !reap_within(pid, Duration::ZERO));
}

/// A MAP_SHARED mapping of a memfd: the parent and the forked helper see the same pages.
fn shared_buffer(size: usize) -> io::Result<MmapMut> {
    let fd = nix::sys::memfd::memfd_create(
        c"aio_fork_buffer",
        nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
    )?;
    let file = std::fs::File::from(fd);
    file.set_len(size as u64)?;
    // SAFETY: the memfd is private to this module; nobody truncates it under the mapping.
    // The file is closed when this function returns; the mapping stays.
    unsafe { MmapMut::map_mut(&file) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Op, FLAG_ERRATIC};
    use crate::test_util::temp_file;
    use std::io::{Read, Seek};

    fn wait_reply(h: &HelperProcess) -> ReplyRead {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match h.read_reply() {
                ReplyRead::NotYet if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                other => return other,
            }
        }
    }

    fn request(seq: u64, op: Op, offset: i64, len: u64) -> Request {
        Request {
            seq,
            op: op as u32,
            flags: 0,
            offset,
            len,
        }
    }

    #[test]
    fn helper_reads_writes_and_fsyncs_through_the_shared_buffer() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        let mut file = temp_file(&data);
        let mut h = HelperProcess::fork(64 << 10).unwrap();

        h.send(&request(1, Op::Read, 10, 1000), file.as_raw_fd())
            .unwrap();
        let ReplyRead::Reply(r) = wait_reply(&h) else {
            panic!("no reply")
        };
        assert_eq!((r.seq, r.result), (1, 1000));
        assert_eq!(&h.buffer()[..1000], &data[10..1010]);

        h.buffer()[..5].copy_from_slice(b"hello");
        let mut req = request(2, Op::Write, 99_998, 5);
        req.flags = FLAG_ERRATIC;
        h.send(&req, file.as_raw_fd()).unwrap();
        let ReplyRead::Reply(r) = wait_reply(&h) else {
            panic!("no reply")
        };
        assert_eq!((r.seq, r.result), (2, 5));
        assert!(r.duration_ns > 0 || r.result == 5);

        h.send(&request(3, Op::Fsync, 0, 0), file.as_raw_fd())
            .unwrap();
        assert!(matches!(
            wait_reply(&h),
            ReplyRead::Reply(Reply {
                seq: 3,
                result: 0,
                ..
            })
        ));

        let mut back = Vec::new();
        file.rewind().unwrap();
        file.read_to_end(&mut back).unwrap();
        assert_eq!(back.len(), 100_003);
        assert_eq!(&back[99_998..], b"hello");
    }

    #[test]
    fn appends_go_to_the_end_whatever_the_offset() {
        let file = temp_file(b"head");
        let path = format!("/proc/self/fd/{}", file.as_raw_fd());
        let appender = std::fs::OpenOptions::new().append(true).open(path).unwrap();
        let mut h = HelperProcess::fork(4096).unwrap();
        h.buffer()[..4].copy_from_slice(b"tail");
        h.send(&request(1, Op::Append, -1, 4), appender.as_raw_fd())
            .unwrap();
        assert!(matches!(
            wait_reply(&h),
            ReplyRead::Reply(Reply { result: 4, .. })
        ));
        let content = std::fs::read(format!("/proc/self/fd/{}", file.as_raw_fd())).unwrap();
        assert_eq!(content, b"headtail");
    }

    #[test]
    fn read_past_end_of_file_is_short_and_oversized_requests_are_refused() {
        let file = temp_file(b"0123456789");
        let h = HelperProcess::fork(4096).unwrap();
        h.send(&request(1, Op::Read, 5, 100), file.as_raw_fd())
            .unwrap();
        assert!(matches!(
            wait_reply(&h),
            ReplyRead::Reply(Reply { result: 5, .. })
        ));
        h.send(&request(2, Op::Read, 0, 4097), file.as_raw_fd())
            .unwrap();
        let einval = -(libc::EINVAL as i64);
        assert!(
            matches!(wait_reply(&h), ReplyRead::Reply(Reply { result, .. }) if result == einval)
        );
    }

    #[test]
    fn errors_come_back_as_negative_errno() {
        let file = temp_file(b"x");
        let ro = std::fs::File::open("/proc/self/stat").unwrap();
        let h = HelperProcess::fork(4096).unwrap();
        h.send(&request(1, Op::Write, 0, 1), ro.as_raw_fd())
            .unwrap();
        let ReplyRead::Reply(r) = wait_reply(&h) else {
            panic!("no reply")
        };
        assert!(r.result < 0, "write to a read-only fd must fail: {r:?}");
        h.send(&request(2, Op::Read, -1, 1), file.as_raw_fd())
            .unwrap();
        let einval = -(libc::EINVAL as i64);
        assert!(
            matches!(wait_reply(&h), ReplyRead::Reply(Reply { result, .. }) if result == einval)
        );
    }

    #[test]
    fn a_killed_helper_reads_as_dead_and_drop_reaps_it() {
        let h = HelperProcess::fork(4096).unwrap();
        let pid = h.pid();
        assert_eq!(comm_of(pid).as_deref(), Some("aio_fork_helper"));
        nix::sys::signal::kill(h.pid, nix::sys::signal::Signal::SIGKILL).unwrap();
        assert_eq!(wait_reply(&h), ReplyRead::Dead);
        drop(h);
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "helper {pid} was not reaped"
        );
    }

    #[test]
    fn a_helper_from_the_zygote_serves_and_is_ended() {
        let zygote = Zygote::start().unwrap();
        let data = b"zygote-born".to_vec();
        let file = temp_file(&data);
        let mut h = HelperProcess::spawn(4096, Some(&zygote)).unwrap();
        h.send(&request(1, Op::Read, 0, 11), file.as_raw_fd())
            .unwrap();
        assert!(matches!(
            wait_reply(&h),
            ReplyRead::Reply(Reply { result: 11, .. })
        ));
        assert_eq!(&h.buffer()[..11], &data[..]);
        let pid = h.pid();
        drop(h);
        let gone = (0..500).any(|_| {
            std::thread::sleep(Duration::from_millis(2));
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
        });
        assert!(gone, "helper {pid} not ended and reaped by the zygote");
    }

    #[test]
    fn helper_keeps_no_inherited_descriptors() {
        let _decoy = std::fs::File::open("/proc/self/stat").unwrap();
        let h = HelperProcess::fork(4096).unwrap();
        // Wait until the child has set itself up (its comm changes before it closes fds,
        // and closing is the next step): poll its fd table until it settles on one entry.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let fds: Vec<_> = std::fs::read_dir(format!("/proc/{}/fd", h.pid()))
                .unwrap()
                .collect();
            if fds.len() == 1 {
                break;
            }
            assert!(Instant::now() < deadline, "helper holds {} fds", fds.len());
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn comm_of(pid: i32) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            let comm = comm.trim().to_string();
            if comm == "aio_fork_helper" || Instant::now() > deadline {
                return Some(comm);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
