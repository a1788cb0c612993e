//! Subscribing to the server's events (`RedisModule_SubscribeToServerEvent`), at load.

use std::os::raw::c_int;

use redis_module::{raw, Context};

/// Subscribes `callback` to the server event `id` (during load; the callback lives as long as
/// the module and must not unwind). `what` names the event in the error.
pub(crate) fn subscribe_server_event(
    ctx: &Context,
    id: u64,
    callback: raw::RedisModuleEventCallback,
    what: &str,
) -> Result<(), String> {
    let event = raw::RedisModuleEvent { id, dataver: 1 };
    // SAFETY: a module API call during load with a callback that lives as long as the module.
    let status =
        unsafe { raw::RedisModule_SubscribeToServerEvent.unwrap()(ctx.ctx, event, callback) };
    if status == raw::REDISMODULE_OK as c_int {
        Ok(())
    } else {
        Err(format!("could not subscribe to {what}"))
    }
}
