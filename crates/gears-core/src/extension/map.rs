//! [`Mapper`]: one record in, one record out.

use crate::error::Result;
use crate::record::Record;

use super::Projection;

/// A native `map`: one output record per input record. An error drops the record and goes
/// into the execution's error list; the other records go on.
///
/// Records arrive as core records (a record a script callback made is converted first, only
/// when it is a language value); the record returned is passed on as is.
///
/// ```
/// use gears_core::extension::Mapper;
/// use gears_core::{Record, Result};
///
/// /// The key's name of a key record.
/// struct KeyName;
///
/// impl Mapper for KeyName {
///     fn map(&mut self, record: Record) -> Result<Record> {
///         Ok(record.get_field("key").unwrap_or(Record::Nil))
///     }
/// }
/// ```
pub trait Mapper: Send {
    fn map(&mut self, record: Record) -> Result<Record>;

    /// What this step reads of the key records it is given (see [`Projection`]): the whole
    /// record unless it says less.
    fn projection(&self) -> Projection {
        Projection::Whole
    }
}
