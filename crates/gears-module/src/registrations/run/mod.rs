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
//!
//! A command (`RG.TRIGGER`, a hooked command) runs a registration the same way with the record
//! it gives ([`Call`]): `sync` on the calling thread, the others on a worker (through the queue
//! with `inorder`, else as a job of their own) while the client waits for the results.

use std::cell::Cell;
use std::os::raw::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use gears_core::control::{ControlScope, ExecutionControl, ABORTED};
use gears_core::{
    encode_outcome, ExecutionMode, ExecutionOutcome, Executor, Record, RecordReader, VecReader,
};
use redis_module::logging::RedisLogLevel;
use redis_module::raw;

use super::events::Running;
use super::hooks::HookCall;
use super::{keys_trigger, lock, Event, Input, Registration};
use crate::config::{
    MAX_EXECUTIONS_PER_REGISTRATION, MAX_PENDING_EVENTS, PROFILE_EXECUTIONS,
    SYNC_REGISTRATION_WRITES,
};
use crate::executions::{stats, Finished};
use crate::host::{Access, Caller, RedisHost, SyncRun, MOVED};
use crate::readers::Ahead;

/// How deep registration runs may nest on one thread (a run's command runs another).
const MAX_NESTING: usize = 8;

thread_local! {
    /// The sessions whose registrations run on this thread, innermost last.
    static RUNNING_SESSIONS: std::cell::RefCell<Vec<usize>> = const { std::cell::RefCell::new(Vec::new()) };
    /// The registrations running on this thread (their addresses), innermost last: an event
    /// their own writes raise does not queue them again.
    static RUNNING_REGISTRATIONS: std::cell::RefCell<Vec<usize>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// True if `registration` runs on this thread (the event comes from its own writes).
fn runs_here(registration: &Arc<Registration>) -> bool {
    let address = Arc::as_ptr(registration) as usize;
    RUNNING_REGISTRATIONS.with(|running| running.borrow().contains(&address))
}

thread_local! {
    /// Set by a caller that can start a sync run again in the background (a client that may
    /// block, a timer, a keyspace event); the next run on this thread takes it.
    static MOVABLE: Cell<bool> = const { Cell::new(false) };
}

/// Lets the next sync run on this thread move to the background (see [`call_sync_or_move`]).
struct Movable;

impl Movable {
    fn enter() -> Self {
        MOVABLE.with(|m| m.set(true));
        Movable
    }
}

impl Drop for Movable {
    fn drop(&mut self) {
        let _ = MOVABLE.try_with(|m| m.set(false));
    }
}

/// Pops this thread's innermost running session when dropped.
struct PopSession;

impl Drop for PopSession {
    fn drop(&mut self) {
        let _ = RUNNING_SESSIONS.try_with(|running| running.borrow_mut().pop());
        let _ = RUNNING_REGISTRATIONS.try_with(|running| running.borrow_mut().pop());
    }
}

mod calls;
mod post_jobs;
pub(crate) mod sync_budget;

use calls::run_call;
pub(crate) use calls::{call_async, call_sync, call_sync_or_move, Answer, Call, OnDone};
pub(crate) use post_jobs::detect_post_notification_jobs;
pub(super) use post_jobs::{add_post_job, post_jobs_available};
use post_jobs::{free_job, in_post_job, post_job, post_notification_job};

/// Events one worker job runs before it lets other jobs take the worker.
const EVENTS_PER_JOB: usize = 256;
/// Queued events whose records a worker reads under one hold of the Redis lock.
const READ_AHEAD: usize = 64;

/// Runs (`sync`) or queues (`async`, `async_local`) the registration for one event.
pub(super) fn fire(ctx: *mut raw::RedisModuleCtx, registration: &Arc<Registration>, event: Event) {
    if registration.is_removed() {
        return;
    }
    match registration.mode() {
        // Inside a hooked command: before it replies (`override_reply`).
        ExecutionMode::Sync if event.command.is_some() => run_sync(registration, event),
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
                        let _ = enqueue(&registration, Input::Key(event));
                    } else {
                        run_sync(&registration, event);
                    }
                }
            }
            // A key being removed on a server without jobs (none has the key event without
            // them): never write inside the removal.
            _ if event.record.is_some() && !in_post_job() => {
                let _ = enqueue(registration, Input::Key(event));
            }
            _ => run_sync(registration, event),
        },
        // Its own writes do not queue it again (RedisGears 1.2 looped without end).
        ExecutionMode::Async | ExecutionMode::AsyncLocal if runs_here(registration) => {}
        ExecutionMode::Async | ExecutionMode::AsyncLocal => {
            if let Err(refused) = enqueue(registration, Input::Key(event)) {
                drop(refused);
            }
        }
    }
}

/// Runs a sync registration for a keyspace event on this thread (it holds the Redis lock). A
/// registration with `commands=[...]` runs inside the hooked command, never as a
/// post-notification job: its `override_reply` must come before the command replies.
fn run_sync(registration: &Arc<Registration>, event: Event) {
    // An event raised by its own writes does not run it again.
    let Some(_running) = Running::enter(&registration.id) else {
        return;
    };
    let _sync = SyncRun::enter();
    // A run whose callback awaits starts again on a worker (RedisGears moved it to the
    // background); not one inside a hooked command, which must answer before it replies.
    let again = (event.command.is_none() && !in_transaction()).then(|| Event {
        key: event.key.clone(),
        event: event.event.clone(),
        db: event.db,
        record: event.record.clone(),
        command: None,
    });
    let movable = again.as_ref().map(|_| Movable::enter());
    let moved = run_key_event(registration, event);
    drop(movable);
    if let (true, Some(again)) = (moved, again) {
        let _ = enqueue(registration, Input::Key(again));
    }
}

/// True inside `MULTI`/`EXEC` or a Lua script (Redis 7.0 runs sync registrations there, inside
/// the notification): a run there may not move to the background (RedisGears 1.2's error).
fn in_transaction() -> bool {
    crate::gears().is_some_and(|gears| {
        // SAFETY: a plain query of the server's state (these flags are the server's, not the
        // context's).
        let flags =
            unsafe { raw::RedisModule_GetContextFlags.unwrap()(gears.log_context.0) } as u32;
        flags & (raw::REDISMODULE_CTX_FLAGS_MULTI | raw::REDISMODULE_CTX_FLAGS_LUA) != 0
    })
}

/// Queues an input for the registration's worker; a full queue refuses it (and gives it back).
fn enqueue(registration: &Arc<Registration>, input: Input) -> Result<(), (Input, String)> {
    let Some(gears) = crate::gears() else {
        return Ok(());
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
            stats.last_error = Some(error.clone());
            return Err((input, error));
        }
        queue.push_back(input);
    }
    if !registration.draining.swap(true, Ordering::AcqRel) {
        submit_drain(registration.clone());
    }
    Ok(())
}

fn submit_drain(registration: Arc<Registration>) {
    if let Some(gears) = crate::gears() {
        gears.workers.submit(move || drain(registration));
    }
}

/// Runs queued events in order, at most [`EVENTS_PER_JOB`] while other jobs wait for a worker
/// (then it queues itself again behind them).
fn drain(registration: Arc<Registration>) {
    stats::worker_busy();
    let mut ran = 0;
    loop {
        if ran == EVENTS_PER_JOB {
            // Other jobs wait: they get the worker, this drain queues again. Else it goes on
            // here (on one thread, a registration's executions are freed where they were made).
            if crate::gears().is_none_or(|gears| gears.workers.jobs_waiting()) {
                stats::worker_free();
                submit_drain(registration);
                return;
            }
            ran = 0;
        }
        let batch: Vec<Input> = {
            let mut queue = lock(&registration.queue);
            let take = queue.len().min(READ_AHEAD).min(EVENTS_PER_JOB - ran);
            queue.drain(..take).collect()
        };
        match batch.is_empty() {
            false => {
                for input in read_ahead(&registration, batch) {
                    run_event(&registration, input);
                    ran += 1;
                }
            }
            true => {
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

/// Reads the records of a batch of queued keyspace events under one hold of the Redis lock
/// (each run would take it once more to read its own); events the registration's user may not
/// read are dropped, as a run would drop them.
fn read_ahead(registration: &Arc<Registration>, batch: Vec<Input>) -> Vec<Input> {
    let (Some(gears), Some(trigger)) = (crate::gears(), keys_trigger(registration)) else {
        return batch;
    };
    let wanted: Vec<(&[u8], &str, i32)> = batch
        .iter()
        .filter_map(|input| match input {
            Input::Key(event) if event.record.is_none() => {
                Some((event.key.as_slice(), event.event.as_str(), event.db))
            }
            _ => None,
        })
        .collect();
    if wanted.len() < 2 {
        return batch;
    }
    let caller = Caller {
        user: registration.user.clone(),
        db: wanted[0].2,
    };
    let control = ExecutionControl::new(gears.execution_limits());
    let host = RedisHost::new(&caller, Access::ReadOnly, control);
    let read = catch_unwind(AssertUnwindSafe(|| {
        crate::readers::records_ahead(&host, &wanted, trigger.read_value)
    }));
    host.finish();
    let Ok(read) = read else {
        return batch;
    };
    let mut read = read.into_iter();
    batch
        .into_iter()
        .filter_map(|input| match input {
            Input::Key(mut event) if event.record.is_none() => match read.next() {
                Some(Ahead::Record(record)) => {
                    event.record = Some(record);
                    Some(Input::Key(event))
                }
                Some(Ahead::NotAllowed) => None,
                _ => Some(Input::Key(event)),
            },
            other => Some(other),
        })
        .collect()
}

/// Runs one input of the registration, as one execution.
fn run_event(registration: &Arc<Registration>, input: Input) {
    match input {
        Input::Key(event) => {
            run_key_event(registration, event);
        }
        Input::Call(mut call) => {
            let outcome = run_call(registration, &mut call);
            call.respond(&outcome);
        }
    }
}

/// Runs the registration's plan over a keyspace event's record; true if the run moved to the
/// background (it did nothing here).
fn run_key_event(registration: &Arc<Registration>, event: Event) -> bool {
    let Some(trigger) = keys_trigger(registration) else {
        return false;
    };
    let caller = Caller {
        user: registration.user.clone(),
        db: event.db,
    };
    let hook = event.command.clone().map(HookCall::keys);
    let read_value = trigger.read_value;
    let sync = SyncRun::active();
    // Inside a notification (Redis 7.0) a sync run writes only if the operator accepts the risk:
    // a write there could free what the command that raised the event is using.
    let access = match crate::gears() {
        Some(gears)
            if sync
                && !in_post_job()
                && post_notification_job().is_none()
                && !gears.config.flag(SYNC_REGISTRATION_WRITES) =>
        {
            Access::InsideNotification
        }
        _ => Access::ReadWrite,
    };
    let outcome = execute(registration, caller, hook, access, |host| {
        let record = catch_unwind(AssertUnwindSafe(|| match event.record {
            // Read (and checked against the user's rights) when the key was about to go away.
            Some(record) => Ok(Some(record)),
            // A sync run holds the Redis lock all along: it does not read a large value.
            None => crate::readers::event_record(host, &event.key, &event.event, read_value, sync),
        }))
        .unwrap_or_else(|_| {
            Err(gears_core::GearsError::Internal(
                "reading the event's key failed".into(),
            ))
        });
        match record {
            // The registration's user may not read this key: not their event.
            Ok(None) => None,
            Ok(Some(record)) => Some(Ok(record)),
            Err(e) => Some(Err(e.to_string())),
        }
    });
    matches!(outcome, Some(Err(e)) if e == MOVED)
}

/// Runs the registration's plan over the record `read` gives (`None`: no run), as one
/// execution acting as `caller`; records the run in the registration's statistics.
fn execute(
    registration: &Arc<Registration>,
    caller: Caller,
    hook: Option<Arc<HookCall>>,
    access: Access,
    read: impl FnOnce(&Arc<RedisHost>) -> Option<Result<Record, String>>,
) -> Option<Result<ExecutionOutcome, String>> {
    execute_reader(registration, caller, hook, access, |host| {
        read(host).map(|record| {
            record.map(|record| {
                Box::new(VecReader::new(vec![record], 1)) as Box<dyn RecordReader + '_>
            })
        })
    })
}

/// Runs the registration's plan over the records of the reader `open` gives (`None`: no run),
/// as one execution acting as `caller`; records the run in the registration's statistics.
pub(super) fn execute_reader<'r>(
    registration: &Arc<Registration>,
    caller: Caller,
    hook: Option<Arc<HookCall>>,
    access: Access,
    open: impl FnOnce(&Arc<RedisHost>) -> Option<Result<Box<dyn RecordReader + 'r>, String>>,
) -> Option<Result<ExecutionOutcome, String>> {
    let gears = crate::gears()?;
    // A run of a Lua or Rhai session already running on this thread would wait for itself
    // (their sessions are not reentrant; Python's are); and runs nest at most MAX_NESTING deep.
    let session = Arc::as_ptr(&registration.session) as *const () as usize;
    let reentrant = registration.language == gears_core::Language::Python;
    let nested = RUNNING_SESSIONS.with(|running| {
        let running = running.borrow();
        if !reentrant && running.contains(&session) {
            Some("ERR a registration can not run inside a run of its own script (the event came from its own session)".to_string())
        } else if running.len() >= MAX_NESTING {
            Some(format!("ERR registrations nested deeper than {MAX_NESTING}"))
        } else {
            None
        }
    });
    if let Some(error) = nested {
        registration.record_run(std::time::Duration::ZERO, Some(error.clone()), false);
        return Some(Err(error));
    }
    let limits = gears.execution_limits();
    // The sync runs of one turn of the event loop share AtomicBlockMaxTime.
    if let Some(error) = SyncRun::active()
        .then(|| sync_budget::spent(limits.atomic_max))
        .flatten()
    {
        registration.record_run(std::time::Duration::ZERO, Some(error.clone()), false);
        return Some(Err(error));
    }
    RUNNING_SESSIONS.with(|running| running.borrow_mut().push(session));
    RUNNING_REGISTRATIONS.with(|running| {
        running
            .borrow_mut()
            .push(Arc::as_ptr(registration) as usize)
    });
    let _running = PopSession;
    let control = ExecutionControl::new(limits);
    // A sync run holds the Redis lock all along: it is timed like an atomic block.
    if SyncRun::active() {
        control.begin_atomic();
    }
    let _control_scope = ControlScope::enter(&control);
    let mut host = RedisHost::new(&caller, access, control.clone());
    host.set_hook(hook);
    if SyncRun::active() && MOVABLE.with(|m| m.replace(false)) {
        host.allow_move();
    }
    let host = Arc::new(host);
    let _host_scope = registration.session_host.enter(&host);
    let started = Instant::now();
    let Some(reader) = open(&host) else {
        host.finish();
        return None;
    };
    let db = caller.db;
    let execution = gears.executions.create_registered(
        registration.language,
        caller,
        control.clone(),
        gears.config.flag(PROFILE_EXECUTIONS),
    );
    let plan = registration.spec.plan.clone();
    execution.set_plan(plan.clone(), registration.step_args.clone());
    // In a cluster, a plan that moves records runs on every shard (not a sync run: it holds
    // the Redis lock, and the other shards' records could not arrive).
    let distributed = match crate::cluster::participants(&plan) {
        Some(topology)
            if crate::cluster::moves_records(&plan)
                && registration.mode() == gears_core::ExecutionMode::Async
                && !SyncRun::active() =>
        {
            Some(crate::cluster::Distributed::start_registration(
                &topology,
                &execution.id,
                &registration.id,
                (&registration.user, db),
                &plan,
                &host,
            ))
        }
        _ => None,
    };
    let outcome = match distributed {
        Some(Err(e)) => Err(e),
        distributed => reader.and_then(|mut reader| {
            let distributed = distributed.and_then(Result::ok);
            let run = catch_unwind(AssertUnwindSafe(|| {
                let mut executor = Executor::new(plan, registration.session.clone())
                    .observed(execution.progress.clone());
                if let Some(distributed) = &distributed {
                    executor = executor.distributed(distributed.exchange.clone());
                }
                executor.run(&mut *reader)
            }))
            .map_err(|_| "Gears internal error while running the registration".to_string());
            match (run, distributed) {
                (Ok(mut outcome), Some(distributed)) => {
                    let (errors, aborted) = distributed.finish();
                    if aborted {
                        outcome.results.clear();
                    }
                    outcome.errors.extend(errors);
                    Ok(outcome)
                }
                (run, _) => run,
            }
        }),
    };
    host.finish();
    control.end_atomic();
    if host.moved() {
        // It starts again in the background: this attempt is not a run.
        gears.executions.drop_execution(&execution.id);
        return Some(Err(MOVED.to_string()));
    }
    let duration = started.elapsed();
    if SyncRun::active() {
        sync_budget::spend(duration);
    }
    let aborted = control.stop_message().as_deref() == Some(ABORTED);
    let (finished, error) = match &outcome {
        Ok(outcome) => {
            let error = outcome.errors.first().cloned();
            stats::errors(outcome.errors.len() as u64);
            (Finished::ran(encode_outcome(outcome)), error)
        }
        Err(error) => (Finished::failed(error.clone()), Some(error.clone())),
    };
    if error.is_some() {
        stats::failed();
    }
    registration.record_run(duration, error, aborted);
    let id = execution.id.clone();
    execution.finish(finished);
    let max = gears.config.integer(MAX_EXECUTIONS_PER_REGISTRATION).max(0) as usize;
    registration.keep_execution(id, max);
    Some(outcome)
}
