//! Timer registrations (`TimerReader`, Python's `registerTE`): a registration's plan run at each
//! point of its schedule, once per point, on a master only.
//!
//! Each live timer registration has one Redis timer armed on the main thread for its next point
//! (every node arms it; replicas and a loading server skip the points, so a promoted replica
//! goes on at the next one). A point runs the plan as one execution of the registration, with
//! the record `{'time': <point, seconds since the epoch>, 'schedule': ...}`: `sync` on the main
//! thread inside the timer (as RedisGears' time events ran), `async` through the registration's
//! queue, in order. Points missed while the server was busy, down or a replica are not run
//! afterwards: the next run is the schedule's next point after now.
//!
//! A timer with a `key` ([`key`]) lives while that key holds it: a point finds the key gone (or
//! holding something else) and ends the registration everywhere instead of running; in a
//! cluster only the key's shard runs it. `stopOnError` (`registerTE`) ends it after a failed run.

pub(crate) mod key;

use std::os::raw::c_void;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use gears_core::registration::Trigger;
use gears_core::timer::{Schedule, TimerTrigger};
use gears_core::{ExecutionMode, ExecutionOutcome};
use redis_module::logging::RedisLogLevel;
use redis_module::{raw, Context};

use super::run::{self, Answer, Call};
use super::Registration;
use crate::host::on_main_thread_soon;

/// A timer registration's state: its next point, and whether `RG.PAUSEREGISTRATIONS` paused it.
#[derive(Default)]
pub(crate) struct TimerState {
    /// The next point (ms since the epoch); 0 before it is armed.
    next_ms: AtomicU64,
    paused: AtomicBool,
    /// The Redis timer armed for it (stopped when the registration leaves).
    armed: std::sync::Mutex<Option<raw::RedisModuleTimerID>>,
}

impl TimerState {
    pub fn next_run_ms(&self) -> Option<u64> {
        Some(self.next_ms.load(Ordering::Relaxed)).filter(|ms| *ms > 0)
    }

    /// A paused timer skips its points until it is unpaused.
    pub fn pause(&self, pause: bool) {
        self.paused.store(pause, Ordering::Relaxed);
    }

    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }
}

fn trigger(registration: &Registration) -> Option<&TimerTrigger> {
    match &registration.spec.trigger {
        Trigger::Timer(trigger) => Some(trigger),
        _ => None,
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Newly published registrations: each timer is armed for its first point.
pub(super) fn started(added: &[Arc<Registration>]) {
    let now = now_ms();
    for registration in added {
        let Some(trigger) = trigger(registration) else {
            continue;
        };
        match trigger.schedule.next_after(now) {
            Some(next) => arm(registration, next, now),
            None => log_once(
                registration,
                "its schedule has no next point: it never runs",
            ),
        }
    }
}

/// The longest a Redis timer is armed for: a later point is reached in hops (see
/// [`crate::host::MAX_TIMER_MS`]).
const MAX_WAIT_MS: u64 = crate::host::MAX_TIMER_MS;

/// A registration left: its Redis timer is stopped (not left pending until its point).
pub(super) fn retired(registration: &Registration) {
    let Some(state) = &registration.timer else {
        return;
    };
    let Some(id) = state
        .armed
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
    else {
        return;
    };
    on_main_thread_soon(move || {
        let Some(ctx) = crate::gears().map(|g| g.log_context.0) else {
            return;
        };
        let mut data: *mut c_void = std::ptr::null_mut();
        // SAFETY: on the main thread; a timer that has not fired gives its box back, freed here.
        unsafe {
            if raw::RedisModule_StopTimer.unwrap()(ctx, id, &mut data)
                == raw::REDISMODULE_OK as std::os::raw::c_int
                && !data.is_null()
            {
                drop(Box::from_raw(data.cast::<Tick>()));
            }
        }
    });
}

/// What a Redis timer carries: the registration (it may be removed meanwhile) and its point.
struct Tick {
    registration: Weak<Registration>,
    point_ms: u64,
}

/// Arms the registration's Redis timer for `point_ms` (on the main thread, where timers live).
fn arm(registration: &Arc<Registration>, point_ms: u64, now: u64) {
    if let Some(state) = &registration.timer {
        state.next_ms.store(point_ms, Ordering::Relaxed);
    }
    let weak = Arc::downgrade(registration);
    let tick = Tick {
        registration: weak.clone(),
        point_ms,
    };
    let wait = point_ms.saturating_sub(now).min(MAX_WAIT_MS) as i64;
    let set = move || {
        let Some(ctx) = crate::gears().map(|g| g.log_context.0) else {
            return;
        };
        let Some(registration) = weak.upgrade().filter(|r| !r.is_removed()) else {
            return;
        };
        let data = Box::into_raw(Box::new(tick));
        // SAFETY: on the main thread; `fire` takes the box back (or `retired`, stopping it).
        let id =
            unsafe { raw::RedisModule_CreateTimer.unwrap()(ctx, wait, Some(fire), data.cast()) };
        if let Some(state) = &registration.timer {
            *state
                .armed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(id);
        }
    };
    on_main_thread_soon(set);
}

unsafe extern "C" fn fire(ctx: *mut raw::RedisModuleCtx, data: *mut c_void) {
    // SAFETY: boxed by `arm`, handed over once.
    let tick = unsafe { Box::from_raw(data.cast::<Tick>()) };
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let Some(registration) = tick.registration.upgrade() else {
            return;
        };
        if registration.is_removed() {
            return;
        }
        if let Some(state) = &registration.timer {
            state
                .armed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
        }
        let ctx = Context::new(ctx);
        point(&ctx, &registration, tick.point_ms);
    }));
}

/// One point of the schedule: runs it (or not), then arms the next.
fn point(ctx: &Context, registration: &Arc<Registration>, point_ms: u64) {
    let Some(trigger) = trigger(registration) else {
        return;
    };
    // A hop of a long wait (or a clock that is behind): not the point yet.
    let now = now_ms();
    if now < point_ms {
        arm(registration, point_ms, now);
        return;
    }
    if runs_here(ctx, registration) {
        match key::holds(ctx, registration, trigger) {
            key::Holder::Elsewhere => {}
            key::Holder::This => run_point(registration, trigger, point_ms),
            key::Holder::Gone => {
                log(
                    ctx,
                    registration,
                    RedisLogLevel::Notice,
                    "its key was deleted or overwritten: the timer ends",
                );
                super::commands::unregister_everywhere(ctx, &registration.id, false);
                return;
            }
        }
    }
    if registration.is_removed() {
        return;
    }
    let now = now_ms();
    let next = match &trigger.schedule {
        // Every interval from the last point; after a long stall, from now.
        Schedule::Every(millis) => Some(point_ms.saturating_add(*millis))
            .filter(|next| *next > now)
            .or_else(|| now.checked_add(*millis)),
        cron => cron.next_after(point_ms.max(now)),
    };
    match next {
        Some(next) => arm(registration, next, now),
        None => log_once(registration, "its schedule has no next point: it stops"),
    }
}

/// True where this point runs: on a master that is not loading, while the registration is not
/// paused; a sync timer also waits for the end of a client pause (it could not write).
fn runs_here(ctx: &Context, registration: &Registration) -> bool {
    // SAFETY: a plain query of the server's state.
    let flags = unsafe { raw::RedisModule_GetContextFlags.unwrap()(ctx.ctx) } as u32;
    let master = flags & raw::REDISMODULE_CTX_FLAGS_MASTER != 0
        && flags & raw::REDISMODULE_CTX_FLAGS_LOADING == 0;
    let paused = registration.timer.as_ref().is_some_and(TimerState::paused);
    let sync_blocked =
        registration.mode() == ExecutionMode::Sync && crate::host::call::writes_paused();
    master && !paused && !sync_blocked
}

/// Runs the registration's plan for the point, as one execution.
fn run_point(registration: &Arc<Registration>, trigger: &TimerTrigger, point_ms: u64) {
    let db = super::sessions::db_of(&registration.session_id).unwrap_or(0);
    // A sync run stopped for holding the main thread too long (`BUSY ...`) ends the timer too:
    // at every point it would freeze the server again.
    let sync = registration.mode() == ExecutionMode::Sync;
    let stop_on_error = trigger.stop_on_error;
    let on_done: Option<run::OnDone> = (stop_on_error || sync).then(|| {
        let weak = Arc::downgrade(registration);
        Box::new(move |outcome: &Result<ExecutionOutcome, String>| {
            if let Some(error) = failure(outcome) {
                if stop_on_error || error.contains("BUSY the atomic block ran longer") {
                    stop_after_error(weak, error);
                }
            }
        }) as run::OnDone
    });
    let call = Call {
        record: trigger.record(point_ms),
        db,
        hook: None,
        answer: Answer::Results,
        client: None,
        on_done,
    };
    match registration.mode() {
        ExecutionMode::Sync => {
            // A callback that awaits: the run starts again on a worker.
            if let Err(call) = run::call_sync_or_move(registration, call) {
                run::call_async(registration, call, true);
            }
        }
        ExecutionMode::Async | ExecutionMode::AsyncLocal => {
            run::call_async(registration, call, true);
        }
    }
}

/// The first error of a run, if it failed.
fn failure(outcome: &Result<ExecutionOutcome, String>) -> Option<String> {
    match outcome {
        Err(error) => Some(error.clone()),
        Ok(outcome) => outcome.errors.first().cloned(),
    }
}

/// `stopOnError`: a failed run ends the timer (on the main thread, which may propagate it), as
/// RedisGears' time events stopped on an error.
fn stop_after_error(registration: Weak<Registration>, error: String) {
    on_main_thread_soon(move || {
        let (Some(registration), Some(gears)) = (registration.upgrade(), crate::gears()) else {
            return;
        };
        if registration.is_removed() {
            return;
        }
        let ctx = Context::new(gears.log_context.0);
        log(
            &ctx,
            &registration,
            RedisLogLevel::Warning,
            &format!("a run failed, so the timer ends: {error}"),
        );
        super::commands::unregister_everywhere(&ctx, &registration.id, false);
    });
}

fn log(ctx: &Context, registration: &Registration, level: RedisLogLevel, text: &str) {
    ctx.log(
        level,
        &format!("GEARS: timer registration {}: {text}", registration.id),
    );
}

fn log_once(registration: &Registration, text: &str) {
    if let Some(gears) = crate::gears() {
        gears.log_context.log(
            RedisLogLevel::Warning,
            &format!("GEARS: timer registration {}: {text}", registration.id),
        );
    }
}
