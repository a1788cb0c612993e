//! The global functions a script can call: `execute`, `log`, `configGet`, `gearsConfigGet`,
//! `hashtag`, and the `print`/`debug` hooks that write to the Redis log.

use std::sync::Arc;

use gears_core::{python_str, LogLevel, RedisAccess};
use rhai::{Array, Dynamic, Engine, FnPtr, NativeCallContext};

use crate::builder::{raise, script_error, Fallible};
use crate::convert::{to_argument, to_core, to_dynamic};

/// Rhai has no varargs: `execute` is registered for 1 to this many arguments, plus
/// `execute(array)`.
pub const MAX_EXECUTE_ARGUMENTS: usize = 12;

fn execute(redis: &dyn RedisAccess, args: Vec<Vec<u8>>) -> Fallible<Dynamic> {
    let reply = redis.execute(&args).map_err(raise)?;
    to_dynamic(&reply).map_err(raise)
}

fn text(value: &Dynamic) -> String {
    match value.as_immutable_string_ref() {
        Ok(s) => s.to_string(),
        Err(_) => python_str(&to_core(value)),
    }
}

macro_rules! register_execute {
    ($engine:expr, $redis:expr, $($arg:ident),+) => {{
        let redis = Arc::clone($redis);
        $engine.register_fn(
            "execute",
            move |$($arg: Dynamic),+| -> Fallible<Dynamic> {
                execute(&*redis, vec![$(to_argument(&$arg)),+])
            },
        );
    }};
}

/// Registers the globals and routes `print`/`debug` to the Redis log.
pub(crate) fn register(engine: &mut Engine, redis: &Arc<dyn RedisAccess>) {
    let r = Arc::clone(redis);
    engine.on_print(move |message| r.log(LogLevel::Notice, message));
    let r = Arc::clone(redis);
    engine.on_debug(move |message, _source, position| {
        if position.is_none() {
            r.log(LogLevel::Notice, message)
        } else {
            r.log(LogLevel::Notice, &format!("{message} ({position})"))
        }
    });

    register_execute!(engine, redis, a1);
    register_execute!(engine, redis, a1, a2);
    register_execute!(engine, redis, a1, a2, a3);
    register_execute!(engine, redis, a1, a2, a3, a4);
    register_execute!(engine, redis, a1, a2, a3, a4, a5);
    register_execute!(engine, redis, a1, a2, a3, a4, a5, a6);
    register_execute!(engine, redis, a1, a2, a3, a4, a5, a6, a7);
    register_execute!(engine, redis, a1, a2, a3, a4, a5, a6, a7, a8);
    register_execute!(engine, redis, a1, a2, a3, a4, a5, a6, a7, a8, a9);
    register_execute!(engine, redis, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10);
    register_execute!(engine, redis, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11);
    register_execute!(engine, redis, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12);
    let r = Arc::clone(redis);
    engine.register_fn("execute", move |args: Array| -> Fallible<Dynamic> {
        if args.is_empty() {
            return script_error("execute needs a command");
        }
        execute(&*r, args.iter().map(to_argument).collect())
    });
    engine.register_fn("execute", || -> Fallible<Dynamic> {
        script_error("execute needs a command")
    });

    let r = Arc::clone(redis);
    engine.register_fn("log", move |message: Dynamic| {
        r.log(LogLevel::Notice, &text(&message))
    });
    let r = Arc::clone(redis);
    engine.register_fn(
        "log",
        move |message: Dynamic, level: Dynamic| -> Fallible<()> {
            match LogLevel::parse(&text(&level)) {
                Some(level) => {
                    r.log(level, &text(&message));
                    Ok(())
                }
                None => script_error("invalid log level"),
            }
        },
    );

    let r = Arc::clone(redis);
    engine.register_fn("configGet", move |key: Dynamic| -> Fallible<Dynamic> {
        match r.gears_config_get(&text(&key)) {
            Some(value) => to_dynamic(&value).map_err(raise),
            None => Ok(Dynamic::UNIT),
        }
    });
    let r = Arc::clone(redis);
    engine.register_fn(
        "gearsConfigGet",
        move |key: Dynamic, default: Dynamic| -> Fallible<Dynamic> {
            match r.gears_config_get(&text(&key)) {
                Some(value) => to_dynamic(&value).map_err(raise),
                None => Ok(default),
            }
        },
    );
    let r = Arc::clone(redis);
    engine.register_fn("gearsConfigGet", move |key: Dynamic| -> Fallible<Dynamic> {
        match r.gears_config_get(&text(&key)) {
            Some(value) => to_dynamic(&value).map_err(raise),
            None => Ok(Dynamic::UNIT),
        }
    });
    let r = Arc::clone(redis);
    engine.register_fn("hashtag", move || r.hashtag());
    register_hook_functions(engine, redis);
    // atomic(f): runs f with no other client's command in between (the Redis lock is held).
    let r = Arc::clone(redis);
    engine.register_fn(
        "atomic",
        move |context: NativeCallContext, f: FnPtr| -> Fallible<Dynamic> {
            r.begin_atomic().map_err(raise)?;
            let result = f.call_within_context::<Dynamic>(&context, ());
            r.end_atomic();
            result
        },
    );
}

macro_rules! register_call_next {
    ($engine:expr, $redis:expr $(, $arg:ident)*) => {{
        let redis = Arc::clone($redis);
        $engine.register_fn(
            "call_next",
            move |$($arg: Dynamic),*| -> Fallible<Dynamic> {
                let reply = redis.call_next(&[$(to_argument(&$arg)),*]).map_err(raise)?;
                to_dynamic(&reply).map_err(raise)
            },
        );
    }};
}

/// Command hooks: `call_next(...)`, `override_reply(value)`, `get_command()`,
/// `flat_error(msg)`.
fn register_hook_functions(engine: &mut Engine, redis: &Arc<dyn RedisAccess>) {
    register_call_next!(engine, redis);
    register_call_next!(engine, redis, a1);
    register_call_next!(engine, redis, a1, a2);
    register_call_next!(engine, redis, a1, a2, a3);
    register_call_next!(engine, redis, a1, a2, a3, a4);
    register_call_next!(engine, redis, a1, a2, a3, a4, a5);
    register_call_next!(engine, redis, a1, a2, a3, a4, a5, a6);
    register_call_next!(engine, redis, a1, a2, a3, a4, a5, a6, a7);
    register_call_next!(engine, redis, a1, a2, a3, a4, a5, a6, a7, a8);
    let r = Arc::clone(redis);
    engine.register_fn("call_next", move |args: Array| -> Fallible<Dynamic> {
        let args: Vec<Vec<u8>> = args.iter().map(to_argument).collect();
        let reply = r.call_next(&args).map_err(raise)?;
        to_dynamic(&reply).map_err(raise)
    });
    let r = Arc::clone(redis);
    engine.register_fn("override_reply", move |value: Dynamic| -> Fallible<()> {
        r.override_reply(to_core(&value)).map_err(raise)
    });
    let r = Arc::clone(redis);
    engine.register_fn("get_command", move || -> Fallible<Dynamic> {
        let command = r.get_command().map_err(raise)?;
        let record =
            gears_core::Record::List(command.into_iter().map(gears_core::Record::from).collect());
        to_dynamic(&record).map_err(raise)
    });
    engine.register_fn("flat_error", |message: Dynamic| {
        format!("-{}", text(&message))
    });
}

/// `register_timer(seconds, f)` / `register_timer(seconds, f, key)`: Python's `registerTE` in
/// Rhai. Calls `f()` every `seconds` on the master, on Redis's main thread (a sync timer
/// registration of the script's session); an error stops it. With `key`, the timer lives while
/// that key holds it; `false` if the key holds something else, else `true`.
pub(crate) fn register_timer(
    engine: &mut Engine,
    state: &crate::state::SharedState,
    redis: &Arc<dyn RedisAccess>,
) {
    let (st, r) = (state.clone(), Arc::clone(redis));
    engine.register_fn(
        "register_timer",
        move |seconds: Dynamic, f: Dynamic| -> Fallible<bool> {
            timer(&st, &*r, seconds, f, Dynamic::UNIT)
        },
    );
    let (st, r) = (state.clone(), Arc::clone(redis));
    engine.register_fn(
        "register_timer",
        move |seconds: Dynamic, f: Dynamic, key: Dynamic| -> Fallible<bool> {
            timer(&st, &*r, seconds, f, key)
        },
    );
}

fn timer(
    state: &crate::state::SharedState,
    redis: &dyn RedisAccess,
    seconds: Dynamic,
    f: Dynamic,
    key: Dynamic,
) -> Fallible<bool> {
    let Some(callback) = f.flatten().try_cast::<FnPtr>() else {
        return script_error("callback must be a function");
    };
    let Ok(seconds) = seconds.as_int() else {
        return script_error("time argument must be a long");
    };
    let key = if key.is_unit() {
        None
    } else if let Ok(blob) = key.as_blob_ref() {
        Some(blob.to_vec())
    } else if key.is_string() {
        Some(text(&key).into_bytes())
    } else {
        return script_error("key argument must be a string");
    };
    gears_core::timer::check_time_event(seconds, key.as_deref()).map_err(raise)?;
    state.check_can_register().map_err(raise)?;
    if let Some(key) = &key {
        if !redis.timer_key_free(key).map_err(raise)? {
            return Ok(false);
        }
    }
    let id = state
        .add_callback_without_arguments(callback)
        .map_err(raise)?;
    let spec = gears_core::timer::time_event(
        gears_core::Language::Rhai,
        seconds,
        key,
        id,
        format!("register_timer({seconds})"),
    )
    .map_err(raise)?;
    state.add_registration(spec).map_err(raise)?;
    Ok(true)
}
