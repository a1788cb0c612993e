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
}

impl SessionSpec {
    pub fn encode(&self) -> Vec<u8> {
        bincode::serde::encode_to_vec(self, bincode::config::standard()).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Option<SessionSpec> {
        bincode::serde::decode_from_slice(bytes, bincode::config::standard())
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
}

static SESSIONS: Mutex<Vec<SessionSpec>> = Mutex::new(Vec::new());

pub(super) fn sessions() -> MutexGuard<'static, Vec<SessionSpec>> {
    SESSIONS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Every session, in creation order.
pub(crate) fn all() -> Vec<SessionSpec> {
    sessions().clone()
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
}

/// Makes a script's registrations a session: checks the session options, creates the
/// registrations (running their `onRegistered`), then in one step replaces those of the
/// session it upgrades or replaces. Returns the spec to replicate.
pub(crate) fn establish(
    new: NewSession<'_>,
    specs: Vec<RegistrationSpec>,
) -> Result<SessionSpec, String> {
    let id = new
        .options
        .id
        .clone()
        .unwrap_or_else(|| new.execution_id.to_string());
    // The session this one replaces, if any.
    let replaced = {
        let sessions = sessions();
        let existing = sessions.iter().find(|s| s.id == id).cloned();
        match &new.options.replace_with {
            Some(old) => {
                let Some(old_session) = sessions.iter().find(|s| &s.id == old).cloned() else {
                    return Err(format!(
                        "Can not replace with {old}, session does not exists."
                    ));
                };
                if existing.is_some() && &id != old {
                    return Err(format!(
                        "Can not replace an existing session {id} with {old}"
                    ));
                }
                Some(old_session)
            }
            None if existing.is_some() && !new.options.upgrade => {
                return Err(format!("Session {id} already exists"));
            }
            None => existing,
        }
    };
    // Another user's session is not theirs to replace (unless they administer the server).
    if let Some(old) = &replaced {
        if old.user != new.caller.user && !new.options.admin {
            return Err(format!("Session {} already exists", old.id));
        }
    }
    super::removals::check(&specs)?;
    let created = super::build(
        new.language,
        &new.caller.user,
        &id,
        new.session,
        new.session_host,
        specs,
        None,
    );
    super::on_registered(&created, new.session).map_err(|e| e.to_string())?;
    let spec = SessionSpec {
        id: id.clone(),
        language: new.language,
        script: new.script.to_string(),
        user: new.caller.user.clone(),
        db: new.caller.db,
        description: new.options.description.clone(),
        registrations: created.iter().map(|r| Some(r.id.clone())).collect(),
    };
    let removed: Vec<String> = replaced
        .as_ref()
        .map(|old| old.live().cloned().collect())
        .unwrap_or_default();
    super::swap(&removed, created);
    let mut sessions = sessions();
    match replaced.and_then(|old| sessions.iter().position(|s| s.id == old.id)) {
        Some(index) => sessions[index] = spec.clone(),
        None => sessions.push(spec.clone()),
    }
    Ok(spec)
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
    let Some(gears) = crate::gears() else {
        return Err("Gears is not initialised".into());
    };
    for id in spec.live() {
        gears.executions.bump_past(id);
    }
    let frontend = crate::commands::frontend(spec.language)?;
    let caller = Caller {
        user: spec.user.clone(),
        db: spec.db,
    };
    let control = ExecutionControl::new(gears.execution_limits());
    let _control_scope = ControlScope::enter(&control);
    let host = Arc::new(RedisHost::new(&caller, Access::Replay, control.clone()));
    let _sync = SyncRun::enter();
    let session_host = SessionHost::new(host.clone());
    let _host_scope = session_host.enter(&host);
    let compiled = frontend.compile(&spec.script, session_host.clone());
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
    let kept: Vec<(RegistrationSpec, String)> = compiled
        .registrations
        .into_iter()
        .zip(spec.registrations.iter())
        .filter_map(|(registration, id)| id.clone().map(|id| (registration, id)))
        .collect();
    let (specs, ids): (Vec<_>, Vec<_>) = kept.into_iter().unzip();
    let created: Vec<Arc<Registration>> = super::build(
        spec.language,
        &spec.user,
        &spec.id,
        &compiled.session,
        &session_host,
        specs,
        Some(ids),
    );
    let registered = super::on_registered(&created, &compiled.session);
    host.finish();
    registered.map_err(|e| e.to_string())?;
    let mut sessions = sessions();
    let removed: Vec<String> = sessions
        .iter()
        .filter(|s| s.id == spec.id)
        .flat_map(|s| s.live().cloned().collect::<Vec<_>>())
        .collect();
    super::swap(&removed, created);
    put(&mut sessions, spec);
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
