//! Reading a key's value for its record without holding the Redis lock for long, whatever the
//! value's size.
//!
//! Inside a reader's batch a value is read only while it stays small ([`IN_BATCH_BYTES`]): a
//! string's length is known before reading it; a hash or a list is read element by element and
//! given up as soon as it passes the budget (its elements may be few but large). A value that is
//! too large is read after the batch, by [`read_large_value`], in slices of at most
//! [`SLICE_LOCK`] and [`SLICE_BYTES`] each under their own hold of the lock.

use std::os::raw::c_long;
use std::time::{Duration, Instant};

use gears_core::Record;
use redis_module::{raw, Context};

use super::projection::FieldNames;
use super::raw_keys::{
    close_key, field_callback, is_expired, key_type, open_key, string_bytes, type_name, ScanCursor,
};
use super::ITEM_OVERHEAD;
use crate::host::{call_internal, RedisHost};

/// The most a value read inside a batch may hold.
const IN_BATCH_BYTES: usize = 256 << 10;
/// The longest one slice of a large value holds the Redis lock.
const SLICE_LOCK: Duration = Duration::from_millis(2);
/// The most one slice of a large value reads.
const SLICE_BYTES: usize = 4 << 20;
/// Bytes of a string read per `GETRANGE`.
const STRING_CHUNK: usize = 1 << 20;

thread_local! {
    /// One cursor per reader thread for the fields of hashes, restarted for each key.
    static FIELD_CURSOR: ScanCursor = ScanCursor::new();
}

/// What reading a value inside a batch gave.
pub(crate) enum InBatch {
    /// The value and the RedisGears name of its type.
    Read(Record, &'static str),
    /// Too large for a batch: read it with [`read_large_value`].
    TooLarge,
}

/// A key's value and RedisGears type name, read through an open key handle (or opened here when
/// `key` is null): a string as text, a hash as its fields in RedisGears' dict order (only
/// `fields` when given), a list as a list; sets, sorted sets, streams and module keys have no
/// value.
pub(crate) fn read_in_batch(
    ctx: &Context,
    name: &[u8],
    key: *mut raw::RedisModuleKey,
    fields: Option<&FieldNames>,
) -> InBatch {
    let owned = key.is_null();
    let key = if owned { open_key(ctx, name) } else { key };
    let kind = key_type(key);
    let value = match kind as isize {
        raw::REDISMODULE_KEYTYPE_STRING if value_length(key) > IN_BATCH_BYTES => None,
        // Not StringDMA: for an `int` or `embstr` string it rewrites the stored value as a new
        // raw string even for reading, which changes the keyspace it only reads.
        raw::REDISMODULE_KEYTYPE_STRING => {
            Some(call_internal(ctx, &[b"GET".to_vec(), name.to_vec()]).unwrap_or(Record::Nil))
        }
        raw::REDISMODULE_KEYTYPE_HASH if fields.is_some() => fields
            .and_then(|f| f.read(key, IN_BATCH_BYTES))
            .map(super::keys::hash_fields_record),
        raw::REDISMODULE_KEYTYPE_HASH => FIELD_CURSOR.with(|cursor| {
            cursor.restart();
            let mut fields = Fields::default();
            loop {
                let more = scan_fields(key, cursor, &mut fields);
                if fields.bytes > IN_BATCH_BYTES {
                    return None;
                }
                if !more {
                    return Some(super::keys::hash_fields_record(fields.items));
                }
            }
        }),
        raw::REDISMODULE_KEYTYPE_LIST => {
            let mut items = Items::default();
            let length = value_length(key);
            while items.values.len() < length {
                if !list_element(ctx, key, items.values.len(), &mut items)
                    || items.bytes > IN_BATCH_BYTES
                {
                    break;
                }
            }
            (items.bytes <= IN_BATCH_BYTES).then_some(Record::List(items.values))
        }
        _ => Some(Record::Nil),
    };
    if owned {
        close_key(key);
    }
    match value {
        Some(value) => InBatch::Read(value, type_name(kind)),
        None => InBatch::TooLarge,
    }
}

fn value_length(key: *mut raw::RedisModuleKey) -> usize {
    // SAFETY: an open key of a type with a length.
    unsafe { raw::RedisModule_ValueLength.unwrap()(key) }
}

/// Hash fields read so far, and their size.
#[derive(Default)]
struct Fields {
    items: Vec<(Vec<u8>, Vec<u8>)>,
    bytes: usize,
}

/// List elements (or string bytes) read so far, and their size.
#[derive(Default)]
struct Items {
    values: Vec<Record>,
    bytes: usize,
}

/// One `RedisModule_ScanKey` step over a hash, appending its fields. False when done.
fn scan_fields(key: *mut raw::RedisModuleKey, cursor: &ScanCursor, fields: &mut Fields) -> bool {
    let before = fields.items.len();
    // SAFETY: ScanKey over an open hash; the callback only reads.
    let more = unsafe {
        raw::RedisModule_ScanKey.unwrap()(
            key,
            cursor.as_ptr(),
            Some(field_callback),
            (&mut fields.items as *mut Vec<(Vec<u8>, Vec<u8>)>).cast(),
        ) != 0
    };
    fields.bytes += fields.items[before..]
        .iter()
        .map(|(f, v)| f.len() + v.len() + ITEM_OVERHEAD)
        .sum::<usize>();
    more
}

/// Appends the list element at `index`; false when there is none.
fn list_element(
    ctx: &Context,
    key: *mut raw::RedisModuleKey,
    index: usize,
    items: &mut Items,
) -> bool {
    // SAFETY: an open list key; the element is a new string, freed right after it is copied.
    unsafe {
        let element = raw::RedisModule_ListGet.unwrap()(key, index as c_long);
        if element.is_null() {
            return false;
        }
        let bytes = string_bytes(element).to_vec();
        raw::RedisModule_FreeString.unwrap()(ctx.ctx, element);
        items.bytes += bytes.len() + ITEM_OVERHEAD;
        items.values.push(Record::from(bytes));
    }
    true
}

/// What one slice of a large value found.
enum Slice {
    More,
    Done,
    /// The key was deleted, expired or replaced by another type meanwhile.
    Gone,
}

/// The most a value read in a key event (a key about to be removed) may hold.
const KEY_EVENT_BYTES: usize = 1 << 20;

/// The value and RedisGears type name of an open key, read with the key API only (no command
/// may run while a key is being removed), for a key event. `None` for a value past 1 MiB.
pub(crate) fn read_open_key(
    ctx: &Context,
    key: *mut raw::RedisModuleKey,
) -> Option<(Record, &'static str)> {
    let kind = key_type(key);
    let value = match kind as isize {
        raw::REDISMODULE_KEYTYPE_STRING => {
            let mut len = 0usize;
            // SAFETY: an open string key, read through its buffer and copied at once.
            unsafe {
                let ptr = raw::RedisModule_StringDMA.unwrap()(
                    key,
                    &mut len,
                    raw::REDISMODULE_READ as std::os::raw::c_int,
                );
                if ptr.is_null() || len > KEY_EVENT_BYTES {
                    return None;
                }
                Record::from(std::slice::from_raw_parts(ptr.cast::<u8>(), len).to_vec())
            }
        }
        raw::REDISMODULE_KEYTYPE_HASH => {
            let cursor = ScanCursor::new();
            let mut fields = Fields::default();
            while scan_fields(key, &cursor, &mut fields) {
                if fields.bytes > KEY_EVENT_BYTES {
                    return None;
                }
            }
            if fields.bytes > KEY_EVENT_BYTES {
                return None;
            }
            super::keys::hash_fields_record(fields.items)
        }
        raw::REDISMODULE_KEYTYPE_LIST => {
            let mut items = Items::default();
            let length = value_length(key);
            while items.values.len() < length {
                if !list_element(ctx, key, items.values.len(), &mut items)
                    || items.bytes > KEY_EVENT_BYTES
                {
                    break;
                }
            }
            if items.bytes > KEY_EVENT_BYTES {
                return None;
            }
            Record::List(items.values)
        }
        _ => Record::Nil,
    };
    Some((value, type_name(kind)))
}

/// Reads a large value in slices, each under its own short hold of the Redis lock (at most
/// [`SLICE_LOCK`] and [`SLICE_BYTES`]), so that no client waits long whatever the value's size.
/// As with `HSCAN` or `LRANGE` in pages, a value changed while it is read may show a mix of
/// before and after. `None` when the key went away meanwhile or the execution stopped.
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
            let fields = in_slices(host, name, kind, |_, key, _, part: &mut Fields| {
                let started = Instant::now();
                while started.elapsed() < SLICE_LOCK && part.bytes < SLICE_BYTES {
                    if !scan_fields(key, &cursor, part) {
                        return Slice::Done;
                    }
                }
                Slice::More
            })?;
            super::keys::hash_fields_record(fields.items)
        }
        raw::REDISMODULE_KEYTYPE_LIST => {
            let items = in_slices(host, name, kind, |ctx, key, done, part: &mut Items| {
                let started = Instant::now();
                let length = value_length(key);
                while started.elapsed() < SLICE_LOCK && part.bytes < SLICE_BYTES {
                    let index = done + part.values.len();
                    if index >= length || !list_element(ctx, key, index, part) {
                        return Slice::Done;
                    }
                }
                Slice::More
            })?;
            Record::List(items.values)
        }
        raw::REDISMODULE_KEYTYPE_STRING => {
            let parts = in_slices(host, name, kind, |ctx, _, done, part: &mut Items| {
                read_string_slice(ctx, name, done, part)
            })?;
            let mut bytes = Vec::with_capacity(parts.bytes);
            for part in parts.values {
                match part {
                    Record::String(s) => bytes.extend_from_slice(s.as_bytes()),
                    Record::Bytes(b) => bytes.extend_from_slice(&b),
                    _ => {}
                }
            }
            Record::from(bytes)
        }
        // Deleted since the batch saw it.
        raw::REDISMODULE_KEYTYPE_EMPTY => return None,
        _ => {
            return match host.with_lock(|ctx| read_in_batch(ctx, name, std::ptr::null_mut(), None))
            {
                InBatch::Read(value, kind) => Some((value, kind)),
                InBatch::TooLarge => None,
            }
        }
    };
    Some((value, type_name(kind)))
}

/// A buffer a slice fills, moved into the whole value outside the lock.
trait Part: Default {
    /// Items (list elements, string chunks, hash fields) held.
    fn count(&self) -> usize;
    /// Appends `other`, emptying it.
    fn take(&mut self, other: &mut Self);
}

impl Part for Fields {
    fn count(&self) -> usize {
        self.items.len()
    }
    fn take(&mut self, other: &mut Self) {
        self.items.append(&mut other.items);
        self.bytes += std::mem::take(&mut other.bytes);
    }
}

impl Part for Items {
    fn count(&self) -> usize {
        self.values.len()
    }
    fn take(&mut self, other: &mut Self) {
        self.values.append(&mut other.values);
        self.bytes += std::mem::take(&mut other.bytes);
    }
}

/// Runs `read` slice after slice until it is done, each time under the lock with the key opened
/// again (it may have changed meanwhile) and the number of items read before. Each slice fills a
/// small buffer that is moved into the whole value after the lock is released: growing a large
/// buffer (copying it) must not happen while other clients wait.
fn in_slices<P: Part>(
    host: &RedisHost,
    name: &[u8],
    kind: std::os::raw::c_int,
    mut read: impl FnMut(&Context, *mut raw::RedisModuleKey, usize, &mut P) -> Slice,
) -> Option<P> {
    let mut whole = P::default();
    let mut part = P::default();
    loop {
        host.control().check().ok()?;
        let slice = host.with_batch_lock(|ctx| {
            let key = open_key(ctx, name);
            let slice = if key_type(key) != kind || is_expired(key) {
                Slice::Gone
            } else {
                read(ctx, key, whole.count(), &mut part)
            };
            close_key(key);
            slice
        });
        whole.take(&mut part);
        match slice {
            Slice::More => continue,
            Slice::Done => return Some(whole),
            Slice::Gone => return None,
        }
    }
}

/// Appends chunks of a string (`GETRANGE`), after the `done` chunks read before, for at most
/// [`SLICE_LOCK`] and [`SLICE_BYTES`].
fn read_string_slice(ctx: &Context, name: &[u8], done: usize, part: &mut Items) -> Slice {
    let started = Instant::now();
    loop {
        let start = (done + part.values.len()) * STRING_CHUNK;
        let chunk = call_internal(
            ctx,
            &[
                b"GETRANGE".to_vec(),
                name.to_vec(),
                start.to_string().into_bytes(),
                (start + STRING_CHUNK - 1).to_string().into_bytes(),
            ],
        );
        let length = match &chunk {
            Ok(Record::String(s)) => s.len(),
            Ok(Record::Bytes(b)) => b.len(),
            _ => return Slice::Gone,
        };
        if let Ok(chunk) = chunk {
            part.values.push(chunk);
        }
        part.bytes += length;
        if length < STRING_CHUNK {
            return Slice::Done;
        }
        if started.elapsed() >= SLICE_LOCK || part.bytes >= SLICE_BYTES {
            return Slice::More;
        }
    }
}
