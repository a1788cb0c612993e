//! [`Accumulator`]: a two-phase aggregation.

use crate::error::Result;
use crate::record::Record;

use super::Projection;

/// A native aggregation, run in two phases, as the built-in `count` and `avg` are:
///
/// 1. **partial**, on every shard over its own records: [`Accumulator::update`] for each
///    record, then [`Accumulator::state`] once at the end of input;
/// 2. the states are collected on the shard that started the execution;
/// 3. **final**, there: [`Accumulator::merge`] for each state, then [`Accumulator::evaluate`],
///    whose record is the step's one output.
///
/// Each phase gets an accumulator of its own, built from the same arguments. The state is a
/// core record (it travels between shards): bytes, a number, a list... A shard that read no
/// record sends no state, and no state at all gives no output, as with the built-in `count`.
///
/// ```
/// use gears_core::extension::Accumulator;
/// use gears_core::{GearsError, Record, Result};
///
/// /// The longest string.
/// #[derive(Default)]
/// struct Longest(Option<String>);
///
/// impl Longest {
///     fn offer(&mut self, s: String) {
///         if self.0.as_ref().map_or(true, |best| s.len() > best.len()) {
///             self.0 = Some(s);
///         }
///     }
/// }
///
/// impl Accumulator for Longest {
///     fn update(&mut self, record: Record) -> Result<()> {
///         match record {
///             Record::String(s) => Ok(self.offer(s)),
///             other => Err(GearsError::Callback(format!("not a string: {other:?}"))),
///         }
///     }
///     fn state(&mut self) -> Result<Record> {
///         Ok(self.0.take().map(Record::String).unwrap_or(Record::Nil))
///     }
///     fn merge(&mut self, state: Record) -> Result<()> {
///         if let Record::String(s) = state {
///             self.offer(s);
///         }
///         Ok(())
///     }
///     fn evaluate(&mut self) -> Result<Record> {
///         self.state()
///     }
/// }
/// ```
pub trait Accumulator: Send {
    /// Adds one record (partial phase). An error drops the record into the error list.
    fn update(&mut self, record: Record) -> Result<()>;

    /// This shard's partial state, at the end of its input.
    fn state(&mut self) -> Result<Record>;

    /// Merges one partial state (final phase).
    fn merge(&mut self, state: Record) -> Result<()>;

    /// The result, once every state was merged.
    fn evaluate(&mut self) -> Result<Record>;

    /// What the partial phase reads of the key records it is given (see [`Projection`]): the
    /// whole record unless it says less.
    fn projection(&self) -> Projection {
        Projection::Whole
    }
}
