//! Reading only the hash fields a plan's first step declares ([`Projection::HashFields`]):
//! each field is looked up in the hash (`RedisModule_HashGet`) instead of copying every field.

use std::os::raw::{c_int, c_void};

use gears_core::Record;
use redis_module::{raw, Context};

use super::raw_keys::string_bytes;

/// A hash field and its value.
pub(crate) type Field = (Vec<u8>, Vec<u8>);

/// The field names of a projection as Redis strings, made once per hold of the lock and freed
/// with it (`HashGet` takes module strings; C-string names would be copied at each call).
pub(crate) struct FieldNames<'a> {
    ctx: &'a Context,
    names: &'a [Vec<u8>],
    strings: Vec<*mut raw::RedisModuleString>,
}

impl<'a> FieldNames<'a> {
    pub fn new(ctx: &'a Context, names: &'a [Vec<u8>]) -> Self {
        let strings = names
            .iter()
            // SAFETY: strings of this context, freed in Drop (under the same hold of the lock).
            .map(|name| unsafe {
                raw::RedisModule_CreateString.unwrap()(ctx.ctx, name.as_ptr().cast(), name.len())
            })
            .collect();
        FieldNames {
            ctx,
            names,
            strings,
        }
    }

    /// The declared fields an open hash has, with their values, and their size in bytes.
    pub fn read(&self, key: *mut raw::RedisModuleKey) -> (Vec<Field>, usize) {
        let mut fields = Vec::with_capacity(self.names.len());
        let mut bytes = 0;
        for (name, string) in self.names.iter().zip(&self.strings) {
            let mut value: *mut raw::RedisModuleString = std::ptr::null_mut();
            // SAFETY: an open hash key; HashGet sets `value` to a new string (or null when the
            // field is missing), freed right after it is copied. The list ends with null.
            unsafe {
                raw::RedisModule_HashGet.unwrap()(
                    key,
                    raw::REDISMODULE_HASH_NONE as c_int,
                    *string,
                    &mut value as *mut *mut raw::RedisModuleString,
                    std::ptr::null_mut::<c_void>(),
                );
                if value.is_null() {
                    continue;
                }
                let copied = string_bytes(value).to_vec();
                raw::RedisModule_FreeString.unwrap()(self.ctx.ctx, value);
                bytes += name.len() + copied.len();
                fields.push((name.clone(), copied));
            }
        }
        (fields, bytes)
    }
}

impl Drop for FieldNames<'_> {
    fn drop(&mut self) {
        for string in &self.strings {
            // SAFETY: created in `new` with this context.
            unsafe { raw::RedisModule_FreeString.unwrap()(self.ctx.ctx, *string) };
        }
    }
}

/// Keeps only the fields `names` of a hash value read whole (a large hash, read in slices), in
/// the order a hash of only those fields has (as [`FieldNames::read`] gives them).
pub(crate) fn project_hash(value: Record, names: &[Vec<u8>]) -> Record {
    let bytes = |record: Record| match record {
        Record::String(s) => Some(s.into_bytes()),
        Record::Bytes(b) => Some(b),
        _ => None,
    };
    match value {
        Record::Map(entries) => super::keys::hash_fields_record(
            entries
                .into_iter()
                .filter_map(|(field, value)| Some((bytes(field)?, bytes(value)?)))
                .filter(|(field, _)| names.contains(field))
                .collect(),
        ),
        other => other,
    }
}
