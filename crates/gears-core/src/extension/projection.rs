//! [`Projection`]: what a native step reads of its input, so the reader before it can skip the
//! rest.

/// What a native step reads of the key records it is given. When the step is the first one to
/// look at the records of a keys reader (`GB().native('hll_count', 'name').run('user:*')`),
/// the reader reads only that part of each key: the projection is pushed down to the reader,
/// as query engines push column lists down to their scans.
///
/// Only steps that consume their records declare one ([`Mapper`](super::Mapper),
/// [`FlatMapper`](super::FlatMapper), [`Accumulator`](super::Accumulator)): a filter or a key
/// extractor passes its records on to the next steps, which may read anything of them.
///
/// A step that declares a projection sees records where the rest is missing: a hash value
/// holds only the declared fields that exist (none: an empty map). Records that do not come
/// straight from a keys reader (from another step, a stream, an event) arrive whole.
///
/// ```
/// use gears_core::extension::{Accumulator, Projection};
/// use gears_core::{Record, Result};
///
/// /// Sums the integer field `points` of hashes.
/// struct SumPoints(i64);
///
/// impl Accumulator for SumPoints {
///     fn update(&mut self, record: Record) -> Result<()> {
///         let points = record.get_field("value").and_then(|v| v.get_field("points"));
///         if let Some(Record::String(s)) = points {
///             self.0 += s.parse::<i64>().unwrap_or(0);
///         }
///         Ok(())
///     }
///     fn state(&mut self) -> Result<Record> { Ok(Record::Integer(self.0)) }
///     fn merge(&mut self, state: Record) -> Result<()> {
///         if let Record::Integer(n) = state { self.0 += n }
///         Ok(())
///     }
///     fn evaluate(&mut self) -> Result<Record> { self.state() }
///     fn projection(&self) -> Projection {
///         Projection::hash_fields(["points"])
///     }
/// }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Projection {
    /// The whole record (the default).
    #[default]
    Whole,
    /// The key's name and type, and of a hash value only these fields; a value of another type
    /// is read whole.
    HashFields(Vec<Vec<u8>>),
    /// The key's name only: no value, no type (as `readValue=False` gives).
    KeyName,
}

impl Projection {
    /// [`Projection::HashFields`] of these field names.
    pub fn hash_fields<I, F>(fields: I) -> Self
    where
        I: IntoIterator<Item = F>,
        F: AsRef<[u8]>,
    {
        Projection::HashFields(fields.into_iter().map(|f| f.as_ref().to_vec()).collect())
    }

    /// True when the value must be read (whole or in part).
    pub fn reads_value(&self) -> bool {
        !matches!(self, Projection::KeyName)
    }
}
