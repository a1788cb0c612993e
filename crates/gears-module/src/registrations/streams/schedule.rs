//! When a StreamReader registration runs on a stream: a full batch, a partial one past
//! `duration`, a retry after a failure; and pausing, unpausing and stopping it.

use std::os::raw::c_void;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use gears_core::ExecutionMode;
use redis_module::raw;

use super::super::{lock, Registration};
use super::{consume, on_main_thread, predecessor_busy, trigger, Cursor, Status};
use crate::host::{on_main_thread_soon, MAX_TIMER_MS};

/// Starts a job on the cursor if its registration may run and a batch is ready (a full batch,
/// a partial one past `duration`, entries to flush, or pending entries to recover); otherwise
/// arms the `duration` timer if a partial batch waits.
pub(super) fn schedule(registration: &Arc<Registration>, cursor: &Arc<Cursor>, from_event: bool) {
    let (Some(trigger), Some(state)) = (trigger(registration), &registration.stream) else {
        return;
    };
    if state.status() != Status::Ok || registration.is_removed() {
        return;
    }
    // A cursor dropped since (its stream was deleted; a timer or a re-arm still held it): the
    // stream's current cursor, if any, runs on its own.
    if !state
        .cursor(cursor.db, &cursor.key)
        .is_some_and(|current| Arc::ptr_eq(&current, cursor))
    {
        return;
    }
    let duration = Duration::from_millis(trigger.duration_ms);
    let mut cursor_state = lock(&cursor.state);
    if cursor_state.busy || cursor_state.paused_retry {
        return;
    }
    let waited = cursor_state
        .waiting_since
        .map(|since| since.elapsed())
        .unwrap_or_default();
    let ready = match cursor_state.undelivered {
        None => true,
        Some(0) => false,
        Some(n) => {
            cursor_state.flush
                || n >= trigger.batch
                || (trigger.duration_ms > 0 && waited >= duration)
        }
    };
    if !ready {
        let waiting = cursor_state.undelivered.unwrap_or(0) > 0;
        if trigger.duration_ms > 0 && waiting && !cursor_state.timer {
            cursor_state.timer = true;
            drop(cursor_state);
            arm_timer(registration, cursor, duration.saturating_sub(waited));
        }
        return;
    }
    cursor_state.busy = true;
    drop(cursor_state);
    start(registration, cursor.clone(), from_event);
}

/// Runs a job on the cursor: on a worker (`async`), or (`sync`) inside the command that added
/// the entries: as a post-notification job where the server has them, else inside the event;
/// from a timer, on the main thread.
fn start(registration: &Arc<Registration>, cursor: Arc<Cursor>, from_event: bool) {
    let Some(gears) = crate::gears() else {
        return;
    };
    if predecessor_busy(registration, &cursor) {
        // The code it upgraded still runs a batch here: try again in a moment.
        lock(&cursor.state).busy = false;
        arm_timer(registration, &cursor, Duration::from_millis(10));
        return;
    }
    let registration = registration.clone();
    if registration.mode() != ExecutionMode::Sync {
        gears
            .workers
            .submit(move || consume::job(&registration, &cursor));
        return;
    }
    if from_event {
        // On any thread: the event's command (a client's, or an execution's `execute()` on a
        // worker) runs it when its own work is done.
        if super::super::run::post_jobs_available() {
            let (r, c) = (registration.clone(), cursor.clone());
            if super::super::run::add_post_job(move || consume::job(&r, &c)) {
                return;
            }
        }
        // Redis 7.0 (no post-notification jobs), or an event inside a job: not inside the
        // event, where the group's commands would reach replicas and the AOF before the XADD
        // that made the stream (a replica would have no group), but right after, from a timer.
        on_main_thread_soon(move || consume::job(&registration, &cursor));
        return;
    }
    if on_main_thread() {
        consume::job(&registration, &cursor);
        return;
    }
    on_main_thread_soon(move || consume::job(&registration, &cursor));
}

/// Arms the cursor's `duration` timer (on the main thread, where timers live).
///
/// The timer holds its registration and cursor weakly: an unregistered registration (its plan,
/// and what the plan's functions hold) is freed at once, not when the timer fires, up to
/// [`MAX_TIMER_MS`] later.
pub(super) fn arm_timer(registration: &Arc<Registration>, cursor: &Arc<Cursor>, wait: Duration) {
    let pair = Box::new((Arc::downgrade(registration), Arc::downgrade(cursor)));
    let arm = move || {
        unsafe extern "C" fn fire(_ctx: *mut raw::RedisModuleCtx, data: *mut c_void) {
            // SAFETY: boxed by `arm_timer`, handed over once.
            let pair = unsafe { Box::from_raw(data.cast::<(Weak<Registration>, Weak<Cursor>)>()) };
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let (Some(registration), Some(cursor)) = (pair.0.upgrade(), pair.1.upgrade())
                else {
                    return;
                };
                {
                    let mut cursor_state = lock(&cursor.state);
                    cursor_state.timer = false;
                    cursor_state.paused_retry = false;
                }
                schedule(&registration, &cursor, false);
            }));
        }
        let ctx = crate::gears().map(|g| g.log_context.0);
        let Some(ctx) = ctx else {
            return;
        };
        let data = Box::into_raw(pair);
        // SAFETY: on the main thread; the callback takes the box back.
        unsafe {
            raw::RedisModule_CreateTimer.unwrap()(
                ctx,
                // A longer `duration` is reached in hops: `schedule` arms the rest.
                wait.as_millis().min(u128::from(MAX_TIMER_MS)) as i64,
                Some(fire),
                data.cast(),
            );
        }
    };
    on_main_thread_soon(arm);
}

/// A job that could not write (clients paused) runs again in a moment.
pub(super) fn retry_soon(registration: &Arc<Registration>, cursor: &Arc<Cursor>) {
    lock(&cursor.state).paused_retry = true;
    arm_timer(registration, cursor, Duration::from_millis(100));
}

/// After a job: lets the cursor run again if more is ready (on the main thread, which sees the
/// events that arrived meanwhile in order).
pub(super) fn rearm(registration: &Arc<Registration>, cursor: &Arc<Cursor>) {
    let (registration, cursor) = (registration.clone(), cursor.clone());
    on_main_thread_soon(move || schedule(&registration, &cursor, false));
}

/// A failed batch stopped the registration (`abort`, `retry`, a `PAUSE` error): its cursors
/// recover their pending entries when it runs again.
pub(super) fn stop(registration: &Arc<Registration>, status: Status) {
    let Some(state) = &registration.stream else {
        return;
    };
    state.set_status(status);
    for cursor in state.cursors() {
        let mut cursor_state = lock(&cursor.state);
        cursor_state.undelivered = None;
    }
    if status == Status::WaitingForRetry && !state.retrying.swap(true, Ordering::AcqRel) {
        let seconds = trigger(registration).map_or(1, |t| t.retry_interval);
        let registration = registration.clone();
        on_main_thread_soon(move || retry_after(registration, seconds));
    }
}

/// The shortest wait before a retry (`onFailedRetryInterval=0`).
const MIN_RETRY_MS: u64 = 100;

/// Arms the retry timer of a registration waiting after a failure.
pub(super) fn retry_after(registration: Arc<Registration>, seconds: u64) {
    // At least MIN_RETRY_MS apart: `onFailedRetryInterval=0` retries at once, not in a loop.
    let millis = seconds.saturating_mul(1000).max(MIN_RETRY_MS);
    let now = Instant::now();
    let due = now
        .checked_add(Duration::from_millis(millis))
        .unwrap_or(now + Duration::from_secs(100 * 365 * 24 * 3600));
    retry_at(registration, due);
}

/// Arms the retry timer for `due`, in hops of at most [`MAX_TIMER_MS`]. The timer holds the
/// registration weakly (see [`arm_timer`]).
fn retry_at(registration: Arc<Registration>, due: Instant) {
    unsafe extern "C" fn fire(_ctx: *mut raw::RedisModuleCtx, data: *mut c_void) {
        // SAFETY: boxed by `retry_at`, handed over once.
        let boxed = unsafe { Box::from_raw(data.cast::<(Weak<Registration>, Instant)>()) };
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let (registration, due) = *boxed;
            let Some(registration) = registration.upgrade() else {
                return;
            };
            let Some(state) = &registration.stream else {
                return;
            };
            if registration.is_removed() {
                state.retrying.store(false, Ordering::Release);
                return;
            }
            // A hop of a long interval: not yet.
            if Instant::now() < due {
                retry_at(registration, due);
                return;
            }
            state.retrying.store(false, Ordering::Release);
            if state.status() == Status::WaitingForRetry {
                state.set_status(Status::Ok);
                resume(&registration);
            }
        }));
    }
    let Some(ctx) = crate::gears().map(|g| g.log_context.0) else {
        return;
    };
    let wait = due.saturating_duration_since(Instant::now());
    let millis = (wait.as_millis().min(u128::from(MAX_TIMER_MS)) as i64).max(1);
    let data = Box::into_raw(Box::new((Arc::downgrade(&registration), due)));
    // SAFETY: on the main thread; the callback takes the box back.
    unsafe {
        raw::RedisModule_CreateTimer.unwrap()(ctx, millis, Some(fire), data.cast());
    }
}

/// `RG.PAUSEREGISTRATIONS`: a running or retrying registration stops after its batches in
/// flight (an aborted one stays aborted).
pub(crate) fn pause(registration: &Arc<Registration>) {
    if let Some(state) = &registration.stream {
        let mut status = lock(&state.status);
        if matches!(*status, Status::Ok | Status::WaitingForRetry) {
            *status = Status::Paused;
        }
    }
}

/// `RG.UNPAUSEREGISTRATIONS`: the registration runs again, from its pending entries. Unpausing
/// a running registration changes nothing.
pub(crate) fn unpause(registration: &Arc<Registration>) {
    if let Some(state) = &registration.stream {
        let mut status = lock(&state.status);
        if *status == Status::Ok {
            return;
        }
        *status = Status::Ok;
        drop(status);
        resume(registration);
    }
}

/// Runs the registration again on the streams it knows (events made cursors for new streams
/// while it was stopped): each recovers its pending entries, then runs what waits. No keyspace
/// scan (that is for a start: registration, loading, promotion, flush).
pub(super) fn resume(registration: &Arc<Registration>) {
    let Some(state) = &registration.stream else {
        return;
    };
    for cursor in state.recover_all(false) {
        let (registration, cursor) = (registration.clone(), cursor.clone());
        on_main_thread_soon(move || schedule(&registration, &cursor, false));
    }
}
