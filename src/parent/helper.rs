//! One helper process, seen from smbd: hand it a request, read its reply, end it.

use super::zygote::{Spawned, Zygote};
use super::{handover, reap};
use crate::protocol::{self, Reply, Request};
use memmap2::MmapMut;
use nix::sys::socket::{self, ControlMessage, MsgFlags};
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;

/// Size of each helper's shared buffer: the largest SMB2 read or write (8 MiB). Larger
/// requests are served in pieces of this size. Pages are only allocated when touched.
pub const BUFFER_SIZE: usize = 8 << 20;

pub struct HelperProcess {
    pid: i32,
    sock: OwnedFd,
    buf: MmapMut,
    /// Names the helper for good (its pid may be reused once the zygote reaped it).
    pidfd: OwnedFd,
    /// The helper's parent: it reaps the helper, and ends it when smbd may not.
    zygote: Rc<Zygote>,
}

/// What reading a helper's socket gave.
#[derive(Debug, PartialEq, Eq)]
pub enum ReplyRead {
    /// A message of a reply's size: whether it answers what was asked is the pool's to say.
    Reply(Reply),
    /// Nothing to read yet (spurious wake-up).
    NotYet,
    /// The helper is gone: it must be ended and its request retried.
    Dead,
    /// A message no helper of ours sends (not a reply's size): the helper breaks the
    /// protocol.
    Malformed,
}

impl HelperProcess {
    /// A new helper of `zygote` whose shared buffer holds `buf_size` bytes, waiting for it
    /// (unit tests only: the pool asks and takes the answer when it comes).
    #[cfg(test)]
    pub fn spawn(zygote: &Rc<Zygote>, buf_size: usize) -> io::Result<HelperProcess> {
        let spawned = zygote.spawn(buf_size)?;
        Self::from_spawned(spawned, buf_size, zygote.clone())
    }

    /// The helper `zygote` answered with, once what it handed over is checked (see
    /// `handover`), its buffer mapped and a pidfd of smbd's own opened for it.
    pub fn from_spawned(
        s: Spawned,
        buf_size: usize,
        zygote: Rc<Zygote>,
    ) -> io::Result<HelperProcess> {
        let file = std::fs::File::from(s.memfd);
        handover::buffer(&file, buf_size)?;
        handover::control_socket(&s.sock)?;
        let pidfd = handover::helper_pidfd(s.pid, zygote.pid())?;
        // SAFETY: the memfd is a tmpfs file sealed against shrinking (checked above), so
        // the mapping can never lose its pages under us.
        let buf = unsafe { memmap2::MmapOptions::new().len(buf_size).map_mut(&file) }?;
        set_nonblocking(&s.sock)?;
        Ok(HelperProcess {
            pid: s.pid,
            sock: s.sock,
            buf,
            pidfd,
            zygote,
        })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The descriptor to watch for replies (and for the helper's death: EOF).
    pub fn socket(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// The helper's pidfd: readable once it has exited.
    pub fn pidfd(&self) -> RawFd {
        self.pidfd.as_raw_fd()
    }

    /// Whether the helper has exited (its pidfd is readable).
    pub fn exited(&self) -> bool {
        reap::has_exited(self.pidfd.as_fd())
    }

    /// SIGKILLs the helper, through the zygote if smbd, acting as another user right now,
    /// may not signal it.
    pub fn kill(&self) {
        if !reap::kill(&self.pidfd) {
            self.zygote.end_helper(self.pid);
        }
    }

    /// Gives the shared buffer's pages back to the kernel (the memfd's and so the helper's
    /// too): an idle helper holds no memory for its buffer. The next request's data
    /// faults fresh zeroed pages in. The helper must not be using the buffer.
    pub fn release_buffer(&mut self) {
        let (ptr, len) = (self.buf.as_mut_ptr(), self.buf.len());
        // SAFETY: our own shared mapping of `len` bytes; MADV_REMOVE punches the pages out
        // of the memfd (shmem), which is sealed against shrinking, not against holes.
        let r = unsafe { libc::madvise(ptr as *mut libc::c_void, len, libc::MADV_REMOVE) };
        if r != 0 {
            tracing::debug!(error = %io::Error::last_os_error(), "MADV_REMOVE of a helper buffer failed");
        }
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
        read_reply_from(self.sock.as_raw_fd())
    }
}

/// Reads one message from a helper's socket `sock` without blocking. Descriptors sent
/// along with it are not received: the kernel closes them, none reaches smbd.
fn read_reply_from(sock: RawFd) -> ReplyRead {
    // One byte more than a reply, so that an oversized message shows as such.
    let mut bytes = [0u8; std::mem::size_of::<Reply>() + 1];
    loop {
        match socket::recv(sock, &mut bytes, MsgFlags::MSG_DONTWAIT) {
            Ok(0) => return ReplyRead::Dead,
            Ok(n) => {
                return match protocol::from_bytes::<Reply>(&bytes[..n]) {
                    Some(reply) => ReplyRead::Reply(reply),
                    None => ReplyRead::Malformed,
                }
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::EAGAIN) => return ReplyRead::NotYet,
            Err(_) => return ReplyRead::Dead,
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
    /// Ends the helper without waiting; the zygote reaps it. smbd may be acting as another
    /// user than the helper's right now, and then may not signal it: the zygote does.
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Op, FLAG_ERRATIC};
    use crate::test_util::temp_file;
    use std::io::{Read, Seek};
    use std::time::{Duration, Instant};

    /// A helper of a zygote of this test process's credentials.
    fn spawn(buf_size: usize) -> HelperProcess {
        HelperProcess::spawn(&crate::test_util::zygote(), buf_size).unwrap()
    }

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
        let mut h = spawn(64 << 10);

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
        let mut h = spawn(4096);
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
        let h = spawn(4096);
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
        let h = spawn(4096);
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
    fn a_killed_helper_reads_as_dead_and_drop_has_it_reaped() {
        let h = spawn(4096);
        let pid = h.pid();
        assert_eq!(comm_of(pid).as_deref(), Some("aio_fork_helper"));
        let (zygote, _) = crate::test_util::parent_of(pid);
        assert_ne!(
            zygote,
            std::process::id() as i32,
            "helpers are the zygote's children"
        );
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        assert_eq!(wait_reply(&h), ReplyRead::Dead);
        drop(h);
        assert!(
            crate::test_util::gone_soon(pid),
            "helper {pid} was not reaped"
        );
    }

    #[test]
    fn a_released_buffer_holds_no_pages_and_still_serves() {
        let file = temp_file(&[5u8; 1 << 20]);
        let mut h = spawn(1 << 20);
        h.send(&request(1, Op::Read, 0, 1 << 20), file.as_raw_fd())
            .unwrap();
        assert!(
            matches!(wait_reply(&h), ReplyRead::Reply(Reply { result, .. }) if result == 1 << 20)
        );
        let resident = |h: &mut HelperProcess| crate::test_util::resident_pages(h.buffer());
        assert_eq!(resident(&mut h), 256, "the read filled the buffer");
        h.release_buffer();
        assert_eq!(resident(&mut h), 0, "released");
        h.send(&request(2, Op::Read, 4096, 4096), file.as_raw_fd())
            .unwrap();
        assert!(matches!(
            wait_reply(&h),
            ReplyRead::Reply(Reply { result: 4096, .. })
        ));
        assert!(h.buffer()[..4096].iter().all(|&b| b == 5));
    }

    /// Random datagrams on a helper's socket, with up to four descriptors each: a reply
    /// only from exactly a reply's bytes; an empty one reads as the helper's end; no
    /// descriptor reaches smbd.
    #[test]
    fn random_datagrams_decode_to_a_reply_only_when_reply_sized_and_bring_no_descriptor() {
        use crate::test_util::{Marker, TestRng};
        use nix::sys::socket::{sendmsg, socketpair, AddressFamily, ControlMessage, SockFlag};
        let marker = Marker::new();
        let mut rng = TestRng::new(21);
        let reply_len = std::mem::size_of::<Reply>();
        let (theirs, ours) = socketpair(
            AddressFamily::Unix,
            nix::sys::socket::SockType::SeqPacket,
            None,
            SockFlag::empty(),
        )
        .unwrap();
        let mut kinds = [0usize; 3]; // replies, malformed, ends
        for _ in 0..20_000 {
            let len = match rng.below(4) {
                0 => reply_len,
                1 => reply_len - 1 + rng.below(3) as usize,
                _ => rng.below(64) as usize,
            };
            let bytes = rng.bytes(len);
            let fds: Vec<OwnedFd> = (0..rng.below(5)).map(|_| marker.dup()).collect();
            let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
            let cmsg = [ControlMessage::ScmRights(&raw)];
            let cmsgs = if raw.is_empty() { &[][..] } else { &cmsg[..] };
            let iov = [IoSlice::new(&bytes)];
            sendmsg::<()>(theirs.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None).unwrap();
            drop(fds);
            match read_reply_from(ours.as_raw_fd()) {
                ReplyRead::Reply(r) => {
                    assert_eq!(protocol::as_bytes(&r), &bytes[..]);
                    kinds[0] += 1;
                }
                ReplyRead::Malformed => {
                    assert!(len != reply_len && len != 0);
                    kinds[1] += 1;
                }
                ReplyRead::Dead => {
                    assert_eq!(len, 0);
                    kinds[2] += 1;
                }
                ReplyRead::NotYet => panic!("a datagram was waiting"),
            }
            assert_eq!(marker.open_elsewhere(), 0, "a descriptor came through");
        }
        assert_eq!(read_reply_from(ours.as_raw_fd()), ReplyRead::NotYet);
        eprintln!("helper datagrams: {kinds:?} (replies, malformed, empty)");
        assert!(kinds.iter().all(|&n| n > 0), "{kinds:?}");
    }

    #[test]
    fn helper_keeps_no_inherited_descriptors() {
        let _decoy = std::fs::File::open("/proc/self/stat").unwrap();
        let h = spawn(4096);
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
