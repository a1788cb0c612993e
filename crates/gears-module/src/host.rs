//! [`RedisHost`]: how the core, the readers and the scripts reach Redis from a worker thread.

use gears_core::{GearsError, LogLevel, Record, RedisAccess, Result};
use redis_module::logging::{self, RedisLogLevel};
use redis_module::{raw, CallOptionsBuilder, CallReply, CallResult, Context};

/// Redis as seen from a worker thread: every access takes the Redis lock for as short a time as
/// it can, through one detached thread-safe context per host (redis-module's `lock()` would
/// create and free a context, with its fake client, on every lock).
pub(crate) struct RedisHost {
    context: *mut raw::RedisModuleCtx,
}

// SAFETY: a thread-safe context may be used from any thread; Gears only uses it while holding
// the Redis lock, which serialises all use.
unsafe impl Send for RedisHost {}
unsafe impl Sync for RedisHost {}

thread_local! {
    /// True while this thread holds the Redis lock (inside `with_lock` or an atomic block).
    static HOLDS_LOCK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// True while this thread is inside an atomic block.
    static IN_ATOMIC: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Releases the Redis lock when dropped, also on unwinding.
struct LockGuard(*mut raw::RedisModuleCtx);

impl Drop for LockGuard {
    fn drop(&mut self) {
        HOLDS_LOCK.with(|held| held.set(false));
        // SAFETY: the context was locked by this thread.
        unsafe { raw::RedisModule_ThreadSafeContextUnlock.unwrap()(self.0) };
    }
}

impl RedisHost {
    pub fn new() -> Self {
        // SAFETY: a detached thread-safe context; freed in Drop.
        let context =
            unsafe { raw::RedisModule_GetThreadSafeContext.unwrap()(std::ptr::null_mut()) };
        RedisHost { context }
    }

    /// Runs `f` under the Redis lock (taken here unless this thread already holds it, inside an
    /// atomic block).
    pub fn with_lock<R>(&self, f: impl FnOnce(&Context) -> R) -> R {
        if HOLDS_LOCK.with(|held| held.get()) {
            return f(&Context::new(self.context));
        }
        // SAFETY: locks Redis for this thread; LockGuard unlocks.
        unsafe { raw::RedisModule_ThreadSafeContextLock.unwrap()(self.context) };
        HOLDS_LOCK.with(|held| held.set(true));
        let _guard = LockGuard(self.context);
        f(&Context::new(self.context))
    }
}

impl RedisHost {
    /// Runs a reader's batch under the Redis lock, then steps aside for a moment: a mutex is not
    /// fair, and a reader that re-locks at once would starve Redis's main thread (every other
    /// client) for as long as it reads.
    pub fn with_batch_lock<R>(&self, f: impl FnOnce(&Context) -> R) -> R {
        let result = self.with_lock(f);
        std::thread::sleep(READER_PAUSE);
        result
    }
}

/// How long a reader leaves the Redis lock free between two batches.
const READER_PAUSE: std::time::Duration = std::time::Duration::from_micros(100);

/// The longest a reader holds the Redis lock for one batch.
pub(crate) const MAX_BATCH_LOCK: std::time::Duration = std::time::Duration::from_millis(4);

impl Drop for RedisHost {
    fn drop(&mut self) {
        // SAFETY: created in `new`, used by nobody after this.
        unsafe { raw::RedisModule_FreeThreadSafeContext.unwrap()(self.context) };
    }
}

/// A client blocked by a command, answered from a worker thread. Rust owns it (never a script
/// object), and dropping it always unblocks the client, with an error reply if none was sent.
pub(crate) struct BlockedReply {
    client: *mut raw::RedisModuleBlockedClient,
    replied: bool,
}

// SAFETY: blocked clients are made to be answered from other threads.
unsafe impl Send for BlockedReply {}

impl BlockedReply {
    /// Blocks the client of `ctx` (called on Redis's main thread).
    pub fn block(ctx: &Context) -> Self {
        // SAFETY: plain RedisModule_BlockClient with no callbacks and no timeout.
        let client = unsafe { raw::RedisModule_BlockClient.unwrap()(ctx.ctx, None, None, None, 0) };
        BlockedReply {
            client,
            replied: false,
        }
    }

    /// Sends the reply and unblocks the client.
    pub fn reply(mut self, value: &gears_core::ReplyValue) {
        self.send(value);
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

/// Runs a command (replicated, errors as replies) on a locked context.
pub(crate) fn call(ctx: &Context, args: &[Vec<u8>]) -> Result<Record> {
    let Some((command, rest)) = args.split_first() else {
        return Err(GearsError::Redis("no command given".into()));
    };
    let command = String::from_utf8_lossy(command).into_owned();
    let options = CallOptionsBuilder::new()
        .replicate()
        .errors_as_replies()
        .build();
    let rest: Vec<&[u8]> = rest.iter().map(Vec::as_slice).collect();
    let reply: CallResult = ctx.call_ext(&command, &options, rest.as_slice());
    reply_to_record(&reply)
}

fn reply_to_record(reply: &CallResult) -> Result<Record> {
    match reply {
        Ok(reply) => Ok(call_reply_to_record(reply)),
        Err(e) => Err(GearsError::Redis(
            e.to_utf8_string()
                .unwrap_or_else(|| "Failed executing command".to_string()),
        )),
    }
}

fn call_reply_to_record(reply: &CallReply) -> Record {
    match reply {
        CallReply::I64(i) => Record::Integer(i.to_i64()),
        CallReply::String(s) => Record::from(s.as_bytes().to_vec()),
        CallReply::Array(items) => Record::List(
            items
                .iter()
                .map(|item| match item {
                    Ok(reply) => call_reply_to_record(&reply),
                    Err(e) => Record::String(e.to_utf8_string().unwrap_or_default()),
                })
                .collect(),
        ),
        CallReply::Null(_) | CallReply::Unknown => Record::Nil,
        CallReply::Map(map) => {
            Record::Map(map.iter().map(|(k, v)| (element(k), element(v))).collect())
        }
        CallReply::Set(set) => Record::List(set.iter().map(element).collect()),
        CallReply::Bool(b) => Record::Bool(b.to_bool()),
        CallReply::Double(d) => Record::Float(d.to_double()),
        CallReply::BigNumber(n) => Record::String(n.to_string().unwrap_or_default()),
        CallReply::VerbatimString(v) => {
            Record::from(v.to_parts().map(|(_, bytes)| bytes).unwrap_or_default())
        }
    }
}

fn element(item: CallResult) -> Record {
    match item {
        Ok(reply) => call_reply_to_record(&reply),
        Err(e) => Record::String(e.to_utf8_string().unwrap_or_default()),
    }
}

impl RedisAccess for RedisHost {
    fn execute(&self, args: &[Vec<u8>]) -> Result<Record> {
        self.with_lock(|ctx| call(ctx, args))
    }

    fn log(&self, level: LogLevel, message: &str) {
        let level = match level {
            LogLevel::Debug => RedisLogLevel::Debug,
            LogLevel::Verbose => RedisLogLevel::Verbose,
            LogLevel::Notice => RedisLogLevel::Notice,
            LogLevel::Warning => RedisLogLevel::Warning,
        };
        let message = format!("GEARS: {message}");
        match crate::gears() {
            Some(gears) => gears.log_context.log(level, &message),
            None => logging::log(level, &message),
        }
    }

    fn gears_config_get(&self, key: &str) -> Option<Record> {
        crate::gears()
            .and_then(|g| g.config.extra.get(key))
            .map(|v| Record::String(v.clone()))
    }

    fn begin_atomic(&self) -> Result<()> {
        if IN_ATOMIC.with(|atomic| atomic.get()) || HOLDS_LOCK.with(|held| held.get()) {
            return Err(GearsError::Plan("Already inside an atomic block".into()));
        }
        // SAFETY: locks Redis for this thread until end_atomic.
        unsafe { raw::RedisModule_ThreadSafeContextLock.unwrap()(self.context) };
        HOLDS_LOCK.with(|held| held.set(true));
        IN_ATOMIC.with(|atomic| atomic.set(true));
        Ok(())
    }

    fn end_atomic(&self) {
        if IN_ATOMIC.with(|atomic| atomic.replace(false)) {
            drop(LockGuard(self.context));
        }
    }

    fn hashtag(&self) -> String {
        // Standalone: the first entry of RedisGears' slot table, a tag of slot 0.
        "06S".to_string()
    }
}
