//! No panic may cross into Redis: every entry point runs inside [`guarded`].

use std::panic::{catch_unwind, AssertUnwindSafe};

use redis_module::{RedisError, RedisResult};

/// Runs a command body; a panic becomes an error reply and the server keeps running.
pub(crate) fn guarded(f: impl FnOnce() -> RedisResult) -> RedisResult {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        Err(RedisError::String(format!(
            "Gears internal error: {}",
            panic_message(&panic)
        )))
    })
}

/// The text of a panic payload.
pub(crate) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_string()
    }
}

/// Reports panics in the Redis log, one line each, instead of Rust's default report on stderr:
/// Redis's stderr may be a pipe nobody reads (a full pipe would block the panicking worker for
/// good), and with `RUST_BACKTRACE` set the default report symbolizes a backtrace, which keeps
/// tens of megabytes of debug information for the life of the process. Every panic in Gears is
/// caught and answered as an error; the log line is for the operator.
pub(crate) fn report_panics_in_the_log() {
    std::panic::set_hook(Box::new(|info| {
        let message = if let Some(s) = info.payload().downcast_ref::<&str>() {
            s.to_string()
        } else if let Some(s) = info.payload().downcast_ref::<String>() {
            s.clone()
        } else {
            "panic".to_string()
        };
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let thread = std::thread::current();
        crate::host::log_line(
            gears_core::LogLevel::Warning,
            &format!(
                "internal error (a panic, caught) in thread '{}'{location}: {message}",
                thread.name().unwrap_or("unnamed")
            ),
        );
    }));
}
