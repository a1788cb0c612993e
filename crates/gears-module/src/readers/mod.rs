//! The readers `run()` can start, built from a plan's [`ReaderSpec`].

mod keys;
mod shards;
mod stream;

use std::sync::Arc;

use gears_core::{GeneratorReader, ReaderSpec, RecordReader, Session};

use crate::host::RedisHost;

pub(crate) use keys::KeysReader;

/// Records per batch: the readers take the Redis lock once per batch.
pub(crate) const BATCH_SIZE: usize = 1000;

/// The running reader of a plan.
pub(crate) fn build(
    spec: &ReaderSpec,
    host: Arc<RedisHost>,
    session: Arc<dyn Session>,
) -> Box<dyn RecordReader> {
    match spec {
        ReaderSpec::Keys {
            pattern,
            no_scan,
            read_value,
        } => Box::new(KeysReader::keys(host, pattern, *no_scan, *read_value)),
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
    }
}
