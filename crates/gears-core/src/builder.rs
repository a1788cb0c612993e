//! The one builder every frontend lowers into. Sugar operations (count, avg, groupby, ...) are
//! expanded here into their local and record-moving steps, so each language gets the same plan.

use crate::error::{GearsError, Result};
use crate::extension::{NativeStepKind, OperatorKind, Registry};
use crate::plan::{
    Aggregation, CallbackId, ExecutionPlan, KeySource, Language, Phase, ReaderSpec, RunOptions,
    Step, ValueId,
};
use crate::record::Record;

impl From<CallbackId> for KeySource {
    fn from(callback: CallbackId) -> Self {
        KeySource::Callback(callback)
    }
}

/// Builds the steps of an [`ExecutionPlan`].
#[derive(Clone, Debug)]
pub struct PlanBuilder {
    language: Language,
    steps: Vec<Step>,
}

impl PlanBuilder {
    pub fn new(language: Language) -> Self {
        PlanBuilder {
            language,
            steps: Vec::new(),
        }
    }

    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    fn push(&mut self, step: Step) -> &mut Self {
        self.steps.push(step);
        self
    }

    fn aggregate_steps(&mut self, aggregation: Aggregation) -> &mut Self {
        self.push(Step::Aggregate {
            aggregation: aggregation.clone(),
            phase: Phase::Partial,
        });
        self.push(Step::Collect);
        self.push(Step::Aggregate {
            aggregation,
            phase: Phase::Final,
        })
    }

    /// A native operator's step: `requested` (`name` or `name@major`) of `registry` with the
    /// script's `args` (core records), checked now. An aggregation becomes its partial phase,
    /// a collect and its final phase; an extractor is refused (it goes where a key function
    /// goes: see [`PlanBuilder::native_key`]).
    pub fn native(
        &mut self,
        registry: &Registry,
        requested: &str,
        args: Vec<Record>,
    ) -> Result<&mut Self> {
        let (call, operator) = registry.call(requested, args)?;
        let kind = match operator.kind() {
            OperatorKind::Map(_) => NativeStepKind::Map,
            OperatorKind::Filter(_) => NativeStepKind::Filter,
            OperatorKind::FlatMap(_) => NativeStepKind::FlatMap,
            OperatorKind::Aggregate(_) => {
                self.push(Step::Native {
                    call: call.clone(),
                    kind: NativeStepKind::Aggregate(Phase::Partial),
                });
                self.push(Step::Collect);
                return Ok(self.push(Step::Native {
                    call,
                    kind: NativeStepKind::Aggregate(Phase::Final),
                }));
            }
            OperatorKind::Extractor(_) => {
                return Err(GearsError::Plan(format!(
                    "native operator '{}' is an extractor: give native('{}', ...) to groupby, batchgroupby, localgroupby, countby, aggregateby or repartition",
                    call.name, call.name
                )))
            }
        };
        Ok(self.push(Step::Native { call, kind }))
    }

    /// The key source of native extractor `requested` with `args`, checked now.
    pub fn native_key(
        registry: &Registry,
        requested: &str,
        args: Vec<Record>,
    ) -> Result<KeySource> {
        let (call, operator) = registry.call(requested, args)?;
        match operator.kind() {
            OperatorKind::Extractor(_) => Ok(KeySource::Native(call)),
            other => Err(GearsError::Plan(format!(
                "native operator '{}' is {}, not an extractor",
                call.name,
                other.described()
            ))),
        }
    }

    pub fn map(&mut self, f: CallbackId) -> &mut Self {
        self.push(Step::Map(f))
    }

    pub fn flatmap(&mut self, f: CallbackId) -> &mut Self {
        self.push(Step::FlatMap(f))
    }

    pub fn filter(&mut self, f: CallbackId) -> &mut Self {
        self.push(Step::Filter(f))
    }

    pub fn foreach(&mut self, f: CallbackId) -> &mut Self {
        self.push(Step::ForEach(f))
    }

    pub fn accumulate(&mut self, f: CallbackId) -> &mut Self {
        self.push(Step::Accumulate {
            callback: f,
            zero: None,
        })
    }

    pub fn localgroupby(
        &mut self,
        extractor: impl Into<KeySource>,
        reducer: CallbackId,
    ) -> &mut Self {
        self.push(Step::ReduceByKey {
            key: extractor.into(),
            reducer,
            zero: None,
            reduce_value: false,
        })
    }

    pub fn limit(&mut self, length: u64, start: u64) -> &mut Self {
        self.push(Step::Limit { length, start })
    }

    pub fn collect(&mut self) -> &mut Self {
        self.push(Step::Collect)
    }

    pub fn repartition(&mut self, extractor: impl Into<KeySource>) -> &mut Self {
        self.push(Step::Repartition {
            key: extractor.into(),
        })
    }

    /// extract → repartition by key → accumulate by key.
    pub fn groupby(&mut self, extractor: impl Into<KeySource>, reducer: CallbackId) -> &mut Self {
        let key = extractor.into();
        self.repartition(key.clone());
        self.push(Step::ReduceByKey {
            key,
            reducer,
            zero: None,
            reduce_value: false,
        })
    }

    /// extract → repartition by key → group → reduce each group once.
    pub fn batchgroupby(
        &mut self,
        extractor: impl Into<KeySource>,
        reducer: CallbackId,
    ) -> &mut Self {
        let key = extractor.into();
        self.repartition(key.clone());
        self.push(Step::BatchReduceByKey { key, reducer })
    }

    /// accumulate(seqOp) per shard → collect → accumulate(combOp), re-seeding a falsy
    /// accumulator with a copy of `zero`.
    pub fn aggregate(&mut self, zero: ValueId, seq: CallbackId, comb: CallbackId) -> &mut Self {
        self.push(Step::Accumulate {
            callback: seq,
            zero: Some(zero),
        });
        self.push(Step::Collect);
        self.push(Step::Accumulate {
            callback: comb,
            zero: Some(zero),
        })
    }

    /// local group-by with seqOp → repartition on the group key → merge with combOp.
    pub fn aggregateby(
        &mut self,
        extractor: impl Into<KeySource>,
        zero: ValueId,
        seq: CallbackId,
        comb: CallbackId,
    ) -> &mut Self {
        self.push(Step::ReduceByKey {
            key: extractor.into(),
            reducer: seq,
            zero: Some(zero),
            reduce_value: false,
        });
        self.push(Step::Repartition {
            key: KeySource::RecordKey,
        });
        self.push(Step::ReduceByKey {
            key: KeySource::RecordKey,
            reducer: comb,
            zero: Some(zero),
            reduce_value: true,
        })
    }

    pub fn count(&mut self) -> &mut Self {
        self.aggregate_steps(Aggregation::Count)
    }

    /// Counts per key; partial counts meet on the key's shard, not on the initiator.
    pub fn countby(&mut self, extractor: Option<CallbackId>) -> &mut Self {
        self.countby_key(extractor.map_or(KeySource::Identity, KeySource::Callback))
    }

    /// countby with any key source (a native extractor).
    pub fn countby_key(&mut self, key: KeySource) -> &mut Self {
        self.push(Step::Aggregate {
            aggregation: Aggregation::CountBy { key },
            phase: Phase::Partial,
        });
        self.push(Step::Repartition {
            key: KeySource::RecordKey,
        });
        self.push(Step::Aggregate {
            aggregation: Aggregation::CountBy {
                key: KeySource::RecordKey,
            },
            phase: Phase::Final,
        })
    }

    pub fn avg(&mut self, extractor: Option<CallbackId>) -> &mut Self {
        self.aggregate_steps(Aggregation::Avg { extractor })
    }

    pub fn sort(&mut self, reverse: bool) -> &mut Self {
        self.aggregate_steps(Aggregation::Sort { reverse })
    }

    pub fn distinct(&mut self) -> &mut Self {
        self.aggregate_steps(Aggregation::Distinct)
    }

    /// Finishes the plan as `run()` does: `convertToStr` appends `str()`, `collect` appends a
    /// collect to the initiator.
    pub fn build(
        &self,
        reader: ReaderSpec,
        options: RunOptions,
        description: Option<String>,
    ) -> ExecutionPlan {
        let mut steps = self.steps.clone();
        if options.convert_to_str {
            steps.push(Step::ToString);
        }
        if options.collect {
            steps.push(Step::Collect);
        }
        ExecutionPlan {
            language: self.language,
            reader,
            steps,
            options,
            description,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Distribution;

    #[test]
    fn groupby_moves_records_by_key() {
        let mut b = PlanBuilder::new(Language::Lua);
        b.groupby(CallbackId(0), CallbackId(1));
        let kinds: Vec<_> = b.steps().iter().map(Step::distribution).collect();
        assert_eq!(kinds, vec![Distribution::Repartition, Distribution::Local]);
    }

    #[test]
    fn run_options_append_str_and_collect() {
        let b = PlanBuilder::new(Language::Python);
        let plan = b.build(ReaderSpec::ShardsId, RunOptions::default(), None);
        assert_eq!(plan.steps, vec![Step::ToString, Step::Collect]);
    }

    #[test]
    fn count_is_two_phase_around_a_collect() {
        let mut b = PlanBuilder::new(Language::Rhai);
        b.count();
        assert_eq!(
            b.steps(),
            &[
                Step::Aggregate {
                    aggregation: Aggregation::Count,
                    phase: Phase::Partial
                },
                Step::Collect,
                Step::Aggregate {
                    aggregation: Aggregation::Count,
                    phase: Phase::Final
                },
            ]
        );
    }
}
