//! A helper: forked by the zygote, it serves one request at a time.
//!
//! The loop: receive a request and its fd, do the I/O between the fd and the shared buffer,
//! close the fd, send the reply. EOF on the socket (smbd closed it or died) ends the helper;
//! PR_SET_PDEATHSIG covers a zygote that dies without closing. See `child` for the rules.

use super::sys::{self, as_result, errno, now_ns, sleep_ms};
use crate::protocol::{Op, Reply, Request, FLAG_ERRATIC};
use crate::xorshift::XorShift64;
use std::mem::{size_of, zeroed, MaybeUninit};

/// The shared buffer the zygote mapped (MAP_SHARED) before forking.
#[derive(Clone, Copy)]
pub struct SharedBuf {
    pub ptr: *mut u8,
    pub len: usize,
}

/// The helper's name in /proc/<pid>/comm (at most 15 bytes), so admins and tests see helpers.
pub const HELPER_COMM: &[u8; 16] = b"aio_fork_helper\0";

/// Entry point of a freshly forked helper. Never returns.
///
/// # Safety
/// Only in a child just forked by the zygote; `sock` is the child's end of the
/// socketpair and `buf` a shared mapping valid in this process.
pub unsafe fn run(sock: libc::c_int, buf: SharedBuf, zygote: libc::pid_t) -> ! {
    if let Err(code) = set_up(sock, zygote, super::sandbox::enter) {
        sys::exit(code);
    }
    // SAFETY: the caller hands us the mapping; nothing else in this process touches it.
    let buf = unsafe { std::slice::from_raw_parts_mut(buf.ptr, buf.len) };
    let mut rng = Rng::seeded();
    loop {
        let mut fd: libc::c_int = -1;
        let req = match receive(sock, &mut fd) {
            Received::Request(req) => req,
            Received::Again => continue,
            Received::Closed => sys::exit(0),
        };
        let reply = serve(&req, fd, buf, &mut rng);
        sys::close(fd);
        if !send_reply(sock, &reply) {
            sys::exit(0);
        }
    }
}

type Confine =
    fn(&super::sandbox::Filter<{ super::sandbox::HELPER_LEN }>) -> Result<(), libc::c_int>;

/// Dies with the zygote, not dumpable (inherited from the zygote, checked here), default
/// signal handling, no fd but `sock`, a recognisable name, then the sandbox (`confine`).
/// `Err(exit code)`: the helper must not serve.
fn set_up(sock: libc::c_int, zygote: libc::pid_t, confine: Confine) -> Result<(), i32> {
    sys::die_with_parent(zygote).map_err(|_| super::exit::ORPHAN)?;
    sys::never_dumpable().map_err(|_| super::exit::SANDBOX)?;
    sys::set_up_signals();
    sys::close_all_but(sock);
    sys::set_name(HELPER_COMM);
    confine(&super::sandbox::HELPER).map_err(|_| super::exit::SANDBOX)
}

enum Received {
    Request(Request),
    /// Interrupted, or a malformed message that was dropped after its reply.
    Again,
    Closed,
}

/// Receives one request and the fd that came with it.
fn receive(sock: libc::c_int, fd: &mut libc::c_int) -> Received {
    let mut req = MaybeUninit::<Request>::zeroed();
    let mut iov = libc::iovec {
        iov_base: req.as_mut_ptr() as *mut libc::c_void,
        iov_len: size_of::<Request>(),
    };
    // Room for one SCM_RIGHTS fd; u64 array for cmsghdr alignment.
    let mut cmsg_buf = [0u64; 8];
    // SAFETY: msghdr is plain C data; all zeroes is a valid value.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg_buf.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = size_of::<[u64; 8]>();

    // SAFETY: recvmsg into the iovec and control buffer above, which outlive the call.
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n == 0 {
        return Received::Closed;
    }
    if n < 0 {
        return if errno() == libc::EINTR {
            Received::Again
        } else {
            Received::Closed
        };
    }
    *fd = take_fd(&msg);
    if n as usize != size_of::<Request>() || msg.msg_flags & libc::MSG_TRUNC != 0 {
        // Not one of ours: answer EINVAL so the parent does not wait forever.
        let reply = Reply {
            seq: 0,
            result: -(libc::EINVAL as i64),
            duration_ns: 0,
        };
        sys::close(*fd);
        if !send_reply(sock, &reply) {
            sys::exit(0);
        }
        return Received::Again;
    }
    // SAFETY: zero-initialised, then filled by the kernel: every bit pattern is a Request.
    Received::Request(unsafe { req.assume_init() })
}

/// The first descriptor passed with SCM_RIGHTS, or -1; any further ones are closed.
fn take_fd(msg: &libc::msghdr) -> libc::c_int {
    let mut found = -1;
    // SAFETY: the CMSG_* walk stays within the control data the kernel filled in
    // (msg_controllen), and reads the descriptors unaligned from it.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            let c = &*cmsg;
            if c.cmsg_level == libc::SOL_SOCKET && c.cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg) as *const libc::c_int;
                let count = (c.cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize)
                    / size_of::<libc::c_int>();
                for i in 0..count {
                    let fd = std::ptr::read_unaligned(data.add(i));
                    if found < 0 {
                        found = fd;
                    } else {
                        sys::close(fd);
                    }
                }
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    found
}

/// Does the I/O of one request; the reply says how many bytes moved, or -errno.
fn serve(req: &Request, fd: libc::c_int, buf: &mut [u8], rng: &mut Rng) -> Reply {
    let mut reply = Reply {
        seq: req.seq,
        result: 0,
        duration_ns: 0,
    };
    if req.flags & FLAG_ERRATIC != 0 {
        sleep_ms(rng.erratic_delay_ms());
    }
    let start = now_ns();
    let len = req.len as usize;
    reply.result = match (Op::from_raw(req.op), fd >= 0) {
        (_, false) => -(libc::EBADF as i64),
        (None, _) => -(libc::EINVAL as i64),
        (Some(_), _) if req.len > buf.len() as u64 => -(libc::EINVAL as i64),
        (Some(Op::Read), _) => {
            ask_whole_range(fd, req.offset, len);
            read_full(fd, &mut buf[..len], req.offset)
        }
        (Some(Op::Write), _) => write_full(fd, &buf[..len], Some(req.offset)),
        (Some(Op::Append), _) => write_full(fd, &buf[..len], None),
        // SAFETY: fsync takes only a descriptor.
        (Some(Op::Fsync), _) => as_result(unsafe { libc::fsync(fd) } as isize),
        (Some(Op::Close), _) => 0,
    };
    reply.duration_ns = now_ns().saturating_sub(start);
    reply
}

/// Reads of at least this many bytes ask the kernel for their whole range first.
const WHOLE_RANGE_MIN: usize = 256 << 10;

/// Has the kernel start reading all of a large request's range at once, for the part not
/// cached. A read from disk by `pread` alone asks for one readahead window (read_ahead_kb)
/// at a time and waits for each: one 8 MiB read from a cold file went 1.7 to 1.9 times
/// as fast with this hint first. Cached pages cost a lookup. Only a hint: its result does
/// not matter, the read that follows reports what went wrong.
fn ask_whole_range(fd: libc::c_int, offset: i64, len: usize) {
    if len >= WHOLE_RANGE_MIN && offset >= 0 {
        // SAFETY: readahead only reads the descriptor's file into the page cache.
        unsafe { libc::readahead(fd, offset, len) };
    }
}

/// pread until `buf` is full, end of file, or an error (returned as -errno if nothing was
/// read).
fn read_full(fd: libc::c_int, buf: &mut [u8], offset: i64) -> i64 {
    let read_at = |buf: &mut [u8], done: usize| {
        let at = offset.wrapping_add(done as i64);
        // SAFETY: pread writes at most buf.len() bytes into buf.
        unsafe { libc::pread(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), at) }
    };
    if buf.is_empty() {
        // Still ask the kernel: it checks the offset and the handle as for any read.
        return as_result(read_at(buf, 0));
    }
    let mut done = 0usize;
    while done < buf.len() {
        let n = read_at(&mut buf[done..], done);
        match n {
            0 => break,
            n if n > 0 => done += n as usize,
            _ if errno() == libc::EINTR => continue,
            _ if done > 0 => break,
            _ => return -(errno() as i64),
        }
    }
    done as i64
}

/// Positioned writes go to the kernel in calls of at most this many bytes.
///
/// The page cache sizes the folios it allocates for a write by the write call's length
/// (ext4 and XFS use large folios): one 8 MiB `pwrite` takes 2 MiB folios. Where free
/// memory was handed back to a virtual machine's host (free page reporting), such a block
/// is slow to take again: on a 2-vCPU guest, 1 GiB written after its page cache was
/// dropped took 4.6 s in 8 MiB calls, 2.1 s in 1 MiB calls, and 0.2 s in 256 KiB calls
/// (0.2 s in all sizes when the memory was warm). An append stays one call: it must
/// land whole at the end of the file.
const WRITE_PIECE: usize = 256 << 10;

/// How much of the `left` bytes of a write the next call writes.
fn next_piece(left: usize, positioned: bool) -> usize {
    if positioned {
        left.min(WRITE_PIECE)
    } else {
        left
    }
}

/// pwrite (or, without an offset, write to an O_APPEND fd) until all of `buf` is written
/// or an error (returned as -errno if nothing was written).
fn write_full(fd: libc::c_int, buf: &[u8], offset: Option<i64>) -> i64 {
    let write_at = |done: usize| {
        let from = buf[done..].as_ptr() as *const libc::c_void;
        let len = next_piece(buf.len() - done, offset.is_some());
        // SAFETY: (p)write reads at most len bytes from buf[done..].
        unsafe {
            match offset {
                Some(off) => libc::pwrite(fd, from, len, off.wrapping_add(done as i64)),
                None => libc::write(fd, from, len),
            }
        }
    };
    if buf.is_empty() {
        return as_result(write_at(0));
    }
    let mut done = 0usize;
    while done < buf.len() {
        let n = write_at(done);
        match n {
            n if n > 0 => done += n as usize,
            _ if n < 0 && errno() == libc::EINTR => continue,
            _ if done > 0 => break,
            0 => return -(libc::EIO as i64),
            _ => return -(errno() as i64),
        }
    }
    done as i64
}

fn send_reply(sock: libc::c_int, reply: &Reply) -> bool {
    sys::send_with_fds(sock, crate::protocol::as_bytes(reply), &[])
}

/// Erratic delays only need to differ between helpers and requests.
struct Rng(XorShift64);

impl Rng {
    fn seeded() -> Rng {
        // SAFETY: getpid takes no arguments.
        let pid = unsafe { libc::getpid() } as u64;
        Rng(XorShift64::new(now_ns() ^ (pid << 32)))
    }

    /// 5-24 ms. smbd answers a request still running after 0.5 ms with an interim
    /// (async) response, and tevent rounds that timer up to a whole millisecond; a
    /// helper reply that lands inside that window races the timer. Five ms or more
    /// makes every erratic request one the client sees go async, as the delay intends.
    fn erratic_delay_ms(&mut self) -> u64 {
        ERRATIC_MIN_MS + self.0.below(ERRATIC_SPREAD_MS)
    }
}

const ERRATIC_MIN_MS: u64 = 5;
const ERRATIC_SPREAD_MS: u64 = 20;

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, ForkResult};

    fn refused(
        _: &super::super::sandbox::Filter<{ super::super::sandbox::HELPER_LEN }>,
    ) -> Result<(), libc::c_int> {
        Err(libc::EINVAL)
    }

    #[test]
    fn positioned_writes_go_in_pieces_appends_whole() {
        assert_eq!(next_piece(8 << 20, true), WRITE_PIECE);
        assert_eq!(next_piece(4096, true), 4096);
        assert_eq!(next_piece(8 << 20, false), 8 << 20);
    }

    #[test]
    fn a_write_in_pieces_lands_whole_at_its_offset() {
        use std::io::{Read, Seek};
        use std::os::fd::AsRawFd;
        let len = 3 * WRITE_PIECE + 5;
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut file = crate::test_util::temp_file(&[9u8; 7]);
        assert_eq!(write_full(file.as_raw_fd(), &data, Some(7)), len as i64);
        let mut back = Vec::new();
        file.rewind().unwrap();
        file.read_to_end(&mut back).unwrap();
        assert_eq!(back.len(), 7 + len);
        assert!(back[..7] == [9u8; 7] && back[7..] == data[..]);
    }

    /// Every erratic delay is past smbd's interim-response window and spans 5-24 ms.
    #[test]
    fn erratic_delays_stay_in_their_range() {
        let mut rng = Rng::seeded();
        let delays: Vec<u64> = (0..10_000).map(|_| rng.erratic_delay_ms()).collect();
        assert_eq!(delays.iter().min(), Some(&5));
        assert_eq!(delays.iter().max(), Some(&24));
    }

    /// A helper whose filter the kernel refused does not serve: it exits with SANDBOX.
    #[test]
    fn a_helper_that_cannot_be_confined_exits() {
        let parent = nix::unistd::getpid().as_raw();
        // SAFETY: the child only runs set_up (raw syscalls) and leaves with _exit.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                let code = match set_up(-1, parent, refused) {
                    Ok(()) => 0,
                    Err(code) => code,
                };
                sys::exit(code);
            }
            ForkResult::Parent { child } => {
                assert_eq!(
                    waitpid(child, None).unwrap(),
                    WaitStatus::Exited(child, super::super::exit::SANDBOX)
                );
            }
        }
    }
}
