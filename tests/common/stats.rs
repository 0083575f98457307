//! The module's per-tree-connect statistics line in smbd's log:
//!
//! `aio_fork stats share=<share> preads=<n> pread_bytes=<n> pwrites=<n>
//!  pwrite_bytes=<n> fsyncs=<n> spawned=<n> culled=<n> retries=<n> fallbacks=<n>
//!  queue_max=<n> helper_deaths=<n> hung=<n> queue_overflows=<n> ...` (further
//!  counters are allowed: see [`Stats::other`]).
//!
//! The module logs it at tree disconnect at level 2, and the same line at level 5
//! whenever a pool falls quiet (a running snapshot). Only the level-2 lines are
//! totals, so each line is paired with the level in the Samba log header above it:
//! `[2026/11/23 14:01:58.508701,  2] src/vfs_ops.rs:102(aio_fork::vfs_ops)`.

use std::collections::BTreeMap;

/// Text that starts a stats line.
pub const PREFIX: &str = "aio_fork stats ";

/// The counters every line must carry, in [`Stats`]' named fields.
const REQUIRED: [&str; 13] = [
    "preads",
    "pread_bytes",
    "pwrites",
    "pwrite_bytes",
    "fsyncs",
    "spawned",
    "culled",
    "retries",
    "fallbacks",
    "queue_max",
    "helper_deaths",
    "hung",
    "queue_overflows",
];

/// One stats line, or the sum of several (see [`total_for`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub share: String,
    pub preads: u64,
    pub pread_bytes: u64,
    pub pwrites: u64,
    pub pwrite_bytes: u64,
    pub fsyncs: u64,
    pub spawned: u64,
    pub culled: u64,
    pub retries: u64,
    pub fallbacks: u64,
    /// Longest queue seen; a maximum, not summed.
    pub queue_max: u64,
    /// Helpers that died or misbehaved while the pool still wanted them.
    pub helper_deaths: u64,
    /// Helpers ended because one request took longer than `aio_fork:request timeout`.
    pub hung: u64,
    /// Requests handed to the next module because the queue was full (`aio_fork:max queue`).
    pub queue_overflows: u64,
    /// Any further counters, by name (summed by [`total_for`], which makes no sense
    /// for the latency percentiles: read those from single lines).
    pub other: BTreeMap<String, u64>,
    /// Debug level of the line, from the log header before it (`None` if unknown).
    pub level: Option<u32>,
    /// How many lines were summed into this value.
    pub lines: usize,
}

/// Debug level of the tree-disconnect lines.
pub const DISCONNECT_LEVEL: u32 = 2;

impl Stats {
    /// A further counter; 0 when the module does not report it.
    pub fn other(&self, name: &str) -> u64 {
        self.other.get(name).copied().unwrap_or(0)
    }
}

/// `None` if `line` is not a stats line; `Err` if it is one but malformed (so a
/// format drift fails loudly instead of reading as zeros).
pub fn parse_line(line: &str) -> Option<Result<Stats, String>> {
    let start = line.find(PREFIX)?;
    Some(parse_fields(&line[start + PREFIX.len()..]))
}

fn parse_fields(text: &str) -> Result<Stats, String> {
    let mut share = None;
    let mut counters = BTreeMap::new();
    for token in text.split_whitespace() {
        let (key, value) = token
            .split_once('=')
            .ok_or_else(|| format!("token {token:?} is not key=value in {text:?}"))?;
        if key == "share" {
            share = Some(value.to_string());
            continue;
        }
        let number = value
            .parse()
            .map_err(|_| format!("{key}={value} is not a number in {text:?}"))?;
        counters.insert(key.to_string(), number);
    }
    let share = share.ok_or_else(|| format!("no share= in {text:?}"))?;
    if let Some(missing) = REQUIRED.iter().find(|k| !counters.contains_key(**k)) {
        return Err(format!("no {missing}= in {text:?}"));
    }
    let mut take = |key: &str| counters.remove(key).unwrap_or(0);
    Ok(Stats {
        share,
        preads: take("preads"),
        pread_bytes: take("pread_bytes"),
        pwrites: take("pwrites"),
        pwrite_bytes: take("pwrite_bytes"),
        fsyncs: take("fsyncs"),
        spawned: take("spawned"),
        culled: take("culled"),
        retries: take("retries"),
        fallbacks: take("fallbacks"),
        queue_max: take("queue_max"),
        helper_deaths: take("helper_deaths"),
        hung: take("hung"),
        queue_overflows: take("queue_overflows"),
        other: counters,
        level: None,
        lines: 1,
    })
}

/// Every stats line in a log, with its level. Panics on a malformed one, quoting it.
pub fn parse_log(text: &str) -> Vec<Stats> {
    let mut level = None;
    let mut all = Vec::new();
    for line in text.lines() {
        if let Some(header_level) = header_level(line) {
            level = Some(header_level);
            continue;
        }
        if let Some(parsed) = parse_line(line) {
            let mut stats = parsed.unwrap_or_else(|e| panic!("malformed stats line: {e}"));
            stats.level = level;
            all.push(stats);
        }
    }
    all
}

/// The lines logged at tree disconnect (one per tree connect, totals).
pub fn at_disconnect(all: &[Stats]) -> Vec<Stats> {
    all.iter()
        .filter(|s| s.level == Some(DISCONNECT_LEVEL))
        .cloned()
        .collect()
}

/// The level of a Samba log header `[date time,  LEVEL(, more)] location`.
fn header_level(line: &str) -> Option<u32> {
    let inside = line.strip_prefix('[')?.split(']').next()?;
    inside.split(',').nth(1)?.trim().parse().ok()
}

/// Sum of the lines for `share` (`lines == 0` if there were none).
pub fn total_for(all: &[Stats], share: &str) -> Stats {
    let mut total = Stats {
        share: share.to_string(),
        ..Stats::default()
    };
    for s in all.iter().filter(|s| s.share == share) {
        total.preads += s.preads;
        total.pread_bytes += s.pread_bytes;
        total.pwrites += s.pwrites;
        total.pwrite_bytes += s.pwrite_bytes;
        total.fsyncs += s.fsyncs;
        total.spawned += s.spawned;
        total.culled += s.culled;
        total.retries += s.retries;
        total.fallbacks += s.fallbacks;
        total.queue_max = total.queue_max.max(s.queue_max);
        total.helper_deaths += s.helper_deaths;
        total.hung += s.hung;
        total.queue_overflows += s.queue_overflows;
        for (key, value) in &s.other {
            let slot = total.other.entry(key.clone()).or_default();
            // Percentiles do not add up: the total keeps the worst one.
            if key.starts_with("latency_") {
                *slot = (*slot).max(*value);
                continue;
            }
            *slot += value;
        }
        total.lines += 1;
    }
    total
}
