//! Reading only the hash fields a plan's first step declares ([`Projection::HashFields`]):
//! each field is looked up in the hash (`RedisModule_HashGet`) instead of copying every field.

use std::os::raw::{c_int, c_void};

use gears_core::Record;
use redis_module::{raw, Context};

use super::keys::hash_fields_record;
use super::raw_keys::{close_key, is_expired, key_type, open_key, string_bytes};
use super::values::read_large_value;
use crate::host::RedisHost;

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

    /// The declared fields an open hash has, with their values; `None` as soon as they pass
    /// `budget` bytes (the value past it is not copied).
    pub fn read(&self, key: *mut raw::RedisModuleKey, budget: usize) -> Option<Vec<Field>> {
        let mut fields = Vec::with_capacity(self.names.len());
        let mut bytes = 0usize;
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
                let found = string_bytes(value);
                bytes = bytes.saturating_add(name.len() + found.len());
                let copied = (bytes <= budget).then(|| found.to_vec());
                raw::RedisModule_FreeString.unwrap()(self.ctx.ctx, value);
                fields.push((name.clone(), copied?));
            }
        }
        Some(fields)
    }
}

/// The declared fields of a hash whose fields were too large for a batch, each read under a
/// hold of the lock of its own (a hash field can not be read in parts); if the key is no longer
/// a hash, its value read whole ([`read_large_value`]). `None` when the key went away or the
/// execution stopped.
pub(crate) fn read_fields_alone(
    host: &RedisHost,
    name: &[u8],
    names: &[Vec<u8>],
) -> Option<(Record, &'static str)> {
    let mut fields = Vec::with_capacity(names.len());
    for field in names {
        host.control().check().ok()?;
        let (kind, found) = host.with_batch_lock(|ctx| {
            let key = open_key(ctx, name);
            let kind = key_type(key) as isize;
            let found = (kind == raw::REDISMODULE_KEYTYPE_HASH && !is_expired(key)).then(|| {
                FieldNames::new(ctx, std::slice::from_ref(field))
                    .read(key, usize::MAX)
                    .unwrap_or_default()
            });
            close_key(key);
            (kind, found)
        });
        match found {
            Some(found) => fields.extend(found),
            None if kind == raw::REDISMODULE_KEYTYPE_EMPTY => return None,
            // Another type meanwhile: read whole, as any large value.
            None => {
                return read_large_value(host, name)
                    .map(|(value, kind)| (project_hash(value, names), kind))
            }
        }
    }
    Some((hash_fields_record(fields), "hash"))
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
        Record::Map(entries) => hash_fields_record(
            entries
                .into_iter()
                .filter_map(|(field, value)| Some((bytes(field)?, bytes(value)?)))
                .filter(|(field, _)| names.contains(field))
                .collect(),
        ),
        other => other,
    }
}
