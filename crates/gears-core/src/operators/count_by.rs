//! `countby(extractor)`: `{'key': k, 'value': n}` per key. Partial: count this shard's records
//! per extracted key; final (after repartition by key): sum the partial counts per key.

use super::Keyer;
use super::{Operator, StepContext};
use crate::error::{GearsError, Result};
use crate::record::{GroupKey, Record};
use std::collections::HashMap;

pub struct CountBy {
    key: Keyer,
    partial: bool,
    index: HashMap<GroupKey, usize>,
    counts: Vec<(GroupKey, i64)>,
}

impl CountBy {
    pub fn new(key: Keyer, partial: bool) -> Self {
        CountBy {
            key: if partial { key } else { Keyer::RecordKey },
            partial,
            index: HashMap::new(),
            counts: Vec::new(),
        }
    }

    fn step(&mut self, record: Record, ctx: &mut StepContext<'_>) -> Result<()> {
        let key = ctx.key_of(&mut self.key, &record)?;
        let add = if self.partial {
            1
        } else {
            match ctx.core(record)?.get_field("value") {
                Some(Record::Integer(n)) => n,
                _ => {
                    return Err(GearsError::Internal(
                        "countby: partial state has no integer value".into(),
                    ))
                }
            }
        };
        match self.index.get(&key) {
            Some(slot) => self.counts[*slot].1 += add,
            None => {
                self.index.insert(key.clone(), self.counts.len());
                self.counts.push((key, add));
            }
        }
        Ok(())
    }
}

impl Operator for CountBy {
    fn held(&self) -> usize {
        self.counts.len()
    }

    fn process(&mut self, input: Vec<Record>, ctx: &mut StepContext<'_>) -> Vec<Record> {
        for record in input {
            if let Err(e) = self.step(record, ctx) {
                ctx.error(e);
            }
        }
        Vec::new()
    }

    fn finish(&mut self, _ctx: &mut StepContext<'_>) -> Vec<Record> {
        self.index.clear();
        let counts = std::mem::take(&mut self.counts);
        // The final phase emits in RedisGears' dict order, as its groupby does.
        let counts = if self.partial {
            counts
        } else {
            crate::in_gears_dict_order(counts)
        };
        counts
            .into_iter()
            .map(|(k, n)| Record::key_value(k.into_record(), Record::Integer(n)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn counts_identity_keys_then_merges() {
        let mut rt = TestRuntime {
            callbacks: vec![],
            values: vec![],
        };
        let words = |w: &[&str]| w.iter().map(|s| Record::from(*s)).collect::<Vec<_>>();
        let (a, _) = run_op(
            &mut CountBy::new(Keyer::Identity, true),
            &mut rt,
            vec![words(&["a", "b", "a"])],
        );
        let (b, _) = run_op(
            &mut CountBy::new(Keyer::Identity, true),
            &mut rt,
            vec![words(&["b"])],
        );
        let (merged, errors) = run_op(
            &mut CountBy::new(Keyer::Identity, false),
            &mut rt,
            vec![a, b],
        );
        assert!(errors.is_empty(), "{errors:?}");
        // RedisGears' dict yields "b" before "a".
        assert_eq!(
            merged,
            vec![
                Record::key_value(Record::from("b"), Record::Integer(2)),
                Record::key_value(Record::from("a"), Record::Integer(2)),
            ]
        );
    }
}
