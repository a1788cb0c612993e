//! The reader contract: a source of records, read in batches.

use crate::error::Result;
use crate::record::Record;

/// A source of records. The executor asks for one batch at a time so a reader can take and
/// release its locks (the Redis lock, for the module's readers) between batches.
pub trait RecordReader: Send {
    /// The next batch, or `None` when the source is exhausted.
    fn next_batch(&mut self) -> Result<Option<Vec<Record>>>;
}

/// A reader over records already in memory.
pub struct VecReader {
    batches: std::vec::IntoIter<Vec<Record>>,
}

impl VecReader {
    /// Yields `records` in batches of `batch_size`.
    pub fn new(records: Vec<Record>, batch_size: usize) -> Self {
        let batch_size = batch_size.max(1);
        let mut batches = Vec::new();
        let mut records = records.into_iter().peekable();
        while records.peek().is_some() {
            batches.push(records.by_ref().take(batch_size).collect());
        }
        VecReader {
            batches: batches.into_iter(),
        }
    }
}

impl RecordReader for VecReader {
    fn next_batch(&mut self) -> Result<Option<Vec<Record>>> {
        Ok(self.batches.next())
    }
}

/// Reads whatever a user generator function yields (`PythonReader` and its Lua and Rhai
/// counterparts), through the language's [`crate::Runtime`].
pub struct GeneratorReader {
    session: std::sync::Arc<dyn crate::Session>,
    callback: crate::CallbackId,
    generator: Option<Record>,
    batch_size: usize,
    done: bool,
}

impl GeneratorReader {
    pub fn new(
        session: std::sync::Arc<dyn crate::Session>,
        callback: crate::CallbackId,
        batch_size: usize,
    ) -> Self {
        GeneratorReader {
            session,
            callback,
            generator: None,
            batch_size: batch_size.max(1),
            done: false,
        }
    }
}

impl RecordReader for GeneratorReader {
    fn next_batch(&mut self) -> Result<Option<Vec<Record>>> {
        if self.done {
            return Ok(None);
        }
        let mut outcome = Ok(Vec::new());
        let (callback, batch_size) = (self.callback, self.batch_size);
        let generator = &mut self.generator;
        self.session.enter(&mut |runtime| {
            outcome = (|| {
                if generator.is_none() {
                    *generator = Some(runtime.start_generator(callback)?);
                }
                match generator {
                    Some(g) => runtime.next_from_generator(g, batch_size),
                    None => Ok(Vec::new()),
                }
            })();
        });
        let batch = outcome.inspect_err(|_| self.done = true)?;
        if batch.is_empty() {
            self.done = true;
            return Ok(None);
        }
        Ok(Some(batch))
    }
}
