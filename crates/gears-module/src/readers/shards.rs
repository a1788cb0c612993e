//! ShardsIDReader: one record per shard, its id; `'1'` on a standalone server.

use gears_core::{Record, RecordReader, Result};

#[derive(Default)]
pub(crate) struct ShardsIdReader {
    done: bool,
}

impl RecordReader for ShardsIdReader {
    fn next_batch(&mut self) -> Result<Option<Vec<Record>>> {
        if self.done {
            return Ok(None);
        }
        self.done = true;
        Ok(Some(vec![Record::from("1")]))
    }
}
