//! Keyspace events: Gears subscribes to all of them (and key misses) at load, as RedisGears
//! does, and hands each to the KeysReader registrations it concerns.
//!
//! The callback runs on the thread that changed the key, holding the Redis lock: Redis's main
//! thread for a client's command, a worker for an execution's `execute()`. With no registration
//! it returns at once. Events fire only on a master that is not loading.

use std::cell::RefCell;
use std::os::raw::{c_char, c_int};
use std::sync::Arc;

use redis_module::{raw, Context};

use super::{hooks, keys_trigger, run, Event, Registration};
use crate::readers::{close_key, key_type, open_key, opening_key, type_name};

/// Subscribes to every keyspace event and key miss (called once, at load).
pub(crate) fn subscribe(ctx: &Context) -> Result<(), String> {
    let types = raw::NotifyEvent::ALL.bits() | raw::NotifyEvent::MISSED.bits();
    // SAFETY: a module API call during load with a callback that lives as long as the module.
    let status = unsafe {
        raw::RedisModule_SubscribeToKeyspaceEvents.unwrap()(
            ctx.ctx,
            types as c_int,
            Some(on_keyspace_event),
        )
    };
    if status == raw::REDISMODULE_OK as c_int {
        super::removals::subscribe(ctx);
        run::sync_budget::subscribe(ctx);
        if !run::detect_post_notification_jobs() {
            ctx.log_notice(
                "Gears: this server has no post-notification jobs (Redis < 7.2): sync \
                 registrations write inside the keyspace notification, as RedisGears 1.2 did",
            );
        }
        Ok(())
    } else {
        Err("could not subscribe to keyspace events".into())
    }
}

thread_local! {
    /// The sync registrations running on this thread: an event their own writes raise does not
    /// run them again (it would recurse without end).
    static RUNNING: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Marks a sync registration as running on this thread while alive.
pub(super) struct Running;

impl Running {
    /// `None` if the registration already runs on this thread.
    pub fn enter(id: &str) -> Option<Running> {
        RUNNING.with(|running| {
            let mut running = running.borrow_mut();
            if running.iter().any(|r| r == id) {
                return None;
            }
            running.push(id.to_string());
            Some(Running)
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = RUNNING.try_with(|running| running.borrow_mut().pop());
    }
}

unsafe extern "C" fn on_keyspace_event(
    ctx: *mut raw::RedisModuleCtx,
    kind: c_int,
    event: *const c_char,
    key: *mut raw::RedisModuleString,
) -> c_int {
    let own_miss = kind as u32 & raw::NotifyEvent::MISSED.bits() as u32 != 0 && opening_key();
    if super::count() == 0 || own_miss {
        return raw::REDISMODULE_OK as c_int;
    }
    // No panic may cross into Redis.
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: Redis passes a NUL-terminated event name and a live key name for the call;
        // they are borrowed for it (copied only for the registrations that match).
        let (event, key) = unsafe {
            let event = std::ffi::CStr::from_ptr(event).to_string_lossy();
            let mut len = 0usize;
            let ptr = raw::RedisModule_StringPtrLen.unwrap()(key, &mut len);
            (event, std::slice::from_raw_parts(ptr.cast::<u8>(), len))
        };
        let _inside = Inside::enter();
        dispatch(&Context::new(ctx), &event, key);
    });
    raw::REDISMODULE_OK as c_int
}

thread_local! {
    /// How deep this thread is in Gears' keyspace-event callback.
    static INSIDE: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Marks this thread as inside the keyspace-event callback while alive.
struct Inside;

impl Inside {
    fn enter() -> Inside {
        INSIDE.with(|depth| depth.set(depth.get() + 1));
        Inside
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        let _ = INSIDE.try_with(|depth| depth.set(depth.get().saturating_sub(1)));
    }
}

/// True while this thread runs inside Gears' keyspace-event callback. Redis does not call a
/// module's callback again from inside it: events raised by writes made there (a sync run)
/// never arrive, so Gears reports its own `XADD`s there to the stream registrations itself.
pub(crate) fn inside_notification() -> bool {
    INSIDE.with(|depth| depth.get() > 0)
}

/// An `XADD` Gears ran inside its own keyspace-event callback (see [`inside_notification`]).
pub(crate) fn own_xadd(ctx: &Context, key: &[u8], db: i32) {
    if super::streams::any() && may_fire(ctx) {
        super::streams::on_event(ctx, "xadd", key, db);
    }
}

/// True on a master that is not loading: the only place registrations fire.
pub(super) fn may_fire(ctx: &Context) -> bool {
    // SAFETY: a plain query of the server's state.
    let flags = unsafe { raw::RedisModule_GetContextFlags.unwrap()(ctx.ctx) } as u32;
    flags & raw::REDISMODULE_CTX_FLAGS_MASTER != 0
        && flags & raw::REDISMODULE_CTX_FLAGS_LOADING == 0
}

fn dispatch(ctx: &Context, event: &str, key: &[u8]) {
    if super::streams::any() && may_fire(ctx) {
        // SAFETY: a plain query of the context's selected database.
        let db = unsafe { raw::RedisModule_GetSelectedDb.unwrap()(ctx.ctx) };
        super::streams::on_event(ctx, event, key, db);
    }
    if super::keys_count() == 0 {
        return;
    }
    let (list, index) = super::snapshot();
    let matching: Vec<Arc<Registration>> = super::index::matching(&list, &index, key)
        .into_iter()
        .filter_map(|position| list.get(position))
        .filter(|r| keys_trigger(r).is_some_and(|t| t.matches_event(event)))
        .cloned()
        .collect();
    if matching.is_empty() || !may_fire(ctx) {
        return;
    }
    let mut kind: Option<&'static str> = None;
    // SAFETY: a plain query of the context's selected database.
    let db = unsafe { raw::RedisModule_GetSelectedDb.unwrap()(ctx.ctx) };
    for registration in matching {
        let mut command = None;
        if let Some(trigger) = keys_trigger(&registration) {
            // `commands=[...]`: only events of those commands, run through their hook.
            if let Some(commands) = &trigger.commands {
                command = hooks::event_command(commands);
                if command.is_none() {
                    continue;
                }
            }
            if trigger.filters_types() {
                let key_kind = *kind.get_or_insert_with(|| {
                    let open = open_key(ctx, key);
                    let kind = key_type(open);
                    close_key(open);
                    // `keyTypes` names streams `stream` (records call them `unknown`).
                    match kind as isize {
                        raw::REDISMODULE_KEYTYPE_STREAM => "stream",
                        _ => type_name(kind),
                    }
                });
                if !trigger.matches_type(key_kind) {
                    continue;
                }
            }
        }
        let event = Event {
            key: key.to_vec(),
            event: event.to_string(),
            db,
            record: None,
            command,
        };
        run::fire(ctx.ctx, &registration, event);
    }
}
