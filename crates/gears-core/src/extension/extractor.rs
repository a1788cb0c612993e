//! [`KeyExtractor`]: the key of a record, for the steps that group or move records by key.

use crate::error::Result;
use crate::record::{GroupKey, Record};

/// A native extractor: scripts give it where a key function goes (`groupby`, `batchgroupby`,
/// `localgroupby`, `countby`, `repartition`), and the records with equal keys meet (on the
/// shard that owns the key's slot, in a cluster).
///
/// ```
/// use gears_core::extension::KeyExtractor;
/// use gears_core::{GroupKey, Record, Result};
///
/// /// The first letter of the key's name.
/// struct Initial;
///
/// impl KeyExtractor for Initial {
///     fn key(&mut self, record: &Record) -> Result<GroupKey> {
///         let name = match record.get_field("key") {
///             Some(Record::String(s)) => s,
///             _ => String::new(),
///         };
///         Ok(GroupKey::Text(name.chars().take(1).collect()))
///     }
/// }
/// ```
pub trait KeyExtractor: Send {
    fn key(&mut self, record: &Record) -> Result<GroupKey>;
}
