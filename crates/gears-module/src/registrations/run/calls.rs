//! A command's run of a registration (`RG.TRIGGER`, a hooked command, a timer's point): the
//! record it gives, how its client wants the results, and where it runs: `sync` on the calling
//! thread (or, if a callback awaits, again on a worker), the other modes on a worker.

use std::sync::Arc;

use gears_core::{encode_command_reply, encode_record, ExecutionOutcome, Record, ReplyValue};

use super::super::{Input, Registration};
use super::{enqueue, execute, run_event, Movable};
use crate::executions::stats;
use crate::host::{Access, BlockedReply, Caller, SyncRun, MOVED};
use crate::registrations::hooks::{ActiveHook, HookCall};

/// How the client of a call wants its results.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// `RG.TRIGGER`: the results array, or the first error.
    Results,
    /// A hooked command: exactly one result is the command's reply.
    OneResult,
}

impl Answer {
    /// The reply of a run's outcome.
    pub fn reply(self, outcome: &Result<ExecutionOutcome, String>) -> ReplyValue {
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(error) => return ReplyValue::Error(error.clone()),
        };
        if let Some(error) = outcome.errors.first() {
            return ReplyValue::Error(error.clone());
        }
        match self {
            Answer::Results => {
                ReplyValue::Array(outcome.results.iter().map(encode_record).collect())
            }
            Answer::OneResult => match outcome.results.as_slice() {
                [only] => encode_command_reply(only),
                _ => ReplyValue::Error("Command hook must return exactly one result".into()),
            },
        }
    }
}

/// A command's run of a registration: its record, the database and hook it runs in, and (off
/// the calling thread) the blocked client that waits for its reply.
pub(crate) struct Call {
    pub record: Record,
    pub db: i32,
    pub hook: Option<Arc<HookCall>>,
    pub answer: Answer,
    pub client: Option<BlockedReply>,
    /// Told how the run ended (a timer that stops on an error).
    pub on_done: Option<OnDone>,
}

/// What a call's run tells its maker when it ends.
pub(crate) type OnDone = Box<dyn FnOnce(&Result<ExecutionOutcome, String>) + Send>;

impl Call {
    pub(super) fn respond(mut self, outcome: &Result<ExecutionOutcome, String>) {
        if let Some(done) = self.on_done.take() {
            done(outcome);
        }
        if let Some(client) = self.client.take() {
            client.measure_end();
            client.reply(&self.answer.reply(outcome));
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        // Dropped without running (`RG.UNREGISTER ... abortpending`).
        if let Some(client) = self.client.take() {
            client.reply(&ReplyValue::Error(
                "ERR the registration was removed before this call ran".into(),
            ));
        }
    }
}

/// Runs a command's call of a registration on this thread (sync: it holds the Redis lock) and
/// returns the reply.
pub(crate) fn call_sync(registration: &Arc<Registration>, mut call: Call) -> ReplyValue {
    let _sync = SyncRun::enter();
    let outcome = run_call(registration, &mut call);
    if let Some(done) = call.on_done.take() {
        done(&outcome);
    }
    call.answer.reply(&outcome)
}

/// Runs a call of a sync registration on this thread like [`call_sync`]; if a callback awaits
/// before the run wrote anything, gives the call back to start again in the background (the
/// caller can block its client, or has none).
pub(crate) fn call_sync_or_move(
    registration: &Arc<Registration>,
    mut call: Call,
) -> Result<ReplyValue, Call> {
    let record = call.record.clone();
    let _sync = SyncRun::enter();
    let movable = Movable::enter();
    let outcome = run_call(registration, &mut call);
    drop(movable);
    if matches!(&outcome, Err(e) if e == MOVED) {
        call.record = record;
        return Err(call);
    }
    if let Some(done) = call.on_done.take() {
        done(&outcome);
    }
    Ok(call.answer.reply(&outcome))
}

/// Hands a command's call to a worker; its client (in `call`) gets the reply when it ends. With
/// `inorder` it waits in the registration's queue, else it runs as soon as a worker is free.
pub(crate) fn call_async(registration: &Arc<Registration>, call: Call, in_order: bool) {
    if in_order {
        if let Err((Input::Call(mut call), error)) = enqueue(registration, Input::Call(call)) {
            if let Some(client) = call.client.take() {
                client.reply(&ReplyValue::Error(format!(
                    "ERR Could not trigger execution, {error}"
                )));
            }
        }
        return;
    }
    let Some(gears) = crate::gears() else {
        return;
    };
    let registration = registration.clone();
    gears.workers.submit(move || {
        stats::worker_busy();
        run_event(&registration, Input::Call(call));
        stats::worker_free();
    });
}

pub(super) fn run_call(
    registration: &Arc<Registration>,
    call: &mut Call,
) -> Result<ExecutionOutcome, String> {
    if let Some(client) = &call.client {
        client.measure_start();
    }
    let record = std::mem::replace(&mut call.record, Record::Nil);
    let hook = call.hook.clone();
    let _active = hook.as_ref().map(|_| ActiveHook::enter(&registration.id));
    let caller = Caller {
        user: registration.user.clone(),
        db: call.db,
    };
    let access = Access::ReadWrite;
    let outcome = execute(registration, caller, hook, access, |_| Some(Ok(record)));
    match outcome {
        Some(outcome) => outcome,
        None => Err("Gears internal error: the call gave no record".into()),
    }
}
