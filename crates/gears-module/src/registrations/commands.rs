//! `RG.DUMPREGISTRATIONS`, `RG.UNREGISTER`, `RG.CLEARREGISTRATIONSSTATS`,
//! `RG.PAUSEREGISTRATIONS` and `RG.UNPAUSEREGISTRATIONS`, with RedisGears 1.2's replies and
//! errors. A registration belongs to the ACL user who registered it: other users neither see
//! nor remove it, unless they may run `CLIENT KILL` (as for executions).

use gears_core::registration::{CommandKind, Trigger};
use gears_core::{ExecutionMode, ReplyValue};
use redis_module::{Context, RedisError, RedisResult, RedisString, RedisValue};

use super::Registration;
use crate::executions::commands::is_admin;
use crate::executions::STANDALONE_SHARD;
use crate::guard::guarded;
use crate::host::Caller;
use crate::reply::send;

fn bulk(text: impl Into<Vec<u8>>) -> ReplyValue {
    ReplyValue::Bulk(text.into())
}

fn names(items: &Option<Vec<String>>) -> ReplyValue {
    match items {
        None => ReplyValue::Null,
        Some(items) => ReplyValue::Array(items.iter().map(|i| bulk(i.as_str())).collect()),
    }
}

/// Whether the caller of `ctx` may see and act on `registration`.
fn visible(ctx: &Context, registration: &Registration) -> bool {
    let caller = Caller::of(ctx);
    caller.user == registration.user || is_admin(ctx, &caller)
}

fn mode_name(mode: ExecutionMode) -> &'static str {
    match mode {
        ExecutionMode::Async => "async",
        ExecutionMode::AsyncLocal => "async_local",
        ExecutionMode::Sync => "sync",
    }
}

/// C's `%lf` of a double, as RedisGears replies `avgRunDurationMS`.
fn double(value: f64) -> ReplyValue {
    bulk(
        format!("{value:.6}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string(),
    )
}

fn describe(registration: &Registration) -> ReplyValue {
    let stats = registration.stats();
    let millis = |d: std::time::Duration| d.as_millis().min(i64::MAX as u128) as i64;
    let average = if stats.triggered == 0 {
        0.0
    } else {
        stats.total_run.as_secs_f64() * 1000.0 / stats.triggered as f64
    };
    let (reader, args) = match &registration.spec.trigger {
        Trigger::Keys(trigger) => (
            "KeysReader",
            vec![
                bulk("regex"),
                bulk(trigger.prefix.clone()),
                bulk("eventTypes"),
                names(&trigger.event_types),
                bulk("keyTypes"),
                names(&trigger.key_types),
                bulk("hookCommands"),
                names(&trigger.commands),
            ],
        ),
        Trigger::Command(trigger) => {
            let in_order = ReplyValue::Integer(i64::from(trigger.in_order));
            let args = match &trigger.kind {
                CommandKind::Trigger(name) => {
                    vec![
                        bulk("trigger"),
                        bulk(name.as_str()),
                        bulk("inorder"),
                        in_order,
                    ]
                }
                CommandKind::Hook {
                    command,
                    key_prefix,
                } => vec![
                    bulk("hook"),
                    bulk(command.as_str()),
                    bulk("keyprefix"),
                    key_prefix.clone().map_or(ReplyValue::Null, bulk),
                    bulk("inorder"),
                    in_order,
                ],
            };
            ("CommandReader", args)
        }
        Trigger::Timer(trigger) => (
            "TimerReader",
            vec![
                bulk("schedule"),
                bulk(trigger.schedule.describe()),
                bulk("key"),
                trigger.key.clone().map_or(ReplyValue::Null, bulk),
                bulk("stopOnError"),
                ReplyValue::Integer(i64::from(trigger.stop_on_error)),
                bulk("nextRunUnixMS"),
                registration
                    .timer
                    .as_ref()
                    .and_then(|t| t.next_run_ms())
                    .map_or(ReplyValue::Null, |ms| {
                        ReplyValue::Integer(ms.min(i64::MAX as u64) as i64)
                    }),
            ],
        ),
        Trigger::Stream(trigger) => (
            "StreamReader",
            vec![
                bulk("batchSize"),
                ReplyValue::Integer(trigger.batch.min(i64::MAX as u64) as i64),
                bulk("durationMS"),
                ReplyValue::Integer(trigger.duration_ms.min(i64::MAX as u64) as i64),
                bulk("stream"),
                bulk(trigger.prefix.clone()),
                bulk("trimStream"),
                ReplyValue::Integer(i64::from(trigger.trim)),
                bulk("onFailedPolicy"),
                bulk(trigger.on_failed.name()),
                bulk("retryInterval"),
                ReplyValue::Integer(trigger.retry_interval.min(i64::MAX as u64) as i64),
            ],
        ),
    };
    let mut data = vec![
        bulk("mode"),
        bulk(mode_name(registration.mode())),
        bulk("numTriggered"),
        ReplyValue::Integer(stats.triggered as i64),
        bulk("numSuccess"),
        ReplyValue::Integer(stats.success as i64),
        bulk("numFailures"),
        ReplyValue::Integer(stats.failures as i64),
        bulk("numAborted"),
        ReplyValue::Integer(stats.aborted as i64),
        bulk("lastRunDurationMS"),
        ReplyValue::Integer(millis(stats.last_run)),
        bulk("totalRunDurationMS"),
        ReplyValue::Integer(millis(stats.total_run)),
        bulk("avgRunDurationMS"),
        double(average),
    ];
    if let Some(stream) = &registration.stream {
        let lag = stream.lag();
        data.extend([
            bulk("lastEstimatedLagMS"),
            ReplyValue::Integer(lag.last_ms.min(i64::MAX as u64) as i64),
            bulk("avgEstimatedLagMS"),
            double(lag.average()),
        ]);
    }
    data.extend([
        bulk("lastError"),
        match &stats.last_error {
            Some(error) => bulk(error.as_str()),
            None => ReplyValue::Null,
        },
        bulk("args"),
        ReplyValue::Array(args),
    ]);
    if let Some(stream) = &registration.stream {
        data.extend([bulk("status"), bulk(stream.status().name())]);
    }
    ReplyValue::Array(vec![
        bulk("id"),
        bulk(registration.id.as_str()),
        bulk("reader"),
        bulk(reader),
        bulk("desc"),
        match &registration.description {
            Some(desc) => bulk(desc.as_str()),
            None => ReplyValue::Null,
        },
        bulk("RegistrationData"),
        ReplyValue::Array(data),
        bulk("PD"),
        bulk(format!(
            "{{'sessionId':'{}', 'depsList':[]}}",
            registration.session_id
        )),
        bulk("ExecutionThreadPool"),
        bulk("DefaultPool"),
    ])
}

pub(crate) fn dump_registrations(ctx: &Context, _args: Vec<RedisString>) -> RedisResult {
    guarded(|| {
        let list = super::all()
            .iter()
            .filter(|r| visible(ctx, r))
            .map(|r| describe(r))
            .collect();
        send(ctx, &ReplyValue::Array(list))
    })
}

pub(crate) fn unregister(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guarded(|| {
        if args.len() < 2 || args.len() > 3 {
            return Err(RedisError::WrongArity);
        }
        let id = args[1].to_string_lossy();
        let abort_pending = match args.get(2) {
            None => false,
            Some(arg) if arg.to_string_lossy().eq_ignore_ascii_case("abortpending") => true,
            Some(_) => return Err(RedisError::Str("Unknown argument given to unregister")),
        };
        let registration = super::get(&id).filter(|r| visible(ctx, r));
        if registration.is_none() || !unregister_everywhere(ctx, &id, abort_pending) {
            return Err(RedisError::Str("execution is not registered"));
        }
        Ok(RedisValue::SimpleStringStatic("OK"))
    })
}

/// Removes a registration here, from its session (replicas and the AOF are told), and on every
/// shard; false if it is not registered here. Under the Redis lock.
pub(crate) fn unregister_everywhere(ctx: &Context, id: &str, abort_pending: bool) -> bool {
    if !super::remove(id, abort_pending) {
        return false;
    }
    // Durably: its session no longer makes it again.
    match super::sessions::forget_registration(id) {
        Some(Ok(session)) => super::persist::propagate_set(ctx, &session),
        Some(Err(ended)) => super::persist::propagate_del(ctx, &ended),
        None => {}
    }
    // And on every shard.
    crate::cluster::sessions::unregistered(ctx, id, abort_pending);
    true
}

pub(crate) fn clear_registrations_stats(ctx: &Context, _args: Vec<RedisString>) -> RedisResult {
    guarded(|| {
        let caller = Caller::of(ctx);
        let admin = is_admin(ctx, &caller);
        // In a cluster: every shard's statistics (as RedisGears 1.2).
        crate::cluster::everywhere(
            ctx,
            || clear_stats_here(&caller.user, admin),
            |reply_to| crate::cluster::bus::Message::ClearStats {
                reply_to,
                user: caller.user.clone(),
                admin,
            },
            "OK",
        )
    })
}

/// Clears the statistics of the registrations `user` may see (all of them for an `admin`).
pub(crate) fn clear_stats_here(user: &[u8], admin: bool) {
    for registration in super::all().iter().filter(|r| admin || r.user == user) {
        registration.clear_stats();
    }
}

fn pause_or_unpause(ctx: &Context, args: &[RedisString], what: &str) -> RedisResult {
    if args.len() != 2 {
        return Err(RedisError::WrongArity);
    }
    let id = args[1].to_string_lossy();
    let Some(registration) = super::get(&id).filter(|r| visible(ctx, r)) else {
        return Err(RedisError::String(format!(
            "Execution {id} does not exists on shard {STANDALONE_SHARD}"
        )));
    };
    let reader = match &registration.spec.trigger {
        Trigger::Keys(_) => "KeysReader",
        Trigger::Command(_) => "CommandReader",
        Trigger::Stream(_) | Trigger::Timer(_) => {
            let pause = what == "pause";
            // In a cluster: on every shard (its streams are there), as RedisGears 1.2.
            return crate::cluster::everywhere(
                ctx,
                || pause_here(&registration.id, pause),
                |reply_to| crate::cluster::bus::Message::Pause {
                    reply_to,
                    id: registration.id.clone(),
                    pause,
                },
                "OK",
            );
        }
    };
    Err(RedisError::String(format!(
        "Reader {reader} does not support {what}"
    )))
}

/// Pauses (or unpauses) the stream registration `id` on this shard.
pub(crate) fn pause_here(id: &str, pause: bool) {
    let Some(registration) = super::get(id) else {
        return;
    };
    if let Some(timer) = &registration.timer {
        timer.pause(pause);
        return;
    }
    if !matches!(registration.spec.trigger, Trigger::Stream(_)) {
        return;
    }
    if pause {
        super::streams::pause(&registration);
    } else {
        super::streams::unpause(&registration);
    }
}

pub(crate) fn pause_registrations(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guarded(|| pause_or_unpause(ctx, &args, "pause"))
}

pub(crate) fn unpause_registrations(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guarded(|| pause_or_unpause(ctx, &args, "unpause"))
}

/// `RG.PYDUMPSESSIONS [VERBOSE] [DEAD] [SESSIONS s ...]`: Python sessions, as RedisGears 1.2.
pub(crate) fn py_dump_sessions(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guarded(|| dump_sessions(ctx, &args[1..], Some(gears_core::Language::Python)))
}

/// `RG.DUMPSESSIONS [VERBOSE] [DEAD] [SESSIONS s ...]`: the sessions of every language, with
/// a `language` field.
pub(crate) fn dump_all_sessions(ctx: &Context, args: Vec<RedisString>) -> RedisResult {
    guarded(|| dump_sessions(ctx, &args[1..], None))
}

fn dump_sessions(
    ctx: &Context,
    options: &[RedisString],
    language: Option<gears_core::Language>,
) -> RedisResult {
    let mut verbose = false;
    let mut dead = false;
    let mut wanted: Option<Vec<String>> = None;
    for (i, option) in options.iter().enumerate() {
        let text = option.to_string_lossy();
        match text.to_ascii_uppercase().as_str() {
            "VERBOSE" => verbose = true,
            // Dead: sessions that could not be made again after a restart or on a replica.
            "DEAD" => dead = true,
            "SESSIONS" => {
                wanted = Some(
                    options[i + 1..]
                        .iter()
                        .map(|s| s.to_string_lossy())
                        .collect(),
                );
                break;
            }
            _ => return Err(RedisError::String(format!("Unknown option {text}"))),
        }
    }
    let caller = Caller::of(ctx);
    let admin = is_admin(ctx, &caller);
    let failed = super::sessions::failed();
    let mut sessions: Vec<_> = super::sessions::all();
    if dead {
        sessions.extend(failed.iter().map(|(s, _)| s.clone()));
    }
    let is_dead =
        |session: &super::sessions::SessionSpec| failed.iter().any(|(s, _)| s.id == session.id);
    let sessions: Vec<_> = sessions
        .into_iter()
        .filter(|s| language.is_none_or(|l| s.language == l))
        .filter(|s| admin || s.user == caller.user)
        .collect();
    let registrations = super::all();
    let describe_session = |session: &super::sessions::SessionSpec| {
        let dead = is_dead(session);
        let ids: Vec<ReplyValue> = session
            .live()
            .filter(|_| !dead)
            .map(|id| {
                let full = registrations.iter().find(|r| &r.id == id);
                match (verbose, full) {
                    (true, Some(registration)) => describe(registration),
                    _ => bulk(id.as_str()),
                }
            })
            .collect();
        let mut fields = vec![
            bulk("ID"),
            bulk(session.id.as_str()),
            bulk("sessionDescription"),
            match &session.description {
                Some(d) => bulk(d.as_str()),
                None => ReplyValue::Null,
            },
            bulk("refCount"),
            ReplyValue::Integer(ids.len() as i64),
            bulk("linked"),
            bulk("primary"),
            bulk("dead"),
            bulk(if dead { "true" } else { "false" }),
            bulk("requirementInstallationNeeded"),
            ReplyValue::Integer(i64::from(!session.requirements.is_empty())),
            bulk("requirements"),
            ReplyValue::Array(
                session
                    .requirements
                    .iter()
                    .map(|name| {
                        let installed = crate::requirements::all()
                            .into_iter()
                            .find(|r| &r.name == name);
                        match (verbose, installed) {
                            (true, Some(r)) => crate::requirements::describe(
                                &r,
                                crate::requirements::ref_count(name),
                            ),
                            _ => bulk(name.as_str()),
                        }
                    })
                    .collect(),
            ),
            bulk("registrations"),
            ReplyValue::Array(ids),
        ];
        if language.is_none() {
            fields.push(bulk("language"));
            fields.push(bulk(session.language.name()));
        }
        ReplyValue::Array(fields)
    };
    let reply = match wanted {
        None => sessions.iter().map(describe_session).collect(),
        Some(names) => names
            .iter()
            .map(|name| match sessions.iter().find(|s| &s.id == name) {
                Some(session) => describe_session(session),
                None => bulk(format!("Session {name} does not exists")),
            })
            .collect(),
    };
    send(ctx, &ReplyValue::Array(reply))
}
