//! KeysReader and KeysOnlyReader: keys matching a glob, read in batches under the Redis lock.

use std::cell::RefCell;
use std::sync::Arc;

use gears_core::extension::Projection;
use gears_core::{
    gears_dict_order, CallbackId, GearsError, KeyRecord, Record, RecordReader, Result, Session,
};
use redis_module::{raw, Context};

use super::projection::{read_fields_alone, FieldNames};
use super::raw_keys::{close_key, exists, is_expired, open_key, scan_step, ScanCursor};
use super::values::{read_in_batch, read_large_value, InBatch};
use super::BATCH_SIZE;
use crate::host::{ReadCheck, RedisHost, MAX_BATCH_LOCK};
use gears_core::glob::Glob;

enum Mode {
    /// One record per key: `{'event', 'key', 'type', 'value'}`, with what the steps read of it
    /// (`KeyName`: no value, as `readValue=False`).
    Keys(Projection),
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
    cursor: Option<ScanCursor>,
    done: bool,
}

impl KeysReader {
    pub fn keys(
        host: Arc<RedisHost>,
        pattern: &[u8],
        no_scan: bool,
        projection: Projection,
    ) -> Self {
        KeysReader {
            host,
            pattern: pattern.to_vec(),
            no_scan,
            mode: Mode::Keys(projection),
            batch_size: BATCH_SIZE,
            pattern_generator: None,
            cursor: None,
            done: false,
        }
    }

    pub fn keys_only(
        host: Arc<RedisHost>,
        pattern: &[u8],
        count: usize,
        no_scan: bool,
        pattern_generator: Option<(Arc<dyn Session>, CallbackId)>,
    ) -> Self {
        KeysReader {
            host,
            pattern: pattern.to_vec(),
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

    /// The record of one key (`key` is its open handle when the scan had one), or `None` when
    /// its value is too large to read within a batch (it is then read after, in slices).
    /// `fields`: the projection's hash fields, for this hold of the lock.
    fn record(
        &self,
        ctx: &Context,
        name: &[u8],
        key: *mut raw::RedisModuleKey,
        fields: Option<&FieldNames>,
    ) -> Option<Record> {
        match self.mode {
            Mode::KeysOnly => Some(Record::from(name.to_vec())),
            Mode::Keys(Projection::KeyName) => Some(key_record(name, None)),
            Mode::Keys(_) => match read_in_batch(ctx, name, key, fields) {
                InBatch::Read(value, key_type) => Some(key_record(name, Some((value, key_type)))),
                InBatch::TooLarge => None,
            },
        }
    }

    /// True when the records hold values (read under the lock).
    fn reads_values(&self) -> bool {
        matches!(&self.mode, Mode::Keys(projection) if projection.reads_value())
    }

    /// The projection's hash fields as Redis strings, for one hold of the lock.
    fn field_names<'a>(&'a self, ctx: &'a Context) -> Option<FieldNames<'a>> {
        match &self.mode {
            Mode::Keys(Projection::HashFields(names)) => Some(FieldNames::new(ctx, names)),
            _ => None,
        }
    }

    /// What the execution's ACL user may read, for this hold of the lock.
    fn read_check(&self, ctx: &Context) -> Result<ReadCheck> {
        let user = self.host.user();
        let found = user
            .lookup(ctx)
            .ok_or_else(|| GearsError::Redis(user.gone_error()))?;
        Ok(ReadCheck::new(ctx, found))
    }

    /// Records of keys whose values were too large for the batch, each read in slices.
    fn read_deferred(&self, names: Vec<Vec<u8>>, batch: &mut Vec<Record>) {
        for name in names {
            let read = match &self.mode {
                Mode::Keys(Projection::HashFields(names)) => {
                    read_fields_alone(&self.host, &name, names)
                }
                _ => read_large_value(&self.host, &name),
            };
            if let Some(value) = read {
                batch.push(key_record(&name, Some(value)));
            }
        }
    }
}

fn key_record(name: &[u8], value: Option<(Record, &str)>) -> Record {
    let (value, key_type) = match value {
        Some((value, key_type)) => (Some(value), key_type.to_string()),
        None => (None, String::new()),
    };
    Record::Key(Box::new(KeyRecord {
        key: name.to_vec(),
        value,
        key_type,
        event: None,
    }))
}

/// Scan steps between two looks at the clock while a batch that reads no values holds the lock.
const CLOCK_EVERY: u32 = 8;

/// True when `pattern` has no glob special characters, so it names exactly one key.
fn is_literal(pattern: &[u8]) -> bool {
    !pattern
        .iter()
        .any(|c| matches!(c, b'*' | b'?' | b'[' | b'\\'))
}

thread_local! {
    /// The last hash layout seen and its RedisGears dict order: hashes of one data set mostly
    /// share their field names, so the order is computed once.
    static LAST_ORDER: RefCell<(Vec<Vec<u8>>, Vec<usize>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// The fields of a hash as a map in RedisGears' dict order.
pub(crate) fn hash_fields_record(fields: Vec<(Vec<u8>, Vec<u8>)>) -> Record {
    let mut fields: Vec<Option<(Vec<u8>, Vec<u8>)>> = fields.into_iter().map(Some).collect();
    let entries = LAST_ORDER.with(|cache| {
        let mut cache = cache.borrow_mut();
        let same = cache.0.len() == fields.len()
            && cache
                .0
                .iter()
                .zip(&fields)
                .all(|(a, b)| b.as_ref().is_some_and(|(f, _)| a == f));
        if !same {
            let names: Vec<Vec<u8>> = fields
                .iter()
                .map(|f| f.as_ref().map(|(name, _)| name.clone()).unwrap_or_default())
                .collect();
            let order = gears_dict_order(&names);
            *cache = (names, order);
        }
        cache
            .1
            .iter()
            .filter_map(|i| fields.get_mut(*i).and_then(Option::take))
            .map(|(f, v)| (Record::from(f), Record::from(v)))
            .collect()
    });
    Record::Map(entries)
}

/// A flat `[field, value, ...]` reply as a map in RedisGears' dict order.
pub(crate) fn hash_record(flat: Vec<Record>) -> Record {
    let bytes = |r: Record| match r {
        Record::String(s) => s.into_bytes(),
        Record::Bytes(b) => b,
        other => gears_core::python_str(&other).into_bytes(),
    };
    let mut fields = Vec::with_capacity(flat.len() / 2);
    let mut items = flat.into_iter();
    while let (Some(field), Some(value)) = (items.next(), items.next()) {
        fields.push((bytes(field), bytes(value)));
    }
    hash_fields_record(fields)
}

impl RecordReader for KeysReader {
    fn next_batch(&mut self) -> Result<Option<Vec<Record>>> {
        if self.done {
            return Ok(None);
        }
        self.host.control().check()?;
        self.generate_pattern()?;
        if self.no_scan || is_literal(&self.pattern) {
            self.done = true;
            // KeysReader's noScan yields the key even when it is missing (type 'empty'); a
            // literal pattern, like SCAN MATCH, and KeysOnlyReader only yield existing keys.
            let must_exist = !self.no_scan || matches!(self.mode, Mode::KeysOnly);
            let mut deferred = Vec::new();
            let mut batch = self.host.with_lock(|ctx| -> Result<Vec<Record>> {
                let check = self.read_check(ctx)?;
                let key = open_key(ctx, &self.pattern);
                let allowed = check.allows_bytes(&self.pattern, key);
                close_key(key);
                if !allowed || (must_exist && !exists(ctx, &self.pattern)) {
                    return Ok(Vec::new());
                }
                let fields = self.field_names(ctx);
                match self.record(ctx, &self.pattern, std::ptr::null_mut(), fields.as_ref()) {
                    Some(record) => Ok(vec![record]),
                    None => {
                        deferred.push(self.pattern.clone());
                        Ok(Vec::new())
                    }
                }
            })?;
            self.read_deferred(deferred, &mut batch);
            return Ok(Some(batch));
        }
        let cursor = self.cursor.take().unwrap_or_else(ScanCursor::new);
        let mut finished = false;
        let mut deferred = Vec::new();
        let glob = Glob::new(&self.pattern);
        let batch = self.host.with_batch_lock(|ctx| -> Result<Vec<Record>> {
            let check = self.read_check(ctx)?;
            let fields = self.field_names(ctx);
            let started = std::time::Instant::now();
            let mut batch = Vec::new();
            // A step is one bucket of the keyspace's table (on Valkey up to 7 keys and more
            // chained). Reading values, the clock is read after every step; reading names only,
            // every few steps.
            let clock_every = if self.reads_values() { 1 } else { CLOCK_EVERY };
            let mut steps = 0u32;
            while batch.len() < self.batch_size {
                if steps.is_multiple_of(clock_every) && started.elapsed() >= MAX_BATCH_LOCK {
                    break;
                }
                steps = steps.wrapping_add(1);
                let more = scan_step(ctx, &cursor, &mut |name, name_string, key| {
                    if !glob.matches(name) || is_expired(key) || !check.allows(name_string, key) {
                        return;
                    }
                    match self.record(ctx, name, key, fields.as_ref()) {
                        Some(record) => batch.push(record),
                        None => deferred.push(name.to_vec()),
                    }
                });
                if !more {
                    finished = true;
                    break;
                }
            }
            Ok(batch)
        });
        let mut batch = batch?;
        self.read_deferred(deferred, &mut batch);
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
