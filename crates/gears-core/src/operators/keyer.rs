//! [`Keyer`]: the running form of a [`KeySource`], for the steps that group or move records
//! by key. A native extractor is built once per step, not once per record.

use super::StepContext;
use crate::error::{GearsError, Result};
use crate::extension::{KeyExtractor, OperatorKind, Registry};
use crate::plan::{CallbackId, KeySource};
use crate::record::{GroupKey, Record};

pub enum Keyer {
    /// Calls the user's extractor; a non-string result is `repr()`'d.
    Callback(CallbackId),
    /// The `'key'` field of a `{'key', 'value'}` record.
    RecordKey,
    /// The record itself, as a string.
    Identity,
    /// A native extractor (and the error of its panic, after which it is not called again).
    Native(Box<dyn KeyExtractor>, Option<String>),
}

impl Keyer {
    /// The keyer of `source`; a native extractor is looked up in `registry` and built.
    pub fn build(source: &KeySource, registry: &Registry) -> Result<Keyer> {
        Ok(match source {
            KeySource::Callback(cb) => Keyer::Callback(*cb),
            KeySource::RecordKey => Keyer::RecordKey,
            KeySource::Identity => Keyer::Identity,
            KeySource::Native(call) => match registry.resolve(call)?.kind() {
                OperatorKind::Extractor(factory) => {
                    let args = call.args();
                    Keyer::Native(crate::extension::guarded(|| factory(&args))?, None)
                }
                other => {
                    return Err(GearsError::Plan(format!(
                        "native operator '{}' is {} on this server, not an extractor",
                        call.name,
                        other.described()
                    )))
                }
            },
        })
    }

    /// The key of `record`.
    pub fn key(&mut self, ctx: &mut StepContext<'_>, record: &Record) -> Result<GroupKey> {
        match self {
            Keyer::Callback(cb) => {
                let key = ctx.runtime.call_now(*cb, &[record], "extractor")?;
                ctx.runtime.group_key(key)
            }
            Keyer::RecordKey => {
                let core = match record {
                    Record::Native(_) => ctx.runtime.to_core(record.clone())?,
                    other => other.clone(),
                };
                match core.get_field("key") {
                    Some(key) => ctx.runtime.group_key(key),
                    None => Err(GearsError::Callback(
                        "record has no 'key' field to group by".into(),
                    )),
                }
            }
            Keyer::Identity => ctx.runtime.group_key(record.clone()),
            Keyer::Native(extractor, broken) => {
                use crate::extension::guarded_until_panic;
                if record.contains_native() {
                    let core = ctx.core(record.clone())?;
                    guarded_until_panic(broken, || extractor.key(&core))
                } else {
                    guarded_until_panic(broken, || extractor.key(record))
                }
            }
        }
    }
}
