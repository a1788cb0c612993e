//! `GearsBuilder.run(...)` and `GearsBuilder.register(...)`: lower the steps a builder recorded
//! into the session's plan or registration.

use std::sync::Arc;

use gears_core::registration::{register_reader, RegistrationSpec, Trigger};
use gears_core::timer::TimerTrigger;
use gears_core::{
    CallbackId, ExecutionMode, KeySource, Kwarg, Language, PlanBuilder, ReaderSpec, RunArg,
    RunLimits, RunOptions, ValueId,
};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFunction, PyList, PyString, PyTuple};

use crate::api::{gears_err, CompileState};
use crate::convert::to_core;
use crate::exceptions::error;
use crate::link::Link;

fn register_callback(state: &mut CompileState, obj: &Bound<'_, PyAny>) -> CallbackId {
    state.callbacks.push(obj.clone().unbind());
    CallbackId((state.callbacks.len() - 1) as u32)
}

fn register_value(state: &mut CompileState, obj: &Bound<'_, PyAny>) -> ValueId {
    state.values.push(obj.clone().unbind());
    ValueId((state.values.len() - 1) as u32)
}

/// A native call's name and arguments: `native(name, *args)` (the builder step's arguments, or
/// a `native` extractor's).
fn native_call(
    op: &str,
    items: &[Bound<'_, PyAny>],
) -> PyResult<(String, Vec<gears_core::Record>)> {
    let Some((name, args)) = items.split_first() else {
        return Err(error::new_err(format!(
            "{op}: the native operator's name is missing"
        )));
    };
    let Ok(name) = name.extract::<String>() else {
        return Err(error::new_err(format!(
            "{op}: the native operator's name must be a string"
        )));
    };
    if let Some(at) = args.iter().position(|a| !plain_data(a, 0)) {
        return Err(error::new_err(format!(
            "{op}: argument {} is a {}; a native operator's arguments are data (strings, numbers, booleans, lists, maps, nil)",
            at + 1,
            args[at].get_type().name().map(|n| n.to_string()).unwrap_or_default()
        )));
    }
    let args = args
        .iter()
        .map(|a| to_core(a).map_err(gears_err))
        .collect::<PyResult<_>>()?;
    Ok((name, args))
}

/// True for what a native operator's argument may be: None, bool, int, float, str, bytes, and
/// lists, tuples and dicts of them. Past a depth it stops looking (the conversion that follows
/// refuses values nested too deep, and a list that holds itself).
fn plain_data(value: &Bound<'_, PyAny>, depth: usize) -> bool {
    use pyo3::types::{PyDict, PyFloat, PyInt, PyTuple};
    if depth > 64 {
        return true;
    }
    if value.is_none()
        || value.is_instance_of::<PyBool>()
        || value.is_instance_of::<PyInt>()
        || value.is_instance_of::<PyFloat>()
        || value.is_instance_of::<PyString>()
        || value.is_instance_of::<PyBytes>()
    {
        return true;
    }
    if let Ok(list) = value.cast::<PyList>() {
        return list.iter().all(|item| plain_data(&item, depth + 1));
    }
    if let Ok(tuple) = value.cast::<PyTuple>() {
        return tuple.iter().all(|item| plain_data(&item, depth + 1));
    }
    if let Ok(dict) = value.cast::<PyDict>() {
        return dict
            .iter()
            .all(|(k, v)| plain_data(&k, depth + 1) && plain_data(&v, depth + 1));
    }
    false
}

/// The key of a group-by step: a native extractor (`native(name, *args)`), or a callback.
fn key_source(state: &mut CompileState, obj: &Bound<'_, PyAny>) -> PyResult<KeySource> {
    if !obj.hasattr("_gears_native")? {
        return Ok(KeySource::Callback(register_callback(state, obj)));
    }
    let mut items = vec![obj.getattr("name")?];
    items.extend(obj.getattr("args")?.cast_into::<PyTuple>()?.iter());
    let (name, args) = native_call("native", &items)?;
    PlanBuilder::native_key(&gears_core::extension::installed(), &name, args).map_err(gears_err)
}

fn optional_key(state: &mut CompileState, obj: &Bound<'_, PyAny>) -> PyResult<Option<KeySource>> {
    if obj.is_none() {
        Ok(None)
    } else {
        key_source(state, obj).map(Some)
    }
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
            "repartition" => {
                let key = key_source(state, &arg(0)?)?;
                builder.repartition(key);
            }
            "map" | "flatmap" | "filter" | "foreach" | "accumulate" => {
                let cb = register_callback(state, &arg(0)?);
                match op.as_str() {
                    "map" => builder.map(cb),
                    "flatmap" => builder.flatmap(cb),
                    "filter" => builder.filter(cb),
                    "foreach" => builder.foreach(cb),
                    _ => builder.accumulate(cb),
                };
            }
            "native" => {
                let items: Vec<_> = args.iter().collect();
                let (name, native_args) = native_call("native", &items)?;
                builder
                    .native(&gears_core::extension::installed(), &name, native_args)
                    .map_err(gears_err)?;
            }
            "localgroupby" | "groupby" | "batchgroupby" => {
                let extractor = key_source(state, &arg(0)?)?;
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
                let extractor = key_source(state, &arg(0)?)?;
                let zero = register_value(state, &arg(1)?);
                let seq = register_callback(state, &arg(2)?);
                let comb = register_callback(state, &arg(3)?);
                builder.aggregateby(extractor, zero, seq, comb);
            }
            "count" => {
                builder.count();
            }
            "countby" => {
                let key = optional_key(state, &arg(0)?)?;
                builder.countby_key(key.unwrap_or(KeySource::Identity));
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

/// The builder's reader name and description (`GB(reader, defaultArg, desc)`).
fn reader_and_description(
    reader: &Bound<'_, PyAny>,
    desc: &Bound<'_, PyAny>,
) -> PyResult<(String, Option<String>)> {
    let Ok(reader) = reader.extract::<String>() else {
        return Err(error::new_err("reader argument must be a string"));
    };
    if desc.is_none() {
        return Ok((reader, None));
    }
    match desc.extract::<String>() {
        Ok(d) => Ok((reader, Some(d))),
        Err(_) => Err(error::new_err("desc argument must be a string")),
    }
}

/// `_run(reader, defaultArg, desc, steps, arg, convertToStr, collect, kwargs)`, called by
/// `GearsBuilder.run()`: builds the plan; the execution starts once the script's top level has
/// finished. Only the session's own top level can build its plans.
pub(crate) fn run(
    link: &Arc<Link>,
    args: &Bound<'_, PyTuple>,
    _kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<Py<PyAny>> {
    let py = args.py();
    let args: [Bound<'_, PyAny>; 8] = args
        .extract()
        .map_err(|_| error::new_err("run() was called with the wrong arguments"))?;
    let [reader, default_arg, desc, steps, arg, convert_to_str, collect, kwargs] = args;
    let (reader, description) = reader_and_description(&reader, &desc)?;
    let steps = steps.cast_into::<PyList>()?;
    let kwargs = kwargs.cast_into::<PyDict>()?;
    let options = (
        convert_to_str.extract::<bool>()?,
        collect.extract::<bool>()?,
    );
    // Inside a running execution (no top level to add to): an execution of its own, in the
    // background.
    let top_level = link.take_compile_state();
    let background = top_level.is_none();
    let mut state = top_level.unwrap_or_default();
    // Converting the arguments runs Python code (`str()` of unknown objects): no lock is held.
    let built = build(
        &mut state,
        &reader,
        &default_arg,
        description,
        &steps,
        &arg,
        options,
        &kwargs,
    );
    if background {
        built?;
        return run_in_background(py, link, state);
    }
    link.put_compile_state(state);
    built.map(|_| py.None())
}

/// `run()` inside a running execution (a step, a timer, a coroutine), as RedisGears 1.2 did:
/// the plan runs as an execution of its own, on this shard, in the background; `run()` returns
/// an asyncio future of Gears' loop that gets `[results, errors]` when it ends (a coroutine
/// may `await` it; nothing needs to).
fn run_in_background(py: Python<'_>, link: &Arc<Link>, state: CompileState) -> PyResult<Py<PyAny>> {
    let CompileState {
        callbacks,
        values,
        mut plans,
        ..
    } = state;
    let plan = plans
        .pop()
        .ok_or_else(|| error::new_err("run() built no plan"))?;
    let session: Arc<dyn gears_core::Session> = Arc::new(crate::session::PythonSession::part_of(
        link.clone(),
        callbacks,
        values,
    ));
    let future = crate::aio::new_future(py)?;
    let target = future.clone_ref(py);
    let done: gears_core::ExecutionDone = Box::new(move |outcome| {
        Python::attach(|py| crate::aio::resolve_with_outcome(py, target, outcome));
    });
    let host = link.host()?;
    py.detach(|| host.start_execution(plan, session, done))
        .map_err(gears_err)?;
    Ok(future)
}

#[allow(clippy::too_many_arguments)]
fn build(
    state: &mut CompileState,
    reader: &str,
    default_arg: &Bound<'_, PyAny>,
    description: Option<String>,
    steps: &Bound<'_, PyList>,
    arg: &Bound<'_, PyAny>,
    (convert_to_str, collect): (bool, bool),
    kwargs: &Bound<'_, PyDict>,
) -> PyResult<()> {
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
            "noScan" if !v.is_instance_of::<PyBool>() => {
                return Err(error::new_err("exactMatch value is not boolean"));
            }
            "readValue" if !v.is_instance_of::<PyBool>() => {
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
    let spec = ReaderSpec::from_run_args(reader, &default_arg, run_arg, &kw, pattern_generator)
        .map_err(gears_err)?;
    let options = RunOptions {
        convert_to_str,
        collect,
        mode,
        limits: RunLimits::from_kwargs(&kw).map_err(gears_err)?,
    };
    state.plans.push(builder.build(spec, options, description));
    Ok(())
}

/// `_register(reader, defaultArg, desc, steps, prefix, convertToStr, collect, mode, onRegistered,
/// kwargs)`, called by `GearsBuilder.register()`: records the registration; it is created once
/// the script's top level has finished (all of a script's registrations, or none).
pub(crate) fn register(
    link: &Link,
    args: &Bound<'_, PyTuple>,
    _kwargs: Option<&Bound<'_, PyDict>>,
) -> PyResult<Py<PyAny>> {
    let py = args.py();
    let args: [Bound<'_, PyAny>; 10] = args
        .extract()
        .map_err(|_| error::new_err("register() was called with the wrong arguments"))?;
    let [reader, default_arg, desc, steps, prefix, convert_to_str, collect, mode, on_registered, kwargs] =
        args;
    let (reader, description) = reader_and_description(&reader, &desc)?;
    let steps = steps.cast_into::<PyList>()?;
    let kwargs = kwargs.cast_into::<PyDict>()?;
    let Ok(mode) = mode.extract::<String>() else {
        return Err(error::new_err("execution mode must be a string"));
    };
    let mode = ExecutionMode::parse(&mode).map_err(gears_err)?;
    let prefix = if prefix.is_none() {
        RunArg::None
    } else if let Ok(bytes) = prefix.cast::<PyBytes>() {
        RunArg::Text(bytes.as_bytes().to_vec())
    } else {
        match prefix.extract::<String>() {
            Ok(s) => RunArg::Text(s.into_bytes()),
            Err(_) => return Err(error::new_err("regex argument must be a string")),
        }
    };
    if !on_registered.is_none() && !on_registered.is_callable() {
        return Err(error::new_err("onRegistered argument must be a function"));
    }
    let mut kw: Vec<Kwarg> = Vec::new();
    for (k, v) in kwargs.iter() {
        let key: String = k.extract()?;
        if key == "readValue" && !v.is_instance_of::<PyBool>() {
            return Err(error::new_err("readValue value is not boolean"));
        }
        kw.push((key, to_core(&v).map_err(gears_err)?));
    }
    let options = RunOptions {
        convert_to_str: convert_to_str.extract::<bool>()?,
        collect: collect.extract::<bool>()?,
        mode,
        limits: RunLimits::from_kwargs(&kw).map_err(gears_err)?,
    };
    let default_arg = default_arg
        .extract::<String>()
        .unwrap_or_else(|_| "*".to_string());
    let (spec, trigger) =
        register_reader(&reader, &default_arg, prefix, &kw, mode).map_err(gears_err)?;
    // A timer's key that holds something else: no timer, `register()` answers False (as
    // RedisGears' `registerTE`).
    if let Trigger::Timer(TimerTrigger { key: Some(key), .. }) = &trigger {
        let host = link.host()?;
        let free = py.detach(|| host.timer_key_free(key)).map_err(gears_err)?;
        if !free {
            return Ok(PyBool::new(py, false).to_owned().into_any().unbind());
        }
    }
    let Some(mut state) = link.take_compile_state() else {
        return Err(error::new_err(
            "register() can only be called from the top level of a script",
        ));
    };
    let mut builder = PlanBuilder::new(Language::Python);
    let lowered = lower_steps(&mut builder, &mut state, &steps);
    let id = link.host().ok().and_then(|host| host.new_registration_id());
    if lowered.is_ok() {
        let on_registered = optional_callback(&mut state, &on_registered);
        state.registrations.push(RegistrationSpec {
            plan: builder.build(spec, options, description).into(),
            trigger,
            on_registered,
            id: id.clone(),
        });
    }
    link.put_compile_state(state);
    // The registration's id, as RedisGears returns it.
    lowered.map(|_| match id {
        Some(id) => id
            .into_pyobject(py)
            .map(|s| s.into_any().unbind())
            .unwrap_or(py.None()),
        None => py.None(),
    })
}
