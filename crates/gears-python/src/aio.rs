//! `async def` callbacks and futures (RedisGears 1.2's async API).
//!
//! A step callback (`map`, `flatmap`, `filter`, `foreach`, `accumulate`, `accumulateby` and the
//! steps made of them) may return a coroutine or a `gearsFuture()`: the record waits for it.
//! Coroutines run on one asyncio loop owned by Gears, on a thread of its own (`aio.py`); each
//! step of a coroutine runs inside the execution the callback ran for (its `execute()` reaches
//! that execution). The step's thread waits, the GIL released, checking every 50 ms whether
//! its execution was stopped. Coroutines returned for one batch of `map`, `flatmap`, `filter`
//! and `foreach` run concurrently. Extractors and batch reducers refuse them. Where the
//! thread holds the Redis lock (a sync run, an atomic block, Redis's main thread), nothing can
//! wait: `Creating async record is not allowed`.

use std::cell::{Cell, RefCell};
use std::ffi::CString;
use std::sync::Arc;

use gears_core::control::ControlScope;
use gears_core::{GearsError, Result};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyCFunction, PyDict, PyTuple};

use crate::api::arguments;
use crate::exceptions::error;
use crate::link::Link;
use crate::watchdog::Running;

const AIO: &str = include_str!("aio.py");

/// `aio.py`'s namespace, made once.
static AIO_NAMESPACE: PyOnceLock<Py<PyDict>> = PyOnceLock::new();

fn aio(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let namespace = AIO_NAMESPACE.get_or_try_init(py, || -> PyResult<Py<PyDict>> {
        let namespace = PyDict::new(py);
        namespace.set_item("__builtins__", crate::isolation::builtins(py)?)?;
        let code = CString::new(AIO).map_err(|e| error::new_err(e.to_string()))?;
        py.run(&code, Some(&namespace), None)?;
        Ok(namespace.unbind())
    })?;
    Ok(namespace.bind(py).clone())
}

fn helper<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    aio(py)?
        .get_item(name)?
        .ok_or_else(|| error::new_err(format!("Gears' asyncio support has no {name}")))
}

/// What a step's callback may do with async records.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum StepKind {
    /// Not inside a step's callback (a top level, `onRegistered`).
    None,
    /// A step whose record may wait (`map`, `filter`, ...).
    Async,
    /// An extractor or a batch reducer: its result is needed at once.
    NoAsync,
}

thread_local! {
    /// The kind of step whose callback this thread runs.
    static STEP: Cell<StepKind> = const { Cell::new(StepKind::None) };
    /// The `gearsFuture()` that callback created, if any.
    static CREATED: RefCell<Option<Py<PyAny>>> = const { RefCell::new(None) };
}

/// Marks this thread as running a step's callback until dropped (restoring the outer one).
pub(crate) struct InStep(StepKind, Option<Py<PyAny>>);

impl InStep {
    pub(crate) fn enter(kind: StepKind) -> Self {
        let outer = STEP.with(|step| step.replace(kind));
        InStep(outer, CREATED.with(|created| created.borrow_mut().take()))
    }

    /// The `gearsFuture()` the callback created, if any.
    pub(crate) fn take_created(&self) -> Option<Py<PyAny>> {
        CREATED.with(|created| created.borrow_mut().take())
    }
}

impl Drop for InStep {
    fn drop(&mut self) {
        let outer = self.0;
        let _ = STEP.try_with(|step| step.set(outer));
        let created = self.1.take();
        let _ = CREATED.try_with(|c| *c.borrow_mut() = created);
    }
}

/// A `gearsFuture()` the callback created and did not return: it can not continue (RedisGears
/// 1.2).
pub(crate) fn discard(py: Python<'_>, future: Py<PyAny>) {
    if let Ok(discarded) = helper(py, "discarded") {
        let _ = discarded.call1((future,));
    }
}

/// True if `value` is something the step must wait for: a coroutine, or a `gearsFuture()`.
pub(crate) fn is_async(value: &Bound<'_, PyAny>) -> bool {
    // SAFETY: a type check of a live object.
    if unsafe { pyo3::ffi::PyCoro_CheckExact(value.as_ptr()) } != 0 {
        return true;
    }
    // Only a `gearsFuture()` is one: Gears makes them, of its own class (compared by address:
    // this runs for every record).
    let Some(class) = FUTURE_CLASS.get(value.py()) else {
        return false;
    };
    // SAFETY: reading the type of a live object.
    unsafe { pyo3::ffi::Py_TYPE(value.as_ptr()) == class.as_ptr().cast() }
}

/// `GearsFuture`, once a `gearsFuture()` was made.
static FUTURE_CLASS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// True if this thread may wait for a coroutine of `link`'s session.
fn may_wait(link: &Link) -> bool {
    !crate::interpreter::on_main_thread() && link.host().is_ok_and(|host| host.may_wait())
}

/// The error of an async record where none may be made.
pub(crate) const NOT_ALLOWED: &str = "Creating async record is not allowed";

/// Starts waiting for what a step's callback returned (`is_async`): a concurrent future of its
/// result. A coroutine runs on Gears' loop inside the current execution.
pub(crate) fn start(link: &Arc<Link>, value: Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    let py = value.py();
    // SAFETY: a type check of a live object.
    let coroutine = unsafe { pyo3::ffi::PyCoro_CheckExact(value.as_ptr()) } != 0;
    if !may_wait(link) {
        if coroutine {
            let _ = value.call_method0("close");
        } else {
            let _ = helper(py, "discarded")?.call1((&value,));
        }
        // A sync run that has not written starts again in the background, where it may wait
        // (as RedisGears moved it there); this run stops.
        if coroutine {
            match link.host().map(|host| host.move_to_background()) {
                Ok(Ok(())) => return Err(error::new_err("the sync run moved to the background")),
                Ok(Err(Some(reason))) => {
                    return Err(error::new_err(format!("{NOT_ALLOWED}: {reason}")))
                }
                _ => {}
            }
        }
        return Err(error::new_err(NOT_ALLOWED));
    }
    if !coroutine {
        return Ok(helper(py, "returned")?.call1((value,))?.unbind());
    }
    let step = step_function(py, link)?;
    Ok(helper(py, "submit")?.call1((value, step))?.unbind())
}

/// A function that runs one step of a coroutine of `link`'s session, on Gears' loop, inside the
/// execution that started it: its commands reach that execution, its limits stop it (the
/// watchdog interrupts the step), and a step that suspends inside an atomic block gets `await
/// is not allow inside atomic block` thrown into it at once (the block ends before the loop
/// runs anything else). Called as `step(it, thrown, value)`.
fn step_function<'py>(py: Python<'py>, link: &Arc<Link>) -> PyResult<Bound<'py, PyCFunction>> {
    let captured = link.host().ok().and_then(|host| host.capture());
    let control = gears_core::control::current();
    let link = link.clone();
    PyCFunction::new_closure(py, None, None, move |args, _| -> PyResult<Py<PyAny>> {
        let py = args.py();
        let it = args.get_item(0)?;
        let thrown = args.get_item(1)?;
        let value = args.get_item(2)?;
        let _host = match (&captured, link.host()) {
            (Some(captured), Ok(host)) => host.enter_captured(captured),
            _ => None,
        };
        let _control = control.as_ref().map(ControlScope::enter);
        let _entered = link.entered();
        let running = Running::enter(py);
        let mut outcome = if thrown.is_none() {
            it.call_method1("send", (value,))
        } else {
            it.call_method1("throw", (thrown,))
        };
        while outcome.is_ok() && link.is_atomic() {
            let error = error::new_err("await is not allow inside atomic block").into_value(py);
            outcome = it.call_method1("throw", (error,));
        }
        // A block the coroutine left open (it raised inside it) ends with the step.
        link.end_atomic();
        drop(running);
        outcome.map(Bound::unbind)
    })
}

/// Waits (the GIL released) for a concurrent future started by [`start`]; its result, or the
/// coroutine's exception as `str(e)` (RedisGears 1.2's text). Checks every 50 ms whether the
/// execution was stopped (then the coroutine is cancelled).
pub(crate) fn wait(py: Python<'_>, future: &Py<PyAny>) -> Result<Py<PyAny>> {
    let future = future.bind(py);
    loop {
        match future.call_method1("result", (0.05,)) {
            Ok(value) => return Ok(value.unbind()),
            Err(e) if e.is_instance_of::<pyo3::exceptions::PyTimeoutError>(py) => {
                if let Err(stopped) = gears_core::control::check_current() {
                    let _ = future.call_method0("cancel");
                    return Err(stopped);
                }
            }
            Err(e) => {
                let value = e.value(py);
                let mut text = value.str().map(|s| s.to_string()).unwrap_or_default();
                if text.is_empty() {
                    // `GeneratorExit()` and the like: at least the exception's type.
                    text = value
                        .get_type()
                        .name()
                        .map(|n| n.to_string())
                        .unwrap_or_default();
                }
                return Err(crate::session::stopped_or(|| GearsError::Callback(text)));
            }
        }
    }
}

/// A new asyncio future of Gears' loop.
pub(crate) fn new_future(py: Python<'_>) -> PyResult<Py<PyAny>> {
    Ok(helper(py, "new_future")?.call0()?.unbind())
}

/// Resolves (from any thread) the future of a `run()` started inside an execution: with
/// `[results, errors]`, as RedisGears 1.2 did, or with the error that kept it from running.
pub(crate) fn resolve_with_outcome(
    py: Python<'_>,
    future: Py<PyAny>,
    outcome: std::result::Result<gears_core::ExecutionOutcome, String>,
) {
    let resolved = match outcome {
        Ok(outcome) => (|| -> PyResult<()> {
            let results = pyo3::types::PyList::empty(py);
            for record in &outcome.results {
                results.append(
                    crate::convert::to_py(py, record).map_err(|e| error::new_err(e.to_string()))?,
                )?;
            }
            let errors = pyo3::types::PyList::new(py, &outcome.errors)?;
            let value = pyo3::types::PyList::new(py, [results.into_any(), errors.into_any()])?;
            helper(py, "set_result")?.call1((future.bind(py), value))?;
            Ok(())
        })(),
        Err(reason) => helper(py, "set_exception")
            .and_then(|set| set.call1((future.bind(py), error::new_err(reason).into_value(py))))
            .map(|_| ()),
    };
    if let Err(e) = resolved {
        crate::output::log_warning(&format!("a run()'s future could not be resolved: {e}"));
    }
}

type Body = fn(&Arc<Link>, &Bound<'_, PyTuple>, Option<&Bound<'_, PyDict>>) -> PyResult<Py<PyAny>>;

/// The async API functions of a session.
pub(crate) const FUNCTIONS: [(&std::ffi::CStr, Body); 6] = [
    (c"gearsFuture", gears_future),
    (c"createFuture", create_future),
    (c"setFutureResults", set_future_results),
    (c"setFutureException", set_future_exception),
    (c"runCoroutine", run_coroutine),
    (c"isAsyncAllow", is_async_allow),
];

/// `gearsFuture()`: a future the step's callback returns; its record waits for
/// `continueRun(value)` / `continueFailed(error)`.
fn gears_future(
    link: &Arc<Link>,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<Py<PyAny>> {
    let py = args.py();
    if !args.is_empty() || kwargs.is_some_and(|k| !k.is_empty()) {
        return Err(error::new_err("Future gets no arguments"));
    }
    let kind = STEP.with(Cell::get);
    let created = CREATED.with(|c| c.borrow().is_some());
    match kind {
        StepKind::None => {
            return Err(error::new_err(
                "Future object can only be created inside certain execution steps",
            ))
        }
        StepKind::NoAsync => return Err(error::new_err("Step does not support async")),
        StepKind::Async => {}
    }
    if created {
        return Err(error::new_err(
            "Can not create async record twice on the same step",
        ));
    }
    if !may_wait(link) {
        return Err(error::new_err(NOT_ALLOWED));
    }
    let class = helper(py, "GearsFuture")?;
    let _ = FUTURE_CLASS.set(py, class.clone().unbind());
    let future = class.call1((py.get_type::<error>(),))?.unbind();
    CREATED.with(|c| *c.borrow_mut() = Some(future.clone_ref(py)));
    Ok(future)
}

/// `createFuture()`: an asyncio future of Gears' loop, to await in a coroutine.
fn create_future(
    _link: &Arc<Link>,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<Py<PyAny>> {
    arguments::<0>("createFuture", [], 0, args, kwargs)?;
    Ok(helper(args.py(), "new_future")?.call0()?.unbind())
}

/// `setFutureResults(f, res)`: sets an asyncio future's result (from any thread).
fn set_future_results(
    _link: &Arc<Link>,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<Py<PyAny>> {
    let [future, result] = arguments("setFutureResults", ["f", "res"], 2, args, kwargs)?;
    helper(args.py(), "set_result")?.call1((future, result))?;
    Ok(args.py().None())
}

/// `setFutureException(f, e)`: sets an asyncio future's exception (a value that is not one
/// becomes `Exception(str(value))`).
fn set_future_exception(
    _link: &Arc<Link>,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<Py<PyAny>> {
    let [future, exception] = arguments("setFutureException", ["f", "e"], 2, args, kwargs)?;
    helper(args.py(), "set_exception")?.call1((future, exception))?;
    Ok(args.py().None())
}

/// `runCoroutine(cr, f=None, delay=0)`: runs a coroutine on Gears' loop after `delay` seconds,
/// inside the current execution; its result goes to the `gearsFuture` `f`, if given.
fn run_coroutine(
    link: &Arc<Link>,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<Py<PyAny>> {
    let py = args.py();
    let [coroutine, future, delay] =
        arguments("runCoroutine", ["cr", "f", "delay"], 1, args, kwargs)?;
    let coroutine = coroutine.expect("required");
    let delay = delay.map_or(Ok(0.0), |d| d.extract::<f64>())?;
    let future = future.unwrap_or_else(|| py.None().into_bound(py));
    let step = step_function(py, link)?;
    helper(py, "run_later")?.call1((coroutine, delay, step, future))?;
    Ok(py.None())
}

/// `isAsyncAllow()`: True inside a step's callback whose record may wait.
fn is_async_allow(
    link: &Arc<Link>,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<Py<PyAny>> {
    arguments::<0>("isAsyncAllow", [], 0, args, kwargs)?;
    let allowed = STEP.with(Cell::get) == StepKind::Async && may_wait(link);
    Ok(pyo3::types::PyBool::new(args.py(), allowed)
        .to_owned()
        .into_any()
        .unbind())
}
