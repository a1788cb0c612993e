//! Stopping an execution: the one flag every piece of running code checks.
//!
//! An [`ExecutionControl`] belongs to one execution. It stops when a limit is passed (time in an
//! atomic block, the execution's or Gears' memory) or when something stops it explicitly (an
//! abort). Code that runs for the execution observes it:
//! - the executor before each batch and before each callback;
//! - each language from inside running user code, with its own interruption mechanism (Lua's
//!   instruction hook, Rhai's progress callback, an asynchronous exception in Python);
//! - the readers between batches.
//!
//! A thread working for an execution carries its control (and memory meter) in a
//! [`ControlScope`], so language crates find it without threading it through every call.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::error::{GearsError, Result};
use crate::memory::{self, MemoryMeter, MeterScope};

/// The limits an execution runs under (zero: no limit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// The longest an atomic block may hold the Redis lock.
    pub atomic_max: Duration,
    /// The most memory the execution may hold, in bytes.
    pub memory: u64,
    /// The longest the execution may run.
    pub timeout: Duration,
    /// The most records it may hold at once (results and the state of its steps).
    pub max_records: u64,
    /// The largest reply it may give, in bytes.
    pub max_reply_bytes: u64,
    /// The most errors its reply lists.
    pub max_errors: u64,
}

impl Limits {
    /// These limits with a run's own: a run may only tighten a limit the settings set (a value
    /// larger than the setting, or 0, leaves the setting), so an operator's limits hold for
    /// every script.
    pub fn with_run(mut self, run: &crate::plan::RunLimits) -> Limits {
        let timeout_ms = u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX);
        self.timeout = Duration::from_millis(tighter(timeout_ms, run.timeout_ms));
        self.max_records = tighter(self.max_records, run.max_records);
        self.max_reply_bytes = tighter(self.max_reply_bytes, run.max_reply_bytes);
        self.max_errors = tighter(self.max_errors, run.max_errors);
        self
    }
}

/// The tighter of a setting and a run's value (0: no limit).
fn tighter(setting: u64, run: Option<u64>) -> u64 {
    match run {
        None | Some(0) => setting,
        Some(n) if setting == 0 => n,
        Some(n) => n.min(setting),
    }
}

/// Microseconds of a duration, saturating (a huge setting is no limit, not a tiny one).
fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// The error an aborted execution ends with.
pub const ABORTED: &str = "Execution was aborted";

/// The stop state and limits of one execution.
pub struct ExecutionControl {
    stopped: AtomicBool,
    message: Mutex<Option<String>>,
    /// When the current atomic block began, in microseconds since `epoch`, plus one (0: none).
    atomic_since: AtomicU64,
    /// When the control was created (times below are counted from it).
    epoch: Instant,
    /// The limits; the run's own replace the settings once its plan is known.
    limits: Mutex<Limits>,
    /// When the execution started running (left the queue), in microseconds since `epoch`.
    started_micros: AtomicU64,
    /// When the run-time limit passes, in microseconds since `epoch` (0: no limit), read at
    /// every check.
    deadline_micros: AtomicU64,
    memory: Arc<MemoryMeter>,
}

impl ExecutionControl {
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(ExecutionControl {
            stopped: AtomicBool::new(false),
            message: Mutex::new(None),
            atomic_since: AtomicU64::new(0),
            epoch: Instant::now(),
            limits: Mutex::new(limits),
            started_micros: AtomicU64::new(0),
            deadline_micros: AtomicU64::new(micros(limits.timeout)),
            memory: Arc::new(MemoryMeter::new(limits.memory)),
        })
    }

    /// A control with no limits, for work that is not a user execution.
    pub fn unlimited() -> Arc<Self> {
        Self::new(Limits::default())
    }

    pub fn limits(&self) -> Limits {
        *self.limits.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies a run's own limits (`run(..., timeout=...)`) once its plan is known. The memory
    /// limit stays the setting's.
    pub fn apply_run_limits(&self, run: &crate::plan::RunLimits) {
        let mut limits = self.limits.lock().unwrap_or_else(PoisonError::into_inner);
        *limits = limits.with_run(run);
        self.set_deadline(limits.timeout);
    }

    /// Starts the run-time clock: the execution left the queue (time waiting for a worker does
    /// not count toward `ExecutionMaxRunTime`).
    pub fn start_clock(&self) {
        self.started_micros
            .store(self.micros_since_epoch(), Ordering::Relaxed);
        self.set_deadline(self.limits().timeout);
    }

    fn set_deadline(&self, timeout: Duration) {
        let deadline = if timeout.is_zero() {
            0
        } else {
            self.started_micros
                .load(Ordering::Relaxed)
                .saturating_add(micros(timeout))
        };
        self.deadline_micros.store(deadline, Ordering::Relaxed);
    }

    /// How long the execution has run.
    pub fn elapsed(&self) -> Duration {
        self.epoch.elapsed()
    }

    pub fn memory(&self) -> &Arc<MemoryMeter> {
        &self.memory
    }

    /// Stops the execution with `message` (the first stop wins). Returns true if this call
    /// stopped it.
    pub fn stop(&self, message: impl Into<String>) -> bool {
        let mut current = self.message.lock().unwrap_or_else(PoisonError::into_inner);
        if current.is_some() {
            return false;
        }
        *current = Some(message.into());
        self.stopped.store(true, Ordering::Release);
        true
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Why the execution stopped, if it did.
    pub fn stop_message(&self) -> Option<String> {
        self.message
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Checks the execution's limits, stopping it when one is passed. `Err(Stopped)` once the
    /// execution is stopped, whatever stopped it.
    pub fn check(&self) -> Result<()> {
        self.check_with(|| self.local_limit_passed().or_else(global_limit_passed))
    }

    /// [`ExecutionControl::check`] without Gears' global memory limit (which sums counters
    /// across threads): cheap enough for every operation of an interpreter.
    pub fn check_local(&self) -> Result<()> {
        self.check_with(|| self.local_limit_passed())
    }

    fn check_with(&self, limit_passed: impl FnOnce() -> Option<String>) -> Result<()> {
        if !self.is_stopped() {
            if let Some(message) = limit_passed() {
                self.stop(message);
            }
        }
        if self.is_stopped() {
            return Err(GearsError::Stopped(self.stop_message().unwrap_or_default()));
        }
        Ok(())
    }

    /// The message of a limit of this execution it has passed, if any.
    fn local_limit_passed(&self) -> Option<String> {
        let now = self.micros_since_epoch();
        let since = self.atomic_since.load(Ordering::Relaxed);
        if since != 0 {
            let atomic_max = self.limits().atomic_max;
            if !atomic_max.is_zero() && now.saturating_sub(since - 1) > micros(atomic_max) {
                return Some(format!(
                    "BUSY the atomic block ran longer than {} ms (AtomicBlockMaxTime); it was \
                     interrupted and the Redis lock released",
                    atomic_max.as_millis()
                ));
            }
        }
        let deadline = self.deadline_micros.load(Ordering::Relaxed);
        if deadline > 0 && now > deadline {
            return Some(format!(
                "TIMEOUT the execution ran longer than {} ms (ExecutionMaxRunTime)",
                self.limits().timeout.as_millis()
            ));
        }
        let limit = self.memory.limit();
        let used = self.memory.used();
        if limit > 0 && used > limit as i64 {
            return Some(memory::LimitPassed::Execution(limit).message());
        }
        // One execution alone past Gears' limit (a cheap part of the global check).
        let global = memory::global_limit();
        if global > 0 && used > global as i64 {
            return Some(memory::LimitPassed::Global(global).message());
        }
        None
    }

    fn micros_since_epoch(&self) -> u64 {
        micros(self.epoch.elapsed())
    }

    /// Marks the start of an atomic block (the thread now holds the Redis lock).
    pub fn begin_atomic(&self) {
        self.atomic_since
            .store(self.micros_since_epoch() + 1, Ordering::Relaxed);
    }

    pub fn end_atomic(&self) {
        self.atomic_since.store(0, Ordering::Relaxed);
    }

    pub fn in_atomic(&self) -> bool {
        self.atomic_since.load(Ordering::Relaxed) != 0
    }
}

/// The message of Gears' global memory limit when all of Gears holds more.
fn global_limit_passed() -> Option<String> {
    let global = memory::global_limit();
    (global > 0 && memory::total_used() > global as i64)
        .then(|| memory::LimitPassed::Global(global).message())
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<ExecutionControl>>> = const { RefCell::new(None) };
}

/// The control of the execution this thread works for, if any.
pub fn current() -> Option<Arc<ExecutionControl>> {
    CURRENT.with(|current| current.borrow().clone())
}

/// Checks the current execution's control (`Ok` when the thread works for none).
pub fn check_current() -> Result<()> {
    CURRENT.with(|current| match current.borrow().as_ref() {
        Some(control) => control.check(),
        None => Ok(()),
    })
}

/// [`ExecutionControl::check_local`] of the current execution.
pub fn check_current_local() -> Result<()> {
    CURRENT.with(|current| match current.borrow().as_ref() {
        Some(control) => control.check_local(),
        None => Ok(()),
    })
}

/// Makes `control` this thread's current execution (and its meter the one charged) until
/// dropped. Scopes nest.
pub struct ControlScope {
    previous: Option<Arc<ExecutionControl>>,
    _meter: MeterScope,
}

impl ControlScope {
    pub fn enter(control: &Arc<ExecutionControl>) -> Self {
        let meter = MeterScope::enter(control.memory());
        let previous = CURRENT.with(|current| current.borrow_mut().replace(control.clone()));
        ControlScope {
            previous,
            _meter: meter,
        }
    }
}

impl Drop for ControlScope {
    fn drop(&mut self) {
        let previous = self.previous.take();
        let _ = CURRENT.try_with(|current| *current.borrow_mut() = previous);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_stop_wins() {
        let control = ExecutionControl::unlimited();
        assert!(control.check().is_ok());
        assert!(control.stop("first"));
        assert!(!control.stop("second"));
        assert_eq!(control.check(), Err(GearsError::Stopped("first".into())));
    }

    #[test]
    fn a_run_may_only_tighten_the_settings() {
        let settings = Limits {
            timeout: Duration::from_millis(1000),
            max_records: 100,
            max_reply_bytes: 0,
            max_errors: 10,
            ..Limits::default()
        };
        let run = crate::plan::RunLimits {
            timeout_ms: Some(5000),
            max_records: Some(0),
            max_reply_bytes: Some(2000),
            max_errors: Some(3),
        };
        let limits = settings.with_run(&run);
        assert_eq!(limits.timeout, Duration::from_millis(1000));
        assert_eq!(limits.max_records, 100);
        assert_eq!(limits.max_reply_bytes, 2000);
        assert_eq!(limits.max_errors, 3);
        assert_eq!(settings.with_run(&Default::default()), settings);
    }

    #[test]
    fn the_run_time_counts_from_the_start_and_huge_limits_never_pass() {
        let control = ExecutionControl::new(Limits {
            timeout: Duration::from_millis(30),
            ..Limits::default()
        });
        std::thread::sleep(Duration::from_millis(40));
        // Queued until now: the clock starts with the run.
        control.start_clock();
        assert!(control.check().is_ok());
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(
            control.check(),
            Err(GearsError::Stopped(
                "TIMEOUT the execution ran longer than 30 ms (ExecutionMaxRunTime)".into()
            ))
        );
        let control = ExecutionControl::new(Limits {
            timeout: Duration::from_millis(u64::MAX),
            atomic_max: Duration::from_millis(u64::MAX),
            ..Limits::default()
        });
        control.start_clock();
        control.begin_atomic();
        std::thread::sleep(Duration::from_millis(5));
        assert!(control.check().is_ok());
    }

    #[test]
    fn an_atomic_block_past_its_limit_stops_the_execution() {
        let control = ExecutionControl::new(Limits {
            atomic_max: Duration::from_millis(20),
            ..Limits::default()
        });
        control.begin_atomic();
        assert!(control.check().is_ok());
        std::thread::sleep(Duration::from_millis(30));
        let err = control.check().unwrap_err();
        assert!(err
            .message()
            .starts_with("BUSY the atomic block ran longer than 20 ms"));
        control.end_atomic();
        assert!(
            control.check().is_err(),
            "a stopped execution stays stopped"
        );
    }

    #[test]
    fn the_memory_limit_stops_the_execution() {
        let control = ExecutionControl::new(Limits {
            memory: 100,
            ..Limits::default()
        });
        {
            let _scope = ControlScope::enter(&control);
            memory::charge(memory::Pool::Python, 150);
            assert_eq!(
                check_current().unwrap_err().message(),
                "OOM the execution used more than its memory limit of 100 bytes \
                 (ExecutionMemoryLimit)"
            );
            memory::charge(memory::Pool::Python, -150);
        }
        assert!(check_current().is_ok(), "no control outside the scope");
    }

    #[test]
    fn a_run_past_its_time_limit_stops() {
        let control = ExecutionControl::new(Limits {
            timeout: Duration::from_secs(60),
            ..Limits::default()
        });
        assert!(control.check().is_ok());
        control.apply_run_limits(&crate::plan::RunLimits {
            timeout_ms: Some(10),
            ..Default::default()
        });
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            control.check().unwrap_err().message(),
            "TIMEOUT the execution ran longer than 10 ms (ExecutionMaxRunTime)"
        );
        assert_eq!(control.limits().timeout, Duration::from_millis(10));
    }
}
