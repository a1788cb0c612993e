//! [`NativeReader`]: a data source written in Rust, and [`ReaderHost`], how it reads Redis.

use std::sync::Arc;

use crate::error::Result;
use crate::reader::RecordReader;
use crate::record::Record;

/// Read commands run under one hold of the Redis lock (see [`ReaderHost::read`]).
pub trait RedisReads {
    /// Runs one read command (`args[0]` is its name) and returns its reply as a record (a
    /// map reply is a [`Record::Map`], an array a [`Record::List`]). An error reply, a command
    /// the execution's user may not run or a key they may not read, and any command that
    /// writes, are `Err`.
    fn call(&mut self, args: &[&[u8]]) -> Result<Record>;
}

/// What a native reader may do with Redis. The module implements it with the rules of its own
/// readers: commands run as the ACL user who sent the script, in their database, read-only;
/// the Redis lock is taken once per [`ReaderHost::read`] (once per batch) and Redis's other
/// clients are served between batches.
pub trait ReaderHost: Send + Sync {
    /// Runs `f` under one hold of the Redis lock. Keep it short (one batch): the server serves
    /// no one else meanwhile.
    fn read(&self, f: &mut dyn FnMut(&mut dyn RedisReads) -> Result<()>) -> Result<()>;

    /// True when this shard owns `key` (always true on a server that is not a cluster node).
    /// Every shard runs the reader: a reader of one key reads it on its owner only.
    fn owns_key(&self, key: &[u8]) -> bool;

    /// `Err` once the execution was stopped (aborted, past a limit): a reader that loops
    /// without reading Redis should check it.
    fn check(&self) -> Result<()>;
}

/// A native reader: yields batches of records until it returns `None`.
///
/// ```
/// use gears_core::extension::{NativeReader, ReaderHost};
/// use gears_core::{Record, Result};
///
/// /// The integers `next..end`, a batch of 100 at a time.
/// struct Range { next: i64, end: i64 }
///
/// impl NativeReader for Range {
///     fn next_batch(&mut self, host: &dyn ReaderHost) -> Result<Option<Vec<Record>>> {
///         host.check()?;
///         if self.next >= self.end {
///             return Ok(None);
///         }
///         let stop = (self.next + 100).min(self.end);
///         let batch = (self.next..stop).map(Record::Integer).collect();
///         self.next = stop;
///         Ok(Some(batch))
///     }
/// }
/// ```
pub trait NativeReader: Send {
    /// The next batch (it may be empty), or `None` at the end.
    fn next_batch(&mut self, host: &dyn ReaderHost) -> Result<Option<Vec<Record>>>;
}

/// A native reader as the executor reads it: the reader plus the host it reads through.
pub struct NativeRecordReader {
    reader: Box<dyn NativeReader>,
    host: Arc<dyn ReaderHost>,
    done: bool,
}

impl NativeRecordReader {
    pub fn new(reader: Box<dyn NativeReader>, host: Arc<dyn ReaderHost>) -> Self {
        NativeRecordReader {
            reader,
            host,
            done: false,
        }
    }
}

impl RecordReader for NativeRecordReader {
    fn next_batch(&mut self) -> Result<Option<Vec<Record>>> {
        if self.done {
            return Ok(None);
        }
        let host = self.host.clone();
        let reader = &mut self.reader;
        let batch = crate::extension::guarded(|| reader.next_batch(host.as_ref()));
        match batch {
            Ok(Some(batch)) => Ok(Some(batch)),
            Ok(None) => {
                self.done = true;
                Ok(None)
            }
            Err(e) => {
                self.done = true;
                Err(e)
            }
        }
    }
}
