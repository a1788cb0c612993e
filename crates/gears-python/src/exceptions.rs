//! The exception types Gears gives scripts. Both are shared by every session, so both are made
//! immutable: no script can patch `__str__`, `__init__` or anything else of them for the others.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyType;

mod types {
    #![allow(non_camel_case_types)]
    // Named `gears.error`, as in RedisGears: tracebacks read `gears.error: <message>`.
    pyo3::create_exception!(gears, error, pyo3::exceptions::PyException);
    // Raised asynchronously in Python code whose execution was stopped (aborted, a limit
    // passed). A `BaseException`, so that `except Exception:` does not swallow it.
    pyo3::create_exception!(gears, forcestopped, pyo3::exceptions::PyBaseException);
    // Raised by `flat_error(msg)`: its error text is `msg` exactly, with no traceback.
    pyo3::create_exception!(gears, flat_error, pyo3::exceptions::PyException);
}
pub(crate) use types::{error, flat_error, forcestopped};

/// Creates both types and makes them immutable. Called once, at interpreter start.
pub(crate) fn install(py: Python<'_>) {
    make_immutable(&py.get_type::<error>());
    make_immutable(&py.get_type::<forcestopped>());
    make_immutable(&py.get_type::<flat_error>());
    // pyo3's type for a Rust panic: created now rather than in the middle of one.
    let _ = py.get_type::<pyo3::panic::PanicException>();
}

/// Sets `Py_TPFLAGS_IMMUTABLETYPE` on a heap type: setting or deleting its attributes then
/// raises `TypeError: cannot set '...' attribute of immutable type`.
pub(crate) fn make_immutable(ty: &Bound<'_, PyType>) {
    let raw = ty.as_type_ptr();
    // SAFETY: `raw` is a live type object (we hold a reference and the GIL); adding a flag and
    // invalidating the type's attribute cache is what CPython does for its own static types.
    unsafe {
        (*raw).tp_flags |= ffi::Py_TPFLAGS_IMMUTABLETYPE;
        ffi::PyType_Modified(raw);
    }
}
