//! `redisgears`, as `import redisgears` gives it to a script: a read-only object made for each
//! session, whose attributes are the session's own API objects, held in Rust.
//!
//! Attribute access goes through the type's `tp_getattro`/`tp_setattro` slots straight to Rust:
//! no dict is consulted (not the type's, which a script could reach through `gc`), and the
//! object has no `__dict__` of its own (`__dict__` answers a fresh copy, so `vars(redisgears)`
//! and `from redisgears import *` work, and writing into it changes nothing). The references it
//! holds are not traversed, so `gc.get_referrers(execute)` does not find it either.

use pyo3::exceptions::PyAttributeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

/// The message of an attempt to change the module.
pub(crate) const READ_ONLY: &str = "the Gears API module can not be modified";

/// The names `redisgears` has, taken from the session's API namespace.
pub(crate) const MODULE_NAMES: [&str; 8] = [
    "executeCommand",
    "log",
    "configGet",
    "gearsConfigGet",
    "hashtag",
    "atomic",
    "GearsError",
    "forcestopped",
];

#[pyclass(name = "APIModule", module = "gears", frozen, immutable_type)]
pub(crate) struct ApiModule {
    entries: Vec<(&'static str, Py<PyAny>)>,
}

impl ApiModule {
    pub(crate) fn new<'py>(
        py: Python<'py>,
        entries: Vec<(&'static str, Py<PyAny>)>,
    ) -> PyResult<Bound<'py, ApiModule>> {
        Bound::new(py, ApiModule { entries })
    }

    fn dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        dict.set_item("__name__", "redisgears")?;
        for (name, value) in &self.entries {
            dict.set_item(name, value.bind(py))?;
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
        if let Some((_, value)) = this.entries.iter().find(|(n, _)| *n == name) {
            return Ok(value.clone_ref(py));
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

    fn __repr__(&self) -> &'static str {
        "<module 'redisgears' (Gears)>"
    }
}
