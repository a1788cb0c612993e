//! Reading ahead: a reader thread fills the next batches (under the Redis lock) while the worker
//! runs the steps over the current one, so reading and processing overlap.

use std::thread;

use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver};
use gears_core::control::{ControlScope, ExecutionControl};
use gears_core::{GearsError, Record, RecordReader, Result};

/// Batches read ahead at most.
const AHEAD: usize = 4;

pub(crate) struct Prefetch {
    batches: Receiver<Result<Vec<Record>>>,
}

impl Prefetch {
    /// Starts reading `reader` on its own thread, which works for the execution of `control`
    /// (its allocations are charged to the execution, and user code it runs, a pattern
    /// generator, is stopped with it). The thread ends when the reader is exhausted, fails, or
    /// this `Prefetch` is dropped.
    pub fn start(
        mut reader: Box<dyn RecordReader>,
        control: Arc<ExecutionControl>,
    ) -> Result<Self> {
        let (sender, batches) = bounded(AHEAD);
        thread::Builder::new()
            .name("gears-reader".into())
            .spawn(move || {
                let _scope = ControlScope::enter(&control);
                loop {
                    let batch = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        reader.next_batch()
                    }))
                    .unwrap_or_else(|_| Err(GearsError::Internal("the reader panicked".into())));
                    let last = !matches!(batch, Ok(Some(_)));
                    let message = match batch {
                        Ok(Some(records)) => Ok(records),
                        Ok(None) => break,
                        Err(e) => Err(e),
                    };
                    if sender.send(message).is_err() || last {
                        break;
                    }
                }
            })
            .map_err(|e| GearsError::Internal(format!("could not start a reader thread: {e}")))?;
        Ok(Prefetch { batches })
    }
}

impl RecordReader for Prefetch {
    fn next_batch(&mut self) -> Result<Option<Vec<Record>>> {
        match self.batches.recv() {
            Ok(Ok(batch)) => Ok(Some(batch)),
            Ok(Err(e)) => Err(e),
            // The reader thread finished.
            Err(_) => Ok(None),
        }
    }
}
