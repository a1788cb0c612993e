//! Running a command for a script (`execute()`), with the protections a Lua script gets.
//!
//! Every command goes through `RedisModule_Call` with:
//! - `S` (script mode): commands not allowed in scripts (`WAIT`, `SYNC`, `DEBUG`, `SHUTDOWN`,
//!   `MULTI`, ...) are refused, and so are writes on a read-only replica, with too few good
//!   replicas (`min-replicas-to-write`) or after a disk error;
//! - `M`: `deny-oom` commands are refused over `maxmemory`;
//! - `C` with the execution's ACL user attached to the context: the command, its keys and its
//!   channels are checked against that user's ACL rules;
//! - `W` while clients are paused (`CLIENT PAUSE WRITE`, failover, shutdown) and in read-only
//!   mode (`RG.EXPLAIN`): a write is refused instead of reaching the replication stream;
//! - `E`: errors come back as replies, `!`: writes are replicated.
//!
//! Redis 7.0 words an ACL refusal under `C` differently from a direct call (`acl verification
//! failed, ...`); Gears rewrites it into the `NOPERM` text the same user gets calling the command
//! directly on that version (Redis 7.2+ and Valkey already use it).

use gears_core::{GearsError, Record, Result};
use redis_module::{raw, CallOptionsBuilder, CallReply, CallResult, Context};

use super::command_info::command_of;
use super::user::AclUser;
use crate::registrations::hooks::{ActingUser, InternalCall};

/// How a command may act.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// Whatever the user's ACL rules allow.
    ReadWrite,
    /// No writes and no side effects (RG.EXPLAIN).
    ReadOnly,
    /// A session made again (after a restart, on a replica): commands with side effects are
    /// not run again (their effects are in the data already) and reply nil.
    Replay,
    /// A sync registration inside a keyspace notification on a server without post-notification
    /// jobs (Redis 7.0): a write there could free what the command that raised the event is
    /// using, so commands with side effects are refused.
    InsideNotification,
}

/// What running a command gave.
pub(crate) enum Called {
    Reply(Result<Record>),
    /// A write refused because clients are paused: try again once the pause ends.
    Paused,
}

/// True while clients are paused for writes (CLIENT PAUSE, a failover, a shutdown in progress).
pub(crate) fn writes_paused() -> bool {
    // SAFETY: no arguments; reads (and may end) the pause state under the Redis lock.
    unsafe { raw::RedisModule_AvoidReplicaTraffic.unwrap()() != 0 }
}

/// Runs `args` on a locked context as `user`.
pub(crate) fn call_as(
    ctx: &Context,
    user: Option<&AclUser>,
    access: Access,
    args: &[Vec<u8>],
) -> Called {
    let Some((command, rest)) = args.split_first() else {
        return Called::Reply(Err(GearsError::Redis("no command given".into())));
    };
    let name = String::from_utf8_lossy(command).into_owned();
    if name.contains('\0') {
        return Called::Reply(Err(GearsError::Redis(format!(
            "ERR unknown command '{}'",
            name.replace('\0', "\\x00")
        ))));
    }
    if is_never_allowed(&name) {
        return Called::Reply(Err(GearsError::Redis(format!(
            "ERR command '{}' is not allowed on script mode",
            name.to_ascii_lowercase()
        ))));
    }
    if access == Access::ReadOnly {
        if let Some(refused) = refuse_side_effects(ctx, args) {
            return Called::Reply(Err(refused));
        }
    }
    if access == Access::Replay && refuse_side_effects(ctx, args).is_some() {
        return Called::Reply(Ok(Record::Nil));
    }
    if access == Access::InsideNotification {
        if let Some(command) = refuse_side_effects(ctx, args).and(command_of(ctx, args)) {
            return Called::Reply(Err(inside_notification_error(&command.name)));
        }
    }
    let paused = writes_paused();
    // A command that may replicate without being a write (PUBLISH, PFCOUNT, ...) waits for the
    // end of a pause like a write does: Redis postpones the same command sent directly, and its
    // propagation during a pause would stop the server (an assertion).
    if paused && access == Access::ReadWrite && may_replicate(ctx, args) {
        return Called::Paused;
    }
    let user_ref = match user {
        Some(user) => match user.lookup(ctx) {
            Some(found) => Some(found),
            None => return Called::Reply(Err(GearsError::Redis(user.gone_error()))),
        },
        None => None,
    };
    let mut options = CallOptionsBuilder::new()
        .replicate()
        .script_mode()
        .verify_oom()
        .errors_as_replies();
    if let Some(found) = &user_ref {
        // SAFETY: the user stays valid while we hold the lock; it is detached below.
        unsafe { raw::RedisModule_SetContextUser.unwrap()(ctx.ctx, found.as_ptr()) };
        options = options.verify_acl();
    }
    if paused || access != Access::ReadWrite {
        options = options.no_writes();
    }
    let rest: Vec<&[u8]> = rest.iter().map(Vec::as_slice).collect();
    // A hook this command reaches checks the command against this user.
    let _acting = user.map(|user| ActingUser::enter(user.name().as_bytes()));
    let reply: CallResult = ctx.call_ext(&name, &options.build(), rest.as_slice());
    let result = match &reply {
        Ok(reply) => Ok(call_reply_to_record(reply)),
        Err(e) => Err(e
            .to_utf8_string()
            .unwrap_or_else(|| "Failed executing command".to_string())),
    };
    drop(reply);
    if user_ref.is_some() {
        // SAFETY: detaches the user before it is freed.
        unsafe { raw::RedisModule_SetContextUser.unwrap()(ctx.ctx, std::ptr::null()) };
    }
    match result {
        Ok(record) => Called::Reply(Ok(record)),
        Err(text) if is_write_refused(&text) && access == Access::ReadOnly => {
            Called::Reply(Err(read_only_error(&name)))
        }
        Err(text) if is_write_refused(&text) && access == Access::Replay => {
            Called::Reply(Ok(Record::Nil))
        }
        Err(text) if is_write_refused(&text) && access == Access::InsideNotification => {
            Called::Reply(Err(inside_notification_error(&name)))
        }
        Err(text) if is_write_refused(&text) && paused => Called::Paused,
        Err(text) => Called::Reply(Err(GearsError::Redis(acl_text(ctx, &text, args)))),
    }
}

/// Commands an execution never runs, whatever the server's own script rules say (Redis 7.0
/// refuses them in script mode; newer servers allow some, such as `WAIT`): they wait for
/// replicas, take over the connection, or stop or reconfigure the server.
fn is_never_allowed(command: &str) -> bool {
    const NEVER: &[&str] = &[
        "wait",
        "waitaof",
        "sync",
        "psync",
        "monitor",
        "shutdown",
        "debug",
        "failover",
        "replicaof",
        "slaveof",
        "multi",
        "exec",
        "discard",
        "watch",
        "subscribe",
        "psubscribe",
        "ssubscribe",
        "module",
    ];
    NEVER
        .iter()
        .any(|never| command.eq_ignore_ascii_case(never))
}

/// True for a command that may be propagated to replicas and the AOF: a write, or one of the
/// commands Redis flags `may_replicate` (which `COMMAND INFO` does not show on Redis 7.0).
fn may_replicate(ctx: &Context, args: &[Vec<u8>]) -> bool {
    const MAY_REPLICATE: &[&str] = &[
        "eval",
        "evalsha",
        "fcall",
        "pfcount",
        "publish",
        "spublish",
        "cluster|setslot",
    ];
    command_of(ctx, args).is_some_and(|command| {
        MAY_REPLICATE.contains(&command.name.as_str())
            || command.has("write")
            || command.has("may_replicate")
    })
}

/// `W`'s refusal: `ERR Write command 'set' was called while write is not allowed.`
fn is_write_refused(text: &str) -> bool {
    let text = text.strip_prefix("ERR ").unwrap_or(text);
    text.starts_with("Write command '") && text.ends_with("while write is not allowed.")
}

fn inside_notification_error(command: &str) -> GearsError {
    GearsError::Redis(format!(
        "ERR a sync registration can not run '{}' on this server: Redis 7.0 has no \
         post-notification jobs, and a write inside the command that raised the event could \
         crash it (use mode='async', Redis 7.2+ or Valkey, or SyncRegistrationWrites 1)",
        command.to_ascii_lowercase()
    ))
}

fn read_only_error(command: &str) -> GearsError {
    GearsError::Redis(format!(
        "ERR RG.EXPLAIN runs the script read-only: '{}' is not allowed",
        command.to_ascii_lowercase()
    ))
}

/// In read-only mode only commands flagged `readonly` run (and `PING`, `ECHO`, `TIME`), and
/// none that is also `admin`, `pubsub` or `may_replicate`: a subcommand is judged by its own
/// flags (`SLOWLOG RESET`, `MEMORY PURGE` are refused).
/// True if the command writes or has other side effects (what a read-only run refuses).
pub(crate) fn has_side_effects(ctx: &Context, args: &[Vec<u8>]) -> bool {
    refuse_side_effects(ctx, args).is_some()
}

fn refuse_side_effects(ctx: &Context, args: &[Vec<u8>]) -> Option<GearsError> {
    let command = command_of(ctx, args)?;
    let harmless = matches!(command.name.as_str(), "ping" | "echo" | "time");
    let allowed = (harmless || command.has("readonly"))
        && !["admin", "pubsub", "may_replicate", "write"]
            .iter()
            .any(|f| command.has(f));
    (!allowed).then(|| read_only_error(&command.name))
}

/// The `NOPERM` text a direct call gets, for Redis 7.0's `acl verification failed, ...`.
fn acl_text(ctx: &Context, text: &str, args: &[Vec<u8>]) -> String {
    let Some(reason) = text
        .strip_prefix("ERR ")
        .unwrap_or(text)
        .strip_prefix("acl verification failed, ")
    else {
        return text.to_string();
    };
    if reason.starts_with("can't run this command") {
        return format!(
            "NOPERM this user has no permissions to run the '{}' command",
            full_command_name(ctx, args)
        );
    }
    if reason.starts_with("can't access at least one of the keys") {
        return "NOPERM this user has no permissions to access one of the keys used as arguments"
            .into();
    }
    if reason.starts_with("can't publish to the channel") {
        return "NOPERM this user has no permissions to access one of the channels used as \
                arguments"
            .into();
    }
    format!("NOPERM {}", reason.trim_end_matches('.'))
}

/// `acl|setuser` for a subcommand, `get` for a plain command, as Redis names them.
fn full_command_name(ctx: &Context, args: &[Vec<u8>]) -> String {
    command_of(ctx, args)
        .map(|command| command.name.clone())
        .unwrap_or_else(|| String::from_utf8_lossy(&args[0]).to_ascii_lowercase())
}

/// A call reply as a record.
pub(crate) fn call_reply_to_record(reply: &CallReply) -> Record {
    match reply {
        CallReply::I64(i) => Record::Integer(i.to_i64()),
        CallReply::String(s) => Record::from(s.as_bytes().to_vec()),
        CallReply::Array(items) => Record::List(items.iter().map(element).collect()),
        CallReply::Null(_) | CallReply::Unknown => Record::Nil,
        CallReply::Map(map) => {
            Record::Map(map.iter().map(|(k, v)| (element(k), element(v))).collect())
        }
        CallReply::Set(set) => Record::List(set.iter().map(element).collect()),
        CallReply::Bool(b) => Record::Bool(b.to_bool()),
        CallReply::Double(d) => Record::Float(d.to_double()),
        CallReply::BigNumber(n) => Record::String(n.to_string().unwrap_or_default()),
        CallReply::VerbatimString(v) => {
            Record::from(v.to_parts().map(|(_, bytes)| bytes).unwrap_or_default())
        }
    }
}

fn element(item: CallResult) -> Record {
    match item {
        Ok(reply) => call_reply_to_record(&reply),
        Err(e) => Record::String(e.to_utf8_string().unwrap_or_default()),
    }
}

/// Runs a command for Gears itself (reading values, `CONFIG GET`): no ACL user, no script
/// protections, nothing replicated.
pub(crate) fn call_internal(ctx: &Context, args: &[Vec<u8>]) -> Result<Record> {
    let Some((command, rest)) = args.split_first() else {
        return Err(GearsError::Internal("no command given".into()));
    };
    let name = String::from_utf8_lossy(command);
    let options = CallOptionsBuilder::new().errors_as_replies().build();
    let rest: Vec<&[u8]> = rest.iter().map(Vec::as_slice).collect();
    let reply: CallResult = {
        let _internal = InternalCall::enter();
        ctx.call_ext(&name, &options, rest.as_slice())
    };
    match &reply {
        Ok(reply) => Ok(call_reply_to_record(reply)),
        Err(e) => Err(GearsError::Redis(e.to_utf8_string().unwrap_or_default())),
    }
}
