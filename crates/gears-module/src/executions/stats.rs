//! What `INFO` counts about executions: how many were created, run, finished, aborted or
//! failed, the records they read and emitted, their errors, the time spent in each language,
//! and the workers and queue right now.

use std::sync::atomic::{AtomicU64, Ordering};

use gears_core::Language;

use super::Execution;

#[derive(Default)]
struct Counter(AtomicU64);

impl Counter {
    const fn new() -> Self {
        Counter(AtomicU64::new(0))
    }
    fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    fn sub(&self, n: u64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(n))
            });
    }
    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

static CREATED: Counter = Counter::new();
static QUEUED: Counter = Counter::new();
static RUNNING: Counter = Counter::new();
static DONE: Counter = Counter::new();
static ABORTED: Counter = Counter::new();
static FAILED: Counter = Counter::new();
static RECORDS_READ: Counter = Counter::new();
static RECORDS_EMITTED: Counter = Counter::new();
static ERRORS: Counter = Counter::new();
static BUSY_WORKERS: Counter = Counter::new();
static QUEUE_FULL: Counter = Counter::new();

/// An execution refused because the queue was full.
pub(crate) fn queue_full() {
    QUEUE_FULL.add(1);
}

/// Per language: executions, and microseconds spent inside the language.
static LANGUAGE_EXECUTIONS: [Counter; 3] = [Counter::new(), Counter::new(), Counter::new()];
static LANGUAGE_MICROS: [Counter; 3] = [Counter::new(), Counter::new(), Counter::new()];

fn index(language: Language) -> usize {
    match language {
        Language::Python => 0,
        Language::Lua => 1,
        Language::Rhai => 2,
    }
}

pub(crate) fn created(execution: &Execution) {
    CREATED.add(1);
    QUEUED.add(1);
    LANGUAGE_EXECUTIONS[index(execution.language)].add(1);
}

/// Executions waiting for a worker.
pub(crate) fn queued() -> u64 {
    QUEUED.get()
}

pub(crate) fn dequeued() {
    QUEUED.sub(1);
}

/// An `RG.EXPLAIN` job entered the queue (it counts toward `MaxQueuedExecutions` and the
/// queue's length, but is not an execution).
pub(crate) fn explain_queued() {
    QUEUED.add(1);
}

/// An `RG.EXPLAIN` job left the queue for a worker.
pub(crate) fn explain_started() {
    QUEUED.sub(1);
    BUSY_WORKERS.add(1);
}

pub(crate) fn explain_finished() {
    BUSY_WORKERS.sub(1);
}

pub(crate) fn worker_busy() {
    BUSY_WORKERS.add(1);
    RUNNING.add(1);
}

pub(crate) fn worker_free() {
    BUSY_WORKERS.sub(1);
    RUNNING.sub(1);
}

/// An execution that failed: its script did not compile or raised at its top level, or a limit
/// stopped it.
pub(crate) fn failed() {
    FAILED.add(1);
}

pub(crate) fn finished(execution: &Execution, aborted: bool) {
    if aborted {
        ABORTED.add(1);
    } else {
        DONE.add(1);
    }
    RECORDS_READ.add(execution.progress.records_read());
    RECORDS_EMITTED.add(execution.progress.records_emitted());
    LANGUAGE_MICROS[index(execution.language)]
        .add(execution.progress.language_duration().as_micros() as u64);
}

pub(crate) fn errors(count: u64) {
    ERRORS.add(count);
}

/// The `INFO` fields of executions, as (name, value).
pub(crate) fn fields(memory_held: i64) -> Vec<(&'static str, i64)> {
    let v = |c: &Counter| c.get() as i64;
    vec![
        ("executions_created", v(&CREATED)),
        ("executions_queued", v(&QUEUED)),
        ("executions_running", v(&RUNNING)),
        ("executions_done", v(&DONE)),
        ("executions_aborted", v(&ABORTED)),
        ("executions_failed", v(&FAILED)),
        ("records_read", v(&RECORDS_READ)),
        ("records_emitted", v(&RECORDS_EMITTED)),
        ("errors", v(&ERRORS)),
        ("workers_busy", v(&BUSY_WORKERS)),
        ("executions_rejected", v(&QUEUE_FULL)),
        ("executions_memory", memory_held),
        ("python_executions", v(&LANGUAGE_EXECUTIONS[0])),
        ("python_time_ms", v(&LANGUAGE_MICROS[0]) / 1000),
        ("lua_executions", v(&LANGUAGE_EXECUTIONS[1])),
        ("lua_time_ms", v(&LANGUAGE_MICROS[1]) / 1000),
        ("rhai_executions", v(&LANGUAGE_EXECUTIONS[2])),
        ("rhai_time_ms", v(&LANGUAGE_MICROS[2]) / 1000),
        ("registrations", crate::registrations::count() as i64),
        (
            "registration_events_pending",
            crate::registrations::pending() as i64,
        ),
    ]
}
