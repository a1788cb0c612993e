//! Reading one batch of a stream through a registration's consumer group, as the records
//! `{'key', 'id', 'value': {field: value}}` of one execution.
//!
//! New entries are read straight from the keyspace after the group's position (the module
//! stream iterator): the group moves (`XGROUP SETID`) only once the batch succeeded, so the
//! entries never enter the group's pending list. `XREADGROUP` (whose pending-list inserts,
//! per-entry `XCLAIM` propagation and reply were most of a batch's read) serves only to recover
//! pending entries that an older Gears left in a group, and to say why a user may not read.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gears_core::{GearsError, Record, RecordReader, RedisAccess, Result};
use redis_module::Context;

use super::groups::parse_groups;
use super::{lock, Cursor, CONSUMER};
use crate::host::{call_internal, may_run, writes_paused, RedisHost};
use crate::readers::{parse_stream_id, read_after, stream_entry_fields, StreamRange};

/// The most entries one read asks for (a larger batch is read in several).
const CHUNK: u64 = 512;
/// The most bytes of entries one read copies under the Redis lock (the rest of the batch is
/// read after the main thread had its turn).
const CHUNK_BYTES: usize = 4 << 20;

/// Which entries a batch reads.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// The entries after the group's position (acknowledged by moving the group past them).
    New,
    /// The group's pending list (`XREADGROUP ... 0`): entries an older Gears read and did not
    /// acknowledge (acknowledged with `XACK`).
    Pending,
}

/// What a batch read, for acknowledging it.
#[derive(Default)]
pub(super) struct Batch {
    pub ids: Vec<String>,
    /// The cursor's generation when the batch's first entries were read (see
    /// `CursorState::generation`).
    pub generation: u64,
    /// The group does not exist (the stream was deleted and made again, or flushed).
    pub no_group: bool,
    /// Reading failed (the user may no longer read the stream, writes are paused): no batch.
    pub read_error: Option<String>,
}

pub(super) struct GroupReader {
    host: Arc<RedisHost>,
    cursor: Arc<Cursor>,
    group: String,
    source: Source,
    /// Entries still to read for this batch.
    left: u64,
    /// The last id read (the batch's next read starts after it).
    after: String,
    /// Some read of this batch found entries (`after` is where the next one starts; before,
    /// the group's position is).
    read_any: bool,
    done: bool,
    batch: Arc<Mutex<Batch>>,
    /// The first chunk, read before the execution exists (an empty batch runs nothing).
    first: Option<Vec<Record>>,
}

impl GroupReader {
    /// Reads the batch's first entries; `None` when there are none.
    pub fn open(
        host: Arc<RedisHost>,
        cursor: Arc<Cursor>,
        group: &str,
        source: Source,
        size: u64,
        batch: Arc<Mutex<Batch>>,
    ) -> Result<Option<Self>> {
        let mut reader = GroupReader {
            host,
            cursor,
            group: group.to_string(),
            source,
            left: size.max(1),
            after: "0".into(),
            read_any: false,
            done: false,
            batch,
            first: None,
        };
        match reader.read()? {
            Some(records) => {
                reader.first = Some(records);
                Ok(Some(reader))
            }
            None => Ok(None),
        }
    }

    /// One read, counted on the cursor while the Redis lock is held (so that the count and the
    /// events agree).
    fn read(&mut self) -> Result<Option<Vec<Record>>> {
        if self.done || self.left == 0 {
            return Ok(None);
        }
        let ask = self.left.min(CHUNK);
        if self.source == Source::New {
            match self.read_new(ask)? {
                NewRead::Entries(records) => return Ok(records),
                NewRead::NoGroup => {
                    self.done = true;
                    lock(&self.batch).no_group = true;
                    return Ok(None);
                }
                // `XREADGROUP` below fails with the server's own words for it.
                NewRead::Refused => {}
            }
        }
        let from = match self.source {
            Source::New => ">".to_string(),
            Source::Pending => self.after.clone(),
        };
        let args = vec![
            b"XREADGROUP".to_vec(),
            b"GROUP".to_vec(),
            self.group.as_bytes().to_vec(),
            CONSUMER.as_bytes().to_vec(),
            b"COUNT".to_vec(),
            ask.to_string().into_bytes(),
            b"STREAMS".to_vec(),
            self.cursor.key.clone(),
            from.into_bytes(),
        ];
        self.host.control().check()?;
        let host = self.host.clone();
        let cursor = self.cursor.clone();
        let source = self.source;
        let batch = self.batch.clone();
        let first = !self.read_any;
        let reply = host.with_lock_unpaused(|_| {
            if first {
                lock(&batch).generation = lock(&cursor.state).generation;
            }
            let reply = host.execute(&args);
            let read = match &reply {
                Ok(reply) => entries_of(reply).map_or(0, |e| e.len() as u64),
                Err(_) => 0,
            };
            if source == Source::New && reply.is_ok() {
                let mut state = lock(&cursor.state);
                state.undelivered = if read < ask {
                    Some(0)
                } else {
                    state.undelivered.map(|n| n.saturating_sub(read))
                };
                state.in_flight += read;
                state.waiting_since = match state.undelivered {
                    Some(0) => None,
                    _ => Some(Instant::now()),
                };
            }
            reply
        });
        let reply = match reply {
            Ok(reply) => reply,
            Err(GearsError::Redis(e)) if e.starts_with("NOGROUP") => {
                self.done = true;
                lock(&self.batch).no_group = true;
                return Ok(None);
            }
            Err(e) => {
                self.done = true;
                return Err(e);
            }
        };
        self.read_any = true;
        let entries = into_entries(reply);
        if (entries.len() as u64) < ask {
            self.done = true;
        }
        self.left -= (entries.len() as u64).min(self.left);
        let mut records = Vec::with_capacity(entries.len());
        let mut batch = lock(&self.batch);
        for entry in entries {
            let Some((id, record)) = entry_record(&self.cursor.key, entry) else {
                continue;
            };
            self.after = id.clone();
            batch.ids.push(id);
            // An entry deleted since it was read (`XDEL`) comes back without fields: it is
            // acknowledged, not run.
            if let Some(record) = record {
                records.push(record);
            }
        }
        drop(batch);
        if records.is_empty() && self.done {
            // Only deleted entries: nothing to run, but they are acknowledged.
            return Ok((!lock(&self.batch).ids.is_empty()).then(Vec::new));
        }
        Ok(Some(records))
    }
}

/// Why a sync job does not read while writes are paused (its job tries again later).
const PAUSED: &str = "ERR writes are paused (CLIENT PAUSE); the batch waits";

/// What reading new entries found.
enum NewRead {
    /// The records of the entries read (`None`: none).
    Entries(Option<Vec<Record>>),
    /// No such group (or no such stream).
    NoGroup,
    /// The user may not read the stream through the group (or no longer exists).
    Refused,
}

impl GroupReader {
    /// Reads up to `ask` entries after the group's position (and after what this batch read
    /// already), under one hold of the Redis lock.
    fn read_new(&mut self, ask: u64) -> Result<NewRead> {
        self.host.control().check()?;
        let host = self.host.clone();
        let cursor = self.cursor.clone();
        let key = self.cursor.key.clone();
        let group = self.group.clone();
        let batch = self.batch.clone();
        let first = !self.read_any;
        let after = (!first).then(|| self.after.clone());
        // Not while writes are paused: the batch's acknowledgement (and likely its commands)
        // would be refused. An async read waits for the end of the pause; a sync one (the main
        // thread) can not, and its job tries again later.
        let read = host.with_lock_unpaused(|ctx| -> Result<Read> {
            if writes_paused() {
                return Err(GearsError::Redis(PAUSED.into()));
            }
            let (generation, position) = {
                let state = lock(&cursor.state);
                (state.generation, state.position.clone())
            };
            if first {
                lock(&batch).generation = generation;
            } else if lock(&batch).generation != generation {
                // The stream was replaced since the batch's first read: the batch ends here
                // (and is not acknowledged).
                return Ok(Read::Replaced);
            }
            let after = match after.or(position) {
                Some(after) => after,
                None => match group_position(ctx, &key, &group) {
                    Some(found) => {
                        lock(&cursor.state).group_seen = Some(found.clone());
                        found
                    }
                    None => return Ok(Read::NoGroup),
                },
            };
            let user = host.user().name().as_bytes();
            if !may_run(ctx, user, &xreadgroup(&group, &key)) {
                return Ok(Read::Refused);
            }
            let start = parse_stream_id(&after)
                .ok_or_else(|| GearsError::Internal(format!("bad stream id '{after}'")))?;
            let range = read_after(ctx, &key, start, ask as usize, CHUNK_BYTES);
            let read = range.entries.len() as u64;
            let mut state = lock(&cursor.state);
            state.undelivered = match state.undelivered {
                _ if range.exhausted => Some(0),
                // More follow than were counted (a count capped at recovery): count again.
                Some(n) if n <= read => None,
                other => other.map(|n| n - read),
            };
            state.in_flight += read;
            state.waiting_since = match state.undelivered {
                Some(0) => None,
                // The entries left wait from when the first of them came (for `duration`).
                _ => Some(added_at(range.next_ms)),
            };
            Ok(Read::Range(range))
        })?;
        let range = match read {
            Read::Range(range) => range,
            Read::NoGroup => return Ok(NewRead::NoGroup),
            Read::Refused => return Ok(NewRead::Refused),
            Read::Replaced => {
                self.done = true;
                return Ok(NewRead::Entries(None));
            }
        };
        if range.exhausted {
            self.done = true;
        }
        self.read_any = true;
        self.left -= (range.entries.len() as u64).min(self.left);
        if range.entries.is_empty() {
            return Ok(NewRead::Entries(None));
        }
        let mut records = Vec::with_capacity(range.entries.len());
        let mut batch = lock(&self.batch);
        for (id, fields) in range.entries {
            records.push(stream_entry_fields(&self.cursor.key, &id, fields));
            batch.ids.push(id.clone());
            self.after = id;
        }
        Ok(NewRead::Entries(Some(records)))
    }
}

/// When an entry whose id has this time part was added (an `XADD *` id is the time it was
/// added), or now when the id does not look like a time of the last day.
fn added_at(ms: Option<u64>) -> Instant {
    let now = Instant::now();
    let Some(ms) = ms else {
        return now;
    };
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    match wall.checked_sub(ms) {
        Some(ago) if ago < 86_400_000 => now.checked_sub(Duration::from_millis(ago)).unwrap_or(now),
        _ => now,
    }
}

/// What one hold of the lock found.
enum Read {
    Range(StreamRange),
    NoGroup,
    Refused,
    /// The stream under the name was replaced since the batch began.
    Replaced,
}

/// The group's position (its last delivered id), `None` without the group or the stream.
pub(super) fn group_position(ctx: &Context, key: &[u8], group: &str) -> Option<String> {
    let reply = call_internal(ctx, &[b"XINFO".to_vec(), b"GROUPS".to_vec(), key.to_vec()]).ok()?;
    parse_groups(reply)
        .into_iter()
        .find(|g| g.name == group)
        .map(|g| g.last_delivered)
}

/// The `XREADGROUP` that reading new entries stands for (what the user's ACL rules must allow).
pub(super) fn xreadgroup<'a>(group: &'a str, key: &'a [u8]) -> [&'a [u8]; 7] {
    [
        b"XREADGROUP",
        b"GROUP",
        group.as_bytes(),
        CONSUMER.as_bytes(),
        b"STREAMS",
        key,
        b">",
    ]
}

/// The entries of an `XREADGROUP` reply for one stream (`[[key, [[id, [f, v, ...]], ...]]]`),
/// taken out of it.
fn into_entries(reply: Record) -> Vec<Record> {
    let Record::List(streams) = reply else {
        return Vec::new();
    };
    let Some(Record::List(mut pair)) = streams.into_iter().next() else {
        return Vec::new();
    };
    match pair.get_mut(1) {
        Some(Record::List(entries)) => std::mem::take(entries),
        _ => Vec::new(),
    }
}

/// The entries of an `XREADGROUP` reply, borrowed.
fn entries_of(reply: &Record) -> Option<&Vec<Record>> {
    let Record::List(streams) = reply else {
        return None;
    };
    let Some(Record::List(pair)) = streams.first() else {
        return None;
    };
    match pair.get(1) {
        Some(Record::List(entries)) => Some(entries),
        _ => None,
    }
}

/// An entry as its id and record (`None` for an entry deleted since it was read).
fn entry_record(key: &[u8], entry: Record) -> Option<(String, Option<Record>)> {
    let Record::List(mut parts) = entry else {
        return None;
    };
    if parts.len() != 2 {
        return None;
    }
    let fields = parts.pop();
    let id = match parts.pop() {
        Some(Record::String(id)) => id,
        Some(Record::Bytes(id)) => String::from_utf8_lossy(&id).into_owned(),
        _ => return None,
    };
    let record = match fields {
        Some(Record::List(flat)) => Some(crate::readers::stream_entry(key, &id, flat)),
        _ => None,
    };
    Some((id, record))
}

impl RecordReader for GroupReader {
    fn next_batch(&mut self) -> Result<Option<Vec<Record>>> {
        if let Some(first) = self.first.take() {
            return Ok(Some(first));
        }
        loop {
            match self.read()? {
                None => return Ok(None),
                Some(records) if records.is_empty() => continue,
                Some(records) => return Ok(Some(records)),
            }
        }
    }
}
