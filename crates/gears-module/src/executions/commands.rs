//! `RG.GETRESULTS`, `RG.GETRESULTSBLOCKING`, `RG.DUMPEXECUTIONS`, `RG.GETEXECUTION`,
//! `RG.DROPEXECUTION` and `RG.ABORTEXECUTION`, with RedisGears 1.2's replies and errors.

use std::sync::Arc;

use gears_core::control::ABORTED;
use gears_core::extension::NativeStepKind;
use gears_core::progress::READING;
use gears_core::{Aggregation, ReplyValue, Step};
use redis_module::{Context, RedisError, RedisResult, RedisString, RedisValue};

use super::{Execution, Status, STANDALONE_SHARD};
use crate::guard::guarded;
use crate::host::{may_run, BlockedReply, Caller};
use crate::reply::send;

const NO_SUCH_PLAN: &str = "execution plan does not exist";

fn bulk(text: impl Into<Vec<u8>>) -> ReplyValue {
    ReplyValue::Bulk(text.into())
}

/// The execution named by `args[1]`, or the reference's error `missing`. An execution belongs
/// to the ACL user who started it: another user gets the same error, as if it did not exist,
/// unless they may run `CLIENT KILL` (an administrator, who can end anyone's connection).
fn named(
    ctx: &Context,
    args: &[RedisString],
    missing: &'static str,
) -> Result<Arc<Execution>, RedisError> {
    let id = args[1].to_string_lossy();
    crate::loaded()?
        .executions
        .get(&id)
        .filter(|execution| visible(ctx, execution))
        .ok_or(RedisError::Str(missing))
}

/// Whether the caller of `ctx` may see and act on `execution`.
fn visible(ctx: &Context, execution: &Execution) -> bool {
    let caller = Caller::of(ctx);
    caller.user == execution.caller.user || is_admin(ctx, &caller)
}

pub(crate) fn is_admin(ctx: &Context, caller: &Caller) -> bool {
    may_run(ctx, &caller.user, &[b"CLIENT", b"KILL", b"ID", b"1"])
}

pub(crate) fn get_results(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guarded(|| {
        if args.len() < 2 {
            return Err(RedisError::WrongArity);
        }
        let execution = named(ctx, &args, NO_SUCH_PLAN)?;
        match execution.results() {
            Some(results) => send(ctx, &results),
            None => Err(RedisError::Str("execution is still running")),
        }
    })
}

pub(crate) fn get_results_blocking(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guarded(|| {
        if args.len() != 2 {
            return Err(RedisError::WrongArity);
        }
        let execution = named(ctx, &args, NO_SUCH_PLAN)?;
        if let Some(results) = execution.results() {
            return send(ctx, &results);
        }
        execution.wait_for_results(BlockedReply::block(
            ctx,
            "execution is still running, and this client can not wait for it (MULTI, a \
             script, or blocking not allowed); use RG.GETRESULTS",
        )?);
        Ok(RedisValue::NoReply)
    })
}

pub(crate) fn dump_executions(ctx: &Context, _args: Vec<RedisString>) -> RedisResult {
    guarded(|| {
        let executions = crate::loaded()?.executions.all();
        let caller = Caller::of(ctx);
        let admin = is_admin(ctx, &caller);
        let items = executions
            .iter()
            .filter(|e| admin || e.caller.user == caller.user)
            .map(|e| {
                ReplyValue::Array(vec![
                    bulk("executionId"),
                    bulk(e.id.as_str()),
                    bulk("status"),
                    bulk(e.status().name()),
                    bulk("registered"),
                    ReplyValue::Integer(i64::from(e.registered)),
                ])
            })
            .collect();
        send(ctx, &ReplyValue::Array(items))
    })
}

pub(crate) fn drop_execution(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guarded(|| {
        if args.len() != 2 {
            return Err(RedisError::WrongArity);
        }
        let execution = named(ctx, &args, NO_SUCH_PLAN)?;
        if !execution.status().finished() {
            return Err(RedisError::Str(
                "can not drop a not yet finished execution, abort it first.",
            ));
        }
        crate::loaded()?.executions.drop_execution(&execution.id);
        crate::cluster::broadcast_execution(ctx, &execution.id, false);
        Ok(RedisValue::SimpleStringStatic("OK"))
    })
}

/// Stops a queued or running execution. A queued one ends at once; a running one is
/// interrupted inside its code and ends within milliseconds (its status turns `aborted`).
pub(crate) fn abort_execution(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guarded(|| {
        if args.len() != 2 {
            return Err(RedisError::WrongArity);
        }
        let execution = named(ctx, &args, "execution does not exist")?;
        execution.abort(ABORTED);
        crate::cluster::broadcast_execution(ctx, &execution.id, true);
        Ok(RedisValue::SimpleStringStatic("OK"))
    })
}

/// `RG.GETEXECUTION <id> [SHARD|CLUSTER]`.
pub(crate) fn get_execution(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guarded(|| {
        if !(2..=3).contains(&args.len()) {
            return Err(RedisError::WrongArity);
        }
        let scope = args
            .get(2)
            .map(|s| s.to_string_lossy().to_ascii_lowercase());
        // In a cluster, CLUSTER (the default there) gathers every shard's part.
        let cluster = crate::cluster::enabled();
        if cluster && scope.as_deref() != Some("shard") {
            if scope.as_deref().is_some_and(|s| s != "cluster") {
                return Err(RedisError::Str("unknown subcommand"));
            }
            let id = args[1].to_string_lossy();
            let local = named(ctx, &args, NO_SUCH_PLAN)
                .ok()
                .map(|e| execution_plan(&e));
            let caller = Caller::of(ctx);
            let admin = is_admin(ctx, &caller);
            let client = crate::host::BlockedReply::block(ctx, crate::commands::CAN_NOT_BLOCK)?;
            crate::cluster::get_execution_everywhere(id, (caller.user, admin), local, client);
            return Ok(RedisValue::NoReply);
        }
        let execution = named(ctx, &args, NO_SUCH_PLAN)?;
        if let Some(scope) = &scope {
            if scope == "cluster" {
                return Err(RedisError::Str(
                    "no cluster detected - use `RG.GETEXECUTION <id> [SHARD]` instead",
                ));
            }
            if scope != "shard" {
                return Err(RedisError::Str("unknown subcommand"));
            }
        }
        send(
            ctx,
            &ReplyValue::Array(vec![ReplyValue::Array(vec![
                bulk("shard_id"),
                bulk(
                    crate::cluster::topology::current()
                        .filter(|_| crate::cluster::enabled())
                        .map(|t| t.my_id.clone())
                        .unwrap_or_else(|| STANDALONE_SHARD.to_string()),
                ),
                bulk("execution_plan"),
                execution_plan(&execution),
            ])]),
        )
    })
}

fn millis(duration: std::time::Duration) -> ReplyValue {
    ReplyValue::Integer(duration.as_millis() as i64)
}

/// The `execution_plan` part of `RG.GETEXECUTION`: RedisGears 1.2's fields (steps last to
/// first), and, while the execution runs, how far it got.
/// This shard's `execution_plan` of an execution, if it has one and `user` may see it (another
/// shard asks for its caller).
pub(crate) fn part_of(id: &str, user: &[u8], admin: bool) -> Option<ReplyValue> {
    crate::gears()?
        .executions
        .get(id)
        .filter(|e| admin || e.caller.user == user)
        .map(|e| execution_plan(&e))
}

fn execution_plan(execution: &Execution) -> ReplyValue {
    let snapshot = execution.snapshot();
    let finished = snapshot.status.finished();
    let steps = snapshot
        .steps
        .iter()
        .enumerate()
        .rev()
        .map(|(i, step)| {
            ReplyValue::Array(vec![
                bulk("type"),
                bulk(step_type(step)),
                bulk("duration"),
                millis(snapshot.step_durations.get(i).copied().unwrap_or_default()),
                bulk("name"),
                bulk(step.name()),
                bulk("arg"),
                bulk(snapshot.step_args.get(i).cloned().unwrap_or_default()),
            ])
        })
        .collect();
    let mut fields = vec![
        bulk("status"),
        bulk(snapshot.status.name()),
        bulk("shards_received"),
        ReplyValue::Integer(0),
        bulk("shards_completed"),
        ReplyValue::Integer(0),
        bulk("results"),
        ReplyValue::Integer(snapshot.result_count.map_or(-1, |n| n as i64)),
        bulk("errors"),
        ReplyValue::Array(if finished {
            snapshot.errors.iter().map(|e| bulk(e.as_str())).collect()
        } else {
            Vec::new()
        }),
        bulk("total_duration"),
        millis(snapshot.duration),
        bulk("read_duration"),
        millis(execution.progress.read_duration()),
        bulk("steps"),
        ReplyValue::Array(steps),
    ];
    if snapshot.status == Status::Running {
        let step = execution.progress.step();
        let at = if step == READING {
            "reader".to_string()
        } else {
            snapshot
                .steps
                .get(step as usize)
                .map(Step::name)
                .unwrap_or_default()
        };
        fields.extend([
            bulk("progress"),
            ReplyValue::Array(vec![
                bulk("records_read"),
                ReplyValue::Integer(execution.progress.records_read() as i64),
                bulk("records_emitted"),
                ReplyValue::Integer(execution.progress.records_emitted() as i64),
                bulk("step"),
                bulk(at),
            ]),
        ]);
    }
    ReplyValue::Array(fields)
}

/// RedisGears 1.2's name for the kind of a step.
fn step_type(step: &Step) -> &'static str {
    match step {
        Step::Map(_) | Step::ToString => "map",
        Step::FlatMap(_) => "flatmap",
        Step::Filter(_) => "filter",
        Step::ForEach(_) => "foreach",
        Step::Accumulate { .. } => "accumulate",
        Step::ReduceByKey { .. } => "accumulatebykey",
        Step::BatchReduceByKey { .. } => "reduce",
        Step::Limit { .. } => "limit",
        Step::Collect => "collect",
        Step::Repartition { .. } => "repartition",
        Step::Aggregate { aggregation, .. } => match aggregation {
            Aggregation::CountBy { .. } => "accumulatebykey",
            _ => "accumulate",
        },
        Step::Native { kind, .. } => match kind {
            NativeStepKind::Map => "map",
            NativeStepKind::Filter => "filter",
            NativeStepKind::FlatMap => "flatmap",
            NativeStepKind::Aggregate(_) => "accumulate",
        },
    }
}
