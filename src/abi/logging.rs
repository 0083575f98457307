//! `tracing` events into Samba's debug log, under the module's own debug class.
//!
//! `log level = 1 aio_fork:10` then works as for any Samba module: the class level is read
//! at each event, so `smbcontrol smbd debug` changes take effect at once.

use crate::abi::samba::DebugApi;
use std::ffi::CString;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};

/// The Samba debug class name admins use in `log level`.
pub const DEBUG_CLASS: &str = "aio_fork";

/// Samba debug level for a tracing level: 0 error, 1 warning, 2 notice (module summaries),
/// 5 debug, 10 per-request trace.
pub fn samba_level(level: &Level) -> i32 {
    match *level {
        Level::ERROR => 0,
        Level::WARN => 1,
        Level::INFO => 2,
        Level::DEBUG => 5,
        Level::TRACE => 10,
    }
}

struct SambaLog {
    api: DebugApi,
    class: i32,
    next_span: AtomicU64,
}

static INSTALLED: OnceLock<()> = OnceLock::new();

/// Registers the debug class and makes the bridge the process-wide tracing dispatcher.
/// Safe to call more than once (each tree connect may load the module again).
pub fn install(api: DebugApi) {
    INSTALLED.get_or_init(|| {
        let name = CString::new(DEBUG_CLASS).unwrap();
        // SAFETY: debug_add_class copies the name; returns the class index or -1.
        let class = unsafe { (api.debug_add_class)(name.as_ptr()) };
        let log = SambaLog {
            api,
            class: class.max(0),
            next_span: AtomicU64::new(1),
        };
        // Another Rust module in this smbd may have set one first; then its wins.
        let _ = tracing::subscriber::set_global_default(log);
    });
}

impl SambaLog {
    fn level_enabled(&self, level: i32) -> bool {
        // SAFETY: reads Samba's per-class level table; class came from debug_add_class.
        unsafe { (self.api.debuglevel_get_class)(self.class as usize) >= level }
    }
}

impl Subscriber for SambaLog {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        // Levels change at run time (smbcontrol, reload): ask `enabled` every time.
        Interest::sometimes()
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.level_enabled(samba_level(metadata.level()))
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed))
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let meta = event.metadata();
        let level = samba_level(meta.level());
        let mut line = LineWriter(String::new());
        event.record(&mut line);
        let location = format!(
            "{}:{}",
            meta.file().unwrap_or("aio_fork"),
            meta.line().unwrap_or(0)
        );
        let (Ok(location), Ok(func), Ok(text)) = (
            CString::new(location),
            CString::new(meta.target()),
            CString::new(line.0.replace('\0', "\\0")),
        ) else {
            return;
        };
        // SAFETY: Samba's DEBUGC() expansion: header then text, with valid C strings and a
        // "%s" format so the message is never taken as a format.
        unsafe {
            if (self.api.dbghdrclass)(level, self.class, location.as_ptr(), func.as_ptr()) {
                (self.api.dbgtext)(c"%s\n".as_ptr(), text.as_ptr());
            }
        }
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// Formats an event as `message key=value ...`.
struct LineWriter(String);

impl Visit for LineWriter {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.prepend(value);
        } else {
            let _ = write!(self.0, " {}={}", field.name(), value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.prepend(&format!("{value:?}"));
        } else {
            let _ = write!(self.0, " {}={:?}", field.name(), value);
        }
    }
}

impl LineWriter {
    fn prepend(&mut self, message: &str) {
        self.0.insert_str(0, message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_samba_conventions() {
        assert_eq!(samba_level(&Level::ERROR), 0);
        assert_eq!(samba_level(&Level::WARN), 1);
        assert_eq!(samba_level(&Level::INFO), 2);
        assert_eq!(samba_level(&Level::DEBUG), 5);
        assert_eq!(samba_level(&Level::TRACE), 10);
    }
}
