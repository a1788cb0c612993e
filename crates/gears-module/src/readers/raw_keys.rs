//! Direct keyspace access for the keys readers: `RedisModule_Scan` over the keyspace, key
//! handles and their types. No command round trip, no reply parsing; every callback from Redis
//! is panic-guarded. Values are read in `values.rs`.

use std::os::raw::{c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};

use redis_module::{raw, Context};

/// A `RedisModuleScanCursor` (for the keyspace or for one key's fields).
pub(crate) struct ScanCursor(*mut raw::RedisModuleScanCursor);

// SAFETY: a heap object of Redis's, used by one thread at a time under the Redis lock.
unsafe impl Send for ScanCursor {}

impl ScanCursor {
    pub fn new() -> Self {
        // SAFETY: plain allocation by Redis.
        ScanCursor(unsafe { raw::RedisModule_ScanCursorCreate.unwrap()() })
    }
}

impl ScanCursor {
    pub fn as_ptr(&self) -> *mut raw::RedisModuleScanCursor {
        self.0
    }

    /// Starts the cursor over, for another key or keyspace scan.
    pub fn restart(&self) {
        // SAFETY: a live cursor.
        unsafe { raw::RedisModule_ScanCursorRestart.unwrap()(self.0) };
    }
}

impl Drop for ScanCursor {
    fn drop(&mut self) {
        // SAFETY: created in `new`.
        unsafe { raw::RedisModule_ScanCursorDestroy.unwrap()(self.0) };
    }
}

/// The bytes of a module string (borrowed from Redis for the callback's duration).
pub(crate) unsafe fn string_bytes<'a>(s: *const raw::RedisModuleString) -> &'a [u8] {
    let mut len = 0usize;
    let ptr = raw::RedisModule_StringPtrLen.unwrap()(s, &mut len);
    if ptr.is_null() {
        &[]
    } else {
        std::slice::from_raw_parts(ptr.cast::<u8>(), len)
    }
}

/// Called for each key a scan step finds: its name (as bytes and as Redis's string) and its
/// handle, opened for reading when Redis could.
type KeyVisitor<'a> = dyn FnMut(&[u8], *mut raw::RedisModuleString, *mut raw::RedisModuleKey) + 'a;

unsafe extern "C" fn scan_callback(
    _ctx: *mut raw::RedisModuleCtx,
    key_name: *mut raw::RedisModuleString,
    key: *mut raw::RedisModuleKey,
    private_data: *mut c_void,
) {
    let visitor = &mut *(private_data as *mut &mut KeyVisitor);
    let name = string_bytes(key_name);
    // A panic must not unwind into Redis; the key is skipped.
    let _ = catch_unwind(AssertUnwindSafe(|| visitor(name, key_name, key)));
}

/// One `RedisModule_Scan` step: calls `visit` for the keys of one dict bucket. Returns false
/// when the scan is complete.
pub(crate) fn scan_step(ctx: &Context, cursor: &ScanCursor, visit: &mut KeyVisitor) -> bool {
    let mut visit: &mut KeyVisitor = visit;
    // SAFETY: the cursor is live; `visit` outlives the call; we hold the Redis lock.
    unsafe {
        raw::RedisModule_Scan.unwrap()(
            ctx.ctx,
            cursor.0,
            Some(scan_callback),
            (&mut visit as *mut &mut KeyVisitor).cast(),
        ) != 0
    }
}

pub(crate) unsafe extern "C" fn field_callback(
    _key: *mut raw::RedisModuleKey,
    field: *mut raw::RedisModuleString,
    value: *mut raw::RedisModuleString,
    private_data: *mut c_void,
) {
    let fields = &mut *(private_data as *mut Vec<(Vec<u8>, Vec<u8>)>);
    let value = if value.is_null() {
        Vec::new()
    } else {
        string_bytes(value).to_vec()
    };
    fields.push((string_bytes(field).to_vec(), value));
}

/// The type name RedisGears gives a key (`unknown` for streams, `empty` for none).
pub(crate) fn type_name(key_type: c_int) -> &'static str {
    match key_type as isize {
        raw::REDISMODULE_KEYTYPE_STRING => "string",
        raw::REDISMODULE_KEYTYPE_LIST => "list",
        raw::REDISMODULE_KEYTYPE_HASH => "hash",
        raw::REDISMODULE_KEYTYPE_SET => "set",
        raw::REDISMODULE_KEYTYPE_ZSET => "zset",
        raw::REDISMODULE_KEYTYPE_MODULE => "module",
        raw::REDISMODULE_KEYTYPE_EMPTY => "empty",
        _ => "unknown",
    }
}

thread_local! {
    /// True while Gears itself opens a key on this thread: a miss is not the `keymiss` of a
    /// client (Redis 7.0 has no flag to open a key without the event).
    static OPENING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// True while this thread opens a key for Gears' own reading (its `keymiss` events are ignored).
pub(crate) fn opening_key() -> bool {
    OPENING.with(|opening| opening.get())
}

/// Opens a key for reading (null when it does not exist); the caller closes it.
pub(crate) fn open_key(ctx: &Context, name: &[u8]) -> *mut raw::RedisModuleKey {
    OPENING.with(|opening| opening.set(true));
    let key = open_key_notifying(ctx, name);
    OPENING.with(|opening| opening.set(false));
    key
}

fn open_key_notifying(ctx: &Context, name: &[u8]) -> *mut raw::RedisModuleKey {
    // SAFETY: the string is freed right after the key is opened (the key keeps no reference).
    unsafe {
        let name =
            raw::RedisModule_CreateString.unwrap()(ctx.ctx, name.as_ptr().cast(), name.len());
        let key = raw::RedisModule_OpenKey.unwrap()(ctx.ctx, name, raw::REDISMODULE_READ as c_int);
        raw::RedisModule_FreeString.unwrap()(ctx.ctx, name);
        key.cast()
    }
}

pub(crate) fn close_key(key: *mut raw::RedisModuleKey) {
    if !key.is_null() {
        // SAFETY: opened by `open_key`.
        unsafe { raw::RedisModule_CloseKey.unwrap()(key) };
    }
}

/// True when a key the scan handed over has logically expired (RedisModule_Scan, unlike SCAN,
/// does not skip keys whose expiry has passed but that are not evicted yet).
pub(crate) fn is_expired(key: *mut raw::RedisModuleKey) -> bool {
    if key.is_null() {
        return false;
    }
    // SAFETY: an open key; 0 means the expiry time has been reached.
    unsafe { raw::RedisModule_GetExpire.unwrap()(key) == 0 }
}

/// True if the key exists.
pub(crate) fn exists(ctx: &Context, name: &[u8]) -> bool {
    let key = open_key(ctx, name);
    let kind = key_type(key);
    close_key(key);
    kind as isize != raw::REDISMODULE_KEYTYPE_EMPTY
}

/// The type of an open key (`EMPTY` for a null handle).
pub(crate) fn key_type(key: *mut raw::RedisModuleKey) -> c_int {
    if key.is_null() {
        raw::REDISMODULE_KEYTYPE_EMPTY as c_int
    } else {
        // SAFETY: an open key.
        unsafe { raw::RedisModule_KeyType.unwrap()(key) }
    }
}
