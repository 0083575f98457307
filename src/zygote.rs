//! The zygote seen from smbd: started once per share connection (while smbd is small), then
//! asked for each new helper. See `zygote_main` for why.

use crate::helper_process::reap_within;
use crate::zygote_main::{self, SpawnReply, SpawnRequest};
use nix::sys::socket::{self, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::{ForkResult, Pid};
use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// How long smbd waits for the zygote to answer before giving up on it.
const ANSWER_TIMEOUT_MS: u16 = 5000;

pub struct Zygote {
    pid: Pid,
    /// Always set; taken only in `drop`, to close it before waiting for the zygote.
    sock: Option<OwnedFd>,
}

/// A helper the zygote forked: its pid, smbd's end of its socket, its buffer, a pidfd.
pub struct Spawned {
    pub pid: Pid,
    pub sock: OwnedFd,
    pub memfd: OwnedFd,
    pub pidfd: OwnedFd,
}

impl Zygote {
    pub fn start() -> io::Result<Zygote> {
        let (ours, theirs) = socket::socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        let parent = nix::unistd::getpid();
        // SAFETY: the child runs only zygote_main::run (async-signal-safe raw syscalls).
        match unsafe { nix::unistd::fork() }? {
            ForkResult::Child => unsafe { zygote_main::run(theirs.as_raw_fd(), parent.as_raw()) },
            ForkResult::Parent { child } => Ok(Zygote {
                pid: child,
                sock: Some(ours),
            }),
        }
    }

    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    fn sock(&self) -> RawFd {
        self.sock.as_ref().map_or(-1, |s| s.as_raw_fd())
    }

    /// Asks for a helper with a `buf_size`-byte shared buffer.
    pub fn spawn(&self, buf_size: usize) -> io::Result<Spawned> {
        let req = SpawnRequest {
            buf_size: buf_size as u64,
        };
        // SAFETY: SpawnRequest is repr(C) plain data.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                &req as *const SpawnRequest as *const u8,
                std::mem::size_of::<SpawnRequest>(),
            )
        };
        socket::send(self.sock(), bytes, MsgFlags::MSG_NOSIGNAL)?;
        self.wait_answer()?;
        self.receive()
    }

    fn wait_answer(&self) -> io::Result<()> {
        let fd = self.sock();
        let mut pfd = [libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        }];
        loop {
            // SAFETY: one pollfd on our own socket.
            let n = unsafe { libc::poll(pfd.as_mut_ptr(), 1, ANSWER_TIMEOUT_MS.into()) };
            match n {
                1 => return Ok(()),
                0 => return Err(io::Error::from_raw_os_error(libc::ETIMEDOUT)),
                _ if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => continue,
                _ => return Err(io::Error::last_os_error()),
            }
        }
    }

    fn receive(&self) -> io::Result<Spawned> {
        let mut reply = SpawnReply::default();
        // SAFETY: SpawnReply is repr(C) plain data; any bytes are a valid value.
        let buf = unsafe {
            std::slice::from_raw_parts_mut(
                &mut reply as *mut SpawnReply as *mut u8,
                std::mem::size_of::<SpawnReply>(),
            )
        };
        let mut iov = [IoSliceMut::new(buf)];
        let mut cmsg = nix::cmsg_space!([RawFd; 3]);
        let msg = socket::recvmsg::<()>(
            self.sock(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        let bytes = msg.bytes;
        let mut fds: Vec<OwnedFd> = Vec::new();
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                // SAFETY: descriptors just received: we own them.
                fds.extend(
                    raw.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        if bytes == 0 {
            return Err(io::Error::from_raw_os_error(libc::EPIPE));
        }
        if reply.error != 0 {
            return Err(io::Error::from_raw_os_error(reply.error));
        }
        let [sock, memfd, pidfd]: [OwnedFd; 3] = fds
            .try_into()
            .map_err(|_| io::Error::from_raw_os_error(libc::EPROTO))?;
        Ok(Spawned {
            pid: Pid::from_raw(reply.pid),
            sock,
            memfd,
            pidfd,
        })
    }
}

impl Drop for Zygote {
    /// Ends the zygote (any helper left follows it: PR_SET_PDEATHSIG) and reaps it.
    fn drop(&mut self) {
        // Closing the socket lets it reap the helpers that already ended and exit; one
        // that does not (stopped, stuck) is killed.
        drop(self.sock.take());
        if !reap_within(self.pid, EXIT_WAIT) {
            let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL);
            while let Err(nix::errno::Errno::EINTR) = waitpid(self.pid, Some(WaitPidFlag::__WALL)) {
            }
        }
    }
}

/// How long the zygote gets to exit by itself.
const EXIT_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits (up to 5 s) for `pid` to take the name `want`; returns the name it has.
    fn comm(pid: i32, want: &str) -> String {
        let mut c = String::new();
        for _ in 0..2500 {
            c = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if c.trim() == want {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        c.trim().to_string()
    }

    #[test]
    fn the_zygote_forks_helpers_as_its_own_children() {
        let z = Zygote::start().unwrap();
        assert_eq!(comm(z.pid(), "aio_fork_zygote"), "aio_fork_zygote");
        let h = z.spawn(4096).unwrap();
        assert_eq!(comm(h.pid.as_raw(), "aio_fork_helper"), "aio_fork_helper");
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", h.pid)).unwrap();
        let ppid: i32 = stat
            .rsplit(") ")
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(ppid, z.pid());
        let size = nix::sys::stat::fstat(h.memfd.as_raw_fd()).unwrap().st_size;
        assert_eq!(size, 4096);
    }

    /// The point of the zygote: once the process has grown, forking from it costs page
    /// tables for all its memory; asking the zygote (forked while small) does not.
    #[test]
    fn spawning_from_the_zygote_does_not_grow_with_the_parent() {
        use crate::helper_process::HelperProcess;
        use std::time::{Duration, Instant};
        let z = Zygote::start().unwrap();
        let mut grown = vec![0u8; 1 << 30];
        for page in grown.chunks_mut(4096) {
            page[0] = 1; // touched: mapped in the page tables fork() copies
        }
        let median = |zygote: Option<&Zygote>| {
            let mut took: Vec<Duration> = (0..5)
                .map(|_| {
                    let t = Instant::now();
                    drop(HelperProcess::spawn(8 << 20, zygote).unwrap());
                    t.elapsed()
                })
                .collect();
            took.sort();
            took[2]
        };
        let (via_zygote, direct) = (median(Some(&z)), median(None));
        eprintln!(
            "after growing by 1 GiB: spawn via zygote {via_zygote:?}, direct fork {direct:?}"
        );
        assert!(
            via_zygote * 4 < direct,
            "the zygote should spare the page-table copy: {via_zygote:?} vs {direct:?}"
        );
        drop(grown);
    }

    #[test]
    fn ending_the_zygote_ends_its_helpers() {
        let z = Zygote::start().unwrap();
        let h = z.spawn(4096).unwrap();
        let pid = h.pid.as_raw();
        drop(z);
        let gone = (0..500).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(2));
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            state.is_empty() || state.contains(") Z ")
        });
        assert!(gone, "helper {pid} outlived its zygote");
    }
}
