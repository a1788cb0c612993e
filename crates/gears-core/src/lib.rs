//! `gears-core`: the language- and Redis-independent heart of Gears.
//!
//! It owns four things:
//! - the [`Record`] model: the values that flow between the steps of a pipeline;
//! - the [`ExecutionPlan`]: a reader description plus an ordered list of [`Step`]s, each marked
//!   with the [`Distribution`] it needs; the plan is serializable so it can be shipped to shards;
//! - the [`Executor`]: runs a plan over the batches a [`RecordReader`] yields, collecting results
//!   and per-record errors (an error on one record never stops the others);
//! - the contracts every other crate implements: [`Frontend`] / [`Session`] / [`Runtime`] for a
//!   scripting language, [`RecordReader`] for a data source and [`RedisAccess`] for the host;
//! - the [`extension`] API: native operators and readers that Rust crates add, which scripts
//!   in every language call by name.
//!
//! Nothing here depends on redis-module, pyo3, mlua or rhai: the crate is tested as plain Rust.

mod builder;
pub mod control;
mod dict_order;
mod error;
mod executor;
pub mod extension;
mod frontend;
pub mod glob;
pub mod memory;
pub mod operators;
mod plan;
pub mod progress;
mod reader;
mod record;
pub mod registration;
mod reply;
mod repr;
pub mod timer;
pub mod wire;

pub use builder::PlanBuilder;
pub use dict_order::{gears_dict_order, in_gears_dict_order, siphash_1_2_zero_key};
pub use error::{GearsError, Result};
pub use executor::{ExecutionOutcome, Executor};
pub use frontend::{
    no_hook_context, CallbackCache, Compiled, ExecutionDone, Frontend, LogLevel, Profiler,
    RedisAccess, Runtime, Session,
};
pub use plan::{
    Aggregation, CallbackId, Distribution, ExecutionMode, ExecutionPlan, KeySource, Kwarg,
    Language, Phase, ReaderSpec, RunArg, RunLimits, RunOptions, Step, ValueId,
};
pub use reader::{GeneratorReader, RecordReader, VecReader};
pub use record::{GroupKey, KeyRecord, NativeValue, Record};
pub use reply::{encode_command_reply, encode_outcome, encode_record, ReplyValue};
pub use repr::{python_float_repr, python_repr, python_str};
