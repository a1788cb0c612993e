//! `map(f)`: one output record per input record.

use super::{Operator, StepContext};
use crate::plan::CallbackId;
use crate::record::Record;

pub struct Map {
    callback: CallbackId,
}

impl Map {
    pub fn new(callback: CallbackId) -> Self {
        Map { callback }
    }
}

impl Operator for Map {
    fn process(&mut self, input: Vec<Record>, ctx: &mut StepContext<'_>) -> Vec<Record> {
        let mut out = Vec::with_capacity(input.len());
        for result in ctx.runtime.call_each(self.callback, &input) {
            match result {
                Ok(mapped) => out.push(mapped),
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
    fn maps_and_reports_errors_per_record() {
        let mut rt = TestRuntime {
            callbacks: vec![Box::new(|args: &[Record]| {
                let v = int_of(&args[0])?;
                if v == 2 {
                    Err(GearsError::Callback("boom".into()))
                } else {
                    Ok(Record::Integer(v * 10))
                }
            })],
            values: vec![],
        };
        let (out, errors) = run_op(
            &mut Map::new(CallbackId(0)),
            &mut rt,
            vec![ints(&[1, 2]), ints(&[3])],
        );
        assert_eq!(out, ints(&[10, 30]));
        assert_eq!(errors, vec!["boom".to_string()]);
    }
}
