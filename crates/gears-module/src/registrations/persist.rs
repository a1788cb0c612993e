//! Sessions survive restarts and reach replicas.
//!
//! - **RDB**: a module type (`gears-ses`, never a key) saves every session as aux data; loading
//!   collects them, and when loading ends the live sessions become exactly the loaded ones
//!   (kept if unchanged, made again otherwise, ended if absent). `DEBUG RELOAD` changes
//!   nothing; a restart makes them again; a replica's full sync gives it the master's.
//! - **Replication and AOF**: creating, upgrading or ending a session, and `RG.UNREGISTER`,
//!   propagate `RG.INNERSESSION SET <session>` or `RG.INNERSESSION DEL <id>`; a replica (or an
//!   AOF being loaded) applies them. On the master the command is a no-op: Gears runs it only
//!   to have it propagated in order with the writes around it.
//!
//! Registrations fire only on a master, so a replica keeps them idle until it is promoted.

use std::cell::Cell;
use std::os::raw::{c_int, c_void};
use std::sync::{Mutex, PoisonError};

use redis_module::logging::RedisLogLevel;
use redis_module::native_types::RedisType;
use redis_module::{raw, CallOptionsBuilder, Context, RedisError, RedisResult, RedisString};
use redis_module::{CallResult, RedisValue};

use super::sessions::{self, SessionSpec};
use crate::guard::guarded;

/// Aux data format version (2: the sessions' requirements follow them, with their wheels).
const ENCODING: i32 = 2;

pub(crate) static SESSIONS_TYPE: RedisType = RedisType::new(
    "gears-ses",
    ENCODING,
    raw::RedisModuleTypeMethods {
        version: raw::REDISMODULE_TYPE_METHOD_VERSION as u64,
        rdb_load: Some(no_key_load),
        rdb_save: Some(no_key_save),
        aof_rewrite: None,
        mem_usage: None,
        digest: None,
        free: Some(no_key_free),
        aux_load: Some(aux_load),
        aux_save: Some(aux_save),
        aux_save_triggers: raw::REDISMODULE_AUX_BEFORE_RDB as c_int,
        free_effort: None,
        unlink: None,
        copy: None,
        defrag: None,
        mem_usage2: None,
        free_effort2: None,
        unlink2: None,
        copy2: None,
        // Redis 7.2+ and Valkey: nothing is written when there is no session, so such an RDB
        // loads without Gears.
        aux_save2: Some(aux_save2),
    },
);

// No key ever has this type: it exists for its aux data.
unsafe extern "C" fn no_key_load(_rdb: *mut raw::RedisModuleIO, _encver: c_int) -> *mut c_void {
    std::ptr::null_mut()
}

unsafe extern "C" fn no_key_save(_rdb: *mut raw::RedisModuleIO, _value: *mut c_void) {}

unsafe extern "C" fn no_key_free(_value: *mut c_void) {}

unsafe extern "C" fn aux_save2(rdb: *mut raw::RedisModuleIO, when: c_int) {
    if sessions::saved().is_empty() {
        return;
    }
    // SAFETY: forwarded as Redis passed it.
    unsafe { aux_save(rdb, when) }
}

unsafe extern "C" fn aux_save(rdb: *mut raw::RedisModuleIO, _when: c_int) {
    let all = sessions::saved();
    let encoded: Vec<Vec<u8>> = all.iter().map(SessionSpec::encode).collect();
    // The requirements the sessions name, with their wheels: a restart or a replica on another
    // machine makes the sessions with no package index.
    let mut names: Vec<String> = all.iter().flat_map(|s| s.requirements.clone()).collect();
    names.sort();
    names.dedup();
    let requirements = crate::requirements::blobs_on_disk(&names);
    // SAFETY: the IO handle Redis passes for this call.
    unsafe {
        for list in [&encoded, &requirements] {
            raw::RedisModule_SaveUnsigned.unwrap()(rdb, list.len() as u64);
            for bytes in list {
                raw::RedisModule_SaveStringBuffer.unwrap()(rdb, bytes.as_ptr().cast(), bytes.len());
            }
        }
    }
}

/// Requirements read while loading (RDB aux data, `RG.INNERSESSION REQ` of an AOF), installed
/// when loading ends, before the sessions are made.
static LOADED_REQUIREMENTS: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

fn loaded_requirements() -> std::sync::MutexGuard<'static, Vec<Vec<u8>>> {
    LOADED_REQUIREMENTS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// Sessions read while loading (an RDB, or the RDB part of an AOF, then its commands), made
/// live when loading ends. `None`: nothing loaded.
static LOADED: Mutex<Option<Vec<SessionSpec>>> = Mutex::new(None);

fn loaded() -> std::sync::MutexGuard<'static, Option<Vec<SessionSpec>>> {
    LOADED.lock().unwrap_or_else(PoisonError::into_inner)
}

unsafe extern "C" fn aux_load(rdb: *mut raw::RedisModuleIO, encver: c_int, _when: c_int) -> c_int {
    if encver > ENCODING {
        return raw::REDISMODULE_ERR as c_int;
    }
    // SAFETY: the IO handle Redis passes for this call. No panic may cross into Redis.
    let loaded_ok = std::panic::catch_unwind(|| unsafe {
        let specs = load_sessions(rdb)?;
        let requirements = if encver >= 2 {
            load_buffers(rdb)?
        } else {
            Vec::new()
        };
        Some((specs, requirements))
    });
    match loaded_ok {
        Ok(Some((specs, requirements))) => {
            *loaded() = Some(specs);
            *loaded_requirements() = requirements;
            raw::REDISMODULE_OK as c_int
        }
        _ => raw::REDISMODULE_ERR as c_int,
    }
}

/// Reads the sessions of an RDB. A session that can not be decoded is skipped and logged (the
/// data still loads); `None` when the RDB itself can not be read.
unsafe fn load_sessions(rdb: *mut raw::RedisModuleIO) -> Option<Vec<SessionSpec>> {
    // SAFETY: the IO handle of this load.
    let buffers = unsafe { load_buffers(rdb)? };
    let mut specs = Vec::new();
    for bytes in buffers {
        match SessionSpec::decode(&bytes) {
            Some(spec) => specs.push(spec),
            None => crate::host::log_line(
                gears_core::LogLevel::Warning,
                "a stored session could not be read and is skipped",
            ),
        }
    }
    Some(specs)
}

/// Reads a counted list of buffers; `None` when the RDB can not be read.
unsafe fn load_buffers(rdb: *mut raw::RedisModuleIO) -> Option<Vec<Vec<u8>>> {
    let mut buffers = Vec::new();
    // SAFETY: the IO handle of this load; each buffer is copied, then freed.
    unsafe {
        let io_error = || raw::RedisModule_IsIOError.is_some_and(|e| e(rdb) != 0);
        let count = raw::RedisModule_LoadUnsigned.unwrap()(rdb);
        if io_error() {
            return None;
        }
        for _ in 0..count {
            let mut len = 0usize;
            let buffer = raw::RedisModule_LoadStringBuffer.unwrap()(rdb, &mut len);
            if buffer.is_null() || io_error() {
                if !buffer.is_null() {
                    raw::RedisModule_Free.unwrap()(buffer.cast());
                }
                return None;
            }
            buffers.push(std::slice::from_raw_parts(buffer.cast::<u8>(), len).to_vec());
            raw::RedisModule_Free.unwrap()(buffer.cast());
        }
    }
    Some(buffers)
}

/// Installs the requirements that came with loaded sessions (at the end of loading, before the
/// sessions are made).
fn install_loaded_requirements(ctx: &Context) {
    let requirements = std::mem::take(&mut *loaded_requirements());
    for blob in requirements {
        if let Err(e) = crate::requirements::install_blob(&blob) {
            ctx.log(RedisLogLevel::Warning, &format!("GEARS: {e}"));
        }
    }
}

/// Subscribes to the end of loading (called once, at load).
pub(crate) fn subscribe(ctx: &Context) -> Result<(), String> {
    SESSIONS_TYPE
        .create_data_type(ctx.ctx)
        .map_err(|e| e.to_string())?;
    crate::host::subscribe_server_event(
        ctx,
        raw::REDISMODULE_EVENT_LOADING,
        Some(on_loading),
        "loading events",
    )
}

unsafe extern "C" fn on_loading(
    ctx: *mut raw::RedisModuleCtx,
    _event: raw::RedisModuleEvent,
    subevent: u64,
    _data: *mut c_void,
) {
    let _ = std::panic::catch_unwind(|| {
        let ctx = Context::new(ctx);
        match subevent {
            raw::REDISMODULE_SUBEVENT_LOADING_ENDED => {
                install_loaded_requirements(&ctx);
                if let Some(specs) = loaded().take() {
                    converge(&ctx, specs);
                }
                super::streams::after_loading();
            }
            raw::REDISMODULE_SUBEVENT_LOADING_FAILED => {
                loaded().take();
                loaded_requirements().clear();
            }
            _ => {}
        }
    });
}

/// Makes the live sessions exactly `specs`: unchanged ones stay, changed or new ones are made
/// again, missing ones end.
fn converge(ctx: &Context, specs: Vec<SessionSpec>) {
    let live = sessions::all();
    for session in sessions::saved() {
        if !specs.iter().any(|s| s.id == session.id) {
            sessions::end(&session.id);
        }
    }
    for spec in specs {
        if live.contains(&spec) {
            continue;
        }
        make_again(ctx, spec);
    }
}

/// Makes a session again; one that fails is kept as failed (saved, listed as dead, retried at
/// the next load) and logged.
fn make_again(ctx: &Context, spec: SessionSpec) {
    let id = spec.id.clone();
    if let Err(e) = sessions::recreate(ctx, spec.clone()) {
        ctx.log(
            RedisLogLevel::Warning,
            &format!(
                "GEARS: session {id} could not be made again: {e} (kept: RG.PYDUMPSESSIONS DEAD \
                 lists it; an UPGRADE replaces it)"
            ),
        );
        sessions::end(&id);
        sessions::fail(spec, e);
    }
}

thread_local! {
    /// True while Gears runs `RG.INNERSESSION` itself (on the master, only to propagate it).
    static PROPAGATING: Cell<bool> = const { Cell::new(false) };
}

/// Propagates a session (created, upgraded, or changed by `RG.UNREGISTER`) to replicas and the
/// AOF. Called under the Redis lock.
pub(crate) fn propagate_set(ctx: &Context, spec: &SessionSpec) {
    // Its requirements first, with their wheels: a replica (or the AOF) installs them before it
    // makes the session.
    for blob in crate::requirements::blobs(&spec.requirements) {
        propagate(ctx, &[b"REQ".as_slice(), &blob]);
    }
    propagate(ctx, &[b"SET".as_slice(), &spec.encode()]);
}

/// Propagates the end of a session. Called under the Redis lock.
pub(crate) fn propagate_del(ctx: &Context, id: &str) {
    propagate(ctx, &[b"DEL".as_slice(), id.as_bytes()]);
}

fn propagate(ctx: &Context, args: &[&[u8]]) {
    PROPAGATING.with(|p| p.set(true));
    // `replicate()`: without it the server drops what the command propagates.
    let options = CallOptionsBuilder::new()
        .replicate()
        .errors_as_replies()
        .build();
    let reply: CallResult = ctx.call_ext("RG.INNERSESSION", &options, args);
    PROPAGATING.with(|p| p.set(false));
    if let Err(e) = reply {
        ctx.log(
            RedisLogLevel::Warning,
            &format!(
                "GEARS: could not propagate a session: {}",
                e.to_utf8_string().unwrap_or_default()
            ),
        );
    }
}

/// Where an internal command (`RG.INNERSESSION`, `RG.INNERTIMERKEY`) comes from: `(loading,
/// from_master)`, an AOF being loaded or the master's replication stream.
pub(crate) fn internal_origin(ctx: &Context) -> (bool, bool) {
    // SAFETY: a plain query of the command's context.
    let flags = unsafe { raw::RedisModule_GetContextFlags.unwrap()(ctx.ctx) } as u32;
    (
        flags & raw::REDISMODULE_CTX_FLAGS_LOADING != 0,
        flags & raw::REDISMODULE_CTX_FLAGS_REPLICATED != 0,
    )
}

/// `RG.INNERSESSION SET <session> | DEL <id>`: internal. Applied when it comes from the master
/// or an AOF being loaded; a no-op when Gears itself runs it to propagate it; refused from
/// clients.
pub(crate) fn inner_session(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guarded(|| {
        if args.len() != 3 {
            return Err(RedisError::WrongArity);
        }
        let (loading, from_master) = internal_origin(ctx);
        let own = PROPAGATING.with(Cell::get);
        if !(own || loading || from_master) {
            return Err(RedisError::Str(
                "ERR RG.INNERSESSION is internal to Gears (replication and AOF)",
            ));
        }
        // SAFETY: replicates this command as it is (to replicas and the AOF).
        unsafe { raw::RedisModule_ReplicateVerbatim.unwrap()(ctx.ctx) };
        if own {
            return Ok(RedisValue::SimpleStringStatic("OK"));
        }
        let action = args[1].to_string_lossy().to_ascii_uppercase();
        match action.as_str() {
            "SET" => {
                let spec = SessionSpec::decode(args[2].as_slice())
                    .ok_or(RedisError::Str("ERR the session could not be read"))?;
                if loading {
                    let mut loaded = loaded();
                    sessions::put(loaded.get_or_insert_with(sessions::saved), spec);
                } else if !sessions::all().contains(&spec) {
                    make_again(ctx, spec);
                }
            }
            "REQ" => {
                if loading {
                    loaded_requirements().push(args[2].as_slice().to_vec());
                } else if let Err(e) = crate::requirements::install_blob(args[2].as_slice()) {
                    ctx.log(RedisLogLevel::Warning, &format!("GEARS: {e}"));
                }
            }
            "DEL" => {
                let id = args[2].to_string_lossy();
                if loading {
                    let mut loaded = loaded();
                    loaded
                        .get_or_insert_with(sessions::saved)
                        .retain(|s| s.id != id);
                } else {
                    sessions::end(&id);
                }
            }
            _ => return Err(RedisError::Str("ERR unknown RG.INNERSESSION action")),
        }
        Ok(RedisValue::SimpleStringStatic("OK"))
    })
}
