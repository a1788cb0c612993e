//! A shard's part of an execution another shard started: the same script, its top level
//! replayed from the initiator's replies, the same plan over this shard's keys; its errors go
//! back to the initiator when it ends.

use std::sync::Arc;

use gears_core::control::{ControlScope, ExecutionControl};
use gears_core::Executor;

use super::bus::{ExecutionKey, Message};
use super::exchange::{self, ClusterExchange};
use crate::host::{Access, Caller, RedisHost, SessionHost, TopLevel};

/// Runs this shard's part (on a worker) and reports its end to the initiator.
pub(super) fn run(message: Message) {
    let Message::Run {
        key,
        language,
        script,
        user,
        db,
        calls,
        shards,
        slots,
        requirements,
        plan_digest,
    } = message
    else {
        return;
    };
    let Some(gears) = crate::gears() else {
        return;
    };
    let Some(topology) = super::topology::current() else {
        return;
    };
    crate::executions::stats::worker_busy();
    let control = ExecutionControl::new(gears.execution_limits());
    let caller = Caller { user, db };
    // Listed here under the initiator's id; aborted with it.
    let execution = create_part(gears, &key, language, &caller, &control);
    let _scope = ControlScope::enter(&control);
    let host = Arc::new(RedisHost::new(&caller, Access::ReadWrite, control.clone()));
    // `Err`: this shard's part could not start (its script does not compile here, such as a
    // native operator this server lacks): the execution is aborted, since its answer would miss
    // this shard's records. `Ok`: the part ran; its errors.
    let part = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let Some(calls) = super::decode_calls(&calls) else {
            return Err("ERR the initiator's top level could not be read".to_string());
        };
        let frontend = crate::commands::frontend(language)?;
        // The initiator's requirements, from the wheels it sent (no package index here).
        for blob in &requirements {
            if let Err(e) = crate::requirements::install_blob(blob) {
                crate::host::log_line(gears_core::LogLevel::Warning, &e);
                return Err(format!("ERR {}", crate::requirements::NOT_SATISFIED));
            }
        }
        host.set_top_level(TopLevel::Replay(calls.into()));
        let session_host = SessionHost::new(host.clone());
        let _host_scope = session_host.enter(&host);
        let compiled = frontend.compile(&script, session_host.clone());
        let left = host.end_top_level();
        let compiled = match compiled {
            Ok(compiled) => compiled,
            Err(e) => return Err(format!("shard {}: {e}", topology.my_id)),
        };
        if !left.is_empty() {
            return Err(format!(
                "ERR shard {}: the script's top level ran differently than on the initiator",
                topology.my_id
            ));
        }
        let Some(plan) = compiled.plans.into_iter().next() else {
            return Err(format!(
                "ERR shard {}: the script did not call run() here",
                topology.my_id
            ));
        };
        if super::plan_digest(&plan) != plan_digest {
            return Err(format!(
                "ERR shard {}: the script built another plan here than on the initiator (its \
                 steps or their arguments depend on the shard: a setting, a random value)",
                topology.my_id
            ));
        }
        control.apply_run_limits(&plan.options.limits);
        execution.set_plan(
            plan.clone(),
            crate::commands::step_args(&plan, &compiled.session),
        );
        let exchange = ClusterExchange::new(
            key.clone(),
            &topology.my_id,
            (shards.clone(), slots.clone()),
            host.clone(),
            &plan,
        );
        let mut reader = crate::readers::build(&plan, host.clone(), compiled.session.clone());
        let outcome = Executor::new(plan, compiled.session)
            .observed(execution.progress.clone())
            .distributed(exchange)
            .run(reader.as_mut());
        Ok(outcome.errors)
    }))
    .unwrap_or_else(|_| Ok(vec!["Gears internal error on a shard".to_string()]));
    let errors = match part {
        Ok(errors) => errors,
        Err(reason) => {
            let abort = Message::Abort {
                key: key.clone(),
                reason: reason.clone(),
            };
            host.with_lock(|ctx| super::bus::send(ctx, &key.initiator, &abort));
            vec![reason]
        }
    };
    finish_part(&execution, &errors);
    end_part(&host, key, errors);
}

/// This shard's part of the execution `key`, listed under the initiator's id (and aborted with
/// it).
fn create_part(
    gears: &crate::Gears,
    key: &ExecutionKey,
    language: gears_core::Language,
    caller: &Caller,
    control: &Arc<ExecutionControl>,
) -> Arc<crate::executions::Execution> {
    gears.executions.create_part(
        &key.id,
        language,
        caller.clone(),
        control.clone(),
        crate::executions::TableLimits {
            max_executions: gears.max_executions(),
            max_queued: gears.max_queued(),
            profile: gears.config.flag(crate::config::PROFILE_EXECUTIONS),
        },
    )
}

/// Ends this shard's part in its table: its errors, no results (they went to the initiator).
fn finish_part(execution: &crate::executions::Execution, errors: &[String]) {
    execution.finish(crate::executions::Finished::ran(
        gears_core::encode_outcome(&gears_core::ExecutionOutcome {
            results: Vec::new(),
            errors: errors.to_vec(),
        }),
    ));
}

/// Tells the initiator this shard's part is over, with its errors, and lets the part go.
fn end_part(host: &RedisHost, key: ExecutionKey, errors: Vec<String>) {
    host.with_lock(|ctx| super::finished(ctx, key.clone(), errors));
    host.finish();
    exchange::forget(&key);
    crate::executions::stats::worker_free();
}

/// Runs this shard's part of an event's execution of a registration (on a worker): no records
/// of its own, the ones the exchange steps bring. The part runs the registration's plan with a
/// session made for it from the registration's session (its script, with the recorded
/// top-level replies): a Lua or Rhai session is not shared with this shard's own events, whose
/// runs may be waiting for records from the shard that sent this.
pub(super) fn run_registration(message: Message) {
    let Message::RunRegistration {
        key,
        registration,
        user,
        db,
        shards,
        slots,
        plan_digest,
    } = message
    else {
        return;
    };
    let (Some(gears), Some(topology)) = (crate::gears(), super::topology::current()) else {
        return;
    };
    let me = topology.my_id.clone();
    crate::executions::stats::worker_busy();
    let control = ExecutionControl::new(gears.execution_limits());
    let caller = Caller { user, db };
    let _scope = ControlScope::enter(&control);
    let host = Arc::new(RedisHost::new(&caller, Access::ReadWrite, control.clone()));
    let found = crate::registrations::get(&registration).and_then(|r| {
        crate::registrations::sessions::all()
            .into_iter()
            .find(|s| s.id == r.session_id)
            .map(|s| (r, s))
    });
    let errors = match found {
        None => vec![format!(
            "ERR shard {me}: registration {registration} does not exist here"
        )],
        Some((registration, session)) => {
            let execution = create_part(gears, &key, registration.language, &caller, &control);
            let errors = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let frontend = crate::commands::frontend(registration.language)?;
                if let Some(calls) = session.calls.as_deref().and_then(super::decode_calls) {
                    host.set_top_level(TopLevel::Replay(calls.into()));
                }
                let session_host = SessionHost::new(host.clone());
                let _host_scope = session_host.enter(&host);
                let compiled = frontend.compile(&session.script, session_host.clone());
                host.end_top_level();
                let compiled = compiled.map_err(|e| format!("shard {me}: {e}"))?;
                let plan = registration.spec.plan.clone();
                if super::plan_digest(&plan) != plan_digest {
                    return Err(format!(
                        "ERR shard {me}: registration {} has another plan here than on the \
                         initiator",
                        registration.id
                    ));
                }
                execution.set_plan(plan.clone(), registration.step_args.clone());
                let exchange = ClusterExchange::new(
                    key.clone(),
                    &me,
                    (shards.clone(), slots.clone()),
                    host.clone(),
                    &plan,
                );
                let mut nothing = gears_core::VecReader::new(Vec::new(), 1);
                let outcome = Executor::new(plan, compiled.session)
                    .observed(execution.progress.clone())
                    .distributed(exchange)
                    .run(&mut nothing);
                Ok::<_, String>(outcome.errors)
            }))
            .unwrap_or_else(|_| Err("Gears internal error on a shard".to_string()))
            .unwrap_or_else(|e| vec![e]);
            finish_part(&execution, &errors);
            errors
        }
    };
    end_part(&host, key, errors);
}
