//! `redisgears`, as `import redisgears` gives it to a script: a read-only object made for each
//! session, whose attributes are the session's own API objects, held in Rust.
//!
//! Attribute access goes through the type's `tp_getattro`/`tp_setattro` slots straight to Rust:
//! no dict is consulted (not the type's, which a script could reach through `gc`), and the
//! object has no `__dict__` of its own (`__dict__` answers a fresh copy, so `vars(redisgears)`
//! and `from redisgears import *` work, and writing into it changes nothing). `gc` sees the
//! references it holds (so cycles through it are collected), but can not change them.

use std::sync::{Mutex, MutexGuard, TryLockError};

use pyo3::exceptions::PyAttributeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use pyo3::{PyTraverseError, PyVisit};

/// The message of an attempt to change the module.
pub(crate) const READ_ONLY: &str = "the Gears API module can not be modified";

/// The names `redisgears` has, taken from the session's API namespace.
pub(crate) const MODULE_NAMES: [&str; 13] = [
    "executeCommand",
    "log",
    "configGet",
    "gearsConfigGet",
    "hashtag",
    "atomic",
    "GearsError",
    "forcestopped",
    "call_next",
    "override_reply",
    "get_command",
    "flat_error",
    "registerTimeEvent",
];

type Entries = Vec<(&'static str, Py<PyAny>)>;

#[pyclass(name = "APIModule", module = "gears", frozen, immutable_type)]
pub(crate) struct ApiModule {
    /// Emptied only by the cyclic GC (`__clear__`). The lock is never held while Python
    /// allocates (which could start the GC, whose `__traverse__` would then wait for it).
    entries: Mutex<Entries>,
}

impl ApiModule {
    pub(crate) fn new(py: Python<'_>, entries: Entries) -> PyResult<Bound<'_, ApiModule>> {
        Bound::new(
            py,
            ApiModule {
                entries: Mutex::new(entries),
            },
        )
    }

    fn entries(&self) -> MutexGuard<'_, Entries> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lookup(&self, py: Python<'_>, name: &str) -> Option<Py<PyAny>> {
        let entries = self.entries();
        let found = entries.iter().find(|(n, _)| *n == name);
        found.map(|(_, value)| value.clone_ref(py))
    }

    fn dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let entries: Entries = {
            let entries = self.entries();
            let copy = entries.iter().map(|(n, v)| (*n, v.clone_ref(py)));
            copy.collect()
        };
        let dict = PyDict::new(py);
        dict.set_item("__name__", "redisgears")?;
        for (name, value) in entries {
            dict.set_item(name, value)?;
        }
        Ok(dict)
    }
}

#[pymethods]
impl ApiModule {
    fn __getattribute__(slf: &Bound<'_, Self>, name: &Bound<'_, PyString>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let this = slf.get();
        let name = name.to_str()?;
        if let Some(value) = this.lookup(py, name) {
            return Ok(value);
        }
        match name {
            "__name__" => Ok(PyString::new(py, "redisgears").into_any().unbind()),
            "__dict__" => Ok(this.dict(py)?.into_any().unbind()),
            "__class__" => Ok(slf.get_type().into_any().unbind()),
            "__doc__" => Ok(
                PyString::new(py, "The Gears API of this script (read-only).")
                    .into_any()
                    .unbind(),
            ),
            // pyo3 then calls `__getattr__`.
            _ => Err(PyAttributeError::new_err(())),
        }
    }

    fn __getattr__(&self, name: &Bound<'_, PyString>) -> PyResult<Py<PyAny>> {
        Err(PyAttributeError::new_err(format!(
            "module 'redisgears' has no attribute '{name}'"
        )))
    }

    fn __setattr__(&self, _name: &Bound<'_, PyAny>, _value: &Bound<'_, PyAny>) -> PyResult<()> {
        Err(PyAttributeError::new_err(READ_ONLY))
    }

    fn __delattr__(&self, _name: &Bound<'_, PyAny>) -> PyResult<()> {
        Err(PyAttributeError::new_err(READ_ONLY))
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        // Held only by Rust code that does not allocate Python objects, so never by the thread
        // running the GC; if another thread holds it, those references are not reported (the
        // GC then keeps the objects, which is safe).
        let entries = match self.entries.try_lock() {
            Ok(entries) => entries,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return Ok(()),
        };
        for (_, value) in entries.iter() {
            visit.call(value)?;
        }
        Ok(())
    }

    fn __clear__(&self) {
        let taken = std::mem::take(&mut *self.entries());
        // Dropped after the lock is released: finalisers may run.
        drop(taken);
    }

    fn __repr__(&self) -> &'static str {
        "<module 'redisgears' (Gears)>"
    }
}
