//! What bounds a Rhai script: its execution's memory limit and control, observed while it runs.
//!
//! Rhai has no allocator hook, so memory is bounded two ways:
//! - the execution's memory meter (the module counts what the worker thread allocates) is
//!   checked every [`CHECK_LOCAL_EVERY`] operations, and the whole control (stop, atomic time, Gears' global
//!   memory) every [`CHECK_EVERY`] operations: a stopped execution terminates the script, which
//!   Rhai's `try` can not catch;
//! - the functions that allocate as much as they are asked for (`pad`, `blob(n)`) are replaced
//!   by versions that first check the size against what the execution may still use, so
//!   `pad(1 << 40, 0)` is an error, never an allocation failure.
//!
//! Rhai's own data size limits are left off: with any of them set, Rhai recounts a whole array
//! after each operation on it, which makes filling a large array quadratic.

use std::time::Duration;

use gears_core::control;
use rhai::{Array, Blob, Dynamic, Engine, EvalAltResult, ImmutableString, Position, INT};

/// Operations between two full checks of the execution's control.
const CHECK_EVERY: u64 = 256;
/// Operations between two checks of the execution's own limits (memory, atomic time, stop).
const CHECK_LOCAL_EVERY: u64 = 16;
/// The most a single request may allocate when the execution has no memory limit.
const MAX_REQUEST: u64 = 1 << 40;

type Fallible<T> = Result<T, Box<EvalAltResult>>;

/// Makes the engine observe the execution compiling on this thread.
pub(crate) fn apply(engine: &mut Engine) {
    engine.on_progress(|operations| {
        let checked = if operations % CHECK_EVERY == 0 {
            control::check_current()
        } else if operations % CHECK_LOCAL_EVERY == 0 {
            control::check_current_local()
        } else {
            return None;
        };
        checked
            .err()
            .map(|stopped| Dynamic::from(stopped.message().to_string()))
    });
    register_sizes(engine);
    register_sleep(engine);
}

/// A rough size in bytes of a value and everything in it.
fn estimated_size(value: &Dynamic, depth: usize) -> u64 {
    const SLOT: u64 = 16;
    if depth > 64 {
        return SLOT;
    }
    if let Ok(s) = value.as_immutable_string_ref() {
        return SLOT + s.len() as u64;
    }
    if let Ok(blob) = value.as_blob_ref() {
        return SLOT + blob.len() as u64;
    }
    if let Ok(array) = value.as_array_ref() {
        return array.iter().fold(SLOT, |total, item| {
            total.saturating_add(estimated_size(item, depth + 1))
        });
    }
    if let Ok(map) = value.as_map_ref() {
        return map.iter().fold(SLOT, |total, (key, item)| {
            total
                .saturating_add(SLOT + key.len() as u64)
                .saturating_add(estimated_size(item, depth + 1))
        });
    }
    SLOT
}

/// Refuses a request for `count` more items of `each` bytes when the execution could not hold
/// them, with Rhai's own error for data too large.
fn ensure_room(what: &str, count: u64, each: u64) -> Fallible<()> {
    let bytes = count.saturating_mul(each.max(1));
    let room = match control::current() {
        Some(control) if control.limits().memory > 0 => {
            (control.limits().memory as i64 - control.memory().used()).max(0) as u64
        }
        _ => MAX_REQUEST,
    };
    if bytes > room.min(MAX_REQUEST) {
        return Err(EvalAltResult::ErrorDataTooLarge(what.to_string(), Position::NONE).into());
    }
    Ok(())
}

/// A length argument: negative means none.
fn length(len: INT) -> u64 {
    u64::try_from(len).unwrap_or(0)
}

fn register_sizes(engine: &mut Engine) {
    engine.register_fn(
        "pad",
        |array: &mut Array, len: INT, item: Dynamic| -> Fallible<()> {
            let len = length(len);
            let current = array.len() as u64;
            if len > current {
                ensure_room("Size of array", len - current, estimated_size(&item, 0))?;
                array.resize(len as usize, item);
            }
            Ok(())
        },
    );
    engine.register_fn(
        "pad",
        |blob: &mut Blob, len: INT, value: INT| -> Fallible<()> {
            let len = length(len);
            if len > blob.len() as u64 {
                ensure_room("Size of BLOB", len - blob.len() as u64, 1)?;
                blob.resize(len as usize, (value & 0xff) as u8);
            }
            Ok(())
        },
    );
    let new_blob = |len: INT, value: INT| -> Fallible<Blob> {
        let len = length(len);
        ensure_room("Size of BLOB", len, 1)?;
        Ok(vec![(value & 0xff) as u8; len as usize])
    };
    engine.register_fn("blob", move |len: INT| new_blob(len, 0));
    engine.register_fn("blob", new_blob);
    engine.register_fn(
        "pad",
        |string: &mut ImmutableString, len: INT, character: char| -> Fallible<()> {
            let len = length(len);
            let current = string.chars().count() as u64;
            if len > current {
                ensure_room(
                    "Length of string",
                    len - current,
                    character.len_utf8() as u64,
                )?;
                let s = string.make_mut();
                for _ in current..len {
                    s.push(character);
                }
            }
            Ok(())
        },
    );
    engine.register_fn(
        "pad",
        |string: &mut ImmutableString, len: INT, padding: &str| -> Fallible<()> {
            let len = length(len);
            let mut current = string.chars().count() as u64;
            let step = padding.chars().count() as u64;
            if len <= current || step == 0 {
                return Ok(());
            }
            ensure_room("Length of string", len - current, 4)?;
            let s = string.make_mut();
            while current < len {
                if current + step <= len {
                    s.push_str(padding);
                    current += step;
                } else {
                    s.extend(padding.chars().take((len - current) as usize));
                    current = len;
                }
            }
            Ok(())
        },
    );
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
