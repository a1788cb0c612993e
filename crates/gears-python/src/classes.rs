//! The iterator behind generator readers, written in Rust. Never handed to scripts; Gears calls
//! its Rust methods directly, so nothing in its type's dict is ever looked up.

use std::sync::Mutex;

use pyo3::prelude::*;
use pyo3::types::PyIterator;

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
