//! [`FlatMapper`]: one record in, any number out.

use crate::error::Result;
use crate::record::Record;

use super::Projection;

/// A native `flatmap`: the records returned replace the input record, in order.
///
/// ```
/// use gears_core::extension::FlatMapper;
/// use gears_core::{Record, Result};
///
/// /// The words of a string record.
/// struct Words;
///
/// impl FlatMapper for Words {
///     fn flat_map(&mut self, record: Record) -> Result<Vec<Record>> {
///         match record {
///             Record::String(s) => Ok(s.split_whitespace().map(Record::from).collect()),
///             _ => Ok(Vec::new()),
///         }
///     }
/// }
/// ```
pub trait FlatMapper: Send {
    fn flat_map(&mut self, record: Record) -> Result<Vec<Record>>;

    /// What this step reads of the key records it is given (see [`Projection`]): the whole
    /// record unless it says less.
    fn projection(&self) -> Projection {
        Projection::Whole
    }
}
