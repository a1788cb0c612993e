//! `filter(f)`: keeps the records for which `f` is truthy. The record itself passes on
//! unchanged (no conversion).

use super::{Operator, StepContext};
use crate::plan::CallbackId;
use crate::record::Record;

pub struct Filter {
    callback: CallbackId,
}

impl Filter {
    pub fn new(callback: CallbackId) -> Self {
        Filter { callback }
    }
}

impl Operator for Filter {
    fn process(&mut self, input: Vec<Record>, ctx: &mut StepContext<'_>) -> Vec<Record> {
        let mut prepared = Vec::with_capacity(input.len());
        for record in input {
            match ctx.runtime.prepare(record) {
                Ok(record) => prepared.push(record),
                Err(e) => ctx.error(e),
            }
        }
        let verdicts = ctx.runtime.call_each(self.callback, &prepared);
        let mut out = Vec::with_capacity(prepared.len());
        for (record, verdict) in prepared.into_iter().zip(verdicts) {
            match verdict.and_then(|verdict| ctx.runtime.truthy(&verdict)) {
                Ok(true) => out.push(record),
                Ok(false) => {}
                Err(e) => ctx.error(e),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn keeps_truthy() {
        let mut rt = TestRuntime {
            callbacks: vec![Box::new(|args: &[Record]| {
                Ok(Record::Bool(int_of(&args[0])? % 2 == 0))
            })],
            values: vec![],
        };
        let (out, _) = run_op(
            &mut Filter::new(CallbackId(0)),
            &mut rt,
            vec![ints(&[1, 2, 3, 4])],
        );
        assert_eq!(out, ints(&[2, 4]));
    }
}
