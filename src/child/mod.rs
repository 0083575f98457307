//! The module's own processes: the helper program (`aio_fork_helper`), which smbd starts
//! with `posix_spawn` as the user of a request, and runs as that request's zygote; and the
//! helpers the zygote forks.
//!
//! Nothing here runs inside smbd. The program is exec'd, so it holds none of smbd's memory
//! or descriptors, and it is single threaded. The rules for code here:
//! - raw syscalls on memory that is on the stack or mapped before the sandbox closes; no
//!   allocation (the helpers' seccomp filter refuses brk and mmap), no locks, no tracing;
//! - explicit (wrapping or saturating) arithmetic, so that not even a debug build's
//!   overflow check can panic;
//! - every failure in setting up (credentials, sandbox) ends the process: it never serves
//!   a request with more power than the request's user has.

pub mod credentials;
pub mod helper;
pub mod sandbox;
mod sys;
pub mod zygote;

/// Exit codes of the program, so that smbd's log and the tests can tell why it stopped.
pub mod exit {
    /// Started with arguments this build does not understand (another build's module?).
    pub const USAGE: i32 = 64;
    /// Could not take the user's credentials for good.
    pub const CREDENTIALS: i32 = 65;
    /// The kernel refused non-dumpability, no_new_privs or the seccomp filter.
    pub const SANDBOX: i32 = 66;
    /// Ran without smbd (its parent was gone already).
    pub const ORPHAN: i32 = 67;
}
