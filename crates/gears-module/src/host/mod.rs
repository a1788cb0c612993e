//! [`RedisHost`]: how the core, the readers and the scripts of one execution reach Redis from a
//! worker thread: as the ACL user who sent the script, in the database they had selected, with
//! the protections of a Lua script (see [`call`]), and under the execution's
//! [`ExecutionControl`] (atomic blocks are timed, a stopped execution runs no more commands).

mod blocked;
pub(crate) mod call;
pub(crate) mod command_info;
mod contexts;
mod current;
mod extras;
mod main_thread;
mod server_events;
mod user;

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gears_core::control::ExecutionControl;
use gears_core::{GearsError, LogLevel, Record, RedisAccess, Result};
use redis_module::logging::{self, RedisLogLevel};
use redis_module::{raw, Context};

pub(crate) use blocked::{may_block, BlockedReply};
pub(crate) use call::{call_internal, Access};
pub(crate) use current::{SessionHost, SyncRun};
pub(crate) use main_thread::{on_main_thread_soon, MAX_TIMER_MS};
pub(crate) use server_events::subscribe_server_event;
pub(crate) use user::{may_read_key, may_run, AclUser, ReadCheck};

pub(crate) use call::writes_paused;
use call::{call_as, Called};

use crate::registrations::hooks::{HookCall, NextHook};

/// Who sent a script and where: the ACL user and the selected database of the calling client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Caller {
    pub user: Vec<u8>,
    pub db: i32,
}

impl Caller {
    /// The caller of the command running on `ctx` (on Redis's main thread).
    pub fn of(ctx: &Context) -> Self {
        // SAFETY: plain queries of the command's client; the name string is freed here.
        unsafe {
            let name = raw::RedisModule_GetCurrentUserName.unwrap()(ctx.ctx);
            let mut len = 0usize;
            let ptr = raw::RedisModule_StringPtrLen.unwrap()(name, &mut len);
            let user = std::slice::from_raw_parts(ptr.cast::<u8>(), len).to_vec();
            raw::RedisModule_FreeString.unwrap()(ctx.ctx, name);
            let db = raw::RedisModule_GetSelectedDb.unwrap()(ctx.ctx);
            Caller { user, db }
        }
    }
}

/// Redis as one execution sees it. Every access takes the Redis lock for as short a time as it
/// can, through one detached thread-safe context (redis-module's `lock()` would create and free
/// a context, with its fake client, on every lock).
pub(crate) struct RedisHost {
    context: *mut raw::RedisModuleCtx,
    user: AclUser,
    access: Access,
    control: Arc<ExecutionControl>,
    /// Set when the execution is over: code of its script that still runs (a finalizer, a
    /// thread, a function another script got hold of) can reach Redis no more.
    finished: AtomicBool,
    /// The database of the caller, which readers read.
    home_db: i32,
    /// The database `execute()` works on: the caller's, until the script runs `SELECT`.
    db: AtomicI32,
    /// The hooked command this execution runs for (`call_next`, `override_reply`).
    hook: Option<Arc<HookCall>>,
    /// The commands of a script's top level, recorded (the initiator of a distributed
    /// execution) or replayed (the other shards: the top level has its effects once).
    top_level: std::sync::Mutex<TopLevel>,
    /// The sessions the script's session replaces (`ID` with `UPGRADE`, `REPLACE_WITH`): their
    /// timers' keys are free for its timers.
    replaces: std::sync::Mutex<Vec<String>>,
    /// A sync run that may start again in the background if a callback awaits (see
    /// [`RedisHost::allow_move`]), whether it wrote (then it may not), and whether it moved.
    movable: AtomicBool,
    wrote: AtomicBool,
    moved: AtomicBool,
}

/// The stop of a sync run that starts again in the background.
pub(crate) const MOVED: &str = "the sync run moved to the background";

/// One command of a script's top level and its reply.
pub(crate) type TopLevelCall = (Vec<Vec<u8>>, Result<Record>);

/// What [`RedisHost`] does with the commands of a script's top level.
#[derive(Default)]
pub(crate) enum TopLevel {
    /// Runs them.
    #[default]
    Run,
    /// Runs them and keeps them with their replies.
    Record(Vec<TopLevelCall>),
    /// Gives the recorded replies instead of running them, in order.
    Replay(std::collections::VecDeque<TopLevelCall>),
}

// SAFETY: a thread-safe context may be used from any thread; Gears only uses it while holding
// the Redis lock, which serialises all use.
unsafe impl Send for RedisHost {}
unsafe impl Sync for RedisHost {}

thread_local! {
    /// True while this thread holds the Redis lock (inside `with_lock` or an atomic block).
    static HOLDS_LOCK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// The host whose atomic block this thread is in (null: none). Only that host ends it.
    static ATOMIC_OWNER: std::cell::Cell<*const RedisHost> =
        const { std::cell::Cell::new(std::ptr::null()) };
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

/// How often a command refused because writes are paused is tried again.
const PAUSE_POLL: Duration = Duration::from_millis(10);

impl RedisHost {
    pub fn new(caller: &Caller, access: Access, control: Arc<ExecutionControl>) -> Self {
        let context = contexts::take();
        // SAFETY: selecting the database only touches the context's own fake client.
        unsafe { raw::RedisModule_SelectDb.unwrap()(context, caller.db) };
        RedisHost {
            context,
            user: AclUser::new(&caller.user),
            access,
            control,
            finished: AtomicBool::new(false),
            home_db: caller.db,
            db: AtomicI32::new(caller.db),
            hook: None,
            top_level: std::sync::Mutex::new(TopLevel::Run),
            replaces: std::sync::Mutex::new(Vec::new()),
            movable: AtomicBool::new(false),
            wrote: AtomicBool::new(false),
            moved: AtomicBool::new(false),
        }
    }

    /// Lets this sync run start again in the background (before it begins).
    pub fn allow_move(&self) {
        self.movable.store(true, Ordering::Relaxed);
    }

    /// True if a callback awaited and the run is to start again in the background.
    pub fn moved(&self) -> bool {
        self.moved.load(Ordering::Relaxed)
    }

    /// Notes the sessions the script's session would replace (see [`RedisHost::replaces`]).
    pub fn set_replaces(&self, sessions: Vec<String>) {
        *self
            .replaces
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = sessions;
    }

    /// Records (or replays) the commands of the script's top level until
    /// [`RedisHost::end_top_level`].
    pub fn set_top_level(&self, mode: TopLevel) {
        *self
            .top_level
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = mode;
    }

    /// The end of the script's top level: its commands run from now on; returns the recorded
    /// calls (or, replaying, those not replayed).
    pub fn end_top_level(&self) -> Vec<TopLevelCall> {
        let mode = std::mem::take(
            &mut *self
                .top_level
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        match mode {
            TopLevel::Run => Vec::new(),
            TopLevel::Record(calls) => calls,
            TopLevel::Replay(calls) => calls.into(),
        }
    }

    /// Runs a command (see [`RedisAccess::execute`]).
    fn execute_now(&self, args: &[Vec<u8>]) -> Result<Record> {
        loop {
            self.check_running()?;
            match self.with_lock(|ctx| self.call_in_db(ctx, args)) {
                Called::Reply(result) => return result,
                // A sync registration runs inside the event: it can not let the pause end.
                Called::Paused if SyncRun::active() => {
                    return Err(GearsError::Redis(
                        "ERR writes are paused (CLIENT PAUSE); a sync registration can not wait"
                            .into(),
                    ))
                }
                // Inside an atomic block the lock is ours, so no pause can have begun.
                Called::Paused => self.wait_for_pause_end()?,
            }
        }
    }

    /// Makes this the execution of a command hook (before it is shared).
    pub fn set_hook(&mut self, hook: Option<Arc<HookCall>>) {
        self.hook = hook;
    }

    /// Marks the execution over: its atomic block (if any) ends, and later commands and atomic
    /// blocks are refused.
    pub fn finish(&self) {
        self.finished.store(true, Ordering::Release);
        self.end_atomic();
    }

    /// `Ok` while the execution runs and may go on.
    fn check_running(&self) -> Result<()> {
        if self.finished.load(Ordering::Acquire) {
            return Err(GearsError::Redis(
                "ERR this Gears execution has finished: its scripts can no longer reach Redis"
                    .into(),
            ));
        }
        self.control.check()
    }

    pub fn control(&self) -> &Arc<ExecutionControl> {
        &self.control
    }

    pub fn user(&self) -> &AclUser {
        &self.user
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

    /// Runs a reader's batch under the Redis lock, then gives Redis's main thread its turn
    /// (see [`yield_to_main_thread`]): a mutex is not fair, and a reader that re-locks at once
    /// would starve every other client for as long as it reads.
    pub fn with_batch_lock<R>(&self, f: impl FnOnce(&Context) -> R) -> R {
        let result = self.with_lock(f);
        if !HOLDS_LOCK.with(|held| held.get()) {
            yield_to_main_thread();
        }
        result
    }

    /// Runs `f` under the Redis lock once writes are not paused (what it propagates must not be
    /// propagated during a pause: the server would stop on an assertion). Waits outside the lock.
    pub fn with_lock_unpaused<R>(&self, f: impl FnOnce(&Context) -> R) -> R {
        // Holding the lock already (an atomic block, a sync run), no pause can have begun.
        if HOLDS_LOCK.with(|held| held.get()) {
            return self.with_lock(f);
        }
        let mut f = Some(f);
        loop {
            let done = self.with_lock(|ctx| {
                if writes_paused() {
                    return None;
                }
                f.take().map(|f| f(ctx))
            });
            if let Some(result) = done {
                return result;
            }
            std::thread::sleep(PAUSE_POLL);
        }
    }

    /// Waits while writes are paused, so that the caller's next lock finds them allowed.
    fn wait_for_pause_end(&self) -> Result<()> {
        loop {
            self.control.check()?;
            std::thread::sleep(PAUSE_POLL);
            if !self.with_lock(|_| writes_paused()) {
                return Ok(());
            }
        }
    }
}

/// Writes a script's message to the Redis log as `GEARS: <message>`, from any thread.
pub(crate) fn log_line(level: LogLevel, message: &str) {
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

/// The longest a reader waits for the main thread's turn.
const TURN_WAIT: Duration = Duration::from_millis(10);

unsafe extern "C" fn main_thread_turn(data: *mut std::os::raw::c_void) {
    // SAFETY: the sender boxed by `yield_to_main_thread`, passed once.
    let sender = unsafe { Box::from_raw(data.cast::<crossbeam_channel::Sender<()>>()) };
    let _ = sender.try_send(());
}

/// Waits (at most [`TURN_WAIT`]) until Redis's main thread has run one turn of its event loop,
/// so that the clients waiting while a reader held the lock are served before it locks again.
/// The turn is requested with a one-shot event, which wakes the main thread if it sleeps, and
/// runs after the events (client commands) of that turn.
pub(crate) fn yield_to_main_thread() {
    let (sender, turn) = crossbeam_channel::bounded::<()>(1);
    let data = Box::into_raw(Box::new(sender));
    // SAFETY: the callback takes back the box; if the event can not be added, we do.
    let added = unsafe {
        raw::RedisModule_EventLoopAddOneShot.unwrap()(Some(main_thread_turn), data.cast())
    };
    if added != raw::REDISMODULE_OK as i32 {
        // SAFETY: the event was not added, so the box is still ours.
        drop(unsafe { Box::from_raw(data) });
        std::thread::sleep(Duration::from_micros(100));
        return;
    }
    let _ = turn.recv_timeout(TURN_WAIT);
}

/// The longest a reader holds the Redis lock for one batch.
pub(crate) const MAX_BATCH_LOCK: Duration = Duration::from_millis(4);

impl Drop for RedisHost {
    fn drop(&mut self) {
        // Whatever happened, this thread must not keep the Redis lock.
        self.end_atomic();
        contexts::give_back(self.context);
    }
}

impl RedisHost {
    /// Runs a command of `execute()` in the execution's database. `SELECT` works as in a Lua
    /// script: it changes the database of the execution's later commands (not the caller's,
    /// and not what its reader reads).
    fn call_in_db(&self, ctx: &Context, args: &[Vec<u8>]) -> Called {
        let db = self.db.load(Ordering::Relaxed);
        let select = |db: i32| {
            // SAFETY: under the Redis lock; only this context's own client changes database.
            unsafe { raw::RedisModule_SelectDb.unwrap()(ctx.ctx, db) };
        };
        if db != self.home_db {
            select(db);
        }
        if self.movable.load(Ordering::Relaxed) && call::has_side_effects(ctx, args) {
            // Run again, it would do this twice: it can not move any more.
            self.wrote.store(true, Ordering::Relaxed);
        }
        let called = call_as(ctx, Some(&self.user), self.access, args);
        if db != self.home_db {
            select(self.home_db);
        }
        let selected = matches!(called, Called::Reply(Ok(_)))
            && args.len() == 2
            && args[0].eq_ignore_ascii_case(b"select");
        if selected {
            // Redis accepted the index, so it is a valid database number.
            if let Some(index) = std::str::from_utf8(&args[1])
                .ok()
                .and_then(|text| text.trim().parse::<i32>().ok())
            {
                self.db.store(index, Ordering::Relaxed);
            }
        }
        called
    }
}

impl RedisAccess for RedisHost {
    fn execute(&self, args: &[Vec<u8>]) -> Result<Record> {
        let mut top_level = self
            .top_level
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &mut *top_level {
            TopLevel::Run => {
                drop(top_level);
                let reply = self.execute_now(args);
                if reply.is_ok()
                    && args.len() > 1
                    && args[0].eq_ignore_ascii_case(b"xadd")
                    && crate::registrations::events::inside_notification()
                {
                    let db = self.db.load(Ordering::Relaxed);
                    self.with_lock(|ctx| crate::registrations::events::own_xadd(ctx, &args[1], db));
                }
                reply
            }
            TopLevel::Replay(calls) => {
                self.check_running()?;
                match calls.pop_front() {
                    Some((recorded, reply)) if recorded == args => reply,
                    _ => Err(GearsError::Redis(
                        "ERR the script's top level ran differently on this shard than on the \
                         initiator (its commands must not depend on the shard)"
                            .into(),
                    )),
                }
            }
            TopLevel::Record(_) => {
                // Not held while the command runs (a thread of the script may call too).
                drop(top_level);
                let reply = self.execute_now(args);
                if let TopLevel::Record(calls) = &mut *self
                    .top_level
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                {
                    calls.push((args.to_vec(), reply.clone()));
                }
                reply
            }
        }
    }

    fn log(&self, level: LogLevel, message: &str) {
        log_line(level, message);
    }

    fn gears_config_get(&self, key: &str) -> Option<Record> {
        use crate::config::Value;
        crate::gears()
            .and_then(|g| g.config.lookup(key))
            .map(|value| match value {
                Value::Integer(i) => Record::Integer(i),
                Value::Text(s) => Record::String(s),
                Value::List(items) => Record::List(items.into_iter().map(Record::String).collect()),
            })
    }

    /// Takes the Redis lock until [`RedisAccess::end_atomic`], once writes are not paused (a
    /// pause can not begin while the block holds the lock). The block's time is limited by the
    /// execution's control.
    fn begin_atomic(&self) -> Result<()> {
        // A sync registration already holds the lock for its whole run.
        if SyncRun::active() {
            return self.check_running();
        }
        if !ATOMIC_OWNER.with(|owner| owner.get()).is_null() || HOLDS_LOCK.with(|held| held.get()) {
            return Err(GearsError::Plan("Already inside an atomic block".into()));
        }
        loop {
            self.check_running()?;
            // SAFETY: locks Redis for this thread until end_atomic (or the unlock below).
            unsafe { raw::RedisModule_ThreadSafeContextLock.unwrap()(self.context) };
            if !writes_paused() {
                break;
            }
            // SAFETY: locked just above by this thread.
            unsafe { raw::RedisModule_ThreadSafeContextUnlock.unwrap()(self.context) };
            std::thread::sleep(PAUSE_POLL);
        }
        HOLDS_LOCK.with(|held| held.set(true));
        ATOMIC_OWNER.with(|owner| owner.set(self as *const RedisHost));
        self.control.begin_atomic();
        Ok(())
    }

    /// Ends this host's atomic block on this thread, if it has one (another host's block is
    /// left alone).
    fn end_atomic(&self) {
        let mine = ATOMIC_OWNER.with(|owner| {
            if std::ptr::eq(owner.get(), self) {
                owner.set(std::ptr::null());
                true
            } else {
                false
            }
        });
        if mine {
            self.control.end_atomic();
            drop(LockGuard(self.context));
        }
    }

    fn start_execution(
        &self,
        plan: gears_core::ExecutionPlan,
        session: Arc<dyn gears_core::Session>,
        done: gears_core::ExecutionDone,
    ) -> Result<String> {
        self.start_execution_for(plan, session, done, None)
    }

    fn move_to_background(&self) -> std::result::Result<(), Option<String>> {
        self.move_now()
    }

    fn timer_key_free(&self, key: &[u8]) -> Result<bool> {
        self.timer_key_free_now(key)
    }

    fn hashtag(&self) -> String {
        self.top_level_hashtag()
    }

    /// Runs the hooked command with `args` through the hooks registered before this one (see
    /// `registrations::hooks`).
    fn call_next(&self, args: &[Vec<u8>]) -> Result<Record> {
        let Some((command, name, registration)) = self.hook.as_deref().and_then(HookCall::next_of)
        else {
            return Err(gears_core::no_hook_context());
        };
        let mut argv = Vec::with_capacity(args.len() + 1);
        argv.push(command.to_vec());
        argv.extend_from_slice(args);
        let _next = NextHook::enter(name, registration);
        self.execute(&argv)
    }

    fn override_reply(&self, value: Record) -> Result<()> {
        match &self.hook {
            Some(hook) => hook.override_reply(&value),
            None => Err(gears_core::no_hook_context()),
        }
    }

    fn get_command(&self) -> Result<Vec<Vec<u8>>> {
        match &self.hook {
            Some(hook) => Ok(hook.command()),
            None => Err(gears_core::no_hook_context()),
        }
    }
}
