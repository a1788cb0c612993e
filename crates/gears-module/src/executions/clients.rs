//! The blocked clients that wait for executions (and `RG.EXPLAIN` jobs), by client handle, so
//! that a client that disconnects or is killed aborts what nobody else can fetch, or stops
//! waiting; and the admission of `RG.EXPLAIN` jobs to the bounded queue.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use gears_core::control::ExecutionControl;

use super::{stats, Execution};
use crate::host::BlockedReply;

/// Why a blocked client waits for an execution.
#[derive(Clone, Copy)]
pub(super) enum Role {
    /// It sent the blocking `RG.*EXECUTE`.
    Caller,
    /// It sent `RG.GETRESULTSBLOCKING`.
    ResultsWaiter,
}

/// What a blocked client waits for.
enum Target {
    Execution(Weak<Execution>, Role),
    /// An `RG.EXPLAIN` job, by its control.
    Explain(Weak<ExecutionControl>),
}

type ClientMap = HashMap<usize, Target>;

/// The executions blocked clients wait for, by client handle, for the disconnect callback.
static CLIENTS: Mutex<Option<ClientMap>> = Mutex::new(None);

fn clients() -> MutexGuard<'static, Option<ClientMap>> {
    CLIENTS.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(super) fn remember_client(client: usize, execution: &Arc<Execution>, role: Role) {
    clients()
        .get_or_insert_with(HashMap::new)
        .insert(client, Target::Execution(Arc::downgrade(execution), role));
}

/// Admits an `RG.EXPLAIN` job to the queue, bounded like executions (before its client is
/// blocked: a refusal is the command's error reply).
pub(crate) fn admit_explain(max_queued: u64) -> Result<(), String> {
    if stats::queued() >= max_queued {
        stats::queue_full();
        return Err(queue_full_error(max_queued));
    }
    stats::explain_queued();
    Ok(())
}

/// Stops an `RG.EXPLAIN` job if its client goes away; [`forget_explain`] once it replied.
pub(crate) fn watch_explain(client: &BlockedReply, control: &Arc<ExecutionControl>) {
    clients()
        .get_or_insert_with(HashMap::new)
        .insert(client.id(), Target::Explain(Arc::downgrade(control)));
    client.on_disconnect(Some(client_disconnected));
}

pub(crate) fn forget_explain(client: &BlockedReply) {
    forget_client(client.id());
}

pub(super) fn queue_full_error(max_queued: u64) -> String {
    format!(
        "the execution queue is full ({max_queued} executions wait for a worker, \
         MaxQueuedExecutions)"
    )
}

pub(super) fn forget_client(client: usize) {
    if let Some(map) = clients().as_mut() {
        map.remove(&client);
    }
}

/// The error an execution ends with when its blocked client went away.
pub(crate) const CLIENT_GONE: &str =
    "Execution was aborted: its client disconnected before the reply";

/// A blocked client disconnected (or was killed). A blocking `RG.*EXECUTE`'s execution is
/// aborted: nobody can fetch its result. A `RG.GETRESULTSBLOCKING` client stops waiting. An
/// `RG.EXPLAIN` job is stopped.
pub(super) unsafe extern "C" fn client_disconnected(
    _ctx: *mut redis_module::raw::RedisModuleCtx,
    client: *mut redis_module::raw::RedisModuleBlockedClient,
) {
    let _ = std::panic::catch_unwind(|| {
        let entry = clients()
            .as_mut()
            .and_then(|map| map.remove(&(client as usize)));
        match entry {
            Some(Target::Execution(execution, role)) => {
                let Some(execution) = execution.upgrade() else {
                    return;
                };
                match role {
                    Role::Caller => execution.abort(CLIENT_GONE),
                    Role::ResultsWaiter => execution.forget_results_waiter(client as usize),
                }
            }
            Some(Target::Explain(control)) => {
                if let Some(control) = control.upgrade() {
                    control.stop(CLIENT_GONE);
                }
            }
            None => {}
        }
    });
}
