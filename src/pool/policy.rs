//! Decisions of the helper pool, as pure functions of its state (unit-tested without smbd).

use std::time::{Duration, Instant};

/// What to do with a request that has just arrived or reached the head of the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Give it to this idle helper (index into the idle list given).
    Idle(usize),
    /// Fork another helper for it.
    Spawn,
    /// All helpers are busy and the pool is full: wait in the queue.
    Wait,
}

/// `idle_since`: when each idle helper became idle. Picks the most recently idle helper, so
/// that the others stay idle long enough to be culled when load drops (and the busy ones
/// keep warm caches).
pub fn place(idle_since: &[Instant], total: usize, max: usize) -> Placement {
    match idle_since
        .iter()
        .enumerate()
        .max_by_key(|(_, since)| **since)
    {
        Some((i, _)) => Placement::Idle(i),
        None if total < max => Placement::Spawn,
        None => Placement::Wait,
    }
}

/// Which idle helpers to end: those idle for at least `timeout`, oldest first, never going
/// below `min` helpers in total. Returns indexes into `idle_since`.
pub fn to_cull(
    idle_since: &[Instant],
    total: usize,
    min: usize,
    timeout: Duration,
    now: Instant,
) -> Vec<usize> {
    let mut expired: Vec<usize> = (0..idle_since.len())
        .filter(|&i| now.saturating_duration_since(idle_since[i]) >= timeout)
        .collect();
    expired.sort_by_key(|&i| idle_since[i]);
    expired.truncate(total.saturating_sub(min));
    expired
}

/// When the cull timer should next fire: when the oldest idle helper above `min` expires.
/// `None`: nothing can be culled, no timer needed.
pub fn next_cull(
    idle_since: &[Instant],
    total: usize,
    min: usize,
    timeout: Duration,
) -> Option<Instant> {
    if total <= min {
        return None;
    }
    idle_since.iter().min().map(|oldest| *oldest + timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ago(now: Instant, secs: u64) -> Instant {
        now - Duration::from_secs(secs)
    }

    #[test]
    fn an_idle_helper_is_preferred_to_a_new_one() {
        let now = Instant::now();
        assert_eq!(
            place(&[ago(now, 5), ago(now, 1), ago(now, 9)], 5, 8),
            Placement::Idle(1)
        );
    }

    #[test]
    fn spawn_while_below_max_then_wait() {
        assert_eq!(place(&[], 0, 8), Placement::Spawn);
        assert_eq!(place(&[], 7, 8), Placement::Spawn);
        assert_eq!(place(&[], 8, 8), Placement::Wait);
        assert_eq!(place(&[], 9, 8), Placement::Wait);
    }

    #[test]
    fn cull_only_expired_oldest_first_and_keep_min() {
        let now = Instant::now();
        let timeout = Duration::from_secs(30);
        let idle = [ago(now, 31), ago(now, 10), ago(now, 60), ago(now, 45)];
        // 6 helpers in total (2 busy), min 0: all three expired ones, oldest first.
        assert_eq!(to_cull(&idle, 6, 0, timeout, now), vec![2, 3, 0]);
        // min 4 leaves room to cull only 2.
        assert_eq!(to_cull(&idle, 6, 4, timeout, now), vec![2, 3]);
        // at min already: nothing.
        assert_eq!(to_cull(&idle, 4, 4, timeout, now), Vec::<usize>::new());
    }

    #[test]
    fn nothing_expired_nothing_culled() {
        let now = Instant::now();
        let idle = [ago(now, 29)];
        assert!(to_cull(&idle, 1, 0, Duration::from_secs(30), now).is_empty());
    }

    #[test]
    fn next_cull_is_when_the_oldest_expires() {
        let now = Instant::now();
        let timeout = Duration::from_secs(30);
        let idle = [ago(now, 10), ago(now, 20)];
        assert_eq!(
            next_cull(&idle, 2, 0, timeout),
            Some(ago(now, 20) + timeout)
        );
        assert_eq!(next_cull(&idle, 2, 2, timeout), None);
        assert_eq!(next_cull(&[], 3, 0, timeout), None);
    }
}
