//! `flatmap(f)`: a returned list becomes many records, emitted last-to-first as RedisGears does;
//! any other value is one record.

use super::{Operator, StepContext};
use crate::plan::CallbackId;
use crate::record::Record;

pub struct FlatMap {
    callback: CallbackId,
}

impl FlatMap {
    pub fn new(callback: CallbackId) -> Self {
        FlatMap { callback }
    }
}

impl Operator for FlatMap {
    fn process(&mut self, input: Vec<Record>, ctx: &mut StepContext<'_>) -> Vec<Record> {
        let mut out = Vec::with_capacity(input.len());
        for value in ctx.runtime.call_each(self.callback, &input) {
            let expanded = value.and_then(|value| ctx.runtime.expand_list(value));
            match expanded {
                Ok(Ok(items)) => out.extend(items.into_iter().rev()),
                Ok(Err(single)) => out.push(single),
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
    fn lists_expand_last_to_first() {
        let mut rt = TestRuntime {
            callbacks: vec![Box::new(|args: &[Record]| {
                Ok(match &args[0] {
                    Record::Integer(1) => Record::List(ints(&[1, 2, 3])),
                    other => other.clone(),
                })
            })],
            values: vec![],
        };
        let (out, errors) = run_op(
            &mut FlatMap::new(CallbackId(0)),
            &mut rt,
            vec![ints(&[1, 9])],
        );
        assert_eq!(out, ints(&[3, 2, 1, 9]));
        assert!(errors.is_empty());
    }
}
