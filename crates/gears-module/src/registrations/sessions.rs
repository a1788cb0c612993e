//! Sessions: the script run that created registrations, kept so that they can be made again.
//!
//! A script whose top level calls `register()` becomes a session: its id (`ID`, or its
//! execution's id), language, text, ACL user, database, description and the ids of its
//! registrations. The session is what Gears stores (RDB aux data, see [`super::persist`]) and
//! replicates (`RG.INNERSESSION`): registrations hold language closures, which can not be
//! serialized, so a session is made again by running its script's top level once more
//! ([`recreate`]), with these rules:
//! - commands that write or have side effects are not run again (their effects are already in
//!   the data set): `execute()` returns nil for them; reads run;
//! - `run()` does not start an execution;
//! - each registration gets its old id back; one removed by `RG.UNREGISTER` is not made again;
//! - `onRegistered` runs again.
//!
//! `UPGRADE` replaces a session's registrations with the new script's, all or nothing (a script
//! that fails keeps the old ones); `REPLACE_WITH <old>` does the same for a session under a new
//! id.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use gears_core::control::{ControlScope, ExecutionControl};
use gears_core::registration::RegistrationSpec;
use gears_core::{Language, Session};
use redis_module::{logging::RedisLogLevel, Context};
use serde::{Deserialize, Serialize};

use super::Registration;
use crate::host::{Access, Caller, RedisHost, SessionHost, SyncRun};

/// What is stored and replicated of a session.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub(crate) struct SessionSpec {
    pub id: String,
    pub language: Language,
    pub script: String,
    pub user: Vec<u8>,
    pub db: i32,
    pub description: Option<String>,
    /// The ids of its registrations, in the order its script creates them; `None` for one
    /// removed by `RG.UNREGISTER`.
    pub registrations: Vec<Option<String>>,
    /// In a cluster: its top level's commands and replies on the shard that ran it first
    /// (`cluster::encode_calls`). Made again (on another shard, after a restart, on a
    /// replica), the script's top level gets these replies instead of running its commands.
    #[serde(default)]
    pub calls: Option<Vec<u8>>,
    /// In a cluster: when and where this version of the session was made (ms since the epoch,
    /// node id). Two shards changing one session at once: the later version (then the larger
    /// node id) wins on every shard.
    #[serde(default)]
    pub version: Option<(u64, String)>,
    /// The Python requirements its script needs (installed before it is made again).
    #[serde(default)]
    pub requirements: Vec<String>,
}

/// A version for a session made now on this node (see [`SessionSpec::version`]).
pub(crate) fn new_version() -> Option<(u64, String)> {
    let node = crate::cluster::topology::current()
        .filter(|_| crate::cluster::enabled())?
        .my_id
        .clone();
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Some((millis, node))
}

impl SessionSpec {
    pub fn encode(&self) -> Vec<u8> {
        bincode::serde::encode_to_vec(self, bincode::config::standard()).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Option<SessionSpec> {
        // A length field can not claim more than a session may hold.
        let config = bincode::config::standard().with_limit::<{ 64 << 20 }>();
        std::panic::catch_unwind(|| bincode::serde::decode_from_slice(bytes, config))
            .ok()?
            .ok()
            .map(|(spec, _)| spec)
    }

    /// Ids of its live registrations.
    pub fn live(&self) -> impl Iterator<Item = &String> {
        self.registrations.iter().flatten()
    }
}

/// The session options of `RG.*EXECUTE`.
#[derive(Default, Clone, Debug)]
pub(crate) struct SessionOptions {
    pub id: Option<String>,
    pub description: Option<String>,
    pub upgrade: bool,
    pub replace_with: Option<String>,
    /// The caller may act on other users' sessions (may run `CLIENT KILL`).
    pub admin: bool,
    /// Python requirements (`REQUIREMENTS ...`), installed before the script runs.
    pub requirements: Vec<String>,
    /// `FORCE_REINSTALL_REQUIREMENTS`.
    pub force_reinstall: bool,
}

static SESSIONS: Mutex<Vec<SessionSpec>> = Mutex::new(Vec::new());

pub(super) fn sessions() -> MutexGuard<'static, Vec<SessionSpec>> {
    SESSIONS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Every session, in creation order.
pub(crate) fn all() -> Vec<SessionSpec> {
    sessions().clone()
}

/// The database a session's script ran in (its registrations act there).
pub(crate) fn db_of(session_id: &str) -> Option<i32> {
    sessions().iter().find(|s| s.id == session_id).map(|s| s.db)
}

/// Sessions that could not be made again (after a restart, on a replica), with the reason:
/// kept, saved again and retried at the next load, listed as dead, replaced by an `UPGRADE`.
static FAILED: Mutex<Vec<(SessionSpec, String)>> = Mutex::new(Vec::new());

fn failed_sessions() -> MutexGuard<'static, Vec<(SessionSpec, String)>> {
    FAILED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The sessions that could not be made again, with the reason.
pub(crate) fn failed() -> Vec<(SessionSpec, String)> {
    failed_sessions().clone()
}

/// Records a session that could not be made again.
pub(crate) fn fail(spec: SessionSpec, reason: String) {
    let mut failed = failed_sessions();
    failed.retain(|(s, _)| s.id != spec.id);
    failed.push((spec, reason));
}

/// Every session to save: the live ones, then the failed ones.
pub(crate) fn saved() -> Vec<SessionSpec> {
    let mut all = all();
    all.extend(failed_sessions().iter().map(|(s, _)| s.clone()));
    all
}

/// What a script's registrations need to become a session.
pub(crate) struct NewSession<'a> {
    pub language: Language,
    pub caller: &'a Caller,
    pub script: &'a str,
    pub options: &'a SessionOptions,
    /// The id of the execution that ran the script (the session's id without `ID`).
    pub execution_id: &'a str,
    pub session: &'a Arc<dyn Session>,
    pub session_host: &'a Arc<SessionHost>,
    /// In a cluster: the top level's recorded commands (see [`SessionSpec::calls`]).
    pub calls: Option<Vec<u8>>,
}

/// Which session a new one replaces (`UPGRADE`, `REPLACE_WITH`), after checking the options
/// against the sessions now: RedisGears 1.2's errors.
fn replaced_by(
    sessions: &[SessionSpec],
    id: &str,
    options: &SessionOptions,
    caller: &Caller,
) -> Result<Option<SessionSpec>, String> {
    let existing = sessions.iter().find(|s| s.id == id).cloned();
    let replaced = match &options.replace_with {
        Some(old) => {
            let Some(old_session) = sessions.iter().find(|s| &s.id == old).cloned() else {
                return Err(format!(
                    "Can not replace with {old}, session does not exists."
                ));
            };
            if existing.is_some() && id != old {
                return Err(format!(
                    "Can not replace an existing session {id} with {old}"
                ));
            }
            Some(old_session)
        }
        None if existing.is_some() && !options.upgrade => {
            return Err(format!("Session {id} already exists"));
        }
        None => existing,
    };
    // Another user's session is not theirs to replace (unless they administer the server).
    if let Some(old) = &replaced {
        if old.user != caller.user && !options.admin {
            return Err(format!("Session {} already exists", old.id));
        }
    }
    Ok(replaced)
}

/// Makes a script's registrations a session: checks the session options, creates the
/// registrations (running their `onRegistered`, outside any lock), then under the Redis lock
/// (once writes are not paused) checks again, replaces those of the session it upgrades or
/// replaces in one step, and propagates the session to replicas and the AOF.
///
/// In a cluster, every other shard prepares the same session first (see
/// [`crate::cluster::sessions::agree`]); it becomes live here and there only if all could.
pub(crate) fn establish(
    new: NewSession<'_>,
    specs: Vec<RegistrationSpec>,
    host: &RedisHost,
) -> Result<(SessionSpec, Option<SessionSpec>), Refused> {
    let id = match &new.options.id {
        Some(id) => id.clone(),
        None => fresh_id(new.execution_id),
    };
    let replacing = replaced_by(&known(), &id, new.options, new.caller)?;
    super::removals::check(&specs)?;
    let mut specs = specs;
    super::streams::name_groups(&id, &mut specs);
    // Under the lock: the commands they hook are looked up.
    let created = host.with_lock(|ctx| {
        let owner = super::Owner {
            language: new.language,
            user: &new.caller.user,
            session_id: &id,
            session: new.session,
            session_host: new.session_host,
        };
        super::build(&owner, specs, None, ctx)
    })?;
    super::on_registered(&created, new.session).map_err(|e| e.to_string())?;
    let spec = SessionSpec {
        id: id.clone(),
        language: new.language,
        script: new.script.to_string(),
        user: new.caller.user.clone(),
        db: new.caller.db,
        description: new.options.description.clone(),
        registrations: created.iter().map(|r| Some(r.id.clone())).collect(),
        calls: new.calls.clone(),
        version: new_version(),
        requirements: new.options.requirements.clone(),
    };
    let agreement =
        crate::cluster::sessions::agree(&spec, replacing.as_ref().map(|old| old.id.as_str()), host)
            .map_err(Refused::Shards)?;
    let made = host.with_lock_unpaused(|ctx| {
        if read_only_replica(ctx) {
            return Err("READONLY You can't write against a read only replica.".to_string());
        }
        // Under the lock: no other session change can come between this check and the swap.
        let replaced = replaced_by(&known(), &id, new.options, new.caller)?;
        let mut sessions = sessions();
        let removed: Vec<String> = replaced
            .as_ref()
            .map(|old| old.live().cloned().collect())
            .unwrap_or_default();
        let max = crate::gears()
            .map(|g| g.config.integer(crate::config::MAX_REGISTRATIONS).max(0) as usize)
            .unwrap_or(usize::MAX);
        let after = super::count() - removed.len().min(super::count()) + created.len();
        if after > max {
            return Err(format!(
                "the registration limit is reached ({max} registrations, MaxRegistrations)"
            ));
        }
        // The last tenth is kept for users who may run CLIENT KILL (PostgreSQL keeps
        // connections for superusers alike): one user can not take every registration.
        let reserved = max.div_ceil(10);
        if after > max - reserved && !new.options.admin {
            return Err(format!(
                "the registration limit is reached ({max} registrations, MaxRegistrations; the \
                 last {reserved} are kept for users who may run CLIENT KILL)"
            ));
        }
        super::timers::key::check_claims(ctx, new.caller.db, &created, &removed)?;
        super::swap(&removed, created.clone())?;
        super::timers::key::claim(ctx, new.caller.db, &created);
        if let Some(old) = &replaced {
            failed_sessions().retain(|(s, _)| s.id != old.id);
        }
        match replaced
            .as_ref()
            .and_then(|old| sessions.iter().position(|s| s.id == old.id))
        {
            Some(index) => sessions[index] = spec.clone(),
            None => sessions.push(spec.clone()),
        }
        drop(sessions);
        if let Some(old) = replaced.as_ref().filter(|old| old.id != spec.id) {
            // Replicas and the AOF drop the session it replaced (`REPLACE_WITH`).
            super::persist::propagate_del(ctx, &old.id);
        }
        super::persist::propagate_set(ctx, &spec);
        if let Some(agreement) = &agreement {
            agreement.commit(ctx);
        }
        Ok((spec.clone(), replaced))
    });
    if let Some(agreement) = &agreement {
        match &made {
            Ok(_) => agreement.wait_committed(),
            Err(_) => host.with_lock(|ctx| agreement.abort(ctx)),
        }
    }
    made.map_err(Refused::Here)
}

/// Why a script's registrations did not become a session.
#[derive(Debug)]
pub(crate) enum Refused {
    /// This shard refused (RedisGears' error text).
    Here(String),
    /// Other shards of the cluster refused: one error each (`ERR shard-<id>: ...`).
    Shards(Vec<String>),
}

impl From<String> for Refused {
    fn from(error: String) -> Self {
        Refused::Here(error)
    }
}

/// Live and failed sessions: the ids a new session may not take without replacing them.
fn known() -> Vec<SessionSpec> {
    saved()
}

/// The id of a session started without `ID`: its execution's id, unless a session took it.
fn fresh_id(execution_id: &str) -> String {
    let taken = |id: &str| known().iter().any(|s| s.id == id);
    if !taken(execution_id) {
        return execution_id.to_string();
    }
    loop {
        let id = match crate::gears() {
            Some(gears) => gears.executions.next_id(),
            None => return execution_id.to_string(),
        };
        if !taken(&id) {
            return id;
        }
    }
}

/// True on a replica that refuses writes.
fn read_only_replica(ctx: &Context) -> bool {
    // SAFETY: a plain query of the server's state.
    let flags = unsafe { redis_module::raw::RedisModule_GetContextFlags.unwrap()(ctx.ctx) } as u32;
    flags & redis_module::raw::REDISMODULE_CTX_FLAGS_SLAVE != 0
        && flags & redis_module::raw::REDISMODULE_CTX_FLAGS_READONLY != 0
}

/// Notes that a registration was removed (`RG.UNREGISTER`): its session no longer makes it
/// again, and a session left without registrations ends. Returns the changed session (to
/// replicate) or the id of the ended one.
pub(crate) fn forget_registration(registration_id: &str) -> Option<Result<SessionSpec, String>> {
    let mut sessions = sessions();
    let index = sessions
        .iter()
        .position(|s| s.live().any(|id| id == registration_id))?;
    let session = &mut sessions[index];
    for entry in session.registrations.iter_mut() {
        if entry.as_deref() == Some(registration_id) {
            *entry = None;
        }
    }
    if session.live().next().is_none() {
        let ended = sessions.remove(index);
        return Some(Err(ended.id));
    }
    Some(Ok(session.clone()))
}

/// Makes a stored or replicated session again, on the calling thread, which holds the Redis
/// lock (Redis's main thread at the end of loading, or running `RG.INNERSESSION`). A session of
/// the same id is replaced.
pub(crate) fn recreate(ctx: &Context, spec: SessionSpec) -> Result<(), String> {
    commit(prepare(ctx, spec, None)?)
}

/// A session made again but not live yet: its registrations exist (their `onRegistered` ran)
/// and were checked against the live ones; [`commit`] publishes them, dropping it discards them
/// (a cluster's change that another shard refused).
pub(crate) struct Prepared {
    pub spec: SessionSpec,
    /// The id of another session it replaces (`REPLACE_WITH`).
    pub replaces: Option<String>,
    created: Vec<Arc<Registration>>,
}

/// The registrations of the sessions `ids` (those a change of them removes).
fn live_of(sessions: &[SessionSpec], ids: &[&str]) -> Vec<String> {
    sessions
        .iter()
        .filter(|s| ids.contains(&s.id.as_str()))
        .flat_map(|s| s.live().cloned().collect::<Vec<_>>())
        .collect()
}

/// The first half of [`recreate`]: runs the session's script again (holding the Redis lock)
/// and checks its registrations could replace those of `spec.id` (and of `replaces`).
pub(crate) fn prepare(
    ctx: &Context,
    spec: SessionSpec,
    replaces: Option<String>,
) -> Result<Prepared, String> {
    let Some(gears) = crate::gears() else {
        return Err("Gears is not initialised".into());
    };
    for id in spec.live() {
        gears.executions.bump_past(id);
    }
    let frontend = crate::commands::frontend(spec.language)?;
    crate::requirements::use_installed(&spec.requirements)?;
    let caller = Caller {
        user: spec.user.clone(),
        db: spec.db,
    };
    let control = ExecutionControl::new(gears.execution_limits());
    // It runs holding the Redis lock (loading's end, a replica's command): timed like an atomic
    // block.
    control.begin_atomic();
    let _control_scope = ControlScope::enter(&control);
    let host = Arc::new(RedisHost::new(&caller, Access::Replay, control.clone()));
    // Recorded in a cluster: the top level gets the first shard's replies.
    if let Some(calls) = spec.calls.as_deref().and_then(crate::cluster::decode_calls) {
        host.set_top_level(crate::host::TopLevel::Replay(calls.into()));
    }
    let _sync = SyncRun::enter();
    let session_host = SessionHost::new(host.clone());
    let _host_scope = session_host.enter(&host);
    let compiled = frontend.compile(&spec.script, session_host.clone());
    host.end_top_level();
    let compiled = match compiled {
        Ok(compiled) => compiled,
        Err(e) => {
            host.finish();
            return Err(e.to_string());
        }
    };
    if compiled.registrations.len() != spec.registrations.len() {
        ctx.log(
            RedisLogLevel::Warning,
            &format!(
                "GEARS: session {}: its script now registers {} pipelines where it registered {}",
                spec.id,
                compiled.registrations.len(),
                spec.registrations.len()
            ),
        );
    }
    let mut compiled = compiled;
    super::streams::name_groups(&spec.id, &mut compiled.registrations);
    let kept: Vec<(RegistrationSpec, String)> = compiled
        .registrations
        .into_iter()
        .zip(spec.registrations.iter())
        .filter_map(|(registration, id)| id.clone().map(|id| (registration, id)))
        .collect();
    let (specs, ids): (Vec<_>, Vec<_>) = kept.into_iter().unzip();
    let owner = super::Owner {
        language: spec.language,
        user: &spec.user,
        session_id: &spec.id,
        session: &compiled.session,
        session_host: &session_host,
    };
    let created: Vec<Arc<Registration>> = match super::build(&owner, specs, Some(ids), ctx) {
        Ok(created) => created,
        Err(e) => {
            host.finish();
            return Err(e);
        }
    };
    let registered = super::on_registered(&created, &compiled.session);
    host.finish();
    registered.map_err(|e| e.to_string())?;
    let ids: Vec<&str> = std::iter::once(spec.id.as_str())
        .chain(replaces.as_deref())
        .collect();
    super::check_swap(&live_of(&sessions(), &ids), &created)?;
    Ok(Prepared {
        spec,
        replaces,
        created,
    })
}

/// Publishes a prepared session: its registrations replace those of the session of its id
/// (and of the one it replaces), in one step.
pub(crate) fn commit(prepared: Prepared) -> Result<(), String> {
    let Prepared {
        spec,
        replaces,
        created,
    } = prepared;
    let ids: Vec<&str> = std::iter::once(spec.id.as_str())
        .chain(replaces.as_deref())
        .collect();
    let mut sessions = sessions();
    super::swap(&live_of(&sessions, &ids), created)?;
    failed_sessions().retain(|(s, _)| !ids.contains(&s.id.as_str()));
    // In the place of the session it replaces (as on the shard that made it), else last.
    match replaces
        .as_deref()
        .filter(|old| *old != spec.id)
        .and_then(|old| sessions.iter().position(|s| s.id == old))
    {
        Some(index) => {
            let id = spec.id.clone();
            sessions[index] = spec;
            let mut at = 0;
            sessions.retain(|s| {
                let keep = at == index || s.id != id;
                at += 1;
                keep
            });
        }
        None => put(&mut sessions, spec),
    }
    Ok(())
}

/// Puts a session in the list: in the place of the one of the same id, else last.
pub(super) fn put(sessions: &mut Vec<SessionSpec>, spec: SessionSpec) {
    match sessions.iter().position(|s| s.id == spec.id) {
        Some(index) => sessions[index] = spec,
        None => sessions.push(spec),
    }
}

/// Ends a session and removes its registrations.
pub(crate) fn end(id: &str) -> bool {
    failed_sessions().retain(|(s, _)| s.id != id);
    let removed = {
        let mut sessions = sessions();
        let Some(index) = sessions.iter().position(|s| s.id == id) else {
            return false;
        };
        sessions.remove(index)
    };
    for registration in removed.live() {
        super::remove(registration, false);
    }
    true
}
