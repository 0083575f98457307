//! A helper that breaks the protocol: a message no helper sends, a reply to nothing that
//! was asked, a result outside the piece asked for. The helper program never does that,
//! so whoever controls the user's processes has taken it over. Its message is dropped (no
//! byte of it reaches smbd's buffers), the helper ended and its piece sent again, as after
//! a death; and its crew starts no zygote for a while (`Crew::back_off`): its requests go to
//! the helpers it still has, or to the next module, so that a user who breaks helpers
//! cannot make smbd start one process after another.

use super::PoolInner;

impl PoolInner {
    /// Ends helper `idx`, which broke the protocol (`what`), and distrusts its crew.
    pub(super) fn broke_protocol(&mut self, idx: usize, what: std::fmt::Arguments) {
        let (pid, crew) = (self.helpers[idx].process.pid(), self.helpers[idx].crew);
        tracing::error!(
            pid,
            uid = self.crews[crew].creds.uid,
            "helper broke the protocol ({what}): ended, its request sent again; no new \
             helper for its user for a while"
        );
        self.stats.violations += 1;
        self.bury(idx, true);
        self.crews[crew].back_off();
    }
}
