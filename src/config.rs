//! Share options of the module, parsed and validated without smbd.
//!
//! smbd hands us each option as the raw string of smb.conf (or nothing); `Config::parse`
//! turns them into values and says, for every value it could not use, what it used instead,
//! so that the admin reads the reason in the log and the share still works.

use std::time::Duration;

/// Options under the `aio_fork:` prefix.
pub const PREFIX: &str = "aio_fork";
/// The reference C module's option, kept working under its own prefix.
pub const ERRATIC_PREFIX: &str = "vfs_aio_fork";
pub const ERRATIC_OPTION: &str = "erratic_testing_mode";

pub const MAX_HELPERS: &str = "max helpers";
pub const MIN_HELPERS: &str = "min helpers";
pub const IDLE_TIMEOUT: &str = "idle timeout";
pub const REQUEST_TIMEOUT: &str = "request timeout";
pub const MAX_QUEUE: &str = "max queue";
/// Testing only: every fork of a helper fails, as under RLIMIT_NPROC.
pub const FAIL_FORK: &str = "fail fork testing mode";
pub const INLINE_CACHED_READS: &str = "inline cached reads";
pub const INLINE_WRITES: &str = "inline writes";
pub const MAX_PROCESSES: &str = "max processes";
pub const HELPER_PROGRAM: &str = "helper program";
pub const TIMEOUT_ACTION: &str = "timeout action";

/// What becomes of a request whose helper did not answer within `request timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutAction {
    /// Sent again (up to 3 attempts in all, as after a helper's death), each time only
    /// once its helper is seen to exit (a helper stopped or looping in user space does; one
    /// stuck in the kernel in a hung backend does not, and its request fails with EIO).
    Retry,
    /// Fails with EIO at once.
    Fail,
}

impl TimeoutAction {
    fn name(self) -> &'static str {
        match self {
            TimeoutAction::Retry => "retry",
            TimeoutAction::Fail => "fail",
        }
    }
}

/// A whole-number option: its name, default and accepted range.
struct Count {
    option: &'static str,
    default: u32,
    min: u32,
    max: u32,
}

const MAX_HELPERS_COUNT: Count = Count {
    option: MAX_HELPERS,
    default: 8,
    min: 1,
    // Each helper is a process with an 8 MiB shared buffer.
    max: 1024,
};
const MIN_HELPERS_COUNT: Count = Count {
    option: MIN_HELPERS,
    default: 0,
    min: 0,
    max: 1024,
};
const IDLE_TIMEOUT_SECS: Count = Count {
    option: IDLE_TIMEOUT,
    default: 30,
    min: 1,
    max: u32::MAX,
};
const REQUEST_TIMEOUT_SECS: Count = Count {
    option: REQUEST_TIMEOUT,
    default: 30,
    min: 1,
    max: 24 * 3600,
};
const MAX_QUEUE_COUNT: Count = Count {
    option: MAX_QUEUE,
    default: 1024,
    min: 0,
    max: 1 << 20,
};

const MAX_PROCESSES_COUNT: Count = Count {
    option: MAX_PROCESSES,
    default: 64,
    min: 2,
    max: 1 << 16,
};

#[cfg(test)]
const DEFAULT_MAX_HELPERS: u32 = MAX_HELPERS_COUNT.default;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub max_helpers: u32,
    pub min_helpers: u32,
    /// Idle helpers above `min_helpers` are ended after this long.
    pub idle_timeout: Duration,
    /// A request not answered within this (from its arrival, queueing included) is taken
    /// as hung: its helper is ended, and the request retried or failed (`timeout_action`).
    pub request_timeout: Duration,
    pub timeout_action: TimeoutAction,
    /// Requests that may wait for a helper; more go to the next module.
    pub max_queue: u32,
    pub erratic_testing_mode: bool,
    pub fail_fork_testing_mode: bool,
    /// Reads whose data is all in the page cache are served at once in smbd
    /// (`preadv2(RWF_NOWAIT)`, which never blocks); only the others go to a helper.
    pub inline_cached_reads: bool,
    /// Small writes the kernel can do at once (`pwritev2(RWF_NOWAIT)`: on XFS, overwrites
    /// of cached data) are done in smbd; only the others go to a helper.
    pub inline_writes: bool,
    /// The most zygotes and helpers one smbd process (one client connection) may have,
    /// over all its share connections; past it, requests go to the next module.
    pub max_processes: u32,
    /// The helper program, if set (else the one next to the module file).
    pub helper_program: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_helpers: MAX_HELPERS_COUNT.default,
            min_helpers: MIN_HELPERS_COUNT.default,
            idle_timeout: Duration::from_secs(IDLE_TIMEOUT_SECS.default.into()),
            request_timeout: Duration::from_secs(REQUEST_TIMEOUT_SECS.default.into()),
            timeout_action: TimeoutAction::Retry,
            max_queue: MAX_QUEUE_COUNT.default,
            erratic_testing_mode: false,
            fail_fork_testing_mode: false,
            inline_cached_reads: true,
            inline_writes: true,
            max_processes: MAX_PROCESSES_COUNT.default,
            helper_program: None,
        }
    }
}

/// A value from smb.conf the module could not use, and what it used instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub option: String,
    pub given: String,
    pub used: String,
    pub why: &'static str,
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "invalid value '{}' for '{}' ({}): using {}",
            self.given, self.option, self.why, self.used
        )
    }
}

impl Config {
    /// Builds the config from a lookup of raw option strings: `lookup(prefix, option)`
    /// answers what smb.conf says, or `None` when the option is not set.
    pub fn parse(lookup: impl Fn(&str, &str) -> Option<String>) -> (Config, Vec<Rejected>) {
        let mut rejected = Vec::new();
        let mut count = |c: &Count| parse_count(&lookup, c, &mut rejected);
        let mut cfg = Config {
            max_helpers: count(&MAX_HELPERS_COUNT),
            min_helpers: count(&MIN_HELPERS_COUNT),
            idle_timeout: Duration::from_secs(count(&IDLE_TIMEOUT_SECS).into()),
            request_timeout: Duration::from_secs(count(&REQUEST_TIMEOUT_SECS).into()),
            max_queue: count(&MAX_QUEUE_COUNT),
            max_processes: count(&MAX_PROCESSES_COUNT),
            ..Config::default()
        };
        if cfg.min_helpers > cfg.max_helpers {
            rejected.push(Rejected {
                option: option_name(MIN_HELPERS),
                given: cfg.min_helpers.to_string(),
                used: cfg.max_helpers.to_string(),
                why: "more than 'aio_fork:max helpers'",
            });
            cfg.min_helpers = cfg.max_helpers;
        }
        let mut flag =
            |prefix, option, default| parse_flag(&lookup, prefix, option, default, &mut rejected);
        cfg.erratic_testing_mode = flag(ERRATIC_PREFIX, ERRATIC_OPTION, false);
        cfg.fail_fork_testing_mode = flag(PREFIX, FAIL_FORK, false);
        cfg.inline_cached_reads = flag(PREFIX, INLINE_CACHED_READS, true);
        cfg.inline_writes = flag(PREFIX, INLINE_WRITES, true);
        cfg.helper_program = match lookup(PREFIX, HELPER_PROGRAM) {
            Some(path) if path.trim().starts_with('/') && !path.contains('\0') => {
                Some(path.trim().to_string())
            }
            Some(path) => {
                rejected.push(Rejected {
                    option: option_name(HELPER_PROGRAM),
                    given: path,
                    used: "the program next to the module".into(),
                    why: "not an absolute path",
                });
                None
            }
            None => None,
        };
        cfg.timeout_action = match lookup(PREFIX, TIMEOUT_ACTION) {
            None => TimeoutAction::Retry,
            Some(v) => match v.trim().to_ascii_lowercase().as_str() {
                "retry" => TimeoutAction::Retry,
                "fail" => TimeoutAction::Fail,
                _ => {
                    rejected.push(Rejected {
                        option: option_name(TIMEOUT_ACTION),
                        given: v,
                        used: TimeoutAction::Retry.name().into(),
                        why: "neither 'retry' nor 'fail'",
                    });
                    TimeoutAction::Retry
                }
            },
        };
        (cfg, rejected)
    }
}

fn option_name(option: &str) -> String {
    format!("{PREFIX}:{option}")
}

/// A whole number within the option's range, or its default with the reason.
fn parse_count(
    lookup: &impl Fn(&str, &str) -> Option<String>,
    c: &Count,
    rejected: &mut Vec<Rejected>,
) -> u32 {
    let Some(raw) = lookup(PREFIX, c.option) else {
        return c.default;
    };
    let why = match raw.trim().parse::<i64>() {
        Ok(v) if v < c.min as i64 => "too small",
        Ok(v) if v > c.max as i64 => "too large",
        Ok(v) => return v as u32,
        Err(_) => "not a whole number",
    };
    rejected.push(Rejected {
        option: option_name(c.option),
        given: raw,
        used: c.default.to_string(),
        why,
    });
    c.default
}

/// A boolean (its default when unset or unreadable, with the reason).
fn parse_flag(
    lookup: &impl Fn(&str, &str) -> Option<String>,
    prefix: &str,
    option: &str,
    default: bool,
    rejected: &mut Vec<Rejected>,
) -> bool {
    let Some(raw) = lookup(prefix, option) else {
        return default;
    };
    parse_bool(&raw).unwrap_or_else(|| {
        rejected.push(Rejected {
            option: format!("{prefix}:{option}"),
            given: raw,
            used: if default { "yes" } else { "no" }.into(),
            why: "not a boolean",
        });
        default
    })
}

/// Samba's boolean spellings (lib/util/util.c: set_boolean).
fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "yes" | "true" | "on" | "1" => Some(true),
        "no" | "false" | "off" | "0" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(pairs: &[(&str, &str)]) -> (Config, Vec<Rejected>) {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::parse(|prefix, opt| map.get(&format!("{prefix}:{opt}")).cloned())
    }

    #[test]
    fn defaults_when_nothing_is_set() {
        let (cfg, rejected) = parse(&[]);
        assert_eq!(cfg, Config::default());
        assert_eq!(cfg.max_helpers, 8);
        assert_eq!(cfg.min_helpers, 0);
        assert_eq!(cfg.idle_timeout, Duration::from_secs(30));
        assert_eq!(cfg.request_timeout, Duration::from_secs(30));
        assert_eq!(cfg.max_queue, 1024);
        assert!(!cfg.erratic_testing_mode);
        assert!(!cfg.fail_fork_testing_mode);
        assert!(cfg.inline_cached_reads);
        assert!(cfg.inline_writes);
        assert_eq!(cfg.max_processes, 64);
        assert_eq!(cfg.helper_program, None);
        assert_eq!(cfg.timeout_action, TimeoutAction::Retry);
        assert!(rejected.is_empty());
    }

    #[test]
    fn the_timeout_action_is_retry_or_fail() {
        let (cfg, rejected) = parse(&[("aio_fork:timeout action", " Fail ")]);
        assert_eq!(cfg.timeout_action, TimeoutAction::Fail);
        assert!(rejected.is_empty());
        let (cfg, rejected) = parse(&[("aio_fork:timeout action", "panic")]);
        assert_eq!(cfg.timeout_action, TimeoutAction::Retry);
        assert_eq!(rejected[0].to_string(), "invalid value 'panic' for 'aio_fork:timeout action' (neither 'retry' nor 'fail'): using retry");
    }

    #[test]
    fn the_helper_program_must_be_an_absolute_path() {
        let (cfg, rejected) = parse(&[("aio_fork:helper program", "/opt/x/aio_fork_helper")]);
        assert_eq!(
            cfg.helper_program.as_deref(),
            Some("/opt/x/aio_fork_helper")
        );
        assert!(rejected.is_empty());
        let (cfg, rejected) = parse(&[("aio_fork:helper program", "aio_fork_helper")]);
        assert_eq!(cfg.helper_program, None);
        assert_eq!(rejected[0].why, "not an absolute path");
    }

    #[test]
    fn valid_values_are_taken() {
        let (cfg, rejected) = parse(&[
            ("aio_fork:max helpers", "4"),
            ("aio_fork:min helpers", " 2 "),
            ("aio_fork:idle timeout", "5"),
            ("aio_fork:request timeout", "7"),
            ("aio_fork:max queue", "0"),
            ("vfs_aio_fork:erratic_testing_mode", "Yes"),
            ("aio_fork:fail fork testing mode", "on"),
            ("aio_fork:inline cached reads", "no"),
            ("aio_fork:inline writes", "no"),
        ]);
        assert!(rejected.is_empty(), "{rejected:?}");
        assert!(!cfg.inline_writes);
        assert_eq!(cfg.max_helpers, 4);
        assert_eq!(cfg.min_helpers, 2);
        assert_eq!(cfg.idle_timeout, Duration::from_secs(5));
        assert_eq!(cfg.request_timeout, Duration::from_secs(7));
        assert_eq!(cfg.max_queue, 0);
        assert!(cfg.erratic_testing_mode);
        assert!(cfg.fail_fork_testing_mode);
        assert!(!cfg.inline_cached_reads);
    }

    #[test]
    fn negative_and_garbage_fall_back_to_defaults_with_a_reason() {
        let (cfg, rejected) = parse(&[
            ("aio_fork:max helpers", "-3"),
            ("aio_fork:idle timeout", "lots"),
        ]);
        assert_eq!(cfg.max_helpers, DEFAULT_MAX_HELPERS);
        assert_eq!(cfg.idle_timeout, Duration::from_secs(30));
        assert_eq!(rejected.len(), 2);
        let first = rejected[0].to_string();
        assert!(first.contains("'-3'") && first.contains("aio_fork:max helpers"));
        assert!(first.contains("using 8"), "{first}");
        assert_eq!(rejected[1].why, "not a whole number");
    }

    #[test]
    fn zero_max_helpers_is_rejected() {
        let (cfg, rejected) = parse(&[("aio_fork:max helpers", "0")]);
        assert_eq!(cfg.max_helpers, DEFAULT_MAX_HELPERS);
        assert_eq!(rejected[0].why, "too small");
    }

    #[test]
    fn huge_max_helpers_is_rejected() {
        let (cfg, rejected) = parse(&[("aio_fork:max helpers", "100000")]);
        assert_eq!(cfg.max_helpers, DEFAULT_MAX_HELPERS);
        assert_eq!(rejected[0].why, "too large");
    }

    #[test]
    fn min_above_max_is_clamped_to_max() {
        let (cfg, rejected) =
            parse(&[("aio_fork:max helpers", "2"), ("aio_fork:min helpers", "5")]);
        assert_eq!(cfg.min_helpers, 2);
        assert_eq!(rejected.len(), 1);
        assert!(rejected[0].to_string().contains("using 2"));
    }

    #[test]
    fn bad_boolean_means_the_default() {
        let (cfg, rejected) = parse(&[
            ("vfs_aio_fork:erratic_testing_mode", "maybe"),
            ("aio_fork:inline cached reads", "sometimes"),
        ]);
        assert!(!cfg.erratic_testing_mode);
        assert!(cfg.inline_cached_reads);
        assert_eq!(rejected.len(), 2);
        assert!(
            rejected[1].to_string().contains("using yes"),
            "{}",
            rejected[1]
        );
    }
}
