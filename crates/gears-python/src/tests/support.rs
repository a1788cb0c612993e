//! What the Python safety tests share: a recording Redis stand-in and helpers that run scripts
//! on threads working for an execution.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use gears_core::control::{self, ControlScope, ExecutionControl};
use gears_core::{
    Compiled, Executor, Frontend, GearsError, LogLevel, Record, RedisAccess, Result, VecReader,
};

use super::frontend;

/// Timing and memory figures are taken one test at a time.
pub(crate) fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Redis as the tests see it: commands and log lines are recorded; atomic blocks mark the
/// current execution's control, as the module's host does.
#[derive(Default)]
pub(crate) struct Recorder {
    commands: Mutex<Vec<Vec<Vec<u8>>>>,
    logs: Mutex<Vec<String>>,
    /// `begin`/`end` for every atomic block begun or ended through this host.
    atomic: Mutex<Vec<&'static str>>,
    /// Once set, every command is refused, as a finished execution's host refuses them.
    finished: std::sync::atomic::AtomicBool,
}

impl Recorder {
    pub(crate) fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// The commands run, as text.
    pub(crate) fn commands(&self) -> Vec<Vec<String>> {
        self.raw_commands()
            .iter()
            .map(|args| {
                args.iter()
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect()
            })
            .collect()
    }

    pub(crate) fn atomic_events(&self) -> Vec<&'static str> {
        self.atomic.lock().unwrap().clone()
    }

    /// From now on, refuses every command (what a finished execution's host does).
    pub(crate) fn finish(&self) {
        self.finished
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub(crate) fn raw_commands(&self) -> Vec<Vec<Vec<u8>>> {
        self.commands.lock().unwrap().clone()
    }

    pub(crate) fn wait_for_log(&self, line: &str) {
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
        if self.finished.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(GearsError::Redis(FINISHED.into()));
        }
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
        self.atomic.lock().unwrap().push("begin");
        if let Some(control) = control::current() {
            control.begin_atomic();
        }
        Ok(())
    }
    fn end_atomic(&self) {
        self.atomic.lock().unwrap().push("end");
        if let Some(control) = control::current() {
            control.end_atomic();
        }
    }
}

/// Runs a compiled script's plan over `records`; returns its results and errors.
pub(crate) fn execute(compiled: Compiled, records: Vec<Record>) -> (Vec<Record>, Vec<String>) {
    let plan = compiled.plans.into_iter().next().expect("a plan");
    let outcome = Executor::new(plan, compiled.session).run(&mut VecReader::new(records, 1));
    (outcome.results, outcome.errors)
}

/// Compiles and runs `script` (over one record) on a new thread working for `control`. Returns
/// the compile error or the execution's errors, and when the thread was done.
pub(crate) type Finished = (std::result::Result<Vec<String>, GearsError>, Instant);

pub(crate) fn spawn(
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
pub(crate) fn stop_while_running(
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

pub(crate) const STOPPED: &str = "aborted by the test";

/// What a finished host answers.
pub(crate) const FINISHED: &str = "ERR this execution has finished";
