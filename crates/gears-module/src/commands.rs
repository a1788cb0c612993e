//! The `RG.*EXECUTE` commands and `RG.EXPLAIN`.
//!
//! A command parses its arguments on Redis's main thread, blocks the calling client and queues
//! the work; a worker compiles the script, runs its execution (readers take the Redis lock per
//! batch, callbacks run without it) and answers the blocked client.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use gears_core::{encode_outcome, Executor, Frontend, Language, RedisAccess, ReplyValue};
use redis_module::{Context, ContextFlags, RedisError, RedisResult, RedisString, RedisValue};

use crate::guard::{guarded, panic_message};
use crate::host::{BlockedReply, RedisHost};

pub(crate) fn py_execute(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guarded(|| execute(ctx, args, Language::Python))
}

pub(crate) fn lua_execute(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guarded(|| execute(ctx, args, Language::Lua))
}

pub(crate) fn rhai_execute(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guarded(|| execute(ctx, args, Language::Rhai))
}

/// `RG.EXPLAIN <language> <script>`: the plan the script's `run()` builds, step by step.
pub(crate) fn explain(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guarded(|| {
        if args.len() != 3 {
            return Err(RedisError::WrongArity);
        }
        let language_name = args[1].to_string_lossy();
        let language = Language::parse(&language_name).ok_or_else(|| {
            RedisError::String(format!(
                "unknown language '{language_name}', expected python, lua or rhai"
            ))
        })?;
        let script = script_text(&args[2])?;
        start_job(ctx, language, script, Job::Explain)
    })
}

/// What a queued job does with the compiled script.
#[derive(Clone, Copy)]
enum Job {
    Execute,
    Explain,
}

fn script_text(arg: &RedisString) -> Result<String, RedisError> {
    arg.try_as_str()
        .map(str::to_string)
        .map_err(|_| RedisError::Str("the script must be valid UTF-8"))
}

fn execute(ctx: &Context, args: Vec<RedisString>, language: Language) -> RedisResult {
    if args.len() < 2 {
        return Err(RedisError::WrongArity);
    }
    check_options(&args[2..], language)?;
    let script = script_text(&args[1])?;
    start_job(ctx, language, script, Job::Execute)
}

/// The options after the script, as RedisGears 1.2 spells them.
fn check_options(options: &[RedisString], language: Language) -> Result<(), RedisError> {
    let mut i = 0;
    while i < options.len() {
        let option = options[i].to_string_lossy();
        let value = options.get(i + 1).map(|v| v.to_string_lossy());
        match option.to_ascii_uppercase().as_str() {
            "ID" => {
                let id = value.ok_or(RedisError::Str("ID is missing"))?;
                if id.is_empty()
                    || !id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    return Err(RedisError::Str(
                        "ID must be compose of: ['A'-'Z' | 'a'-'z' | '0' - '9' | '-' | '_']",
                    ));
                }
                i += 2;
            }
            "DESCRIPTION" => {
                value.ok_or(RedisError::Str("DESCRIPTION is missing"))?;
                i += 2;
            }
            "REPLACE_WITH" => {
                value.ok_or(RedisError::Str("REPLACE_WITH is missing"))?;
                return Err(RedisError::Str("REPLACE_WITH is not supported yet"));
            }
            "UNBLOCKING" | "UPGRADE" | "FORCE_REINSTALL_REQUIREMENTS" => {
                return Err(RedisError::String(format!(
                    "{} is not supported yet",
                    option.to_ascii_uppercase()
                )));
            }
            "REQUIREMENTS" if language == Language::Python => {
                return Err(RedisError::Str("REQUIREMENTS is not supported yet"));
            }
            _ => {
                return Err(RedisError::String(format!(
                    "Unknown arguments were given: {option}"
                )))
            }
        }
    }
    Ok(())
}

fn start_job(ctx: &Context, language: Language, script: String, job: Job) -> RedisResult {
    let flags = ctx.get_flags();
    if flags.contains(ContextFlags::MULTI)
        || flags.contains(ContextFlags::LUA)
        || flags.contains(ContextFlags::DENY_BLOCKING)
    {
        return Err(RedisError::Str(
            "Can not run gears inside a multi exec, lua, or when blocking is not allowed",
        ));
    }
    let gears = crate::gears().ok_or(RedisError::Str("Gears is not initialised"))?;
    let blocked = BlockedReply::block(ctx);
    // A job that can not be queued is dropped, and dropping it answers the client (BlockedReply).
    gears
        .workers
        .submit(move || run_job(language, &script, job, blocked));
    Ok(RedisValue::NoReply)
}

/// Runs on a worker. The blocked client is answered whatever happens, a panic included.
fn run_job(language: Language, script: &str, job: Job, blocked: BlockedReply) {
    let host = Arc::new(RedisHost::new());
    let reply = catch_unwind(AssertUnwindSafe(|| compute(language, script, job, &host)))
        .unwrap_or_else(|panic| {
            ReplyValue::Error(format!("Gears internal error: {}", panic_message(&panic)))
        });
    // Whatever happened, this thread must not keep the Redis lock: an atomic block cut short by
    // a panic would freeze the server.
    host.end_atomic();
    blocked.reply(&reply);
}

fn frontend(language: Language) -> Result<Box<dyn Frontend>, String> {
    match language {
        Language::Python => match crate::gears().and_then(|g| g.python_error.clone()) {
            Some(e) => Err(format!("Python is not available: {e}")),
            None => Ok(Box::new(gears_python::PythonFrontend::new())),
        },
        Language::Lua => Ok(Box::new(gears_lua::LuaFrontend::new())),
        Language::Rhai => Ok(Box::new(gears_rhai::RhaiFrontend::new())),
    }
}

fn compute(language: Language, script: &str, job: Job, host: &Arc<RedisHost>) -> ReplyValue {
    let frontend = match frontend(language) {
        Ok(frontend) => frontend,
        Err(e) => return ReplyValue::Error(e),
    };
    let compiled = match frontend.compile(script, host.clone()) {
        Ok(compiled) => compiled,
        Err(e) => return ReplyValue::Error(e.to_string()),
    };
    let Some(plan) = compiled.plans.into_iter().next() else {
        return match job {
            Job::Execute => ReplyValue::Status("OK".into()),
            Job::Explain => ReplyValue::Error("the script does not call run()".into()),
        };
    };
    match job {
        Job::Explain => ReplyValue::Array(
            plan.explain()
                .into_iter()
                .map(|line| ReplyValue::Bulk(line.into_bytes()))
                .collect(),
        ),
        Job::Execute => {
            let mut reader =
                crate::readers::build(&plan.reader, host.clone(), compiled.session.clone());
            let outcome = Executor::new(plan, compiled.session).run(reader.as_mut());
            encode_outcome(&outcome)
        }
    }
}
