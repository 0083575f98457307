//! The helper program: smbd starts it as `aio_fork_helper zygote <version> <smbd pid>`
//! (see `src/child/`). It is not meant to be run by hand.
#![no_main]

/// The C runtime's entry point: the program needs none of Rust's runtime set-up, so it
/// starts with nothing allocated.
///
/// # Safety
/// Called once by the C runtime with the process's arguments.
#[no_mangle]
pub unsafe extern "C" fn main(argc: libc::c_int, argv: *const *const libc::c_char) -> libc::c_int {
    // SAFETY: argc/argv as the C runtime passes them; _exit skips atexit handlers, which
    // the sandbox would refuse anyway.
    unsafe { libc::_exit(aio_fork::helper_program_main(argc, argv)) }
}
