//! The `redisgears` Python module: what scripts call (`execute`, `log`, ...) and the `_run`
//! entry point that turns a GearsBuilder's recorded steps into a plan.

use std::cell::RefCell;
use std::sync::Arc;

use gears_core::{
    CallbackId, ExecutionMode, ExecutionPlan, GearsError, Kwarg, Language, LogLevel, PlanBuilder,
    ReaderSpec, Record, RedisAccess, RunArg, RunOptions, ValueId,
};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyFunction, PyList, PyString, PyTuple};

use crate::convert::{to_core, to_py};

use crate::exceptions::{error, forcestopped};

/// What a script's top level builds while it runs: its callbacks, values and plans.
#[derive(Default)]
pub(crate) struct CompileState {
    pub callbacks: Vec<Py<PyAny>>,
    pub values: Vec<Py<PyAny>>,
    pub plans: Vec<ExecutionPlan>,
}

thread_local! {
    /// The Redis host of the execution or compilation running on this thread.
    static HOST: RefCell<Option<Arc<dyn RedisAccess>>> = const { RefCell::new(None) };
    /// Set while a script's top level runs on this thread.
    static COMPILING: RefCell<Option<CompileState>> = const { RefCell::new(None) };
}

/// Restores the thread's previous host and closes an atomic block the script left open, also
/// when the code it guards unwinds (a Redis lock left held would freeze the server).
struct HostGuard {
    host: Arc<dyn RedisAccess>,
    previous: Option<Arc<dyn RedisAccess>>,
}

impl Drop for HostGuard {
    fn drop(&mut self) {
        self.host.end_atomic();
        let previous = self.previous.take();
        HOST.with(|h| *h.borrow_mut() = previous);
    }
}

/// Runs `f` with `host` as this thread's Redis host.
pub(crate) fn with_host<R>(host: &Arc<dyn RedisAccess>, f: impl FnOnce() -> R) -> R {
    let previous = HOST.with(|h| h.borrow_mut().replace(host.clone()));
    let _guard = HostGuard {
        host: host.clone(),
        previous,
    };
    f()
}

fn host() -> PyResult<Arc<dyn RedisAccess>> {
    HOST.with(|h| h.borrow().clone())
        .ok_or_else(|| error::new_err("Redis can only be reached from inside a Gears execution"))
}

/// Runs `f` while a script's top level may build plans; returns what it built.
pub(crate) fn compiling<R>(f: impl FnOnce() -> R) -> (R, CompileState) {
    /// Clears the compile state on every exit, unwinding included.
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            let _ = COMPILING.try_with(|c| c.borrow_mut().take());
        }
    }
    COMPILING.with(|c| *c.borrow_mut() = Some(CompileState::default()));
    let _reset = Reset;
    let result = f();
    let state = COMPILING
        .with(|c| c.borrow_mut().take())
        .unwrap_or_default();
    (result, state)
}

fn gears_err(e: GearsError) -> PyErr {
    error::new_err(e.to_string())
}

/// `execute(command, *args)`: runs a Redis command. The GIL is released while the command waits
/// for, and runs under, the Redis lock.
#[pyfunction(name = "executeCommand", signature = (*args))]
fn execute_command(py: Python<'_>, args: &Bound<'_, PyTuple>) -> PyResult<Py<PyAny>> {
    if args.is_empty() {
        return Ok(PyList::empty(py).into_any().unbind());
    }
    if !args.get_item(0)?.is_instance_of::<PyString>() {
        return Err(error::new_err("the given command must be a string"));
    }
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
    let host = host()?;
    let reply = py.detach(move || host.execute(&argv));
    match reply {
        Ok(record) => Ok(to_py(py, &record).map_err(gears_err)?.unbind()),
        Err(e) => Err(error::new_err(e.to_string())),
    }
}

/// `log(message, level='notice')`, written as `GEARS: <message>`.
#[pyfunction(signature = (*args, **kwargs))]
fn log(args: &Bound<'_, PyTuple>, kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<()> {
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
    if let Ok(host) = host() {
        host.log(level, message.to_str()?);
    }
    Ok(())
}

/// `configGet(key)`: a Gears configuration value, or None.
#[pyfunction(name = "configGet")]
fn config_get(py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    let Ok(key) = key.cast::<PyString>() else {
        return Err(error::new_err("get_config key must be a string"));
    };
    let value = host()?
        .gears_config_get(key.to_str()?)
        .unwrap_or(Record::Nil);
    Ok(to_py(py, &value).map_err(gears_err)?.unbind())
}

/// `gearsConfigGet(key, default=None)`.
#[pyfunction(name = "gearsConfigGet", signature = (key, default=None))]
fn gears_config_get(
    py: Python<'_>,
    key: &Bound<'_, PyAny>,
    default: Option<Py<PyAny>>,
) -> PyResult<Py<PyAny>> {
    let value = config_get(py, key)?;
    if value.is_none(py) {
        return Ok(default.unwrap_or_else(|| py.None()));
    }
    Ok(value)
}

/// Starts an atomic block (`atomic().__enter__`): the Redis lock is kept until the block ends.
/// The GIL is released while waiting for the lock (lock order: Redis lock, then GIL).
pub(crate) fn begin_atomic_block(py: Python<'_>) -> PyResult<()> {
    let host = host()?;
    py.detach(move || host.begin_atomic())
        .map_err(|e| error::new_err(e.to_string()))
}

/// Ends the atomic block (`atomic().__exit__`).
pub(crate) fn end_atomic_block() -> PyResult<()> {
    host()?.end_atomic();
    Ok(())
}

/// `hashtag()`: a hash tag that lands on this shard.
#[pyfunction]
fn hashtag() -> PyResult<String> {
    Ok(host()?.hashtag())
}

fn register_callback(state: &mut CompileState, obj: &Bound<'_, PyAny>) -> CallbackId {
    state.callbacks.push(obj.clone().unbind());
    CallbackId((state.callbacks.len() - 1) as u32)
}

fn register_value(state: &mut CompileState, obj: &Bound<'_, PyAny>) -> ValueId {
    state.values.push(obj.clone().unbind());
    ValueId((state.values.len() - 1) as u32)
}

fn optional_callback(state: &mut CompileState, obj: &Bound<'_, PyAny>) -> Option<CallbackId> {
    if obj.is_none() {
        None
    } else {
        Some(register_callback(state, obj))
    }
}

/// Lowers the recorded steps of a GearsBuilder into the plan builder.
fn lower_steps(
    builder: &mut PlanBuilder,
    state: &mut CompileState,
    steps: &Bound<'_, PyList>,
) -> PyResult<()> {
    for step in steps.iter() {
        let step = step.cast::<PyTuple>()?;
        let op: String = step.get_item(0)?.extract()?;
        let args = step.get_item(1)?;
        let args = args.cast::<PyTuple>()?;
        let arg = |i: usize| args.get_item(i);
        match op.as_str() {
            "map" | "flatmap" | "filter" | "foreach" | "accumulate" | "repartition" => {
                let cb = register_callback(state, &arg(0)?);
                match op.as_str() {
                    "map" => builder.map(cb),
                    "flatmap" => builder.flatmap(cb),
                    "filter" => builder.filter(cb),
                    "foreach" => builder.foreach(cb),
                    "accumulate" => builder.accumulate(cb),
                    _ => builder.repartition(cb),
                };
            }
            "localgroupby" | "groupby" | "batchgroupby" => {
                let extractor = register_callback(state, &arg(0)?);
                let reducer = register_callback(state, &arg(1)?);
                match op.as_str() {
                    "localgroupby" => builder.localgroupby(extractor, reducer),
                    "groupby" => builder.groupby(extractor, reducer),
                    _ => builder.batchgroupby(extractor, reducer),
                };
            }
            "collect" => {
                builder.collect();
            }
            "limit" => {
                let length: i64 = arg(0)?.extract()?;
                let start: i64 = if args.len() > 1 {
                    arg(1)?.extract()?
                } else {
                    0
                };
                builder.limit(length.max(0) as u64, start.max(0) as u64);
            }
            "aggregate" => {
                let zero = register_value(state, &arg(0)?);
                let seq = register_callback(state, &arg(1)?);
                let comb = register_callback(state, &arg(2)?);
                builder.aggregate(zero, seq, comb);
            }
            "aggregateby" => {
                let extractor = register_callback(state, &arg(0)?);
                let zero = register_value(state, &arg(1)?);
                let seq = register_callback(state, &arg(2)?);
                let comb = register_callback(state, &arg(3)?);
                builder.aggregateby(extractor, zero, seq, comb);
            }
            "count" => {
                builder.count();
            }
            "countby" => {
                let extractor = optional_callback(state, &arg(0)?);
                builder.countby(extractor);
            }
            "avg" => {
                let extractor = optional_callback(state, &arg(0)?);
                builder.avg(extractor);
            }
            "sort" => {
                let reverse: bool = arg(0)?.extract()?;
                builder.sort(reverse);
            }
            "distinct" => {
                builder.distinct();
            }
            other => return Err(error::new_err(format!("unknown operation {other}"))),
        }
    }
    Ok(())
}

/// `GearsBuilder.run(...)`: builds the plan; the execution starts once the script's top level
/// has finished.
#[pyfunction(name = "_run")]
#[allow(clippy::too_many_arguments)]
fn run(
    py: Python<'_>,
    reader: &Bound<'_, PyAny>,
    default_arg: &Bound<'_, PyAny>,
    desc: &Bound<'_, PyAny>,
    steps: &Bound<'_, PyList>,
    arg: &Bound<'_, PyAny>,
    convert_to_str: bool,
    collect: bool,
    kwargs: &Bound<'_, PyDict>,
) -> PyResult<()> {
    let Ok(reader) = reader.extract::<String>() else {
        return Err(error::new_err("reader argument must be a string"));
    };
    let description = if desc.is_none() {
        None
    } else {
        match desc.extract::<String>() {
            Ok(d) => Some(d),
            Err(_) => return Err(error::new_err("desc argument must be a string")),
        }
    };
    COMPILING.with(|c| {
        let mut guard = c.borrow_mut();
        let Some(state) = guard.as_mut() else {
            return Err(error::new_err(
                "run() can only be called from the top level of a script",
            ));
        };
        if !state.plans.is_empty() {
            return Err(error::new_err(
                "Can not run more then 1 executions in a single script",
            ));
        }
        let mut builder = PlanBuilder::new(Language::Python);
        lower_steps(&mut builder, state, steps)?;

        let mode = match kwargs.get_item("mode")? {
            None => ExecutionMode::Async,
            Some(mode) => {
                let Ok(mode) = mode.extract::<String>() else {
                    return Err(error::new_err("execution mode must be a string"));
                };
                match mode.as_str() {
                    "async" => ExecutionMode::Async,
                    "async_local" => ExecutionMode::AsyncLocal,
                    _ => return Err(error::new_err("unknown execution mode")),
                }
            }
        };
        let mut kw: Vec<Kwarg> = Vec::new();
        for (k, v) in kwargs.iter() {
            let key: String = k.extract()?;
            match key.as_str() {
                "noScan" if !v.is_instance_of::<pyo3::types::PyBool>() => {
                    return Err(error::new_err("exactMatch value is not boolean"));
                }
                "readValue" if !v.is_instance_of::<pyo3::types::PyBool>() => {
                    return Err(error::new_err("readValue value is not boolean"));
                }
                "fromId" if !v.is_instance_of::<PyString>() => {
                    return Err(error::new_err("fromId argument must be a string"));
                }
                _ => {}
            }
            if key == "patternGenerator" {
                continue;
            }
            kw.push((key, to_core(&v).map_err(gears_err)?));
        }
        let pattern_generator = match kwargs.get_item("patternGenerator")? {
            Some(f) if !f.is_none() => Some(register_callback(state, &f)),
            _ => None,
        };
        let default_arg = default_arg
            .extract::<String>()
            .unwrap_or_else(|_| "*".to_string());
        let run_arg = if reader == "PythonReader" {
            if arg.is_none() {
                return Err(error::new_err("pyreader argument must be a function"));
            }
            if !arg.is_instance_of::<PyFunction>() && !arg.is_callable() {
                return Err(error::new_err("pyreader argument must be a function"));
            }
            RunArg::Callback(register_callback(state, arg))
        } else if arg.is_none() || !arg.is_truthy()? {
            RunArg::None
        } else {
            // A key name that is not UTF-8 is given as bytes.
            if let Ok(bytes) = arg.cast::<PyBytes>() {
                RunArg::Text(bytes.as_bytes().to_vec())
            } else {
                match arg.extract::<String>() {
                    Ok(s) => RunArg::Text(s.into_bytes()),
                    Err(_) => return Err(error::new_err("regex argument must be a string")),
                }
            }
        };
        let spec =
            ReaderSpec::from_run_args(&reader, &default_arg, run_arg, &kw, pattern_generator)
                .map_err(gears_err)?;
        let options = RunOptions {
            convert_to_str,
            collect,
            mode,
        };
        state.plans.push(builder.build(spec, options, description));
        Ok(())
    })?;
    let _ = py;
    Ok(())
}

/// The Rust API functions and exception types, by the names scripts and the prelude use.
pub(crate) fn functions(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let functions = PyDict::new(py);
    for function in [
        wrap_pyfunction!(execute_command, py)?,
        wrap_pyfunction!(log, py)?,
        wrap_pyfunction!(config_get, py)?,
        wrap_pyfunction!(gears_config_get, py)?,
        wrap_pyfunction!(hashtag, py)?,
        wrap_pyfunction!(run, py)?,
    ] {
        function.setattr("__module__", "redisgears")?;
        functions.set_item(function.getattr("__name__")?, function)?;
    }
    functions.set_item("atomic", py.get_type::<crate::classes::Atomic>())?;
    functions.set_item("GearsError", py.get_type::<error>())?;
    functions.set_item("forcestopped", py.get_type::<forcestopped>())?;
    Ok(functions)
}

/// The error text of a Python exception, as RedisGears 1.2 reports it: the repr of the list of
/// traceback lines (Gears' own builder frames left out), or `Error type: ..., Value: ...` when
/// there is no traceback.
pub(crate) fn format_error(py: Python<'_>, err: &PyErr) -> String {
    let value = err.value(py);
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
