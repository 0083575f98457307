//! Files of expected smbtorture outcomes (tests/expected/): per test, the outcome each
//! listed share must give, and why.
//!
//! ```text
//! # a comment
//! <full test name> | <share>=<outcome>[/<outcome>...] ... | <reason>
//! ```
//! An outcome is success, failure, error, skip or timeout; `a/b` allows either, for a
//! test whose result on that share depends on timing the test cannot control (the
//! reason must say which).

use std::collections::{BTreeMap, BTreeSet};

use super::torture::Outcome;

/// One entry: the outcomes each listed share may give, and why.
#[derive(Debug)]
pub struct Expected {
    pub outcomes: BTreeMap<String, BTreeSet<Outcome>>,
    pub reason: String,
}

impl Expected {
    /// Whether `share` giving `actual` agrees with the entry; `None` if the entry does
    /// not list the share.
    pub fn allows(&self, share: &str, actual: Option<Outcome>) -> Option<bool> {
        let allowed = self.outcomes.get(share)?;
        Some(actual.is_some_and(|a| allowed.contains(&a)))
    }

    /// The share's allowed outcomes as the file writes them (`timeout/success`).
    pub fn show(&self, share: &str) -> String {
        self.outcomes.get(share).map_or(String::new(), |set| {
            set.iter().map(|o| o.as_str()).collect::<Vec<_>>().join("/")
        })
    }
}

/// Parses an expected-outcomes file whose shares are among `shares`.
pub fn parse(text: &str, shares: &[&str]) -> Result<BTreeMap<String, Expected>, String> {
    let mut entries = BTreeMap::new();
    for (no, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = |e: String| format!("line {}: {e}", no + 1);
        let fields: Vec<&str> = line.split('|').map(str::trim).collect();
        let [name, outcomes, reason] = fields[..] else {
            return Err(at("want `name | share=outcome ... | reason`".into()));
        };
        if reason.is_empty() {
            return Err(at("an entry needs a reason".into()));
        }
        let entry = Expected {
            outcomes: parse_outcomes(outcomes, shares).map_err(at)?,
            reason: reason.to_string(),
        };
        if entries.insert(name.to_string(), entry).is_some() {
            return Err(at(format!("{name} listed twice")));
        }
    }
    Ok(entries)
}

fn parse_outcomes(
    text: &str,
    shares: &[&str],
) -> Result<BTreeMap<String, BTreeSet<Outcome>>, String> {
    let mut map = BTreeMap::new();
    for pair in text.split_whitespace() {
        let (share, alternatives) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?} is not share=outcome"))?;
        if !shares.contains(&share) {
            return Err(format!("unknown share {share:?}"));
        }
        let set = alternatives
            .split('/')
            .map(|o| Outcome::parse(o).ok_or_else(|| format!("bad outcome {o:?} in {pair:?}")))
            .collect::<Result<BTreeSet<_>, _>>()?;
        if map.insert(share.to_string(), set).is_some() {
            return Err(format!("share {share:?} given twice"));
        }
    }
    if map.is_empty() {
        return Err("no share=outcome given".to_string());
    }
    Ok(map)
}
