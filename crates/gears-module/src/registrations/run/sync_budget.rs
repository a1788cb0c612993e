//! How long sync runs may hold the server between two turns of its event loop.
//!
//! Each sync run is stopped after `AtomicBlockMaxTime`, but one command can raise many events
//! (`MSET` of 1,000 keys, a pipeline of 1,000 `SET`s read in one go) and each ran with the
//! whole limit: 1,000 runs of a looping callback held the server for 1,000 times the limit.
//! Now the sync runs between two turns of the event loop share the limit: once they have spent
//! it, the next ones in that turn fail at once with a `BUSY` error, and the turn ends (clients
//! are served) after at most about twice the limit. The budget is refilled when the event loop
//! is about to sleep (the server event `EventLoop`, `BEFORE_SLEEP`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use redis_module::{raw, Context};

/// Microseconds sync runs spent since the event loop last went to sleep.
static SPENT_MICROS: AtomicU64 = AtomicU64::new(0);
/// True once the event loop's turns are followed (else the budget is not applied: it would
/// never be refilled).
static FOLLOWED: AtomicBool = AtomicBool::new(false);

/// Follows the event loop's turns (at load). A server without the event keeps one limit per
/// run, as before.
pub(crate) fn subscribe(ctx: &Context) {
    let followed = crate::host::subscribe_server_event(
        ctx,
        raw::REDISMODULE_EVENT_EVENTLOOP,
        Some(on_event_loop),
        "event loop turns",
    );
    FOLLOWED.store(followed.is_ok(), Ordering::Release);
}

unsafe extern "C" fn on_event_loop(
    _ctx: *mut raw::RedisModuleCtx,
    _event: raw::RedisModuleEvent,
    subevent: u64,
    _data: *mut std::os::raw::c_void,
) {
    if subevent == raw::REDISMODULE_SUBEVENT_EVENTLOOP_BEFORE_SLEEP {
        SPENT_MICROS.store(0, Ordering::Relaxed);
    }
}

/// The error a sync run gets when the runs of this turn have spent `limit`
/// (`AtomicBlockMaxTime`; zero is no limit).
pub(super) fn spent(limit: Duration) -> Option<String> {
    if limit.is_zero() || !FOLLOWED.load(Ordering::Acquire) {
        return None;
    }
    let spent = SPENT_MICROS.load(Ordering::Relaxed);
    (spent >= limit.as_micros() as u64).then(|| {
        format!(
            "BUSY sync runs held the server for {} ms without a break (AtomicBlockMaxTime is {} \
             ms): this one did not run",
            spent / 1000,
            limit.as_millis()
        )
    })
}

/// Counts a sync run's time against this turn's budget.
pub(super) fn spend(duration: Duration) {
    let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
    let _ = SPENT_MICROS.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |spent| {
        Some(spent.saturating_add(micros))
    });
}
