//! Direct keyspace access for the keys readers: `RedisModule_Scan` over the keyspace and
//! `RedisModule_ScanKey` / `RedisModule_StringDMA` for values. No command round trip, no reply
//! parsing; every callback from Redis is panic-guarded.

use std::os::raw::{c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};

use std::time::{Duration, Instant};

use gears_core::Record;
use redis_module::{raw, Context};

use crate::host::{call_internal, RedisHost};

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
    /// Starts the cursor over, for another key or keyspace scan.
    pub fn restart(&self) {
        // SAFETY: a live cursor.
        unsafe { raw::RedisModule_ScanCursorRestart.unwrap()(self.0) };
    }
}

thread_local! {
    /// One cursor per reader thread for the fields of hashes, restarted for each key.
    static FIELD_CURSOR: ScanCursor = ScanCursor::new();
}

impl Drop for ScanCursor {
    fn drop(&mut self) {
        // SAFETY: created in `new`.
        unsafe { raw::RedisModule_ScanCursorDestroy.unwrap()(self.0) };
    }
}

/// The bytes of a module string (borrowed from Redis for the callback's duration).
unsafe fn string_bytes<'a>(s: *const raw::RedisModuleString) -> &'a [u8] {
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

unsafe extern "C" fn field_callback(
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
fn type_name(key_type: c_int) -> &'static str {
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

/// Opens a key for reading (null when it does not exist); the caller closes it.
pub(crate) fn open_key(ctx: &Context, name: &[u8]) -> *mut raw::RedisModuleKey {
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
fn key_type(key: *mut raw::RedisModuleKey) -> c_int {
    if key.is_null() {
        raw::REDISMODULE_KEYTYPE_EMPTY as c_int
    } else {
        // SAFETY: an open key.
        unsafe { raw::RedisModule_KeyType.unwrap()(key) }
    }
}

/// Hashes and lists with at least this many elements are read in slices.
const LARGE_ELEMENTS: usize = 1024;
/// Strings of at least this many bytes are read in slices.
const LARGE_STRING: usize = 1 << 20;
/// Elements or bytes of a large value read per command (`LRANGE`, `GETRANGE`).
const LIST_CHUNK: usize = 1000;
const STRING_CHUNK: usize = 1 << 20;
/// The longest one slice of a large value holds the Redis lock.
const SLICE_LOCK: Duration = Duration::from_millis(2);

/// True when reading the value of an open key at once would hold the Redis lock too long: it
/// is then read by [`read_large_value`], in slices.
pub(crate) fn is_large(key: *mut raw::RedisModuleKey) -> bool {
    let kind = key_type(key) as isize;
    if kind != raw::REDISMODULE_KEYTYPE_STRING
        && kind != raw::REDISMODULE_KEYTYPE_HASH
        && kind != raw::REDISMODULE_KEYTYPE_LIST
    {
        return false;
    }
    // SAFETY: an open key of a type with a length.
    let length = unsafe { raw::RedisModule_ValueLength.unwrap()(key) };
    if kind == raw::REDISMODULE_KEYTYPE_STRING {
        length >= LARGE_STRING
    } else {
        length >= LARGE_ELEMENTS
    }
}

/// A key's value and RedisGears type name, read through an open key handle (or opened here when
/// `key` is null): a string as text, a hash as its fields in RedisGears' dict order, a list as a
/// list; sets, sorted sets, streams and module keys have no value.
pub(crate) fn read_value(
    ctx: &Context,
    name: &[u8],
    key: *mut raw::RedisModuleKey,
) -> (Record, &'static str) {
    let owned = key.is_null();
    let key = if owned { open_key(ctx, name) } else { key };
    let kind = key_type(key);
    let value = match kind as isize {
        // Not StringDMA: for an `int` or `embstr` string it rewrites the stored value as a new
        // raw string even for reading, which changes the keyspace it only reads.
        raw::REDISMODULE_KEYTYPE_STRING => {
            call_internal(ctx, &[b"GET".to_vec(), name.to_vec()]).unwrap_or(Record::Nil)
        }
        raw::REDISMODULE_KEYTYPE_HASH => {
            let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
            FIELD_CURSOR.with(|cursor| {
                cursor.restart();
                while scan_fields(key, cursor, &mut fields) {}
            });
            super::keys::hash_fields_record(fields)
        }
        raw::REDISMODULE_KEYTYPE_LIST => call_internal(
            ctx,
            &[
                b"LRANGE".to_vec(),
                name.to_vec(),
                b"0".to_vec(),
                b"-1".to_vec(),
            ],
        )
        .unwrap_or(Record::Nil),
        _ => Record::Nil,
    };
    if owned {
        close_key(key);
    }
    (value, type_name(kind))
}

/// One `RedisModule_ScanKey` step over a hash, appending its fields. False when done.
fn scan_fields(
    key: *mut raw::RedisModuleKey,
    cursor: &ScanCursor,
    fields: &mut Vec<(Vec<u8>, Vec<u8>)>,
) -> bool {
    // SAFETY: ScanKey over an open hash; the callback only reads.
    unsafe {
        raw::RedisModule_ScanKey.unwrap()(
            key,
            cursor.0,
            Some(field_callback),
            (fields as *mut Vec<(Vec<u8>, Vec<u8>)>).cast(),
        ) != 0
    }
}

/// What one slice of a large value found.
enum Slice {
    More,
    Done,
    /// The key was deleted, expired or replaced by another type meanwhile.
    Gone,
}

/// Reads a large value in slices, each under its own short hold of the Redis lock (at most
/// [`SLICE_LOCK`]), so that no client waits long whatever the value's size. As with `HSCAN` or
/// `LRANGE` in pages, a value changed while it is read may show a mix of before and after.
/// `None` when the key went away meanwhile or the execution stopped.
pub(crate) fn read_large_value(host: &RedisHost, name: &[u8]) -> Option<(Record, &'static str)> {
    let kind = host.with_lock(|ctx| {
        let key = open_key(ctx, name);
        let kind = key_type(key);
        close_key(key);
        kind
    });
    let value = match kind as isize {
        raw::REDISMODULE_KEYTYPE_HASH => {
            let cursor = ScanCursor::new();
            let fields = in_slices(host, name, kind, |_, key, _, part| {
                let started = Instant::now();
                while started.elapsed() < SLICE_LOCK {
                    if !scan_fields(key, &cursor, part) {
                        return Slice::Done;
                    }
                }
                Slice::More
            })?;
            super::keys::hash_fields_record(fields)
        }
        raw::REDISMODULE_KEYTYPE_LIST => {
            Record::List(in_slices(host, name, kind, |ctx, _, done, part| {
                read_list_slice(ctx, name, done, part)
            })?)
        }
        raw::REDISMODULE_KEYTYPE_STRING => {
            Record::from(in_slices(host, name, kind, |ctx, _, done, part| {
                read_string_slice(ctx, name, done, part)
            })?)
        }
        _ => return Some(host.with_lock(|ctx| read_value(ctx, name, std::ptr::null_mut()))),
    };
    Some((value, type_name(kind)))
}

/// Runs `read` slice after slice until it is done, each time under the lock with the key opened
/// again (it may have changed meanwhile) and the number of items read before. Each slice fills a small buffer that is moved into the
/// whole value after the lock is released: growing a large buffer (copying it) must not happen
/// while other clients wait.
fn in_slices<T>(
    host: &RedisHost,
    name: &[u8],
    kind: c_int,
    mut read: impl FnMut(&Context, *mut raw::RedisModuleKey, usize, &mut Vec<T>) -> Slice,
) -> Option<Vec<T>> {
    let mut whole = Vec::new();
    let mut part = Vec::new();
    loop {
        host.control().check().ok()?;
        let slice = host.with_batch_lock(|ctx| {
            let key = open_key(ctx, name);
            let slice = if key_type(key) != kind || is_expired(key) {
                Slice::Gone
            } else {
                read(ctx, key, whole.len(), &mut part)
            };
            close_key(key);
            slice
        });
        whole.append(&mut part);
        match slice {
            Slice::More => continue,
            Slice::Done => return Some(whole),
            Slice::Gone => return None,
        }
    }
}

/// Appends pages of a list (`LRANGE`), from item `done` on, for at most [`SLICE_LOCK`].
fn read_list_slice(ctx: &Context, name: &[u8], done: usize, items: &mut Vec<Record>) -> Slice {
    let started = Instant::now();
    loop {
        let start = done + items.len();
        let page = call_internal(
            ctx,
            &[
                b"LRANGE".to_vec(),
                name.to_vec(),
                start.to_string().into_bytes(),
                (start + LIST_CHUNK - 1).to_string().into_bytes(),
            ],
        );
        let Ok(Record::List(page)) = page else {
            return Slice::Gone;
        };
        let full = page.len() == LIST_CHUNK;
        items.extend(page);
        if !full {
            return Slice::Done;
        }
        if started.elapsed() >= SLICE_LOCK {
            return Slice::More;
        }
    }
}

/// Appends pages of a string (`GETRANGE`), from byte `done` on, for at most [`SLICE_LOCK`].
fn read_string_slice(ctx: &Context, name: &[u8], done: usize, bytes: &mut Vec<u8>) -> Slice {
    let started = Instant::now();
    loop {
        let start = done + bytes.len();
        let page = call_internal(
            ctx,
            &[
                b"GETRANGE".to_vec(),
                name.to_vec(),
                start.to_string().into_bytes(),
                (start + STRING_CHUNK - 1).to_string().into_bytes(),
            ],
        );
        let page = match page {
            Ok(Record::String(s)) => s.into_bytes(),
            Ok(Record::Bytes(b)) => b,
            _ => return Slice::Gone,
        };
        let full = page.len() == STRING_CHUNK;
        bytes.extend_from_slice(&page);
        if !full {
            return Slice::Done;
        }
        if started.elapsed() >= SLICE_LOCK {
            return Slice::More;
        }
    }
}
