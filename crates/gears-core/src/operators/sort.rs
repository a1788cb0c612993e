//! `sort(reverse=True)`: all records in order. Partial: gather this shard's records into one
//! list; final: merge the lists and sort with Python's ordering.
//!
//! RedisGears sorts with `sorted(reverse=reverse)` and then emits through a flatmap, which
//! reverses the list; so the default (`reverse=True`) comes out ascending. Gears keeps that.

use std::cmp::Ordering;

use super::{Operator, StepContext};
use crate::error::{GearsError, Result};
use crate::record::Record;

pub struct Sort {
    reverse: bool,
    partial: bool,
    records: Vec<Record>,
}

impl Sort {
    pub fn new(reverse: bool, partial: bool) -> Self {
        Sort {
            reverse,
            partial,
            records: Vec::new(),
        }
    }
}

/// Python's `<` between two core records.
pub fn python_compare(a: &Record, b: &Record) -> Result<Ordering> {
    use Record::*;
    let number = |r: &Record| match r {
        Bool(v) => Some(*v as i64 as f64),
        Integer(v) => Some(*v as f64),
        Float(v) => Some(*v),
        _ => None,
    };
    match (a, b) {
        (Integer(x), Integer(y)) => Ok(x.cmp(y)),
        (String(x), String(y)) => Ok(x.cmp(y)),
        (Bytes(x), Bytes(y)) => Ok(x.cmp(y)),
        (List(x), List(y)) => {
            for (l, r) in x.iter().zip(y.iter()) {
                if l != r {
                    return python_compare(l, r);
                }
            }
            Ok(x.len().cmp(&y.len()))
        }
        _ => match (number(a), number(b)) {
            (Some(x), Some(y)) => Ok(x.partial_cmp(&y).unwrap_or(Ordering::Equal)),
            _ => Err(GearsError::Callback(format!(
                "'<' not supported between instances of '{}' and '{}'",
                a.type_name(),
                b.type_name()
            ))),
        },
    }
}

/// Sorts like Python's `sorted`: stable, and the first comparison error aborts the sort.
pub fn python_sort(records: &mut [Record]) -> Result<()> {
    let mut failure = None;
    records.sort_by(|a, b| match python_compare(a, b) {
        Ok(order) => order,
        Err(e) => {
            failure.get_or_insert(e);
            Ordering::Equal
        }
    });
    failure.map_or(Ok(()), Err)
}

impl Operator for Sort {
    fn held(&self) -> usize {
        self.records.len()
    }

    fn process(&mut self, input: Vec<Record>, ctx: &mut StepContext<'_>) -> Vec<Record> {
        for record in input {
            match ctx.core(record) {
                Ok(Record::List(items)) if !self.partial => self.records.extend(items),
                Ok(core) if self.partial => self.records.push(core),
                Ok(_) => ctx.error(GearsError::Internal("sort: malformed partial state".into())),
                Err(e) => ctx.error(e),
            }
        }
        Vec::new()
    }

    fn finish(&mut self, ctx: &mut StepContext<'_>) -> Vec<Record> {
        let mut records = std::mem::take(&mut self.records);
        if records.is_empty() {
            return Vec::new();
        }
        if self.partial {
            return vec![Record::List(records)];
        }
        if let Err(e) = python_sort(&mut records) {
            ctx.error(e);
            return Vec::new();
        }
        // sorted(reverse=True) is descending; the flatmap then emits it last-to-first.
        if !self.reverse {
            records.reverse();
        }
        records
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    fn sort(reverse: bool, input: Vec<Record>) -> (Vec<Record>, Vec<String>) {
        let mut rt = TestRuntime {
            callbacks: vec![],
            values: vec![],
        };
        let (partial, _) = run_op(&mut Sort::new(reverse, true), &mut rt, vec![input]);
        run_op(&mut Sort::new(reverse, false), &mut rt, vec![partial])
    }

    #[test]
    fn default_order_is_ascending() {
        assert_eq!(sort(true, ints(&[3, 1, 2])).0, ints(&[1, 2, 3]));
        assert_eq!(sort(false, ints(&[3, 1, 2])).0, ints(&[3, 2, 1]));
    }

    #[test]
    fn mixed_types_fail_like_python() {
        let (out, errors) = sort(true, vec![Record::Integer(1), Record::from("a")]);
        assert!(out.is_empty());
        assert_eq!(
            errors,
            vec!["'<' not supported between instances of 'str' and 'int'".to_string()]
        );
    }
}
