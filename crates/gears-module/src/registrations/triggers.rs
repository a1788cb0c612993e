//! `RG.TRIGGER <trigger> [args...]` and `RG.TRIGGERONKEY <trigger> <key> [args...]`: run the
//! CommandReader registration named `trigger` with the record `[trigger, args...]`, acting as
//! the user who registered it, in the caller's database. A sync one runs on the caller's
//! thread and replies at once; the others run on a worker while the client waits. The reply is
//! the results array, or the run's first error.

use std::sync::Arc;

use gears_core::{ExecutionMode, Record};
use redis_module::{raw, Context, RedisError, RedisResult, RedisString, RedisValue};

use super::run::{self, Answer, Call};
use super::{command_trigger, Registration};
use crate::guard::guarded;
use crate::host::{may_block, BlockedReply};
use crate::reply::send;

/// The error of a run that is not sync where the client may not block.
pub(crate) const CAN_NOT_BLOCK: &str =
    "ERR can not run a non-sync execution inside a MULTI/LUA (blocking is not allowed) or on \
     loading.";

/// Refuses a trigger name that is already taken, or given twice by one script.
pub(super) fn verify(
    existing: &[Arc<Registration>],
    created: &[Arc<Registration>],
) -> Result<(), String> {
    let name = |r: &Arc<Registration>| {
        command_trigger(r)
            .and_then(|t| t.trigger_name())
            .map(str::to_string)
    };
    for (i, registration) in created.iter().enumerate() {
        let Some(trigger) = name(registration) else {
            continue;
        };
        if existing
            .iter()
            .any(|r| name(r).as_deref() == Some(&trigger))
        {
            return Err("trigger already registered".into());
        }
        if created[..i]
            .iter()
            .any(|r| name(r).as_deref() == Some(&trigger))
        {
            return Err("trigger already registered in this session".into());
        }
    }
    Ok(())
}

/// The registration of a trigger name.
fn find(trigger: &[u8]) -> Option<Arc<Registration>> {
    let trigger = String::from_utf8_lossy(trigger);
    super::all()
        .iter()
        .find(|r| command_trigger(r).and_then(|t| t.trigger_name()) == Some(&*trigger))
        .cloned()
}

pub(crate) fn trigger(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guarded(|| run_trigger(ctx, &args, 2))
}

pub(crate) fn trigger_on_key(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guarded(|| run_trigger(ctx, &args, 3))
}

fn run_trigger(ctx: &Context, args: &[RedisString], min_args: usize) -> RedisResult {
    if args.len() < min_args {
        return Err(RedisError::WrongArity);
    }
    let Some(registration) = find(args[1].as_slice()) else {
        return Err(RedisError::Str("ERR subcommand not found"));
    };
    let Some(trigger) = command_trigger(&registration) else {
        return Err(RedisError::Str("ERR subcommand not found"));
    };
    // SAFETY: a plain query of the command's context.
    let db = unsafe { raw::RedisModule_GetSelectedDb.unwrap()(ctx.ctx) };
    let mut call = Call {
        record: Record::List(
            args[1..]
                .iter()
                .map(|a| Record::from(a.as_slice().to_vec()))
                .collect(),
        ),
        db,
        hook: None,
        answer: Answer::Results,
        client: None,
        on_done: None,
    };
    if registration.mode() == ExecutionMode::Sync {
        // Inside MULTI or a script the client can not wait: a callback that awaits fails
        // there (RedisGears' `Creating async record is not allow`).
        if !may_block(ctx) {
            let reply = run::call_sync(&registration, call);
            return send(ctx, &reply);
        }
        match run::call_sync_or_move(&registration, call) {
            Ok(reply) => return send(ctx, &reply),
            // A callback awaits: the run starts again on a worker, the client waits for it.
            Err(mut call) => {
                call.client = Some(BlockedReply::block(ctx, CAN_NOT_BLOCK)?);
                run::call_async(&registration, call, trigger.in_order);
                return Ok(RedisValue::NoReply);
            }
        }
    }
    if !may_block(ctx) {
        return Err(RedisError::Str(CAN_NOT_BLOCK));
    }
    call.client = Some(BlockedReply::block(ctx, CAN_NOT_BLOCK)?);
    run::call_async(&registration, call, trigger.in_order);
    Ok(RedisValue::NoReply)
}
