//! `GearsBuilder(reader, defaultArg, desc)` (alias `GB`): a userdata whose methods append steps
//! to a [`PlanBuilder`] and return the builder itself, so calls chain with `:`.

use gears_core::registration::{register_reader, RegistrationSpec};
use gears_core::{
    CallbackId, ExecutionMode, GearsError, KeySource, Kwarg, Language, PlanBuilder, ReaderSpec,
    Record, Result, RunArg, RunLimits, RunOptions,
};
use mlua::{AnyUserData, Function, Lua, MultiValue, Table, UserData, UserDataMethods, Value};

use crate::convert::{internal, value_to_core};
use crate::error::raise_gears;
use crate::state::{lock, ScriptState, SharedState};

/// The Lua-side builder object.
pub struct LuaBuilder {
    state: SharedState,
    reader: String,
    default_arg: String,
    description: Option<String>,
    plan: PlanBuilder,
}

/// `GearsBuilder(reader='KeysReader', defaultArg='*', desc=nil)`.
pub fn create_builder_function(lua: &Lua, state: SharedState) -> mlua::Result<Function> {
    lua.create_function(move |lua, args: MultiValue| {
        let args = args.into_vec();
        if args.len() > 3 {
            return Err(plan_error("wrong number of args to GearsBuilder function"));
        }
        let text = |i: usize, name: &str, default: &str| -> mlua::Result<Option<String>> {
            match args.get(i) {
                None | Some(Value::Nil) => Ok(Some(default.to_string()).filter(|s| !s.is_empty())),
                Some(Value::String(s)) => Ok(Some(s.to_string_lossy())),
                Some(_) => Err(plan_error(format!("{name} argument must be a string"))),
            }
        };
        let reader = text(0, "reader", "KeysReader")?.unwrap_or_default();
        let default_arg = text(1, "defaultArg", "*")?.unwrap_or_default();
        let description = text(2, "desc", "")?;
        lua.create_userdata(LuaBuilder {
            state: state.clone(),
            reader,
            default_arg,
            description,
            plan: PlanBuilder::new(Language::Lua),
        })
    })
}

/// `native(name, ...)`: a native extractor (a Rust extension's), given where a key function goes
/// (`GB():groupby(native('hash_field', 'city'), reducer)`).
pub struct LuaNative {
    name: String,
    args: Vec<Record>,
}

impl UserData for LuaNative {}

/// A native call's name and arguments (core records).
fn native_call(op: &str, args: &[Value]) -> Result<(String, Vec<Record>)> {
    let Some((name, rest)) = args.split_first() else {
        return Err(GearsError::Plan(format!(
            "{op}: the native operator's name is missing"
        )));
    };
    let Value::String(name) = name else {
        return Err(GearsError::Plan(format!(
            "{op}: the native operator's name must be a string"
        )));
    };
    if let Some(at) = rest.iter().position(|v| {
        matches!(
            v,
            Value::Function(_) | Value::Thread(_) | Value::UserData(_) | Value::LightUserData(_)
        )
    }) {
        return Err(GearsError::Plan(format!(
            "{op}: argument {} is a {}; a native operator's arguments are data (strings, numbers, booleans, lists, maps, nil)",
            at + 1,
            rest[at].type_name()
        )));
    }
    let args = rest
        .iter()
        .map(|v| value_to_core(v, 0))
        .collect::<Result<_>>()?;
    Ok((name.to_string_lossy(), args))
}

/// The global `native(name, ...)`.
pub fn create_native_function(lua: &Lua) -> mlua::Result<Function> {
    lua.create_function(|lua, args: MultiValue| {
        let (name, args) = native_call("native", &args.into_vec()).map_err(raise_gears)?;
        lua.create_userdata(LuaNative { name, args })
    })
}

/// The key of a group-by step: a `native(...)` extractor, or a function.
fn key(state: &mut ScriptState, op: &str, value: &Value) -> Result<KeySource> {
    if let Value::UserData(ud) = value {
        if let Ok(native) = ud.borrow::<LuaNative>() {
            return PlanBuilder::native_key(
                &gears_core::extension::installed(),
                &native.name,
                native.args.clone(),
            );
        }
    }
    callback(state, op, value).map(KeySource::Callback)
}

fn plan_error(text: impl Into<String>) -> mlua::Error {
    raise_gears(GearsError::Plan(text.into()))
}

fn arity(name: &str, args: &[Value], allowed: std::ops::RangeInclusive<usize>) -> Result<()> {
    if allowed.contains(&args.len()) {
        Ok(())
    } else {
        Err(GearsError::Plan(format!(
            "wrong number of args to {name} function"
        )))
    }
}

fn function(name: &str, value: &Value) -> Result<Function> {
    match value {
        Value::Function(f) => Ok(f.clone()),
        _ => Err(GearsError::Plan(format!(
            "{name} argument must be a function"
        ))),
    }
}

fn callback(state: &mut ScriptState, name: &str, value: &Value) -> Result<CallbackId> {
    let f = function(name, value)?;
    state.add_callback(f)
}

/// An optional function argument: absent or nil means "none".
fn optional_callback(
    state: &mut ScriptState,
    name: &str,
    value: Option<&Value>,
) -> Result<Option<CallbackId>> {
    match value {
        None | Some(Value::Nil) => Ok(None),
        Some(v) => callback(state, name, v).map(Some),
    }
}

fn limit_number(value: &Value) -> Result<u64> {
    let n = match value {
        Value::Integer(i) => *i,
        Value::Number(f) if f.fract() == 0.0 && f.is_finite() => *f as i64,
        _ => return Err(GearsError::Plan("limit argument must be a number".into())),
    };
    u64::try_from(n).map_err(|_| GearsError::Plan("limit argument must not be negative".into()))
}

fn truthy(value: &Value) -> bool {
    !matches!(value, Value::Nil | Value::Boolean(false))
}

type Op = fn(&Lua, &mut LuaBuilder, &mut ScriptState, &[Value]) -> Result<()>;

/// The builder's operations, each given its arguments after `self`.
const OPERATIONS: &[(&str, Op)] = &[
    ("map", |_, b, s, a| {
        arity("map", a, 1..=1)?;
        let f = callback(s, "map", &a[0])?;
        b.plan.map(f);
        Ok(())
    }),
    ("flatmap", |_, b, s, a| {
        arity("flatmap", a, 1..=1)?;
        let f = callback(s, "flatmap", &a[0])?;
        b.plan.flatmap(f);
        Ok(())
    }),
    ("filter", |_, b, s, a| {
        arity("filter", a, 1..=1)?;
        let f = callback(s, "filter", &a[0])?;
        b.plan.filter(f);
        Ok(())
    }),
    ("foreach", |_, b, s, a| {
        arity("foreach", a, 1..=1)?;
        let f = callback(s, "foreach", &a[0])?;
        b.plan.foreach(f);
        Ok(())
    }),
    ("accumulate", |_, b, s, a| {
        arity("accumulate", a, 1..=1)?;
        let f = callback(s, "accumulate", &a[0])?;
        b.plan.accumulate(f);
        Ok(())
    }),
    ("localgroupby", |_, b, s, a| {
        arity("localgroupby", a, 2..=2)?;
        let extractor = key(s, "localgroupby", &a[0])?;
        let reducer = callback(s, "localgroupby", &a[1])?;
        b.plan.localgroupby(extractor, reducer);
        Ok(())
    }),
    ("limit", |_, b, _, a| {
        arity("limit", a, 1..=2)?;
        let length = limit_number(&a[0])?;
        let start = match a.get(1) {
            None | Some(Value::Nil) => 0,
            Some(v) => limit_number(v)?,
        };
        b.plan.limit(length, start);
        Ok(())
    }),
    ("collect", |_, b, _, a| {
        arity("collect", a, 0..=0)?;
        b.plan.collect();
        Ok(())
    }),
    ("repartition", |_, b, s, a| {
        arity("repartition", a, 1..=1)?;
        let extractor = key(s, "repartition", &a[0])?;
        b.plan.repartition(extractor);
        Ok(())
    }),
    ("groupby", |_, b, s, a| {
        arity("groupby", a, 2..=2)?;
        let extractor = key(s, "groupby", &a[0])?;
        let reducer = callback(s, "groupby", &a[1])?;
        b.plan.groupby(extractor, reducer);
        Ok(())
    }),
    ("batchgroupby", |_, b, s, a| {
        arity("batchgroupby", a, 2..=2)?;
        let extractor = key(s, "batchgroupby", &a[0])?;
        let reducer = callback(s, "batchgroupby", &a[1])?;
        b.plan.batchgroupby(extractor, reducer);
        Ok(())
    }),
    ("aggregate", |lua, b, s, a| {
        arity("aggregate", a, 3..=3)?;
        let seq = callback(s, "aggregate", &a[1])?;
        let comb = callback(s, "aggregate", &a[2])?;
        let key = lua.create_registry_value(a[0].clone()).map_err(internal)?;
        let zero = s.add_value(key)?;
        b.plan.aggregate(zero, seq, comb);
        Ok(())
    }),
    ("aggregateby", |lua, b, s, a| {
        arity("aggregateby", a, 4..=4)?;
        let extractor = key(s, "aggregateby", &a[0])?;
        let seq = callback(s, "aggregateby", &a[2])?;
        let comb = callback(s, "aggregateby", &a[3])?;
        let key = lua.create_registry_value(a[1].clone()).map_err(internal)?;
        let zero = s.add_value(key)?;
        b.plan.aggregateby(extractor, zero, seq, comb);
        Ok(())
    }),
    ("count", |_, b, _, a| {
        arity("count", a, 0..=0)?;
        b.plan.count();
        Ok(())
    }),
    ("countby", |_, b, s, a| {
        arity("countby", a, 0..=1)?;
        let extractor = match a.first() {
            None | Some(Value::Nil) => KeySource::Identity,
            Some(v) => key(s, "countby", v)?,
        };
        b.plan.countby_key(extractor);
        Ok(())
    }),
    ("avg", |_, b, s, a| {
        arity("avg", a, 0..=1)?;
        let extractor = optional_callback(s, "avg", a.first())?;
        b.plan.avg(extractor);
        Ok(())
    }),
    ("sort", |_, b, _, a| {
        arity("sort", a, 0..=1)?;
        let reverse = match a.first() {
            None | Some(Value::Nil) => true,
            Some(v) => truthy(v),
        };
        b.plan.sort(reverse);
        Ok(())
    }),
    ("distinct", |_, b, _, a| {
        arity("distinct", a, 0..=0)?;
        b.plan.distinct();
        Ok(())
    }),
    ("native", |_, b, _, a| {
        let (name, args) = native_call("native", a)?;
        b.plan
            .native(&gears_core::extension::installed(), &name, args)?;
        Ok(())
    }),
    ("run", run),
    ("register", register),
];

impl UserData for LuaBuilder {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        for (name, op) in OPERATIONS {
            let (name, op) = (*name, *op);
            methods.add_function(name, move |lua, args: MultiValue| {
                let mut args = args.into_vec();
                let this = match args.first() {
                    Some(Value::UserData(ud)) if ud.is::<LuaBuilder>() => ud.clone(),
                    _ => {
                        return Err(plan_error(format!(
                            "{name} must be called on a builder, as builder:{name}(...)"
                        )))
                    }
                };
                args.remove(0);
                apply(lua, &this, op, &args)?;
                Ok(this)
            });
        }
    }
}

fn apply(lua: &Lua, this: &AnyUserData, op: Op, args: &[Value]) -> mlua::Result<()> {
    let mut builder = this.borrow_mut::<LuaBuilder>()?;
    let state = builder.state.clone();
    let mut state = lock(&state);
    op(lua, &mut builder, &mut state, args).map_err(raise_gears)
}

/// `run(arg?, options?)`: finishes the plan. `options` holds run's keyword arguments; a table as
/// the only argument is taken as the options.
fn run(_: &Lua, b: &mut LuaBuilder, s: &mut ScriptState, args: &[Value]) -> Result<()> {
    arity("run", args, 0..=2)?;
    if !s.compiling {
        return Err(GearsError::Plan(
            "run() can only be called while the script's top level runs".into(),
        ));
    }
    if !s.plans.is_empty() {
        return Err(GearsError::Plan(
            "Can not run more then 1 executions in a single script".into(),
        ));
    }
    let (arg, options) = arg_and_options("run", args)?;
    let generator = matches!(b.reader.as_str(), "PythonReader" | "GeneratorReader");
    let run_arg = match arg {
        Value::Nil => RunArg::None,
        Value::Function(f) if generator => RunArg::Callback(s.add_callback(f.clone())?),
        _ if generator => RunArg::None,
        Value::String(text) => RunArg::Text(text.as_bytes().to_vec()),
        Value::Integer(i) => RunArg::Text(i.to_string().into_bytes()),
        Value::Number(n) => RunArg::Text(n.to_string().into_bytes()),
        _ => return Err(GearsError::Plan("run argument must be a string".into())),
    };
    let mut run_options = RunOptions::default();
    let mut kwargs: Vec<Kwarg> = Vec::new();
    let (mut pattern_generator, mut on_registered) = (None, None);
    if let Some(options) = options {
        let callbacks = (&mut pattern_generator, &mut on_registered);
        parse_options(s, options, &mut run_options, &mut kwargs, callbacks)?;
    }
    let spec = ReaderSpec::from_run_args(
        &b.reader,
        &b.default_arg,
        run_arg,
        &kwargs,
        pattern_generator,
    )?;
    run_options.limits = RunLimits::from_kwargs(&kwargs)?;
    let plan = b.plan.build(spec, run_options, b.description.clone());
    s.plans.push(plan);
    Ok(())
}

/// The first argument and the options table of `run` and `register`: `(arg?, options?)`, a
/// table as the only argument being the options.
fn arg_and_options<'a>(name: &str, args: &'a [Value]) -> Result<(&'a Value, Option<&'a Table>)> {
    match (args.first(), args.get(1)) {
        (Some(Value::Table(t)), None) => Ok((&Value::Nil, Some(t))),
        (arg, Some(Value::Table(t))) => Ok((arg.unwrap_or(&Value::Nil), Some(t))),
        (_, Some(Value::Nil)) | (_, None) => Ok((args.first().unwrap_or(&Value::Nil), None)),
        (_, Some(_)) => Err(GearsError::Plan(format!("{name} options must be a table"))),
    }
}

/// `register(prefix?, options?)`: the plan becomes a registration, run by each matching event
/// once the script's top level has finished. `options` holds register's keyword arguments
/// (`mode`, `eventTypes`, `keyTypes`, `readValue`, `onRegistered`, ...).
fn register(_: &Lua, b: &mut LuaBuilder, s: &mut ScriptState, args: &[Value]) -> Result<()> {
    arity("register", args, 0..=2)?;
    if !s.compiling {
        return Err(GearsError::Plan(
            "register() can only be called while the script's top level runs".into(),
        ));
    }
    let (arg, options) = arg_and_options("register", args)?;
    let arg = match arg {
        Value::Nil => RunArg::None,
        Value::String(text) => RunArg::Text(text.as_bytes().to_vec()),
        _ => return Err(GearsError::Plan("regex argument must be a string".into())),
    };
    let mut options_out = RunOptions::default();
    let mut kwargs: Vec<Kwarg> = Vec::new();
    let (mut pattern_generator, mut on_registered) = (None, None);
    if let Some(options) = options {
        let callbacks = (&mut pattern_generator, &mut on_registered);
        parse_options(s, options, &mut options_out, &mut kwargs, callbacks)?;
    }
    let (spec, trigger) =
        register_reader(&b.reader, &b.default_arg, arg, &kwargs, options_out.mode)?;
    let plan = b.plan.build(spec, options_out, b.description.clone());
    s.registrations.push(RegistrationSpec {
        plan: plan.into(),
        trigger,
        on_registered,
        id: None,
    });
    Ok(())
}

fn parse_options(
    s: &mut ScriptState,
    options: &Table,
    run_options: &mut RunOptions,
    kwargs: &mut Vec<Kwarg>,
    (pattern_generator, on_registered): (&mut Option<CallbackId>, &mut Option<CallbackId>),
) -> Result<()> {
    let mut entries = Vec::new();
    for pair in options.clone().pairs::<Value, Value>() {
        let (k, v) = pair.map_err(internal)?;
        let name = match k {
            Value::String(s) => s.to_string_lossy(),
            _ => return Err(GearsError::Plan("run option names must be strings".into())),
        };
        entries.push((name, v));
    }
    // Deterministic order, so repeated runs build identical plans.
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, value) in entries {
        match name.as_str() {
            "convertToStr" => run_options.convert_to_str = truthy(&value),
            "collect" => run_options.collect = truthy(&value),
            "mode" => match &value {
                Value::String(mode) => {
                    run_options.mode = ExecutionMode::parse(&mode.to_string_lossy())?;
                }
                _ => return Err(GearsError::Plan("mode argument must be a string".into())),
            },
            "patternGenerator" => {
                *pattern_generator = optional_callback(s, "patternGenerator", Some(&value))?;
            }
            "onRegistered" => {
                *on_registered = optional_callback(s, "onRegistered", Some(&value))?;
            }
            "noScan" | "readValue" => kwargs.push((name, Record::Bool(truthy(&value)))),
            _ => {
                let record = match value_to_core(&value, 0)? {
                    Record::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => {
                        Record::Integer(f as i64)
                    }
                    other => other,
                };
                kwargs.push((name, record));
            }
        }
    }
    Ok(())
}
