//! `run()` called inside a running execution (a step's callback, a timer, a coroutine), as
//! RedisGears 1.2 allowed: the plan becomes an execution of its own, queued for a worker like
//! `RG.PYEXECUTE ... UNBLOCKING` (listed, abortable, under the same limits), run on this shard
//! as the user of the execution that started it. Whoever started it gets its outcome through
//! [`ExecutionDone`] (Python resolves the future `run()` returned); it is told also when the
//! execution never ran (aborted while queued, a full queue).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use gears_core::control::ControlScope;
use gears_core::{
    encode_outcome, ExecutionDone, ExecutionOutcome, ExecutionPlan, Executor, Session,
};

use crate::executions::{stats, Finished};
use crate::guard::panic_message;
use crate::host::{Access, Caller, RedisHost, SessionHost};

/// Calls its function once: with the outcome, or (dropped unused) with why there is none.
struct Done(Option<ExecutionDone>);

impl Done {
    fn call(mut self, outcome: Result<ExecutionOutcome, String>) {
        if let Some(done) = self.0.take() {
            done(outcome);
        }
    }
}

impl Drop for Done {
    fn drop(&mut self) {
        if let Some(done) = self.0.take() {
            done(Err("the execution did not run".into()));
        }
    }
}

/// Queues `plan` as an execution of `caller`; returns its id.
pub(crate) fn start(
    caller: Caller,
    plan: ExecutionPlan,
    session: Arc<dyn Session>,
    done: ExecutionDone,
    session_host: Option<Arc<SessionHost>>,
) -> Result<String, String> {
    let gears = crate::loaded().map_err(|e| e.to_string())?;
    let execution = gears.create_execution(plan.language, caller, None)?;
    let id = execution.id.clone();
    let done = Done(Some(done));
    gears.workers.submit(move || {
        if !execution.start() {
            done.call(Err(execution
                .control
                .stop_message()
                .unwrap_or_else(|| "the execution did not run".into())));
            return;
        }
        stats::worker_busy();
        let control = execution.control.clone();
        let _scope = ControlScope::enter(&control);
        control.apply_run_limits(&plan.options.limits);
        let host = Arc::new(RedisHost::new(
            &execution.caller,
            Access::ReadWrite,
            control.clone(),
        ));
        // The session's functions (`execute()`) act in this execution.
        let _entered = session_host.as_ref().map(|s| s.enter(&host));
        execution.set_plan(plan.clone(), super::step_args(&plan, &session));
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let mut reader = crate::readers::build(&plan, host.clone(), session.clone());
            let executor = Executor::new(plan, session).observed(execution.progress.clone());
            executor.run(reader.as_mut())
        }))
        .map_err(|panic| format!("Gears internal error: {}", panic_message(&panic)));
        host.finish();
        stats::worker_free();
        let finished = match &outcome {
            Ok(outcome) => Finished::ran(encode_outcome(outcome)),
            Err(error) => Finished::failed(error.clone()),
        };
        stats::errors(execution.progress.errors());
        execution.finish(finished);
        done.call(outcome);
    });
    Ok(id)
}
