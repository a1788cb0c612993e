//! `batchgroupby`'s reduce: `reducer(key, [records of key])` once per key, emitting
//! `{'key', 'value'}` records.

use super::Keyer;
use super::{Operator, StepContext};
use crate::plan::CallbackId;
use crate::record::{GroupKey, Record};
use std::collections::HashMap;

pub struct BatchReduceByKey {
    key: Keyer,
    reducer: CallbackId,
    index: HashMap<GroupKey, usize>,
    groups: Vec<(GroupKey, Vec<Record>)>,
}

impl BatchReduceByKey {
    pub fn new(key: Keyer, reducer: CallbackId) -> Self {
        BatchReduceByKey {
            key,
            reducer,
            index: HashMap::new(),
            groups: Vec::new(),
        }
    }
}

impl Operator for BatchReduceByKey {
    fn held(&self) -> usize {
        self.groups.iter().map(|(_, records)| records.len()).sum()
    }

    fn process(&mut self, input: Vec<Record>, ctx: &mut StepContext<'_>) -> Vec<Record> {
        for record in input {
            match ctx.key_of(&mut self.key, &record) {
                Ok(key) => match self.index.get(&key) {
                    Some(slot) => self.groups[*slot].1.push(record),
                    None => {
                        self.index.insert(key.clone(), self.groups.len());
                        self.groups.push((key, vec![record]));
                    }
                },
                Err(e) => ctx.error(e),
            }
        }
        Vec::new()
    }

    fn finish(&mut self, ctx: &mut StepContext<'_>) -> Vec<Record> {
        self.index.clear();
        let mut out = Vec::new();
        // RedisGears pops its groups off an array: last-seen key first.
        for (key, records) in std::mem::take(&mut self.groups).into_iter().rev() {
            let key = key.into_record();
            let list = Record::List(records);
            match ctx.runtime.call_now(self.reducer, &[&key, &list], "reduce") {
                Ok(value) => out.push(Record::key_value(key, value)),
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
    fn reduces_each_group_once() {
        let mut rt = TestRuntime {
            callbacks: vec![
                Box::new(|args: &[Record]| Ok(Record::Integer(int_of(&args[0])? % 2))),
                Box::new(|args: &[Record]| match &args[1] {
                    Record::List(items) => Ok(Record::Integer(items.len() as i64)),
                    _ => Ok(Record::Nil),
                }),
            ],
            values: vec![],
        };
        let mut op = BatchReduceByKey::new(Keyer::Callback(CallbackId(0)), CallbackId(1));
        let (out, _) = run_op(&mut op, &mut rt, vec![ints(&[1, 2, 3])]);
        assert_eq!(
            out,
            vec![
                Record::key_value(Record::from("0"), Record::Integer(1)),
                Record::key_value(Record::from("1"), Record::Integer(2)),
            ]
        );
    }
}
