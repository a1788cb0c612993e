use super::*;

#[test]
fn plan_round_trips_through_bincode() {
    let plan = ExecutionPlan {
        language: Language::Python,
        reader: ReaderSpec::Keys {
            pattern: b"user:*".to_vec(),
            no_scan: false,
            read_value: true,
        },
        steps: vec![
            Step::Filter(CallbackId(0)),
            Step::Aggregate {
                aggregation: Aggregation::Count,
                phase: Phase::Partial,
            },
            Step::Collect,
            Step::Aggregate {
                aggregation: Aggregation::Count,
                phase: Phase::Final,
            },
        ],
        options: RunOptions::default(),
        description: None,
    };
    let config = bincode::config::standard();
    let bytes = bincode::serde::encode_to_vec(&plan, config).unwrap();
    let (decoded, _): (ExecutionPlan, usize) =
        bincode::serde::decode_from_slice(&bytes, config).unwrap();
    assert_eq!(decoded, plan);
}

#[test]
fn distribution_is_explicit() {
    assert_eq!(Step::Collect.distribution(), Distribution::Collect);
    assert_eq!(
        Step::Repartition {
            key: KeySource::RecordKey
        }
        .distribution(),
        Distribution::Repartition
    );
    assert_eq!(Step::Map(CallbackId(1)).distribution(), Distribution::Local);
}

#[test]
fn native_readers_take_runs_argument_and_options() {
    use crate::extension::{Args, Extension, NativeReader, NativeReaderDef, Registry, Version};
    struct Nothing;
    impl NativeReader for Nothing {
        fn next_batch(
            &mut self,
            _: &dyn crate::extension::ReaderHost,
        ) -> Result<Option<Vec<Record>>> {
            Ok(None)
        }
    }
    let mut registry = Registry::new();
    let reader = NativeReaderDef::new("things", Version::new(2, 1), |args: &Args| {
        args.arity(1, 1)?;
        args.only_named(&["batch"])?;
        Ok(Nothing)
    });
    registry
        .add(Extension::new("x", Version::new(1, 0)).reader(reader))
        .unwrap();
    let kwargs = vec![
        ("batch".to_string(), Record::Integer(5)),
        ("timeout".to_string(), Record::Integer(10)),
    ];
    let spec =
        ReaderSpec::native(&registry, "things", RunArg::Text(b"k".to_vec()), &kwargs).unwrap();
    assert_eq!(spec.describe(), "NativeReader things@2('k', batch=5)");
    let err = |name: &str, arg: RunArg| {
        ReaderSpec::native(&registry, name, arg, &[])
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        err("things", RunArg::None),
        "things: takes 1 argument, 0 given"
    );
    assert_eq!(
        err("things@1", RunArg::Text(b"k".to_vec())),
        "native reader 'things' is version 2.1 on this server, not 1.x"
    );
    assert_eq!(
        err("FooReader", RunArg::None),
        "Given reader do not support run or not exists"
    );
    assert_eq!(
        err("nothing", RunArg::None),
        "unknown native reader 'nothing' (this server has: things 2.1)"
    );
}

#[test]
fn reader_args() {
    let spec = ReaderSpec::from_run_args(
        "KeysReader",
        "*",
        RunArg::None,
        &[("readValue".into(), Record::Bool(false))],
        None,
    )
    .unwrap();
    assert_eq!(
        spec,
        ReaderSpec::Keys {
            pattern: b"*".to_vec(),
            no_scan: false,
            read_value: false
        }
    );
    let err = ReaderSpec::from_run_args("CommandReader", "*", RunArg::None, &[], None);
    assert_eq!(
        err.unwrap_err().to_string(),
        "Given reader do not support run or not exists"
    );
}

#[test]
fn the_first_step_that_reads_key_records_decides_the_projection() {
    use crate::extension::{
        Accumulator, Args, Extension, Mapper, NativeCall, NativeOperator, NativeStepKind,
        Predicate, Projection, Registry, Version,
    };
    /// Reads the hash field given as its argument.
    struct Field(String);
    impl Accumulator for Field {
        fn update(&mut self, _: Record) -> Result<()> {
            Ok(())
        }
        fn state(&mut self) -> Result<Record> {
            Ok(Record::Nil)
        }
        fn merge(&mut self, _: Record) -> Result<()> {
            Ok(())
        }
        fn evaluate(&mut self) -> Result<Record> {
            Ok(Record::Nil)
        }
        fn projection(&self) -> Projection {
            Projection::hash_fields([&self.0])
        }
    }
    impl Mapper for Field {
        fn map(&mut self, record: Record) -> Result<Record> {
            Ok(record)
        }
        fn projection(&self) -> Projection {
            Projection::KeyName
        }
    }
    struct Any;
    impl Predicate for Any {
        fn test(&mut self, _: &Record) -> Result<bool> {
            Ok(true)
        }
    }
    let field = |args: &Args| Ok(Field(args.string(0)?.to_string()));
    let mut registry = Registry::new();
    registry
        .add(
            Extension::new("x", Version::new(1, 0))
                .operator(NativeOperator::aggregate(
                    "field_sum",
                    Version::new(1, 0),
                    field,
                ))
                .operator(NativeOperator::map("key_only", Version::new(1, 0), field))
                .operator(NativeOperator::filter(
                    "any",
                    Version::new(1, 0),
                    |_: &Args| Ok(Any),
                )),
        )
        .unwrap();
    let native = |name: &str, kind| Step::Native {
        call: NativeCall {
            name: name.into(),
            major: 1,
            args: vec![Record::from("points")],
            named: vec![],
        },
        kind,
    };
    let plan = |steps: Vec<Step>| ExecutionPlan {
        language: Language::Lua,
        reader: ReaderSpec::Keys {
            pattern: b"*".to_vec(),
            no_scan: false,
            read_value: true,
        },
        steps,
        options: RunOptions::default(),
        description: None,
    };
    let aggregate = native("field_sum", NativeStepKind::Aggregate(Phase::Partial));
    let limit = Step::Limit {
        length: 10,
        start: 0,
    };
    let count = Step::Aggregate {
        aggregation: Aggregation::Count,
        phase: Phase::Partial,
    };
    let cases = [
        (vec![aggregate.clone()], Projection::hash_fields(["points"])),
        (
            vec![limit.clone(), aggregate.clone()],
            Projection::hash_fields(["points"]),
        ),
        (
            vec![native("key_only", NativeStepKind::Map)],
            Projection::KeyName,
        ),
        (vec![count.clone(), aggregate.clone()], Projection::KeyName),
        // A filter passes whole records on; a callback may read anything.
        (
            vec![native("any", NativeStepKind::Filter), aggregate.clone()],
            Projection::Whole,
        ),
        (
            vec![Step::Map(CallbackId(0)), aggregate.clone()],
            Projection::Whole,
        ),
        // The final phase merges states; a kind that does not match is refused later.
        (
            vec![native("field_sum", NativeStepKind::Aggregate(Phase::Final))],
            Projection::Whole,
        ),
        (
            vec![native("field_sum", NativeStepKind::Map)],
            Projection::Whole,
        ),
        (
            vec![native("missing", NativeStepKind::Map)],
            Projection::Whole,
        ),
        (vec![], Projection::Whole),
    ];
    for (steps, expected) in cases {
        let described = format!("{steps:?}");
        assert_eq!(plan(steps).projection(&registry), expected, "{described}");
    }
    assert!(!plan(vec![count]).projection(&registry).reads_value());
    assert!(plan(vec![aggregate]).projection(&registry).reads_value());
}
