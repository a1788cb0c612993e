//! `accumulate(f)`: `acc = f(acc, record)` over all records, then one output record.
//!
//! The accumulator starts as nil. With a `zero` (the `aggregate` sugar) a falsy accumulator is
//! replaced by a fresh copy of `zero` before each call, as RedisGears' `a if a else zero` does.
//! Nothing is emitted when no record arrived.

use super::{Operator, StepContext};
use crate::error::Result;
use crate::plan::{CallbackId, ValueId};
use crate::record::Record;

pub struct Accumulate {
    callback: CallbackId,
    zero: Option<ValueId>,
    accumulator: Option<Record>,
}

impl Accumulate {
    pub fn new(callback: CallbackId, zero: Option<ValueId>) -> Self {
        Accumulate {
            callback,
            zero,
            accumulator: None,
        }
    }

    fn step(&mut self, record: &Record, ctx: &mut StepContext<'_>) -> Result<Record> {
        // On any error the accumulator is kept as it was (still unset if no record succeeded).
        let started = self.accumulator.is_some();
        let acc = self.accumulator.take().unwrap_or(Record::Nil);
        let acc = match seeded(acc, self.zero, ctx) {
            Ok(acc) => acc,
            Err((acc, e)) => {
                self.accumulator = started.then_some(acc);
                return Err(e);
            }
        };
        let result = ctx.runtime.call(self.callback, &[&acc, record]);
        if result.is_err() {
            self.accumulator = started.then_some(acc);
        }
        result
    }
}

/// `acc if acc else copy(zero)`: a falsy accumulator replaced by a fresh copy of `zero`. On an
/// error the accumulator comes back with it.
pub(super) fn seeded(
    acc: Record,
    zero: Option<crate::plan::ValueId>,
    ctx: &mut StepContext<'_>,
) -> std::result::Result<Record, (Record, crate::GearsError)> {
    let Some(zero) = zero else {
        return Ok(acc);
    };
    match ctx.runtime.truthy(&acc) {
        Ok(true) => Ok(acc),
        Ok(false) => ctx.runtime.value(zero).map_err(|e| (acc, e)),
        Err(e) => Err((acc, e)),
    }
}

impl Operator for Accumulate {
    fn held(&self) -> usize {
        usize::from(self.accumulator.is_some())
    }

    fn process(&mut self, input: Vec<Record>, ctx: &mut StepContext<'_>) -> Vec<Record> {
        for record in input {
            match self.step(&record, ctx) {
                Ok(acc) => self.accumulator = Some(acc),
                Err(e) => ctx.error(e),
            }
        }
        Vec::new()
    }

    fn finish(&mut self, _ctx: &mut StepContext<'_>) -> Vec<Record> {
        self.accumulator.take().into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    fn summing() -> TestRuntime {
        TestRuntime {
            callbacks: vec![Box::new(|args: &[Record]| {
                Ok(Record::Integer(int_of(&args[0])? + int_of(&args[1])?))
            })],
            values: vec![Record::Integer(100)],
        }
    }

    #[test]
    fn sums_across_batches() {
        let (out, _) = run_op(
            &mut Accumulate::new(CallbackId(0), None),
            &mut summing(),
            vec![ints(&[1, 2]), ints(&[3])],
        );
        assert_eq!(out, ints(&[6]));
    }

    #[test]
    fn empty_input_emits_nothing() {
        let (out, _) = run_op(
            &mut Accumulate::new(CallbackId(0), None),
            &mut summing(),
            vec![],
        );
        assert!(out.is_empty());
    }

    #[test]
    fn zero_seeds_a_falsy_accumulator() {
        let (out, _) = run_op(
            &mut Accumulate::new(CallbackId(0), Some(ValueId(0))),
            &mut summing(),
            vec![ints(&[1, 2])],
        );
        assert_eq!(out, ints(&[103]));
    }
}
