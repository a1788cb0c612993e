//! End-to-end tests: Rhai scripts compiled into plans and run by the core executor over
//! in-memory records.

use std::sync::{Arc, Mutex};

use gears_core::{
    Compiled, ExecutionMode, ExecutionOutcome, Executor, Frontend, GearsError, KeyRecord, LogLevel,
    ReaderSpec, Record, RedisAccess, Result, Runtime, VecReader,
};

use crate::RhaiFrontend;

/// No Redis here: `execute` fails; log lines are kept so tests can see where `print` went.
#[derive(Default)]
struct NoRedis {
    logs: Mutex<Vec<(LogLevel, String)>>,
}

impl RedisAccess for NoRedis {
    fn execute(&self, _args: &[Vec<u8>]) -> Result<Record> {
        Err(GearsError::Redis("no redis in unit tests".into()))
    }
    fn log(&self, level: LogLevel, message: &str) {
        if let Ok(mut logs) = self.logs.lock() {
            logs.push((level, message.to_string()));
        }
    }
    fn gears_config_get(&self, _key: &str) -> Option<Record> {
        None
    }
    fn hashtag(&self) -> String {
        String::new()
    }
}

fn compile(script: &str) -> Result<Compiled> {
    RhaiFrontend::new().compile(script, Arc::new(NoRedis::default()))
}

fn compile_err(script: &str) -> String {
    match compile(script) {
        Ok(_) => panic!("script compiled: {script}"),
        Err(e) => {
            assert!(matches!(e, GearsError::Script(_)), "{e:?}");
            e.to_string()
        }
    }
}

/// user:1..=5 with hash values {name, age}; ages 20, 30, 40, 50, 60.
fn users() -> Vec<Record> {
    (1..=5)
        .map(|i| {
            Record::Key(Box::new(KeyRecord {
                key: format!("user:{i}").into_bytes(),
                value: Some(Record::Map(vec![
                    (Record::from("name"), Record::String(format!("name{i}"))),
                    (
                        Record::from("age"),
                        Record::String((i * 10 + 10).to_string()),
                    ),
                ])),
                key_type: "hash".into(),
                event: None,
            }))
        })
        .collect()
}

fn ints(values: &[i64]) -> Vec<Record> {
    values.iter().map(|v| Record::Integer(*v)).collect()
}

fn strs(values: &[&str]) -> Vec<Record> {
    values.iter().map(|v| Record::from(*v)).collect()
}

fn run_over(script: &str, records: Vec<Record>) -> ExecutionOutcome {
    let compiled = compile(script).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(compiled.plans.len(), 1, "one run() per script");
    let plan = compiled.plans.into_iter().next().unwrap();
    Executor::new(plan, compiled.session).run(&mut VecReader::new(records, 2))
}

fn results(script: &str, records: Vec<Record>) -> Vec<Record> {
    let outcome = run_over(script, records);
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    outcome.results
}

#[test]
fn filter_and_map_over_keys() {
    let out = results(
        r#"GB().filter(|x| parse_int(x.value.age) > 35).map(|x| x.key).run("user:*");"#,
        users(),
    );
    assert_eq!(out, strs(&["user:3", "user:4", "user:5"]));
}

#[test]
fn foreach_passes_records_and_execute_errors_are_reported() {
    let outcome = run_over(
        "GB().foreach(|x| execute(\"del\", x.key)).run(\"user:*\");",
        users(),
    );
    assert!(outcome.results.is_empty());
    assert_eq!(outcome.errors.len(), 5);
    assert_eq!(
        outcome.errors[0],
        "no redis in unit tests (line 1, position 18)"
    );
}

#[test]
fn foreach_keeps_records() {
    let out = results(
        "GB().foreach(|x| x.key).map(|x| x.value.name).run();",
        users(),
    );
    assert_eq!(out, strs(&["name1", "name2", "name3", "name4", "name5"]));
}

#[test]
fn accumulate_sums_ages() {
    let out = results(
        r#"
        GB().accumulate(|a, r| {
            let a = if a == () { 0 } else { a };
            a + parse_int(r.value.age)
        }).run("user:*", #{ convertToStr: false });
        "#,
        users(),
    );
    assert_eq!(out, ints(&[200]));
}

#[test]
fn flatmap_expands_last_to_first() {
    let out = results(
        r#"GB("ShardsIDReader").flatmap(|x| [x, x + 1, x + 2]).run(#{convertToStr: false});"#,
        ints(&[1, 10]),
    );
    assert_eq!(out, ints(&[3, 2, 1, 12, 11, 10]));
    let single = results(
        r#"GB("ShardsIDReader").flatmap(|x| x * 2).run();"#,
        ints(&[4]),
    );
    assert_eq!(single, strs(&["8"]));
}

#[test]
fn count_countby_avg() {
    assert_eq!(results("GB().count().run();", users()), strs(&["5"]));
    let out = results(
        r#"GB().map(|x| x.value.age).countby(|a| if parse_int(a) > 35 { "old" } else { "young" }).run();"#,
        users(),
    );
    assert_eq!(
        out,
        strs(&["{'key': 'young', 'value': 2}", "{'key': 'old', 'value': 3}"])
    );
    let identity = results(
        r#"GB("ShardsIDReader").countby().run(#{ convertToStr: false });"#,
        strs(&["a", "b", "a"]),
    );
    assert_eq!(
        identity,
        vec![
            Record::key_value(Record::from("b"), Record::Integer(1)),
            Record::key_value(Record::from("a"), Record::Integer(2)),
        ]
    );
    assert_eq!(
        results("GB().avg(|x| parse_int(x.value.age)).run();", users()),
        strs(&["40.0"])
    );
    assert_eq!(
        results(r#"GB("ShardsIDReader").avg().run();"#, ints(&[1, 2])),
        strs(&["1.5"])
    );
}

#[test]
fn sort_and_distinct() {
    let reader = r#"GB("ShardsIDReader")"#;
    assert_eq!(
        results(
            &format!("{reader}.sort().run(#{{convertToStr: false}});"),
            ints(&[3, 1, 2])
        ),
        ints(&[1, 2, 3])
    );
    assert_eq!(
        results(
            &format!("{reader}.sort(false).run(#{{convertToStr: false}});"),
            ints(&[3, 1, 2])
        ),
        ints(&[3, 2, 1])
    );
    let mut distinct = results(
        &format!("{reader}.distinct().run(#{{convertToStr: false}});"),
        ints(&[3, 1, 3, 1, 2]),
    );
    distinct.sort_by_key(|r| match r {
        Record::Integer(i) => *i,
        _ => 0,
    });
    assert_eq!(distinct, ints(&[1, 2, 3]));
}

#[test]
fn groupby_and_localgroupby() {
    let script = r#"
        fn older(x) { if parse_int(x.value.age) > 35 { "old" } else { "young" } }
        GB().groupby(Fn("older"), |k, a, r| if a == () { 1 } else { a + 1 })
            .run(#{ convertToStr: false });
    "#;
    assert_eq!(
        results(script, users()),
        vec![
            Record::key_value(Record::from("young"), Record::Integer(2)),
            Record::key_value(Record::from("old"), Record::Integer(3)),
        ]
    );
    let local = script.replace("groupby", "localgroupby");
    assert_eq!(results(&local, users()).len(), 2);
}

#[test]
fn batchgroupby_gets_each_group_once() {
    let out = results(
        r#"GB("ShardsIDReader").batchgroupby(|x| x % 2, |k, rs| `${k}:${rs.len()}`).map(|r| r.value).run();"#,
        ints(&[1, 2, 3, 4, 5]),
    );
    // RedisGears emits batch groups last-seen key first.
    assert_eq!(out, strs(&["0:2", "1:3"]));
}

#[test]
fn aggregate_uses_fresh_zero_copies() {
    let out = results(
        r#"
        GB("ShardsIDReader").aggregate([], |a, r| { a.push(r); a }, |a, r| { a += r; a })
            .run(#{ convertToStr: false });
        "#,
        ints(&[1, 2, 3]),
    );
    assert_eq!(out, vec![Record::List(ints(&[1, 2, 3]))]);
    let sum = results(
        "GB().aggregate(0, |a, r| a + parse_int(r.value.age), |a, r| a + r).run();",
        users(),
    );
    assert_eq!(sum, strs(&["200"]));
}

#[test]
fn aggregateby_merges_per_key() {
    let out = results(
        r#"
        GB("ShardsIDReader").aggregateby(|x| if x > 2 { "big" } else { "small" }, 0,
            |k, a, r| a + r, |k, a, r| a + r).run(#{ convertToStr: false });
        "#,
        ints(&[1, 2, 3, 4]),
    );
    assert_eq!(
        out,
        vec![
            Record::key_value(Record::from("big"), Record::Integer(7)),
            Record::key_value(Record::from("small"), Record::Integer(3)),
        ]
    );
}

#[test]
fn limit_with_and_without_start() {
    let reader = r#"GB("ShardsIDReader")"#;
    assert_eq!(
        results(&format!("{reader}.limit(2).run();"), ints(&[5, 6, 7])),
        strs(&["5", "6"])
    );
    assert_eq!(
        results(&format!("{reader}.limit(2, 1).run();"), ints(&[5, 6, 7, 8])),
        strs(&["6", "7"])
    );
}

#[test]
fn repartition_and_collect_keep_records() {
    assert_eq!(
        results(
            "GB().repartition(|x| x.key).collect().map(|x| x.key).limit(1).run();",
            users()
        ),
        strs(&["user:1"])
    );
}

#[test]
fn reply_conversion_matches_python_str() {
    let out = results(
        r#"GB("ShardsIDReader").map(|x| [x, 14.0, (), true, #{b: 1, a: "s"}]).run();"#,
        ints(&[3]),
    );
    assert_eq!(out, strs(&["[3, 14.0, None, True, {'a': 's', 'b': 1}]"]));
}

#[test]
fn truthiness_in_filter() {
    let out = results(
        r#"GB("ShardsIDReader").filter(|x| x).run(#{convertToStr: false});"#,
        vec![
            Record::Nil,
            Record::Bool(false),
            Record::Integer(0),
            Record::from(""),
            Record::List(vec![]),
            Record::Integer(7),
            Record::from("x"),
        ],
    );
    assert_eq!(out, vec![Record::Integer(7), Record::from("x")]);
}

#[test]
fn argument_errors() {
    let cases = [
        ("GB().map();", "wrong number of args to map function"),
        ("GB().map(1, 2);", "wrong number of args to map function"),
        ("GB().map(1);", "map argument must be a function"),
        ("GB().filter(\"f\");", "filter argument must be a function"),
        (
            "GB().flatmap();",
            "wrong number of args to flatmap function",
        ),
        (
            "GB().foreach(|x| x, 1);",
            "wrong number of args to foreach function",
        ),
        (
            "GB().accumulate(3);",
            "accumulate argument must be a function",
        ),
        (
            "GB().repartition();",
            "wrong number of args to repartition function",
        ),
        (
            "GB().groupby(|x| x);",
            "wrong number of args to groupby function",
        ),
        (
            "GB().groupby(|x| x, 1);",
            "groupby argument must be a function",
        ),
        (
            "GB().localgroupby();",
            "wrong number of args to localgroupby function",
        ),
        (
            "GB().batchgroupby(1, 2, 3);",
            "wrong number of args to batchgroupby function",
        ),
        (
            "GB().aggregate(0, |a, r| a);",
            "wrong number of args to aggregate function",
        ),
        (
            "GB().aggregate(0, 1, |a, r| a);",
            "aggregate argument must be a function",
        ),
        (
            "GB().aggregateby(|x| x, 0, |k, a, r| a);",
            "wrong number of args to aggregateby function",
        ),
        ("GB().count(1);", "wrong number of args to count function"),
        (
            "GB().collect(1);",
            "wrong number of args to collect function",
        ),
        (
            "GB().distinct(1);",
            "wrong number of args to distinct function",
        ),
        (
            "GB().countby(1, 2);",
            "wrong number of args to countby function",
        ),
        ("GB().countby(1);", "countby argument must be a function"),
        (r#"GB().avg("x");"#, "avg argument must be a function"),
        ("GB().sort(1, 2);", "wrong number of args to sort function"),
        (r#"GB().limit("a");"#, "limit argument must be a number"),
        (r#"GB().limit(1, "a");"#, "limit argument must be a number"),
        ("GB().limit();", "wrong number of args to limit function"),
        ("GB().run(1, 2, 3);", "wrong number of args to run function"),
        (
            r#"GB("PythonReader").run("x");"#,
            "pyreader argument must be a function",
        ),
        (
            r#"GB("NoSuchReader").run();"#,
            "Given reader do not support run or not exists",
        ),
        (
            r#"GB().run("*", #{ mode: "fast" });"#,
            "unknown execution mode",
        ),
        (r#"GB().run("*", 3);"#, "run options must be an object map"),
        (
            r#"GB("KeysOnlyReader").run("*", #{ patternGenerator: 1 });"#,
            "patternGenerator argument must be a function",
        ),
        (r#"log("x", "loud");"#, "invalid log level"),
    ];
    for (script, message) in cases {
        let err = compile_err(script);
        assert!(
            err.starts_with(&format!("{message} (line 1, position ")),
            "{script}: {err}"
        );
    }
}

#[test]
fn second_run_is_refused() {
    let err = compile_err("GB().run();\nGB().count().run();");
    assert_eq!(
        err,
        "Can not run more then 1 executions in a single script (line 2, position 14)"
    );
}

#[test]
fn no_run_means_no_plans() {
    let compiled = compile("let b = GB().map(|x| x); fn f(x) { x }").unwrap();
    assert!(compiled.plans.is_empty());
}

#[test]
fn syntax_errors_report_the_line() {
    let err = compile_err("let a = 1;\nlet b = ;\n");
    assert!(err.starts_with("Syntax error: "), "{err}");
    assert!(err.contains("(line 2, position 9)"), "{err}");
}

#[test]
fn top_level_errors_report_the_line() {
    let err = compile_err("let a = 1;\n\nthrow \"boom\";");
    assert_eq!(err, "boom (line 3, position 1)");
}

#[test]
fn callback_errors_go_to_the_errors_list() {
    let outcome = run_over(
        r#"GB("ShardsIDReader")
  .map(|x| if x == 2 { throw "bad " + x } else { x * 10 })
  .run();"#,
        ints(&[1, 2, 3]),
    );
    assert_eq!(outcome.results, strs(&["10", "30"]));
    assert_eq!(
        outcome.errors,
        vec!["bad 2 (line 2, position 24)".to_string()]
    );
    let compiled = compile("GB().map(|x| x.nothing.more).run();").unwrap();
    let plan = compiled.plans.into_iter().next().unwrap();
    let outcome =
        Executor::new(plan, compiled.session.clone()).run(&mut VecReader::new(users(), 5));
    assert_eq!(outcome.errors.len(), 5);
    assert!(outcome.errors[0].contains("line 1"), "{:?}", outcome.errors);
}

#[test]
fn run_options_shape_the_plan() {
    let compiled = compile(
        r#"GB("KeysReader").run("user:*", #{ convertToStr: false, collect: false, mode: "async_local", readValue: false, noScan: true, desc: "d" });"#,
    )
    .unwrap();
    let plan = &compiled.plans[0];
    assert!(!plan.options.convert_to_str);
    assert!(!plan.options.collect);
    assert_eq!(plan.options.mode, ExecutionMode::AsyncLocal);
    assert_eq!(plan.description.as_deref(), Some("d"));
    assert_eq!(
        plan.reader,
        ReaderSpec::Keys {
            pattern: b"user:*".to_vec(),
            no_scan: true,
            read_value: false
        }
    );
    let compiled =
        compile(r#"GearsBuilder("StreamReader", "s").run(#{ fromId: "5-0" });"#).unwrap();
    assert_eq!(
        compiled.plans[0].reader,
        ReaderSpec::Stream {
            key: b"s".to_vec(),
            from_id: "5-0".into()
        }
    );
    let compiled = compile(
        r#"GB("KeysOnlyReader").run("*", #{ count: 10, patternGenerator: || ["a*", "b*"] });"#,
    )
    .unwrap();
    assert!(matches!(
        compiled.plans[0].reader,
        ReaderSpec::KeysOnly {
            count: 10,
            pattern_generator: Some(_),
            ..
        }
    ));
}

#[test]
fn builder_variables_are_mutated_in_place() {
    let out = results(
        r#"let b = GB("ShardsIDReader"); b.map(|x| x + 1); b.run();"#,
        ints(&[1]),
    );
    assert_eq!(out, strs(&["2"]));
}

#[test]
fn generator_reader_hands_out_batches() {
    for body in ["[1, 2, 3, 4, 5]", "1..=5"] {
        let compiled = compile(&format!(
            r#"GB("PythonReader").map(|x| x * 2).run(|| {body});"#
        ))
        .unwrap();
        let ReaderSpec::Generator { callback } = compiled.plans[0].reader else {
            panic!("not a generator reader")
        };
        let mut batches = Vec::new();
        compiled.session.enter(&mut |runtime: &mut dyn Runtime| {
            let generator = runtime.start_generator(callback).unwrap();
            loop {
                let batch = runtime.next_from_generator(&generator, 2).unwrap();
                if batch.is_empty() {
                    break;
                }
                let batch: Vec<Record> = batch
                    .into_iter()
                    .map(|r| runtime.to_core(r).unwrap())
                    .collect();
                batches.push(batch);
            }
        });
        assert_eq!(
            batches,
            vec![ints(&[1, 2]), ints(&[3, 4]), ints(&[5])],
            "{body}"
        );
    }
    let compiled = compile(r#"GB("GeneratorReader").run(|| 7);"#).unwrap();
    let ReaderSpec::Generator { callback } = compiled.plans[0].reader else {
        panic!("not a generator reader")
    };
    compiled.session.enter(&mut |runtime: &mut dyn Runtime| {
        let err = runtime.start_generator(callback).unwrap_err();
        assert_eq!(
            err.to_string(),
            "generator function must return an array or a range, not i64"
        );
    });
}

#[test]
fn sandbox_has_no_eval_no_modules_and_print_goes_to_the_log() {
    assert!(compile_err("eval(\"1\");").starts_with("Syntax error: "));
    assert!(compile_err("import \"os\" as os;").contains("Module not found"));
    let redis = Arc::new(NoRedis::default());
    RhaiFrontend::new()
        .compile("print(\"hello\"); log(\"w\", \"warning\");", redis.clone())
        .unwrap();
    let logs = redis.logs.lock().unwrap().clone();
    assert_eq!(
        logs,
        vec![
            (LogLevel::Notice, "hello".to_string()),
            (LogLevel::Warning, "w".to_string())
        ]
    );
}

#[test]
fn globals_without_redis() {
    let err = compile_err("execute([\"GET\", \"k\"]);");
    assert_eq!(err, "no redis in unit tests (line 1, position 1)");
    // configGet reads the module's extra settings, not Redis: unset here.
    compile("if configGet(\"maxmemory\") != () { throw \"set\" }").unwrap();
    compile(
        "if gearsConfigGet(\"x\", 5) != 5 { throw \"default\" } if gearsConfigGet(\"x\") != () { throw \"unit\" } hashtag();",
    )
    .unwrap();
}

#[test]
fn run_inside_a_callback_is_refused() {
    let outcome = run_over(
        r#"GB("ShardsIDReader").map(|x| GB().run()).run();"#,
        ints(&[1]),
    );
    assert_eq!(outcome.errors.len(), 1);
    assert!(
        outcome.errors[0].starts_with("run() can only be called at the script's top level"),
        "{:?}",
        outcome.errors
    );
}

#[test]
fn builders_and_function_pointers_become_their_type_names() {
    let out = results(
        r#"GB("ShardsIDReader").map(|x| [Fn("parse_int"), GB(), |y| y]).run();"#,
        ints(&[1]),
    );
    assert_eq!(out, strs(&["['Fn', 'GearsBuilder', 'Fn']"]));
}

#[test]
fn argument_error_points_at_the_call() {
    assert_eq!(
        compile_err("GB().map(1).run();"),
        "map argument must be a function (line 1, position 6)"
    );
}
