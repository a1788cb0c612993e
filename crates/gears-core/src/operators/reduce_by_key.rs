//! Accumulate per key: `acc[k] = reducer(k, acc[k], record)`, emitting `{'key', 'value'}`
//! records in the order of RedisGears' dict ([`crate::gears_dict_order`]). This is `localgroupby`, and the merge half of `groupby` and
//! `aggregateby` once records were repartitioned by key.

use super::Keyer;
use super::{Operator, StepContext};
use crate::error::Result;
use crate::plan::{CallbackId, ValueId};
use crate::record::{GroupKey, Record};
use std::collections::HashMap;

pub struct ReduceByKey {
    key: Keyer,
    reducer: CallbackId,
    zero: Option<ValueId>,
    reduce_value: bool,
    index: HashMap<GroupKey, usize>,
    groups: Vec<(GroupKey, Record)>,
}

impl ReduceByKey {
    pub fn new(key: Keyer, reducer: CallbackId, zero: Option<ValueId>, reduce_value: bool) -> Self {
        ReduceByKey {
            key,
            reducer,
            zero,
            reduce_value,
            index: HashMap::new(),
            groups: Vec::new(),
        }
    }

    fn step(&mut self, record: Record, ctx: &mut StepContext<'_>) -> Result<()> {
        let key = ctx.key_of(&mut self.key, &record)?;
        let slot = match self.index.get(&key) {
            Some(slot) => *slot,
            None => {
                self.groups.push((key.clone(), Record::Nil));
                self.index.insert(key.clone(), self.groups.len() - 1);
                self.groups.len() - 1
            }
        };
        let input = if self.reduce_value {
            let core = ctx.core(record)?;
            core.get_field("value").unwrap_or(Record::Nil)
        } else {
            record
        };
        let acc = std::mem::replace(&mut self.groups[slot].1, Record::Nil);
        let acc = match super::accumulate::seeded(acc, self.zero, ctx) {
            Ok(acc) => acc,
            Err((acc, e)) => {
                self.groups[slot].1 = acc;
                return Err(e);
            }
        };
        let key_record = key.into_record();
        match ctx.runtime.call(self.reducer, &[&key_record, &acc, &input]) {
            Ok(next) => {
                self.groups[slot].1 = next;
                Ok(())
            }
            Err(e) => {
                self.groups[slot].1 = acc;
                Err(e)
            }
        }
    }
}

impl Operator for ReduceByKey {
    fn held(&self) -> usize {
        self.groups.len()
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
        // RedisGears emits the groups in its dict's order.
        crate::in_gears_dict_order(std::mem::take(&mut self.groups))
            .into_iter()
            .map(|(key, value)| Record::key_value(key.into_record(), value))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn groups_in_first_seen_order() {
        let mut rt = TestRuntime {
            callbacks: vec![
                Box::new(|args: &[Record]| Ok(Record::Integer(int_of(&args[0])? % 2))),
                Box::new(|args: &[Record]| {
                    Ok(Record::Integer(int_of(&args[1])? + int_of(&args[2])?))
                }),
            ],
            values: vec![],
        };
        let mut op = ReduceByKey::new(Keyer::Callback(CallbackId(0)), CallbackId(1), None, false);
        let (out, errors) = run_op(&mut op, &mut rt, vec![ints(&[1, 2, 3, 4, 5])]);
        assert!(errors.is_empty());
        assert_eq!(
            out,
            vec![
                Record::key_value(Record::from("1"), Record::Integer(9)),
                Record::key_value(Record::from("0"), Record::Integer(6)),
            ]
        );
    }
}
