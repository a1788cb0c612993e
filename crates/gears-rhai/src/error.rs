//! Turning Rhai errors into the messages users see.

use gears_core::GearsError;
use rhai::{EvalAltResult, ParseError, Position};

fn with_position(message: String, position: Position) -> String {
    if position.is_none() {
        message
    } else {
        format!("{message} ({position})")
    }
}

/// The message of a runtime error, at the line of the user's script where it happened.
///
/// Errors raised inside closures and script functions are unwrapped down to the innermost
/// error, so the position points at the failing expression. An error raised with a text (by
/// `throw "text"` or by a Gears function) reads `text (line N, position M)`; other errors keep
/// Rhai's own wording.
pub(crate) fn describe(error: &EvalAltResult) -> String {
    let mut error = error;
    while let EvalAltResult::ErrorInFunctionCall(_, _, inner, _) = error {
        error = inner;
    }
    match error {
        EvalAltResult::ErrorRuntime(value, position) => {
            let message = match value.as_immutable_string_ref() {
                Ok(s) => s.to_string(),
                Err(_) => value.to_string(),
            };
            with_position(message, *position)
        }
        other => other.to_string(),
    }
}

/// The Gears error of a failed Rhai call: the execution's stop when it was stopped (Rhai then
/// reports it as a termination or as an error it caused), otherwise `wrap(describe(error))`.
pub(crate) fn classify(error: &EvalAltResult, wrap: fn(String) -> GearsError) -> GearsError {
    if let Some(stopped) = gears_core::control::current().and_then(|c| c.stop_message()) {
        return GearsError::Stopped(stopped);
    }
    wrap(describe(error))
}

/// The message of a compile error: `Syntax error: <what> (line N, position M)`.
pub(crate) fn describe_parse(error: &ParseError) -> String {
    format!("Syntax error: {error}")
}
