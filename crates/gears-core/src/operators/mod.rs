//! The running operators built from plan [`Step`]s, one per file.
//!
//! An operator receives batches of records and may keep state across them (`accumulate`,
//! group-bys, aggregations); state is flushed by [`Operator::finish`] at the end of input.
//! Only user callbacks cross into the language; everything else runs in Rust.

mod accumulate;
mod avg;
mod batch_reduce_by_key;
mod count;
mod count_by;
mod distinct;
mod exchange;
mod filter;
mod flatmap;
mod foreach;
mod keyer;
mod limit;
mod map;
mod native;
mod reduce_by_key;
mod sort;
mod to_string;

pub use accumulate::Accumulate;
pub use avg::Avg;
pub use batch_reduce_by_key::BatchReduceByKey;
pub use count::Count;
pub use count_by::CountBy;
pub use distinct::Distinct;
pub use exchange::{Exchange, RecordExchange};
pub use filter::Filter;
pub use flatmap::FlatMap;
pub use foreach::ForEach;
pub use keyer::Keyer;
pub use limit::Limit;
pub use map::Map;
pub use native::{NativeAggregate, NativeFilter, NativeFlatMap, NativeMap};
pub use reduce_by_key::ReduceByKey;
pub use sort::Sort;
pub use to_string::ToStringOp;

use crate::error::{GearsError, Result};
use crate::extension::{NativeStepKind, OperatorKind, Registry};
use crate::frontend::Runtime;
use crate::plan::{Aggregation, Step};
use crate::progress::ErrorList;
use crate::record::{GroupKey, Record};

/// What an operator sees while it runs: the language runtime and the execution's error list.
pub struct StepContext<'a> {
    pub runtime: &'a mut dyn Runtime,
    pub errors: &'a mut ErrorList,
}

impl StepContext<'_> {
    /// Records a per-record error; processing goes on with the next record. A stopped
    /// execution is not a record's error: the executor reports it once.
    pub fn error(&mut self, error: GearsError) {
        if !matches!(error, GearsError::Stopped(_)) {
            self.errors.push(error.to_string());
        }
    }

    /// The key of `record` according to `keyer`.
    pub fn key_of(&mut self, keyer: &mut Keyer, record: &Record) -> Result<GroupKey> {
        keyer.key(self, record)
    }

    /// A core copy of a record (natives converted).
    pub fn core(&mut self, record: Record) -> Result<Record> {
        if record.contains_native() {
            self.runtime.to_core(record)
        } else {
            Ok(record)
        }
    }
}

/// A running step.
pub trait Operator: Send {
    /// Processes one batch and returns the records for the next step.
    fn process(&mut self, input: Vec<Record>, ctx: &mut StepContext<'_>) -> Vec<Record>;

    /// Called once after the last batch; returns any records held back.
    fn finish(&mut self, _ctx: &mut StepContext<'_>) -> Vec<Record> {
        Vec::new()
    }

    /// True when no further input can produce output (a satisfied `limit`).
    fn exhausted(&self) -> bool {
        false
    }

    /// Records (or groups) the step holds until the end of input.
    fn held(&self) -> usize {
        0
    }
}

/// Builds the running operator of a step; native operators come from the process's
/// registry ([`crate::extension::installed`]).
pub fn build(step: &Step) -> Result<Box<dyn Operator>> {
    build_step(step, 0, None, &crate::extension::installed())
}

/// Builds the running operator of step `index` of a plan; with `exchange`, its `collect` and
/// `repartition` steps move records between shards. Native operators and extractors are
/// looked up in `registry`: a plan that names one this server lacks is refused here.
pub fn build_step(
    step: &Step,
    index: usize,
    exchange: Option<&std::sync::Arc<dyn RecordExchange>>,
    registry: &Registry,
) -> Result<Box<dyn Operator>> {
    use crate::plan::Phase;
    let keyer = |source| Keyer::build(source, registry);
    match (step, exchange) {
        (Step::Collect, Some(exchange)) => {
            return Ok(Box::new(Exchange::distributed(
                exchange.clone(),
                index,
                None,
            )))
        }
        (Step::Repartition { key }, Some(exchange)) => {
            return Ok(Box::new(Exchange::distributed(
                exchange.clone(),
                index,
                Some(keyer(key)?),
            )))
        }
        _ => {}
    }
    Ok(match step {
        Step::Map(cb) => Box::new(Map::new(*cb)),
        Step::FlatMap(cb) => Box::new(FlatMap::new(*cb)),
        Step::Filter(cb) => Box::new(Filter::new(*cb)),
        Step::ForEach(cb) => Box::new(ForEach::new(*cb)),
        Step::Accumulate { callback, zero } => Box::new(Accumulate::new(*callback, *zero)),
        Step::ReduceByKey {
            key,
            reducer,
            zero,
            reduce_value,
        } => Box::new(ReduceByKey::new(
            keyer(key)?,
            *reducer,
            *zero,
            *reduce_value,
        )),
        Step::BatchReduceByKey { key, reducer } => {
            Box::new(BatchReduceByKey::new(keyer(key)?, *reducer))
        }
        Step::Limit { length, start } => Box::new(Limit::new(*length, *start)),
        Step::Collect | Step::Repartition { .. } => Box::new(Exchange::local()),
        Step::Aggregate { aggregation, phase } => {
            let partial = *phase == Phase::Partial;
            match aggregation {
                Aggregation::Count => Box::new(Count::new(partial)),
                Aggregation::CountBy { key } => {
                    let key = if partial {
                        keyer(key)?
                    } else {
                        Keyer::RecordKey
                    };
                    Box::new(CountBy::new(key, partial))
                }
                Aggregation::Avg { extractor } => Box::new(Avg::new(*extractor, partial)),
                Aggregation::Sort { reverse } => Box::new(Sort::new(*reverse, partial)),
                Aggregation::Distinct => Box::new(Distinct::new(partial)),
            }
        }
        Step::ToString => Box::new(ToStringOp),
        Step::Native { call, kind } => {
            let operator = registry.resolve(call)?;
            let args = call.args();
            let build = || -> Result<Box<dyn Operator>> {
                Ok(match (kind, operator.kind()) {
                    (NativeStepKind::Map, OperatorKind::Map(f)) => {
                        Box::new(NativeMap::new(f(&args)?))
                    }
                    (NativeStepKind::Filter, OperatorKind::Filter(f)) => {
                        Box::new(NativeFilter::new(f(&args)?))
                    }
                    (NativeStepKind::FlatMap, OperatorKind::FlatMap(f)) => {
                        Box::new(NativeFlatMap::new(f(&args)?))
                    }
                    (NativeStepKind::Aggregate(phase), OperatorKind::Aggregate(f)) => {
                        Box::new(NativeAggregate::new(f(&args)?, *phase == Phase::Partial))
                    }
                    (kind, other) => {
                        return Err(GearsError::Plan(format!(
                            "native operator '{}' is {} on this server, not a native {} step",
                            call.name,
                            other.described(),
                            kind.name()
                        )))
                    }
                })
            };
            crate::extension::guarded(build)?
        }
    })
}

#[cfg(test)]
pub(crate) mod testing {
    //! A tiny in-Rust "language" for operator unit tests: callbacks are Rust closures.
    use super::*;
    use crate::plan::{CallbackId, ValueId};

    pub type Callback = Box<dyn Fn(&[Record]) -> Result<Record>>;

    pub struct TestRuntime {
        pub callbacks: Vec<Callback>,
        pub values: Vec<Record>,
    }

    impl Runtime for TestRuntime {
        fn call(&mut self, callback: CallbackId, args: &[&Record]) -> Result<Record> {
            let args: Vec<Record> = args.iter().map(|r| (*r).clone()).collect();
            (self.callbacks[callback.0 as usize])(&args)
        }
        fn to_core(&mut self, value: Record) -> Result<Record> {
            Ok(value)
        }
        fn value(&mut self, id: ValueId) -> Result<Record> {
            Ok(self.values[id.0 as usize].clone())
        }
    }

    /// Runs `op` over `batches` then finishes it; returns (output, errors).
    pub fn run_op(
        op: &mut dyn Operator,
        runtime: &mut TestRuntime,
        batches: Vec<Vec<Record>>,
    ) -> (Vec<Record>, Vec<String>) {
        let mut errors = ErrorList::new(0);
        let mut out = Vec::new();
        let mut ctx = StepContext {
            runtime,
            errors: &mut errors,
        };
        for batch in batches {
            out.extend(op.process(batch, &mut ctx));
        }
        out.extend(op.finish(&mut ctx));
        (out, errors.into_vec())
    }

    pub fn ints(values: &[i64]) -> Vec<Record> {
        values.iter().map(|v| Record::Integer(*v)).collect()
    }

    pub fn int_of(record: &Record) -> Result<i64> {
        match record {
            Record::Integer(i) => Ok(*i),
            Record::Nil => Ok(0),
            other => Err(GearsError::Callback(format!("not an int: {other:?}"))),
        }
    }
}
