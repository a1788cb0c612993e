//! `RG.INNERHOOK <command> [args...]`: what a hooked command becomes (see [`super::hooks`]):
//! checks that its sender may run the command, then runs the hook the chain selects, or the
//! real command with the KeysReader registrations of its events able to replace its reply.

use std::sync::{Arc, Mutex, PoisonError};

use gears_core::{encode_command_reply, ExecutionMode, GearsError, Record, ReplyValue};
use redis_module::{raw, Context, RedisError, RedisResult, RedisString, RedisValue};

use super::hooks::{select, CurrentCommand, NextHook, Selected, ACTING, BYPASS, INNER_HOOK};
use super::run::{self, Answer, Call};
use super::{command_trigger, Registration};
use crate::guard::guarded;
use crate::host::{call_internal, may_block, BlockedReply};
use crate::reply::send;

/// `RG.INNERHOOK <command> [args...]`: runs a hooked command (see the module docs).
pub(crate) fn inner_hook(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guarded(|| {
        // Only the command filter inserts RG.INNERHOOK; one sent directly arrives marked by a
        // second one in front (see `hooks::on_command`).
        if args.len() < 2
            || args[1]
                .as_slice()
                .eq_ignore_ascii_case(INNER_HOOK.as_bytes())
        {
            return Err(RedisError::Str(
                "ERR RG.INNERHOOK is internal to Gears (command hooks)",
            ));
        }
        let argv: Vec<&[u8]> = args[1..].iter().map(|a| a.as_slice()).collect();
        // SAFETY: a plain query of the command's context.
        let flags = unsafe { raw::RedisModule_GetContextFlags.unwrap()(ctx.ctx) } as u32;
        if flags & (raw::REDISMODULE_CTX_FLAGS_REPLICATED | raw::REDISMODULE_CTX_FLAGS_LOADING) != 0
        {
            return forward(ctx, &argv, "!E");
        }
        check_acl(ctx, &argv)?;
        match select(&argv) {
            Selected::Command(registration) => run_hook(ctx, &registration, &argv),
            Selected::Keys => run_with_keys_hooks(ctx, &argv),
            Selected::Nothing => forward(ctx, &argv, &real_call_flags()),
        }
    })
}

/// The flags of the real command's call: replicated, errors as replies, `deny-oom` and script
/// rules as for a client (a write on a read-only replica is refused), no writes while paused.
fn real_call_flags() -> String {
    let paused = crate::host::call::writes_paused();
    format!("!EMS{}", if paused { "W" } else { "" })
}

/// The user the command runs for must be allowed to run it: Gears' own `execute()` as its
/// execution's user, anyone else as their client's user.
fn check_acl(ctx: &Context, argv: &[&[u8]]) -> Result<(), RedisError> {
    let acting = ACTING.with(|acting| acting.borrow().last().cloned());
    let Some(name) = acting.or_else(|| client_user(ctx)) else {
        return Err(RedisError::Str(
            "NOPERM Gears could not tell which user sent this hooked command",
        ));
    };
    if crate::host::may_run(ctx, &name, argv) {
        return Ok(());
    }
    // The reason, worded as Redis words a direct call's refusal.
    let mut dry_run = vec![b"ACL".to_vec(), b"DRYRUN".to_vec(), name];
    dry_run.extend(argv.iter().map(|a| a.to_vec()));
    let reason = match call_internal(ctx, &dry_run) {
        Ok(Record::String(reason)) => reason,
        Err(GearsError::Redis(reason)) => reason,
        _ => String::new(),
    };
    if reason.contains(" key") {
        return Err(RedisError::Str(
            "NOPERM this user has no permissions to access one of the keys used as arguments",
        ));
    }
    if reason.contains(" channel") {
        return Err(RedisError::Str(
            "NOPERM this user has no permissions to access one of the channels used as arguments",
        ));
    }
    let command = String::from_utf8_lossy(argv[0]).to_ascii_lowercase();
    Err(RedisError::String(format!(
        "NOPERM this user has no permissions to run the '{command}' command"
    )))
}

/// The name of the user of the command's client; `None` when there is none to tell (a module's
/// call made without a user: on Redis 7.0 asking its user's name would crash the server).
fn client_user(ctx: &Context) -> Option<Vec<u8>> {
    // SAFETY: plain queries of the command's client; the strings are freed here.
    unsafe {
        let flags = raw::RedisModule_GetContextFlags.unwrap()(ctx.ctx) as u32;
        let name = if flags & raw::REDISMODULE_CTX_FLAGS_LUA != 0 {
            // A script's client (EVAL, FCALL) runs as its caller's user.
            raw::RedisModule_GetCurrentUserName.unwrap()(ctx.ctx)
        } else {
            // A client's, found by its id; a client of no connection (a module's call) is not
            // found, and one without a user gives none.
            let id = raw::RedisModule_GetClientId.unwrap()(ctx.ctx);
            if id == 0 {
                return None;
            }
            raw::RedisModule_GetClientUserNameById.unwrap()(ctx.ctx, id)
        };
        if name.is_null() {
            return None;
        }
        let mut len = 0usize;
        let ptr = raw::RedisModule_StringPtrLen.unwrap()(name, &mut len);
        let bytes = std::slice::from_raw_parts(ptr.cast::<u8>(), len).to_vec();
        raw::RedisModule_FreeString.unwrap()(ctx.ctx, name);
        Some(bytes)
    }
}

/// What a CommandReader hook's run knows of its command.
pub(crate) enum HookCall {
    /// A CommandReader hook: `call_next` goes down the chain of `command`.
    Command {
        /// The command as the client sent it, and its arguments.
        argv: Vec<Vec<u8>>,
        /// Lower case.
        name: String,
        registration: String,
    },
    /// A KeysReader registration run by an event of a hooked command.
    Keys(Arc<CommandCall>),
}

impl HookCall {
    pub fn keys(call: Arc<CommandCall>) -> Arc<HookCall> {
        Arc::new(HookCall::Keys(call))
    }

    /// The arguments of the command (`get_command()`).
    pub fn command(&self) -> Vec<Vec<u8>> {
        match self {
            HookCall::Command { argv, .. } => argv.clone(),
            HookCall::Keys(call) => call.args.clone(),
        }
    }

    /// The chain position `call_next` continues from: (command, hook id).
    pub fn next_of(&self) -> Option<(&[u8], &str, &str)> {
        match self {
            HookCall::Command {
                argv,
                name,
                registration,
            } => Some((argv[0].as_slice(), name, registration)),
            HookCall::Keys(_) => None,
        }
    }

    pub fn override_reply(&self, value: &Record) -> gears_core::Result<()> {
        match self {
            HookCall::Keys(call) => call.override_reply(value),
            HookCall::Command { .. } => Err(gears_core::no_hook_context()),
        }
    }
}

fn run_hook(ctx: &Context, registration: &Arc<Registration>, argv: &[&[u8]]) -> RedisResult {
    let Some(trigger) = command_trigger(registration) else {
        return forward(ctx, argv, &real_call_flags());
    };
    // SAFETY: a plain query of the command's context.
    let db = unsafe { raw::RedisModule_GetSelectedDb.unwrap()(ctx.ctx) };
    let owned: Vec<Vec<u8>> = argv.iter().map(|a| a.to_vec()).collect();
    let mut call = Call {
        record: Record::List(owned.iter().map(|a| Record::from(a.clone())).collect()),
        db,
        hook: Some(Arc::new(HookCall::Command {
            name: String::from_utf8_lossy(argv[0]).to_ascii_lowercase(),
            argv: owned,
            registration: registration.id.clone(),
        })),
        answer: Answer::OneResult,
        client: None,
        on_done: None,
    };
    if registration.mode() == ExecutionMode::Sync {
        let _next = NextHook::clear();
        let reply = run::call_sync(registration, call);
        return send(ctx, &reply);
    }
    if !may_block(ctx) {
        return Err(RedisError::Str(super::triggers::CAN_NOT_BLOCK));
    }
    call.client = Some(BlockedReply::block(ctx, super::triggers::CAN_NOT_BLOCK)?);
    run::call_async(registration, call, trigger.in_order);
    Ok(RedisValue::NoReply)
}

/// A hooked command running with KeysReader hooks: what their runs may do to its reply.
pub(crate) struct CommandCall {
    pub args: Vec<Vec<u8>>,
    state: Mutex<CallState>,
}

#[derive(Default)]
struct CallState {
    overridden: Option<ReplyValue>,
    real: Option<ReplyValue>,
    /// The blocked client, once async runs hold the command: the last one to end replies.
    client: Option<BlockedReply>,
}

impl CommandCall {
    fn state(&self) -> std::sync::MutexGuard<'_, CallState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn override_reply(&self, value: &Record) -> gears_core::Result<()> {
        let mut state = self.state();
        if state.overridden.is_some() {
            return Err(GearsError::Redis("Can only override reply once".into()));
        }
        state.overridden = Some(encode_command_reply(value));
        Ok(())
    }
}

impl Drop for CommandCall {
    fn drop(&mut self) {
        let state = std::mem::take(&mut *self.state());
        if let Some(client) = state.client {
            client.reply(&state.overridden.or(state.real).unwrap_or_else(|| {
                ReplyValue::Error("Failed getting results from command execution".into())
            }));
        }
    }
}

/// Runs the real command; the registrations its keyspace events run may override its reply.
fn run_with_keys_hooks(ctx: &Context, argv: &[&[u8]]) -> RedisResult {
    let call = Arc::new(CommandCall {
        args: argv.iter().map(|a| a.to_vec()).collect(),
        state: Mutex::new(CallState::default()),
    });
    let reply = {
        let _current = CurrentCommand::enter(call.clone());
        RealReply::call(ctx, argv, &real_call_flags())
    };
    let reply = reply?;
    // Async runs hold the command: its client waits for the last of them.
    if Arc::strong_count(&call) > 1 && may_block(ctx) {
        call.state().real = Some(reply.value());
        drop(reply);
        let client = BlockedReply::block(ctx, super::triggers::CAN_NOT_BLOCK)?;
        call.state().client = Some(client);
        drop(call);
        return Ok(RedisValue::NoReply);
    }
    let overridden = call.state().overridden.take();
    match overridden {
        Some(value) => send(ctx, &value),
        None => {
            reply.forward(ctx);
            Ok(RedisValue::NoReply)
        }
    }
}

/// Runs the command unhooked and forwards its reply as is.
fn forward(ctx: &Context, argv: &[&[u8]], flags: &str) -> RedisResult {
    RealReply::call(ctx, argv, flags)?.forward(ctx);
    Ok(RedisValue::NoReply)
}

/// The reply of a `RedisModule_Call`, freed when dropped.
struct RealReply(*mut raw::RedisModuleCallReply);

impl RealReply {
    fn call(ctx: &Context, argv: &[&[u8]], flags: &str) -> Result<RealReply, RedisError> {
        let command =
            std::ffi::CString::new(argv[0]).map_err(|_| RedisError::Str("ERR unknown command"))?;
        let format = std::ffi::CString::new(format!("{flags}v")).unwrap_or_default();
        // SAFETY: module strings of this context, freed after the call; `v` takes the array
        // and its length.
        unsafe {
            let create = raw::RedisModule_CreateString.unwrap();
            let mut args: Vec<*mut raw::RedisModuleString> = argv[1..]
                .iter()
                .map(|a| create(ctx.ctx, a.as_ptr().cast(), a.len()))
                .collect();
            BYPASS.with(|bypass| bypass.set(true));
            let reply = raw::RedisModule_Call.unwrap()(
                ctx.ctx,
                command.as_ptr(),
                format.as_ptr(),
                args.as_mut_ptr(),
                args.len(),
            );
            BYPASS.with(|bypass| bypass.set(false));
            for arg in args {
                raw::RedisModule_FreeString.unwrap()(ctx.ctx, arg);
            }
            if reply.is_null() {
                return Err(RedisError::String(format!(
                    "ERR unknown command '{}'",
                    String::from_utf8_lossy(argv[0])
                )));
            }
            Ok(RealReply(reply))
        }
    }

    fn forward(&self, ctx: &Context) {
        // SAFETY: a plain query of the client's protocol.
        let flags = unsafe { raw::RedisModule_GetContextFlags.unwrap()(ctx.ctx) } as u32;
        if flags & raw::REDISMODULE_CTX_FLAGS_RESP3 != 0 {
            // The call's reply is RESP2: a RESP3 client gets it through the reply API, which
            // speaks its protocol (a RESP2 `$-1` left redis-py's RESP3 parser waiting).
            let _ = send(ctx, &self.value());
            return;
        }
        // SAFETY: a live call reply, copied into the client's reply.
        unsafe { raw::RedisModule_ReplyWithCallReply.unwrap()(ctx.ctx, self.0) };
    }

    /// The reply as a value (status and bulk strings kept apart), for a later reply.
    fn value(&self) -> ReplyValue {
        let mut len = 0usize;
        // SAFETY: a live call reply; its protocol bytes live as long as it.
        let proto = unsafe {
            let ptr = raw::RedisModule_CallReplyProto.unwrap()(self.0, &mut len);
            std::slice::from_raw_parts(ptr.cast::<u8>(), len)
        };
        crate::resp::parse(proto)
            .map(|(value, _)| value)
            .unwrap_or_else(|| ReplyValue::Error("ERR Gears could not read the reply".into()))
    }
}

impl Drop for RealReply {
    fn drop(&mut self) {
        // SAFETY: a call reply of RedisModule_Call, freed once.
        unsafe { raw::RedisModule_FreeCallReply.unwrap()(self.0) };
    }
}
