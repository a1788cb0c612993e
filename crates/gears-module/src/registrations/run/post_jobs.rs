//! Post-notification jobs (Redis 7.2+, Valkey): a sync registration runs as one, right after
//! the command that raised its event, in that command's replication unit.

use std::cell::Cell;
use std::os::raw::{c_int, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, OnceLock};

use redis_module::raw;

use super::super::{Event, Registration};
use super::run_sync;

pub(super) type AddPostNotificationJob = unsafe extern "C" fn(
    *mut raw::RedisModuleCtx,
    Option<unsafe extern "C" fn(*mut raw::RedisModuleCtx, *mut c_void)>,
    *mut c_void,
    Option<unsafe extern "C" fn(*mut c_void)>,
) -> c_int;

static POST_JOB: OnceLock<Option<AddPostNotificationJob>> = OnceLock::new();

/// `RedisModule_AddPostNotificationJob`, where the server has it (looked up once, at load).
pub(super) fn post_notification_job() -> Option<AddPostNotificationJob> {
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

pub(super) fn in_post_job() -> bool {
    IN_POST_JOB.with(|in_job| in_job.get())
}

/// True if the server has post-notification jobs.
pub(in crate::registrations) fn post_jobs_available() -> bool {
    post_notification_job().is_some()
}

pub(super) unsafe extern "C" fn post_job(_ctx: *mut raw::RedisModuleCtx, data: *mut c_void) {
    // SAFETY: the pair boxed by `fire`, still owned by Redis (freed by `free_job`).
    let (registration, event) = unsafe { &*data.cast::<(Arc<Registration>, Event)>() };
    let event = Event {
        key: event.key.clone(),
        event: event.event.clone(),
        db: event.db,
        record: event.record.clone(),
        command: event.command.clone(),
    };
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // Events its writes raise inside this job run inline (a job's own jobs would run
        // after it anyway).
        let previous = IN_POST_JOB.with(|in_job| in_job.replace(true));
        run_sync(registration, event);
        IN_POST_JOB.with(|in_job| in_job.set(previous));
    }));
}

pub(super) unsafe extern "C" fn free_job(data: *mut c_void) {
    // SAFETY: boxed by `fire`; Redis frees each job's data once.
    drop(unsafe { Box::from_raw(data.cast::<(Arc<Registration>, Event)>()) });
}

/// Runs `job` as a post-notification job (inside the command whose keyspace event is being
/// handled, after its own work), where the server has them and this is not one already.
/// False: not added (the caller runs it another way).
pub(in crate::registrations) fn add_post_job(job: impl FnOnce() + Send + 'static) -> bool {
    type Job = Option<Box<dyn FnOnce() + Send>>;
    unsafe extern "C" fn run(_ctx: *mut raw::RedisModuleCtx, data: *mut c_void) {
        // SAFETY: boxed below; Redis frees it with `free` after this call.
        let job = unsafe { &mut *data.cast::<Job>() };
        if let Some(job) = job.take() {
            let previous = IN_POST_JOB.with(|in_job| in_job.replace(true));
            let _ = catch_unwind(AssertUnwindSafe(job));
            IN_POST_JOB.with(|in_job| in_job.set(previous));
        }
    }
    unsafe extern "C" fn free(data: *mut c_void) {
        // SAFETY: boxed below; Redis frees each job's data once.
        drop(unsafe { Box::from_raw(data.cast::<Job>()) });
    }
    let (Some(add), false) = (post_notification_job(), in_post_job()) else {
        return false;
    };
    let Some(ctx) = crate::gears().map(|g| g.log_context.0) else {
        return false;
    };
    let data = Box::into_raw(Box::new(Some(Box::new(job) as Box<dyn FnOnce() + Send>)));
    // SAFETY: the job's data is boxed here and freed by `free` (run or not).
    let added = unsafe { add(ctx, Some(run), data.cast(), Some(free)) };
    if added != raw::REDISMODULE_OK as c_int {
        // SAFETY: Redis refused the job, so the box is still ours.
        drop(unsafe { Box::from_raw(data) });
        return false;
    }
    true
}
