//! `count()`: the number of records. Partial: count this shard's records; final: sum the
//! partial counts.

use super::{Operator, StepContext};
use crate::record::Record;

pub struct Count {
    partial: bool,
    total: i64,
    seen: bool,
}

impl Count {
    pub fn new(partial: bool) -> Self {
        Count {
            partial,
            total: 0,
            seen: false,
        }
    }
}

impl Operator for Count {
    fn process(&mut self, input: Vec<Record>, ctx: &mut StepContext<'_>) -> Vec<Record> {
        for record in input {
            if self.partial {
                self.total += 1;
                self.seen = true;
                continue;
            }
            match ctx.core(record) {
                Ok(Record::Integer(n)) => {
                    self.total += n;
                    self.seen = true;
                }
                Ok(other) => ctx.error(crate::GearsError::Internal(format!(
                    "count: partial state is not an integer: {}",
                    crate::python_repr(&other)
                ))),
                Err(e) => ctx.error(e),
            }
        }
        Vec::new()
    }

    fn finish(&mut self, _ctx: &mut StepContext<'_>) -> Vec<Record> {
        if self.seen {
            vec![Record::Integer(std::mem::take(&mut self.total))]
        } else {
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn two_phases() {
        let mut rt = TestRuntime {
            callbacks: vec![],
            values: vec![],
        };
        let (a, _) = run_op(
            &mut Count::new(true),
            &mut rt,
            vec![ints(&[7, 8]), ints(&[9])],
        );
        let (b, _) = run_op(&mut Count::new(true), &mut rt, vec![ints(&[1])]);
        let (total, _) = run_op(&mut Count::new(false), &mut rt, vec![a, b]);
        assert_eq!(total, ints(&[4]));
        let (none, _) = run_op(&mut Count::new(true), &mut rt, vec![]);
        assert!(none.is_empty());
    }
}
