//! The crate's error type.

use std::fmt;

/// Errors of Gears, by category. The `Display` text is what users see.
#[derive(Debug, Clone, PartialEq)]
pub enum GearsError {
    /// The user's script could not be compiled or raised at top level.
    Script(String),
    /// An invalid plan or builder argument (arity, types, unknown reader ...).
    Plan(String),
    /// A user callback failed on a record; the text goes into the errors list.
    Callback(String),
    /// A command sent to Redis through `execute` failed.
    Redis(String),
    /// The execution was stopped: a limit was passed (memory, time in an atomic block) or it
    /// was aborted. The whole execution ends; the text is reported once.
    Stopped(String),
    /// A bug in Gears itself.
    Internal(String),
}

impl GearsError {
    /// The message without a category prefix.
    pub fn message(&self) -> &str {
        match self {
            GearsError::Script(m)
            | GearsError::Plan(m)
            | GearsError::Callback(m)
            | GearsError::Redis(m)
            | GearsError::Stopped(m)
            | GearsError::Internal(m) => m,
        }
    }
}

impl fmt::Display for GearsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for GearsError {}

/// Result alias used across Gears.
pub type Result<T, E = GearsError> = std::result::Result<T, E>;
