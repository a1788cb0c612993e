//! Isolation of the Gears API between sessions.
//!
//! Scripts share one interpreter, so anything they share can be patched by one of them to spy
//! on the others (a script that replaced a shared `execute` saw a later script's
//! `SET user:1 password123`). So nothing of the Gears API a script can reach is shared mutably:
//! - every session runs the prelude (`GearsBuilder`, `GB`) into a fresh namespace; the prelude
//!   is compiled once, at start-up, and only executed per session;
//! - the Rust functions (`execute`, `log`, ...) and classes (`atomic`) are bound directly into
//!   that namespace; builtin functions have no writable code, globals or defaults, and the
//!   classes are immutable;
//! - every session gets its own `__builtins__`, a copy of a pristine snapshot taken at start-up,
//!   so `import builtins; builtins.len = spy` reaches no other session; its `__import__` always
//!   returns the real `redisgears` module, whatever a script put in `sys.modules`;
//! - `redisgears` (for RedisGears 1.2 scripts that `import redisgears`) is an instance of an
//!   immutable `ModuleType` subclass written in Rust: setting or deleting an attribute raises,
//!   and its API names are served from a table scripts cannot reach, so even writing into its
//!   `__dict__` changes nothing;
//! - `gears.error` and `gears.forcestopped` are immutable types.
//!
//! What this cannot do (CPython is no sandbox) is documented in docs/api-python.md.

use std::ffi::{c_int, c_uint, c_void, CStr};
use std::sync::atomic::{AtomicPtr, Ordering};

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyModule, PyString, PyTuple, PyType};

use crate::api;

const PRELUDE: &str = include_str!("prelude.py");

/// The names a script's globals start with, taken from its API namespace.
const SCRIPT_NAMES: [&str; 9] = [
    "GearsBuilder",
    "GB",
    "execute",
    "log",
    "configGet",
    "gearsConfigGet",
    "hashtag",
    "atomic",
    "GearsError",
];

const READ_ONLY: &CStr = c"the Gears API module can not be modified";

/// What every session is made from. Built once, at interpreter start; never handed to scripts
/// except through immutable objects.
struct Shared {
    /// `builtins.__dict__` as it was at start-up.
    builtins: Py<PyDict>,
    /// The prelude, compiled.
    prelude: Py<PyAny>,
    /// The Rust API functions and exception types, by name.
    functions: Py<PyDict>,
    /// The read-only `redisgears` module.
    module: Py<PyAny>,
    /// The original `builtins.__import__`.
    import: Py<PyAny>,
    /// Our `__import__`, for the sessions' builtins.
    session_import: Py<PyAny>,
    /// `copy.deepcopy` and `traceback.format_exception`, as they were at start-up.
    deepcopy: Py<PyAny>,
    format_exception: Py<PyAny>,
}

static SHARED: PyOnceLock<Shared> = PyOnceLock::new();
/// The API table the read-only module serves attributes from (a strong reference, never freed).
static API_TABLE: AtomicPtr<ffi::PyObject> = AtomicPtr::new(std::ptr::null_mut());

fn shared(py: Python<'_>) -> PyResult<&Shared> {
    SHARED
        .get(py)
        .ok_or_else(|| crate::exceptions::error::new_err("the Gears Python API is not installed"))
}

/// `copy.deepcopy` as it was at start-up.
pub(crate) fn deepcopy(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    Ok(shared(py)?.deepcopy.bind(py).clone())
}

/// `traceback.format_exception` as it was at start-up.
pub(crate) fn format_exception(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    Ok(shared(py)?.format_exception.bind(py).clone())
}

/// Installs the shared pieces: snapshots, the compiled prelude, the `redisgears` module.
/// Called once, at interpreter start, before any script runs.
pub(crate) fn install(py: Python<'_>) -> PyResult<()> {
    let functions = api::functions(py)?;
    API_TABLE.store(functions.clone().into_ptr(), Ordering::Release);
    let module_type = read_only_module_type(py)?;
    let module = module_type.call1(("redisgears",))?;
    let module_dict = module.getattr("__dict__")?.cast_into::<PyDict>()?;
    module_dict.update(functions.as_mapping())?;
    let sys_modules = py.import("sys")?.getattr("modules")?;
    sys_modules.set_item("redisgears", &module)?;

    let builtins_module = py.import("builtins")?;
    let builtins = builtins_module.dict().copy()?;
    let import = builtins_module.getattr("__import__")?;
    let session_import = wrap_pyfunction!(session_import, py)?;
    let prelude = builtins_module
        .getattr("compile")?
        .call1((PRELUDE, "<gears>", "exec"))?;
    let shared = Shared {
        builtins: builtins.unbind(),
        prelude: prelude.unbind(),
        functions: functions.unbind(),
        module: module.unbind(),
        import: import.unbind(),
        session_import: session_import.into_any().unbind(),
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
    /// Fresh API objects for one script.
    pub(crate) fn new(py: Python<'_>) -> PyResult<Namespaces> {
        let shared = shared(py)?;
        let builtins = shared.builtins.bind(py).copy()?;
        builtins.set_item("__import__", shared.session_import.bind(py))?;
        let api = PyDict::new(py);
        api.set_item("__builtins__", &builtins)?;
        api.set_item("__name__", "gears")?;
        api.update(shared.functions.bind(py).as_mapping())?;
        api.set_item(
            "execute",
            shared.functions.bind(py).get_item("executeCommand")?,
        )?;
        // SAFETY: a code object compiled at start-up, run with a fresh dict as its globals and
        // locals; PyEval_EvalCode returns a new reference or NULL with an exception set.
        unsafe {
            Bound::from_owned_ptr_or_err(
                py,
                ffi::PyEval_EvalCode(shared.prelude.as_ptr(), api.as_ptr(), api.as_ptr()),
            )?;
        }
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
    /// (a script's functions reach its globals through `__globals__`: a cycle the cyclic GC
    /// would otherwise free only when it happens to run).
    pub(crate) fn clear(&self, py: Python<'_>) {
        self.globals.bind(py).clear();
        self.api.bind(py).clear();
        self.builtins.bind(py).clear();
    }
}

/// The sessions' `__import__`: `redisgears` is always the real module (whatever is in
/// `sys.modules`); everything else is imported by the original `__import__`.
#[pyfunction(name = "__import__", signature = (*args, **kwargs))]
fn session_import<'py>(
    py: Python<'py>,
    args: &Bound<'py, PyTuple>,
    kwargs: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyAny>> {
    let shared = shared(py)?;
    let is_redisgears = match args.get_item(0) {
        Ok(name) => name.cast::<PyString>().is_ok_and(|n| n == "redisgears"),
        Err(_) => false,
    };
    if is_redisgears {
        let level = match kwargs.map(|kw| kw.get_item("level")).transpose()?.flatten() {
            Some(level) => Some(level),
            None => args.get_item(4).ok(),
        };
        let absolute = match level {
            Some(level) => level.extract::<i64>().is_ok_and(|l| l == 0),
            None => true,
        };
        if absolute {
            return Ok(shared.module.bind(py).clone());
        }
    }
    shared.import.bind(py).call(args, kwargs)
}

/// The type of the `redisgears` module: a `ModuleType` subclass written in Rust, immutable, whose
/// instances refuse attribute changes and serve the API from [`API_TABLE`].
fn read_only_module_type(py: Python<'_>) -> PyResult<Bound<'_, PyType>> {
    let mut slots = [
        ffi::PyType_Slot {
            slot: ffi::Py_tp_getattro,
            pfunc: module_getattro as *mut c_void,
        },
        ffi::PyType_Slot {
            slot: ffi::Py_tp_setattro,
            pfunc: module_setattro as *mut c_void,
        },
        ffi::PyType_Slot {
            slot: 0,
            pfunc: std::ptr::null_mut(),
        },
    ];
    let mut spec = ffi::PyType_Spec {
        // CPython keeps this pointer as the type's tp_name: it must be static.
        name: c"gears.APIModule".as_ptr(),
        basicsize: 0,
        itemsize: 0,
        flags: (ffi::Py_TPFLAGS_DEFAULT | ffi::Py_TPFLAGS_IMMUTABLETYPE) as c_uint,
        slots: slots.as_mut_ptr(),
    };
    let bases = PyTuple::new(py, [py.get_type::<PyModule>()])?;
    // SAFETY: a valid spec (static name, NULL-terminated slots) and a tuple of one base type;
    // PyType_FromSpecWithBases returns a new reference or NULL with an exception set.
    let ty = unsafe {
        Bound::from_owned_ptr_or_err(py, ffi::PyType_FromSpecWithBases(&mut spec, bases.as_ptr()))?
    };
    Ok(ty.cast_into::<PyType>()?)
}

/// `getattr(redisgears, name)`: the API table first, then ModuleType's own lookup.
unsafe extern "C" fn module_getattro(
    object: *mut ffi::PyObject,
    name: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // Called by CPython with the GIL held and a str `name`.
    let table = API_TABLE.load(Ordering::Acquire);
    if !table.is_null() {
        let item = ffi::PyDict_GetItemWithError(table, name);
        if !item.is_null() {
            ffi::Py_INCREF(item);
            return item;
        }
        if !ffi::PyErr_Occurred().is_null() {
            return std::ptr::null_mut();
        }
    }
    match (*std::ptr::addr_of!(ffi::PyModule_Type)).tp_getattro {
        Some(getattro) => getattro(object, name),
        None => ffi::PyObject_GenericGetAttr(object, name),
    }
}

/// Setting or deleting an attribute of `redisgears`: refused.
unsafe extern "C" fn module_setattro(
    _object: *mut ffi::PyObject,
    _name: *mut ffi::PyObject,
    _value: *mut ffi::PyObject,
) -> c_int {
    ffi::PyErr_SetString(ffi::PyExc_AttributeError, READ_ONLY.as_ptr());
    -1
}
