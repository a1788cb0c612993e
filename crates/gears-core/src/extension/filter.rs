//! [`Predicate`]: keeps the records for which it is true.

use crate::error::Result;
use crate::record::Record;

/// A native `filter`. The predicate sees a core view of the record; the record passed on is
/// the one that arrived, so a language value between two callbacks of its language is not
/// converted back.
///
/// ```
/// use gears_core::extension::Predicate;
/// use gears_core::{Record, Result};
///
/// /// Records whose `value` is a hash with the field.
/// struct HasField(String);
///
/// impl Predicate for HasField {
///     fn test(&mut self, record: &Record) -> Result<bool> {
///         Ok(record.get_field("value").and_then(|v| v.get_field(&self.0)).is_some())
///     }
/// }
/// ```
pub trait Predicate: Send {
    fn test(&mut self, record: &Record) -> Result<bool>;
}
