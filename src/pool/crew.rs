//! A crew: the helpers of one set of credentials, and the zygote that forks them.

use crate::parent::credentials::Credentials;
use crate::parent::processes::Slot;
use crate::parent::zygote::Zygote;
use std::ffi::CStr;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// After the helper program failed to start, the crew's requests go to the next module
/// for this long before it is tried again.
const RETRY_START_AFTER: Duration = Duration::from_secs(10);

pub struct Crew {
    pub creds: Credentials,
    /// Set while the crew may grow; helpers keep their zygote alive themselves.
    pub zygote: Option<Rc<Zygote>>,
    /// When the helper program last failed to start.
    failed: Option<Instant>,
}

impl Crew {
    pub fn new(creds: Credentials) -> Crew {
        Crew {
            creds,
            zygote: None,
            failed: None,
        }
    }

    /// Whether a zygote should be started now: none runs, and no recent start failed.
    pub fn needs_zygote(&self) -> bool {
        self.zygote.is_none() && !self.failed.is_some_and(|t| t.elapsed() < RETRY_START_AFTER)
    }

    /// Starts the zygote as the calling thread's user, which must hold `creds`; answers
    /// how long it took. `refuse` stands in for a failing start (testing mode).
    pub fn start_zygote(
        &mut self,
        program: &CStr,
        slot: Slot,
        refuse: bool,
    ) -> io::Result<Duration> {
        let began = Instant::now();
        let started = if refuse {
            Err(io::Error::from_raw_os_error(libc::EAGAIN))
        } else {
            Zygote::start(program, &self.creds, slot)
        };
        match started {
            Ok(z) => {
                tracing::debug!(pid = z.pid(), uid = self.creds.uid, "zygote started");
                self.zygote = Some(Rc::new(z));
                self.failed = None;
                Ok(began.elapsed())
            }
            Err(e) => {
                self.failed = Some(Instant::now());
                Err(e)
            }
        }
    }
}
