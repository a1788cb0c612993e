//! What Gears knows of a command before running it for a script: its full name (`config|get`)
//! and its flags, as `COMMAND INFO` gives them.
//!
//! Asking `COMMAND INFO` costs more than most commands it is asked about (it was a quarter of
//! the server's time in a sync registration that INCRs a counter), so the answers are kept: the
//! command table changes only when a module is loaded or unloaded, and the cache is emptied then
//! (the module-change server event). Unknown names are remembered too, a bounded number of them.

use std::collections::HashMap;
use std::os::raw::c_void;
use std::sync::{Arc, Mutex, PoisonError};

use gears_core::Record;
use redis_module::{raw, CallOptionsBuilder, CallResult, Context};

use super::call::call_reply_to_record;

/// A command as `COMMAND INFO` describes it.
#[derive(Debug)]
pub(crate) struct CommandInfo {
    /// The full lowercase name: `get`, `config|get`.
    pub name: String,
    /// Its flags (`write`, `readonly`, `admin`, ...), lowercase.
    pub flags: Vec<String>,
    /// Where its keys are: the first and last key's positions and the step between keys
    /// (`0, 0, 0` for none; a negative last counts from the end).
    pub first: i64,
    pub last: i64,
    pub step: i64,
    /// True for a command with subcommands (`CONFIG`, `CLIENT`): the second argument names the
    /// subcommand that runs.
    container: bool,
}

impl CommandInfo {
    pub fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
}

/// The most names the cache keeps; past it, it starts again empty (unknown names come from
/// scripts, so their number has no other bound).
const MAX_ENTRIES: usize = 4096;
/// The longest name the cache keeps (a command's full name is far shorter; a script's made-up
/// name may be megabytes, asked about each time).
const MAX_NAME: usize = 128;

type Cache = HashMap<String, Option<Arc<CommandInfo>>>;

static CACHE: Mutex<Option<Cache>> = Mutex::new(None);

/// The command `args` runs (its subcommand for a container command); `None` for an unknown
/// command. Under the Redis lock.
pub(crate) fn command_of(ctx: &Context, args: &[Vec<u8>]) -> Option<Arc<CommandInfo>> {
    let name = String::from_utf8_lossy(args.first()?).to_ascii_lowercase();
    let command = lookup(ctx, name)?;
    match args.get(1) {
        Some(sub) if command.container => {
            let full = format!(
                "{}|{}",
                command.name,
                String::from_utf8_lossy(sub).to_ascii_lowercase()
            );
            // An unknown subcommand is judged as its container.
            lookup(ctx, full).or(Some(command))
        }
        _ => Some(command),
    }
}

/// The command named `name` exactly (`set`, `config|get`); `None` for an unknown one. Under the
/// Redis lock.
pub(crate) fn describe(ctx: &Context, name: &str) -> Option<Arc<CommandInfo>> {
    lookup(ctx, name.to_ascii_lowercase())
}

fn lookup(ctx: &Context, name: String) -> Option<Arc<CommandInfo>> {
    if let Some(known) = cache().as_ref().and_then(|cache| cache.get(&name)) {
        return known.clone();
    }
    let info = command_info(ctx, &name).map(Arc::new);
    if name.len() > MAX_NAME {
        return info;
    }
    let mut cache = cache();
    let cache = cache.get_or_insert_with(HashMap::new);
    if cache.len() >= MAX_ENTRIES {
        cache.clear();
    }
    cache.insert(name, info.clone());
    info
}

fn cache() -> std::sync::MutexGuard<'static, Option<Cache>> {
    CACHE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Asks `COMMAND INFO` (its reply: name, arity, flags, first key, last key, step, ...,
/// subcommands at index 9).
fn command_info(ctx: &Context, name: &str) -> Option<CommandInfo> {
    let options = CallOptionsBuilder::new().errors_as_replies().build();
    let reply: CallResult = ctx.call_ext("COMMAND", &options, &["INFO", name][..]);
    let Ok(Record::List(infos)) = reply.as_ref().map(call_reply_to_record) else {
        return None;
    };
    let Some(Record::List(info)) = infos.into_iter().next() else {
        return None;
    };
    let flags = match info.get(2) {
        Some(Record::List(flags)) => flags
            .iter()
            .filter_map(|f| match f {
                Record::String(s) => Some(s.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let integer = |i: usize| match info.get(i) {
        Some(Record::Integer(n)) => *n,
        _ => 0,
    };
    let container = matches!(info.get(9), Some(Record::List(subs)) if !subs.is_empty());
    Some(CommandInfo {
        name: name.to_string(),
        flags,
        first: integer(3),
        last: integer(4),
        step: integer(5),
        container,
    })
}

/// Empties the cache when a module is loaded or unloaded (its commands come or go).
pub(crate) fn follow_module_changes(ctx: &Context) -> Result<(), String> {
    super::subscribe_server_event(
        ctx,
        raw::REDISMODULE_EVENT_MODULE_CHANGE,
        Some(module_changed),
        "module changes",
    )
}

unsafe extern "C" fn module_changed(
    _ctx: *mut raw::RedisModuleCtx,
    _event: raw::RedisModuleEvent,
    _subevent: u64,
    _data: *mut c_void,
) {
    let _ = std::panic::catch_unwind(|| *cache() = None);
}
