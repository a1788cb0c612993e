//! The host a script's `execute()` reaches: the one of the execution running on this thread.
//!
//! A session compiled once serves many executions (a registration runs one per event, each as
//! its own execution, with its own control and database), so the API functions a session
//! holds do not keep one execution's host: they ask for the one this thread runs the session
//! for ([`SessionHost::enter`]). Anywhere else (a Python thread the script started, another
//! session that got hold of the function) they reach the host of the execution that compiled
//! the session, which refuses once it has finished.

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use gears_core::{LogLevel, Record, RedisAccess, Result};

use super::RedisHost;

thread_local! {
    /// The executions this thread works for, innermost last, each with the session host whose
    /// calls it serves.
    static CURRENT: RefCell<Vec<(*const SessionHost, Arc<RedisHost>)>> = const { RefCell::new(Vec::new()) };
    /// How many sync registration runs this thread is inside (they hold the Redis lock).
    static SYNC_DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// While alive, the session's calls on this thread reach `host` (see [`SessionHost::enter`]).
pub(crate) struct HostScope;

impl Drop for HostScope {
    fn drop(&mut self) {
        let _ = CURRENT.try_with(|current| current.borrow_mut().pop());
    }
}

/// Marks this thread as running a sync registration, which already holds the Redis lock (it
/// runs inside the event): its commands do not lock, its atomic blocks are no-ops, and it can
/// not wait for a write pause to end.
pub(crate) struct SyncRun {
    held: bool,
}

impl SyncRun {
    pub fn enter() -> Self {
        SYNC_DEPTH.with(|depth| depth.set(depth.get() + 1));
        let held = super::HOLDS_LOCK.with(|held| held.replace(true));
        SyncRun { held }
    }

    /// True inside a sync registration's run.
    pub fn active() -> bool {
        SYNC_DEPTH.with(|depth| depth.get() > 0)
    }
}

impl Drop for SyncRun {
    fn drop(&mut self) {
        let held = self.held;
        let _ = super::HOLDS_LOCK.try_with(|h| h.set(held));
        let _ = SYNC_DEPTH.try_with(|depth| depth.set(depth.get().saturating_sub(1)));
    }
}

/// The [`RedisAccess`] a session holds: the host of the execution this thread runs the
/// session for, else `fallback` (the execution that compiled it). A function of the session
/// called while another session runs (another user's script got hold of it) acts as its own
/// session's execution, never as the caller's.
pub(crate) struct SessionHost {
    fallback: Arc<RedisHost>,
    /// Itself, for the executions its session starts (`run()` inside a step).
    me: std::sync::Weak<SessionHost>,
}

impl SessionHost {
    pub fn new(fallback: Arc<RedisHost>) -> Arc<Self> {
        Arc::new_cyclic(|me| SessionHost {
            fallback,
            me: me.clone(),
        })
    }

    /// Runs the session's calls on this thread for `host`'s execution until the scope ends
    /// (scopes nest: a sync registration runs inside the command of another execution).
    pub fn enter(&self, host: &Arc<RedisHost>) -> HostScope {
        CURRENT.with(|current| {
            current
                .borrow_mut()
                .push((self as *const SessionHost, host.clone()))
        });
        HostScope
    }

    fn host(&self) -> Arc<RedisHost> {
        let me = self as *const SessionHost;
        CURRENT
            .try_with(|current| {
                current
                    .borrow()
                    .iter()
                    .rev()
                    .find(|(session, _)| std::ptr::eq(*session, me))
                    .map(|(_, host)| host.clone())
            })
            .ok()
            .flatten()
            .unwrap_or_else(|| self.fallback.clone())
    }
}

impl RedisAccess for SessionHost {
    fn execute(&self, args: &[Vec<u8>]) -> Result<Record> {
        self.host().execute(args)
    }

    fn log(&self, level: LogLevel, message: &str) {
        super::log_line(level, message);
    }

    fn gears_config_get(&self, key: &str) -> Option<Record> {
        self.host().gears_config_get(key)
    }

    fn hashtag(&self) -> String {
        self.host().hashtag()
    }

    fn begin_atomic(&self) -> Result<()> {
        self.host().begin_atomic()
    }

    fn end_atomic(&self) {
        self.host().end_atomic()
    }

    fn new_registration_id(&self) -> Option<String> {
        crate::gears().map(|gears| gears.executions.next_id())
    }

    fn timer_key_free(&self, key: &[u8]) -> Result<bool> {
        self.host().timer_key_free(key)
    }

    fn start_execution(
        &self,
        plan: gears_core::ExecutionPlan,
        session: Arc<dyn gears_core::Session>,
        done: gears_core::ExecutionDone,
    ) -> Result<String> {
        self.host()
            .start_execution_for(plan, session, done, self.me.upgrade())
    }

    fn call_next(&self, args: &[Vec<u8>]) -> Result<Record> {
        self.host().call_next(args)
    }

    fn override_reply(&self, value: Record) -> Result<()> {
        self.host().override_reply(value)
    }

    fn get_command(&self) -> Result<Vec<Vec<u8>>> {
        self.host().get_command()
    }

    fn capture(&self) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        Some(self.host() as Arc<dyn std::any::Any + Send + Sync>)
    }

    fn enter_captured(
        &self,
        captured: &Arc<dyn std::any::Any + Send + Sync>,
    ) -> Option<Box<dyn std::any::Any>> {
        let host = captured.clone().downcast::<RedisHost>().ok()?;
        Some(Box::new(self.enter(&host)))
    }

    fn move_to_background(&self) -> std::result::Result<(), Option<String>> {
        self.host().move_to_background()
    }

    fn may_wait(&self) -> bool {
        // A sync run or an atomic block holds the Redis lock (Redis's main thread, which always
        // does, the language checks itself).
        !SyncRun::active() && !super::HOLDS_LOCK.with(|held| held.get())
    }
}
