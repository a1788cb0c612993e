//! What an execution reports while it runs and when it ends: its errors (bounded), how far it
//! got (records read, the step it is in), and how long each part took.

use std::cell::Cell;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// The per-record errors of an execution. The first `max` are kept as they are; further ones
/// are only counted, and [`ErrorList::into_vec`] ends the list with one line saying how many
/// were left out: one typo in a callback over a million records gives a useful reply, not a
/// million tracebacks.
#[derive(Debug)]
pub struct ErrorList {
    items: Vec<String>,
    max: usize,
    dropped: u64,
}

thread_local! {
    /// True while the error list of the run on this thread is full.
    static LIST_FULL: Cell<bool> = const { Cell::new(false) };
}

/// True when the next error of the run on this thread will not be listed: a language may then
/// skip formatting its text (a Python traceback costs more than the record's work).
pub fn errors_unlisted() -> bool {
    LIST_FULL.with(Cell::get)
}

impl ErrorList {
    /// A list that keeps at most `max` errors (0: all of them), for the run on this thread.
    pub fn new(max: usize) -> Self {
        LIST_FULL.with(|full| full.set(false));
        ErrorList {
            items: Vec::new(),
            max,
            dropped: 0,
        }
    }

    pub fn push(&mut self, error: String) {
        if self.max == 0 || self.items.len() < self.max {
            self.items.push(error);
            if self.max != 0 && self.items.len() == self.max {
                LIST_FULL.with(|full| full.set(true));
            }
        } else {
            self.dropped += 1;
        }
    }

    /// Errors kept plus errors left out.
    pub fn total(&self) -> u64 {
        self.items.len() as u64 + self.dropped
    }

    /// The errors kept, then the line that counts the others, if any.
    pub fn into_vec(mut self) -> Vec<String> {
        if self.dropped > 0 {
            self.items.push(format!(
                "{} more errors not listed (at most {} are, ExecutionMaxErrors)",
                self.dropped, self.max
            ));
        }
        std::mem::take(&mut self.items)
    }
}

impl Drop for ErrorList {
    fn drop(&mut self) {
        LIST_FULL.with(|full| full.set(false));
    }
}

/// The step an execution is in while its reader reads.
pub const READING: i64 = -1;

/// How far a running execution got, readable from any thread while it runs.
#[derive(Debug, Default)]
pub struct Progress {
    records_read: AtomicU64,
    records_emitted: AtomicU64,
    /// The index of the step running, or [`READING`].
    step: AtomicI64,
    /// Time in the reader, and in each step, in nanoseconds (when profiled).
    read_nanos: AtomicU64,
    step_nanos: Mutex<Vec<u64>>,
    /// Time spent inside the language (entered sessions), in nanoseconds.
    language_nanos: AtomicU64,
    /// Errors of the finished run, listed or not.
    errors: AtomicU64,
    profile: bool,
}

impl Progress {
    /// A progress record; with `profile`, each step's duration is measured too.
    pub fn new(profile: bool) -> Self {
        Progress {
            profile,
            ..Progress::default()
        }
    }

    pub fn profile(&self) -> bool {
        self.profile
    }

    pub fn records_read(&self) -> u64 {
        self.records_read.load(Ordering::Relaxed)
    }

    pub fn records_emitted(&self) -> u64 {
        self.records_emitted.load(Ordering::Relaxed)
    }

    /// The index of the step running, or [`READING`].
    pub fn step(&self) -> i64 {
        self.step.load(Ordering::Relaxed)
    }

    pub fn read_duration(&self) -> Duration {
        Duration::from_nanos(self.read_nanos.load(Ordering::Relaxed))
    }

    /// Each step's duration so far (zero when not profiled).
    pub fn step_durations(&self, steps: usize) -> Vec<Duration> {
        let nanos = self.step_nanos.lock().unwrap_or_else(|p| p.into_inner());
        (0..steps)
            .map(|i| Duration::from_nanos(nanos.get(i).copied().unwrap_or(0)))
            .collect()
    }

    /// The errors of the finished run, including those its reply did not list.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    pub(crate) fn count_errors(&self, errors: u64) {
        self.errors.fetch_add(errors, Ordering::Relaxed);
    }

    pub fn language_duration(&self) -> Duration {
        Duration::from_nanos(self.language_nanos.load(Ordering::Relaxed))
    }

    pub(crate) fn read(&self, records: usize, took: Duration) {
        self.records_read
            .fetch_add(records as u64, Ordering::Relaxed);
        self.read_nanos
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }

    pub(crate) fn emitted(&self, records: usize) {
        self.records_emitted
            .fetch_add(records as u64, Ordering::Relaxed);
    }

    pub(crate) fn enter_step(&self, step: i64) {
        self.step.store(step, Ordering::Relaxed);
    }

    pub(crate) fn step_took(&self, step: usize, took: Duration) {
        let mut nanos = self.step_nanos.lock().unwrap_or_else(|p| p.into_inner());
        if nanos.len() <= step {
            nanos.resize(step + 1, 0);
        }
        nanos[step] += took.as_nanos() as u64;
    }

    pub(crate) fn in_language(&self, took: Duration) {
        self.language_nanos
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_past_the_cap_are_counted() {
        let mut errors = ErrorList::new(2);
        for i in 0..5 {
            errors.push(format!("e{i}"));
        }
        assert_eq!(errors.total(), 5);
        assert_eq!(
            errors.into_vec(),
            vec![
                "e0".to_string(),
                "e1".to_string(),
                "3 more errors not listed (at most 2 are, ExecutionMaxErrors)".to_string()
            ]
        );
        let mut all = ErrorList::new(0);
        all.push("x".into());
        assert_eq!(all.into_vec(), vec!["x".to_string()]);
    }
}
