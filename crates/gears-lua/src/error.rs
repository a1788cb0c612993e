//! Turning mlua errors into the short texts users see.
//!
//! A Lua error raised by `error('boom')` on line 3 of a script reads `script:3: boom`; an error
//! raised by a Gears function (a builder argument error, a Redis error from `execute`) reads as
//! that function's message. mlua's wrapping (`CallbackError`, `WithContext`) and Lua stack
//! tracebacks are dropped.

use gears_core::memory::LimitPassed;
use gears_core::GearsError;
use mlua::Value;

/// The user-facing text of an mlua error. An error raised by a Gears function gets the script
/// line that called it (`script:2: wrong number of args to map function`), as Lua's own errors do.
pub fn message(error: &mlua::Error) -> String {
    match error {
        // A thrown value is the whole error, as Lua's C functions raise it.
        mlua::Error::CallbackError { cause, .. } if thrown(cause).is_some() => message(cause),
        mlua::Error::CallbackError { cause, traceback } => {
            let text = message(cause);
            match script_line(traceback) {
                Some(line) if !text.starts_with("script:") => format!("script:{line}: {text}"),
                _ => text,
            }
        }
        mlua::Error::WithContext { cause, .. } => message(cause),
        mlua::Error::RuntimeError(m) | mlua::Error::MemoryError(m) => strip_traceback(m),
        mlua::Error::SyntaxError { message, .. } => strip_traceback(message),
        mlua::Error::ExternalError(e) => match e.downcast_ref::<GearsError>() {
            Some(g) => g.message().to_string(),
            None if e.is::<Thrown>() => e.to_string(),
            None => strip_traceback(&e.to_string()),
        },
        mlua::Error::BadArgument { to, pos, cause, .. } => match to {
            Some(to) => format!("bad argument #{pos} to '{to}': {}", message(cause)),
            None => format!("bad argument #{pos}: {}", message(cause)),
        },
        other => strip_traceback(&other.to_string()),
    }
}

/// The Gears error of a failed Lua call: the execution's stop when it was stopped (the Lua
/// error is then only its consequence); a memory error stops the execution (the state's memory
/// limit is the execution's); otherwise `wrap(text)`.
pub fn classify(error: &mlua::Error, wrap: fn(String) -> GearsError) -> GearsError {
    if let Some(control) = gears_core::control::current() {
        if is_memory_error(error) {
            control.stop(state_limit(&control).message());
        }
        if let Some(stopped) = control.stop_message() {
            return GearsError::Stopped(stopped);
        }
    }
    wrap(message(error))
}

/// The limit a Lua state's memory limit stands for: the execution's or Gears' whole limit,
/// whichever is lower (see `globals::new_state`).
fn state_limit(control: &gears_core::control::ExecutionControl) -> LimitPassed {
    let execution = control.limits().memory;
    let global = gears_core::memory::global_limit();
    if global > 0 && (execution == 0 || global < execution) {
        LimitPassed::Global(global)
    } else {
        LimitPassed::Execution(execution)
    }
}

fn is_memory_error(error: &mlua::Error) -> bool {
    match error {
        mlua::Error::MemoryError(_) => true,
        mlua::Error::CallbackError { cause, .. } | mlua::Error::WithContext { cause, .. } => {
            is_memory_error(cause)
        }
        _ => false,
    }
}

/// A Lua error raised with `text` as its message, as Gears' own functions raise them.
pub fn raise(text: impl Into<String>) -> mlua::Error {
    mlua::Error::RuntimeError(text.into())
}

/// A Gears error raised inside Lua; its message is kept as is.
pub fn raise_gears(error: GearsError) -> mlua::Error {
    mlua::Error::external(error)
}

/// A Lua value raised as an error by a Rust function, as C code raises one with `lua_error`
/// (the string functions raise `script:3: malformed pattern ...` as Lua's own do). mlua raises
/// only its own error objects, so the sandbox's `pcall`, `xpcall` and `coroutine.resume` hand
/// the script this value in their place (see `globals`).
#[derive(Debug)]
pub struct Thrown(pub Value);

impl std::fmt::Display for Thrown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Value::String(s) => f.write_str(&s.to_string_lossy()),
            other => write!(f, "(error object is a {} value)", other.type_name()),
        }
    }
}

impl std::error::Error for Thrown {}

/// An error that raises `value` (see [`Thrown`]).
pub fn throw(value: Value) -> mlua::Error {
    mlua::Error::external(Thrown(value))
}

/// The value an error raised with [`throw`] carries, under mlua's wrapping.
pub fn thrown(error: &mlua::Error) -> Option<&Value> {
    match error {
        mlua::Error::CallbackError { cause, .. } | mlua::Error::WithContext { cause, .. } => {
            thrown(cause)
        }
        mlua::Error::ExternalError(e) => e.downcast_ref::<Thrown>().map(|t| &t.0),
        _ => None,
    }
}

/// The innermost line of the user's script in a Lua stack traceback (`\tscript:3: in ...`).
fn script_line(traceback: &str) -> Option<u32> {
    traceback.lines().find_map(|line| {
        let rest = line.trim_start().strip_prefix("script:")?;
        rest.split(':').next()?.parse().ok()
    })
}

fn strip_traceback(text: &str) -> String {
    match text.find("\nstack traceback:") {
        Some(at) => text[..at].to_string(),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn unwraps_callback_errors_and_drops_tracebacks() {
        let inner =
            mlua::Error::RuntimeError("script:3: boom\nstack traceback:\n\t[C]: in ?".into());
        let outer = mlua::Error::CallbackError {
            traceback: "stack traceback: ...".into(),
            cause: Arc::new(inner),
        };
        assert_eq!(message(&outer), "script:3: boom");
    }

    #[test]
    fn gears_errors_keep_their_text() {
        let e = raise_gears(GearsError::Redis("ERR unknown command".into()));
        assert_eq!(message(&e), "ERR unknown command");
    }
}
