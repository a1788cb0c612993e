//! Scripts compiled by the Lua frontend and run by the core executor over in-memory records.

use super::*;
use gears_core::{
    python_str, ExecutionMode, ExecutionOutcome, Executor, GeneratorReader, KeyRecord, LogLevel,
    ReaderSpec, Record, Step, VecReader,
};

/// No Redis here: every command fails, and atomic blocks only mark the execution's control.
/// Real-Redis tests live with the module.
pub(crate) struct NoRedis;

impl RedisAccess for NoRedis {
    fn execute(&self, _args: &[Vec<u8>]) -> Result<Record> {
        Err(GearsError::Redis("no redis in unit tests".into()))
    }
    fn log(&self, _level: LogLevel, _message: &str) {}
    fn gears_config_get(&self, _key: &str) -> Option<Record> {
        None
    }
    fn hashtag(&self) -> String {
        String::new()
    }
    fn begin_atomic(&self) -> Result<()> {
        if let Some(control) = gears_core::control::current() {
            control.begin_atomic();
        }
        Ok(())
    }
    fn end_atomic(&self) {
        if let Some(control) = gears_core::control::current() {
            control.end_atomic();
        }
    }
}

fn compile(script: &str) -> Result<Compiled> {
    LuaFrontend::new().compile(script, Arc::new(NoRedis))
}

fn compile_err(script: &str) -> GearsError {
    match compile(script) {
        Ok(_) => panic!("script compiled: {script}"),
        Err(e) => e,
    }
}

/// user:1..5, ages 20..60, groups a, b, a, b, a.
fn users() -> Vec<Record> {
    (1..=5)
        .map(|i| {
            let group = if i % 2 == 1 { "a" } else { "b" };
            Record::Key(Box::new(KeyRecord {
                key: format!("user:{i}").into_bytes(),
                value: Some(Record::Map(vec![
                    (Record::from("name"), Record::from(format!("u{i}"))),
                    (Record::from("age"), Record::from((10 + i * 10).to_string())),
                    (Record::from("group"), Record::from(group)),
                ])),
                key_type: "hash".into(),
                event: None,
            }))
        })
        .collect()
}

fn run_over(script: &str, records: Vec<Record>) -> ExecutionOutcome {
    let compiled = compile(script).unwrap_or_else(|e| panic!("compile failed: {e}"));
    assert_eq!(compiled.plans.len(), 1);
    let plan = compiled
        .plans
        .into_iter()
        .next()
        .unwrap_or_else(|| unreachable!());
    Executor::new(plan, compiled.session).run(&mut VecReader::new(records, 2))
}

fn run_users(script: &str) -> ExecutionOutcome {
    run_over(script, users())
}

fn strings(values: &[&str]) -> Vec<Record> {
    values.iter().map(|s| Record::from(*s)).collect()
}

fn sorted_strs(records: &[Record]) -> Vec<String> {
    let mut out: Vec<String> = records.iter().map(python_str).collect();
    out.sort();
    out
}

#[test]
fn filter_then_map_keys() {
    let out = run_users(
        "GearsBuilder('KeysReader', '*')
           :filter(function(x) return tonumber(x.value.age) > 35 end)
           :map(function(x) return x.key end)
           :run('user:*')",
    );
    assert_eq!(out.results, strings(&["user:3", "user:4", "user:5"]));
    assert!(out.errors.is_empty());
}

#[test]
fn filter_uses_lua_truthiness() {
    // 0 and '' are true in Lua.
    let out = run_users("GB():filter(function(x) return 0 end):count():run()");
    assert_eq!(out.results, strings(&["5"]));
    let out = run_users("GB():filter(function(x) return false end):run()");
    assert!(out.results.is_empty());
}

#[test]
fn foreach_passes_records_and_execute_errors_are_per_record() {
    let out = run_users(
        "GB():foreach(function(x) execute('del', x.key) end):map(function(x) return x.key end):run()",
    );
    assert!(out.results.is_empty());
    assert_eq!(
        out.errors,
        vec!["script:1: no redis in unit tests".to_string(); 5]
    );

    let out = run_users(
        "GB():foreach(function(x) local ok = pcall(execute, 'del', x.key) x.seen = not ok end)
             :map(function(x) return x.key end):count():run()",
    );
    assert_eq!(out.results, strings(&["5"]));
    assert!(out.errors.is_empty());
}

#[test]
fn tables_pass_between_steps_without_conversion() {
    let out = run_users(
        "local marker = {}
         GB():map(function(x) return {n = tonumber(x.value.age), m = marker} end)
             :filter(function(t) return t.m == marker end)
             :map(function(t) return t.n * 2 end)
             :run('*', {convertToStr = false})",
    );
    assert_eq!(
        out.results,
        vec![
            Record::Integer(40),
            Record::Integer(60),
            Record::Integer(80),
            Record::Integer(100),
            Record::Integer(120)
        ]
    );
}

#[test]
fn integer_and_float_stay_distinct() {
    let out = run_over(
        "GB():map(function(x) if x == 1 then return 3 end return 14.0 end):run()",
        vec![Record::Integer(1), Record::Integer(2)],
    );
    assert_eq!(out.results, strings(&["3", "14.0"]));
}

#[test]
fn maps_have_sorted_keys_and_sequences_become_lists() {
    let out = run_over(
        "GB():map(function(x) return {b = 1, a = {x, 'y'}, [2] = true} end)
             :run(nil, {convertToStr = false})",
        vec![Record::Integer(7)],
    );
    assert_eq!(
        out.results,
        vec![Record::Map(vec![
            (
                Record::from("a"),
                Record::List(vec![Record::Integer(7), Record::from("y")])
            ),
            (Record::from("b"), Record::Integer(1)),
            (Record::Integer(2), Record::Bool(true)),
        ])]
    );
}

#[test]
fn key_records_without_values() {
    let record = Record::Key(Box::new(KeyRecord {
        key: b"k".to_vec(),
        value: None,
        key_type: "string".into(),
        event: Some("set".into()),
    }));
    let out = run_over(
        "GB():map(function(x) return {x.key, x.value == nil, x.type == nil, x.event} end):run()",
        vec![record],
    );
    assert_eq!(out.results, strings(&["['k', True, True, 'set']"]));
}

#[test]
fn accumulate_sums_ages() {
    let out = run_users(
        "GB():accumulate(function(a, r) return (a or 0) + tonumber(r.value.age) end):run()",
    );
    assert_eq!(out.results, strings(&["200"]));
}

#[test]
fn flatmap_expands_last_to_first() {
    let out = run_over(
        "GB():flatmap(function(x) if x == 1 then return {1, 2, 3} end return x end):run()",
        vec![Record::Integer(1), Record::Integer(9)],
    );
    assert_eq!(out.results, strings(&["3", "2", "1", "9"]));
    // A table that is not a sequence is one record.
    let out = run_over(
        "GB():flatmap(function(x) return {a = x} end):count():run()",
        vec![Record::Integer(1)],
    );
    assert_eq!(out.results, strings(&["1"]));
}

#[test]
fn count_countby_avg() {
    assert_eq!(run_users("GB():count():run()").results, strings(&["5"]));
    let out = run_users("GB():countby(function(x) return x.value.group end):run()");
    assert_eq!(
        sorted_strs(&out.results),
        vec![
            "{'key': 'a', 'value': 3}".to_string(),
            "{'key': 'b', 'value': 2}".to_string()
        ]
    );
    let out = run_users("GB():map(function(x) return x.value.group end):countby():run()");
    assert_eq!(sorted_strs(&out.results).len(), 2);
    let out = run_users("GB():avg(function(x) return tonumber(x.value.age) end):run()");
    assert_eq!(out.results, strings(&["40.0"]));
}

#[test]
fn sort_and_distinct() {
    let ages = "GB():map(function(x) return tonumber(x.value.age) end)";
    let out = run_users(&format!("{ages}:sort():run()"));
    assert_eq!(out.results, strings(&["20", "30", "40", "50", "60"]));
    let out = run_users(&format!("{ages}:sort(false):run()"));
    assert_eq!(out.results, strings(&["60", "50", "40", "30", "20"]));
    let out = run_users("GB():map(function(x) return x.value.group end):distinct():run()");
    assert_eq!(sorted_strs(&out.results), vec!["a", "b"]);
}

#[test]
fn groupby_family() {
    let extractor = "function(x) return x.value.group end";
    let expected = vec![
        "{'key': 'a', 'value': 3}".to_string(),
        "{'key': 'b', 'value': 2}".to_string(),
    ];
    let scripts = [
        format!("GB():groupby({extractor}, function(k, a, r) return (a or 0) + 1 end):run()"),
        format!("GB():localgroupby({extractor}, function(k, a, r) return (a or 0) + 1 end):run()"),
        format!("GB():batchgroupby({extractor}, function(k, list) return #list end):run()"),
        format!(
            "GB():aggregateby({extractor}, 0, function(k, a, r) return a + 1 end,
                 function(k, a, r) return a + r end):run()"
        ),
    ];
    for script in scripts {
        let out = run_users(&script);
        assert!(out.errors.is_empty(), "{script}: {:?}", out.errors);
        assert_eq!(sorted_strs(&out.results), expected, "{script}");
    }
}

#[test]
fn aggregate_gets_a_fresh_zero_each_time() {
    let out = run_users(
        "GB():aggregate(0, function(a, r) return a + tonumber(r.value.age) end,
                        function(a, r) return a + r end):run()",
    );
    assert_eq!(out.results, strings(&["200"]));
    // If the zero table were shared, the merge would see the same table twice.
    let out = run_users(
        "GB():aggregate({}, function(a, r) table.insert(a, r.key) return a end,
                        function(a, r) for _, k in ipairs(r) do table.insert(a, k) end return a end)
             :map(function(a) return #a end):run()",
    );
    assert_eq!(out.results, strings(&["5"]));
}

#[test]
fn limit_skips_and_takes() {
    let out = run_users("GB():limit(2, 1):map(function(x) return x.key end):run()");
    assert_eq!(out.results, strings(&["user:2", "user:3"]));
    let out = run_users("GB():limit(1):map(function(x) return x.key end):run()");
    assert_eq!(out.results, strings(&["user:1"]));
}

#[test]
fn argument_errors_have_exact_texts() {
    let cases = [
        ("GB():map()", "wrong number of args to map function"),
        (
            "GB():map(function() end, function() end)",
            "wrong number of args to map function",
        ),
        ("GB():filter(1)", "filter argument must be a function"),
        ("GB():flatmap('x')", "flatmap argument must be a function"),
        ("GB():foreach({})", "foreach argument must be a function"),
        (
            "GB():accumulate()",
            "wrong number of args to accumulate function",
        ),
        ("GB():limit('x')", "limit argument must be a number"),
        ("GB():limit()", "wrong number of args to limit function"),
        (
            "GB():groupby(function() end)",
            "wrong number of args to groupby function",
        ),
        (
            "GB():batchgroupby(function() end, 3)",
            "batchgroupby argument must be a function",
        ),
        (
            "GB():aggregate(0, 1, function() end)",
            "aggregate argument must be a function",
        ),
        ("GB():count(1)", "wrong number of args to count function"),
        ("GB():countby(5)", "countby argument must be a function"),
        ("GB():avg('x')", "avg argument must be a function"),
        (
            "GB():repartition()",
            "wrong number of args to repartition function",
        ),
        (
            "GB('NoSuchReader'):run()",
            "Given reader do not support run or not exists",
        ),
        (
            "GB('PythonReader'):run()",
            "pyreader argument must be a function",
        ),
        ("GB():run('*', {mode = 'bogus'})", "unknown execution mode"),
    ];
    for (script, text) in cases {
        let err = compile_err(script);
        assert_eq!(
            err,
            GearsError::Script(format!("script:1: {text}")),
            "{script}"
        );
    }
}

#[test]
fn only_one_run_per_script() {
    let err = compile_err("GB():run() GB():count():run()");
    assert_eq!(
        err.message(),
        "script:1: Can not run more then 1 executions in a single script"
    );
}

#[test]
fn a_script_without_run_has_no_plans() {
    let compiled = compile("local x = 1 + 1").unwrap_or_else(|e| panic!("{e}"));
    assert!(compiled.plans.is_empty());
}

#[test]
fn syntax_errors_point_at_the_script_line() {
    let err = compile_err("local a = 1\nlocal b = = 2");
    let GearsError::Script(text) = err else {
        panic!("not a script error: {err:?}")
    };
    assert!(text.starts_with("script:2:"), "{text}");
    let err = compile_err("local a = 1\n\nerror('top level')");
    assert_eq!(err, GearsError::Script("script:3: top level".into()));
}

#[test]
fn callback_errors_go_to_the_errors_list() {
    let out = run_users(
        "GB():map(function(x)
           if x.key == 'user:2' then error('bad user') end
           return x.key
         end):run()",
    );
    assert_eq!(
        out.results,
        strings(&["user:1", "user:3", "user:4", "user:5"])
    );
    assert_eq!(out.errors, vec!["script:2: bad user".to_string()]);
    // Lua's own errors carry the line too, with no traceback.
    let out = run_over(
        "GB():map(function(x)\n return x.a.b end):run()",
        vec![Record::Integer(1)],
    );
    assert_eq!(out.errors.len(), 1);
    assert!(
        out.errors[0].starts_with("script:2: attempt to index"),
        "{:?}",
        out.errors
    );
    assert!(!out.errors[0].contains("traceback"));
}

#[test]
fn sandbox_has_no_io_os_or_require() {
    let compiled = compile(
        "assert(io == nil and os == nil and require == nil and package == nil)
         assert(debug == nil and dofile == nil and loadfile == nil and collectgarbage == nil)
         assert(load(string.dump(function() end)) == nil)
         assert(load('return 1')() == 1)
         assert(string and table and math and utf8 and coroutine)",
    );
    assert!(compiled.is_ok(), "{:?}", compiled.err());
    // Binary scripts are refused.
    let err = compile_err("\x1bLua");
    assert!(matches!(err, GearsError::Script(_)));
}

#[test]
fn each_script_has_its_own_globals() {
    let first = compile("shared = 1");
    assert!(first.is_ok());
    let second = compile("assert(shared == nil)");
    assert!(second.is_ok(), "{:?}", second.err());
}

#[test]
fn globals_report_errors() {
    assert_eq!(
        compile_err("execute('PING')"),
        GearsError::Script("script:1: no redis in unit tests".into())
    );
    assert_eq!(
        compile_err("log('x', 'loud')"),
        GearsError::Script("script:1: invalid log level".into())
    );
    let ok = compile(
        "log('hello') log('x', 'warning')
         assert(gearsConfigGet('MaxExecutions', 7) == 7)
         assert(hashtag() == '')",
    );
    assert!(ok.is_ok(), "{:?}", ok.err());
}

#[test]
fn run_options_shape_the_plan() {
    let compiled = compile(
        "GB('KeysReader'):map(function(x) return x end)
           :run('user:*', {convertToStr = false, collect = false, mode = 'async_local',
                           readValue = false, noScan = true})",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let plan = &compiled.plans[0];
    assert_eq!(
        plan.reader,
        ReaderSpec::Keys {
            pattern: b"user:*".to_vec(),
            no_scan: true,
            read_value: false
        }
    );
    assert_eq!(plan.options.mode, ExecutionMode::AsyncLocal);
    assert_eq!(plan.steps.len(), 1);
    assert!(matches!(plan.steps[0], Step::Map(_)));

    let compiled = compile(
        "GB('KeysOnlyReader', '*', 'my desc')
           :run({count = 10, patternGenerator = function() return 'x' end})",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let plan = &compiled.plans[0];
    assert!(matches!(
        plan.reader,
        ReaderSpec::KeysOnly {
            count: 10,
            pattern_generator: Some(_),
            ..
        }
    ));
    assert_eq!(plan.description.as_deref(), Some("my desc"));
    assert_eq!(plan.steps, vec![Step::ToString, Step::Collect]);
}

#[test]
fn run_inside_a_callback_is_refused() {
    let out = run_over(
        "GB():map(function(x) GB():run() return x end):run()",
        vec![Record::Integer(1)],
    );
    assert!(out.results.is_empty());
    assert_eq!(
        out.errors,
        vec!["script:1: run() can only be called while the script's top level runs".to_string()]
    );
}

fn run_generator(script: &str, batch: usize) -> ExecutionOutcome {
    let compiled = compile(script).unwrap_or_else(|e| panic!("{e}"));
    let plan = compiled
        .plans
        .into_iter()
        .next()
        .unwrap_or_else(|| unreachable!());
    let ReaderSpec::Generator { callback } = plan.reader else {
        panic!("not a generator plan")
    };
    let mut reader = GeneratorReader::new(compiled.session.clone(), callback, batch);
    Executor::new(plan, compiled.session).run(&mut reader)
}

#[test]
fn generator_reader_yields_then_returns() {
    let out = run_generator(
        "GB('PythonReader'):run(function()
           for i = 1, 3 do coroutine.yield(i) end
           return {10, {a = 1}}
         end, {convertToStr = false})",
        2,
    );
    assert_eq!(
        out.results,
        vec![
            Record::Integer(1),
            Record::Integer(2),
            Record::Integer(3),
            Record::Integer(10),
            Record::Map(vec![(Record::from("a"), Record::Integer(1))])
        ]
    );
    let out = run_generator(
        "GB('PythonReader'):run(function() return {'x', 'y'} end)",
        1,
    );
    assert_eq!(out.results, strings(&["x", "y"]));
}

#[test]
fn generator_errors_are_reported_after_the_records_before_them() {
    let out = run_generator(
        "GB('PythonReader'):run(function()\n coroutine.yield(1)\n error('gen failed')\n end)",
        10,
    );
    assert_eq!(out.results, strings(&["1"]));
    assert_eq!(out.errors, vec!["script:3: gen failed".to_string()]);
}

#[test]
fn builder_methods_need_the_colon() {
    let err = compile_err("GB().map(function(x) return x end)");
    assert_eq!(
        err.message(),
        "script:1: map must be called on a builder, as builder:map(...)"
    );
}
