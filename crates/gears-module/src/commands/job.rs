//! Work queued for a worker: an execution (compile the script, run its plan, finish the
//! execution, which answers whoever waits), or an explanation (`RG.EXPLAIN`). Both run under an
//! execution control, act as the user who sent the script, and always answer their client.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use gears_core::control::{ControlScope, ExecutionControl, Limits};
use gears_core::{encode_outcome, Executor, Frontend, GearsError, Language, ReplyValue};

use crate::executions::{stats, Execution, Finished};
use crate::guard::panic_message;
use crate::host::{Access, BlockedReply, Caller, RedisHost, SessionHost, TopLevel};
use crate::registrations::sessions::{self, NewSession, SessionOptions};

/// What a command asks of a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum JobKind {
    /// Runs the script and its execution; the client waits (`RG.*EXECUTE`).
    Execute,
    /// The same, the client got the execution's id (`RG.*EXECUTE ... UNBLOCKING`).
    Unblocking,
    /// Runs the top level read-only and lists the plan (`RG.EXPLAIN`).
    Explain,
}

pub(crate) enum Job {
    Execute {
        language: Language,
        script: String,
        execution: Arc<Execution>,
        session: SessionOptions,
    },
    Explain {
        language: Language,
        script: String,
        caller: Caller,
        control: Arc<ExecutionControl>,
        client: BlockedReply,
    },
}

impl Job {
    pub fn execute(
        language: Language,
        script: String,
        execution: Arc<Execution>,
        session: SessionOptions,
    ) -> Self {
        Job::Execute {
            language,
            script,
            execution,
            session,
        }
    }

    /// An explanation for a client already admitted to the queue
    /// ([`crate::executions::admit_explain`]); stopped if its client goes away.
    pub fn explain(
        language: Language,
        script: String,
        caller: Caller,
        limits: Limits,
        client: BlockedReply,
    ) -> Self {
        let control = ExecutionControl::new(limits);
        crate::executions::watch_explain(&client, &control);
        Job::Explain {
            language,
            script,
            caller,
            control,
            client,
        }
    }

    /// Runs on a worker.
    pub fn run(self) {
        match self {
            Job::Execute {
                language,
                script,
                execution,
                session,
            } => run_execution(language, &script, execution, &session),
            Job::Explain {
                language,
                script,
                caller,
                control,
                client,
            } => {
                stats::explain_started();
                control.start_clock();
                let reply = match control.stop_message() {
                    // Its client went away while it waited.
                    Some(stopped) => ReplyValue::Error(stopped),
                    None => {
                        let _scope = ControlScope::enter(&control);
                        let host =
                            Arc::new(RedisHost::new(&caller, Access::ReadOnly, control.clone()));
                        let reply =
                            catch_unwind(AssertUnwindSafe(|| explain(language, &script, &host)))
                                .unwrap_or_else(|panic| {
                                    ReplyValue::Error(format!(
                                        "Gears internal error: {}",
                                        panic_message(&panic)
                                    ))
                                });
                        host.finish();
                        reply
                    }
                };
                stats::explain_finished();
                crate::executions::forget_explain(&client);
                client.reply(&reply);
            }
        }
    }
}

/// Runs an execution unless it was aborted while queued; finishing it answers its clients.
fn run_execution(
    language: Language,
    script: &str,
    execution: Arc<Execution>,
    session: &SessionOptions,
) {
    if !execution.start() {
        return;
    }
    stats::worker_busy();
    let control = execution.control.clone();
    let _scope = ControlScope::enter(&control);
    let host = Arc::new(RedisHost::new(
        &execution.caller,
        Access::ReadWrite,
        control.clone(),
    ));
    let finished = catch_unwind(AssertUnwindSafe(|| {
        compute(language, script, &execution, &host, session)
    }))
    .unwrap_or_else(|panic| {
        Finished::failed(format!("Gears internal error: {}", panic_message(&panic)))
    });
    // Whatever happened, this thread must not keep the Redis lock, and code of the script that
    // outlives the execution (a finalizer, a thread) can not reach Redis any more.
    host.finish();
    stats::worker_free();
    // Every error of the run, also those its reply did not list.
    stats::errors(
        execution
            .progress
            .errors()
            .max(finished.error_count() as u64),
    );
    let aborted = matches!(
        control.stop_message().as_deref(),
        Some(gears_core::control::ABORTED | crate::executions::CLIENT_GONE)
    );
    if finished.is_error() || (control.is_stopped() && !aborted) {
        stats::failed();
    }
    execution.finish(finished);
}

/// A description of each step's callback (`RG.GETEXECUTION`'s `arg`).
pub(crate) fn step_args(
    plan: &gears_core::ExecutionPlan,
    session: &Arc<dyn gears_core::Session>,
) -> Vec<String> {
    plan.steps
        .iter()
        .map(|step| match step {
            // A native step's argument is its call: `hll_count@1('name')`.
            gears_core::Step::Native { call, .. } => call.describe(),
            _ => step
                .callbacks()
                .first()
                .map(|cb| session.describe(*cb))
                .unwrap_or_default(),
        })
        .collect()
}

pub(crate) fn frontend(language: Language) -> Result<Box<dyn Frontend>, String> {
    match language {
        Language::Python => {
            crate::loaded()
                .map_err(|e| e.to_string())?
                .python_available()?;
            Ok(Box::new(gears_python::PythonFrontend::new()))
        }
        Language::Lua => Ok(Box::new(gears_lua::LuaFrontend::new())),
        Language::Rhai => Ok(Box::new(gears_rhai::RhaiFrontend::new())),
    }
}

fn compute(
    language: Language,
    script: &str,
    execution: &Execution,
    host: &Arc<RedisHost>,
    options: &SessionOptions,
) -> Finished {
    let frontend = match frontend(language) {
        Ok(frontend) => frontend,
        Err(e) => return Finished::failed(e),
    };
    // Requirements are installed here, on the execution's worker (pip never runs on Redis's
    // main thread).
    if !options.requirements.is_empty() {
        if let Err(e) = crate::requirements::ensure(&options.requirements, options.force_reinstall)
        {
            crate::host::log_line(
                gears_core::LogLevel::Warning,
                &format!("requirements {:?}: {e}", options.requirements),
            );
            return Finished::failed(crate::requirements::NOT_SATISFIED.to_string());
        }
    }
    // The session reaches Redis through this thread's current host: its callbacks may also run
    // for other executions (a registration's events).
    host.set_replaces(
        options
            .id
            .iter()
            .chain(options.replace_with.iter())
            .cloned()
            .collect(),
    );
    let session_host = SessionHost::new(host.clone());
    let _host_scope = session_host.enter(host);
    // In a cluster the top level's replies are recorded: the other shards replay them.
    if crate::cluster::enabled() {
        host.set_top_level(TopLevel::Record(Vec::new()));
    }
    let compiled = frontend.compile(script, session_host.clone());
    let calls = host.end_top_level();
    let compiled = match compiled {
        Ok(compiled) => compiled,
        Err(e) => return Finished::failed(stopped_or(host, e)),
    };
    if !compiled.registrations.is_empty() {
        if let Some(stopped) = execution.control.stop_message() {
            return Finished::failed(stopped);
        }
        let new = NewSession {
            language,
            caller: &execution.caller,
            script,
            options,
            execution_id: &execution.id,
            session: &compiled.session,
            session_host: &session_host,
            calls: crate::cluster::enabled().then(|| crate::cluster::encode_calls(&calls)),
        };
        // In a cluster: on every shard, or on none.
        match sessions::establish(new, compiled.registrations, host) {
            Ok(_) => {}
            Err(sessions::Refused::Shards(errors)) => {
                return Finished::ran(ReplyValue::Array(
                    errors.into_iter().map(ReplyValue::Error).collect(),
                ));
            }
            Err(sessions::Refused::Here(e)) => {
                return Finished::failed(match execution.control.stop_message() {
                    Some(stopped) => stopped,
                    None => e,
                })
            }
        }
    }
    let Some(plan) = compiled.plans.into_iter().next() else {
        // A script without run(): `OK`, and no results; or the stop the script caught (a
        // time limit that interrupted an atomic block, inside a pcall).
        return match execution.control.stop_message() {
            Some(stopped) => Finished::failed(stopped),
            None => Finished::no_run(),
        };
    };
    execution.control.apply_run_limits(&plan.options.limits);
    execution.set_plan(plan.clone(), step_args(&plan, &compiled.session));
    let distributed = match crate::cluster::participants(&plan) {
        Some(topology) => {
            match crate::cluster::Distributed::start(
                &topology,
                &execution.id,
                language,
                script,
                &execution.caller.user,
                execution.caller.db,
                calls,
                &plan,
                host,
                crate::requirements::blobs(&options.requirements),
            ) {
                Ok(distributed) => Some(distributed),
                Err(e) => return Finished::failed(e),
            }
        }
        None => None,
    };
    let profiler = compiled.session.profiler();
    let mut reader = crate::readers::build(&plan, host.clone(), compiled.session.clone());
    let mut executor = Executor::new(plan, compiled.session).observed(execution.progress.clone());
    if let Some(distributed) = &distributed {
        executor = executor.distributed(distributed.exchange.clone());
    }
    let mut outcome = executor.run(reader.as_mut());
    drop(reader);
    // A script's `run()` is a session of its own (RedisGears 1.2 gave it a random id that
    // RG.PYPROFILE could not find): while the execution is kept, its id finds its profile.
    if let Some(profiler) = profiler.filter(|p| p.profiled()) {
        execution.keep_profiler(profiler);
    }
    if let Some(distributed) = distributed {
        let (errors, aborted) = distributed.finish();
        // A shard that gave up waiting for another sent what it had: not a whole answer.
        let idle = |e: &String| e.starts_with("Execution max idle reached");
        if aborted {
            // A shard could not run its part: only why (the records and errors of the others
            // are not an answer).
            outcome.results.clear();
            outcome.errors.clear();
        } else if errors.iter().any(idle) || outcome.errors.iter().any(idle) {
            // Not every shard's records arrived: no partial answer, only why.
            outcome.results.clear();
            outcome
                .errors
                .retain(|e| !e.starts_with("Execution max idle reached"));
        }
        outcome.errors.extend(errors);
        outcome.errors.dedup();
    }
    let reply = encode_outcome(&outcome);
    drop(outcome);
    let max = execution.control.limits().max_reply_bytes;
    let size = crate::reply::size(&reply);
    if max > 0 && size > max {
        return Finished::failed(format!(
            "the reply of {size} bytes is larger than {max} bytes (ExecutionMaxReplySize)"
        ));
    }
    Finished::ran(reply)
}

/// `RG.EXPLAIN`: the plan the script's top level builds, run read-only.
fn explain(language: Language, script: &str, host: &Arc<RedisHost>) -> ReplyValue {
    let frontend = match frontend(language) {
        Ok(frontend) => frontend,
        Err(e) => return ReplyValue::Error(e),
    };
    let session_host = SessionHost::new(host.clone());
    let _host_scope = session_host.enter(host);
    match frontend.compile(script, session_host.clone()) {
        Err(e) => ReplyValue::Error(stopped_or(host, e)),
        Ok(compiled) => match compiled.plans.first() {
            None => ReplyValue::Error("the script does not call run()".into()),
            Some(plan) => ReplyValue::Array(
                plan.explain()
                    .into_iter()
                    .map(|line| ReplyValue::Bulk(line.into_bytes()))
                    .collect(),
            ),
        },
    }
}

/// The text of a failed compilation: the stop message when the execution was stopped (the
/// script's own error is then only a consequence of the stop).
fn stopped_or(host: &RedisHost, error: GearsError) -> String {
    match host.control().stop_message() {
        Some(message) => message,
        None => error.to_string(),
    }
}
