//! Stopping running Python code (the watchdog) and `time.sleep`, as plain Rust.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use gears_core::control::{ControlScope, ExecutionControl, Limits};
use gears_core::{Frontend, GearsError, Record};

use super::frontend;
use super::support::{execute, serial, spawn, stop_while_running, Recorder, STOPPED};

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
        ..Limits::default()
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
