//! What the kernel says a process is doing, from `/proc/<pid>/stat`.

/// Whether process `pid` is in uninterruptible sleep (state `D`): waiting in the kernel,
/// for a device or a file system, where no signal ends the wait (SIGKILL only where the
/// wait is killable). A stopped (`T`), running or sleeping process is not.
pub fn waits_in_kernel(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| state_of(&stat))
        == Some('D')
}

/// The state letter of a `/proc/<pid>/stat` line: the first field after the command
/// name, which is in parentheses and may itself contain spaces and parentheses.
fn state_of(stat: &str) -> Option<char> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.trim_start().chars().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_follows_the_last_parenthesis() {
        assert_eq!(state_of("42 (aio_fork_helper) D 1 2 3"), Some('D'));
        assert_eq!(state_of("42 (a) b) (c) T 1 2"), Some('T'));
        assert_eq!(state_of("garbage"), None);
    }

    #[test]
    fn this_process_does_not_wait_in_the_kernel() {
        assert!(!waits_in_kernel(std::process::id() as i32));
        assert!(!waits_in_kernel(-1));
    }
}
