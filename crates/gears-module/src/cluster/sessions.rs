//! Registrations on every shard, all or nothing: a session made (or upgraded) on one shard is
//! made on every other from the same script and the same recorded top-level replies; if a
//! shard can not, it is undone everywhere (an upgrade goes back to the old session) and the
//! reply lists why, per shard, as RedisGears 1.2 did (`ERR shard-<id>: ...`). `RG.UNREGISTER`
//! reaches every shard.

use std::sync::Arc;

use redis_module::Context;

use super::bus::{self, ExecutionKey, Message};
use super::{exchange, topology};
use crate::host::RedisHost;
use crate::registrations::persist;
use crate::registrations::sessions::{self as local, SessionSpec};

/// Makes `spec` on every other shard; on a failure, undoes it everywhere (back to `replaced`,
/// the session it upgraded, if any) and gives the errors.
pub(crate) fn apply_everywhere(
    spec: &SessionSpec,
    replaced: Option<&SessionSpec>,
    host: &Arc<RedisHost>,
) -> Result<(), Vec<String>> {
    if !super::enabled() {
        return Ok(());
    }
    let Some(topology) = topology::current() else {
        return Ok(());
    };
    if topology.shards.len() < 2 || !topology.i_am_a_shard() {
        return Ok(());
    }
    let others: Vec<String> = topology
        .shards
        .iter()
        .map(|s| s.id.clone())
        .filter(|id| *id != topology.my_id)
        .collect();
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let key = ExecutionKey {
        initiator: topology.my_id.clone(),
        id: format!(
            "session:{}:{}",
            spec.id,
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ),
    };
    let mailbox = exchange::mailbox(&key);
    let message = Message::Session {
        reply_to: Some(key.clone()),
        spec: spec.encode(),
    };
    let unreachable: Vec<String> = host.with_lock(|ctx| {
        others
            .iter()
            .filter(|id| !bus::send(ctx, id, &message))
            .map(|id| format!("ERR shard-{id}: could not be reached (cluster bus)"))
            .collect()
    });
    let errors = if unreachable.is_empty() {
        match mailbox.wait_finished(&others, super::idle()) {
            Ok(errors) => errors,
            Err(e) => vec![format!("ERR {e}")],
        }
    } else {
        unreachable
    };
    exchange::forget(&key);
    if errors.is_empty() {
        return Ok(());
    }
    // Undone everywhere: back to the session it replaced, or none.
    host.with_lock(|ctx| {
        let undo = match replaced {
            Some(old) => {
                // The old session again, as the newest version (it must win everywhere).
                let mut old = old.clone();
                old.version = local::new_version();
                if local::recreate(ctx, old.clone()).is_ok() {
                    persist::propagate_set(ctx, &old);
                }
                Message::Session {
                    reply_to: None,
                    spec: old.encode(),
                }
            }
            None => {
                if local::end(&spec.id) {
                    persist::propagate_del(ctx, &spec.id);
                }
                Message::SessionEnd {
                    id: spec.id.clone(),
                }
            }
        };
        for id in &others {
            bus::send(ctx, id, &undo);
        }
    });
    Err(errors)
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
    let me = topology::current()
        .map(|t| t.my_id.clone())
        .unwrap_or_default();
    match message {
        Message::Session { reply_to, spec } => {
            let result = match SessionSpec::decode(&spec) {
                None => Err("the session could not be read".to_string()),
                // A later version made here meanwhile wins (another shard will get it too).
                Some(spec) if newer_here(&spec) => Ok(()),
                Some(spec) => local::recreate(ctx, spec.clone()).map(|()| {
                    persist::propagate_set(ctx, &spec);
                }),
            };
            if let Some(key) = reply_to {
                let errors = match result {
                    Ok(()) => Vec::new(),
                    Err(e) => vec![format!("ERR shard-{me}: {e}")],
                };
                let initiator = key.initiator.clone();
                bus::send(
                    ctx,
                    &initiator,
                    &Message::Finished {
                        key,
                        from: me,
                        errors,
                    },
                );
            }
        }
        Message::SessionEnd { id } if local::end(&id) => persist::propagate_del(ctx, &id),
        Message::SessionsWanted { from } => {
            let sessions = local::all();
            for spec in &sessions {
                bus::send(
                    ctx,
                    &from,
                    &Message::Session {
                        reply_to: None,
                        spec: spec.encode(),
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
