//! `limit(length, start=0)`: skips `start` records, then passes at most `length`.

use super::{Operator, StepContext};
use crate::record::Record;

pub struct Limit {
    length: u64,
    start: u64,
    seen: u64,
}

impl Limit {
    pub fn new(length: u64, start: u64) -> Self {
        Limit {
            length,
            start,
            seen: 0,
        }
    }
}

impl Operator for Limit {
    fn process(&mut self, input: Vec<Record>, _ctx: &mut StepContext<'_>) -> Vec<Record> {
        let mut out = Vec::new();
        for record in input {
            let index = self.seen;
            self.seen += 1;
            if index >= self.start && index - self.start < self.length {
                out.push(record);
            }
        }
        out
    }

    fn exhausted(&self) -> bool {
        self.seen >= self.start.saturating_add(self.length)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn window_across_batches() {
        let mut rt = TestRuntime {
            callbacks: vec![],
            values: vec![],
        };
        let (out, _) = run_op(
            &mut Limit::new(3, 2),
            &mut rt,
            vec![ints(&[0, 1, 2]), ints(&[3, 4, 5, 6])],
        );
        assert_eq!(out, ints(&[2, 3, 4]));
    }
}
