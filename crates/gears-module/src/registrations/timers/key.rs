//! A timer's key (`registerTE(seconds, f, 'key')`, `key=`): a key of Gears' type `gears-tmr`
//! holding the id of the timer registration it keeps alive, as RedisGears' `rg_timeev` keys
//! did. The registration itself lives with its session (saved, replicated, listed); the key is
//! its lease: a point that finds the key gone or holding anything else ends the registration.
//!
//! The key is written when the session is made (on the shard that runs the script, which must
//! own the key's slot in a cluster) and reaches replicas and the AOF as `RG.INNERTIMERKEY <key>
//! <id>`, which only the master's stream or an AOF being loaded may run. It is saved in the RDB
//! (its id), rewritten into the AOF, and freed with no side effect (a lazy free may run on
//! another thread).

use std::os::raw::{c_int, c_void};
use std::sync::Arc;

use gears_core::registration::{RegistrationSpec, Trigger};
use gears_core::timer::TimerTrigger;
use redis_module::native_types::RedisType;
use redis_module::{raw, Context, RedisError, RedisResult, RedisString, RedisValue};

use super::super::Registration;
use crate::guard::guarded;

/// Format version of the value (the registration id).
const ENCODING: i32 = 1;

pub(crate) static TIMER_KEY_TYPE: RedisType = RedisType::new(
    "gears-tmr",
    ENCODING,
    raw::RedisModuleTypeMethods {
        version: raw::REDISMODULE_TYPE_METHOD_VERSION as u64,
        rdb_load: Some(rdb_load),
        rdb_save: Some(rdb_save),
        aof_rewrite: Some(aof_rewrite),
        mem_usage: Some(mem_usage),
        digest: None,
        free: Some(free),
        aux_load: None,
        aux_save: None,
        aux_save_triggers: 0,
        free_effort: None,
        unlink: None,
        copy: None,
        defrag: None,
        mem_usage2: None,
        free_effort2: None,
        unlink2: None,
        copy2: None,
        aux_save2: None,
    },
);

/// What a timer's key holds.
struct TimerKey {
    registration: String,
}

unsafe extern "C" fn rdb_load(rdb: *mut raw::RedisModuleIO, _encver: c_int) -> *mut c_void {
    let mut len = 0usize;
    // SAFETY: reads one buffer Redis allocated; it is copied, then freed.
    let registration = unsafe {
        let ptr = raw::RedisModule_LoadStringBuffer.unwrap()(rdb, &mut len);
        if ptr.is_null() || raw::RedisModule_IsIOError.is_some_and(|e| e(rdb) != 0) {
            if !ptr.is_null() {
                raw::RedisModule_Free.unwrap()(ptr.cast());
            }
            // A short or corrupt value: the load (or RESTORE) fails, the server goes on.
            return std::ptr::null_mut();
        }
        let text =
            String::from_utf8_lossy(std::slice::from_raw_parts(ptr.cast::<u8>(), len)).into_owned();
        raw::RedisModule_Free.unwrap()(ptr.cast());
        text
    };
    Box::into_raw(Box::new(TimerKey { registration })).cast()
}

unsafe extern "C" fn rdb_save(rdb: *mut raw::RedisModuleIO, value: *mut c_void) {
    // SAFETY: the value is a TimerKey this module made.
    let key = unsafe { &*value.cast::<TimerKey>() };
    let id = key.registration.as_bytes();
    // SAFETY: writes one buffer of this length.
    unsafe { raw::RedisModule_SaveStringBuffer.unwrap()(rdb, id.as_ptr().cast(), id.len()) };
}

unsafe extern "C" fn aof_rewrite(
    aof: *mut raw::RedisModuleIO,
    key: *mut raw::RedisModuleString,
    value: *mut c_void,
) {
    // SAFETY: the value is a TimerKey this module made.
    let timer = unsafe { &*value.cast::<TimerKey>() };
    let id = timer.registration.as_bytes();
    // SAFETY: `s`: the key, `b`: a buffer and its length.
    unsafe {
        raw::RedisModule_EmitAOF.unwrap()(
            aof,
            c"RG.INNERTIMERKEY".as_ptr(),
            c"sb".as_ptr(),
            key,
            id.as_ptr(),
            id.len(),
        )
    };
}

unsafe extern "C" fn mem_usage(value: *const c_void) -> usize {
    // SAFETY: the value is a TimerKey this module made.
    let key = unsafe { &*value.cast::<TimerKey>() };
    std::mem::size_of::<TimerKey>() + key.registration.capacity()
}

unsafe extern "C" fn free(value: *mut c_void) {
    // SAFETY: made by `Box::into_raw` in this module; freed once.
    drop(unsafe { Box::from_raw(value.cast::<TimerKey>()) });
}

/// Registers the key type (once, at load).
pub(crate) fn create_type(ctx: &Context) -> Result<(), String> {
    TIMER_KEY_TYPE
        .create_data_type(ctx.ctx)
        .map_err(|e| e.to_string())
}

/// What a key holds, for a timer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Content {
    Empty,
    /// A value of another type.
    Other,
    /// A timer's lease: the registration's id.
    Timer(String),
}

/// What `key` holds in database `db` (the context's database is left as it was).
pub(crate) fn content(ctx: &Context, db: i32, key: &[u8]) -> Content {
    // SAFETY: under the Redis lock; the key name and the key are freed here; the database
    // selected before is selected again.
    unsafe {
        let before = raw::RedisModule_GetSelectedDb.unwrap()(ctx.ctx);
        raw::RedisModule_SelectDb.unwrap()(ctx.ctx, db);
        let name = raw::RedisModule_CreateString.unwrap()(ctx.ctx, key.as_ptr().cast(), key.len());
        let handle = raw::RedisModule_OpenKey.unwrap()(
            ctx.ctx,
            name,
            (raw::REDISMODULE_READ | raw::REDISMODULE_OPEN_KEY_NOTOUCH) as c_int,
        );
        let content = if handle.is_null() {
            Content::Empty
        } else {
            let kind = raw::RedisModule_KeyType.unwrap()(handle);
            let ours = *TIMER_KEY_TYPE.raw_type.borrow();
            let found = if kind == raw::REDISMODULE_KEYTYPE_EMPTY as c_int {
                Content::Empty
            } else if kind == raw::REDISMODULE_KEYTYPE_MODULE as c_int
                && raw::RedisModule_ModuleTypeGetType.unwrap()(handle) == ours
            {
                let value = raw::RedisModule_ModuleTypeGetValue.unwrap()(handle);
                Content::Timer((*value.cast::<TimerKey>()).registration.clone())
            } else {
                Content::Other
            };
            raw::RedisModule_CloseKey.unwrap()(handle);
            found
        };
        raw::RedisModule_FreeString.unwrap()(ctx.ctx, name);
        raw::RedisModule_SelectDb.unwrap()(ctx.ctx, before);
        content
    }
}

/// Writes the lease of `registration` at `key` in the context's database, and propagates it.
fn write(ctx: &Context, key: &[u8], registration: &str) -> Result<(), String> {
    // SAFETY: under the Redis lock; the value is handed to Redis, which frees it with `free`.
    unsafe {
        let name = raw::RedisModule_CreateString.unwrap()(ctx.ctx, key.as_ptr().cast(), key.len());
        let handle =
            raw::RedisModule_OpenKey.unwrap()(ctx.ctx, name, raw::REDISMODULE_WRITE as c_int);
        raw::RedisModule_FreeString.unwrap()(ctx.ctx, name);
        if handle.is_null() {
            return Err("the timer's key could not be opened".into());
        }
        let value = Box::into_raw(Box::new(TimerKey {
            registration: registration.to_string(),
        }));
        let ours = *TIMER_KEY_TYPE.raw_type.borrow();
        let status = raw::RedisModule_ModuleTypeSetValue.unwrap()(handle, ours, value.cast());
        raw::RedisModule_CloseKey.unwrap()(handle);
        if status != raw::REDISMODULE_OK as c_int {
            drop(Box::from_raw(value));
            return Err("the timer's key could not be written".into());
        }
    }
    Ok(())
}

/// Propagates a lease to replicas and the AOF.
fn propagate(ctx: &Context, key: &[u8], registration: &str) {
    // SAFETY: `b`: a buffer and its length, twice.
    unsafe {
        raw::RedisModule_Replicate.unwrap()(
            ctx.ctx,
            c"RG.INNERTIMERKEY".as_ptr(),
            c"bb".as_ptr(),
            key.as_ptr(),
            key.len(),
            registration.as_ptr(),
            registration.len(),
        )
    };
}

fn timer_trigger(spec: &RegistrationSpec) -> Option<&TimerTrigger> {
    match &spec.trigger {
        Trigger::Timer(trigger) => Some(trigger),
        _ => None,
    }
}

/// Before a new session is made (under the Redis lock, `ctx` in the script's database): each
/// timer key it asks for must be free, or hold a timer that is not live or that the session
/// replaces (`removed`). In a cluster the key must be on this shard.
pub(crate) fn check_claims(
    ctx: &Context,
    db: i32,
    created: &[Arc<Registration>],
    removed: &[String],
) -> Result<(), String> {
    for registration in created {
        let Some(key) = timer_trigger(&registration.spec).and_then(|t| t.key.as_deref()) else {
            continue;
        };
        let shown = String::from_utf8_lossy(key);
        if !crate::cluster::owns_key(key) {
            return Err(format!(
                "a timer's key must be on the shard that runs the script: '{shown}' is in slot \
                 {}, served by another shard",
                crate::cluster::topology::key_slot(key)
            ));
        }
        if !crate::host::may_run(ctx, &registration.user, &[b"SET", key, b"1"]) {
            return Err(format!(
                "NOPERM this user may not write the timer's key '{shown}'"
            ));
        }
        match content(ctx, db, key) {
            Content::Empty => {}
            Content::Timer(id) if removed.contains(&id) || super::super::get(&id).is_none() => {}
            Content::Timer(_) => {
                return Err(format!(
                    "the key '{shown}' holds the timer of another registration"
                ))
            }
            Content::Other => {
                return Err(format!(
                    "the key '{shown}' was written while the script ran: the timer can not \
                     take it"
                ))
            }
        }
    }
    Ok(())
}

/// Once the session is live: writes each timer's lease (checked by [`check_claims`] under the
/// same hold of the lock) and propagates it.
pub(crate) fn claim(ctx: &Context, db: i32, created: &[Arc<Registration>]) {
    for registration in created {
        let Some(key) = timer_trigger(&registration.spec).and_then(|t| t.key.as_deref()) else {
            continue;
        };
        // SAFETY: selects the script's database for the write and its propagation, then the
        // one selected before.
        let before = unsafe { raw::RedisModule_GetSelectedDb.unwrap()(ctx.ctx) };
        unsafe { raw::RedisModule_SelectDb.unwrap()(ctx.ctx, db) };
        match write(ctx, key, &registration.id) {
            Ok(()) => propagate(ctx, key, &registration.id),
            Err(e) => ctx.log_warning(&format!(
                "GEARS: timer registration {}: {e}",
                registration.id
            )),
        }
        // SAFETY: as above.
        unsafe { raw::RedisModule_SelectDb.unwrap()(ctx.ctx, before) };
    }
}

/// Where a timer with a key runs, seen at one of its points.
pub(super) enum Holder {
    /// The key holds this registration's lease: it runs.
    This,
    /// The key is gone or holds something else: the timer ends.
    Gone,
    /// The key is on another shard: that shard runs it.
    Elsewhere,
}

pub(super) fn holds(ctx: &Context, registration: &Registration, trigger: &TimerTrigger) -> Holder {
    let Some(key) = trigger.key.as_deref() else {
        return Holder::This;
    };
    if !crate::cluster::owns_key(key) {
        return Holder::Elsewhere;
    }
    let db = super::super::sessions::db_of(&registration.session_id).unwrap_or(0);
    match content(ctx, db, key) {
        Content::Timer(id) if id == registration.id => Holder::This,
        _ => Holder::Gone,
    }
}

/// `RG.INNERTIMERKEY <key> <registration id>`: internal. Writes a timer's lease as the master
/// did; only from the master's replication stream or an AOF being loaded.
pub(crate) fn inner_timer_key(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guarded(|| {
        if args.len() != 3 {
            return Err(RedisError::WrongArity);
        }
        let (loading, from_master) = super::super::persist::internal_origin(ctx);
        if !(loading || from_master) {
            return Err(RedisError::Str(
                "ERR RG.INNERTIMERKEY is internal to Gears (replication and AOF)",
            ));
        }
        write(ctx, args[1].as_slice(), &args[2].to_string_lossy()).map_err(RedisError::String)?;
        // SAFETY: replicates this command as it is (to this replica's replicas and its AOF).
        unsafe { raw::RedisModule_ReplicateVerbatim.unwrap()(ctx.ctx) };
        Ok(RedisValue::SimpleStringStatic("OK"))
    })
}
