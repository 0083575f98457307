//! The boundary to C: no Rust panic may unwind into smbd. Every function smbd or tevent
//! calls runs its body under `guard`.

use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs `f`; a panic is logged and turned into `on_panic`.
pub fn guard<T>(on_panic: T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(panic = %what, "internal error caught at the smbd boundary");
            on_panic
        }
    }
}
