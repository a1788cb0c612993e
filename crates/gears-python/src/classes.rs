//! The API classes written in Rust: `atomic` and the iterator behind generator readers.
//!
//! Being Rust, they have no Python code, globals or frames a script could reach, and their
//! types are immutable, so one class serves every session (the per-session prelude keeps only
//! `GearsBuilder`, whose methods are Python).

use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::{PyIterator, PyTuple};

use crate::api;

/// `with atomic():` runs the block's commands with no other client in between: the worker keeps
/// the Redis lock until the block ends.
#[pyclass(name = "atomic", module = "redisgears", frozen, immutable_type)]
pub(crate) struct Atomic;

#[pymethods]
impl Atomic {
    #[new]
    fn new() -> Self {
        Atomic
    }

    fn __enter__(slf: Bound<'_, Self>) -> PyResult<Bound<'_, Self>> {
        api::begin_atomic_block(slf.py())?;
        Ok(slf)
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, _exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
        api::end_atomic_block()?;
        Ok(false)
    }
}

/// Feeds a generator reader in batches. An exception ends the input, but the records yielded
/// before it are delivered first; the exception is raised on the next batch. Never handed to
/// scripts.
#[pyclass(frozen)]
pub(crate) struct ReaderIterator {
    iterator: Py<PyIterator>,
    error: Mutex<Option<PyErr>>,
}

impl ReaderIterator {
    /// `iter(iterable)`, wrapped.
    pub(crate) fn start<'py>(iterable: &Bound<'py, PyAny>) -> PyResult<Bound<'py, ReaderIterator>> {
        let iterator = iterable.try_iter()?.unbind();
        Bound::new(
            iterable.py(),
            ReaderIterator {
                iterator,
                error: Mutex::new(None),
            },
        )
    }

    /// Up to `count` further items; empty once the iterator is exhausted.
    pub(crate) fn take<'py>(
        &self,
        py: Python<'py>,
        count: usize,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        // The lock is never held while the user's generator runs.
        if let Some(error) = self.pending().take() {
            return Err(error);
        }
        let iterator = self.iterator.bind(py).clone();
        let mut items = Vec::new();
        for item in iterator.take(count) {
            match item {
                Ok(item) => items.push(item),
                Err(error) if items.is_empty() => return Err(error),
                Err(error) => {
                    *self.pending() = Some(error);
                    break;
                }
            }
        }
        Ok(items)
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Option<PyErr>> {
        self.error.lock().unwrap_or_else(|e| e.into_inner())
    }
}
