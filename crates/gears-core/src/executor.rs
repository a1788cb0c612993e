//! Runs a plan over the batches a reader yields.

use std::sync::Arc;
use std::time::Instant;

use crate::control;
use crate::error::Result;
use crate::frontend::{Runtime, Session};
use crate::operators::{self, Operator, StepContext};
use crate::plan::ExecutionPlan;
use crate::plan::{CallbackId, ValueId};
use crate::progress::{ErrorList, Progress, READING};
use crate::reader::RecordReader;
use crate::record::GroupKey;
use crate::record::Record;

/// The results and per-record errors of an execution. Results are core records.
#[derive(Debug, Default, PartialEq)]
pub struct ExecutionOutcome {
    pub results: Vec<Record>,
    pub errors: Vec<String>,
}

/// Runs one plan. Each batch goes through every step inside a single [`Session::enter`], so a
/// language's interpreter lock is taken once per batch, never while the reader holds Redis.
pub struct Executor {
    /// Shared with the execution that lists it (and a registration's every run).
    plan: Arc<ExecutionPlan>,
    session: Arc<dyn Session>,
    progress: Arc<Progress>,
    exchange: Option<Arc<dyn crate::operators::RecordExchange>>,
    extensions: Arc<crate::extension::Registry>,
}

/// Where the records of a run are and what the run may hold.
struct Run<'p> {
    operators: Vec<Box<dyn Operator>>,
    results: Vec<Record>,
    errors: ErrorList,
    progress: &'p Progress,
    max_records: u64,
}

impl Executor {
    pub fn new(plan: impl Into<Arc<ExecutionPlan>>, session: Arc<dyn Session>) -> Self {
        Executor {
            plan: plan.into(),
            session,
            progress: Arc::new(Progress::default()),
            exchange: None,
            extensions: crate::extension::installed(),
        }
    }

    /// Builds native steps from `registry` instead of the process's installed one.
    pub fn extensions(mut self, registry: Arc<crate::extension::Registry>) -> Self {
        self.extensions = registry;
        self
    }

    /// Reports the run's progress (records read, the step it is in, durations) to `progress`.
    pub fn observed(mut self, progress: Arc<Progress>) -> Self {
        self.progress = progress;
        self
    }

    /// Runs the plan as one shard's part of a distributed execution: its `collect` and
    /// `repartition` steps move records through `exchange`.
    pub fn distributed(mut self, exchange: Arc<dyn crate::operators::RecordExchange>) -> Self {
        self.exchange = Some(exchange);
        self
    }

    /// Reads every batch, pushes it through the steps, flushes the stateful steps at the end
    /// of input, and converts the results to core records. The execution's control (if the
    /// thread works for one) bounds the errors listed and the records held, and stops the run.
    pub fn run(&self, reader: &mut dyn RecordReader) -> ExecutionOutcome {
        let limits = control::current().map(|c| c.limits()).unwrap_or_default();
        // A plan whose native step this server can not build (it lacks the extension, or has
        // another major version of it) does not run: its one error says why.
        let built: Result<Vec<Box<dyn Operator>>> = self
            .plan
            .steps
            .iter()
            .enumerate()
            .map(|(i, step)| {
                operators::build_step(step, i, self.exchange.as_ref(), &self.extensions)
            })
            .collect();
        let operators = match built {
            Ok(operators) => operators,
            Err(e) => {
                self.progress.count_errors(1);
                return ExecutionOutcome {
                    results: Vec::new(),
                    errors: vec![e.to_string()],
                };
            }
        };
        let mut run = Run {
            operators,
            results: Vec::new(),
            errors: ErrorList::new(usize::try_from(limits.max_errors).unwrap_or(usize::MAX)),
            progress: &self.progress,
            max_records: limits.max_records,
        };
        // A satisfied limit before the first step that holds records ends the reading early.
        let streaming_prefix = self
            .plan
            .steps
            .iter()
            .position(|step| !step.is_streaming())
            .unwrap_or(self.plan.steps.len());
        loop {
            if run.operators[..streaming_prefix]
                .iter()
                .any(|op| op.exhausted())
                || control::check_current().is_err()
            {
                break;
            }
            self.progress.enter_step(READING);
            let started = Instant::now();
            let batch = match reader.next_batch() {
                Ok(Some(batch)) => batch,
                Ok(None) => break,
                Err(e) => {
                    // A stop is reported once, at the end.
                    if !matches!(e, crate::GearsError::Stopped(_)) {
                        run.errors.push(e.to_string());
                    }
                    break;
                }
            };
            self.progress.read(batch.len(), started.elapsed());
            if batch.is_empty() {
                continue;
            }
            let mut batch = Some(batch);
            self.enter(&mut |runtime| {
                let records = batch.take().unwrap_or_default();
                run.push(0, records, runtime);
            });
            run.check_held();
        }
        self.enter(&mut |runtime| {
            // A stopped execution keeps the results it emitted but flushes nothing more.
            for i in 0..run.operators.len() {
                if control::check_current().is_err() {
                    break;
                }
                run.finish(i, runtime);
                run.check_held();
            }
            let results = std::mem::take(&mut run.results);
            run.results = to_core(results, &mut Checked(runtime), &mut run.errors);
        });
        self.progress.count_errors(run.errors.total());
        let mut errors = run.errors.into_vec();
        if let Err(stopped) = control::check_current() {
            self.progress.count_errors(1);
            errors.push(stopped.to_string());
        }
        ExecutionOutcome {
            results: run.results,
            errors,
        }
    }

    /// Enters the session, counting the time spent in the language.
    fn enter(&self, f: &mut dyn FnMut(&mut dyn Runtime)) {
        let started = Instant::now();
        self.session.enter(f);
        self.progress.in_language(started.elapsed());
    }
}

impl Run<'_> {
    /// Pushes records through the steps from `first` on; what comes out is a result.
    fn push(&mut self, first: usize, mut records: Vec<Record>, runtime: &mut dyn Runtime) {
        let mut runtime = Checked(runtime);
        let mut ctx = StepContext {
            runtime: &mut runtime,
            errors: &mut self.errors,
        };
        for i in first..self.operators.len() {
            if records.is_empty() {
                return;
            }
            self.progress.enter_step(i as i64);
            let started = self.progress.profile().then(Instant::now);
            records = self.operators[i].process(records, &mut ctx);
            if let Some(started) = started {
                self.progress.step_took(i, started.elapsed());
            }
            // A step that multiplies records (flatmap) passes the limit inside one batch.
            if self.max_records != 0
                && records.len() as u64 > self.max_records
                && past_limit(
                    self.max_records,
                    &mut self.results,
                    &self.operators,
                    records.len(),
                )
            {
                return;
            }
        }
        self.progress.emitted(records.len());
        self.results.extend(records);
        self.check_held();
    }

    /// Flushes step `i` at the end of input into the steps after it.
    fn finish(&mut self, i: usize, runtime: &mut dyn Runtime) {
        self.progress.enter_step(i as i64);
        let started = self.progress.profile().then(Instant::now);
        let flushed = {
            let mut runtime = Checked(&mut *runtime);
            let mut ctx = StepContext {
                runtime: &mut runtime,
                errors: &mut self.errors,
            };
            self.operators[i].finish(&mut ctx)
        };
        if let Some(started) = started {
            self.progress.step_took(i, started.elapsed());
        }
        self.push(i + 1, flushed, runtime);
    }

    /// Stops the execution when it holds more records than it may.
    fn check_held(&mut self) {
        if self.max_records != 0 {
            past_limit(self.max_records, &mut self.results, &self.operators, 0);
        }
    }
}

/// True (and the execution stopped) when the results, the steps' state and `in_flight`
/// records of a batch are more than `max` records. The results are then cut to the limit: the
/// reply of a stopped execution holds no more than it was allowed to.
fn past_limit(
    max: u64,
    results: &mut Vec<Record>,
    operators: &[Box<dyn Operator>],
    in_flight: usize,
) -> bool {
    let held = in_flight + results.len() + operators.iter().map(|op| op.held()).sum::<usize>();
    if held as u64 <= max {
        return false;
    }
    if let Some(control) = control::current() {
        control.stop(format!(
            "the execution holds more than {max} records (ExecutionMaxRecords)"
        ));
    }
    results.truncate(usize::try_from(max).unwrap_or(usize::MAX));
    true
}

/// The runtime as the operators see it: every callback first checks that the execution may
/// go on, so a stopped execution stops at the next record, not at the end of its batch.
struct Checked<'a, 'r>(&'a mut (dyn Runtime + 'r));

/// Runs a call into a language, turning a panic into an error of its record: the stop's error
/// when the execution was stopped (a binding that panics when an allocation is refused past a
/// memory limit), an internal error otherwise. The worker and the execution go on.
fn guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(panic) => Err(match control::check_current() {
            Err(stopped) => stopped,
            Ok(()) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".to_string());
                crate::GearsError::Internal(format!("Gears internal error: {message}"))
            }
        }),
    }
}

impl Runtime for Checked<'_, '_> {
    fn call(&mut self, callback: CallbackId, args: &[&Record]) -> Result<Record> {
        control::check_current()?;
        guarded(|| self.0.call(callback, args))
    }
    fn call_each(&mut self, callback: CallbackId, records: &[Record]) -> Vec<Result<Record>> {
        if let Err(stopped) = control::check_current() {
            return records.iter().map(|_| Err(stopped.clone())).collect();
        }
        match guarded(|| Ok(self.0.call_each(callback, records))) {
            Ok(results) => results,
            Err(e) => records.iter().map(|_| Err(e.clone())).collect(),
        }
    }
    fn call_now(&mut self, callback: CallbackId, args: &[&Record], what: &str) -> Result<Record> {
        control::check_current()?;
        guarded(|| self.0.call_now(callback, args, what))
    }
    fn to_core(&mut self, value: Record) -> Result<Record> {
        guarded(|| self.0.to_core(value))
    }
    fn value(&mut self, id: ValueId) -> Result<Record> {
        guarded(|| self.0.value(id))
    }
    fn prepare(&mut self, record: Record) -> Result<Record> {
        guarded(|| self.0.prepare(record))
    }
    fn truthy(&mut self, value: &Record) -> Result<bool> {
        guarded(|| self.0.truthy(value))
    }
    fn expand_list(&mut self, value: Record) -> Result<std::result::Result<Vec<Record>, Record>> {
        guarded(|| self.0.expand_list(value))
    }
    fn to_str(&mut self, value: &Record) -> Result<String> {
        guarded(|| self.0.to_str(value))
    }
    fn group_key(&mut self, value: Record) -> Result<GroupKey> {
        guarded(|| self.0.group_key(value))
    }
    fn start_generator(&mut self, callback: CallbackId) -> Result<Record> {
        control::check_current()?;
        guarded(|| self.0.start_generator(callback))
    }
    fn released(&mut self, f: &mut dyn FnMut()) {
        self.0.released(f)
    }
    fn next_from_generator(&mut self, generator: &Record, max: usize) -> Result<Vec<Record>> {
        control::check_current()?;
        guarded(|| self.0.next_from_generator(generator, max))
    }
}

fn to_core(records: Vec<Record>, runtime: &mut dyn Runtime, errors: &mut ErrorList) -> Vec<Record> {
    let mut out = Vec::with_capacity(records.len());
    for record in records {
        if !record.contains_native() {
            out.push(record);
            continue;
        }
        match runtime.to_core(record) {
            Ok(core) => out.push(core),
            // Reported once, at the end of the run.
            Err(crate::GearsError::Stopped(_)) => {}
            Err(e) => errors.push(e.to_string()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::PlanBuilder;
    use crate::error::GearsError;
    use crate::operators::testing::{int_of, ints, Callback, TestRuntime};
    use crate::plan::{Language, ReaderSpec, RunOptions};
    use crate::reader::VecReader;
    use std::sync::Mutex;

    struct TestSession(Mutex<TestRuntime>);

    impl Session for TestSession {
        fn language(&self) -> Language {
            Language::Python
        }
        fn enter(&self, f: &mut dyn FnMut(&mut dyn Runtime)) {
            let mut runtime = self.0.lock().unwrap();
            f(&mut *runtime)
        }
    }

    // TestRuntime holds boxed closures that are not Send; the test runs on one thread.
    unsafe impl Send for TestSession {}
    unsafe impl Sync for TestSession {}

    fn session(callbacks: Vec<Callback>) -> Arc<dyn Session> {
        Arc::new(TestSession(Mutex::new(TestRuntime {
            callbacks,
            values: vec![],
        })))
    }

    fn reader() -> ReaderSpec {
        ReaderSpec::ShardsId
    }

    fn no_str() -> RunOptions {
        RunOptions {
            convert_to_str: false,
            ..RunOptions::default()
        }
    }

    #[test]
    fn filter_map_accumulate_over_batches() {
        let callbacks: Vec<Callback> = vec![
            Box::new(|a: &[Record]| Ok(Record::Bool(int_of(&a[0])? > 35))),
            Box::new(|a: &[Record]| Ok(Record::Integer(1 + int_of(&a[0])?))),
        ];
        let mut b = PlanBuilder::new(Language::Python);
        b.filter(crate::CallbackId(0));
        b.accumulate(crate::CallbackId(1));
        let plan = b.build(reader(), RunOptions::default(), None);
        let exec = Executor::new(plan, session(callbacks));
        let records = (0..100).map(|i| Record::Integer(i % 80)).collect();
        let outcome = exec.run(&mut VecReader::new(records, 7));
        assert_eq!(outcome.results, vec![Record::from("44")]);
        assert!(outcome.errors.is_empty());
    }

    #[test]
    fn errors_do_not_stop_other_records() {
        let callbacks: Vec<Callback> = vec![Box::new(|a: &[Record]| {
            let v = int_of(&a[0])?;
            if v % 2 == 0 {
                Err(GearsError::Callback(format!("even {v}")))
            } else {
                Ok(Record::Integer(v))
            }
        })];
        let mut b = PlanBuilder::new(Language::Python);
        b.map(crate::CallbackId(0));
        b.count();
        let exec = Executor::new(b.build(reader(), no_str(), None), session(callbacks));
        let outcome = exec.run(&mut VecReader::new(ints(&[1, 2, 3, 4, 5]), 2));
        assert_eq!(outcome.results, ints(&[3]));
        assert_eq!(
            outcome.errors,
            vec!["even 2".to_string(), "even 4".to_string()]
        );
    }

    #[test]
    fn stateful_steps_flush_into_later_steps() {
        // sort then limit: the limit must see the sorted output flushed by sort's final phase.
        let mut b = PlanBuilder::new(Language::Python);
        b.sort(true);
        b.limit(2, 1);
        let exec = Executor::new(b.build(reader(), no_str(), None), session(vec![]));
        let outcome = exec.run(&mut VecReader::new(ints(&[5, 3, 9, 1]), 3));
        assert_eq!(outcome.results, ints(&[3, 5]));
    }

    #[test]
    fn a_satisfied_limit_stops_reading() {
        struct Endless(i64);
        impl RecordReader for Endless {
            fn next_batch(&mut self) -> Result<Option<Vec<Record>>> {
                self.0 += 1;
                Ok(Some(vec![Record::Integer(self.0)]))
            }
        }
        let mut b = PlanBuilder::new(Language::Python);
        b.limit(3, 1);
        let exec = Executor::new(b.build(reader(), no_str(), None), session(vec![]));
        let outcome = exec.run(&mut Endless(0));
        assert_eq!(outcome.results, ints(&[2, 3, 4]));
    }

    mod native {
        use super::*;
        use crate::extension::{
            Accumulator, Args, Extension, Mapper, NativeOperator, Registry, Version,
        };

        struct Square;
        impl Mapper for Square {
            fn map(&mut self, record: Record) -> Result<Record> {
                let v = int_of(&record)?;
                Ok(Record::Integer(v * v))
            }
        }

        #[derive(Default)]
        struct Max(Option<i64>);
        impl Accumulator for Max {
            fn update(&mut self, record: Record) -> Result<()> {
                let v = int_of(&record)?;
                self.0 = Some(self.0.map_or(v, |m| m.max(v)));
                Ok(())
            }
            fn state(&mut self) -> Result<Record> {
                Ok(self.0.map_or(Record::Nil, Record::Integer))
            }
            fn merge(&mut self, state: Record) -> Result<()> {
                self.update(state)
            }
            fn evaluate(&mut self) -> Result<Record> {
                self.state()
            }
        }

        fn registry() -> Arc<Registry> {
            let v1 = Version::new(1, 0);
            let mut registry = Registry::new();
            registry
                .add(
                    Extension::new("math", v1)
                        .operator(NativeOperator::map("square", v1, |_: &Args| Ok(Square)))
                        .operator(NativeOperator::aggregate("max", v1, |_: &Args| {
                            Ok(Max::default())
                        })),
                )
                .unwrap();
            Arc::new(registry)
        }

        #[test]
        fn native_steps_run_between_callbacks() {
            let registry = registry();
            let callbacks: Vec<Callback> = vec![Box::new(|a: &[Record]| {
                Ok(Record::Integer(int_of(&a[0])? + 1))
            })];
            let mut b = PlanBuilder::new(Language::Python);
            b.map(crate::CallbackId(0));
            b.native(&registry, "square", vec![]).unwrap();
            b.native(&registry, "max@1", vec![]).unwrap();
            let plan = b.build(reader(), no_str(), None);
            // map, square, max (partial), collect, max (final), run's collect
            assert_eq!(plan.steps.len(), 6);
            let exec = Executor::new(plan, session(callbacks)).extensions(registry);
            let outcome = exec.run(&mut VecReader::new(ints(&[1, 5, 3]), 2));
            assert_eq!(outcome.results, ints(&[36]));
            assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
        }

        #[test]
        fn a_server_without_the_operator_refuses_the_plan() {
            let mut b = PlanBuilder::new(Language::Lua);
            b.native(&registry(), "square", vec![]).unwrap();
            let plan = b.build(reader(), no_str(), None);
            let exec = Executor::new(plan, session(vec![])).extensions(Arc::new(Registry::new()));
            let outcome = exec.run(&mut VecReader::new(ints(&[2]), 1));
            assert!(outcome.results.is_empty());
            assert_eq!(
                outcome.errors,
                vec!["unknown native operator 'square' (this server has no native operators or readers)"
                    .to_string()]
            );
        }
    }

    #[test]
    fn reader_errors_are_reported() {
        struct Failing;
        impl RecordReader for Failing {
            fn next_batch(&mut self) -> Result<Option<Vec<Record>>> {
                Err(GearsError::Plan("bad id".into()))
            }
        }
        let b = PlanBuilder::new(Language::Python);
        let exec = Executor::new(b.build(reader(), no_str(), None), session(vec![]));
        let outcome = exec.run(&mut Failing);
        assert_eq!(outcome.errors, vec!["bad id".to_string()]);
    }
}
