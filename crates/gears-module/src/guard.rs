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
