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
                if local::recreate(ctx, old.clone()).is_ok() {
                    persist::propagate_set(ctx, old);
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

/// A session message from another shard (on Redis's main thread, holding the lock).
pub(super) fn receive(ctx: &Context, message: Message) {
    let me = topology::current()
        .map(|t| t.my_id.clone())
        .unwrap_or_default();
    match message {
        Message::Session { reply_to, spec } => {
            let result = match SessionSpec::decode(&spec) {
                None => Err("the session could not be read".to_string()),
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
