//! Registrations: pipelines that events run, instead of `run()` once.
//!
//! A script's `register()` calls become [`Registration`]s once its top level has finished (all
//! of them or, if the script fails, none). Each keeps the script's session alive (its globals
//! and callbacks), the ACL user who registered it and its statistics. Keyspace events reach
//! them through [`events`]; each matching event runs the registration's plan as one execution
//! (`registered` = 1), on the thread of the event (`sync`) or on a worker (`async`,
//! `async_local`), see [`run`]. The commands that list and remove them are in [`commands`].
//! CommandReader registrations run on `RG.TRIGGER` ([`triggers`]) or replace a Redis command
//! ([`hooks`]).

pub(crate) mod commands;
pub(crate) mod events;
pub(crate) mod hooks;
mod index;
mod inner_hook;
pub(crate) mod persist;
pub(crate) mod removals;
mod run;
pub(crate) mod sessions;
pub(crate) mod streams;
pub(crate) mod timers;
pub(crate) mod triggers;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use gears_core::registration::{CommandTrigger, KeysTrigger, RegistrationSpec, Trigger};
use gears_core::{ExecutionMode, Language, Session};

use crate::host::SessionHost;

pub(crate) use events::subscribe;

/// One event: a key, what happened to it, and its database; a key event (a key about to be
/// removed) carries its record, read while the key still existed.
pub(crate) struct Event {
    pub key: Vec<u8>,
    pub event: String,
    pub db: i32,
    pub record: Option<gears_core::Record>,
    /// The hooked command that raised the event, for a registration with `commands=[...]`
    /// (`override_reply`, `get_command`); its client waits until the run ends.
    pub command: Option<Arc<hooks::CommandCall>>,
}

/// What one run of a registration is given.
pub(crate) enum Input {
    /// A keyspace event: the record is read when the run starts.
    Key(Event),
    /// A command's record (`[trigger, args...]`), answered when the run ends.
    Call(run::Call),
}

/// What `RG.DUMPREGISTRATIONS` shows of a registration's runs.
#[derive(Default, Clone)]
pub(crate) struct Stats {
    pub triggered: u64,
    pub success: u64,
    pub failures: u64,
    pub aborted: u64,
    pub last_run: Duration,
    pub total_run: Duration,
    pub last_error: Option<String>,
    /// Events refused because the registration's queue was full.
    pub dropped: u64,
}

/// One registration.
pub(crate) struct Registration {
    pub id: String,
    pub language: Language,
    /// The ACL user who registered it: its executions act as this user.
    pub user: Vec<u8>,
    pub spec: RegistrationSpec,
    pub session: Arc<dyn Session>,
    /// What the session's `execute()` reaches: each event's execution while it runs.
    pub session_host: Arc<SessionHost>,
    /// The id of the script's run that registered it (its session, in RedisGears' terms).
    pub session_id: String,
    pub description: Option<String>,
    /// A description of each step's callback (`RG.GETEXECUTION`'s `arg`).
    pub step_args: Arc<[String]>,
    /// The commands it hooks (a CommandReader `hook=`, a KeysReader's `commands=[...]`).
    pub hooks: Vec<hooks::HookInfo>,
    stats: Mutex<Stats>,
    /// Events waiting for a worker (async modes), oldest first.
    queue: Mutex<VecDeque<Input>>,
    /// True while a worker job drains the queue (one at a time, so events run in order).
    draining: AtomicBool,
    /// Set by `RG.UNREGISTER`: no more events run.
    removed: AtomicBool,
    /// Ids of its executions still in the table, oldest first (`MaxExecutionsPerRegistration`).
    executions: Mutex<VecDeque<String>>,
    /// A StreamReader registration's status, positions and lag.
    pub stream: Option<streams::StreamState>,
    /// A TimerReader registration's next run.
    pub timer: Option<timers::TimerState>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Registration {
    pub fn mode(&self) -> ExecutionMode {
        self.spec.mode()
    }

    pub fn stats(&self) -> Stats {
        lock(&self.stats).clone()
    }

    pub fn clear_stats(&self) {
        *lock(&self.stats) = Stats::default();
        if let Some(stream) = &self.stream {
            stream.clear_lag();
        }
    }

    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    /// Events waiting for a worker.
    pub fn pending(&self) -> usize {
        lock(&self.queue).len()
    }

    /// Records one run's outcome.
    fn record_run(&self, duration: Duration, error: Option<String>, aborted: bool) {
        let mut stats = lock(&self.stats);
        stats.triggered += 1;
        stats.last_run = duration;
        stats.total_run += duration;
        if aborted {
            stats.aborted += 1;
        } else if error.is_some() {
            stats.failures += 1;
        } else {
            stats.success += 1;
        }
        if error.is_some() {
            stats.last_error = error;
        }
    }

    /// A batch that ran could not be acknowledged: it counts as a failure (not as another run).
    pub(crate) fn acknowledgement_failed(&self, error: String, ran_well: bool) {
        let mut stats = lock(&self.stats);
        if ran_well && stats.success > 0 {
            stats.success -= 1;
            stats.failures += 1;
        }
        stats.last_error = Some(error);
    }

    /// Keeps the id of a finished execution, dropping its oldest ones past `max`.
    fn keep_execution(&self, id: String, max: usize) {
        let mut dropped = Vec::new();
        {
            let mut kept = lock(&self.executions);
            kept.push_back(id);
            // A removed registration keeps none (its last queued events ran after it left).
            let max = if self.is_removed() { 0 } else { max };
            while kept.len() > max {
                dropped.extend(kept.pop_front());
            }
        }
        if let Some(gears) = crate::gears() {
            for id in dropped {
                gears.executions.drop_execution(&id);
            }
        }
    }
}

/// Every registration, in creation order. Events read a snapshot (an `Arc` clone), so adding or
/// removing one never waits for events being dispatched.
static REGISTRY: RwLock<Option<Arc<Vec<Arc<Registration>>>>> = RwLock::new(None);
/// How many registrations exist: the event callback's fast path when there are none.
static COUNT: AtomicUsize = AtomicUsize::new(0);
/// How many KeysReader registrations exist: keyspace events skip them when there are none.
static KEYS_COUNT: AtomicUsize = AtomicUsize::new(0);

pub(crate) fn keys_count() -> usize {
    KEYS_COUNT.load(Ordering::Relaxed)
}

/// The registrations now, with their key index (taken together: they always agree).
fn snapshot() -> (Arc<Vec<Arc<Registration>>>, Arc<index::KeyIndex>) {
    let registry = REGISTRY.read().unwrap_or_else(PoisonError::into_inner);
    (registry.clone().unwrap_or_default(), index::current())
}

/// The registrations now.
pub(crate) fn all() -> Arc<Vec<Arc<Registration>>> {
    REGISTRY
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
        .unwrap_or_default()
}

pub(crate) fn count() -> usize {
    COUNT.load(Ordering::Relaxed)
}

/// Events waiting for a worker, over all registrations.
pub(crate) fn pending() -> usize {
    all().iter().map(|r| r.pending()).sum()
}

fn update(change: impl FnOnce(&mut Vec<Arc<Registration>>)) {
    let mut registry = REGISTRY.write().unwrap_or_else(PoisonError::into_inner);
    let mut list: Vec<Arc<Registration>> = registry.as_deref().cloned().unwrap_or_default();
    change(&mut list);
    COUNT.store(list.len(), Ordering::Relaxed);
    KEYS_COUNT.store(
        list.iter().filter(|r| keys_trigger(r).is_some()).count(),
        Ordering::Relaxed,
    );
    hooks::rebuild(&list);
    index::rebuild(&list);
    removals::rebuild(&list);
    streams::rebuild(&list);
    *registry = Some(Arc::new(list));
}

/// Who the registrations of one script belong to.
#[derive(Clone, Copy)]
pub(crate) struct Owner<'a> {
    pub language: Language,
    /// The ACL user who registered them.
    pub user: &'a [u8],
    pub session_id: &'a str,
    pub session: &'a Arc<dyn Session>,
    pub session_host: &'a Arc<SessionHost>,
}

/// Builds registrations for a script's `register()` calls, sharing its session, without
/// publishing them (see [`swap`]); under the Redis lock (`ctx`: the commands they hook are
/// looked up). `ids` gives them their ids (a session made again), else new ones are taken. An
/// error: a command that can not be hooked.
pub(crate) fn build(
    owner: &Owner<'_>,
    specs: Vec<RegistrationSpec>,
    ids: Option<Vec<String>>,
    ctx: &redis_module::Context,
) -> Result<Vec<Arc<Registration>>, String> {
    let Owner {
        language,
        user,
        session_id,
        session,
        session_host,
    } = *owner;
    let Some(gears) = crate::gears() else {
        return Ok(Vec::new());
    };
    let mut ids = ids.map(Vec::into_iter);
    let mut created = Vec::with_capacity(specs.len());
    for spec in specs {
        let hooks = hooks::hook_infos(ctx, &spec.trigger)?;
        // A hook sees every user's calls of its command and answers them: only an
        // administrator (who may end anyone's connection) may install one.
        if !hooks.is_empty() && !crate::host::may_run(ctx, user, &[b"CLIENT", b"KILL", b"ID", b"1"])
        {
            return Err(
                "NOPERM only a user who may run CLIENT KILL may hook commands (a hook sees and \
                 answers every user's calls)"
                    .into(),
            );
        }
        let spec_trigger = spec.trigger.clone();
        let id = ids
            .as_mut()
            .and_then(Iterator::next)
            .or_else(|| spec.id.clone())
            .unwrap_or_else(|| gears.executions.next_id());
        created.push(Arc::new(Registration {
            id,
            language,
            user: user.to_vec(),
            description: spec.plan.description.clone(),
            step_args: crate::commands::step_args(&spec.plan, session).into(),
            hooks,
            spec,
            session: session.clone(),
            session_host: session_host.clone(),
            session_id: session_id.to_string(),
            stats: Mutex::new(Stats::default()),
            queue: Mutex::new(VecDeque::new()),
            draining: AtomicBool::new(false),
            removed: AtomicBool::new(false),
            executions: Mutex::new(VecDeque::new()),
            stream: matches!(spec_trigger, Trigger::Stream(_)).then(streams::StreamState::new),
            timer: matches!(spec_trigger, Trigger::Timer(_)).then(timers::TimerState::default),
        }));
    }
    Ok(created)
}

/// In one step, removes the registrations `removed` and publishes `added` where the first
/// removed one was (else at the end): no event sees both or neither. Refused, changing
/// nothing, if an added one takes a trigger name or a hook that the others forbid.
/// Whether [`swap`] would accept these registrations now (their triggers and hooks do not
/// clash with the ones that stay), without changing anything.
pub(crate) fn check_swap(removed: &[String], added: &[Arc<Registration>]) -> Result<(), String> {
    let kept: Vec<Arc<Registration>> = all()
        .iter()
        .filter(|r| !removed.contains(&r.id))
        .cloned()
        .collect();
    triggers::verify(&kept, added).and_then(|()| hooks::verify(&kept, added))
}

pub(crate) fn swap(removed: &[String], added: Vec<Arc<Registration>>) -> Result<(), String> {
    let mut gone = Vec::new();
    let mut refused = None;
    update(|list| {
        let kept: Vec<Arc<Registration>> = list
            .iter()
            .filter(|r| !removed.contains(&r.id))
            .cloned()
            .collect();
        if let Err(error) =
            triggers::verify(&kept, &added).and_then(|()| hooks::verify(&kept, &added))
        {
            refused = Some(error);
            return;
        }
        let at = list.iter().position(|r| removed.contains(&r.id));
        gone = list
            .iter()
            .filter(|r| removed.contains(&r.id))
            .cloned()
            .collect();
        *list = kept;
        let at = at.unwrap_or(list.len()).min(list.len());
        list.splice(at..at, added.iter().cloned());
    });
    if let Some(error) = refused {
        return Err(error);
    }
    for registration in gone {
        retire(&registration, false);
    }
    streams::started(&added);
    timers::started(&added);
    Ok(())
}

/// Calls each new (not yet published) registration's `onRegistered` callback, on the thread
/// that made them; the first error stops (the caller then does not publish them).
pub(crate) fn on_registered(
    created: &[Arc<Registration>],
    session: &Arc<dyn Session>,
) -> gears_core::Result<()> {
    for registration in created {
        let Some(callback) = registration.spec.on_registered else {
            continue;
        };
        let mut result = Ok(());
        session.enter(&mut |runtime| {
            result = runtime.call(callback, &[]).map(|_| ());
        });
        result?;
    }
    Ok(())
}

/// Removes a registration on this shard only (another shard's `RG.UNREGISTER`).
pub(crate) fn remove_here(id: &str, abort_pending: bool) -> bool {
    remove(id, abort_pending)
}

/// Removes a registration: no more events reach it; its queued events are dropped with
/// `abortpending`, else they still run.
pub(crate) fn remove(id: &str, abort_pending: bool) -> bool {
    let mut found = None;
    update(|list| {
        if let Some(i) = list.iter().position(|r| r.id == id) {
            found = Some(list.remove(i));
        }
    });
    let Some(registration) = found else {
        return false;
    };
    retire(&registration, abort_pending);
    true
}

/// A registration that left the registry: no more events reach it, its executions leave the
/// table, and with `abort_pending` its queued events are dropped (else they still run).
fn retire(registration: &Arc<Registration>, abort_pending: bool) {
    registration.removed.store(true, Ordering::Release);
    streams::retired(registration);
    timers::retired(registration);
    // Its executions leave the table with it.
    let kept = std::mem::take(&mut *lock(&registration.executions));
    if let Some(gears) = crate::gears() {
        for id in kept {
            gears.executions.drop_execution(&id);
        }
    }
    if abort_pending {
        let dropped = std::mem::take(&mut *lock(&registration.queue));
        lock(&registration.stats).aborted += dropped.len() as u64;
    }
}

/// The registration with this id.
pub(crate) fn get(id: &str) -> Option<Arc<Registration>> {
    all().iter().find(|r| r.id == id).cloned()
}

/// The key filter of a registration, if it reads keyspace events.
fn keys_trigger(registration: &Registration) -> Option<&KeysTrigger> {
    match &registration.spec.trigger {
        Trigger::Keys(trigger) => Some(trigger),
        _ => None,
    }
}

/// The command of a CommandReader registration.
fn command_trigger(registration: &Registration) -> Option<&CommandTrigger> {
    match &registration.spec.trigger {
        Trigger::Command(trigger) => Some(trigger),
        _ => None,
    }
}
