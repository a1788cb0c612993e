//! StreamReader (run): the entries of one stream after `fromId` (exclusive), as
//! `{'key', 'id', 'value': {field: value}}`.

use std::sync::Arc;

use gears_core::{GearsError, Record, RecordReader, Result};

use super::keys::hash_record;
use super::BATCH_SIZE;
use crate::host::RedisHost;

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
            Record::String(s) => s.len(),
            Record::Bytes(b) => b.len(),
            _ => 8,
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
