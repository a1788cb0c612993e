//! Isolation of the Gears API between sessions, and bytes as dict keys.

use std::sync::Arc;

use gears_core::{Frontend, GearsError, KeyRecord, Record};

use super::frontend;
use super::support::{execute, Recorder};

#[test]
fn one_script_can_not_change_the_api_another_script_uses() {
    let redis = Arc::new(Recorder::default());
    let patcher = r#"
import builtins, sys, types, redisgears
captured = []
sys._gears_test_spy = captured
def spy(*args, **kwargs):
    captured.append(args)
    return 'spied'
try:
    redisgears.executeCommand = spy
    raise AssertionError('redisgears was modified')
except AttributeError as e:
    assert str(e) == 'the Gears API module can not be modified', str(e)
try:
    del redisgears.log
    raise AssertionError('redisgears was modified')
except AttributeError:
    pass
redisgears.__dict__['executeCommand'] = spy
vars(redisgears)['log'] = spy
assert redisgears.executeCommand is not spy
try:
    type(redisgears).executeCommand = spy
    raise AssertionError('the module type was modified')
except TypeError:
    pass
for name in ('__str__', '__init__'):
    try:
        setattr(GearsError, name, lambda *a: 'spied')
        raise AssertionError('GearsError was modified')
    except TypeError:
        pass
fake = types.ModuleType('redisgears')
fake.executeCommand = spy
sys.modules['redisgears'] = fake
GearsBuilder.run.__globals__['_run'] = spy
GearsBuilder.run = spy
GB.map = spy
globals()['execute'] = spy
real_len = builtins.len
def spy_len(x):
    captured.append(('len',))
    return real_len(x)
builtins.len = spy_len
"#;
    frontend()
        .compile(patcher, redis.clone())
        .expect("the patcher runs");
    let victim = r#"
import redisgears
from redisgears import executeCommand
execute('SET', 'user:1', 'password123')
redisgears.executeCommand('SET', 'user:2', 'password456')
executeCommand('SET', 'user:3', 'password789')
assert len([1, 2]) == 2
assert str(GearsError('plain')) == 'plain'
redisgears.log('logged')
GB('ShardsIDReader').map(lambda x: x).run()
"#;
    let compiled = frontend()
        .compile(victim, redis.clone())
        .expect("the victim runs");
    assert_eq!(
        compiled.plans.len(),
        1,
        "the victim's own run() built its plan"
    );
    let restore = r#"
import sys, builtins, redisgears
builtins.len = __builtins__['len']
sys.modules['redisgears'] = redisgears
log('captured %d' % len(sys._gears_test_spy))
"#;
    frontend()
        .compile(restore, redis.clone())
        .expect("the restore runs");
    assert_eq!(
        redis.commands(),
        vec![
            vec!["SET", "user:1", "password123"],
            vec!["SET", "user:2", "password456"],
            vec!["SET", "user:3", "password789"],
        ]
    );
    assert_eq!(redis.logs(), vec!["logged", "captured 0"]);
}

#[test]
fn each_session_has_its_own_builtins_and_api_namespace() {
    let redis = Arc::new(Recorder::default());
    frontend()
        .compile(
            "__builtins__['len'] = None\nimport gears_builder",
            redis.clone(),
        )
        .map(|_| ())
        .expect_err("there is no shared gears_builder module");
    frontend()
        .compile(
            "__builtins__['len'] = None\nGB.__init__.__globals__['GearsError'] = None",
            redis.clone(),
        )
        .expect("runs");
    let compiled = frontend().compile("log(str(len('abc')))\nGB().map(1)", redis.clone());
    match compiled {
        Err(GearsError::Script(text)) => {
            assert!(
                text.ends_with("'gears.error: map argument must be a function\\n']"),
                "{text}"
            )
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    assert_eq!(redis.logs(), vec!["3"]);
}

#[test]
fn bytes_are_dict_keys_both_ways() {
    let record = Record::Key(Box::new(KeyRecord {
        key: b"k\xff".to_vec(),
        value: Some(Record::Map(vec![
            (Record::Bytes(b"f\xff".to_vec()), Record::from("binary")),
            (Record::from("g"), Record::from("text")),
        ])),
        key_type: "hash".into(),
        event: None,
    }));
    let redis = Arc::new(Recorder::default());
    let compiled = frontend()
        .compile(
            "def f(x):\n    execute('DEL', x['key'])\n    return {b'out\\xfe': x['value'][b'f\\xff'], 'g': x['value']['g']}\n\
             GB().map(f).run(convertToStr=False)",
            redis.clone(),
        )
        .expect("compiles");
    let (results, errors) = execute(compiled, vec![record]);
    assert_eq!(errors, Vec::<String>::new());
    assert_eq!(
        results,
        vec![Record::Map(vec![
            (Record::Bytes(b"out\xfe".to_vec()), Record::from("binary")),
            (Record::from("g"), Record::from("text")),
        ])]
    );
    assert_eq!(
        redis.raw_commands(),
        vec![vec![b"DEL".to_vec(), b"k\xff".to_vec()]]
    );
}
