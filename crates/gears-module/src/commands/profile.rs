//! `RG.PYPROFILE STATS <session> [order]` and `RG.PYPROFILE RESET <session>`: what cProfile
//! recorded of a Python session's callbacks while `ProfileExecutions` was 1 (see
//! `gears_python`'s `profile`), with RedisGears 1.2's replies and errors.
//!
//! A session is a script that registered pipelines (`RG.PYDUMPSESSIONS` lists them), or a
//! script's `run()` while its execution is kept (`UNBLOCKING`: until `RG.DROPEXECUTION` or
//! `MaxExecutions`), by its execution id. Both belong to the ACL user who sent the script: another
//! user gets `session does not exists`, unless they may run `CLIENT KILL`.
//!
//! `STATS` makes the pstats text on a worker: it needs the GIL, which Redis's main thread must
//! not wait for. `order` is a pstats column (`tottime`, RedisGears 1.2's order, by default; 1.2
//! ignored the argument).

use std::sync::Arc;

use gears_core::{Language, Profiler, ReplyValue};
use redis_module::{raw, Context, RedisError, RedisResult, RedisString, RedisValue};

use super::docs::Arg;
use crate::executions::commands::is_admin;
use crate::guard::guarded;
use crate::host::{BlockedReply, Caller};

const NO_SESSION: &str = "session does not exists";
/// The order of RedisGears 1.2 (`internal time`).
const DEFAULT_ORDER: &str = "tottime";

pub(crate) fn py_profile(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guarded(|| {
        if args.len() < 2 {
            return Err(RedisError::WrongArity);
        }
        let subcommand = args[1].to_string_lossy();
        if subcommand.eq_ignore_ascii_case("stats") {
            stats(ctx, &args[2..])
        } else if subcommand.eq_ignore_ascii_case("reset") {
            reset(ctx, &args[2..])
        } else {
            Err(RedisError::Str("Wrong subcommand given to RG.PYPROFILE"))
        }
    })
}

/// `STATS <session> [order]`: the pstats text, made on a worker.
fn stats(ctx: &Context, args: &[RedisString]) -> RedisResult {
    if args.is_empty() || args.len() > 2 {
        return Err(RedisError::WrongArity);
    }
    let id = args[0].to_string_lossy();
    let order = args
        .get(1)
        .map(|o| o.to_string_lossy())
        .unwrap_or_else(|| DEFAULT_ORDER.to_string());
    let profiler = find(ctx, &id).ok_or(RedisError::Str(NO_SESSION))?;
    let gears = crate::loaded()?;
    let client = BlockedReply::block(ctx, super::CAN_NOT_BLOCK)?;
    gears.workers.submit(move || {
        let reply = match profiler.stats(&order) {
            Ok(Some(text)) => ReplyValue::Bulk(text.into_bytes()),
            Ok(None) => ReplyValue::Error(format!(
                "session {id} has no profile information (profiling is on while \
                 ProfileExecutions is 1)"
            )),
            Err(e) => ReplyValue::Error(e),
        };
        client.reply(&reply);
    });
    Ok(RedisValue::NoReply)
}

/// `RESET <session>`: forgets what was profiled; `OK`.
fn reset(ctx: &Context, args: &[RedisString]) -> RedisResult {
    if args.len() != 1 {
        return Err(RedisError::WrongArity);
    }
    let profiler = find(ctx, &args[0].to_string_lossy()).ok_or(RedisError::Str(NO_SESSION))?;
    profiler.reset();
    Ok(RedisValue::SimpleStringStatic("OK"))
}

/// The profiler of the caller's Python session `id`: a live session's, else a kept `run()`
/// execution's.
fn find(ctx: &Context, id: &str) -> Option<Arc<dyn Profiler>> {
    let caller = Caller::of(ctx);
    let mine = |user: &[u8]| user == caller.user.as_slice() || is_admin(ctx, &caller);
    let registrations = crate::registrations::all();
    let from_session = crate::registrations::sessions::all()
        .into_iter()
        .find(|s| s.id == id && s.language == Language::Python && mine(&s.user))
        .and_then(|session| {
            session
                .live()
                .find_map(|rid| registrations.iter().find(|r| &r.id == rid))
                .and_then(|registration| registration.session.profiler())
        });
    from_session.or_else(|| {
        crate::gears()?
            .executions
            .get(id)
            .filter(|e| !e.registered && e.language == Language::Python && mine(&e.caller.user))?
            .profiler()
    })
}

const SESSION_ARG: Arg = Arg {
    name: "session",
    kind: raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_STRING,
    token: None,
    optional: false,
    multiple: false,
    summary: "a session id (RG.PYDUMPSESSIONS), or the id of a kept run() execution",
    subargs: &[],
};

static STATS_ARGS: [Arg; 2] = [
    SESSION_ARG,
    Arg {
        name: "order",
        kind: raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_STRING,
        token: None,
        optional: true,
        multiple: false,
        summary: "a pstats sort column: tottime (default), cumtime, ncalls, name, ...",
        subargs: &[],
    },
];

static RESET_ARGS: [Arg; 1] = [SESSION_ARG];

static SUBCOMMANDS: [Arg; 2] = [
    Arg {
        name: "stats",
        kind: raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_BLOCK,
        token: Some("STATS"),
        optional: false,
        multiple: false,
        summary: "the session's profile as pstats text",
        subargs: &STATS_ARGS,
    },
    Arg {
        name: "reset",
        kind: raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_BLOCK,
        token: Some("RESET"),
        optional: false,
        multiple: false,
        summary: "forget the session's profile",
        subargs: &RESET_ARGS,
    },
];

/// `RG.PYPROFILE`'s arguments, as `COMMAND DOCS` shows them.
pub(crate) static PROFILE_ARGS: [Arg; 1] = [Arg {
    name: "subcommand",
    kind: raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_ONEOF,
    token: None,
    optional: false,
    multiple: false,
    summary: "STATS or RESET",
    subargs: &SUBCOMMANDS,
}];
