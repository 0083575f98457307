//! How the pool gets its processes: the zygote of a crew, started as the crew's user by
//! the first request that needs it, and the helpers it forks. Every step is asked for and
//! its answer taken when it comes (see `crew`): nothing here waits for a process.

use super::cpu_pinning;
use super::crew::Answer;
use super::events::FdWatch;
use super::{Helper, HelperState, PoolInner};
use crate::parent::helper::{HelperProcess, BUFFER_SIZE};
use crate::parent::processes::{Slot, PROCESSES};
use crate::parent::zygote::Spawned;
use std::time::Instant;

impl PoolInner {
    /// Starts the zygote of `crew` if it has none. Only from `submit`: the calling thread
    /// then holds the crew's credentials, which the zygote takes.
    pub(super) fn ensure_zygote(&mut self, crew: usize) {
        if !self.crews[crew].needs_zygote() {
            return;
        }
        let Some(slot) = self.take_slot() else {
            return;
        };
        let refuse = self.cfg.fail_fork_testing_mode;
        let wake = self.ids.next_helper();
        let (ev, mem, this) = (self.ev, self.mem, self.this.clone());
        let watch = |sock| FdWatch::new(ev, mem, sock, this, wake);
        match self.crews[crew].start_zygote(&self.program, slot, refuse, wake, watch) {
            Ok(()) => self.stats.zygotes += 1,
            Err(e) => self.log_spawn_error(&e),
        }
    }

    /// A place under `max processes`, or `None` (counted).
    pub(super) fn take_slot(&mut self) -> Option<Slot> {
        let slot = PROCESSES.take(self.cfg.max_processes as usize);
        if slot.is_none() {
            self.stats.process_limited += 1;
        }
        slot
    }

    pub(super) fn log_spawn_error(&mut self, e: &std::io::Error) {
        if !self.spawn_error_logged {
            tracing::warn!(
                error = %e,
                program = %self.program.to_string_lossy(),
                helpers = self.helpers.len(),
                "cannot start a helper: requests wait for a busy helper, or go to the next module"
            );
            self.spawn_error_logged = true;
        }
    }

    /// Asks the zygote of `crew` for a helper; it joins the pool when the answer comes.
    pub(super) fn ask_spawn(&mut self, crew: usize) -> bool {
        if self.crews[crew].zygote.is_none() {
            return false;
        }
        let Some(slot) = self.take_slot() else {
            return false;
        };
        match self.crews[crew].ask_spawn(BUFFER_SIZE, slot) {
            Ok(()) => true,
            Err(e) => {
                self.zygote_failed(crew, &e);
                false
            }
        }
    }

    /// The zygote of `crew` failed: it is not asked again; a later request of the crew
    /// starts a new one (see `Crew::failed` for when).
    pub(super) fn zygote_failed(&mut self, crew: usize, e: &std::io::Error) {
        self.crews[crew].failed(e);
        self.stats.zygote_failures += 1;
        self.log_spawn_error(e);
    }

    /// Takes what the zygote of `crew` said: its hello, helpers, or its end.
    pub(super) fn on_zygote(&mut self, crew: usize) {
        loop {
            match self.crews[crew].next_answer() {
                Ok(None) => break,
                Ok(Some(Answer::Ready { took })) => {
                    let took_us = took.as_micros() as u64;
                    self.stats.zygote_us_max = self.stats.zygote_us_max.max(took_us);
                }
                Ok(Some(Answer::Spawned {
                    spawned,
                    slot,
                    took,
                })) => self.add_helper(crew, spawned, slot, took),
                Ok(Some(Answer::Refused(e))) | Err(e) => {
                    self.zygote_failed(crew, &e);
                    break;
                }
            }
        }
        self.ensure_min(crew);
        self.pump();
        self.arm_timer();
    }

    /// A zygote that did not answer in time (stopped, or the machine too busy) is given up.
    pub(super) fn give_up_on_silent_zygotes(&mut self, now: Instant) {
        for crew in 0..self.crews.len() {
            if self.crews[crew].answer_due().is_some_and(|due| due <= now) {
                let e = std::io::Error::from_raw_os_error(libc::ETIMEDOUT);
                self.zygote_failed(crew, &e);
            }
        }
    }

    pub(super) fn add_helper(
        &mut self,
        crew: usize,
        spawned: Spawned,
        slot: Slot,
        took: std::time::Duration,
    ) {
        let Some(zygote) = self.crews[crew].zygote.clone() else {
            return;
        };
        let process = match HelperProcess::from_spawned(spawned, BUFFER_SIZE, zygote) {
            Ok(p) => p,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                // Killed as it was made: a death, as if it had died just after.
                tracing::warn!("helper exited before smbd took it");
                self.stats.helper_deaths += 1;
                return;
            }
            Err(e) => {
                self.zygote_failed(crew, &e);
                return;
            }
        };
        self.spawn_error_logged = false;
        let id = self.ids.next_helper();
        let Some(watch) = FdWatch::new(self.ev, self.mem, process.socket(), self.this.clone(), id)
        else {
            tracing::error!("tevent_add_fd failed: no helper");
            return;
        };
        let took_us = took.as_micros() as u64;
        tracing::debug!(
            pid = process.pid(),
            helpers = self.helpers.len() + 1,
            took_us,
            "helper spawned"
        );
        self.stats.spawned += 1;
        self.stats.spawn_us_max = self.stats.spawn_us_max.max(took_us);
        self.helpers.push(Helper {
            id,
            crew,
            process,
            _slot: slot,
            _watch: watch,
            state: HelperState::Idle(Instant::now()),
            buffer_used: false,
            pinning: cpu_pinning::Pinning::default(),
        });
    }

    /// Keeps `min helpers` alive in a crew that has a zygote (best effort: a failed spawn
    /// is retried later).
    pub(super) fn ensure_min(&mut self, crew: usize) {
        while self.crews[crew].zygote.is_some()
            && self.crew_size(crew) + self.crews[crew].spawning() < self.cfg.min_helpers as usize
        {
            if !self.ask_spawn(crew) {
                break;
            }
        }
        self.arm_timer();
    }
}
