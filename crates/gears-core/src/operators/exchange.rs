//! `collect` and `repartition`: steps that move records between shards. On a single node every
//! record is already where it must be, so the operator passes records through; in a cluster
//! the executor is given a [`RecordExchange`] that moves them.

use std::sync::Arc;

use super::Keyer;
use super::{Operator, StepContext};
use crate::error::Result;
use crate::record::{GroupKey, Record};

/// Moves the records of one execution's exchange steps between the shards that run it. Every
/// shard runs the same plan; an exchange step's records leave through [`RecordExchange::send`]
/// and the ones sent to this shard come back from [`RecordExchange::finish`] once every shard
/// has finished sending for that step.
pub trait RecordExchange: Send + Sync {
    /// `collect`: sends `records` to the initiator; returns those that stay here (all of them
    /// on the initiator).
    fn collect(&self, step: usize, records: Vec<Record>) -> Result<Vec<Record>>;

    /// `repartition`: sends each record to the shard that owns its key's slot; returns those
    /// that stay here.
    fn repartition(&self, step: usize, records: Vec<(GroupKey, Record)>) -> Result<Vec<Record>>;

    /// The end of this shard's records for `step`: waits until every shard has sent its
    /// records for the step, and returns those sent here.
    fn finish(&self, step: usize) -> Result<Vec<Record>>;
}

pub struct Exchange {
    route: Option<Route>,
}

struct Route {
    exchange: Arc<dyn RecordExchange>,
    step: usize,
    /// `None`: collect; else repartition by this key.
    key: Option<Keyer>,
}

impl Exchange {
    /// A single node's exchange: records pass through.
    pub fn local() -> Self {
        Exchange { route: None }
    }

    /// Step `step` of a distributed execution.
    pub fn distributed(exchange: Arc<dyn RecordExchange>, step: usize, key: Option<Keyer>) -> Self {
        Exchange {
            route: Some(Route {
                exchange,
                step,
                key,
            }),
        }
    }
}

/// Records a language owns become core records (they travel), also inside lists and maps.
fn core_records(records: Vec<Record>, ctx: &mut StepContext<'_>) -> Vec<Record> {
    let mut out = Vec::with_capacity(records.len());
    for record in records {
        match to_core(record, ctx) {
            Ok(core) => out.push(core),
            Err(e) => ctx.error(e),
        }
    }
    out
}

fn to_core(record: Record, ctx: &mut StepContext<'_>) -> Result<Record> {
    if !record.contains_native() {
        return Ok(record);
    }
    match record {
        Record::Native(_) => {
            match ctx.runtime.to_core(record)? {
                Record::Native(_) => Err(crate::GearsError::Callback(
                    "a value that can not be sent to another shard".into(),
                )),
                // A language's conversion may leave values it holds inside (an accumulator).
                core => to_core(core, ctx),
            }
        }
        Record::List(items) => Ok(Record::List(
            items
                .into_iter()
                .map(|item| to_core(item, ctx))
                .collect::<Result<_>>()?,
        )),
        Record::Map(pairs) => Ok(Record::Map(
            pairs
                .into_iter()
                .map(|(k, v)| Ok((to_core(k, ctx)?, to_core(v, ctx)?)))
                .collect::<Result<_>>()?,
        )),
        other => Ok(other),
    }
}

impl Operator for Exchange {
    fn process(&mut self, input: Vec<Record>, ctx: &mut StepContext<'_>) -> Vec<Record> {
        let Some(route) = &mut self.route else {
            return input;
        };
        let moved = match &mut route.key {
            None => {
                let records = core_records(input, ctx);
                route.exchange.collect(route.step, records)
            }
            Some(source) => {
                let mut keyed = Vec::with_capacity(input.len());
                for record in input {
                    match ctx.key_of(source, &record) {
                        Ok(key) => keyed.push((key, record)),
                        Err(e) => ctx.error(e),
                    }
                }
                let (keys, records): (Vec<GroupKey>, Vec<Record>) = keyed.into_iter().unzip();
                let records = core_records(records, ctx);
                if records.len() != keys.len() {
                    return Vec::new();
                }
                route
                    .exchange
                    .repartition(route.step, keys.into_iter().zip(records).collect())
            }
        };
        match moved {
            Ok(records) => records,
            Err(e) => {
                ctx.error(e);
                Vec::new()
            }
        }
    }

    fn finish(&mut self, ctx: &mut StepContext<'_>) -> Vec<Record> {
        let Some(route) = &mut self.route else {
            return Vec::new();
        };
        // The wait for the other shards does not hold the language (other executions on this
        // shard, parts of other shards' executions among them, need it meanwhile).
        let mut finished = None;
        let (exchange, step) = (route.exchange.clone(), route.step);
        ctx.runtime
            .released(&mut || finished = Some(exchange.finish(step)));
        let finished = finished.unwrap_or_else(|| Ok(Vec::new()));
        match finished {
            Ok(records) => records,
            Err(e) => {
                ctx.error(e);
                Vec::new()
            }
        }
    }
}
