//! The zygote seen from smbd: the helper program, started as the user of a request, then
//! asked for each new helper of that user. See `child::zygote` for its side.
//!
//! Nothing here waits: the zygote's hello and its answers arrive on its socket, which the
//! pool watches on smbd's event loop, and are read with `next_message` when it is readable.

use super::credentials::Credentials;
use super::processes::Slot;
use super::reap;
use crate::protocol::{self, ZygoteHello, ZygoteOp, ZygoteReply, ZygoteRequest};
use std::cell::Cell;
use std::ffi::{CStr, CString};
use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// How long the zygote may take to answer (its hello, or a spawn) before smbd gives up on it.
pub const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Where the control socket goes in the program (see `child::zygote::CONTROL_FD`).
const CONTROL_FD: RawFd = crate::child::zygote::CONTROL_FD;

pub struct Zygote {
    pid: i32,
    sock: OwnedFd,
    /// The hello it must send first.
    expected: ZygoteHello,
    hello_seen: Cell<bool>,
    /// Always set; taken only in `drop`, to reap the zygote.
    pidfd: Option<OwnedFd>,
    _slot: Slot,
}

/// What the zygote said.
pub enum Message {
    /// Its hello, as expected: it runs as the user it was started for.
    Ready,
    /// The answer to the oldest spawn request.
    Spawned(io::Result<Spawned>),
}

/// A helper the zygote forked, as it says: its pid, smbd's end of its socket, its buffer
/// (checked before use: see `handover`).
pub struct Spawned {
    pub pid: i32,
    pub sock: OwnedFd,
    pub memfd: OwnedFd,
}

impl Zygote {
    /// Starts `program` as a zygote holding `creds`, which must be the calling thread's
    /// credentials (the program takes the thread's effective ids, and says in its hello
    /// which it got). Returns once the program is spawned, before its hello.
    pub fn start(program: &CStr, creds: &Credentials, slot: Slot) -> io::Result<Zygote> {
        let (ours, theirs) = socketpair()?;
        let pid = spawn(program, &theirs)?;
        drop(theirs);
        // SAFETY: pidfd_open of the child just spawned (not reaped: smbd's SIGCHLD
        // handling could only reap it once it exited, and then the hello check fails).
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as RawFd;
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor just opened: ours.
        let pidfd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Zygote {
            pid,
            sock: ours,
            expected: ZygoteHello {
                version: protocol::PROTOCOL_VERSION,
                pid,
                uid: creds.uid,
                gid: creds.gid,
            },
            hello_seen: Cell::new(false),
            pidfd: Some(pidfd),
            _slot: slot,
        })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The socket to watch for its messages (and its end: EOF).
    pub fn socket(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// Asks for a helper with a `buf_size`-byte shared buffer; the answer is a later
    /// [`Message::Spawned`]. Requests made before the hello wait in the socket.
    pub fn ask_spawn(&self, buf_size: usize) -> io::Result<()> {
        self.send(ZygoteOp::Spawn, 0, buf_size)
    }

    /// Reads the zygote's next message without waiting: `None` if there is none yet. An
    /// error (it ended, or said something it should not) means the zygote is unusable.
    pub fn next_message(&self) -> io::Result<Option<Message>> {
        if !self.hello_seen.get() {
            let mut hello = ZygoteHello::default();
            if !self.receive(&mut hello, &mut [])? {
                return Ok(None);
            }
            if hello != self.expected {
                tracing::error!(?hello, expected = ?self.expected, "the helper program answered wrongly");
                return Err(io::Error::from_raw_os_error(libc::EPROTO));
            }
            self.hello_seen.set(true);
            return Ok(Some(Message::Ready));
        }
        let mut reply = ZygoteReply::default();
        let mut fds: [Option<OwnedFd>; 2] = [None, None];
        if !self.receive(&mut reply, &mut fds)? {
            return Ok(None);
        }
        if reply.error != 0 {
            return Ok(Some(Message::Spawned(Err(io::Error::from_raw_os_error(
                reply.error,
            )))));
        }
        let [Some(sock), Some(memfd)] = fds else {
            return Err(io::Error::from_raw_os_error(libc::EPROTO));
        };
        Ok(Some(Message::Spawned(Ok(Spawned {
            pid: reply.pid,
            sock,
            memfd,
        }))))
    }

    /// Asks the zygote to SIGKILL its helper `pid` (for when smbd, acting as another user,
    /// may not signal it).
    pub fn end_helper(&self, pid: i32) {
        let _ = self.send(ZygoteOp::End, pid, 0);
    }

    fn send(&self, op: ZygoteOp, pid: i32, buf_size: usize) -> io::Result<()> {
        let req = ZygoteRequest {
            op: op as u32,
            pid,
            buf_size: buf_size as u64,
        };
        let bytes = protocol::as_bytes(&req);
        // SAFETY: send of a plain byte buffer on our socket.
        let n = unsafe {
            libc::send(
                self.sock.as_raw_fd(),
                bytes.as_ptr() as *const libc::c_void,
                bytes.len(),
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        };
        if n != bytes.len() as isize {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Receives one message into `msg` with up to `fds.len()` descriptors, without
    /// waiting; false if none is there yet.
    fn receive<T: protocol::Wire>(
        &self,
        msg: &mut T,
        fds: &mut [Option<OwnedFd>],
    ) -> io::Result<bool> {
        let got = match recv_with_fds(self.sock.as_raw_fd(), msg, fds.len()) {
            Ok(got) => got,
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => return Ok(false),
            Err(e) => return Err(e),
        };
        if got.bytes == 0 {
            return Err(io::Error::from_raw_os_error(libc::EPIPE));
        }
        if got.bytes != size_of::<T>() || got.fds.len() > fds.len() || got.truncated {
            return Err(io::Error::from_raw_os_error(libc::EPROTO));
        }
        for (slot, fd) in fds.iter_mut().zip(got.fds) {
            *slot = Some(fd);
        }
        Ok(true)
    }
}

/// Waiting for the zygote, for the unit tests, which have no event loop of their own.
#[cfg(test)]
impl Zygote {
    /// A zygote seen from smbd with no process behind it: the test speaks for it on the
    /// other end of `sock`, and must say `expected` first.
    fn over(sock: OwnedFd, expected: ZygoteHello, slot: Slot) -> Zygote {
        Zygote {
            pid: expected.pid,
            sock,
            expected,
            hello_seen: Cell::new(false),
            pidfd: None,
            _slot: slot,
        }
    }

    /// Waits for the next message (up to [`ANSWER_TIMEOUT`]).
    pub fn wait_message(&self) -> io::Result<Message> {
        let deadline = std::time::Instant::now() + ANSWER_TIMEOUT;
        loop {
            if let Some(m) = self.next_message()? {
                return Ok(m);
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(io::Error::from_raw_os_error(libc::ETIMEDOUT));
            }
            let mut pfd = [libc::pollfd {
                fd: self.sock.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            // SAFETY: one pollfd on our own socket.
            unsafe { libc::poll(pfd.as_mut_ptr(), 1, left.as_millis() as i32 + 1) };
        }
    }

    /// Asks for a helper and waits for it (the hello first, if not seen yet).
    pub fn spawn(&self, buf_size: usize) -> io::Result<Spawned> {
        self.ask_spawn(buf_size)?;
        loop {
            match self.wait_message()? {
                Message::Ready => continue,
                Message::Spawned(s) => return s,
            }
        }
    }
}

impl Drop for Zygote {
    /// Ends the zygote (its helpers follow it: parent-death signal) without waiting: it
    /// exits once its socket closes, and is killed in case it is stopped or stuck.
    fn drop(&mut self) {
        let Some(pidfd) = self.pidfd.take() else {
            return;
        };
        reap::kill(&pidfd);
        reap::reap_or_keep(pidfd);
    }
}

fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut pair = [-1; 2];
    // SAFETY: socketpair into a two-element array.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            pair.as_mut_ptr(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: two descriptors just created: ours.
    Ok(unsafe { (OwnedFd::from_raw_fd(pair[0]), OwnedFd::from_raw_fd(pair[1])) })
}

/// posix_spawn of `program zygote <version> <our pid>` with `sock` as fd 3 and no other
/// descriptor, default signals, an empty environment. glibc's posix_spawn shares smbd's
/// memory until the exec (CLONE_VM|CLONE_VFORK): nothing of smbd is copied, and its cost
/// does not grow with smbd's size.
fn spawn(program: &CStr, sock: &OwnedFd) -> io::Result<i32> {
    let version = CString::new(protocol::PROTOCOL_VERSION.to_string()).expect("digits");
    // SAFETY: getpid takes no arguments.
    let me = CString::new(unsafe { libc::getpid() }.to_string()).expect("digits");
    let argv = [
        program.as_ptr(),
        c"zygote".as_ptr(),
        version.as_ptr(),
        me.as_ptr(),
        std::ptr::null(),
    ];
    let envp: [*const libc::c_char; 1] = [std::ptr::null()];
    // SAFETY: the file actions and attributes are initialised, used and destroyed here;
    // argv/envp are NULL-terminated arrays of live C strings.
    unsafe {
        let mut actions: libc::posix_spawn_file_actions_t = zeroed();
        let mut attr: libc::posix_spawnattr_t = zeroed();
        libc::posix_spawn_file_actions_init(&mut actions);
        libc::posix_spawnattr_init(&mut attr);
        // If the socket is fd 3 already, glibc (2.29+) clears its close-on-exec flag.
        libc::posix_spawn_file_actions_adddup2(&mut actions, sock.as_raw_fd(), CONTROL_FD);
        libc::posix_spawn_file_actions_addclosefrom_np(&mut actions, CONTROL_FD + 1);
        let mut all: libc::sigset_t = zeroed();
        libc::sigfillset(&mut all);
        libc::posix_spawnattr_setsigdefault(&mut attr, &all);
        let mut none: libc::sigset_t = zeroed();
        libc::sigemptyset(&mut none);
        libc::posix_spawnattr_setsigmask(&mut attr, &none);
        libc::posix_spawnattr_setflags(
            &mut attr,
            (libc::POSIX_SPAWN_SETSIGDEF | libc::POSIX_SPAWN_SETSIGMASK) as libc::c_short,
        );
        let mut pid: libc::pid_t = -1;
        let r = libc::posix_spawn(
            &mut pid,
            program.as_ptr(),
            &actions,
            &attr,
            argv.as_ptr() as *const *mut libc::c_char,
            envp.as_ptr() as *const *mut libc::c_char,
        );
        libc::posix_spawn_file_actions_destroy(&mut actions);
        libc::posix_spawnattr_destroy(&mut attr);
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        Ok(pid)
    }
}

/// One datagram received: its length, every descriptor the kernel installed (each owned,
/// so none leaks whatever happens next), and whether something was cut off.
pub(crate) struct Received {
    pub bytes: usize,
    pub fds: Vec<OwnedFd>,
    pub truncated: bool,
}

/// Receives one datagram into `msg`, with room for `max_fds` descriptors plus one, so
/// that a message carrying more shows as such.
pub(crate) fn recv_with_fds<T: protocol::Wire>(
    sock: RawFd,
    msg: &mut T,
    max_fds: usize,
) -> io::Result<Received> {
    let mut iov = libc::iovec {
        iov_base: msg as *mut T as *mut libc::c_void,
        iov_len: size_of::<T>(),
    };
    // Room for max_fds + 1 descriptors (at most 7); u64 for cmsghdr alignment.
    let mut cmsg_buf = [0u64; 8];
    let room = ((max_fds + 1).min(7) * size_of::<RawFd>()) as u32;
    // SAFETY: msghdr, iovec and control buffer live on the stack for the call; the CMSG_*
    // walk stays within what the kernel filled in (msg_controllen).
    unsafe {
        let mut hdr: libc::msghdr = zeroed();
        hdr.msg_iov = &mut iov;
        hdr.msg_iovlen = 1;
        hdr.msg_control = cmsg_buf.as_mut_ptr() as *mut libc::c_void;
        hdr.msg_controllen = libc::CMSG_SPACE(room) as usize;
        let n = loop {
            let n = libc::recvmsg(sock, &mut hdr, libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT);
            if n >= 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                break n;
            }
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut fds = Vec::new();
        let mut cmsg = libc::CMSG_FIRSTHDR(&hdr);
        while !cmsg.is_null() {
            let c = &*cmsg;
            if c.cmsg_level == libc::SOL_SOCKET && c.cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg) as *const RawFd;
                let count = (c.cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize)
                    / size_of::<RawFd>();
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&hdr, cmsg);
        }
        let truncated = hdr.msg_flags & (libc::MSG_CTRUNC | libc::MSG_TRUNC) != 0;
        Ok(Received {
            bytes: n as usize,
            fds,
            truncated,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{gone_soon, helper_program, parent_of, zygote};
    use std::time::{Duration, Instant};

    /// Waits (up to 5 s) for `pid` to take the name `want`; returns the name it has.
    fn comm(pid: i32, want: &str) -> String {
        let mut c = String::new();
        for _ in 0..2500 {
            c = parent_of(pid).1;
            if c == want {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        c
    }

    #[test]
    fn the_zygote_forks_helpers_as_its_own_children() {
        let z = zygote();
        assert_eq!(comm(z.pid(), "aio_fork_zygote"), "aio_fork_zygote");
        assert_eq!(parent_of(z.pid()).0, std::process::id() as i32);
        let h = z.spawn(4096).unwrap();
        assert_eq!(comm(h.pid, "aio_fork_helper"), "aio_fork_helper");
        assert_eq!(parent_of(h.pid).0, z.pid());
        let size = nix::sys::stat::fstat(h.memfd.as_raw_fd()).unwrap().st_size;
        assert_eq!(size, 4096);
    }

    /// posix_spawn shares smbd's memory until the exec: starting a zygote and its first
    /// helper costs the same however big the parent has grown.
    #[test]
    fn starting_a_zygote_does_not_grow_with_the_parent() {
        // The fastest of several runs: what the spawn costs, without the other tests' load.
        let fastest = || {
            (0..7)
                .map(|_| {
                    let t = Instant::now();
                    let z = zygote();
                    drop(z.spawn(8 << 20).unwrap());
                    t.elapsed()
                })
                .min()
                .expect("runs")
        };
        let small = fastest();
        let mut grown = vec![0u8; 1 << 30];
        for page in grown.chunks_mut(4096) {
            page[0] = 1; // touched: mapped in the page tables a fork() would copy
        }
        let big = fastest();
        drop(grown);
        eprintln!("zygote + first helper: {small:?} small, {big:?} after growing by 1 GiB");
        assert!(
            big < small * 3 + Duration::from_millis(2),
            "spawning grew with the parent: {small:?} -> {big:?}"
        );
    }

    #[test]
    fn ending_the_zygote_ends_its_helpers() {
        let z = zygote();
        let h = z.spawn(4096).unwrap();
        let (zpid, hpid) = (z.pid(), h.pid);
        drop(z);
        assert!(gone_soon(hpid), "helper {hpid} outlived its zygote");
        reap::pending();
        assert!(gone_soon(zpid), "zygote {zpid} not reaped");
    }

    #[test]
    fn a_missing_or_foreign_program_is_an_error_not_a_hang() {
        let creds = Credentials::of_this_thread().unwrap();
        static C: crate::parent::processes::Counter = crate::parent::processes::Counter::new();
        let missing = Zygote::start(c"/nonexistent/aio_fork_helper", &creds, C.take(9).unwrap());
        assert_eq!(
            missing.err().and_then(|e| e.raw_os_error()),
            Some(libc::ENOENT)
        );
        let t = Instant::now();
        let foreign = Zygote::start(c"/bin/true", &creds, C.take(9).unwrap()).unwrap();
        assert!(foreign.wait_message().is_err());
        drop(foreign);
        assert!(
            t.elapsed() < Duration::from_secs(4),
            "waited for a hello that never comes"
        );
        assert_eq!(C.live(), 0, "a failed start gives its slot back");
        assert!(helper_program().as_bytes().ends_with(b"aio_fork_helper"));
    }

    /// Random datagrams, many of them shaped like the zygote's messages (with fields right
    /// or random), with up to four descriptors each: a hello counts only if it is exactly
    /// the one expected and alone, a helper only with exactly its two descriptors and no
    /// error; anything else ends the zygote (a fresh one takes over) or is its refusal; no
    /// descriptor stays open in smbd but those of a helper handed over, closed with it.
    #[test]
    fn random_datagrams_are_taken_only_when_exactly_right_and_leak_no_descriptor() {
        use crate::test_util::{Marker, TestRng};
        static C: crate::parent::processes::Counter = crate::parent::processes::Counter::new();
        let marker = Marker::new();
        let mut rng = TestRng::new(7);
        let expected = ZygoteHello {
            version: protocol::PROTOCOL_VERSION,
            pid: 4242,
            uid: 1000,
            gid: 1001,
        };
        let mut counts = [0usize; 4]; // ready, helper, refusal, zygote given up
        let mut talk: Option<(OwnedFd, Zygote, bool)> = None;
        for _ in 0..20_000 {
            let (theirs, zygote, hello_seen) = talk.get_or_insert_with(|| {
                let (ours, theirs) = socketpair().unwrap();
                let slot = C.take(usize::MAX).unwrap();
                (theirs, Zygote::over(ours, expected, slot), false)
            });
            // Mostly the right value, now and then another.
            let pick = |rng: &mut TestRng, right: u32, span: u32| {
                if rng.below(4) == 0 {
                    rng.below(u64::from(span)) as u32
                } else {
                    right
                }
            };
            let bytes = match rng.below(3) {
                0 if !*hello_seen => {
                    let hello = ZygoteHello {
                        version: pick(&mut rng, expected.version, 5),
                        pid: pick(&mut rng, expected.pid as u32, 5000) as i32,
                        uid: pick(&mut rng, expected.uid, 2000),
                        gid: pick(&mut rng, expected.gid, 2000),
                    };
                    protocol::as_bytes(&hello).to_vec()
                }
                0 | 1 => {
                    let reply = ZygoteReply {
                        pid: pick(&mut rng, 77, 100) as i32,
                        error: pick(&mut rng, 0, 3) as i32,
                    };
                    protocol::as_bytes(&reply).to_vec()
                }
                _ => {
                    let len = rng.below(24) as usize;
                    rng.bytes(len)
                }
            };
            let fds: Vec<OwnedFd> = (0..rng.below(5)).map(|_| marker.dup()).collect();
            let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
            let iov = [std::io::IoSlice::new(&bytes)];
            let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&raw)];
            let cmsgs = if raw.is_empty() { &[][..] } else { &cmsg[..] };
            nix::sys::socket::sendmsg::<()>(
                theirs.as_raw_fd(),
                &iov,
                cmsgs,
                nix::sys::socket::MsgFlags::empty(),
                None,
            )
            .unwrap();
            drop(fds);
            match zygote.next_message() {
                Ok(Some(Message::Ready)) => {
                    assert!(bytes == protocol::as_bytes(&expected) && raw.is_empty());
                    *hello_seen = true;
                    counts[0] += 1;
                }
                Ok(Some(Message::Spawned(Ok(helper)))) => {
                    let reply: ZygoteReply = protocol::from_bytes(&bytes).unwrap();
                    assert!(*hello_seen && reply.error == 0 && raw.len() == 2);
                    assert_eq!(helper.pid, reply.pid);
                    counts[1] += 1;
                }
                Ok(Some(Message::Spawned(Err(e)))) => {
                    let reply: ZygoteReply = protocol::from_bytes(&bytes).unwrap();
                    assert!(*hello_seen && reply.error != 0 && raw.len() <= 2);
                    assert_eq!(e.raw_os_error(), Some(reply.error));
                    counts[2] += 1;
                }
                Ok(None) => panic!("a message was waiting: {bytes:?}"),
                Err(_) => {
                    talk = None;
                    counts[3] += 1;
                }
            }
        }
        drop(talk);
        eprintln!("zygote messages: {counts:?} (hellos, helpers, refusals, given up)");
        assert!(counts.iter().all(|&n| n > 0), "{counts:?}");
        assert_eq!(marker.open_elsewhere(), 0, "descriptors left open");
    }

    /// A reply carrying more descriptors than room was made for: every descriptor the
    /// kernel installed is owned (and closed with the answer), none leaks.
    #[test]
    fn extra_descriptors_are_received_owned_and_the_message_refused() {
        let (a, b) = socketpair().unwrap();
        let files: Vec<std::fs::File> = (0..6)
            .map(|_| std::fs::File::open("/dev/null").unwrap())
            .collect();
        let raw: Vec<RawFd> = files.iter().map(|f| f.as_raw_fd()).collect();
        let reply = ZygoteReply { pid: 1, error: 0 };
        let iov = [std::io::IoSlice::new(protocol::as_bytes(&reply))];
        let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&raw)];
        nix::sys::socket::sendmsg::<()>(
            a.as_raw_fd(),
            &iov,
            &cmsg,
            nix::sys::socket::MsgFlags::empty(),
            None,
        )
        .unwrap();
        let mut got = ZygoteReply::default();
        let received = recv_with_fds(b.as_raw_fd(), &mut got, 3).unwrap();
        assert!(received.truncated, "room for 4 of 6 descriptors");
        assert_eq!(received.fds.len(), 4, "the ones installed are all owned");
        let numbers: Vec<RawFd> = received.fds.iter().map(|f| f.as_raw_fd()).collect();
        drop(received);
        for fd in numbers {
            // SAFETY: F_GETFD only queries the descriptor number.
            assert_eq!(
                unsafe { libc::fcntl(fd, libc::F_GETFD) },
                -1,
                "fd {fd} leaked"
            );
        }
    }
}
