//! A queued script: compiled and run on a worker thread, under its own execution control,
//! acting as the user who sent it, and always answering its blocked client.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use gears_core::control::{ControlScope, ExecutionControl, Limits};
use gears_core::{encode_outcome, Executor, Frontend, GearsError, Language, ReplyValue};

use crate::guard::panic_message;
use crate::host::{Access, BlockedReply, Caller, RedisHost};

/// What a job does with the compiled script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum JobKind {
    /// Runs the script and its execution (`RG.*EXECUTE`).
    Execute,
    /// Runs the top level read-only and lists the plan (`RG.EXPLAIN`).
    Explain,
}

pub(crate) struct Job {
    pub language: Language,
    pub script: String,
    pub kind: JobKind,
    pub caller: Caller,
    pub limits: Limits,
    pub blocked: BlockedReply,
}

impl Job {
    /// Runs on a worker. The blocked client is answered whatever happens, a panic included.
    pub fn run(self) {
        let control = ExecutionControl::new(self.limits);
        let _scope = ControlScope::enter(&control);
        let access = match self.kind {
            JobKind::Execute => Access::ReadWrite,
            JobKind::Explain => Access::ReadOnly,
        };
        let host = Arc::new(RedisHost::new(&self.caller, access, control));
        let reply = catch_unwind(AssertUnwindSafe(|| {
            compute(self.language, &self.script, self.kind, &host)
        }))
        .unwrap_or_else(|panic| {
            ReplyValue::Error(format!("Gears internal error: {}", panic_message(&panic)))
        });
        // Whatever happened, this thread must not keep the Redis lock: an atomic block cut
        // short by a panic would freeze the server.
        host.finish();
        self.blocked.reply(&reply);
    }
}

fn frontend(language: Language) -> Result<Box<dyn Frontend>, String> {
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

fn compute(language: Language, script: &str, kind: JobKind, host: &Arc<RedisHost>) -> ReplyValue {
    let frontend = match frontend(language) {
        Ok(frontend) => frontend,
        Err(e) => return ReplyValue::Error(e),
    };
    let compiled = match frontend.compile(script, host.clone()) {
        Ok(compiled) => compiled,
        Err(e) => return ReplyValue::Error(stopped_or(host, e)),
    };
    let Some(plan) = compiled.plans.into_iter().next() else {
        return match kind {
            JobKind::Execute => ReplyValue::Status("OK".into()),
            JobKind::Explain => ReplyValue::Error("the script does not call run()".into()),
        };
    };
    match kind {
        JobKind::Explain => ReplyValue::Array(
            plan.explain()
                .into_iter()
                .map(|line| ReplyValue::Bulk(line.into_bytes()))
                .collect(),
        ),
        JobKind::Execute => {
            let mut reader = crate::readers::build(&plan, host.clone(), compiled.session.clone());
            let outcome = Executor::new(plan, compiled.session).run(reader.as_mut());
            encode_outcome(&outcome)
        }
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
