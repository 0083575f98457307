//! What a zygote hands smbd for a new helper, checked before smbd uses any of it.
//!
//! The zygote runs as the user, and so do its helpers: whoever controls that user may
//! control them, and what they hand over must not let them reach into smbd, which holds
//! root in its saved ids and is root outright at tree disconnect. So smbd takes nothing on
//! the zygote's word:
//! - the process: smbd opens its own pidfd for the pid it was told, and only once that pid
//!   is seen to be a live child of the zygote (a pidfd the zygote made could name any
//!   process, smbd's own included, and smbd SIGKILLs what it names);
//! - the control socket: a unix SOCK_SEQPACKET socket, so that every reply is one datagram
//!   (anything else could keep smbd's loop readable with nothing to read);
//! - the buffer: a memfd on tmpfs, as large as asked and sealed against shrinking, so that
//!   smbd's copies through the mapping can never fault: a shorter file would raise SIGBUS
//!   in smbd, and so could a hugetlbfs memfd once its huge pages ran out.

use super::reap;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

fn refused(what: std::fmt::Arguments) -> io::Error {
    tracing::error!("a zygote handed over {what}: refused");
    io::Error::from_raw_os_error(libc::EPROTO)
}

/// A pidfd of helper `pid`, which must be a live child of zygote `zygote`. ESRCH: it has
/// exited already (or there is no such process: a helper that died as it was made, or a
/// pid made up, are both useless and harmless); EPROTO: it is not the zygote's child.
pub fn helper_pidfd(pid: i32, zygote: i32) -> io::Result<OwnedFd> {
    let gone = || io::Error::from_raw_os_error(libc::ESRCH);
    if pid <= 0 {
        return Err(refused(format_args!("pid {pid} for a helper")));
    }
    // SAFETY: pidfd_open takes a pid and flags; the descriptor it returns is ours.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if raw < 0 {
        return Err(gone());
    }
    // SAFETY: just opened, owned from here on.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
    let parent = parent_of(pid);
    // Until the process exits (and is reaped), `pid` names it and no other: the parent read
    // above is its own if it has not exited by now.
    if reap::has_exited(pidfd.as_fd()) {
        return Err(gone());
    }
    if parent != Some(zygote) {
        return Err(refused(format_args!(
            "pid {pid} for a helper: its parent is {parent:?}, not the zygote {zygote}"
        )));
    }
    Ok(pidfd)
}

/// The parent pid of `pid`, from /proc/<pid>/stat (`pid (comm) state ppid ...`; comm may
/// hold anything, so the fields are counted from its closing parenthesis).
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after) = stat.rsplit_once(") ")?;
    after.split(' ').nth(1)?.parse().ok()
}

/// The helper's control socket must be a unix SOCK_SEQPACKET socket.
pub fn control_socket(sock: &OwnedFd) -> io::Result<()> {
    let (domain, kind) = (
        socket_option(sock, libc::SO_DOMAIN),
        socket_option(sock, libc::SO_TYPE),
    );
    if domain != Some(libc::AF_UNIX) || kind != Some(libc::SOCK_SEQPACKET) {
        return Err(refused(format_args!(
            "a control socket of domain {domain:?}, type {kind:?} (want unix seqpacket)"
        )));
    }
    Ok(())
}

fn socket_option(sock: &OwnedFd, option: libc::c_int) -> Option<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes one int into `value`, whose size `len` gives.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            &mut value as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    (r == 0).then_some(value)
}

/// The buffer must be a memfd on tmpfs (not hugetlbfs), `size` bytes long and sealed
/// against shrinking: smbd copies up to `size` bytes through its mapping.
pub fn buffer(file: &File, size: usize) -> io::Result<()> {
    let len = file.metadata()?.len();
    // SAFETY: F_GET_SEALS on a descriptor we own.
    let seals = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GET_SEALS) };
    let sealed = seals >= 0 && seals & libc::F_SEAL_SHRINK != 0;
    // SAFETY: an all-zero statfs is a valid value; fstatfs fills it for our descriptor.
    let fs_type = unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        (libc::fstatfs(file.as_raw_fd(), &mut st) == 0).then_some(st.f_type)
    };
    if len != size as u64 || !sealed || fs_type != Some(libc::TMPFS_MAGIC) {
        return Err(refused(format_args!(
            "a buffer of {len} bytes (want {size}), seals {seals:#x} (want shrinking sealed), \
             file system {fs_type:x?} (want tmpfs)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
    use std::os::fd::AsRawFd;

    fn memfd(len: u64, seal: bool, flags: MemFdCreateFlag) -> Option<File> {
        let fd = memfd_create(c"t", flags | MemFdCreateFlag::MFD_ALLOW_SEALING).ok()?;
        let file = File::from(fd);
        file.set_len(len).ok()?;
        if seal {
            // SAFETY: F_ADD_SEALS on a memfd we own.
            unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_SHRINK) };
        }
        Some(file)
    }

    #[test]
    fn a_short_unsealed_or_hugetlb_buffer_is_refused() {
        let plain = MemFdCreateFlag::empty();
        assert!(buffer(&memfd(4096, true, plain).unwrap(), 8192).is_err());
        assert!(buffer(&memfd(8192, false, plain).unwrap(), 8192).is_err());
        assert!(buffer(&memfd(8192, true, plain).unwrap(), 8192).is_ok());
        let regular = crate::test_util::temp_file(&[0u8; 8192]);
        assert!(buffer(&regular, 8192).is_err(), "not a memfd: no seals");
        // A hugetlbfs memfd, where the kernel makes one (it needs no huge page for that).
        match memfd(8 << 20, true, MemFdCreateFlag::MFD_HUGETLB) {
            Some(huge) => assert!(buffer(&huge, 8 << 20).is_err(), "hugetlbfs accepted"),
            None => eprintln!("no hugetlbfs memfd on this kernel: that case is not checked"),
        }
    }

    #[test]
    fn only_a_unix_seqpacket_socket_is_a_control_socket() {
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        let pair = |kind| socketpair(AddressFamily::Unix, kind, None, SockFlag::empty()).unwrap();
        assert!(control_socket(&pair(SockType::SeqPacket).0).is_ok());
        assert!(control_socket(&pair(SockType::Stream).0).is_err());
        assert!(control_socket(&pair(SockType::Datagram).0).is_err());
        let (read, _write) = nix::unistd::pipe().unwrap();
        assert!(control_socket(&read).is_err());
    }

    #[test]
    fn only_a_live_child_of_the_zygote_gets_a_pidfd() {
        let me = std::process::id() as i32;
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let error = |pid, zygote| {
            helper_pidfd(pid, zygote)
                .err()
                .and_then(|e| e.raw_os_error())
        };
        assert!(helper_pidfd(pid, me).is_ok(), "our own child");
        assert_eq!(
            error(pid, me + 1),
            Some(libc::EPROTO),
            "not the zygote's child"
        );
        assert_eq!(error(me, me), Some(libc::EPROTO), "the zygote itself");
        assert_eq!(error(1, me), Some(libc::EPROTO), "init");
        assert_eq!(error(0, me), Some(libc::EPROTO));
        assert_eq!(error(-1, me), Some(libc::EPROTO));
        child.kill().unwrap();
        // Exited, not reaped yet: its pid still names it, but it is no helper anymore.
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(error(pid, me), Some(libc::ESRCH), "an exited child");
        child.wait().unwrap();
        assert_eq!(error(pid, me), Some(libc::ESRCH), "a reaped child");
    }
}
