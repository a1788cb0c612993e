//! Stopping running Python code.
//!
//! Python code only stops where it checks, and a callback stuck in `while True: pass` never
//! returns to Gears. So a watchdog thread, started with the interpreter, keeps a registry of the
//! threads running Python for an execution ([`Running`]); every [`TICK`] it checks each one's
//! control, and for a stopped execution it takes the GIL and raises `gears.forcestopped` in that
//! thread (`PyThreadState_SetAsyncExc`), again every [`RESEND`] while the thread still runs for
//! the stopped execution (a script may catch the exception once).
//!
//! Lock order: the watchdog never holds the Redis lock, so taking the GIL is always allowed; it
//! never holds the registry's mutex while it waits for the GIL. Threads register and unregister
//! while holding the GIL, so under the GIL the registry says exactly which thread runs Python
//! for which execution: a stop is never sent to a thread that already works for another one.
//!
//! The watchdog also frees sessions dropped on Redis's main thread (see
//! [`crate::session::PythonSession`]): that thread must not wait for the GIL.

use std::ffi::c_ulong;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use gears_core::control::{self, ExecutionControl};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use crate::exceptions::forcestopped;
use crate::memory::RefusalScope;

/// How often the watchdog checks the running executions.
pub(crate) const TICK: Duration = Duration::from_millis(10);
/// How often a stop is sent again to a thread that still runs for a stopped execution.
pub(crate) const RESEND: Duration = Duration::from_millis(100);

/// A thread running Python code for an execution.
struct Entry {
    token: u64,
    ident: c_ulong,
    control: Arc<ExecutionControl>,
    /// When the stop was last sent to this thread.
    last_sent: Option<Instant>,
}

/// Work the watchdog does under the GIL for other threads.
type Deferred = Box<dyn FnOnce(Python<'_>) + Send>;

static RUNNING: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
static DEFERRED: Mutex<Vec<Deferred>> = Mutex::new(Vec::new());
static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);
/// Python code that does nothing: running it makes the eval loop deliver a pending asynchronous
/// exception (see `Running::drop`). A code object (immutable, held only here), run in a fresh
/// dict: a shared function could have its `__code__` replaced by a script that found it
/// through `gc`, and Gears would run that script's code on another execution's thread.
static NOTHING: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Runs [`NOTHING`].
fn run_nothing(py: Python<'_>) {
    let Some(code) = NOTHING.get(py) else { return };
    let globals = pyo3::types::PyDict::new(py);
    // SAFETY: a code object compiled at start-up, run with a fresh dict as its globals and
    // locals; PyEval_EvalCode returns a new reference or NULL with an exception set.
    let result = unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            ffi::PyEval_EvalCode(code.as_ptr(), globals.as_ptr(), globals.as_ptr()),
        )
    };
    drop(result);
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Registers this thread as running Python for the current execution (if it works for one)
/// until dropped, unwinding included. Also lets the memory hooks refuse its allocations.
pub(crate) struct Running<'py> {
    py: Python<'py>,
    token: u64,
    refusals: Option<RefusalScope>,
}

impl<'py> Running<'py> {
    /// `None` when the thread works for no execution.
    pub(crate) fn enter(py: Python<'py>) -> Option<Running<'py>> {
        let control = control::current()?;
        let token = NEXT_TOKEN.fetch_add(1, Ordering::Relaxed);
        // SAFETY: plain query of the calling thread's id.
        let ident = unsafe { ffi::PyThread_get_thread_ident() };
        lock(&RUNNING).push(Entry {
            token,
            ident,
            control,
            last_sent: None,
        });
        Some(Running {
            py,
            token,
            refusals: Some(RefusalScope::enter()),
        })
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        // From here on this thread works for no execution: nothing it allocates is refused
        // (a refused frame would keep a pending stop from being delivered below).
        self.refusals.take();
        let sent = {
            let mut running = lock(&RUNNING);
            let position = running.iter().position(|e| e.token == self.token);
            position.is_some_and(|i| running.swap_remove(i).last_sent.is_some())
        };
        if sent {
            // A stop sent to this thread may still be pending (the code it was meant for
            // returned first). Deliver it now, into a function that does nothing, rather than
            // into the next Python code this thread runs, for another execution.
            run_nothing(self.py);
        }
    }
}

/// Runs `f` under the GIL on the watchdog thread, soon.
pub(crate) fn defer(f: Deferred) {
    lock(&DEFERRED).push(f);
}

/// Prepares the watchdog (under the GIL, at interpreter start) and starts its thread.
pub(crate) fn start(py: Python<'_>) -> PyResult<()> {
    let nothing = py
        .import("builtins")?
        .getattr("compile")?
        .call1(("None", "<gears>", "exec"))?;
    let _ = NOTHING.set(py, nothing.unbind());
    std::thread::Builder::new()
        .name("gears-py-watchdog".into())
        .spawn(watch)
        .map(|_| ())
        .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))
}

fn watch() {
    loop {
        std::thread::sleep(TICK);
        // Python's peak memory (RG.PYSTATS) is sampled at each tick.
        gears_core::memory::sample(gears_core::memory::Pool::Python);
        let due = due_stops();
        let deferred = std::mem::take(&mut *lock(&DEFERRED));
        if due.is_empty() && deferred.is_empty() {
            continue;
        }
        // The watchdog never holds the Redis lock: waiting for the GIL here is allowed.
        Python::attach(|py| {
            if !due.is_empty() {
                send_stops(py, &due);
            }
            for f in deferred {
                f(py);
            }
        });
    }
}

/// The registrations whose execution is stopped and whose thread should get the stop now.
fn due_stops() -> Vec<u64> {
    let running = lock(&RUNNING);
    running
        .iter()
        .filter(|e| e.control.check().is_err())
        .filter(|e| match e.last_sent {
            None => true,
            Some(sent) => sent.elapsed() >= RESEND,
        })
        .map(|e| e.token)
        .collect()
}

/// Raises the stop exception in the threads of `due` that still run for their stopped
/// execution. Called with the GIL, so no thread can register or unregister meanwhile.
fn send_stops(py: Python<'_>, due: &[u64]) {
    let exception = py.get_type::<forcestopped>();
    let mut running = lock(&RUNNING);
    for entry in running.iter_mut().filter(|e| due.contains(&e.token)) {
        // SAFETY: the GIL is held; the thread id belongs to a thread that registered under the
        // GIL and has not unregistered (that too needs the GIL), so it has a live thread state.
        unsafe {
            ffi::PyThreadState_SetAsyncExc(entry.ident as _, exception.as_ptr());
        }
        entry.last_sent = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gears_core::control::ControlScope;

    #[test]
    fn a_stop_still_pending_when_the_thread_unregisters_is_dropped() {
        crate::tests::frontend();
        let control = ExecutionControl::unlimited();
        let _scope = ControlScope::enter(&control);
        Python::attach(|py| {
            control.stop("stopped");
            {
                let running = Running::enter(py).expect("registered");
                // What the watchdog does; the GIL is held, so it is delivered later.
                send_stops(py, &[running.token]);
                let raised = py.eval(c"sum(range(10))", None, None).expect_err("stopped");
                assert!(raised.is_instance_of::<forcestopped>(py));
                // Sent again, and still pending when the code it was meant for returns.
                send_stops(py, &[running.token]);
            }
            let after = py.eval(c"sum(range(10))", None, None);
            assert_eq!(after.and_then(|v| v.extract::<i64>()).ok(), Some(45));
        });
    }
}
