//! Native steps: the running forms of a Rust extension's map, filter, flatmap and two-phase
//! aggregation (see [`crate::extension`]).
//!
//! A native operator works on core records. A record a script callback made (a language value)
//! is converted to a core record only when it reaches a native step, and a native filter passes
//! on the record as it came: a filter between two callbacks of one language costs one
//! conversion to look inside, none back. Each call runs guarded: a panic in an extension is an
//! error of its record.

use super::{Operator, StepContext};
use crate::error::Result;
use crate::extension::{guarded_until_panic as call, Accumulator, FlatMapper, Mapper, Predicate};
use crate::record::Record;

/// `record` as a core record; an error goes to the error list.
fn core(record: Record, ctx: &mut StepContext<'_>) -> Option<Record> {
    match ctx.core(record) {
        Ok(core) => Some(core),
        Err(e) => {
            ctx.error(e);
            None
        }
    }
}

pub struct NativeMap(Box<dyn Mapper>, Option<String>);

impl NativeMap {
    pub fn new(mapper: Box<dyn Mapper>) -> Self {
        NativeMap(mapper, None)
    }
}

/// Runs `f` over each record (as a core record), guarded by `broken`; `f` adds what it gives to
/// the output.
fn each_record<O: ?Sized>(
    input: Vec<Record>,
    ctx: &mut StepContext<'_>,
    (operator, broken): (&mut O, &mut Option<String>),
    f: impl Fn(&mut O, Record, &mut Vec<Record>) -> Result<()>,
) -> Vec<Record> {
    let mut out = Vec::with_capacity(input.len());
    for record in input {
        let Some(record) = core(record, ctx) else {
            continue;
        };
        if let Err(e) = call(broken, || f(operator, record, &mut out)) {
            ctx.error(e);
        }
    }
    out
}

impl Operator for NativeMap {
    fn process(&mut self, input: Vec<Record>, ctx: &mut StepContext<'_>) -> Vec<Record> {
        each_record(
            input,
            ctx,
            (&mut *self.0, &mut self.1),
            |mapper, record, out| {
                out.push(mapper.map(record)?);
                Ok(())
            },
        )
    }
}

pub struct NativeFilter(Box<dyn Predicate>, Option<String>);

impl NativeFilter {
    pub fn new(predicate: Box<dyn Predicate>) -> Self {
        NativeFilter(predicate, None)
    }
}

impl Operator for NativeFilter {
    fn process(&mut self, input: Vec<Record>, ctx: &mut StepContext<'_>) -> Vec<Record> {
        let mut out = Vec::with_capacity(input.len());
        for record in input {
            let (predicate, broken) = (&mut self.0, &mut self.1);
            let kept = if record.contains_native() {
                match ctx.core(record.clone()) {
                    Ok(core) => call(broken, || predicate.test(&core)),
                    Err(e) => Err(e),
                }
            } else {
                call(broken, || predicate.test(&record))
            };
            match kept {
                Ok(true) => out.push(record),
                Ok(false) => {}
                Err(e) => ctx.error(e),
            }
        }
        out
    }
}

pub struct NativeFlatMap(Box<dyn FlatMapper>, Option<String>);

impl NativeFlatMap {
    pub fn new(mapper: Box<dyn FlatMapper>) -> Self {
        NativeFlatMap(mapper, None)
    }
}

impl Operator for NativeFlatMap {
    fn process(&mut self, input: Vec<Record>, ctx: &mut StepContext<'_>) -> Vec<Record> {
        each_record(
            input,
            ctx,
            (&mut *self.0, &mut self.1),
            |mapper, record, out| {
                out.extend(mapper.flat_map(record)?);
                Ok(())
            },
        )
    }
}

/// One phase of a native aggregation: partial (update, then emit the state) or final (merge
/// the states, then emit the result). Nothing in, nothing out.
pub struct NativeAggregate {
    accumulator: Box<dyn Accumulator>,
    partial: bool,
    seen: bool,
    broken: Option<String>,
}

impl NativeAggregate {
    pub fn new(accumulator: Box<dyn Accumulator>, partial: bool) -> Self {
        NativeAggregate {
            accumulator,
            partial,
            seen: false,
            broken: None,
        }
    }

    fn add(&mut self, record: Record) -> Result<()> {
        let (accumulator, broken) = (&mut self.accumulator, &mut self.broken);
        if self.partial {
            call(broken, || accumulator.update(record))
        } else {
            call(broken, || accumulator.merge(record))
        }
    }
}

impl Operator for NativeAggregate {
    fn held(&self) -> usize {
        usize::from(self.seen)
    }

    fn process(&mut self, input: Vec<Record>, ctx: &mut StepContext<'_>) -> Vec<Record> {
        for record in input {
            let Some(record) = core(record, ctx) else {
                continue;
            };
            match self.add(record) {
                Ok(()) => self.seen = true,
                Err(e) => ctx.error(e),
            }
        }
        Vec::new()
    }

    fn finish(&mut self, ctx: &mut StepContext<'_>) -> Vec<Record> {
        if !std::mem::take(&mut self.seen) {
            return Vec::new();
        }
        let (accumulator, broken) = (&mut self.accumulator, &mut self.broken);
        let result = if self.partial {
            call(broken, || accumulator.state())
        } else {
            call(broken, || accumulator.evaluate())
        };
        match result {
            Ok(record) => vec![record],
            Err(e) => {
                ctx.error(e);
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::GearsError;

    struct Double;
    impl Mapper for Double {
        fn map(&mut self, record: Record) -> Result<Record> {
            match record {
                Record::Integer(i) => Ok(Record::Integer(i * 2)),
                _ => panic!("not an integer"),
            }
        }
    }

    struct Even;
    impl Predicate for Even {
        fn test(&mut self, record: &Record) -> Result<bool> {
            Ok(int_of(record)? % 2 == 0)
        }
    }

    struct Twice;
    impl FlatMapper for Twice {
        fn flat_map(&mut self, record: Record) -> Result<Vec<Record>> {
            Ok(vec![record.clone(), record])
        }
    }

    /// Sum, with the partial state a list `[sum]`.
    #[derive(Default)]
    struct Sum(i64);
    impl Accumulator for Sum {
        fn update(&mut self, record: Record) -> Result<()> {
            self.0 += int_of(&record)?;
            Ok(())
        }
        fn state(&mut self) -> Result<Record> {
            Ok(Record::List(vec![Record::Integer(self.0)]))
        }
        fn merge(&mut self, state: Record) -> Result<()> {
            match state {
                Record::List(items) => self.update(items[0].clone()),
                _ => Err(GearsError::Callback("bad state".into())),
            }
        }
        fn evaluate(&mut self) -> Result<Record> {
            Ok(Record::Integer(self.0))
        }
    }

    fn rt() -> TestRuntime {
        TestRuntime {
            callbacks: vec![],
            values: vec![],
        }
    }

    #[test]
    fn map_filter_flatmap() {
        let (out, _) = run_op(
            &mut NativeMap::new(Box::new(Double)),
            &mut rt(),
            vec![ints(&[1, 2])],
        );
        assert_eq!(out, ints(&[2, 4]));
        let (out, _) = run_op(
            &mut NativeFilter::new(Box::new(Even)),
            &mut rt(),
            vec![ints(&[1, 2, 3, 4])],
        );
        assert_eq!(out, ints(&[2, 4]));
        let (out, _) = run_op(
            &mut NativeFlatMap::new(Box::new(Twice)),
            &mut rt(),
            vec![ints(&[7])],
        );
        assert_eq!(out, ints(&[7, 7]));
    }

    #[test]
    fn a_panic_is_the_error_of_its_record_and_the_step_calls_no_more() {
        let (out, errors) = run_op(
            &mut NativeMap::new(Box::new(Double)),
            &mut rt(),
            vec![vec![
                Record::Integer(1),
                Record::from("x"),
                Record::Integer(3),
            ]],
        );
        // After a panic the extension's state can not be trusted: later records get its error.
        assert_eq!(out, ints(&[2]));
        assert_eq!(
            errors,
            vec!["a native extension failed: not an integer".to_string(); 2]
        );
        // An aggregate that panicked gives no result (not one from a half-done update).
        struct PanicSum(i64);
        impl Accumulator for PanicSum {
            fn update(&mut self, record: Record) -> Result<()> {
                match record {
                    Record::Integer(n) => self.0 += n,
                    _ => panic!("not an integer"),
                }
                Ok(())
            }
            fn state(&mut self) -> Result<Record> {
                Ok(Record::Integer(self.0))
            }
            fn merge(&mut self, state: Record) -> Result<()> {
                self.update(state)
            }
            fn evaluate(&mut self) -> Result<Record> {
                Ok(Record::Integer(self.0))
            }
        }
        let (total, errors) = run_op(
            &mut NativeAggregate::new(Box::new(PanicSum(0)), true),
            &mut rt(),
            vec![vec![
                Record::Integer(1),
                Record::from("x"),
                Record::Integer(2),
            ]],
        );
        assert!(total.is_empty(), "{total:?}");
        assert_eq!(
            errors,
            vec!["a native extension failed: not an integer".to_string(); 3]
        );
    }

    #[test]
    fn two_phases_merge_partial_states() {
        let (a, _) = run_op(
            &mut NativeAggregate::new(Box::new(Sum::default()), true),
            &mut rt(),
            vec![ints(&[1, 2]), ints(&[3])],
        );
        let (b, _) = run_op(
            &mut NativeAggregate::new(Box::new(Sum::default()), true),
            &mut rt(),
            vec![ints(&[10])],
        );
        let (empty, _) = run_op(
            &mut NativeAggregate::new(Box::new(Sum::default()), true),
            &mut rt(),
            vec![],
        );
        assert!(empty.is_empty());
        let (total, errors) = run_op(
            &mut NativeAggregate::new(Box::new(Sum::default()), false),
            &mut rt(),
            vec![a, b],
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(total, ints(&[16]));
    }
}
