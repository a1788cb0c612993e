//! What bounds a Rhai script: its execution's memory limit and control, observed while it runs.
//!
//! Rhai has no allocator hook, so memory is bounded two ways:
//! - the execution's memory meter (the module counts what the worker thread allocates) is
//!   checked after every operation, and the whole control (stop, atomic time, Gears' global
//!   memory) every [`CHECK_EVERY`] operations: a stopped execution terminates the script, which
//!   Rhai's `try` can not catch. One operation can at most about double a value (`s += s`);
//! - the functions that allocate far more than their input (`pad`, `blob(n)`, `split`,
//!   `to_chars`, ...) are replaced by versions that first check the size against what the
//!   execution may still use (see [`crate::sizes`]), so `pad(1 << 40, 0)` is an error, never an
//!   allocation failure.
//!
//! Rhai's own data size limits are left off: with any of them set, Rhai recounts a whole array
//! after each operation on it, which makes filling a large array quadratic.

use std::time::Duration;

use gears_core::control;
use rhai::{Dynamic, Engine, INT};

/// Operations between two full checks of the execution's control (which sums Gears' memory
/// across threads); the execution's own limits are checked after every operation.
const CHECK_EVERY: u64 = 256;

/// Makes the engine observe the execution compiling on this thread.
pub(crate) fn apply(engine: &mut Engine) {
    engine.on_progress(|operations| {
        let checked = if operations % CHECK_EVERY == 0 {
            control::check_current()
        } else {
            control::check_current_local()
        };
        checked
            .err()
            .map(|stopped| Dynamic::from(stopped.message().to_string()))
    });
    crate::sizes::register(engine);
    register_sleep(engine);
}

/// Error text of `sleep` inside an atomic block.
pub(crate) const SLEEP_IN_ATOMIC: &str =
    "sleep is not allowed inside an atomic block (it would hold the Redis lock)";

/// The longest slice of a sleep between two checks of the execution's control.
const SLEEP_SLICE: Duration = Duration::from_millis(10);

/// Sleeps for `seconds`, in slices, stopping early when the execution is stopped; refused
/// inside an atomic block (the thread holds the Redis lock).
fn sleep(seconds: f64) -> Result<(), Box<rhai::EvalAltResult>> {
    let control = control::current();
    if control.as_ref().is_some_and(|c| c.in_atomic()) {
        return Err(SLEEP_IN_ATOMIC.into());
    }
    if !seconds.is_finite() || seconds <= 0.0 {
        return Ok(());
    }
    let deadline = std::time::Instant::now() + Duration::from_secs_f64(seconds.min(1e9));
    loop {
        if let Err(stopped) = control::check_current() {
            return Err(stopped.message().to_string().into());
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        std::thread::sleep(left.min(SLEEP_SLICE));
    }
}

/// Replaces Rhai's `sleep` (which would block the thread unobserved).
fn register_sleep(engine: &mut Engine) {
    engine.register_fn("sleep", |seconds: INT| sleep(seconds as f64));
    engine.register_fn("sleep", sleep);
}
