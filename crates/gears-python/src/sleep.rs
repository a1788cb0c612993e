//! `time.sleep`, replaced at start-up.
//!
//! On a thread that works for no execution it is the original. For an execution it:
//! - refuses to sleep inside an atomic block, which holds the Redis lock (`gears.error`);
//! - otherwise sleeps with the GIL released, in slices of at most [`SLICE`], and raises
//!   `gears.forcestopped` as soon as the execution is stopped, so a sleeping callback is
//!   stopped as promptly as a busy one.

use std::time::{Duration, Instant};

use gears_core::control;
use pyo3::exceptions::{PyOverflowError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyFloat;
use pyo3::{ffi, wrap_pyfunction};

use crate::exceptions::{error, forcestopped};

/// The longest the GIL-free sleep goes without checking the execution's control.
pub(crate) const SLICE: Duration = Duration::from_millis(10);

pub(crate) const IN_ATOMIC: &str =
    "sleep is not allowed inside an atomic block (it would hold the Redis lock)";

static ORIGINAL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Replaces `time.sleep`. Called once, at interpreter start, before any script runs.
pub(crate) fn install(py: Python<'_>) -> PyResult<()> {
    let time = py.import("time")?;
    let original = time.getattr("sleep")?;
    let _ = ORIGINAL.set(py, original.unbind());
    let replacement = wrap_pyfunction!(sleep, py)?;
    replacement.setattr("__module__", "time")?;
    time.setattr("sleep", replacement)
}

/// `time.sleep(secs)`.
#[pyfunction(signature = (secs, /))]
fn sleep(py: Python<'_>, secs: &Bound<'_, PyAny>) -> PyResult<()> {
    let Some(control) = control::current() else {
        return match ORIGINAL.get(py) {
            Some(original) => original.bind(py).call1((secs,)).map(|_| ()),
            None => Err(error::new_err("time.sleep is not available")),
        };
    };
    let length = sleep_length(secs)?;
    if control.in_atomic() {
        return Err(error::new_err(IN_ATOMIC));
    }
    let deadline = Instant::now() + length;
    loop {
        if let Err(stopped) = control.check() {
            return Err(forcestopped::new_err(stopped.to_string()));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let slice = left.min(SLICE);
        py.detach(|| std::thread::sleep(slice));
    }
    if length.is_zero() {
        // sleep(0) lets other threads run, as the original does.
        py.detach(std::thread::yield_now);
    }
    Ok(())
}

/// The argument checks of the original, in its order and with its messages: a float (not NaN)
/// or an integer (anything with `__index__`) that fits in CPython's nanosecond clock type, then
/// not negative.
fn sleep_length(secs: &Bound<'_, PyAny>) -> PyResult<Duration> {
    const NANOS: i64 = 1_000_000_000;
    let nanos: i64 = match secs.cast::<PyFloat>() {
        Ok(f) => {
            let value = f.value();
            if value.is_nan() {
                return Err(PyValueError::new_err("Invalid value NaN (not a number)"));
            }
            // Rounded away from zero, as CPython rounds timeouts.
            let nanos = value * NANOS as f64;
            let nanos = if nanos >= 0.0 {
                nanos.ceil()
            } else {
                nanos.floor()
            };
            if !(nanos >= i64::MIN as f64 && nanos < i64::MAX as f64) {
                return Err(PyOverflowError::new_err(
                    "timestamp out of range for platform time_t",
                ));
            }
            nanos as i64
        }
        Err(_) => {
            // SAFETY: PyNumber_Index returns a new reference or NULL with an exception set.
            let index = unsafe {
                Bound::from_owned_ptr_or_err(secs.py(), ffi::PyNumber_Index(secs.as_ptr()))?
            };
            index
                .extract::<i64>()
                .ok()
                .and_then(|seconds| seconds.checked_mul(NANOS))
                .ok_or_else(|| {
                    PyOverflowError::new_err("timestamp too large to convert to C _PyTime_t")
                })?
        }
    };
    if nanos < 0 {
        return Err(PyValueError::new_err("sleep length must be non-negative"));
    }
    Ok(Duration::from_nanos(nanos as u64))
}
