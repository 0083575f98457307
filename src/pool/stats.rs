//! Per-share counters, logged when the share is disconnected.

use crate::pool::latency::Histogram;
use std::fmt;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub preads: u64,
    pub pread_bytes: u64,
    pub pwrites: u64,
    pub pwrite_bytes: u64,
    pub fsyncs: u64,
    /// Reads served whole from the page cache in smbd, without a helper (also counted in
    /// `preads` and `pread_bytes`).
    pub inline_preads: u64,
    /// Writes done whole in smbd without a helper (also counted in `pwrites` and
    /// `pwrite_bytes`).
    pub inline_pwrites: u64,
    /// Writes carried in the helper write of the write they continue (see
    /// `write_gathering`; also counted in `pwrites` and `pwrite_bytes`).
    pub gathered_pwrites: u64,
    /// Helpers forked.
    pub spawned: u64,
    /// Zygotes started (one per user of the share, each time one is needed).
    pub zygotes: u64,
    /// Longest time a zygote took to start (spawn, credentials, sandbox, hello), in
    /// microseconds.
    pub zygote_us_max: u64,
    /// Longest time a zygote took to fork a helper, in microseconds.
    pub spawn_us_max: u64,
    /// Processes not started because of `max processes`.
    pub process_limited: u64,
    /// Idle helpers ended by the idle timeout.
    pub culled: u64,
    /// Requests sent again after their helper died.
    pub retries: u64,
    /// Requests handed to the next module (no fd, no helper could be had).
    pub fallbacks: u64,
    /// Most requests ever waiting for a helper at once.
    pub queue_max: u64,
    /// Helpers that died or misbehaved while the pool still wanted them.
    pub helper_deaths: u64,
    /// Helpers ended because a request took longer than `request timeout`.
    pub hung: u64,
    /// Requests handed to the next module because the queue was full (`max queue`).
    pub queue_overflows: u64,
    /// Requests failed with EIO for not being answered within `request timeout`.
    pub timeouts: u64,
    /// Helpers ended for a timeout that have not exited yet, and were not within a second
    /// of their SIGKILL (blocked in the kernel, in a hung backend): now, and most at once.
    pub stuck: u64,
    pub stuck_max: u64,
    /// Helpers ended for breaking the protocol (also counted in `helper_deaths`).
    pub violations: u64,
    /// Zygotes given up: ended, silent past their time, answering wrongly or handing over
    /// what does not pass smbd's checks.
    pub zygote_failures: u64,
    /// Devices this pool found hanging (a helper in uninterruptible sleep at its timeout),
    /// each time it opened their breaker.
    pub device_hangs: u64,
    /// Probes sent to see whether a hung device answers again.
    pub probes: u64,
    /// Requests and smbd's own calls answered EIO at once because their file is on a device
    /// that hangs (instead of the next module, or smbd, waiting for it).
    pub hung_refusals: u64,
    /// Closes whose last reference went to a helper (file on a hung device).
    pub closes_handed: u64,
    /// Time from a request's arrival to its completion by a helper (queueing included).
    pub latency: Histogram,
}

impl Stats {
    pub fn note_queue_len(&mut self, len: usize) {
        self.queue_max = self.queue_max.max(len as u64);
    }

    pub fn note_stuck(&mut self, stuck: usize) {
        self.stuck = stuck as u64;
        self.stuck_max = self.stuck_max.max(self.stuck);
    }
}

impl fmt::Display for Stats {
    /// One line, `key=value` pairs, stable names: tests and admins parse it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "preads={} pread_bytes={} pwrites={} pwrite_bytes={} fsyncs={} spawned={} \
             culled={} retries={} fallbacks={} queue_max={} helper_deaths={} hung={} \
             queue_overflows={} inline_preads={} zygotes={} zygote_us_max={} spawn_us_max={} process_limited={} \
             timeouts={} stuck={} stuck_max={} inline_pwrites={} violations={} zygote_failures={} \
             latency_us_p50={} latency_us_p90={} latency_us_p99={} \
             device_hangs={} probes={} hung_refusals={} closes_handed={} gathered_pwrites={}",
            self.preads,
            self.pread_bytes,
            self.pwrites,
            self.pwrite_bytes,
            self.fsyncs,
            self.spawned,
            self.culled,
            self.retries,
            self.fallbacks,
            self.queue_max,
            self.helper_deaths,
            self.hung,
            self.queue_overflows,
            self.inline_preads,
            self.zygotes,
            self.zygote_us_max,
            self.spawn_us_max,
            self.process_limited,
            self.timeouts,
            self.stuck,
            self.stuck_max,
            self.inline_pwrites,
            self.violations,
            self.zygote_failures,
            self.latency.percentile_us(50.0),
            self.latency.percentile_us(90.0),
            self.latency.percentile_us(99.0),
            self.device_hangs,
            self.probes,
            self.hung_refusals,
            self.closes_handed,
            self.gathered_pwrites
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_has_every_counter_in_order() {
        let s = Stats {
            preads: 1,
            pread_bytes: 2,
            pwrites: 3,
            pwrite_bytes: 4,
            fsyncs: 5,
            spawned: 6,
            culled: 7,
            retries: 8,
            fallbacks: 9,
            queue_max: 10,
            helper_deaths: 11,
            hung: 12,
            queue_overflows: 13,
            inline_preads: 14,
            zygotes: 15,
            zygote_us_max: 18,
            spawn_us_max: 16,
            process_limited: 17,
            timeouts: 19,
            stuck: 20,
            stuck_max: 21,
            inline_pwrites: 22,
            violations: 23,
            zygote_failures: 24,
            device_hangs: 25,
            probes: 26,
            hung_refusals: 27,
            closes_handed: 28,
            gathered_pwrites: 29,
            latency: Histogram::default(),
        };
        assert_eq!(
            s.to_string(),
            "preads=1 pread_bytes=2 pwrites=3 pwrite_bytes=4 fsyncs=5 spawned=6 culled=7 \
             retries=8 fallbacks=9 queue_max=10 helper_deaths=11 hung=12 queue_overflows=13 inline_preads=14 \
             zygotes=15 zygote_us_max=18 spawn_us_max=16 process_limited=17 timeouts=19 stuck=20 stuck_max=21 inline_pwrites=22 violations=23 zygote_failures=24 latency_us_p50=0 latency_us_p90=0 latency_us_p99=0 \
             device_hangs=25 probes=26 hung_refusals=27 closes_handed=28 gathered_pwrites=29"
        );
    }

    #[test]
    fn queue_max_keeps_the_high_water_mark() {
        let mut s = Stats::default();
        s.note_queue_len(3);
        s.note_queue_len(1);
        assert_eq!(s.queue_max, 3);
    }
}
