//! StreamReader (run): the entries of one stream after `fromId` (exclusive), as
//! `{'key', 'id', 'value': {field: value}}`.

use std::sync::Arc;

use std::os::raw::c_long;

use gears_core::{GearsError, Record, RecordReader, Result};
use redis_module::{raw, Context};

use super::keys::{hash_fields_record, hash_record};
use super::raw_keys::{close_key, key_type, open_key, string_bytes};
use super::BATCH_SIZE;
use crate::host::RedisHost;
use crate::resp::push_decimal;

pub(crate) struct StreamReader {
    host: Arc<RedisHost>,
    key: Vec<u8>,
    last_id: String,
    /// Entries asked for per `XREAD`: halved after a page of more than [`PAGE_BYTES`], doubled
    /// (up to [`BATCH_SIZE`]) after a small one, so that one read holds the lock briefly
    /// whatever the size of the entries.
    count: usize,
    done: bool,
}

/// The most one `XREAD` should return.
const PAGE_BYTES: usize = 1 << 20;

impl StreamReader {
    pub fn new(host: Arc<RedisHost>, key: &[u8], from_id: &str) -> Self {
        StreamReader {
            host,
            key: key.to_vec(),
            last_id: from_id.to_string(),
            count: 64,
            done: false,
        }
    }
}

/// The bytes of the field names and values of a stream entry's `[field, value, ...]` list.
fn entry_bytes(fields: &[Record]) -> usize {
    fields
        .iter()
        .map(|item| match item {
            Record::String(s) => s.len() + super::ITEM_OVERHEAD,
            Record::Bytes(b) => b.len() + super::ITEM_OVERHEAD,
            _ => super::ITEM_OVERHEAD,
        })
        .sum()
}

/// A stream entry's record, `{'key', 'id', 'value': {field: value}}` (RedisGears' order), from
/// its flat `[field, value, ...]` list.
pub(crate) fn stream_entry(key: &[u8], id: &str, flat: Vec<Record>) -> Record {
    Record::Map(vec![
        (Record::from("key"), Record::from(key.to_vec())),
        (Record::from("id"), Record::from(id)),
        (Record::from("value"), hash_record(flat)),
    ])
}

/// A stream entry's record from its id and fields (read natively, see [`read_after`]).
pub(crate) fn stream_entry_fields(key: &[u8], id: &str, fields: EntryFields) -> Record {
    Record::Map(vec![
        (Record::from("key"), Record::from(key.to_vec())),
        (Record::from("id"), Record::from(id)),
        (Record::from("value"), hash_fields_record(fields)),
    ])
}

/// A stream entry id, `ms-seq` (`ms` alone is `ms-0`).
pub(crate) fn parse_stream_id(id: &str) -> Option<raw::RedisModuleStreamID> {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    Some(raw::RedisModuleStreamID {
        ms: ms.parse().ok()?,
        seq: seq.parse().ok()?,
    })
}

/// A stream entry's fields, as (name, value) pairs in the entry's order.
pub(crate) type EntryFields = Vec<(Vec<u8>, Vec<u8>)>;

/// Entries read by [`read_after`]: their ids (`ms-seq`) and fields, in order.
pub(crate) struct StreamRange {
    pub entries: Vec<(String, EntryFields)>,
    /// The stream has no entry after the last one read (or is not a stream).
    pub exhausted: bool,
    /// The time part of the id of the entry after the last one read, when looked at (a full
    /// read): for `XADD *` ids, when it was added.
    pub next_ms: Option<u64>,
}

/// The module stream iterator over the entries of one stream after an id (exclusive), under
/// the Redis lock; stopped, and its key closed, when dropped.
struct Entries {
    ctx: *mut raw::RedisModuleCtx,
    key: *mut raw::RedisModuleKey,
}

impl Entries {
    /// `None` when `name` holds no stream.
    fn after(ctx: &Context, name: &[u8], after: raw::RedisModuleStreamID) -> Option<Self> {
        let key = open_key(ctx, name);
        if key_type(key) as isize != raw::REDISMODULE_KEYTYPE_STREAM {
            close_key(key);
            return None;
        }
        let mut start = after;
        let flags = raw::REDISMODULE_STREAM_ITERATOR_EXCLUSIVE as i32;
        // SAFETY: an open stream key, under the Redis lock.
        let started = unsafe {
            raw::RedisModule_StreamIteratorStart.unwrap()(
                key,
                flags,
                &mut start,
                std::ptr::null_mut(),
            )
        };
        if started != raw::REDISMODULE_OK as i32 {
            close_key(key);
            return None;
        }
        Some(Entries { ctx: ctx.ctx, key })
    }

    /// The next entry's id and number of fields. Every field of the entry must be read
    /// ([`Entries::next_field`]) before the next id is asked: Redis 7.0 asserts otherwise.
    fn next_id(&mut self) -> Option<(raw::RedisModuleStreamID, usize)> {
        let mut id = raw::RedisModuleStreamID { ms: 0, seq: 0 };
        let mut fields: c_long = 0;
        // SAFETY: a started iterator.
        let found = unsafe {
            raw::RedisModule_StreamIteratorNextID.unwrap()(self.key, &mut id, &mut fields)
        };
        (found == raw::REDISMODULE_OK as i32).then_some((id, fields.max(0) as usize))
    }

    /// The current entry's next field and value, copied. The iterator makes a new module string
    /// of each (freed only by a context with automatic memory, which Gears' are not): they are
    /// freed here. Every field of every entry read leaked its size before.
    fn next_field(&mut self) -> Option<(Vec<u8>, Vec<u8>)> {
        let mut field = std::ptr::null_mut();
        let mut value = std::ptr::null_mut();
        // SAFETY: a started iterator; the strings are ours, copied and freed at once.
        unsafe {
            let found =
                raw::RedisModule_StreamIteratorNextField.unwrap()(self.key, &mut field, &mut value);
            if found != raw::REDISMODULE_OK as i32 {
                return None;
            }
            let copied = (string_bytes(field).to_vec(), string_bytes(value).to_vec());
            raw::RedisModule_FreeString.unwrap()(self.ctx, field);
            raw::RedisModule_FreeString.unwrap()(self.ctx, value);
            Some(copied)
        }
    }

    /// Skips the current entry's next field (no string is made); false when none is left.
    fn skip_field(&mut self) -> bool {
        // SAFETY: a started iterator; null pointers ask for nothing.
        unsafe {
            raw::RedisModule_StreamIteratorNextField.unwrap()(
                self.key,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            ) == raw::REDISMODULE_OK as i32
        }
    }
}

impl Drop for Entries {
    fn drop(&mut self) {
        // SAFETY: started in `after`; stopped before the key is closed.
        unsafe { raw::RedisModule_StreamIteratorStop.unwrap()(self.key) };
        close_key(self.key);
    }
}

/// Reads up to `count` entries of the stream `name` after `after` (exclusive) straight from
/// the keyspace (the module stream iterator: no command, no reply to build and parse), stopping
/// early once `max_bytes` are copied. The caller holds the Redis lock and has checked the
/// user's right to read the stream.
pub(crate) fn read_after(
    ctx: &Context,
    name: &[u8],
    after: raw::RedisModuleStreamID,
    count: usize,
    max_bytes: usize,
) -> StreamRange {
    let mut range = StreamRange {
        entries: Vec::new(),
        exhausted: true,
        next_ms: None,
    };
    let Some(mut entries) = Entries::after(ctx, name, after) else {
        return range;
    };
    let mut bytes = 0usize;
    while range.entries.len() < count {
        if bytes >= max_bytes {
            range.exhausted = false;
            return range;
        }
        let Some((id, fields)) = entries.next_id() else {
            return range;
        };
        let mut entry = Vec::with_capacity(fields);
        while let Some((field, value)) = entries.next_field() {
            bytes += field.len() + value.len() + super::ITEM_OVERHEAD;
            entry.push((field, value));
        }
        range.entries.push((stream_id_string(id), entry));
    }
    // Full: does another entry follow (and since when does it wait)?
    if let Some((next, _)) = entries.next_id() {
        range.exhausted = false;
        range.next_ms = Some(next.ms);
    }
    range
}

/// An entry id as text, `ms-seq` (without the formatting machinery: one per entry read).
pub(crate) fn stream_id_string(id: raw::RedisModuleStreamID) -> String {
    let mut text = String::with_capacity(41);
    push_decimal(&mut text, id.ms);
    text.push('-');
    push_decimal(&mut text, id.seq);
    text
}

/// The number of entries of the stream `name` after `after` (exclusive), counted up to `cap`
/// (a backlog of more counts as `cap`). The caller holds the Redis lock.
pub(crate) fn count_after(
    ctx: &Context,
    name: &[u8],
    after: raw::RedisModuleStreamID,
    cap: u64,
) -> u64 {
    let Some(mut entries) = Entries::after(ctx, name, after) else {
        return 0;
    };
    let mut count = 0;
    while count < cap && entries.next_id().is_some() {
        count += 1;
        while entries.skip_field() {}
    }
    count
}

impl RecordReader for StreamReader {
    fn next_batch(&mut self) -> Result<Option<Vec<Record>>> {
        if self.done {
            return Ok(None);
        }
        let args = vec![
            b"XREAD".to_vec(),
            b"COUNT".to_vec(),
            self.count.to_string().into_bytes(),
            b"STREAMS".to_vec(),
            self.key.clone(),
            self.last_id.as_bytes().to_vec(),
        ];
        self.host.control().check()?;
        // As the user who sent the script: XREAD checks their ACL rules on the stream.
        let reply = gears_core::RedisAccess::execute(&*self.host, &args);
        crate::host::yield_to_main_thread();
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => {
                self.done = true;
                return Err(e);
            }
        };
        // [[key, [[id, [field, value, ...]], ...]]] or nil.
        let entries = match reply {
            Record::List(mut streams) if !streams.is_empty() => match streams.swap_remove(0) {
                Record::List(mut pair) if pair.len() == 2 => match pair.pop() {
                    Some(Record::List(entries)) => entries,
                    _ => Vec::new(),
                },
                _ => Vec::new(),
            },
            _ => Vec::new(),
        };
        if entries.len() < self.count {
            self.done = true;
        }
        let mut batch = Vec::with_capacity(entries.len());
        let mut bytes = 0;
        for entry in entries {
            let Record::List(mut parts) = entry else {
                return Err(GearsError::Internal("unexpected XREAD reply".into()));
            };
            if parts.len() != 2 {
                return Err(GearsError::Internal("unexpected XREAD entry".into()));
            }
            let flat = match parts.pop() {
                Some(Record::List(flat)) => {
                    bytes += entry_bytes(&flat);
                    flat
                }
                _ => Vec::new(),
            };
            let id = match parts.pop() {
                Some(Record::String(id)) => id,
                Some(Record::Bytes(id)) => String::from_utf8_lossy(&id).into_owned(),
                _ => return Err(GearsError::Internal("unexpected XREAD entry id".into())),
            };
            self.last_id = id.clone();
            batch.push(stream_entry(&self.key, &id, flat));
        }
        self.count = if bytes > PAGE_BYTES {
            (self.count / 2).max(1)
        } else if bytes < PAGE_BYTES / 4 {
            (self.count * 2).min(BATCH_SIZE)
        } else {
            self.count
        };
        if batch.is_empty() {
            return Ok(None);
        }
        Ok(Some(batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_as_text_and_back() {
        let id = |ms, seq| raw::RedisModuleStreamID { ms, seq };
        assert_eq!(stream_id_string(id(0, 0)), "0-0");
        assert_eq!(
            stream_id_string(id(1_700_000_000_123, 7)),
            "1700000000123-7"
        );
        assert_eq!(
            stream_id_string(id(u64::MAX, u64::MAX)),
            format!("{}-{}", u64::MAX, u64::MAX)
        );
        let back = parse_stream_id("1700000000123-7").unwrap();
        assert_eq!((back.ms, back.seq), (1_700_000_000_123, 7));
        let bare = parse_stream_id("42").unwrap();
        assert_eq!((bare.ms, bare.seq), (42, 0));
        assert!(parse_stream_id("x-1").is_none() && parse_stream_id("1-").is_none());
    }
}
