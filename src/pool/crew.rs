//! A crew: the helpers of one set of credentials, and the zygote that forks them.
//!
//! The zygote is asked for helpers and answers when it can; its messages arrive on its
//! socket, watched on smbd's event loop, so that a slow or stuck zygote never holds smbd up.
//! One that does not answer within `ANSWER_TIMEOUT` is given up.

use super::events::FdWatch;
use crate::parent::credentials::Credentials;
use crate::parent::processes::Slot;
use crate::parent::zygote::{Message, Spawned, Zygote, ANSWER_TIMEOUT};
use std::collections::VecDeque;
use std::ffi::CStr;
use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// After the helper program failed to start or failed the pool (see `Crew::failed`), the
/// crew's requests go to the next module for this long before it is tried again.
const RETRY_START_AFTER: Duration = Duration::from_secs(10);

pub struct Crew {
    pub creds: Credentials,
    /// Wakes the pool when the zygote speaks; dropped with the zygote, and before it (fields
    /// drop in order): the event goes before the socket it watches (see `events`).
    watch: Option<FdWatch>,
    /// Set while the crew may grow; helpers keep their zygote alive themselves.
    pub zygote: Option<Rc<Zygote>>,
    /// The wake-up id of `watch`.
    pub wake: u64,
    started: Instant,
    /// Whether the zygote's hello came.
    ready: bool,
    /// Unanswered spawn requests, oldest first: when each was made, and the place under
    /// `max processes` its helper will take.
    asked: VecDeque<(Instant, Slot)>,
    /// When the helper program last failed to start.
    failed: Option<Instant>,
}

/// A zygote's message, as the pool acts on it.
pub enum Answer {
    /// Its hello: it took `took` to start.
    Ready { took: Duration },
    /// A helper, `took` after it was asked for, with its place under `max processes`.
    Spawned {
        spawned: Spawned,
        slot: Slot,
        took: Duration,
    },
    /// It could not fork.
    Refused(io::Error),
}

impl Crew {
    pub fn new(creds: Credentials) -> Crew {
        Crew {
            creds,
            zygote: None,
            watch: None,
            wake: 0,
            started: Instant::now(),
            ready: false,
            asked: VecDeque::new(),
            failed: None,
        }
    }

    /// Whether a zygote should be started now: none runs, and no recent start failed.
    pub fn needs_zygote(&self) -> bool {
        self.zygote.is_none() && !self.failed.is_some_and(|t| t.elapsed() < RETRY_START_AFTER)
    }

    /// Starts the zygote as the calling thread's user, which must hold `creds`, watched
    /// with `watch` (made on its socket, wake-up id `wake`). `refuse` stands in for a
    /// failing start (testing mode).
    pub fn start_zygote(
        &mut self,
        program: &CStr,
        slot: Slot,
        refuse: bool,
        wake: u64,
        watch: impl FnOnce(RawFd) -> Option<FdWatch>,
    ) -> io::Result<()> {
        let started = if refuse {
            Err(io::Error::from_raw_os_error(libc::EAGAIN))
        } else {
            Zygote::start(program, &self.creds, slot)
        };
        let zygote = started.and_then(|z| match watch(z.socket()) {
            Some(w) => Ok((z, w)),
            None => Err(io::Error::from_raw_os_error(libc::ENOMEM)),
        });
        match zygote {
            Ok((z, w)) => {
                tracing::debug!(pid = z.pid(), uid = self.creds.uid, "zygote started");
                self.zygote = Some(Rc::new(z));
                self.watch = Some(w);
                self.wake = wake;
                self.started = Instant::now();
                self.ready = false;
                self.failed = None;
                Ok(())
            }
            Err(e) => {
                self.failed = Some(Instant::now());
                Err(e)
            }
        }
    }

    /// Spawn requests not answered yet.
    pub fn spawning(&self) -> usize {
        self.asked.len()
    }

    /// Asks the zygote for a helper, which will take `slot`.
    pub fn ask_spawn(&mut self, buf_size: usize, slot: Slot) -> io::Result<()> {
        let zygote = self.zygote.as_ref().ok_or(io::ErrorKind::NotConnected)?;
        zygote.ask_spawn(buf_size)?;
        self.asked.push_back((Instant::now(), slot));
        Ok(())
    }

    /// The zygote's next message, if one is there. An error: the zygote is unusable (it
    /// ended, or spoke out of turn) and must be stopped.
    pub fn next_answer(&mut self) -> io::Result<Option<Answer>> {
        let Some(zygote) = &self.zygote else {
            return Ok(None);
        };
        match zygote.next_message()? {
            None => Ok(None),
            Some(Message::Ready) => {
                self.ready = true;
                Ok(Some(Answer::Ready {
                    took: self.started.elapsed(),
                }))
            }
            Some(Message::Spawned(result)) => {
                let (asked, slot) = self
                    .asked
                    .pop_front()
                    .ok_or_else(|| io::Error::from_raw_os_error(libc::EPROTO))?;
                Ok(Some(match result {
                    Ok(spawned) => Answer::Spawned {
                        spawned,
                        slot,
                        took: asked.elapsed(),
                    },
                    Err(e) => Answer::Refused(e),
                }))
            }
        }
    }

    /// When the zygote's silence is overdue: its hello, or its oldest unanswered spawn.
    pub fn answer_due(&self) -> Option<Instant> {
        self.zygote.as_ref()?;
        let asked = if self.ready {
            self.asked.front()?.0
        } else {
            self.started
        };
        Some(asked + ANSWER_TIMEOUT)
    }

    /// The zygote failed with `e`: it is let go, and unless it had merely ended after its
    /// hello (killed, say), no other is started for `RETRY_START_AFTER`: a helper program
    /// that answers wrongly or not at all, or hands over what it must not, is not started
    /// again for every request.
    pub fn failed(&mut self, e: &io::Error) {
        let ended = self.ready && e.raw_os_error() == Some(libc::EPIPE);
        if ended {
            self.stop_zygote();
        } else {
            self.back_off();
        }
    }

    /// Lets the zygote go and starts no other for `RETRY_START_AFTER`: the crew's requests
    /// go to its remaining helpers, or to the next module.
    pub fn back_off(&mut self) {
        self.stop_zygote();
        self.failed = Some(Instant::now());
    }

    /// Lets the zygote go (it exits once the last of its helpers is gone); unanswered
    /// requests are forgotten.
    pub fn stop_zygote(&mut self) {
        self.watch = None;
        self.zygote = None;
        self.ready = false;
        self.asked.clear();
    }
}
