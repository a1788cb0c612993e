//! `gears-python`: the Python frontend of Gears, on the embedded CPython (pyo3).
//!
//! - [`start_interpreter`] initialises CPython once, on Redis's main thread, with a module-chosen
//!   virtual environment (PyConfig, not environment variables) and libpython re-opened with
//!   `RTLD_GLOBAL` so C extensions such as numpy import inside redis-server.
//! - [`PythonFrontend`] compiles a script: every script gets its own globals dict holding
//!   RedisGears 1.2's API (`GearsBuilder`/`GB`, `execute`, `log`, ...), made for it from
//!   templates held in Rust (`isolation`), and bound to the script's own Redis host (`link`):
//!   whoever calls a script's `execute`, it acts as that script's user, and only while the
//!   script's execution lasts. `run()` lowers the recorded steps into a
//!   [`gears_core::ExecutionPlan`] (`plan`).
//! - [`PythonSession`] owns the script's globals, callbacks and values, and frees them when
//!   dropped; the executor enters it (taking the GIL) once per batch. `execute` releases the
//!   GIL before it waits for the Redis lock, so the lock order is always Redis lock → GIL, never
//!   the reverse.
//! - Executions are kept in bounds: Python's allocations are counted and refused past the
//!   execution's memory limit (`memory`), a watchdog thread interrupts Python code whose
//!   execution was stopped (`watchdog`), and `time.sleep` never sleeps holding the Redis lock
//!   and wakes up when its execution is stopped (`sleep`).
//! - While `ProfileExecutions` is 1, a session's callbacks run under cProfile, one profiler per
//!   session and thread, held in Rust (`profile`); `RG.PYPROFILE` shows them as pstats text.

mod aio;
mod api;
mod classes;
mod convert;
mod exceptions;
mod interpreter;
mod isolation;
mod link;
mod memory;
mod module;
mod output;
mod plan;
mod profile;
mod requirements;
mod session;
mod sleep;
mod watchdog;

pub use interpreter::{keep_thread_state, set_attempt_traceback, start_interpreter, PythonConfig};
pub use output::{set_log_sink, LogSink};
pub use profile::set_profiling;
pub use requirements::{unpack_wheels, use_requirement_folder};
pub use session::{PythonFrontend, PythonSession};

#[cfg(test)]
mod tests;
