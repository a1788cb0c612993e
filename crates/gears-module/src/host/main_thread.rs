//! Work for Redis's main thread, from any thread.

use std::os::raw::c_void;

use redis_module::raw;

/// The longest a module timer is armed for; a longer wait is reached in hops. Redis 7.0's event
/// loop re-arms a timer event with `retval * 1000` in an `int`: a module timer of more than
/// 2,147,483 ms wrapped to the past and fired on every turn (the main thread spun at 100%).
pub(crate) const MAX_TIMER_MS: u64 = 30 * 60 * 1000;

/// Runs `f` on Redis's main thread, holding the Redis lock, soon: in a timer callback (a
/// one-shot event wakes the main thread and arms a 0 ms timer). Not in the one-shot event
/// itself: commands run there would stay in Redis 7.0's propagation queue (only a module
/// context, as a timer's, flushes it when it ends), and the server asserts.
pub(crate) fn on_main_thread_soon(f: impl FnOnce() + Send + 'static) {
    type Job = Box<dyn FnOnce() + Send>;
    unsafe extern "C" fn fire(_ctx: *mut raw::RedisModuleCtx, data: *mut c_void) {
        // SAFETY: boxed below, handed over once.
        let job = unsafe { Box::from_raw(data.cast::<Job>()) };
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
    }
    unsafe extern "C" fn arm(data: *mut c_void) {
        let armed = crate::gears().map(|g| g.log_context.0).is_some_and(|ctx| {
            // SAFETY: on the main thread; the timer's callback takes the box.
            unsafe { raw::RedisModule_CreateTimer.unwrap()(ctx, 0, Some(fire), data) };
            true
        });
        if !armed {
            // SAFETY: boxed below, not handed to a timer.
            drop(unsafe { Box::from_raw(data.cast::<Job>()) });
        }
    }
    let job: Box<Job> = Box::new(Box::new(f));
    let data = Box::into_raw(job);
    // SAFETY: the callback takes the box back; if the event can not be added, we do.
    let added = unsafe { raw::RedisModule_EventLoopAddOneShot.unwrap()(Some(arm), data.cast()) };
    if added != raw::REDISMODULE_OK as i32 {
        // SAFETY: not added, so the box is still ours.
        drop(unsafe { Box::from_raw(data) });
    }
}
