//! The client an execution answers.

use redis_module::{raw, Context};

/// A client blocked by a command, answered from a worker thread. Rust owns it (never a script
/// object), and dropping it always unblocks the client, with an error reply if none was sent.
pub(crate) struct BlockedReply {
    client: *mut raw::RedisModuleBlockedClient,
    replied: bool,
}

// SAFETY: blocked clients are made to be answered from other threads.
unsafe impl Send for BlockedReply {}

impl BlockedReply {
    /// Blocks the client of `ctx` (called on Redis's main thread). A client inside MULTI, a
    /// script (Lua, or Gears' own `execute()`), or one that may not block is refused with
    /// `error`: Redis asserts on a module that blocks it.
    pub fn block(ctx: &Context, error: &'static str) -> Result<Self, redis_module::RedisError> {
        if !may_block(ctx) {
            return Err(redis_module::RedisError::Str(error));
        }
        // SAFETY: plain RedisModule_BlockClient with no callbacks and no timeout, for a client
        // that may block.
        let client = unsafe { raw::RedisModule_BlockClient.unwrap()(ctx.ctx, None, None, None, 0) };
        Ok(BlockedReply {
            client,
            replied: false,
        })
    }

    /// Sends the reply and unblocks the client.
    pub fn reply(mut self, value: &gears_core::ReplyValue) {
        self.send(value);
    }

    /// The blocked client's handle, to recognise it in a disconnect callback.
    pub fn id(&self) -> usize {
        self.client as usize
    }

    /// Calls `callback` (on Redis's main thread) if the client disconnects before its reply.
    pub fn on_disconnect(&self, callback: raw::RedisModuleDisconnectFunc) {
        // SAFETY: a live blocked client.
        unsafe { raw::RedisModule_SetDisconnectCallback.unwrap()(self.client, callback) };
    }

    /// Starts counting the time work for this client takes, so that `SLOWLOG` and
    /// `INFO commandstats` show the command's real duration (not only its parsing).
    pub fn measure_start(&self) {
        // SAFETY: a live blocked client.
        unsafe { raw::RedisModule_BlockedClientMeasureTimeStart.unwrap()(self.client) };
    }

    pub fn measure_end(&self) {
        // SAFETY: a live blocked client.
        unsafe { raw::RedisModule_BlockedClientMeasureTimeEnd.unwrap()(self.client) };
    }

    fn send(&mut self, value: &gears_core::ReplyValue) {
        if self.replied {
            return;
        }
        self.replied = true;
        // SAFETY: a thread-safe context bound to the blocked client collects the reply, which
        // Redis hands to the client when it is unblocked; replying needs no lock.
        unsafe {
            let ctx = raw::RedisModule_GetThreadSafeContext.unwrap()(self.client);
            crate::reply::write(ctx, value);
            raw::RedisModule_FreeThreadSafeContext.unwrap()(ctx);
            raw::RedisModule_UnblockClient.unwrap()(self.client, std::ptr::null_mut());
        }
    }
}

impl Drop for BlockedReply {
    fn drop(&mut self) {
        self.send(&gears_core::ReplyValue::Error(
            "Gears internal error: the execution ended without a reply".into(),
        ));
    }
}

/// Whether the client of `ctx` may be blocked: not inside MULTI, a Lua script or a module's
/// call, and not where Redis denies blocking.
pub(crate) fn may_block(ctx: &Context) -> bool {
    use redis_module::ContextFlags;
    let flags = ctx.get_flags();
    !(flags.contains(ContextFlags::MULTI)
        || flags.contains(ContextFlags::LUA)
        || flags.contains(ContextFlags::DENY_BLOCKING))
}
