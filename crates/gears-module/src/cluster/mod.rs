//! Redis Cluster: every shard runs its part of an execution over its own keys, and the plan's
//! `collect` and `repartition` steps move records between shards (see docs/cluster.md).
//!
//! - [`topology`]: the shards and their slots, read from Redis every second (no command needed);
//! - [`bus`]: messages over the cluster bus;
//! - [`exchange`]: mailboxes and the `RecordExchange` of one shard;
//! - [`distributed`]: the initiator's side of a distributed execution;
//! - [`sessions`]: registrations on every shard, in two phases;
//! - [`remote`]: a shard running its part of another shard's execution.
//!
//! The initiator runs the script's top level once, recording its commands' replies; every
//! other shard runs the same script with those replies given back instead of running the
//! commands again (`host::TopLevel::Replay`), so the top level has its effects once and builds
//! the same plan and values everywhere. Each shard then runs the whole plan over its own keys;
//! records leave at the exchange steps, and the initiator's results are the reply.

pub(crate) mod bus;
mod distributed;
pub(crate) mod exchange;
mod remote;
pub(crate) mod sessions;
pub(crate) mod topology;

use std::os::raw::c_void;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gears_core::{ExecutionMode, ExecutionPlan, Record, ReplyValue, Step};
use redis_module::{raw, Context, RedisResult, RedisString, RedisValue};

use bus::{ExecutionKey, Message};
pub(crate) use distributed::Distributed;
use exchange::Mailbox;

use crate::guard::guarded;
use crate::host::TopLevelCall;
use crate::reply::send;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// This node's id in the cluster (empty before the topology is known).
pub(crate) fn my_id() -> String {
    topology::current()
        .map(|t| t.my_id.clone())
        .unwrap_or_default()
}

/// True on a cluster node.
pub(crate) fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// At load: on a cluster node, listens to the bus and follows the topology.
pub(crate) fn subscribe(ctx: &Context) {
    // SAFETY: a plain query of the server's mode.
    let flags = unsafe { raw::RedisModule_GetContextFlags.unwrap()(ctx.ctx) } as u32;
    if flags & raw::REDISMODULE_CTX_FLAGS_CLUSTER == 0 {
        return;
    }
    ENABLED.store(true, Ordering::Relaxed);
    bus::subscribe(ctx);
    arm_refresh(ctx);
}

/// Reads the topology now and every second.
fn arm_refresh(ctx: &Context) {
    unsafe extern "C" fn tick(ctx: *mut raw::RedisModuleCtx, _data: *mut c_void) {
        let _ = std::panic::catch_unwind(|| {
            let ctx = Context::new(ctx);
            topology::refresh(&ctx);
            sessions::catch_up(&ctx);
            arm_refresh(&ctx);
        });
    }
    // SAFETY: on the main thread; the timer has no data to free.
    unsafe {
        raw::RedisModule_CreateTimer.unwrap()(ctx.ctx, 1000, Some(tick), std::ptr::null_mut());
    }
}

/// A message from another shard (on Redis's main thread).
pub(crate) fn receive(_ctx: &Context, message: Message) {
    match message {
        Message::Run { .. } => crate::workers::spawn_part(move || remote::run(message)),
        Message::RunRegistration { .. } => {
            crate::workers::spawn_part(move || remote::run_registration(message))
        }
        Message::Session { .. }
        | Message::SessionPrepare { .. }
        | Message::SessionCommit { .. }
        | Message::SessionAbort { .. }
        | Message::Unregister { .. }
        | Message::SessionsWanted { .. }
        | Message::SessionsSent { .. } => sessions::receive(_ctx, message),
        Message::Abort { ref key, .. } => {
            // This shard's part of another shard's execution stops with it.
            let mine = topology::current().is_some_and(|t| t.my_id == key.initiator);
            if !mine {
                if let Some(part) = crate::gears().and_then(|g| g.executions.get(&key.id)) {
                    part.abort(gears_core::control::ABORTED);
                }
            }
            if let Some(mailbox) = exchange::mailbox_for_message(key) {
                deliver(&mailbox, message);
            }
        }
        Message::Pause {
            reply_to,
            id,
            pause,
        } => {
            crate::registrations::commands::pause_here(&id, pause);
            finished(_ctx, reply_to, Vec::new());
        }
        Message::ClearStats {
            reply_to,
            user,
            admin,
        } => {
            crate::registrations::commands::clear_stats_here(&user, admin);
            finished(_ctx, reply_to, Vec::new());
        }
        Message::Drop { id } => {
            if let Some(gears) = crate::gears() {
                if gears
                    .executions
                    .get(&id)
                    .is_some_and(|e| e.status().finished())
                {
                    gears.executions.drop_execution(&id);
                }
            }
        }
        Message::GetPart {
            reply_to,
            id,
            user,
            admin,
        } => {
            let plan = crate::executions::commands::part_of(&id, &user, admin).map(|plan| {
                let mut bytes = Vec::new();
                crate::resp::encode(&plan, &mut bytes);
                bytes
            });
            let me = my_id();
            let initiator = reply_to.initiator.clone();
            bus::send(
                _ctx,
                &initiator,
                &Message::Part {
                    key: reply_to,
                    from: me,
                    plan,
                },
            );
        }
        Message::Records { ref key, .. }
        | Message::StepDone { ref key, .. }
        | Message::Part { ref key, .. }
        | Message::Finished { ref key, .. } => {
            if let Some(mailbox) = exchange::mailbox_for_message(key) {
                deliver(&mailbox, message);
            }
        }
    }
}

/// Puts a message into an execution's mailbox.
pub(crate) fn deliver(mailbox: &Mailbox, message: Message) {
    match message {
        Message::Records { step, records, .. } => {
            match gears_core::wire::decode_records(&records) {
                Ok(records) => mailbox.records(step, records),
                Err(e) => mailbox.abort(format!("ERR records from another shard: {e}")),
            }
        }
        Message::StepDone { step, from, .. } => mailbox.step_done(step, from),
        Message::Finished { from, errors, .. } => mailbox.finished(from, errors),
        Message::Abort { reason, .. } => mailbox.abort(reason),
        Message::Part { from, plan, .. } => mailbox.part(from, plan),
        _ => {}
    }
}

/// The shards a plan runs on, if it runs on more than this one: a cluster node that owns
/// slots, more than one shard, and a mode that is not `async_local`.
pub(crate) fn participants(plan: &ExecutionPlan) -> Option<Arc<topology::Topology>> {
    if !enabled() || plan.options.mode == ExecutionMode::AsyncLocal {
        return None;
    }
    let topology = topology::current()?;
    (topology.shards.len() > 1 && topology.i_am_a_shard()).then_some(topology)
}

/// True unless this node is in a cluster whose topology gives `key`'s slot to another shard.
pub(crate) fn owns_key(key: &[u8]) -> bool {
    if !enabled() {
        return true;
    }
    let Some(topology) = topology::current() else {
        return true;
    };
    let slot = topology::key_slot(key);
    topology
        .shards
        .iter()
        .find(|s| s.ranges.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
        .is_none_or(|owner| owner.id == topology.my_id)
}

/// A digest of a plan (FNV-1a over its encoding): what every shard of a distributed execution
/// must have built from the script.
pub(crate) fn plan_digest(plan: &ExecutionPlan) -> u64 {
    let bytes =
        bincode::serde::encode_to_vec(plan, bincode::config::standard()).unwrap_or_default();
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// How long a distributed execution waits with nothing arriving.
pub(crate) fn idle() -> Duration {
    let millis = crate::gears()
        .map(|g| g.config.integer(crate::config::EXECUTION_MAX_IDLE_TIME))
        .unwrap_or(5000)
        .max(1);
    Duration::from_millis(millis as u64)
}

/// True if a plan sends records to other shards (a `repartition` step, which `groupby`,
/// `countby` and the like have too): an event's execution of a registration with such a plan
/// runs on every shard, as in RedisGears 1.2. Others (a trailing `collect` included) stay on
/// the shard of the event, where their records already are.
pub(crate) fn moves_records(plan: &ExecutionPlan) -> bool {
    plan.steps
        .iter()
        .any(|step| matches!(step, Step::Repartition { .. }))
}

/// The exchange steps of a plan that are `collect`.
fn collects(plan: &ExecutionPlan) -> std::collections::HashSet<u32> {
    plan.steps
        .iter()
        .enumerate()
        .filter(|(_, step)| matches!(step, Step::Collect))
        .map(|(i, _)| i as u32)
        .collect()
}

/// The top level's calls, as `[[args...], reply-or-error]` pairs in the wire format.
pub(crate) fn encode_calls(calls: &[TopLevelCall]) -> Vec<u8> {
    let records: Vec<Record> = calls
        .iter()
        .map(|(args, reply)| {
            Record::List(vec![
                Record::List(args.iter().map(|a| Record::Bytes(a.clone())).collect()),
                match reply {
                    Ok(record) => Record::List(vec![record.clone()]),
                    Err(e) => Record::Error(e.to_string()),
                },
            ])
        })
        .collect();
    let mut out = Vec::new();
    let _ = gears_core::wire::encode_records(&records, &mut out);
    out
}

/// The calls of [`encode_calls`].
pub(crate) fn decode_calls(bytes: &[u8]) -> Option<Vec<TopLevelCall>> {
    let records = gears_core::wire::decode_records(bytes).ok()?;
    records
        .into_iter()
        .map(|record| {
            let Record::List(mut pair) = record else {
                return None;
            };
            let reply = pair.pop()?;
            let Record::List(args) = pair.pop()? else {
                return None;
            };
            let args = args
                .into_iter()
                .map(|a| match a {
                    Record::Bytes(b) => Some(b),
                    Record::String(s) => Some(s.into_bytes()),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()?;
            let reply = match reply {
                Record::List(mut one) => Ok(one.pop()?),
                Record::Error(e) => Err(gears_core::GearsError::Redis(e)),
                _ => return None,
            };
            Some((args, reply))
        })
        .collect()
}

/// Answers a message that wants one (`reply_to`): `Finished` from this shard, with its errors
/// (none: done). Holding the Redis lock.
pub(super) fn finished(ctx: &Context, reply_to: ExecutionKey, errors: Vec<String>) {
    let me = my_id();
    let initiator = reply_to.initiator.clone();
    bus::send(
        ctx,
        &initiator,
        &Message::Finished {
            key: reply_to,
            from: me,
            errors,
        },
    );
}

/// Makes a command's action reach every other shard of a cluster before its client gets
/// `reply` (on Redis's main thread): blocks the client, does `here` (the action on this shard),
/// sends `message(key)` to each, and answers the client once every one acknowledged it, or after
/// `ExecutionMaxIdleTime` with an error naming the shards that did not. Outside a cluster (or
/// alone in it), `here`, then `reply` at once.
pub(crate) fn everywhere(
    ctx: &Context,
    here: impl FnOnce(),
    message: impl Fn(ExecutionKey) -> Message,
    reply: &'static str,
) -> RedisResult {
    let Some(topology) = topology::current().filter(|t| enabled() && t.shards.len() > 1) else {
        here();
        return Ok(RedisValue::SimpleStringStatic(reply));
    };
    // Blocked first: a client that may not block (MULTI, Lua) is refused before anything is
    // done anywhere.
    let client = crate::host::BlockedReply::block(ctx, crate::commands::CAN_NOT_BLOCK)?;
    here();
    let others: Vec<String> = topology
        .shards
        .iter()
        .map(|s| s.id.clone())
        .filter(|s| *s != topology.my_id)
        .collect();
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let key = ExecutionKey {
        initiator: topology.my_id.clone(),
        id: format!("ack:{}", NEXT.fetch_add(1, Ordering::Relaxed)),
    };
    let mailbox = exchange::mailbox(&key);
    let unreachable: Vec<String> = others
        .iter()
        .filter(|shard| !bus::send(ctx, shard, &message(key.clone())))
        .cloned()
        .collect();
    let gears = crate::loaded()?;
    gears.workers.submit(move || {
        let outcome = if unreachable.is_empty() {
            mailbox
                .wait_finished(&others, idle())
                .map_err(|e| e.to_string())
        } else {
            Err(format!(
                "could not reach shard {} (cluster bus)",
                unreachable.join(", ")
            ))
        };
        exchange::forget(&key);
        client.reply(&match outcome {
            Ok(_) => ReplyValue::Status(reply.into()),
            Err(e) => ReplyValue::Error(format!("ERR {e}")),
        });
    });
    Ok(RedisValue::NoReply)
}

/// The other shards (holding the Redis lock): `RG.ABORTEXECUTION` and `RG.DROPEXECUTION` reach
/// an execution's parts on every shard.
pub(crate) fn broadcast_execution(ctx: &Context, id: &str, abort: bool) {
    let Some(topology) = topology::current().filter(|_| enabled()) else {
        return;
    };
    // A distributed execution's id starts with its initiator's node id.
    let Some((initiator, _)) = id.rsplit_once('-') else {
        return;
    };
    let message = if abort {
        Message::Abort {
            key: ExecutionKey {
                initiator: initiator.to_string(),
                id: id.to_string(),
            },
            reason: gears_core::control::ABORTED.to_string(),
        }
    } else {
        Message::Drop { id: id.to_string() }
    };
    for shard in topology.shards.iter().filter(|s| s.id != topology.my_id) {
        bus::send(ctx, &shard.id, &message);
    }
}

/// `RG.GETEXECUTION <id> CLUSTER`: asks every other shard for its part of the execution and
/// answers the blocked client with `[[shard_id, id, "execution_plan", plan], ...]`, this shard
/// first, for every shard that has a part (on a worker; the others answer on their main
/// threads).
pub(crate) fn get_execution_everywhere(
    id: String,
    (user, admin): (Vec<u8>, bool),
    local: Option<ReplyValue>,
    client: crate::host::BlockedReply,
) {
    let Some(gears) = crate::gears() else {
        return;
    };
    gears.workers.submit(move || {
        let Some(topology) = topology::current() else {
            client.reply(&ReplyValue::Error("ERR no cluster topology yet".into()));
            return;
        };
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let key = ExecutionKey {
            initiator: topology.my_id.clone(),
            id: format!("get:{id}:{}", NEXT.fetch_add(1, Ordering::Relaxed)),
        };
        let mailbox = exchange::mailbox(&key);
        let others: Vec<String> = topology
            .shards
            .iter()
            .map(|s| s.id.clone())
            .filter(|s| *s != topology.my_id)
            .collect();
        let message = Message::GetPart {
            reply_to: key.clone(),
            id: id.clone(),
            user,
            admin,
        };
        if let Some(ctx) = crate::gears().map(|g| g.log_context.0) {
            // SAFETY: the module's detached context; the lock is taken and released here.
            unsafe { raw::RedisModule_ThreadSafeContextLock.unwrap()(ctx) };
            let locked = Context::new(ctx);
            for shard in &others {
                bus::send(&locked, shard, &message);
            }
            // SAFETY: locked just above by this thread.
            unsafe { raw::RedisModule_ThreadSafeContextUnlock.unwrap()(ctx) };
        }
        let parts = mailbox.wait_parts(&others, Duration::from_millis(1000));
        exchange::forget(&key);
        let entry = |shard: &str, plan: ReplyValue| {
            ReplyValue::Array(vec![
                ReplyValue::Bulk(b"shard_id".to_vec()),
                ReplyValue::Bulk(shard.as_bytes().to_vec()),
                ReplyValue::Bulk(b"execution_plan".to_vec()),
                plan,
            ])
        };
        let mut shards = Vec::new();
        if let Some(plan) = local {
            shards.push(entry(&topology.my_id, plan));
        }
        for shard in &others {
            if let Some(Some(bytes)) = parts.get(shard) {
                if let Some((plan, _)) = crate::resp::parse(bytes) {
                    shards.push(entry(shard, plan));
                }
            }
        }
        if shards.is_empty() {
            client.reply(&ReplyValue::Error("execution plan does not exist".into()));
        } else {
            client.reply(&ReplyValue::Array(shards));
        }
    });
}

/// `RG.INFOCLUSTER`: `no cluster mode`, or RedisGears 1.2's shape.
pub(crate) fn info_cluster(ctx: &Context, _args: Vec<RedisString>) -> RedisResult {
    guarded(|| {
        let Some(topology) = topology::current().filter(|_| enabled()) else {
            return Ok(RedisValue::SimpleStringStatic("no cluster mode"));
        };
        let run_id = run_id(ctx);
        let bulk = |s: &str| ReplyValue::Bulk(s.as_bytes().to_vec());
        let shards = topology
            .shards
            .iter()
            .map(|shard| {
                let min = shard.ranges.iter().map(|r| r.0).min().unwrap_or(0);
                let max = shard.ranges.iter().map(|r| r.1).max().unwrap_or(0);
                ReplyValue::Array(vec![
                    bulk("id"),
                    bulk(&shard.id),
                    bulk("ip"),
                    bulk(&shard.ip),
                    bulk("port"),
                    ReplyValue::Integer(shard.port),
                    bulk("unixSocket"),
                    bulk("None"),
                    bulk("runid"),
                    if shard.id == topology.my_id {
                        bulk(&run_id)
                    } else {
                        ReplyValue::Null
                    },
                    bulk("minHslot"),
                    ReplyValue::Integer(i64::from(min)),
                    bulk("maxHslot"),
                    ReplyValue::Integer(i64::from(max)),
                    bulk("pendingMessages"),
                    ReplyValue::Integer(0),
                ])
            })
            .collect();
        send(
            ctx,
            &ReplyValue::Array(vec![
                bulk("MyId"),
                bulk(&topology.my_id),
                bulk("MyRunId"),
                bulk(&run_id),
                ReplyValue::Array(shards),
            ]),
        )
    })
}

fn run_id(ctx: &Context) -> String {
    match crate::host::call_internal(ctx, &[b"INFO".to_vec(), b"server".to_vec()]) {
        Ok(Record::String(info)) => info
            .lines()
            .find_map(|line| line.strip_prefix("run_id:"))
            .unwrap_or_default()
            .trim()
            .to_string(),
        _ => String::new(),
    }
}

/// `RG.REFRESHCLUSTER`: reads the topology now (Gears follows it by itself; kept for
/// RedisGears' scripts and tools). `OK`.
pub(crate) fn refresh_cluster(ctx: &Context, _args: Vec<RedisString>) -> RedisResult {
    guarded(|| {
        if enabled() {
            topology::refresh(ctx);
        }
        Ok(RedisValue::SimpleStringStatic("OK"))
    })
}
