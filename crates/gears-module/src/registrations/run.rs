//! Running a registration's pipeline for one event, as one execution (`registered` = 1).
//!
//! `sync` runs on the thread of the event, holding the Redis lock, before the command that
//! raised the event replies: its writes are visible to the client's next command. On servers
//! with post-notification jobs (Redis 7.2+, Valkey) it runs as one, right after the command's
//! own work and in its replication unit (the command first, then the registration's writes);
//! on Redis 7.0 it runs inside the notification, as RedisGears 1.2 did (its writes replicate
//! before the command that raised the event). `async` and
//! `async_local` queue the event on the registration (at most
//! `MaxPendingEventsPerRegistration`; past that an event is refused, counted and logged) and one
//! worker job at a time drains the queue in order, a slice of events per job so that other
//! executions get workers too.

use std::cell::Cell;
use std::os::raw::{c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use gears_core::control::{ControlScope, ExecutionControl, ABORTED};
use gears_core::{encode_outcome, ExecutionMode, Executor, VecReader};
use redis_module::logging::RedisLogLevel;
use redis_module::raw;

use super::events::Running;
use super::{keys_trigger, lock, Event, Registration};
use crate::config::{
    MAX_EXECUTIONS_PER_REGISTRATION, MAX_PENDING_EVENTS, PROFILE_EXECUTIONS,
    SYNC_REGISTRATION_WRITES,
};
use crate::executions::{stats, Finished};
use crate::host::{Access, Caller, RedisHost, SyncRun};

/// Events one worker job runs before it lets other jobs take the worker.
const EVENTS_PER_JOB: usize = 256;

/// Runs (`sync`) or queues (`async`, `async_local`) the registration for one event.
pub(super) fn fire(ctx: *mut raw::RedisModuleCtx, registration: &Arc<Registration>, event: Event) {
    if registration.is_removed() {
        return;
    }
    match registration.mode() {
        ExecutionMode::Sync => match post_notification_job() {
            Some(add) if !in_post_job() => {
                let job = Box::into_raw(Box::new((registration.clone(), event)));
                // SAFETY: the job's data is boxed here and freed by `free_job` (run or not).
                let added = unsafe { add(ctx, Some(post_job), job.cast(), Some(free_job)) };
                if added != raw::REDISMODULE_OK as c_int {
                    // SAFETY: Redis refused the job, so the box is still ours.
                    let (registration, event) = *unsafe { Box::from_raw(job) };
                    if event.record.is_some() {
                        // A key being removed: nothing may write now; run it after, on a
                        // worker.
                        enqueue(&registration, event);
                    } else {
                        run_sync(&registration, event);
                    }
                }
            }
            // A key being removed on a server without jobs (none has the key event without
            // them): never write inside the removal.
            _ if event.record.is_some() && !in_post_job() => enqueue(registration, event),
            _ => run_sync(registration, event),
        },
        ExecutionMode::Async | ExecutionMode::AsyncLocal => enqueue(registration, event),
    }
}

fn run_sync(registration: &Arc<Registration>, event: Event) {
    // An event raised by its own writes does not run it again.
    let Some(_running) = Running::enter(&registration.id) else {
        return;
    };
    let _sync = SyncRun::enter();
    run_event(registration, event, true);
}

type AddPostNotificationJob = unsafe extern "C" fn(
    *mut raw::RedisModuleCtx,
    Option<unsafe extern "C" fn(*mut raw::RedisModuleCtx, *mut c_void)>,
    *mut c_void,
    Option<unsafe extern "C" fn(*mut c_void)>,
) -> c_int;

static POST_JOB: OnceLock<Option<AddPostNotificationJob>> = OnceLock::new();

/// `RedisModule_AddPostNotificationJob`, where the server has it (looked up once, at load).
fn post_notification_job() -> Option<AddPostNotificationJob> {
    *POST_JOB.get_or_init(|| {
        let mut function: *mut c_void = std::ptr::null_mut();
        // SAFETY: asks the server for an API function by name; null if it has none.
        let found = unsafe {
            raw::RedisModule_GetApi.is_some_and(|get_api| {
                get_api(
                    c"RedisModule_AddPostNotificationJob".as_ptr(),
                    (&mut function as *mut *mut c_void).cast(),
                ) == raw::REDISMODULE_OK as c_int
            })
        };
        // SAFETY: the server's function of this name has this signature.
        (found && !function.is_null()).then(|| unsafe {
            std::mem::transmute::<*mut c_void, AddPostNotificationJob>(function)
        })
    })
}

/// Looks the server's post-notification jobs up (at load, on the main thread).
pub(crate) fn detect_post_notification_jobs() -> bool {
    post_notification_job().is_some()
}

thread_local! {
    static IN_POST_JOB: Cell<bool> = const { Cell::new(false) };
}

fn in_post_job() -> bool {
    IN_POST_JOB.with(|in_job| in_job.get())
}

unsafe extern "C" fn post_job(_ctx: *mut raw::RedisModuleCtx, data: *mut c_void) {
    // SAFETY: the pair boxed by `fire`, still owned by Redis (freed by `free_job`).
    let (registration, event) = unsafe { &*data.cast::<(Arc<Registration>, Event)>() };
    let event = Event {
        key: event.key.clone(),
        event: event.event.clone(),
        db: event.db,
        record: event.record.clone(),
    };
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // Events its writes raise inside this job run inline (a job's own jobs would run
        // after it anyway).
        let previous = IN_POST_JOB.with(|in_job| in_job.replace(true));
        run_sync(registration, event);
        IN_POST_JOB.with(|in_job| in_job.set(previous));
    }));
}

unsafe extern "C" fn free_job(data: *mut c_void) {
    // SAFETY: boxed by `fire`; Redis frees each job's data once.
    drop(unsafe { Box::from_raw(data.cast::<(Arc<Registration>, Event)>()) });
}

fn enqueue(registration: &Arc<Registration>, event: Event) {
    let Some(gears) = crate::gears() else {
        return;
    };
    let max = gears.config.integer(MAX_PENDING_EVENTS).max(1) as usize;
    // Queued events are Gears' memory too: past MemoryLimit they are refused like a full queue.
    let limit = gears_core::memory::global_limit();
    let over_memory = limit > 0 && gears_core::memory::total_used() > limit as i64;
    {
        let mut queue = lock(&registration.queue);
        if queue.len() >= max || over_memory {
            drop(queue);
            let mut stats = lock(&registration.stats);
            stats.dropped += 1;
            stats.failures += 1;
            stats.triggered += 1;
            let error = if over_memory {
                format!(
                    "Gears used more than its memory limit of {limit} bytes (MemoryLimit): an \
                     event on a key was dropped"
                )
            } else {
                format!(
                    "the registration's event queue is full ({max} events wait, \
                     MaxPendingEventsPerRegistration): an event on a key was dropped"
                )
            };
            // Logged once per full queue, not once per event.
            if stats.dropped == 1 || stats.last_error.as_deref() != Some(error.as_str()) {
                gears.log_context.log(
                    RedisLogLevel::Warning,
                    &format!("GEARS: registration {}: {error}", registration.id),
                );
            }
            stats.last_error = Some(error);
            return;
        }
        queue.push_back(event);
    }
    if !registration.draining.swap(true, Ordering::AcqRel) {
        submit_drain(registration.clone());
    }
}

fn submit_drain(registration: Arc<Registration>) {
    if let Some(gears) = crate::gears() {
        gears.workers.submit(move || drain(registration));
    }
}

/// Runs queued events in order, at most [`EVENTS_PER_JOB`], then queues itself again if more
/// wait.
fn drain(registration: Arc<Registration>) {
    stats::worker_busy();
    let mut ran = 0;
    loop {
        if ran == EVENTS_PER_JOB {
            stats::worker_free();
            submit_drain(registration);
            return;
        }
        let next = lock(&registration.queue).pop_front();
        match next {
            Some(event) => {
                run_event(&registration, event, false);
                ran += 1;
            }
            None => {
                registration.draining.store(false, Ordering::Release);
                // An event queued after the pop found the flag still set: take it on.
                let more = !lock(&registration.queue).is_empty();
                if !more || registration.draining.swap(true, Ordering::AcqRel) {
                    stats::worker_free();
                    return;
                }
            }
        }
    }
}

/// Runs the registration's plan over the event's record, as one execution. A `sync` run holds
/// the Redis lock all along, so it is timed like an atomic block (`AtomicBlockMaxTime`).
fn run_event(registration: &Arc<Registration>, event: Event, sync: bool) {
    let Some(gears) = crate::gears() else {
        return;
    };
    let Some(trigger) = keys_trigger(registration) else {
        return;
    };
    let caller = Caller {
        user: registration.user.clone(),
        db: event.db,
    };
    let control = ExecutionControl::new(gears.execution_limits());
    if sync {
        control.begin_atomic();
    }
    let _control_scope = ControlScope::enter(&control);
    // Inside a notification (Redis 7.0) a sync run writes only if the operator accepts the risk.
    let access = if sync
        && !in_post_job()
        && post_notification_job().is_none()
        && !gears.config.flag(SYNC_REGISTRATION_WRITES)
    {
        Access::InsideNotification
    } else {
        Access::ReadWrite
    };
    let host = Arc::new(RedisHost::new(&caller, access, control.clone()));
    let _host_scope = registration.session_host.enter(&host);
    let started = Instant::now();
    let record = catch_unwind(AssertUnwindSafe(|| match event.record {
        // Read (and checked against the user's rights) when the key was about to go away.
        Some(record) => Ok(Some(record)),
        None => {
            crate::readers::event_record(&host, &event.key, &event.event, trigger.read_value, sync)
        }
    }))
    .unwrap_or_else(|_| {
        Err(gears_core::GearsError::Internal(
            "reading the event's key failed".into(),
        ))
    });
    let record = match record {
        // The registration's user may not read this key: not their event.
        Ok(None) => {
            host.finish();
            return;
        }
        Ok(Some(record)) => Ok(record),
        Err(e) => Err(e.to_string()),
    };
    let execution = gears.executions.create_registered(
        registration.language,
        caller,
        control.clone(),
        gears.config.flag(PROFILE_EXECUTIONS),
    );
    let plan = registration.spec.plan.clone();
    execution.set_plan(plan.clone(), registration.step_args.clone());
    let outcome = record.and_then(|record| {
        catch_unwind(AssertUnwindSafe(|| {
            Executor::new(plan, registration.session.clone())
                .observed(execution.progress.clone())
                .run(&mut VecReader::new(vec![record], 1))
        }))
        .map_err(|_| "Gears internal error while running the registration".to_string())
    });
    host.finish();
    control.end_atomic();
    let duration = started.elapsed();
    let aborted = control.stop_message().as_deref() == Some(ABORTED);
    let (finished, error) = match outcome {
        Ok(outcome) => {
            let error = outcome.errors.first().cloned();
            stats::errors(outcome.errors.len() as u64);
            (Finished::ran(encode_outcome(&outcome)), error)
        }
        Err(error) => (Finished::failed(error.clone()), Some(error)),
    };
    if error.is_some() {
        stats::failed();
    }
    registration.record_run(duration, error, aborted);
    let id = execution.id.clone();
    execution.finish(finished);
    let max = gears.config.integer(MAX_EXECUTIONS_PER_REGISTRATION).max(0) as usize;
    registration.keep_execution(id, max);
}
