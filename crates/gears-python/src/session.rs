//! The Python frontend and its sessions.

use std::mem::ManuallyDrop;
use std::sync::Arc;

use gears_core::control;
use gears_core::{
    CallbackId, Compiled, Frontend, GearsError, GroupKey, Language, Record, RedisAccess, Result,
    Runtime, Session, ValueId,
};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString};

use crate::aio::{self, InStep, StepKind};
use crate::api::format_error;
use crate::classes::ReaderIterator;
use crate::convert::{native, to_core, to_py};
use crate::isolation::Namespaces;
use crate::link::Link;
use crate::profile::{profiled, Profile};
use crate::watchdog::{self, Running};

/// Compiles Python scripts. The interpreter must have been started with
/// [`crate::start_interpreter`].
#[derive(Default)]
pub struct PythonFrontend;

impl PythonFrontend {
    pub fn new() -> Self {
        PythonFrontend
    }
}

impl Frontend for PythonFrontend {
    fn language(&self) -> Language {
        Language::Python
    }

    fn compile(&self, script: &str, redis: Arc<dyn RedisAccess>) -> Result<Compiled> {
        if !crate::interpreter::is_started() {
            return Err(GearsError::Internal("Python is not started".into()));
        }
        let script = std::ffi::CString::new(script)
            .map_err(|_| GearsError::Script("script contains a NUL byte".into()))?;
        let link = Link::new(redis);
        Python::attach(|py| {
            // The script's top level can be stopped (and its allocations refused) like a
            // callback.
            let _running = Running::enter(py);
            let namespaces = match Namespaces::new(py, &link) {
                Ok(namespaces) => namespaces,
                Err(e) => {
                    link.end();
                    return Err(stopped_or(|| GearsError::Internal(e.to_string())));
                }
            };
            let (outcome, state) =
                link.compiling(|| py.run(&script, Some(namespaces.globals.bind(py)), None));
            // An atomic block the top level left open ends with it.
            link.end_atomic();
            let session = PythonSession {
                state: ManuallyDrop::new(SessionState {
                    namespaces: Some(namespaces),
                    callbacks: state.callbacks,
                    values: state.values,
                }),
                link,
                owns_link: true,
                profile: Profile::new(),
            };
            // On failure the session is dropped here, so what the script built is freed now.
            outcome.map_err(|e| stopped_or(|| GearsError::Script(format_error(py, &e))))?;
            Ok(Compiled {
                session: Arc::new(session),
                plans: state.plans,
                registrations: state.registrations,
            })
        })
    }
}

/// The error of a failed Python call: the execution's stop if it was stopped meanwhile, whatever
/// the Python exception says (`gears.forcestopped`, a `MemoryError` after a refused allocation,
/// ...), so the user sees the stop's message exactly once; else `otherwise`.
pub(crate) fn stopped_or(otherwise: impl FnOnce() -> GearsError) -> GearsError {
    match control::current().map(|control| control.check()) {
        Some(Err(stopped)) => stopped,
        _ => otherwise(),
    }
}

/// One script's Python objects.
struct SessionState {
    /// The script's globals; none for a part of a session ([`PythonSession::part_of`]).
    namespaces: Option<Namespaces>,
    callbacks: Vec<Py<PyAny>>,
    values: Vec<Py<PyAny>>,
}

impl SessionState {
    /// Frees everything the script holds, now (with the GIL).
    fn free(self, py: Python<'_>) {
        if let Some(namespaces) = &self.namespaces {
            namespaces.clear(py);
        }
        drop(self);
    }
}

/// One script's globals, API namespace, callbacks and values.
pub struct PythonSession {
    /// Taken (and freed under the GIL) only in `Drop`.
    state: ManuallyDrop<SessionState>,
    /// What the script's API functions are bound to; ended with the session that owns it.
    link: Arc<Link>,
    /// False for a part of a session: the link is its session's.
    owns_link: bool,
    /// What its callbacks' profiling recorded (`RG.PYPROFILE`); a finished execution may keep it.
    profile: Arc<Profile>,
}

impl PythonSession {
    fn state(&self) -> &SessionState {
        &self.state
    }

    /// The callbacks of a plan built by `run()` inside a running execution, with the session's
    /// link (its functions act as that session's user); dropping it ends nothing else.
    pub(crate) fn part_of(
        link: Arc<Link>,
        callbacks: Vec<Py<PyAny>>,
        values: Vec<Py<PyAny>>,
    ) -> PythonSession {
        PythonSession {
            state: ManuallyDrop::new(SessionState {
                namespaces: None,
                callbacks,
                values,
            }),
            link,
            owns_link: false,
            profile: Profile::new(),
        }
    }
}

impl Drop for PythonSession {
    /// Clears the session's dicts and drops its objects under the GIL, so a finished session's
    /// objects are freed at once by reference counting, not whenever the cyclic GC runs.
    fn drop(&mut self) {
        // From now on the script's functions fail, whoever holds them (a finaliser, a thread).
        // The host is dropped here, on this thread, never by a Python object.
        let _host = if self.owns_link {
            self.link.end()
        } else {
            None
        };
        // SAFETY: `state` is never used again after this.
        let state = unsafe { ManuallyDrop::take(&mut self.state) };
        // SAFETY: plain query of whether this thread holds the GIL.
        let holds_gil = unsafe { pyo3::ffi::PyGILState_Check() } == 1;
        if !holds_gil && crate::interpreter::on_main_thread() {
            // Redis's main thread holds the Redis lock: it must not wait for the GIL (a worker
            // may hold the GIL while it waits for the Redis lock). The watchdog frees it.
            watchdog::defer(Box::new(move |py| state.free(py)));
            return;
        }
        Python::attach(|py| state.free(py));
    }
}

impl Session for PythonSession {
    fn language(&self) -> Language {
        Language::Python
    }

    fn enter(&self, f: &mut dyn FnMut(&mut dyn Runtime)) {
        /// Ends an atomic block the batch left open, also when it unwinds (a Redis lock left
        /// held would freeze the server).
        struct EndAtomic<'a>(&'a Link);
        impl Drop for EndAtomic<'_> {
            fn drop(&mut self) {
                self.0.end_atomic();
            }
        }
        // Dropped after `_end_atomic`, which must still see this thread as the session's.
        let _entered = self.link.entered();
        let _end_atomic = EndAtomic(&self.link);
        Python::attach(|py| {
            let _running = Running::enter(py);
            let mut runtime = PyRuntime { py, session: self };
            f(&mut runtime)
        })
    }

    /// The callback's `repr()` (`<function <lambda> at 0x...>`), as RedisGears 1.2 showed it.
    fn describe(&self, callback: CallbackId) -> String {
        Python::attach(|py| {
            self.state()
                .callbacks
                .get(callback.0 as usize)
                .and_then(|f| f.bind(py).repr().ok())
                .map(|r| r.to_string())
                .unwrap_or_default()
        })
    }

    fn profiler(&self) -> Option<Arc<dyn gears_core::Profiler>> {
        Some(self.profile.clone())
    }
}

struct PyRuntime<'py, 's> {
    py: Python<'py>,
    session: &'s PythonSession,
}

/// What a callback call gave: a value, or something its record waits for.
enum Called {
    Now(Record),
    Waiting(Py<PyAny>),
}

impl PyRuntime<'_, '_> {
    /// Calls a callback as a step of `kind`. A coroutine or `gearsFuture()` it returns starts
    /// (or, where the step may not wait, is refused).
    fn invoke(&self, callback: CallbackId, args: &[&Record], kind: StepKind) -> Result<Called> {
        let py = self.py;
        let function = self
            .session
            .state()
            .callbacks
            .get(callback.0 as usize)
            .ok_or_else(|| GearsError::Internal(format!("unknown callback {}", callback.0)))?;
        let mut py_args = Vec::with_capacity(args.len());
        for arg in args {
            py_args.push(to_py(py, arg)?);
        }
        let args = pyo3::types::PyTuple::new(py, py_args)
            .map_err(|e| GearsError::Internal(e.to_string()))?;
        let step = InStep::enter(kind);
        let result = profiled(py, &self.session.profile, || function.bind(py).call1(args));
        let created_future = step.take_created();
        drop(step);
        // An atomic block the callback left open ends with the callback.
        self.session.link.end_atomic();
        let result = result.map_err(|e| self.callback_error(e))?;
        if let Some(created) = created_future {
            if !created.bind(py).is(&result) {
                // Created, then not returned: it can not continue (RedisGears 1.2).
                aio::discard(py, created);
            }
        }
        if !aio::is_async(&result) {
            return Ok(Called::Now(native(result)));
        }
        if kind == StepKind::NoAsync {
            if let Ok(close) = result.getattr("close") {
                let _ = close.call0();
            }
            return Ok(Called::Waiting(py.None()));
        }
        aio::start(&self.session.link, result)
            .map(Called::Waiting)
            .map_err(|e| self.callback_error(e))
    }

    /// Waits for what a callback returned; the record's value.
    fn finish_waiting(&self, future: &Py<PyAny>) -> Result<Record> {
        aio::wait(self.py, future).map(|value| native(value.into_bound(self.py)))
    }

    /// A failed Python call as a callback error, or as the stop of a stopped execution.
    fn callback_error(&self, err: PyErr) -> GearsError {
        stopped_or(|| {
            if gears_core::progress::errors_unlisted() {
                // Counted, not listed: formatting the traceback would be wasted.
                GearsError::Callback(String::new())
            } else {
                GearsError::Callback(format_error(self.py, &err))
            }
        })
    }

    fn bound(&self, value: &Record) -> Result<Bound<'_, PyAny>> {
        to_py(self.py, value)
    }

    /// A value as a core record. Converting runs `str()` of unknown objects, which can fail
    /// because the execution was stopped.
    fn convert(&self, value: &Record) -> Result<Record> {
        to_core(&self.bound(value)?).map_err(|e| stopped_or(|| e))
    }
}

impl Runtime for PyRuntime<'_, '_> {
    fn call(&mut self, callback: CallbackId, args: &[&Record]) -> Result<Record> {
        match self.invoke(callback, args, StepKind::Async)? {
            Called::Now(value) => Ok(value),
            Called::Waiting(future) => self.finish_waiting(&future),
        }
    }

    fn call_each(&mut self, callback: CallbackId, records: &[Record]) -> Vec<Result<Record>> {
        // Every callback runs first (coroutines start), then the step waits for them all.
        let called: Vec<Result<Called>> = records
            .iter()
            .map(|record| self.invoke(callback, &[record], StepKind::Async))
            .collect();
        called
            .into_iter()
            .map(|called| match called? {
                Called::Now(value) => Ok(value),
                Called::Waiting(future) => self.finish_waiting(&future),
            })
            .collect()
    }

    fn call_now(&mut self, callback: CallbackId, args: &[&Record], what: &str) -> Result<Record> {
        match self.invoke(callback, args, StepKind::NoAsync)? {
            Called::Now(value) => Ok(value),
            Called::Waiting(_) => Err(GearsError::Callback(format!(
                "coroutine are not allow on {what}"
            ))),
        }
    }

    fn to_core(&mut self, value: Record) -> Result<Record> {
        match &value {
            Record::Native(_) => self.convert(&value),
            Record::List(_) | Record::Map(_) | Record::Key(_) if value.contains_native() => {
                self.convert(&value)
            }
            _ => Ok(value),
        }
    }

    fn value(&mut self, id: ValueId) -> Result<Record> {
        let py = self.py;
        let value = self
            .session
            .state()
            .values
            .get(id.0 as usize)
            .ok_or_else(|| GearsError::Internal(format!("unknown value {}", id.0)))?;
        let copy = crate::isolation::deepcopy(py)
            .and_then(|deepcopy| deepcopy.call1((value.bind(py),)))
            .map_err(|e| self.callback_error(e))?;
        Ok(native(copy))
    }

    fn prepare(&mut self, record: Record) -> Result<Record> {
        match record {
            Record::Native(_) => Ok(record),
            core => Ok(native(to_py(self.py, &core)?)),
        }
    }

    fn truthy(&mut self, value: &Record) -> Result<bool> {
        match value {
            Record::Native(_) => self
                .bound(value)?
                .is_truthy()
                .map_err(|e| self.callback_error(e)),
            other => Ok(other.is_truthy()),
        }
    }

    fn expand_list(&mut self, value: Record) -> Result<std::result::Result<Vec<Record>, Record>> {
        let obj = self.bound(&value)?;
        match obj.cast_exact::<PyList>() {
            Ok(list) => Ok(Ok(list.iter().map(native).collect())),
            Err(_) => Ok(Err(value)),
        }
    }

    fn released(&mut self, f: &mut dyn FnMut()) {
        /// Takes the GIL back when dropped, also on unwinding.
        struct Restore(*mut pyo3::ffi::PyThreadState);
        impl Drop for Restore {
            fn drop(&mut self) {
                // SAFETY: the thread state saved below, on this thread.
                unsafe { pyo3::ffi::PyEval_RestoreThread(self.0) };
            }
        }
        // SAFETY: this thread holds the GIL (inside `enter`); it is given back by `Restore`,
        // and `f` does not touch Python.
        let _restore = Restore(unsafe { pyo3::ffi::PyEval_SaveThread() });
        f();
    }

    fn to_str(&mut self, value: &Record) -> Result<String> {
        let obj = self.bound(value)?;
        let s = obj.str().map_err(|e| self.callback_error(e))?;
        Ok(s.to_string())
    }

    fn group_key(&mut self, value: Record) -> Result<GroupKey> {
        let obj = self.bound(&value)?;
        if let Ok(s) = obj.cast::<PyString>() {
            return Ok(GroupKey::Text(s.to_string()));
        }
        if let Ok(b) = obj.cast::<PyBytes>() {
            return Ok(GroupKey::Bytes(b.as_bytes().to_vec()));
        }
        let repr = obj.repr().map_err(|e| self.callback_error(e))?;
        Ok(GroupKey::Text(repr.to_string()))
    }

    fn start_generator(&mut self, callback: CallbackId) -> Result<Record> {
        let result = self.call(callback, &[])?;
        let obj = self.bound(&result)?;
        let reader = ReaderIterator::start(&obj).map_err(|e| self.callback_error(e))?;
        Ok(native(reader.into_any()))
    }

    fn next_from_generator(&mut self, generator: &Record, max: usize) -> Result<Vec<Record>> {
        let reader = self.bound(generator)?;
        let reader = reader
            .cast::<ReaderIterator>()
            .map_err(|e| GearsError::Internal(e.to_string()))?;
        // The generator's steps run the reader function's code: profiled like a callback.
        let items = profiled(self.py, &self.session.profile, || {
            reader.get().take(self.py, max)
        })
        .map_err(|e| self.callback_error(e))?;
        Ok(items.into_iter().map(native).collect())
    }
}
