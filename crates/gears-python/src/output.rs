//! `print()` and anything else a script writes to `sys.stdout` / `sys.stderr` goes to the Redis
//! log (`notice` and `warning`), as Lua's and Rhai's `print` do, never to the server's stdout.
//! Text is logged a line at a time; a partial line waits for its end (or a flush).

use std::sync::{Mutex, OnceLock, PoisonError};

use gears_core::LogLevel;
use pyo3::prelude::*;

/// Where the module writes log lines.
pub type LogSink = Box<dyn Fn(LogLevel, &str) + Send + Sync>;

static SINK: OnceLock<LogSink> = OnceLock::new();

/// The longest partial line kept waiting for its end.
const MAX_PENDING: usize = 16 * 1024;

/// Sets where scripts' output is logged (once, before the interpreter starts).
pub fn set_log_sink(sink: LogSink) {
    let _ = SINK.set(sink);
}

/// Logs a warning of Gears' Python support.
pub(crate) fn log_warning(line: &str) {
    log(LogLevel::Warning, &format!("GEARS: {line}"));
}

fn log(level: LogLevel, line: &str) {
    if let Some(sink) = SINK.get() {
        sink(level, line);
    }
}

/// A text stream that writes complete lines to the Redis log.
#[pyclass(module = "gears", frozen)]
pub(crate) struct LogStream {
    level: LogLevel,
    pending: Mutex<String>,
}

#[pymethods]
impl LogStream {
    fn write(&self, text: &str) -> usize {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending.push_str(text);
        while let Some(end) = pending.find('\n') {
            let line: String = pending.drain(..=end).collect();
            log(self.level, line.trim_end_matches(['\n', '\r']));
        }
        // Text that never ends its line is logged in pieces, not kept without bound.
        if pending.len() >= MAX_PENDING {
            log(self.level, &std::mem::take(&mut *pending));
        }
        text.chars().count()
    }

    fn flush(&self) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if !pending.is_empty() {
            log(self.level, &std::mem::take(&mut *pending));
        }
    }

    fn isatty(&self) -> bool {
        false
    }

    fn writable(&self) -> bool {
        true
    }

    #[getter]
    fn encoding(&self) -> &'static str {
        "utf-8"
    }
}

/// Replaces `sys.stdout` and `sys.stderr` (called at start-up).
pub(crate) fn install(py: Python<'_>) -> PyResult<()> {
    let sys = py.import("sys")?;
    for (name, level) in [("stdout", LogLevel::Notice), ("stderr", LogLevel::Warning)] {
        let stream = Py::new(
            py,
            LogStream {
                level,
                pending: Mutex::new(String::new()),
            },
        )?;
        sys.setattr(name, stream)?;
    }
    Ok(())
}
