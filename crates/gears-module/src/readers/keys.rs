//! KeysReader and KeysOnlyReader: keys matching a glob, read in batches under the Redis lock.

use std::cell::RefCell;
use std::sync::Arc;

use gears_core::{
    gears_dict_order, CallbackId, GearsError, KeyRecord, Record, RecordReader, Result, Session,
};
use redis_module::{Context, KeyType, KeysCursor};

use super::BATCH_SIZE;
use crate::glob::glob_match;
use crate::host::{call, RedisHost};

/// `RedisModule_Scan`'s cursor. It is only used under the Redis lock, by one thread at a time.
struct Cursor(KeysCursor);

// SAFETY: the cursor is a heap object of Redis's; the reader owning it is used by one thread at
// a time and only touches it while holding the Redis lock.
unsafe impl Send for Cursor {}

enum Mode {
    /// One record per key: `{'event', 'key', 'type', 'value'}`.
    Keys { read_value: bool },
    /// Key names only.
    KeysOnly,
}

/// Scans keys that match a pattern (or reads one exact key).
pub(crate) struct KeysReader {
    host: Arc<RedisHost>,
    pattern: Vec<u8>,
    no_scan: bool,
    mode: Mode,
    batch_size: usize,
    pattern_generator: Option<(Arc<dyn Session>, CallbackId)>,
    cursor: Option<Cursor>,
    done: bool,
}

impl KeysReader {
    pub fn keys(host: Arc<RedisHost>, pattern: &str, no_scan: bool, read_value: bool) -> Self {
        KeysReader {
            host,
            pattern: pattern.as_bytes().to_vec(),
            no_scan,
            mode: Mode::Keys { read_value },
            batch_size: BATCH_SIZE,
            pattern_generator: None,
            cursor: None,
            done: false,
        }
    }

    pub fn keys_only(
        host: Arc<RedisHost>,
        pattern: &str,
        count: usize,
        no_scan: bool,
        pattern_generator: Option<(Arc<dyn Session>, CallbackId)>,
    ) -> Self {
        KeysReader {
            host,
            pattern: pattern.as_bytes().to_vec(),
            no_scan,
            mode: Mode::KeysOnly,
            batch_size: count.max(1),
            pattern_generator,
            cursor: None,
            done: false,
        }
    }

    /// `patternGenerator()` returns `(pattern, noScan)`.
    fn generate_pattern(&mut self) -> Result<()> {
        let Some((session, callback)) = self.pattern_generator.take() else {
            return Ok(());
        };
        let mut generated = Err(GearsError::Internal("pattern generator did not run".into()));
        session.enter(&mut |runtime| {
            generated = runtime
                .call(callback, &[])
                .and_then(|value| runtime.to_core(value));
        });
        match generated? {
            Record::List(items) if items.len() == 2 => {
                self.pattern = match &items[0] {
                    Record::String(s) => s.as_bytes().to_vec(),
                    Record::Bytes(b) => b.clone(),
                    other => gears_core::python_str(other).into_bytes(),
                };
                self.no_scan = items[1].is_truthy();
                Ok(())
            }
            _ => Err(GearsError::Callback(
                "patternGenerator must return a (pattern, noScan) pair".into(),
            )),
        }
    }

    fn record(&self, ctx: &Context, name: &[u8]) -> Record {
        match self.mode {
            Mode::KeysOnly => Record::from(name.to_vec()),
            Mode::Keys { read_value } => {
                let key = String::from_utf8_lossy(name).into_owned();
                let (value, key_type) = if read_value {
                    let (value, key_type) = read_key(ctx, name);
                    (Some(value), key_type)
                } else {
                    (None, String::new())
                };
                Record::Key(Box::new(KeyRecord {
                    key,
                    value,
                    key_type,
                    event: None,
                }))
            }
        }
    }
}

/// True when `pattern` has no glob special characters, so it names exactly one key.
fn is_literal(pattern: &[u8]) -> bool {
    !pattern
        .iter()
        .any(|c| matches!(c, b'*' | b'?' | b'[' | b'\\'))
}

/// A key's value and type, as RedisGears 1.2 reads them: a string as text, a hash as a dict
/// (in RedisGears' dict order), a list as a list; sets, sorted sets, streams and module keys
/// have no value. A stream's type is `unknown`, a missing key's `empty`.
fn read_key(ctx: &Context, name: &[u8]) -> (Record, String) {
    let key_name = ctx.create_string(name.to_vec());
    let key = ctx.open_key(&key_name);
    let key_type = key.key_type();
    let type_name = match key_type {
        KeyType::Empty => "empty",
        KeyType::String => "string",
        KeyType::List => "list",
        KeyType::Hash => "hash",
        KeyType::Set => "set",
        KeyType::ZSet => "zset",
        KeyType::Module => "module",
        KeyType::Stream => "unknown",
    };
    let value = match key_type {
        KeyType::String => match key.read() {
            Ok(Some(bytes)) => Record::from(bytes.to_vec()),
            _ => Record::Nil,
        },
        KeyType::Hash => match call(ctx, &[b"HGETALL".to_vec(), name.to_vec()]) {
            Ok(Record::List(flat)) => hash_record(flat),
            _ => Record::Nil,
        },
        KeyType::List => call(
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
    (value, type_name.to_string())
}

/// A flat `[field, value, ...]` reply as a map in RedisGears' dict order.
pub(crate) fn hash_record(flat: Vec<Record>) -> Record {
    let mut pairs: Vec<Option<(Record, Record)>> = Vec::with_capacity(flat.len() / 2);
    let mut items = flat.into_iter();
    while let (Some(field), Some(value)) = (items.next(), items.next()) {
        pairs.push(Some((field, value)));
    }
    let names: Vec<Vec<u8>> = pairs
        .iter()
        .map(|p| match p {
            Some((Record::String(s), _)) => s.as_bytes().to_vec(),
            Some((Record::Bytes(b), _)) => b.clone(),
            _ => Vec::new(),
        })
        .collect();
    let order = gears_dict_order(&names);
    Record::Map(order.into_iter().filter_map(|i| pairs[i].take()).collect())
}

impl RecordReader for KeysReader {
    fn next_batch(&mut self) -> Result<Option<Vec<Record>>> {
        if self.done {
            return Ok(None);
        }
        self.generate_pattern()?;
        if self.no_scan || is_literal(&self.pattern) {
            self.done = true;
            // KeysReader's noScan yields the key even when it is missing (type 'empty'); a
            // literal pattern, like SCAN MATCH, and KeysOnlyReader only yield existing keys.
            let must_exist = !self.no_scan || matches!(self.mode, Mode::KeysOnly);
            let batch = self.host.with_lock(|ctx| {
                let name = ctx.create_string(self.pattern.clone());
                if must_exist && ctx.open_key(&name).key_type() == KeyType::Empty {
                    return Vec::new();
                }
                vec![self.record(ctx, &self.pattern)]
            });
            return Ok(Some(batch));
        }
        let cursor = self
            .cursor
            .take()
            .unwrap_or_else(|| Cursor(KeysCursor::new()));
        let (pattern, batch_size) = (&self.pattern, self.batch_size);
        let mut finished = false;
        let batch = self.host.with_lock(|ctx| {
            let names = RefCell::new(Vec::new());
            while names.borrow().len() < batch_size {
                let more = cursor.0.scan(ctx, &|_ctx, name, _key| {
                    if glob_match(pattern, name.as_slice()) {
                        names.borrow_mut().push(name.as_slice().to_vec());
                    }
                });
                if !more {
                    finished = true;
                    break;
                }
            }
            names
                .into_inner()
                .iter()
                .map(|name| self.record(ctx, name))
                .collect::<Vec<_>>()
        });
        self.done = finished;
        self.cursor = Some(cursor);
        Ok(Some(batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_patterns() {
        assert!(is_literal(b"user:1"));
        assert!(!is_literal(b"user:*"));
        assert!(!is_literal(b"user:[12]"));
    }
}
