//! [`NativeCall`]: how a plan names a native operator or reader.

use serde::{Deserialize, Serialize};

use super::args::{describe, Args};
use crate::error::{GearsError, Result};
use crate::plan::Phase;
use crate::record::Record;

/// A native operator or reader as a plan holds it: its name, the major version the plan was
/// built against, and the script's arguments (core records). It is plain data: the running
/// operator is built from it on each shard, by name, from that server's [`super::Registry`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(into = "WireCall", try_from = "WireCall")]
pub struct NativeCall {
    pub name: String,
    pub major: u32,
    pub args: Vec<Record>,
    /// Options by name (a native reader's `run()` options); empty for operators.
    pub named: Vec<(String, Record)>,
}

impl NativeCall {
    /// The arguments, for a factory.
    pub fn args(&self) -> Args<'_> {
        Args::new(&self.name, &self.args, &self.named)
    }

    /// `name@major(args)`, as `RG.EXPLAIN` shows it.
    pub fn describe(&self) -> String {
        format!(
            "{}@{}{}",
            self.name,
            self.major,
            describe(&self.args, &self.named)
        )
    }
}

/// What a native step of a plan does; for aggregations, which phase.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum NativeStepKind {
    Map,
    Filter,
    FlatMap,
    Aggregate(Phase),
}

impl NativeStepKind {
    pub fn name(self) -> &'static str {
        match self {
            NativeStepKind::Map => "map",
            NativeStepKind::Filter => "filter",
            NativeStepKind::FlatMap => "flatmap",
            NativeStepKind::Aggregate(Phase::Partial) => "aggregate (partial)",
            NativeStepKind::Aggregate(Phase::Final) => "aggregate (final)",
        }
    }
}

/// The serialized form: arguments in Gears' record wire format (records are not serde types).
#[derive(Serialize, Deserialize)]
struct WireCall {
    name: String,
    major: u32,
    args: Vec<u8>,
}

impl From<NativeCall> for WireCall {
    fn from(call: NativeCall) -> Self {
        let records = vec![
            Record::List(call.args),
            Record::Map(
                call.named
                    .into_iter()
                    .map(|(k, v)| (Record::String(k), v))
                    .collect(),
            ),
        ];
        let mut args = Vec::new();
        // Arguments are core records (the builders convert them), which always encode.
        let _ = crate::wire::encode_records(&records, &mut args);
        WireCall {
            name: call.name,
            major: call.major,
            args,
        }
    }
}

impl TryFrom<WireCall> for NativeCall {
    type Error = GearsError;

    fn try_from(wire: WireCall) -> Result<Self> {
        let mut records = crate::wire::decode_records(&wire.args)?.into_iter();
        let (Some(Record::List(args)), Some(Record::Map(named)), None) =
            (records.next(), records.next(), records.next())
        else {
            return Err(GearsError::Internal(format!(
                "the arguments of native '{}' could not be read",
                wire.name
            )));
        };
        let named = named
            .into_iter()
            .map(|(k, v)| match k {
                Record::String(k) => Ok((k, v)),
                _ => Err(GearsError::Internal(
                    "a native option name is not text".into(),
                )),
            })
            .collect::<Result<_>>()?;
        Ok(NativeCall {
            name: wire.name,
            major: wire.major,
            args,
            named,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_bincode() {
        let call = NativeCall {
            name: "hll_count".into(),
            major: 1,
            args: vec![Record::from("name"), Record::Integer(14)],
            named: vec![("batch".into(), Record::Float(2.5))],
        };
        let config = bincode::config::standard();
        let bytes = bincode::serde::encode_to_vec(&call, config).unwrap();
        let (decoded, _): (NativeCall, usize) =
            bincode::serde::decode_from_slice(&bytes, config).unwrap();
        assert_eq!(decoded, call);
        assert_eq!(call.describe(), "hll_count@1('name', 14, batch=2.5)");
    }
}
