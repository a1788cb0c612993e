//! Conversions between core records and Python objects.

use gears_core::{GearsError, Language, NativeValue, Record, Result};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyFrozenSet, PyInt, PyList, PySet, PyString,
    PyTuple,
};

/// A Python object carried through the pipeline as a native record.
pub(crate) struct PyValue(pub Py<PyAny>);

/// Wraps a Python object as a native record.
pub(crate) fn native(obj: Bound<'_, PyAny>) -> Record {
    Record::Native(NativeValue::new(Language::Python, PyValue(obj.unbind())))
}

/// A record as a Python object: natives as they are, core records converted.
pub(crate) fn to_py<'py>(py: Python<'py>, record: &Record) -> Result<Bound<'py, PyAny>> {
    to_py_inner(py, record, 0)
        .map_err(|e| crate::session::stopped_or(|| GearsError::Internal(e.to_string())))
}

/// How deeply values may nest when they cross between Python and Rust. Deeper values are an
/// error for their record, not a stack overflow of the worker.
const MAX_DEPTH: usize = 512;

fn too_deep() -> PyErr {
    pyo3::exceptions::PyRecursionError::new_err(format!(
        "value nested deeper than {MAX_DEPTH} levels"
    ))
}

/// pyo3's constructors panic when CPython can not allocate; Gears' memory limits make CPython
/// refuse allocations, so the conversions of records use these, which return the
/// `MemoryError` instead.
pub(crate) mod alloc {
    use pyo3::ffi;
    use pyo3::prelude::*;
    use pyo3::types::{PyDict, PyList};

    fn owned<'py>(py: Python<'py>, ptr: *mut ffi::PyObject) -> PyResult<Bound<'py, PyAny>> {
        // SAFETY: `ptr` is a new reference or null with a Python error set.
        unsafe { Bound::from_owned_ptr_or_err(py, ptr) }
    }

    pub fn str<'py>(py: Python<'py>, s: &str) -> PyResult<Bound<'py, PyAny>> {
        // SAFETY: a valid UTF-8 buffer of this length.
        owned(py, unsafe {
            ffi::PyUnicode_FromStringAndSize(s.as_ptr().cast(), s.len() as ffi::Py_ssize_t)
        })
    }

    pub fn bytes<'py>(py: Python<'py>, b: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        // SAFETY: a valid buffer of this length.
        owned(py, unsafe {
            ffi::PyBytes_FromStringAndSize(b.as_ptr().cast(), b.len() as ffi::Py_ssize_t)
        })
    }

    pub fn int(py: Python<'_>, i: i64) -> PyResult<Bound<'_, PyAny>> {
        // SAFETY: a plain constructor.
        owned(py, unsafe { ffi::PyLong_FromLongLong(i) })
    }

    pub fn float(py: Python<'_>, f: f64) -> PyResult<Bound<'_, PyAny>> {
        // SAFETY: a plain constructor.
        owned(py, unsafe { ffi::PyFloat_FromDouble(f) })
    }

    pub fn list(py: Python<'_>) -> PyResult<Bound<'_, PyList>> {
        // SAFETY: a new empty list is a list.
        owned(py, unsafe { ffi::PyList_New(0) }).map(|o| unsafe { o.cast_into_unchecked() })
    }

    pub fn dict(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
        // SAFETY: a new empty dict is a dict.
        owned(py, unsafe { ffi::PyDict_New() }).map(|o| unsafe { o.cast_into_unchecked() })
    }
}

fn to_py_inner<'py>(py: Python<'py>, record: &Record, depth: usize) -> PyResult<Bound<'py, PyAny>> {
    if depth > MAX_DEPTH {
        return Err(too_deep());
    }
    let depth = depth + 1;
    Ok(match record {
        Record::Nil => py.None().into_bound(py),
        Record::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Record::Integer(i) => alloc::int(py, *i)?,
        Record::Float(f) => alloc::float(py, *f)?,
        Record::String(s) => alloc::str(py, s)?,
        Record::Error(s) => alloc::str(py, s)?,
        Record::Bytes(b) => alloc::bytes(py, b)?,
        Record::List(items) => {
            let list = alloc::list(py)?;
            for item in items {
                list.append(to_py_inner(py, item, depth)?)?;
            }
            list.into_any()
        }
        Record::Map(entries) => {
            let dict = alloc::dict(py)?;
            for (k, v) in entries {
                dict.set_item(to_py_inner(py, k, depth)?, to_py_inner(py, v, depth)?)?;
            }
            dict.into_any()
        }
        Record::Key(key) => {
            // The field order of KeyRecord::to_map, without copying the record first.
            let dict = alloc::dict(py)?;
            match &key.event {
                Some(event) => dict.set_item(intern!(py, "event"), alloc::str(py, event)?)?,
                None => dict.set_item(intern!(py, "event"), py.None())?,
            }
            match key.key_str() {
                Some(text) => dict.set_item(intern!(py, "key"), alloc::str(py, text)?)?,
                None => dict.set_item(intern!(py, "key"), alloc::bytes(py, &key.key)?)?,
            }
            if let Some(value) = &key.value {
                dict.set_item(intern!(py, "type"), alloc::str(py, &key.key_type)?)?;
                dict.set_item(intern!(py, "value"), to_py_inner(py, value, depth)?)?;
            }
            dict.into_any()
        }
        Record::Native(value) => match value.downcast_ref::<PyValue>() {
            Some(obj) => obj.0.bind(py).clone(),
            None => {
                return Err(pyo3::exceptions::PyTypeError::new_err(format!(
                    "a {} value can not be passed to Python",
                    value.language().name()
                )))
            }
        },
    })
}

/// A Python object as a core record (deep).
pub(crate) fn to_core(obj: &Bound<'_, PyAny>) -> Result<Record> {
    to_core_inner(obj, 0).map_err(|e| GearsError::Callback(e.to_string()))
}

fn to_core_inner(obj: &Bound<'_, PyAny>, depth: usize) -> PyResult<Record> {
    if depth > MAX_DEPTH {
        return Err(too_deep());
    }
    let depth = depth + 1;
    if obj.is_none() {
        return Ok(Record::Nil);
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Record::Bool(b.is_true()));
    }
    if obj.is_instance_of::<PyInt>() {
        return Ok(match obj.extract::<i64>() {
            Ok(i) => Record::Integer(i),
            Err(_) => Record::String(obj.str()?.to_string()),
        });
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return Ok(Record::Float(f.value()));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(Record::String(s.to_str()?.to_string()));
    }
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Record::Bytes(b.as_bytes().to_vec()));
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Ok(Record::Bytes(b.to_vec()));
    }
    if let Ok(list) = obj.cast::<PyList>() {
        return list
            .iter()
            .map(|item| to_core_inner(&item, depth))
            .collect::<PyResult<_>>()
            .map(Record::List);
    }
    if let Ok(tuple) = obj.cast::<PyTuple>() {
        return tuple
            .iter()
            .map(|item| to_core_inner(&item, depth))
            .collect::<PyResult<_>>()
            .map(Record::List);
    }
    if let Ok(dict) = obj.cast::<PyDict>() {
        let mut entries = Vec::with_capacity(dict.len());
        for (k, v) in dict.iter() {
            entries.push((to_core_inner(&k, depth)?, to_core_inner(&v, depth)?));
        }
        return Ok(Record::Map(entries));
    }
    if obj.is_instance_of::<PySet>() || obj.is_instance_of::<PyFrozenSet>() {
        let mut items = Vec::new();
        for item in obj.try_iter()? {
            items.push(to_core_inner(&item?, depth)?);
        }
        return Ok(Record::List(items));
    }
    // Anything else (numpy scalars, user objects ...) is carried as its str().
    Ok(Record::String(obj.str()?.to_string()))
}
