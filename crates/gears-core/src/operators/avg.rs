//! `avg(extractor=float)`: the mean of the extracted values. Partial: `[sum, count]` for this
//! shard; final: merge the partial states and divide. Nothing is emitted on empty input.

use super::{Operator, StepContext};
use crate::error::{GearsError, Result};
use crate::plan::CallbackId;
use crate::record::Record;
use crate::repr::python_repr;

pub struct Avg {
    extractor: Option<CallbackId>,
    partial: bool,
    sum: f64,
    count: i64,
}

impl Avg {
    pub fn new(extractor: Option<CallbackId>, partial: bool) -> Self {
        Avg {
            extractor,
            partial,
            sum: 0.0,
            count: 0,
        }
    }

    fn number(value: Record, explicit_extractor: bool) -> Result<f64> {
        match value {
            Record::Integer(i) => Ok(i as f64),
            Record::Float(f) => Ok(f),
            Record::Bool(b) => Ok(b as i64 as f64),
            Record::String(s) if !explicit_extractor => s.trim().parse::<f64>().map_err(|_| {
                GearsError::Callback(format!(
                    "could not convert string to float: {}",
                    python_repr(&Record::String(s.clone()))
                ))
            }),
            other if explicit_extractor => Err(GearsError::Callback(format!(
                "unsupported operand type(s) for +: 'int' and '{}'",
                other.type_name()
            ))),
            other => Err(GearsError::Callback(format!(
                "float() argument must be a string or a real number, not '{}'",
                other.type_name()
            ))),
        }
    }

    fn step(&mut self, record: Record, ctx: &mut StepContext<'_>) -> Result<()> {
        if self.partial {
            let value = match self.extractor {
                Some(cb) => ctx.runtime.call(cb, &[&record])?,
                None => record,
            };
            let value = ctx.core(value)?;
            self.sum += Self::number(value, self.extractor.is_some())?;
            self.count += 1;
            return Ok(());
        }
        match ctx.core(record)? {
            Record::List(state) if state.len() == 2 => {
                self.sum += Self::number(state[0].clone(), true)?;
                self.count += match state[1] {
                    Record::Integer(n) => n,
                    _ => 0,
                };
                Ok(())
            }
            _ => Err(GearsError::Internal("avg: malformed partial state".into())),
        }
    }
}

impl Operator for Avg {
    fn process(&mut self, input: Vec<Record>, ctx: &mut StepContext<'_>) -> Vec<Record> {
        for record in input {
            if let Err(e) = self.step(record, ctx) {
                ctx.error(e);
            }
        }
        Vec::new()
    }

    fn finish(&mut self, _ctx: &mut StepContext<'_>) -> Vec<Record> {
        if self.count == 0 {
            return Vec::new();
        }
        if self.partial {
            vec![Record::List(vec![
                Record::Float(self.sum),
                Record::Integer(self.count),
            ])]
        } else {
            vec![Record::Float(self.sum / self.count as f64)]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn mean_of_strings_and_numbers() {
        let mut rt = TestRuntime {
            callbacks: vec![],
            values: vec![],
        };
        let input = vec![Record::from("70"), Record::Integer(29), Record::from("x")];
        let (partial, errors) = run_op(&mut Avg::new(None, true), &mut rt, vec![input]);
        assert_eq!(
            errors,
            vec!["could not convert string to float: 'x'".to_string()]
        );
        let (out, _) = run_op(&mut Avg::new(None, false), &mut rt, vec![partial]);
        assert_eq!(out, vec![Record::Float(49.5)]);
    }
}
