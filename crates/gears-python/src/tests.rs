//! The Python frontend as plain Rust: scripts compiled by the embedded interpreter, plans run by
//! the core executor over in-memory records. Redis itself is exercised by tests/ (real server).

use std::sync::Arc;

use gears_core::{
    Executor, Frontend, GearsError, KeyRecord, LogLevel, Record, RedisAccess, Result, VecReader,
};

use crate::{start_interpreter, PythonConfig, PythonFrontend};

/// No Redis here: every command fails.
struct NoRedis;

impl RedisAccess for NoRedis {
    fn execute(&self, _args: &[Vec<u8>]) -> Result<Record> {
        Err(GearsError::Redis("no redis in unit tests".into()))
    }
    fn log(&self, _level: LogLevel, _message: &str) {}
    fn gears_config_get(&self, _key: &str) -> Option<Record> {
        None
    }
    fn hashtag(&self) -> String {
        "06S".into()
    }
}

mod binding;
mod isolation;
mod memory;
mod stopping;
mod support;

/// Starts Python once, on a thread of its own that then ends, as Redis's main thread would be:
/// the test threads are never the thread that started Python.
pub(crate) fn frontend() -> PythonFrontend {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        std::thread::spawn(|| {
            start_interpreter(&PythonConfig {
                venv: None,
                attempt_traceback: true,
            })
            .expect("python starts")
        })
        .join()
        .expect("the start thread ends");
    });
    PythonFrontend::new()
}

fn run(script: &str, records: Vec<Record>) -> (Vec<Record>, Vec<String>) {
    let compiled = frontend()
        .compile(script, Arc::new(NoRedis))
        .expect("compiles");
    let plan = compiled.plans.into_iter().next().expect("a plan");
    let outcome = Executor::new(plan, compiled.session).run(&mut VecReader::new(records, 2));
    (outcome.results, outcome.errors)
}

fn script_error(script: &str) -> String {
    match frontend().compile(script, Arc::new(NoRedis)) {
        Err(GearsError::Script(text)) => text,
        Err(other) => panic!("not a script error: {other:?}"),
        Ok(_) => panic!("compiled: {script}"),
    }
}

fn ints(values: &[i64]) -> Vec<Record> {
    values.iter().map(|v| Record::Integer(*v)).collect()
}

fn strings(values: &[&str]) -> Vec<Record> {
    values.iter().map(|v| Record::from(*v)).collect()
}

#[test]
fn map_filter_accumulate() {
    let (results, errors) = run(
        "GB('ShardsIDReader').map(lambda x: x * 10).filter(lambda x: x > 10)\
         .accumulate(lambda a, x: (a or 0) + x).run()",
        ints(&[1, 2, 3]),
    );
    assert_eq!((results, errors), (strings(&["50"]), vec![]));
}

#[test]
fn flatmap_emits_lists_last_to_first() {
    let (results, _) = run(
        "GB('ShardsIDReader').flatmap(lambda x: [x, x + 1]).run()",
        ints(&[1, 10]),
    );
    assert_eq!(results, strings(&["2", "1", "11", "10"]));
}

#[test]
fn key_records_are_dicts_in_redisgears_order() {
    let record = Record::Key(Box::new(KeyRecord {
        key: b"user:1".to_vec(),
        value: Some(Record::Map(vec![(Record::from("age"), Record::from("70"))])),
        key_type: "hash".into(),
        event: None,
    }));
    let (results, _) = run(
        "GB().map(lambda x: (list(x.keys()), x['value']['age'], str(x))).run()",
        vec![record],
    );
    assert_eq!(
        results,
        strings(&["(['event', 'key', 'type', 'value'], '70', \"{'event': None, 'key': 'user:1', 'type': 'hash', 'value': {'age': '70'}}\")"])
    );
}

#[test]
fn filter_passes_the_converted_object_on() {
    // The record the filter saw is the object the next callback gets: no second conversion.
    let (results, _) = run(
        "seen = []\nGB().filter(lambda x: seen.append(x) or True).map(lambda x: any(x is s for s in seen)).run()",
        ints(&[1, 2]),
    );
    assert_eq!(results, strings(&["True", "True"]));
}

#[test]
fn callback_errors_use_redisgears_traceback_format() {
    let (results, errors) = run("GB().map(lambda x: 1 // (x - 2)).run()", ints(&[1, 2, 3]));
    assert_eq!(results, strings(&["-1", "1"]));
    assert_eq!(
        errors,
        vec!["['Traceback (most recent call last):\\n', '  File \"<string>\", line 1, in <lambda>\\n', 'ZeroDivisionError: integer division or modulo by zero\\n']".to_string()]
    );
}

#[test]
fn script_errors() {
    assert_eq!(
        script_error("GB().map(1)"),
        "['Traceback (most recent call last):\\n', '  File \"<string>\", line 1, in <module>\\n', 'gears.error: map argument must be a function\\n']"
    );
    assert_eq!(
        script_error("def f(:\n  pass"),
        "Error type: <class 'SyntaxError'>, Value: invalid syntax (<string>, line 1)"
    );
    assert!(script_error("GB().run()\nGB().run()")
        .ends_with("'gears.error: Can not run more then 1 executions in a single script\\n']"));
    assert!(
        script_error("execute('GET', 'k')").ends_with("'gears.error: no redis in unit tests\\n']")
    );
}

#[test]
fn aggregate_zero_is_a_fresh_copy_each_time() {
    let (results, _) = run(
        "GB().aggregate([], lambda a, r: a + [r], lambda a, r: a + r).map(lambda x: sorted(x)).run()",
        ints(&[3, 1, 2]),
    );
    assert_eq!(results, strings(&["[1, 2, 3]"]));
}

#[test]
fn rust_operators_see_python_values() {
    let (results, errors) = run(
        "GB().map(lambda x: x % 3).sort(False).run()",
        ints(&[4, 5, 6, 7]),
    );
    assert_eq!((results, errors), (strings(&["2", "1", "1", "0"]), vec![]));
    let (results, _) = run("GB().map(lambda x: (x, x)).distinct().run()", ints(&[1]));
    assert_eq!(results, strings(&["[1, 1]"]));
}

#[test]
fn convert_to_str_false_converts_values_to_core_records() {
    let (results, _) = run(
        "GB().map(lambda x: [x, 1.5, None, {'a': 1}, b'b', (1, 2)]).run(convertToStr=False)",
        ints(&[7]),
    );
    assert_eq!(
        results,
        vec![Record::List(vec![
            Record::Integer(7),
            Record::Float(1.5),
            Record::Nil,
            Record::Map(vec![(Record::from("a"), Record::Integer(1))]),
            Record::Bytes(b"b".to_vec()),
            Record::List(ints(&[1, 2])),
        ])]
    );
}

#[test]
fn generator_reader() {
    let compiled = frontend()
        .compile(
            "def gen():\n    for i in range(5):\n        yield i\nGB('PythonReader').run(gen)",
            Arc::new(NoRedis),
        )
        .expect("compiles");
    let plan = compiled.plans.into_iter().next().expect("a plan");
    let mut reader = gears_core::GeneratorReader::new(
        compiled.session.clone(),
        match plan.reader {
            gears_core::ReaderSpec::Generator { callback } => callback,
            other => panic!("not a generator reader: {other:?}"),
        },
        2,
    );
    let outcome = Executor::new(plan, compiled.session).run(&mut reader);
    assert_eq!(outcome.results, strings(&["0", "1", "2", "3", "4"]));
}

#[test]
fn no_run_builds_no_plan_and_globals_are_per_script() {
    let first = frontend()
        .compile("x = 1", Arc::new(NoRedis))
        .expect("compiles");
    assert!(first.plans.is_empty());
    assert!(script_error("print(x)").ends_with("\"NameError: name 'x' is not defined\\n\"]"));
}
