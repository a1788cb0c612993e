//! Safety of the Python frontend, as plain Rust: memory limits, stopping running code,
//! `time.sleep`, isolation of the Gears API between sessions, and finished sessions freed at once.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use gears_core::control::{self, ControlScope, ExecutionControl, Limits};
use gears_core::memory::{self, LimitPassed, Pool};
use gears_core::{
    Compiled, Executor, Frontend, GearsError, KeyRecord, LogLevel, Record, RedisAccess, Result,
    VecReader,
};

use super::frontend;

/// Timing and memory figures are taken one test at a time.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Redis as the tests see it: commands and log lines are recorded; atomic blocks mark the
/// current execution's control, as the module's host does.
#[derive(Default)]
struct Recorder {
    commands: Mutex<Vec<Vec<Vec<u8>>>>,
    logs: Mutex<Vec<String>>,
}

impl Recorder {
    fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// The commands run, as text.
    fn commands(&self) -> Vec<Vec<String>> {
        self.raw_commands()
            .iter()
            .map(|args| {
                args.iter()
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect()
            })
            .collect()
    }

    fn raw_commands(&self) -> Vec<Vec<Vec<u8>>> {
        self.commands.lock().unwrap().clone()
    }

    fn wait_for_log(&self, line: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.logs().iter().any(|l| l == line) {
            assert!(
                Instant::now() < deadline,
                "the script never logged {line:?}"
            );
            thread::sleep(Duration::from_millis(1));
        }
    }
}

impl RedisAccess for Recorder {
    fn execute(&self, args: &[Vec<u8>]) -> Result<Record> {
        self.commands.lock().unwrap().push(args.to_vec());
        Ok(Record::from("OK"))
    }
    fn log(&self, _level: LogLevel, message: &str) {
        self.logs.lock().unwrap().push(message.to_string());
    }
    fn gears_config_get(&self, _key: &str) -> Option<Record> {
        None
    }
    fn hashtag(&self) -> String {
        "06S".into()
    }
    fn begin_atomic(&self) -> Result<()> {
        if let Some(control) = control::current() {
            control.begin_atomic();
        }
        Ok(())
    }
    fn end_atomic(&self) {
        if let Some(control) = control::current() {
            control.end_atomic();
        }
    }
}

/// Runs a compiled script's plan over `records`; returns its results and errors.
fn execute(compiled: Compiled, records: Vec<Record>) -> (Vec<Record>, Vec<String>) {
    let plan = compiled.plans.into_iter().next().expect("a plan");
    let outcome = Executor::new(plan, compiled.session).run(&mut VecReader::new(records, 1));
    (outcome.results, outcome.errors)
}

/// Compiles and runs `script` (over one record) on a new thread working for `control`. Returns
/// the compile error or the execution's errors, and when the thread was done.
type Finished = (std::result::Result<Vec<String>, GearsError>, Instant);

fn spawn(
    script: &'static str,
    control: &Arc<ExecutionControl>,
    redis: &Arc<Recorder>,
) -> JoinHandle<Finished> {
    let (control, redis) = (control.clone(), redis.clone());
    thread::spawn(move || {
        let _scope = ControlScope::enter(&control);
        let outcome = frontend()
            .compile(script, redis)
            .map(|compiled| execute(compiled, vec![Record::Integer(1)]).1);
        (outcome, Instant::now())
    })
}

/// Starts `script`, waits until it logs `running` (plus a little, to be deep in its loop), stops
/// it and returns what it reported and how long it took to return after the stop.
fn stop_while_running(
    script: &'static str,
) -> (std::result::Result<Vec<String>, GearsError>, Duration) {
    let control = ExecutionControl::unlimited();
    let redis = Arc::new(Recorder::default());
    let handle = spawn(script, &control, &redis);
    redis.wait_for_log("running");
    thread::sleep(Duration::from_millis(30));
    let stopped_at = Instant::now();
    assert!(control.stop("aborted by the test"));
    let (outcome, done_at) = handle.join().expect("the execution thread ends");
    let latency = done_at - stopped_at;
    eprintln!("stopped {script:?} in {latency:?}");
    (outcome, latency)
}

const STOPPED: &str = "aborted by the test";

#[test]
fn an_endless_loop_in_a_callback_stops_within_100_ms() {
    let _serial = serial();
    let (outcome, latency) = stop_while_running(
        "def f(x):\n    log('running')\n    while True:\n        pass\nGB().map(f).run()",
    );
    assert_eq!(outcome, Ok(vec![STOPPED.to_string()]));
    assert!(latency < Duration::from_millis(100), "took {latency:?}");
}

#[test]
fn except_exception_does_not_swallow_the_stop() {
    let _serial = serial();
    let (outcome, latency) = stop_while_running(
        "def f(x):\n    log('running')\n    while True:\n        try:\n            y = [x]\n        \
         except Exception:\n            pass\nGB().map(f).run()",
    );
    assert_eq!(outcome, Ok(vec![STOPPED.to_string()]));
    assert!(latency < Duration::from_millis(100), "took {latency:?}");
}

#[test]
fn an_endless_loop_at_top_level_stops_within_100_ms() {
    let _serial = serial();
    let (outcome, latency) = stop_while_running("log('running')\nwhile True:\n    pass");
    assert_eq!(outcome, Err(GearsError::Stopped(STOPPED.to_string())));
    assert!(latency < Duration::from_millis(100), "took {latency:?}");
}

#[test]
fn an_endless_str_in_the_final_conversion_is_stopped() {
    let _serial = serial();
    let (outcome, latency) = stop_while_running(
        "class Endless:\n    def __str__(self):\n        log('running')\n        while True:\n            \
         pass\nGB().map(lambda x: Endless()).run(convertToStr=False)",
    );
    // The runtime reports the stop (not a traceback of the interrupted __str__). The executor's
    // final conversion still lists it once more before its own report: every entry is the stop.
    let errors = outcome.expect("compiles");
    assert!(
        !errors.is_empty() && errors.iter().all(|e| e == STOPPED),
        "{errors:?}"
    );
    assert!(latency < Duration::from_millis(100), "took {latency:?}");
}

#[test]
fn a_script_that_catches_the_stop_once_gets_it_again() {
    let _serial = serial();
    let (outcome, latency) = stop_while_running(
        "def f(x):\n    log('running')\n    try:\n        while True:\n            pass\n    \
         except BaseException:\n        pass\n    while True:\n        pass\nGB().map(f).run()",
    );
    assert_eq!(outcome, Ok(vec![STOPPED.to_string()]));
    // The first stop is caught; the watchdog sends it again 100 ms later.
    assert!(latency < Duration::from_millis(250), "took {latency:?}");
}

#[test]
fn a_sleeping_script_stops_within_100_ms() {
    let _serial = serial();
    let (outcome, latency) =
        stop_while_running("import time\nlog('running')\ntime.sleep(30)\nGB().run()");
    assert_eq!(outcome, Err(GearsError::Stopped(STOPPED.to_string())));
    assert!(latency < Duration::from_millis(100), "took {latency:?}");
}

#[test]
fn an_atomic_block_past_its_time_limit_is_interrupted() {
    let _serial = serial();
    let control = ExecutionControl::new(Limits {
        atomic_max: Duration::from_millis(50),
        memory: 0,
    });
    let redis = Arc::new(Recorder::default());
    let started = Instant::now();
    let (outcome, done_at) = spawn(
        "def f(x):\n    with atomic():\n        while True:\n            pass\nGB().map(f).run()",
        &control,
        &redis,
    )
    .join()
    .expect("the execution thread ends");
    let errors = outcome.expect("compiles");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("BUSY the atomic block ran longer than 50 ms"));
    assert!(!control.in_atomic(), "the atomic block was closed");
    assert!(done_at - started < Duration::from_millis(250));
}

#[test]
fn a_stopped_execution_leaves_nothing_for_the_next_one_on_its_thread() {
    let _serial = serial();
    let first = ExecutionControl::unlimited();
    let redis = Arc::new(Recorder::default());
    let (first_in_thread, redis_in_thread) = (first.clone(), redis.clone());
    let handle = thread::spawn(move || {
        {
            let _scope = ControlScope::enter(&first_in_thread);
            // Catches every stop it gets and returns normally: a stop sent late is still
            // pending when the callback returns.
            let script = "import time\ndef f(x):\n    log('running')\n    end = time.monotonic() + 0.3\n    \
                          while time.monotonic() < end:\n        try:\n            pass\n        \
                          except BaseException:\n            pass\n    return x\nGB().map(f).run()";
            let compiled = frontend()
                .compile(script, redis_in_thread.clone())
                .expect("compiles");
            execute(compiled, vec![Record::Integer(1)]);
        }
        let second = ExecutionControl::unlimited();
        let _scope = ControlScope::enter(&second);
        let compiled = frontend()
            .compile(
                "GB().map(lambda x: sum(range(100000))).run()",
                redis_in_thread,
            )
            .expect("compiles");
        execute(compiled, vec![Record::Integer(1), Record::Integer(2)])
    });
    redis.wait_for_log("running");
    first.stop(STOPPED);
    let (results, errors) = handle.join().expect("the thread ends");
    assert_eq!(errors, Vec::<String>::new());
    assert_eq!(results.len(), 2);
}

#[test]
fn time_sleep_is_refused_inside_an_atomic_block() {
    let control = ExecutionControl::unlimited();
    let _scope = ControlScope::enter(&control);
    let redis = Arc::new(Recorder::default());
    let message = "sleep is not allowed inside an atomic block (it would hold the Redis lock)";
    match frontend().compile(
        "import time\nwith atomic():\n    time.sleep(0.01)",
        redis.clone(),
    ) {
        Err(GearsError::Script(text)) => {
            assert!(
                text.ends_with(&format!("'gears.error: {message}\\n']")),
                "{text}"
            )
        }
        other => panic!("not refused: {:?}", other.map(|_| ())),
    }
    let compiled = frontend()
        .compile(
            "from time import sleep\ndef f(x):\n    with atomic():\n        sleep(0)\n    return x\n\
             GB().map(f).run()",
            redis,
        )
        .expect("compiles");
    let (_, errors) = execute(compiled, vec![Record::Integer(1)]);
    assert_eq!(errors.len(), 1);
    assert!(errors[0].contains(message), "{}", errors[0]);
}

#[test]
fn time_sleep_checks_and_sleeps_like_the_original() {
    let script = "import time\nfor bad in (-1, 'x', float('nan'), float('inf'), 1e10, 10**30, 10**10, -1e-9):\n    \
                  try:\n        time.sleep(bad)\n    except Exception as e:\n        \
                  log(type(e).__name__ + ': ' + str(e))\n\
                  t = time.monotonic()\ntime.sleep(0.05)\ntime.sleep(0)\ntime.sleep(False)\ntime.sleep(-0.0)\n\
                  log(str(time.monotonic() - t >= 0.05))";
    let outside = Arc::new(Recorder::default());
    frontend().compile(script, outside.clone()).expect("runs");
    let inside = Arc::new(Recorder::default());
    {
        let control = ExecutionControl::unlimited();
        let _scope = ControlScope::enter(&control);
        frontend().compile(script, inside.clone()).expect("runs");
    }
    assert_eq!(
        outside.logs(),
        vec![
            "ValueError: sleep length must be non-negative",
            "TypeError: 'str' object cannot be interpreted as an integer",
            "ValueError: Invalid value NaN (not a number)",
            "OverflowError: timestamp out of range for platform time_t",
            "OverflowError: timestamp out of range for platform time_t",
            "OverflowError: timestamp too large to convert to C _PyTime_t",
            "OverflowError: timestamp too large to convert to C _PyTime_t",
            "ValueError: sleep length must be non-negative",
            "True",
        ]
    );
    assert_eq!(inside.logs(), outside.logs());
}

#[test]
fn the_memory_limit_refuses_allocations_and_stops_the_execution() {
    let _serial = serial();
    let limit = 20 * 1024 * 1024;
    let oom = LimitPassed::Execution(limit).message();
    let redis = Arc::new(Recorder::default());
    // One big block, at top level.
    let control = ExecutionControl::new(Limits {
        atomic_max: Duration::ZERO,
        memory: limit,
    });
    {
        let _scope = ControlScope::enter(&control);
        let outcome = frontend().compile("x = bytearray(50 * 1024 * 1024)", redis.clone());
        assert_eq!(outcome.err(), Some(GearsError::Stopped(oom.clone())));
    }
    assert!(control.is_stopped());
    // Many small objects (pymalloc arenas), in a callback: reported once.
    let control = ExecutionControl::new(Limits {
        atomic_max: Duration::ZERO,
        memory: limit,
    });
    let _scope = ControlScope::enter(&control);
    let compiled = frontend()
        .compile(
            "def f(x):\n    l = []\n    while True:\n        l.append(str(len(l)))\nGB().map(f).run()",
            redis,
        )
        .expect("compiles");
    let (results, errors) = execute(compiled, vec![Record::Integer(1), Record::Integer(2)]);
    assert_eq!((results, errors), (vec![], vec![oom]));
}

#[test]
fn python_memory_is_counted_and_a_finished_session_is_freed_at_once() {
    let _serial = serial();
    frontend();
    assert!(
        memory::used(Pool::Python) > 1024 * 1024,
        "the interpreter's own memory"
    );
    let control = ExecutionControl::unlimited();
    let _scope = ControlScope::enter(&control);
    let before = control.memory().used();
    let compiled = frontend()
        .compile(
            "a = list(range(100000))\ndef f():\n    return a",
            Arc::new(Recorder::default()),
        )
        .expect("compiles");
    let held = control.memory().used() - before;
    // 100,000 ints (32-byte blocks in arenas) and a list of 800,000 bytes.
    assert!(held > 2_500_000, "held {held}");
    drop(compiled);
    let left = control.memory().used() - before;
    assert!(left < 500_000, "left {left} of {held} bytes");
}

#[test]
fn many_sessions_with_big_globals_leave_python_memory_near_its_baseline() {
    let _serial = serial();
    frontend();
    let redis: Arc<Recorder> = Arc::new(Recorder::default());
    let control = ExecutionControl::unlimited();
    let _scope = ControlScope::enter(&control);
    let baseline = memory::used(Pool::Python);
    let mut peak = 0;
    for _ in 0..200 {
        let compiled = frontend()
            .compile(
                "a = list(range(100000))\ndef f():\n    return a",
                redis.clone(),
            )
            .expect("compiles");
        peak = peak.max(memory::used(Pool::Python) - baseline);
        drop(compiled);
    }
    let growth = memory::used(Pool::Python) - baseline;
    let meter = control.memory().used();
    eprintln!("200 sessions: peak {peak} bytes, growth {growth} bytes, meter {meter} bytes");
    // Without the cleanup each session would hold about 3.6 MB until the cyclic GC ran
    // (hundreds of MB over 200 sessions).
    assert!(
        meter < 8 * 1024 * 1024,
        "this thread's sessions left {meter} bytes"
    );
    assert!(
        growth < 32 * 1024 * 1024,
        "Python memory grew by {growth} bytes"
    );
}

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

#[test]
#[ignore = "a measurement, run with --ignored --nocapture"]
fn measure_per_session_overhead() {
    use pyo3::prelude::*;
    frontend();
    let n = 20_000;
    Python::attach(|py| {
        let started = Instant::now();
        for _ in 0..n {
            let namespaces = crate::isolation::Namespaces::new(py).expect("namespaces");
            namespaces.clear(py);
        }
        eprintln!("Namespaces::new + clear: {:?} each", started.elapsed() / n);
        let started = Instant::now();
        for _ in 0..n {
            let builtins = py.import("builtins").unwrap().dict().copy().unwrap();
            builtins.clear();
        }
        eprintln!("builtins copy: {:?} each", started.elapsed() / n);
    });
    let redis = Arc::new(Recorder::default());
    let started = Instant::now();
    for _ in 0..n {
        drop(
            frontend()
                .compile("x = 1", redis.clone())
                .expect("compiles"),
        );
    }
    eprintln!("compile('x = 1') + drop: {:?} each", started.elapsed() / n);
}
