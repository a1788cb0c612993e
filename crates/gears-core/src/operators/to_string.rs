//! `convertToStr`: `str(record)` in the script's language.

use super::{Operator, StepContext};
use crate::record::Record;
use crate::repr::python_str;

pub struct ToStringOp;

impl Operator for ToStringOp {
    fn process(&mut self, input: Vec<Record>, ctx: &mut StepContext<'_>) -> Vec<Record> {
        let mut out = Vec::with_capacity(input.len());
        for record in input {
            if record.contains_native() {
                match ctx.runtime.to_str(&record) {
                    Ok(s) => out.push(Record::String(s)),
                    Err(e) => ctx.error(e),
                }
            } else {
                out.push(Record::String(python_str(&record)));
            }
        }
        out
    }
}
