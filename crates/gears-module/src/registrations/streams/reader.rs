//! Reading one batch of a stream through a registration's consumer group, as the records
//! `{'key', 'id', 'value': {field: value}}` of one execution.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use gears_core::{GearsError, Record, RecordReader, RedisAccess, Result};

use super::{lock, Cursor, CONSUMER};
use crate::host::RedisHost;

/// The most entries one `XREADGROUP` asks for (a larger batch is read in several).
const CHUNK: u64 = 512;

/// Which entries a batch reads.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// New entries (`>`): they join the group's pending list.
    New,
    /// The group's pending entries: read before, never acknowledged (a crash, a failure).
    Pending,
}

/// What a batch read, for acknowledging it.
#[derive(Default)]
pub(super) struct Batch {
    pub ids: Vec<String>,
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
    /// The last id read (pending entries are read after it).
    after: String,
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

    /// One `XREADGROUP`, counted on the cursor while the Redis lock is held (so that the count
    /// and the events agree).
    fn read(&mut self) -> Result<Option<Vec<Record>>> {
        if self.done || self.left == 0 {
            return Ok(None);
        }
        let ask = self.left.min(CHUNK);
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
        let reply = host.with_lock_unpaused(|_| {
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
