//! `foreach(f)`: calls `f` for its side effects; the record passes on unchanged.

use super::{Operator, StepContext};
use crate::plan::CallbackId;
use crate::record::Record;

pub struct ForEach {
    callback: CallbackId,
}

impl ForEach {
    pub fn new(callback: CallbackId) -> Self {
        ForEach { callback }
    }
}

impl Operator for ForEach {
    fn process(&mut self, input: Vec<Record>, ctx: &mut StepContext<'_>) -> Vec<Record> {
        let mut prepared = Vec::with_capacity(input.len());
        for record in input {
            match ctx.runtime.prepare(record) {
                Ok(record) => prepared.push(record),
                Err(e) => ctx.error(e),
            }
        }
        let done = ctx.runtime.call_each(self.callback, &prepared);
        let mut out = Vec::with_capacity(prepared.len());
        for (record, done) in prepared.into_iter().zip(done) {
            match done {
                Ok(_) => out.push(record),
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
    use crate::error::GearsError;

    #[test]
    fn passes_records_and_drops_failures() {
        let mut rt = TestRuntime {
            callbacks: vec![Box::new(|args: &[Record]| match int_of(&args[0])? {
                2 => Err(GearsError::Callback("no".into())),
                _ => Ok(Record::Nil),
            })],
            values: vec![],
        };
        let (out, errors) = run_op(
            &mut ForEach::new(CallbackId(0)),
            &mut rt,
            vec![ints(&[1, 2, 3])],
        );
        assert_eq!(out, ints(&[1, 3]));
        assert_eq!(errors, vec!["no".to_string()]);
    }
}
