//! `distinct()`: each distinct record once. Partial: a set of this shard's records; final:
//! the union of the partial sets. Maps are unhashable, as in Python; lists are accepted, because
//! a Python tuple (hashable) arrives as a list.

use std::collections::HashSet;

use super::{Operator, StepContext};
use crate::error::{GearsError, Result};
use crate::record::Record;
use crate::repr::python_repr;

pub struct Distinct {
    partial: bool,
    seen: HashSet<String>,
    records: Vec<Record>,
}

impl Distinct {
    pub fn new(partial: bool) -> Self {
        Distinct {
            partial,
            seen: HashSet::new(),
            records: Vec::new(),
        }
    }

    /// A hash key with Python's equality: `1`, `1.0` and `True` are one value.
    fn identity(record: &Record) -> Result<String> {
        match record {
            Record::Map(_) | Record::Key(_) => Err(GearsError::Callback(format!(
                "unhashable type: '{}'",
                record.type_name()
            ))),
            Record::Bool(b) => Ok((*b as i64).to_string()),
            Record::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok((*f as i64).to_string()),
            other => Ok(python_repr(other)),
        }
    }

    fn add(&mut self, record: Record) -> Result<()> {
        if self.seen.insert(Self::identity(&record)?) {
            self.records.push(record);
        }
        Ok(())
    }
}

impl Operator for Distinct {
    fn held(&self) -> usize {
        self.records.len()
    }

    fn process(&mut self, input: Vec<Record>, ctx: &mut StepContext<'_>) -> Vec<Record> {
        for record in input {
            let result = ctx.core(record).and_then(|core| match core {
                Record::List(items) if !self.partial => {
                    items.into_iter().try_for_each(|item| self.add(item))
                }
                core => self.add(core),
            });
            if let Err(e) = result {
                ctx.error(e);
            }
        }
        Vec::new()
    }

    fn finish(&mut self, _ctx: &mut StepContext<'_>) -> Vec<Record> {
        self.seen.clear();
        let records = std::mem::take(&mut self.records);
        if self.partial {
            if records.is_empty() {
                Vec::new()
            } else {
                vec![Record::List(records)]
            }
        } else {
            records
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn distinct_values_across_partials() {
        let mut rt = TestRuntime {
            callbacks: vec![],
            values: vec![],
        };
        let (a, _) = run_op(&mut Distinct::new(true), &mut rt, vec![ints(&[1, 2, 1])]);
        let (b, _) = run_op(
            &mut Distinct::new(true),
            &mut rt,
            vec![vec![Record::Float(2.0), Record::Integer(3)]],
        );
        let (out, _) = run_op(&mut Distinct::new(false), &mut rt, vec![a, b]);
        assert_eq!(out, ints(&[1, 2, 3]));
    }

    #[test]
    fn maps_are_unhashable() {
        let mut rt = TestRuntime {
            callbacks: vec![],
            values: vec![],
        };
        let (_, errors) = run_op(
            &mut Distinct::new(true),
            &mut rt,
            vec![vec![Record::Map(vec![])]],
        );
        assert_eq!(errors, vec!["unhashable type: 'dict'".to_string()]);
    }
}
