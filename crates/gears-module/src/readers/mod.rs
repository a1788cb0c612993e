//! The readers `run()` can start, built from a plan's [`ReaderSpec`].

mod event;
mod keys;
mod native;
mod prefetch;
mod projection;
mod raw_keys;
mod shards;
mod stream;
mod values;

use std::sync::Arc;

use gears_core::extension::Projection;
use gears_core::{ExecutionPlan, GeneratorReader, ReaderSpec, RecordReader, Session};

use crate::host::RedisHost;

pub(crate) use event::{event_record, records_ahead, Ahead};
pub(crate) use keys::KeysReader;
pub(crate) use raw_keys::{close_key, key_type, open_key, opening_key, string_bytes, type_name};
pub(crate) use stream::{
    count_after, parse_stream_id, read_after, stream_entry, stream_entry_fields, StreamRange,
};
pub(crate) use values::read_open_key;

/// Records per batch: the readers take the Redis lock once per batch.
pub(crate) const BATCH_SIZE: usize = 4096;

/// What one element (a list item, a hash field and its value, a stream field) counts for in
/// the readers' size budgets beyond its bytes: a record and its bookkeeping. Without it, a list
/// of 20 million empty strings weighed nothing and was read whole while the server waited.
pub(crate) const ITEM_OVERHEAD: usize = 48;

/// The running reader of a plan. Readers of Redis data read ahead on their own thread; a
/// generator reader runs in the language, on the worker. Values no step looks at are not read
/// (`GB().count()` counts keys without reading them).
pub(crate) fn build(
    plan: &ExecutionPlan,
    host: Arc<RedisHost>,
    session: Arc<dyn Session>,
) -> Box<dyn RecordReader> {
    // What the steps read of the keys (`GB().count()`: names only; a native step may read
    // only some hash fields).
    let projection = match &plan.reader {
        ReaderSpec::Keys {
            read_value: true, ..
        } => plan.projection(&gears_core::extension::installed()),
        ReaderSpec::Keys { .. } => Projection::KeyName,
        _ => Projection::Whole,
    };
    let spec = &plan.reader;
    let control = host.control().clone();
    let reader = build_reader(spec, projection, host, session);
    match spec {
        ReaderSpec::Keys { .. }
        | ReaderSpec::KeysOnly { .. }
        | ReaderSpec::Stream { .. }
        | ReaderSpec::Native(_) => match prefetch::Prefetch::start(reader, control) {
            Ok(prefetch) => Box::new(prefetch),
            Err(e) => Box::new(Failed(Some(e))),
        },
        _ => reader,
    }
}

/// A reader that could not start: reports why, once.
struct Failed(Option<gears_core::GearsError>);

impl RecordReader for Failed {
    fn next_batch(&mut self) -> gears_core::Result<Option<Vec<gears_core::Record>>> {
        match self.0.take() {
            Some(e) => Err(e),
            None => Ok(None),
        }
    }
}

fn build_reader(
    spec: &ReaderSpec,
    projection: Projection,
    host: Arc<RedisHost>,
    session: Arc<dyn Session>,
) -> Box<dyn RecordReader> {
    // In a cluster, a reader of one named key (`noScan`, a stream) reads on the shard that
    // owns it only: every shard runs the plan.
    let elsewhere = |key: &[u8]| !crate::cluster::owns_key(key);
    match spec {
        ReaderSpec::Keys {
            pattern, no_scan, ..
        } if *no_scan && elsewhere(pattern) => Box::new(gears_core::VecReader::new(Vec::new(), 1)),
        ReaderSpec::Stream { key, .. } if elsewhere(key) => {
            Box::new(gears_core::VecReader::new(Vec::new(), 1))
        }
        ReaderSpec::Keys {
            pattern, no_scan, ..
        } => Box::new(KeysReader::keys(host, pattern, *no_scan, projection)),
        ReaderSpec::KeysOnly {
            pattern,
            count,
            no_scan,
            pattern_generator,
        } => Box::new(KeysReader::keys_only(
            host,
            pattern,
            *count as usize,
            *no_scan,
            pattern_generator.map(|cb| (session.clone(), cb)),
        )),
        ReaderSpec::Stream { key, from_id } => {
            Box::new(stream::StreamReader::new(host, key, from_id))
        }
        ReaderSpec::ShardsId => Box::new(shards::ShardsIdReader::default()),
        ReaderSpec::Generator { callback } => {
            Box::new(GeneratorReader::new(session, *callback, BATCH_SIZE))
        }
        // Registrations give the record of a command; `run()` never builds this reader.
        ReaderSpec::Command | ReaderSpec::Timer => {
            Box::new(gears_core::VecReader::new(Vec::new(), 1))
        }
        ReaderSpec::Native(call) => match native::build(call, host) {
            Ok(reader) => reader,
            Err(e) => Box::new(Failed(Some(e))),
        },
    }
}
