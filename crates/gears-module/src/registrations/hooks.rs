//! Command hooks: registrations that replace a Redis command (CommandReader `hook=`), or run
//! inside it and may replace its reply (a KeysReader registration with `commands=[...]`).
//!
//! A command filter, registered at load, looks at every command (clients', scripts', and the
//! ones Gears sends with `RedisModule_Call`). When a hook applies, it inserts `RG.INNERHOOK` in
//! front of the command, and that internal command runs the hook:
//!
//! - the newest CommandReader hook of the command whose key prefix matches one of its keys runs
//!   with the record `[command, args...]`; its one result is the client's reply. `call_next(...)`
//!   in it runs the command again through the hooks registered before it, then the real command.
//! - once no CommandReader hook is left, if a KeysReader registration hooks the command, the
//!   real command runs with the command known to the keyspace events it raises: those
//!   registrations may `override_reply`, and the client waits for their async runs.
//!
//! No loop: a hook never runs again while it runs on this thread (an `execute()` of its own
//! command inside it goes to the hooks below it, then the real command). Before anything runs,
//! the user who sent the command must be allowed to run it (Redis only checked `RG.INNERHOOK`).
//! Commands replicated from a master or loaded from the AOF run unhooked. `RG.INNERHOOK` and
//! what hooks run are in [`super::inner_hook`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use gears_core::registration::{CommandKind, Trigger};
use gears_core::ExecutionMode;
use redis_module::{raw, Context};

use super::{command_trigger, keys_trigger, Registration};

pub(crate) use super::inner_hook::{inner_hook, CommandCall, HookCall};

/// The internal command a hooked command becomes.
pub(crate) const INNER_HOOK: &str = "RG.INNERHOOK";

/// Where a hooked command's keys are (`COMMAND INFO`'s first key, last key, step).
#[derive(Clone, Debug)]
pub(crate) struct HookInfo {
    /// The command, lower case.
    pub command: String,
    first: i64,
    last: i64,
    step: i64,
}

impl HookInfo {
    /// The keys of `argv` (the command first).
    fn keys<'a>(&self, argv: &[&'a [u8]]) -> Vec<&'a [u8]> {
        let count = argv.len() as i64;
        let last = if self.last < 0 {
            count + self.last
        } else {
            self.last
        };
        let mut keys = Vec::new();
        let mut i = self.first;
        while self.first > 0 && self.step > 0 && i <= last && i < count {
            keys.push(argv[i as usize]);
            i += self.step;
        }
        keys
    }
}

/// Commands no hook may take: they change the connection's state (which the command's real run,
/// on another client, would not), administer the server or users (their subcommands are
/// refused in scripts), or are what Gears itself relies on (`COMMAND`).
const NEVER_HOOKED: &[&str] = &[
    "select",
    "swapdb",
    "client",
    "reset",
    "readonly",
    "readwrite",
    "auth",
    "hello",
    "quit",
    "acl",
    "config",
    "module",
    "debug",
    "command",
    "monitor",
    "shutdown",
    "failover",
    "replicaof",
    "slaveof",
    "sync",
    "psync",
    "multi",
    "exec",
    "discard",
    "watch",
    "unwatch",
    "function",
    "script",
    "latency",
    "memory",
    "object",
    "slowlog",
    "save",
    "bgsave",
    "bgrewriteaof",
    "cluster",
    "asking",
];

fn never_hooked(command: &str) -> bool {
    NEVER_HOOKED.contains(&command.to_ascii_lowercase().as_str())
}

/// The commands a registration hooks, checked against `COMMAND INFO` (under the Redis lock).
pub(super) fn hook_infos(ctx: &Context, trigger: &Trigger) -> Result<Vec<HookInfo>, String> {
    match trigger {
        Trigger::Command(command) => match &command.kind {
            CommandKind::Trigger(_) => Ok(Vec::new()),
            CommandKind::Hook {
                command,
                key_prefix,
            } => {
                let Some((info, flags)) = command_info(ctx, command) else {
                    return Err("Can not override an unexisting command".into());
                };
                let has = |flag: &str| flags.iter().any(|f| f == flag);
                if has("noscript") || command.starts_with("rg.") || never_hooked(command) {
                    return Err(
                        "Can not override a command which are not allowed inside a script".into(),
                    );
                }
                if has("movablekeys") && key_prefix.is_some() {
                    return Err(
                        "Can not override a command with moveable keys by key prefix".into(),
                    );
                }
                // A blocking command can not block inside a hook (as inside a script).
                if has("blocking") {
                    return Err(
                        "Can not override a command which are not allowed inside a script".into(),
                    );
                }
                if key_prefix.is_some() && (info.first <= 0 || info.step <= 0) {
                    return Err(
                        "Can not override a command by key prefix with none positive first key"
                            .into(),
                    );
                }
                Ok(vec![info])
            }
        },
        Trigger::Keys(keys) => {
            let every_key = keys.prefix == b"*" && !keys.glob;
            let mut infos = Vec::new();
            for command in keys.commands.iter().flatten() {
                let command = command.to_ascii_lowercase();
                let Some((info, flags)) = command_info(ctx, &command) else {
                    return Err("bad reply on COMMAND command".into());
                };
                let has = |flag: &str| flags.iter().any(|f| f == flag);
                if has("noscript") || command.starts_with("rg.") || never_hooked(&command) {
                    return Err(
                        "Can not hook a command which are not allowed inside a script".into(),
                    );
                }
                if has("movablekeys") && !every_key {
                    return Err("Can not hook a command with moveable keys by key prefix".into());
                }
                if has("blocking") {
                    return Err(
                        "Can not hook a command which are not allowed inside a script".into(),
                    );
                }
                if !every_key && info.first <= 0 {
                    return Err(
                        "Can not hook a command by key prefix with none positive first key".into(),
                    );
                }
                infos.push(info);
            }
            Ok(infos)
        }
        Trigger::Stream(_) | Trigger::Timer(_) => Ok(Vec::new()),
    }
}

/// `COMMAND INFO command`: where its keys are, and its flags; `None` for an unknown command.
fn command_info(ctx: &Context, command: &str) -> Option<(HookInfo, Vec<String>)> {
    let info = crate::host::command_info::describe(ctx, command)?;
    let hook = HookInfo {
        command: command.to_string(),
        first: info.first,
        last: info.last,
        step: info.step,
    };
    Some((hook, info.flags.clone()))
}

/// Refuses a hook on top of a hook that is not sync (its `call_next` would run on a worker,
/// where the next hook could not block its client).
pub(super) fn verify(
    existing: &[Arc<Registration>],
    created: &[Arc<Registration>],
) -> Result<(), String> {
    let newest = |list: &[Arc<Registration>], command: &str| {
        list.iter()
            .rev()
            .find(|r| command_trigger(r).and_then(|t| t.hooked_command()) == Some(command))
            .cloned()
    };
    for (i, registration) in created.iter().enumerate() {
        let Some(command) = command_trigger(registration).and_then(|t| t.hooked_command()) else {
            continue;
        };
        if let Some(earlier) = newest(&created[..i], command) {
            if earlier.mode() != ExecutionMode::Sync {
                return Err(
                    "Can not override a none sync registration which already created on this \
                     session"
                        .into(),
                );
            }
        } else if let Some(below) = newest(existing, command) {
            if below.mode() != ExecutionMode::Sync {
                return Err("Can not override a none sync registration".into());
            }
        }
    }
    Ok(())
}

/// The hooks of one command.
#[derive(Default)]
struct Hooked {
    /// CommandReader hooks, newest first, with where the command's keys are.
    commands: Vec<(Arc<Registration>, HookInfo)>,
    /// KeysReader registrations with this command in `commands`.
    keys: Vec<(Arc<Registration>, HookInfo)>,
}

/// Every hooked command (lower case), rebuilt whenever registrations change.
static TABLE: RwLock<Option<Arc<HashMap<String, Hooked>>>> = RwLock::new(None);
/// How many commands are hooked: the filter's fast path when none is.
static HOOKED: AtomicUsize = AtomicUsize::new(0);

pub(super) fn rebuild(list: &[Arc<Registration>]) {
    let mut table: HashMap<String, Hooked> = HashMap::new();
    for registration in list.iter().rev() {
        for info in &registration.hooks {
            let hooked = table.entry(info.command.clone()).or_default();
            let entry = (registration.clone(), info.clone());
            match &registration.spec.trigger {
                Trigger::Command(_) => hooked.commands.push(entry),
                Trigger::Keys(_) => hooked.keys.push(entry),
                Trigger::Stream(_) | Trigger::Timer(_) => {}
            }
        }
    }
    HOOKED.store(table.len(), Ordering::Release);
    *TABLE.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(table));
}

fn table() -> Option<Arc<HashMap<String, Hooked>>> {
    TABLE.read().unwrap_or_else(PoisonError::into_inner).clone()
}

thread_local! {
    /// Set by `call_next` while its command runs: (command, hook) whose next hooks apply.
    static NEXT: RefCell<Option<(String, String)>> = const { RefCell::new(None) };
    /// The hooks running on this thread: none runs again inside itself.
    static ACTIVE: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    /// The users Gears runs commands as on this thread (innermost last).
    pub(super) static ACTING: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    /// The hooked commands running on this thread (innermost last), for keyspace events.
    static CURRENT: RefCell<Vec<Arc<CommandCall>>> = const { RefCell::new(Vec::new()) };
    /// Set while `RG.INNERHOOK` calls the real command: the filter lets it through once.
    pub(super) static BYPASS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Set while Gears runs a command for itself ([`InternalCall`]): no hook applies to it.
    static INTERNAL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// While alive, the next command this thread runs is Gears' own (reading a value, a group's
/// position, `ACL DRYRUN`): the filter lets it through to the real command, whatever hooks
/// exist. Gears' own reads never went through users' hooks (RedisGears read values with the key
/// API), and such a call has no user for a hook to check.
pub(crate) struct InternalCall;

impl InternalCall {
    pub fn enter() -> Self {
        INTERNAL.with(|internal| internal.set(true));
        InternalCall
    }
}

impl Drop for InternalCall {
    fn drop(&mut self) {
        let _ = INTERNAL.try_with(|internal| internal.set(false));
    }
}

/// While alive, commands of `call_next` go to the hooks after `registration`.
pub(crate) struct NextHook(Option<(String, String)>);

impl NextHook {
    pub fn enter(command: &str, registration: &str) -> Self {
        let entry = Some((command.to_string(), registration.to_string()));
        NextHook(NEXT.with(|next| next.replace(entry)))
    }

    /// Clears the position while a hook runs (its own commands start from the newest hook).
    pub(super) fn clear() -> Self {
        NextHook(NEXT.with(|next| next.replace(None)))
    }
}

impl Drop for NextHook {
    fn drop(&mut self) {
        let previous = self.0.take();
        let _ = NEXT.try_with(|next| *next.borrow_mut() = previous);
    }
}

/// Marks a hook registration as running on this thread while alive.
pub(crate) struct ActiveHook;

impl ActiveHook {
    pub fn enter(id: &str) -> Self {
        ACTIVE.with(|active| active.borrow_mut().push(id.to_string()));
        ActiveHook
    }
}

impl Drop for ActiveHook {
    fn drop(&mut self) {
        let _ = ACTIVE.try_with(|active| active.borrow_mut().pop());
    }
}

/// Records the user Gears runs a command as, while alive (a hook checks it, not the internal
/// command Redis checked).
pub(crate) struct ActingUser;

impl ActingUser {
    pub fn enter(user: &[u8]) -> Self {
        ACTING.with(|acting| acting.borrow_mut().push(user.to_vec()));
        ActingUser
    }
}

impl Drop for ActingUser {
    fn drop(&mut self) {
        let _ = ACTING.try_with(|acting| acting.borrow_mut().pop());
    }
}

/// The hooked command running on this thread, if any.
pub(crate) fn current_command() -> Option<Arc<CommandCall>> {
    CURRENT
        .try_with(|current| current.borrow().last().cloned())
        .ok()
        .flatten()
}

pub(super) struct CurrentCommand;

impl CurrentCommand {
    pub(super) fn enter(call: Arc<CommandCall>) -> Self {
        CURRENT.with(|current| current.borrow_mut().push(call));
        CurrentCommand
    }
}

impl Drop for CurrentCommand {
    fn drop(&mut self) {
        let _ = CURRENT.try_with(|current| current.borrow_mut().pop());
    }
}

/// What a hooked command runs.
pub(super) enum Selected {
    /// This CommandReader hook.
    Command(Arc<Registration>),
    /// The real command, with its keyspace events' hooks.
    Keys,
    /// The real command only.
    Nothing,
}

fn prefix_matches(info: &HookInfo, prefix: &[u8], argv: &[&[u8]]) -> bool {
    info.keys(argv).iter().any(|key| key.starts_with(prefix))
}

/// The hook that `argv` (the command first) goes to on this thread now.
pub(super) fn select(argv: &[&[u8]]) -> Selected {
    let Some(table) = table() else {
        return Selected::Nothing;
    };
    let Some(command) = argv.first() else {
        return Selected::Nothing;
    };
    let name = String::from_utf8_lossy(command).to_ascii_lowercase();
    let Some(hooked) = table.get(&name) else {
        return Selected::Nothing;
    };
    let after = NEXT.with(|next| {
        next.borrow()
            .as_ref()
            .filter(|(command, _)| *command == name)
            .map(|(_, id)| id.clone())
    });
    let mut candidates = hooked.commands.iter();
    if let Some(after) = after {
        // The hooks registered before the one that called `call_next` (all of them gone if
        // it was removed meanwhile: the real command runs).
        let _ = candidates.by_ref().position(|(r, _)| r.id == after);
    }
    let active = |id: &str| ACTIVE.with(|active| active.borrow().iter().any(|a| a == id));
    for (registration, info) in candidates {
        if registration.is_removed() || active(&registration.id) {
            continue;
        }
        let prefix = command_trigger(registration).and_then(|t| match &t.kind {
            CommandKind::Hook { key_prefix, .. } => key_prefix.clone(),
            CommandKind::Trigger(_) => None,
        });
        if prefix.is_none_or(|prefix| prefix_matches(info, &prefix, argv)) {
            return Selected::Command(registration.clone());
        }
    }
    let keys_hooked = hooked.keys.iter().any(|(registration, info)| {
        keys_trigger(registration).is_some_and(|trigger| {
            (trigger.prefix == b"*" && !trigger.glob)
                || info.keys(argv).iter().any(|key| trigger.matches_key(key))
        })
    });
    if keys_hooked {
        Selected::Keys
    } else {
        Selected::Nothing
    }
}

/// `RG.INNERHOOK` as a module string, made once at load (the filter inserts it).
static INNER_NAME: OnceLock<usize> = OnceLock::new();
/// Registers the command filter (at load).
pub(crate) fn register_filter(ctx: &Context) -> Result<(), String> {
    // SAFETY: module API calls during load; the string lives as long as the module.
    unsafe {
        let name = raw::RedisModule_CreateString.unwrap()(
            std::ptr::null_mut(),
            INNER_HOOK.as_ptr().cast(),
            INNER_HOOK.len(),
        );
        let _ = INNER_NAME.set(name as usize);
        let filter = raw::RedisModule_RegisterCommandFilter.unwrap()(ctx.ctx, Some(on_command), 0);
        if filter.is_null() {
            return Err("could not register the command filter of command hooks".into());
        }
    }
    Ok(())
}

/// Whether the command of `filter` is `RG.INNERHOOK` itself.
unsafe fn is_inner_hook(filter: *mut raw::RedisModuleCommandFilterCtx) -> bool {
    // SAFETY: the filter's first argument is a live module string for the call.
    unsafe {
        let arg = raw::RedisModule_CommandFilterArgGet.unwrap()(filter, 0);
        if arg.is_null() {
            return false;
        }
        let mut len = 0usize;
        let ptr = raw::RedisModule_StringPtrLen.unwrap()(arg, &mut len);
        std::slice::from_raw_parts(ptr.cast::<u8>(), len)
            .eq_ignore_ascii_case(INNER_HOOK.as_bytes())
    }
}

unsafe extern "C" fn on_command(filter: *mut raw::RedisModuleCommandFilterCtx) {
    // `RG.INNERHOOK` sent by a client or a script (not inserted here): one more in front marks
    // it, and `RG.INNERHOOK` refuses to run `RG.INNERHOOK`. Whether hooks exist or not: it
    // would run any command unchecked. (One insertion only: Valkey 9.1 corrupts its argument
    // array when a filter inserts twice or replaces an argument.)
    // Gears' own command (one per InternalCall: the flag is taken here, before the command
    // runs and whatever it runs in turn).
    let internal = INTERNAL.with(|internal| internal.replace(false));
    // SAFETY: the filter context of this call.
    if unsafe { is_inner_hook(filter) } {
        if let Some(name) = INNER_NAME.get() {
            let name = *name as *mut raw::RedisModuleString;
            // SAFETY: a string made at load, retained for the arguments that take it.
            unsafe {
                raw::RedisModule_RetainString.unwrap()(std::ptr::null_mut(), name);
                raw::RedisModule_CommandFilterArgInsert.unwrap()(filter, 0, name);
            }
        }
        return;
    }
    if internal || HOOKED.load(Ordering::Acquire) == 0 {
        return;
    }
    // The real command of a hooked one.
    if BYPASS.with(|bypass| bypass.replace(false)) {
        return;
    }
    // No panic may cross into Redis.
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: the filter's arguments are live module strings for the call.
        unsafe {
            let count = raw::RedisModule_CommandFilterArgsCount.unwrap()(filter);
            let argv: Vec<&[u8]> = (0..count)
                .map(|i| {
                    let arg = raw::RedisModule_CommandFilterArgGet.unwrap()(filter, i);
                    let mut len = 0usize;
                    let ptr = raw::RedisModule_StringPtrLen.unwrap()(arg, &mut len);
                    std::slice::from_raw_parts(ptr.cast::<u8>(), len)
                })
                .collect();
            if matches!(select(&argv), Selected::Nothing) {
                return;
            }
            let Some(name) = INNER_NAME.get() else {
                return;
            };
            let name = *name as *mut raw::RedisModuleString;
            raw::RedisModule_RetainString.unwrap()(std::ptr::null_mut(), name);
            raw::RedisModule_CommandFilterArgInsert.unwrap()(filter, 0, name);
        }
    });
}

/// Whether the keyspace event of a registration with `commands=[...]` comes from one of its
/// commands (the hooked command running on this thread).
pub(super) fn event_command(commands: &[String]) -> Option<Arc<CommandCall>> {
    let call = current_command()?;
    let name = String::from_utf8_lossy(call.args.first()?);
    commands
        .iter()
        .any(|c| c.eq_ignore_ascii_case(&name))
        .then_some(call)
}
