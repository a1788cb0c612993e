//! The execution plan: what to read and the ordered steps to run over it.
//!
//! A plan is pure data (serde-serializable) so it can be explained, stored and shipped to other
//! shards. User code is referenced through typed handles ([`CallbackId`], [`ValueId`]) that the
//! language [`crate::Session`] which compiled the script resolves; a plan never names a function
//! by string.

use serde::{Deserialize, Serialize};

use crate::error::{GearsError, Result};
use crate::extension::{NativeCall, NativeStepKind, OperatorKind, Projection};
use crate::record::Record;

/// A user callback (function, lambda or closure) owned by a language session.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CallbackId(pub u32);

/// A user value (such as an `aggregate` zero) owned by a language session. Each use gets a
/// fresh copy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ValueId(pub u32);

/// The scripting languages Gears embeds.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Language {
    Python,
    Lua,
    Rhai,
}

impl Language {
    pub fn name(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::Lua => "lua",
            Language::Rhai => "rhai",
        }
    }

    pub fn parse(name: &str) -> Option<Language> {
        match name.to_ascii_lowercase().as_str() {
            "python" | "py" => Some(Language::Python),
            "lua" => Some(Language::Lua),
            "rhai" => Some(Language::Rhai),
            _ => None,
        }
    }
}

/// Where the records of a step must be when it runs.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Distribution {
    /// Records stay on the shard that holds them.
    Local,
    /// All records move to the shard that started the execution.
    Collect,
    /// Each record moves to the shard owning the hash slot of its key.
    Repartition,
}

/// How the group-by family finds a record's key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum KeySource {
    /// Call the user's extractor; a non-string result is `repr()`'d.
    Callback(CallbackId),
    /// The `'key'` field of a `{'key', 'value'}` record (the output of a local group-by).
    RecordKey,
    /// The record itself, as a string (countby's default extractor).
    Identity,
    /// A native extractor ([`crate::extension::KeyExtractor`]).
    Native(NativeCall),
}

/// Aggregations implemented in Rust, each in two phases.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum Aggregation {
    /// Number of records.
    Count,
    /// Number of records per key: `{'key': k, 'value': n}`.
    CountBy { key: KeySource },
    /// Mean of the extracted values (`float(record)` when no extractor is given).
    Avg { extractor: Option<CallbackId> },
    /// All records sorted; `reverse=True` yields ascending order (RedisGears' quirk).
    Sort { reverse: bool },
    /// Each distinct record once.
    Distinct,
}

/// The phase of a two-phase aggregation.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Runs on every shard over its own records and emits a partial state.
    Partial,
    /// Runs where the partial states meet and merges them into the result.
    Final,
}

/// One step of a plan.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum Step {
    Map(CallbackId),
    /// A returned list is expanded last-to-first; anything else is one record.
    FlatMap(CallbackId),
    Filter(CallbackId),
    ForEach(CallbackId),
    /// `acc = f(acc, record)`; the accumulator starts as nil, or as a copy of `zero` whenever it
    /// is falsy (the `aggregate` sugar).
    Accumulate {
        callback: CallbackId,
        zero: Option<ValueId>,
    },
    /// Per key: `acc = reducer(key, acc, record)`; emits `{'key', 'value'}` records. Used for
    /// `localgroupby` and the accumulate-by-key half of `groupby` / `aggregateby`.
    ReduceByKey {
        key: KeySource,
        reducer: CallbackId,
        zero: Option<ValueId>,
        /// Pass `record['value']` to the reducer instead of the record (aggregateby's merge).
        reduce_value: bool,
    },
    /// Per key: `reducer(key, [records])`; emits `{'key', 'value'}` records.
    BatchReduceByKey {
        key: KeySource,
        reducer: CallbackId,
    },
    /// Skip `start` records, then pass at most `length`.
    Limit {
        length: u64,
        start: u64,
    },
    /// Move every record to the initiating shard.
    Collect,
    /// Move every record to the shard that owns its key.
    Repartition {
        key: KeySource,
    },
    /// A Rust aggregation, partial or final phase.
    Aggregate {
        aggregation: Aggregation,
        phase: Phase,
    },
    /// `str(record)` (run's `convertToStr=True`).
    ToString,
    /// A native operator (a Rust extension's), found by name in the server's
    /// [`crate::extension::Registry`] when the plan runs.
    Native {
        call: NativeCall,
        kind: NativeStepKind,
    },
}

impl Step {
    /// Where this step needs its input records.
    pub fn distribution(&self) -> Distribution {
        match self {
            Step::Collect => Distribution::Collect,
            Step::Repartition { .. } => Distribution::Repartition,
            _ => Distribution::Local,
        }
    }

    /// True when the step passes records on as they come; false when it holds them until the end
    /// of input (accumulations, group-bys, aggregations).
    pub fn is_streaming(&self) -> bool {
        !matches!(
            self,
            Step::Accumulate { .. }
                | Step::ReduceByKey { .. }
                | Step::BatchReduceByKey { .. }
                | Step::Aggregate { .. }
                | Step::Native {
                    kind: NativeStepKind::Aggregate(_),
                    ..
                }
        )
    }

    /// The user callbacks this step calls (empty when it runs entirely in Rust).
    pub fn callbacks(&self) -> Vec<CallbackId> {
        let key_callback = |key: &KeySource| match key {
            KeySource::Callback(cb) => Some(*cb),
            _ => None,
        };
        match self {
            Step::Map(cb) | Step::FlatMap(cb) | Step::Filter(cb) | Step::ForEach(cb) => vec![*cb],
            Step::Accumulate { callback, .. } => vec![*callback],
            Step::ReduceByKey { key, reducer, .. } | Step::BatchReduceByKey { key, reducer } => {
                key_callback(key).into_iter().chain([*reducer]).collect()
            }
            Step::Repartition { key } => key_callback(key).into_iter().collect(),
            Step::Aggregate { aggregation, .. } => match aggregation {
                Aggregation::CountBy { key } => key_callback(key).into_iter().collect(),
                Aggregation::Avg { extractor } => extractor.iter().copied().collect(),
                _ => vec![],
            },
            Step::Limit { .. } | Step::Collect | Step::ToString | Step::Native { .. } => vec![],
        }
    }

    /// A short human name, as `RG.EXPLAIN` prints it.
    pub fn name(&self) -> String {
        match self {
            Step::Map(_) => "map".into(),
            Step::FlatMap(_) => "flatmap".into(),
            Step::Filter(_) => "filter".into(),
            Step::ForEach(_) => "foreach".into(),
            Step::Accumulate { zero: None, .. } => "accumulate".into(),
            Step::Accumulate { zero: Some(_), .. } => "accumulate (with zero)".into(),
            Step::ReduceByKey { .. } => "reduce by key".into(),
            Step::BatchReduceByKey { .. } => "batch reduce by key".into(),
            Step::Limit { length, start } => format!("limit {length} from {start}"),
            Step::Collect => "collect".into(),
            Step::Repartition { key } => match key {
                KeySource::Native(call) => format!("repartition by native {}", call.describe()),
                _ => "repartition".into(),
            },
            Step::Aggregate { aggregation, phase } => {
                let what = match aggregation {
                    Aggregation::Count => "count".to_string(),
                    Aggregation::CountBy { .. } => "countby".to_string(),
                    Aggregation::Avg { .. } => "avg".to_string(),
                    Aggregation::Sort { reverse } => format!("sort reverse={reverse}"),
                    Aggregation::Distinct => "distinct".to_string(),
                };
                let phase = match phase {
                    Phase::Partial => "partial",
                    Phase::Final => "final",
                };
                format!("{what} ({phase})")
            }
            Step::ToString => "to string".into(),
            Step::Native { call, kind } => format!("native {} {}", kind.name(), call.describe()),
        }
    }
}

/// What an execution reads.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum ReaderSpec {
    /// Keys matching a glob (SCAN MATCH), or one exact key with `no_scan`. Patterns and key
    /// names are bytes: they need not be UTF-8.
    Keys {
        pattern: Vec<u8>,
        no_scan: bool,
        read_value: bool,
    },
    /// Key names only.
    KeysOnly {
        pattern: Vec<u8>,
        count: u64,
        no_scan: bool,
        pattern_generator: Option<CallbackId>,
    },
    /// Entries of one stream after `from_id` (exclusive).
    Stream { key: Vec<u8>, from_id: String },
    /// One record per shard: its id.
    ShardsId,
    /// Whatever a user generator function yields.
    Generator { callback: CallbackId },
    /// The arguments of one command (`RG.TRIGGER`, a hooked command): a registration's trigger
    /// gives the record, there is nothing to read.
    Command,
    /// A point of a timer registration's schedule: its trigger gives the record.
    Timer,
    /// A native reader (a Rust extension's), found by name when the plan runs.
    Native(NativeCall),
}

impl ReaderSpec {
    /// A short human description, as `RG.EXPLAIN` prints it.
    pub fn describe(&self) -> String {
        match self {
            ReaderSpec::Keys {
                pattern,
                no_scan,
                read_value,
            } => format!(
                "KeysReader pattern={:?} noScan={no_scan} readValue={read_value}",
                String::from_utf8_lossy(pattern)
            ),
            ReaderSpec::KeysOnly {
                pattern,
                count,
                no_scan,
                pattern_generator,
            } => format!(
                "KeysOnlyReader pattern={:?} count={count} noScan={no_scan}{}",
                String::from_utf8_lossy(pattern),
                if pattern_generator.is_some() {
                    " patternGenerator=<callback>"
                } else {
                    ""
                }
            ),
            ReaderSpec::Stream { key, from_id } => {
                format!(
                    "StreamReader stream={:?} fromId={from_id:?}",
                    String::from_utf8_lossy(key)
                )
            }
            ReaderSpec::ShardsId => "ShardsIDReader".into(),
            ReaderSpec::Generator { .. } => "PythonReader generator=<callback>".into(),
            ReaderSpec::Command => "CommandReader".into(),
            ReaderSpec::Timer => "TimerReader".into(),
            ReaderSpec::Native(call) => format!("NativeReader {}", call.describe()),
        }
    }
}

/// How an execution is distributed.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ExecutionMode {
    /// Runs on every shard; results are collected (RedisGears' `async`).
    #[default]
    Async,
    /// Runs on the local shard only.
    AsyncLocal,
    /// Runs on the calling thread (registrations only).
    Sync,
}

impl ExecutionMode {
    pub fn parse(mode: &str) -> Result<ExecutionMode> {
        match mode {
            "async" => Ok(ExecutionMode::Async),
            "async_local" => Ok(ExecutionMode::AsyncLocal),
            "sync" => Ok(ExecutionMode::Sync),
            _ => Err(GearsError::Plan("unknown execution mode".into())),
        }
    }
}

/// The arguments of `run()` that shape the execution rather than the reader.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct RunOptions {
    pub convert_to_str: bool,
    pub collect: bool,
    pub mode: ExecutionMode,
    /// This run's own limits, over the server's settings.
    pub limits: RunLimits,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            convert_to_str: true,
            collect: true,
            mode: ExecutionMode::Async,
            limits: RunLimits::default(),
        }
    }
}

/// Limits one `run()` sets for its execution, over the server's settings (`None`: the
/// setting's value; `Some(0)`: no limit).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RunLimits {
    /// `timeout`: the longest the execution may run, in milliseconds (ExecutionMaxRunTime).
    pub timeout_ms: Option<u64>,
    /// `maxRecords`: the most records it may hold at once (ExecutionMaxRecords).
    pub max_records: Option<u64>,
    /// `maxReplySize`: the largest reply it may give, in bytes (ExecutionMaxReplySize).
    pub max_reply_bytes: Option<u64>,
    /// `maxErrors`: the most errors its reply lists (ExecutionMaxErrors).
    pub max_errors: Option<u64>,
}

impl RunLimits {
    /// The limits among `run()`'s keyword arguments: `timeout`, `maxRecords`, `maxReplySize`,
    /// `maxErrors`, each a non-negative integer.
    pub fn from_kwargs(kwargs: &[Kwarg]) -> Result<RunLimits> {
        let get = |name: &str| -> Result<Option<u64>> {
            match kwargs.iter().find(|(k, _)| k == name) {
                None => Ok(None),
                Some((_, Record::Integer(n))) if *n >= 0 => Ok(Some(*n as u64)),
                Some(_) => Err(GearsError::Plan(format!(
                    "{name} argument must be a non-negative integer"
                ))),
            }
        };
        Ok(RunLimits {
            timeout_ms: get("timeout")?,
            max_records: get("maxRecords")?,
            max_reply_bytes: get("maxReplySize")?,
            max_errors: get("maxErrors")?,
        })
    }
}

/// A reader plus the ordered steps to run over its records.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ExecutionPlan {
    pub language: Language,
    pub reader: ReaderSpec,
    pub steps: Vec<Step>,
    pub options: RunOptions,
    pub description: Option<String>,
}

impl ExecutionPlan {
    /// What the steps read of a keys reader's records: the first step that looks at them
    /// decides. `GB().count()` reads key names only; a native map, flatmap or aggregate reads
    /// what its operator in `registry` declares ([`Projection`]); anything else reads the
    /// whole record. `limit` only counts records.
    pub fn projection(&self, registry: &crate::extension::Registry) -> Projection {
        for step in &self.steps {
            match step {
                Step::Limit { .. } => continue,
                Step::Aggregate {
                    aggregation: Aggregation::Count,
                    phase: Phase::Partial,
                } => return Projection::KeyName,
                Step::Native { call, kind } => {
                    let Ok(operator) = registry.resolve(call) else {
                        return Projection::Whole;
                    };
                    let consumes = matches!(
                        (kind, operator.kind()),
                        (NativeStepKind::Map, OperatorKind::Map(_))
                            | (NativeStepKind::FlatMap, OperatorKind::FlatMap(_))
                            | (
                                NativeStepKind::Aggregate(Phase::Partial),
                                OperatorKind::Aggregate(_)
                            )
                    );
                    return if consumes {
                        operator.projection(call).unwrap_or_default()
                    } else {
                        Projection::Whole
                    };
                }
                _ => return Projection::Whole,
            }
        }
        Projection::Whole
    }

    /// A readable listing of the plan: one line per step, saying whether the step runs in Rust or
    /// calls the script's language, and where records move between shards.
    pub fn explain(&self) -> Vec<String> {
        let mut lines = vec![format!("reader: {}", self.reader.describe())];
        for (i, step) in self.steps.iter().enumerate() {
            let runs = if step.callbacks().is_empty() {
                "rust".to_string()
            } else {
                self.language.name().to_string()
            };
            let moves = match step.distribution() {
                Distribution::Local => "local",
                Distribution::Collect => "moves records: collect to initiator",
                Distribution::Repartition => "moves records: repartition by key slot",
            };
            lines.push(format!(
                "{}: {} [runs in {}] [{}]",
                i + 1,
                step.name(),
                runs,
                moves
            ));
        }
        lines
    }
}

/// A keyword argument's value as a frontend hands it to [`ReaderSpec::from_run_args`].
pub type Kwarg = (String, Record);

/// The first argument of `run()`.
#[derive(Clone, Debug, PartialEq)]
pub enum RunArg {
    None,
    /// A pattern or key name, as bytes (it need not be UTF-8).
    Text(Vec<u8>),
    Callback(CallbackId),
}

impl ReaderSpec {
    /// Builds the reader spec from the builder's reader name and `run()`'s arguments.
    pub fn from_run_args(
        reader: &str,
        default_arg: &str,
        arg: RunArg,
        kwargs: &[Kwarg],
        pattern_generator: Option<CallbackId>,
    ) -> Result<ReaderSpec> {
        let text_arg = |arg: &RunArg| match arg {
            RunArg::Text(s) if !s.is_empty() => s.clone(),
            _ => default_arg.as_bytes().to_vec(),
        };
        let flag = |name: &str, default: bool| {
            kwargs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.is_truthy())
                .unwrap_or(default)
        };
        match reader {
            "KeysReader" => Ok(ReaderSpec::Keys {
                pattern: text_arg(&arg),
                no_scan: flag("noScan", false),
                read_value: flag("readValue", true),
            }),
            "KeysOnlyReader" => {
                let count = match kwargs.iter().find(|(k, _)| k == "count") {
                    None => 1000,
                    Some((_, Record::Integer(n))) if *n > 0 => *n as u64,
                    Some(_) => {
                        return Err(GearsError::Plan(
                            "count argument must be a positive integer".into(),
                        ))
                    }
                };
                Ok(ReaderSpec::KeysOnly {
                    pattern: text_arg(&arg),
                    count,
                    no_scan: flag("noScan", false),
                    pattern_generator,
                })
            }
            "StreamReader" => {
                let from_id = match kwargs.iter().find(|(k, _)| k == "fromId") {
                    Some((_, Record::String(id))) => id.clone(),
                    Some((_, other)) => crate::repr::python_str(other),
                    None => "0-0".to_string(),
                };
                Ok(ReaderSpec::Stream {
                    key: text_arg(&arg),
                    from_id,
                })
            }
            "ShardsIDReader" => Ok(ReaderSpec::ShardsId),
            "PythonReader" | "GeneratorReader" => match arg {
                RunArg::Callback(callback) => Ok(ReaderSpec::Generator { callback }),
                _ => Err(GearsError::Plan(
                    "pyreader argument must be a function".into(),
                )),
            },
            name => ReaderSpec::native(&crate::extension::installed(), name, arg, kwargs),
        }
    }

    /// The spec of native reader `requested` (`name` or `name@major`) of `registry`: `run()`'s
    /// argument is its positional argument, `run()`'s options other than Gears' own limits are
    /// its named arguments. The reader is built once here, so bad arguments fail the script.
    /// A name that can not be a native reader's gets RedisGears' error for unknown readers.
    pub fn native(
        registry: &crate::extension::Registry,
        requested: &str,
        arg: RunArg,
        kwargs: &[Kwarg],
    ) -> Result<ReaderSpec> {
        let name = requested.split('@').next().unwrap_or_default();
        let looks_native = name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !looks_native {
            return Err(GearsError::Plan(
                "Given reader do not support run or not exists".into(),
            ));
        }
        let reader = registry.reader(requested)?;
        let args = match arg {
            RunArg::None => Vec::new(),
            RunArg::Text(text) => vec![Record::from(text)],
            RunArg::Callback(_) => {
                return Err(GearsError::Plan(format!(
                    "{name}: the argument of run() must be a string, not a function"
                )))
            }
        };
        const LIMITS: [&str; 4] = ["timeout", "maxRecords", "maxReplySize", "maxErrors"];
        let named = kwargs
            .iter()
            .filter(|(k, _)| !LIMITS.contains(&k.as_str()))
            .cloned()
            .collect();
        let call = NativeCall {
            name: reader.name().to_string(),
            major: reader.version().major,
            args,
            named,
        };
        reader.build(&call)?;
        Ok(ReaderSpec::Native(call))
    }
}

#[cfg(test)]
mod tests;
