//! What scripts call (`execute`, `log`, ...): functions made for each session, bound to its
//! [`Link`], so that they act as that session's user whoever calls them, and fail once the
//! session has ended (see `link`).

use std::ffi::CStr;
use std::sync::Arc;

use gears_core::{ExecutionPlan, GearsError, LogLevel, Record};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyCFunction, PyDict, PyList, PyString, PyTuple};

use crate::convert::to_py;
use crate::exceptions::error;
use crate::link::Link;

/// What a script's top level builds while it runs: its callbacks, values and plans.
#[derive(Default)]
pub(crate) struct CompileState {
    pub callbacks: Vec<Py<PyAny>>,
    pub values: Vec<Py<PyAny>>,
    pub plans: Vec<ExecutionPlan>,
    pub registrations: Vec<gears_core::registration::RegistrationSpec>,
}

pub(crate) fn gears_err(e: GearsError) -> PyErr {
    error::new_err(e.to_string())
}

/// The arguments of a call, by position or by name, as Python checks them: at most `N`, the
/// first `required` of them required.
pub(crate) fn arguments<'py, const N: usize>(
    function: &str,
    names: [&str; N],
    required: usize,
    args: &Bound<'py, PyTuple>,
    kwargs: Option<&Bound<'py, PyDict>>,
) -> PyResult<[Option<Bound<'py, PyAny>>; N]> {
    if args.len() > N {
        return Err(PyTypeError::new_err(format!(
            "{function}() takes at most {N} arguments ({} given)",
            args.len()
        )));
    }
    let mut values: [Option<Bound<'py, PyAny>>; N] = std::array::from_fn(|_| None);
    for (i, arg) in args.iter().enumerate() {
        values[i] = Some(arg);
    }
    if let Some(kwargs) = kwargs {
        for (key, value) in kwargs.iter() {
            let key = key.cast::<PyString>()?.to_str()?.to_owned();
            let Some(i) = names.iter().position(|n| *n == key) else {
                return Err(PyTypeError::new_err(format!(
                    "{function}() got an unexpected keyword argument '{key}'"
                )));
            };
            if values[i].is_some() {
                return Err(PyTypeError::new_err(format!(
                    "{function}() got multiple values for argument '{key}'"
                )));
            }
            values[i] = Some(value);
        }
    }
    if let Some(missing) = values[..required].iter().position(Option::is_none) {
        return Err(PyTypeError::new_err(format!(
            "{function}() missing required argument '{}'",
            names[missing]
        )));
    }
    Ok(values)
}

type Body = fn(&Link, &Bound<'_, PyTuple>, Option<&Bound<'_, PyDict>>) -> PyResult<Py<PyAny>>;

/// The API functions, by the names the prelude and scripts use.
const FUNCTIONS: [(&CStr, Body); 11] = [
    (c"executeCommand", execute_command),
    (c"log", log),
    (c"configGet", config_get),
    (c"gearsConfigGet", gears_config_get),
    (c"hashtag", hashtag),
    (c"_register", crate::plan::register),
    (c"_atomic_begin", atomic_begin),
    (c"_atomic_end", atomic_end),
    (c"call_next", call_next),
    (c"override_reply", override_reply),
    (c"get_command", get_command),
];

/// The session's own API functions, bound to `link`.
pub(crate) fn bind<'py>(
    py: Python<'py>,
    link: &Arc<Link>,
) -> PyResult<Vec<(&'static str, Bound<'py, PyCFunction>)>> {
    let mut functions = Vec::with_capacity(FUNCTIONS.len());
    for (name, body) in FUNCTIONS {
        let link = link.clone();
        let function = PyCFunction::new_closure(py, Some(name), None, move |args, kwargs| {
            body(&link, args, kwargs)
        })?;
        functions.push((name.to_str().unwrap_or_default(), function));
    }
    let run_link = link.clone();
    let run = PyCFunction::new_closure(py, Some(c"_run"), None, move |args, kwargs| {
        crate::plan::run(&run_link, args, kwargs)
    })?;
    functions.push(("_run", run));
    for (name, body) in crate::aio::FUNCTIONS {
        let link = link.clone();
        let function = PyCFunction::new_closure(py, Some(name), None, move |args, kwargs| {
            body(&link, args, kwargs)
        })?;
        functions.push((name.to_str().unwrap_or_default(), function));
    }
    Ok(functions)
}

/// `execute(command, *args)`: runs a Redis command as the session's user. The GIL is released
/// while the command waits for, and runs under, the Redis lock.
fn execute_command(
    link: &Link,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<Py<PyAny>> {
    let py = args.py();
    if kwargs.is_some_and(|kw| !kw.is_empty()) {
        return Err(PyTypeError::new_err(
            "executeCommand() takes no keyword arguments",
        ));
    }
    if args.is_empty() {
        return Ok(PyList::empty(py).into_any().unbind());
    }
    if !args.get_item(0)?.is_instance_of::<PyString>() {
        return Err(error::new_err("the given command must be a string"));
    }
    let argv = command_args(args)?;
    let host = link.host()?;
    // The host moves into the closure: if the session ends meanwhile, it is dropped there,
    // without the GIL.
    let reply = py.detach(move || host.execute(&argv));
    match reply {
        Ok(record) => Ok(to_py(py, &record).map_err(gears_err)?.unbind()),
        Err(e) => Err(error::new_err(e.to_string())),
    }
}

/// The arguments of a command, as `execute()` takes them: bytes as they are, anything else as
/// its `str()`.
fn command_args(args: &Bound<'_, PyTuple>) -> PyResult<Vec<Vec<u8>>> {
    let mut argv = Vec::with_capacity(args.len());
    for arg in args.iter() {
        if let Ok(b) = arg.cast::<PyBytes>() {
            argv.push(b.as_bytes().to_vec());
        } else if let Ok(b) = arg.cast::<PyByteArray>() {
            argv.push(b.to_vec());
        } else {
            argv.push(arg.str()?.to_string().into_bytes());
        }
    }
    Ok(argv)
}

/// `call_next(*args)`: in a command hook, runs the hooked command with `args` through the hooks
/// registered before this one, then the real command. The GIL is released meanwhile.
fn call_next(
    link: &Link,
    args: &Bound<'_, PyTuple>,
    _kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<Py<PyAny>> {
    let py = args.py();
    let argv = command_args(args)?;
    let host = link.host()?;
    let reply = py.detach(move || host.call_next(&argv));
    match reply {
        Ok(record) => Ok(to_py(py, &record).map_err(gears_err)?.unbind()),
        Err(e) => Err(error::new_err(e.to_string())),
    }
}

/// `override_reply(value)`: the hooked command's client gets `value` as its reply.
fn override_reply(
    link: &Link,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<Py<PyAny>> {
    let [value] = arguments("override_reply", ["value"], 1, args, kwargs)?;
    let value = crate::convert::to_core(&value.expect("required")).map_err(gears_err)?;
    link.host()?
        .override_reply(value)
        .map_err(|e| error::new_err(e.to_string()))?;
    Ok(args.py().None())
}

/// `get_command()`: the arguments of the hooked command that runs this registration.
fn get_command(
    link: &Link,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<Py<PyAny>> {
    arguments::<0>("get_command", [], 0, args, kwargs)?;
    let command = link
        .host()?
        .get_command()
        .map_err(|e| error::new_err(e.to_string()))?;
    let record = Record::List(command.into_iter().map(Record::from).collect());
    Ok(to_py(args.py(), &record).map_err(gears_err)?.unbind())
}

/// `log(message, level='notice')`, written as `GEARS: <message>`.
fn log(
    link: &Link,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<Py<PyAny>> {
    let level_kw = match kwargs {
        Some(kw) => kw.get_item("level")?,
        None => None,
    };
    let (message, level) = match (args.len(), level_kw) {
        (1, level) => (args.get_item(0)?, level),
        // The deprecated (level, message) form.
        (2, None) => (args.get_item(1)?, Some(args.get_item(0)?)),
        _ => {
            return Err(error::new_err(
                "log function must get a log message as input",
            ))
        }
    };
    let Ok(message) = message.cast::<PyString>() else {
        return Err(error::new_err("Log message must be a string"));
    };
    let level = match level {
        None => LogLevel::Notice,
        Some(level) => {
            let Ok(level) = level.cast::<PyString>() else {
                return Err(error::new_err(
                    "Log level must be a sting (debug/verbose/notice/warning)",
                ));
            };
            LogLevel::parse(level.to_str()?).ok_or_else(|| {
                error::new_err(
                    "Log level should be one of the following : debug,verbose,notice,warning",
                )
            })?
        }
    };
    link.host()?.log(level, message.to_str()?);
    Ok(args.py().None())
}

/// A Gears configuration value, or None.
fn config_value(link: &Link, key: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    let Ok(key) = key.cast::<PyString>() else {
        return Err(error::new_err("get_config key must be a string"));
    };
    let value = link
        .host()?
        .gears_config_get(key.to_str()?)
        .unwrap_or(Record::Nil);
    Ok(to_py(key.py(), &value).map_err(gears_err)?.unbind())
}

/// `configGet(key)`.
fn config_get(
    link: &Link,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<Py<PyAny>> {
    let [key] = arguments("configGet", ["key"], 1, args, kwargs)?;
    config_value(link, &key.expect("required"))
}

/// `gearsConfigGet(key, default=None)`.
fn gears_config_get(
    link: &Link,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<Py<PyAny>> {
    let [key, default] = arguments("gearsConfigGet", ["key", "default"], 1, args, kwargs)?;
    let value = config_value(link, &key.expect("required"))?;
    let py = args.py();
    if value.is_none(py) {
        return Ok(default.map_or_else(|| py.None(), Bound::unbind));
    }
    Ok(value)
}

/// `hashtag()`: a hash tag that lands on this shard.
fn hashtag(
    link: &Link,
    args: &Bound<'_, PyTuple>,
    kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<Py<PyAny>> {
    arguments::<0>("hashtag", [], 0, args, kwargs)?;
    let tag = link.host()?.hashtag();
    Ok(PyString::new(args.py(), &tag).into_any().unbind())
}

/// `atomic().__enter__` (the prelude's `atomic` class calls it).
fn atomic_begin(
    link: &Link,
    args: &Bound<'_, PyTuple>,
    _kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<Py<PyAny>> {
    link.begin_atomic(args.py())?;
    Ok(args.py().None())
}

/// `atomic().__exit__`.
fn atomic_end(
    link: &Link,
    args: &Bound<'_, PyTuple>,
    _kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<Py<PyAny>> {
    link.end_atomic();
    Ok(args.py().None())
}

/// The error text of a Python exception, as RedisGears 1.2 reports it: the repr of the list of
/// traceback lines (Gears' own builder frames left out), or `Error type: ..., Value: ...` when
/// there is no traceback.
pub(crate) fn format_error(py: Python<'_>, err: &PyErr) -> String {
    let value = err.value(py);
    // `flat_error(msg)`: the message as is.
    if err.is_instance_of::<crate::exceptions::flat_error>(py) {
        if let Ok(text) = value.str() {
            return text.to_string_lossy().into_owned();
        }
    }
    let formatted = (|| -> PyResult<String> {
        let traceback = err.traceback(py);
        if crate::interpreter::attempt_traceback() && traceback.is_some() {
            let lines = crate::isolation::format_exception(py)?.call1((
                err.get_type(py),
                value,
                traceback,
            ))?;
            let kept = PyList::empty(py);
            for line in lines.try_iter()? {
                let line = line?;
                if !line.str()?.to_str()?.contains("File \"<gears>\"") {
                    kept.append(line)?;
                }
            }
            return Ok(kept.repr()?.to_string());
        }
        Ok(format!(
            "Error type: {}, Value: {}",
            err.get_type(py).str()?,
            value.str()?
        ))
    })();
    formatted.unwrap_or_else(|_| err.to_string())
}
