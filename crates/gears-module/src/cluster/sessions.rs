//! Registrations on every shard, all or nothing: a session made (or upgraded) on one shard is
//! made on every other from the same script and the same recorded top-level replies, in two
//! phases. The shard that runs the script holds the session's id on every shard and each
//! prepares the session (runs the script, builds and checks the registrations, runs
//! `onRegistered`) without making it live; only when every shard could does each make it live
//! (commit). If a shard can not, none does, and the reply lists why, per shard, as RedisGears 1.2
//! did (`ERR shard-<id>: ...`). Two shards changing one session at once: a shard that already
//! holds the session's id for another change answers busy; the change that did not get every
//! shard lets go and tries again after a random pause, so changes of one session happen one
//! after the other, in the same order on every shard. `RG.UNREGISTER` reaches every shard.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis_module::{logging::RedisLogLevel, Context};

use super::bus::{self, ExecutionKey, Message};
use super::{exchange, topology};
use crate::host::RedisHost;
use crate::registrations::persist;
use crate::registrations::sessions::{self as local, SessionSpec};

/// A shard's answer to a prepare when another change holds the session.
const BUSY: &str = "BUSY the session is being changed from another shard";

/// A change of sessions in progress on this shard: the change (its initiator and number), the
/// session ids it holds, since when, and (on a shard other than the initiator) the prepared
/// session waiting for its commit.
struct Hold {
    key: ExecutionKey,
    ids: Vec<String>,
    since: Instant,
    prepared: Option<local::Prepared>,
}

static HOLDS: Mutex<Vec<Hold>> = Mutex::new(Vec::new());

/// How long a hold lasts without its commit or abort (its initiator died or was cut off).
fn lease() -> Duration {
    super::idle() * 3
}

/// Holds `ids` for the change `key`, unless another change holds one of them.
fn try_hold(key: &ExecutionKey, ids: &[String]) -> bool {
    let lease = lease();
    let mut holds = HOLDS.lock().unwrap_or_else(PoisonError::into_inner);
    // Expired holds let go (their prepared sessions are dropped once the list is unlocked).
    let (expired, live): (Vec<Hold>, Vec<Hold>) = std::mem::take(&mut *holds)
        .into_iter()
        .partition(|h| h.since.elapsed() >= lease);
    *holds = live;
    let _expired = expired;
    if holds
        .iter()
        .any(|h| h.key != *key && h.ids.iter().any(|id| ids.contains(id)))
    {
        return false;
    }
    if !holds.iter().any(|h| h.key == *key) {
        holds.push(Hold {
            key: key.clone(),
            ids: ids.to_vec(),
            since: Instant::now(),
            prepared: None,
        });
    }
    true
}

/// Ends the hold of the change `key`; its prepared session, if any.
fn release(key: &ExecutionKey) -> Option<local::Prepared> {
    let mut holds = HOLDS.lock().unwrap_or_else(PoisonError::into_inner);
    let index = holds.iter().position(|h| h.key == *key)?;
    holds.remove(index).prepared
}

/// A change every shard prepared: [`Agreement::commit`] makes it live everywhere,
/// [`Agreement::abort`] discards it.
pub(crate) struct Agreement {
    key: ExecutionKey,
    others: Vec<String>,
}

impl Agreement {
    /// Tells the other shards to make the session live (holding the Redis lock, right after
    /// this shard did). [`Agreement::wait_committed`] then waits until they did.
    pub(crate) fn commit(&self, ctx: &Context) {
        exchange::mailbox(&self.committed());
        self.finish(
            ctx,
            Message::SessionCommit {
                key: self.key.clone(),
                reply_to: self.committed(),
            },
        );
    }

    /// Waits (not holding the Redis lock) until every other shard made the committed session
    /// live, so that the reply comes when every shard fires for it; a shard that did not answer
    /// within `ExecutionMaxIdleTime` is logged.
    pub(crate) fn wait_committed(&self) {
        let key = self.committed();
        let outcome = exchange::mailbox(&key).wait_finished(&self.others, super::idle());
        exchange::forget(&key);
        let problems = match outcome {
            Ok(errors) => errors,
            Err(e) => vec![e.to_string()],
        };
        if !problems.is_empty() {
            if let Some(gears) = crate::gears() {
                let ctx = Context::new(gears.log_context.0);
                ctx.log(
                    RedisLogLevel::Warning,
                    &format!("GEARS: a session change: {}", problems.join("; ")),
                );
            }
        }
    }

    /// The key the commit's answers come to.
    fn committed(&self) -> ExecutionKey {
        ExecutionKey {
            initiator: self.key.initiator.clone(),
            id: format!("{}:commit", self.key.id),
        }
    }

    /// Tells the other shards to discard the prepared session (this shard could not make it).
    pub(crate) fn abort(&self, ctx: &Context) {
        self.finish(
            ctx,
            Message::SessionAbort {
                key: self.key.clone(),
            },
        );
    }

    fn finish(&self, ctx: &Context, message: Message) {
        for id in &self.others {
            bus::send(ctx, id, &message);
        }
        release(&self.key);
    }
}

/// The first phase of a session change in a cluster: holds the session (and the one it
/// replaces) on every shard and has every other shard prepare it. `None` outside a cluster;
/// the shards' errors if one could not (then none keeps anything). A shard busy with another
/// change of the session: lets go everywhere and tries again after a random pause, until
/// `ExecutionMaxIdleTime` has passed.
pub(crate) fn agree(
    spec: &SessionSpec,
    replaces: Option<&str>,
    host: &RedisHost,
) -> Result<Option<Agreement>, Vec<String>> {
    if !super::enabled() {
        return Ok(None);
    }
    let Some(topology) = topology::current() else {
        return Ok(None);
    };
    if topology.shards.len() < 2 || !topology.i_am_a_shard() {
        return Ok(None);
    }
    let others: Vec<String> = topology
        .shards
        .iter()
        .map(|s| s.id.clone())
        .filter(|id| *id != topology.my_id)
        .collect();
    let mut ids = vec![spec.id.clone()];
    ids.extend(replaces.filter(|old| *old != spec.id).map(str::to_string));
    let encoded = spec.encode();
    // Its requirements' wheels, read once for every try.
    let requirements = crate::requirements::blobs(&spec.requirements);
    let deadline = Instant::now() + super::idle();
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    for attempt in 0u32.. {
        let key = ExecutionKey {
            initiator: topology.my_id.clone(),
            id: format!(
                "session:{}:{}",
                spec.id,
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ),
        };
        if try_hold(&key, &ids) {
            match prepare_everywhere(&key, &others, (&encoded, &requirements), replaces, host) {
                Ok(()) => return Ok(Some(Agreement { key, others })),
                Err(errors) => {
                    host.with_lock(|ctx| {
                        Agreement {
                            key: key.clone(),
                            others: others.clone(),
                        }
                        .abort(ctx)
                    });
                    let refused: Vec<String> =
                        errors.into_iter().filter(|e| !e.ends_with(BUSY)).collect();
                    if !refused.is_empty() {
                        return Err(refused);
                    }
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(vec![format!(
                "ERR the session {} is being changed from another shard, try again",
                spec.id
            )]);
        }
        std::thread::sleep(pause(attempt));
    }
    unreachable!("the loop returns")
}

/// A random pause before trying a busy change again, longer after each try (10 ms to 200 ms).
fn pause(attempt: u32) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(attempt);
    let most = 10 + 20 * u64::from(attempt.min(9));
    Duration::from_millis(10 + hasher.finish() % most)
}

/// Sends the prepare of a change to the other shards and waits for their answers.
fn prepare_everywhere(
    key: &ExecutionKey,
    others: &[String],
    (spec, requirements): (&[u8], &[Vec<u8>]),
    replaces: Option<&str>,
    host: &RedisHost,
) -> Result<(), Vec<String>> {
    let mailbox = exchange::mailbox(key);
    let message = Message::SessionPrepare {
        reply_to: key.clone(),
        spec: spec.to_vec(),
        replaces: replaces.map(str::to_string),
        requirements: requirements.to_vec(),
    };
    let unreachable: Vec<String> = host.with_lock(|ctx| {
        others
            .iter()
            .filter(|id| !bus::send(ctx, id, &message))
            .map(|id| format!("ERR shard-{id}: could not be reached (cluster bus)"))
            .collect()
    });
    let errors = if unreachable.is_empty() {
        match mailbox.wait_finished(others, super::idle()) {
            Ok(errors) => errors,
            Err(e) => vec![format!("ERR {e}")],
        }
    } else {
        unreachable
    };
    exchange::forget(key);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Tells every other shard that a registration was removed here (`RG.UNREGISTER`), holding
/// the Redis lock.
pub(crate) fn unregistered(ctx: &Context, id: &str, abort_pending: bool) {
    if !super::enabled() {
        return;
    }
    let Some(topology) = topology::current() else {
        return;
    };
    let message = Message::Unregister {
        id: id.to_string(),
        abort_pending,
    };
    for shard in topology.shards.iter().filter(|s| s.id != topology.my_id) {
        bus::send(ctx, &shard.id, &message);
    }
}

/// Whether this node has the cluster's sessions (asked once it is in a cluster with shards).
static CAUGHT_UP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A node that joined the cluster, or started again, asks a shard for the sessions (every
/// second until one answers): it then has every registration the others have, and none they
/// removed meanwhile. On Redis's main thread.
pub(super) fn catch_up(ctx: &Context) {
    use std::sync::atomic::Ordering;
    if CAUGHT_UP.load(Ordering::Relaxed) || !is_master(ctx) {
        return;
    }
    let Some(topology) = topology::current() else {
        return;
    };
    let Some(source) = topology
        .shards
        .iter()
        .map(|s| s.id.as_str())
        .filter(|id| *id != topology.my_id)
        .min()
    else {
        return;
    };
    // Only sessions this node had when it asked can be found gone (one made meanwhile on
    // every shard may reach it before the answer).
    *ASKED_WITH
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) =
        Some(local::all().into_iter().map(|s| s.id).collect());
    bus::send(
        ctx,
        source,
        &Message::SessionsWanted {
            from: topology.my_id.clone(),
        },
    );
}

/// The sessions this node had when it last asked for the cluster's.
static ASKED_WITH: std::sync::Mutex<Option<Vec<String>>> = std::sync::Mutex::new(None);

fn is_master(ctx: &Context) -> bool {
    // SAFETY: a plain query of the server's role.
    let flags = unsafe { redis_module::raw::RedisModule_GetContextFlags.unwrap()(ctx.ctx) } as u32;
    flags & redis_module::raw::REDISMODULE_CTX_FLAGS_MASTER != 0
}

/// True if this shard has the session in a later version than `spec`.
fn newer_here(spec: &SessionSpec) -> bool {
    local::all()
        .iter()
        .find(|s| s.id == spec.id)
        .is_some_and(|here| here.version > spec.version)
}

/// A session message from another shard (on Redis's main thread, holding the lock).
pub(super) fn receive(ctx: &Context, message: Message) {
    let me = super::my_id();
    match message {
        Message::Session { spec, requirements } => {
            for blob in &requirements {
                if let Err(e) = crate::requirements::install_blob(blob) {
                    ctx.log(RedisLogLevel::Warning, &format!("GEARS: {e}"));
                }
            }
            let made = match SessionSpec::decode(&spec) {
                None => Err("the session could not be read".to_string()),
                // The same here already, or a later version made here meanwhile (another
                // shard will get it too).
                Some(spec) if newer_here(&spec) || local::all().contains(&spec) => Ok(()),
                Some(spec) => local::recreate(ctx, spec.clone()).map(|()| {
                    persist::propagate_set(ctx, &spec);
                }),
            };
            if let Err(e) = made {
                ctx.log(
                    RedisLogLevel::Warning,
                    &format!("GEARS: a session from another shard could not be made: {e}"),
                );
            }
        }
        Message::SessionPrepare {
            reply_to,
            spec,
            replaces,
            requirements,
        } => {
            let installed = requirements
                .iter()
                .try_for_each(|blob| crate::requirements::install_blob(blob));
            let prepared = installed.and_then(|()| prepare_here(ctx, &reply_to, &spec, replaces));
            let errors = match prepared {
                Ok(()) => Vec::new(),
                Err(e) => vec![format!("ERR shard-{me}: {e}")],
            };
            super::finished(ctx, reply_to, errors);
        }
        Message::SessionCommit { key, reply_to } => {
            let errors = match commit_here(ctx, &key) {
                Ok(()) => Vec::new(),
                Err(e) => {
                    let e = format!("shard-{me}: {e}");
                    ctx.log(RedisLogLevel::Warning, &format!("GEARS: {e}"));
                    vec![e]
                }
            };
            super::finished(ctx, reply_to, errors);
        }
        Message::SessionAbort { key } => {
            release(&key);
        }
        Message::SessionsWanted { from } => {
            let sessions = local::all();
            for spec in &sessions {
                bus::send(
                    ctx,
                    &from,
                    &Message::Session {
                        spec: spec.encode(),
                        requirements: crate::requirements::blobs(&spec.requirements),
                    },
                );
            }
            let ids = sessions.into_iter().map(|s| s.id).collect();
            bus::send(ctx, &from, &Message::SessionsSent { ids });
        }
        Message::SessionsSent { ids } => {
            let had = ASKED_WITH
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take()
                .unwrap_or_default();
            for id in had {
                if !ids.contains(&id) && local::end(&id) {
                    persist::propagate_del(ctx, &id);
                }
            }
            CAUGHT_UP.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Message::Unregister { id, abort_pending }
            if crate::registrations::remove_here(&id, abort_pending) =>
        {
            match local::forget_registration(&id) {
                Some(Ok(session)) => persist::propagate_set(ctx, &session),
                Some(Err(ended)) => persist::propagate_del(ctx, &ended),
                None => {}
            }
        }
        _ => {}
    }
}

/// Prepares another shard's session change here (holding the Redis lock): holds its ids, runs
/// its script and keeps the registrations until the commit.
fn prepare_here(
    ctx: &Context,
    key: &ExecutionKey,
    spec: &[u8],
    replaces: Option<String>,
) -> Result<(), String> {
    let spec = SessionSpec::decode(spec).ok_or("the session could not be read")?;
    let mut ids = vec![spec.id.clone()];
    ids.extend(replaces.clone().filter(|old| *old != spec.id));
    if !try_hold(key, &ids) {
        return Err(BUSY.to_string());
    }
    match local::prepare(ctx, spec, replaces) {
        Ok(prepared) => {
            let mut holds = HOLDS.lock().unwrap_or_else(PoisonError::into_inner);
            match holds.iter_mut().find(|h| h.key == *key) {
                Some(hold) => hold.prepared = Some(prepared),
                None => return Err("the change was let go while it was prepared".into()),
            }
            Ok(())
        }
        Err(e) => {
            release(key);
            Err(e)
        }
    }
}

/// Makes another shard's prepared session change live here (holding the Redis lock).
fn commit_here(ctx: &Context, key: &ExecutionKey) -> Result<(), String> {
    let Some(prepared) = release(key) else {
        return Err(format!(
            "a session change from {} came to be made live after this shard let it go (3 x \
             ExecutionMaxIdleTime without an answer)",
            key.initiator
        ));
    };
    let spec = prepared.spec.clone();
    let replaces = prepared.replaces.clone();
    local::commit(prepared).map_err(|e| {
        format!(
            "session {}: the cluster made it, this shard could not: {e}",
            spec.id
        )
    })?;
    if let Some(old) = replaces.filter(|old| *old != spec.id) {
        persist::propagate_del(ctx, &old);
    }
    persist::propagate_set(ctx, &spec);
    Ok(())
}
