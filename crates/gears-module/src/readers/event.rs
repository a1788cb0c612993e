//! The record of one keyspace event, as a KeysReader registration's pipeline gets it:
//! `{'key', 'value', 'type', 'event'}` (or `{'key', 'event'}` without `readValue`), read when the
//! execution runs, as the registration's ACL user.

use gears_core::{GearsError, KeyRecord, Record, Result};

use super::raw_keys::{close_key, key_type, open_key, type_name};
use super::values::{read_in_batch, read_large_value, InBatch};
use crate::host::{may_read_key, RedisHost};

/// The event's record; `None` when the registration's user may not read the key (the event is
/// not theirs to see). A value too large to read at once (over 256 KiB) is read in slices,
/// unless `whole_only` (a sync run, which holds the Redis lock all along: it gets no value).
pub(crate) fn event_record(
    host: &RedisHost,
    name: &[u8],
    event: &str,
    read_value: bool,
    whole_only: bool,
) -> Result<Option<Record>> {
    let read = host.with_lock(|ctx| {
        let user = host.user();
        let found = user
            .lookup(ctx)
            .ok_or_else(|| GearsError::Redis(user.gone_error()))?;
        let key = open_key(ctx, name);
        let allowed = may_read_key(ctx, &found, name, key);
        let read = match (allowed, read_value) {
            (false, _) => None,
            (true, false) => Some(None),
            (true, true) => Some(Some((
                read_in_batch(ctx, name, key, None),
                type_name(key_type(key)),
            ))),
        };
        close_key(key);
        Ok::<_, GearsError>(read)
    })?;
    let value = match read {
        None => return Ok(None),
        Some(None) => None,
        Some(Some((InBatch::Read(value, key_type), _))) => Some((value, key_type.to_string())),
        Some(Some((InBatch::TooLarge, key_type))) if whole_only => {
            Some((Record::Nil, key_type.to_string()))
        }
        // Read in slices; a key that went away meanwhile is empty.
        Some(Some((InBatch::TooLarge, _))) => Some(match read_large_value(host, name) {
            Some((value, key_type)) => (value, key_type.to_string()),
            None => (Record::Nil, "empty".to_string()),
        }),
    };
    Ok(Some(key_record(name, event, value)))
}

/// What reading an event's record ahead gave.
pub(crate) enum Ahead {
    Record(Record),
    /// The registration's user may not read the key: not their event.
    NotAllowed,
    /// Left for the run to read (a value too large to read at once, the user gone).
    Later,
}

/// Reads the records of a batch of queued events (key, event, database) under one hold of the
/// Redis lock, on `host`'s context and as its user: a drained queue takes the lock once per
/// batch instead of once per event.
pub(crate) fn records_ahead(
    host: &RedisHost,
    events: &[(&[u8], &str, i32)],
    read_value: bool,
) -> Vec<Ahead> {
    host.with_lock(|ctx| {
        let user = host.user();
        let Some(found) = user.lookup(ctx) else {
            return events.iter().map(|_| Ahead::Later).collect();
        };
        events
            .iter()
            .map(|(name, event, db)| {
                // SAFETY: under the Redis lock; only this context's own client changes database.
                unsafe { redis_module::raw::RedisModule_SelectDb.unwrap()(ctx.ctx, *db) };
                let key = open_key(ctx, name);
                let ahead = if !may_read_key(ctx, &found, name, key) {
                    Ahead::NotAllowed
                } else if !read_value {
                    Ahead::Record(key_record(name, event, None))
                } else {
                    match read_in_batch(ctx, name, key, None) {
                        InBatch::Read(value, key_type) => Ahead::Record(key_record(
                            name,
                            event,
                            Some((value, key_type.to_string())),
                        )),
                        InBatch::TooLarge => Ahead::Later,
                    }
                };
                close_key(key);
                ahead
            })
            .collect()
    })
}

fn key_record(name: &[u8], event: &str, value: Option<(Record, String)>) -> Record {
    let (value, key_type) = match value {
        Some((value, key_type)) => (Some(value), key_type),
        None => (None, String::new()),
    };
    Record::Key(Box::new(KeyRecord {
        key: name.to_vec(),
        value,
        key_type,
        event: Some(event.to_string()),
    }))
}
