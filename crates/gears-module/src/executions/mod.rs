//! Executions as first-class objects: every `RG.*EXECUTE` creates an [`Execution`] with a
//! RedisGears id (`<40-character shard id>-<seq>`), kept in the [`Executions`] table while it is
//! queued, while it runs, and (for `UNBLOCKING` ones) after it finished, until it is dropped
//! or pushed out by `MaxExecutions`. The commands that list, inspect, wait for, abort and drop
//! executions are in [`commands`]; what `INFO` counts is in [`stats`].

pub(crate) mod commands;
pub(crate) mod stats;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use gears_core::control::ExecutionControl;
use gears_core::progress::Progress;
use gears_core::{ExecutionPlan, Language, ReplyValue};

use redis_module::Context;

use crate::host::{BlockedReply, Caller};

/// An execution's state, by RedisGears 1.2's names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// Queued for a worker.
    Created,
    Running,
    Done,
    Aborted,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Done => "done",
            Status::Aborted => "aborted",
        }
    }

    pub fn finished(self) -> bool {
        matches!(self, Status::Done | Status::Aborted)
    }
}

/// The shard id of a server that is not in a cluster, as RedisGears 1.2 writes it.
pub(crate) const STANDALONE_SHARD: &str = "0000000000000000000000000000000000000000";

/// What a finished execution replies.
pub(crate) struct Finished {
    /// `RG.GETRESULTS`: `[[results], [errors]]`.
    pub results: ReplyValue,
    pub result_count: usize,
    pub errors: Vec<String>,
    /// What the client of a blocking `RG.*EXECUTE` gets: the results, `OK` for a script that
    /// does not call `run()`, or the error of a script that fails at its top level.
    pub direct: ReplyValue,
}

/// Who waits for an execution to finish.
enum Waiter {
    /// The blocking `RG.*EXECUTE` client: gets the direct reply; the execution is dropped after.
    Client(BlockedReply),
    /// An `RG.GETRESULTSBLOCKING` client: gets `[[results], [errors]]`.
    Results(BlockedReply),
}

struct State {
    status: Status,
    plan: Option<ExecutionPlan>,
    /// A description of each step's callback (`GETEXECUTION`'s `arg`), once compiled.
    step_args: Vec<String>,
    started: Option<Instant>,
    duration: Option<Duration>,
    finished: Option<Finished>,
    waiters: Vec<Waiter>,
    /// True while a blocking client waits: the execution is dropped once it replied.
    blocking: bool,
    /// True once aborted (`RG.ABORTEXECUTION`, its client gone): it ends `aborted`.
    aborted: bool,
}

/// One execution.
pub(crate) struct Execution {
    pub id: String,
    pub language: Language,
    pub caller: Caller,
    pub registered: bool,
    pub control: Arc<ExecutionControl>,
    pub progress: Arc<Progress>,
    state: Mutex<State>,
}

impl Execution {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn status(&self) -> Status {
        self.state().status
    }

    /// Marks the execution running (it left the queue); false if it was aborted meanwhile.
    pub fn start(&self) -> bool {
        let mut state = self.state();
        if state.status != Status::Created {
            return false;
        }
        stats::dequeued();
        state.status = Status::Running;
        state.started = Some(Instant::now());
        self.control.start_clock();
        for waiter in &state.waiters {
            if let Waiter::Client(client) = waiter {
                client.measure_start();
            }
        }
        true
    }

    /// Records the compiled plan and its steps' descriptions (for `RG.GETEXECUTION`).
    pub fn set_plan(&self, plan: ExecutionPlan, step_args: Vec<String>) {
        let mut state = self.state();
        state.plan = Some(plan);
        state.step_args = step_args;
    }

    /// Finishes the execution: records what it replies and answers everyone waiting. A blocking
    /// execution leaves the table first, so its client never sees it listed after its reply.
    pub fn finish(&self, finished: Finished) {
        let state = self.state();
        if state.status.finished() {
            return;
        }
        self.complete(state, finished);
    }

    fn complete(&self, mut state: MutexGuard<'_, State>, finished: Finished) {
        let aborted = state.aborted;
        state.status = if aborted {
            Status::Aborted
        } else {
            Status::Done
        };
        state.duration = state.started.map(|s| s.elapsed());
        let waiters = std::mem::take(&mut state.waiters);
        let blocking = std::mem::replace(&mut state.blocking, false);
        let (direct, results) = (finished.direct.clone(), finished.results.clone());
        state.finished = Some(finished);
        drop(state);
        stats::finished(self, aborted);
        if blocking {
            if let Some(gears) = crate::gears() {
                gears.executions.drop_execution(&self.id);
            }
        }
        for waiter in waiters {
            match waiter {
                Waiter::Client(client) => {
                    forget_client(client.id());
                    client.measure_end();
                    client.reply(&direct);
                }
                Waiter::Results(client) => client.reply(&results),
            }
        }
    }

    /// Aborts the execution: a queued one ends at once (its clients get their replies now), a
    /// running one is stopped and ends when its code does.
    pub fn abort(&self, reason: &str) {
        let mut state = self.state();
        if state.status.finished() {
            return;
        }
        state.aborted = true;
        self.control.stop(reason);
        if state.status != Status::Created {
            return;
        }
        stats::dequeued();
        let reply = ReplyValue::Array(vec![
            ReplyValue::Array(Vec::new()),
            ReplyValue::Array(vec![ReplyValue::Bulk(reason.as_bytes().to_vec())]),
        ]);
        let finished = Finished {
            results: reply.clone(),
            result_count: 0,
            errors: vec![reason.to_string()],
            direct: reply,
        };
        self.complete(state, finished)
    }

    /// Adds a `RG.GETRESULTSBLOCKING` client, answered when the execution finishes (at once if
    /// it already did).
    pub fn wait_for_results(&self, client: BlockedReply) {
        let mut state = self.state();
        match &state.finished {
            Some(finished) => {
                let reply = finished.results.clone();
                drop(state);
                client.reply(&reply);
            }
            None => state.waiters.push(Waiter::Results(client)),
        }
    }

    /// `[[results], [errors]]` of a finished execution.
    pub fn results(&self) -> Option<ReplyValue> {
        self.state().finished.as_ref().map(|f| f.results.clone())
    }

    /// What `RG.GETEXECUTION` shows of the execution.
    pub fn snapshot(&self) -> Snapshot {
        let state = self.state();
        let steps = state
            .plan
            .as_ref()
            .map(|plan| plan.steps.clone())
            .unwrap_or_default();
        Snapshot {
            status: state.status,
            result_count: state.finished.as_ref().map(|f| f.result_count),
            errors: state
                .finished
                .as_ref()
                .map(|f| f.errors.clone())
                .unwrap_or_default(),
            duration: state
                .duration
                .or_else(|| state.started.map(|s| s.elapsed()))
                .unwrap_or_default(),
            step_durations: self.progress.step_durations(steps.len()),
            steps,
            step_args: state.step_args.clone(),
        }
    }
}

/// A copy of what `RG.GETEXECUTION` shows.
pub(crate) struct Snapshot {
    pub status: Status,
    pub result_count: Option<usize>,
    pub errors: Vec<String>,
    pub duration: Duration,
    pub steps: Vec<gears_core::Step>,
    pub step_args: Vec<String>,
    pub step_durations: Vec<Duration>,
}

/// The settings the table applies when it creates an execution.
pub(crate) struct TableLimits {
    pub max_executions: usize,
    pub max_queued: u64,
    /// Measure each step's duration (`ProfileExecutions`).
    pub profile: bool,
}

/// The execution table.
pub(crate) struct Executions {
    table: Mutex<Table>,
    next: AtomicU64,
}

#[derive(Default)]
struct Table {
    /// Ids in creation order.
    order: VecDeque<String>,
    by_id: HashMap<String, Arc<Execution>>,
}

impl Executions {
    pub fn new() -> Self {
        Executions {
            table: Mutex::new(Table::default()),
            next: AtomicU64::new(1),
        }
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Creates a queued execution; `block` is the context of a blocking command, whose client
    /// waits for the execution (none with `UNBLOCKING`). At most `limits.max_queued`
    /// executions wait for a worker (a full queue is an error, and no client is blocked); at
    /// most `limits.max_executions` are kept, finished ones pushed out oldest first.
    pub fn create(
        &self,
        language: Language,
        caller: Caller,
        control: Arc<ExecutionControl>,
        block: Option<&Context>,
        limits: TableLimits,
    ) -> Result<Arc<Execution>, String> {
        if stats::queued() >= limits.max_queued {
            stats::queue_full();
            return Err(format!(
                "the execution queue is full ({} executions wait for a worker, \
                 MaxQueuedExecutions)",
                limits.max_queued
            ));
        }
        let client = match block {
            Some(ctx) => Some(
                BlockedReply::block(ctx, crate::commands::CAN_NOT_BLOCK)
                    .map_err(|e| e.to_string())?,
            ),
            None => None,
        };
        let id = format!(
            "{STANDALONE_SHARD}-{}",
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        let blocking = client.is_some();
        let execution = Arc::new(Execution {
            id: id.clone(),
            language,
            caller,
            registered: false,
            control,
            progress: Arc::new(Progress::new(limits.profile)),
            state: Mutex::new(State {
                status: Status::Created,
                plan: None,
                step_args: Vec::new(),
                started: None,
                duration: None,
                finished: None,
                waiters: Vec::new(),
                blocking,
                aborted: false,
            }),
        });
        if let Some(client) = client {
            remember_client(client.id(), &execution);
            client.on_disconnect(Some(client_disconnected));
            execution.state().waiters.push(Waiter::Client(client));
        }
        let mut table = self.table();
        table.order.push_back(id.clone());
        table.by_id.insert(id, execution.clone());
        evict(&mut table, limits.max_executions);
        drop(table);
        stats::created(&execution);
        Ok(execution)
    }

    pub fn get(&self, id: &str) -> Option<Arc<Execution>> {
        self.table().by_id.get(id).cloned()
    }

    /// Removes an execution (finished, or never started).
    pub fn drop_execution(&self, id: &str) {
        let mut table = self.table();
        if table.by_id.remove(id).is_some() {
            table.order.retain(|other| other != id);
        }
    }

    /// Every execution, in creation order.
    pub fn all(&self) -> Vec<Arc<Execution>> {
        let table = self.table();
        table
            .order
            .iter()
            .filter_map(|id| table.by_id.get(id).cloned())
            .collect()
    }

    /// Drops finished executions beyond `max` (a new `MaxExecutions`).
    pub fn trim(&self, max: usize) {
        evict(&mut self.table(), max);
    }
}

/// Drops the oldest finished executions while there are more than `max`.
fn evict(table: &mut Table, max: usize) {
    let mut excess = table.by_id.len().saturating_sub(max);
    if excess == 0 {
        return;
    }
    let mut kept = VecDeque::with_capacity(table.order.len());
    for id in std::mem::take(&mut table.order) {
        let finished = table.by_id.get(&id).is_some_and(|e| e.status().finished());
        if excess > 0 && finished {
            table.by_id.remove(&id);
            excess -= 1;
        } else {
            kept.push_back(id);
        }
    }
    table.order = kept;
}

/// The executions of blocked clients, by client handle, for the disconnect callback.
static CLIENTS: Mutex<Option<HashMap<usize, Weak<Execution>>>> = Mutex::new(None);

fn clients() -> MutexGuard<'static, Option<HashMap<usize, Weak<Execution>>>> {
    CLIENTS.lock().unwrap_or_else(PoisonError::into_inner)
}

fn remember_client(client: usize, execution: &Arc<Execution>) {
    clients()
        .get_or_insert_with(HashMap::new)
        .insert(client, Arc::downgrade(execution));
}

fn forget_client(client: usize) {
    if let Some(map) = clients().as_mut() {
        map.remove(&client);
    }
}

/// The error an execution ends with when its blocked client went away.
pub(crate) const CLIENT_GONE: &str =
    "Execution was aborted: its client disconnected before the reply";

/// A blocking `RG.*EXECUTE` client disconnected (or was killed): nobody can fetch the result
/// of a blocking execution, so it is aborted.
unsafe extern "C" fn client_disconnected(
    _ctx: *mut redis_module::raw::RedisModuleCtx,
    client: *mut redis_module::raw::RedisModuleBlockedClient,
) {
    let _ = std::panic::catch_unwind(|| {
        let execution = clients()
            .as_mut()
            .and_then(|map| map.remove(&(client as usize)))
            .and_then(|weak| weak.upgrade());
        if let Some(execution) = execution {
            execution.abort(CLIENT_GONE);
        }
    });
}
