//! A small pool of thread-safe contexts for [`RedisHost`](super::RedisHost)s.
//!
//! Each context carries a fake client that the server creates and frees with it (a few
//! microseconds each), and a registration runs one execution per event: reusing contexts keeps
//! that cost off every event. A context holds no state between executions that matters: its
//! database is selected anew, and every command is run as the execution's user.

use std::sync::Mutex;

use redis_module::raw;

/// Contexts kept for reuse; more are freed.
const KEPT: usize = 16;

struct Pool(Vec<*mut raw::RedisModuleCtx>);

// SAFETY: the contexts are detached thread-safe contexts, usable from any thread under the
// Redis lock; the pool only stores the pointers.
unsafe impl Send for Pool {}

static POOL: Mutex<Pool> = Mutex::new(Pool(Vec::new()));

/// A detached thread-safe context, from the pool or new.
pub(super) fn take() -> *mut raw::RedisModuleCtx {
    let reused = POOL.lock().ok().and_then(|mut pool| pool.0.pop());
    // SAFETY: a detached thread-safe context, given back (or freed) by `give_back`.
    reused.unwrap_or_else(|| unsafe {
        raw::RedisModule_GetThreadSafeContext.unwrap()(std::ptr::null_mut())
    })
}

/// Returns a context taken with [`take`], freeing it if the pool is full.
pub(super) fn give_back(context: *mut raw::RedisModuleCtx) {
    if let Ok(mut pool) = POOL.lock() {
        if pool.0.len() < KEPT {
            pool.0.push(context);
            return;
        }
    }
    // SAFETY: a context of `take`, used by nobody after this.
    unsafe { raw::RedisModule_FreeThreadSafeContext.unwrap()(context) };
}
