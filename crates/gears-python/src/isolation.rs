//! Isolation of the Gears API between sessions.
//!
//! Scripts share one interpreter, so anything of the Gears API they share could be patched by
//! one of them to spy on the others (a script that replaced a shared `execute` saw a later
//! script's `SET user:1 password123`), and anything found through `gc` can be written even when
//! it refuses `setattr`. So what every session is made from is held in Rust, where no Python
//! code reaches it, and each session gets its own objects, bound to its own [`Link`]:
//! - the builtins are a list of (name, object) pairs taken at start-up, from which every session
//!   gets a fresh `__builtins__` dict (only objects that cannot be changed: built-in functions,
//!   built-in types and constants; the site module's interactive helpers are left out); its
//!   `__import__` is the session's own, which answers `import redisgears` with the session's
//!   module;
//! - the API functions (`execute`, `log`, ...) are made for the session, bound to its link
//!   (`api`); `GearsBuilder`, `GB` and `atomic` come from running the prelude, compiled once at
//!   start-up (a code object, immutable), into the session's own namespace;
//! - `redisgears` is a read-only object made for the session whose attributes are held in Rust
//!   (`module`);
//! - `gears.error` and `gears.forcestopped` are immutable types shared by every session.
//!
//! What this cannot do (CPython is no sandbox) is documented in docs/api-python.md.

use std::sync::Arc;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyCFunction, PyDict, PyEllipsis, PyInt, PyNone, PyNotImplemented, PyString, PyTuple,
    PyType,
};

use crate::api;
use crate::exceptions::{error, flat_error, forcestopped};
use crate::link::Link;
use crate::module::{ApiModule, MODULE_NAMES};

const PRELUDE: &str = include_str!("prelude.py");

/// The names a script's globals start with, taken from its API namespace.
const SCRIPT_NAMES: [&str; 21] = [
    "GearsBuilder",
    "GB",
    "execute",
    "log",
    "configGet",
    "gearsConfigGet",
    "hashtag",
    "atomic",
    "GearsError",
    "call_next",
    "override_reply",
    "get_command",
    "flat_error",
    "gearsFuture",
    "createFuture",
    "setFutureResults",
    "setFutureException",
    "runCoroutine",
    "isAsyncAllow",
    "registerTE",
    "native",
];

/// What every session is made from. Built once, at interpreter start; held only by Rust.
struct Shared {
    /// The builtins that every session starts with, as they were at start-up.
    builtins: Vec<(Py<PyString>, Py<PyAny>)>,
    /// The prelude, compiled.
    prelude: Py<PyAny>,
    /// The original `builtins.__import__`.
    import: Py<PyAny>,
    /// `copy.deepcopy` and `traceback.format_exception`, as they were at start-up.
    deepcopy: Py<PyAny>,
    format_exception: Py<PyAny>,
}

static SHARED: PyOnceLock<Shared> = PyOnceLock::new();

fn shared(py: Python<'_>) -> PyResult<&Shared> {
    SHARED
        .get(py)
        .ok_or_else(|| error::new_err("the Gears Python API is not installed"))
}

/// `copy.deepcopy` as it was at start-up.
pub(crate) fn deepcopy(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    Ok(shared(py)?.deepcopy.bind(py).clone())
}

/// `traceback.format_exception` as it was at start-up.
pub(crate) fn format_exception(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    Ok(shared(py)?.format_exception.bind(py).clone())
}

/// A fresh dict of the builtins taken at start-up (for Gears' own Python code too).
pub(crate) fn builtins(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let builtins = PyDict::new(py);
    for (name, value) in &shared(py)?.builtins {
        builtins.set_item(name.bind(py), value.bind(py))?;
    }
    Ok(builtins)
}

/// True for a builtin a session may share with the others: nothing about it can be changed
/// (built-in functions, built-in types, and str, int, bool, None, Ellipsis, NotImplemented).
fn unchangeable(value: &Bound<'_, PyAny>) -> bool {
    if let Ok(ty) = value.cast::<PyType>() {
        // SAFETY: reading the flags of a live type object.
        let flags = unsafe { (*ty.as_type_ptr()).tp_flags };
        return flags & ffi::Py_TPFLAGS_HEAPTYPE == 0;
    }
    value.is_exact_instance_of::<PyCFunction>()
        || value.is_exact_instance_of::<PyString>()
        || value.is_exact_instance_of::<PyInt>()
        || value.is_exact_instance_of::<PyBool>()
        || value.is_exact_instance_of::<PyNone>()
        || value.is_exact_instance_of::<PyEllipsis>()
        || value.is_exact_instance_of::<PyNotImplemented>()
}

/// Takes the snapshots and compiles the prelude. Called once, at interpreter start, before any
/// script runs.
pub(crate) fn install(py: Python<'_>) -> PyResult<()> {
    let builtins_module = py.import("builtins")?;
    let mut builtins = Vec::new();
    for (name, value) in builtins_module.dict().iter() {
        if unchangeable(&value) {
            builtins.push((name.cast_into::<PyString>()?.unbind(), value.unbind()));
        }
    }
    let prelude = builtins_module
        .getattr("compile")?
        .call1((PRELUDE, "<gears>", "exec"))?;
    let shared = Shared {
        builtins,
        prelude: prelude.unbind(),
        import: builtins_module.getattr("__import__")?.unbind(),
        deepcopy: py.import("copy")?.getattr("deepcopy")?.unbind(),
        format_exception: py
            .import("traceback")?
            .getattr("format_exception")?
            .unbind(),
    };
    let _ = SHARED.set(py, shared);
    Ok(())
}

/// One session's own Python objects: its globals, the namespace its prelude ran in and its
/// `__builtins__`.
pub(crate) struct Namespaces {
    pub globals: Py<PyDict>,
    pub api: Py<PyDict>,
    pub builtins: Py<PyDict>,
}

impl Namespaces {
    /// Fresh API objects for one script, bound to `link`.
    pub(crate) fn new(py: Python<'_>, link: &Arc<Link>) -> PyResult<Namespaces> {
        let shared = shared(py)?;
        let builtins = builtins(py)?;
        let api = PyDict::new(py);
        api.set_item("__builtins__", &builtins)?;
        api.set_item("__name__", "gears")?;
        for (name, function) in api::bind(py, link)? {
            function.setattr("__module__", "redisgears")?;
            api.set_item(name, function)?;
        }
        api.set_item("execute", api.get_item("executeCommand")?)?;
        api.set_item("GearsError", py.get_type::<error>())?;
        api.set_item("forcestopped", py.get_type::<forcestopped>())?;
        api.set_item("_FlatError", py.get_type::<flat_error>())?;
        // SAFETY: a code object compiled at start-up, run with a fresh dict as its globals and
        // locals; PyEval_EvalCode returns a new reference or NULL with an exception set.
        unsafe {
            Bound::from_owned_ptr_or_err(
                py,
                ffi::PyEval_EvalCode(shared.prelude.as_ptr(), api.as_ptr(), api.as_ptr()),
            )?;
        }
        let mut entries = Vec::with_capacity(MODULE_NAMES.len());
        for name in MODULE_NAMES {
            if let Some(value) = api.get_item(name)? {
                entries.push((name, value.unbind()));
            }
        }
        let module = ApiModule::new(py, entries)?.unbind();
        let import = pyo3::types::PyCFunction::new_closure(
            py,
            Some(c"__import__"),
            None,
            move |args, kwargs| session_import(&module, args, kwargs),
        )?;
        builtins.set_item("__import__", import)?;
        let globals = PyDict::new(py);
        globals.set_item("__builtins__", &builtins)?;
        globals.set_item("__name__", "__main__")?;
        for name in SCRIPT_NAMES {
            if let Some(value) = api.get_item(name)? {
                globals.set_item(name, value)?;
            }
        }
        Ok(Namespaces {
            globals: globals.unbind(),
            api: api.unbind(),
            builtins: builtins.unbind(),
        })
    }

    /// Empties the session's dicts, so that what they hold is freed by reference counting now
    /// (a script's functions reach its globals through `__globals__`, and the session's
    /// `__import__` holds its module, which holds its `atomic` class: cycles the cyclic GC would
    /// otherwise free only when it happens to run, or, through Rust, never).
    pub(crate) fn clear(&self, py: Python<'_>) {
        self.globals.bind(py).clear();
        self.api.bind(py).clear();
        self.builtins.bind(py).clear();
    }
}

/// A session's `__import__`: `redisgears` is the session's own module; everything else is
/// imported by the original `__import__`.
fn session_import(
    module: &Py<ApiModule>,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<Py<PyAny>> {
    let py = args.py();
    let [name, _, _, _, level] = api::arguments(
        "__import__",
        ["name", "globals", "locals", "fromlist", "level"],
        1,
        args,
        kwargs,
    )?;
    let is_redisgears = name
        .as_ref()
        .is_some_and(|n| n.cast::<PyString>().is_ok_and(|n| n == "redisgears"));
    let absolute = match level {
        Some(level) => level.extract::<i64>().is_ok_and(|l| l == 0),
        None => true,
    };
    if is_redisgears && absolute {
        return Ok(module.clone_ref(py).into_any());
    }
    Ok(shared(py)?.import.bind(py).call(args, kwargs)?.unbind())
}
