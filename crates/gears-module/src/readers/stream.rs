//! StreamReader (run): the entries of one stream after `fromId` (exclusive), as
//! `{'key', 'id', 'value': {field: value}}`.

use std::sync::Arc;

use gears_core::{GearsError, Record, RecordReader, Result};

use super::keys::hash_record;
use super::BATCH_SIZE;
use crate::host::RedisHost;

pub(crate) struct StreamReader {
    host: Arc<RedisHost>,
    key: String,
    last_id: String,
    done: bool,
}

impl StreamReader {
    pub fn new(host: Arc<RedisHost>, key: &str, from_id: &str) -> Self {
        StreamReader {
            host,
            key: key.to_string(),
            last_id: from_id.to_string(),
            done: false,
        }
    }
}

impl RecordReader for StreamReader {
    fn next_batch(&mut self) -> Result<Option<Vec<Record>>> {
        if self.done {
            return Ok(None);
        }
        let args = vec![
            b"XREAD".to_vec(),
            b"COUNT".to_vec(),
            BATCH_SIZE.to_string().into_bytes(),
            b"STREAMS".to_vec(),
            self.key.as_bytes().to_vec(),
            self.last_id.as_bytes().to_vec(),
        ];
        self.host.control().check()?;
        // As the user who sent the script: XREAD checks their ACL rules on the stream.
        let reply = gears_core::RedisAccess::execute(&*self.host, &args);
        std::thread::sleep(std::time::Duration::from_micros(100));
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
        if entries.len() < BATCH_SIZE {
            self.done = true;
        }
        let mut batch = Vec::with_capacity(entries.len());
        for entry in entries {
            let Record::List(mut parts) = entry else {
                return Err(GearsError::Internal("unexpected XREAD reply".into()));
            };
            if parts.len() != 2 {
                return Err(GearsError::Internal("unexpected XREAD entry".into()));
            }
            let fields = match parts.pop() {
                Some(Record::List(flat)) => hash_record(flat),
                _ => Record::Map(Vec::new()),
            };
            let id = parts.pop().unwrap_or(Record::Nil);
            if let Record::String(id) = &id {
                self.last_id = id.clone();
            }
            // RedisGears' dict order for {id, value, key}.
            batch.push(Record::Map(vec![
                (Record::from("key"), Record::String(self.key.clone())),
                (Record::from("id"), id),
                (Record::from("value"), fields),
            ]));
        }
        if batch.is_empty() {
            return Ok(None);
        }
        Ok(Some(batch))
    }
}
