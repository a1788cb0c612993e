//! Timer registrations (`TimerReader`, Python's `registerTE`): a plan run on a schedule instead
//! of on an event.
//!
//! A schedule is a fixed interval (`interval=` seconds; `registerTE(seconds, ...)`) or a cron
//! expression (`schedule='*/5 * * * *'`, in UTC; an optional sixth leading field gives seconds),
//! parsed with the `croner` crate. This part only knows the schedule's points in time; the module
//! arms the timers, runs each point once on a master and persists the registration with its
//! session.

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use croner::Cron;
use serde::{Deserialize, Serialize};

use crate::plan::{CallbackId, ExecutionMode, Kwarg, Language, ReaderSpec, RunLimits, RunOptions};
use crate::registration::{RegistrationSpec, Trigger};
use crate::{GearsError, PlanBuilder, Record, Result};

/// The shortest interval a timer may have: a sync timer runs on Redis's main thread.
pub const MIN_INTERVAL_MS: u64 = 10;
/// The longest interval a timer may have, in seconds (100 years).
pub const MAX_INTERVAL_SECONDS: u64 = 3_153_600_000;

/// When a timer registration runs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum Schedule {
    /// Every this many milliseconds, from when it starts.
    Every(u64),
    /// At each point of this cron expression (UTC).
    Cron(String),
}

impl Schedule {
    /// A cron expression, checked.
    pub fn cron(expression: &str) -> Result<Schedule> {
        Cron::from_str(expression.trim()).map_err(|e| {
            plan_error(&format!(
                "schedule is not a valid cron expression ({expression:?}): {e}"
            ))
        })?;
        Ok(Schedule::Cron(expression.trim().to_string()))
    }

    /// The schedule's first point after `after_ms` (ms since the epoch); `None` if it has none
    /// (a cron expression that can never match again).
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        match self {
            Schedule::Every(millis) => after_ms.checked_add((*millis).max(1)),
            Schedule::Cron(expression) => {
                let cron = Cron::from_str(expression).ok()?;
                let after: DateTime<Utc> = Utc
                    .timestamp_millis_opt(i64::try_from(after_ms).ok()?)
                    .single()?;
                let next = cron.find_next_occurrence(&after, false).ok()?;
                u64::try_from(next.timestamp_millis()).ok()
            }
        }
    }

    /// How `RG.DUMPREGISTRATIONS` and the records show it: the cron expression, or
    /// `every 10s` / `every 250ms`.
    pub fn describe(&self) -> String {
        match self {
            Schedule::Every(millis) if millis % 1000 == 0 => format!("every {}s", millis / 1000),
            Schedule::Every(millis) => format!("every {millis}ms"),
            Schedule::Cron(expression) => expression.clone(),
        }
    }
}

/// A TimerReader registration.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TimerTrigger {
    pub schedule: Schedule,
    /// `key=` (`registerTE`'s third argument): the timer lives while this key holds it; deleting
    /// the key stops it. Its shard runs it in a cluster.
    pub key: Option<Vec<u8>>,
    /// `stopOnError=True` (`registerTE`): a run that fails stops the timer, as RedisGears'
    /// time events did; otherwise failures are counted and it goes on.
    pub stop_on_error: bool,
}

impl TimerTrigger {
    /// The record a run at `point_ms` gets: `{'time': <seconds since the epoch>, 'schedule':
    /// <describe()>}` (`time` is the schedule's point, not when the run started).
    pub fn record(&self, point_ms: u64) -> Record {
        Record::Map(vec![
            (
                Record::String("time".into()),
                Record::Integer((point_ms / 1000).min(i64::MAX as u64) as i64),
            ),
            (
                Record::String("schedule".into()),
                Record::String(self.schedule.describe()),
            ),
        ])
    }
}

/// `register()`'s keyword arguments for the TimerReader: `interval=` (seconds, a number) or
/// `schedule=` (a cron expression), `key=` and `stopOnError=`.
pub fn timer_trigger(kwargs: &[Kwarg]) -> Result<TimerTrigger> {
    let get = |name: &str| {
        kwargs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
            .filter(|v| !matches!(v, Record::Nil))
    };
    let interval = match get("interval") {
        None => None,
        Some(Record::Integer(seconds)) if *seconds > 0 => {
            Some((*seconds as u64).saturating_mul(1000))
        }
        Some(Record::Float(seconds)) if seconds.is_finite() && *seconds > 0.0 => {
            Some((seconds * 1000.0).round() as u64)
        }
        Some(_) => {
            return Err(plan_error(
                "interval argument must be a positive number of seconds",
            ))
        }
    };
    let schedule = match (interval, get("schedule")) {
        (Some(_), Some(_)) => {
            return Err(plan_error(
                "TimerReader takes interval or schedule, not both",
            ))
        }
        (Some(millis), None) if millis < MIN_INTERVAL_MS => {
            return Err(plan_error(&format!(
                "interval argument must be at least {} seconds",
                MIN_INTERVAL_MS as f64 / 1000.0
            )))
        }
        (Some(millis), None) if millis > MAX_INTERVAL_SECONDS * 1000 => {
            return Err(plan_error(&format!(
                "interval argument must be at most {MAX_INTERVAL_SECONDS} seconds (100 years)"
            )))
        }
        (Some(millis), None) => Schedule::Every(millis),
        (None, Some(Record::String(text))) => Schedule::cron(text)?,
        (None, Some(Record::Bytes(bytes))) => Schedule::cron(&String::from_utf8_lossy(bytes))?,
        (None, Some(_)) => return Err(plan_error("schedule argument must be a string")),
        (None, None) => {
            return Err(plan_error(
                "TimerReader needs interval=<seconds> or schedule='<cron expression>'",
            ))
        }
    };
    let key = match get("key") {
        None => None,
        Some(Record::String(s)) if !s.is_empty() => Some(s.clone().into_bytes()),
        Some(Record::Bytes(b)) if !b.is_empty() => Some(b.clone()),
        Some(_) => return Err(plan_error("key argument must be a non-empty string")),
    };
    let stop_on_error = match get("stopOnError") {
        None => false,
        Some(Record::Bool(b)) => *b,
        Some(Record::Integer(n)) => *n != 0,
        Some(_) => return Err(plan_error("stopOnError argument must be a boolean")),
    };
    Ok(TimerTrigger {
        schedule,
        key,
        stop_on_error,
    })
}

/// Checks a time event's `seconds` and `key` (before its key is looked at).
pub fn check_time_event(seconds: i64, key: Option<&[u8]>) -> Result<()> {
    if seconds <= 0 {
        return Err(plan_error(
            "time argument must be a positive number of seconds",
        ));
    }
    if seconds as u64 > MAX_INTERVAL_SECONDS {
        return Err(plan_error(&format!(
            "time argument must be at most {MAX_INTERVAL_SECONDS} seconds (100 years)"
        )));
    }
    if key.is_some_and(|k| k.is_empty()) {
        return Err(plan_error("key argument must be a non-empty string"));
    }
    Ok(())
}

/// A time event (Python's `registerTE(seconds, f, key)`, Lua's and Rhai's `register_timer`):
/// a sync timer registration whose one step calls `callback` with no argument (the language
/// wraps the user's function so), every `seconds`, stopped by an error. `seconds` is checked
/// with RedisGears' error texts.
pub fn time_event(
    language: Language,
    seconds: i64,
    key: Option<Vec<u8>>,
    callback: CallbackId,
    description: String,
) -> Result<RegistrationSpec> {
    check_time_event(seconds, key.as_deref())?;
    let mut builder = PlanBuilder::new(language);
    builder.foreach(callback);
    let options = RunOptions {
        convert_to_str: false,
        collect: false,
        mode: ExecutionMode::Sync,
        limits: RunLimits::default(),
    };
    Ok(RegistrationSpec {
        plan: builder
            .build(ReaderSpec::Timer, options, Some(description))
            .into(),
        trigger: Trigger::Timer(TimerTrigger {
            schedule: Schedule::Every((seconds as u64).saturating_mul(1000)),
            key,
            stop_on_error: true,
        }),
        on_registered: None,
        id: None,
    })
}

fn plan_error(text: &str) -> GearsError {
    GearsError::Plan(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kw(pairs: &[(&str, Record)]) -> Vec<Kwarg> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn error(pairs: &[(&str, Record)]) -> String {
        timer_trigger(&kw(pairs)).unwrap_err().to_string()
    }

    #[test]
    fn intervals_are_seconds() {
        let t = timer_trigger(&kw(&[("interval", Record::Integer(5))])).unwrap();
        assert_eq!(t.schedule, Schedule::Every(5000));
        assert_eq!(t.schedule.describe(), "every 5s");
        assert_eq!(t.schedule.next_after(1_000), Some(6_000));
        let t = timer_trigger(&kw(&[("interval", Record::Float(0.25))])).unwrap();
        assert_eq!(t.schedule.describe(), "every 250ms");
        assert!(!t.stop_on_error && t.key.is_none());
    }

    #[test]
    fn cron_points_are_utc_minutes_or_seconds() {
        let t = timer_trigger(&kw(&[("schedule", Record::String("*/5 * * * *".into()))])).unwrap();
        // 2026-12-02T00:03:10Z -> 00:05:00Z
        let at = 1_796_169_790_000;
        assert_eq!(t.schedule.next_after(at), Some(1_796_169_900_000));
        // A point is never given twice: the next after a point is the following one.
        assert_eq!(
            t.schedule.next_after(1_796_169_900_000),
            Some(1_796_170_200_000)
        );
        let seconds = Schedule::cron("*/2 * * * * *").unwrap();
        assert_eq!(seconds.next_after(1_000), Some(2_000));
        assert_eq!(seconds.next_after(2_000), Some(4_000));
    }

    #[test]
    fn bad_arguments_have_clear_errors() {
        assert_eq!(
            error(&[]),
            "TimerReader needs interval=<seconds> or schedule='<cron expression>'"
        );
        assert_eq!(
            error(&[("interval", Record::Integer(0))]),
            "interval argument must be a positive number of seconds"
        );
        assert_eq!(
            error(&[("interval", Record::Float(0.001))]),
            "interval argument must be at least 0.01 seconds"
        );
        assert_eq!(
            error(&[("interval", Record::Float(1e16))]),
            "interval argument must be at most 3153600000 seconds (100 years)"
        );
        assert_eq!(
            error(&[
                ("interval", Record::Integer(1)),
                ("schedule", Record::String("* * * * *".into()))
            ]),
            "TimerReader takes interval or schedule, not both"
        );
        assert!(error(&[("schedule", Record::String("61 * * * *".into()))])
            .starts_with("schedule is not a valid cron expression (\"61 * * * *\"): "));
        assert_eq!(
            error(&[
                ("interval", Record::Integer(1)),
                ("key", Record::Integer(3))
            ]),
            "key argument must be a non-empty string"
        );
    }

    #[test]
    fn records_carry_the_point_and_the_schedule() {
        let t = timer_trigger(&kw(&[
            ("interval", Record::Integer(2)),
            ("key", Record::String("k".into())),
            ("stopOnError", Record::Bool(true)),
        ]))
        .unwrap();
        assert_eq!(t.key.as_deref(), Some(b"k".as_slice()));
        assert!(t.stop_on_error);
        assert_eq!(
            t.record(12_345),
            Record::Map(vec![
                (Record::String("time".into()), Record::Integer(12)),
                (
                    Record::String("schedule".into()),
                    Record::String("every 2s".into())
                ),
            ])
        );
    }
}
