//! The `GearsBuilder` Rhai type and its operations.
//!
//! Every operation validates its arguments, registers its callbacks in the script's
//! [`SharedState`] and lowers into [`gears_core::PlanBuilder`]; `run()` finishes the plan.
//! Operations mutate the builder and return it, so both chaining and `let b = GB(); b.map(f);`
//! work.

use gears_core::registration::{register_reader, RegistrationSpec};
use gears_core::{
    python_str, CallbackId, ExecutionMode, GearsError, KeySource, Kwarg, Language, PlanBuilder,
    ReaderSpec, RunArg, RunLimits, RunOptions,
};
use rhai::{Dynamic, Engine, EvalAltResult, FnPtr, Map};

use crate::convert::{to_core, truthy};
use crate::native::key;
use crate::state::SharedState;

/// What Rhai functions registered by this crate return.
pub(crate) type Fallible<T> = std::result::Result<T, Box<EvalAltResult>>;

/// A runtime error whose message is exactly `message`.
pub(crate) fn script_error<T>(message: impl Into<String>) -> Fallible<T> {
    Err(message.into().into())
}

/// A core error as a Rhai runtime error carrying its message.
pub(crate) fn raise(error: GearsError) -> Box<EvalAltResult> {
    error.message().to_string().into()
}

/// The builder a script holds: `GearsBuilder(reader, defaultArg)` plus the steps added so far.
#[derive(Clone, Debug)]
pub struct GearsBuilder {
    reader: String,
    default_arg: String,
    pub(crate) plan: PlanBuilder,
}

impl GearsBuilder {
    /// A builder over `reader` (RedisGears' reader names) whose `run()` defaults to `default_arg`.
    pub fn new(reader: impl Into<String>, default_arg: impl Into<String>) -> Self {
        GearsBuilder {
            reader: reader.into(),
            default_arg: default_arg.into(),
            plan: PlanBuilder::new(Language::Rhai),
        }
    }

    /// The reader name.
    pub fn reader(&self) -> &str {
        &self.reader
    }

    /// The steps added so far.
    pub fn plan(&self) -> &PlanBuilder {
        &self.plan
    }
}

/// A string argument: strings as is, anything else as its Python `str()`.
fn text(value: &Dynamic) -> String {
    match value.as_immutable_string_ref() {
        Ok(s) => s.to_string(),
        Err(_) => python_str(&to_core(value)),
    }
}

pub(crate) fn callback(state: &SharedState, op: &str, value: Dynamic) -> Fallible<CallbackId> {
    match value.flatten().try_cast::<FnPtr>() {
        Some(function) => state.add_callback(function).map_err(raise),
        None => script_error(format!("{op} argument must be a function")),
    }
}

fn number(value: &Dynamic) -> Fallible<u64> {
    let value = value.flatten_clone();
    if let Ok(i) = value.as_int() {
        return Ok(u64::try_from(i).unwrap_or(0));
    }
    if let Ok(f) = value.as_float() {
        // Saturating float → integer conversion; negative and NaN become 0.
        return Ok(f as u64);
    }
    script_error("limit argument must be a number")
}

/// Registers functions that only raise `wrong number of args to <op> function`, for the arities
/// (arguments after the builder) that `op` does not take.
fn wrong_arity(engine: &mut Engine, op: &'static str, arities: &[usize]) {
    let message = format!("wrong number of args to {op} function");
    for arity in arities {
        let m = message.clone();
        match arity {
            0 => {
                engine.register_fn(op, move |_: &mut GearsBuilder| -> Fallible<GearsBuilder> {
                    script_error(m.clone())
                });
            }
            1 => {
                engine.register_fn(
                    op,
                    move |_: &mut GearsBuilder, _: Dynamic| -> Fallible<GearsBuilder> {
                        script_error(m.clone())
                    },
                );
            }
            2 => {
                engine.register_fn(
                    op,
                    move |_: &mut GearsBuilder, _: Dynamic, _: Dynamic| -> Fallible<GearsBuilder> {
                        script_error(m.clone())
                    },
                );
            }
            3 => {
                engine.register_fn(
                    op,
                    move |_: &mut GearsBuilder,
                          _: Dynamic,
                          _: Dynamic,
                          _: Dynamic|
                          -> Fallible<GearsBuilder> { script_error(m.clone()) },
                );
            }
            4 => {
                engine.register_fn(
                    op,
                    move |_: &mut GearsBuilder,
                          _: Dynamic,
                          _: Dynamic,
                          _: Dynamic,
                          _: Dynamic|
                          -> Fallible<GearsBuilder> { script_error(m.clone()) },
                );
            }
            _ => {
                engine.register_fn(
                    op,
                    move |_: &mut GearsBuilder,
                          _: Dynamic,
                          _: Dynamic,
                          _: Dynamic,
                          _: Dynamic,
                          _: Dynamic|
                          -> Fallible<GearsBuilder> { script_error(m.clone()) },
                );
            }
        }
    }
}

type OneCallback = fn(&mut PlanBuilder, CallbackId);
type TwoCallbacks = fn(&mut PlanBuilder, KeySource, CallbackId);
type NoArgument = fn(&mut PlanBuilder);
type OptionalCallback = fn(&mut PlanBuilder, Option<CallbackId>);

/// Registers the `GearsBuilder` type, its constructors and every operation.
pub(crate) fn register(engine: &mut Engine, state: &SharedState) {
    engine.register_type_with_name::<GearsBuilder>("GearsBuilder");
    register_constructors(engine);

    let one: [(&'static str, OneCallback); 5] = [
        ("map", |b, f| {
            b.map(f);
        }),
        ("flatmap", |b, f| {
            b.flatmap(f);
        }),
        ("filter", |b, f| {
            b.filter(f);
        }),
        ("foreach", |b, f| {
            b.foreach(f);
        }),
        ("accumulate", |b, f| {
            b.accumulate(f);
        }),
    ];
    for (op, apply) in one {
        let state = state.clone();
        engine.register_fn(
            op,
            move |b: &mut GearsBuilder, f: Dynamic| -> Fallible<GearsBuilder> {
                let f = callback(&state, op, f)?;
                apply(&mut b.plan, f);
                Ok(b.clone())
            },
        );
        wrong_arity(engine, op, &[0, 2]);
    }
    let st = state.clone();
    engine.register_fn(
        "repartition",
        move |b: &mut GearsBuilder, f: Dynamic| -> Fallible<GearsBuilder> {
            let key = key(&st, "repartition", f)?;
            b.plan.repartition(key);
            Ok(b.clone())
        },
    );
    wrong_arity(engine, "repartition", &[0, 2]);
    crate::native::register_native(engine);

    let two: [(&'static str, TwoCallbacks); 3] = [
        ("localgroupby", |b, e, r| {
            b.localgroupby(e, r);
        }),
        ("groupby", |b, e, r| {
            b.groupby(e, r);
        }),
        ("batchgroupby", |b, e, r| {
            b.batchgroupby(e, r);
        }),
    ];
    for (op, apply) in two {
        let state = state.clone();
        engine.register_fn(
            op,
            move |b: &mut GearsBuilder, e: Dynamic, r: Dynamic| -> Fallible<GearsBuilder> {
                let e = key(&state, op, e)?;
                let r = callback(&state, op, r)?;
                apply(&mut b.plan, e, r);
                Ok(b.clone())
            },
        );
        wrong_arity(engine, op, &[0, 1, 3]);
    }

    let none: [(&'static str, NoArgument); 3] = [
        ("collect", |b| {
            b.collect();
        }),
        ("count", |b| {
            b.count();
        }),
        ("distinct", |b| {
            b.distinct();
        }),
    ];
    for (op, apply) in none {
        engine.register_fn(op, move |b: &mut GearsBuilder| -> GearsBuilder {
            apply(&mut b.plan);
            b.clone()
        });
        wrong_arity(engine, op, &[1]);
    }

    register_optional_extractors(engine, state);
    register_limit_and_sort(engine);
    register_aggregates(engine, state);
    register_run(engine, state);
    register_register(engine, state);
}

fn register_constructors(engine: &mut Engine) {
    for name in ["GearsBuilder", "GB"] {
        engine.register_fn(name, || GearsBuilder::new("KeysReader", "*"));
        engine.register_fn(name, |reader: Dynamic| {
            GearsBuilder::new(text(&reader), "*")
        });
        engine.register_fn(name, |reader: Dynamic, default_arg: Dynamic| {
            GearsBuilder::new(text(&reader), text(&default_arg))
        });
        engine.register_fn(
            name,
            |_: Dynamic, _: Dynamic, _: Dynamic| -> Fallible<GearsBuilder> {
                script_error("wrong number of args to GearsBuilder function")
            },
        );
    }
}

fn register_optional_extractors(engine: &mut Engine, state: &SharedState) {
    engine.register_fn("countby", move |b: &mut GearsBuilder| -> GearsBuilder {
        b.plan.countby(None);
        b.clone()
    });
    let st = state.clone();
    engine.register_fn(
        "countby",
        move |b: &mut GearsBuilder, e: Dynamic| -> Fallible<GearsBuilder> {
            let key = key(&st, "countby", e)?;
            b.plan.countby_key(key);
            Ok(b.clone())
        },
    );
    wrong_arity(engine, "countby", &[2]);
    let extractors: [(&'static str, OptionalCallback); 1] = [("avg", |b, e| {
        b.avg(e);
    })];
    for (op, apply) in extractors {
        engine.register_fn(op, move |b: &mut GearsBuilder| -> GearsBuilder {
            apply(&mut b.plan, None);
            b.clone()
        });
        let state = state.clone();
        engine.register_fn(
            op,
            move |b: &mut GearsBuilder, e: Dynamic| -> Fallible<GearsBuilder> {
                let e = callback(&state, op, e)?;
                apply(&mut b.plan, Some(e));
                Ok(b.clone())
            },
        );
        wrong_arity(engine, op, &[2]);
    }
}

fn register_limit_and_sort(engine: &mut Engine) {
    engine.register_fn(
        "limit",
        |b: &mut GearsBuilder, length: Dynamic| -> Fallible<GearsBuilder> {
            let length = number(&length)?;
            b.plan.limit(length, 0);
            Ok(b.clone())
        },
    );
    engine.register_fn(
        "limit",
        |b: &mut GearsBuilder, length: Dynamic, start: Dynamic| -> Fallible<GearsBuilder> {
            let length = number(&length)?;
            let start = number(&start)?;
            b.plan.limit(length, start);
            Ok(b.clone())
        },
    );
    wrong_arity(engine, "limit", &[0, 3]);

    engine.register_fn("sort", |b: &mut GearsBuilder| -> GearsBuilder {
        b.plan.sort(true);
        b.clone()
    });
    engine.register_fn(
        "sort",
        |b: &mut GearsBuilder, reverse: Dynamic| -> GearsBuilder {
            b.plan.sort(truthy(&reverse));
            b.clone()
        },
    );
    wrong_arity(engine, "sort", &[2]);
}

fn register_aggregates(engine: &mut Engine, state: &SharedState) {
    let st = state.clone();
    engine.register_fn(
        "aggregate",
        move |b: &mut GearsBuilder,
              zero: Dynamic,
              seq: Dynamic,
              comb: Dynamic|
              -> Fallible<GearsBuilder> {
            let seq = callback(&st, "aggregate", seq)?;
            let comb = callback(&st, "aggregate", comb)?;
            let zero = st.add_value(zero.flatten()).map_err(raise)?;
            b.plan.aggregate(zero, seq, comb);
            Ok(b.clone())
        },
    );
    wrong_arity(engine, "aggregate", &[0, 1, 2, 4]);

    let st = state.clone();
    engine.register_fn(
        "aggregateby",
        move |b: &mut GearsBuilder,
              extractor: Dynamic,
              zero: Dynamic,
              seq: Dynamic,
              comb: Dynamic|
              -> Fallible<GearsBuilder> {
            let extractor = key(&st, "aggregateby", extractor)?;
            let seq = callback(&st, "aggregateby", seq)?;
            let comb = callback(&st, "aggregateby", comb)?;
            let zero = st.add_value(zero.flatten()).map_err(raise)?;
            b.plan.aggregateby(extractor, zero, seq, comb);
            Ok(b.clone())
        },
    );
    wrong_arity(engine, "aggregateby", &[0, 1, 2, 3, 5]);
}

fn register_run(engine: &mut Engine, state: &SharedState) {
    let st = state.clone();
    engine.register_fn("run", move |b: &mut GearsBuilder| -> Fallible<()> {
        run(&st, b, Dynamic::UNIT, None)
    });
    let st = state.clone();
    engine.register_fn(
        "run",
        move |b: &mut GearsBuilder, arg: Dynamic| -> Fallible<()> {
            // `run(#{...})`: options only.
            if arg.is_map() {
                return run(&st, b, Dynamic::UNIT, Some(arg));
            }
            run(&st, b, arg, None)
        },
    );
    let st = state.clone();
    engine.register_fn(
        "run",
        move |b: &mut GearsBuilder, arg: Dynamic, options: Dynamic| -> Fallible<()> {
            run(&st, b, arg, Some(options))
        },
    );
    engine.register_fn(
        "run",
        |_: &mut GearsBuilder, _: Dynamic, _: Dynamic, _: Dynamic| -> Fallible<()> {
            script_error("wrong number of args to run function")
        },
    );
}

fn register_register(engine: &mut Engine, state: &SharedState) {
    let st = state.clone();
    engine.register_fn("register", move |b: &mut GearsBuilder| -> Fallible<()> {
        register_plan(&st, b, Dynamic::UNIT, None)
    });
    let st = state.clone();
    engine.register_fn(
        "register",
        move |b: &mut GearsBuilder, arg: Dynamic| -> Fallible<()> {
            // `register(#{...})`: options only.
            if arg.is_map() {
                return register_plan(&st, b, Dynamic::UNIT, Some(arg));
            }
            register_plan(&st, b, arg, None)
        },
    );
    let st = state.clone();
    engine.register_fn(
        "register",
        move |b: &mut GearsBuilder, arg: Dynamic, options: Dynamic| -> Fallible<()> {
            register_plan(&st, b, arg, Some(options))
        },
    );
}

/// `register(prefix?, options?)`: the plan becomes a registration, run by each matching event
/// once the script's top level has finished.
fn register_plan(
    state: &SharedState,
    builder: &GearsBuilder,
    arg: Dynamic,
    options: Option<Dynamic>,
) -> Fallible<()> {
    state.check_can_register().map_err(raise)?;
    let arg = arg.flatten();
    let arg = if arg.is_unit() {
        RunArg::None
    } else {
        match arg.as_blob_ref() {
            Ok(blob) => RunArg::Text(blob.to_vec()),
            Err(_) if arg.is_string() => RunArg::Text(text(&arg).into_bytes()),
            Err(_) => return script_error("regex argument must be a string"),
        }
    };
    let parsed = parse_options(state, options)?;
    let (reader, trigger) = register_reader(
        &builder.reader,
        &builder.default_arg,
        arg,
        &parsed.kwargs,
        parsed.options.mode,
    )
    .map_err(raise)?;
    let plan = builder
        .plan
        .build(reader, parsed.options, parsed.description);
    state
        .add_registration(RegistrationSpec {
            plan: plan.into(),
            trigger,
            on_registered: parsed.on_registered,
            id: None,
        })
        .map_err(raise)
}

/// What the options map of `run()` and `register()` holds, split into execution options and
/// reader kwargs.
struct ParsedOptions {
    options: RunOptions,
    kwargs: Vec<Kwarg>,
    pattern_generator: Option<CallbackId>,
    on_registered: Option<CallbackId>,
    description: Option<String>,
}

fn parse_options(state: &SharedState, options: Option<Dynamic>) -> Fallible<ParsedOptions> {
    let mut parsed = ParsedOptions {
        options: RunOptions::default(),
        kwargs: Vec::new(),
        pattern_generator: None,
        on_registered: None,
        description: None,
    };
    let Some(options) = options else {
        return Ok(parsed);
    };
    let options = options.flatten();
    if options.is_unit() {
        return Ok(parsed);
    }
    let Some(map) = options.try_cast::<Map>() else {
        return script_error("run options must be an object map");
    };
    for (name, value) in map {
        match name.as_str() {
            "convertToStr" => parsed.options.convert_to_str = truthy(&value),
            "collect" => parsed.options.collect = truthy(&value),
            "mode" => {
                parsed.options.mode = ExecutionMode::parse(&text(&value)).map_err(raise)?;
            }
            "patternGenerator" => {
                parsed.pattern_generator = Some(callback(state, "patternGenerator", value)?);
            }
            "onRegistered" => {
                parsed.on_registered = Some(callback(state, "onRegistered", value)?);
            }
            "desc" => parsed.description = Some(text(&value)),
            other => parsed.kwargs.push((other.to_string(), to_core(&value))),
        }
    }
    Ok(parsed)
}

fn run(
    state: &SharedState,
    builder: &GearsBuilder,
    arg: Dynamic,
    options: Option<Dynamic>,
) -> Fallible<()> {
    state.check_can_run().map_err(raise)?;
    let arg = arg.flatten();
    let arg = if arg.is_unit() {
        RunArg::None
    } else if arg.is_fnptr() {
        RunArg::Callback(callback(state, "run", arg)?)
    } else {
        // A blob names a key that is not UTF-8.
        match arg.as_blob_ref() {
            Ok(blob) => RunArg::Text(blob.to_vec()),
            Err(_) => RunArg::Text(text(&arg).into_bytes()),
        }
    };
    let parsed = parse_options(state, options)?;
    let reader = ReaderSpec::from_run_args(
        &builder.reader,
        &builder.default_arg,
        arg,
        &parsed.kwargs,
        parsed.pattern_generator,
    )
    .map_err(raise)?;
    let mut options = parsed.options;
    options.limits = RunLimits::from_kwargs(&parsed.kwargs).map_err(raise)?;
    let plan = builder.plan.build(reader, options, parsed.description);
    state.add_plan(plan).map_err(raise)
}
