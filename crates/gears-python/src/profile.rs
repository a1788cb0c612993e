//! Profiling a session's callbacks with cProfile (`RG.PYPROFILE`), as RedisGears 1.2 did.
//!
//! While profiling is on (`ProfileExecutions` 1, see [`set_profiling`]), every call Gears makes
//! into a session's function runs with a profiler of that session enabled: each step's callback,
//! `onRegistered`, a reader's function (`PythonReader`, `patternGenerator`) and each step of a
//! reader's generator. The session's [`Profile`] keeps the statistics until `RESET` or the
//! session's end; a `run()` execution kept in the execution table keeps its own.
//!
//! - The profilers are `_lsprof.Profiler` objects (cProfile's engine; the type, taken at start-up,
//!   is an immutable C type), held only in Rust, untracked by the cyclic GC (`gc.get_objects()`
//!   does not list them) and enabled and disabled from Rust: no Python code switches them, and no
//!   call that switches them shows in the statistics (1.2 showed its `profileStop`). A callback
//!   can still see its own session's profiler while it runs, as `sys.getprofile()`.
//! - One profiler per session *and thread*: a profiler follows one thread's call stack, and the
//!   session's callbacks can run on several workers at once (a registration's events next to a
//!   `run()`). The text merges them.
//! - A callback inside a callback on one thread (a callback's `execute` runs a sync registration
//!   of another session): the inner session's profiler takes the thread over and gives it back
//!   to the outer one, whose timings then include the inner call. A profiler already profiling
//!   on this thread is not switched again (the same session, deeper).
//! - The text is made by `pstats` from the standard library (`profile.py`, run in a fresh dict
//!   each time, with the builtins taken at start-up), on the thread that asks for it: never
//!   Redis's main thread, which must not wait for the GIL.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::ThreadId;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyList};

use crate::watchdog;

const STATS_SOURCE: &str = include_str!("profile.py");

/// `ProfileExecutions`: whether callbacks are profiled now.
static ENABLED: AtomicBool = AtomicBool::new(false);
/// `_lsprof.Profiler`, and `profile.py` compiled.
static PROFILER_TYPE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static STATS_CODE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

thread_local! {
    /// The profilers enabled on this thread, innermost last (borrowed: each is owned by the
    /// [`Switch`] further up this thread's stack that enabled it).
    static ACTIVE: RefCell<Vec<*mut ffi::PyObject>> = const { RefCell::new(Vec::new()) };
}

/// Turns profiling on or off (`ProfileExecutions`), from the next callback on.
pub fn set_profiling(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Takes `_lsprof.Profiler` and compiles `profile.py`. Called once, at interpreter start.
pub(crate) fn install(py: Python<'_>) -> PyResult<()> {
    let profiler = py.import("_lsprof")?.getattr("Profiler")?;
    let code = py.import("builtins")?.getattr("compile")?.call1((
        STATS_SOURCE,
        "<gears-profile>",
        "exec",
    ))?;
    let _ = PROFILER_TYPE.set(py, profiler.unbind());
    let _ = STATS_CODE.set(py, code.unbind());
    Ok(())
}

/// One session's profilers, one per thread that ran its callbacks while profiling was on.
pub(crate) struct Profile {
    profilers: Mutex<Vec<(ThreadId, Py<PyAny>)>>,
    profiled: AtomicBool,
}

impl Profile {
    pub fn new() -> Arc<Profile> {
        Arc::new(Profile {
            profilers: Mutex::new(Vec::new()),
            profiled: AtomicBool::new(false),
        })
    }

    /// Never held while waiting for the GIL.
    fn lock(&self) -> MutexGuard<'_, Vec<(ThreadId, Py<PyAny>)>> {
        self.profilers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// This thread's profiler of the session, made on first use; `None` if it can not be made.
    fn for_this_thread(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        let thread = std::thread::current().id();
        if let Some((_, profiler)) = self.lock().iter().find(|(t, _)| *t == thread) {
            return Some(profiler.clone_ref(py));
        }
        let profiler = PROFILER_TYPE.get(py)?.bind(py).call0().ok()?.unbind();
        // Out of the cyclic GC's lists, so `gc.get_objects()` does not show it to scripts. No
        // cycle can run through it: no Python object refers to it (Rust holds it, and it is
        // switched from Rust, so its own methods never appear in its entries).
        // SAFETY: a live object of a GC type, untracked once; its deallocation untracks again,
        // which CPython allows.
        unsafe { ffi::PyObject_GC_UnTrack(profiler.as_ptr().cast()) };
        self.lock().push((thread, profiler.clone_ref(py)));
        Some(profiler)
    }
}

/// Runs `f` (a call into the session's code) with the session's profiler enabled on this
/// thread, if profiling is on.
pub(crate) fn profiled<R>(py: Python<'_>, profile: &Profile, f: impl FnOnce() -> R) -> R {
    if !ENABLED.load(Ordering::Relaxed) {
        return f();
    }
    let Some(profiler) = profile.for_this_thread(py) else {
        return f();
    };
    profile.profiled.store(true, Ordering::Relaxed);
    let already = ACTIVE.with(|active| active.borrow().contains(&profiler.as_ptr()));
    if already {
        return f();
    }
    let _switch = Switch::on(py, profiler);
    f()
}

/// This thread's profiling switched to one profiler, until dropped (also when unwinding):
/// then it is disabled and the one it replaced, if any, enabled again.
struct Switch<'py> {
    py: Python<'py>,
    profiler: Py<PyAny>,
}

impl<'py> Switch<'py> {
    fn on(py: Python<'py>, profiler: Py<PyAny>) -> Self {
        // Enabling one profiler replaces the thread's current one (its call stack is kept).
        call(profiler.bind(py), "enable");
        ACTIVE.with(|active| active.borrow_mut().push(profiler.as_ptr()));
        Switch { py, profiler }
    }
}

impl Drop for Switch<'_> {
    fn drop(&mut self) {
        call(self.profiler.bind(self.py), "disable");
        let outer = ACTIVE.with(|active| {
            let mut active = active.borrow_mut();
            active.pop();
            active.last().copied()
        });
        if let Some(outer) = outer {
            // SAFETY: the Switch that enabled it, further up this thread's stack, owns it.
            let outer = unsafe { Bound::from_borrowed_ptr(self.py, outer) };
            call(&outer, "enable");
        }
    }
}

/// `enable()` or `disable()`. A failure (an audit hook that raised) only costs statistics.
fn call(profiler: &Bound<'_, PyAny>, method: &str) {
    if let Err(error) = profiler.call_method0(method) {
        drop(error);
    }
}

/// Drops Python objects: now if this thread holds the GIL, else on the watchdog thread (a
/// caller on Redis's main thread must not wait for the GIL).
fn free(profilers: Vec<(ThreadId, Py<PyAny>)>) {
    if profilers.is_empty() {
        return;
    }
    // SAFETY: plain query of whether this thread holds the GIL.
    if unsafe { ffi::PyGILState_Check() } == 1 {
        drop(profilers);
    } else {
        watchdog::defer(Box::new(move |_py| drop(profilers)));
    }
}

impl Drop for Profile {
    fn drop(&mut self) {
        let profilers = std::mem::take(
            self.profilers
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner),
        );
        free(profilers);
    }
}

impl gears_core::Profiler for Profile {
    fn profiled(&self) -> bool {
        self.profiled.load(Ordering::Relaxed)
    }

    fn stats(&self, order: &str) -> Result<Option<String>, String> {
        Python::attach(|py| {
            let profilers: Vec<Py<PyAny>> = self
                .lock()
                .iter()
                .map(|(_, profiler)| profiler.clone_ref(py))
                .collect();
            if profilers.is_empty() {
                return Ok(None);
            }
            let text = pstats_text(py, profilers, order).map_err(|e| match e.value(py).str() {
                Ok(message) if e.is_instance_of::<pyo3::exceptions::PyValueError>(py) => {
                    message.to_string()
                }
                _ => format!("Failed getting profile information: {e}"),
            })?;
            Ok(text)
        })
    }

    fn reset(&self) {
        let profilers = std::mem::take(&mut *self.lock());
        self.profiled.store(false, Ordering::Relaxed);
        free(profilers);
    }
}

/// Runs `profile.py` in a fresh dict and calls its `stats`.
fn pstats_text(py: Python<'_>, profilers: Vec<Py<PyAny>>, order: &str) -> PyResult<Option<String>> {
    let code = STATS_CODE
        .get(py)
        .ok_or_else(|| crate::exceptions::error::new_err("profiling is not installed"))?;
    let globals = PyDict::new(py);
    globals.set_item("__builtins__", crate::isolation::builtins(py)?)?;
    globals.set_item("__name__", "gears_profile")?;
    // SAFETY: a code object compiled at start-up, run with a fresh dict as its globals and
    // locals; PyEval_EvalCode returns a new reference or NULL with an exception set.
    unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            ffi::PyEval_EvalCode(code.as_ptr(), globals.as_ptr(), globals.as_ptr()),
        )?;
    }
    let stats = globals
        .get_item("stats")?
        .ok_or_else(|| crate::exceptions::error::new_err("profile.py has no stats()"))?;
    let text = stats.call1((PyList::new(py, profilers)?, order))?;
    // Python objects kept alive by the text's making go now, with the GIL held.
    globals.clear();
    if text.is_none() {
        return Ok(None);
    }
    Ok(Some(text.extract::<String>()?))
}
