//! What a host does beyond running commands: `run()` inside a step (an execution of its own),
//! a sync run that moves to the background, timers' keys, `hashtag()` at a top level.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use gears_core::{GearsError, Record, Result};

use super::{may_run, Access, Caller, RedisHost, SessionHost, TopLevel, MOVED};

impl RedisHost {
    /// `run()` inside a step (see [`gears_core::RedisAccess::start_execution`]); the session's calls in the
    /// new execution reach it through `session_host`.
    pub fn start_execution_for(
        &self,
        plan: gears_core::ExecutionPlan,
        session: Arc<dyn gears_core::Session>,
        done: gears_core::ExecutionDone,
        session_host: Option<Arc<SessionHost>>,
    ) -> Result<String> {
        self.check_running()?;
        if self.access != Access::ReadWrite {
            return Err(GearsError::Plan(
                "run() can not start an execution here (a read-only run or a session made again)"
                    .into(),
            ));
        }
        // Started, it would start again if this sync run moved to the background.
        self.wrote.store(true, Ordering::Relaxed);
        let caller = Caller {
            user: self.user.name().as_bytes().to_vec(),
            db: self.db.load(Ordering::Relaxed),
        };
        crate::commands::background::start(caller, plan, session, done, session_host)
            .map_err(GearsError::Plan)
    }

    /// See [`gears_core::RedisAccess::move_to_background`].
    pub(super) fn move_now(&self) -> std::result::Result<(), Option<String>> {
        if !self.movable.load(Ordering::Relaxed) {
            return Err(None);
        }
        if self.wrote.load(Ordering::Relaxed) {
            return Err(Some(
                "the sync run wrote before it awaited, so it can not start again in the \
                 background"
                    .into(),
            ));
        }
        self.moved.store(true, Ordering::Relaxed);
        self.control.stop(MOVED);
        Ok(())
    }

    /// See [`gears_core::RedisAccess::timer_key_free`].
    pub(super) fn timer_key_free_now(&self, key: &[u8]) -> Result<bool> {
        use crate::registrations::timers::key::{content, Content};
        if self.access == Access::Replay {
            return Ok(true);
        }
        self.check_running()?;
        self.with_lock(|ctx| {
            let name = String::from_utf8_lossy(key);
            if !may_run(ctx, self.user.name().as_bytes(), &[b"SET", key, b"1"]) {
                return Err(GearsError::Redis(format!(
                    "NOPERM this user may not write the timer's key '{name}'"
                )));
            }
            let db = self.db.load(Ordering::Relaxed);
            Ok(match content(ctx, db, key) {
                Content::Empty => true,
                Content::Other => false,
                // Another live session's timer keeps it; a timer that is not live, or one of
                // a session this script replaces, gives it up.
                Content::Timer(id) => crate::registrations::get(&id).is_none_or(|live| {
                    self.replaces
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .contains(&live.session_id)
                }),
            })
        })
    }

    /// The shard's tag; at a script's top level in a cluster, the initiator's on every shard
    /// (recorded and replayed like its commands): a key named with it at the top level (a
    /// timer's key, a prefix) is the same key everywhere.
    pub(super) fn top_level_hashtag(&self) -> String {
        let call = vec![b"\0hashtag".to_vec()];
        let mut top_level = self
            .top_level
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &mut *top_level {
            TopLevel::Run => crate::cluster::topology::my_hashtag(),
            TopLevel::Record(calls) => {
                let tag = crate::cluster::topology::my_hashtag();
                calls.push((call, Ok(Record::String(tag.clone()))));
                tag
            }
            TopLevel::Replay(calls) => match calls.front() {
                Some((recorded, Ok(Record::String(tag)))) if *recorded == call => {
                    let tag = tag.clone();
                    calls.pop_front();
                    tag
                }
                _ => crate::cluster::topology::my_hashtag(),
            },
        }
    }
}
