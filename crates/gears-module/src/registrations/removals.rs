//! Events before a key goes away (Gears only): `before_delete`, `before_expire`,
//! `before_evict`, opt-in `eventTypes` of KeysReader registrations, whose records carry the
//! key's value as it was. They come from the server's key event (`RedisModuleEvent_Key`: Redis
//! 7.2+, Valkey), which runs while the key still exists; keyspace notifications (`del`,
//! `expired`, `evicted`) come after it is gone. On a server without the key event, registering
//! one is an error.
//!
//! The record is read at once, with the key API only (no command may run while a key is being
//! removed), as the registration's user (a key that user may not read is not their event);
//! a value over 1 MiB is not captured (`value` is None). A `sync` registration runs as a
//! post-notification job right after; if the server can not take one, and for `async`, the
//! event is queued with its record.

use std::os::raw::{c_int, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use gears_core::registration::{RegistrationSpec, Trigger};
use gears_core::{KeyRecord, Record};
use redis_module::{raw, Context};

use super::{keys_trigger, run, Event, Registration};
use crate::host::may_read_key;
use crate::readers::{read_open_key, string_bytes};

/// The opt-in event types, by the key event's subevent.
const EVENTS: [(u64, &str); 3] = [
    (raw::REDISMODULE_SUBEVENT_KEY_DELETED, "before_delete"),
    (raw::REDISMODULE_SUBEVENT_KEY_EXPIRED, "before_expire"),
    (raw::REDISMODULE_SUBEVENT_KEY_EVICTED, "before_evict"),
];

/// True once subscribed to the server's key event.
static SUPPORTED: AtomicBool = AtomicBool::new(false);
/// True while some registration asks for a `before_*` event: every deletion, expiry and
/// eviction asks, so without one it returns at once.
static ASKED: AtomicBool = AtomicBool::new(false);

/// Notes whether the registry (`list`) asks for `before_*` events (rebuilt with it).
pub(super) fn rebuild(list: &[Arc<Registration>]) {
    let asked = list
        .iter()
        .any(|r| EVENTS.iter().any(|(_, name)| asked_for(r, name)));
    ASKED.store(asked, Ordering::Relaxed);
}

fn key_event() -> raw::RedisModuleEvent {
    raw::RedisModuleEvent {
        id: raw::REDISMODULE_EVENT_KEY,
        dataver: 1,
    }
}

/// Subscribes to the server's key event where it exists (called once, at load).
pub(crate) fn subscribe(ctx: &Context) {
    // SAFETY: plain queries of the module API, then a subscription with a callback that lives as
    // long as the module.
    let supported = unsafe {
        raw::RedisModule_IsSubEventSupported.is_some_and(|supported| {
            supported(key_event(), raw::REDISMODULE_SUBEVENT_KEY_DELETED) != 0
        }) && raw::RedisModule_SubscribeToServerEvent.unwrap()(
            ctx.ctx,
            key_event(),
            Some(on_key_event),
        ) == raw::REDISMODULE_OK as c_int
    };
    SUPPORTED.store(supported, Ordering::Relaxed);
}

/// Whether the registrations a script asks for can be made on this server: the `before_*`
/// event types need the key event.
pub(crate) fn check(specs: &[RegistrationSpec]) -> Result<(), String> {
    if SUPPORTED.load(Ordering::Relaxed) {
        return Ok(());
    }
    for spec in specs {
        let Trigger::Keys(trigger) = &spec.trigger else {
            continue;
        };
        if let Some(name) = trigger
            .event_types
            .iter()
            .flatten()
            .find(|t| EVENTS.iter().any(|(_, name)| name == t))
        {
            return Err(format!(
                "event type '{name}' needs a server with key events (Redis 7.2 or later, Valkey)"
            ));
        }
    }
    Ok(())
}

/// True when the registration asked for this event by name (`before_*` are never implied).
fn asked_for(registration: &Registration, name: &str) -> bool {
    keys_trigger(registration).is_some_and(|t| {
        t.event_types
            .as_ref()
            .is_some_and(|types| types.iter().any(|t| t == name))
    })
}

unsafe extern "C" fn on_key_event(
    ctx: *mut raw::RedisModuleCtx,
    _event: raw::RedisModuleEvent,
    subevent: u64,
    data: *mut c_void,
) {
    if !ASKED.load(Ordering::Relaxed) {
        return;
    }
    let Some((_, name)) = EVENTS.iter().find(|(sub, _)| *sub == subevent) else {
        return;
    };
    let _ = std::panic::catch_unwind(|| {
        let ctx = Context::new(ctx);
        // SAFETY: Redis passes the key being removed, open for reading, for this call.
        let key = unsafe { (*data.cast::<raw::RedisModuleKeyInfo>()).key };
        if key.is_null() {
            return;
        }
        // SAFETY: the name and database of the open key.
        let (key_name, db) = unsafe {
            let name = raw::RedisModule_GetKeyNameFromModuleKey.unwrap()(key);
            (
                string_bytes(name).to_vec(),
                raw::RedisModule_GetDbIdFromModuleKey.unwrap()(key),
            )
        };
        let matching: Vec<Arc<Registration>> = super::all()
            .iter()
            .filter(|r| asked_for(r, name))
            .filter(|r| keys_trigger(r).is_some_and(|t| t.matches_key(&key_name)))
            .cloned()
            .collect();
        if matching.is_empty() || !super::events::may_fire(&ctx) {
            return;
        }
        let mut read = None;
        for registration in matching {
            let Some(trigger) = keys_trigger(&registration) else {
                continue;
            };
            let (value, key_type) = read
                .get_or_insert_with(|| read_open_key(&ctx, key))
                .clone()
                .map(|(value, kind)| (Some(value), kind))
                .unwrap_or((Some(Record::Nil), "unknown"));
            if !trigger.matches_type(key_type) {
                continue;
            }
            let user = crate::host::AclUser::new(&registration.user);
            let allowed = user
                .lookup(&ctx)
                .is_some_and(|found| may_read_key(&ctx, &found, &key_name, key));
            if !allowed {
                continue;
            }
            let record = Record::Key(Box::new(KeyRecord {
                key: key_name.clone(),
                value: if trigger.read_value { value } else { None },
                key_type: if trigger.read_value {
                    key_type.to_string()
                } else {
                    String::new()
                },
                event: Some(name.to_string()),
            }));
            let event = Event {
                key: key_name.clone(),
                event: name.to_string(),
                db,
                record: Some(record),
                command: None,
            };
            run::fire(ctx.ctx, &registration, event);
        }
    });
}
